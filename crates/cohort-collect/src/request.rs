//! From what a client sent to a [`Submission`]: the request's bytes decoded within limits, the
//! write key found wherever the client put it, the batch expanded into messages, and the one
//! [`Assembly`] every way in shares (HTTP, `cohort import`, the replay of failed events).
//!
//! # Decoding
//!
//! Sizes are measured after decompression (a gzip bomb stops at the limit, it is never inflated in
//! full), bodies must be UTF-8 JSON, and nesting is bounded before parsing so a hostile body cannot
//! exhaust the stack.
//!
//! # The write key
//!
//! A Segment client puts it in `Authorization: Basic` (key as user name, analytics.js,
//! RudderStack), `Authorization: Bearer`, the `X-Write-Key` header, `?writeKey=` in the query
//! string, or `writeKey` in the JSON body (Segment's Python client 2.x).
//!
//! # Routes and batches
//!
//! A single-message route (`/v1/track`, …) carries one message whose type the route names; a batch
//! route carries `{"batch": [...]}`, whose batch-level `context` is merged into each message.
//!
//! # Assembly
//!
//! Each message is checked, normalised and kept (or refused, with its reason) by
//! [`crate::validate::prepare`], the same way whichever way it came in.
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

use crate::{Policy, Prepared, Rejection, RequestError, prepare};
use base64::Engine;
use chrono::{DateTime, Utc};
use cohort_core::{MessageType, NewFailedEvent, Submission};
use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Read;

/// Ingest limits. Defaults follow Segment's HTTP Tracking API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest serialised message, in bytes.
    pub max_event_bytes: usize,
    /// Largest request body after decompression, in bytes.
    pub max_request_bytes: usize,
    /// Most messages in one batch.
    pub max_batch_events: usize,
    /// Deepest nesting of arrays and objects in a body.
    pub max_depth: usize,
    /// How far after its receive time an event may be dated, in seconds: the top of the
    /// event-time window (see [`crate::validate`]). A day covers time zones mislabelled as UTC
    /// and clocks that drift; later times are corrupt clocks or attempts to pin an event in the
    /// future, where it would skew every "last seen" and time-window segment.
    pub max_future_skew_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 32 * 1024,
            max_request_bytes: 500 * 1024,
            max_batch_events: 2500,
            max_depth: 64,
            max_future_skew_secs: 24 * 60 * 60,
        }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Decompresses (when gzip) and parses a request body.
///
/// `content_encoding` is the request's `Content-Encoding` header. A body that starts with the gzip
/// magic bytes is decompressed even without the header: some clients forget it.
pub fn decode_body(
    raw: &[u8],
    content_encoding: Option<&str>,
    limits: &Limits,
) -> Result<Value, RequestError> {
    let declared_gzip = match content_encoding.map(|e| e.trim().to_ascii_lowercase()) {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(other) => {
            return Err(RequestError::new(
                "unsupported_encoding",
                format!("Content-Encoding {other:?} is not supported; send identity or gzip"),
            ));
        }
    };
    let body = if declared_gzip || raw.starts_with(&GZIP_MAGIC) {
        inflate(raw, limits.max_request_bytes)?
    } else {
        if raw.len() > limits.max_request_bytes {
            return Err(too_large(limits));
        }
        raw.to_vec()
    };
    parse_json(&body, limits)
}

fn too_large(limits: &Limits) -> RequestError {
    RequestError::new(
        "request_too_large",
        format!(
            "request body exceeds {} bytes after decompression",
            limits.max_request_bytes
        ),
    )
}

fn inflate(raw: &[u8], max: usize) -> Result<Vec<u8>, RequestError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(max + 1));
    // Reading one byte past the limit tells "exactly at the limit" from "over it" without inflating more.
    let read = MultiGzDecoder::new(raw)
        .take(max as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Ok(_) if out.len() > max => Err(RequestError::new(
            "request_too_large",
            format!("request body exceeds {max} bytes after decompression"),
        )),
        Ok(_) => Ok(out),
        Err(e) => Err(RequestError::new(
            "invalid_gzip",
            format!("body is not valid gzip: {e}"),
        )),
    }
}

/// Parses UTF-8 JSON after checking the nesting depth without recursion.
pub fn parse_json(body: &[u8], limits: &Limits) -> Result<Value, RequestError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        RequestError::new(
            "invalid_utf8",
            format!("body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    check_depth(text, limits.max_depth)?;
    serde_json::from_str(text)
        .map_err(|e| RequestError::new("invalid_json", format!("body is not valid JSON: {e}")))
}

fn check_depth(text: &str, max: usize) -> Result<(), RequestError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(RequestError::new(
                        "too_deeply_nested",
                        format!("body nests objects and arrays deeper than {max} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The write key found in the request's headers or query, if any.
pub fn write_key_from_request(
    authorization: Option<&str>,
    x_write_key: Option<&str>,
    query: Option<&str>,
) -> Option<String> {
    if let Some(auth) = authorization.map(str::trim) {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Some(rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some(user) = decoded.as_deref().map(|d| d.split(':').next().unwrap_or(d))
                && !user.is_empty()
            {
                return Some(user.to_string());
            }
        }
    }
    if let Some(key) = x_write_key.map(str::trim).filter(|k| !k.is_empty()) {
        return Some(key.to_string());
    }
    query.and_then(|q| {
        q.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "writeKey" && !value.is_empty()).then(|| percent_decode(value))
        })
    })
}

/// The `writeKey` field of a JSON body.
pub fn write_key_from_body(body: &Value) -> Option<String> {
    body.get("writeKey")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What an ingest route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/track`, `/v1/t`, … : one message whose type the route names.
    Single(MessageType),
    /// `/v1/batch`, `/v1/b`, `/v1/import`: `{"batch": [...]}`.
    Batch,
}

impl Route {
    /// The route for the last path segment after `/v1/`.
    pub fn from_segment(segment: &str) -> Option<Route> {
        Some(match segment {
            "track" | "t" => Route::Single(MessageType::Track),
            "identify" | "i" => Route::Single(MessageType::Identify),
            "page" | "p" => Route::Single(MessageType::Page),
            "screen" | "s" => Route::Single(MessageType::Screen),
            "group" | "g" => Route::Single(MessageType::Group),
            "alias" | "a" => Route::Single(MessageType::Alias),
            "batch" | "b" | "import" => Route::Batch,
            _ => return None,
        })
    }
}

/// Splits a request body into its messages, each with the batch-level `context`, `integrations` and
/// `sentAt` merged in (the message's own values win).
pub fn expand(route: Route, body: Value, limits: &Limits) -> Result<Vec<Value>, RequestError> {
    let Value::Object(mut body) = body else {
        return Err(RequestError::new(
            "invalid_body",
            "body must be a JSON object",
        ));
    };
    body.remove("writeKey");
    match route {
        Route::Single(kind) => {
            body.insert("type".into(), Value::String(kind.as_str().into()));
            Ok(vec![Value::Object(body)])
        }
        Route::Batch => {
            let batch = match body.remove("batch") {
                Some(Value::Array(items)) => items,
                Some(_) => {
                    return Err(RequestError::new(
                        "invalid_batch",
                        "\"batch\" must be an array of messages",
                    ));
                }
                None => {
                    return Err(RequestError::new(
                        "invalid_batch",
                        "body has no \"batch\" array",
                    ));
                }
            };
            if batch.len() > limits.max_batch_events {
                return Err(RequestError::new(
                    "batch_too_large",
                    format!(
                        "batch holds {} messages; at most {} are accepted per request",
                        batch.len(),
                        limits.max_batch_events
                    ),
                ));
            }
            let shared_context = body.get("context").and_then(Value::as_object).cloned();
            let shared_integrations = body.get("integrations").and_then(Value::as_object).cloned();
            let shared_sent_at = body.get("sentAt").cloned();
            Ok(batch
                .into_iter()
                .map(|item| match item {
                    Value::Object(mut msg) => {
                        msg.remove("writeKey");
                        merge_under(&mut msg, "context", shared_context.as_ref());
                        merge_under(&mut msg, "integrations", shared_integrations.as_ref());
                        if let Some(sent_at) = &shared_sent_at
                            && !msg.contains_key("sentAt")
                        {
                            msg.insert("sentAt".into(), sent_at.clone());
                        }
                        Value::Object(msg)
                    }
                    other => other,
                })
                .collect())
        }
    }
}

/// Deep-merges `shared` under `msg[key]`; values already in the message win.
fn merge_under(msg: &mut Map<String, Value>, key: &str, shared: Option<&Map<String, Value>>) {
    let Some(shared) = shared else { return };
    match msg.get_mut(key) {
        Some(Value::Object(own)) => deep_fill(own, shared),
        Some(_) => {}
        None => {
            msg.insert(key.into(), Value::Object(shared.clone()));
        }
    }
}

fn deep_fill(own: &mut Map<String, Value>, shared: &Map<String, Value>) {
    for (k, v) in shared {
        match (own.get_mut(k), v) {
            (None, _) => {
                own.insert(k.clone(), v.clone());
            }
            (Some(Value::Object(a)), Value::Object(b)) => deep_fill(a, b),
            _ => {}
        }
    }
}

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

/// A web origin as browsers send it in the `Origin` header (`https://shop.example`,
/// `http://127.0.0.1:8080`), normalised to lower case without a default port or trailing slash,
/// or why `text` is not one.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .ok_or_else(|| format!("origin {text:?} has no scheme: write it as https://host[:port]"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "origin {text:?}: the scheme must be http or https, not {scheme:?}"
        ));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '*']) {
        return Err(format!(
            "origin {text:?} must be a scheme and a host with an optional port, nothing else"
        ));
    }
    let invalid_port = || format!("origin {text:?} has an invalid port");
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        // An IPv6 address: `[::1]` or `[::1]:3000`.
        let (address, after) = inner.split_once(']').ok_or_else(invalid_port)?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':').ok_or_else(invalid_port)?),
        };
        (&rest[..address.len() + 2], port)
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(invalid_port());
    }
    let port = match (scheme, port) {
        ("http", Some("80")) | ("https", Some("443")) | (_, None) => String::new(),
        (_, Some(port)) => format!(":{port}"),
    };
    if host.is_empty() {
        return Err(format!("origin {text:?} has no host"));
    }
    Ok(format!("{scheme}://{host}{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use serde_json::json;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_bodies_decode_with_or_without_the_header() {
        let body = gzip(br#"{"a":1}"#);
        let limits = Limits::default();
        assert_eq!(decode_body(&body, Some("gzip"), &limits).unwrap()["a"], 1);
        assert_eq!(decode_body(&body, None, &limits).unwrap()["a"], 1);
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let err = decode_body(&bomb, Some("gzip"), &Limits::default()).unwrap_err();
        assert_eq!(err.code, "request_too_large");
    }

    #[test]
    fn bad_bodies_get_distinct_codes() {
        let limits = Limits::default();
        let code = |b: &[u8]| decode_body(b, None, &limits).unwrap_err().code;
        assert_eq!(code(b"{not json"), "invalid_json");
        assert_eq!(code(b"{\"a\":\"\xff\xfe\"}"), "invalid_utf8");
        assert_eq!(code(&vec![b'['; 10_000]), "too_deeply_nested");
        assert_eq!(code(&vec![b' '; 600 * 1024]), "request_too_large");
        let err = decode_body(b"{}", Some("br"), &limits).unwrap_err();
        assert_eq!(err.code, "unsupported_encoding");
        assert_eq!(
            decode_body(b"\x1f\x8bxx", None, &limits).unwrap_err().code,
            "invalid_gzip"
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let text = format!(r#"{{"a":"{}\"[["}}"#, "[".repeat(100));
        assert!(decode_body(text.as_bytes(), None, &limits).is_ok());
    }

    #[test]
    fn every_auth_form_yields_the_key() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("wk_1:")
        );
        assert_eq!(
            write_key_from_request(Some(&basic), None, None).as_deref(),
            Some("wk_1")
        );
        assert_eq!(
            write_key_from_request(Some("Bearer wk_2"), None, None).as_deref(),
            Some("wk_2")
        );
        assert_eq!(
            write_key_from_request(None, Some("wk_3"), None).as_deref(),
            Some("wk_3")
        );
        assert_eq!(
            write_key_from_request(None, None, Some("a=1&writeKey=wk%5F4")).as_deref(),
            Some("wk_4")
        );
        assert_eq!(
            write_key_from_body(&json!({"writeKey": "wk_5"})).as_deref(),
            Some("wk_5")
        );
    }

    #[test]
    fn malformed_credentials_yield_nothing() {
        assert_eq!(write_key_from_request(Some("Basic !!!"), None, None), None);
        assert_eq!(
            write_key_from_request(Some("Bearer "), None, Some("writeKey=")),
            None
        );
        assert_eq!(write_key_from_request(None, None, Some("x=%")), None);
        assert_eq!(write_key_from_body(&json!({"writeKey": 5})), None);
    }

    #[test]
    fn short_routes_match_long_ones() {
        for (short, long) in [
            ("t", "track"),
            ("i", "identify"),
            ("p", "page"),
            ("s", "screen"),
            ("g", "group"),
            ("a", "alias"),
            ("b", "batch"),
        ] {
            assert_eq!(Route::from_segment(short), Route::from_segment(long));
        }
        assert_eq!(Route::from_segment("import"), Some(Route::Batch));
        assert_eq!(Route::from_segment("tracks"), None);
    }

    #[test]
    fn batch_context_is_merged_under_each_message() {
        let body = json!({
            "writeKey": "k",
            "context": {"library": {"name": "analytics-python"}, "ip": "1.2.3.4"},
            "integrations": {"All": true},
            "sentAt": "2026-01-01T00:00:10Z",
            "batch": [
                {"type": "track", "event": "A", "context": {"ip": "5.6.7.8"}},
                {"type": "track", "event": "B", "sentAt": "2026-01-01T00:00:00Z"},
                "not an object"
            ]
        });
        let msgs = expand(Route::Batch, body, &Limits::default()).unwrap();
        assert_eq!(msgs[0]["context"]["ip"], "5.6.7.8");
        assert_eq!(msgs[0]["context"]["library"]["name"], "analytics-python");
        assert_eq!(msgs[0]["integrations"]["All"], true);
        assert_eq!(msgs[0]["sentAt"], "2026-01-01T00:00:10Z");
        assert_eq!(msgs[1]["sentAt"], "2026-01-01T00:00:00Z");
        assert_eq!(msgs[2], json!("not an object"));
        assert!(msgs[0].get("writeKey").is_none());
    }

    #[test]
    fn single_routes_set_the_type_and_batches_are_bounded() {
        let msgs = expand(
            Route::Single(MessageType::Page),
            json!({"type": "track"}),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(msgs[0]["type"], "page");
        let limits = Limits {
            max_batch_events: 2,
            ..Limits::default()
        };
        let err = expand(Route::Batch, json!({"batch": [{}, {}, {}]}), &limits).unwrap_err();
        assert_eq!(err.code, "batch_too_large");
        assert_eq!(
            expand(Route::Batch, json!({}), &limits).unwrap_err().code,
            "invalid_batch"
        );
        assert_eq!(
            expand(Route::Batch, json!([1]), &limits).unwrap_err().code,
            "invalid_body"
        );
    }

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

    #[test]
    fn origins_are_normalised_and_anything_else_is_refused_with_the_reason() {
        for (text, origin) in [
            ("https://Shop.Example", "https://shop.example"),
            ("https://shop.example/", "https://shop.example"),
            ("https://shop.example:443", "https://shop.example"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://localhost:80", "http://localhost"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("http://[::1]", "http://[::1]"),
        ] {
            assert_eq!(parse_origin(text).as_deref(), Ok(origin), "{text}");
        }
        for (text, why) in [
            ("shop.example", "no scheme"),
            ("ftp://shop.example", "must be http or https"),
            ("https://shop.example/path", "nothing else"),
            ("https://*.example", "nothing else"),
            ("https://", "nothing else"),
            ("https://shop.example:99999", "invalid port"),
            ("https://shop.example:x", "invalid port"),
        ] {
            let error = parse_origin(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
