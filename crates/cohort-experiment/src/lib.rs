//! Flags and experiments: definitions, assignment, metrics and the statistics engine.
//!
//! - [`assign`]: which variation a unit sees, bit-compatible with GrowthBook's SDKs (hash
//!   versions 1 and 2 over UTF-16 code units, bucket ranges, namespaces).
//! - [`condition`]: targeting conditions in GrowthBook's MongoDB-style language, evaluated with
//!   its SDKs' JavaScript semantics.
//! - [`definition`]: flags, experiments and metrics as a team defines them, checked as a
//!   whole before they are saved, and turned into GrowthBook's features payload.
//! - [`store`]: the versioned storage they need (trait `DefinitionStore`), with an in-memory
//!   implementation; `conformance` (feature) holds the suite every implementation passes.
//! - [`metrics`]: which exposures and per-unit values an experiment's report sums
//!   ([`metrics::ExposureQuery`], answered over the lake by the engine) and the report's input
//!   from those sums.
//! - [`evaluate`]: experiments and feature flags for one unit, with the SDKs' gates, rule
//!   order and sticky bucketing.
//! - [`stats`]: the comparisons of a report (Welch t-test with relative and absolute lifts,
//!   ratio metrics, CUPED, sequential and Bayesian tests, sample-ratio mismatch) agreeing with
//!   gbstats 0.8.0, and the pooled z-test, power, sample size, detectable effect and
//!   multiple-comparison adjustments agreeing with statsmodels.
//! - [`summary_input`]: a report's input (per-variation sums of each metric, the options) from
//!   JSON or CSV.
//! - [`report`]: the full experiment report (values, lifts, p-values or chance to win, power,
//!   sample-ratio and multiple-exposure checks, a verdict in English and Chinese) and
//!   sample-size planning.
//!
//! No HTTP and no SQL here: the engine serves definitions and runs metric queries through the
//! lake.

pub mod assign;
pub mod condition;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod definition;
pub mod evaluate;
pub mod metrics;
pub mod report;
pub mod stats;
pub mod store;
pub mod summary_input;
