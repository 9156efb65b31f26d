//! One message from "as sent" to "ready for the inbox": spec checks, message ID, clock-skew
//! correction, normalisation and the tracking plan. A message that fails becomes a [`Rejection`]
//! that keeps the message as sent, so the failed-events store can hold and replay it.
//!
//! # Sizes
//!
//! Besides the whole-message limit ([`Limits::max_event_bytes`]), `userId`, `anonymousId`,
//! `groupId` and `previousId` are capped at [`MAX_ID_BYTES`], `messageId` at
//! [`MAX_MESSAGE_ID_BYTES`] and a track's `event` name at [`MAX_EVENT_NAME_BYTES`]. A longer
//! one is refused as `field_too_long`, naming the field and the limit.
//!
//! # Event time
//!
//! The stored `timestamp` is worked out from the device's time of the event
//! (`originalTimestamp`, else `timestamp`), the device's time of sending (`sentAt`) and the
//! receive time:
//!
//! - no device time: the receive time;
//! - a device time but no `sentAt`: the device time;
//! - both: the device time corrected for the device clock's skew, as Segment does:
//!   `receivedAt - (sentAt - originalTimestamp)`.
//!
//! Event times must lie in a window: from [`EARLIEST_EVENT_TIME`] (the Unix epoch, so
//! historical imports such as 1990s orders still load) to [`Limits::max_future_skew_secs`]
//! after the receive time (a day by default), and never past the year 9999 whatever the skew
//! (a later time cannot be written as RFC 3339). The skew correction is made only when the
//! corrected time lies in the window; otherwise the device time is kept as sent. A nonsense
//! `sentAt` (year 0001 once turned into an event dated 4051) thus cannot move an event out of
//! the window, while a device clock that runs years fast or slow is still corrected, as Segment
//! corrects it. A message whose event time still lies outside it is
//! refused as `timestamp_out_of_range`, naming the field, the value and the window; one whose
//! times are not ISO-8601 at all is refused as `invalid_timestamp`. Chrono arithmetic on the
//! extremes RFC 3339 allows (years 0001 and 9999, and beyond through the offset-less form) is
//! checked, so no time can overflow it.

use crate::Limits;
use crate::normalise::NormaliseRules;
use crate::tracking_plan::{TrackingPlan, Verdict};
use chrono::{DateTime, TimeDelta, Utc};
use cohort_core::MessageType;
use cohort_core::message::{format_timestamp, identifiers, parse_timestamp};
use cohort_identity::IdentityRules;
use serde_json::{Map, Value, json};
use std::fmt;
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

/// Largest amount (`revenue`, `price` …) accepted, in either sign. Revenue totals are sums of
/// these: a billion orders at the largest amount still add up far inside a double, so totals can
/// never overflow into a silent null, and no real order comes near it.
pub const MAX_AMOUNT: f64 = 1e15;

/// The Segment e-commerce spec's money properties, checked against [`MAX_AMOUNT`].
const MONEY_PROPERTIES: [&str; 8] = [
    "revenue", "total", "value", "price", "subtotal", "tax", "shipping", "discount",
];

/// Longest track `event` name accepted, in bytes.
///
/// Event names are labels ("Order Completed") that become catalogue entries, metric labels
/// and tracking-plan keys; a sentence-long name is already a mistake, a kilobyte one is abuse.
pub const MAX_EVENT_NAME_BYTES: usize = 256;

/// The earliest event time accepted: the Unix epoch.
///
/// Historical imports (orders from 1997) lie after it; times before it come from unset device
/// clocks and placeholder dates such as 0001-01-01, and would sort before every real event.
pub const EARLIEST_EVENT_TIME: DateTime<Utc> = DateTime::<Utc>::UNIX_EPOCH;

/// The latest time RFC 3339 can write, 9999-12-31T23:59:59.999999999Z (years have four
/// digits). A later one would be stored as text that nothing downstream reads back as a time,
/// so the window ends here whatever the configured skew.
const LATEST_WRITABLE_TIME: DateTime<Utc> =
    match DateTime::from_timestamp(253_402_300_799, 999_999_999) {
        Some(t) => t,
        None => DateTime::<Utc>::MAX_UTC,
    };

/// Everything that decides how one source's messages are checked and shaped.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub limits: Limits,
    pub normalise: NormaliseRules,
    pub tracking_plan: Option<Arc<TrackingPlan>>,
    /// Set when the source has a stored tracking plan that cannot be applied; then
    /// `tracking_plan` is `None`.
    pub unusable_plan: Option<UnusablePlan>,
    pub identity: Arc<IdentityRules>,
}

/// A stored tracking plan that cannot be applied: it no longer compiles (a pattern this version
/// refuses, say) or no longer reads as a plan. Ignoring it would let a plan that blocks stop
/// blocking without anybody noticing, so its messages are refused as
/// `tracking_plan_unusable` (kept as failed events, to replay once the plan is fixed) when the
/// plan blocks anything or its mode is unknown, and flagged otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusablePlan {
    /// Why it cannot be applied.
    pub error: String,
    /// Whether its messages are refused rather than flagged.
    pub blocks: bool,
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

    if let Err((code, why)) = fix_time(&mut msg, received_at, &policy.limits) {
        return Err(Rejection::new(code, why, payload));
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

    if let Some(unusable) = &policy.unusable_plan {
        let why = format!(
            "the source's tracking plan cannot be applied: {}",
            unusable.error
        );
        if unusable.blocks {
            return Err(Rejection::new(
                "tracking_plan_unusable",
                format!("{why}; the message is kept until the plan is fixed and it is replayed"),
                payload,
            ));
        }
        annotate(
            &mut msg,
            "violations",
            vec![json!({"path": "", "message": why})],
        );
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
    if let Some(Value::Object(properties)) = msg.get("properties") {
        for key in MONEY_PROPERTIES {
            if let Some(amount) = properties.get(key).and_then(Value::as_f64)
                && amount.abs() > MAX_AMOUNT
            {
                return Err((
                    "amount_out_of_range",
                    format!(
                        "\"properties.{key}\" {amount:e} is beyond ±{MAX_AMOUNT:e}, the largest amount accepted"
                    ),
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

/// Sets `receivedAt`, keeps the device's time as `originalTimestamp`, and sets `timestamp` to
/// the event time, corrected for the device's clock skew when that is safe. See the module
/// documentation for the rules and the window.
fn fix_time(
    msg: &mut Map<String, Value>,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<(), (&'static str, String)> {
    let parse = |msg: &Map<String, Value>, key: &str| match msg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_timestamp(v).map(Some).ok_or_else(|| {
            (
                "invalid_timestamp",
                format!("\"{key}\" is not an ISO-8601 timestamp: {v}"),
            )
        }),
    };
    let (device_key, device_time) = match parse(msg, "originalTimestamp")? {
        Some(t) => ("originalTimestamp", Some(t)),
        None => ("timestamp", parse(msg, "timestamp")?),
    };
    let sent_at = parse(msg, "sentAt")?;
    let window = TimeWindow::new(received_at, limits);
    let (key, timestamp) = match device_time {
        None => ("receivedAt", received_at),
        Some(device) => {
            match sent_at.and_then(|sent| skew_corrected(device, sent, received_at, &window)) {
                Some(corrected) => ("timestamp", corrected),
                None => (device_key, device),
            }
        }
    };
    if !window.contains(timestamp) {
        let mut why = format!(
            "\"{key}\" {} is outside the accepted event-time window, {window}",
            format_timestamp(timestamp)
        );
        if let (Some(sent), Some(_)) = (sent_at, device_time) {
            why.push_str(&format!(
                "; not corrected by \"sentAt\" {}: a correction is made only when the \
                 corrected time lies in the window",
                format_timestamp(sent)
            ));
        }
        return Err(("timestamp_out_of_range", why));
    }
    if let Some(original) = device_time {
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

/// `device` corrected for the device clock's skew, `received_at - (sent - device)`, when `sent`
/// and the corrected time both lie in `window`.
fn skew_corrected(
    device: DateTime<Utc>,
    sent: DateTime<Utc>,
    received_at: DateTime<Utc>,
    window: &TimeWindow,
) -> Option<DateTime<Utc>> {
    // The difference itself cannot overflow (a TimeDelta spans ±292 million years, a chrono
    // date ±262,000), but moving the receive time by it can leave chrono's range.
    let skew = sent.signed_duration_since(device);
    received_at
        .checked_sub_signed(skew)
        .filter(|t| window.contains(*t))
}

/// The event times accepted for one message: from [`EARLIEST_EVENT_TIME`] to
/// [`Limits::max_future_skew_secs`] after its receive time.
struct TimeWindow {
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    future_skew_secs: u64,
}

impl TimeWindow {
    fn new(received_at: DateTime<Utc>, limits: &Limits) -> Self {
        // A skew beyond chrono's range means "as late as can be written", not a panic.
        let latest = i64::try_from(limits.max_future_skew_secs)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .and_then(|skew| received_at.checked_add_signed(skew))
            .map_or(LATEST_WRITABLE_TIME, |t| t.min(LATEST_WRITABLE_TIME));
        Self {
            earliest: EARLIEST_EVENT_TIME,
            latest,
            future_skew_secs: limits.max_future_skew_secs,
        }
    }

    fn contains(&self, t: DateTime<Utc>) -> bool {
        self.earliest <= t && t <= self.latest
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to {} (at most {} s after the receive time)",
            format_timestamp(self.earliest),
            format_timestamp(self.latest),
            self.future_skew_secs
        )
    }
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

    fn track_at(times: Value) -> Value {
        let mut msg = json!({"type": "track", "event": "A", "anonymousId": "a"});
        for (key, value) in times.as_object().into_iter().flatten() {
            msg[key] = value.clone();
        }
        msg
    }

    #[test]
    fn sent_at_in_year_one_does_not_move_the_event_out_of_the_window() {
        // The attack: this once stored a timestamp of 4051-12-02.
        let msg = ok(track_at(json!({
            "timestamp": "2026-05-01T11:59:50Z",
            "sentAt": "0001-01-01T00:00:00Z"
        })));
        assert_eq!(msg["timestamp"], "2026-05-01T11:59:50.000Z");
        // The far side: a correction by a sentAt in 9999 would date the event before 1970.
        let msg = ok(track_at(json!({
            "timestamp": "2026-05-01T11:59:50Z",
            "sentAt": "9999-12-31T23:59:59.999Z"
        })));
        assert_eq!(msg["timestamp"], "2026-05-01T11:59:50.000Z");
    }

    #[test]
    fn event_times_outside_the_window_are_refused_naming_field_value_and_window() {
        let rejection = refused(track_at(json!({"timestamp": "0001-01-01T00:00:00Z"})));
        assert_eq!(rejection.code, "timestamp_out_of_range");
        assert_eq!(
            rejection.message,
            "\"timestamp\" 0001-01-01T00:00:00.000Z is outside the accepted event-time window, \
             1970-01-01T00:00:00.000Z to 2026-05-02T12:00:00.000Z \
             (at most 86400 s after the receive time)"
        );
        let rejection = refused(track_at(json!({
            "originalTimestamp": "9999-12-31T23:59:59Z",
            "sentAt": "0001-01-01T00:00:00Z"
        })));
        assert_eq!(rejection.code, "timestamp_out_of_range");
        assert!(
            rejection.message.starts_with(
                "\"originalTimestamp\" 9999-12-31T23:59:59.000Z is outside the accepted"
            ),
            "{}",
            rejection.message
        );
        assert!(
            rejection
                .message
                .contains("not corrected by \"sentAt\" 0001-01-01T00:00:00.000Z"),
            "{}",
            rejection.message
        );
        let code = |timestamp: &str| {
            prepare(
                track_at(json!({"timestamp": timestamp})),
                at("2026-05-01T12:00:00Z"),
                &Policy::default(),
            )
            .map(|p| p.message["timestamp"].clone())
            .map_err(|r| r.code)
        };
        assert_eq!(code("1969-12-31T23:59:59Z"), Err("timestamp_out_of_range"));
        assert_eq!(
            code("1970-01-01T00:00:00Z"),
            Ok(json!("1970-01-01T00:00:00.000Z"))
        );
        assert_eq!(
            code("1997-03-14T09:30:00Z"),
            Ok(json!("1997-03-14T09:30:00.000Z"))
        );
        assert_eq!(
            code("2026-05-02T12:00:00Z"),
            Ok(json!("2026-05-02T12:00:00.000Z"))
        );
        assert_eq!(code("2026-05-02T12:00:01Z"), Err("timestamp_out_of_range"));
    }

    #[test]
    fn a_fast_device_clock_is_corrected_while_the_correction_stays_in_the_window() {
        // A clock two days fast: sentAt lies past the window, but the corrected time does not.
        let msg = ok(track_at(json!({
            "timestamp": "2026-05-03T11:59:50Z",
            "sentAt": "2026-05-03T12:00:00Z"
        })));
        assert_eq!(msg["timestamp"], "2026-05-01T11:59:50.000Z");
        // Years fast, as a device with a dead clock battery may be.
        let msg = ok(track_at(json!({
            "timestamp": "2030-01-01T00:00:00Z",
            "sentAt": "2030-01-01T00:00:10Z"
        })));
        assert_eq!(msg["timestamp"], "2026-05-01T11:59:50.000Z");
    }

    #[test]
    fn an_unusable_tracking_plan_refuses_or_flags_every_message() {
        let policy = |blocks| Policy {
            unusable_plan: Some(UnusablePlan {
                error: "pattern uses look-around".into(),
                blocks,
            }),
            ..Policy::default()
        };
        let raw = json!({"type": "track", "event": "A", "anonymousId": "a"});
        let refused = prepare(raw.clone(), Utc::now(), &policy(true)).expect_err("refused");
        assert_eq!(refused.code, "tracking_plan_unusable");
        assert!(
            refused.message.contains("look-around"),
            "{}",
            refused.message
        );
        let flagged = prepare(raw, Utc::now(), &policy(false)).expect("accepted");
        let violations = &flagged.message["context"]["protocols"]["violations"];
        assert!(
            violations[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("look-around")),
            "{violations}"
        );
    }

    #[test]
    fn the_future_skew_allowed_is_configurable() {
        let policy = |secs| Policy {
            limits: Limits {
                max_future_skew_secs: secs,
                ..Limits::default()
            },
            ..Policy::default()
        };
        let received = at("2026-05-01T12:00:00Z");
        let ahead = track_at(json!({"timestamp": "2026-05-01T12:00:01Z"}));
        let rejection = prepare(ahead.clone(), received, &policy(0)).unwrap_err();
        assert_eq!(rejection.code, "timestamp_out_of_range");
        assert!(
            rejection.message.contains("at most 0 s after"),
            "{}",
            rejection.message
        );
        assert!(prepare(ahead, received, &policy(1)).is_ok());
        // Larger than chrono can add: no upper bound, no overflow.
        let far = track_at(json!({"timestamp": "9999-12-31T23:59:59Z"}));
        assert!(prepare(far, received, &policy(u64::MAX)).is_ok());
        // Year 10000 in UTC, which RFC 3339 cannot write: past the window whatever the skew.
        let too_far = track_at(json!({"timestamp": "9999-12-31T23:59:59-23:59"}));
        let rejection = prepare(too_far, received, &policy(u64::MAX)).unwrap_err();
        assert_eq!(rejection.code, "timestamp_out_of_range");
    }

    #[test]
    fn extreme_timestamps_never_overflow() {
        let extremes = [
            json!(null),
            json!("0001-01-01T00:00:00Z"),
            json!("0001-01-01T00:00:00+23:59"),
            json!("9999-12-31T23:59:59.999999999Z"),
            json!("9999-12-31T23:59:59-23:59"),
            json!("+262142-12-31T23:59:59"),
            json!("-262142-01-01T00:00:00"),
            json!("1970-01-01T00:00:00Z"),
            json!("2026-05-01T11:59:59Z"),
        ];
        let received = [
            at("2026-05-01T12:00:00Z"),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        let skews = [0, 24 * 60 * 60, u64::MAX];
        for original in &extremes {
            for sent in &extremes {
                for received_at in received {
                    for skew in skews {
                        let policy = Policy {
                            limits: Limits {
                                max_future_skew_secs: skew,
                                ..Limits::default()
                            },
                            ..Policy::default()
                        };
                        let raw = track_at(json!({"timestamp": original, "sentAt": sent}));
                        let window = TimeWindow::new(received_at, &policy.limits);
                        match prepare(raw, received_at, &policy) {
                            Ok(p) => {
                                // What is stored reads back, and lies in the window.
                                let stored = parse_timestamp(&p.message["timestamp"]);
                                assert!(
                                    stored.is_some_and(|t| window.contains(t)),
                                    "{original} {sent} -> {}",
                                    p.message["timestamp"]
                                );
                            }
                            Err(r) => assert!(
                                matches!(r.code, "timestamp_out_of_range" | "invalid_timestamp"),
                                "{original} {sent}: {r:?}"
                            ),
                        }
                    }
                }
            }
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

    #[test]
    fn amounts_beyond_the_largest_are_refused_so_totals_cannot_overflow() {
        let order = |revenue: Value| {
            json!({"type": "track", "event": "Order Completed", "userId": "u",
                   "properties": {"revenue": revenue}})
        };
        let rejection = refused(order(json!(1.79e308)));
        assert_eq!(rejection.code, "amount_out_of_range");
        assert!(
            rejection.message.contains("properties.revenue"),
            "{}",
            rejection.message
        );
        assert_eq!(refused(order(json!(-2e15))).code, "amount_out_of_range");
        ok(order(json!(1e15)));
        ok(order(json!("not a number: left to normalisation")));
    }
}
