//! Read-only SQL: `POST /api/v1/query`.

use super::json_body;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
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
    let options = cohort_lake::QueryOptions {
        timeout: std::time::Duration::from_secs_f64(timeout),
        max_rows: request.max_rows.unwrap_or(10_000).clamp(1, 1_000_000),
    };
    let result = analytics
        .query(&request.sql, options)
        .await
        .map_err(ApiError::from_query)?;
    let render = |e: cohort_lake::LakeError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    };
    match request.format.as_deref().unwrap_or("json") {
        "json" => {
            let rows = result.to_json_rows().map_err(render)?;
            let columns: Vec<Value> = result
                .columns
                .iter()
                .map(|(name, kind)| json!({"name": name, "type": kind}))
                .collect();
            Ok(Json(json!({
                "columns": columns,
                "rows": rows,
                "row_count": result.num_rows(),
                "truncated": result.truncated,
            }))
            .into_response())
        }
        "csv" => {
            let csv = result.to_csv().map_err(render)?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
        }
        other => Err(ApiError::bad_request(
            "invalid_body",
            format!("format {other:?} is not one of json, csv"),
        )),
    }
}
