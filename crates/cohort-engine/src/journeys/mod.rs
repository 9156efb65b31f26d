//! Journeys: the use cases the API and the CLI call (definitions and their lifecycle,
//! templates and previews, channels and dead letters, coupon pools, delivery rules, entering
//! by API, reports, tracked links and inbound replies), and the loops that run them (module
//! `run`: the journey loop; module `deliver`: the effect workers), started with the pipeline
//! in server mode.
//!
//! Changes that alter what runs (a journey published, paused or archived, a template or
//! channel saved, the delivery rules changed) bump a generation that the loops read at the
//! start of each round, so they take effect within a round.
//!
//! The workspace's delivery rules (zone, quiet hours, caps, rate limits, consent
//! interpretation) are a JSON file, `delivery-rules.json`, in the data directory: see
//! `cohort_journey::delivery` for its form.

mod deliver;
mod facts;
mod run;
mod schedule;

use crate::{Engine, EngineError, IdentifierRef, blocking};
use chrono::{DateTime, Utc};
use cohort_core::Clock;
use cohort_journey::catalogue::{
    CatalogueError, HistoryEntry, JourneyCatalogue, JourneyVersion, StoredChannel, TemplateVersion,
};
use cohort_journey::channel::config::ChannelConfig;
use cohort_journey::channel::tracking::{Purpose as LinkPurpose, Tracked};
use cohort_journey::coupon::{AddReport, CodePattern, CouponStore, NewPool, PoolCounts};
use cohort_journey::definition::lifecycle::Action;
use cohort_journey::definition::{Catalogue, ChannelKind, Journey, TagKind};
use cohort_journey::delivery::{ConsentFact, DeliveryRules, DeliveryStore};
use cohort_journey::measure::{Costs, JourneyReport, JourneyStats, ReportOptions};
use cohort_journey::runner::Runner;
use cohort_journey::state::{JourneyStateStore, PendingEffect};
use cohort_journey::template::message::RenderedMessage;
use cohort_store::Store;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use deliver::JOURNEYS_SOURCE;

/// The file of the workspace's delivery rules, in the data directory.
pub const DELIVERY_RULES_FILE: &str = "delivery-rules.json";

/// What the journey loop and its workers share.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: cohort_collect::Limits,
    /// Bumped by every change of what runs.
    pub(crate) generation: Arc<AtomicU64>,
    stop: AtomicBool,
    /// Where the loop's message and membership-change cursors stood after its last round
    /// (−1 before its first), for [`Engine::journey_lag`].
    pub(crate) message_cursor: AtomicI64,
    pub(crate) change_cursor: AtomicI64,
    /// Wakes the loop (new messages) and the workers (new effects) early.
    loop_bell: Bell,
    worker_bell: Bell,
}

#[derive(Default)]
struct Bell {
    rung: Mutex<u64>,
    ring: Condvar,
}

impl Bell {
    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.ring.notify_all();
    }

    /// Waits for a ring after this call, or `timeout`.
    fn wait(&self, timeout: Duration) {
        let rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *rung;
        let _ = self
            .ring
            .wait_timeout_while(rung, timeout, |r| *r == seen)
            .map(|_| ());
    }
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn wait_for_work(&self, timeout: Duration) {
        self.loop_bell.wait(timeout);
    }

    pub(crate) fn wake_workers(&self) {
        self.worker_bell.ring();
    }

    pub(crate) fn wait_for_effects(&self, timeout: Duration) {
        self.worker_bell.wait(timeout);
    }
}

/// The running journey loop (and, through it, the workers); dropping it stops them.
pub(crate) struct JourneyThreads {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl JourneyThreads {
    pub(crate) fn start(
        store: &Store,
        clock: Arc<dyn Clock>,
        limits: cohort_collect::Limits,
        generation: Arc<AtomicU64>,
    ) -> Result<JourneyThreads, EngineError> {
        let shared = Arc::new(Shared {
            store: store.clone(),
            clock,
            limits,
            generation,
            stop: AtomicBool::new(false),
            message_cursor: AtomicI64::new(-1),
            change_cursor: AtomicI64::new(-1),
            loop_bell: Bell::default(),
            worker_bell: Bell::default(),
        });
        let journey_loop = run::JourneyLoop::new(shared.clone())?;
        let thread = std::thread::Builder::new()
            .name("cohort-journeys".into())
            .spawn(move || {
                cohort_core::priority::yield_to_requests();
                journey_loop.run();
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the journey loop: {e}")))?;
        Ok(JourneyThreads {
            shared,
            thread: Some(thread),
        })
    }

    /// Wakes the loop: messages were processed.
    pub(crate) fn wake(&self) {
        self.shared.loop_bell.ring();
    }
}

impl Drop for JourneyThreads {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.loop_bell.ring();
        self.shared.worker_bell.ring();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the journey loop panicked");
        }
    }
}

/// The workspace's delivery rules, or the defaults (UTC, no caps, no quiet hours) when none
/// were saved. Rules that no longer read are logged and replaced by the defaults.
pub(crate) fn rules_or_default(data_dir: &Path) -> DeliveryRules {
    match std::fs::read_to_string(data_dir.join(DELIVERY_RULES_FILE)) {
        Ok(text) => DeliveryRules::from_json(&text).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the saved delivery rules do not read; using the defaults");
            DeliveryRules::default()
        }),
        Err(_) => DeliveryRules::default(),
    }
}

impl From<CatalogueError> for EngineError {
    fn from(e: CatalogueError) -> Self {
        match e {
            CatalogueError::Invalid {
                key,
                version,
                invalid,
            } => EngineError::Invalid {
                field: invalid.field,
                message: format!(
                    "{} (journey {key:?} version {version} is not published)",
                    invalid.message
                ),
            },
            CatalogueError::InvalidTemplate {
                key,
                field,
                message,
            } => EngineError::Invalid {
                field,
                message: format!("{message} (template {key:?})"),
            },
            CatalogueError::InvalidChannel { name, error } => EngineError::Invalid {
                field: error.field,
                message: format!("{} (channel {name:?})", error.message),
            },
            CatalogueError::BadKey { .. } | CatalogueError::TemplateKind { .. } => {
                EngineError::Invalid {
                    field: "key".into(),
                    message: e.to_string(),
                }
            }
            CatalogueError::UnknownVersion { .. } => EngineError::NotFound(e.to_string()),
            CatalogueError::Transition { .. } | CatalogueError::ChannelInUse { .. } => {
                EngineError::Conflict(e.to_string())
            }
            CatalogueError::Storage(_) | CatalogueError::Unreadable(_) => {
                EngineError::Internal(e.to_string())
            }
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A definition as JSON or YAML text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionFormat {
    Json,
    Yaml,
}

fn parse_definition(text: &str, format: DefinitionFormat) -> Result<Journey, EngineError> {
    let parsed = match format {
        DefinitionFormat::Json => cohort_journey::definition::parse_json(text),
        DefinitionFormat::Yaml => cohort_journey::definition::parse_yaml(text),
    };
    parsed.map_err(|e| EngineError::Invalid {
        field: e.field,
        message: e.message,
    })
}

/// A journey version as the API and the CLI show it.
pub fn version_json(v: &JourneyVersion) -> Value {
    json!({
        "key": v.key,
        "version": v.version,
        "status": v.status(),
        "definition": v.journey,
        "templates": v.templates,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
    })
}

/// A template version as the API and the CLI show it.
pub fn template_json(t: &TemplateVersion) -> Value {
    json!({
        "key": t.key,
        "version": t.version,
        "kind": t.kind.as_str(),
        "source": t.source,
        "saved_at": t.saved_at,
    })
}

/// A channel with its secrets redacted.
pub fn channel_json(c: &StoredChannel) -> Value {
    let config = ChannelConfig::from_json(&c.config.to_string())
        .ok()
        .and_then(|config| serde_json::to_value(config.redacted()).ok())
        .unwrap_or(Value::Null);
    json!({
        "name": c.name,
        "kind": c.kind.as_str(),
        "config": config,
        "saved_at": c.saved_at,
    })
}

/// A dead-lettered effect, as operators see it.
pub fn dead_letter_json(d: &PendingEffect) -> Value {
    json!({
        "key": d.effect.key,
        "channel": d.effect.channel,
        "attempts": d.attempts,
        "reason": d.last_error,
        "payload": d.effect.payload,
    })
}

/// Journey use cases.
impl Engine {
    /// Tells the loops that what runs changed.
    fn journeys_changed(&self) {
        self.0.journey_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// How many processed messages and membership changes the journey loop has yet to take
    /// (0 when journeys do not run in this process). Together with the inbox and segment
    /// lags it tells when everything sent so far has reached the journeys.
    pub fn journey_lag(&self) -> Result<u64, EngineError> {
        let shared = match &self
            .0
            .pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .journeys
        {
            Some(threads) => threads.shared.clone(),
            None => return Ok(0),
        };
        let store = &self.0.store;
        let messages = shared.message_cursor.load(Ordering::Acquire);
        let changes = shared.change_cursor.load(Ordering::Acquire);
        if messages < 0 || changes < 0 {
            return Ok(1);
        }
        let decided = store.segments().evaluated()?.offset();
        let unread_changes = store.segments().changes(changes, None, None, 1_000)?.len();
        Ok((decided - messages).max(0) as u64 + unread_changes as u64)
    }

    /// Wakes the journey loop after messages were processed.
    pub(crate) fn wake_journeys(&self) {
        if let Some(threads) = self
            .0
            .pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .journeys
            .as_ref()
        {
            threads.wake();
        }
    }

    /// What a journey is checked against besides templates and channels: segments, tags
    /// (rule tags, and manual ones the journey names that no rule tag has), experiments and
    /// coupon pools.
    fn existing(store: &Store, journey: Option<&Journey>) -> Result<Catalogue, EngineError> {
        let mut catalogue = Catalogue::default();
        for (segment, _) in store.segments().list(None)? {
            match segment.kind {
                cohort_store::SegmentKind::Segment => {
                    catalogue.segments.insert(segment.name);
                }
                cohort_store::SegmentKind::Tag => {
                    catalogue.tags.insert(segment.name, TagKind::Rule);
                }
            }
        }
        if let Some(journey) = journey {
            for step in &journey.steps {
                if let cohort_journey::definition::Step::Tag(tag) = step {
                    catalogue
                        .tags
                        .entry(tag.tag.clone())
                        .or_insert(TagKind::Manual);
                }
            }
        }
        let experiments = cohort_experiment::store::load_catalogue(
            store.definitions(),
            catalogue.segments.clone(),
        )
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        for (key, experiment) in experiments.experiments {
            catalogue.experiments.insert(
                key,
                experiment
                    .variations
                    .iter()
                    .map(|v| v.key.clone())
                    .collect(),
            );
        }
        catalogue.coupon_pools = store
            .coupons()?
            .pool_keys()
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .into_iter()
            .collect();
        Ok(catalogue)
    }

    /// Reads a definition, checking its shape but not what it names.
    pub fn validate_syntax(
        &self,
        text: &str,
        format: DefinitionFormat,
    ) -> Result<Journey, EngineError> {
        parse_definition(text, format)
    }

    /// Reads and checks a definition against everything that exists, without saving it.
    pub async fn validate_journey(
        &self,
        text: String,
        format: DefinitionFormat,
    ) -> Result<Journey, EngineError> {
        let journey = parse_definition(&text, format)?;
        let store = self.store().clone();
        blocking(move || {
            let mut existing = Self::existing(&store, Some(&journey))?;
            let mut catalogue = store.journey_catalogue()?;
            for channel in catalogue.channels()? {
                existing.channels.insert(channel.name, channel.kind);
            }
            for template in catalogue.templates()? {
                existing.templates.insert(template.key, template.kind);
            }
            existing.check(&journey).map_err(|e| EngineError::Invalid {
                field: e.field,
                message: e.message,
            })?;
            Ok(journey)
        })
        .await
    }

    /// Saves a definition as a draft (see `JourneyCatalogue::save_draft`).
    pub async fn save_journey(
        &self,
        text: String,
        format: DefinitionFormat,
    ) -> Result<JourneyVersion, EngineError> {
        let journey = parse_definition(&text, format)?;
        let store = self.store().clone();
        let now = self.now();
        blocking(move || Ok(store.journey_catalogue()?.save_draft(&journey, now)?)).await
    }

    /// Publishes, pauses, resumes or archives a version (the latest when `version` is `None`).
    /// Publishing checks the version against everything that exists, in one commit. Archiving
    /// the last running version ends its customers' entries (`archived`).
    pub async fn journey_action(
        &self,
        key: String,
        version: Option<u32>,
        action: Action,
    ) -> Result<JourneyVersion, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        let changed = blocking(move || {
            let mut catalogue = store.journey_catalogue()?;
            let target = match version {
                Some(v) => catalogue.get(&key, v)?,
                None => catalogue.latest(&key)?,
            }
            .ok_or_else(|| EngineError::NotFound(format!("no journey {key:?}")))?;
            let existing = Self::existing(&store, Some(&target.journey))?;
            let changed = catalogue.transition(&key, target.version, action, &existing, now)?;
            if action == Action::Archive && !catalogue.live()?.iter().any(|p| p.journey.key == key)
            {
                store
                    .journey_state()?
                    .exit_journey(&key, "archived")
                    .map_err(run::internal)?;
            }
            Ok(changed)
        })
        .await?;
        self.journeys_changed();
        Ok(changed)
    }

    /// The latest version of every journey.
    pub async fn journeys(&self) -> Result<Vec<JourneyVersion>, EngineError> {
        let store = self.store().clone();
        blocking(move || Ok(store.journey_catalogue()?.list()?)).await
    }

    /// A journey's versions, oldest first, and its history.
    pub async fn journey(
        &self,
        key: String,
    ) -> Result<(Vec<JourneyVersion>, Vec<HistoryEntry>), EngineError> {
        let store = self.store().clone();
        blocking(move || {
            let mut catalogue = store.journey_catalogue()?;
            let Some(latest) = catalogue.latest(&key)? else {
                return Err(EngineError::NotFound(format!("no journey {key:?}")));
            };
            let mut versions = Vec::new();
            for v in 1..=latest.version {
                if let Some(version) = catalogue.get(&key, v)? {
                    versions.push(version);
                }
            }
            Ok((versions, catalogue.history(&key)?))
        })
        .await
    }

    /// Enters the customer an identifier leads to in a journey triggered by API calls;
    /// `request_id` makes a repeated call enter once. Returns whether an entry started.
    pub async fn enter_journey(
        &self,
        key: String,
        identifier: IdentifierRef,
        payload: Value,
        request_id: String,
    ) -> Result<bool, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        let limits = *self.limits();
        let entered = blocking(move || {
            let rules = rules_or_default(store.data_dir());
            let holdout = cohort_experiment::store::load_holdout(store.definitions())
                .map_err(run::internal)?;
            let runner = Runner::new(store.journey_catalogue()?.live()?).map_err(run::internal)?;
            let mut delivery = store.delivery()?;
            let customer = store
                .profiles()
                .find_customer(&identifier.kind, &identifier.value)?
                .ok_or_else(|| {
                    EngineError::NotFound(format!(
                        "no customer has {} {:?}",
                        identifier.kind, identifier.value
                    ))
                })?;
            let assigner = facts::Assigner::load(&store, holdout.as_ref())?;
            let context = facts::FactsContext {
                store: &store,
                workspace_zone: rules.time_zone,
                holdout: holdout.as_ref(),
                assigner: Some(&assigner),
            };
            let facts = context
                .load(&mut delivery, customer, now)?
                .ok_or_else(|| EngineError::NotFound(format!("no customer {customer}")))?;
            let mut state = store.journey_state()?;
            let report = runner
                .enter_by_api(&mut state, &facts, &key, &request_id, payload, now)
                .map_err(|e| match e {
                    cohort_journey::runner::RunError::State(e) => run::internal(e),
                    other => EngineError::bad_request("journey_entry", other.to_string()),
                })?;
            run::log_exposures(&store, limits, &facts, now)?;
            Ok(!report.entered.is_empty())
        })
        .await?;
        self.wake_journeys();
        Ok(entered)
    }

    /// What a journey (or every journey) caused, priced with `costs`.
    pub async fn journey_report(
        &self,
        key: Option<String>,
        costs: Costs,
        options: ReportOptions,
    ) -> Result<JourneyReport, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        blocking(move || {
            let mut counts = store
                .journey_state()?
                .journey_stats(key.as_deref(), now)
                .map_err(run::internal)?;
            // Every version ever published is reported, with zeros before its first entry.
            let versions = store.journey_catalogue()?.list()?;
            if let Some(key) = &key
                && !versions.iter().any(|v| &v.key == key)
            {
                return Err(EngineError::NotFound(format!("no journey {key:?}")));
            }
            for v in versions.iter().filter(|v| {
                v.state != cohort_journey::definition::lifecycle::State::Draft
                    && key.as_ref().is_none_or(|k| &v.key == k)
            }) {
                let counted = counts
                    .entries
                    .iter()
                    .any(|e| e.journey == v.key && e.version == v.version);
                if !counted {
                    counts.entries.push(cohort_journey::measure::EntryCounts {
                        journey: v.key.clone(),
                        version: v.version,
                        held_out: false,
                        entered: 0,
                        active: 0,
                        converted: 0,
                        revenue: 0.0,
                        revenue_squares: 0.0,
                    });
                }
            }
            cohort_journey::measure::report(&counts, &costs, &options).map_err(|e| {
                EngineError::Invalid {
                    field: "costs".into(),
                    message: e.to_string(),
                }
            })
        })
        .await
    }

    /// Saves a new version of a message template.
    pub async fn save_template(
        &self,
        key: String,
        kind: ChannelKind,
        source: Value,
    ) -> Result<TemplateVersion, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        let saved = blocking(move || {
            Ok(store
                .journey_catalogue()?
                .save_template(&key, kind, &source, now)?)
        })
        .await?;
        self.journeys_changed();
        Ok(saved)
    }

    pub async fn templates(&self) -> Result<Vec<TemplateVersion>, EngineError> {
        let store = self.store().clone();
        blocking(move || Ok(store.journey_catalogue()?.templates()?)).await
    }

    pub async fn template(&self, key: String) -> Result<TemplateVersion, EngineError> {
        let store = self.store().clone();
        blocking(move || {
            store
                .journey_catalogue()?
                .template(&key)?
                .ok_or_else(|| EngineError::NotFound(format!("no template {key:?}")))
        })
        .await
    }

    /// Renders a template's latest version for a customer (or the empty profile when
    /// `identifier` is `None`) with `event` as the triggering event's properties. A template
    /// that cannot render answers 400 with the part and the reason.
    pub async fn preview_template(
        &self,
        key: String,
        identifier: Option<IdentifierRef>,
        event: Value,
    ) -> Result<Value, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        blocking(move || {
            let template = store
                .journey_catalogue()?
                .template(&key)?
                .ok_or_else(|| EngineError::NotFound(format!("no template {key:?}")))?;
            let compiled = deliver::compile_stored(&template.source, template.kind)
                .map_err(|e| invalid("source", e))?;
            let rules = rules_or_default(store.data_dir());
            let (mut data, zone) = match identifier {
                Some(id) => {
                    let customer = store
                        .profiles()
                        .find_customer(&id.kind, &id.value)?
                        .ok_or_else(|| {
                            EngineError::NotFound(format!(
                                "no customer has {} {:?}",
                                id.kind, id.value
                            ))
                        })?;
                    let context = facts::FactsContext {
                        store: &store,
                        workspace_zone: rules.time_zone,
                        holdout: None,
                        assigner: None,
                    };
                    let facts = context
                        .load(&mut store.delivery()?, customer, now)?
                        .ok_or_else(|| EngineError::NotFound(format!("no customer {customer}")))?;
                    (facts.template_data(), facts.zone)
                }
                None => (Default::default(), rules.time_zone),
            };
            if let Value::Object(event) = event {
                data.event = event;
            }
            let rendered = compiled
                .render(&data.to_value(), zone, Some(now))
                .map_err(|e| invalid(&e.part, e.to_string()))?;
            Ok(match rendered {
                RenderedMessage::Aborted { part, reason } => {
                    json!({"aborted": true, "part": part, "reason": reason})
                }
                RenderedMessage::Message(parts) => {
                    json!({"aborted": false, "message": parts_json(&parts)})
                }
            })
        })
        .await
    }

    /// Saves a channel's configuration (checked; refused while live journeys use it under
    /// another kind).
    pub async fn save_channel(
        &self,
        name: String,
        config: Value,
    ) -> Result<StoredChannel, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        let saved = blocking(move || {
            Ok(store
                .journey_catalogue()?
                .save_channel(&name, &config, now)?)
        })
        .await?;
        self.journeys_changed();
        Ok(saved)
    }

    pub async fn channels(&self) -> Result<Vec<StoredChannel>, EngineError> {
        let store = self.store().clone();
        blocking(move || Ok(store.journey_catalogue()?.channels()?)).await
    }

    pub async fn delete_channel(&self, name: String) -> Result<(), EngineError> {
        let store = self.store().clone();
        let deleted =
            blocking(move || Ok(store.journey_catalogue()?.delete_channel(&name)?)).await?;
        if !deleted {
            return Err(EngineError::NotFound("no such channel".into()));
        }
        self.journeys_changed();
        Ok(())
    }

    /// A channel's dead letters, oldest first.
    pub async fn dead_letters(
        &self,
        channel: String,
        limit: usize,
    ) -> Result<Vec<PendingEffect>, EngineError> {
        let store = self.store().clone();
        blocking(move || {
            store
                .journey_state()?
                .dead_letters(&channel, limit)
                .map_err(run::internal)
        })
        .await
    }

    /// Puts a dead letter back in its channel's queue.
    pub async fn replay_dead_letter(&self, key: String) -> Result<(), EngineError> {
        let store = self.store().clone();
        let replayed = blocking(move || {
            store
                .journey_state()?
                .replay_effect(&key)
                .map_err(run::internal)
        })
        .await?;
        if !replayed {
            return Err(EngineError::NotFound("no dead letter has that key".into()));
        }
        if let Some(threads) = &self
            .0
            .pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .journeys
        {
            threads.shared.wake_workers();
        }
        Ok(())
    }

    /// Creates a coupon pool.
    pub async fn create_coupon_pool(&self, pool: NewPool) -> Result<(), EngineError> {
        let store = self.store().clone();
        blocking(move || {
            store.coupons()?.create_pool(&pool).map_err(|e| match e {
                cohort_journey::coupon::CouponError::PoolExists(_) => {
                    EngineError::Conflict(e.to_string())
                }
                other => invalid("key", other.to_string()),
            })
        })
        .await?;
        self.journeys_changed();
        Ok(())
    }

    /// Adds codes read from CSV (one per row, the first column; a `code` header is skipped).
    pub async fn import_coupon_codes(
        &self,
        pool: String,
        csv: Vec<u8>,
    ) -> Result<AddReport, EngineError> {
        let store = self.store().clone();
        blocking(move || {
            let codes = cohort_journey::coupon::parse_csv(&csv)
                .map_err(|e| invalid("codes", e.to_string()))?;
            store
                .coupons()?
                .add_codes(&pool, &codes)
                .map_err(coupon_error)
        })
        .await
    }

    /// Generates `count` new codes from `pattern` (`#` a digit, `?` a letter).
    pub async fn generate_coupon_codes(
        &self,
        pool: String,
        pattern: String,
        count: u64,
    ) -> Result<AddReport, EngineError> {
        let store = self.store().clone();
        blocking(move || {
            let pattern =
                CodePattern::parse(&pattern).map_err(|e| invalid("pattern", e.to_string()))?;
            store
                .coupons()?
                .generate_codes(&pool, &pattern, count, &mut rand::rng())
                .map_err(coupon_error)
        })
        .await
    }

    pub async fn coupon_counts(&self, pool: String) -> Result<PoolCounts, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        blocking(move || store.coupons()?.counts(&pool, now).map_err(coupon_error)).await
    }

    /// The workspace's delivery rules.
    pub fn delivery_rules(&self) -> DeliveryRules {
        rules_or_default(self.store().data_dir())
    }

    /// Replaces the delivery rules (checked; refused whole with the field's path).
    pub async fn set_delivery_rules(&self, text: String) -> Result<DeliveryRules, EngineError> {
        let rules = DeliveryRules::from_json(&text).map_err(|e| invalid(&e.path, e.to_string()))?;
        let pretty = serde_json::to_string_pretty(&rules).map_err(run::internal)?;
        let path = self.store().data_dir().join(DELIVERY_RULES_FILE);
        blocking(move || {
            let temp = path.with_extension("json.tmp");
            std::fs::write(&temp, pretty).map_err(run::internal)?;
            std::fs::rename(&temp, &path).map_err(run::internal)
        })
        .await?;
        self.journeys_changed();
        Ok(rules)
    }

    /// A tracked link was followed: verifies its token against the SMTP channels' link
    /// secrets, records the customer's `Email Opened`, `Email Link Clicked` or `Unsubscribed`
    /// (and, for an unsubscribe, the opt-out), and returns what the link carried.
    pub async fn follow_link(
        &self,
        token: String,
        purpose: LinkPurpose,
    ) -> Result<Tracked, EngineError> {
        let store = self.store().clone();
        let now = self.now();
        let limits = *self.limits();
        blocking(move || {
            let mut tracked = None;
            for channel in store.journey_catalogue()?.channels()? {
                if let Ok(ChannelConfig::Smtp(smtp)) = ChannelConfig::from_json(&channel.config.to_string())
                    && let Ok(signer) = smtp.link_signer()
                    && let Ok(t) = signer.verify(&token)
                {
                    tracked = Some((t, channel.name));
                    break;
                }
            }
            let (tracked, channel) = tracked.ok_or_else(|| EngineError::NotFound("this link is not valid".into()))?;
            let tracked = tracked
                .expect(purpose)
                .map_err(|e| EngineError::NotFound(e.to_string()))?;
            if purpose == LinkPurpose::Unsubscribe {
                let fact = ConsentFact::channel_unsubscribe(
                    ChannelKind::Email,
                    format!("{channel}: one-click unsubscribe"),
                    now,
                );
                store.delivery()?.record_consent(tracked.customer, &fact).map_err(run::internal)?;
            }
            if let Some(profile) = store.profiles().profile("customer_id", &tracked.customer.to_string(), now)?
                && let Some((field, value)) = crate::experiments::message_identity(Some(&profile), None)
            {
                let name = purpose.event_name();
                let mut message = json!({
                    "type": "track",
                    "event": name,
                    "messageId": format!("{name}:{}:{}", tracked.key, now.timestamp_micros()),
                    "timestamp": cohort_core::message::format_timestamp(now),
                    "properties": {"channel": channel, "message_key": tracked.key, "url": tracked.target},
                });
                message[field] = json!(value);
                crate::ingest::ingest_own(&store, limits, JOURNEYS_SOURCE, vec![message], now)?;
            }
            Ok(tracked)
        })
        .await
    }

    /// An SMS reply from `from` arrived on `channel`: an opt-out keyword (STOP, 退订 …)
    /// unsubscribes every customer with that phone number from SMS. Returns whether it was
    /// an opt-out.
    pub async fn inbound_sms(
        &self,
        channel: String,
        from: String,
        body: String,
    ) -> Result<bool, EngineError> {
        if !cohort_journey::sms::is_opt_out(&body) {
            return Ok(false);
        }
        let store = self.store().clone();
        let now = self.now();
        let limits = *self.limits();
        blocking(move || {
            let customers = store.profiles().customers_with_trait("phone", from.trim())?;
            let fact = ConsentFact::channel_unsubscribe(
                ChannelKind::Sms,
                format!("{channel}: reply {:?}", body.trim()),
                now,
            );
            let mut delivery = store.delivery()?;
            let mut events = Vec::new();
            for customer in customers {
                delivery.record_consent(customer, &fact).map_err(run::internal)?;
                if let Some(profile) = store.profiles().profile("customer_id", &customer.to_string(), now)?
                    && let Some((field, value)) = crate::experiments::message_identity(Some(&profile), None)
                {
                    let mut message = json!({
                        "type": "track",
                        "event": "Unsubscribed",
                        "messageId": format!("sms-reply:{channel}:{from}:{}", now.timestamp_micros()),
                        "timestamp": cohort_core::message::format_timestamp(now),
                        "properties": {"channel": channel, "channel_kind": "sms", "reply": body.trim()},
                    });
                    message[field] = json!(value);
                    events.push(message);
                }
            }
            if !events.is_empty() {
                crate::ingest::ingest_own(&store, limits, JOURNEYS_SOURCE, events, now)?;
            }
            Ok(true)
        })
        .await
    }

    /// An SMS reply Twilio posted to `/hooks/sms/{channel}`: taken as [`Engine::inbound_sms`]
    /// takes one, once `signature` (the `X-Twilio-Signature` header) is Twilio's signature of
    /// the channel's `inbound_url` and the form `params`, made with its auth token.
    pub async fn inbound_sms_from_twilio(
        &self,
        channel: String,
        signature: Option<String>,
        params: Vec<(String, String)>,
    ) -> Result<bool, EngineError> {
        let store = self.store().clone();
        let name = channel.clone();
        let stored = blocking(move || {
            let mut catalogue = store.journey_catalogue()?;
            Ok(catalogue.channel(&name)?)
        })
        .await?
        .ok_or_else(|| EngineError::NotFound(format!("there is no channel {channel:?}")))?;
        let config = ChannelConfig::from_json(&stored.config.to_string())
            .map_err(|e| EngineError::Internal(format!("channel {channel:?}: {e}")))?;
        let ChannelConfig::Twilio(twilio) = config else {
            return Err(EngineError::NotFound(format!(
                "channel {channel:?} is not a Twilio channel: only Twilio posts signed replies here"
            )));
        };
        let Some(url) = twilio.inbound_url else {
            return Err(EngineError::Conflict(format!(
                "channel {channel:?} has no inbound_url: set it to the URL Twilio posts replies \
                 to, which its signatures cover"
            )));
        };
        let signed = signature.is_some_and(|signature| {
            cohort_journey::channel::valid_twilio_signature(
                &twilio.auth_token,
                &url,
                &params,
                &signature,
            )
        });
        if !signed {
            return Err(EngineError::Unauthorized(
                "X-Twilio-Signature is missing or is not Twilio's signature of this request".into(),
            ));
        }
        let field = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let (Some(from), Some(body)) = (field("From"), field("Body")) else {
            return Ok(false);
        };
        self.inbound_sms(channel, from, body).await
    }

    /// Whether this engine runs on a test clock.
    pub fn is_test_clock(&self) -> bool {
        self.0.test_clock.is_some()
    }

    /// Moves a test clock ahead (`cohort serve --test-clock`); refused on a real clock.
    pub fn advance_clock(&self, by: chrono::Duration) -> Result<DateTime<Utc>, EngineError> {
        let Some(clock) = &self.0.test_clock else {
            return Err(EngineError::Conflict(
                "this server runs on the real clock; start it with --test-clock to move time"
                    .into(),
            ));
        };
        let now = clock.advance(by);
        save_test_clock(self.0.store.data_dir(), clock.offset())?;
        self.wake_journeys();
        Ok(now)
    }
}

/// Where a test clock's offset is kept, so that a server killed and started again on the same
/// data directory goes on from the time the test had moved to (time never goes back).
const TEST_CLOCK_FILE: &str = "test-clock-offset";

pub(crate) fn saved_test_clock(data_dir: &Path) -> cohort_core::ShiftedClock {
    let offset = std::fs::read_to_string(data_dir.join(TEST_CLOCK_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .unwrap_or(0);
    cohort_core::ShiftedClock::ahead_by(chrono::Duration::microseconds(offset))
}

fn save_test_clock(data_dir: &Path, offset: chrono::Duration) -> Result<(), EngineError> {
    let micros = offset.num_microseconds().unwrap_or(i64::MAX);
    let partial = data_dir.join(format!("{TEST_CLOCK_FILE}.partial"));
    std::fs::write(&partial, micros.to_string())
        .and_then(|()| std::fs::rename(&partial, data_dir.join(TEST_CLOCK_FILE)))
        .map_err(|e| EngineError::Internal(format!("cannot keep the test clock's offset: {e}")))
}

fn coupon_error(e: cohort_journey::coupon::CouponError) -> EngineError {
    match e {
        cohort_journey::coupon::CouponError::UnknownPool(_) => EngineError::NotFound(e.to_string()),
        cohort_journey::coupon::CouponError::Storage(_) => EngineError::Internal(e.to_string()),
        other => invalid("codes", other.to_string()),
    }
}

fn parts_json(parts: &cohort_journey::template::message::MessageParts) -> Value {
    use cohort_journey::template::message::MessageParts;
    match parts {
        MessageParts::Email {
            subject,
            text,
            html,
        } => {
            json!({"kind": "email", "subject": subject, "text": text, "html": html})
        }
        MessageParts::Sms {
            text,
            parts,
            truncated,
            template_code,
            params,
        } => json!({"kind": "sms", "text": text, "parts": parts, "truncated": truncated,
                    "template_code": template_code, "params": params}),
        MessageParts::Push { title, body, data } => {
            json!({"kind": "push", "title": title, "body": body, "data": data})
        }
        MessageParts::Webhook { body } => json!({"kind": "webhook", "body": body}),
    }
}
