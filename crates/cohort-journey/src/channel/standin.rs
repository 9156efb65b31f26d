//! Loopback stand-ins for the providers, for tests (feature `standins`, or this crate's own
//! tests): each is an HTTP server on `127.0.0.1` that checks every request against the
//! provider's documented format and answers as the provider would.
//!
//! A stand-in checks the path, method and content type, the credentials (Twilio's Basic auth
//! recomputed; Alibaba's signature V3 recomputed from the received headers and body; the RS256
//! assertion of FCM's token grant and the ES256 APNs token verified with the public keys of the
//! test keys; the FCM bearer token one it issued; the Standard Webhooks signature recomputed),
//! the required fields and the `Idempotency-Key`. APNs's stand-in accepts HTTP/2 only. A request
//! that fails a check is answered 400 and listed in [`StandIn::problems`]; tests assert that
//! list is empty.
//!
//! Answers are the provider's success answer unless a test queued others with
//! [`StandIn::reply_next`] (the provider's documented errors: [`Reply::twilio_error`],
//! [`Reply::fcm_error`], [`Reply::apns_error`], …). [`StandIn::keys`] counts the requests per
//! idempotency key, and [`StandIn::conflicting_keys`] lists keys received with two different
//! bodies: exactly-once tests assert on both.
//!
//! The keys in `channel/testkeys/` were generated for Cohort's tests and secure nothing.
//!
//! ```no_run
//! # async fn run() {
//! use cohort_journey::channel::standin::{Provider, Reply, StandIn};
//! use cohort_journey::channel::{Message, Outgoing, Outcome, Sender, SmsMessage};
//! let twilio = StandIn::start(Provider::Twilio).await;
//! let sender = Sender::new(&twilio.config()).unwrap();
//! twilio.reply_next(Reply::twilio_error(400, 21610, "unsubscribed recipient"));
//! let outgoing = Outgoing { key: "k1".into(), to: "+15005550006".into(),
//!     message: Message::Sms(SmsMessage::text("hi")) };
//! let outcome = sender.send(&outgoing, chrono::Utc::now()).await;
//! assert!(matches!(outcome, Outcome::Unsubscribed { .. }));
//! assert!(twilio.problems().is_empty());
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Version};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::config::{
    AlibabaSmsConfig, ApnsConfig, ChannelConfig, FcmConfig, ServiceAccount, TwilioConfig,
    WebhookConfig,
};
use super::{alibaba, fcm};
use crate::webhook::WebhookSecret;

pub const TWILIO_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_AUTH_TOKEN: &str = "stand-in-auth-token";
pub const TWILIO_FROM: &str = "+15005550006";
pub const ALIBABA_ACCESS_KEY_ID: &str = "LTAIstandin";
pub const ALIBABA_ACCESS_KEY_SECRET: &str = "stand-in-access-key-secret";
pub const ALIBABA_SIGN_NAME: &str = "Cohort";
pub const FCM_PROJECT: &str = "cohort-standin";
pub const FCM_CLIENT_EMAIL: &str = "cohort@cohort-standin.iam.gserviceaccount.com";
pub const FCM_PRIVATE_KEY_ID: &str = "standin-key-1";
/// The test service account's RSA key (PKCS#8 PEM) and its public half.
pub const FCM_PRIVATE_KEY: &str = include_str!("testkeys/fcm-service-account.key.pem");
pub const FCM_PUBLIC_KEY: &str = include_str!("testkeys/fcm-service-account.pub.pem");
pub const APNS_TEAM_ID: &str = "TEAM123456";
pub const APNS_KEY_ID: &str = "KEY1234567";
pub const APNS_TOPIC: &str = "com.example.cohort";
/// The test `.p8` key (P-256, PKCS#8 PEM) and its public half.
pub const APNS_PRIVATE_KEY: &str = include_str!("testkeys/apns-auth-key.p8");
pub const APNS_PUBLIC_KEY: &str = include_str!("testkeys/apns-auth-key.pub.pem");
pub const WEBHOOK_SECRET: &str = "whsec_3SLgZ2BXK98iMTg6RP4C3BujAjocgWW3FDrIeNN+2Xo=";
/// The webhook stand-in's path, and a header its channel sends.
pub const WEBHOOK_PATH: &str = "/hooks/cohort";
pub const WEBHOOK_API_KEY: (&str, &str) = ("x-api-key", "stand-in-api-key");

/// Twilio's configuration for a stand-in at `base`.
pub fn twilio_config(base: &str) -> ChannelConfig {
    ChannelConfig::Twilio(TwilioConfig {
        account_sid: TWILIO_ACCOUNT_SID.into(),
        auth_token: TWILIO_AUTH_TOKEN.into(),
        from: Some(TWILIO_FROM.into()),
        messaging_service_sid: None,
        base_url: Some(base.into()),
        inbound_url: None,
    })
}

pub fn alibaba_config(base: &str) -> ChannelConfig {
    ChannelConfig::AlibabaSms(AlibabaSmsConfig {
        access_key_id: ALIBABA_ACCESS_KEY_ID.into(),
        access_key_secret: ALIBABA_ACCESS_KEY_SECRET.into(),
        sign_name: ALIBABA_SIGN_NAME.into(),
        endpoint: Some(base.into()),
    })
}

/// FCM's configuration for a stand-in at `base`, which also serves the token endpoint.
pub fn fcm_config(base: &str) -> ChannelConfig {
    ChannelConfig::Fcm(FcmConfig {
        project_id: None,
        base_url: Some(base.into()),
        service_account: ServiceAccount {
            client_email: FCM_CLIENT_EMAIL.into(),
            private_key: FCM_PRIVATE_KEY.into(),
            private_key_id: Some(FCM_PRIVATE_KEY_ID.into()),
            token_uri: format!("{base}/token"),
            project_id: Some(FCM_PROJECT.into()),
        },
    })
}

pub fn apns_config(base: &str) -> ChannelConfig {
    ChannelConfig::Apns(ApnsConfig {
        team_id: APNS_TEAM_ID.into(),
        key_id: APNS_KEY_ID.into(),
        private_key: APNS_PRIVATE_KEY.into(),
        topic: APNS_TOPIC.into(),
        sandbox: false,
        base_url: Some(base.into()),
    })
}

pub fn webhook_config(base: &str) -> ChannelConfig {
    ChannelConfig::Webhook(WebhookConfig {
        url: format!("{base}{WEBHOOK_PATH}"),
        secret: WEBHOOK_SECRET.into(),
        headers: [(WEBHOOK_API_KEY.0.to_string(), WEBHOOK_API_KEY.1.to_string())].into(),
    })
}

/// Which provider a stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Twilio,
    AlibabaSms,
    Fcm,
    Apns,
    Webhook,
}

/// An answer a test queues.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn new(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// With `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Reply {
        self.headers
            .push(("retry-after".into(), seconds.to_string()));
        self
    }

    /// Twilio's error resource.
    pub fn twilio_error(status: u16, code: i64, message: &str) -> Reply {
        Reply::new(
            status,
            json!({"code": code, "message": message, "status": status,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}")}),
        )
    }

    /// Alibaba Cloud's answer with a `Code` other than `OK` (HTTP 200, as it answers
    /// business errors).
    pub fn alibaba_error(code: &str, message: &str) -> Reply {
        Reply::new(
            200,
            json!({"Code": code, "Message": message, "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990"}),
        )
    }

    /// FCM's error, with its `FcmError` detail when `error_code` is given.
    pub fn fcm_error(status: u16, status_name: &str, error_code: Option<&str>) -> Reply {
        let mut error = json!({"code": status, "message": format!("stand-in {status_name}"), "status": status_name});
        if let Some(code) = error_code {
            error["details"] = json!([{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code
            }]);
        }
        Reply::new(status, json!({ "error": error }))
    }

    /// APNs's error: `{"reason": …}` (and `timestamp` for 410).
    pub fn apns_error(status: u16, reason: &str) -> Reply {
        let mut body = json!({ "reason": reason });
        if status == 410 {
            body["timestamp"] = json!(1_780_000_000_000_i64);
        }
        Reply::new(status, body)
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The form body's fields.
    pub fn form(&self) -> BTreeMap<String, String> {
        parse_form(&String::from_utf8_lossy(&self.body))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Log {
    messages: Vec<Received>,
    token_requests: usize,
    problems: Vec<String>,
    script: VecDeque<Reply>,
    issued_tokens: BTreeSet<String>,
}

struct Shared {
    provider: Provider,
    base: String,
    log: Mutex<Log>,
}

impl Shared {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running stand-in. Stops when dropped.
pub struct StandIn {
    base: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl StandIn {
    /// Starts a stand-in on a free loopback port, in the current Tokio runtime.
    ///
    /// # Panics
    /// When no loopback port can be bound: tests cannot go on.
    pub async fn start(provider: Provider) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let base = format!("http://{address}");
        let shared = Arc::new(Shared {
            provider,
            base: base.clone(),
            log: Mutex::new(Log::default()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        StandIn {
            base,
            shared,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The channel configuration that sends here.
    pub fn config(&self) -> ChannelConfig {
        match self.shared.provider {
            Provider::Twilio => twilio_config(&self.base),
            Provider::AlibabaSms => alibaba_config(&self.base),
            Provider::Fcm => fcm_config(&self.base),
            Provider::Apns => apns_config(&self.base),
            Provider::Webhook => webhook_config(&self.base),
        }
    }

    /// Answers the next message request (after those queued before) with `reply`.
    pub fn reply_next(&self, reply: Reply) {
        self.shared.log().script.push_back(reply);
    }

    /// The message requests received (not FCM's token requests), in order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.log().messages.clone()
    }

    /// Requests made to FCM's token endpoint.
    pub fn token_requests(&self) -> usize {
        self.shared.log().token_requests
    }

    /// Every check a request failed, as "METHOD path: problem".
    pub fn problems(&self) -> Vec<String> {
        self.shared.log().problems.clone()
    }

    /// Message requests per `Idempotency-Key`.
    pub fn keys(&self) -> BTreeMap<String, usize> {
        let mut keys = BTreeMap::new();
        for request in &self.shared.log().messages {
            let key = request.header("idempotency-key").unwrap_or_default();
            *keys.entry(key.to_string()).or_insert(0) += 1;
        }
        keys
    }

    /// Keys received with two different bodies.
    pub fn conflicting_keys(&self) -> Vec<String> {
        let mut bodies: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for request in &self.shared.log().messages {
            let key = request.header("idempotency-key").unwrap_or_default();
            bodies
                .entry(key.to_string())
                .or_default()
                .insert(request.body.clone());
        }
        bodies
            .into_iter()
            .filter(|(_, b)| b.len() > 1)
            .map(|(k, _)| k)
            .collect()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let received = Received {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
        version: format!("{:?}", parts.version),
        headers: headers(&parts.headers),
        body,
    };
    let is_token = shared.provider == Provider::Fcm && received.path == "/token";
    let mut problems = if parts.method == Method::POST {
        Vec::new()
    } else {
        vec![format!("method {} is not POST", parts.method)]
    };
    if shared.provider == Provider::Apns && parts.version != Version::HTTP_2 {
        problems.push(format!("APNs speaks HTTP/2 only, not {:?}", parts.version));
    }
    if received.header("idempotency-key").is_none_or(str::is_empty) {
        problems.push("no Idempotency-Key".into());
    }
    let success = if is_token {
        check_token_request(&shared, &received, &mut problems)
    } else {
        match shared.provider {
            Provider::Twilio => check_twilio(&received, &mut problems),
            Provider::AlibabaSms => check_alibaba(&received, &mut problems),
            Provider::Fcm => check_fcm(&shared, &received, &mut problems),
            Provider::Apns => check_apns(&received, &mut problems),
            Provider::Webhook => check_webhook(&received, &mut problems),
        }
    };
    let mut log = shared.log();
    if is_token {
        log.token_requests += 1;
    } else {
        log.messages.push(received.clone());
    }
    if !problems.is_empty() {
        for problem in &problems {
            log.problems
                .push(format!("{} {}: {problem}", received.method, received.path));
        }
        return respond(&Reply::new(400, json!({ "problems": problems })));
    }
    let reply = if is_token {
        success
    } else {
        log.script.pop_front().unwrap_or(success)
    };
    if is_token
        && reply.status == 200
        && let Some(token) = reply.body["access_token"].as_str()
    {
        log.issued_tokens.insert(token.to_string());
    }
    respond(&reply)
}

fn respond(reply: &Reply) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response
        .body(Body::from(reply.body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn headers(map: &HeaderMap) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn require(problems: &mut Vec<String>, ok: bool, problem: impl FnOnce() -> String) {
    if !ok {
        problems.push(problem());
    }
}

fn content_type_is(request: &Received, expected: &str, problems: &mut Vec<String>) {
    let found = request.header("content-type").unwrap_or_default();
    require(problems, found.starts_with(expected), || {
        format!("content-type {found:?}, not {expected}")
    });
}

/// A stable id for a key, as providers return ids.
fn id_for(request: &Received, width: usize) -> String {
    let key = request.header("idempotency-key").unwrap_or_default();
    hex::encode(Sha256::digest(key.as_bytes()))[..width].to_string()
}

fn check_twilio(request: &Received, problems: &mut Vec<String>) -> Reply {
    let path = format!("/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json");
    require(problems, request.path == path, || {
        format!("path is not {path}")
    });
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{TWILIO_ACCOUNT_SID}:{TWILIO_AUTH_TOKEN}"))
    );
    require(
        problems,
        request.header("authorization") == Some(basic.as_str()),
        || "Basic auth is not the account SID and auth token".into(),
    );
    content_type_is(request, "application/x-www-form-urlencoded", problems);
    let form = request.form();
    let to = form.get("To").cloned().unwrap_or_default();
    require(problems, is_e164(&to), || format!("To {to:?} is not E.164"));
    require(
        problems,
        form.contains_key("From") != form.contains_key("MessagingServiceSid"),
        || "give exactly one of From and MessagingServiceSid".into(),
    );
    let body = form.get("Body").cloned().unwrap_or_default();
    require(problems, !body.is_empty(), || "no Body".into());
    let sid = format!("SM{}", id_for(request, 32));
    Reply::new(
        201,
        json!({"sid": sid, "account_sid": TWILIO_ACCOUNT_SID, "to": to, "from": form.get("From"),
            "body": body, "status": "queued", "num_segments": "1"}),
    )
}

fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

fn check_alibaba(request: &Received, problems: &mut Vec<String>) -> Reply {
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    require(problems, path == "/", || "path is not /".into());
    for (name, expected) in [
        ("x-acs-action", alibaba::ACTION),
        ("x-acs-version", alibaba::VERSION),
    ] {
        require(problems, request.header(name) == Some(expected), || {
            format!("{name} is not {expected}")
        });
    }
    let date = request.header("x-acs-date").unwrap_or_default();
    require(
        problems,
        chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%SZ").is_ok(),
        || format!("x-acs-date {date:?} is not yyyy-MM-ddTHH:mm:ssZ"),
    );
    require(
        problems,
        request
            .header("x-acs-signature-nonce")
            .is_some_and(|n| !n.is_empty()),
        || "no x-acs-signature-nonce".into(),
    );
    let payload_hash = hex::encode(Sha256::digest(&request.body));
    require(
        problems,
        request.header("x-acs-content-sha256") == Some(payload_hash.as_str()),
        || "x-acs-content-sha256 is not the body's SHA-256".into(),
    );
    content_type_is(request, "application/x-www-form-urlencoded", problems);
    // Recompute the signature over what arrived, with the headers the request says it signed.
    let authorization = request.header("authorization").unwrap_or_default();
    let signed_names: Vec<String> = authorization
        .split_once("SignedHeaders=")
        .and_then(|(_, rest)| rest.split(',').next())
        .map(|names| names.split(';').map(str::to_string).collect())
        .unwrap_or_default();
    for required in [
        "host",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-version",
    ] {
        require(problems, signed_names.iter().any(|n| n == required), || {
            format!("{required} is not signed")
        });
    }
    let signed: BTreeMap<String, String> = signed_names
        .iter()
        .map(|name| {
            (
                name.clone(),
                request.header(name).unwrap_or_default().to_string(),
            )
        })
        .collect();
    let query_pairs: Vec<(String, String)> = parse_form(query).into_iter().collect();
    let expected = alibaba::authorization(
        "POST",
        "/",
        &alibaba::canonical_query(&query_pairs),
        &signed,
        &payload_hash,
        ALIBABA_ACCESS_KEY_ID,
        ALIBABA_ACCESS_KEY_SECRET,
    );
    require(problems, authorization == expected, || {
        "SignatureDoesNotMatch: the ACS3-HMAC-SHA256 signature is wrong".into()
    });
    let form = request.form();
    let phone = form.get("PhoneNumbers").cloned().unwrap_or_default();
    require(
        problems,
        !phone.is_empty() && phone.split(',').all(|p| is_e164(p) || p.len() == 11),
        || format!("PhoneNumbers {phone:?}"),
    );
    require(
        problems,
        form.get("SignName").map(String::as_str) == Some(ALIBABA_SIGN_NAME),
        || "SignName is not the configured one".into(),
    );
    require(
        problems,
        form.get("TemplateCode").is_some_and(|c| !c.is_empty()),
        || "no TemplateCode".into(),
    );
    if let Some(params) = form.get("TemplateParam") {
        require(
            problems,
            serde_json::from_str::<Value>(params).is_ok_and(|v| v.is_object()),
            || "TemplateParam is not a JSON object".into(),
        );
    }
    require(
        problems,
        form.get("OutId").map(String::as_str) == request.header("idempotency-key"),
        || "OutId is not the idempotency key".into(),
    );
    Reply::new(
        200,
        json!({"Code": "OK", "Message": "OK", "BizId": format!("{}^0", id_for(request, 18)),
            "RequestId": id_for(request, 32)}),
    )
}

fn check_token_request(shared: &Shared, request: &Received, problems: &mut Vec<String>) -> Reply {
    content_type_is(request, "application/x-www-form-urlencoded", problems);
    let form = request.form();
    require(
        problems,
        form.get("grant_type").map(String::as_str) == Some(fcm::GRANT_TYPE),
        || "grant_type is not the JWT-bearer grant".into(),
    );
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let header = jsonwebtoken::decode_header(&assertion);
    require(
        problems,
        header
            .as_ref()
            .is_ok_and(|h| h.kid.as_deref() == Some(FCM_PRIVATE_KEY_ID)),
        || "the assertion's kid is not the service account's private_key_id".into(),
    );
    match verify(&assertion, FCM_PUBLIC_KEY, Algorithm::RS256) {
        Ok(claims) => {
            let token_uri = format!("{}/token", shared.base);
            require(
                problems,
                claims["iss"] == FCM_CLIENT_EMAIL
                    && claims["scope"] == fcm::SCOPE
                    && claims["aud"] == token_uri.as_str(),
                || format!("iss, scope or aud is wrong: {claims}"),
            );
            let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
            require(
                problems,
                matches!((iat, exp), (Some(i), Some(e)) if e > i && e - i <= 3600),
                || "iat and exp must span at most an hour".into(),
            );
        }
        Err(e) => problems.push(format!("the assertion does not verify: {e}")),
    }
    let count = shared.log().token_requests + 1;
    Reply::new(
        200,
        json!({"access_token": format!("ya29.stand-in-{count}"), "expires_in": 3599, "token_type": "Bearer"}),
    )
}

fn check_fcm(shared: &Shared, request: &Received, problems: &mut Vec<String>) -> Reply {
    let path = format!("/v1/projects/{FCM_PROJECT}/messages:send");
    require(problems, request.path == path, || {
        format!("path is not {path}")
    });
    content_type_is(request, "application/json", problems);
    let bearer = request
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default();
    let issued = shared.log().issued_tokens.contains(bearer);
    require(problems, issued, || {
        format!("bearer {bearer:?} was not issued by the token endpoint")
    });
    let body = request.json();
    let message = &body["message"];
    require(
        problems,
        message["token"].as_str().is_some_and(|t| !t.is_empty()),
        || "message.token is missing".into(),
    );
    require(
        problems,
        message["notification"]["title"].is_string() && message["notification"]["body"].is_string(),
        || "message.notification needs title and body".into(),
    );
    if let Some(data) = message.get("data") {
        require(
            problems,
            data.as_object()
                .is_some_and(|d| d.values().all(Value::is_string)),
            || "message.data values must be strings".into(),
        );
    }
    Reply::new(
        200,
        json!({"name": format!("projects/{FCM_PROJECT}/messages/0:{}", id_for(request, 16))}),
    )
}

fn check_apns(request: &Received, problems: &mut Vec<String>) -> Reply {
    let token = request.path.strip_prefix("/3/device/").unwrap_or_default();
    require(
        problems,
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_hexdigit()),
        || "path is not /3/device/<hex token>".into(),
    );
    let jwt = request
        .header("authorization")
        .and_then(|a| a.strip_prefix("bearer "))
        .unwrap_or_default();
    require(
        problems,
        jsonwebtoken::decode_header(jwt).is_ok_and(|h| h.kid.as_deref() == Some(APNS_KEY_ID)),
        || "the provider token's kid is not the key id".into(),
    );
    match verify(jwt, APNS_PUBLIC_KEY, Algorithm::ES256) {
        Ok(claims) => require(
            problems,
            claims["iss"] == APNS_TEAM_ID && claims["iat"].is_i64(),
            || format!("iss or iat is wrong: {claims}"),
        ),
        Err(e) => problems.push(format!("the provider token does not verify: {e}")),
    }
    for (name, ok) in [
        (
            "apns-topic",
            request.header("apns-topic") == Some(APNS_TOPIC),
        ),
        (
            "apns-push-type",
            request.header("apns-push-type") == Some("alert"),
        ),
        (
            "apns-priority",
            matches!(request.header("apns-priority"), Some("5" | "10")),
        ),
        (
            "apns-id",
            request
                .header("apns-id")
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok() && id.len() == 36),
        ),
    ] {
        require(problems, ok, || format!("{name} is missing or wrong"));
    }
    let body = request.json();
    require(
        problems,
        body["aps"]["alert"]["title"].is_string() && body["aps"]["alert"]["body"].is_string(),
        || "aps.alert needs title and body".into(),
    );
    let id = request.header("apns-id").unwrap_or_default().to_string();
    let mut reply = Reply::new(200, Value::Null);
    reply.headers = vec![
        ("apns-id".into(), id),
        ("apns-unique-id".into(), id_for(request, 32)),
    ];
    reply
}

fn check_webhook(request: &Received, problems: &mut Vec<String>) -> Reply {
    require(problems, request.path == WEBHOOK_PATH, || {
        format!("path is not {WEBHOOK_PATH}")
    });
    content_type_is(request, "application/json", problems);
    require(
        problems,
        request.header(WEBHOOK_API_KEY.0) == Some(WEBHOOK_API_KEY.1),
        || "the configured header is missing".into(),
    );
    let id = request.header("webhook-id").unwrap_or_default();
    require(
        problems,
        Some(id) == request.header("idempotency-key"),
        || "webhook-id is not the idempotency key".into(),
    );
    let timestamp = request
        .header("webhook-timestamp")
        .and_then(|t| t.parse::<i64>().ok());
    match (timestamp, WebhookSecret::parse(WEBHOOK_SECRET)) {
        (Some(timestamp), Ok(secret)) => {
            let expected = secret.sign(id, timestamp, &request.body).signature;
            let given = request.header("webhook-signature").unwrap_or_default();
            require(problems, given.split(' ').any(|s| s == expected), || {
                "webhook-signature does not verify".into()
            });
        }
        _ => problems.push("webhook-timestamp is not Unix seconds".into()),
    }
    require(
        problems,
        serde_json::from_slice::<Value>(&request.body).is_ok(),
        || "the body is not JSON".into(),
    );
    Reply::new(200, json!({"received": true}))
}

/// The claims of a JWT whose signature verifies under `public_pem`; its times are checked by
/// the callers (tests move the clock).
fn verify(token: &str, public_pem: &str, algorithm: Algorithm) -> Result<Value, String> {
    let key = match algorithm {
        Algorithm::ES256 => DecodingKey::from_ec_pem(public_pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(public_pem.as_bytes()),
    }
    .map_err(|e| e.to_string())?;
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

/// `application/x-www-form-urlencoded`: `+` is a space, `%XY` a byte.
fn parse_form(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some((high, low)), _) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A real SMTP server for tests: Python's aiosmtpd (from `$COHORT_VENV`) on loopback, which
/// writes each message it accepts as `<n>.eml` and its parse as `<n>.json`. It refuses
/// recipient `reject` for good (550) and `defer` for now (451). The process is killed (by
/// its id) when the sink is dropped, however the test ends.
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const INSTALL: &str = "install the test clients: $COHORT_VENV/bin/python -m pip install -r tests/clients/requirements.txt \
     (CI uses COHORT_VENV=$HOME/.cache/cohort/venv)";

impl SmtpSink {
    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn start(reject: &str, defer: &str) -> SmtpSink {
        let venv = std::env::var_os("COHORT_VENV").unwrap_or_else(|| {
            panic!("COHORT_VENV is not set: the email test needs aiosmtpd in that venv; {INSTALL}")
        });
        let python = PathBuf::from(venv).join("bin").join("python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/channel/smtp/sink.py");
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(dir.path())
            .args(["--reject", reject, "--defer", defer])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL}", python.display()));
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let Ok(port) = line.trim().parse() else {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            let status = child.wait().unwrap();
            if status.code() == Some(3) {
                panic!("aiosmtpd is missing from {}: {INSTALL}", python.display());
            }
            panic!("the SMTP sink did not start ({status}): {stderr}");
        };
        SmtpSink { child, port, dir }
    }

    /// The `n`th message received (from 1), as the sink's parser read it, and its raw text.
    pub fn message(&self, n: usize) -> (Value, String) {
        let meta = self.dir.path().join(format!("{n}.json"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !meta.exists() {
            assert!(
                Instant::now() < deadline,
                "message {n} never reached the sink"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let json = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
        let raw = std::fs::read(self.dir.path().join(format!("{n}.eml"))).unwrap();
        (json, String::from_utf8(raw).unwrap())
    }

    /// Messages received so far.
    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("json".as_ref()))
            .count()
    }
}
