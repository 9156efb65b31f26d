//! Every operator and node kind against a small hand-built population.

mod common;

use cohort_profile::ComputedTraits;
use cohort_segment::{Condition, moves_with_time, referenced_events, referenced_segments};
use common::{Customer, cond, event, hours_ago, members, rfc3339};
use serde_json::{Value, json};

const DAY: i64 = 24;

/// Four customers with deliberately different shapes of data.
fn people() -> Vec<Customer> {
    vec![
        Customer::new(1, "ada")
            .traits(json!({
                "city": "上海", "age": 34, "tags": ["vip", "early", 7], "vip": true,
                "signup": "2026-03-10", "score": "88.5", "phone": "+8613800000000",
                "note": "O'Hare", "plan": "gold"
            }))
            .computed(ComputedTraits {
                first_seen: Some(rfc3339(hours_ago(90 * DAY))),
                last_seen: Some(rfc3339(hours_ago(2 * DAY))),
                event_count: 40,
                orders: 5,
                total_revenue: 12000.0,
                revenue_30d: 6200.0,
                orders_30d: 2,
                last_order_at: Some(rfc3339(hours_ago(3 * DAY))),
                average_order_value: Some(2400.0),
                ..Default::default()
            })
            .events(vec![
                event(
                    "Order Completed",
                    3 * DAY,
                    json!({"revenue": 3200, "coupon": "SPRING"}),
                ),
                event("Order Completed", 20 * DAY, json!({"revenue": "3000"})),
                event("Order Completed", 60 * DAY, json!({"revenue": 50})),
                event(
                    "Product Viewed",
                    DAY,
                    json!({"sku": "A-1", "tags": ["sale"]}),
                ),
                event("Signed Up", 90 * DAY, json!({})),
                event("Logged In", 90 * DAY - 1, json!({})),
            ])
            .segments(&["platinum"]),
        Customer::new(2, "bo")
            .traits(json!({
                "city": "北京", "age": "29", "tags": ["new"], "vip": "false",
                "signup": "2025-12-01T08:00:00+08:00", "score": 95, "plan": "silver"
            }))
            .computed(ComputedTraits {
                first_seen: Some(rfc3339(hours_ago(40 * DAY))),
                last_seen: Some(rfc3339(hours_ago(40 * DAY))),
                event_count: 5,
                orders: 1,
                total_revenue: 4000.0,
                revenue_30d: 0.0,
                orders_30d: 0,
                last_order_at: Some(rfc3339(hours_ago(40 * DAY))),
                average_order_value: Some(4000.0),
                ..Default::default()
            })
            .events(vec![
                event("Product Viewed", DAY, json!({"sku": "B-2"})),
                event("Product Viewed", 2 * DAY, json!({"sku": "B-2"})),
                event("Product Viewed", 3 * DAY, json!({"sku": "C-3"})),
                event(
                    "Order Completed",
                    40 * DAY,
                    json!({"revenue": 4000, "gift": true}),
                ),
                // Signed up 30 hours ago and never logged in: the 24 hours have run out.
                event("Signed Up", 30, json!({})),
            ]),
        Customer::new(3, "cy")
            .traits(
                json!({"city": "Shanghai", "age": "unknown", "tags": "vip,early", "vip": false}),
            )
            .computed(ComputedTraits {
                first_seen: Some(rfc3339(hours_ago(5))),
                last_seen: Some(rfc3339(hours_ago(1))),
                event_count: 4,
                ..Default::default()
            })
            .events(vec![
                event("Product Viewed", 1, json!({})),
                event("Product Viewed", 2, json!({})),
                event("Product Viewed", 3, json!({})),
                // Signed up 5 hours ago: not yet judged by a 24-hour not_followed_by.
                event("Signed Up", 5, json!({})),
            ]),
        Customer::new(4, "dee"),
    ]
}

fn who(v: Value) -> Vec<String> {
    members(&cond(v), &people())
}

fn trait_op(key: &str, op: &str, value: Value) -> Vec<String> {
    who(json!({"type": "trait", "key": key, "op": op, "value": value}))
}

fn trait_flag(key: &str, op: &str) -> Vec<String> {
    who(json!({"type": "trait", "key": key, "op": op}))
}

fn computed(key: &str, op: &str, value: Value) -> Vec<String> {
    who(json!({"type": "computed", "key": key, "op": op, "value": value}))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn eq_compares_text_exactly_and_numbers_numerically() {
    assert_eq!(trait_op("city", "eq", json!("上海")), names(&["ada"]));
    assert_eq!(trait_op("age", "eq", json!(29)), names(&["bo"]));
    assert_eq!(trait_op("age", "eq", json!("34.0")), names(&["ada"]));
    assert_eq!(trait_op("score", "eq", json!(88.5)), names(&["ada"]));
    assert_eq!(trait_op("note", "eq", json!("O'Hare")), names(&["ada"]));
}

#[test]
fn eq_on_booleans_accepts_true_and_the_string_true() {
    assert_eq!(trait_op("vip", "eq", json!(true)), names(&["ada"]));
    assert_eq!(trait_op("vip", "eq", json!(false)), names(&["bo", "cy"]));
}

#[test]
fn eq_on_dates_compares_instants_not_spelling() {
    assert_eq!(
        trait_op("signup", "eq", json!("2026-03-10T08:00:00+08:00")),
        names(&["ada"])
    );
    assert_eq!(
        trait_op("signup", "eq", json!("2026-03-10T01:00:00Z")),
        Vec::<String>::new()
    );
    assert_eq!(
        trait_op("signup", "eq", json!("2025-12-01")),
        names(&["bo"])
    );
}

#[test]
fn ne_is_the_exact_complement_of_eq_including_missing_traits() {
    assert_eq!(
        trait_op("city", "ne", json!("上海")),
        names(&["bo", "cy", "dee"])
    );
    assert_eq!(
        trait_op("age", "ne", json!(29)),
        names(&["ada", "cy", "dee"])
    );
}

#[test]
fn ordering_is_numeric_for_numbers_and_numeric_strings() {
    // bo's age is the string "29"; cy's "unknown" is not a number and never compares.
    assert_eq!(trait_op("age", "gt", json!(30)), names(&["ada"]));
    assert_eq!(trait_op("age", "gte", json!("29")), names(&["ada", "bo"]));
    assert_eq!(trait_op("age", "lt", json!(34)), names(&["bo"]));
    assert_eq!(trait_op("age", "lte", json!(34)), names(&["ada", "bo"]));
    // ada's score is the string "88.5", bo's the number 95.
    assert_eq!(trait_op("score", "lt", json!(90)), names(&["ada"]));
    assert_eq!(trait_op("score", "gt", json!("100")), Vec::<String>::new());
}

#[test]
fn ordering_is_lexicographic_for_other_strings() {
    assert_eq!(trait_op("plan", "gt", json!("gold")), names(&["bo"]));
    assert_eq!(
        trait_op("plan", "gte", json!("gold")),
        names(&["ada", "bo"])
    );
    assert_eq!(trait_op("city", "lt", json!("T")), names(&["cy"]));
}

#[test]
fn ordering_on_dates_compares_instants() {
    assert_eq!(
        trait_op("signup", "gt", json!("2026-01-01")),
        names(&["ada"])
    );
    assert_eq!(
        trait_op("signup", "lte", json!("2025-12-01T00:00:00Z")),
        names(&["bo"])
    );
    // bo signed up at 2025-12-01T00:00Z exactly (08:00 in +08:00).
    assert_eq!(
        trait_op("signup", "lt", json!("2025-12-01T00:00:00Z")),
        Vec::<String>::new()
    );
}

#[test]
fn before_and_after_are_strict() {
    assert_eq!(
        trait_op("signup", "before", json!("2026-03-10")),
        names(&["bo"])
    );
    assert_eq!(
        trait_op("signup", "after", json!("2026-03-09")),
        names(&["ada"])
    );
    assert_eq!(
        trait_op("signup", "after", json!("2026-03-10")),
        Vec::<String>::new()
    );
}

#[test]
fn contains_checks_membership_of_lists_and_substrings_of_text() {
    assert_eq!(
        trait_op("tags", "contains", json!("vip")),
        names(&["ada", "cy"])
    );
    // "ea" is inside "early" but is no element of ada's list; cy's tags are one string.
    assert_eq!(trait_op("tags", "contains", json!("ea")), names(&["cy"]));
    assert_eq!(trait_op("tags", "contains", json!(7)), names(&["ada"]));
    assert_eq!(trait_op("tags", "contains", json!("7")), names(&["ada"]));
    assert_eq!(trait_op("city", "contains", json!("海")), names(&["ada"]));
    assert_eq!(
        trait_op("tags", "not_contains", json!("vip")),
        names(&["bo", "dee"])
    );
}

#[test]
fn starts_with_and_ends_with_read_text() {
    assert_eq!(
        trait_op("phone", "starts_with", json!("+86")),
        names(&["ada"])
    );
    assert_eq!(trait_op("city", "ends_with", json!("hai")), names(&["cy"]));
    assert_eq!(
        trait_op("city", "starts_with", json!("上")),
        names(&["ada"])
    );
}

#[test]
fn in_and_not_in_match_any_listed_value() {
    assert_eq!(
        trait_op("city", "in", json!(["上海", "北京"])),
        names(&["ada", "bo"])
    );
    assert_eq!(trait_op("age", "in", json!([29, 30])), names(&["bo"]));
    assert_eq!(
        trait_op("city", "not_in", json!(["上海", "北京"])),
        names(&["cy", "dee"])
    );
}

#[test]
fn exists_and_not_exists_look_at_presence() {
    assert_eq!(trait_flag("phone", "exists"), names(&["ada"]));
    assert_eq!(trait_flag("city", "not_exists"), names(&["dee"]));
}

#[test]
fn between_is_inclusive_and_whole_days_cover_the_day() {
    assert_eq!(
        trait_op("age", "between", json!([29, 34])),
        names(&["ada", "bo"])
    );
    assert_eq!(
        trait_op("age", "between", json!(["30", 40])),
        names(&["ada"])
    );
    assert_eq!(
        trait_op("plan", "between", json!(["a", "h"])),
        names(&["ada"])
    );
    assert_eq!(
        trait_op("signup", "between", json!(["2026-03-01", "2026-03-10"])),
        names(&["ada"])
    );
    assert_eq!(
        trait_op(
            "signup",
            "between",
            json!(["2026-03-01", "2026-03-09T23:59:59Z"])
        ),
        Vec::<String>::new()
    );
}

#[test]
fn within_last_is_relative_to_now() {
    // now is 2026-03-15T12:00Z; ada signed up 2026-03-10 (5.5 days ago), bo in December.
    assert_eq!(
        trait_op("signup", "within_last", json!({"days": 7})),
        names(&["ada"])
    );
    assert_eq!(
        trait_op("signup", "within_last", json!({"days": 5})),
        Vec::<String>::new()
    );
    assert_eq!(
        trait_op("signup", "not_within_last", json!({"days": 7})),
        names(&["bo"])
    );
}

#[test]
fn is_true_and_is_false_accept_booleans_and_their_strings() {
    assert_eq!(trait_flag("vip", "is_true"), names(&["ada"]));
    assert_eq!(trait_flag("vip", "is_false"), names(&["bo", "cy"]));
    assert_eq!(trait_flag("city", "is_true"), Vec::<String>::new());
}

#[test]
fn computed_traits_compare_numbers_and_dates() {
    assert_eq!(computed("revenue_30d", "gt", json!(5000)), names(&["ada"]));
    assert_eq!(computed("orders", "gte", json!("1")), names(&["ada", "bo"]));
    assert_eq!(
        computed("total_revenue", "between", json!([1000, 5000])),
        names(&["bo"])
    );
    assert_eq!(
        computed("average_order_value", "in", json!([4000])),
        names(&["bo"])
    );
    assert_eq!(
        computed("average_order_value", "ne", json!(4000)),
        names(&["ada", "cy", "dee"])
    );
    assert_eq!(
        computed("last_seen", "within_last", json!({"days": 30})),
        names(&["ada", "cy"])
    );
    assert_eq!(
        computed("last_seen", "not_within_last", json!({"days": 30})),
        names(&["bo"])
    );
    assert_eq!(
        computed("first_seen", "after", json!("2026-03-15")),
        names(&["cy"])
    );
    assert_eq!(
        who(json!({"type": "computed", "key": "last_order_at", "op": "not_exists"})),
        names(&["cy", "dee"])
    );
}

#[test]
fn event_counts_treat_missing_names_as_zero() {
    assert_eq!(
        computed("event_counts.Product Viewed", "gte", json!(3)),
        names(&["bo", "cy"])
    );
    assert_eq!(
        computed("event_counts.Order Completed", "eq", json!(0)),
        names(&["cy", "dee"])
    );
    assert_eq!(
        computed("event_counts.Order Completed", "lt", json!(2)),
        names(&["bo", "cy", "dee"])
    );
}

#[test]
fn event_conditions_count_matching_events_in_the_window() {
    let big_orders = |count: Value, window: Value| {
        who(json!({"type": "event", "name": "Order Completed",
            "where": [{"property": "revenue", "op": "gt", "value": 100}],
            "count": count, "window": window}))
    };
    // ada's "3000" is a numeric string and counts; her 50 order does not.
    assert_eq!(
        big_orders(json!({"op": "gte", "value": 2}), json!({"last_days": 30})),
        names(&["ada"])
    );
    assert_eq!(
        big_orders(json!({"op": "gte", "value": 1}), json!({"last_days": 60})),
        names(&["ada", "bo"])
    );
    assert_eq!(
        big_orders(json!({"op": "eq", "value": 1}), json!({"last_hours": 100})),
        names(&["ada"])
    );
    assert_eq!(
        big_orders(
            json!({"op": "gte", "value": 1}),
            json!({"between": ["2026-02-01", "2026-02-05"]})
        ),
        names(&["bo"])
    );
}

#[test]
fn event_count_defaults_to_at_least_once() {
    assert_eq!(
        who(json!({"type": "event", "name": "Signed Up"})),
        names(&["ada", "bo", "cy"])
    );
}

#[test]
fn did_not_perform_includes_customers_without_any_events() {
    assert_eq!(
        who(json!({"type": "event", "name": "Order Completed", "count": {"op": "eq", "value": 0}})),
        names(&["cy", "dee"])
    );
}

#[test]
fn event_property_filters_use_the_same_operators() {
    let with =
        |filter: Value| who(json!({"type": "event", "name": "Order Completed", "where": [filter]}));
    assert_eq!(
        with(json!({"property": "coupon", "op": "exists"})),
        names(&["ada"])
    );
    assert_eq!(
        with(json!({"property": "coupon", "op": "eq", "value": "SPRING"})),
        names(&["ada"])
    );
    assert_eq!(
        with(json!({"property": "gift", "op": "is_true"})),
        names(&["bo"])
    );
    assert_eq!(
        with(json!({"property": "revenue", "op": "in", "value": [4000, 50]})),
        names(&["ada", "bo"])
    );
    // ne is the complement per event: ada's second order has no coupon at all.
    assert_eq!(
        with(json!({"property": "coupon", "op": "ne", "value": "SPRING"})),
        names(&["ada", "bo"])
    );
    let viewed =
        |filter: Value| who(json!({"type": "event", "name": "Product Viewed", "where": [filter]}));
    assert_eq!(
        viewed(json!({"property": "tags", "op": "contains", "value": "sale"})),
        names(&["ada"])
    );
    assert_eq!(
        viewed(json!({"property": "sku", "op": "starts_with", "value": "B-"})),
        names(&["bo"])
    );
}

#[test]
fn platinum_is_high_recent_revenue_and_recent_activity() {
    let by_last_seen = json!({"type": "and", "conditions": [
        {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5000},
        {"type": "computed", "key": "last_seen", "op": "within_last", "value": {"days": 30}}
    ]});
    let by_orders = json!({"type": "and", "conditions": [
        {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5000},
        {"type": "event", "name": "Order Completed", "window": {"last_days": 30}}
    ]});
    assert_eq!(who(by_last_seen), names(&["ada"]));
    assert_eq!(who(by_orders), names(&["ada"]));
}

#[test]
fn viewed_three_times_this_week_but_never_bought() {
    let browsers = json!({"type": "and", "conditions": [
        {"type": "event", "name": "Product Viewed", "count": {"op": "gte", "value": 3},
         "window": {"last_days": 7}},
        {"type": "event", "name": "Order Completed", "count": {"op": "eq", "value": 0}}
    ]});
    // bo viewed three times but bought 40 days ago; cy never bought.
    assert_eq!(who(browsers), names(&["cy"]));
}

#[test]
fn not_followed_by_waits_until_the_hours_have_elapsed() {
    let never_logged_in = json!({"type": "not_followed_by", "first": "Signed Up",
        "then": "Logged In", "within_hours": 24});
    // ada logged in 1 hour after signing up; bo's 24 hours are over; cy's are still running.
    assert_eq!(who(never_logged_in.clone()), names(&["bo"]));
    let cy = &people()[2];
    let c = cond(never_logged_in);
    assert!(!cy.matches(&c, common::now()));
    assert!(cy.matches(&c, common::now() + chrono::TimeDelta::hours(19)));
}

#[test]
fn followed_by_needs_then_within_the_hours_after_first() {
    let quick = |hours: u32| {
        who(
            json!({"type": "followed_by", "first": "Signed Up", "then": "Logged In",
            "within_hours": hours}),
        )
    };
    assert_eq!(quick(1), names(&["ada"]));
    assert_eq!(quick(24), names(&["ada"]));
    let reversed = who(
        json!({"type": "followed_by", "first": "Logged In", "then": "Signed Up",
        "within_hours": 24}),
    );
    assert!(reversed.is_empty());
}

#[test]
fn in_segment_asks_the_caller() {
    assert_eq!(
        who(json!({"type": "in_segment", "segment": "platinum"})),
        names(&["ada"])
    );
    assert!(who(json!({"type": "in_segment", "segment": "unknown"})).is_empty());
}

#[test]
fn boolean_nodes_combine_members() {
    let shanghai = json!({"type": "trait", "key": "city", "op": "contains", "value": "海"});
    let northern = json!({"type": "trait", "key": "city", "op": "eq", "value": "北京"});
    let vip = json!({"type": "trait", "key": "vip", "op": "is_true"});
    assert_eq!(
        who(json!({"type": "or", "conditions": [shanghai, northern]})),
        names(&["ada", "bo"])
    );
    assert_eq!(
        who(json!({"type": "and", "conditions": [shanghai, vip]})),
        names(&["ada"])
    );
    assert_eq!(
        who(json!({"type": "not", "condition": vip})),
        names(&["bo", "cy", "dee"])
    );
    assert_eq!(who(json!({"type": "and", "conditions": []})).len(), 4);
    assert!(who(json!({"type": "or", "conditions": []})).is_empty());
}

#[test]
fn membership_moves_with_relative_time_and_rolling_traits_only() {
    let sensitive = [
        json!({"type": "trait", "key": "d", "op": "within_last", "value": {"days": 1}}),
        json!({"type": "computed", "key": "last_seen", "op": "not_within_last", "value": {"days": 1}}),
        json!({"type": "event", "name": "x", "window": {"last_hours": 1}}),
        json!({"type": "event", "name": "x",
               "where": [{"property": "at", "op": "within_last", "value": {"days": 1}}]}),
        json!({"type": "not_followed_by", "first": "a", "then": "b", "within_hours": 1}),
        json!({"type": "not", "condition": {"type": "or", "conditions": [
            {"type": "in_segment", "segment": "s"},
            {"type": "event", "name": "x", "window": {"last_days": 1}}]}}),
        // The 30-day window of a rolling trait slides by the day, with no event arriving.
        json!({"type": "computed", "key": "revenue_30d", "op": "gt", "value": 1}),
    ];
    let steady = [
        json!({"type": "trait", "key": "d", "op": "after", "value": "2026-01-01"}),
        json!({"type": "event", "name": "x", "window": {"between": ["2026-01-01", "2026-02-01"]}}),
        json!({"type": "followed_by", "first": "a", "then": "b", "within_hours": 1}),
        json!({"type": "computed", "key": "total_revenue", "op": "gt", "value": 1}),
        json!({"type": "in_segment", "segment": "s"}),
    ];
    for v in sensitive {
        assert!(moves_with_time(&cond(v.clone())), "{v}");
    }
    for v in steady {
        assert!(!moves_with_time(&cond(v.clone())), "{v}");
    }
}

#[test]
fn referenced_events_and_segments_list_every_name() {
    let c = cond(json!({"type": "and", "conditions": [
        {"type": "event", "name": "Order Completed"},
        {"type": "not", "condition": {"type": "not_followed_by", "first": "Signed Up",
            "then": "Logged In", "within_hours": 24}},
        {"type": "computed", "key": "event_counts.$page", "op": "gt", "value": 1},
        {"type": "computed", "key": "orders", "op": "gt", "value": 1},
        {"type": "in_segment", "segment": "platinum"},
        {"type": "trait", "key": "city", "op": "exists"}
    ]}));
    let events: Vec<_> = referenced_events(&c).into_iter().collect();
    assert_eq!(
        events,
        ["$page", "Logged In", "Order Completed", "Signed Up"]
    );
    let segments: Vec<_> = referenced_segments(&c).into_iter().collect();
    assert_eq!(segments, ["platinum"]);
}

#[test]
fn conditions_round_trip_through_json() {
    let c = cond(json!({"type": "event", "name": "Order Completed",
        "where": [{"property": "revenue", "op": "between", "value": [10, 20.5]}],
        "count": {"op": "lt", "value": 3}, "window": {"between": ["2026-01-01", "2026-02-01"]}}));
    let text = serde_json::to_string(&c).unwrap();
    assert_eq!(Condition::from_json(&text).unwrap(), c);
}
