//! Command-line definitions. Every command's `--help` ends with an example.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "cohort", version, about = "Cohort: collect, unify, analyse and act on customer data in one binary")]
pub struct Cli {
    /// Log as JSON lines instead of text (logs go to stderr; level via COHORT_LOG, e.g. `debug`).
    #[arg(long, global = true, env = "COHORT_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: Segment-compatible ingest, processing, admin and profile API.
    #[command(after_help = "Example:\n  COHORT_ADMIN_KEY=ck_secret cohort serve --data ./cohort-data --listen 0.0.0.0:8080")]
    Serve(ServeArgs),
    /// Generate a realistic e-commerce and app dataset and send it through the HTTP API.
    #[command(after_help = "Examples:\n  cohort demo --customers 2000 --days 90          # start a server with demo data and keep serving\n  cohort demo --target http://127.0.0.1:8080 --write-key wk_...   # send to a running server")]
    Demo(DemoArgs),
    /// Administer sources, keys, failed events and profiles (works on the data directory directly).
    #[command(after_help = "Examples:\n  cohort admin --data ./cohort-data source create web --json\n  cohort admin failed list --source web\n  cohort admin failed replay --all")]
    Admin(AdminArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "COHORT_DATA", default_value = "./cohort-data")]
    pub data: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Address to listen on.
    #[arg(long, env = "COHORT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// An admin API key to accept (in addition to keys created with `cohort admin key create`).
    #[arg(long, env = "COHORT_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// `full` fsyncs every commit (survives power loss); `normal` survives process crashes only.
    #[arg(long, env = "COHORT_DURABILITY", default_value = "full", value_parser = ["full", "normal"])]
    pub durability: String,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Customers to generate.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Days of history, ending today.
    #[arg(long, default_value_t = 60)]
    pub days: u32,
    /// Random seed: the same seed gives the same dataset.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Send to this running server instead of starting one.
    #[arg(long, requires = "write_key")]
    pub target: Option<String>,
    /// Write key of the source to send to (with --target).
    #[arg(long, env = "COHORT_WRITE_KEY", hide_env_values = true)]
    pub write_key: Option<String>,
    /// Exit after loading instead of serving.
    #[arg(long)]
    pub exit: bool,
    /// Parallel HTTP requests.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Sources and their write keys.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Admin API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The failed-events store.
    #[command(subcommand)]
    Failed(FailedCommand),
    /// A customer's profile by any identifier.
    #[command(after_help = "Example:\n  cohort admin profile email ada@example.org --json")]
    Profile {
        /// Identifier kind: user_id, anonymous_id, email, phone, customer_id or a custom kind.
        kind: String,
        value: String,
    },
    /// Totals: customers, events, identities, merges, failed events, inbox lag.
    Stats,
}

#[derive(Subcommand, Debug, Clone)]
pub enum SourceCommand {
    /// Create a source; its write key is printed once.
    #[command(after_help = "Example:\n  cohort admin source create web --json")]
    Create { name: String },
    /// List sources.
    List,
    /// Set (or with --clear remove) a source's tracking plan from a JSON file.
    #[command(after_help = "Example:\n  cohort admin source tracking-plan web plan.json\n\nplan.json: {\"mode\": \"block\", \"unplanned\": \"flag\", \"events\": {\"Order Completed\": {\"type\": \"object\", \"required\": [\"revenue\"]}}}")]
    TrackingPlan {
        source: String,
        file: Option<PathBuf>,
        #[arg(long, conflicts_with = "file")]
        clear: bool,
    },
    /// Set a source's normalisation rules from a JSON file.
    #[command(after_help = "Example:\n  cohort admin source normalisation web rules.json\n\nrules.json: {\"default_phone_region\": \"US\", \"default_currency\": \"USD\"}")]
    Normalisation { source: String, file: PathBuf },
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeyCommand {
    /// Create an admin API key; printed once.
    #[command(after_help = "Example:\n  cohort admin key create ops --json")]
    Create { name: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum FailedCommand {
    /// List failed events.
    #[command(after_help = "Example:\n  cohort admin failed list --source web --code tracking_plan_violation")]
    List {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        code: Option<String>,
        /// Only events not replayed yet.
        #[arg(long)]
        pending: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Replay failed events through their source's current rules.
    #[command(after_help = "Examples:\n  cohort admin failed replay 42\n  cohort admin failed replay --all --source web")]
    Replay {
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        code: Option<String>,
    },
}
