//! Coupon pools, codes, issues and redemptions in `state.db`: the SQLite [`CouponStore`].
//!
//! Every change is one immediate transaction. An issue is one transaction that returns the
//! customer's earlier code if there is one, otherwise takes the oldest available code of the
//! pool, marks it issued and inserts its row in `coupon_issues`, whose primary key is the code
//! and which is UNIQUE on (pool, campaign, customer). Why a code is never issued twice, not
//! even across `kill -9`:
//!
//! - The immediate transaction takes SQLite's write lock before it reads, so no other writer
//!   (another connection, another process) can pick the same available code in between.
//! - SQLite commits atomically (WAL): after a crash the issue is either wholly there (the code
//!   marked issued, its issue row) or not at all (the code still available, nobody told of it,
//!   since the caller hears of the code only after the commit). A retried step then finds the
//!   committed issue and returns the same code.
//! - Should anything still try, the constraints refuse it: a code's second issue row breaks the
//!   primary key, a customer's second code in a campaign breaks the UNIQUE constraint, and the
//!   transaction rolls back.
//!
//! Redemptions are one row per code (primary key), so a code is redeemed once.

use crate::time::{from_micros, to_micros};
use chrono::{DateTime, Duration, Utc};
use cohort_journey::coupon::{
    AddReport, CouponError, CouponStore, Expiry, IssuedCode, NewPool, PoolCounts, Redemption,
    Refusal, check_codes, survivor,
};
use cohort_journey::state::CustomerId;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

/// The SQLite coupon store, on a connection of its own.
pub struct SqliteCoupons {
    conn: Connection,
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> CouponError {
    CouponError::Storage(Box::new(e))
}

/// A pool's expiry as stored: a fixed time, or microseconds after issue.
fn expiry(at: Option<i64>, after: Option<i64>) -> Option<Expiry> {
    match (at, after) {
        (Some(at), _) => Some(Expiry::At(from_micros(at))),
        (None, Some(us)) => Some(Expiry::AfterIssue(Duration::microseconds(us))),
        (None, None) => None,
    }
}

fn read_pool(tx: &Connection, key: &str) -> Result<Option<NewPool>, CouponError> {
    tx.query_row(
        "SELECT name, expires_at, valid_for FROM coupon_pools WHERE key = ?1",
        [key],
        |r| {
            Ok(NewPool {
                key: key.to_string(),
                name: r.get(0)?,
                expiry: expiry(r.get(1)?, r.get(2)?),
            })
        },
    )
    .optional()
    .map_err(storage)
}

fn require_pool(tx: &Connection, key: &str) -> Result<NewPool, CouponError> {
    read_pool(tx, key)?.ok_or_else(|| CouponError::UnknownPool(key.to_string()))
}

impl SqliteCoupons {
    pub(crate) fn new(conn: Connection) -> Self {
        SqliteCoupons { conn }
    }

    /// Every pool's key, sorted: what journeys' coupon steps are checked against.
    pub fn pool_keys(&self) -> Result<Vec<String>, CouponError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM coupon_pools ORDER BY key")
            .map_err(storage)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    fn immediate(&mut self) -> Result<Transaction<'_>, CouponError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)
    }
}

fn issued(code: String, issued_at: i64, expires_at: Option<i64>) -> IssuedCode {
    IssuedCode {
        code,
        issued_at: from_micros(issued_at),
        expires_at: expires_at.map(from_micros),
    }
}

impl CouponStore for SqliteCoupons {
    fn create_pool(&mut self, pool: &NewPool) -> Result<(), CouponError> {
        if pool.key.is_empty() {
            return Err(CouponError::EmptyPoolKey);
        }
        let (at, after) = match pool.expiry {
            None => (None, None),
            Some(Expiry::At(at)) => (Some(to_micros(at)), None),
            Some(Expiry::AfterIssue(d)) => (None, d.num_microseconds()),
        };
        let tx = self.immediate()?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO coupon_pools (key, name, expires_at, valid_for)
                 VALUES (?1, ?2, ?3, ?4)",
                params![pool.key, pool.name, at, after],
            )
            .map_err(storage)?;
        if inserted == 0 {
            return Err(CouponError::PoolExists(pool.key.clone()));
        }
        tx.commit().map_err(storage)
    }

    fn pool(&mut self, key: &str) -> Result<Option<NewPool>, CouponError> {
        read_pool(&self.conn, key)
    }

    fn add_codes(&mut self, pool: &str, codes: &[String]) -> Result<AddReport, CouponError> {
        check_codes(codes)?;
        let tx = self.immediate()?;
        require_pool(&tx, pool)?;
        let mut report = AddReport::default();
        {
            // Codes are unique across pools (the UNIQUE column), so a known code is skipped.
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO coupon_codes (code, pool) VALUES (?1, ?2)")
                .map_err(storage)?;
            for code in codes {
                if insert.execute(params![code, pool]).map_err(storage)? == 1 {
                    report.added += 1;
                } else {
                    report.skipped += 1;
                }
            }
        }
        tx.commit().map_err(storage)?;
        Ok(report)
    }

    fn issue(
        &mut self,
        pool: &str,
        campaign: &str,
        customer: CustomerId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IssuedCode>, CouponError> {
        let tx = self.immediate()?;
        let spec = require_pool(&tx, pool)?;
        let earlier = tx
            .query_row(
                "SELECT code, issued_at, expires_at FROM coupon_issues
                 WHERE pool = ?1 AND campaign = ?2 AND customer_id = ?3",
                params![pool, campaign, customer],
                |r| Ok(issued(r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(storage)?;
        if let Some(earlier) = earlier {
            return Ok(Some(earlier));
        }
        let key_used: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM coupon_issues WHERE issue_key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage)?;
        if key_used.is_some() {
            return Err(CouponError::KeyReused(key.to_string()));
        }
        if let Some(Expiry::At(at)) = spec.expiry
            && now >= at
        {
            return Err(CouponError::PoolExpired {
                pool: pool.to_string(),
                at,
            });
        }
        let Some((id, code)) = tx
            .query_row(
                "SELECT id, code FROM coupon_codes WHERE pool = ?1 AND issued = 0
                 ORDER BY id LIMIT 1",
                [pool],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(storage)?
        else {
            return Ok(None);
        };
        let expires_at = spec.expires_at(now);
        tx.execute(
            "UPDATE coupon_codes SET issued = 1 WHERE id = ?1 AND issued = 0",
            [id],
        )
        .map_err(storage)?;
        tx.execute(
            "INSERT INTO coupon_issues
               (code, pool, campaign, customer_id, issue_key, issued_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                code,
                pool,
                campaign,
                customer,
                key,
                to_micros(now),
                expires_at.map(to_micros)
            ],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(Some(IssuedCode {
            code,
            issued_at: now,
            expires_at,
        }))
    }

    fn redeem(
        &mut self,
        code: &str,
        customer: CustomerId,
        order: &str,
        at: DateTime<Utc>,
    ) -> Result<Redemption, CouponError> {
        let code = code.trim();
        let tx = self.immediate()?;
        type Row = (
            String,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<String>,
        );
        let row: Option<Row> = tx
            .query_row(
                "SELECT c.pool, i.campaign, i.customer_id, i.expires_at, r.order_id
                 FROM coupon_codes c
                 LEFT JOIN coupon_issues i ON i.code = c.code
                 LEFT JOIN coupon_redemptions r ON r.code = c.code
                 WHERE c.code = ?1",
                [code],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(storage)?;
        let Some((pool, campaign, issued_to, expires_at, redeemed_by)) = row else {
            return Ok(Redemption::Refused(Refusal::UnknownCode));
        };
        let (Some(campaign), Some(issued_to)) = (campaign, issued_to) else {
            return Ok(Redemption::Refused(Refusal::NotIssued));
        };
        let redeemed = Redemption::Redeemed { pool, campaign };
        if let Some(by) = redeemed_by {
            return Ok(if by == order {
                redeemed
            } else {
                Redemption::Refused(Refusal::AlreadyRedeemed { order: by })
            });
        }
        let merged_into = |c: CustomerId| {
            tx.prepare_cached("SELECT into_customer FROM coupon_merges WHERE from_customer = ?1")
                .and_then(|mut s| s.query_row([c], |r| r.get(0)).optional())
                .map_err(storage)
        };
        if issued_to != customer && survivor(issued_to, merged_into)? != customer {
            return Ok(Redemption::Refused(Refusal::IssuedToAnother));
        }
        if let Some(expiry) = expires_at
            && to_micros(at) >= expiry
        {
            return Ok(Redemption::Refused(Refusal::Expired {
                at: from_micros(expiry),
            }));
        }
        tx.execute(
            "INSERT INTO coupon_redemptions (code, customer_id, order_id, redeemed_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![code, customer, order, to_micros(at)],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(redeemed)
    }

    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<usize, CouponError> {
        if from == into {
            return Ok(0);
        }
        let tx = self.immediate()?;
        // Codes of a campaign `into` already has a code for stay `from`'s (the UNIQUE
        // constraint ignores them); `coupon_merges` lets `into` redeem them.
        let moved = tx
            .execute(
                "UPDATE OR IGNORE coupon_issues SET customer_id = ?2 WHERE customer_id = ?1",
                params![from, into],
            )
            .map_err(storage)?;
        tx.execute(
            "INSERT OR REPLACE INTO coupon_merges (from_customer, into_customer) VALUES (?1, ?2)",
            params![from, into],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(moved)
    }

    fn counts(&mut self, pool: &str, now: DateTime<Utc>) -> Result<PoolCounts, CouponError> {
        let spec = require_pool(&self.conn, pool)?;
        let now_us = to_micros(now);
        // One read transaction, so the three counts agree with each other.
        let tx = self.conn.transaction().map_err(storage)?;
        let (total, unissued): (i64, i64) = tx
            .query_row(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE issued = 0) FROM coupon_codes
                 WHERE pool = ?1",
                [pool],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(storage)?;
        let (redeemed, expired_issued): (i64, i64) = tx
            .query_row(
                "SELECT COUNT(r.code),
                        COUNT(*) FILTER (WHERE r.code IS NULL AND i.expires_at <= ?2)
                 FROM coupon_issues i LEFT JOIN coupon_redemptions r ON r.code = i.code
                 WHERE i.pool = ?1",
                params![pool, now_us],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(storage)?;
        tx.finish().map_err(storage)?;
        let pool_expired = matches!(spec.expiry, Some(Expiry::At(at)) if now >= at);
        let n = |v: i64| v.max(0) as u64;
        let issued = n(total - unissued - redeemed - expired_issued);
        Ok(if pool_expired {
            PoolCounts {
                available: 0,
                issued,
                redeemed: n(redeemed),
                expired: n(expired_issued + unissued),
            }
        } else {
            PoolCounts {
                available: n(unissued),
                issued,
                redeemed: n(redeemed),
                expired: n(expired_issued),
            }
        })
    }
}
