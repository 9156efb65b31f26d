//! Journeys: definitions, the engine, delivery rules, templates and channel adapters.
//!
//! - [`definition`]: journey definitions (JSON or YAML), their checks against what exists
//!   (errors name the step and field), and version states.
//! - [`template`]: Liquid message templates — parse and check at save time, render per customer
//!   (HTML-escaped for email bodies, plain for SMS and push), `abort_message`, bounds.
//! - [`state`]: what the engine needs from storage to run each step exactly once (entries,
//!   their due times, the effects outbox; trait `JourneyStateStore`), with an in-memory
//!   implementation; `state_conformance` (feature `conformance`) is the suite every
//!   implementation passes.
//! - [`webhook`]: Standard Webhooks signatures for webhook calls.
//! - [`coupon`]: coupon code pools (CSV import, generation from a pattern), one code per
//!   customer per campaign, expiry and redemptions (trait `CouponStore`), with an in-memory
//!   implementation; `coupon_conformance` (feature `conformance`) is its suite.
//! - [`channel`]: channel adapters — Twilio and Alibaba Cloud SMS, FCM and APNs push, signed
//!   webhooks, email over SMTP with one-click unsubscribe and signed open and click links
//!   (`channel::tracking`) — their configuration (secrets redacted for listing), one attempt's
//!   outcome, and the retry schedule with dead-lettering; `channel::standin` (feature
//!   `standins`) has loopback stand-ins of each provider for tests.
//! - [`delivery`]: delivery rules at send time — consent per channel and purpose (from
//!   Segment's consent preferences, identify traits and channel unsubscribes), the customer's
//!   time zone and calendar, quiet hours, frequency caps and rate limits — deciding send, hold
//!   or skip with a stable reason; trait `DeliveryStore` (consent facts, the send ledger) with
//!   an in-memory implementation and its suite (`delivery::conformance`, feature
//!   `conformance`).
//! - [`runner`]: what each entry does, for a customer and an instant: entries from triggers
//!   (event, membership, trait, API and schedule), steps run exactly once over the state store,
//!   durable timers for delays and waits, exits, holdouts and goal conversions.
//! - [`catalogue`]: journey definitions, message templates and channels, versioned (trait
//!   `JourneyCatalogue`): drafts, publishing (checked, in one commit; earlier versions finish
//!   their entries), pause, resume, archive, history, and the live versions the runner runs;
//!   with an in-memory implementation and its suite (`catalogue::conformance`, feature
//!   `conformance`).
//! - [`measure`]: what a journey caused — counts per journey, version and step read from the
//!   state store (trait `JourneyStats`, with its suite `measure::conformance`, feature
//!   `conformance`), and the report: conversions and revenue of treated against held-out
//!   entries with the lift's interval, cost and return on it, first- and last-touch credit.
//! - [`sms`]: SMS length (GSM-7 and UCS-2 segments), splitting or truncating a message into
//!   parts, and opt-out keywords in inbound replies.

pub mod definition;

pub mod template;

pub mod sms;

pub mod webhook;

pub mod channel;

pub mod state;

pub mod runner;

pub mod catalogue;
pub mod measure;

#[cfg(any(test, feature = "conformance"))]
pub mod state_conformance;

pub mod coupon;

pub mod delivery;

#[cfg(any(test, feature = "conformance"))]
pub mod coupon_conformance;
