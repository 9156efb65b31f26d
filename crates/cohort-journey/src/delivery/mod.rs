//! Delivery rules: at send time, whether a message goes now, waits, or is skipped, and why.
//!
//! The engine uses this module at three points:
//!
//! 1. **For every processed message**, it records what the message says about the customer's
//!    consent and time zone: [`consent_facts`] (Segment's
//!    `context.consent.categoryPreferences`, identify traits) into
//!    [`DeliveryStore::record_consent`], and [`zone::context_timezone`] into
//!    [`DeliveryStore::record_zone`]. Channels record unsubscribes the same way
//!    ([`ConsentFact::channel_unsubscribe`]: an SMS STOP, an email one-click unsubscribe).
//! 2. **When a send step runs**, it resolves the customer's zone ([`customer_zone`]: the
//!    `timezone` trait, the last `context.timezone`, the workspace's), loads the facts
//!    ([`customer_facts`]: consent and the marketing sends of the current day, week and month
//!    in that zone, counted only for the caps that exist), and decides ([`decide`], then
//!    [`RateLimiter::gate`]). A [`Decision`] is recorded as it displays (`send`,
//!    `hold:quiet_hours`, `skip:frequency_cap:sms:day`):
//!    - `Send`: the effect goes to the channel, and the send is added to the ledger
//!      ([`DeliveryStore::record_send`] under the effect's idempotency key, so a send
//!      repeated after a restart counts once);
//!    - `Hold { until, .. }`: the entry stays at the step, due at `until`, and is decided
//!      again then;
//!    - `Skip(reason)`: the step is done without a message, and the journey moves on.
//! 3. **When two customers merge**, [`DeliveryStore::reassign_customer`] moves the merged
//!    customer's facts, sends and zone to the survivor.
//!
//! All time is passed in (the engine's `Clock`); nothing here reads a wall clock.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use cohort_journey::definition::{ChannelKind, QuietHours};
//! use cohort_journey::delivery::*;
//! use serde_json::json;
//!
//! let rules = DeliveryRules::from_json(r#"{
//!   "time_zone": "Asia/Shanghai",
//!   "caps": {"global": {"day": 3}, "sms": {"day": 1}},
//!   "quiet_hours": {"default": {"start": "21:00", "end": "08:00"}}
//! }"#)?;
//! let mut store = MemoryDelivery::default();
//! let customer = 42;
//! // 22:00 in Shanghai.
//! let now = Utc.with_ymd_and_hms(2026, 5, 1, 14, 0, 0).unwrap();
//! let identify = json!({"type": "identify", "traits": {"email_unsubscribed": true}});
//! for fact in consent_facts(&identify, &rules.consent, now) {
//!     store.record_consent(customer, &fact)?;
//! }
//!
//! let zone = customer_zone(&json!({}), None, rules.time_zone);
//! let sms = SendRequest { channel: "sms-main", kind: ChannelKind::Sms, transactional: false, quiet_hours: QuietHours::Hold };
//! let facts = customer_facts(&mut store, &rules, customer, ChannelKind::Sms, zone.tz, now)?;
//! let Decision::Hold { until, .. } = decide(&rules, &sms, &facts, now) else { panic!() };
//! assert_eq!(until, Utc.with_ymd_and_hms(2026, 5, 2, 0, 0, 0).unwrap()); // 08:00 local
//!
//! let email = SendRequest { kind: ChannelKind::Email, channel: "email-main", ..sms };
//! let facts = customer_facts(&mut store, &rules, customer, ChannelKind::Email, zone.tz, until)?;
//! assert_eq!(decide(&rules, &email, &facts, until).to_string(), "skip:unsubscribed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod consent;
mod rules;
mod store;
pub mod zone;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests;

pub use consent::{
    ConsentFact, ConsentRules, ConsentSource, Purpose, Scope, check_consent, consent_facts,
};
pub use rules::{
    CapScope, CustomerFacts, Decision, DeliveryRules, FrequencyCaps, HoldReason, Limits,
    PeriodCounts, QuietHoursRules, QuietWindow, RateLimit, RateLimiter, RulesError, SendRequest,
    SkipReason, decide,
};
pub use store::{DeliveryError, DeliveryStore, MemoryDelivery, SendRecord};
pub use zone::{CustomerZone, Period, ZoneSource, customer_zone, period_start};

use crate::definition::ChannelKind;
use crate::state::CustomerId;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// What [`decide`] needs to know of `customer` for a message on a channel of `kind` at `now`:
/// their consent facts, and their marketing sends since the start of the day, week and month
/// in `zone`, read only for the periods some cap limits.
pub fn customer_facts<S: DeliveryStore + ?Sized>(
    store: &mut S,
    rules: &DeliveryRules,
    customer: CustomerId,
    kind: ChannelKind,
    zone: Tz,
    now: DateTime<Utc>,
) -> Result<CustomerFacts, DeliveryError> {
    let mut facts = CustomerFacts::new(zone);
    facts.consent = store.consent(customer)?;
    let channel_limits = rules.caps.channel(kind);
    for period in Period::ALL {
        let global = rules.caps.global.get(period).is_some();
        let on_kind = channel_limits.get(period).is_some();
        if !global && !on_kind {
            continue;
        }
        let since = period_start(period, zone, now);
        if global {
            facts
                .sent
                .set(period, store.count_sends(customer, None, since)?);
        }
        if on_kind {
            facts
                .sent_on_kind
                .set(period, store.count_sends(customer, Some(kind), since)?);
        }
    }
    Ok(facts)
}
