//! The processor loop on a thread of its own: `cohort_profile::Processor` over the store's
//! `ProfileStore`, reading the store's inbox.

use crate::EngineError;
use cohort_core::Inbox;
use cohort_profile::{Processor, ProcessorConfig, SourceTrust};
use cohort_store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// The running processor thread; [`ProcessorThread::stop`], or dropping it, ends it.
pub(crate) struct ProcessorThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProcessorThread {
    /// Starts the `cohort-processor` thread when this process may apply the inbox (`None` when
    /// another process does). A thread that cannot start is logged and leaves the engine
    /// running unready, as `/readyz` then tells.
    pub(crate) fn start(store: &Store) -> Result<Option<Self>, EngineError> {
        let Some(profiles) = store.profile_store()? else {
            return Ok(None);
        };
        let config = store.config();
        let inbox: Arc<dyn Inbox> = store.inbox().clone();
        let mut processor = Processor::new(
            profiles,
            inbox,
            ProcessorConfig {
                identity: config.identity.clone(),
                profile: config.profile.clone(),
                batch: config.apply_batch,
                trust: Arc::new(CatalogTrust::new(store.clone())),
            },
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // The processor owns the profile store: when the thread ends, however it ends, the
        // store is dropped and `Store::processing` turns false.
        match std::thread::Builder::new()
            .name("cohort-processor".into())
            .spawn(move || processor.run(&flag))
        {
            Ok(thread) => Ok(Some(Self {
                stop,
                thread: Some(thread),
            })),
            Err(e) => {
                tracing::error!("cannot start the processor: {e}");
                Ok(None)
            }
        }
    }

    /// Stops the loop after the batch it is applying and waits for the thread to end.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for ProcessorThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the processor thread panicked");
        }
    }
}

/// The sources' trust as the catalogue records it, read at most every few seconds per source:
/// the processor asks for every message, and a changed setting may take that long to apply.
struct CatalogTrust {
    store: Store,
    known: std::sync::Mutex<std::collections::HashMap<i64, (bool, std::time::Instant)>>,
}

impl CatalogTrust {
    const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(5);

    fn new(store: Store) -> Self {
        Self {
            store,
            known: std::sync::Mutex::default(),
        }
    }
}

impl SourceTrust for CatalogTrust {
    fn restricts_traits(&self, source_id: i64) -> bool {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((restricts, at)) = known.get(&source_id)
            && at.elapsed() < Self::FRESH_FOR
        {
            return *restricts;
        }
        let restricts = match self.store.catalog().source(source_id) {
            Ok(Some(source)) => source.restricts_trait_claims(),
            // A deleted source's messages are still applied; nothing says they were trusted.
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(source_id, error = %e, "cannot read a source's trust; restricting its traits");
                true
            }
        };
        known.insert(source_id, (restricts, std::time::Instant::now()));
        restricts
    }
}
