//! Prints what a dataset looks like: `cargo run -p cohort-demo --example demo_stats -- [customers] [days] [seed]`.
//! With `--json N` it also prints the first N messages; with `--customer I` the timeline of
//! customer I (zero-based); with `--stream N` it times `stream_events(N, seed)` instead.

use std::time::Instant;

use cohort_demo::{Dataset, DemoOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let show = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let customer = args
        .iter()
        .position(|a| a == "--customer")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok());
    let stream = args
        .iter()
        .position(|a| a == "--stream")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok());
    let numbers: Vec<u64> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || !args[i - 1].starts_with("--"))
        .filter_map(|(_, a)| a.parse().ok())
        .collect();
    let defaults = DemoOptions::default();
    let opts = DemoOptions {
        customers: numbers.first().map_or(defaults.customers, |&n| n as usize),
        days: numbers.get(1).map_or(defaults.days, |&n| n as u32),
        seed: numbers.get(2).copied().unwrap_or(defaults.seed),
        ..defaults
    };
    if let Some(n) = stream {
        let started = Instant::now();
        let bytes: usize = cohort_demo::stream_events(n, opts.seed)
            .map(|m| m.to_string().len())
            .sum();
        let elapsed = started.elapsed();
        println!(
            "{n} stream events, {bytes} bytes of JSON, in {elapsed:?} ({:.0} events/s)",
            n as f64 / elapsed.as_secs_f64()
        );
        return;
    }
    let started = Instant::now();
    let data = Dataset::generate(&opts);
    let elapsed = started.elapsed();
    print!("{}", data.stats());
    println!("generated in {elapsed:?}");
    let mut archetypes = std::collections::BTreeMap::new();
    for c in data.customers() {
        *archetypes
            .entry(format!("{:?}", c.archetype))
            .or_insert(0usize) += 1;
    }
    println!("archetypes: {archetypes:?}");
    let first: String = data
        .customers()
        .iter()
        .take(60)
        .map(|c| format!("{:?}", c.archetype).chars().next().unwrap_or('?'))
        .collect();
    println!("first customers' archetypes: {first}");
    for m in data.iter().take(show) {
        println!("{}", serde_json::to_string_pretty(m).unwrap_or_default());
    }
    if let Some(truth) = customer.and_then(|i| data.customers().get(i)) {
        println!("{truth:?}");
        let mine = |m: &serde_json::Value| {
            let anon = m.get("anonymousId").and_then(|v| v.as_str());
            let user = m.get("userId").and_then(|v| v.as_str());
            anon.is_some_and(|a| truth.anonymous_ids.iter().any(|x| x == a))
                || (user.is_some() && user == truth.user_id.as_deref())
        };
        for m in data.iter().filter(|m| mine(m)) {
            let s = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("-");
            let what = match s("type") {
                "track" => s("event").to_string(),
                "identify" => format!("identify {}", m["traits"]),
                other => format!("{other} {}", s("name")),
            };
            let device = m
                .pointer("/context/device/type")
                .and_then(|v| v.as_str())
                .unwrap_or("server");
            let anon: String = s("anonymousId").chars().take(8).collect();
            println!(
                "{} {:<8} {:<8} {:<16} {}",
                s("timestamp"),
                device,
                anon,
                s("userId"),
                what
            );
        }
    }
}
