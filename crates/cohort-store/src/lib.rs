//! Cohort's embedded store: two SQLite files in WAL mode in one data directory.
//!
//! - `inbox.db`: the durable log of accepted messages, the dedup window and the failed-events store.
//!   Ingest writes only here, through one writer thread that group-commits: every request waiting
//!   while a commit runs shares the next one, and a request is answered only after its commit.
//!   Keeping it apart from `state.db` means ingest never waits for processing's write lock.
//! - `state.db`: sources and keys, and the customer state (identities, traits, computed traits,
//!   events) that the processor (`cohort_profile::Processor`, run by `cohort-engine`) builds from
//!   the inbox through [`SqliteProfileStore`]. The processor records the last inbox position it
//!   applied in the same transaction as the state it changed, so after a crash it resumes exactly
//!   there; events are also stored under their inbox position, so applying one twice changes nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cohort_store::StoreError> {
//! let store = cohort_store::Store::open(cohort_store::StoreConfig::new("./cohort-data"))?;
//! let (source, write_key) = store.catalog().create_source("web")?;
//! println!("source {} has write key {write_key}", source.id);
//! # Ok(()) }
//! ```

mod catalog;
mod conn;
mod coupons;
mod dedup;
mod definitions;
mod delivery;
mod derived;
mod failed;
mod inbox;
mod journey_catalogue;
mod journey_stats;
mod journeys;
mod memberships;
mod private;
mod profile_cache;
mod profile_store;
mod profiles;
mod schema;
mod segments;
mod time;
mod timer_floor;

use profile_cache::{PROFILE_CACHE_CAPACITY, ProfileCache};

pub use catalog::{AdminKey, Catalog, Source, SourceKind, hash_key};
pub use cohort_core::{NewFailedEvent, Receipt, Submission};
pub use coupons::SqliteCoupons;
pub use definitions::SqliteDefinitions;
pub use delivery::SqliteDelivery;
pub use derived::{AnalysisRun, Derived, NewAnalysisRun, OrderStats, ReplaceSummary};
pub use failed::{FailedEvent, FailedEvents, FailedFilter};
pub use inbox::SqliteInbox;
pub use journey_catalogue::SqliteJourneyCatalogue;
pub use journeys::SqliteJourneyState;
pub use memberships::{SqliteMemberships, SqliteSnapshot};
pub use private::keep_new_files_private;
pub use profile_store::{SqliteBatch, SqliteProfileStore};
pub use profiles::{
    EventPage, ExportedEvent, IdentityRow, ProfileRow, Profiles, StoredEvent, TimelineQuery,
    Totals, TraitRow,
};
pub use segments::{
    MAX_NAME as MAX_SEGMENT_NAME, Member, MembershipChange, MembershipDiff, MembershipRow,
    NewSegment, SegmentDef, SegmentKind, Segments,
};
pub use timer_floor::TimerFloor;

use cohort_core::{Inbox, InboxError, Position};
use cohort_identity::IdentityRules;
use cohort_profile::ProfileRules;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    #[error(transparent)]
    Inbox(#[from] InboxError),
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
    /// Apply the inbox in this process, if no other process does (off for offline tools that
    /// only write the inbox): takes the data directory's processing lock, and lets
    /// [`Store::profile_store`] hand out the processor's store.
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
    inbox: Arc<SqliteInbox>,
    /// Up while the processor's [`SqliteProfileStore`] exists (see [`Store::processing`]).
    writing: Arc<AtomicBool>,
    catalog: Catalog,
    segments: Segments,
    failed: FailedEvents,
    profiles: Profiles,
    definitions: SqliteDefinitions,
    /// Held while this process applies the inbox; released on drop.
    _processing_lock: Option<std::fs::File>,
}

impl Store {
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        private::private_dir(&config.data_dir)?;
        let inbox_path = config.data_dir.join("inbox.db");
        let state_path = config.data_dir.join("state.db");
        let mut state_conn = conn::open(&state_path, config.durability)?;
        private::private_file(&state_path)?;
        schema::migrate_state(&mut state_conn)?;

        let applied: i64 = state_conn.query_row(
            "SELECT value FROM meta WHERE key = 'applied_seq'",
            [],
            |r| r.get(0),
        )?;
        let inbox = Arc::new(SqliteInbox::open(&config, Position::new(0, applied))?);

        // One process applies the inbox at a time; another that asked to (an import beside a
        // running server) only appends, and the one holding the lock applies what it appends.
        let processing_lock = if config.process {
            processing_lock(&config.data_dir)?
        } else {
            None
        };
        let process = processing_lock.is_some();

        let catalog = Catalog::new(
            conn::open(&state_path, config.durability)?,
            conn::open(&state_path, config.durability)?,
        );
        let failed = FailedEvents::new(conn::open(&inbox_path, config.durability)?);
        private::private_file(&inbox_path)?;
        // Only a process that applies events can keep cached profiles exact.
        let profile_cache = process.then(|| Arc::new(ProfileCache::new(PROFILE_CACHE_CAPACITY)));
        let profiles = Profiles::new(
            (0..4)
                .map(|_| conn::open(&state_path, config.durability))
                .collect::<Result<_, _>>()?,
            config.profile.clone(),
            profile_cache.clone(),
        );
        let segments = Segments::new(conn::open(&state_path, config.durability)?);
        let definitions = SqliteDefinitions::new(conn::open(&state_path, config.durability)?);
        Ok(Store {
            inner: Arc::new(Inner {
                config,
                profile_cache,
                inbox,
                writing: Arc::new(AtomicBool::new(false)),
                catalog,
                segments,
                failed,
                profiles,
                definitions,
                _processing_lock: processing_lock,
            }),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The inbox: appends accepted messages and failed events durably, and tells how far
    /// processing has come.
    pub fn inbox(&self) -> &Arc<SqliteInbox> {
        &self.inner.inbox
    }

    /// Appends accepted messages and failed events durably; returns once they are committed.
    pub async fn append(&self, submission: Submission) -> Result<Receipt, StoreError> {
        Ok(self.inner.inbox.append(submission).await?)
    }

    /// Blocking form of [`Store::append`] for tools outside an async runtime.
    pub fn append_blocking(&self, submission: Submission) -> Result<Receipt, StoreError> {
        Ok(self.inner.inbox.append_blocking(submission)?)
    }

    /// Waits until everything committed to the inbox so far is applied to the customer state,
    /// or `timeout` passes; true when it is.
    pub fn wait_processed(&self, timeout: std::time::Duration) -> bool {
        let inbox = &self.inner.inbox;
        inbox.wait_acknowledged(inbox.committed(), timeout)
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
        let evaluated = self.inner.segments.evaluated()?;
        let behind = self.inner.inbox.acknowledged().entries_since(evaluated);
        Ok(behind + self.inner.segments.pending_count()?.max(0) as u64)
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

    /// A new handle for the real-time segment engine ([`cohort_segment::RealtimeSegments`]), on
    /// a connection of its own. Run one engine at a time, and only in the process that applies
    /// the inbox ([`Store::processing`]): its cursor trails the processor's.
    pub fn membership_store(&self) -> Result<SqliteMemberships, StoreError> {
        let config = &self.inner.config;
        Ok(SqliteMemberships::new(
            conn::open(&config.data_dir.join("state.db"), config.durability)?,
            config.profile.clone(),
        ))
    }

    /// Segment and tag definitions and their members.
    /// Journeys' run-time state on a connection of its own, for the one loop that runs them.
    pub fn journey_state(&self) -> Result<SqliteJourneyState, StoreError> {
        let path = self.inner.config.data_dir.join("state.db");
        Ok(SqliteJourneyState::new(conn::open(
            &path,
            self.inner.config.durability,
        )?))
    }

    /// Journey definitions and their versions' states, message templates and channels on a
    /// connection of its own (the API's writes and the engine's reads of what runs).
    pub fn journey_catalogue(&self) -> Result<SqliteJourneyCatalogue, StoreError> {
        let path = self.inner.config.data_dir.join("state.db");
        Ok(SqliteJourneyCatalogue::new(conn::open(
            &path,
            self.inner.config.durability,
        )?))
    }

    /// Coupon pools, codes, issues and redemptions on a connection of its own. Handles may be
    /// used from several threads or processes at once: each issue is one immediate
    /// transaction, so none hands out a code another has.
    pub fn coupons(&self) -> Result<SqliteCoupons, StoreError> {
        let path = self.inner.config.data_dir.join("state.db");
        Ok(SqliteCoupons::new(conn::open(
            &path,
            self.inner.config.durability,
        )?))
    }

    /// Delivery rules' state (consent facts, the send ledger for frequency caps, customers'
    /// last context zones) on a connection of its own, for the loop that sends.
    pub fn delivery(&self) -> Result<SqliteDelivery, StoreError> {
        let path = self.inner.config.data_dir.join("state.db");
        Ok(SqliteDelivery::new(conn::open(
            &path,
            self.inner.config.durability,
        )?))
    }

    /// Flag, experiment and metric definitions, versioned.
    pub fn definitions(&self) -> &SqliteDefinitions {
        &self.inner.definitions
    }

    pub fn segments(&self) -> &Segments {
        &self.inner.segments
    }

    pub(crate) fn profile_cache(&self) -> Option<Arc<ProfileCache>> {
        self.inner.profile_cache.clone()
    }

    pub fn profiles(&self) -> &Profiles {
        &self.inner.profiles
    }

    /// The customer state as the processor writes it, for the one processor of this data
    /// directory: `None` when this process may not apply the inbox (it was opened without
    /// [`StoreConfig::process`], or another process holds the processing lock), or while the
    /// store handed out before is still alive. The engine runs `cohort_profile::Processor` over
    /// it on a thread of its own.
    pub fn profile_store(&self) -> Result<Option<SqliteProfileStore>, StoreError> {
        if self.inner._processing_lock.is_none() || self.inner.writing.swap(true, Ordering::AcqRel)
        {
            return Ok(None);
        }
        // Lowers the flag again if opening fails, and otherwise when the store is dropped.
        let writing = profile_store::WritingFlag(self.inner.writing.clone());
        let config = &self.inner.config;
        let conn = conn::open(&config.data_dir.join("state.db"), config.durability)?;
        Ok(Some(SqliteProfileStore::new(
            conn,
            self.inner.profile_cache.clone(),
            Some(writing),
        )))
    }

    /// True while this process applies the inbox (readiness): from [`Store::profile_store`]
    /// until the store it handed out is dropped, which the engine's processor thread does when
    /// it ends, however it ends.
    pub fn processing(&self) -> bool {
        self.inner.writing.load(Ordering::Acquire)
    }
}

/// Takes the data directory's processing lock, or `None` when another process holds it.
fn processing_lock(dir: &Path) -> Result<Option<std::fs::File>, StoreError> {
    let path = dir.join("processing.lock");
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::info!("another process applies this data directory's inbox");
            Ok(None)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}
