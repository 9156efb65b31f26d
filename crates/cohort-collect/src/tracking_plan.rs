//! Per-source tracking plans: JSON Schemas that say which events a source may send and what
//! their properties (and identify traits) must look like.
//!
//! A plan is written by users as a [`TrackingPlanSpec`] (stored as JSON, sent over the admin
//! API) and compiled once into a [`TrackingPlan`], which checks each incoming message and returns
//! a [`Verdict`]. The mode decides the consequence of a violation: `allow` lets everything through
//! silently (useful while drafting a plan), `flag` lets the message through with its violations
//! attached, `block` rejects it.
//!
//! Schemas are compiled without any network or file access (the crate is built without
//! jsonschema's resolver features), so an external `$ref` is a compile error rather than a fetch.
//!
//! Patterns (`pattern`, `patternProperties`) run on the `regex` crate's linear-time engine
//! rather than jsonschema's default backtracking one. A plan runs against every message the
//! public write key lets in: on a backtracking engine a pattern such as `^(a|aa)+(?!c)$` spends
//! tens of milliseconds on a 30-character value, then gives up and reports a violation that
//! is not there. The price is that look-around and backreferences do not exist; a plan that uses them
//! is refused by [`TrackingPlan::compile`] (so it cannot be saved) with a [`PlanError`] naming
//! the pattern, never run on a slower engine instead.

use std::collections::BTreeMap;
use std::fmt;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::{PatternOptions, ValidationError, Validator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Enough violations to fix a broken source; more would only bloat flagged messages.
const MAX_VIOLATIONS: usize = 20;

/// Longest validator message kept in a violation; errors such as "is not of type" quote the
/// whole offending value, which may be an arbitrarily large object.
const MAX_MESSAGE_CHARS: usize = 300;

/// What to do with a message that breaks the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlanMode {
    /// Let it through and report nothing.
    #[default]
    Allow,
    /// Let it through with its violations attached.
    Flag,
    /// Reject it.
    Block,
}

/// What users write (stored as JSON, sent over the admin API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingPlanSpec {
    /// What to do with violations of a planned event's schema.
    pub mode: PlanMode,
    /// What to do with track events whose name is not in `events`.
    #[serde(default)]
    pub unplanned: PlanMode,
    /// Event name -> JSON Schema for `properties`.
    #[serde(default)]
    pub events: BTreeMap<String, Value>,
    /// JSON Schema for identify `traits`.
    #[serde(default)]
    pub identify: Option<Value>,
}

/// One way in which a message breaks the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// Where in the message, e.g. `properties.revenue` or `properties.products[0].price`.
    pub path: String,
    /// What is wrong, starting with the path so that it reads well on its own.
    pub message: String,
}

/// The outcome of checking one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Flag(Vec<Violation>),
    Block(Vec<Violation>),
}

/// A spec whose schemas could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("tracking plan schema for event {event:?} is invalid: {reason}")]
    InvalidEventSchema { event: String, reason: String },
    #[error("tracking plan schema for identify traits is invalid: {reason}")]
    InvalidIdentifySchema { reason: String },
}

/// A [`TrackingPlanSpec`] with its schemas compiled, ready to check messages.
#[derive(Clone)]
pub struct TrackingPlan {
    spec: TrackingPlanSpec,
    events: BTreeMap<String, Validator>,
    identify: Option<Validator>,
}

impl fmt::Debug for TrackingPlan {
    // Compiled validators print as huge internal trees; the spec's outline is what helps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackingPlan")
            .field("mode", &self.spec.mode)
            .field("unplanned", &self.spec.unplanned)
            .field("events", &self.events.keys().collect::<Vec<_>>())
            .field("identify", &self.identify.is_some())
            .finish()
    }
}

impl TrackingPlan {
    /// Compiles every schema in `spec`.
    ///
    /// # Errors
    ///
    /// [`PlanError`] naming the first event (or identify) whose schema is not a valid JSON
    /// Schema or refers to anything outside itself.
    pub fn compile(spec: TrackingPlanSpec) -> Result<Self, PlanError> {
        let mut events = BTreeMap::new();
        for (event, schema) in &spec.events {
            let validator =
                compile_schema(schema).map_err(|reason| PlanError::InvalidEventSchema {
                    event: event.clone(),
                    reason,
                })?;
            events.insert(event.clone(), validator);
        }
        let identify = spec
            .identify
            .as_ref()
            .map(|schema| {
                compile_schema(schema).map_err(|reason| PlanError::InvalidIdentifySchema { reason })
            })
            .transpose()?;
        Ok(Self {
            spec,
            events,
            identify,
        })
    }

    /// The spec this plan was compiled from.
    pub fn spec(&self) -> &TrackingPlanSpec {
        &self.spec
    }

    /// Checks one message (a JSON object with "type", "event", "properties", "traits").
    pub fn check(&self, message: &Map<String, Value>) -> Verdict {
        let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
        if kind.eq_ignore_ascii_case("track") {
            self.check_track(message)
        } else if kind.eq_ignore_ascii_case("identify") {
            match &self.identify {
                Some(validator) => verdict(self.spec.mode, || {
                    violations(validator, message.get("traits"), "traits")
                }),
                None => Verdict::Pass,
            }
        } else {
            Verdict::Pass
        }
    }

    fn check_track(&self, message: &Map<String, Value>) -> Verdict {
        let event = message.get("event").and_then(Value::as_str);
        match event.and_then(|name| self.events.get(name)) {
            Some(validator) => verdict(self.spec.mode, || {
                violations(validator, message.get("properties"), "properties")
            }),
            None => verdict(self.spec.unplanned, || {
                let message = match event {
                    Some(name) => format!("event {name:?} is not in the tracking plan"),
                    None => "track message has no event name, so it cannot be in the tracking plan"
                        .to_owned(),
                };
                vec![Violation {
                    path: "event".to_owned(),
                    message,
                }]
            }),
        }
    }
}

fn compile_schema(schema: &Value) -> Result<Validator, String> {
    jsonschema::options()
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
        .map_err(|error| {
            if let Some(pattern) = refused_pattern(&error) {
                return format!(
                    "pattern {:?} (at {}) is not a regular expression tracking plans can run: \
                     it is malformed, or uses look-around or backreferences, which their \
                     linear-time engine does not have",
                    truncate(pattern, MAX_MESSAGE_CHARS),
                    error.schema_path()
                );
            }
            let at = error.instance_path();
            if at.is_empty() {
                error.to_string()
            } else {
                format!("{error} (at {at})")
            }
        })
}

/// The pattern of a schema that failed to compile because the regex engine would not take it.
///
/// jsonschema reports that as the pattern failing the "regex" format; as a compile error it can
/// only come from `pattern` or `patternProperties` (formats of values are checked only when
/// validating).
fn refused_pattern<'e>(error: &'e ValidationError<'_>) -> Option<&'e str> {
    match (error.kind(), error.instance().as_ref()) {
        (ValidationErrorKind::Format { format }, Value::String(pattern)) if format == "regex" => {
            Some(pattern)
        }
        _ => None,
    }
}

/// `find` only runs when the mode can act on its result, so allow-mode plans cost nothing.
fn verdict(mode: PlanMode, find: impl FnOnce() -> Vec<Violation>) -> Verdict {
    if mode == PlanMode::Allow {
        return Verdict::Pass;
    }
    let found = find();
    if found.is_empty() {
        Verdict::Pass
    } else if mode == PlanMode::Block {
        Verdict::Block(found)
    } else {
        Verdict::Flag(found)
    }
}

fn violations(validator: &Validator, instance: Option<&Value>, root: &str) -> Vec<Violation> {
    // Segment treats missing and null properties/traits as empty.
    let empty = Value::Object(Map::new());
    let instance = match instance {
        None | Some(Value::Null) => &empty,
        Some(value) => value,
    };
    validator
        .iter_errors(instance)
        .take(MAX_VIOLATIONS)
        .map(|error| {
            let path = dotted_path(root, error.instance_path());
            let detail = truncate(&error.to_string(), MAX_MESSAGE_CHARS);
            Violation {
                message: format!("{path}: {detail}"),
                path,
            }
        })
        .collect()
}

fn dotted_path(root: &str, location: &Location) -> String {
    let mut path = root.to_owned();
    for segment in location.iter() {
        match segment {
            LocationSegment::Property(name) => {
                path.push('.');
                path.push_str(&name);
            }
            LocationSegment::Index(index) => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(limit).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(spec: Value) -> TrackingPlan {
        TrackingPlan::compile(serde_json::from_value(spec).unwrap()).unwrap()
    }

    fn message(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("test messages are objects"),
        }
    }

    fn order_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "revenue": {"type": "number"},
                "products": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"price": {"type": "number"}}}
                }
            },
            "required": ["revenue"]
        })
    }

    fn order_plan(mode: &str) -> TrackingPlan {
        plan(json!({"mode": mode, "events": {"Order Completed": order_schema()}}))
    }

    fn bad_order() -> Map<String, Value> {
        message(json!({
            "type": "track",
            "event": "Order Completed",
            "properties": {"revenue": "lots"}
        }))
    }

    #[test]
    fn tracking_plan_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TrackingPlan>();
    }

    #[test]
    fn invalid_event_schema_fails_to_compile_and_names_the_event() {
        let spec = serde_json::from_value(json!({
            "mode": "block",
            "events": {"Good": {"type": "object"}, "Signed Up": {"type": "nonsense"}}
        }))
        .unwrap();
        let error = TrackingPlan::compile(spec).unwrap_err();
        assert!(
            matches!(&error, PlanError::InvalidEventSchema { event, .. } if event == "Signed Up")
        );
        let text = error.to_string();
        assert!(text.contains("\"Signed Up\""), "{text}");
        assert!(text.contains("nonsense"), "{text}");
    }

    #[test]
    fn invalid_identify_schema_fails_to_compile() {
        let spec = serde_json::from_value(json!({"mode": "flag", "identify": {"minimum": "five"}}))
            .unwrap();
        let error = TrackingPlan::compile(spec).unwrap_err();
        assert!(
            matches!(error, PlanError::InvalidIdentifySchema { .. }),
            "{error}"
        );
    }

    #[test]
    fn external_schema_reference_is_a_compile_error_not_a_fetch() {
        let spec = serde_json::from_value(json!({
            "mode": "block",
            "events": {"Remote": {"$ref": "https://example.com/schema.json"}}
        }))
        .unwrap();
        let error = TrackingPlan::compile(spec).unwrap_err();
        assert!(matches!(&error, PlanError::InvalidEventSchema { event, .. } if event == "Remote"));
    }

    #[test]
    fn spec_rejects_unknown_fields_and_defaults_optional_ones() {
        assert!(
            serde_json::from_value::<TrackingPlanSpec>(json!({"mode": "flag", "evnts": {}}))
                .is_err()
        );
        let spec: TrackingPlanSpec = serde_json::from_value(json!({"mode": "block"})).unwrap();
        assert_eq!(spec.unplanned, PlanMode::Allow);
        assert!(spec.events.is_empty());
        assert_eq!(spec.identify, None);
    }

    #[test]
    fn spec_is_returned_unchanged() {
        let spec: TrackingPlanSpec = serde_json::from_value(
            json!({"mode": "flag", "unplanned": "block", "events": {"A": {}}}),
        )
        .unwrap();
        let compiled = TrackingPlan::compile(spec.clone()).unwrap();
        assert_eq!(compiled.spec(), &spec);
    }

    #[test]
    fn valid_planned_event_passes() {
        let plan = order_plan("block");
        let ok = message(json!({
            "type": "track",
            "event": "Order Completed",
            "properties": {"revenue": 12.5, "products": [{"price": 3}]}
        }));
        assert_eq!(plan.check(&ok), Verdict::Pass);
    }

    #[test]
    fn violation_in_flag_mode_is_flagged() {
        let Verdict::Flag(violations) = order_plan("flag").check(&bad_order()) else {
            panic!("expected a flag");
        };
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].path, "properties.revenue");
    }

    #[test]
    fn violation_in_block_mode_is_blocked() {
        let verdict = order_plan("block").check(&bad_order());
        assert!(
            matches!(verdict, Verdict::Block(ref v) if v.len() == 1),
            "{verdict:?}"
        );
    }

    #[test]
    fn violation_in_allow_mode_passes() {
        assert_eq!(order_plan("allow").check(&bad_order()), Verdict::Pass);
    }

    #[test]
    fn wrong_type_message_names_path_and_problem() {
        let Verdict::Block(violations) = order_plan("block").check(&bad_order()) else {
            panic!("expected a block");
        };
        let message = &violations[0].message;
        assert!(message.starts_with("properties.revenue: "), "{message}");
        assert!(message.contains("\"lots\""), "{message}");
        assert!(message.contains("number"), "{message}");
    }

    #[test]
    fn missing_required_property_is_reported_on_the_object() {
        let plan = order_plan("block");
        let no_properties = message(json!({"type": "track", "event": "Order Completed"}));
        let Verdict::Block(violations) = plan.check(&no_properties) else {
            panic!("expected a block");
        };
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].path, "properties");
        assert!(violations[0].message.contains("revenue"), "{violations:?}");
    }

    #[test]
    fn nested_violation_path_uses_array_index() {
        let plan = order_plan("flag");
        let nested = message(json!({
            "type": "track",
            "event": "Order Completed",
            "properties": {"revenue": 1, "products": [{"price": 1}, {"price": "x"}]}
        }));
        let Verdict::Flag(violations) = plan.check(&nested) else {
            panic!("expected a flag");
        };
        assert_eq!(violations[0].path, "properties.products[1].price");
    }

    #[test]
    fn violations_are_capped_at_twenty() {
        let properties: serde_json::Map<String, Value> =
            (0..50).map(|i| (format!("p{i}"), json!("text"))).collect();
        let plan = plan(json!({
            "mode": "flag",
            "events": {"Wide": {"additionalProperties": {"type": "number"}}}
        }));
        let wide = message(json!({"type": "track", "event": "Wide", "properties": properties}));
        let Verdict::Flag(violations) = plan.check(&wide) else {
            panic!("expected a flag");
        };
        assert_eq!(violations.len(), MAX_VIOLATIONS);
    }

    fn unplanned(mode: &str) -> Verdict {
        let plan = plan(json!({
            "mode": "block",
            "unplanned": mode,
            "events": {"Order Completed": order_schema()}
        }));
        plan.check(&message(
            json!({"type": "track", "event": "Mystery", "properties": {}}),
        ))
    }

    #[test]
    fn unplanned_event_in_allow_mode_passes() {
        assert_eq!(unplanned("allow"), Verdict::Pass);
    }

    #[test]
    fn unplanned_event_in_flag_mode_is_flagged_with_one_violation() {
        assert_eq!(
            unplanned("flag"),
            Verdict::Flag(vec![Violation {
                path: "event".to_owned(),
                message: "event \"Mystery\" is not in the tracking plan".to_owned(),
            }])
        );
    }

    #[test]
    fn unplanned_event_in_block_mode_is_blocked() {
        assert!(matches!(unplanned("block"), Verdict::Block(ref v) if v.len() == 1));
    }

    #[test]
    fn unplanned_mode_defaults_to_allow() {
        let plan = plan(json!({"mode": "block", "events": {}}));
        let event = message(json!({"type": "track", "event": "Anything"}));
        assert_eq!(plan.check(&event), Verdict::Pass);
    }

    #[test]
    fn identify_traits_are_checked_against_the_identify_schema() {
        let plan = plan(json!({
            "mode": "block",
            "identify": {
                "type": "object",
                "properties": {"email": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["email"]
            }
        }));
        let good = message(json!({"type": "identify", "traits": {"email": "a@b.c", "age": 3}}));
        assert_eq!(plan.check(&good), Verdict::Pass);

        let bad = message(json!({"type": "identify", "traits": {"age": "old"}}));
        let Verdict::Block(violations) = plan.check(&bad) else {
            panic!("expected a block");
        };
        let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"traits"), "{violations:?}");
        assert!(paths.contains(&"traits.age"), "{violations:?}");
    }

    #[test]
    fn identify_without_identify_schema_passes() {
        let plan = order_plan("block");
        let identify = message(json!({"type": "identify", "traits": {"anything": true}}));
        assert_eq!(plan.check(&identify), Verdict::Pass);
    }

    #[test]
    fn other_message_types_pass() {
        let plan = plan(json!({
            "mode": "block",
            "unplanned": "block",
            "identify": {"required": ["email"]}
        }));
        for kind in ["page", "screen", "group", "alias"] {
            let other = message(json!({"type": kind, "properties": {}, "traits": {}}));
            assert_eq!(plan.check(&other), Verdict::Pass, "type {kind}");
        }
    }

    /// Patterns with nested repetition: against `aaa…ab` a backtracking engine tries every way
    /// of splitting the a's before failing (2^29 for a 30-character value).
    fn pathological_plan() -> TrackingPlan {
        plan(json!({"mode": "flag", "events": {"E": {
            "properties": {"code": {"type": "string", "pattern": "^(a|aa)+$"}},
            "patternProperties": {"^(b+)+$": {"type": "number"}}
        }}}))
    }

    // fancy-regex hands look-around-free patterns such as these to the `regex` crate too, so
    // this guards the answers and the speed of `pattern` and `patternProperties` on hostile
    // input; the patterns that really backtracked are refused by the test after this one.
    #[test]
    fn pathological_patterns_are_matched_in_linear_time() {
        let plan = pathological_plan();
        let adversarial = format!("{}b", "a".repeat(29));
        let key = format!("{}c", "b".repeat(29));
        let event = message(json!({"type": "track", "event": "E",
            "properties": {"code": adversarial, key: "not a number, but not matched either"}}));
        // A thousand messages: milliseconds on a linear engine; minutes on a backtracking one,
        // or, with a step limit, an error instead of the answer.
        for _ in 0..1000 {
            let Verdict::Flag(violations) = plan.check(&event) else {
                panic!("expected a flag");
            };
            assert_eq!(violations.len(), 1, "{violations:?}");
            assert_eq!(violations[0].path, "properties.code");
            assert!(
                violations[0]
                    .message
                    .contains("does not match \"^(a|aa)+$\""),
                "{violations:?}"
            );
        }
        let fine = message(json!({"type": "track", "event": "E",
            "properties": {"code": "a".repeat(30), "b".repeat(30): 1}}));
        assert_eq!(plan.check(&fine), Verdict::Pass);
        let wrong = message(json!({"type": "track", "event": "E",
            "properties": {"b".repeat(30): "one"}}));
        let Verdict::Flag(violations) = plan.check(&wrong) else {
            panic!("expected a flag");
        };
        assert_eq!(violations[0].path, format!("properties.{}", "b".repeat(30)));
    }

    #[test]
    fn patterns_the_linear_engine_cannot_run_are_refused_when_compiled() {
        for (schema, pattern) in [
            // Backtracks past fancy-regex's step limit on "aaa…ab": tens of ms, then an error.
            (
                json!({"properties": {"code": {"pattern": "^(a|aa)+(?!c)$"}}}),
                "^(a|aa)+(?!c)$",
            ),
            (
                json!({"properties": {"code": {"pattern": "^(?=a)\\w+$"}}}),
                "^(?=a)\\w+$",
            ),
            (
                json!({"properties": {"code": {"pattern": "(?<!x)y"}}}),
                "(?<!x)y",
            ),
            (
                json!({"properties": {"code": {"pattern": "^(a)\\1$"}}}),
                "^(a)\\1$",
            ),
            (
                json!({"patternProperties": {"^(?!internal_)": {}}}),
                "^(?!internal_)",
            ),
        ] {
            let spec =
                serde_json::from_value(json!({"mode": "block", "events": {"E": schema}})).unwrap();
            let error = TrackingPlan::compile(spec).unwrap_err();
            assert!(
                matches!(&error, PlanError::InvalidEventSchema { event, .. } if event == "E"),
                "{error}"
            );
            let text = error.to_string();
            assert!(text.contains(&format!("{pattern:?}")), "{text}");
            assert!(text.contains("look-around"), "{text}");
        }
        let spec = serde_json::from_value(
            json!({"mode": "flag", "identify": {"properties": {"email": {"pattern": "(?<=@)x"}}}}),
        )
        .unwrap();
        let error = TrackingPlan::compile(spec).unwrap_err();
        assert!(
            matches!(error, PlanError::InvalidIdentifySchema { .. }),
            "{error}"
        );
    }

    #[test]
    fn huge_offending_values_are_truncated_in_messages() {
        let plan = plan(json!({"mode": "flag", "events": {"E": {"type": "array"}}}));
        let big: serde_json::Map<String, Value> =
            (0..500).map(|i| (format!("key{i}"), json!(i))).collect();
        let event = message(json!({"type": "track", "event": "E", "properties": big}));
        let Verdict::Flag(violations) = plan.check(&event) else {
            panic!("expected a flag");
        };
        assert!(violations[0].message.chars().count() < MAX_MESSAGE_CHARS + 50);
    }
}
