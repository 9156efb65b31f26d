//! Cohort's embedded store: two SQLite files in WAL mode in one data directory.
//!
//! - `inbox.db`: the durable log of accepted messages, the dedup window and the failed-events store.
//!   Ingest writes only here, through one writer thread that group-commits: every request waiting
//!   while a commit runs shares the next one, and a request is answered only after its commit.
//!   Keeping it apart from `state.db` means ingest never waits for processing's write lock.
//! - `state.db`: sources and keys, and the customer state (identities, traits, computed traits,
//!   events) that the processor builds from the inbox. The processor records the last inbox position
//!   it applied in the same transaction as the state it changed, so after a crash it resumes exactly
//!   there; events are also stored under their inbox position, so applying one twice changes nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cohort_store::StoreError> {
//! let store = cohort_store::Store::open(cohort_store::StoreConfig::new("./cohort-data"))?;
//! let (source, write_key) = store.catalog().create_source("web")?;
//! println!("source {} has write key {write_key}", source.id);
//! # Ok(()) }
//! ```

mod apply;
mod catalog;
mod conn;
mod dedup;
mod derived;
mod failed;
mod inbox;
mod profile_cache;
mod profiles;
mod realtime;
mod schema;
mod segments;
mod stored_message;
mod time;

use profile_cache::{PROFILE_CACHE_CAPACITY, ProfileCache};

pub use catalog::{AdminKey, Catalog, Source, hash_key};
pub use derived::{AnalysisRun, Derived, NewAnalysisRun, OrderStats, ReplaceSummary};
pub use failed::{FailedEvent, FailedEvents, FailedFilter, NewFailedEvent};
pub use inbox::{Receipt, Submission};
pub use profiles::{
    EventPage, ExportedEvent, IdentityRow, ProfileRow, Profiles, StoredEvent, TimelineQuery,
    Totals, TraitRow,
};
pub use segments::{
    MAX_NAME as MAX_SEGMENT_NAME, Member, MembershipChange, MembershipDiff, MembershipRow,
    NewSegment, SegmentDef, SegmentKind, Segments,
};

use cohort_identity::IdentityRules;
use cohort_profile::ProfileRules;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the inbox is full: {0} messages are waiting to be processed")]
    Overloaded(u64),
    #[error("the store is shutting down")]
    Closed,
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A definition or request the store refuses; the message names the offending field.
    #[error("{0}")]
    Invalid(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// How hard a commit tries to survive power loss (process crashes are survived by both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync on every commit: acknowledged data survives power loss.
    Full,
    /// fsync at checkpoints: acknowledged data survives a crash of Cohort, not of the machine.
    Normal,
}

/// Store configuration.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub identity: IdentityRules,
    pub profile: ProfileRules,
    /// Ingest answers 429 while more than this many messages wait for processing.
    pub max_lag: u64,
    /// Accepted-but-unanswered submissions the writer queues before answering 429.
    pub writer_queue: usize,
    /// Most messages applied per processing transaction; the processor takes whatever is waiting
    /// up to this. Under load, large transactions are much cheaper per message: the indexes'
    /// pages an event lands on at random (its customer's, its time's, the counters') are written
    /// to the log once per transaction, however many events touched them.
    pub apply_batch: usize,
    /// How long a (source, messageId) pair is remembered for deduplication.
    pub dedup_window: chrono::Duration,
    /// Start the processor thread (off for offline tools that only write the inbox).
    pub process: bool,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Full,
            identity: IdentityRules::default(),
            profile: ProfileRules::default(),
            max_lag: 2_000_000,
            writer_queue: 4096,
            apply_batch: 32_768,
            dedup_window: chrono::Duration::hours(48),
            process: true,
        }
    }
}

/// The embedded store: open once per process and share (`Clone` is cheap).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    profile_cache: Option<Arc<ProfileCache>>,
    inbox: inbox::InboxWriter,
    progress: Arc<inbox::Progress>,
    processor: Option<apply::ProcessorHandle>,
    realtime: Option<realtime::RealtimeHandle>,
    catalog: Catalog,
    segments: Segments,
    failed: FailedEvents,
    profiles: Profiles,
}

impl Store {
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let inbox_path = config.data_dir.join("inbox.db");
        let state_path = config.data_dir.join("state.db");
        let mut inbox_conn = conn::open(&inbox_path, config.durability)?;
        schema::migrate_inbox(&mut inbox_conn)?;
        let mut state_conn = conn::open(&state_path, config.durability)?;
        schema::migrate_state(&mut state_conn)?;

        let applied: i64 = state_conn.query_row(
            "SELECT value FROM meta WHERE key = 'applied_seq'",
            [],
            |r| r.get(0),
        )?;
        let committed: i64 =
            inbox_conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM inbox", [], |r| r.get(0))?;
        let progress = Arc::new(inbox::Progress::new(committed.max(applied), applied));

        let catalog = Catalog::new(conn::open(&state_path, config.durability)?);
        let failed = FailedEvents::new(conn::open(&inbox_path, config.durability)?);
        // Only a process that applies events can keep cached profiles exact.
        let profile_cache = config
            .process
            .then(|| Arc::new(ProfileCache::new(PROFILE_CACHE_CAPACITY)));
        let profiles = Profiles::new(
            (0..4)
                .map(|_| conn::open(&state_path, config.durability))
                .collect::<Result<_, _>>()?,
            config.profile.clone(),
            profile_cache.clone(),
        );
        let segments = Segments::new(conn::open(&state_path, config.durability)?);
        let inbox = inbox::InboxWriter::start(inbox_conn, progress.clone(), &config);
        let processor = if config.process {
            let reader = conn::open(&inbox_path, config.durability)?;
            Some(apply::ProcessorHandle::start(
                state_conn,
                reader,
                progress.clone(),
                &config,
                profile_cache.clone(),
            ))
        } else {
            None
        };
        let realtime = if config.process {
            Some(realtime::RealtimeHandle::start(
                conn::open(&state_path, config.durability)?,
                progress.clone(),
                config.profile.clone(),
            ))
        } else {
            None
        };
        Ok(Store {
            inner: Arc::new(Inner {
                config,
                profile_cache,
                inbox,
                progress,
                processor,
                realtime,
                catalog,
                segments,
                failed,
                profiles,
            }),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Appends accepted messages and failed events durably; returns once they are committed.
    pub async fn append(&self, submission: Submission) -> Result<Receipt, StoreError> {
        let lag = self.lag();
        if lag > self.inner.config.max_lag && !submission.accepted.is_empty() {
            return Err(StoreError::Overloaded(lag));
        }
        self.inner.inbox.append(submission).await
    }

    /// Blocking form of [`Store::append`] for tools outside an async runtime.
    pub fn append_blocking(&self, submission: Submission) -> Result<Receipt, StoreError> {
        self.inner.inbox.append_blocking(submission)
    }

    /// Messages committed to the inbox but not yet applied to the customer state.
    pub fn lag(&self) -> u64 {
        self.inner.progress.lag()
    }

    /// Inbox position up to which every message has been applied.
    pub fn applied_seq(&self) -> i64 {
        self.inner.progress.applied()
    }

    /// Highest inbox position committed by this process.
    pub fn committed_seq(&self) -> i64 {
        self.inner.progress.committed()
    }

    /// Waits until every message up to `seq` is applied, or `timeout` passes; true when applied.
    pub fn wait_applied(&self, seq: i64, timeout: std::time::Duration) -> bool {
        self.inner.progress.wait_applied(seq, timeout)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn failed_events(&self) -> &FailedEvents {
        &self.inner.failed
    }

    /// Work the real-time segment engine has not done yet: inbox positions applied to customer
    /// state but not to membership, plus customers queued for re-evaluation.
    pub fn segment_lag(&self) -> Result<u64, StoreError> {
        if !self.processing() {
            return Ok(0);
        }
        let evaluated = self.inner.segments.evaluated_seq()?;
        let behind = self.applied_seq().saturating_sub(evaluated).max(0);
        Ok((behind + self.inner.segments.pending_count()?.max(0)) as u64)
    }

    /// Waits until real-time segment membership covers everything applied so far.
    pub fn wait_segments(&self, timeout: std::time::Duration) -> Result<bool, StoreError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.segment_lag()? == 0 {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Segment and tag definitions and their members.
    pub fn segments(&self) -> &Segments {
        &self.inner.segments
    }

    pub(crate) fn profile_cache(&self) -> Option<Arc<ProfileCache>> {
        self.inner.profile_cache.clone()
    }

    pub fn profiles(&self) -> &Profiles {
        &self.inner.profiles
    }

    /// True while the processor thread runs (readiness).
    pub fn processing(&self) -> bool {
        self.inner
            .processor
            .as_ref()
            .is_some_and(apply::ProcessorHandle::is_running)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(p) = self.processor.take() {
            p.stop();
        }
        if let Some(r) = self.realtime.take() {
            r.stop();
        }
    }
}
