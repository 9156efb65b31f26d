//! Cohort's runtime and composition root: one [`Engine`] per process.
//!
//! [`Engine::open`] picks the backends (the embedded SQLite store today), starts every
//! background loop of the pipeline, and stops them again in [`Engine::close`]:
//!
//! | loop | what it does |
//! | --- | --- |
//! | inbox writer | group-commits ingest's submissions (inside the SQLite inbox) |
//! | processor | applies inbox entries to identities and profiles, in order (`cohort_profile::Processor` on the `cohort-processor` thread) |
//! | real-time segments | re-decides the customers the processor changed (`cohort_segment::RealtimeSegments` on the `cohort-segments` thread) |
//! | lake exporter | writes processed events to Parquet, compacts small files |
//! | time refresh | re-evaluates segments whose membership moves with time alone |
//! | journeys | runs journeys on processed messages, membership changes and due timers, trailing real-time segments (`cohort-journeys`), and one worker per channel that decides, renders and sends (`cohort-send-<channel>`), plus coupon and profile workers |
//!
//! Everything a face of Cohort does goes through the engine's use cases: ingest (HTTP, file
//! import and replay of failed events share one entry point, [`Engine::ingest_body`] and
//! [`Engine::ingest_messages`]), profiles, segments, analyses, RFM and SQL. The HTTP server and
//! the CLI only translate. Journeys' use cases (definitions, templates, channels, coupons,
//! delivery rules, reports, tracked links, inbound replies) are in the same place.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cohort_engine::EngineError> {
//! let engine = cohort_engine::Engine::open(cohort_engine::EngineConfig::new("./cohort-data")).await?;
//! let lake = engine.lake()?;
//! let answer = lake.query("SELECT count(*) FROM events", Default::default()).await?;
//! println!("{} rows", answer.num_rows());
//! engine.close().await;
//! # Ok(()) }
//! ```
//!
//! Tools that work beside a running server on the same data directory open the engine with
//! [`Mode::Tool`]: no loop runs, and the lake is read, not written.

mod analyses;
mod analytics;
mod error;
mod experiments;
mod ingest;
mod journeys;
mod processor;
mod realtime;
mod rfm;
mod segments;
mod sources;

pub use analytics::{Analytics, ProfilesPin};
pub use error::EngineError;
pub use experiments::{
    Assignment, EXPOSURE_SOURCE, Evaluation, EvaluationRequest, FlagValue, IdentifierRef,
    SEGMENT_GROUP_LIMIT, SavedDefinition, profile_attributes,
};
pub use ingest::{IngestReply, IngestRequest, ReplayOutcome};
pub use journeys::{
    DELIVERY_RULES_FILE, DefinitionFormat, JOURNEYS_SOURCE, channel_json, dead_letter_json,
    template_json, version_json,
};
pub use rfm::{RfmParams, RfmRun, RfmRunError};
pub use segments::{ALL_ROWS, EVENTS_FOR_SEGMENTS, RefreshCadence, export_sql, membership_sql};
pub use sources::{SourceEntry, policy_for, tracking_plan_of};

use cohort_collect::Limits;
use cohort_core::{Clock, ShiftedClock, SystemClock};
use cohort_store::{Store, StoreConfig};
use processor::ProcessorThread;
use realtime::RealtimeThread;
use sources::SourceCache;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How much of the runtime a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything: processing, real-time segments, the lake exporter, the time refresh, the
    /// built-in tags (`cohort serve`, `cohort demo`).
    Server,
    /// A tool beside (or without) a server on the same data directory: reads, writes through
    /// the inbox and the catalogue, runs no loop.
    Tool,
    /// A tool that also processes what it writes when no server does (`cohort import`): the
    /// processor and the real-time segments run, the lake is not written.
    Processing,
}

/// Everything the engine can be told.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub mode: Mode,
    pub store: StoreConfig,
    pub limits: Limits,
    /// How often segments whose membership moves with time by the hour are re-evaluated in
    /// batch: the rounds of the time refresh.
    pub segment_refresh: Duration,
    /// How often those that move by the day (day windows, 30-day traits) are.
    pub segment_day_refresh: Duration,
    /// Install the shipped tag definitions that are missing, at start (server mode).
    pub builtin_tags: bool,
    /// Run on a clock that tests can move ahead ([`Engine::advance_clock`]) instead of the
    /// wall clock.
    pub test_clock: bool,
}

impl EngineConfig {
    /// A server's defaults over `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            mode: Mode::Server,
            store: StoreConfig::new(data_dir),
            limits: Limits::default(),
            segment_refresh: Duration::from_secs(60),
            segment_day_refresh: Duration::from_secs(3600),
            builtin_tags: true,
            test_clock: false,
        }
    }

    /// A tool's defaults over `data_dir` (see [`Mode::Tool`]).
    pub fn tool(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            mode: Mode::Tool,
            builtin_tags: false,
            ..Self::new(data_dir)
        }
    }
}

/// The running engine. Cheap to clone; see the module documentation.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

struct Inner {
    store: Store,
    sources: SourceCache,
    limits: Limits,
    clock: Arc<dyn Clock>,
    /// The same clock, when it is a test clock.
    test_clock: Option<Arc<ShiftedClock>>,
    /// Bumped whenever what journeys run changes (journeys::Shared reads it).
    journey_generation: Arc<std::sync::atomic::AtomicU64>,
    analytics: Option<Arc<Analytics>>,
    refresh: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The pipeline's threads, while they run: the processor and, trailing it, real-time
    /// segments.
    pipeline: std::sync::Mutex<Pipeline>,
    /// GrowthBook's features payload, as last built.
    payload: Arc<experiments::PayloadCache>,
}

#[derive(Default)]
struct Pipeline {
    processor: Option<ProcessorThread>,
    realtime: Option<RealtimeThread>,
    journeys: Option<journeys::JourneyThreads>,
}

impl Pipeline {
    /// Stops journeys, then real-time segments they trail, then the processor those trail.
    fn stop(&mut self) {
        drop(self.journeys.take());
        drop(self.realtime.take());
        if let Some(processor) = self.processor.take() {
            processor.stop();
        }
    }
}

impl Drop for Inner {
    /// Stops the pipeline before the store's fields go, its processing lock among them.
    fn drop(&mut self) {
        self.pipeline
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .stop();
    }
}

impl Engine {
    /// Opens the backends and starts the loops the mode asks for. Call from a Tokio runtime.
    pub async fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        let mut store_config = config.store.clone();
        store_config.process = config.mode != Mode::Tool;
        let mode = config.mode;
        let test_clock = config
            .test_clock
            .then(|| Arc::new(journeys::saved_test_clock(&config.store.data_dir)));
        let clock: Arc<dyn Clock> = match &test_clock {
            Some(shifted) => shifted.clone(),
            None => Arc::new(SystemClock),
        };
        let journey_generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (loop_clock, loop_generation, limits) =
            (clock.clone(), journey_generation.clone(), config.limits);
        let (store, pipeline) = blocking(move || {
            let store = Store::open(store_config)?;
            // The store's processing lock decides whether this process applies the inbox;
            // membership trails the processor, so it runs only where the processor does.
            let mut pipeline = Pipeline::default();
            if mode != Mode::Tool {
                pipeline.processor = ProcessorThread::start(&store)?;
                if pipeline.processor.is_some() {
                    pipeline.realtime = Some(RealtimeThread::start(&store)?);
                    if mode == Mode::Server {
                        pipeline.journeys = Some(journeys::JourneyThreads::start(
                            &store,
                            loop_clock,
                            limits,
                            loop_generation,
                        )?);
                    }
                }
            }
            Ok((store, pipeline))
        })
        .await?;
        let analytics = match config.mode {
            Mode::Server => Some(Analytics::open(store.clone(), true)?),
            Mode::Tool => Some(Analytics::open(store.clone(), false)?),
            Mode::Processing => None,
        };
        let sources = SourceCache::new(
            store.clone(),
            config.limits,
            Arc::new(store.config().identity.clone()),
        );
        let engine = Engine(Arc::new(Inner {
            store,
            sources,
            limits: config.limits,
            clock,
            test_clock,
            journey_generation,
            analytics,
            refresh: std::sync::Mutex::new(None),
            pipeline: std::sync::Mutex::new(pipeline),
            payload: Default::default(),
        }));
        if config.mode == Mode::Server {
            engine.start_segment_loops(&config).await?;
        }
        Ok(engine)
    }

    /// Installs the missing built-in tags, fills new definitions from the data so far, then
    /// starts the time refresh.
    async fn start_segment_loops(&self, config: &EngineConfig) -> Result<(), EngineError> {
        let Some(analytics) = self.0.analytics.clone() else {
            return Ok(());
        };
        let store = self.0.store.clone();
        blocking(move || Ok(segments::quarantine_unfinished(&store)?)).await?;
        let new_tags = if config.builtin_tags {
            let store = self.0.store.clone();
            blocking(move || Ok(segments::create_builtin_tags(&store)?)).await?
        } else {
            Vec::new()
        };
        let store = self.0.store.clone();
        let cadence = RefreshCadence {
            hours: config.segment_refresh,
            days: config.segment_day_refresh,
        };
        let task = tokio::spawn(async move {
            segments::fill(&analytics, &store, new_tags).await;
            segments::time_refresh(analytics, store, cadence).await;
        });
        *self.0.refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    /// Stops the loops: the time refresh at once, real-time segments after their round, the
    /// processor after the batch it is applying, the lake exporter after the file it is writing,
    /// so the data directory can be copied or removed when this returns. Dropping the last clone
    /// of the engine stops them too.
    pub async fn close(&self) {
        let refresh = self
            .0
            .refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = refresh {
            task.abort();
        }
        let mut pipeline =
            std::mem::take(&mut *self.0.pipeline.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || pipeline.stop()).await;
        if let Some(analytics) = self.0.analytics.clone() {
            let _ = tokio::task::spawn_blocking(move || analytics.stop_exporter()).await;
        }
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// True while this process's processor runs (readiness).
    pub fn processing(&self) -> bool {
        self.0.store.processing()
    }

    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// Now, as the engine's clock tells it.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.clock.now()
    }

    /// The SQL engine over the lake and the state tables.
    pub fn lake(&self) -> Result<&Arc<Analytics>, EngineError> {
        self.0
            .analytics
            .as_ref()
            .ok_or(EngineError::LakeUnavailable)
    }

    /// Forgets the cached sources, after a source's settings changed, so the next request
    /// reads them again.
    pub fn forget_sources(&self) {
        self.0.sources.invalidate();
    }

    /// Waits until everything committed to the inbox so far is processed (applied to the
    /// customer state, and decided by the real-time segments), or `timeout` passes.
    pub async fn wait_processed(&self, timeout: Duration) -> Result<bool, EngineError> {
        let store = self.0.store.clone();
        blocking(move || Ok(store.wait_processed(timeout) && store.wait_segments(timeout)?)).await
    }
}

/// Runs blocking store work off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("a blocking task failed: {e}")))?
}
