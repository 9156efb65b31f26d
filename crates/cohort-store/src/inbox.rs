//! The SQLite inbox (`inbox.db`): one writer thread owns the inbox connection and group-commits
//! every submission that is waiting when it starts a transaction. Each submitter is answered after
//! that commit. One partition: a [`Position`]'s offset is the row's `seq`.

use crate::conn::{WAL_LIMIT_BYTES, keep_wal_bounded};
use crate::dedup::{Added, DedupWindow};
use crate::time::to_micros;
use crate::{StoreConfig, StoreError};
use cohort_core::{Inbox, InboxEntry, InboxError, Position, Receipt, Submission};
use rusqlite::{Connection, TransactionBehavior, params};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Positions shared by the writer, the processor and readers.
struct Progress {
    committed: AtomicI64,
    applied: AtomicI64,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Progress {
    fn new(committed: i64, applied: i64) -> Self {
        Self {
            committed: AtomicI64::new(committed),
            applied: AtomicI64::new(applied),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    fn committed(&self) -> i64 {
        self.committed.load(Ordering::Acquire)
    }

    fn applied(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    fn lag(&self) -> u64 {
        (self.committed() - self.applied()).max(0) as u64
    }

    fn notify(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    fn set_committed(&self, seq: i64) {
        self.committed.fetch_max(seq, Ordering::AcqRel);
        self.notify();
    }

    fn set_applied(&self, seq: i64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
        self.committed.fetch_max(seq, Ordering::AcqRel);
        self.notify();
    }

    /// Waits up to `timeout` for the committed position to pass `seq`.
    fn wait_committed_past(&self, seq: i64, timeout: Duration) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.committed() > seq {
            return;
        }
        let _ = self.changed.wait_timeout(guard, timeout);
    }

    fn wait_applied(&self, seq: i64, timeout: Duration) -> bool {
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

type Reply = tokio::sync::oneshot::Sender<Result<Receipt, InboxError>>;

/// The embedded inbox has one partition.
const PARTITION: u32 = 0;

fn position(seq: i64) -> Position {
    Position::new(PARTITION, seq)
}

/// The SQLite inbox: [`Inbox`] over `inbox.db`.
pub struct SqliteInbox {
    tx: SyncSender<(Submission, Reply)>,
    /// The processor's reading connection.
    reader: Mutex<Connection>,
    progress: Arc<Progress>,
    max_lag: u64,
}

impl SqliteInbox {
    /// Opens (creating and migrating) `inbox.db` in `config.data_dir` and starts its writer.
    /// `applied` is the position the state store has applied, known from before this start.
    pub fn open(config: &StoreConfig, applied: Position) -> Result<SqliteInbox, StoreError> {
        let path = config.data_dir.join("inbox.db");
        let mut conn = crate::conn::open(&path, config.durability)?;
        crate::schema::migrate_inbox(&mut conn)?;
        let committed: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM inbox", [], |r| r.get(0))?;
        let applied = applied.offset();
        let progress = Arc::new(Progress::new(committed.max(applied), applied));
        let reader = Mutex::new(crate::conn::open(&path, config.durability)?);
        let (tx, rx) = sync_channel(config.writer_queue);
        let dedup_window = config.dedup_window;
        let writer_progress = progress.clone();
        std::thread::Builder::new()
            .name("cohort-inbox".into())
            .spawn(move || writer_loop(conn, rx, &writer_progress, dedup_window))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the inbox writer: {e}")))?;
        Ok(SqliteInbox {
            tx,
            reader,
            progress,
            max_lag: config.max_lag,
        })
    }

    fn refuse_when_behind(&self, submission: &Submission) -> Result<(), InboxError> {
        let lag = self.progress.lag();
        if lag > self.max_lag && !submission.accepted.is_empty() {
            return Err(InboxError::Overloaded(lag));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Inbox for SqliteInbox {
    async fn append(&self, submission: Submission) -> Result<Receipt, InboxError> {
        self.refuse_when_behind(&submission)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.tx.try_send((submission, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(InboxError::Overloaded(0)),
            Err(TrySendError::Disconnected(_)) => return Err(InboxError::Closed),
        }
        answer.await.map_err(|_| InboxError::Closed)?
    }

    fn append_blocking(&self, submission: Submission) -> Result<Receipt, InboxError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((submission, reply))
            .map_err(|_| InboxError::Closed)?;
        answer.blocking_recv().map_err(|_| InboxError::Closed)?
    }

    fn read_after(&self, after: Position, limit: usize) -> Result<Vec<InboxEntry>, InboxError> {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        read_after(&reader, after.offset(), limit).map_err(|e| InboxError::Storage(e.to_string()))
    }

    fn committed(&self) -> Position {
        position(self.progress.committed())
    }

    fn wait_committed_past(&self, after: Position, timeout: Duration) {
        self.progress.wait_committed_past(after.offset(), timeout)
    }

    fn acknowledge(&self, applied: Position) {
        self.progress.set_applied(applied.offset())
    }

    fn acknowledged(&self) -> Position {
        position(self.progress.applied())
    }

    fn wait_acknowledged(&self, applied: Position, timeout: Duration) -> bool {
        self.progress.wait_applied(applied.offset(), timeout)
    }

    fn lag(&self) -> u64 {
        self.progress.lag()
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
                    let _ = reply.send(Err(InboxError::Storage(e.to_string())));
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
            let mut last_seq = 0;
            for (message_id, body) in &s.accepted {
                if !dedup.admit(&tx, s.source_id, message_id, at, added)? {
                    receipt.duplicates += 1;
                    continue;
                }
                append.execute(params![s.source_id, message_id, at, body])?;
                last_seq = tx.last_insert_rowid();
                receipt.last = Some(Position::new(PARTITION, last_seq));
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
                replayed.execute(params![id, at, last_seq])?;
            }
            max_seq = max_seq.max(last_seq);
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

fn read_after(conn: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<InboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, source_id, received_at, body FROM inbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        Ok(InboxEntry {
            position: Position::new(PARTITION, r.get(0)?),
            source_id: r.get(1)?,
            received_at: r.get(2)?,
            body: r.get(3)?,
        })
    })?;
    rows.collect()
}
