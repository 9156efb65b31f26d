//! Cohort's HTTP layer, kept thin: it authenticates, hands bytes to `cohort-collect`, commits through
//! `cohort-store`, and renders answers. Nothing here decides what an event means.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = cohort_server::ServerConfig::new("./cohort-data", "127.0.0.1:8080".parse()?);
//! let server = cohort_server::start(config).await?;
//! println!("listening on {}", server.addr());
//! server.wait().await?;
//! # Ok(()) }
//! ```

mod admin;
mod analyses;
mod analytics;
mod error;
mod ingest;
mod metrics_setup;
mod rfm;
mod segments;
mod sources;
mod state;

pub use analytics::Analytics;
pub use error::ApiError;
pub use ingest::replay_failed;
pub use rfm::{RfmParams, RfmRun, RfmRunError, latest_rfm, run_rfm};
pub use segments::{
    ALL_ROWS, EVENTS_FOR_SEGMENTS, batch_members, export_sql, moves_with_time,
    refresh as refresh_segment,
};
pub use sources::policy_for;
pub use state::AppState;

use axum::Router;
use axum::routing::{get, post};
use cohort_collect::Limits;
use cohort_store::{Store, StoreConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `cohort serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub limits: Limits,
    /// An admin key chosen by the operator (`COHORT_ADMIN_KEY`); registered at start.
    pub admin_key: Option<String>,
    /// How often segments whose membership moves with time by the hour are re-evaluated in
    /// batch: the rounds of the time refresh.
    pub segment_refresh: std::time::Duration,
    /// How often those that move by the day (day windows, 30-day traits) are.
    pub segment_day_refresh: std::time::Duration,
    /// Install the shipped tag definitions that are missing, at start.
    pub builtin_tags: bool,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            listen,
            store: StoreConfig::new(data_dir),
            limits: Limits::default(),
            admin_key: None,
            segment_refresh: std::time::Duration::from_secs(60),
            segment_day_refresh: std::time::Duration::from_secs(3600),
            builtin_tags: true,
        }
    }
}

/// A running server.
pub struct RunningServer {
    addr: SocketAddr,
    state: AppState,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The admin key created on first start, to print once; `None` on later starts.
    pub first_admin_key: Option<String>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs until the server stops (Ctrl-C or SIGTERM when started by [`serve_until_signal`]),
    /// then lets the lake exporter finish the file it is writing, so the data directory can be
    /// removed or copied as soon as this returns.
    pub async fn wait(self) -> std::io::Result<()> {
        let served = self
            .task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Some(analytics) = self.state.0.analytics.clone() {
            tokio::task::spawn_blocking(move || analytics.stop_exporter())
                .await
                .map_err(std::io::Error::other)?;
        }
        served
    }

    /// Stops accepting requests, finishes those in flight.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] cohort_store::StoreError),
    #[error("event lake: {0}")]
    Lake(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the store, registers keys, binds and starts serving in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    let metrics = metrics_setup::install();
    let store = tokio::task::spawn_blocking({
        let cfg = config.store.clone();
        move || Store::open(cfg)
    })
    .await
    .map_err(|e| cohort_store::StoreError::Corrupt(format!("store open task failed: {e}")))??;

    if let Some(key) = &config.admin_key {
        store
            .catalog()
            .add_admin_key("COHORT_ADMIN_KEY", "admin", key)?;
    }
    let first_admin_key = if store.catalog().admin_key_count()? == 0 {
        Some(store.catalog().create_admin_key("initial", "admin")?.1)
    } else {
        None
    };

    let analytics =
        Analytics::open(store.clone(), true).map_err(|e| StartError::Lake(e.to_string()))?;
    let new_tags = if config.builtin_tags {
        let store = store.clone();
        tokio::task::spawn_blocking(move || segments::create_builtin_tags(&store))
            .await
            .map_err(|e| {
                cohort_store::StoreError::Corrupt(format!("tag install task failed: {e}"))
            })??
    } else {
        Vec::new()
    };
    {
        let (analytics, store) = (analytics.clone(), store.clone());
        let cadence = segments::RefreshCadence {
            hours: config.segment_refresh,
            days: config.segment_day_refresh,
        };
        tokio::spawn(async move {
            segments::fill(&analytics, &store, new_tags).await;
            segments::start_time_refresh(analytics, store, cadence);
        });
    }
    let state = AppState::new(store, config.limits, metrics, Some(analytics));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let app = router(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, "cohort listening");
    Ok(RunningServer {
        addr,
        state,
        task,
        shutdown: Some(tx),
        first_admin_key,
    })
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/{route}", post(ingest::handle))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .nest("/api/v1", admin::routes(state.clone()))
        .fallback(error::not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}
