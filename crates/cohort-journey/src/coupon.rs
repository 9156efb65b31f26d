//! Coupon code pools: import or generate codes, issue one per customer per campaign, track
//! redemptions. Trait [`CouponStore`].
//!
//! A **pool** ([`NewPool`]) holds codes and may make them expire, at a fixed time or a
//! [`Duration`] after each code's issue ([`Expiry`]). Codes come from a CSV file
//! ([`parse_csv`]) or are generated from a pattern ([`CodePattern`], e.g. `SPRING-####-XXXX`).
//! Codes are unique across all pools, so a redeemed code alone names its pool.
//!
//! [`CouponStore::issue`] gives a customer a code for a campaign (a journey's coupon step): the
//! same code on every later call for that (pool, campaign, customer), and never a code issued
//! to anyone else. When no code is left it returns `Ok(None)`: the pool is exhausted, which the
//! caller reports (the step records it; nothing is retried until codes are added).
//!
//! [`CouponStore::redeem`] records that an order used a code (the `coupon` property of
//! `Order Completed`). A code that is unknown, not issued, issued to another customer, expired,
//! or already used by another order is not an error: the outcome is a [`Redemption::Refused`]
//! with its [`Refusal`], so the order itself is never lost. The same order redeeming the same code
//! again (a replayed event) is [`Redemption::Redeemed`] again.
//!
//! **Imports.** A CSV file is either one column without a header, or has a header naming a
//! `code` column (other columns are ignored). Codes are trimmed. A file with empty, over-long
//! (more than [`MAX_CODE_LEN`] characters) or blank-containing codes, or the same code twice, is
//! refused as a whole with every bad row's number ([`CodeListError`]), because a partner's file
//! with bad rows is usually a wrong file. Codes the store already holds (in this pool or another)
//! are different: they are skipped and counted ([`AddReport::skipped`]), so importing a file
//! twice is harmless.
//!
//! The embedded implementation is SQLite (`cohort-store`); [`MemoryCoupons`] keeps codes in
//! memory. Both pass `coupon_store_conformance_suite!` (feature `conformance`).
//!
//! ```
//! use chrono::{Duration, Utc};
//! use cohort_journey::coupon::{
//!     CodePattern, CouponStore, Expiry, MemoryCoupons, NewPool, Redemption, Refusal, parse_csv,
//! };
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! let mut coupons = MemoryCoupons::default();
//! let now = Utc::now();
//! coupons
//!     .create_pool(&NewPool::new("spring", "Spring sale").expiry(Expiry::AfterIssue(Duration::days(30))))
//!     .unwrap();
//! let codes = parse_csv(b"code\nSPRING-0001\n SPRING-0002 \n").unwrap();
//! assert_eq!(coupons.add_codes("spring", &codes).unwrap().added, 2);
//! let pattern = CodePattern::parse("SPRING-####-XXXX").unwrap();
//! let mut rng = StdRng::seed_from_u64(7);
//! coupons.generate_codes("spring", &pattern, 100, &mut rng).unwrap();
//!
//! let code = coupons.issue("spring", "platinum", 42, "platinum:1:9:coupon", now).unwrap().unwrap();
//! let again = coupons.issue("spring", "platinum", 42, "platinum:1:9:coupon", now).unwrap().unwrap();
//! assert_eq!(code.code, again.code);
//!
//! let used = coupons.redeem(&code.code, 42, "order-1", now).unwrap();
//! assert!(matches!(used, Redemption::Redeemed { .. }));
//! let twice = coupons.redeem(&code.code, 42, "order-2", now).unwrap();
//! assert!(matches!(twice, Redemption::Refused(Refusal::AlreadyRedeemed { .. })));
//! assert_eq!(coupons.counts("spring", now).unwrap().redeemed, 1);
//! ```

use crate::state::CustomerId;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;

/// The longest code accepted, in characters: codes are typed by customers and printed in SMS.
pub const MAX_CODE_LEN: usize = 64;

/// When a pool's codes stop being redeemable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// At a fixed time: nothing is issued after it either.
    At(DateTime<Utc>),
    /// This long after each code's issue.
    AfterIssue(Duration),
}

/// A pool to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPool {
    /// What journeys and the API name it by.
    pub key: String,
    pub name: String,
    pub expiry: Option<Expiry>,
}

impl NewPool {
    pub fn new(key: &str, name: &str) -> Self {
        NewPool {
            key: key.to_string(),
            name: name.to_string(),
            expiry: None,
        }
    }

    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// When a code issued at `issued_at` expires.
    pub fn expires_at(&self, issued_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        expires_at(self.expiry, issued_at)
    }
}

/// When a code of a pool with `expiry`, issued at `issued_at`, expires.
pub fn expires_at(expiry: Option<Expiry>, issued_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match expiry? {
        Expiry::At(at) => Some(at),
        Expiry::AfterIssue(d) => issued_at.checked_add_signed(d),
    }
}

/// What adding codes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddReport {
    pub added: u64,
    /// Codes the store already held (in any pool), or repeated in the list given.
    pub skipped: u64,
}

/// A code as issued to a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCode {
    pub code: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a redemption was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No pool holds the code.
    UnknownCode,
    /// The code exists but was never issued.
    NotIssued,
    /// The code was issued to someone else.
    IssuedToAnother,
    /// The code expired at this time.
    Expired { at: DateTime<Utc> },
    /// Another order used the code.
    AlreadyRedeemed { order: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownCode => f.write_str("unknown code"),
            Refusal::NotIssued => f.write_str("code not issued"),
            Refusal::IssuedToAnother => f.write_str("code issued to another customer"),
            Refusal::Expired { at } => write!(f, "code expired at {}", at.to_rfc3339()),
            Refusal::AlreadyRedeemed { order } => write!(f, "code already redeemed by {order}"),
        }
    }
}

/// What a redemption did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// Recorded (or already recorded for this same order).
    Redeemed { pool: String, campaign: String },
    /// Not recorded, with the reason; the order stands regardless.
    Refused(Refusal),
}

/// A pool's codes by state, at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Not issued, and the pool not expired.
    pub available: u64,
    /// Issued, neither redeemed nor expired.
    pub issued: u64,
    pub redeemed: u64,
    /// Issued and expired unredeemed, or never issued from a pool past its fixed expiry.
    pub expired: u64,
}

/// One refused row of a code list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// 1-based: the line of a CSV file (header included), or the position in a list.
    pub row: u64,
    pub reason: String,
}

/// A code list refused as a whole, with every bad row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CodeListError {
    pub problems: Vec<RowProblem>,
}

impl fmt::Display for CodeListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A bad file can have a million bad rows; the first few tell the user what is wrong.
        const SHOWN: usize = 20;
        write!(f, "code list refused: ")?;
        for (i, p) in self.problems.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "row {}: {}", p.row, p.reason)?;
        }
        if self.problems.len() > SHOWN {
            write!(f, "; and {} more", self.problems.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Why a pattern cannot generate codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern {0:?} has no `#` or `X` to vary")]
    NoPlaceholder(String),
    #[error("pattern {0:?} makes codes longer than {MAX_CODE_LEN} characters")]
    TooLong(String),
    #[error("pattern {0:?} may not contain whitespace or control characters")]
    Blank(String),
    #[error("pattern {pattern:?} has {capacity} codes in all; {count} asked")]
    TooSmall {
        pattern: String,
        capacity: u128,
        count: u64,
    },
    #[error("pattern {pattern:?} is used up in this store after {added} new codes")]
    Crowded { pattern: String, added: u64 },
}

/// Why a coupon store call failed.
#[derive(Debug, thiserror::Error)]
pub enum CouponError {
    #[error("coupon storage: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("coupon data is unreadable: {0}")]
    Unreadable(String),
    #[error("no coupon pool {0:?}")]
    UnknownPool(String),
    #[error("coupon pool {0:?} already exists")]
    PoolExists(String),
    #[error("a coupon pool's key may not be empty")]
    EmptyPoolKey,
    #[error("coupon pool {pool:?} expired at {}", at.to_rfc3339())]
    PoolExpired { pool: String, at: DateTime<Utc> },
    /// The idempotency key already issued a code to another (pool, campaign, customer): a
    /// caller's bug, as keys name one step of one entry.
    #[error("idempotency key {0:?} already issued a code for another customer or campaign")]
    KeyReused(String),
    #[error(transparent)]
    Codes(#[from] CodeListError),
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

/// Why a code is unacceptable, if it is.
pub fn code_problem(code: &str) -> Option<String> {
    let len = code.chars().count();
    if len == 0 {
        Some("empty code".into())
    } else if len > MAX_CODE_LEN {
        Some(format!("code of {len} characters (at most {MAX_CODE_LEN})"))
    } else if code.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(format!(
            "code {code:?} contains a blank or control character"
        ))
    } else {
        None
    }
}

/// Checks a list of codes given directly (positions are the rows). Repeats are not problems here:
/// [`CouponStore::add_codes`] counts them as skipped.
pub fn check_codes(codes: &[String]) -> Result<(), CodeListError> {
    let problems: Vec<RowProblem> = codes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            code_problem(c).map(|reason| RowProblem {
                row: i as u64 + 1,
                reason,
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CodeListError { problems })
    }
}

/// Reads codes from a CSV file: one column without a header, or a header with a `code` column
/// (any case). Codes are trimmed; a file with bad rows (empty, over-long, blank inside, repeated)
/// is refused with each row's line number.
pub fn parse_csv(input: &[u8]) -> Result<Vec<String>, CodeListError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut codes = Vec::new();
    let mut problems = Vec::new();
    let mut first_row: HashMap<String, u64> = HashMap::new();
    // `None` until the first record says whether it is a header.
    let mut column: Option<usize> = None;
    let mut headed = false;
    for (i, record) in reader.records().enumerate() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let row = e.position().map_or(i as u64 + 1, |p| p.line());
                problems.push(RowProblem {
                    row,
                    reason: format!("unreadable: {e}"),
                });
                continue;
            }
        };
        let row = record.position().map_or(i as u64 + 1, |p| p.line());
        if column.is_none() {
            // Spreadsheet exports often begin with a byte order mark.
            let header = record.iter().position(|f| {
                f.trim()
                    .trim_start_matches('\u{feff}')
                    .eq_ignore_ascii_case("code")
            });
            column = Some(header.unwrap_or(0));
            if header.is_some() {
                headed = true;
                continue;
            }
        }
        let col = column.unwrap_or(0);
        if !headed && record.len() > 1 {
            problems.push(RowProblem {
                row,
                reason: format!(
                    "{} columns: a file without a header has one column (or name it `code`)",
                    record.len()
                ),
            });
            continue;
        }
        let raw = record.get(col).unwrap_or("");
        let code = if row == 1 {
            raw.trim_start_matches('\u{feff}').trim()
        } else {
            raw.trim()
        };
        if let Some(reason) = code_problem(code) {
            problems.push(RowProblem { row, reason });
            continue;
        }
        if let Some(first) = first_row.get(code) {
            problems.push(RowProblem {
                row,
                reason: format!("code {code:?} repeats row {first}"),
            });
            continue;
        }
        first_row.insert(code.to_string(), row);
        codes.push(code.to_string());
    }
    if problems.is_empty() {
        Ok(codes)
    } else {
        Err(CodeListError { problems })
    }
}

/// Digits a `#` stands for.
const DIGITS: &[u8] = b"0123456789";
/// Letters an `X` stands for: uppercase without I, L and O, which customers read as 1 and 0.
pub const LETTERS: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Literal(char),
    Digit,
    Letter,
}

/// A pattern codes are generated from: `#` is a digit, `X` an uppercase letter other than I, L
/// and O; any other character stands for itself (so a pattern cannot contain a literal `X`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePattern {
    text: String,
    parts: Vec<Part>,
}

impl CodePattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let parts: Vec<Part> = pattern
            .chars()
            .map(|c| match c {
                '#' => Part::Digit,
                'X' => Part::Letter,
                c => Part::Literal(c),
            })
            .collect();
        if !parts.iter().any(|p| !matches!(p, Part::Literal(_))) {
            return Err(PatternError::NoPlaceholder(pattern.to_string()));
        }
        if parts.len() > MAX_CODE_LEN {
            return Err(PatternError::TooLong(pattern.to_string()));
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::Blank(pattern.to_string()));
        }
        Ok(CodePattern {
            text: pattern.to_string(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// How many distinct codes the pattern makes (saturating).
    pub fn capacity(&self) -> u128 {
        self.parts.iter().fold(1u128, |n, p| match p {
            Part::Literal(_) => n,
            Part::Digit => n.saturating_mul(DIGITS.len() as u128),
            Part::Letter => n.saturating_mul(LETTERS.len() as u128),
        })
    }

    /// One code drawn at random.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(c) => *c,
                Part::Digit => char::from(DIGITS[rng.random_range(0..DIGITS.len())]),
                Part::Letter => char::from(LETTERS[rng.random_range(0..LETTERS.len())]),
            })
            .collect()
    }

    /// Whether `code` is one the pattern can make.
    pub fn matches(&self, code: &str) -> bool {
        let mut chars = code.chars();
        self.parts.iter().all(|p| {
            chars.next().is_some_and(|c| match p {
                Part::Literal(l) => c == *l,
                Part::Digit => c.is_ascii_digit(),
                Part::Letter => c.is_ascii() && LETTERS.contains(&(c as u8)),
            })
        }) && chars.next().is_none()
    }
}

/// Coupon pools, their codes, issues and redemptions. Used from one thread at a time
/// (`&mut self`), as the engine's loop owns it.
pub trait CouponStore {
    /// Creates a pool; [`CouponError::PoolExists`] if its key is taken.
    fn create_pool(&mut self, pool: &NewPool) -> Result<(), CouponError>;

    fn pool(&mut self, key: &str) -> Result<Option<NewPool>, CouponError>;

    /// Adds codes (checked with [`check_codes`]: one bad code refuses them all); codes the store
    /// already holds, in any pool, are skipped and counted.
    fn add_codes(&mut self, pool: &str, codes: &[String]) -> Result<AddReport, CouponError>;

    /// The customer's code for the campaign: the one issued before, or an available one, marked
    /// issued in one commit. `Ok(None)` when the pool has no code left. A pool past its fixed
    /// expiry issues nothing new ([`CouponError::PoolExpired`]) but still returns codes already
    /// issued. `key` is the step's idempotency key, recorded with the issue.
    fn issue(
        &mut self,
        pool: &str,
        campaign: &str,
        customer: CustomerId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IssuedCode>, CouponError>;

    /// Records that `order` used `code`, or says why not (see [`Redemption`]). The code is
    /// matched exactly after trimming.
    fn redeem(
        &mut self,
        code: &str,
        customer: CustomerId,
        order: &str,
        at: DateTime<Utc>,
    ) -> Result<Redemption, CouponError>;

    /// Customer `from` was merged into `into`: `from`'s codes become `into`'s, so that `into`
    /// redeems them and is given them again for their campaigns. Where `into` already held a
    /// code of the same pool and campaign, both codes stay good for `into` to redeem, and the
    /// campaign's code is `into`'s own. Returns how many codes moved.
    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<usize, CouponError>;

    /// The pool's codes by state at `now`.
    fn counts(&mut self, pool: &str, now: DateTime<Utc>) -> Result<PoolCounts, CouponError>;

    /// Generates `count` new codes from `pattern` into the pool, drawing again for codes the
    /// store already holds. Fails when the pattern cannot make that many new codes.
    fn generate_codes<R: Rng + ?Sized>(
        &mut self,
        pool: &str,
        pattern: &CodePattern,
        count: u64,
        rng: &mut R,
    ) -> Result<AddReport, CouponError>
    where
        Self: Sized,
    {
        if u128::from(count) > pattern.capacity() {
            return Err(PatternError::TooSmall {
                pattern: pattern.as_str().to_string(),
                capacity: pattern.capacity(),
                count,
            }
            .into());
        }
        // Batches bound memory for large counts; each batch is one `add_codes` call.
        const BATCH: u64 = 10_000;
        // Rounds in a row that add nothing: the pattern's codes are (nearly) all taken.
        const STALLS: u32 = 32;
        let mut report = AddReport::default();
        let mut stalls = 0;
        while report.added < count {
            let want = (count - report.added).min(BATCH) as usize;
            let mut seen = HashSet::with_capacity(want);
            let mut batch = Vec::with_capacity(want);
            // Bounded draws: a crowded small pattern would otherwise loop forever here.
            for _ in 0..want.saturating_mul(8).max(64) {
                if batch.len() == want {
                    break;
                }
                let code = pattern.sample(rng);
                if seen.insert(code.clone()) {
                    batch.push(code);
                }
            }
            let added = self.add_codes(pool, &batch)?;
            report.added += added.added;
            report.skipped += added.skipped;
            if added.added == 0 {
                stalls += 1;
                if stalls >= STALLS {
                    return Err(PatternError::Crowded {
                        pattern: pattern.as_str().to_string(),
                        added: report.added,
                    }
                    .into());
                }
            } else {
                stalls = 0;
            }
        }
        Ok(report)
    }
}

#[derive(Debug, Clone)]
struct MemoryIssue {
    campaign: String,
    customer: CustomerId,
    issued: IssuedCode,
}

#[derive(Debug, Clone)]
struct MemoryCode {
    pool: String,
    issue: Option<MemoryIssue>,
    /// (order, customer, at)
    redeemed: Option<(String, CustomerId, DateTime<Utc>)>,
}

/// Coupons in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct MemoryCoupons {
    pools: BTreeMap<String, NewPool>,
    codes: HashMap<String, MemoryCode>,
    /// Per pool, codes not yet issued, oldest first.
    available: HashMap<String, VecDeque<String>>,
    /// (pool, campaign, customer) → code.
    issued: HashMap<(String, String, CustomerId), String>,
    /// Idempotency key → (pool, campaign, customer).
    keys: HashMap<String, (String, String, CustomerId)>,
    /// Customers merged away → their survivor.
    merged: HashMap<CustomerId, CustomerId>,
}

/// The customer `customer` ends up as, following `merged_into` (which names the customer one
/// was merged into, if any) through every later merge: for [`CouponStore`] implementations.
/// A chain of merges is short; the bound only guards against a cycle in bad data.
pub fn survivor<E>(
    customer: CustomerId,
    mut merged_into: impl FnMut(CustomerId) -> Result<Option<CustomerId>, E>,
) -> Result<CustomerId, E> {
    let mut current = customer;
    for _ in 0..64 {
        match merged_into(current)? {
            Some(into) if into != current => current = into,
            _ => break,
        }
    }
    Ok(current)
}

impl CouponStore for MemoryCoupons {
    fn create_pool(&mut self, pool: &NewPool) -> Result<(), CouponError> {
        if pool.key.is_empty() {
            return Err(CouponError::EmptyPoolKey);
        }
        if self.pools.contains_key(&pool.key) {
            return Err(CouponError::PoolExists(pool.key.clone()));
        }
        self.pools.insert(pool.key.clone(), pool.clone());
        Ok(())
    }

    fn pool(&mut self, key: &str) -> Result<Option<NewPool>, CouponError> {
        Ok(self.pools.get(key).cloned())
    }

    fn add_codes(&mut self, pool: &str, codes: &[String]) -> Result<AddReport, CouponError> {
        if !self.pools.contains_key(pool) {
            return Err(CouponError::UnknownPool(pool.to_string()));
        }
        check_codes(codes)?;
        let mut report = AddReport::default();
        let available = self.available.entry(pool.to_string()).or_default();
        for code in codes {
            if self.codes.contains_key(code) {
                report.skipped += 1;
                continue;
            }
            self.codes.insert(
                code.clone(),
                MemoryCode {
                    pool: pool.to_string(),
                    issue: None,
                    redeemed: None,
                },
            );
            available.push_back(code.clone());
            report.added += 1;
        }
        Ok(report)
    }

    fn issue(
        &mut self,
        pool: &str,
        campaign: &str,
        customer: CustomerId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IssuedCode>, CouponError> {
        let Some(spec) = self.pools.get(pool) else {
            return Err(CouponError::UnknownPool(pool.to_string()));
        };
        let who = (pool.to_string(), campaign.to_string(), customer);
        if let Some(code) = self.issued.get(&who) {
            let issued = self
                .codes
                .get(code)
                .and_then(|c| c.issue.as_ref())
                .map(|i| i.issued.clone())
                .ok_or_else(|| CouponError::Unreadable(format!("issued code {code} lost")))?;
            return Ok(Some(issued));
        }
        if self.keys.get(key).is_some_and(|other| *other != who) {
            return Err(CouponError::KeyReused(key.to_string()));
        }
        if let Some(Expiry::At(at)) = spec.expiry
            && now >= at
        {
            return Err(CouponError::PoolExpired {
                pool: pool.to_string(),
                at,
            });
        }
        let expires_at = spec.expires_at(now);
        let Some(code) = self.available.get_mut(pool).and_then(|a| a.pop_front()) else {
            return Ok(None);
        };
        let issued = IssuedCode {
            code: code.clone(),
            issued_at: now,
            expires_at,
        };
        if let Some(c) = self.codes.get_mut(&code) {
            c.issue = Some(MemoryIssue {
                campaign: campaign.to_string(),
                customer,
                issued: issued.clone(),
            });
        }
        self.issued.insert(who.clone(), code);
        self.keys.insert(key.to_string(), who);
        Ok(Some(issued))
    }

    fn redeem(
        &mut self,
        code: &str,
        customer: CustomerId,
        order: &str,
        at: DateTime<Utc>,
    ) -> Result<Redemption, CouponError> {
        let Some(stored) = self.codes.get(code.trim()) else {
            return Ok(Redemption::Refused(Refusal::UnknownCode));
        };
        let Some(issue) = &stored.issue else {
            return Ok(Redemption::Refused(Refusal::NotIssued));
        };
        let redeemed = Redemption::Redeemed {
            pool: stored.pool.clone(),
            campaign: issue.campaign.clone(),
        };
        if let Some((by, _, _)) = &stored.redeemed {
            return Ok(if by == order {
                redeemed
            } else {
                Redemption::Refused(Refusal::AlreadyRedeemed { order: by.clone() })
            });
        }
        let holder = issue.customer;
        let expires_at = issue.issued.expires_at;
        let merged = &self.merged;
        let live = survivor(holder, |c| Ok::<_, CouponError>(merged.get(&c).copied()))?;
        if holder != customer && live != customer {
            return Ok(Redemption::Refused(Refusal::IssuedToAnother));
        }
        if let Some(expiry) = expires_at
            && at >= expiry
        {
            return Ok(Redemption::Refused(Refusal::Expired { at: expiry }));
        }
        if let Some(stored) = self.codes.get_mut(code.trim()) {
            stored.redeemed = Some((order.to_string(), customer, at));
        }
        Ok(redeemed)
    }

    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<usize, CouponError> {
        if from == into {
            return Ok(0);
        }
        self.merged.insert(from, into);
        let held: Vec<(String, String, CustomerId)> = self
            .issued
            .keys()
            .filter(|(_, _, c)| *c == from)
            .cloned()
            .collect();
        let mut moved = 0;
        for who in held {
            let target = (who.0.clone(), who.1.clone(), into);
            if self.issued.contains_key(&target) {
                continue;
            }
            if let Some(code) = self.issued.remove(&who) {
                if let Some(issue) = self.codes.get_mut(&code).and_then(|c| c.issue.as_mut()) {
                    issue.customer = into;
                }
                for owner in self.keys.values_mut().filter(|k| **k == who) {
                    *owner = target.clone();
                }
                self.issued.insert(target, code);
                moved += 1;
            }
        }
        Ok(moved)
    }

    fn counts(&mut self, pool: &str, now: DateTime<Utc>) -> Result<PoolCounts, CouponError> {
        let Some(spec) = self.pools.get(pool) else {
            return Err(CouponError::UnknownPool(pool.to_string()));
        };
        let pool_expired = matches!(spec.expiry, Some(Expiry::At(at)) if now >= at);
        let mut counts = PoolCounts::default();
        for c in self.codes.values().filter(|c| c.pool == pool) {
            match (&c.issue, &c.redeemed) {
                (_, Some(_)) => counts.redeemed += 1,
                (None, None) if pool_expired => counts.expired += 1,
                (None, None) => counts.available += 1,
                (Some(i), None) if i.issued.expires_at.is_some_and(|e| now >= e) => {
                    counts.expired += 1
                }
                (Some(_), None) => counts.issued += 1,
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    fn with_coupons(test: impl crate::coupon_conformance::CouponTest) {
        test.run(&mut crate::coupon::MemoryCoupons::default());
    }
    crate::coupon_store_conformance_suite!(with_coupons);
}
