//! `cargo bench -p cohort-segment --bench evaluate_tags`: the time to decide every shipped tag for
//! one customer, as the real-time segment engine does when a newcomer arrives or a merge happens.
//! The customer looks like a demo shopper: a dozen traits (one an `address` object), the computed
//! traits of seven orders and sixty recent events of four kinds with order-like properties.

use chrono::{DateTime, TimeDelta, Utc};
use cohort_profile::ComputedTraits;
use cohort_segment::{CustomerView, EventRecord, evaluate, tags::builtin_tags};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn shopper(now: DateTime<Utc>) -> (Map<String, Value>, ComputedTraits, Vec<EventRecord>) {
    let traits = object(json!({
        "email": "wei.zhang@example.com", "phone": "+8613800000000", "name": "张伟",
        "gender": "m", "birthday": "1990-05-01", "signup_channel": "app", "vip_level": "gold",
        "marketing_opt_in": true, "address": {"city": "上海", "street": "南京西路 1266 号"}
    }));
    let counts: BTreeMap<String, i64> = [
        ("Order Completed", 7),
        ("Product Viewed", 40),
        ("Application Opened", 12),
        ("Signed Up", 1),
        ("$page", 30),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_string(), n))
    .collect();
    let computed = ComputedTraits {
        first_seen: Some((now - TimeDelta::days(200)).to_rfc3339()),
        last_seen: Some((now - TimeDelta::days(2)).to_rfc3339()),
        event_count: 90,
        event_counts: counts,
        orders: 7,
        total_revenue: 3500.0,
        revenue_30d: 800.0,
        orders_30d: 2,
        last_order_at: Some((now - TimeDelta::days(5)).to_rfc3339()),
        average_order_value: Some(500.0),
    };
    let names = [
        "Order Completed",
        "Product Viewed",
        "Application Opened",
        "Support Ticket Created",
    ];
    let events = (0..60)
        .map(|i| EventRecord {
            name: names[i % names.len()].to_string(),
            timestamp: now - TimeDelta::hours(i as i64 * 30),
            properties: object(json!({
                "category": "shoes", "coupon": "WELCOME10", "discount": 10,
                "payment_method": "alipay", "affiliation": "app"
            })),
        })
        .collect();
    (traits, computed, events)
}

fn main() {
    let tags = builtin_tags();
    let now = Utc::now();
    let (traits, computed, events) = shopper(now);
    // `cargo bench … -- N` decides N customers; cargo's own flags (`--bench`) are not numbers.
    let customers = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(20_000);
    let mut members = 0usize;
    let started = Instant::now();
    for _ in 0..customers {
        // A view per customer, as the engine makes one per decided customer.
        let view = CustomerView::new(&traits, &computed, &events);
        for tag in &tags {
            members += usize::from(evaluate(black_box(&tag.condition), &view, now, &|_| false));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "evaluate_tags: {} shipped tags, {} held by the sample customer; {:.1} µs per customer for all of them ({:.2} µs per tag), {} customers",
        tags.len(),
        members / customers,
        elapsed.as_secs_f64() * 1e6 / customers as f64,
        elapsed.as_secs_f64() * 1e6 / (customers * tags.len()) as f64,
        customers
    );
}
