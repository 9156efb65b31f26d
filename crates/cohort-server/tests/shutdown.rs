//! Stopping an in-process server leaves no thread writing into its data directory.

use chrono::Utc;
use cohort_core::Inbox as _;
use cohort_server::{ServerConfig, start};
use cohort_store::Submission;
use serde_json::json;
use std::time::Duration;

fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|comm| comm.trim() == name)
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_lake_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap());
    config.admin_key = Some("ck_test_shutdown_waits_for_the_lake_exporter".into());
    config.engine.builtin_tags = false;
    let server = start(config).await.unwrap();
    let store = server.state().store().clone();
    let message = json!({"type": "track", "event": "Viewed", "anonymousId": "a1",
                         "messageId": "m1", "timestamp": Utc::now().to_rfc3339()});
    let receipt = store
        .append(Submission {
            source_id: 1,
            received_at: Utc::now(),
            accepted: vec![("m1".into(), message.to_string())],
            ..Submission::default()
        })
        .await
        .unwrap();
    let last = receipt.last.expect("the message was appended");
    assert!(
        store
            .inbox()
            .wait_acknowledged(last, Duration::from_secs(10))
    );
    assert_eq!(threads_named("cohort-lake"), 1);

    server.shutdown().await.unwrap();
    assert_eq!(
        threads_named("cohort-lake"),
        0,
        "the exporter outlived the server"
    );
}
