//! A store with its pipeline running as `cohort-engine` runs it (the processor, and real-time
//! segments trailing it where a test asks for them), for the tests that process.

use cohort_core::Inbox;
use cohort_profile::{Processor, ProcessorConfig};
use cohort_segment::RealtimeSegments;
use cohort_store::{Store, StoreConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A [`Store`] (reached through `Deref`) whose pipeline runs on threads until this is dropped.
pub struct Processing {
    store: Store,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Opens the store and starts its processor.
#[allow(dead_code)] // not every test file that includes this module uses both openers
pub fn open_processing(config: StoreConfig) -> Processing {
    start(config, false)
}

/// Opens the store and starts its processor and, trailing it, real-time segments.
#[allow(dead_code)]
pub fn open_with_segments(config: StoreConfig) -> Processing {
    start(config, true)
}

fn start(config: StoreConfig, with_segments: bool) -> Processing {
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
            ..ProcessorConfig::default()
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    if with_segments {
        let mut segments = RealtimeSegments::new(
            store.membership_store().expect("open the membership store"),
            config.profile.clone(),
        );
        let (flag, inbox) = (stop.clone(), store.inbox().clone());
        threads.push(std::thread::spawn(move || {
            segments.run(|| inbox.acknowledged(), &flag)
        }));
    }
    let flag = stop.clone();
    threads.push(std::thread::spawn(move || processor.run(&flag)));
    Processing {
        store,
        stop,
        threads,
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
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
