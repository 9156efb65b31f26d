//! Segment messages. A message stays JSON (customers send arbitrary properties); this module gives
//! typed access to the fields Cohort relies on.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// The six Segment call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageType {
    pub const ALL: [MessageType; 6] = [
        MessageType::Track,
        MessageType::Identify,
        MessageType::Page,
        MessageType::Screen,
        MessageType::Group,
        MessageType::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Track => "track",
            MessageType::Identify => "identify",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }

    pub fn parse(s: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Reads a string-or-number field as a string: SDKs send numeric user IDs as numbers.
pub fn id_field(msg: &Map<String, Value>, key: &str) -> Option<String> {
    match msg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses an ISO-8601 timestamp as sent by Segment SDKs (RFC 3339, with or without offset).
pub fn parse_timestamp(value: &Value) -> Option<DateTime<Utc>> {
    let s = value.as_str()?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // Some clients omit the offset; Segment treats those as UTC.
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// Formats a timestamp the way Segment does: RFC 3339, milliseconds, `Z`.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The name an event is counted under: the event name for `track`, the call type otherwise.
pub fn event_key(msg: &Map<String, Value>) -> String {
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("track");
    if kind == "track" {
        msg.get("event")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    } else {
        format!("${kind}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_user_ids_read_as_strings() {
        let msg = json!({"userId": 42, "anonymousId": "a"});
        let map = msg.as_object().unwrap();
        assert_eq!(id_field(map, "userId").as_deref(), Some("42"));
        assert_eq!(id_field(map, "anonymousId").as_deref(), Some("a"));
        assert_eq!(id_field(map, "missing"), None);
    }

    #[test]
    fn timestamps_parse_with_and_without_offset() {
        let with = parse_timestamp(&json!("2026-03-01T10:00:00+08:00")).unwrap();
        let without = parse_timestamp(&json!("2026-03-01T02:00:00.000")).unwrap();
        assert_eq!(with, without);
        assert_eq!(format_timestamp(with), "2026-03-01T02:00:00.000Z");
        assert!(parse_timestamp(&json!("yesterday")).is_none());
    }
}
