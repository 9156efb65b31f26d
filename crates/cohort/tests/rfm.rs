//! RFM end to end: orders sent through the ingest API, scored over HTTP and from the CLI, results
//! on the profile API.

mod common;

use chrono::{Duration, SecondsFormat, Utc};
use common::{Server, cohort};
use serde_json::{Value, json};

/// (user, days since last order, orders, revenue, expected code, expected segment). The values
/// are the hand-computed fixture of `cohort_ml::rfm`'s unit tests: three customers per score
/// on every measure, every named segment reached.
const CUSTOMERS: [(&str, i64, u32, f64, &str, &str); 15] = [
    ("r01", 1, 13, 2000.0, "555", "Champions"),
    ("r02", 2, 1, 10.0, "511", "New Customers"),
    ("r03", 3, 4, 300.0, "523", "Potential Loyalist"),
    ("r04", 10, 2, 20.0, "411", "Promising"),
    ("r05", 11, 10, 800.0, "444", "Loyal"),
    ("r06", 12, 7, 100.0, "432", "Potential Loyalist"),
    ("r07", 30, 8, 310.0, "333", "Need Attention"),
    ("r08", 31, 5, 110.0, "322", "About to Sleep"),
    ("r09", 32, 14, 810.0, "354", "Loyal"),
    ("r10", 90, 3, 120.0, "212", "Hibernating"),
    ("r11", 91, 11, 320.0, "243", "At Risk"),
    ("r12", 92, 15, 2100.0, "255", "Cannot Lose Them"),
    ("r13", 200, 6, 30.0, "121", "Lost"),
    ("r14", 201, 9, 820.0, "134", "At Risk"),
    ("r15", 202, 12, 2200.0, "145", "Cannot Lose Them"),
];

fn order(user: &str, id: String, days_ago: i64, revenue: f64) -> Value {
    let at = Utc::now() - Duration::days(days_ago);
    json!({"type": "track", "userId": user, "event": "Order Completed", "messageId": id,
           "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
           "properties": {"revenue": revenue, "currency": "CNY"}})
}

fn seed(s: &Server) {
    let mut batch = Vec::new();
    for (user, days, orders, revenue, _, _) in CUSTOMERS {
        // All of a customer's orders on one day; earlier orders a little earlier that day would
        // change nothing, since the day of the last order is what counts.
        for n in 0..orders {
            batch.push(order(
                user,
                format!("{user}-{n}"),
                days,
                revenue / f64::from(orders),
            ));
        }
    }
    // Ordered 400 days ago only: outside the default window.
    batch.push(order("old", "old-0".into(), 400, 999.0));
    // Browsed, never ordered.
    batch.push(
        json!({"type": "track", "userId": "browser", "event": "Product Viewed",
                      "messageId": "b-0", "properties": {"category": "手机"}}),
    );
    assert_eq!(s.ingest("/v1/batch", &json!({"batch": batch})).status, 200);
    s.settle();
}

fn traits(s: &Server, user: &str) -> Value {
    s.profile("user_id", user).expect("profile")["traits"].clone()
}

#[test]
fn rfm_scores_name_and_cluster_customers_onto_their_profiles() {
    let s = Server::start();
    seed(&s);

    assert_eq!(s.admin_get("/api/v1/rfm/report").status, 404);
    let unauthenticated = s.request("POST", "/api/v1/rfm/run", &[], b"{}");
    assert_eq!(unauthenticated.status, 401);
    let bad = s.admin_send("POST", "/api/v1/rfm/run", &json!({"k": 0}));
    assert_eq!(bad.status, 400, "{}", bad.text());
    let bad = s.admin_send("POST", "/api/v1/rfm/run", &json!({"window": 30}));
    assert_eq!(bad.status, 400, "{}", bad.text());

    // A long window first: the old customer is scored too.
    let r = s.admin_send("POST", "/api/v1/rfm/run", &json!({"window_days": 500}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["report"]["customers"], 16);
    assert!(traits(&s, "old")["rfm_segment"].is_string());

    // The default window (365 days): the fifteen, exactly as computed by hand.
    let r = s.admin_send("POST", "/api/v1/rfm/run", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let run = r.json();
    assert_eq!(run["params"]["window_days"], 365);
    assert_eq!(run["params"]["k"], 5);
    assert_eq!(run["report"]["customers"], 15);
    assert_eq!(run["report"]["k"], 5);
    assert_eq!(run["report"]["clusters"].as_array().map(Vec::len), Some(5));
    assert_eq!(run["profiles"]["written"], 15);
    assert_eq!(run["profiles"]["cleared"], 1);

    for (user, _, _, _, code, segment) in CUSTOMERS {
        let t = traits(&s, user);
        assert_eq!(t["rfm_segment"], segment, "{user}: {t}");
        // Stored as text; the profile API reads an all-digit code back as a number.
        let score = t["rfm_score"].to_string();
        assert_eq!(score.trim_matches('"'), code, "{user}");
        let digit = |i: usize| u64::from(code.as_bytes()[i] - b'0');
        assert_eq!(t["rfm_recency"], digit(0), "{user}");
        assert_eq!(t["rfm_frequency"], digit(1), "{user}");
        assert_eq!(t["rfm_monetary"], digit(2), "{user}");
        let cluster = t["rfm_cluster"].as_u64().expect("cluster number");
        assert!(cluster < 5, "{user}: {cluster}");
    }
    // No order in the window: the previous run's traits are gone.
    let old = traits(&s, "old");
    assert!(old.get("rfm_segment").is_none(), "{old}");
    assert!(old.get("rfm_score").is_none(), "{old}");
    assert!(traits(&s, "browser").get("rfm_segment").is_none());

    // Every named segment has its share of customers and revenue.
    let segments = run["report"]["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 11);
    let find = |name: &str| {
        segments
            .iter()
            .find(|s| s["segment"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(find("Champions")["customers"], 1);
    assert_eq!(find("At Risk")["customers"], 2);
    assert_eq!(find("Cannot Lose Them")["customers"], 2);
    let revenue = find("Cannot Lose Them")["revenue"].as_f64().unwrap_or(0.0);
    assert!((revenue - 4300.0).abs() < 1e-6, "{revenue}");

    // The latest report is the run just made.
    let latest = s.admin_get("/api/v1/rfm/report");
    assert_eq!(latest.status, 200);
    let latest = latest.json();
    assert_eq!(latest["id"], run["id"]);
    assert_eq!(latest["report"], run["report"]);
    assert!(latest.get("profiles").is_none());

    // SQL sees the traits like any others.
    let q = s.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": "SELECT count(*) AS n FROM profile_traits WHERE key = 'rfm_segment' AND value = 'Loyal'"}),
    );
    assert_eq!(q.status, 200, "{}", q.text());
    assert_eq!(q.json()["rows"][0]["n"], 2);

    // The CLI runs the same analysis on the data directory, beside the running server.
    let out = common::succeed(
        cohort()
            .args(["rfm", "--data"])
            .arg(s.dir.path())
            .arg("--json"),
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("JSON from cohort rfm");
    assert_eq!(cli["report"]["segments"], run["report"]["segments"]);
    assert_eq!(
        cli["profiles"]["changed"], 0,
        "the same data changes nothing"
    );
    let table = cohort()
        .args(["rfm", "--data"])
        .arg(s.dir.path())
        .args(["--window-days", "365", "--k", "3"])
        .output()
        .expect("run cohort rfm");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(text.contains("Cannot Lose Them"), "{text}");
    assert!(text.contains("3 of 3 clusters"), "{text}");
}
