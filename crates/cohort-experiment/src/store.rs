//! What flags and experiments need from storage: trait [`DefinitionStore`], versioned JSON
//! documents by kind and key, and trait [`StickyBucketStore`], the variations units were
//! given, so that they keep them when an experiment's weights change.
//!
//! Every save makes a new version and keeps the old ones ([`DefinitionStore::history`]); a
//! deletion is a version too, so a key's history survives it. A save can name the version it
//! was made from ([`Expected`]), and is refused when somebody else saved in between, so two
//! editors never overwrite each other silently. [`DefinitionStore::save_all`] saves several
//! documents in one commit: all or none.
//!
//! The embedded implementation is SQLite (`cohort-store`); [`MemoryDefinitions`] keeps them in
//! memory. Both pass `definition_store_conformance_suite!`
//! (feature `conformance`).
//!
//! ```
//! use cohort_experiment::store::{DefinitionKind, DefinitionStore, Expected, MemoryDefinitions};
//! let store = MemoryDefinitions::default();
//! let now = chrono::Utc::now();
//! let v1 = store
//!     .save(DefinitionKind::Flag, "dark-mode", Some(&serde_json::json!({"on": true})), Expected::New, now)
//!     .unwrap();
//! assert_eq!(v1.version, 1);
//! ```

use crate::definition::{Catalogue, Experiment, Flag, Holdout, Metric};
use crate::evaluate::StickyBucketDoc;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DefinitionKind {
    Flag,
    Experiment,
    Metric,
    /// Settings of the whole experimentation program (the global holdout).
    Setting,
}

impl DefinitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionKind::Flag => "flag",
            DefinitionKind::Experiment => "experiment",
            DefinitionKind::Metric => "metric",
            DefinitionKind::Setting => "setting",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Flag, Self::Experiment, Self::Metric, Self::Setting]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// The key of the global holdout among the settings.
pub const HOLDOUT_SETTING: &str = "holdout";

/// One version of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub kind: DefinitionKind,
    pub key: String,
    /// 1 for the first save of a key, one more for each save or deletion after it.
    pub version: u64,
    pub saved_at: DateTime<Utc>,
    /// `None` for a deletion.
    pub document: Option<Value>,
}

/// Which version a save was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever is there.
    Any,
    /// The key must not exist (never saved, or deleted last).
    New,
    /// The key must be at this version.
    Version(u64),
}

/// One document to save (`Some`) or delete (`None`) in [`DefinitionStore::save_all`].
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: DefinitionKind,
    pub key: String,
    pub document: Option<Value>,
    pub expected: Expected,
}

/// Why a store did not save or answer.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionStoreError {
    /// The key is not at the version the save was made from.
    #[error("{kind} {key:?} is at version {current}, not {expected}")]
    Conflict {
        kind: &'static str,
        key: String,
        expected: String,
        current: u64,
    },
    #[error("a stored {kind} {key:?} cannot be read: {reason}")]
    Unreadable {
        kind: &'static str,
        key: String,
        reason: String,
    },
    #[error("definition storage: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Versioned definitions.
pub trait DefinitionStore: Send + Sync {
    /// Saves every change in one commit, or none of them when one conflicts; the new versions
    /// in the order of the changes.
    fn save_all(
        &self,
        changes: &[Change],
        at: DateTime<Utc>,
    ) -> Result<Vec<Stored>, DefinitionStoreError>;

    /// The latest version of each key of `kind` that is not deleted, by key.
    fn current(&self, kind: DefinitionKind) -> Result<Vec<Stored>, DefinitionStoreError>;

    /// Every version of a key, oldest first, deletions included.
    fn history(&self, kind: DefinitionKind, key: &str)
    -> Result<Vec<Stored>, DefinitionStoreError>;

    /// A number that grows with every save, for caches of what is built from the definitions.
    fn revision(&self) -> Result<u64, DefinitionStoreError>;

    /// The latest version of a key, unless it is deleted.
    fn get(&self, kind: DefinitionKind, key: &str) -> Result<Option<Stored>, DefinitionStoreError> {
        Ok(self
            .history(kind, key)?
            .pop()
            .filter(|s| s.document.is_some()))
    }

    /// Saves (`Some`) or deletes (`None`) one document.
    fn save(
        &self,
        kind: DefinitionKind,
        key: &str,
        document: Option<&Value>,
        expected: Expected,
        at: DateTime<Utc>,
    ) -> Result<Stored, DefinitionStoreError> {
        let change = Change {
            kind,
            key: key.to_string(),
            document: document.cloned(),
            expected,
        };
        let mut saved = self.save_all(std::slice::from_ref(&change), at)?;
        saved.pop().ok_or_else(|| {
            DefinitionStoreError::Storage("the store saved nothing and said nothing".into())
        })
    }
}

/// Whether `change` may be saved over `latest` (the key's latest version, if any), as every
/// implementation decides it.
pub fn check_expected(
    change: &Change,
    latest: Option<&Stored>,
) -> Result<(), DefinitionStoreError> {
    let current = latest.map_or(0, |s| s.version);
    let exists = latest.is_some_and(|s| s.document.is_some());
    let ok = match change.expected {
        Expected::Any => true,
        Expected::New => !exists,
        Expected::Version(v) => exists && v == current,
    };
    if ok {
        Ok(())
    } else {
        Err(DefinitionStoreError::Conflict {
            kind: change.kind.as_str(),
            key: change.key.clone(),
            expected: match change.expected {
                Expected::New => "absent".into(),
                Expected::Version(v) => v.to_string(),
                Expected::Any => "any".into(),
            },
            current,
        })
    }
}

/// Definitions in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct MemoryDefinitions {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    versions: BTreeMap<(DefinitionKind, String), Vec<Stored>>,
    revision: u64,
}

impl DefinitionStore for MemoryDefinitions {
    fn save_all(
        &self,
        changes: &[Change],
        at: DateTime<Utc>,
    ) -> Result<Vec<Stored>, DefinitionStoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Checked against what this batch has saved so far, as one transaction would.
        let mut pending: BTreeMap<(DefinitionKind, String), Stored> = BTreeMap::new();
        let mut saved = Vec::with_capacity(changes.len());
        for change in changes {
            let id = (change.kind, change.key.clone());
            let latest = pending
                .get(&id)
                .cloned()
                .or_else(|| inner.versions.get(&id).and_then(|v| v.last().cloned()));
            check_expected(change, latest.as_ref())?;
            let stored = Stored {
                kind: change.kind,
                key: change.key.clone(),
                version: latest.map_or(0, |s| s.version) + 1,
                saved_at: at,
                document: change.document.clone(),
            };
            pending.insert(id, stored.clone());
            saved.push(stored);
        }
        for stored in &saved {
            inner
                .versions
                .entry((stored.kind, stored.key.clone()))
                .or_default()
                .push(stored.clone());
            inner.revision += 1;
        }
        Ok(saved)
    }

    fn current(&self, kind: DefinitionKind) -> Result<Vec<Stored>, DefinitionStoreError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(inner
            .versions
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .filter_map(|(_, versions)| versions.last())
            .filter(|s| s.document.is_some())
            .cloned()
            .collect())
    }

    fn history(
        &self,
        kind: DefinitionKind,
        key: &str,
    ) -> Result<Vec<Stored>, DefinitionStoreError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(inner
            .versions
            .get(&(kind, key.to_string()))
            .cloned()
            .unwrap_or_default())
    }

    fn revision(&self) -> Result<u64, DefinitionStoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revision)
    }
}

/// Units' sticky assignments, one [`StickyBucketDoc`] per `"{attribute}||{value}"`.
pub trait StickyBucketStore: Send + Sync {
    /// The documents of the keys that have one.
    fn load_assignments(
        &self,
        keys: &[String],
    ) -> Result<BTreeMap<String, StickyBucketDoc>, DefinitionStoreError>;

    /// Replaces each document under its key, in one commit.
    fn save_assignments(&self, docs: &[StickyBucketDoc]) -> Result<(), DefinitionStoreError>;
}

/// The key a unit's assignments under one attribute are stored by.
pub fn sticky_key(doc: &StickyBucketDoc) -> String {
    format!("{}||{}", doc.attribute_name, doc.attribute_value)
}

/// Sticky assignments in memory.
#[derive(Debug, Default)]
pub struct MemoryStickyBuckets {
    docs: Mutex<BTreeMap<String, StickyBucketDoc>>,
}

impl StickyBucketStore for MemoryStickyBuckets {
    fn load_assignments(
        &self,
        keys: &[String],
    ) -> Result<BTreeMap<String, StickyBucketDoc>, DefinitionStoreError> {
        let docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        Ok(keys
            .iter()
            .filter_map(|k| docs.get(k).map(|d| (k.clone(), d.clone())))
            .collect())
    }

    fn save_assignments(&self, new: &[StickyBucketDoc]) -> Result<(), DefinitionStoreError> {
        let mut docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        for doc in new {
            docs.insert(sticky_key(doc), doc.clone());
        }
        Ok(())
    }
}

/// A stored document read as its type.
pub fn decode<T: serde::de::DeserializeOwned>(stored: &Stored) -> Result<T, DefinitionStoreError> {
    let unreadable = |reason: String| DefinitionStoreError::Unreadable {
        kind: stored.kind.as_str(),
        key: stored.key.clone(),
        reason,
    };
    let document = stored
        .document
        .clone()
        .ok_or_else(|| unreadable("it is deleted".into()))?;
    serde_json::from_value(document).map_err(|e| unreadable(e.to_string()))
}

fn decode_all<T: serde::de::DeserializeOwned>(
    store: &dyn DefinitionStore,
    kind: DefinitionKind,
) -> Result<BTreeMap<String, T>, DefinitionStoreError> {
    store
        .current(kind)?
        .iter()
        .map(|s| Ok((s.key.clone(), decode(s)?)))
        .collect()
}

/// Everything defined, with the segments that exist, for checking a definition or building
/// the payload.
pub fn load_catalogue(
    store: &dyn DefinitionStore,
    segments: BTreeSet<String>,
) -> Result<Catalogue, DefinitionStoreError> {
    Ok(Catalogue {
        flags: decode_all::<Flag>(store, DefinitionKind::Flag)?,
        experiments: decode_all::<Experiment>(store, DefinitionKind::Experiment)?,
        metrics: decode_all::<Metric>(store, DefinitionKind::Metric)?,
        segments,
    })
}

/// The global holdout, when one is set.
pub fn load_holdout(store: &dyn DefinitionStore) -> Result<Option<Holdout>, DefinitionStoreError> {
    store
        .get(DefinitionKind::Setting, HOLDOUT_SETTING)?
        .map(|s| decode(&s))
        .transpose()
}

#[cfg(test)]
mod tests {
    fn with_store(test: impl crate::conformance::DefinitionStoreTest) {
        test.run(&crate::store::MemoryDefinitions::default());
    }
    crate::definition_store_conformance_suite!(with_store);

    fn with_sticky(test: impl crate::conformance::StickyBucketStoreTest) {
        test.run(&crate::store::MemoryStickyBuckets::default());
    }
    crate::sticky_bucket_store_conformance_suite!(with_sticky);
}
