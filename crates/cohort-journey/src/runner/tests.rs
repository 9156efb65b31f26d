use super::*;
use crate::definition::{Catalogue, ChannelKind, TagKind, parse_value};
use crate::state::{Effect, MemoryJourneyState, PendingEffect};
use chrono::{NaiveDate, TimeDelta, TimeZone};
use std::collections::{BTreeMap, BTreeSet};

// ---- fixtures ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Customer {
    id: CustomerId,
    traits: Map<String, Value>,
    computed: ComputedTraits,
    events: Vec<EventRecord>,
    segments: BTreeSet<String>,
    zone: chrono_tz::Tz,
    control: bool,
    variations: BTreeMap<String, String>,
}

fn customer(id: CustomerId) -> Customer {
    Customer {
        id,
        traits: Map::new(),
        computed: ComputedTraits::default(),
        events: Vec::new(),
        segments: BTreeSet::new(),
        zone: chrono_tz::Asia::Shanghai,
        control: false,
        variations: BTreeMap::new(),
    }
}

impl Customer {
    fn with_trait(mut self, key: &str, value: Value) -> Self {
        self.traits.insert(key.into(), value);
        self
    }
}

impl CustomerFacts for Customer {
    fn id(&self) -> CustomerId {
        self.id
    }
    fn traits(&self) -> &Map<String, Value> {
        &self.traits
    }
    fn computed(&self) -> &ComputedTraits {
        &self.computed
    }
    fn events(&self) -> &[EventRecord] {
        &self.events
    }
    fn in_segment(&self, segment: &str) -> bool {
        self.segments.contains(segment)
    }
    fn time_zone(&self) -> chrono_tz::Tz {
        self.zone
    }
    fn in_global_control(&self) -> bool {
        self.control
    }
    fn experiment_variation(&self, experiment: &str) -> Option<String> {
        self.variations.get(experiment).cloned()
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

fn hours(h: i64) -> TimeDelta {
    TimeDelta::hours(h)
}

fn catalogue() -> Catalogue {
    let mut c = Catalogue::default();
    for (key, kind) in [
        ("sms", ChannelKind::Sms),
        ("email", ChannelKind::Email),
        ("push", ChannelKind::Push),
        ("crm", ChannelKind::Webhook),
    ] {
        c.channels.insert(key.into(), kind);
        c.templates.insert(format!("{key}-t"), kind);
    }
    c.segments.insert("platinum".into());
    c.tags.insert("journey:nudged".into(), TagKind::Manual);
    c.experiments
        .insert("copy".into(), ["a", "b"].map(String::from).into());
    c.coupon_pools.insert("vip".into());
    c
}

/// A checked journey `key` from the given fields (with a name, an event trigger on
/// `Signed Up` unless given).
fn journey(key: &str, fields: Value) -> Journey {
    let mut value = json!({
        "key": key, "name": key,
        "trigger": {"type": "event", "event": "Signed Up"},
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut value, fields) {
        base.extend(extra);
    }
    let journey = parse_value(&value).unwrap();
    catalogue().check(&journey).unwrap();
    journey
}

fn runner(journeys: Vec<Journey>) -> Runner {
    Runner::new(
        journeys
            .into_iter()
            .map(|journey| Published {
                journey,
                version: 1,
                run: Run::Entering,
            })
            .collect(),
    )
    .unwrap()
}

fn event(id: &str, name: &str, at: DateTime<Utc>) -> ProcessedEvent {
    ProcessedEvent::new(id, name, at)
}

fn pending(store: &mut MemoryJourneyState, channel: &str) -> Vec<Effect> {
    store
        .pending_effects(channel, DateTime::<Utc>::MAX_UTC, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|p: PendingEffect| p.effect)
        .collect()
}

/// Each customer sends `Signed Up` at `t0`.
fn sign_up(runner: &Runner, store: &mut MemoryJourneyState, customers: &[&Customer]) {
    for c in customers {
        let signed_up = event(&format!("s{}", c.id), "Signed Up", t0());
        runner.on_event(store, *c, &signed_up, t0()).unwrap();
    }
}

fn fire<F: CustomerFacts + Clone>(
    runner: &Runner,
    store: &mut MemoryJourneyState,
    customers: &[F],
    now: DateTime<Utc>,
) -> Report {
    runner
        .fire_due(
            store,
            |id| {
                customers
                    .iter()
                    .find(|c| c.id() == id)
                    .cloned()
                    .ok_or("unknown customer")
            },
            now,
            usize::MAX,
        )
        .unwrap()
}

/// Sign-up, a day's delay, then an SMS; logging in ends the entry.
fn nudge() -> Journey {
    journey(
        "nudge",
        json!({
            "exit": [{"type": "event", "event": "Logged In"}],
            "steps": [
                {"id": "day", "type": "delay", "for": "24h", "next": "sms-1"},
                {"id": "sms-1", "type": "send", "channel": "sms", "template": "sms-t"}
            ]
        }),
    )
}

// ---- the sign-up nudge --------------------------------------------------------------------

#[test]
fn a_sign_up_gets_its_sms_after_a_day_exactly_once() {
    let runner = runner(vec![nudge()]);
    let mut store = MemoryJourneyState::default();
    let ada = customer(1);
    let signed_up = event("m1", "Signed Up", t0()).properties(json!({"plan": "pro"}));
    let report = runner.on_event(&mut store, &ada, &signed_up, t0()).unwrap();
    assert_eq!(report.entered.len(), 1);
    let entry = store.entry(report.entered[0]).unwrap().unwrap();
    assert_eq!(
        (entry.step.as_str(), entry.due_at),
        ("day", Some(t0() + hours(24)))
    );

    let early = fire(
        &runner,
        &mut store,
        std::slice::from_ref(&ada),
        t0() + hours(23),
    );
    assert_eq!(early, Report::default());
    assert!(pending(&mut store, "sms").is_empty());

    let due = fire(
        &runner,
        &mut store,
        std::slice::from_ref(&ada),
        t0() + hours(24),
    );
    assert_eq!((due.effects, due.exited), (1, 1));
    let again = fire(
        &runner,
        &mut store,
        std::slice::from_ref(&ada),
        t0() + hours(48),
    );
    assert_eq!(again, Report::default());

    let sms = pending(&mut store, "sms");
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].key, effect_key("nudge", 1, entry.id, "sms-1"));
    let p = &sms[0].payload;
    assert_eq!(p["kind"], "send");
    assert_eq!(p["template"], "sms-t");
    assert_eq!(p["customer"], 1);
    assert_eq!(p["quiet_hours"], "hold");
    assert_eq!(p["transactional"], false);
    assert_eq!(p["trigger"]["event"]["plan"], "pro");
    assert_eq!(p["trigger"]["event_name"], "Signed Up");
    let done = store.entry(entry.id).unwrap().unwrap();
    assert_eq!(done.exit_reason.as_deref(), Some(COMPLETED));
    assert_eq!(
        done.last_message.map(|m| (m.key, m.at)),
        Some((sms[0].key.clone(), t0() + hours(24)))
    );
}

#[test]
fn logging_in_before_the_day_is_out_cancels_the_sms_by_exit_criterion() {
    let runner = runner(vec![nudge()]);
    let mut store = MemoryJourneyState::default();
    let (ada, bob) = (customer(1), customer(2));
    sign_up(&runner, &mut store, &[&ada, &bob]);
    let login = event("l1", "Logged In", t0() + hours(2));
    let report = runner
        .on_event(&mut store, &ada, &login, t0() + hours(2))
        .unwrap();
    assert_eq!(report.exited, 1);
    let ended = store.latest_entry(1, "nudge").unwrap().unwrap();
    assert_eq!(ended.exit_reason.as_deref(), Some("exit[0]"));

    fire(&runner, &mut store, &[ada, bob], t0() + hours(24));
    let sms = pending(&mut store, "sms");
    assert_eq!(sms.len(), 1, "only the customer who did not log in");
    assert_eq!(sms[0].payload["customer"], 2);
}

#[test]
fn logging_in_before_the_day_is_out_cancels_the_sms_by_a_wait_with_timeout() {
    let journey = journey(
        "nudge",
        json!({"steps": [
            {"id": "login", "type": "wait", "event": "Logged In", "timeout": "24h",
             "no": "sms-1"},
            {"id": "sms-1", "type": "send", "channel": "sms", "template": "sms-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let (ada, bob) = (customer(1), customer(2));
    sign_up(&runner, &mut store, &[&ada, &bob]);
    let login = event("l1", "Logged In", t0() + hours(2));
    runner
        .on_event(&mut store, &ada, &login, t0() + hours(2))
        .unwrap();
    let ada_entry = store.latest_entry(1, "nudge").unwrap().unwrap();
    assert_eq!(ada_entry.exit_reason.as_deref(), Some(COMPLETED));

    fire(&runner, &mut store, &[ada, bob], t0() + hours(24));
    let sms = pending(&mut store, "sms");
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].payload["customer"], 2);
}

// ---- waits, branches, splits ------------------------------------------------------------

fn yes_no() -> Journey {
    journey(
        "clicks",
        json!({"steps": [
            {"id": "click", "type": "wait", "event": "Clicked", "where": [
                {"property": "button", "op": "eq", "value": "buy"}],
             "timeout": "2d", "yes": "thanks", "no": "nudge"},
            {"id": "thanks", "type": "send", "channel": "email", "template": "email-t"},
            {"id": "nudge", "type": "send", "channel": "sms", "template": "sms-t"}
        ]}),
    )
}

#[test]
fn a_wait_takes_yes_on_its_event_after_it_began_and_no_when_it_times_out() {
    let runner = runner(vec![yes_no()]);
    let mut store = MemoryJourneyState::default();
    let (ada, bob) = (customer(1), customer(2));
    sign_up(&runner, &mut store, &[&ada, &bob]);
    // Before the wait began, and with the wrong property: neither counts.
    let before = event("c0", "Clicked", t0() - hours(1)).properties(json!({"button": "buy"}));
    let other = event("c1", "Clicked", t0() + hours(1)).properties(json!({"button": "no"}));
    for e in [&before, &other] {
        let r = runner
            .on_event(&mut store, &ada, e, t0() + hours(1))
            .unwrap();
        assert_eq!(r.moves, 0);
    }
    let click = event("c2", "Clicked", t0() + hours(3)).properties(json!({"button": "buy"}));
    runner
        .on_event(&mut store, &ada, &click, t0() + hours(3))
        .unwrap();
    fire(&runner, &mut store, &[ada, bob], t0() + hours(48));
    let thanks = pending(&mut store, "email");
    let nudges = pending(&mut store, "sms");
    assert_eq!(
        (thanks.len(), thanks[0].payload["customer"].clone()),
        (1, json!(1))
    );
    assert_eq!(
        (nudges.len(), nudges[0].payload["customer"].clone()),
        (1, json!(2))
    );
}

#[test]
fn a_wait_for_a_condition_already_met_goes_on_at_once_and_is_rechecked_on_traits() {
    let journey = journey(
        "verify",
        json!({"steps": [
            {"id": "verified", "type": "wait", "timeout": "3d", "yes": "welcome",
             "condition": {"type": "trait", "key": "verified", "op": "eq", "value": true}},
            {"id": "welcome", "type": "send", "channel": "email", "template": "email-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let ada = customer(1).with_trait("verified", json!(true));
    let bob = customer(2);
    sign_up(&runner, &mut store, &[&ada, &bob]);
    assert_eq!(pending(&mut store, "email").len(), 1);
    let bob = bob.with_trait("verified", json!(true));
    let change = TraitChange {
        message_id: "i1".into(),
        key: "verified".into(),
        old: None,
        new: Some(json!(true)),
    };
    let r = runner
        .on_trait_change(&mut store, &bob, &change, t0() + hours(1))
        .unwrap();
    assert_eq!(r.effects, 1);
    assert_eq!(pending(&mut store, "email").len(), 2);
}

#[test]
fn a_timed_out_condition_wait_looks_at_the_condition_once_more() {
    let journey = journey(
        "verify",
        json!({"steps": [
            {"id": "verified", "type": "wait", "timeout": "3d", "yes": "welcome", "no": "remind",
             "condition": {"type": "trait", "key": "verified", "op": "eq", "value": true}},
            {"id": "welcome", "type": "send", "channel": "email", "template": "email-t"},
            {"id": "remind", "type": "send", "channel": "sms", "template": "sms-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let (ada, bob) = (customer(1), customer(2));
    sign_up(&runner, &mut store, &[&ada, &bob]);
    assert!(pending(&mut store, "email").is_empty());
    // Ada's condition came true without a trait change reaching the runner.
    let ada = ada.with_trait("verified", json!(true));
    fire(&runner, &mut store, &[ada, bob], t0() + hours(72));
    let welcomed = pending(&mut store, "email");
    let reminded = pending(&mut store, "sms");
    assert_eq!(
        (welcomed.len(), reminded.len()),
        (1, 1),
        "{welcomed:?} {reminded:?}"
    );
    assert_eq!(welcomed[0].payload["customer"], json!(1));
    assert_eq!(reminded[0].payload["customer"], json!(2));
}

#[test]
fn a_branch_decides_on_a_trait_now() {
    let journey = journey(
        "tiers",
        json!({"steps": [
            {"id": "vip", "type": "branch", "yes": "mail", "no": "text",
             "condition": {"type": "trait", "key": "tier", "op": "eq", "value": "gold"}},
            {"id": "mail", "type": "send", "channel": "email", "template": "email-t"},
            {"id": "text", "type": "send", "channel": "sms", "template": "sms-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let gold = customer(1).with_trait("tier", json!("gold"));
    let plain = customer(2).with_trait("tier", json!("silver"));
    sign_up(&runner, &mut store, &[&gold, &plain]);
    assert_eq!(pending(&mut store, "email")[0].payload["customer"], 1);
    assert_eq!(pending(&mut store, "sms")[0].payload["customer"], 2);
}

fn split() -> Journey {
    journey(
        "split",
        json!({
            "reentry": {"policy": "always"},
            "multiple_entries": true,
            "steps": [
                {"id": "coin", "type": "random_split", "paths": [
                    {"name": "a", "weight": 0.3, "next": "mail"},
                    {"name": "b", "weight": 0.7, "next": "text"}]},
                {"id": "mail", "type": "send", "channel": "email", "template": "email-t"},
                {"id": "text", "type": "send", "channel": "sms", "template": "sms-t"}
            ]
        }),
    )
}

/// Each customer's channel, by customer.
fn split_run(n: i64) -> BTreeMap<i64, String> {
    let runner = runner(vec![split()]);
    let mut store = MemoryJourneyState::default();
    for id in 0..n {
        let c = customer(id);
        runner
            .on_event(
                &mut store,
                &c,
                &event(&format!("s{id}"), "Signed Up", t0()),
                t0(),
            )
            .unwrap();
    }
    let mut out = BTreeMap::new();
    for channel in ["email", "sms"] {
        for e in pending(&mut store, channel) {
            let id = e.payload["customer"].as_i64().unwrap();
            assert!(out.insert(id, channel.to_string()).is_none());
        }
    }
    out
}

#[test]
fn a_random_split_is_deterministic_and_follows_its_weights() {
    let first = split_run(10_000);
    assert_eq!(first.len(), 10_000);
    let mail = first.values().filter(|c| *c == "email").count();
    // 30 % of 10,000, within five standard deviations (about 46 each).
    assert!((2_770..=3_230).contains(&mail), "{mail} took path a");
    assert_eq!(
        split_run(10_000),
        first,
        "the same entries take the same paths"
    );
}

#[test]
fn an_experiment_split_follows_the_assigned_variation() {
    let journey = journey(
        "copy",
        json!({"steps": [
            {"id": "exp", "type": "experiment_split", "experiment": "copy",
             "paths": {"a": "mail", "b": "text"}},
            {"id": "mail", "type": "send", "channel": "email", "template": "email-t"},
            {"id": "text", "type": "send", "channel": "sms", "template": "sms-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let mut b = customer(1);
    b.variations.insert("copy".into(), "b".into());
    let outsider = customer(2);
    sign_up(&runner, &mut store, &[&b, &outsider]);
    assert_eq!(pending(&mut store, "sms").len(), 1);
    assert!(pending(&mut store, "email").is_empty());
    let ended = store.latest_entry(2, "copy").unwrap().unwrap();
    assert_eq!(
        ended.exit_reason.as_deref(),
        Some("steps[exp]: not in experiment \"copy\"")
    );
}

// ---- entering ---------------------------------------------------------------------------

#[test]
fn a_holdout_share_is_held_out_measured_and_given_nothing() {
    let mut j = nudge();
    j.holdout = 0.2;
    let runner = runner(vec![j]);
    let mut store = MemoryJourneyState::default();
    let customers: Vec<Customer> = (0..3_000).map(customer).collect();
    let mut held = 0;
    for c in &customers {
        let r = runner
            .on_event(
                &mut store,
                c,
                &event(&format!("s{}", c.id), "Signed Up", t0()),
                t0(),
            )
            .unwrap();
        assert_eq!(r.entered.len(), 1);
        held += r.held_out;
        let entry = store.entry(r.entered[0]).unwrap().unwrap();
        assert_eq!(entry.held_out, r.held_out == 1);
        if entry.held_out {
            assert_eq!(entry.exit_reason.as_deref(), Some(HELD_OUT));
        }
    }
    // 20 % of 3,000 within five standard deviations (about 22 each).
    assert!((490..=710).contains(&held), "{held} held out");
    fire(&runner, &mut store, &customers, t0() + hours(24));
    assert_eq!(pending(&mut store, "sms").len(), 3_000 - held);
    // The same customers are held out of the journey whatever the entry.
    let again = runner
        .on_event(
            &mut store,
            &customers[0],
            &event("x", "Signed Up", t0()),
            t0(),
        )
        .unwrap();
    assert!(again.entered.is_empty(), "re-entry is never by default");
}

#[test]
fn the_global_control_group_never_enters_unless_the_journey_lets_it() {
    let mut kept_out = nudge();
    kept_out.key = "kept-out".into();
    let mut receipts = nudge();
    receipts.key = "receipts".into();
    receipts.global_control = false;
    let runner = runner(vec![kept_out, receipts]);
    let mut store = MemoryJourneyState::default();
    let mut control = customer(1);
    control.control = true;
    let r = runner
        .on_event(&mut store, &control, &event("s", "Signed Up", t0()), t0())
        .unwrap();
    assert_eq!(r.entered.len(), 1);
    assert!(store.latest_entry(1, "kept-out").unwrap().is_none());
    assert!(store.latest_entry(1, "receipts").unwrap().is_some());
}

#[test]
fn re_entry_policies() {
    let with = |reentry: Value, multiple: bool| {
        journey(
            "j",
            json!({"reentry": reentry, "multiple_entries": multiple, "steps": [
                {"id": "day", "type": "delay", "for": "1d"}]}),
        )
    };
    let entered = |runner: &Runner, store: &mut MemoryJourneyState, msg: &str, at| {
        runner
            .on_event(store, &customer(1), &event(msg, "Signed Up", at), at)
            .unwrap()
            .entered
            .len()
    };
    // never: once, ever.
    let r = runner(vec![with(json!({"policy": "never"}), false)]);
    let mut store = MemoryJourneyState::default();
    assert_eq!(entered(&r, &mut store, "a", t0()), 1);
    fire(&r, &mut store, &[customer(1)], t0() + hours(24));
    assert_eq!(entered(&r, &mut store, "b", t0() + hours(48)), 0);

    // after a cool-down, counted from the last entry.
    let r = runner(vec![with(
        json!({"policy": "after", "cooldown": "7d"}),
        false,
    )]);
    let mut store = MemoryJourneyState::default();
    assert_eq!(entered(&r, &mut store, "a", t0()), 1);
    fire(&r, &mut store, &[customer(1)], t0() + hours(24));
    assert_eq!(entered(&r, &mut store, "b", t0() + hours(72)), 0);
    assert_eq!(entered(&r, &mut store, "c", t0() + hours(7 * 24)), 1);

    // always, one at a time.
    let r = runner(vec![with(json!({"policy": "always"}), false)]);
    let mut store = MemoryJourneyState::default();
    assert_eq!(entered(&r, &mut store, "a", t0()), 1);
    assert_eq!(entered(&r, &mut store, "b", t0() + hours(1)), 0, "still in");
    fire(&r, &mut store, &[customer(1)], t0() + hours(24));
    assert_eq!(entered(&r, &mut store, "c", t0() + hours(25)), 1);

    // always, side by side.
    let r = runner(vec![with(json!({"policy": "always"}), true)]);
    let mut store = MemoryJourneyState::default();
    assert_eq!(entered(&r, &mut store, "a", t0()), 1);
    assert_eq!(entered(&r, &mut store, "b", t0() + hours(1)), 1);
    assert_eq!(store.active_entries(1).unwrap().len(), 2);
}

#[test]
fn the_same_event_twice_enters_once_and_moves_once() {
    let journey = journey(
        "twice",
        json!({"reentry": {"policy": "always"}, "multiple_entries": true, "steps": [
            {"id": "first", "type": "wait", "event": "Clicked", "timeout": "1d", "yes": "second"},
            {"id": "second", "type": "wait", "event": "Clicked", "timeout": "1d", "yes": "mail"},
            {"id": "mail", "type": "send", "channel": "email", "template": "email-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let ada = customer(1);
    let signed_up = event("s1", "Signed Up", t0());
    assert_eq!(
        runner
            .on_event(&mut store, &ada, &signed_up, t0())
            .unwrap()
            .entered
            .len(),
        1
    );
    let again = runner
        .on_event(&mut store, &ada, &signed_up, t0() + hours(1))
        .unwrap();
    assert!(again.entered.is_empty());

    let click = event("c1", "Clicked", t0() + hours(2));
    let once = runner
        .on_event(&mut store, &ada, &click, t0() + hours(2))
        .unwrap();
    assert_eq!(once.moves, 1);
    let replay = runner
        .on_event(&mut store, &ada, &click, t0() + hours(3))
        .unwrap();
    assert_eq!(replay.moves, 0, "a redelivered click passes no second wait");
    assert!(pending(&mut store, "email").is_empty());
    let click2 = event("c2", "Clicked", t0() + hours(4));
    runner
        .on_event(&mut store, &ada, &click2, t0() + hours(4))
        .unwrap();
    assert_eq!(pending(&mut store, "email").len(), 1);
}

#[test]
fn the_runner_says_which_events_and_memberships_it_reacts_to() {
    let platinum = journey(
        "platinum",
        json!({
            "trigger": {"type": "segment_entered", "segment": "platinum"},
            "goal": {"type": "event", "event": "Order Completed", "window": "7d"},
            "steps": [{"id": "tell", "type": "send", "channel": "push", "template": "push-t"}]
        }),
    );
    let runner = runner(vec![nudge(), platinum]);
    for name in ["Signed Up", "Logged In", "Order Completed"] {
        assert!(runner.reacts_to_event(name), "{name}");
    }
    assert!(!runner.reacts_to_event("Page Viewed"));
    let segment = |s: &str| Membership::Segment(s.to_string());
    assert!(runner.reacts_to_membership(&segment("platinum"), true));
    assert!(!runner.reacts_to_membership(&segment("platinum"), false));
    assert!(!runner.reacts_to_membership(&segment("gold"), true));
    assert!(
        !Runner::new(Vec::new())
            .unwrap()
            .reacts_to_event("Signed Up")
    );
}

#[test]
fn segment_entry_issues_one_coupon_and_a_push_each() {
    let journey = journey(
        "platinum",
        json!({
            "trigger": {"type": "segment_entered", "segment": "platinum"},
            "steps": [
                {"id": "coupon", "type": "issue_coupon", "pool": "vip", "next": "tell"},
                {"id": "tell", "type": "send", "channel": "push", "template": "push-t"}
            ]
        }),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    for id in 1..=3 {
        let change = MembershipChange {
            id: format!("me-{id}"),
            of: Membership::Segment("platinum".into()),
            entered: true,
        };
        let c = customer(id);
        runner.on_membership(&mut store, &c, &change, t0()).unwrap();
        // The feed delivers it again.
        let again = runner.on_membership(&mut store, &c, &change, t0()).unwrap();
        assert!(again.entered.is_empty());
    }
    let leaving = MembershipChange {
        id: "me-9".into(),
        of: Membership::Segment("platinum".into()),
        entered: false,
    };
    runner
        .on_membership(&mut store, &customer(9), &leaving, t0())
        .unwrap();
    let coupons = pending(&mut store, COUPONS);
    assert_eq!(coupons.len(), 3);
    assert_eq!(coupons[0].payload["pool"], "vip");
    assert_eq!(coupons[0].payload["campaign"], "platinum");
    let pushes = pending(&mut store, "push");
    assert_eq!(pushes.len(), 3);
    assert_eq!(pushes[0].payload["coupon_pools"], json!(["vip"]));
    assert_eq!(
        pushes[0].payload["trigger"]["membership"],
        json!({"segment": "platinum", "entered": true})
    );
}

#[test]
fn a_trait_change_enters_when_its_new_value_passes() {
    let journey = journey(
        "upgraded",
        json!({
            "trigger": {"type": "trait_changed", "trait": "plan", "to": {"op": "eq", "value": "pro"}},
            "steps": [
                {"id": "tag", "type": "tag", "tag": "journey:nudged", "next": "set"},
                {"id": "set", "type": "set_trait", "trait": "welcomed", "value": true}
            ]
        }),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let change = |to: &str| TraitChange {
        message_id: format!("i-{to}"),
        key: "plan".into(),
        old: Some(json!("free")),
        new: Some(json!(to)),
    };
    let r = runner
        .on_trait_change(&mut store, &customer(1), &change("team"), t0())
        .unwrap();
    assert!(r.entered.is_empty());
    let r = runner
        .on_trait_change(&mut store, &customer(1), &change("pro"), t0())
        .unwrap();
    assert_eq!((r.entered.len(), r.effects), (1, 2));
    let profile = pending(&mut store, PROFILE);
    assert_eq!(
        profile[0].payload["tag"], "journey:nudged",
        "{:?}",
        profile[0]
    );
    assert_eq!(profile[0].payload["action"], "add");
    assert_eq!(profile[1].payload["trait"], "welcomed");
    assert_eq!(profile[1].payload["value"], true);
}

#[test]
fn api_entries_need_their_fields_and_enter_once_per_request() {
    let journey = journey(
        "receipt",
        json!({
            "trigger": {"type": "api", "required": ["order_id"]},
            "reentry": {"policy": "always"},
            "steps": [
                {"id": "mail", "type": "send", "channel": "email", "template": "email-t",
                 "transactional": true, "next": "hook"},
                {"id": "hook", "type": "webhook", "channel": "crm"}
            ]
        }),
    );
    let runner = runner(vec![journey, nudge()]);
    let mut store = MemoryJourneyState::default();
    let ada = customer(1);
    let missing = runner.enter_by_api(&mut store, &ada, "receipt", "r1", json!({}), t0());
    assert!(matches!(missing, Err(RunError::MissingField { field, .. }) if field == "order_id"));
    let wrong = runner.enter_by_api(&mut store, &ada, "nudge", "r1", json!({}), t0());
    assert!(matches!(wrong, Err(RunError::NotByApi(_))));
    let unknown = runner.enter_by_api(&mut store, &ada, "nope", "r1", json!({}), t0());
    assert!(matches!(unknown, Err(RunError::NotRunning(_))));

    let payload = json!({"order_id": "o-1", "items": [{"sku": "tea"}]});
    for _ in 0..2 {
        runner
            .enter_by_api(&mut store, &ada, "receipt", "r1", payload.clone(), t0())
            .unwrap();
    }
    let mail = pending(&mut store, "email");
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].payload["transactional"], true);
    assert_eq!(mail[0].payload["trigger"]["event"], payload);
    let hooks = pending(&mut store, "crm");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].payload["kind"], "webhook");
    assert_eq!(hooks[0].payload["template"], Value::Null);
}

// ---- time -------------------------------------------------------------------------------

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn clock(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

use chrono::NaiveTime;

#[test]
fn the_next_time_of_day_in_a_zone_across_daylight_saving_changes() {
    let ny = chrono_tz::America::New_York;
    // Saturday 7 March 2026, 10:00 EST; clocks go forward at 02:00 on Sunday.
    let saturday = utc(2026, 3, 7, 15, 0);
    assert_eq!(
        next_time_of_day(saturday, clock(9, 0), ny),
        utc(2026, 3, 8, 13, 0),
        "09:00 EDT"
    );
    assert_eq!(
        next_time_of_day(saturday, clock(11, 0), ny),
        utc(2026, 3, 7, 16, 0),
        "later today, still EST"
    );
    assert_eq!(
        next_time_of_day(saturday, clock(2, 30), ny),
        utc(2026, 3, 8, 7, 30),
        "skipped 02:30 is read as 03:30 EDT"
    );
    // Sunday 1 November 2026: 01:30 happens twice; the first is EDT.
    assert_eq!(
        next_time_of_day(utc(2026, 10, 31, 16, 0), clock(1, 30), ny),
        utc(2026, 11, 1, 5, 30)
    );
    // A customer in UTC+14: 23:00 on 1 March there, so 09:00 is tomorrow there, 19:00 UTC.
    let kiritimati = chrono_tz::Pacific::Kiritimati;
    assert_eq!(
        next_time_of_day(t0(), clock(9, 0), kiritimati),
        utc(2026, 3, 1, 19, 0)
    );
    // Exactly the time: the next day's, never now.
    assert_eq!(
        next_time_of_day(
            utc(2026, 3, 1, 1, 0),
            clock(9, 0),
            chrono_tz::Asia::Shanghai
        ),
        utc(2026, 3, 2, 1, 0)
    );
}

#[test]
fn delays_until_a_time_of_day_and_until_a_date_from_a_trait() {
    let journey = journey(
        "timed",
        json!({"steps": [
            {"id": "morning", "type": "delay", "until_time": "09:00", "next": "before"},
            {"id": "before", "type": "delay", "until_date": {"trait": "renewal"},
             "offset": "-2d", "next": "mail"},
            {"id": "mail", "type": "send", "channel": "email", "template": "email-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let mut ny = customer(1).with_trait("renewal", json!("2026-03-20"));
    ny.zone = chrono_tz::America::New_York;
    let nobody = customer(2);
    let start = utc(2026, 3, 7, 15, 0);
    for c in [&ny, &nobody] {
        let signed_up = event(&format!("s{}", c.id), "Signed Up", start);
        runner.on_event(&mut store, c, &signed_up, start).unwrap();
    }
    let entry = store.latest_entry(1, "timed").unwrap().unwrap();
    assert_eq!(entry.due_at, Some(utc(2026, 3, 8, 13, 0)));
    let customers = [ny, nobody];
    fire(&runner, &mut store, &customers, utc(2026, 3, 8, 13, 0));
    // Midnight on 20 March in New York (EDT), two days earlier.
    let entry = store.entry(entry.id).unwrap().unwrap();
    assert_eq!(
        (entry.step.as_str(), entry.due_at),
        ("before", Some(utc(2026, 3, 18, 4, 0)))
    );
    let missing = store.latest_entry(2, "timed").unwrap().unwrap();
    assert_eq!(
        missing.exit_reason.as_deref(),
        Some("steps[before]: no trait \"renewal\"")
    );
    fire(&runner, &mut store, &customers, utc(2026, 3, 18, 3, 59));
    assert!(pending(&mut store, "email").is_empty());
    fire(&runner, &mut store, &customers, utc(2026, 3, 18, 4, 0));
    assert_eq!(pending(&mut store, "email").len(), 1);
}

#[test]
fn a_date_already_past_goes_on_at_once() {
    let journey = journey(
        "late",
        json!({"steps": [
            {"id": "until", "type": "delay", "until": "2026-01-01T00:00:00+08:00", "next": "mail"},
            {"id": "mail", "type": "send", "channel": "email", "template": "email-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    runner
        .on_event(
            &mut store,
            &customer(1),
            &event("s", "Signed Up", t0()),
            t0(),
        )
        .unwrap();
    assert_eq!(pending(&mut store, "email").len(), 1);
}

#[test]
fn dates_are_read_in_the_customer_zone_unless_they_carry_an_offset() {
    let sh = chrono_tz::Asia::Shanghai;
    assert_eq!(
        read_date(&json!("2026-03-20"), sh),
        Some(utc(2026, 3, 19, 16, 0))
    );
    assert_eq!(
        read_date(&json!("2026-03-20 10:30:00"), sh),
        Some(utc(2026, 3, 20, 2, 30))
    );
    assert_eq!(
        read_date(&json!("2026-03-20T10:30:00Z"), sh),
        Some(utc(2026, 3, 20, 10, 30))
    );
    assert_eq!(
        read_date(&json!(1_774_000_000), sh).map(|d| d.timestamp()),
        Some(1_774_000_000)
    );
    for bad in [
        json!("soon"),
        json!(true),
        json!(1e300),
        json!("2026-02-30"),
    ] {
        assert_eq!(read_date(&bad, sh), None, "{bad}");
    }
    let _ = NaiveDate::from_ymd_opt(2026, 3, 20);
}

// ---- exactly once -----------------------------------------------------------------------

/// A store that fails one `advance`: before it commits (the process died first) or after
/// (the process died before it learned of the commit).
struct Crashing {
    inner: MemoryJourneyState,
    countdown: Option<usize>,
    after_commit: bool,
}

impl Crashing {
    fn crash(&mut self) -> bool {
        match &mut self.countdown {
            Some(0) => {
                self.countdown = None;
                true
            }
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    }
}

fn crashed() -> StateError {
    StateError::Storage("killed".into())
}

impl JourneyStateStore for Crashing {
    fn enter(&mut self, new: &NewEntry, allow: bool) -> Result<Option<EntryId>, StateError> {
        self.inner.enter(new, allow)
    }
    fn entry(&mut self, id: EntryId) -> Result<Option<Entry>, StateError> {
        self.inner.entry(id)
    }
    fn active_entries(&mut self, customer: CustomerId) -> Result<Vec<Entry>, StateError> {
        self.inner.active_entries(customer)
    }
    fn latest_entry(&mut self, c: CustomerId, j: &str) -> Result<Option<Entry>, StateError> {
        self.inner.latest_entry(c, j)
    }
    fn advance_with_message(
        &mut self,
        id: EntryId,
        from: &str,
        to: &Move,
        effects: &[Effect],
        message: Option<&crate::state::Message>,
    ) -> Result<bool, StateError> {
        if self.crash() {
            if self.after_commit {
                self.inner
                    .advance_with_message(id, from, to, effects, message)?;
            }
            return Err(crashed());
        }
        self.inner
            .advance_with_message(id, from, to, effects, message)
    }
    fn due_skipping(
        &mut self,
        now: DateTime<Utc>,
        skip: &[String],
        limit: usize,
    ) -> Result<Vec<Entry>, StateError> {
        self.inner.due_skipping(now, skip, limit)
    }
    fn convertible(&mut self, c: CustomerId, s: DateTime<Utc>) -> Result<Vec<Entry>, StateError> {
        self.inner.convertible(c, s)
    }
    fn convert(&mut self, id: EntryId, c: &Conversion) -> Result<bool, StateError> {
        self.inner.convert(id, c)
    }
    fn exit_journey(&mut self, j: &str, r: &str) -> Result<usize, StateError> {
        self.inner.exit_journey(j, r)
    }
    fn pending_effects(
        &mut self,
        c: &str,
        now: DateTime<Utc>,
        l: usize,
    ) -> Result<Vec<PendingEffect>, StateError> {
        self.inner.pending_effects(c, now, l)
    }
    fn complete_effect(&mut self, k: &str, s: &str, d: bool) -> Result<(), StateError> {
        self.inner.complete_effect(k, s, d)
    }
    fn defer_effect(&mut self, k: &str, at: DateTime<Utc>, r: &str) -> Result<bool, StateError> {
        self.inner.defer_effect(k, at, r)
    }
    fn dead_letter_effect(&mut self, k: &str, r: &str) -> Result<bool, StateError> {
        self.inner.dead_letter_effect(k, r)
    }
    fn dead_letters(&mut self, c: &str, l: usize) -> Result<Vec<PendingEffect>, StateError> {
        self.inner.dead_letters(c, l)
    }
    fn replay_effect(&mut self, k: &str) -> Result<bool, StateError> {
        self.inner.replay_effect(k)
    }
    fn effect_status(&mut self, k: &str) -> Result<Option<String>, StateError> {
        self.inner.effect_status(k)
    }
    fn reassign_customer(&mut self, f: CustomerId, i: CustomerId) -> Result<usize, StateError> {
        self.inner.reassign_customer(f, i)
    }
    fn active_counts(&mut self) -> Result<BTreeMap<String, u64>, StateError> {
        self.inner.active_counts()
    }
    fn version_activity(
        &mut self,
        journey: &str,
        version: u32,
    ) -> Result<crate::state::VersionActivity, StateError> {
        self.inner.version_activity(journey, version)
    }
}

#[test]
fn a_crash_between_two_steps_neither_repeats_nor_loses_one() {
    let journey = journey(
        "two",
        json!({"steps": [
            {"id": "day", "type": "delay", "for": "1d", "next": "text"},
            {"id": "text", "type": "send", "channel": "sms", "template": "sms-t", "next": "mail"},
            {"id": "mail", "type": "send", "channel": "email", "template": "email-t"}
        ]}),
    );
    let runner = runner(vec![journey]);
    let ada = customer(1);
    // The moves of the run after the delay: day → text, text → mail, mail → end. Kill the
    // process at each, before and after it commits.
    for crash_at in 0..3 {
        for after_commit in [false, true] {
            let mut store = Crashing {
                inner: MemoryJourneyState::default(),
                countdown: None,
                after_commit,
            };
            runner
                .on_event(&mut store, &ada, &event("s", "Signed Up", t0()), t0())
                .unwrap();
            store.countdown = Some(crash_at);
            let at = t0() + hours(24);
            let facts = |_| Ok::<_, String>(&ada);
            assert!(runner.fire_due(&mut store, facts, at, 10).is_err());
            // Restarted: the timer pass takes the entry on from where it is.
            runner.fire_due(&mut store, facts, at, 10).unwrap();
            runner.fire_due(&mut store, facts, at, 10).unwrap();
            let s = &mut store.inner;
            let case = format!("crash at move {crash_at}, after commit: {after_commit}");
            assert_eq!(pending(s, "sms").len(), 1, "{case}");
            assert_eq!(pending(s, "email").len(), 1, "{case}");
            let entry = s.latest_entry(1, "two").unwrap().unwrap();
            assert_eq!(entry.exit_reason.as_deref(), Some(COMPLETED), "{case}");
        }
    }
}

#[test]
fn a_due_entry_fired_twice_from_a_stale_read_acts_once() {
    let runner = runner(vec![nudge()]);
    let mut store = MemoryJourneyState::default();
    let ada = customer(1);
    runner
        .on_event(&mut store, &ada, &event("s", "Signed Up", t0()), t0())
        .unwrap();
    let at = t0() + hours(24);
    let stale = store.due(at, 10).unwrap();
    fire(&runner, &mut store, std::slice::from_ref(&ada), at);
    // Another pass that read the same due entries before the first moved them.
    let version = &runner.versions[0];
    for entry in stale {
        let r = runner
            .proceed(&mut store, &ada, version, entry, steps::Cause::Due, at)
            .unwrap();
        assert_eq!(r, Report::default());
    }
    assert_eq!(pending(&mut store, "sms").len(), 1);
}

#[test]
fn a_send_on_a_loop_sends_once_per_pass() {
    let journey = journey(
        "remind",
        json!({
            "exit": [{"type": "event", "event": "Order Completed"}],
            "steps": [
                {"id": "text", "type": "send", "channel": "sms", "template": "sms-t",
                 "next": "wait"},
                {"id": "wait", "type": "delay", "for": "3d", "next": "text"}
            ]
        }),
    );
    let runner = runner(vec![journey]);
    let mut store = MemoryJourneyState::default();
    let ada = customer(1);
    runner
        .on_event(&mut store, &ada, &event("s", "Signed Up", t0()), t0())
        .unwrap();
    for pass in 1..=2 {
        fire(
            &runner,
            &mut store,
            std::slice::from_ref(&ada),
            t0() + hours(72 * pass),
        );
    }
    let order = event("o", "Order Completed", t0() + hours(150));
    runner
        .on_event(&mut store, &ada, &order, t0() + hours(150))
        .unwrap();
    fire(
        &runner,
        &mut store,
        std::slice::from_ref(&ada),
        t0() + hours(300),
    );
    let keys: BTreeSet<String> = pending(&mut store, "sms")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
}

#[test]
fn a_merge_mid_journey_leaves_one_entry_per_journey_and_one_send_each() {
    let mut cart = nudge();
    cart.key = "cart".into();
    cart.trigger = Trigger::Event {
        event: "Product Added".into(),
        filters: Vec::new(),
    };
    let runner = runner(vec![nudge(), cart]);
    let mut store = MemoryJourneyState::default();
    let (survivor, merged) = (customer(1), customer(2));
    for (c, name) in [
        (&survivor, "Signed Up"),
        (&merged, "Signed Up"),
        (&merged, "Product Added"),
    ] {
        let e = event(&format!("{}-{name}", c.id), name, t0());
        runner.on_event(&mut store, c, &e, t0()).unwrap();
    }
    assert_eq!(runner.on_merge(&mut store, 2, 1).unwrap(), 2);
    let mut active: Vec<String> = store
        .active_entries(1)
        .unwrap()
        .into_iter()
        .map(|e| e.journey)
        .collect();
    active.sort();
    assert_eq!(active, ["cart", "nudge"]);
    assert!(store.active_entries(2).unwrap().is_empty());
    fire(&runner, &mut store, &[survivor], t0() + hours(24));
    let sms = pending(&mut store, "sms");
    let journeys: BTreeSet<&str> = sms
        .iter()
        .filter_map(|e| e.payload["journey"].as_str())
        .collect();
    assert_eq!(sms.len(), 2);
    assert_eq!(journeys, BTreeSet::from(["cart", "nudge"]));
    assert!(sms.iter().all(|e| e.payload["customer"] == 1));
}

// ---- conversions ------------------------------------------------------------------------

#[test]
fn a_conversion_counts_once_per_entry_within_its_window() {
    let mut j = nudge();
    j.goal = Some(
        serde_json::from_value(json!({
            "type": "event", "event": "Order Completed", "revenue": "total", "window": "3d"
        }))
        .unwrap(),
    );
    j.exit = vec![
        crate::definition::ExitCriterion::Goal,
        crate::definition::ExitCriterion::Event {
            event: "Logged In".into(),
            filters: Vec::new(),
        },
    ];
    catalogue().check(&j).unwrap();
    let runner = runner(vec![j]);
    let mut store = MemoryJourneyState::default();
    let customers: Vec<Customer> = (1..=3).map(customer).collect();
    for c in &customers {
        runner
            .on_event(
                &mut store,
                c,
                &event(&format!("s{}", c.id), "Signed Up", t0()),
                t0(),
            )
            .unwrap();
    }
    let sent = t0() + hours(24);
    fire(&runner, &mut store, &customers, sent);
    let order = |id: &str, at, total: f64| {
        event(id, "Order Completed", at).properties(json!({"total": total}))
    };
    // Within three days of the message, twice: one conversion.
    let r = runner
        .on_event(
            &mut store,
            &customers[0],
            &order("o1", sent + hours(30), 120.5),
            sent + hours(30),
        )
        .unwrap();
    assert_eq!(r.conversions, 1);
    let r = runner
        .on_event(
            &mut store,
            &customers[0],
            &order("o2", sent + hours(31), 9.0),
            sent + hours(31),
        )
        .unwrap();
    assert_eq!(r.conversions, 0);
    let entry = store.latest_entry(1, "nudge").unwrap().unwrap();
    let conversion = entry.conversion.unwrap();
    assert_eq!(conversion.revenue, Some(120.5));
    assert_eq!(conversion.cause, "o1");
    assert_eq!(
        conversion.message,
        Some(effect_key("nudge", 1, entry.id, "sms-1"))
    );
    // After the window: none.
    let late = sent + hours(73);
    let r = runner
        .on_event(&mut store, &customers[1], &order("o3", late, 50.0), late)
        .unwrap();
    assert_eq!(r.conversions, 0);
    assert!(
        store
            .latest_entry(2, "nudge")
            .unwrap()
            .unwrap()
            .conversion
            .is_none()
    );
}

#[test]
fn converting_ends_an_entry_whose_journey_exits_on_its_goal() {
    let mut j = nudge();
    j.goal = Some(
        serde_json::from_value(json!({"type": "segment_entered", "segment": "platinum",
            "window": "7d"}))
        .unwrap(),
    );
    j.exit = vec![crate::definition::ExitCriterion::Goal];
    let runner = runner(vec![j]);
    let mut store = MemoryJourneyState::default();
    let ada = customer(1);
    runner
        .on_event(&mut store, &ada, &event("s", "Signed Up", t0()), t0())
        .unwrap();
    let change = MembershipChange {
        id: "me-1".into(),
        of: Membership::Segment("platinum".into()),
        entered: true,
    };
    let r = runner
        .on_membership(&mut store, &ada, &change, t0() + hours(2))
        .unwrap();
    assert_eq!((r.conversions, r.exited), (1, 1));
    let entry = store.latest_entry(1, "nudge").unwrap().unwrap();
    assert_eq!(entry.exit_reason.as_deref(), Some("exit[0]"));
    assert_eq!(
        entry.conversion.map(|c| (c.revenue, c.message)),
        Some((None, None))
    );
    fire(&runner, &mut store, &[ada], t0() + hours(24));
    assert!(pending(&mut store, "sms").is_empty());
}

#[test]
fn held_out_entries_convert_from_their_entry_for_lift() {
    let mut j = nudge();
    j.holdout = 0.5;
    j.goal = Some(
        serde_json::from_value(json!({"type": "event", "event": "Order Completed",
            "window": "2d"}))
        .unwrap(),
    );
    let runner = runner(vec![j]);
    let mut store = MemoryJourneyState::default();
    let mut held = None;
    for id in 0..100 {
        let r = runner
            .on_event(
                &mut store,
                &customer(id),
                &event(&format!("s{id}"), "Signed Up", t0()),
                t0(),
            )
            .unwrap();
        if r.held_out == 1 {
            held = Some(id);
            break;
        }
    }
    let held = held.expect("half are held out");
    let order = event("o", "Order Completed", t0() + hours(5)).properties(json!({"revenue": "30"}));
    let r = runner
        .on_event(&mut store, &customer(held), &order, t0() + hours(5))
        .unwrap();
    assert_eq!(r.conversions, 1);
    let entry = store.latest_entry(held, "nudge").unwrap().unwrap();
    assert_eq!(
        entry.conversion.map(|c| (c.revenue, c.message)),
        Some((Some(30.0), None))
    );
}

// ---- versions ---------------------------------------------------------------------------

#[test]
fn paused_versions_wait_and_unknown_versions_are_left_alone() {
    let mut store = MemoryJourneyState::default();
    let ada = customer(1);
    let running = runner(vec![nudge()]);
    running
        .on_event(&mut store, &ada, &event("s", "Signed Up", t0()), t0())
        .unwrap();
    let paused = Runner::new(vec![Published {
        journey: nudge(),
        version: 1,
        run: Run::Paused,
    }])
    .unwrap();
    let at = t0() + hours(24);
    let r = fire(&paused, &mut store, std::slice::from_ref(&ada), at);
    assert_eq!(r, Report::default(), "its timers are not even read");
    let r = paused
        .on_event(&mut store, &ada, &event("l", "Logged In", at), at)
        .unwrap();
    assert_eq!(r, Report::default());
    let other = runner(vec![split()]);
    let r = fire(&other, &mut store, std::slice::from_ref(&ada), at);
    assert_eq!(r.skipped, 1);
    let r = fire(&running, &mut store, &[ada], at);
    assert_eq!(r.effects, 1);

    let twice = Runner::new(vec![
        Published {
            journey: nudge(),
            version: 1,
            run: Run::Entering,
        },
        Published {
            journey: nudge(),
            version: 2,
            run: Run::Entering,
        },
    ]);
    assert!(matches!(twice, Err(RunError::Versions { .. })));
}

#[test]
fn customers_in_flight_finish_on_their_version() {
    let mut store = MemoryJourneyState::default();
    let ada = customer(1);
    let v1 = runner(vec![nudge()]);
    v1.on_event(&mut store, &ada, &event("s", "Signed Up", t0()), t0())
        .unwrap();
    let mut edited = nudge();
    if let Step::Send(send) = &mut edited.steps[1] {
        send.channel = "email".into();
        send.template = "email-t".into();
    }
    let both = Runner::new(vec![
        Published {
            journey: nudge(),
            version: 1,
            run: Run::Finishing,
        },
        Published {
            journey: edited,
            version: 2,
            run: Run::Entering,
        },
    ])
    .unwrap();
    let bob = customer(2);
    both.on_event(&mut store, &bob, &event("s2", "Signed Up", t0()), t0())
        .unwrap();
    fire(&both, &mut store, &[ada, bob], t0() + hours(24));
    assert_eq!(pending(&mut store, "sms")[0].payload["customer"], 1);
    assert_eq!(pending(&mut store, "email")[0].payload["customer"], 2);
}

use crate::definition::Step;

// ---- a million waiting ------------------------------------------------------------------

/// Counts this thread's live heap bytes and their peak, to show what one call holds.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn track(delta: isize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    /// Starts a measurement: the peak from here on, relative to what is live now.
    pub fn start() -> isize {
        let live = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(live));
        live
    }

    pub fn peak_since(start: isize) -> isize {
        PEAK.with(Cell::get) - start
    }

    // SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as the caller promised for `layout`.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                track(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            // SAFETY: `p` came from `alloc` with this layout.
            unsafe { System.dealloc(p, layout) };
            track(-(layout.size() as isize));
        }
        unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            // SAFETY: as the caller promised for `p`, `layout` and `size`.
            let q = unsafe { System.realloc(p, layout, size) };
            if !q.is_null() {
                track(size as isize - layout.size() as isize);
            }
            q
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;
}

/// A store holding `n` entries of the `nudge` journey waiting in its delay, one byte each
/// (where each is: 0 in the delay, 1 at the send, 2 done), handing them out as they come due.
struct Waiting {
    at: Vec<u8>,
    due: DateTime<Utc>,
    /// The first entry that may still be due.
    cursor: usize,
    effects: usize,
    distinct_keys_checked: bool,
}

impl Waiting {
    fn at(&self, i: usize) -> Entry {
        Entry {
            id: EntryId(i as i64),
            journey: "nudge".into(),
            version: 1,
            customer: i as CustomerId,
            step: if self.at[i] == 0 { "day" } else { "sms-1" }.into(),
            due_at: Some(self.due),
            payload: Value::Null,
            entered_at: self.due - hours(24),
            exit_reason: None,
            held_out: false,
            moves: u32::from(self.at[i]),
            last_message: None,
            conversion: None,
        }
    }
}

fn not_here<T>() -> Result<T, StateError> {
    Err(StateError::Unreadable("not in this test".into()))
}

impl JourneyStateStore for Waiting {
    fn enter(&mut self, _: &NewEntry, _: bool) -> Result<Option<EntryId>, StateError> {
        not_here()
    }
    fn entry(&mut self, id: EntryId) -> Result<Option<Entry>, StateError> {
        Ok(Some(self.at(id.0 as usize)))
    }
    fn active_entries(&mut self, _: CustomerId) -> Result<Vec<Entry>, StateError> {
        not_here()
    }
    fn latest_entry(&mut self, _: CustomerId, _: &str) -> Result<Option<Entry>, StateError> {
        not_here()
    }
    fn advance_with_message(
        &mut self,
        id: EntryId,
        from: &str,
        to: &Move,
        effects: &[Effect],
        _: Option<&crate::state::Message>,
    ) -> Result<bool, StateError> {
        let i = id.0 as usize;
        let (expected, next) = match (from, to) {
            ("day", Move::Step { step, .. }) if step == "sms-1" => (0, 1),
            ("sms-1", Move::Exit { reason }) if reason == COMPLETED => (1, 2),
            other => panic!("an unexpected move {other:?}"),
        };
        if self.at[i] != expected {
            return Ok(false);
        }
        self.at[i] = next;
        if !self.distinct_keys_checked && !effects.is_empty() {
            assert_eq!(effects[0].key, effect_key("nudge", 1, id, "sms-1"));
            self.distinct_keys_checked = true;
        }
        self.effects += effects.len();
        Ok(true)
    }
    fn due_skipping(
        &mut self,
        now: DateTime<Utc>,
        _: &[String],
        limit: usize,
    ) -> Result<Vec<Entry>, StateError> {
        if now < self.due {
            return Ok(Vec::new());
        }
        while self.cursor < self.at.len() && self.at[self.cursor] == 2 {
            self.cursor += 1;
        }
        Ok((self.cursor..self.at.len())
            .filter(|&i| self.at[i] < 2)
            .take(limit)
            .map(|i| self.at(i))
            .collect())
    }
    fn convertible(&mut self, _: CustomerId, _: DateTime<Utc>) -> Result<Vec<Entry>, StateError> {
        not_here()
    }
    fn convert(&mut self, _: EntryId, _: &Conversion) -> Result<bool, StateError> {
        not_here()
    }
    fn exit_journey(&mut self, _: &str, _: &str) -> Result<usize, StateError> {
        not_here()
    }
    fn pending_effects(
        &mut self,
        _: &str,
        _: DateTime<Utc>,
        _: usize,
    ) -> Result<Vec<PendingEffect>, StateError> {
        not_here()
    }
    fn complete_effect(&mut self, _: &str, _: &str, _: bool) -> Result<(), StateError> {
        not_here()
    }
    fn defer_effect(&mut self, _: &str, _: DateTime<Utc>, _: &str) -> Result<bool, StateError> {
        not_here()
    }
    fn dead_letter_effect(&mut self, _: &str, _: &str) -> Result<bool, StateError> {
        not_here()
    }
    fn dead_letters(&mut self, _: &str, _: usize) -> Result<Vec<PendingEffect>, StateError> {
        not_here()
    }
    fn replay_effect(&mut self, _: &str) -> Result<bool, StateError> {
        not_here()
    }
    fn effect_status(&mut self, _: &str) -> Result<Option<String>, StateError> {
        not_here()
    }
    fn reassign_customer(&mut self, _: CustomerId, _: CustomerId) -> Result<usize, StateError> {
        not_here()
    }
    fn active_counts(&mut self) -> Result<BTreeMap<String, u64>, StateError> {
        not_here()
    }
    fn version_activity(
        &mut self,
        _: &str,
        _: u32,
    ) -> Result<crate::state::VersionActivity, StateError> {
        not_here()
    }
}

#[test]
fn a_million_waiting_entries_cost_the_runner_nothing_per_entry() {
    const N: usize = 1_000_000;
    const BATCH: usize = 1_000;
    let runner = runner(vec![nudge()]);
    let due = t0() + hours(24);
    let mut store = Waiting {
        at: vec![0; N],
        due,
        cursor: 0,
        effects: 0,
        distinct_keys_checked: false,
    };
    assert_eq!(
        runner
            .fire_due(&mut store, |id| Ok::<_, String>(customer(id)), t0(), BATCH)
            .unwrap(),
        Report::default()
    );
    let start = heap::start();
    let mut fired = 0;
    loop {
        let r = runner
            .fire_due(&mut store, |id| Ok::<_, String>(customer(id)), due, BATCH)
            .unwrap();
        if r.moves == 0 {
            break;
        }
        fired += r.exited;
    }
    let peak = heap::peak_since(start);
    assert_eq!((fired, store.effects), (N, N));
    assert!(store.at.iter().all(|&at| at == 2));
    // One batch of due entries and their effects at a time: about a thousandth of the
    // entries, however many wait.
    assert!(
        peak < 2 << 20,
        "the runner held {peak} bytes at once for {N} entries"
    );
}
