use crate::IdentityGraph;
use cohort_core::{CustomerId, IdKind, Identifier};
use std::collections::HashMap;
use std::convert::Infallible;

/// An in-memory identity graph: the reference implementation the store implementations are tested against.
#[derive(Debug, Default)]
pub struct MemoryGraph {
    owners: HashMap<Identifier, CustomerId>,
    merged_into: HashMap<CustomerId, CustomerId>,
    next: CustomerId,
    /// (from, into, because) in the order merges happened.
    pub merges: Vec<(CustomerId, CustomerId, Identifier)>,
}

impl MemoryGraph {
    fn survivor(&self, mut c: CustomerId) -> CustomerId {
        while let Some(&next) = self.merged_into.get(&c) {
            c = next;
        }
        c
    }

    /// Identifiers owned by a customer, sorted.
    pub fn identifiers_of(&self, customer: CustomerId) -> Vec<Identifier> {
        let mut ids: Vec<Identifier> = self
            .owners
            .iter()
            .filter(|(_, c)| **c == customer)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }
}

impl IdentityGraph for MemoryGraph {
    type Error = Infallible;

    fn lookup(&mut self, id: &Identifier) -> Result<Option<CustomerId>, Infallible> {
        Ok(self.owners.get(id).map(|c| self.survivor(*c)))
    }

    fn kind_counts(&mut self, customer: CustomerId) -> Result<HashMap<IdKind, usize>, Infallible> {
        let mut counts = HashMap::new();
        for (id, c) in &self.owners {
            if *c == customer {
                *counts.entry(id.kind.clone()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    fn create_customer(&mut self) -> Result<CustomerId, Infallible> {
        self.next += 1;
        Ok(self.next)
    }

    fn attach(&mut self, customer: CustomerId, id: &Identifier) -> Result<(), Infallible> {
        self.owners.insert(id.clone(), customer);
        Ok(())
    }

    fn merge(
        &mut self,
        from: CustomerId,
        into: CustomerId,
        because: &Identifier,
    ) -> Result<(), Infallible> {
        for owner in self.owners.values_mut() {
            if *owner == from {
                *owner = into;
            }
        }
        self.merged_into.insert(from, into);
        self.merges.push((from, into, because.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::GraphTest;

    fn with_graph(test: impl GraphTest) {
        test.run(&mut MemoryGraph::default());
    }

    crate::identity_graph_conformance_suite!(with_graph);
}
