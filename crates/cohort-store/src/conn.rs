use crate::Durability;
use rusqlite::Connection;
use rusqlite::config::DbConfig;
use std::path::Path;
use std::time::Duration;

/// Opens a SQLite file in WAL mode with the settings every Cohort connection shares.
pub(crate) fn open(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.set_prepared_statement_cache_capacity(64);
    // Without the stability guarantee SQLite recompiles a cached statement whenever a new
    // `LIMIT ?` value, or an `= ?` value moving between 0/1 and anything else, is bound: a third
    // of the processor's and the segment engine's time went to that. Our plans never depend on
    // bound values.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// Largest a write-ahead log may grow before its writer waits for readers to let it restart.
///
/// SQLite's automatic checkpoints restart a log only when no reader holds a snapshot; under
/// steady load one always does (segment engine, exporter, profile reads), and a million-event
/// ingest once grew `state.db-wal` to 5.9 GB. Past this size the writer runs a truncating
/// checkpoint, which waits up to the busy timeout for older snapshots to end.
pub(crate) const WAL_LIMIT_BYTES: u64 = 128 * 1024 * 1024;

/// Keeps the write-ahead log of `conn`'s database under `limit` bytes. SQLite's automatic checkpoints copy the
/// log into the database but can restart the log from its beginning only at a moment when no
/// reader uses it, and under steady load some reader always does (the segment engine, the lake
/// exporter, profile reads): a million-event ingest grew `state.db-wal` to 5.9 GB. Past the limit
/// this runs a truncating checkpoint, which waits (up to the busy timeout) for the readers of
/// older snapshots to finish, then empties the file. Returns whether it did.
pub(crate) fn keep_wal_bounded(conn: &Connection, limit: u64) -> rusqlite::Result<bool> {
    let Some(db) = conn.path().filter(|p| !p.is_empty()) else {
        return Ok(false); // In memory: no log file.
    };
    let wal = wal_path(db);
    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if size <= limit {
        return Ok(false);
    }
    // (busy, log frames, frames checkpointed); busy = 1 when readers outlasted the timeout.
    let (busy, _, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if busy != 0 {
        tracing::warn!(%wal, size, "the write-ahead log could not be truncated: readers held it past the busy timeout");
    }
    Ok(busy == 0)
}

/// SQLite keeps a database's write-ahead log beside it, named after it.
fn wal_path(db: &str) -> String {
    format!("{db}-wal")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    fn wal_size(db: &Path) -> u64 {
        std::fs::metadata(wal_path(&db.to_string_lossy()))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Two readers take turns so that one always holds a snapshot, as the engine's threads do
    /// under load: automatic checkpoints then never restart the log, and only the bound does.
    #[test]
    fn the_log_stays_bounded_while_readers_overlap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("t.db");
        let writer = open(&db, Durability::Normal).expect("open");
        writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .expect("schema");
        let mut readers = [
            open(&db, Durability::Normal).expect("open"),
            open(&db, Durability::Normal).expect("open"),
        ];
        let limit = 1024 * 1024;
        let body = "x".repeat(4000);
        let run = |bounded: bool, readers: &mut [Connection; 2]| {
            let mut largest = 0;
            for round in 0..200 {
                // The other reader still holds its snapshot while this one starts a new one.
                let reader = &mut readers[round % 2];
                reader.execute_batch("COMMIT").ok();
                reader.execute_batch("BEGIN").expect("begin");
                let _: i64 = reader
                    .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                    .expect("read");
                let tx = writer.unchecked_transaction().expect("tx");
                for _ in 0..10 {
                    tx.execute("INSERT INTO t (body) VALUES (?1)", [&body])
                        .expect("insert");
                }
                tx.commit().expect("commit");
                largest = largest.max(wal_size(&db));
                if bounded {
                    // The bound has to let the readers go: here they give way at once.
                    for r in readers.iter_mut() {
                        r.execute_batch("COMMIT").ok();
                    }
                    keep_wal_bounded(&writer, limit).expect("checkpoint");
                }
            }
            largest
        };
        let unbounded = run(false, &mut readers);
        assert!(
            unbounded > 4 * limit,
            "readers kept the log growing: {unbounded} bytes"
        );
        for r in readers.iter_mut() {
            r.execute_batch("COMMIT").ok();
        }
        assert!(keep_wal_bounded(&writer, limit).expect("checkpoint"));
        assert_eq!(wal_size(&db), 0, "a truncating checkpoint empties the file");
        let bounded = run(true, &mut readers);
        // One round's frames past the limit at most.
        assert!(bounded < limit + 512 * 1024, "{bounded} bytes");
    }

    /// A cached statement must not be recompiled because a bound value changed. SQLite does that
    /// for `LIMIT ?` and for `= ?` switching between 0/1 and other values unless the query
    /// planner stability guarantee is on; profiling showed it in both hot threads.
    #[test]
    fn rebinding_does_not_reprepare() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(&dir.path().join("t.db"), Durability::Normal).expect("open");
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, flag INTEGER NOT NULL);
             CREATE INDEX t_flag ON t (flag);
             INSERT INTO t VALUES (1, 0), (2, 1), (3, 7);",
        )
        .expect("schema");
        let mut stmt = conn
            .prepare_cached("SELECT id FROM t WHERE flag = ?1 ORDER BY id LIMIT ?2")
            .expect("prepare");
        for (flag, limit) in [(0, 1), (7, 2), (1, 3), (9, 1), (0, 5)] {
            let rows: Vec<i64> = stmt
                .query_map((flag, limit), |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert!(rows.len() <= limit as usize);
        }
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
    }
}
