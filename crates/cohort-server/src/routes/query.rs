//! Read-only SQL: `POST /api/v1/query`.

use super::json_body;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/query", post(query))
}

#[derive(Deserialize)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
    max_rows: Option<usize>,
    timeout_secs: Option<f64>,
}

/// Read-only SQL over `events`, `profiles`, `profile_traits`, `identities` and `memberships`.
async fn query(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: QueryRequest = json_body(&body)?;
    let analytics = state.engine.lake()?.clone();
    let timeout = request.timeout_secs.unwrap_or(30.0);
    if !(timeout > 0.0 && timeout <= 600.0) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "timeout_secs must be in (0, 600]",
        ));
    }
    let budget = std::time::Duration::from_secs_f64(timeout);
    let started = std::time::Instant::now();
    let options = cohort_lake::QueryOptions {
        timeout: budget,
        max_rows: request.max_rows.unwrap_or(10_000).clamp(1, 1_000_000),
        ..Default::default()
    };
    let result = analytics
        .query(&request.sql, options)
        .await
        .map_err(ApiError::from_query)?;
    let format = request.format.unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "csv") {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("format {format:?} is not one of json, csv"),
        ));
    }
    // Rendering is part of the query's time, and CPU work: a blocking thread, within what is
    // left of the budget.
    let left = budget.saturating_sub(started.elapsed());
    let rendering = tokio::task::spawn_blocking(move || render(&result, &format));
    match tokio::time::timeout(left, rendering).await {
        Ok(Ok(rendered)) => rendered,
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )),
        Err(_) => Err(ApiError::from_query(cohort_lake::LakeError::Timeout(
            budget,
        ))),
    }
}

fn render(result: &cohort_lake::QueryResult, format: &str) -> Result<Response, ApiError> {
    let failed = |e: cohort_lake::LakeError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    };
    if format == "csv" {
        let csv = result.to_csv().map_err(failed)?;
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    let columns: Vec<Value> = result
        .columns
        .iter()
        .map(|(name, kind)| json!({"name": name, "type": kind}))
        .collect();
    let rows = result.to_json_array().map_err(failed)?;
    // The rows are spliced in as Arrow wrote them, not parsed back into values.
    let mut body = Vec::with_capacity(rows.len() + 256);
    body.extend_from_slice(b"{\"columns\":");
    body.extend_from_slice(json!(columns).to_string().as_bytes());
    body.extend_from_slice(b",\"rows\":");
    body.extend_from_slice(&rows);
    body.extend_from_slice(
        format!(
            ",\"row_count\":{},\"truncated\":{}}}",
            result.num_rows(),
            result.truncated
        )
        .as_bytes(),
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
