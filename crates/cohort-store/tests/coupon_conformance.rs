//! The SQLite coupon store passes the coupon conformance suite (which the in-memory store
//! passes in `cohort-journey`).

use cohort_journey::coupon::CouponStore;
use cohort_journey::coupon_conformance::CouponTest;
use cohort_store::{Store, StoreConfig};
use std::collections::HashSet;

fn with_coupons(test: impl CouponTest) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let mut coupons = store.coupons().expect("the coupon store");
    test.run(&mut coupons);
}

cohort_journey::coupon_store_conformance_suite!(with_coupons);

/// Handles on their own connections, issuing from threads at once, never share a code: the
/// immediate transaction serialises the pick.
#[test]
fn concurrent_handles_never_issue_one_code_twice() {
    use chrono::Utc;
    use cohort_journey::coupon::NewPool;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let mut coupons = store.coupons().expect("the coupon store");
    coupons
        .create_pool(&NewPool::new("burst", "Burst"))
        .expect("created");
    let codes: Vec<String> = (0..400).map(|i| format!("B-{i:04}")).collect();
    coupons.add_codes("burst", &codes).expect("added");
    let now = Utc::now();
    let issued: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let mut handle = store.coupons().expect("a handle");
                s.spawn(move || {
                    (0..100)
                        .map(|i| {
                            let customer = w * 100 + i;
                            handle
                                .issue("burst", "c", customer, &format!("k{customer}"), now)
                                .expect("issued")
                                .expect("a code is left")
                                .code
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("the worker finished"))
            .collect()
    });
    let distinct: HashSet<&String> = issued.iter().collect();
    assert_eq!(distinct.len(), 400);
    assert_eq!(
        coupons
            .issue("burst", "c", 400, "k400", now)
            .expect("works"),
        None
    );
}
