//! What the engine's use cases can fail with. The HTTP layer maps each to a status and a code;
//! the CLI prints it.

use cohort_lake::LakeError;
use cohort_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The input is wrong; `code` names the kind of mistake, the message the field.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// No valid credential for what was asked.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid credential, used from where its owner does not allow (a web origin).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("the SQL engine is not running in this process")]
    LakeUnavailable,
    /// Evaluating a segment's condition over the lake failed.
    #[error("evaluating {segment:?}: {error}")]
    Evaluation { segment: String, error: LakeError },
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Analysis(#[from] cohort_analysis::AnalysisError),
    /// A definition that cannot be saved: the field that is wrong, and why.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// What was asked does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It cannot be done in the state things are in (a stale version, a definition in use).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        EngineError::BadRequest {
            code,
            message: message.into(),
        }
    }
}
