//! Segments and tags: stored definitions, current members, and the history of entries and exits.
//!
//! A tag is a segment shown as a label on profiles; both use the same condition language and the
//! same machinery. Membership changes in two ways, and both end in [`Segments::apply_members`] or
//! the real-time engine writing the same tables:
//!
//! - in real time, per customer, as events are processed (`cohort_segment::realtime`, over
//!   [`crate::SqliteMemberships`]);
//! - in batch, when a definition is created or changed, or when time alone can change membership
//!   (the server compiles the condition to SQL and hands the member set here).
//!
//! Every entry and exit is a row in `membership_events` with an increasing ID, the feed that
//! journeys follow.

use crate::StoreError;
use crate::time::{from_micros, to_micros};
use chrono::{DateTime, Utc};
use cohort_core::{CustomerId, Position};
use cohort_segment::{Condition, evaluation_order, referenced_segments};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;

/// Longest segment or tag name.
pub const MAX_NAME: usize = 120;

/// What a definition is shown as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentKind {
    Segment,
    Tag,
}

impl SegmentKind {
    fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Segment => "segment",
            SegmentKind::Tag => "tag",
        }
    }

    fn parse(s: &str) -> SegmentKind {
        if s == "tag" {
            SegmentKind::Tag
        } else {
            SegmentKind::Segment
        }
    }
}

/// A stored segment or tag.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentDef {
    pub id: i64,
    pub name: String,
    pub kind: SegmentKind,
    pub description: String,
    pub condition: Condition,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every update.
    pub version: i64,
    /// Why the definition is quarantined: its evaluation failed, or twice did not finish. A
    /// quarantined definition is not evaluated in batch until it is updated or refreshed by hand.
    pub failure: Option<String>,
}

/// Evaluations of one definition that began and never ended after which it is quarantined at
/// start: one may be a restart at the wrong moment; two in a row mean it takes the process down.
pub const UNFINISHED_EVALUATIONS_BEFORE_QUARANTINE: i64 = 2;

/// A definition to create or replace.
#[derive(Debug, Clone)]
pub struct NewSegment {
    pub name: String,
    pub kind: SegmentKind,
    pub description: String,
    pub condition: Condition,
}

/// A current member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub customer_id: CustomerId,
    pub entered_at: DateTime<Utc>,
}

/// One entry into or exit from a segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MembershipChange {
    /// Increasing: the cursor of the change feed.
    pub id: i64,
    pub segment: String,
    pub kind: SegmentKind,
    pub customer_id: CustomerId,
    /// `entered` or `exited`.
    pub change: &'static str,
    pub at: DateTime<Utc>,
    /// What caused it: `event` (real time), `definition` (created or changed), `time` (a window
    /// moved), `merge` (the customer was merged into another) or `deleted`.
    pub reason: String,
}

/// A row of the SQL `memberships` table.
#[derive(Debug, Clone)]
pub struct MembershipRow {
    pub segment: String,
    pub customer_id: CustomerId,
    pub entered_at: DateTime<Utc>,
}

/// How a batch evaluation changed a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MembershipDiff {
    pub entered: usize,
    pub exited: usize,
    pub members: usize,
}

/// Segment definitions and memberships in `state.db`.
pub struct Segments {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "id, name, kind, description, condition, created_at, updated_at, version, \
     failure FROM segments";

impl Segments {
    pub(crate) fn new(conn: Connection) -> Self {
        Self {
            conn: Mutex::new(conn),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn)
    }

    /// Creates a definition. Its members are empty until a batch evaluation fills them.
    pub fn create(&self, new: &NewSegment) -> Result<SegmentDef, StoreError> {
        check_name(&new.name)?;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let def = insert_definition(&tx, new)?;
            tx.commit()?;
            Ok(def)
        })
    }

    /// Creates several definitions in one commit (one disk flush instead of one each), in order,
    /// so a definition may refer to one created before it. Each answer is that definition's own:
    /// a refused one leaves the others standing.
    pub fn create_many(
        &self,
        news: &[NewSegment],
    ) -> Result<Vec<Result<SegmentDef, StoreError>>, StoreError> {
        self.with(|conn| {
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut answers = Vec::with_capacity(news.len());
            for new in news {
                let answer = check_name(&new.name).and_then(|()| {
                    let one = tx.savepoint()?;
                    let def = insert_definition(&one, new)?;
                    one.commit()?;
                    Ok(def)
                });
                answers.push(answer);
            }
            tx.commit()?;
            Ok(answers)
        })
    }

    /// Replaces the description and condition of a definition; the caller re-evaluates it.
    pub fn update(
        &self,
        name: &str,
        description: Option<&str>,
        condition: Option<&Condition>,
    ) -> Result<SegmentDef, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = find(&tx, name)?
                .ok_or_else(|| StoreError::NotFound(format!("segment {name:?}")))?;
            let condition = condition.unwrap_or(&current.condition);
            check_references(&tx, name, condition)?;
            // A new version is a new chance: the quarantine is lifted.
            tx.execute(
                "UPDATE segments SET description = ?2, condition = ?3, updated_at = ?4,
                        version = version + 1, failure = NULL, unfinished = 0 WHERE id = ?1",
                params![
                    current.id,
                    description.unwrap_or(&current.description),
                    condition_text(condition)?,
                    to_micros(Utc::now())
                ],
            )?;
            let def = find(&tx, name)?
                .ok_or_else(|| StoreError::Corrupt("a segment vanished while updated".into()))?;
            tx.commit()?;
            Ok(def)
        })
    }

    /// Records, durably, that an evaluation of `id` begins; [`Segments::end_evaluation`] closes
    /// it. One that never closes was cut short, perhaps by the evaluation itself.
    pub fn begin_evaluation(&self, id: i64) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE segments SET unfinished = unfinished + 1 WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
    }

    /// Closes an evaluation of `id`: a `failure` quarantines the definition with that reason,
    /// success lifts any quarantine.
    pub fn end_evaluation(&self, id: i64, failure: Option<&str>) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE segments SET unfinished = 0, failure = ?2 WHERE id = ?1",
                params![id, failure],
            )?;
            Ok(())
        })
    }

    /// Quarantines the definitions whose last [`UNFINISHED_EVALUATIONS_BEFORE_QUARANTINE`]
    /// evaluations never ended; returns their names. Run at start, before any evaluation.
    pub fn quarantine_unfinished(&self) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "UPDATE segments SET failure = ?2, unfinished = 0
                 WHERE unfinished >= ?1 RETURNING name",
            )?;
            let reason = format!(
                "its last {UNFINISHED_EVALUATIONS_BEFORE_QUARANTINE} evaluations never finished: \
                 the process stopped while evaluating it, perhaps because of it; update the \
                 definition or refresh it by hand to evaluate it again"
            );
            let names = stmt
                .query_map(
                    params![UNFINISHED_EVALUATIONS_BEFORE_QUARANTINE, reason],
                    |r| r.get(0),
                )?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(names)
        })
    }

    /// Deletes a definition; its members exit with reason `deleted`.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let def =
                find(&tx, name)?.ok_or_else(|| StoreError::NotFound(format!("segment {name:?}")))?;
            let users: Vec<String> = all(&tx)?
                .into_iter()
                .filter(|d| referenced_segments(&d.condition).contains(name))
                .map(|d| d.name)
                .collect();
            if !users.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "segment {name:?} is used by {}; change those first",
                    users.join(", ")
                )));
            }
            let now = to_micros(Utc::now());
            tx.execute(
                "INSERT INTO membership_events (segment_id, customer_id, entered, at, reason)
                 SELECT segment_id, customer_id, 0, ?2, 'deleted' FROM memberships WHERE segment_id = ?1",
                params![def.id, now],
            )?;
            tx.execute("DELETE FROM memberships WHERE segment_id = ?1", [def.id])?;
            tx.execute("DELETE FROM segments WHERE id = ?1", [def.id])?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn get(&self, name: &str) -> Result<SegmentDef, StoreError> {
        self.with(|conn| {
            find(conn, name)?.ok_or_else(|| StoreError::NotFound(format!("segment {name:?}")))
        })
    }

    /// Every definition, by name, with its member count.
    pub fn list(&self, kind: Option<SegmentKind>) -> Result<Vec<(SegmentDef, i64)>, StoreError> {
        self.with(|conn| {
            let counts: BTreeMap<i64, i64> = {
                let mut stmt = conn.prepare_cached(
                    "SELECT segment_id, COUNT(*) FROM memberships GROUP BY segment_id",
                )?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            Ok(all(conn)?
                .into_iter()
                .filter(|d| kind.is_none_or(|k| d.kind == k))
                .map(|d| {
                    let n = counts.get(&d.id).copied().unwrap_or(0);
                    (d, n)
                })
                .collect())
        })
    }

    /// Definitions in evaluation order: every segment after the segments it refers to.
    pub fn ordered(&self) -> Result<Vec<SegmentDef>, StoreError> {
        self.with(|conn| Ok(evaluation_order(all(conn)?, |d| &d.name, |d| &d.condition)))
    }

    /// Members by ascending customer ID, after `after`.
    pub fn members(
        &self,
        segment_id: i64,
        after: CustomerId,
        limit: usize,
    ) -> Result<Vec<Member>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT customer_id, entered_at FROM memberships
                 WHERE segment_id = ?1 AND customer_id > ?2 ORDER BY customer_id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![segment_id, after, limit as i64], |r| {
                Ok(Member {
                    customer_id: r.get(0)?,
                    entered_at: from_micros(r.get(1)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The identifier values of kind `kind` that the segment's members have, at most `limit`:
    /// the saved group a flag's segment targeting becomes for SDKs that match on that kind.
    pub fn member_identifiers(
        &self,
        segment_id: i64,
        kinds: &[&str],
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut values = Vec::new();
            for kind in kinds {
                let mut stmt = conn.prepare_cached(
                    "SELECT i.value FROM memberships m JOIN identities i
                       ON i.customer_id = m.customer_id AND i.kind = ?2
                     WHERE m.segment_id = ?1 ORDER BY i.value LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![segment_id, kind, limit as i64], |r| r.get(0))?;
                for row in rows {
                    values.push(row?);
                }
            }
            values.truncate(limit);
            Ok(values)
        })
    }

    pub fn member_count(&self, segment_id: i64) -> Result<i64, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM memberships WHERE segment_id = ?1")?
                .query_row([segment_id], |r| r.get(0))?)
        })
    }

    /// The segments and tags a customer is in now.
    pub fn of_customer(
        &self,
        customer: CustomerId,
    ) -> Result<Vec<(String, SegmentKind, DateTime<Utc>)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT s.name, s.kind, m.entered_at FROM memberships m
                 JOIN segments s ON s.id = m.segment_id WHERE m.customer_id = ?1 ORDER BY s.name",
            )?;
            let rows = stmt.query_map([customer], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    SegmentKind::parse(&r.get::<_, String>(1)?),
                    from_micros(r.get(2)?),
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Entries and exits after change `after`, oldest first, optionally of one segment or one
    /// customer.
    pub fn changes(
        &self,
        after: i64,
        segment_id: Option<i64>,
        customer: Option<CustomerId>,
        limit: usize,
    ) -> Result<Vec<MembershipChange>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT e.id, s.name, s.kind, e.customer_id, e.entered, e.at, e.reason
                 FROM membership_events e LEFT JOIN segments s ON s.id = e.segment_id
                 WHERE e.id > ?1 AND (?2 IS NULL OR e.segment_id = ?2)
                   AND (?3 IS NULL OR e.customer_id = ?3)
                 ORDER BY e.id LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![after, segment_id, customer, limit as i64], |r| {
                Ok(MembershipChange {
                    id: r.get(0)?,
                    segment: r
                        .get::<_, Option<String>>(1)?
                        .unwrap_or_else(|| "(deleted)".into()),
                    kind: SegmentKind::parse(&r.get::<_, Option<String>>(2)?.unwrap_or_default()),
                    customer_id: r.get(3)?,
                    change: if r.get::<_, i64>(4)? != 0 {
                        "entered"
                    } else {
                        "exited"
                    },
                    at: from_micros(r.get(5)?),
                    reason: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The inbox position up to which real-time membership has been decided.
    pub fn evaluated(&self) -> Result<Position, StoreError> {
        self.with(|conn| {
            Ok(Position::new(
                0,
                conn.prepare_cached("SELECT value FROM meta WHERE key = 'segments_seq'")?
                    .query_row([], |r| r.get(0))?,
            ))
        })
    }

    /// Customers queued for real-time re-evaluation.
    pub fn pending_count(&self) -> Result<i64, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM segment_pending")?
                .query_row([], |r| r.get(0))?)
        })
    }

    /// The newest membership change's ID (0 before any).
    pub fn last_change_id(&self) -> Result<i64, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM membership_events")?
                .query_row([], |r| r.get(0))?)
        })
    }

    /// Makes `members`, a batch evaluation started when the newest change was `watermark`, the
    /// segment's members, recording who entered and who left.
    ///
    /// Real-time evaluation may have decided a customer since the batch read its data; such a
    /// customer (one with a change of this segment after `watermark`) keeps the newer decision.
    /// Customers merged away since are left out. Every customer whose membership changed here is
    /// queued for real-time re-evaluation, which settles any event the batch did not see.
    pub fn apply_members(
        &self,
        segment_id: i64,
        members: &HashSet<CustomerId>,
        reason: &str,
        watermark: i64,
    ) -> Result<MembershipDiff, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: HashSet<CustomerId> = {
                let mut stmt =
                    tx.prepare_cached("SELECT customer_id FROM memberships WHERE segment_id = ?1")?;
                stmt.query_map([segment_id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            let decided_since: HashSet<CustomerId> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT customer_id FROM membership_events WHERE segment_id = ?1 AND id > ?2",
                )?;
                stmt.query_map(params![segment_id, watermark], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            let now = to_micros(Utc::now());
            let mut diff = MembershipDiff::default();
            let mut changed = Vec::new();
            for &c in current.difference(members) {
                if !decided_since.contains(&c) {
                    record(&tx, segment_id, c, false, now, reason)?;
                    changed.push(c);
                    diff.exited += 1;
                }
            }
            {
                let mut live = tx.prepare_cached(
                    "SELECT 1 FROM customers WHERE id = ?1 AND merged_into IS NULL",
                )?;
                for &c in members.difference(&current) {
                    if !decided_since.contains(&c) && live.exists([c])? {
                        record(&tx, segment_id, c, true, now, reason)?;
                        changed.push(c);
                        diff.entered += 1;
                    }
                }
                let mut pending = tx.prepare_cached(
                    "INSERT OR IGNORE INTO segment_pending (customer_id) VALUES (?1)",
                )?;
                for c in &changed {
                    pending.execute([c])?;
                }
            }
            diff.members = current.len() + diff.entered - diff.exited;
            tx.commit()?;
            Ok(diff)
        })
    }

    /// Asks the real-time engine to re-evaluate these customers (after traits were changed
    /// outside event processing, for example by an RFM run).
    pub fn mark_pending(&self, customers: &[CustomerId]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO segment_pending (customer_id) VALUES (?1)",
                )?;
                for c in customers {
                    stmt.execute([c])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Every current membership, for the SQL `memberships` table.
    pub fn membership_rows(&self) -> Result<Vec<MembershipRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT s.name, m.customer_id, m.entered_at FROM memberships m
                 JOIN segments s ON s.id = m.segment_id ORDER BY s.name, m.customer_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(MembershipRow {
                    segment: r.get(0)?,
                    customer_id: r.get(1)?,
                    entered_at: from_micros(r.get(2)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// Adds or removes one membership and records the change.
pub(crate) fn record(
    tx: &Transaction<'_>,
    segment_id: i64,
    customer: CustomerId,
    entered: bool,
    at: i64,
    reason: &str,
) -> rusqlite::Result<()> {
    if entered {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO memberships (segment_id, customer_id, entered_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![segment_id, customer, at])?;
    } else {
        tx.prepare_cached("DELETE FROM memberships WHERE segment_id = ?1 AND customer_id = ?2")?
            .execute(params![segment_id, customer])?;
    }
    tx.prepare_cached(
        "INSERT INTO membership_events (segment_id, customer_id, entered, at, reason)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![segment_id, customer, entered, at, reason])?;
    Ok(())
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed != name {
        return Err(StoreError::Invalid(
            "name: must be non-empty with no leading or trailing spaces".into(),
        ));
    }
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "name: at most {MAX_NAME} characters, no control characters"
        )));
    }
    Ok(())
}

fn condition_text(condition: &Condition) -> Result<String, StoreError> {
    condition
        .validate()
        .map_err(|e| StoreError::Invalid(format!("condition.{e}")))?;
    serde_json::to_string(condition).map_err(|e| StoreError::Invalid(format!("condition: {e}")))
}

/// Inserts one definition inside the caller's transaction, refusing a taken name and references
/// to unknown segments or cycles.
fn insert_definition(conn: &Connection, new: &NewSegment) -> Result<SegmentDef, StoreError> {
    if find(conn, &new.name)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "{} {:?}",
            new.kind.as_str(),
            new.name
        )));
    }
    check_references(conn, &new.name, &new.condition)?;
    let now = to_micros(Utc::now());
    conn.execute(
        "INSERT INTO segments (name, kind, description, condition, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![
            new.name,
            new.kind.as_str(),
            new.description,
            condition_text(&new.condition)?,
            now
        ],
    )?;
    find(conn, &new.name)?
        .ok_or_else(|| StoreError::Corrupt("a segment vanished while created".into()))
}

/// Every `in_segment` must name an existing segment, and no chain of references may lead back to
/// `name` (the real-time engine evaluates segments after those they refer to).
fn check_references(
    conn: &Connection,
    name: &str,
    condition: &Condition,
) -> Result<(), StoreError> {
    let defs = all(conn)?;
    let known: BTreeMap<&str, &SegmentDef> = defs.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut stack: Vec<String> = referenced_segments(condition).into_iter().collect();
    let mut seen = BTreeSet::new();
    while let Some(next) = stack.pop() {
        if next == name {
            return Err(StoreError::Invalid(format!(
                "condition: segment {name:?} would refer to itself through in_segment"
            )));
        }
        if !seen.insert(next.clone()) {
            continue;
        }
        let Some(def) = known.get(next.as_str()) else {
            return Err(StoreError::Invalid(format!(
                "condition: in_segment names {next:?}, which does not exist"
            )));
        };
        stack.extend(referenced_segments(&def.condition));
    }
    Ok(())
}

fn find(conn: &Connection, name: &str) -> Result<Option<SegmentDef>, StoreError> {
    let row = conn
        .prepare_cached(&format!("SELECT {COLUMNS} WHERE name = ?1"))?
        .query_row([name], raw_def)
        .optional()?;
    row.map(parse_def).transpose()
}

pub(crate) fn all(conn: &Connection) -> Result<Vec<SegmentDef>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} ORDER BY name"))?;
    let rows = stmt.query_map([], raw_def)?;
    rows.map(|r| parse_def(r?)).collect()
}

type RawDef = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
);

fn raw_def(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDef> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn parse_def(
    (id, name, kind, description, condition, created, updated, version, failure): RawDef,
) -> Result<SegmentDef, StoreError> {
    let condition = Condition::from_stored_json(&condition)
        .map_err(|e| StoreError::Corrupt(format!("segment {name:?}: {e}")))?;
    Ok(SegmentDef {
        id,
        name,
        kind: SegmentKind::parse(&kind),
        description,
        condition,
        created_at: from_micros(created),
        updated_at: from_micros(updated),
        version,
        failure,
    })
}
