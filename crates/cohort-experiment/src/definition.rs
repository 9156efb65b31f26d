//! What a team defines: flags, experiments and metrics, how they are checked before they are
//! saved, and how they become the features payload that GrowthBook's SDKs and Cohort's own
//! evaluation read.
//!
//! A [`Flag`] has a typed default value and rules tried in order: a forced value, a rollout to
//! a share of units, or an [`Experiment`] that splits units between variations. Rules and
//! experiments are targeted by attributes (GrowthBook's MongoDB-style conditions) and by
//! Cohort segments. Definitions are checked as a whole against what else is defined
//! ([`Catalogue`]) and refused with the field that is wrong ([`Invalid`]), so nothing
//! inconsistent is ever saved.
//!
//! [`features_payload`] turns the definitions into GrowthBook's payload: drafts are left out,
//! a running experiment becomes an experiment rule, a stopped one serves the variation it was
//! decided for (or nothing), and a segment becomes a saved group of its members' identifiers.
//!
//! ```
//! use cohort_experiment::definition::{Catalogue, Flag};
//! use serde_json::json;
//! let flag: Flag = serde_json::from_value(json!({
//!     "key": "new-checkout", "value_type": "boolean", "default_value": false,
//!     "rules": [{"type": "rollout", "value": true, "coverage": 0.2}]
//! })).unwrap();
//! Catalogue::default().check_flag(&flag).unwrap();
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// A definition that cannot be saved: the field (a path such as `rules[1].coverage`) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

/// Reads a definition from JSON, refusing wrong types and unknown fields (a misspelt
/// `weigths` would otherwise be dropped in silence) with the path of the field.
pub fn parse<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        invalid(
            if path == "." {
                "body".to_string()
            } else {
                path
            },
            e.into_inner().to_string(),
        )
    })
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The type of a flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Boolean,
    String,
    Number,
    Json,
}

impl ValueType {
    fn admits(self, value: &Value) -> bool {
        match self {
            ValueType::Boolean => value.is_boolean(),
            ValueType::String => value.is_string(),
            ValueType::Number => value.is_number(),
            ValueType::Json => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ValueType::Boolean => "a boolean",
            ValueType::String => "a string",
            ValueType::Number => "a number",
            ValueType::Json => "JSON",
        }
    }
}

/// A feature flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    pub key: String,
    #[serde(default)]
    pub description: String,
    pub value_type: ValueType,
    pub default_value: Value,
    /// Tried in order; the first that applies gives the value.
    #[serde(default)]
    pub rules: Vec<FlagRule>,
    /// Other flags that must have a value for this one to be evaluated at all; when one does
    /// not, the flag is off (`null`).
    #[serde(default)]
    pub prerequisites: Vec<Prerequisite>,
}

/// One rule of a flag. Its `type` says what it does for the units it applies to:
/// - `force`: everybody targeted gets `value`;
/// - `rollout`: a share (`coverage`) of the targeted units, chosen by hashing
///   `hash_attribute` (default `id`), gets `value`;
/// - `experiment`: the experiment named by `experiment` decides, for the units it includes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagRule {
    /// Named in evaluation results; `rule-{n}` (from 1) when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: RuleKind,
    /// A condition on the unit's attributes, in GrowthBook's MongoDB-style language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
    /// A Cohort segment (or tag) by name: only its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Flags that must have a value for this rule to apply; otherwise the next rule is tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_attribute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Force,
    Rollout,
    Experiment,
}

/// A checked rule's action, as its kind and fields say.
enum Action<'a> {
    Force(&'a Value),
    Rollout(&'a Value, f64, &'a str),
    Experiment(&'a str),
}

impl FlagRule {
    /// What the rule does; `None` when a field its kind needs is missing (refused when saved).
    fn action(&self) -> Option<Action<'_>> {
        Some(match self.kind {
            RuleKind::Force => Action::Force(self.value.as_ref()?),
            RuleKind::Rollout => Action::Rollout(
                self.value.as_ref()?,
                self.coverage?,
                self.hash_attribute.as_deref().unwrap_or("id"),
            ),
            RuleKind::Experiment => Action::Experiment(self.experiment.as_deref()?),
        })
    }

    fn serves_experiment(&self, key: &str) -> bool {
        self.kind == RuleKind::Experiment && self.experiment.as_deref() == Some(key)
    }

    /// The fields this rule's kind needs and those it must not have.
    fn check_fields(&self, field: &str) -> Result<(), Invalid> {
        type Fields<'a> = &'a [(&'a str, bool)];
        let (needed, unused): (Fields, Fields) = match self.kind {
            RuleKind::Force => (
                &[("value", self.value.is_some())],
                &[
                    ("coverage", self.coverage.is_some()),
                    ("hash_attribute", self.hash_attribute.is_some()),
                    ("experiment", self.experiment.is_some()),
                ],
            ),
            RuleKind::Rollout => (
                &[
                    ("value", self.value.is_some()),
                    ("coverage", self.coverage.is_some()),
                ],
                &[("experiment", self.experiment.is_some())],
            ),
            RuleKind::Experiment => (
                &[("experiment", self.experiment.is_some())],
                &[
                    ("value", self.value.is_some()),
                    ("coverage", self.coverage.is_some()),
                    ("hash_attribute", self.hash_attribute.is_some()),
                ],
            ),
        };
        let kind = serde_json::to_value(self.kind).unwrap_or_default();
        let kind = kind.as_str().unwrap_or_default();
        if let Some((name, _)) = needed.iter().find(|(_, there)| !there) {
            return Err(invalid(
                join(field, name),
                format!("a {kind} rule needs {name}"),
            ));
        }
        if let Some((name, _)) = unused.iter().find(|(_, there)| *there) {
            return Err(invalid(
                join(field, name),
                format!("a {kind} rule has no {name}"),
            ));
        }
        Ok(())
    }
}

/// A flag that must have a value: by default `true`, or `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    pub flag: String,
    #[serde(default = "true_value")]
    pub value: Value,
}

fn true_value() -> Value {
    Value::Bool(true)
}

fn default_hash_attribute() -> String {
    "id".to_string()
}

fn default_hash_version() -> u32 {
    2
}

fn full_coverage() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// An experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub key: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hypothesis: String,
    pub variations: Vec<Variation>,
    /// One per variation, summing to 1; equal when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    /// The share of targeted units included at all.
    #[serde(default = "full_coverage")]
    pub coverage: f64,
    /// The attribute units are split by: an identifier type (`user_id`, `anonymous_id`, …),
    /// `id`, or a trait.
    #[serde(default = "default_hash_attribute")]
    pub hash_attribute: String,
    /// Used, and assignments kept under it, when a unit has no `hash_attribute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_attribute: Option<String>,
    #[serde(default = "default_hash_version")]
    pub hash_version: u32,
    /// The hash seed; the key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// A condition on the unit's attributes, in GrowthBook's MongoDB-style language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
    /// A Cohort segment (or tag) by name: only its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Experiments in one namespace with disjoint ranges never share a unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
    /// Whether the global holdout is kept out of this experiment.
    #[serde(default = "yes")]
    pub holdout: bool,
    /// Metric keys: the goals.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// Metric keys that must not get worse.
    #[serde(default)]
    pub guardrails: Vec<String>,
    #[serde(default)]
    pub status: Status,
    /// Raised when weights change so that sticky assignments are re-made.
    #[serde(default)]
    pub bucket_version: u32,
    /// Kept by the engine: one per start or change of allocation.
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// Set when the experiment is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// One arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variation {
    pub key: String,
    #[serde(default)]
    pub name: String,
    /// What a flag serves to units in this arm (its index when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A namespace and the range of it an experiment takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub id: String,
    pub range: (f64, f64),
}

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Draft,
    Running,
    Stopped,
}

/// A period with one allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    pub coverage: f64,
    pub weights: Vec<f64>,
    #[serde(default)]
    pub reason: String,
}

/// Why an experiment was stopped, and which variation (if any) everybody gets from then on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<String>,
    pub reason: String,
}

impl Experiment {
    /// The weights in force: the given ones or equal shares.
    pub fn effective_weights(&self) -> Vec<f64> {
        self.weights
            .clone()
            .unwrap_or_else(|| crate::assign::equal_weights(self.variations.len()))
    }

    /// The seed units are hashed with.
    pub fn seed(&self) -> &str {
        self.seed.as_deref().unwrap_or(&self.key)
    }

    /// The value variation `index` serves.
    pub fn variation_value(&self, index: usize) -> Value {
        self.variations
            .get(index)
            .and_then(|v| v.value.clone())
            .unwrap_or_else(|| json!(index))
    }

    /// When the current (or last) run started, if it ever did.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.phases.first().map(|p| p.started_at)
    }

    /// When it stopped, if it did.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.phases.last().and_then(|p| p.ended_at)
    }
}

/// A metric: what is measured per exposed unit, from its events after exposure. Its `type`:
/// - `conversion`: 1 when the unit did `event` at least once, else 0;
/// - `count`: how many times the unit did `event`;
/// - `sum`: the sum of `property` over the unit's `event`s (revenue per unit, say);
/// - `ratio`: the metric `numerator` over the metric `denominator`, as totals per variation
///   (revenue per order, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub key: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MetricKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<String>,
    /// Events count only this many hours after a unit's first exposure; all later events when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<f64>,
    /// A unit's value is capped at this (winsorisation), so that a few outliers do not decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<f64>,
    /// Which way is better.
    #[serde(default)]
    pub direction: Direction,
}

/// How a metric is computed per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Conversion,
    Count,
    Sum,
    Ratio,
}

/// Which way a metric should move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Increase,
    Decrease,
}

/// A share of all units kept out of every experiment that honours it, to measure the
/// combined effect of everything shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holdout {
    pub fraction: f64,
    #[serde(default = "default_hash_attribute")]
    pub hash_attribute: String,
}

/// The seed the global holdout hashes with.
pub const HOLDOUT_SEED: &str = "cohort-global-holdout";

/// Everything else that is defined, against which one definition is checked.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub flags: BTreeMap<String, Flag>,
    pub experiments: BTreeMap<String, Experiment>,
    pub metrics: BTreeMap<String, Metric>,
    pub segments: BTreeSet<String>,
}

fn check_key(field: &str, key: &str) -> Result<(), Invalid> {
    let ok = !key.is_empty()
        && key.len() <= 100
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{key:?} is not a key: use 1 to 100 letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn check_share(field: &str, share: f64) -> Result<(), Invalid> {
    if (0.0..=1.0).contains(&share) {
        Ok(())
    } else {
        Err(invalid(field, format!("{share} is not between 0 and 1")))
    }
}

fn check_condition(field: &str, condition: &Value) -> Result<(), Invalid> {
    if !condition.is_object() {
        return Err(invalid(field, "a condition is a JSON object"));
    }
    crate::condition::check_condition(condition).map_err(|message| invalid(field, message))
}

fn check_attribute(field: &str, attribute: &str) -> Result<(), Invalid> {
    if attribute.trim().is_empty() {
        Err(invalid(field, "an attribute name cannot be empty"))
    } else {
        Ok(())
    }
}

impl Catalogue {
    fn check_targeting(
        &self,
        field: &str,
        condition: Option<&Value>,
        segment: Option<&str>,
    ) -> Result<(), Invalid> {
        if let Some(condition) = condition {
            check_condition(&join(field, "condition"), condition)?;
        }
        if let Some(segment) = segment
            && !self.segments.contains(segment)
        {
            return Err(invalid(
                join(field, "segment"),
                format!("there is no segment {segment:?}"),
            ));
        }
        Ok(())
    }

    fn check_prerequisites(
        &self,
        field: &str,
        own_key: &str,
        prerequisites: &[Prerequisite],
    ) -> Result<(), Invalid> {
        for (i, p) in prerequisites.iter().enumerate() {
            let field = format!("{}[{i}].flag", join(field, "prerequisites"));
            if p.flag == own_key {
                return Err(invalid(field, "a flag cannot require itself"));
            }
            if !self.flags.contains_key(&p.flag) {
                return Err(invalid(field, format!("there is no flag {:?}", p.flag)));
            }
        }
        Ok(())
    }

    /// Checks a flag as it would be saved, beside everything else defined.
    pub fn check_flag(&self, flag: &Flag) -> Result<(), Invalid> {
        check_key("key", &flag.key)?;
        if !flag.value_type.admits(&flag.default_value) {
            return Err(invalid(
                "default_value",
                format!("must be {}", flag.value_type.name()),
            ));
        }
        self.check_prerequisites("", &flag.key, &flag.prerequisites)?;
        let mut ids = BTreeSet::new();
        for (i, rule) in flag.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            if let Some(id) = &rule.id {
                check_key(&join(&field, "id"), id)?;
            }
            if !ids.insert(rule_id(rule, i)) {
                return Err(invalid(
                    join(&field, "id"),
                    format!("two rules are called {:?}", rule_id(rule, i)),
                ));
            }
            self.check_targeting(&field, rule.condition.as_ref(), rule.segment.as_deref())?;
            self.check_prerequisites(&field, &flag.key, &rule.prerequisites)?;
            rule.check_fields(&field)?;
            match rule.action() {
                None => unreachable!("check_fields found every field the kind needs"),
                Some(Action::Force(value)) => self.check_value(&field, "value", flag, value)?,
                Some(Action::Rollout(value, coverage, hash_attribute)) => {
                    self.check_value(&field, "value", flag, value)?;
                    check_share(&join(&field, "coverage"), coverage)?;
                    check_attribute(&join(&field, "hash_attribute"), hash_attribute)?;
                }
                Some(Action::Experiment(experiment)) => {
                    let Some(found) = self.experiments.get(experiment) else {
                        return Err(invalid(
                            join(&field, "experiment"),
                            format!("there is no experiment {experiment:?}"),
                        ));
                    };
                    for (v, variation) in found.variations.iter().enumerate() {
                        let value = found.variation_value(v);
                        if !flag.value_type.admits(&value) {
                            return Err(invalid(
                                join(&field, "experiment"),
                                format!(
                                    "variation {:?} of experiment {experiment:?} serves {value}, \
                                     which is not {}",
                                    variation.key,
                                    flag.value_type.name()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        self.check_no_cycle(flag)
    }

    fn check_value(
        &self,
        field: &str,
        name: &str,
        flag: &Flag,
        value: &Value,
    ) -> Result<(), Invalid> {
        if flag.value_type.admits(value) {
            Ok(())
        } else {
            Err(invalid(
                join(field, name),
                format!("must be {}", flag.value_type.name()),
            ))
        }
    }

    /// A flag that (through its prerequisites, transitively) requires itself can never be
    /// evaluated.
    fn check_no_cycle(&self, flag: &Flag) -> Result<(), Invalid> {
        let requires = |f: &Flag| -> Vec<String> {
            f.prerequisites
                .iter()
                .chain(f.rules.iter().flat_map(|r| &r.prerequisites))
                .map(|p| p.flag.clone())
                .collect()
        };
        let mut stack: Vec<(String, Vec<String>)> = requires(flag)
            .into_iter()
            .map(|k| (k.clone(), vec![flag.key.clone(), k]))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some((key, path)) = stack.pop() {
            if key == flag.key {
                return Err(invalid(
                    "prerequisites",
                    format!("a prerequisite cycle: {}", path.join(" → ")),
                ));
            }
            if !seen.insert(key.clone()) {
                continue;
            }
            if let Some(next) = self.flags.get(&key) {
                for k in requires(next) {
                    let mut p = path.clone();
                    p.push(k.clone());
                    stack.push((k, p));
                }
            }
        }
        Ok(())
    }

    /// Checks an experiment as it would be saved.
    pub fn check_experiment(&self, experiment: &Experiment) -> Result<(), Invalid> {
        check_key("key", &experiment.key)?;
        if experiment.variations.len() < 2 {
            return Err(invalid(
                "variations",
                "an experiment needs at least two variations",
            ));
        }
        let mut keys = BTreeSet::new();
        for (i, v) in experiment.variations.iter().enumerate() {
            check_key(&format!("variations[{i}].key"), &v.key)?;
            if !keys.insert(v.key.as_str()) {
                return Err(invalid(
                    format!("variations[{i}].key"),
                    format!("two variations are called {:?}", v.key),
                ));
            }
        }
        if let Some(weights) = &experiment.weights {
            if weights.len() != experiment.variations.len() {
                return Err(invalid(
                    "weights",
                    format!(
                        "{} weights for {} variations",
                        weights.len(),
                        experiment.variations.len()
                    ),
                ));
            }
            for (i, w) in weights.iter().enumerate() {
                check_share(&format!("weights[{i}]"), *w)?;
            }
            let sum: f64 = weights.iter().sum();
            if (sum - 1.0).abs() > 1e-9 {
                return Err(invalid("weights", format!("they sum to {sum}, not 1")));
            }
        }
        check_share("coverage", experiment.coverage)?;
        check_attribute("hash_attribute", &experiment.hash_attribute)?;
        if let Some(fallback) = &experiment.fallback_attribute {
            check_attribute("fallback_attribute", fallback)?;
        }
        if !matches!(experiment.hash_version, 1 | 2) {
            return Err(invalid(
                "hash_version",
                format!("{} is not 1 or 2", experiment.hash_version),
            ));
        }
        self.check_targeting(
            "",
            experiment.condition.as_ref(),
            experiment.segment.as_deref(),
        )?;
        if let Some(ns) = &experiment.namespace {
            check_key("namespace.id", &ns.id)?;
            let (lo, hi) = ns.range;
            check_share("namespace.range", lo)?;
            check_share("namespace.range", hi)?;
            if lo >= hi {
                return Err(invalid(
                    "namespace.range",
                    format!("[{lo}, {hi}] is empty: the start must be below the end"),
                ));
            }
        }
        for (field, keys) in [
            ("metrics", &experiment.metrics),
            ("guardrails", &experiment.guardrails),
        ] {
            for (i, key) in keys.iter().enumerate() {
                if !self.metrics.contains_key(key) {
                    return Err(invalid(
                        format!("{field}[{i}]"),
                        format!("there is no metric {key:?}"),
                    ));
                }
            }
        }
        if let Some(decision) = &experiment.decision
            && let Some(chosen) = &decision.variation
            && !keys.contains(chosen.as_str())
        {
            return Err(invalid(
                "decision.variation",
                format!("there is no variation {chosen:?}"),
            ));
        }
        // A flag serving this experiment must still be able to serve every variation.
        for flag in self.flags.values() {
            for rule in &flag.rules {
                if rule.serves_experiment(&experiment.key) {
                    for v in 0..experiment.variations.len() {
                        let value = experiment.variation_value(v);
                        if !flag.value_type.admits(&value) {
                            return Err(invalid(
                                format!("variations[{v}].value"),
                                format!(
                                    "flag {:?} serves this experiment and takes {}",
                                    flag.key,
                                    flag.value_type.name()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a metric as it would be saved.
    pub fn check_metric(&self, metric: &Metric) -> Result<(), Invalid> {
        check_key("key", &metric.key)?;
        let text = |name: &str, v: &Option<String>| -> Result<(), Invalid> {
            match v.as_deref().map(str::trim) {
                Some(t) if !t.is_empty() => Ok(()),
                _ => Err(invalid(
                    name,
                    format!("a {:?} metric needs {name}", metric.kind),
                )),
            }
        };
        let absent = |name: &str, there: bool| -> Result<(), Invalid> {
            if there {
                Err(invalid(
                    name,
                    format!("a {:?} metric has no {name}", metric.kind),
                ))
            } else {
                Ok(())
            }
        };
        match metric.kind {
            MetricKind::Conversion | MetricKind::Count | MetricKind::Sum => {
                text("event", &metric.event)?;
                if metric.kind == MetricKind::Sum {
                    text("property", &metric.property)?;
                } else {
                    absent("property", metric.property.is_some())?;
                }
                absent("numerator", metric.numerator.is_some())?;
                absent("denominator", metric.denominator.is_some())?;
            }
            MetricKind::Ratio => {
                absent("event", metric.event.is_some())?;
                absent("property", metric.property.is_some())?;
                for (field, key) in [
                    ("numerator", &metric.numerator),
                    ("denominator", &metric.denominator),
                ] {
                    text(field, key)?;
                    let key = key.as_deref().unwrap_or_default();
                    match self.metrics.get(key) {
                        None => {
                            return Err(invalid(field, format!("there is no metric {key:?}")));
                        }
                        Some(m) if m.kind == MetricKind::Ratio => {
                            return Err(invalid(
                                field,
                                format!(
                                    "{key:?} is itself a ratio; use a conversion, count or sum"
                                ),
                            ));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if let Some(hours) = metric.window_hours
            && !(hours.is_finite() && hours > 0.0)
        {
            return Err(invalid(
                "window_hours",
                "must be a positive number of hours",
            ));
        }
        if let Some(cap) = metric.cap
            && !(cap.is_finite() && cap > 0.0)
        {
            return Err(invalid("cap", "must be a positive number"));
        }
        Ok(())
    }

    /// Which flags and experiments refer to a definition, so that it is not deleted from
    /// under them.
    pub fn users_of(&self, kind: &str, key: &str) -> Vec<String> {
        let mut users = Vec::new();
        for flag in self.flags.values() {
            let refers = match kind {
                "flag" => flag
                    .prerequisites
                    .iter()
                    .chain(flag.rules.iter().flat_map(|r| &r.prerequisites))
                    .any(|p| p.flag == key),
                "experiment" => flag.rules.iter().any(|r| r.serves_experiment(key)),
                _ => false,
            };
            if refers {
                users.push(format!("flag {}", flag.key));
            }
        }
        if kind == "metric" {
            for e in self.experiments.values() {
                if e.metrics.iter().chain(&e.guardrails).any(|m| m == key) {
                    users.push(format!("experiment {}", e.key));
                }
            }
            for m in self.metrics.values() {
                if m.numerator.as_deref() == Some(key) || m.denominator.as_deref() == Some(key) {
                    users.push(format!("metric {}", m.key));
                }
            }
        }
        users
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

fn rule_id(rule: &FlagRule, index: usize) -> String {
    rule.id
        .clone()
        .unwrap_or_else(|| format!("rule-{}", index + 1))
}

/// The saved group a segment becomes for units identified by `attribute`.
pub fn segment_group(segment: &str, attribute: &str) -> String {
    format!("segment:{segment}:{attribute}")
}

/// Who a rule serves: the targetings that must all hold (the rule's, and for an experiment
/// rule the experiment's), and the attribute that identifies units, which a segment's saved
/// group lists.
struct Targeting<'a> {
    condition: Option<&'a Value>,
    segment: Option<&'a str>,
}

fn targeting_of<'a>(
    rule: &'a FlagRule,
    experiments: &'a BTreeMap<String, Experiment>,
) -> (Vec<Targeting<'a>>, &'a str) {
    let own = Targeting {
        condition: rule.condition.as_ref(),
        segment: rule.segment.as_deref(),
    };
    match rule.action() {
        Some(Action::Rollout(_, _, attribute)) => (vec![own], attribute),
        Some(Action::Experiment(key)) => match experiments.get(key) {
            Some(e) => (
                vec![
                    own,
                    Targeting {
                        condition: e.condition.as_ref(),
                        segment: e.segment.as_deref(),
                    },
                ],
                e.hash_attribute.as_str(),
            ),
            None => (vec![own], "id"),
        },
        _ => (vec![own], "id"),
    }
}

/// The segments the payload needs as saved groups, with the attribute whose values identify
/// their members: `(segment, attribute)`.
pub fn segment_groups_needed(
    flags: &[Flag],
    experiments: &BTreeMap<String, Experiment>,
) -> BTreeSet<(String, String)> {
    let mut needed = BTreeSet::new();
    for rule in flags.iter().flat_map(|f| &f.rules) {
        let (targetings, attribute) = targeting_of(rule, experiments);
        for segment in targetings.iter().filter_map(|t| t.segment) {
            needed.insert((segment.to_string(), attribute.to_string()));
        }
    }
    needed
}

/// What the payload is built from.
pub struct PayloadInput<'a> {
    pub flags: &'a [Flag],
    pub experiments: &'a BTreeMap<String, Experiment>,
    pub holdout: Option<&'a Holdout>,
    /// The members of each needed segment group ([`segment_groups_needed`]), by
    /// [`segment_group`] name: the values of the group's attribute.
    pub segment_members: &'a BTreeMap<String, Vec<Value>>,
}

/// GrowthBook's features payload: `{"features": {...}, "savedGroups": {...}}`, which its SDKs
/// evaluate and Cohort's evaluation reads as a [`crate::evaluate::Context`]'s features.
pub fn features_payload(input: &PayloadInput<'_>) -> Value {
    let mut features = Map::new();
    for flag in input.flags {
        features.insert(flag.key.clone(), feature_json(flag, input));
    }
    let groups: Map<String, Value> = input
        .segment_members
        .iter()
        .map(|(name, members)| (name.clone(), Value::Array(members.clone())))
        .collect();
    json!({"features": features, "savedGroups": groups})
}

fn feature_json(flag: &Flag, input: &PayloadInput<'_>) -> Value {
    let mut rules = Vec::new();
    if !flag.prerequisites.is_empty() {
        // A rule with only gates stops the whole flag when a prerequisite is not met, and
        // otherwise lets evaluation go on to the next rule, as GrowthBook's servers emit it.
        rules.push(json!({
            "id": "prerequisites",
            "parentConditions": parent_conditions(&flag.prerequisites, true),
        }));
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        let id = rule_id(rule, i);
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        if !rule.prerequisites.is_empty() {
            out.insert(
                "parentConditions".into(),
                parent_conditions(&rule.prerequisites, false),
            );
        }
        let (targetings, attribute) = targeting_of(rule, input.experiments);
        put_condition(&mut out, &targetings, attribute);
        match rule.action() {
            // Refused when saved; a rule that lost a field serves nothing rather than guess.
            None => continue,
            Some(Action::Force(value)) => {
                out.insert("force".into(), value.clone());
            }
            Some(Action::Rollout(value, coverage, hash_attribute)) => {
                out.insert("force".into(), value.clone());
                out.insert("coverage".into(), json!(coverage));
                out.insert("hashAttribute".into(), json!(hash_attribute));
            }
            Some(Action::Experiment(experiment)) => {
                let Some(e) = input.experiments.get(experiment) else {
                    continue;
                };
                match e.status {
                    Status::Draft => continue,
                    Status::Stopped => {
                        let Some(chosen) = e
                            .decision
                            .as_ref()
                            .and_then(|d| d.variation.as_ref())
                            .and_then(|k| e.variations.iter().position(|v| v.key == *k))
                        else {
                            continue;
                        };
                        out.insert("force".into(), e.variation_value(chosen));
                    }
                    Status::Running => experiment_rule(&mut out, e, input.holdout),
                }
            }
        }
        rules.push(Value::Object(out));
    }
    json!({"defaultValue": flag.default_value, "rules": rules})
}

fn parent_conditions(prerequisites: &[Prerequisite], gate: bool) -> Value {
    Value::Array(
        prerequisites
            .iter()
            .map(|p| {
                let mut c = json!({"id": p.flag, "condition": {"value": p.value}});
                if gate {
                    c["gate"] = json!(true);
                }
                c
            })
            .collect(),
    )
}

/// The rule's condition: every targeting's attribute condition and segment, all required.
fn put_condition(out: &mut Map<String, Value>, targetings: &[Targeting<'_>], attribute: &str) {
    let mut parts: Vec<Value> = Vec::new();
    for t in targetings {
        if let Some(c) = t.condition {
            parts.push(c.clone());
        }
        if let Some(segment) = t.segment {
            parts.push(json!({attribute: {"$inGroup": segment_group(segment, attribute)}}));
        }
    }
    match parts.len() {
        0 => {}
        1 => {
            out.insert("condition".into(), parts.remove(0));
        }
        _ => {
            out.insert("condition".into(), json!({"$and": parts}));
        }
    }
}

/// The experiment as GrowthBook's SDKs run it, the same rule the features payload serves: what
/// server-side callers (a journey's experiment split) assign with
/// [`Context::assign`](crate::evaluate::Context::assign), bit for bit as the SDKs would.
pub fn sdk_experiment(
    e: &Experiment,
    holdout: Option<&Holdout>,
) -> Result<crate::evaluate::Experiment, serde_json::Error> {
    let mut rule = Map::new();
    experiment_rule(&mut rule, e, holdout);
    serde_json::from_value(Value::Object(rule))
}

fn experiment_rule(out: &mut Map<String, Value>, e: &Experiment, holdout: Option<&Holdout>) {
    out.insert("key".into(), json!(e.key));
    out.insert("name".into(), json!(e.name));
    out.insert(
        "variations".into(),
        Value::Array(
            (0..e.variations.len())
                .map(|i| e.variation_value(i))
                .collect(),
        ),
    );
    out.insert("weights".into(), json!(e.effective_weights()));
    out.insert("coverage".into(), json!(e.coverage));
    out.insert("hashAttribute".into(), json!(e.hash_attribute));
    out.insert("hashVersion".into(), json!(e.hash_version));
    out.insert("seed".into(), json!(e.seed()));
    if let Some(fallback) = &e.fallback_attribute {
        out.insert("fallbackAttribute".into(), json!(fallback));
    }
    if e.bucket_version > 0 {
        out.insert("bucketVersion".into(), json!(e.bucket_version));
    }
    if let Some(ns) = &e.namespace {
        out.insert("namespace".into(), json!([ns.id, ns.range.0, ns.range.1]));
    }
    if e.holdout
        && let Some(h) = holdout
        && h.fraction > 0.0
    {
        let mut filters = vec![json!({
            "seed": HOLDOUT_SEED,
            "attribute": h.hash_attribute,
            "hashVersion": 2,
            "ranges": [[h.fraction, 1.0]],
        })];
        // The SDKs check a rule's namespace only when it has no filters, so beside the
        // holdout's filter the namespace is one more: the same hash ("__" + id, version 1)
        // over the same range.
        if let Some(ns) = &e.namespace {
            filters.push(json!({
                "seed": format!("__{}", ns.id),
                "attribute": e.hash_attribute,
                "hashVersion": 1,
                "ranges": [[ns.range.0, ns.range.1]],
            }));
        }
        out.insert("filters".into(), Value::Array(filters));
    }
    out.insert(
        "meta".into(),
        Value::Array(
            e.variations
                .iter()
                .map(|v| json!({"key": v.key, "name": v.name}))
                .collect(),
        ),
    );
    out.insert(
        "phase".into(),
        json!(e.phases.len().saturating_sub(1).to_string()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{Context, Source};

    fn flag(value: Value) -> Flag {
        parse(&value).expect("a flag")
    }

    fn experiment(value: Value) -> Experiment {
        parse(&value).expect("an experiment")
    }

    fn checkout() -> Experiment {
        experiment(json!({
            "key": "checkout", "status": "running", "metrics": ["purchase"],
            "variations": [{"key": "control", "value": false}, {"key": "one-page", "value": true}],
        }))
    }

    fn catalogue() -> Catalogue {
        let mut c = Catalogue::default();
        c.experiments.insert("checkout".into(), checkout());
        c.metrics.insert(
            "purchase".into(),
            serde_json::from_value(
                json!({"key": "purchase", "type": "conversion", "event": "Order Completed"}),
            )
            .unwrap(),
        );
        c.segments.insert("vip".into());
        c
    }

    fn field_of(result: Result<(), Invalid>) -> String {
        result.expect_err("refused").field
    }

    #[test]
    fn experiments_with_broken_allocations_are_refused_by_field() {
        let c = catalogue();
        let mut e = checkout();
        e.weights = Some(vec![0.5, 0.6]);
        assert_eq!(field_of(c.check_experiment(&e)), "weights");
        e.weights = Some(vec![1.0]);
        assert_eq!(field_of(c.check_experiment(&e)), "weights");
        e.weights = Some(vec![1.5, -0.5]);
        assert_eq!(field_of(c.check_experiment(&e)), "weights[0]");
        e.weights = None;
        e.variations[1].key = "control".into();
        assert_eq!(field_of(c.check_experiment(&e)), "variations[1].key");
        let mut e = checkout();
        e.coverage = 1.2;
        assert_eq!(field_of(c.check_experiment(&e)), "coverage");
        let mut e = checkout();
        e.namespace = Some(Namespace {
            id: "pay".into(),
            range: (0.5, 0.5),
        });
        assert_eq!(field_of(c.check_experiment(&e)), "namespace.range");
        let mut e = checkout();
        e.hash_version = 3;
        assert_eq!(field_of(c.check_experiment(&e)), "hash_version");
        let mut e = checkout();
        e.variations.truncate(1);
        assert_eq!(field_of(c.check_experiment(&e)), "variations");
        assert!(c.check_experiment(&checkout()).is_ok());
    }

    #[test]
    fn unknown_references_are_refused_by_field() {
        let c = catalogue();
        let mut e = checkout();
        e.metrics.push("refunds".into());
        assert_eq!(field_of(c.check_experiment(&e)), "metrics[1]");
        let mut e = checkout();
        e.segment = Some("nobody".into());
        assert_eq!(field_of(c.check_experiment(&e)), "segment");
        let mut e = checkout();
        e.condition = Some(json!({"country": {"$inn": ["DE"]}}));
        let refused = c.check_experiment(&e).unwrap_err();
        assert_eq!(refused.field, "condition");
        assert!(refused.message.contains("$inn"), "{refused}");
        let f = flag(
            json!({"key": "f", "value_type": "boolean", "default_value": false,
            "rules": [{"type": "experiment", "experiment": "nope"}]}),
        );
        assert_eq!(field_of(c.check_flag(&f)), "rules[0].experiment");
        let f = flag(
            json!({"key": "f", "value_type": "string", "default_value": "a",
            "rules": [{"type": "experiment", "experiment": "checkout"}]}),
        );
        assert_eq!(field_of(c.check_flag(&f)), "rules[0].experiment");
        let f = flag(json!({"key": "f", "value_type": "number", "default_value": "a"}));
        assert_eq!(field_of(c.check_flag(&f)), "default_value");
        let f = flag(
            json!({"key": "f", "value_type": "boolean", "default_value": true,
            "rules": [{"type": "rollout", "value": false, "coverage": 0.1, "segment": "gone"}]}),
        );
        assert_eq!(field_of(c.check_flag(&f)), "rules[0].segment");
        let f = flag(json!({"key": "bad key", "value_type": "boolean", "default_value": true}));
        assert_eq!(field_of(c.check_flag(&f)), "key");
    }

    #[test]
    fn prerequisite_cycles_are_refused_with_their_path() {
        let mut c = catalogue();
        let a = flag(
            json!({"key": "a", "value_type": "boolean", "default_value": true,
            "prerequisites": [{"flag": "b"}]}),
        );
        let b = flag(
            json!({"key": "b", "value_type": "boolean", "default_value": true,
            "rules": [{"type": "force", "value": false, "prerequisites": [{"flag": "c"}]}]}),
        );
        let c_flag = flag(json!({"key": "c", "value_type": "boolean", "default_value": true}));
        c.flags.insert("b".into(), b);
        c.flags.insert("c".into(), c_flag.clone());
        assert!(c.check_flag(&a).is_ok());
        c.flags.insert("a".into(), a);
        let closing = flag(
            json!({"key": "c", "value_type": "boolean", "default_value": true,
            "prerequisites": [{"flag": "a"}]}),
        );
        let refused = c.check_flag(&closing).unwrap_err();
        assert_eq!(refused.field, "prerequisites");
        assert!(refused.message.contains("c → a → b → c"), "{refused}");
        assert!(c.check_flag(&c_flag).is_ok());
    }

    fn context_for(payload: &Value, attributes: Value) -> Context {
        serde_json::from_value(json!({
            "attributes": attributes,
            "features": payload["features"],
            "savedGroups": payload["savedGroups"],
        }))
        .expect("the payload reads as a context")
    }

    #[test]
    fn the_payload_serves_rules_experiments_and_decisions_as_the_sdks_read_them() {
        let mut experiments = BTreeMap::new();
        experiments.insert("checkout".to_string(), checkout());
        let flags = vec![
            flag(
                json!({"key": "one-page", "value_type": "boolean", "default_value": false,
                "rules": [
                    {"type": "force", "value": true, "condition": {"country": "DE"}},
                    {"type": "experiment", "experiment": "checkout", "segment": "vip"},
                ]}),
            ),
            flag(
                json!({"key": "gated", "value_type": "string", "default_value": "on",
                "prerequisites": [{"flag": "one-page"}]}),
            ),
        ];
        let members =
            BTreeMap::from([(segment_group("vip", "id"), vec![json!("v1"), json!("v2")])]);
        assert_eq!(
            segment_groups_needed(&flags, &experiments),
            BTreeSet::from([("vip".to_string(), "id".to_string())])
        );
        let payload_of = |experiments: &BTreeMap<String, Experiment>| {
            features_payload(&PayloadInput {
                flags: &flags,
                experiments,
                holdout: None,
                segment_members: &members,
            })
        };
        let payload = payload_of(&experiments);
        let mut german = context_for(&payload, json!({"id": "x", "country": "DE"}));
        let forced = german.eval_feature("one-page");
        assert_eq!((forced.value, forced.source), (json!(true), Source::Force));
        assert_eq!(german.eval_feature("gated").value, json!("on"));
        let mut outsider = context_for(&payload, json!({"id": "x"}));
        let default = outsider.eval_feature("one-page");
        assert_eq!(default.source, Source::DefaultValue);
        let gated = outsider.eval_feature("gated");
        assert_eq!(
            (gated.value, gated.source),
            (Value::Null, Source::Prerequisite)
        );
        for member in ["v1", "v2"] {
            let mut vip = context_for(&payload, json!({"id": member}));
            let result = vip.eval_feature("one-page");
            assert_eq!(result.source, Source::Experiment);
            let assigned = result.experiment.expect("in the experiment");
            assert_eq!(assigned.value, result.value);
            assert!(["control", "one-page"].contains(&assigned.key.as_str()));
        }

        // Stopped with a decision, everybody targeted gets the chosen variation; drafts serve
        // nothing.
        let mut decided = checkout();
        decided.status = Status::Stopped;
        decided.decision = Some(Decision {
            variation: Some("one-page".into()),
            reason: "won".into(),
        });
        experiments.insert("checkout".into(), decided);
        let payload = payload_of(&experiments);
        let mut vip = context_for(&payload, json!({"id": "v1"}));
        let result = vip.eval_feature("one-page");
        assert_eq!((result.value, result.source), (json!(true), Source::Force));
        let mut draft = checkout();
        draft.status = Status::Draft;
        experiments.insert("checkout".into(), draft);
        let payload = payload_of(&experiments);
        let mut vip = context_for(&payload, json!({"id": "v1"}));
        assert_eq!(vip.eval_feature("one-page").source, Source::DefaultValue);
    }

    /// The payload of flag `one-page`, served by `experiment`, with a global holdout of
    /// `fraction` on `id`.
    fn held_out_payload(experiment: &Experiment, fraction: f64) -> (Value, Holdout) {
        let experiments = BTreeMap::from([(experiment.key.clone(), experiment.clone())]);
        let flags = vec![flag(json!({"key": "one-page", "value_type": "boolean",
            "default_value": false, "rules": [{"type": "experiment", "experiment": experiment.key}]}))];
        let holdout = Holdout {
            fraction,
            hash_attribute: "id".into(),
        };
        let payload = features_payload(&PayloadInput {
            flags: &flags,
            experiments: &experiments,
            holdout: Some(&holdout),
            segment_members: &BTreeMap::new(),
        });
        (payload, holdout)
    }

    #[test]
    fn the_global_holdout_keeps_its_share_out_of_every_experiment() {
        let (payload, _) = held_out_payload(&checkout(), 0.1);
        let mut held = 0;
        for i in 0..2000 {
            let id = format!("u{i}");
            let result = context_for(&payload, json!({"id": id})).eval_feature("one-page");
            let in_holdout =
                crate::assign::hash(HOLDOUT_SEED, &id, crate::assign::HashVersion::V2) < 0.1;
            assert_eq!(result.source != Source::Experiment, in_holdout, "{id}");
            held += usize::from(in_holdout);
        }
        assert!((120..280).contains(&held), "{held} of 2000 held out");
    }

    #[test]
    fn server_side_assignment_matches_what_the_sdks_are_served() {
        let mut weighted = checkout();
        weighted.weights = Some(vec![0.3, 0.7]);
        let (payload, holdout) = held_out_payload(&weighted, 0.2);
        let spec = sdk_experiment(&weighted, Some(&holdout)).expect("an SDK experiment");
        let mut seen = [0usize; 3];
        for i in 0..2000 {
            let id = format!("u{i}");
            let served = context_for(&payload, json!({"id": id})).eval_feature("one-page");
            let served = served.experiment.map(|e| e.key);
            let assigned = context_for(&payload, json!({"id": id})).assign(&spec);
            let assigned = assigned
                .variation
                .map(|v| weighted.variations[v].key.clone());
            assert_eq!(served, assigned, "{id}");
            match assigned.as_deref() {
                None => seen[0] += 1,
                Some("control") => seen[1] += 1,
                _ => seen[2] += 1,
            }
        }
        // About 20 % held out, and the rest split 30/70.
        assert!((300..500).contains(&seen[0]), "{seen:?}");
        assert!(seen[2] > 2 * seen[1], "{seen:?}");
    }

    #[test]
    fn reading_refuses_wrong_types_and_unknown_fields_by_path() {
        let refused = parse::<Experiment>(
            &json!({"key": "e", "variations": [{"key": "a"}, {"key": "b"}],
            "weigths": [0.5, 0.5]}),
        )
        .unwrap_err();
        assert_eq!(refused.field, "weigths");
        let refused = parse::<Flag>(
            &json!({"key": "f", "value_type": "boolean", "default_value": true,
            "rules": [{"type": "rollout", "value": false, "coverage": "half"}]}),
        )
        .unwrap_err();
        assert_eq!(refused.field, "rules[0].coverage", "{refused}");
        let refused = parse::<Flag>(
            &json!({"key": "f", "value_type": "boolean", "default_value": true,
            "rules": [{"type": "force", "value": false, "segmnt": "vip"}]}),
        )
        .unwrap_err();
        assert_eq!(refused.field, "rules[0].segmnt", "{refused}");
        let sum = parse::<Metric>(&json!({"key": "m", "type": "sum", "event": "Order Completed"}))
            .unwrap();
        assert_eq!(
            field_of(Catalogue::default().check_metric(&sum)),
            "property"
        );
        let rollout = parse::<Flag>(
            &json!({"key": "f", "value_type": "boolean", "default_value": true,
            "rules": [{"type": "rollout", "value": false}]}),
        )
        .unwrap();
        let refused = Catalogue::default().check_flag(&rollout).unwrap_err();
        assert_eq!(refused.field, "rules[0].coverage");
        assert_eq!(refused.message, "a rollout rule needs coverage");
        let kept = parse::<Flag>(
            &json!({"key": "f", "value_type": "json", "default_value": {"deep": [1, {"x": null}]}}),
        )
        .unwrap();
        assert_eq!(kept.default_value, json!({"deep": [1, {"x": null}]}));
    }

    #[test]
    fn namespaces_still_separate_experiments_under_the_global_holdout() {
        let mut left = checkout();
        left.namespace = Some(Namespace {
            id: "pay".into(),
            range: (0.0, 0.5),
        });
        let mut right = checkout();
        right.key = "checkout-2".into();
        right.namespace = Some(Namespace {
            id: "pay".into(),
            range: (0.5, 1.0),
        });
        let experiments = BTreeMap::from([
            ("checkout".to_string(), left),
            ("checkout-2".to_string(), right),
        ]);
        let flags = vec![
            flag(
                json!({"key": "f1", "value_type": "boolean", "default_value": false,
                "rules": [{"type": "experiment", "experiment": "checkout"}]}),
            ),
            flag(
                json!({"key": "f2", "value_type": "boolean", "default_value": false,
                "rules": [{"type": "experiment", "experiment": "checkout-2"}]}),
            ),
        ];
        let holdout = Holdout {
            fraction: 0.05,
            hash_attribute: "id".into(),
        };
        let payload = features_payload(&PayloadInput {
            flags: &flags,
            experiments: &experiments,
            holdout: Some(&holdout),
            segment_members: &BTreeMap::new(),
        });
        let mut in_either = 0;
        for i in 0..1000 {
            let mut unit = context_for(&payload, json!({"id": format!("visitor-{i}")}));
            let one = unit.eval_feature("f1").source == Source::Experiment;
            let two = unit.eval_feature("f2").source == Source::Experiment;
            assert!(
                !(one && two),
                "visitor-{i} is in both halves of the namespace"
            );
            in_either += usize::from(one || two);
        }
        assert!(in_either > 900, "{in_either} of 1000 in an experiment");
    }
}
