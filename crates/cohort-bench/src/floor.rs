//! `cohort bench ingest`'s floor: the same request bodies, the same load generator and the same
//! connections, sent to servers that do strictly less than Cohort does. Each level adds one piece
//! of work that any Segment-compatible endpoint with durable acknowledgement cannot skip:
//!
//! 1. receive: read the request body and answer 200;
//! 2. split: also check the JSON and cut the batch into its messages (borrowed, nothing copied);
//! 3. durable append: also append the body to a file and answer only after a group `fdatasync`.
//!
//! What these servers reach on this machine is a ceiling for any design of the write path here,
//! before identity, profiles, stored events, the lake and segments are paid for. Printed next to
//! Cohort's own figures from the same run, it shows how much of the gap is the product's work.

use crate::ingest::{CLIENT_THREAD, client_runtime, post_all};
use crate::machine::{CpuSnapshot, fmt_int, thread_cpu};
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What one floor server does with each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Receive,
    Split,
    DurableAppend,
}

impl Level {
    const ALL: [Level; 3] = [Level::Receive, Level::Split, Level::DurableAppend];

    fn label(self) -> &'static str {
        match self {
            Level::Receive => "receive the body, answer 200",
            Level::Split => "+ check JSON, split into messages",
            Level::DurableAppend => "+ append to a file, group fdatasync",
        }
    }
}

/// One group commit's request: the body to append and where to say it is on disk.
type Append = (Bytes, oneshot::Sender<std::io::Result<()>>);

#[derive(Clone)]
struct FloorState {
    level: Level,
    appends: Option<mpsc::Sender<Append>>,
}

/// The borrowed shape of a `/v1/batch` body: every message is checked as JSON but not built.
#[derive(Deserialize)]
struct BorrowedBatch<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

async fn handle(State(state): State<FloorState>, body: Bytes) -> (StatusCode, String) {
    let mut messages = 0usize;
    if state.level != Level::Receive {
        match serde_json::from_slice::<BorrowedBatch>(&body) {
            Ok(parsed) => messages = parsed.batch.len(),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"code": "invalid_json", "message": e.to_string()})
                        .to_string(),
                );
            }
        }
    }
    if let Some(appends) = &state.appends {
        let (done, written) = oneshot::channel();
        let appended = match appends.send((body, done)) {
            Ok(()) => written.await.ok().and_then(Result::ok).is_some(),
            Err(_) => false,
        };
        if !appended {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"code":"unavailable","message":"the append failed"}"#.into(),
            );
        }
    }
    // The load generator counts `accepted`; the receive-only level cannot know it.
    (StatusCode::OK, format!(r#"{{"accepted":{messages}}}"#))
}

/// The group-commit writer: takes every append that is waiting, writes them, syncs once, answers.
fn append_loop(path: &Path, requests: mpsc::Receiver<Append>) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        group.extend(requests.try_iter());
        let written = group
            .iter()
            .try_for_each(|(body, _)| out.write_all(body))
            .and_then(|()| out.flush())
            .and_then(|()| out.get_ref().sync_data());
        let failed = written.as_ref().err().map(|e| e.kind());
        for (_, done) in group {
            let _ = done.send(match failed {
                None => Ok(()),
                Some(kind) => Err(kind.into()),
            });
        }
        written?;
    }
    Ok(())
}

struct FloorRun {
    level: Level,
    elapsed: Duration,
    accepted: u64,
    server_cpu_ns: u64,
    client_cpu_ns: u64,
}

/// Runs every level over `bodies` and prints the table; `cohort` is Cohort's own (ack, end-to-end)
/// rate from the same run.
pub(crate) async fn run(
    dir: &Path,
    bodies: Arc<[Vec<u8>]>,
    events: usize,
    concurrency: usize,
    cohort: (f64, f64),
) -> anyhow::Result<()> {
    println!();
    println!(
        "Floor: the same requests to servers that do less than Cohort (same load generator) …"
    );
    let mut runs = Vec::new();
    for level in Level::ALL {
        runs.push(run_level(dir, level, bodies.clone(), concurrency).await?);
    }
    let n = events as f64;
    println!(
        "  {:<44} {:>12} {:>14} {:>14}",
        "server", "events/s", "server µs/ev", "client µs/ev"
    );
    for run in &runs {
        if run.level != Level::Receive && run.accepted != events as u64 {
            anyhow::bail!(
                "the floor server at level {:?} accepted {} of {} events",
                run.level,
                run.accepted,
                events
            );
        }
        println!(
            "  {:<44} {:>12} {:>14.2} {:>14.2}",
            run.level.label(),
            fmt_int((n / run.elapsed.as_secs_f64()) as u64),
            run.server_cpu_ns as f64 / 1e3 / n,
            run.client_cpu_ns as f64 / 1e3 / n,
        );
    }
    let (ack_rate, e2e_rate) = cohort;
    println!(
        "  {:<44} {:>12}",
        "Cohort, acknowledged (from the run above)",
        fmt_int(ack_rate as u64)
    );
    println!(
        "  {:<44} {:>12}",
        "Cohort, end-to-end (from the run above)",
        fmt_int(e2e_rate as u64)
    );
    Ok(())
}

async fn run_level(
    dir: &Path,
    level: Level,
    bodies: Arc<[Vec<u8>]>,
    concurrency: usize,
) -> anyhow::Result<FloorRun> {
    let (appends, writer) = if level == Level::DurableAppend {
        let (tx, rx) = mpsc::channel::<Append>();
        let path = dir.join("floor-append.log");
        let writer = std::thread::Builder::new()
            .name("floor-append".into())
            .spawn(move || append_loop(&path, rx))
            .context("starting the floor's append thread")?;
        (Some(tx), Some(writer))
    } else {
        (None, None)
    };
    let app = Router::new()
        .route("/v1/batch", post(handle))
        // Bodies are at most Segment's 500 KB; axum's 2 MB default is never the limit here.
        .with_state(FloorState { level, appends });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the floor server")?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let client_rt = client_runtime()?;
    let url = format!("http://{addr}/v1/batch");
    let before = thread_cpu();
    let started = Instant::now();
    let outcome = client_rt
        .spawn(post_all(url, "floor".into(), bodies, concurrency))
        .await
        .context("the load generator stopped")??;
    let elapsed = started.elapsed();
    let after = thread_cpu();
    client_rt.shutdown_background();
    let _ = stop.send(());
    server
        .await
        .context("the floor server panicked")?
        .context("the floor server failed")?;
    if let Some(writer) = writer {
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the floor's append thread panicked"))?
            .context("appending to the floor's file")?;
    }
    let (server_cpu_ns, client_cpu_ns) = split_cpu(&before, &after);
    Ok(FloorRun {
        level,
        elapsed,
        accepted: outcome.accepted,
        server_cpu_ns,
        client_cpu_ns,
    })
}

/// CPU spent between two snapshots: (everything but the load generator, the load generator).
fn split_cpu(before: &CpuSnapshot, after: &CpuSnapshot) -> (u64, u64) {
    let mut server = 0;
    let mut client = 0;
    for (key, (end, _)) in after {
        let spent = end.saturating_sub(before.get(key).map_or(0, |v| v.0));
        if key.1 == CLIENT_THREAD {
            client += spent;
        } else {
            server += spent;
        }
    }
    (server, client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commit_writes_every_body_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let (tx, rx) = mpsc::channel::<Append>();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || append_loop(&path, rx))
        };
        let mut acks = Vec::new();
        for body in ["a", "bb", "ccc"] {
            let (done, ack) = oneshot::channel();
            tx.send((Bytes::from(body), done)).expect("writer alive");
            acks.push(ack);
        }
        for ack in acks {
            ack.blocking_recv().expect("answered").expect("written");
        }
        drop(tx);
        writer.join().expect("no panic").expect("no I/O error");
        assert_eq!(std::fs::read_to_string(&path).expect("log"), "abbccc");
    }

    #[test]
    fn cpu_is_split_between_server_and_load_generator() {
        let before: CpuSnapshot = [
            ((1, CLIENT_THREAD.to_string()), (100, 0)),
            ((2, "tokio-rt-worker".to_string()), (1_000, 0)),
        ]
        .into();
        let after: CpuSnapshot = [
            ((1, CLIENT_THREAD.to_string()), (150, 0)),
            ((2, "tokio-rt-worker".to_string()), (1_300, 0)),
            // A thread that started during the run counts from zero.
            ((3, "floor-append".to_string()), (70, 0)),
        ]
        .into();
        assert_eq!(split_cpu(&before, &after), (370, 50));
    }
}
