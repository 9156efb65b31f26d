//! Thread priorities: work that can wait yields the CPU to work that cannot.

/// Lowers the calling thread's CPU priority to nice 10. Background work (SQL
/// over millions of rows, segment re-checks) must not queue API requests behind
/// it on a small machine: at nice 10 a thread gets about a tenth of a normal
/// thread's share while both want a core, and all of the core when nothing else
/// does. Failure leaves the priority as it was and returns `false`.
pub fn yield_to_requests() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: on Linux, setpriority(PRIO_PROCESS, 0, n) sets the nice
        // value of the calling thread only; it takes no pointers.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_yielding_thread_runs_at_nice_ten_or_lower_priority() {
        let nice = std::thread::spawn(|| {
            yield_to_requests();
            // SAFETY: getpriority takes no pointers; 0 means the calling thread.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        })
        .join()
        .unwrap_or(0);
        // At least 10: a test run that is itself niced further keeps its own value.
        assert!(nice >= 10, "nice {nice}");
        // SAFETY: as above.
        let here = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert!(here < 10 || here == nice, "only the calling thread changes");
    }
}
