//! Dense numbering of the customers an analysis meets, for the analyses that
//! reduce events per customer in Rust (funnels, retention) rather than in SQL.
//!
//! Customer IDs are `i64`s that hash well with a multiplication; the standard
//! SipHash would cost more than the rest of the per-row work.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for integer keys: one multiplication by an odd constant, its high
/// half folded into the low one (the table takes its bucket from the low bits
/// and its tag from the high bits).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

/// A `HashMap` keyed by customer ID.
pub(crate) type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// Customer IDs numbered 0, 1, 2 … in the order they are first seen.
#[derive(Default)]
pub(crate) struct CustomerIndex {
    index: IdMap<u32>,
}

impl CustomerIndex {
    /// The number of `id`, giving it the next one if it is new.
    pub fn number(&mut self, id: i64) -> u32 {
        let next = self.index.len() as u32;
        *self.index.entry(id).or_insert(next)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }
}

/// Strings numbered in the order they are first seen (breakdown values).
#[derive(Default)]
pub(crate) struct Interner {
    index: HashMap<String, u32>,
    values: Vec<String>,
}

/// The number of "no value".
pub(crate) const NO_VALUE: u32 = u32::MAX;

impl Interner {
    pub fn number(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else {
            return NO_VALUE;
        };
        if let Some(&n) = self.index.get(value) {
            return n;
        }
        let n = self.values.len() as u32;
        self.values.push(value.to_owned());
        self.index.insert(value.to_owned(), n);
        n
    }

    /// The value numbered `n`; `None` for [`NO_VALUE`].
    pub fn value(&self, n: u32) -> Option<&str> {
        self.values.get(n as usize).map(String::as_str)
    }
}

/// Rows grouped by customer: `order[starts[c]..starts[c + 1]]` are the
/// positions of customer `c`'s rows, in their original order. A counting sort,
/// linear in the rows.
pub(crate) fn group_rows(customers: &[u32], count: usize) -> (Vec<usize>, Vec<u32>) {
    let mut starts = vec![0usize; count + 1];
    for &c in customers {
        starts[c as usize + 1] += 1;
    }
    for c in 0..count {
        starts[c + 1] += starts[c];
    }
    let mut next = starts.clone();
    let mut order = vec![0u32; customers.len()];
    for (row, &c) in customers.iter().enumerate() {
        order[next[c as usize]] = row as u32;
        next[c as usize] += 1;
    }
    (starts, order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_are_numbered_densely_in_order_of_appearance() {
        let mut index = CustomerIndex::default();
        let numbers: Vec<u32> = [42, -7, 42, 1 << 40, -7]
            .into_iter()
            .map(|id| index.number(id))
            .collect();
        assert_eq!(numbers, [0, 1, 0, 2, 1]);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn rows_are_grouped_by_customer_keeping_their_order() {
        let (starts, order) = group_rows(&[1, 0, 1, 2, 0, 1], 3);
        assert_eq!(starts, [0, 2, 5, 6]);
        assert_eq!(order, [1, 4, 0, 2, 5, 3]);
    }

    #[test]
    fn values_are_interned_and_none_has_its_own_number() {
        let mut values = Interner::default();
        assert_eq!(values.number(Some("a")), 0);
        assert_eq!(values.number(None), NO_VALUE);
        assert_eq!(values.number(Some("b")), 1);
        assert_eq!(values.number(Some("a")), 0);
        assert_eq!(values.value(1), Some("b"));
        assert_eq!(values.value(NO_VALUE), None);
    }
}
