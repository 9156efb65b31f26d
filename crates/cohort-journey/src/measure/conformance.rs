//! The behaviour every [`JourneyStats`] implementation must have, as one suite of tests.
//!
//! The fixtures are built through the store's [`JourneyStateStore`] API (enter, move with
//! messages and effects, complete effects, convert), as the runner and the channels build them,
//! so the suite checks that the counts read back what those calls recorded. An implementation's
//! crate runs it with
//! [`journey_stats_conformance_suite!`](crate::journey_stats_conformance_suite), given a
//! function that runs a [`JourneyStatsTest`] over a fresh, empty store:
//!
//! ```ignore
//! fn with_state(test: impl cohort_journey::measure::conformance::JourneyStatsTest) {
//!     test.run(&mut cohort_journey::state::MemoryJourneyState::default());
//! }
//! cohort_journey::journey_stats_conformance_suite!(with_state);
//! ```

use super::{
    ConversionCounts, EffectCounts, EntryCounts, ExitCounts, JourneyStats, StepCounts, TouchCounts,
};
use crate::state::{Conversion, Effect, EntryId, JourneyStateStore, Message, Move, NewEntry};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

/// One behaviour of the suite, run over whatever store the implementation lends it.
pub trait JourneyStatsTest {
    fn run<S: JourneyStateStore + JourneyStats>(self, store: &mut S);
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0)
        .single()
        .expect("a valid time")
}

fn minutes(n: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(n)
}

/// When the fixture is counted: a day after it starts.
fn now() -> DateTime<Utc> {
    t0() + Duration::days(1)
}

fn enter<S: JourneyStateStore>(
    store: &mut S,
    journey: &str,
    version: u32,
    customer: i64,
    due_at: Option<DateTime<Utc>>,
    held_out: bool,
) -> EntryId {
    let mut new = NewEntry::new(journey, version, customer, "nudge", t0()).held_out(held_out);
    new.due_at = due_at;
    store
        .enter(&new, true)
        .expect("the store works")
        .expect("entered")
}

/// A send effect as the runner records it.
fn send(journey: &str, version: u32, entry: EntryId, step: &str, channel: &str) -> Effect {
    Effect {
        key: crate::state::effect_key(journey, version, entry, step),
        channel: channel.to_string(),
        payload: json!({
            "kind": "send", "channel": channel, "template": "t",
            "journey": journey, "version": version, "entry": entry.0, "step": step,
            "customer": 0,
        }),
    }
}

/// Leaves `from` to `to`, sending `effect` at `at`; the effect completes with `status` unless
/// it is `None` (still in the outbox).
fn send_and_move<S: JourneyStateStore>(
    store: &mut S,
    entry: EntryId,
    from: &str,
    to: &Move,
    effect: &Effect,
    at: DateTime<Utc>,
    status: Option<&str>,
) {
    let message = Message {
        key: effect.key.clone(),
        at,
    };
    assert!(
        store
            .advance_with_message(
                entry,
                from,
                to,
                std::slice::from_ref(effect),
                Some(&message)
            )
            .expect("the store works")
    );
    if let Some(status) = status {
        store
            .complete_effect(&effect.key, status, true)
            .expect("the store works");
    }
}

fn convert<S: JourneyStateStore>(
    store: &mut S,
    entry: EntryId,
    cause: &str,
    revenue: f64,
    message: Option<&Effect>,
) {
    let conversion = Conversion {
        at: minutes(600),
        cause: cause.to_string(),
        revenue: Some(revenue),
        message: message.map(|m| m.key.clone()),
    };
    assert!(store.convert(entry, &conversion).expect("the store works"));
}

/// Two journeys, one with two versions, treated and held-out entries, every kind of count.
/// Revenues are exact in binary, so sums agree whatever order a store adds them in.
fn fixture<S: JourneyStateStore>(store: &mut S) {
    let later = Move::to_at("later", t0() + Duration::days(3));

    // welcome v1: sent, then converted on m-1 (30); still waiting at `later`.
    let e1 = enter(store, "welcome", 1, 1, Some(t0()), false);
    let e1_sms = send("welcome", 1, e1, "nudge", "sms");
    send_and_move(
        store,
        e1,
        "nudge",
        &later,
        &e1_sms,
        minutes(60),
        Some("sent"),
    );
    convert(store, e1, "m-1", 30.0, Some(&e1_sms));

    // The send still in the outbox, and an effect that is no journey's (no placement).
    let e2 = enter(store, "welcome", 1, 2, Some(t0()), false);
    let e2_sms = send("welcome", 1, e2, "nudge", "sms");
    let stray = Effect {
        key: "stray".into(),
        channel: "sms".into(),
        payload: json!({"to": "+8613800000000"}),
    };
    assert!(
        store
            .advance(e2, "nudge", &Move::exit("completed"), &[e2_sms, stray])
            .unwrap()
    );

    // Converted before any message; due now, so active but not waiting.
    let e3 = enter(store, "welcome", 1, 3, Some(t0()), false);
    convert(store, e3, "m-3", 5.0, None);

    // Held out: one converts (12.5), one does not.
    for (customer, converts) in [(4, true), (5, false)] {
        let e = enter(store, "welcome", 1, customer, Some(t0()), true);
        assert!(
            store
                .advance(e, "nudge", &Move::exit("held out"), &[])
                .unwrap()
        );
        if converts {
            convert(store, e, "m-4", 12.5, None);
        }
    }

    // A send a delivery rule skipped, then an exit criterion.
    let e6 = enter(store, "welcome", 1, 6, Some(t0()), false);
    let e6_sms = send("welcome", 1, e6, "nudge", "sms");
    send_and_move(
        store,
        e6,
        "nudge",
        &Move::exit("exit[0]"),
        &e6_sms,
        minutes(60),
        Some("skipped: quiet hours"),
    );

    // welcome v2: waiting for an event, without a due time.
    enter(store, "welcome", 2, 7, None, false);

    // winback v1, customer 1: touched m-1 before welcome did (20).
    let e8 = enter(store, "winback", 1, 1, Some(t0()), false);
    let e8_push = send("winback", 1, e8, "nudge", "push");
    send_and_move(
        store,
        e8,
        "nudge",
        &Move::exit("completed"),
        &e8_push,
        minutes(30),
        Some("sent"),
    );
    convert(store, e8, "m-1", 20.0, Some(&e8_push));

    // winback v1, customer 9: converted on m-9 (8) after its first message, then sent again,
    // so its touch is placed at its entry (t0) — before welcome's touch of m-9 at t0 + 2 h.
    // By the newer message's time (t0 + 5 h) winback would be last instead.
    let e9 = enter(store, "winback", 1, 9, Some(t0()), false);
    let e9_first = send("winback", 1, e9, "nudge", "push");
    let again = Move::to_at("again", minutes(300));
    send_and_move(
        store,
        e9,
        "nudge",
        &again,
        &e9_first,
        minutes(60),
        Some("sent"),
    );
    convert(store, e9, "m-9", 8.0, Some(&e9_first));
    let e9_again = send("winback", 1, e9, "again", "push");
    send_and_move(
        store,
        e9,
        "again",
        &Move::exit("completed"),
        &e9_again,
        minutes(300),
        Some("failed"),
    );

    // welcome v1, customer 9: touched m-9 at t0 + 2 h (4); waiting at `later`.
    let e10 = enter(store, "welcome", 1, 9, Some(t0()), false);
    let e10_sms = send("welcome", 1, e10, "nudge", "sms");
    send_and_move(
        store,
        e10,
        "nudge",
        &later,
        &e10_sms,
        minutes(120),
        Some("sent"),
    );
    convert(store, e10, "m-9", 4.0, Some(&e10_sms));
}

fn entries(
    journey: &str,
    version: u32,
    held_out: bool,
    counts: [u64; 3],
    revenue: [f64; 2],
) -> EntryCounts {
    EntryCounts {
        journey: journey.into(),
        version,
        held_out,
        entered: counts[0],
        active: counts[1],
        converted: counts[2],
        revenue: revenue[0],
        revenue_squares: revenue[1],
    }
}

fn step(journey: &str, version: u32, step: &str, active: u64, waiting: u64) -> StepCounts {
    StepCounts {
        journey: journey.into(),
        version,
        step: step.into(),
        active,
        waiting,
    }
}

fn exit(journey: &str, version: u32, reason: &str, entries: u64) -> ExitCounts {
    ExitCounts {
        journey: journey.into(),
        version,
        reason: reason.into(),
        entries,
    }
}

fn effect(journey: &str, step: &str, channel: &str, status: &str, effects: u64) -> EffectCounts {
    EffectCounts {
        journey: journey.into(),
        version: 1,
        step: step.into(),
        channel: channel.into(),
        kind: "send".into(),
        status: status.into(),
        effects,
    }
}

fn conversion(
    journey: &str,
    step: Option<&str>,
    conversions: u64,
    revenue: f64,
) -> ConversionCounts {
    ConversionCounts {
        journey: journey.into(),
        version: 1,
        step: step.map(str::to_string),
        conversions,
        revenue,
    }
}

fn touch(journey: &str, first: (u64, f64), last: (u64, f64)) -> TouchCounts {
    TouchCounts {
        journey: journey.into(),
        version: 1,
        first_touch: first.0,
        first_touch_revenue: first.1,
        last_touch: last.0,
        last_touch_revenue: last.1,
    }
}

/// Every count of every journey, in key order.
pub fn counts_by_journey_version_and_step<S: JourneyStateStore + JourneyStats>(store: &mut S) {
    fixture(store);
    let counts = store.journey_stats(None, now()).unwrap();
    assert_eq!(counts.at, now());
    assert_eq!(
        counts.entries,
        vec![
            // e1, e2, e3, e6, e10: 30² + 5² + 4² = 941.
            entries("welcome", 1, false, [5, 3, 3], [39.0, 941.0]),
            entries("welcome", 1, true, [2, 0, 1], [12.5, 156.25]),
            entries("welcome", 2, false, [1, 1, 0], [0.0, 0.0]),
            entries("winback", 1, false, [2, 0, 2], [28.0, 464.0]),
        ]
    );
    assert_eq!(
        counts.steps,
        vec![
            step("welcome", 1, "later", 2, 2),
            step("welcome", 1, "nudge", 1, 0),
            step("welcome", 2, "nudge", 1, 1),
        ]
    );
    assert_eq!(
        counts.exits,
        vec![
            exit("welcome", 1, "completed", 1),
            exit("welcome", 1, "exit[0]", 1),
            exit("welcome", 1, "held out", 2),
            exit("winback", 1, "completed", 2),
        ]
    );
    assert_eq!(
        counts.effects,
        vec![
            effect("welcome", "nudge", "sms", "pending", 1),
            effect("welcome", "nudge", "sms", "sent", 2),
            effect("welcome", "nudge", "sms", "skipped: quiet hours", 1),
            effect("winback", "again", "push", "failed", 1),
            effect("winback", "nudge", "push", "sent", 2),
        ]
    );
    assert_eq!(
        counts.conversions,
        vec![
            conversion("welcome", None, 1, 5.0),
            conversion("welcome", Some("nudge"), 2, 34.0),
            conversion("winback", Some("nudge"), 2, 28.0),
        ]
    );
    assert_eq!(
        counts.touches,
        vec![
            touch("welcome", (0, 0.0), (2, 34.0)),
            touch("winback", (2, 28.0), (0, 0.0)),
        ]
    );
}

/// Asking for one journey gives its rows only, with touches still ranked across journeys.
pub fn one_journey_is_picked_after_ranking_touches<S: JourneyStateStore + JourneyStats>(
    store: &mut S,
) {
    fixture(store);
    let all = store.journey_stats(None, now()).unwrap();
    let winback = store.journey_stats(Some("winback"), now()).unwrap();
    let only = |journey: &str| {
        let mut rows = all.clone();
        rows.entries.retain(|r| r.journey == journey);
        rows.steps.retain(|r| r.journey == journey);
        rows.exits.retain(|r| r.journey == journey);
        rows.effects.retain(|r| r.journey == journey);
        rows.conversions.retain(|r| r.journey == journey);
        rows.touches.retain(|r| r.journey == journey);
        rows
    };
    assert_eq!(winback, only("winback"));
    assert_eq!(winback.touches, vec![touch("winback", (2, 28.0), (0, 0.0))]);
    assert_eq!(
        store.journey_stats(Some("welcome"), now()).unwrap(),
        only("welcome")
    );
    let none = store.journey_stats(Some("nothing"), now()).unwrap();
    assert!(none.entries.is_empty() && none.effects.is_empty() && none.touches.is_empty());
}

/// Time moves entries from waiting to due: at the delay's end they are no longer waiting.
pub fn waiting_ends_when_due<S: JourneyStateStore + JourneyStats>(store: &mut S) {
    fixture(store);
    let at_end = store
        .journey_stats(Some("welcome"), t0() + Duration::days(3))
        .unwrap();
    assert_eq!(
        at_end.steps,
        vec![
            step("welcome", 1, "later", 2, 0),
            step("welcome", 1, "nudge", 1, 0),
            step("welcome", 2, "nudge", 1, 1),
        ]
    );
}

/// After a merge, the survivor's touches of one event are ranked together.
pub fn merged_customers_touches_rank_together<S: JourneyStateStore + JourneyStats>(store: &mut S) {
    // Customers 20 and 21, one person: each touched by one journey, both converting on the
    // same message once they are one (as a conversion recorded after the merge would be).
    let a = enter(store, "alpha", 1, 20, Some(t0()), false);
    let a_sms = send("alpha", 1, a, "nudge", "sms");
    send_and_move(
        store,
        a,
        "nudge",
        &Move::exit("completed"),
        &a_sms,
        minutes(10),
        Some("sent"),
    );
    let b = enter(store, "beta", 1, 21, Some(t0()), false);
    let b_sms = send("beta", 1, b, "nudge", "sms");
    send_and_move(
        store,
        b,
        "nudge",
        &Move::exit("completed"),
        &b_sms,
        minutes(20),
        Some("sent"),
    );
    store.reassign_customer(21, 20).unwrap();
    convert(store, a, "m-20", 10.0, Some(&a_sms));
    convert(store, b, "m-20", 10.0, Some(&b_sms));
    let counts = store.journey_stats(None, now()).unwrap();
    assert_eq!(
        counts.touches,
        vec![
            touch("alpha", (1, 10.0), (0, 0.0)),
            touch("beta", (0, 0.0), (1, 10.0)),
        ]
    );
}

/// An empty store counts nothing.
pub fn an_empty_store_counts_nothing<S: JourneyStateStore + JourneyStats>(store: &mut S) {
    let counts = store.journey_stats(None, now()).unwrap();
    assert_eq!(
        counts,
        super::Counts {
            at: now(),
            ..Default::default()
        }
    );
}

/// Runs the suite: `journey_stats_conformance_suite!(with_state)` in a test module, where
/// `with_state` runs a [`JourneyStatsTest`] over a fresh store.
#[macro_export]
macro_rules! journey_stats_conformance_suite {
    ($with_state:path) => {
        mod journey_stats_conformance {
            use super::*;
            $crate::journey_stats_conformance_suite!(@tests $with_state;
                counts_by_journey_version_and_step,
                one_journey_is_picked_after_ranking_touches,
                waiting_ends_when_due,
                merged_customers_touches_rank_together,
                an_empty_store_counts_nothing
            );
        }
    };
    (@tests $with_state:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                struct Test;
                impl $crate::measure::conformance::JourneyStatsTest for Test {
                    fn run<S>(self, store: &mut S)
                    where
                        S: $crate::state::JourneyStateStore + $crate::measure::JourneyStats,
                    {
                        $crate::measure::conformance::$name(store)
                    }
                }
                $with_state(Test)
            }
        )*
    };
}
