//! Assignment: which variation of an experiment a unit (a customer, a device) sees, bit for bit as
//! GrowthBook's SDKs decide it, so that a page running GrowthBook's JavaScript SDK and Cohort's
//! server-side evaluation put the same visitor in the same variation.
//!
//! A unit's hash attribute (its ID by default) and the experiment's seed hash to a number in
//! `[0, 1)` ([`hash`]); the variations own consecutive ranges of that interval in proportion to
//! their weights, shrunk by the experiment's coverage ([`bucket_ranges`]); the unit sees the
//! variation whose range holds its number ([`choose_variation`]), or none when the number falls
//! in the uncovered rest. Mutually exclusive experiments share a namespace and each takes a slice
//! of it ([`in_namespace`]).
//!
//! ```
//! use cohort_experiment::assign::{bucket_ranges, choose_variation, hash, HashVersion};
//! // GrowthBook's cross-SDK case: unit "1" of experiment "my-test" sees variation 1.
//! let n = hash("my-test", "1", HashVersion::V1);
//! let ranges = bucket_ranges(2, 1.0, None);
//! let variation = choose_variation(n, &ranges);
//! assert_eq!(variation, Some(1));
//! ```

/// FNV-1a's 32-bit offset basis and prime.
const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits, over the UTF-16 code units of `text`, as GrowthBook's JavaScript SDK computes
/// it (`charCodeAt`). Hashing UTF-8 bytes instead would send every non-ASCII ID elsewhere.
pub fn fnv32a(text: &str) -> u32 {
    fnv_continue(FNV_OFFSET, text)
}

/// FNV-1a of `text` continued from `hash`: hashing `a` and then `b` gives the hash of `a + b`,
/// so the seed and the value are hashed without building their concatenation. ASCII text's
/// UTF-16 code units are its bytes, which skips the decoding.
fn fnv_continue(mut hash: u32, text: &str) -> u32 {
    if text.is_ascii() {
        for byte in text.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    } else {
        for unit in text.encode_utf16() {
            hash ^= u32::from(unit);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

/// FNV-1a of the decimal digits of `n` (JavaScript's `String(n)` for a whole number). The ten
/// digit places are filled two at a time from a table, each pair divided out of `n` on its own
/// (not peeled off the previous remainder), so the divisions run beside one another; then the
/// digits from the first significant one are hashed.
fn fnv_of_decimal(n: u32) -> u32 {
    const PAIRS: [u8; 200] = digit_pairs();
    let mut digits = [0u8; 10];
    for (place, divisor) in [100_000_000, 1_000_000, 10_000, 100, 1]
        .into_iter()
        .enumerate()
    {
        let pair = ((n / divisor) % 100) as usize * 2;
        digits[place * 2] = PAIRS[pair];
        digits[place * 2 + 1] = PAIRS[pair + 1];
    }
    let length = 1 + [
        9,
        99,
        999,
        9_999,
        99_999,
        999_999,
        9_999_999,
        99_999_999,
        999_999_999,
    ]
    .iter()
    .filter(|below| n > **below)
    .count();
    // A fixed ten steps, each kept only from the first significant digit on, so the loop
    // has no exit to mispredict (one ID in five has fewer than ten digits).
    let skip = digits.len() - length;
    let mut hash = FNV_OFFSET;
    for (place, digit) in digits.iter().enumerate() {
        let next = (hash ^ u32::from(*digit)).wrapping_mul(FNV_PRIME);
        hash = if place >= skip { next } else { hash };
    }
    hash
}

/// `"00"`, `"01"`, … `"99"` back to back.
const fn digit_pairs() -> [u8; 200] {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[i * 2] = b'0' + (i / 10) as u8;
        pairs[i * 2 + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
}

/// The versions of GrowthBook's hash. Version 2 spreads similar seeds and IDs better; version 1
/// is what experiments without a version use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashVersion {
    V1,
    V2,
}

impl HashVersion {
    /// The version a definition names; `None` for a version GrowthBook does not define, whose
    /// experiments include nobody.
    pub fn from_number(version: u32) -> Option<HashVersion> {
        match version {
            1 => Some(HashVersion::V1),
            2 => Some(HashVersion::V2),
            _ => None,
        }
    }
}

/// The unit's number in `[0, 1)` for `seed`: three decimals with version 1, four with version 2.
pub fn hash(seed: &str, value: &str, version: HashVersion) -> f64 {
    match version {
        HashVersion::V1 => {
            f64::from(fnv_continue(fnv_continue(FNV_OFFSET, value), seed) % 1000) / 1000.0
        }
        HashVersion::V2 => hash_v2_after(seed_prefix(seed), value),
    }
}

/// The hash state after version 2's seed: what [`hash_v2_after`] continues from, so that one
/// seed's units hash only their values.
pub(crate) fn seed_prefix(seed: &str) -> u32 {
    fnv_continue(FNV_OFFSET, seed)
}

/// Version 2's number for `value` under the seed whose [`seed_prefix`] is `prefix`.
pub(crate) fn hash_v2_after(prefix: u32, value: &str) -> f64 {
    let first = fnv_continue(prefix, value);
    f64::from(fnv_of_decimal(first) % 10_000) / 10_000.0
}

/// `n` equal weights that sum to 1; none for `n` below 1.
pub fn equal_weights(n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    vec![1.0 / n as f64; n]
}

/// A half-open range `[start, end)` of hash numbers.
pub type BucketRange = (f64, f64);

/// The ranges of `variations` variations: consecutive, each `coverage × weight` wide, starting
/// where the previous variation's full weight ended. Coverage is clamped to `[0, 1]`; weights of
/// the wrong length, or not summing to 1 within 0.01, fall back to equal weights, as GrowthBook's
/// SDKs do.
pub fn bucket_ranges(
    variations: usize,
    coverage: f64,
    weights: Option<&[f64]>,
) -> Vec<BucketRange> {
    let coverage = if coverage.is_nan() {
        1.0
    } else {
        coverage.clamp(0.0, 1.0)
    };
    let weights = match weights {
        Some(w) if w.len() == variations && (0.99..=1.01).contains(&w.iter().sum::<f64>()) => {
            w.to_vec()
        }
        _ => equal_weights(variations),
    };
    let mut start = 0.0;
    weights
        .iter()
        .map(|weight| {
            let range = (start, start + coverage * weight);
            start += weight;
            range
        })
        .collect()
}

/// Whether `n` lies in `range` (start included, end excluded).
pub fn in_range(n: f64, range: BucketRange) -> bool {
    range.0 <= n && n < range.1
}

/// The index of the first range that holds `n`; `None` when `n` is in none (outside coverage).
pub fn choose_variation(n: f64, ranges: &[BucketRange]) -> Option<usize> {
    ranges.iter().position(|range| in_range(n, *range))
}

/// [`choose_variation`] over the ranges [`bucket_ranges`] would give, without building them:
/// the same ranges, computed in the same order with the same arithmetic.
pub(crate) fn choose_in_bucket_ranges(
    n: f64,
    variations: usize,
    coverage: f64,
    weights: Option<&[f64]>,
) -> Option<usize> {
    let coverage = if coverage.is_nan() {
        1.0
    } else {
        coverage.clamp(0.0, 1.0)
    };
    let valid =
        weights.filter(|w| w.len() == variations && (0.99..=1.01).contains(&w.iter().sum::<f64>()));
    let equal = if variations == 0 {
        0.0
    } else {
        1.0 / variations as f64
    };
    let mut start = 0.0;
    for i in 0..variations {
        let weight = valid.map_or(equal, |w| w[i]);
        if in_range(n, (start, start + coverage * weight)) {
            return Some(i);
        }
        start += weight;
    }
    None
}

/// Whether the unit `id` falls in the slice `[start, end)` of namespace `namespace`.
pub fn in_namespace(id: &str, namespace: &str, start: f64, end: f64) -> bool {
    let n = hash(&format!("__{namespace}"), id, HashVersion::V1);
    start <= n && n < end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_ids_hash_over_utf16_code_units_like_the_sdks() {
        // Computed with GrowthBook's Python SDK 4.0.0 (`gbhash`), which hashes UTF-16 code units
        // as the JavaScript SDK does: a CJK ID, an astral-plane emoji (a surrogate pair) and an
        // accented Latin letter.
        for (seed, value, version, expected) in [
            ("promo-banner", "visitor-657", HashVersion::V1, 0.25),
            ("exp", "顾客-42", HashVersion::V1, 0.121),
            ("exp", "顾客-42", HashVersion::V2, 0.9928),
            ("seed", "😀", HashVersion::V1, 0.429),
            ("seed", "😀", HashVersion::V2, 0.4346),
            ("", "Zoë", HashVersion::V1, 0.767),
        ] {
            assert_eq!(hash(seed, value, version), expected, "{seed:?} {value:?}");
        }
    }

    #[test]
    fn choosing_without_ranges_agrees_with_the_ranges() {
        let weights: [Option<&[f64]>; 5] = [
            None,
            Some(&[0.5, 0.5]),
            Some(&[0.1, 0.2, 0.7]),
            Some(&[0.4, 0.4]),
            Some(&[0.3, 0.3, 0.3, 0.1]),
        ];
        for w in weights {
            for variations in 0..5 {
                for coverage in [0.0, 0.25, 0.5, 1.0, 1.5, -1.0, f64::NAN] {
                    let ranges = bucket_ranges(variations, coverage, w);
                    for i in 0..=1000 {
                        let n = f64::from(i) / 1000.0;
                        assert_eq!(
                            choose_in_bucket_ranges(n, variations, coverage, w),
                            choose_variation(n, &ranges),
                            "{n} {variations} {coverage} {w:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn decimal_digits_hash_as_their_text() {
        for n in [
            0,
            1,
            7,
            9,
            10,
            99,
            100,
            101,
            1_000_000,
            999_999_999,
            1_000_000_000,
            u32::MAX,
        ] {
            assert_eq!(fnv_of_decimal(n), fnv32a(&n.to_string()), "{n}");
        }
    }

    #[test]
    fn unknown_hash_versions_are_refused() {
        assert_eq!(HashVersion::from_number(1), Some(HashVersion::V1));
        assert_eq!(HashVersion::from_number(2), Some(HashVersion::V2));
        assert_eq!(HashVersion::from_number(99), None);
    }

    #[test]
    fn coverage_is_clamped_and_bad_weights_fall_back_to_equal() {
        assert_eq!(bucket_ranges(2, 1.5, None), [(0.0, 0.5), (0.5, 1.0)]);
        assert_eq!(bucket_ranges(2, -0.2, None), [(0.0, 0.0), (0.5, 0.5)]);
        assert_eq!(
            bucket_ranges(2, 1.0, Some(&[0.4, 0.4])),
            [(0.0, 0.5), (0.5, 1.0)]
        );
        assert_eq!(
            bucket_ranges(2, 1.0, Some(&[1.0])),
            [(0.0, 0.5), (0.5, 1.0)]
        );
        assert!(bucket_ranges(0, 1.0, None).is_empty());
    }
}
