//! A configured channel: which provider, how to reach it, and its credentials.
//!
//! Configurations are JSON objects tagged by `provider`; [`ChannelConfig::from_json`] reads and
//! checks one, and its errors name the field. [`ChannelConfig::redacted`] is the same
//! configuration with every secret replaced by [`REDACTED`], for listing through an API; a
//! redacted configuration is refused if it comes back, so a secret is never overwritten by its
//! mask.
//!
//! ```
//! use cohort_journey::channel::config::{ChannelConfig, REDACTED};
//! use cohort_journey::definition::ChannelKind;
//!
//! let config = ChannelConfig::from_json(r#"{
//!   "provider": "twilio",
//!   "account_sid": "AC00000000000000000000000000000001",
//!   "auth_token": "0123456789abcdef0123456789abcdef",
//!   "from": "+15005550006"
//! }"#)?;
//! assert_eq!(config.kind(), ChannelKind::Sms);
//! let shown = serde_json::to_value(config.redacted()).unwrap();
//! assert_eq!(shown["auth_token"], REDACTED);
//!
//! let refused = ChannelConfig::from_json(r#"{"provider": "webhook", "url": "ftp://x", "secret": "whsec_x"}"#)
//!     .unwrap_err();
//! assert_eq!(refused.field, "url");
//! # Ok::<(), cohort_journey::channel::config::InvalidChannel>(())
//! ```

use std::collections::BTreeMap;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tracking::{LinkSigner, TrackingError};
use crate::definition::ChannelKind;
use crate::webhook::WebhookSecret;

/// What a secret shows as in [`ChannelConfig::redacted`].
pub const REDACTED: &str = "********";

/// Twilio's API, where its Messages API lives.
pub const TWILIO_BASE_URL: &str = "https://api.twilio.com";
/// Alibaba Cloud's SMS API (dysmsapi), its public endpoint.
pub const ALIBABA_SMS_ENDPOINT: &str = "https://dysmsapi.aliyuncs.com";
/// FCM's HTTP v1 API.
pub const FCM_BASE_URL: &str = "https://fcm.googleapis.com";
/// APNs for apps in production.
pub const APNS_BASE_URL: &str = "https://api.push.apple.com";
/// APNs for development builds of apps.
pub const APNS_SANDBOX_BASE_URL: &str = "https://api.sandbox.push.apple.com";

/// A configuration that cannot be used: the field (a path such as
/// `service_account.private_key`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidChannel {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidChannel {
    InvalidChannel {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A configured channel, by provider.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ChannelConfig {
    Twilio(TwilioConfig),
    AlibabaSms(AlibabaSmsConfig),
    Fcm(FcmConfig),
    Apns(ApnsConfig),
    Webhook(WebhookConfig),
    Smtp(SmtpConfig),
}

impl std::fmt::Debug for ChannelConfig {
    /// Debug output shows the redacted configuration, so logs never carry a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.redacted() {
            ChannelConfig::Twilio(c) => f.debug_tuple("Twilio").field(&c).finish(),
            ChannelConfig::AlibabaSms(c) => f.debug_tuple("AlibabaSms").field(&c).finish(),
            ChannelConfig::Fcm(c) => f.debug_tuple("Fcm").field(&c).finish(),
            ChannelConfig::Apns(c) => f.debug_tuple("Apns").field(&c).finish(),
            ChannelConfig::Webhook(c) => f.debug_tuple("Webhook").field(&c).finish(),
            ChannelConfig::Smtp(c) => f.debug_tuple("Smtp").field(&c).finish(),
        }
    }
}

/// SMS through Twilio's Messages API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// `AC…`, 34 characters.
    pub account_sid: String,
    pub auth_token: String,
    /// The sending number (E.164) or alphanumeric sender id; or else …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// … a Messaging Service (`MG…`), which picks the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The URL Twilio is given for incoming messages: this server's `/hooks/sms/{channel}` as
    /// the internet reaches it. Replies posted there are taken only with Twilio's signature of
    /// that URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_url: Option<String>,
}

/// SMS through Alibaba Cloud's `SendSms` (dysmsapi 2017-05-25). The message's template code
/// comes with each message (templates are approved per account in Alibaba's console).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlibabaSmsConfig {
    pub access_key_id: String,
    pub access_key_secret: String,
    /// The approved signature (签名) shown in 【】 before each message.
    pub sign_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Push to Android (and any app using Firebase) through FCM's HTTP v1 API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The Firebase project; the service account's `project_id` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The service account's JSON key file, as Google's console downloads it.
    pub service_account: ServiceAccount,
}

/// The fields of a Google service-account key that the OAuth2 JWT-bearer grant uses; the
/// file's other fields are accepted and dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_id: Option<String>,
    /// Where the signed assertion is exchanged for an access token.
    pub token_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

/// Push to Apple devices through APNs, with token-based (`.p8`) authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The Apple developer team id (10 characters).
    pub team_id: String,
    /// The id of the `.p8` key (10 characters).
    pub key_id: String,
    /// The `.p8` file's text (PKCS#8 PEM, a P-256 key).
    pub private_key: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Development builds of the app: the sandbox gateway when `base_url` is absent.
    #[serde(default)]
    pub sandbox: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// Calls to an HTTP endpoint, signed per Standard Webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// `whsec_` and base64: the receiver's verification secret.
    pub secret: String,
    /// Sent with every call (an API key the receiver expects, say). Values are secrets too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Email through an SMTP server (a relay such as Postfix, or a provider's submission port).
///
/// Links in each message (one-click unsubscribe, open pixel, click redirects) point at
/// `public_url`, this Cohort server as recipients reach it, and are signed with `link_secret`
/// ([`super::tracking`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// 25 without TLS, 587 with STARTTLS, 465 with TLS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Given together with `password`, for servers that require authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The sender: `Shop <news@shop.example>` or a bare address. Its domain ends each
    /// `Message-ID`.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// This Cohort server's base URL as recipients reach it (`https://cohort.shop.example`),
    /// without query or fragment.
    pub public_url: String,
    /// Signs tracking and unsubscribe links: at least 32 bytes. Changing it breaks the links
    /// of every message already sent.
    pub link_secret: String,
    /// Adds the open pixel to HTML bodies.
    #[serde(default = "enabled")]
    pub track_opens: bool,
    /// Sends the HTML body's http(s) links through Cohort's click redirect.
    #[serde(default = "enabled")]
    pub track_clicks: bool,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain SMTP: only for a relay on the same host or a private network. Credentials are
    /// refused with it.
    None,
    /// Upgrade with STARTTLS, which must succeed (a server that does not offer it is an error).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, "implicit TLS").
    Tls,
}

impl SmtpConfig {
    /// What makes and verifies this channel's unsubscribe and tracking links: the server's
    /// link routes verify with it, and templates can show [`super::tracking::Links::unsubscribe_url`].
    pub fn link_signer(&self) -> Result<LinkSigner, TrackingError> {
        LinkSigner::new(&self.public_url, &self.link_secret)
    }

    /// The configured port, or the usual one for the security.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::None => 25,
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
        })
    }
}

fn enabled() -> bool {
    true
}

/// Headers a webhook configuration may not set: the sender writes them.
const RESERVED_HEADERS: [&str; 6] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "idempotency-key",
    "content-type",
    "content-length",
];

impl ChannelConfig {
    /// Reads a configuration from JSON and checks it.
    pub fn from_json(text: &str) -> Result<ChannelConfig, InvalidChannel> {
        let mut value: Value =
            serde_json::from_str(text).map_err(|e| invalid("", e.to_string()))?;
        // The tag is read first so that errors inside the provider's fields keep their path
        // (serde's internally tagged enums buffer the content and lose it).
        let provider = match value.as_object_mut().and_then(|o| o.remove("provider")) {
            Some(Value::String(provider)) => provider,
            _ => {
                return Err(invalid(
                    "provider",
                    format!("give the provider: {PROVIDERS}"),
                ));
            }
        };
        let config = match provider.as_str() {
            "twilio" => ChannelConfig::Twilio(fields(value)?),
            "alibaba_sms" => ChannelConfig::AlibabaSms(fields(value)?),
            "fcm" => ChannelConfig::Fcm(fields(value)?),
            "apns" => ChannelConfig::Apns(fields(value)?),
            "webhook" => ChannelConfig::Webhook(fields(value)?),
            "smtp" => ChannelConfig::Smtp(fields(value)?),
            other => {
                return Err(invalid(
                    "provider",
                    format!("unknown provider {other:?}; known: {PROVIDERS}"),
                ));
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// What the channel sends, and so which templates and steps fit it.
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelConfig::Twilio(_) | ChannelConfig::AlibabaSms(_) => ChannelKind::Sms,
            ChannelConfig::Fcm(_) | ChannelConfig::Apns(_) => ChannelKind::Push,
            ChannelConfig::Webhook(_) => ChannelKind::Webhook,
            ChannelConfig::Smtp(_) => ChannelKind::Email,
        }
    }

    /// The provider's name, as the `provider` tag writes it.
    pub fn provider(&self) -> &'static str {
        match self {
            ChannelConfig::Twilio(_) => "twilio",
            ChannelConfig::AlibabaSms(_) => "alibaba_sms",
            ChannelConfig::Fcm(_) => "fcm",
            ChannelConfig::Apns(_) => "apns",
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Smtp(_) => "smtp",
        }
    }

    /// The same configuration with each secret shown as [`REDACTED`].
    pub fn redacted(&self) -> ChannelConfig {
        let mask = || REDACTED.to_string();
        match self.clone() {
            ChannelConfig::Twilio(c) => ChannelConfig::Twilio(TwilioConfig {
                auth_token: mask(),
                ..c
            }),
            ChannelConfig::AlibabaSms(c) => ChannelConfig::AlibabaSms(AlibabaSmsConfig {
                access_key_secret: mask(),
                ..c
            }),
            ChannelConfig::Fcm(c) => ChannelConfig::Fcm(FcmConfig {
                service_account: ServiceAccount {
                    private_key: mask(),
                    ..c.service_account
                },
                ..c
            }),
            ChannelConfig::Apns(c) => ChannelConfig::Apns(ApnsConfig {
                private_key: mask(),
                ..c
            }),
            ChannelConfig::Webhook(c) => ChannelConfig::Webhook(WebhookConfig {
                secret: mask(),
                headers: c.headers.keys().map(|k| (k.clone(), mask())).collect(),
                ..c
            }),
            ChannelConfig::Smtp(c) => ChannelConfig::Smtp(SmtpConfig {
                password: c.password.as_ref().map(|_| mask()),
                link_secret: mask(),
                ..c
            }),
        }
    }

    /// Checks every field: URLs, identifiers, keys (parsed), secrets (not redacted).
    pub fn validate(&self) -> Result<(), InvalidChannel> {
        match self {
            ChannelConfig::Twilio(c) => {
                sid("account_sid", &c.account_sid, "AC")?;
                secret("auth_token", &c.auth_token)?;
                match (&c.from, &c.messaging_service_sid) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "messaging_service_sid",
                            "give either from or messaging_service_sid, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            "from",
                            "give the sending number (from) or a messaging_service_sid",
                        ));
                    }
                    (Some(from), None) => present("from", from)?,
                    (None, Some(service)) => sid("messaging_service_sid", service, "MG")?,
                }
                optional_url("base_url", c.base_url.as_deref())?;
                optional_url("inbound_url", c.inbound_url.as_deref())
            }
            ChannelConfig::AlibabaSms(c) => {
                present("access_key_id", &c.access_key_id)?;
                secret("access_key_secret", &c.access_key_secret)?;
                present("sign_name", &c.sign_name)?;
                optional_url("endpoint", c.endpoint.as_deref())
            }
            ChannelConfig::Fcm(c) => {
                if let Some(project) = &c.project_id {
                    present("project_id", project)?;
                } else if c.service_account.project_id.is_none() {
                    return Err(invalid(
                        "project_id",
                        "give the Firebase project id (the service account names none)",
                    ));
                }
                optional_url("base_url", c.base_url.as_deref())?;
                let account = &c.service_account;
                present("service_account.client_email", &account.client_email)?;
                url("service_account.token_uri", &account.token_uri)?;
                secret("service_account.private_key", &account.private_key)?;
                jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(
                    |e| {
                        invalid(
                            "service_account.private_key",
                            format!("not an RSA private key in PEM: {e}"),
                        )
                    },
                )?;
                Ok(())
            }
            ChannelConfig::Apns(c) => {
                present("team_id", &c.team_id)?;
                present("key_id", &c.key_id)?;
                present("topic", &c.topic)?;
                secret("private_key", &c.private_key)?;
                jsonwebtoken::EncodingKey::from_ec_pem(c.private_key.as_bytes()).map_err(|e| {
                    invalid(
                        "private_key",
                        format!("not a .p8 key (P-256, PKCS#8 PEM): {e}"),
                    )
                })?;
                optional_url("base_url", c.base_url.as_deref())
            }
            ChannelConfig::Webhook(c) => {
                url("url", &c.url)?;
                secret("secret", &c.secret)?;
                WebhookSecret::parse(&c.secret).map_err(|e| invalid("secret", e.to_string()))?;
                for (name, value) in &c.headers {
                    let field = format!("headers.{name}");
                    let parsed = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| invalid(&field, "not a valid header name"))?;
                    if RESERVED_HEADERS.contains(&parsed.as_str()) {
                        return Err(invalid(&field, "is set by Cohort on every call"));
                    }
                    secret(&field, value)?;
                    HeaderValue::from_str(value)
                        .map_err(|_| invalid(&field, "not a valid header value"))?;
                }
                Ok(())
            }
            ChannelConfig::Smtp(c) => validate_smtp(c),
        }
    }
}

fn validate_smtp(c: &SmtpConfig) -> Result<(), InvalidChannel> {
    present("host", &c.host)?;
    if c.port == Some(0) {
        return Err(invalid("port", "must be between 1 and 65535"));
    }
    match (&c.username, &c.password) {
        (Some(username), Some(password)) => {
            present("username", username)?;
            secret("password", password)?;
            if c.security == SmtpSecurity::None {
                return Err(invalid(
                    "password",
                    "would cross the network in clear; use security starttls or tls",
                ));
            }
        }
        (Some(_), None) => return Err(invalid("password", "give it with the username")),
        (None, Some(_)) => return Err(invalid("username", "give it with the password")),
        (None, None) => {}
    }
    mailbox("from", &c.from)?;
    if let Some(reply_to) = &c.reply_to {
        mailbox("reply_to", reply_to)?;
    }
    secret("link_secret", &c.link_secret)?;
    c.link_signer().map_err(|e| match e {
        TrackingError::ShortSecret(_) => invalid("link_secret", e.to_string()),
        _ => invalid("public_url", e.to_string()),
    })?;
    Ok(())
}

pub(super) fn mailbox(
    field: &str,
    value: &str,
) -> Result<lettre::message::Mailbox, InvalidChannel> {
    value.parse().map_err(|e| {
        invalid(
            field,
            format!("not an email address (Name <user@domain>): {e}"),
        )
    })
}

const PROVIDERS: &str = "twilio, alibaba_sms, fcm, apns, webhook, smtp";

fn fields<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, InvalidChannel> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        InvalidChannel {
            field: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

fn present(field: &str, value: &str) -> Result<(), InvalidChannel> {
    if value.trim().is_empty() {
        return Err(invalid(field, "is empty"));
    }
    Ok(())
}

fn secret(field: &str, value: &str) -> Result<(), InvalidChannel> {
    present(field, value)?;
    if value == REDACTED {
        return Err(invalid(
            field,
            "is the redacted placeholder; give the secret itself",
        ));
    }
    Ok(())
}

fn sid(field: &str, value: &str, prefix: &str) -> Result<(), InvalidChannel> {
    let well_formed = value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(invalid(
            field,
            format!("a Twilio {prefix} id is {prefix} and 32 hexadecimal digits"),
        ));
    }
    Ok(())
}

fn url(field: &str, value: &str) -> Result<(), InvalidChannel> {
    let parsed = Url::parse(value).map_err(|e| invalid(field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(invalid(field, "must be an http(s) URL with a host"));
    }
    Ok(())
}

fn optional_url(field: &str, value: Option<&str>) -> Result<(), InvalidChannel> {
    value.map_or(Ok(()), |v| url(field, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::standin;

    fn twilio() -> serde_json::Value {
        serde_json::json!({
            "provider": "twilio",
            "account_sid": "AC00000000000000000000000000000001",
            "auth_token": "secret-token",
            "from": "+15005550006"
        })
    }

    fn refusal(value: serde_json::Value) -> InvalidChannel {
        ChannelConfig::from_json(&value.to_string()).unwrap_err()
    }

    #[test]
    fn every_provider_reads_and_knows_its_kind() {
        let configs = [
            (twilio(), ChannelKind::Sms),
            (
                serde_json::json!({"provider": "alibaba_sms", "access_key_id": "LTAI", "access_key_secret": "s", "sign_name": "Cohort"}),
                ChannelKind::Sms,
            ),
            (
                serde_json::to_value(standin::fcm_config("http://127.0.0.1:1")).unwrap(),
                ChannelKind::Push,
            ),
            (
                serde_json::to_value(standin::apns_config("http://127.0.0.1:1")).unwrap(),
                ChannelKind::Push,
            ),
            (
                serde_json::json!({"provider": "webhook", "url": "https://example.test/hook", "secret": standin::WEBHOOK_SECRET}),
                ChannelKind::Webhook,
            ),
        ];
        for (value, kind) in configs {
            let config = ChannelConfig::from_json(&value.to_string())
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(config.kind(), kind, "{value}");
            assert_eq!(value["provider"], config.provider());
            let again: ChannelConfig =
                serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
            assert_eq!(again, config);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let mut both = twilio();
        both["messaging_service_sid"] = "MG00000000000000000000000000000001".into();
        assert_eq!(refusal(both).field, "messaging_service_sid");

        let mut neither = twilio();
        neither.as_object_mut().unwrap().remove("from");
        assert_eq!(refusal(neither).field, "from");

        let mut bad_sid = twilio();
        bad_sid["account_sid"] = "AC123".into();
        assert_eq!(refusal(bad_sid).field, "account_sid");

        let mut unknown = twilio();
        unknown["colour"] = "red".into();
        assert!(refusal(unknown).message.contains("colour"));

        let mut fcm = serde_json::to_value(standin::fcm_config("http://127.0.0.1:1")).unwrap();
        fcm["service_account"]["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n".into();
        assert_eq!(refusal(fcm).field, "service_account.private_key");

        let mut fcm = serde_json::to_value(standin::fcm_config("http://127.0.0.1:1")).unwrap();
        fcm["service_account"]
            .as_object_mut()
            .unwrap()
            .remove("token_uri");
        assert_eq!(refusal(fcm).field, "service_account");

        let mut apns = serde_json::to_value(standin::apns_config("http://127.0.0.1:1")).unwrap();
        // An RSA key is not a .p8 key.
        apns["private_key"] = standin::FCM_PRIVATE_KEY.into();
        assert_eq!(refusal(apns).field, "private_key");

        let hook = |headers: serde_json::Value| {
            serde_json::json!({"provider": "webhook", "url": "https://example.test/hook",
                "secret": standin::WEBHOOK_SECRET, "headers": headers})
        };
        assert_eq!(
            refusal(hook(serde_json::json!({"Webhook-Signature": "x"}))).field,
            "headers.Webhook-Signature"
        );
        assert_eq!(
            refusal(hook(serde_json::json!({"bad header": "x"}))).field,
            "headers.bad header"
        );
        let mut secret = hook(serde_json::json!({}));
        secret["secret"] = "whsec_short".into();
        assert_eq!(refusal(secret).field, "secret");
        assert_eq!(
            refusal(serde_json::json!({"provider": "pigeon"})).field,
            "provider"
        );
        assert_eq!(refusal(serde_json::json!({"from": "x"})).field, "provider");
    }

    #[test]
    fn redacted_views_hide_every_secret_and_cannot_be_saved_back() {
        let configs = [
            twilio(),
            serde_json::json!({"provider": "alibaba_sms", "access_key_id": "LTAI", "access_key_secret": "ali-secret", "sign_name": "Cohort"}),
            serde_json::to_value(standin::fcm_config("http://127.0.0.1:1")).unwrap(),
            serde_json::to_value(standin::apns_config("http://127.0.0.1:1")).unwrap(),
            serde_json::json!({"provider": "webhook", "url": "https://example.test/hook",
                "secret": standin::WEBHOOK_SECRET, "headers": {"X-Api-Key": "hook-key"}}),
        ];
        for value in configs {
            let config = ChannelConfig::from_json(&value.to_string()).unwrap();
            let shown = serde_json::to_string(&config.redacted()).unwrap();
            let debug = format!("{config:?}");
            for hidden in [
                "secret-token",
                "ali-secret",
                "PRIVATE KEY",
                standin::WEBHOOK_SECRET,
                "hook-key",
            ] {
                assert!(!shown.contains(hidden), "{shown}");
                assert!(!debug.contains(hidden), "{debug}");
            }
            assert!(shown.contains(REDACTED));
            let back = ChannelConfig::from_json(&shown).unwrap_err();
            assert!(back.message.contains("redacted"), "{back}");
        }
    }
}
