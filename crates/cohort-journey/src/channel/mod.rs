//! Channel adapters: sending a rendered message through Twilio, Alibaba Cloud SMS, FCM, APNs, a
//! signed webhook or an SMTP server, and deciding what to do with the answer.
//!
//! A [`Sender`] is built once per configured channel ([`config::ChannelConfig`]) and shared by
//! that channel's worker; it keeps its own connection pool, so one provider that hangs never
//! holds up another. [`Sender::send`] takes an [`Outgoing`] message (the effect's idempotency key,
//! the recipient and the rendered [`Message`]) and answers an [`Outcome`]: sent with the
//! provider's id, retry later (connection errors, timeouts, 429 and 5xx, with the provider's
//! `Retry-After`), failed for good (the provider's error code and message), or one of the two
//! answers the engine must act on: the recipient unsubscribed ([`Outcome::Unsubscribed`]:
//! record the opt-out) or the device token is dead ([`Outcome::DeadToken`]: drop it from the
//! profile). [`retry::RetryPolicy::decide`] turns an outcome and the attempts so far into "done",
//! "retry at T" or "dead-letter".
//!
//! Every HTTP request carries `Idempotency-Key: <effect key>`; a send repeated after a crash
//! carries the same key (and, for APNs, the same `apns-id`; for Alibaba, the same `OutId`; for
//! webhooks, the same `webhook-id`), so a sink that honours it sends once. An email carries
//! the key as its `Message-ID` ([`email_message_id`]); its links are signed ([`tracking`]).
//!
//! `now` is the real current time (`Utc::now()`), not the journey clock: providers compare it
//! with theirs (JWT `iat`, `webhook-timestamp`, Alibaba's `x-acs-date`) and it ages the cached
//! provider tokens. Tests pass fixed times.
//!
//! TLS is rustls with the `ring` provider, installed as the process's default provider when the
//! first sender is built (unless the process installed one before).
//!
//! ```no_run
//! use cohort_journey::channel::{Message, Outcome, Outgoing, Sender, SmsMessage};
//! use cohort_journey::channel::config::ChannelConfig;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ChannelConfig::from_json(r#"{"provider": "twilio",
//!   "account_sid": "AC00000000000000000000000000000001", "auth_token": "…", "from": "+15005550006"}"#)?;
//! let sender = Sender::new(&config)?;
//! let outgoing = Outgoing {
//!     key: "welcome:1:42:sms-1".into(),
//!     to: "+8613800138000".into(),
//!     message: Message::Sms(SmsMessage::text("【Cohort】欢迎！回复TD退订")),
//! };
//! match sender.send(&outgoing, chrono::Utc::now()).await {
//!     Outcome::Sent { provider_id } => println!("sent as {provider_id}"),
//!     other => println!("{}: {other:?}", other.status()),
//! }
//! # Ok(()) }
//! ```

pub mod config;
pub mod retry;
pub mod tracking;

mod alibaba;
mod apns;
mod fcm;
mod hook;
mod smtp;
mod twilio;
pub use twilio::{signature as twilio_signature, valid_signature as valid_twilio_signature};

pub use smtp::{EmailMessage, RESERVED_HEADERS as EMAIL_RESERVED_HEADERS, email_message_id};

#[cfg(any(test, feature = "standins"))]
pub mod standin;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Map, Value};

use crate::definition::ChannelKind;
use config::{ChannelConfig, InvalidChannel};

/// The header every request carries, with the effect's key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take: a provider slower than this is retried later.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a provider's error body kept in an outcome.
const MAX_ERROR_TEXT: usize = 300;

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The effect's idempotency key ([`crate::state::effect_key`]): the same for every attempt.
    pub key: String,
    /// The phone number (E.164) for SMS, the device token for push, the address for email.
    /// Webhooks go to the channel's URL and ignore it.
    pub to: String,
    pub message: Message,
}

/// A rendered message, by channel kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Sms(SmsMessage),
    Push(PushMessage),
    /// The JSON body of a webhook call.
    Webhook(Value),
    Email(EmailMessage),
}

impl Message {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Message::Sms(_) => ChannelKind::Sms,
            Message::Push(_) => ChannelKind::Push,
            Message::Webhook(_) => ChannelKind::Webhook,
            Message::Email(_) => ChannelKind::Email,
        }
    }
}

/// An SMS. Twilio sends `text`; Alibaba Cloud sends its approved template `template_code`
/// filled with `template_params` (its content is fixed in Alibaba's console).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SmsMessage {
    pub text: String,
    pub template_code: Option<String>,
    pub template_params: Map<String, Value>,
}

impl SmsMessage {
    /// A message given by its text alone.
    pub fn text(text: impl Into<String>) -> SmsMessage {
        SmsMessage {
            text: text.into(),
            ..SmsMessage::default()
        }
    }
}

/// A push notification: what the device shows, and data for the app (FCM takes string values
/// only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushMessage {
    pub title: String,
    pub body: String,
    pub data: BTreeMap<String, String>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider took the message; its id for it.
    Sent { provider_id: String },
    /// Not now: the provider or the network failed in a way that may pass. `after` is the
    /// provider's `Retry-After`, when it gave one.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Never: the provider refused the message (its code and message).
    Failed { code: String, message: String },
    /// The recipient has opted out at the provider (Twilio 21610): record the unsubscribe.
    Unsubscribed { code: String, message: String },
    /// The device token is no longer valid (FCM `UNREGISTERED`, APNs `Unregistered` or
    /// `BadDeviceToken`): remove it from the profile.
    DeadToken { code: String, message: String },
}

impl Outcome {
    /// A word for logs and effect statuses: `sent`, `retry`, `failed`, `unsubscribed`,
    /// `dead_token`.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
            Outcome::Unsubscribed { .. } => "unsubscribed",
            Outcome::DeadToken { .. } => "dead_token",
        }
    }

    fn failed(code: impl Into<String>, message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            code: code.into(),
            message: message.into(),
        }
    }

    fn retry(after: Option<Duration>, reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            after,
            reason: reason.into(),
        }
    }
}

/// Sends through one configured channel.
pub struct Sender {
    provider: Provider,
    client: reqwest::Client,
}

enum Provider {
    Twilio(twilio::Twilio),
    Alibaba(alibaba::Alibaba),
    Fcm(fcm::Fcm),
    Apns(apns::Apns),
    Webhook(hook::Webhook),
    Smtp(smtp::Smtp),
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.provider {
            Provider::Twilio(_) => "twilio",
            Provider::Alibaba(_) => "alibaba_sms",
            Provider::Fcm(_) => "fcm",
            Provider::Apns(_) => "apns",
            Provider::Webhook(_) => "webhook",
            Provider::Smtp(_) => "smtp",
        };
        f.debug_struct("Sender").field("provider", &name).finish()
    }
}

impl Sender {
    /// Checks the configuration and prepares its keys and connection pool.
    pub fn new(config: &ChannelConfig) -> Result<Sender, InvalidChannel> {
        config.validate()?;
        let (provider, http2_only) = match config {
            ChannelConfig::Twilio(c) => (Provider::Twilio(twilio::Twilio::new(c)), false),
            ChannelConfig::AlibabaSms(c) => (Provider::Alibaba(alibaba::Alibaba::new(c)?), false),
            ChannelConfig::Fcm(c) => (Provider::Fcm(fcm::Fcm::new(c)?), false),
            ChannelConfig::Apns(c) => {
                let apns = apns::Apns::new(c)?;
                // Over TLS, ALPN agrees on HTTP/2; a plain-http base (a loopback stand-in)
                // needs HTTP/2 from the first byte, as APNs speaks nothing else.
                let prior_knowledge = apns.base().starts_with("http://");
                (Provider::Apns(apns), prior_knowledge)
            }
            ChannelConfig::Webhook(c) => (Provider::Webhook(hook::Webhook::new(c)?), false),
            ChannelConfig::Smtp(c) => {
                // lettre builds its TLS configuration now, with the process's provider.
                install_crypto_provider();
                (Provider::Smtp(smtp::Smtp::new(c)?), false)
            }
        };
        Ok(Sender {
            provider,
            client: client(http2_only)?,
        })
    }

    /// What this channel sends.
    pub fn kind(&self) -> ChannelKind {
        match self.provider {
            Provider::Twilio(_) | Provider::Alibaba(_) => ChannelKind::Sms,
            Provider::Fcm(_) | Provider::Apns(_) => ChannelKind::Push,
            Provider::Webhook(_) => ChannelKind::Webhook,
            Provider::Smtp(_) => ChannelKind::Email,
        }
    }

    /// Makes one attempt. Never panics and never returns an error: whatever happens is an
    /// [`Outcome`].
    pub async fn send(&self, outgoing: &Outgoing, now: DateTime<Utc>) -> Outcome {
        let client = &self.client;
        let outcome = match (&self.provider, &outgoing.message) {
            (Provider::Twilio(p), Message::Sms(sms)) => p.send(client, outgoing, sms, now).await,
            (Provider::Alibaba(p), Message::Sms(sms)) => p.send(client, outgoing, sms, now).await,
            (Provider::Fcm(p), Message::Push(push)) => p.send(client, outgoing, push, now).await,
            (Provider::Apns(p), Message::Push(push)) => p.send(client, outgoing, push, now).await,
            (Provider::Webhook(p), Message::Webhook(body)) => {
                p.send(client, outgoing, body, now).await
            }
            (Provider::Smtp(p), Message::Email(email)) => p.send(outgoing, email, now).await,
            (_, message) => Outcome::failed(
                "cohort.message_kind",
                format!(
                    "a {} message cannot go through a {} channel",
                    message.kind().as_str(),
                    self.kind().as_str()
                ),
            ),
        };
        tracing::debug!(key = %outgoing.key, status = outcome.status(), "channel attempt");
        outcome
    }
}

fn install_crypto_provider() {
    // Err means a provider is already installed (by this or another part of the process):
    // that one is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client(http2_only: bool) -> Result<reqwest::Client, InvalidChannel> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        // A redirect would turn a POST into a GET somewhere else: report it instead.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Cohort/", env!("CARGO_PKG_VERSION")));
    if http2_only {
        builder = builder.http2_prior_knowledge();
    }
    builder.build().map_err(|e| InvalidChannel {
        field: String::new(),
        message: format!("cannot prepare an HTTP client: {e}"),
    })
}

/// An attempt that got no HTTP answer.
fn transport_error(error: &reqwest::Error) -> Outcome {
    if error.is_builder() {
        return Outcome::failed("cohort.request", error.to_string());
    }
    // Connection refused or reset, DNS, TLS, timeout, a body cut short: all may pass.
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    Outcome::retry(None, reason)
}

/// Statuses worth trying again: throttling, timeouts and server errors.
fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// `Retry-After` as seconds or an HTTP date, from `now`.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// A provider's answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Result<Answer, Outcome> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&e))?
            .to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The start of the body, for an outcome's message.
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(MAX_ERROR_TEXT).collect()
    }

    /// Retry for transient statuses (with `Retry-After`), otherwise fail with `code`.
    fn classify(&self, code: String, message: String, now: DateTime<Utc>) -> Outcome {
        if is_transient(self.status) {
            Outcome::retry(
                retry_after(&self.headers, now),
                format!("{} {code}: {message}", self.status.as_u16()),
            )
        } else {
            Outcome::failed(code, message)
        }
    }
}

fn string_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// The APNs `apns-id` for an effect key: a UUID (version 8, custom) from the key's SHA-256, so
/// every attempt of one message has the same id.
pub fn apns_id(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}
