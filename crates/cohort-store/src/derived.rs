//! Analyses over the customer state, and their results written back: per-customer order
//! statistics in, derived traits and stored reports out.
//!
//! The analyses themselves (RFM scores, clusters) live elsewhere; this module only reads what
//! they need and writes what they decide. Each call opens its own connection to `state.db`, so a
//! long analysis never holds one of the shared connections, and writes happen in one short
//! transaction at the end. The processor writes `state.db` too: the busy timeout makes either side
//! wait for the other rather than fail.
//!
//! Derived traits are ordinary rows of `traits` (so profiles, segments and SQL see them), owned by
//! the analysis that writes them: [`Derived::replace_traits`] makes a set of trait keys say
//! exactly what the latest run decided, removing them from customers the run no longer covers.
//! Every customer whose derived traits changed is queued in `segment_pending`, so real-time
//! segments that use them are re-evaluated.

use crate::profile_cache::ProfileCache;
use crate::profile_store::trait_text;
use crate::time::format_micros;
use crate::{Durability, Store, StoreError, conn};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// One customer's orders inside a window of days, from `revenue_days`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderStats {
    pub customer_id: i64,
    /// Day (days since 1970-01-01, UTC) of the last order in the window.
    pub last_order_day: i64,
    pub orders: i64,
    pub revenue: f64,
}

/// A stored analysis result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRun {
    pub id: i64,
    pub kind: String,
    pub params: Value,
    pub report: Value,
    /// RFC 3339.
    pub created_at: String,
}

/// An analysis result to store.
#[derive(Debug, Clone, Copy)]
pub struct NewAnalysisRun<'a> {
    pub kind: &'a str,
    pub params: &'a Value,
    pub report: &'a Value,
}

/// What [`Derived::replace_traits`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceSummary {
    /// Customers given values.
    pub written: usize,
    /// Customers whose stored values changed (including those cleared); all were queued for
    /// segment re-evaluation.
    pub changed: usize,
    /// Customers who had some of the keys and lost them all because the run did not cover them.
    pub cleared: usize,
    /// Customers skipped because they were merged into another (or vanished) since being read.
    pub skipped: usize,
    /// The stored analysis run, when one was given.
    pub run_id: Option<i64>,
}

/// Derived data of one store: see the module documentation.
#[derive(Debug, Clone)]
pub struct Derived {
    state_path: PathBuf,
    durability: Durability,
    profile_cache: Option<Arc<ProfileCache>>,
}

impl Store {
    /// Analyses' inputs and outputs on this store's `state.db`.
    pub fn derived(&self) -> Derived {
        Derived {
            state_path: self.data_dir().join("state.db"),
            durability: self.config().durability,
            profile_cache: self.profile_cache(),
        }
    }
}

impl Derived {
    fn open(&self) -> Result<Connection, StoreError> {
        Ok(conn::open(&self.state_path, self.durability)?)
    }

    /// Orders per customer over the `window_days` days ending with day `as_of_day` (both
    /// inclusive), for customers with at least one order in them. Merged-away customers have no
    /// rows of their own (a merge folds them into the survivor), and are excluded in any case.
    /// Sorted by customer ID.
    pub fn order_stats(
        &self,
        as_of_day: i64,
        window_days: u32,
    ) -> Result<Vec<OrderStats>, StoreError> {
        let first_day = as_of_day - i64::from(window_days.max(1)) + 1;
        let conn = self.open()?;
        let mut stmt = conn.prepare(
            "SELECT r.customer_id, MAX(r.day), SUM(r.orders), SUM(r.revenue)
               FROM revenue_days r JOIN customers c ON c.id = r.customer_id
              WHERE r.day BETWEEN ?1 AND ?2 AND c.merged_into IS NULL
              GROUP BY r.customer_id
             HAVING SUM(r.orders) > 0
              ORDER BY r.customer_id",
        )?;
        let rows = stmt.query_map(params![first_day, as_of_day], |r| {
            Ok(OrderStats {
                customer_id: r.get(0)?,
                last_order_day: r.get(1)?,
                orders: r.get(2)?,
                revenue: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Makes the traits named in `keys` hold exactly `rows` for every customer, in one
    /// transaction: listed customers get the values in their map (a key of `keys` absent from a
    /// map is removed from that customer), and every other customer loses all of `keys`. Values
    /// are stored as identify traits are (strings bare, anything else as JSON) with
    /// `updated_at` = now. Rows that would not change anything are not rewritten; customers
    /// whose traits changed are queued in `segment_pending`. With `run`, the analysis report is
    /// stored in the same transaction, so traits and report always agree.
    ///
    /// Map entries whose key is not in `keys` are ignored: a run can only touch what it owns.
    pub fn replace_traits(
        &self,
        keys: &[&str],
        rows: &[(i64, Map<String, Value>)],
        run: Option<NewAnalysisRun<'_>>,
    ) -> Result<ReplaceSummary, StoreError> {
        let keys: BTreeSet<&str> = keys.iter().copied().collect();
        let mut conn = self.open()?;
        // IMMEDIATE takes the write lock up front, so the snapshot read below is what the writes
        // replace: nothing can change these traits between the read and the commit.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = chrono::Utc::now().timestamp_micros();
        let mut summary = ReplaceSummary::default();

        let mut stored: HashMap<i64, HashMap<String, String>> = HashMap::new();
        if !keys.is_empty() {
            let placeholders = vec!["?"; keys.len()].join(", ");
            let mut stmt = tx.prepare(&format!(
                "SELECT customer_id, key, value FROM traits WHERE key IN ({placeholders})"
            ))?;
            let found = stmt.query_map(params_from_iter(keys.iter()), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in found {
                let (customer, key, value) = row?;
                stored.entry(customer).or_default().insert(key, value);
            }
        }

        {
            let mut alive =
                tx.prepare_cached("SELECT 1 FROM customers WHERE id = ?1 AND merged_into IS NULL")?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO traits (customer_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (customer_id, key) DO UPDATE SET value = excluded.value,
                                                             updated_at = excluded.updated_at",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM traits WHERE customer_id = ?1 AND key = ?2")?;
            let mut pending = tx.prepare_cached(
                "INSERT OR IGNORE INTO segment_pending (customer_id) VALUES (?1)",
            )?;

            let mut covered = HashSet::with_capacity(rows.len());
            for (customer, values) in rows {
                if !covered.insert(*customer) {
                    continue; // A repeated customer: the first row decides.
                }
                if !alive.exists([customer])? {
                    summary.skipped += 1;
                    continue;
                }
                summary.written += 1;
                let before = stored.get(customer);
                let mut changed = false;
                for key in &keys {
                    let old = before.and_then(|b| b.get(*key));
                    match (values.get(*key).map(trait_text), old) {
                        (Some(new), Some(old)) if &new == old => {}
                        (Some(new), _) => {
                            upsert.execute(params![customer, key, new, now])?;
                            changed = true;
                        }
                        (None, Some(_)) => {
                            delete.execute(params![customer, key])?;
                            changed = true;
                        }
                        (None, None) => {}
                    }
                }
                if changed {
                    pending.execute([customer])?;
                    summary.changed += 1;
                }
            }
            for (customer, old) in &stored {
                if covered.contains(customer) {
                    continue;
                }
                for key in old.keys() {
                    delete.execute(params![customer, key])?;
                }
                pending.execute([customer])?;
                summary.changed += 1;
                summary.cleared += 1;
            }
        }

        if let Some(run) = run {
            summary.run_id = Some(insert_run(&tx, run, now)?);
        }
        if summary.changed > 0 {
            // Tells a server's processor, maybe in another process, that profiles changed.
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('derived_version', 1)
                 ON CONFLICT (key) DO UPDATE SET value = value + 1",
                [],
            )?;
        }
        tx.commit()?;
        if summary.changed > 0
            && let Some(cache) = &self.profile_cache
        {
            cache.clear();
        }
        Ok(summary)
    }

    /// Stores an analysis result on its own; returns its ID.
    pub fn save_analysis(&self, run: NewAnalysisRun<'_>) -> Result<i64, StoreError> {
        let conn = self.open()?;
        insert_run(&conn, run, chrono::Utc::now().timestamp_micros())
    }

    /// The most recent stored result of one kind.
    pub fn latest_analysis(&self, kind: &str) -> Result<Option<AnalysisRun>, StoreError> {
        read_run(
            &self.open()?,
            "SELECT id, kind, params, report, created_at FROM analysis_runs
              WHERE kind = ?1 ORDER BY id DESC LIMIT 1",
            rusqlite::types::Value::Text(kind.to_string()),
        )
    }

    /// One stored result by ID.
    pub fn analysis_run(&self, id: i64) -> Result<Option<AnalysisRun>, StoreError> {
        read_run(
            &self.open()?,
            "SELECT id, kind, params, report, created_at FROM analysis_runs WHERE id = ?1",
            rusqlite::types::Value::Integer(id),
        )
    }
}

fn read_run(
    conn: &Connection,
    sql: &str,
    arg: rusqlite::types::Value,
) -> Result<Option<AnalysisRun>, StoreError> {
    let row = conn
        .query_row(sql, [arg], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    let Some((id, kind, params, report, created_at)) = row else {
        return Ok(None);
    };
    let parse = |what: &str, text: &str| {
        serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("analysis run {id} {what}: {e}")))
    };
    Ok(Some(AnalysisRun {
        id,
        kind,
        params: parse("params", &params)?,
        report: parse("report", &report)?,
        created_at: format_micros(created_at),
    }))
}

fn insert_run(conn: &Connection, run: NewAnalysisRun<'_>, now: i64) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO analysis_runs (kind, params, report, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            run.kind,
            run.params.to_string(),
            run.report.to_string(),
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;
    use serde_json::json;

    /// A store without a processor, with customers and order days written directly.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.process = false;
        let store = Store::open(config).unwrap();
        (dir, store)
    }

    fn raw(store: &Store) -> Connection {
        conn::open(&store.data_dir().join("state.db"), Durability::Normal).unwrap()
    }

    fn add_customer(conn: &Connection, id: i64, merged_into: Option<i64>) {
        conn.execute(
            "INSERT INTO customers (id, created_at, merged_into) VALUES (?1, 0, ?2)",
            params![id, merged_into],
        )
        .unwrap();
    }

    fn add_day(conn: &Connection, customer: i64, day: i64, revenue: f64, orders: i64) {
        conn.execute(
            "INSERT INTO revenue_days (customer_id, day, revenue, orders) VALUES (?1, ?2, ?3, ?4)",
            params![customer, day, revenue, orders],
        )
        .unwrap();
    }

    fn traits_of(conn: &Connection, customer: i64) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT key, value FROM traits WHERE customer_id = ?1 ORDER BY key")
            .unwrap();
        stmt.query_map([customer], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn pending(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT customer_id FROM segment_pending ORDER BY customer_id")
            .unwrap();
        let ids = stmt.query_map([], |r| r.get(0)).unwrap();
        let out = ids.collect::<Result<_, _>>().unwrap();
        conn.execute("DELETE FROM segment_pending", []).unwrap();
        out
    }

    #[test]
    fn order_stats_sum_the_window_and_skip_merged_customers() {
        let (_dir, store) = store();
        let conn = raw(&store);
        for id in 1..=4 {
            add_customer(&conn, id, None);
        }
        add_customer(&conn, 5, Some(1));
        // Window of 30 days ending on day 1000: days 971..=1000.
        add_day(&conn, 1, 1000, 100.0, 1);
        add_day(&conn, 1, 990, 50.5, 2);
        add_day(&conn, 1, 970, 999.0, 9); // one day too old
        add_day(&conn, 2, 971, 10.0, 1); // first day of the window
        add_day(&conn, 3, 1001, 10.0, 1); // after the analysis date
        add_day(&conn, 4, 900, 10.0, 1);
        add_day(&conn, 5, 995, 10.0, 1); // merged away: never counted on its own

        let stats = store.derived().order_stats(1000, 30).unwrap();
        assert_eq!(
            stats,
            vec![
                OrderStats {
                    customer_id: 1,
                    last_order_day: 1000,
                    orders: 3,
                    revenue: 150.5
                },
                OrderStats {
                    customer_id: 2,
                    last_order_day: 971,
                    orders: 1,
                    revenue: 10.0
                },
            ]
        );
        assert!(store.derived().order_stats(1000, 0).unwrap().len() == 1);
    }

    fn values(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn replacing_traits_writes_changes_clears_the_uncovered_and_queues_them() {
        let (_dir, store) = store();
        let conn = raw(&store);
        for id in 1..=3 {
            add_customer(&conn, id, None);
        }
        add_customer(&conn, 4, Some(1));
        conn.execute(
            "INSERT INTO traits (customer_id, key, value, updated_at) VALUES (1, 'city', '上海', 5)",
            [],
        )
        .unwrap();
        let keys = ["rfm_score", "rfm_segment", "rfm_recency"];
        let derived = store.derived();

        let first = vec![
            (
                1,
                values(json!({"rfm_score": "545", "rfm_segment": "Champions", "rfm_recency": 5})),
            ),
            (
                2,
                values(json!({"rfm_score": "111", "rfm_segment": "Lost", "rfm_recency": 1})),
            ),
            (4, values(json!({"rfm_score": "333"}))),
        ];
        let params = json!({"window_days": 365});
        let report = json!({"customers": 2});
        let summary = derived
            .replace_traits(
                &keys,
                &first,
                Some(NewAnalysisRun {
                    kind: "rfm",
                    params: &params,
                    report: &report,
                }),
            )
            .unwrap();
        assert_eq!(
            (
                summary.written,
                summary.changed,
                summary.cleared,
                summary.skipped
            ),
            (2, 2, 0, 1)
        );
        assert!(summary.run_id.is_some());
        assert_eq!(
            traits_of(&conn, 1),
            vec![
                ("city".to_string(), "上海".to_string()),
                ("rfm_recency".to_string(), "5".to_string()),
                ("rfm_score".to_string(), "545".to_string()),
                ("rfm_segment".to_string(), "Champions".to_string()),
            ]
        );
        assert!(
            traits_of(&conn, 4).is_empty(),
            "merged customers get nothing"
        );
        assert_eq!(pending(&conn), vec![1, 2]);

        // Second run: 1 unchanged, 2 no longer ordered, 3 is new, and keys outside the set are
        // never touched.
        let second = vec![
            (
                1,
                values(
                    json!({"rfm_score": "545", "rfm_segment": "Champions", "rfm_recency": 5,
                              "city": "北京"}),
                ),
            ),
            (
                3,
                values(json!({"rfm_score": "311", "rfm_segment": "About to Sleep"})),
            ),
        ];
        let summary = derived.replace_traits(&keys, &second, None).unwrap();
        assert_eq!(
            (
                summary.written,
                summary.changed,
                summary.cleared,
                summary.run_id
            ),
            (2, 2, 1, None)
        );
        assert_eq!(traits_of(&conn, 1)[0], ("city".into(), "上海".into()));
        assert!(traits_of(&conn, 2).is_empty());
        assert_eq!(traits_of(&conn, 3).len(), 2);
        assert_eq!(pending(&conn), vec![2, 3]);

        // A customer whose map lacks one of the keys loses just that key.
        let third = vec![
            (1, values(json!({"rfm_score": "545", "rfm_recency": 5}))),
            (
                3,
                values(json!({"rfm_score": "311", "rfm_segment": "About to Sleep"})),
            ),
        ];
        derived.replace_traits(&keys, &third, None).unwrap();
        assert_eq!(traits_of(&conn, 1).len(), 3);
        assert_eq!(pending(&conn), vec![1]);
    }

    #[test]
    fn analysis_runs_round_trip_and_the_latest_wins() {
        let (_dir, store) = store();
        let derived = store.derived();
        assert_eq!(derived.latest_analysis("rfm").unwrap(), None);
        let params = json!({"k": 5});
        for n in [1, 2] {
            let report = json!({"n": n, "名": "报告"});
            derived
                .save_analysis(NewAnalysisRun {
                    kind: "rfm",
                    params: &params,
                    report: &report,
                })
                .unwrap();
        }
        let other = json!({"n": 3});
        derived
            .save_analysis(NewAnalysisRun {
                kind: "other",
                params: &params,
                report: &other,
            })
            .unwrap();
        let latest = derived.latest_analysis("rfm").unwrap().unwrap();
        assert_eq!(latest.kind, "rfm");
        assert_eq!(latest.params, params);
        assert_eq!(latest.report, json!({"n": 2, "名": "报告"}));
        assert!(latest.created_at.ends_with('Z'), "{}", latest.created_at);
    }
}
