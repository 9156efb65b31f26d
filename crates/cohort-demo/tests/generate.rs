use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cohort_demo::{Archetype, Dataset, DemoOptions, generate, stream_events};
use serde_json::Value;

fn end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 34, 56).unwrap() + Duration::milliseconds(789)
}

fn opts(customers: usize, days: u32, seed: u64) -> DemoOptions {
    DemoOptions {
        customers,
        days,
        seed,
        end: end(),
    }
}

/// One shared mid-sized dataset: generation in a debug build is the slow part of these tests.
fn data() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| Dataset::generate(&opts(400, 60, 7)))
}

fn s<'a>(m: &'a Value, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn ts(m: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s(m, "timestamp").unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn same_seed_same_output_and_different_seed_differs() {
    let a = generate(&opts(40, 30, 11));
    let b = generate(&opts(40, 30, 11));
    let c = generate(&opts(40, 30, 12));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn customers_do_not_depend_on_customer_count() {
    let small = Dataset::generate(&opts(10, 30, 5));
    let large = Dataset::generate(&opts(20, 30, 5));
    for (x, y) in small.customers().iter().zip(large.customers()) {
        assert_eq!(x.user_id, y.user_id);
        assert_eq!(x.anonymous_ids, y.anonymous_ids);
        assert_eq!(x.email, y.email);
    }
}

#[test]
fn messages_look_like_segment_messages() {
    let data = data();
    let start = end() - Duration::days(60);
    let mut ids = HashSet::new();
    let mut previous = start;
    for m in data.messages() {
        let kind = s(m, "type").expect("type");
        assert!(
            ["track", "page", "screen", "identify"].contains(&kind),
            "{kind}"
        );
        let id = s(m, "messageId").expect("messageId");
        assert_eq!(id.len(), 36);
        assert!(ids.insert(id.to_string()), "duplicate messageId {id}");

        let raw = s(m, "timestamp").expect("timestamp");
        assert_eq!(raw.len(), 24, "{raw}");
        assert!(raw.ends_with('Z'), "{raw}");
        let t = ts(m);
        assert!(t >= previous, "not sorted at {raw}");
        assert!(t >= start && t <= end(), "{raw} outside the window");
        previous = t;

        assert!(
            s(m, "userId").is_some() || s(m, "anonymousId").is_some(),
            "no identity: {m}"
        );
        match kind {
            "track" => assert!(!s(m, "event").unwrap_or("").is_empty()),
            "page" | "screen" => assert!(s(m, "name").is_some()),
            "identify" => assert!(m["traits"].is_object()),
            _ => unreachable!(),
        }
        let ctx = &m["context"];
        assert!(ctx["library"]["name"].is_string());
        if let Some(device) = ctx.get("device") {
            for key in ["id", "type", "model"] {
                assert!(device[key].is_string(), "device.{key} in {m}");
            }
            let dtype = device["type"].as_str().unwrap();
            assert!(["ios", "android", "web"].contains(&dtype));
            assert!(["zh-CN", "en-US"].contains(&ctx["locale"].as_str().unwrap()));
            let ip = ctx["ip"].as_str().unwrap();
            assert!(
                ["203.0.113.", "198.51.100.", "192.0.2."]
                    .iter()
                    .any(|p| ip.starts_with(p)),
                "{ip}"
            );
            assert!(ctx["os"]["name"].is_string());
            assert_eq!(ctx["userAgent"].is_string(), dtype == "web");
            assert!(s(m, "anonymousId").is_some());
        } else {
            // Backend events: known customer, no device.
            assert!(s(m, "userId").is_some());
            assert_eq!(ctx["library"]["name"], "analytics-node");
        }
    }
}

#[test]
fn events_per_customer_are_in_the_expected_range() {
    let stats = data().stats();
    let per = stats.messages_per_customer();
    assert!((30.0..=90.0).contains(&per), "{per} messages per customer");
    assert!(stats.registered > 0 && stats.registered < stats.customers);
}

#[test]
fn anonymous_visits_are_stitched_by_identify() {
    let data = data();
    let mut seen_anonymously: HashSet<&str> = HashSet::new();
    let mut stitched = 0;
    for m in data.messages() {
        let anon = s(m, "anonymousId");
        let user = s(m, "userId");
        match (anon, user) {
            (Some(a), None) => {
                seen_anonymously.insert(a);
            }
            (Some(a), Some(_))
                if s(m, "type") == Some("identify") && seen_anonymously.contains(a) =>
            {
                stitched += 1;
            }
            _ => {}
        }
    }
    assert!(
        stitched > 50,
        "only {stitched} anonymous-then-identified devices"
    );

    // Signed Up carries both IDs, right after the identify.
    let signups: Vec<_> = data
        .messages()
        .iter()
        .filter(|m| s(m, "event") == Some("Signed Up"))
        .collect();
    assert!(!signups.is_empty());
    assert!(
        signups
            .iter()
            .all(|m| s(m, "userId").is_some() && s(m, "anonymousId").is_some())
    );
}

#[test]
fn some_customers_use_several_devices_and_some_never_register() {
    let data = data();
    let mut anon_by_user: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut user_anons: HashSet<&str> = HashSet::new();
    for m in data.messages() {
        if let (Some(u), Some(a)) = (s(m, "userId"), s(m, "anonymousId")) {
            anon_by_user.entry(u).or_default().insert(a);
            user_anons.insert(a);
        }
    }
    let multi = anon_by_user.values().filter(|a| a.len() > 1).count();
    assert!(multi > 10, "{multi} multi-device customers");

    let ghosts: Vec<_> = data
        .customers()
        .iter()
        .filter(|c| c.user_id.is_none())
        .collect();
    assert!(!ghosts.is_empty());
    for g in ghosts {
        for a in &g.anonymous_ids {
            assert!(
                !user_anons.contains(a.as_str()),
                "ghost device {a} got a userId"
            );
        }
    }

    // The truth record lines up with the messages.
    let all_anons: HashSet<&str> = data
        .messages()
        .iter()
        .filter_map(|m| s(m, "anonymousId"))
        .collect();
    for c in data.customers() {
        for a in &c.anonymous_ids {
            assert!(all_anons.contains(a.as_str()));
        }
        if let Some(u) = &c.user_id {
            let known = anon_by_user.get(u.as_str()).cloned().unwrap_or_default();
            assert!(c.anonymous_ids.iter().all(|a| known.contains(a.as_str())));
        }
    }
}

#[test]
fn churned_customers_stop_early() {
    let data = data();
    let mut last_seen: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for m in data.messages() {
        if let Some(a) = s(m, "anonymousId") {
            last_seen.insert(a, ts(m));
        }
    }
    let early = data
        .customers()
        .iter()
        .filter(|c| c.archetype == Archetype::Churned)
        .filter(|c| {
            c.anonymous_ids
                .iter()
                .filter_map(|a| last_seen.get(a.as_str()))
                .all(|t| *t < end() - Duration::days(14))
        })
        .count();
    assert!(early > 5, "{early} churned customers quiet for two weeks");
}

#[test]
fn profiles_mix_chinese_and_english_names() {
    let data = data();
    let chinese = data.customers().iter().filter(|c| c.chinese_name).count();
    let share = chinese as f64 / data.customers().len() as f64;
    assert!((0.45..=0.75).contains(&share), "{share}");

    let names: Vec<&str> = data
        .messages()
        .iter()
        .filter(|m| s(m, "type") == Some("identify"))
        .filter_map(|m| m["traits"]["name"].as_str())
        .collect();
    let cjk = |n: &str| n.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    assert!(names.iter().any(|n| cjk(n)));
    assert!(names.iter().any(|n| n.is_ascii() && n.contains(' ')));

    let signup_traits: Vec<&Value> = data
        .messages()
        .iter()
        .filter(|m| s(m, "type") == Some("identify") && m["traits"].get("phone").is_some())
        .map(|m| &m["traits"])
        .collect();
    assert!(!signup_traits.is_empty());
    for t in &signup_traits {
        let email = t["email"].as_str().unwrap();
        let domain = email.split('@').nth(1).unwrap();
        assert!(["qq.com", "163.com", "gmail.com", "outlook.com"].contains(&domain));
        let phone = t["phone"].as_str().unwrap();
        assert!(
            phone.starts_with("+861") || phone.starts_with("+1"),
            "{phone}"
        );
        assert!(t["address"]["city"].is_string());
        assert!(t["signup_channel"].is_string());
    }
    let emails: HashSet<_> = data.customers().iter().map(|c| &c.email).collect();
    assert_eq!(emails.len(), data.customers().len());
}

#[test]
fn orders_have_positive_consistent_amounts() {
    let data = data();
    let orders: Vec<&Value> = data
        .messages()
        .iter()
        .filter(|m| s(m, "event") == Some("Order Completed"))
        .collect();
    assert!(orders.len() > 50);
    let mut order_ids = HashSet::new();
    let mut coupons = 0;
    for o in &orders {
        let p = &o["properties"];
        assert!(s(o, "userId").is_some(), "orders need a login");
        assert!(order_ids.insert(p["order_id"].as_str().unwrap().to_string()));
        assert_eq!(p["currency"], "CNY");
        let revenue = p["revenue"].as_f64().unwrap();
        let subtotal = p["subtotal"].as_f64().unwrap();
        let total = p["total"].as_f64().unwrap();
        let shipping = p["shipping"].as_f64().unwrap();
        let discount = p["discount"].as_f64().unwrap();
        assert!(revenue > 0.0);
        assert!((subtotal - discount - revenue).abs() < 0.005);
        assert!((revenue + shipping - total).abs() < 0.005);
        let products = p["products"].as_array().unwrap();
        assert!(!products.is_empty());
        let sum: f64 = products
            .iter()
            .map(|x| x["price"].as_f64().unwrap() * x["quantity"].as_f64().unwrap())
            .sum();
        assert!((sum - subtotal).abs() < 0.005);
        for x in products {
            let price = x["price"].as_f64().unwrap();
            assert!((29.0..=8999.0).contains(&price));
        }
        if p.get("coupon").is_some() {
            coupons += 1;
        }
    }
    assert!(coupons > 0);
    let refunded = data
        .messages()
        .iter()
        .filter(|m| s(m, "event") == Some("Order Refunded"))
        .count();
    assert!(refunded > 0 && refunded < orders.len() / 4);
}

#[test]
fn telemetry_and_lifecycle_events_are_present() {
    let stats = data().stats();
    for event in [
        "Device Telemetry",
        "Application Opened",
        "Product Viewed",
        "Product Added",
        "Products Searched",
        "Cart Viewed",
        "Checkout Started",
        "Logged In",
        "Support Ticket Created",
        "Support Ticket Resolved",
    ] {
        assert!(
            stats.by_event.get(event).copied().unwrap_or(0) > 0,
            "no {event}"
        );
    }
    assert!(stats.by_type.get("screen").copied().unwrap_or(0) > 0);
    assert!(stats.by_type.get("page").copied().unwrap_or(0) > 0);

    let telemetry: Vec<&Value> = data()
        .messages()
        .iter()
        .filter(|m| s(m, "event") == Some("Device Telemetry"))
        .map(|m| &m["properties"])
        .collect();
    for p in &telemetry {
        let battery = p["battery_level"].as_i64().unwrap();
        assert!((0..=100).contains(&battery));
        assert!(p["temperature_c"].is_f64());
        assert!(p["signal_dbm"].as_i64().unwrap() < 0);
        assert!(p["app_version"].is_string());
    }
    let hot = telemetry
        .iter()
        .filter(|p| p["temperature_c"].as_f64().unwrap() > 50.0)
        .count();
    assert!(
        hot > 0 && hot * 10 < telemetry.len(),
        "{hot} of {}",
        telemetry.len()
    );
}

#[test]
fn degenerate_options_do_not_panic() {
    assert!(generate(&opts(0, 60, 1)).is_empty());
    assert!(generate(&opts(5, 0, 1)).is_empty());
    let huge = generate(&opts(3, u32::MAX, 1));
    assert!(huge.iter().all(|m| ts(m) <= end()));
    let short = generate(&opts(30, 1, 1));
    assert!(short.iter().all(|m| ts(m) >= end() - Duration::days(1)));
}

#[test]
fn stream_events_yields_exactly_count() {
    assert_eq!(stream_events(0, 1).count(), 0);
    assert_eq!(stream_events(1, 1).count(), 1);
    let before = Utc::now();
    let events: Vec<Value> = stream_events(5_000, 3).collect();
    assert_eq!(events.len(), 5_000);
    let ids: HashSet<&str> = events.iter().filter_map(|m| s(m, "messageId")).collect();
    assert_eq!(ids.len(), 5_000);
    let users: HashSet<&str> = events.iter().filter_map(|m| s(m, "userId")).collect();
    assert!(users.len() > 50 && users.len() <= 100, "{}", users.len());
    for m in &events {
        assert!(s(m, "userId").is_some() || s(m, "anonymousId").is_some());
        let kind = s(m, "type").unwrap();
        assert!(["track", "page", "identify"].contains(&kind));
        if kind == "track" {
            assert!(s(m, "event").is_some());
        }
        let t = ts(m);
        assert!(t <= Utc::now() && t >= before - Duration::days(30) - Duration::seconds(5));
    }
    // Same seed, same messages apart from the clock.
    let strip = |mut m: Value| {
        m.as_object_mut().unwrap().remove("timestamp");
        m
    };
    let a: Vec<Value> = stream_events(200, 9).map(strip).collect();
    let b: Vec<Value> = stream_events(200, 9).map(strip).collect();
    assert_eq!(a, b);
}
