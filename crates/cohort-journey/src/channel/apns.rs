//! APNs over HTTP/2: `POST /3/device/{token}` with `authorization: bearer <JWT>`,
//! `apns-topic` (the bundle id), `apns-push-type: alert`, `apns-priority: 10`, `apns-id` and a
//! JSON body `{"aps": {"alert": {"title", "body"}}, …custom keys}`.
//!
//! The provider token is an ES256 JWT signed with the team's `.p8` key: header `kid` the key
//! id, claims `iss` the team id and `iat`. Apple refuses tokens older than an hour and too
//! frequent new ones, so one token serves for 50 minutes.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use super::config::{APNS_BASE_URL, APNS_SANDBOX_BASE_URL, ApnsConfig, InvalidChannel};
use super::{Answer, IDEMPOTENCY_KEY, Outcome, Outgoing, PushMessage, apns_id, transport_error};

/// How long one provider token is used.
const TOKEN_REUSE: Duration = Duration::minutes(50);

pub(super) struct Apns {
    base: String,
    team_id: String,
    key_id: String,
    topic: String,
    key: EncodingKey,
    token: Mutex<Option<(String, DateTime<Utc>)>>,
}

impl Apns {
    pub(super) fn new(config: &ApnsConfig) -> Result<Apns, InvalidChannel> {
        let default = if config.sandbox {
            APNS_SANDBOX_BASE_URL
        } else {
            APNS_BASE_URL
        };
        let key = EncodingKey::from_ec_pem(config.private_key.as_bytes()).map_err(|e| {
            InvalidChannel {
                field: "private_key".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Apns {
            base: config
                .base_url
                .as_deref()
                .unwrap_or(default)
                .trim_end_matches('/')
                .to_string(),
            team_id: config.team_id.clone(),
            key_id: config.key_id.clone(),
            topic: config.topic.clone(),
            key,
            token: Mutex::new(None),
        })
    }

    pub(super) fn base(&self) -> &str {
        &self.base
    }

    pub(super) async fn send(
        &self,
        client: &reqwest::Client,
        outgoing: &Outgoing,
        push: &PushMessage,
        now: DateTime<Utc>,
    ) -> Outcome {
        // Device tokens are hexadecimal; anything else is not a token APNs ever issued (and
        // would change the request's path).
        let token = outgoing.to.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Outcome::DeadToken {
                code: "BadDeviceToken".into(),
                message: "a device token is hexadecimal".into(),
            };
        }
        let bearer = match self.provider_token(now) {
            Ok(bearer) => bearer,
            Err(outcome) => return outcome,
        };
        let mut body = Map::new();
        for (key, value) in &push.data {
            // `aps` is Apple's dictionary; custom keys sit beside it.
            if key != "aps" {
                body.insert(key.clone(), Value::String(value.clone()));
            }
        }
        body.insert(
            "aps".into(),
            json!({"alert": {"title": push.title, "body": push.body}}),
        );
        let response = client
            .post(format!("{}/3/device/{token}", self.base))
            .header("authorization", format!("bearer {bearer}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-id", apns_id(&outgoing.key))
            .header(IDEMPOTENCY_KEY, &outgoing.key)
            .json(&Value::Object(body))
            .send()
            .await;
        let answer = match response {
            Ok(response) => match Answer::read(response).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            },
            Err(e) => return transport_error(&e),
        };
        if answer.status.is_success() {
            let header = |name: &str| {
                answer
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let provider_id = header("apns-unique-id")
                .or_else(|| header("apns-id"))
                .unwrap_or_else(|| apns_id(&outgoing.key));
            return Outcome::Sent { provider_id };
        }
        let reason = super::string_at(&answer.json(), "reason")
            .map_or_else(|| answer.status.as_u16().to_string(), str::to_string);
        let message = answer.text();
        match (answer.status.as_u16(), reason.as_str()) {
            (410, _) | (400, "BadDeviceToken") => Outcome::DeadToken {
                code: reason,
                message,
            },
            (403, "ExpiredProviderToken") => {
                self.forget_token();
                Outcome::retry(None, format!("403 {reason}"))
            }
            (403, "InvalidProviderToken") => {
                self.forget_token();
                Outcome::failed(reason, message)
            }
            _ => answer.classify(reason, message, now),
        }
    }

    fn provider_token(&self, now: DateTime<Utc>) -> Result<String, Outcome> {
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, issued)) = cached.as_ref()
            && *issued <= now
            && now < *issued + TOKEN_REUSE
        {
            return Ok(token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        header.typ = None;
        let claims = json!({"iss": self.team_id, "iat": now.timestamp()});
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| Outcome::failed("cohort.jwt", e.to_string()))?;
        *cached = Some((token.clone(), now));
        Ok(token)
    }

    fn forget_token(&self) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
