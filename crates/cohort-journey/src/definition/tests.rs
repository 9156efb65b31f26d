use super::*;
use serde_json::json;

const SIGNUP_JSON: &str = include_str!("../../tests/fixtures/signup-nudge.json");
const SIGNUP_YAML: &str = include_str!("../../tests/fixtures/signup-nudge.yaml");

fn catalogue() -> Catalogue {
    let mut c = Catalogue::default();
    for (key, kind) in [
        ("sms", ChannelKind::Sms),
        ("email", ChannelKind::Email),
        ("push", ChannelKind::Push),
        ("crm-hook", ChannelKind::Webhook),
    ] {
        c.channels.insert(key.into(), kind);
    }
    for (key, kind) in [
        ("login-nudge-sms", ChannelKind::Sms),
        ("coupon-email", ChannelKind::Email),
        ("crm-body", ChannelKind::Webhook),
    ] {
        c.templates.insert(key.into(), kind);
    }
    c.segments.insert("platinum".into());
    c.tags.insert("lifecycle:loyal".into(), TagKind::Rule);
    c.tags
        .insert("journey:signup_nudged".into(), TagKind::Manual);
    c.experiments.insert(
        "nudge-copy".into(),
        ["control", "short"].map(String::from).into(),
    );
    c.coupon_pools.insert("welcome-10".into());
    c
}

/// A journey around `steps`, triggered by an event.
fn journey(steps: Value) -> Value {
    json!({
        "key": "test", "name": "Test",
        "trigger": {"type": "event", "event": "Signed Up"},
        "steps": steps,
    })
}

fn with(mut value: Value, field: &str, v: Value) -> Value {
    value[field] = v;
    value
}

/// Reads and checks; the refusal, whichever stage gave it.
fn refused(value: Value) -> Invalid {
    match parse_value(&value) {
        Err(e) => e,
        Ok(j) => catalogue().check(&j).expect_err("refused"),
    }
}

fn accepted(value: Value) -> Journey {
    let j = parse_value(&value).expect("reads");
    catalogue().check(&j).expect("accepted");
    j
}

fn assert_refused(value: Value, field: &str, says: &str) {
    let e = refused(value);
    assert_eq!(e.field, field, "{e}");
    assert!(
        e.message.contains(says),
        "{e}\n  expected to contain: {says}"
    );
}

fn sms(id: &str, next: Option<&str>) -> Value {
    json!({"id": id, "type": "send", "channel": "sms", "template": "login-nudge-sms", "next": next})
}

#[test]
fn the_signup_journey_reads_alike_from_json_and_yaml_and_passes() {
    let from_json = parse_json(SIGNUP_JSON).expect("json");
    let from_yaml = parse_yaml(SIGNUP_YAML).expect("yaml");
    assert_eq!(from_json, from_yaml);
    catalogue().check(&from_json).expect("valid");

    // What it says, typed.
    let Step::Wait(first) = &from_json.steps[0] else {
        panic!("a wait first");
    };
    assert_eq!(first.timeout.seconds(), 24 * 3600);
    assert!(matches!(&first.until, WaitUntil::Event { event, .. } if event == "Logged In"));
    assert_eq!(
        (first.yes.as_deref(), first.no.as_deref()),
        (None, Some("sms-1"))
    );
    let Step::Wait(second) = &from_json.steps[2] else {
        panic!("a second wait");
    };
    assert_eq!(second.timeout.to_string(), "3d");
    assert_eq!(from_json.reentry, Reentry::Never);
    assert_eq!(
        from_json.goal.as_ref().map(|g| g.window.to_string()),
        Some("1w".into())
    );
    assert_eq!(from_json.holdout, 0.1);

    // Written back and read again, it is the same journey.
    let written = serde_json::to_value(&from_json).expect("serialise");
    assert_eq!(parse_value(&written).expect("again"), from_json);
    assert_eq!(written["steps"][0]["timeout"], json!("1d"));
}

#[test]
fn every_step_type_reads_and_writes_back() {
    let value = json!({
        "key": "all-steps", "name": "All steps",
        "trigger": {"type": "schedule", "segment": "platinum", "at": "09:30",
                    "days": ["mon", "fri"], "time_zone": "Asia/Shanghai"},
        "steps": [
            {"id": "d1", "type": "delay", "for": "1h30m", "next": "d2"},
            {"id": "d2", "type": "delay", "until": "2026-12-24T09:00:00+08:00", "next": "d3"},
            {"id": "d3", "type": "delay", "until_date": {"trait": "birthday"}, "offset": "-3d",
             "next": "d4"},
            {"id": "d4", "type": "delay", "until_time": "10:00", "next": "w1"},
            {"id": "w1", "type": "wait", "condition": {"type": "in_segment", "segment": "platinum"},
             "timeout": "2d", "yes": "split", "no": "x"},
            {"id": "split", "type": "random_split", "paths": [
                {"name": "a", "weight": 0.25, "next": "exp"},
                {"name": "b", "weight": 0.75, "next": "exp"}]},
            {"id": "exp", "type": "experiment_split", "experiment": "nudge-copy",
             "paths": {"control": "push", "short": null}},
            {"id": "push", "type": "send", "channel": "push", "template": "login-nudge-sms",
             "transactional": true, "quiet_hours": "skip", "next": "trait"},
            {"id": "trait", "type": "set_trait", "trait": "nudged", "value": true, "next": "untag"},
            {"id": "untag", "type": "tag", "tag": "journey:signup_nudged", "action": "remove",
             "next": "hook"},
            {"id": "hook", "type": "webhook", "channel": "crm-hook", "template": "crm-body",
             "next": "x"},
            {"id": "x", "type": "exit"}
        ],
        "reentry": {"policy": "after", "cooldown": "30d"},
        "multiple_entries": true,
        "goal": {"type": "segment_entered", "segment": "platinum", "window": "14d"},
        "global_control": false
    });
    let j = parse_value(&value).expect("reads");
    // The push template is an SMS one: refused until fixed, which proves the push kind is seen.
    assert_eq!(
        catalogue().check(&j).expect_err("wrong kind").field,
        "steps[push].template"
    );
    let mut c = catalogue();
    c.templates
        .insert("login-nudge-sms".into(), ChannelKind::Push);
    c.check(&j).expect("valid");
    let Trigger::Schedule(s) = &j.trigger else {
        panic!("a schedule");
    };
    assert_eq!(s.time_zone.to_string(), "Asia/Shanghai");
    assert!(matches!(&s.when, When::Daily { days, .. } if days.len() == 2));
    let Step::Delay(d3) = &j.steps[2] else {
        panic!("a delay");
    };
    assert_eq!(
        d3.until,
        DelayUntil::Date {
            date: DateSource::Trait("birthday".into()),
            offset: "-3d".parse().expect("offset"),
        }
    );
    let written = serde_json::to_value(&j).expect("serialise");
    assert_eq!(parse_value(&written).expect("again"), j);
    // YAML written from the same value reads back to the same journey.
    let yaml = serde_norway::to_string(&written).expect("yaml");
    assert_eq!(parse_yaml(&yaml).expect("yaml again"), j);
}

#[test]
fn triggers_of_every_kind() {
    for trigger in [
        json!({"type": "segment_entered", "segment": "platinum"}),
        json!({"type": "segment_exited", "segment": "platinum"}),
        json!({"type": "tag_added", "tag": "lifecycle:loyal"}),
        json!({"type": "tag_removed", "tag": "lifecycle:loyal"}),
        json!({"type": "trait_changed", "trait": "plan", "to": {"op": "eq", "value": "pro"}}),
        json!({"type": "schedule", "segment": "platinum", "cron": "0 9 * * MON-FRI"}),
        json!({"type": "api", "required": ["order_id"]}),
    ] {
        accepted(with(journey(json!([sms("s", None)])), "trigger", trigger));
    }
}

#[test]
fn reading_refuses_with_the_step_and_field() {
    // Unknown step type.
    assert_refused(
        journey(json!([{"id": "sms-1", "type": "sned", "channel": "sms"}])),
        "steps[sms-1].type",
        "\"sned\" is not a step type; use one of delay, wait",
    );
    assert_refused(
        journey(json!([{"id": "sms-1", "channel": "sms"}])),
        "steps[sms-1].type",
        "a step needs a type",
    );
    // A misspelt field is refused, not dropped.
    let e = refused(journey(json!([
        {"id": "sms-1", "type": "send", "channel": "sms", "tempalte": "x"}
    ])));
    assert!(e.field.starts_with("steps[sms-1]"), "{e}");
    assert!(e.message.contains("unknown field `tempalte`"), "{e}");
    // A missing id: the step is named by its place.
    assert_refused(
        journey(json!([sms("a", None), {"type": "exit"}])),
        "steps[1].id",
        "missing field `id`",
    );
    // A wrong duration, deep in a step.
    assert_refused(
        journey(json!([{"id": "w", "type": "wait", "event": "Logged In", "timeout": "24"}])),
        "steps[w].timeout",
        "\"24\" has no unit after 24",
    );
    assert_refused(
        journey(json!([{"id": "d", "type": "delay", "for": 24}])),
        "steps[d].for",
        "a duration such as \"24h\"",
    );
    assert_refused(
        journey(json!([{"id": "d", "type": "delay", "for": "1h", "until_time": "09:00"}])),
        "steps[d]",
        "not both for and until_time",
    );
    assert_refused(
        journey(json!([{"id": "d", "type": "delay", "next": "x"}])),
        "steps[d]",
        "a delay needs one of for",
    );
    assert_refused(
        journey(json!([{"id": "d", "type": "delay", "for": "1h", "offset": "1h"}])),
        "steps[d]",
        "offset goes with until_date",
    );
    assert_refused(
        journey(json!([{"id": "w", "type": "wait", "timeout": "1h"}])),
        "steps[w]",
        "a wait needs event or condition",
    );
    assert_refused(
        journey(json!([{"id": "b", "type": "branch", "condition": {"type": "trate"}}])),
        "steps[b].condition.type",
        "unknown variant `trate`",
    );
    assert_refused(
        journey(json!([{"id": "d", "type": "delay", "until": "tomorrow"}])),
        "steps[d].until",
        "\"tomorrow\" is not a date and time: write RFC 3339",
    );
    // Journey-level fields.
    assert_refused(
        with(
            journey(json!([sms("s", None)])),
            "goal",
            json!({"type": "event", "event": "Order Completed", "window": "2 days"}),
        ),
        "goal.window",
        "\"2 days\" is not a duration",
    );
    assert_refused(
        with(
            journey(json!([sms("s", None)])),
            "goal",
            json!({"type": "segment_entered", "event": "Order Completed", "window": "2d"}),
        ),
        "goal",
        "a segment goal has segment, not event",
    );
    assert_refused(
        with(
            journey(json!([sms("s", None)])),
            "trigger",
            json!({"type": "segment_entered"}),
        ),
        "trigger.segment",
        "missing field `segment`",
    );
    assert_refused(
        json!({"key": "k", "name": "n", "trigger": {"type": "api"}}),
        "steps",
        "missing field `steps`",
    );
    assert_refused(
        with(journey(json!([sms("s", None)])), "holduot", json!(0.1)),
        "holduot",
        "unknown field `holduot`",
    );
    assert_refused(
        with(
            journey(json!([sms("s", None)])),
            "trigger",
            json!({"type": "schedule", "segment": "platinum", "cron": "0 9 31 2 *"}),
        ),
        "trigger",
        "never fires",
    );
    assert_refused(
        with(
            journey(json!([sms("s", None)])),
            "trigger",
            json!({"type": "schedule", "segment": "platinum", "at": "9am"}),
        ),
        "trigger",
        "not a time of day",
    );
}

#[test]
fn yaml_errors_are_the_json_errors() {
    let yaml = "key: k\nname: n\ntrigger: {type: event, event: Signed Up}\nsteps:\n  - {id: w, type: wait, event: Logged In, timeout: 3x}\n";
    let e = parse_yaml(yaml).expect_err("bad unit");
    assert_eq!(e.field, "steps[w].timeout");
    let e = parse_yaml("key: [unclosed").expect_err("not yaml");
    assert_eq!(e.field, "body");
    assert!(e.message.starts_with("not YAML"), "{e}");
    let e = parse_json("{").expect_err("not json");
    assert_eq!(e.field, "body");
}

#[test]
fn definitions_over_the_size_limit_are_not_read() {
    let big = format!(
        "{{\"description\": \"{}\"}}",
        "x".repeat(MAX_DEFINITION_BYTES)
    );
    let e = parse_json(&big).expect_err("too big");
    assert!(e.message.contains("the limit is"), "{e}");
}

#[test]
fn graph_refusals_name_the_step_and_field() {
    assert_refused(journey(json!([])), "steps", "at least one step");
    assert_refused(
        journey(json!([sms("a", Some("a2")), sms("a", None)])),
        "steps[a].id",
        "two steps are called \"a\"",
    );
    assert_refused(
        journey(json!([sms("a", None), sms("", None)])),
        "steps[1].id",
        "is not a step id",
    );
    assert_refused(
        journey(json!([sms("a", Some("nowhere"))])),
        "steps[a].next",
        "there is no step \"nowhere\"",
    );
    assert_refused(
        journey(json!([
            {"id": "w", "type": "wait", "event": "Logged In", "timeout": "1d", "no": "gone"}
        ])),
        "steps[w].no",
        "there is no step \"gone\"",
    );
    assert_refused(
        journey(json!([
            {"id": "s", "type": "random_split", "paths": [
                {"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5, "next": "zzz"}]}
        ])),
        "steps[s].paths[1].next",
        "there is no step \"zzz\"",
    );
    // A forgotten `next` leaves the steps after it unreachable.
    assert_refused(
        journey(json!([sms("a", None), sms("orphan", None)])),
        "steps[orphan]",
        "no path leads to this step",
    );
}

#[test]
fn a_loop_must_pause() {
    // Through a delay for a duration: allowed.
    accepted(journey(json!([
        sms("remind", Some("later")),
        {"id": "later", "type": "delay", "for": "7d", "next": "remind"}
    ])));
    // Through a delay until the next 09:00: allowed.
    accepted(journey(json!([
        sms("remind", Some("morning")),
        {"id": "morning", "type": "delay", "until_time": "09:00", "next": "remind"}
    ])));
    // Through either path of a wait for an event: allowed.
    accepted(journey(json!([
        {"id": "w", "type": "wait", "event": "Cart Updated", "timeout": "1h",
         "yes": "w", "no": "nudge"},
        sms("nudge", Some("w"))
    ])));
    // Through the timed-out path of a wait for a condition: allowed.
    accepted(journey(json!([
        {"id": "w", "type": "wait", "condition": {"type": "trait", "key": "paid", "op": "is_true"},
         "timeout": "1d", "no": "nudge"},
        sms("nudge", Some("w"))
    ])));

    // No pause at all: refused, with the loop's path, at the path that closes it.
    assert_refused(
        journey(json!([
            sms("a", Some("b")),
            {"id": "b", "type": "branch",
             "condition": {"type": "trait", "key": "vip", "op": "is_true"},
             "yes": "c", "no": "a"},
            sms("c", None)
        ])),
        "steps[b].no",
        "a → b → a",
    );
    assert_refused(
        journey(json!([sms("a", Some("a"))])),
        "steps[a].next",
        "a → a",
    );
    // A longer loop, entered part way.
    assert_refused(
        journey(json!([
            {"id": "start", "type": "delay", "for": "1h", "next": "x"},
            sms("x", Some("y")),
            {"id": "y", "type": "set_trait", "trait": "n", "value": 1, "next": "z"},
            {"id": "z", "type": "issue_coupon", "pool": "welcome-10", "next": "x"}
        ])),
        "steps[z].next",
        "x → y → z → x",
    );
    // A delay until a date may already be over: it is no pause.
    assert_refused(
        journey(json!([
            sms("a", Some("d")),
            {"id": "d", "type": "delay", "until": "2026-12-24T09:00:00+08:00", "next": "a"}
        ])),
        "steps[d].next",
        "a → d → a",
    );
    // A condition that already holds passes a wait at once.
    assert_refused(
        journey(json!([
            {"id": "w", "type": "wait", "condition": {"type": "trait", "key": "vip", "op": "is_true"},
             "timeout": "1d", "yes": "nudge"},
            sms("nudge", Some("w"))
        ])),
        "steps[nudge].next",
        "w → nudge → w",
    );
}

#[test]
fn references_to_what_does_not_exist() {
    let send = |channel: &str, template: &str| {
        journey(json!([
            {"id": "sms-1", "type": "send", "channel": channel, "template": template}
        ]))
    };
    assert_refused(
        send("fax", "login-nudge-sms"),
        "steps[sms-1].channel",
        "there is no channel \"fax\"",
    );
    assert_refused(
        send("sms", "x"),
        "steps[sms-1].template",
        "there is no template \"x\"",
    );
    assert_refused(
        send("sms", "coupon-email"),
        "steps[sms-1].template",
        "\"coupon-email\" is an email template; channel \"sms\" sends sms",
    );
    assert_refused(
        send("crm-hook", "crm-body"),
        "steps[sms-1].channel",
        "call it with a webhook step",
    );
    assert_refused(
        journey(json!([{"id": "h", "type": "webhook", "channel": "sms"}])),
        "steps[h].channel",
        "a webhook step calls a webhook channel",
    );
    assert_refused(
        journey(
            json!([{"id": "h", "type": "webhook", "channel": "crm-hook", "template": "coupon-email"}]),
        ),
        "steps[h].template",
        "is an email template",
    );
    assert_refused(
        journey(json!([{"id": "c", "type": "issue_coupon", "pool": "gold"}])),
        "steps[c].pool",
        "there is no coupon pool \"gold\"",
    );
    assert_refused(
        journey(
            json!([{"id": "e", "type": "experiment_split", "experiment": "nope", "paths": {}}]),
        ),
        "steps[e].experiment",
        "there is no experiment \"nope\"",
    );
    assert_refused(
        journey(
            json!([{"id": "e", "type": "experiment_split", "experiment": "nudge-copy",
                        "paths": {"control": null}}]),
        ),
        "steps[e].paths",
        "variant \"short\" of experiment \"nudge-copy\" has no path",
    );
    assert_refused(
        journey(
            json!([{"id": "e", "type": "experiment_split", "experiment": "nudge-copy",
                        "paths": {"control": null, "short": null, "long": null}}]),
        ),
        "steps[e].paths.long",
        "has no variant \"long\"",
    );
    assert_refused(
        journey(json!([{"id": "b", "type": "branch",
                        "condition": {"type": "in_segment", "segment": "gold"}}])),
        "steps[b].condition",
        "segment \"gold\", which does not exist",
    );
    let triggered = |trigger: Value| with(journey(json!([sms("s", None)])), "trigger", trigger);
    assert_refused(
        triggered(json!({"type": "segment_entered", "segment": "gold"})),
        "trigger.segment",
        "there is no segment \"gold\"",
    );
    assert_refused(
        triggered(json!({"type": "schedule", "segment": "gold", "cron": "0 9 * * *"})),
        "trigger.segment",
        "there is no segment \"gold\"",
    );
    assert_refused(
        triggered(json!({"type": "tag_added", "tag": "vip:gold"})),
        "trigger.tag",
        "there is no tag \"vip:gold\"",
    );
    assert_refused(
        with(
            journey(json!([sms("s", None)])),
            "goal",
            json!({"type": "segment_exited", "segment": "gold", "window": "1d"}),
        ),
        "goal.segment",
        "there is no segment \"gold\"",
    );
    assert_refused(
        with(
            journey(json!([sms("s", None)])),
            "exit",
            json!([{"type": "tag_removed", "tag": "x:y"}]),
        ),
        "exit[0].tag",
        "there is no tag \"x:y\"",
    );
    // A rule decides its tag; a journey cannot.
    assert_refused(
        journey(json!([{"id": "t", "type": "tag", "tag": "lifecycle:loyal"}])),
        "steps[t].tag",
        "decided by its rule",
    );
    assert_refused(
        journey(json!([{"id": "t", "type": "tag", "tag": "Not A Tag"}])),
        "steps[t].tag",
        "is not a tag name",
    );
    // A new hand-set tag is fine.
    accepted(journey(
        json!([{"id": "t", "type": "tag", "tag": "journey:new_one"}]),
    ));
}

#[test]
fn values_out_of_range() {
    let one = || journey(json!([sms("s", None)]));
    for (holdout, ok) in [
        (0.0, true),
        (0.5, true),
        (0.999, true),
        (1.0, false),
        (-0.1, false),
    ] {
        let value = with(one(), "holdout", json!(holdout));
        if ok {
            accepted(value);
        } else {
            assert_refused(
                value,
                "holdout",
                "not a share from 0 up to (not including) 1",
            );
        }
    }
    assert_refused(
        journey(json!([{"id": "d", "type": "delay", "for": "0s"}])),
        "steps[d].for",
        "a delay must be longer than zero, not 0s",
    );
    assert_refused(
        journey(json!([{"id": "d", "type": "delay", "for": "-1h"}])),
        "steps[d].for",
        "not -1h",
    );
    assert_refused(
        journey(json!([{"id": "w", "type": "wait", "event": "Logged In", "timeout": "0m"}])),
        "steps[w].timeout",
        "a timeout must be longer than zero",
    );
    // An offset before a date may be negative or zero.
    accepted(journey(json!([
        {"id": "d", "type": "delay", "until_date": {"event_property": "departure_at"}, "offset": "-1d"}
    ])));
    assert_refused(
        with(
            one(),
            "reentry",
            json!({"policy": "after", "cooldown": "0s"}),
        ),
        "reentry.cooldown",
        "longer than zero",
    );
    assert_refused(
        with(one(), "multiple_entries", json!(true)),
        "multiple_entries",
        "lets nobody in twice",
    );
    assert_refused(
        with(
            one(),
            "goal",
            json!({"type": "event", "event": "Order Completed", "window": "0s"}),
        ),
        "goal.window",
        "longer than zero",
    );
    assert_refused(
        with(
            one(),
            "goal",
            json!({"type": "event", "event": "Order Completed", "window": "91d"}),
        ),
        "goal.window",
        "longer than 90 days",
    );
    assert_refused(
        with(one(), "exit", json!([{"type": "goal"}])),
        "exit[0]",
        "no goal to meet",
    );
    let split = |weights: &[f64]| {
        let paths: Vec<Value> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| json!({"name": format!("p{i}"), "weight": w}))
            .collect();
        journey(json!([{"id": "split", "type": "random_split", "paths": paths}]))
    };
    accepted(split(&[0.1, 0.2, 0.7]));
    assert_refused(
        split(&[0.5, 0.4]),
        "steps[split].paths",
        "the weights sum to 0.9, not 1",
    );
    assert_refused(
        split(&[1.5, -0.5]),
        "steps[split].paths[0].weight",
        "not a weight from 0 to 1",
    );
    assert_refused(split(&[1.0]), "steps[split].paths", "at least two paths");
    // Conditions are checked by the segment language, under the step's field.
    assert_refused(
        journey(json!([{"id": "b", "type": "branch",
                        "condition": {"type": "trait", "key": "age", "op": "gt", "value": true}}])),
        "steps[b].condition.value",
        "\"gt\" needs a number",
    );
    assert_refused(
        with(
            one(),
            "trigger",
            json!({"type": "event", "event": "Signed Up",
                   "where": [{"property": "plan", "op": "in", "value": []}]}),
        ),
        "trigger.where[0].value",
        "\"in\" needs a list",
    );
    assert_refused(
        with(one(), "trigger", json!({"type": "event", "event": ""})),
        "trigger.event",
        "an event name cannot be empty",
    );
    assert_refused(
        with(
            one(),
            "trigger",
            json!({"type": "trait_changed", "trait": "plan", "to": {"op": "exists", "value": 1}}),
        ),
        "trigger.to.value",
        "takes no value",
    );
    assert_refused(
        with(one(), "key", json!("has space")),
        "key",
        "is not a journey key",
    );
    assert_refused(with(one(), "name", json!("  ")), "name", "cannot be empty");
}

#[test]
fn schedules_fire_on_their_wall_clock_minutes() {
    use chrono::NaiveDate;
    let at = |d: u32, h: u32, m: u32| {
        NaiveDate::from_ymd_opt(2026, 12, d)
            .and_then(|day| day.and_hms_opt(h, m, 30))
            .expect("a date")
    };
    let schedule = |value: serde_json::Value| match parse_value(&json!({
        "key": "s", "name": "S", "trigger": value,
        "steps": [{"id": "x", "type": "exit"}]
    }))
    .expect("a journey")
    .trigger
    {
        Trigger::Schedule(s) => s.when,
        other => panic!("{other:?}"),
    };
    // 2026-12-04 is a Friday.
    let daily = schedule(json!({"type": "schedule", "segment": "p", "at": "09:30"}));
    assert!(daily.matches(at(4, 9, 30)));
    assert!(!daily.matches(at(4, 9, 31)) && !daily.matches(at(4, 21, 30)));
    let weekdays = schedule(
        json!({"type": "schedule", "segment": "p", "at": "09:30", "days": ["MON", "FRI"]}),
    );
    assert!(weekdays.matches(at(4, 9, 30)) && weekdays.matches(at(7, 9, 30)));
    assert!(!weekdays.matches(at(5, 9, 30)));
    let cron = schedule(json!({"type": "schedule", "segment": "p", "cron": "0 */6 * * *"}));
    assert!(cron.matches(at(4, 0, 0)) && cron.matches(at(4, 18, 0)));
    assert!(!cron.matches(at(4, 7, 0)));
}
