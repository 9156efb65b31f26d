//! The SQLite delivery store passes the delivery store conformance suite (which the in-memory
//! store passes in `cohort-journey`).

use cohort_journey::delivery::conformance::DeliveryStoreTest;
use cohort_store::{Store, StoreConfig};

fn with_store(test: impl DeliveryStoreTest) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let mut delivery = store.delivery().expect("the delivery store");
    test.run(&mut delivery);
}

cohort_journey::delivery_store_conformance_suite!(with_store);

/// The ledger outlives the process: a send recorded again after a restart (its step retried
/// with the same idempotency key) is not counted twice.
#[test]
fn a_send_recorded_again_after_reopening_counts_once() {
    use chrono::{TimeZone, Utc};
    use cohort_journey::definition::ChannelKind;
    use cohort_journey::delivery::{DeliveryStore, Purpose, SendRecord};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let at = Utc.with_ymd_and_hms(2026, 5, 6, 12, 0, 0).unwrap();
    let send = SendRecord {
        key: "welcome:1:7:sms".into(),
        customer: 7,
        channel: "sms-main".into(),
        kind: ChannelKind::Sms,
        purpose: Purpose::Marketing,
        at,
    };
    {
        let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
        assert!(store.delivery().unwrap().record_send(&send).unwrap());
    }
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store again");
    let mut delivery = store.delivery().unwrap();
    assert!(!delivery.record_send(&send).unwrap());
    assert_eq!(
        delivery.count_sends(7, Some(ChannelKind::Sms), at).unwrap(),
        1
    );
}
