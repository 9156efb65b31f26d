//! The customer profile, and the processor that builds it from the inbox.
//!
//! Traits come from `identify` calls; the newest by event timestamp wins, whatever order events arrive in
//! (see [`newer_wins`]). Computed traits are maintained incrementally as each event is applied:
//! [`ProfileRules`] decides which events are orders and where their revenue is.
//!
//! ```
//! use cohort_profile::ProfileRules;
//! use serde_json::json;
//! let rules = ProfileRules::default();
//! let msg = json!({"type": "track", "event": "Order Completed", "properties": {"revenue": 99.5}});
//! assert_eq!(rules.order_revenue(msg.as_object().unwrap()), Some(99.5));
//! ```
//!
//! The [`Processor`] applies inbox entries to customer state: identity resolution, traits,
//! computed traits, merge folding. It writes through the [`ProfileStore`] trait, which storage
//! crates implement (`cohort-store` for SQLite) and prove with the behavioural suite of
//! `conformance` (feature `conformance`, macro `profile_store_conformance_suite!`).

mod processor;
mod store;
mod stored_message;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use processor::{
    CustomerStats, Processor, ProcessorConfig, SourceTrust, StatsDeltas, TrustEverySource,
};
pub use store::{NewEvent, ProfileBatch, ProfileStore};

use cohort_core::Identifier;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Which events count as orders and where their value is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileRules {
    /// Track event names that are orders.
    pub order_events: Vec<String>,
    /// Properties tried in order for an order's value.
    pub revenue_properties: Vec<String>,
    /// Days in the rolling revenue window.
    pub revenue_window_days: i64,
}

impl Default for ProfileRules {
    fn default() -> Self {
        Self {
            order_events: vec!["Order Completed".into()],
            revenue_properties: vec!["revenue".into(), "total".into(), "value".into()],
            revenue_window_days: 30,
        }
    }
}

impl ProfileRules {
    /// `Some(value)` when the message is an order (value 0 when it carries none).
    pub fn order_revenue(&self, msg: &Map<String, Value>) -> Option<f64> {
        if msg.get("type").and_then(Value::as_str) != Some("track") {
            return None;
        }
        let event = msg.get("event").and_then(Value::as_str)?;
        if !self.order_events.iter().any(|e| e == event) {
            return None;
        }
        let props = msg.get("properties").and_then(Value::as_object);
        let value = props.and_then(|p| {
            self.revenue_properties
                .iter()
                .find_map(|k| p.get(k).and_then(Value::as_f64))
        });
        Some(value.filter(|v| v.is_finite()).unwrap_or(0.0))
    }
}

/// Last-write-wins by event time: a trait set at `incoming` replaces one set at `stored` only when it is
/// not older. Ties go to the later arrival, so a re-sent identify with the same time still applies.
pub fn newer_wins(stored_micros: i64, incoming_micros: i64) -> bool {
    incoming_micros >= stored_micros
}

/// The UTC day of a time in microseconds since the Unix epoch, as days since 1970: the bucket of
/// the rolling revenue window.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(86_400_000_000)
}

/// Traits Cohort computes from a customer's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputedTraits {
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub event_count: i64,
    /// Counts by event name; non-track calls are counted as `$page`, `$identify` ….
    pub event_counts: BTreeMap<String, i64>,
    pub orders: i64,
    pub total_revenue: f64,
    /// Revenue of orders placed in the last `revenue_window_days` days.
    pub revenue_30d: f64,
    pub orders_30d: i64,
    pub last_order_at: Option<String>,
    pub average_order_value: Option<f64>,
}

/// A merge that folded another customer into this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    pub from_customer: String,
    pub into_customer: String,
    pub because: Identifier,
    pub at: String,
}

/// The 360° view served by the profile API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub customer_id: String,
    pub created_at: String,
    pub identities: Vec<Identifier>,
    pub traits: Map<String, Value>,
    pub computed: ComputedTraits,
    pub merges: Vec<MergeRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_configured_track_events_are_orders() {
        let rules = ProfileRules::default();
        let order =
            json!({"type": "track", "event": "Order Completed", "properties": {"total": 12}});
        let view =
            json!({"type": "track", "event": "Product Viewed", "properties": {"revenue": 5}});
        let page = json!({"type": "page", "event": "Order Completed"});
        let bare = json!({"type": "track", "event": "Order Completed"});
        assert_eq!(rules.order_revenue(order.as_object().unwrap()), Some(12.0));
        assert_eq!(rules.order_revenue(view.as_object().unwrap()), None);
        assert_eq!(rules.order_revenue(page.as_object().unwrap()), None);
        assert_eq!(rules.order_revenue(bare.as_object().unwrap()), Some(0.0));
    }

    #[test]
    fn later_event_time_wins_even_when_it_arrived_first() {
        assert!(newer_wins(100, 200));
        assert!(newer_wins(100, 100));
        assert!(!newer_wins(200, 100));
    }
}
