//! Cohort's HTTP layer, kept thin: routes split by resource ([`routes`]), admin authentication,
//! error mapping. Every handler calls a use case of `cohort-engine`, which runs the pipeline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = cohort_server::ServerConfig::new("./cohort-data", "127.0.0.1:8080".parse()?);
//! let server = cohort_server::start(config).await?;
//! println!("listening on {}", server.addr());
//! server.wait().await?;
//! # Ok(()) }
//! ```

mod error;
mod metrics_setup;
pub mod routes;
mod state;

pub use error::ApiError;
pub use routes::router;
pub use state::AppState;

use cohort_engine::{Engine, EngineConfig, EngineError};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `cohort serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The engine under the routes: storage, limits, the segment refresh cadence.
    pub engine: EngineConfig,
    /// An admin key chosen by the operator (`COHORT_ADMIN_KEY`); registered at start.
    pub admin_key: Option<String>,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            listen,
            engine: EngineConfig::new(data_dir),
            admin_key: None,
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
        self.state.engine.close().await;
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
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] cohort_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the engine, registers keys, binds and starts serving in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    let metrics = metrics_setup::install();
    let engine = Engine::open(config.engine.clone()).await?;
    let catalog = engine.store().catalog();
    if let Some(key) = &config.admin_key {
        catalog.add_admin_key("COHORT_ADMIN_KEY", "admin", key)?;
    }
    let first_admin_key = if catalog.admin_key_count()? == 0 {
        Some(catalog.create_admin_key("initial", "admin")?.1)
    } else {
        None
    };
    let state = AppState::new(engine, metrics);
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
