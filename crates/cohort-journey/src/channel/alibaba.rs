//! Alibaba Cloud SMS: `SendSms` of dysmsapi 2017-05-25, signed with Alibaba Cloud's signature
//! V3 (`ACS3-HMAC-SHA256`; V2, the HMAC-SHA1 query signature, is discontinued).
//!
//! The request is `POST /` with the action and version in `x-acs-action` and `x-acs-version`,
//! the parameters (`PhoneNumbers`, `SignName`, `TemplateCode`, `TemplateParam`, `OutId`) as a
//! form body, and `Authorization: ACS3-HMAC-SHA256 Credential=<key id>,SignedHeaders=<names>,
//! Signature=<hex>`. The signature is the hex HMAC-SHA256, under the key secret, of
//! `ACS3-HMAC-SHA256\n` and the hex SHA-256 of the canonical request:
//!
//! ```text
//! POST\n/\n<canonical query>\n<name:value\n for each signed header, sorted>\n<signed names;…>\n<hex SHA-256 of the body>
//! ```
//!
//! Signed are `host`, `content-type` and every `x-acs-*` header. The answer's `Code` is `OK`
//! (with `BizId`) or an error code.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::{ALIBABA_SMS_ENDPOINT, AlibabaSmsConfig, InvalidChannel};
use super::{Answer, IDEMPOTENCY_KEY, Outcome, Outgoing, SmsMessage, string_at, transport_error};

pub(crate) const ALGORITHM: &str = "ACS3-HMAC-SHA256";
pub(crate) const ACTION: &str = "SendSms";
pub(crate) const VERSION: &str = "2017-05-25";
const FORM: &str = "application/x-www-form-urlencoded";

/// Codes that mean "slow down": the per-number and per-account sending limits and the API's
/// own throttling.
fn is_throttled(code: &str) -> bool {
    code == "isv.BUSINESS_LIMIT_CONTROL" || code.starts_with("Throttling")
}

pub(super) struct Alibaba {
    url: Url,
    host: String,
    access_key_id: String,
    access_key_secret: String,
    sign_name: String,
}

impl Alibaba {
    pub(super) fn new(config: &AlibabaSmsConfig) -> Result<Alibaba, InvalidChannel> {
        let endpoint = config.endpoint.as_deref().unwrap_or(ALIBABA_SMS_ENDPOINT);
        let mut url = Url::parse(endpoint).map_err(|e| InvalidChannel {
            field: "endpoint".into(),
            message: e.to_string(),
        })?;
        url.set_path("/");
        url.set_query(None);
        Ok(Alibaba {
            host: authority(&url),
            url,
            access_key_id: config.access_key_id.clone(),
            access_key_secret: config.access_key_secret.clone(),
            sign_name: config.sign_name.clone(),
        })
    }

    pub(super) async fn send(
        &self,
        client: &reqwest::Client,
        outgoing: &Outgoing,
        sms: &SmsMessage,
        now: DateTime<Utc>,
    ) -> Outcome {
        let Some(template_code) = sms.template_code.as_deref().filter(|c| !c.is_empty()) else {
            return Outcome::failed(
                "cohort.template_code",
                "Alibaba Cloud sends approved templates only: the message has no template code",
            );
        };
        let mut params = vec![
            ("PhoneNumbers", outgoing.to.clone()),
            ("SignName", self.sign_name.clone()),
            ("TemplateCode", template_code.to_string()),
            ("OutId", outgoing.key.clone()),
        ];
        if !sms.template_params.is_empty() {
            params.push((
                "TemplateParam",
                Value::Object(sms.template_params.clone()).to_string(),
            ));
        }
        let body = form_body(&params);
        let payload_hash = hex::encode(Sha256::digest(body.as_bytes()));
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let headers: BTreeMap<String, String> = [
            ("host", self.host.clone()),
            ("content-type", FORM.to_string()),
            ("x-acs-action", ACTION.to_string()),
            ("x-acs-version", VERSION.to_string()),
            ("x-acs-date", now.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("x-acs-signature-nonce", nonce),
            ("x-acs-content-sha256", payload_hash.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let authorization = authorization(
            "POST",
            "/",
            "",
            &headers,
            &payload_hash,
            &self.access_key_id,
            &self.access_key_secret,
        );
        let mut request = client
            .post(self.url.clone())
            .header("authorization", authorization)
            .header(IDEMPOTENCY_KEY, &outgoing.key)
            .body(body);
        // The client writes `host` itself, from the URL, as signed.
        for (name, value) in headers.iter().filter(|(name, _)| *name != "host") {
            request = request.header(name.as_str(), value.as_str());
        }
        let answer = match request.send().await {
            Ok(response) => match Answer::read(response).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            },
            Err(e) => return transport_error(&e),
        };
        let json = answer.json();
        let code = string_at(&json, "Code").unwrap_or_default().to_string();
        let message = string_at(&json, "Message")
            .map(str::to_string)
            .unwrap_or_else(|| answer.text());
        if answer.status.is_success() && code == "OK" {
            let provider_id = string_at(&json, "BizId").unwrap_or_default().to_string();
            return Outcome::Sent { provider_id };
        }
        if is_throttled(&code) {
            return Outcome::retry(
                super::retry_after(&answer.headers, now),
                format!("{code}: {message}"),
            );
        }
        let code = if code.is_empty() {
            answer.status.as_u16().to_string()
        } else {
            code
        };
        answer.classify(code, message, now)
    }
}

/// `host[:port]` as an HTTP client writes the `Host` header for `url`.
pub(crate) fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// RFC 3986 percent-encoding: everything but `A–Z a–z 0–9 - _ . ~`, UTF-8 bytes as `%XY`.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn form_body(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `Authorization` header of signature V3 for a request whose signed headers are
/// `headers` (lower-case names), whose canonical query string is `query` and whose body hashes
/// to `payload_hash` (hex SHA-256).
pub(crate) fn authorization(
    method: &str,
    path: &str,
    query: &str,
    headers: &BTreeMap<String, String>,
    payload_hash: &str,
    access_key_id: &str,
    access_key_secret: &str,
) -> String {
    let mut canonical_headers = String::new();
    for (name, value) in headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value.trim());
        canonical_headers.push('\n');
    }
    let signed_headers = headers.keys().cloned().collect::<Vec<_>>().join(";");
    let canonical_request =
        format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let string_to_sign = format!(
        "{ALGORITHM}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(string_to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// The canonical query string: parameters sorted by name, names and values percent-encoded.
#[cfg(any(test, feature = "standins"))]
pub(crate) fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Computed with Alibaba Cloud's own Python SDK (`alibabacloud-openapi-util` 0.2.4 on PyPI,
    /// `Client.get_authorization(request, "ACS3-HMAC-SHA256", payload_hash, key_id, secret)`).
    #[test]
    fn signatures_match_alibaba_clouds_sdk() {
        let body = form_body(&[
            ("PhoneNumbers", "13800138000".into()),
            ("SignName", "阿里云短信测试".into()),
            ("TemplateCode", "SMS_154950909".into()),
            ("TemplateParam", r#"{"code":"1234"}"#.into()),
            ("OutId", "welcome:1:42:sms-1".into()),
        ]);
        assert_eq!(
            body,
            "PhoneNumbers=13800138000&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95&TemplateCode=SMS_154950909&TemplateParam=%7B%22code%22%3A%221234%22%7D&OutId=welcome%3A1%3A42%3Asms-1"
        );
        let payload_hash = hex::encode(Sha256::digest(body.as_bytes()));
        let signed = headers(&[
            ("host", "dysmsapi.aliyuncs.com"),
            ("content-type", FORM),
            ("x-acs-action", ACTION),
            ("x-acs-version", VERSION),
            ("x-acs-date", "2026-12-03T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-content-sha256", &payload_hash),
        ]);
        assert_eq!(
            authorization(
                "POST",
                "/",
                "",
                &signed,
                &payload_hash,
                "YourAccessKeyId",
                "YourAccessKeySecret"
            ),
            SDK_SIGNED_BODY
        );
        // A request with its parameters in the query string instead, as Alibaba's RPC
        // examples send them.
        let query = canonical_query(&[
            ("RegionId".into(), "cn-shanghai".into()),
            (
                "ImageId".into(),
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd".into(),
            ),
            ("Tag.1.Value".into(), "a b*~".into()),
        ]);
        assert_eq!(
            query,
            "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai&Tag.1.Value=a%20b%2A~"
        );
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let signed = headers(&[
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", "2023-10-26T09:01:01Z"),
            ("x-acs-signature-nonce", "d410180a5abf7fe235dd9b74aca91fc0"),
            ("x-acs-content-sha256", empty),
        ]);
        assert_eq!(
            authorization(
                "POST",
                "/",
                &query,
                &signed,
                empty,
                "YourAccessKeyId",
                "YourAccessKeySecret"
            ),
            SDK_SIGNED_QUERY
        );
    }

    const SDK_SIGNED_BODY: &str = "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=72d2148c107ec121f317f86bd4c7db2a6eab7b36ca4496a6251da864beab5109";
    const SDK_SIGNED_QUERY: &str = "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=ed0604879312de5545271213002bea235a83f511a6b3307a4e977b20d41f06eb";

    #[test]
    fn throttling_codes_are_transient() {
        assert!(is_throttled("isv.BUSINESS_LIMIT_CONTROL"));
        assert!(is_throttled("Throttling.User"));
        assert!(!is_throttled("isv.MOBILE_NUMBER_ILLEGAL"));
        assert!(!is_throttled("OK"));
    }
}
