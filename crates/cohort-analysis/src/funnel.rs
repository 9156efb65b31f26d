//! Ordered conversion funnels with a conversion window.
//!
//! SQL reads the events that match any step, unsorted; Rust groups them by
//! customer (a counting sort over dense customer numbers), sorts each
//! customer's few events by time and walks them once. Sorting per customer
//! instead of one global sort keeps the cost near linear in the rows. For a customer with `n` matching
//! events of which `a` are step-1 events in the range, finding the best
//! attempt costs `O(a · k · log n)` for `k` steps (each attempt looks up each
//! next step by binary search in that step's sorted positions), so the whole
//! analysis is `O(N log N)` in the number of matching events `N` and holds
//! them in memory once (bounded by [`RunOptions::max_funnel_rows`]).

use std::collections::HashMap;
use std::ops::ControlFlow;

use chrono::{Duration, NaiveDate};
use cohort_lake::arrow::array::{Array, RecordBatch};
use cohort_lake::{Lake, LakeError};
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, EventSpec, GroupKey, check_range, from_field, ratio, scoped, to_field,
};
use crate::customers::{CustomerIndex, Interner, group_rows};
use crate::read::{self, opt_i64};
use crate::sql;
use crate::table;
use crate::{AnalysisError, RunOptions};

/// Most steps in a funnel.
pub const MAX_FUNNEL_STEPS: usize = 10;
/// Longest conversion window, in days.
const MAX_WINDOW_DAYS: u32 = 366;
const MICROS_PER_SEC: i64 = 1_000_000;

/// How long after its first step a customer has to finish the funnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ConversionWindow {
    Hours(u32),
    Days(u32),
}

impl Default for ConversionWindow {
    fn default() -> Self {
        ConversionWindow::Days(30)
    }
}

impl ConversionWindow {
    pub fn seconds(self) -> i64 {
        match self {
            ConversionWindow::Hours(h) => i64::from(h) * 3600,
            ConversionWindow::Days(d) => i64::from(d) * 86_400,
        }
    }
}

/// An ordered funnel.
///
/// ```json
/// {"from": "2024-05-01", "to": "2024-06-01",
///  "steps": [{"event": "Product Viewed"},
///            {"event": "Product Added"},
///            {"event": "Order Completed", "filters": [{"property": "currency", "equals": "EUR"}]}],
///  "window": {"days": 7}, "breakdown": {"property": "category"}}
/// ```
///
/// Semantics (those of Mixpanel's and Amplitude's unique-customer funnels):
///
/// * Every step-1 event of a customer inside `[from, to)` starts an attempt.
/// * An attempt reaches step `k + 1` when the customer has a step-`k + 1`
///   event after the event that matched step `k` (in time order, ties by
///   ingestion order), at most `window` after the attempt's step-1 event
///   (inclusive). Later steps may fall after `to`. Other events in between
///   do not matter, and an event matches one step of an attempt at most, so a
///   funnel `A → A` needs two `A` events.
/// * Each customer counts once, at the furthest step any of their attempts
///   reached. The earliest attempt that reached it is the customer's attempt:
///   its times give the time to convert, and its step-1 event the breakdown
///   value (a property or context value of the step-1 event, or the
///   customer's trait).
///
/// Per step: customers who reached it, conversion from the previous step and
/// from the first, and the median time from step 1 (the mean of the two
/// middle values for an even count).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelRequest {
    #[serde(deserialize_with = "from_field")]
    pub from: NaiveDate,
    #[serde(deserialize_with = "to_field")]
    pub to: NaiveDate,
    pub steps: Vec<EventSpec>,
    /// 30 days when absent.
    #[serde(default)]
    pub window: ConversionWindow,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    #[serde(default)]
    pub breakdown_limit: Option<usize>,
}

impl FunnelRequest {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        check_range(self.from, self.to)?;
        if self.steps.len() < 2 {
            return Err(AnalysisError::invalid(
                "steps",
                format!("a funnel needs at least 2 steps, got {}", self.steps.len()),
            ));
        }
        if self.steps.len() > MAX_FUNNEL_STEPS {
            return Err(AnalysisError::invalid(
                "steps",
                format!(
                    "{} steps; at most {MAX_FUNNEL_STEPS} are allowed",
                    self.steps.len()
                ),
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            step.validate(&format!("steps[{i}]"))?;
        }
        let (amount, unit, max) = match self.window {
            ConversionWindow::Hours(h) => (h, "hours", MAX_WINDOW_DAYS * 24),
            ConversionWindow::Days(d) => (d, "days", MAX_WINDOW_DAYS),
        };
        if amount == 0 || amount > max {
            return Err(AnalysisError::invalid(
                format!("window.{unit}"),
                format!("must be between 1 and {max}, not {amount}"),
            ));
        }
        self.scope().check_segment_and_breakdown()
    }
}

scoped!(FunnelRequest);

/// A funnel, ready for a bar chart of `steps[].customers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Funnel {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub window_seconds: i64,
    /// All customers.
    pub steps: Vec<FunnelStep>,
    /// Per breakdown group (empty without a breakdown); every customer is in
    /// exactly one group, so the groups add up to `steps`.
    pub breakdown: Vec<FunnelGroup>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelStep {
    /// 1-based.
    pub step: usize,
    pub event: String,
    /// Customers who reached this step.
    pub customers: u64,
    /// `customers / previous step's customers`; `null` when that is 0 and for step 1.
    pub conversion_from_previous: Option<f64>,
    /// `customers / step 1's customers`; `null` when that is 0.
    pub conversion_from_first: Option<f64>,
    /// Median seconds from step 1 to this step over the customers who reached
    /// it; `null` for step 1 and when nobody reached it.
    pub median_seconds_from_first: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelGroup {
    pub label: String,
    pub group: GroupKey,
    pub steps: Vec<FunnelStep>,
}

/// A customer's chosen attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// Index of the step-1 event in the customer's events.
    pub start: usize,
    /// Steps reached, 1 ..= k.
    pub level: usize,
    /// Microseconds from step 1 to each reached step (`elapsed[0] == 0`).
    pub elapsed: [i64; MAX_FUNNEL_STEPS],
}

/// The best attempt of one customer, whose events are sorted by (time, seq):
/// `ts[i]` in microseconds, `masks[i]` with bit `j` set when event `i`
/// matches step `j`. Attempts start at step-1 events with `range.0 <= ts <
/// range.1`. `None` when the customer has no such event.
pub(crate) fn best_attempt(
    ts: &[i64],
    masks: &[u32],
    steps: usize,
    window_us: i64,
    range: (i64, i64),
) -> Option<Attempt> {
    let positions: Vec<Vec<usize>> = (0..steps)
        .map(|j| {
            (0..masks.len())
                .filter(|&i| masks[i] & (1 << j) != 0)
                .collect()
        })
        .collect();
    let mut best: Option<Attempt> = None;
    for &start in &positions[0] {
        let t0 = ts[start];
        if t0 < range.0 || t0 >= range.1 {
            continue;
        }
        let mut attempt = Attempt {
            start,
            level: 1,
            elapsed: [0; MAX_FUNNEL_STEPS],
        };
        let mut prev = start;
        for (j, candidates) in positions.iter().enumerate().skip(1) {
            // The earliest event of step j after the previous step's event:
            // taking the earliest never blocks a later step.
            let at = candidates.partition_point(|&p| p <= prev);
            match candidates.get(at) {
                Some(&p) if ts[p] - t0 <= window_us => {
                    attempt.level = j + 1;
                    attempt.elapsed[j] = ts[p] - t0;
                    prev = p;
                }
                _ => break,
            }
        }
        // Strictly better only: among equals the earliest attempt stays.
        if best.is_none_or(|b| attempt.level > b.level) {
            best = Some(attempt);
        }
        if attempt.level == steps {
            break;
        }
    }
    best
}

/// The events matching any step, as read: one entry per row in each vector.
#[derive(Default)]
struct StepEvents {
    customers: CustomerIndex,
    customer: Vec<u32>,
    ts: Vec<i64>,
    seq: Vec<i64>,
    mask: Vec<u16>,
    group: Vec<u32>,
    groups: Interner,
}

impl StepEvents {
    /// Appends a batch; stops reading past `max_rows`.
    fn add(&mut self, batch: &RecordBatch, max_rows: usize) -> Result<ControlFlow<()>, LakeError> {
        let bad = |e: AnalysisError| LakeError::Internal(e.to_string());
        let c = read::i64s(batch, "customer_id").map_err(bad)?;
        let t = read::i64s(batch, "ts").map_err(bad)?;
        let q = read::i64s(batch, "seq").map_err(bad)?;
        let m = read::i64s(batch, "mask").map_err(bad)?;
        let g = read::strings(batch, "g").map_err(bad)?;
        for i in 0..batch.num_rows() {
            let Some(customer) = opt_i64(&c, i) else {
                continue;
            };
            self.customer.push(self.customers.number(customer));
            self.ts.push(opt_i64(&t, i).unwrap_or_default());
            self.seq.push(opt_i64(&q, i).unwrap_or_default());
            self.mask
                .push(u16::try_from(opt_i64(&m, i).unwrap_or(0)).unwrap_or(0));
            self.group
                .push(self.groups.number((!g.is_null(i)).then(|| g.value(i))));
        }
        Ok(if self.ts.len() > max_rows {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }
}

/// Median of microsecond durations, in seconds.
fn median_seconds(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    let micros = if values.len() % 2 == 1 {
        values[mid] as f64
    } else {
        (values[mid - 1] as f64 + values[mid] as f64) / 2.0
    };
    Some(micros / MICROS_PER_SEC as f64)
}

fn summarise<'a>(
    request: &FunnelRequest,
    attempts: impl Iterator<Item = &'a Attempt> + Clone,
) -> Vec<FunnelStep> {
    let mut out: Vec<FunnelStep> = Vec::with_capacity(request.steps.len());
    for (j, step) in request.steps.iter().enumerate() {
        let mut elapsed: Vec<i64> = attempts
            .clone()
            .filter(|a| a.level > j)
            .map(|a| a.elapsed[j])
            .collect();
        let customers = elapsed.len() as u64;
        let first = out.first().map_or(customers, |s| s.customers);
        out.push(FunnelStep {
            step: j + 1,
            event: step.event.clone(),
            customers,
            conversion_from_previous: out
                .last()
                .and_then(|p| ratio(customers as f64, p.customers as f64)),
            conversion_from_first: ratio(customers as f64, first as f64),
            median_seconds_from_first: if j == 0 {
                None
            } else {
                median_seconds(&mut elapsed)
            },
        });
    }
    out
}

/// Runs the analysis (validating the request first).
pub async fn funnel(
    lake: &Lake,
    request: &FunnelRequest,
    opts: &RunOptions,
) -> Result<Funnel, AnalysisError> {
    request.validate()?;
    let steps = request.steps.len();
    let window_secs = request.window.seconds();
    let window_us = window_secs * MICROS_PER_SEC;
    let matches: Vec<String> = request
        .steps
        .iter()
        .map(sql::matches)
        .collect::<Result<_, _>>()?;
    let mask = matches
        .iter()
        .enumerate()
        .map(|(j, m)| format!("CASE WHEN {m} THEN {} ELSE 0 END", 1u32 << j))
        .collect::<Vec<_>>()
        .join(" + ");
    let (group, join) = sql::breakdown(request.breakdown.as_ref())?;
    // Later steps may happen up to the window after the last possible start.
    let until = request.to + Duration::days(window_secs / 86_400 + 1);
    let sql = format!(
        "SELECT e.customer_id AS customer_id, e.\"timestamp\" AS ts, e.seq AS seq, \
         CAST({mask} AS BIGINT) AS mask, CASE WHEN {first} THEN {group} END AS g \
         FROM events e{join} \
         WHERE {days} AND e.customer_id IS NOT NULL AND ({any}){segment}",
        first = matches[0],
        days = sql::in_days(request.from, until),
        any = matches.join(" OR "),
        segment = sql::and_segment(request.segment.as_deref()),
    );
    let max_rows = opts.max_funnel_rows;
    let rows = lake
        .fold(
            &sql,
            opts.timeout,
            StepEvents::default,
            move |rows: &mut StepEvents, batch| rows.add(batch, max_rows),
        )
        .await?;
    if rows.ts.len() > max_rows {
        return Err(AnalysisError::TooLarge(format!(
            "the funnel's event list has more than {max_rows} rows; narrow the range, the events or the breakdown"
        )));
    }

    let range = (micros_at(request.from), micros_at(request.to));
    let (starts, mut order) = group_rows(&rows.customer, rows.customers.len());
    let mut journeys: Vec<(Attempt, Option<String>)> = Vec::new();
    let (mut ts, mut masks) = (Vec::new(), Vec::new());
    for bounds in starts.windows(2) {
        let mine = &mut order[bounds[0]..bounds[1]];
        mine.sort_unstable_by_key(|&r| (rows.ts[r as usize], rows.seq[r as usize]));
        ts.clear();
        masks.clear();
        for &r in mine.iter() {
            ts.push(rows.ts[r as usize]);
            masks.push(u32::from(rows.mask[r as usize]));
        }
        if let Some(a) = best_attempt(&ts, &masks, steps, window_us, range) {
            let first_step = mine[a.start] as usize;
            let group = rows.groups.value(rows.group[first_step]).map(str::to_owned);
            journeys.push((a, group));
        }
    }

    let mut breakdown = Vec::new();
    if let Some(limit) = request.scope().group_limit()? {
        let mut sizes: HashMap<&str, u64> = HashMap::new();
        for (_, g) in &journeys {
            if let Some(g) = g {
                *sizes.entry(g.as_str()).or_default() += 1;
            }
        }
        let mut ranked: Vec<(&str, u64)> = sizes.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        ranked.truncate(limit);
        let top: HashMap<&str, usize> = ranked
            .iter()
            .enumerate()
            .map(|(i, (g, _))| (*g, i))
            .collect();
        let key_of = |g: &Option<String>| match g {
            None => GroupKey::None,
            Some(v) if top.contains_key(v.as_str()) => GroupKey::Value(v.clone()),
            Some(_) => GroupKey::Other,
        };
        let mut keys: Vec<GroupKey> = ranked
            .iter()
            .map(|(g, _)| GroupKey::Value((*g).to_owned()))
            .collect();
        for extra in [GroupKey::None, GroupKey::Other] {
            if journeys.iter().any(|(_, g)| key_of(g) == extra) {
                keys.push(extra);
            }
        }
        for key in keys {
            let members = journeys
                .iter()
                .filter(|(_, g)| key_of(g) == key)
                .map(|(a, _)| a);
            breakdown.push(FunnelGroup {
                label: key.label(),
                steps: summarise(request, members),
                group: key,
            });
        }
    }

    Ok(Funnel {
        from: request.from,
        to: request.to,
        window_seconds: window_secs,
        steps: summarise(request, journeys.iter().map(|(a, _)| a)),
        breakdown,
    })
}

/// Microseconds since the epoch at midnight UTC of `day`.
fn micros_at(day: NaiveDate) -> i64 {
    read::day_number(day) * 86_400 * MICROS_PER_SEC
}

fn steps_table(steps: &[FunnelStep]) -> String {
    let headers = [
        "step",
        "event",
        "customers",
        "from previous",
        "from first",
        "median time",
    ]
    .map(String::from);
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            vec![
                s.step.to_string(),
                s.event.clone(),
                table::int(s.customers),
                table::percent(s.conversion_from_previous),
                table::percent(s.conversion_from_first),
                table::duration(s.median_seconds_from_first),
            ]
        })
        .collect();
    table::render(&headers, &rows, 2)
}

impl Funnel {
    /// The steps, then one table per breakdown group.
    pub fn to_table(&self) -> String {
        table::with_groups(
            steps_table(&self.steps),
            self.breakdown
                .iter()
                .map(|g| (g.label.clone(), steps_table(&g.steps))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * MICROS_PER_SEC;

    /// Events as (hour, mask) pairs, already in time order.
    fn run(events: &[(i64, u32)], steps: usize, window_hours: i64) -> Option<Attempt> {
        let ts: Vec<i64> = events.iter().map(|e| e.0 * H).collect();
        let masks: Vec<u32> = events.iter().map(|e| e.1).collect();
        best_attempt(&ts, &masks, steps, window_hours * H, (0, 100 * H))
    }

    #[test]
    fn steps_must_come_in_order() {
        // B before A does not count; A then B does.
        assert_eq!(
            run(&[(1, 0b10), (2, 0b01)], 2, 24).map(|a| a.level),
            Some(1)
        );
        let a = run(&[(1, 0b01), (3, 0b10)], 2, 24);
        assert_eq!(a.map(|a| (a.level, a.elapsed[1])), Some((2, 2 * H)));
    }

    #[test]
    fn window_is_inclusive_and_from_the_first_step() {
        assert_eq!(run(&[(0, 1), (24, 2)], 2, 24).map(|a| a.level), Some(2));
        assert_eq!(run(&[(0, 1), (25, 2)], 2, 24).map(|a| a.level), Some(1));
    }

    #[test]
    fn a_later_attempt_can_convert_and_the_earliest_best_wins() {
        // The first A times out; the second converts.
        let a = run(&[(0, 1), (30, 1), (40, 2)], 2, 24);
        assert_eq!(
            a.map(|a| (a.start, a.level, a.elapsed[1])),
            Some((1, 2, 10 * H))
        );
        // Both convert: the first attempt is reported.
        let a = run(&[(0, 1), (1, 1), (5, 2)], 2, 24);
        assert_eq!(a.map(|a| (a.start, a.elapsed[1])), Some((0, 5 * H)));
    }

    #[test]
    fn one_event_matches_one_step_of_an_attempt() {
        // A → A needs two A events.
        assert_eq!(run(&[(0, 0b11)], 2, 24).map(|a| a.level), Some(1));
        assert_eq!(
            run(&[(0, 0b11), (1, 0b11)], 2, 24).map(|a| a.level),
            Some(2)
        );
    }

    #[test]
    fn starts_outside_the_range_do_not_count() {
        let ts = [-H, 0];
        assert_eq!(
            best_attempt(&ts, &[1, 2], 2, 24 * H, (0, 100 * H)).map(|a| a.level),
            None
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median_seconds(&mut []), None);
        assert_eq!(
            median_seconds(&mut [3_000_000, 1_000_000, 2_000_000]),
            Some(2.0)
        );
        assert_eq!(median_seconds(&mut [4_000_000, 1_000_000]), Some(2.5));
    }
}
