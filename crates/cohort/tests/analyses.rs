//! Analyses end to end: a hand-built journey ingested over HTTP, analysed through the API and the
//! CLI.

mod common;

use std::process::Output;

use common::{Response, Server, cohort};
use serde_json::{Value, json};

/// f1 comes from ads on an iPhone, the others from email on the web (`utm.source` is nested).
fn track(user: &str, event: &str, at: &str, id: &str) -> Value {
    let (source, device) = if user == "f1" {
        ("ads", "ios")
    } else {
        ("email", "web")
    };
    json!({"type": "track", "userId": user, "event": event, "timestamp": at, "messageId": id,
           "properties": {"source": source, "utm": {"source": source}},
           "context": {"device": {"type": device}}})
}

/// f1 views, adds and buys within two hours; f2 adds two days after viewing (outside a one-day
/// window); f3 adds before viewing. f1 and f2 sign up in the week of 2025-03-03; f1 orders the
/// next week.
fn seed(s: &Server) {
    let batch = vec![
        track("f1", "Viewed", "2025-03-03T10:00:00Z", "a1"),
        track("f1", "Added", "2025-03-03T11:00:00Z", "a2"),
        track("f1", "Bought", "2025-03-03T12:00:00Z", "a3"),
        track("f2", "Viewed", "2025-03-03T10:00:00Z", "b1"),
        track("f2", "Added", "2025-03-05T10:00:00Z", "b2"),
        track("f3", "Added", "2025-03-04T09:00:00Z", "c1"),
        track("f3", "Viewed", "2025-03-04T10:00:00Z", "c2"),
        track("f1", "Signed Up", "2025-03-03T09:00:00Z", "d1"),
        track("f2", "Signed Up", "2025-03-04T09:00:00Z", "d2"),
        track("f1", "Order Completed", "2025-03-11T09:00:00Z", "d3"),
    ];
    assert_eq!(s.ingest("/v1/batch", &json!({"batch": batch})).status, 200);
    s.settle();
}

fn funnel_body() -> Value {
    json!({"from": "2025-03-03", "to": "2025-03-10", "window": {"days": 1},
           "steps": [{"event": "Viewed"}, {"event": "Added"}, {"event": "Bought"}]})
}

/// Weekly retention of the sign-ups: who ordered in the weeks after.
fn retention_body() -> Value {
    json!({"from": "2025-03-03", "to": "2025-03-10", "period": "week", "periods": 2,
           "first_event": {"event": "Signed Up"},
           "returning_event": {"event": "Order Completed"}})
}

/// POSTs a request to `/api/v1/analyses/{analysis}` as the admin.
fn post(s: &Server, analysis: &str, body: &Value) -> Response {
    s.admin_send("POST", &format!("/api/v1/analyses/{analysis}"), body)
}

/// The same, which must succeed: the result.
fn analyse(s: &Server, analysis: &str, body: &Value) -> Value {
    let r = post(s, analysis, body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The same, which must be a 400 with this error code.
fn rejected(s: &Server, analysis: &str, body: &Value, code: &str) -> Response {
    let r = post(s, analysis, body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["code"], code);
    r
}

#[test]
fn funnel_and_retention_over_the_api() {
    let s = Server::start();
    seed(&s);
    let body = analyse(&s, "funnel", &funnel_body());
    let customers: Vec<i64> = body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["customers"].as_i64().unwrap())
        .collect();
    assert_eq!(customers, vec![3, 1, 1], "{body}");
    assert_eq!(body["steps"][1]["median_seconds_from_first"], 3600.0);
    assert_eq!(body["steps"][2]["median_seconds_from_first"], 7200.0);
    assert_eq!(body["steps"][2]["conversion_from_previous"], 1.0);

    let body = analyse(&s, "retention", &retention_body());
    assert_eq!(body["cohorts"][0]["start"], "2025-03-03", "{body}");
    assert_eq!(body["cohorts"][0]["customers"], 2);
    assert_eq!(body["cohorts"][0]["returned"], json!([0, 1, 0]));
    assert_eq!(body["cohorts"][0]["percentages"], json!([0.0, 50.0, 0.0]));
    assert_eq!(body["breakdown"], json!([]));

    // The same by the sign-up's nested source: f1 (ads) returned in week 1, f2 (email) did not.
    let mut by_source = retention_body();
    by_source["breakdown"] = json!({"property": "utm.source"});
    let body = analyse(&s, "retention", &by_source);
    assert_eq!(body["total"]["returned"], json!([0, 1, 0]), "{body}");
    let groups = body["breakdown"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{body}");
    assert_eq!(groups[0]["group"], json!({"kind": "value", "value": "ads"}));
    assert_eq!(groups[0]["label"], "ads");
    assert_eq!(groups[0]["cohorts"][0]["customers"], 1);
    assert_eq!(groups[0]["cohorts"][0]["returned"], json!([0, 1, 0]));
    assert_eq!(
        groups[0]["cohorts"][0]["percentages"],
        json!([0.0, 100.0, 0.0])
    );
    assert_eq!(groups[1]["label"], "email");
    assert_eq!(groups[1]["total"]["returned"], json!([0, 0, 0]));

    // Context paths reach the ingested context: views per device type, and on the web only.
    let body = analyse(
        &s,
        "trends",
        &json!({"from": "2025-03-03", "to": "2025-03-05", "events": ["Viewed"],
                "breakdown": {"context": "device.type"}}),
    );
    let totals: Vec<(String, i64)> = body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["label"].as_str().unwrap().to_owned(),
                s["total_events"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        vec![
            ("Viewed".to_owned(), 3),
            ("Viewed: web".to_owned(), 2),
            ("Viewed: ios".to_owned(), 1)
        ],
        "{body}"
    );
    let body = analyse(
        &s,
        "funnel",
        &json!({"from": "2025-03-03", "to": "2025-03-10", "window": {"days": 1},
                "steps": [{"event": "Viewed", "filters": [{"context": "device.type", "equals": "web"}]},
                          {"event": "Added"}]}),
    );
    assert_eq!(body["steps"][0]["customers"], 2, "{body}");

    let body = analyse(
        &s,
        "active-customers",
        &json!({"from": "2025-03-03", "to": "2025-03-05", "breakdown": {"property": "source"}}),
    );
    assert_eq!(body["buckets"], json!(["2025-03-03", "2025-03-04"]));
    assert_eq!(body["series"][0]["customers"], json!([2, 2]), "{body}");
    assert_eq!(body["series"][0]["total"], 3);
}

#[test]
fn bad_requests_and_auth() {
    let s = Server::start();
    let r = rejected(
        &s,
        "funnel",
        &json!({"from": "2025-03-10", "to": "2025-03-03", "steps": [{"event": "a"}, {"event": "b"}]}),
        "invalid_request",
    );
    assert!(r.json()["message"].as_str().unwrap().contains("from"));
    let r = rejected(
        &s,
        "retention",
        &json!({"from": "2025-03-03", "to": "2025-03-10",
                "first_event": {"event": "a"}, "returning_event": {"event": "b"},
                "breakdown": {"context": "device..type"}}),
        "invalid_request",
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid breakdown.context:"),
        "{}",
        r.text()
    );
    let r = rejected(
        &s,
        "trends",
        &json!({"from": "2025-03-01", "to": "2025-03-03", "interval": "hour", "events": ["a"]}),
        "invalid_body",
    );
    assert!(r.text().contains("interval must be day, week or month"));
    let r = s.request(
        "POST",
        "/api/v1/analyses/revenue",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 401);
}

/// Runs `cohort analyse ANALYSIS --data DIR ARGS…`.
fn cli(s: &Server, analysis: &str, args: &[&str]) -> Output {
    cohort()
        .args(["analyse", analysis, "--data"])
        .arg(s.dir.path())
        .args(args)
        .output()
        .unwrap()
}

/// The same, which must succeed: its standard output.
fn cli_ok(s: &Server, analysis: &str, args: &[&str]) -> String {
    let out = cli(s, analysis, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The flags of `retention_body`.
const RETENTION_FLAGS: [&str; 12] = [
    "--from",
    "2025-03-03",
    "--to",
    "2025-03-10",
    "--period",
    "week",
    "--periods",
    "2",
    "--first-event",
    "Signed Up",
    "--returning-event",
    "Order Completed",
];

#[test]
fn cli_prints_a_funnel_table() {
    let s = Server::start();
    seed(&s);
    let stdout = cli_ok(
        &s,
        "funnel",
        &[
            "--from",
            "2025-03-03",
            "--to",
            "2025-03-10",
            "--window",
            "1d",
            "--step",
            "Viewed",
            "--step",
            "Added",
            "--step",
            "Bought",
        ],
    );
    assert!(stdout.contains("customers"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[2].starts_with("1") && lines[2].contains("Viewed"),
        "{stdout}"
    );
    assert!(
        lines[3].contains("33.3%") && lines[3].contains("1h 0m"),
        "{stdout}"
    );

    let stdout = cli_ok(
        &s,
        "retention",
        &[&RETENTION_FLAGS[..], &["--json"]].concat(),
    );
    let body: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(body["total"]["returned"], json!([0, 1, 0]));

    // Retention by the sign-up's device: the overall matrix, then one per group.
    let by_device = [&RETENTION_FLAGS[..], &["--by-context", "device.type"]].concat();
    let stdout = cli_ok(&s, "retention", &by_device);
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |label: &str| lines.iter().position(|l| *l == label);
    let (Some(ios), Some(web)) = (at("ios"), at("web")) else {
        panic!("no group tables: {stdout}");
    };
    assert!(ios < web, "{stdout}");
    assert!(lines[ios + 1].starts_with("cohort"), "{stdout}");
    assert!(
        lines[ios + 3].starts_with("2025-03-03") && lines[ios + 3].contains("1 (100.0%)"),
        "{stdout}"
    );
    assert!(lines[web + 3].contains("0 (0.0%)"), "{stdout}");

    let bad = cli(&s, "funnel", &["--step", "only-one"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 2 steps"));
}
