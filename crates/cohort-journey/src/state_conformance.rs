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
    Conversion, Effect, EntryId, JourneyStateStore, Message, Move, NewEntry, VersionActivity,
    effect_key,
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
    let pending = store.pending_effects("sms", t0(), 10).unwrap();
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
    assert_eq!(
        (pending[0].not_before, &pending[0].last_error),
        (None, &None)
    );
    assert_eq!(store.pending_effects("email", t0(), 10).unwrap().len(), 1);

    let first = effect_key("welcome", 1, a, "sms");
    store
        .complete_effect(&first, "provider down", false)
        .unwrap();
    let pending = store.pending_effects("sms", t0(), 10).unwrap();
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(store.effect_status(&first).unwrap(), None);
    store.complete_effect(&first, "sent", true).unwrap();
    assert_eq!(
        store.effect_status(&first).unwrap().as_deref(),
        Some("sent")
    );
    let keys: Vec<String> = store
        .pending_effects("sms", t0(), 10)
        .unwrap()
        .into_iter()
        .map(|p| p.effect.key)
        .collect();
    assert_eq!(keys, vec![effect_key("welcome", 1, b, "sms")]);
}

fn keys(pending: Vec<crate::state::PendingEffect>) -> Vec<String> {
    pending.into_iter().map(|p| p.effect.key).collect()
}

/// Records one sms effect per customer in `customers`, in that order; their keys.
fn sms_effects<S: JourneyStateStore>(store: &mut S, customers: &[i64]) -> Vec<String> {
    customers
        .iter()
        .map(|&customer| {
            let id = enter(store, "welcome", customer, "sms");
            let effect = send(id, "sms", "sms");
            assert!(
                store
                    .advance(
                        id,
                        "sms",
                        &Move::exit("completed"),
                        std::slice::from_ref(&effect)
                    )
                    .unwrap()
            );
            effect.key
        })
        .collect()
}

/// A deferred effect counts its attempt, keeps its error, and is left out of what is pending
/// until its retry time; then it comes after the effects never deferred, by retry time.
pub fn deferred_effects_wait_for_their_retry_time<S: JourneyStateStore>(store: &mut S) {
    let k = sms_effects(store, &[1, 2, 3, 4]);
    let (soon, late) = (t0() + Duration::seconds(30), t0() + Duration::minutes(2));
    assert!(
        store
            .defer_effect(&k[0], late, "503 Service Unavailable")
            .unwrap()
    );
    assert!(store.defer_effect(&k[1], soon, "timed out").unwrap());
    assert_eq!(
        keys(store.pending_effects("sms", t0(), 10).unwrap()),
        [k[2].as_str(), k[3].as_str()]
    );
    // Just before the retry time it is not due; at the very instant it is.
    let before = soon - Duration::milliseconds(1);
    assert_eq!(
        keys(store.pending_effects("sms", before, 10).unwrap()),
        [k[2].as_str(), k[3].as_str()]
    );
    assert_eq!(
        keys(store.pending_effects("sms", soon, 10).unwrap()),
        [k[2].as_str(), k[3].as_str(), k[1].as_str()]
    );
    let all = store.pending_effects("sms", late, 10).unwrap();
    assert_eq!(
        keys(all.clone()),
        [k[2].as_str(), k[3].as_str(), k[1].as_str(), k[0].as_str()]
    );
    assert_eq!(all[3].attempts, 1);
    assert_eq!(all[3].not_before, Some(late));
    assert_eq!(
        all[3].last_error.as_deref(),
        Some("503 Service Unavailable")
    );
    assert_eq!(
        keys(store.pending_effects("sms", late, 3).unwrap()),
        [k[2].as_str(), k[3].as_str(), k[1].as_str()]
    );
    assert!(store.pending_effects("email", late, 10).unwrap().is_empty());
    // A later deferral replaces the retry time and the error, and counts again.
    assert!(
        store
            .defer_effect(&k[1], late + Duration::minutes(1), "429")
            .unwrap()
    );
    let again = store
        .pending_effects("sms", late + Duration::minutes(1), 10)
        .unwrap();
    let deferred = again.iter().find(|p| p.effect.key == k[1]).unwrap();
    assert_eq!(
        (deferred.attempts, deferred.last_error.as_deref()),
        (2, Some("429"))
    );
    assert_eq!(keys(again)[3], k[1], "ordered by its new retry time");
    assert_eq!(store.effect_status(&k[1]).unwrap(), None, "still pending");
    // Only pending effects are deferred.
    store.complete_effect(&k[2], "sent", true).unwrap();
    assert!(!store.defer_effect(&k[2], late, "late failure").unwrap());
    assert!(!store.defer_effect("no-such-effect", late, "x").unwrap());
    assert_eq!(store.effect_status(&k[2]).unwrap().as_deref(), Some("sent"));
    assert!(
        !keys(store.pending_effects("sms", late, 10).unwrap()).contains(&k[2]),
        "a deferral does not bring a completed effect back"
    );
}

/// A dead-lettered effect leaves the outbox with its reason, is listed per channel for
/// operators, and a replay puts it back as new; nothing but a dead letter is replayed.
pub fn dead_letters_keep_their_reason_and_replay<S: JourneyStateStore>(store: &mut S) {
    let k = sms_effects(store, &[1, 2, 3]);
    let email = enter(store, "welcome", 9, "mail");
    let mail = send(email, "mail", "email");
    assert!(
        store
            .advance(
                email,
                "mail",
                &Move::exit("completed"),
                std::slice::from_ref(&mail)
            )
            .unwrap()
    );
    assert!(store.defer_effect(&k[1], t0(), "503").unwrap());
    assert!(
        store
            .dead_letter_effect(&k[1], "8 attempts; the last: 503")
            .unwrap()
    );
    assert!(store.dead_letter_effect(&k[0], "no route").unwrap());
    assert!(store.dead_letter_effect(&mail.key, "mailbox full").unwrap());
    assert!(!store.dead_letter_effect(&k[0], "again").unwrap(), "once");
    assert_eq!(
        store.effect_status(&k[1]).unwrap().as_deref(),
        Some(crate::state::DEAD_LETTER)
    );
    let far = t0() + Duration::days(1);
    assert_eq!(
        keys(store.pending_effects("sms", far, 10).unwrap()),
        [k[2].as_str()]
    );
    let dead = store.dead_letters("sms", 10).unwrap();
    assert_eq!(
        keys(dead.clone()),
        [k[0].as_str(), k[1].as_str()],
        "in the order recorded"
    );
    assert_eq!(
        dead[1].last_error.as_deref(),
        Some("8 attempts; the last: 503")
    );
    assert_eq!(dead[1].attempts, 2);
    assert_eq!(
        dead[0].effect,
        send(EntryId(dead_entry(&k[0])), "sms", "sms")
    );
    assert_eq!(keys(store.dead_letters("sms", 1).unwrap()), [k[0].as_str()]);
    assert_eq!(
        keys(store.dead_letters("email", 10).unwrap()),
        [mail.key.as_str()]
    );
    // Completing with the dead-letter status keeps the last error as its reason.
    assert!(
        store
            .defer_effect(&k[2], t0(), "connection refused")
            .unwrap()
    );
    store
        .complete_effect(&k[2], crate::state::DEAD_LETTER, true)
        .unwrap();
    let dead = store.dead_letters("sms", 10).unwrap();
    assert_eq!(dead[2].last_error.as_deref(), Some("connection refused"));

    assert!(store.replay_effect(&k[1]).unwrap());
    assert!(!store.replay_effect(&k[1]).unwrap(), "already back");
    let back = store.pending_effects("sms", t0(), 10).unwrap();
    assert_eq!(keys(back.clone()), [k[1].as_str()]);
    assert_eq!((back[0].attempts, back[0].not_before), (0, None));
    assert_eq!(store.effect_status(&k[1]).unwrap(), None);
    assert_eq!(
        keys(store.dead_letters("sms", 10).unwrap()),
        [k[0].as_str(), k[2].as_str()]
    );
    // Sent effects, pending ones and unknown keys are never replayed.
    store.complete_effect(&k[1], "sent", true).unwrap();
    assert!(!store.replay_effect(&k[1]).unwrap());
    assert_eq!(store.effect_status(&k[1]).unwrap().as_deref(), Some("sent"));
    assert!(store.pending_effects("sms", far, 10).unwrap().is_empty());
    assert!(!store.replay_effect("no-such-effect").unwrap());
}

/// The entry number in an effect key made by [`send`].
fn dead_entry(key: &str) -> i64 {
    key.split(':')
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("an effect key")
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

/// A version's activity: its active entries and the latest message any of them sent.
pub fn a_versions_activity_counts_active_entries_and_the_last_message<S: JourneyStateStore>(
    store: &mut S,
) {
    assert_eq!(
        store.version_activity("welcome", 1).unwrap(),
        VersionActivity::default()
    );
    let a = enter(store, "welcome", 1, "sms");
    let b = enter(store, "welcome", 2, "sms");
    enter(store, "other", 3, "sms");
    let sent = Message {
        key: effect_key("welcome", 1, a, "sms"),
        at: t0() + Duration::hours(3),
    };
    assert!(
        store
            .advance_with_message(
                a,
                "sms",
                &Move::exit("completed"),
                &[send(a, "sms", "sms")],
                Some(&sent)
            )
            .unwrap()
    );
    assert_eq!(
        store.version_activity("welcome", 1).unwrap(),
        VersionActivity {
            active: 1,
            last_message_at: Some(sent.at)
        }
    );
    assert!(
        store
            .advance(b, "sms", &Move::exit("completed"), &[])
            .unwrap()
    );
    assert_eq!(store.version_activity("welcome", 1).unwrap().active, 0);
    assert_eq!(
        store.version_activity("welcome", 2).unwrap(),
        VersionActivity::default()
    );
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
                a_journey_is_exited_as_a_whole,
                deferred_effects_wait_for_their_retry_time,
                dead_letters_keep_their_reason_and_replay,
                a_versions_activity_counts_active_entries_and_the_last_message
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
