use cohort_core::{CustomerId, IdKind, Identifier};
use std::collections::HashMap;

/// The storage the resolver works on. Implementations apply each call within the caller's transaction.
pub trait IdentityGraph {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The surviving customer that owns `id`, following merges.
    fn lookup(&mut self, id: &Identifier) -> Result<Option<CustomerId>, Self::Error>;
    /// How many identifiers of each kind the customer has.
    fn kind_counts(&mut self, customer: CustomerId) -> Result<HashMap<IdKind, usize>, Self::Error>;
    fn create_customer(&mut self) -> Result<CustomerId, Self::Error>;
    fn attach(&mut self, customer: CustomerId, id: &Identifier) -> Result<(), Self::Error>;
    /// Moves every identifier of `from` to `into` and records `from` as merged into `into`.
    /// `because` is the identifier that linked them, kept in the merge history.
    fn merge(
        &mut self,
        from: CustomerId,
        into: CustomerId,
        because: &Identifier,
    ) -> Result<(), Self::Error>;
}
