//! The HTTP surface, one module per resource. Each handler parses the request, calls one of
//! the engine's use cases (or a store read), and renders the answer; nothing here decides what
//! an event means.

mod analyses;
mod experiments;
mod failed_events;
mod ingest;
mod journeys;
mod keys;
mod ops;
mod profiles;
mod query;
mod rfm;
mod sdk_settings;
mod segments;
mod sources;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .merge(sources::routes())
        .merge(failed_events::routes())
        .merge(profiles::routes())
        .merge(query::routes())
        .merge(keys::routes())
        .merge(analyses::routes())
        .merge(segments::routes())
        .merge(rfm::routes())
        .merge(experiments::routes())
        .merge(journeys::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .layer(axum::extract::DefaultBodyLimit::max(ADMIN_BODY_LIMIT));
    // What browsers and SDKs call with a write key: the Segment and RudderStack event routes
    // (RudderStack's beacons under /beacon), and the settings documents their SDKs load first.
    let collection = Router::new()
        .route("/v1/{route}", post(ingest::handle))
        .route("/beacon/v1/{route}", post(ingest::handle))
        .route(
            "/v1/projects/{write_key}/settings",
            get(sdk_settings::segment),
        )
        .route("/sourceConfig", get(sdk_settings::rudderstack))
        .route("/sourceConfig/", get(sdk_settings::rudderstack))
        // GrowthBook's SDKs fetch flags with a client key, public like a write key.
        .route("/api/features/{client_key}", get(experiments::features));
    // Everything behind a key counts failed authentications per address; the health and
    // metrics routes take no key and always answer. CORS is outermost, so that even the
    // limiter's 429 reaches the page that caused it.
    let limited = |router: Router<AppState>| {
        router.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth_failures::limit,
        ))
    };
    let collection = limited(collection).layer(middleware::from_fn(crate::cors::collection));
    let admin = limited(Router::new().nest("/api/v1", admin)).layer(
        middleware::from_fn_with_state(state.clone(), crate::cors::admin),
    );
    Router::new()
        .merge(collection)
        .merge(admin)
        // Email recipients' tracked links: signed tokens, no key.
        .merge(journeys::link_routes())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(crate::error::not_found)
        .with_state(state)
}

/// Largest request body of the admin API (a segment definition, a tracking plan, a query).
/// Ingest bodies have their own limit (`Limits::max_request_bytes`), checked as they are read.
pub const ADMIN_BODY_LIMIT: usize = 1024 * 1024;

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
    if state.operator_key.as_deref() == Some(hash.as_str()) || state.admin_keys.is_fresh(&hash) {
        return next.run(request).await;
    }
    let verified =
        tokio::task::spawn_blocking(move || store.catalog().verify_admin_key(&key)).await;
    match verified {
        Ok(Ok(Some(_))) => {
            state.admin_keys.remember(hash);
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
