use crate::{IdentityGraph, IdentityRules};
use cohort_core::{CustomerId, IdKind, Identifier};
use std::collections::HashMap;

/// Why an identifier was not linked to the event's customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// A junk value from the blocklist.
    Blocked(Identifier),
    /// Attaching it would exceed the per-kind limit of the customer.
    LimitReached(Identifier),
    /// It belongs to another customer, and merging the two would exceed a per-kind limit.
    MergeRefused { id: Identifier, other: CustomerId },
    /// It came from a client-side source as a trait (email, phone, external ID) and belongs to
    /// another customer: a client may not claim a known customer that way (see
    /// [`resolve_untrusted_traits`]).
    UntrustedClaim { id: Identifier, owner: CustomerId },
}

/// The outcome of resolving one event's identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The customer the event belongs to (a survivor, never a merged-away ID).
    pub customer: CustomerId,
    pub created: bool,
    pub attached: Vec<Identifier>,
    /// (merged-away customer, survivor) pairs, in the order they happened.
    pub merged: Vec<(CustomerId, CustomerId)>,
    pub skipped: Vec<Skipped>,
}

/// Resolves `ids` to one customer, attaching and merging as the rules allow.
///
/// Fails with [`ResolveError::NoUsableIdentifier`] when every identifier is blocked or `ids` is empty.
pub fn resolve<G: IdentityGraph>(
    rules: &IdentityRules,
    graph: &mut G,
    ids: &[Identifier],
) -> Result<Resolution, ResolveError<G::Error>> {
    let mut usable: Vec<&Identifier> = Vec::with_capacity(ids.len());
    let mut skipped = Vec::new();
    for id in ids {
        if rules.is_blocked(&id.value) {
            skipped.push(Skipped::Blocked(id.clone()));
        } else if !usable.contains(&id) {
            usable.push(id);
        }
    }
    if usable.is_empty() {
        return Err(ResolveError::NoUsableIdentifier);
    }
    // Stable sort: equal priorities keep the caller's order, so results are deterministic.
    usable.sort_by_key(|id| std::cmp::Reverse(rules.rule(&id.kind).priority));

    let mut run = Run {
        rules,
        graph,
        resolution: Resolution {
            customer: 0,
            created: false,
            attached: Vec::new(),
            merged: Vec::new(),
            skipped,
        },
    };
    // Unknown identifiers met before any known one wait here: they go to the first known customer
    // that can take them all, or to a new customer if it cannot.
    let mut pending: Vec<&Identifier> = Vec::new();
    let mut primary: Option<CustomerId> = None;

    for id in usable {
        let owner = run.graph.lookup(id).map_err(ResolveError::Store)?;
        match (primary, owner) {
            (None, None) => pending.push(id),
            (None, Some(found)) => {
                if run.can_take_all(found, &pending)? {
                    primary = Some(found);
                    for p in pending.drain(..) {
                        run.attach(found, p)?;
                    }
                } else {
                    let fresh = run.create()?;
                    for p in pending.drain(..) {
                        run.try_attach(fresh, p)?;
                    }
                    primary = Some(run.try_merge(fresh, found, id)?);
                }
            }
            (Some(p), None) => run.try_attach(p, id)?,
            (Some(p), Some(found)) if p == found => {}
            (Some(p), Some(found)) => primary = Some(run.try_merge(p, found, id)?),
        }
    }
    let customer = match primary {
        Some(c) => c,
        None => {
            let fresh = run.create()?;
            for p in pending {
                run.try_attach(fresh, p)?;
            }
            fresh
        }
    };
    run.resolution.customer = customer;
    Ok(run.resolution)
}

/// Resolves like [`resolve`] for a message from a client-side source, whose key anyone can read
/// out of a web page: `trusted` (the device's `anonymousId`, the `userId`, an alias's
/// `previousId`) resolve as usual, so a visitor who logs in joins their customer; `traits`
/// (email, phone, external IDs) may only add what nobody owns yet, or confirm what the
/// customer of `trusted` already owns. A trait identifier owned by another customer is skipped
/// as [`Skipped::UntrustedClaim`], so knowing a customer's email does not make a browser that
/// customer, and two known customers are never merged through a client's traits.
pub fn resolve_untrusted_traits<G: IdentityGraph>(
    rules: &IdentityRules,
    graph: &mut G,
    trusted: &[Identifier],
    traits: &[Identifier],
) -> Result<Resolution, ResolveError<G::Error>> {
    if trusted.is_empty() {
        return Err(ResolveError::NoUsableIdentifier);
    }
    let mut owners = Vec::with_capacity(trusted.len());
    for id in trusted {
        if let Some(owner) = graph.lookup(id).map_err(ResolveError::Store)? {
            owners.push(owner);
        }
    }
    let mut admitted = trusted.to_vec();
    let mut claims = Vec::new();
    for id in traits {
        match graph.lookup(id).map_err(ResolveError::Store)? {
            Some(owner) if !owners.contains(&owner) => claims.push(Skipped::UntrustedClaim {
                id: id.clone(),
                owner,
            }),
            _ => admitted.push(id.clone()),
        }
    }
    let mut resolution = resolve(rules, graph, &admitted)?;
    resolution.skipped.extend(claims);
    Ok(resolution)
}

/// Errors from [`resolve`].
#[derive(Debug, thiserror::Error)]
pub enum ResolveError<E: std::error::Error + 'static> {
    #[error("the event has no usable identifier (all were missing or blocked)")]
    NoUsableIdentifier,
    #[error("identity store: {0}")]
    Store(#[source] E),
}

struct Run<'a, G: IdentityGraph> {
    rules: &'a IdentityRules,
    graph: &'a mut G,
    resolution: Resolution,
}

impl<G: IdentityGraph> Run<'_, G> {
    fn counts(&mut self, c: CustomerId) -> Result<HashMap<IdKind, usize>, ResolveError<G::Error>> {
        self.graph.kind_counts(c).map_err(ResolveError::Store)
    }

    fn create(&mut self) -> Result<CustomerId, ResolveError<G::Error>> {
        self.resolution.created = true;
        self.graph.create_customer().map_err(ResolveError::Store)
    }

    fn attach(&mut self, c: CustomerId, id: &Identifier) -> Result<(), ResolveError<G::Error>> {
        self.graph.attach(c, id).map_err(ResolveError::Store)?;
        self.resolution.attached.push(id.clone());
        Ok(())
    }

    fn can_take_all(
        &mut self,
        c: CustomerId,
        ids: &[&Identifier],
    ) -> Result<bool, ResolveError<G::Error>> {
        // Most events carry only identifiers already known: no count query for them.
        if ids.is_empty() {
            return Ok(true);
        }
        let mut counts = self.counts(c)?;
        for id in ids {
            let n = counts.entry(id.kind.clone()).or_insert(0);
            *n += 1;
            if *n > self.rules.rule(&id.kind).limit {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn try_attach(&mut self, c: CustomerId, id: &Identifier) -> Result<(), ResolveError<G::Error>> {
        let held = self.counts(c)?.get(&id.kind).copied().unwrap_or(0);
        if held < self.rules.rule(&id.kind).limit {
            self.attach(c, id)
        } else {
            self.resolution
                .skipped
                .push(Skipped::LimitReached(id.clone()));
            Ok(())
        }
    }

    /// Merges `a` and `b` if their identifiers fit the limits together; returns the customer that
    /// now carries the event. The older customer (lower ID) survives so long-lived IDs stay stable.
    fn try_merge(
        &mut self,
        a: CustomerId,
        b: CustomerId,
        because: &Identifier,
    ) -> Result<CustomerId, ResolveError<G::Error>> {
        let ca = self.counts(a)?;
        let cb = self.counts(b)?;
        let fits = ca.iter().chain(cb.iter()).all(|(kind, _)| {
            let total = ca.get(kind).unwrap_or(&0) + cb.get(kind).unwrap_or(&0);
            total <= self.rules.rule(kind).limit
        });
        if !fits {
            self.resolution.skipped.push(Skipped::MergeRefused {
                id: because.clone(),
                other: b,
            });
            return Ok(a);
        }
        let (survivor, gone) = if a < b { (a, b) } else { (b, a) };
        self.graph
            .merge(gone, survivor, because)
            .map_err(ResolveError::Store)?;
        self.resolution.merged.push((gone, survivor));
        Ok(survivor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryGraph;

    fn uid(v: &str) -> Identifier {
        Identifier::new(IdKind::UserId, v)
    }
    fn anon(v: &str) -> Identifier {
        Identifier::new(IdKind::AnonymousId, v)
    }
    fn email(v: &str) -> Identifier {
        Identifier::new(IdKind::Email, v)
    }

    fn run(graph: &mut MemoryGraph, ids: &[Identifier]) -> Resolution {
        resolve(&IdentityRules::default(), graph, ids).unwrap()
    }

    /// Counts the identity-count queries a resolution makes: the store runs one SQL query each.
    #[derive(Default)]
    struct CountingGraph {
        inner: MemoryGraph,
        count_queries: usize,
    }

    impl IdentityGraph for CountingGraph {
        type Error = std::convert::Infallible;
        fn lookup(&mut self, id: &Identifier) -> Result<Option<CustomerId>, Self::Error> {
            self.inner.lookup(id)
        }
        fn kind_counts(&mut self, c: CustomerId) -> Result<HashMap<IdKind, usize>, Self::Error> {
            self.count_queries += 1;
            self.inner.kind_counts(c)
        }
        fn create_customer(&mut self) -> Result<CustomerId, Self::Error> {
            self.inner.create_customer()
        }
        fn attach(&mut self, c: CustomerId, id: &Identifier) -> Result<(), Self::Error> {
            self.inner.attach(c, id)
        }
        fn merge(
            &mut self,
            from: CustomerId,
            into: CustomerId,
            because: &Identifier,
        ) -> Result<(), Self::Error> {
            self.inner.merge(from, into, because)
        }
    }

    #[test]
    fn events_with_only_known_identifiers_need_no_identity_counts() {
        let mut g = CountingGraph::default();
        let rules = IdentityRules::default();
        let first = resolve(&rules, &mut g, &[uid("u1"), anon("d1")]).unwrap();
        let before = g.count_queries;
        let again = resolve(&rules, &mut g, &[uid("u1"), anon("d1")]).unwrap();
        assert_eq!(again.customer, first.customer);
        assert_eq!(
            g.count_queries, before,
            "nothing to attach, so nothing to count"
        );
        // A new identifier still has its limit checked.
        resolve(&rules, &mut g, &[uid("u1"), anon("d2")]).unwrap();
        assert!(g.count_queries > before);
    }

    #[test]
    fn anonymous_visit_then_identify_is_one_customer_without_a_throwaway() {
        let mut g = MemoryGraph::default();
        let visit = run(&mut g, &[anon("d1")]);
        let login = run(&mut g, &[uid("u1"), anon("d1")]);
        assert_eq!(visit.customer, login.customer);
        assert!(!login.created, "identify must reuse the anonymous customer");
        assert_eq!(
            g.identifiers_of(login.customer),
            vec![uid("u1"), anon("d1")]
        );
    }

    #[test]
    fn one_customer_on_two_devices_merges_both_devices() {
        let mut g = MemoryGraph::default();
        let phone = run(&mut g, &[anon("phone")]);
        let laptop = run(&mut g, &[anon("laptop")]);
        assert_ne!(phone.customer, laptop.customer);
        run(&mut g, &[uid("u1"), anon("phone")]);
        let second = run(&mut g, &[uid("u1"), anon("laptop")]);
        assert_eq!(second.merged, vec![(laptop.customer, phone.customer)]);
        assert_eq!(second.customer, phone.customer);
        assert_eq!(g.lookup(&anon("laptop")).unwrap(), Some(phone.customer));
    }

    #[test]
    fn shared_device_never_merges_two_user_ids() {
        let mut g = MemoryGraph::default();
        let alice = run(&mut g, &[uid("alice"), anon("kiosk")]);
        let bob = run(&mut g, &[uid("bob"), anon("kiosk")]);
        assert_ne!(alice.customer, bob.customer);
        assert!(bob.created);
        assert!(matches!(bob.skipped[0], Skipped::MergeRefused { .. }));
        // The device stays with its first owner; each user keeps their own customer.
        assert_eq!(g.lookup(&anon("kiosk")).unwrap(), Some(alice.customer));
        assert_eq!(g.lookup(&uid("bob")).unwrap(), Some(bob.customer));
        let again = run(&mut g, &[uid("bob"), anon("kiosk")]);
        assert_eq!(again.customer, bob.customer);
    }

    #[test]
    fn blocked_values_link_nothing() {
        let mut g = MemoryGraph::default();
        let a = run(&mut g, &[uid("a"), email("test@test.com")]);
        let b = run(&mut g, &[uid("b"), email("TEST@test.com")]);
        assert_ne!(a.customer, b.customer);
        assert!(matches!(b.skipped[0], Skipped::Blocked(_)));
        let err = resolve(
            &IdentityRules::default(),
            &mut g,
            &[uid("null"), anon("undefined")],
        );
        assert!(matches!(err, Err(ResolveError::NoUsableIdentifier)));
    }

    #[test]
    fn alias_links_previous_anonymous_id_to_user() {
        let mut g = MemoryGraph::default();
        let visit = run(&mut g, &[anon("old-device")]);
        let user = run(&mut g, &[uid("u9")]);
        let alias = run(&mut g, &[uid("u9"), anon("old-device")]);
        assert_eq!(alias.merged, vec![(user.customer, visit.customer)]);
        // Lookups by either merged-away or surviving identifiers reach the survivor.
        assert_eq!(g.lookup(&uid("u9")).unwrap(), Some(visit.customer));
    }

    #[test]
    fn email_limit_keeps_extra_emails_off_the_customer() {
        let mut rules = IdentityRules::default();
        rules.kinds.get_mut("email").unwrap().limit = 1;
        let mut g = MemoryGraph::default();
        let first = resolve(&rules, &mut g, &[uid("u"), email("a@x.org")]).unwrap();
        let second = resolve(&rules, &mut g, &[uid("u"), email("b@x.org")]).unwrap();
        assert_eq!(first.customer, second.customer);
        assert_eq!(
            second.skipped,
            vec![Skipped::LimitReached(email("b@x.org"))]
        );
        assert_eq!(g.lookup(&email("b@x.org")).unwrap(), None);
    }

    #[test]
    fn new_user_on_a_known_device_gets_a_new_customer() {
        let mut g = MemoryGraph::default();
        let alice = run(&mut g, &[uid("alice"), anon("tablet")]);
        let carol = run(&mut g, &[uid("carol"), anon("tablet")]);
        assert_ne!(alice.customer, carol.customer);
        assert_eq!(g.lookup(&uid("carol")).unwrap(), Some(carol.customer));
    }

    #[test]
    fn email_links_two_anonymous_customers() {
        let mut g = MemoryGraph::default();
        let a = run(&mut g, &[anon("d1"), email("x@y.org")]);
        let b = run(&mut g, &[anon("d2")]);
        let c = run(&mut g, &[email("x@y.org"), anon("d2")]);
        assert_eq!(c.customer, a.customer);
        assert_eq!(c.merged, vec![(b.customer, a.customer)]);
        assert_eq!(g.merges.len(), 1);
    }

    #[test]
    fn a_client_cannot_claim_a_known_customer_by_their_email() {
        let rules = IdentityRules::default();
        let mut g = MemoryGraph::default();
        let victim = run(&mut g, &[uid("victim"), email("v@example.com")]);
        // A fresh browser that knows the victim's email.
        let attacker =
            resolve_untrusted_traits(&rules, &mut g, &[anon("evil")], &[email("v@example.com")])
                .unwrap();
        assert_ne!(attacker.customer, victim.customer);
        assert!(attacker.merged.is_empty());
        assert_eq!(
            attacker.skipped,
            vec![Skipped::UntrustedClaim {
                id: email("v@example.com"),
                owner: victim.customer
            }]
        );
        assert_eq!(
            g.lookup(&email("v@example.com")).unwrap(),
            Some(victim.customer)
        );
    }

    #[test]
    fn a_client_still_joins_its_visitor_to_its_user_and_adds_new_traits() {
        let rules = IdentityRules::default();
        let mut g = MemoryGraph::default();
        let visit = run(&mut g, &[anon("d1")]);
        let login = resolve_untrusted_traits(
            &rules,
            &mut g,
            &[uid("u1"), anon("d1")],
            &[email("new@example.com")],
        )
        .unwrap();
        assert_eq!(login.customer, visit.customer);
        assert_eq!(
            g.lookup(&email("new@example.com")).unwrap(),
            Some(visit.customer)
        );
        // Its own email again confirms, it does not claim.
        let again =
            resolve_untrusted_traits(&rules, &mut g, &[anon("d1")], &[email("new@example.com")])
                .unwrap();
        assert_eq!(again.customer, visit.customer);
        assert!(again.skipped.is_empty());
    }
}
