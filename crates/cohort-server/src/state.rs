use crate::auth_failures::AuthFailures;
use cohort_engine::Engine;
use cohort_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The use cases every route calls.
    pub(crate) engine: Engine,
    /// Renders `/metrics`.
    pub(crate) metrics: PrometheusHandle,
    pub(crate) admin_keys: Arc<VerifiedKeys>,
    /// The hash of the operator's admin key (`--admin-key`, `COHORT_ADMIN_KEY`): held in memory
    /// only, so it is valid exactly while it is configured.
    pub(crate) operator_key: Option<String>,
    pub(crate) auth_failures: Arc<AuthFailures>,
    /// The public URL and the admin API's allowed web origins.
    pub(crate) browser: Arc<crate::cors::BrowserAccess>,
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
    pub fn new(engine: Engine, metrics: PrometheusHandle) -> Self {
        AppState {
            engine,
            metrics,
            admin_keys: Arc::default(),
            operator_key: None,
            auth_failures: Arc::new(AuthFailures::per_minute(0)),
            browser: Arc::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn store(&self) -> &Store {
        self.engine.store()
    }
}
