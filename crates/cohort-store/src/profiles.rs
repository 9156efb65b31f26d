//! Reading customer state: profiles, timelines, search by trait.

use crate::StoreError;
use crate::profile_cache::{Loaded, ProfileCache};
use crate::profile_store::trait_text;
use crate::time::{day_of, format_micros, to_micros};
use chrono::{DateTime, Utc};
use cohort_core::{CustomerId, IdKind, Identifier, Position};
use cohort_profile::{ComputedTraits, MergeRecord, Profile, ProfileRules};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One stored event of a customer's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub customer_id: Option<String>,
    pub source_id: i64,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub timestamp: String,
    pub received_at: String,
    pub message: Value,
}

/// Which events of a timeline to read, newest first.
#[derive(Debug, Clone)]
pub struct TimelineQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Continue after this cursor (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
    pub limit: usize,
}

/// A page of events with the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    pub next_cursor: Option<String>,
}

/// Read access to customer state over a small pool of connections.
pub struct Profiles {
    pool: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    rules: ProfileRules,
    /// Present when this process runs the processor, which keeps it exact.
    cache: Option<Arc<ProfileCache>>,
}

impl Profiles {
    pub(crate) fn new(
        pool: Vec<Connection>,
        rules: ProfileRules,
        cache: Option<Arc<ProfileCache>>,
    ) -> Self {
        Self {
            pool: pool.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
            rules,
            cache,
        }
    }

    /// The profile of the customer `kind`/`value` leads to, when it is in memory: no database
    /// access, so an async handler can call it without a blocking hop. `None` says nothing about
    /// whether the customer exists; [`Profiles::profile`] does.
    pub fn cached_profile(
        &self,
        kind: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> Option<Arc<Profile>> {
        self.cache
            .as_ref()?
            .get(kind, value, day_of(to_micros(now)))
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.pool.len() {
            if let Ok(conn) = self.pool[(start + i) % self.pool.len()].try_lock() {
                return f(&conn);
            }
        }
        let conn = self.pool[start % self.pool.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }

    /// The surviving customer for an identifier; `customer_id` follows merges.
    pub fn find_customer(&self, kind: &str, value: &str) -> Result<Option<CustomerId>, StoreError> {
        self.with(|conn| find_customer(conn, kind, value))
    }

    pub fn profile(
        &self,
        kind: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<Profile>>, StoreError> {
        let day = day_of(to_micros(now));
        if let Some(profile) = self.cached_profile(kind, value, now) {
            return Ok(Some(profile));
        }
        // Read before loading, so that a load racing an invalidation is not kept.
        let generation = self.cache.as_ref().map(|c| c.generation());
        let loaded = self.with(|conn| {
            let Some(customer) = find_customer(conn, kind, value)? else {
                return Ok(None);
            };
            let profile = load_profile(conn, customer, now, &self.rules)?;
            Ok(Some((customer, Arc::new(profile))))
        })?;
        Ok(loaded.map(|(customer, profile)| {
            if let (Some(cache), Some(generation)) = (&self.cache, generation) {
                let from = Loaded {
                    kind,
                    value,
                    customer,
                    day,
                    generation,
                };
                cache.insert(from, Arc::clone(&profile));
            }
            profile
        }))
    }

    pub fn timeline(
        &self,
        customer: CustomerId,
        q: &TimelineQuery,
    ) -> Result<EventPage, StoreError> {
        self.with(|conn| timeline(conn, Some(customer), q))
    }

    /// Events of every customer in a time range, newest first.
    pub fn events(&self, q: &TimelineQuery) -> Result<EventPage, StoreError> {
        self.with(|conn| timeline(conn, None, q))
    }

    /// Customers whose trait `key` equals `value` (a string, or JSON for other types).
    pub fn search(
        &self,
        key: &str,
        value: &Value,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT customer_id FROM traits WHERE key = ?1 AND value = ?2 ORDER BY customer_id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![key, trait_text(value), limit.clamp(1, 10_000) as i64], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(rows.map(|r| r.map(|c| c.to_string())).collect::<Result<_, _>>()?)
        })
    }

    /// Counts for dashboards and tests: live customers, stored events, identities.
    pub fn totals(&self) -> Result<Totals, StoreError> {
        self.with(|conn| {
            Ok(conn.query_row(
                "SELECT (SELECT COUNT(*) FROM customers WHERE merged_into IS NULL),
                        (SELECT COUNT(*) FROM events),
                        (SELECT COUNT(*) FROM identities),
                        (SELECT COUNT(*) FROM merges)",
                [],
                |r| {
                    Ok(Totals {
                        customers: r.get(0)?,
                        events: r.get(1)?,
                        identities: r.get(2)?,
                        merges: r.get(3)?,
                    })
                },
            )?)
        })
    }
}

/// Store-wide counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub customers: i64,
    pub events: i64,
    pub identities: i64,
    pub merges: i64,
}

/// An `events` row read in the column order `events_after` and `events_before` select.
fn read_exported(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExportedEvent> {
    Ok(ExportedEvent {
        seq: r.get(0)?,
        source_id: r.get(1)?,
        message_id: r.get(2)?,
        customer_id: r.get(3)?,
        kind: r.get(4)?,
        name: r.get(5)?,
        timestamp: crate::time::from_micros(r.get(6)?),
        received_at: crate::time::from_micros(r.get(7)?),
        body: r.get(8)?,
    })
}

fn find_customer(
    conn: &Connection,
    kind: &str,
    value: &str,
) -> Result<Option<CustomerId>, StoreError> {
    if kind == "customer_id" {
        let Ok(id) = value.parse::<i64>() else {
            return Ok(None);
        };
        return Ok(conn
            .prepare_cached("SELECT COALESCE(merged_into, id) FROM customers WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?);
    }
    let kind = IdKind::parse(kind);
    let value = match kind {
        IdKind::Email => value.trim().to_lowercase(),
        _ => value.to_string(),
    };
    Ok(conn
        .prepare_cached("SELECT customer_id FROM identities WHERE kind = ?1 AND value = ?2")?
        .query_row(params![kind.as_str(), value], |r| r.get(0))
        .optional()?)
}

fn load_profile(
    conn: &Connection,
    customer: CustomerId,
    now: DateTime<Utc>,
    rules: &ProfileRules,
) -> Result<Profile, StoreError> {
    let created_at: i64 = conn
        .prepare_cached("SELECT created_at FROM customers WHERE id = ?1")?
        .query_row([customer], |r| r.get(0))?;

    let mut identities = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT kind, value FROM identities WHERE customer_id = ?1 ORDER BY first_seen, kind, value",
        )?;
        let rows = stmt.query_map([customer], |r| {
            Ok(Identifier::new(
                IdKind::parse(&r.get::<_, String>(0)?),
                r.get::<_, String>(1)?,
            ))
        })?;
        for r in rows {
            identities.push(r?);
        }
    }

    let traits = load_traits(conn, customer)?;
    let mut computed = load_computed(conn, customer, now, rules)?;
    // Shown to people in cents; segment evaluation uses the unrounded figures, as SQL does.
    computed.total_revenue = round_cents(computed.total_revenue);
    computed.revenue_30d = round_cents(computed.revenue_30d);
    computed.average_order_value = computed.average_order_value.map(round_cents);

    let mut merges = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT m.from_customer, m.into_customer, m.kind, m.value, m.at FROM merges m
             JOIN customers c ON c.id = m.from_customer
             WHERE m.into_customer = ?1 OR c.merged_into = ?1 ORDER BY m.id",
        )?;
        let rows = stmt.query_map([customer], |r| {
            Ok(MergeRecord {
                from_customer: r.get::<_, i64>(0)?.to_string(),
                into_customer: r.get::<_, i64>(1)?.to_string(),
                because: Identifier::new(
                    IdKind::parse(&r.get::<_, String>(2)?),
                    r.get::<_, String>(3)?,
                ),
                at: format_micros(r.get(4)?),
            })
        })?;
        for r in rows {
            merges.push(r?);
        }
    }

    Ok(Profile {
        customer_id: customer.to_string(),
        created_at: format_micros(created_at),
        identities,
        traits,
        computed,
        merges,
    })
}

/// A customer's traits.
pub(crate) fn load_traits(
    conn: &Connection,
    customer: CustomerId,
) -> rusqlite::Result<Map<String, Value>> {
    let mut traits = Map::new();
    let mut stmt =
        conn.prepare_cached("SELECT key, value FROM traits WHERE customer_id = ?1 ORDER BY key")?;
    let rows = stmt.query_map([customer], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for r in rows {
        let (k, v) = r?;
        traits.insert(k, parse_trait(&v));
    }
    Ok(traits)
}

/// A customer's computed traits as of `now` (the rolling windows end at `now`), unrounded.
pub(crate) fn load_computed(
    conn: &Connection,
    customer: CustomerId,
    now: DateTime<Utc>,
    rules: &ProfileRules,
) -> rusqlite::Result<ComputedTraits> {
    let mut computed = ComputedTraits::default();
    let stats = conn
        .prepare_cached(
            "SELECT first_seen, last_seen, events, orders, revenue, last_order_at FROM customer_stats WHERE customer_id = ?1",
        )?
        .query_row([customer], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })
        .optional()?;
    if let Some((first, last, events, orders, revenue, last_order)) = stats {
        computed.first_seen = Some(format_micros(first));
        computed.last_seen = Some(format_micros(last));
        computed.event_count = events;
        computed.orders = orders;
        computed.total_revenue = revenue;
        computed.last_order_at = last_order.map(format_micros);
        computed.average_order_value = (orders > 0).then(|| revenue / orders as f64);
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT name, count FROM event_counts WHERE customer_id = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([customer], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        for r in rows {
            let (name, count) = r?;
            computed.event_counts.insert(name, count);
        }
    }
    let window_start = day_of(to_micros(now)) - (rules.revenue_window_days - 1);
    let (revenue_30d, orders_30d) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(revenue), 0), COALESCE(SUM(orders), 0) FROM revenue_days WHERE customer_id = ?1 AND day >= ?2",
        )?
        .query_row(params![customer, window_start], |r| Ok((r.get::<_, f64>(0)?, r.get::<_, i64>(1)?)))?;
    computed.revenue_30d = revenue_30d;
    computed.orders_30d = orders_30d;
    Ok(computed)
}

fn parse_trait(text: &str) -> Value {
    // Strings are stored bare; anything that parses as JSON of another type was stored as JSON.
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(_)) | Err(_) => Value::String(text.to_string()),
        Ok(v) => v,
    }
}

fn round_cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn timeline(
    conn: &Connection,
    customer: Option<CustomerId>,
    q: &TimelineQuery,
) -> Result<EventPage, StoreError> {
    // The cursor is "ts:seq" of the last event returned; pages go strictly backwards from it.
    let (cursor_ts, cursor_seq) = match q.cursor.as_deref().and_then(|c| c.split_once(':')) {
        Some((ts, seq)) => (
            ts.parse::<i64>().unwrap_or(i64::MAX),
            seq.parse::<i64>().unwrap_or(i64::MAX),
        ),
        None => (i64::MAX, i64::MAX),
    };
    let from = q.from.map(to_micros).unwrap_or(i64::MIN);
    let to = q.to.map(to_micros).unwrap_or(i64::MAX);
    let limit = q.limit.clamp(1, 1000);
    let sql = if customer.is_some() {
        "SELECT seq, customer_id, source_id, message_id, type, name, ts, received_at, body FROM events
         WHERE customer_id = ?1 AND ts >= ?2 AND ts < ?3 AND (ts < ?4 OR (ts = ?4 AND seq < ?5))
         ORDER BY ts DESC, seq DESC LIMIT ?6"
    } else {
        "SELECT seq, customer_id, source_id, message_id, type, name, ts, received_at, body FROM events
         WHERE (?1 IS NULL OR true) AND ts >= ?2 AND ts < ?3 AND (ts < ?4 OR (ts = ?4 AND seq < ?5))
         ORDER BY ts DESC, seq DESC LIMIT ?6"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        params![customer, from, to, cursor_ts, cursor_seq, limit as i64 + 1],
        |r| {
            let ts: i64 = r.get(6)?;
            let body: String = r.get(8)?;
            Ok((
                ts,
                StoredEvent {
                    seq: r.get(0)?,
                    customer_id: r.get::<_, Option<i64>>(1)?.map(|c| c.to_string()),
                    source_id: r.get(2)?,
                    message_id: r.get(3)?,
                    kind: r.get(4)?,
                    name: r.get(5)?,
                    timestamp: format_micros(ts),
                    received_at: format_micros(r.get(7)?),
                    message: serde_json::from_str(&body).unwrap_or(Value::String(body)),
                },
            ))
        },
    )?;
    let mut events: Vec<(i64, StoredEvent)> = rows.collect::<Result<_, _>>()?;
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|(ts, e)| format!("{ts}:{}", e.seq))
    } else {
        None
    };
    Ok(EventPage {
        events: events.into_iter().map(|(_, e)| e).collect(),
        next_cursor,
    })
}

/// A processed event as stored, for exporters (the Parquet lake).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedEvent {
    pub seq: i64,
    pub source_id: i64,
    pub message_id: String,
    pub customer_id: Option<CustomerId>,
    pub kind: String,
    pub name: String,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub body: String,
}

/// One live customer's computed traits, for analytical snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    pub customer_id: CustomerId,
    pub created_at: DateTime<Utc>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub event_count: i64,
    pub orders: i64,
    pub total_revenue: f64,
    pub revenue_30d: f64,
    pub orders_30d: i64,
    pub last_order_at: Option<DateTime<Utc>>,
}

/// One trait of one live customer; `number` is set when the value reads as a number.
#[derive(Debug, Clone, PartialEq)]
pub struct TraitRow {
    pub customer_id: CustomerId,
    pub key: String,
    pub value: String,
    pub number: Option<f64>,
}

/// One identifier and its owner.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityRow {
    pub customer_id: CustomerId,
    pub kind: String,
    pub value: String,
    pub first_seen: DateTime<Utc>,
}

impl Profiles {
    /// Stored events after an inbox position, in order (the lake exporter's feed).
    pub fn events_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<ExportedEvent>, StoreError> {
        let seq = after.offset();
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, source_id, message_id, customer_id, type, name, ts, received_at, body
                 FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![seq, limit.max(1) as i64], read_exported)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Merges after merge `after`, oldest first: `(merge id, merged-away customer, survivor)`.
    pub fn merges_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, CustomerId, CustomerId)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, from_customer, into_customer FROM merges WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit.max(1) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Live customers whose trait `key` is `value` as text (an inbound SMS's phone number).
    pub fn customers_with_trait(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<CustomerId>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.customer_id FROM traits t JOIN customers c ON c.id = t.customer_id
                 WHERE t.key = ?1 AND t.value = ?2 AND c.merged_into IS NULL ORDER BY t.customer_id",
            )?;
            let rows = stmt.query_map(params![key, value], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The live customer a customer ID is now (itself, or the survivor it was merged into).
    pub fn live_customer(&self, customer: CustomerId) -> Result<Option<CustomerId>, StoreError> {
        self.with(|conn| find_customer(conn, "customer_id", &customer.to_string()))
    }

    /// The customer's latest events of `kind` (`track`, `identify` …) stored before inbox
    /// position `before`, newest first, at most `limit`; merged-away customers' events count
    /// as their survivor's.
    pub fn events_before(
        &self,
        customer: CustomerId,
        kind: &str,
        before: Position,
        limit: usize,
    ) -> Result<Vec<ExportedEvent>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, source_id, message_id, customer_id, type, name, ts, received_at, body
                 FROM events
                 WHERE customer_id IN (SELECT ?1 UNION ALL SELECT id FROM customers WHERE merged_into = ?1)
                   AND type = ?2 AND seq < ?3
                 ORDER BY seq DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![customer, kind, before.offset(), limit.max(1) as i64],
                read_exported,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// (merged-away customer, survivor) for every merge, so analytics can re-key old events.
    pub fn merged_customers(&self) -> Result<Vec<(CustomerId, CustomerId)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, merged_into FROM customers WHERE merged_into IS NOT NULL ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Computed traits of every live customer.
    pub fn profile_rows(&self, now: DateTime<Utc>) -> Result<Vec<ProfileRow>, StoreError> {
        let window_start = day_of(to_micros(now)) - (self.rules.revenue_window_days - 1);
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, c.created_at, s.first_seen, s.last_seen, COALESCE(s.events, 0),
                        COALESCE(s.orders, 0), COALESCE(s.revenue, 0), s.last_order_at,
                        COALESCE(w.revenue, 0), COALESCE(w.orders, 0)
                 FROM customers c
                 LEFT JOIN customer_stats s ON s.customer_id = c.id
                 LEFT JOIN (SELECT customer_id, SUM(revenue) AS revenue, SUM(orders) AS orders
                            FROM revenue_days WHERE day >= ?1 GROUP BY customer_id) w ON w.customer_id = c.id
                 WHERE c.merged_into IS NULL ORDER BY c.id",
            )?;
            let opt = |v: Option<i64>| v.map(crate::time::from_micros);
            let rows = stmt.query_map([window_start], |r| {
                Ok(ProfileRow {
                    customer_id: r.get(0)?,
                    created_at: crate::time::from_micros(r.get(1)?),
                    first_seen: opt(r.get(2)?),
                    last_seen: opt(r.get(3)?),
                    event_count: r.get(4)?,
                    orders: r.get(5)?,
                    total_revenue: r.get(6)?,
                    last_order_at: opt(r.get(7)?),
                    revenue_30d: r.get(8)?,
                    orders_30d: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Every trait of every live customer.
    pub fn trait_rows(&self) -> Result<Vec<TraitRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT customer_id, key, value FROM traits ORDER BY customer_id, key",
            )?;
            let rows = stmt.query_map([], |r| {
                let value: String = r.get(2)?;
                Ok(TraitRow {
                    customer_id: r.get(0)?,
                    key: r.get(1)?,
                    number: value.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
                    value,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Every identifier with its owner.
    pub fn identity_rows(&self) -> Result<Vec<IdentityRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT customer_id, kind, value, first_seen FROM identities ORDER BY customer_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(IdentityRow {
                    customer_id: r.get(0)?,
                    kind: r.get(1)?,
                    value: r.get(2)?,
                    first_seen: crate::time::from_micros(r.get(3)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}
