//! The floor of durable timer firings on this disk, for `cohort bench journeys`: a bare SQLite
//! table of timers, each selected when due, recorded under an idempotency key and deleted, with
//! nothing of journeys around it. [`TimerFloor::prepare`] builds the table (not part of the
//! measure), [`TimerFloor::fire_all`] is what the bench times.

use rusqlite::Connection;

/// A file of timers all due at once.
pub struct TimerFloor {
    conn: Connection,
}

impl TimerFloor {
    /// `timers` timers in a fresh file `timers.db` in `dir` (an empty directory), in WAL mode
    /// with `synchronous` as the state store sets it (`normal` or `full`).
    pub fn prepare(
        dir: &std::path::Path,
        timers: usize,
        synchronous: &str,
    ) -> rusqlite::Result<TimerFloor> {
        let mut conn = Connection::open(dir.join("timers.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous.to_uppercase())?;
        conn.execute_batch(
            "CREATE TABLE timers (id INTEGER PRIMARY KEY, due INTEGER NOT NULL);
             CREATE INDEX timers_due ON timers (due);
             CREATE TABLE fired (key TEXT PRIMARY KEY) WITHOUT ROWID;",
        )?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare("INSERT INTO timers (id, due) VALUES (?1, ?2)")?;
            for id in 1..=timers as i64 {
                insert.execute(rusqlite::params![id, 1_000 + id % 7])?;
            }
        }
        tx.commit()?;
        Ok(TimerFloor { conn })
    }

    /// Fires every timer, `per_commit` in each transaction; returns how many fired.
    pub fn fire_all(&mut self, per_commit: usize) -> rusqlite::Result<u64> {
        let mut fired = 0u64;
        loop {
            let tx = self.conn.transaction()?;
            let due: Vec<i64> = tx
                .prepare_cached("SELECT id FROM timers WHERE due <= ?1 ORDER BY due, id LIMIT ?2")?
                .query_map(rusqlite::params![2_000, per_commit.max(1) as i64], |r| {
                    r.get(0)
                })?
                .collect::<Result<_, _>>()?;
            if due.is_empty() {
                return Ok(fired);
            }
            for id in &due {
                tx.prepare_cached("INSERT INTO fired (key) VALUES (?1)")?
                    .execute([format!("timer:{id}:1")])?;
                tx.prepare_cached("DELETE FROM timers WHERE id = ?1")?
                    .execute([id])?;
            }
            tx.commit()?;
            fired += due.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TimerFloor;

    #[test]
    fn every_timer_fires_once_whatever_the_batch() {
        for per_commit in [1, 7, 1_000] {
            let dir = tempfile::tempdir().unwrap();
            let mut floor = TimerFloor::prepare(dir.path(), 50, "normal").unwrap();
            assert_eq!(floor.fire_all(per_commit).unwrap(), 50);
            assert_eq!(floor.fire_all(per_commit).unwrap(), 0);
        }
    }
}
