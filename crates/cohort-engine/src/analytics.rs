//! The analytics side of the server: keeps the Parquet lake fed from processed events, hands the
//! state store's tables to the SQL engine, and runs read-only queries.

use chrono::Utc;
use cohort_core::Position;
use cohort_lake::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use cohort_lake::{
    JsonText, Lake, LakeError, LakeEvent, LakeWriter, QueryOptions, QueryResult, StateError,
    StateTables, identities_schema, memberships_schema, profile_traits_schema, profiles_schema,
    segment_changes_schema,
};
use cohort_store::{ExportedEvent, Store};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Events exported per lake append.
const EXPORT_BATCH: usize = 20_000;
/// Most not-yet-exported events a query reads from the state store; the exporter trails
/// processing by about a second, so this only binds while it catches up after downtime.
const MAX_RECENT: usize = 200_000;
/// How often small lake files are merged.
const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// The SQL engine over the lake and the state store.
pub struct Analytics {
    lake: Lake,
    store: Store,
    /// Profile tables held fixed while [`Analytics::pin_profiles`]'s guard lives.
    pinned: Arc<RwLock<Option<PinnedProfiles>>>,
    /// Highest inbox position written to Parquet (0 before the first file).
    exported: Arc<AtomicI64>,
    /// Whether this process writes the lake, so that `exported` is always current.
    exporting: bool,
    stop: Arc<AtomicBool>,
    exporter: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Analytics {
    /// Opens the lake for queries; with `export`, also starts the thread that writes processed
    /// events to Parquet (only one process may do that: the lake holds a writer lock).
    pub fn open(store: Store, export: bool) -> Result<Arc<Analytics>, LakeError> {
        let pinned = Arc::new(RwLock::new(None));
        let lake = Lake::open(store.data_dir())?.with_state(Arc::new(StoreTables {
            store: store.clone(),
            pinned: pinned.clone(),
        }));
        let analytics = Arc::new(Analytics {
            pinned,
            exported: Arc::new(AtomicI64::new(
                cohort_lake::complete_position(store.data_dir())?.map_or(0, Position::offset),
            )),
            lake,
            store,
            exporting: export,
            stop: Arc::new(AtomicBool::new(false)),
            exporter: Mutex::new(None),
        });
        if export {
            let writer = LakeWriter::open(analytics.store.data_dir())?;
            let (store, exported, stop) = (
                analytics.store.clone(),
                analytics.exported.clone(),
                analytics.stop.clone(),
            );
            let thread = std::thread::Builder::new()
                .name("cohort-lake".into())
                .spawn(move || export_loop(writer, &store, &exported, &stop))
                .map_err(|e| LakeError::Internal(format!("cannot start the lake exporter: {e}")))?;
            *analytics.exporter.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        }
        Ok(analytics)
    }

    /// Stops the exporter and waits for the batch it is writing (blocking). Events not yet
    /// exported stay in the state store and are exported at the next start.
    pub fn stop_exporter(&self) {
        self.stop.store(true, Ordering::Release);
        let thread = self
            .exporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Reads `profiles` and `profile_traits` once and serves every query from that copy until
    /// the guard is dropped: a round of batch segment evaluations then reads the state store
    /// once, not once per segment. Queries meanwhile see the state as of this call.
    pub fn pin_profiles(&self) -> Result<ProfilesPin, LakeError> {
        let tables = StoreTables {
            store: self.store.clone(),
            pinned: Arc::new(RwLock::new(None)),
        };
        let fail = |e: StateError| LakeError::Internal(format!("reading profiles: {e}"));
        let snapshot = PinnedProfiles {
            profiles: tables.profiles().map_err(fail)?,
            traits: tables.profile_traits().map_err(fail)?,
        };
        *self.pinned.write().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        Ok(ProfilesPin {
            pinned: self.pinned.clone(),
        })
    }

    /// Runs read-only SQL; events processed but not yet in Parquet are included.
    pub async fn query(&self, sql: &str, opts: QueryOptions) -> Result<QueryResult, LakeError> {
        self.lake().await?.query(sql, opts).await
    }

    /// [`Analytics::query`] on one of the lake's threads, for work nobody waits on.
    pub async fn query_in_background(
        &self,
        sql: &str,
        opts: QueryOptions,
    ) -> Result<QueryResult, LakeError> {
        self.lake().await?.query_in_background(sql, opts).await
    }

    /// The lake, with the events processed but not yet in Parquet loaded as its recent rows, for
    /// callers that run several queries (the analyses).
    pub async fn lake(&self) -> Result<&Lake, LakeError> {
        // Both positions count whole appends only: the files on disk may show part of an append
        // whose day files are still being renamed into place. The events table then drops
        // exactly the recent rows that the files it reads already hold.
        let after = if self.exporting {
            self.exported.load(Ordering::Acquire)
        } else {
            cohort_lake::complete_position(self.store.data_dir())?.map_or(0, Position::offset)
        };
        let store = self.store.clone();
        let recent = tokio::task::spawn_blocking(move || {
            store
                .profiles()
                .events_after(Position::new(0, after), MAX_RECENT)
        })
        .await
        .map_err(|e| LakeError::Internal(e.to_string()))?
        .map_err(|e| LakeError::Internal(e.to_string()))?;
        self.lake
            .set_recent(recent.iter().map(to_lake_event).collect())?;
        Ok(&self.lake)
    }

    /// Inbox position exported to Parquet.
    pub fn exported(&self) -> Position {
        Position::new(0, self.exported.load(Ordering::Acquire))
    }
}

impl Drop for Analytics {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn export_loop(mut writer: LakeWriter, store: &Store, exported: &AtomicI64, stop: &AtomicBool) {
    let mut last_compaction = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let after = writer.last_position().map_or(0, Position::offset);
        let batch = match store
            .profiles()
            .events_after(Position::new(0, after), EXPORT_BATCH)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading events for the lake failed; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if batch.is_empty() {
            if last_compaction.elapsed() > COMPACT_EVERY {
                last_compaction = Instant::now();
                if let Err(e) = writer.compact_all(4) {
                    tracing::warn!(error = %e, "lake compaction failed");
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let events: Vec<LakeEvent> = batch.iter().map(to_lake_event).collect();
        match writer.append(&events) {
            Ok(()) => {
                let last = writer.last_position().map_or(after, Position::offset);
                exported.store(last, Ordering::Release);
                metrics::gauge!("cohort_lake_exported_seq").set(last as f64);
            }
            Err(e) => {
                tracing::error!(error = %e, "writing to the lake failed; reopening the writer");
                std::thread::sleep(Duration::from_secs(1));
                let dir = store.data_dir().to_path_buf();
                drop(writer);
                writer = loop {
                    match LakeWriter::open(&dir) {
                        Ok(w) => break w,
                        Err(e) if stop.load(Ordering::Acquire) => {
                            tracing::error!(error = %e, "lake writer unavailable at shutdown");
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot reopen the lake writer; retrying");
                            std::thread::sleep(Duration::from_secs(5));
                        }
                    }
                };
            }
        }
    }
}

/// The parts of a stored message the lake keeps beside the event's own columns. Only these are
/// read (the rest is skipped, not built). `context` and `traits` are only stored as text, so
/// they are borrowed as written rather than built as trees and printed again, which was a third
/// of the exporter's time.
#[derive(Default, serde::Deserialize)]
struct LakeParts<'a> {
    #[serde(rename = "userId", default)]
    user_id: Value,
    #[serde(rename = "anonymousId", default)]
    anonymous_id: Value,
    #[serde(default)]
    properties: Value,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
}

fn to_lake_event(e: &ExportedEvent) -> LakeEvent {
    // Stored bodies are messages Cohort serialised itself; one that cannot be read keeps its
    // event's columns and loses only these parts, as before.
    let parts: LakeParts = serde_json::from_str(&e.body).unwrap_or_default();
    let text = |v: Value| match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let object = |v: Value| match v {
        v @ Value::Object(_) => v,
        _ => Value::Object(Default::default()),
    };
    // A part that is not an object is stored as an empty one, like `properties`.
    let object_text = |raw: Option<&RawValue>| match raw.map(RawValue::get) {
        Some(json) if json.trim_start().starts_with('{') => JsonText::from_valid(json),
        _ => JsonText::from_valid("{}"),
    };
    LakeEvent {
        seq: e.seq,
        source_id: e.source_id,
        message_id: e.message_id.clone(),
        customer_id: e.customer_id,
        kind: e.kind.clone(),
        name: e.name.clone(),
        timestamp: e.timestamp,
        received_at: e.received_at,
        user_id: text(parts.user_id),
        anonymous_id: text(parts.anonymous_id),
        properties: object(parts.properties),
        context: object_text(parts.context),
        traits: object_text(parts.traits),
    }
}

/// Keeps the profile tables of [`Analytics::pin_profiles`] until dropped.
pub struct ProfilesPin {
    pinned: Arc<RwLock<Option<PinnedProfiles>>>,
}

impl Drop for ProfilesPin {
    fn drop(&mut self) {
        *self.pinned.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

struct PinnedProfiles {
    profiles: RecordBatch,
    traits: RecordBatch,
}

/// The state store's tables as Arrow batches, read fresh for each query unless pinned.
struct StoreTables {
    store: Store,
    pinned: Arc<RwLock<Option<PinnedProfiles>>>,
}

impl StoreTables {
    fn pinned(&self, pick: impl Fn(&PinnedProfiles) -> &RecordBatch) -> Option<RecordBatch> {
        self.pinned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| pick(p).clone())
    }
}

fn micros(t: Option<chrono::DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_micros())
}

fn timestamps(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

impl StateTables for StoreTables {
    fn profiles(&self) -> Result<RecordBatch, StateError> {
        if let Some(batch) = self.pinned(|p| &p.profiles) {
            return Ok(batch);
        }
        let rows = self.store.profiles().profile_rows(Utc::now())?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.customer_id),
            )),
            timestamps(
                rows.iter()
                    .map(|r| Some(r.created_at.timestamp_micros()))
                    .collect(),
            ),
            timestamps(rows.iter().map(|r| micros(r.first_seen)).collect()),
            timestamps(rows.iter().map(|r| micros(r.last_seen)).collect()),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.event_count),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.orders))),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.total_revenue),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.revenue_30d),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.orders_30d),
            )),
            timestamps(rows.iter().map(|r| micros(r.last_order_at)).collect()),
            Arc::new(Float64Array::from(
                rows.iter()
                    .map(|r| (r.orders > 0).then(|| r.total_revenue / r.orders as f64))
                    .collect::<Vec<_>>(),
            )),
        ];
        Ok(RecordBatch::try_new(profiles_schema(), columns)?)
    }

    fn profile_traits(&self) -> Result<RecordBatch, StateError> {
        if let Some(batch) = self.pinned(|p| &p.traits) {
            return Ok(batch);
        }
        let rows = self.store.profiles().trait_rows()?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.customer_id),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.key.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.value.as_str()),
            )),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.number).collect::<Vec<_>>(),
            )),
        ];
        Ok(RecordBatch::try_new(profile_traits_schema(), columns)?)
    }

    fn identities(&self) -> Result<RecordBatch, StateError> {
        let rows = self.store.profiles().identity_rows()?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.customer_id),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.kind.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.value.as_str()),
            )),
            timestamps(
                rows.iter()
                    .map(|r| Some(r.first_seen.timestamp_micros()))
                    .collect(),
            ),
        ];
        Ok(RecordBatch::try_new(identities_schema(), columns)?)
    }

    fn memberships(&self) -> Result<RecordBatch, StateError> {
        let rows = self.store.segments().membership_rows()?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.segment.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.customer_id),
            )),
            timestamps(
                rows.iter()
                    .map(|r| Some(r.entered_at.timestamp_micros()))
                    .collect(),
            ),
        ];
        Ok(RecordBatch::try_new(memberships_schema(), columns)?)
    }

    fn segment_changes(&self) -> Result<RecordBatch, StateError> {
        let rows = self
            .store
            .segments()
            .changes(0, None, None, usize::MAX >> 2)?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.segment.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| {
                if r.kind == cohort_store::SegmentKind::Tag {
                    "tag"
                } else {
                    "segment"
                }
            }))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.customer_id),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.change))),
            timestamps(rows.iter().map(|r| Some(r.at.timestamp_micros())).collect()),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.reason.as_str()),
            )),
        ];
        Ok(RecordBatch::try_new(segment_changes_schema(), columns)?)
    }

    fn customer_merges(&self) -> Result<Vec<(i64, i64)>, StateError> {
        Ok(self.store.profiles().merged_customers()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exported(body: String) -> ExportedEvent {
        ExportedEvent {
            seq: 9,
            source_id: 1,
            message_id: "m9".into(),
            customer_id: Some(4),
            kind: "track".into(),
            name: "Order Completed".into(),
            timestamp: Utc::now(),
            received_at: Utc::now(),
            body,
        }
    }

    #[test]
    fn lake_events_keep_ids_and_objects_of_the_stored_message() {
        let body = json!({"type": "track", "event": "Order Completed", "userId": 42,
            "anonymousId": "a-1", "messageId": "m9", "properties": {"revenue": 9.5},
            "context": {"ip": "10.0.0.1", "library": {"name": "x"}}, "traits": "not an object",
            "integrations": {"All": true}});
        let e = to_lake_event(&exported(body.to_string()));
        assert_eq!(
            e.user_id.as_deref(),
            Some("42"),
            "numeric user IDs become text"
        );
        assert_eq!(e.anonymous_id.as_deref(), Some("a-1"));
        assert_eq!(e.properties, json!({"revenue": 9.5}));
        assert_eq!(
            e.context,
            json!({"ip": "10.0.0.1", "library": {"name": "x"}}).into()
        );
        assert_eq!(
            e.traits,
            json!({}).into(),
            "a non-object is stored as an empty object"
        );
        assert_eq!(
            (e.seq, e.customer_id, e.name.as_str()),
            (9, Some(4), "Order Completed")
        );

        let unreadable = to_lake_event(&exported("{not json".into()));
        assert_eq!(
            (unreadable.user_id, unreadable.properties),
            (None, json!({}))
        );
        assert_eq!(unreadable.message_id, "m9", "the event's own columns stay");
    }
}
