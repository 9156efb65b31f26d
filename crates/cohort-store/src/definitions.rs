//! Flag, experiment and metric definitions in `state.db`: the SQLite [`DefinitionStore`], and
//! units' sticky assignments, the SQLite [`StickyBucketStore`].
//!
//! One row per version; the current document of a key is its row with the highest version,
//! unless that row is a deletion (`document IS NULL`). A batch of saves is one immediate
//! transaction, so its version checks and its writes see the same state.

use crate::time::{from_micros, to_micros};
use chrono::{DateTime, Utc};
use cohort_experiment::evaluate::StickyBucketDoc;
use cohort_experiment::store::{
    Change, DefinitionKind, DefinitionStore, DefinitionStoreError, StickyBucketStore, Stored,
    check_expected, sticky_key,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The SQLite definition store.
pub struct SqliteDefinitions {
    conn: Mutex<Connection>,
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> DefinitionStoreError {
    DefinitionStoreError::Storage(Box::new(e))
}

type Row = (String, String, i64, i64, Option<String>);

fn stored(row: Row) -> Result<Stored, DefinitionStoreError> {
    let (kind, key, version, saved_at, document) = row;
    let kind = DefinitionKind::parse(&kind).ok_or_else(|| DefinitionStoreError::Unreadable {
        kind: "definition",
        key: key.clone(),
        reason: format!("unknown kind {kind:?}"),
    })?;
    let document = document
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| DefinitionStoreError::Unreadable {
            kind: kind.as_str(),
            key: key.clone(),
            reason: e.to_string(),
        })?;
    Ok(Stored {
        kind,
        key,
        version: version as u64,
        saved_at: from_micros(saved_at),
        document,
    })
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

const COLUMNS: &str = "kind, key, version, saved_at, document FROM definitions";

fn latest(
    conn: &Connection,
    kind: DefinitionKind,
    key: &str,
) -> Result<Option<Stored>, DefinitionStoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} WHERE kind = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1"),
        params![kind.as_str(), key],
        read_row,
    )
    .optional()
    .map_err(storage)?
    .map(stored)
    .transpose()
}

impl SqliteDefinitions {
    pub(crate) fn new(conn: Connection) -> Self {
        Self {
            conn: Mutex::new(conn),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DefinitionStoreError>,
    ) -> Result<T, DefinitionStoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn)
    }
}

impl DefinitionStore for SqliteDefinitions {
    fn save_all(
        &self,
        changes: &[Change],
        at: DateTime<Utc>,
    ) -> Result<Vec<Stored>, DefinitionStoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(storage)?;
            let mut saved = Vec::with_capacity(changes.len());
            for change in changes {
                let before = latest(&tx, change.kind, &change.key)?;
                check_expected(change, before.as_ref())?;
                let version = before.map_or(0, |s| s.version) + 1;
                let text = change
                    .document
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(storage)?;
                tx.execute(
                    "INSERT INTO definitions (kind, key, version, saved_at, document)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        change.kind.as_str(),
                        change.key,
                        version as i64,
                        to_micros(at),
                        text
                    ],
                )
                .map_err(storage)?;
                saved.push(Stored {
                    kind: change.kind,
                    key: change.key.clone(),
                    version,
                    saved_at: from_micros(to_micros(at)),
                    document: change.document.clone(),
                });
            }
            tx.commit().map_err(storage)?;
            Ok(saved)
        })
    }

    fn current(&self, kind: DefinitionKind) -> Result<Vec<Stored>, DefinitionStoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} d WHERE kind = ?1 AND document IS NOT NULL
                     AND version = (SELECT MAX(version) FROM definitions
                                    WHERE kind = d.kind AND key = d.key)
                     ORDER BY key"
                ))
                .map_err(storage)?;
            let rows = stmt
                .query_map([kind.as_str()], read_row)
                .map_err(storage)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(storage)?;
            rows.into_iter().map(stored).collect()
        })
    }

    fn history(
        &self,
        kind: DefinitionKind,
        key: &str,
    ) -> Result<Vec<Stored>, DefinitionStoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} WHERE kind = ?1 AND key = ?2 ORDER BY version"
                ))
                .map_err(storage)?;
            let rows = stmt
                .query_map(params![kind.as_str(), key], read_row)
                .map_err(storage)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(storage)?;
            rows.into_iter().map(stored).collect()
        })
    }

    fn get(&self, kind: DefinitionKind, key: &str) -> Result<Option<Stored>, DefinitionStoreError> {
        self.with(|conn| Ok(latest(conn, kind, key)?.filter(|s| s.document.is_some())))
    }

    fn revision(&self) -> Result<u64, DefinitionStoreError> {
        self.with(|conn| {
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM definitions", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|id| id as u64)
            .map_err(storage)
        })
    }
}

impl StickyBucketStore for SqliteDefinitions {
    fn load_assignments(
        &self,
        keys: &[String],
    ) -> Result<BTreeMap<String, StickyBucketDoc>, DefinitionStoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT doc FROM sticky_buckets WHERE key = ?1")
                .map_err(storage)?;
            let mut docs = BTreeMap::new();
            for key in keys {
                let text: Option<String> = stmt
                    .query_row([key], |r| r.get(0))
                    .optional()
                    .map_err(storage)?;
                if let Some(text) = text {
                    let doc = serde_json::from_str(&text).map_err(|e| {
                        DefinitionStoreError::Unreadable {
                            kind: "sticky assignment",
                            key: key.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    docs.insert(key.clone(), doc);
                }
            }
            Ok(docs)
        })
    }

    fn save_assignments(&self, docs: &[StickyBucketDoc]) -> Result<(), DefinitionStoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(storage)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO sticky_buckets (key, doc) VALUES (?1, ?2)",
                    )
                    .map_err(storage)?;
                for doc in docs {
                    let text = serde_json::to_string(doc).map_err(storage)?;
                    stmt.execute(params![sticky_key(doc), text])
                        .map_err(storage)?;
                }
            }
            tx.commit().map_err(storage)
        })
    }
}
