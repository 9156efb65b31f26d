//! The failed-events store over HTTP: `/api/v1/failed-events…`, to inspect what was refused
//! and replay it once the cause is fixed.

use super::{blocking, json_body};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cohort_engine::ReplayOutcome;
use cohort_store::FailedFilter;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/failed-events", get(list_failed))
        .route("/failed-events/replay", post(replay_matching))
        .route("/failed-events/{id}", get(get_failed))
        .route("/failed-events/{id}/replay", post(replay_one))
}

#[derive(Deserialize, Default)]
struct FailedQuery {
    source_id: Option<i64>,
    code: Option<String>,
    #[serde(default)]
    pending: bool,
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
}

impl FailedQuery {
    fn filter(&self) -> FailedFilter {
        FailedFilter {
            source_id: self.source_id,
            code: self.code.clone(),
            pending_only: self.pending,
            after_id: self.after,
            limit: self.limit.unwrap_or(100),
        }
    }
}

async fn list_failed(
    State(state): State<AppState>,
    Query(q): Query<FailedQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let filter = q.filter();
    let events = blocking(move || Ok(store.failed_events().list(&filter)?)).await?;
    let next = events.last().map(|e| e.id);
    Ok(Json(json!({"failed_events": events, "next_after": next})))
}

async fn get_failed(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let event = blocking(move || Ok(store.failed_events().get(id)?)).await?;
    event
        .map(|e| Json(json!(e)))
        .ok_or_else(|| ApiError::not_found(format!("failed event {id} not found")))
}

async fn replay_one(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<ReplayOutcome>, ApiError> {
    let store = state.store().clone();
    let event = blocking(move || Ok(store.failed_events().get(id)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("failed event {id} not found")))?;
    let mut outcomes = state.engine.replay_failed(vec![event]).await?;
    outcomes
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("failed event {id} not found")))
}

async fn replay_matching(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let q: FailedQuery = if body.is_empty() {
        FailedQuery::default()
    } else {
        json_body(&body)?
    };
    let mut filter = q.filter();
    filter.pending_only = true;
    filter.limit = q.limit.unwrap_or(1000).min(10_000);
    let store = state.store().clone();
    let events = blocking(move || Ok(store.failed_events().list(&filter)?)).await?;
    let outcomes = state.engine.replay_failed(events).await?;
    let replayed = outcomes.iter().filter(|o| o.replayed).count();
    Ok(Json(json!({
        "replayed": replayed,
        "still_failing": outcomes.len() - replayed,
        "outcomes": outcomes,
    })))
}
