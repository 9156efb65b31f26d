//! A stored message as the processor reads it.
//!
//! Every top-level field is built, but of `context` only `traits` and `externalIds`, where
//! identifiers come from. The rest of `context` (device, OS, library, page, user agent, IP) is
//! usually most of a message; the timeline and the lake read it from the stored body instead.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// The context parts the processor reads.
const KEPT_CONTEXT: [&str; 2] = ["traits", "externalIds"];

/// Parses a stored message; `None` when it is not a JSON object.
pub(crate) fn parse(body: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<ForProcessing>(body)
        .ok()
        .map(|m| m.0)
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
                if let Some(kept) = map.next_value::<ContextParts>()?.0 {
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

/// The kept parts of `context`; `None` when it is not an object (then it is ignored, as the
/// readers of a full message ignore a context that is not an object).
struct ContextParts(Option<Map<String, Value>>);

impl<'de> Deserialize<'de> for ContextParts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContextVisitor)
    }
}

struct ContextVisitor;

impl ContextVisitor {
    fn not_an_object<E>(self) -> Result<ContextParts, E> {
        Ok(ContextParts(None))
    }
}

impl<'de> Visitor<'de> for ContextVisitor {
    type Value = ContextParts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContextParts, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if KEPT_CONTEXT.contains(&key.as_str()) {
                let value: Value = map.next_value()?;
                kept.insert(key, value);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ContextParts(Some(kept)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ContextParts, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object()
    }

    fn visit_bool<E>(self, _: bool) -> Result<ContextParts, E> {
        self.not_an_object()
    }

    fn visit_i64<E>(self, _: i64) -> Result<ContextParts, E> {
        self.not_an_object()
    }

    fn visit_u64<E>(self, _: u64) -> Result<ContextParts, E> {
        self.not_an_object()
    }

    fn visit_f64<E>(self, _: f64) -> Result<ContextParts, E> {
        self.not_an_object()
    }

    fn visit_str<E>(self, _: &str) -> Result<ContextParts, E> {
        self.not_an_object()
    }

    fn visit_unit<E>(self) -> Result<ContextParts, E> {
        self.not_an_object()
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
