//! Evaluating experiments and feature flags for one unit, in the order and with the rules of
//! GrowthBook's SDKs: a flag's rules are tried in turn (prerequisites, filters, then a forced
//! value for a targeted rollout or an experiment), and an experiment includes a unit only past
//! every gate (enabled, overrides, activity, hash attribute, filters or namespace, condition,
//! prerequisites, groups, URL, coverage), so that Cohort and GrowthBook's SDKs give one unit the
//! same value from the same definitions.
//!
//! ```
//! use cohort_experiment::evaluate::{Context, Experiment};
//! use serde_json::json;
//! let mut context: Context =
//!     serde_json::from_value(json!({"attributes": {"id": "1"}})).unwrap();
//! let experiment: Experiment =
//!     serde_json::from_value(json!({"key": "my-test", "variations": [0, 1]})).unwrap();
//! let result = context.run(&experiment);
//! assert!(result.in_experiment);
//! assert_eq!(result.value, json!(1));
//! ```

use crate::assign::{self, BucketRange, HashVersion};
use crate::condition::{eval_condition_in, js_string, truthy};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who is being evaluated, and the switches that override assignment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// The unit's attributes (`id` is the default hash attribute).
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Flags by key, for feature evaluation and prerequisites: shared, so that a server
    /// evaluating request after request gives each context the definitions without copying.
    #[serde(default, deserialize_with = "shared")]
    pub features: Arc<BTreeMap<String, Feature>>,
    /// Experiment key → variation index, forced for this unit.
    #[serde(default)]
    pub forced_variations: BTreeMap<String, i64>,
    /// Saved groups by ID, for `$inGroup` conditions (shared, as `features`).
    #[serde(default, deserialize_with = "shared")]
    pub saved_groups: Arc<Map<String, Value>>,
    /// Groups the unit belongs to, for experiments limited to groups.
    #[serde(default)]
    pub groups: BTreeMap<String, bool>,
    /// The page's URL, for URL targeting and `?experiment-key=N` overrides.
    #[serde(default)]
    pub url: String,
    /// Puts nobody in an experiment unless forced.
    #[serde(default)]
    pub qa_mode: bool,
    /// `false` puts nobody in any experiment.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Sticky bucketing, when on: the unit's stored assignments by `"{attribute}||{value}"`,
    /// read before hashing (a unit keeps its variation when weights change) and updated with
    /// each new assignment.
    #[serde(default, rename = "stickyBucketAssignmentDocs")]
    pub sticky_buckets: Option<BTreeMap<String, StickyBucketDoc>>,
    #[serde(skip)]
    seed_memo: RefCell<SeedMemo>,
}

/// The hash state after the last version-2 seed this context hashed, kept with the seed's
/// bytes: a context that decides one experiment for unit after unit (bulk assignment, a
/// benchmark, a journey's split) then hashes only each unit's value, about half of the hash's
/// serial multiplications. Seeds longer than the buffer are hashed in full every time.
#[derive(Clone, Copy)]
struct SeedMemo {
    len: Option<u8>,
    seed: [u8; SEED_MEMO_BYTES],
    prefix: u32,
}

const SEED_MEMO_BYTES: usize = 48;

impl Default for SeedMemo {
    fn default() -> Self {
        SeedMemo {
            len: None,
            seed: [0; SEED_MEMO_BYTES],
            prefix: 0,
        }
    }
}

impl std::fmt::Debug for SeedMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A cache, not state: its bytes say nothing about the unit.
        f.write_str("SeedMemo")
    }
}

impl SeedMemo {
    fn prefix_of(&self, seed: &str) -> Option<u32> {
        let len = usize::from(self.len?);
        (self.seed.get(..len) == Some(seed.as_bytes())).then_some(self.prefix)
    }

    fn remembering(seed: &str, prefix: u32) -> Option<SeedMemo> {
        let len = u8::try_from(seed.len())
            .ok()
            .filter(|l| usize::from(*l) <= SEED_MEMO_BYTES)?;
        let mut memo = SeedMemo {
            len: Some(len),
            prefix,
            ..SeedMemo::default()
        };
        memo.seed[..seed.len()].copy_from_slice(seed.as_bytes());
        Some(memo)
    }
}

/// A unit's stored assignments under one attribute: experiment key and bucket version
/// (`"{key}__{version}"`) → variation key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StickyBucketDoc {
    pub attribute_name: String,
    pub attribute_value: String,
    #[serde(default)]
    pub assignments: BTreeMap<String, String>,
}

fn enabled() -> bool {
    true
}

/// A flag: its value unless a rule applies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    #[serde(default)]
    pub default_value: Value,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rule of a flag: a forced value (optionally targeted and rolled out) or an experiment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub id: String,
    pub condition: Option<Value>,
    pub parent_conditions: Option<Vec<ParentCondition>>,
    pub filters: Option<Vec<Filter>>,
    /// The value this rule forces; `Some(Value::Null)` forces null.
    #[serde(default, deserialize_with = "present")]
    pub force: Option<Value>,
    pub variations: Option<Vec<Value>>,
    pub key: Option<String>,
    pub weights: Option<Vec<f64>>,
    pub coverage: Option<f64>,
    pub range: Option<BucketRange>,
    pub ranges: Option<Vec<BucketRange>>,
    pub namespace: Option<(String, f64, f64)>,
    pub hash_attribute: Option<String>,
    pub hash_version: Option<u32>,
    pub seed: Option<String>,
    pub meta: Option<Vec<VariationMeta>>,
    #[serde(flatten)]
    pub sticky: StickyOptions,
}

/// How an experiment uses sticky bucketing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StickyOptions {
    /// The attribute to hash, and to key assignments by, when the hash attribute is missing.
    pub fallback_attribute: Option<String>,
    /// Raising it re-buckets everybody.
    #[serde(default)]
    pub bucket_version: u32,
    /// Units with assignments from an older version than this are excluded.
    #[serde(default)]
    pub min_bucket_version: u32,
    #[serde(default)]
    pub disable_sticky_bucketing: bool,
}

/// A field that is there, even as `null`, as opposed to absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A value read into an `Arc` (serde's `rc` feature would do it for every crate of the build).
fn shared<'de, D, T>(d: D) -> Result<Arc<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Arc::new)
}

/// A prerequisite: the flag `id` must evaluate to a value meeting `condition` (`{"value": …}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentCondition {
    pub id: String,
    #[serde(default)]
    pub condition: Value,
    /// A gate that fails stops the whole flag, not just this rule.
    #[serde(default)]
    pub gate: bool,
}

/// Includes only units whose hash of `attribute` under `seed` falls in one of `ranges`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub attribute: Option<String>,
    pub seed: String,
    pub hash_version: Option<u32>,
    pub ranges: Vec<BucketRange>,
}

/// Per-variation metadata.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VariationMeta {
    pub key: Option<String>,
    /// A unit in this variation is counted (a holdout) but the flag's later rules still decide
    /// its value.
    #[serde(default)]
    pub passthrough: bool,
}

/// An experiment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Experiment {
    pub key: String,
    pub variations: Vec<Value>,
    pub weights: Option<Vec<f64>>,
    pub coverage: Option<f64>,
    pub ranges: Option<Vec<BucketRange>>,
    pub condition: Option<Value>,
    pub parent_conditions: Option<Vec<ParentCondition>>,
    pub namespace: Option<(String, f64, f64)>,
    pub filters: Option<Vec<Filter>>,
    /// A variation index every included unit gets.
    #[serde(default, deserialize_with = "present")]
    pub force: Option<Value>,
    pub hash_attribute: Option<String>,
    pub hash_version: Option<u32>,
    pub seed: Option<String>,
    pub active: Option<bool>,
    pub status: Option<String>,
    pub url: Option<String>,
    pub groups: Option<Vec<String>>,
    pub meta: Option<Vec<VariationMeta>>,
    #[serde(flatten)]
    pub sticky: StickyOptions,
}

/// What a unit got from an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentResult {
    /// The experiment's key (a flag rule's `key`, else the flag's).
    pub experiment_key: String,
    pub value: Value,
    pub variation_id: usize,
    /// The variation's key: its meta key, else its index.
    pub key: String,
    pub in_experiment: bool,
    /// Whether the unit's hash decided (false for overrides and exclusions).
    pub hash_used: bool,
    pub hash_attribute: String,
    /// The unit's value of the hash attribute, as given (`null` when it has none).
    pub hash_value: Value,
    /// The unit's hash number, when it was computed.
    pub bucket: Option<f64>,
    /// The variation passes the unit through to the flag's next rules.
    pub passthrough: bool,
    /// The variation came from a stored sticky assignment.
    pub sticky_bucket_used: bool,
}

/// Where a flag's value came from.
/// What assignment decided for one unit in one experiment, without the strings of an
/// [`ExperimentResult`]: what [`Context::assign`] returns where only the decision matters
/// (bulk assignment, a journey's experiment split), at a fraction of [`Context::run`]'s cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    /// The variation's index, when the unit is in the experiment.
    pub variation: Option<usize>,
    pub in_experiment: bool,
    /// Whether the variation came from the hash (not from an override or a forced value).
    pub hash_used: bool,
    /// The unit's bucket, in [0, 1), once it was hashed.
    pub bucket: Option<f64>,
    pub sticky_bucket_used: bool,
}

impl Assignment {
    const EXCLUDED: Assignment = Assignment {
        variation: None,
        in_experiment: false,
        hash_used: false,
        bucket: None,
        sticky_bucket_used: false,
    };

    /// A variation given by an override or a forced value: in when it exists.
    fn forced(variation: Option<i64>, count: usize) -> Assignment {
        let variation = variation
            .and_then(|v| usize::try_from(v).ok())
            .filter(|v| *v < count);
        Assignment {
            variation,
            in_experiment: variation.is_some(),
            ..Assignment::EXCLUDED
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    UnknownFeature,
    DefaultValue,
    Force,
    Experiment,
    Prerequisite,
    CyclicPrerequisite,
}

impl Source {
    /// The name GrowthBook's SDKs give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::UnknownFeature => "unknownFeature",
            Source::DefaultValue => "defaultValue",
            Source::Force => "force",
            Source::Experiment => "experiment",
            Source::Prerequisite => "prerequisite",
            Source::CyclicPrerequisite => "cyclicPrerequisite",
        }
    }
}

/// A flag's value for a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureResult {
    pub value: Value,
    pub source: Source,
    pub rule_id: String,
    pub experiment: Option<ExperimentResult>,
}

impl FeatureResult {
    fn new(value: Value, source: Source, rule_id: &str) -> Self {
        Self {
            value,
            source,
            rule_id: rule_id.to_string(),
            experiment: None,
        }
    }

    /// Whether the value is truthy, as the SDKs' `on`.
    pub fn on(&self) -> bool {
        truthy(&self.value)
    }
}

impl Context {
    /// An enabled context for the unit with `attributes`, no flags, overrides or sticky
    /// assignments (set the public fields for those).
    pub fn for_unit(attributes: Map<String, Value>) -> Context {
        Context {
            attributes,
            enabled: true,
            ..Context::default()
        }
    }

    /// The keys this unit's sticky assignments are stored under (`"{attribute}||{value}"`), for
    /// those of `attributes` it has a value of: what to load into
    /// [`Context::sticky_buckets`] before evaluating.
    pub fn sticky_keys<'a>(&self, attributes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        attributes
            .into_iter()
            .filter_map(|a| self.hash_value(Some(a), None))
            .map(|(name, value)| format!("{name}||{value}"))
            .collect()
    }

    /// The value of flag `id` for this unit.
    pub fn eval_feature(&mut self, id: &str) -> FeatureResult {
        let mut sticky_buckets = self.sticky_buckets.take();
        let result = Evaluation {
            ctx: self,
            sticky_buckets: &mut sticky_buckets,
        }
        .feature(id, None);
        self.sticky_buckets = sticky_buckets;
        result
    }

    /// This unit's variation of `experiment`.
    pub fn run(&mut self, experiment: &Experiment) -> ExperimentResult {
        let mut sticky_buckets = self.sticky_buckets.take();
        let result = Evaluation {
            ctx: self,
            sticky_buckets: &mut sticky_buckets,
        }
        .run(experiment, None);
        self.sticky_buckets = sticky_buckets;
        result
    }

    /// A rollout rule includes the unit: no coverage or range set, or its hash within them (a
    /// hash equal to the coverage is in, as in the JavaScript SDK).
    /// Decides `experiment` for this unit as [`Context::run`] does, and returns only the
    /// decision.
    pub fn assign(&mut self, experiment: &Experiment) -> Assignment {
        let mut sticky_buckets = self.sticky_buckets.take();
        let assignment = Evaluation {
            ctx: self,
            sticky_buckets: &mut sticky_buckets,
        }
        .assign(experiment, None);
        self.sticky_buckets = sticky_buckets;
        assignment
    }

    /// [`assign::hash`], with version 2's seed state taken from the memo when it is the last
    /// seed hashed.
    #[inline]
    fn hash(&self, seed: &str, value: &str, version: HashVersion) -> f64 {
        if version == HashVersion::V1 {
            return assign::hash(seed, value, version);
        }
        let remembered = self.seed_memo.borrow().prefix_of(seed);
        let prefix = match remembered {
            Some(prefix) => prefix,
            None => {
                let prefix = assign::seed_prefix(seed);
                if let Some(memo) = SeedMemo::remembering(seed, prefix) {
                    *self.seed_memo.borrow_mut() = memo;
                }
                prefix
            }
        };
        assign::hash_v2_after(prefix, value)
    }

    fn in_rollout(&self, seed: &str, rule: &Rule) -> bool {
        if rule.range.is_none() && rule.coverage.is_none() {
            return true;
        }
        if rule.range.is_none() && rule.coverage == Some(0.0) {
            return false;
        }
        let Some((_, value)) = self.hash_value(rule.hash_attribute.as_deref(), None) else {
            return false;
        };
        let Some(version) = HashVersion::from_number(rule.hash_version.unwrap_or(1)) else {
            return false;
        };
        let n = self.hash(seed, &value, version);
        match (rule.range, rule.coverage) {
            (Some(range), _) => assign::in_range(n, range),
            (None, Some(coverage)) => n <= coverage,
            (None, None) => true,
        }
    }

    /// The hash attribute's name and the unit's value of it as text; `None` when the unit has
    /// none (absent, null, false, 0 or empty: JavaScript's falsy values). A string attribute is
    /// borrowed, not copied.
    #[inline]
    fn hash_value<'n>(
        &self,
        attribute: Option<&'n str>,
        fallback: Option<&'n str>,
    ) -> Option<(&'n str, Cow<'_, str>)> {
        let name = attribute.unwrap_or("id");
        let (name, value) = match self.attributes.get(name).filter(|v| truthy(v)) {
            Some(value) => (name, value),
            None => {
                let fallback = fallback?;
                let value = self.attributes.get(fallback).filter(|v| truthy(v))?;
                (fallback, value)
            }
        };
        let text = match value {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(js_string(other)),
        };
        Some((name, text))
    }

    fn filtered_out(&self, filters: &[Filter]) -> bool {
        filters.iter().any(|filter| {
            let Some((_, value)) = self.hash_value(filter.attribute.as_deref(), None) else {
                return true;
            };
            let Some(version) = HashVersion::from_number(filter.hash_version.unwrap_or(2)) else {
                return true;
            };
            let n = self.hash(&filter.seed, &value, version);
            !filter.ranges.iter().any(|r| assign::in_range(n, *r))
        })
    }

    fn passes(&self, condition: &Value) -> bool {
        eval_condition_in(&self.attributes, condition, &self.saved_groups)
    }

    /// Old-style URL targeting: the pattern matches the whole URL or its path.
    fn url_matches(&self, pattern: &str) -> bool {
        if self.url.is_empty() {
            return false;
        }
        let Ok(regex) = regex::Regex::new(pattern) else {
            return false;
        };
        let without_scheme = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .unwrap_or(&self.url);
        let path = without_scheme
            .find('/')
            .map_or("/", |i| &without_scheme[i..]);
        regex.is_match(&self.url) || regex.is_match(path)
    }
}

/// The flags being evaluated, innermost first: a list on the stack, so that looking for a
/// cycle of prerequisites allocates nothing.
struct Seen<'a> {
    id: &'a str,
    outer: Option<&'a Seen<'a>>,
}

impl Seen<'_> {
    fn contains(&self, id: &str) -> bool {
        let mut at = Some(self);
        while let Some(seen) = at {
            if seen.id == id {
                return true;
            }
            at = seen.outer;
        }
        false
    }
}

/// An experiment as evaluation reads it: an [`Experiment`], or a flag's experiment rule
/// ([`RuleExperiment`]). Evaluation is generic over it, so reading a field is a load from the
/// definition itself; nothing is copied per unit (building a borrowed copy of every field cost
/// about a fifth of an assignment). Fields a rule does not have answer `None`.
trait Spec {
    fn key(&self) -> &str;
    fn variations(&self) -> &[Value];
    fn weights(&self) -> Option<&[f64]>;
    fn coverage(&self) -> Option<f64>;
    fn ranges(&self) -> Option<&[BucketRange]>;
    fn condition(&self) -> Option<&Value>;
    fn namespace(&self) -> Option<&(String, f64, f64)>;
    fn filters(&self) -> Option<&[Filter]>;
    fn hash_attribute(&self) -> Option<&str>;
    fn hash_version(&self) -> Option<u32>;
    fn seed(&self) -> Option<&str>;
    fn meta(&self) -> Option<&[VariationMeta]>;
    fn sticky(&self) -> &StickyOptions;
    fn parent_conditions(&self) -> Option<&[ParentCondition]> {
        None
    }
    fn force(&self) -> Option<&Value> {
        None
    }
    fn active(&self) -> Option<bool> {
        None
    }
    fn status(&self) -> Option<&str> {
        None
    }
    fn url(&self) -> Option<&str> {
        None
    }
    fn groups(&self) -> Option<&[String]> {
        None
    }
}

/// The accessors of the allocation fields an [`Experiment`] and a flag's [`Rule`] share, read
/// from `self` or from the field of `self` named.
macro_rules! allocation_fields {
    ($(.$inner:ident)?) => {
        fn weights(&self) -> Option<&[f64]> {
            self$(.$inner)?.weights.as_deref()
        }
        fn coverage(&self) -> Option<f64> {
            self$(.$inner)?.coverage
        }
        fn ranges(&self) -> Option<&[BucketRange]> {
            self$(.$inner)?.ranges.as_deref()
        }
        fn condition(&self) -> Option<&Value> {
            self$(.$inner)?.condition.as_ref()
        }
        fn namespace(&self) -> Option<&(String, f64, f64)> {
            self$(.$inner)?.namespace.as_ref()
        }
        fn filters(&self) -> Option<&[Filter]> {
            self$(.$inner)?.filters.as_deref()
        }
        fn hash_attribute(&self) -> Option<&str> {
            self$(.$inner)?.hash_attribute.as_deref()
        }
        fn hash_version(&self) -> Option<u32> {
            self$(.$inner)?.hash_version
        }
        fn seed(&self) -> Option<&str> {
            self$(.$inner)?.seed.as_deref()
        }
        fn meta(&self) -> Option<&[VariationMeta]> {
            self$(.$inner)?.meta.as_deref()
        }
        fn sticky(&self) -> &StickyOptions {
            &self$(.$inner)?.sticky
        }
    };
}

impl Spec for Experiment {
    allocation_fields!();
    fn key(&self) -> &str {
        &self.key
    }
    fn variations(&self) -> &[Value] {
        &self.variations
    }
    fn parent_conditions(&self) -> Option<&[ParentCondition]> {
        self.parent_conditions.as_deref()
    }
    fn force(&self) -> Option<&Value> {
        self.force.as_ref()
    }
    fn active(&self) -> Option<bool> {
        self.active
    }
    fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }
    fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
    fn groups(&self) -> Option<&[String]> {
        self.groups.as_deref()
    }
}

/// The experiment of flag `feature`'s rule, which has `variations`: the rule's key (the flag's
/// when it has none) and allocation, without prerequisites (checked as the rule's), a forced
/// variation, a status, URL targeting or groups.
struct RuleExperiment<'a> {
    rule: &'a Rule,
    feature: &'a str,
    variations: &'a [Value],
}

impl Spec for RuleExperiment<'_> {
    allocation_fields!(.rule);
    fn key(&self) -> &str {
        self.rule.key.as_deref().unwrap_or(self.feature)
    }
    fn variations(&self) -> &[Value] {
        self.variations
    }
}

/// One evaluation: the context, read only, and its sticky-bucket documents, which new
/// assignments are added to (taken out of the context while it runs).
struct Evaluation<'c> {
    ctx: &'c Context,
    sticky_buckets: &'c mut Option<BTreeMap<String, StickyBucketDoc>>,
}

impl Evaluation<'_> {
    fn feature(&mut self, id: &str, outer: Option<&Seen<'_>>) -> FeatureResult {
        if outer.is_some_and(|seen| seen.contains(id)) {
            return FeatureResult::new(Value::Null, Source::CyclicPrerequisite, "");
        }
        self.feature_rules(id, &Seen { id, outer })
    }

    fn feature_rules(&mut self, id: &str, seen: &Seen<'_>) -> FeatureResult {
        let ctx = self.ctx;
        let Some(feature) = ctx.features.get(id) else {
            return FeatureResult::new(Value::Null, Source::UnknownFeature, "");
        };
        'rules: for rule in &feature.rules {
            for parent in rule.parent_conditions.iter().flatten() {
                match self.prerequisite(parent, Some(seen)) {
                    Prerequisite::Met => {}
                    Prerequisite::Cyclic => {
                        return FeatureResult::new(Value::Null, Source::CyclicPrerequisite, "");
                    }
                    Prerequisite::Unmet if parent.gate => {
                        return FeatureResult::new(Value::Null, Source::Prerequisite, "");
                    }
                    Prerequisite::Unmet => continue 'rules,
                }
            }
            if rule.filters.as_deref().is_some_and(|f| ctx.filtered_out(f)) {
                continue;
            }
            if let Some(value) = &rule.force {
                if rule.condition.as_ref().is_some_and(|c| !ctx.passes(c)) {
                    continue;
                }
                let seed = rule.seed.as_deref().unwrap_or(id);
                if !ctx.in_rollout(seed, rule) {
                    continue;
                }
                return FeatureResult::new(value.clone(), Source::Force, &rule.id);
            }
            let Some(variations) = &rule.variations else {
                continue;
            };
            let result = self.run(
                &RuleExperiment {
                    rule,
                    feature: id,
                    variations,
                },
                Some(seen),
            );
            if result.in_experiment && !result.passthrough {
                let mut out =
                    FeatureResult::new(result.value.clone(), Source::Experiment, &rule.id);
                out.experiment = Some(result);
                return out;
            }
        }
        FeatureResult::new(feature.default_value.clone(), Source::DefaultValue, "")
    }

    fn prerequisite(&mut self, parent: &ParentCondition, seen: Option<&Seen<'_>>) -> Prerequisite {
        let result = self.feature(&parent.id, seen);
        if result.source == Source::CyclicPrerequisite {
            return Prerequisite::Cyclic;
        }
        let mut subject = Map::new();
        subject.insert("value".into(), result.value);
        let everything = Value::Object(Map::new());
        let condition = match &parent.condition {
            Value::Null => &everything,
            c => c,
        };
        if eval_condition_in(&subject, condition, &self.ctx.saved_groups) {
            Prerequisite::Met
        } else {
            Prerequisite::Unmet
        }
    }

    fn sticky(&self, experiment: &impl Spec) -> bool {
        self.sticky_buckets.is_some() && !experiment.sticky().disable_sticky_bucketing
    }

    fn run(&mut self, experiment: &impl Spec, seen: Option<&Seen<'_>>) -> ExperimentResult {
        let assignment = self.assign(experiment, seen);
        self.result(experiment, assignment)
    }

    fn assign(&mut self, experiment: &impl Spec, seen: Option<&Seen<'_>>) -> Assignment {
        let ctx = self.ctx;
        let count = experiment.variations().len();
        if count < 2 || !ctx.enabled {
            return Assignment::EXCLUDED;
        }
        if !ctx.url.is_empty()
            && let Some(forced) = query_string_override(experiment.key(), &ctx.url, count)
        {
            return Assignment::forced(Some(forced as i64), count);
        }
        if let Some(forced) = ctx.forced_variations.get(experiment.key()) {
            return Assignment::forced(Some(*forced), count);
        }
        if experiment.status() == Some("draft") || experiment.active() == Some(false) {
            return Assignment::EXCLUDED;
        }
        let sticky = self.sticky(experiment);
        let fallback = sticky
            .then_some(experiment.sticky().fallback_attribute.as_deref())
            .flatten();
        let Some((hash_attribute, hash_value)) =
            ctx.hash_value(experiment.hash_attribute(), fallback)
        else {
            return Assignment::EXCLUDED;
        };
        let (stored, version_blocked) = if sticky {
            self.sticky_variation(experiment)
        } else {
            (None, false)
        };
        if stored.is_none() {
            if let Some(filters) = experiment.filters() {
                if ctx.filtered_out(filters) {
                    return Assignment::EXCLUDED;
                }
            } else if let Some((namespace, start, end)) = experiment.namespace()
                && !assign::in_namespace(&hash_value, namespace, *start, *end)
            {
                return Assignment::EXCLUDED;
            }
            if experiment.condition().is_some_and(|c| !ctx.passes(c)) {
                return Assignment::EXCLUDED;
            }
            for parent in experiment.parent_conditions().into_iter().flatten() {
                if self.prerequisite(parent, seen) != Prerequisite::Met {
                    return Assignment::EXCLUDED;
                }
            }
            if let Some(groups) = experiment.groups()
                && !groups.iter().any(|g| ctx.groups.get(g) == Some(&true))
            {
                return Assignment::EXCLUDED;
            }
        }
        if let Some(pattern) = experiment.url()
            && !ctx.url_matches(pattern)
        {
            return Assignment::EXCLUDED;
        }
        let Some(version) = HashVersion::from_number(experiment.hash_version().unwrap_or(1)) else {
            return Assignment::EXCLUDED;
        };
        let seed = experiment.seed().unwrap_or(experiment.key());
        let n = ctx.hash(seed, &hash_value, version);
        let assigned = stored.or_else(|| match experiment.ranges() {
            Some(ranges) => assign::choose_variation(n, ranges),
            None => assign::choose_in_bucket_ranges(
                n,
                count,
                experiment.coverage().unwrap_or(1.0),
                experiment.weights(),
            ),
        });
        if version_blocked {
            return Assignment {
                sticky_bucket_used: true,
                ..Assignment::EXCLUDED
            };
        }
        let Some(assigned) = assigned else {
            return Assignment::EXCLUDED;
        };
        if let Some(force) = experiment.force() {
            return Assignment::forced(force.as_i64(), count);
        }
        if ctx.qa_mode || experiment.status() == Some("stopped") {
            return Assignment::EXCLUDED;
        }
        let variation = (assigned < count).then_some(assigned);
        if sticky {
            let key = variation_key(experiment, variation.unwrap_or(0));
            self.remember(experiment, hash_attribute, &hash_value, &key);
        }
        // Past every gate, a stored (sticky) or hashed variation within range puts the unit
        // in; ranges never give an index past the variations, but a stored one could.
        Assignment {
            variation,
            in_experiment: variation.is_some(),
            hash_used: variation.is_some(),
            bucket: Some(n),
            sticky_bucket_used: stored.is_some(),
        }
    }

    /// The stored variation of `experiment` for this unit, and whether an assignment from a
    /// bucket version below the experiment's minimum excludes the unit.
    fn sticky_variation(&self, experiment: &impl Spec) -> (Option<usize>, bool) {
        let options = experiment.sticky();
        let assignments = self.sticky_assignments(experiment);
        let blocked = (0..options.min_bucket_version)
            .any(|v| assignments.contains_key(&sticky_key(experiment.key(), v)));
        if blocked {
            return (None, true);
        }
        let stored = assignments
            .get(&sticky_key(experiment.key(), options.bucket_version))
            .and_then(|variation_key| {
                experiment
                    .meta()?
                    .iter()
                    .position(|m| m.key.as_deref() == Some(variation_key.as_str()))
            });
        (stored, false)
    }

    /// The unit's stored assignments: those under the fallback attribute, overridden by those
    /// under the hash attribute.
    fn sticky_assignments(&self, experiment: &impl Spec) -> BTreeMap<String, String> {
        let Some(docs) = &self.sticky_buckets else {
            return BTreeMap::new();
        };
        let mut assignments = BTreeMap::new();
        let keys = [
            experiment.sticky().fallback_attribute.as_deref(),
            experiment.hash_attribute(),
        ];
        for attribute in keys {
            if let Some((name, value)) = self.ctx.hash_value(attribute, None)
                && let Some(doc) = docs.get(&format!("{name}||{value}"))
            {
                assignments.extend(doc.assignments.clone());
            }
        }
        assignments
    }

    /// Stores this unit's variation of `experiment` under the attribute it was hashed on.
    fn remember(&mut self, experiment: &impl Spec, attribute: &str, value: &str, variation: &str) {
        let Some(docs) = &mut self.sticky_buckets else {
            return;
        };
        let doc = docs
            .entry(format!("{attribute}||{value}"))
            .or_insert_with(|| StickyBucketDoc {
                attribute_name: attribute.to_string(),
                attribute_value: value.to_string(),
                assignments: BTreeMap::new(),
            });
        doc.assignments.insert(
            sticky_key(experiment.key(), experiment.sticky().bucket_version),
            variation.to_string(),
        );
    }

    /// The full result of an assignment, as the SDKs return it.
    fn result(&self, experiment: &impl Spec, assignment: Assignment) -> ExperimentResult {
        let variation_id = assignment.variation.unwrap_or(0);
        let fallback = self
            .sticky(experiment)
            .then_some(experiment.sticky().fallback_attribute.as_deref())
            .flatten();
        let hash_attribute = match self.ctx.hash_value(experiment.hash_attribute(), fallback) {
            Some((name, _)) => name,
            None => experiment.hash_attribute().unwrap_or("id"),
        };
        let hash_value = self
            .ctx
            .attributes
            .get(hash_attribute)
            .cloned()
            .unwrap_or(Value::Null);
        let meta = experiment.meta().and_then(|m| m.get(variation_id));
        let key = variation_key(experiment, variation_id).into_owned();
        ExperimentResult {
            experiment_key: experiment.key().to_string(),
            value: experiment
                .variations()
                .get(variation_id)
                .cloned()
                .unwrap_or(Value::Null),
            variation_id,
            key,
            in_experiment: assignment.in_experiment,
            hash_used: assignment.hash_used,
            hash_attribute: hash_attribute.to_string(),
            hash_value,
            bucket: assignment.bucket,
            passthrough: meta.is_some_and(|m| m.passthrough),
            sticky_bucket_used: assignment.sticky_bucket_used,
        }
    }
}

/// A variation's key: its `meta` key, else its index.
fn variation_key(experiment: &impl Spec, variation: usize) -> Cow<'_, str> {
    match experiment
        .meta()
        .and_then(|m| m.get(variation))
        .and_then(|m| m.key.as_deref())
    {
        Some(key) => Cow::Borrowed(key),
        None => Cow::Owned(variation.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prerequisite {
    Met,
    Unmet,
    Cyclic,
}

/// The key of an experiment's assignment at a bucket version.
fn sticky_key(experiment: &str, bucket_version: u32) -> String {
    format!("{experiment}__{bucket_version}")
}

/// A variation forced by `?{key}=N` in `url`, when N is a whole number below `variations`.
/// Only the first `key=` in the query counts, and its value is read as JavaScript's `parseInt`
/// reads it (leading digits), as the SDKs do.
pub fn query_string_override(key: &str, url: &str, variations: usize) -> Option<usize> {
    // The text between the first `?` and the next one, as `split('?').nth(1)` gives it; found
    // with `split_once`, which does not walk a URL without `?` character by character.
    let rest = url.split_once('?')?.1;
    let query = rest.split_once('?').map_or(rest, |(query, _)| query);
    let query = query.split('#').next().unwrap_or(query);
    let value = query.split('&').find_map(|pair| {
        let mut parts = pair.splitn(2, '=');
        (parts.next() == Some(key)).then(|| parts.next().unwrap_or(""))
    })?;
    let digits: &str = {
        let v = value.trim_start();
        let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        &v[..end]
    };
    let n: usize = digits.parse().ok()?;
    (n < variations).then_some(n)
}
