//! Journeys: definitions, the engine, delivery rules, templates and channel adapters.
//!
//! - [`template`]: Liquid message templates — parse and check at save time, render per customer
//!   (HTML-escaped for email bodies, plain for SMS and push), `abort_message`, bounds.
//! - [`sms`]: SMS length (GSM-7 and UCS-2 segments), splitting or truncating a message into
//!   parts, and opt-out keywords in inbound replies.

/// Liquid message templates: parse, check, render, preview.
pub mod template;

/// SMS segments, parts and opt-out keywords.
pub mod sms;
