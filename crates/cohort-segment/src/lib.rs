//! Segments: who belongs, decided by conditions that are data.
//!
//! A segment is a [`Condition`]: a tree of JSON nodes (traits, computed traits, events,
//! sequences, other segments, and/or/not) that a UI can build and a server can store, with no
//! scripting anywhere. The same condition runs two ways:
//!
//! - [`evaluate`] decides for one customer, from their traits, computed traits and events: for
//!   real-time membership as events arrive. [`moves_with_time`] and [`referenced_events`] tell
//!   when a new decision is needed.
//! - [`to_sql`] compiles it to one SQL query over all customers: for backfills and periodic
//!   refreshes of time-sensitive segments. It selects exactly the customers `evaluate` accepts
//!   at the same `now`, given the tables described in [`sql`].
//!
//! Real-time membership runs in [`realtime::RealtimeSegments`], over storage behind
//! [`MembershipStore`] (see [`membership`]): the runtime gives it a thread and the position the
//! processor has applied; it decides every customer those events touched.
//!
//! Values compare by how the condition is written: numbers (and numeric strings such as `"29"`)
//! numerically, RFC 3339 / `YYYY-MM-DD` strings as instants, other strings as text, and a list
//! `contains` its elements. See [`Op`] for every operator.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use cohort_profile::ComputedTraits;
//! use cohort_segment::{Condition, CustomerView, EventRecord, evaluate, moves_with_time};
//! use serde_json::{Map, json};
//!
//! // Platinum: spent over 5000 in 30 days and ordered at least twice in that time.
//! let platinum = Condition::from_json(r#"{"type": "and", "conditions": [
//!     {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5000},
//!     {"type": "event", "name": "Order Completed", "count": {"op": "gte", "value": 2},
//!      "window": {"last_days": 30}}
//! ]}"#)?;
//!
//! let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
//! let order = |day| EventRecord {
//!     name: "Order Completed".into(),
//!     timestamp: Utc.with_ymd_and_hms(2026, 2, day, 12, 0, 0).unwrap(),
//!     properties: Map::new(),
//! };
//! let events = [order(10), order(20)];
//! let computed = ComputedTraits { revenue_30d: 6200.0, ..Default::default() };
//! let traits = json!({"city": "上海"}).as_object().cloned().unwrap();
//! let ada = CustomerView::new(&traits, &computed, &events);
//!
//! assert!(evaluate(&platinum, &ada, now, &|_| false));
//! // Thirty days on, both orders have left the window.
//! assert!(!evaluate(&platinum, &ada, now + chrono::TimeDelta::days(30), &|_| false));
//! assert!(moves_with_time(&platinum));
//! # Ok::<(), cohort_segment::ConditionError>(())
//! ```

pub mod condition;
pub mod eval;
pub mod membership;
pub mod realtime;
pub mod sql;
pub mod tags;
mod values;

pub use condition::{
    COMPUTED_KEYS, Condition, ConditionError, CountOp, CountRule, MAX_COST, MAX_COUNT, MAX_DAYS,
    MAX_DEPTH, MAX_FILTERS, MAX_LIST, MAX_NODES, Op, PropertyFilter, Window,
};
pub use eval::{
    CustomerView, Dependencies, EventRecord, TimeUnit, dependencies, evaluate, moves_with_time,
    referenced_events, referenced_segments, time_unit,
};
pub use membership::{
    Cursor, Decision, Decisions, Definition, EventSelection, Fingerprint, MembershipError,
    MembershipSnapshot, MembershipStore, Merge, StoredEvent, evaluation_order,
};
pub use realtime::{RealtimeSegments, Round};
pub use sql::to_sql;
pub use values::{parse_number, trait_number, trait_text};
