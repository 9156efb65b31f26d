//! `cohort serve`.

use crate::cli::ServeArgs;
use anyhow::Context;
use cohort_server::{RunningServer, ServerConfig, start};
use cohort_store::Durability;
use std::time::Duration;

pub fn config(args: &ServeArgs) -> ServerConfig {
    let mut config = ServerConfig::new(&args.data.data, args.listen);
    config.admin_key = args.admin_key.clone().filter(|k| !k.trim().is_empty());
    config.connections = cohort_server::ConnectionLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        shutdown_deadline: Duration::from_secs(args.shutdown_deadline_secs),
    };
    config.auth_failures_per_minute = args.auth_failures_per_minute;
    config.browser = cohort_server::BrowserAccess {
        public_url: args.public_url.clone(),
        admin_origins: args.admin_origins.clone(),
    };
    let engine = &mut config.engine;
    engine.segment_refresh = Duration::from_secs(args.segment_refresh_secs);
    engine.segment_day_refresh = Duration::from_secs(args.segment_day_refresh_secs);
    engine.builtin_tags = !args.no_builtin_tags;
    engine.test_clock = args.test_clock;
    engine.store.durability = if args.durability == "normal" {
        Durability::Normal
    } else {
        Durability::Full
    };
    config
}

/// Starts the server and announces it; prints a newly created admin key once.
pub async fn launch(args: &ServeArgs) -> anyhow::Result<RunningServer> {
    let server = start(config(args)).await.with_context(|| {
        format!(
            "starting Cohort on {} with data in {}",
            args.listen,
            args.data.data.display()
        )
    })?;
    if let Some(key) = &server.first_admin_key {
        println!("Created the first admin API key (shown only this once; keep it safe):\n  {key}");
    }
    println!(
        "Cohort is listening on http://{}  (data: {})",
        server.addr(),
        args.data.data.display()
    );
    Ok(server)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let server = launch(&args).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    server
        .shutdown()
        .await
        .context("server stopped with an error")?;
    Ok(())
}

pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
