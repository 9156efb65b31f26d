//! `cohort import` end to end: files go into the inbox offline, with bad rows in the failed-events
//! store, and a server started afterwards on the same directory processes them.

mod common;

use common::{cohort, create_source, free_port, send, unique_admin_key};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Kills the server by PID even when an assertion fails first.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn import(dir: &Path, file: &Path) -> String {
    let out = cohort()
        .args(["import", "--data"])
        .arg(dir)
        .arg(file)
        .args(["--source", "shop"])
        .env("COHORT_LOG", "warn")
        .output()
        .expect("run cohort import");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn admin_get(addr: SocketAddr, admin_key: &str, path: &str) -> (u16, Value) {
    let r = send(
        addr,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {admin_key}"))],
        b"",
    )
    .expect("HTTP exchange");
    let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, body)
}

#[test]
fn imported_files_are_processed_and_bad_rows_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let write_key = create_source(&data, "shop");

    let csv = dir.path().join("orders.csv");
    std::fs::write(
        &csv,
        "type,event,userId,messageId,timestamp,properties.revenue,properties.currency,traits.email\n\
         track,Order Completed,imp-u1,csv-1,2025-01-02T03:04:05Z,19.90,CNY,\n\
         track,Product Viewed,imp-u1,csv-2,2025-01-02T03:00:00Z,5,CNY,\n\
         identify,,imp-u1,csv-3,2025-01-01T00:00:00Z,,,ada@example.org\n\
         track,Broken,imp-u1,csv-4,2025-01-02T03:00:00Z,1,CNY,x,one cell too many\n",
    )
    .unwrap();
    let ndjson = dir.path().join("history.ndjson");
    std::fs::write(
        &ndjson,
        "{\"type\":\"track\",\"event\":\"App Opened\",\"userId\":\"imp-u1\",\"timestamp\":\"2025-01-03T00:00:00Z\"}\n\
         \n\
         {\"type\":\"page\",\"name\":\"Home\",\"userId\":\"imp-u1\",\"messageId\":\"nd-2\"}\n\
         {\"type\": \"track\", oops\n",
    )
    .unwrap();
    let json = dir.path().join("batch.json");
    std::fs::write(
        &json,
        r#"{"context": {"ip": "10.0.0.1"}, "batch": [{"type": "track", "event": "Signed Up", "userId": "imp-u1", "messageId": "js-1"}]}"#,
    )
    .unwrap();

    let summary = import(&data, &csv);
    assert!(
        summary.contains("read 4, accepted 3, duplicates 0, failed 1"),
        "{summary}"
    );
    let summary = import(&data, &ndjson);
    assert!(
        summary.contains("read 3, accepted 2, duplicates 0, failed 1"),
        "{summary}"
    );
    // Messages without a messageId get a stable one, so a second import of a file deduplicates.
    let again = import(&data, &ndjson);
    assert!(again.contains("accepted 0, duplicates 2"), "{again}");
    let summary = import(&data, &json);
    assert!(summary.contains("read 1, accepted 1"), "{summary}");

    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_key = unique_admin_key();
    let _server = Killed(
        cohort()
            .args(["serve", "--data"])
            .arg(&data)
            .args(["--listen", &addr.to_string()])
            .env("COHORT_ADMIN_KEY", &admin_key)
            .env("COHORT_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let profile = loop {
        if let Ok(r) = send(
            addr,
            "GET",
            "/api/v1/profiles/user_id/imp-u1",
            &[("Authorization", &format!("Bearer {admin_key}"))],
            b"",
        ) && r.status == 200
        {
            let profile: Value = serde_json::from_slice(&r.body).unwrap();
            if profile["computed"]["event_count"] == 6 {
                break profile;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the imported events were not all processed in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(profile["traits"]["email"], "ada@example.org");
    assert_eq!(profile["computed"]["event_counts"]["Order Completed"], 1);
    assert_eq!(profile["computed"]["total_revenue"], 19.9);

    let (status, failed) = admin_get(addr, &admin_key, "/api/v1/failed-events");
    assert_eq!(status, 200);
    let failed = failed["failed_events"].as_array().unwrap();
    let csv_row = failed
        .iter()
        .find(|f| f["code"] == "invalid_csv_row")
        .expect("the bad CSV row");
    assert!(
        csv_row["reason"].as_str().unwrap().starts_with("line 5:"),
        "{csv_row}"
    );
    assert!(
        csv_row["payload"]
            .as_str()
            .unwrap()
            .contains("one cell too many")
    );
    let json_row = failed
        .iter()
        .find(|f| f["code"] == "invalid_json")
        .expect("the bad NDJSON row");
    assert!(
        json_row["reason"].as_str().unwrap().starts_with("line 4:"),
        "{json_row}"
    );
    assert!(json_row["payload"].as_str().unwrap().contains("oops"));

    // An import while the server runs, and HTTP ingest, see each other's message IDs: both
    // writers catch up on the shared dedup log inside their commits.
    let live = |id: &str| {
        format!(r#"{{"type": "track", "event": "Live", "userId": "imp-u1", "messageId": "{id}"}}"#)
    };
    let first = dir.path().join("live-1.ndjson");
    std::fs::write(&first, live("live-1")).unwrap();
    assert!(import(&data, &first).contains("accepted 1, duplicates 0"));
    let body = format!(r#"{{"batch": [{}, {}]}}"#, live("live-1"), live("live-2"));
    let auth = common::basic(&write_key);
    let r = send(
        addr,
        "POST",
        "/v1/batch",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap();
    let answer: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, &answer["accepted"], &answer["duplicates"]),
        (200, &Value::from(1), &Value::from(1)),
        "{answer}"
    );
    let second = dir.path().join("live-2.ndjson");
    std::fs::write(&second, live("live-2")).unwrap();
    let again = import(&data, &second);
    assert!(again.contains("accepted 0, duplicates 1"), "{again}");
}

/// `cohort query` right after an import sees it, with no server ever started: the import
/// processes what it imported.
#[test]
fn an_import_without_a_server_is_processed_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_source(&data, "shop");
    let file = dir.path().join("history.ndjson");
    std::fs::write(
        &file,
        "{\"type\":\"identify\",\"userId\":\"q1\",\"traits\":{\"plan\":\"pro\"}}\n\
         {\"type\":\"track\",\"event\":\"Order Completed\",\"userId\":\"q1\",\"properties\":{\"revenue\":5}}\n\
         {\"type\":\"track\",\"event\":\"Viewed\",\"anonymousId\":\"a9\"}\n",
    )
    .unwrap();
    let summary = import(&data, &file);
    assert!(summary.contains("accepted 3"), "{summary}");
    assert!(summary.contains("Processed"), "{summary}");

    let out = cohort()
        .args(["query", "--format", "json", "--data"])
        .arg(&data)
        .arg("SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM profiles) AS customers, (SELECT max(total_revenue) FROM profiles) AS revenue")
        .env("COHORT_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["events"], 3, "{rows}");
    assert_eq!(rows[0]["customers"], 2, "{rows}");
    assert_eq!(rows[0]["revenue"], 5.0, "{rows}");
}

#[test]
fn importing_into_a_missing_source_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_source(&data, "web");
    let file = dir.path().join("x.ndjson");
    std::fs::write(&file, "{}\n").unwrap();
    let out = cohort()
        .args(["import", "--data"])
        .arg(&data)
        .arg(&file)
        .args(["--source", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no source named \"nope\""));
}

/// `--rows profiles` from Parquet and `--rows events` from CSV: flat business exports become
/// identifies with traits and tracks with properties, and a running server applies them.
#[test]
fn profiles_from_parquet_and_transactions_from_csv() {
    use cohort_lake::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use cohort_lake::arrow::datatypes::{DataType, Field, Schema};
    use cohort_lake::parquet::arrow::ArrowWriter;
    use std::sync::Arc;

    let s = common::Server::start();
    let files = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("credit", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![501, 502])),
            Arc::new(StringArray::from(vec![Some("p1@example.com"), None])),
            Arc::new(StringArray::from(vec![Some("杭州"), Some("Leeds")])),
            Arc::new(Float64Array::from(vec![Some(12.5), None])),
        ],
    )
    .unwrap();
    let parquet = files.path().join("customers.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&parquet).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let csv = files.path().join("orders.csv");
    std::fs::write(
        &csv,
        "user_id,timestamp,revenue,order_id,sku\n501,2026-05-01T10:00:00Z,99.5,A-1,sku-9\n502,2026-05-02T10:00:00Z,20,A-2,sku-1\n",
    )
    .unwrap();

    let run = |file: &Path, extra: &[&str]| {
        let out = common::succeed(
            cohort()
                .args(["import", "--data"])
                .arg(s.dir.path())
                .arg(file)
                .args(["--source", "test"])
                .args(extra),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = run(&parquet, &["--rows", "profiles"]);
    assert!(
        said.contains("(Parquet)") && said.contains("accepted 2"),
        "{said}"
    );
    let said = run(&csv, &["--rows", "events", "--event", "Order Completed"]);
    assert!(said.contains("accepted 2"), "{said}");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = s.profile("user_id", "501");
        if let Some(p) = &p
            && p["computed"]["orders"] == 1
        {
            assert_eq!(p["traits"]["city"], "杭州");
            assert_eq!(p["traits"]["credit"], 12.5);
            assert_eq!(p["traits"]["email"], "p1@example.com");
            assert_eq!(p["computed"]["total_revenue"], 99.5);
            break;
        }
        assert!(Instant::now() < deadline, "import not processed: {p:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = s.admin_get("/api/v1/profiles/user_id/502/events").json();
    let order = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "Order Completed")
        .cloned()
        .expect("the order");
    assert_eq!(order["message"]["properties"]["order_id"], "A-2");
    assert_eq!(order["message"]["properties"]["revenue"], 20);
}
