//! The SQLite journey catalogue passes the journey catalogue conformance suite (which the
//! in-memory catalogue passes in `cohort-journey`), and keeps what it saved across a reopen.

use cohort_journey::catalogue::JourneyCatalogue;
use cohort_journey::catalogue::conformance::JourneyCatalogueTest;
use cohort_store::{Store, StoreConfig};

fn with_catalogue(test: impl JourneyCatalogueTest) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let mut catalogue = store.journey_catalogue().expect("the journey catalogue");
    test.run(&mut catalogue);
}

cohort_journey::journey_catalogue_conformance_suite!(with_catalogue);

#[test]
fn what_was_published_is_there_after_a_reopen() {
    use cohort_journey::definition::lifecycle::Action;
    use cohort_journey::definition::{Catalogue, ChannelKind, parse_value};
    use cohort_journey::runner::Run;
    use serde_json::json;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let now = chrono::Utc::now();
    let journey = parse_value(&json!({
        "key": "welcome", "name": "Welcome",
        "trigger": {"type": "event", "event": "Signed Up"},
        "steps": [{"id": "hello", "type": "send", "channel": "sms", "template": "hello"}]
    }))
    .unwrap();
    {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut catalogue = store.journey_catalogue().unwrap();
        catalogue
            .save_channel(
                "sms",
                &json!({"provider": "alibaba_sms", "access_key_id": "LTAI5t",
                        "access_key_secret": "s", "sign_name": "Cohort"}),
                now,
            )
            .unwrap();
        catalogue
            .save_template("hello", ChannelKind::Sms, &json!({"body": "您好"}), now)
            .unwrap();
        catalogue.save_draft(&journey, now).unwrap();
        catalogue
            .transition("welcome", 1, Action::Publish, &Catalogue::default(), now)
            .unwrap();
    }
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut catalogue = store.journey_catalogue().unwrap();
    let live = catalogue.live().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].version, live[0].run), (1, Run::Entering));
    assert_eq!(live[0].journey, journey);
    let v1 = catalogue.get("welcome", 1).unwrap().unwrap();
    assert_eq!(v1.templates.get("hello"), Some(&1));
    assert_eq!(
        v1.created_at.timestamp_micros(),
        now.timestamp_micros(),
        "times kept to the microsecond"
    );
}
