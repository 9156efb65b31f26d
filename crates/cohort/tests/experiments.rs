//! Flags and experiments end to end through the binary: definitions refused by field and
//! versioned, an experiment's lifecycle, GrowthBook's features payload, server-side evaluation
//! with its exposures ingested as events, and the CLI.

mod common;

use common::{Server, cohort, succeed};
use serde_json::{Value, json};

fn metric() -> Value {
    json!({"key": "purchase", "name": "Purchase", "type": "conversion", "event": "Order Completed"})
}

fn experiment() -> Value {
    json!({
        "key": "checkout", "name": "One-page checkout", "metrics": ["purchase"],
        "variations": [
            {"key": "control", "name": "Control", "value": false},
            {"key": "one-page", "name": "One page", "value": true}
        ]
    })
}

fn flag() -> Value {
    json!({
        "key": "one-page-checkout", "value_type": "boolean", "default_value": false,
        "rules": [
            {"type": "force", "value": true, "condition": {"email": {"$regex": "@staff\\.example$"}}},
            {"type": "experiment", "experiment": "checkout"}
        ]
    })
}

/// Sends a definition and expects `status`; returns the answer.
fn send(s: &Server, method: &str, path: &str, body: &Value, status: u16) -> Value {
    let r = s.admin_send(method, path, body);
    assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    r.json()
}

fn refused_field(s: &Server, path: &str, body: &Value, field: &str) {
    let answer = send(s, "POST", path, body, 400);
    assert_eq!(answer["code"], "invalid_definition", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("{field}: ")), "{message}");
}

#[test]
fn invalid_definitions_are_refused_by_field_and_nothing_is_saved() {
    let s = Server::start();
    send(&s, "POST", "/api/v1/metrics", &metric(), 201);
    let mut e = experiment();
    e["weights"] = json!([0.7, 0.7]);
    refused_field(&s, "/api/v1/experiments", &e, "weights");
    let mut e = experiment();
    e["variations"][1]["key"] = json!("control");
    refused_field(&s, "/api/v1/experiments", &e, "variations[1].key");
    let mut e = experiment();
    e["metrics"] = json!(["purchase", "refunds"]);
    refused_field(&s, "/api/v1/experiments", &e, "metrics[1]");
    let mut e = experiment();
    e["segment"] = json!("no-such-segment");
    refused_field(&s, "/api/v1/experiments", &e, "segment");
    let mut e = experiment();
    e["wieghts"] = json!([0.5, 0.5]);
    refused_field(&s, "/api/v1/experiments", &e, "wieghts");
    assert_eq!(s.admin_get("/api/v1/experiments/checkout").status, 404);
    assert_eq!(
        s.admin_get("/api/v1/experiments").json()["experiments"],
        json!([])
    );

    // A flag's rules name an experiment that does not exist.
    refused_field(&s, "/api/v1/flags", &flag(), "rules[1].experiment");
    // Prerequisites that close a cycle.
    let a = json!({"key": "a", "value_type": "boolean", "default_value": true});
    send(&s, "POST", "/api/v1/flags", &a, 201);
    let b = json!({"key": "b", "value_type": "boolean", "default_value": true,
        "prerequisites": [{"flag": "a"}]});
    send(&s, "POST", "/api/v1/flags", &b, 201);
    let a_again = json!({"key": "a", "value_type": "boolean", "default_value": true,
        "prerequisites": [{"flag": "b"}]});
    let answer = send(&s, "PUT", "/api/v1/flags/a", &a_again, 400);
    assert!(
        answer["message"].as_str().unwrap().contains("a → b → a"),
        "{answer}"
    );
    let stored = s.admin_get("/api/v1/flags/a").json();
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["definition"].get("prerequisites"), Some(&json!([])));
    // What others use cannot be deleted.
    let r = s.admin_send("DELETE", "/api/v1/flags/a", &json!({}));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("flag b"), "{}", r.text());
}

#[test]
fn saves_are_versioned_and_a_stale_save_is_refused() {
    let s = Server::start();
    let created = s.admin_send("POST", "/api/v1/metrics", &metric());
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(
        send(&s, "POST", "/api/v1/metrics", &metric(), 409)["code"],
        "conflict"
    );

    let mut renamed = metric();
    renamed["name"] = json!("Orders");
    let put = |if_match: &str| {
        s.request(
            "PUT",
            "/api/v1/metrics/purchase",
            &[
                ("Authorization", &format!("Bearer {}", s.admin_key)),
                ("Content-Type", "application/json"),
                ("If-Match", if_match),
            ],
            renamed.to_string().as_bytes(),
        )
    };
    let saved = put("\"1\"");
    assert_eq!(saved.status, 200, "{}", saved.text());
    assert_eq!(saved.json()["version"], 2);
    let stale = put("\"1\"");
    assert_eq!(stale.status, 409, "{}", stale.text());
    let versions = s.admin_get("/api/v1/metrics/purchase/versions").json()["versions"].clone();
    let names: Vec<&Value> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["definition"]["name"])
        .collect();
    assert_eq!(names, vec![&json!("Purchase"), &json!("Orders")]);
}

#[test]
fn a_running_experiment_is_served_to_sdks_and_evaluated_with_exposures_logged() {
    let s = Server::start();
    send(&s, "POST", "/api/v1/metrics", &metric(), 201);
    send(&s, "POST", "/api/v1/experiments", &experiment(), 201);
    send(&s, "POST", "/api/v1/flags", &flag(), 201);

    // A draft is not served: the flag has its default and the staff rule only.
    let features = s.request(
        "GET",
        &format!("/api/features/{}", s.write_key),
        &[("Origin", "https://shop.example")],
        b"",
    );
    assert_eq!(features.status, 200, "{}", features.text());
    assert_eq!(
        features.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let payload = features.json();
    assert_eq!(payload["status"], 200);
    let rules = payload["features"]["one-page-checkout"]["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rules.len(), 1, "{payload}");
    assert_eq!(
        s.request("GET", "/api/features/wk_not_a_key", &[], b"")
            .status,
        401
    );

    let started = send(
        &s,
        "POST",
        "/api/v1/experiments/checkout/start",
        &json!({}),
        200,
    );
    assert_eq!(started["definition"]["status"], "running");
    assert_eq!(started["definition"]["phases"].as_array().unwrap().len(), 1);
    let payload = s
        .request("GET", &format!("/api/features/{}", s.write_key), &[], b"")
        .json();
    let rule = &payload["features"]["one-page-checkout"]["rules"][1];
    assert_eq!(rule["key"], "checkout");
    assert_eq!(rule["variations"], json!([false, true]));
    assert_eq!(rule["hashVersion"], 2);

    // A known customer: evaluated with their profile, exposed once per variation and phase.
    let identify = json!({"type": "identify", "userId": "u-1", "messageId": "m-1",
        "traits": {"email": "ada@example.com"}});
    assert_eq!(s.ingest("/v1/identify", &identify).status, 200);
    s.settle();
    let request = json!({"identifier": {"type": "user_id", "value": "u-1"}});
    let evaluation = send(&s, "POST", "/api/v1/flags/evaluate", &request, 200);
    let result = &evaluation["flags"]["one-page-checkout"];
    assert_eq!(result["source"], "experiment", "{evaluation}");
    assert_eq!(evaluation["attributes"]["id"], "u-1");
    assert_eq!(evaluation["attributes"]["email"], "ada@example.com");
    let variation = result["experiment"]["variation_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(result["value"], json!(variation == "one-page"));
    assert_eq!(evaluation["exposures_logged"], 1);
    let again = send(&s, "POST", "/api/v1/flags/evaluate", &request, 200);
    assert_eq!(again["flags"]["one-page-checkout"], *result);
    assert_eq!(
        again["exposures_logged"], 0,
        "the same exposure is not logged twice"
    );
    s.settle();
    let events = s.admin_get("/api/v1/profiles/user_id/u-1/events").json();
    let viewed: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "Experiment Viewed")
        .collect();
    assert_eq!(viewed.len(), 1, "{events}");
    let properties = &viewed[0]["message"]["properties"];
    assert_eq!(properties["experiment_id"], "checkout");
    assert_eq!(properties["experiment_name"], "One-page checkout");
    assert_eq!(properties["variation_id"], variation.as_str());

    // Staff are forced on by the first rule, with no exposure.
    let staff = json!({"attributes": {"id": "visitor-9", "email": "bo@staff.example"}});
    let evaluation = send(&s, "POST", "/api/v1/flags/evaluate", &staff, 200);
    assert_eq!(evaluation["flags"]["one-page-checkout"]["source"], "force");
    assert_eq!(evaluation["exposures_logged"], 0);

    // Stopped with a decision, everybody gets the winner.
    let stop = json!({"variation": "one-page", "reason": "won on purchase"});
    let stopped = send(&s, "POST", "/api/v1/experiments/checkout/stop", &stop, 200);
    assert_eq!(stopped["definition"]["status"], "stopped");
    assert!(stopped["definition"]["phases"][0]["ended_at"].is_string());
    let evaluation = send(&s, "POST", "/api/v1/flags/evaluate", &request, 200);
    assert_eq!(evaluation["flags"]["one-page-checkout"]["value"], true);
    assert_eq!(evaluation["flags"]["one-page-checkout"]["source"], "force");
}

#[test]
fn the_cli_applies_lists_and_evaluates_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.json");
    std::fs::write(
        &file,
        json!([
            {"key": "banner", "value_type": "string", "default_value": "plain",
             "rules": [{"type": "rollout", "value": "festive", "coverage": 1.0}]},
            {"key": "dark-mode", "value_type": "boolean", "default_value": false}
        ])
        .to_string(),
    )
    .unwrap();
    let data = dir.path().join("data");
    let cli = |args: &[&str]| {
        let mut command = cohort();
        command.arg("flag").args(args).arg("--data").arg(&data);
        command
    };
    succeed(&mut cli(&["apply", file.to_str().unwrap()]));
    let listed = succeed(&mut cli(&["list", "--json"]));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let keys: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["key"])
        .collect();
    assert_eq!(keys, vec![&json!("banner"), &json!("dark-mode")]);
    let evaluated = succeed(&mut cli(&["evaluate", "--attr", "id=visitor-1", "--json"]));
    let evaluated: Value = serde_json::from_slice(&evaluated.stdout).unwrap();
    assert_eq!(evaluated["flags"]["banner"]["value"], "festive");
    assert_eq!(evaluated["flags"]["dark-mode"]["value"], false);

    std::fs::write(
        &file,
        json!({"key": "x", "value_type": "number", "default_value": "no"}).to_string(),
    )
    .unwrap();
    let refused = cli(&["apply", file.to_str().unwrap()]).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("default_value: must be a number"),
        "{stderr}"
    );
}

#[test]
fn the_report_counts_first_exposures_and_conversions_from_the_events() {
    let s = Server::start();
    send(&s, "POST", "/api/v1/metrics", &metric(), 201);
    let revenue = json!({"key": "revenue", "type": "sum", "event": "Order Completed",
        "property": "revenue", "cap": 100.0});
    send(&s, "POST", "/api/v1/metrics", &revenue, 201);
    let mut e = experiment();
    e["metrics"] = json!(["purchase", "revenue"]);
    send(&s, "POST", "/api/v1/experiments", &e, 201);
    send(&s, "POST", "/api/v1/flags", &flag(), 201);
    send(
        &s,
        "POST",
        "/api/v1/experiments/checkout/start",
        &json!({}),
        200,
    );

    // 60 visitors evaluated server-side; every third one buys, for 30 or (capped) 250.
    let batch: Vec<Value> = (0..60)
        .map(|i| {
            json!({"identifier": {"type": "user_id", "value": format!("u-{i}")},
                        "attributes": {"id": format!("u-{i}")}})
        })
        .collect();
    let answers = send(
        &s,
        "POST",
        "/api/v1/flags/evaluate",
        &json!({"batch": batch}),
        200,
    );
    let mut expected: std::collections::BTreeMap<String, (u64, u64, f64)> = Default::default();
    let mut orders = Vec::new();
    for (i, answer) in answers["batch"].as_array().unwrap().iter().enumerate() {
        assert_eq!(answer["exposures_logged"], 1, "{answer}");
        let variation = answer["flags"]["one-page-checkout"]["experiment"]["variation_key"]
            .as_str()
            .unwrap()
            .to_string();
        let entry = expected.entry(variation).or_default();
        entry.0 += 1;
        if i % 3 == 0 {
            let amount = if i % 2 == 0 { 30.0 } else { 250.0 };
            entry.1 += 1;
            entry.2 += f64::min(amount, 100.0);
            orders.push(
                json!({"type": "track", "event": "Order Completed", "userId": format!("u-{i}"),
                "messageId": format!("order-{i}"), "properties": {"revenue": amount}}),
            );
        }
    }
    // One visitor also saw the other arm (an SDK's own exposure): counted apart, left out.
    let first = answers["batch"][1]["flags"]["one-page-checkout"]["experiment"]["variation_key"]
        .as_str()
        .unwrap()
        .to_string();
    let other = if first == "control" {
        "one-page"
    } else {
        "control"
    };
    orders.push(
        json!({"type": "track", "event": "Experiment Viewed", "userId": "u-1",
        "messageId": "sdk-exposure-1",
        "properties": {"experiment_id": "checkout", "variation_id": other}}),
    );
    expected.get_mut(&first).unwrap().0 -= 1;
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(s.ingest("/v1/batch", &json!({"batch": orders})).status, 200);
    s.settle();

    let report = s.admin_get("/api/v1/experiments/checkout/report");
    assert_eq!(report.status, 200, "{}", report.text());
    let report = report.json();
    assert_eq!(report["multiple_exposures"]["count"], 1, "{report}");
    let arms = report["srm"]["arms"].as_array().unwrap();
    for arm in arms {
        let key = arm["variation"].as_str().unwrap();
        assert_eq!(arm["observed_units"], expected[key].0, "{key}: {report}");
    }
    // A metric's figures for one variation.
    let value_of = |metric: &str, variation: &str| -> Value {
        let metric = report["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["key"] == metric)
            .unwrap_or_else(|| panic!("no {metric} in {report}"));
        metric["variations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["variation"] == variation)
            .unwrap_or_else(|| panic!("no {variation} in {metric}"))
            .clone()
    };
    for (key, (units, buyers, capped_revenue)) in &expected {
        let purchase = value_of("purchase", key);
        assert_eq!(purchase["units"], *units);
        let rate = purchase["mean"].as_f64().unwrap();
        assert!(
            (rate - *buyers as f64 / *units as f64).abs() < 1e-12,
            "{purchase}"
        );
        let revenue = value_of("revenue", key);
        let mean = revenue["mean"].as_f64().unwrap();
        assert!(
            (mean - capped_revenue / *units as f64).abs() < 1e-9,
            "{revenue}"
        );
    }
    assert!(
        report["verdict"]["en"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{report}"
    );
    assert!(
        report["verdict"]["zh"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{report}"
    );
    let draft = send(
        &s,
        "POST",
        "/api/v1/experiments",
        &json!({"key": "later",
        "variations": [{"key": "a"}, {"key": "b"}]}),
        201,
    );
    assert_eq!(draft["definition"]["status"], "draft");
    let r = s.admin_get("/api/v1/experiments/later/report");
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn the_cli_runs_an_experiment_from_definition_to_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let write = |name: &str, value: Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path
    };
    let metrics = write("metrics.json", json!([metric()]));
    let definition = write("checkout.json", experiment());
    let cli = |args: &[&str]| {
        let mut command = cohort();
        command
            .arg("experiment")
            .args(args)
            .arg("--data")
            .arg(&data);
        command
    };
    succeed(cli(&["metric", "apply"]).arg(&metrics));
    succeed(cli(&["apply"]).arg(&definition));
    let started = succeed(&mut cli(&["start", "checkout", "--json"]));
    let started: Value = serde_json::from_slice(&started.stdout).unwrap();
    assert_eq!(started["definition"]["status"], "running");
    let report = succeed(&mut cli(&[
        "report", "checkout", "--engine", "bayesian", "--json",
    ]));
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["engine"], "bayesian");
    // Nobody exposed yet: a stated reason, no figures.
    assert_eq!(report["srm"]["reason"]["code"], "no_units", "{report}");
    let values = report["metrics"][0]["variations"].as_array().unwrap();
    assert!(
        values
            .iter()
            .all(|v| v["units"] == 0 && v["reason"]["code"] == "no_units"),
        "{report}"
    );
    let text = succeed(&mut cli(&["report", "checkout"]));
    assert!(!text.stdout.is_empty());
    let stopped = cli(&["stop", "checkout", "--variation", "nope", "--reason", "x"])
        .output()
        .unwrap();
    assert!(!stopped.status.success());
    assert!(String::from_utf8_lossy(&stopped.stderr).contains("no variation \"nope\""));
    succeed(&mut cli(&[
        "stop",
        "checkout",
        "--variation",
        "one-page",
        "--reason",
        "won",
    ]));
    let versions = succeed(&mut cli(&["versions", "checkout", "--json"]));
    let versions: Value = serde_json::from_slice(&versions.stdout).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 3);
}

#[test]
fn known_customers_keep_their_variation_when_the_weights_change() {
    let s = Server::start();
    send(&s, "POST", "/api/v1/metrics", &metric(), 201);
    send(&s, "POST", "/api/v1/experiments", &experiment(), 201);
    send(&s, "POST", "/api/v1/flags", &flag(), 201);
    send(
        &s,
        "POST",
        "/api/v1/experiments/checkout/start",
        &json!({}),
        200,
    );
    let customers = |from: usize| -> Value {
        json!({"batch": (from..from + 80)
            .map(|i| json!({"identifier": {"type": "user_id", "value": format!("u-{i}")},
                            "attributes": {"id": format!("u-{i}")}, "log_exposures": false}))
            .collect::<Vec<_>>()})
    };
    let variations = |answer: &Value| -> Vec<String> {
        answer["batch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a["flags"]["one-page-checkout"]["experiment"]["variation_key"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let before = variations(&send(
        &s,
        "POST",
        "/api/v1/flags/evaluate",
        &customers(0),
        200,
    ));
    assert!(before.iter().any(|v| v == "control"), "{before:?}");

    let mut reweighted = experiment();
    reweighted["weights"] = json!([0.01, 0.99]);
    let saved = send(&s, "PUT", "/api/v1/experiments/checkout", &reweighted, 200);
    let phases = saved["definition"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{saved}");
    assert_eq!(phases[1]["weights"], json!([0.01, 0.99]));

    let after = variations(&send(
        &s,
        "POST",
        "/api/v1/flags/evaluate",
        &customers(0),
        200,
    ));
    assert_eq!(after, before, "known customers kept their variations");
    let newcomers = variations(&send(
        &s,
        "POST",
        "/api/v1/flags/evaluate",
        &customers(1000),
        200,
    ));
    let control = newcomers.iter().filter(|v| *v == "control").count();
    assert!(control <= 5, "{control} of 80 newcomers in a 1 % control");
}
