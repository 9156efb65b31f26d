//! FCM's HTTP v1 API: `POST /v1/projects/{project}/messages:send` with
//! `Authorization: Bearer <OAuth2 access token>` and `{"message": {"token", "notification",
//! "data"}}`.
//!
//! The access token comes from the service account's OAuth2 JWT-bearer grant: an RS256 JWT
//! (`iss` the account's e-mail, `scope` FCM's, `aud` the `token_uri`, valid one hour) posted to
//! `token_uri`. It is cached until five minutes before it expires, fetched by one send at a time,
//! and dropped when FCM answers 401.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::config::{FCM_BASE_URL, FcmConfig, InvalidChannel};
use super::{
    Answer, IDEMPOTENCY_KEY, Outcome, Outgoing, PushMessage, is_transient, string_at,
    transport_error,
};

pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub(crate) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long an assertion is valid: Google accepts at most an hour.
const ASSERTION_LIFETIME: i64 = 3600;
/// A cached token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::minutes(5);

pub(super) struct Fcm {
    send_url: String,
    token_uri: String,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    token: tokio::sync::Mutex<Option<(String, DateTime<Utc>)>>,
}

impl Fcm {
    pub(super) fn new(config: &FcmConfig) -> Result<Fcm, InvalidChannel> {
        let account = &config.service_account;
        let project = config
            .project_id
            .as_deref()
            .or(account.project_id.as_deref())
            .unwrap_or_default();
        let base = config.base_url.as_deref().unwrap_or(FCM_BASE_URL);
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|e| {
            InvalidChannel {
                field: "service_account.private_key".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Fcm {
            send_url: format!(
                "{}/v1/projects/{project}/messages:send",
                base.trim_end_matches('/')
            ),
            token_uri: account.token_uri.clone(),
            client_email: account.client_email.clone(),
            key_id: account.private_key_id.clone(),
            key,
            token: tokio::sync::Mutex::new(None),
        })
    }

    pub(super) async fn send(
        &self,
        client: &reqwest::Client,
        outgoing: &Outgoing,
        push: &PushMessage,
        now: DateTime<Utc>,
    ) -> Outcome {
        let token = match self.access_token(client, &outgoing.key, now).await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let mut message = json!({
            "token": outgoing.to,
            "notification": {"title": push.title, "body": push.body},
        });
        if !push.data.is_empty() {
            message["data"] = json!(push.data);
        }
        let response = client
            .post(&self.send_url)
            .bearer_auth(&token)
            .header(IDEMPOTENCY_KEY, &outgoing.key)
            .json(&json!({ "message": message }))
            .send()
            .await;
        let answer = match response {
            Ok(response) => match Answer::read(response).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            },
            Err(e) => return transport_error(&e),
        };
        let json = answer.json();
        if answer.status.is_success() {
            let provider_id = string_at(&json, "name").unwrap_or_default().to_string();
            return Outcome::Sent { provider_id };
        }
        let error = json.get("error").cloned().unwrap_or(Value::Null);
        let message = string_at(&error, "message")
            .map(str::to_string)
            .unwrap_or_else(|| answer.text());
        // FCM's own code is in the details; the status (`NOT_FOUND`, …) is the fallback.
        let code = error
            .get("details")
            .and_then(Value::as_array)
            .and_then(|details| {
                details
                    .iter()
                    .find_map(|d| d.get("errorCode").and_then(Value::as_str))
            })
            .or_else(|| string_at(&error, "status"))
            .map_or_else(|| answer.status.as_u16().to_string(), str::to_string);
        if code == "UNREGISTERED" || answer.status == reqwest::StatusCode::NOT_FOUND {
            return Outcome::DeadToken { code, message };
        }
        if answer.status == reqwest::StatusCode::UNAUTHORIZED {
            // The token expired early or was revoked: the next attempt fetches another.
            *self.token.lock().await = None;
            return Outcome::retry(None, format!("401 {code}: {message}"));
        }
        answer.classify(code, message, now)
    }

    /// The cached access token, or a new one.
    async fn access_token(
        &self,
        client: &reqwest::Client,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<String, Outcome> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && now + REFRESH_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch_token(client, key, now).await?;
        *cached = Some((token.clone(), now + lifetime));
        Ok(token)
    }

    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, Duration), Outcome> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let iat = now.timestamp();
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME,
        });
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| Outcome::failed("cohort.jwt", e.to_string()))?;
        let response = client
            .post(&self.token_uri)
            .header(IDEMPOTENCY_KEY, key)
            .form(&[
                ("grant_type", GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let answer = Answer::read(response).await?;
        let json = answer.json();
        if answer.status.is_success() {
            let Some(token) = string_at(&json, "access_token") else {
                return Err(Outcome::retry(
                    None,
                    "the OAuth2 token answer has no access_token",
                ));
            };
            let lifetime = json
                .get("expires_in")
                .and_then(Value::as_i64)
                .unwrap_or(ASSERTION_LIFETIME);
            return Ok((token.to_string(), Duration::seconds(lifetime)));
        }
        // OAuth2 errors: `error` (`invalid_grant`: a deleted key, a clock far off) and
        // `error_description`.
        let code = string_at(&json, "error").unwrap_or("oauth");
        let message = string_at(&json, "error_description")
            .map(str::to_string)
            .unwrap_or_else(|| answer.text());
        if is_transient(answer.status) {
            return Err(answer.classify(format!("oauth.{code}"), message, now));
        }
        Err(Outcome::failed(format!("oauth.{code}"), message))
    }
}
