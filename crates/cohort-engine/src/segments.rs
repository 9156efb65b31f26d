//! Segments in batch: a condition compiled to SQL and run over the lake and the state tables,
//! to fill a segment when it is created or changed, to preview a condition, to export members,
//! and to re-evaluate on a schedule the segments whose membership moves with time alone.
//!
//! Real-time membership is the other half: the real-time engine re-decides customers as their
//! events are processed, with the same condition evaluated in memory.

use crate::analytics::Analytics;
use crate::{Engine, EngineError, blocking};
use chrono::{DateTime, Utc};
use cohort_core::Inbox as _;
use cohort_lake::arrow::array::{Array, Int64Array};
use cohort_lake::{LakeError, QueryOptions, QueryResult};
use cohort_segment::{Condition, TimeUnit, time_unit, to_sql};
use cohort_store::{MembershipDiff, NewSegment, SegmentDef, SegmentKind, Store};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Batch evaluations may scan everything; they get more time than an interactive query.
const BATCH_TIMEOUT: Duration = Duration::from_secs(600);
/// A row limit no member list reaches (SQL limits are signed 64-bit, so not `usize::MAX`).
pub const ALL_ROWS: usize = 1 << 40;

/// The `events` table of `cohort_segment::to_sql`'s contract, over the lake's `events` view
/// (which already maps merged customers): the UTC timestamps as stored (a cast here would run on
/// every row scanned; the compiled literals are converted once instead), the promoted columns.
pub const EVENTS_FOR_SEGMENTS: &str = "SELECT customer_id, event AS name, \
     \"timestamp\", date, properties, revenue, price, currency, category \
     FROM events WHERE customer_id IS NOT NULL";

/// The customers matching `condition` at `now`, by one SQL query over the lake and the state
/// tables. The query sees the events processed so far, as real-time evaluation does.
async fn batch_members(
    analytics: &Analytics,
    condition: &Condition,
    now: DateTime<Utc>,
) -> Result<HashSet<i64>, LakeError> {
    members_by_sql(analytics, condition, now, Urgency::Waited).await
}

/// Whether somebody waits for an evaluation, which then may use every core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Urgency {
    Waited,
    Background,
}

/// The SQL that lists the members of `condition` at `now`, as every batch evaluation runs it.
pub fn membership_sql(condition: &Condition, now: DateTime<Utc>) -> Result<String, LakeError> {
    let inner = to_sql(condition, now).map_err(|e| LakeError::Query(format!("condition.{e}")))?;
    Ok(format!(
        "WITH events AS ({EVENTS_FOR_SEGMENTS}) \
         SELECT DISTINCT customer_id FROM ({inner}) AS members WHERE customer_id IS NOT NULL"
    ))
}

async fn members_by_sql(
    analytics: &Analytics,
    condition: &Condition,
    now: DateTime<Utc>,
    urgency: Urgency,
) -> Result<HashSet<i64>, LakeError> {
    let sql = membership_sql(condition, now)?;
    let opts = QueryOptions {
        timeout: BATCH_TIMEOUT,
        max_rows: ALL_ROWS,
        // One BIGINT per customer: a million members is 8 MB.
        max_bytes: usize::MAX,
    };
    let result = match urgency {
        Urgency::Waited => analytics.query(&sql, opts).await?,
        Urgency::Background => analytics.query_in_background(&sql, opts).await?,
    };
    let mut members = HashSet::with_capacity(result.num_rows());
    for batch in &result.batches {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| LakeError::Internal("segment query returned no BIGINT ids".into()))?;
        members.extend(ids.iter().flatten());
    }
    Ok(members)
}

/// Evaluates a stored segment in batch and makes the result its membership.
async fn refresh(
    analytics: &Analytics,
    store: &Store,
    def: &SegmentDef,
    reason: &'static str,
) -> Result<MembershipDiff, EngineError> {
    let watermark = last_change_id(store).await?;
    refresh_since(analytics, store, def, reason, watermark, Urgency::Waited).await
}

async fn last_change_id(store: &Store) -> Result<i64, EngineError> {
    let store = store.clone();
    blocking(move || Ok(store.segments().last_change_id()?)).await
}

/// [`refresh`] for an evaluation whose data was read after membership change `watermark`.
async fn refresh_since(
    analytics: &Analytics,
    store: &Store,
    def: &SegmentDef,
    reason: &'static str,
    watermark: i64,
    urgency: Urgency,
) -> Result<MembershipDiff, EngineError> {
    let id = def.id;
    {
        let store = store.clone();
        blocking(move || Ok(store.segments().begin_evaluation(id)?)).await?;
    }
    let members = match members_by_sql(analytics, &def.condition, Utc::now(), urgency).await {
        Ok(members) => members,
        Err(error) => {
            if caused_by_definition(&error) {
                quarantine(store, def, &error).await;
            } else {
                let store = store.clone();
                blocking(move || Ok(store.segments().end_evaluation(id, None)?)).await?;
            }
            return Err(EngineError::Evaluation {
                segment: def.name.clone(),
                error,
            });
        }
    };
    let store = store.clone();
    blocking(move || {
        let segments = store.segments();
        let diff = segments.apply_members(id, &members, reason, watermark)?;
        segments.end_evaluation(id, None)?;
        Ok(diff)
    })
    .await
}

/// Errors that the definition itself brings about (its SQL fails, or takes longer than any
/// evaluation may), as opposed to the lake being unavailable.
fn caused_by_definition(error: &LakeError) -> bool {
    matches!(error, LakeError::Query(_) | LakeError::Timeout(_))
}

/// Sets a definition aside with its reason, so that the time refresh stops retrying it.
async fn quarantine(store: &Store, def: &SegmentDef, error: &LakeError) {
    let reason = format!("evaluation failed: {error}");
    tracing::error!(segment = %def.name, %reason, "segment quarantined; update it or refresh it by hand");
    metrics::counter!("cohort_segments_quarantined_total").increment(1);
    let (store, id) = (store.clone(), def.id);
    let recorded = blocking(move || Ok(store.segments().end_evaluation(id, Some(&reason))?)).await;
    if let Err(e) = recorded {
        tracing::warn!(segment = %def.name, error = %e, "cannot record the quarantine");
    }
}

/// Quarantines the definitions whose evaluations keep taking the process down: run at start,
/// before the first evaluation, so that a definition cannot crash the server in a loop.
/// Also quarantines definitions saved before today's limits that exceed them.
pub(crate) fn quarantine_unfinished(store: &Store) -> Result<(), cohort_store::StoreError> {
    for name in store.segments().quarantine_unfinished()? {
        tracing::error!(segment = %name, "segment quarantined: its last evaluations never finished");
        metrics::counter!("cohort_segments_quarantined_total").increment(1);
    }
    for def in store.segments().ordered()? {
        if def.failure.is_some() {
            continue;
        }
        if let Err(e) = def.condition.validate() {
            let reason = format!("the definition exceeds the limits of this version: {e}");
            tracing::error!(segment = %def.name, %reason, "segment quarantined; update it");
            metrics::counter!("cohort_segments_quarantined_total").increment(1);
            store.segments().end_evaluation(def.id, Some(&reason))?;
        }
    }
    Ok(())
}

/// How often the time refresh re-evaluates a segment, by the unit its condition counts time in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshCadence {
    /// Hour windows and `not_followed_by` spans: every round of the refresh.
    pub hours: Duration,
    /// Day windows, day counts and the 30-day computed traits. Their membership moves by the day,
    /// and each evaluation scans the events, so on a large lake re-evaluating them every round
    /// would keep a core busy for little: an hour late is a twenty-fourth of their unit.
    pub days: Duration,
}

impl RefreshCadence {
    fn of(self, unit: TimeUnit) -> Duration {
        match unit {
            TimeUnit::Hours => self.hours,
            // Never more often than the rounds themselves come.
            TimeUnit::Days => self.days.max(self.hours),
        }
    }
}

/// The segments a refresh round at `now` re-evaluates, in evaluation order: those whose
/// condition moves with time and whose cadence has passed since they were last refreshed (or
/// were never refreshed by this process), and those that refer to a segment re-evaluated in the
/// same round.
fn due_for_refresh(
    defs: Vec<SegmentDef>,
    refreshed_at: &HashMap<i64, Instant>,
    now: Instant,
    cadence: RefreshCadence,
) -> Vec<SegmentDef> {
    let mut moving: BTreeSet<String> = BTreeSet::new();
    let mut due = Vec::new();
    for def in defs {
        let depends = cohort_segment::referenced_segments(&def.condition)
            .iter()
            .any(|s| moving.contains(s));
        let elapsed = time_unit(&def.condition).is_some_and(|unit| {
            refreshed_at
                .get(&def.id)
                .is_none_or(|&at| now.saturating_duration_since(at) >= cadence.of(unit))
        });
        if depends || elapsed {
            moving.insert(def.name.clone());
            due.push(def);
        }
    }
    due
}

/// Re-evaluates, on their cadence, the segments whose membership moves with time (and those
/// that refer to them), until the task is aborted.
pub(crate) async fn time_refresh(analytics: Arc<Analytics>, store: Store, cadence: RefreshCadence) {
    {
        let mut ticker = tokio::time::interval(cadence.hours);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut refreshed_at: HashMap<i64, Instant> = HashMap::new();
        loop {
            ticker.tick().await;
            let defs = {
                let store = store.clone();
                match blocking(move || Ok(store.segments().ordered()?)).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list segments to refresh");
                        continue;
                    }
                }
            };
            // Quarantined definitions wait for a person (see `quarantine`).
            let defs: Vec<SegmentDef> = defs.into_iter().filter(|d| d.failure.is_none()).collect();
            refreshed_at.retain(|id, _| defs.iter().any(|d| d.id == *id));
            let round_started = Instant::now();
            let due = due_for_refresh(defs, &refreshed_at, round_started, cadence);
            if due.is_empty() {
                continue;
            }
            // One read of the profile tables for the whole round, taken after the watermark so
            // that no real-time decision newer than the data is overridden.
            let watermark = match last_change_id(&store).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a segment refresh round");
                    continue;
                }
            };
            let pin = {
                let analytics = analytics.clone();
                match tokio::task::spawn_blocking(move || analytics.pin_profiles()).await {
                    Ok(Ok(pin)) => pin,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot read profiles for a segment refresh");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "segment refresh task failed");
                        continue;
                    }
                }
            };
            for def in due {
                match refresh_since(
                    &analytics,
                    &store,
                    &def,
                    "time",
                    watermark,
                    Urgency::Background,
                )
                .await
                {
                    Ok(diff) => {
                        // Timed from the round's start: the data it read is at least that old.
                        refreshed_at.insert(def.id, round_started);
                        if diff.entered + diff.exited > 0 {
                            tracing::info!(segment = %def.name, entered = diff.entered, exited = diff.exited, "segment refreshed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(segment = %def.name, error = %e, "segment refresh failed");
                    }
                }
            }
            drop(pin);
            metrics::counter!("cohort_segment_refresh_rounds_total").increment(1);
        }
    }
}

/// Stores the shipped tag definitions that are missing; returns those it created. The real-time
/// engine applies them to every customer whose events arrive from now on; [`fill`] evaluates
/// them over the data already there.
pub(crate) fn create_builtin_tags(
    store: &Store,
) -> Result<Vec<SegmentDef>, cohort_store::StoreError> {
    let existing: HashSet<String> = store
        .segments()
        .list(None)?
        .into_iter()
        .map(|(d, _)| d.name)
        .collect();
    let missing: Vec<NewSegment> = cohort_segment::tags::builtin_tags()
        .into_iter()
        .filter(|tag| !existing.contains(&tag.name))
        .map(|tag| NewSegment {
            name: tag.name,
            kind: SegmentKind::Tag,
            description: tag.description,
            condition: tag.condition,
        })
        .collect();
    let mut created = Vec::new();
    for (new, answer) in missing.iter().zip(store.segments().create_many(&missing)?) {
        match answer {
            Ok(def) => created.push(def),
            Err(e) => tracing::warn!(tag = %new.name, error = %e, "built-in tag refused"),
        }
    }
    if !created.is_empty() {
        tracing::info!(created = created.len(), "built-in tags installed");
    }
    Ok(created)
}

/// Evaluates new definitions over the data already stored, in dependency order.
pub(crate) async fn fill(analytics: &Analytics, store: &Store, defs: Vec<SegmentDef>) {
    let has_data = {
        let store = store.clone();
        blocking(move || Ok(!store.inbox().acknowledged().is_start()))
            .await
            .unwrap_or(true)
    };
    if !has_data {
        return;
    }
    for def in defs {
        if let Err(e) = refresh(analytics, store, &def, "definition").await {
            tracing::warn!(segment = %def.name, error = %e, "filling a segment failed");
        }
    }
}

/// Segment use cases.
impl Engine {
    /// Checks a condition as it arrived (JSON) and as it will run.
    pub fn parse_condition(&self, value: Value) -> Result<Condition, EngineError> {
        let invalid = |e| EngineError::bad_request("invalid_condition", format!("condition.{e}"));
        let condition = Condition::from_value(value).map_err(invalid)?;
        condition.validate().map_err(invalid)?;
        Ok(condition)
    }

    /// Stores a new segment or tag and fills it from the data so far.
    pub async fn create_segment(
        &self,
        new: NewSegment,
    ) -> Result<(SegmentDef, MembershipDiff), EngineError> {
        let analytics = self.lake()?.clone();
        let store = self.store().clone();
        let def = blocking(move || Ok(store.segments().create(&new)?)).await?;
        let diff = refresh(&analytics, self.store(), &def, "definition").await?;
        Ok((def, diff))
    }

    /// Changes a segment's description or condition; a new condition refills it.
    pub async fn update_segment(
        &self,
        name: String,
        description: Option<String>,
        condition: Option<Condition>,
    ) -> Result<(SegmentDef, MembershipDiff), EngineError> {
        let analytics = self.lake()?.clone();
        let store = self.store().clone();
        let def = blocking(move || {
            Ok(store
                .segments()
                .update(&name, description.as_deref(), condition.as_ref())?)
        })
        .await?;
        let diff = refresh(&analytics, self.store(), &def, "definition").await?;
        Ok((def, diff))
    }

    /// Evaluates a stored segment again now and makes the result its membership.
    pub async fn refresh_segment(
        &self,
        def: &SegmentDef,
        reason: &'static str,
    ) -> Result<MembershipDiff, EngineError> {
        refresh(self.lake()?, self.store(), def, reason).await
    }

    /// The customers a condition selects now, without storing anything.
    pub async fn preview_segment(
        &self,
        condition: &Condition,
    ) -> Result<HashSet<i64>, EngineError> {
        batch_members(self.lake()?, condition, Utc::now())
            .await
            .map_err(|error| EngineError::Evaluation {
                segment: "the condition".into(),
                error,
            })
    }

    /// A segment's members with the identifiers people export for, as one query result.
    pub async fn export_segment(
        &self,
        name: String,
    ) -> Result<(SegmentDef, QueryResult), EngineError> {
        let analytics = self.lake()?.clone();
        let store = self.store().clone();
        let def = blocking(move || Ok(store.segments().get(&name)?)).await?;
        let opts = QueryOptions {
            timeout: BATCH_TIMEOUT,
            max_rows: ALL_ROWS,
            // One BIGINT per customer: a million members is 8 MB.
            max_bytes: usize::MAX,
        };
        let result = analytics
            .query(&export_sql(&def.name), opts)
            .await
            .map_err(|error| EngineError::Evaluation {
                segment: def.name.clone(),
                error,
            })?;
        Ok((def, result))
    }
}

/// One row per member with the identifiers people export for: user ID, email, phone.
pub fn export_sql(segment: &str) -> String {
    let name = segment.replace('\'', "''");
    format!(
        "SELECT m.customer_id, m.entered_at, \
           MAX(CASE WHEN i.kind = 'user_id' THEN i.value END) AS user_id, \
           MAX(CASE WHEN i.kind = 'email' THEN i.value END) AS email, \
           MAX(CASE WHEN i.kind = 'phone' THEN i.value END) AS phone \
         FROM memberships m LEFT JOIN identities i ON i.customer_id = m.customer_id \
         WHERE m.segment = '{name}' \
         GROUP BY m.customer_id, m.entered_at ORDER BY m.customer_id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(id: i64, name: &str, condition: Value) -> SegmentDef {
        let condition = Condition::from_json(&condition.to_string()).expect("valid condition");
        SegmentDef {
            id,
            name: name.into(),
            kind: SegmentKind::Segment,
            description: String::new(),
            condition,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version: 1,
            failure: None,
        }
    }

    /// A segment of each unit, one that reads no clock, and one that refers to the day segment.
    fn defs() -> Vec<SegmentDef> {
        vec![
            def(
                1,
                "viewed-2h",
                json!({"type": "event", "name": "Viewed", "window": {"last_hours": 2}}),
            ),
            def(
                2,
                "active-30d",
                json!({"type": "event", "name": "Login", "window": {"last_days": 30}}),
            ),
            def(
                3,
                "big-spender",
                json!({"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5000}),
            ),
            def(
                4,
                "pro",
                json!({"type": "trait", "key": "plan", "op": "eq", "value": "pro"}),
            ),
            def(
                5,
                "active-pro",
                json!({"type": "and", "conditions": [
                    {"type": "in_segment", "segment": "active-30d"},
                    {"type": "in_segment", "segment": "pro"}]}),
            ),
        ]
    }

    fn names(due: &[SegmentDef]) -> Vec<&str> {
        due.iter().map(|d| d.name.as_str()).collect()
    }

    const CADENCE: RefreshCadence = RefreshCadence {
        hours: Duration::from_secs(60),
        days: Duration::from_secs(3600),
    };

    #[test]
    fn day_segments_wait_for_their_cadence_and_take_their_dependents_along() {
        let start = Instant::now();
        // Never refreshed by this process: everything that moves with time is due.
        let first = due_for_refresh(defs(), &HashMap::new(), start, CADENCE);
        assert_eq!(
            names(&first),
            ["viewed-2h", "active-30d", "big-spender", "active-pro"]
        );
        let refreshed: HashMap<i64, Instant> = first.iter().map(|d| (d.id, start)).collect();

        // A round later only the hour segment is due; nothing refers to it.
        let later = start + Duration::from_secs(61);
        assert_eq!(
            names(&due_for_refresh(defs(), &refreshed, later, CADENCE)),
            ["viewed-2h"]
        );

        // An hour later the day segments are due again, and so is the segment built on one.
        let hour_on = start + Duration::from_secs(3600);
        assert_eq!(
            names(&due_for_refresh(defs(), &refreshed, hour_on, CADENCE)),
            ["viewed-2h", "active-30d", "big-spender", "active-pro"]
        );
    }

    #[test]
    fn a_day_cadence_below_the_rounds_means_every_round() {
        let cadence = RefreshCadence {
            hours: Duration::from_secs(60),
            days: Duration::from_secs(1),
        };
        let start = Instant::now();
        let refreshed: HashMap<i64, Instant> = defs().iter().map(|d| (d.id, start)).collect();
        assert!(
            due_for_refresh(defs(), &refreshed, start + Duration::from_secs(30), cadence)
                .is_empty()
        );
        assert_eq!(
            due_for_refresh(defs(), &refreshed, start + Duration::from_secs(60), cadence).len(),
            4
        );
    }
}
