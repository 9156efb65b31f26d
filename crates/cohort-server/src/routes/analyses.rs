//! The analyses API: `POST /api/v1/analyses/{active-customers,trends,funnel,retention,revenue}`
//! with the request as JSON, answered with chart-ready JSON (see `cohort-analysis`).

use super::json_body;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use cohort_analysis::{
    ActiveCustomers, ActiveRequest, Funnel, FunnelRequest, Retention, RetentionRequest, Revenue,
    RevenueRequest, Trends, TrendsRequest,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/analyses/active-customers", post(active_customers))
        .route("/analyses/trends", post(trends))
        .route("/analyses/funnel", post(funnel))
        .route("/analyses/retention", post(retention))
        .route("/analyses/revenue", post(revenue))
}

async fn active_customers(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<ActiveCustomers>, ApiError> {
    let request: ActiveRequest = json_body(&body)?;
    Ok(Json(state.engine.active_customers(&request).await?))
}

async fn trends(State(state): State<AppState>, body: Bytes) -> Result<Json<Trends>, ApiError> {
    let request: TrendsRequest = json_body(&body)?;
    Ok(Json(state.engine.trends(&request).await?))
}

async fn funnel(State(state): State<AppState>, body: Bytes) -> Result<Json<Funnel>, ApiError> {
    let request: FunnelRequest = json_body(&body)?;
    Ok(Json(state.engine.funnel(&request).await?))
}

async fn retention(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Retention>, ApiError> {
    let request: RetentionRequest = json_body(&body)?;
    Ok(Json(state.engine.retention(&request).await?))
}

async fn revenue(State(state): State<AppState>, body: Bytes) -> Result<Json<Revenue>, ApiError> {
    let request: RevenueRequest = json_body(&body)?;
    Ok(Json(state.engine.revenue(&request).await?))
}
