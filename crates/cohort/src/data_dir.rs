//! Opening a data directory for a command: the engine in the mode the command needs.

use anyhow::Context;
use cohort_engine::{Engine, EngineConfig, Mode};
use std::path::Path;

/// The engine over `data` for a tool (see [`Mode::Tool`]): reads and writes beside a running
/// server, runs no loop.
pub async fn open_tool(data: &Path) -> anyhow::Result<Engine> {
    open(data, Mode::Tool).await
}

pub async fn open(data: &Path, mode: Mode) -> anyhow::Result<Engine> {
    let mut config = EngineConfig::tool(data);
    config.mode = mode;
    Engine::open(config)
        .await
        .with_context(|| format!("opening the data directory {}", data.display()))
}

/// Runs `work` on the tool engine over `data`, closing the engine whatever it returns.
pub async fn with_engine<T>(
    data: &crate::cli::DataArgs,
    work: impl AsyncFnOnce(&Engine) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let engine = open_tool(&data.data).await?;
    let outcome = work(&engine).await;
    engine.close().await;
    outcome
}
