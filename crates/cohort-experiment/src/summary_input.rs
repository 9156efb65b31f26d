//! What an experiment report is computed from: per-variation sufficient statistics of each
//! metric, read from JSON ([`from_json`]) or CSV ([`from_csv`]), and the analysis options.
//! [`crate::report::analyze`] turns a [`ReportInput`] into a report.
//!
//! # JSON
//!
//! ```
//! use cohort_experiment::summary_input::{from_json, Engine};
//! let input = from_json(r#"{
//!   "name": "Checkout button",
//!   "variations": [{"key": "a", "name": "Control"}, {"key": "b", "name": "Green button"}],
//!   "metrics": [{
//!     "key": "purchase", "name": "Purchase", "kind": "proportion",
//!     "data": {"a": {"n": 1000, "sum": 100}, "b": {"n": 1000, "sum": 130}}
//!   }, {
//!     "key": "revenue", "kind": "mean", "direction": "increase",
//!     "data": {"a": {"n": 1000, "sum": 25000, "sum_squares": 900000},
//!              "b": {"n": 1000, "sum": 26000, "sum_squares": 950000}}
//!   }],
//!   "options": {"engine": "frequentist", "alpha": 0.05, "correction": "holm"},
//!   "days_running": 14,
//!   "multiple_exposures": 3
//! }"#).unwrap();
//! assert_eq!(input.options.engine, Engine::Frequentist);
//! ```
//!
//! The first variation is the control. `weight` (each variation's share of traffic; equal when
//! left out) and `units` (units exposed; the first metric's `n` when left out) feed the
//! sample-ratio check. A metric's `data` holds one [`Sums`] per variation key:
//!
//! | kind | fields |
//! |------|--------|
//! | `proportion` (or `binomial`) | `n`, `sum` (units converted, a whole number) |
//! | `mean` | `n`, `sum`, `sum_squares` |
//! | `ratio` | `n`, `sum`, `sum_squares` (numerator), `denominator_sum`, `denominator_sum_squares`, `numerator_denominator_sum_of_products` |
//!
//! A proportion or mean metric with `pre_sum` and `post_pre_sum_of_products` (and
//! `pre_sum_squares`, needed for a mean, optional for a proportion whose pre-period value is 0/1)
//! in every variation is analysed with CUPED.
//!
//! # CSV
//!
//! One row per metric × variation, with a header. Columns (order free, unknown columns
//! refused, empty cells mean "not given"):
//!
//! ```text
//! metric,variation,kind,n,sum,sum_squares,denominator_sum,denominator_sum_squares,
//! numerator_denominator_sum_of_products,pre_sum,pre_sum_squares,post_pre_sum_of_products,
//! metric_name,direction,guardrail,variation_name,weight,units
//! ```
//!
//! `metric`, `variation`, `kind`, `n` and `sum` are required. The metric columns (`kind`,
//! `metric_name`, `direction`, `guardrail`) and variation columns (`variation_name`, `weight`,
//! `units`) may be given on any of their rows and must agree where repeated. Variations and
//! metrics keep the order they first appear in. Options are not part of the CSV; set them on
//! [`ReportInput::options`] (the CLI's flags do).
//!
//! ```
//! use cohort_experiment::summary_input::from_csv;
//! let csv = "metric,variation,kind,n,sum\npurchase,a,proportion,1000,100\npurchase,b,proportion,1000,130\n";
//! let input = from_csv(csv.as_bytes()).unwrap();
//! assert_eq!(input.variations.len(), 2);
//! let bad = "metric,variation,kind,n,sum\npurchase,a,proportion,1000,lots\n";
//! assert_eq!(
//!     from_csv(bad.as_bytes()).unwrap_err().to_string(),
//!     "CSV row 2, column `sum`: \"lots\" is not a number"
//! );
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything a report is computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The arms, control first.
    pub variations: Vec<VariationInput>,
    #[serde(default)]
    pub metrics: Vec<MetricInput>,
    #[serde(default)]
    pub options: Options,
    /// How long the experiment has run, in days (for the traffic rate and days remaining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_running: Option<f64>,
    /// Units that saw more than one variation (already left out of the sums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_exposures: Option<u64>,
}

/// One arm of the experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariationInput {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Share of traffic meant for this arm (any scale: 1, 1 and 0.5, 0.5 mean the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Units exposed to this arm, for the sample-ratio check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<u64>,
}

/// One metric and its sums in each variation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricInput {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: MetricKind,
    #[serde(default)]
    pub direction: Direction,
    /// A metric that must not get worse (refunds, latency) rather than one to improve.
    #[serde(default)]
    pub guardrail: bool,
    /// The sums, by variation key.
    pub data: BTreeMap<String, Sums>,
}

/// What a metric's unit value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// 0/1 per unit (converted or not): a rate.
    #[serde(alias = "binomial")]
    Proportion,
    /// Any number per unit: a mean.
    Mean,
    /// Two sums over the same units, divided (revenue per order).
    Ratio,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Proportion => "proportion",
            MetricKind::Mean => "mean",
            MetricKind::Ratio => "ratio",
        }
    }
}

/// Which way is good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Increase,
    Decrease,
}

/// A variation's sums for one metric. Which fields a metric needs depends on its kind (see the
/// module documentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sums {
    /// Units.
    pub n: u64,
    /// The sum of the units' values (a ratio's numerator).
    pub sum: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_squares: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator_sum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator_sum_squares: Option<f64>,
    /// Σ numerator × denominator over the units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator_denominator_sum_of_products: Option<f64>,
    /// CUPED: the sum of the units' values before the experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_sum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_sum_squares: Option<f64>,
    /// CUPED: Σ after × before over the units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_pre_sum_of_products: Option<f64>,
}

/// The statistics engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Fixed-horizon unpooled t-test: read the result once, at the planned sample size.
    #[default]
    Frequentist,
    /// Always-valid confidence sequences: the result may be read at any time.
    Sequential,
    /// Gaussian posterior on the effect: chance to win and risk.
    Bayesian,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Frequentist => "frequentist",
            Engine::Sequential => "sequential",
            Engine::Bayesian => "bayesian",
        }
    }
}

/// How a lift is expressed; the p-value, chance to win and verdict are those of this one (the
/// report shows both lifts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceType {
    /// (variation − control) / control.
    #[default]
    Relative,
    /// variation − control, in the metric's unit.
    Absolute,
}

/// Multiple-comparison correction of the p-values of every metric × variation comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    #[default]
    None,
    /// Holm's step-down (family-wise error rate).
    Holm,
    /// Benjamini–Hochberg's step-up (false discovery rate).
    #[serde(alias = "benjamini-hochberg", alias = "bh")]
    BenjaminiHochberg,
}

impl Correction {
    pub fn as_str(self) -> &'static str {
        match self {
            Correction::None => "none",
            Correction::Holm => "holm",
            Correction::BenjaminiHochberg => "benjamini_hochberg",
        }
    }
}

/// The Bayesian engine's prior on the relative effect (rescaled by the control's mean for
/// absolute lifts, as gbstats does). Flat unless `proper`; GrowthBook's proper default is
/// N(0, 0.3²).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorInput {
    pub proper: bool,
    pub mean: f64,
    pub stddev: f64,
}

impl Default for PriorInput {
    fn default() -> Self {
        PriorInput {
            proper: false,
            mean: 0.0,
            stddev: 0.3,
        }
    }
}

/// How to analyse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub engine: Engine,
    /// Two-sided level: intervals are at 1 − alpha; the Bayesian engine calls a winner at a
    /// chance to win of 1 − alpha.
    pub alpha: f64,
    pub difference: DifferenceType,
    pub correction: Correction,
    /// The sequential engine's tuning: the sample size its confidence sequence is tightest at.
    pub sequential_tuning: f64,
    pub prior: PriorInput,
    /// The smallest effect worth detecting, in the `difference`'s terms (0.05 = a 5 % lift when
    /// relative); with it the report gives the power reached and the days still needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_mde: Option<f64>,
    /// The power wanted against `target_mde`.
    pub power: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            engine: Engine::Frequentist,
            alpha: 0.05,
            difference: DifferenceType::Relative,
            correction: Correction::None,
            sequential_tuning: crate::stats::DEFAULT_SEQUENTIAL_TUNING,
            prior: PriorInput::default(),
            target_mde: None,
            power: 0.8,
        }
    }
}

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("CSV header: missing column `{0}`")]
    MissingColumn(&'static str),
    #[error("CSV header: unknown column `{column}` (known: {known})")]
    UnknownColumn { column: String, known: String },
    #[error("CSV header: column `{0}` appears twice")]
    DuplicateColumn(String),
    #[error("CSV row {row}, column `{column}`: {message}")]
    Cell {
        /// The line in the file, the header being line 1.
        row: u64,
        column: String,
        message: String,
    },
    #[error("CSV: no data rows")]
    Empty,
}

/// Reads a report input from JSON (see the module documentation for its shape). Unknown fields
/// are refused, so a misspelt option is an error rather than a silent default.
pub fn from_json(text: &str) -> Result<ReportInput, InputError> {
    Ok(serde_json::from_str(text)?)
}

const COLUMNS: [&str; 18] = [
    "metric",
    "variation",
    "kind",
    "n",
    "sum",
    "sum_squares",
    "denominator_sum",
    "denominator_sum_squares",
    "numerator_denominator_sum_of_products",
    "pre_sum",
    "pre_sum_squares",
    "post_pre_sum_of_products",
    "metric_name",
    "direction",
    "guardrail",
    "variation_name",
    "weight",
    "units",
];

const REQUIRED: [&str; 5] = ["metric", "variation", "kind", "n", "sum"];

/// The CSV header, for documentation and `--help`.
pub fn csv_header() -> String {
    COLUMNS.join(",")
}

/// One row's cells by column name, with the row's line number for errors.
struct Row<'a> {
    line: u64,
    record: &'a csv::StringRecord,
    index: &'a BTreeMap<&'static str, usize>,
}

impl Row<'_> {
    fn cell(&self, column: &str) -> Option<&str> {
        let i = *self.index.get(column)?;
        self.record.get(i).filter(|s| !s.is_empty())
    }

    fn error(&self, column: &str, message: impl Into<String>) -> InputError {
        InputError::Cell {
            row: self.line,
            column: column.to_string(),
            message: message.into(),
        }
    }

    fn required(&self, column: &str) -> Result<&str, InputError> {
        self.cell(column)
            .ok_or_else(|| self.error(column, "empty, but every row needs it"))
    }

    fn number(&self, column: &str) -> Result<Option<f64>, InputError> {
        let Some(text) = self.cell(column) else {
            return Ok(None);
        };
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            Ok(_) => Err(self.error(column, format!("{text:?} is not a finite number"))),
            Err(_) => Err(self.error(column, format!("{text:?} is not a number"))),
        }
    }

    fn count(&self, column: &str) -> Result<Option<u64>, InputError> {
        let Some(text) = self.cell(column) else {
            return Ok(None);
        };
        text.parse::<u64>().map(Some).map_err(|_| {
            self.error(
                column,
                format!("{text:?} is not a count (a whole number, 0 or more)"),
            )
        })
    }

    /// A value parsed with serde's spelling of an enum (`proportion`, `decrease` …).
    fn word<T: for<'de> Deserialize<'de>>(
        &self,
        column: &str,
        allowed: &str,
    ) -> Result<Option<T>, InputError> {
        let Some(text) = self.cell(column) else {
            return Ok(None);
        };
        serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase()))
            .map(Some)
            .map_err(|_| self.error(column, format!("{text:?} is not one of {allowed}")))
    }

    fn flag(&self, column: &str) -> Result<Option<bool>, InputError> {
        let Some(text) = self.cell(column) else {
            return Ok(None);
        };
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Some(true)),
            "false" | "no" | "0" => Ok(Some(false)),
            _ => Err(self.error(column, format!("{text:?} is not true or false"))),
        }
    }
}

/// A metric's or variation's value as first given: the value, its row and the cell's text.
struct Seen<T> {
    value: T,
    line: u64,
    text: String,
}

/// Sets `slot` from a row's cell, or checks that the row agrees with the value an earlier row
/// gave, naming that row.
fn agree<T: PartialEq>(
    slot: &mut Option<Seen<T>>,
    value: Option<T>,
    row: &Row<'_>,
    column: &str,
    what: &str,
) -> Result<(), InputError> {
    let Some(value) = value else {
        return Ok(());
    };
    let text = row.cell(column).unwrap_or_default().to_string();
    match slot {
        Some(seen) if seen.value != value => Err(row.error(
            column,
            format!(
                "{what} has {text:?} here but {:?} on row {}",
                seen.text, seen.line
            ),
        )),
        Some(_) => Ok(()),
        None => {
            *slot = Some(Seen {
                value,
                line: row.line,
                text,
            });
            Ok(())
        }
    }
}

#[derive(Default)]
struct MetricRows {
    key: String,
    kind: Option<Seen<MetricKind>>,
    name: Option<Seen<String>>,
    direction: Option<Seen<Direction>>,
    guardrail: Option<Seen<bool>>,
    data: BTreeMap<String, Sums>,
}

#[derive(Default)]
struct VariationRows {
    key: String,
    name: Option<Seen<String>>,
    weight: Option<Seen<f64>>,
    units: Option<Seen<u64>>,
}

/// Reads a report input from CSV: one row per metric × variation (see the module
/// documentation for the columns). Errors name the row (its line, the header being 1) and the
/// column. The options are the defaults.
pub fn from_csv(reader: impl std::io::Read) -> Result<ReportInput, InputError> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .has_headers(true)
        .from_reader(reader);
    let mut index = BTreeMap::new();
    for (i, column) in csv.headers()?.iter().enumerate() {
        let Some(known) = COLUMNS.iter().find(|c| **c == column) else {
            return Err(InputError::UnknownColumn {
                column: column.to_string(),
                known: COLUMNS.join(", "),
            });
        };
        if index.insert(*known, i).is_some() {
            return Err(InputError::DuplicateColumn(column.to_string()));
        }
    }
    if let Some(missing) = REQUIRED.iter().find(|c| !index.contains_key(*c)) {
        return Err(InputError::MissingColumn(missing));
    }

    let mut metrics: Vec<MetricRows> = Vec::new();
    let mut variations: Vec<VariationRows> = Vec::new();
    let mut record = csv::StringRecord::new();
    while csv.read_record(&mut record)? {
        let line = record.position().map_or(0, |p| p.line());
        let row = Row {
            line,
            record: &record,
            index: &index,
        };
        let metric_key = row.required("metric")?;
        let variation_key = row.required("variation")?;

        let v = match variations.iter().position(|v| v.key == variation_key) {
            Some(i) => i,
            None => {
                variations.push(VariationRows {
                    key: variation_key.to_string(),
                    ..VariationRows::default()
                });
                variations.len() - 1
            }
        };
        let variation = &mut variations[v];
        let what = format!("variation {variation_key:?}");
        agree(
            &mut variation.name,
            row.cell("variation_name").map(str::to_string),
            &row,
            "variation_name",
            &what,
        )?;
        agree(
            &mut variation.weight,
            row.number("weight")?,
            &row,
            "weight",
            &what,
        )?;
        agree(
            &mut variation.units,
            row.count("units")?,
            &row,
            "units",
            &what,
        )?;

        let m = match metrics.iter().position(|m| m.key == metric_key) {
            Some(i) => i,
            None => {
                metrics.push(MetricRows {
                    key: metric_key.to_string(),
                    ..MetricRows::default()
                });
                metrics.len() - 1
            }
        };
        let metric = &mut metrics[m];
        let what = format!("metric {metric_key:?}");
        let kind = row.word::<MetricKind>("kind", "proportion, binomial, mean, ratio")?;
        agree(&mut metric.kind, kind, &row, "kind", &what)?;
        agree(
            &mut metric.name,
            row.cell("metric_name").map(str::to_string),
            &row,
            "metric_name",
            &what,
        )?;
        let direction = row.word::<Direction>("direction", "increase, decrease")?;
        agree(&mut metric.direction, direction, &row, "direction", &what)?;
        agree(
            &mut metric.guardrail,
            row.flag("guardrail")?,
            &row,
            "guardrail",
            &what,
        )?;
        let Some(kind) = metric.kind.as_ref().map(|k| k.value) else {
            return Err(row.error("kind", "empty, but every row needs it"));
        };

        let sums = Sums {
            n: row
                .count("n")?
                .ok_or_else(|| row.error("n", "empty, but every row needs it"))?,
            sum: row
                .number("sum")?
                .ok_or_else(|| row.error("sum", "empty, but every row needs it"))?,
            sum_squares: row.number("sum_squares")?,
            denominator_sum: row.number("denominator_sum")?,
            denominator_sum_squares: row.number("denominator_sum_squares")?,
            numerator_denominator_sum_of_products: row
                .number("numerator_denominator_sum_of_products")?,
            pre_sum: row.number("pre_sum")?,
            pre_sum_squares: row.number("pre_sum_squares")?,
            post_pre_sum_of_products: row.number("post_pre_sum_of_products")?,
        };
        // The fields a kind needs, checked here where the row is known; the report checks
        // them again (with metric and variation names) for JSON input.
        let needed: &[&str] = match kind {
            MetricKind::Proportion => &[],
            MetricKind::Mean => &["sum_squares"],
            MetricKind::Ratio => &[
                "sum_squares",
                "denominator_sum",
                "denominator_sum_squares",
                "numerator_denominator_sum_of_products",
            ],
        };
        if let Some(missing) = needed.iter().find(|c| row.cell(c).is_none()) {
            return Err(row.error(
                missing,
                format!("empty, but a {} metric needs it", kind.as_str()),
            ));
        }
        if metric
            .data
            .insert(variation_key.to_string(), sums)
            .is_some()
        {
            return Err(row.error(
                "variation",
                format!("metric {metric_key:?} already has a row for variation {variation_key:?}"),
            ));
        }
    }
    if metrics.is_empty() {
        return Err(InputError::Empty);
    }

    Ok(ReportInput {
        name: None,
        variations: variations
            .into_iter()
            .map(|v| VariationInput {
                key: v.key,
                name: v.name.map(|x| x.value),
                weight: v.weight.map(|x| x.value),
                units: v.units.map(|x| x.value),
            })
            .collect(),
        metrics: metrics
            .into_iter()
            .map(|m| MetricInput {
                key: m.key,
                name: m.name.map(|x| x.value),
                // Every metric got its kind from its first row.
                kind: m.kind.map_or(MetricKind::Proportion, |x| x.value),
                direction: m.direction.map(|x| x.value).unwrap_or_default(),
                guardrail: m.guardrail.is_some_and(|x| x.value),
                data: m.data,
            })
            .collect(),
        options: Options::default(),
        days_running: None,
        multiple_exposures: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_error(text: &str) -> String {
        from_csv(text.as_bytes()).expect_err("an error").to_string()
    }

    #[test]
    fn csv_rows_become_variations_and_metrics_in_order() {
        let text = "\
metric,variation,kind,n,sum,sum_squares,metric_name,direction,guardrail,variation_name,weight
revenue,b,mean,1010,26000,950000,Revenue,,,Green,0.5
revenue,a,mean,1000,25000,900000,,,,Control,0.5
refunds,a,proportion,1000,20,,Refunds,decrease,yes,,
refunds,b,proportion,1010,30,,,,,,
";
        let input = from_csv(text.as_bytes()).unwrap();
        let keys: Vec<_> = input.variations.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(input.variations[0].name.as_deref(), Some("Green"));
        assert_eq!(input.variations[1].weight, Some(0.5));
        assert_eq!(input.metrics[0].key, "revenue");
        assert_eq!(input.metrics[0].kind, MetricKind::Mean);
        assert_eq!(input.metrics[0].data["a"].sum_squares, Some(900000.0));
        assert_eq!(input.metrics[1].direction, Direction::Decrease);
        assert!(input.metrics[1].guardrail);
        assert_eq!(input.metrics[1].data["b"].n, 1010);
    }

    #[test]
    fn csv_errors_name_the_row_and_column() {
        let header = "metric,variation,kind,n,sum,sum_squares\n";
        assert_eq!(
            csv_error(&format!("{header}m,a,mean,10,5,\n")),
            "CSV row 2, column `sum_squares`: empty, but a mean metric needs it"
        );
        assert_eq!(
            csv_error(&format!(
                "{header}m,a,proportion,10,5,\nm,b,proportion,-3,1,\n"
            )),
            "CSV row 3, column `n`: \"-3\" is not a count (a whole number, 0 or more)"
        );
        assert_eq!(
            csv_error(&format!("{header}m,a,proportion,10,5,\nm,b,mean,10,1,4\n")),
            "CSV row 3, column `kind`: metric \"m\" has \"mean\" here but \"proportion\" on row 2"
        );
        assert_eq!(
            csv_error(&format!("{header}m,a,median,10,5,\n")),
            "CSV row 2, column `kind`: \"median\" is not one of proportion, binomial, mean, ratio"
        );
        assert_eq!(
            csv_error(&format!(
                "{header}m,a,proportion,10,5,\nm,a,proportion,10,5,\n"
            )),
            "CSV row 3, column `variation`: metric \"m\" already has a row for variation \"a\""
        );
        assert_eq!(
            csv_error(&format!("{header}m,a,proportion,10,NaN,\n")),
            "CSV row 2, column `sum`: \"NaN\" is not a finite number"
        );
        assert_eq!(
            csv_error("metric,variation,kind,n,total\n"),
            format!(
                "CSV header: unknown column `total` (known: {})",
                COLUMNS.join(", ")
            )
        );
        assert_eq!(
            csv_error("metric,variation,n,sum\n"),
            "CSV header: missing column `kind`"
        );
        assert_eq!(csv_error(header), "CSV: no data rows");
        assert!(csv_error(&format!("{header}m,a,proportion,10\n")).starts_with("CSV: "));
    }

    #[test]
    fn json_refuses_unknown_fields_and_takes_aliases() {
        let err = from_json(r#"{"variations": [], "options": {"alpa": 0.1}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `alpa`"), "{err}");
        let input = from_json(
            r#"{"variations": [{"key": "a"}],
                "metrics": [{"key": "m", "kind": "binomial", "data": {"a": {"n": 1, "sum": 0}}}],
                "options": {"correction": "bh", "prior": {"proper": true}}}"#,
        )
        .unwrap();
        assert_eq!(input.metrics[0].kind, MetricKind::Proportion);
        assert_eq!(input.options.correction, Correction::BenjaminiHochberg);
        assert_eq!(input.options.prior.stddev, 0.3);
        assert_eq!(input.options.alpha, 0.05);
    }
}
