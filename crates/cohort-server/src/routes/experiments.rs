//! Flags, experiments and metrics over HTTP: `/api/v1/flags…`, `/api/v1/experiments…`,
//! `/api/v1/metrics…`, `/api/v1/holdout`, and GrowthBook's `GET /api/features/{clientKey}`
//! that its SDKs fetch.
//!
//! Saves take the version they were made from in `If-Match` (answers carry it in `ETag`), so
//! two editors never overwrite each other; a create (`POST`) fails when the key exists.

use super::json_body;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cohort_engine::{EvaluationRequest, SavedDefinition};
use cohort_experiment::definition::Decision;
use cohort_experiment::store::{DefinitionKind, Expected};
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/flags", get(list_flags).post(create_flag))
        .route("/flags/evaluate", post(evaluate))
        .route(
            "/flags/{key}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route("/flags/{key}/versions", get(flag_versions))
        .route(
            "/experiments",
            get(list_experiments).post(create_experiment),
        )
        .route(
            "/experiments/{key}",
            get(get_experiment)
                .put(put_experiment)
                .delete(delete_experiment),
        )
        .route("/experiments/{key}/versions", get(experiment_versions))
        .route("/experiments/{key}/start", post(start_experiment))
        .route("/experiments/{key}/stop", post(stop_experiment))
        .route("/experiments/{key}/report", get(report))
        .route("/experiments/analyze", post(analyze))
        .route("/metrics", get(list_metrics).post(create_metric))
        .route(
            "/metrics/{key}",
            get(get_metric).put(put_metric).delete(delete_metric),
        )
        .route("/metrics/{key}/versions", get(metric_versions))
        .route(
            "/holdout",
            get(get_holdout).put(put_holdout).delete(delete_holdout),
        )
}

/// `GET /api/features/{clientKey}`: the payload GrowthBook's SDKs evaluate. The client key is
/// an enabled source's write key, public like it.
pub(crate) async fn features(
    State(state): State<AppState>,
    Path(client_key): Path<String>,
) -> Result<Response, ApiError> {
    let payload = state.engine.features_for_client(&client_key).await?;
    let mut response = Json(payload).into_response();
    // SDKs poll; a short cache keeps a busy page from rebuilding nothing.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=10"),
    );
    Ok(response)
}

fn expected_from(headers: &HeaderMap) -> Result<Expected, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(Expected::Any);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<u64>().map(Expected::Version).map_err(|_| {
        ApiError::bad_request(
            "invalid_header",
            format!("If-Match must be a version such as \"3\", not {text:?}"),
        )
    })
}

fn saved(status: StatusCode, definition: SavedDefinition) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", definition.version)).ok();
    let mut response = (status, Json(definition)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

async fn list(state: &AppState, kind: DefinitionKind) -> Result<Json<Value>, ApiError> {
    let all = state.engine.definitions(kind).await?;
    Ok(Json(json!({ plural(kind): all })))
}

fn plural(kind: DefinitionKind) -> &'static str {
    match kind {
        DefinitionKind::Flag => "flags",
        DefinitionKind::Experiment => "experiments",
        DefinitionKind::Metric => "metrics",
        DefinitionKind::Setting => "settings",
    }
}

async fn create(state: &AppState, kind: DefinitionKind, body: &[u8]) -> Result<Response, ApiError> {
    let document: Value = json_body(body)?;
    let definition = state
        .engine
        .save_definition(kind, None, document, Expected::New)
        .await?;
    Ok(saved(StatusCode::CREATED, definition))
}

async fn put(
    state: &AppState,
    kind: DefinitionKind,
    key: String,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let document: Value = json_body(body)?;
    let expected = expected_from(headers)?;
    let definition = state
        .engine
        .save_definition(kind, Some(key), document, expected)
        .await?;
    Ok(saved(StatusCode::OK, definition))
}

async fn get_one(
    state: &AppState,
    kind: DefinitionKind,
    key: String,
) -> Result<Response, ApiError> {
    Ok(saved(
        StatusCode::OK,
        state.engine.definition(kind, key).await?,
    ))
}

async fn delete(
    state: &AppState,
    kind: DefinitionKind,
    key: String,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let expected = expected_from(headers)?;
    let deleted = state.engine.delete_definition(kind, key, expected).await?;
    Ok(saved(StatusCode::OK, deleted))
}

async fn versions(
    state: &AppState,
    kind: DefinitionKind,
    key: String,
) -> Result<Json<Value>, ApiError> {
    let history = state.engine.definition_history(kind, key).await?;
    Ok(Json(json!({ "versions": history })))
}

/// The handlers of one kind of definition, which differ only in the kind.
macro_rules! definition_handlers {
    ($kind:expr, $list:ident, $create:ident, $get:ident, $put:ident, $delete:ident, $versions:ident) => {
        async fn $list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
            list(&state, $kind).await
        }
        async fn $create(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
            create(&state, $kind, &body).await
        }
        async fn $get(
            State(state): State<AppState>,
            Path(key): Path<String>,
        ) -> Result<Response, ApiError> {
            get_one(&state, $kind, key).await
        }
        async fn $put(
            State(state): State<AppState>,
            Path(key): Path<String>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Result<Response, ApiError> {
            put(&state, $kind, key, &headers, &body).await
        }
        async fn $delete(
            State(state): State<AppState>,
            Path(key): Path<String>,
            headers: HeaderMap,
        ) -> Result<Response, ApiError> {
            delete(&state, $kind, key, &headers).await
        }
        async fn $versions(
            State(state): State<AppState>,
            Path(key): Path<String>,
        ) -> Result<Json<Value>, ApiError> {
            versions(&state, $kind, key).await
        }
    };
}

definition_handlers!(
    DefinitionKind::Flag,
    list_flags,
    create_flag,
    get_flag,
    put_flag,
    delete_flag,
    flag_versions
);
definition_handlers!(
    DefinitionKind::Experiment,
    list_experiments,
    create_experiment,
    get_experiment,
    put_experiment,
    delete_experiment,
    experiment_versions
);
definition_handlers!(
    DefinitionKind::Metric,
    list_metrics,
    create_metric,
    get_metric,
    put_metric,
    delete_metric,
    metric_versions
);

async fn start_experiment(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    Ok(saved(
        StatusCode::OK,
        state.engine.start_experiment(key).await?,
    ))
}

async fn stop_experiment(
    State(state): State<AppState>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let decision: Decision = json_body(&body)?;
    Ok(saved(
        StatusCode::OK,
        state.engine.stop_experiment(key, decision).await?,
    ))
}

/// Most units one evaluation request may carry in `batch`.
const EVALUATION_BATCH_LIMIT: usize = 10_000;

/// One unit (`{"identifier", "attributes", …}`), or several as `{"batch": [unit, …]}`
/// answered as `{"batch": [evaluation, …]}` in the same order.
async fn evaluate(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let mut body: Value = json_body(&body)?;
    if let Some(batch) = body.get_mut("batch").map(Value::take) {
        let requests: Vec<EvaluationRequest> = serde_json::from_value(batch)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("batch: {e}")))?;
        if requests.len() > EVALUATION_BATCH_LIMIT {
            return Err(ApiError::bad_request(
                "too_many_units",
                format!(
                    "a batch holds at most {EVALUATION_BATCH_LIMIT} units, not {}",
                    requests.len()
                ),
            ));
        }
        let mut evaluations = Vec::with_capacity(requests.len());
        for request in requests {
            evaluations.push(state.engine.evaluate_flags(request).await?);
        }
        return Ok(Json(json!({ "batch": evaluations })));
    }
    let request: EvaluationRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("request body: {e}")))?;
    let evaluation = state.engine.evaluate_flags(request).await?;
    Ok(Json(json!(evaluation)))
}

async fn get_holdout(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"holdout": state.engine.holdout().await?})))
}

async fn put_holdout(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let document: Value = json_body(&body)?;
    Ok(Json(
        json!({"holdout": state.engine.set_holdout(Some(document)).await?}),
    ))
}

async fn delete_holdout(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"holdout": state.engine.set_holdout(None).await?}),
    ))
}

/// How a report is analysed; every field is optional (`?engine=bayesian&cuped_days=14`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    engine: Option<cohort_experiment::summary_input::Engine>,
    alpha: Option<f64>,
    difference: Option<cohort_experiment::summary_input::DifferenceType>,
    correction: Option<cohort_experiment::summary_input::Correction>,
    target_mde: Option<f64>,
    power: Option<f64>,
    /// Days before exposure for CUPED's covariate; none when absent or 0.
    cuped_days: Option<u32>,
    /// The analysis period (RFC 3339), instead of the experiment's run: exposures and events
    /// from `from` until `to`.
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET /api/v1/experiments/{key}/report`: the report from the lake's events.
async fn report(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut options = cohort_experiment::summary_input::Options::default();
    options.engine = q.engine.unwrap_or(options.engine);
    options.alpha = q.alpha.unwrap_or(options.alpha);
    options.difference = q.difference.unwrap_or(options.difference);
    options.correction = q.correction.unwrap_or(options.correction);
    options.target_mde = q.target_mde.or(options.target_mde);
    options.power = q.power.unwrap_or(options.power);
    let report = state
        .engine
        .experiment_report(key, options, q.cuped_days.unwrap_or(0), (q.from, q.to))
        .await?;
    Ok(Json(json!(report)))
}

/// `POST /api/v1/experiments/analyze`: the report from per-variation sums the caller
/// computed elsewhere (the body of `cohort experiment analyze`'s JSON).
async fn analyze(body: Bytes) -> Result<Json<Value>, ApiError> {
    let input = cohort_experiment::summary_input::from_json(
        std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("invalid_body", "the body is not UTF-8"))?,
    )
    .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let report = cohort_experiment::report::analyze(&input)
        .map_err(|e| ApiError::bad_request("invalid_input", e.to_string()))?;
    Ok(Json(json!(report)))
}
