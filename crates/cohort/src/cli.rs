//! Command-line definitions. Every command's `--help` ends with an example.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "cohort",
    version,
    about = "Cohort: collect, unify, analyse and act on customer data in one binary"
)]
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
    #[command(
        after_help = "Example:\n  COHORT_ADMIN_KEY=ck_secret cohort serve --data ./cohort-data --listen 0.0.0.0:8080"
    )]
    Serve(ServeArgs),
    /// Generate a realistic e-commerce and app dataset and send it through the HTTP API.
    #[command(
        after_help = "Examples:\n  cohort demo --customers 2000 --days 90          # start a server with demo data and keep serving\n  cohort demo --target http://127.0.0.1:8080 --write-key wk_...   # send to a running server"
    )]
    Demo(DemoArgs),
    /// Administer sources, keys, failed events and profiles (works on the data directory directly).
    #[command(
        after_help = "Examples:\n  cohort admin --data ./cohort-data source create web --json\n  cohort admin failed list --source web\n  cohort admin failed replay --all"
    )]
    Admin(AdminArgs),
    /// Measure ingest throughput and profile-lookup latency on this machine (in-process server).
    #[command(
        subcommand,
        after_help = "Examples:\n  cohort bench ingest --events 200000 --durability normal\n  cohort bench lookup --profiles 10000 --rate 10000 --seconds 10"
    )]
    Bench(cohort_bench::BenchCommand),
    /// Run read-only SQL over `events`, `profiles`, `profile_traits`, `identities`, `memberships`.
    #[command(
        after_help = "Examples:\n  cohort query \"SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY n DESC\"\n  cohort query \"SELECT * FROM profiles WHERE revenue_30d > 5000\" --format csv > platinum.csv\n  cohort query \"SELECT * FROM events WHERE date >= DATE '2026-11-01'\" --format parquet --output nov.parquet"
    )]
    Query(QueryArgs),
    /// Analyses: active customers, event trends, funnels, retention cohorts, revenue and orders.
    #[command(
        after_help = "Examples:\n  cohort analyse active --from 2026-01-01 --to 2026-04-01 --interval week --by-trait city\n  cohort analyse trends --event \"Product Viewed\" --event \"Order Completed\" --interval week\n  cohort analyse funnel --step \"Product Viewed\" --step \"Product Added\" --step \"Order Completed\" --window 7d\n  cohort analyse retention --first-event \"Signed Up\" --returning-event \"Order Completed\" --period week\n  cohort analyse revenue --interval month --by-property currency --json\n\nThe same analyses over HTTP: POST /api/v1/analyses/{active-customers,trends,funnel,retention,revenue}."
    )]
    Analyse(crate::analyse::AnalyseArgs),
    /// Define segments (typed JSON conditions) and list, export and follow their members.
    #[command(
        after_help = "Examples:\n  cohort segment create platinum --condition '{\"type\": \"and\", \"conditions\": [{\"type\": \"computed\", \"key\": \"revenue_30d\", \"op\": \"gt\", \"value\": 5000}, {\"type\": \"computed\", \"key\": \"last_seen\", \"op\": \"within_last\", \"value\": \"30d\"}]}'\n  cohort segment preview --condition @rule.json\n  cohort segment members platinum --limit 50\n  cohort segment export platinum --format parquet --output platinum.parquet\n  cohort segment history email ada@example.com"
    )]
    Segment(SegmentArgs),
    /// Rule-based tags on profiles (the same conditions as segments; 100+ ship built in).
    #[command(
        after_help = "Examples:\n  cohort tag list\n  cohort tag members lifecycle:loyal\n  cohort tag history user_id u-1001"
    )]
    Tag(SegmentArgs),
    /// Import historical Segment messages (NDJSON, JSON or CSV) into a data directory's inbox.
    #[command(
        after_help = "Examples:\n  cohort import --data ./cohort-data orders.csv --source shop\n  cohort import history.ndjson --source web --format ndjson\n  cohort import customers.parquet --source crm --rows profiles\n  cohort import transactions.csv --source shop --rows events --event \"Order Completed\"\n\nCSV columns: type (default track), event, userId, anonymousId, messageId, timestamp,\nand properties.X / traits.X / context.X for nested fields. Rejected rows go to the\nfailed-events store. A running `cohort serve` on the same directory processes the\nimport as it lands; otherwise import processes it before it returns."
    )]
    Import(ImportArgs),
    /// Score customers by recency, frequency and monetary value, name their RFM segment and cluster
    /// them (k-means); results go onto profiles as rfm_* traits, the report is printed and kept.
    #[command(
        after_help = "Examples:\n  cohort rfm --data ./cohort-data\n  cohort rfm --window-days 180 --k 4 --json > rfm.json\n  cohort rfm --as-of 2026-03-01\n\nThe same run over HTTP: POST /api/v1/rfm/run {\"window_days\": 365, \"k\": 5};\nthe latest report: GET /api/v1/rfm/report."
    )]
    Rfm(RfmArgs),
    /// Feature flags: define them (typed values; force, rollout and experiment rules;
    /// prerequisites), list their versions, and evaluate them for a customer.
    #[command(
        after_help = "Examples:\n  cohort flag apply flags.json\n  cohort flag list\n  cohort flag evaluate --id user_id=u-1001 --attr country=DE\n  cohort flag versions new-checkout --json\n\nOver HTTP: /api/v1/flags, POST /api/v1/flags/evaluate; GrowthBook's SDKs read\nGET /api/features/{write key}."
    )]
    Flag(crate::definitions::FlagArgs),
    /// Experiments: define, start and stop them, read their report from the events, analyse
    /// results from each variation's sums (JSON or CSV) and plan sample sizes.
    #[command(
        after_help = "Examples:\n  cohort experiment metric apply metrics.json\n  cohort experiment apply checkout.json\n  cohort experiment start checkout\n  cohort experiment report checkout --engine bayesian --cuped-days 14\n  cohort experiment stop checkout --variation one-page --reason \"won on purchase\"\n  cohort experiment analyze sums.csv --correction holm --json\n  cohort experiment sample-size --baseline-rate 0.1 --mde 0.1 --relative --daily-units 5000\n\nOver HTTP: /api/v1/experiments, /api/v1/metrics, GET /api/v1/experiments/{key}/report,\nPOST /api/v1/experiments/analyze."
    )]
    Experiment(crate::experiment::ExperimentArgs),
    /// Journeys: validate, save, publish, pause, resume, archive, list and show them, enter a
    /// customer, read the report; message templates (with previews), channels and coupon pools.
    #[command(
        after_help = "Examples:\n  cohort journey validate welcome.yaml\n  cohort journey save welcome.yaml && cohort journey publish welcome\n  cohort journey report welcome --cost sms=0.05 --currency CNY --json\n  cohort journey template save login-nudge --kind sms nudge.json\n  cohort journey template preview login-nudge --id user_id=u-1001\n  cohort journey channel save sms twilio.json\n  cohort journey coupon create spring --valid-for-days 30 && cohort journey coupon generate spring 'SPR-####-??' 10000\n\nOver HTTP: /api/v1/journeys, /api/v1/templates, /api/v1/channels, /api/v1/coupons,\n/api/v1/delivery-rules."
    )]
    Journey(crate::journey::JourneyArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// File to import.
    pub file: PathBuf,
    /// Name (or ID) of the source the messages belong to.
    #[arg(long)]
    pub source: String,
    /// File format; `auto` decides by extension (.ndjson/.jsonl, .json, .csv, .parquet), then by
    /// content.
    #[arg(long, default_value = "auto", value_parser = ["auto", "ndjson", "json", "csv", "parquet"])]
    pub format: String,
    /// What a row is: `messages` (Segment-shaped: type, event, userId, properties.x …),
    /// `profiles` (one customer per row: user_id / anonymous_id / email …, every other column a
    /// trait) or `events` (one event per row, named by an `event` column or --event; every other
    /// column a property, `timestamp` its time).
    #[arg(long, default_value = "messages", value_parser = ["messages", "profiles", "events"])]
    pub rows: String,
    /// Event name for `--rows events` files without an `event` column.
    #[arg(long)]
    pub event: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data directory (created if missing).
    // Global, so that it is accepted before or after a subcommand of the command that takes it
    // (`cohort admin --data D source list` and `cohort admin source list --data D`).
    #[arg(
        long,
        env = "COHORT_DATA",
        default_value = "./cohort-data",
        global = true
    )]
    pub data: PathBuf,
}

#[derive(Args, Debug)]
pub struct SegmentArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: SegmentCommand,
}

#[derive(Subcommand, Debug)]
pub enum SegmentCommand {
    /// List definitions with their member counts.
    List,
    /// Create a definition and fill it from the data so far.
    Create {
        name: String,
        /// The condition as JSON, or @FILE to read it from a file.
        #[arg(long)]
        condition: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Change a definition's condition or description and re-evaluate it.
    Update {
        name: String,
        #[arg(long)]
        condition: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a definition (its members exit).
    Delete { name: String },
    /// Count the customers a condition matches now, without saving it.
    Preview {
        #[arg(long)]
        condition: String,
    },
    /// Current members, by customer ID.
    Members {
        name: String,
        /// Start after this customer ID (paging).
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Members with their user ID, email and phone, as CSV or Parquet.
    Export {
        name: String,
        #[arg(long, default_value = "csv", value_parser = ["csv", "parquet"])]
        format: String,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Entries and exits of one customer, found by an identifier (email, user_id, phone …).
    History { id_type: String, value: String },
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
    /// Seconds between batch re-evaluations of segments whose membership moves with time by the
    /// hour ("viewed in the last 2 hours"); events update every segment in real time regardless.
    #[arg(long, env = "COHORT_SEGMENT_REFRESH_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub segment_refresh_secs: u64,
    /// Seconds between batch re-evaluations of segments whose membership moves by the day
    /// ("active in the last 30 days", 30-day revenue); never more often than the hourly ones.
    #[arg(long, env = "COHORT_SEGMENT_DAY_REFRESH_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub segment_day_refresh_secs: u64,
    /// Do not install the shipped tag definitions on start.
    #[arg(long)]
    pub no_builtin_tags: bool,
    /// Run on a clock that `POST /api/v1/ops/clock {"advance_seconds": N}` moves ahead, for
    /// end-to-end tests of journeys' delays. Never in production.
    #[arg(long)]
    pub test_clock: bool,
    /// Most connections open at once; at the cap a new connection displaces the oldest idle
    /// one, or is answered 503 when all are busy. Lowered to what the open-file limit allows.
    #[arg(long, env = "COHORT_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Seconds a client has to send a request's head; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "COHORT_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body (408 after).
    #[arg(long, env = "COHORT_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: u64,
    /// Seconds requests in flight get to finish on shutdown (SIGTERM, Ctrl-C).
    #[arg(long, env = "COHORT_SHUTDOWN_DEADLINE_SECS", default_value_t = 10)]
    pub shutdown_deadline_secs: u64,
    /// Failed authentications per address per minute before the address is answered 429 for
    /// the rest of its minute; 0 turns the limit off.
    #[arg(long, env = "COHORT_AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_minute: u32,
    /// The URL browsers reach this server at (`https://collect.shop.example`, a path prefix
    /// allowed), named in the settings the browser SDKs load. Default: the `Host` each settings
    /// request came in on, over http; set it behind a proxy or TLS terminator.
    #[arg(long, env = "COHORT_PUBLIC_URL", value_parser = cohort_server::PublicUrl::parse)]
    pub public_url: Option<cohort_server::PublicUrl>,
    /// Web origins whose pages may call the admin API (comma-separated). Default: none.
    #[arg(long, env = "COHORT_ADMIN_ORIGINS", value_delimiter = ',', value_parser = cohort_collect::request::parse_origin)]
    pub admin_origins: Vec<String>,
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
    #[command(
        after_help = "Examples:\n  cohort admin source create backend --json\n  cohort admin source create website --kind client\n\nA client source (a web page or an app) has a public write key: its email, phone and\nexternal IDs may not claim customers that already exist, unless --trait-claims is given."
    )]
    Create {
        name: String,
        /// `server` (a back-office system: the key is secret) or `client` (a web page or an app).
        #[arg(long, default_value = "server", value_parser = ["server", "client"])]
        kind: String,
        /// Let a client source's email, phone and external IDs claim existing customers.
        #[arg(long)]
        trait_claims: bool,
    },
    /// List sources.
    List,
    /// Set (or with --clear remove) a source's tracking plan from a JSON file.
    #[command(
        after_help = "Example:\n  cohort admin source tracking-plan web plan.json\n\nplan.json: {\"mode\": \"block\", \"unplanned\": \"flag\", \"events\": {\"Order Completed\": {\"type\": \"object\", \"required\": [\"revenue\"]}}}"
    )]
    TrackingPlan {
        source: String,
        file: Option<PathBuf>,
        #[arg(long, conflicts_with = "file")]
        clear: bool,
    },
    /// Limit the web origins browsers may send a source's events from, or allow any again.
    #[command(
        after_help = "Examples:\n  cohort admin source origins website --allow https://shop.example --allow https://www.shop.example\n  cohort admin source origins website --any\n\nRequests from other origins are refused with 403 origin_not_allowed; requests without an\nOrigin header (servers, apps) are not affected."
    )]
    Origins {
        source: String,
        /// An origin (`https://host[:port]`) to allow; repeat for several.
        #[arg(long = "allow", value_parser = cohort_collect::request::parse_origin, required_unless_present = "any")]
        allow: Vec<String>,
        /// Allow any origin (the default for a new source).
        #[arg(long, conflicts_with = "allow")]
        any: bool,
    },
    /// Set a source's normalisation rules from a JSON file.
    #[command(
        after_help = "Example:\n  cohort admin source normalisation web rules.json\n\nrules.json: {\"default_phone_region\": \"US\", \"default_currency\": \"USD\"}"
    )]
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
    #[command(
        after_help = "Example:\n  cohort admin failed list --source web --code tracking_plan_violation"
    )]
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
    #[command(
        after_help = "Examples:\n  cohort admin failed replay 42\n  cohort admin failed replay --all --source web"
    )]
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

#[derive(Args, Debug, Clone)]
pub struct QueryArgs {
    /// The SQL statement (read-only: SELECT, WITH, VALUES, EXPLAIN, DESCRIBE, SHOW).
    pub sql: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv", "parquet"])]
    pub format: String,
    /// File to write (required for parquet).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Most rows returned.
    #[arg(long, default_value_t = 10_000)]
    pub max_rows: usize,
    /// Seconds before the query is cancelled.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

#[derive(Args, Debug, Clone)]
pub struct RfmArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Days of orders to score, ending with the analysis date.
    #[arg(long, default_value_t = 365)]
    pub window_days: u32,
    /// Clusters for k-means (fewer when customers are few or alike).
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Analysis date (YYYY-MM-DD, UTC); recency counts days to it. Default: today.
    #[arg(long)]
    pub as_of: Option<chrono::NaiveDate>,
    /// Print the run as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn data_and_json_go_before_or_after_the_subcommand() {
        let admin = |args: &[&str]| match parse(args).command {
            Command::Admin(a) => (a.data.data, a.json),
            other => panic!("{other:?}"),
        };
        let expected = (PathBuf::from("DIR"), true);
        assert_eq!(
            admin(&[
                "cohort", "admin", "source", "create", "web", "--json", "--data", "DIR"
            ]),
            expected
        );
        assert_eq!(
            admin(&[
                "cohort", "admin", "--data", "DIR", "source", "create", "web", "--json"
            ]),
            expected
        );
        assert_eq!(
            admin(&[
                "cohort", "admin", "--json", "--data", "DIR", "source", "create", "web"
            ]),
            expected
        );

        let import = |args: &[&str]| match parse(args).command {
            Command::Import(a) => (a.data.data, a.file, a.source),
            other => panic!("{other:?}"),
        };
        let expected = (
            PathBuf::from("DIR"),
            PathBuf::from("f.csv"),
            "web".to_string(),
        );
        assert_eq!(
            import(&[
                "cohort", "import", "f.csv", "--source", "web", "--data", "DIR"
            ]),
            expected
        );
        assert_eq!(
            import(&[
                "cohort", "import", "--data", "DIR", "f.csv", "--source", "web"
            ]),
            expected
        );

        let segment = |args: &[&str]| match parse(args).command {
            Command::Segment(a) | Command::Tag(a) => (a.data.data, a.json),
            other => panic!("{other:?}"),
        };
        let expected = (PathBuf::from("DIR"), true);
        assert_eq!(
            segment(&["cohort", "segment", "list", "--json", "--data", "DIR"]),
            expected
        );
        assert_eq!(
            segment(&["cohort", "segment", "--data", "DIR", "--json", "list"]),
            expected
        );
        assert_eq!(
            segment(&["cohort", "tag", "members", "vip", "--data", "DIR", "--json"]),
            expected
        );

        let analyse = |args: &[&str]| match parse(args).command {
            Command::Analyse(a) => (a.data.data, a.json),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            analyse(&["cohort", "analyse", "revenue", "--json", "--data", "DIR"]),
            expected
        );
        assert_eq!(
            analyse(&["cohort", "analyse", "--data", "DIR", "--json", "revenue"]),
            expected
        );

        // --log-json is the top level's, accepted anywhere.
        assert!(parse(&["cohort", "--log-json", "admin", "stats"]).log_json);
        assert!(parse(&["cohort", "admin", "stats", "--log-json"]).log_json);
        // Commands without subcommands take --data anywhere among their own arguments.
        let query = parse(&["cohort", "query", "--data", "DIR", "SELECT 1"]);
        assert!(matches!(query.command, Command::Query(q) if q.data.data == Path::new("DIR")));
        let rfm = parse(&["cohort", "rfm", "--json", "--data", "DIR"]);
        assert!(
            matches!(rfm.command, Command::Rfm(r) if r.json && r.data.data == Path::new("DIR"))
        );
        let serve = parse(&[
            "cohort",
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--data",
            "DIR",
        ]);
        assert!(matches!(serve.command, Command::Serve(s) if s.data.data == Path::new("DIR")));
        let demo = parse(&["cohort", "demo", "--data", "DIR", "--exit"]);
        assert!(matches!(demo.command, Command::Demo(d) if d.serve.data.data == Path::new("DIR")));
    }
}
