//! Each sender against its provider's loopback stand-in, which checks every request.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::standin::{self, Provider, Reply, StandIn};
use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
}

fn sms(key: &str, to: &str) -> Outgoing {
    Outgoing {
        key: key.into(),
        to: to.into(),
        message: Message::Sms(SmsMessage {
            text: "【Cohort】您的优惠券 SAVE-10 已到账，回复TD退订".into(),
            template_code: Some("SMS_154950909".into()),
            template_params: json!({"code": "SAVE-10"}).as_object().unwrap().clone(),
        }),
    }
}

fn push(key: &str, token: &str) -> Outgoing {
    Outgoing {
        key: key.into(),
        to: token.into(),
        message: Message::Push(PushMessage {
            title: "Platinum".into(),
            body: "王先生，您的铂金会员礼券已到账".into(),
            data: BTreeMap::from([
                ("coupon".to_string(), "PLAT-7Q2X".to_string()),
                ("aps".to_string(), "ignored by APNs".to_string()),
            ]),
        }),
    }
}

fn hook(key: &str) -> Outgoing {
    Outgoing {
        key: key.into(),
        to: String::new(),
        message: Message::Webhook(json!({"customer": 42, "event": "Entered Platinum"})),
    }
}

const DEVICE: &str = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";

fn assert_clean(standin: &StandIn) {
    assert_eq!(standin.problems(), Vec::<String>::new());
    assert_eq!(standin.conflicting_keys(), Vec::<String>::new());
}

fn retry_after(outcome: &Outcome) -> Option<Duration> {
    match outcome {
        Outcome::Retry { after, .. } => *after,
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test]
async fn twilio_sends_and_reads_its_errors() {
    let twilio = StandIn::start(Provider::Twilio).await;
    let sender = Sender::new(&twilio.config()).unwrap();
    assert_eq!(sender.kind(), ChannelKind::Sms);

    let sent = sender
        .send(&sms("j:1:1:sms", "+8613800138000"), now())
        .await;
    let Outcome::Sent { provider_id } = &sent else {
        panic!("{sent:?}")
    };
    assert!(provider_id.starts_with("SM") && provider_id.len() == 34);
    let request = &twilio.requests()[0];
    assert_eq!(
        request.form()["Body"],
        "【Cohort】您的优惠券 SAVE-10 已到账，回复TD退订"
    );
    assert_eq!(request.form()["From"], standin::TWILIO_FROM);
    assert_eq!(request.header("idempotency-key"), Some("j:1:1:sms"));

    twilio.reply_next(Reply::twilio_error(
        400,
        21610,
        "Attempt to send to unsubscribed recipient",
    ));
    twilio.reply_next(Reply::twilio_error(429, 20429, "Too Many Requests").retry_after(7));
    twilio.reply_next(Reply::twilio_error(500, 20500, "Internal Server Error"));
    twilio.reply_next(Reply::twilio_error(
        400,
        21211,
        "The 'To' number is not a valid phone number.",
    ));
    let unsubscribed = sender.send(&sms("j:1:2:sms", "+15005550009"), now()).await;
    assert_eq!(
        unsubscribed,
        Outcome::Unsubscribed {
            code: "21610".into(),
            message: "Attempt to send to unsubscribed recipient".into()
        }
    );
    let throttled = sender.send(&sms("j:1:3:sms", "+15005550010"), now()).await;
    assert_eq!(retry_after(&throttled), Some(Duration::from_secs(7)));
    let down = sender.send(&sms("j:1:3:sms", "+15005550010"), now()).await;
    assert_eq!(retry_after(&down), None);
    let invalid = sender.send(&sms("j:1:4:sms", "+15005550001"), now()).await;
    assert_eq!(
        invalid,
        Outcome::Failed {
            code: "21211".into(),
            message: "The 'To' number is not a valid phone number.".into()
        }
    );
    // The retried send carried the same key and body.
    assert_eq!(twilio.keys()["j:1:3:sms"], 2);
    assert_eq!(twilio.keys().len(), 4);
    assert_clean(&twilio);
}

#[tokio::test]
async fn twilio_messaging_services_send_without_from() {
    let twilio = StandIn::start(Provider::Twilio).await;
    let ChannelConfig::Twilio(mut config) = twilio.config() else {
        unreachable!()
    };
    config.from = None;
    config.messaging_service_sid = Some("MG0123456789abcdef0123456789abcdef".into());
    let sender = Sender::new(&ChannelConfig::Twilio(config)).unwrap();
    let sent = sender
        .send(&sms("j:1:1:sms", "+8613800138000"), now())
        .await;
    assert_eq!(sent.status(), "sent");
    let form = twilio.requests()[0].form();
    assert_eq!(
        form["MessagingServiceSid"],
        "MG0123456789abcdef0123456789abcdef"
    );
    assert!(!form.contains_key("From"));
    assert_clean(&twilio);
}

#[tokio::test]
async fn alibaba_signs_every_request_and_reads_its_codes() {
    let alibaba = StandIn::start(Provider::AlibabaSms).await;
    let sender = Sender::new(&alibaba.config()).unwrap();

    let sent = sender.send(&sms("j:1:1:sms", "13800138000"), now()).await;
    let Outcome::Sent { provider_id } = &sent else {
        panic!("{sent:?}")
    };
    assert!(provider_id.ends_with("^0"));
    let request = &alibaba.requests()[0];
    let form = request.form();
    assert_eq!(form["OutId"], "j:1:1:sms");
    assert_eq!(form["TemplateCode"], "SMS_154950909");
    assert_eq!(form["TemplateParam"], r#"{"code":"SAVE-10"}"#);
    assert_eq!(request.header("x-acs-date"), Some("2026-12-03T12:00:00Z"));

    alibaba.reply_next(Reply::alibaba_error(
        "isv.BUSINESS_LIMIT_CONTROL",
        "触发号码天级流控Permits:10",
    ));
    alibaba.reply_next(Reply::alibaba_error(
        "isv.MOBILE_NUMBER_ILLEGAL",
        "非法手机号",
    ));
    alibaba.reply_next(Reply::new(503, json!({"Code": "ServiceUnavailable"})).retry_after(2));
    let limited = sender.send(&sms("j:1:2:sms", "13800138001"), now()).await;
    assert_eq!(retry_after(&limited), None);
    let illegal = sender.send(&sms("j:1:3:sms", "13800138009"), now()).await;
    assert_eq!(
        illegal,
        Outcome::Failed {
            code: "isv.MOBILE_NUMBER_ILLEGAL".into(),
            message: "非法手机号".into()
        }
    );
    let unavailable = sender.send(&sms("j:1:4:sms", "13800138002"), now()).await;
    assert_eq!(retry_after(&unavailable), Some(Duration::from_secs(2)));

    // Alibaba sends approved templates only: a message without a code never leaves.
    let mut plain = sms("j:1:5:sms", "13800138003");
    plain.message = Message::Sms(SmsMessage::text("hello"));
    let refused = sender.send(&plain, now()).await;
    assert!(matches!(&refused, Outcome::Failed { code, .. } if code == "cohort.template_code"));
    assert_eq!(alibaba.requests().len(), 4);
    assert_clean(&alibaba);
}

#[tokio::test]
async fn alibaba_stand_in_refuses_a_wrong_signature() {
    let alibaba = StandIn::start(Provider::AlibabaSms).await;
    let ChannelConfig::AlibabaSms(mut config) = alibaba.config() else {
        unreachable!()
    };
    config.access_key_secret = "not-the-secret".into();
    let sender = Sender::new(&ChannelConfig::AlibabaSms(config)).unwrap();
    let outcome = sender.send(&sms("j:1:1:sms", "13800138000"), now()).await;
    assert_eq!(outcome.status(), "failed");
    let problems = alibaba.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("SignatureDoesNotMatch"));
}

#[tokio::test]
async fn fcm_exchanges_a_signed_assertion_and_caches_the_token() {
    let fcm = StandIn::start(Provider::Fcm).await;
    let sender = Sender::new(&fcm.config()).unwrap();

    let sent = sender.send(&push("j:1:1:push", DEVICE), now()).await;
    let Outcome::Sent { provider_id } = &sent else {
        panic!("{sent:?}")
    };
    assert!(provider_id.starts_with("projects/cohort-standin/messages/0:"));
    let body = fcm.requests()[0].json();
    assert_eq!(body["message"]["token"], DEVICE);
    assert_eq!(body["message"]["data"]["coupon"], "PLAT-7Q2X");
    assert_eq!(
        body["message"]["notification"]["body"],
        "王先生，您的铂金会员礼券已到账"
    );

    // The token (valid 3599 s) serves until five minutes before it expires.
    let later = now() + chrono::Duration::minutes(54);
    assert_eq!(
        sender
            .send(&push("j:1:2:push", DEVICE), later)
            .await
            .status(),
        "sent"
    );
    assert_eq!(fcm.token_requests(), 1);
    let expiring = now() + chrono::Duration::minutes(56);
    assert_eq!(
        sender
            .send(&push("j:1:3:push", DEVICE), expiring)
            .await
            .status(),
        "sent"
    );
    assert_eq!(fcm.token_requests(), 2);
    let bearers: Vec<String> = fcm
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(bearers[0], bearers[1]);
    assert_ne!(bearers[1], bearers[2]);

    fcm.reply_next(Reply::fcm_error(404, "NOT_FOUND", Some("UNREGISTERED")));
    fcm.reply_next(
        Reply::fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")).retry_after(60),
    );
    fcm.reply_next(Reply::fcm_error(
        400,
        "INVALID_ARGUMENT",
        Some("INVALID_ARGUMENT"),
    ));
    fcm.reply_next(Reply::fcm_error(
        401,
        "UNAUTHENTICATED",
        Some("THIRD_PARTY_AUTH_ERROR"),
    ));
    let dead = sender.send(&push("j:1:4:push", DEVICE), expiring).await;
    assert_eq!(
        dead,
        Outcome::DeadToken {
            code: "UNREGISTERED".into(),
            message: "stand-in NOT_FOUND".into()
        }
    );
    let quota = sender.send(&push("j:1:5:push", DEVICE), expiring).await;
    assert_eq!(retry_after(&quota), Some(Duration::from_secs(60)));
    let invalid = sender.send(&push("j:1:6:push", DEVICE), expiring).await;
    assert!(matches!(&invalid, Outcome::Failed { code, .. } if code == "INVALID_ARGUMENT"));
    // A 401 drops the cached token: the retry fetches a new one.
    let unauthorized = sender.send(&push("j:1:7:push", DEVICE), expiring).await;
    assert_eq!(retry_after(&unauthorized), None);
    assert_eq!(
        sender
            .send(&push("j:1:7:push", DEVICE), expiring)
            .await
            .status(),
        "sent"
    );
    assert_eq!(fcm.token_requests(), 3);
    assert_clean(&fcm);
}

#[tokio::test]
async fn apns_speaks_http2_with_a_reused_provider_token() {
    let apns = StandIn::start(Provider::Apns).await;
    let sender = Sender::new(&apns.config()).unwrap();

    let sent = sender.send(&push("j:1:1:push", DEVICE), now()).await;
    assert_eq!(sent.status(), "sent", "{sent:?} {:?}", apns.problems());
    let request = &apns.requests()[0];
    assert_eq!(request.version, "HTTP/2.0");
    assert_eq!(request.path, format!("/3/device/{DEVICE}"));
    assert_eq!(
        request.header("apns-id"),
        Some(apns_id("j:1:1:push").as_str())
    );
    let body = request.json();
    assert_eq!(body["aps"]["alert"]["title"], "Platinum");
    assert_eq!(body["coupon"], "PLAT-7Q2X");
    assert!(body["aps"].is_object(), "custom data never replaces aps");

    // One token for 50 minutes, then a new one.
    sender
        .send(
            &push("j:1:2:push", DEVICE),
            now() + chrono::Duration::minutes(49),
        )
        .await;
    sender
        .send(
            &push("j:1:3:push", DEVICE),
            now() + chrono::Duration::minutes(51),
        )
        .await;
    let tokens: Vec<String> = apns
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(tokens[0], tokens[1]);
    assert_ne!(tokens[1], tokens[2]);

    apns.reply_next(Reply::apns_error(410, "Unregistered"));
    apns.reply_next(Reply::apns_error(400, "BadDeviceToken"));
    apns.reply_next(Reply::apns_error(429, "TooManyRequests").retry_after(30));
    apns.reply_next(Reply::apns_error(413, "PayloadTooLarge"));
    apns.reply_next(Reply::apns_error(503, "ServiceUnavailable"));
    let later = now() + chrono::Duration::minutes(52);
    for (key, expected) in [
        ("j:1:4:push", "dead_token"),
        ("j:1:5:push", "dead_token"),
        ("j:1:6:push", "retry"),
        ("j:1:7:push", "failed"),
        ("j:1:8:push", "retry"),
    ] {
        let outcome = sender.send(&push(key, DEVICE), later).await;
        assert_eq!(outcome.status(), expected, "{key}: {outcome:?}");
    }
    // A token that is not hexadecimal never reaches APNs.
    let bad = sender.send(&push("j:1:9:push", "not/a/token"), later).await;
    assert_eq!(bad.status(), "dead_token");
    assert_eq!(apns.requests().len(), 8);
    assert_clean(&apns);
}

#[tokio::test]
async fn webhooks_are_signed_with_the_time_of_the_call() {
    let receiver = StandIn::start(Provider::Webhook).await;
    let sender = Sender::new(&receiver.config()).unwrap();

    let sent = sender.send(&hook("j:1:1:hook"), now()).await;
    assert_eq!(
        sent,
        Outcome::Sent {
            provider_id: "j:1:1:hook".into()
        }
    );
    let request = &receiver.requests()[0];
    assert_eq!(request.header("webhook-id"), Some("j:1:1:hook"));
    assert_eq!(
        request.header("webhook-timestamp"),
        Some(now().timestamp().to_string().as_str())
    );
    assert_eq!(
        request.json(),
        json!({"customer": 42, "event": "Entered Platinum"})
    );

    receiver.reply_next(Reply::new(500, json!({})));
    receiver.reply_next(Reply::new(404, json!({"error": "no such hook"})));
    receiver.reply_next(Reply::new(302, json!({})));
    assert_eq!(
        sender.send(&hook("j:1:2:hook"), now()).await.status(),
        "retry"
    );
    assert_eq!(
        sender.send(&hook("j:1:2:hook"), now()).await,
        Outcome::Failed {
            code: "404".into(),
            message: r#"{"error":"no such hook"}"#.into()
        }
    );
    // Redirects are not followed (they would turn the POST into a GET elsewhere).
    assert_eq!(
        sender.send(&hook("j:1:3:hook"), now()).await.status(),
        "failed"
    );
    assert_clean(&receiver);
}

#[tokio::test]
async fn unreachable_providers_are_retried_and_mismatches_fail() {
    // A port nothing listens on: bound, then released.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let sender = Sender::new(&standin::twilio_config(&base)).unwrap();
    let outcome = sender
        .send(&sms("j:1:1:sms", "+8613800138000"), now())
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry { after: None, reason } if !reason.is_empty()),
        "{outcome:?}"
    );

    let mismatch = sender.send(&push("j:1:2:push", DEVICE), now()).await;
    assert_eq!(
        mismatch,
        Outcome::Failed {
            code: "cohort.message_kind".into(),
            message: "a push message cannot go through a sms channel".into()
        }
    );
}

/// Many sends at once, some repeated as after a crash: one key per message at the sink, and
/// a repeat always carries the same body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_keep_one_key_per_message() {
    let twilio = StandIn::start(Provider::Twilio).await;
    let sender = std::sync::Arc::new(Sender::new(&twilio.config()).unwrap());
    let mut tasks = Vec::new();
    for customer in 0..200u32 {
        let repeats = if customer % 10 == 0 { 2 } else { 1 };
        for _ in 0..repeats {
            let sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                let to = format!("+86138{customer:08}");
                sender
                    .send(&sms(&format!("j:1:{customer}:sms"), &to), now())
                    .await
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().status(), "sent");
    }
    let keys = twilio.keys();
    assert_eq!(keys.len(), 200);
    assert_eq!(keys.values().filter(|&&n| n == 2).count(), 20);
    assert_clean(&twilio);
}

#[test]
fn apns_ids_are_stable_uuids_per_key() {
    let id = apns_id("welcome:1:42:push");
    assert_eq!(id, apns_id("welcome:1:42:push"));
    assert_ne!(id, apns_id("welcome:1:43:push"));
    let parsed = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(parsed.get_version_num(), 8);
}

#[test]
fn retry_after_reads_seconds_and_dates() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("retry-after", "120".parse().unwrap());
    assert_eq!(
        super::retry_after(&headers, now()),
        Some(Duration::from_secs(120))
    );
    headers.insert(
        "retry-after",
        "Thu, 03 Dec 2026 12:01:30 GMT".parse().unwrap(),
    );
    assert_eq!(
        super::retry_after(&headers, now()),
        Some(Duration::from_secs(90))
    );
    headers.insert(
        "retry-after",
        "Thu, 03 Dec 2026 11:00:00 GMT".parse().unwrap(),
    );
    assert_eq!(super::retry_after(&headers, now()), Some(Duration::ZERO));
    headers.insert("retry-after", "soon".parse().unwrap());
    assert_eq!(super::retry_after(&headers, now()), None);
}

/// The stand-ins are only worth their checks: wrong credentials are refused and listed.
#[tokio::test]
async fn stand_ins_refuse_wrong_credentials() {
    let twilio = StandIn::start(Provider::Twilio).await;
    let ChannelConfig::Twilio(mut config) = twilio.config() else {
        unreachable!()
    };
    config.auth_token = "a-guessed-token".into();
    let sender = Sender::new(&ChannelConfig::Twilio(config)).unwrap();
    let outcome = sender
        .send(&sms("j:1:1:sms", "+8613800138000"), now())
        .await;
    assert_eq!(outcome.status(), "failed");
    assert!(
        twilio.problems()[0].contains("Basic auth"),
        "{:?}",
        twilio.problems()
    );

    let fcm = StandIn::start(Provider::Fcm).await;
    let ChannelConfig::Fcm(mut config) = fcm.config() else {
        unreachable!()
    };
    config.service_account.client_email = "someone@else.iam.gserviceaccount.com".into();
    let sender = Sender::new(&ChannelConfig::Fcm(config)).unwrap();
    let outcome = sender.send(&push("j:1:1:push", DEVICE), now()).await;
    assert!(
        matches!(&outcome, Outcome::Failed { code, .. } if code.starts_with("oauth.")),
        "{outcome:?}"
    );
    assert!(fcm.problems()[0].contains("iss"), "{:?}", fcm.problems());
    assert!(fcm.requests().is_empty(), "no message without a token");

    let apns = StandIn::start(Provider::Apns).await;
    let ChannelConfig::Apns(mut config) = apns.config() else {
        unreachable!()
    };
    config.team_id = "OTHERTEAM1".into();
    let sender = Sender::new(&ChannelConfig::Apns(config)).unwrap();
    let outcome = sender.send(&push("j:1:1:push", DEVICE), now()).await;
    assert_eq!(outcome.status(), "failed");
    assert!(apns.problems()[0].contains("iss"), "{:?}", apns.problems());

    let receiver = StandIn::start(Provider::Webhook).await;
    let ChannelConfig::Webhook(mut config) = receiver.config() else {
        unreachable!()
    };
    config.secret = crate::webhook::WebhookSecret::generate();
    let sender = Sender::new(&ChannelConfig::Webhook(config)).unwrap();
    assert_eq!(
        sender.send(&hook("j:1:1:hook"), now()).await.status(),
        "failed"
    );
    assert!(
        receiver.problems()[0].contains("webhook-signature"),
        "{:?}",
        receiver.problems()
    );
}

/// Senders for the real providers build their TLS clients (rustls with ring).
#[test]
fn real_provider_senders_build() {
    let configs = [
        ChannelConfig::Twilio(config::TwilioConfig {
            base_url: None,
            ..match standin::twilio_config("") {
                ChannelConfig::Twilio(c) => c,
                _ => unreachable!(),
            }
        }),
        standin::alibaba_config(config::ALIBABA_SMS_ENDPOINT),
        standin::fcm_config(config::FCM_BASE_URL),
        standin::apns_config(config::APNS_BASE_URL),
        standin::webhook_config("https://hooks.example.test"),
    ];
    for config in configs {
        let sender = Sender::new(&config).unwrap_or_else(|e| panic!("{config:?}: {e}"));
        assert_eq!(sender.kind(), config.kind());
    }
}
