//! Identity resolution through the real server: the scenarios a marketer's data actually contains.

mod common;

use common::Server;
use serde_json::json;

#[test]
fn anonymous_visit_then_identify_is_one_customer() {
    let s = Server::start();
    for (i, event) in ["Product Viewed", "Product Added"].iter().enumerate() {
        let r = s.ingest(
            "/v1/track",
            &json!({"anonymousId": "visitor-1", "event": event, "messageId": format!("v{i}")}),
        );
        assert_eq!(r.status, 200);
    }
    let r = s.ingest(
        "/v1/identify",
        &json!({"anonymousId": "visitor-1", "userId": "u-100", "messageId": "id1",
        "traits": {"email": "wang.fang@example.cn", "name": "王芳"}}),
    );
    assert_eq!(r.status, 200);
    s.settle();
    let p = s.profile("user_id", "u-100").unwrap();
    assert_eq!(p, s.profile("anonymous_id", "visitor-1").unwrap());
    assert_eq!(p, s.profile("email", "wang.fang@example.cn").unwrap());
    assert_eq!(p["computed"]["event_count"], 3);
    assert_eq!(p["traits"]["name"], "王芳");
    assert_eq!(s.admin_get("/api/v1/stats").json()["customers"], 1);
}

#[test]
fn one_customer_on_two_devices_merges_and_the_old_id_leads_to_the_survivor() {
    let s = Server::start();
    s.ingest(
        "/v1/track",
        &json!({"anonymousId": "phone", "event": "Opened", "messageId": "p1"}),
    );
    s.ingest(
        "/v1/track",
        &json!({"anonymousId": "laptop", "event": "Opened", "messageId": "l1"}),
    );
    s.settle();
    let laptop_customer = s.profile("anonymous_id", "laptop").unwrap()["customer_id"].clone();
    s.ingest(
        "/v1/identify",
        &json!({"anonymousId": "phone", "userId": "u-2", "messageId": "i1"}),
    );
    s.ingest(
        "/v1/identify",
        &json!({"anonymousId": "laptop", "userId": "u-2", "messageId": "i2"}),
    );
    s.settle();
    let p = s.profile("user_id", "u-2").unwrap();
    assert_eq!(p["computed"]["event_count"], 4);
    assert_eq!(p["merges"].as_array().unwrap().len(), 1);
    let via_old = s
        .profile("customer_id", laptop_customer.as_str().unwrap())
        .unwrap();
    assert_eq!(via_old["customer_id"], p["customer_id"]);
    assert!(s.profile("customer_id", "999999").is_none());
}

#[test]
fn a_shared_device_never_merges_two_people() {
    let s = Server::start();
    s.ingest(
        "/v1/identify",
        &json!({"anonymousId": "family-ipad", "userId": "mum", "messageId": "m1"}),
    );
    s.ingest(
        "/v1/track",
        &json!({"anonymousId": "family-ipad", "userId": "mum", "event": "Order Completed",
        "properties": {"revenue": 300}, "messageId": "m2"}),
    );
    s.ingest(
        "/v1/identify",
        &json!({"anonymousId": "family-ipad", "userId": "kid", "messageId": "k1"}),
    );
    s.ingest("/v1/track", &json!({"anonymousId": "family-ipad", "userId": "kid", "event": "Game Played", "messageId": "k2"}));
    s.settle();
    let mum = s.profile("user_id", "mum").unwrap();
    let kid = s.profile("user_id", "kid").unwrap();
    assert_ne!(mum["customer_id"], kid["customer_id"]);
    assert_eq!(mum["computed"]["orders"], 1);
    assert_eq!(kid["computed"]["orders"], 0);
    assert_eq!(kid["computed"]["event_counts"]["Game Played"], 1);
    // The device stays with its first owner.
    assert_eq!(
        s.profile("anonymous_id", "family-ipad").unwrap()["customer_id"],
        mum["customer_id"]
    );
}

#[test]
fn alias_links_the_previous_id() {
    let s = Server::start();
    s.ingest(
        "/v1/track",
        &json!({"anonymousId": "anon-77", "event": "Signed Up", "messageId": "a1"}),
    );
    s.ingest(
        "/v1/alias",
        &json!({"previousId": "anon-77", "userId": "u-77", "messageId": "a2"}),
    );
    s.ingest(
        "/v1/track",
        &json!({"userId": "u-77", "event": "Logged In", "messageId": "a3"}),
    );
    s.settle();
    let p = s.profile("user_id", "u-77").unwrap();
    assert_eq!(p, s.profile("anonymous_id", "anon-77").unwrap());
    assert_eq!(p["computed"]["event_counts"]["Signed Up"], 1);
    assert_eq!(p["computed"]["event_counts"]["Logged In"], 1);
}

#[test]
fn junk_identifier_values_link_nobody() {
    let s = Server::start();
    s.ingest(
        "/v1/identify",
        &json!({"userId": "alice", "messageId": "b1", "traits": {"email": "test@test.com"}}),
    );
    s.ingest(
        "/v1/identify",
        &json!({"userId": "bob", "messageId": "b2", "traits": {"email": "test@test.com"}}),
    );
    s.ingest(
        "/v1/track",
        &json!({"userId": "carol", "anonymousId": "undefined", "event": "E", "messageId": "b3"}),
    );
    s.ingest(
        "/v1/track",
        &json!({"userId": "dave", "anonymousId": "undefined", "event": "E", "messageId": "b4"}),
    );
    s.settle();
    let ids: Vec<_> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|u| s.profile("user_id", u).unwrap()["customer_id"].clone())
        .collect();
    for i in 0..ids.len() {
        for j in i + 1..ids.len() {
            assert_ne!(ids[i], ids[j]);
        }
    }
    assert!(s.profile("email", "test@test.com").is_none());
    assert!(s.profile("anonymous_id", "undefined").is_none());
}

#[test]
fn later_identify_wins_by_event_time_not_arrival() {
    let s = Server::start();
    s.ingest(
        "/v1/identify",
        &json!({"userId": "t", "messageId": "new", "timestamp": "2026-02-02T00:00:00Z",
        "traits": {"city": "上海"}}),
    );
    s.ingest(
        "/v1/identify",
        &json!({"userId": "t", "messageId": "old", "timestamp": "2026-01-01T00:00:00Z",
        "traits": {"city": "北京", "tier": "gold"}}),
    );
    s.settle();
    let p = s.profile("user_id", "t").unwrap();
    assert_eq!(p["traits"]["city"], "上海");
    assert_eq!(p["traits"]["tier"], "gold");
    let found = s
        .admin_get("/api/v1/profiles?trait=city&value=%E4%B8%8A%E6%B5%B7")
        .json();
    assert_eq!(found["profiles"][0]["customer_id"], p["customer_id"]);
}
