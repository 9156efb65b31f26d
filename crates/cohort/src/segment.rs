//! `cohort segment` and `cohort tag`: define audiences and look at their members, on a data
//! directory directly. A server running on the same directory picks up new and changed
//! definitions within a moment and keeps them current in real time.

use crate::cli::{SegmentArgs, SegmentCommand};
use anyhow::{Context, bail};
use chrono::Utc;
use cohort_lake::QueryOptions;
use cohort_segment::Condition;
use cohort_server::{
    ALL_ROWS, Analytics, batch_members, export_sql, moves_with_time, refresh_segment,
};
use cohort_store::{NewSegment, SegmentKind, Store, StoreConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(args: SegmentArgs, kind: SegmentKind) -> anyhow::Result<()> {
    let mut config = StoreConfig::new(&args.data.data);
    config.process = false;
    let store = tokio::task::spawn_blocking(move || Store::open(config))
        .await?
        .with_context(|| format!("opening the data directory {}", args.data.data.display()))?;
    let analytics = || -> anyhow::Result<Arc<Analytics>> {
        Analytics::open(store.clone(), false).context("opening the event lake")
    };
    let word = if kind == SegmentKind::Tag {
        "tag"
    } else {
        "segment"
    };
    match args.command {
        SegmentCommand::List => {
            let list = store.segments().list(Some(kind))?;
            if args.json {
                let items: Vec<_> = list
                    .iter()
                    .map(|(d, n)| json!({"name": d.name, "description": d.description, "members": n, "condition": d.condition, "updated_at": d.updated_at}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("{:<40} {:>9}  description", "name", "members");
                for (d, n) in &list {
                    println!("{:<40} {:>9}  {}", d.name, n, d.description);
                }
            }
        }
        SegmentCommand::Create {
            name,
            condition,
            description,
        } => {
            let condition = parse(&condition)?;
            let def = store.segments().create(&NewSegment {
                name,
                kind,
                description: description.unwrap_or_default(),
                condition,
            })?;
            let engine = analytics()?;
            let diff = refresh_segment(&engine, &store, &def, "definition")
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            report(args.json, word, &def.name, "created", diff)?;
        }
        SegmentCommand::Update {
            name,
            condition,
            description,
        } => {
            let condition = condition.as_deref().map(parse).transpose()?;
            let def = store
                .segments()
                .update(&name, description.as_deref(), condition.as_ref())?;
            let engine = analytics()?;
            let diff = refresh_segment(&engine, &store, &def, "definition")
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            report(args.json, word, &def.name, "updated", diff)?;
        }
        SegmentCommand::Delete { name } => {
            store.segments().delete(&name)?;
            eprintln!("{word} {name:?} deleted");
        }
        SegmentCommand::Preview { condition } => {
            let condition = parse(&condition)?;
            let engine = analytics()?;
            let members = batch_members(&engine, &condition, Utc::now()).await?;
            if args.json {
                println!(
                    "{}",
                    json!({"count": members.len(), "refreshed_with_time": moves_with_time(&condition)})
                );
            } else {
                println!("{} customers match", members.len());
            }
        }
        SegmentCommand::Members { name, after, limit } => {
            let def = store.segments().get(&name)?;
            let rows = store.segments().members(def.id, after, limit)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:>12}  entered_at", "customer_id");
                for m in &rows {
                    println!("{:>12}  {}", m.customer_id, m.entered_at.to_rfc3339());
                }
                if rows.len() == limit
                    && let Some(last) = rows.last()
                {
                    eprintln!("(more: --after {})", last.customer_id);
                }
            }
        }
        SegmentCommand::Export {
            name,
            format,
            output,
        } => {
            let def = store.segments().get(&name)?;
            let result = analytics()?
                .query(
                    &export_sql(&def.name),
                    QueryOptions {
                        timeout: Duration::from_secs(600),
                        max_rows: ALL_ROWS,
                    },
                )
                .await?;
            match format.as_str() {
                "csv" => match &output {
                    Some(path) => std::fs::write(path, result.to_csv()?)
                        .with_context(|| format!("writing {}", path.display()))?,
                    None => print!("{}", result.to_csv()?),
                },
                "parquet" => {
                    let Some(path) = &output else {
                        bail!("--format parquet needs --output FILE");
                    };
                    result.to_parquet(path)?;
                }
                other => bail!("unknown format {other:?}: use csv or parquet"),
            }
            if let Some(path) = &output {
                eprintln!("wrote {} members to {}", result.num_rows(), path.display());
            }
        }
        SegmentCommand::History { id_type, value } => {
            let Some(customer) = store.profiles().find_customer(&id_type, &value)? else {
                bail!("no customer has {id_type} {value:?}");
            };
            let changes = store.segments().changes(0, None, Some(customer), 100_000)?;
            let changes: Vec<_> = changes.into_iter().filter(|c| c.kind == kind).collect();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&changes)?);
            } else {
                println!("{:<28} {:<8} {:<40} reason", "at", "change", word);
                for c in &changes {
                    println!(
                        "{:<28} {:<8} {:<40} {}",
                        c.at.to_rfc3339(),
                        c.change,
                        c.segment,
                        c.reason
                    );
                }
            }
        }
    }
    Ok(())
}

fn parse(text: &str) -> anyhow::Result<Condition> {
    let text = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the condition from {path}"))?,
        None => text.to_string(),
    };
    let condition = Condition::from_json(&text).map_err(|e| anyhow::anyhow!("condition.{e}"))?;
    condition
        .validate()
        .map_err(|e| anyhow::anyhow!("condition.{e}"))?;
    Ok(condition)
}

fn report(
    as_json: bool,
    word: &str,
    name: &str,
    what: &str,
    diff: cohort_store::MembershipDiff,
) -> anyhow::Result<()> {
    if as_json {
        println!("{}", json!({"name": name, "evaluation": diff}));
    } else {
        println!(
            "{word} {name:?} {what}: {} members ({} entered, {} left)",
            diff.members, diff.entered, diff.exited
        );
    }
    Ok(())
}
