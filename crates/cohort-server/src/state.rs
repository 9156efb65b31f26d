use crate::sources::SourceCache;
use cohort_collect::Limits;
use cohort_core::{Clock, SystemClock};
use cohort_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub store: Store,
    pub sources: SourceCache,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
    pub clock: Arc<dyn Clock>,
    pub analytics: Option<Arc<crate::analytics::Analytics>>,
    pub admin_keys: VerifiedKeys,
}

/// Admin keys verified recently, by hash: the admin API's hot paths (profile lookups) then skip a
/// store read per request. Entries expire quickly so a revoked key stops working within seconds.
#[derive(Default)]
pub(crate) struct VerifiedKeys {
    verified: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl VerifiedKeys {
    const TTL: std::time::Duration = std::time::Duration::from_secs(10);
    /// Distinct keys remembered at most; beyond it the map starts over.
    const CAPACITY: usize = 1024;

    pub(crate) fn is_fresh(&self, hash: &str) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(hash)
            .is_some_and(|at| at.elapsed() < Self::TTL)
    }

    pub(crate) fn remember(&self, hash: String) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= Self::CAPACITY {
            verified.clear();
        }
        verified.insert(hash, std::time::Instant::now());
    }
}

impl AppState {
    pub fn new(
        store: Store,
        limits: Limits,
        metrics: PrometheusHandle,
        analytics: Option<Arc<crate::analytics::Analytics>>,
    ) -> Self {
        let sources = SourceCache::new(
            store.clone(),
            limits,
            Arc::new(store.config().identity.clone()),
        );
        AppState(Arc::new(Inner {
            store,
            sources,
            limits,
            metrics,
            clock: Arc::new(SystemClock),
            analytics,
            admin_keys: VerifiedKeys::default(),
        }))
    }

    /// State for tools that run beside (or without) a server on the same data directory.
    pub fn offline(store: Store, limits: Limits) -> Self {
        Self::new(store, limits, crate::metrics_setup::install(), None)
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }
}
