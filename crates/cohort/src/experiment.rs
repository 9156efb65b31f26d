//! `cohort experiment`: define experiments and metrics, start and stop them and read their
//! report from the data directory's events (through the engine); analyse an experiment from
//! per-variation sums (JSON or CSV) and plan sample sizes. The statistics live in
//! `cohort_experiment::report`; this file reads the input, applies the flags and prints tables
//! or JSON.

use crate::definitions::{self, DefinitionCommand};
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use cohort_experiment::definition::Decision;
use cohort_experiment::report::{
    self, Comparison, Computed, MetricReport, Outcome, Report, SampleSizeInput, SampleSizePlan,
    SrmStatus,
};
use cohort_experiment::store::DefinitionKind;
use cohort_experiment::summary_input::{
    self, Correction, DifferenceType, Direction, Engine, MetricKind, ReportInput,
};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    #[command(flatten)]
    pub data: crate::cli::DataArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ExperimentCommand,
}

#[derive(Subcommand, Debug)]
pub enum ExperimentCommand {
    #[command(flatten)]
    Definition(DefinitionCommand),
    /// Metric definitions: list, show, apply, delete, versions.
    #[command(subcommand)]
    Metric(DefinitionCommand),
    /// Start serving an experiment (a new phase).
    Start { key: String },
    /// Stop an experiment with a decision: the variation everybody gets from now on (none: the
    /// flag's later rules decide again) and why.
    Stop {
        key: String,
        #[arg(long)]
        variation: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// The report from the events: exposures, goal and guardrail metrics, verdict.
    Report {
        key: String,
        #[command(flatten)]
        analysis: AnalysisFlags,
        /// Adjust with CUPED over this many days before each unit's exposure.
        #[arg(long, default_value_t = 0)]
        cuped_days: u32,
        /// Analyse from this time (RFC 3339) instead of the experiment's first start.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Analyse until this time instead of the stop (or now).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Analyse an experiment from each variation's sums: lifts with intervals, p-values (or
    /// chance to win and risk), power, sample-ratio and multiple-exposure checks, and a verdict
    /// in English and Chinese.
    #[command(
        visible_alias = "analyse",
        after_help = concat!(
            "Examples:\n",
            "  cohort experiment analyze results.json\n",
            "  cohort experiment analyze sums.csv --engine bayesian --json\n",
            "  cat results.json | cohort experiment analyze - --correction holm --target-mde 0.05 --days-running 14\n",
            "\n",
            "JSON input (the first variation is the control; kinds: proportion, mean, ratio):\n",
            "  {\"variations\": [{\"key\": \"a\", \"name\": \"Control\"}, {\"key\": \"b\"}],\n",
            "   \"metrics\": [{\"key\": \"purchase\", \"kind\": \"proportion\",\n",
            "                \"data\": {\"a\": {\"n\": 1000, \"sum\": 100}, \"b\": {\"n\": 1000, \"sum\": 130}}}],\n",
            "   \"options\": {\"engine\": \"frequentist\", \"alpha\": 0.05}, \"days_running\": 14}\n",
            "\n",
            "CSV input: one row per metric and variation; metric, variation, kind, n and sum are\n",
            "required, the other columns optional (empty cells are \"not given\"):\n",
            "  metric,variation,kind,n,sum,sum_squares,denominator_sum,denominator_sum_squares,\n",
            "  numerator_denominator_sum_of_products,pre_sum,pre_sum_squares,post_pre_sum_of_products,\n",
            "  metric_name,direction,guardrail,variation_name,weight,units\n",
            "\n",
            "A mean needs sum_squares; a ratio also the denominator's sums and the cross products;\n",
            "pre_sum, pre_sum_squares and post_pre_sum_of_products turn on CUPED. Flags override\n",
            "the file's options. Effects and p-values agree with gbstats 0.8.0 (unpooled test);\n",
            "proportions also show statsmodels' pooled z-test, labelled."
        )
    )]
    Analyze(AnalyzeArgs),
    /// Units (and days) an experiment needs to detect an effect: a two-sided z-test on Cohen's
    /// h (rates) or d (means), as statsmodels' NormalIndPower.
    #[command(
        after_help = "Examples:\n  cohort experiment sample-size --baseline-rate 0.1 --mde 0.1 --relative\n  cohort experiment sample-size --baseline-rate 0.04 --mde 0.005 --variations 3 --daily-units 20000\n  cohort experiment sample-size --baseline-mean 52.5 --baseline-sd 30 --mde 2 --power 0.9 --json\n\n--mde is absolute (0.01 = one percentage point on a rate) unless --relative (0.1 = 10 %).\nEach variation is compared with the control at --alpha; no correction is applied."
    )]
    SampleSize(SampleSizeArgs),
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// The sums: a JSON or CSV file, or `-` for standard input.
    pub file: PathBuf,
    /// Input format; by default from the extension (.csv, else JSON), or from the content on
    /// standard input.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    #[command(flatten)]
    pub analysis: AnalysisFlags,
    /// Days the experiment has run (for the days still needed).
    #[arg(long)]
    pub days_running: Option<f64>,
    /// Units that saw more than one variation.
    #[arg(long)]
    pub multiple_exposures: Option<u64>,
}

/// How to analyse: each flag overrides the input's (or the default) option.
#[derive(Args, Debug)]
pub struct AnalysisFlags {
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    /// Two-sided level (intervals at 1 - alpha).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Multiple-comparison correction over every metric and variation.
    #[arg(long, value_enum)]
    pub correction: Option<CorrectionArg>,
    /// The lift the p-value and verdict are about (both are shown).
    #[arg(long, value_enum)]
    pub difference: Option<DifferenceArg>,
    /// Smallest effect worth detecting (in --difference terms) for the power figures.
    #[arg(long)]
    pub target_mde: Option<f64>,
    /// Power wanted against --target-mde.
    #[arg(long)]
    pub power: Option<f64>,
    /// The sequential engine's tuning (the sample size its interval is tightest at).
    #[arg(long)]
    pub sequential_tuning: Option<f64>,
}

impl AnalysisFlags {
    pub fn apply(&self, o: &mut summary_input::Options) {
        if let Some(engine) = self.engine {
            o.engine = match engine {
                EngineArg::Frequentist => Engine::Frequentist,
                EngineArg::Sequential => Engine::Sequential,
                EngineArg::Bayesian => Engine::Bayesian,
            };
        }
        if let Some(correction) = self.correction {
            o.correction = match correction {
                CorrectionArg::None => Correction::None,
                CorrectionArg::Holm => Correction::Holm,
                CorrectionArg::BenjaminiHochberg => Correction::BenjaminiHochberg,
            };
        }
        if let Some(difference) = self.difference {
            o.difference = match difference {
                DifferenceArg::Relative => DifferenceType::Relative,
                DifferenceArg::Absolute => DifferenceType::Absolute,
            };
        }
        if let Some(alpha) = self.alpha {
            o.alpha = alpha;
        }
        if let Some(power) = self.power {
            o.power = power;
        }
        if let Some(tuning) = self.sequential_tuning {
            o.sequential_tuning = tuning;
        }
        if self.target_mde.is_some() {
            o.target_mde = self.target_mde;
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Json,
    Csv,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineArg {
    Frequentist,
    Sequential,
    Bayesian,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorrectionArg {
    None,
    Holm,
    #[value(alias = "benjamini_hochberg", alias = "bh")]
    BenjaminiHochberg,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DifferenceArg {
    Relative,
    Absolute,
}

#[derive(Args, Debug)]
pub struct SampleSizeArgs {
    /// The control's conversion rate (0 to 1).
    #[arg(long, required_unless_present = "baseline_mean", conflicts_with_all = ["baseline_mean", "baseline_sd"])]
    pub baseline_rate: Option<f64>,
    /// The control's mean (with --baseline-sd), for a mean metric.
    #[arg(long, requires = "baseline_sd", allow_negative_numbers = true)]
    pub baseline_mean: Option<f64>,
    /// The standard deviation of a unit's value.
    #[arg(long, requires = "baseline_mean")]
    pub baseline_sd: Option<f64>,
    /// Smallest effect worth detecting: absolute, or relative with --relative.
    #[arg(long, allow_negative_numbers = true)]
    pub mde: f64,
    /// Read --mde as relative to the baseline (0.1 = a 10 % lift).
    #[arg(long)]
    pub relative: bool,
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.8)]
    pub power: f64,
    /// Arms, the control included.
    #[arg(long, default_value_t = 2)]
    pub variations: u32,
    /// Units entering the experiment per day, all arms together (gives the days needed).
    #[arg(long)]
    pub daily_units: Option<f64>,
}

pub async fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let json = args.json;
    match args.command {
        ExperimentCommand::Definition(command) => {
            crate::data_dir::with_engine(&args.data, async |engine| {
                definitions::run(engine, DefinitionKind::Experiment, command, json).await
            })
            .await?;
        }
        ExperimentCommand::Metric(command) => {
            crate::data_dir::with_engine(&args.data, async |engine| {
                definitions::run(engine, DefinitionKind::Metric, command, json).await
            })
            .await?;
        }
        ExperimentCommand::Start { key } => {
            crate::data_dir::with_engine(&args.data, async |engine| {
                let saved = engine.start_experiment(key).await?;
                definitions::print_saved(&saved, json);
                Ok(())
            })
            .await?;
        }
        ExperimentCommand::Stop {
            key,
            variation,
            reason,
        } => {
            crate::data_dir::with_engine(&args.data, async |engine| {
                let decision = Decision { variation, reason };
                let saved = engine.stop_experiment(key, decision).await?;
                definitions::print_saved(&saved, json);
                Ok(())
            })
            .await?;
        }
        ExperimentCommand::Report {
            key,
            analysis,
            cuped_days,
            from,
            to,
        } => {
            let report = crate::data_dir::with_engine(&args.data, async |engine| {
                let mut options = summary_input::Options::default();
                analysis.apply(&mut options);
                Ok(engine
                    .experiment_report(key, options, cuped_days, (from, to))
                    .await?)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
        }
        ExperimentCommand::Analyze(args) => {
            let report = analyze(&args)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
        }
        ExperimentCommand::SampleSize(args) => {
            let plan = report::plan_sample_size(&SampleSizeInput {
                baseline_rate: args.baseline_rate,
                baseline_mean: args.baseline_mean,
                baseline_sd: args.baseline_sd,
                mde: args.mde,
                relative: args.relative,
                alpha: args.alpha,
                power: args.power,
                variations: args.variations,
                daily_units: args.daily_units,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", render_plan(&plan));
            }
        }
    }
    Ok(())
}

/// Runs `work` on the engine over the data directory, and closes it whatever the outcome.
fn read_input(file: &Path, format: Option<InputFormat>) -> anyhow::Result<ReportInput> {
    let stdin = file == Path::new("-");
    let mut text = String::new();
    if stdin {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let format = format.unwrap_or_else(|| {
        let csv_extension = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let looks_like_json = text.trim_start().starts_with('{');
        if csv_extension || (stdin && !looks_like_json) {
            InputFormat::Csv
        } else {
            InputFormat::Json
        }
    });
    let name = if stdin {
        "standard input".to_string()
    } else {
        file.display().to_string()
    };
    let input = match format {
        InputFormat::Json => summary_input::from_json(&text),
        InputFormat::Csv => summary_input::from_csv(text.as_bytes()),
    };
    input.with_context(|| format!("reading {name}"))
}

fn analyze(args: &AnalyzeArgs) -> anyhow::Result<Report> {
    let mut input = read_input(&args.file, args.format)?;
    args.analysis.apply(&mut input.options);
    if args.days_running.is_some() {
        input.days_running = args.days_running;
    }
    if args.multiple_exposures.is_some() {
        input.multiple_exposures = args.multiple_exposures;
    }
    if input.metrics.is_empty() && input.variations.iter().all(|v| v.units.is_none()) {
        bail!("the input has no metrics and no unit counts: nothing to analyse");
    }
    Ok(report::analyze(&input)?)
}

/// `x` with two significant digits of `precision` (at least `min` decimals, at most 8).
fn number(x: f64, precision: f64, min: usize) -> String {
    let decimals = if precision.is_finite() && precision > 0.0 {
        (1 - precision.log10().floor() as i64).clamp(min as i64, 8) as usize
    } else {
        min.max(2)
    };
    format!("{x:.decimals$}")
}

fn signed(text: String) -> String {
    if text.starts_with('-') || text.chars().all(|c| c == '0' || c == '.') {
        text
    } else {
        format!("+{text}")
    }
}

/// A lift as the table shows it: percent for relative lifts, percentage points for absolute
/// lifts of rates, the metric's unit otherwise.
fn lift_text(x: f64, precision: f64, relative: bool, kind: MetricKind) -> String {
    match (relative, kind) {
        (true, _) => format!("{}%", signed(number(x * 100.0, precision * 100.0, 1))),
        (false, MetricKind::Proportion) => {
            format!("{}pp", signed(number(x * 100.0, precision * 100.0, 1)))
        }
        (false, _) => signed(number(x, precision, 0)),
    }
}

fn value_text(x: f64, precision: f64, kind: MetricKind) -> String {
    match kind {
        MetricKind::Proportion => format!("{}%", number(x * 100.0, precision * 100.0, 1)),
        _ => number(x, precision, 0),
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The report as plain-text tables, then the verdict in English and Chinese.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let correction = match (r.correction, r.engine) {
        // The Bayesian engine has no p-values to correct.
        (Correction::None, _) | (_, Engine::Bayesian) => String::new(),
        (c, _) => format!(", {} correction", c.as_str().replace('_', "-")),
    };
    out.push_str(&format!(
        "{}{} engine, {} lifts, alpha {}{correction}\n",
        r.name.as_ref().map_or(String::new(), |n| format!("{n}: ")),
        r.engine.as_str(),
        match r.difference {
            DifferenceType::Relative => "relative",
            DifferenceType::Absolute => "absolute",
        },
        r.alpha,
    ));
    if let Some(days) = r.days_running {
        out.push_str(&format!("Running for {days} days\n"));
    }
    out.push('\n');
    match (r.srm.status, r.srm.p_value) {
        (SrmStatus::NotChecked, _) | (_, None) => out.push_str(&format!(
            "Sample ratio: not checked ({})\n",
            r.srm.reason.as_ref().map_or("", |x| x.en.as_str())
        )),
        (status, Some(p)) => {
            out.push_str(&format!(
                "Sample ratio: {} (p = {}, flagged below {})\n",
                if status == SrmStatus::Mismatch {
                    "MISMATCH"
                } else {
                    "ok"
                },
                report::format_p(p),
                r.srm.threshold
            ));
            out.push_str(&format!(
                "  {:<20} {:>9} {:>14} {:>9}\n",
                "variation", "expected", "observed", "share"
            ));
            for arm in &r.srm.arms {
                out.push_str(&format!(
                    "  {:<20} {:>9} {:>14} {:>9}{}\n",
                    arm.variation,
                    percent(arm.expected_share),
                    report::thousands(arm.observed_units),
                    percent(arm.observed_share),
                    if arm.skipped {
                        "  (weight 0: skipped)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    if let Some(m) = &r.multiple_exposures {
        out.push_str(&format!(
            "Multiple exposures: {} ({:.2}% of units){}\n",
            report::thousands(m.count),
            m.share * 100.0,
            if m.flagged { "  FLAGGED" } else { "" }
        ));
    }
    for m in &r.metrics {
        out.push('\n');
        render_metric(&mut out, r, m);
    }
    out.push_str("\nVerdict:\n");
    for line in &r.verdict.en {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("\n结论：\n");
    for line in &r.verdict.zh {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

fn render_metric(out: &mut String, r: &Report, m: &MetricReport) {
    let mut tags = vec![
        m.kind.as_str().to_string(),
        match m.direction {
            Direction::Increase => "higher is better".to_string(),
            Direction::Decrease => "lower is better".to_string(),
        },
    ];
    if m.guardrail {
        tags.push("guardrail".into());
    }
    if m.cuped {
        tags.push("CUPED".into());
    }
    out.push_str(&format!("{} ({})\n", m.name, tags.join(", ")));
    let relative = r.difference == DifferenceType::Relative;
    let level = format!("{}% CI", trim((1.0 - r.alpha) * 100.0));
    let (chosen, other) = if relative {
        ("rel. lift", "abs. lift")
    } else {
        ("abs. lift", "rel. lift")
    };
    let (stat_a, stat_b) = if r.engine == Engine::Bayesian {
        ("win", "risk ctl/var")
    } else if r.correction == Correction::None {
        ("p", "")
    } else {
        ("p", "adj. p")
    };
    out.push_str(&format!(
        "  {:<16} {:>12} {:>12} {:>22} {:>10} {:>22} {:>10} {:>8} {:>10}\n",
        "variation",
        "units",
        if m.kind == MetricKind::Proportion {
            "rate"
        } else {
            "mean"
        },
        level,
        chosen,
        level,
        other,
        stat_a,
        stat_b
    ));
    for (i, v) in m.variations.iter().enumerate() {
        let precision = v.ci.map_or(0.0, |ci| (ci[1] - ci[0]).abs() / 2.0);
        let value = v
            .mean
            .map_or("-".to_string(), |x| value_text(x, precision, m.kind));
        let ci = v.ci.map_or("-".to_string(), |ci| {
            format!(
                "{} to {}",
                value_text(ci[0], precision, m.kind),
                value_text(ci[1], precision, m.kind)
            )
        });
        let mut line = format!(
            "  {:<16} {:>12} {:>12} {:>22}",
            v.variation,
            report::thousands(v.units),
            value,
            ci
        );
        if i > 0
            && let Some(c) = m.comparisons.iter().find(|c| c.variation == v.variation)
        {
            line.push_str(&comparison_cells(r, m, c, relative));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        for reason in [&v.reason, &v.ci_reason].into_iter().flatten() {
            out.push_str(&format!("    {}: {}\n", v.variation, reason.en));
        }
    }
    for c in &m.comparisons {
        out.push_str(&format!("  test: {}", c.test));
        if let Some(theta) = c.cuped_theta {
            out.push_str(&format!(" (theta {theta:.4})"));
        }
        if let Some(Computed::Figures(z)) = &c.pooled_z_test {
            out.push_str(&format!(
                "; {}: z = {:.3}, p = {}",
                z.test,
                z.z,
                report::format_p(z.p_value)
            ));
        }
        out.push('\n');
        if let Computed::Figures(p) = &c.power {
            let mut parts = Vec::new();
            if let (Some(power), Some(target)) = (p.power, p.target_effect) {
                parts.push(format!(
                    "power {} to detect {} ({} wanted)",
                    percent(power),
                    lift_text(target, target.abs(), relative, m.kind),
                    percent(p.wanted)
                ));
            }
            if let Some(mde) = p.minimum_detectable_effect {
                parts.push(format!(
                    "detectable now at {}: {}",
                    percent(p.wanted),
                    lift_text(mde, mde.abs(), relative, m.kind)
                ));
            }
            match (p.reached, p.days_remaining) {
                (Some(true), _) => parts.push("power reached".to_string()),
                (_, Some(days)) => parts.push(format!("about {} more days", days.ceil())),
                _ => {}
            }
            if !parts.is_empty() {
                out.push_str(&format!("  {}: {}\n", c.variation, parts.join("; ")));
            }
        }
        let mark = match c.outcome {
            Outcome::Better => "+",
            Outcome::Worse => "!",
            Outcome::Inconclusive => "=",
            Outcome::NoFigures => "?",
        };
        out.push_str(&format!("  {mark} {}\n", c.verdict.en));
    }
}

fn comparison_cells(r: &Report, m: &MetricReport, c: &Comparison, relative: bool) -> String {
    let (chosen, other) = if relative {
        (&c.relative, &c.absolute)
    } else {
        (&c.absolute, &c.relative)
    };
    let Some(f) = chosen.figures() else {
        return format!(" {:>10} {:>22}", "-", "-");
    };
    let precision = (f.ci[1] - f.ci[0]).abs() / 2.0;
    let lift = lift_text(f.estimate, precision, relative, m.kind);
    let ci = format!(
        "{} to {}",
        lift_text(f.ci[0], precision, relative, m.kind),
        lift_text(f.ci[1], precision, relative, m.kind)
    );
    let other = other.figures().map_or("-".to_string(), |o| {
        lift_text(
            o.estimate,
            (o.ci[1] - o.ci[0]).abs() / 2.0,
            !relative,
            m.kind,
        )
    });
    let (a, b) = if r.engine == Engine::Bayesian {
        (
            c.chance_to_win.map_or("-".to_string(), percent),
            c.risk.map_or("-".to_string(), |risk| {
                format!(
                    "{}/{}",
                    number(risk.control, risk.control.max(risk.variation), 0),
                    number(risk.variation, risk.control.max(risk.variation), 0)
                )
            }),
        )
    } else {
        (
            c.p_value.map_or("-".to_string(), report::format_p),
            c.adjusted_p_value.map_or(String::new(), report::format_p),
        )
    };
    format!(" {lift:>10} {ci:>22} {other:>10} {a:>8} {b:>10}")
}

fn trim(x: f64) -> String {
    let text = format!("{x:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The plan as a few labelled lines, then its summary in English and Chinese.
pub fn render_plan(p: &SampleSizePlan) -> String {
    let rate = p.test.contains("Cohen's h");
    let show = |x: f64| {
        if rate {
            format!("{}%", trim(x * 100.0))
        } else {
            trim(x)
        }
    };
    let mut out = format!("Sample size: {}\n", p.test);
    out.push_str(&format!("  {:<22} {}\n", "baseline", show(p.baseline)));
    let mut change = vec![if rate {
        format!("{}pp", signed(trim(p.mde_absolute * 100.0)))
    } else {
        signed(trim(p.mde_absolute))
    }];
    if let Some(relative) = p.mde_relative {
        change.push(format!("{}% relative", signed(trim(relative * 100.0))));
    }
    out.push_str(&format!(
        "  {:<22} {} ({})\n",
        "target",
        show(p.target),
        change.join(", ")
    ));
    out.push_str(&format!(
        "  {:<22} {:.6}\n",
        if rate {
            "effect size (h)"
        } else {
            "effect size (d)"
        },
        p.effect_size
    ));
    out.push_str(&format!(
        "  {:<22} {} / {}\n",
        "alpha / power",
        p.alpha,
        percent(p.power)
    ));
    out.push_str(&format!(
        "  {:<22} {} ({:.1} exact)\n",
        "units per variation",
        report::thousands(p.units_per_variation),
        p.units_per_variation_exact
    ));
    out.push_str(&format!("  {:<22} {}\n", "variations", p.variations));
    out.push_str(&format!(
        "  {:<22} {}\n",
        "total units",
        report::thousands(p.total_units)
    ));
    if let (Some(days), Some(daily)) = (p.days, p.daily_units) {
        out.push_str(&format!(
            "  {:<22} {days} at {} a day\n",
            "days",
            trim(daily)
        ));
    }
    out.push_str(&format!("\n{}\n{}\n", p.summary.en, p.summary.zh));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse_args(args: &[&str]) -> ExperimentArgs {
        match Cli::try_parse_from(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
        {
            Command::Experiment(args) => args,
            other => panic!("{other:?}"),
        }
    }

    fn parse(args: &[&str]) -> ExperimentCommand {
        parse_args(args).command
    }

    #[test]
    fn the_help_names_the_librarys_csv_columns() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let analyze = cli
            .find_subcommand_mut("experiment")
            .and_then(|e| e.find_subcommand_mut("analyze"))
            .expect("cohort experiment analyze");
        let help = analyze.render_long_help().to_string();
        let columns: String = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("metric,variation,kind"))
            .take(3)
            .map(str::trim)
            .collect();
        assert_eq!(columns, summary_input::csv_header());
    }

    #[test]
    fn flags_parse() {
        let ExperimentCommand::Analyze(a) = parse(&[
            "cohort",
            "experiment",
            "analyse",
            "-",
            "--engine",
            "sequential",
            "--correction",
            "bh",
            "--alpha",
            "0.1",
            "--json",
        ]) else {
            panic!()
        };
        assert_eq!(a.file, PathBuf::from("-"));
        assert_eq!(a.analysis.engine, Some(EngineArg::Sequential));
        assert_eq!(
            a.analysis.correction,
            Some(CorrectionArg::BenjaminiHochberg)
        );
        let json_after = parse_args(&["cohort", "experiment", "analyse", "-", "--json"]);
        assert!(json_after.json);
        let ExperimentCommand::SampleSize(s) = parse(&[
            "cohort",
            "experiment",
            "sample-size",
            "--baseline-rate",
            "0.1",
            "--mde",
            "0.1",
            "--relative",
        ]) else {
            panic!()
        };
        assert_eq!((s.baseline_rate, s.mde, s.relative), (Some(0.1), 0.1, true));
        assert_eq!((s.alpha, s.power, s.variations), (0.05, 0.8, 2));
        let missing = Cli::try_parse_from(["cohort", "experiment", "sample-size", "--mde", "0.1"]);
        assert!(missing.is_err());
    }

    #[test]
    fn tables_show_figures_reasons_and_both_languages() {
        let input = summary_input::from_json(
            r#"{"name": "Checkout",
                "variations": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}],
                "metrics": [
                  {"key": "buy", "name": "Purchase", "kind": "proportion",
                   "data": {"a": {"n": 10000, "sum": 1000}, "b": {"n": 10000, "sum": 1100}}},
                  {"key": "none", "kind": "proportion",
                   "data": {"a": {"n": 100, "sum": 0}, "b": {"n": 100, "sum": 0}}}],
                "options": {"target_mde": 0.05, "correction": "holm"},
                "days_running": 7, "multiple_exposures": 4}"#,
        )
        .unwrap();
        let text = render(&report::analyze(&input).unwrap());
        for wanted in [
            "Checkout: frequentist engine, relative lifts, alpha 0.05, holm correction",
            "Sample ratio: ok (p = 1, flagged below 0.001)",
            "Purchase (proportion, higher is better)",
            "+10.0%",
            "test: unpooled Welch t-test; pooled two-proportion z-test",
            "B beats A on Purchase: +10.0% (95% CI +1.1% to +18.9%), p = 0.028",
            "none, B vs A: the control's mean is zero",
            "结论：",
            "B 在「Purchase」上优于 A",
        ] {
            assert!(text.contains(wanted), "{wanted:?} not in\n{text}");
        }
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }

    #[test]
    fn plans_print() {
        let plan = report::plan_sample_size(&SampleSizeInput {
            baseline_rate: Some(0.1),
            baseline_mean: None,
            baseline_sd: None,
            mde: 0.1,
            relative: true,
            alpha: 0.05,
            power: 0.8,
            variations: 2,
            daily_units: Some(1000.0),
        })
        .unwrap();
        let text = render_plan(&plan);
        assert!(
            text.contains("units per variation    14,745 (14744.1 exact)"),
            "{text}"
        );
        assert!(
            text.contains("target                 11% (+1pp, +10% relative)"),
            "{text}"
        );
        assert!(
            text.contains("days                   30 at 1000 a day"),
            "{text}"
        );
    }
}
