//! Identity resolution: which customer does an event with these identifiers belong to?
//!
//! The algorithm is storage-agnostic: it runs over an [`IdentityGraph`], which the embedded and
//! PostgreSQL stores implement, and [`MemoryGraph`] for tests.
//!
//! Rules ([`IdentityRules`]):
//! - identifiers are taken in priority order (by default user ID, email, phone, custom kinds, anonymous ID);
//! - the customer found through the highest-priority known identifier receives the event;
//! - unknown identifiers are attached to it while the per-kind limit allows (at most one user ID by default);
//! - two known customers are merged when the union of their identifiers stays within every limit;
//!   otherwise the lower-priority identifier is left where it is (a shared device never joins two people);
//! - junk values (`null`, `undefined`, `0`, `test@test.com` …) are never used to link anything.
//!
//! ```
//! use cohort_core::{IdKind, Identifier};
//! use cohort_identity::{IdentityRules, MemoryGraph, resolve};
//!
//! let rules = IdentityRules::default();
//! let mut graph = MemoryGraph::default();
//! let anon = Identifier::new(IdKind::AnonymousId, "device-1");
//! let visit = resolve(&rules, &mut graph, &[anon.clone()]).unwrap();
//! let user = Identifier::new(IdKind::UserId, "u-7");
//! let login = resolve(&rules, &mut graph, &[user, anon]).unwrap();
//! assert_eq!(visit.customer, login.customer);
//! ```
//!
//! Every implementation of [`IdentityGraph`] passes one behavioural suite, `conformance`
//! (feature `conformance`, macro `identity_graph_conformance_suite!`); [`MemoryGraph`] runs it
//! in this crate's tests.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod graph;
mod memory;
mod resolve;
mod rules;

pub use graph::IdentityGraph;
pub use memory::MemoryGraph;
pub use resolve::{Resolution, ResolveError, Skipped, resolve, resolve_untrusted_traits};
pub use rules::{IdentityRules, KindRule};
