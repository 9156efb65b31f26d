//! From request bytes to a JSON value, within limits.
//!
//! Sizes are measured after decompression (a gzip bomb stops at the limit, it is never inflated in
//! full), bodies must be UTF-8 JSON, and nesting is bounded before parsing so a hostile body cannot
//! exhaust the stack.

use crate::RequestError;
use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
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
}
