//! What delivery rules need from storage: trait [`DeliveryStore`], and [`MemoryDelivery`].

use super::consent::{ConsentFact, Purpose, Scope};
use crate::definition::ChannelKind;
use crate::state::CustomerId;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::collections::{BTreeMap, HashMap};

/// A message handed to a channel, as the send ledger keeps it for frequency caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRecord {
    /// The send's idempotency key ([`effect_key`](crate::state::effect_key)): a send
    /// recorded again after a restart is not counted twice.
    pub key: String,
    pub customer: CustomerId,
    /// The channel's name.
    pub channel: String,
    pub kind: ChannelKind,
    /// Only marketing sends count toward caps; transactional ones are kept for the record.
    pub purpose: Purpose,
    pub at: DateTime<Utc>,
}

/// Why the delivery store failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("delivery store: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("delivery store is unreadable: {0}")]
    Unreadable(String),
}

/// Consent facts, the send ledger and the customers' last context zones. Used from one thread
/// at a time (`&mut self`), as the engine's loop owns it.
pub trait DeliveryStore {
    /// Keeps `fact` as the customer's fact for its scope if it
    /// [replaces](ConsentFact::replaces) the one kept (or none is); true when it does.
    fn record_consent(
        &mut self,
        customer: CustomerId,
        fact: &ConsentFact,
    ) -> Result<bool, DeliveryError>;

    /// The customer's facts, one per scope, in no particular order.
    fn consent(&mut self, customer: CustomerId) -> Result<Vec<ConsentFact>, DeliveryError>;

    /// Adds a send to the ledger; false, with nothing changed, when its key is already there.
    fn record_send(&mut self, send: &SendRecord) -> Result<bool, DeliveryError>;

    /// Adds a batch of sends, as [`DeliveryStore::record_send`] each; returns how many were
    /// new. A store that can should write the batch at once: a send worker records a whole
    /// batch's answers together, and a commit per send is most of what recording costs.
    fn record_sends(&mut self, sends: &[SendRecord]) -> Result<usize, DeliveryError> {
        let mut added = 0;
        for send in sends {
            added += usize::from(self.record_send(send)?);
        }
        Ok(added)
    }

    /// The customer's marketing sends at or after `since`, over all channels or of one kind.
    fn count_sends(
        &mut self,
        customer: CustomerId,
        kind: Option<ChannelKind>,
        since: DateTime<Utc>,
    ) -> Result<u64, DeliveryError>;

    /// Drops sends before `before` (caps look back a month at most); returns how many.
    fn forget_sends(&mut self, before: DateTime<Utc>) -> Result<u64, DeliveryError>;

    /// Keeps `zone` as the customer's last `context.timezone` as of `at`, unless a later one
    /// is kept; true when it changed what is kept.
    fn record_zone(
        &mut self,
        customer: CustomerId,
        zone: Tz,
        at: DateTime<Utc>,
    ) -> Result<bool, DeliveryError>;

    /// The customer's last `context.timezone`.
    fn zone(&mut self, customer: CustomerId) -> Result<Option<Tz>, DeliveryError>;

    /// Moves `from`'s facts, sends and zone to `into` after a merge. Where both have a fact
    /// for one scope, `into` keeps the one [`ConsentFact::replaces`] picks; of two zones, the
    /// later.
    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<(), DeliveryError>;
}

/// Delivery state in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct MemoryDelivery {
    consent: BTreeMap<(CustomerId, Scope), ConsentFact>,
    /// Each customer's sends; `keys` says whose a key is.
    sends: HashMap<CustomerId, Vec<SendRecord>>,
    keys: HashMap<String, CustomerId>,
    zones: HashMap<CustomerId, (Tz, DateTime<Utc>)>,
}

impl DeliveryStore for MemoryDelivery {
    fn record_consent(
        &mut self,
        customer: CustomerId,
        fact: &ConsentFact,
    ) -> Result<bool, DeliveryError> {
        let slot = self.consent.entry((customer, fact.scope));
        match slot {
            std::collections::btree_map::Entry::Occupied(mut kept) => {
                if fact.replaces(kept.get()) {
                    kept.insert(fact.clone());
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            std::collections::btree_map::Entry::Vacant(vacant) => {
                vacant.insert(fact.clone());
                Ok(true)
            }
        }
    }

    fn consent(&mut self, customer: CustomerId) -> Result<Vec<ConsentFact>, DeliveryError> {
        Ok(self
            .consent
            .range((customer, Scope::Contact)..)
            .take_while(|((c, _), _)| *c == customer)
            .map(|(_, f)| f.clone())
            .collect())
    }

    fn record_send(&mut self, send: &SendRecord) -> Result<bool, DeliveryError> {
        if self.keys.contains_key(&send.key) {
            return Ok(false);
        }
        self.keys.insert(send.key.clone(), send.customer);
        self.sends
            .entry(send.customer)
            .or_default()
            .push(send.clone());
        Ok(true)
    }

    fn count_sends(
        &mut self,
        customer: CustomerId,
        kind: Option<ChannelKind>,
        since: DateTime<Utc>,
    ) -> Result<u64, DeliveryError> {
        Ok(self.sends.get(&customer).map_or(0, |sends| {
            sends
                .iter()
                .filter(|s| {
                    s.purpose == Purpose::Marketing
                        && s.at >= since
                        && kind.is_none_or(|k| k == s.kind)
                })
                .count() as u64
        }))
    }

    fn forget_sends(&mut self, before: DateTime<Utc>) -> Result<u64, DeliveryError> {
        let mut forgotten = 0;
        for sends in self.sends.values_mut() {
            sends.retain(|s| {
                let keep = s.at >= before;
                if !keep {
                    self.keys.remove(&s.key);
                    forgotten += 1;
                }
                keep
            });
        }
        self.sends.retain(|_, sends| !sends.is_empty());
        Ok(forgotten)
    }

    fn record_zone(
        &mut self,
        customer: CustomerId,
        zone: Tz,
        at: DateTime<Utc>,
    ) -> Result<bool, DeliveryError> {
        match self.zones.get(&customer) {
            Some((kept, kept_at)) if *kept == zone || *kept_at > at => Ok(false),
            _ => {
                self.zones.insert(customer, (zone, at));
                Ok(true)
            }
        }
    }

    fn zone(&mut self, customer: CustomerId) -> Result<Option<Tz>, DeliveryError> {
        Ok(self.zones.get(&customer).map(|(tz, _)| *tz))
    }

    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<(), DeliveryError> {
        if from == into {
            return Ok(());
        }
        let moved: Vec<ConsentFact> = self.consent(from)?;
        for fact in moved {
            self.consent.remove(&(from, fact.scope));
            self.record_consent(into, &fact)?;
        }
        if let Some(mut sends) = self.sends.remove(&from) {
            for send in &mut sends {
                send.customer = into;
                self.keys.insert(send.key.clone(), into);
            }
            self.sends.entry(into).or_default().extend(sends);
        }
        if let Some((zone, at)) = self.zones.remove(&from) {
            match self.zones.get(&into) {
                Some((_, kept_at)) if *kept_at >= at => {}
                _ => {
                    self.zones.insert(into, (zone, at));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    fn with_store(test: impl crate::delivery::conformance::DeliveryStoreTest) {
        test.run(&mut crate::delivery::MemoryDelivery::default());
    }
    crate::delivery_store_conformance_suite!(with_store);
}
