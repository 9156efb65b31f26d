//! `cohort bench ingest` and `cohort bench lookup`: measurements of this build on this machine,
//! against an in-process server on a throw-away data directory.
//!
//! - `ingest`: events are generated and serialised into request bodies *before* the clock starts,
//!   then posted to `/v1/batch` exactly as a Segment library would. Two figures come out: how fast
//!   requests are acknowledged (committed to the inbox), and how fast they are fully applied to
//!   customer state. Optionally the same events are loaded into DuckDB for a reference point.
//! - `lookup`: an open-loop load generator asks for profiles on a fixed timeline and measures each
//!   latency from the request's *scheduled* start, so a stalled server is charged for the requests
//!   it delayed (no coordinated omission).
//!
//! The load generator runs on its own small Tokio runtime with named threads, so the per-thread CPU
//! table printed at the end separates client cost from server cost. Everything printed is measured;
//! nothing here judges the numbers.

use crate::machine::{CpuSnapshot, cores, fmt_int, peak_rss, print_machine, thread_cpu};
use crate::{BenchIngestArgs, BenchLookupArgs};
use anyhow::{Context, bail};
use cohort_core::Inbox as _;
use cohort_server::{RunningServer, ServerConfig, start};
use cohort_store::{Durability, Store};
use rand::Rng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Threads of the load generator's runtime, so their CPU time is told apart from the server's.
pub(crate) const CLIENT_THREAD: &str = "bench-client";
/// One worker is enough to drive the server on a small machine and leaves the rest to it.
const CLIENT_WORKERS: usize = 1;

// ---------------------------------------------------------------------------------------------
// bench ingest

pub(crate) async fn ingest(args: BenchIngestArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.batch == 0 || args.concurrency == 0 {
        bail!("--events, --batch and --concurrency must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("cohort-bench-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let durability = if args.durability == "normal" {
        Durability::Normal
    } else {
        Durability::Full
    };
    let server = start_server(dir.path(), durability, None, |config| {
        if let Some(batch) = args.apply_batch {
            config.engine.store.apply_batch = batch;
        }
    })
    .await?;
    let store = server.state().store().clone();
    let write_key = create_source(&store, "bench").await?;

    print_machine();
    println!(
        "Generating {} events (seed {}) …",
        fmt_int(args.events as u64),
        args.seed
    );
    let ndjson = (!args.no_duckdb).then(|| dir.path().join("events.ndjson"));
    let generated = {
        let (events, batch, seed, ndjson) = (args.events, args.batch, args.seed, ndjson.clone());
        tokio::task::spawn_blocking(move || build_bodies(events, batch, seed, ndjson.as_deref()))
            .await??
    };
    let body_bytes: usize = generated.iter().map(Vec::len).sum();
    println!(
        "Prepared {} requests of up to {} events: {:.1} MB of JSON (held in memory, so part of peak RSS).",
        fmt_int(generated.len() as u64),
        args.batch,
        body_bytes as f64 / 1e6
    );

    let client_rt = client_runtime()?;
    let url = format!("http://{}/v1/batch", server.addr());
    let cpu_start = thread_cpu();
    let started = Instant::now();
    let generated: Arc<[Vec<u8>]> = generated.into();
    let outcome = client_rt
        .spawn(post_all(
            url,
            write_key,
            generated.clone(),
            args.concurrency,
        ))
        .await
        .context("the load generator stopped")??;
    let ack_elapsed = started.elapsed();
    let lag_at_ack = store.inbox().lag();
    let cpu_ack = thread_cpu();

    let applied = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.wait_processed(Duration::from_secs(3600))).await?
    };
    let e2e_elapsed = started.elapsed();
    let cpu_end = thread_cpu();
    if !applied {
        bail!(
            "processing did not finish within an hour ({} messages still waiting)",
            store.inbox().lag()
        );
    }

    let (totals, failed_stored) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((
                store.profiles().totals()?,
                store.failed_events().count(None)?,
            ))
        })
        .await??
    };

    let n = args.events as f64;
    let ack_rate = n / ack_elapsed.as_secs_f64();
    let e2e_rate = n / e2e_elapsed.as_secs_f64();
    println!();
    println!(
        "Cohort ingest: {} events, {} per request, {} in flight, durability {}, up to {} messages per processing transaction",
        fmt_int(args.events as u64),
        args.batch,
        args.concurrency,
        args.durability,
        fmt_int(store.config().apply_batch as u64)
    );
    println!("  {:<40} {:>10} {:>14}", "phase", "seconds", "events/s");
    println!(
        "  {:<40} {:>10.2} {:>14}",
        "HTTP ack (until the last 200)",
        ack_elapsed.as_secs_f64(),
        fmt_int(ack_rate as u64)
    );
    println!(
        "  {:<40} {:>10.2} {:>14}",
        "end-to-end (all applied to profiles)",
        e2e_elapsed.as_secs_f64(),
        fmt_int(e2e_rate as u64)
    );
    println!(
        "  requests {}, retried after 429/503 or transport errors {}; processing backlog at last ack: {} messages",
        fmt_int(outcome.requests),
        fmt_int(outcome.retries),
        fmt_int(lag_at_ack)
    );
    println!(
        "  server answered: accepted {}, duplicates {}, failed {}",
        fmt_int(outcome.accepted),
        fmt_int(outcome.duplicates),
        fmt_int(outcome.failed)
    );
    let verdict = if totals.events == args.events as i64 {
        "matches"
    } else {
        "DOES NOT MATCH"
    };
    println!(
        "  profile totals: {} events stored ({verdict} {} sent), {} customers, {} identities, {} merges, {} failed events",
        fmt_int(totals.events.max(0) as u64),
        fmt_int(args.events as u64),
        fmt_int(totals.customers.max(0) as u64),
        fmt_int(totals.identities.max(0) as u64),
        fmt_int(totals.merges.max(0) as u64),
        fmt_int(failed_stored.max(0) as u64),
    );

    print_cpu_table(&[
        ("ack phase", &cpu_start, &cpu_ack, ack_elapsed),
        ("drain phase", &cpu_ack, &cpu_end, e2e_elapsed - ack_elapsed),
    ]);
    print_cpu_per_event(&cpu_start, &cpu_end, args.events);
    match fetch_text(server.addr(), "/metrics").await {
        Ok(text) => print_stage_metrics(&text, ack_elapsed, e2e_elapsed),
        Err(e) => println!("  (could not read /metrics: {e:#})"),
    }
    println!(
        "  peak RSS of this process (server + load generator + prepared bodies): {}",
        peak_rss()
    );

    client_rt.shutdown_background();
    server.shutdown().await.context("stopping the server")?;

    if !args.no_floor {
        crate::floor::run(
            dir.path(),
            generated,
            args.events,
            args.concurrency,
            (ack_rate, e2e_rate),
        )
        .await?;
    }
    if let Some(path) = ndjson {
        duckdb_comparison(&path, args.events, e2e_rate).await?;
    }
    if totals.events != args.events as i64 {
        bail!("stored {} events but sent {}", totals.events, args.events);
    }
    Ok(())
}

/// Pre-serialised `{"batch": [...]}` bodies; with `ndjson`, the same events one per line there too.
fn build_bodies(
    events: usize,
    batch: usize,
    seed: u64,
    ndjson: Option<&Path>,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut file = match ndjson {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut bodies = Vec::with_capacity(events.div_ceil(batch));
    let mut body = Vec::new();
    let mut in_body = 0usize;
    for event in cohort_demo::stream_events(events, seed) {
        body.extend_from_slice(if in_body == 0 { b"{\"batch\":[" } else { b"," });
        serde_json::to_writer(&mut body, &event)?;
        in_body += 1;
        if let Some(f) = file.as_mut() {
            serde_json::to_writer(&mut *f, &event)?;
            f.write_all(b"\n")?;
        }
        if in_body == batch {
            body.extend_from_slice(b"]}");
            bodies.push(std::mem::take(&mut body));
            in_body = 0;
        }
    }
    if in_body > 0 {
        body.extend_from_slice(b"]}");
        bodies.push(body);
    }
    if let Some(mut f) = file {
        f.flush()?;
    }
    Ok(bodies)
}

#[derive(Debug, Default)]
pub(crate) struct PostOutcome {
    requests: u64,
    retries: u64,
    pub(crate) accepted: u64,
    duplicates: u64,
    failed: u64,
}

/// Posts every body with `concurrency` keep-alive connections; 429, 503 and transport errors are
/// retried (the server asks for that under load), anything else stops the run.
/// GETs every profile of `plan` once, `concurrency` at a time; each must answer 200.
async fn get_all(
    client: reqwest::Client,
    plan: LoadPlan,
    concurrency: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, plan, next) = (client.clone(), plan.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= plan.profiles {
                    break;
                }
                let url = format!("{}{i}", plan.base);
                let response = client.get(&url).bearer_auth(&plan.admin_key).send().await?;
                if !response.status().is_success() {
                    bail!("GET {url} answered {}", response.status());
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a reader task panicked")??;
    }
    Ok(())
}

pub(crate) async fn post_all(
    url: String,
    write_key: String,
    bodies: Arc<[Vec<u8>]>,
    concurrency: usize,
) -> anyhow::Result<PostOutcome> {
    let client = cohort_demo::send::http_client()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    // Taken in generation order; the bodies stay shared so the floor can send them again.
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, key, bodies, next) = (
            client.clone(),
            url.clone(),
            write_key.clone(),
            bodies.clone(),
            next.clone(),
        );
        workers.spawn(async move {
            let mut out = PostOutcome::default();
            while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                post_one(&client, &url, &key, body, &mut out).await?;
            }
            anyhow::Ok(out)
        });
    }
    let mut total = PostOutcome::default();
    while let Some(joined) = workers.join_next().await {
        let out = joined.context("a sender task panicked")??;
        total.requests += out.requests;
        total.retries += out.retries;
        total.accepted += out.accepted;
        total.duplicates += out.duplicates;
        total.failed += out.failed;
    }
    Ok(total)
}

const MAX_ATTEMPTS: u32 = 20;

async fn post_one(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &[u8],
    out: &mut PostOutcome,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(20);
    for attempt in 1..=MAX_ATTEMPTS {
        let sent = client
            .post(url)
            .basic_auth(key, Some(""))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            // A copy per attempt keeps retries possible; ~50 KB of memcpy is noise next to a request.
            .body(body.to_vec())
            .send()
            .await;
        let retryable = match sent {
            Ok(resp) if resp.status().is_success() => {
                let reply: Value = resp.json().await.context("reading an ingest reply")?;
                out.requests += 1;
                out.accepted += reply["accepted"].as_u64().unwrap_or(0);
                out.duplicates += reply["duplicates"].as_u64().unwrap_or(0);
                out.failed += reply["failed"].as_array().map_or(0, |f| f.len() as u64);
                return Ok(());
            }
            Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => {
                format!("HTTP {}", resp.status())
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                bail!("the server refused a batch with HTTP {status}: {text}");
            }
            Err(e) => e.to_string(),
        };
        if attempt == MAX_ATTEMPTS {
            bail!("a batch still failed after {MAX_ATTEMPTS} attempts: {retryable}");
        }
        out.retries += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    Ok(())
}

const DUCKDB_SCRIPT: &str = r#"
import json, sys, time
try:
    import duckdb
except ImportError:
    print("NO_DUCKDB")
    sys.exit(3)
con = duckdb.connect()
t = time.time()
con.execute("CREATE TABLE events AS SELECT * FROM read_json_auto(?)", [sys.argv[1]])
seconds = time.time() - t
rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
print(json.dumps({"seconds": seconds, "rows": rows, "version": duckdb.__version__}))
"#;

/// Times DuckDB loading the same events from NDJSON; skipped (not failed) when DuckDB is absent.
async fn duckdb_comparison(path: &Path, events: usize, cohort_rate: f64) -> anyhow::Result<()> {
    println!();
    println!(
        "DuckDB reference: loading the same {} events from NDJSON …",
        fmt_int(events as u64)
    );
    let path = path.to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(DUCKDB_SCRIPT)
            .arg(&path)
            .output()
    })
    .await?;
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            println!(
                "  skipped: cannot run python3 ({e}). Install Python 3 and `pip install duckdb`."
            );
            return Ok(());
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout.contains("NO_DUCKDB") {
        println!(
            "  skipped: the duckdb Python package is not installed. Install it with `pip install duckdb`."
        );
        return Ok(());
    }
    let parsed: Option<Value> = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    let Some(result) = parsed.filter(|_| output.status.success()) else {
        println!(
            "  skipped: DuckDB failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return Ok(());
    };
    let seconds = result["seconds"].as_f64().unwrap_or(f64::NAN);
    let rows = result["rows"].as_u64().unwrap_or(0);
    let duck_rate = rows as f64 / seconds;
    println!(
        "  DuckDB {} loaded {} rows in {seconds:.2} s (read_json_auto into an in-memory table)",
        result["version"].as_str().unwrap_or("?"),
        fmt_int(rows)
    );
    println!("  {:<46} {:>14}", "", "events/s");
    println!(
        "  {:<46} {:>14}",
        "Cohort end-to-end (HTTP, validated, applied)",
        fmt_int(cohort_rate as u64)
    );
    println!(
        "  {:<46} {:>14}",
        "DuckDB bulk load (no validation, no identity)",
        fmt_int(duck_rate as u64)
    );
    println!("  Cohort / DuckDB = {:.3}", cohort_rate / duck_rate);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bench lookup

/// Requests allowed in flight at once; a request waiting for a slot is still timed from its
/// scheduled start, so the cap bounds sockets without hiding queueing.
const MAX_IN_FLIGHT: usize = 256;
const EVENTS_PER_PROFILE: usize = 5;

pub(crate) async fn lookup(args: BenchLookupArgs) -> anyhow::Result<()> {
    if args.profiles == 0 || args.rate == 0 || args.seconds == 0 {
        bail!("--profiles, --rate and --seconds must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("cohort-bench-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let admin_key = format!("ck_bench_{:032x}", rand::rng().random::<u128>());
    let refresh = Duration::from_secs(args.segment_refresh_secs);
    let server = start_server(
        dir.path(),
        Durability::Normal,
        Some(admin_key.clone()),
        |config| config.engine.segment_refresh = refresh,
    )
    .await?;
    let store = server.state().store().clone();
    let write_key = create_source(&store, "bench").await?;
    print_machine();

    let client_rt = client_runtime()?;
    println!(
        "Loading {} customers ({} events each) through /v1/batch …",
        fmt_int(args.profiles as u64),
        EVENTS_PER_PROFILE
    );
    let load_started = Instant::now();
    let bodies = profile_bodies(args.profiles)?;
    client_rt
        .spawn(post_all(
            format!("http://{}/v1/batch", server.addr()),
            write_key,
            bodies.into(),
            8,
        ))
        .await
        .context("the loader stopped")??;
    let applied = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.wait_processed(Duration::from_secs(3600))).await?
    };
    if !applied {
        bail!("processing the profiles did not finish within an hour");
    }
    let totals = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.profiles().totals()).await??
    };
    println!(
        "Loaded and processed in {:.1} s: {} customers, {} events.",
        load_started.elapsed().as_secs_f64(),
        fmt_int(totals.customers.max(0) as u64),
        fmt_int(totals.events.max(0) as u64)
    );

    let client = cohort_demo::send::http_client()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let plan = LoadPlan {
        base: format!("http://{}/api/v1/profiles/user_id/bench-u", server.addr()),
        admin_key,
        profiles: args.profiles,
        rate: args.rate,
    };
    if !args.cold {
        // The steady state of a service whose customers have all been looked up before.
        let started = Instant::now();
        client_rt
            .spawn(get_all(client.clone(), plan.clone(), 8))
            .await
            .context("the profile reader stopped")??;
        println!(
            "Read every profile once in {:.1} s, so lookups find them in memory (--cold skips this).",
            started.elapsed().as_secs_f64()
        );
    }
    // Opens connections and warms caches; its samples are dropped.
    let warm_up = Duration::from_secs(1);
    println!(
        "Warming up for {} s at {} req/s (not measured) …",
        warm_up.as_secs(),
        fmt_int(args.rate)
    );
    run_open_loop(&client_rt, &client, &plan, warm_up).await?;

    println!(
        "Measuring for {} s at a target of {} req/s …",
        args.seconds,
        fmt_int(args.rate)
    );
    let cpu_start = thread_cpu();
    let measured = run_open_loop(
        &client_rt,
        &client,
        &plan,
        Duration::from_secs(args.seconds),
    )
    .await?;
    let cpu_end = thread_cpu();

    println!();
    println!(
        "Profile lookup: GET /api/v1/profiles/user_id/bench-u{{random}} over {} customers, open loop",
        fmt_int(args.profiles as u64)
    );
    println!(
        "  scheduled {} requests at {} req/s; completed {} ({} not 200) in {:.2} s: achieved {} req/s",
        fmt_int(measured.scheduled),
        fmt_int(args.rate),
        fmt_int(measured.samples.len() as u64),
        fmt_int(measured.errors),
        measured.elapsed.as_secs_f64(),
        fmt_int((measured.samples.len() as f64 / measured.elapsed.as_secs_f64()) as u64)
    );
    if measured.samples.len() as u64 != measured.scheduled {
        println!(
            "  {} requests had no answer within the grace period after the run",
            fmt_int(measured.scheduled - measured.samples.len() as u64)
        );
    }
    let from_schedule: Vec<u64> = measured.samples.iter().map(|s| s.from_schedule).collect();
    let service: Vec<u64> = measured.samples.iter().map(|s| s.service).collect();
    println!(
        "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "p50", "p90", "p99", "p99.9", "max"
    );
    print_latency_row("from scheduled start (CO-free)", from_schedule);
    print_latency_row("from actual send (service time)", service);
    print_slowest_seconds(&measured.samples, 2_000_000);
    print_cpu_table(&[("measured run", &cpu_start, &cpu_end, measured.elapsed)]);
    let server_ns: u64 = cpu_end
        .iter()
        .filter(|(key, _)| describe_thread(&key.1).starts_with("server"))
        .map(|(key, (ns, _))| ns.saturating_sub(cpu_start.get(key).map_or(0, |v| v.0)))
        .sum();
    if !measured.samples.is_empty() {
        let us = server_ns as f64 / 1e3 / measured.samples.len() as f64;
        println!(
            "  server CPU per request: {us:.0} µs, so one free core serves at most ~{} req/s",
            fmt_int((1e6 / us.max(1e-9)) as u64)
        );
    }
    println!(
        "  peak RSS of this process (server + load generator): {}",
        peak_rss()
    );

    client_rt.shutdown_background();
    server.shutdown().await.context("stopping the server")?;
    Ok(())
}

/// Each customer: an identify with traits, then a few track events so the profile has computed
/// traits to assemble (a lookup of an empty profile would flatter the latency).
fn profile_bodies(profiles: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut messages = Vec::with_capacity(profiles * EVENTS_PER_PROFILE);
    for i in 0..profiles {
        let user = format!("bench-u{i}");
        let plan = ["free", "pro", "team"][i % 3];
        messages.push(json!({
            "type": "identify", "userId": user, "messageId": format!("{user}-identify"),
            "traits": {"email": format!("{user}@example.com"), "name": format!("Bench User {i}"),
                       "plan": plan},
        }));
        for (k, event) in [
            "Product Viewed",
            "Product Added",
            "Checkout Started",
            "Order Completed",
        ]
        .iter()
        .enumerate()
        .take(EVENTS_PER_PROFILE - 1)
        {
            messages.push(json!({
                "type": "track", "userId": user, "event": event, "messageId": format!("{user}-{k}"),
                "properties": {"product_id": format!("p{}", i % 97), "price": 19.9, "revenue": 19.9, "currency": "CNY"},
            }));
        }
    }
    messages
        .chunks(100)
        .map(|chunk| Ok(serde_json::to_vec(&json!({ "batch": chunk }))?))
        .collect()
}

#[derive(Clone)]
struct LoadPlan {
    base: String,
    admin_key: String,
    profiles: usize,
    rate: u64,
}

struct Sample {
    /// Whole seconds from the run's start to the scheduled start: which second it belongs to.
    second: u32,
    /// Nanoseconds from the scheduled start to the end of the response body.
    from_schedule: u64,
    /// Nanoseconds from the moment the request was handed to the client to the end of the body.
    service: u64,
}

struct OpenLoopResult {
    scheduled: u64,
    samples: Vec<Sample>,
    errors: u64,
    elapsed: Duration,
}

/// Issues requests on a fixed timeline (request i at `start + i / rate`) from a dedicated OS
/// thread, which sleeps more precisely than Tokio's millisecond timer; a late dispatcher sends at
/// once and the lateness counts towards latency.
async fn run_open_loop(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    plan: &LoadPlan,
    duration: Duration,
) -> anyhow::Result<OpenLoopResult> {
    let total = plan.rate.saturating_mul(duration.as_secs()).max(1);
    let interval_ns = 1e9 / plan.rate as f64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Sample, bool)>();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let handle = rt.handle().clone();
    let (client, base, key, profiles) = (
        client.clone(),
        plan.base.clone(),
        plan.admin_key.clone(),
        plan.profiles,
    );
    let start = Instant::now();
    let dispatcher = std::thread::Builder::new()
        .name(CLIENT_THREAD.into())
        .spawn(move || {
            let mut rng = rand::rng();
            for i in 0..total {
                let scheduled = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let url = format!("{base}{}", rng.random_range(0..profiles));
                let (client, key, tx, slots) =
                    (client.clone(), key.clone(), tx.clone(), slots.clone());
                handle.spawn(async move {
                    let Ok(_slot) = slots.acquire_owned().await else {
                        return;
                    };
                    let sent = Instant::now();
                    let ok = match client.get(&url).bearer_auth(&key).send().await {
                        Ok(resp) => {
                            let status = resp.status();
                            resp.bytes().await.is_ok() && status.is_success()
                        }
                        Err(_) => false,
                    };
                    let done = Instant::now();
                    let sample = Sample {
                        second: scheduled.saturating_duration_since(start).as_secs() as u32,
                        from_schedule: done.saturating_duration_since(scheduled).as_nanos() as u64,
                        service: done.saturating_duration_since(sent).as_nanos() as u64,
                    };
                    let _ = tx.send((sample, ok));
                });
            }
        })
        .context("starting the dispatcher thread")?;

    let mut samples = Vec::with_capacity(total as usize);
    let mut errors = 0u64;
    let mut last = start;
    // A server that stops answering must not hang the benchmark: wait a bounded time past the end.
    let deadline = tokio::time::Instant::from_std(start + duration + Duration::from_secs(30));
    while (samples.len() as u64) < total {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((sample, ok))) => {
                if !ok {
                    errors += 1;
                }
                samples.push(sample);
                last = Instant::now();
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
    Ok(OpenLoopResult {
        scheduled: total,
        samples,
        errors,
        elapsed: last.saturating_duration_since(start),
    })
}

/// The seconds of the run with the most slow requests: whether the tail is spread evenly or comes
/// in bursts, and when (a burst every minute points at the segment time refresh).
fn print_slowest_seconds(samples: &[Sample], slow_ns: u64) {
    let mut per_second: std::collections::BTreeMap<u32, (u64, u64, u64)> = Default::default();
    for s in samples {
        let entry = per_second.entry(s.second).or_default();
        entry.0 += 1;
        if s.from_schedule > slow_ns {
            entry.1 += 1;
        }
        entry.2 = entry.2.max(s.from_schedule);
    }
    let slow_total: u64 = per_second.values().map(|v| v.1).sum();
    let mut worst: Vec<_> = per_second.into_iter().filter(|(_, v)| v.1 > 0).collect();
    let seconds_with_slow = worst.len();
    worst.sort_by_key(|(second, v)| (std::cmp::Reverse(v.1), *second));
    println!(
        "  requests over {:.0} ms: {} in {} of the run's seconds; the worst seconds (from the start):",
        slow_ns as f64 / 1e6,
        fmt_int(slow_total),
        seconds_with_slow
    );
    for (second, (count, slow, max)) in worst.into_iter().take(8) {
        println!(
            "    second {second:>4}: {slow:>6} of {count:>6} over, max {:.1} ms",
            max as f64 / 1e6
        );
    }
}

fn print_latency_row(label: &str, mut nanos: Vec<u64>) {
    if nanos.is_empty() {
        println!("  {label:<34} (no samples)");
        return;
    }
    nanos.sort_unstable();
    let ms = |q: f64| {
        // Nearest-rank percentile: the smallest sample with at least q of the samples at or below it.
        let rank = ((q * nanos.len() as f64).ceil() as usize).clamp(1, nanos.len());
        nanos[rank - 1] as f64 / 1e6
    };
    println!(
        "  {label:<34} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(0.999),
        ms(1.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

async fn start_server(
    dir: &Path,
    durability: Durability,
    admin_key: Option<String>,
    tune: impl FnOnce(&mut ServerConfig),
) -> anyhow::Result<RunningServer> {
    let listen: SocketAddr = "127.0.0.1:0".parse().context("loopback address")?;
    let mut config = ServerConfig::new(dir, listen);
    config.engine.store.durability = durability;
    tune(&mut config);
    // Without an operator key the server would mint and print one; a random one keeps output quiet.
    config.admin_key = Some(
        admin_key.unwrap_or_else(|| format!("ck_bench_{:032x}", rand::rng().random::<u128>())),
    );
    let server = start(config)
        .await
        .context("starting the in-process server")?;
    println!(
        "In-process server on http://{} (data in {}, durability {durability:?})",
        server.addr(),
        dir.display()
    );
    Ok(server)
}

async fn create_source(store: &Store, name: &str) -> anyhow::Result<String> {
    let (store, name) = (store.clone(), name.to_string());
    let (_, key) =
        tokio::task::spawn_blocking(move || store.catalog().create_source(&name)).await??;
    Ok(key)
}

pub(crate) fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLIENT_WORKERS)
        .max_blocking_threads(1)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")
}

/// A plain GET without the bench's connection pool (used once, for `/metrics`).
async fn fetch_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let resp = cohort_demo::send::http_client()
        .build()?
        .get(format!("http://{addr}{path}"))
        .send()
        .await?;
    Ok(resp.error_for_status()?.text().await?)
}

/// Sum and count of the store's stage histograms, to show where the time went.
fn print_stage_metrics(text: &str, ack: Duration, e2e: Duration) {
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    };
    let quantile = |name: &str, q: &str| value(&format!("{name}{{quantile=\"{q}\"}}"));
    println!("  stage timings from /metrics:");
    for (name, what, wall) in [
        (
            "cohort_inbox_commit_seconds",
            "inbox group commits (one writer thread)",
            ack,
        ),
        (
            "cohort_apply_batch_seconds",
            "processor apply batches (one thread)",
            e2e,
        ),
    ] {
        let (Some(sum), Some(count)) = (
            value(&format!("{name}_sum")),
            value(&format!("{name}_count")),
        ) else {
            println!("    {what}: not reported");
            continue;
        };
        // The exporter's quantiles cover a sliding window; after a long drain it has emptied and
        // reports 0, which would read as "instant".
        let fmt_q = |q: &str| match quantile(name, q) {
            Some(v) if v > 0.0 => format!("{:.2}", v * 1e3),
            _ => "-".to_string(),
        };
        println!(
            "    {what}: {} of them, {sum:.2} s in total ({:.0}% of the {} wall time), mean {:.2} ms, recent p50 {} ms, p99 {} ms",
            fmt_int(count as u64),
            100.0 * sum / wall.as_secs_f64(),
            if wall == ack { "ack" } else { "end-to-end" },
            if count > 0.0 { 1e3 * sum / count } else { 0.0 },
            fmt_q("0.5"),
            fmt_q("0.99"),
        );
    }
}

/// Per thread name and phase: CPU time and run-queue wait, as % of one core over the phase.
fn print_cpu_table(phases: &[(&str, &CpuSnapshot, &CpuSnapshot, Duration)]) {
    if phases.iter().all(|(_, a, _, _)| a.is_empty()) {
        return;
    }
    const ALL: &str = "all threads";
    let mut names: Vec<String> = Vec::new();
    let mut per_phase: Vec<HashMap<String, (u64, u64)>> = Vec::new();
    for (_, before, after, _) in phases {
        let mut by_name: HashMap<String, (u64, u64)> = HashMap::new();
        for (key, (cpu_end, wait_end)) in after.iter() {
            let (cpu_begin, wait_begin) = before.get(key).copied().unwrap_or((0, 0));
            let slot = by_name.entry(key.1.clone()).or_default();
            slot.0 += cpu_end.saturating_sub(cpu_begin);
            slot.1 += wait_end.saturating_sub(wait_begin);
        }
        let total = by_name
            .values()
            .fold((0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1));
        for name in by_name.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        by_name.insert(ALL.to_string(), total);
        per_phase.push(by_name);
    }
    let busy = |n: &String| -> u64 {
        per_phase
            .iter()
            .map(|p| p.get(n).map_or(0, |v| v.0 + v.1))
            .sum()
    };
    // Busiest threads first; threads that barely ran are noise.
    names.sort_by_key(|n| std::cmp::Reverse(busy(n)));
    names.retain(|n| busy(n) >= 10_000_000);
    names.push(ALL.to_string());
    print!("  {:<32}", "thread (% of one core)");
    for (label, ..) in phases {
        print!(" {:>22}", format!("{label}: cpu / waiting"));
    }
    println!();
    for name in &names {
        print!("    {:<30}", describe_thread(name));
        for ((_, _, _, wall), by_name) in phases.iter().zip(&per_phase) {
            let (cpu, wait) = by_name.get(name).copied().unwrap_or((0, 0));
            let pct = |ns: u64| 100.0 * ns as f64 / 1e9 / wall.as_secs_f64().max(1e-9);
            print!(" {:>22}", format!("{:.0}% / {:.0}%", pct(cpu), pct(wait)));
        }
        println!();
    }
    println!(
        "    ({} cores, so {}% cpu is everything; \"waiting\" is time runnable but not on a core)",
        cores(),
        100 * cores()
    );
}

/// CPU time per event by stage: unlike wall time, this does not depend on what else the machine
/// is doing, so it gives the ceiling of each single-threaded stage on one free core.
fn print_cpu_per_event(before: &CpuSnapshot, after: &CpuSnapshot, events: usize) {
    // Each thread counts for its own stage: the segment engine and the lake threads are not
    // request handling, though they run beside it.
    let mut by_stage: HashMap<String, u64> = HashMap::new();
    for (key, (cpu_end, _)) in after {
        let begin = before.get(key).map_or(0, |v| v.0);
        let stage = match describe_thread(&key.1) {
            server if server == SERVER_THREADS => {
                "HTTP + validation (async + blocking pool)".into()
            }
            other => other,
        };
        *by_stage.entry(stage).or_default() += cpu_end.saturating_sub(begin);
    }
    let per_event = |ns: u64| ns as f64 / 1e3 / events.max(1) as f64;
    println!("  CPU per event (µs) and the rate one free core could sustain for that stage:");
    let mut stages: Vec<_> = by_stage.into_iter().collect();
    stages.sort_by_key(|(_, ns)| std::cmp::Reverse(*ns));
    // Threads idle through the run (bench orchestration, lake queries) would only add noise.
    for (stage, ns) in stages.into_iter().filter(|(_, ns)| per_event(*ns) >= 0.05) {
        let us = per_event(ns);
        println!(
            "    {stage:<44} {us:>8.1} µs  → {:>12} events/s per core",
            if us > 0.0 {
                fmt_int((1e6 / us) as u64)
            } else {
                "-".into()
            }
        );
    }
}

/// What the thread table calls the server's Tokio threads.
const SERVER_THREADS: &str = "server: async + blocking pool";

fn describe_thread(comm: &str) -> String {
    match comm {
        // Tokio's default worker name, cut to 15 bytes by the kernel (it changed across versions).
        "tokio-runtime-w" | "tokio-rt-worker" => SERVER_THREADS.into(),
        CLIENT_THREAD => "load generator".into(),
        "cohort-inbox" => "inbox writer".into(),
        "cohort-processo" => "processor".into(),
        other if other == main_thread_name() => "main (bench orchestration)".into(),
        other => other.into(),
    }
}

/// The main thread carries the executable's name (at most 15 bytes, as the kernel keeps it).
fn main_thread_name() -> String {
    let name = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    name.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_hold_every_event_once() {
        let bodies = build_bodies(250, 100, 3, None).unwrap();
        assert_eq!(bodies.len(), 3);
        let count: usize = bodies
            .iter()
            .map(|b| {
                serde_json::from_slice::<Value>(b).unwrap()["batch"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(count, 250);
    }
}
