//! The settings documents browser SDKs load before they send: Segment's
//! `GET /v1/projects/{writeKey}/settings` (analytics-next with `cdnURL` pointed here) and
//! RudderStack's `GET /sourceConfig` (`configUrl` pointed here). Each names this server as the
//! only place to send events (no third-party destinations, no telemetry) and says nothing about
//! other sources. An unknown or disabled key is answered 404.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri, header};
use cohort_collect::request::write_key_from_request;
use cohort_engine::{EngineError, SourceEntry};
use serde_json::{Value, json};
use std::sync::Arc;

/// `GET /v1/projects/{writeKey}/settings`, in the shape of Segment's CDN settings.
pub(crate) async fn segment(
    State(state): State<AppState>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let source = source_for(&state, &write_key, &headers)?;
    let (protocol, host) = public_base(&state, &headers);
    metrics::counter!("cohort_sdk_settings_served_total", "sdk" => "segment").increment(1);
    Ok(Json(json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{host}/v1"),
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        // The SDK's own telemetry would go to Segment: none.
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
        "consentSettings": {"allCategories": []},
        "source": {"name": source.source.name},
    })))
}

/// `GET /sourceConfig`, in the shape of RudderStack's control plane answer. The key comes in
/// `?writeKey=` or as HTTP Basic user name, as the SDK sends both.
pub(crate) async fn rudderstack(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let write_key = write_key_from_request(
        header(header::AUTHORIZATION.as_str()),
        header("x-write-key"),
        uri.query(),
    )
    .ok_or_else(|| {
        ApiError::bad_request(
            "missing_write_key",
            "send the write key as ?writeKey= or as HTTP Basic user name",
        )
    })?;
    let source = source_for(&state, &write_key, &headers)?;
    metrics::counter!("cohort_sdk_settings_served_total", "sdk" => "rudderstack").increment(1);
    Ok(Json(json!({
        "isHosted": false,
        "source": {
            "id": source.source.id.to_string(),
            "name": source.source.name,
            "writeKey": write_key,
            "workspaceId": "cohort",
            "enabled": true,
            "config": {
                // The SDK's error and metrics reports would go to RudderStack: none.
                "statsCollection": {
                    "errors": {"enabled": false},
                    "metrics": {"enabled": false},
                },
            },
            "destinations": [],
        },
    })))
}

/// The enabled source of `write_key`, if the request's origin may use it.
fn source_for(
    state: &AppState,
    write_key: &str,
    headers: &HeaderMap,
) -> Result<Arc<SourceEntry>, ApiError> {
    let source = match state.engine.authenticate(write_key) {
        Ok(source) => source,
        Err(EngineError::Unauthorized(_)) => {
            return Err(ApiError::not_found("no enabled source has this write key"));
        }
        Err(e) => return Err(e.into()),
    };
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    source.check_origin(origin)?;
    Ok(source)
}

/// The scheme and host (with any path prefix) browsers send to: the configured public URL, or
/// the `Host` this request came in on.
fn public_base(state: &AppState, headers: &HeaderMap) -> (String, String) {
    if let Some(url) = &state.browser.public_url {
        return (url.scheme.clone(), url.authority_and_path.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '"']))
        .unwrap_or("localhost");
    ("http".to_string(), host.to_string())
}
