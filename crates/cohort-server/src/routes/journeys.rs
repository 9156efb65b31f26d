//! Journeys over HTTP: `/api/v1/journeys…` (definitions in JSON or YAML, their lifecycle,
//! entering by API, reports), `/api/v1/templates…` (with previews), `/api/v1/channels…`
//! (configurations shown redacted, dead letters, inbound SMS replies), `/api/v1/coupons…`,
//! `/api/v1/delivery-rules`, and `/api/v1/ops/clock` for servers on a test clock. The public
//! link routes that email recipients follow (`/o/`, `/c/`, `/u/`) are at the end.

use super::json_body;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cohort_engine::{
    DefinitionFormat, IdentifierRef, channel_json, dead_letter_json, template_json, version_json,
};
use cohort_journey::channel::tracking::{PIXEL_GIF, Purpose};
use cohort_journey::coupon::{Expiry, NewPool};
use cohort_journey::definition::ChannelKind;
use cohort_journey::definition::lifecycle::Action;
use cohort_journey::measure::{Costs, ReportOptions};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/journeys", get(list_journeys).post(create_journey))
        .route("/journeys/validate", post(validate_journey))
        .route("/journeys/report", get(report_all))
        .route("/journeys/{key}", get(get_journey).put(put_journey))
        .route("/journeys/{key}/{action}", post(journey_action))
        .route("/journeys/{key}/report", get(report_one))
        .route("/templates", get(list_templates).post(create_template))
        .route("/templates/{key}", get(get_template).put(put_template))
        .route("/templates/{key}/preview", post(preview_template))
        .route("/channels", get(list_channels))
        .route("/channels/{name}", put(put_channel).delete(delete_channel))
        .route("/channels/{name}/dead-letters", get(dead_letters))
        .route("/channels/{name}/dead-letters/{key}/replay", post(replay))
        .route("/channels/{name}/inbound", post(inbound))
        .route("/coupons", post(create_pool))
        .route("/coupons/{pool}", get(pool_counts))
        .route("/coupons/{pool}/codes", post(import_codes))
        .route("/coupons/{pool}/generate", post(generate_codes))
        .route("/delivery-rules", get(get_rules).put(put_rules))
        .route("/ops/clock", get(get_clock).post(advance_clock))
}

/// The public routes of tracked links (no key: the token is signed).
pub(super) fn link_routes() -> Router<AppState> {
    Router::new()
        .route("/o/{token}", get(open))
        .route("/c/{token}", get(click))
        .route(
            "/u/{token}",
            get(unsubscribe_page).post(unsubscribe_one_click),
        )
        .route("/hooks/sms/{name}", post(twilio_inbound))
}

/// A reply Twilio posts (no key: Twilio signs it). Answers with empty TwiML: no reply SMS.
async fn twilio_inbound(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("form: {e}")))?;
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state
        .engine
        .inbound_sms_from_twilio(name, signature, params)
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response())
}

/// JSON unless the request says YAML.
fn format_of(headers: &HeaderMap) -> DefinitionFormat {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.contains("yaml") {
        DefinitionFormat::Yaml
    } else {
        DefinitionFormat::Json
    }
}

fn text_body(body: &Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_body", "request body: not UTF-8"))
}

async fn list_journeys(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let journeys = state.engine.journeys().await?;
    Ok(Json(
        json!({"journeys": journeys.iter().map(version_json).collect::<Vec<_>>()}),
    ))
}

async fn create_journey(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let saved = state
        .engine
        .save_journey(text_body(&body)?, format_of(&headers))
        .await?;
    Ok((StatusCode::CREATED, Json(version_json(&saved))).into_response())
}

async fn put_journey(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let text = text_body(&body)?;
    let format = format_of(&headers);
    let journey = state.engine.validate_syntax(&text, format)?;
    if journey.key != key {
        return Err(ApiError::bad_request(
            "invalid_definition",
            format!(
                "key: the definition's key {:?} is not the path's {key:?}",
                journey.key
            ),
        ));
    }
    let saved = state.engine.save_journey(text, format).await?;
    Ok(Json(version_json(&saved)))
}

async fn validate_journey(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let journey = state
        .engine
        .validate_journey(text_body(&body)?, format_of(&headers))
        .await?;
    Ok(Json(json!({"valid": true, "definition": journey})))
}

async fn get_journey(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (versions, history) = state.engine.journey(key).await?;
    Ok(Json(json!({
        "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
        "history": history,
    })))
}

#[derive(Deserialize)]
struct VersionQuery {
    version: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EnterRequest {
    identifier: Option<IdentifierRef>,
    #[serde(default)]
    payload: Value,
    request_id: Option<String>,
}

async fn journey_action(
    State(state): State<AppState>,
    Path((key, action)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let action = match action.as_str() {
        "publish" => Action::Publish,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "archive" => Action::Archive,
        "enter" => return enter(state, key, &body).await,
        other => {
            return Err(ApiError::not_found(format!(
                "no journey action {other:?}: use publish, pause, resume, archive or enter"
            )));
        }
    };
    let changed = state
        .engine
        .journey_action(key, query.version, action)
        .await?;
    Ok(Json(version_json(&changed)).into_response())
}

async fn enter(state: AppState, key: String, body: &[u8]) -> Result<Response, ApiError> {
    let request: EnterRequest = json_body(body)?;
    let Some(identifier) = request.identifier else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "identifier: required ({\"type\": \"user_id\", \"value\": …})",
        ));
    };
    let request_id = request.request_id.unwrap_or_else(|| {
        format!(
            "api:{}:{}",
            identifier.value,
            state.engine.now().timestamp_micros()
        )
    });
    let payload = match request.payload {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    let entered = state
        .engine
        .enter_journey(key, identifier, payload, request_id.clone())
        .await?;
    Ok(Json(json!({"entered": entered, "request_id": request_id})).into_response())
}

/// `?currency=CNY&cost.sms=0.05&alpha=0.05`: prices per message by channel name.
fn report_options(query: &BTreeMap<String, String>) -> Result<(Costs, ReportOptions), ApiError> {
    let mut costs = Costs::new(query.get("currency").map_or("CNY", String::as_str));
    for (name, value) in query {
        if let Some(channel) = name.strip_prefix("cost.") {
            let price: f64 = value.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("{name}: {value:?} is not a number"),
                )
            })?;
            costs = costs.per_message(channel, price);
        }
    }
    let mut options = ReportOptions::default();
    if let Some(alpha) = query.get("alpha") {
        options.alpha = alpha.parse().map_err(|_| {
            ApiError::bad_request("invalid_query", format!("alpha: {alpha:?} is not a number"))
        })?;
    }
    Ok((costs, options))
}

async fn report_all(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (costs, options) = report_options(&query)?;
    let report = state.engine.journey_report(None, costs, options).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

async fn report_one(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (costs, options) = report_options(&query)?;
    let report = state
        .engine
        .journey_report(Some(key), costs, options)
        .await?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

async fn list_templates(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let templates = state.engine.templates().await?;
    Ok(Json(
        json!({"templates": templates.iter().map(template_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateRequest {
    key: Option<String>,
    kind: ChannelKind,
    source: Value,
}

async fn create_template(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: TemplateRequest = json_body(&body)?;
    let Some(key) = request.key else {
        return Err(ApiError::bad_request("invalid_body", "key: required"));
    };
    let saved = state
        .engine
        .save_template(key, request.kind, request.source)
        .await?;
    Ok((StatusCode::CREATED, Json(template_json(&saved))).into_response())
}

async fn put_template(
    State(state): State<AppState>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: TemplateRequest = json_body(&body)?;
    if request.key.as_ref().is_some_and(|k| k != &key) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "key: differs from the path's",
        ));
    }
    let saved = state
        .engine
        .save_template(key, request.kind, request.source)
        .await?;
    Ok(Json(template_json(&saved)))
}

async fn get_template(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(template_json(&state.engine.template(key).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    identifier: Option<IdentifierRef>,
    #[serde(default)]
    event: Value,
}

async fn preview_template(
    State(state): State<AppState>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: PreviewRequest = if body.is_empty() {
        PreviewRequest::default()
    } else {
        json_body(&body)?
    };
    let preview = state
        .engine
        .preview_template(key, request.identifier, request.event)
        .await?;
    Ok(Json(preview))
}

async fn list_channels(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let channels = state.engine.channels().await?;
    Ok(Json(
        json!({"channels": channels.iter().map(channel_json).collect::<Vec<_>>()}),
    ))
}

async fn put_channel(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let config: Value = json_body(&body)?;
    let saved = state.engine.save_channel(name, config).await?;
    Ok(Json(channel_json(&saved)))
}

async fn delete_channel(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_channel(name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn dead_letters(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let letters = state.engine.dead_letters(name, 1000).await?;
    Ok(Json(
        json!({"dead_letters": letters.iter().map(dead_letter_json).collect::<Vec<_>>()}),
    ))
}

async fn replay(
    State(state): State<AppState>,
    Path((_name, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    state.engine.replay_dead_letter(key.clone()).await?;
    Ok(Json(json!({"replayed": key})))
}

/// An SMS reply, as Twilio posts it (form fields `From` and `Body`) or as JSON
/// (`{"from", "body"}`).
async fn inbound(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let (from, text) = if form {
        let fields: BTreeMap<String, String> = serde_urlencoded::from_bytes(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("form: {e}")))?;
        (fields.get("From").cloned(), fields.get("Body").cloned())
    } else {
        let value: Value = json_body(&body)?;
        (
            value["from"].as_str().map(str::to_string),
            value["body"].as_str().map(str::to_string),
        )
    };
    let (Some(from), Some(text)) = (from, text) else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "an inbound SMS needs From and Body (form) or from and body (JSON)",
        ));
    };
    let opted_out = state.engine.inbound_sms(name, from, text).await?;
    Ok(Json(json!({"opt_out": opted_out})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolRequest {
    key: String,
    #[serde(default)]
    name: String,
    /// A fixed expiry (RFC 3339).
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Each code expires this many days after its issue.
    valid_for_days: Option<u32>,
}

async fn create_pool(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: PoolRequest = json_body(&body)?;
    let mut pool = NewPool::new(&request.key, &request.name);
    pool = match (request.expires_at, request.valid_for_days) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "expires_at and valid_for_days: give one of them",
            ));
        }
        (Some(at), None) => pool.expiry(Expiry::At(at)),
        (None, Some(days)) => {
            pool.expiry(Expiry::AfterIssue(chrono::Duration::days(i64::from(days))))
        }
        (None, None) => pool,
    };
    state.engine.create_coupon_pool(pool).await?;
    Ok((StatusCode::CREATED, Json(json!({"key": request.key}))).into_response())
}

async fn pool_counts(
    State(state): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let counts = state.engine.coupon_counts(pool.clone()).await?;
    Ok(Json(json!({
        "pool": pool,
        "available": counts.available,
        "issued": counts.issued,
        "redeemed": counts.redeemed,
        "expired": counts.expired,
    })))
}

async fn import_codes(
    State(state): State<AppState>,
    Path(pool): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let report = state
        .engine
        .import_coupon_codes(pool, body.to_vec())
        .await?;
    Ok(Json(
        json!({"added": report.added, "skipped": report.skipped}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    pattern: String,
    count: u64,
}

async fn generate_codes(
    State(state): State<AppState>,
    Path(pool): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: GenerateRequest = json_body(&body)?;
    let report = state
        .engine
        .generate_coupon_codes(pool, request.pattern, request.count)
        .await?;
    Ok(Json(
        json!({"added": report.added, "skipped": report.skipped}),
    ))
}

async fn get_rules(State(state): State<AppState>) -> Json<Value> {
    Json(serde_json::to_value(state.engine.delivery_rules()).unwrap_or(Value::Null))
}

async fn put_rules(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let rules = state.engine.set_delivery_rules(text_body(&body)?).await?;
    Ok(Json(serde_json::to_value(rules).unwrap_or(Value::Null)))
}

async fn get_clock(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"now": state.engine.now(), "test_clock": state.engine.is_test_clock()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceRequest {
    /// How far to move the clock ahead, in seconds.
    advance_seconds: i64,
}

async fn advance_clock(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: AdvanceRequest = json_body(&body)?;
    if request.advance_seconds < 0 {
        return Err(ApiError::bad_request(
            "invalid_body",
            "advance_seconds: time only moves ahead",
        ));
    }
    let now = state
        .engine
        .advance_clock(chrono::Duration::seconds(request.advance_seconds))?;
    Ok(Json(json!({"now": now, "test_clock": true})))
}

async fn open(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    // A pixel answers even when its token is refused: mail clients show no error.
    if let Err(e) = state.engine.follow_link(token, Purpose::Open).await {
        tracing::debug!(error = %e, "an open pixel's token was refused");
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL_GIF.to_vec(),
    )
        .into_response()
}

async fn click(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let tracked = state.engine.follow_link(token, Purpose::Click).await?;
    let Some(target) = tracked.target else {
        return Err(ApiError::not_found("this link leads nowhere"));
    };
    Ok((StatusCode::FOUND, [(header::LOCATION, target)]).into_response())
}

async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    state
        .engine
        .follow_link(token, Purpose::Unsubscribe)
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><meta charset=utf-8><title>Unsubscribed</title>\
         <p>You are unsubscribed and will receive no more of these emails.</p>\
         <p>您已退订，不会再收到此类邮件。</p>",
    )
        .into_response())
}

/// RFC 8058: the mail client posts `List-Unsubscribe=One-Click`.
async fn unsubscribe_one_click(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .follow_link(token, Purpose::Unsubscribe)
        .await?;
    Ok(StatusCode::OK)
}
