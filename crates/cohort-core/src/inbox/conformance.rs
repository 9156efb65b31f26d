//! The behaviour every [`Inbox`] implementation must have, as one suite of tests.
//!
//! An implementation's crate runs the whole suite with [`inbox_conformance_suite!`], given a
//! function that opens its inbox in a directory (the same directory again means a restart):
//!
//! ```ignore
//! cohort_core::inbox_conformance_suite!(|dir: &std::path::Path, applied| {
//!     cohort_store::SqliteInbox::open(&cohort_store::StoreConfig::new(dir), applied).unwrap()
//! });
//! ```
//!
//! Each behaviour is also a public function, so a failing one can be run alone.

use super::{Inbox, Submission};
use crate::Position;
use chrono::Utc;
use std::path::Path;
use std::time::Duration;

/// Opens an inbox in a directory, knowing the position its consumer applied before.
pub trait OpenInbox {
    type Inbox: Inbox;
    fn open(&self, dir: &Path, applied: Position) -> Self::Inbox;
}

impl<I: Inbox, F: Fn(&Path, Position) -> I> OpenInbox for F {
    type Inbox = I;
    fn open(&self, dir: &Path, applied: Position) -> I {
        self(dir, applied)
    }
}

fn submission(source_id: i64, ids: &[&str]) -> Submission {
    Submission {
        source_id,
        received_at: Utc::now(),
        accepted: ids
            .iter()
            .map(|id| {
                let body = format!(r#"{{"type":"track","event":"E","messageId":"{id}"}}"#);
                (id.to_string(), body)
            })
            .collect(),
        ..Submission::default()
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// Entries come back in the order they were appended, each with a position after the last,
/// and the receipt names the last one appended.
pub async fn appends_are_read_back_in_order(open: impl OpenInbox) {
    let dir = temp_dir();
    let inbox = open.open(dir.path(), Position::default());
    let first = inbox
        .append(submission(1, &["a", "b"]))
        .await
        .expect("append");
    let second = inbox.append(submission(2, &["c"])).await.expect("append");
    assert_eq!((first.accepted, second.accepted), (2, 1));
    let entries = inbox.read_after(Position::default(), 10).expect("read");
    let ids: Vec<(i64, bool)> = entries
        .iter()
        .map(|e| (e.source_id, e.body.contains("\"messageId\"")))
        .collect();
    assert_eq!(ids, vec![(1, true), (1, true), (2, true)]);
    assert!(entries.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(first.last, Some(entries[1].position));
    assert_eq!(second.last, Some(entries[2].position));
    assert_eq!(inbox.committed(), entries[2].position);
}

/// Reading resumes after a given position and returns at most `limit` entries.
pub async fn reads_resume_after_a_position(open: impl OpenInbox) {
    let dir = temp_dir();
    let inbox = open.open(dir.path(), Position::default());
    inbox
        .append(submission(1, &["a", "b", "c", "d"]))
        .await
        .expect("append");
    let all = inbox.read_after(Position::default(), 10).expect("read");
    let rest = inbox.read_after(all[1].position, 10).expect("read");
    assert_eq!(rest, all[2..].to_vec());
    let one = inbox.read_after(all[0].position, 1).expect("read");
    assert_eq!(one, vec![all[1].clone()]);
    assert!(
        inbox
            .read_after(all[3].position, 10)
            .expect("read")
            .is_empty()
    );
}

/// A message ID already seen from the same source is acknowledged, counted and not appended
/// again; the same ID from another source is a different message.
pub async fn duplicate_message_ids_are_counted_not_appended(open: impl OpenInbox) {
    let dir = temp_dir();
    let inbox = open.open(dir.path(), Position::default());
    inbox.append(submission(1, &["a"])).await.expect("append");
    let again = inbox
        .append(submission(1, &["a", "b"]))
        .await
        .expect("append");
    assert_eq!((again.accepted, again.duplicates), (1, 1));
    let other_source = inbox.append(submission(2, &["a"])).await.expect("append");
    assert_eq!((other_source.accepted, other_source.duplicates), (1, 0));
    assert_eq!(
        inbox
            .read_after(Position::default(), 10)
            .expect("read")
            .len(),
        3
    );
}

/// Failed events are committed with the submission and counted in its receipt; they are not
/// entries for the processor.
pub async fn failed_events_are_kept_beside_the_log(open: impl OpenInbox) {
    let dir = temp_dir();
    let inbox = open.open(dir.path(), Position::default());
    let mut s = submission(1, &["a"]);
    s.failed.push(super::NewFailedEvent {
        source_id: Some(1),
        code: "invalid_message".into(),
        reason: "no type".into(),
        payload: "{}".into(),
        truncated: false,
    });
    let receipt = inbox.append(s).await.expect("append");
    assert_eq!((receipt.accepted, receipt.failed), (1, 1));
    assert_eq!(
        inbox
            .read_after(Position::default(), 10)
            .expect("read")
            .len(),
        1
    );
}

/// What is committed is still there after a restart, and so is the memory of message IDs.
pub async fn commits_survive_a_restart(open: impl OpenInbox) {
    let dir = temp_dir();
    let before = {
        let inbox = open.open(dir.path(), Position::default());
        inbox
            .append(submission(1, &["a", "b"]))
            .await
            .expect("append");
        inbox.read_after(Position::default(), 10).expect("read")
    };
    let inbox = open.open(dir.path(), Position::default());
    assert_eq!(
        inbox.read_after(Position::default(), 10).expect("read"),
        before
    );
    assert_eq!(inbox.committed(), before[1].position);
    let again = inbox.append(submission(1, &["b"])).await.expect("append");
    assert_eq!((again.accepted, again.duplicates), (0, 1));
}

/// The lag is what is committed and not acknowledged; waiting for an acknowledgement returns
/// once it is given, and times out while it is not.
pub async fn acknowledgements_move_the_lag(open: impl OpenInbox) {
    let dir = temp_dir();
    let inbox = open.open(dir.path(), Position::default());
    let receipt = inbox
        .append(submission(1, &["a", "b", "c"]))
        .await
        .expect("append");
    let last = receipt.last.expect("appended");
    assert_eq!(inbox.lag(), 3);
    assert!(!inbox.wait_acknowledged(last, Duration::from_millis(20)));
    let entries = inbox.read_after(Position::default(), 10).expect("read");
    inbox.acknowledge(entries[0].position);
    assert_eq!(inbox.lag(), 2);
    inbox.acknowledge(last);
    assert_eq!((inbox.lag(), inbox.acknowledged()), (0, last));
    assert!(inbox.wait_acknowledged(last, Duration::from_millis(20)));
}

/// A consumer that applied up to a position before a restart starts there.
pub async fn a_restart_resumes_from_the_applied_position(open: impl OpenInbox) {
    let dir = temp_dir();
    let applied = {
        let inbox = open.open(dir.path(), Position::default());
        let receipt = inbox
            .append(submission(1, &["a", "b"]))
            .await
            .expect("append");
        receipt.last.expect("appended")
    };
    let inbox = open.open(dir.path(), applied);
    assert_eq!((inbox.acknowledged(), inbox.lag()), (applied, 0));
}

/// A waiting consumer wakes when something is committed, and the blocking append commits
/// like the async one.
pub async fn consumers_wake_on_commit(open: impl OpenInbox) {
    let dir = temp_dir();
    let inbox = std::sync::Arc::new(open.open(dir.path(), Position::default()));
    let start = inbox.committed();
    let writer = {
        let inbox = inbox.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            inbox.append_blocking(submission(1, &["a"]))
        })
    };
    let waiter = inbox.clone();
    let woke = tokio::task::spawn_blocking(move || {
        waiter.wait_committed_past(start, Duration::from_secs(10));
        waiter.committed()
    })
    .await
    .expect("the waiting task");
    let receipt = writer.join().expect("the writer thread").expect("append");
    assert!(woke > start, "the wait ended before anything was committed");
    assert_eq!(receipt.last, Some(woke));
}

/// Runs every behaviour of the suite as a test of its own. See the module documentation.
#[macro_export]
macro_rules! inbox_conformance_suite {
    ($open:expr) => {
        mod inbox_conformance {
            use super::*;
            use $crate::inbox::conformance as suite;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn appends_are_read_back_in_order() {
                suite::appends_are_read_back_in_order($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reads_resume_after_a_position() {
                suite::reads_resume_after_a_position($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn duplicate_message_ids_are_counted_not_appended() {
                suite::duplicate_message_ids_are_counted_not_appended($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn failed_events_are_kept_beside_the_log() {
                suite::failed_events_are_kept_beside_the_log($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commits_survive_a_restart() {
                suite::commits_survive_a_restart($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn acknowledgements_move_the_lag() {
                suite::acknowledgements_move_the_lag($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_restart_resumes_from_the_applied_position() {
                suite::a_restart_resumes_from_the_applied_position($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn consumers_wake_on_commit() {
                suite::consumers_wake_on_commit($open).await
            }
        }
    };
}
