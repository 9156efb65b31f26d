//! Real-time segments on a thread of their own: `cohort_segment::RealtimeSegments` over the
//! store's `MembershipStore`, trailing the processor's acknowledged position.

use crate::EngineError;
use cohort_core::Inbox;
use cohort_segment::RealtimeSegments;
use cohort_store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// The running `cohort-segments` thread; dropping it stops it after the round in progress
/// (whose decisions are recorded whole or not at all) and waits for it.
pub(crate) struct RealtimeThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RealtimeThread {
    /// Starts real-time segments over `store`. Membership trails the processor, so start this
    /// only where the processor runs.
    pub(crate) fn start(store: &Store) -> Result<Self, EngineError> {
        let mut segments =
            RealtimeSegments::new(store.membership_store()?, store.config().profile.clone());
        let inbox = store.inbox().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cohort-segments".into())
            .spawn(move || {
                // Re-checks can trail by milliseconds; requests should not.
                cohort_core::priority::yield_to_requests();
                segments.run(|| inbox.acknowledged(), &stopped);
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the segment engine: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RealtimeThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the segment engine panicked");
        }
    }
}
