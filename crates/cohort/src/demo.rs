//! `cohort demo`: a realistic dataset sent through the real HTTP API.

use crate::cli::DemoArgs;
use crate::serve::{launch, wait_for_signal};
use anyhow::Context;
use cohort_demo::{DemoOptions, SendOptions, generate, send};
use std::time::Duration;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions {
        customers: args.customers,
        days: args.days,
        seed: args.seed,
        ..DemoOptions::default()
    };
    let messages = generate(&options);
    println!(
        "Generated {} messages for {} customers over {} days (seed {}).",
        messages.len(),
        args.customers,
        args.days,
        args.seed
    );
    if let (Some(target), Some(key)) = (&args.target, &args.write_key) {
        let summary = send(messages, &send_options(target.clone(), key.clone(), &args))
            .await
            .context("sending demo data")?;
        println!(
            "Sent {} messages in {} batches in {:.1?}.",
            summary.sent, summary.batches, summary.elapsed
        );
        return Ok(());
    }

    let server = launch(&args.serve).await?;
    let engine = server.state().engine().clone();
    let store = engine.store().clone();
    let (source, key) = tokio::task::spawn_blocking({
        let store = store.clone();
        move || -> anyhow::Result<_> {
            let existing = store.catalog().sources()?.len();
            let name = if existing == 0 {
                "demo".to_string()
            } else {
                format!("demo-{}", existing + 1)
            };
            Ok(store.catalog().create_source(&name)?)
        }
    })
    .await??;
    println!(
        "Created source {:?} (id {}) with write key {key}",
        source.name, source.id
    );
    let base = format!("http://{}", server.addr());
    let summary = send(messages, &send_options(base.clone(), key, &args))
        .await
        .context("sending demo data")?;
    println!(
        "Sent {} messages in {} batches in {:.1?}; processing…",
        summary.sent, summary.batches, summary.elapsed
    );
    let settled = engine.wait_processed(Duration::from_secs(600)).await?;
    // RFM scores become profile traits (and the rfm:* tags); segments then take them in.
    let rfm = {
        let run = engine
            .run_rfm(cohort_engine::RfmParams::default())
            .await
            .map_err(|e| anyhow::anyhow!("RFM: {e}"))?;
        engine.wait_processed(Duration::from_secs(600)).await?;
        format!(
            "RFM scored {} customers into {} named segments and {} clusters (cohort rfm --data {}).",
            run.report.customers,
            run.report
                .segments
                .iter()
                .filter(|s| s.stats.customers > 0)
                .count(),
            run.report.clusters.len(),
            store.data_dir().display()
        )
    };
    let totals = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.profiles().totals()).await??
    };
    println!(
        "{} customers, {} events, {} identities, {} merges{}.",
        totals.customers,
        totals.events,
        totals.identities,
        totals.merges,
        if settled {
            ""
        } else {
            " (processing still running)"
        }
    );
    let tags = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store.segments().list(Some(cohort_store::SegmentKind::Tag))
        })
        .await??
    };
    let tagged: i64 = tags.iter().map(|(_, n)| n).sum();
    println!("{rfm}");
    println!(
        "{} tags defined, {} in use, {} tag assignments (cohort tag list).",
        tags.len(),
        tags.iter().filter(|(_, n)| *n > 0).count(),
        tagged
    );
    println!("Try:  curl -H \"Authorization: Bearer <admin key>\" {base}/api/v1/stats");
    println!(
        "      curl -H \"Authorization: Bearer <admin key>\" {base}/api/v1/profiles/customer_id/1"
    );
    if args.exit {
        server.shutdown().await?;
        return Ok(());
    }
    println!("Serving; press Ctrl-C to stop.");
    wait_for_signal().await;
    server.shutdown().await?;
    Ok(())
}

fn send_options(base_url: String, write_key: String, args: &DemoArgs) -> SendOptions {
    SendOptions {
        base_url,
        write_key,
        batch_size: 100,
        concurrency: args.concurrency.max(1),
        progress: true,
    }
}
