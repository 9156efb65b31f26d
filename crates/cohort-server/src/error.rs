//! Every error answer is JSON `{"code": "...", "message": "..."}`: Segment's clients read both keys
//! (the Python client retries a 400 without them as if it were transient).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cohort_analysis::AnalysisError;
use cohort_core::InboxError;
use cohort_engine::{EngineError, RfmRunError};
use cohort_lake::LakeError;
use cohort_ml::rfm::RfmError;
use cohort_store::StoreError;
use serde_json::json;

/// An API error with its status, stable code and human message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (429 and 503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Inbox(InboxError::Overloaded(lag)) => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "overloaded",
                message: if lag > 0 {
                    format!(
                        "Cohort is shedding load: {lag} messages wait to be processed; retry later"
                    )
                } else {
                    "Cohort is shedding load: the inbox queue is full; retry later".into()
                },
                retry_after: Some(1),
            },
            StoreError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Invalid(message) => ApiError::bad_request("invalid_request", message),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "unavailable",
                    message: format!("storage is temporarily unavailable: {other}"),
                    retry_after: Some(1),
                }
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => e.into(),
            EngineError::BadRequest { code, message } => ApiError::bad_request(code, message),
            EngineError::Unauthorized(message) => ApiError::unauthorized(message),
            EngineError::Forbidden { code, message } => {
                ApiError::new(StatusCode::FORBIDDEN, code, message)
            }
            EngineError::LakeUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the SQL engine is not running",
            ),
            EngineError::Evaluation {
                segment,
                error: LakeError::Timeout(t),
            } => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("evaluating {segment:?} took longer than {t:?}"),
            ),
            EngineError::Evaluation { segment, error } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "evaluation_failed",
                format!("evaluating {segment:?}: {error}"),
            ),
            EngineError::Lake(e) => ApiError::from_query(e),
            EngineError::Analysis(e) => ApiError::from_analysis(e),
            EngineError::Invalid { field, message } => {
                ApiError::bad_request("invalid_definition", format!("{field}: {message}"))
            }
            EngineError::NotFound(message) => ApiError::not_found(message),
            EngineError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            EngineError::Internal(message) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl From<RfmRunError> for ApiError {
    fn from(e: RfmRunError) -> Self {
        match e {
            RfmRunError::Invalid(message) => ApiError::bad_request("invalid_request", message),
            RfmRunError::Analysis(e @ RfmError::InvalidK(_)) => {
                ApiError::bad_request("invalid_request", e.to_string())
            }
            RfmRunError::Analysis(e) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
            RfmRunError::Store(e) => e.into(),
        }
    }
}

impl ApiError {
    /// A failed SQL query: the caller's mistake (400), too slow (408), or ours (500).
    pub(crate) fn from_query(e: LakeError) -> ApiError {
        match e {
            LakeError::NotReadOnly(_) => ApiError::bad_request("read_only", e.to_string()),
            LakeError::Timeout(_) => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "query_timeout", e.to_string())
            }
            LakeError::Query(_) => ApiError::bad_request("invalid_query", e.to_string()),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }

    fn from_analysis(e: AnalysisError) -> ApiError {
        match e {
            AnalysisError::Invalid { .. } => {
                ApiError::bad_request("invalid_request", e.to_string())
            }
            AnalysisError::TooLarge(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "too_large", e.to_string())
            }
            AnalysisError::Lake(LakeError::Timeout(_)) => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "query_timeout", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "analysis failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}
