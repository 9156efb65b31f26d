//! Segments end to end: define over the API and the CLI, members in real time and in batch,
//! re-evaluation as time passes, export, and a customer's membership history.

mod common;

use chrono::{Duration as TimeDelta, Utc};
use common::{Server, cohort};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn ago(seconds: i64) -> String {
    (Utc::now() - TimeDelta::seconds(seconds)).to_rfc3339()
}

fn order(id: &str, user: &str, revenue: f64, at: &str) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": user, "messageId": id,
           "timestamp": at, "properties": {"revenue": revenue}})
}

fn member_ids(s: &Server, name: &str) -> Vec<String> {
    let r = s.admin_get(&format!("/api/v1/segments/{name}/members?limit=1000"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["customer_id"].to_string())
        .collect()
}

/// The lake's day directories and files, for failure messages.
fn lake_files(s: &Server) -> Vec<String> {
    let events = s.dir.path().join("lake").join("events");
    let mut out = Vec::new();
    for day in std::fs::read_dir(&events).into_iter().flatten().flatten() {
        let name = day.file_name().to_string_lossy().into_owned();
        let files: Vec<String> = std::fs::read_dir(day.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        out.push(format!("{name}: {files:?}"));
    }
    out
}

fn customer_id(s: &Server, user: &str) -> String {
    s.profile("user_id", user).expect("profile")["customer_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn segments_fill_in_batch_then_follow_events_in_real_time() {
    let s = Server::start_with(&["--no-builtin-tags"]);
    let batch: Vec<Value> = vec![
        order("o1", "ada", 3000.0, &ago(86_400 * 3)),
        order("o2", "ada", 2500.0, &ago(86_400)),
        order("o3", "bob", 400.0, &ago(86_400)),
        order("o4", "cy", 9000.0, &ago(86_400 * 60)),
        json!({"type": "identify", "userId": "ada", "messageId": "i1", "traits": {"email": "ada@example.com", "city": "上海"}}),
    ];
    assert_eq!(s.ingest("/v1/batch", &json!({"batch": batch})).status, 200);
    s.settle();

    let platinum = json!({"type": "and", "conditions": [
        {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5000},
        {"type": "event", "name": "Order Completed", "window": {"last_days": 30}}
    ]});
    // Preview first: nothing is saved.
    let preview = s.admin_send(
        "POST",
        "/api/v1/segments/preview",
        &json!({"condition": platinum}),
    );
    assert_eq!(preview.status, 200, "{}", preview.text());
    if preview.json()["count"] != 1 {
        // Rare in CI and never seen locally: say what the batch side saw.
        let sql = |q: &str| {
            s.admin_send("POST", "/api/v1/query", &json!({"sql": q}))
                .text()
        };
        panic!(
            "preview counted {} (expected ada alone)\nprofiles: {}\nevents: {}\nlake files: {:?}",
            preview.text(),
            sql("SELECT customer_id, revenue_30d, last_seen FROM profiles"),
            sql("SELECT seq, event, customer_id, \"timestamp\", date FROM events ORDER BY seq"),
            lake_files(&s),
        );
    }
    assert_eq!(preview.json()["refreshed_with_time"], true);

    let created = s.admin_send(
        "POST",
        "/api/v1/segments",
        &json!({"name": "platinum", "description": "spend over 5000 in 30 days", "condition": platinum}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["evaluation"]["entered"], 1);
    let ada = customer_id(&s, "ada");
    assert_eq!(member_ids(&s, "platinum"), vec![ada.clone()]);

    // Bob crosses the line with his next order: real time, no re-evaluation asked for.
    assert_eq!(
        s.ingest("/v1/track", &order("o5", "bob", 4700.0, &ago(10)))
            .status,
        200
    );
    let bob = customer_id(&s, "bob");
    eventually("bob enters", || member_ids(&s, "platinum").contains(&bob));

    // The customer's own view shows the entry and why.
    let mine = s.admin_get("/api/v1/profiles/user_id/bob/segments").json();
    assert_eq!(mine["segments"][0]["name"], "platinum");
    assert_eq!(mine["history"][0]["change"], "entered");
    assert_eq!(mine["history"][0]["reason"], "event");

    // The entry/exit feed for journeys.
    let feed = s.admin_get("/api/v1/segment-changes?after=0").json();
    let changes = feed["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["reason"], "definition");
    assert_eq!(changes[1]["customer_id"].to_string(), bob);

    // Paging by customer ID.
    let page = s
        .admin_get("/api/v1/segments/platinum/members?limit=1")
        .json();
    assert_eq!(page["total"], 2);
    let next = page["next_after"].as_i64().unwrap();
    let rest = s
        .admin_get(&format!(
            "/api/v1/segments/platinum/members?limit=1&after={next}"
        ))
        .json();
    assert_eq!(rest["members"].as_array().unwrap().len(), 1);
    assert_ne!(
        rest["members"][0]["customer_id"],
        page["members"][0]["customer_id"]
    );

    // Export with identifiers.
    let csv = s.admin_get("/api/v1/segments/platinum/export?format=csv");
    assert_eq!(csv.status, 200);
    let text = csv.text();
    assert!(
        text.starts_with("customer_id,entered_at,user_id,email,phone"),
        "{text}"
    );
    assert!(text.contains("ada@example.com"), "{text}");
    let parquet = s.admin_get("/api/v1/segments/platinum/export?format=parquet");
    assert_eq!(parquet.status, 200);
    assert_eq!(&parquet.body[..4], b"PAR1");

    // SQL sees memberships.
    let q = s.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": "SELECT count(*) AS n FROM memberships WHERE segment = 'platinum'"}),
    );
    assert_eq!(q.json()["rows"][0]["n"], 2, "{}", q.text());
    // ... and the entries as events, for analyses and attribution.
    let q = s.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": "SELECT reason, count(*) AS n FROM segment_changes WHERE segment = 'platinum' AND change = 'entered' GROUP BY reason ORDER BY reason"}),
    );
    assert_eq!(
        q.json()["rows"],
        json!([{"reason": "definition", "n": 1}, {"reason": "event", "n": 1}]),
        "{}",
        q.text()
    );

    // Narrowing the definition re-evaluates it; Bob leaves with reason "definition".
    let updated = s.admin_send(
        "PUT",
        "/api/v1/segments/platinum",
        &json!({"condition": {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5400}}),
    );
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["evaluation"]["exited"], 1);
    assert_eq!(member_ids(&s, "platinum"), vec![ada]);
    assert_eq!(updated.json()["segment"]["version"], 2);
}

#[test]
fn time_alone_moves_customers_in_and_out() {
    let s = Server::start_with(&["--no-builtin-tags", "--segment-refresh-secs", "1"]);
    // Signed up 1 h minus 8 s ago, never logged in: joins "no login within 1 h" in ~8 s.
    // Viewed 1 h minus 8 s ago: leaves "viewed in the last hour" in ~8 s.
    let batch = vec![
        json!({"type": "track", "event": "Signed Up", "userId": "new", "messageId": "s1", "timestamp": ago(3600 - 8)}),
        json!({"type": "track", "event": "Signed Up", "userId": "keen", "messageId": "s2", "timestamp": ago(3600 - 8)}),
        json!({"type": "track", "event": "Login", "userId": "keen", "messageId": "l2", "timestamp": ago(3000)}),
        json!({"type": "track", "event": "Viewed", "userId": "new", "messageId": "v1", "timestamp": ago(3600 - 8)}),
    ];
    assert_eq!(s.ingest("/v1/batch", &json!({"batch": batch})).status, 200);
    s.settle();
    for (name, condition) in [
        (
            "no-login-1h",
            json!({"type": "not_followed_by", "first": "Signed Up", "then": "Login", "within_hours": 1}),
        ),
        (
            "viewed-last-hour",
            json!({"type": "event", "name": "Viewed", "window": {"last_hours": 1}}),
        ),
    ] {
        let r = s.admin_send(
            "POST",
            "/api/v1/segments",
            &json!({"name": name, "condition": condition}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let new = customer_id(&s, "new");
    assert!(member_ids(&s, "no-login-1h").is_empty());
    assert_eq!(member_ids(&s, "viewed-last-hour"), vec![new.clone()]);

    eventually("time moves membership", || {
        member_ids(&s, "no-login-1h") == vec![new.clone()]
            && member_ids(&s, "viewed-last-hour").is_empty()
    });
    let history = s.admin_get("/api/v1/profiles/user_id/new/segments").json();
    let reasons: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"time"), "{history}");
}

#[test]
fn bad_definitions_get_clear_errors() {
    let s = Server::start_with(&["--no-builtin-tags"]);
    let cases = [
        (json!({"name": "x"}), 400, "invalid_body"),
        (
            json!({"name": "x", "condition": {"type": "trait", "key": "age", "op": "gt", "value": true}}),
            400,
            "invalid_condition",
        ),
        (
            json!({"name": "x", "condition": {"type": "teleport"}}),
            400,
            "invalid_condition",
        ),
        (
            json!({"name": "x", "condition": {"type": "in_segment", "segment": "ghost"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"name": "", "condition": {"type": "trait", "key": "a", "op": "exists"}}),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let r = s.admin_send("POST", "/api/v1/segments", &body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(r.json()["code"], code, "{body}: {}", r.text());
        assert!(!r.json()["message"].as_str().unwrap().is_empty());
    }
    let ok = json!({"name": "dup", "condition": {"type": "trait", "key": "a", "op": "exists"}});
    assert_eq!(s.admin_send("POST", "/api/v1/segments", &ok).status, 201);
    assert_eq!(s.admin_send("POST", "/api/v1/segments", &ok).status, 409);
    assert_eq!(s.admin_get("/api/v1/segments/nope").status, 404);
    assert_eq!(
        s.admin_get("/api/v1/segments/dup/export?format=xlsx")
            .status,
        400
    );
}

#[test]
fn the_cli_defines_lists_and_exports_segments() {
    let s = Server::start_with(&["--no-builtin-tags"]);
    let batch: Vec<Value> = (0..5)
        .map(|i| {
            order(
                &format!("c{i}"),
                &format!("u{i}"),
                100.0 * i as f64,
                &ago(3600),
            )
        })
        .collect();
    assert_eq!(s.ingest("/v1/batch", &json!({"batch": batch})).status, 200);
    s.settle();
    let data = s.dir.path().to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = cohort()
            .args(["segment", "--data", &data])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let created = run(&[
        "create",
        "over-150",
        "--condition",
        r#"{"type": "computed", "key": "total_revenue", "op": "gt", "value": 150}"#,
        "--json",
    ]);
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["evaluation"]["members"], 3);
    let listed = run(&["list"]);
    assert!(listed.contains("over-150"), "{listed}");
    let csv = run(&["export", "over-150"]);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // The running server sees the CLI's definition and keeps it current.
    assert_eq!(
        s.ingest("/v1/track", &order("c9", "u1", 500.0, &ago(5)))
            .status,
        200
    );
    let u1 = customer_id(&s, "u1");
    eventually("u1 enters via the server", || {
        member_ids(&s, "over-150").contains(&u1)
    });
    let history = run(&["history", "user_id", "u1"]);
    assert!(history.contains("entered"), "{history}");
}

#[test]
fn built_in_tags_label_customers_as_their_data_arrives() {
    let s = Server::start();
    let tags = s.admin_get("/api/v1/tags").json();
    let all = tags["tags"].as_array().unwrap();
    assert!(all.len() >= 100, "{} tags", all.len());

    let batch = vec![
        json!({"type": "identify", "userId": "mei", "messageId": "t1", "traits": {"city": "上海", "email": "mei@example.com"}}),
        order("t2", "mei", 300.0, &ago(7200)),
        order("t3", "mei", 200.0, &ago(3600)),
    ];
    assert_eq!(s.ingest("/v1/batch", &json!({"batch": batch})).status, 200);
    s.settle();
    eventually("tags applied", || {
        let mine = s.admin_get("/api/v1/profiles/user_id/mei/tags").json();
        let names: Vec<&str> = mine["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        names.contains(&"city:tier1")
            && names.contains(&"lifecycle:repeat_buyer")
            && !names.contains(&"lifecycle:first_time_buyer")
    });
    let mei = customer_id(&s, "mei");
    let tier1 = s.admin_get("/api/v1/tags/city:tier1/customers").json();
    assert_eq!(tier1["kind"], "tag");
    assert_eq!(tier1["members"][0]["customer_id"].to_string(), mei);
    // Her history records the entry, caused by her events.
    let history = s.admin_get("/api/v1/profiles/user_id/mei/tags").json();
    let entry = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["segment"] == "city:tier1")
        .cloned()
        .expect("an entry into city:tier1");
    assert_eq!(
        (entry["change"].as_str(), entry["reason"].as_str()),
        (Some("entered"), Some("event"))
    );
}
