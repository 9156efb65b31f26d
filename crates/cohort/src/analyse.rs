//! `cohort analyse`: active customers, trends, funnels, retention and revenue over a data
//! directory, printed as tables (or the API's JSON with `--json`).

use crate::cli::DataArgs;
use anyhow::{Context, bail};
use chrono::{Duration, NaiveDate, Utc};
use clap::{Args, Subcommand};
use cohort_analysis::{
    ActiveCustomers, ActiveRequest, AnalysisError, Breakdown, ConversionWindow, EventSpec, Funnel,
    FunnelRequest, Interval, PropertyFilter, Retention, RetentionPeriod, RetentionRequest, Revenue,
    RevenueRequest, RunOptions, Trends, TrendsRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct AnalyseArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AnalyseCommand,
}

#[derive(Subcommand, Debug)]
pub enum AnalyseCommand {
    /// Daily, weekly or monthly active customers.
    #[command(
        after_help = "Examples:\n  cohort analyse active --from 2026-01-01 --to 2026-04-01 --interval week\n  cohort analyse active --interval month --by-trait city --limit 5\n  cohort analyse active --event \"Order Completed\" --segment vip --json"
    )]
    Active {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        series: SeriesArgs,
        /// Count only customers with this event (any event by default).
        #[arg(long)]
        event: Option<String>,
    },
    /// Events and distinct customers per day, week or month, per event name.
    #[command(
        after_help = "Examples:\n  cohort analyse trends --event \"Product Viewed\" --event \"Order Completed\" --interval week\n  cohort analyse trends --event '$page' --where plan=pro --by-property category\n  cohort analyse trends --event \"App Opened\" --where-context os.name=iOS --by-context device.type\n\nProperty and context paths are keys joined by dots (address.city); write \\. for a dot inside a key."
    )]
    Trends {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        series: SeriesArgs,
        /// Event name (repeat for several).
        #[arg(long = "event", required_unless_present = "request")]
        events: Vec<String>,
        #[command(flatten)]
        filters: FilterArgs,
    },
    /// An ordered funnel: customers per step, conversion and median time to convert.
    #[command(
        after_help = "Examples:\n  cohort analyse funnel --step \"Product Viewed\" --step \"Product Added\" --step \"Order Completed\" --window 7d\n  cohort analyse funnel --step Viewed --step Bought --step-where 2:currency=EUR --by-property source\n\nA customer converts when any step-1 event in the range is followed by the next steps,\nin order, within the window from that step-1 event (see docs/API.md, Analyses)."
    )]
    Funnel {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        breakdown: BreakdownArgs,
        /// Step event name, in order (2 to 10 steps).
        #[arg(long = "step")]
        steps: Vec<String>,
        /// A property filter on one step: STEP:PATH=VALUE, steps counted from 1 (repeatable).
        #[arg(long = "step-where", value_name = "STEP:PATH=VALUE")]
        step_filters: Vec<String>,
        /// A context filter on one step: STEP:PATH=VALUE (repeatable).
        #[arg(long = "step-where-context", value_name = "STEP:PATH=VALUE")]
        step_context_filters: Vec<String>,
        /// Conversion window: 12h, 7d …
        #[arg(long, default_value = "30d")]
        window: String,
    },
    /// Retention cohorts: of the customers whose first A fell in a day or week, who did B in the
    /// periods after.
    #[command(
        after_help = "Examples:\n  cohort analyse retention --first-event \"Signed Up\" --returning-event \"Order Completed\" --period week --periods 8\n  cohort analyse retention --first-event \"App Opened\" --period day --periods 30\n  cohort analyse retention --first-event \"Signed Up\" --period week --by-property utm.source --limit 5\n  cohort analyse retention --first-event \"App Opened\" --by-context device.type\n\nA breakdown groups customers by a property or context value of their cohort-defining first\nevent (or by their trait) and prints one matrix per group after the overall one."
    )]
    Retention {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        breakdown: BreakdownArgs,
        /// The event that puts a customer in a cohort (its first occurrence in the range).
        #[arg(long)]
        first_event: Option<String>,
        /// The event that counts as returning (default: the first event).
        #[arg(long)]
        returning_event: Option<String>,
        #[arg(long, default_value = "day", value_parser = ["day", "week"])]
        period: String,
        /// Last period shown (default 7 days or 8 weeks).
        #[arg(long)]
        periods: Option<usize>,
    },
    /// Revenue, orders, buyers and average order value per day, week or month.
    #[command(
        after_help = "Examples:\n  cohort analyse revenue --interval month --by-property currency\n  cohort analyse revenue --order-event \"Checkout Completed\" --segment vip"
    )]
    Revenue {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        series: SeriesArgs,
        /// The event that is an order.
        #[arg(long, default_value = "Order Completed")]
        order_event: String,
        #[command(flatten)]
        filters: FilterArgs,
    },
}

#[derive(Args, Debug)]
pub struct Common {
    /// First day of the range (UTC, inclusive). Default: 30 days before --to.
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Day after the range (UTC, exclusive). Default: tomorrow, so today is included.
    #[arg(long)]
    to: Option<NaiveDate>,
    /// Only customers in this segment.
    #[arg(long)]
    segment: Option<String>,
    /// The whole request as the API's JSON body, or @FILE; the other analysis flags are ignored.
    #[arg(long, value_name = "JSON|@FILE")]
    request: Option<String>,
    /// Seconds before each query is cancelled.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(Args, Debug)]
pub struct BreakdownArgs {
    /// Break down by an event property: a path within properties (plan, address.city).
    #[arg(long, conflicts_with_all = ["by_trait", "by_context"])]
    by_property: Option<String>,
    /// Break down by an event context value: a path within context (device.type, os.name).
    #[arg(long, conflicts_with = "by_trait")]
    by_context: Option<String>,
    /// Break down by a profile trait.
    #[arg(long)]
    by_trait: Option<String>,
    /// Largest groups kept (the rest are "(other)").
    #[arg(long)]
    limit: Option<usize>,
}

impl BreakdownArgs {
    fn breakdown(&self) -> Option<Breakdown> {
        match (&self.by_property, &self.by_context, &self.by_trait) {
            (Some(p), _, _) => Some(Breakdown::Property(p.clone())),
            (None, Some(c), _) => Some(Breakdown::Context(c.clone())),
            (None, None, Some(t)) => Some(Breakdown::Trait(t.clone())),
            (None, None, None) => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Keep events whose property equals a value: PATH=VALUE, PATH within properties
    /// (repeatable).
    #[arg(long = "where", value_name = "PATH=VALUE")]
    properties: Vec<String>,
    /// Keep events whose context value equals a value: PATH=VALUE, PATH within context
    /// (device.type=mobile; repeatable).
    #[arg(long = "where-context", value_name = "PATH=VALUE")]
    context: Vec<String>,
}

impl FilterArgs {
    fn filters(&self) -> anyhow::Result<Vec<PropertyFilter>> {
        let mut out = parse_filters(&self.properties, Root::Property)?;
        out.extend(parse_filters(&self.context, Root::Context)?);
        Ok(out)
    }
}

#[derive(Args, Debug)]
pub struct SeriesArgs {
    #[arg(long, default_value = "day", value_parser = ["day", "week", "month"])]
    interval: String,
    #[command(flatten)]
    breakdown: BreakdownArgs,
}

impl SeriesArgs {
    fn interval(&self) -> anyhow::Result<Interval> {
        self.interval
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))
    }
}

impl Common {
    fn range(&self) -> (NaiveDate, NaiveDate) {
        let to = self
            .to
            .unwrap_or_else(|| Utc::now().date_naive() + Duration::days(1));
        let from = self.from.unwrap_or(to - Duration::days(30));
        (from, to)
    }

    /// The `--request` body, when given.
    fn request<T: DeserializeOwned>(&self) -> anyhow::Result<Option<T>> {
        let Some(text) = &self.request else {
            return Ok(None);
        };
        let text = match text.strip_prefix('@') {
            Some(path) => {
                std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
            }
            None => text.clone(),
        };
        Ok(Some(
            serde_json::from_str(&text).context("--request is not a valid request")?,
        ))
    }
}

/// What a filter's path is within.
#[derive(Clone, Copy, Debug)]
enum Root {
    Property,
    Context,
}

/// `PATH=VALUE` (the path ends at the first `=`); the value is a number or boolean when it reads
/// as one, text otherwise.
fn parse_filter(text: &str, root: Root) -> anyhow::Result<PropertyFilter> {
    let Some((path, value)) = text.split_once('=') else {
        bail!("filter {text:?} is not PATH=VALUE");
    };
    let equals = match serde_json::from_str::<Value>(value) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(value.to_owned()),
    };
    Ok(match root {
        Root::Property => PropertyFilter::on_property(path, equals),
        Root::Context => PropertyFilter::on_context(path, equals),
    })
}

fn parse_filters(texts: &[String], root: Root) -> anyhow::Result<Vec<PropertyFilter>> {
    texts.iter().map(|t| parse_filter(t, root)).collect()
}

/// `12h`, `7d`.
fn parse_window(text: &str) -> anyhow::Result<ConversionWindow> {
    let bad = || anyhow::anyhow!("window {text:?} is not like 12h or 7d");
    let Some((split, _)) = text.char_indices().last() else {
        return Err(bad());
    };
    let (number, unit) = text.split_at(split);
    let n: u32 = number.parse().map_err(|_| bad())?;
    match unit {
        "h" => Ok(ConversionWindow::Hours(n)),
        "d" => Ok(ConversionWindow::Days(n)),
        _ => Err(bad()),
    }
}

fn funnel_steps(
    names: &[String],
    filters: &[String],
    context_filters: &[String],
) -> anyhow::Result<Vec<EventSpec>> {
    let mut steps: Vec<EventSpec> = names.iter().map(EventSpec::named).collect();
    let all = filters
        .iter()
        .map(|t| ("--step-where", t, Root::Property))
        .chain(
            context_filters
                .iter()
                .map(|t| ("--step-where-context", t, Root::Context)),
        );
    for (flag, text, root) in all {
        let Some((step, filter)) = text.split_once(':') else {
            bail!("{flag} {text:?} is not STEP:PATH=VALUE");
        };
        let index: usize = step
            .parse()
            .with_context(|| format!("{flag} {text:?}: {step:?} is not a step number"))?;
        let Some(target) = index.checked_sub(1).and_then(|i| steps.get_mut(i)) else {
            bail!(
                "{flag} {text:?}: there is no step {index} (steps are 1 to {})",
                names.len()
            );
        };
        target.filters.push(parse_filter(filter, root)?);
    }
    Ok(steps)
}

impl Common {
    /// Limits of the run, from `--timeout`.
    fn options(&self) -> anyhow::Result<RunOptions> {
        if !(self.timeout > 0.0 && self.timeout <= 86_400.0) {
            bail!("--timeout must be in (0, 86400] seconds");
        }
        Ok(RunOptions {
            timeout: std::time::Duration::from_secs_f64(self.timeout),
            ..RunOptions::default()
        })
    }
}

/// Prints an analysis' result as a table, or as the API's JSON with `--json`.
fn print<T: Serialize>(
    json: bool,
    result: Result<T, AnalysisError>,
    table: fn(&T) -> String,
) -> anyhow::Result<()> {
    let result = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", table(&result));
    }
    Ok(())
}

/// The request of an analysis: the `--request` body when given, else a `$request` built from the
/// flags: the analysis' own fields (evaluated in order, and only without `--request`), then the
/// segment of `$common` (a [`Common`]) and the breakdown of `$breakdown` (a [`BreakdownArgs`]).
macro_rules! request {
    ($common:expr, $breakdown:expr, $request:ident { $($field:ident $(: $value:expr)?),* $(,)? }) => {
        match $common.request()? {
            Some(request) => request,
            None => {
                let (from, to) = $common.range();
                $request {
                    from,
                    to,
                    $($field $(: $value)?,)*
                    segment: $common.segment.clone(),
                    breakdown: $breakdown.breakdown(),
                    breakdown_limit: $breakdown.limit,
                }
            }
        }
    };
}

const NO_FIRST_EVENT: &str = "--first-event is required (or give the whole --request)";

pub async fn run(args: AnalyseArgs) -> anyhow::Result<()> {
    let (dir, json) = (args.data.data, args.json);
    // A running server owns the lake writer; this process only reads (events not yet in Parquet
    // come from the state store).
    let engine = crate::data_dir::open_tool(&dir).await?;
    let lake = engine.lake()?.lake().await?;
    match args.command {
        AnalyseCommand::Active {
            common,
            series,
            event,
        } => {
            let request = request!(
                common,
                series.breakdown,
                ActiveRequest {
                    interval: series.interval()?,
                    event,
                }
            );
            let result =
                cohort_analysis::active_customers(lake, &request, &common.options()?).await;
            print(json, result, ActiveCustomers::to_table)
        }
        AnalyseCommand::Trends {
            common,
            series,
            events,
            filters,
        } => {
            let request = request!(
                common,
                series.breakdown,
                TrendsRequest {
                    interval: series.interval()?,
                    events,
                    filters: filters.filters()?,
                }
            );
            let result = cohort_analysis::trends(lake, &request, &common.options()?).await;
            print(json, result, Trends::to_table)
        }
        AnalyseCommand::Funnel {
            common,
            breakdown,
            steps,
            step_filters,
            step_context_filters,
            window,
        } => {
            let request = request!(
                common,
                breakdown,
                FunnelRequest {
                    steps: funnel_steps(&steps, &step_filters, &step_context_filters)?,
                    window: parse_window(&window)?,
                }
            );
            let result = cohort_analysis::funnel(lake, &request, &common.options()?).await;
            print(json, result, Funnel::to_table)
        }
        AnalyseCommand::Retention {
            common,
            breakdown,
            first_event,
            returning_event,
            period,
            periods,
        } => {
            let request = request!(
                common,
                breakdown,
                RetentionRequest {
                    first_event: EventSpec::named(first_event.clone().context(NO_FIRST_EVENT)?),
                    // The first event by default.
                    returning_event: EventSpec::named(
                        returning_event.or(first_event).context(NO_FIRST_EVENT)?
                    ),
                    period: period
                        .parse::<RetentionPeriod>()
                        .map_err(|e| anyhow::anyhow!(e))?,
                    periods,
                }
            );
            let result = cohort_analysis::retention(lake, &request, &common.options()?).await;
            print(json, result, Retention::to_table)
        }
        AnalyseCommand::Revenue {
            common,
            series,
            order_event,
            filters,
        } => {
            let request = request!(
                common,
                series.breakdown,
                RevenueRequest {
                    interval: series.interval()?,
                    order_event,
                    filters: filters.filters()?,
                }
            );
            let result = cohort_analysis::revenue(lake, &request, &common.options()?).await;
            print(json, result, Revenue::to_table)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_windows_and_steps_parse() -> anyhow::Result<()> {
        let p = |t: &str| parse_filter(t, Root::Property);
        assert_eq!(p("plan=pro")?.equals, Value::String("pro".into()));
        assert_eq!(p("n=42")?.equals, serde_json::json!(42));
        assert_eq!(p("zip=01234")?.equals, serde_json::json!("01234"));
        assert_eq!(p("a=b=c")?.equals, serde_json::json!("b=c"));
        assert!(p("plan").is_err());
        assert_eq!(
            p("address.city=Paris")?,
            PropertyFilter::on_property("address.city", "Paris".into())
        );
        assert_eq!(
            parse_filter("device.type=ios", Root::Context)?,
            PropertyFilter::on_context("device.type", "ios".into())
        );
        assert_eq!(parse_window("7d")?, ConversionWindow::Days(7));
        assert_eq!(parse_window("12h")?, ConversionWindow::Hours(12));
        assert!(parse_window("7w").is_err() && parse_window("").is_err());
        assert!(parse_window("7天").is_err());
        let steps = funnel_steps(
            &["A".into(), "B".into()],
            &["2:currency=EUR".into()],
            &["1:os.name=iOS".into()],
        )?;
        assert_eq!(steps[1].filters[0].property.as_deref(), Some("currency"));
        assert_eq!(steps[0].filters[0].context.as_deref(), Some("os.name"));
        assert!(funnel_steps(&["A".into()], &["3:x=y".into()], &[]).is_err());
        assert!(funnel_steps(&["A".into()], &[], &["0:x=y".into()]).is_err());
        Ok(())
    }
}
