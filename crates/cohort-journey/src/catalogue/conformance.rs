//! The behaviour every [`JourneyCatalogue`] implementation must have, as one suite of tests.
//!
//! An implementation's crate runs it with
//! [`journey_catalogue_conformance_suite!`](crate::journey_catalogue_conformance_suite), given
//! a function that runs a [`JourneyCatalogueTest`] over a fresh, empty catalogue:
//!
//! ```ignore
//! fn with_catalogue(test: impl cohort_journey::catalogue::conformance::JourneyCatalogueTest) {
//!     test.run(&mut cohort_journey::catalogue::MemoryJourneyCatalogue::default());
//! }
//! cohort_journey::journey_catalogue_conformance_suite!(with_catalogue);
//! ```

use super::{CatalogueError, Change, JourneyCatalogue, JourneyVersion};
use crate::definition::lifecycle::{Action, State};
use crate::definition::{Catalogue, ChannelKind, Journey, parse_value};
use crate::runner::{Run, Runner};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

/// One behaviour of the suite, run over whatever catalogue the implementation lends it.
pub trait JourneyCatalogueTest {
    fn run<C: JourneyCatalogue>(self, catalogue: &mut C);
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0)
        .single()
        .expect("a valid time")
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

/// A journey that sends `template` through `channel` a day after sign-up; `name` tells
/// versions apart.
fn journey(key: &str, name: &str, channel: &str, template: &str) -> Journey {
    parse_value(&json!({
        "key": key, "name": name,
        "trigger": {"type": "event", "event": "Signed Up"},
        "exit": [{"type": "event", "event": "Logged In"}],
        "steps": [
            {"id": "wait", "type": "delay", "for": "24h", "next": "nudge"},
            {"id": "nudge", "type": "send", "channel": channel, "template": template}
        ]
    }))
    .expect("a valid definition")
}

fn sms_config() -> Value {
    json!({"provider": "alibaba_sms", "access_key_id": "LTAI5tCohort",
           "access_key_secret": "catalogue-test-secret", "sign_name": "Cohort"})
}

fn webhook_config() -> Value {
    json!({"provider": "webhook", "url": "https://hooks.example.test/cohort",
           "secret": "whsec_Y29ob3J0IGNhdGFsb2d1ZSB0ZXN0IHNlY3JldCAzMmI="})
}

/// A channel `sms` and a template `nudge`, as most cases need.
fn basics<C: JourneyCatalogue>(catalogue: &mut C) {
    catalogue
        .save_channel("sms", &sms_config(), t0())
        .expect("a valid channel");
    catalogue
        .save_template(
            "nudge",
            ChannelKind::Sms,
            &json!({"body": "{{ first_name | default: \"顾客\" }}，还没登录哦"}),
            t0(),
        )
        .expect("a valid template");
}

fn act<C: JourneyCatalogue>(
    catalogue: &mut C,
    key: &str,
    version: u32,
    action: Action,
    minutes: i64,
) -> Result<JourneyVersion, CatalogueError> {
    catalogue.transition(key, version, action, &Catalogue::default(), at(minutes))
}

fn states<C: JourneyCatalogue>(catalogue: &mut C, key: &str) -> Vec<(u32, &'static str)> {
    catalogue
        .list()
        .unwrap()
        .into_iter()
        .filter(|v| v.key == key)
        .map(|v| (v.version, v.status()))
        .collect()
}

fn live<C: JourneyCatalogue>(catalogue: &mut C) -> Vec<(String, u32, Run)> {
    catalogue
        .live()
        .unwrap()
        .into_iter()
        .map(|p| (p.journey.key, p.version, p.run))
        .collect()
}

/// A draft is edited in place until it is published; an edit after that is a new draft
/// version, and the published one never changes.
pub fn drafts_are_edited_in_place_and_published_versions_never<C: JourneyCatalogue>(
    catalogue: &mut C,
) {
    basics(catalogue);
    assert_eq!(catalogue.latest("welcome").unwrap(), None);
    let first = journey("welcome", "Welcome", "sms", "nudge");
    let v1 = catalogue.save_draft(&first, at(1)).unwrap();
    assert_eq!(
        (v1.version, v1.state, v1.finishing),
        (1, State::Draft, false)
    );
    assert_eq!((v1.created_at, v1.updated_at), (at(1), at(1)));
    assert!(v1.templates.is_empty());
    let edited = journey("welcome", "Welcome, edited", "sms", "nudge");
    let v1 = catalogue.save_draft(&edited, at(2)).unwrap();
    assert_eq!(
        (v1.version, v1.created_at, v1.updated_at),
        (1, at(1), at(2))
    );
    let stored = catalogue.get("welcome", 1).unwrap().expect("stored");
    assert_eq!(stored.journey, edited, "read back as saved");
    assert_eq!(stored, v1);
    act(catalogue, "welcome", 1, Action::Publish, 3).unwrap();

    let third = journey("welcome", "Welcome, third", "sms", "nudge");
    let v2 = catalogue.save_draft(&third, at(4)).unwrap();
    assert_eq!(
        (v2.version, v2.state, v2.created_at),
        (2, State::Draft, at(4))
    );
    let v1 = catalogue.get("welcome", 1).unwrap().unwrap();
    assert_eq!(
        (v1.journey.name.as_str(), v1.state),
        ("Welcome, edited", State::Published)
    );
    assert_eq!(catalogue.latest("welcome").unwrap().unwrap().journey, third);
    // Other journeys are versioned on their own.
    let other = journey("cart", "Cart", "sms", "nudge");
    assert_eq!(catalogue.save_draft(&other, at(5)).unwrap().version, 1);
    let listed: Vec<(String, u32)> = catalogue
        .list()
        .unwrap()
        .into_iter()
        .map(|v| (v.key, v.version))
        .collect();
    assert_eq!(
        listed,
        [
            ("cart".into(), 1),
            ("welcome".into(), 1),
            ("welcome".into(), 2)
        ]
    );
    assert_eq!(catalogue.get("welcome", 3).unwrap(), None);
    let bad = Journey {
        key: "no spaces".into(),
        ..first
    };
    assert!(matches!(
        catalogue.save_draft(&bad, at(6)),
        Err(CatalogueError::BadKey { .. })
    ));
    assert_eq!(catalogue.latest("no spaces").unwrap(), None);
}

/// Publishing a version makes the versions published before it finishing: they take no new
/// entries, their customers finish on them, and the runner takes what `live` gives.
pub fn publishing_moves_earlier_versions_to_finishing<C: JourneyCatalogue>(catalogue: &mut C) {
    basics(catalogue);
    let welcome = journey("welcome", "Welcome", "sms", "nudge");
    catalogue.save_draft(&welcome, at(1)).unwrap();
    assert!(live(catalogue).is_empty(), "a draft does not run");
    let v1 = act(catalogue, "welcome", 1, Action::Publish, 2).unwrap();
    assert_eq!(
        (v1.state, v1.run(), v1.updated_at),
        (State::Published, Some(Run::Entering), at(2))
    );
    assert_eq!(live(catalogue), [("welcome".into(), 1, Run::Entering)]);

    catalogue.save_draft(&welcome, at(3)).unwrap();
    assert_eq!(
        states(catalogue, "welcome"),
        [(1, "published"), (2, "draft")]
    );
    act(catalogue, "welcome", 2, Action::Publish, 4).unwrap();
    assert_eq!(
        states(catalogue, "welcome"),
        [(1, "finishing"), (2, "published")]
    );
    let v1 = catalogue.get("welcome", 1).unwrap().unwrap();
    assert_eq!(
        (v1.state, v1.finishing, v1.updated_at),
        (State::Published, true, at(4))
    );
    catalogue.save_draft(&welcome, at(5)).unwrap();
    act(catalogue, "welcome", 3, Action::Publish, 6).unwrap();
    assert_eq!(
        live(catalogue),
        [
            ("welcome".into(), 1, Run::Finishing),
            ("welcome".into(), 2, Run::Finishing),
            ("welcome".into(), 3, Run::Entering)
        ]
    );
    Runner::new(catalogue.live().unwrap()).expect("one entering version per journey");

    // Archived versions leave the runner; the others are untouched.
    act(catalogue, "welcome", 1, Action::Archive, 7).unwrap();
    assert_eq!(
        states(catalogue, "welcome"),
        [(1, "archived"), (2, "finishing"), (3, "published")]
    );
    assert_eq!(live(catalogue).len(), 2);
    let history: Vec<(u32, Change, DateTime<Utc>)> = catalogue
        .history("welcome")
        .unwrap()
        .into_iter()
        .map(|h| (h.version, h.change, h.at))
        .collect();
    assert_eq!(
        history,
        [
            (1, Change::Saved, at(1)),
            (1, Change::Published, at(2)),
            (2, Change::Saved, at(3)),
            (2, Change::Published, at(4)),
            (1, Change::Superseded, at(4)),
            (3, Change::Saved, at(5)),
            (3, Change::Published, at(6)),
            (2, Change::Superseded, at(6)),
            (1, Change::Archived, at(7)),
        ]
    );
    assert!(catalogue.history("cart").unwrap().is_empty());
}

/// Pause and resume follow the lifecycle; a paused version stays live (its timers wait), and
/// one superseded while paused resumes as finishing.
pub fn paused_versions_stay_live_and_resume_where_they_were<C: JourneyCatalogue>(
    catalogue: &mut C,
) {
    basics(catalogue);
    let welcome = journey("welcome", "Welcome", "sms", "nudge");
    catalogue.save_draft(&welcome, at(1)).unwrap();
    act(catalogue, "welcome", 1, Action::Publish, 2).unwrap();
    let paused = act(catalogue, "welcome", 1, Action::Pause, 3).unwrap();
    assert_eq!(
        (paused.state, paused.run()),
        (State::Paused, Some(Run::Paused))
    );
    assert_eq!(live(catalogue), [("welcome".into(), 1, Run::Paused)]);
    assert_eq!(
        act(catalogue, "welcome", 1, Action::Resume, 4)
            .unwrap()
            .run(),
        Some(Run::Entering)
    );
    act(catalogue, "welcome", 1, Action::Pause, 5).unwrap();
    catalogue.save_draft(&welcome, at(6)).unwrap();
    act(catalogue, "welcome", 2, Action::Publish, 7).unwrap();
    assert_eq!(
        live(catalogue),
        [
            ("welcome".into(), 1, Run::Paused),
            ("welcome".into(), 2, Run::Entering)
        ]
    );
    Runner::new(catalogue.live().unwrap()).expect("a runnable set");
    let resumed = act(catalogue, "welcome", 1, Action::Resume, 8).unwrap();
    assert_eq!(
        (resumed.run(), resumed.status()),
        (Some(Run::Finishing), "finishing")
    );
    Runner::new(catalogue.live().unwrap()).expect("still one entering version");
}

/// Actions the state does not allow, unknown versions and publishes that fail the check are
/// refused with their reason, and change nothing: nothing is ever half-published.
pub fn refused_actions_change_nothing<C: JourneyCatalogue>(catalogue: &mut C) {
    basics(catalogue);
    let welcome = journey("welcome", "Welcome", "sms", "nudge");
    catalogue.save_draft(&welcome, at(1)).unwrap();
    act(catalogue, "welcome", 1, Action::Publish, 2).unwrap();
    // v2 sends through a channel that does not exist.
    catalogue
        .save_draft(&journey("welcome", "Welcome", "push", "nudge"), at(3))
        .unwrap();
    let before = (
        catalogue.list().unwrap(),
        catalogue.history("welcome").unwrap(),
    );
    match act(catalogue, "welcome", 2, Action::Publish, 4) {
        Err(CatalogueError::Invalid {
            key,
            version,
            invalid,
        }) => {
            assert_eq!((key.as_str(), version), ("welcome", 2));
            assert_eq!(invalid.field, "steps[nudge].channel");
        }
        other => panic!("published a journey with an unknown channel: {other:?}"),
    }
    // Channels and templates are this catalogue's, whatever the caller's catalogue says.
    let mut claims = Catalogue::default();
    claims.channels.insert("push".into(), ChannelKind::Sms);
    assert!(matches!(
        catalogue.transition("welcome", 2, Action::Publish, &claims, at(4)),
        Err(CatalogueError::Invalid { .. })
    ));
    for (version, action) in [
        (2, Action::Pause),
        (2, Action::Resume),
        (1, Action::Publish),
        (1, Action::Resume),
        (1, Action::Edit),
        (2, Action::Edit),
    ] {
        match act(catalogue, "welcome", version, action, 4) {
            Err(CatalogueError::Transition { error, .. }) => {
                assert_eq!(error.action, action);
            }
            other => panic!("v{version} {action}: {other:?}"),
        }
    }
    for (key, version) in [("welcome", 3), ("nobody", 1)] {
        assert!(matches!(
            act(catalogue, key, version, Action::Publish, 4),
            Err(CatalogueError::UnknownVersion { .. })
        ));
    }
    // What the caller passes for segments counts: a journey on a segment nobody has.
    let segment = parse_value(&json!({
        "key": "vip", "name": "VIP",
        "trigger": {"type": "segment_entered", "segment": "platinum"},
        "steps": [{"id": "nudge", "type": "send", "channel": "sms", "template": "nudge"}]
    }))
    .unwrap();
    catalogue.save_draft(&segment, at(4)).unwrap();
    let vip_before = catalogue.list().unwrap();
    assert!(matches!(
        act(catalogue, "vip", 1, Action::Publish, 4),
        Err(CatalogueError::Invalid { invalid, .. }) if invalid.field == "trigger.segment"
    ));
    assert_eq!(catalogue.list().unwrap(), vip_before);
    let mut with_segment = Catalogue::default();
    with_segment.segments.insert("platinum".into());
    catalogue
        .transition("vip", 1, Action::Publish, &with_segment, at(5))
        .expect("the segment exists");
    let after: Vec<JourneyVersion> = catalogue
        .list()
        .unwrap()
        .into_iter()
        .filter(|v| v.key == "welcome")
        .collect();
    assert_eq!(
        (after, catalogue.history("welcome").unwrap()),
        before,
        "refusals changed nothing"
    );
    assert_eq!(live(catalogue)[1], ("welcome".into(), 1, Run::Entering));

    // Once the channel exists, the same draft publishes.
    catalogue
        .save_channel("push", &sms_config(), at(6))
        .unwrap();
    act(catalogue, "welcome", 2, Action::Publish, 7).unwrap();
    assert_eq!(
        states(catalogue, "welcome"),
        [(1, "finishing"), (2, "published")]
    );
}

/// Every save of a template is a new version; a published journey keeps the versions that
/// were latest when it was published.
pub fn templates_are_versioned_and_fixed_at_publish<C: JourneyCatalogue>(catalogue: &mut C) {
    basics(catalogue);
    let body = |text: &str| json!({"body": text});
    assert_eq!(catalogue.template("nudge").unwrap().unwrap().version, 1);
    let v2 = catalogue
        .save_template(
            "nudge",
            ChannelKind::Sms,
            &body("v2 {{ first_name }}"),
            at(1),
        )
        .unwrap();
    assert_eq!(
        (v2.version, v2.kind, v2.saved_at),
        (2, ChannelKind::Sms, at(1))
    );
    catalogue
        .save_draft(&journey("welcome", "Welcome", "sms", "nudge"), at(2))
        .unwrap();
    let published = act(catalogue, "welcome", 1, Action::Publish, 3).unwrap();
    assert_eq!(
        published.templates.into_iter().collect::<Vec<_>>(),
        [("nudge".into(), 2)]
    );
    catalogue
        .save_template("nudge", ChannelKind::Sms, &body("v3"), at(4))
        .unwrap();
    let v1 = catalogue.get("welcome", 1).unwrap().unwrap();
    assert_eq!(v1.templates.get("nudge"), Some(&2), "fixed at publish");
    let pinned = catalogue.template_version("nudge", 2).unwrap().unwrap();
    assert_eq!(pinned.source, body("v2 {{ first_name }}"));
    assert_eq!(
        catalogue.template("nudge").unwrap().unwrap().source,
        body("v3")
    );
    assert_eq!(catalogue.template_version("nudge", 9).unwrap(), None);
    assert_eq!(catalogue.template("none").unwrap(), None);

    let email = json!({"subject": "{{ first_name | default: \"顾客\" }}，您的购物车",
                       "html": "<ul>{% for p in event.products %}<li>{{ p.name }}</li>{% endfor %}</ul>",
                       "text": "{% for p in event.products %}{{ p.name }}\n{% endfor %}"});
    catalogue
        .save_template("cart", ChannelKind::Email, &email, at(5))
        .unwrap();
    let all: Vec<(String, u32, ChannelKind)> = catalogue
        .templates()
        .unwrap()
        .into_iter()
        .map(|t| (t.key, t.version, t.kind))
        .collect();
    assert_eq!(
        all,
        [
            ("cart".into(), 1, ChannelKind::Email),
            ("nudge".into(), 3, ChannelKind::Sms)
        ]
    );
    assert_eq!(catalogue.template("cart").unwrap().unwrap().source, email);

    // Refused saves change nothing.
    match catalogue.save_template(
        "cart",
        ChannelKind::Email,
        &json!({"subject": "ok", "html": "<p>{% for p in event.products %}</p>"}),
        at(6),
    ) {
        Err(CatalogueError::InvalidTemplate { field, .. }) => assert_eq!(field, "html"),
        other => panic!("saved a broken template: {other:?}"),
    }
    assert!(matches!(
        catalogue.save_template("cart", ChannelKind::Sms, &body("hi"), at(6)),
        Err(CatalogueError::TemplateKind { .. })
    ));
    assert!(matches!(
        catalogue.save_template("plain", ChannelKind::Sms, &json!("just text"), at(6)),
        Err(CatalogueError::InvalidTemplate { .. })
    ));
    assert!(matches!(
        catalogue.save_template("bad key", ChannelKind::Sms, &body("hi"), at(6)),
        Err(CatalogueError::BadKey { .. })
    ));
    assert_eq!(catalogue.template("cart").unwrap().unwrap().version, 1);
    assert_eq!(catalogue.templates().unwrap().len(), 2);
}

/// Channels are saved after their configuration is checked, read back as saved, and not
/// deleted (nor moved to another kind) while a live version sends through them.
pub fn channels_are_kept_while_live_journeys_use_them<C: JourneyCatalogue>(catalogue: &mut C) {
    basics(catalogue);
    let sms = catalogue.channel("sms").unwrap().expect("saved");
    assert_eq!(
        (sms.kind, &sms.config, sms.saved_at),
        (ChannelKind::Sms, &sms_config(), t0())
    );
    let hook = catalogue
        .save_channel("crm-hook", &webhook_config(), at(1))
        .unwrap();
    assert_eq!(hook.kind, ChannelKind::Webhook);
    let names: Vec<String> = catalogue
        .channels()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["crm-hook", "sms"]);
    match catalogue.save_channel(
        "broken",
        &json!({"provider": "webhook", "url": "ftp://x", "secret": "whsec_x"}),
        at(1),
    ) {
        Err(CatalogueError::InvalidChannel { name, error }) => {
            assert_eq!((name.as_str(), error.field.as_str()), ("broken", "url"));
        }
        other => panic!("saved a broken channel: {other:?}"),
    }
    assert_eq!(catalogue.channel("broken").unwrap(), None);

    // A draft does not hold a channel; a published or paused version does.
    catalogue
        .save_draft(&journey("welcome", "Welcome", "sms", "nudge"), at(2))
        .unwrap();
    catalogue
        .save_channel("spare", &sms_config(), at(2))
        .unwrap();
    catalogue
        .save_draft(&journey("spare-user", "Spare", "spare", "nudge"), at(2))
        .unwrap();
    assert!(catalogue.delete_channel("spare").unwrap());
    assert_eq!(catalogue.channel("spare").unwrap(), None);
    assert!(!catalogue.delete_channel("spare").unwrap(), "already gone");
    act(catalogue, "welcome", 1, Action::Publish, 3).unwrap();
    act(catalogue, "welcome", 1, Action::Pause, 4).unwrap();
    match catalogue.delete_channel("sms") {
        Err(CatalogueError::ChannelInUse { name, by }) => {
            assert_eq!((name.as_str(), by), ("sms", vec!["welcome v1".to_string()]));
        }
        other => panic!("deleted a channel in use: {other:?}"),
    }
    assert!(matches!(
        catalogue.save_channel("sms", &webhook_config(), at(5)),
        Err(CatalogueError::ChannelInUse { .. })
    ));
    assert_eq!(
        catalogue.channel("sms").unwrap().unwrap().kind,
        ChannelKind::Sms
    );
    // The same kind, another provider account: allowed while in use.
    let rotated = json!({"provider": "alibaba_sms", "access_key_id": "LTAI5tRotated",
                         "access_key_secret": "rotated-secret", "sign_name": "Cohort"});
    catalogue.save_channel("sms", &rotated, at(6)).unwrap();
    let sms = catalogue.channel("sms").unwrap().unwrap();
    assert_eq!((sms.config, sms.saved_at), (rotated, at(6)));
    act(catalogue, "welcome", 1, Action::Archive, 7).unwrap();
    assert!(catalogue.delete_channel("sms").unwrap());
    assert_eq!(catalogue.channels().unwrap().len(), 1);
}

/// Runs every behaviour of the suite as a test; the argument runs a
/// [`JourneyCatalogueTest`] over a fresh catalogue.
#[macro_export]
macro_rules! journey_catalogue_conformance_suite {
    ($with_catalogue:path) => {
        mod journey_catalogue_conformance {
            use super::*;
            $crate::journey_catalogue_conformance_suite!(@tests $with_catalogue;
                drafts_are_edited_in_place_and_published_versions_never,
                publishing_moves_earlier_versions_to_finishing,
                paused_versions_stay_live_and_resume_where_they_were,
                refused_actions_change_nothing,
                templates_are_versioned_and_fixed_at_publish,
                channels_are_kept_while_live_journeys_use_them
            );
        }
    };
    (@tests $with_catalogue:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                struct Test;
                impl $crate::catalogue::conformance::JourneyCatalogueTest for Test {
                    fn run<C: $crate::catalogue::JourneyCatalogue>(self, catalogue: &mut C) {
                        $crate::catalogue::conformance::$name(catalogue)
                    }
                }
                $with_catalogue(Test)
            }
        )*
    };
}
