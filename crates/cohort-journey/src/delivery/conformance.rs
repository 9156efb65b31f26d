//! The behaviour every [`DeliveryStore`] implementation must have, as one suite of tests.
//!
//! An implementation's crate runs it with
//! [`delivery_store_conformance_suite!`](crate::delivery_store_conformance_suite), given a
//! function that runs a [`DeliveryStoreTest`] over a fresh, empty store:
//!
//! ```ignore
//! fn with_store(test: impl cohort_journey::delivery::conformance::DeliveryStoreTest) {
//!     test.run(&mut cohort_journey::delivery::MemoryDelivery::default());
//! }
//! cohort_journey::delivery_store_conformance_suite!(with_store);
//! ```

use super::{ConsentFact, ConsentSource, DeliveryStore, Purpose, SendRecord};
use crate::definition::ChannelKind;
use chrono::{DateTime, Duration, TimeZone, Utc};

/// One behaviour of the suite, run over whatever store the implementation lends it.
pub trait DeliveryStoreTest {
    fn run<S: DeliveryStore>(self, store: &mut S);
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0)
        .single()
        .expect("a valid time")
}

fn minutes(n: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(n)
}

fn fact(
    scope: &str,
    allowed: bool,
    source: ConsentSource,
    detail: &str,
    at: DateTime<Utc>,
) -> ConsentFact {
    ConsentFact {
        scope: scope.parse().expect("a scope"),
        allowed,
        source,
        detail: detail.to_string(),
        at,
    }
}

fn send(
    key: &str,
    customer: i64,
    kind: ChannelKind,
    purpose: Purpose,
    at: DateTime<Utc>,
) -> SendRecord {
    SendRecord {
        key: key.to_string(),
        customer,
        channel: format!("{}-main", kind.as_str()),
        kind,
        purpose,
        at,
    }
}

fn scopes<S: DeliveryStore>(store: &mut S, customer: i64) -> Vec<(String, bool)> {
    store
        .consent(customer)
        .expect("the store works")
        .iter()
        .map(|f| (f.scope.to_string(), f.allowed))
        .collect()
}

/// One fact per scope is kept with its source, detail and time: a change replaces it, a
/// repeat or an older fact does not.
pub fn consent_keeps_the_latest_change_per_scope<S: DeliveryStore>(store: &mut S) {
    use ConsentSource::{Channel, SegmentConsent, Traits};
    let first = fact(
        "*:marketing",
        true,
        Traits,
        "traits.unsubscribed",
        minutes(1),
    );
    assert!(store.record_consent(7, &first).unwrap());
    assert!(
        !store
            .record_consent(
                7,
                &fact("*:marketing", true, SegmentConsent, "again", minutes(5))
            )
            .unwrap(),
        "a repeat is no news"
    );
    assert_eq!(store.consent(7).unwrap(), vec![first.clone()]);
    assert!(
        !store
            .record_consent(7, &fact("*:marketing", false, Traits, "stale", minutes(0)))
            .unwrap(),
        "older than the kept fact"
    );
    let stop = ConsentFact::channel_unsubscribe(ChannelKind::Sms, "sms-main: 退订", minutes(2));
    assert!(store.record_consent(7, &stop).unwrap());
    let dnc = fact(
        "contact",
        false,
        Traits,
        "traits.do_not_contact",
        minutes(3),
    );
    assert!(store.record_consent(7, &dnc).unwrap());
    let refused = fact(
        "*:marketing",
        false,
        Channel,
        "email-main: one-click",
        minutes(4),
    );
    assert!(store.record_consent(7, &refused).unwrap());
    // A grant as late as the refusal does not undo it.
    assert!(
        !store
            .record_consent(7, &fact("*:marketing", true, Traits, "tie", minutes(4)))
            .unwrap()
    );
    let kept = store.consent(7).unwrap();
    assert_eq!(kept.len(), 3);
    for expected in [&stop, &dnc, &refused] {
        assert!(kept.contains(expected), "{expected:?} in {kept:?}");
    }
    assert!(store.consent(8).unwrap().is_empty());
}

/// Sends count once per key, from `since` on, marketing only, over all kinds or one.
pub fn sends_count_once_per_key_since_an_instant<S: DeliveryStore>(store: &mut S) {
    use ChannelKind::{Email, Sms};
    use Purpose::{Marketing, Transactional};
    assert!(
        store
            .record_send(&send("j:1:1:sms", 1, Sms, Marketing, minutes(0)))
            .unwrap()
    );
    assert!(
        !store
            .record_send(&send("j:1:1:sms", 1, Sms, Marketing, minutes(9)))
            .unwrap(),
        "the same key after a restart"
    );
    assert!(
        store
            .record_send(&send("j:1:1:email", 1, Email, Marketing, minutes(10)))
            .unwrap()
    );
    assert!(
        store
            .record_send(&send("j:1:1:receipt", 1, Email, Transactional, minutes(11)))
            .unwrap()
    );
    assert!(
        store
            .record_send(&send("j:1:2:sms", 2, Sms, Marketing, minutes(12)))
            .unwrap()
    );
    assert_eq!(store.count_sends(1, None, minutes(0)).unwrap(), 2);
    assert_eq!(store.count_sends(1, Some(Sms), minutes(0)).unwrap(), 1);
    assert_eq!(store.count_sends(1, Some(Email), minutes(0)).unwrap(), 1);
    assert_eq!(
        store.count_sends(1, None, minutes(1)).unwrap(),
        1,
        "since is inclusive, the first is before"
    );
    assert_eq!(store.count_sends(1, None, minutes(10)).unwrap(), 1);
    assert_eq!(store.count_sends(1, None, minutes(11)).unwrap(), 0);
    assert_eq!(store.count_sends(3, None, minutes(0)).unwrap(), 0);
    assert_eq!(store.forget_sends(minutes(10)).unwrap(), 1);
    assert_eq!(store.count_sends(1, None, minutes(0)).unwrap(), 1);
    assert_eq!(store.count_sends(2, Some(Sms), minutes(0)).unwrap(), 1);
}

/// A batch of sends is recorded as each would be alone: keys already there, in the ledger or
/// earlier in the batch, are not counted again.
pub fn a_batch_of_sends_counts_each_key_once<S: DeliveryStore>(store: &mut S) {
    use ChannelKind::{Email, Sms};
    use Purpose::{Marketing, Transactional};
    assert_eq!(store.record_sends(&[]).unwrap(), 0);
    assert!(
        store
            .record_send(&send("j:1:1:sms", 1, Sms, Marketing, minutes(0)))
            .unwrap()
    );
    let batch = [
        send("j:1:1:sms", 1, Sms, Marketing, minutes(5)),
        send("j:1:1:email", 1, Email, Marketing, minutes(5)),
        send("j:1:1:email", 1, Email, Marketing, minutes(6)),
        send("j:1:1:receipt", 1, Email, Transactional, minutes(6)),
        send("j:1:2:sms", 2, Sms, Marketing, minutes(7)),
    ];
    assert_eq!(store.record_sends(&batch).unwrap(), 3, "three new keys");
    assert_eq!(store.count_sends(1, None, minutes(0)).unwrap(), 2);
    assert_eq!(store.count_sends(1, Some(Email), minutes(0)).unwrap(), 1);
    assert_eq!(
        store.count_sends(1, None, minutes(1)).unwrap(),
        1,
        "the repeated key kept its first time"
    );
    assert_eq!(store.count_sends(2, Some(Sms), minutes(0)).unwrap(), 1);
    assert_eq!(store.record_sends(&batch).unwrap(), 0, "the batch again");
}

/// The last context zone is kept unless an older one arrives.
pub fn the_last_context_zone_is_kept<S: DeliveryStore>(store: &mut S) {
    assert_eq!(store.zone(1).unwrap(), None);
    assert!(
        store
            .record_zone(1, chrono_tz::Asia::Shanghai, minutes(1))
            .unwrap()
    );
    assert!(
        !store
            .record_zone(1, chrono_tz::Asia::Shanghai, minutes(2))
            .unwrap()
    );
    assert!(
        !store
            .record_zone(1, chrono_tz::Europe::Berlin, minutes(0))
            .unwrap()
    );
    assert_eq!(store.zone(1).unwrap(), Some(chrono_tz::Asia::Shanghai));
    assert!(
        store
            .record_zone(1, chrono_tz::Pacific::Kiritimati, minutes(3))
            .unwrap()
    );
    assert_eq!(store.zone(1).unwrap(), Some(chrono_tz::Pacific::Kiritimati));
    assert_eq!(store.zone(2).unwrap(), None);
}

/// A merge moves the merged customer's facts, sends and zone to the survivor; where both
/// have a fact for a scope, the later change (a refusal on a tie) stays.
pub fn merges_move_consent_sends_and_zone_to_the_survivor<S: DeliveryStore>(store: &mut S) {
    use ConsentSource::{Channel, Traits};
    let (survivor, merged) = (10, 11);
    let survivor_grant = fact(
        "*:marketing",
        true,
        Traits,
        "traits.unsubscribed",
        minutes(1),
    );
    let merged_refusal = fact(
        "*:marketing",
        false,
        Channel,
        "email-main: one-click",
        minutes(2),
    );
    let survivor_dnc = fact(
        "contact",
        false,
        Traits,
        "traits.do_not_contact",
        minutes(5),
    );
    let merged_dnc_lifted = fact("contact", true, Traits, "traits.do_not_contact", minutes(4));
    let survivor_sms = fact("sms:*", true, Traits, "a", minutes(6));
    let merged_sms = fact("sms:*", false, Channel, "b", minutes(6));
    let merged_only = fact(
        "push:marketing",
        false,
        Traits,
        "traits.push_unsubscribed",
        minutes(3),
    );
    for f in [&survivor_grant, &survivor_dnc, &survivor_sms] {
        store.record_consent(survivor, f).unwrap();
    }
    for f in [
        &merged_refusal,
        &merged_dnc_lifted,
        &merged_sms,
        &merged_only,
    ] {
        store.record_consent(merged, f).unwrap();
    }
    store
        .record_send(&send(
            "a:1:1:s",
            survivor,
            ChannelKind::Sms,
            Purpose::Marketing,
            minutes(1),
        ))
        .unwrap();
    store
        .record_send(&send(
            "a:1:2:s",
            merged,
            ChannelKind::Sms,
            Purpose::Marketing,
            minutes(2),
        ))
        .unwrap();
    store
        .record_zone(survivor, chrono_tz::Asia::Shanghai, minutes(1))
        .unwrap();
    store
        .record_zone(merged, chrono_tz::America::New_York, minutes(2))
        .unwrap();

    store.reassign_customer(merged, survivor).unwrap();

    let kept = store.consent(survivor).unwrap();
    assert_eq!(kept.len(), 4, "{kept:?}");
    for expected in [&merged_refusal, &survivor_dnc, &merged_sms, &merged_only] {
        assert!(kept.contains(expected), "{expected:?} in {kept:?}");
    }
    assert!(store.consent(merged).unwrap().is_empty());
    assert_eq!(
        store
            .count_sends(survivor, Some(ChannelKind::Sms), minutes(0))
            .unwrap(),
        2
    );
    assert_eq!(store.count_sends(merged, None, minutes(0)).unwrap(), 0);
    // The moved send's key is still known: recorded again, it is not a second send.
    assert!(
        !store
            .record_send(&send(
                "a:1:2:s",
                survivor,
                ChannelKind::Sms,
                Purpose::Marketing,
                minutes(2)
            ))
            .unwrap()
    );
    assert_eq!(
        store.zone(survivor).unwrap(),
        Some(chrono_tz::America::New_York)
    );
    assert_eq!(store.zone(merged).unwrap(), None);
    assert_eq!(scopes(store, merged), Vec::<(String, bool)>::new());
}

/// Runs every behaviour of the suite as a test; the argument runs a [`DeliveryStoreTest`]
/// over a fresh store.
#[macro_export]
macro_rules! delivery_store_conformance_suite {
    ($with_store:path) => {
        mod delivery_store_conformance {
            use super::*;
            $crate::delivery_store_conformance_suite!(@tests $with_store;
                consent_keeps_the_latest_change_per_scope,
                sends_count_once_per_key_since_an_instant,
                a_batch_of_sends_counts_each_key_once,
                the_last_context_zone_is_kept,
                merges_move_consent_sends_and_zone_to_the_survivor
            );
        }
    };
    (@tests $with_store:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                struct Test;
                impl $crate::delivery::conformance::DeliveryStoreTest for Test {
                    fn run<S: $crate::delivery::DeliveryStore>(self, store: &mut S) {
                        $crate::delivery::conformance::$name(store)
                    }
                }
                $with_store(Test)
            }
        )*
    };
}
