//! Synthetic data for Cohort's demo, tests and benchmarks.
//!
//! An empty customer data platform demos badly. This crate invents a shop's worth of customers
//! (Chinese and English names, emails, phones, cities, one to three devices each) and lets them
//! browse, register, log in on other devices, buy, get refunds, open support tickets and send
//! device telemetry over a time window, all as ordinary Segment messages. Everything is derived
//! from a seed, so a dataset can be regenerated exactly.
//!
//! - [`generate`](mod@generate): the story-driven dataset ([`generate()`], [`Dataset`]) and a cheap flat
//!   stream for load tests ([`stream_events`]).
//! - [`send`](mod@send): delivery to a running server through its real `/v1/batch` route, with retries and
//!   a progress bar ([`send()`]).
//! - [`catalog`]: the demo shop's products.
//! - [`lake`]: a second, simpler shop written straight into a lake's Parquet files with its
//!   profiles, at benchmark sizes (`cohort bench analytics`): [`lake::existing`],
//!   [`lake::generate`].
//! - [`experiment_lake`]: an A/B test on that shop (exposures by Cohort's own assignment, the
//!   shop's sessions before and after, a small real effect) written the same way, for
//!   `cohort bench experiments`: [`experiment_lake::existing`], [`experiment_lake::generate`].
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use cohort_demo::{DemoOptions, Dataset};
//!
//! let opts = DemoOptions {
//!     customers: 20,
//!     days: 30,
//!     seed: 42,
//!     end: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
//! };
//! let data = Dataset::generate(&opts);
//! assert!(!data.is_empty());
//! assert!(data.iter().all(|m| m.get("type").is_some() && m.get("messageId").is_some()));
//! println!("{}", data.stats());
//!
//! // Sending needs a server; inside a Tokio runtime:
//! // let summary = cohort_demo::send(data.into_messages(), &cohort_demo::SendOptions {
//! //     write_key: "my-source-key".into(),
//! //     ..Default::default()
//! // }).await?;
//! ```

pub mod catalog;
pub mod experiment_lake;
pub mod generate;
pub mod lake;
mod people;
pub mod send;

pub use generate::{
    Archetype, CustomerTruth, Dataset, DatasetStats, DemoOptions, generate, stream_events,
};
pub use send::{SendError, SendOptions, SendSummary, send};
