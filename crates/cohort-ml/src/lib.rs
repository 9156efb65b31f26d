//! Customer models over order histories: today RFM scores, the named RFM segments and k-means
//! clusters ([`rfm`]); later feature pipelines, churn and intent models, lifetime value.
//!
//! The crate does no I/O. A caller aggregates one row per customer from wherever the orders
//! live (the lake, in `cohort-server`'s RFM run), hands the rows to a model, and stores or shows
//! what comes back. Every random choice is seeded, so the same rows give the same answer.
//!
//! ```
//! use cohort_ml::rfm::{RfmInput, RfmOptions, analyse};
//!
//! // One row per customer who ordered in the window: days since the last order, orders, revenue.
//! let rows = vec![
//!     RfmInput { customer_id: 1, recency_days: 3, orders: 12, revenue: 2400.0 },
//!     RfmInput { customer_id: 2, recency_days: 200, orders: 1, revenue: 35.0 },
//! ];
//! let result = analyse(&rows, &RfmOptions { k: 2, ..RfmOptions::default() })?;
//! for customer in &result.customers {
//!     // Scores ("545"), the named segment and the k-means cluster (0 is the most valuable).
//!     println!("{} {} {} {}", customer.customer_id, customer.scores.code(),
//!              customer.segment.name(), customer.cluster);
//! }
//! assert_eq!(result.report.clusters.len(), 2);
//! # Ok::<(), cohort_ml::rfm::RfmError>(())
//! ```

pub mod rfm;
