//! GrowthBook's cross-SDK test cases (tests/fixtures/growthbook-cases.json, MIT, see the README
//! there) for the assignment functions and targeting conditions.

use cohort_experiment::assign::{self, HashVersion};
use cohort_experiment::condition::eval_condition;
use cohort_experiment::evaluate::{Context, Experiment, StickyBucketDoc, query_string_override};
use serde_json::Value;

fn cases(section: &str) -> Vec<Value> {
    let text = include_str!("fixtures/growthbook-cases.json");
    let all: Value = serde_json::from_str(text).expect("the case file is JSON");
    all[section]
        .as_array()
        .unwrap_or_else(|| panic!("no section {section}"))
        .clone()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

fn ranges(v: &Value) -> Vec<(f64, f64)> {
    v.as_array()
        .expect("ranges")
        .iter()
        .map(|r| (f(&r[0]), f(&r[1])))
        .collect()
}

/// Fails listing every case that went wrong, so one run shows them all.
fn assert_none_wrong(wrong: &[String], total: usize) {
    assert!(
        wrong.is_empty(),
        "{} of {total} wrong: {wrong:#?}",
        wrong.len()
    );
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn every_hash_case_matches() {
    let cases = cases("hash");
    assert!(cases.len() >= 15);
    for case in cases {
        let (seed, value) = (case[0].as_str().unwrap(), case[1].as_str().unwrap());
        let version = case[2].as_u64().unwrap() as u32;
        let got = HashVersion::from_number(version).map(|v| assign::hash(seed, value, v));
        let want = case[3].as_f64();
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn every_bucket_range_case_matches() {
    for case in cases("getBucketRange") {
        let args = &case[1];
        let weights: Option<Vec<f64>> = args[2].as_array().map(|w| w.iter().map(f).collect());
        let got = assign::bucket_ranges(
            args[0].as_u64().unwrap() as usize,
            f(&args[1]),
            weights.as_deref(),
        );
        let want = ranges(&case[2]);
        assert_eq!(got.len(), want.len(), "{case}");
        for (g, w) in got.iter().zip(&want) {
            assert!(close(g.0, w.0) && close(g.1, w.1), "{case}: got {got:?}");
        }
    }
}

#[test]
fn every_choose_variation_case_matches() {
    for case in cases("chooseVariation") {
        let got = assign::choose_variation(f(&case[1]), &ranges(&case[2]));
        let want = case[3].as_i64().unwrap();
        assert_eq!(got.map_or(-1, |i| i as i64), want, "{case}");
    }
}

#[test]
fn every_namespace_case_matches() {
    for case in cases("inNamespace") {
        let id = case[1].as_str().unwrap();
        let ns = &case[2];
        let got = assign::in_namespace(id, ns[0].as_str().unwrap(), f(&ns[1]), f(&ns[2]));
        assert_eq!(got, case[3].as_bool().unwrap(), "{case}");
    }
}

#[test]
fn every_equal_weights_case_matches() {
    for case in cases("getEqualWeights") {
        let n = case[0].as_i64().unwrap();
        let got = assign::equal_weights(usize::try_from(n).unwrap_or(0));
        let want: Vec<f64> = case[1].as_array().unwrap().iter().map(f).collect();
        assert_eq!(got.len(), want.len(), "{case}");
        assert!(got.iter().zip(&want).all(|(g, w)| close(*g, *w)), "{case}");
    }
}

#[test]
fn every_condition_case_matches() {
    let cases = cases("evalCondition");
    assert!(cases.len() >= 200);
    let mut wrong = Vec::new();
    for case in &cases {
        let groups = case
            .get(4)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        let got = eval_condition(&case[2], &case[1], &groups);
        if got != case[3].as_bool().unwrap() {
            wrong.push(case[0].as_str().unwrap().to_string());
        }
    }
    assert_none_wrong(&wrong, cases.len());
}

#[test]
fn every_query_string_case_matches() {
    for case in cases("getQueryStringOverride") {
        let got = query_string_override(
            case[1].as_str().unwrap(),
            case[2].as_str().unwrap(),
            case[3].as_u64().unwrap() as usize,
        );
        assert_eq!(got.map(|n| n as u64), case[4].as_u64(), "{case}");
    }
}

#[test]
fn every_run_case_matches() {
    let cases = cases("run");
    assert!(cases.len() >= 70);
    let mut wrong = Vec::new();
    for case in &cases {
        let mut context: Context = serde_json::from_value(case[1].clone()).expect("a context");
        let experiment: Experiment =
            serde_json::from_value(case[2].clone()).expect("an experiment");
        // `assign` is `run` without the result's strings: the same decision, from a twin of
        // the context (assignment may update its sticky buckets).
        let assignment = context.clone().assign(&experiment);
        let result = context.run(&experiment);
        let decided = (
            assignment.variation.unwrap_or(0),
            assignment.in_experiment,
            assignment.hash_used,
            assignment.bucket,
        );
        let ran = (
            result.variation_id,
            result.in_experiment,
            result.hash_used,
            result.bucket,
        );
        if decided != ran {
            wrong.push(format!("{}: assign {decided:?}, run {ran:?}", case[0]));
        }
        let got = (result.value, result.in_experiment, result.hash_used);
        let want = (
            case[3].clone(),
            case[4].as_bool().unwrap(),
            case[5].as_bool().unwrap(),
        );
        if got != want {
            wrong.push(format!("{}: got {got:?}, want {want:?}", case[0]));
        }
    }
    assert_none_wrong(&wrong, cases.len());
}

#[test]
fn every_feature_case_matches() {
    let cases = cases("feature");
    assert!(cases.len() >= 40);
    let mut wrong = Vec::new();
    for case in &cases {
        let mut context: Context = serde_json::from_value(case[1].clone()).expect("a context");
        let result = context.eval_feature(case[2].as_str().unwrap());
        let want = &case[3];
        let mut got = serde_json::json!({
            "value": result.value,
            "on": result.on(),
            "off": !result.on(),
            "source": result.source.as_str(),
        });
        if want.get("ruleId").is_some() {
            got["ruleId"] = result.rule_id.clone().into();
        }
        let mut expected = serde_json::json!({
            "value": want["value"], "on": want["on"], "off": want["off"], "source": want["source"],
        });
        if let Some(rule) = want.get("ruleId") {
            expected["ruleId"] = rule.clone();
        }
        if let Some(exp) = want.get("experimentResult") {
            let r = result.experiment.as_ref();
            got["experimentResult"] = serde_json::json!({
                "value": r.map(|r| r.value.clone()),
                "variationId": r.map(|r| r.variation_id),
                "inExperiment": r.map(|r| r.in_experiment),
                "hashUsed": r.map(|r| r.hash_used),
                "hashAttribute": r.map(|r| r.hash_attribute.clone()),
                "hashValue": r.map(|r| r.hash_value.clone()),
                "key": r.map(|r| r.key.clone()),
            });
            expected["experimentResult"] = serde_json::json!({
                "value": exp["value"], "variationId": exp["variationId"],
                "inExperiment": exp["inExperiment"], "hashUsed": exp["hashUsed"],
                "hashAttribute": exp["hashAttribute"], "hashValue": exp["hashValue"],
                "key": exp["key"],
            });
        }
        if got != expected {
            wrong.push(format!("{}: got {got}, want {expected}", case[0]));
        }
    }
    assert_none_wrong(&wrong, cases.len());
}

#[test]
fn every_sticky_bucket_case_matches() {
    let cases = cases("stickyBucket");
    assert!(cases.len() >= 9);
    let mut wrong = Vec::new();
    for case in &cases {
        let mut context: Context = serde_json::from_value(case[1].clone()).expect("a context");
        // The case's stored documents, as a sticky bucket service hands them over: those of
        // this unit's attribute values only.
        let docs: Vec<StickyBucketDoc> =
            serde_json::from_value(case[2].clone()).expect("sticky bucket documents");
        let mut stored = context.sticky_buckets.take().unwrap_or_default();
        for doc in docs {
            let owned = context.attributes.get(&doc.attribute_name)
                == Some(&serde_json::Value::String(doc.attribute_value.clone()));
            if owned {
                stored.insert(
                    format!("{}||{}", doc.attribute_name, doc.attribute_value),
                    doc,
                );
            }
        }
        context.sticky_buckets = Some(stored);
        let result = context.eval_feature(case[3].as_str().unwrap());
        let got = result.experiment.map(|r| {
            serde_json::json!({
                "value": r.value, "variationId": r.variation_id, "inExperiment": r.in_experiment,
                "hashUsed": r.hash_used, "hashAttribute": r.hash_attribute,
                "hashValue": r.hash_value, "key": r.key, "stickyBucketUsed": r.sticky_bucket_used,
                "bucket": r.bucket,
            })
        });
        let want = case[4].as_object().map(|w| {
            serde_json::json!({
                "value": w["value"], "variationId": w["variationId"],
                "inExperiment": w["inExperiment"], "hashUsed": w["hashUsed"],
                "hashAttribute": w["hashAttribute"], "hashValue": w["hashValue"],
                "key": w["key"], "stickyBucketUsed": w["stickyBucketUsed"], "bucket": w["bucket"],
            })
        });
        if got != want {
            wrong.push(format!("{}: got {got:?}, want {want:?}", case[0]));
        }
        let docs = serde_json::to_value(context.sticky_buckets.unwrap_or_default()).unwrap();
        if docs != case[5] {
            wrong.push(format!("{}: documents {docs}, want {}", case[0], case[5]));
        }
    }
    assert_none_wrong(&wrong, cases.len());
}
