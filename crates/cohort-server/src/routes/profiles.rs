//! Profiles and events: `/api/v1/profiles…`, `/api/v1/events`, `/api/v1/stats`.

use super::blocking;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cohort_core::Inbox as _;
use cohort_store::TimelineQuery;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/profiles", get(search_profiles))
        .route("/profiles/{kind}/{value}", get(get_profile))
        .route("/profiles/{kind}/{value}/events", get(profile_events))
        .route("/events", get(list_events))
        .route("/stats", get(stats))
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
    let now = state.engine.now();
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
    let now = state.engine.now();
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
    let engine = state.engine.clone();
    blocking(move || {
        let totals = store.profiles().totals()?;
        Ok(Json(json!({
            "customers": totals.customers,
            "events": totals.events,
            "identities": totals.identities,
            "merges": totals.merges,
            "inbox_lag": store.inbox().lag(),
            "segment_lag": store.segment_lag()?,
            "journey_lag": engine.journey_lag()?,
            "failed_events": store.failed_events().count(None)?,
        })))
    })
    .await
}
