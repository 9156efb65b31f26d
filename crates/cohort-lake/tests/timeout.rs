//! The query timeout. A file of its own: it measures the process's CPU time,
//! which other tests running in parallel would disturb.

use std::time::{Duration, Instant};

use cohort_lake::{Lake, LakeError, QueryOptions};
use serde_json::json;

/// User + system CPU time of this process (all threads), from /proc.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // /proc reports USER_HZ ticks, 100 per second on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_query_times_out_with_a_clear_message_and_stops()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let lake = Lake::open(dir.path())?;
    let started = Instant::now();
    let result = lake
        .query(
            "SELECT sum((a.value * b.value) % 7) FROM range(1000000) a CROSS JOIN range(1000000) b",
            QueryOptions {
                timeout: Duration::from_millis(500),
                max_rows: 10,
                ..QueryOptions::default()
            },
        )
        .await;
    match result {
        Err(e @ LakeError::Timeout(_)) => assert_eq!(e.to_string(), "query timed out after 0.5s"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "timed out after {elapsed:?}"
    );

    // The query was cancelled, not left running: the process goes idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let (Some(before), ()) = (cpu_time(), tokio::time::sleep(Duration::from_secs(1)).await) {
        let after = cpu_time().ok_or("no /proc")?;
        let busy = after.saturating_sub(before);
        assert!(
            busy < Duration::from_millis(500),
            "still busy: {busy:?} of CPU in 1s"
        );
    }

    // And the engine still answers.
    let rows = lake
        .query("SELECT 1 + 1 AS two", QueryOptions::default())
        .await?
        .to_json_rows()?;
    assert_eq!(rows[0]["two"], json!(2));
    Ok(())
}
