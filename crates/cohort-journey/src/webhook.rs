//! Signing webhook calls per the Standard Webhooks specification (standardwebhooks.com), so a
//! receiver verifies them with any of its libraries.
//!
//! A call carries `webhook-id` (the step effect's idempotency key: a retried call has the same
//! one, so the receiver can drop the repeat), `webhook-timestamp` (Unix seconds of the real time
//! the request is made, which receivers compare with their clock) and `webhook-signature`:
//! `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret, which is
//! written `whsec_` followed by its base64 bytes.
//!
//! ```
//! use cohort_journey::webhook::WebhookSecret;
//! let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let headers = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
//! assert_eq!(headers.signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A channel's signing secret.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// Why a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret is written whsec_ followed by base64")]
    Prefix,
    #[error("the webhook secret after whsec_ is not base64: {0}")]
    Base64(String),
    #[error("a webhook secret needs between 24 and 64 bytes, not {0}")]
    Length(usize),
}

/// The three headers of a signed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// `webhook-signature`.
    pub signature: String,
}

impl SignedHeaders {
    /// As `(name, value)` pairs, ready for a request.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            ("webhook-id", &self.id),
            ("webhook-timestamp", &self.timestamp),
            ("webhook-signature", &self.signature),
        ]
    }
}

impl WebhookSecret {
    /// Reads `whsec_…`. The specification asks for 24 to 64 random bytes.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or(SecretError::Prefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|e| SecretError::Base64(e.to_string()))?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(WebhookSecret { key })
    }

    /// A new random secret, written as `whsec_…`.
    pub fn generate() -> String {
        let key: [u8; 32] = rand::random();
        format!("whsec_{}", STANDARD.encode(key))
    }

    /// The headers for `body`, sent as message `id` at Unix second `timestamp`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> SignedHeaders {
        let timestamp = timestamp.to_string();
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        SignedHeaders {
            id: id.to_string(),
            timestamp,
            signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with the `standardwebhooks` package (PyPI), `Webhook(secret).sign(id, time,
    /// body)`.
    #[test]
    fn signatures_match_the_reference_library() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let cases = [
            (
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#,
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
            (
                "msg_顾客-1",
                1_780_000_000,
                r#"{"name":"顾客","n":1}"#,
                "v1,IFfiP4FlrbIpPiqgEif0V213JZmCaD+il2eDddHrjCQ=",
            ),
        ];
        for (id, timestamp, body, expected) in cases {
            let headers = secret.sign(id, timestamp, body.as_bytes());
            assert_eq!(headers.signature, expected, "{id}");
            assert_eq!(headers.timestamp, timestamp.to_string());
            assert_eq!(headers.pairs()[0], ("webhook-id", id));
        }
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Prefix
        );
        assert!(matches!(
            WebhookSecret::parse("whsec_not base64!"),
            Err(SecretError::Base64(_))
        ));
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::Length(5)
        );
        let generated = WebhookSecret::generate();
        let secret = WebhookSecret::parse(&generated).unwrap();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(…)");
    }
}
