//! Domain types shared by every Cohort crate. No I/O lives here.
//!
//! - [`message`]: the Segment message types and typed accessors over a message's JSON.
//! - [`identifier`]: the identifier kinds that identity resolution links into one customer.
//! - [`clock`]: the source of "now", which tests drive by hand.
//! - [`position`] and [`inbox`]: where a message stands in the durable log between ingest and
//!   processing, and the trait every inbox implements.
//! - [`number`]: how JSON values read as numbers.
//! - [`priority`]: background threads yield the CPU to request handling.
//!
//! ```
//! use cohort_core::identifier::{IdKind, Identifier};
//! let id = Identifier::new(IdKind::Email, "ada@example.com");
//! assert_eq!(id.kind.as_str(), "email");
//! ```

pub mod clock;
pub mod identifier;
pub mod inbox;
pub mod message;
pub mod number;
pub mod position;
pub mod priority;

pub use clock::{Clock, ManualClock, ShiftedClock, SystemClock};
pub use identifier::{CustomerId, IdKind, Identifier};
pub use inbox::{Inbox, InboxEntry, InboxError, NewFailedEvent, Receipt, Submission};
pub use message::MessageType;
pub use position::Position;
