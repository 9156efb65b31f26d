//! Delivering messages to a running Cohort server through its public Segment-compatible API.
//!
//! Messages go to `POST {base_url}/v1/batch` as `{"batch": [...], "sentAt": "..."}`, authenticated
//! the way Segment libraries do it: HTTP Basic with the write key as user name and an empty
//! password. Using the real route (rather than writing to the store directly) means a demo load
//! exercises decoding, validation, identity resolution and everything else a customer's traffic
//! would.
//!
//! # Ordering
//! Batches are cut from the message list in order and handed to workers in order, so with
//! `concurrency == 1` the server receives messages exactly in list order. With more workers,
//! batches in flight at the same time may land in any order (and a retried batch lands after
//! its successors). That is acceptable for Segment data: every message carries its own
//! `timestamp`, which is what profiles and timelines are ordered by. Use `concurrency: 1` when
//! arrival order itself matters, e.g. to watch identities merge step by step.
//!
//! # Failures
//! `429` and `5xx` answers, and transport errors (connection refused or reset, timeouts), are
//! retried up to [`MAX_RETRIES`] times with exponential backoff, honouring a `Retry-After`
//! header given in seconds. Any other non-2xx answer (`400`, `401`, `413`, …) is not going to
//! get better by retrying, so it stops the whole send with [`SendError::Rejected`] carrying the
//! server's `{"code", "message"}` body. Batches that were already accepted stay accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;
use tokio::task::JoinSet;

/// Retries after the first attempt of one batch, for retryable failures.
pub const MAX_RETRIES: u32 = 10;

/// Stays under Segment's 500 KB batch limit with room for the envelope.
const MAX_BATCH_BYTES: usize = 450 * 1024;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// A server asking for a longer pause than this is more likely misconfigured than busy.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Server root, e.g. `http://127.0.0.1:8080`; `/v1/batch` is appended.
    pub base_url: String,
    pub write_key: String,
    /// Messages per request; batches are also cut at ~450 KB whatever this says.
    pub batch_size: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            base_url: "http://127.0.0.1:8080".into(),
            write_key: String::new(),
            batch_size: 100,
            concurrency: 4,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendSummary {
    /// Messages the server accepted.
    pub sent: usize,
    /// Requests that succeeded.
    pub batches: usize,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("invalid send options: {0}")]
    InvalidOptions(String),
    #[error("could not encode message {index} as JSON: {source}")]
    Encode {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("server rejected batch {batch} with HTTP {status} ({code}): {message}")]
    Rejected {
        /// Zero-based batch number.
        batch: usize,
        status: u16,
        /// The `code` field of the server's error body, or `http_<status>` when it had none.
        code: String,
        message: String,
    },
    #[error("batch {batch} still failing after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        batch: usize,
        attempts: u32,
        last: String,
    },
    #[error("a sender task failed: {0}")]
    Task(String),
}

/// Sends `messages` in batches, returning once every batch is accepted or one has failed for
/// good. Must run inside a Tokio runtime.
pub async fn send(messages: Vec<Value>, opts: &SendOptions) -> Result<SendSummary, SendError> {
    let started = Instant::now();
    if opts.batch_size == 0 {
        return Err(SendError::InvalidOptions(
            "batch_size must be at least 1".into(),
        ));
    }
    if opts.concurrency == 0 {
        return Err(SendError::InvalidOptions(
            "concurrency must be at least 1".into(),
        ));
    }
    let base = opts.base_url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(SendError::InvalidOptions(format!(
            "base_url must start with http:// or https://, got {:?}",
            opts.base_url
        )));
    }

    let total = messages.len();
    let batches = cut_batches(messages, opts.batch_size)?;
    let bar = if opts.progress {
        progress_bar(total as u64)
    } else {
        ProgressBar::hidden()
    };
    if batches.is_empty() {
        bar.finish_and_clear();
        return Ok(SendSummary {
            sent: 0,
            batches: 0,
            elapsed: started.elapsed(),
        });
    }

    let client = http_client()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(SendError::Client)?;
    let shared = Arc::new(Shared {
        client,
        url: format!("{base}/v1/batch"),
        write_key: opts.write_key.clone(),
        batch_count: batches.len(),
        batches,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        bar: bar.clone(),
    });

    let mut workers = JoinSet::new();
    for _ in 0..opts.concurrency.min(shared.batch_count) {
        workers.spawn(worker(Arc::clone(&shared)));
    }
    let mut sent = 0;
    let mut done = 0;
    // Report the earliest failing batch: it is the one a user re-running from a checkpoint
    // would care about, and it does not depend on scheduling.
    let mut failure: Option<(usize, SendError)> = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(report) => {
                sent += report.sent;
                done += report.batches;
                if let Some((batch, err)) = report.failure
                    && failure.as_ref().is_none_or(|(b, _)| batch < *b)
                {
                    failure = Some((batch, err));
                }
            }
            Err(e) => {
                shared.stop.store(true, Ordering::SeqCst);
                if failure.is_none() {
                    failure = Some((usize::MAX, SendError::Task(e.to_string())));
                }
            }
        }
    }
    if let Some((_, err)) = failure {
        bar.abandon();
        return Err(err);
    }
    bar.finish();
    Ok(SendSummary {
        sent,
        batches: done,
        elapsed: started.elapsed(),
    })
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} messages ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

struct Batch {
    /// The messages' JSON joined with commas, ready to drop between `[` and `]`. Kept as text so
    /// each retry can stamp a fresh `sentAt` without re-serialising.
    json: String,
    count: usize,
}

fn cut_batches(messages: Vec<Value>, batch_size: usize) -> Result<Vec<Batch>, SendError> {
    let mut batches = Vec::new();
    let mut current = Batch {
        json: String::new(),
        count: 0,
    };
    for (index, message) in messages.into_iter().enumerate() {
        let text = serde_json::to_string(&message)
            .map_err(|source| SendError::Encode { index, source })?;
        if current.count > 0
            && (current.count >= batch_size
                || current.json.len() + 1 + text.len() > MAX_BATCH_BYTES)
        {
            batches.push(std::mem::replace(
                &mut current,
                Batch {
                    json: String::new(),
                    count: 0,
                },
            ));
        }
        if current.count > 0 {
            current.json.push(',');
        }
        current.json.push_str(&text);
        current.count += 1;
    }
    if current.count > 0 {
        batches.push(current);
    }
    Ok(batches)
}

struct Shared {
    client: reqwest::Client,
    url: String,
    write_key: String,
    batches: Vec<Batch>,
    batch_count: usize,
    /// Next batch to hand out; taking them in order keeps arrival close to list order.
    next: AtomicUsize,
    /// Set once a batch failed for good, so the other workers stop picking up new work.
    stop: AtomicBool,
    bar: ProgressBar,
}

#[derive(Default)]
struct WorkerReport {
    sent: usize,
    batches: usize,
    failure: Option<(usize, SendError)>,
}

async fn worker(shared: Arc<Shared>) -> WorkerReport {
    let mut report = WorkerReport::default();
    while !shared.stop.load(Ordering::SeqCst) {
        let index = shared.next.fetch_add(1, Ordering::SeqCst);
        let Some(batch) = shared.batches.get(index) else {
            break;
        };
        match post_with_retries(&shared, index, batch).await {
            Ok(Outcome::Accepted) => {
                report.sent += batch.count;
                report.batches += 1;
                shared.bar.inc(batch.count as u64);
            }
            Ok(Outcome::Abandoned) => break,
            Err(err) => {
                shared.stop.store(true, Ordering::SeqCst);
                report.failure = Some((index, err));
                break;
            }
        }
    }
    report
}

enum Outcome {
    Accepted,
    /// Another batch failed for good while this one was waiting to retry.
    Abandoned,
}

async fn post_with_retries(
    shared: &Shared,
    index: usize,
    batch: &Batch,
) -> Result<Outcome, SendError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let sent_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = format!("{{\"batch\":[{}],\"sentAt\":\"{sent_at}\"}}", batch.json);
        let result = shared
            .client
            .post(&shared.url)
            .basic_auth(&shared.write_key, None::<&str>)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let (last, retry_after) = match result {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Ok(Outcome::Accepted);
                }
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                let text = response.text().await.unwrap_or_default();
                let (code, message) = error_body(status, &text);
                if !retryable(status) {
                    return Err(SendError::Rejected {
                        batch: index,
                        status: status.as_u16(),
                        code,
                        message,
                    });
                }
                (
                    format!("HTTP {} ({code}): {message}", status.as_u16()),
                    retry_after,
                )
            }
            Err(e) => (e.to_string(), None),
        };
        if attempts > MAX_RETRIES {
            return Err(SendError::RetriesExhausted {
                batch: index,
                attempts,
                last,
            });
        }
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(Outcome::Abandoned);
        }
        tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(attempts, index))).await;
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Exponential backoff with a small per-batch offset so that workers that failed together do
/// not all come back in the same millisecond.
fn backoff(attempt: u32, batch: usize) -> Duration {
    let exp = FIRST_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    exp.min(MAX_BACKOFF) + Duration::from_millis((batch as u64 * 37) % 100)
}

/// Reads Cohort's `{"code", "message"}` error body, falling back to the raw text for proxies
/// and other servers that answer in their own format.
fn error_body(status: StatusCode, text: &str) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let code = field("code").unwrap_or_else(|| format!("http_{}", status.as_u16()));
    let message = field("message").unwrap_or_else(|| {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no response body")
                .to_string()
        } else {
            trimmed.chars().take(300).collect()
        }
    });
    (code, message)
}

/// A reqwest client builder with TLS ready: reqwest is built without a default TLS provider in
/// this workspace (the journeys' channels choose `ring`), so the provider is installed for the
/// process first. Every HTTP client Cohort's tools build starts here.
pub fn http_client() -> reqwest::ClientBuilder {
    // Err: a provider is already installed (by this or the channels), and that one is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batches_respect_count_and_order() {
        let msgs: Vec<Value> = (0..250).map(|i| json!({"type": "track", "n": i})).collect();
        let batches = cut_batches(msgs, 100).unwrap();
        assert_eq!(
            batches.iter().map(|b| b.count).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let first: Value = serde_json::from_str(&format!("[{}]", batches[1].json)).unwrap();
        assert_eq!(first[0]["n"], 100);
    }

    #[test]
    fn batches_respect_byte_limit() {
        let big = "x".repeat(100 * 1024);
        let msgs: Vec<Value> = (0..10).map(|_| json!({"blob": big})).collect();
        let batches = cut_batches(msgs, 100).unwrap();
        assert!(batches.len() >= 3);
        assert!(batches.iter().all(|b| b.json.len() <= MAX_BATCH_BYTES));
        assert_eq!(batches.iter().map(|b| b.count).sum::<usize>(), 10);
    }

    #[test]
    fn error_bodies_parse() {
        let (code, message) = error_body(
            StatusCode::UNAUTHORIZED,
            r#"{"code":"invalid_write_key","message":"unknown write key"}"#,
        );
        assert_eq!(code, "invalid_write_key");
        assert_eq!(message, "unknown write key");
        let (code, message) = error_body(StatusCode::BAD_GATEWAY, "");
        assert_eq!(code, "http_502");
        assert_eq!(message, "Bad Gateway");
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert!(backoff(2, 0) > backoff(1, 0));
        assert!(backoff(30, 5) <= MAX_BACKOFF + Duration::from_millis(100));
    }
}
