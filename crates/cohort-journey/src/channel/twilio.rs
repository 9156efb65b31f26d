//! Twilio's Messages API: `POST /2010-04-01/Accounts/{sid}/Messages.json`, HTTP Basic auth
//! (account SID and auth token), a form with `To`, `From` or `MessagingServiceSid`, and
//! `Body`. The answer is the message resource (`sid`) or an error (`code`, `message`).

use super::config::{TWILIO_BASE_URL, TwilioConfig};
use super::{Answer, IDEMPOTENCY_KEY, Outcome, Outgoing, SmsMessage, string_at, transport_error};

/// "Attempt to send to unsubscribed recipient": the number replied STOP to this sender.
pub(super) const UNSUBSCRIBED_CODE: i64 = 21610;

pub(super) struct Twilio {
    url: String,
    account_sid: String,
    auth_token: String,
    sender: (&'static str, String),
}

impl Twilio {
    pub(super) fn new(config: &TwilioConfig) -> Twilio {
        let base = config.base_url.as_deref().unwrap_or(TWILIO_BASE_URL);
        let sender = match (&config.from, &config.messaging_service_sid) {
            (_, Some(service)) => ("MessagingServiceSid", service.clone()),
            (from, None) => ("From", from.clone().unwrap_or_default()),
        };
        Twilio {
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                base.trim_end_matches('/'),
                config.account_sid
            ),
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
            sender,
        }
    }

    pub(super) async fn send(
        &self,
        client: &reqwest::Client,
        outgoing: &Outgoing,
        sms: &SmsMessage,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Outcome {
        let form = [
            ("To", outgoing.to.as_str()),
            (self.sender.0, self.sender.1.as_str()),
            ("Body", sms.text.as_str()),
        ];
        let response = client
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header(IDEMPOTENCY_KEY, &outgoing.key)
            .form(&form)
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
            let provider_id = string_at(&json, "sid").unwrap_or_default().to_string();
            return Outcome::Sent { provider_id };
        }
        let code = json.get("code").and_then(serde_json::Value::as_i64);
        let message = string_at(&json, "message")
            .map(str::to_string)
            .unwrap_or_else(|| answer.text());
        if code == Some(UNSUBSCRIBED_CODE) {
            return Outcome::Unsubscribed {
                code: UNSUBSCRIBED_CODE.to_string(),
                message,
            };
        }
        let code = code.map_or_else(|| answer.status.as_u16().to_string(), |c| c.to_string());
        // Twilio answers throttling with 429 (its code 20429) and outages with 5xx.
        answer.classify(code, message, now)
    }
}
