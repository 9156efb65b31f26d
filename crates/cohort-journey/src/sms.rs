//! SMS length and parts, and opt-out keywords in inbound replies.
//!
//! A message is sent in GSM-7 when every character is in the GSM 03.38 basic or extension table,
//! otherwise in UCS-2. One message holds 160 septets (GSM-7) or 70 UTF-16 code units (UCS-2);
//! a longer one is sent as concatenated parts of 153 septets or 67 code units (each part carries
//! a header). Extension characters (`^ { } [ ] ~ \ | €` and form feed) take two septets, and an
//! emoji outside the Basic Multilingual Plane two code units. A part never splits a character,
//! so neither an escape pair nor a surrogate pair is ever cut, and never splits a grapheme
//! cluster either (an emoji with a skin tone, a flag, a ZWJ family), as Twilio counts segments.
//!
//! ```
//! use cohort_journey::sms::{self, Encoding, LengthPolicy};
//!
//! let length = sms::measure("【Cohort】您的验证码是 123456，5 分钟内有效。回复TD退订");
//! assert_eq!((length.encoding, length.segments), (Encoding::Ucs2, 1));
//!
//! // 152 'x', a '}' (two septets), 152 'x': 306 septets, yet three parts, because the escape
//! // pair cannot straddle the end of the first part.
//! let text = format!("{}}}{}", "x".repeat(152), "x".repeat(152));
//! assert_eq!(sms::measure(&text).segments, 3);
//! let parts = sms::parts(&text);
//! let septets: Vec<usize> = parts.iter().map(|p| sms::measure(p).units).collect();
//! assert_eq!(septets, [152, 153, 1]);
//!
//! // A template that may send at most two parts drops the rest.
//! let sent = sms::prepare(text, &LengthPolicy::Truncate { max_parts: 2 })?;
//! assert!(sent.truncated);
//! assert_eq!(sent.length.segments, 2);
//!
//! assert!(sms::is_opt_out(" 退订 "));
//! assert_eq!(sms::opt_out_keyword("stop"), Some("STOP"));
//! assert!(!sms::is_opt_out("please stop"));
//! # Ok::<(), sms::SmsError>(())
//! ```

use std::ops::Range;

use unicode_segmentation::UnicodeSegmentation;

/// How an SMS is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    /// The GSM 03.38 7-bit default alphabet (with its extension table).
    #[serde(rename = "GSM-7")]
    Gsm7,
    /// UTF-16 (what carriers call UCS-2).
    #[serde(rename = "UCS-2")]
    Ucs2,
}

impl Encoding {
    /// The usual name: `GSM-7` or `UCS-2` (as Twilio reports it).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }

    /// Units (septets or code units) in a message sent as one part: 160 or 70.
    pub const fn single_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => 160,
            Encoding::Ucs2 => 70,
        }
    }

    /// Units in each part of a concatenated message: 153 or 67.
    pub const fn part_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => 153,
            Encoding::Ucs2 => 67,
        }
    }
}

/// Septets `c` takes in GSM-7: 1 in the basic table, 2 in the extension table (escape + code),
/// `None` when GSM-7 cannot carry it. Exactly the GSM 03.38 tables: common characters such as
/// `` ` ``, `ç` (only `Ç` is in the table), `á`, `’`, `…`, `°` and all of Chinese are not.
pub fn gsm7_septets(c: char) -> Option<usize> {
    match c {
        // Basic table, in code order 0x00–0x7F (0x1B is the escape to the extension table).
        '@'
        | '£'
        | '$'
        | '¥'
        | 'è'
        | 'é'
        | 'ù'
        | 'ì'
        | 'ò'
        | 'Ç'
        | '\n'
        | 'Ø'
        | 'ø'
        | '\r'
        | 'Å'
        | 'å'
        | 'Δ'
        | '_'
        | 'Φ'
        | 'Γ'
        | 'Λ'
        | 'Ω'
        | 'Π'
        | 'Ψ'
        | 'Σ'
        | 'Θ'
        | 'Ξ'
        | 'Æ'
        | 'æ'
        | 'ß'
        | 'É'
        | ' '
        | '!'
        | '"'
        | '#'
        | '¤'
        | '%'
        | '&'
        | '\''
        | '('
        | ')'
        | '*'
        | '+'
        | ','
        | '-'
        | '.'
        | '/'
        | '0'..='9'
        | ':'
        | ';'
        | '<'
        | '='
        | '>'
        | '?'
        | '¡'
        | 'A'..='Z'
        | 'Ä'
        | 'Ö'
        | 'Ñ'
        | 'Ü'
        | '§'
        | '¿'
        | 'a'..='z'
        | 'ä'
        | 'ö'
        | 'ñ'
        | 'ü'
        | 'à' => Some(1),
        // Extension table: form feed, ^ { } \ [ ~ ] | €.
        '\u{c}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        _ => None,
    }
}

/// The encoding `text` is sent in: GSM-7 if every character has a GSM-7 code, else UCS-2.
pub fn encoding(text: &str) -> Encoding {
    if text.chars().all(|c| gsm7_septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// How long a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Length {
    /// The encoding it is sent in.
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Messages (segments) it is sent as, and billed as; 1 for an empty text.
    pub segments: usize,
}

/// The pieces a part boundary may fall between, as (byte range, units).
///
/// In GSM-7 every character is one piece (an extension character's escape pair is one
/// character). In UCS-2 a piece is a grapheme cluster, except that CR LF counts as two (as
/// Twilio counts it) and a cluster longer than a whole part is cut between its characters,
/// which is the only way to send it.
fn pieces(text: &str, encoding: Encoding) -> Vec<(Range<usize>, usize)> {
    let mut out = Vec::with_capacity(text.len());
    match encoding {
        Encoding::Gsm7 => {
            for (i, c) in text.char_indices() {
                out.push((i..i + c.len_utf8(), gsm7_septets(c).unwrap_or(1)));
            }
        }
        Encoding::Ucs2 => {
            for (i, grapheme) in text.grapheme_indices(true) {
                let units: usize = grapheme.chars().map(char::len_utf16).sum();
                if grapheme == "\r\n" || units > encoding.part_capacity() {
                    for (j, c) in grapheme.char_indices() {
                        out.push((i + j..i + j + c.len_utf8(), c.len_utf16()));
                    }
                } else {
                    out.push((i..i + grapheme.len(), units));
                }
            }
        }
    }
    out
}

/// The units `text` takes in `encoding`: the sum over its pieces, which does not depend on
/// where the pieces fall, so it is counted without finding them.
fn units(text: &str, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Gsm7 => text.chars().map(|c| gsm7_septets(c).unwrap_or(1)).sum(),
        Encoding::Ucs2 => text.chars().map(char::len_utf16).sum(),
    }
}

/// Byte ranges of the parts, and the total units. Only a text longer than one message is cut
/// into pieces (grapheme clusters in UCS-2, the costly part of measuring a message).
fn layout(text: &str, encoding: Encoding) -> (Vec<Range<usize>>, usize) {
    let total = units(text, encoding);
    if total <= encoding.single_capacity() {
        let whole: Range<usize> = 0..text.len();
        return (vec![whole], total);
    }
    let pieces = pieces(text, encoding);
    let capacity = encoding.part_capacity();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (range, units) in pieces {
        if used + units > capacity {
            parts.push(start..range.start);
            start = range.start;
            used = 0;
        }
        used += units;
    }
    parts.push(start..text.len());
    (parts, total)
}

/// Measures `text`: its encoding, units and segment count (what Twilio's
/// `sms-segments-calculator` reports as `encodingName` and `segmentsCount`).
pub fn measure(text: &str) -> Length {
    let encoding = encoding(text);
    let (parts, units) = layout(text, encoding);
    Length {
        encoding,
        units,
        segments: parts.len(),
    }
}

/// The parts `text` is sent as, in order; one part when it fits in a single message.
pub fn parts(text: &str) -> Vec<&str> {
    let (parts, _) = layout(text, encoding(text));
    parts.into_iter().map(|r| &text[r]).collect()
}

/// The longest prefix of `text` that is sent in at most `max_parts` segments, cut between
/// pieces (never inside a character or grapheme cluster). With `max_parts` 0, the empty text.
///
/// Cutting a UCS-2 text can leave only GSM-7 characters, which are packed more densely; the
/// prefix is then the longest one that fits in GSM-7.
pub fn truncate(text: &str, max_parts: usize) -> &str {
    let encoding = encoding(text);
    let cut = truncate_in(text, encoding, max_parts);
    if encoding == Encoding::Ucs2 && self::encoding(cut) == Encoding::Gsm7 {
        let gsm_end = text
            .char_indices()
            .find(|&(_, c)| gsm7_septets(c).is_none())
            .map_or(text.len(), |(i, _)| i);
        return truncate_in(&text[..gsm_end], Encoding::Gsm7, max_parts);
    }
    cut
}

fn truncate_in(text: &str, encoding: Encoding, max_parts: usize) -> &str {
    if max_parts == 0 {
        return "";
    }
    let (parts, _) = layout(text, encoding);
    if parts.len() <= max_parts {
        return text;
    }
    if max_parts == 1 {
        // One part holds a whole message's units, more than a part of a concatenated one.
        let mut used = 0;
        let mut end = 0;
        for (range, units) in pieces(text, encoding) {
            if used + units > encoding.single_capacity() {
                break;
            }
            used += units;
            end = range.end;
        }
        return &text[..end];
    }
    match parts.get(max_parts - 1) {
        Some(last) => &text[..last.end],
        None => text,
    }
}

/// What a template does with a message longer than one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum LengthPolicy {
    /// Send every part the text needs.
    #[default]
    Split,
    /// Send at most `max_parts` parts; the rest of the text is dropped.
    Truncate {
        /// Most parts to send (at least 1).
        max_parts: usize,
    },
}

/// A message ready to hand to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The text to send (shortened if the policy truncated it); [`parts`] splits it.
    pub text: String,
    /// The text's length.
    pub length: Length,
    /// True when the policy dropped part of the text.
    pub truncated: bool,
}

/// Why a message could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    /// `LengthPolicy::Truncate` with `max_parts` 0.
    #[error("a truncate policy must allow at least one part")]
    ZeroParts,
}

/// Applies a template's length policy to a rendered message, cutting it in place.
pub fn prepare(mut text: String, policy: &LengthPolicy) -> Result<Prepared, SmsError> {
    let kept = match *policy {
        LengthPolicy::Split => text.len(),
        LengthPolicy::Truncate { max_parts: 0 } => return Err(SmsError::ZeroParts),
        LengthPolicy::Truncate { max_parts } => truncate(&text, max_parts).len(),
    };
    let truncated = kept < text.len();
    text.truncate(kept);
    let length = measure(&text);
    Ok(Prepared {
        text,
        length,
        truncated,
    })
}

/// Replies that unsubscribe the sender from SMS: the words carriers and regulators expect
/// (CTIA in the US; 退订, TD and T in China).
pub const OPT_OUT_KEYWORDS: [&str; 9] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "退订",
    "TD",
    "T",
];

/// Punctuation a reply may carry around its keyword ("STOP.", "退订。").
fn is_edge_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '。' | '，' | '！' | '？' | '、' | '～' | '“' | '”' | '‘' | '’' | '…'
        )
}

/// The opt-out keyword an inbound reply is, if it is one.
///
/// The whole reply must be the keyword: case does not matter, surrounding whitespace and
/// punctuation are ignored, and full-width letters (ＳＴＯＰ, ｔｄ, typed with a Chinese input
/// method) count as their ASCII forms. "Please stop" is not an opt-out.
pub fn opt_out_keyword(reply: &str) -> Option<&'static str> {
    let trimmed = reply.trim_matches(|c: char| c.is_whitespace() || is_edge_punctuation(c));
    let normalized: String = trimmed
        .chars()
        .map(|c| match c {
            // Full-width forms of ASCII ! to ~ sit at a fixed offset.
            '\u{ff01}'..='\u{ff5e}' => char::from_u32(u32::from(c) - 0xfee0).unwrap_or(c),
            c => c,
        })
        .map(|c| c.to_ascii_uppercase())
        .collect();
    OPT_OUT_KEYWORDS
        .iter()
        .copied()
        .find(|keyword| *keyword == normalized)
}

/// True when an inbound reply asks to stop SMS (see [`opt_out_keyword`]).
pub fn is_opt_out(reply: &str) -> bool {
    opt_out_keyword(reply).is_some()
}

#[cfg(test)]
mod tests {
    use super::Encoding::{Gsm7, Ucs2};
    use super::*;

    /// (text as pieces repeated, encoding, segments, units per segment), printed by
    /// `tests/clients/node/sms_segments.mjs` from Twilio's open-source calculator,
    /// `sms-segments-calculator` 1.3.0 (npm): `new SegmentedMessage(text, "auto")`,
    /// `encodingName`, `segmentsCount`, and each segment's `messageSizeInBits()` / 7 or 16.
    #[allow(clippy::type_complexity)]
    const TWILIO: &[(&[(&str, usize)], Encoding, usize, &[usize])] = &[
        (&[("", 1)], Gsm7, 1, &[0]),
        (&[("Hello", 1)], Gsm7, 1, &[5]),
        (
            &[(
                "@£$¥èéùìòÇ\u{a}Øø\u{d}ÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà",
                1,
            )],
            Gsm7,
            1,
            &[127],
        ),
        (&[("^{}[]~\\|€\u{c}", 1)], Gsm7, 1, &[20]),
        (&[("x", 160)], Gsm7, 1, &[160]),
        (&[("x", 161)], Gsm7, 2, &[153, 8]),
        (&[("x", 306)], Gsm7, 2, &[153, 153]),
        (&[("x", 307)], Gsm7, 3, &[153, 153, 1]),
        (&[("x", 459)], Gsm7, 3, &[153, 153, 153]),
        (&[("x", 460)], Gsm7, 4, &[153, 153, 153, 1]),
        (&[("x", 612)], Gsm7, 4, &[153, 153, 153, 153]),
        (&[("x", 613)], Gsm7, 5, &[153, 153, 153, 153, 1]),
        (&[("{", 80)], Gsm7, 1, &[160]),
        (&[("{", 80), ("x", 1)], Gsm7, 2, &[152, 9]),
        (&[("€", 76), ("x", 7)], Gsm7, 1, &[159]),
        (&[("\u{c}", 81)], Gsm7, 2, &[152, 10]),
        (&[("x", 152), ("}", 1), ("x", 152)], Gsm7, 3, &[152, 153, 1]),
        (&[("x", 152), ("}", 1), ("x", 151)], Gsm7, 2, &[152, 153]),
        (&[("x", 159), ("€", 1)], Gsm7, 2, &[153, 8]),
        (&[("x", 305), ("|", 1)], Gsm7, 3, &[153, 152, 2]),
        (&[("`", 1)], Ucs2, 1, &[1]),
        (&[("ç", 1)], Ucs2, 1, &[1]),
        (&[("á", 1)], Ucs2, 1, &[1]),
        (&[("’", 1)], Ucs2, 1, &[1]),
        (&[("…", 1)], Ucs2, 1, &[1]),
        (&[("•", 1)], Ucs2, 1, &[1]),
        (&[("°", 1)], Ucs2, 1, &[1]),
        (&[("¢", 1)], Ucs2, 1, &[1]),
        (&[("您好", 1)], Ucs2, 1, &[2]),
        (&[("中", 70)], Ucs2, 1, &[70]),
        (&[("中", 71)], Ucs2, 2, &[67, 4]),
        (&[("中", 134)], Ucs2, 2, &[67, 67]),
        (&[("中", 135)], Ucs2, 3, &[67, 67, 1]),
        (&[("中", 201)], Ucs2, 3, &[67, 67, 67]),
        (&[("中", 202)], Ucs2, 4, &[67, 67, 67, 1]),
        (&[("中", 268)], Ucs2, 4, &[67, 67, 67, 67]),
        (&[("中", 269)], Ucs2, 5, &[67, 67, 67, 67, 1]),
        (
            &[(
                "【Cohort】张先生，您的优惠码 SPRING-8 即将过期，回复TD退订",
                1,
            )],
            Ucs2,
            1,
            &[38],
        ),
        (&[("中", 1), ("{", 69)], Ucs2, 1, &[70]),
        (&[("中", 1), ("{", 70)], Ucs2, 2, &[67, 4]),
        (&[("👍", 1)], Ucs2, 1, &[2]),
        (&[("😀", 35)], Ucs2, 1, &[70]),
        (&[("😀", 36)], Ucs2, 2, &[66, 6]),
        (&[("x", 68), ("👍", 1)], Ucs2, 1, &[70]),
        (&[("x", 69), ("👍", 1)], Ucs2, 2, &[67, 4]),
        (&[("x", 66), ("👍", 1), ("x", 66)], Ucs2, 3, &[66, 67, 1]),
        (&[("x", 66), ("👍", 1), ("x", 67)], Ucs2, 3, &[66, 67, 2]),
        (
            &[("x", 63), ("👨\u{200d}👩\u{200d}👧", 1), ("x", 60)],
            Ucs2,
            3,
            &[63, 67, 1],
        ),
        (&[("x", 64), ("🇨🇳", 1), ("x", 63)], Ucs2, 2, &[64, 67]),
        (
            &[("x", 65), ("👍\u{1f3fd}", 1), ("x", 64)],
            Ucs2,
            3,
            &[65, 67, 1],
        ),
        (&[("a\u{d}\u{a}b", 1)], Gsm7, 1, &[4]),
        (&[("e\u{301}", 1)], Ucs2, 1, &[2]),
        (&[("亲爱的会员", 1), ("x", 60), ("👍", 1)], Ucs2, 1, &[67]),
    ];

    fn build(pieces: &[(&str, usize)]) -> String {
        pieces.iter().map(|(p, n)| p.repeat(*n)).collect()
    }

    fn units(part: &str, encoding: Encoding) -> usize {
        match encoding {
            Gsm7 => part.chars().map(|c| gsm7_septets(c).unwrap_or(0)).sum(),
            Ucs2 => part.encode_utf16().count(),
        }
    }

    #[test]
    fn matches_twilios_calculator() {
        for (pieces, encoding, segments, sizes) in TWILIO {
            let text = build(pieces);
            let length = measure(&text);
            assert_eq!(
                (length.encoding, length.segments),
                (*encoding, *segments),
                "{pieces:?}"
            );
            assert_eq!(length.units, sizes.iter().sum::<usize>(), "{pieces:?}");
            let parts = parts(&text);
            let part_units: Vec<usize> = parts.iter().map(|p| units(p, *encoding)).collect();
            assert_eq!(&part_units, sizes, "{pieces:?}");
            assert_eq!(parts.concat(), text);
        }
    }

    #[test]
    fn one_to_four_part_boundaries() {
        for (n, gsm, ucs) in [(1, 160, 70), (2, 306, 134), (3, 459, 201), (4, 612, 268)] {
            assert_eq!(measure(&"a".repeat(gsm)).segments, n);
            assert_eq!(measure(&"a".repeat(gsm + 1)).segments, n + 1);
            assert_eq!(measure(&"字".repeat(ucs)).segments, n);
            assert_eq!(measure(&"字".repeat(ucs + 1)).segments, n + 1);
        }
    }

    #[test]
    fn the_basic_and_extension_tables_are_exact() {
        let basic: Vec<char> = ('\0'..='\u{ffff}')
            .filter(|&c| gsm7_septets(c) == Some(1))
            .collect();
        let extension: String = ('\0'..='\u{ffff}')
            .filter(|&c| gsm7_septets(c) == Some(2))
            .collect();
        // 128 codes, one of which (0x1B) is the escape.
        assert_eq!(basic.len(), 127);
        assert_eq!(extension, "\u{c}[\\]^{|}~€");
        for c in ['`', 'ç', 'á', 'Ä', '’', '…', '中', '\t', '\u{1b}'] {
            assert_eq!(gsm7_septets(c).is_some(), c == 'Ä', "{c:?}");
        }
    }

    #[test]
    fn truncation_never_splits_a_pair() {
        let text = format!("{}👍{}", "x".repeat(66), "x".repeat(66));
        assert_eq!(
            truncate(&text, 2),
            format!("{}👍{}", "x".repeat(66), "x".repeat(65))
        );
        assert_eq!(truncate(&text, 3), text);
        let text = format!("{}}}{}", "x".repeat(159), "x".repeat(10));
        assert_eq!(truncate(&text, 1), "x".repeat(159));
        assert_eq!(truncate(&"x".repeat(400), 1), "x".repeat(160));
        assert_eq!(truncate(&"x".repeat(400), 2), "x".repeat(306));
        assert_eq!(truncate(&"中".repeat(300), 2), "中".repeat(134));
        assert_eq!(truncate(&"中".repeat(300), 1), "中".repeat(70));
        // A ZWJ family (8 code units) stays whole: kept if it fits, else dropped entirely.
        let family = format!("{}👨\u{200d}👩\u{200d}👧", "x".repeat(62));
        assert_eq!(truncate(&format!("{family}x"), 1), family);
        let family = format!("{}👨\u{200d}👩\u{200d}👧x", "x".repeat(63));
        assert_eq!(truncate(&family, 1), "x".repeat(63));
        assert_eq!(truncate("anything", 0), "");
        // Cutting off the only Chinese character leaves GSM-7, which holds 160.
        let mostly_gsm = format!("{}中", "x".repeat(200));
        assert_eq!(truncate(&mostly_gsm, 1), "x".repeat(160));
    }

    #[test]
    fn policies() {
        let long = "中".repeat(150);
        let split = prepare(long.clone(), &LengthPolicy::Split).unwrap();
        assert_eq!(parts(&split.text).len(), 3);
        assert_eq!(
            split.length,
            Length {
                encoding: Ucs2,
                units: 150,
                segments: 3
            }
        );
        assert!(!split.truncated);
        let cut = prepare(long, &LengthPolicy::Truncate { max_parts: 2 }).unwrap();
        assert_eq!(cut.text, "中".repeat(134));
        assert_eq!(parts(&cut.text), vec!["中".repeat(67), "中".repeat(67)]);
        assert_eq!(cut.length.segments, 2);
        assert!(cut.truncated);
        let short = prepare("hi".into(), &LengthPolicy::Truncate { max_parts: 1 }).unwrap();
        assert_eq!((short.text.as_str(), short.truncated), ("hi", false));
        assert_eq!(
            prepare("hi".into(), &LengthPolicy::Truncate { max_parts: 0 }),
            Err(SmsError::ZeroParts)
        );
        let json = serde_json::to_value(LengthPolicy::Truncate { max_parts: 2 }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"policy": "truncate", "max_parts": 2})
        );
        assert_eq!(
            serde_json::from_value::<LengthPolicy>(serde_json::json!({"policy": "split"})).unwrap(),
            LengthPolicy::Split
        );
        assert_eq!(serde_json::to_value(Gsm7).unwrap(), "GSM-7");
    }

    #[test]
    fn opt_out_keywords() {
        for reply in [
            "STOP",
            "stop",
            " Stop\n",
            "STOPALL",
            "unsubscribe",
            "Cancel",
            "END",
            "quit",
            "退订",
            " 退订。",
            "TD",
            "td",
            "t",
            "T!",
            "ＴＤ",
            "ｓｔｏｐ",
            "\u{3000}退订\u{3000}",
        ] {
            assert!(is_opt_out(reply), "{reply:?}");
        }
        for reply in [
            "",
            "please stop",
            "STOP IT",
            "stopp",
            "start",
            "退订吧",
            "TDX",
            "yes",
            "t d",
            "不要退订",
        ] {
            assert!(!is_opt_out(reply), "{reply:?}");
        }
        assert_eq!(opt_out_keyword("Td"), Some("TD"));
        assert_eq!(opt_out_keyword("退订"), Some("退订"));
    }
}
