//! Routes and batches: from one decoded request body to the individual messages it carries.

use crate::{Limits, RequestError};
use cohort_core::MessageType;
use serde_json::{Map, Value};

/// What an ingest route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/track`, `/v1/t`, … : one message whose type the route names.
    Single(MessageType),
    /// `/v1/batch`, `/v1/b`, `/v1/import`: `{"batch": [...]}`.
    Batch,
}

impl Route {
    /// The route for the last path segment after `/v1/`.
    pub fn from_segment(segment: &str) -> Option<Route> {
        Some(match segment {
            "track" | "t" => Route::Single(MessageType::Track),
            "identify" | "i" => Route::Single(MessageType::Identify),
            "page" | "p" => Route::Single(MessageType::Page),
            "screen" | "s" => Route::Single(MessageType::Screen),
            "group" | "g" => Route::Single(MessageType::Group),
            "alias" | "a" => Route::Single(MessageType::Alias),
            "batch" | "b" | "import" => Route::Batch,
            _ => return None,
        })
    }
}

/// Splits a request body into its messages, each with the batch-level `context`, `integrations` and
/// `sentAt` merged in (the message's own values win).
pub fn expand(route: Route, body: Value, limits: &Limits) -> Result<Vec<Value>, RequestError> {
    let Value::Object(mut body) = body else {
        return Err(RequestError::new(
            "invalid_body",
            "body must be a JSON object",
        ));
    };
    body.remove("writeKey");
    match route {
        Route::Single(kind) => {
            body.insert("type".into(), Value::String(kind.as_str().into()));
            Ok(vec![Value::Object(body)])
        }
        Route::Batch => {
            let batch = match body.remove("batch") {
                Some(Value::Array(items)) => items,
                Some(_) => {
                    return Err(RequestError::new(
                        "invalid_batch",
                        "\"batch\" must be an array of messages",
                    ));
                }
                None => {
                    return Err(RequestError::new(
                        "invalid_batch",
                        "body has no \"batch\" array",
                    ));
                }
            };
            if batch.len() > limits.max_batch_events {
                return Err(RequestError::new(
                    "batch_too_large",
                    format!(
                        "batch holds {} messages; at most {} are accepted per request",
                        batch.len(),
                        limits.max_batch_events
                    ),
                ));
            }
            let shared_context = body.get("context").and_then(Value::as_object).cloned();
            let shared_integrations = body.get("integrations").and_then(Value::as_object).cloned();
            let shared_sent_at = body.get("sentAt").cloned();
            Ok(batch
                .into_iter()
                .map(|item| match item {
                    Value::Object(mut msg) => {
                        msg.remove("writeKey");
                        merge_under(&mut msg, "context", shared_context.as_ref());
                        merge_under(&mut msg, "integrations", shared_integrations.as_ref());
                        if let Some(sent_at) = &shared_sent_at
                            && !msg.contains_key("sentAt")
                        {
                            msg.insert("sentAt".into(), sent_at.clone());
                        }
                        Value::Object(msg)
                    }
                    other => other,
                })
                .collect())
        }
    }
}

/// Deep-merges `shared` under `msg[key]`; values already in the message win.
fn merge_under(msg: &mut Map<String, Value>, key: &str, shared: Option<&Map<String, Value>>) {
    let Some(shared) = shared else { return };
    match msg.get_mut(key) {
        Some(Value::Object(own)) => deep_fill(own, shared),
        Some(_) => {}
        None => {
            msg.insert(key.into(), Value::Object(shared.clone()));
        }
    }
}

fn deep_fill(own: &mut Map<String, Value>, shared: &Map<String, Value>) {
    for (k, v) in shared {
        match (own.get_mut(k), v) {
            (None, _) => {
                own.insert(k.clone(), v.clone());
            }
            (Some(Value::Object(a)), Value::Object(b)) => deep_fill(a, b),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_routes_match_long_ones() {
        for (short, long) in [
            ("t", "track"),
            ("i", "identify"),
            ("p", "page"),
            ("s", "screen"),
            ("g", "group"),
            ("a", "alias"),
            ("b", "batch"),
        ] {
            assert_eq!(Route::from_segment(short), Route::from_segment(long));
        }
        assert_eq!(Route::from_segment("import"), Some(Route::Batch));
        assert_eq!(Route::from_segment("tracks"), None);
    }

    #[test]
    fn batch_context_is_merged_under_each_message() {
        let body = json!({
            "writeKey": "k",
            "context": {"library": {"name": "analytics-python"}, "ip": "1.2.3.4"},
            "integrations": {"All": true},
            "sentAt": "2026-01-01T00:00:10Z",
            "batch": [
                {"type": "track", "event": "A", "context": {"ip": "5.6.7.8"}},
                {"type": "track", "event": "B", "sentAt": "2026-01-01T00:00:00Z"},
                "not an object"
            ]
        });
        let msgs = expand(Route::Batch, body, &Limits::default()).unwrap();
        assert_eq!(msgs[0]["context"]["ip"], "5.6.7.8");
        assert_eq!(msgs[0]["context"]["library"]["name"], "analytics-python");
        assert_eq!(msgs[0]["integrations"]["All"], true);
        assert_eq!(msgs[0]["sentAt"], "2026-01-01T00:00:10Z");
        assert_eq!(msgs[1]["sentAt"], "2026-01-01T00:00:00Z");
        assert_eq!(msgs[2], json!("not an object"));
        assert!(msgs[0].get("writeKey").is_none());
    }

    #[test]
    fn single_routes_set_the_type_and_batches_are_bounded() {
        let msgs = expand(
            Route::Single(MessageType::Page),
            json!({"type": "track"}),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(msgs[0]["type"], "page");
        let limits = Limits {
            max_batch_events: 2,
            ..Limits::default()
        };
        let err = expand(Route::Batch, json!({"batch": [{}, {}, {}]}), &limits).unwrap_err();
        assert_eq!(err.code, "batch_too_large");
        assert_eq!(
            expand(Route::Batch, json!({}), &limits).unwrap_err().code,
            "invalid_batch"
        );
        assert_eq!(
            expand(Route::Batch, json!([1]), &limits).unwrap_err().code,
            "invalid_body"
        );
    }
}
