//! The Segment HTTP Tracking API against the real binary: every auth form, gzip, limits, and bad
//! input of every kind getting its documented status and error body while the server stays up.

mod common;

use common::{Server, basic};
use flate2::{Compression, write::GzEncoder};
use serde_json::{Value, json};
use std::io::Write;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn track(user: &str, id: &str) -> Value {
    json!({"type": "track", "event": "Viewed", "userId": user, "messageId": id})
}

#[test]
fn every_auth_form_and_route_spelling_is_accepted() {
    let s = Server::start();
    let key = s.write_key.clone();
    let body =
        |id: &str| json!({"userId": "auth-user", "event": "Viewed", "messageId": id}).to_string();
    let bearer = format!("Bearer {key}");
    // (path, headers, body)
    type AuthCase<'a> = (String, Vec<(&'a str, String)>, String);
    let cases: Vec<AuthCase> = vec![
        (
            "/v1/track".into(),
            vec![("Authorization", basic(&key))],
            body("basic"),
        ),
        (
            "/v1/t".into(),
            vec![("Authorization", bearer.clone())],
            body("bearer"),
        ),
        (
            "/v1/track".into(),
            vec![("X-Write-Key", key.clone())],
            body("header"),
        ),
        (format!("/v1/track?writeKey={key}"), vec![], body("query")),
        (
            "/v1/track".into(),
            vec![],
            json!({"writeKey": key, "userId": "auth-user", "event": "Viewed", "messageId": "body"})
                .to_string(),
        ),
    ];
    for (path, headers, body) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s.request("POST", path, &headers, body.as_bytes());
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["success"], true);
    }
    // text/plain bodies (sendBeacon) and gzip are accepted too.
    let auth = basic(&key);
    let plain = s.request(
        "POST",
        "/v1/p",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        json!({"userId": "auth-user", "name": "Home", "messageId": "plain"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(plain.status, 200, "{}", plain.text());
    let zipped = gzip(
        json!({"batch": [track("auth-user", "gz1"), track("auth-user", "gz2")]})
            .to_string()
            .as_bytes(),
    );
    let r = s.request(
        "POST",
        "/v1/b",
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
        &zipped,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2);
    for (route, msg) in [
        (
            "/v1/i",
            json!({"userId": "auth-user", "traits": {"plan": "pro"}, "messageId": "i"}),
        ),
        (
            "/v1/s",
            json!({"userId": "auth-user", "name": "Cart", "messageId": "s"}),
        ),
        (
            "/v1/g",
            json!({"userId": "auth-user", "groupId": "acme", "messageId": "g"}),
        ),
        (
            "/v1/a",
            json!({"userId": "auth-user", "previousId": "old-anon", "messageId": "a"}),
        ),
        ("/v1/import", json!({"batch": [track("auth-user", "imp")]})),
    ] {
        let r = s.ingest(route, &msg);
        assert_eq!(r.status, 200, "{route}: {}", r.text());
    }
    s.settle();
    let p = s.profile("user_id", "auth-user").expect("profile");
    assert_eq!(p["computed"]["event_counts"]["Viewed"], 8);
    assert_eq!(p["computed"]["event_count"], 13);
    assert_eq!(p["traits"]["plan"], "pro");
}

#[test]
fn bad_input_gets_its_status_and_error_body_and_nothing_accepted_is_lost() {
    let s = Server::start();
    let auth = basic(&s.write_key);
    let hdr = [("Authorization", auth.as_str())];
    let expect = |r: common::Response, status: u16, code: &str| {
        assert_eq!(
            r.status,
            status,
            "expected {status} {code}, got {}",
            r.text()
        );
        let body = r.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    };

    // Accepted before the abuse starts: must survive it.
    assert_eq!(
        s.ingest(
            "/v1/batch",
            &json!({"batch": [track("keeper", "k1"), track("keeper", "k2")]})
        )
        .status,
        200
    );

    expect(
        s.request("POST", "/v1/track", &hdr, b"{\"userId\": "),
        400,
        "invalid_json",
    );
    expect(
        s.request(
            "POST",
            "/v1/track",
            &hdr,
            b"{\"userId\": \"\xff\xfe\", \"event\": \"x\"}",
        ),
        400,
        "invalid_utf8",
    );
    expect(
        s.request("POST", "/v1/track", &hdr, &vec![b'['; 100_000]),
        400,
        "too_deeply_nested",
    );
    expect(
        s.request("POST", "/v1/batch", &hdr, &vec![b' '; 600 * 1024]),
        400,
        "request_too_large",
    );
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    expect(
        s.request(
            "POST",
            "/v1/batch",
            &[("Authorization", &auth), ("Content-Encoding", "gzip")],
            &bomb,
        ),
        400,
        "request_too_large",
    );
    expect(
        s.request(
            "POST",
            "/v1/batch",
            &[("Authorization", &auth), ("Content-Encoding", "gzip")],
            b"not gzip",
        ),
        400,
        "invalid_gzip",
    );
    let big = json!({"userId": "u", "event": "Big", "properties": {"blob": "x".repeat(40 * 1024)}});
    expect(s.ingest("/v1/track", &big), 400, "event_too_large");
    expect(
        s.ingest("/v1/track", &json!({"userId": {"id": 1}, "event": "E"})),
        400,
        "invalid_field",
    );
    expect(
        s.ingest(
            "/v1/track",
            &json!({"userId": "u", "event": "E", "properties": [1, 2]}),
        ),
        400,
        "invalid_field",
    );
    expect(
        s.ingest("/v1/track", &json!({"event": "E", "properties": {}})),
        400,
        "missing_identifier",
    );
    expect(
        s.ingest(
            "/v1/track",
            &json!({"userId": "null", "anonymousId": "undefined", "event": "E"}),
        ),
        400,
        "missing_identifier",
    );
    expect(
        s.ingest("/v1/track", &json!({"userId": "u"})),
        400,
        "missing_event",
    );
    expect(
        s.ingest(
            "/v1/track",
            &json!({"userId": "u", "event": "E", "timestamp": "last tuesday"}),
        ),
        400,
        "invalid_timestamp",
    );
    expect(
        s.ingest("/v1/batch", &json!({"batch": {"not": "an array"}})),
        400,
        "invalid_batch",
    );
    let too_many: Vec<Value> = (0..2501).map(|i| track("u", &format!("m{i}"))).collect();
    expect(
        s.ingest("/v1/batch", &json!({"batch": too_many})),
        400,
        "batch_too_large",
    );
    expect(
        s.request(
            "POST",
            "/v1/track",
            &[("Authorization", "Bearer wk_wrong")],
            b"{}",
        ),
        401,
        "unauthorized",
    );
    expect(
        s.request(
            "POST",
            "/v1/track",
            &[],
            json!({"userId": "u", "event": "E"}).to_string().as_bytes(),
        ),
        401,
        "unauthorized",
    );
    expect(
        s.request(
            "POST",
            "/v1/track",
            &[],
            json!({"writeKey": "nope", "userId": "u", "event": "E"})
                .to_string()
                .as_bytes(),
        ),
        401,
        "unauthorized",
    );
    expect(s.request("POST", "/v1/trak", &hdr, b"{}"), 404, "not_found");
    expect(
        s.request("GET", "/nothing/here", &[], b""),
        404,
        "not_found",
    );
    expect(
        s.request("GET", "/api/v1/stats", &[], b""),
        401,
        "unauthorized",
    );
    expect(
        s.request(
            "GET",
            "/api/v1/stats",
            &[("Authorization", "Bearer wrong")],
            b"",
        ),
        401,
        "unauthorized",
    );

    // A batch keeps its good messages and reports the bad ones by index.
    let mixed = json!({"batch": [track("keeper", "k3"), {"type": "track", "userId": "keeper"}, "text", big]});
    let r = s.ingest("/v1/batch", &mixed);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["accepted"], 1);
    let codes: Vec<&str> = body["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["missing_event", "invalid_message", "event_too_large"]
    );

    assert_eq!(
        s.request("GET", "/healthz", &[], b"").status,
        200,
        "the server stays up"
    );
    s.settle();
    assert_eq!(
        s.profile("user_id", "keeper").unwrap()["computed"]["event_count"],
        3
    );

    // Every refusal after authentication is kept with its reason and payload.
    let failed = s.admin_get("/api/v1/failed-events?limit=1000").json();
    let failed = failed["failed_events"].as_array().unwrap();
    let kept: Vec<&str> = failed.iter().map(|f| f["code"].as_str().unwrap()).collect();
    for code in [
        "invalid_json",
        "invalid_utf8",
        "too_deeply_nested",
        "request_too_large",
        "invalid_gzip",
        "event_too_large",
        "invalid_field",
        "missing_identifier",
        "missing_event",
        "invalid_timestamp",
        "invalid_batch",
        "batch_too_large",
        "invalid_message",
    ] {
        assert!(
            kept.contains(&code),
            "no failed event kept for {code}: {kept:?}"
        );
    }
    assert!(
        failed
            .iter()
            .all(|f| f["reason"].as_str().is_some_and(|r| !r.is_empty()))
    );
    let missing_event = failed
        .iter()
        .find(|f| f["code"] == "missing_event")
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(missing_event["payload"].as_str().unwrap()).unwrap()["userId"],
        "u"
    );
}

#[test]
fn duplicates_by_message_id_are_acknowledged_once_counted_once() {
    let mut s = Server::start();
    let batch = json!({"batch": [track("dup", "d1"), track("dup", "d2")]});
    assert_eq!(s.ingest("/v1/batch", &batch).json()["accepted"], 2);
    let again = s.ingest("/v1/batch", &batch).json();
    assert_eq!(
        (again["accepted"].clone(), again["duplicates"].clone()),
        (json!(0), json!(2))
    );
    // The window is held in memory and rebuilt from what was committed with the messages, so
    // it outlives a crash.
    s.kill_and_restart();
    let after_crash = s
        .ingest(
            "/v1/batch",
            &json!({"batch": [track("dup", "d2"), track("dup", "d3")]}),
        )
        .json();
    assert_eq!(
        (
            after_crash["accepted"].clone(),
            after_crash["duplicates"].clone()
        ),
        (json!(1), json!(1))
    );
    s.settle();
    assert_eq!(
        s.profile("user_id", "dup").unwrap()["computed"]["event_count"],
        3
    );
}

#[test]
fn clock_skew_is_corrected_and_batch_context_merged() {
    let s = Server::start();
    let r = s.ingest(
        "/v1/batch",
        &json!({
            "context": {"library": {"name": "test-lib"}},
            "sentAt": "2030-01-01T00:00:10Z",
            "batch": [{"type": "track", "event": "Skewed", "userId": "skew", "messageId": "s1",
                       "timestamp": "2030-01-01T00:00:00Z"}]
        }),
    );
    assert_eq!(r.status, 200);
    s.settle();
    let events = s.admin_get("/api/v1/profiles/user_id/skew/events").json();
    let msg = &events["events"][0]["message"];
    assert_eq!(msg["context"]["library"]["name"], "test-lib");
    assert_eq!(msg["originalTimestamp"], "2030-01-01T00:00:00.000Z");
    let received =
        chrono::DateTime::parse_from_rfc3339(msg["receivedAt"].as_str().unwrap()).unwrap();
    let corrected =
        chrono::DateTime::parse_from_rfc3339(msg["timestamp"].as_str().unwrap()).unwrap();
    assert_eq!(
        (received - corrected).num_seconds(),
        10,
        "timestamp = receivedAt - (sentAt - originalTimestamp)"
    );
}

#[test]
fn tracking_plan_blocks_then_replay_after_fixing_the_plan_accepts() {
    let s = Server::start();
    let plan = json!({
        "mode": "block",
        "unplanned": "allow",
        "events": {"Order Completed": {"type": "object", "required": ["revenue"],
                                        "properties": {"revenue": {"type": "number"}}}}
    });
    let r = s.admin_send("PUT", "/api/v1/sources/1/tracking-plan", &plan);
    assert_eq!(r.status, 200, "{}", r.text());
    let bad_plan = s.admin_send(
        "PUT",
        "/api/v1/sources/1/tracking-plan",
        &json!({"mode": "block", "events": {"X": {"type": "nonsense"}}}),
    );
    assert_eq!(bad_plan.status, 400);
    assert_eq!(bad_plan.json()["code"], "invalid_tracking_plan");

    let order = json!({"userId": "planner", "event": "Order Completed", "messageId": "o1", "properties": {"revenue": "lots"}});
    let r = s.ingest("/v1/track", &order);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "tracking_plan_violation");
    assert!(r.json()["message"].as_str().unwrap().contains("revenue"));
    let ok = s.ingest("/v1/track", &json!({"userId": "planner", "event": "Order Completed", "messageId": "o2", "properties": {"revenue": 10}}));
    assert_eq!(ok.status, 200);

    // Flag mode accepts and annotates.
    let flag = json!({"mode": "flag", "events": {"Order Completed": {"type": "object", "required": ["revenue"]}}});
    assert_eq!(
        s.admin_send("PUT", "/api/v1/sources/1/tracking-plan", &flag)
            .status,
        200
    );
    let flagged = s.ingest(
        "/v1/track",
        &json!({"userId": "planner", "event": "Order Completed", "messageId": "o3"}),
    );
    assert_eq!(flagged.status, 200, "{}", flagged.text());

    let failed = s
        .admin_get("/api/v1/failed-events?code=tracking_plan_violation")
        .json();
    let id = failed["failed_events"][0]["id"].as_i64().unwrap();
    // Relax the plan, then replay the blocked event.
    assert_eq!(
        s.admin_send("DELETE", "/api/v1/sources/1/tracking-plan", &json!({}))
            .status,
        200
    );
    let replay = s.admin_send(
        "POST",
        &format!("/api/v1/failed-events/{id}/replay"),
        &json!({}),
    );
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json()["replayed"], true);
    let again = s
        .admin_send(
            "POST",
            &format!("/api/v1/failed-events/{id}/replay"),
            &json!({}),
        )
        .json();
    assert_eq!(again["replayed"], false, "a replay happens once");
    s.settle();
    let p = s.profile("user_id", "planner").unwrap();
    assert_eq!(p["computed"]["orders"], 3);
    let events = s
        .admin_get("/api/v1/profiles/user_id/planner/events?limit=10")
        .json();
    let flagged_msg = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message_id"] == "o3")
        .unwrap();
    assert!(
        flagged_msg["message"]["context"]["protocols"]["violations"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
    );
}

#[test]
fn normalisation_rules_apply_per_source() {
    let s = Server::start();
    let r = s.ingest("/v1/identify", &json!({"userId": "norm", "messageId": "n1",
        "traits": {"email": "  Li.Wei@Example.COM ", "phone": "+86 138-0013-8000", "gender": "男"}}));
    assert_eq!(r.status, 200);
    let r = s.ingest(
        "/v1/track",
        &json!({"userId": "norm", "messageId": "n2", "event": "Order Completed",
        "properties": {"revenue": "¥1,299.50"}}),
    );
    assert_eq!(r.status, 200);
    s.settle();
    let p = s
        .profile("email", "li.wei@example.com")
        .expect("found by the normalised email");
    assert_eq!(p["traits"]["phone"], "+8613800138000");
    assert_eq!(p["traits"]["gender"], "male");
    assert_eq!(p["computed"]["total_revenue"], 1299.5);
    assert!(s.profile("phone", "+8613800138000").is_some());

    let rules = json!({"default_phone_region": "US", "emails": false});
    assert_eq!(
        s.admin_send("PUT", "/api/v1/sources/1/normalisation", &rules)
            .status,
        200
    );
    let r = s.ingest(
        "/v1/identify",
        &json!({"userId": "norm-us", "messageId": "n3",
        "traits": {"email": "Keep.Case@Example.com", "phone": "(415) 555-2671"}}),
    );
    assert_eq!(r.status, 200);
    s.settle();
    let p = s.profile("user_id", "norm-us").unwrap();
    assert_eq!(p["traits"]["phone"], "+14155552671");
    assert_eq!(p["traits"]["email"], "Keep.Case@Example.com");
}

#[test]
fn sdk_settings_name_the_public_url_and_the_admin_api_opens_only_to_named_origins() {
    let server = Server::start_with(&[
        "--public-url",
        "https://collect.shop.example/cohort/",
        "--admin-origins",
        "https://console.shop.example",
    ]);
    let r = server.request(
        "GET",
        &format!("/v1/projects/{}/settings", server.write_key),
        &[("Origin", "https://www.shop.example")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let segment = &r.json()["integrations"]["Segment.io"];
    assert_eq!(segment["apiHost"], "collect.shop.example/cohort/v1");
    assert_eq!(segment["protocol"], "https");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://www.shop.example")
    );
    let r = server.request(
        "GET",
        &format!("/sourceConfig/?writeKey={}", server.write_key),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["source"]["enabled"], true);
    assert_eq!(r.json()["source"]["destinations"], json!([]));

    let preflight = |origin: &str| {
        server.request(
            "OPTIONS",
            "/api/v1/sources",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            b"",
        )
    };
    let r = preflight("https://console.shop.example");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://console.shop.example")
    );
    let r = preflight("https://evil.example");
    assert_eq!(r.header("access-control-allow-origin"), None);
}
