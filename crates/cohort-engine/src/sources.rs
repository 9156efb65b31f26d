//! Write keys to sources, with each source's compiled policy (normalisation, tracking plan), cached.
//! Entries expire after a few seconds so changes made by another process (`cohort admin`) apply
//! without a restart; changes made through this server's API drop the entry at once.

use crate::EngineError;
use cohort_collect::normalise::NormaliseRules;
use cohort_collect::request::parse_origin;
use cohort_collect::tracking_plan::{PlanMode, TrackingPlan, TrackingPlanSpec};
use cohort_collect::{Limits, Policy, UnusablePlan};
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

impl SourceEntry {
    /// Refuses a request from a web origin the source does not allow. `origin` is the request's
    /// `Origin` header; requests without one (servers, apps, curl) are not browser requests and
    /// pass, since an origin list keeps other websites from using a public key, not clients
    /// that can send any header they like.
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), EngineError> {
        let (Some(allowed), Some(origin)) = (&self.source.allowed_origins, origin) else {
            return Ok(());
        };
        let normalised = parse_origin(origin).unwrap_or_else(|_| origin.to_string());
        if allowed.contains(&normalised) {
            return Ok(());
        }
        metrics::counter!("cohort_ingest_origin_refused_total").increment(1);
        Err(EngineError::Forbidden {
            code: "origin_not_allowed",
            message: format!(
                "the origin {origin} is not allowed to send to source {:?}; its allowed origins are {}",
                self.source.name,
                allowed.join(", ")
            ),
        })
    }
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

/// The policy a source's settings describe. Normalisation settings that do not parse fall back
/// to defaults with an error in the log; a stored tracking plan that cannot be applied is
/// reported in the policy ([`UnusablePlan`]), so that its messages are refused or flagged rather
/// than let through as if the plan were not there.
pub fn policy_for(source: &Source, limits: Limits, identity: Arc<IdentityRules>) -> Policy {
    let normalise = serde_json::from_value::<NormaliseRules>(source.settings.clone())
        .unwrap_or_else(|e| {
            tracing::warn!(source = source.id, error = %e, "invalid normalisation settings; using defaults");
            NormaliseRules::default()
        });
    let (tracking_plan, unusable_plan) = match tracking_plan_of(source) {
        Ok(plan) => (plan, None),
        Err(unusable) => {
            tracing::error!(source = source.id, error = %unusable.error, blocks = unusable.blocks, "the stored tracking plan cannot be applied");
            metrics::counter!("cohort_tracking_plans_unusable_total").increment(1);
            (None, Some(unusable))
        }
    };
    Policy {
        limits,
        normalise,
        tracking_plan,
        unusable_plan,
        identity,
    }
}

/// The compiled tracking plan of a source, if it has one.
pub fn tracking_plan_of(source: &Source) -> Result<Option<Arc<TrackingPlan>>, UnusablePlan> {
    let Some(stored) = source.tracking_plan.clone() else {
        return Ok(None);
    };
    let spec = serde_json::from_value::<TrackingPlanSpec>(stored).map_err(|e| UnusablePlan {
        error: format!("the stored plan does not read as a tracking plan: {e}"),
        blocks: true,
    })?;
    let blocks = [spec.mode, spec.unplanned].contains(&PlanMode::Block);
    let plan = TrackingPlan::compile(spec).map_err(|e| UnusablePlan {
        error: e.to_string(),
        blocks,
    })?;
    Ok(Some(Arc::new(plan)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_store::SourceKind;
    use serde_json::json;

    fn source_with_plan(plan: serde_json::Value) -> Source {
        Source {
            id: 3,
            name: "web".into(),
            key_prefix: "wk_".into(),
            created_at: "2026-12-03T00:00:00Z".into(),
            settings: json!({}),
            tracking_plan: Some(plan),
            disabled: false,
            kind: SourceKind::Server,
            trait_claims: false,
            allowed_origins: None,
        }
    }

    /// A plan stored before this version refused look-around, say.
    fn plan(mode: &str, unplanned: &str) -> serde_json::Value {
        json!({"mode": mode, "unplanned": unplanned, "events": {
            "Signed Up": {"properties": {"code": {"pattern": "^(?=a)\\w+$"}}}
        }})
    }

    #[test]
    fn a_stored_plan_that_no_longer_compiles_blocks_when_it_blocked_anything() {
        let identity = Arc::new(IdentityRules::default());
        for (stored, blocks) in [
            (plan("block", "allow"), true),
            (plan("flag", "block"), true),
            (plan("flag", "allow"), false),
            (json!({"mode": "sometimes"}), true),
        ] {
            let policy = policy_for(
                &source_with_plan(stored.clone()),
                Limits::default(),
                identity.clone(),
            );
            assert!(policy.tracking_plan.is_none(), "{stored}");
            let unusable = policy.unusable_plan.expect("reported as unusable");
            assert_eq!(unusable.blocks, blocks, "{stored}");
            assert!(!unusable.error.is_empty());
        }
        let good = json!({"mode": "block", "events": {"Signed Up": {"type": "object"}}});
        let policy = policy_for(&source_with_plan(good), Limits::default(), identity);
        assert!(policy.tracking_plan.is_some());
        assert!(policy.unusable_plan.is_none());
    }
}
