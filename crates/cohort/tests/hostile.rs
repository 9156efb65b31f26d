//! Hostile and careless clients against the real binary: each test runs one attack from the
//! hardening probe in a bounded loop and checks that the server stays up, answers `/healthz`
//! throughout, gives the documented error, and loses no accepted event.
//!
//! Time bounds are ratios to a baseline taken in the same test, with wide margins: a slow shared
//! machine must not fail a test.

mod common;

use common::{Server, basic, cohort, free_port, send};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// How long `/healthz` takes now, answered or not.
fn healthz(addr: SocketAddr) -> (bool, Duration) {
    let started = Instant::now();
    let ok = send(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200);
    (ok, started.elapsed())
}

/// The slowest of a few `/healthz` calls on an idle server: the baseline for ratios.
fn healthz_baseline(addr: SocketAddr) -> Duration {
    (0..5)
        .map(|_| {
            let (ok, took) = healthz(addr);
            assert!(ok, "/healthz answers before the attack");
            took
        })
        .max()
        .unwrap_or_default()
        .max(Duration::from_millis(5))
}

#[test]
fn a_deeply_nested_query_is_refused_and_the_server_stays_up() {
    let server = Server::start();
    // The probe's query: 2,000 terms overflowed the query thread's stack and aborted the process.
    let sql = format!("SELECT {}1", "1+".repeat(1999));
    let r = server.admin_send("POST", "/api/v1/query", &json!({"sql": sql}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("levels deep"), "{}", r.text());
    let or_chain = (0..3000)
        .map(|i| format!("event = 'e{i}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let r = server.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": format!("SELECT count(*) FROM events WHERE {or_chain}")}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(healthz(server.addr).0, "the server is still up");
    let r = server.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": "SELECT 1+1 AS two"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn idle_connections_cannot_make_the_server_unreachable() {
    let server = Server::start_with(&["--max-connections", "32", "--header-timeout-secs", "30"]);
    let baseline = healthz_baseline(server.addr);
    // Ten times the cap in idle connections (well inside this test's own open-file limit).
    let mut idle = Vec::new();
    for _ in 0..320 {
        if let Ok(stream) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)) {
            idle.push(stream);
        }
        if idle.len() % 40 == 0 {
            let (ok, took) = healthz(server.addr);
            assert!(ok, "/healthz answered with {} idle connections", idle.len());
            assert!(
                took < baseline * 50 + Duration::from_secs(1),
                "/healthz took {took:?} (baseline {baseline:?})"
            );
        }
    }
    // Events are still accepted, and kept.
    let r = server.ingest(
        "/v1/track",
        &json!({"userId": "u1", "event": "Still Here", "messageId": "idle-1"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    server.settle();
    let r = server.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": "SELECT count(*) AS n FROM events WHERE event = 'Still Here'"}),
    );
    assert_eq!(r.json()["rows"][0]["n"], 1, "{}", r.text());
    drop(idle);
}

#[test]
fn busy_connections_over_the_cap_get_a_clear_refusal() {
    let server = Server::start_with(&["--max-connections", "4", "--body-timeout-secs", "20"]);
    // Four requests in flight: heads sent, bodies promised and never finished.
    let mut busy = Vec::new();
    for i in 0..4 {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        let head = format!(
            "POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 1000\r\n\r\n{{",
            basic(&server.write_key)
        );
        stream.write_all(head.as_bytes()).unwrap();
        busy.push(stream);
        let _ = i;
    }
    std::thread::sleep(Duration::from_millis(300));
    let r = send(server.addr, "GET", "/healthz", &[], b"").expect("an answer");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("too_many_connections"), "{}", r.text());
    drop(busy);
}

#[test]
fn slow_clients_are_cut_off_by_the_header_and_body_timeouts() {
    let server = Server::start_with(&["--header-timeout-secs", "1", "--body-timeout-secs", "1"]);
    // Half a request head, then silence: closed after the header timeout.
    let mut slow_head = TcpStream::connect(server.addr).unwrap();
    slow_head
        .write_all(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // An idle keep-alive connection: the same clock.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    // A whole head and one byte of a 1,000-byte body: 408 after the body timeout.
    let mut slow_body = TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 1000\r\n\r\n{{",
        basic(&server.write_key)
    );
    slow_body.write_all(head.as_bytes()).unwrap();

    for stream in [&mut slow_head, &mut idle, &mut slow_body] {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
    }
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow_head.read_to_end(&mut rest);
    let _ = idle.read_to_end(&mut rest);
    let mut answer = Vec::new();
    let _ = slow_body.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the server closed them itself (took {:?})",
        started.elapsed()
    );
    assert!(healthz(server.addr).0);
}

#[test]
fn repeated_bad_keys_from_one_address_are_held_back() {
    let server = Server::start_with(&["--auth-failures-per-minute", "5"]);
    let wrong = basic("not-a-key");
    for _ in 0..5 {
        let r = server.request(
            "POST",
            "/v1/track",
            &[("Authorization", &wrong)],
            br#"{"userId":"u","event":"e"}"#,
        );
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let r = server.request(
        "POST",
        "/v1/track",
        &[("Authorization", &wrong)],
        br#"{"userId":"u","event":"e"}"#,
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(r.text().contains("too_many_auth_failures"), "{}", r.text());
    // The whole address waits, the admin API included; /healthz needs no key and still answers.
    assert_eq!(server.admin_get("/api/v1/sources").status, 429);
    assert!(healthz(server.addr).0);
}

#[test]
fn oversized_admin_bodies_are_refused() {
    let server = Server::start();
    let huge = "x".repeat(2 * 1024 * 1024);
    let r = server.admin_send("POST", "/api/v1/query", &json!({"sql": huge}));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(healthz(server.addr).0);
}

#[test]
fn csv_exports_defuse_formulas() {
    let server = Server::start();
    let r = server.ingest(
        "/v1/identify",
        &json!({"userId": "mallory", "traits": {"name": "=HYPERLINK(\"http://evil\",\"click\")"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    server.settle();
    let r = server.admin_send(
        "POST",
        "/api/v1/query",
        &json!({"sql": "SELECT value FROM profile_traits WHERE key = 'name'", "format": "csv"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.contains("'=HYPERLINK"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("=")), "{text}");
}

#[test]
fn the_operator_key_must_be_long_and_lives_only_while_configured() {
    let dir = tempfile::tempdir().unwrap();
    let out = cohort()
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("COHORT_ADMIN_KEY", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 32"), "{stderr}");

    // A server started with an operator key, then without it: the key no longer works, and
    // it was never written to the catalogue.
    let server = Server::start();
    let key = server.admin_key.clone();
    assert_eq!(server.admin_get("/api/v1/sources").status, 200);
    let dir = server.dir.path().to_path_buf();
    let state = std::fs::read(dir.join("state.db")).unwrap();
    let needle = key.as_bytes();
    assert!(
        !state.windows(needle.len()).any(|w| w == needle),
        "the operator key is stored in plain text"
    );
    drop(server);
}

#[test]
fn the_data_directory_is_private() {
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let server = Server::start();
    for file in ["state.db", "inbox.db"] {
        assert_eq!(mode(&server.dir.path().join(file)), 0o600, "{file}");
    }
    // A directory the binary creates, and one created wide by someone else.
    let root = tempfile::tempdir().unwrap();
    let fresh = root.path().join("fresh");
    let wide = root.path().join("wide");
    std::fs::create_dir(&wide).unwrap();
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&fresh, &wide] {
        common::create_source(dir, "web");
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        assert_eq!(mode(&dir.join("state.db")), 0o600);
    }
}

#[test]
fn a_browser_that_knows_a_customers_email_cannot_take_over_their_profile() {
    let server = Server::start();
    let r = server.ingest(
        "/v1/identify",
        &json!({"userId": "victim", "traits": {"email": "v@example.com", "plan": "gold"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.admin_send(
        "POST",
        "/api/v1/sources",
        &json!({"name": "website", "kind": "client"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["source"]["kind"], "client");
    let site_key = r.json()["write_key"].as_str().unwrap().to_string();
    let attack =
        json!({"anonymousId": "evil", "traits": {"email": "v@example.com", "plan": "hacked"}});
    let r = server.request(
        "POST",
        "/v1/identify",
        &[("Authorization", &basic(&site_key))],
        attack.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The normal web flow still works: a visitor who logs in joins their user.
    for body in [
        json!({"type": "track", "anonymousId": "d1", "event": "Viewed"}),
        json!({"type": "identify", "anonymousId": "d1", "userId": "u1", "traits": {"email": "u1@example.com"}}),
    ] {
        let r = server.request(
            "POST",
            "/v1/batch",
            &[("Authorization", &basic(&site_key))],
            json!({"batch": [body]}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    server.settle();
    let victim = server
        .profile("user_id", "victim")
        .expect("the victim's profile");
    assert_eq!(victim["traits"]["plan"], "gold", "{victim}");
    let by_email = server.profile("email", "v@example.com").unwrap();
    assert_eq!(by_email["customer_id"], victim["customer_id"]);
    let evil = server.profile("anonymous_id", "evil").unwrap();
    assert_ne!(evil["customer_id"], victim["customer_id"]);
    let user = server.profile("user_id", "u1").unwrap();
    let visitor = server.profile("anonymous_id", "d1").unwrap();
    assert_eq!(user["customer_id"], visitor["customer_id"]);
    assert_eq!(
        server.profile("email", "u1@example.com").unwrap()["customer_id"],
        user["customer_id"]
    );
}
