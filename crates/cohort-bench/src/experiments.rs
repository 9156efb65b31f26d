//! `cohort bench experiments`: issue 15's two figures, each beside the peer it is compared with
//! in the same run.
//!
//! # Assignment
//!
//! One flag whose one rule is an experiment (2 variations, 50/50, hash version 2 on `id`), from
//! [`cohort_demo::experiment_lake::definitions`] through the features payload the server serves.
//! `--ids` units `u1`, `u2`, … are assigned on one thread by:
//! - Cohort: [`Context::eval_feature`] (the unit's `id` set in the context's attributes, then
//!   the flag evaluated), [`Context::run`] on the rule's experiment, [`Context::assign`] (the
//!   same decision without the result's strings), and the floor: nothing but
//!   [`assign::hash`] and [`assign::choose_variation`] over precomputed ranges;
//! - GrowthBook's JavaScript SDK (`--node`, the package in `--growthbook-js`):
//!   `GrowthBookClient.evalFeature`, `GrowthBook.evalFeature` after `setAttributes`,
//!   `GrowthBook.run`, and its own `hash` and `chooseVariation` as its floor
//!   (`scripts/bench_experiments_sdk.js`);
//! - GrowthBook's Python SDK (`--python`), on the first `--python-ids` of the same units:
//!   `eval_feature`, `run`, and `gbhash` + `chooseVariation` (`scripts/bench_experiments_sdk.py`).
//!
//! Each path runs `--repeat` times; the table gives assignments per second (median and best of
//! the wall times) and CPU time per assignment, and counts the units where a path's variation
//! differs from Cohort's `eval_feature`.
//!
//! # Report
//!
//! [`cohort_demo::experiment_lake`] writes `--customers` customers' exposures and shopping
//! straight into the lake's Parquet files in `--data` (kept, and reused while --customers and
//! --seed stay the same). The experiment's report over its ten metrics is then made as the
//! server makes it (`cohort_engine`'s `experiment_report`): [`exposure_query`],
//! [`cohort_analysis::experiment::exposure_sums`] over the lake, [`report_input`] and
//! [`analyze`], timed end to end (wall and the process's CPU). The peer is DuckDB computing the
//! same per-variation sums from the same files with its own SQL, then gbstats computing every
//! metric's effect and the sample-ratio check from them (`scripts/bench_experiments_report.py`,
//! in `--python`). The table compares the times and checks that the sums agree (largest
//! relative difference) and that the effects do.
//!
//! Nothing here judges the numbers beyond printing them next to issue 15's targets.

use crate::BenchExperimentsArgs;
use crate::machine::{
    fmt_int, fmt_rate, load_average, peak_rss, print_machine, process_cpu_seconds,
    thread_cpu_seconds,
};
use anyhow::{Context as _, bail};
use cohort_analysis::RunOptions;
use cohort_demo::experiment_lake::{self, Definitions, EXPERIMENT, ExperimentMeta, ExperimentSpec};
use cohort_demo::lake::Calendar;
use cohort_experiment::assign::{self, HashVersion};
use cohort_experiment::evaluate::{Context, Experiment, ExperimentResult};
use cohort_experiment::metrics::{
    Aggregate, ExposureQuery, ExposureSums, exposure_query, report_input,
};
use cohort_experiment::report::{Report, analyze};
use cohort_experiment::summary_input::{MetricKind, Options};
use cohort_lake::Lake;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const SDK_JS: &str = include_str!("../../../scripts/bench_experiments_sdk.js");
const SDK_PY: &str = include_str!("../../../scripts/bench_experiments_sdk.py");
const REPORT_PY: &str = include_str!("../../../scripts/bench_experiments_report.py");

/// Issue 15's targets.
const TARGET_RATE: f64 = 10_000_000.0;
const TARGET_TIMES_JS: f64 = 10.0;
/// The units' IDs: `u1` … as the generated lake names its customers.
const ID_PREFIX: &str = "u";

// ---------------------------------------------------------------------------------------------
// Measuring

/// Wall and CPU seconds of each run of one path.
#[derive(Debug, Clone, Default)]
struct Runs {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

fn best(values: &[f64]) -> Option<f64> {
    values
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .min_by(f64::total_cmp)
}

impl Runs {
    fn median_wall(&self) -> Option<f64> {
        median(&self.wall)
    }
    fn best_wall(&self) -> Option<f64> {
        best(&self.wall)
    }
    fn median_cpu(&self) -> Option<f64> {
        median(&self.cpu)
    }
}

fn fmt_seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// How a unit's result is marked in the variation strings the peers print: the variation's
/// index, or `-` when the unit is not in the experiment.
fn mark(result: Option<&ExperimentResult>) -> u8 {
    match result {
        Some(r) if r.in_experiment && r.variation_id < 10 => b'0' + r.variation_id as u8,
        _ => b'-',
    }
}

// ---------------------------------------------------------------------------------------------
// Assignment

/// One assignment path's runs, and the variation of each unit in its last run.
struct AssignPath {
    label: String,
    units: usize,
    runs: Runs,
    variations: Vec<u8>,
}

fn rust_runs(
    label: &str,
    units: usize,
    repeat: u32,
    mut body: impl FnMut(&mut [u8]),
) -> AssignPath {
    let mut runs = Runs::default();
    let mut variations = vec![b'-'; units];
    for _ in 0..repeat {
        let cpu = thread_cpu_seconds();
        let started = Instant::now();
        body(&mut variations);
        runs.wall.push(started.elapsed().as_secs_f64());
        runs.cpu.push(thread_cpu_seconds() - cpu);
    }
    AssignPath {
        label: label.to_string(),
        units,
        runs,
        variations,
    }
}

/// Sets the unit's `id` attribute, the one the experiment hashes, as a new string per unit (as
/// a server reading requests would).
fn set_id(ctx: &mut Context, id: &str) {
    match ctx.attributes.get_mut("id") {
        Some(slot) => *slot = Value::String(id.to_string()),
        None => {
            ctx.attributes
                .insert("id".into(), Value::String(id.to_string()));
        }
    }
}

/// Cohort's four paths over `ids`, on this thread.
fn cohort_assignment(
    payload: &Value,
    ids: &[String],
    repeat: u32,
) -> anyhow::Result<Vec<AssignPath>> {
    let context = || -> anyhow::Result<Context> {
        serde_json::from_value(json!({
            "features": payload["features"],
            "savedGroups": payload["savedGroups"],
        }))
        .context("the features payload does not read as a context")
    };
    let rule = &payload["features"][EXPERIMENT]["rules"][0];
    let experiment: Experiment = serde_json::from_value(rule.clone())
        .context("the flag's rule does not read as an experiment")?;
    let mut out = Vec::new();

    // Each of Cohort's evaluation paths over the same units, from a fresh context: the unit's
    // `id` set, then `decide` gives its mark.
    let mut evaluation_path =
        |label: &str, decide: &dyn Fn(&mut Context) -> u8| -> anyhow::Result<()> {
            let mut ctx = context()?;
            out.push(rust_runs(label, ids.len(), repeat, |marks| {
                for (id, m) in ids.iter().zip(marks.iter_mut()) {
                    set_id(&mut ctx, id);
                    *m = decide(&mut ctx);
                }
            }));
            Ok(())
        };
    evaluation_path("Cohort  Context::eval_feature", &|ctx| {
        mark(ctx.eval_feature(EXPERIMENT).experiment.as_ref())
    })?;
    evaluation_path("Cohort  Context::run", &|ctx| {
        mark(Some(&ctx.run(&experiment)))
    })?;
    evaluation_path("Cohort  Context::assign", &|ctx| {
        let assignment = ctx.assign(&experiment);
        match assignment.variation {
            Some(v) if assignment.in_experiment && v < 10 => b'0' + v as u8,
            _ => b'-',
        }
    })?;

    let seed = experiment
        .seed
        .clone()
        .unwrap_or_else(|| experiment.key.clone());
    let version = HashVersion::from_number(experiment.hash_version.unwrap_or(1))
        .context("the rule's hash version is unknown")?;
    let ranges = assign::bucket_ranges(
        experiment.variations.len(),
        experiment.coverage.unwrap_or(1.0),
        experiment.weights.as_deref(),
    );
    out.push(rust_runs(
        "Cohort  floor: assign::hash + choose_variation",
        ids.len(),
        repeat,
        |marks| {
            for (id, m) in ids.iter().zip(marks.iter_mut()) {
                let n = assign::hash(&seed, id, version);
                *m = match assign::choose_variation(n, &ranges) {
                    Some(v) if v < 10 => b'0' + v as u8,
                    _ => b'-',
                };
            }
        },
    ));
    Ok(out)
}

/// What a peer script printed: its versions and, per mode, runs and variations.
struct Peer {
    version: String,
    runtime: String,
    modes: Vec<(String, Runs, Vec<u8>)>,
}

/// Runs `program args… SCRIPT` with `spec` on stdin; its progress goes to stderr, its answer (the
/// last line of stdout) is returned.
fn run_script(program: &str, args: &[&str], script: &str, spec: &Value) -> anyhow::Result<Value> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(spec.to_string().as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    if !output.status.success() {
        bail!(
            "{program} failed ({}); its messages are above",
            output.status
        );
    }
    let answer: Value = serde_json::from_str(last)
        .with_context(|| format!("{program}'s answer could not be read: {last:.200}"))?;
    if let Some(missing) = answer.get("missing") {
        bail!("{program} lacks a package: {missing} (pip install duckdb gbstats growthbook)");
    }
    Ok(answer)
}

fn read_peer(answer: &Value, runtime_key: &str) -> Peer {
    let seconds = |v: &Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let modes = answer["modes"]
        .as_object()
        .map(|modes| {
            modes
                .iter()
                .map(|(name, m)| {
                    (
                        name.clone(),
                        Runs {
                            wall: seconds(&m["wall"]),
                            cpu: seconds(&m["cpu"]),
                        },
                        m["variations"]
                            .as_str()
                            .unwrap_or_default()
                            .as_bytes()
                            .to_vec(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Peer {
        version: answer["version"].as_str().unwrap_or("?").to_string(),
        runtime: answer[runtime_key].as_str().unwrap_or("?").to_string(),
        modes,
    }
}

fn peer_paths(peer: Peer, sdk: &str, units: usize, labels: &[(&str, &str)]) -> Vec<AssignPath> {
    let mut out = Vec::new();
    for (mode, label) in labels {
        if let Some((_, runs, variations)) = peer.modes.iter().find(|(m, ..)| m == mode) {
            out.push(AssignPath {
                label: format!("{sdk} {}  {label}", peer.version),
                units,
                runs: runs.clone(),
                variations: variations.clone(),
            });
        }
    }
    out
}

fn mismatches(ours: &[u8], theirs: &[u8]) -> usize {
    let compared = ours.len().min(theirs.len());
    let differing = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
    differing + theirs.len().saturating_sub(compared)
}

fn assignment(args: &BenchExperimentsArgs, payload: &Value) -> anyhow::Result<()> {
    let ids: Vec<String> = (1..=args.ids).map(|i| format!("{ID_PREFIX}{i}")).collect();
    let repeat = args.repeat.max(1);
    println!();
    println!(
        "Assignment: flag {EXPERIMENT} (one experiment rule: 2 variations, 50/50, hash version 2 \
         on id), units {ID_PREFIX}1 … {ID_PREFIX}{}, one thread, {repeat} run(s) of each path …",
        args.ids
    );
    let mut paths = cohort_assignment(payload, &ids, repeat)?;
    let mut notes = Vec::new();
    if !args.no_peers {
        let spec = |units: usize| {
            json!({
                "growthbook": args.growthbook_js,
                "payload": payload,
                "flag": EXPERIMENT,
                "ids": units,
                "prefix": ID_PREFIX,
                "repeat": repeat,
            })
        };
        match run_script(&args.node, &["-e"], SDK_JS, &spec(args.ids)) {
            Ok(answer) => {
                let peer = read_peer(&answer, "node");
                notes.push(format!(
                    "JavaScript SDK: @growthbook/growthbook {} on Node.js {}",
                    peer.version, peer.runtime
                ));
                paths.extend(peer_paths(
                    peer,
                    "JS SDK",
                    args.ids,
                    &[
                        ("client_eval_feature", "GrowthBookClient.evalFeature"),
                        ("eval_feature", "GrowthBook.evalFeature (setAttributes)"),
                        ("run", "GrowthBook.run (setAttributes)"),
                        ("floor", "floor: hash + chooseVariation"),
                    ],
                ));
            }
            Err(e) => notes.push(format!("JavaScript SDK skipped: {e:#}")),
        }
        let python_ids = args.python_ids.min(args.ids);
        match run_script(&args.python, &["-c"], SDK_PY, &spec(python_ids)) {
            Ok(answer) => {
                let peer = read_peer(&answer, "python");
                notes.push(format!(
                    "Python SDK: growthbook {} on Python {}, the first {} units",
                    peer.version,
                    peer.runtime,
                    fmt_int(python_ids as u64)
                ));
                paths.extend(peer_paths(
                    peer,
                    "Py SDK",
                    python_ids,
                    &[
                        ("eval_feature", "GrowthBook.eval_feature (set_attributes)"),
                        ("run", "GrowthBook.run (set_attributes)"),
                        ("floor", "floor: gbhash + chooseVariation"),
                    ],
                ));
            }
            Err(e) => notes.push(format!("Python SDK skipped: {e:#}")),
        }
    }
    print_assignment(&paths, &notes, repeat);
    Ok(())
}

fn rate(path: &AssignPath, wall: Option<f64>) -> Option<f64> {
    wall.filter(|w| *w > 0.0).map(|w| path.units as f64 / w)
}

fn print_assignment(paths: &[AssignPath], notes: &[String], repeat: u32) {
    let Some(cohort) = paths.first() else {
        return;
    };
    println!();
    println!(
        "  {:<56} {:>22} {:>13} {:>11}  differs from Cohort",
        "path", "assignments/s, median (best)", "CPU/assign", "vs JS eval"
    );
    let js_eval = paths
        .iter()
        .find(|p| p.label.contains("GrowthBook.evalFeature"))
        .and_then(|p| rate(p, p.runs.median_wall()));
    for p in paths {
        let median_rate = rate(p, p.runs.median_wall());
        let best_rate = rate(p, p.runs.best_wall());
        let cpu = p.runs.median_cpu().map_or("-".into(), |c| {
            format!("{:.0} ns", c / p.units as f64 * 1e9)
        });
        let times = match (median_rate, js_eval) {
            (Some(r), Some(js)) if js > 0.0 => format!("{:.1}×", r / js),
            _ => "-".into(),
        };
        let rates = match (median_rate, best_rate) {
            (Some(m), Some(b)) if repeat > 1 => format!("{} ({})", fmt_rate(m), fmt_rate(b)),
            (Some(m), _) => fmt_rate(m),
            _ => "-".into(),
        };
        let differs = if std::ptr::eq(p, cohort) {
            "(reference)".to_string()
        } else {
            format!(
                "{} of {}",
                fmt_int(mismatches(
                    &cohort.variations[..p.units.min(cohort.units)],
                    &p.variations
                ) as u64),
                fmt_int(p.units as u64)
            )
        };
        println!(
            "  {:<56} {rates:>22} {cpu:>13} {times:>11}  {differs}",
            p.label
        );
    }
    let split = |v: &[u8], c: u8| v.iter().filter(|x| **x == c).count() as u64;
    println!(
        "  Cohort's split: {} control, {} treatment, {} not in the experiment.",
        fmt_int(split(&cohort.variations, b'0')),
        fmt_int(split(&cohort.variations, b'1')),
        fmt_int(split(&cohort.variations, b'-'))
    );
    for note in notes {
        println!("  {note}");
    }
    let ours = rate(cohort, cohort.runs.median_wall()).unwrap_or(0.0);
    let assign = paths
        .iter()
        .find(|p| p.label.contains("Context::assign"))
        .and_then(|p| rate(p, p.runs.median_wall()));
    let floor = paths
        .iter()
        .find(|p| p.label.starts_with("Cohort  floor"))
        .and_then(|p| rate(p, p.runs.median_wall()));
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "  Target (issue 15): at least {} assignments/s: {} with eval_feature, {}; {} with assign \
         (the decision without the result's strings), {}; the floor (hash + bucket choice, \
         nothing else) does {}.",
        fmt_int(TARGET_RATE as u64),
        fmt_rate(ours),
        verdict(ours >= TARGET_RATE),
        assign.map_or("-".into(), fmt_rate),
        verdict(assign.is_some_and(|a| a >= TARGET_RATE)),
        floor.map_or("-".into(), fmt_rate)
    );
    let fastest_js = paths
        .iter()
        .filter(|p| p.label.starts_with("JS SDK") && !p.label.contains("floor"))
        .filter_map(|p| rate(p, p.runs.median_wall()).map(|r| (r, p.label.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match (js_eval, fastest_js) {
        (Some(js), Some((fast, label))) => println!(
            "  Target (issue 15): at least {TARGET_TIMES_JS}× the JavaScript SDK's evaluation: {:.1}× \
             its GrowthBook.evalFeature, {}; {:.1}× its fastest evaluation path ({}).",
            ours / js,
            verdict(ours / js >= TARGET_TIMES_JS),
            ours / fast,
            label.trim()
        ),
        _ => println!("  Target against the JavaScript SDK: not measured (no JavaScript run)."),
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn prepare_data(dir: &Path, spec: ExperimentSpec) -> anyhow::Result<ExperimentMeta> {
    if let Some(meta) = experiment_lake::existing(dir, spec)? {
        println!(
            "Reusing the data in {}: {} customers, {} events (generated in {:.0} s).",
            dir.display(),
            fmt_int(spec.customers as u64),
            fmt_int(meta.events_written),
            meta.generate_seconds
        );
        return Ok(meta);
    }
    println!(
        "Generating the experiment's data for {} customers (seed {}) into {} …",
        fmt_int(spec.customers as u64),
        spec.seed,
        dir.display()
    );
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} events {per_sec} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let generated = experiment_lake::generate(dir, spec, |written| bar.set_position(written))?;
    bar.finish_and_clear();
    let meta = generated.meta;
    println!(
        "Generated {} events ({} exposures) in {:.1} s; peak RSS {}.",
        fmt_int(meta.events_written),
        fmt_int(meta.exposures),
        meta.generate_seconds,
        peak_rss()
    );
    Ok(meta)
}

/// The query's values and metrics as the peer script reads them.
fn report_spec(
    dir: &Path,
    defs: &Definitions,
    query: &ExposureQuery,
    options: &Options,
    repeat: u32,
) -> Value {
    let values: Vec<Value> = query
        .values
        .iter()
        .map(|v| {
            let (aggregate, property) = match &v.aggregate {
                Aggregate::Any => ("any", None),
                Aggregate::Count => ("count", None),
                Aggregate::Sum(p) => ("sum", Some(p.clone())),
            };
            json!({
                "key": v.key,
                "event": v.event,
                "aggregate": aggregate,
                "property": property,
                "window_seconds": v.window_hours.map(|h| (h * 3600.0).round() as i64),
                "cap": v.cap,
            })
        })
        .collect();
    let index = |key: &Option<String>| {
        query
            .values
            .iter()
            .position(|v| Some(&v.key) == key.as_ref())
    };
    let metrics: Vec<Value> = defs
        .experiment
        .metrics
        .iter()
        .chain(&defs.experiment.guardrails)
        .filter_map(|key| defs.metrics.get(key))
        .map(|m| match m.kind {
            cohort_experiment::definition::MetricKind::Ratio => json!({
                "key": m.key, "kind": "ratio",
                "numerator": index(&m.numerator), "denominator": index(&m.denominator),
            }),
            cohort_experiment::definition::MetricKind::Conversion => json!({
                "key": m.key, "kind": "proportion", "value": index(&Some(m.key.clone())),
            }),
            _ => json!({"key": m.key, "kind": "mean", "value": index(&Some(m.key.clone()))}),
        })
        .collect();
    let events = dir.join("lake").join("events").join("*").join("*.parquet");
    json!({
        "events": events.to_string_lossy(),
        "experiment": query.experiment,
        "start": query.start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "end": query.end.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "values": values,
        "products": query.products,
        "variations": defs.experiment.variations.iter().map(|v| &v.key).collect::<Vec<_>>(),
        "weights": defs.experiment.effective_weights(),
        "metrics": metrics,
        "alpha": options.alpha,
        "repeat": repeat,
    })
}

fn relative_difference(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// The largest relative difference between Cohort's sums and the peer's, and what differs in
/// kind (units, multiple exposures, a missing variation).
fn compare_sums(ours: &ExposureSums, theirs: &Value) -> (f64, Vec<String>) {
    let mut worst: f64 = 0.0;
    let mut problems = Vec::new();
    for (key, s) in &ours.variations {
        let t = &theirs["sums"][key];
        if t.is_null() {
            problems.push(format!("DuckDB has no variation {key}"));
            continue;
        }
        if t["units"].as_u64() != Some(s.units) {
            problems.push(format!(
                "{key}: {} units against DuckDB's {}",
                s.units, t["units"]
            ));
        }
        for (i, v) in s.values.iter().enumerate() {
            let tv = &t["values"][i];
            for (a, b) in [(v.sum, &tv["sum"]), (v.sum_squares, &tv["sum_squares"])] {
                worst = worst.max(relative_difference(a, b.as_f64().unwrap_or(f64::NAN)));
            }
        }
        for (j, p) in s.products.iter().enumerate() {
            worst = worst.max(relative_difference(
                *p,
                t["products"][j].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    if theirs["multiple_exposures"].as_u64() != Some(ours.multiple_exposures) {
        problems.push(format!(
            "{} customers exposed to both variations against DuckDB's {}",
            ours.multiple_exposures, theirs["multiple_exposures"]
        ));
    }
    if worst.is_nan() {
        problems.push("a sum is missing on the DuckDB side".into());
    }
    (worst, problems)
}

/// The largest differences between the report's relative lifts and p-values and gbstats'.
fn compare_effects(report: &Report, theirs: &Value) -> (f64, f64, usize) {
    let (mut lift, mut p, mut compared) = (0.0f64, 0.0f64, 0);
    for metric in &report.metrics {
        for c in &metric.comparisons {
            let g = &theirs["effects"][&metric.key][&c.variation];
            let Some(ours) = c.relative.figures() else {
                continue;
            };
            if let Some(estimate) = g["estimate"].as_f64() {
                lift = lift.max(relative_difference(ours.estimate, estimate));
                compared += 1;
            }
            if let (Some(a), Some(b)) = (ours.p_value, g["p_value"].as_f64()) {
                p = p.max((a - b).abs());
            }
        }
    }
    (lift, p, compared)
}

/// The DuckDB + gbstats process (`scripts/bench_experiments_report.py`), driven one run at a
/// time.
struct ReportPeer {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl ReportPeer {
    fn start(python: &str, spec: &Value) -> anyhow::Result<ReportPeer> {
        let mut child = std::process::Command::new(python)
            .arg("-c")
            .arg(REPORT_PY)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {python}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("{python} has no pipes");
        };
        let mut peer = ReportPeer {
            child,
            stdin: Some(stdin),
            lines: std::io::BufRead::lines(std::io::BufReader::new(stdout)),
        };
        let mut spec = spec.clone();
        spec["driven"] = json!(true);
        peer.send(&format!("{spec}\n"))?;
        let ready = peer.answer()?;
        if let Some(missing) = ready.get("missing") {
            bail!("{python} lacks a package: {missing} (pip install duckdb gbstats)");
        }
        if ready["ready"] != json!(true) {
            bail!("{python} did not start: {ready}");
        }
        Ok(peer)
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("the peer's input is closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// The next line of JSON the peer prints.
    fn answer(&mut self) -> anyhow::Result<Value> {
        loop {
            let line = self
                .lines
                .next()
                .context("the DuckDB process stopped; its messages are above")??;
            if let Some(at) = line.find('{') {
                return serde_json::from_str(&line[at..])
                    .with_context(|| format!("unreadable answer: {line:.200}"));
            }
        }
    }

    /// One run's times: `{"sql", "stats", "cpu"}` in seconds.
    fn run(&mut self) -> anyhow::Result<Value> {
        self.send("run\n")?;
        self.answer()
    }

    /// Ends the runs; the versions, every run, and the last run's sums and effects.
    fn finish(mut self) -> anyhow::Result<Value> {
        drop(self.stdin.take());
        let answer = self.answer();
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the DuckDB process failed ({status}); its messages are above");
        }
        answer
    }
}

async fn report(args: &BenchExperimentsArgs, defs: &Definitions, dir: &Path) -> anyhow::Result<()> {
    let spec = ExperimentSpec {
        customers: args.customers,
        seed: args.seed,
    };
    let meta = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || prepare_data(&dir, spec)).await??
    };
    let cal = Calendar::new();
    let now = cal.now()?;
    let query = exposure_query(&defs.experiment, &defs.metrics, 0, now)?;
    let options = Options::default();
    let repeat = args.repeat.max(1);
    let lake = Lake::open(dir)?;
    // The engine's own limit is a minute a query; a benchmark at ten million units may need more.
    let run_options = RunOptions {
        timeout: Duration::from_secs(3_600),
        ..RunOptions::default()
    };
    println!();
    println!(
        "Report: {} metrics over {} customers' exposures ({} events in the lake), as of {}; \
         {repeat} run(s) each …",
        defs.experiment.metrics.len() + defs.experiment.guardrails.len(),
        fmt_int(spec.customers as u64),
        fmt_int(meta.events_written),
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // The peer runs in its own process, driven run by run so that its runs alternate with
    // Cohort's: the machine's other load then weighs on both alike.
    let mut peer = None;
    let mut peer_failure = None;
    if args.no_peers {
        peer_failure = Some("--no-peers".to_string());
    } else {
        println!(
            "DuckDB + gbstats: the same sums and effects with {}, its runs alternating with Cohort's …",
            args.python
        );
        let spec = report_spec(dir, defs, &query, &options, repeat);
        let python = args.python.clone();
        match tokio::task::spawn_blocking(move || ReportPeer::start(&python, &spec)).await? {
            Ok(p) => peer = Some(p),
            Err(e) => peer_failure = Some(format!("{e:#}")),
        }
    }
    let mut ours = Runs::default();
    let mut sql_times = Vec::new();
    let mut stats_times = Vec::new();
    let mut pairs = Vec::new();
    let mut last: Option<(ExposureSums, Report)> = None;
    for run in 1..=repeat {
        let cpu = process_cpu_seconds();
        let started = Instant::now();
        let sums = cohort_analysis::experiment::exposure_sums(&lake, &query, &run_options).await?;
        let summed = started.elapsed().as_secs_f64();
        let input = report_input(
            &defs.experiment,
            &defs.metrics,
            &query,
            &sums,
            options.clone(),
        );
        let report = analyze(&input).map_err(|e| anyhow::anyhow!("{}: {}", e.at, e.message))?;
        let wall = started.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds() - cpu;
        ours.wall.push(wall);
        ours.cpu.push(cpu);
        sql_times.push(summed);
        stats_times.push(wall - summed);
        println!(
            "  Cohort, run {run}: {} (sums {}), CPU {}; load average {}",
            fmt_seconds(wall),
            fmt_seconds(summed),
            fmt_seconds(cpu),
            load_average()
        );
        last = Some((sums, report));
        if let Some(mut p) = peer.take() {
            let (p, answer) = tokio::task::spawn_blocking(move || {
                let answer = p.run();
                (p, answer)
            })
            .await?;
            match answer {
                Ok(r) => {
                    let theirs = r["sql"].as_f64().unwrap_or(f64::NAN)
                        + r["stats"].as_f64().unwrap_or(f64::NAN);
                    pairs.push(wall / theirs);
                    peer = Some(p);
                }
                Err(e) => peer_failure = Some(format!("{e:#}")),
            }
        }
    }
    let cohort_rss = peak_rss();
    drop(lake);
    let Some((sums, report)) = last else {
        bail!("no run");
    };
    let peer: Result<Value, String> = match (peer, peer_failure) {
        (_, Some(why)) => Err(why),
        (Some(p), None) => tokio::task::spawn_blocking(move || p.finish())
            .await?
            .map_err(|e| format!("{e:#}")),
        (None, None) => Err("not run".into()),
    };

    println!();
    println!(
        "  {:<58} {:>20} {:>10}",
        "report over the lake", "wall, median (best)", "CPU"
    );
    let row = |label: &str, runs: &Runs| {
        let wall = match (runs.median_wall(), runs.best_wall()) {
            (Some(m), Some(b)) if repeat > 1 => format!("{} ({})", fmt_seconds(m), fmt_seconds(b)),
            (Some(m), _) => fmt_seconds(m),
            _ => "-".into(),
        };
        let cpu = runs.median_cpu().map_or("-".into(), fmt_seconds);
        println!("  {label:<58} {wall:>20} {cpu:>10}");
    };
    row("Cohort: exposure_sums + report_input + analyze", &ours);
    println!(
        "  {:<58} {:>20}",
        "  of which the sums (DataFusion over the lake)",
        median(&sql_times).map_or("-".into(), fmt_seconds)
    );
    println!(
        "  {:<58} {:>20}",
        "  of which the statistics (report_input + analyze)",
        median(&stats_times).map_or("-".into(), fmt_seconds)
    );
    match &peer {
        Ok(answer) => {
            let runs = answer["runs"].as_array().cloned().unwrap_or_default();
            let field =
                |name: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[name].as_f64()).collect() };
            let (sql, stats, cpu) = (field("sql"), field("stats"), field("cpu"));
            let theirs = Runs {
                wall: sql.iter().zip(&stats).map(|(a, b)| a + b).collect(),
                cpu,
            };
            row(
                &format!(
                    "DuckDB {} ({} threads) + gbstats {}",
                    answer["duckdb"].as_str().unwrap_or("?"),
                    answer["threads"],
                    answer["gbstats"].as_str().unwrap_or("?")
                ),
                &theirs,
            );
            println!(
                "  {:<58} {:>20}",
                "  of which DuckDB's sums",
                median(&sql).map_or("-".into(), fmt_seconds)
            );
            println!(
                "  {:<58} {:>20}",
                "  of which gbstats",
                median(&stats).map_or("-".into(), fmt_seconds)
            );
            if let (Some(a), Some(b)) = (ours.median_wall(), theirs.median_wall()) {
                let ratios: Vec<String> = pairs.iter().map(|r| format!("{r:.2}")).collect();
                println!(
                    "  Cohort / (DuckDB + gbstats), median wall: {:.2} (neighbouring runs: {}); \
                     median CPU: {:.2}; target (issue 15) at most 1.0: {}.",
                    a / b,
                    ratios.join(", "),
                    ours.median_cpu().unwrap_or(f64::NAN) / theirs.median_cpu().unwrap_or(f64::NAN),
                    if a <= b { "met" } else { "NOT met" }
                );
            }
            let (worst, problems) = compare_sums(&sums, answer);
            println!(
                "  Sums: largest relative difference from DuckDB's {worst:.2e}{}",
                if problems.is_empty() {
                    "; units and multiple exposures equal.".to_string()
                } else {
                    format!("; DIFFERENT: {}", problems.join("; "))
                }
            );
            let (lift, p, compared) = compare_effects(&report, answer);
            println!(
                "  Effects: {compared} relative lifts, largest relative difference from gbstats' \
                 {lift:.2e}; p-values within {p:.2e}.",
            );
            println!(
                "  DuckDB's peak RSS {:.0} MB; Cohort's {cohort_rss} (the process, generation included \
                 when it ran).",
                answer["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
            );
        }
        Err(e) => println!("  DuckDB + gbstats skipped: {e}"),
    }
    print_effects(&report, &sums);
    Ok(())
}

fn print_effects(report: &Report, sums: &ExposureSums) {
    let units: Vec<String> = sums
        .variations
        .iter()
        .map(|(k, s)| format!("{k} {}", fmt_int(s.units)))
        .collect();
    println!(
        "  Units: {}; {} exposed to both variations and left out; sample-ratio p-value {}.",
        units.join(", "),
        fmt_int(sums.multiple_exposures),
        report.srm.p_value.map_or("-".into(), |p| format!("{p:.3}"))
    );
    for metric in &report.metrics {
        for c in &metric.comparisons {
            let figures = c.relative.figures().map_or("refused".to_string(), |f| {
                format!(
                    "{:+.2} % [{:+.2}, {:+.2}], p = {}",
                    f.estimate * 100.0,
                    f.ci[0] * 100.0,
                    f.ci[1] * 100.0,
                    f.p_value.map_or("-".into(), |p| format!("{p:.2e}"))
                )
            });
            let kind = match metric.kind {
                MetricKind::Proportion => "conversion",
                MetricKind::Ratio => "ratio",
                MetricKind::Mean => "mean",
            };
            println!(
                "    {:<16} {:<10} {} vs {}: {figures}",
                metric.key, kind, c.variation, c.control
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command

pub(crate) async fn run(args: BenchExperimentsArgs) -> anyhow::Result<()> {
    let parts: Vec<&str> = if args.only.is_empty() {
        vec!["assignment", "report"]
    } else {
        args.only.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = parts.iter().find(|p| !["assignment", "report"].contains(p)) {
        bail!("unknown part {unknown:?}: --only takes assignment, report");
    }
    if args.customers == 0 || args.ids == 0 {
        bail!("--customers and --ids must be at least 1");
    }
    print_machine();
    let defs = experiment_lake::definitions()?;
    let payload = defs.features_payload();
    if parts.contains(&"assignment") {
        let args = args.clone();
        let payload = payload.clone();
        tokio::task::spawn_blocking(move || assignment(&args, &payload)).await??;
    }
    if parts.contains(&"report") {
        let mut temp = None;
        let dir = match &args.data {
            Some(dir) => dir.clone(),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("cohort-bench-experiments-")
                    .tempdir()
                    .context("creating a temporary data directory")?;
                let path = t.path().to_path_buf();
                temp = Some(t);
                path
            }
        };
        let outcome = report(&args, &defs, &dir).await;
        if let Some(t) = temp {
            if args.keep {
                let kept = t.keep();
                println!(
                    "Data kept in {} (reuse it with --data {}).",
                    kept.display(),
                    kept.display()
                );
            } else {
                drop(t);
            }
        }
        outcome?;
    }
    println!(
        "  Load average after the run (1, 5, 15 min): {}",
        load_average()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_rates() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(best(&[3.0, 1.0, f64::NAN]), Some(1.0));
        assert_eq!(fmt_rate(12_345_678.0), "12.35M/s");
        assert_eq!(fmt_rate(123_456.0), "123.5k/s");
        assert_eq!(mismatches(b"01-1", b"0111"), 1);
        assert_eq!(mismatches(b"01", b"011"), 1);
        assert_eq!(relative_difference(2.0, 2.0), 0.0);
        assert!((relative_difference(100.0, 99.0) - 0.01).abs() < 1e-12);
    }

    /// Cohort's three assignment paths agree on every unit.
    #[test]
    fn cohorts_paths_agree() {
        let defs = experiment_lake::definitions().unwrap();
        let payload = defs.features_payload();
        let ids: Vec<String> = (1..=2_000).map(|i| format!("{ID_PREFIX}{i}")).collect();
        let paths = cohort_assignment(&payload, &ids, 1).unwrap();
        assert_eq!(paths.len(), 4);
        for p in &paths[1..] {
            assert_eq!(
                mismatches(&paths[0].variations, &p.variations),
                0,
                "{}",
                p.label
            );
        }
        assert!(!paths[0].variations.contains(&b'-'));
        let mut assigner = experiment_lake::Assigner::new(&defs).unwrap();
        for (id, v) in ids.iter().zip(&paths[0].variations) {
            assert_eq!(assigner.variation(id).map(|v| b'0' + v as u8), Some(*v));
        }
    }
}
