//! The SQLite profile store passes the profile store conformance suite.

use cohort_core::{IdKind, Identifier};
use cohort_profile::CustomerStats;
use cohort_profile::conformance::{Contents, ProfileStoreHarness, StoredEvent};
use cohort_store::{Durability, SqliteProfileStore};
use rusqlite::Connection;
use serde_json::Value;
use std::path::Path;

struct Sqlite;

/// Reads every row of `sql`, in order.
fn rows<T>(
    conn: &Connection,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], row)
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Strings are stored bare, other values as JSON.
fn trait_value(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

impl ProfileStoreHarness for Sqlite {
    type Store = SqliteProfileStore;

    fn open(&self, dir: &Path) -> SqliteProfileStore {
        SqliteProfileStore::open(dir, Durability::Normal).expect("open the SQLite profile store")
    }

    fn contents(&self, dir: &Path) -> Contents {
        let conn = Connection::open(dir.join("state.db")).expect("open state.db");
        let mut contents = Contents::default();
        let events = rows(
            &conn,
            "SELECT seq, customer_id, source_id, message_id, type, name, ts, received_at, body FROM events",
            |r| {
                Ok((
                    r.get(0)?,
                    StoredEvent {
                        customer: r.get(1)?,
                        source_id: r.get(2)?,
                        message_id: r.get(3)?,
                        kind: r.get(4)?,
                        name: r.get(5)?,
                        at: r.get(6)?,
                        received_at: r.get(7)?,
                        body: r.get(8)?,
                    },
                ))
            },
        );
        contents.events.extend(events);
        let identities = rows(
            &conn,
            "SELECT kind, value, customer_id FROM identities",
            |r| {
                let kind: String = r.get(0)?;
                Ok((
                    Identifier::new(IdKind::parse(&kind), r.get::<_, String>(1)?),
                    r.get(2)?,
                ))
            },
        );
        contents.identities.extend(identities);
        contents.merges = rows(
            &conn,
            "SELECT from_customer, into_customer, kind, value FROM merges ORDER BY id",
            |r| {
                let kind: String = r.get(2)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    Identifier::new(IdKind::parse(&kind), r.get::<_, String>(3)?),
                ))
            },
        );
        for (customer, key, value, at) in rows(
            &conn,
            "SELECT customer_id, key, value, updated_at FROM traits",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        ) {
            contents
                .traits
                .entry(customer)
                .or_default()
                .insert(key, (trait_value(value), at));
        }
        let stats = rows(
            &conn,
            "SELECT customer_id, first_seen, last_seen, events, orders, revenue, last_order_at FROM customer_stats",
            |r| {
                Ok((
                    r.get(0)?,
                    CustomerStats {
                        first_seen: r.get(1)?,
                        last_seen: r.get(2)?,
                        events: r.get(3)?,
                        orders: r.get(4)?,
                        revenue: r.get(5)?,
                        last_order_at: r.get(6)?,
                    },
                ))
            },
        );
        contents.stats.extend(stats);
        let counts = rows(
            &conn,
            "SELECT customer_id, name, count, last_at FROM event_counts",
            |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))),
        );
        contents.event_counts.extend(counts);
        let days = rows(
            &conn,
            "SELECT customer_id, day, revenue, orders FROM revenue_days",
            |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))),
        );
        contents.revenue_days.extend(days);
        contents
    }
}

cohort_profile::profile_store_conformance_suite!(Sqlite);
