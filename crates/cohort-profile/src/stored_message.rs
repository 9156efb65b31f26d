//! A stored message as the processor reads it.
//!
//! Every top-level field is built, but of `context` only `traits` and `externalIds`, where
//! identifiers come from. The rest of `context` (device, OS, library, page, user agent, IP) is
//! usually most of a message; the timeline and the lake read it from the stored body instead.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// Parses a stored message; `None` when it is not a JSON object.
pub(crate) fn parse(body: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<ForProcessing>(body)
        .ok()
        .map(|m| m.0)
}

/// The parts of `context` the processor reads; the others are skipped, not built.
#[derive(serde::Deserialize)]
struct ContextParts {
    traits: Option<Value>,
    #[serde(rename = "externalIds")]
    external_ids: Option<Value>,
}

impl ContextParts {
    /// `None` when `context` is not an object: it is then ignored, as the readers of a full
    /// message ignore a context that is not an object.
    fn of(context: &RawValue) -> Option<Map<String, Value>> {
        // A derived struct would also read an array, by position.
        let json = context.get();
        if !json.trim_start().starts_with('{') {
            return None;
        }
        let parts: ContextParts = serde_json::from_str(json).ok()?;
        let mut kept = Map::new();
        for (key, value) in [
            ("traits", parts.traits),
            ("externalIds", parts.external_ids),
        ] {
            if let Some(value) = value {
                kept.insert(key.to_string(), value);
            }
        }
        Some(kept)
    }
}

struct ForProcessing(Map<String, Value>);

impl<'de> Deserialize<'de> for ForProcessing {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = ForProcessing;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ForProcessing, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "context" {
                let context: &RawValue = map.next_value()?;
                if let Some(kept) = ContextParts::of(context) {
                    out.insert(key, Value::Object(kept));
                }
            } else {
                let value: Value = map.next_value()?;
                out.insert(key, value);
            }
        }
        Ok(ForProcessing(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn context_keeps_only_what_identity_reads_and_everything_else_is_whole() {
        let message = json!({
            "type": "identify", "userId": "u1", "traits": {"plan": "pro", "tags": [1, 2]},
            "properties": {"revenue": 9.5},
            "context": {"traits": {"email": "a@example.org"},
                        "externalIds": [{"id": "w-1", "type": "wechat_openid"}],
                        "device": {"id": "d1", "model": ["x", {"y": null}]},
                        "library": {"name": "analytics-node"}, "ip": "10.0.0.1"}
        });
        let parsed = parse(&message.to_string()).unwrap();
        let mut expected = message.as_object().unwrap().clone();
        expected["context"] = json!({"traits": {"email": "a@example.org"},
                                     "externalIds": [{"id": "w-1", "type": "wechat_openid"}]});
        assert_eq!(parsed, expected);
        assert_eq!(
            cohort_core::message::identifiers(&parsed),
            cohort_core::message::identifiers(message.as_object().unwrap()),
        );
    }

    #[test]
    fn a_context_that_is_not_an_object_is_dropped_and_the_message_kept() {
        for context in [
            json!("text"),
            json!(null),
            json!([1, {"a": 2}]),
            json!(3.5),
            json!(true),
        ] {
            let message =
                json!({"type": "track", "event": "A", "userId": "u1", "context": context});
            let parsed = parse(&message.to_string()).unwrap();
            assert_eq!(parsed.get("context"), None, "{context}");
            assert_eq!(parsed["userId"], "u1");
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        for body in ["[1, 2]", "\"text\"", "{\"type\": ", "null"] {
            assert_eq!(parse(body), None, "{body}");
        }
    }
}
