//! The processor loop on a thread of its own: `cohort_profile::Processor` over the store's
//! `ProfileStore`, reading the store's inbox.

use crate::EngineError;
use cohort_core::Inbox;
use cohort_profile::{Processor, ProcessorConfig};
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
