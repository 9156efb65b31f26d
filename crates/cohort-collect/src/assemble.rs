//! The one ingest assembly: messages in, a [`Submission`] and its rejections out.
//!
//! The HTTP routes, `cohort import` and the replay of failed events all shape messages through
//! an [`Assembly`], so a message is checked, normalised and kept (or refused, with its reason)
//! the same way whichever way it came in.
//!
//! ```
//! use cohort_collect::{Assembly, Policy};
//! use serde_json::json;
//! let policy = Policy::default();
//! let mut assembly = Assembly::new(7, &policy, chrono::Utc::now());
//! assembly.add(json!({"type": "track", "userId": "u1", "event": "Signed Up"}), None);
//! assembly.add(json!({"type": "track", "userId": "u1"}), Some("line 2"));
//! let (submission, refused) = assembly.finish();
//! assert_eq!(submission.accepted.len(), 1);
//! assert_eq!(submission.failed.len(), 1);
//! assert!(submission.failed[0].reason.starts_with("line 2: "));
//! assert_eq!(refused[0].0, 1, "the index of the refused message");
//! ```

use crate::{Policy, Prepared, Rejection, prepare};
use chrono::{DateTime, Utc};
use cohort_core::{NewFailedEvent, Submission};
use serde_json::Value;

/// The most of a refused message or request body kept in the failed-events store.
pub const MAX_KEPT_PAYLOAD: usize = 64 * 1024;

/// Text kept for a failed event: cut at [`MAX_KEPT_PAYLOAD`] on a character boundary; true
/// when it was cut (a cut payload cannot be replayed).
pub fn kept_payload(mut text: String) -> (String, bool) {
    if text.len() <= MAX_KEPT_PAYLOAD {
        return (text, false);
    }
    let mut cut = MAX_KEPT_PAYLOAD;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    (text, true)
}

/// A refused request's body as a failed event of `source_id`.
pub fn refused_request(source_id: i64, code: &str, reason: &str, body: &[u8]) -> NewFailedEvent {
    let kept = &body[..body.len().min(MAX_KEPT_PAYLOAD)];
    NewFailedEvent {
        source_id: Some(source_id),
        code: code.to_string(),
        reason: reason.to_string(),
        payload: String::from_utf8_lossy(kept).into_owned(),
        truncated: kept.len() < body.len(),
    }
}

/// Messages of one source being shaped into a submission. See the module documentation.
pub struct Assembly<'p> {
    policy: &'p Policy,
    submission: Submission,
    refused: Vec<(usize, Rejection)>,
    /// Index of the next message added since the last [`Assembly::take`].
    next: usize,
}

impl<'p> Assembly<'p> {
    pub fn new(source_id: i64, policy: &'p Policy, received_at: DateTime<Utc>) -> Self {
        Self {
            policy,
            submission: Submission {
                source_id,
                received_at,
                ..Submission::default()
            },
            refused: Vec::new(),
            next: 0,
        }
    }

    /// Shapes one message: accepted into the submission, or refused and kept as a failed event.
    /// `at` says where the message was ("line 12") and prefixes the reason of a refusal.
    pub fn add(&mut self, raw: Value, at: Option<&str>) {
        let index = self.next;
        self.next += 1;
        let received_at = self.submission.received_at;
        match prepare(raw, received_at, self.policy).and_then(inbox_body) {
            Ok(accepted) => self.submission.accepted.push(accepted),
            Err(rejection) => {
                let reason = match at {
                    Some(at) => format!("{at}: {}", rejection.message),
                    None => rejection.message.clone(),
                };
                self.keep_failed(rejection.code, reason, rejection.payload.clone());
                self.refused.push((index, rejection));
            }
        }
    }

    /// Keeps something that could not be read as a message at all (an unreadable row).
    pub fn add_unreadable(&mut self, code: &str, reason: String, payload: String) {
        self.next += 1;
        self.keep_failed(code, reason, payload);
    }

    fn keep_failed(&mut self, code: &str, reason: String, payload: String) {
        let (payload, truncated) = kept_payload(payload);
        self.submission.failed.push(NewFailedEvent {
            source_id: Some(self.submission.source_id),
            code: code.to_string(),
            reason,
            payload,
            truncated,
        });
    }

    /// Messages accepted or refused since the last [`Assembly::take`].
    pub fn pending(&self) -> usize {
        self.submission.accepted.len() + self.submission.failed.len()
    }

    /// Sets the receive time of what is added from now on (a long import takes it per chunk).
    pub fn set_received_at(&mut self, received_at: DateTime<Utc>) {
        self.submission.received_at = received_at;
    }

    /// The submission so far and its refusals, leaving the assembly empty for more messages of
    /// the same source.
    pub fn take(&mut self) -> (Submission, Vec<(usize, Rejection)>) {
        let next = Submission {
            source_id: self.submission.source_id,
            received_at: self.submission.received_at,
            ..Submission::default()
        };
        self.next = 0;
        (
            std::mem::replace(&mut self.submission, next),
            std::mem::take(&mut self.refused),
        )
    }

    pub fn finish(mut self) -> (Submission, Vec<(usize, Rejection)>) {
        self.take()
    }
}

/// A prepared message as the inbox keeps it: (message ID, JSON text).
fn inbox_body(p: Prepared) -> Result<(String, String), Rejection> {
    // `to_string` writes into a byte buffer; `Value`'s `Display` goes through `fmt::Write` and
    // took 1.9× the instructions for a typical message.
    match serde_json::to_string(&Value::Object(p.message)) {
        Ok(body) => Ok((p.message_id, body)),
        // A JSON value always serialises; were that ever to fail, it is refused visibly.
        Err(e) => Err(Rejection {
            code: "invalid_message",
            message: format!("the message cannot be stored as JSON: {e}"),
            payload: String::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_payloads_are_cut_on_a_char_boundary() {
        let (text, cut) = kept_payload("é".repeat(MAX_KEPT_PAYLOAD));
        assert!(cut);
        assert!(text.len() <= MAX_KEPT_PAYLOAD);
        assert_eq!(kept_payload("short".into()), ("short".to_string(), false));
    }

    #[test]
    fn hostile_times_and_identifiers_are_kept_as_failed_events_with_their_reason() {
        let policy = Policy::default();
        let received_at = chrono::DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut assembly = Assembly::new(3, &policy, received_at);
        let future = serde_json::json!({"type": "track", "event": "E", "userId": "u",
            "timestamp": "2099-01-01T00:00:00Z"});
        assembly.add(future.clone(), Some("line 1"));
        let long_id = serde_json::json!({"type": "identify", "userId": "u".repeat(1000)});
        assembly.add(long_id, Some("line 2"));
        let (submission, refused) = assembly.finish();
        assert!(submission.accepted.is_empty());
        let failed: Vec<(&str, &str)> = submission
            .failed
            .iter()
            .map(|f| (f.code.as_str(), f.reason.as_str()))
            .collect();
        assert_eq!(failed[0].0, "timestamp_out_of_range");
        assert!(
            failed[0]
                .1
                .starts_with("line 1: \"timestamp\" 2099-01-01T00:00:00.000Z is outside"),
            "{}",
            failed[0].1
        );
        assert_eq!(
            failed[1],
            (
                "field_too_long",
                "line 2: \"userId\" is 1000 bytes; at most 256 are accepted"
            )
        );
        assert_eq!(submission.failed[0].payload, future.to_string());
        assert_eq!(refused.len(), 2);
    }

    #[test]
    fn take_starts_a_new_chunk_of_the_same_source() {
        let policy = Policy::default();
        let mut assembly = Assembly::new(3, &policy, Utc::now());
        assembly.add(serde_json::json!({"type": "identify", "userId": "u"}), None);
        let (first, _) = assembly.take();
        assert_eq!(first.accepted.len(), 1);
        assert_eq!(assembly.pending(), 0);
        assembly.add_unreadable("invalid_json", "line 3: not JSON".into(), "{".into());
        let (second, refused) = assembly.finish();
        assert_eq!((second.source_id, second.failed.len()), (3, 1));
        assert!(refused.is_empty(), "an unreadable row has no message index");
    }
}
