//! The dedup window: which (source, messageId) pairs were accepted in the last `window`.
//!
//! The pairs are answered from memory, as 128-bit keyed hashes. On disk they are an append-only
//! log (`dedup_log` in `inbox.db`) written in the same transaction as the inbox entries, so a
//! restart rebuilds the window exactly. A SQLite index keyed by message ID would put every new
//! ID at a random leaf: each one dirties its own page, and a commit then writes several times
//! more log than the request bodies it holds. Appending in arrival order dirties only the tail.
//!
//! Other processes (`cohort import`) append to the same log. Every commit first reads the rows
//! appended since this writer last looked, inside its write transaction, so no writer misses
//! another's keys.
//!
//! Memory: about 30–60 bytes per remembered message (the hash table's key, time and slack).

use crate::time::to_micros;
use chrono::Utc;
use rusqlite::{Connection, params};
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::HashMap;
use std::hash::Hasher;
use std::time::{Duration, Instant};

/// A 128-bit hash as two words: a `u128` would be 16-byte aligned, padding each entry to 32 bytes.
type Key = (u64, u64);

/// The in-memory set is swept for expired keys at most this often (a sweep visits every key).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Log rows deleted per housekeeping call: bounds the time the writer spends on it.
const EXPIRE_BATCH: i64 = 50_000;

pub(crate) struct DedupWindow {
    window: chrono::Duration,
    hasher: SipHasher13,
    /// Key hash → when it was seen (µs since the epoch).
    seen: HashMap<Key, i64>,
    /// The last log position this writer has read or written.
    known_upto: i64,
    last_sweep: Instant,
}

/// Keys added by a transaction that may still roll back.
#[derive(Default)]
pub(crate) struct Added(Vec<Key>);

impl DedupWindow {
    pub(crate) fn new(window: chrono::Duration) -> Self {
        // Keys are rebuilt from the stored message IDs, so a fresh random key each run is fine,
        // and it keeps crafted IDs from colliding on purpose.
        let hasher = SipHasher13::new_with_keys(rand::random(), rand::random());
        Self {
            window,
            hasher,
            seen: HashMap::new(),
            known_upto: 0,
            last_sweep: Instant::now(),
        }
    }

    fn key(&self, source_id: i64, message_id: &str) -> Key {
        let mut h = self.hasher;
        h.write_i64(source_id);
        h.write(message_id.as_bytes());
        let hash = h.finish128();
        (hash.h1, hash.h2)
    }

    fn horizon(&self) -> i64 {
        to_micros(Utc::now() - self.window)
    }

    /// Reads the log rows appended since the last look (all of them the first time). Inside a
    /// write transaction this sees every other writer's keys.
    pub(crate) fn catch_up(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let horizon = self.horizon();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, source_id, message_id, seen_at FROM dedup_log WHERE seq > ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([self.known_upto])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let seen_at: i64 = row.get(3)?;
            self.known_upto = seq;
            if seen_at >= horizon {
                let key = self.key(row.get(1)?, row.get_ref(2)?.as_str()?);
                self.seen.insert(key, seen_at);
            }
        }
        Ok(())
    }

    /// Records a message as seen unless it already was: false for a duplicate. `added` collects
    /// what to take back with [`DedupWindow::roll_back`] if the transaction fails.
    pub(crate) fn admit(
        &mut self,
        conn: &Connection,
        source_id: i64,
        message_id: &str,
        seen_at: i64,
        added: &mut Added,
    ) -> rusqlite::Result<bool> {
        let key = self.key(source_id, message_id);
        let horizon = self.horizon();
        if self.seen.get(&key).is_some_and(|&at| at >= horizon) {
            return Ok(false);
        }
        conn.prepare_cached(
            "INSERT INTO dedup_log (source_id, message_id, seen_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![source_id, message_id, seen_at])?;
        self.known_upto = conn.last_insert_rowid();
        self.seen.insert(key, seen_at);
        added.0.push(key);
        Ok(true)
    }

    /// Forgets the keys of a transaction that did not commit, and re-reads the log from scratch
    /// so positions skipped over by the failed transaction are not trusted.
    pub(crate) fn roll_back(&mut self, added: Added) {
        for key in added.0 {
            self.seen.remove(&key);
        }
        self.known_upto = 0;
    }

    /// Deletes expired rows from the head of the log and, at most once a minute, expired keys
    /// from memory.
    pub(crate) fn expire(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let horizon = self.horizon();
        // Rows are in arrival order, so the expired ones are a prefix (give or take the few
        // milliseconds by which concurrent requests' times interleave).
        let last_expired: Option<i64> = conn
            .prepare_cached(
                "SELECT MAX(seq) FROM (SELECT seq, seen_at FROM dedup_log ORDER BY seq LIMIT ?1)
                 WHERE seen_at < ?2",
            )?
            .query_row(params![EXPIRE_BATCH, horizon], |r| r.get(0))?;
        if let Some(last) = last_expired {
            conn.prepare_cached("DELETE FROM dedup_log WHERE seq <= ?1")?
                .execute([last])?;
        }
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = Instant::now();
            self.seen.retain(|_, &mut at| at >= horizon);
        }
        // Operators size memory by it: it grows with the traffic of one window.
        metrics::gauge!("cohort_dedup_window_messages").set(self.remembered() as f64);
        Ok(())
    }

    /// Message IDs held in memory, expired ones not yet swept included.
    fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::migrate_inbox;

    fn inbox() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        migrate_inbox(&mut Connection::open(&path).unwrap()).unwrap();
        (dir, path)
    }

    /// A fresh inbox, one connection to it and a window of `hours`.
    fn one_writer(hours: i64) -> (tempfile::TempDir, Connection, DedupWindow) {
        let (dir, path) = inbox();
        let conn = Connection::open(&path).unwrap();
        (dir, conn, DedupWindow::new(chrono::Duration::hours(hours)))
    }

    fn admit(window: &mut DedupWindow, conn: &Connection, source: i64, id: &str) -> bool {
        let now = to_micros(Utc::now());
        let tx = conn.unchecked_transaction().unwrap();
        window.catch_up(&tx).unwrap();
        let fresh = window
            .admit(&tx, source, id, now, &mut Added::default())
            .unwrap();
        tx.commit().unwrap();
        fresh
    }

    #[test]
    fn a_message_id_is_admitted_once_per_source() {
        let (_dir, conn, mut window) = one_writer(48);
        assert!(admit(&mut window, &conn, 1, "m1"));
        assert!(!admit(&mut window, &conn, 1, "m1"));
        assert!(
            admit(&mut window, &conn, 2, "m1"),
            "another source's m1 is another message"
        );
        assert!(admit(&mut window, &conn, 1, "m2"));
    }

    #[test]
    fn a_restarted_writer_remembers_what_was_committed() {
        let (_dir, conn, mut before) = one_writer(48);
        assert!(admit(&mut before, &conn, 1, "m1"));
        drop(before);
        let mut after = DedupWindow::new(chrono::Duration::hours(48));
        after.catch_up(&conn).unwrap();
        assert!(!admit(&mut after, &conn, 1, "m1"));
    }

    #[test]
    fn writers_on_one_file_see_each_others_messages() {
        let (_dir, path) = inbox();
        let server = Connection::open(&path).unwrap();
        let import = Connection::open(&path).unwrap();
        let mut server_window = DedupWindow::new(chrono::Duration::hours(48));
        let mut import_window = DedupWindow::new(chrono::Duration::hours(48));
        assert!(admit(&mut server_window, &server, 1, "m1"));
        assert!(!admit(&mut import_window, &import, 1, "m1"));
        assert!(admit(&mut import_window, &import, 1, "m2"));
        assert!(!admit(&mut server_window, &server, 1, "m2"));
    }

    #[test]
    fn keys_of_a_rolled_back_transaction_are_forgotten() {
        let (_dir, conn, mut window) = one_writer(48);
        let tx = conn.unchecked_transaction().unwrap();
        window.catch_up(&tx).unwrap();
        let mut added = Added::default();
        assert!(window.admit(&tx, 1, "m1", 0, &mut added).unwrap());
        tx.rollback().unwrap();
        window.roll_back(added);
        assert!(
            admit(&mut window, &conn, 1, "m1"),
            "the rolled-back m1 was never accepted"
        );
        assert!(!admit(&mut window, &conn, 1, "m1"));
    }

    #[test]
    fn messages_older_than_the_window_are_forgotten_in_memory_and_on_disk() {
        let (_dir, conn, mut window) = one_writer(1);
        let old = to_micros(Utc::now() - chrono::Duration::hours(2));
        let tx = conn.unchecked_transaction().unwrap();
        assert!(
            window
                .admit(&tx, 1, "old", old, &mut Added::default())
                .unwrap()
        );
        tx.commit().unwrap();
        assert!(admit(&mut window, &conn, 1, "new"));
        assert!(
            admit(&mut window, &conn, 1, "old"),
            "seen before the window: a new message"
        );

        window.last_sweep = Instant::now() - SWEEP_EVERY;
        window.expire(&conn).unwrap();
        let rows: Vec<String> = conn
            .prepare("SELECT message_id FROM dedup_log ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, ["new", "old"], "only the expired row is deleted");
        assert_eq!(window.remembered(), 2);

        let mut restarted = DedupWindow::new(chrono::Duration::hours(1));
        restarted.catch_up(&conn).unwrap();
        assert_eq!(restarted.remembered(), 2);
        assert!(!admit(&mut restarted, &conn, 1, "new"));
    }
}
