//! Email over SMTP: one message per [`Outgoing`], `multipart/alternative` with the text and
//! HTML parts (the text alone when there is no HTML), signed links for one-click unsubscribe
//! and tracking ([`super::tracking`]), through a pool of connections kept open between sends.
//!
//! Every attempt of one send has the same `Message-ID` ([`email_message_id`], from the
//! idempotency key), the same MIME boundary and the same links, so a message repeated after a
//! crash is byte for byte the one before but for its `Date`, and a receiving system that drops
//! repeated `Message-ID`s drops it.
//!
//! The server's reply decides the [`Outcome`]: 2xx is sent (the provider id is the server's
//! queue id when its reply names one, as `250 2.0.0 Ok: queued as 4Xb1Z` does, else the
//! `Message-ID`), 4xx and any failure to connect, talk TLS or get an answer are retried, and
//! 5xx fails for good with the reply's code (550 "no such user", 552, 554 …).

use std::collections::BTreeMap;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, MultiPartKind, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sha2::{Digest, Sha256};

use super::config::{InvalidChannel, SmtpConfig, SmtpSecurity, mailbox};
use super::tracking::{LinkSigner, Track, rewrite_html};
use super::{MAX_ERROR_TEXT, Outcome, Outgoing, REQUEST_TIMEOUT};
use crate::state::CustomerId;

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmailMessage {
    /// The customer it goes to: the unsubscribe and tracking links name them.
    pub customer: CustomerId,
    pub subject: String,
    /// The HTML part, HTML-escaped by its template; tracking is added when sending.
    pub html: Option<String>,
    /// The plain-text part, always sent.
    pub text: String,
    /// More headers (`X-Campaign`, say). The ones Cohort writes ([`RESERVED_HEADERS`]) are
    /// refused: the send fails with code `cohort.header`.
    pub headers: BTreeMap<String, String>,
}

/// Headers an [`EmailMessage`] may not set: the sender writes them.
pub const RESERVED_HEADERS: [&str; 15] = [
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "return-path",
];

/// The `Message-ID` of the send with idempotency key `key` from a sender at `domain`:
/// `<` 32 hex digits of the key's SHA-256 `@domain>`.
pub fn email_message_id(key: &str, domain: &str) -> String {
    format!("<{}@{domain}>", key_digest(key))
}

fn key_digest(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

pub(super) struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    signer: LinkSigner,
    track: Track,
}

impl Smtp {
    pub(super) fn new(config: &SmtpConfig) -> Result<Smtp, InvalidChannel> {
        let invalid = |field: &str, message: String| InvalidChannel {
            field: field.to_string(),
            message,
        };
        let host = config.host.trim();
        let builder = match config.security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| invalid("host", format!("cannot prepare TLS: {e}")))?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| invalid("host", format!("cannot prepare TLS: {e}")))?,
        };
        let mut builder = builder.port(config.port()).timeout(Some(REQUEST_TIMEOUT));
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
        }
        let signer = config
            .link_signer()
            .map_err(|e| invalid("public_url", e.to_string()))?;
        Ok(Smtp {
            transport: builder.build(),
            from: mailbox("from", &config.from)?,
            reply_to: config
                .reply_to
                .as_deref()
                .map(|r| mailbox("reply_to", r))
                .transpose()?,
            signer,
            track: Track {
                opens: config.track_opens,
                clicks: config.track_clicks,
            },
        })
    }

    pub(super) async fn send(
        &self,
        outgoing: &Outgoing,
        email: &EmailMessage,
        now: DateTime<Utc>,
    ) -> Outcome {
        let message = match self.compose(outgoing, email, now) {
            Ok(message) => message,
            Err(outcome) => return outcome,
        };
        match self.transport.send(message).await {
            Ok(response) => Outcome::Sent {
                provider_id: queue_id(response.message()).unwrap_or_else(|| {
                    let id = email_message_id(&outgoing.key, self.from.email.domain());
                    id.trim_matches(['<', '>']).to_string()
                }),
            },
            Err(error) => smtp_error(&error),
        }
    }

    /// The message as it goes on the wire; a message that cannot be built fails for good.
    fn compose(
        &self,
        outgoing: &Outgoing,
        email: &EmailMessage,
        now: DateTime<Utc>,
    ) -> Result<lettre::Message, Outcome> {
        let to: Mailbox = outgoing.to.trim().parse().map_err(|e| {
            Outcome::failed(
                "cohort.address",
                format!("{:?} is not an email address: {e}", outgoing.to),
            )
        })?;
        let links = self.signer.links(&outgoing.key, email.customer);
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .date(SystemTime::from(now))
            .message_id(Some(email_message_id(
                &outgoing.key,
                self.from.email.domain(),
            )))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{}>", links.unsubscribe_url()),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_string(),
            ));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        for (name, value) in &email.headers {
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(Outcome::failed(
                    "cohort.header",
                    format!("the header {name} is written by Cohort"),
                ));
            }
            let header = HeaderName::new_from_ascii(name.clone()).map_err(|_| {
                Outcome::failed("cohort.header", format!("{name:?} is not a header name"))
            })?;
            builder = builder.raw_header(HeaderValue::new(header, value.clone()));
        }
        let text = SinglePart::plain(email.text.clone());
        let built = match &email.html {
            Some(html) => {
                let html = rewrite_html(html, &links, self.track)
                    .map_err(|e| Outcome::failed("cohort.html", e.to_string()))?;
                // A boundary from the key rather than a random one keeps a re-sent message
                // identical to its first attempt.
                builder.multipart(
                    MultiPart::builder()
                        .kind(MultiPartKind::Alternative)
                        .boundary(format!("cohort-{}", key_digest(&outgoing.key)))
                        .singlepart(text)
                        .singlepart(SinglePart::html(html)),
                )
            }
            None => builder.singlepart(text),
        };
        built.map_err(|e| Outcome::failed("cohort.message", e.to_string()))
    }
}

/// The queue id in a `250 … queued as ID` reply (Postfix, Exim, Sendmail and most relays).
fn queue_id<'a>(mut lines: impl Iterator<Item = &'a str>) -> Option<String> {
    lines.find_map(|line| {
        let lower = line.to_ascii_lowercase();
        let at = lower.find("queued as ")? + "queued as ".len();
        let id: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
            .collect();
        let id = id.trim_end_matches('.');
        (!id.is_empty()).then(|| id.to_string())
    })
}

fn smtp_error(error: &lettre::transport::smtp::Error) -> Outcome {
    // lettre's message already ends with its causes (the server's reply, the I/O error).
    let message: String = error.to_string().chars().take(MAX_ERROR_TEXT).collect();
    match error.status() {
        Some(code) if error.is_permanent() => Outcome::failed(u16::from(code).to_string(), message),
        // 4xx (greylisting, a full mailbox, a rate limit, a busy server), or no reply to go
        // by: connection refused or reset, DNS, TLS, a timeout, a garbled answer, or a server
        // without STARTTLS or a usable login (which the operator fixes meanwhile).
        _ => Outcome::retry(None, message),
    }
}

#[cfg(test)]
mod tests;
