//! Webhook calls: `POST` the JSON body to the channel's URL, signed per Standard Webhooks
//! ([`crate::webhook`]) with `webhook-id` the effect key and `webhook-timestamp` the real time
//! of the call. Any 2xx is delivered; 408, 429 and 5xx are retried; other statuses fail.

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::config::{InvalidChannel, WebhookConfig};
use super::{Answer, IDEMPOTENCY_KEY, Outcome, Outgoing, transport_error};
use crate::webhook::WebhookSecret;

pub(super) struct Webhook {
    url: String,
    secret: WebhookSecret,
    headers: HeaderMap,
}

impl Webhook {
    pub(super) fn new(config: &WebhookConfig) -> Result<Webhook, InvalidChannel> {
        let invalid = |field: String, message: String| InvalidChannel { field, message };
        let secret = WebhookSecret::parse(&config.secret)
            .map_err(|e| invalid("secret".into(), e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let field = format!("headers.{name}");
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| invalid(field.clone(), e.to_string()))?;
            let mut value =
                HeaderValue::from_str(value).map_err(|e| invalid(field, e.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Webhook {
            url: config.url.clone(),
            secret,
            headers,
        })
    }

    pub(super) async fn send(
        &self,
        client: &reqwest::Client,
        outgoing: &Outgoing,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Outcome {
        let body = body.to_string().into_bytes();
        let signed = self.secret.sign(&outgoing.key, now.timestamp(), &body);
        let mut request = client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY, &outgoing.key);
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        let answer = match request.body(body).send().await {
            Ok(response) => match Answer::read(response).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            },
            Err(e) => return transport_error(&e),
        };
        if answer.status.is_success() {
            return Outcome::Sent {
                provider_id: outgoing.key.clone(),
            };
        }
        let code = answer.status.as_u16().to_string();
        answer.classify(code, answer.text(), now)
    }
}
