//! The behaviour every [`IdentityGraph`] implementation must have, as one suite of tests.
//!
//! An implementation's crate runs the whole suite with [`identity_graph_conformance_suite!`],
//! given a function that runs a [`GraphTest`] over a fresh, empty graph (inside a transaction,
//! for a store whose graph lives in one):
//!
//! ```ignore
//! fn with_graph(test: impl cohort_identity::conformance::GraphTest) {
//!     test.run(&mut cohort_identity::MemoryGraph::default());
//! }
//! cohort_identity::identity_graph_conformance_suite!(with_graph);
//! ```
//!
//! Each behaviour is also a public function, so a failing one can be run alone.

use crate::{IdentityGraph, IdentityRules, resolve};
use cohort_core::{CustomerId, IdKind, Identifier};
use std::collections::HashMap;
use std::fmt::Debug;

/// One behaviour of the suite, run over whatever graph the implementation lends it.
pub trait GraphTest {
    fn run<G: IdentityGraph>(self, graph: &mut G);
}

fn uid(v: &str) -> Identifier {
    Identifier::new(IdKind::UserId, v)
}
fn anon(v: &str) -> Identifier {
    Identifier::new(IdKind::AnonymousId, v)
}
fn email(v: &str) -> Identifier {
    Identifier::new(IdKind::Email, v)
}

fn ok<T, E: Debug>(result: Result<T, E>) -> T {
    result.expect("the identity graph failed")
}

fn lookup<G: IdentityGraph>(graph: &mut G, id: &Identifier) -> Option<CustomerId> {
    ok(graph.lookup(id))
}

fn counts(pairs: &[(IdKind, usize)]) -> HashMap<IdKind, usize> {
    pairs.iter().cloned().collect()
}

/// Without zero counts, which an implementation may or may not report.
fn kind_counts<G: IdentityGraph>(graph: &mut G, customer: CustomerId) -> HashMap<IdKind, usize> {
    let mut counts = ok(graph.kind_counts(customer));
    counts.retain(|_, n| *n > 0);
    counts
}

/// Customers are created distinct, with no identifier.
pub fn new_customers_are_distinct_and_have_no_identifiers<G: IdentityGraph>(graph: &mut G) {
    let a = ok(graph.create_customer());
    let b = ok(graph.create_customer());
    assert_ne!(a, b);
    assert!(kind_counts(graph, a).is_empty());
    assert_eq!(lookup(graph, &uid("u1")), None);
}

/// An attached identifier leads to its customer; identifiers of other kinds with the same
/// value do not; counts are by kind.
pub fn attached_identifiers_lead_to_their_customer_and_are_counted_by_kind<G: IdentityGraph>(
    graph: &mut G,
) {
    let a = ok(graph.create_customer());
    let b = ok(graph.create_customer());
    ok(graph.attach(a, &uid("u1")));
    ok(graph.attach(a, &anon("d1")));
    ok(graph.attach(a, &anon("d2")));
    ok(graph.attach(b, &anon("u1")));
    assert_eq!(lookup(graph, &uid("u1")), Some(a));
    assert_eq!(lookup(graph, &anon("d2")), Some(a));
    assert_eq!(lookup(graph, &anon("u1")), Some(b));
    assert_eq!(lookup(graph, &email("u1")), None);
    assert_eq!(
        kind_counts(graph, a),
        counts(&[(IdKind::UserId, 1), (IdKind::AnonymousId, 2)])
    );
    assert_eq!(kind_counts(graph, b), counts(&[(IdKind::AnonymousId, 1)]));
}

/// A merge moves every identifier of the merged-away customer to the survivor, and its counts
/// with them.
pub fn a_merge_moves_every_identifier_to_the_survivor<G: IdentityGraph>(graph: &mut G) {
    let a = ok(graph.create_customer());
    let b = ok(graph.create_customer());
    ok(graph.attach(a, &uid("u1")));
    ok(graph.attach(b, &anon("d1")));
    ok(graph.attach(b, &email("x@example.org")));
    ok(graph.merge(b, a, &email("x@example.org")));
    assert_eq!(lookup(graph, &anon("d1")), Some(a));
    assert_eq!(lookup(graph, &email("x@example.org")), Some(a));
    assert_eq!(
        kind_counts(graph, a),
        counts(&[
            (IdKind::UserId, 1),
            (IdKind::AnonymousId, 1),
            (IdKind::Email, 1)
        ])
    );
    assert!(kind_counts(graph, b).is_empty());
}

/// After merges one after another, every identifier leads to the last survivor.
pub fn merges_one_after_another_lead_to_the_last_survivor<G: IdentityGraph>(graph: &mut G) {
    let a = ok(graph.create_customer());
    let b = ok(graph.create_customer());
    let c = ok(graph.create_customer());
    ok(graph.attach(c, &anon("d3")));
    ok(graph.attach(b, &anon("d2")));
    ok(graph.attach(a, &anon("d1")));
    ok(graph.merge(c, b, &anon("d3")));
    ok(graph.merge(b, a, &anon("d2")));
    for id in ["d1", "d2", "d3"] {
        assert_eq!(lookup(graph, &anon(id)), Some(a), "{id}");
    }
    assert_eq!(kind_counts(graph, a), counts(&[(IdKind::AnonymousId, 3)]));
}

/// Identity resolution over the graph: a visit then a login are one customer, two devices of
/// one user merge, and a shared device never joins two users.
pub fn resolution_groups_identifiers_as_the_rules_say<G: IdentityGraph>(graph: &mut G) {
    let rules = IdentityRules::default();
    let mut run = |ids: &[Identifier]| ok(resolve(&rules, graph, ids).map_err(|e| e.to_string()));
    let visit = run(&[anon("phone")]);
    let login = run(&[uid("alice"), anon("phone")]);
    assert_eq!(visit.customer, login.customer);
    let laptop = run(&[anon("laptop")]);
    let second = run(&[uid("alice"), anon("laptop")]);
    assert_eq!(second.merged, vec![(laptop.customer, login.customer)]);
    let bob = run(&[uid("bob"), anon("phone")]);
    assert_ne!(bob.customer, login.customer);
    assert_eq!(lookup(graph, &anon("laptop")), Some(login.customer));
    assert_eq!(lookup(graph, &anon("phone")), Some(login.customer));
    assert_eq!(lookup(graph, &uid("bob")), Some(bob.customer));
}

/// Runs every behaviour of the suite as a test of its own. See the module documentation.
#[macro_export]
macro_rules! identity_graph_conformance_suite {
    ($with_graph:path) => {
        mod identity_graph_conformance {
            use super::*;
            $crate::identity_graph_conformance_suite!(@tests $with_graph;
                new_customers_are_distinct_and_have_no_identifiers,
                attached_identifiers_lead_to_their_customer_and_are_counted_by_kind,
                a_merge_moves_every_identifier_to_the_survivor,
                merges_one_after_another_lead_to_the_last_survivor,
                resolution_groups_identifiers_as_the_rules_say
            );
        }
    };
    (@tests $with_graph:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                struct Test;
                impl $crate::conformance::GraphTest for Test {
                    fn run<G: $crate::IdentityGraph>(self, graph: &mut G) {
                        $crate::conformance::$name(graph)
                    }
                }
                $with_graph(Test)
            }
        )*
    };
}
