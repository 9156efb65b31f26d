//! Delivery rules' state in `state.db`: the SQLite [`DeliveryStore`].
//!
//! - `delivery_consent`: one row per (customer, scope), the fact kept for it. A new fact
//!   replaces it only by [`ConsentFact::replaces`], decided in the same immediate transaction
//!   that reads the row, so two writers cannot both think they replaced it.
//! - `delivery_sends`: the send ledger for frequency caps, one row per idempotency key (the
//!   primary key), read by customer and time.
//! - `delivery_zones`: each customer's last `context.timezone`.

use crate::time::{from_micros, to_micros};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cohort_journey::definition::ChannelKind;
use cohort_journey::delivery::{ConsentFact, DeliveryError, DeliveryStore, SendRecord};
use cohort_journey::state::CustomerId;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

/// The SQLite delivery store, on a connection of its own.
pub struct SqliteDelivery {
    conn: Connection,
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> DeliveryError {
    DeliveryError::Storage(Box::new(e))
}

fn kind_name(kind: ChannelKind) -> &'static str {
    kind.as_str()
}

type FactRow = (String, bool, String, String, i64);

fn read_fact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FactRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn fact(customer: CustomerId, row: FactRow) -> Result<ConsentFact, DeliveryError> {
    let (scope, allowed, source, detail, at) = row;
    let unreadable =
        |e: String| DeliveryError::Unreadable(format!("customer {customer}'s consent: {e}"));
    Ok(ConsentFact {
        scope: scope.parse().map_err(unreadable)?,
        allowed,
        source: source.parse().map_err(unreadable)?,
        detail,
        at: from_micros(at),
    })
}

const FACT_COLUMNS: &str = "scope, allowed, source, detail, at FROM delivery_consent";

fn kept_fact(
    tx: &Transaction<'_>,
    customer: CustomerId,
    scope: &str,
) -> Result<Option<ConsentFact>, DeliveryError> {
    tx.query_row(
        &format!("SELECT {FACT_COLUMNS} WHERE customer_id = ?1 AND scope = ?2"),
        params![customer, scope],
        read_fact_row,
    )
    .optional()
    .map_err(storage)?
    .map(|row| fact(customer, row))
    .transpose()
}

fn put_fact(
    tx: &Transaction<'_>,
    customer: CustomerId,
    fact: &ConsentFact,
) -> Result<(), DeliveryError> {
    tx.execute(
        "INSERT OR REPLACE INTO delivery_consent (customer_id, scope, allowed, source, detail, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            customer,
            fact.scope.to_string(),
            fact.allowed,
            fact.source.as_str(),
            fact.detail,
            to_micros(fact.at)
        ],
    )
    .map_err(storage)?;
    Ok(())
}

/// Keeps `fact` for `customer` if it replaces the kept one; true when it does.
fn keep_fact(
    tx: &Transaction<'_>,
    customer: CustomerId,
    fact: &ConsentFact,
) -> Result<bool, DeliveryError> {
    let replaces = match kept_fact(tx, customer, &fact.scope.to_string())? {
        Some(kept) => fact.replaces(&kept),
        None => true,
    };
    if replaces {
        put_fact(tx, customer, fact)?;
    }
    Ok(replaces)
}

fn kept_zone(
    tx: &Transaction<'_>,
    customer: CustomerId,
) -> Result<Option<(String, i64)>, DeliveryError> {
    tx.query_row(
        "SELECT zone, at FROM delivery_zones WHERE customer_id = ?1",
        [customer],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(storage)
}

/// Adds one send to the ledger unless its key is there; true when it was added.
fn insert_send(conn: &Connection, send: &SendRecord) -> Result<bool, DeliveryError> {
    let added = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO delivery_sends (key, customer_id, channel, kind, purpose, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                send.key,
                send.customer,
                send.channel,
                kind_name(send.kind),
                send.purpose.as_str(),
                to_micros(send.at)
            ])
        })
        .map_err(storage)?;
    Ok(added == 1)
}

impl SqliteDelivery {
    pub(crate) fn new(conn: Connection) -> Self {
        SqliteDelivery { conn }
    }

    fn immediate(&mut self) -> Result<Transaction<'_>, DeliveryError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)
    }
}

impl DeliveryStore for SqliteDelivery {
    fn record_consent(
        &mut self,
        customer: CustomerId,
        fact: &ConsentFact,
    ) -> Result<bool, DeliveryError> {
        let tx = self.immediate()?;
        let kept = keep_fact(&tx, customer, fact)?;
        tx.commit().map_err(storage)?;
        Ok(kept)
    }

    fn consent(&mut self, customer: CustomerId) -> Result<Vec<ConsentFact>, DeliveryError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {FACT_COLUMNS} WHERE customer_id = ?1 ORDER BY scope"
            ))
            .map_err(storage)?;
        let rows = stmt
            .query_map([customer], read_fact_row)
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        rows.into_iter().map(|row| fact(customer, row)).collect()
    }

    fn record_send(&mut self, send: &SendRecord) -> Result<bool, DeliveryError> {
        insert_send(&self.conn, send)
    }

    fn record_sends(&mut self, sends: &[SendRecord]) -> Result<usize, DeliveryError> {
        if sends.is_empty() {
            return Ok(0);
        }
        let tx = self.immediate()?;
        let mut added = 0;
        for send in sends {
            added += usize::from(insert_send(&tx, send)?);
        }
        tx.commit().map_err(storage)?;
        Ok(added)
    }

    fn count_sends(
        &mut self,
        customer: CustomerId,
        kind: Option<ChannelKind>,
        since: DateTime<Utc>,
    ) -> Result<u64, DeliveryError> {
        let count: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM delivery_sends
                 WHERE customer_id = ?1 AND at >= ?2 AND purpose = 'marketing'
                   AND (?3 IS NULL OR kind = ?3)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![customer, to_micros(since), kind.map(kind_name)],
                    |r| r.get(0),
                )
            })
            .map_err(storage)?;
        Ok(count.max(0) as u64)
    }

    fn forget_sends(&mut self, before: DateTime<Utc>) -> Result<u64, DeliveryError> {
        let forgotten = self
            .conn
            .execute(
                "DELETE FROM delivery_sends WHERE at < ?1",
                [to_micros(before)],
            )
            .map_err(storage)?;
        Ok(forgotten as u64)
    }

    fn record_zone(
        &mut self,
        customer: CustomerId,
        zone: Tz,
        at: DateTime<Utc>,
    ) -> Result<bool, DeliveryError> {
        let tx = self.immediate()?;
        let at = to_micros(at);
        let stale = kept_zone(&tx, customer)?
            .is_some_and(|(kept, kept_at)| kept == zone.name() || kept_at > at);
        if stale {
            return Ok(false);
        }
        tx.execute(
            "INSERT OR REPLACE INTO delivery_zones (customer_id, zone, at) VALUES (?1, ?2, ?3)",
            params![customer, zone.name(), at],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(true)
    }

    fn zone(&mut self, customer: CustomerId) -> Result<Option<Tz>, DeliveryError> {
        let name: Option<String> = self
            .conn
            .query_row(
                "SELECT zone FROM delivery_zones WHERE customer_id = ?1",
                [customer],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage)?;
        // A name this build's zone database lacks falls back like an unknown trait would.
        Ok(name.and_then(|n| n.parse().ok()))
    }

    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<(), DeliveryError> {
        if from == into {
            return Ok(());
        }
        let tx = self.immediate()?;
        let moved = {
            let mut stmt = tx
                .prepare(&format!("SELECT {FACT_COLUMNS} WHERE customer_id = ?1"))
                .map_err(storage)?;
            let rows = stmt
                .query_map([from], read_fact_row)
                .map_err(storage)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(storage)?;
            rows.into_iter()
                .map(|row| fact(from, row))
                .collect::<Result<Vec<_>, _>>()?
        };
        for f in &moved {
            keep_fact(&tx, into, f)?;
        }
        tx.execute(
            "DELETE FROM delivery_consent WHERE customer_id = ?1",
            [from],
        )
        .map_err(storage)?;
        tx.execute(
            "UPDATE delivery_sends SET customer_id = ?2 WHERE customer_id = ?1",
            params![from, into],
        )
        .map_err(storage)?;
        if let Some((zone, at)) = kept_zone(&tx, from)? {
            let survivor_later = kept_zone(&tx, into)?.is_some_and(|(_, kept_at)| kept_at >= at);
            if !survivor_later {
                tx.execute(
                    "INSERT OR REPLACE INTO delivery_zones (customer_id, zone, at) VALUES (?1, ?2, ?3)",
                    params![into, zone, at],
                )
                .map_err(storage)?;
            }
            tx.execute("DELETE FROM delivery_zones WHERE customer_id = ?1", [from])
                .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        Ok(())
    }
}
