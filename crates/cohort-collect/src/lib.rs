//! The way in: everything between an HTTP request's bytes and a message ready for the inbox.
//!
//! - [`decode`]: gzip, size limits, UTF-8 and JSON, nesting depth.
//! - [`auth`]: the five places a Segment client may put its write key.
//! - [`envelope`]: routes, batch expansion, batch-level context merge.
//! - [`validate`]: one message: the Segment spec checks, identifier sizes, message IDs, the
//!   event-time window and clock-skew correction.
//! - [`normalise`]: per-source normalisation rules (emails, phones, gender, money).
//! - [`tracking_plan`]: per-source JSON Schema tracking plans in allow, flag or block mode.
//! - [`assemble`]: the one assembly every way in shares: messages in, a submission and its
//!   rejections out.

pub mod assemble;
pub mod auth;
pub mod decode;
pub mod envelope;
mod error;
pub mod normalise;
pub mod tracking_plan;
pub mod validate;

pub use assemble::Assembly;
pub use decode::Limits;
pub use envelope::Route;
pub use error::RequestError;
pub use validate::{Policy, Prepared, Rejection, prepare};
