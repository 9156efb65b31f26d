//! Fixtures and generators shared by the integration tests.
#![allow(dead_code)]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use cohort_profile::ComputedTraits;
use cohort_segment::{Condition, CustomerView, EventRecord, evaluate};
use serde_json::{Map, Value, json};

/// The fixed "now" of every test: a Sunday noon, so "this week" and day windows fall on hours.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
}

pub fn hours_ago(h: i64) -> DateTime<Utc> {
    now() - TimeDelta::hours(h)
}

pub fn event(name: &str, hours: i64, properties: Value) -> EventRecord {
    EventRecord {
        name: name.to_string(),
        timestamp: hours_ago(hours),
        properties: properties.as_object().cloned().unwrap_or_default(),
    }
}

/// One customer of a fixture.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub traits: Map<String, Value>,
    pub computed: ComputedTraits,
    pub events: Vec<EventRecord>,
    /// Segments this customer is already a member of.
    pub segments: Vec<String>,
}

impl Customer {
    pub fn new(id: i64, name: &str) -> Customer {
        Customer {
            id,
            name: name.to_string(),
            traits: Map::new(),
            computed: ComputedTraits::default(),
            events: Vec::new(),
            segments: Vec::new(),
        }
    }

    pub fn traits(mut self, traits: Value) -> Customer {
        self.traits = traits.as_object().cloned().unwrap();
        self
    }

    pub fn computed(mut self, computed: ComputedTraits) -> Customer {
        self.computed = computed;
        self.sync_counts();
        self
    }

    pub fn events(mut self, events: Vec<EventRecord>) -> Customer {
        self.events = events;
        self.sync_counts();
        self
    }

    pub fn segments(mut self, segments: &[&str]) -> Customer {
        self.segments = segments.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `event_counts` always agrees with the events, as the profile keeps it.
    fn sync_counts(&mut self) {
        self.computed.event_counts.clear();
        for e in &self.events {
            *self
                .computed
                .event_counts
                .entry(e.name.clone())
                .or_default() += 1;
        }
    }

    pub fn view(&self) -> CustomerView<'_> {
        CustomerView::new(&self.traits, &self.computed, &self.events)
    }

    pub fn matches(&self, cond: &Condition, at: DateTime<Utc>) -> bool {
        evaluate(cond, &self.view(), at, &|s| {
            self.segments.iter().any(|m| m == s)
        })
    }
}

/// Names of the customers matching `cond` at the fixed now.
pub fn members(cond: &Condition, customers: &[Customer]) -> Vec<String> {
    customers
        .iter()
        .filter(|c| c.matches(cond, now()))
        .map(|c| c.name.clone())
        .collect()
}

pub fn cond(v: Value) -> Condition {
    Condition::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    cohort_core::message::format_timestamp(t)
}

/// Random conditions and customers over a small vocabulary, so that conditions often hit.
pub mod strategies {
    use super::*;
    use cohort_segment::{CountOp, CountRule, Op, PropertyFilter, Window};
    use proptest::prelude::*;
    use proptest::sample::select;

    pub const TRAIT_KEYS: [&str; 6] = ["city", "age", "tags", "vip", "signup", "note"];
    pub const EVENT_NAMES: [&str; 3] = ["A", "B", "Order Completed"];
    pub const PROPERTY_KEYS: [&str; 4] = ["revenue", "coupon", "tags", "gift"];
    pub const SEGMENTS: [&str; 2] = ["s1", "s2"];

    fn scalars() -> Vec<Value> {
        vec![
            json!("上海"),
            json!("北京"),
            json!("a"),
            json!("b"),
            json!("O'Hare"),
            json!(r"back\slash"),
            json!(""),
            json!(0),
            json!(5),
            json!(5.5),
            json!(-1),
            json!(100),
            json!("5"),
            json!("100"),
            json!("007"),
            json!("+5"),
            json!(true),
            json!(false),
            json!("true"),
            json!("2026-03-01"),
            json!("2026-03-14T12:00:00Z"),
            json!("2025-12-31T23:00:00+08:00"),
        ]
    }

    fn numbers() -> Vec<Value> {
        vec![
            json!(0),
            json!(1),
            json!(2),
            json!(5.5),
            json!(100),
            json!("150"),
            json!(5000),
            json!(-3),
        ]
    }

    fn dates() -> Vec<Value> {
        vec![
            json!("2026-01-01"),
            json!("2026-03-01"),
            json!("2026-03-14T12:00:00Z"),
            json!("2026-03-15"),
            json!("2026-03-15T11:00:00+08:00"),
        ]
    }

    fn texts() -> Vec<Value> {
        vec![
            json!("a"),
            json!("b"),
            json!("上"),
            json!("海"),
            json!("O'"),
            json!("c"),
        ]
    }

    /// Sorted pairs of one kind, for `between`.
    fn between_values() -> impl Strategy<Value = Value> {
        prop_oneof![
            (select(numbers()), select(numbers())).prop_map(|(a, b)| ordered(a, b)),
            (select(dates()), select(dates())).prop_map(|(a, b)| ordered(a, b)),
            (select(texts()), select(texts())).prop_map(|(a, b)| ordered(a, b)),
        ]
    }

    fn ordered(a: Value, b: Value) -> Value {
        // Kinds are compared by how conditions read them, which `validate` reports.
        let pair = json!([a, b]);
        let trial = json!({"type": "trait", "key": "k", "op": "between", "value": pair});
        if Condition::from_value(trial).is_ok() {
            pair
        } else {
            json!([b, a])
        }
    }

    fn days() -> impl Strategy<Value = Value> {
        (0u64..60).prop_map(|d| json!({"days": d}))
    }

    /// An operator with a value that usually fits it.
    pub fn op_value() -> impl Strategy<Value = (Op, Option<Value>)> {
        let cmp = select(vec![Op::Eq, Op::Ne, Op::Gt, Op::Gte, Op::Lt, Op::Lte]);
        prop_oneof![
            (cmp, select(scalars())).prop_map(|(o, v)| (o, Some(v))),
            (
                select(vec![Op::Contains, Op::NotContains]),
                select(scalars())
            )
                .prop_map(|(o, v)| (o, Some(v))),
            (select(vec![Op::StartsWith, Op::EndsWith]), select(texts()))
                .prop_map(|(o, v)| (o, Some(v))),
            (
                select(vec![Op::In, Op::NotIn]),
                proptest::collection::vec(select(scalars()), 1..4)
            )
                .prop_map(|(o, v)| (o, Some(Value::Array(v)))),
            select(vec![Op::Exists, Op::NotExists, Op::IsTrue, Op::IsFalse])
                .prop_map(|o| (o, None)),
            between_values().prop_map(|v| (Op::Between, Some(v))),
            (select(vec![Op::Before, Op::After]), select(dates())).prop_map(|(o, v)| (o, Some(v))),
            (select(vec![Op::WithinLast, Op::NotWithinLast]), days())
                .prop_map(|(o, v)| (o, Some(v))),
        ]
    }

    fn computed_leaf() -> impl Strategy<Value = Condition> {
        let numeric_keys = vec![
            "event_count",
            "orders",
            "total_revenue",
            "revenue_30d",
            "orders_30d",
            "average_order_value",
            "event_counts.A",
            "event_counts.Order Completed",
        ];
        let date_keys = vec!["first_seen", "last_seen", "last_order_at"];
        let num_cmp = select(vec![Op::Eq, Op::Ne, Op::Gt, Op::Gte, Op::Lt, Op::Lte]);
        let date_cmp = select(vec![Op::Gt, Op::Lte, Op::Before, Op::After, Op::Eq]);
        let numeric = prop_oneof![
            (num_cmp, select(numbers())).prop_map(|(o, v)| (o, Some(v))),
            (
                select(vec![Op::In, Op::NotIn]),
                proptest::collection::vec(select(numbers()), 1..3)
            )
                .prop_map(|(o, v)| (o, Some(Value::Array(v)))),
            (select(numbers()), select(numbers()))
                .prop_map(|(a, b)| (Op::Between, Some(ordered(a, b)))),
        ];
        let dated = prop_oneof![
            (date_cmp, select(dates())).prop_map(|(o, v)| (o, Some(v))),
            (select(vec![Op::WithinLast, Op::NotWithinLast]), days())
                .prop_map(|(o, v)| (o, Some(v))),
            select(vec![Op::Exists, Op::NotExists]).prop_map(|o| (o, None)),
            (select(dates()), select(dates()))
                .prop_map(|(a, b)| (Op::Between, Some(ordered(a, b)))),
        ];
        prop_oneof![(select(numeric_keys), numeric), (select(date_keys), dated),].prop_map(
            |(key, (op, value))| Condition::Computed {
                key: key.to_string(),
                op,
                value,
            },
        )
    }

    fn window() -> impl Strategy<Value = Option<Window>> {
        prop_oneof![
            Just(None),
            (0u32..40).prop_map(|d| Some(Window::LastDays(d))),
            (0u32..100).prop_map(|h| Some(Window::LastHours(h))),
            (select(dates()), select(dates())).prop_map(|(a, b)| {
                let pair = ordered(a, b);
                Some(Window::Between(
                    pair[0].as_str().unwrap_or_default().to_string(),
                    pair[1].as_str().unwrap_or_default().to_string(),
                ))
            }),
        ]
    }

    fn count() -> impl Strategy<Value = CountRule> {
        let ops = vec![
            CountOp::Eq,
            CountOp::Ne,
            CountOp::Gt,
            CountOp::Gte,
            CountOp::Lt,
            CountOp::Lte,
        ];
        (select(ops), 0u64..4).prop_map(|(op, value)| CountRule { op, value })
    }

    pub fn leaf() -> impl Strategy<Value = Condition> {
        prop_oneof![
            3 => (select(TRAIT_KEYS.to_vec()), op_value()).prop_map(|(key, (op, value))| {
                Condition::Trait { key: key.to_string(), op, value }
            }),
            2 => computed_leaf(),
            3 => (
                select(EVENT_NAMES.to_vec()),
                proptest::collection::vec((select(PROPERTY_KEYS.to_vec()), op_value()), 0..3),
                count(),
                window()
            )
                .prop_map(|(name, filters, count, window)| Condition::Event {
                    name: name.to_string(),
                    filters: filters
                        .into_iter()
                        .map(|(p, (op, value))| PropertyFilter { property: p.to_string(), op, value })
                        .collect(),
                    count,
                    window,
                }),
            1 => (select(EVENT_NAMES.to_vec()), select(EVENT_NAMES.to_vec()), 1u32..72, any::<bool>())
                .prop_map(|(first, then, within_hours, followed)| {
                    let (first, then) = (first.to_string(), then.to_string());
                    if followed {
                        Condition::FollowedBy { first, then, within_hours }
                    } else {
                        Condition::NotFollowedBy { first, then, within_hours }
                    }
                }),
            1 => select(SEGMENTS.to_vec()).prop_map(|s| Condition::InSegment { segment: s.into() }),
        ]
    }

    /// Conditions up to four levels of and/or/not deep.
    pub fn condition() -> impl Strategy<Value = Condition> {
        leaf().prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Condition::and),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Condition::or),
                inner.prop_map(Condition::negate),
            ]
        })
    }

    fn trait_values(key: &'static str) -> Vec<Value> {
        let mut pool = match key {
            "city" => vec![
                json!("上海"),
                json!("北京"),
                json!("O'Hare"),
                json!(r"back\slash"),
            ],
            "age" => vec![
                json!(5),
                json!("5"),
                json!(5.5),
                json!(100),
                json!("007"),
                json!(-1),
            ],
            "tags" => vec![
                json!(["a", "b"]),
                json!([5, "vip"]),
                json!([]),
                json!(["上海"]),
                json!([true]),
            ],
            "vip" => vec![json!(true), json!(false), json!("true"), json!("no")],
            "signup" => vec![
                json!("2026-03-01"),
                json!("2026-03-14T12:00:00Z"),
                json!("2026-03-15 10:00:00"),
                json!("2025-12-31T23:00:00+08:00"),
            ],
            _ => vec![
                json!("a"),
                json!("ab"),
                json!("+5"),
                json!(""),
                json!({"x": 1}),
                json!(null),
            ],
        };
        pool.push(json!("b"));
        pool
    }

    fn traits() -> impl Strategy<Value = Map<String, Value>> {
        let per_key: Vec<_> = TRAIT_KEYS
            .iter()
            .map(|k| proptest::option::of(select(trait_values(k))).prop_map(move |v| (*k, v)))
            .collect();
        per_key.prop_map(|pairs| {
            pairs
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect()
        })
    }

    fn properties() -> impl Strategy<Value = Value> {
        let pool = vec![
            json!({}),
            json!({"revenue": 150}),
            json!({"revenue": "120", "coupon": "SPRING"}),
            json!({"revenue": 50.5, "tags": ["a", 5]}),
            json!({"revenue": "abc", "gift": true}),
            json!({"revenue": "+5", "gift": "true"}),
            json!({"coupon": null, "gift": false}),
            json!({"tags": "a,b", "coupon": "O'Hare"}),
        ];
        select(pool)
    }

    fn events() -> impl Strategy<Value = Vec<EventRecord>> {
        proptest::collection::vec(
            (select(EVENT_NAMES.to_vec()), -24i64..24 * 45, properties()),
            0..7,
        )
        .prop_map(|evs| {
            evs.into_iter()
                .map(|(name, hours, props)| event(name, hours, props))
                .collect()
        })
    }

    fn maybe_date() -> impl Strategy<Value = Option<String>> {
        proptest::option::of((-24i64..24 * 90).prop_map(|h| rfc3339(hours_ago(h))))
    }

    fn computed() -> impl Strategy<Value = ComputedTraits> {
        let money = || select(vec![0.0, 5.5, 100.0, 150.0, 5000.0, 7000.0]);
        (
            (0i64..4, 0i64..4, money(), money()),
            (maybe_date(), maybe_date(), maybe_date()),
            (0i64..20, proptest::option::of(money())),
        )
            .prop_map(
                |(
                    (orders, orders_30d, total_revenue, revenue_30d),
                    (first, last, last_order),
                    (event_count, aov),
                )| {
                    ComputedTraits {
                        first_seen: first,
                        last_seen: last,
                        event_count,
                        event_counts: Default::default(),
                        orders,
                        total_revenue,
                        revenue_30d,
                        orders_30d,
                        last_order_at: last_order,
                        average_order_value: aov,
                    }
                },
            )
    }

    fn customer(id: i64) -> impl Strategy<Value = Customer> {
        (
            traits(),
            computed(),
            events(),
            proptest::sample::subsequence(SEGMENTS.to_vec(), 0..=2),
        )
            .prop_map(move |(traits, computed, events, segments)| {
                let mut c = Customer::new(id, &format!("c{id}"))
                    .computed(computed)
                    .events(events)
                    .segments(&segments);
                c.traits = traits;
                c
            })
    }

    /// A handful of customers with ids 1, 2, ….
    pub fn customers(n: usize) -> impl Strategy<Value = Vec<Customer>> {
        (1..=n as i64).map(customer).collect::<Vec<_>>()
    }
}
