//! `cohort segment` and `cohort tag`: define audiences and look at their members, on a data
//! directory directly. A server running on the same directory picks up new and changed
//! definitions within a moment and keeps them current in real time.

use crate::cli::{SegmentArgs, SegmentCommand};
use anyhow::{Context, bail};
use cohort_segment::{Condition, moves_with_time};
use cohort_store::{NewSegment, SegmentKind};
use serde_json::json;

pub async fn run(args: SegmentArgs, kind: SegmentKind) -> anyhow::Result<()> {
    let engine = crate::data_dir::open_tool(&args.data.data).await?;
    let store = engine.store();
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
            let new = NewSegment {
                name,
                kind,
                description: description.unwrap_or_default(),
                condition,
            };
            let (def, diff) = engine.create_segment(new).await?;
            report(args.json, word, &def.name, "created", diff)?;
        }
        SegmentCommand::Update {
            name,
            condition,
            description,
        } => {
            let condition = condition.as_deref().map(parse).transpose()?;
            let (def, diff) = engine.update_segment(name, description, condition).await?;
            report(args.json, word, &def.name, "updated", diff)?;
        }
        SegmentCommand::Delete { name } => {
            store.segments().delete(&name)?;
            eprintln!("{word} {name:?} deleted");
        }
        SegmentCommand::Preview { condition } => {
            let condition = parse(&condition)?;
            let members = engine.preview_segment(&condition).await?;
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
            let (_, result) = engine.export_segment(name).await?;
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
