//! Time comes from a [`Clock`] so windows and timers are testable without sleeping.

use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The wall clock, moved ahead by an offset that only grows: what a server started for
/// end-to-end tests runs on (`cohort serve --test-clock`), so that a test can jump a journey's
/// day-long delay while requests, processing and timers keep running in real time.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_micros: AtomicI64,
}

impl ShiftedClock {
    /// A clock already `offset` ahead of the wall clock (a negative offset counts as none).
    pub fn ahead_by(offset: chrono::Duration) -> ShiftedClock {
        ShiftedClock {
            offset_micros: AtomicI64::new(offset.num_microseconds().unwrap_or(0).max(0)),
        }
    }

    /// Moves the clock ahead by `by` and returns the new time. Time never goes back, so
    /// a negative `by` moves nothing.
    pub fn advance(&self, by: chrono::Duration) -> DateTime<Utc> {
        let micros = by.num_microseconds().unwrap_or(i64::MAX).max(0);
        let before = self.offset_micros.fetch_add(micros, Ordering::AcqRel);
        Utc::now() + chrono::Duration::microseconds(before.saturating_add(micros))
    }

    /// How far ahead of the wall clock this clock is.
    pub fn offset(&self) -> chrono::Duration {
        chrono::Duration::microseconds(self.offset_micros.load(Ordering::Acquire))
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(chrono::Duration::hours(24));
        assert_eq!(clock.now(), start + chrono::Duration::hours(24));
    }

    #[test]
    fn a_shifted_clock_runs_ahead_of_the_wall_clock_and_never_back() {
        let clock = ShiftedClock::default();
        let before = Utc::now();
        let moved = clock.advance(chrono::Duration::hours(24));
        assert!(moved >= before + chrono::Duration::hours(24));
        assert!(clock.now() >= moved);
        clock.advance(chrono::Duration::hours(-48));
        assert_eq!(clock.offset(), chrono::Duration::hours(24));
    }
}
