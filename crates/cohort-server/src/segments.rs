//! Segments and tags over HTTP, and their batch evaluation.
//!
//! Real-time membership is the store's job (it re-decides customers as their events are
//! processed). This module does the other half: it compiles a condition to SQL and runs it over
//! the lake and the state tables, to fill a segment when it is created or changed, to preview a
//! condition, and to re-evaluate segments whose membership moves with time alone.

use crate::admin::{blocking, json_body};
use crate::analytics::Analytics;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cohort_lake::arrow::array::{Array, Int64Array};
use cohort_lake::{LakeError, QueryOptions};
use cohort_segment::{COMPUTED_KEYS, Condition, TimeUnit, time_unit, to_sql};
use cohort_store::{MembershipDiff, NewSegment, SegmentDef, SegmentKind, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Batch evaluations may scan everything; they get more time than an interactive query.
const BATCH_TIMEOUT: Duration = Duration::from_secs(600);
/// A row limit no member list reaches (SQL limits are signed 64-bit, so not `usize::MAX`).
pub const ALL_ROWS: usize = 1 << 40;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/segments", get(list_segments).post(create_segment))
        .route("/segments/preview", post(preview))
        .route(
            "/segments/{name}",
            get(get_segment).put(update_segment).delete(delete_segment),
        )
        .route("/segments/{name}/members", get(members))
        .route("/segments/{name}/export", get(export))
        .route("/segments/{name}/changes", get(segment_changes))
        .route("/segment-changes", get(all_changes))
        .route("/tags", get(list_tags))
        .route("/tags/{name}/customers", get(members))
        .route("/profiles/{kind}/{value}/segments", get(profile_segments))
        .route("/profiles/{kind}/{value}/tags", get(profile_tags))
}

/// The `events` table of `cohort_segment::to_sql`'s contract, over the lake's `events` view
/// (which already maps merged customers): the UTC timestamps as stored (a cast here would run on
/// every row scanned; the compiled literals are converted once instead), the promoted columns.
pub const EVENTS_FOR_SEGMENTS: &str = "SELECT customer_id, event AS name, \
     \"timestamp\", date, properties, revenue, price, currency, category \
     FROM events WHERE customer_id IS NOT NULL";

/// The customers matching `condition` at `now`, by one SQL query over the lake and the state
/// tables. The query sees the events processed so far, as real-time evaluation does.
pub async fn batch_members(
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

async fn members_by_sql(
    analytics: &Analytics,
    condition: &Condition,
    now: DateTime<Utc>,
    urgency: Urgency,
) -> Result<HashSet<i64>, LakeError> {
    let inner = to_sql(condition, now).map_err(|e| LakeError::Query(format!("condition.{e}")))?;
    let sql = format!(
        "WITH events AS ({EVENTS_FOR_SEGMENTS}) \
         SELECT DISTINCT customer_id FROM ({inner}) AS members WHERE customer_id IS NOT NULL"
    );
    let opts = QueryOptions {
        timeout: BATCH_TIMEOUT,
        max_rows: ALL_ROWS,
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
pub async fn refresh(
    analytics: &Analytics,
    store: &Store,
    def: &SegmentDef,
    reason: &'static str,
) -> Result<MembershipDiff, ApiError> {
    let watermark = last_change_id(store).await?;
    refresh_since(analytics, store, def, reason, watermark, Urgency::Waited).await
}

async fn last_change_id(store: &Store) -> Result<i64, ApiError> {
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
) -> Result<MembershipDiff, ApiError> {
    let members = members_by_sql(analytics, &def.condition, Utc::now(), urgency)
        .await
        .map_err(|e| lake_error(&def.name, e))?;
    let store = store.clone();
    let id = def.id;
    blocking(move || {
        Ok(store
            .segments()
            .apply_members(id, &members, reason, watermark)?)
    })
    .await
}

/// Whether membership can change with time alone, so the periodic refresh must cover it:
/// relative windows, and the rolling computed traits (`revenue_30d`, `orders_30d`), which
/// depend on the current day.
pub fn moves_with_time(condition: &Condition) -> bool {
    time_step(condition).is_some()
}

/// The unit in which a condition's membership moves with time alone, if it does: the
/// condition's own ([`time_unit`]), or days for the rolling computed traits.
fn time_step(condition: &Condition) -> Option<TimeUnit> {
    let rolling = reads_rolling_traits(condition).then_some(TimeUnit::Days);
    time_unit(condition).into_iter().chain(rolling).min()
}

fn reads_rolling_traits(condition: &Condition) -> bool {
    match condition {
        Condition::Computed { key, .. } => key.ends_with("_30d"),
        other => other.children().iter().any(reads_rolling_traits),
    }
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
        let elapsed = time_step(&def.condition).is_some_and(|unit| {
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
/// that refer to them), until the store is dropped.
pub(crate) fn start_time_refresh(analytics: Arc<Analytics>, store: Store, cadence: RefreshCadence) {
    tokio::spawn(async move {
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
                        tracing::warn!(error = %e.message, "cannot list segments to refresh");
                        continue;
                    }
                }
            };
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
                    tracing::warn!(error = %e.message, "cannot start a segment refresh round");
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
                        tracing::warn!(segment = %def.name, error = %e.message, "segment refresh failed");
                    }
                }
            }
            drop(pin);
            metrics::counter!("cohort_segment_refresh_rounds_total").increment(1);
        }
    });
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
        blocking(move || Ok(store.applied_seq() > 0))
            .await
            .unwrap_or(true)
    };
    if !has_data {
        return;
    }
    for def in defs {
        if let Err(e) = refresh(analytics, store, &def, "definition").await {
            tracing::warn!(segment = %def.name, error = %e.message, "filling a segment failed");
        }
    }
}

fn analytics_of(state: &AppState) -> Result<Arc<Analytics>, ApiError> {
    state.0.analytics.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the SQL engine is not running",
        )
    })
}

fn lake_error(segment: &str, e: LakeError) -> ApiError {
    match e {
        LakeError::Timeout(t) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("evaluating {segment:?} took longer than {t:?}"),
        ),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "evaluation_failed",
            format!("evaluating {segment:?}: {other}"),
        ),
    }
}

fn parse_condition(value: Value) -> Result<Condition, ApiError> {
    let condition = Condition::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_condition", format!("condition.{e}")))?;
    condition
        .validate()
        .map_err(|e| ApiError::bad_request("invalid_condition", format!("condition.{e}")))?;
    Ok(condition)
}

#[derive(Serialize)]
struct SegmentView {
    #[serde(flatten)]
    def: SegmentDef,
    member_count: i64,
    /// Re-evaluated periodically because membership moves with time.
    refreshed_with_time: bool,
}

fn view(def: SegmentDef, member_count: i64) -> SegmentView {
    let refreshed_with_time = moves_with_time(&def.condition);
    SegmentView {
        def,
        member_count,
        refreshed_with_time,
    }
}

async fn list_of(state: &AppState, kind: SegmentKind) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let list = blocking(move || Ok(store.segments().list(Some(kind))?)).await?;
    let items: Vec<SegmentView> = list.into_iter().map(|(d, n)| view(d, n)).collect();
    let key = if kind == SegmentKind::Tag {
        "tags"
    } else {
        "segments"
    };
    Ok(Json(json!({ key: items })))
}

async fn list_segments(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    list_of(&state, SegmentKind::Segment).await
}

async fn list_tags(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    list_of(&state, SegmentKind::Tag).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    #[serde(default)]
    description: String,
    condition: Value,
    #[serde(default = "default_kind")]
    kind: SegmentKind,
}

fn default_kind() -> SegmentKind {
    SegmentKind::Segment
}

async fn create_segment(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CreateRequest = json_body(&body)?;
    let analytics = analytics_of(&state)?;
    let new = NewSegment {
        name: request.name,
        kind: request.kind,
        description: request.description,
        condition: parse_condition(request.condition)?,
    };
    let store = state.store().clone();
    let def = blocking(move || Ok(store.segments().create(&new)?)).await?;
    let diff = refresh(&analytics, state.store(), &def, "definition").await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"segment": view(def, diff.members as i64), "evaluation": diff})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    description: Option<String>,
    condition: Option<Value>,
}

async fn update_segment(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: UpdateRequest = json_body(&body)?;
    let analytics = analytics_of(&state)?;
    let condition = request.condition.map(parse_condition).transpose()?;
    let store = state.store().clone();
    let def = blocking(move || {
        Ok(store
            .segments()
            .update(&name, request.description.as_deref(), condition.as_ref())?)
    })
    .await?;
    let diff = refresh(&analytics, state.store(), &def, "definition").await?;
    Ok(Json(
        json!({"segment": view(def, diff.members as i64), "evaluation": diff}),
    ))
}

async fn delete_segment(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.store().clone();
    blocking(move || Ok(store.segments().delete(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_segment(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let (def, count) = blocking(move || {
        let def = store.segments().get(&name)?;
        let count = store.segments().member_count(def.id)?;
        Ok((def, count))
    })
    .await?;
    Ok(Json(json!({"segment": view(def, count)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    condition: Value,
    #[serde(default = "default_sample")]
    sample: usize,
}

fn default_sample() -> usize {
    10
}

async fn preview(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: PreviewRequest = json_body(&body)?;
    let condition = parse_condition(request.condition)?;
    let analytics = analytics_of(&state)?;
    let members = batch_members(&analytics, &condition, Utc::now())
        .await
        .map_err(|e| lake_error("the condition", e))?;
    let mut sample: Vec<i64> = members.iter().copied().collect();
    sample.sort_unstable();
    sample.truncate(request.sample.min(1000));
    Ok(Json(json!({
        "count": members.len(),
        "sample_customer_ids": sample,
        "refreshed_with_time": moves_with_time(&condition),
        "computed_keys": COMPUTED_KEYS,
    })))
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

async fn members(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 10000",
        ));
    }
    let after = page.after.unwrap_or(0);
    let store = state.store().clone();
    let (def, rows, total) = blocking(move || {
        let def = store.segments().get(&name)?;
        let rows = store.segments().members(def.id, after, limit)?;
        let total = store.segments().member_count(def.id)?;
        Ok((def, rows, total))
    })
    .await?;
    let next_after = (rows.len() == limit)
        .then(|| rows.last().map(|m| m.customer_id))
        .flatten();
    Ok(Json(json!({
        "segment": def.name,
        "kind": def.kind,
        "total": total,
        "members": rows,
        "next_after": next_after,
    })))
}

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
}

async fn export(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = q.format.unwrap_or_else(|| "csv".into());
    if format != "csv" && format != "parquet" {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("format must be csv or parquet, not {format:?}"),
        ));
    }
    let analytics = analytics_of(&state)?;
    let store = state.store().clone();
    let lookup = name.clone();
    let def = blocking(move || Ok(store.segments().get(&lookup)?)).await?;
    let sql = export_sql(&def.name);
    let result = analytics
        .query(
            &sql,
            QueryOptions {
                timeout: BATCH_TIMEOUT,
                max_rows: ALL_ROWS,
            },
        )
        .await
        .map_err(|e| lake_error(&def.name, e))?;
    let render =
        |e: LakeError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
    let file_name = sanitize_file_name(&def.name);
    if format == "csv" {
        let body = result.to_csv().map_err(render)?;
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{file_name}.csv\""),
                ),
            ],
            body,
        )
            .into_response());
    }
    let bytes = blocking(move || {
        let io = |e: std::io::Error| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        };
        let dir = tempfile::tempdir().map_err(io)?;
        let path = dir.path().join("export.parquet");
        result.to_parquet(&path).map_err(render)?;
        std::fs::read(&path).map_err(io)
    })
    .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.apache.parquet".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}.parquet\""),
            ),
        ],
        bytes,
    )
        .into_response())
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

fn sanitize_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct ChangesQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

async fn changes(
    state: &AppState,
    segment: Option<String>,
    q: ChangesQuery,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let after = q.after.unwrap_or(0);
    let store = state.store().clone();
    let rows = blocking(move || {
        let id = match segment {
            Some(name) => Some(store.segments().get(&name)?.id),
            None => None,
        };
        Ok(store.segments().changes(after, id, None, limit)?)
    })
    .await?;
    let next_after = rows.last().map(|c| c.id).unwrap_or(after);
    Ok(Json(json!({"changes": rows, "next_after": next_after})))
}

async fn segment_changes(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    changes(&state, Some(name), q).await
}

async fn all_changes(
    State(state): State<AppState>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    changes(&state, None, q).await
}

async fn customer_memberships(
    state: &AppState,
    kind: String,
    value: String,
    want: SegmentKind,
) -> Result<Json<Value>, ApiError> {
    let store = state.store().clone();
    let found = blocking(move || {
        let Some(customer) = store.profiles().find_customer(&kind, &value)? else {
            return Ok(None);
        };
        let current = store.segments().of_customer(customer)?;
        let history = store.segments().changes(0, None, Some(customer), 10_000)?;
        Ok(Some((customer, current, history)))
    })
    .await?;
    let Some((customer, current, history)) = found else {
        return Err(ApiError::not_found("no customer has that identifier"));
    };
    let current: Vec<Value> = current
        .into_iter()
        .filter(|(_, k, _)| *k == want)
        .map(|(name, _, entered_at)| json!({"name": name, "entered_at": entered_at}))
        .collect();
    let history: Vec<_> = history.into_iter().filter(|c| c.kind == want).collect();
    let key = if want == SegmentKind::Tag {
        "tags"
    } else {
        "segments"
    };
    Ok(Json(json!({
        "customer_id": customer.to_string(),
        key: current,
        "history": history,
    })))
}

async fn profile_segments(
    State(state): State<AppState>,
    Path((kind, value)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    customer_memberships(&state, kind, value, SegmentKind::Segment).await
}

async fn profile_tags(
    State(state): State<AppState>,
    Path((kind, value)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    customer_memberships(&state, kind, value, SegmentKind::Tag).await
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rolling_computed_traits_move_by_the_day() {
        let step = |v: Value| time_step(&Condition::from_json(&v.to_string()).expect("valid"));
        assert_eq!(
            step(json!({"type": "computed", "key": "orders_30d", "op": "gte", "value": 2})),
            Some(TimeUnit::Days)
        );
        assert_eq!(
            step(json!({"type": "or", "conditions": [
                {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 1},
                {"type": "event", "name": "Viewed", "window": {"last_hours": 1}}]})),
            Some(TimeUnit::Hours)
        );
        assert_eq!(
            step(json!({"type": "computed", "key": "orders", "op": "gte", "value": 2})),
            None
        );
    }
}
