//! `cohort admin`: operator commands that work on the data directory directly, with or without a
//! running server (SQLite serialises the writers).

use crate::cli::{AdminArgs, AdminCommand, FailedCommand, KeyCommand, SourceCommand};
use anyhow::{Context, bail};
use cohort_collect::normalise::NormaliseRules;
use cohort_collect::tracking_plan::{TrackingPlan, TrackingPlanSpec};
use cohort_engine::Engine;
use cohort_store::{FailedFilter, Source, Store};
use serde_json::{Value, json};

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let engine = crate::data_dir::open_tool(&args.data.data).await?;
    let store = engine.store();
    let out = Output { json: args.json };
    match args.command {
        AdminCommand::Source(cmd) => source(store, cmd, &out),
        AdminCommand::Key(KeyCommand::Create { name }) => {
            let (record, key) = store.catalog().create_admin_key(&name, "admin")?;
            out.print(
                &json!({"id": record.id, "name": record.name, "role": record.role, "key": key}),
                || {
                    format!(
                        "Created admin key {:?} (shown only this once):\n  {key}",
                        record.name
                    )
                },
            );
            Ok(())
        }
        AdminCommand::Failed(cmd) => failed(&engine, cmd, &out).await,
        AdminCommand::Profile { kind, value } => {
            let profile = store
                .profiles()
                .profile(&kind, &value, chrono::Utc::now())?
                .with_context(|| format!("no customer has {kind} {value:?}"))?;
            let value = serde_json::to_value(&*profile)?;
            out.print(&value, || {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            });
            Ok(())
        }
        AdminCommand::Stats => {
            let totals = store.profiles().totals()?;
            let failed = store.failed_events().count(None)?;
            let value = json!({
                "customers": totals.customers, "events": totals.events,
                "identities": totals.identities, "merges": totals.merges,
                "failed_events": failed,
            });
            out.print(&value, || {
                format!(
                    "customers {}\nevents {}\nidentities {}\nmerges {}\nfailed events {}",
                    totals.customers, totals.events, totals.identities, totals.merges, failed
                )
            });
            Ok(())
        }
    }
}

struct Output {
    json: bool,
}

impl Output {
    fn print(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }
}

pub(crate) fn find_source(store: &Store, name_or_id: &str) -> anyhow::Result<Source> {
    if let Some(s) = store.catalog().source_by_name(name_or_id)? {
        return Ok(s);
    }
    if let Ok(id) = name_or_id.parse::<i64>()
        && let Some(s) = store.catalog().source(id)?
    {
        return Ok(s);
    }
    bail!("no source named {name_or_id:?} (see `cohort admin source list`)")
}

fn read_json(path: &std::path::Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn source(store: &Store, cmd: SourceCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        SourceCommand::Create {
            name,
            kind,
            trait_claims,
        } => {
            let (source, key) = store.catalog().create_source(&name)?;
            let kind =
                cohort_store::SourceKind::parse(&kind).unwrap_or(cohort_store::SourceKind::Server);
            store
                .catalog()
                .set_source_trust(source.id, kind, trait_claims)?;
            out.print(
                &json!({"id": source.id, "name": source.name, "kind": kind, "write_key": key}),
                || {
                    format!(
                        "Created source {:?} (id {}). Write key (shown only this once):\n  {key}",
                        source.name, source.id
                    )
                },
            );
        }
        SourceCommand::List => {
            let sources = store.catalog().sources()?;
            out.print(&json!(sources), || {
                let mut lines = vec![format!(
                    "{:>4}  {:<24} {:<12} {}",
                    "id", "name", "key", "created"
                )];
                for s in &sources {
                    lines.push(format!(
                        "{:>4}  {:<24} {:<12} {}",
                        s.id,
                        s.name,
                        format!("{}…", s.key_prefix),
                        s.created_at
                    ));
                }
                lines.join("\n")
            });
        }
        SourceCommand::TrackingPlan {
            source,
            file,
            clear,
        } => {
            let s = find_source(store, &source)?;
            if clear {
                store.catalog().set_tracking_plan(s.id, None)?;
                out.print(&json!({"source_id": s.id, "tracking_plan": null}), || {
                    format!("Removed the tracking plan of {:?}.", s.name)
                });
                return Ok(());
            }
            let Some(file) = file else {
                bail!("give a plan file, or --clear")
            };
            let spec: TrackingPlanSpec = serde_json::from_value(read_json(&file)?)
                .with_context(|| format!("{} is not a tracking plan", file.display()))?;
            let events = spec.events.len();
            TrackingPlan::compile(spec.clone())?;
            store
                .catalog()
                .set_tracking_plan(s.id, Some(&serde_json::to_value(&spec)?))?;
            out.print(&json!({"source_id": s.id, "tracking_plan": spec}), || {
                format!(
                    "Set the tracking plan of {:?}: {events} planned events.",
                    s.name
                )
            });
        }
        SourceCommand::Origins { source, allow, any } => {
            let s = find_source(store, &source)?;
            let mut origins = allow;
            origins.sort();
            origins.dedup();
            let origins = (!any).then_some(origins);
            store
                .catalog()
                .set_allowed_origins(s.id, origins.as_deref())?;
            out.print(
                &json!({"source_id": s.id, "allowed_origins": origins}),
                || match &origins {
                    Some(list) => format!(
                        "Browsers may send {:?}'s events from {} only.",
                        s.name,
                        list.join(", ")
                    ),
                    None => format!("Browsers may send {:?}'s events from any origin.", s.name),
                },
            );
        }
        SourceCommand::Normalisation { source, file } => {
            let s = find_source(store, &source)?;
            let rules: NormaliseRules =
                serde_json::from_value(read_json(&file)?).with_context(|| {
                    format!("{} is not a set of normalisation rules", file.display())
                })?;
            store
                .catalog()
                .set_source_settings(s.id, &serde_json::to_value(&rules)?)?;
            out.print(&json!({"source_id": s.id, "normalisation": rules}), || {
                format!("Set the normalisation rules of {:?}.", s.name)
            });
        }
    }
    Ok(())
}

async fn failed(engine: &Engine, cmd: FailedCommand, out: &Output) -> anyhow::Result<()> {
    let store = engine.store();
    match cmd {
        FailedCommand::List {
            source,
            code,
            pending,
            limit,
            after,
        } => {
            let source_id = source
                .map(|s| find_source(store, &s).map(|s| s.id))
                .transpose()?;
            let events = store.failed_events().list(&FailedFilter {
                source_id,
                code,
                pending_only: pending,
                after_id: after,
                limit,
            })?;
            out.print(&json!(events), || {
                let mut lines = vec![format!(
                    "{:>6}  {:<24} {:<26} {}",
                    "id", "received", "code", "reason"
                )];
                for e in &events {
                    let state = if e.replayed_at.is_some() {
                        " (replayed)"
                    } else {
                        ""
                    };
                    lines.push(format!(
                        "{:>6}  {:<24} {:<26} {}{state}",
                        e.id, e.received_at, e.code, e.reason
                    ));
                }
                lines.join("\n")
            });
        }
        FailedCommand::Replay {
            ids,
            all,
            source,
            code,
        } => {
            let events = if all {
                let source_id = source
                    .map(|s| find_source(store, &s).map(|s| s.id))
                    .transpose()?;
                store.failed_events().list(&FailedFilter {
                    source_id,
                    code,
                    pending_only: true,
                    after_id: 0,
                    limit: 10_000,
                })?
            } else {
                if ids.is_empty() {
                    bail!("name failed-event IDs to replay, or --all");
                }
                let mut events = Vec::new();
                for id in ids {
                    events.push(
                        store
                            .failed_events()
                            .get(id)?
                            .with_context(|| format!("no failed event {id}"))?,
                    );
                }
                events
            };
            let outcomes = engine.replay_failed(events).await?;
            let replayed = outcomes.iter().filter(|o| o.replayed).count();
            out.print(&json!({"replayed": replayed, "still_failing": outcomes.len() - replayed, "outcomes": outcomes}), || {
                let mut lines = vec![format!("Replayed {replayed} of {} failed events.", outcomes.len())];
                for o in outcomes.iter().filter(|o| !o.replayed) {
                    lines.push(format!("  {}: {} {}", o.id, o.code.as_deref().unwrap_or(""), o.message.as_deref().unwrap_or("")));
                }
                lines.join("\n")
            });
        }
    }
    Ok(())
}
