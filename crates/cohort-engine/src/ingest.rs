//! Ingest: the one entry point for every way messages come in. The HTTP routes call
//! [`Engine::ingest_body`] once they have the request's bytes; `cohort import` shapes rows with
//! the same [`Assembly`] and [`Engine::append_blocking`]; [`Engine::replay_failed`] runs failed
//! events through their source's current policy again.
//!
//! A request is acknowledged only after its accepted messages are committed to the inbox.
//! Messages refused after authentication are committed to the failed-events store in the same
//! commit, with the reason, so nothing the server saw from an authenticated source is dropped
//! silently.

use crate::sources::SourceEntry;
use crate::{Engine, EngineError};
use chrono::{DateTime, Utc};
use cohort_collect::request::{Route, decode_body, expand, write_key_from_body};
use cohort_collect::{Assembly, Policy, RequestError};
use cohort_store::{FailedEvent, Receipt, Submission};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Bodies up to this size, from sources without a tracking plan, are shaped on the async worker
/// that read them: about a millisecond at most, while the hand-off to a blocking thread costs
/// about a microsecond per event of a 100-event batch in thread wake-ups and cold caches
/// (docs/BENCHMARKS.md, before/after). Larger bodies, up to the 500 KB limit, would hold a
/// worker for several milliseconds and go to the blocking pool.
const INLINE_SHAPING_BYTES: usize = 64 * 1024;

/// A shaped request: the submission to commit and the refused messages by index.
type Shaped = (Submission, Vec<(usize, cohort_collect::Rejection)>);

/// Why a request was not shaped.
enum Unshaped {
    /// Its key or its origin is not accepted; nothing is kept.
    Denied(EngineError),
    /// Refused whole; kept as a failed event when its source is known.
    Refused(Option<Arc<SourceEntry>>, RequestError),
}

/// A Segment HTTP request whose body has been read, as [`Engine::ingest_body`] takes it.
pub struct IngestRequest {
    pub route: Route,
    /// The source the key in a header authenticated; `None` when the key is in the body.
    pub header_source: Option<Arc<SourceEntry>>,
    /// The `Origin` header, which browsers send (see [`SourceEntry::check_origin`]).
    pub origin: Option<String>,
    pub body: bytes::Bytes,
    pub content_encoding: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// What an ingest request is answered.
#[derive(Debug, Serialize)]
pub struct IngestReply {
    pub success: bool,
    pub accepted: usize,
    pub duplicates: usize,
    /// The refused messages of a batch: `{"index", "code", "message"}` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<Value>,
}

/// Ingest use cases.
impl Engine {
    /// The enabled source a write key belongs to.
    pub fn authenticate(&self, write_key: &str) -> Result<Arc<SourceEntry>, EngineError> {
        self.0.sources.authenticate(write_key)?.ok_or_else(|| {
            EngineError::Unauthorized(
                "the write key is not valid for any enabled source".to_string(),
            )
        })
    }

    /// A source and its current policy by ID, uncached (imports and replays).
    pub fn source_entry(&self, source_id: i64) -> Result<Option<SourceEntry>, EngineError> {
        Ok(self.0.sources.entry(source_id)?)
    }

    /// A Segment HTTP request whose body has been read: decoded, authenticated by the key in
    /// the body when no header key was, expanded, shaped and committed.
    ///
    /// Shaping runs on a blocking thread when it can be heavy (a large body, or a source with a
    /// tracking plan, whose schemas run per message), so that one source's requests cannot hold
    /// the async workers that answer every other request; small plain batches, the common case,
    /// are shaped in place, which saves a thread hand-off per request.
    pub async fn ingest_body(&self, request: IngestRequest) -> Result<IngestReply, EngineError> {
        let heavy = request.body.len() > INLINE_SHAPING_BYTES
            || request
                .header_source
                .as_ref()
                .is_some_and(|s| s.policy.tracking_plan.is_some());
        let (shaped, request) = if heavy {
            let engine = self.clone();
            tokio::task::spawn_blocking(move || (engine.shape(&request), request))
                .await
                .map_err(|e| EngineError::Internal(format!("shaping a request failed: {e}")))?
        } else {
            (self.shape(&request), request)
        };
        let (submission, refused) = match shaped {
            Ok(shaped) => shaped,
            Err(Unshaped::Denied(e)) => return Err(e),
            Err(Unshaped::Refused(source, error)) => {
                return Err(self
                    .refuse_request(source.as_deref(), error, &request.body, request.received_at)
                    .await);
            }
        };
        let receipt = self.store().append(submission).await?;
        metrics::counter!("cohort_events_accepted_total").increment(receipt.accepted as u64);
        metrics::counter!("cohort_events_duplicate_total").increment(receipt.duplicates as u64);
        metrics::counter!("cohort_events_failed_total").increment(receipt.failed as u64);

        if let (Route::Single(_), Some((_, first))) = (request.route, refused.first()) {
            // A single-message route whose message was refused: the client must know (it is kept).
            return Err(EngineError::bad_request(first.code, first.message.clone()));
        }
        Ok(IngestReply {
            success: true,
            accepted: receipt.accepted,
            duplicates: receipt.duplicates,
            failed: refused
                .into_iter()
                .map(|(index, r)| json!({"index": index, "code": r.code, "message": r.message}))
                .collect(),
        })
    }

    /// Decodes, authenticates, expands and shapes a request: the CPU part of ingest.
    fn shape(&self, request: &IngestRequest) -> Result<Shaped, Unshaped> {
        let limits = self.limits();
        let header_source = request.header_source.clone();
        let body = decode_body(&request.body, request.content_encoding.as_deref(), limits)
            .map_err(|error| Unshaped::Refused(header_source.clone(), error))?;
        let source = match header_source {
            Some(s) => s,
            None => match write_key_from_body(&body) {
                Some(key) => self.authenticate(&key).map_err(Unshaped::Denied)?,
                None => {
                    return Err(Unshaped::Denied(EngineError::Unauthorized(
                        "no write key: send it as HTTP Basic user name, a Bearer token, the X-Write-Key header, ?writeKey= or \"writeKey\" in the body".to_string(),
                    )));
                }
            },
        };
        // Refused whole and not kept: the request came from a website the source does not allow.
        source
            .check_origin(request.origin.as_deref())
            .map_err(Unshaped::Denied)?;
        let messages = expand(request.route, body, limits)
            .map_err(|error| Unshaped::Refused(Some(source.clone()), error))?;
        let mut assembly = Assembly::new(source.source.id, &source.policy, request.received_at);
        for message in messages {
            assembly.add(message, None);
        }
        Ok(assembly.finish())
    }

    /// Refuses a whole request; when its source is known, keeps the body (bounded) as a failed
    /// event. Returns the error to answer with.
    pub async fn refuse_request(
        &self,
        source: Option<&SourceEntry>,
        error: RequestError,
        raw: &[u8],
        received_at: DateTime<Utc>,
    ) -> EngineError {
        metrics::counter!("cohort_requests_refused_total", "code" => error.code).increment(1);
        if let Some(source) = source {
            let id = source.source.id;
            let submission = Submission {
                source_id: id,
                received_at,
                failed: vec![cohort_collect::request::refused_request(
                    id,
                    error.code,
                    &error.message,
                    raw,
                )],
                ..Submission::default()
            };
            if let Err(e) = self.store().append(submission).await {
                tracing::error!(error = %e, "could not record a refused request in the failed-events store");
            }
        }
        EngineError::bad_request(error.code, error.message)
    }

    /// Commits a submission shaped by an [`Assembly`], for callers outside an async runtime.
    pub fn append_blocking(&self, submission: Submission) -> Result<Receipt, EngineError> {
        Ok(self.store().append_blocking(submission)?)
    }
}

/// Ingests messages Cohort itself produces (experiment exposures, journeys' delivery events)
/// under its own source `source`, created on first use, through the same assembly and inbox as
/// any message. Returns how many were accepted; refused ones are kept as failed events, as for
/// any source, and logged.
pub(crate) fn ingest_own(
    store: &cohort_store::Store,
    limits: cohort_collect::Limits,
    source: &str,
    messages: Vec<Value>,
    now: DateTime<Utc>,
) -> Result<usize, EngineError> {
    let catalog = store.catalog();
    let found = match catalog.source_by_name(source)? {
        Some(found) => found,
        None => match catalog.create_source(source) {
            Ok((created, _key)) => created,
            // Created by a concurrent caller in between.
            Err(cohort_store::StoreError::Conflict(_)) => catalog
                .source_by_name(source)?
                .ok_or_else(|| EngineError::Internal(format!("no {source} source")))?,
            Err(e) => return Err(e.into()),
        },
    };
    let identity = Arc::new(store.config().identity.clone());
    let policy = crate::sources::policy_for(&found, limits, identity);
    let mut assembly = Assembly::new(found.id, &policy, now);
    for message in messages {
        assembly.add(message, None);
    }
    let (submission, refused) = assembly.finish();
    for (_, r) in &refused {
        tracing::warn!(source, code = r.code, reason = %r.message, "a message Cohort produced was refused");
    }
    Ok(store.append_blocking(submission)?.accepted)
}

/// The outcome of replaying one failed event.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayOutcome {
    pub id: i64,
    pub replayed: bool,
    /// Messages appended to the inbox by the replay.
    pub accepted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Engine {
    /// Runs failed events through the source's current policy again (after fixing a tracking
    /// plan, say); those that now pass are appended to the inbox and marked replayed in the
    /// same commit.
    pub async fn replay_failed(
        &self,
        events: Vec<FailedEvent>,
    ) -> Result<Vec<ReplayOutcome>, EngineError> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            outcomes.push(self.replay_one(event).await?);
        }
        Ok(outcomes)
    }

    async fn replay_one(&self, event: FailedEvent) -> Result<ReplayOutcome, EngineError> {
        let refuse = |code: &str, message: String| ReplayOutcome {
            id: event.id,
            replayed: false,
            accepted: 0,
            code: Some(code.to_string()),
            message: Some(message),
        };
        if event.replayed_at.is_some() {
            return Ok(refuse(
                "already_replayed",
                "this event was replayed before".into(),
            ));
        }
        if event.truncated {
            return Ok(refuse(
                "truncated",
                "only part of this request was kept; it cannot be replayed".into(),
            ));
        }
        let store = self.store();
        let Some(source_id) = event.source_id else {
            return Ok(refuse("no_source", "the event has no source".into()));
        };
        let Some(source) = self.source_entry(source_id)? else {
            return Ok(refuse(
                "no_source",
                format!("source {source_id} no longer exists"),
            ));
        };
        let policy: &Policy = &source.policy;
        let parsed =
            match cohort_collect::request::parse_json(event.payload.as_bytes(), &policy.limits) {
                Ok(v) => v,
                Err(e) => {
                    store
                        .failed_events()
                        .update_reason(event.id, e.code, &e.message)?;
                    return Ok(refuse(e.code, e.message));
                }
            };
        let route = if parsed.get("batch").is_some() {
            Route::Batch
        } else {
            let kind = parsed
                .get("type")
                .and_then(Value::as_str)
                .and_then(cohort_core::MessageType::parse);
            match kind {
                Some(kind) => Route::Single(kind),
                None => {
                    let message =
                        "the payload has neither a \"batch\" nor a valid \"type\"".to_string();
                    store
                        .failed_events()
                        .update_reason(event.id, "invalid_type", &message)?;
                    return Ok(refuse("invalid_type", message));
                }
            }
        };
        let messages = match expand(route, parsed, &policy.limits) {
            Ok(m) => m,
            Err(e) => {
                store
                    .failed_events()
                    .update_reason(event.id, e.code, &e.message)?;
                return Ok(refuse(e.code, e.message));
            }
        };
        // Replays keep the original receive time, so clock-skew correction gives the original timestamp.
        let mut assembly = Assembly::new(source_id, policy, event.received_at_time());
        for message in messages {
            assembly.add(message, None);
        }
        let (mut submission, failures) = assembly.finish();
        if let Some((_, first)) = failures.first() {
            store
                .failed_events()
                .update_reason(event.id, first.code, &first.message)?;
            return Ok(refuse(first.code, first.message.clone()));
        }
        submission.replayed = vec![event.id];
        let receipt = store.append(submission).await?;
        Ok(ReplayOutcome {
            id: event.id,
            replayed: true,
            accepted: receipt.accepted,
            code: None,
            message: None,
        })
    }
}
