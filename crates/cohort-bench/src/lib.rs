//! `cohort bench …`: measurements of this build on this machine, each printed beside a peer
//! doing the same work where there is one (DuckDB, servers that do strictly less than Cohort).
//!
//! - `ingest` ([`BenchIngestArgs`]): HTTP ingest throughput, acknowledged and fully applied,
//!   with a floor of servers that only receive, split and durably append.
//! - `lookup` ([`BenchLookupArgs`]): profile-lookup latency under an open-loop load.
//! - `analytics` ([`BenchAnalyticsArgs`]): segment, funnel, retention, RFM and k-means times on
//!   data from [`cohort_demo::lake`], side by side with DuckDB over the same Parquet files.
//! - `experiments` ([`BenchExperimentsArgs`]): flag assignments per second beside GrowthBook's
//!   JavaScript and Python SDKs, and an experiment's report over data from
//!   [`cohort_demo::experiment_lake`] beside DuckDB plus gbstats.
//! - `journeys` ([`BenchJourneysArgs`]): a million customers leaving one delay at once: timer
//!   firings, delivery rules and renders per second, SMS sends to a loopback Twilio stand-in
//!   beside a floor that only posts the same requests, memory per waiting customer.
//!
//! The binary embeds [`BenchCommand`] as its `bench` subcommand and hands the parsed command to
//! [`run`], inside a Tokio runtime:
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(subcommand)]
//!     bench: cohort_bench::BenchCommand,
//! }
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let cli = Cli::parse_from(["cohort-bench", "lookup", "--profiles", "1000", "--seconds", "5"]);
//! cohort_bench::run(cli.bench).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Everything printed is measured; nothing here judges the numbers.

mod analytics;
mod experiments;
mod floor;
mod ingest;
mod journeys;
mod machine;

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Runs one `cohort bench` command to the end, printing as it goes.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(args) => ingest::ingest(args).await,
        BenchCommand::Lookup(args) => ingest::lookup(args).await,
        BenchCommand::Analytics(args) => analytics::run(args).await,
        BenchCommand::Experiments(args) => experiments::run(args).await,
        BenchCommand::Journeys(args) => journeys::run(args).await,
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// Ingest throughput: POST pre-built batches over HTTP and time acks and processing.
    #[command(
        after_help = "Example:\n  cohort bench ingest --events 200000 --concurrency 8 --durability normal"
    )]
    Ingest(BenchIngestArgs),
    /// Profile-lookup latency under an open-loop load at a fixed request rate.
    #[command(
        after_help = "Example:\n  cohort bench lookup --profiles 10000 --rate 10000 --seconds 10"
    )]
    Lookup(BenchLookupArgs),
    /// Segment, funnel, retention, RFM and k-means times on generated Parquet data, side by side
    /// with DuckDB running the equivalent SQL over the same files.
    #[command(
        after_help = "Examples:\n  cohort bench analytics --customers 100000 --events 5000000 --data ./bench-data\n  cohort bench analytics --python ~/.venv/bin/python --repeat 5   # 1M customers, 50M events\n\nThe data is generated once into --data and reused while --customers, --events and\n--seed stay the same. DuckDB runs in `PYTHON -c` (pip install duckdb; scikit-learn\nadds a k-means reference)."
    )]
    Analytics(BenchAnalyticsArgs),
    /// Flag assignments per second beside GrowthBook's JavaScript and Python SDKs, and an
    /// experiment's report over generated exposures beside DuckDB plus gbstats.
    #[command(
        after_help = "Examples:\n  cohort bench experiments --python ~/.cache/cohort/venv/bin/python --data ./bench-exp   # 10M customers\n  cohort bench experiments --only assignment --ids 1000000\n  cohort bench experiments --only report --customers 1000000 --data ./bench-exp-1m --repeat 5\n\nThe data is generated once into --data and reused while --customers and --seed stay\nthe same. The peers need Node.js with @growthbook/growthbook (--growthbook-js) and a\nPython with growthbook, duckdb and gbstats (pip install growthbook duckdb gbstats)."
    )]
    Experiments(BenchExperimentsArgs),
    /// Customers leaving one delay at once: timer firings, delivery rules and Liquid renders per
    /// second, SMS sends to a loopback Twilio stand-in beside a floor that only posts the same
    /// requests, and memory per waiting customer.
    #[command(
        after_help = "Examples:\n  cohort bench journeys                       # 1,000,000 customers\n  cohort bench journeys --customers 100000 --concurrency 32 --floor-first\n\nThe state is SQLite in a temporary directory; both stand-ins run in this process on\nloopback."
    )]
    Journeys(BenchJourneysArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchJourneysArgs {
    /// Customers waiting in the delay (each gets one SMS).
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: usize,
    /// Most due entries one `fire_due` call takes.
    #[arg(long, default_value_t = 1_000)]
    pub fire_batch: usize,
    /// Requests in flight at once, for the sends and for the floor.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// State store durability: `normal` fsyncs at checkpoints, `full` on every commit (each
    /// move is a commit: about 0.7 ms of fsync each on these machines' disks).
    #[arg(long, default_value = "normal", value_parser = ["full", "normal"])]
    pub durability: String,
    /// Run the floor before the sends (default: after), to alternate them across runs.
    #[arg(long)]
    pub floor_first: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchExperimentsArgs {
    /// Customers to generate for the report, each exposed to the experiment.
    #[arg(long, default_value_t = 10_000_000)]
    pub customers: usize,
    /// Directory for the generated data, kept and reused when it already holds data of the same
    /// --customers and --seed. Default: a temporary directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep the temporary data directory (a --data directory is always kept).
    #[arg(long)]
    pub keep: bool,
    /// Units to assign in Cohort and the JavaScript SDK (IDs u1, u2, …).
    #[arg(long, default_value_t = 2_000_000)]
    pub ids: usize,
    /// Units for the Python SDK, which is slower: the first of the same IDs.
    #[arg(long, default_value_t = 200_000)]
    pub python_ids: usize,
    /// Runs of every measurement; the median and the best are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run only these parts (comma-separated): assignment, report.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Python interpreter with the growthbook, duckdb and gbstats packages.
    #[arg(long, env = "COHORT_BENCH_PYTHON", default_value = "python3")]
    pub python: String,
    /// Node.js, for GrowthBook's JavaScript SDK.
    #[arg(long, default_value = "node")]
    pub node: String,
    /// The @growthbook/growthbook package directory.
    #[arg(
        long,
        default_value = "tests/clients/node/node_modules/@growthbook/growthbook"
    )]
    pub growthbook_js: PathBuf,
    /// Measure Cohort only: no SDKs, no DuckDB.
    #[arg(long)]
    pub no_peers: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchIngestArgs {
    /// Events to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Events per HTTP request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Store durability: `full` fsyncs every commit, `normal` at checkpoints.
    #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
    pub durability: String,
    /// Skip the DuckDB load comparison.
    #[arg(long)]
    pub no_duckdb: bool,
    /// Skip the floor: the same requests to servers that only receive, split, and durably append.
    #[arg(long)]
    pub no_floor: bool,
    /// Seed of the generated events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Most messages the processor applies in one transaction (default: the server's).
    #[arg(long)]
    pub apply_batch: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchAnalyticsArgs {
    /// Customers to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: usize,
    /// Events to aim at (the generator lands within a few percent).
    #[arg(long, default_value_t = 50_000_000)]
    pub events: usize,
    /// Directory for the generated data, kept and reused when it already holds data of the same
    /// --customers, --events and --seed. Default: a temporary directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep the temporary data directory (a --data directory is always kept).
    #[arg(long)]
    pub keep: bool,
    /// Skip the DuckDB side.
    #[arg(long)]
    pub no_duckdb: bool,
    /// Runs of each query per engine; the median and the best are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run only these queries (comma-separated ids: platinum, plan, event_json, event_column,
    /// two_orders_scan, two_orders_trait, funnel, funnel_sql, retention, retention_sql, rfm,
    /// kmeans; kmeans brings rfm, whose aggregates it clusters).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Python interpreter with the duckdb package.
    #[arg(long, env = "COHORT_BENCH_PYTHON", default_value = "python3")]
    pub python: String,
    /// First run this many time-refresh rounds as the server runs them (every built-in tag, one
    /// after another, in the background) and report each one's time and peak memory.
    #[arg(long, default_value_t = 0)]
    pub refresh_rounds: u32,
}

#[derive(Args, Debug, Clone)]
pub struct BenchLookupArgs {
    /// Customers to load before measuring.
    #[arg(long, default_value_t = 10_000)]
    pub profiles: usize,
    /// Target requests per second (open loop: requests follow a fixed schedule).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// How long to measure.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Measure with cold profiles: skip reading every profile once before the run, so the
    /// first lookup of each customer reads the database.
    #[arg(long)]
    pub cold: bool,
    /// Seconds between the server's time refreshes of segments (as `serve
    /// --segment-refresh-secs`); below --seconds, the run measures lookups during refreshes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub segment_refresh_secs: u64,
}
