//! What to do after an attempt: done, retry at a time, or dead-letter.
//!
//! Retries back off exponentially from [`RetryPolicy::first_delay`], doubling up to
//! [`RetryPolicy::max_delay`], each delay shortened by up to [`RetryPolicy::jitter`] of itself by
//! an amount derived from the effect key and the attempt, so that a burst of failures does not
//! come back at one instant, and the schedule is the same on every run (tests are exact). A
//! provider's `Retry-After` is honoured when it asks for longer (up to `max_delay`). After
//! [`RetryPolicy::max_attempts`] attempts a transient failure is dead-lettered.
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use cohort_journey::channel::Outcome;
//! use cohort_journey::channel::retry::{Decision, RetryPolicy};
//!
//! let policy = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
//! let now = Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap();
//! let busy = Outcome::Retry { after: None, reason: "503".into() };
//! // The first attempt failed: try again in 30 s; the third failed: in 2 min.
//! assert_eq!(policy.decide("k", 0, &busy, now), Decision::RetryAt(now + Duration::seconds(30)));
//! assert_eq!(policy.decide("k", 2, &busy, now), Decision::RetryAt(now + Duration::minutes(2)));
//! assert!(matches!(policy.decide("k", 7, &busy, now), Decision::DeadLetter { .. }));
//! let sent = Outcome::Sent { provider_id: "SM1".into() };
//! assert_eq!(policy.decide("k", 3, &sent, now), Decision::Done { status: "sent" });
//! ```

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use super::Outcome;

/// Backoff and the attempt limit for one channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt, in seconds.
    #[serde(with = "seconds")]
    pub first_delay: Duration,
    /// Longest delay between attempts, in seconds.
    #[serde(with = "seconds")]
    pub max_delay: Duration,
    /// Attempts in all, the first included, before a transient failure is dead-lettered.
    pub max_attempts: u32,
    /// Share of a delay (0 to 1) that jitter may take off it.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 30 s, 1 min, 2 min … up to an hour between attempts, eight attempts (about 64 min from
    /// the first to the last without jitter), up to 20 % jitter.
    fn default() -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::seconds(30),
            max_delay: Duration::hours(1),
            max_attempts: 8,
            jitter: 0.2,
        }
    }
}

/// What the channel's worker does with the effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Complete it with this status (`sent`, `failed`, `unsubscribed`, `dead_token`).
    Done { status: &'static str },
    /// Leave it in the outbox, not to be tried before this time.
    RetryAt(DateTime<Utc>),
    /// Give up: complete it as dead-lettered, with the last reason, for an operator to see and
    /// replay.
    DeadLetter { reason: String },
}

impl RetryPolicy {
    /// The decision after an attempt that ended in `outcome`, when `earlier_attempts` attempts
    /// failed before it (the outbox's `attempts`).
    pub fn decide(
        &self,
        key: &str,
        earlier_attempts: u32,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Decision {
        let Outcome::Retry { after, reason } = outcome else {
            return Decision::Done {
                status: outcome.status(),
            };
        };
        let attempts = earlier_attempts.saturating_add(1);
        if attempts >= self.max_attempts {
            return Decision::DeadLetter {
                reason: format!("{attempts} attempts; the last: {reason}"),
            };
        }
        let mut delay = self.backoff(key, earlier_attempts);
        if let Some(after) = after.and_then(|a| Duration::from_std(a).ok()) {
            delay = delay.max(after.min(self.max_delay));
        }
        Decision::RetryAt(now + delay)
    }

    /// The delay after attempt number `earlier_attempts + 1` failed.
    pub fn backoff(&self, key: &str, earlier_attempts: u32) -> Duration {
        let first = self.first_delay.num_milliseconds().max(0);
        let max = self.max_delay.num_milliseconds().max(first);
        let doubled = 1i64
            .checked_shl(earlier_attempts.min(62))
            .and_then(|factor| first.checked_mul(factor))
            .unwrap_or(max)
            .min(max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        // The fraction of the jitter taken off: from the key and the attempt, in [0, 1).
        let digest = Sha256::new()
            .chain_update(key.as_bytes())
            .chain_update(earlier_attempts.to_be_bytes())
            .finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        let fraction = (u64::from_be_bytes(head) >> 11) as f64 / (1u64 << 53) as f64;
        let off = (doubled as f64 * jitter * fraction) as i64;
        Duration::milliseconds(doubled - off)
    }
}

mod seconds {
    use chrono::Duration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.num_seconds())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let seconds = u32::deserialize(d)?;
        Ok(Duration::seconds(i64::from(seconds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
    }

    fn busy(after: Option<u64>) -> Outcome {
        Outcome::Retry {
            after: after.map(std::time::Duration::from_secs),
            reason: "503 Service Unavailable".into(),
        }
    }

    #[test]
    fn without_jitter_the_schedule_doubles_to_its_cap() {
        let policy = RetryPolicy {
            jitter: 0.0,
            max_attempts: 100,
            ..RetryPolicy::default()
        };
        let delays: Vec<i64> = (0..10)
            .map(|n| policy.backoff("k", n).num_seconds())
            .collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        // Far past any real attempt count, still the cap (no overflow).
        assert_eq!(policy.backoff("k", u32::MAX), Duration::hours(1));
    }

    #[test]
    fn jitter_is_bounded_exact_and_spreads_keys() {
        let policy = RetryPolicy::default();
        let plain = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut distinct = std::collections::BTreeSet::new();
        for customer in 0..200 {
            let key = format!("welcome:1:{customer}:sms");
            for attempt in 0..8 {
                let full = plain.backoff(&key, attempt).num_milliseconds();
                let jittered = policy.backoff(&key, attempt).num_milliseconds();
                assert!(jittered <= full && jittered as f64 >= full as f64 * 0.8);
                assert_eq!(jittered, policy.backoff(&key, attempt).num_milliseconds());
                if attempt == 0 {
                    distinct.insert(jittered);
                }
            }
        }
        // 200 keys failing at once come back spread over the 6 s window, not at one instant.
        assert!(distinct.len() > 150, "{}", distinct.len());
        assert!(distinct.iter().any(|&ms| ms < 26_000));
        assert!(distinct.iter().any(|&ms| ms > 28_000));
    }

    #[test]
    fn outcomes_decide_done_retry_or_dead_letter() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let done = |outcome: Outcome| policy.decide("k", 0, &outcome, now());
        assert_eq!(
            done(Outcome::Sent {
                provider_id: "x".into()
            }),
            Decision::Done { status: "sent" }
        );
        assert_eq!(
            done(Outcome::Failed {
                code: "21211".into(),
                message: "invalid To".into()
            }),
            Decision::Done { status: "failed" }
        );
        assert_eq!(
            done(Outcome::Unsubscribed {
                code: "21610".into(),
                message: String::new()
            }),
            Decision::Done {
                status: "unsubscribed"
            }
        );
        assert_eq!(
            done(Outcome::DeadToken {
                code: "UNREGISTERED".into(),
                message: String::new()
            }),
            Decision::Done {
                status: "dead_token"
            }
        );
        // Attempts 1 to 7 failing are retried; the 8th is the last.
        for earlier in 0..7 {
            assert!(matches!(
                policy.decide("k", earlier, &busy(None), now()),
                Decision::RetryAt(_)
            ));
        }
        match policy.decide("k", 7, &busy(None), now()) {
            Decision::DeadLetter { reason } => {
                assert_eq!(reason, "8 attempts; the last: 503 Service Unavailable")
            }
            other => panic!("{other:?}"),
        }
        // A success on the last attempt is still a success.
        assert_eq!(
            policy.decide(
                "k",
                7,
                &Outcome::Sent {
                    provider_id: "x".into()
                },
                now()
            ),
            Decision::Done { status: "sent" }
        );
    }

    #[test]
    fn retry_after_is_honoured_when_longer_up_to_the_cap() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let at = |after, earlier| match policy.decide("k", earlier, &busy(after), now()) {
            Decision::RetryAt(at) => (at - now()).num_seconds(),
            other => panic!("{other:?}"),
        };
        assert_eq!(at(Some(7), 0), 30, "shorter than the backoff");
        assert_eq!(at(Some(90), 0), 90);
        assert_eq!(at(Some(86_400), 0), 3600, "capped");
        assert_eq!(at(Some(5), 3), 240);
    }

    #[test]
    fn policies_read_from_configuration() {
        let policy: RetryPolicy =
            serde_json::from_str(r#"{"first_delay": 10, "max_attempts": 3}"#).unwrap();
        assert_eq!(policy.first_delay, Duration::seconds(10));
        assert_eq!(policy.max_delay, Duration::hours(1));
        assert_eq!(policy.max_attempts, 3);
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"first_delay": -1}"#).is_err());
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"tries": 3}"#).is_err());
    }
}
