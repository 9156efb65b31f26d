//! End-to-end tests of the lake: write, query, compact, reject.

use cohort_core::Position;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use cohort_lake::arrow::array::{
    Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use cohort_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use cohort_lake::parquet::basic::{Compression, LogicalType, TimeUnit as PqTimeUnit};
use cohort_lake::parquet::file::reader::{FileReader, SerializedFileReader};
use cohort_lake::{
    Area, EmptyState, Lake, LakeError, LakeEvent, LakeWriter, QueryOptions, StateError,
    StateTables, identities_schema, memberships_schema, profile_traits_schema,
};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Event `seq` on 2024-05-`day` at `hour`:00 UTC.
fn event(seq: i64, day: u32, hour: u32, name: &str, properties: Value) -> LakeEvent {
    let at = Utc
        .with_ymd_and_hms(2024, 5, day, hour, 0, 0)
        .single()
        .unwrap_or_default();
    LakeEvent {
        seq,
        source_id: 1,
        message_id: format!("m-{seq}"),
        customer_id: Some(100 + seq % 3),
        kind: "track".into(),
        name: name.into(),
        timestamp: at,
        received_at: at + chrono::Duration::seconds(2),
        user_id: Some(format!("u-{}", seq % 3)),
        anonymous_id: None,
        properties,
        context: json!({"library": {"name": "test"}}).into(),
        traits: Value::Null.into(),
    }
}

fn order(seq: i64, day: u32, revenue: f64) -> LakeEvent {
    event(
        seq,
        day,
        10,
        "Order Completed",
        json!({"revenue": revenue, "currency": "EUR", "order_id": format!("o-{seq}"),
               "quantity": 2, "plan": if seq % 2 == 0 { "pro" } else { "free" },
               "amount": format!("{}", seq * 10)}),
    )
}

fn opts() -> QueryOptions {
    QueryOptions {
        timeout: Duration::from_secs(60),
        max_rows: 10_000,
        ..QueryOptions::default()
    }
}

async fn rows(lake: &Lake, sql: &str) -> Result<Vec<serde_json::Map<String, Value>>, LakeError> {
    lake.query(sql, opts()).await?.to_json_rows()
}

async fn one(lake: &Lake, sql: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let rows = rows(lake, sql).await?;
    let row = rows.first().ok_or("no row")?;
    Ok(row.values().next().cloned().ok_or("no column")?)
}

async fn count(lake: &Lake) -> Result<i64, Box<dyn std::error::Error>> {
    one(lake, "SELECT count(*) AS n FROM events")
        .await?
        .as_i64()
        .ok_or_else(|| "count is not an integer".into())
}

fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(dir.join("lake/events"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(day.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().ends_with(".parquet") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn events_across_two_days_are_counted_and_summed_exactly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    // One call touching both days, then one touching the second day only.
    writer.append(&[
        order(1, 1, 10.0),
        order(2, 1, 20.5),
        order(3, 2, 5.25),
        event(4, 1, 23, "Page Viewed", json!({"path": "/"})),
    ])?;
    writer.append(&[order(5, 2, 100.0), event(6, 2, 0, "Signed Up", json!({}))])?;
    assert_eq!(writer.last_position(), Some(Position::new(0, 6)));

    let names: Vec<String> = parquet_files(dir.path())
        .iter()
        .map(|p| {
            let day = p.parent().and_then(Path::file_name).unwrap_or_default();
            format!(
                "{}/{}",
                day.to_string_lossy(),
                p.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "date=2024-05-01/part-1-4.parquet",
            "date=2024-05-02/part-3-3.parquet",
            "date=2024-05-02/part-5-6.parquet"
        ]
    );

    let lake = Lake::open(dir.path())?;
    let result = lake
        .query(
            "SELECT date, count(*) AS events, sum(revenue) AS revenue, sum(quantity) AS items, \
             count(DISTINCT customer_id) AS customers \
             FROM events GROUP BY date ORDER BY date",
            opts(),
        )
        .await?;
    assert_eq!(
        result.columns,
        [
            ("date".to_owned(), "DATE".to_owned()),
            ("events".to_owned(), "BIGINT".to_owned()),
            ("revenue".to_owned(), "DOUBLE".to_owned()),
            ("items".to_owned(), "BIGINT".to_owned()),
            ("customers".to_owned(), "BIGINT".to_owned()),
        ]
    );
    let rows = result.to_json_rows()?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["date"], json!("2024-05-01"));
    assert_eq!(rows[0]["events"], json!(3));
    assert_eq!(rows[0]["revenue"], json!(30.5));
    assert_eq!(rows[0]["items"], json!(4));
    assert_eq!(rows[0]["customers"], json!(2));
    assert_eq!(rows[1]["date"], json!("2024-05-02"));
    assert_eq!(rows[1]["events"], json!(3));
    assert_eq!(rows[1]["revenue"], json!(105.25));

    // Partition filter, the timestamp column and the promoted string columns.
    let v = one(
        &lake,
        "SELECT count(*) FROM events WHERE date = '2024-05-02'",
    )
    .await?;
    assert_eq!(v, json!(3));
    let v = one(
        &lake,
        "SELECT count(*) FROM events WHERE timestamp >= '2024-05-01T23:00:00Z' AND timestamp < '2024-05-02T01:00:00Z'",
    )
    .await?;
    assert_eq!(v, json!(2));
    let v = one(
        &lake,
        "SELECT string_agg(order_id, ',' ORDER BY seq) FROM events WHERE currency = 'EUR'",
    )
    .await?;
    assert_eq!(v, json!("o-1,o-2,o-3,o-5"));
    let v = one(
        &lake,
        "SELECT count(*) FROM events WHERE received_at = timestamp + INTERVAL '2 seconds'",
    )
    .await?;
    assert_eq!(v, json!(6));
    Ok(())
}

#[tokio::test]
async fn json_functions_read_properties() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    writer.append(&[
        order(1, 1, 1.0),
        order(2, 1, 2.0),
        order(3, 1, 3.0),
        order(4, 1, 4.0),
    ])?;
    let lake = Lake::open(dir.path())?;
    let rows = rows(
        &lake,
        "SELECT json_get_str(properties, 'plan') AS plan, \
                sum(json_get_float(properties, 'revenue')) AS revenue, \
                count(*) AS n \
         FROM events GROUP BY 1 ORDER BY 1",
    )
    .await?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["plan"], json!("free"));
    assert_eq!(rows[0]["revenue"], json!(4.0));
    assert_eq!(rows[1]["plan"], json!("pro"));
    assert_eq!(rows[1]["revenue"], json!(6.0));
    let v = one(
        &lake,
        "SELECT count(*) FROM events WHERE (properties->>'plan') = 'pro'",
    )
    .await?;
    assert_eq!(v, json!(2));
    let v = one(
        &lake,
        "SELECT json_get_str(context, 'library', 'name') FROM events LIMIT 1",
    )
    .await?;
    assert_eq!(v, json!("test"));
    // The union-typed json_get renders as its value, not Arrow's notation.
    let v = one(
        &lake,
        "SELECT json_get(properties, 'currency') FROM events LIMIT 1",
    )
    .await?;
    assert_eq!(v, json!("EUR"));
    Ok(())
}

#[tokio::test]
async fn files_open_with_a_plain_parquet_reader() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    writer.append(&[order(1, 3, 9.5), order(2, 3, 0.5)])?;
    let files = parquet_files(dir.path());
    assert_eq!(files.len(), 1);
    let reader = SerializedFileReader::new(std::fs::File::open(&files[0])?)?;
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().num_rows(), 2);
    let schema = meta.file_metadata().schema_descr();
    let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
    assert!(!names.contains(&"date"), "date lives in the directory name");
    for name in ["timestamp", "received_at"] {
        let column = schema
            .columns()
            .iter()
            .find(|c| c.name() == name)
            .ok_or("missing column")?;
        assert_eq!(
            column.logical_type_ref(),
            Some(&LogicalType::timestamp(true, PqTimeUnit::MICROS)),
            "{name} must be TIMESTAMP(MICROS, UTC)"
        );
    }
    let row_group = meta.row_group(0);
    assert!(
        row_group
            .columns()
            .iter()
            .all(|c| c.compression() == Compression::SNAPPY)
    );
    Ok(())
}

#[tokio::test]
async fn writing_a_range_twice_does_not_duplicate_rows() -> TestResult {
    let dir = tempfile::tempdir()?;
    let batch: Vec<LakeEvent> = (1..=10)
        .map(|s| order(s, 1 + (s % 2) as u32, 1.0))
        .collect();
    {
        let mut writer = LakeWriter::open(dir.path())?;
        writer.append(&batch)?;
        writer.append(&batch)?;
        assert_eq!(writer.last_position(), Some(Position::new(0, 10)));
    }
    let lake = Lake::open(dir.path())?;
    assert_eq!(count(&lake).await?, 10);

    // After a restart: the same range, then a batch overlapping it.
    let mut writer = LakeWriter::open(dir.path())?;
    assert_eq!(writer.last_position(), Some(Position::new(0, 10)));
    writer.append(&batch)?;
    let overlapping: Vec<LakeEvent> = (5..=15).map(|s| order(s, 1, 1.0)).collect();
    writer.append(&overlapping)?;
    assert_eq!(writer.last_position(), Some(Position::new(0, 15)));
    assert_eq!(count(&lake).await?, 15);
    let v = one(&lake, "SELECT count(DISTINCT seq) FROM events").await?;
    assert_eq!(v, json!(15));
    assert_eq!(parquet_files(dir.path()).len(), 3);
    Ok(())
}

#[tokio::test]
async fn compaction_keeps_results_and_reduces_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    let mut seq = 0;
    for _ in 0..6 {
        let batch: Vec<LakeEvent> = (0..5)
            .map(|i| {
                seq += 1;
                order(seq, if i == 4 { 2 } else { 1 }, seq as f64)
            })
            .collect();
        writer.append(&batch)?;
    }
    let lake = Lake::open(dir.path())?;
    let sql = "SELECT date, count(*) AS n, sum(revenue) AS r, min(seq) AS lo, max(seq) AS hi \
               FROM events GROUP BY date ORDER BY date";
    let before = rows(&lake, sql).await?;
    assert_eq!(parquet_files(dir.path()).len(), 12);
    let small = parquet_files(dir.path())[0].clone();
    let small_bytes = std::fs::read(&small)?;

    // Only days with at least 7 files: none.
    assert!(writer.compact_all(7)?.is_empty());
    let done = writer.compact_all(2)?;
    assert_eq!(done.len(), 2);
    assert_eq!(done.iter().map(|c| c.files_merged).sum::<usize>(), 12);
    assert_eq!(done.iter().map(|c| c.rows).sum::<usize>(), 30);
    assert_eq!(parquet_files(dir.path()).len(), 2);
    assert_eq!(writer.files()?.len(), 2);
    assert_eq!(rows(&lake, sql).await?, before);
    assert_eq!(before[0]["n"], json!(24));
    assert_eq!(before[1]["n"], json!(6));

    // A crash between the merged file's rename and the deletes leaves old
    // files behind: readers ignore them, the next open deletes them.
    std::fs::write(&small, &small_bytes)?;
    assert_eq!(parquet_files(dir.path()).len(), 3);
    assert_eq!(rows(&lake, sql).await?, before);
    drop(writer);
    let mut writer = LakeWriter::open(dir.path())?;
    assert_eq!(parquet_files(dir.path()).len(), 2);

    // Appends after compaction add files again; replays of compacted ranges do not.
    writer.append(&[order(3, 1, 3.0), order(31, 1, 31.0)])?;
    assert_eq!(count(&lake).await?, 31);
    assert!(
        writer
            .compact(Area::Day(
                chrono::NaiveDate::from_ymd_opt(2024, 5, 2).ok_or("date")?,
            ))?
            .is_none()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_during_compaction_see_every_row_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    for s in 1..=40 {
        writer.append(&[order(s, 1, 1.0)])?;
    }
    let lake = Arc::new(Lake::open(dir.path())?);
    let reader = {
        let lake = Arc::clone(&lake);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..30 {
                seen.push(count(&lake).await.map_err(|e| e.to_string()));
            }
            seen
        })
    };
    let compactor = tokio::task::spawn_blocking(move || -> Result<usize, LakeError> {
        let mut merged = 0;
        // Compact in steps so that several swaps happen while queries run.
        for s in (41..=60).step_by(5) {
            writer.append(&(s..s + 5).map(|q| order(q, 1, 0.0)).collect::<Vec<_>>())?;
            merged += writer.compact_all(2)?.len();
        }
        Ok(merged)
    });
    let counts = reader.await?;
    assert!(compactor.await?? > 0);
    for c in counts {
        let c = c?;
        assert!((40..=60).contains(&c) && c % 5 == 0, "saw {c} rows");
    }
    assert_eq!(count(&lake).await?, 60);
    Ok(())
}

#[tokio::test]
async fn recent_rows_are_visible_before_they_are_written_and_counted_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    writer.append(&[order(1, 1, 1.0), order(2, 1, 2.0), order(3, 1, 3.0)])?;
    let lake = Lake::open(dir.path())?;
    let recent = vec![order(4, 1, 4.0), order(5, 2, 5.0), order(6, 2, 6.0)];
    lake.set_recent(recent.clone())?;
    assert_eq!(count(&lake).await?, 6);
    let v = one(
        &lake,
        "SELECT sum(revenue) FROM events WHERE date = '2024-05-02'",
    )
    .await?;
    assert_eq!(v, json!(11.0));

    // Written, but the caller has not cleared them yet.
    writer.append(&recent[..2])?;
    assert_eq!(count(&lake).await?, 6);
    let v = one(&lake, "SELECT sum(revenue) FROM events").await?;
    assert_eq!(v, json!(21.0));
    writer.append(&recent[2..])?;
    assert_eq!(count(&lake).await?, 6);
    lake.set_recent(Vec::new())?;
    assert_eq!(count(&lake).await?, 6);
    Ok(())
}

/// An order dated `days_before` days before 2024-05-10 12:00 UTC, received on 2024-05-10.
fn late_order(seq: i64, days_before: i64, revenue: f64) -> LakeEvent {
    let mut e = order(seq, 10, revenue);
    e.received_at = e.timestamp;
    e.timestamp -= chrono::Duration::days(days_before);
    e
}

#[tokio::test]
async fn events_over_thousands_of_days_add_files_to_the_late_area_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    writer.append(&[order(1, 9, 1.0), order(2, 10, 2.0)])?;
    let baseline = parquet_files(dir.path()).len();
    // 5,000 distinct days in two appends, as a client with a public write key could send them.
    let burst: Vec<LakeEvent> = (0..5_000).map(|i| late_order(3 + i, 40 + i, 1.0)).collect();
    writer.append(&burst[..2_500])?;
    writer.append(&burst[2_500..])?;
    let files = parquet_files(dir.path());
    assert_eq!(files.len(), baseline + 2, "{files:?}");
    assert_eq!(
        files
            .iter()
            .filter(|f| f.parent().is_some_and(|p| p.ends_with("late")))
            .count(),
        2
    );
    writer.compact_all(2)?;
    assert_eq!(parquet_files(dir.path()).len(), baseline + 1);

    let lake = Lake::open(dir.path())?;
    assert_eq!(count(&lake).await?, 5_002);
    // The date of a late event is its own day, for filters and groups alike.
    let day = |before: i64| {
        (chrono::NaiveDate::from_ymd_opt(2024, 5, 10).unwrap_or_default()
            - chrono::Duration::days(before))
        .to_string()
    };
    let sql = format!(
        "SELECT count(*) AS n, min(seq) AS s FROM events WHERE date = '{}'",
        day(40)
    );
    assert_eq!(one(&lake, &sql).await?, json!(1));
    let rows = rows(
        &lake,
        "SELECT date, count(*) AS n FROM events GROUP BY date ORDER BY date DESC LIMIT 3",
    )
    .await?;
    let dates: Vec<_> = rows.iter().map(|r| r["date"].clone()).collect();
    assert_eq!(
        dates,
        [json!("2024-05-10"), json!("2024-05-09"), json!(day(40))]
    );
    let v = one(
        &lake,
        "SELECT count(*) FROM events WHERE timestamp < TIMESTAMP '2000-01-01 00:00:00'",
    )
    .await?;
    let before_2000 = burst.iter().filter(|e| e.timestamp.year() < 2000).count();
    assert_eq!(v, json!(before_2000));
    Ok(())
}

#[tokio::test]
async fn late_recent_rows_are_counted_once_while_and_after_they_are_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    writer.append(&[order(1, 10, 1.0)])?;
    let lake = Lake::open(dir.path())?;
    let recent = vec![
        late_order(2, 400, 2.0),
        order(3, 10, 3.0),
        late_order(4, 90, 4.0),
    ];
    lake.set_recent(recent.clone())?;
    assert_eq!(count(&lake).await?, 4);
    writer.append(&recent[..2])?;
    assert_eq!(count(&lake).await?, 4);
    assert_eq!(
        one(&lake, "SELECT sum(revenue) FROM events").await?,
        json!(10.0)
    );
    writer.append(&recent[2..])?;
    assert_eq!(count(&lake).await?, 4);
    lake.set_recent(Vec::new())?;
    assert_eq!(count(&lake).await?, 4);
    assert_eq!(
        one(&lake, "SELECT sum(revenue) FROM events").await?,
        json!(10.0)
    );
    Ok(())
}

#[tokio::test]
async fn statements_other_than_queries_are_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(dir.path())?;
    for sql in [
        "INSERT INTO events (seq) VALUES (1)",
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
        "COPY (SELECT 1) TO '/tmp/out.parquet'",
        "SET datafusion.execution.target_partitions = 1",
        "DROP TABLE events",
        "DELETE FROM events",
        "UPDATE events SET seq = 1",
    ] {
        match lake.query(sql, opts()).await {
            Err(e @ LakeError::NotReadOnly(_)) => {
                assert!(
                    e.to_string()
                        .starts_with("only read-only queries are allowed"),
                    "{e}"
                );
            }
            other => panic!("{sql} was not rejected: {other:?}"),
        }
    }
    // Parsed as a query, planned as a table creation: refused by the planner.
    let e = lake.query("SELECT 1 AS a INTO t2", opts()).await;
    assert!(e.is_err(), "SELECT INTO must fail");
    assert!(
        rows(&lake, "SELECT * FROM t2").await.is_err(),
        "no table was created"
    );
    // No way to read files outside the lake.
    assert!(
        lake.query("SELECT * FROM '/etc/passwd'", opts())
            .await
            .is_err()
    );
    // Read-only helpers work.
    let plan = lake
        .query("EXPLAIN SELECT count(*) FROM events", opts())
        .await?;
    assert!(plan.to_table_text()?.contains("physical_plan"));
    assert!(lake.query("SHOW TABLES", opts()).await?.num_rows() >= 5);
    assert_eq!(lake.query("DESCRIBE events", opts()).await?.num_rows(), 21);
    Ok(())
}

#[tokio::test]
async fn bad_sql_gives_a_clear_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(dir.path())?;
    let message = |r: Result<_, LakeError>| match r {
        Err(LakeError::Query(m)) => m,
        other => panic!("expected a query error, got {other:?}"),
    };
    let m = message(lake.query("SELEC count(*) FROM events", opts()).await);
    assert!(m.starts_with("syntax error:"), "{m}");
    let m = message(lake.query("SELECT nope FROM events", opts()).await);
    assert!(m.contains("nope") && !m.contains("Schema error"), "{m}");
    let m = message(lake.query("SELECT * FROM evnts", opts()).await);
    assert!(m.contains("evnts") && m.contains("not found"), "{m}");
    let m = message(lake.query("SELECT 1; SELECT 2", opts()).await);
    assert!(m.contains("exactly one"), "{m}");
    Ok(())
}

#[tokio::test]
async fn results_are_truncated_at_max_rows_and_render() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(dir.path())?;
    let limited = QueryOptions {
        timeout: Duration::from_secs(30),
        max_rows: 10,
        ..QueryOptions::default()
    };
    let r = lake
        .query("SELECT value FROM range(100) ORDER BY value", limited)
        .await?;
    assert_eq!(r.num_rows(), 10);
    assert!(r.truncated);
    let r = lake.query("SELECT value FROM range(10)", limited).await?;
    assert_eq!(r.num_rows(), 10);
    assert!(!r.truncated);

    let r = lake
        .query(
            "SELECT 1 AS n, 'a,b' AS s, CAST(NULL AS DOUBLE) AS x, [1, 2] AS l, \
             TIMESTAMP '2024-05-01T10:00:00Z' AS t",
            opts(),
        )
        .await?;
    let csv = r.to_csv()?;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("n,s,x,l,t"));
    let line = lines.next().ok_or("no data line")?;
    assert!(
        line.starts_with("1,\"a,b\",,\"[1, 2]\",2024-05-01T10:00:00"),
        "{line}"
    );
    let json = r.to_json_rows()?;
    assert_eq!(json[0]["x"], Value::Null);
    assert_eq!(json[0]["l"], json!([1, 2]));
    let text = r.to_table_text()?;
    assert!(text.contains("| n ") && text.contains("a,b"), "{text}");
    let out = dir.path().join("out.parquet");
    assert_eq!(r.to_parquet(&out)?, 1);
    let reader = SerializedFileReader::new(std::fs::File::open(&out)?)?;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 1);

    // An empty result still has a header.
    let r = lake.query("SELECT 1 AS a WHERE false", opts()).await?;
    assert_eq!(r.to_csv()?.trim(), "a");
    assert!(r.to_json_rows()?.is_empty());
    Ok(())
}

struct FixedState;

impl StateTables for FixedState {
    fn profiles(&self) -> Result<RecordBatch, StateError> {
        // Deliberately not the documented types: milliseconds and INT ids are cast.
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Int32, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new(
                "first_seen",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new(
                "last_seen",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("event_count", DataType::Int64, true),
            Field::new("orders", DataType::Int64, true),
            Field::new("total_revenue", DataType::Float64, true),
            Field::new("revenue_30d", DataType::Float64, true),
            Field::new("orders_30d", DataType::Int64, true),
            Field::new(
                "last_order_at",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("average_order_value", DataType::Float64, true),
        ]));
        let ts = || {
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_714_557_600_000),
                None,
            ]))
        };
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![101, 102])),
                ts(),
                ts(),
                ts(),
                Arc::new(Int64Array::from(vec![3, 1])),
                Arc::new(Int64Array::from(vec![2, 0])),
                Arc::new(Float64Array::from(vec![30.0, 0.0])),
                Arc::new(Float64Array::from(vec![30.0, 0.0])),
                Arc::new(Int64Array::from(vec![2, 0])),
                ts(),
                Arc::new(Float64Array::from(vec![Some(15.0), None])),
            ],
        )?)
    }
    fn profile_traits(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::try_new(
            profile_traits_schema(),
            vec![
                Arc::new(Int64Array::from(vec![101])),
                Arc::new(StringArray::from(vec!["plan"])),
                Arc::new(StringArray::from(vec!["pro"])),
                Arc::new(Float64Array::from(vec![None::<f64>])),
            ],
        )?)
    }
    fn identities(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(identities_schema()))
    }
    fn memberships(&self) -> Result<RecordBatch, StateError> {
        Err("state store is down".into())
    }
}

#[tokio::test]
async fn state_tables_join_with_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    writer.append(&[order(1, 1, 10.0), order(4, 1, 20.0), order(2, 1, 7.0)])?;
    let lake = Lake::open(dir.path())?;
    assert_eq!(one(&lake, "SELECT count(*) FROM profiles").await?, json!(0));
    assert_eq!(
        one(&lake, "SELECT count(*) FROM memberships").await?,
        json!(0)
    );
    let _ = memberships_schema();

    let lake = lake.with_state(Arc::new(FixedState));
    let rows = rows(
        &lake,
        "SELECT p.customer_id, sum(e.revenue) AS revenue, max(t.value) AS plan, \
                min(p.created_at) AS created \
         FROM events e JOIN profiles p ON p.customer_id = e.customer_id \
         LEFT JOIN profile_traits t ON t.customer_id = p.customer_id AND t.key = 'plan' \
         GROUP BY p.customer_id ORDER BY p.customer_id",
    )
    .await?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["customer_id"], json!(101));
    assert_eq!(rows[0]["revenue"], json!(30.0));
    assert_eq!(rows[0]["plan"], json!("pro"));
    assert_eq!(rows[0]["created"], json!("2024-05-01T10:00:00Z"));
    assert_eq!(rows[1]["customer_id"], json!(102));
    assert_eq!(rows[1]["revenue"], json!(7.0));
    let r = lake.query("SELECT * FROM memberships", opts()).await;
    match r {
        Err(LakeError::Query(m)) => assert!(m.contains("state store is down"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let _ = EmptyState;
    Ok(())
}

#[test]
fn one_writer_at_a_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let _writer = LakeWriter::open(dir.path())?;
    assert!(matches!(
        LakeWriter::open(dir.path()),
        Err(LakeError::Locked(_))
    ));
    Ok(())
}

#[test]
fn negative_and_duplicate_seqs_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    assert!(matches!(
        writer.append(&[order(-1, 1, 1.0)]),
        Err(LakeError::InvalidEvent(_))
    ));
    assert!(matches!(
        writer.append(&[order(2, 1, 1.0), order(2, 2, 1.0)]),
        Err(LakeError::InvalidEvent(_))
    ));
    assert_eq!(writer.last_position(), None);
    assert!(parquet_files(dir.path()).is_empty());
    Ok(())
}

/// State whose only content is a merge: customer 100 was merged into 102.
struct MergedState;

impl StateTables for MergedState {
    fn profiles(&self) -> Result<RecordBatch, StateError> {
        EmptyState.profiles()
    }
    fn profile_traits(&self) -> Result<RecordBatch, StateError> {
        EmptyState.profile_traits()
    }
    fn identities(&self) -> Result<RecordBatch, StateError> {
        EmptyState.identities()
    }
    fn memberships(&self) -> Result<RecordBatch, StateError> {
        EmptyState.memberships()
    }
    fn customer_merges(&self) -> Result<Vec<(i64, i64)>, StateError> {
        Ok(vec![(100, 102)])
    }
}

#[tokio::test]
async fn events_of_merged_customers_count_for_the_survivor() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    // Customers 100, 101, 102, 100, 101, 102 by seq % 3.
    writer.append(&(0..6).map(|s| order(s, 3, 10.0)).collect::<Vec<_>>())?;
    let lake = Lake::open(dir.path())?;
    let per_customer =
        "SELECT customer_id, count(*) AS n FROM events GROUP BY customer_id ORDER BY customer_id";
    let before = rows(&lake, per_customer).await?;
    assert_eq!(before.len(), 3);

    lake.set_state(Arc::new(MergedState));
    let after = rows(&lake, per_customer).await?;
    let pairs: Vec<(i64, i64)> = after
        .iter()
        .map(|r| {
            (
                r["customer_id"].as_i64().unwrap_or(-1),
                r["n"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(pairs, vec![(101, 2), (102, 4)]);
    // Filters on the mapped column see survivors; the raw table keeps what was written.
    assert_eq!(
        one(&lake, "SELECT count(*) FROM events WHERE customer_id = 100").await?,
        json!(0)
    );
    assert_eq!(
        one(
            &lake,
            "SELECT count(*) FROM events_raw WHERE customer_id = 100"
        )
        .await?,
        json!(2)
    );
    // Partition pruning still works through the view.
    assert_eq!(
        one(
            &lake,
            "SELECT count(*) FROM events WHERE date = DATE '2024-05-03' AND customer_id = 102"
        )
        .await?,
        json!(4)
    );
    Ok(())
}

#[tokio::test]
async fn a_query_beyond_the_memory_limit_fails_clearly_and_the_next_one_runs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    let events: Vec<LakeEvent> = (0..600)
        .map(|s| order(s, 1 + (s % 5) as u32, 1.0))
        .collect();
    writer.append(&events)?;
    let lake = Lake::open_with_memory_limit(dir.path(), 16 << 20)?;
    // The hash join holds its whole build side (360,000 rows of ~200 bytes) in memory and
    // cannot spill it.
    let err = lake
        .query(
            "SELECT count(*) FROM (SELECT a.properties || b.properties AS p FROM events a, events b) x \
             JOIN (SELECT a.properties || b.properties AS q FROM events a, events b) y ON x.p = y.q",
            QueryOptions {
                timeout: Duration::from_secs(30),
                max_rows: 10,
                ..QueryOptions::default()
            },
        )
        .await
        .err()
        .ok_or("the query should not fit")?;
    assert!(
        err.to_string().contains("resources exhausted"),
        "unexpected error: {err}"
    );
    assert_eq!(count(&lake).await?, 600);
    Ok(())
}

#[tokio::test]
async fn partial_aggregation_gives_way_unless_it_halves_the_rows() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(dir.path())?;
    let v = one(
        &lake,
        "SELECT value FROM information_schema.df_settings \
         WHERE name = 'datafusion.execution.skip_partial_aggregation_probe_ratio_threshold'",
    )
    .await?;
    assert_eq!(v, json!("0.5"));
    Ok(())
}

#[tokio::test]
async fn background_queries_plan_one_partition_and_answer_alike() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    writer.append(
        &(1..=40)
            .map(|s| order(s, 1 + (s % 3) as u32, s as f64))
            .collect::<Vec<_>>(),
    )?;
    let lake = Lake::open(dir.path())?;
    let sql =
        "SELECT date, count(*) AS n, sum(revenue) AS r FROM events GROUP BY date ORDER BY date";
    let background = lake
        .query_in_background(sql, opts())
        .await?
        .to_json_rows()?;
    assert_eq!(background, rows(&lake, sql).await?);
    assert_eq!(background.len(), 3);
    let plan = lake
        .query_in_background(&format!("EXPLAIN {sql}"), opts())
        .await?
        .to_table_text()?;
    assert!(!plan.contains("RepartitionExec"), "{plan}");
    Ok(())
}
