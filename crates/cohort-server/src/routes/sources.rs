//! Sources and their settings: `/api/v1/sources…`. A source is where events come from; its
//! write key authenticates ingest, its tracking plan and normalisation rules shape what it sends.

use super::{blocking, json_body};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use cohort_collect::normalise::NormaliseRules;
use cohort_collect::request::parse_origin;
use cohort_collect::tracking_plan::{TrackingPlan, TrackingPlanSpec};
use cohort_engine::tracking_plan_of;
use cohort_store::{Catalog, Source, SourceKind, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/sources", get(list_sources).post(create_source))
        .route("/sources/{id}", get(get_source))
        .route(
            "/sources/{id}/tracking-plan",
            put(set_tracking_plan).delete(delete_tracking_plan),
        )
        .route("/sources/{id}/normalisation", put(set_normalisation))
        .route("/sources/{id}/trust", put(set_trust))
        .route("/sources/{id}/origins", put(set_origins))
}

/// `PUT /sources/{id}/origins {"allowed_origins": ["https://shop.example"]}`: the web origins
/// browsers may send this source's events from; `null` for any.
async fn set_origins(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let Origins { allowed_origins } = json_body(&body)?;
    let origins = checked_origins(allowed_origins)?;
    let source = change_source(&state, id, move |catalog| {
        catalog.set_allowed_origins(id, origins.as_deref())
    })
    .await?;
    Ok(Json(json!({"source": source_json(&source)})))
}

/// Applies `change` to source `id` and reads it back; the engine's cached policies are dropped,
/// so ingest applies the change at once.
async fn change_source(
    state: &AppState,
    id: i64,
    change: impl FnOnce(&Catalog) -> Result<(), StoreError> + Send + 'static,
) -> Result<Source, ApiError> {
    let store = state.store().clone();
    let source = blocking(move || {
        change(store.catalog())?;
        store
            .catalog()
            .source(id)?
            .ok_or_else(|| ApiError::not_found(format!("source {id}")))
    })
    .await?;
    state.engine.forget_sources();
    Ok(source)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Origins {
    allowed_origins: Option<Vec<String>>,
}

/// Origins normalised, or `invalid_origin` naming the first that is not one.
fn checked_origins(origins: Option<Vec<String>>) -> Result<Option<Vec<String>>, ApiError> {
    origins
        .map(|list| {
            let mut checked = list
                .iter()
                .map(|o| parse_origin(o))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::bad_request("invalid_origin", e))?;
            checked.sort();
            checked.dedup();
            Ok(checked)
        })
        .transpose()
}

/// `PUT /sources/{id}/trust {"kind": "client", "trait_claims": false}`.
async fn set_trust(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let Trust { kind, trait_claims } = json_body(&body)?;
    let source = change_source(&state, id, move |catalog| {
        catalog.set_source_trust(id, kind, trait_claims)
    })
    .await?;
    Ok(Json(json!({"source": source_json(&source)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSource {
    name: String,
    /// `server` (default) or `client` (a web page or an app: its key is public).
    #[serde(default)]
    kind: Option<SourceKind>,
    /// Lets a client-side source's email, phone and external IDs claim existing customers.
    #[serde(default)]
    trait_claims: bool,
    /// The web origins browsers may send from; absent or `null` for any.
    #[serde(default)]
    allowed_origins: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trust {
    kind: SourceKind,
    #[serde(default)]
    trait_claims: bool,
}

async fn create_source(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let NewSource {
        name,
        kind,
        trait_claims,
        allowed_origins,
    } = json_body(&body)?;
    let origins = checked_origins(allowed_origins)?;
    if name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "\"name\" must not be empty",
        ));
    }
    let store = state.store().clone();
    let (source, key) = blocking(move || {
        let catalog = store.catalog();
        let (source, key) = catalog.create_source(&name)?;
        let kind = kind.unwrap_or(SourceKind::Server);
        if kind != source.kind || trait_claims != source.trait_claims {
            catalog.set_source_trust(source.id, kind, trait_claims)?;
        }
        if origins.is_some() {
            catalog.set_allowed_origins(source.id, origins.as_deref())?;
        }
        let source = catalog
            .source(source.id)?
            .ok_or_else(|| ApiError::not_found(format!("source {}", source.id)))?;
        Ok((source, key))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"source": source_json(&source), "write_key": key})),
    )
        .into_response())
}

async fn list_sources(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let sources = blocking(move || Ok(store.catalog().sources()?)).await?;
    let sources: Vec<Value> = sources.iter().map(source_json).collect();
    Ok(Json(json!({"sources": sources})))
}

async fn get_source(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let source = blocking(move || Ok(store.catalog().source(id)?)).await?;
    source
        .map(|s| Json(source_json(&s)))
        .ok_or_else(|| ApiError::not_found(format!("source {id} not found")))
}

/// A source as the API shows it: with `tracking_plan_error` when its stored plan cannot be
/// applied, so the operator sees why its messages are refused or flagged.
fn source_json(source: &Source) -> Value {
    let mut value = json!(source);
    if let (Err(unusable), Value::Object(fields)) = (tracking_plan_of(source), &mut value) {
        fields.insert("tracking_plan_error".into(), json!(unusable.error));
    }
    value
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
    state.engine.forget_sources();
    Ok(Json(json!({"source_id": id, "tracking_plan": plan})))
}

async fn delete_tracking_plan(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    blocking(move || Ok(store.catalog().set_tracking_plan(id, None)?)).await?;
    state.engine.forget_sources();
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
    state.engine.forget_sources();
    Ok(Json(json!({"source_id": id, "normalisation": settings})))
}
