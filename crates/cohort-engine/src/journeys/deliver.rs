//! The workers that carry out what journeys recorded: one thread per configured channel (so a
//! provider that is down or slow holds up only its own queue), one for coupon issues and one
//! for trait and tag changes. Each takes its effects from the state store's outbox.
//!
//! A send is decided, rendered and sent at the time its worker takes it: delivery rules in the
//! customer's zone (consent, quiet hours, caps, the channel's rate limit) first, then the
//! template version the journey version pinned, then the provider. What became of it is the
//! effect's status (`sent`, `skip:quiet_hours`, `failed`, …), and, for what the customer
//! should see in their timeline, a delivery event (`Message Sent`, `Message Failed`,
//! `Unsubscribed`) ingested under Cohort's `journeys` source. A send that fails in a way that
//! may pass is retried on the channel's schedule and dead-lettered after its last attempt; a
//! message that cannot render is dead-lettered at once with the part and the reason, never
//! sent broken.
//!
//! Sends are at least once with a stable key: one killed between the provider's answer and
//! the outbox's commit is sent again with the same `Idempotency-Key` (or `Message-ID`), which
//! is what makes it once at a sink that honours the key.

use super::Shared;
use super::facts::{FactsContext, StoredCustomer};
use super::run::internal;
use crate::EngineError;
use chrono::{DateTime, Utc};
use cohort_core::CustomerId;
use cohort_journey::catalogue::JourneyCatalogue;
use cohort_journey::channel::config::ChannelConfig;
use cohort_journey::channel::retry::{self, RetryPolicy};
use cohort_journey::channel::{
    EmailMessage, Message, Outcome, Outgoing, PushMessage, Sender, SmsMessage,
};
use cohort_journey::coupon::CouponStore;
use cohort_journey::definition::{ChannelKind, QuietHours};
use cohort_journey::delivery::{
    self, ConsentFact, Decision, DeliveryRules, DeliveryStore, RateLimiter, SendRecord, SendRequest,
};
use cohort_journey::runner::{COUPONS, PROFILE};
use cohort_journey::state::{JourneyStateStore, PendingEffect, StateError};
use cohort_journey::template::message::{
    CompiledMessage, MessageParts, MessageTemplate, RenderedMessage,
};
use cohort_store::{SqliteCoupons, SqliteDelivery, SqliteJourneyState};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Effects taken from the outbox at once; a channel's sends of one batch go out concurrently.
const BATCH: usize = 64;
/// How long an idle worker sleeps before looking again (it is woken early by new effects).
const IDLE: Duration = Duration::from_millis(250);
/// The source delivery events are ingested under.
pub const JOURNEYS_SOURCE: &str = "journeys";

/// A running worker; stopping it (or dropping it) waits for the batch in hand.
pub(crate) struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub(crate) fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("a journey worker panicked");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts the worker of effect channel `channel` (a channel's name, [`COUPONS`] or [`PROFILE`]).
pub(crate) fn start(shared: Arc<Shared>, channel: String) -> Result<Worker, EngineError> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let store = &shared.store;
    let mut worker = Effects {
        state: store.journey_state()?,
        delivery: store.delivery()?,
        coupons: store.coupons()?,
        shared: shared.clone(),
        channel: channel.clone(),
        generation: u64::MAX,
        reloaded: std::time::Instant::now(),
        channel_saved: None,
        sender: None,
        rules: DeliveryRules::default(),
        limiter: RateLimiter::default(),
        retry: RetryPolicy::default(),
        templates: HashMap::new(),
        pinned: HashMap::new(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("cohort-send-{channel}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "a journey worker cannot start its runtime");
                    return;
                }
            };
            // Senders are built inside the runtime: the SMTP pool spawns its idle-connection
            // reaper on the runtime it is created in.
            let _entered = runtime.enter();
            while !stopped.load(Ordering::Acquire) && !worker.shared.stopping() {
                match worker.round(&runtime) {
                    Ok(0) => worker.shared.wait_for_effects(IDLE),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(channel = %worker.channel, error = %e, "a journey worker failed a round; it tries again");
                        worker.shared.wait_for_effects(IDLE);
                    }
                }
            }
        })
        .map_err(|e| EngineError::Internal(format!("cannot start a journey worker: {e}")))?;
    Ok(Worker {
        stop,
        thread: Some(thread),
    })
}

struct Effects {
    shared: Arc<Shared>,
    channel: String,
    state: SqliteJourneyState,
    delivery: SqliteDelivery,
    coupons: SqliteCoupons,
    generation: u64,
    reloaded: std::time::Instant,
    /// When the channel's configuration the sender was built from was saved.
    channel_saved: Option<DateTime<Utc>>,
    sender: Option<Arc<Sender>>,
    rules: DeliveryRules,
    limiter: RateLimiter,
    retry: RetryPolicy,
    /// Compiled template versions.
    templates: HashMap<(String, u32), Arc<CompiledMessage>>,
    /// The template versions each journey version pinned at publish.
    pinned: HashMap<(String, u32), std::collections::BTreeMap<String, u32>>,
}

/// A send ready to go: the effect's key and attempts, and the message.
struct Ready {
    effect: PendingEffect,
    outgoing: Outgoing,
    customer: CustomerId,
    identity: Option<(&'static str, String)>,
}

impl Effects {
    /// Takes one batch; returns how many effects it handled.
    fn round(&mut self, runtime: &tokio::runtime::Runtime) -> Result<usize, EngineError> {
        self.reload()?;
        let now = self.shared.clock.now();
        let batch = self
            .state
            .pending_effects(&self.channel, now, BATCH)
            .map_err(internal)?;
        let count = batch.len();
        match self.channel.as_str() {
            COUPONS => {
                for effect in batch {
                    self.issue_coupon(&effect, now)?;
                }
            }
            PROFILE => {
                for effect in batch {
                    self.change_profile(&effect, now)?;
                }
            }
            _ => self.send_batch(runtime, batch, now)?,
        }
        Ok(count)
    }

    fn reload(&mut self) -> Result<(), EngineError> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.generation && self.reloaded.elapsed() < super::run::RELOAD_EVERY {
            return Ok(());
        }
        self.rules = super::rules_or_default(self.shared.store.data_dir());
        if generation != self.generation {
            self.templates.clear();
            self.pinned.clear();
        }
        if self.channel != COUPONS && self.channel != PROFILE {
            let mut catalogue = self.shared.store.journey_catalogue()?;
            let stored = catalogue.channel(&self.channel).map_err(internal)?;
            let saved = stored.as_ref().map(|s| s.saved_at);
            if saved != self.channel_saved || self.sender.is_none() {
                self.sender = stored.and_then(|stored| {
                    match ChannelConfig::from_json(&stored.config.to_string())
                        .and_then(|config| Sender::new(&config))
                    {
                        Ok(sender) => Some(Arc::new(sender)),
                        Err(e) => {
                            tracing::error!(channel = %self.channel, error = %e, "a channel's configuration cannot be used; its sends wait");
                            None
                        }
                    }
                });
                self.channel_saved = saved;
            }
        }
        self.generation = generation;
        self.reloaded = std::time::Instant::now();
        Ok(())
    }

    fn complete(&mut self, key: &str, status: &str) -> Result<(), EngineError> {
        self.state
            .complete_effect(key, status, true)
            .map_err(internal)
    }

    fn issue_coupon(
        &mut self,
        effect: &PendingEffect,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let payload = &effect.effect.payload;
        let key = effect.effect.key.as_str();
        let (Some(pool), Some(campaign), Some(customer)) = (
            payload["pool"].as_str(),
            payload["campaign"].as_str(),
            payload["customer"].as_i64(),
        ) else {
            return self.dead_letter(key, "the effect names no pool, campaign or customer");
        };
        let customer = self
            .shared
            .store
            .profiles()
            .live_customer(customer)?
            .unwrap_or(customer);
        match self.coupons.issue(pool, campaign, customer, key, now) {
            Ok(Some(_)) => self.complete(key, "issued"),
            Ok(None) => self.complete(key, "skip:pool_exhausted"),
            Err(e) => self.dead_letter(key, &e.to_string()),
        }
    }

    /// A `set_trait` or `tag` effect, as an `identify` from Cohort's journeys source, so that
    /// the change goes through the profile like any other and shows in the timeline.
    fn change_profile(
        &mut self,
        effect: &PendingEffect,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let payload = &effect.effect.payload;
        let key = effect.effect.key.clone();
        let Some(customer) = payload["customer"].as_i64() else {
            return self.dead_letter(&key, "the effect names no customer");
        };
        let context = FactsContext {
            store: &self.shared.store,
            workspace_zone: self.rules.time_zone,
            holdout: None,
            assigner: None,
        };
        let Some(facts) = context.load(&mut self.delivery, customer, now)? else {
            return self.complete(&key, "skip:no_customer");
        };
        let traits = match payload["kind"].as_str() {
            Some("set_trait") => {
                let Some(name) = payload["trait"].as_str() else {
                    return self.dead_letter(&key, "the effect names no trait");
                };
                json!({ name: payload["value"].clone() })
            }
            Some("tag") => {
                let Some(tag) = payload["tag"].as_str() else {
                    return self.dead_letter(&key, "the effect names no tag");
                };
                let mut tags: Vec<Value> = facts
                    .profile
                    .traits
                    .get("tags")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                tags.retain(|t| t.as_str() != Some(tag));
                if payload["action"].as_str() != Some("remove") {
                    tags.push(json!(tag));
                }
                json!({ "tags": tags })
            }
            other => {
                return self.dead_letter(&key, &format!("unknown profile effect {other:?}"));
            }
        };
        let Some((field, value)) = crate::experiments::message_identity(Some(&facts.profile), None)
        else {
            return self.complete(&key, "skip:no_identifier");
        };
        let mut message = json!({
            "type": "identify",
            "messageId": format!("journey-{key}"),
            "timestamp": cohort_core::message::format_timestamp(now),
            "traits": traits,
        });
        message[field] = json!(value);
        self.ingest(vec![message], now)?;
        self.complete(&key, "done")
    }

    fn dead_letter(&mut self, key: &str, reason: &str) -> Result<(), EngineError> {
        tracing::warn!(channel = %self.channel, key, reason, "a journey effect was dead-lettered");
        self.state
            .dead_letter_effect(key, reason)
            .map(|_| ())
            .map_err(internal)
    }

    fn ingest(&self, messages: Vec<Value>, now: DateTime<Utc>) -> Result<usize, EngineError> {
        crate::ingest::ingest_own(
            &self.shared.store,
            self.shared.limits,
            JOURNEYS_SOURCE,
            messages,
            now,
        )
    }

    fn send_batch(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        batch: Vec<PendingEffect>,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let Some(sender) = self.sender.clone() else {
            // No usable configuration: the sends wait in the outbox (a configuration saved
            // later reloads this worker).
            return Ok(());
        };
        let mut ready = Vec::with_capacity(batch.len());
        for effect in batch {
            if let Some(r) = self.prepare(&sender, effect, now)? {
                ready.push(r);
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        let outcomes: Vec<Outcome> = runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, r) in ready.iter().enumerate() {
                let sender = sender.clone();
                let outgoing = r.outgoing.clone();
                tasks.spawn(async move { (i, sender.send(&outgoing, Utc::now()).await) });
            }
            let mut outcomes = vec![None; ready.len()];
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((i, outcome)) => outcomes[i] = Some(outcome),
                    Err(e) => tracing::error!(error = %e, "a send task failed"),
                }
            }
            outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or(Outcome::Retry {
                        after: None,
                        reason: "the send task failed".into(),
                    })
                })
                .collect()
        });
        let mut settled = Settled::default();
        for (r, outcome) in ready.into_iter().zip(outcomes) {
            self.settle(&sender, r, outcome, now, &mut settled)?;
        }
        // The batch's ledger rows, then its outbox moves, each in one commit: a commit per
        // send was most of what settling cost. A crash before the outbox's commit leaves the
        // whole batch pending, to be sent again under the same keys.
        self.delivery
            .record_sends(&settled.sends)
            .map_err(internal)?;
        self.state
            .in_one_transaction(|state| {
                settled
                    .moves
                    .iter()
                    .try_for_each(|(key, to)| to.apply(state, key))
            })
            .map_err(internal)?
            .map_err(internal)?;
        if !settled.events.is_empty() {
            self.ingest(settled.events, now)?;
        }
        Ok(())
    }

    /// Decides and renders one send; `None` when it was settled without sending (held,
    /// skipped, aborted or dead-lettered).
    fn prepare(
        &mut self,
        sender: &Sender,
        effect: PendingEffect,
        now: DateTime<Utc>,
    ) -> Result<Option<Ready>, EngineError> {
        let payload = effect.effect.payload.clone();
        let key = effect.effect.key.clone();
        let kind = sender.kind();
        let Some(customer) = payload["customer"].as_i64() else {
            self.dead_letter(&key, "the effect names no customer")?;
            return Ok(None);
        };
        let store = self.shared.store.clone();
        let context = FactsContext {
            store: &store,
            workspace_zone: self.rules.time_zone,
            holdout: None,
            assigner: None,
        };
        let Some(facts) = context.load(&mut self.delivery, customer, now)? else {
            self.complete(&key, "skip:no_customer")?;
            return Ok(None);
        };
        let transactional = payload["transactional"].as_bool().unwrap_or(false);
        let quiet_hours: QuietHours =
            serde_json::from_value(payload["quiet_hours"].clone()).unwrap_or(QuietHours::Hold);
        let request = SendRequest {
            channel: &self.channel,
            kind,
            transactional,
            quiet_hours,
        };
        let customer_facts = delivery::customer_facts(
            &mut self.delivery,
            &self.rules,
            facts.id,
            kind,
            facts.zone,
            now,
        )
        .map_err(internal)?;
        let decision = delivery::decide(&self.rules, &request, &customer_facts, now);
        let decision = self.limiter.gate(&self.rules, &self.channel, decision, now);
        match decision {
            Decision::Send => {}
            Decision::Hold { until, .. } => {
                self.state
                    .defer_effect(&key, until, &decision.to_string())
                    .map_err(internal)?;
                return Ok(None);
            }
            Decision::Skip(_) => {
                self.complete(&key, &decision.to_string())?;
                return Ok(None);
            }
        }
        let Some(to) = recipient(kind, &facts) else {
            self.complete(&key, "skip:no_recipient")?;
            return Ok(None);
        };
        let message = match self.render(&payload, kind, &facts, &key, now) {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(None),
            Err(reason) => {
                self.dead_letter(&key, &reason)?;
                return Ok(None);
            }
        };
        let identity = crate::experiments::message_identity(Some(&facts.profile), None);
        Ok(Some(Ready {
            outgoing: Outgoing {
                key: key.clone(),
                to,
                message,
            },
            customer: facts.id,
            identity,
            effect,
        }))
    }

    /// The message of a send: its pinned template rendered for the customer. `Ok(None)` when
    /// the template aborted (the effect is completed as `aborted`); `Err` with the reason when
    /// it cannot be rendered.
    fn render(
        &mut self,
        payload: &Value,
        kind: ChannelKind,
        facts: &StoredCustomer<'_>,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, String> {
        let journey = payload["journey"].as_str().unwrap_or_default().to_string();
        let version = payload["version"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let mut data = facts.template_data();
        let trigger = &payload["trigger"];
        data.event_name = trigger["event_name"].as_str().map(str::to_string);
        if let Some(event) = trigger["event"].as_object() {
            data.event = event.clone();
        }
        if let Some(pools) = payload["coupon_pools"].as_array() {
            for pool in pools.iter().filter_map(Value::as_str) {
                match self.coupons.issue(pool, &journey, facts.id, key, now) {
                    Ok(Some(code)) => {
                        data.coupon = Some(json!({
                            "code": code.code,
                            "expires_at": code.expires_at.map(|t| t.to_rfc3339()),
                        }));
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("coupon pool {pool:?}: {e}")),
                }
            }
        }
        let Some(template_key) = payload["template"].as_str() else {
            // A webhook step without a template posts the effect itself.
            return Ok(Some(Message::Webhook(json!({
                "journey": journey,
                "version": version,
                "step": payload["step"],
                "customer": data.customer,
                "event": data.event,
            }))));
        };
        let compiled = self
            .compiled(&journey, version, template_key)
            .map_err(|e| format!("template {template_key:?}: {e}"))?;
        let rendered = compiled
            .render(&data.to_value(), facts.zone, Some(now))
            .map_err(|e| format!("template {template_key:?} cannot render: {e}"))?;
        let parts = match rendered {
            RenderedMessage::Message(parts) => parts,
            RenderedMessage::Aborted { part, reason } => {
                tracing::info!(key, part, reason, "a message was aborted by its template");
                if let Err(e) = self.complete(key, &format!("aborted: {reason}")) {
                    return Err(e.to_string());
                }
                return Ok(None);
            }
        };
        let message = match parts {
            MessageParts::Sms {
                text,
                template_code,
                params,
                ..
            } => Message::Sms(SmsMessage {
                text,
                template_code,
                template_params: params,
            }),
            MessageParts::Email {
                subject,
                text,
                html,
            } => Message::Email(EmailMessage {
                customer: facts.id,
                subject,
                html,
                text,
                headers: Default::default(),
            }),
            MessageParts::Push { title, body, data } => {
                Message::Push(PushMessage { title, body, data })
            }
            MessageParts::Webhook { body } => Message::Webhook(body),
        };
        if message.kind() != kind {
            return Err(format!(
                "template {template_key:?} is for {} messages, the channel sends {}",
                message.kind().as_str(),
                kind.as_str()
            ));
        }
        Ok(Some(message))
    }

    /// The template version the journey version pinned, compiled (cached).
    fn compiled(
        &mut self,
        journey: &str,
        version: u32,
        template: &str,
    ) -> Result<Arc<CompiledMessage>, String> {
        let mut catalogue = self
            .shared
            .store
            .journey_catalogue()
            .map_err(|e| e.to_string())?;
        let pin = (journey.to_string(), version);
        if !self.pinned.contains_key(&pin) {
            let pinned = catalogue
                .get(journey, version)
                .map_err(|e| e.to_string())?
                .map(|v| v.templates)
                .unwrap_or_default();
            self.pinned.insert(pin.clone(), pinned);
        }
        let template_version = match self.pinned.get(&pin).and_then(|p| p.get(template)) {
            Some(&v) => v,
            None => catalogue
                .template(template)
                .map_err(|e| e.to_string())?
                .map(|t| t.version)
                .ok_or("no such template")?,
        };
        let cache_key = (template.to_string(), template_version);
        if let Some(compiled) = self.templates.get(&cache_key) {
            return Ok(compiled.clone());
        }
        let stored = catalogue
            .template_version(template, template_version)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("version {template_version} is missing"))?;
        let compiled = Arc::new(compile_stored(&stored.source, stored.kind)?);
        self.templates.insert(cache_key, compiled.clone());
        Ok(compiled)
    }

    /// Decides what becomes of one attempt: its ledger row, its move in the outbox and the
    /// delivery event the customer's timeline shows, gathered in `settled` for the batch.
    fn settle(
        &mut self,
        sender: &Sender,
        ready: Ready,
        outcome: Outcome,
        now: DateTime<Utc>,
        settled: &mut Settled,
    ) -> Result<(), EngineError> {
        let key = ready.outgoing.key.as_str();
        let real_now = Utc::now();
        let decision = self
            .retry
            .decide(key, ready.effect.attempts, &outcome, real_now);
        let payload = &ready.effect.effect.payload;
        let mut properties = json!({
            "journey": payload["journey"],
            "journey_version": payload["version"],
            "step": payload["step"],
            "channel": self.channel,
            "channel_kind": sender.kind().as_str(),
            "message_key": key,
        });
        let event = match (&decision, &outcome) {
            (retry::Decision::Done { .. }, Outcome::Sent { provider_id }) => {
                properties["provider_id"] = json!(provider_id);
                settled.sends.push(SendRecord {
                    key: key.to_string(),
                    customer: ready.customer,
                    channel: self.channel.clone(),
                    kind: sender.kind(),
                    purpose: delivery::Purpose::of(
                        payload["transactional"].as_bool().unwrap_or(false),
                    ),
                    at: now,
                });
                Some("Message Sent")
            }
            (retry::Decision::Done { .. }, Outcome::Unsubscribed { code, message }) => {
                let fact = ConsentFact::channel_unsubscribe(
                    sender.kind(),
                    format!("{} {code}: {message}", self.channel),
                    now,
                );
                self.delivery
                    .record_consent(ready.customer, &fact)
                    .map_err(internal)?;
                Some("Unsubscribed")
            }
            (retry::Decision::Done { .. }, Outcome::Failed { code, message })
            | (retry::Decision::Done { .. }, Outcome::DeadToken { code, message }) => {
                properties["reason"] = json!(format!("{code}: {message}"));
                Some("Message Failed")
            }
            (retry::Decision::DeadLetter { reason }, _) => {
                properties["reason"] = json!(reason);
                Some("Message Failed")
            }
            _ => None,
        };
        let to = match decision {
            retry::Decision::Done { status } => OutboxMove::Complete(status),
            retry::Decision::RetryAt(at) => OutboxMove::Defer {
                // The schedule is in real time; the outbox keeps journey time.
                at: now + (at - real_now),
                reason: match &outcome {
                    Outcome::Retry { reason, .. } => reason.clone(),
                    other => other.status().to_string(),
                },
            },
            retry::Decision::DeadLetter { reason } => {
                tracing::warn!(channel = %self.channel, key, reason, "a journey effect was dead-lettered");
                OutboxMove::DeadLetter(reason)
            }
        };
        settled.moves.push((key.to_string(), to));
        if let (Some(name), Some((field, value))) = (event, ready.identity) {
            let mut message = json!({
                "type": "track",
                "event": name,
                "messageId": format!("{name}:{key}"),
                "timestamp": cohort_core::message::format_timestamp(now),
                "properties": properties,
            });
            message[field] = json!(value);
            settled.events.push(message);
        }
        Ok(())
    }
}

/// What a batch's answers change, written together once every answer is in.
#[derive(Default)]
struct Settled {
    /// Sends the provider took, for the ledger the caps count.
    sends: Vec<SendRecord>,
    /// Each effect's move in the outbox, by key.
    moves: Vec<(String, OutboxMove)>,
    /// Delivery events for the customers' timelines.
    events: Vec<Value>,
}

/// Where an attempted effect goes in the outbox.
enum OutboxMove {
    /// Out of it, with this status.
    Complete(&'static str),
    /// Back in it, not to be tried before `at`.
    Defer { at: DateTime<Utc>, reason: String },
    /// Out of it as dead-lettered.
    DeadLetter(String),
}

impl OutboxMove {
    fn apply(&self, state: &mut SqliteJourneyState, key: &str) -> Result<(), StateError> {
        match self {
            OutboxMove::Complete(status) => state.complete_effect(key, status, true),
            OutboxMove::Defer { at, reason } => state.defer_effect(key, *at, reason).map(|_| ()),
            OutboxMove::DeadLetter(reason) => state.dead_letter_effect(key, reason).map(|_| ()),
        }
    }
}

/// A stored template source compiled for its kind.
pub(crate) fn compile_stored(source: &Value, kind: ChannelKind) -> Result<CompiledMessage, String> {
    let mut source: Map<String, Value> = source.as_object().cloned().unwrap_or_default();
    source.insert("kind".into(), json!(kind.as_str()));
    MessageTemplate::from_value(&Value::Object(source))
        .and_then(|t| t.compile())
        .map_err(|e| e.to_string())
}

/// Where a message of `kind` goes for this customer: the `phone` trait for SMS, `email` for
/// email, a device token (`device_token`, `push_token`) for push; webhooks go to their URL.
fn recipient(kind: ChannelKind, facts: &StoredCustomer<'_>) -> Option<String> {
    let traits = &facts.profile.traits;
    let text = |name: &str| {
        traits
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match kind {
        ChannelKind::Sms => text("phone"),
        ChannelKind::Email => text("email").or_else(|| {
            facts
                .profile
                .identities
                .iter()
                .find(|i| i.kind.as_str() == "email")
                .map(|i| i.value.clone())
        }),
        ChannelKind::Push => text("device_token").or_else(|| text("push_token")),
        ChannelKind::Webhook => Some(String::new()),
    }
}
