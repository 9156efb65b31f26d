//! `cohort flag …` and the definition commands of `cohort experiment …` (experiments, metrics):
//! list, show, apply from a file, delete, and a definition's versions. They work on the data
//! directory through the engine, beside a running server or without one.

use crate::cli::DataArgs;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cohort_engine::{Engine, EvaluationRequest, IdentifierRef, SavedDefinition};
use cohort_experiment::store::{DefinitionKind, Expected};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// What every kind of definition can be asked.
#[derive(Subcommand, Debug)]
pub enum DefinitionCommand {
    /// Current definitions with their versions.
    List,
    /// One definition, as JSON.
    Show { key: String },
    /// Create or replace definitions from a JSON file (`-` for standard input): one object, or
    /// a list saved in order, stopping at the first that is refused.
    Apply { file: PathBuf },
    /// Delete a definition nothing else uses (its history is kept).
    Delete { key: String },
    /// Every saved version of a definition, oldest first.
    Versions { key: String },
}

#[derive(Args, Debug)]
pub struct FlagArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: FlagCommand,
}

#[derive(Subcommand, Debug)]
pub enum FlagCommand {
    #[command(flatten)]
    Definition(DefinitionCommand),
    /// Every flag's value for one customer or set of attributes.
    Evaluate {
        /// The customer, by an identifier: `user_id=u-1001`, `email=ada@example.com`,
        /// `customer_id=42`.
        #[arg(long)]
        id: Option<String>,
        /// An attribute to evaluate with (repeatable), `key=value`; the value is read as JSON
        /// when it is JSON, else as text.
        #[arg(long = "attr")]
        attributes: Vec<String>,
        /// Do not log `Experiment Viewed` for the experiments the customer is in.
        #[arg(long)]
        no_exposures: bool,
    },
}

pub async fn run_flag(args: FlagArgs) -> anyhow::Result<()> {
    let engine = crate::data_dir::open_tool(&args.data.data).await?;
    let outcome = match args.command {
        FlagCommand::Definition(command) => {
            run(&engine, DefinitionKind::Flag, command, args.json).await
        }
        FlagCommand::Evaluate {
            id,
            attributes,
            no_exposures,
        } => evaluate(&engine, id, attributes, !no_exposures, args.json).await,
    };
    engine.close().await;
    outcome
}

/// Runs one definition command for `kind`.
pub async fn run(
    engine: &Engine,
    kind: DefinitionKind,
    command: DefinitionCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        DefinitionCommand::List => {
            let all = engine.definitions(kind).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no {}s", kind.as_str());
            } else {
                for d in &all {
                    println!("{:<32} v{:<4} saved {}", d.key, d.version, d.saved_at);
                }
            }
        }
        DefinitionCommand::Show { key } => {
            print_saved(&engine.definition(kind, key).await?, true);
        }
        DefinitionCommand::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let document: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let documents = match document {
                Value::Array(items) => items,
                one => vec![one],
            };
            for (i, document) in documents.into_iter().enumerate() {
                let saved = engine
                    .save_definition(kind, None, document, Expected::Any)
                    .await
                    .with_context(|| {
                        format!("{} {} of {}", kind.as_str(), i + 1, file.display())
                    })?;
                print_saved(&saved, json);
            }
        }
        DefinitionCommand::Delete { key } => {
            let deleted = engine.delete_definition(kind, key, Expected::Any).await?;
            print_saved(&deleted, json);
        }
        DefinitionCommand::Versions { key } => {
            let history = engine.definition_history(kind, key).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&history)?);
            } else {
                for d in &history {
                    let what = if d.definition.is_some() {
                        "saved"
                    } else {
                        "deleted"
                    };
                    println!("v{:<4} {what} {}", d.version, d.saved_at);
                }
            }
        }
    }
    Ok(())
}

pub fn print_saved(saved: &SavedDefinition, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(saved).unwrap_or_default()
        );
    } else {
        let what = if saved.definition.is_some() {
            "saved"
        } else {
            "deleted"
        };
        println!(
            "{} {} {what} as version {}",
            saved.kind, saved.key, saved.version
        );
    }
}

async fn evaluate(
    engine: &Engine,
    id: Option<String>,
    attributes: Vec<String>,
    log_exposures: bool,
    json: bool,
) -> anyhow::Result<()> {
    let identifier = id
        .map(|text| match text.split_once('=') {
            Some((kind, value)) if !kind.is_empty() && !value.is_empty() => Ok(IdentifierRef {
                kind: kind.to_string(),
                value: value.to_string(),
            }),
            _ => bail!("--id takes TYPE=VALUE, such as user_id=u-1001, not {text:?}"),
        })
        .transpose()?;
    let mut given = Map::new();
    for pair in attributes {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--attr takes KEY=VALUE, not {pair:?}");
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        given.insert(key.to_string(), value);
    }
    if identifier.is_none() && given.is_empty() {
        bail!("say who to evaluate for: --id TYPE=VALUE, --attr KEY=VALUE, or both");
    }
    let evaluation = engine
        .evaluate_flags(EvaluationRequest {
            identifier,
            attributes: given,
            flags: None,
            log_exposures,
        })
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
        return Ok(());
    }
    for (key, flag) in &evaluation.flags {
        let from = match &flag.experiment {
            Some(a) if a.in_experiment => {
                format!("experiment {} → {}", a.key, a.variation_key)
            }
            _ => flag.source.to_string(),
        };
        println!("{key:<32} {:<20} ({from})", flag.value.to_string());
    }
    if evaluation.exposures_logged > 0 {
        println!("{} exposure(s) logged", evaluation.exposures_logged);
    }
    Ok(())
}
