//! `cohort import`: historical Segment messages from a file into a data directory.
//!
//! Messages take the same path as HTTP ingest after decoding: each goes through the source's
//! policy in the one ingest assembly (`cohort_collect::Assembly`: spec checks, time fix-up,
//! normalisation, tracking plan) and is appended to the inbox in chunks; refused rows, and rows
//! that cannot even be parsed, go to the failed-events store with their line number, so nothing
//! read is dropped. The inbox is shared safely with a server running on the same directory
//! (SQLite serialises the writers), whose processor picks the messages up as they land. Without
//! one, the import holds the directory's processing lock and applies what it imported itself,
//! with a progress bar, so profiles, segments and `cohort query` include it when it returns.
//!
//! Messages without a `messageId` get one derived from their content and position in the file,
//! so importing the same file twice deduplicates instead of doubling the history.

use crate::admin::find_source;
use crate::cli::ImportArgs;
use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use cohort_collect::request::{Route, expand};
use cohort_collect::{Assembly, Limits, Policy};
use cohort_core::{Inbox as _, Position};
use cohort_engine::{Engine, Mode};
use cohort_store::{Receipt, Source, SqliteInbox};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

/// Messages per inbox commit: large enough to amortise the commit, small enough to keep memory
/// flat and let a running server's processor start early.
const CHUNK: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Json,
    Csv,
    Parquet,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "NDJSON",
            Format::Json => "JSON",
            Format::Csv => "CSV",
            Format::Parquet => "Parquet",
        }
    }

    /// The named format, or for `auto` the extension's, or else a guess from the first byte.
    fn resolve(requested: &str, path: &Path) -> anyhow::Result<Format> {
        match requested {
            "ndjson" => return Ok(Format::Ndjson),
            "json" => return Ok(Format::Json),
            "csv" => return Ok(Format::Csv),
            "parquet" => return Ok(Format::Parquet),
            _ => {}
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "ndjson" | "jsonl" => return Ok(Format::Ndjson),
            "json" => return Ok(Format::Json),
            "csv" => return Ok(Format::Csv),
            "parquet" | "pq" => return Ok(Format::Parquet),
            _ => {}
        }
        let mut head = [0u8; 512];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .with_context(|| format!("reading {}", path.display()))?;
        let first = head[..n]
            .iter()
            .copied()
            .find(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF);
        if head[..n].starts_with(b"PAR1") {
            return Ok(Format::Parquet);
        }
        Ok(match first {
            Some(b'[') => Format::Json,
            Some(b'{') => Format::Ndjson,
            _ => Format::Csv,
        })
    }
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let data = args.data.data.clone();
    // Opening the store would create an empty data directory, which can only hide a typo here.
    if !data.join("state.db").exists() {
        bail!(
            "{} is not a Cohort data directory (create a source first: cohort admin --data {} source create NAME)",
            data.display(),
            data.display()
        );
    }
    // Processing mode: unless a server already processes this directory, this process applies
    // what it imports, so `cohort query` sees it as soon as the import returns.
    let engine = crate::data_dir::open(&data, Mode::Processing).await?;
    let imported = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || import(&engine, &args))
            .await
            .context("the import task failed")?
    };
    let outcome = match imported {
        Ok(accepted) if accepted > 0 => process(&engine, &data).await,
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    engine.close().await;
    outcome
}

/// Waits, with a progress bar, until this process has applied everything imported; or says
/// who will when a running server does the processing.
async fn process(engine: &Engine, data: &Path) -> anyhow::Result<()> {
    let inbox = engine.store().inbox().clone();
    if !engine.store().processing() {
        println!(
            "The `cohort serve` running on {} processes them now.",
            data.display()
        );
        return Ok(());
    }
    let (from, to) = (inbox.acknowledged(), inbox.committed());
    let bar =
        ProgressBar::with_draw_target(Some(to.entries_since(from)), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("processing [{bar:40}] {pos}/{len} messages, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let done = tokio::task::spawn_blocking(move || {
        while !inbox.wait_acknowledged(to, Duration::from_millis(200)) {
            bar.set_position(inbox.acknowledged().entries_since(from));
            if !inbox_moves(&inbox, from) {
                // Nothing applied for a long time: the processor stopped; say so, keep the data.
                bar.abandon();
                return false;
            }
        }
        bar.finish_and_clear();
        true
    })
    .await
    .context("the processing task failed")?;
    if !done {
        bail!(
            "processing stopped before the import was applied; the next `cohort serve` applies it"
        );
    }
    engine.wait_processed(Duration::from_secs(600)).await?;
    println!(
        "Processed: profiles, segments and `cohort query --data {}` include the import.",
        data.display()
    );
    Ok(())
}

/// False once the applied position has stood still for a minute past `from`.
fn inbox_moves(inbox: &SqliteInbox, from: Position) -> bool {
    inbox.wait_acknowledged(
        Position::new(from.partition(), inbox.acknowledged().offset() + 1),
        Duration::from_secs(60),
    )
}

/// Reads the file into the inbox; returns the messages accepted.
fn import(engine: &Engine, args: &ImportArgs) -> anyhow::Result<u64> {
    let data = &args.data.data;
    let format = Format::resolve(&args.format, &args.file)?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);

    let source = find_source(engine.store(), &args.source)?;
    if source.disabled {
        bail!(
            "source {:?} is disabled; enable it before importing into it",
            source.name
        );
    }
    let entry = engine
        .source_entry(source.id)?
        .with_context(|| format!("source {:?} no longer exists", source.name))?;

    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let reader = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: file,
            bar: bar.clone(),
        },
    );
    let shape = match args.rows.as_str() {
        "profiles" => Shape::Profiles,
        "events" => Shape::Events(args.event.clone()),
        _ => Shape::Segment,
    };
    let mut sink = Sink::new(engine, &source, &entry.policy, shape);
    let result = match format {
        Format::Ndjson => read_ndjson(reader, &mut sink),
        Format::Json => read_json(reader, &mut sink),
        Format::Csv => {
            sink.text_cells = true;
            read_csv(reader, &mut sink)
        }
        Format::Parquet => {
            bar.set_length(0);
            read_parquet(&args.file, &bar, &mut sink)
        }
    };
    // Whatever was read before a fatal error is committed and reported, not left half-done.
    let flushed = sink.flush();
    bar.finish_and_clear();
    let stats = sink.stats;
    println!(
        "Imported {} ({}) into source {:?}: read {}, accepted {}, duplicates {}, failed {}.",
        args.file.display(),
        format.name(),
        source.name,
        stats.read,
        stats.accepted,
        stats.duplicates,
        stats.failed
    );
    result?;
    flushed?;
    if stats.failed > 0 {
        println!(
            "Failed rows are kept in the failed-events store: cohort admin --data {} failed list --source {}",
            data.display(),
            source.name
        );
    }
    Ok(stats.accepted)
}

/// Advances the progress bar by the bytes actually read from the file.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    read: u64,
    accepted: u64,
    duplicates: u64,
    failed: u64,
}

/// Shapes messages with the source's policy (the one ingest [`Assembly`]) and commits them in
/// chunks.
struct Sink<'a> {
    engine: &'a Engine,
    shape: Shape,
    /// Cells arrive as text (CSV): values moved into traits or properties get their type back.
    text_cells: bool,
    assembly: Assembly<'a>,
    stats: Stats,
}

impl<'a> Sink<'a> {
    fn new(engine: &'a Engine, source: &Source, policy: &'a Policy, shape: Shape) -> Self {
        Self {
            engine,
            shape,
            text_cells: false,
            assembly: Assembly::new(source.id, policy, Utc::now()),
            stats: Stats::default(),
        }
    }

    /// Counts a row read; a row that starts a chunk stamps the chunk's receive time.
    fn read_one(&mut self) {
        if self.assembly.pending() == 0 {
            self.assembly.set_received_at(Utc::now());
        }
        self.stats.read += 1;
    }

    /// A parsed message; `at` says where it was ("line 12", "element 3") for failure reasons.
    fn message(&mut self, at: &str, mut raw: Value) -> anyhow::Result<()> {
        self.read_one();
        if let Value::Object(msg) = &mut raw
            && self.shape != Shape::Segment
        {
            *msg = reshape(&self.shape, std::mem::take(msg), self.text_cells);
        }
        if let Value::Object(msg) = &mut raw {
            // As on the HTTP routes: a key inside a message is a credential, not data to keep.
            msg.remove("writeKey");
            let has_id = match msg.get("messageId") {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(_) => true,
            };
            if !has_id {
                let id = derived_message_id(at, msg);
                msg.insert("messageId".into(), Value::String(id));
            }
        }
        self.assembly.add(raw, Some(at));
        self.flush_if_full()
    }

    /// A row that could not be read as a message at all.
    fn unreadable(&mut self, code: &str, reason: String, payload: String) -> anyhow::Result<()> {
        self.read_one();
        self.assembly.add_unreadable(code, reason, payload);
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> anyhow::Result<()> {
        if self.assembly.pending() >= CHUNK {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.assembly.pending() == 0 {
            return Ok(());
        }
        let (submission, _) = self.assembly.take();
        let Receipt {
            accepted,
            duplicates,
            failed,
            ..
        } = self
            .engine
            .append_blocking(submission)
            .context("writing to the inbox")?;
        self.stats.accepted += accepted as u64;
        self.stats.duplicates += duplicates as u64;
        self.stats.failed += failed as u64;
        Ok(())
    }
}

/// How rows map to messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// Rows are Segment messages already (`type`, `event`, `userId`, `properties.x` …).
    Segment,
    /// Rows are customers: an identify each; every column but the identifiers is a trait.
    Profiles,
    /// Rows are events (transactions): a track each, named by the `event` column or the given
    /// name; every column but the identifiers and the time is a property.
    Events(Option<String>),
}

/// Turns a flat row into a Segment message for [`Shape::Profiles`] and [`Shape::Events`].
fn reshape(shape: &Shape, row: Map<String, Value>, text_cells: bool) -> Map<String, Value> {
    let (kind, bag) = match shape {
        Shape::Profiles => ("identify", "traits"),
        _ => ("track", "properties"),
    };
    let mut msg = Map::new();
    let mut fields = Map::new();
    msg.insert("type".into(), Value::String(kind.into()));
    if let Shape::Events(Some(name)) = shape {
        msg.insert("event".into(), Value::String(name.clone()));
    }
    let as_text = |v: Value| match v {
        Value::String(s) => Value::String(s),
        Value::Number(n) => Value::String(n.to_string()),
        other => other,
    };
    for (key, value) in row {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "userId" | "user_id" => {
                msg.insert("userId".into(), as_text(value));
            }
            "anonymousId" | "anonymous_id" => {
                msg.insert("anonymousId".into(), as_text(value));
            }
            "messageId" | "message_id" => {
                msg.insert("messageId".into(), as_text(value));
            }
            "timestamp" | "context" => {
                msg.insert(key, value);
            }
            "event" if kind == "track" => {
                msg.insert("event".into(), as_text(value));
            }
            "type" => {}
            "traits" | "properties" => {
                if let Value::Object(inner) = value {
                    fields.extend(inner);
                }
            }
            _ => {
                let value = match value {
                    Value::String(s) if text_cells => typed(&s),
                    other => other,
                };
                let path: Vec<String> = key.split('.').map(str::to_string).collect();
                if path.iter().any(String::is_empty) {
                    fields.insert(key, value);
                } else {
                    insert_path(&mut fields, &path, value);
                }
            }
        }
    }
    msg.insert(bag.into(), Value::Object(fields));
    msg
}

/// Reads Parquet row groups as record batches and each row as a flat JSON object (columns by
/// name; structs become objects, lists arrays, timestamps RFC 3339 text).
fn read_parquet(path: &Path, bar: &ProgressBar, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    use cohort_lake::QueryResult;
    use cohort_lake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    bar.set_length(rows);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} rows {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(CHUNK)
        .build()
        .context("reading the Parquet file")?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.context("reading a Parquet row group")?;
        let n = batch.num_rows();
        // QueryResult renders Arrow rows as JSON the same way query results are rendered.
        let rendered = QueryResult {
            columns: Vec::new(),
            schema: schema.clone(),
            batches: vec![batch],
            truncated: false,
        }
        .to_json_rows()
        .context("converting Parquet rows")?;
        for object in rendered {
            row += 1;
            sink.message(&format!("row {row}"), Value::Object(object))?;
        }
        bar.inc(n as u64);
    }
    Ok(())
}

/// `import-` and 32 hex digits of SHA-256 over the position and the message: stable across runs
/// of the same file, distinct for identical rows at different positions.
fn derived_message_id(at: &str, msg: &Map<String, Value>) -> String {
    let mut hash = Sha256::new();
    hash.update(at.as_bytes());
    hash.update([0]);
    // serde_json's Map keeps keys sorted (no preserve_order feature), so this is canonical.
    hash.update(Value::Object(msg.clone()).to_string().as_bytes());
    format!("import-{}", &hex::encode(hash.finalize())[..32])
}

// ---------------------------------------------------------------------------------------------
// NDJSON

fn read_ndjson(mut reader: impl BufRead, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .context("reading the file")?
            == 0
        {
            return Ok(());
        }
        number += 1;
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t.trim(),
            Err(e) => {
                sink.unreadable(
                    "invalid_utf8",
                    format!("line {number}: not UTF-8 ({e})"),
                    String::from_utf8_lossy(&line).trim().to_string(),
                )?;
                continue;
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => sink.message(&format!("line {number}"), value)?,
            Err(e) => sink.unreadable(
                "invalid_json",
                format!("line {number}: not valid JSON ({e})"),
                text.to_string(),
            )?,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON: an array of messages (streamed, so a file larger than memory works) or `{"batch": [...]}`

fn read_json(reader: impl Read, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut failure = None;
    let top = de.deserialize_any(TopLevel {
        sink: &mut *sink,
        failure: &mut failure,
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let top = top.map_err(|e| {
        anyhow!("the file is not valid JSON ({e}); messages before that point were imported")
    })?;
    de.end()
        .map_err(|e| anyhow!("unexpected data after the JSON document ({e})"))?;
    if let Some(body) = top {
        // `{"batch": [...], "context": ...}`: the server's own batch expansion, so batch-level
        // context, integrations and sentAt are merged exactly as for HTTP. No size cap: the file
        // was already read.
        let limits = Limits {
            max_batch_events: usize::MAX,
            ..Limits::default()
        };
        let messages = expand(Route::Batch, Value::Object(body), &limits)
            .map_err(|e| anyhow!("{}: {}", e.code, e.message))?;
        for (index, message) in messages.into_iter().enumerate() {
            sink.message(&format!("batch element {}", index + 1), message)?;
        }
    }
    Ok(())
}

/// Streams the elements of a top-level array into the sink; collects a top-level object.
struct TopLevel<'s, 'a> {
    sink: &'s mut Sink<'a>,
    failure: &'s mut Option<anyhow::Error>,
}

impl<'de> Visitor<'de> for TopLevel<'_, '_> {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Segment messages or an object with a \"batch\" array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut index = 0usize;
        while let Some(value) = seq.next_element::<Value>()? {
            index += 1;
            if let Err(e) = self.sink.message(&format!("element {index}"), value) {
                *self.failure = Some(e);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut body = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            body.insert(key, value);
        }
        Ok(Some(body))
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Where a CSV column's cells go in the message.
#[derive(Debug, Clone, PartialEq)]
enum Column {
    /// A top-level field (`type`, `event`, `userId`, `timestamp`, …), kept as text.
    Top(String),
    /// `properties.a.b` → `{"properties": {"a": {"b": cell}}}`, with the cell's type detected.
    Nested(Vec<String>),
}

impl Column {
    fn parse(header: &str) -> Column {
        let header = header.trim();
        for root in ["properties", "traits", "context"] {
            if let Some(rest) = header.strip_prefix(root).and_then(|r| r.strip_prefix('.')) {
                let path: Vec<String> = std::iter::once(root.to_string())
                    .chain(rest.split('.').map(str::to_string))
                    .collect();
                if path.iter().all(|p| !p.is_empty()) {
                    return Column::Nested(path);
                }
            }
        }
        Column::Top(header.to_string())
    }
}

fn read_csv(reader: impl Read, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        // Rows with the wrong number of cells become failed events instead of stopping the import.
        .flexible(true)
        .from_reader(reader);
    let headers = csv
        .byte_headers()
        .context("reading the CSV header")?
        .clone();
    let columns: Vec<Column> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let text = String::from_utf8_lossy(h);
            let text = if i == 0 {
                text.trim_start_matches('\u{feff}').to_string()
            } else {
                text.into_owned()
            };
            Column::parse(&text)
        })
        .collect();
    if columns.is_empty()
        || columns
            .iter()
            .all(|c| matches!(c, Column::Top(name) if name.is_empty()))
    {
        bail!("the CSV file has no header row");
    }
    let mut record = csv::ByteRecord::new();
    loop {
        let more = csv
            .read_byte_record(&mut record)
            .context("reading the CSV file")?;
        if !more {
            return Ok(());
        }
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() == 1
            && record
                .get(0)
                .is_some_and(|c| c.iter().all(u8::is_ascii_whitespace))
        {
            continue;
        }
        if record.len() != columns.len() {
            sink.unreadable(
                "invalid_csv_row",
                format!(
                    "line {line}: {} cells, but the header has {} columns",
                    record.len(),
                    columns.len()
                ),
                raw_row(&record),
            )?;
            continue;
        }
        match csv_message(&columns, &record) {
            Ok(message) => sink.message(&format!("line {line}"), Value::Object(message))?,
            Err(why) => sink.unreadable(
                "invalid_csv_row",
                format!("line {line}: {why}"),
                raw_row(&record),
            )?,
        }
    }
}

/// The row as CSV text again, for the failed-events store.
fn raw_row(record: &csv::ByteRecord) -> String {
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    if writer.write_byte_record(record).is_err() {
        return String::new();
    }
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

fn csv_message(columns: &[Column], record: &csv::ByteRecord) -> Result<Map<String, Value>, String> {
    let mut msg = Map::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        let cell = std::str::from_utf8(cell).map_err(|e| format!("a cell is not UTF-8 ({e})"))?;
        if cell.is_empty() {
            continue;
        }
        match column {
            Column::Top(name) if name.is_empty() => {}
            Column::Top(name) => {
                msg.insert(name.clone(), Value::String(cell.to_string()));
            }
            Column::Nested(path) => insert_path(&mut msg, path, typed(cell)),
        }
    }
    if !msg.contains_key("type") {
        msg.insert("type".into(), Value::String("track".into()));
    }
    Ok(msg)
}

/// Puts `value` at `path`, creating objects on the way. Where a path runs into a non-object (say
/// both `properties.a` and `properties.a.b` exist), the rest of the path becomes one dotted key,
/// so no cell is lost.
fn insert_path(msg: &mut Map<String, Value>, path: &[String], value: Value) {
    let mut node = msg;
    for (i, key) in path.iter().enumerate() {
        if i + 1 == path.len() {
            node.insert(key.clone(), value);
            return;
        }
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            node.insert(path[i..].join("."), value);
            return;
        }
        match node.get_mut(key) {
            Some(Value::Object(next)) => node = next,
            _ => return,
        }
    }
}

/// A cell's JSON value: `true`/`false` are booleans, plain decimal numbers are numbers, the rest is
/// text. Only the canonical number forms count, not everything `f64::from_str` accepts: "+86…"
/// (a phone), "007" (a code), "NaN", "inf" or "1e5x" stay text, because turning them into numbers
/// would lose what the sender wrote.
fn typed(cell: &str) -> Value {
    match cell {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if is_plain_number(cell) {
        if let Ok(i) = cell.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(f) = cell.parse::<f64>()
            && let Some(n) = serde_json::Number::from_f64(f)
        {
            return Value::Number(n);
        }
    }
    Value::String(cell.to_string())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: JSON's own number grammar.
fn is_plain_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_plain_numbers_become_numbers() {
        assert_eq!(typed("42"), json!(42));
        assert_eq!(typed("-3.5"), json!(-3.5));
        assert_eq!(typed("1e3"), json!(1000.0));
        assert_eq!(typed("0"), json!(0));
        assert_eq!(typed("0.25"), json!(0.25));
        assert_eq!(typed("true"), json!(true));
        assert_eq!(typed("false"), json!(false));
        for text in [
            "007",
            "+8613800138000",
            "NaN",
            "inf",
            "1.",
            ".5",
            "1e",
            "12ab",
            " 1",
            "TRUE",
        ] {
            assert_eq!(typed(text), json!(text), "{text}");
        }
    }

    #[test]
    fn csv_columns_nest_and_empty_cells_are_omitted() {
        let columns: Vec<Column> = [
            "event",
            "userId",
            "properties.revenue",
            "properties.item.sku",
            "traits.vip",
            "context.ip",
            "timestamp",
        ]
        .iter()
        .map(|h| Column::parse(h))
        .collect();
        let record = csv::ByteRecord::from(vec![
            "Order Completed",
            "u1",
            "19.90",
            "A-1",
            "true",
            "1.2.3.4",
            "",
        ]);
        let msg = csv_message(&columns, &record).unwrap();
        assert_eq!(
            Value::Object(msg),
            json!({"type": "track", "event": "Order Completed", "userId": "u1",
                   "properties": {"revenue": 19.9, "item": {"sku": "A-1"}},
                   "traits": {"vip": true}, "context": {"ip": "1.2.3.4"}})
        );
    }

    #[test]
    fn conflicting_paths_keep_both_cells() {
        let mut msg = Map::new();
        insert_path(&mut msg, &["properties".into(), "a".into()], json!(1));
        insert_path(
            &mut msg,
            &["properties".into(), "a".into(), "b".into()],
            json!(2),
        );
        assert_eq!(
            Value::Object(msg),
            json!({"properties": {"a": 1, "a.b": 2}})
        );
    }

    #[test]
    fn format_follows_the_extension_then_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let probe = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            Format::resolve("auto", &path).unwrap()
        };
        assert_eq!(probe("a.jsonl", "{}"), Format::Ndjson);
        assert_eq!(probe("a.json", "{}"), Format::Json);
        assert_eq!(probe("a.CSV", "x"), Format::Csv);
        assert_eq!(probe("a.txt", "  [{}]"), Format::Json);
        assert_eq!(probe("a.txt", "{\"type\":\"track\"}\n"), Format::Ndjson);
        assert_eq!(probe("a.txt", "type,event\n"), Format::Csv);
        assert_eq!(
            Format::resolve("csv", &dir.path().join("a.json")).unwrap(),
            Format::Csv
        );
    }

    #[test]
    fn derived_ids_are_stable_and_positional() {
        let msg = json!({"type": "track", "event": "A", "userId": "u"});
        let msg = msg.as_object().unwrap();
        assert_eq!(
            derived_message_id("line 2", msg),
            derived_message_id("line 2", msg)
        );
        assert_ne!(
            derived_message_id("line 2", msg),
            derived_message_id("line 3", msg)
        );
        assert!(derived_message_id("line 2", msg).starts_with("import-"));
    }
}
