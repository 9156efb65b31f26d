//! Plain text tables for terminals.

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

/// A count.
pub(crate) fn int(n: u64) -> String {
    n.to_string()
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
}
