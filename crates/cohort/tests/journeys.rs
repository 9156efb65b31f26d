//! Journeys end to end through the real binary on a test clock (`--test-clock`, moved with
//! `POST /api/v1/ops/clock`), sending to the providers' loopback stand-ins and to a real SMTP
//! server (aiosmtpd) started by the test.

mod common;

use cohort_journey::channel::standin::{Provider, SmtpSink, StandIn};
use common::{Server, cohort, succeed};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A test server on a test clock, and a runtime for the stand-ins it sends to.
struct World {
    server: Server,
    runtime: tokio::runtime::Runtime,
}

impl World {
    fn start() -> World {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        World {
            server: Server::start_with(&["--test-clock"]),
            runtime,
        }
    }

    /// A server whose `sms` channel sends to a Twilio stand-in.
    fn with_sms() -> (World, StandIn) {
        let world = World::start();
        let twilio = world.stand_in(Provider::Twilio);
        world.channel("sms", &twilio.config());
        (world, twilio)
    }

    /// A server running the welcome journey, whose nudge is `body`.
    fn welcome(body: &str) -> (World, StandIn) {
        let (world, twilio) = World::with_sms();
        world.template("login-nudge", "sms", json!({ "body": body }));
        world.publish(welcome_journey());
        (world, twilio)
    }

    fn stand_in(&self, provider: Provider) -> StandIn {
        self.runtime.block_on(StandIn::start(provider))
    }

    /// Sends `body` to an admin route and expects `status`; returns the answer's JSON.
    fn admin(&self, method: &str, path: &str, body: &Value, status: u16) -> Value {
        let r = self.server.admin_send(method, path, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        if r.text().is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }

    fn channel(&self, name: &str, config: &impl serde::Serialize) {
        let config = serde_json::to_value(config).expect("config JSON");
        self.admin("PUT", &format!("/api/v1/channels/{name}"), &config, 200);
    }

    fn template(&self, key: &str, kind: &str, source: Value) {
        let body = json!({"key": key, "kind": kind, "source": source});
        self.admin("POST", "/api/v1/templates", &body, 201);
    }

    fn publish(&self, definition: Value) {
        let key = definition["key"].as_str().expect("key").to_string();
        self.admin("POST", "/api/v1/journeys", &definition, 201);
        let published = self.admin(
            "POST",
            &format!("/api/v1/journeys/{key}/publish"),
            &json!({}),
            200,
        );
        assert_eq!(published["status"], "published");
    }

    /// The server's clock, as RFC 3339.
    fn now(&self) -> String {
        let clock = self.server.admin_get("/api/v1/ops/clock").json();
        clock["now"].as_str().expect("now").to_string()
    }

    fn advance(&self, seconds: i64) {
        self.admin(
            "POST",
            "/api/v1/ops/clock",
            &json!({"advance_seconds": seconds}),
            200,
        );
    }

    /// Moves the server's clock to `at` (RFC 3339, in the future).
    fn advance_to(&self, at: &str) {
        let target = chrono::DateTime::parse_from_rfc3339(at).expect("an RFC 3339 time");
        let now = chrono::DateTime::parse_from_rfc3339(&self.now()).expect("the server's now");
        let seconds = (target - now).num_seconds();
        assert!(seconds > 0, "{at} is not ahead of the server's clock {now}");
        self.advance(seconds);
    }

    /// Sends messages stamped with the server's clock and waits until they are processed.
    fn send(&self, messages: Vec<Value>) {
        let now = self.now();
        let batch: Vec<Value> = messages
            .into_iter()
            .map(|mut m| {
                m["timestamp"] = json!(now);
                m
            })
            .collect();
        let r = self.server.ingest("/v1/batch", &json!({"batch": batch}));
        assert_eq!(r.status, 200, "{}", r.text());
        self.server.settle();
    }

    fn report(&self, key: &str) -> Value {
        self.admin(
            "GET",
            &format!("/api/v1/journeys/{key}/report?cost.sms=0.05"),
            &Value::Null,
            200,
        )
    }
}

impl World {
    /// Waits until `done` holds, failing with `what` after `seconds`, and then showing every
    /// journey's report and each channel's dead letters, which usually say why.
    fn wait_until(&self, what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !done() {
            if Instant::now() >= deadline {
                let report = self.server.admin_get("/api/v1/journeys/report").text();
                let channels = self.server.admin_get("/api/v1/channels").json();
                let mut letters = String::new();
                for channel in channels["channels"].as_array().into_iter().flatten() {
                    let name = channel["name"].as_str().unwrap_or_default();
                    let path = format!("/api/v1/channels/{name}/dead-letters");
                    letters += &format!("{name}: {}\n", self.server.admin_get(&path).text());
                }
                panic!("timed out waiting for {what}\nreport: {report}\ndead letters: {letters}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn customer(user: &str, traits: Value) -> Value {
    json!({"type": "identify", "userId": user, "traits": traits})
}

fn track(user: &str, event: &str, properties: Value) -> Value {
    json!({"type": "track", "userId": user, "event": event, "properties": properties})
}

fn welcome_journey() -> Value {
    json!({
        "key": "welcome", "name": "Registered, not logged in",
        "trigger": {"type": "event", "event": "Signed Up"},
        "exit": [{"type": "event", "event": "Logged In"}],
        "steps": [
            {"id": "wait-a-day", "type": "delay", "for": "24h", "next": "nudge"},
            {"id": "nudge", "type": "send", "channel": "sms", "template": "login-nudge"}
        ]
    })
}

#[test]
fn sign_up_without_login_gets_the_sms_after_a_day_and_a_login_cancels_it() {
    let (world, twilio) = World::welcome(
        "{{ first_name | default: \"顾客\" }}，欢迎注册！登录即可领取新人礼。回复TD退订",
    );
    world.send(vec![
        customer("ada", json!({"phone": "+8613800000001"})),
        customer("bo", json!({"phone": "+8613800000002", "first_name": "波"})),
        track("ada", "Signed Up", json!({})),
        track("bo", "Signed Up", json!({})),
    ]);
    world.advance(3600);
    world.send(vec![track("bo", "Logged In", json!({}))]);

    world.advance(22 * 3600);
    std::thread::sleep(Duration::from_secs(2));
    assert!(twilio.requests().is_empty(), "sent before the day was over");

    world.advance(2 * 3600);
    world.wait_until("the SMS", 30, || !twilio.requests().is_empty());
    std::thread::sleep(Duration::from_secs(1));
    let requests = twilio.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let form = requests[0].form();
    assert_eq!(form["To"], "+8613800000001");
    assert_eq!(
        form["Body"],
        "顾客，欢迎注册！登录即可领取新人礼。回复TD退订"
    );
    assert!(twilio.problems().is_empty(), "{:?}", twilio.problems());

    let report = world.report("welcome");
    let version = &report["journeys"][0]["versions"][0];
    assert_eq!(version["exits"]["exit[0]"], 1, "{report}");
    assert_eq!(version["exits"]["completed"], 1, "{report}");
    // The delivery event reached Ada's timeline.
    world.wait_until("Message Sent in the timeline", 20, || {
        let timeline = world
            .server
            .admin_get("/api/v1/profiles/user_id/ada/events")
            .json();
        timeline.to_string().contains("Message Sent")
    });
}

const LINK_SECRET: &str = "journeys-e2e-link-secret-0123456789";

#[test]
fn an_abandoned_cart_email_lists_the_products_with_the_default_name_and_title() {
    let world = World::start();
    let sink = SmtpSink::start("nobody@example.cn", "busy@example.cn");
    let public_url = format!("http://{}", world.server.addr);
    world.admin(
        "PUT",
        "/api/v1/channels/email",
        &json!({"provider": "smtp", "host": "127.0.0.1", "port": sink.port(), "security": "none",
                "from": "Cohort 商店 <news@shop.example>", "public_url": public_url,
                "link_secret": LINK_SECRET}),
        200,
    );
    world.template(
        "cart-reminder",
        "email",
        json!({
            "subject": "{{ first_name | default: \"顾客\" }}{{ gender | honorific }}，您的购物车还在等您",
            "text": "{% for p in event.products %}{{ p.name }} × {{ p.quantity }}\n{% endfor %}",
            "html": "<ul>{% for p in event.products %}<li>{{ p.name }}</li>{% endfor %}</ul><a href=\"https://shop.example/cart\">去结算</a>"
        }),
    );
    world.publish(json!({
        "key": "cart", "name": "Abandoned cart",
        "trigger": {"type": "event", "event": "Checkout Started"},
        "reentry": {"policy": "always"},
        "steps": [
            {"id": "w", "type": "wait", "event": "Order Completed", "timeout": "1h", "no": "mail"},
            {"id": "mail", "type": "send", "channel": "email", "template": "cart-reminder"}
        ]
    }));
    let products = json!([
        {"name": "青花瓷杯", "quantity": 2, "price": 39},
        {"name": "<b>茶</b>", "quantity": 1, "price": 88}
    ]);
    world.send(vec![
        customer(
            "wang",
            json!({"email": "wang@example.cn", "gender": "male"}),
        ),
        customer(
            "li",
            json!({"email": "li@example.cn", "first_name": "丽", "gender": "female"}),
        ),
        track("wang", "Checkout Started", json!({"products": products})),
        track("li", "Checkout Started", json!({"products": products})),
    ]);
    world.advance(2 * 3600);
    world.wait_until("two emails", 30, || sink.count() == 2);
    let mut subjects: Vec<String> = (1..=2)
        .map(|n| {
            sink.message(n).0["headers"]["subject"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["丽女士，您的购物车还在等您", "顾客先生，您的购物车还在等您"]
    );
    let (message, _) = sink.message(1);
    let parts = message["parts"].as_array().expect("parts");
    let text = parts
        .iter()
        .find(|p| p["type"] == "text/plain")
        .expect("text part");
    assert_eq!(
        // Lines end in CRLF on the wire (RFC 5322).
        text["content"]
            .as_str()
            .unwrap_or_default()
            .replace("\r\n", "\n")
            .trim_end(),
        "青花瓷杯 × 2\n<b>茶</b> × 1"
    );
    let html = parts
        .iter()
        .find(|p| p["type"] == "text/html")
        .expect("html part");
    let html = html["content"].as_str().unwrap_or_default();
    assert!(
        html.contains("&lt;b&gt;茶&lt;/b&gt;"),
        "escaped in HTML: {html}"
    );

    // One-click unsubscribe (RFC 8058) through the link the message carries.
    let unsubscribe = message["headers"]["list-unsubscribe"]
        .as_str()
        .unwrap_or_default();
    let path = unsubscribe
        .trim_matches(|c| c == '<' || c == '>')
        .strip_prefix(&public_url)
        .expect("an unsubscribe link to this server")
        .to_string();
    let r = world.server.request(
        "POST",
        &path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let forged = world.server.request("POST", "/u/not-a-token", &[], b"");
    assert_eq!(forged.status, 404);

    // The unsubscribed customer gets no more marketing email; the other does.
    world.send(vec![
        track("wang", "Checkout Started", json!({"products": products})),
        track("li", "Checkout Started", json!({"products": products})),
    ]);
    world.advance(2 * 3600);
    world.wait_until("a third email", 30, || sink.count() == 3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 3);
    let report = world.report("cart");
    let steps = report["journeys"][0]["versions"][0]["steps"].to_string();
    assert!(steps.contains("skip:unsubscribed"), "{report}");
}

#[test]
fn entering_the_platinum_segment_issues_one_coupon_each() {
    let (world, twilio) = World::with_sms();
    world.admin(
        "POST",
        "/api/v1/coupons",
        &json!({"key": "vip", "name": "VIP 100", "valid_for_days": 30}),
        201,
    );
    let generated = world.admin(
        "POST",
        "/api/v1/coupons/vip/generate",
        &json!({"pattern": "VIP-####-??", "count": 50}),
        200,
    );
    assert_eq!(generated["added"], 50);
    world.admin(
        "POST",
        "/api/v1/segments",
        &json!({"name": "platinum", "condition": {"type": "trait", "key": "tier", "op": "eq", "value": "platinum"}}),
        201,
    );
    world.template(
        "vip-code",
        "sms",
        json!({"body": "尊敬的会员，您的专属券码 {{ coupon.code }}"}),
    );
    world.publish(json!({
        "key": "platinum-welcome", "name": "Platinum welcome",
        "trigger": {"type": "segment_entered", "segment": "platinum"},
        "steps": [
            {"id": "coupon", "type": "issue_coupon", "pool": "vip", "next": "tell"},
            {"id": "tell", "type": "send", "channel": "sms", "template": "vip-code"}
        ]
    }));
    let phones: Vec<String> = (0..5).map(|i| format!("+861380000010{i}")).collect();
    world.send(
        phones
            .iter()
            .enumerate()
            .map(|(i, phone)| {
                customer(
                    &format!("vip{i}"),
                    json!({"phone": phone, "tier": "platinum"}),
                )
            })
            .collect(),
    );
    // Entering again (a trait set again) issues nothing new.
    world.send(vec![customer("vip0", json!({"tier": "platinum"}))]);
    world.wait_until("five messages", 30, || twilio.requests().len() >= 5);
    std::thread::sleep(Duration::from_secs(1));
    let requests = twilio.requests();
    assert_eq!(requests.len(), 5);
    let mut codes: Vec<String> = requests
        .iter()
        .map(|r| {
            r.form()["Body"]
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 5, "{codes:?}");
    assert!(
        codes.iter().all(|c| c.starts_with("VIP-") && c.len() == 11),
        "{codes:?}"
    );
    let counts = world.admin("GET", "/api/v1/coupons/vip", &Value::Null, 200);
    assert_eq!(
        (counts["issued"].as_u64(), counts["available"].as_u64()),
        (Some(5), Some(45))
    );

    // A redemption is read from the order's `coupon` property; a code issued to someone else
    // is not redeemed.
    let code_of = |phone: &str| {
        let request = requests
            .iter()
            .find(|r| r.form()["To"] == phone)
            .expect("a message to the phone");
        let body = request.form()["Body"].clone();
        body.rsplit(' ').next().unwrap_or_default().to_string()
    };
    world.send(vec![
        track(
            "vip2",
            "Order Completed",
            json!({"order_id": "o-0", "total": 100, "coupon": code_of(&phones[1])}),
        ),
        track(
            "vip1",
            "Order Completed",
            json!({"order_id": "o-1", "total": 300, "coupon": code_of(&phones[1])}),
        ),
    ]);
    world.wait_until("the redemption", 20, || {
        world.admin("GET", "/api/v1/coupons/vip", &Value::Null, 200)["redeemed"] == 1
    });
    std::thread::sleep(Duration::from_secs(1));
    let counts = world.admin("GET", "/api/v1/coupons/vip", &Value::Null, 200);
    assert_eq!(counts["redeemed"], 1, "{counts}");
}

#[test]
fn bad_definitions_are_refused_with_their_reason_and_nothing_is_published() {
    let (world, _twilio) = World::with_sms();
    world.template("hello", "sms", json!({"body": "hi"}));
    let refused = |definition: Value, field: &str, words: &str| {
        let r = world
            .server
            .admin_send("POST", "/api/v1/journeys/validate", &definition);
        assert_eq!(r.status, 400, "{definition}: {}", r.text());
        let text = r.text();
        assert!(
            text.contains(field) && text.contains(words),
            "{field} / {words}: {text}"
        );
    };
    let journey = |steps: Value| json!({"key": "bad", "name": "Bad", "trigger": {"type": "event", "event": "Signed Up"}, "steps": steps});
    refused(
        journey(json!([{"id": "s", "type": "teleport"}])),
        "steps[s].type",
        "teleport",
    );
    refused(
        journey(json!([
            {"id": "a", "type": "branch", "condition": {"type": "trait", "key": "x", "op": "exists"}, "yes": "b", "no": "b"},
            {"id": "b", "type": "tag", "tag": "tier:gold", "next": "a"}
        ])),
        "steps",
        "loop",
    );
    refused(
        journey(
            json!([{"id": "s", "type": "send", "channel": "carrier-pigeon", "template": "hello"}]),
        ),
        "steps[s].channel",
        "carrier-pigeon",
    );
    refused(
        journey(json!([{"id": "s", "type": "send", "channel": "sms", "template": "nope"}])),
        "steps[s].template",
        "nope",
    );

    // An invalid template is refused when saved.
    let r = world.server.admin_send(
        "POST",
        "/api/v1/templates",
        &json!({"key": "broken", "kind": "sms", "source": {"body": "{% if %}"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("body"), "{}", r.text());

    // A draft naming an unknown channel is saved but cannot be published: it stays a draft.
    let draft = journey(
        json!([{"id": "s", "type": "send", "channel": "carrier-pigeon", "template": "hello"}]),
    );
    world.admin("POST", "/api/v1/journeys", &draft, 201);
    let r = world
        .server
        .admin_send("POST", "/api/v1/journeys/bad/publish", &json!({}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("steps[s].channel"), "{}", r.text());
    let shown = world.admin("GET", "/api/v1/journeys/bad", &Value::Null, 200);
    assert_eq!(shown["versions"][0]["status"], "draft", "{shown}");
}

#[test]
fn an_sms_stop_reply_unsubscribes_and_a_merge_mid_journey_sends_once() {
    let (world, twilio) = World::welcome("{{ first_name | default: \"顾客\" }}，记得登录哦");
    world.send(vec![
        customer("stopper", json!({"phone": "+8613800000201"})),
        track("stopper", "Signed Up", json!({})),
        // One person who signed up twice, on two devices, before they were known.
        json!({"type": "track", "anonymousId": "device-1", "event": "Signed Up", "properties": {}}),
        json!({"type": "track", "anonymousId": "device-2", "event": "Signed Up", "properties": {}}),
    ]);
    // The reply comes from Twilio, signed over the URL it was given for replies.
    let inbound_url = format!("http://{}/hooks/sms/sms", world.server.addr);
    let mut config = serde_json::to_value(twilio.config()).expect("config JSON");
    config["inbound_url"] = json!(inbound_url);
    world.admin("PUT", "/api/v1/channels/sms", &config, 200);
    let reply = [
        ("From", "+8613800000201"),
        ("Body", "退订"),
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let form = serde_urlencoded::to_string(&reply).expect("a form");
    let auth_token = config["auth_token"].as_str().expect("the auth token");
    let signed = cohort_journey::channel::twilio_signature(auth_token, &inbound_url, &reply);
    let post_reply = |signature: &str| {
        world.server.request(
            "POST",
            "/hooks/sms/sms",
            &[
                ("X-Twilio-Signature", signature),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            form.as_bytes(),
        )
    };
    let forged = cohort_journey::channel::twilio_signature("not-the-token", &inbound_url, &reply);
    assert_eq!(post_reply(&forged).status, 401);
    let r = post_reply(&signed);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<Response>"), "{}", r.text());
    // Half-way through the delay, both devices turn out to be one customer.
    world.advance(12 * 3600);
    world.send(vec![
        json!({"type": "identify", "anonymousId": "device-1", "userId": "merged", "traits": {"phone": "+8613800000202"}}),
        json!({"type": "identify", "anonymousId": "device-2", "userId": "merged"}),
    ]);
    world.advance(13 * 3600);
    world.wait_until("the merged customer's SMS", 30, || {
        !twilio.requests().is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let requests = twilio.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].form()["To"], "+8613800000202");
    let report = world.report("welcome");
    let text = report.to_string();
    assert!(text.contains("skip:unsubscribed"), "{report}");
    assert!(text.contains("merged"), "{report}");
}

#[test]
fn kill_9_during_a_burst_of_due_sends_leaves_one_message_per_customer() {
    const CUSTOMERS: usize = 10_000;
    let (mut world, twilio) = World::welcome("您好，记得登录哦");
    for chunk in (0..CUSTOMERS).collect::<Vec<_>>().chunks(500) {
        let mut batch = Vec::new();
        for &i in chunk {
            let user = format!("burst-{i}");
            batch.push(customer(&user, json!({"phone": format!("+86139{i:08}")})));
            batch.push(track(&user, "Signed Up", json!({})));
        }
        // Sent without waiting for each batch: the wait below covers them all.
        let r = world.server.ingest("/v1/batch", &json!({"batch": batch}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Every entry is waiting before the day ends for all of them at once.
    world.wait_until("every entry", 300, || {
        world.report("welcome")["journeys"][0]["overall"]["entered"]["treated"] == CUSTOMERS
    });
    world.advance(25 * 3600);
    world.wait_until("the burst to start", 120, || twilio.requests().len() >= 200);
    world.server.kill_and_restart();
    world.wait_until("every customer's message", 600, || {
        twilio.keys().len() == CUSTOMERS
    });
    std::thread::sleep(Duration::from_secs(2));
    let keys = twilio.keys();
    assert_eq!(keys.len(), CUSTOMERS, "one key per customer");
    assert!(
        twilio.conflicting_keys().is_empty(),
        "a key with two bodies"
    );
    let repeats: usize = keys.values().map(|&n| n - 1).sum();
    // Repeats are only the sends in flight at the kill: at most one batch per channel.
    assert!(repeats <= 64, "{repeats} repeated sends");
    let mut recipients: Vec<String> = twilio
        .requests()
        .iter()
        .map(|r| r.form()["To"].clone())
        .collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), CUSTOMERS);
    assert!(twilio.problems().is_empty(), "{:?}", twilio.problems());
}

#[test]
fn quiet_hours_and_caps_hold_at_midnight_across_a_daylight_saving_change_and_in_utc_plus_14() {
    let (world, twilio) = World::with_sms();
    world.admin(
        "PUT",
        "/api/v1/delivery-rules",
        &json!({"time_zone": "Asia/Shanghai",
                "caps": {"sms": {"day": 1}},
                "quiet_hours": {"default": {"start": "21:00", "end": "08:00"}}}),
        200,
    );
    world.template("hello", "sms", json!({"body": "您好"}));
    world.publish(json!({
        "key": "ping", "name": "Ping",
        "trigger": {"type": "event", "event": "Ping"},
        "reentry": {"policy": "always"},
        "steps": [{"id": "say", "type": "send", "channel": "sms", "template": "hello"}]
    }));
    // Shanghai (the workspace's zone), New York (the `timezone` trait; summer time starts at
    // 2027-03-14 02:00 local), Kiritimati (UTC+14, from `context.timezone`).
    world.send(vec![
        customer("sh", json!({"phone": "+8613800000301"})),
        customer(
            "ny",
            json!({"phone": "+12125550302", "timezone": "America/New_York"}),
        ),
        json!({"type": "identify", "userId": "kiri", "traits": {"phone": "+68650000303"},
               "context": {"timezone": "Pacific/Kiritimati"}}),
    ]);
    let sent_to = |phone: &str| {
        twilio
            .requests()
            .iter()
            .filter(|r| r.form()["To"] == phone)
            .count()
    };
    let ping = |user: &str| world.send(vec![track(user, "Ping", json!({}))]);
    let quiet = Duration::from_secs(2);

    // 20:59 in Shanghai: sent, the day's one SMS.
    world.advance_to("2027-03-12T12:59:00Z");
    ping("sh");
    world.wait_until("the 20:59 SMS", 30, || sent_to("+8613800000301") == 1);
    // 21:30: held over midnight until 08:00, and counted on the new day.
    world.advance_to("2027-03-12T13:30:00Z");
    ping("sh");
    world.advance_to("2027-03-12T23:59:00Z");
    std::thread::sleep(quiet);
    assert_eq!(sent_to("+8613800000301"), 1, "sent in quiet hours");
    world.advance_to("2027-03-13T00:00:30Z");
    world.wait_until("the SMS held to 08:00", 30, || {
        sent_to("+8613800000301") == 2
    });
    // 08:30 the same day: over the daily cap.
    world.advance_to("2027-03-13T00:30:00Z");
    ping("sh");

    // 07:30 UTC is 15:30 in Shanghai but 21:30 in Kiritimati: held to 08:00 there (18:00 UTC).
    world.advance_to("2027-03-13T07:30:00Z");
    ping("kiri");
    world.advance_to("2027-03-13T17:59:00Z");
    std::thread::sleep(quiet);
    assert_eq!(
        sent_to("+68650000303"),
        0,
        "sent in Kiritimati's quiet hours"
    );
    world.advance_to("2027-03-13T18:00:30Z");
    world.wait_until("Kiritimati's 08:00 SMS", 30, || {
        sent_to("+68650000303") == 1
    });

    // 01:00 EST on the night summer time starts: held to 08:00 EDT, 12:00 UTC (not 13:00).
    world.advance_to("2027-03-14T06:00:00Z");
    ping("ny");
    world.advance_to("2027-03-14T11:59:00Z");
    std::thread::sleep(quiet);
    assert_eq!(sent_to("+12125550302"), 0, "sent in New York's quiet hours");
    world.advance_to("2027-03-14T12:00:30Z");
    world.wait_until("New York's 08:00 EDT SMS", 30, || {
        sent_to("+12125550302") == 1
    });

    std::thread::sleep(quiet);
    assert_eq!(sent_to("+8613800000301"), 2, "the capped SMS was sent");
    let report = world.report("ping").to_string();
    assert!(report.contains("skip:frequency_cap:sms:day"), "{report}");
    assert!(twilio.problems().is_empty(), "{:?}", twilio.problems());
}

#[test]
fn a_schedule_fires_at_nine_on_each_customers_clock_and_an_experiment_split_sends_their_variation()
{
    let (world, twilio) = World::with_sms();
    world.admin(
        "POST",
        "/api/v1/metrics",
        &json!({"key": "purchase", "type": "conversion", "event": "Order Completed"}),
        201,
    );
    world.admin(
        "POST",
        "/api/v1/experiments",
        &json!({"key": "copy", "name": "Morning copy", "metrics": ["purchase"],
                "variations": [{"key": "control", "value": false}, {"key": "short", "value": true}]}),
        201,
    );
    world.admin("POST", "/api/v1/experiments/copy/start", &json!({}), 200);
    world.admin(
        "POST",
        "/api/v1/segments",
        &json!({"name": "gold", "condition": {"type": "trait", "key": "plan", "op": "eq", "value": "gold"}}),
        201,
    );
    world.template(
        "long",
        "sms",
        json!({"body": "早上好！今天的会员活动已经开始，快来看看吧"}),
    );
    world.template("short", "sms", json!({"body": "早上好！"}));
    world.publish(json!({
        "key": "morning", "name": "Morning",
        "trigger": {"type": "schedule", "segment": "gold", "at": "09:00"},
        "reentry": {"policy": "always"},
        "steps": [
            {"id": "copy", "type": "experiment_split", "experiment": "copy",
             "paths": {"control": "long", "short": "short"}},
            {"id": "long", "type": "send", "channel": "sms", "template": "long"},
            {"id": "short", "type": "send", "channel": "sms", "template": "short"}
        ]
    }));
    // Six customers on Shanghai's clock (the workspace's zone), one in Los Angeles; and one
    // not in the segment.
    let mut people: Vec<Value> = (0..6)
        .map(|i| {
            customer(
                &format!("sh{i}"),
                json!({"plan": "gold", "phone": format!("+86138000004{i:02}")}),
            )
        })
        .collect();
    people.push(customer(
        "la",
        json!({"plan": "gold", "phone": "+13105550499", "timezone": "America/Los_Angeles"}),
    ));
    people.push(customer(
        "basic",
        json!({"plan": "basic", "phone": "+8613800000498"}),
    ));
    world.admin(
        "PUT",
        "/api/v1/delivery-rules",
        &json!({"time_zone": "Asia/Shanghai"}),
        200,
    );
    world.send(people);
    let sent_to = |prefix: &str| {
        twilio
            .requests()
            .iter()
            .filter(|r| r.form()["To"].starts_with(prefix))
            .map(|r| r.form())
            .collect::<Vec<_>>()
    };

    // 08:59 in Shanghai: nothing; 09:00: Shanghai's six, not Los Angeles (16:00 there).
    world.advance_to("2027-03-02T00:59:00Z");
    std::thread::sleep(Duration::from_secs(2));
    assert!(twilio.requests().is_empty(), "sent before nine");
    world.advance_to("2027-03-02T01:00:30Z");
    world.wait_until("Shanghai's six", 30, || sent_to("+86").len() == 6);
    std::thread::sleep(Duration::from_secs(2));
    assert!(sent_to("+1").is_empty(), "Los Angeles at 17:00");
    // 09:00 in Los Angeles (17:00 UTC).
    world.advance_to("2027-03-02T17:00:30Z");
    world.wait_until("Los Angeles at nine", 30, || sent_to("+1").len() == 1);

    // Each customer got the copy of the variation logged for them as `Experiment Viewed`.
    world.server.settle();
    let mut variations = std::collections::BTreeSet::new();
    let people = (0..6).map(|i| (format!("sh{i}"), format!("+86138000004{i:02}")));
    for (user, phone) in people.chain([("la".to_string(), "+13105550499".to_string())]) {
        let timeline = world
            .server
            .admin_get(&format!("/api/v1/profiles/user_id/{user}/events"))
            .json();
        let viewed: Vec<&Value> = timeline["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["name"] == "Experiment Viewed")
            .collect();
        assert_eq!(viewed.len(), 1, "{user}: {timeline}");
        let properties = &viewed[0]["message"]["properties"];
        assert_eq!(properties["experiment_id"], "copy");
        let variation = properties["variation_id"].as_str().expect("a variation");
        let body = &sent_to(&phone)[0]["Body"];
        let expected = if variation == "short" {
            "早上好！"
        } else {
            "早上好！今天的会员活动已经开始，快来看看吧"
        };
        assert_eq!(body, expected, "{user} in {variation}");
        variations.insert(variation.to_string());
    }
    assert_eq!(variations.len(), 2, "both variations were assigned");
    assert!(sent_to("+8613800000498").is_empty(), "not in the segment");
    let report = world.report("morning").to_string();
    assert!(report.contains("\"entered\""), "{report}");
}

#[test]
fn a_replaced_version_is_archived_once_its_customers_are_through() {
    let (world, twilio) = World::welcome("您好，记得登录哦");
    world.send(vec![
        customer("early", json!({"phone": "+8613800000601"})),
        track("early", "Signed Up", json!({})),
    ]);
    // Version 2 shortens the delay; the customer in flight finishes on version 1.
    let mut edited = welcome_journey();
    edited["steps"][0]["for"] = json!("2h");
    world.admin("PUT", "/api/v1/journeys/welcome", &edited, 200);
    let published = world.admin("POST", "/api/v1/journeys/welcome/publish", &json!({}), 200);
    assert_eq!(published["version"], 2, "{published}");
    let status = |version: usize| {
        let shown = world.admin("GET", "/api/v1/journeys/welcome", &Value::Null, 200);
        shown["versions"][version]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(status(0), "finishing");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(status(0), "finishing", "archived with a customer in flight");

    world.advance(25 * 3600);
    world.wait_until("version 1's SMS", 30, || twilio.requests().len() == 1);
    world.wait_until("version 1 archived", 30, || status(0) == "archived");
    assert_eq!(status(1), "published");
}

#[test]
fn the_cli_saves_validates_publishes_previews_and_reports_journeys() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("a file");
        path
    };
    let cli = |args: &[&str]| {
        let mut command = cohort();
        command.arg("journey").args(args).arg("--data").arg(&data);
        command
    };
    let channel = serde_json::to_string(&cohort_journey::channel::standin::twilio_config(
        "http://127.0.0.1:9",
    ))
    .expect("config JSON");
    succeed(cli(&["channel", "save", "sms"]).arg(write("sms.json", &channel)));
    let template = write(
        "nudge.json",
        r#"{"body": "{{ first_name | default: \"顾客\" }}，记得登录哦"}"#,
    );
    succeed(cli(&["template", "save", "login-nudge", "--kind", "sms"]).arg(&template));
    let preview = succeed(&mut cli(&["template", "preview", "login-nudge", "--json"]));
    let preview: Value = serde_json::from_slice(&preview.stdout).expect("JSON");
    assert!(
        preview.to_string().contains("顾客，记得登录哦"),
        "{preview}"
    );

    // YAML is read as well as JSON.
    let yaml = write(
        "welcome.yaml",
        "key: welcome\nname: Registered, not logged in\ntrigger: {type: event, event: Signed Up}\n\
         exit: [{type: event, event: Logged In}]\nsteps:\n  - {id: wait-a-day, type: delay, for: 24h, next: nudge}\n  \
         - {id: nudge, type: send, channel: sms, template: login-nudge}\n",
    );
    succeed(cli(&["validate"]).arg(&yaml));
    succeed(cli(&["save"]).arg(&yaml));
    succeed(&mut cli(&["publish", "welcome"]));
    let shown = succeed(&mut cli(&["show", "welcome", "--json"]));
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(shown["versions"][0]["status"], "published", "{shown}");

    // A refusal names the step and field, and exits non-zero.
    let bad = write(
        "bad.json",
        r#"{"key": "bad", "name": "Bad", "trigger": {"type": "event", "event": "X"},
            "steps": [{"id": "s", "type": "send", "channel": "pigeon", "template": "login-nudge"}]}"#,
    );
    let refused = cli(&["validate"]).arg(&bad).output().expect("run");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("steps[s].channel"), "{stderr}");

    succeed(&mut cli(&[
        "coupon",
        "create",
        "vip",
        "--valid-for-days",
        "30",
    ]));
    succeed(&mut cli(&["coupon", "generate", "vip", "VIP-####", "20"]));
    let pool = succeed(&mut cli(&["coupon", "show", "vip", "--json"]));
    let pool: Value = serde_json::from_slice(&pool.stdout).expect("JSON");
    assert_eq!(pool["available"], 20, "{pool}");
    let report = succeed(&mut cli(&[
        "report", "welcome", "--cost", "sms=0.05", "--json",
    ]));
    let report: Value = serde_json::from_slice(&report.stdout).expect("JSON");
    assert_eq!(report["journeys"][0]["journey"], "welcome", "{report}");
}
