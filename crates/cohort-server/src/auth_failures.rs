//! Per-address limits on failed authentication: an address whose requests were refused as
//! unauthenticated (a wrong write key or admin key) more than a set number of times in a minute
//! is answered `429 Too Many Requests` with `Retry-After` until its minute is over, before any
//! key is checked. Guessing keys then costs the guesser time, and a client stuck on a revoked key
//! cannot keep the key checks busy for everyone else.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures counted per address over one window.
pub(crate) struct AuthFailures {
    /// Failures allowed per window; 0 turns the limit off.
    allowed: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl AuthFailures {
    /// Addresses remembered at most; beyond it, windows that are over are forgotten, and if
    /// that is not enough the map starts over (a flood of addresses then loses its history,
    /// which errs towards answering).
    const CAPACITY: usize = 100_000;

    pub(crate) fn per_minute(allowed: u32) -> Self {
        Self {
            allowed,
            window: Duration::from_secs(60),
            seen: Mutex::default(),
        }
    }

    /// How long `address` must wait, when it has used up its failures.
    fn wait(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        if self.allowed == 0 {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let window = seen.get(&address)?;
        let ends = window.started + self.window;
        (window.failures >= self.allowed && now < ends).then(|| ends - now)
    }

    fn record(&self, address: IpAddr, now: Instant) {
        if self.allowed == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= Self::CAPACITY {
            seen.retain(|_, w| now < w.started + self.window);
            if seen.len() >= Self::CAPACITY {
                seen.clear();
            }
        }
        let window = seen.entry(address).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= window.started + self.window {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }
}

/// The middleware: refuses addresses over their limit, counts 401 answers.
pub(crate) async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let Some(address) = address else {
        return next.run(request).await;
    };
    let failures = &state.auth_failures;
    if let Some(wait) = failures.wait(address, Instant::now()) {
        metrics::counter!("cohort_auth_failure_limited_total").increment(1);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_auth_failures",
            format!(
                "too many requests from {address} failed authentication in the last minute; retry in {} s",
                wait.as_secs().max(1)
            ),
        );
        error.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(60));
        return error.into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        failures.record(address, Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_held_back_after_its_failures_until_the_minute_ends() {
        let limit = AuthFailures::per_minute(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.wait(a, start), None);
            limit.record(a, start);
        }
        let wait = limit.wait(a, start + Duration::from_secs(20)).unwrap();
        assert_eq!(wait, Duration::from_secs(40));
        assert_eq!(limit.wait(b, start), None, "other addresses are not held");
        assert_eq!(limit.wait(a, start + Duration::from_secs(60)), None);
        // A new window starts afresh.
        limit.record(a, start + Duration::from_secs(61));
        assert_eq!(limit.wait(a, start + Duration::from_secs(61)), None);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = AuthFailures::per_minute(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..100 {
            limit.record(a, now);
        }
        assert_eq!(limit.wait(a, now), None);
    }
}
