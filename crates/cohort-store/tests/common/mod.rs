//! A store with its processor running, as `cohort-engine` runs it, for tests that process.

use cohort_core::Inbox;
use cohort_profile::{Processor, ProcessorConfig};
use cohort_store::{Store, StoreConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A [`Store`] (reached through `Deref`) whose processor runs on a thread until this is dropped.
pub struct Processing {
    store: Store,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Opens the store and starts its processor.
pub fn open_processing(config: StoreConfig) -> Processing {
    let store = Store::open(config).expect("open the store");
    let profiles = store
        .profile_store()
        .expect("open the profile store")
        .expect("this process may apply the inbox");
    let config = store.config();
    let mut processor = Processor::new(
        profiles,
        store.inbox().clone() as Arc<dyn Inbox>,
        ProcessorConfig {
            identity: config.identity.clone(),
            profile: config.profile.clone(),
            batch: config.apply_batch,
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || processor.run(&flag));
    Processing {
        store,
        stop,
        thread: Some(thread),
    }
}

impl std::ops::Deref for Processing {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Drop for Processing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
