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
