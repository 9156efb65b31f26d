//! Table definitions, applied in order; `PRAGMA user_version` records how far a file has come.

use rusqlite::Connection;

/// The inbox file: accepted messages waiting for processing, the dedup window, failed events.
const INBOX: &[&str] = &[
    r#"
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id   INTEGER NOT NULL,
    message_id  TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT    NOT NULL
);
CREATE TABLE dedup (
    source_id  INTEGER NOT NULL,
    message_id TEXT    NOT NULL,
    seen_at    INTEGER NOT NULL,
    PRIMARY KEY (source_id, message_id)
) WITHOUT ROWID;
CREATE INDEX dedup_seen_at ON dedup (seen_at);
CREATE TABLE failed_events (
    id          INTEGER PRIMARY KEY,
    source_id   INTEGER,
    received_at INTEGER NOT NULL,
    code        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    truncated   INTEGER NOT NULL DEFAULT 0,
    replayed_at INTEGER,
    replay_seq  INTEGER
);
CREATE INDEX failed_events_source ON failed_events (source_id, id);
"#,
    // The dedup window moves to memory with an append-only log behind it (see `dedup`): a
    // message ID index put each new ID at a random page. AUTOINCREMENT keeps positions rising
    // after the head is deleted, which the writers' catch-up relies on.
    r#"
CREATE TABLE dedup_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id  INTEGER NOT NULL,
    message_id TEXT    NOT NULL,
    seen_at    INTEGER NOT NULL
);
INSERT INTO dedup_log (source_id, message_id, seen_at)
    SELECT source_id, message_id, seen_at FROM dedup ORDER BY seen_at;
DROP TABLE dedup;
"#,
];

/// The state file: catalogue (sources, keys) and the customer state built from processed events.
const STATE: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('applied_seq', 0);
CREATE TABLE sources (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    key_hash      TEXT    NOT NULL UNIQUE,
    key_prefix    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    settings      TEXT    NOT NULL DEFAULT '{}',
    tracking_plan TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE admin_keys (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    key_hash   TEXT    NOT NULL UNIQUE,
    key_prefix TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE customers (
    id          INTEGER PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    merged_into INTEGER
);
CREATE INDEX customers_merged_into ON customers (merged_into) WHERE merged_into IS NOT NULL;
CREATE TABLE identities (
    kind        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    customer_id INTEGER NOT NULL,
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX identities_customer ON identities (customer_id);
CREATE TABLE merges (
    id            INTEGER PRIMARY KEY,
    from_customer INTEGER NOT NULL,
    into_customer INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    at            INTEGER NOT NULL
);
CREATE INDEX merges_into ON merges (into_customer);
CREATE INDEX merges_from ON merges (from_customer);
CREATE TABLE traits (
    customer_id INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (customer_id, key)
) WITHOUT ROWID;
CREATE INDEX traits_by_value ON traits (key, value);
CREATE TABLE customer_stats (
    customer_id   INTEGER PRIMARY KEY,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    events        INTEGER NOT NULL,
    orders        INTEGER NOT NULL,
    revenue       REAL    NOT NULL,
    last_order_at INTEGER
);
CREATE TABLE event_counts (
    customer_id INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    PRIMARY KEY (customer_id, name)
) WITHOUT ROWID;
CREATE TABLE revenue_days (
    customer_id INTEGER NOT NULL,
    day         INTEGER NOT NULL,
    revenue     REAL    NOT NULL,
    orders      INTEGER NOT NULL,
    PRIMARY KEY (customer_id, day)
) WITHOUT ROWID;
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    source_id   INTEGER NOT NULL,
    message_id  TEXT    NOT NULL,
    customer_id INTEGER,
    type        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    UNIQUE (source_id, message_id)
);
CREATE INDEX events_customer_ts ON events (customer_id, ts);
CREATE INDEX events_ts ON events (ts);
"#,
    r#"
CREATE TABLE segments (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    condition   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE memberships (
    segment_id  INTEGER NOT NULL,
    customer_id INTEGER NOT NULL,
    entered_at  INTEGER NOT NULL,
    PRIMARY KEY (segment_id, customer_id)
) WITHOUT ROWID;
CREATE INDEX memberships_customer ON memberships (customer_id);
CREATE TABLE membership_events (
    id          INTEGER PRIMARY KEY,
    segment_id  INTEGER NOT NULL,
    customer_id INTEGER NOT NULL,
    entered     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    reason      TEXT    NOT NULL
);
CREATE INDEX membership_events_customer ON membership_events (customer_id, id);
CREATE INDEX membership_events_segment ON membership_events (segment_id, id);
CREATE TABLE segment_pending (customer_id INTEGER PRIMARY KEY);
INSERT INTO meta (key, value) VALUES ('segments_seq', 0), ('segments_merge_id', 0);
CREATE TABLE analysis_runs (
    id         INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    params     TEXT    NOT NULL,
    report     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX analysis_runs_kind ON analysis_runs (kind, id);
"#,
    // Events lose their unique (source, message ID) index. The inbox's dedup window catches
    // repeated message IDs before they get a position, and a replayed inbox entry keeps its
    // position, which is the primary key; the index only cost a random-key insert per event.
    r#"
CREATE TABLE events_by_seq (
    seq         INTEGER PRIMARY KEY,
    source_id   INTEGER NOT NULL,
    message_id  TEXT    NOT NULL,
    customer_id INTEGER,
    type        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT    NOT NULL
);
INSERT INTO events_by_seq
  SELECT seq, source_id, message_id, customer_id, type, name, ts, received_at, body FROM events;
DROP TABLE events;
ALTER TABLE events_by_seq RENAME TO events;
CREATE INDEX events_customer_ts ON events (customer_id, ts);
CREATE INDEX events_ts ON events (ts);
"#,
    // Quarantine: a definition whose evaluation failed, or never finished twice in a row (it
    // took the process down), is set aside with its reason instead of being retried forever.
    // Sources get a kind: a client-side source's write key is public, so its trait identifiers
    // may not claim known customers unless `trait_claims` allows it.
    r#"
ALTER TABLE segments ADD COLUMN failure TEXT;
ALTER TABLE segments ADD COLUMN unfinished INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sources ADD COLUMN kind TEXT NOT NULL DEFAULT 'server';
ALTER TABLE sources ADD COLUMN trait_claims INTEGER NOT NULL DEFAULT 0;
"#,
    // The web origins a source's browser clients may send from, as a JSON array; NULL for any.
    r#"
ALTER TABLE sources ADD COLUMN allowed_origins TEXT;
"#,
    // Flags, experiments, metrics and their settings: every version of every document, a
    // deletion being a version whose document is NULL. `id` orders all saves (the revision).
    r#"
CREATE TABLE definitions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    saved_at INTEGER NOT NULL,
    document TEXT,
    UNIQUE (kind, key, version)
);
"#,
    // The variations units were given, by "{attribute}||{value}", so that they keep them when
    // an experiment's weights change.
    r#"
CREATE TABLE sticky_buckets (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // Journeys at run time: each customer's entries, the active ones' due times (the timers,
    // read in order through the partial index), and the outbox of step effects by their
    // idempotency key.
    r#"
CREATE TABLE journey_entries (
    id          INTEGER PRIMARY KEY,
    journey     TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    customer_id INTEGER NOT NULL,
    step        TEXT    NOT NULL,
    due_at      INTEGER,
    payload     TEXT    NOT NULL,
    entered_at  INTEGER NOT NULL,
    exit_reason TEXT
);
CREATE INDEX journey_entries_due ON journey_entries (due_at, id)
    WHERE due_at IS NOT NULL AND exit_reason IS NULL;
CREATE INDEX journey_entries_active ON journey_entries (customer_id, journey)
    WHERE exit_reason IS NULL;
CREATE TABLE journey_effects (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    key      TEXT    NOT NULL UNIQUE,
    channel  TEXT    NOT NULL,
    payload  TEXT    NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status   TEXT,
    done     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX journey_effects_pending ON journey_effects (channel, seq) WHERE done = 0;
"#,
    // Coupons: pools, their codes (unique across pools, so a redeemed code names its pool),
    // issues and redemptions. An issue row's primary key is its code and it is UNIQUE on
    // (pool, campaign, customer): a code cannot go to two customers, nor a customer get two
    // codes in one campaign, whatever a crash interrupts (see `coupons`).
    r#"
CREATE TABLE coupon_pools (
    key        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    expires_at INTEGER,
    valid_for  INTEGER
) WITHOUT ROWID;
CREATE TABLE coupon_codes (
    id     INTEGER PRIMARY KEY,
    code   TEXT    NOT NULL UNIQUE,
    pool   TEXT    NOT NULL REFERENCES coupon_pools (key),
    issued INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX coupon_codes_available ON coupon_codes (pool, id) WHERE issued = 0;
CREATE TABLE coupon_issues (
    code        TEXT    PRIMARY KEY REFERENCES coupon_codes (code),
    pool        TEXT    NOT NULL,
    campaign    TEXT    NOT NULL,
    customer_id INTEGER NOT NULL,
    issue_key   TEXT    NOT NULL UNIQUE,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER,
    UNIQUE (pool, campaign, customer_id)
) WITHOUT ROWID;
CREATE TABLE coupon_redemptions (
    code        TEXT    PRIMARY KEY REFERENCES coupon_issues (code),
    customer_id INTEGER NOT NULL,
    order_id    TEXT    NOT NULL,
    redeemed_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // Delivery rules: each customer's consent fact per scope, the send ledger that frequency
    // caps count (one row per idempotency key, so a send recorded again after a restart counts
    // once), and each customer's last `context.timezone`.
    r#"
CREATE TABLE delivery_consent (
    customer_id INTEGER NOT NULL,
    scope       TEXT    NOT NULL,
    allowed     INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (customer_id, scope)
) WITHOUT ROWID;
CREATE TABLE delivery_sends (
    key         TEXT    PRIMARY KEY,
    customer_id INTEGER NOT NULL,
    channel     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX delivery_sends_customer ON delivery_sends (customer_id, at);
CREATE INDEX delivery_sends_at ON delivery_sends (at);
CREATE TABLE delivery_zones (
    customer_id INTEGER PRIMARY KEY,
    zone        TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
"#,
    // What the journey runner keeps per entry: its cause (unique, so a trigger delivered twice
    // enters once), whether it is held out, its move count (telling apart passes through a
    // loop), its last message and its conversion. The customer index serves re-entry
    // policies and conversions, which look at ended entries too.
    r#"
ALTER TABLE journey_entries ADD COLUMN entry_key TEXT;
ALTER TABLE journey_entries ADD COLUMN held_out INTEGER NOT NULL DEFAULT 0;
ALTER TABLE journey_entries ADD COLUMN moves INTEGER NOT NULL DEFAULT 0;
ALTER TABLE journey_entries ADD COLUMN last_message_key TEXT;
ALTER TABLE journey_entries ADD COLUMN last_message_at INTEGER;
ALTER TABLE journey_entries ADD COLUMN converted_at INTEGER;
ALTER TABLE journey_entries ADD COLUMN conversion_cause TEXT;
ALTER TABLE journey_entries ADD COLUMN conversion_revenue REAL;
ALTER TABLE journey_entries ADD COLUMN conversion_message TEXT;
CREATE UNIQUE INDEX journey_entries_key ON journey_entries (entry_key)
    WHERE entry_key IS NOT NULL;
CREATE INDEX journey_entries_customer ON journey_entries (customer_id, journey, id);
"#,
    // Retries and dead letters in the outbox: a deferred effect's retry time and its last
    // error. Pending effects are read by channel, those never deferred (a NULL retry time) in
    // order and then the due ones by retry time, both ranges of one index; dead letters are
    // listed per channel through their own.
    r#"
ALTER TABLE journey_effects ADD COLUMN not_before INTEGER;
ALTER TABLE journey_effects ADD COLUMN last_error TEXT;
DROP INDEX journey_effects_pending;
CREATE INDEX journey_effects_pending ON journey_effects (channel, not_before, seq) WHERE done = 0;
CREATE INDEX journey_effects_dead ON journey_effects (channel, seq) WHERE status = 'dead_letter';
"#,
    // The journey catalogue: each journey's versions (state, whether a later version made it
    // finishing, its definition and the template versions fixed when it was published), what
    // happened to them, message templates by version, and channels. The partial index serves
    // the live versions the runner is built from.
    r#"
CREATE TABLE journey_versions (
    key        TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    finishing  INTEGER NOT NULL DEFAULT 0,
    definition TEXT    NOT NULL,
    templates  TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (key, version)
) WITHOUT ROWID;
CREATE INDEX journey_versions_live ON journey_versions (key, version)
    WHERE state IN ('published', 'paused');
CREATE TABLE journey_version_history (
    id      INTEGER PRIMARY KEY,
    key     TEXT    NOT NULL,
    version INTEGER NOT NULL,
    change  TEXT    NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX journey_version_history_key ON journey_version_history (key, id);
CREATE TABLE message_templates (
    key      TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    source   TEXT    NOT NULL,
    saved_at INTEGER NOT NULL,
    PRIMARY KEY (key, version)
) WITHOUT ROWID;
CREATE TABLE message_channels (
    name     TEXT    PRIMARY KEY,
    kind     TEXT    NOT NULL,
    config   TEXT    NOT NULL,
    saved_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // Coupons of merged customers: a code issued to a customer merged away stays theirs when
    // the survivor already held one for that campaign, and is redeemable by the survivor.
    r#"
CREATE TABLE coupon_merges (
    from_customer INTEGER PRIMARY KEY,
    into_customer INTEGER NOT NULL
) WITHOUT ROWID;
"#,
];

pub(crate) fn migrate_inbox(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate(conn, INBOX)
}

pub(crate) fn migrate_state(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate(conn, STATE)
}

fn migrate(conn: &mut Connection, steps: &[&str]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, step) in steps.iter().enumerate().skip(done.max(0) as usize) {
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index of the step that creates `table`: a test migrates up to just before it, so
    /// it keeps testing that step however many steps come after.
    fn step_creating(steps: &[&str], table: &str) -> usize {
        steps
            .iter()
            .position(|s| s.contains(&format!("CREATE TABLE {table} ")))
            .unwrap_or_else(|| panic!("no step creates {table}"))
    }

    #[test]
    fn message_ids_remembered_before_the_dedup_log_still_count_as_seen() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &INBOX[..step_creating(INBOX, "dedup_log")]).unwrap();
        let seen_at = crate::time::to_micros(chrono::Utc::now());
        conn.execute(
            "INSERT INTO dedup (source_id, message_id, seen_at) VALUES (1, 'm1', ?1)",
            [seen_at],
        )
        .unwrap();
        migrate_inbox(&mut conn).unwrap();

        let mut window = crate::dedup::DedupWindow::new(chrono::Duration::hours(48));
        window.catch_up(&conn).unwrap();
        let mut added = crate::dedup::Added::default();
        assert!(!window.admit(&conn, 1, "m1", seen_at, &mut added).unwrap());
        assert!(window.admit(&conn, 1, "m2", seen_at, &mut added).unwrap());
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('dedup', 'dedup_seen_at')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn events_stored_before_the_unique_index_was_dropped_survive_the_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &STATE[..step_creating(STATE, "events_by_seq")]).unwrap();
        conn.execute(
            "INSERT INTO events (seq, source_id, message_id, customer_id, type, name, ts, received_at, body)
             VALUES (7, 1, 'm1', 3, 'track', 'A', 10, 11, '{}')",
            [],
        )
        .unwrap();
        migrate_state(&mut conn).unwrap();
        let kept: (i64, String, i64) = conn
            .query_row(
                "SELECT seq, message_id, customer_id FROM events WHERE customer_id = 3 AND ts = 10",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(kept, (7, "m1".to_string(), 3));
        // The same message ID under another position is now a second event, not a conflict.
        conn.execute(
            "INSERT INTO events (seq, source_id, message_id, customer_id, type, name, ts, received_at, body)
             VALUES (8, 1, 'm1', 3, 'track', 'A', 10, 11, '{}')",
            [],
        )
        .unwrap();
        let indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'
                 AND name IN ('events_customer_ts', 'events_ts')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 2);
    }

    #[test]
    fn journey_entries_from_before_the_runner_columns_read_back() {
        use cohort_journey::state::{EntryId, JourneyStateStore, Move, NewEntry};
        let mut conn = Connection::open_in_memory().unwrap();
        let step = STATE
            .iter()
            .position(|s| s.contains("ADD COLUMN entry_key"))
            .expect("the step adding the runner's columns");
        migrate(&mut conn, &STATE[..step]).unwrap();
        conn.execute(
            "INSERT INTO journey_entries (id, journey, version, customer_id, step, due_at, payload,
               entered_at)
             VALUES (4, 'welcome', 1, 9, 'wait', 1000, '{}', 10)",
            [],
        )
        .unwrap();
        migrate_state(&mut conn).unwrap();
        let mut state = crate::journeys::SqliteJourneyState::new(conn);
        let entry = state.entry(EntryId(4)).unwrap().expect("kept");
        assert_eq!(
            (entry.step.as_str(), entry.moves, entry.held_out),
            ("wait", 0, false)
        );
        assert_eq!((entry.last_message, entry.conversion), (None, None));
        assert!(
            state
                .advance(entry.id, "wait", &Move::to("sms"), &[])
                .unwrap()
        );
        assert_eq!(state.entry(EntryId(4)).unwrap().unwrap().moves, 1);
        let now = crate::time::from_micros(10);
        let keyed = NewEntry::new("welcome", 1, 10, "wait", now).key("welcome:10:m1");
        assert!(state.enter(&keyed, true).unwrap().is_some());
        assert!(state.enter(&keyed, true).unwrap().is_none());
    }

    #[test]
    fn effects_from_before_retry_times_stay_pending_and_are_read_through_the_index() {
        use cohort_journey::state::JourneyStateStore;
        let mut conn = Connection::open_in_memory().unwrap();
        let step = STATE
            .iter()
            .position(|s| s.contains("ADD COLUMN not_before"))
            .expect("the step adding retry times");
        migrate(&mut conn, &STATE[..step]).unwrap();
        conn.execute(
            "INSERT INTO journey_effects (key, channel, payload, attempts) VALUES
               ('welcome:1:4:sms', 'sms', '{}', 2)",
            [],
        )
        .unwrap();
        migrate_state(&mut conn).unwrap();
        for (sql, index) in [
            (
                "SELECT key FROM journey_effects WHERE channel = 'sms' AND done = 0
                 AND not_before IS NULL ORDER BY seq LIMIT 5",
                "journey_effects_pending",
            ),
            (
                "SELECT key FROM journey_effects WHERE channel = 'sms' AND done = 0
                 AND not_before <= 7 ORDER BY not_before, seq LIMIT 5",
                "journey_effects_pending",
            ),
            (
                "SELECT key FROM journey_effects WHERE channel = 'sms'
                 AND status = 'dead_letter' ORDER BY seq LIMIT 5",
                "journey_effects_dead",
            ),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains(index), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts: {plan}");
        }
        let mut state = crate::journeys::SqliteJourneyState::new(conn);
        let pending = state
            .pending_effects("sms", crate::time::from_micros(0), 10)
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (
                pending[0].attempts,
                pending[0].not_before,
                &pending[0].last_error
            ),
            (2, None, &None)
        );
    }
}
