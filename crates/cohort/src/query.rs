//! `cohort query`: read-only SQL over the event lake and the state store.

use crate::cli::QueryArgs;
use anyhow::bail;
use cohort_lake::QueryOptions;
use std::time::Duration;

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    // A running server owns the lake writer; this process only reads (it still sees events not yet
    // written to Parquet, from the state store).
    let engine = crate::data_dir::open_tool(&args.data.data).await?;
    let analytics = engine.lake()?;
    let options = QueryOptions {
        timeout: Duration::from_secs_f64(args.timeout),
        max_rows: args.max_rows,
        ..QueryOptions::default()
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
