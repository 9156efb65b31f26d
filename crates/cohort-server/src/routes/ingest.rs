//! The Segment HTTP Tracking API: `POST /v1/{track,identify,page,screen,group,alias,batch,import}`
//! and the one-letter forms, also under `/beacon` (RudderStack's `sendBeacon` route, with the
//! key in `?writeKey=`). The key in a header is checked before a byte of the body is read;
//! everything after reading the body is the engine's ([`cohort_engine::Engine::ingest_body`]).

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use cohort_collect::RequestError;
use cohort_collect::request::{Route, write_key_from_request};
use cohort_engine::{IngestReply, IngestRequest};

pub(crate) async fn handle(
    State(state): State<AppState>,
    Path(route): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestReply>, ApiError> {
    let result = ingest(&state, &route, &uri, &headers, body).await;
    let status = match &result {
        Ok(_) => "200".to_string(),
        Err(e) => e.status.as_u16().to_string(),
    };
    metrics::counter!("cohort_ingest_requests_total", "status" => status).increment(1);
    result.map(Json)
}

async fn ingest(
    state: &AppState,
    route: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestReply, ApiError> {
    let Some(route) = Route::from_segment(route) else {
        return Err(ApiError::not_found(format!("no ingest route /v1/{route}")));
    };
    let engine = &state.engine;
    let received_at = engine.now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let header_key = write_key_from_request(
        header(header::AUTHORIZATION.as_str()),
        header("x-write-key"),
        uri.query(),
    );
    let origin = header(header::ORIGIN.as_str());
    // With the key outside the body, refuse bad keys and origins before reading a byte of it.
    let header_source = match &header_key {
        Some(key) => {
            let source = engine.authenticate(key)?;
            source.check_origin(origin)?;
            Some(source)
        }
        None => None,
    };
    let limit = engine.limits().max_request_bytes;
    let raw = match to_bytes(body, limit + 1).await {
        Ok(raw) if raw.len() <= limit => raw,
        // A body that never arrived holds no data to keep: say so, and keep nothing, or a
        // slow client could fill the failed-events store.
        Err(e) if crate::connections::is_body_timeout(&e) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                e.to_string(),
            ));
        }
        _ => {
            let error = RequestError::new(
                "request_too_large",
                format!("request body exceeds {limit} bytes"),
            );
            let refused = engine
                .refuse_request(header_source.as_deref(), error, b"", received_at)
                .await;
            return Err(refused.into());
        }
    };
    Ok(engine
        .ingest_body(IngestRequest {
            route,
            header_source,
            origin: origin.map(str::to_owned),
            body: raw,
            content_encoding: header(header::CONTENT_ENCODING.as_str()).map(str::to_owned),
            received_at,
        })
        .await?)
}
