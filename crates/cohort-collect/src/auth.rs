//! Where a Segment client puts its write key: `Authorization: Basic` (key as user name, analytics.js,
//! RudderStack), `Authorization: Bearer`, the `X-Write-Key` header, `?writeKey=` in the query string,
//! or `writeKey` in the JSON body (Segment's Python client 2.x).

use base64::Engine;
use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
