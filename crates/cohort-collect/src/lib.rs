//! The way in: everything between an HTTP request's bytes and a message ready for the inbox.
//!
//! - [`request`]: what a client sent to a submission: decoding (gzip, size limits, UTF-8 and
//!   JSON, nesting depth), the five places a Segment client may put its write key, batch
//!   expansion and context merge, and the one [`Assembly`] every way in shares: messages in, a
//!   submission and its rejections out.
//! - [`validate`]: one message: the Segment spec checks, identifier sizes, message IDs, the
//!   event-time window and clock-skew correction.
//! - [`normalise`]: per-source normalisation rules (emails, phones, gender, money).
//! - [`tracking_plan`]: per-source JSON Schema tracking plans in allow, flag or block mode.

mod error;
pub mod normalise;
pub mod request;
pub mod tracking_plan;
pub mod validate;

pub use error::RequestError;
pub use request::{Assembly, Limits, Route};
pub use validate::{Policy, Prepared, Rejection, UnusablePlan, prepare};
