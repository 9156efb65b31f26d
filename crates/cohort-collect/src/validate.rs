//! One message from "as sent" to "ready for the inbox": spec checks, message ID, clock-skew
//! correction, normalisation and the tracking plan. A message that fails becomes a [`Rejection`]
//! that keeps the message as sent, so the failed-events store can hold and replay it.

use crate::Limits;
use crate::normalise::NormaliseRules;
use crate::tracking_plan::{TrackingPlan, Verdict};
use chrono::{DateTime, Utc};
use cohort_core::MessageType;
use cohort_core::message::{format_timestamp, identifiers, parse_timestamp};
use cohort_identity::IdentityRules;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Longest `userId`, `anonymousId`, `groupId` or `previousId` accepted, in bytes.
///
/// Identifiers key the identity graph, profiles and every lookup, so each stored byte is paid
/// for again in indexes; the write key is public, so nothing else stops a client from sending
/// 30 KB IDs. Real identifiers are short strings, as Segment advises: UUIDs (36 bytes),
/// database keys, hashes, and e-mail addresses, which RFC 5321 caps at 254 bytes and so still
/// fit.
pub const MAX_ID_BYTES: usize = 256;

/// Longest `messageId` accepted, in bytes.
///
/// The message ID is the deduplication key kept for every message. Segment's libraries send
/// UUIDs or short prefixed hashes (under 64 bytes); the rest leaves room for a source's own
/// prefixed scheme.
pub const MAX_MESSAGE_ID_BYTES: usize = 256;

/// Longest track `event` name accepted, in bytes.
///
/// Event names are labels ("Order Completed") that become catalogue entries, metric labels
/// and tracking-plan keys; a sentence-long name is already a mistake, a kilobyte one is abuse.
pub const MAX_EVENT_NAME_BYTES: usize = 256;

/// Everything that decides how one source's messages are checked and shaped.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub limits: Limits,
    pub normalise: NormaliseRules,
    pub tracking_plan: Option<Arc<TrackingPlan>>,
    pub identity: Arc<IdentityRules>,
}

/// A message ready for the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub message_id: String,
    pub message: Map<String, Value>,
}

/// A message refused, with the reason and the message as it was sent (serialised JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
    pub payload: String,
}

impl Rejection {
    fn new(code: &'static str, message: impl Into<String>, payload: String) -> Self {
        Self {
            code,
            message: message.into(),
            payload,
        }
    }
}

/// Checks and shapes one message received at `received_at`.
pub fn prepare(
    raw: Value,
    received_at: DateTime<Utc>,
    policy: &Policy,
) -> Result<Prepared, Rejection> {
    // Serialised once: the size check needs it, and a rejection keeps it as the payload.
    let payload = serde_json::to_string(&raw).unwrap_or_default();
    let size = payload.len();
    if size > policy.limits.max_event_bytes {
        return Err(Rejection::new(
            "event_too_large",
            format!(
                "message is {size} bytes; at most {} are accepted per message",
                policy.limits.max_event_bytes
            ),
            payload,
        ));
    }
    let Value::Object(mut msg) = raw else {
        return Err(Rejection::new(
            "invalid_message",
            "message must be a JSON object",
            payload,
        ));
    };
    if let Err((code, why)) = check_spec(&msg) {
        return Err(Rejection::new(code, why, payload));
    }

    if let Err(why) = fix_time(&mut msg, received_at) {
        return Err(Rejection::new("invalid_timestamp", why, payload));
    }
    let message_id = match msg.get("messageId") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("cohort-{}", uuid::Uuid::new_v4()),
    };
    msg.insert("messageId".into(), Value::String(message_id.clone()));

    let notes = policy.normalise.apply(&mut msg);
    if !notes.is_empty() {
        annotate(
            &mut msg,
            "normalisation",
            notes.into_iter().map(Value::String).collect(),
        );
    }

    // Checked after normalisation: "NULL " and " Test@Test.com" are junk too.
    let ids = identifiers(&msg);
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "alias" && ids.iter().all(|id| policy.identity.is_blocked(&id.value)) {
        let why = if ids.is_empty() {
            "message has neither userId nor anonymousId".to_string()
        } else {
            let listed: Vec<String> = ids.iter().map(ToString::to_string).collect();
            format!(
                "every identifier is a blocked junk value ({})",
                listed.join(", ")
            )
        };
        return Err(Rejection::new("missing_identifier", why, payload));
    }

    if let Some(plan) = &policy.tracking_plan {
        match plan.check(&msg) {
            Verdict::Pass => {}
            Verdict::Flag(violations) => {
                let list = violations
                    .iter()
                    .map(|v| json!({"path": v.path, "message": v.message}));
                annotate(&mut msg, "violations", list.collect());
            }
            Verdict::Block(violations) => {
                let text: Vec<String> = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.path, v.message))
                    .collect();
                return Err(Rejection::new(
                    "tracking_plan_violation",
                    format!("blocked by the tracking plan: {}", text.join("; ")),
                    payload,
                ));
            }
        }
    }
    Ok(Prepared {
        message_id,
        message: msg,
    })
}

/// Records governance notes under `context.protocols` (where Segment keeps its violations).
fn annotate(msg: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    let context = msg
        .entry("context")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(context) = context {
        let protocols = context
            .entry("protocols")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(protocols) = protocols {
            protocols.insert(key.into(), Value::Array(items));
        }
    }
}

fn check_spec(msg: &Map<String, Value>) -> Result<(), (&'static str, String)> {
    let kind = match msg.get("type") {
        Some(Value::String(t)) => MessageType::parse(t).ok_or_else(|| {
            (
                "invalid_type",
                format!(
                    "\"type\" is {t:?}; expected one of track, identify, page, screen, group, alias"
                ),
            )
        })?,
        Some(_) => return Err(("invalid_type", "\"type\" must be a string".into())),
        None => return Err(("invalid_type", "message has no \"type\"".into())),
    };
    for (key, max) in [
        ("userId", MAX_ID_BYTES),
        ("anonymousId", MAX_ID_BYTES),
        ("previousId", MAX_ID_BYTES),
        ("groupId", MAX_ID_BYTES),
        ("messageId", MAX_MESSAGE_ID_BYTES),
    ] {
        let len = match msg.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.len(),
            // Measured as written: with serde_json's arbitrary precision a number can be as
            // long as a string.
            Some(Value::Number(n)) => n.to_string().len(),
            Some(other) => {
                return Err((
                    "invalid_field",
                    format!(
                        "\"{key}\" must be a string or a number, not {}",
                        type_name(other)
                    ),
                ));
            }
        };
        check_length(key, len, max)?;
    }
    for key in ["properties", "traits", "context", "integrations"] {
        match msg.get(key) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => {
                return Err((
                    "invalid_field",
                    format!("\"{key}\" must be an object, not {}", type_name(other)),
                ));
            }
        }
    }
    let present = |key: &str| match msg.get(key) {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Number(_)) => true,
        _ => false,
    };
    match kind {
        MessageType::Track => match msg.get("event") {
            Some(Value::String(e)) if !e.trim().is_empty() => {
                check_length("event", e.len(), MAX_EVENT_NAME_BYTES)?;
            }
            _ => {
                return Err((
                    "missing_event",
                    "track messages need a non-empty \"event\" name".into(),
                ));
            }
        },
        MessageType::Alias => {
            if !present("userId") || !present("previousId") {
                return Err((
                    "missing_identifier",
                    "alias messages need both \"userId\" and \"previousId\"".into(),
                ));
            }
        }
        MessageType::Group => {
            if !present("groupId") {
                return Err(("missing_field", "group messages need a \"groupId\"".into()));
            }
        }
        MessageType::Page | MessageType::Screen => {
            if let Some(name) = msg.get("name")
                && !matches!(name, Value::String(_) | Value::Null)
            {
                return Err(("invalid_field", "\"name\" must be a string".into()));
            }
        }
        MessageType::Identify => {}
    }
    if !present("userId") && !present("anonymousId") {
        return Err((
            "missing_identifier",
            "message has neither userId nor anonymousId".into(),
        ));
    }
    Ok(())
}

fn check_length(key: &str, len: usize, max: usize) -> Result<(), (&'static str, String)> {
    if len > max {
        return Err((
            "field_too_long",
            format!("\"{key}\" is {len} bytes; at most {max} are accepted"),
        ));
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sets `receivedAt`, keeps the device's time as `originalTimestamp`, and corrects `timestamp` for
/// the device's clock skew: `timestamp = receivedAt - (sentAt - originalTimestamp)`.
fn fix_time(msg: &mut Map<String, Value>, received_at: DateTime<Utc>) -> Result<(), String> {
    let parse = |msg: &Map<String, Value>, key: &str| -> Result<Option<DateTime<Utc>>, String> {
        match msg.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_timestamp(v)
                .map(Some)
                .ok_or_else(|| format!("\"{key}\" is not an ISO-8601 timestamp: {v}")),
        }
    };
    let original = match parse(msg, "originalTimestamp")? {
        Some(t) => Some(t),
        None => parse(msg, "timestamp")?,
    };
    let sent_at = parse(msg, "sentAt")?;
    let timestamp = match (original, sent_at) {
        (Some(original), Some(sent)) => received_at - (sent - original),
        (Some(original), None) => original,
        (None, _) => received_at,
    };
    if let Some(original) = original {
        msg.insert(
            "originalTimestamp".into(),
            Value::String(format_timestamp(original)),
        );
    }
    msg.insert(
        "timestamp".into(),
        Value::String(format_timestamp(timestamp)),
    );
    msg.insert(
        "receivedAt".into(),
        Value::String(format_timestamp(received_at)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ok(raw: Value) -> Map<String, Value> {
        prepare(raw, at("2026-05-01T12:00:00Z"), &Policy::default())
            .unwrap()
            .message
    }

    fn code(raw: Value) -> &'static str {
        prepare(raw, at("2026-05-01T12:00:00Z"), &Policy::default())
            .unwrap_err()
            .code
    }

    #[test]
    fn device_clock_skew_is_corrected_from_sent_at() {
        // The device clock runs 1 hour fast: it stamped the event 10 s before sending.
        let msg = ok(json!({"type": "track", "event": "A", "anonymousId": "a",
            "timestamp": "2026-05-01T12:59:50Z", "sentAt": "2026-05-01T13:00:00Z"}));
        assert_eq!(msg["timestamp"], "2026-05-01T11:59:50.000Z");
        assert_eq!(msg["originalTimestamp"], "2026-05-01T12:59:50.000Z");
        assert_eq!(msg["receivedAt"], "2026-05-01T12:00:00.000Z");
    }

    #[test]
    fn missing_message_id_and_timestamp_are_filled() {
        let msg = ok(json!({"type": "page", "userId": 7}));
        assert!(msg["messageId"].as_str().unwrap().starts_with("cohort-"));
        assert_eq!(msg["timestamp"], "2026-05-01T12:00:00.000Z");
    }

    fn refused(raw: Value) -> Rejection {
        prepare(raw, at("2026-05-01T12:00:00Z"), &Policy::default()).unwrap_err()
    }

    /// A message of a type that needs `key`, with `key` set to `value`.
    fn carrying(key: &str, value: &str) -> Value {
        let mut msg = match key {
            "groupId" => json!({"type": "group", "userId": "u", "groupId": "g"}),
            "previousId" => json!({"type": "alias", "userId": "u", "previousId": "p"}),
            _ => json!({"type": "track", "event": "E", "userId": "u", "anonymousId": "a"}),
        };
        msg[key] = json!(value);
        msg
    }

    #[test]
    fn identifiers_longer_than_the_limit_are_refused_naming_field_and_limit() {
        for (key, max) in [
            ("userId", MAX_ID_BYTES),
            ("anonymousId", MAX_ID_BYTES),
            ("groupId", MAX_ID_BYTES),
            ("previousId", MAX_ID_BYTES),
            ("messageId", MAX_MESSAGE_ID_BYTES),
            ("event", MAX_EVENT_NAME_BYTES),
        ] {
            // The attack: a 30 KB identifier, inside the 32 KB message limit.
            let rejection = refused(carrying(key, &"x".repeat(30 * 1024)));
            assert_eq!(rejection.code, "field_too_long", "{key}");
            assert_eq!(
                rejection.message,
                format!(
                    "\"{key}\" is {} bytes; at most {max} are accepted",
                    30 * 1024
                )
            );
            assert!(
                rejection.payload.len() > 30 * 1024,
                "the message is kept as sent"
            );

            let ok = prepare(
                carrying(key, &"x".repeat(max)),
                at("2026-05-01T12:00:00Z"),
                &Policy::default(),
            );
            assert!(ok.is_ok(), "{key} of exactly {max} bytes: {ok:?}");
            // Bytes, not characters: 129 two-byte characters are 258 bytes.
            let wide = refused(carrying(key, &"é".repeat(max / 2 + 1)));
            assert_eq!(wide.code, "field_too_long", "{key}");
        }
    }

    #[test]
    fn spec_violations_get_their_own_codes() {
        assert_eq!(code(json!("x")), "invalid_message");
        assert_eq!(code(json!({"type": "jump", "userId": "u"})), "invalid_type");
        assert_eq!(
            code(json!({"type": "track", "userId": "u"})),
            "missing_event"
        );
        assert_eq!(
            code(json!({"type": "track", "event": "A"})),
            "missing_identifier"
        );
        assert_eq!(
            code(json!({"type": "track", "event": "A", "userId": {"a": 1}})),
            "invalid_field"
        );
        assert_eq!(
            code(json!({"type": "track", "event": "A", "userId": "u", "properties": []})),
            "invalid_field"
        );
        assert_eq!(
            code(json!({"type": "alias", "userId": "u"})),
            "missing_identifier"
        );
        assert_eq!(
            code(json!({"type": "group", "userId": "u"})),
            "missing_field"
        );
        assert_eq!(
            code(json!({"type": "track", "event": "A", "userId": "u", "timestamp": "soon"})),
            "invalid_timestamp"
        );
        assert_eq!(
            code(
                json!({"type": "track", "event": "A", "userId": "null", "anonymousId": "undefined"})
            ),
            "missing_identifier"
        );
        let big = "x".repeat(40 * 1024);
        assert_eq!(
            code(json!({"type": "track", "event": "A", "userId": "u", "properties": {"p": big}})),
            "event_too_large"
        );
    }
}
