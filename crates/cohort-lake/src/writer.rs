//! The write side: appends processed events as Parquet files and compacts them.

use cohort_core::Position;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{
    SortColumn, concat_batches, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::files::{
    Area, COMPLETE_MARK, PartFile, SeqRange, area_files, fsync_dir, io_err, list_areas, max_seq,
    parse_part_file_name, part_file_name,
};
use crate::schema::{event_date, event_file_schema, events_table_schema, events_to_batch};
use crate::{LakeError, LakeEvent};

/// Multi-day appends are committed through this journal (see [`LakeWriter::append`]).
const JOURNAL: &str = "_commit.json";
const LOCK: &str = ".writer.lock";
const TMP_MARK: &str = ".tmp";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Compaction merges files into runs of at most this many rows (about half a
/// GB of Arrow data at typical event sizes), the memory one merge may hold.
pub const COMPACT_MAX_ROWS: usize = 1_000_000;

/// Rows per Parquet row group. Several per compacted day, so that a reader can
/// split a day across threads and skip groups by their statistics.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Rows per data page at most. The page index keeps each page's min and max, so
/// small pages let a filter on the event name skip all but the pages holding
/// that name; a page per 4k rows costs little in size.
const PAGE_ROWS: usize = 4096;

/// The order of rows inside every lake file: by event name, then customer,
/// then time. Analyses filter on the name first; with the rows of a name
/// together, the statistics of row groups and pages let a reader skip every
/// other name, and the customer order keeps a customer's events adjacent.
const SORT_COLUMNS: [&str; 4] = ["event", "customer_id", "timestamp", "seq"];

/// The order of rows inside late files: by date first, so that the statistics of row groups and
/// pages let a filter on `date` or `timestamp` skip the other days, then as in a day's files.
const LATE_SORT_COLUMNS: [&str; 5] = ["date", "event", "customer_id", "timestamp", "seq"];

/// How the files of an area are written: a day's files leave the date to their directory's
/// name; late files carry it as a column and are sorted by it.
fn file_layout(area: Area) -> (SchemaRef, &'static [&'static str]) {
    match area {
        Area::Day(_) => (event_file_schema(), &SORT_COLUMNS),
        Area::Late => (events_table_schema(), &LATE_SORT_COLUMNS),
    }
}

/// A visible Parquet file of the lake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LakeFile {
    /// Its area: the UTC day of the events' `timestamp`, or the late area.
    pub area: Area,
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
    /// The area compacted.
    pub area: Area,
    /// How many files were merged (and then deleted).
    pub files_merged: usize,
    /// Rows in the merged files.
    pub rows: usize,
    /// The merged files: one per run of consecutive files (see [`LakeWriter::compact`]).
    pub files: Vec<PathBuf>,
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
/// * Each call to [`append`](Self::append) writes one file per area touched (see [`Area`]):
///   `date=D/part-<first>-<last>.parquet`, holding every event of that call for
///   day `D`, and `late/part-<first>-<last>.parquet` for its late events; the range is the
///   lowest and highest seq among them.
/// * Appends must be contiguous slices of one stream ordered by seq (the inbox
///   order). Events whose seq is at or below [`last_seq`](Self::last_seq) are
///   already in the lake and are skipped: replaying a range after a crash, in
///   the same or different batches, never duplicates rows.
/// * Files are written to a hidden temporary name, fsynced, renamed, and the
///   directory fsynced. An append touching several areas first records its
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
        write_complete_seq(&events_dir, last_seq)?;
        tracing::debug!(dir = %events_dir.display(), ?last_seq, "lake writer opened");
        Ok(Self {
            events_dir,
            last_seq,
            poisoned: false,
            _lock: lock,
        })
    }

    /// The inbox position of the last event in the lake, `None` while it is empty. A caller
    /// resumes its stream after it. The lake holds one partition's stream; its `seq` column is
    /// the position's offset.
    pub fn last_position(&self) -> Option<Position> {
        self.last_seq
            .map(|seq| Position::new(crate::PARTITION, seq))
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
        let mut by_area: BTreeMap<Area, Vec<&LakeEvent>> = BTreeMap::new();
        for e in &fresh {
            let area = Area::of(event_date(e), e.received_at.date_naive());
            by_area.entry(area).or_default().push(e);
        }

        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(by_area.len());
        for (area, area_events) in &by_area {
            let result = self.stage(*area, area_events);
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
        write_complete_seq(&self.events_dir, self.last_seq)
    }

    /// Writes one area's events to a fsynced temporary file; returns
    /// `(temporary, final)` paths.
    fn stage(&self, area: Area, events: &[&LakeEvent]) -> Result<(PathBuf, PathBuf), LakeError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Err(LakeError::Internal("empty area group".into()));
        };
        let range = SeqRange {
            first: first.seq,
            last: last.seq,
        };
        let dir = self.ensure_area_dir(area)?;
        let final_path = dir.join(part_file_name(range));
        let tmp = tmp_path(&dir, &part_file_name(range));
        let (schema, order) = file_layout(area);
        let batch = events_to_batch(events, area == Area::Late)?;
        write_lake_file(
            &tmp,
            &schema,
            order,
            sort_for_scans(&schema, order, &[batch])?,
        )?;
        Ok((tmp, final_path))
    }

    fn ensure_area_dir(&self, area: Area) -> Result<PathBuf, LakeError> {
        let day_dir = self.events_dir.join(area.dir_name());
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

    /// The files a query reads now (covered files excluded), by area (days by date, then the
    /// late area) then seq.
    pub fn files(&self) -> Result<Vec<LakeFile>, LakeError> {
        let mut out = Vec::new();
        for (area, dir) in list_areas(&self.events_dir)? {
            let (visible, _) = area_files(area, &dir)?;
            out.extend(visible.into_iter().map(|p| LakeFile {
                area: p.area,
                first_seq: p.range.first,
                last_seq: p.range.last,
                path: p.path,
            }));
        }
        Ok(out)
    }

    /// Merges the files of one day. Returns `None` when there was nothing to
    /// merge (fewer than two files, or only files already at the size limit).
    ///
    /// Consecutive files (in seq order) are merged into runs of at most
    /// [`COMPACT_MAX_ROWS`] rows, so compaction holds at most that many rows in
    /// memory however busy the day was. Each merged file is sorted like every
    /// file the writer makes (see [`sort_for_scans`]).
    ///
    /// A merged file is named by the union of the ranges it replaces, so once
    /// renamed into place it hides them from every reader; they are deleted
    /// afterwards. A crash in between leaves hidden files that the next `open`
    /// or `compact` deletes.
    pub fn compact(&self, area: Area) -> Result<Option<Compaction>, LakeError> {
        let day_dir = self.events_dir.join(area.dir_name());
        let (visible, covered) = area_files(area, &day_dir)?;
        delete_files(&day_dir, covered.iter().map(|p| p.path.as_path()))?;
        if visible.len() < 2 {
            return Ok(None);
        }
        let mut sized = Vec::with_capacity(visible.len());
        for part in visible {
            let rows = part_rows(&part.path)?;
            sized.push((part, rows));
        }
        let mut done = Compaction {
            area,
            files_merged: 0,
            rows: 0,
            files: Vec::new(),
        };
        for run in merge_runs(&sized, COMPACT_MAX_ROWS) {
            let parts: Vec<PartFile> = run.iter().map(|(p, _)| p.clone()).collect();
            let range = SeqRange {
                first: parts
                    .iter()
                    .map(|p| p.range.first)
                    .min()
                    .unwrap_or_default(),
                last: parts.iter().map(|p| p.range.last).max().unwrap_or_default(),
            };
            let final_path = day_dir.join(part_file_name(range));
            let tmp = tmp_path(&day_dir, &part_file_name(range));
            let (schema, order) = file_layout(area);
            let merged = read_parts(&parts, &schema)
                .collect::<Result<Vec<_>, _>>()
                .and_then(|batches| sort_for_scans(&schema, order, &batches));
            let rows = merged.and_then(|batch| write_lake_file(&tmp, &schema, order, batch))?;
            std::fs::rename(&tmp, &final_path).map_err(|e| io_err(&final_path, e))?;
            fsync_dir(&day_dir)?;
            delete_files(&day_dir, parts.iter().map(|p| p.path.as_path()))?;
            done.files_merged += parts.len();
            done.rows += rows;
            done.files.push(final_path);
        }
        if done.files.is_empty() {
            return Ok(None);
        }
        tracing::info!(%area, files = done.files_merged, rows = done.rows, "lake area compacted");
        Ok(Some(done))
    }

    /// Compacts every area that has at least `min_files` files (at least two).
    pub fn compact_all(&self, min_files: usize) -> Result<Vec<Compaction>, LakeError> {
        let min_files = min_files.max(2);
        let mut done = Vec::new();
        for (area, dir) in list_areas(&self.events_dir)? {
            let (visible, covered) = area_files(area, &dir)?;
            if visible.len() >= min_files {
                done.extend(self.compact(area)?);
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
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY);
    write_with(path, schema, props.build(), batches)
}

/// [`write_parquet`] for a lake file: one batch sorted by `order` ([`sort_for_scans`]), row
/// groups of [`ROW_GROUP_ROWS`], the order recorded.
fn write_lake_file(
    path: &Path,
    schema: &SchemaRef,
    order: &[&str],
    batch: RecordBatch,
) -> Result<usize, LakeError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_sorting_columns(Some(sorting_columns(schema, order)?))
        .build();
    write_with(path, schema, props, std::iter::once(Ok(batch)))
}

fn write_with(
    path: &Path,
    schema: &SchemaRef,
    props: WriterProperties,
    batches: impl Iterator<Item = Result<RecordBatch, LakeError>>,
) -> Result<usize, LakeError> {
    let result = (|| {
        let file = File::create_new(path).map_err(|e| io_err(path, e))?;
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

/// `batches` as one batch sorted by the columns `order` names ([`SORT_COLUMNS`] or
/// [`LATE_SORT_COLUMNS`]).
pub(crate) fn sort_for_scans(
    schema: &SchemaRef,
    order: &[&str],
    batches: &[RecordBatch],
) -> Result<RecordBatch, LakeError> {
    let batch = concat_batches(schema, batches)?;
    let columns = order
        .iter()
        .map(|name| {
            let values = batch
                .column_by_name(name)
                .ok_or_else(|| LakeError::Internal(format!("lake schema has no column {name}")))?;
            Ok(SortColumn {
                values: Arc::clone(values),
                options: None,
            })
        })
        .collect::<Result<Vec<_>, LakeError>>()?;
    let order = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(&batch, &order)?)
}

/// A sort order as Parquet metadata, so readers know it.
fn sorting_columns(schema: &SchemaRef, order: &[&str]) -> Result<Vec<SortingColumn>, LakeError> {
    order
        .iter()
        .map(|name| {
            let index = schema
                .index_of(name)
                .map_err(|_| LakeError::Internal(format!("lake schema has no column {name}")))?;
            Ok(SortingColumn {
                column_idx: i32::try_from(index).unwrap_or(i32::MAX),
                descending: false,
                nulls_first: true,
            })
        })
        .collect()
}

/// Rows of a Parquet file, from its footer.
fn part_rows(path: &Path) -> Result<usize, LakeError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let rows = ParquetRecordBatchReaderBuilder::try_new(file)?
        .metadata()
        .file_metadata()
        .num_rows();
    Ok(usize::try_from(rows).unwrap_or(0))
}

/// Splits a day's files (with their row counts, in seq order) into runs of
/// consecutive files worth merging: at least two files and at most `max_rows`
/// rows each. Runs are consecutive so that a merged file's seq range covers its
/// own files only.
fn merge_runs<T>(files: &[(T, usize)], max_rows: usize) -> Vec<&[(T, usize)]> {
    let mut runs = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, (_, n)) in files.iter().enumerate() {
        if i > start && rows + n > max_rows {
            if i - start >= 2 {
                runs.push(&files[start..i]);
            }
            (start, rows) = (i, 0);
        }
        rows += n;
    }
    if files.len() - start >= 2 {
        runs.push(&files[start..]);
    }
    runs
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

/// Replaces the mark that `crate::files::complete_seq` reads. Not fsynced: after a power cut the
/// mark may be older than the files, which only makes readers take more rows from the store.
fn write_complete_seq(events_dir: &Path, seq: Option<i64>) -> Result<(), LakeError> {
    let path = events_dir.join(COMPLETE_MARK);
    let tmp = events_dir.join(format!("{COMPLETE_MARK}{TMP_MARK}"));
    let text = seq.map(|s| s.to_string()).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))
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
    remove_quietly(
        [JOURNAL, COMPLETE_MARK]
            .map(|name| events_dir.join(format!("{name}{TMP_MARK}")))
            .iter()
            .map(PathBuf::as_path),
    );
    for (area, dir) in list_areas(events_dir)? {
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
        let (_, covered) = area_files(area, &dir)?;
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
            Area::parse_dir_name(day).is_some()
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
            context: serde_json::json!({}).into(),
            traits: serde_json::Value::Null.into(),
        }
    }

    fn hidden_files(dir: &Path) -> usize {
        list_areas(&dir.join("lake/events"))
            .unwrap_or_default()
            .iter()
            .flat_map(|(_, d)| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count()
    }

    /// Stages one file per event's area, as `append` does before committing.
    fn stage(w: &LakeWriter, events: &[LakeEvent]) -> Result<Vec<(PathBuf, PathBuf)>, LakeError> {
        events
            .iter()
            .map(|e| w.stage(Area::of(event_date(e), e.received_at.date_naive()), &[e]))
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
        assert_eq!(w.last_position(), Some(Position::new(0, 2)));
        assert_eq!(w.files()?.len(), 2);
        assert!(!dir.path().join("lake/events").join(JOURNAL).exists());
        assert_eq!(hidden_files(dir.path()), 0);
        Ok(())
    }

    #[test]
    fn readers_see_only_whole_appends_while_day_files_are_renamed() -> TestResult {
        let dir = tempfile::tempdir()?;
        let events_dir = dir.path().join("lake/events");
        let mut w = LakeWriter::open(dir.path())?;
        assert_eq!(crate::complete_position(dir.path())?, None);
        w.append(&[ev(1, 1)])?;
        assert_eq!(
            crate::complete_position(dir.path())?,
            Some(Position::new(0, 1))
        );
        // An append of seqs 2 (day 3) and 3 (day 2) in the middle of its renames: the file of
        // the later day holds the highest seq already, the other is still hidden.
        let staged = stage(&w, &[ev(2, 3), ev(3, 2)])?;
        w.write_journal(&staged)?;
        std::fs::rename(&staged[1].0, &staged[1].1)?;
        assert_eq!(max_seq(&events_dir)?, Some(3));
        assert_eq!(
            crate::complete_position(dir.path())?,
            Some(Position::new(0, 1))
        );
        drop(w);
        // Reopening finishes the append and moves the mark.
        let w = LakeWriter::open(dir.path())?;
        assert_eq!(w.last_position(), Some(Position::new(0, 3)));
        assert_eq!(
            crate::complete_position(dir.path())?,
            Some(Position::new(0, 3))
        );
        // A lake written before the mark existed is read from its file names.
        std::fs::remove_file(events_dir.join(COMPLETE_MARK))?;
        assert_eq!(
            crate::complete_position(dir.path())?,
            Some(Position::new(0, 3))
        );
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
        assert_eq!(w.last_position(), None);
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

    #[test]
    fn merge_runs_are_consecutive_and_bounded() {
        let files: Vec<(char, usize)> =
            vec![('a', 3), ('b', 3), ('c', 5), ('d', 1), ('e', 1), ('f', 9)];
        let runs: Vec<String> = merge_runs(&files, 6)
            .iter()
            .map(|run| run.iter().map(|(name, _)| *name).collect())
            .collect();
        // a+b fill a run; c+d+e would be 7 > 6, so c+d, and e stays alone
        // next to the large f, which is never merged.
        assert_eq!(runs, ["ab", "cd"]);
        assert!(merge_runs(&files[5..], 6).is_empty());
        assert_eq!(merge_runs(&files[3..5], 6).len(), 1);
    }

    #[test]
    fn files_hold_their_rows_by_event_then_customer_then_time() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut w = LakeWriter::open(dir.path())?;
        let named = |seq: i64, name: &str, customer: i64, hour: u32| {
            let mut e = ev(seq, 1);
            e.name = name.into();
            e.customer_id = Some(customer);
            e.timestamp = Utc
                .with_ymd_and_hms(2024, 5, 1, hour, 0, 0)
                .single()
                .unwrap_or_default();
            e
        };
        w.append(&[
            named(1, "view", 2, 5),
            named(2, "buy", 2, 4),
            named(3, "view", 1, 9),
        ])?;
        w.append(&[named(4, "buy", 1, 1), named(5, "view", 1, 3)])?;
        let compacted = w.compact(Area::Day(
            chrono::NaiveDate::from_ymd_opt(2024, 5, 1).ok_or("date")?,
        ))?;
        let compacted = compacted.ok_or("nothing compacted")?;
        assert_eq!((compacted.files_merged, compacted.rows), (2, 5));
        let file = File::open(&compacted.files[0])?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let sorting = reader.metadata().row_group(0).sorting_columns().cloned();
        assert_eq!(sorting.map(|s| s.len()), Some(SORT_COLUMNS.len()));
        let mut seqs = Vec::new();
        for batch in reader.build()? {
            let batch = batch?;
            let column = batch.column_by_name("seq").ok_or("seq")?;
            let column = column
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .ok_or("seq type")?;
            seqs.extend(column.values().iter().copied());
        }
        // buy: customer 1 (seq 4), customer 2 (seq 2); view: customer 1 at 3h
        // (seq 5) and 9h (seq 3), customer 2 (seq 1).
        assert_eq!(seqs, [4, 2, 5, 3, 1]);
        Ok(())
    }
}
