//! Journey statistics over `state.db`: [`JourneyStats`] for [`SqliteJourneyState`].
//!
//! Every count is one `GROUP BY` over `journey_entries` or `journey_effects`, read in one
//! transaction so that the rows agree with each other. Effects are placed by their payload's
//! `journey`, `version`, `step` and `kind` (`json_extract`); a conversion's step is its
//! message's, found by joining the effect of that key. First and last touches rank each
//! conversion event's touching entries with window functions partitioned by customer and
//! cause. The reads scan the tables (a report, not a hot path); nothing is loaded row by row.

use crate::journeys::SqliteJourneyState;
use crate::time::to_micros;
use chrono::{DateTime, Utc};
use cohort_journey::measure::{
    ConversionCounts, Counts, EffectCounts, EntryCounts, ExitCounts, JourneyStats, PENDING,
    StatsError, StepCounts, TouchCounts,
};
use rusqlite::{Connection, Row, params};

fn storage(e: rusqlite::Error) -> StatsError {
    StatsError::Storage(Box::new(e))
}

/// A stored version as the journey crate numbers them.
fn version(row: &Row<'_>, i: usize) -> rusqlite::Result<u32> {
    let v: i64 = row.get(i)?;
    u32::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

fn count(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let n: i64 = row.get(i)?;
    u64::try_from(n).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, n))
}

fn rows<T>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StatsError> {
    let mut stmt = conn.prepare_cached(sql).map_err(storage)?;
    let rows = stmt
        .query_map(args, read)
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    Ok(rows)
}

const ENTRIES: &str = "
    SELECT journey, version, held_out, COUNT(*), SUM(exit_reason IS NULL),
           SUM(converted_at IS NOT NULL), TOTAL(conversion_revenue),
           TOTAL(conversion_revenue * conversion_revenue)
    FROM journey_entries
    WHERE ?1 IS NULL OR journey = ?1
    GROUP BY journey, version, held_out
    ORDER BY journey, version, held_out";

const STEPS: &str = "
    SELECT journey, version, step, COUNT(*), SUM(due_at IS NULL OR due_at > ?2)
    FROM journey_entries
    WHERE exit_reason IS NULL AND (?1 IS NULL OR journey = ?1)
    GROUP BY journey, version, step
    ORDER BY journey, version, step";

const EXITS: &str = "
    SELECT journey, version, exit_reason, COUNT(*)
    FROM journey_entries
    WHERE exit_reason IS NOT NULL AND (?1 IS NULL OR journey = ?1)
    GROUP BY journey, version, exit_reason
    ORDER BY journey, version, exit_reason";

/// Effects whose payload places them in a journey version's step.
const EFFECTS: &str = "
    SELECT journey, version, step, channel, kind, status, COUNT(*)
    FROM (
        SELECT json_extract(payload, '$.journey') AS journey,
               json_extract(payload, '$.version') AS version,
               json_extract(payload, '$.step') AS step,
               channel,
               CASE WHEN json_type(payload, '$.kind') = 'text'
                    THEN json_extract(payload, '$.kind') ELSE '' END AS kind,
               CASE WHEN done = 0 THEN ?2 ELSE COALESCE(status, '') END AS status
        FROM journey_effects
        WHERE json_type(payload, '$.journey') = 'text'
          AND json_type(payload, '$.version') = 'integer'
          AND json_extract(payload, '$.version') BETWEEN 0 AND 4294967295
          AND json_type(payload, '$.step') = 'text'
    )
    WHERE ?1 IS NULL OR journey = ?1
    GROUP BY journey, version, step, channel, kind, status
    ORDER BY journey, version, step, channel, kind, status";

/// Treated conversions by the step of the message they are attributed to.
const CONVERSIONS: &str = "
    SELECT e.journey, e.version,
           CASE WHEN json_type(f.payload, '$.step') = 'text'
                THEN json_extract(f.payload, '$.step') END AS message_step,
           COUNT(*), TOTAL(e.conversion_revenue)
    FROM journey_entries e
    LEFT JOIN journey_effects f ON f.key = e.conversion_message
    WHERE e.converted_at IS NOT NULL AND e.held_out = 0 AND (?1 IS NULL OR e.journey = ?1)
    GROUP BY e.journey, e.version, message_step
    ORDER BY e.journey, e.version, message_step";

/// A touch is at the attributed message's time while it is still the entry's last message,
/// else at the entry (see `cohort_journey::measure`).
const TOUCHES: &str = "
    WITH touching AS (
        SELECT id, journey, version, customer_id, conversion_cause,
               COALESCE(conversion_revenue, 0.0) AS revenue,
               CASE WHEN last_message_key = conversion_message
                    THEN last_message_at ELSE entered_at END AS touch_at
        FROM journey_entries
        WHERE converted_at IS NOT NULL AND conversion_message IS NOT NULL
    ),
    ranked AS (
        SELECT journey, version, revenue,
               ROW_NUMBER() OVER (PARTITION BY customer_id, conversion_cause
                                  ORDER BY touch_at, id) AS from_first,
               ROW_NUMBER() OVER (PARTITION BY customer_id, conversion_cause
                                  ORDER BY touch_at DESC, id DESC) AS from_last
        FROM touching
    )
    SELECT journey, version,
           SUM(from_first = 1), TOTAL(CASE WHEN from_first = 1 THEN revenue END),
           SUM(from_last = 1), TOTAL(CASE WHEN from_last = 1 THEN revenue END)
    FROM ranked
    WHERE ?1 IS NULL OR journey = ?1
    GROUP BY journey, version
    ORDER BY journey, version";

impl JourneyStats for SqliteJourneyState {
    fn journey_stats(
        &mut self,
        journey: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Counts, StatsError> {
        let conn = self.connection();
        // A read transaction: every count is of the same snapshot.
        let tx = conn.unchecked_transaction().map_err(storage)?;
        let entries = rows(&tx, ENTRIES, [journey], |r| {
            Ok(EntryCounts {
                journey: r.get(0)?,
                version: version(r, 1)?,
                held_out: r.get::<_, i64>(2)? != 0,
                entered: count(r, 3)?,
                active: count(r, 4)?,
                converted: count(r, 5)?,
                revenue: r.get(6)?,
                revenue_squares: r.get(7)?,
            })
        })?;
        let steps = rows(&tx, STEPS, params![journey, to_micros(now)], |r| {
            Ok(StepCounts {
                journey: r.get(0)?,
                version: version(r, 1)?,
                step: r.get(2)?,
                active: count(r, 3)?,
                waiting: count(r, 4)?,
            })
        })?;
        let exits = rows(&tx, EXITS, [journey], |r| {
            Ok(ExitCounts {
                journey: r.get(0)?,
                version: version(r, 1)?,
                reason: r.get(2)?,
                entries: count(r, 3)?,
            })
        })?;
        let effects = rows(&tx, EFFECTS, params![journey, PENDING], |r| {
            Ok(EffectCounts {
                journey: r.get(0)?,
                version: version(r, 1)?,
                step: r.get(2)?,
                channel: r.get(3)?,
                kind: r.get(4)?,
                status: r.get(5)?,
                effects: count(r, 6)?,
            })
        })?;
        let conversions = rows(&tx, CONVERSIONS, [journey], |r| {
            Ok(ConversionCounts {
                journey: r.get(0)?,
                version: version(r, 1)?,
                step: r.get(2)?,
                conversions: count(r, 3)?,
                revenue: r.get(4)?,
            })
        })?;
        let touches = rows(&tx, TOUCHES, [journey], |r| {
            Ok(TouchCounts {
                journey: r.get(0)?,
                version: version(r, 1)?,
                first_touch: count(r, 2)?,
                first_touch_revenue: r.get(3)?,
                last_touch: count(r, 4)?,
                last_touch_revenue: r.get(5)?,
            })
        })?;
        tx.commit().map_err(storage)?;
        Ok(Counts {
            at: now,
            entries,
            steps,
            exits,
            effects,
            conversions,
            touches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_journey::state::{JourneyStateStore, NewEntry};

    /// The statistics' queries find the columns and functions they name, on a migrated
    /// database (the conformance suite checks what they count).
    #[test]
    fn the_queries_run_on_the_migrated_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate_state(&mut conn).unwrap();
        let mut state = SqliteJourneyState::new(conn);
        let now = Utc::now();
        state
            .enter(&NewEntry::new("welcome", 1, 1, "nudge", now), false)
            .unwrap();
        let counts = state.journey_stats(Some("welcome"), now).unwrap();
        assert_eq!(counts.entries.len(), 1);
        assert!(state.journey_stats(None, now).unwrap().touches.is_empty());
    }
}
