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
    parse_timestamp_str(value.as_str()?)
}

/// [`parse_timestamp`] of text already in hand.
pub fn parse_timestamp_str(s: &str) -> Option<DateTime<Utc>> {
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

/// The identifiers a message carries, in no particular order and without duplicates.
///
/// `alias` messages also carry `previousId`, whose kind depends on what it was used as before; the
/// caller resolves it (see [`previous_id`]).
pub fn identifiers(msg: &Map<String, Value>) -> Vec<crate::Identifier> {
    use crate::{IdKind, Identifier};
    let mut ids: Vec<Identifier> = Vec::with_capacity(4);
    let mut push = |id: Identifier| {
        if !id.value.is_empty() && !ids.contains(&id) {
            ids.push(id);
        }
    };
    if let Some(v) = id_field(msg, "userId") {
        push(Identifier::new(IdKind::UserId, v));
    }
    if let Some(v) = id_field(msg, "anonymousId") {
        push(Identifier::new(IdKind::AnonymousId, v));
    }
    let is_identify = msg.get("type").and_then(Value::as_str) == Some("identify");
    let own_traits = if is_identify { msg.get("traits") } else { None };
    let context = msg.get("context").and_then(Value::as_object);
    let context_traits = context.and_then(|c| c.get("traits"));
    for traits in [own_traits, context_traits].into_iter().flatten() {
        if let Some(t) = traits.as_object() {
            if let Some(email) = t.get("email").and_then(Value::as_str) {
                push(Identifier::new(IdKind::Email, email.trim()));
            }
            if let Some(phone) = t.get("phone").and_then(Value::as_str) {
                push(Identifier::new(IdKind::Phone, phone.trim()));
            }
        }
    }
    // Segment's convention for extra identifiers: context.externalIds = [{id, type}].
    if let Some(external) = context
        .and_then(|c| c.get("externalIds"))
        .and_then(Value::as_array)
    {
        for entry in external {
            let id = entry.get("id").and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            let kind = entry.get("type").and_then(Value::as_str);
            if let (Some(id), Some(kind)) = (id, kind) {
                push(Identifier::new(IdKind::parse(kind), id));
            }
        }
    }
    ids
}

/// The `previousId` of an alias message.
pub fn previous_id(msg: &Map<String, Value>) -> Option<String> {
    id_field(msg, "previousId")
}

#[cfg(test)]
mod identifier_tests {
    use super::*;
    use crate::{IdKind, Identifier};
    use serde_json::json;

    #[test]
    fn identify_collects_ids_from_traits_context_and_external_ids() {
        let msg = json!({
            "type": "identify", "userId": "u1", "anonymousId": "a1",
            "traits": {"email": "ada@example.org", "phone": "+8613800000000"},
            "context": {"traits": {"email": "ada@example.org"},
                        "externalIds": [{"id": "wx-1", "type": "wechat_openid"}]}
        });
        let ids = identifiers(msg.as_object().unwrap());
        assert_eq!(
            ids,
            vec![
                Identifier::new(IdKind::UserId, "u1"),
                Identifier::new(IdKind::AnonymousId, "a1"),
                Identifier::new(IdKind::Email, "ada@example.org"),
                Identifier::new(IdKind::Phone, "+8613800000000"),
                Identifier::new(IdKind::Custom("wechat_openid".into()), "wx-1"),
            ]
        );
    }

    #[test]
    fn track_properties_do_not_link_identities() {
        let msg = json!({"type": "track", "anonymousId": "a", "traits": {"email": "x@y.z"},
                         "properties": {"email": "x@y.z"}});
        assert_eq!(identifiers(msg.as_object().unwrap()).len(), 1);
    }
}
