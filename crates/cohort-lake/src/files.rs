//! File layout of the lake and the visibility rule shared by the writer, the
//! compactor and the reader.
//!
//! Layout: `<data_dir>/lake/events/date=YYYY-MM-DD/part-<first_seq>-<last_seq>.parquet` for the
//! events that arrive within [`LATE_AFTER_DAYS`] of their day, and
//! `<data_dir>/lake/events/late/part-<first_seq>-<last_seq>.parquet` for the rest (see
//! [`Area`]). Each of these directories is an *area*.
//!
//! A file named `part-A-B.parquet` in an area holds *every* event of that area
//! whose seq lies in `A..=B`. The writer keeps that true by writing contiguous
//! slices of one seq-ordered stream, and the compactor by merging all visible
//! files of an area. It follows that a file whose range lies inside the range of
//! another file of the same area holds nothing new: the reader ignores it. That
//! one rule makes compaction atomic for readers (the merged file appears with
//! one `rename`, and from then on hides the files it replaces) and makes a
//! crash between the rename and the deletes harmless.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::LakeError;

pub(crate) const PART_PREFIX: &str = "part-";
pub(crate) const PART_SUFFIX: &str = ".parquet";

/// A seq range `first..=last` as encoded in a file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SeqRange {
    pub first: i64,
    pub last: i64,
}

pub(crate) fn part_file_name(range: SeqRange) -> String {
    format!("{PART_PREFIX}{}-{}{PART_SUFFIX}", range.first, range.last)
}

/// Parses `part-<first>-<last>.parquet`; any other name (temporary files,
/// the journal, files dropped there by hand) is not part of the lake.
pub(crate) fn parse_part_file_name(name: &str) -> Option<SeqRange> {
    let core = name.strip_prefix(PART_PREFIX)?.strip_suffix(PART_SUFFIX)?;
    let (first, last) = core.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(first) || !all_digits(last) {
        return None;
    }
    let range = SeqRange {
        first: first.parse().ok()?,
        last: last.parse().ok()?,
    };
    (range.first <= range.last).then_some(range)
}

/// Events dated more than this many days before the day they were received go to the late area.
pub const LATE_AFTER_DAYS: i64 = 31;

/// The directory of the late area, beside the day directories.
pub(crate) const LATE_DIR: &str = "late";

/// Where an event is stored.
///
/// An event goes to its day's directory when it is received on its day, up to
/// [`LATE_AFTER_DAYS`] later, or up to a day before it (clock skew); any other event goes to the
/// late area, one directory whose files carry the `date` as a column and are sorted by it. Day
/// directories thus grow by about one a day whatever clients send: a client that dates events
/// over thousands of distinct days (a hostile write key, a broken device clock, a historical
/// import) adds files to the late area only, which compaction keeps to a few large files, instead
/// of a directory and a file per day that every later query would have to list and open.
///
/// The rule depends on the event alone (its time and its receive time), so the writer and a
/// reader of rows not yet written agree on where a row belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// `date=YYYY-MM-DD`: the events of one UTC day, received in time.
    Day(NaiveDate),
    /// `late`: every other event.
    Late,
}

impl Area {
    /// The area of an event of UTC day `date` received on UTC day `received`.
    pub fn of(date: NaiveDate, received: NaiveDate) -> Area {
        let lateness = received.signed_duration_since(date).num_days();
        if (-1..=LATE_AFTER_DAYS).contains(&lateness) {
            Area::Day(date)
        } else {
            Area::Late
        }
    }

    /// The directory name of this area under the events directory.
    pub(crate) fn dir_name(self) -> String {
        match self {
            Area::Day(date) => format!("date={}", date.format("%Y-%m-%d")),
            Area::Late => LATE_DIR.to_owned(),
        }
    }

    /// The area a directory name denotes, if any.
    pub(crate) fn parse_dir_name(name: &str) -> Option<Area> {
        if name == LATE_DIR {
            return Some(Area::Late);
        }
        let value = name.strip_prefix("date=")?;
        NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .ok()
            .map(Area::Day)
    }
}

impl std::fmt::Display for Area {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dir_name())
    }
}

/// Something named by a seq range.
pub(crate) type Ranged<T> = (SeqRange, T);

/// Splits the ranges found in one area's directory into (visible, covered).
///
/// Visible ranges come back sorted by `first`. A range is covered when another
/// range of the same area contains it; equal ranges cannot occur since the
/// range is the file name.
pub(crate) fn split_visible<T: Clone>(items: &[Ranged<T>]) -> (Vec<Ranged<T>>, Vec<Ranged<T>>) {
    let mut sorted: Vec<&Ranged<T>> = items.iter().collect();
    // Widest first among equal starts, so that it hides the narrower ones.
    sorted.sort_by(|a, b| a.0.first.cmp(&b.0.first).then(b.0.last.cmp(&a.0.last)));
    let mut visible = Vec::new();
    let mut covered = Vec::new();
    let mut reach: Option<i64> = None;
    for item in sorted {
        match reach {
            // Every earlier range starts at or before this one, so the one that
            // reaches furthest contains this range iff it reaches past its end.
            Some(r) if r >= item.0.last => covered.push(item.clone()),
            _ => {
                reach = Some(item.0.last);
                visible.push(item.clone());
            }
        }
    }
    (visible, covered)
}

/// One Parquet file of the lake.
#[derive(Clone, Debug)]
pub(crate) struct PartFile {
    pub area: Area,
    pub range: SeqRange,
    pub path: PathBuf,
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> LakeError {
    LakeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Area directories under `events_dir`: the days sorted by date, then the late area.
pub(crate) fn list_areas(events_dir: &Path) -> Result<Vec<(Area, PathBuf)>, LakeError> {
    let mut days = Vec::new();
    let entries = match std::fs::read_dir(events_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(days),
        Err(e) => return Err(io_err(events_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(events_dir, e))?;
        let name = entry.file_name();
        if let Some(area) = name.to_str().and_then(Area::parse_dir_name) {
            days.push((area, entry.path()));
        }
    }
    days.sort();
    Ok(days)
}

/// All part files of one area's directory, covered ones included.
pub(crate) fn list_parts(area: Area, day_dir: &Path) -> Result<Vec<PartFile>, LakeError> {
    let mut parts = Vec::new();
    let entries = match std::fs::read_dir(day_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(parts),
        Err(e) => return Err(io_err(day_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(day_dir, e))?;
        if let Some(range) = entry.file_name().to_str().and_then(parse_part_file_name) {
            parts.push(PartFile {
                area,
                range,
                path: entry.path(),
            });
        }
    }
    Ok(parts)
}

/// Visible and covered part files of an area.
pub(crate) fn area_files(
    area: Area,
    day_dir: &Path,
) -> Result<(Vec<PartFile>, Vec<PartFile>), LakeError> {
    let parts = list_parts(area, day_dir)?;
    let keyed: Vec<(SeqRange, PartFile)> = parts.into_iter().map(|p| (p.range, p)).collect();
    let (visible, covered) = split_visible(&keyed);
    Ok((
        visible.into_iter().map(|(_, p)| p).collect(),
        covered.into_iter().map(|(_, p)| p).collect(),
    ))
}

/// Highest seq named by any part file: everything up to it is in the lake.
pub(crate) fn max_seq(events_dir: &Path) -> Result<Option<i64>, LakeError> {
    let mut max: Option<i64> = None;
    for (area, dir) in list_areas(events_dir)? {
        for part in list_parts(area, &dir)? {
            max = Some(max.map_or(part.range.last, |m| m.max(part.range.last)));
        }
    }
    Ok(max)
}

/// Records the highest seq of the last whole append; see [`complete_seq`].
pub(crate) const COMPLETE_MARK: &str = "_complete_seq";

/// Highest seq up to which the lake is complete, as a reader in another process must see it.
///
/// An append spanning several days renames its day files into place one by one, so the highest
/// seq named by the files on disk ([`max_seq`]) can belong to an append whose other days are not
/// visible yet. The writer therefore records the position of each whole append in a small file,
/// replaced atomically after the append's last rename. Lakes written before the mark existed fall
/// back to the file names, as does a mark a crash left unreadable (the writer rewrites it when it
/// next opens the lake).
pub(crate) fn complete_seq(events_dir: &Path) -> Result<Option<i64>, LakeError> {
    let path = events_dir.join(COMPLETE_MARK);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "" => Ok(None),
            t => match t.parse::<i64>() {
                Ok(seq) => Ok(Some(seq)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable lake mark; using file names");
                    max_seq(events_dir)
                }
            },
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => max_seq(events_dir),
        Err(e) => Err(io_err(&path, e)),
    }
}

/// Makes renames and creations in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), LakeError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: i64, last: i64) -> SeqRange {
        SeqRange { first, last }
    }

    #[test]
    fn names_round_trip_and_reject_strangers() {
        assert_eq!(part_file_name(r(5, 17)), "part-5-17.parquet");
        assert_eq!(parse_part_file_name("part-5-17.parquet"), Some(r(5, 17)));
        for bad in [
            ".part-5-17.parquet.tmp",
            "part-5-17.parquet.tmp",
            "part--1-3.parquet",
            "part-9-3.parquet",
            "part-a-3.parquet",
            "part-3.parquet",
            "_commit.json",
        ] {
            assert_eq!(parse_part_file_name(bad), None, "{bad}");
        }
        let d = NaiveDate::from_ymd_opt(2024, 3, 9).unwrap_or_default();
        assert_eq!(Area::Day(d).dir_name(), "date=2024-03-09");
        assert_eq!(Area::parse_dir_name("date=2024-03-09"), Some(Area::Day(d)));
        assert_eq!(Area::parse_dir_name("late"), Some(Area::Late));
        assert_eq!(Area::parse_dir_name("date=2024-3"), None);
        assert_eq!(Area::parse_dir_name("lately"), None);
    }

    #[test]
    fn events_received_long_after_their_day_or_before_it_are_late() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        let received = day(2026, 12, 3);
        for (date, area) in [
            (day(2026, 12, 3), Area::Day(day(2026, 12, 3))),
            (day(2026, 12, 4), Area::Day(day(2026, 12, 4))),
            (day(2026, 11, 2), Area::Day(day(2026, 11, 2))),
            (day(2026, 11, 1), Area::Late),
            (day(2026, 12, 5), Area::Late),
            (day(1997, 6, 1), Area::Late),
        ] {
            assert_eq!(Area::of(date, received), area, "{date}");
        }
    }

    #[test]
    fn covered_ranges_are_hidden() {
        let items = vec![
            (r(1, 10), "a"),
            (r(11, 20), "b"),
            (r(1, 20), "merged"),
            (r(21, 30), "c"),
            (r(5, 8), "replay"),
        ];
        let (visible, covered) = split_visible(&items);
        let v: Vec<_> = visible.iter().map(|(_, n)| *n).collect();
        let mut c: Vec<_> = covered.iter().map(|(_, n)| *n).collect();
        c.sort_unstable();
        assert_eq!(v, vec!["merged", "c"]);
        assert_eq!(c, vec!["a", "b", "replay"]);
    }

    #[test]
    fn disjoint_ranges_all_visible() {
        let items = vec![(r(7, 9), 2), (r(1, 3), 1), (r(10, 10), 3)];
        let (visible, covered) = split_visible(&items);
        assert_eq!(
            visible.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(covered.is_empty());
    }
}
