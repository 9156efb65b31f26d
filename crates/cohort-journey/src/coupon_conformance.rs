//! The behaviour every [`CouponStore`] implementation must have, as one suite of tests.
//!
//! An implementation's crate runs it with
//! `coupon_store_conformance_suite!`, given a function that runs a [`CouponTest`] over a fresh,
//! empty store:
//!
//! ```ignore
//! fn with_coupons(test: impl cohort_journey::coupon_conformance::CouponTest) {
//!     test.run(&mut cohort_journey::coupon::MemoryCoupons::default());
//! }
//! cohort_journey::coupon_store_conformance_suite!(with_coupons);
//! ```

use crate::coupon::{
    AddReport, CodePattern, CouponError, CouponStore, Expiry, NewPool, PatternError, PoolCounts,
    Redemption, Refusal, RowProblem, parse_csv,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashSet;

/// One behaviour of the suite, run over whatever store the implementation lends it.
pub trait CouponTest {
    fn run<S: CouponStore>(self, store: &mut S);
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0)
        .single()
        .expect("a valid time")
}

fn codes(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

fn pool<S: CouponStore>(store: &mut S, key: &str, n: usize) {
    store
        .create_pool(&NewPool::new(key, "A pool"))
        .expect("created");
    let added = store.add_codes(key, &codes(key, n)).expect("added");
    assert_eq!(added.added, n as u64);
}

fn issue<S: CouponStore>(store: &mut S, pool: &str, campaign: &str, customer: i64) -> String {
    store
        .issue(
            pool,
            campaign,
            customer,
            &format!("{campaign}:{customer}"),
            t0(),
        )
        .expect("the store works")
        .expect("a code is left")
        .code
}

/// A customer gets one code per campaign: the same again on every later call (whatever the
/// key), another in another campaign.
pub fn one_code_per_customer_per_campaign<S: CouponStore>(store: &mut S) {
    pool(store, "spring", 5);
    let first = store
        .issue("spring", "platinum", 7, "k1", t0())
        .unwrap()
        .unwrap();
    assert_eq!(first.issued_at, t0());
    assert_eq!(first.expires_at, None);
    let again = store
        .issue("spring", "platinum", 7, "k1", t0() + Duration::hours(1))
        .unwrap()
        .unwrap();
    assert_eq!(again, first, "a repeat returns the first issue as it was");
    let other_key = store
        .issue("spring", "platinum", 7, "k2", t0())
        .unwrap()
        .unwrap();
    assert_eq!(other_key.code, first.code);
    let other_campaign = issue(store, "spring", "welcome", 7);
    assert_ne!(other_campaign, first.code);
    let counts = store.counts("spring", t0()).unwrap();
    assert_eq!(
        counts,
        PoolCounts {
            available: 3,
            issued: 2,
            redeemed: 0,
            expired: 0
        }
    );
    // A key names one step of one entry: reused for someone else, it is the caller's bug.
    assert!(matches!(
        store.issue("spring", "platinum", 8, "k1", t0()),
        Err(CouponError::KeyReused(_))
    ));
}

/// Many customers never share a code; a drained pool says so, and repeats still work after.
pub fn codes_are_never_issued_twice_and_exhaustion_is_stated<S: CouponStore>(store: &mut S) {
    pool(store, "many", 300);
    let mut seen = HashSet::new();
    for customer in 0..300 {
        let code = issue(store, "many", "c", customer);
        assert!(
            seen.insert(code),
            "customer {customer} got a code already issued"
        );
    }
    assert_eq!(
        store.issue("many", "c", 300, "c:300", t0()).unwrap(),
        None,
        "exhausted"
    );
    assert_eq!(store.issue("many", "c2", 1, "c2:1", t0()).unwrap(), None);
    // Everyone who had a code still gets the same one.
    let again: HashSet<String> = (0..300).map(|c| issue(store, "many", "c", c)).collect();
    assert_eq!(again, seen);
    let counts = store.counts("many", t0()).unwrap();
    assert_eq!((counts.available, counts.issued), (0, 300));
    // Added codes are issued again.
    store.add_codes("many", &["LATE-1".to_string()]).unwrap();
    assert_eq!(issue(store, "many", "c", 300), "LATE-1");
    assert!(matches!(
        store.issue("nope", "c", 1, "k", t0()),
        Err(CouponError::UnknownPool(_))
    ));
}

/// Codes expire at a fixed time or a duration after issue; a pool past its fixed expiry issues
/// nothing new.
pub fn codes_expire_as_their_pool_says<S: CouponStore>(store: &mut S) {
    let end = t0() + Duration::days(10);
    store
        .create_pool(&NewPool::new("fixed", "Fixed").expiry(Expiry::At(end)))
        .unwrap();
    store.add_codes("fixed", &codes("F", 3)).unwrap();
    store
        .create_pool(
            &NewPool::new("rolling", "Rolling").expiry(Expiry::AfterIssue(Duration::days(2))),
        )
        .unwrap();
    store.add_codes("rolling", &codes("R", 3)).unwrap();
    assert_eq!(
        store.pool("rolling").unwrap().unwrap().expiry,
        Some(Expiry::AfterIssue(Duration::days(2)))
    );

    let fixed = store.issue("fixed", "c", 1, "f1", t0()).unwrap().unwrap();
    assert_eq!(fixed.expires_at, Some(end));
    let later = t0() + Duration::days(1);
    let rolling = store
        .issue("rolling", "c", 1, "r1", later)
        .unwrap()
        .unwrap();
    assert_eq!(rolling.expires_at, Some(later + Duration::days(2)));

    assert!(matches!(
        store.issue("fixed", "c", 2, "f2", end),
        Err(CouponError::PoolExpired { at, .. }) if at == end
    ));
    // The code already issued is still the customer's.
    assert_eq!(
        store
            .issue("fixed", "c", 1, "f1", end)
            .unwrap()
            .unwrap()
            .code,
        fixed.code
    );

    let expired = store
        .redeem(&rolling.code, 1, "o1", later + Duration::days(2))
        .unwrap();
    assert_eq!(
        expired,
        Redemption::Refused(Refusal::Expired {
            at: later + Duration::days(2)
        })
    );
    assert_eq!(
        store.counts("rolling", later + Duration::days(2)).unwrap(),
        PoolCounts {
            available: 2,
            issued: 0,
            redeemed: 0,
            expired: 1
        }
    );
    assert_eq!(
        store.counts("fixed", end).unwrap(),
        PoolCounts {
            available: 0,
            issued: 0,
            redeemed: 0,
            expired: 3
        }
    );
    assert_eq!(
        store.counts("fixed", t0()).unwrap(),
        PoolCounts {
            available: 2,
            issued: 1,
            redeemed: 0,
            expired: 0
        }
    );
}

/// A redemption is recorded once, by the customer the code was issued to; anything else is a
/// refusal with its reason, and the same order again is the same redemption.
pub fn redemptions_follow_the_rules<S: CouponStore>(store: &mut S) {
    pool(store, "vip", 3);
    let code = issue(store, "vip", "platinum", 5);
    let redeemed = Redemption::Redeemed {
        pool: "vip".into(),
        campaign: "platinum".into(),
    };
    assert_eq!(
        store.redeem("NOPE", 5, "o1", t0()).unwrap(),
        Redemption::Refused(Refusal::UnknownCode)
    );
    assert_eq!(
        store.redeem("vip-00002", 5, "o1", t0()).unwrap(),
        Redemption::Refused(Refusal::NotIssued)
    );
    assert_eq!(
        store.redeem(&code, 6, "o1", t0()).unwrap(),
        Redemption::Refused(Refusal::IssuedToAnother)
    );
    assert_eq!(
        store.redeem(&format!(" {code} "), 5, "o1", t0()).unwrap(),
        redeemed,
        "codes are trimmed"
    );
    assert_eq!(
        store.redeem(&code, 5, "o1", t0()).unwrap(),
        redeemed,
        "a replay"
    );
    assert_eq!(
        store.redeem(&code, 5, "o2", t0()).unwrap(),
        Redemption::Refused(Refusal::AlreadyRedeemed { order: "o1".into() })
    );
    assert_eq!(
        store.counts("vip", t0()).unwrap(),
        PoolCounts {
            available: 2,
            issued: 0,
            redeemed: 1,
            expired: 0
        }
    );
}

/// A merged-away customer's codes become the survivor's: the survivor redeems them and is given
/// them again; where both held a code of one campaign, the survivor keeps its own as the
/// campaign's and may redeem both.
pub fn merged_customers_codes_follow_the_survivor<S: CouponStore>(store: &mut S) {
    pool(store, "vip", 6);
    let only_from = issue(store, "vip", "spring", 1);
    let from_both = issue(store, "vip", "platinum", 1);
    let into_both = issue(store, "vip", "platinum", 2);
    assert_eq!(store.reassign_customer(1, 2).unwrap(), 1);
    assert_eq!(store.reassign_customer(3, 3).unwrap(), 0);
    // Given again: the moved code, and the survivor's own where both had one.
    assert_eq!(issue(store, "vip", "spring", 2), only_from);
    assert_eq!(issue(store, "vip", "platinum", 2), into_both);
    let redeemed = |campaign: &str| Redemption::Redeemed {
        pool: "vip".into(),
        campaign: campaign.into(),
    };
    assert_eq!(
        store.redeem(&only_from, 2, "o1", t0()).unwrap(),
        redeemed("spring")
    );
    assert_eq!(
        store.redeem(&from_both, 2, "o2", t0()).unwrap(),
        redeemed("platinum")
    );
    assert_eq!(
        store.redeem(&into_both, 2, "o3", t0()).unwrap(),
        redeemed("platinum")
    );
    // A later merge carries everything on.
    let third = issue(store, "vip", "summer", 2);
    store.reassign_customer(2, 4).unwrap();
    assert_eq!(
        store.redeem(&third, 4, "o4", t0()).unwrap(),
        redeemed("summer")
    );
    assert_eq!(
        store.redeem(&third, 9, "o5", t0()).unwrap(),
        Redemption::Refused(Refusal::AlreadyRedeemed { order: "o4".into() })
    );
    let unmoved = issue(store, "vip", "autumn", 7);
    assert_eq!(
        store.redeem(&unmoved, 4, "o6", t0()).unwrap(),
        Redemption::Refused(Refusal::IssuedToAnother)
    );
}

/// Generated codes match their pattern, are unique, and avoid codes the store holds; a pattern
/// too small for the count is refused.
pub fn generated_codes_match_their_pattern_and_are_unique<S: CouponStore>(store: &mut S) {
    let pattern = CodePattern::parse("SPRING-####-XXXX").unwrap();
    store
        .create_pool(&NewPool::new("gen", "Generated"))
        .unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let report = store
        .generate_codes("gen", &pattern, 500, &mut rng)
        .unwrap();
    assert_eq!(report.added, 500);
    let mut seen = HashSet::new();
    for customer in 0..500 {
        let code = issue(store, "gen", "c", customer);
        assert!(pattern.matches(&code), "{code} does not match");
        assert!(
            !code["SPRING-".len()..].contains(['I', 'L', 'O']),
            "{code} has an ambiguous letter"
        );
        assert!(seen.insert(code));
    }
    assert_eq!(store.issue("gen", "c", 500, "c:500", t0()).unwrap(), None);

    // A small pattern filled completely: every code once, then no more.
    let small = CodePattern::parse("A#").unwrap();
    assert_eq!(small.capacity(), 10);
    store.create_pool(&NewPool::new("small", "Small")).unwrap();
    store.generate_codes("small", &small, 7, &mut rng).unwrap();
    assert_eq!(
        store
            .generate_codes("small", &small, 3, &mut rng)
            .unwrap()
            .added,
        3
    );
    assert_eq!(store.counts("small", t0()).unwrap().available, 10);
    assert!(matches!(
        store.generate_codes("small", &small, 1, &mut rng),
        Err(CouponError::Pattern(PatternError::Crowded { added: 0, .. }))
    ));
    assert!(matches!(
        store.generate_codes("small", &small, 11, &mut rng),
        Err(CouponError::Pattern(PatternError::TooSmall {
            capacity: 10,
            ..
        }))
    ));
    assert!(matches!(
        CodePattern::parse("SPRING"),
        Err(PatternError::NoPlaceholder(_))
    ));
}

/// CSV files with bad rows are refused with their line numbers; codes already held are skipped
/// and counted, in this pool or another.
pub fn csv_imports_refuse_bad_rows_and_skip_known_codes<S: CouponStore>(store: &mut S) {
    assert_eq!(
        parse_csv(b"\xef\xbb\xbfcode\n A1 \nB2\n").unwrap(),
        vec!["A1", "B2"]
    );
    assert_eq!(parse_csv(b"A1\nB2\n").unwrap(), vec!["A1", "B2"]);
    assert_eq!(
        parse_csv(b"name,Code\nx,A1\ny,B2\n").unwrap(),
        vec!["A1", "B2"]
    );
    let long = "Z".repeat(65);
    let bad = format!("code\nA1\n\"  \"\n{long}\nA1\nB 2\n");
    let err = parse_csv(bad.as_bytes()).unwrap_err();
    let rows: Vec<u64> = err.problems.iter().map(|p: &RowProblem| p.row).collect();
    assert_eq!(rows, vec![3, 4, 5, 6]);
    assert!(err.problems[2].reason.contains("row 2"), "{err}");
    assert!(err.to_string().contains("row 4"), "{err}");
    let two_columns = parse_csv(b"A1,x\n").unwrap_err();
    assert_eq!(two_columns.problems[0].row, 1);

    pool(store, "one", 0);
    pool(store, "two", 0);
    let list = parse_csv(b"code\nA1\nB2\nC3\n").unwrap();
    assert_eq!(
        store.add_codes("one", &list[..2]).unwrap(),
        AddReport {
            added: 2,
            skipped: 0
        }
    );
    assert_eq!(
        store.add_codes("one", &list).unwrap(),
        AddReport {
            added: 1,
            skipped: 2
        }
    );
    assert_eq!(
        store
            .add_codes(
                "two",
                &["A1".to_string(), "D4".to_string(), "D4".to_string()]
            )
            .unwrap(),
        AddReport {
            added: 1,
            skipped: 2
        },
        "codes are unique across pools, and repeats in a list are skipped"
    );
    assert!(matches!(
        store.add_codes("one", &["ok".to_string(), String::new()]),
        Err(CouponError::Codes(e)) if e.problems[0].row == 2
    ));
    assert!(matches!(
        store.add_codes("none", &list),
        Err(CouponError::UnknownPool(_))
    ));
    assert!(matches!(
        store.create_pool(&NewPool::new("one", "Again")),
        Err(CouponError::PoolExists(_))
    ));
    assert_eq!(store.counts("one", t0()).unwrap().available, 3);
    assert_eq!(store.pool("missing").unwrap(), None);
}

/// Runs every behaviour of the suite as a test; the argument runs a [`CouponTest`] over a fresh
/// store.
#[macro_export]
macro_rules! coupon_store_conformance_suite {
    ($with_coupons:path) => {
        mod coupon_store_conformance {
            use super::*;
            $crate::coupon_store_conformance_suite!(@tests $with_coupons;
                one_code_per_customer_per_campaign,
                codes_are_never_issued_twice_and_exhaustion_is_stated,
                codes_expire_as_their_pool_says,
                redemptions_follow_the_rules,
                merged_customers_codes_follow_the_survivor,
                generated_codes_match_their_pattern_and_are_unique,
                csv_imports_refuse_bad_rows_and_skip_known_codes
            );
        }
    };
    (@tests $with_coupons:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                struct Test;
                impl $crate::coupon_conformance::CouponTest for Test {
                    fn run<S: $crate::coupon::CouponStore>(self, store: &mut S) {
                        $crate::coupon_conformance::$name(store)
                    }
                }
                $with_coupons(Test)
            }
        )*
    };
}
