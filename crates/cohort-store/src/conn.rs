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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

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
