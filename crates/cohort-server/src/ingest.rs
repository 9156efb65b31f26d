//! The Segment HTTP Tracking API: `POST /v1/{track,identify,page,screen,group,alias,batch,import}`
//! and the one-letter forms.
//!
//! A request is answered 200 only after its accepted messages are committed to the inbox. Messages
//! refused after authentication are committed to the failed-events store in the same commit, with
//! the reason, so nothing the server saw from an authenticated source is dropped silently.

use crate::error::ApiError;
use crate::sources::SourceEntry;
use crate::state::AppState;
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri, header};
use chrono::{DateTime, Utc};
use cohort_collect::auth::{write_key_from_body, write_key_from_request};
use cohort_collect::decode::decode_body;
use cohort_collect::envelope::{Route, expand};
use cohort_collect::{Policy, Prepared, Rejection, RequestError, prepare};
use cohort_store::{FailedEvent, NewFailedEvent, Submission};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The most of a refused request body kept in the failed-events store.
const MAX_KEPT_BODY: usize = 64 * 1024;

#[derive(Debug, Serialize)]
pub(crate) struct IngestReply {
    success: bool,
    accepted: usize,
    duplicates: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<Value>,
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    Path(route): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestReply>, ApiError> {
    let result = ingest(&state, &route, &uri, &headers, body).await;
    let status = match &result {
        Ok(_) => "200".to_string(),
        Err(e) => e.status.as_u16().to_string(),
    };
    metrics::counter!("cohort_ingest_requests_total", "status" => status).increment(1);
    result.map(Json)
}

async fn ingest(
    state: &AppState,
    route: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestReply, ApiError> {
    let Some(route) = Route::from_segment(route) else {
        return Err(ApiError::not_found(format!("no ingest route /v1/{route}")));
    };
    let inner = &state.0;
    let received_at = inner.clock.now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let header_key = write_key_from_request(
        header(header::AUTHORIZATION.as_str()),
        header("x-write-key"),
        uri.query(),
    );
    // With the key outside the body, refuse bad keys before reading a byte of it.
    let header_source = match &header_key {
        Some(key) => Some(authenticate(state, key)?),
        None => None,
    };

    let limits = &inner.limits;
    let raw = match to_bytes(body, limits.max_request_bytes + 1).await {
        Ok(raw) if raw.len() <= limits.max_request_bytes => raw,
        _ => {
            let error = RequestError::new(
                "request_too_large",
                format!("request body exceeds {} bytes", limits.max_request_bytes),
            );
            return Err(
                refuse_request(state, header_source.as_deref(), error, b"", received_at).await,
            );
        }
    };
    let decoded = decode_body(&raw, header(header::CONTENT_ENCODING.as_str()), limits);
    let body = match decoded {
        Ok(body) => body,
        Err(error) => {
            return Err(
                refuse_request(state, header_source.as_deref(), error, &raw, received_at).await,
            );
        }
    };
    let source = match header_source {
        Some(s) => s,
        None => match write_key_from_body(&body) {
            Some(key) => authenticate(state, &key)?,
            None => {
                return Err(ApiError::unauthorized(
                    "no write key: send it as HTTP Basic user name, a Bearer token, the X-Write-Key header, ?writeKey= or \"writeKey\" in the body",
                ));
            }
        },
    };
    let messages = match expand(route, body, limits) {
        Ok(m) => m,
        Err(error) => {
            return Err(refuse_request(state, Some(&source), error, &raw, received_at).await);
        }
    };

    let (submission, failures) = prepare_all(messages, &source, received_at);
    let receipt = inner.store.append(submission).await?;
    metrics::counter!("cohort_events_accepted_total").increment(receipt.accepted as u64);
    metrics::counter!("cohort_events_duplicate_total").increment(receipt.duplicates as u64);
    metrics::counter!("cohort_events_failed_total").increment(receipt.failed as u64);

    if let (Route::Single(_), Some((_, first))) = (route, failures.first()) {
        // A single-message route whose message was refused: the client must know (it is kept).
        return Err(ApiError::bad_request(first.code, first.message.clone()));
    }
    Ok(IngestReply {
        success: true,
        accepted: receipt.accepted,
        duplicates: receipt.duplicates,
        failed: failures
            .into_iter()
            .map(|(index, r)| json!({"index": index, "code": r.code, "message": r.message}))
            .collect(),
    })
}

fn authenticate(state: &AppState, key: &str) -> Result<Arc<SourceEntry>, ApiError> {
    state
        .0
        .sources
        .authenticate(key)?
        .ok_or_else(|| ApiError::unauthorized("the write key is not valid for any enabled source"))
}

/// Shapes each message; the refused ones go to the failed-events store in the same commit.
fn prepare_all(
    messages: Vec<Value>,
    source: &SourceEntry,
    received_at: DateTime<Utc>,
) -> (Submission, Vec<(usize, Rejection)>) {
    let mut submission = Submission {
        source_id: source.source.id,
        received_at,
        ..Submission::default()
    };
    let mut failures = Vec::new();
    for (index, raw) in messages.into_iter().enumerate() {
        match prepare(raw, received_at, &source.policy).and_then(inbox_body) {
            Ok(accepted) => submission.accepted.push(accepted),
            Err(rejection) => {
                submission
                    .failed
                    .push(failed_record(source.source.id, &rejection));
                failures.push((index, rejection));
            }
        }
    }
    (submission, failures)
}

/// A prepared message as the inbox keeps it: (message ID, JSON text).
fn inbox_body(p: Prepared) -> Result<(String, String), Rejection> {
    // `to_string` writes into a byte buffer; `Value`'s `Display` goes through `fmt::Write` and
    // took 1.9× the instructions for a typical message.
    match serde_json::to_string(&Value::Object(p.message)) {
        Ok(body) => Ok((p.message_id, body)),
        // A JSON value always serialises; were that ever to fail, it is refused visibly.
        Err(e) => Err(Rejection {
            code: "invalid_message",
            message: format!("the message cannot be stored as JSON: {e}"),
            payload: String::new(),
        }),
    }
}

fn failed_record(source_id: i64, r: &Rejection) -> NewFailedEvent {
    NewFailedEvent {
        source_id: Some(source_id),
        code: r.code.to_string(),
        reason: r.message.clone(),
        payload: r.payload.clone(),
        truncated: false,
    }
}

/// Refuses a whole request; when its source is known, keeps the body (bounded) as a failed event.
async fn refuse_request(
    state: &AppState,
    source: Option<&SourceEntry>,
    error: RequestError,
    raw: &[u8],
    received_at: DateTime<Utc>,
) -> ApiError {
    metrics::counter!("cohort_requests_refused_total", "code" => error.code).increment(1);
    if let Some(source) = source {
        let kept = &raw[..raw.len().min(MAX_KEPT_BODY)];
        let submission = Submission {
            source_id: source.source.id,
            received_at,
            failed: vec![NewFailedEvent {
                source_id: Some(source.source.id),
                code: error.code.to_string(),
                reason: error.message.clone(),
                payload: String::from_utf8_lossy(kept).into_owned(),
                truncated: kept.len() < raw.len(),
            }],
            ..Submission::default()
        };
        if let Err(e) = state.0.store.append(submission).await {
            tracing::error!(error = %e, "could not record a refused request in the failed-events store");
        }
    }
    ApiError::bad_request(error.code, error.message)
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

/// Runs failed events through the source's current policy again (after fixing a tracking plan, say);
/// those that now pass are appended to the inbox and marked replayed in the same commit.
pub async fn replay_failed(
    state: &AppState,
    events: Vec<FailedEvent>,
) -> Result<Vec<ReplayOutcome>, ApiError> {
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events {
        outcomes.push(replay_one(state, event).await?);
    }
    Ok(outcomes)
}

async fn replay_one(state: &AppState, event: FailedEvent) -> Result<ReplayOutcome, ApiError> {
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
    let store = &state.0.store;
    let Some(source_id) = event.source_id else {
        return Ok(refuse("no_source", "the event has no source".into()));
    };
    let Some(source) = state.0.sources.entry(source_id)? else {
        return Ok(refuse(
            "no_source",
            format!("source {source_id} no longer exists"),
        ));
    };
    let policy: &Policy = &source.policy;
    let parsed = match cohort_collect::decode::parse_json(event.payload.as_bytes(), &policy.limits)
    {
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
    let (mut submission, failures) = prepare_all(messages, &source, event.received_at_time());
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
