//! The write side: appends processed events as Parquet files and compacts them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::files::{
    PartFile, SeqRange, date_dir_name, day_files, fsync_dir, io_err, list_days, max_seq,
    parse_date_dir_name, parse_part_file_name, part_file_name,
};
use crate::schema::{event_date, event_file_schema, events_to_batch};
use crate::{LakeError, LakeEvent};

/// Multi-day appends are committed through this journal (see [`LakeWriter::append`]).
const JOURNAL: &str = "_commit.json";
const LOCK: &str = ".writer.lock";
const TMP_MARK: &str = ".tmp";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A visible Parquet file of the lake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LakeFile {
    /// The partition (UTC day of the events' `timestamp`).
    pub date: NaiveDate,
    /// Lowest seq the file covers.
    pub first_seq: i64,
    /// Highest seq the file covers.
    pub last_seq: i64,
    /// Where it is.
    pub path: PathBuf,
}

/// What one compaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// The day compacted.
    pub date: NaiveDate,
    /// How many files were merged (and then deleted).
    pub files_merged: usize,
    /// Rows in the merged file.
    pub rows: usize,
    /// The merged file.
    pub file: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Journal {
    /// `(temporary, final)` paths relative to the events directory.
    renames: Vec<(String, String)>,
}

/// Writes processed events into the lake. One writer per lake at a time
/// (enforced with a lock file); readers ([`crate::Lake`]) can be many.
///
/// # Rules
///
/// * Each call to [`append`](Self::append) writes one file per day touched,
///   `date=D/part-<first>-<last>.parquet`, holding every event of that call for
///   day `D`; the range is the lowest and highest seq among them.
/// * Appends must be contiguous slices of one stream ordered by seq (the inbox
///   order). Events whose seq is at or below [`last_seq`](Self::last_seq) are
///   already in the lake and are skipped: replaying a range after a crash, in
///   the same or different batches, never duplicates rows.
/// * Files are written to a hidden temporary name, fsynced, renamed, and the
///   directory fsynced. An append touching several days first records its
///   renames in a journal, so a crash half-way is rolled forward on the next
///   [`open`](Self::open): `last_seq` never claims a range that is only partly
///   on disk.
#[derive(Debug)]
pub struct LakeWriter {
    events_dir: PathBuf,
    last_seq: Option<i64>,
    /// Set when a commit failed half-way: the journal on disk is the truth and
    /// only [`LakeWriter::open`] replays it.
    poisoned: bool,
    // Held for the lock; released on drop.
    _lock: File,
}

impl LakeWriter {
    /// Opens (creating if needed) the lake under `<data_dir>/lake`, takes the
    /// writer lock, finishes or discards work interrupted by a crash, and
    /// recovers [`last_seq`](Self::last_seq) from the file names.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, LakeError> {
        let lake_dir = data_dir.as_ref().join("lake");
        let events_dir = lake_dir.join("events");
        std::fs::create_dir_all(&events_dir).map_err(|e| io_err(&events_dir, e))?;
        let lock_path = lake_dir.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LakeError::Locked(lock_path)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
        }
        recover(&events_dir)?;
        let last_seq = max_seq(&events_dir)?;
        tracing::debug!(dir = %events_dir.display(), ?last_seq, "lake writer opened");
        Ok(Self {
            events_dir,
            last_seq,
            poisoned: false,
            _lock: lock,
        })
    }

    /// Highest seq in the lake, `None` while it is empty. A caller resumes its
    /// stream after this position.
    pub fn last_seq(&self) -> Option<i64> {
        self.last_seq
    }

    /// Appends events durably; returns once the files and their directory
    /// entries are on disk. See the type's documentation for the rules.
    pub fn append(&mut self, events: &[LakeEvent]) -> Result<(), LakeError> {
        if self.poisoned {
            return Err(LakeError::Poisoned);
        }
        let mut fresh: Vec<&LakeEvent> = Vec::with_capacity(events.len());
        for e in events {
            if e.seq < 0 {
                return Err(LakeError::InvalidEvent(format!(
                    "seq must not be negative (got {} for message {})",
                    e.seq, e.message_id
                )));
            }
            if self.last_seq.is_none_or(|w| e.seq > w) {
                fresh.push(e);
            }
        }
        let skipped = events.len() - fresh.len();
        if skipped > 0 {
            tracing::info!(
                skipped,
                last_seq = ?self.last_seq,
                "lake append: events already in the lake skipped"
            );
        }
        if fresh.is_empty() {
            return Ok(());
        }
        fresh.sort_by_key(|e| e.seq);
        if let Some(w) = fresh.windows(2).find(|w| w[0].seq == w[1].seq) {
            return Err(LakeError::InvalidEvent(format!(
                "seq {} appears twice in one append",
                w[0].seq
            )));
        }
        let mut by_day: BTreeMap<NaiveDate, Vec<&LakeEvent>> = BTreeMap::new();
        for e in &fresh {
            by_day.entry(event_date(e)).or_default().push(e);
        }

        let schema = event_file_schema();
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(by_day.len());
        for (date, day_events) in &by_day {
            let result = self.stage_day(*date, day_events, &schema);
            match result {
                Ok(pair) => staged.push(pair),
                Err(e) => {
                    remove_quietly(staged.iter().map(|(tmp, _)| tmp.as_path()));
                    return Err(e);
                }
            }
        }

        let journal = if staged.len() > 1 {
            match self.write_journal(&staged) {
                Ok(path) => Some(path),
                Err(e) => {
                    remove_quietly(staged.iter().map(|(tmp, _)| tmp.as_path()));
                    return Err(e);
                }
            }
        } else {
            None
        };
        if let Err(e) = commit_renames(&staged) {
            // With a journal, open() will finish the job; without one, the
            // single file either made it or not, and last_seq must be re-read.
            self.poisoned = true;
            return Err(e);
        }
        if let Some(journal) = journal {
            std::fs::remove_file(&journal).map_err(|e| io_err(&journal, e))?;
            fsync_dir(&self.events_dir)?;
        }
        let top = fresh.last().map(|e| e.seq);
        self.last_seq = top.max(self.last_seq);
        Ok(())
    }

    /// Writes one day's events to a fsynced temporary file; returns
    /// `(temporary, final)` paths.
    fn stage_day(
        &self,
        date: NaiveDate,
        events: &[&LakeEvent],
        schema: &SchemaRef,
    ) -> Result<(PathBuf, PathBuf), LakeError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Err(LakeError::Internal("empty day group".into()));
        };
        let range = SeqRange {
            first: first.seq,
            last: last.seq,
        };
        let day_dir = self.ensure_day_dir(date)?;
        let final_path = day_dir.join(part_file_name(range));
        let tmp = tmp_path(&day_dir, &part_file_name(range));
        let batch = events_to_batch(events, false)?;
        write_parquet(&tmp, schema, std::iter::once(Ok(batch)))?;
        Ok((tmp, final_path))
    }

    fn ensure_day_dir(&self, date: NaiveDate) -> Result<PathBuf, LakeError> {
        let day_dir = self.events_dir.join(date_dir_name(date));
        if !day_dir.is_dir() {
            std::fs::create_dir_all(&day_dir).map_err(|e| io_err(&day_dir, e))?;
            // The new directory entry must survive a crash like the file in it.
            fsync_dir(&self.events_dir)?;
        }
        Ok(day_dir)
    }

    fn write_journal(&self, staged: &[(PathBuf, PathBuf)]) -> Result<PathBuf, LakeError> {
        let rel = |p: &Path| -> Result<String, LakeError> {
            p.strip_prefix(&self.events_dir)
                .ok()
                .and_then(|r| r.to_str())
                .map(str::to_owned)
                .ok_or_else(|| LakeError::Internal(format!("path outside lake: {}", p.display())))
        };
        let journal = Journal {
            renames: staged
                .iter()
                .map(|(tmp, fin)| Ok((rel(tmp)?, rel(fin)?)))
                .collect::<Result<_, LakeError>>()?,
        };
        let text = serde_json::to_vec(&journal)
            .map_err(|e| LakeError::Internal(format!("journal encoding: {e}")))?;
        let path = self.events_dir.join(JOURNAL);
        let tmp = self.events_dir.join(format!("{JOURNAL}{TMP_MARK}"));
        std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        fsync_dir(&self.events_dir)?;
        Ok(path)
    }

    /// The files a query reads now (covered files excluded), by date then seq.
    pub fn files(&self) -> Result<Vec<LakeFile>, LakeError> {
        let mut out = Vec::new();
        for (date, dir) in list_days(&self.events_dir)? {
            let (visible, _) = day_files(date, &dir)?;
            out.extend(visible.into_iter().map(|p| LakeFile {
                date: p.date,
                first_seq: p.range.first,
                last_seq: p.range.last,
                path: p.path,
            }));
        }
        Ok(out)
    }

    /// Merges the files of one day into one. Returns `None` when the day has
    /// fewer than two files.
    ///
    /// The merged file is named by the union of the ranges it replaces, so
    /// once renamed into place it hides them from every reader; they are
    /// deleted afterwards. A crash in between leaves hidden files that the
    /// next `open` or `compact` deletes.
    pub fn compact(&self, date: NaiveDate) -> Result<Option<Compaction>, LakeError> {
        let day_dir = self.events_dir.join(date_dir_name(date));
        let (visible, covered) = day_files(date, &day_dir)?;
        delete_files(&day_dir, covered.iter().map(|p| p.path.as_path()))?;
        if visible.len() < 2 {
            return Ok(None);
        }
        let range = SeqRange {
            first: visible
                .iter()
                .map(|p| p.range.first)
                .min()
                .unwrap_or_default(),
            last: visible
                .iter()
                .map(|p| p.range.last)
                .max()
                .unwrap_or_default(),
        };
        let final_path = day_dir.join(part_file_name(range));
        let tmp = tmp_path(&day_dir, &part_file_name(range));
        let schema = event_file_schema();
        let rows = write_parquet(&tmp, &schema, read_parts(&visible, &schema))?;
        std::fs::rename(&tmp, &final_path).map_err(|e| io_err(&final_path, e))?;
        fsync_dir(&day_dir)?;
        delete_files(&day_dir, visible.iter().map(|p| p.path.as_path()))?;
        tracing::info!(%date, files = visible.len(), rows, "lake day compacted");
        Ok(Some(Compaction {
            date,
            files_merged: visible.len(),
            rows,
            file: final_path,
        }))
    }

    /// Compacts every day that has at least `min_files` files (at least two).
    pub fn compact_all(&self, min_files: usize) -> Result<Vec<Compaction>, LakeError> {
        let min_files = min_files.max(2);
        let mut done = Vec::new();
        for (date, dir) in list_days(&self.events_dir)? {
            let (visible, covered) = day_files(date, &dir)?;
            if visible.len() >= min_files {
                done.extend(self.compact(date)?);
            } else {
                delete_files(&dir, covered.iter().map(|p| p.path.as_path()))?;
            }
        }
        Ok(done)
    }
}

fn tmp_path(dir: &Path, final_name: &str) -> PathBuf {
    // Leading dot: Spark, DuckDB globs and our reader all skip it.
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        ".{final_name}{TMP_MARK}-{}-{n}",
        std::process::id()
    ))
}

/// Writes batches to `path` (which must not exist) with Snappy compression and
/// fsyncs it. Returns the number of rows written; removes the file on error.
pub(crate) fn write_parquet(
    path: &Path,
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, LakeError>>,
) -> Result<usize, LakeError> {
    let result = (|| {
        let file = File::create_new(path).map_err(|e| io_err(path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut writer = ArrowWriter::try_new(&file, schema.clone(), Some(props))?;
        let mut rows = 0;
        for batch in batches {
            let batch = batch?;
            rows += batch.num_rows();
            writer.write(&batch)?;
        }
        writer.close()?;
        file.sync_all().map_err(|e| io_err(path, e))?;
        Ok(rows)
    })();
    if result.is_err() {
        remove_quietly(std::iter::once(path));
    }
    result
}

/// Streams the rows of `parts` in seq order, in `schema`.
fn read_parts<'a>(
    parts: &'a [PartFile],
    schema: &'a SchemaRef,
) -> impl Iterator<Item = Result<RecordBatch, LakeError>> + 'a {
    parts.iter().flat_map(move |part| {
        let reader = File::open(&part.path)
            .map_err(|e| io_err(&part.path, e))
            .and_then(|f| Ok(ParquetRecordBatchReaderBuilder::try_new(f)?.build()?));
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, LakeError>>> = match reader {
            Ok(reader) => Box::new(reader.map(move |batch| {
                let batch = batch?;
                // Re-label with the canonical schema so the writer accepts it;
                // try_new still checks that the column types agree.
                Ok(RecordBatch::try_new(
                    schema.clone(),
                    batch.columns().to_vec(),
                )?)
            })),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        batches
    })
}

fn commit_renames(staged: &[(PathBuf, PathBuf)]) -> Result<(), LakeError> {
    let mut dirs = BTreeSet::new();
    for (tmp, fin) in staged {
        std::fs::rename(tmp, fin).map_err(|e| io_err(fin, e))?;
        if let Some(dir) = fin.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    for dir in dirs {
        fsync_dir(&dir)?;
    }
    Ok(())
}

fn delete_files<'a>(dir: &Path, paths: impl Iterator<Item = &'a Path>) -> Result<(), LakeError> {
    let mut any = false;
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => any = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(p, e)),
        }
    }
    if any {
        fsync_dir(dir)?;
    }
    Ok(())
}

fn remove_quietly<'a>(paths: impl Iterator<Item = &'a Path>) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove temporary lake file");
        }
    }
}

/// Finishes a journaled append, then removes temporary files and files hidden
/// by a compaction whose deletes were interrupted.
fn recover(events_dir: &Path) -> Result<(), LakeError> {
    let journal_path = events_dir.join(JOURNAL);
    match std::fs::read(&journal_path) {
        Ok(bytes) => {
            let journal: Journal = serde_json::from_slice(&bytes)
                .map_err(|e| LakeError::Corrupt(format!("{}: {e}", journal_path.display())))?;
            roll_forward(events_dir, &journal)?;
            std::fs::remove_file(&journal_path).map_err(|e| io_err(&journal_path, e))?;
            fsync_dir(events_dir)?;
            tracing::info!(
                files = journal.renames.len(),
                "lake: interrupted append completed"
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&journal_path, e)),
    }
    remove_quietly(std::iter::once(
        events_dir.join(format!("{JOURNAL}{TMP_MARK}")).as_path(),
    ));
    for (date, dir) in list_days(events_dir)? {
        let mut strays = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(TMP_MARK) {
                strays.push(entry.path());
            }
        }
        remove_quietly(strays.iter().map(PathBuf::as_path));
        let (_, covered) = day_files(date, &dir)?;
        delete_files(&dir, covered.iter().map(|p| p.path.as_path()))?;
    }
    Ok(())
}

fn roll_forward(events_dir: &Path, journal: &Journal) -> Result<(), LakeError> {
    let mut dirs = BTreeSet::new();
    for (tmp, fin) in &journal.renames {
        // Only names this writer produces: a damaged journal must not move
        // files outside the lake.
        let valid = |rel: &str, want_part: bool| {
            let mut it = rel.split('/');
            let (Some(day), Some(name), None) = (it.next(), it.next(), it.next()) else {
                return false;
            };
            parse_date_dir_name(day).is_some()
                && if want_part {
                    parse_part_file_name(name).is_some()
                } else {
                    name.starts_with(".part-") && name.contains(TMP_MARK)
                }
        };
        if !valid(tmp, false) || !valid(fin, true) {
            return Err(LakeError::Corrupt(format!(
                "journal entry {tmp} -> {fin} is not a lake file"
            )));
        }
        let (tmp, fin) = (events_dir.join(tmp), events_dir.join(fin));
        if tmp.exists() {
            std::fs::rename(&tmp, &fin).map_err(|e| io_err(&fin, e))?;
        } else if !fin.exists() {
            return Err(LakeError::Corrupt(format!(
                "journaled file {} is missing",
                fin.display()
            )));
        }
        if let Some(dir) = fin.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    for dir in dirs {
        fsync_dir(&dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn ev(seq: i64, day: u32) -> LakeEvent {
        let at = Utc
            .with_ymd_and_hms(2024, 5, day, 12, 0, 0)
            .single()
            .unwrap_or_default();
        LakeEvent {
            seq,
            source_id: 1,
            message_id: format!("m-{seq}"),
            customer_id: None,
            kind: "track".into(),
            name: "x".into(),
            timestamp: at,
            received_at: at,
            user_id: None,
            anonymous_id: Some("a".into()),
            properties: serde_json::json!({}),
            context: serde_json::json!({}),
            traits: serde_json::Value::Null,
        }
    }

    fn hidden_files(dir: &Path) -> usize {
        list_days(&dir.join("lake/events"))
            .unwrap_or_default()
            .iter()
            .flat_map(|(_, d)| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count()
    }

    /// Stages one file per event's day, as `append` does before committing.
    fn stage(w: &LakeWriter, events: &[LakeEvent]) -> Result<Vec<(PathBuf, PathBuf)>, LakeError> {
        let schema = event_file_schema();
        events
            .iter()
            .map(|e| w.stage_day(event_date(e), &[e], &schema))
            .collect()
    }

    #[test]
    fn interrupted_multi_day_append_is_rolled_forward() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let w = LakeWriter::open(dir.path())?;
            let staged = stage(&w, &[ev(1, 1), ev(2, 2)])?;
            w.write_journal(&staged)?;
            // The process dies after the first of the two renames.
            std::fs::rename(&staged[0].0, &staged[0].1)?;
        }
        let w = LakeWriter::open(dir.path())?;
        assert_eq!(w.last_seq(), Some(2));
        assert_eq!(w.files()?.len(), 2);
        assert!(!dir.path().join("lake/events").join(JOURNAL).exists());
        assert_eq!(hidden_files(dir.path()), 0);
        Ok(())
    }

    #[test]
    fn append_interrupted_before_its_journal_leaves_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let w = LakeWriter::open(dir.path())?;
            stage(&w, &[ev(1, 1), ev(2, 2)])?;
        }
        assert_eq!(hidden_files(dir.path()), 2);
        let mut w = LakeWriter::open(dir.path())?;
        assert_eq!(w.last_seq(), None);
        assert!(w.files()?.is_empty());
        assert_eq!(hidden_files(dir.path()), 0);
        // The replay writes them for real.
        w.append(&[ev(1, 1), ev(2, 2)])?;
        assert_eq!(w.files()?.len(), 2);
        Ok(())
    }

    #[test]
    fn damaged_journal_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let events_dir = dir.path().join("lake/events");
        std::fs::create_dir_all(&events_dir)?;
        std::fs::write(
            events_dir.join(JOURNAL),
            r#"{"renames":[["../../x.tmp","../../etc/passwd"]]}"#,
        )?;
        assert!(matches!(
            LakeWriter::open(dir.path()),
            Err(LakeError::Corrupt(_))
        ));
        Ok(())
    }
}
