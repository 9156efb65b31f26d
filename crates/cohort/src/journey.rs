//! `cohort journey`: journeys, message templates, channels and coupon pools in a data
//! directory, through the engine (beside a running server, which picks the changes up within
//! seconds). Definitions are read from JSON or YAML files (by extension, or `-` for JSON on
//! stdin); everything prints a short table, or JSON with `--json`.

use crate::cli::DataArgs;
use crate::data_dir::with_engine;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cohort_engine::{DefinitionFormat, IdentifierRef, channel_json, template_json, version_json};
use cohort_journey::coupon::{Expiry, NewPool};
use cohort_journey::definition::ChannelKind;
use cohort_journey::definition::lifecycle::Action;
use cohort_journey::measure::{Costs, ReportOptions};
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct JourneyArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: JourneyCommand,
}

#[derive(Subcommand, Debug)]
pub enum JourneyCommand {
    /// Check a definition against the templates, channels, segments, tags, experiments and
    /// coupon pools that exist, without saving it.
    Validate { file: PathBuf },
    /// Save a definition as a draft (a new journey, its draft edited, or a new draft version).
    Save { file: PathBuf },
    /// Publish a version (the latest by default): checked, in one commit.
    Publish {
        key: String,
        #[arg(long)]
        version: Option<u32>,
    },
    Pause {
        key: String,
        #[arg(long)]
        version: Option<u32>,
    },
    Resume {
        key: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Retire a version; archiving the last running one ends its customers' entries.
    Archive {
        key: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// The latest version of every journey.
    List,
    /// A journey's versions and history.
    Show { key: String },
    /// Enter a customer in a journey triggered by API calls.
    Enter {
        key: String,
        /// The customer, as `type=value` (`user_id=u-1001`, `email=ada@example.com`).
        #[arg(long)]
        id: String,
        /// The payload templates read as `event` (JSON).
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Makes a repeated call enter once.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// What a journey (every journey without a key) caused: entries, exits, sends,
    /// conversions, revenue, lift over the holdout, cost and return.
    Report {
        key: Option<String>,
        /// The currency of prices and revenue.
        #[arg(long, default_value = "CNY")]
        currency: String,
        /// A channel's price per message, `channel=price` (repeatable).
        #[arg(long = "cost")]
        costs: Vec<String>,
        /// Intervals at confidence 1 − alpha.
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
    },
    /// Message templates.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Channels (provider configurations).
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Coupon code pools.
    #[command(subcommand)]
    Coupon(CouponCommand),
}

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Save a new version from a JSON file of Liquid parts (`{"subject", "text", "html"}`,
    /// `{"body"}` …).
    Save {
        key: String,
        #[arg(long, value_parser = parse_kind)]
        kind: ChannelKind,
        file: PathBuf,
    },
    List,
    Show {
        key: String,
    },
    /// Render the latest version for a customer, or for the empty profile without `--id`.
    Preview {
        key: String,
        #[arg(long)]
        id: Option<String>,
        /// The triggering event's properties (JSON).
        #[arg(long, default_value = "{}")]
        event: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ChannelCommand {
    /// Save a channel's configuration from a JSON file (`{"provider": "twilio", …}`).
    Save {
        name: String,
        file: PathBuf,
    },
    /// Channels, secrets redacted.
    List,
    Delete {
        name: String,
    },
    /// A channel's dead letters with their reasons.
    DeadLetters {
        name: String,
    },
    /// Put a dead letter back in its channel's queue.
    Replay {
        key: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CouponCommand {
    /// Create a pool.
    Create {
        key: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Each code expires this many days after its issue.
        #[arg(long)]
        valid_for_days: Option<u32>,
    },
    /// Add codes from a CSV file (first column; a `code` header is skipped).
    Import { pool: String, file: PathBuf },
    /// Generate codes from a pattern: `#` a digit, `?` a letter.
    Generate {
        pool: String,
        pattern: String,
        count: u64,
    },
    /// A pool's codes by state.
    Show { pool: String },
}

fn parse_kind(text: &str) -> Result<ChannelKind, String> {
    serde_json::from_value(json!(text))
        .map_err(|_| format!("{text:?}: use email, sms, push or webhook"))
}

fn parse_id(text: &str) -> anyhow::Result<IdentifierRef> {
    let Some((kind, value)) = text.split_once('=') else {
        bail!("--id {text:?}: write it as type=value, e.g. user_id=u-1001");
    };
    Ok(IdentifierRef {
        kind: kind.to_string(),
        value: value.to_string(),
    })
}

fn read_text(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

fn format_of(file: &Path) -> DefinitionFormat {
    match file.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => DefinitionFormat::Yaml,
        _ => DefinitionFormat::Json,
    }
}

fn print(value: &Value, json: bool, line: impl FnOnce(&Value) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", line(value));
    }
}

fn version_line(v: &Value) -> String {
    format!(
        "{} v{} {}",
        v["key"].as_str().unwrap_or_default(),
        v["version"],
        v["status"].as_str().unwrap_or_default()
    )
}

pub async fn run(args: JourneyArgs) -> anyhow::Result<()> {
    let json = args.json;
    with_engine(&args.data, async |engine| {
        let lifecycle = |key: String, version: Option<u32>, action: Action| async move {
            let changed = engine.journey_action(key, version, action).await?;
            print(&version_json(&changed), json, version_line);
            anyhow::Ok(())
        };
        match args.command {
            JourneyCommand::Validate { file } => {
                let journey = engine
                    .validate_journey(read_text(&file)?, format_of(&file))
                    .await?;
                print(&json!({"valid": true, "key": journey.key}), json, |_| {
                    format!("{}: valid", journey.key)
                });
            }
            JourneyCommand::Save { file } => {
                let saved = engine
                    .save_journey(read_text(&file)?, format_of(&file))
                    .await?;
                print(&version_json(&saved), json, version_line);
            }
            JourneyCommand::Publish { key, version } => {
                lifecycle(key, version, Action::Publish).await?
            }
            JourneyCommand::Pause { key, version } => {
                lifecycle(key, version, Action::Pause).await?
            }
            JourneyCommand::Resume { key, version } => {
                lifecycle(key, version, Action::Resume).await?
            }
            JourneyCommand::Archive { key, version } => {
                lifecycle(key, version, Action::Archive).await?
            }
            JourneyCommand::List => {
                let all: Vec<Value> = engine.journeys().await?.iter().map(version_json).collect();
                print(&json!(all), json, |v| {
                    v.as_array().map_or_else(String::new, |a| {
                        a.iter().map(version_line).collect::<Vec<_>>().join("\n")
                    })
                });
            }
            JourneyCommand::Show { key } => {
                let (versions, history) = engine.journey(key).await?;
                let value = json!({
                    "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
                    "history": history,
                });
                print(&value, json, |v| {
                    v["versions"].as_array().map_or_else(String::new, |a| {
                        a.iter().map(version_line).collect::<Vec<_>>().join("\n")
                    })
                });
            }
            JourneyCommand::Enter {
                key,
                id,
                payload,
                request_id,
            } => {
                let identifier = parse_id(&id)?;
                let payload: Value =
                    serde_json::from_str(&payload).context("--payload: not JSON")?;
                let request_id = request_id
                    .unwrap_or_else(|| format!("cli:{id}:{}", engine.now().timestamp_micros()));
                let entered = engine
                    .enter_journey(key, identifier, payload, request_id)
                    .await?;
                print(&json!({"entered": entered}), json, |_| {
                    if entered {
                        "entered".into()
                    } else {
                        "not entered (policy or already in)".into()
                    }
                });
            }
            JourneyCommand::Report {
                key,
                currency,
                costs,
                alpha,
            } => {
                let mut prices = Costs::new(&currency);
                for cost in costs {
                    let Some((channel, price)) = cost.split_once('=') else {
                        bail!("--cost {cost:?}: write it as channel=price");
                    };
                    let price: f64 = price.parse().with_context(|| format!("--cost {cost:?}"))?;
                    prices = prices.per_message(channel, price);
                }
                let report = engine
                    .journey_report(key, prices, ReportOptions { alpha })
                    .await?;
                let value = serde_json::to_value(&report)?;
                // The report's fields are the API's; the table is its JSON, indented.
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
            JourneyCommand::Template(command) => template(engine, command, json).await?,
            JourneyCommand::Channel(command) => channel(engine, command, json).await?,
            JourneyCommand::Coupon(command) => coupon(engine, command, json).await?,
        }
        Ok(())
    })
    .await
}

async fn template(
    engine: &cohort_engine::Engine,
    command: TemplateCommand,
    json: bool,
) -> anyhow::Result<()> {
    let line = |t: &Value| {
        format!(
            "{} v{} ({})",
            t["key"].as_str().unwrap_or_default(),
            t["version"],
            t["kind"].as_str().unwrap_or_default()
        )
    };
    match command {
        TemplateCommand::Save { key, kind, file } => {
            let source: Value = serde_json::from_str(&read_text(&file)?)
                .context("the template file is not JSON")?;
            let saved = engine.save_template(key, kind, source).await?;
            print(&template_json(&saved), json, line);
        }
        TemplateCommand::List => {
            let all: Vec<Value> = engine
                .templates()
                .await?
                .iter()
                .map(template_json)
                .collect();
            print(&json!(all), json, |v| {
                v.as_array().map_or_else(String::new, |a| {
                    a.iter().map(line).collect::<Vec<_>>().join("\n")
                })
            });
        }
        TemplateCommand::Show { key } => {
            print(&template_json(&engine.template(key).await?), true, line);
        }
        TemplateCommand::Preview { key, id, event } => {
            let identifier = id.as_deref().map(parse_id).transpose()?;
            let event: Value = serde_json::from_str(&event).context("--event: not JSON")?;
            let preview = engine.preview_template(key, identifier, event).await?;
            print(&preview, true, |_| String::new());
        }
    }
    Ok(())
}

async fn channel(
    engine: &cohort_engine::Engine,
    command: ChannelCommand,
    json: bool,
) -> anyhow::Result<()> {
    let line = |c: &Value| {
        format!(
            "{} ({})",
            c["name"].as_str().unwrap_or_default(),
            c["kind"].as_str().unwrap_or_default()
        )
    };
    match command {
        ChannelCommand::Save { name, file } => {
            let config: Value =
                serde_json::from_str(&read_text(&file)?).context("the channel file is not JSON")?;
            let saved = engine.save_channel(name, config).await?;
            print(&channel_json(&saved), json, line);
        }
        ChannelCommand::List => {
            let all: Vec<Value> = engine.channels().await?.iter().map(channel_json).collect();
            print(&json!(all), json, |v| {
                v.as_array().map_or_else(String::new, |a| {
                    a.iter().map(line).collect::<Vec<_>>().join("\n")
                })
            });
        }
        ChannelCommand::Delete { name } => {
            engine.delete_channel(name.clone()).await?;
            println!("deleted {name}");
        }
        ChannelCommand::DeadLetters { name } => {
            let letters: Vec<Value> = engine
                .dead_letters(name, 1000)
                .await?
                .iter()
                .map(cohort_engine::dead_letter_json)
                .collect();
            print(&json!(letters), json, |v| {
                v.as_array().map_or_else(String::new, |a| {
                    a.iter()
                        .map(|d| {
                            format!(
                                "{}  {}",
                                d["key"].as_str().unwrap_or_default(),
                                d["reason"].as_str().unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
            });
        }
        ChannelCommand::Replay { key } => {
            engine.replay_dead_letter(key.clone()).await?;
            println!("replayed {key}");
        }
    }
    Ok(())
}

async fn coupon(
    engine: &cohort_engine::Engine,
    command: CouponCommand,
    json: bool,
) -> anyhow::Result<()> {
    let added =
        |r: cohort_journey::coupon::AddReport| json!({"added": r.added, "skipped": r.skipped});
    let line = |v: &Value| format!("added {}, skipped {}", v["added"], v["skipped"]);
    match command {
        CouponCommand::Create {
            key,
            name,
            valid_for_days,
        } => {
            let mut pool = NewPool::new(&key, &name);
            if let Some(days) = valid_for_days {
                pool = pool.expiry(Expiry::AfterIssue(chrono::Duration::days(i64::from(days))));
            }
            engine.create_coupon_pool(pool).await?;
            println!("created {key}");
        }
        CouponCommand::Import { pool, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            print(
                &added(engine.import_coupon_codes(pool, bytes).await?),
                json,
                line,
            );
        }
        CouponCommand::Generate {
            pool,
            pattern,
            count,
        } => {
            print(
                &added(engine.generate_coupon_codes(pool, pattern, count).await?),
                json,
                line,
            );
        }
        CouponCommand::Show { pool } => {
            let c = engine.coupon_counts(pool.clone()).await?;
            let value = json!({"pool": pool, "available": c.available, "issued": c.issued, "redeemed": c.redeemed, "expired": c.expired});
            print(&value, json, |v| {
                format!(
                    "{}: {} available, {} issued, {} redeemed, {} expired",
                    pool, v["available"], v["issued"], v["redeemed"], v["expired"]
                )
            });
        }
    }
    Ok(())
}
