//! Operations: `/healthz`, `/readyz`, `/metrics`.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cohort_core::Inbox as _;
use serde_json::{Value, json};

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    if state.store().processing() {
        Json(json!({"status": "ready", "inbox_lag": state.store().inbox().lag()})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the event processor is not running",
        )
        .into_response()
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.store();
    metrics::gauge!("cohort_inbox_lag").set(store.inbox().lag() as f64);
    metrics::gauge!("cohort_inbox_committed_seq").set(store.inbox().committed().offset() as f64);
    metrics::gauge!("cohort_inbox_applied_seq").set(store.inbox().acknowledged().offset() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
