//! The behaviour every [`JourneyStateStore`] implementation must have, as one suite of tests.
//!
//! An implementation's crate runs it with
//! [`journey_state_conformance_suite!`](crate::journey_state_conformance_suite), given a function
//! that runs a [`JourneyStateTest`] over a fresh, empty store:
//!
//! ```ignore
//! fn with_state(test: impl cohort_journey::state_conformance::JourneyStateTest) {
//!     test.run(&mut cohort_journey::state::MemoryJourneyState::default());
//! }
//! cohort_journey::journey_state_conformance_suite!(with_state);
//! ```

use crate::state::{
    Conversion, Effect, EntryId, JourneyStateStore, Message, Move, NewEntry, effect_key,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

/// One behaviour of the suite, run over whatever store the implementation lends it.
pub trait JourneyStateTest {
    fn run<S: JourneyStateStore>(self, store: &mut S);
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0)
        .single()
        .expect("a valid time")
}

fn enter<S: JourneyStateStore>(store: &mut S, journey: &str, customer: i64, step: &str) -> EntryId {
    store
        .enter(&NewEntry::new(journey, 1, customer, step, t0()), false)
        .expect("the store works")
        .expect("entered")
}

fn send(entry: EntryId, step: &str, channel: &str) -> Effect {
    Effect {
        key: effect_key("welcome", 1, entry, step),
        channel: channel.to_string(),
        payload: json!({"to": "+8613800000000", "body": "你好"}),
    }
}

/// Entries read back as they were started; a second active entry in one journey is refused
/// unless concurrent entries are allowed.
pub fn entries_start_once_per_journey_unless_allowed<S: JourneyStateStore>(store: &mut S) {
    let new = NewEntry::new("welcome", 3, 7, "first", t0())
        .payload(json!({"event": "Signed Up", "properties": {"plan": "pro"}}));
    let id = store.enter(&new, false).unwrap().expect("entered");
    let entry = store.entry(id).unwrap().expect("stored");
    assert_eq!(
        (
            entry.journey.as_str(),
            entry.version,
            entry.customer,
            entry.step.as_str()
        ),
        ("welcome", 3, 7, "first")
    );
    assert_eq!(entry.payload, new.payload);
    assert_eq!(entry.entered_at, t0());
    assert!(entry.active());
    assert_eq!(store.enter(&new, false).unwrap(), None);
    let again = store.enter(&new, true).unwrap().expect("allowed");
    assert_ne!(again, id);
    assert!(
        store
            .enter(&NewEntry::new("other", 1, 7, "a", t0()), false)
            .unwrap()
            .is_some()
    );
    let active: Vec<EntryId> = store
        .active_entries(7)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(active.len(), 3);
    assert_eq!(active[0], id, "oldest first");
    assert!(store.active_entries(8).unwrap().is_empty());
}

/// Only a move from the step the entry is at succeeds: of a timer and an event racing for one
/// entry, one wins.
pub fn a_move_succeeds_only_from_the_current_step<S: JourneyStateStore>(store: &mut S) {
    let id = enter(store, "welcome", 1, "wait");
    assert!(store.advance(id, "wait", &Move::to("sms"), &[]).unwrap());
    assert!(!store.advance(id, "wait", &Move::to("email"), &[]).unwrap());
    assert_eq!(store.entry(id).unwrap().unwrap().step, "sms");
    assert!(
        store
            .advance(id, "sms", &Move::exit("completed"), &[])
            .unwrap()
    );
    assert!(!store.advance(id, "sms", &Move::to("again"), &[]).unwrap());
    let entry = store.entry(id).unwrap().unwrap();
    assert_eq!(entry.exit_reason.as_deref(), Some("completed"));
    assert!(store.active_entries(1).unwrap().is_empty());
    // Ended, the journey may be entered again.
    assert!(
        store
            .enter(&NewEntry::new("welcome", 1, 1, "wait", t0()), false)
            .unwrap()
            .is_some()
    );
    assert!(
        !store
            .advance(EntryId(987_654), "wait", &Move::to("x"), &[])
            .unwrap()
    );
}

/// Due entries come earliest first, only once due, and not after they moved on.
pub fn timers_fire_in_order_once_due<S: JourneyStateStore>(store: &mut S) {
    let later = store
        .enter(
            &NewEntry::new("j", 1, 1, "delay", t0()).due_at(t0() + Duration::hours(2)),
            false,
        )
        .unwrap()
        .unwrap();
    let sooner = store
        .enter(
            &NewEntry::new("j", 1, 2, "delay", t0()).due_at(t0() + Duration::hours(1)),
            false,
        )
        .unwrap()
        .unwrap();
    enter(store, "j", 3, "no-timer");
    assert!(store.due(t0(), 10).unwrap().is_empty());
    let due: Vec<EntryId> = store
        .due(t0() + Duration::hours(3), 10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(due, vec![sooner, later]);
    assert_eq!(store.due(t0() + Duration::hours(3), 1).unwrap().len(), 1);
    assert!(
        store
            .advance(sooner, "delay", &Move::to("sms"), &[])
            .unwrap()
    );
    let due: Vec<EntryId> = store
        .due(t0() + Duration::hours(3), 10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(due, vec![later]);
    let rescheduled = Move::to_at("wait-login", t0() + Duration::days(3));
    assert!(store.advance(later, "delay", &rescheduled, &[]).unwrap());
    assert!(store.due(t0() + Duration::hours(3), 10).unwrap().is_empty());
    assert_eq!(
        store.due(t0() + Duration::days(3), 10).unwrap()[0].id,
        later
    );
}

/// Effects are recorded with the move, once per key, and stay pending until done.
pub fn effects_are_recorded_once_and_drained_per_channel<S: JourneyStateStore>(store: &mut S) {
    let a = enter(store, "welcome", 1, "sms");
    let b = enter(store, "welcome", 2, "sms");
    assert!(
        store
            .advance(a, "sms", &Move::to("wait"), &[send(a, "sms", "sms")])
            .unwrap()
    );
    // A move that loses its race records nothing.
    assert!(
        !store
            .advance(a, "sms", &Move::to("wait"), &[send(a, "other", "sms")])
            .unwrap()
    );
    assert!(
        store
            .advance(b, "sms", &Move::to("wait"), &[send(b, "sms", "sms")])
            .unwrap()
    );
    // The same key again (a replayed step elsewhere) is not a second effect.
    let c = enter(store, "welcome", 3, "x");
    assert!(
        store
            .advance(c, "x", &Move::to("y"), &[send(a, "sms", "sms")])
            .unwrap()
    );
    assert!(
        store
            .advance(c, "y", &Move::to("z"), &[send(c, "y", "email")])
            .unwrap()
    );
    let pending = store.pending_effects("sms", 10).unwrap();
    let keys: Vec<&str> = pending.iter().map(|p| p.effect.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            effect_key("welcome", 1, a, "sms"),
            effect_key("welcome", 1, b, "sms")
        ]
    );
    assert_eq!(pending[0].effect, send(a, "sms", "sms"));
    assert_eq!(pending[0].attempts, 0);
    assert_eq!(store.pending_effects("email", 10).unwrap().len(), 1);

    let first = effect_key("welcome", 1, a, "sms");
    store
        .complete_effect(&first, "provider down", false)
        .unwrap();
    let pending = store.pending_effects("sms", 10).unwrap();
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(store.effect_status(&first).unwrap(), None);
    store.complete_effect(&first, "sent", true).unwrap();
    assert_eq!(
        store.effect_status(&first).unwrap().as_deref(),
        Some("sent")
    );
    let keys: Vec<String> = store
        .pending_effects("sms", 10)
        .unwrap()
        .into_iter()
        .map(|p| p.effect.key)
        .collect();
    assert_eq!(keys, vec![effect_key("welcome", 1, b, "sms")]);
}

/// A merge moves the merged customer's entries to the survivor, ending those that would be a
/// second active entry in one journey.
pub fn merges_move_entries_to_the_survivor<S: JourneyStateStore>(store: &mut S) {
    let survivor_welcome = enter(store, "welcome", 10, "wait");
    let merged_welcome = enter(store, "welcome", 11, "wait");
    let merged_cart = enter(store, "cart", 11, "wait");
    assert_eq!(store.reassign_customer(11, 10).unwrap(), 2);
    assert!(store.active_entries(11).unwrap().is_empty());
    let active: Vec<EntryId> = store
        .active_entries(10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(active, vec![survivor_welcome, merged_cart]);
    let ended = store.entry(merged_welcome).unwrap().unwrap();
    assert_eq!(ended.exit_reason.as_deref(), Some("merged"));
    assert_eq!(ended.customer, 10);
    let counts = store.active_counts().unwrap();
    assert_eq!(counts.get("welcome"), Some(&1));
    assert_eq!(counts.get("cart"), Some(&1));
}

/// An entry started with a key is started once for that key, even where concurrent entries
/// are allowed and after the first has ended: a trigger delivered twice enters once.
pub fn a_cause_enters_once<S: JourneyStateStore>(store: &mut S) {
    let new = NewEntry::new("welcome", 1, 7, "first", t0())
        .key("welcome:7:msg-1")
        .held_out(true);
    let id = store.enter(&new, true).unwrap().expect("entered");
    assert_eq!(store.enter(&new, true).unwrap(), None);
    let entry = store.entry(id).unwrap().unwrap();
    assert!(entry.held_out);
    assert_eq!(
        (entry.moves, &entry.last_message, &entry.conversion),
        (0, &None, &None)
    );
    assert!(
        store
            .advance(id, "first", &Move::exit("completed"), &[])
            .unwrap()
    );
    assert_eq!(store.enter(&new, true).unwrap(), None, "not after it ended");
    let other = NewEntry::new("welcome", 1, 7, "first", t0()).key("welcome:7:msg-2");
    let second = store.enter(&other, false).unwrap().expect("another cause");
    assert!(!store.entry(second).unwrap().unwrap().held_out);
    // Without a key, nothing is remembered.
    let plain = NewEntry::new("welcome", 1, 8, "first", t0());
    assert!(store.enter(&plain, true).unwrap().is_some());
    assert!(store.enter(&plain, true).unwrap().is_some());
}

/// The latest entry of a customer in a journey, active or ended, whatever its version.
pub fn the_latest_entry_is_found_active_or_ended<S: JourneyStateStore>(store: &mut S) {
    assert!(store.latest_entry(7, "welcome").unwrap().is_none());
    let first = enter(store, "welcome", 7, "a");
    enter(store, "cart", 7, "a");
    enter(store, "welcome", 8, "a");
    assert_eq!(
        store.latest_entry(7, "welcome").unwrap().map(|e| e.id),
        Some(first)
    );
    assert!(
        store
            .advance(first, "a", &Move::exit("completed"), &[])
            .unwrap()
    );
    let ended = store.latest_entry(7, "welcome").unwrap().expect("ended");
    assert_eq!(ended.exit_reason.as_deref(), Some("completed"));
    let second = store
        .enter(&NewEntry::new("welcome", 2, 7, "a", t0()), false)
        .unwrap()
        .unwrap();
    assert_eq!(
        store.latest_entry(7, "welcome").unwrap().map(|e| e.id),
        Some(second)
    );
}

/// Every move counts; a move that sends records its message with it, and a move that loses
/// its race records neither.
pub fn moves_and_messages_are_recorded_with_the_move<S: JourneyStateStore>(store: &mut S) {
    let id = enter(store, "welcome", 1, "sms");
    let message = Message {
        key: effect_key("welcome", 1, id, "sms"),
        at: t0() + Duration::hours(1),
    };
    assert!(
        store
            .advance_with_message(
                id,
                "sms",
                &Move::to("email"),
                &[send(id, "sms", "sms")],
                Some(&message)
            )
            .unwrap()
    );
    let other = Message {
        key: "other".into(),
        at: t0() + Duration::hours(2),
    };
    assert!(
        !store
            .advance_with_message(id, "sms", &Move::to("x"), &[], Some(&other))
            .unwrap()
    );
    let entry = store.entry(id).unwrap().unwrap();
    assert_eq!(entry.moves, 1);
    assert_eq!(entry.last_message, Some(message.clone()));
    assert_eq!(entry.window_start(), message.at);
    // A move without a message keeps the last one.
    assert!(store.advance(id, "email", &Move::to("end"), &[]).unwrap());
    let entry = store.entry(id).unwrap().unwrap();
    assert_eq!(entry.moves, 2);
    assert_eq!(entry.last_message, Some(message));
}

/// Entries open to a conversion are those without one whose window started at or after the
/// time asked, ended or not; a conversion is recorded once.
pub fn conversions_are_recorded_once_per_entry<S: JourneyStateStore>(store: &mut S) {
    let early = enter(store, "welcome", 5, "a");
    let sent = enter(store, "cart", 5, "a");
    let message = Message {
        key: effect_key("cart", 1, sent, "a"),
        at: t0() + Duration::days(2),
    };
    assert!(
        store
            .advance_with_message(sent, "a", &Move::exit("completed"), &[], Some(&message))
            .unwrap()
    );
    enter(store, "welcome", 6, "a");
    let ids = |store: &mut S, since| -> Vec<EntryId> {
        store
            .convertible(5, since)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(ids(store, t0()), vec![early, sent]);
    assert_eq!(ids(store, t0() + Duration::days(1)), vec![sent]);
    assert!(ids(store, t0() + Duration::days(3)).is_empty());
    let conversion = Conversion {
        at: t0() + Duration::days(2) + Duration::hours(3),
        cause: "order-1".into(),
        revenue: Some(99.5),
        message: Some(message.key.clone()),
    };
    assert!(store.convert(sent, &conversion).unwrap());
    let again = Conversion {
        cause: "order-2".into(),
        ..conversion.clone()
    };
    assert!(!store.convert(sent, &again).unwrap());
    assert_eq!(
        store.entry(sent).unwrap().unwrap().conversion,
        Some(conversion)
    );
    assert_eq!(ids(store, t0()), vec![early]);
    let no_revenue = Conversion {
        at: t0(),
        cause: "segment".into(),
        revenue: None,
        message: None,
    };
    assert!(store.convert(early, &no_revenue).unwrap());
    assert_eq!(
        store.entry(early).unwrap().unwrap().conversion,
        Some(no_revenue)
    );
    assert!(!store.convert(EntryId(987_654), &again).unwrap());
}

/// Paused journeys' timers are left out of what is due.
pub fn due_skips_the_journeys_asked<S: JourneyStateStore>(store: &mut S) {
    let paused = store
        .enter(
            &NewEntry::new("paused", 1, 1, "delay", t0()).due_at(t0()),
            false,
        )
        .unwrap()
        .unwrap();
    let running = store
        .enter(
            &NewEntry::new("running", 1, 1, "delay", t0()).due_at(t0()),
            false,
        )
        .unwrap()
        .unwrap();
    let due = |store: &mut S, skip: &[String]| -> Vec<EntryId> {
        store
            .due_skipping(t0(), skip, 10)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(due(store, &[]), vec![paused, running]);
    assert_eq!(due(store, &["paused".to_string()]), vec![running]);
    assert!(due(store, &["paused".to_string(), "running".to_string()]).is_empty());
}

/// Archiving a journey ends its active entries, and only those.
pub fn a_journey_is_exited_as_a_whole<S: JourneyStateStore>(store: &mut S) {
    let a = store
        .enter(
            &NewEntry::new("old", 1, 1, "delay", t0()).due_at(t0()),
            false,
        )
        .unwrap()
        .unwrap();
    let b = enter(store, "old", 2, "x");
    let done = enter(store, "old", 3, "x");
    assert!(
        store
            .advance(done, "x", &Move::exit("completed"), &[])
            .unwrap()
    );
    let other = enter(store, "new", 1, "x");
    assert_eq!(store.exit_journey("old", "archived").unwrap(), 2);
    for id in [a, b] {
        let entry = store.entry(id).unwrap().unwrap();
        assert_eq!(entry.exit_reason.as_deref(), Some("archived"));
    }
    assert_eq!(
        store.entry(done).unwrap().unwrap().exit_reason.as_deref(),
        Some("completed")
    );
    assert!(store.entry(other).unwrap().unwrap().active());
    assert!(store.due(t0(), 10).unwrap().is_empty());
}

/// Runs every behaviour of the suite as a test; the argument runs a [`JourneyStateTest`]
/// over a fresh store.
#[macro_export]
macro_rules! journey_state_conformance_suite {
    ($with_state:path) => {
        mod journey_state_conformance {
            use super::*;
            $crate::journey_state_conformance_suite!(@tests $with_state;
                entries_start_once_per_journey_unless_allowed,
                a_move_succeeds_only_from_the_current_step,
                timers_fire_in_order_once_due,
                effects_are_recorded_once_and_drained_per_channel,
                merges_move_entries_to_the_survivor,
                a_cause_enters_once,
                the_latest_entry_is_found_active_or_ended,
                moves_and_messages_are_recorded_with_the_move,
                conversions_are_recorded_once_per_entry,
                due_skips_the_journeys_asked,
                a_journey_is_exited_as_a_whole
            );
        }
    };
    (@tests $with_state:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                struct Test;
                impl $crate::state_conformance::JourneyStateTest for Test {
                    fn run<S: $crate::state::JourneyStateStore>(self, store: &mut S) {
                        $crate::state_conformance::$name(store)
                    }
                }
                $with_state(Test)
            }
        )*
    };
}
