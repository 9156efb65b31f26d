//! Cross-origin access: websites call the collection routes from their own origin, so those
//! routes answer CORS preflights and put CORS headers on every response, errors included (a page
//! reads a 400 or a 429 only when it carries them). The admin API stays closed to browsers on
//! other origins unless the operator names them ([`BrowserAccess::admin_origins`]).
//!
//! A preflight carries no credentials, so it cannot tell which source a request is for: it is
//! allowed for every origin, and a source that limits its origins refuses the real request
//! with `403 origin_not_allowed` (`cohort_engine::SourceEntry::check_origin`), with these
//! headers, so the SDK can read why.

use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cohort_collect::request::parse_origin;

/// How browsers reach this server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserAccess {
    /// The URL browsers reach the server at (`https://cohort.example`, a path prefix allowed),
    /// which the SDK settings documents name as the place to send events. `None`: the `Host`
    /// the settings request came in on, over plain HTTP, which is right unless a proxy or TLS
    /// terminator stands in front.
    pub public_url: Option<PublicUrl>,
    /// Web origins whose pages may call the admin API (`/api/v1`), normalised. Empty: none.
    pub admin_origins: Vec<String>,
}

/// A checked public URL: its scheme and what follows `://`, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub scheme: String,
    /// Host, port and path prefix: `cohort.example`, `shop.example/collect`.
    pub authority_and_path: String,
}

impl PublicUrl {
    /// Parses `http(s)://host[:port][/path]`; anything else is refused with the reason.
    pub fn parse(text: &str) -> Result<PublicUrl, String> {
        let text = text.trim().trim_end_matches('/');
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("public URL {text:?} has no scheme (https://…)"))?;
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let origin = parse_origin(&format!("{scheme}://{authority}"))
            .map_err(|e| format!("public URL {text:?}: {e}"))?;
        if path.contains(['?', '#', ' ']) {
            return Err(format!(
                "public URL {text:?} may have a path but no query or fragment"
            ));
        }
        let host = origin
            .split_once("://")
            .map(|(_, host)| host.to_string())
            .unwrap_or_default();
        Ok(PublicUrl {
            scheme,
            authority_and_path: if path.is_empty() {
                host
            } else {
                format!("{host}/{path}")
            },
        })
    }
}

/// The request headers Segment's and RudderStack's browser SDKs send (RudderStack puts the
/// anonymous ID and the send time in headers of their own), plus the other write-key forms. A
/// preflight is answered with these and whatever other headers it asks for: the collection
/// routes take no cookies, so a header cannot widen what a page may do with them, and an SDK
/// release that adds a header keeps working.
const SDK_REQUEST_HEADERS: &str = "accept, anonymousid, authorization, content-encoding, \
     content-type, sentat, x-retry-count, x-write-key";
const ADMIN_REQUEST_HEADERS: &str = "accept, authorization, content-type";
/// How long a browser may reuse a preflight's answer: Chromium's own ceiling.
const PREFLIGHT_MAX_AGE_SECS: &str = "7200";

/// For the collection routes: any origin (a write key is public by design; a source narrows
/// its origins itself).
pub(crate) async fn collection(request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    if request.method() == Method::OPTIONS {
        let asked = request
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .map(sdk_headers_and)
            .and_then(|headers| HeaderValue::from_str(&headers).ok())
            .unwrap_or(HeaderValue::from_static(SDK_REQUEST_HEADERS));
        return preflight(request.headers(), origin, "GET, POST, OPTIONS", asked);
    }
    let mut response = next.run(request).await;
    allow(response.headers_mut(), origin);
    response
}

/// For the admin API: only the origins the operator named.
pub(crate) async fn admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned().filter(|o| {
        o.to_str()
            .ok()
            .and_then(|o| parse_origin(o).ok())
            .is_some_and(|o| state.browser.admin_origins.contains(&o))
    });
    match (request.method() == Method::OPTIONS, origin) {
        (true, Some(origin)) => preflight(
            request.headers(),
            Some(origin),
            "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            HeaderValue::from_static(ADMIN_REQUEST_HEADERS),
        ),
        (false, Some(origin)) => {
            let mut response = next.run(request).await;
            allow(response.headers_mut(), Some(origin));
            response
        }
        (_, None) => next.run(request).await,
    }
}

/// The SDK headers plus the header names a preflight asks for (tokens only; anything else in
/// the list is dropped).
fn sdk_headers_and(asked: &str) -> String {
    let mut names: Vec<String> = SDK_REQUEST_HEADERS
        .split(',')
        .map(|h| h.trim().to_string())
        .collect();
    for name in asked.split(',').map(|h| h.trim().to_ascii_lowercase()) {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if token && !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(", ")
}

fn preflight(
    request: &HeaderMap,
    origin: Option<HeaderValue>,
    methods: &'static str,
    headers: HeaderValue,
) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    allow(out, origin);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, headers);
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
    );
    // Chromium asks before a public page calls a server on a private network.
    if request.contains_key("access-control-request-private-network") {
        out.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// The headers of an allowed cross-origin response: the origin echoed (`*` without one),
/// `Retry-After` readable by the page so that an SDK can honour it.
fn allow(out: &mut HeaderMap, origin: Option<HeaderValue>) {
    out.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        origin.unwrap_or(HeaderValue::from_static("*")),
    );
    out.append(header::VARY, HeaderValue::from_static("origin"));
    out.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflights_allow_the_sdk_headers_and_the_header_names_asked_for() {
        let allowed = sdk_headers_and("X-Custom, authorization, bad header, x;y");
        assert!(allowed.starts_with(SDK_REQUEST_HEADERS), "{allowed}");
        assert!(allowed.ends_with(", x-custom"), "{allowed}");
        assert_eq!(allowed.matches("authorization").count(), 1, "{allowed}");
    }

    #[test]
    fn public_urls_keep_a_path_prefix_and_refuse_the_rest() {
        let url = PublicUrl::parse("https://Cohort.Example/collect/").unwrap();
        assert_eq!(url.scheme, "https");
        assert_eq!(url.authority_and_path, "cohort.example/collect");
        let url = PublicUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(url.authority_and_path, "127.0.0.1:8080");
        for bad in ["cohort.example", "ftp://x", "https://x/?a=1", "https://"] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
