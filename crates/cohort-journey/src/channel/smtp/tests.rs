//! The email sender: messages as built, then sent to a real SMTP server (Python's aiosmtpd,
//! started on loopback by the test) and read back with Python's own email parser.

use chrono::TimeZone;
use serde_json::{Value, json};

use super::*;
use crate::channel::config::ChannelConfig;
use crate::channel::standin::SmtpSink;
use crate::channel::tracking::{Purpose, Tracked};
use crate::channel::{Message, Sender};
use crate::definition::ChannelKind;

const SECRET: &str = "email-link-secret-0123456789abcdef";
const PUBLIC_URL: &str = "https://cohort.shop.example";
const FROM: &str = "Cohort 商店 <news@shop.example>";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
}

fn config(port: u16) -> ChannelConfig {
    ChannelConfig::from_json(
        &json!({
            "provider": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from": FROM,
            "reply_to": "help@shop.example",
            "public_url": PUBLIC_URL,
            "link_secret": SECRET,
        })
        .to_string(),
    )
    .unwrap()
}

fn smtp_config(port: u16) -> SmtpConfig {
    match config(port) {
        ChannelConfig::Smtp(c) => c,
        other => panic!("{other:?}"),
    }
}

fn signer() -> LinkSigner {
    LinkSigner::new(PUBLIC_URL, SECRET).unwrap()
}

fn cart_email(customer: CustomerId) -> EmailMessage {
    EmailMessage {
        customer,
        subject: "您好，王先生：您的购物车还在等您".into(),
        html: Some(
            r#"<html><body><p>您好，王先生</p>
<ul><li><a href="https://shop.example/p/tea?ref=mail&amp;c=1">龙井茶</a></li></ul>
<a href="mailto:help@shop.example">联系我们</a>
</body></html>"#
                .into(),
        ),
        text: "您好，王先生\n龙井茶: https://shop.example/p/tea?ref=mail&c=1".into(),
        headers: BTreeMap::from([("X-Campaign".to_string(), "cart".to_string())]),
    }
}

fn outgoing(key: &str, to: &str, email: EmailMessage) -> Outgoing {
    Outgoing {
        key: key.into(),
        to: to.into(),
        message: Message::Email(email),
    }
}

/// The message as it would go on the wire.
async fn wire(smtp: &Smtp, key: &str, email: &EmailMessage) -> String {
    let message = smtp
        .compose(
            &outgoing(key, "wang@example.cn", email.clone()),
            email,
            now(),
        )
        .unwrap();
    String::from_utf8(message.formatted()).unwrap()
}

fn header<'a>(wire: &'a str, name: &str) -> Vec<&'a str> {
    let head = &wire[..wire.find("\r\n\r\n").unwrap()];
    head.split("\r\n")
        .filter_map(|line| {
            let (n, v) = line.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
        .collect()
}

fn token(url: &str) -> &str {
    url.trim_matches(['<', '>']).rsplit('/').next().unwrap()
}

#[tokio::test]
async fn the_message_id_comes_from_the_key_and_unsubscribing_takes_one_click() {
    let smtp = Smtp::new(&smtp_config(25)).unwrap();
    let email = cart_email(7);
    let first = wire(&smtp, "cart:1:7:mail", &email).await;
    let again = wire(&smtp, "cart:1:7:mail", &email).await;
    let other = wire(&smtp, "cart:1:8:mail", &email).await;

    let id = email_message_id("cart:1:7:mail", "shop.example");
    assert_eq!(header(&first, "Message-ID"), [id.as_str()]);
    assert!(
        id.len() == 32 + "<@shop.example>".len() && id.ends_with("@shop.example>"),
        "{id}"
    );
    assert_eq!(header(&again, "Message-ID"), [id.as_str()]);
    assert_ne!(header(&other, "Message-ID"), [id.as_str()]);
    // Everything else is the same too, boundary and links included.
    assert_eq!(first, again);
    assert_ne!(first, other);

    let unsubscribe = header(&first, "List-Unsubscribe");
    assert_eq!(unsubscribe.len(), 1);
    assert!(
        unsubscribe[0].starts_with("<https://cohort.shop.example/u/")
            && unsubscribe[0].ends_with('>'),
        "{unsubscribe:?}"
    );
    assert_eq!(
        signer().verify(token(unsubscribe[0])).unwrap(),
        Tracked {
            purpose: Purpose::Unsubscribe,
            key: "cart:1:7:mail".into(),
            customer: 7,
            target: None
        }
    );
    assert_eq!(
        header(&first, "List-Unsubscribe-Post"),
        ["List-Unsubscribe=One-Click"]
    );
    assert_eq!(header(&first, "X-Campaign"), ["cart"]);
    assert_eq!(header(&first, "Reply-To"), ["help@shop.example"]);
    assert_eq!(header(&first, "Date"), ["Thu, 03 Dec 2026 12:00:00 +0000"]);
    assert!(
        header(&first, "Content-Type")[0].starts_with("multipart/alternative"),
        "{first}"
    );
}

#[tokio::test]
async fn messages_that_cannot_be_built_fail_for_good() {
    let smtp = Smtp::new(&smtp_config(25)).unwrap();
    let failed = |outcome: Outcome| match outcome {
        Outcome::Failed { code, message } => (code, message),
        other => panic!("{other:?}"),
    };
    let mut email = cart_email(1);
    email.headers.insert("message-id".into(), "<mine@x>".into());
    let outcome = smtp
        .compose(&outgoing("k", "a@b.example", email.clone()), &email, now())
        .unwrap_err();
    assert_eq!(
        failed(outcome),
        (
            "cohort.header".into(),
            "the header message-id is written by Cohort".into()
        )
    );
    let mut email = cart_email(1);
    email.headers.insert("Bad Header".into(), "x".into());
    let outcome = smtp
        .compose(&outgoing("k", "a@b.example", email.clone()), &email, now())
        .unwrap_err();
    assert_eq!(failed(outcome).0, "cohort.header");

    let email = cart_email(1);
    let outcome = smtp
        .compose(
            &outgoing("k", "not an address", email.clone()),
            &email,
            now(),
        )
        .unwrap_err();
    let (code, message) = failed(outcome);
    assert_eq!(code, "cohort.address");
    assert!(message.contains("not an address"), "{message}");
}

#[tokio::test]
async fn a_text_only_message_is_one_plain_part() {
    let smtp = Smtp::new(&smtp_config(25)).unwrap();
    let email = EmailMessage {
        html: None,
        ..cart_email(3)
    };
    let wire = wire(&smtp, "k", &email).await;
    assert!(
        header(&wire, "Content-Type")[0].starts_with("text/plain; charset=utf-8"),
        "{wire}"
    );
    assert!(!wire.contains("multipart"));
    assert!(!wire.contains("/o/"), "no pixel without HTML");
}

#[test]
fn queue_ids_are_read_from_the_reply() {
    let id = |lines: &[&str]| queue_id(lines.iter().copied());
    assert_eq!(
        id(&["2.0.0 Ok: queued as 4Xb1Z3kQ7"]),
        Some("4Xb1Z3kQ7".into())
    );
    assert_eq!(
        id(&["OK id=1tXyz-000abc-Qr", "Queued as 1tXyz-000abc-Qr."]),
        Some("1tXyz-000abc-Qr".into())
    );
    assert_eq!(id(&["2.0.0 OK 1700000000 a1si.42 - gsmtp"]), None);
    assert_eq!(id(&["queued as "]), None);
}

#[test]
fn smtp_configurations_are_checked_and_redacted() {
    let base = json!({
        "provider": "smtp", "host": "smtp.shop.example", "from": FROM,
        "public_url": PUBLIC_URL, "link_secret": SECRET,
        "username": "mailer", "password": "smtp-password",
    });
    let config = ChannelConfig::from_json(&base.to_string()).unwrap();
    assert_eq!(config.kind(), ChannelKind::Email);
    assert_eq!(config.provider(), "smtp");
    let ChannelConfig::Smtp(smtp) = &config else {
        panic!()
    };
    // STARTTLS on the submission port unless said otherwise; tracking on.
    assert_eq!((smtp.security, smtp.port()), (SmtpSecurity::Starttls, 587));
    assert!(smtp.track_opens && smtp.track_clicks);

    let shown = serde_json::to_string(&config.redacted()).unwrap();
    let debug = format!("{config:?}");
    for hidden in ["smtp-password", SECRET] {
        assert!(!shown.contains(hidden), "{shown}");
        assert!(!debug.contains(hidden), "{debug}");
    }
    let back = ChannelConfig::from_json(&shown).unwrap_err();
    assert!(back.message.contains("redacted"), "{back}");

    let refusal = |change: Value| {
        let mut value = base.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                value.as_object_mut().unwrap().remove(k);
            } else {
                value[k] = v.clone();
            }
        }
        ChannelConfig::from_json(&value.to_string()).unwrap_err()
    };
    assert_eq!(refusal(json!({"host": " "})).field, "host");
    assert_eq!(refusal(json!({"port": 0})).field, "port");
    assert_eq!(refusal(json!({"security": "ssl"})).field, "security");
    assert_eq!(refusal(json!({"from": "news at shop"})).field, "from");
    assert_eq!(refusal(json!({"reply_to": "@"})).field, "reply_to");
    assert_eq!(refusal(json!({"password": null})).field, "password");
    assert_eq!(refusal(json!({"username": null})).field, "username");
    let clear = refusal(json!({"security": "none"}));
    assert_eq!(clear.field, "password");
    assert!(clear.message.contains("in clear"), "{clear}");
    let short = refusal(json!({"link_secret": "too short"}));
    assert_eq!(short.field, "link_secret");
    assert!(short.message.contains("32 bytes"), "{short}");
    assert_eq!(
        refusal(json!({"public_url": "mailto:x@y"})).field,
        "public_url"
    );
    // A missing field is named in the message (serde reports it at the object).
    assert!(
        refusal(json!({"public_url": null}))
            .message
            .contains("missing field `public_url`")
    );
    assert!(refusal(json!({"colour": "red"})).message.contains("colour"));
}

fn without_date(raw: &str) -> String {
    raw.split("\r\n")
        .filter(|line| !line.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_a_real_smtp_server_and_reads_its_replies() {
    let sink = SmtpSink::start("nobody@example.cn", "busy@example.cn");
    let sender = Sender::new(&config(sink.port())).unwrap();
    assert_eq!(sender.kind(), ChannelKind::Email);

    let cart = outgoing("cart:1:7:mail", "wang@example.cn", cart_email(7));
    let receipt = outgoing(
        "order:2:9:receipt",
        "li@example.cn",
        EmailMessage {
            customer: 9,
            subject: "订单已发货".into(),
            html: None,
            text: "李女士您好，您的订单已发货。".into(),
            headers: BTreeMap::new(),
        },
    );
    let sent = |n: usize| Outcome::Sent {
        provider_id: format!("4Q{n:06}"),
    };
    assert_eq!(sender.send(&cart, now()).await, sent(1));
    assert_eq!(sender.send(&receipt, now()).await, sent(2));
    // The same send again, as after a crash, a minute later.
    let later = now() + chrono::Duration::minutes(1);
    assert_eq!(sender.send(&cart, later).await, sent(3));

    let (first, first_raw) = sink.message(1);
    assert_eq!(first["mail_from"], "news@shop.example");
    assert_eq!(first["rcpt_tos"], json!(["wang@example.cn"]));
    assert_eq!(first["content_type"], "multipart/alternative");
    let headers = &first["headers"];
    assert_eq!(headers["subject"], "您好，王先生：您的购物车还在等您");
    assert_eq!(headers["from"], FROM);
    assert_eq!(headers["to"], "wang@example.cn");
    assert_eq!(
        headers["message-id"],
        email_message_id("cart:1:7:mail", "shop.example")
    );
    assert_eq!(
        headers["list-unsubscribe-post"],
        "List-Unsubscribe=One-Click"
    );
    let unsubscribe = headers["list-unsubscribe"].as_str().unwrap();
    let signer = signer();
    let tracked = signer.verify(token(unsubscribe)).unwrap();
    assert_eq!(
        (tracked.purpose, tracked.key.as_str(), tracked.customer),
        (Purpose::Unsubscribe, "cart:1:7:mail", 7)
    );

    let parts = first["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0]["type"], "text/plain");
    assert_eq!(
        parts[0]["content"].as_str().unwrap().trim_end(),
        "您好，王先生\r\n龙井茶: https://shop.example/p/tea?ref=mail&c=1"
    );
    assert_eq!(parts[1]["type"], "text/html");
    let html = parts[1]["content"].as_str().unwrap();
    assert!(html.contains("<p>您好，王先生</p>"), "{html}");
    assert!(
        html.contains(r#"<a href="mailto:help@shop.example">"#),
        "{html}"
    );
    let click = html
        .split(r#"<a href=""#)
        .nth(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .unwrap();
    let clicked = signer
        .verify(token(click))
        .unwrap()
        .expect(Purpose::Click)
        .unwrap();
    assert_eq!(
        clicked.target.as_deref(),
        Some("https://shop.example/p/tea?ref=mail&c=1")
    );
    assert_eq!(clicked.customer, 7);
    let pixel = html
        .split(r#"<img src=""#)
        .nth(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .unwrap();
    assert_eq!(signer.verify(token(pixel)).unwrap().purpose, Purpose::Open);
    assert!(html.trim_end().ends_with("</body></html>"), "{html}");

    let (second, _) = sink.message(2);
    assert_eq!(second["rcpt_tos"], json!(["li@example.cn"]));
    assert_eq!(second["content_type"], "text/plain");
    assert_eq!(second["headers"]["subject"], "订单已发货");
    assert_eq!(
        second["parts"][0]["content"].as_str().unwrap().trim_end(),
        "李女士您好，您的订单已发货。"
    );
    assert_ne!(second["headers"]["message-id"], headers["message-id"]);

    // The repeat is the same message, but for its date.
    let (third, third_raw) = sink.message(3);
    assert_eq!(third["headers"]["message-id"], headers["message-id"]);
    assert_ne!(third["headers"]["date"], headers["date"]);
    assert_eq!(without_date(&third_raw), without_date(&first_raw));

    // A recipient the server does not know: failed for good, with its code.
    let nobody = outgoing("cart:1:10:mail", "nobody@example.cn", cart_email(10));
    match sender.send(&nobody, now()).await {
        Outcome::Failed { code, message } => {
            assert_eq!(code, "550");
            assert!(message.contains("User unknown"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A server that asks to come back later: retried.
    let busy = outgoing("cart:1:11:mail", "busy@example.cn", cart_email(11));
    match sender.send(&busy, now()).await {
        Outcome::Retry { after, reason } => {
            assert_eq!(after, None);
            assert!(
                reason.contains("451") && reason.contains("try again later"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Refusals leave the connection usable.
    let next = outgoing("cart:1:12:mail", "zhao@example.cn", cart_email(12));
    assert_eq!(sender.send(&next, now()).await, sent(4));
    assert_eq!(sink.count(), 4);

    // TLS is never given up for plain text: this server offers no STARTTLS and speaks no TLS.
    for (security, expected) in [
        ("starttls", "STARTTLS is not supported"),
        ("tls", "Connection error"),
    ] {
        let mut value = serde_json::to_value(config(sink.port())).unwrap();
        value["security"] = security.into();
        let tls = Sender::new(&ChannelConfig::from_json(&value.to_string()).unwrap()).unwrap();
        match tls.send(&next, now()).await {
            Outcome::Retry { reason, .. } => assert!(reason.contains(expected), "{reason}"),
            other => panic!("{security}: {other:?}"),
        }
    }
    assert_eq!(sink.count(), 4);

    // A message for another channel kind is refused without touching the server.
    let sms = Outgoing {
        key: "k".into(),
        to: "+8613800138000".into(),
        message: Message::Sms(crate::channel::SmsMessage::text("hi")),
    };
    assert_eq!(sender.send(&sms, now()).await.status(), "failed");
    assert_eq!(sink.count(), 4);
}

#[tokio::test]
async fn an_unreachable_server_is_retried() {
    // A port that was just free and has no listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sender = Sender::new(&config(port)).unwrap();
    let outcome = sender
        .send(&outgoing("k", "wang@example.cn", cart_email(1)), now())
        .await;
    match outcome {
        Outcome::Retry {
            after: None,
            reason,
        } => {
            assert!(reason.to_lowercase().contains("connection"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
