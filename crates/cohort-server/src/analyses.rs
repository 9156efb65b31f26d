//! The analyses API: `POST /api/v1/analyses/{active-customers,trends,funnel,retention,revenue}`
//! with the request as JSON, answered with chart-ready JSON (see `cohort-analysis`).

use crate::analytics::Analytics;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use cohort_analysis::{AnalysisError, RunOptions};
use cohort_lake::LakeError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/analyses/active-customers", post(active_customers))
        .route("/analyses/trends", post(trends))
        .route("/analyses/funnel", post(funnel))
        .route("/analyses/retention", post(retention))
        .route("/analyses/revenue", post(revenue))
}

/// Parses the body, runs the analysis on the lake (recent events included) and answers its result.
async fn run<Req, Res, Fut>(
    state: &AppState,
    body: &[u8],
    analysis: impl FnOnce(Arc<Analytics>, Req) -> Fut,
) -> Result<Json<Res>, ApiError>
where
    Req: DeserializeOwned,
    Res: Serialize,
    Fut: Future<Output = Result<Res, AnalysisError>>,
{
    let request: Req = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("request body: {e}")))?;
    let analytics = state.0.analytics.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the SQL engine is not running",
        )
    })?;
    analysis(analytics, request)
        .await
        .map(Json)
        .map_err(analysis_error)
}

fn analysis_error(e: AnalysisError) -> ApiError {
    match e {
        AnalysisError::Invalid { .. } => ApiError::bad_request("invalid_request", e.to_string()),
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

fn options() -> RunOptions {
    RunOptions::default()
}

async fn active_customers(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<cohort_analysis::ActiveCustomers>, ApiError> {
    run(
        &state,
        &body,
        |analytics, request: cohort_analysis::ActiveRequest| async move {
            request.validate()?;
            let lake = analytics.lake().await?;
            cohort_analysis::active_customers(lake, &request, &options()).await
        },
    )
    .await
}

async fn trends(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<cohort_analysis::Trends>, ApiError> {
    run(
        &state,
        &body,
        |analytics, request: cohort_analysis::TrendsRequest| async move {
            request.validate()?;
            let lake = analytics.lake().await?;
            cohort_analysis::trends(lake, &request, &options()).await
        },
    )
    .await
}

async fn funnel(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<cohort_analysis::Funnel>, ApiError> {
    run(
        &state,
        &body,
        |analytics, request: cohort_analysis::FunnelRequest| async move {
            request.validate()?;
            let lake = analytics.lake().await?;
            cohort_analysis::funnel(lake, &request, &options()).await
        },
    )
    .await
}

async fn retention(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<cohort_analysis::Retention>, ApiError> {
    run(
        &state,
        &body,
        |analytics, request: cohort_analysis::RetentionRequest| async move {
            request.validate()?;
            let lake = analytics.lake().await?;
            cohort_analysis::retention(lake, &request, &options()).await
        },
    )
    .await
}

async fn revenue(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<cohort_analysis::Revenue>, ApiError> {
    run(
        &state,
        &body,
        |analytics, request: cohort_analysis::RevenueRequest| async move {
            request.validate()?;
            let lake = analytics.lake().await?;
            cohort_analysis::revenue(lake, &request, &options()).await
        },
    )
    .await
}
