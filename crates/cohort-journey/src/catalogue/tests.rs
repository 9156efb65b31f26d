use super::*;
use crate::definition::parse_value;
use serde_json::json;

fn with_catalogue(test: impl conformance::JourneyCatalogueTest) {
    test.run(&mut MemoryJourneyCatalogue::default());
}
crate::journey_catalogue_conformance_suite!(with_catalogue);

fn now() -> DateTime<Utc> {
    chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 9, 0, 0).unwrap()
}

#[test]
fn template_errors_name_the_nested_field() {
    let source = json!({
        "title": "ok",
        "data": {"lines": ["fine", "{{ broken"]},
    });
    match check_template("push-1", &source) {
        Err(CatalogueError::InvalidTemplate {
            key,
            field,
            message,
        }) => {
            assert_eq!((key.as_str(), field.as_str()), ("push-1", "data.lines[1]"));
            assert!(message.contains("syntax error"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Numbers, booleans and nulls are not templates; text without Liquid is.
    check_template(
        "ok",
        &json!({"body": "plain", "ttl": 60, "urgent": true, "x": null}),
    )
    .unwrap();
}

#[test]
fn the_channels_and_templates_a_journey_uses_are_found_in_every_step() {
    let journey = parse_value(&json!({
        "key": "mixed", "name": "Mixed",
        "trigger": {"type": "api"},
        "steps": [
            {"id": "a", "type": "send", "channel": "sms", "template": "t1", "next": "b"},
            {"id": "b", "type": "webhook", "channel": "hook", "template": "t2", "next": "c"},
            {"id": "c", "type": "webhook", "channel": "hook", "next": "d"},
            {"id": "d", "type": "send", "channel": "mail", "template": "t1"}
        ]
    }))
    .unwrap();
    assert_eq!(
        channels_used(&journey).into_iter().collect::<Vec<_>>(),
        ["hook", "mail", "sms"]
    );
    assert_eq!(
        templates_used(&journey).into_iter().collect::<Vec<_>>(),
        ["t1", "t2"]
    );
}

#[test]
fn a_refused_publish_leaves_the_versions_given_untouched() {
    let journey = parse_value(&json!({
        "key": "j", "name": "J",
        "trigger": {"type": "api"},
        "steps": [{"id": "a", "type": "send", "channel": "sms", "template": "t"}]
    }))
    .unwrap();
    let mut v1 = next_draft(None, &journey, now()).unwrap();
    v1.state = State::Published;
    let v2 = next_draft(Some(&v1), &journey, now()).unwrap();
    assert_eq!(v2.version, 2);
    let mut versions = vec![v1, v2];
    let before = versions.clone();
    let mut existing = Existing::default();
    let refused = apply_transition(
        &mut versions,
        2,
        Action::Publish,
        &Catalogue::default(),
        &existing,
        now(),
    );
    assert!(matches!(refused, Err(CatalogueError::Invalid { .. })));
    assert_eq!(versions, before);
    existing.channels.insert("sms".into(), ChannelKind::Sms);
    existing.templates.insert("t".into(), (ChannelKind::Sms, 4));
    let later = now() + chrono::Duration::hours(1);
    let happened = apply_transition(
        &mut versions,
        2,
        Action::Publish,
        &Catalogue::default(),
        &existing,
        later,
    )
    .unwrap();
    assert_eq!(
        happened
            .iter()
            .map(|h| (h.version, h.change))
            .collect::<Vec<_>>(),
        [(2, Change::Published), (1, Change::Superseded)]
    );
    assert_eq!(versions[1].templates.get("t"), Some(&4));
    assert_eq!(
        (versions[0].status(), versions[1].status()),
        ("finishing", "published")
    );
    assert_eq!(versions[0].updated_at, later);
}

#[test]
fn changes_read_back_from_their_names() {
    for change in [
        Change::Saved,
        Change::Published,
        Change::Paused,
        Change::Resumed,
        Change::Archived,
        Change::Superseded,
    ] {
        assert_eq!(Change::parse(change.as_str()), Some(change));
        assert_eq!(
            serde_json::to_value(change).unwrap(),
            json!(change.as_str())
        );
    }
    assert_eq!(Change::parse("edited"), None);
}
