//! The inbox writer: one thread owns the inbox connection and group-commits every submission that
//! is waiting when it starts a transaction. Each submitter is answered after that commit.

use crate::conn::{WAL_LIMIT_BYTES, keep_wal_bounded};
use crate::dedup::{Added, DedupWindow};
use crate::failed::NewFailedEvent;
use crate::time::to_micros;
use crate::{StoreConfig, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior, params};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Messages and failed events from one request, committed together.
#[derive(Debug, Default, Clone)]
pub struct Submission {
    pub source_id: i64,
    pub received_at: DateTime<Utc>,
    /// (message ID, message JSON) of each accepted message, in arrival order.
    pub accepted: Vec<(String, String)>,
    pub failed: Vec<NewFailedEvent>,
    /// Failed events this submission replays: marked replayed in the same commit.
    pub replayed: Vec<i64>,
}

/// What a commit did with a submission.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Messages newly appended to the inbox.
    pub accepted: usize,
    /// Messages already seen within the dedup window: acknowledged, not appended again.
    pub duplicates: usize,
    pub failed: usize,
    /// Inbox position of the last message appended (0 when none were).
    pub last_seq: i64,
}

/// Positions shared by the writer, the processor and readers.
pub(crate) struct Progress {
    committed: AtomicI64,
    applied: AtomicI64,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Progress {
    pub(crate) fn new(committed: i64, applied: i64) -> Self {
        Self {
            committed: AtomicI64::new(committed),
            applied: AtomicI64::new(applied),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn committed(&self) -> i64 {
        self.committed.load(Ordering::Acquire)
    }

    pub(crate) fn applied(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    pub(crate) fn lag(&self) -> u64 {
        (self.committed() - self.applied()).max(0) as u64
    }

    fn notify(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    pub(crate) fn set_committed(&self, seq: i64) {
        self.committed.fetch_max(seq, Ordering::AcqRel);
        self.notify();
    }

    pub(crate) fn set_applied(&self, seq: i64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
        self.committed.fetch_max(seq, Ordering::AcqRel);
        self.notify();
    }

    /// Waits up to `timeout` for the committed position to pass `seq`.
    pub(crate) fn wait_committed_past(&self, seq: i64, timeout: Duration) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.committed() > seq {
            return;
        }
        let _ = self.changed.wait_timeout(guard, timeout);
    }

    pub(crate) fn wait_applied(&self, seq: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.applied() >= seq {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.changed.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Receipt, StoreError>>;

pub(crate) struct InboxWriter {
    tx: SyncSender<(Submission, Reply)>,
}

impl InboxWriter {
    pub(crate) fn start(
        conn: Connection,
        progress: std::sync::Arc<Progress>,
        config: &StoreConfig,
    ) -> Self {
        let (tx, rx) = sync_channel(config.writer_queue);
        let dedup_window = config.dedup_window;
        std::thread::Builder::new()
            .name("cohort-inbox".into())
            .spawn(move || writer_loop(conn, rx, &progress, dedup_window))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the inbox writer: {e}"));
        InboxWriter { tx }
    }

    pub(crate) async fn append(&self, submission: Submission) -> Result<Receipt, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.tx.try_send((submission, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Overloaded(0)),
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) fn append_blocking(&self, submission: Submission) -> Result<Receipt, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((submission, reply))
            .map_err(|_| StoreError::Closed)?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)?
    }
}

/// Submissions drained into one commit at most; bounds commit latency under a flood.
const MAX_GROUP: usize = 512;

fn writer_loop(
    mut conn: Connection,
    rx: Receiver<(Submission, Reply)>,
    progress: &Progress,
    dedup_window: chrono::Duration,
) {
    let mut last_housekeeping = Instant::now();
    let mut dedup = DedupWindow::new(dedup_window);
    let loading = Instant::now();
    match dedup.catch_up(&conn) {
        Ok(()) => tracing::debug!(
            seconds = loading.elapsed().as_secs_f64(),
            "dedup window loaded"
        ),
        // Commits catch up on their own, inside their transaction, so this only logs.
        Err(e) => {
            tracing::warn!(error = %e, "loading the dedup window failed; retrying at the first commit")
        }
    }
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let submissions: Vec<&Submission> = group.iter().map(|(s, _)| s).collect();
        match commit_group(&mut conn, &mut dedup, &submissions) {
            Ok((receipts, max_seq)) => {
                if max_seq > 0 {
                    progress.set_committed(max_seq);
                }
                metrics::histogram!("cohort_inbox_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("cohort_inbox_commits_total").increment(1);
                for ((_, reply), receipt) in group.into_iter().zip(receipts) {
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "inbox commit failed; answering the group with an error");
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                        Some(e.to_string()),
                    ))));
                }
            }
        }
        if last_housekeeping.elapsed() > Duration::from_secs(2) {
            last_housekeeping = Instant::now();
            if let Err(e) = housekeeping(&conn, &mut dedup, progress.applied()) {
                tracing::warn!(error = %e, "inbox housekeeping failed");
            }
            if let Err(e) = keep_wal_bounded(&conn, WAL_LIMIT_BYTES) {
                tracing::warn!(error = %e, "checkpointing inbox.db failed");
            }
        }
    }
}

fn commit_group(
    conn: &mut Connection,
    dedup: &mut DedupWindow,
    group: &[&Submission],
) -> rusqlite::Result<(Vec<Receipt>, i64)> {
    let mut added = Added::default();
    let result = write_group(conn, dedup, group, &mut added);
    if result.is_err() {
        dedup.roll_back(added);
    }
    result
}

fn write_group(
    conn: &mut Connection,
    dedup: &mut DedupWindow,
    group: &[&Submission],
    added: &mut Added,
) -> rusqlite::Result<(Vec<Receipt>, i64)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    dedup.catch_up(&tx)?;
    let mut receipts = Vec::with_capacity(group.len());
    let mut max_seq = 0;
    {
        let mut append = tx.prepare_cached(
            "INSERT INTO inbox (source_id, message_id, received_at, body) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut fail = tx.prepare_cached(
            "INSERT INTO failed_events (source_id, received_at, code, reason, payload, truncated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut replayed = tx.prepare_cached(
            "UPDATE failed_events SET replayed_at = ?2, replay_seq = ?3 WHERE id = ?1",
        )?;
        for s in group {
            let at = to_micros(s.received_at);
            let mut receipt = Receipt::default();
            for (message_id, body) in &s.accepted {
                if !dedup.admit(&tx, s.source_id, message_id, at, added)? {
                    receipt.duplicates += 1;
                    continue;
                }
                append.execute(params![s.source_id, message_id, at, body])?;
                receipt.last_seq = tx.last_insert_rowid();
                receipt.accepted += 1;
            }
            for f in &s.failed {
                fail.execute(params![
                    f.source_id,
                    at,
                    f.code,
                    f.reason,
                    f.payload,
                    f.truncated
                ])?;
                receipt.failed += 1;
            }
            for id in &s.replayed {
                replayed.execute(params![id, at, receipt.last_seq])?;
            }
            max_seq = max_seq.max(receipt.last_seq);
            receipts.push(receipt);
        }
    }
    tx.commit()?;
    Ok((receipts, max_seq))
}

/// Drops applied messages from the inbox and forgets message IDs older than the dedup window.
fn housekeeping(conn: &Connection, dedup: &mut DedupWindow, applied: i64) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox WHERE seq <= ?1 LIMIT 50000)",
        [applied],
    )?;
    dedup.expire(conn)
}

/// Reads inbox entries after a position (the processor's view).
pub(crate) struct InboxEntry {
    pub seq: i64,
    pub source_id: i64,
    pub received_at: i64,
    pub body: String,
}

pub(crate) fn read_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<InboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, source_id, received_at, body FROM inbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        Ok(InboxEntry {
            seq: r.get(0)?,
            source_id: r.get(1)?,
            received_at: r.get(2)?,
            body: r.get(3)?,
        })
    })?;
    rows.collect()
}
