use super::*;
use crate::state::{Conversion, Effect, EntryId, JourneyStateStore, Message, Move, NewEntry};
use chrono::{TimeZone, Utc};

fn with_state(test: impl conformance::JourneyStatsTest) {
    test.run(&mut MemoryJourneyState::default());
}
crate::journey_stats_conformance_suite!(with_state);

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
}

/// One entry as the runner leaves it: a held-out one ends at once; a treated one sends on
/// `channel` (completed `sent`) and completes. Either converts with `revenue` when given.
fn entry(
    state: &mut MemoryJourneyState,
    journey: &str,
    version: u32,
    customer: i64,
    held_out: bool,
    channel: &str,
    revenue: Option<f64>,
) -> EntryId {
    let new = NewEntry::new(journey, version, customer, "nudge", t0()).held_out(held_out);
    let id = state.enter(&new, true).unwrap().unwrap();
    let mut message = None;
    if held_out {
        assert!(
            state
                .advance(id, "nudge", &Move::exit("held out"), &[])
                .unwrap()
        );
    } else {
        let key = crate::state::effect_key(journey, version, id, "nudge");
        let effect = Effect {
            key: key.clone(),
            channel: channel.to_string(),
            payload: serde_json::json!({"kind": "send", "journey": journey,
                "version": version, "entry": id.0, "step": "nudge"}),
        };
        let sent = Message {
            key: key.clone(),
            at: t0() + chrono::Duration::hours(1),
        };
        let exit = Move::exit("completed");
        assert!(
            state
                .advance_with_message(id, "nudge", &exit, &[effect], Some(&sent))
                .unwrap()
        );
        state.complete_effect(&key, "sent", true).unwrap();
        message = Some(key);
    }
    if let Some(revenue) = revenue {
        let conversion = Conversion {
            at: t0() + chrono::Duration::hours(2),
            cause: format!("order-{customer}"),
            revenue: Some(revenue),
            message,
        };
        assert!(state.convert(id, &conversion).unwrap());
    }
    id
}

fn close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "got {got}, want {want}"
    );
}

fn check(figure: &Figure<Interval>, estimate: f64, ci: [f64; 2]) {
    let got = figure
        .figures()
        .unwrap_or_else(|| panic!("refused: {figure:?}"));
    close(got.estimate, estimate);
    close(got.ci[0], ci[0]);
    close(got.ci[1], ci[1]);
}

fn refused(figure: &Figure<Interval>) -> ReasonCode {
    figure
        .reason()
        .unwrap_or_else(|| panic!("figures: {figure:?}"))
        .code
}

fn sms_at(price: f64) -> Costs {
    Costs::new("CNY").per_message("sms", price)
}

/// 100 of 1,000 held-out and 130 of 1,000 treated entries convert: the lift and its interval
/// are gbstats 0.8.0's figures for those proportions (the experiment engine's own reference,
/// `TwoSidedTTest(...).compute_result()`), reached through the store's counts.
#[test]
fn the_conversion_lift_agrees_with_gbstats() {
    let mut state = MemoryJourneyState::default();
    for customer in 0..2000 {
        let held_out = customer < 1000;
        let converts = if held_out {
            customer < 100
        } else {
            customer < 1130
        };
        entry(
            &mut state,
            "welcome",
            1,
            customer,
            held_out,
            "sms",
            converts.then_some(1.0),
        );
    }
    let counts = state.journey_stats(None, t0()).unwrap();
    let report = super::report(&counts, &sms_at(0.05), &ReportOptions::default()).unwrap();
    let overall = &report.journeys[0].overall;
    assert_eq!(
        overall.conversions,
        Arms {
            treated: 130,
            held_out: 100
        }
    );
    check(
        &overall.conversion_lift.relative,
        0.3,
        [-0.019375372265978963, 0.6193753722659789],
    );
    check(
        &overall.conversion_lift.absolute,
        0.03,
        [0.0020507842909493826, 0.057949215709050615],
    );
    let p = |f: &Figure<Interval>| f.figures().and_then(|i| i.p_value).unwrap();
    close(p(&overall.conversion_lift.relative), 0.06559733260262468);
    close(p(&overall.conversion_lift.absolute), 0.03541149025749646);
    // Thirty more conversions than the held-out rate predicts, ×1,000 on both ends.
    check(
        &overall.incremental_conversions,
        30.0,
        [
            1000.0 * 0.0020507842909493826,
            1000.0 * 0.057949215709050615,
        ],
    );
    assert_eq!(report.confidence, 0.95);
}

/// Four held-out entries bring 0, 10, 0, 10 and four treated ones 10, 20, 0, 30, each treated
/// entry sending one SMS at 0.5: every figure worked out by hand from Welch's formulas; only
/// Student's t quantile is looked up.
#[test]
fn revenue_lift_and_return_on_cost_by_hand() {
    let mut state = MemoryJourneyState::default();
    let held_out = [None, Some(10.0), None, Some(10.0)];
    let treated = [Some(10.0), Some(20.0), None, Some(30.0)];
    for (i, revenue) in held_out.into_iter().enumerate() {
        entry(&mut state, "cart", 1, i as i64, true, "sms", revenue);
    }
    for (i, revenue) in treated.into_iter().enumerate() {
        entry(&mut state, "cart", 1, 10 + i as i64, false, "sms", revenue);
    }
    let counts = state.journey_stats(Some("cart"), t0()).unwrap();
    let report = super::report(&counts, &sms_at(0.5), &ReportOptions::default()).unwrap();
    let version = &report.journeys[0].versions[0];
    let o = &version.outcome;

    assert_eq!(
        o.entered,
        Arms {
            treated: 4,
            held_out: 4
        }
    );
    assert_eq!(
        o.revenue,
        Arms {
            treated: 60.0,
            held_out: 20.0
        }
    );
    assert_eq!(
        o.revenue_per_entry,
        Arms {
            treated: Some(15.0),
            held_out: Some(5.0)
        }
    );
    assert_eq!(
        o.conversion_rate,
        Arms {
            treated: Some(0.75),
            held_out: Some(0.5)
        }
    );

    // Revenue per entry: sample variances (Σx² − (Σx)²/n)/(n − 1).
    let var_t = (1400.0 - 60.0 * 60.0 / 4.0) / 3.0; // 166.67
    let var_h = (200.0 - 20.0 * 20.0 / 4.0) / 3.0; // 33.33
    let se2 = var_t / 4.0 + var_h / 4.0; // 50
    close(se2, 50.0);
    let dof = se2 * se2 / ((var_t / 4.0).powi(2) / 3.0 + (var_h / 4.0).powi(2) / 3.0);
    close(dof, 54.0 / 13.0);
    let q = cohort_experiment::stats::student_t_quantile(dof, 0.975).unwrap();
    assert!(q > 2.6 && q < 2.8, "t quantile {q}");
    let half = q * se2.sqrt();
    check(&o.revenue_lift.absolute, 10.0, [10.0 - half, 10.0 + half]);
    // Relative, by the delta method: var_t/(a²n_t) + var_h·b²/(a⁴n_h), a = 5, b = 15.
    let rel_se = (var_t / (25.0 * 4.0) + var_h * 225.0 / (625.0 * 4.0)).sqrt();
    check(
        &o.revenue_lift.relative,
        2.0,
        [2.0 - q * rel_se, 2.0 + q * rel_se],
    );

    // Incremental revenue: 10 more per treated entry, four entries; cost 4 × 0.5.
    check(
        &o.incremental_revenue,
        40.0,
        [4.0 * (10.0 - half), 4.0 * (10.0 + half)],
    );
    assert_eq!(o.cost.total, 2.0);
    assert_eq!(o.cost.sent["sms"], 4);
    assert_eq!(o.cost.by_channel["sms"], 2.0);
    assert!(o.cost.uncosted_channels.is_empty());
    let roi = |gain: f64| (gain - 2.0) / 2.0;
    check(
        &o.roi,
        19.0,
        [roi(4.0 * (10.0 - half)), roi(4.0 * (10.0 + half))],
    );
    assert_eq!(o.roi.figures().unwrap().p_value, None);

    // Conversions: 3 of 4 against 2 of 4, p(1 − p) variances.
    let cv_t: f64 = 0.75 * 0.25;
    let cv_h: f64 = 0.5 * 0.5;
    let c_se2 = cv_t / 4.0 + cv_h / 4.0;
    let c_dof = c_se2 * c_se2 / ((cv_t / 4.0).powi(2) / 3.0 + (cv_h / 4.0).powi(2) / 3.0);
    let c_q = cohort_experiment::stats::student_t_quantile(c_dof, 0.975).unwrap();
    let c_half = c_q * c_se2.sqrt();
    check(
        &o.conversion_lift.absolute,
        0.25,
        [0.25 - c_half, 0.25 + c_half],
    );

    // The step's effects and the conversions attributed to its message; exits; touches.
    assert_eq!(version.steps.len(), 1);
    let nudge = &version.steps[0];
    assert_eq!(nudge.step, "nudge");
    assert_eq!(nudge.effects["sms"]["sent"], 4);
    assert_eq!(
        nudge.conversions,
        Credit {
            conversions: 3,
            revenue: 60.0
        }
    );
    assert_eq!(version.before_any_message, Credit::default());
    assert_eq!(version.exits["completed"], 4);
    assert_eq!(version.exits["held out"], 4);
    assert_eq!(
        report.journeys[0].first_touch,
        Credit {
            conversions: 3,
            revenue: 60.0
        }
    );
    assert_eq!(
        report.journeys[0].last_touch,
        Credit {
            conversions: 3,
            revenue: 60.0
        }
    );
    assert_eq!(report.currency, "CNY");
}

/// Without held-out entries there is no lift and no return, and the reasons say why; without
/// a price there is no return; a channel without a price is named; a held-out arm that never
/// converted is the experiment engine's zero baseline.
#[test]
fn figures_that_cannot_be_had_are_refused_with_their_reason() {
    let mut state = MemoryJourneyState::default();
    for customer in 0..5 {
        entry(
            &mut state,
            "solo",
            1,
            customer,
            false,
            "push",
            (customer < 2).then_some(3.0),
        );
    }
    let counts = state.journey_stats(None, t0()).unwrap();
    let report = super::report(&counts, &sms_at(0.5), &ReportOptions::default()).unwrap();
    let o = &report.journeys[0].overall;
    assert_eq!(refused(&o.conversion_lift.relative), ReasonCode::NoHoldout);
    assert_eq!(refused(&o.revenue_lift.absolute), ReasonCode::NoHoldout);
    assert_eq!(refused(&o.incremental_revenue), ReasonCode::NoHoldout);
    // Push has no price: nothing is spent, so no return either, and push is named.
    assert_eq!(refused(&o.roi), ReasonCode::NoCost);
    assert_eq!(o.cost.uncosted_channels, vec!["push".to_string()]);
    assert_eq!(o.cost.total, 0.0);
    assert_eq!(o.conversion_rate.held_out, None);

    let mut state = MemoryJourneyState::default();
    for customer in 0..4 {
        entry(&mut state, "quiet", 1, customer, customer < 2, "sms", None);
    }
    entry(&mut state, "quiet", 1, 9, false, "sms", Some(7.0));
    let counts = state.journey_stats(None, t0()).unwrap();
    let report = super::report(&counts, &sms_at(0.5), &ReportOptions::default()).unwrap();
    let o = &report.journeys[0].overall;
    assert_eq!(
        refused(&o.conversion_lift.relative),
        ReasonCode::BaselineZero
    );
    assert_eq!(refused(&o.roi), ReasonCode::BaselineZero);
    assert_eq!(o.cost.total, 1.5);
    let reason = o.conversion_lift.relative.reason().unwrap();
    assert!(reason.en.contains("zero"), "{}", reason.en);

    // One held-out entry is too few for an interval.
    let mut state = MemoryJourneyState::default();
    entry(&mut state, "tiny", 1, 1, true, "sms", Some(1.0));
    entry(&mut state, "tiny", 1, 2, false, "sms", Some(1.0));
    entry(&mut state, "tiny", 1, 3, false, "sms", None);
    let counts = state.journey_stats(None, t0()).unwrap();
    let report = super::report(&counts, &sms_at(0.5), &ReportOptions::default()).unwrap();
    let o = &report.journeys[0].overall;
    assert_eq!(
        refused(&o.conversion_lift.absolute),
        ReasonCode::NotEnoughData
    );
}

/// A journey's overall figures add its versions; each version keeps its own.
#[test]
fn overall_figures_add_the_versions() {
    let mut state = MemoryJourneyState::default();
    for customer in 0..3 {
        entry(
            &mut state,
            "welcome",
            1,
            customer,
            true,
            "sms",
            (customer == 0).then_some(2.0),
        );
        entry(
            &mut state,
            "welcome",
            2,
            10 + customer,
            false,
            "sms",
            Some(4.0),
        );
    }
    let counts = state.journey_stats(None, t0()).unwrap();
    let report = super::report(&counts, &sms_at(1.0), &ReportOptions::default()).unwrap();
    let journey = &report.journeys[0];
    assert_eq!(journey.versions.len(), 2);
    assert_eq!(
        journey.versions[0].outcome.entered,
        Arms {
            treated: 0,
            held_out: 3
        }
    );
    assert_eq!(
        journey.versions[1].outcome.entered,
        Arms {
            treated: 3,
            held_out: 0
        }
    );
    assert_eq!(
        journey.overall.entered,
        Arms {
            treated: 3,
            held_out: 3
        }
    );
    assert_eq!(
        journey.overall.revenue,
        Arms {
            treated: 12.0,
            held_out: 2.0
        }
    );
    assert_eq!(journey.overall.cost.total, 3.0);
    assert_eq!(journey.versions[0].outcome.cost.total, 0.0);
    // Treated all converted with 4.0: no variance in that arm.
    assert_eq!(
        refused(&journey.overall.revenue_lift.absolute),
        ReasonCode::ZeroVariance
    );
}

#[test]
fn options_and_costs_out_of_range_are_refused_by_name() {
    let counts = Counts::default();
    let at = |costs: &Costs, alpha: f64| match report(&counts, costs, &ReportOptions { alpha }) {
        Err(MeasureError::Invalid { at, .. }) => at,
        other => panic!("accepted: {other:?}"),
    };
    assert_eq!(at(&sms_at(0.5), 0.0), "options.alpha");
    assert_eq!(at(&sms_at(0.5), 1.0), "options.alpha");
    assert_eq!(at(&sms_at(0.5), f64::NAN), "options.alpha");
    assert_eq!(at(&sms_at(-0.5), 0.05), "costs.per_message.sms");
    assert_eq!(at(&sms_at(f64::INFINITY), 0.05), "costs.per_message.sms");
    assert_eq!(at(&Costs::new(" "), 0.05), "costs.currency");
    assert!(report(&counts, &sms_at(0.0), &ReportOptions::default()).is_ok());
}

/// The JSON the API and the CLI's `--json` give: field names are part of the interface.
#[test]
fn the_report_serialises_with_stable_field_names() {
    let mut state = MemoryJourneyState::default();
    for customer in 0..3 {
        entry(
            &mut state,
            "welcome",
            1,
            customer,
            false,
            "sms",
            Some(5.0 * customer as f64),
        );
    }
    let counts = state.journey_stats(None, t0()).unwrap();
    let report = super::report(&counts, &sms_at(0.1), &ReportOptions::default()).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    let journey = &json["journeys"][0];
    assert_eq!(journey["journey"], "welcome");
    assert_eq!(journey["overall"]["entered"]["treated"], 3);
    assert_eq!(journey["overall"]["effects"]["sms"]["sent"], 3);
    assert_eq!(
        journey["overall"]["conversion_lift"]["relative"]["reason"]["code"],
        "no_holdout"
    );
    assert_eq!(journey["overall"]["roi"]["reason"]["code"], "no_holdout");
    assert_eq!(
        journey["overall"]["conversion_rate"]["held_out"],
        serde_json::Value::Null
    );
    assert_eq!(journey["versions"][0]["version"], 1);
    assert_eq!(journey["versions"][0]["steps"][0]["step"], "nudge");
    assert_eq!(
        journey["versions"][0]["steps"][0]["conversions"]["revenue"],
        15.0
    );
    assert_eq!(journey["versions"][0]["exits"]["completed"], 3);
    assert_eq!(journey["last_touch"]["conversions"], 3);
    assert_eq!(json["currency"], "CNY");
    assert_eq!(json["confidence"], 0.95);
    assert!(json["at"].is_string());
}

/// A customer as the runner reads one: nothing but an id.
struct Plain(
    i64,
    serde_json::Map<String, serde_json::Value>,
    cohort_profile::ComputedTraits,
);

impl crate::runner::CustomerFacts for Plain {
    fn id(&self) -> i64 {
        self.0
    }
    fn traits(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.1
    }
    fn computed(&self) -> &cohort_profile::ComputedTraits {
        &self.2
    }
    fn events(&self) -> &[cohort_segment::EventRecord] {
        &[]
    }
    fn in_segment(&self, _: &str) -> bool {
        false
    }
    fn time_zone(&self) -> chrono_tz::Tz {
        chrono_tz::Asia::Shanghai
    }
    fn in_global_control(&self) -> bool {
        false
    }
    fn experiment_variation(&self, _: &str) -> Option<String> {
        None
    }
}

/// What the runner records is what the report reads: entries held out by the journey's share,
/// the SMS of the treated ones (completed by the channel), orders converting entries within
/// the goal's window with their revenue, attributed to the SMS step's message.
#[test]
fn the_runner_s_entries_and_conversions_are_measured() {
    use crate::runner::{ProcessedEvent, Published, Run, Runner};
    let journey = crate::definition::parse_json(
        r#"{
          "key": "nudge", "name": "Nudge",
          "trigger": {"type": "event", "event": "Signed Up"},
          "holdout": 0.5,
          "goal": {"type": "event", "event": "Order Completed", "window": "2d"},
          "steps": [
            {"id": "day", "type": "delay", "for": "24h", "next": "sms-1"},
            {"id": "sms-1", "type": "send", "channel": "sms", "template": "sms-t"}
          ]
        }"#,
    )
    .unwrap();
    let runner = Runner::new(vec![Published {
        journey,
        version: 1,
        run: Run::Entering,
    }])
    .unwrap();
    let mut state = MemoryJourneyState::default();
    let facts = |id| Plain(id, serde_json::Map::new(), Default::default());
    let mut held_out = std::collections::BTreeSet::new();
    for id in 0..40 {
        let signed_up = ProcessedEvent::new(&format!("s{id}"), "Signed Up", t0());
        let r = runner
            .on_event(&mut state, &facts(id), &signed_up, t0())
            .unwrap();
        if r.held_out == 1 {
            held_out.insert(id);
        }
    }
    let day = t0() + chrono::Duration::hours(24);
    runner
        .fire_due(
            &mut state,
            |id| Ok::<_, std::io::Error>(facts(id)),
            day,
            100,
        )
        .unwrap();
    for pending in state.pending_effects("sms", day, 100).unwrap() {
        state
            .complete_effect(&pending.effect.key, "sent", true)
            .unwrap();
    }
    // Every third customer orders 6 h after the SMS, for 10 (held-out ones too).
    let at = day + chrono::Duration::hours(6);
    for id in (0..40).step_by(3) {
        let order = ProcessedEvent::new(&format!("o{id}"), "Order Completed", at)
            .properties(serde_json::json!({"revenue": 10}));
        runner.on_event(&mut state, &facts(id), &order, at).unwrap();
    }

    let held = held_out.len() as u64;
    let treated = 40 - held;
    assert!(held > 1 && treated > 1, "{held} held out of 40");
    let orders = |out: bool| {
        (0..40)
            .step_by(3)
            .filter(|id| held_out.contains(id) == out)
            .count() as u64
    };
    let counts = state.journey_stats(Some("nudge"), at).unwrap();
    let report = super::report(&counts, &sms_at(0.25), &ReportOptions::default()).unwrap();
    let v1 = &report.journeys[0].versions[0];
    let o = &v1.outcome;
    assert_eq!(
        o.entered,
        Arms {
            treated,
            held_out: held
        }
    );
    assert_eq!(
        o.conversions,
        Arms {
            treated: orders(false),
            held_out: orders(true)
        }
    );
    assert_eq!(o.revenue.treated, 10.0 * orders(false) as f64);
    assert_eq!(v1.exits["held out"], held);
    assert_eq!(v1.exits["completed"], treated);
    let sms = v1
        .steps
        .iter()
        .find(|s| s.step == "sms-1")
        .expect("the SMS step");
    assert_eq!(sms.effects["sms"]["sent"], treated);
    assert_eq!(sms.conversions.conversions, orders(false));
    assert_eq!(v1.before_any_message, Credit::default());
    assert_eq!(o.cost.total, 0.25 * treated as f64);
    assert_eq!(report.journeys[0].last_touch.conversions, orders(false));
    assert!(o.conversion_lift.absolute.figures().is_some());
}
