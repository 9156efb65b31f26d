//! Plain text tables for terminals.

use chrono::NaiveDate;

/// Columns the terminal shows for one character: two for East Asian wide
/// characters (CJK, Hangul, full-width forms), one otherwise. An
/// approximation of Unicode's East Asian Width that covers the scripts
/// customer data is in.
fn char_width(c: char) -> usize {
    let wide = matches!(c as u32,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x20000..=0x3FFFD);
    if wide { 2 } else { 1 }
}

fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// A table with a header line and a rule; the first `left` columns (labels)
/// are left-aligned, the others (numbers) right-aligned.
pub(crate) fn render(headers: &[String], rows: &[Vec<String>], left: usize) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, w) in widths.iter().enumerate() {
            let cell = cells.get(i).map(String::as_str).unwrap_or("");
            let pad = " ".repeat(w.saturating_sub(width(cell)));
            if i > 0 {
                out.push_str("  ");
            }
            if i < left {
                out.push_str(cell);
                out.push_str(&pad);
            } else {
                out.push_str(&pad);
                out.push_str(cell);
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&rule));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One series of a time-series table.
pub(crate) trait SeriesRow {
    fn label(&self) -> &str;
    /// The cells of bucket `i`, or the totals for `None`.
    fn cells(&self, bucket: Option<usize>) -> Vec<String>;
}

/// A time series in long form: one row per series and bucket, then the
/// series' total row; the columns are the bucket (headed `unit`), the series
/// label and `columns`.
pub(crate) fn series_table<S: SeriesRow>(
    unit: &str,
    columns: &[&str],
    buckets: &[NaiveDate],
    series: &[S],
) -> String {
    let mut headers = vec![unit.to_owned(), "series".to_owned()];
    headers.extend(columns.iter().map(|c| (*c).to_owned()));
    let mut rows = Vec::new();
    let row = |first: String, s: &S, bucket: Option<usize>| {
        let mut row = vec![first, s.label().to_owned()];
        row.extend(s.cells(bucket));
        row
    };
    for s in series {
        for (i, day) in buckets.iter().enumerate() {
            rows.push(row(day.to_string(), s, Some(i)));
        }
        rows.push(row("total".to_owned(), s, None));
    }
    render(&headers, &rows, 2)
}

/// A first table, then one per group under its label.
pub(crate) fn with_groups(
    first: String,
    groups: impl IntoIterator<Item = (String, String)>,
) -> String {
    let mut out = first;
    for (label, table) in groups {
        out.push_str(&format!("\n{label}\n"));
        out.push_str(&table);
    }
    out
}

/// A count.
pub(crate) fn int(n: u64) -> String {
    n.to_string()
}

/// The count at `i`, 0 past the end.
pub(crate) fn int_at(counts: &[u64], i: usize) -> String {
    int(counts.get(i).copied().unwrap_or(0))
}

/// A share as a percentage with one decimal, `-` when undefined.
pub(crate) fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

/// An amount with two decimals, `-` when undefined.
pub(crate) fn money(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
}

/// A duration in seconds as `3d 4h`, `2h 5m`, `4m 10s` or `12s`.
pub(crate) fn duration(secs: Option<f64>) -> String {
    let Some(secs) = secs else {
        return "-".to_owned();
    };
    let s = secs.round().max(0.0) as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_with_wide_characters() {
        let text = render(
            &["city".into(), "n".into()],
            &[
                vec!["上海".into(), "12".into()],
                vec!["Paris".into(), "3".into()],
            ],
            1,
        );
        assert_eq!(text, "city    n\n-----  --\n上海   12\nParis   3\n");
        assert_eq!(duration(Some(93_784.0)), "1d 2h");
        assert_eq!(duration(Some(61.0)), "1m 1s");
        assert_eq!(percent(Some(0.5)), "50.0%");
        assert_eq!(percent(None), "-");
    }

    struct Counts(&'static str, Vec<u64>, u64);

    impl SeriesRow for Counts {
        fn label(&self) -> &str {
            self.0
        }
        fn cells(&self, bucket: Option<usize>) -> Vec<String> {
            vec![bucket.map_or(int(self.2), |i| int_at(&self.1, i))]
        }
    }

    #[test]
    fn series_tables_have_a_row_per_series_and_bucket_then_a_total() {
        let days = [
            NaiveDate::from_ymd_opt(2024, 5, 1).unwrap_or_default(),
            NaiveDate::from_ymd_opt(2024, 5, 2).unwrap_or_default(),
        ];
        let text = series_table(
            "day",
            &["n"],
            &days,
            &[Counts("all", vec![3, 12], 14), Counts("上海", vec![1], 1)],
        );
        assert_eq!(
            text,
            "day         series   n\n\
             ----------  ------  --\n\
             2024-05-01  all      3\n\
             2024-05-02  all     12\n\
             total       all     14\n\
             2024-05-01  上海     1\n\
             2024-05-02  上海     0\n\
             total       上海     1\n"
        );
        assert_eq!(
            with_groups("t\n".into(), [("g".to_owned(), "u\n".to_owned())]),
            "t\n\ng\nu\n"
        );
    }
}
