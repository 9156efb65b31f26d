//! RFM over HTTP: `POST /api/v1/rfm/run` scores every customer who ordered in the window and
//! writes the results onto profiles; `GET /api/v1/rfm/report` answers the latest report. What
//! the scores mean: [`cohort_engine::RfmRun`].

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use cohort_engine::{RfmParams, RfmRun};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/rfm/run", post(run))
        .route("/rfm/report", get(report))
}

async fn run(State(state): State<AppState>, body: Bytes) -> Result<Json<RfmRun>, ApiError> {
    let params: RfmParams = if body.iter().all(u8::is_ascii_whitespace) {
        RfmParams::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("request body: {e}")))?
    };
    Ok(Json(state.engine.run_rfm(params).await?))
}

async fn report(State(state): State<AppState>) -> Result<Json<RfmRun>, ApiError> {
    let latest = state.engine.latest_rfm().await?;
    latest.map(Json).ok_or_else(|| {
        ApiError::not_found("no RFM analysis has run yet: POST /api/v1/rfm/run starts one")
    })
}
