//! Two source-level adjustments made before liquid parses a template.
//!
//! liquid has no hook at the end of an output's filter chain (its issue 68, open since 2016), so
//! HTML auto-escaping and Ruby's number printing cannot be attached to `{{ }}` after parsing.
//! Instead every `{{ expression }}` gets one more filter, `{{ expression | __cohort_html }}` (or
//! `__cohort_text`), before liquid parses the template. Finding outputs needs only the lexical
//! structure of liquid's grammar (`liquid-core`'s `grammar.pest`): `{{`/`{%` open, `}}`/`%}`
//! close (with an optional `-`), string literals are quoted with `'` or `"` without escapes, and
//! `{% raw %}…{% endraw %}` is text. liquid parses the result; the template as written is parsed
//! again only to report a syntax error at its real position.
//!
//! Braze writes `{% abort_message("reason") %}`, which liquid's tag grammar cannot tokenise; the
//! parentheses are replaced by spaces (same length, so error positions do not move).

use std::borrow::Cow;

use super::filters::{FINISH_HTML, FINISH_TEXT};

/// One `{% %}` or `{{ }}` found in the source.
struct Delimited {
    /// Byte offset of the opening `{`.
    start: usize,
    /// Byte offset just past the closing `}`.
    end: usize,
    /// True for `{{ }}`.
    output: bool,
}

/// Byte offset of the `}}`/`%}` closing the delimiter opened before `from`, skipping string
/// literals; `None` when it is never closed (liquid then reports the error).
fn closing(source: &str, from: usize, close: u8) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                let rest = &bytes[i + 1..];
                i += 1 + rest.iter().position(|&b| b == quote)? + 1;
            }
            b if b == close && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The next `{{ }}` or `{% %}` at or after `from`.
fn next_delimited(source: &str, from: usize) -> Option<Delimited> {
    let bytes = source.as_bytes();
    let mut i = from;
    while i + 1 < bytes.len() {
        if bytes[i] == b'{' && matches!(bytes[i + 1], b'{' | b'%') {
            let output = bytes[i + 1] == b'{';
            let close = if output { b'}' } else { b'%' };
            let at = closing(source, i + 2, close)?;
            return Some(Delimited {
                start: i,
                end: at + 2,
                output,
            });
        }
        i += 1;
    }
    None
}

/// The tag's name: the identifier after `{%`, an optional `-` and whitespace.
fn tag_name(tag: &str) -> &str {
    let inner = tag[2..].trim_start_matches('-').trim_start();
    let end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    &inner[..end]
}

/// Every `{{ }}`/`{% %}` outside `{% raw %}` blocks, in order.
fn delimiters(source: &str) -> Vec<Delimited> {
    let mut found = Vec::new();
    let mut from = 0;
    let mut in_raw = false;
    while let Some(d) = next_delimited(source, from) {
        from = d.end;
        if in_raw {
            if !d.output && tag_name(&source[d.start..d.end]) == "endraw" {
                in_raw = false;
                found.push(d);
            }
            continue;
        }
        if !d.output && tag_name(&source[d.start..d.end]) == "raw" {
            in_raw = true;
        }
        found.push(d);
    }
    found
}

/// Replaces the parentheses of Braze's `{% abort_message("reason") %}` with spaces.
pub(crate) fn normalize(source: &str) -> Cow<'_, str> {
    let mut out: Option<Vec<u8>> = None;
    for d in delimiters(source) {
        let tag = &source[d.start..d.end];
        if d.output || tag_name(tag) != "abort_message" {
            continue;
        }
        let name_at = d.start + tag.find("abort_message").unwrap_or(0) + "abort_message".len();
        let inner_end = if source[..d.end - 2].ends_with('-') {
            d.end - 3
        } else {
            d.end - 2
        };
        let args = &source[name_at..inner_end];
        let open = args.len() - args.trim_start().len();
        let close = args.trim_end().len();
        if args.trim_start().starts_with('(') && args.trim_end().ends_with(')') && close > open {
            let bytes = out.get_or_insert_with(|| source.as_bytes().to_vec());
            bytes[name_at + open] = b' ';
            bytes[name_at + close - 1] = b' ';
        }
    }
    match out {
        // Only ASCII parentheses were replaced by ASCII spaces: still UTF-8.
        Some(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        None => Cow::Borrowed(source),
    }
}

/// True when the last filter of the output's chain is `raw`.
fn ends_with_raw(expression: &str) -> bool {
    // The last `|` outside string literals starts the last filter.
    let bytes = expression.as_bytes();
    let mut last_bar = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => match bytes[i + 1..].iter().position(|&b| b == quote) {
                Some(n) => i += n + 2,
                None => break,
            },
            b'|' => {
                last_bar = Some(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    let Some(bar) = last_bar else {
        return false;
    };
    let filter = expression[bar + 1..].trim_start();
    let name_end = filter
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(filter.len());
    &filter[..name_end] == "raw"
}

/// Appends the output finisher to every `{{ }}`: the HTML one (print, escape once) unless `html`
/// is false or the output ends in `| raw`, else the text one (print).
pub(crate) fn add_finishers(source: &str, html: bool) -> String {
    let mut out = String::with_capacity(source.len() + source.len() / 8);
    let mut copied = 0;
    for d in delimiters(source).into_iter().filter(|d| d.output) {
        // Insert before `}}`, or before `-}}` so whitespace control keeps working.
        let close = if source[..d.end - 2].ends_with('-') {
            d.end - 3
        } else {
            d.end - 2
        };
        let expression = &source[d.start + 2..close];
        let finisher = if html && !ends_with_raw(expression) {
            FINISH_HTML
        } else {
            FINISH_TEXT
        };
        out.push_str(&source[copied..close]);
        out.push_str(" | ");
        out.push_str(finisher);
        out.push(' ');
        copied = close;
    }
    out.push_str(&source[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishers_go_before_the_closing_delimiter() {
        assert_eq!(
            add_finishers("Hi {{ name }}!", true),
            "Hi {{ name  | __cohort_html }}!"
        );
        assert_eq!(
            add_finishers("{{- name -}}", false),
            "{{- name  | __cohort_text -}}"
        );
        assert_eq!(
            add_finishers("{{ body | raw }}", true),
            "{{ body | raw  | __cohort_text }}"
        );
        assert_eq!(
            add_finishers("{{ 'a | raw' }}", true),
            "{{ 'a | raw'  | __cohort_html }}"
        );
    }

    #[test]
    fn strings_and_raw_blocks_are_skipped() {
        assert_eq!(
            add_finishers("{{ \"}}\" }}", true),
            "{{ \"}}\"  | __cohort_html }}"
        );
        assert_eq!(
            add_finishers("{% assign x = \"{{ y }}\" %}{{ x }}", true),
            "{% assign x = \"{{ y }}\" %}{{ x  | __cohort_html }}"
        );
        assert_eq!(
            add_finishers("{% raw %}{{ x }}{% endraw %}{{ y }}", true),
            "{% raw %}{{ x }}{% endraw %}{{ y  | __cohort_html }}"
        );
        assert_eq!(add_finishers("{{ unclosed", true), "{{ unclosed");
    }

    #[test]
    fn braze_abort_message_parentheses() {
        let source = "{% abort_message(\"no name\") %}";
        let normalized = normalize(source);
        assert_eq!(normalized, "{% abort_message \"no name\"  %}");
        assert_eq!(normalized.len(), source.len());
        assert_eq!(
            normalize("{%- abort_message() -%}"),
            "{%- abort_message   -%}"
        );
        assert_eq!(
            normalize("{% abort_message \"x\" %}"),
            "{% abort_message \"x\" %}"
        );
    }
}
