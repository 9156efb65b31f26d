//! Signed links in email: one-click unsubscribe, the open pixel and click redirects.
//!
//! Every link an email carries points back at this Cohort server with a token that says what
//! the link is for ([`Purpose`]), which message it came in (the send's idempotency key), whose
//! it is (the customer) and, for a click, where it leads. The token is signed, so a recipient
//! cannot unsubscribe someone else, forge opens, or turn Cohort's redirect into an open
//! redirect to a URL of their choosing.
//!
//! The server serves three routes under the channel's `public_url`:
//!
//! - `GET /o/{token}`: record an open, answer [`PIXEL_GIF`] (`image/gif`, not cacheable);
//! - `GET /c/{token}`: record a click, redirect (302) to [`Tracked::target`];
//! - `GET /u/{token}` (a page that confirms) and `POST /u/{token}` (RFC 8058's one-click
//!   unsubscribe, whose body is `List-Unsubscribe=One-Click`): record the unsubscribe.
//!
//! Each route reads the token with [`LinkSigner::verify`] and refuses it, as not found,
//! unless [`Tracked::expect`] agrees with the route. The signer of an SMTP channel is
//! [`SmtpConfig::link_signer`](super::config::SmtpConfig::link_signer); a token does not name
//! its channel, so a server with several email channels tries each one's signer (only the
//! channel whose secret signed it accepts it). Tokens hold no time: a link works as long
//! as the channel's `link_secret` is unchanged, and a message re-sent after a crash carries the
//! very same links.
//!
//! ```
//! use cohort_journey::channel::tracking::{LinkSigner, Purpose, Track, rewrite_html};
//!
//! let signer = LinkSigner::new("https://cohort.shop.example", "a secret of thirty-two bytes or more")?;
//! let links = signer.links("spring:1:42:mail", 42);
//! let html = rewrite_html(
//!     r#"<body><a href="https://shop.example/sale?c=1&amp;d=2">Sale</a></body>"#,
//!     &links,
//!     Track::ALL,
//! )?;
//! assert!(html.contains(r#"<a href="https://cohort.shop.example/c/"#));
//! assert!(html.contains(r#"<img src="https://cohort.shop.example/o/"#));
//!
//! let token = links.click_url("https://shop.example/sale?c=1&d=2").rsplit('/').next().unwrap().to_string();
//! let click = signer.verify(&token)?.expect(Purpose::Click)?;
//! assert_eq!((click.key.as_str(), click.customer), ("spring:1:42:mail", 42));
//! assert_eq!(click.target.as_deref(), Some("https://shop.example/sale?c=1&d=2"));
//! # Ok::<(), cohort_journey::channel::tracking::TrackingError>(())
//! ```
//!
//! A token is `base64url(payload ‖ tag)` without padding, where the payload is a version byte,
//! the purpose byte, the key's length (LEB128) and bytes, the customer (8 bytes, big-endian)
//! and, for a click, the target URL; the tag is the first 16 bytes of HMAC-SHA256 of the
//! payload under the link secret (a 128-bit tag, as RFC 2104 allows truncating), which keeps
//! links short.

use std::cell::Cell;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use lol_html::html_content::ContentType;
use lol_html::{RewriteStrSettings, element, end, rewrite_str};
use reqwest::Url;
use sha2::Sha256;

use crate::state::CustomerId;

/// The shortest link secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The open pixel: a 1×1 transparent GIF.
pub const PIXEL_GIF: [u8; 43] = [
    b'G', b'I', b'F', b'8', b'9', b'a', // signature and version
    1, 0, 1, 0, // logical screen 1×1
    0x80, 0, 0, // a global colour table of 2 entries
    0, 0, 0, 0xff, 0xff, 0xff, // black, white
    0x21, 0xf9, 4, 1, 0, 0, 0, 0, // graphic control: colour 0 is transparent
    0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, // one 1×1 image at the origin
    2, 2, 0x44, 1, 0,    // LZW, minimum code size 2: clear, index 0, end
    0x3b, // trailer
];

const VERSION: u8 = 1;
const TAG_BYTES: usize = 16;
/// Longer tokens are refused before any decoding (a click's target is the long part).
const MAX_TOKEN_CHARS: usize = 8 * 1024;

/// What a link does when followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Open,
    Click,
    Unsubscribe,
}

impl Purpose {
    /// `open`, `click` or `unsubscribe`.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Open => "open",
            Purpose::Click => "click",
            Purpose::Unsubscribe => "unsubscribe",
        }
    }

    /// The delivery event the server records for the customer when the link is followed.
    pub fn event_name(self) -> &'static str {
        match self {
            Purpose::Open => "Opened",
            Purpose::Click => "Clicked",
            Purpose::Unsubscribe => "Unsubscribed",
        }
    }

    /// The route's first path segment under `public_url`.
    fn path(self) -> &'static str {
        match self {
            Purpose::Open => "o",
            Purpose::Click => "c",
            Purpose::Unsubscribe => "u",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Purpose::Open => b'o',
            Purpose::Click => b'c',
            Purpose::Unsubscribe => b'u',
        }
    }

    fn from_byte(byte: u8) -> Option<Purpose> {
        match byte {
            b'o' => Some(Purpose::Open),
            b'c' => Some(Purpose::Click),
            b'u' => Some(Purpose::Unsubscribe),
            _ => None,
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub purpose: Purpose,
    /// The send's idempotency key: which journey, version, entry and step sent the message.
    pub key: String,
    pub customer: CustomerId,
    /// Where a click leads (an http(s) URL); `None` for the other purposes.
    pub target: Option<String>,
}

impl Tracked {
    /// The token itself if it is for `purpose`: a route serves only its own kind of link.
    pub fn expect(self, purpose: Purpose) -> Result<Tracked, TrackingError> {
        if self.purpose == purpose {
            Ok(self)
        } else {
            Err(TrackingError::WrongPurpose {
                expected: purpose.as_str(),
                found: self.purpose.as_str(),
            })
        }
    }
}

/// Why links cannot be made, or why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackingError {
    #[error("a link secret needs at least {MIN_SECRET_BYTES} bytes, not {0}")]
    ShortSecret(usize),
    #[error("{0}")]
    PublicUrl(String),
    #[error("not a link token of this server: {0}")]
    Malformed(&'static str),
    #[error(
        "the link token's signature does not match: it was altered or signed with another secret"
    )]
    Signature,
    #[error("the link is for {found}, not {expected}")]
    WrongPurpose {
        expected: &'static str,
        found: &'static str,
    },
    #[error("the HTML body could not be rewritten: {0}")]
    Html(String),
}

/// Makes and verifies one channel's links.
#[derive(Clone)]
pub struct LinkSigner {
    /// `public_url` without its trailing slash.
    base: String,
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for LinkSigner {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// Links under `public_url` (an http(s) URL without query or fragment), signed with
    /// `secret` (at least [`MIN_SECRET_BYTES`] bytes).
    pub fn new(public_url: &str, secret: &str) -> Result<LinkSigner, TrackingError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TrackingError::ShortSecret(secret.len()));
        }
        let url = Url::parse(public_url.trim())
            .map_err(|e| TrackingError::PublicUrl(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(TrackingError::PublicUrl(
                "must be an http(s) URL with a host".into(),
            ));
        }
        // Links are made by appending a path: a query or fragment would end up before it.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(TrackingError::PublicUrl(
                "must have no query or fragment".into(),
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| TrackingError::ShortSecret(secret.len()))?;
        Ok(LinkSigner {
            base: url.as_str().trim_end_matches('/').to_string(),
            mac,
        })
    }

    /// The links of one message.
    pub fn links<'a>(&'a self, key: &'a str, customer: CustomerId) -> Links<'a> {
        Links {
            signer: self,
            key,
            customer,
        }
    }

    /// Reads a token from one of this server's links. The signature is checked, in constant
    /// time, before anything in the token is believed.
    pub fn verify(&self, token: &str) -> Result<Tracked, TrackingError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TrackingError::Malformed("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TrackingError::Malformed("not base64url"))?;
        if bytes.len() < TAG_BYTES + 2 {
            return Err(TrackingError::Malformed("too short"));
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.verify_truncated_left(tag)
            .map_err(|_| TrackingError::Signature)?;
        decode_payload(payload)
    }

    fn url(&self, purpose: Purpose, key: &str, customer: CustomerId, target: &str) -> String {
        let mut payload = Vec::with_capacity(12 + key.len() + target.len());
        payload.push(VERSION);
        payload.push(purpose.byte());
        write_length(&mut payload, key.len());
        payload.extend_from_slice(key.as_bytes());
        payload.extend_from_slice(&customer.to_be_bytes());
        payload.extend_from_slice(target.as_bytes());
        let mut mac = self.mac.clone();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        payload.extend_from_slice(&tag[..TAG_BYTES]);
        format!(
            "{}/{}/{}",
            self.base,
            purpose.path(),
            URL_SAFE_NO_PAD.encode(&payload)
        )
    }

    /// Whether `url` is already one of this server's link routes (never wrapped again).
    fn is_own_link(&self, url: &str) -> bool {
        url.strip_prefix(self.base.as_str()).is_some_and(|rest| {
            [Purpose::Open, Purpose::Click, Purpose::Unsubscribe]
                .iter()
                .any(|p| {
                    rest.strip_prefix('/')
                        .and_then(|r| r.strip_prefix(p.path()))
                        .is_some_and(|r| r.starts_with('/'))
                })
        })
    }
}

/// The links of one message: one send (its idempotency key) to one customer.
#[derive(Debug, Clone, Copy)]
pub struct Links<'a> {
    signer: &'a LinkSigner,
    key: &'a str,
    customer: CustomerId,
}

impl Links<'_> {
    /// For `List-Unsubscribe` and the body's own unsubscribe link.
    pub fn unsubscribe_url(&self) -> String {
        self.signer
            .url(Purpose::Unsubscribe, self.key, self.customer, "")
    }

    pub fn open_pixel_url(&self) -> String {
        self.signer.url(Purpose::Open, self.key, self.customer, "")
    }

    /// A redirect to `target` that records the click first.
    pub fn click_url(&self, target: &str) -> String {
        self.signer
            .url(Purpose::Click, self.key, self.customer, target)
    }
}

/// Which tracking an HTML body gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub opens: bool,
    pub clicks: bool,
}

impl Track {
    pub const ALL: Track = Track {
        opens: true,
        clicks: true,
    };
}

/// Adds tracking to an HTML body: with `track.clicks`, each `<a href>` to an http(s) URL goes
/// through [`Links::click_url`] (not `mailto:`, `tel:` or `#anchors`, and not this server's own
/// links, such as the unsubscribe link or one already tracked); with `track.opens`, the open
/// pixel is added at the end of `<body>`, or of the document when there is no `<body>`.
pub fn rewrite_html(html: &str, links: &Links<'_>, track: Track) -> Result<String, TrackingError> {
    if !track.opens && !track.clicks {
        return Ok(html.to_string());
    }
    let pixel = format!(
        r#"<img src="{}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0">"#,
        links.open_pixel_url()
    );
    let pixel_placed = Cell::new(!track.opens);
    let mut settings = RewriteStrSettings::new();
    if track.clicks {
        settings = settings.append_element_content_handler(element!("a[href]", |el| {
            let Some(href) = el.get_attribute("href") else {
                return Ok(());
            };
            // The attribute holds HTML: `&amp;` in a query string is `&` in the URL.
            let decoded = html_escape::decode_html_entities(&href);
            let target = decoded.trim();
            if is_web_url(target) && !links.signer.is_own_link(target) {
                el.set_attribute("href", &links.click_url(target))?;
            }
            Ok(())
        }));
    }
    if track.opens {
        settings = settings
            .append_element_content_handler(element!("body", |el| {
                if !pixel_placed.replace(true) {
                    el.append(&pixel, ContentType::Html);
                }
                Ok(())
            }))
            .append_document_content_handler(end!(|end| {
                if !pixel_placed.replace(true) {
                    end.append(&pixel, ContentType::Html);
                }
                Ok(())
            }));
    }
    rewrite_str(html, settings).map_err(|e| TrackingError::Html(e.to_string()))
}

fn is_web_url(url: &str) -> bool {
    let scheme = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    scheme.starts_with("http://") || scheme.starts_with("https://")
}

fn decode_payload(payload: &[u8]) -> Result<Tracked, TrackingError> {
    let malformed = TrackingError::Malformed;
    let [version, purpose, rest @ ..] = payload else {
        return Err(malformed("too short"));
    };
    if *version != VERSION {
        return Err(malformed("unknown version"));
    }
    let purpose = Purpose::from_byte(*purpose).ok_or(malformed("unknown purpose"))?;
    let (key_len, rest) = read_length(rest).ok_or(malformed("bad key length"))?;
    if rest.len() < key_len.saturating_add(8) {
        return Err(malformed("cut short"));
    }
    let (key, rest) = rest.split_at(key_len);
    let (customer, target) = rest.split_at(8);
    let key = std::str::from_utf8(key).map_err(|_| malformed("key is not UTF-8"))?;
    let mut customer_bytes = [0u8; 8];
    customer_bytes.copy_from_slice(customer);
    let target = std::str::from_utf8(target).map_err(|_| malformed("target is not UTF-8"))?;
    let target = match purpose {
        Purpose::Click if is_web_url(target) => Some(target.to_string()),
        Purpose::Click => return Err(malformed("a click link needs an http(s) target")),
        _ if target.is_empty() => None,
        _ => return Err(malformed("only click links have a target")),
    };
    Ok(Tracked {
        purpose,
        key: key.to_string(),
        customer: CustomerId::from_be_bytes(customer_bytes),
        target,
    })
}

/// LEB128: 7 bits a byte, low bits first, the high bit set on all bytes but the last.
fn write_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn read_length(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut n: usize = 0;
    for (i, byte) in bytes.iter().enumerate().take(4) {
        n |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    // Four bytes hold lengths up to 256 MiB, far beyond any token accepted.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const BASE: &str = "https://cohort.shop.example/mail";

    fn signer() -> LinkSigner {
        LinkSigner::new(&format!("{BASE}/"), SECRET).unwrap()
    }

    /// The token at the end of a link.
    fn token(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    #[test]
    fn each_purpose_round_trips_with_its_route() {
        let signer = signer();
        let links = signer.links("spring:3:17:mail", -5);
        let target = "https://shop.example/p/茶?size=M&colour=red#top";
        let cases = [
            (links.open_pixel_url(), Purpose::Open, None, "/o/"),
            (
                links.click_url(target),
                Purpose::Click,
                Some(target.to_string()),
                "/c/",
            ),
            (links.unsubscribe_url(), Purpose::Unsubscribe, None, "/u/"),
        ];
        for (url, purpose, target, route) in cases {
            assert!(url.starts_with(&format!("{BASE}{route}")), "{url}");
            let token = token(&url);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            let tracked = signer.verify(token).unwrap();
            assert_eq!(
                tracked,
                Tracked {
                    purpose,
                    key: "spring:3:17:mail".into(),
                    customer: -5,
                    target,
                }
            );
            assert_eq!(tracked.clone().expect(purpose), Ok(tracked));
        }
        // Tokens hold no time: the same message gets the same links.
        assert_eq!(
            links.unsubscribe_url(),
            signer.links("spring:3:17:mail", -5).unsubscribe_url()
        );
        assert_ne!(
            links.unsubscribe_url(),
            signer.links("spring:3:17:mail", 6).unsubscribe_url()
        );
    }

    #[test]
    fn a_route_refuses_another_purposes_token() {
        let signer = signer();
        let open = signer
            .verify(token(&signer.links("k", 1).open_pixel_url()))
            .unwrap();
        let refused = open.expect(Purpose::Unsubscribe).unwrap_err();
        assert_eq!(
            refused,
            TrackingError::WrongPurpose {
                expected: "unsubscribe",
                found: "open"
            }
        );
        assert_eq!(refused.to_string(), "the link is for open, not unsubscribe");
    }

    #[test]
    fn altered_tokens_and_other_secrets_are_refused() {
        let signer = signer();
        let url = signer
            .links("spring:3:17:mail", 42)
            .click_url("https://shop.example/a");
        let good = token(&url);
        let mut bytes = URL_SAFE_NO_PAD.decode(good).unwrap();

        // Every single flipped bit, in the payload or the tag, is caught.
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                bytes[i] ^= bit;
                let altered = URL_SAFE_NO_PAD.encode(&bytes);
                assert_eq!(
                    signer.verify(&altered),
                    Err(TrackingError::Signature),
                    "byte {i}"
                );
                bytes[i] ^= bit;
            }
        }
        // A forged payload (another customer, another target) signed with a guessed tag.
        let forged = signer
            .links("spring:3:17:mail", 43)
            .click_url("https://evil.example/");
        let mut forged_bytes = URL_SAFE_NO_PAD.decode(token(&forged)).unwrap();
        let n = forged_bytes.len();
        forged_bytes[n - TAG_BYTES..].copy_from_slice(&bytes[bytes.len() - TAG_BYTES..]);
        assert_eq!(
            signer.verify(&URL_SAFE_NO_PAD.encode(&forged_bytes)),
            Err(TrackingError::Signature)
        );

        let other = LinkSigner::new(BASE, "another secret, also 32 bytes long").unwrap();
        assert_eq!(other.verify(good), Err(TrackingError::Signature));
        assert!(signer.verify(good).is_ok());

        for (bad, why) in [
            ("", "too short"),
            ("AAAA", "too short"),
            ("not*base64", "not base64url"),
            (&"A".repeat(MAX_TOKEN_CHARS + 1), "too long"),
        ] {
            assert_eq!(
                signer.verify(bad),
                Err(TrackingError::Malformed(why)),
                "{bad:.20}"
            );
        }
        assert!(
            TrackingError::Signature
                .to_string()
                .contains("altered or signed with another secret")
        );
    }

    #[test]
    fn a_well_signed_but_inconsistent_payload_is_refused() {
        let signer = signer();
        let sign = |payload: &[u8]| {
            let mut mac = signer.mac.clone();
            mac.update(payload);
            let mut bytes = payload.to_vec();
            bytes.extend_from_slice(&mac.finalize().into_bytes()[..TAG_BYTES]);
            URL_SAFE_NO_PAD.encode(bytes)
        };
        let customer = 7i64.to_be_bytes();
        let with = |version: u8, purpose: u8, key: &[u8], target: &[u8]| {
            let mut p = vec![version, purpose, key.len() as u8];
            p.extend_from_slice(key);
            p.extend_from_slice(&customer);
            p.extend_from_slice(target);
            sign(&p)
        };
        let cases = [
            (with(2, b'o', b"k", b""), "unknown version"),
            (with(1, b'x', b"k", b""), "unknown purpose"),
            (
                with(1, b'c', b"k", b""),
                "a click link needs an http(s) target",
            ),
            (
                with(1, b'c', b"k", b"javascript:alert(1)"),
                "a click link needs an http(s) target",
            ),
            (
                with(1, b'u', b"k", b"https://a.example"),
                "only click links have a target",
            ),
            (with(1, b'o', b"\xff", b""), "key is not UTF-8"),
            (sign(&[1, b'o', 40, b'k']), "cut short"),
            (
                sign(&[1, b'o', 0x80, 0x80, 0x80, 0x80, 1]),
                "bad key length",
            ),
        ];
        for (token, why) in cases {
            assert_eq!(
                signer.verify(&token),
                Err(TrackingError::Malformed(why)),
                "{why}"
            );
        }
        // Long keys take more than one length byte.
        let key = "k".repeat(300);
        let url = signer.links(&key, 1).open_pixel_url();
        assert_eq!(signer.verify(token(&url)).unwrap().key, key);
    }

    #[test]
    fn signers_need_a_long_secret_and_a_plain_web_url() {
        assert_eq!(
            LinkSigner::new(BASE, "short").unwrap_err(),
            TrackingError::ShortSecret(5)
        );
        for bad in [
            "ftp://cohort.example",
            "cohort.example",
            "https://cohort.example/?x=1",
            "https://cohort.example/#x",
        ] {
            assert!(
                matches!(
                    LinkSigner::new(bad, SECRET),
                    Err(TrackingError::PublicUrl(_))
                ),
                "{bad}"
            );
        }
        assert!(!format!("{:?}", signer()).contains(SECRET));
    }

    #[test]
    fn links_go_through_the_click_redirect_and_others_stay() {
        let signer = signer();
        let links = signer.links("cart:1:9:mail", 9);
        let unsubscribe = links.unsubscribe_url();
        let tracked = links.click_url("https://shop.example/old");
        let html = format!(
            r##"<html><body>
<a href="https://shop.example/cart?items=1&amp;ref=mail">Cart</a>
<a class="x" HREF=" HTTP://shop.example/plain ">Plain</a>
<a href="mailto:help@shop.example">Mail us</a>
<a href="tel:+8613800138000">Call</a>
<a href="#top">Top</a>
<a href="/relative">Relative</a>
<a name="no-href">Anchor</a>
<a href="{unsubscribe}">Unsubscribe</a>
<a href="{tracked}">Already tracked</a>
<!-- <a href="https://shop.example/commented">x</a> -->
</body></html>"##
        );
        let out = rewrite_html(
            &html,
            &links,
            Track {
                opens: false,
                clicks: true,
            },
        )
        .unwrap();
        let hrefs_in = out.replace("HREF=", "href=");
        let hrefs: Vec<&str> = hrefs_in
            .split("href=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        let target = |href: &str| {
            signer
                .verify(token(href))
                .unwrap()
                .expect(Purpose::Click)
                .unwrap()
                .target
                .unwrap()
        };
        assert_eq!(
            target(hrefs[0]),
            "https://shop.example/cart?items=1&ref=mail"
        );
        assert_eq!(target(hrefs[1]), "HTTP://shop.example/plain");
        assert_eq!(
            &hrefs[2..],
            [
                "mailto:help@shop.example",
                "tel:+8613800138000",
                "#top",
                "/relative",
                unsubscribe.as_str(),
                tracked.as_str(),
                "https://shop.example/commented",
            ]
        );
        assert!(
            out.contains(r#"<a class="x" HREF="https://cohort.shop.example/mail/c/"#),
            "{out}"
        );
        assert!(out.contains(r#"<a name="no-href">"#));
        assert!(!out.contains("<img"), "no pixel without open tracking");
        // Rewriting twice changes nothing more.
        let again = rewrite_html(
            &out,
            &links,
            Track {
                opens: false,
                clicks: true,
            },
        )
        .unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn the_pixel_closes_the_body_or_the_document() {
        let signer = signer();
        let links = signer.links("k", 1);
        let pixel_src = format!(r#"<img src="{}""#, links.open_pixel_url());
        let opens = Track {
            opens: true,
            clicks: false,
        };

        let out = rewrite_html("<html><body><p>您好</p></body></html>", &links, opens).unwrap();
        let at = out.find(&pixel_src).unwrap();
        assert_eq!(&out[..at], "<html><body><p>您好</p>");
        let after_pixel = &out[at + out[at..].find('>').unwrap() + 1..];
        assert_eq!(after_pixel, "</body></html>");
        assert_eq!(out.matches("<img").count(), 1);

        let fragment = rewrite_html("<p>Hi</p>", &links, opens).unwrap();
        assert!(fragment.starts_with("<p>Hi</p><img src="), "{fragment}");
        assert!(fragment.ends_with('>'));

        let two_bodies = rewrite_html("<body>a</body><body>b</body>", &links, opens).unwrap();
        assert_eq!(two_bodies.matches("<img").count(), 1, "{two_bodies}");

        let none = rewrite_html(
            "<body>x</body>",
            &links,
            Track {
                opens: false,
                clicks: false,
            },
        )
        .unwrap();
        assert_eq!(none, "<body>x</body>");

        let all = rewrite_html(
            r#"<body><a href="https://a.example">a</a></body>"#,
            &links,
            Track::ALL,
        )
        .unwrap();
        assert!(all.contains("/c/") && all.contains("/o/"), "{all}");
    }

    #[test]
    fn the_pixel_is_a_one_by_one_transparent_gif() {
        assert_eq!(&PIXEL_GIF[..6], b"GIF89a");
        assert_eq!((PIXEL_GIF[6], PIXEL_GIF[8]), (1, 1));
        // The graphic control extension marks colour 0 transparent.
        assert_eq!(&PIXEL_GIF[19..23], &[0x21, 0xf9, 4, 1]);
        assert_eq!(PIXEL_GIF[PIXEL_GIF.len() - 1], 0x3b);
    }

    #[test]
    fn lengths_round_trip() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 21] {
            let mut out = Vec::new();
            write_length(&mut out, n);
            out.push(9);
            assert_eq!(read_length(&out), Some((n, &[9u8][..])), "{n}");
        }
    }
}
