//! The admin and profile API under `/api/v1`, and the operational endpoints.

use crate::error::ApiError;
use crate::ingest::{ReplayOutcome, replay_failed};
use crate::state::AppState;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cohort_collect::normalise::NormaliseRules;
use cohort_collect::tracking_plan::{TrackingPlan, TrackingPlanSpec};
use cohort_store::{FailedFilter, TimelineQuery};
use serde::Deserialize;
use serde_json::{Value, json};

pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/sources", get(list_sources).post(create_source))
        .route("/sources/{id}", get(get_source))
        .route(
            "/sources/{id}/tracking-plan",
            put(set_tracking_plan).delete(delete_tracking_plan),
        )
        .route("/sources/{id}/normalisation", put(set_normalisation))
        .route("/failed-events", get(list_failed))
        .route("/failed-events/replay", post(replay_matching))
        .route("/failed-events/{id}", get(get_failed))
        .route("/failed-events/{id}/replay", post(replay_one))
        .route("/profiles", get(search_profiles))
        .route("/profiles/{kind}/{value}", get(get_profile))
        .route("/profiles/{kind}/{value}/events", get(profile_events))
        .route("/events", get(list_events))
        .route("/stats", get(stats))
        .route("/query", post(query))
        .route("/admin-keys", post(create_admin_key))
        .merge(crate::analyses::routes())
        .merge(crate::segments::routes())
        .merge(crate::rfm::routes())
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Admin routes need `Authorization: Bearer <admin key>`.
async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from);
    let Some(key) = presented else {
        return ApiError::unauthorized("the admin API needs Authorization: Bearer <admin key>")
            .into_response();
    };
    let store = state.store().clone();
    let hash = cohort_store::hash_key(&key);
    if state.0.admin_keys.is_fresh(&hash) {
        return next.run(request).await;
    }
    let verified =
        tokio::task::spawn_blocking(move || store.catalog().verify_admin_key(&key)).await;
    match verified {
        Ok(Ok(Some(_))) => {
            state.0.admin_keys.remember(hash);
            next.run(request).await
        }
        Ok(Ok(None)) => ApiError::unauthorized("the admin key is not valid").into_response(),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

/// Runs blocking store work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("request body: {e}")))
}

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.store().processing() {
        Json(json!({"status": "ready", "inbox_lag": state.store().lag()})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the event processor is not running",
        )
        .into_response()
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.store();
    metrics::gauge!("cohort_inbox_lag").set(store.lag() as f64);
    metrics::gauge!("cohort_inbox_committed_seq").set(store.committed_seq() as f64);
    metrics::gauge!("cohort_inbox_applied_seq").set(store.applied_seq() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.0.metrics.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NewSource {
    name: String,
}

async fn create_source(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let NewSource { name } = json_body(&body)?;
    if name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "\"name\" must not be empty",
        ));
    }
    let store = state.store().clone();
    let (source, key) = blocking(move || Ok(store.catalog().create_source(&name)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"source": source, "write_key": key})),
    )
        .into_response())
}

async fn list_sources(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let sources = blocking(move || Ok(store.catalog().sources()?)).await?;
    Ok(Json(json!({"sources": sources})))
}

async fn get_source(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let source = blocking(move || Ok(store.catalog().source(id)?)).await?;
    source
        .map(|s| Json(json!(s)))
        .ok_or_else(|| ApiError::not_found(format!("source {id} not found")))
}

async fn set_tracking_plan(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let spec: TrackingPlanSpec = json_body(&body)?;
    TrackingPlan::compile(spec.clone())
        .map_err(|e| ApiError::bad_request("invalid_tracking_plan", e.to_string()))?;
    let plan = serde_json::to_value(&spec)
        .map_err(|e| ApiError::bad_request("invalid_tracking_plan", e.to_string()))?;
    let store = state.store().clone();
    let saved = plan.clone();
    blocking(move || Ok(store.catalog().set_tracking_plan(id, Some(&saved))?)).await?;
    state.0.sources.invalidate();
    Ok(Json(json!({"source_id": id, "tracking_plan": plan})))
}

async fn delete_tracking_plan(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    blocking(move || Ok(store.catalog().set_tracking_plan(id, None)?)).await?;
    state.0.sources.invalidate();
    Ok(Json(json!({"source_id": id, "tracking_plan": null})))
}

async fn set_normalisation(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let rules: NormaliseRules = json_body(&body)?;
    let settings = serde_json::to_value(&rules)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let store = state.store().clone();
    let saved = settings.clone();
    blocking(move || Ok(store.catalog().set_source_settings(id, &saved)?)).await?;
    state.0.sources.invalidate();
    Ok(Json(json!({"source_id": id, "normalisation": settings})))
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
    let mut outcomes = replay_failed(&state, vec![event]).await?;
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
    let outcomes = replay_failed(&state, events).await?;
    let replayed = outcomes.iter().filter(|o| o.replayed).count();
    Ok(Json(json!({
        "replayed": replayed,
        "still_failing": outcomes.len() - replayed,
        "outcomes": outcomes,
    })))
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(rename = "trait")]
    key: String,
    value: String,
    limit: Option<usize>,
}

async fn search_profiles(
    State(state): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let now = state.0.clock.now();
    let limit = q.limit.unwrap_or(50).min(1000);
    let found = blocking(move || {
        // Values arrive as text; numbers and booleans were stored as JSON, so try both readings.
        let mut ids = store
            .profiles()
            .search(&q.key, &Value::String(q.value.clone()), limit)?;
        if ids.is_empty()
            && let Ok(parsed) = serde_json::from_str::<Value>(&q.value)
        {
            ids = store.profiles().search(&q.key, &parsed, limit)?;
        }
        let mut profiles = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = store.profiles().profile("customer_id", &id, now)? {
                profiles.push(p);
            }
        }
        Ok(profiles)
    })
    .await?;
    Ok(Json(json!({"profiles": found})))
}

async fn get_profile(
    State(state): State<AppState>,
    Path((kind, value)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let now = state.0.clock.now();
    // A cached profile needs no database access, hence no blocking hop.
    let profile = match store.profiles().cached_profile(&kind, &value, now) {
        Some(profile) => Some(profile),
        None => {
            let (k, v) = (kind.clone(), value.clone());
            blocking(move || Ok(store.profiles().profile(&k, &v, now)?)).await?
        }
    };
    profile
        .map(|p| Json(json!(*p)))
        .ok_or_else(|| ApiError::not_found(format!("no customer has {kind} {value:?}")))
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<usize>,
}

impl EventsQuery {
    fn timeline(self) -> TimelineQuery {
        TimelineQuery {
            from: self.from,
            to: self.to,
            cursor: self.cursor,
            limit: self.limit.unwrap_or(50),
        }
    }
}

async fn profile_events(
    State(state): State<AppState>,
    Path((kind, value)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let (k, v) = (kind.clone(), value.clone());
    let page = blocking(move || {
        let Some(customer) = store.profiles().find_customer(&k, &v)? else {
            return Ok(None);
        };
        Ok(Some(store.profiles().timeline(customer, &q.timeline())?))
    })
    .await?;
    page.map(|p| Json(json!(p)))
        .ok_or_else(|| ApiError::not_found(format!("no customer has {kind} {value:?}")))
}

async fn list_events(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let page = blocking(move || Ok(store.profiles().events(&q.timeline())?)).await?;
    Ok(Json(json!(page)))
}

async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    blocking(move || {
        let totals = store.profiles().totals()?;
        Ok(Json(json!({
            "customers": totals.customers,
            "events": totals.events,
            "identities": totals.identities,
            "merges": totals.merges,
            "inbox_lag": store.lag(),
            "segment_lag": store.segment_lag()?,
            "failed_events": store.failed_events().count(None)?,
        })))
    })
    .await
}

#[derive(Deserialize)]
struct NewAdminKey {
    name: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "admin".into()
}

async fn create_admin_key(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let NewAdminKey { name, role } = json_body(&body)?;
    if role != "admin" {
        return Err(ApiError::bad_request(
            "invalid_role",
            format!("unknown role {role:?}; roles: admin"),
        ));
    }
    let store = state.store().clone();
    let (record, key) =
        blocking(move || Ok(store.catalog().create_admin_key(&name, &role)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"admin_key": record, "key": key})),
    )
        .into_response())
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
    let Some(analytics) = state.0.analytics.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the SQL engine is not running",
        ));
    };
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
        .map_err(query_error)?;
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

fn query_error(e: cohort_lake::LakeError) -> ApiError {
    use cohort_lake::LakeError;
    match e {
        LakeError::NotReadOnly(_) => ApiError::bad_request("read_only", e.to_string()),
        LakeError::Timeout(_) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "query_timeout", e.to_string())
        }
        LakeError::Query(_) => ApiError::bad_request("invalid_query", e.to_string()),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        ),
    }
}
