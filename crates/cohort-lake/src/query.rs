//! The query side: a DataFusion session over the lake and the state tables.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::StreamExt;

use crate::files::{Area, LATE_DIR, SeqRange, io_err, parse_part_file_name};
use crate::merges::{MergeMap, survivor_udf};
use crate::render;
use crate::schema::{
    DATE_COLUMN, event_file_schema, events_table_schema, events_to_batch, identities_schema,
    memberships_schema, profile_traits_schema, profiles_schema, segment_changes_schema,
};
use crate::store::LakeStore;
use crate::{LakeError, LakeEvent};

/// Error a [`StateTables`] implementation returns.
pub type StateError = Box<dyn std::error::Error + Send + Sync>;

/// The state store's tables, handed to the SQL engine as Arrow batches.
///
/// Each method is called once per query that reads the table, from the
/// query's task, so it should answer quickly (from memory or one indexed
/// read). Batches must carry the columns of the documented schemas
/// ([`profiles_schema`](crate::profiles_schema) …) by name; a column of
/// another type is cast (for example a timestamp in milliseconds), a missing
/// one is an error. All timestamps are `TIMESTAMP` in microseconds, UTC.
///
/// | table | columns |
/// | --- | --- |
/// | `profiles` | `customer_id BIGINT, created_at TIMESTAMP, first_seen TIMESTAMP, last_seen TIMESTAMP, event_count BIGINT, orders BIGINT, total_revenue DOUBLE, revenue_30d DOUBLE, orders_30d BIGINT, last_order_at TIMESTAMP, average_order_value DOUBLE` |
/// | `profile_traits` | `customer_id BIGINT, key VARCHAR, value VARCHAR, number DOUBLE` |
/// | `identities` | `customer_id BIGINT, kind VARCHAR, value VARCHAR, first_seen TIMESTAMP` |
/// | `memberships` | `segment VARCHAR, customer_id BIGINT, entered_at TIMESTAMP` |
/// | `segment_changes` | `id BIGINT, segment VARCHAR, kind VARCHAR, customer_id BIGINT, change VARCHAR, at TIMESTAMP, reason VARCHAR` |
pub trait StateTables: Send + Sync {
    /// One row per customer profile.
    fn profiles(&self) -> Result<RecordBatch, StateError>;
    /// One row per trait of a profile; `number` is set when the value is numeric.
    fn profile_traits(&self) -> Result<RecordBatch, StateError>;
    /// One row per identifier (email, user_id, anonymous_id …) of a profile.
    fn identities(&self) -> Result<RecordBatch, StateError>;
    /// One row per (segment, customer) currently in the segment.
    fn memberships(&self) -> Result<RecordBatch, StateError>;
    /// One row per entry into or exit from a segment or tag, oldest first.
    fn segment_changes(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(segment_changes_schema()))
    }
    /// (merged-away customer, surviving customer) pairs; `events.customer_id` is mapped
    /// through them. Called once per query.
    fn customer_merges(&self) -> Result<Vec<(i64, i64)>, StateError> {
        Ok(Vec::new())
    }
}

/// State with no rows, for tests and for a lake used without a state store.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyState;

impl StateTables for EmptyState {
    fn profiles(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(profiles_schema()))
    }
    fn profile_traits(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(profile_traits_schema()))
    }
    fn identities(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(identities_schema()))
    }
    fn memberships(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(memberships_schema()))
    }
}

/// Limits of one query.
#[derive(Clone, Copy, Debug)]
pub struct QueryOptions {
    /// Wall-clock limit, planning included.
    pub timeout: Duration,
    /// Rows returned at most; more set [`QueryResult::truncated`].
    pub max_rows: usize,
    /// Bytes of Arrow memory the result may hold at most; a larger result is an error
    /// (rows can be cut, but a too-wide result would be cut silently in the wrong place).
    pub max_bytes: usize,
}

/// Default of [`QueryOptions::max_bytes`]: large enough for a million narrow rows, small enough
/// that a few such results at once stay well inside a small server's memory.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 256 * 1024 * 1024;

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_rows: 10_000,
            max_bytes: DEFAULT_MAX_RESULT_BYTES,
        }
    }
}

/// Rows of a query.
#[derive(Clone, Debug)]
pub struct QueryResult {
    /// `(name, SQL type)` of each column, in order (`BIGINT`, `DOUBLE`,
    /// `VARCHAR`, `TIMESTAMP`, `DATE`, `BOOLEAN` …).
    pub columns: Vec<(String, String)>,
    /// The Arrow schema of the batches.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Whether rows beyond [`QueryOptions::max_rows`] were cut off.
    pub truncated: bool,
}

impl QueryResult {
    /// Number of rows returned.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// One JSON object per row, every column present (`null` when NULL).
    /// Timestamps are RFC 3339 strings.
    pub fn to_json_rows(
        &self,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, LakeError> {
        render::json_rows(&self.schema, &self.batches)
    }

    /// The rows as one JSON array of objects, written straight to bytes: what
    /// [`QueryResult::to_json_rows`] gives, without a `serde_json::Value` per cell (several
    /// times the result's own size in memory).
    pub fn to_json_array(&self) -> Result<Vec<u8>, LakeError> {
        render::json_array(&self.schema, &self.batches)
    }

    /// CSV with a header line; nested values are rendered as text, and text that a
    /// spreadsheet would run as a formula is defused with a leading `'`.
    pub fn to_csv(&self) -> Result<String, LakeError> {
        render::csv(&self.schema, &self.batches)
    }

    /// A boxed text table for terminals.
    pub fn to_table_text(&self) -> Result<String, LakeError> {
        render::table_text(&self.schema, &self.batches)
    }

    /// Writes the rows to a Parquet file (Snappy) at `path`, atomically
    /// (temporary file, fsync, rename). Returns the number of rows written.
    pub fn to_parquet(&self, path: impl AsRef<Path>) -> Result<usize, LakeError> {
        render::parquet(&self.schema, &self.batches, path.as_ref())
    }
}

/// What the providers read at query time; swapped by the setters.
struct Shared {
    recent: RwLock<Option<RecordBatch>>,
    state: RwLock<Arc<dyn StateTables>>,
    merges: Arc<MergeMap>,
}

impl Shared {
    /// Loads the merge map the `events` view applies, once per query.
    fn refresh_merges(&self) -> Result<(), LakeError> {
        let state = Arc::clone(
            &self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let pairs = state
            .customer_merges()
            .map_err(|e| LakeError::Query(format!("reading customer merges: {e}")))?;
        self.merges.set(pairs);
        Ok(())
    }

    fn recent(&self) -> Option<RecordBatch> {
        // A poisoned lock still holds a whole value: the writers only swap it.
        self.recent
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    fn state(&self) -> Arc<dyn StateTables> {
        Arc::clone(
            &self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The SQL engine over the lake. Cheap to share (`Arc<Lake>`): queries run
/// concurrently and read the files as they are when each query starts.
///
/// Tables: `events` (the Parquet lake, partitioned by `date`, plus the recent
/// rows given to [`set_recent`](Self::set_recent)), and `profiles`,
/// `profile_traits`, `identities`, `memberships` from [`StateTables`].
/// Functions: DataFusion's built-ins (datetime, string, regex, math, arrays)
/// and the JSON functions of `datafusion-functions-json` (`json_get_str`,
/// `json_get_float`, `json_get_int`, `json_get_bool`, `json_get_json`,
/// `json_as_text`, `json_contains`, `json_length`, `json_object_keys`, and the
/// `->` / `->>` operators) for the `properties`, `context` and `traits` columns.
pub struct Lake {
    ctx: SessionContext,
    /// The memory budget and spill files of [`Lake::query_in_background`].
    background_runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    shared: Arc<Shared>,
    events_dir: PathBuf,
    /// Queries run here, not on the caller's runtime: a CPU-bound plan then
    /// cannot starve the caller's timers (the query timeout) or its other
    /// tasks (HTTP handlers). `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Lake {
    fn drop(&mut self) {
        // A runtime dropped inside async code panics; this one may be.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Inserts a yield point above every operator that can emit many batches per
/// input batch (joins, unnest). DataFusion yields to Tokio at its leaves only,
/// so a cross join would otherwise run for minutes without ever returning to
/// the scheduler, and could be neither timed out nor cancelled.
#[derive(Debug)]
struct YieldAfterAmplifiers;

impl PhysicalOptimizerRule for YieldAfterAmplifiers {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let name = node.name();
            if name.contains("Join") || name == "UnnestExec" {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "cohort_yield_after_amplifiers"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

impl fmt::Debug for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lake")
            .field("events_dir", &self.events_dir)
            .finish_non_exhaustive()
    }
}

const LAKE_URL: &str = "lake://events";

/// Blocking threads (file reads) of the query runtime per core.
const MAX_READS_PER_CORE: usize = 4;

/// Below this, even small queries fail; a smaller setting is raised to it.
const MIN_MEMORY_LIMIT: usize = 16 << 20;

/// Working memory for SQL: `COHORT_QUERY_MEMORY_MB` if set, else a quarter of
/// the machine's memory (at least 256 MB, at most 8 GB), so a runaway query
/// cannot take the memory ingest and processing need.
pub fn default_memory_limit() -> usize {
    if let Some(mb) = std::env::var("COHORT_QUERY_MEMORY_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return mb.saturating_mul(1 << 20);
    }
    let total_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        })
        .unwrap_or(4 << 20);
    (total_kb.saturating_mul(1024) / 4).clamp(256 << 20, 8 << 30)
}

/// Working memory for background queries: `COHORT_BACKGROUND_QUERY_MEMORY_MB` if set, else a
/// quarter of the interactive budget, between 64 MB and 512 MB.
fn background_memory_limit(interactive: usize) -> usize {
    match std::env::var("COHORT_BACKGROUND_QUERY_MEMORY_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(mb) => mb.saturating_mul(1 << 20).max(MIN_MEMORY_LIMIT),
        None => (interactive / 4).clamp(64 << 20, 512 << 20),
    }
}

impl Lake {
    /// Opens the lake under `<data_dir>/lake` for queries (creating the
    /// directory if needed) with [`EmptyState`] as state tables. Queries share
    /// [`default_memory_limit`] bytes of working memory.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, LakeError> {
        Self::open_with_memory_limit(data_dir, default_memory_limit())
    }

    /// [`Lake::open`] with a given limit on the memory all running queries
    /// hold at once (hash tables, sorts, buffered rows). Sorts and
    /// aggregations beyond it spill to temporary files where DataFusion can;
    /// a query that still does not fit fails with "resources exhausted"
    /// instead of taking the server's memory.
    pub fn open_with_memory_limit(
        data_dir: impl AsRef<Path>,
        memory_limit: usize,
    ) -> Result<Self, LakeError> {
        let events_dir = data_dir.as_ref().join("lake").join("events");
        std::fs::create_dir_all(&events_dir).map_err(|e| io_err(&events_dir, e))?;
        let shared = Arc::new(Shared {
            recent: RwLock::new(None),
            state: RwLock::new(Arc::new(EmptyState)),
            merges: Arc::new(MergeMap::default()),
        });

        // DataFusion caches directory listings forever by default; the lake
        // changes under it, so every query lists again (a few directories).
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory_limit.max(MIN_MEMORY_LIMIT), 1.0)
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()
            .map_err(query_error)?;
        // Background work (periodic re-evaluations) has a budget of its own, well below the
        // interactive one: a refresh round runs one query after another for every definition,
        // and each may take this much, spilling to disk beyond it, without the round as a whole
        // taking the memory that ingest and the API need.
        let background_runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(background_memory_limit(memory_limit), 1.0)
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()
            .map_err(query_error)?;
        let store_url = ObjectStoreUrl::parse(LAKE_URL).map_err(query_error)?;
        let store: Arc<LakeStore> =
            Arc::new(LakeStore::new(&events_dir).map_err(|e| {
                LakeError::Query(format!("cannot open {}: {e}", events_dir.display()))
            })?);
        runtime.register_object_store(store_url.as_ref(), store.clone());
        background_runtime.register_object_store(store_url.as_ref(), store);

        // DataFusion's own DATAFUSION_* environment variables tune the engine
        // (documented in its configuration reference). Filter pushdown stays
        // off: lake files are sorted by event name, so the page index already
        // narrows a scan to the pages of the names asked for, and decoding
        // the filter columns in a pass of their own then costs more than it
        // saves (measured in docs/BENCHMARKS.md).
        let mut config = SessionConfig::from_env()
            .map_err(query_error)?
            .with_information_schema(true);
        // A per-customer GROUP BY in two phases hashes every row twice. The first phase pays
        // only where it shrinks the rows a lot; at 2 rows per group it doubled the aggregation
        // time of an event segment over 1M customers (docs/BENCHMARKS.md). DataFusion's default
        // keeps it down to a 20 % reduction.
        if std::env::var_os(SKIP_PARTIAL_AGGREGATION_ENV).is_none() {
            config
                .options_mut()
                .execution
                .skip_partial_aggregation_probe_ratio_threshold = SKIP_PARTIAL_AGGREGATION_RATIO;
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(YieldAfterAmplifiers))
            .with_physical_optimizer_rule(Arc::new(crate::float_cmp::SkipZeroNormalisation))
            .build();
        let mut ctx = SessionContext::new_with_state(state);
        datafusion_functions_json::register_all(&mut ctx).map_err(query_error)?;
        let survivor = survivor_udf(Arc::clone(&shared.merges));
        ctx.register_udf(survivor.clone());

        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![(DATE_COLUMN.to_owned(), DataType::Date32)]);
        let url = ListingTableUrl::parse(format!("{LAKE_URL}/")).map_err(query_error)?;
        // The day directories; files outside a `date=` directory (the late area) are not its.
        let days = ListingTable::try_new(
            ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(event_file_schema()),
        )
        .map_err(query_error)?;
        let late_options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let late_url =
            ListingTableUrl::parse(format!("{LAKE_URL}/{LATE_DIR}/")).map_err(query_error)?;
        let late = ListingTable::try_new(
            ListingTableConfig::new(late_url)
                .with_listing_options(late_options)
                .with_schema(events_table_schema()),
        )
        .map_err(query_error)?;
        let events = EventsTable {
            days: Arc::new(days),
            late: Arc::new(late),
            shared: Arc::clone(&shared),
        };
        let events: Arc<dyn TableProvider> = Arc::new(events);
        ctx.register_table(RAW_EVENTS, Arc::clone(&events))
            .map_err(query_error)?;
        ctx.register_table("events", events_view(events, &survivor)?)
            .map_err(query_error)?;
        for table in StateTable::ALL {
            let provider = StateProvider {
                table,
                schema: table.schema(),
                shared: Arc::clone(&shared),
            };
            ctx.register_table(table.name(), Arc::new(provider))
                .map_err(query_error)?;
        }
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let query_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            // File reads run on the blocking pool. Tokio's default lets it grow to 512 threads;
            // a refresh round grew it to about 57, each keeping its own allocator cache, and the
            // process kept about 1.5 GB it no longer used (docs/BENCHMARKS.md, refresh round).
            // A few reads in flight per core keep the disk and the page cache busy enough.
            .max_blocking_threads(threads * MAX_READS_PER_CORE)
            .thread_name("cohort-lake-query")
            // A margin for DataFusion's recursive planning; the nesting check
            // (`MAX_EXPR_DEPTH`) is what keeps queries within it.
            .thread_stack_size(QUERY_THREAD_STACK)
            .on_thread_start(|| {
                if !cohort_core::priority::yield_to_requests() {
                    tracing::debug!("could not lower a query thread's priority");
                }
            })
            .enable_time()
            .build()
            .map_err(|e| LakeError::Internal(format!("cannot start the query runtime: {e}")))?;
        Ok(Self {
            ctx,
            background_runtime,
            shared,
            events_dir,
            runtime: Some(query_runtime),
        })
    }

    /// Uses `state` for the `profiles`, `profile_traits`, `identities` and
    /// `memberships` tables from now on.
    pub fn with_state(self, state: Arc<dyn StateTables>) -> Self {
        self.set_state(state);
        self
    }

    /// Replaces the state tables' source.
    pub fn set_state(&self, state: Arc<dyn StateTables>) {
        *self
            .shared
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    /// Sets the processed events not yet written to Parquet; queries of
    /// `events` see them next to the lake's rows. Rows whose seq is already in
    /// a file the query reads are ignored, so a caller may clear them lazily
    /// after [`LakeWriter::append`](crate::LakeWriter::append) without rows
    /// being counted twice.
    pub fn set_recent(&self, events: Vec<LakeEvent>) -> Result<(), LakeError> {
        let batch = if events.is_empty() {
            None
        } else {
            let refs: Vec<&LakeEvent> = events.iter().collect();
            Some(events_to_batch(&refs, true)?)
        };
        *self
            .shared
            .recent
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = batch;
        Ok(())
    }

    /// Runs one read-only SQL statement.
    ///
    /// Errors: [`LakeError::NotReadOnly`] for anything but a query (checked
    /// before planning), [`LakeError::Timeout`] when `opts.timeout` passes (the
    /// query is cancelled), [`LakeError::Query`] with DataFusion's message for
    /// SQL and execution errors.
    ///
    /// Must be called from within a Tokio runtime (its timer measures the
    /// timeout); the query itself runs on the lake's own threads.
    pub async fn query(&self, sql: &str, opts: QueryOptions) -> Result<QueryResult, LakeError> {
        self.query_on(self.ctx.clone(), sql, opts).await
    }

    /// [`Lake::query`] for work that nobody waits on, such as periodic re-evaluations: planned
    /// for one partition, so that it keeps one of the lake's threads busy rather than all of
    /// them, and API requests keep a core on a small machine (docs/BENCHMARKS.md has the lookup
    /// latencies measured during refresh rounds with and without it).
    pub async fn query_in_background(
        &self,
        sql: &str,
        opts: QueryOptions,
    ) -> Result<QueryResult, LakeError> {
        let mut state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_runtime_env(Arc::clone(&self.background_runtime))
            .build();
        state.config_mut().options_mut().execution.target_partitions = 1;
        self.query_on(SessionContext::new_with_state(state), sql, opts)
            .await
    }

    async fn query_on(
        &self,
        ctx: SessionContext,
        sql: &str,
        opts: QueryOptions,
    ) -> Result<QueryResult, LakeError> {
        check_read_only(sql)?;
        let sql = sql.to_owned();
        let (max_rows, max_bytes) = (opts.max_rows, opts.max_bytes);
        self.run_timed(opts.timeout, async move {
            run_with_retry(&ctx, &sql, max_rows, max_bytes).await
        })
        .await
    }

    /// Runs `work` on the lake's threads after loading the merge map, cancelled
    /// after `timeout`: a task of its own, so that abort() stops it at its
    /// next yield.
    async fn run_timed<T: Send + 'static>(
        &self,
        timeout: Duration,
        work: impl Future<Output = Result<T, LakeError>> + Send + 'static,
    ) -> Result<T, LakeError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| LakeError::Internal("the lake is shutting down".into()))?;
        let shared = Arc::clone(&self.shared);
        let mut task = runtime.spawn(async move {
            shared.refresh_merges()?;
            work.await
        });
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(LakeError::Query(format!("query task failed: {join}"))),
            Err(_) => {
                task.abort();
                Err(LakeError::Timeout(timeout))
            }
        }
    }
}

impl Lake {
    /// Runs `sql` and hands its batches, as they come, to `fold`, which
    /// accumulates into a state made by `init`; returns the final state. For
    /// analyses that reduce many rows in Rust without holding them all.
    /// `fold` may answer [`ControlFlow::Break`] to stop reading early.
    ///
    /// Errors and the timeout are those of [`Lake::query`]. When the query
    /// must be re-planned (a file was compacted away under it), the state is
    /// made anew, so no batch is folded twice.
    pub async fn fold<S, I, F>(
        &self,
        sql: &str,
        timeout: Duration,
        init: I,
        fold: F,
    ) -> Result<S, LakeError>
    where
        S: Send + 'static,
        I: Fn() -> S + Send + 'static,
        F: FnMut(&mut S, &RecordBatch) -> Result<ControlFlow<()>, LakeError> + Send + 'static,
    {
        check_read_only(sql)?;
        let ctx = self.ctx.clone();
        let sql = sql.to_owned();
        self.run_timed(timeout, async move {
            let mut fold = fold;
            let mut attempt = 0;
            loop {
                let mut state = init();
                match fold_stream(&ctx, &sql, &mut state, &mut fold).await {
                    Ok(()) => return Ok(state),
                    Err(FoldError::Engine(e)) if attempt < 2 && is_file_not_found(&e) => {
                        attempt += 1;
                        tracing::debug!(attempt, "lake file vanished during a fold, retrying");
                    }
                    Err(FoldError::Engine(e)) => return Err(query_error(e)),
                    Err(FoldError::Fold(e)) => return Err(e),
                }
            }
        })
        .await
    }
}

enum FoldError {
    Engine(DataFusionError),
    Fold(LakeError),
}

async fn fold_stream<S, F>(
    ctx: &SessionContext,
    sql: &str,
    state: &mut S,
    fold: &mut F,
) -> Result<(), FoldError>
where
    F: FnMut(&mut S, &RecordBatch) -> Result<ControlFlow<()>, LakeError>,
{
    let df = ctx
        .sql_with_options(sql, read_only_options())
        .await
        .map_err(FoldError::Engine)?;
    let mut stream = df.execute_stream().await.map_err(FoldError::Engine)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(FoldError::Engine)?;
        if batch.num_rows() > 0 && fold(state, &batch).map_err(FoldError::Fold)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// Compaction deletes files a running query may have listed a moment before;
/// planning again sees the merged file instead.
async fn run_with_retry(
    ctx: &SessionContext,
    sql: &str,
    max_rows: usize,
    max_bytes: usize,
) -> Result<QueryResult, LakeError> {
    let mut attempt = 0;
    loop {
        match run(ctx, sql, max_rows, max_bytes).await {
            Err(e) if attempt < 2 && is_file_not_found(&e) => {
                attempt += 1;
                tracing::debug!(attempt, "lake file vanished during query, retrying");
            }
            other => return other.map_err(query_error),
        }
    }
}

async fn run(
    ctx: &SessionContext,
    sql: &str,
    max_rows: usize,
    max_bytes: usize,
) -> Result<QueryResult, DataFusionError> {
    let df = ctx.sql_with_options(sql, read_only_options()).await?;
    // One row more than asked tells whether rows were cut, and lets DataFusion
    // stop early (top-k sorts, limited scans). EXPLAIN and DESCRIBE must stay
    // the root of their plan; their few rows are cut below like any others.
    let describes = matches!(
        df.logical_plan(),
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
    );
    let df = if describes {
        df
    } else {
        df.limit(0, max_rows.checked_add(1))?
    };
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut bytes = 0usize;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        bytes = bytes.saturating_add(batch.get_array_memory_size());
        if bytes > max_bytes {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the result holds more than {} MB; select fewer columns or rows (LIMIT), or aggregate",
                max_bytes / (1024 * 1024)
            )));
        }
        let room = max_rows - rows;
        if batch.num_rows() > room {
            if room > 0 {
                batches.push(batch.slice(0, room));
            }
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), sql_type_name(f.data_type())))
        .collect();
    Ok(QueryResult {
        columns,
        schema,
        batches,
        truncated,
    })
}

/// Stack of each query thread: four times Rust's default.
const QUERY_THREAD_STACK: usize = 8 * 1024 * 1024;

fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Accepts exactly one query (`SELECT`, `WITH`, `VALUES`, set operations),
/// `EXPLAIN` of one, `DESCRIBE table` and `SHOW TABLES` / `SHOW COLUMNS`;
/// rejects everything else before it is planned. Planning then checks again
/// (no DDL, DML or session statements), which also catches `SELECT … INTO`.
/// Texts over [`MAX_SQL_BYTES`] and queries nested deeper than [`MAX_EXPR_DEPTH`] are refused
/// too: DataFusion's planner would overflow its stack on them.
pub fn check_read_only(sql: &str) -> Result<(), LakeError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(LakeError::Query(format!(
            "the query is {} bytes long; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    // The parser builds a long `a + b + c …` chain without recursion, but dropping (and any
    // other walk of) that tree recurses once per operator, so a hostile text is read on a
    // thread whose stack fits the deepest tree its length allows. Only pages that are used are
    // ever backed by memory. The nesting limit below then keeps such trees from the planner.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cohort-sql-check".into())
            .stack_size(CHECK_STACK_PER_BYTE * sql.len() + 2 * 1024 * 1024)
            .spawn_scoped(scope, || check_text(sql))
            .map_err(|e| LakeError::Internal(format!("cannot start the SQL check: {e}")))?
            .join()
            .map_err(|_| LakeError::Internal("the SQL check failed".into()))?
    })
}

/// Longest SQL text accepted (segment definitions at their cost limit compile to about 1.3 MB).
pub const MAX_SQL_BYTES: usize = 4 * 1024 * 1024;

/// Stack reserved per byte of SQL for [`check_read_only`]: one tree level per two bytes at
/// most (`1+1+…`), a few hundred bytes of stack per level in an unoptimised build.
const CHECK_STACK_PER_BYTE: usize = 256;

fn check_text(sql: &str) -> Result<(), LakeError> {
    let statements =
        DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(query_error)?;
    let mut iter = statements.iter();
    let (Some(statement), None) = (iter.next(), iter.next()) else {
        return Err(LakeError::Query(format!(
            "expected exactly one SQL statement, got {}",
            statements.len()
        )));
    };
    check_statement(statement)?;
    check_nesting(statement)
}

/// Deepest nesting of expressions and subqueries a query may have. DataFusion plans, optimises
/// and evaluates expression trees by recursion, so a deep tree (`1+1+…+1` of a few thousand
/// terms, a long generated `OR` chain) would overflow a query thread's stack, which aborts the
/// process rather than failing the query. A few hundred levels is far beyond what people write;
/// long lists belong in `IN (…)`, which is one level.
pub const MAX_EXPR_DEPTH: usize = 256;

/// Refuses a statement nested deeper than [`MAX_EXPR_DEPTH`]. The walk stops descending at the
/// limit, so checking costs at most that many stack frames whatever the input.
fn check_nesting(statement: &DfStatement) -> Result<(), LakeError> {
    use datafusion::sql::sqlparser::ast::{Expr, Query, Visit, Visitor};
    use std::ops::ControlFlow;

    struct Depth {
        now: usize,
    }
    impl Depth {
        fn enter(&mut self) -> ControlFlow<()> {
            self.now += 1;
            if self.now > MAX_EXPR_DEPTH {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.enter()
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.enter()
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
    }

    let statement = match statement {
        DfStatement::Statement(s) => s.as_ref(),
        DfStatement::Explain(explain) => return check_nesting(&explain.statement),
        // Refused by `check_statement` already.
        _ => return Ok(()),
    };
    match statement.visit(&mut Depth { now: 0 }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(LakeError::Query(format!(
            "the query nests expressions or subqueries more than {MAX_EXPR_DEPTH} levels deep \
             (a long chain such as a OR b OR c … counts one level per operator); \
             write long alternatives as IN (…)"
        ))),
    }
}

fn check_statement(statement: &DfStatement) -> Result<(), LakeError> {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_)
            | SqlStatement::ExplainTable { .. }
            | SqlStatement::ShowTables { .. }
            | SqlStatement::ShowColumns { .. } => Ok(()),
            SqlStatement::Explain { statement, .. } => {
                check_statement(&DfStatement::Statement(statement.clone()))
            }
            other => Err(LakeError::NotReadOnly(first_keyword(&other.to_string()))),
        },
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => {
            Err(LakeError::NotReadOnly("CREATE EXTERNAL TABLE".into()))
        }
        DfStatement::CopyTo(_) => Err(LakeError::NotReadOnly("COPY".into())),
        DfStatement::Reset(_) => Err(LakeError::NotReadOnly("RESET".into())),
    }
}

fn first_keyword(statement: &str) -> String {
    let words: Vec<&str> = statement.split_whitespace().take(2).collect();
    match words.as_slice() {
        // Two words name these statements better than one.
        [first @ ("CREATE" | "DROP" | "ALTER" | "TRUNCATE"), second] => {
            format!("{first} {second}")
        }
        [first, ..] => (*first).to_owned(),
        [] => "an empty statement".to_owned(),
    }
}

/// Converts a DataFusion error into [`LakeError::Query`] with the innermost
/// message and without DataFusion's category prefixes.
pub(crate) fn query_error(e: DataFusionError) -> LakeError {
    LakeError::Query(clean_message(&e))
}

fn clean_message(e: &DataFusionError) -> String {
    let root = e.find_root();
    let text = match root {
        DataFusionError::SQL(parser, _) => {
            let msg = parser.to_string();
            let msg = msg.strip_prefix("sql parser error: ").unwrap_or(&msg);
            format!("syntax error: {msg}")
        }
        DataFusionError::Plan(msg)
        | DataFusionError::Execution(msg)
        | DataFusionError::Configuration(msg) => msg.clone(),
        DataFusionError::NotImplemented(msg) => format!("not supported: {msg}"),
        DataFusionError::ResourcesExhausted(msg) => format!("resources exhausted: {msg}"),
        DataFusionError::Internal(msg) => format!("internal error: {msg}"),
        DataFusionError::SchemaError(err, _) => err.to_string(),
        DataFusionError::ArrowError(err, _) => err.to_string(),
        other => other.strip_backtrace(),
    };
    text.trim().to_owned()
}

fn is_file_not_found(e: &DataFusionError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(os) = err.downcast_ref::<datafusion::object_store::Error>()
            && matches!(os, datafusion::object_store::Error::NotFound { .. })
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::NotFound
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// SQL names for the common Arrow types; Arrow's own name otherwise.
pub(crate) fn sql_type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INT UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Interval(_) => "INTERVAL".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Null => "NULL".into(),
        DataType::Dictionary(_, value) => sql_type_name(value),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            format!("{}[]", sql_type_name(f.data_type()))
        }
        other => other.to_string(),
    }
}

/// The table of events as written; `events` is this with merged customers mapped to survivors.
const RAW_EVENTS: &str = "events_raw";

/// `SELECT …, cohort_survivor(customer_id) AS customer_id, … FROM events_raw`. Filters on the
/// other columns (the `date` partition, names, times) still reach the scan.
fn events_view(
    raw: Arc<dyn TableProvider>,
    survivor: &datafusion::logical_expr::ScalarUDF,
) -> Result<Arc<dyn TableProvider>, LakeError> {
    use datafusion::datasource::{ViewTable, provider_as_source};
    use datafusion::logical_expr::LogicalPlanBuilder;
    let schema = raw.schema();
    let columns: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            let column = Expr::Column(datafusion::common::Column::new_unqualified(f.name()));
            if f.name() == "customer_id" {
                survivor.call(vec![column]).alias("customer_id")
            } else {
                column
            }
        })
        .collect();
    let plan = LogicalPlanBuilder::scan(RAW_EVENTS, provider_as_source(raw), None)
        .and_then(|b| b.project(columns))
        .and_then(LogicalPlanBuilder::build)
        .map_err(query_error)?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The `events` table: the listing tables over the lake's day directories and its late area
/// (see [`Area`]), plus the recent rows.
#[derive(Debug)]
struct EventsTable {
    days: Arc<ListingTable>,
    late: Arc<ListingTable>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The seq ranges of the files a plan reads, by area: a file holds every event of its area whose
/// seq lies in its range (appends are contiguous, one file per area; compaction merges an
/// area's consecutive files).
fn coverage_in_plan(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<(Area, SeqRange)>) {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
    {
        for group in &config.file_groups {
            for file in group.iter() {
                let location = &file.object_meta.location;
                let area = location
                    .parts()
                    .find_map(|p| Area::parse_dir_name(p.as_ref()));
                if let (Some(area), Some(range)) =
                    (area, location.filename().and_then(parse_part_file_name))
                {
                    out.push((area, range));
                }
            }
        }
    }
    for child in plan.children() {
        coverage_in_plan(child, out);
    }
}

/// The recent rows that no planned file holds. Comparing by area and range, not with the highest
/// seq read, keeps the rows of an append whose files are still being renamed into place:
/// until all are, some of its areas are only in the recent rows.
fn uncovered(
    recent: &RecordBatch,
    covered: &[(Area, SeqRange)],
) -> Result<RecordBatch, DataFusionError> {
    if covered.is_empty() {
        return Ok(recent.clone());
    }
    let seq = recent
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("seq column is not BIGINT".into()))?;
    let date = recent
        .column_by_name(DATE_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<Date32Array>())
        .ok_or_else(|| DataFusionError::Internal("date column is not DATE".into()))?;
    let received = recent
        .column_by_name("received_at")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| DataFusionError::Internal("received_at column is not TIMESTAMP".into()))?;
    let keep: BooleanArray = (0..recent.num_rows())
        .map(|i| {
            let (Some(s), Some(day), Some(received)) = (
                seq.is_valid(i).then(|| seq.value(i)),
                date.is_valid(i).then(|| date.value_as_date(i)).flatten(),
                received
                    .is_valid(i)
                    .then(|| received.value_as_datetime(i))
                    .flatten(),
            ) else {
                return Some(true);
            };
            let area = Area::of(day, received.date());
            Some(
                !covered
                    .iter()
                    .any(|(a, r)| *a == area && r.first <= s && s <= r.last),
            )
        })
        .collect();
    Ok(filter_record_batch(recent, &keep)?)
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        self.days.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Both inputs get the filters for pruning, but the recent rows are not
        // filtered by their scan: DataFusion must still apply every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let days = self.days.scan(state, projection, filters, limit).await?;
        let late = self.late.scan(state, projection, filters, limit).await?;
        // A lake without late events plans as before: the day files alone.
        let lake = if late.downcast_ref::<EmptyExec>().is_some() {
            days
        } else {
            UnionExec::try_new(vec![days, late])?
        };
        let Some(recent) = self.shared.recent() else {
            return Ok(lake);
        };
        // Rows already in the files this plan reads would count twice.
        let mut covered = Vec::new();
        coverage_in_plan(&lake, &mut covered);
        let recent = uncovered(&recent, &covered)?;
        if recent.num_rows() == 0 {
            return Ok(lake);
        }
        let schema = self.schema();
        let recent = RecordBatch::try_new(Arc::clone(&schema), recent.columns().to_vec())?;
        let memory = MemTable::try_new(schema, vec![vec![recent]])?;
        let recent_plan = memory.scan(state, projection, filters, limit).await?;
        UnionExec::try_new(vec![lake, recent_plan])
    }
}

#[derive(Clone, Copy, Debug)]
enum StateTable {
    Profiles,
    ProfileTraits,
    Identities,
    Memberships,
    SegmentChanges,
}

impl StateTable {
    const ALL: [StateTable; 5] = [
        StateTable::Profiles,
        StateTable::ProfileTraits,
        StateTable::Identities,
        StateTable::Memberships,
        StateTable::SegmentChanges,
    ];

    fn name(self) -> &'static str {
        match self {
            StateTable::Profiles => "profiles",
            StateTable::ProfileTraits => "profile_traits",
            StateTable::Identities => "identities",
            StateTable::Memberships => "memberships",
            StateTable::SegmentChanges => "segment_changes",
        }
    }

    fn schema(self) -> SchemaRef {
        match self {
            StateTable::Profiles => profiles_schema(),
            StateTable::ProfileTraits => profile_traits_schema(),
            StateTable::Identities => identities_schema(),
            StateTable::Memberships => memberships_schema(),
            StateTable::SegmentChanges => segment_changes_schema(),
        }
    }

    fn fetch(self, state: &dyn StateTables) -> Result<RecordBatch, StateError> {
        match self {
            StateTable::Profiles => state.profiles(),
            StateTable::ProfileTraits => state.profile_traits(),
            StateTable::Identities => state.identities(),
            StateTable::Memberships => state.memberships(),
            StateTable::SegmentChanges => state.segment_changes(),
        }
    }
}

/// A state table, fetched from [`StateTables`] when a query scans it.
#[derive(Debug)]
struct StateProvider {
    table: StateTable,
    schema: SchemaRef,
    shared: Arc<Shared>,
}

/// Puts the caller's batch into the documented schema: columns by name,
/// cast where the type differs.
fn conform(
    table: &str,
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, DataFusionError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "state table {table} has no column {}",
                    field.name()
                ))
            })?;
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type()).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "state table {table}, column {}: {e}",
                        field.name()
                    ))
                })
            }
        })
        .collect::<Result<Vec<ArrayRef>, DataFusionError>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Partial aggregation is skipped when its probe keeps at least this share of the rows.
///
/// Per-customer `GROUP BY`s (event segments, RFM) have about two rows per group, so the first
/// phase hashes every row to shrink them by a third. DataFusion's default (0.8) keeps that phase;
/// 0.5 gives way to a single phase sooner. The environment variable still overrides.
const SKIP_PARTIAL_AGGREGATION_RATIO: f64 = 0.5;
const SKIP_PARTIAL_AGGREGATION_ENV: &str =
    "DATAFUSION_EXECUTION_SKIP_PARTIAL_AGGREGATION_PROBE_RATIO_THRESHOLD";

/// Rows per batch of an in-memory state table scan.
const STATE_CHUNK_ROWS: usize = 32 * 1024;

#[async_trait]
impl TableProvider for StateProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let name = self.table.name();
        let batch = self
            .table
            .fetch(self.shared.state().as_ref())
            .map_err(|e| {
                DataFusionError::Execution(format!("state table {name} unavailable: {e}"))
            })?;
        let batch = conform(name, &batch, &self.schema)?;
        // Projected before slicing: a segment reads two or three of the profile's columns, and
        // every slice below would otherwise carry all of them.
        let batch = match projection {
            Some(columns) => batch.project(columns)?,
            None => batch,
        };
        let schema = batch.schema();
        // One partition per thread, so that scans and joins of a large state table run in
        // parallel, each a run of zero-copy slices of STATE_CHUNK_ROWS: a few projected columns
        // of that many rows stay in cache for the filters, and the per-batch cost of the
        // operators above stays small against the work (1M profiles: 8,192-row slices 4.8 ms,
        // 32,768 3.3 ms, half a million 6+ ms for a two-column segment).
        let parts = state.config().target_partitions().max(1);
        let rows = batch.num_rows();
        let step = rows.div_ceil(parts).max(1);
        let partitions = (0..rows)
            .step_by(step)
            .map(|start| {
                let end = (start + step).min(rows);
                (start..end)
                    .step_by(STATE_CHUNK_ROWS)
                    .map(|at| batch.slice(at, STATE_CHUNK_ROWS.min(end - at)))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        let partitions = if partitions.is_empty() {
            vec![vec![batch]]
        } else {
            partitions
        };
        let memory = MemTable::try_new(schema, partitions)?;
        memory.scan(state, None, filters, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    /// An append touching two areas renames its two files one after the other. A query that
    /// sees only the first must still take the other area's rows from the recent rows.
    #[test]
    fn recent_rows_are_dropped_only_where_a_planned_file_of_their_area_holds_them()
    -> Result<(), Box<dyn std::error::Error>> {
        use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).ok_or("bad date");
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("bad date")?;
        let days = |d: NaiveDate| (d - epoch).num_days() as i32;
        let received = |d: NaiveDate| {
            d.and_hms_opt(12, 0, 0)
                .map(|t| t.and_utc().timestamp_micros())
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("seq", DataType::Int64, false),
            Field::new(DATE_COLUMN, DataType::Date32, true),
            Field::new(
                "received_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let (d1, d2) = (day(1)?, day(2)?);
        let long_ago = d1 - chrono::Duration::days(400);
        let recent = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![12, 15, 25, 16, 17, 18])),
                Arc::new(Date32Array::from(vec![
                    Some(days(d1)),
                    Some(days(d2)),
                    Some(days(d1)),
                    None,
                    Some(days(long_ago)),
                    Some(days(long_ago)),
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        received(d1),
                        received(d2),
                        received(d1),
                        received(d1),
                        received(d1),
                        received(long_ago),
                    ])
                    .with_timezone("UTC"),
                ),
            ],
        )?;
        let range = SeqRange {
            first: 10,
            last: 20,
        };
        let covered = [(Area::Day(d1), range), (Area::Late, range)];
        let kept = uncovered(&recent, &covered)?;
        let seqs: Vec<i64> = kept
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("seq")?
            .values()
            .to_vec();
        // 12 is in day 1's file; 15 is day 2's, whose file is not planned; 25 is past day 1's
        // range; a row without a day is kept; 17 came 400 days late, so the late file holds it;
        // 18 came on its day, so only its day's file (not planned) would.
        assert_eq!(seqs, vec![15, 25, 16, 18]);
        assert_eq!(uncovered(&recent, &[])?.num_rows(), 6);
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn queries_run_on_threads_of_lower_priority() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let lake = Lake::open(dir.path())?;
        let nice = lake
            .fold(
                "SELECT 1 AS x",
                Duration::from_secs(10),
                || None,
                |seen: &mut Option<i32>, _| {
                    // SAFETY: getpriority takes no pointers; 0 means the calling thread.
                    *seen = Some(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) });
                    Ok(ControlFlow::Continue(()))
                },
            )
            .await?;
        // At least 10: a test run that is itself niced further keeps its own value.
        assert!(
            nice.is_some_and(|n| n >= 10),
            "query thread nice value {nice:?}"
        );
        Ok(())
    }

    #[test]
    fn a_query_nested_past_the_limit_is_refused_before_planning() {
        let chain = |terms: usize| format!("SELECT {}1", "1+".repeat(terms - 1));
        assert!(check_read_only(&chain(MAX_EXPR_DEPTH / 2)).is_ok());
        // The probe's query: 2,000 terms overflowed the planner's stack.
        for terms in [MAX_EXPR_DEPTH + 2, 2_000, 50_000] {
            match check_read_only(&chain(terms)) {
                Err(LakeError::Query(message)) => {
                    assert!(message.contains("levels deep"), "{message}")
                }
                other => panic!("{terms} terms: {other:?}"),
            }
        }
        let or_chain = (0..1_000)
            .map(|i| format!("x = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ");
        assert!(check_read_only(&format!("SELECT 1 FROM t WHERE {or_chain}")).is_err());
        let in_list = (0..1_000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(check_read_only(&format!("SELECT 1 FROM t WHERE x IN ({in_list})")).is_ok());
        let nested = format!("SELECT {}1{}", "(SELECT ".repeat(300), ")".repeat(300));
        assert!(check_read_only(&nested).is_err());
    }

    #[test]
    fn read_only_check_accepts_queries_only() {
        for ok in [
            "SELECT 1",
            "select * from events where date = '2024-01-01';",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "VALUES (1), (2)",
            "SELECT 1 UNION ALL SELECT 2",
            "EXPLAIN SELECT 1",
            "DESCRIBE events",
            "SHOW TABLES",
        ] {
            assert!(check_read_only(ok).is_ok(), "{ok}");
        }
        for (bad, kind) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/tmp/x'",
                "CREATE EXTERNAL TABLE",
            ),
            ("INSERT INTO events VALUES (1)", "INSERT"),
            ("DROP TABLE events", "DROP TABLE"),
            ("COPY events TO '/tmp/x.parquet'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("DELETE FROM events", "DELETE"),
            ("EXPLAIN INSERT INTO events VALUES (1)", "INSERT"),
        ] {
            match check_read_only(bad) {
                Err(LakeError::NotReadOnly(k)) => assert_eq!(k, kind, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            check_read_only("SELECT 1; SELECT 2"),
            Err(LakeError::Query(_))
        ));
    }

    #[test]
    fn type_names_are_sql() {
        assert_eq!(sql_type_name(&DataType::Int64), "BIGINT");
        assert_eq!(sql_type_name(&DataType::Utf8View), "VARCHAR");
        assert_eq!(sql_type_name(&crate::timestamp_type()), "TIMESTAMP");
    }
}
