//! What the journey runner and the send workers read of one customer, from the store: the
//! profile (traits and computed traits, after the message being handled is applied), segment
//! and tag memberships, the zone delivery rules use, the global control group, and, only when
//! a condition asks, the customer's events.

use crate::EngineError;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cohort_core::{CustomerId, Position};
use cohort_experiment::definition::{HOLDOUT_SEED, Holdout};
use cohort_journey::delivery::{DeliveryStore, customer_zone};
use cohort_journey::runner::CustomerFacts;
use cohort_profile::{ComputedTraits, Profile};
use cohort_segment::EventRecord;
use cohort_store::Store;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

/// How many of a customer's latest events conditions with event nodes see.
const EVENTS_READ: usize = 1_000;

/// One live customer as journeys see them; built per message or due entry.
pub(crate) struct StoredCustomer<'a> {
    store: &'a Store,
    pub(crate) id: CustomerId,
    pub(crate) profile: Arc<Profile>,
    pub(crate) segments: BTreeSet<String>,
    pub(crate) zone: Tz,
    in_control: bool,
    events: OnceLock<Vec<EventRecord>>,
    assigner: Option<&'a Assigner>,
    /// `Experiment Viewed` properties of the splits this customer was assigned in, for the
    /// caller to log (see [`StoredCustomer::take_exposures`]).
    exposures: RefCell<Vec<Value>>,
}

/// The running experiments, as journeys' experiment splits assign them: the same rule and
/// hash as GrowthBook's SDKs and `POST /api/v1/flags/evaluate`.
#[derive(Default)]
pub(crate) struct Assigner {
    experiments: BTreeMap<
        String,
        (
            cohort_experiment::definition::Experiment,
            cohort_experiment::evaluate::Experiment,
        ),
    >,
}

impl Assigner {
    pub(crate) fn load(store: &Store, holdout: Option<&Holdout>) -> Result<Assigner, EngineError> {
        let catalogue =
            cohort_experiment::store::load_catalogue(store.definitions(), BTreeSet::new())
                .map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut experiments = BTreeMap::new();
        for (key, experiment) in catalogue.experiments {
            if experiment.status != cohort_experiment::definition::Status::Running {
                continue;
            }
            match cohort_experiment::definition::sdk_experiment(&experiment, holdout) {
                Ok(sdk) => {
                    experiments.insert(key, (experiment, sdk));
                }
                Err(e) => {
                    tracing::error!(experiment = %key, error = %e, "an experiment cannot be assigned")
                }
            }
        }
        Ok(Assigner { experiments })
    }
}

/// What loading a customer needs besides the store.
pub(crate) struct FactsContext<'a> {
    pub(crate) store: &'a Store,
    /// The workspace's zone, for customers who name none.
    pub(crate) workspace_zone: Tz,
    /// The global control group (the experiments' holdout), if one is set.
    pub(crate) holdout: Option<&'a Holdout>,
    /// Running experiments, for experiment splits (none: splits find no variation).
    pub(crate) assigner: Option<&'a Assigner>,
}

impl FactsContext<'_> {
    /// The live customer `id` (or the survivor it was merged into), with its profile, or
    /// `None` when no such customer exists.
    pub(crate) fn load<D: DeliveryStore + ?Sized>(
        &self,
        delivery: &mut D,
        id: CustomerId,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredCustomer<'_>>, EngineError> {
        let store = self.store;
        let Some(profile) = store
            .profiles()
            .profile("customer_id", &id.to_string(), now)?
        else {
            return Ok(None);
        };
        let id: CustomerId = profile.customer_id.parse().map_err(|_| {
            EngineError::Internal(format!(
                "customer ID {:?} is not a number",
                profile.customer_id
            ))
        })?;
        let segments = store
            .segments()
            .of_customer(id)?
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        let context_zone = delivery
            .zone(id)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let traits = Value::Object(profile.traits.clone());
        let zone = customer_zone(&traits, context_zone, self.workspace_zone).tz;
        let in_control = self.holdout.is_some_and(|h| in_holdout(h, &profile));
        Ok(Some(StoredCustomer {
            store,
            id,
            profile,
            segments,
            zone,
            in_control,
            events: OnceLock::new(),
            assigner: self.assigner,
            exposures: RefCell::new(Vec::new()),
        }))
    }
}

/// Whether the experiments' global holdout keeps this customer out, as GrowthBook's SDKs
/// decide it for the same attribute.
fn in_holdout(holdout: &Holdout, profile: &Profile) -> bool {
    let attributes = crate::profile_attributes(profile);
    let Some(value) = attributes.get(&holdout.hash_attribute) else {
        return false;
    };
    let value = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    cohort_experiment::assign::hash(
        HOLDOUT_SEED,
        &value,
        cohort_experiment::assign::HashVersion::V2,
    ) < holdout.fraction
}

impl StoredCustomer<'_> {
    /// The exposures experiment splits recorded for this customer since the last call.
    pub(crate) fn take_exposures(&self) -> Vec<Value> {
        std::mem::take(&mut *self.exposures.borrow_mut())
    }

    /// The data templates read: traits with `id`, computed traits and segments; the caller
    /// adds the triggering event and the coupon.
    pub(crate) fn template_data(&self) -> cohort_journey::template::TemplateData {
        let mut customer = self.profile.traits.clone();
        customer.insert("id".into(), Value::from(self.id));
        let computed = match serde_json::to_value(&self.profile.computed) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        cohort_journey::template::TemplateData {
            customer,
            computed,
            segments: self.segments.iter().cloned().collect(),
            ..Default::default()
        }
    }
}

impl CustomerFacts for StoredCustomer<'_> {
    fn id(&self) -> CustomerId {
        self.id
    }

    fn traits(&self) -> &Map<String, Value> {
        &self.profile.traits
    }

    fn computed(&self) -> &ComputedTraits {
        &self.profile.computed
    }

    fn events(&self) -> &[EventRecord] {
        self.events.get_or_init(|| {
            let before = Position::new(0, i64::MAX);
            match self
                .store
                .profiles()
                .events_before(self.id, "track", before, EVENTS_READ)
            {
                Ok(rows) => rows
                    .into_iter()
                    .map(|row| {
                        let properties = serde_json::from_str::<Value>(&row.body)
                            .ok()
                            .and_then(|body| match body.get("properties") {
                                Some(Value::Object(p)) => Some(p.clone()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        EventRecord {
                            name: row.name,
                            timestamp: row.timestamp,
                            properties,
                        }
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(customer = self.id, error = %e, "a customer's events cannot be read for a journey condition");
                    Vec::new()
                }
            }
        })
    }

    fn in_segment(&self, segment: &str) -> bool {
        self.segments.contains(segment)
    }

    fn time_zone(&self) -> Tz {
        self.zone
    }

    fn in_global_control(&self) -> bool {
        self.in_control
    }

    fn experiment_variation(&self, experiment: &str) -> Option<String> {
        let (definition, sdk) = self.assigner?.experiments.get(experiment)?;
        let mut context = cohort_experiment::evaluate::Context::for_unit(
            crate::profile_attributes(&self.profile),
        );
        let assignment = context.assign(sdk);
        let index = assignment.variation.filter(|_| assignment.in_experiment)?;
        let variation = definition.variations.get(index)?;
        if assignment.hash_used {
            let name = if definition.name.is_empty() {
                &definition.key
            } else {
                &definition.name
            };
            let variation_name = if variation.name.is_empty() {
                &variation.key
            } else {
                &variation.name
            };
            self.exposures.borrow_mut().push(serde_json::json!({
                "experiment_id": definition.key,
                "experiment_name": name,
                "variation_id": variation.key,
                "variation_name": variation_name,
                "phase": definition.phases.len().saturating_sub(1),
            }));
        }
        Some(variation.key.clone())
    }
}
