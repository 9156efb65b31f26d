//! SQL over the lake and the state store, through the API and the CLI.

mod common;

use common::{Server, cohort};
use serde_json::{Value, json};

fn seed(s: &Server) {
    let mut batch = Vec::new();
    for (i, (user, event, revenue)) in [
        ("q1", "Order Completed", 6000.0),
        ("q1", "Product Viewed", 0.0),
        ("q2", "Order Completed", 120.0),
        ("q2", "Order Completed", 80.0),
        ("q3", "Product Viewed", 0.0),
    ]
    .iter()
    .enumerate()
    {
        batch.push(
            json!({"type": "track", "userId": user, "event": event, "messageId": format!("q{i}"),
                          "properties": {"revenue": revenue, "category": "手机"}}),
        );
    }
    batch.push(json!({"type": "identify", "userId": "q1", "messageId": "qi", "traits": {"city": "上海", "age": 31}}));
    assert_eq!(s.ingest("/v1/batch", &json!({"batch": batch})).status, 200);
    s.settle();
}

fn query(s: &Server, sql: &str) -> (u16, Value) {
    let r = s.admin_send("POST", "/api/v1/query", &json!({"sql": sql}));
    (r.status, r.json())
}

#[test]
fn sql_sees_events_profiles_and_traits() {
    let s = Server::start();
    seed(&s);
    let (status, body) = query(
        &s,
        "SELECT event, count(*) AS n, sum(revenue) AS revenue FROM events WHERE type = 'track' GROUP BY event ORDER BY event",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["event"], "Order Completed");
    assert_eq!(body["rows"][0]["n"], 3);
    assert_eq!(body["rows"][0]["revenue"], 6200.0);
    assert_eq!(body["rows"][1]["n"], 2);

    let (status, body) = query(
        &s,
        "SELECT count(*) AS n FROM profiles WHERE revenue_30d > 5000",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["n"], 1);

    let (_, body) = query(
        &s,
        "SELECT i.value FROM profile_traits t JOIN identities i ON i.customer_id = t.customer_id WHERE t.key = 'city' AND t.value = '上海' AND i.kind = 'user_id'",
    );
    assert_eq!(body["rows"][0]["value"], "q1");
    let (_, body) = query(
        &s,
        "SELECT count(*) AS n FROM events WHERE json_get_str(properties, 'category') = '手机'",
    );
    assert_eq!(body["rows"][0]["n"], 5);
}

#[test]
fn writes_bad_sql_and_timeouts_get_clear_errors() {
    let s = Server::start();
    seed(&s);
    let (status, body) = query(&s, "DROP TABLE events");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("read_only")),
        "{body}"
    );
    let (status, body) = query(&s, "SELEC nothing");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query")),
        "{body}"
    );
    let (status, body) = query(&s, "SELECT no_such_column FROM events");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no_such_column"),
        "{body}"
    );
    let slow = s.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": "SELECT count(*) FROM range(100000000) a CROSS JOIN range(100000000) b", "timeout_secs": 0.5}),
    );
    assert_eq!(slow.status, 408, "{}", slow.text());
    assert_eq!(slow.json()["code"], "query_timeout");
    let csv = s.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": "SELECT 1 AS one", "format": "csv"}),
    );
    assert_eq!(csv.status, 200);
    assert!(csv.text().starts_with("one"), "{}", csv.text());
}

#[test]
fn cli_query_reads_the_same_data() {
    let s = Server::start();
    seed(&s);
    let out = common::succeed(
        cohort()
            .args([
                "query",
                "SELECT count(*) AS n FROM events",
                "--format",
                "json",
                "--data",
            ])
            .arg(s.dir.path()),
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["n"], 6);
    let bad = cohort()
        .args(["query", "DELETE FROM events", "--data"])
        .arg(s.dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("read-only"));
}
