//! Profiles read recently, kept until something changes them.
//!
//! A profile lookup costs eight SQLite queries; the same customers are looked up again and again
//! (personalisation, support tools). The cache answers a repeated lookup from memory and stays
//! exact:
//!
//! * The processor invalidates the customers each batch touched, merged-away ones included, right
//!   after it commits ([`ProfileCache::invalidate`]).
//! * Writes that do not go through the processor (RFM traits, possibly from another `cohort`
//!   process) bump `derived_version` in `state.db`; the processor checks it between batches and
//!   clears the cache when it moved, and an in-process writer clears it at once.
//! * The rolling computed traits (`revenue_30d`, `orders_30d`) move with the UTC day only, so an
//!   entry serves the day it was read for.
//!
//! A reader that loaded a profile from the database inserts it only if no invalidation happened
//! since it started reading ([`ProfileCache::generation`]): otherwise its snapshot may predate a
//! commit whose invalidation already ran, and it would put back what was just removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cohort_core::CustomerId;
use cohort_profile::Profile;

/// Customers kept at most; past it the cache starts again empty.
pub(crate) const PROFILE_CACHE_CAPACITY: usize = 100_000;

pub(crate) struct ProfileCache {
    state: Mutex<CacheState>,
    capacity: usize,
}

impl std::fmt::Debug for ProfileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("ProfileCache")
            .field("profiles", &state.profiles.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[derive(Default)]
struct CacheState {
    generation: u64,
    /// Identifier kind → value → the customer it led to.
    keys: HashMap<String, HashMap<String, CustomerId>>,
    profiles: HashMap<CustomerId, Cached>,
}

struct Cached {
    profile: Arc<Profile>,
    /// The UTC day (days since 1970) the rolling windows were computed for.
    day: i64,
}

/// Where a profile read from the database came from, for [`ProfileCache::insert`].
pub(crate) struct Loaded<'a> {
    pub kind: &'a str,
    pub value: &'a str,
    pub customer: CustomerId,
    pub day: i64,
    /// [`ProfileCache::generation`] before the read started.
    pub generation: u64,
}

impl ProfileCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(CacheState::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The profile of the customer `kind`/`value` leads to, as of `day`, if cached.
    pub(crate) fn get(&self, kind: &str, value: &str, day: i64) -> Option<Arc<Profile>> {
        let state = self.lock();
        let customer = state.keys.get(kind)?.get(value)?;
        let cached = state.profiles.get(customer)?;
        (cached.day == day).then(|| Arc::clone(&cached.profile))
    }

    /// Read before loading a profile, and handed back to [`ProfileCache::insert`].
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps a profile loaded from the database, unless the cache was invalidated since the load
    /// began.
    pub(crate) fn insert(&self, loaded: Loaded<'_>, profile: Arc<Profile>) {
        let mut state = self.lock();
        if state.generation != loaded.generation {
            return;
        }
        if state.profiles.len() >= self.capacity && !state.profiles.contains_key(&loaded.customer) {
            state.keys.clear();
            state.profiles.clear();
        }
        let values = state.keys.entry(loaded.kind.to_owned()).or_default();
        if values.len() >= self.capacity {
            values.clear();
        }
        values.insert(loaded.value.to_owned(), loaded.customer);
        state.profiles.insert(
            loaded.customer,
            Cached {
                profile,
                day: loaded.day,
            },
        );
    }

    /// Forgets these customers (their identifiers are looked up again the next time, which is
    /// how a merged-away customer's identifiers come to lead to the survivor).
    pub(crate) fn invalidate(&self, customers: &[CustomerId]) {
        let mut state = self.lock();
        state.generation += 1;
        for customer in customers {
            state.profiles.remove(customer);
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.keys.clear();
        state.profiles.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(id: &str) -> Arc<Profile> {
        Arc::new(Profile {
            customer_id: id.into(),
            created_at: String::new(),
            identities: Vec::new(),
            traits: serde_json::Map::new(),
            computed: cohort_profile::ComputedTraits::default(),
            merges: Vec::new(),
        })
    }

    fn loaded<'a>(cache: &ProfileCache, value: &'a str, customer: CustomerId) -> Loaded<'a> {
        Loaded {
            kind: "user_id",
            value,
            customer,
            day: 100,
            generation: cache.generation(),
        }
    }

    #[test]
    fn a_cached_profile_serves_its_day_until_invalidated() {
        let cache = ProfileCache::new(10);
        cache.insert(loaded(&cache, "u1", 1), profile("1"));
        let hit = cache
            .get("user_id", "u1", 100)
            .map(|p| p.customer_id.clone());
        assert_eq!(hit.as_deref(), Some("1"));
        assert!(cache.get("user_id", "u1", 101).is_none(), "a new day");
        assert!(cache.get("email", "u1", 100).is_none(), "another kind");
        cache.invalidate(&[2]);
        assert!(cache.get("user_id", "u1", 100).is_some());
        cache.invalidate(&[1]);
        assert!(cache.get("user_id", "u1", 100).is_none());
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_kept() {
        let cache = ProfileCache::new(10);
        let stale = loaded(&cache, "u1", 1);
        // The processor commits and invalidates while the reader is still loading.
        cache.invalidate(&[1]);
        cache.insert(stale, profile("1"));
        assert!(cache.get("user_id", "u1", 100).is_none());
        cache.insert(loaded(&cache, "u1", 1), profile("1"));
        assert!(cache.get("user_id", "u1", 100).is_some());
        cache.clear();
        assert!(cache.get("user_id", "u1", 100).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = ProfileCache::new(2);
        for (i, value) in ["a", "b", "c"].into_iter().enumerate() {
            cache.insert(loaded(&cache, value, i as CustomerId), profile(value));
        }
        assert!(cache.get("user_id", "c", 100).is_some());
        assert!(cache.get("user_id", "a", 100).is_none());
        assert!(cache.lock().profiles.len() <= 2);
    }
}
