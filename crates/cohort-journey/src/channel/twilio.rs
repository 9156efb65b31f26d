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

/// Whether `signature` (the `X-Twilio-Signature` header) is Twilio's signature of a webhook
/// request to `url` carrying the form `params` (see [`signature`]). Compared in constant time.
pub fn valid_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let Ok(claimed) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    signing(auth_token, url, params)
        .verify_slice(&claimed)
        .is_ok()
}

/// Twilio's signature of a webhook request to `url` carrying the form `params`: the base64 of
/// an HMAC-SHA1, keyed with the account's auth token, over the URL followed by every
/// parameter's name and value, sorted by name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    base64::engine::general_purpose::STANDARD
        .encode(signing(auth_token, url, params).finalize().into_bytes())
}

fn signing(auth_token: &str, url: &str, params: &[(String, String)]) -> hmac::Hmac<sha1::Sha1> {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::{signature, valid_signature};

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .rev()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn twilio_documented_request_signature_verifies() {
        // The example of Twilio's request-validation guide.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(valid_signature(
            "12345",
            url,
            &params(),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
        assert!(!valid_signature(
            "12346",
            url,
            &params(),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
        let mut changed = params();
        changed[0].1.push('0');
        assert!(!valid_signature(
            "12345",
            url,
            &changed,
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
        assert!(!valid_signature("12345", url, &params(), "not base64!"));
        assert!(!valid_signature("12345", url, &params(), ""));
        assert_eq!(
            signature("12345", url, &params()),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
    }
}
