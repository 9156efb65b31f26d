//! `cohort bench analytics`: segment, funnel, retention, RFM and k-means times on generated data,
//! each side by side with DuckDB running the equivalent SQL over the same Parquet files.
//!
//! # Data
//!
//! [`cohort_demo::lake`] generates the events straight into the lake (not through HTTP: fifty
//! million events over HTTP would take hours), seeded, with every customer's computed traits in
//! `profiles.parquet` and `profile_traits.parquet` beside it; generated once into `--data` and
//! reused while --customers, --events and --seed stay the same. DuckDB loads the profile files,
//! and Cohort serves them through a [`StateTables`] backed by in-memory Arrow batches, as the
//! state store does.
//!
//! The data ends on a fixed day ([`END_DAY`]) and every query runs "now" at the last
//! microsecond of that day, so answers do not depend on when the benchmark runs. Events fall on
//! whole seconds, which makes `timestamp >= now - 30 days` (the segment compiler's window) and
//! "the 30 UTC days ending today" (how `orders_30d` and `revenue_30d` are kept) select the same
//! events. Money is generated in halves, which binary floating point holds exactly, so sums do
//! not depend on the order an engine adds them in and both engines rank customers identically.
//!
//! # What is compared
//!
//! Each query runs `--repeat` times in Cohort ([`Lake::query`], or the product's own code where
//! there is more to it than one query: `cohort_analysis::funnel` and `retention`, RFM scoring and
//! k-means in `cohort_ml::rfm`) and in DuckDB (`python3 -c`, timed inside Python with
//! `time.perf_counter`). Each side also returns a small signature of its answer (a count, the
//! funnel's step counts, the retention matrix, the RFM score sums); the table prints both and a
//! loud MISMATCH when they differ. Nothing here judges the times.

use crate::BenchAnalyticsArgs;
use crate::machine::{fmt_int, load_average, peak_rss, print_machine, rss};
use anyhow::{Context, anyhow, bail};
use chrono::{NaiveDate, SecondsFormat, TimeDelta};
use cohort_analysis::{
    ConversionWindow, EventSpec, FunnelRequest, Retention, RetentionPeriod, RetentionRequest,
    RunOptions,
};
use cohort_demo::lake::{
    self, Calendar, DAY_US, DAYS, END_DAY, Generated, LakeMeta, LakeSpec, PROFILES_FILE,
    RECENT_DAYS, TRAITS_FILE, epoch_day, utc,
};
use cohort_engine::{ALL_ROWS, EVENTS_FOR_SEGMENTS, membership_sql};
use cohort_lake::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use cohort_lake::arrow::compute::{cast, concat_batches};
use cohort_lake::arrow::datatypes::DataType;
use cohort_lake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use cohort_lake::{
    Lake, QueryOptions, StateError, StateTables, identities_schema, memberships_schema,
};
use cohort_ml::rfm::{RfmInput, RfmOptions, RfmScores, analyse, rfm_scores};
use cohort_segment::{Condition, to_sql};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFM window, as `cohort rfm` defaults to.
const RFM_WINDOW_DAYS: i64 = 365;
/// Clusters for k-means, as `cohort rfm` defaults to.
const KMEANS_K: usize = cohort_ml::rfm::DEFAULT_K;
/// Funnel conversion window.
const FUNNEL_DAYS: i64 = 7;
/// Retention: weekly cohorts, weeks 0 ..= this.
const RETENTION_WEEKS: i64 = 8;
/// The segments that read only profile attributes (the issue's "under 50 ms" target).
const ATTRIBUTE_CASES: [&str; 2] = ["platinum", "plan"];
/// Rows that run one SQL text in both engines: they compare the engines, not Cohort's way of
/// answering, so the target count leaves them out.
const ENGINE_ONLY_CASES: [&str; 3] = ["event_column", "funnel_sql", "retention_sql"];
/// Stands for SQL NULL in answer signatures, on both sides.
const NULL_MARK: i64 = i64::MIN;

// ---------------------------------------------------------------------------------------------
// The state tables: Arrow in memory for Cohort (DuckDB reads the same files)

fn read_parquet(path: &Path) -> anyhow::Result<RecordBatch> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(65_536);
    let schema = builder.schema().clone();
    let reader = builder.build()?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

/// The state tables as a state store would serve them: Arrow batches held in memory.
struct MemoryState {
    profiles: RecordBatch,
    traits: RecordBatch,
}

impl StateTables for MemoryState {
    fn profiles(&self) -> Result<RecordBatch, StateError> {
        Ok(self.profiles.clone())
    }
    fn profile_traits(&self) -> Result<RecordBatch, StateError> {
        Ok(self.traits.clone())
    }
    fn identities(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(identities_schema()))
    }
    fn memberships(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(memberships_schema()))
    }
}

// ---------------------------------------------------------------------------------------------
// The data directory

/// Makes sure `dir` holds the data of `spec`: reuses it when it was generated with the same
/// parameters, generates it when the directory is empty, and refuses anything else.
fn prepare_data(dir: &Path, spec: LakeSpec, cal: &Calendar) -> anyhow::Result<LakeMeta> {
    if let Some(meta) = lake::existing(dir, spec)? {
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
        "Generating {} customers and about {} events over {} days ending {END_DAY} (seed {}) into {} …",
        fmt_int(spec.customers as u64),
        fmt_int(spec.events as u64),
        DAYS,
        spec.seed,
        dir.display()
    );
    let bar = ProgressBar::with_draw_target(Some(spec.events as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {human_pos}/{human_len} events {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let Generated {
        meta,
        world,
        lake_seconds,
    } = lake::generate(dir, spec, cal, |written| bar.set_position(written))?;
    bar.finish_and_clear();
    let generate_seconds = meta.generate_seconds;
    let lake_bytes = dir_size(&dir.join("lake"));
    let files = count_files(&dir.join("lake").join("events"));
    println!(
        "Generated {} events in {lake_seconds:.1} s ({} events/s; {} Parquet files, {:.2} GB) \
         and {} profiles in {:.1} s more.",
        fmt_int(world.events),
        fmt_int((world.events as f64 / lake_seconds.max(1e-9)) as u64),
        fmt_int(files),
        lake_bytes as f64 / 1e9,
        fmt_int(world.customers.len() as u64),
        generate_seconds - lake_seconds
    );
    let orders: i64 = world.totals.iter().map(|t| t.orders).sum();
    let active = world.totals.iter().filter(|t| t.events > 0).count();
    let signups = world
        .totals
        .iter()
        .filter(|t| t.signed_up.is_some())
        .count();
    let busiest = world.totals.iter().map(|t| t.events).max().unwrap_or(0);
    println!(
        "  {} customers with events, {} signed up in the window, {} orders; the busiest customer has {} events.",
        fmt_int(active as u64),
        fmt_int(signups as u64),
        fmt_int(orders.max(0) as u64),
        fmt_int(busiest.max(0) as u64)
    );
    println!(
        "  Peak RSS while generating (must not grow with the number of events): {}",
        peak_rss()
    );
    Ok(meta)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn count_files(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => u64::from(e.file_name().to_string_lossy().ends_with(".parquet")),
            Err(_) => 0,
        })
        .sum()
}

/// Forgets the peak RSS so far (Linux `clear_refs`), so the next reading covers what follows.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------------
// The queries

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    DataFusion,
    DuckDb,
}

impl Dialect {
    /// Days since 1970-01-01 of a DATE expression, as BIGINT.
    fn day_number(self, date: &str) -> String {
        match self {
            Dialect::DataFusion => format!("CAST(CAST({date} AS INT) AS BIGINT)"),
            Dialect::DuckDb => format!("date_diff('day', DATE '1970-01-01', {date})"),
        }
    }

    fn int_div(self) -> &'static str {
        match self {
            Dialect::DataFusion => "/",
            Dialect::DuckDb => "//",
        }
    }
}

fn ts_lit(us: i64) -> anyhow::Result<String> {
    Ok(format!(
        "TIMESTAMP '{}'",
        utc(us)?.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    ))
}

fn date_lit(day: NaiveDate) -> String {
    format!("DATE '{}'", day.format("%Y-%m-%d"))
}

fn condition(value: Value) -> anyhow::Result<Condition> {
    Condition::from_value(value).context("a benchmark condition is invalid")
}

/// Members of a compiled condition that reads only `profiles` and `profile_traits`: one SQL text
/// both engines run as it is.
fn count_members(inner: &str) -> String {
    format!(
        "SELECT CAST(count(DISTINCT customer_id) AS BIGINT) AS n FROM ({inner}) AS members \
         WHERE customer_id IS NOT NULL"
    )
}

/// Members of a compiled condition that reads events, exactly as the server's batch evaluation
/// runs it (the same `events` table).
fn count_members_over_events(inner: &str) -> String {
    format!(
        "WITH events AS ({EVENTS_FOR_SEGMENTS}) {}",
        count_members(inner)
    )
}

/// "At least two orders in the last 30 days" as one would write it by hand, on the promoted
/// `revenue` column; both engines run this text.
fn recent_orders_sql(cal: &Calendar, min_revenue: Option<f64>) -> anyhow::Result<String> {
    let revenue = min_revenue.map_or(String::new(), |r| format!(" AND revenue > {r:?}"));
    Ok(format!(
        "SELECT CAST(count(*) AS BIGINT) AS n FROM (SELECT customer_id FROM events \
         WHERE event = 'Order Completed' AND \"timestamp\" >= {from} AND date >= {from_day}{revenue} \
         AND customer_id IS NOT NULL GROUP BY customer_id HAVING count(*) >= 2) AS s",
        from = ts_lit(cal.recent_from_us)?,
        from_day = date_lit(utc(cal.recent_from_us)?.date_naive()),
    ))
}

/// Product Viewed → Added to Cart → Order Completed within 7 days, with the semantics of
/// `cohort-analysis`'s funnel: every view in the range starts an attempt, each next step is the
/// earliest matching event after the previous step's event (by time, then seq), at most 7 days
/// after the view; a customer counts at the furthest step any attempt reached. Returns the
/// customers at each step.
fn funnel_sql(cal: &Calendar) -> anyhow::Result<String> {
    let to = cal.start_us + i64::from(DAYS) * DAY_US;
    let until = cal.start_day + TimeDelta::days(i64::from(DAYS) + FUNNEL_DAYS + 1);
    let after =
        "OVER (PARTITION BY c ORDER BY ts, seq ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)";
    let window = format!("INTERVAL '{FUNNEL_DAYS} days'");
    Ok(format!(
        "WITH ev AS (\
           SELECT customer_id AS c, \"timestamp\" AS ts, seq, event AS name FROM events \
           WHERE date >= {from_date} AND date < {until} AND customer_id IS NOT NULL \
             AND event IN ('Product Viewed', 'Added to Cart', 'Order Completed')), \
         nexts AS (\
           SELECT c, ts, seq, name, \
             min(CASE WHEN name = 'Added to Cart' THEN ts END) {after} AS t2, \
             min(CASE WHEN name = 'Order Completed' THEN ts END) {after} AS t3 \
           FROM ev), \
         chained AS (\
           SELECT c, ts, name, t2, \
             min(CASE WHEN name = 'Added to Cart' THEN t3 END) {after} AS t23 \
           FROM nexts), \
         levels AS (\
           SELECT c, max(CASE WHEN t2 IS NOT NULL AND t2 <= ts + {window} THEN \
                                CASE WHEN t23 IS NOT NULL AND t23 <= ts + {window} THEN 3 ELSE 2 END \
                              ELSE 1 END) AS level \
           FROM chained \
           WHERE name = 'Product Viewed' AND ts >= {from_ts} AND ts < {to_ts} \
           GROUP BY c) \
         SELECT CAST(count(*) AS BIGINT) AS viewed, \
                CAST(COALESCE(sum(CASE WHEN level >= 2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS carted, \
                CAST(COALESCE(sum(CASE WHEN level >= 3 THEN 1 ELSE 0 END), 0) AS BIGINT) AS ordered \
         FROM levels",
        from_date = date_lit(cal.start_day),
        until = date_lit(until),
        from_ts = ts_lit(cal.start_us)?,
        to_ts = ts_lit(to)?,
    ))
}

/// Weekly cohorts by first Signed Up in the range, returning with a Login in week 0 ..= 8, with
/// the semantics of `cohort-analysis`'s retention. Rows: (cohort day, k, customers), k = -1 for
/// the cohort's size.
fn retention_sql(cal: &Calendar, dialect: Dialect) -> String {
    let to = cal.start_day + TimeDelta::days(i64::from(DAYS));
    let until = to + TimeDelta::days((RETENTION_WEEKS + 1) * 7);
    let week_of_return = dialect.day_number("CAST(date_trunc('week', e.\"timestamp\") AS DATE)");
    format!(
        "WITH a AS (\
           SELECT customer_id, \"timestamp\" AS ts, seq, \
                  row_number() OVER (PARTITION BY customer_id ORDER BY \"timestamp\", seq) AS rn \
           FROM events \
           WHERE date >= {from} AND date < {to} AND customer_id IS NOT NULL AND event = 'Signed Up'), \
         firsts AS (\
           SELECT customer_id, ts AS first_ts, seq AS first_seq, \
                  {cohort_day} AS cohort_day \
           FROM a WHERE rn = 1), \
         returns AS (\
           SELECT DISTINCT f.customer_id, f.cohort_day, ({week_of_return} - f.cohort_day) {div} 7 AS k \
           FROM firsts f JOIN events e ON e.customer_id = f.customer_id \
           WHERE e.date >= {from} AND e.date < {until} AND e.event = 'Login' \
             AND e.\"timestamp\" >= f.first_ts AND e.seq <> f.first_seq) \
         SELECT cohort_day, CAST(-1 AS BIGINT) AS k, CAST(count(*) AS BIGINT) AS n FROM firsts GROUP BY cohort_day \
         UNION ALL \
         SELECT cohort_day, CAST(k AS BIGINT) AS k, CAST(count(*) AS BIGINT) AS n FROM returns \
         WHERE k >= 0 AND k <= {RETENTION_WEEKS} GROUP BY cohort_day, k \
         ORDER BY cohort_day, k",
        from = date_lit(cal.start_day),
        to = date_lit(to),
        until = date_lit(until),
        cohort_day = dialect.day_number("CAST(date_trunc('week', ts) AS DATE)"),
        div = dialect.int_div(),
    )
}

/// The funnel of [`funnel_sql`] as a `cohort-analysis` request.
fn funnel_request(cal: &Calendar) -> FunnelRequest {
    FunnelRequest {
        from: cal.start_day,
        to: cal.start_day + TimeDelta::days(i64::from(DAYS)),
        steps: ["Product Viewed", "Added to Cart", "Order Completed"]
            .into_iter()
            .map(EventSpec::named)
            .collect(),
        window: ConversionWindow::Days(FUNNEL_DAYS as u32),
        segment: None,
        breakdown: None,
        breakdown_limit: None,
    }
}

/// The retention of [`retention_sql`] as a `cohort-analysis` request.
fn retention_request(cal: &Calendar) -> RetentionRequest {
    RetentionRequest {
        from: cal.start_day,
        to: cal.start_day + TimeDelta::days(i64::from(DAYS)),
        period: RetentionPeriod::Week,
        periods: Some(RETENTION_WEEKS as usize),
        first_event: EventSpec::named("Signed Up"),
        returning_event: EventSpec::named("Login"),
        segment: None,
        breakdown: None,
        breakdown_limit: None,
    }
}

/// A retention matrix in the row shape of [`retention_sql`]: (cohort day, -1, size), then
/// (cohort day, week, returned) for every non-empty cell.
fn retention_signature(r: &Retention) -> Vec<i64> {
    let mut out = Vec::new();
    for c in r.cohorts.iter().filter(|c| c.customers > 0) {
        let day = epoch_day(c.start);
        out.extend([day, -1, c.customers as i64]);
        for (k, &n) in c.returned.iter().enumerate() {
            if n > 0 {
                out.extend([day, k as i64, n as i64]);
            }
        }
    }
    out
}

fn analysis_options() -> RunOptions {
    RunOptions {
        timeout: query_options().timeout,
        // The funnel reads every step event into memory; at 50M events that is tens of
        // millions of rows, which is the point of measuring it.
        max_funnel_rows: query_options().max_rows,
    }
}

/// Orders in the RFM window ending on the last day: `WHERE` clause shared by both engines.
fn rfm_filter() -> String {
    let first = END_DAY - TimeDelta::days(RFM_WINDOW_DAYS - 1);
    format!(
        "event = 'Order Completed' AND date >= {} AND date <= {} AND customer_id IS NOT NULL",
        date_lit(first),
        date_lit(END_DAY)
    )
}

/// Cohort's per-customer order aggregates for RFM: (customer_id, last order day, orders, revenue).
fn rfm_aggregates_sql() -> String {
    format!(
        "SELECT customer_id, {} AS last_day, CAST(count(*) AS BIGINT) AS orders, \
         sum(COALESCE(revenue, 0.0)) AS revenue FROM events WHERE {} GROUP BY customer_id",
        Dialect::DataFusion.day_number("max(date)"),
        rfm_filter()
    )
}

/// DuckDB's per-customer (recency, orders, revenue), for RFM and k-means.
fn duck_rfm_measures() -> String {
    format!(
        "SELECT date_diff('day', max(date), {as_of}) AS recency, count(*) AS orders, \
         sum(COALESCE(revenue, 0.0)) AS revenue FROM events WHERE {filter} GROUP BY customer_id",
        as_of = date_lit(END_DAY),
        filter = rfm_filter()
    )
}

/// RFM quintile scores in SQL with the tie rule of `cohort_ml::rfm::quintile_scores`: a
/// customer at rank a of n (1-based, worst first; ties share the rank of their first position,
/// which is SQL's `rank()`) scores ⌊5(2a − 1) / 2n⌋ + 1. Returns the same signature as
/// [`rfm_signature`]; the MISMATCH check catches the two drifting apart.
fn duck_rfm_sql() -> String {
    let score = |rank: &str| format!("LEAST(5, (5 * (2 * {rank} - 1)) // (2 * tot.n) + 1)");
    let rank = |order: &str, name: &str| format!("rank() OVER (ORDER BY {order}) AS {name}");
    format!(
        "WITH agg AS ({measures}), \
         tot AS (SELECT count(*) AS n FROM agg), \
         ranked AS (SELECT {r}, {f}, {m} FROM agg), \
         scored AS (SELECT {rs} AS r, {fs} AS f, {ms} AS m FROM ranked CROSS JOIN tot) \
         SELECT (SELECT n FROM tot) AS n, COALESCE(sum(r), 0), COALESCE(sum(f), 0), COALESCE(sum(m), 0), \
                COALESCE(sum(CASE WHEN r = 5 AND f = 5 AND m = 5 THEN 1 ELSE 0 END), 0) FROM scored",
        measures = duck_rfm_measures(),
        // Recency is better when smaller, so it is ranked worst (oldest) first.
        r = rank("recency DESC", "r_rank"),
        f = rank("orders", "f_rank"),
        m = rank("revenue", "m_rank"),
        rs = score("r_rank"),
        fs = score("f_rank"),
        ms = score("m_rank"),
    )
}

/// (customers scored, sum of R, sum of F, sum of M, customers scoring 555).
fn rfm_signature(inputs: &[RfmInput]) -> Vec<i64> {
    let scores = rfm_scores(inputs);
    let sum = |f: fn(&RfmScores) -> u8| scores.iter().map(|s| i64::from(f(s))).sum::<i64>();
    let top = scores
        .iter()
        .filter(|s| s.recency == 5 && s.frequency == 5 && s.monetary == 5)
        .count();
    vec![
        inputs.len() as i64,
        sum(|s| s.recency),
        sum(|s| s.frequency),
        sum(|s| s.monetary),
        top as i64,
    ]
}

enum CohortWork {
    /// One query through `Lake::query`; the signature is every value, row by row.
    Sql(String),
    /// The aggregate query, then the product's quintile scoring in Rust.
    Rfm(String),
    /// `cohort_ml::rfm::analyse` on the RFM aggregates of the previous case.
    KMeans,
    /// `cohort_analysis::funnel`, as `POST /api/v1/analyses/funnel` runs it (SQL, then Rust).
    Funnel(FunnelRequest),
    /// `cohort_analysis::retention`, as the API runs it.
    Retention(RetentionRequest),
}

enum DuckWork {
    Sql(String),
    /// scikit-learn's KMeans on the features `rfm::analyse` clusters, when installed.
    KMeans(String),
}

struct Case {
    id: &'static str,
    label: &'static str,
    /// What each side runs, for the legend under the table.
    detail: String,
    cohort: CohortWork,
    duck: DuckWork,
    /// Renders an answer signature.
    show: fn(&[i64]) -> String,
}

fn show_count(s: &[i64]) -> String {
    s.first().map_or_else(|| "-".into(), |&n| fmt_signed(n))
}

fn show_funnel(s: &[i64]) -> String {
    s.iter()
        .map(|&n| fmt_signed(n))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn show_retention(s: &[i64]) -> String {
    let rows: Vec<&[i64]> = s.chunks(3).collect();
    let total = |k: i64| -> i64 {
        rows.iter()
            .filter(|r| r.get(1) == Some(&k))
            .filter_map(|r| r.get(2))
            .sum()
    };
    format!(
        "{} signed up, {} back in week 1",
        fmt_signed(total(-1)),
        fmt_signed(total(1))
    )
}

fn show_rfm(s: &[i64]) -> String {
    match s {
        [n, r, f, m, top] => format!(
            "{} scored; ΣR/F/M {}/{}/{}; 555: {}",
            fmt_signed(*n),
            fmt_signed(*r),
            fmt_signed(*f),
            fmt_signed(*m),
            fmt_signed(*top)
        ),
        _ => "-".into(),
    }
}

/// k-means signatures: [clusters, mean inertia × 10⁶]. Inertia says which side clustered
/// tighter; different initialisations need not give the same labels.
fn show_clusters(s: &[i64]) -> String {
    match s {
        [k, inertia] => format!("{k} clusters, inertia {:.4}", *inertia as f64 / 1e6),
        [k] => format!("{k} clusters"),
        _ => "-".into(),
    }
}

fn inertia_signature(clusters: usize, mean_inertia: f64) -> Vec<i64> {
    vec![clusters as i64, (mean_inertia * 1e6).round() as i64]
}

fn fmt_signed(n: i64) -> String {
    match n {
        NULL_MARK => "NULL".into(),
        n if n < 0 => format!("-{}", fmt_int(n.unsigned_abs())),
        n => fmt_int(n as u64),
    }
}

fn cases(cal: &Calendar) -> anyhow::Result<Vec<Case>> {
    let now = cal.now()?;
    let platinum = to_sql(
        &condition(json!({"type": "and", "conditions": [
            {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5000},
            {"type": "computed", "key": "last_seen", "op": "within_last", "value": {"days": RECENT_DAYS}}
        ]}))?,
        now,
    )?;
    let plan = to_sql(
        &condition(json!({"type": "and", "conditions": [
            {"type": "trait", "key": "plan", "op": "in", "value": ["pro", "team"]},
            {"type": "computed", "key": "orders", "op": "gte", "value": 3}
        ]}))?,
        now,
    )?;
    let big_orders = to_sql(
        &condition(json!({"type": "event", "name": "Order Completed",
            "where": [{"property": "revenue", "op": "gt", "value": 100}],
            "count": {"op": "gte", "value": 2}, "window": {"last_days": RECENT_DAYS}}))?,
        now,
    )?;
    let two_orders = to_sql(
        &condition(json!({"type": "event", "name": "Order Completed",
            "count": {"op": "gte", "value": 2}, "window": {"last_days": RECENT_DAYS}}))?,
        now,
    )?;
    let precomputed = to_sql(
        &condition(json!({"type": "computed", "key": "orders_30d", "op": "gte", "value": 2}))?,
        now,
    )?;
    let big_orders_by_hand = recent_orders_sql(cal, Some(100.0))?;
    let two_orders_by_hand = recent_orders_sql(cal, None)?;
    let funnel = funnel_sql(cal)?;
    Ok(vec![
        Case {
            id: "platinum",
            label: "segment, attributes: platinum",
            detail: "revenue_30d > 5000 and last_seen within 30 days, compiled by \
                     cohort_segment::to_sql over profiles; both engines run the same SQL text"
                .into(),
            cohort: CohortWork::Sql(count_members(&platinum)),
            duck: DuckWork::Sql(count_members(&platinum)),
            show: show_count,
        },
        Case {
            id: "plan",
            label: "segment, attributes: plan + orders",
            detail: "trait plan in (pro, team) and orders >= 3, compiled by to_sql over \
                     profile_traits and profiles; the same SQL text in both engines"
                .into(),
            cohort: CohortWork::Sql(count_members(&plan)),
            duck: DuckWork::Sql(count_members(&plan)),
            show: show_count,
        },
        Case {
            id: "event_json",
            label: "segment, events: 2+ orders > 100 in 30 d",
            detail: "Cohort: to_sql of the event condition (revenue > 100 reads the promoted \
                     revenue column, the window bounds timestamp and date), wrapped as the \
                     server's batch evaluation runs it; DuckDB: a hand-written scan on the same \
                     columns"
                .into(),
            cohort: CohortWork::Sql(count_members_over_events(&big_orders)),
            duck: DuckWork::Sql(big_orders_by_hand.clone()),
            show: show_count,
        },
        Case {
            id: "event_column",
            label: "  same, hand-written SQL",
            detail:
                "the hand-written scan on the revenue column, the same SQL text in both engines"
                    .into(),
            cohort: CohortWork::Sql(big_orders_by_hand.clone()),
            duck: DuckWork::Sql(big_orders_by_hand),
            show: show_count,
        },
        Case {
            id: "two_orders_scan",
            label: "segment, events: 2+ orders in 30 d",
            detail: "Cohort: to_sql of the event condition, scanning events; DuckDB: the \
                     hand-written event scan"
                .into(),
            cohort: CohortWork::Sql(count_members_over_events(&two_orders)),
            duck: DuckWork::Sql(two_orders_by_hand.clone()),
            show: show_count,
        },
        Case {
            id: "two_orders_trait",
            label: "  same, precomputed orders_30d",
            detail: "Cohort: to_sql of orders_30d >= 2, a computed trait kept per profile, over \
                     profiles; DuckDB: the same hand-written event scan as the row above"
                .into(),
            cohort: CohortWork::Sql(count_members(&precomputed)),
            duck: DuckWork::Sql(two_orders_by_hand),
            show: show_count,
        },
        Case {
            id: "funnel",
            label: "funnel: view → cart → order, 7 d",
            detail: "Cohort: cohort_analysis::funnel (SQL streams the step events unsorted; \
                     Rust groups them per customer, orders each customer's events and finds the \
                     furthest step); DuckDB: window functions giving the next step's time after \
                     each event, same semantics"
                .into(),
            cohort: CohortWork::Funnel(funnel_request(cal)),
            duck: DuckWork::Sql(funnel.clone()),
            show: show_funnel,
        },
        Case {
            id: "funnel_sql",
            label: "  same, the window-function SQL",
            detail: "the window-function funnel, the same SQL text in both engines".into(),
            cohort: CohortWork::Sql(funnel.clone()),
            duck: DuckWork::Sql(funnel),
            show: show_funnel,
        },
        Case {
            id: "retention",
            label: "retention: weekly, Signed Up → Login",
            detail: "weekly cohorts by first Signed Up, returning Login in weeks 0-8. Cohort: \
                     cohort_analysis::retention (two scans reduced in Rust: each customer's first \
                     Signed Up, then the weeks holding a Login); DuckDB: SQL with a window \
                     function and a join, same semantics"
                .into(),
            cohort: CohortWork::Retention(retention_request(cal)),
            duck: DuckWork::Sql(retention_sql(cal, Dialect::DuckDb)),
            show: show_retention,
        },
        Case {
            id: "retention_sql",
            label: "  same, one SQL text",
            detail: "the retention SQL in both engines (identical but for the day arithmetic)"
                .into(),
            cohort: CohortWork::Sql(retention_sql(cal, Dialect::DataFusion)),
            duck: DuckWork::Sql(retention_sql(cal, Dialect::DuckDb)),
            show: show_retention,
        },
        Case {
            id: "rfm",
            label: "RFM scores, 365 d",
            detail: "Cohort: per-customer order aggregates in SQL, then rfm::quintile_scores in \
                     Rust (ties at their first rank); DuckDB: the aggregates and the same \
                     quintiles in SQL with rank()"
                .into(),
            cohort: CohortWork::Rfm(rfm_aggregates_sql()),
            duck: DuckWork::Sql(duck_rfm_sql()),
            show: show_rfm,
        },
        Case {
            id: "kmeans",
            label: "k-means, k = 5",
            detail: format!(
                "Cohort: rfm::analyse on the RFM aggregates (scores, then linfa k-means++ with \
                 10 runs on a 50,000-customer sample and one run over all from the best, at most \
                 300 iterations, scikit-learn's stopping rule, k = {KMEANS_K}); \
                 DuckDB column: scikit-learn \
                 KMeans on the same standardised features (n_init = 10, max_iter = 300, \
                 tol = 1e-4), when installed. Aggregation is not timed on either side."
            ),
            cohort: CohortWork::KMeans,
            duck: DuckWork::KMeans(duck_rfm_measures()),
            show: show_clusters,
        },
    ])
}

/// The cases named in `only` (all when empty); k-means needs the RFM case's aggregates.
fn selected(cases: Vec<Case>, only: &[String]) -> anyhow::Result<Vec<Case>> {
    if only.is_empty() {
        return Ok(cases);
    }
    if let Some(unknown) = only
        .iter()
        .find(|id| !cases.iter().any(|c| c.id == id.as_str()))
    {
        let known: Vec<&str> = cases.iter().map(|c| c.id).collect();
        bail!(
            "--only: no query {unknown:?}; the queries are {}",
            known.join(", ")
        );
    }
    let wanted = |id: &str| {
        only.iter().any(|o| o == id) || (id == "rfm" && only.iter().any(|o| o == "kmeans"))
    };
    Ok(cases.into_iter().filter(|c| wanted(c.id)).collect())
}

// ---------------------------------------------------------------------------------------------
// Running and comparing

/// Times of one query on one side and the answer it gave.
#[derive(Clone, Debug)]
struct Measured {
    times: Vec<Duration>,
    signature: Option<Vec<i64>>,
}

impl Measured {
    fn median(&self) -> Option<Duration> {
        let mut sorted = self.times.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
        }
    }

    fn best(&self) -> Option<Duration> {
        self.times.iter().min().copied()
    }
}

/// Whether the two sides computed the same answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Same,
    Mismatch,
    /// One side has no answer to compare (skipped, failed, or not comparable).
    Unchecked,
}

fn check(cohort: Option<&[i64]>, duck: Option<&[i64]>) -> Check {
    match (cohort, duck) {
        (Some(a), Some(b)) if a == b => Check::Same,
        (Some(_), Some(_)) => Check::Mismatch,
        _ => Check::Unchecked,
    }
}

/// Every value of a query result, row by row, as BIGINT (NULL as [`NULL_MARK`]).
fn flatten(batches: &[RecordBatch]) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Int64))
            .collect::<Result<Vec<_>, _>>()?;
        let ints = columns
            .iter()
            .map(|c| {
                c.as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| anyhow!("a result column is not BIGINT after casting"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for row in 0..batch.num_rows() {
            for col in &ints {
                out.push(if col.is_null(row) {
                    NULL_MARK
                } else {
                    col.value(row)
                });
            }
        }
    }
    Ok(out)
}

fn query_options() -> QueryOptions {
    QueryOptions {
        // The largest sizes run for minutes; the benchmark reports times, it does not cut them.
        timeout: Duration::from_secs(3 * 3600),
        // Unlimited in effect; DataFusion takes the limit as a signed 64-bit number.
        max_rows: 1 << 40,
        max_bytes: usize::MAX,
    }
}

/// The RFM aggregates as `rfm::analyse` takes them.
fn rfm_inputs(batches: &[RecordBatch]) -> anyhow::Result<Vec<RfmInput>> {
    let as_of = epoch_day(END_DAY);
    let mut out = Vec::new();
    for batch in batches {
        let column = |name: &str, to: &DataType| -> anyhow::Result<ArrayRef> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| anyhow!("the RFM aggregates have no column {name}"))?;
            Ok(cast(c, to)?)
        };
        let (ids, days, orders, revenue) = (
            column("customer_id", &DataType::Int64)?,
            column("last_day", &DataType::Int64)?,
            column("orders", &DataType::Int64)?,
            column("revenue", &DataType::Float64)?,
        );
        let ints = |a: &ArrayRef| -> anyhow::Result<Int64Array> {
            a.as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| anyhow!("an RFM column has an unexpected type"))
        };
        let (ids, days, orders) = (ints(&ids)?, ints(&days)?, ints(&orders)?);
        let revenue = revenue
            .as_any()
            .downcast_ref::<Float64Array>()
            .cloned()
            .ok_or_else(|| anyhow!("the RFM revenue column has an unexpected type"))?;
        for i in 0..batch.num_rows() {
            if ids.is_null(i) || days.is_null(i) {
                continue;
            }
            out.push(RfmInput {
                customer_id: ids.value(i),
                recency_days: u32::try_from(as_of - days.value(i)).unwrap_or(u32::MAX),
                orders: u64::try_from(orders.value(i)).unwrap_or(0),
                revenue: if revenue.is_null(i) {
                    0.0
                } else {
                    revenue.value(i)
                },
            });
        }
    }
    Ok(out)
}

/// Runs one case `repeat` times in Cohort. RFM leaves its aggregates in `rfm` for k-means.
async fn run_cohort(
    lake: &Lake,
    case: &Case,
    repeat: u32,
    rfm: &mut Option<Arc<Vec<RfmInput>>>,
) -> anyhow::Result<Measured> {
    let mut times = Vec::new();
    let mut signature = None;
    for _ in 0..repeat {
        match &case.cohort {
            CohortWork::Sql(sql) => {
                let started = Instant::now();
                let result = lake.query(sql, query_options()).await?;
                times.push(started.elapsed());
                signature = Some(flatten(&result.batches)?);
            }
            CohortWork::Rfm(sql) => {
                let started = Instant::now();
                let result = lake.query(sql, query_options()).await?;
                let inputs = rfm_inputs(&result.batches)?;
                let sig = rfm_signature(&inputs);
                times.push(started.elapsed());
                signature = Some(sig);
                *rfm = Some(Arc::new(inputs));
            }
            CohortWork::Funnel(request) => {
                let started = Instant::now();
                let funnel = cohort_analysis::funnel(lake, request, &analysis_options()).await?;
                times.push(started.elapsed());
                signature = Some(funnel.steps.iter().map(|s| s.customers as i64).collect());
            }
            CohortWork::Retention(request) => {
                let started = Instant::now();
                let retention =
                    cohort_analysis::retention(lake, request, &analysis_options()).await?;
                times.push(started.elapsed());
                signature = Some(retention_signature(&retention));
            }
            CohortWork::KMeans => {
                let inputs = rfm
                    .clone()
                    .ok_or_else(|| anyhow!("k-means needs the RFM aggregates, which failed"))?;
                let (elapsed, clusters) = tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let analysis = analyse(
                        &inputs,
                        &RfmOptions {
                            k: KMEANS_K,
                            ..RfmOptions::default()
                        },
                    );
                    let elapsed = started.elapsed();
                    (
                        elapsed,
                        analysis.map(|a| inertia_signature(a.report.k, a.report.inertia)),
                    )
                })
                .await?;
                times.push(elapsed);
                signature = Some(clusters?);
            }
        }
    }
    Ok(Measured { times, signature })
}

const DUCKDB_SCRIPT: &str = r#"
import json, resource, sys, time
spec = json.load(sys.stdin)
try:
    import duckdb
except ImportError:
    print(json.dumps({"missing": "duckdb"}))
    sys.exit(0)

def q(text):
    return text.replace("'", "''")

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
# Its progress bar goes to stdout, where the answer goes.
con.execute("SET enable_progress_bar = false")
started = time.perf_counter()
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{q(spec['events'])}', hive_partitioning = true)")
# Cohort holds the state tables in memory; DuckDB gets them as in-memory tables too.
con.execute(f"CREATE TABLE profiles AS SELECT * FROM read_parquet('{q(spec['profiles'])}')")
con.execute(f"CREATE TABLE profile_traits AS SELECT * FROM read_parquet('{q(spec['traits'])}')")
out = {
    "version": duckdb.__version__,
    "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
    "load_seconds": time.perf_counter() - started,
    "results": {},
}
done = {}
for case in spec["cases"]:
    key = (case["kind"], case["sql"])
    print(f"DuckDB: {case['id']} …", file=sys.stderr, flush=True)
    if key in done:
        out["results"][case["id"]] = done[key]
        continue
    r = {}
    try:
        if case["kind"] == "sql":
            times = []
            rows = []
            for _ in range(spec["repeat"]):
                t = time.perf_counter()
                rows = con.execute(case["sql"]).fetchall()
                times.append(time.perf_counter() - t)
            r["times"] = times
            r["signature"] = [-(2 ** 63) if v is None else int(v) for row in rows for v in row]
        else:
            try:
                import numpy as np
                from sklearn.cluster import KMeans
                import sklearn
            except ImportError:
                r["skipped"] = "scikit-learn is not installed"
            else:
                d = con.execute(case["sql"]).fetchnumpy()
                x = np.column_stack([
                    d["recency"].astype(float),
                    np.log1p(d["orders"].astype(float)),
                    np.log1p(np.maximum(d["revenue"].astype(float), 0.0)),
                ])
                sd = x.std(axis=0)
                x = np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)
                times = []
                for _ in range(spec["repeat"]):
                    t = time.perf_counter()
                    model = KMeans(n_clusters=case["k"], init="k-means++", n_init=10,
                                   max_iter=300, tol=1e-4, random_state=0).fit(x)
                    times.append(time.perf_counter() - t)
                r["times"] = times
                r["signature"] = [int(len(set(model.labels_.tolist()))),
                                  int(round(model.inertia_ / len(x) * 1e6))]
                r["note"] = "scikit-learn " + sklearn.__version__
    except Exception as e:
        r["error"] = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    done[key] = r
    out["results"][case["id"]] = r
def peak_rss_mb():
    # VmHWM belongs to this process's own memory map. ru_maxrss would not do: the kernel
    # carries the parent's peak over into it at exec.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["peak_rss_mb"] = peak_rss_mb()
print(json.dumps(out))
"#;

/// What DuckDB did, per case id.
enum DuckOutcome {
    Skipped(String),
    Ran {
        version: String,
        threads: String,
        load_seconds: f64,
        peak_rss_mb: f64,
        results: HashMap<String, Result<Measured, String>>,
    },
}

fn duck_spec(dir: &Path, cases: &[Case], repeat: u32) -> Value {
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let cases: Vec<Value> = cases
        .iter()
        .map(|c| match &c.duck {
            DuckWork::Sql(sql) => json!({"id": c.id, "kind": "sql", "sql": sql}),
            DuckWork::KMeans(sql) => {
                json!({"id": c.id, "kind": "kmeans", "sql": sql, "k": KMEANS_K})
            }
        })
        .collect();
    json!({
        "events": path(dir.join("lake").join("events").join("*").join("*.parquet")),
        "profiles": path(dir.join(PROFILES_FILE)),
        "traits": path(dir.join(TRAITS_FILE)),
        "repeat": repeat,
        "cases": cases,
    })
}

fn parse_duck(stdout: &str) -> Result<DuckOutcome, String> {
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("no output")?;
    // Anything printed before the answer on its line (a progress bar ends with \r, not \n).
    let json = last.find('{').map_or(last, |at| &last[at..]);
    let v: Value = serde_json::from_str(json).map_err(|e| format!("unreadable output: {e}"))?;
    if v.get("missing").is_some() {
        return Ok(DuckOutcome::Skipped(
            "the duckdb Python package is not installed (pip install duckdb, or point --python at \
             an interpreter that has it)"
                .into(),
        ));
    }
    let mut results = HashMap::new();
    if let Some(map) = v["results"].as_object() {
        for (id, r) in map {
            let outcome = if let Some(e) = r["error"].as_str() {
                Err(format!("error: {e}"))
            } else if let Some(s) = r["skipped"].as_str() {
                Err(s.to_string())
            } else {
                let times = r["times"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(Value::as_f64)
                            .filter(|s| s.is_finite() && *s >= 0.0)
                            .map(Duration::from_secs_f64)
                            .collect()
                    })
                    .unwrap_or_default();
                let signature = r["signature"]
                    .as_array()
                    .map(|s| s.iter().map(|v| v.as_i64().unwrap_or(NULL_MARK)).collect());
                Ok(Measured { times, signature })
            };
            results.insert(id.clone(), outcome);
        }
    }
    Ok(DuckOutcome::Ran {
        version: v["version"].as_str().unwrap_or("?").to_string(),
        threads: match &v["threads"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        load_seconds: v["load_seconds"].as_f64().unwrap_or(f64::NAN),
        peak_rss_mb: v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
        results,
    })
}

/// Runs every case in one Python process; progress goes to stderr, the JSON answer to stdout.
async fn run_duckdb(python: &str, dir: &Path, cases: &[Case], repeat: u32) -> DuckOutcome {
    let spec = duck_spec(dir, cases, repeat).to_string();
    let python = python.to_string();
    let run = tokio::task::spawn_blocking(move || -> std::io::Result<std::process::Output> {
        let mut child = std::process::Command::new(&python)
            .arg("-c")
            .arg(DUCKDB_SCRIPT)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(spec.as_bytes())?;
        }
        child.wait_with_output()
    })
    .await;
    let output = match run {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            return DuckOutcome::Skipped(format!(
                "cannot run the Python interpreter ({e}); install Python 3 and `pip install duckdb`, \
                 or choose one with --python"
            ));
        }
        Err(e) => return DuckOutcome::Skipped(format!("the DuckDB runner stopped: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_duck(&stdout) {
        Ok(outcome) if output.status.success() => outcome,
        Ok(_) => DuckOutcome::Skipped(format!(
            "DuckDB failed ({}); its messages are above",
            output.status
        )),
        Err(e) => DuckOutcome::Skipped(format!(
            "DuckDB's answer could not be read ({e}; {}); its messages are above",
            output.status
        )),
    }
}

fn fmt_time(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn fmt_measured(m: &Result<Measured, String>) -> String {
    match m {
        Ok(m) => match (m.median(), m.best()) {
            (Some(median), Some(best)) if m.times.len() > 1 => {
                format!("{} ({})", fmt_time(median), fmt_time(best))
            }
            (Some(median), _) => fmt_time(median),
            _ => "-".into(),
        },
        Err(_) => "n/a".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The command

pub(crate) async fn run(args: BenchAnalyticsArgs) -> anyhow::Result<()> {
    if args.customers == 0 || args.events == 0 {
        bail!("--customers and --events must be at least 1");
    }
    let spec = LakeSpec {
        customers: args.customers,
        events: args.events,
        seed: args.seed,
    };
    let cal = Calendar::new();
    print_machine();

    let mut temp = None;
    let dir = match &args.data {
        Some(dir) => dir.clone(),
        None => {
            let t = tempfile::Builder::new()
                .prefix("cohort-bench-analytics-")
                .tempdir()
                .context("creating a temporary data directory")?;
            let path = t.path().to_path_buf();
            temp = Some(t);
            path
        }
    };
    let outcome = measure(&args, spec, &cal, &dir).await;
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
    outcome
}

async fn measure(
    args: &BenchAnalyticsArgs,
    spec: LakeSpec,
    cal: &Calendar,
    dir: &Path,
) -> anyhow::Result<()> {
    let meta = {
        let (dir, cal) = (dir.to_path_buf(), *cal);
        tokio::task::spawn_blocking(move || prepare_data(&dir, spec, &cal)).await??
    };
    if !reset_peak_rss() {
        println!("  (cannot reset the peak RSS reading; the figure below includes generation)");
    }

    let started = Instant::now();
    let state = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || -> anyhow::Result<MemoryState> {
            Ok(MemoryState {
                profiles: read_parquet(&dir.join(PROFILES_FILE))?,
                traits: read_parquet(&dir.join(TRAITS_FILE))?,
            })
        })
        .await??
    };
    println!(
        "Cohort: loaded the state tables into memory in {:.2} s ({} profiles, {} traits); \
         events are read from the lake's Parquet files by every query.",
        started.elapsed().as_secs_f64(),
        fmt_int(state.profiles.num_rows() as u64),
        fmt_int(state.traits.num_rows() as u64)
    );
    let lake = Lake::open(dir)?.with_state(Arc::new(state));
    for round in 1..=args.refresh_rounds {
        println!("Refresh round {round} of {}:", args.refresh_rounds);
        refresh_round(&lake, cal).await?;
    }
    let cases = selected(cases(cal)?, &args.only)?;
    let repeat = args.repeat.max(1);
    let now = cal.now()?;
    println!(
        "Queries run as of {} ({} events); each {} time(s) per engine, median (best) reported.",
        now.to_rfc3339_opts(SecondsFormat::Micros, true),
        fmt_int(meta.events_written),
        repeat
    );

    let mut cohort: HashMap<&str, Result<Measured, String>> = HashMap::new();
    let mut rfm = None;
    for (i, case) in cases.iter().enumerate() {
        let result = run_cohort(&lake, case, repeat, &mut rfm).await;
        match &result {
            Ok(m) => println!(
                "Cohort [{}/{}] {}: {}",
                i + 1,
                cases.len(),
                case.label.trim(),
                fmt_measured(&Ok(m.clone()))
            ),
            Err(e) => println!(
                "Cohort [{}/{}] {}: FAILED: {e:#}",
                i + 1,
                cases.len(),
                case.label.trim()
            ),
        }
        cohort.insert(case.id, result.map_err(|e| format!("{e:#}")));
    }
    let cohort_rss = peak_rss();
    drop(rfm);
    drop(lake);

    let duck = if args.no_duckdb {
        DuckOutcome::Skipped("--no-duckdb".into())
    } else {
        println!(
            "DuckDB: running the same {} queries with {} …",
            cases.len(),
            args.python
        );
        run_duckdb(&args.python, dir, &cases, repeat).await
    };

    print_table(&cases, &cohort, &duck, spec, meta.events_written, repeat);
    println!(
        "  Peak RSS of Cohort during the queries (state tables, DataFusion, k-means): {cohort_rss}"
    );
    match &duck {
        DuckOutcome::Ran {
            version,
            threads,
            load_seconds,
            peak_rss_mb,
            ..
        } => println!(
            "  DuckDB {version} ({threads} threads): loaded profiles and profile_traits into memory \
             in {load_seconds:.2} s; events are a view over read_parquet(…, hive_partitioning = true); \
             peak RSS of the Python process {peak_rss_mb:.0} MB"
        ),
        DuckOutcome::Skipped(why) => println!("  DuckDB skipped: {why}"),
    }
    println!(
        "  Load average after the run (1, 5, 15 min): {}",
        load_average()
    );

    let mismatches: Vec<&str> = cases
        .iter()
        .filter(|c| compare(c, &cohort, &duck) == Check::Mismatch)
        .map(|c| c.id)
        .collect();
    let failures: Vec<&str> = cases
        .iter()
        .filter(|c| matches!(cohort.get(c.id), Some(Err(_)) | None))
        .map(|c| c.id)
        .collect();
    if !mismatches.is_empty() {
        bail!(
            "MISMATCH: Cohort and DuckDB disagree on {}",
            mismatches.join(", ")
        );
    }
    if !failures.is_empty() {
        bail!("Cohort failed on {}", failures.join(", "));
    }
    Ok(())
}

/// One time-refresh round as the server runs it: every built-in tag's membership SQL, one after
/// another, in the background (`Lake::query_in_background`), each member list held until the next
/// tag starts, as the engine holds it to apply the changes. Prints each tag's time and members,
/// and the process's memory before and at its peak during the round.
async fn refresh_round(lake: &Lake, cal: &Calendar) -> anyhow::Result<()> {
    let now = cal.now()?;
    let tags = cohort_segment::tags::builtin_tags();
    let before = rss();
    if !reset_peak_rss() {
        println!("  (cannot reset the peak RSS reading; the peak below includes what came before)");
    }
    println!(
        "Refresh round: {} built-in tags, as of {} …",
        tags.len(),
        now.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let started = Instant::now();
    let mut members = 0usize;
    for tag in &tags {
        let sql = membership_sql(&tag.condition, now)?;
        let opts = QueryOptions {
            timeout: Duration::from_secs(600),
            max_rows: ALL_ROWS,
            max_bytes: usize::MAX,
        };
        let tag_started = Instant::now();
        let result = lake.query_in_background(&sql, opts).await?;
        let ids: std::collections::HashSet<i64> = flatten(&result.batches)?.into_iter().collect();
        drop(result);
        println!(
            "  {:<24} {:>10} members  {:>9}   RSS {}",
            tag.name,
            fmt_int(ids.len() as u64),
            fmt_time(tag_started.elapsed()),
            rss()
        );
        members += ids.len();
    }
    println!(
        "Refresh round: {} tags, {} memberships in {:.2} s; RSS {before} before the round \
         (state tables loaded), peak {} during it.",
        tags.len(),
        fmt_int(members as u64),
        started.elapsed().as_secs_f64(),
        peak_rss()
    );
    Ok(())
}

fn duck_result<'a>(duck: &'a DuckOutcome, id: &str) -> Option<&'a Result<Measured, String>> {
    match duck {
        DuckOutcome::Ran { results, .. } => results.get(id),
        DuckOutcome::Skipped(_) => None,
    }
}

fn compare(
    case: &Case,
    cohort: &HashMap<&str, Result<Measured, String>>,
    duck: &DuckOutcome,
) -> Check {
    // k-means from different initialisations need not agree; only the cluster count is shown.
    if matches!(case.cohort, CohortWork::KMeans) {
        return Check::Unchecked;
    }
    let ours = cohort
        .get(case.id)
        .and_then(|r| r.as_ref().ok())
        .and_then(|m| m.signature.as_deref());
    let theirs = duck_result(duck, case.id)
        .and_then(|r| r.as_ref().ok())
        .and_then(|m| m.signature.as_deref());
    check(ours, theirs)
}

fn print_table(
    cases: &[Case],
    cohort: &HashMap<&str, Result<Measured, String>>,
    duck: &DuckOutcome,
    spec: LakeSpec,
    events: u64,
    repeat: u32,
) {
    println!();
    println!(
        "Analytics over {} customers and {} events ({} run(s) each; times are median (best)):",
        fmt_int(spec.customers as u64),
        fmt_int(events),
        repeat
    );
    println!(
        "  {:<3} {:<42} {:>20} {:>20} {:>7}  answer",
        "#", "query", "Cohort", "DuckDB", "ratio"
    );
    let missing: Result<Measured, String> = Err("not run".into());
    let (mut compared, mut at_most_one) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let ours = cohort.get(case.id).unwrap_or(&missing);
        let theirs = duck_result(duck, case.id).unwrap_or(&missing);
        let ratio = match (ours, theirs) {
            (Ok(a), Ok(b)) => match (a.median(), b.median()) {
                (Some(a), Some(b)) if b > Duration::ZERO => {
                    let r = a.as_secs_f64() / b.as_secs_f64();
                    if !ENGINE_ONLY_CASES.contains(&case.id) {
                        compared += 1;
                        at_most_one += usize::from(r <= 1.0);
                    }
                    format!("{r:.2}")
                }
                _ => "-".into(),
            },
            _ => "-".into(),
        };
        let show = |m: &Result<Measured, String>| {
            m.as_ref()
                .ok()
                .and_then(|m| m.signature.as_deref())
                .map(case.show)
        };
        let answer = match (compare(case, cohort, duck), show(ours), show(theirs)) {
            (Check::Same, Some(a), _) => format!("{a} (same in both)"),
            (Check::Mismatch, a, b) => format!(
                "MISMATCH!!! Cohort {} | DuckDB {}",
                a.unwrap_or_default(),
                b.unwrap_or_default()
            ),
            (_, Some(a), Some(b)) => format!("Cohort {a} | DuckDB {b}"),
            (_, Some(a), None) => a,
            (_, None, _) => "-".into(),
        };
        println!(
            "  {:<3} {:<42} {:>20} {:>20} {:>7}  {answer}",
            i + 1,
            case.label,
            fmt_measured(ours),
            fmt_measured(theirs),
            ratio
        );
    }
    println!("  ratio = Cohort median / DuckDB median (below 1: Cohort faster).");
    // The issue's targets, reported, not asserted.
    let attribute_times: Vec<String> = cases
        .iter()
        .filter(|c| ATTRIBUTE_CASES.contains(&c.id))
        .map(|c| {
            let time = cohort
                .get(c.id)
                .and_then(|m| m.as_ref().ok())
                .and_then(Measured::median)
                .map_or_else(|| "n/a".into(), fmt_time);
            format!("{} {time}", c.id)
        })
        .collect();
    println!(
        "  Targets (issue 3): ratio at most 1.0 on {at_most_one} of {compared} compared rows \
         (rows {engine_rows} run one SQL text in both engines and are not counted); \
         attribute-only segments over {} profiles under 50 ms: {}.",
        fmt_int(spec.customers as u64),
        attribute_times.join(", "),
        engine_rows = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| ENGINE_ONLY_CASES.contains(&c.id))
            .map(|(i, _)| (i + 1).to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (i, case) in cases.iter().enumerate() {
        println!("  {}. {}", i + 1, case.detail);
        for (side, result) in [
            ("Cohort", cohort.get(case.id)),
            ("DuckDB", duck_result(duck, case.id)),
        ] {
            if let Some(Err(why)) = result {
                println!("     {side}: {why}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_demo::lake::{EventName, SimEvent, money};
    use cohort_ml::rfm::quintile_scores;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn answers_are_compared_value_by_value() {
        assert_eq!(check(Some(&[3]), Some(&[3])), Check::Same);
        assert_eq!(check(Some(&[3]), Some(&[4])), Check::Mismatch);
        assert_eq!(check(Some(&[1, 2]), Some(&[1])), Check::Mismatch);
        assert_eq!(check(Some(&[3]), None), Check::Unchecked);
        assert_eq!(check(None, Some(&[3])), Check::Unchecked);
        let m = Measured {
            times: [5, 1, 3, 9].map(Duration::from_millis).to_vec(),
            signature: None,
        };
        assert_eq!(m.median(), Some(Duration::from_millis(4)));
        assert_eq!(m.best(), Some(Duration::from_millis(1)));
    }

    #[test]
    fn duckdb_output_is_parsed() {
        let out = r#"{"version": "2.0.0", "threads": 2, "load_seconds": 0.5, "peak_rss_mb": 100,
            "results": {"a": {"times": [0.25, 0.5], "signature": [7, -9223372036854775808]},
                        "b": {"error": "Binder Error: x"}, "c": {"skipped": "scikit-learn is not installed"}}}"#;
        let Ok(DuckOutcome::Ran {
            results, version, ..
        }) = parse_duck(&format!("noise\n{}\n", out.replace('\n', " ")))
        else {
            panic!("not parsed");
        };
        assert_eq!(version, "2.0.0");
        let a = results["a"].as_ref().unwrap();
        assert_eq!(a.signature.as_deref(), Some(&[7, NULL_MARK][..]));
        assert_eq!(a.median(), Some(Duration::from_millis(375)));
        assert!(results["b"].as_ref().is_err());
        assert!(results["c"].as_ref().is_err());
        assert!(matches!(
            parse_duck(r#"{"missing": "duckdb"}"#),
            Ok(DuckOutcome::Skipped(_))
        ));
        assert!(parse_duck("").is_err());
        // A progress bar left on the answer's line.
        assert!(matches!(
            parse_duck("\r 86% ▕██▏ \r{\"version\": \"2\", \"results\": {}}"),
            Ok(DuckOutcome::Ran { .. })
        ));
    }

    /// Naive funnel and retention over the generated events, as `cohort-analysis` defines them.
    fn naive_funnel(events: &[SimEvent], cal: &Calendar) -> Vec<i64> {
        let window = FUNNEL_DAYS * DAY_US;
        let end = cal.start_us + i64::from(DAYS) * DAY_US;
        let mut by_customer: HashMap<u32, Vec<(usize, &SimEvent)>> = HashMap::new();
        // Position in the stream is the seq order.
        for (i, e) in events.iter().enumerate() {
            by_customer.entry(e.customer).or_default().push((i, e));
        }
        let mut steps = [0i64; 3];
        for evs in by_customer.values() {
            let mut level = 0;
            for (k, (_, first)) in evs.iter().enumerate() {
                if first.name != EventName::ProductViewed
                    || first.ts < cal.start_us
                    || first.ts >= end
                {
                    continue;
                }
                let mut reached = 1;
                let next = |from: usize, name: EventName| {
                    evs.iter()
                        .enumerate()
                        .skip(from + 1)
                        .find(|(_, (_, e))| e.name == name)
                        .map(|(j, (_, e))| (j, e.ts))
                };
                if let Some((j, t2)) = next(k, EventName::AddedToCart)
                    && t2 - first.ts <= window
                {
                    reached = 2;
                    if let Some((_, t3)) = next(j, EventName::OrderCompleted)
                        && t3 - first.ts <= window
                    {
                        reached = 3;
                    }
                }
                level = level.max(reached);
            }
            for step in steps.iter_mut().take(level) {
                *step += 1;
            }
        }
        steps.to_vec()
    }

    fn naive_retention(events: &[SimEvent]) -> Vec<i64> {
        let week = |ts: i64| {
            let day = ts.div_euclid(DAY_US);
            // 1970-01-01 was a Thursday: Monday-based weeks start 3 days earlier.
            day - (day + 3).rem_euclid(7)
        };
        let mut firsts: HashMap<u32, (usize, i64)> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            if e.name == EventName::SignedUp {
                firsts.entry(e.customer).or_insert((i, e.ts));
            }
        }
        let mut cells: std::collections::BTreeMap<(i64, i64), std::collections::BTreeSet<u32>> =
            Default::default();
        for (&c, &(_, ts)) in &firsts {
            cells.entry((week(ts), -1)).or_default().insert(c);
        }
        for (i, e) in events.iter().enumerate() {
            if e.name != EventName::Login {
                continue;
            }
            if let Some(&(first_i, first_ts)) = firsts.get(&e.customer)
                && e.ts >= first_ts
                && i != first_i
            {
                let k = (week(e.ts) - week(first_ts)) / 7;
                if (0..=RETENTION_WEEKS).contains(&k) {
                    cells
                        .entry((week(first_ts), k))
                        .or_default()
                        .insert(e.customer);
                }
            }
        }
        cells
            .iter()
            .flat_map(|(&(cohort, k), set)| [cohort, k, set.len() as i64])
            .collect()
    }

    fn naive_two_orders(events: &[SimEvent], cal: &Calendar, min_halves: Option<u32>) -> i64 {
        let mut counts: HashMap<u32, i64> = HashMap::new();
        for e in events {
            if e.name == EventName::OrderCompleted
                && e.ts >= cal.recent_from_us
                && min_halves.is_none_or(|m| e.amount > m)
            {
                *counts.entry(e.customer).or_default() += 1;
            }
        }
        counts.values().filter(|&&n| n >= 2).count() as i64
    }

    /// The whole Cohort side on a tiny lake: every query runs, and the answers agree with a
    /// naive computation over the generated events (the DuckDB side runs the same SQL).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cohort_queries_agree_with_the_events() {
        let cal = Calendar::new();
        let spec = LakeSpec::tiny();
        let dir = tempfile::tempdir().unwrap();
        let meta = prepare_data(dir.path(), spec, &cal).unwrap();
        let (world, events) = lake::in_memory(&spec, &cal).unwrap();
        assert_eq!(meta.events_written, events.len() as u64);
        // Reuse with the same spec, refusal with another.
        assert!(prepare_data(dir.path(), spec, &cal).is_ok());
        let other = LakeSpec { seed: 12, ..spec };
        assert!(prepare_data(dir.path(), other, &cal).is_err());

        let state = MemoryState {
            profiles: read_parquet(&dir.path().join(PROFILES_FILE)).unwrap(),
            traits: read_parquet(&dir.path().join(TRAITS_FILE)).unwrap(),
        };
        assert_eq!(state.profiles.num_rows(), spec.customers);
        let lake = Lake::open(dir.path()).unwrap().with_state(Arc::new(state));
        let mut rfm = None;
        let mut answers: HashMap<&str, Vec<i64>> = HashMap::new();
        for case in cases(&cal).unwrap() {
            let measured = run_cohort(&lake, &case, 1, &mut rfm)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:#}", case.id));
            assert_eq!(measured.times.len(), 1);
            answers.insert(case.id, measured.signature.unwrap());
        }

        let platinum = world
            .totals
            .iter()
            .filter(|t| {
                money(t.revenue_30d) > 5000.0
                    && t.last_seen.is_some_and(|l| l >= cal.now_us - 30 * DAY_US)
            })
            .count() as i64;
        assert_eq!(answers["platinum"], vec![platinum]);
        let plan = world
            .customers
            .iter()
            .zip(&world.totals)
            .filter(|(c, t)| c.plan >= 1 && t.orders >= 3)
            .count() as i64;
        assert_eq!(answers["plan"], vec![plan]);
        let big = naive_two_orders(&events, &cal, Some(200));
        assert!(big > 0, "the tiny data has no such customer");
        assert_eq!(answers["event_json"], vec![big]);
        assert_eq!(answers["event_column"], vec![big]);
        let two = naive_two_orders(&events, &cal, None);
        assert_eq!(answers["two_orders_scan"], vec![two]);
        // The precomputed trait selects exactly the customers the event scan does.
        assert_eq!(answers["two_orders_trait"], vec![two]);
        assert_eq!(answers["funnel"], naive_funnel(&events, &cal));
        assert_eq!(answers["funnel_sql"], answers["funnel"]);
        assert_eq!(answers["retention"], naive_retention(&events));
        assert_eq!(answers["retention_sql"], answers["retention"]);

        let orders: Vec<RfmInput> = world
            .totals
            .iter()
            .enumerate()
            .filter(|(_, t)| t.orders > 0)
            .map(|(i, t)| RfmInput {
                customer_id: i as i64 + 1,
                recency_days: u32::try_from(
                    epoch_day(END_DAY) - t.last_order.unwrap_or(0).div_euclid(DAY_US),
                )
                .unwrap(),
                orders: t.orders as u64,
                revenue: money(t.revenue),
            })
            .collect();
        assert_eq!(answers["rfm"], rfm_signature(&orders));
        assert!(answers["kmeans"][0] >= 1);
    }

    /// The DuckDB side scores RFM in SQL with `rank()`; it must be the rule `quintile_scores`
    /// applies, ties included.
    #[test]
    fn the_sql_quintile_rule_is_the_rust_one() {
        let mut rng = SmallRng::seed_from_u64(5);
        for n in [1usize, 2, 3, 7, 10, 101, 1000] {
            // Few distinct values, so that large tie groups straddle the quintile edges.
            let values: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(0..12u32)))
                .collect();
            let sql_rule: Vec<u8> = values
                .iter()
                .map(|v| {
                    let rank = 1 + values.iter().filter(|w| *w < v).count();
                    (5 * (2 * rank - 1) / (2 * n) + 1).min(5) as u8
                })
                .collect();
            assert_eq!(quintile_scores(&values), sql_rule, "n = {n}");
        }
    }
}
