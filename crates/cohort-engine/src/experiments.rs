//! Flags and experiments: saving their definitions (checked against everything else defined,
//! versioned), running an experiment's lifecycle, serving GrowthBook's features payload and
//! evaluating every flag for one customer, with the exposures logged as `Experiment Viewed`
//! events through the same ingest path as every other event.
//!
//! The payload is the single source of truth for assignment: Cohort's own evaluation reads
//! the very document the SDKs fetch, so a unit gets the same variation from both.

use crate::{Engine, EngineError, blocking};
use chrono::{DateTime, Utc};

use cohort_experiment::definition::{
    Catalogue, Decision, Experiment, Flag, Holdout, Metric, PayloadInput, Phase, Status,
    features_payload, parse, segment_group, segment_groups_needed,
};
use cohort_experiment::evaluate::{Context, ExperimentResult, StickyBucketDoc};
use cohort_experiment::store::{
    DefinitionKind, DefinitionStore, DefinitionStoreError, Expected, HOLDOUT_SETTING,
    StickyBucketStore, Stored, load_catalogue, load_holdout,
};
use cohort_store::Store;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The wall-clock limit of a report's query, longer than other analyses' minute: a report
/// reads every exposure of the experiment and every metric event of the exposed customers,
/// and over 10 million exposures that takes about 40 s on two busy cores
/// (docs/BENCHMARKS.md, Experiments).
const REPORT_QUERY_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The most identifiers a segment's saved group carries in the payload. A larger segment is
/// cut at this many (by identifier order) and the cut is logged: SDKs download the payload,
/// so it has to stay small enough to fetch on every page.
pub const SEGMENT_GROUP_LIMIT: usize = 50_000;

/// The source that server-side exposures are ingested under.
pub const EXPOSURE_SOURCE: &str = "cohort-experiments";

/// The built payload and the revisions it was built at.
#[derive(Default)]
pub(crate) struct PayloadCache(Mutex<Option<(u64, i64, Arc<Served>)>>);

/// What is served, built once per change of the definitions or of a segment's members: the
/// payload SDKs fetch, the same read as Cohort's evaluation takes it, and the experiments.
struct Served {
    payload: Value,
    features: Arc<BTreeMap<String, cohort_experiment::evaluate::Feature>>,
    saved_groups: Arc<Map<String, Value>>,
    experiments: BTreeMap<String, Experiment>,
}

impl From<DefinitionStoreError> for EngineError {
    fn from(e: DefinitionStoreError) -> Self {
        match e {
            DefinitionStoreError::Conflict { .. } => EngineError::Conflict(e.to_string()),
            other => EngineError::Internal(other.to_string()),
        }
    }
}

/// A saved version, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SavedDefinition {
    pub kind: &'static str,
    pub key: String,
    pub version: u64,
    pub saved_at: DateTime<Utc>,
    /// `null` for a deletion.
    pub definition: Option<Value>,
}

impl From<Stored> for SavedDefinition {
    fn from(s: Stored) -> Self {
        SavedDefinition {
            kind: s.kind.as_str(),
            key: s.key,
            version: s.version,
            saved_at: s.saved_at,
            definition: s.document,
        }
    }
}

/// Who to evaluate flags for: a customer by any identifier, attributes, or both (attributes
/// given override those from the profile).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    /// `{"type": "user_id", "value": "u1"}`; any identifier type, or `customer_id`.
    #[serde(default)]
    pub identifier: Option<IdentifierRef>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Only these flags; every flag when absent.
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    /// Log `Experiment Viewed` for the experiments the customer is in (default true). Needs
    /// an identifier.
    #[serde(default = "yes")]
    pub log_exposures: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// Every flag's value for one unit.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub customer_id: Option<String>,
    /// What the rules were evaluated against.
    pub attributes: Map<String, Value>,
    pub flags: BTreeMap<String, FlagValue>,
    /// `Experiment Viewed` events accepted into the inbox.
    pub exposures_logged: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagValue {
    pub value: Value,
    /// `defaultValue`, `force`, `experiment`, `prerequisite`, … as GrowthBook's SDKs say it.
    pub source: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rule_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Assignment>,
}

/// The variation a unit got from an experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Assignment {
    pub key: String,
    pub variation_id: usize,
    pub variation_key: String,
    pub in_experiment: bool,
    pub hash_attribute: String,
    pub hash_value: Value,
}

fn assignment(r: &ExperimentResult) -> Assignment {
    Assignment {
        key: r.experiment_key.clone(),
        variation_id: r.variation_id,
        variation_key: r.key.clone(),
        in_experiment: r.in_experiment,
        hash_attribute: r.hash_attribute.clone(),
        hash_value: r.hash_value.clone(),
    }
}

fn invalid(e: cohort_experiment::definition::Invalid) -> EngineError {
    EngineError::Invalid {
        field: e.field,
        message: e.message,
    }
}

fn segment_names(store: &Store) -> Result<BTreeSet<String>, EngineError> {
    Ok(store
        .segments()
        .list(None)?
        .into_iter()
        .map(|(def, _)| def.name)
        .collect())
}

fn catalogue(store: &Store) -> Result<Catalogue, EngineError> {
    Ok(load_catalogue(store.definitions(), segment_names(store)?)?)
}

fn not_found(kind: DefinitionKind, key: &str) -> EngineError {
    EngineError::NotFound(format!("there is no {} {key:?}", kind.as_str()))
}

impl Engine {
    /// Checks and saves a flag, experiment or metric. `key` is the key in the URL, if any: the
    /// document's own key must match it (or is taken from it).
    pub async fn save_definition(
        &self,
        kind: DefinitionKind,
        key: Option<String>,
        mut document: Value,
        expected: Expected,
    ) -> Result<SavedDefinition, EngineError> {
        if let (Some(key), Value::Object(map)) = (&key, &mut document) {
            match map.get("key") {
                None => {
                    map.insert("key".into(), json!(key));
                }
                Some(Value::String(k)) if k == key => {}
                Some(other) => {
                    return Err(EngineError::Invalid {
                        field: "key".into(),
                        message: format!("{other} is not the key in the URL ({key:?})"),
                    });
                }
            }
        }
        let store = self.store().clone();
        let now = self.now();
        blocking(move || {
            let mut catalogue = catalogue(&store)?;
            let (key, document) = match kind {
                DefinitionKind::Flag => {
                    let flag: Flag = parse(&document).map_err(invalid)?;
                    catalogue.flags.remove(&flag.key);
                    catalogue.check_flag(&flag).map_err(invalid)?;
                    (flag.key.clone(), to_document(&flag)?)
                }
                DefinitionKind::Experiment => {
                    let mut experiment: Experiment = parse(&document).map_err(invalid)?;
                    let before = catalogue.experiments.remove(&experiment.key);
                    catalogue.check_experiment(&experiment).map_err(invalid)?;
                    keep_lifecycle(&mut experiment, before.as_ref(), now)?;
                    (experiment.key.clone(), to_document(&experiment)?)
                }
                DefinitionKind::Metric => {
                    let metric: Metric = parse(&document).map_err(invalid)?;
                    catalogue.metrics.remove(&metric.key);
                    catalogue.check_metric(&metric).map_err(invalid)?;
                    (metric.key.clone(), to_document(&metric)?)
                }
                DefinitionKind::Setting => {
                    return Err(EngineError::Internal(
                        "settings are saved through their own use case".into(),
                    ));
                }
            };
            let saved = store
                .definitions()
                .save(kind, &key, Some(&document), expected, now)?;
            Ok(saved.into())
        })
        .await
    }

    /// Deletes a definition nothing else refers to.
    pub async fn delete_definition(
        &self,
        kind: DefinitionKind,
        key: String,
        expected: Expected,
    ) -> Result<SavedDefinition, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        blocking(move || {
            if store.definitions().get(kind, &key)?.is_none() {
                return Err(not_found(kind, &key));
            }
            let users = catalogue(&store)?.users_of(kind.as_str(), &key);
            if !users.is_empty() {
                return Err(EngineError::Conflict(format!(
                    "{} {key:?} is used by {}",
                    kind.as_str(),
                    users.join(", ")
                )));
            }
            Ok(store
                .definitions()
                .save(kind, &key, None, expected, now)?
                .into())
        })
        .await
    }

    /// Every current definition of a kind, by key.
    pub async fn definitions(
        &self,
        kind: DefinitionKind,
    ) -> Result<Vec<SavedDefinition>, EngineError> {
        let store = self.store().clone();
        blocking(move || {
            Ok(store
                .definitions()
                .current(kind)?
                .into_iter()
                .map(Into::into)
                .collect())
        })
        .await
    }

    /// One definition's current version.
    pub async fn definition(
        &self,
        kind: DefinitionKind,
        key: String,
    ) -> Result<SavedDefinition, EngineError> {
        let store = self.store().clone();
        blocking(move || {
            store
                .definitions()
                .get(kind, &key)?
                .map(Into::into)
                .ok_or_else(|| not_found(kind, &key))
        })
        .await
    }

    /// Every version of a definition, oldest first.
    pub async fn definition_history(
        &self,
        kind: DefinitionKind,
        key: String,
    ) -> Result<Vec<SavedDefinition>, EngineError> {
        let store = self.store().clone();
        blocking(move || {
            let history = store.definitions().history(kind, &key)?;
            if history.is_empty() {
                return Err(not_found(kind, &key));
            }
            Ok(history.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// Starts (or restarts) an experiment: it is served from now on, in a new phase.
    pub async fn start_experiment(&self, key: String) -> Result<SavedDefinition, EngineError> {
        self.change_experiment(key, |e, now| {
            if e.status == Status::Running {
                return Err(EngineError::Conflict(format!(
                    "experiment {:?} is already running",
                    e.key
                )));
            }
            e.status = Status::Running;
            e.decision = None;
            e.phases.push(Phase {
                started_at: now,
                ended_at: None,
                coverage: e.coverage,
                weights: e.effective_weights(),
                reason: "started".into(),
            });
            Ok(())
        })
        .await
    }

    /// Stops a running experiment with a decision: the variation everybody gets from now on
    /// (none: the flag's later rules decide again) and why.
    pub async fn stop_experiment(
        &self,
        key: String,
        decision: Decision,
    ) -> Result<SavedDefinition, EngineError> {
        if decision.reason.trim().is_empty() {
            return Err(EngineError::Invalid {
                field: "reason".into(),
                message: "say why the experiment stops".into(),
            });
        }
        self.change_experiment(key, move |e, now| {
            if e.status != Status::Running {
                return Err(EngineError::Conflict(format!(
                    "experiment {:?} is not running",
                    e.key
                )));
            }
            if let Some(chosen) = &decision.variation
                && !e.variations.iter().any(|v| v.key == *chosen)
            {
                return Err(EngineError::Invalid {
                    field: "variation".into(),
                    message: format!("there is no variation {chosen:?}"),
                });
            }
            e.status = Status::Stopped;
            if let Some(phase) = e.phases.last_mut() {
                phase.ended_at = Some(now);
            }
            e.decision = Some(decision);
            Ok(())
        })
        .await
    }

    async fn change_experiment(
        &self,
        key: String,
        change: impl FnOnce(&mut Experiment, DateTime<Utc>) -> Result<(), EngineError> + Send + 'static,
    ) -> Result<SavedDefinition, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        blocking(move || {
            let kind = DefinitionKind::Experiment;
            let stored = store
                .definitions()
                .get(kind, &key)?
                .ok_or_else(|| not_found(kind, &key))?;
            let mut experiment: Experiment = cohort_experiment::store::decode(&stored)?;
            change(&mut experiment, now)?;
            let document = to_document(&experiment)?;
            Ok(store
                .definitions()
                .save(
                    kind,
                    &key,
                    Some(&document),
                    Expected::Version(stored.version),
                    now,
                )?
                .into())
        })
        .await
    }

    /// An experiment's report from the lake: its exposures and goal and guardrail metrics,
    /// analysed with `options`; `covariate_days` > 0 adjusts with CUPED over that many days
    /// before each unit's exposure. `window` narrows or widens the analysis period, which is
    /// otherwise from the first start to the stop (or now).
    pub async fn experiment_report(
        &self,
        key: String,
        options: cohort_experiment::summary_input::Options,
        covariate_days: u32,
        window: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    ) -> Result<cohort_experiment::report::Report, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        let (experiment, metrics) = blocking(move || {
            let mut catalogue = catalogue(&store)?;
            let experiment = catalogue
                .experiments
                .remove(&key)
                .ok_or_else(|| not_found(DefinitionKind::Experiment, &key))?;
            Ok((experiment, catalogue.metrics))
        })
        .await?;
        let mut query =
            cohort_experiment::metrics::exposure_query(&experiment, &metrics, covariate_days, now)
                .map_err(|e| EngineError::Conflict(e.to_string()))?;
        query.start = window.0.unwrap_or(query.start);
        query.end = window.1.unwrap_or(query.end);
        if query.start >= query.end {
            return Err(EngineError::Invalid {
                field: "from".into(),
                message: format!(
                    "the analysis starts at {} and ends at {}: nothing to analyse",
                    query.start, query.end
                ),
            });
        }
        let lake = self.lake()?.lake().await?;
        let limits = cohort_analysis::RunOptions {
            timeout: REPORT_QUERY_LIMIT,
            ..Default::default()
        };
        let sums = cohort_analysis::experiment::exposure_sums(lake, &query, &limits).await?;
        let input =
            cohort_experiment::metrics::report_input(&experiment, &metrics, &query, &sums, options);
        cohort_experiment::report::analyze(&input).map_err(|e| EngineError::Invalid {
            field: e.at,
            message: e.message,
        })
    }

    /// Sets (or with `None` removes) the global holdout.
    pub async fn set_holdout(
        &self,
        holdout: Option<Value>,
    ) -> Result<Option<Holdout>, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        blocking(move || {
            let holdout: Option<Holdout> = holdout
                .map(|v| parse::<Holdout>(&v))
                .transpose()
                .map_err(invalid)?;
            if let Some(h) = &holdout
                && !(0.0..1.0).contains(&h.fraction)
            {
                return Err(EngineError::Invalid {
                    field: "fraction".into(),
                    message: format!("{} is not at least 0 and below 1", h.fraction),
                });
            }
            let document = holdout.as_ref().map(to_document).transpose()?;
            store.definitions().save(
                DefinitionKind::Setting,
                HOLDOUT_SETTING,
                document.as_ref(),
                Expected::Any,
                now,
            )?;
            Ok(holdout)
        })
        .await
    }

    pub async fn holdout(&self) -> Result<Option<Holdout>, EngineError> {
        let store = self.store().clone();
        blocking(move || Ok(load_holdout(store.definitions())?)).await
    }

    /// GrowthBook's features payload for SDKs holding `client_key` (an enabled source's write
    /// key).
    pub async fn features_for_client(&self, client_key: &str) -> Result<Value, EngineError> {
        self.authenticate(client_key)?;
        let served = self.served().await?;
        let mut answer = served.payload.clone();
        answer["status"] = json!(200);
        Ok(answer)
    }

    /// What is served, rebuilt when a definition or a segment's membership changed.
    async fn served(&self) -> Result<Arc<Served>, EngineError> {
        let store = self.store().clone();
        let cache = self.0.payload.clone();
        blocking(move || {
            let revision = store.definitions().revision()?;
            let memberships = store.segments().last_change_id()?;
            let mut cached = cache.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((r, m, payload)) = cached.as_ref()
                && (*r, *m) == (revision, memberships)
            {
                return Ok(payload.clone());
            }
            let (payload, experiments) = build_payload(&store)?;
            // Read as a map and then shared: `Arc` itself deserializes only where serde's
            // `rc` feature happens to be on.
            let features: BTreeMap<String, cohort_experiment::evaluate::Feature> =
                serde_json::from_value(payload["features"].clone()).map_err(|e| {
                    EngineError::Internal(format!("the features payload does not read: {e}"))
                })?;
            let saved_groups = match &payload["savedGroups"] {
                Value::Object(groups) => Arc::new(groups.clone()),
                _ => Arc::default(),
            };
            let served = Arc::new(Served {
                payload,
                features: Arc::new(features),
                saved_groups,
                experiments,
            });
            *cached = Some((revision, memberships, served.clone()));
            Ok(served)
        })
        .await
    }

    /// Every flag (or those asked for) for one customer or set of attributes; exposures to
    /// experiments are logged for an identified customer.
    pub async fn evaluate_flags(
        &self,
        request: EvaluationRequest,
    ) -> Result<Evaluation, EngineError> {
        let served = self.served().await?;
        let store = self.store().clone();
        let now = self.now();
        let identifier = request.identifier.clone();
        let profile = match identifier {
            Some(id) => {
                let found =
                    blocking(move || Ok(store.profiles().profile(&id.kind, &id.value, now)?))
                        .await?;
                if found.is_none() && request.attributes.is_empty() {
                    let id = request.identifier.as_ref().map(|i| (&i.kind, &i.value));
                    return Err(EngineError::NotFound(format!(
                        "no customer has {id:?}; pass attributes to evaluate for an unknown visitor"
                    )));
                }
                found
            }
            None => None,
        };
        let mut attributes = profile
            .as_deref()
            .map(profile_attributes)
            .unwrap_or_default();
        if let (None, Some(id)) = (&profile, &request.identifier) {
            attributes.insert(id.kind.clone(), json!(id.value));
            attributes.entry("id").or_insert_with(|| json!(id.value));
        }
        attributes.extend(request.attributes.clone());
        let mut context = Context::for_unit(attributes);
        context.features = served.features.clone();
        context.saved_groups = served.saved_groups.clone();
        let experiments = &served.experiments;
        // A known customer keeps the variation they were given when weights change later:
        // their assignments are loaded before evaluating and what is new is stored after.
        let sticky = request.identifier.is_some();
        let loaded = if sticky {
            let attributes: BTreeSet<&str> = experiments
                .values()
                .filter(|e| e.status == Status::Running)
                .flat_map(|e| {
                    [
                        Some(e.hash_attribute.as_str()),
                        e.fallback_attribute.as_deref(),
                    ]
                })
                .flatten()
                .collect();
            let keys = context.sticky_keys(attributes);
            let store = self.store().clone();
            let loaded = blocking(move || Ok(store.definitions().load_assignments(&keys)?)).await?;
            context.sticky_buckets = Some(loaded.clone());
            loaded
        } else {
            BTreeMap::new()
        };
        let keys: Vec<String> = match &request.flags {
            Some(keys) => keys.clone(),
            None => context.features.keys().cloned().collect(),
        };
        let mut flags = BTreeMap::new();
        let mut exposures = Vec::new();
        for key in keys {
            let result = context.eval_feature(&key);
            let experiment = result.experiment.as_ref().map(|r| {
                if r.in_experiment && r.hash_used {
                    exposures.push(exposure(r, experiments));
                }
                assignment(r)
            });
            flags.insert(
                key,
                FlagValue {
                    value: result.value.clone(),
                    source: result.source.as_str(),
                    rule_id: result.rule_id.clone(),
                    experiment,
                },
            );
        }
        let changed: Vec<StickyBucketDoc> = context
            .sticky_buckets
            .iter()
            .flatten()
            .filter(|(key, doc)| loaded.get(*key) != Some(*doc))
            .map(|(_, doc)| doc.clone())
            .collect();
        if !changed.is_empty() {
            let store = self.store().clone();
            blocking(move || Ok(store.definitions().save_assignments(&changed)?)).await?;
        }
        let exposures_logged = match (&request.log_exposures, exposures.is_empty()) {
            (true, false) => {
                self.log_exposures(profile.as_deref(), request.identifier.as_ref(), exposures)
                    .await?
            }
            _ => 0,
        };
        Ok(Evaluation {
            customer_id: profile.map(|p| p.customer_id.clone()),
            attributes: context.attributes,
            flags,
            exposures_logged,
        })
    }

    /// Ingests `Experiment Viewed` for a customer, under the experiments source, as any event
    /// is ingested. Message IDs are derived from the customer, experiment, phase and
    /// variation, so the inbox's dedup window keeps repeated evaluations from flooding the lake.
    async fn log_exposures(
        &self,
        profile: Option<&cohort_profile::Profile>,
        identifier: Option<&IdentifierRef>,
        exposures: Vec<Value>,
    ) -> Result<usize, EngineError> {
        let now = self.now();
        let messages = exposure_messages(profile, identifier, exposures, now);
        if messages.is_empty() {
            return Ok(0);
        }
        let store = self.store().clone();
        let limits = *self.limits();
        blocking(move || crate::ingest::ingest_own(&store, limits, EXPOSURE_SOURCE, messages, now))
            .await
    }
}

/// `Experiment Viewed` messages for a customer, from each exposure's properties (with their
/// `phase`, which names the message and is not sent): none when the customer has no user or
/// anonymous ID to send them under.
pub(crate) fn exposure_messages(
    profile: Option<&cohort_profile::Profile>,
    identifier: Option<&IdentifierRef>,
    exposures: Vec<Value>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Value> {
    let Some((field, value)) = message_identity(profile, identifier) else {
        return Vec::new();
    };
    exposures
        .into_iter()
        .map(|mut properties| {
            let message_id = exposure_message_id(field, &value, &properties);
            if let Some(map) = properties.as_object_mut() {
                map.remove("phase");
            }
            let mut message = json!({
                "type": "track",
                "event": "Experiment Viewed",
                "messageId": message_id,
                "timestamp": cohort_core::message::format_timestamp(now),
                "properties": properties,
            });
            message[field] = json!(value);
            message
        })
        .collect()
}

fn exposure(r: &ExperimentResult, experiments: &BTreeMap<String, Experiment>) -> Value {
    let key = r.experiment_key.as_str();
    let experiment = experiments.get(key);
    let variation_name = experiment
        .and_then(|e| e.variations.get(r.variation_id))
        .map(|v| v.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| r.key.clone());
    json!({
        "experiment_id": key,
        "experiment_name": experiment.map(|e| e.name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| key.to_string()),
        "variation_id": r.key,
        "variation_name": variation_name,
        "phase": experiment.map_or(0, |e| e.phases.len().saturating_sub(1)),
    })
}

/// The same for every evaluation that exposes one unit to one variation in one phase.
fn exposure_message_id(field: &str, value: &str, properties: &Value) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for part in [
        field,
        value,
        &properties["experiment_id"].to_string(),
        &properties["phase"].to_string(),
        &properties["variation_id"].to_string(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0x1f]);
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("exposure-{hex}")
}

/// The Segment identity an exposure is sent under: the customer's user ID, else an
/// anonymous ID, else the identifier the request named when it is one of those.
pub(crate) fn message_identity(
    profile: Option<&cohort_profile::Profile>,
    identifier: Option<&IdentifierRef>,
) -> Option<(&'static str, String)> {
    let of_kind = |kind: &str| {
        profile.and_then(|p| {
            p.identities
                .iter()
                .find(|i| i.kind.as_str() == kind)
                .map(|i| i.value.clone())
        })
    };
    if let Some(user) = of_kind("user_id") {
        return Some(("userId", user));
    }
    if let Some(anon) = of_kind("anonymous_id") {
        return Some(("anonymousId", anon));
    }
    match identifier.map(|i| (cohort_core::IdKind::parse(&i.kind), i)) {
        Some((cohort_core::IdKind::UserId, i)) => Some(("userId", i.value.clone())),
        Some((cohort_core::IdKind::AnonymousId, i)) => Some(("anonymousId", i.value.clone())),
        _ => None,
    }
}

/// What a customer's rules are evaluated against: the traits, one value per identifier type
/// (`user_id`, `anonymous_id`, `email`, …), `customer_id`, and `id`, GrowthBook's default hash
/// attribute, which is the user ID, else an anonymous ID, else the customer ID.
pub fn profile_attributes(profile: &cohort_profile::Profile) -> Map<String, Value> {
    let mut attributes = profile.traits.clone();
    for identity in &profile.identities {
        attributes
            .entry(identity.kind.as_str().to_string())
            .or_insert_with(|| json!(identity.value));
    }
    attributes.insert("customer_id".into(), json!(profile.customer_id));
    let id = ["user_id", "anonymous_id", "customer_id"]
        .iter()
        .find_map(|k| attributes.get(*k).cloned())
        .unwrap_or(Value::Null);
    attributes.insert("id".into(), id);
    attributes
}

/// Keeps what the engine owns across saves: the phases, the status and the decision, which
/// change only through start and stop; a change of allocation while running opens a phase.
fn keep_lifecycle(
    experiment: &mut Experiment,
    before: Option<&Experiment>,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    let Some(before) = before else {
        if experiment.status != Status::Draft || !experiment.phases.is_empty() {
            return Err(EngineError::Invalid {
                field: "status".into(),
                message: "an experiment is created as a draft; start it to run it".into(),
            });
        }
        return Ok(());
    };
    experiment.status = before.status;
    experiment.phases = before.phases.clone();
    experiment.decision = before.decision.clone();
    let weights = experiment.effective_weights();
    if before.status == Status::Running
        && (weights != before.effective_weights() || experiment.coverage != before.coverage)
    {
        if let Some(last) = experiment.phases.last_mut() {
            last.ended_at = Some(now);
        }
        experiment.phases.push(Phase {
            started_at: now,
            ended_at: None,
            coverage: experiment.coverage,
            weights,
            reason: "allocation changed".into(),
        });
    }
    Ok(())
}

fn to_document<T: Serialize>(value: &T) -> Result<Value, EngineError> {
    serde_json::to_value(value).map_err(|e| EngineError::Internal(e.to_string()))
}

/// The payload from the stored definitions and the current segment memberships, with the
/// experiments it was built from.
fn build_payload(store: &Store) -> Result<(Value, BTreeMap<String, Experiment>), EngineError> {
    let catalogue = catalogue(store)?;
    let holdout = load_holdout(store.definitions())?;
    let flags: Vec<Flag> = catalogue.flags.values().cloned().collect();
    let mut members = BTreeMap::new();
    for (segment, attribute) in segment_groups_needed(&flags, &catalogue.experiments) {
        let Ok(def) = store.segments().get(&segment) else {
            continue;
        };
        let kinds: Vec<&str> = match attribute.as_str() {
            "id" => vec!["user_id", "anonymous_id"],
            other => vec![other],
        };
        let values: Vec<Value> = if attribute == "customer_id" {
            let mut ids = Vec::new();
            let mut after = 0;
            while ids.len() < SEGMENT_GROUP_LIMIT {
                let page = store.segments().members(def.id, after, 10_000)?;
                let Some(last) = page.last() else { break };
                after = last.customer_id;
                ids.extend(page.iter().map(|m| json!(m.customer_id.to_string())));
            }
            ids
        } else {
            store
                .segments()
                .member_identifiers(def.id, &kinds, SEGMENT_GROUP_LIMIT)?
                .into_iter()
                .map(Value::String)
                .collect()
        };
        if values.len() >= SEGMENT_GROUP_LIMIT {
            tracing::warn!(
                segment,
                limit = SEGMENT_GROUP_LIMIT,
                "a segment targeted by a flag is cut at the payload's limit"
            );
        }
        members.insert(segment_group(&segment, &attribute), values);
    }
    let mut payload = features_payload(&PayloadInput {
        flags: &flags,
        experiments: &catalogue.experiments,
        holdout: holdout.as_ref(),
        segment_members: &members,
    });
    payload["dateUpdated"] = json!(cohort_core::message::format_timestamp(Utc::now()));
    Ok((payload, catalogue.experiments))
}
