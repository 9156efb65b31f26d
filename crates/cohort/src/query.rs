//! `cohort query`: read-only SQL over the event lake and the state store.

use crate::cli::QueryArgs;
use anyhow::{Context, bail};
use cohort_lake::QueryOptions;
use cohort_server::Analytics;
use cohort_store::{Store, StoreConfig};
use std::time::Duration;

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let mut config = StoreConfig::new(&args.data.data);
    config.process = false;
    let store = tokio::task::spawn_blocking(move || Store::open(config))
        .await?
        .with_context(|| format!("opening the data directory {}", args.data.data.display()))?;
    // A running server owns the lake writer; this process only reads (it still sees events not yet
    // written to Parquet, from the state store).
    let analytics = Analytics::open(store, false).context("opening the event lake")?;
    let options = QueryOptions {
        timeout: Duration::from_secs_f64(args.timeout),
        max_rows: args.max_rows,
    };
    let result = analytics
        .query(&args.sql, options)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match args.format.as_str() {
        "table" => print!("{}", result.to_table_text()?),
        "json" => println!("{}", serde_json::to_string(&result.to_json_rows()?)?),
        "csv" => print!("{}", result.to_csv()?),
        "parquet" => {
            let Some(path) = &args.output else {
                bail!("--format parquet needs --output FILE");
            };
            let rows = result.to_parquet(path)?;
            eprintln!("wrote {rows} rows to {}", path.display());
        }
        other => bail!("unknown format {other:?}"),
    }
    if result.truncated {
        eprintln!("(truncated at {} rows; raise --max-rows)", args.max_rows);
    }
    Ok(())
}
