//! Write keys to sources, with each source's compiled policy (normalisation, tracking plan), cached.
//! Entries expire after a few seconds so changes made by another process (`cohort admin`) apply
//! without a restart; changes made through this server's API drop the entry at once.

use cohort_collect::normalise::NormaliseRules;
use cohort_collect::tracking_plan::{TrackingPlan, TrackingPlanSpec};
use cohort_collect::{Limits, Policy};
use cohort_identity::IdentityRules;
use cohort_store::{Source, Store, StoreError, hash_key};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(5);

/// An authenticated source and how its messages are checked.
pub struct SourceEntry {
    pub source: Source,
    pub policy: Policy,
}

pub(crate) struct SourceCache {
    store: Store,
    limits: Limits,
    identity: Arc<IdentityRules>,
    by_key_hash: RwLock<HashMap<String, (Arc<SourceEntry>, Instant)>>,
}

impl SourceCache {
    pub(crate) fn new(store: Store, limits: Limits, identity: Arc<IdentityRules>) -> Self {
        Self {
            store,
            limits,
            identity,
            by_key_hash: RwLock::new(HashMap::new()),
        }
    }

    /// The source for a write key, or `None` when no enabled source has it.
    pub(crate) fn authenticate(
        &self,
        write_key: &str,
    ) -> Result<Option<Arc<SourceEntry>>, StoreError> {
        let hash = hash_key(write_key);
        if let Some((entry, at)) = self
            .by_key_hash
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            && at.elapsed() < TTL
        {
            return Ok(Some(entry.clone()));
        }
        let Some(source) = self.store.catalog().source_by_key(write_key)? else {
            self.by_key_hash
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&hash);
            return Ok(None);
        };
        let entry = Arc::new(self.entry_for(source));
        self.by_key_hash
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, (entry.clone(), Instant::now()));
        Ok(Some(entry))
    }

    /// The policy of a source by ID (for replays), uncached.
    pub(crate) fn entry(&self, source_id: i64) -> Result<Option<SourceEntry>, StoreError> {
        Ok(self
            .store
            .catalog()
            .source(source_id)?
            .map(|s| self.entry_for(s)))
    }

    pub(crate) fn invalidate(&self) {
        self.by_key_hash
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn entry_for(&self, source: Source) -> SourceEntry {
        SourceEntry {
            policy: policy_for(&source, self.limits, self.identity.clone()),
            source,
        }
    }
}

/// The policy a source's settings describe. Settings that do not parse fall back to defaults with an
/// error in the log: a broken plan must not stop ingest (the API refuses to store one anyway).
pub fn policy_for(source: &Source, limits: Limits, identity: Arc<IdentityRules>) -> Policy {
    let normalise = serde_json::from_value::<NormaliseRules>(source.settings.clone())
        .unwrap_or_else(|e| {
            tracing::warn!(source = source.id, error = %e, "invalid normalisation settings; using defaults");
            NormaliseRules::default()
        });
    let tracking_plan = source.tracking_plan.clone().and_then(|spec| {
        serde_json::from_value::<TrackingPlanSpec>(spec)
            .map_err(|e| e.to_string())
            .and_then(|spec| TrackingPlan::compile(spec).map_err(|e| e.to_string()))
            .map_err(|e| {
                tracing::error!(source = source.id, error = %e, "stored tracking plan does not compile; ignoring it")
            })
            .ok()
            .map(Arc::new)
    });
    Policy {
        limits,
        normalise,
        tracking_plan,
        identity,
    }
}
