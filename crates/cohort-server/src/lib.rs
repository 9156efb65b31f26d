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

mod auth_failures;
pub mod connections;
mod cors;
mod error;
mod metrics_setup;
pub mod routes;
mod state;

pub use connections::ConnectionLimits;
pub use cors::{BrowserAccess, PublicUrl};
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
    /// An admin key chosen by the operator (`COHORT_ADMIN_KEY`): at least
    /// [`MIN_OPERATOR_KEY_CHARS`] characters, valid while it is configured, never stored.
    pub admin_key: Option<String>,
    /// Timeouts and the cap on connections.
    pub connections: ConnectionLimits,
    /// Requests per address per minute that may fail authentication before the address is
    /// answered 429 for the rest of its minute; 0 turns the limit off.
    pub auth_failures_per_minute: u32,
    /// The public URL browsers reach the server at, and the origins allowed on the admin API.
    pub browser: BrowserAccess,
}

/// Shortest operator admin key: a key anyone can type is a key anyone can guess.
pub const MIN_OPERATOR_KEY_CHARS: usize = 32;

/// The name under which earlier releases stored the operator's key in the catalogue; such rows
/// are removed at start, since the key is now valid only while configured.
const STORED_OPERATOR_KEY_NAME: &str = "COHORT_ADMIN_KEY";

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            listen,
            engine: EngineConfig::new(data_dir),
            admin_key: None,
            connections: ConnectionLimits::default(),
            auth_failures_per_minute: 30,
            browser: BrowserAccess::default(),
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
    #[error(
        "the admin key from --admin-key or COHORT_ADMIN_KEY has {chars} characters; it needs at least {MIN_OPERATOR_KEY_CHARS} (for example from `openssl rand -hex 24`)"
    )]
    WeakAdminKey { chars: usize },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the engine, registers keys, binds and starts serving in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    let operator_key = match config.admin_key.as_deref().map(str::trim) {
        Some(key) if key.chars().count() < MIN_OPERATOR_KEY_CHARS => {
            return Err(StartError::WeakAdminKey {
                chars: key.chars().count(),
            });
        }
        Some(key) => Some(cohort_store::hash_key(key)),
        None => None,
    };
    let metrics = metrics_setup::install();
    let engine = Engine::open(config.engine.clone()).await?;
    let catalog = engine.store().catalog();
    catalog.remove_admin_keys_named(STORED_OPERATOR_KEY_NAME)?;
    let first_admin_key = if operator_key.is_none() && catalog.admin_key_count()? == 0 {
        Some(catalog.create_admin_key("initial", "admin")?.1)
    } else {
        None
    };
    let mut state = AppState::new(engine, metrics);
    state.operator_key = operator_key;
    state.auth_failures = std::sync::Arc::new(auth_failures::AuthFailures::per_minute(
        config.auth_failures_per_minute,
    ));
    state.browser = std::sync::Arc::new(config.browser.clone());
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
    let limits = config.connections.fitted_to_open_files();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(connections::serve(listener, app, limits, async move {
        let _ = rx.await;
    }));
    tracing::info!(%addr, "cohort listening");
    Ok(RunningServer {
        addr,
        state,
        task,
        shutdown: Some(tx),
        first_admin_key,
    })
}
