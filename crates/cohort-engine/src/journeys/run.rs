//! The journey loop, on the `cohort-journeys` thread, trailing real-time segments.
//!
//! Each round it reads, after its cursors (kept in `state.db`'s `meta`), three feeds in
//! order: merges (journey state, delivery facts and coupons move to the survivor before the
//! survivor's next message is judged), processed messages up to the position real-time
//! segments have decided (so memberships are current when conditions ask), and membership
//! changes. Each message records what it says about consent and the customer's zone, redeems
//! the coupon an `Order Completed` names, and goes to the runner as a track call or as the
//! trait changes of an `identify`. Then the entries whose time has come are fired. A cursor
//! moves after its items are handled; after a crash, items handled again are deduplicated by
//! the runner (an entry's cause is its identity, a wait takes an event once).
//!
//! The loop also keeps one send worker per configured channel, plus the coupon and profile
//! workers (module `deliver`), and tells them when it has recorded effects.

use super::deliver::{self, Worker};
use super::facts::{Assigner, FactsContext, StoredCustomer};
use super::{Shared, rules_or_default};
use crate::EngineError;
use chrono::{DateTime, Utc};
use cohort_core::{CustomerId, Position};
use cohort_journey::catalogue::JourneyCatalogue;
use cohort_journey::coupon::CouponStore;
use cohort_journey::definition::lifecycle::Action;
use cohort_journey::delivery::zone::context_timezone;
use cohort_journey::delivery::{DeliveryRules, DeliveryStore, consent_facts};
use cohort_journey::runner::{
    COUPONS, Membership, MembershipChange, PROFILE, ProcessedEvent, Runner, TraitChange,
};
use cohort_journey::state::JourneyStateStore;
use cohort_store::{SegmentKind, SqliteCoupons, SqliteDelivery, SqliteJourneyState, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Items read from one feed per round.
const FEED_BATCH: usize = 500;
/// Due entries fired per call, in one transaction (which holds the state's write lock while
/// their customers are read).
const DUE_BATCH: usize = 250;
/// How long an idle loop sleeps before looking again (it is woken early by new messages).
const IDLE: Duration = Duration::from_millis(100);

/// Changes made by another process on the same data directory (`cohort journey publish`
/// beside a running server) are read this often; this process's own changes at once.
pub(crate) const RELOAD_EVERY: Duration = Duration::from_secs(5);

const SEQ_CURSOR: &str = "journeys_seq";
const CHANGE_CURSOR: &str = "journeys_change_id";
const MERGE_CURSOR: &str = "journeys_merge_id";

/// What customers are judged by: the delivery rules (the workspace's zone among them), the
/// experiments' global control group and the running experiments.
#[derive(Default)]
struct Judging {
    rules: DeliveryRules,
    holdout: Option<cohort_experiment::definition::Holdout>,
    assigner: Assigner,
}

impl Judging {
    fn context<'a>(&'a self, store: &'a Store) -> FactsContext<'a> {
        FactsContext {
            store,
            workspace_zone: self.rules.time_zone,
            holdout: self.holdout.as_ref(),
            assigner: Some(&self.assigner),
        }
    }
}

pub(crate) struct JourneyLoop {
    shared: Arc<Shared>,
    state: SqliteJourneyState,
    delivery: SqliteDelivery,
    coupons: SqliteCoupons,
    runner: Runner,
    judging: Judging,
    /// The catalogue generation the runner and workers were built for, and when.
    generation: u64,
    reloaded: std::time::Instant,
    workers: BTreeMap<String, Worker>,
    zones: super::schedule::MemberZones,
}

impl JourneyLoop {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<JourneyLoop, EngineError> {
        let store = &shared.store;
        Ok(JourneyLoop {
            state: store.journey_state()?,
            delivery: store.delivery()?,
            coupons: store.coupons()?,
            runner: Runner::new(Vec::new()).map_err(internal)?,
            judging: Judging::default(),
            generation: u64::MAX,
            reloaded: std::time::Instant::now(),
            workers: BTreeMap::new(),
            zones: Default::default(),
            shared,
        })
    }

    pub(crate) fn state(&mut self) -> &mut SqliteJourneyState {
        &mut self.state
    }

    pub(crate) fn runner(&self) -> &Runner {
        &self.runner
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn rules(&self) -> &DeliveryRules {
        &self.judging.rules
    }

    pub(crate) fn zones_cache(&mut self) -> &mut super::schedule::MemberZones {
        &mut self.zones
    }

    /// Enters a customer in a journey triggered by API calls or a schedule; 1 when an entry
    /// started.
    pub(crate) fn enter(
        &mut self,
        journey: &str,
        customer: CustomerId,
        request_id: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<usize, EngineError> {
        let store = self.shared.store.clone();
        let context = self.judging.context(&store);
        let Some(facts) = context.load(&mut self.delivery, customer, now)? else {
            return Ok(0);
        };
        let report = self
            .runner
            .enter_by_api(&mut self.state, &facts, journey, request_id, payload, now)
            .map_err(internal)?;
        if report.effects > 0 {
            self.shared.wake_workers();
        }
        log_exposures(&store, self.shared.limits, &facts, now)?;
        Ok(report.entered.len())
    }

    /// Runs rounds until `stop` is set, then stops the workers.
    pub(crate) fn run(mut self) {
        while !self.shared.stopping() {
            let busy = match self.round() {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::error!(error = %e, "the journey loop failed a round; it tries again");
                    false
                }
            };
            if !busy {
                self.shared.wait_for_work(IDLE);
            }
        }
        for (_, worker) in std::mem::take(&mut self.workers) {
            worker.stop();
        }
    }

    /// One round: reload what changed, the three feeds, then due entries. True when it did
    /// something (the next round starts at once).
    fn round(&mut self) -> Result<bool, EngineError> {
        self.reload()?;
        let now = self.shared.clock.now();
        let mut handled = self.merges()?;
        handled += self.messages(now)?;
        handled += self.memberships(now)?;
        handled += self.schedules(now)?;
        let store = self.shared.store.clone();
        let context = self.judging.context(&store);
        let delivery = &mut self.delivery;
        let (runner, shared) = (&self.runner, &self.shared);
        // One commit for the batch: after a crash it is due again, whole.
        let report = self
            .state
            .in_one_transaction(|state| {
                runner.fire_due(
                    state,
                    |customer| match context.load(delivery, customer, now) {
                        Ok(Some(facts)) => Ok(Logged { facts, shared, now }),
                        Ok(None) => Err(EngineError::NotFound(format!("customer {customer}"))),
                        Err(e) => Err(e),
                    },
                    now,
                    DUE_BATCH,
                )
            })
            .map_err(internal)?
            .map_err(internal)?;
        if report.effects > 0 {
            self.shared.wake_workers();
        }
        let messages = self.state.cursor(SEQ_CURSOR).map_err(internal)?;
        let changes = self.state.cursor(CHANGE_CURSOR).map_err(internal)?;
        self.shared
            .message_cursor
            .store(messages, Ordering::Release);
        self.shared.change_cursor.store(changes, Ordering::Release);
        Ok(handled > 0 || report.moves > 0)
    }

    /// Rebuilds the runner and the workers when journeys, templates, channels or rules changed
    /// (and every [`RELOAD_EVERY`], after archiving the finished versions).
    fn reload(&mut self) -> Result<(), EngineError> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.generation && self.reloaded.elapsed() < RELOAD_EVERY {
            return Ok(());
        }
        self.archive_finished()?;
        let store = &self.shared.store;
        let mut catalogue = store.journey_catalogue()?;
        let live = catalogue.live().map_err(internal)?;
        self.runner = Runner::new(live).map_err(internal)?;
        let holdout = cohort_experiment::store::load_holdout(store.definitions())?;
        self.judging = Judging {
            rules: rules_or_default(store.data_dir()),
            assigner: Assigner::load(store, holdout.as_ref())?,
            holdout,
        };
        let channels = catalogue.channels().map_err(internal)?;
        let mut wanted: Vec<String> = channels.iter().map(|c| c.name.clone()).collect();
        wanted.push(COUPONS.to_string());
        wanted.push(PROFILE.to_string());
        self.workers.retain(|name, _| wanted.contains(name));
        for name in wanted {
            if !self.workers.contains_key(&name) {
                let worker = deliver::start(self.shared.clone(), name.clone())?;
                self.workers.insert(name, worker);
            }
        }
        self.generation = generation;
        self.reloaded = std::time::Instant::now();
        Ok(())
    }

    /// Archives the finishing versions that can do nothing more: none of their entries is
    /// active, and the goal window after their last message has passed. The journey's newer
    /// version runs on.
    fn archive_finished(&mut self) -> Result<(), EngineError> {
        let now = self.shared.clock.now();
        let mut done = Vec::new();
        for (key, version, window) in self.runner.finishing() {
            let activity = self
                .state
                .version_activity(key, version)
                .map_err(internal)?;
            let quiet = activity.last_message_at.is_none_or(|at| at + window <= now);
            if activity.active == 0 && quiet {
                done.push((key.to_string(), version));
            }
        }
        if done.is_empty() {
            return Ok(());
        }
        let mut catalogue = self.shared.store.journey_catalogue()?;
        for (key, version) in done {
            catalogue.transition(
                &key,
                version,
                Action::Archive,
                &cohort_journey::definition::Catalogue::default(),
                now,
            )?;
            tracing::info!(journey = %key, version, "a finished journey version was archived");
        }
        // What runs changed: the runner is rebuilt now, and the API's readers see it.
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn merges(&mut self) -> Result<usize, EngineError> {
        let after = self.state.cursor(MERGE_CURSOR).map_err(internal)?;
        let merges = self
            .shared
            .store
            .profiles()
            .merges_after(after, FEED_BATCH)?;
        for &(id, from, into) in &merges {
            self.runner
                .on_merge(&mut self.state, from, into)
                .map_err(internal)?;
            self.delivery
                .reassign_customer(from, into)
                .map_err(internal)?;
            self.coupons
                .reassign_customer(from, into)
                .map_err(internal)?;
            self.state.set_cursor(MERGE_CURSOR, id).map_err(internal)?;
        }
        Ok(merges.len())
    }

    /// Processed messages up to what real-time segments decided.
    fn messages(&mut self, now: DateTime<Utc>) -> Result<usize, EngineError> {
        let store = self.shared.store.clone();
        let decided = store.segments().evaluated()?.offset();
        let after = self.state.cursor(SEQ_CURSOR).map_err(internal)?;
        if after >= decided {
            return Ok(0);
        }
        let events = store
            .profiles()
            .events_after(Position::new(0, after), FEED_BATCH)?;
        let whole_feed = events.len() < FEED_BATCH;
        let (mut handled, mut reached) = (0, after);
        for event in events.into_iter().take_while(|e| e.seq <= decided) {
            if let Some(customer) = event.customer_id {
                self.message(&store, customer, &event, now)?;
            }
            reached = event.seq;
            handled += 1;
        }
        // Positions that stored no event (a message refused by the processor) are passed
        // too, so that the cursor reaches what segments decided.
        if whole_feed {
            reached = reached.max(decided);
        }
        // Once per batch: messages handled again after a crash are deduplicated.
        if reached > after {
            self.state
                .set_cursor(SEQ_CURSOR, reached)
                .map_err(internal)?;
        }
        Ok(handled)
    }

    fn message(
        &mut self,
        store: &Store,
        customer: CustomerId,
        event: &cohort_store::ExportedEvent,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let Ok(body) = serde_json::from_str::<Value>(&event.body) else {
            tracing::warn!(
                seq = event.seq,
                "a stored message is not JSON; journeys skip it"
            );
            return Ok(());
        };
        let Some(live) = store.profiles().live_customer(customer)? else {
            return Ok(());
        };
        for fact in consent_facts(&body, &self.judging.rules.consent, event.timestamp) {
            self.delivery
                .record_consent(live, &fact)
                .map_err(internal)?;
        }
        if let Some(zone) = context_timezone(&body) {
            self.delivery
                .record_zone(live, zone, event.timestamp)
                .map_err(internal)?;
        }
        let properties = body.get("properties").cloned().unwrap_or(Value::Null);
        if event.kind == "track"
            && event.name == "Order Completed"
            && let Some(code) = properties.get("coupon").and_then(Value::as_str)
        {
            let order = properties
                .get("order_id")
                .and_then(Value::as_str)
                .unwrap_or(&event.message_id);
            let redemption = self
                .coupons
                .redeem(code, live, order, event.timestamp)
                .map_err(internal)?;
            tracing::debug!(code, ?redemption, "coupon redemption");
        }
        let reacts = match event.kind.as_str() {
            "track" => self.runner.reacts_to_event(&event.name),
            "identify" => body
                .get("traits")
                .and_then(Value::as_object)
                .is_some_and(|traits| traits.keys().any(|key| self.runner.watches_trait(key))),
            _ => false,
        };
        if !reacts {
            return Ok(());
        }
        let context = self.judging.context(store);
        let Some(facts) = context.load(&mut self.delivery, live, now)? else {
            return Ok(());
        };
        let report = match event.kind.as_str() {
            "track" => {
                let processed =
                    ProcessedEvent::new(&event.message_id, &event.name, event.timestamp)
                        .properties(properties);
                self.runner
                    .on_event(&mut self.state, &facts, &processed, now)
                    .map_err(internal)?
            }
            "identify" => trait_changes(
                &self.runner,
                &mut self.state,
                store,
                &facts,
                event,
                &body,
                now,
            )?,
            _ => return Ok(()),
        };
        if report.effects > 0 {
            self.shared.wake_workers();
        }
        log_exposures(&self.shared.store, self.shared.limits, &facts, now)
    }

    fn memberships(&mut self, now: DateTime<Utc>) -> Result<usize, EngineError> {
        let store = self.shared.store.clone();
        let after = self.state.cursor(CHANGE_CURSOR).map_err(internal)?;
        let changes = store.segments().changes(after, None, None, FEED_BATCH)?;
        let context = self.judging.context(&store);
        for change in &changes {
            let of = match change.kind {
                SegmentKind::Segment => Membership::Segment(change.segment.clone()),
                SegmentKind::Tag => Membership::Tag(change.segment.clone()),
            };
            let entered = change.change == "entered";
            // The customer is loaded only for a change some journey reacts to.
            if self.runner.reacts_to_membership(&of, entered)
                && let Some(facts) = context.load(&mut self.delivery, change.customer_id, now)?
            {
                let membership = MembershipChange {
                    id: format!("membership-{}", change.id),
                    of,
                    entered,
                };
                let report = self
                    .runner
                    .on_membership(&mut self.state, &facts, &membership, now)
                    .map_err(internal)?;
                if report.effects > 0 {
                    self.shared.wake_workers();
                }
                log_exposures(&self.shared.store, self.shared.limits, &facts, now)?;
            }
        }
        // Once per batch: changes handled again after a crash are deduplicated by their id.
        if let Some(last) = changes.last() {
            self.state
                .set_cursor(CHANGE_CURSOR, last.id)
                .map_err(internal)?;
        }
        Ok(changes.len())
    }
}

/// Logs the `Experiment Viewed` of the experiment splits a customer was assigned in.
pub(crate) fn log_exposures(
    store: &Store,
    limits: cohort_collect::Limits,
    facts: &StoredCustomer<'_>,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    let exposures = facts.take_exposures();
    if exposures.is_empty() {
        return Ok(());
    }
    let messages =
        crate::experiments::exposure_messages(Some(&facts.profile), None, exposures, now);
    crate::ingest::ingest_own(store, limits, crate::EXPOSURE_SOURCE, messages, now)?;
    Ok(())
}

/// A due entry's customer, whose experiment-split exposures are logged when the runner is
/// done with it.
struct Logged<'a> {
    facts: StoredCustomer<'a>,
    shared: &'a Shared,
    now: DateTime<Utc>,
}

impl Drop for Logged<'_> {
    fn drop(&mut self) {
        if let Err(e) = log_exposures(
            &self.shared.store,
            self.shared.limits,
            &self.facts,
            self.now,
        ) {
            tracing::error!(error = %e, "experiment-split exposures could not be logged");
        }
    }
}

impl cohort_journey::runner::CustomerFacts for Logged<'_> {
    fn id(&self) -> CustomerId {
        self.facts.id()
    }
    fn traits(&self) -> &serde_json::Map<String, Value> {
        self.facts.traits()
    }
    fn computed(&self) -> &cohort_profile::ComputedTraits {
        self.facts.computed()
    }
    fn events(&self) -> &[cohort_segment::EventRecord] {
        self.facts.events()
    }
    fn in_segment(&self, segment: &str) -> bool {
        self.facts.in_segment(segment)
    }
    fn time_zone(&self) -> chrono_tz::Tz {
        self.facts.time_zone()
    }
    fn in_global_control(&self) -> bool {
        self.facts.in_global_control()
    }
    fn experiment_variation(&self, experiment: &str) -> Option<String> {
        self.facts.experiment_variation(experiment)
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

/// An `identify`'s traits that changed, each with its value before this message (from the
/// customer's previous `identify` that set it).
fn trait_changes(
    runner: &Runner,
    state: &mut SqliteJourneyState,
    store: &Store,
    facts: &StoredCustomer<'_>,
    event: &cohort_store::ExportedEvent,
    body: &Value,
    now: DateTime<Utc>,
) -> Result<cohort_journey::runner::Report, EngineError> {
    let mut report = cohort_journey::runner::Report::default();
    let Some(traits) = body.get("traits").and_then(Value::as_object) else {
        return Ok(report);
    };
    let watched: Vec<&String> = traits
        .keys()
        .filter(|key| runner.watches_trait(key))
        .collect();
    if watched.is_empty() {
        return Ok(report);
    }
    let earlier =
        store
            .profiles()
            .events_before(facts.id, "identify", Position::new(0, event.seq), 100)?;
    for key in watched {
        let old = earlier.iter().find_map(|e| {
            serde_json::from_str::<Value>(&e.body)
                .ok()?
                .get("traits")?
                .get(key.as_str())
                .cloned()
        });
        let change = TraitChange {
            message_id: event.message_id.clone(),
            key: key.clone(),
            old,
            new: traits.get(key.as_str()).cloned(),
        };
        let r = runner
            .on_trait_change(state, facts, &change, now)
            .map_err(internal)?;
        report.effects += r.effects;
    }
    Ok(report)
}
