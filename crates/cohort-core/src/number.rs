//! How JSON values are read as numbers, the one rule segment evaluation, the
//! SQL compiler and the lake's promoted columns (`revenue`, `price`) share.

use serde_json::Value;

/// Reads a numeric string: `-12`, `3.5`, `1e6`. Deliberately stricter than `f64::from_str`: a
/// leading `+`, surrounding spaces, `inf` and `NaN` are text, so phone numbers such as
/// `+8613800000000` stay strings, and SQL casts agree with this reading.
pub fn parse_number(s: &str) -> Option<f64> {
    let bytes = s.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != bytes.len() {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// The numeric reading of a JSON value: finite JSON numbers, and strings
/// spelled as plain decimals ([`parse_number`]); anything else has none.
pub fn json_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => parse_number(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_strings_are_plain_decimals_only() {
        assert_eq!(parse_number("42"), Some(42.0));
        assert_eq!(parse_number("-3.5"), Some(-3.5));
        assert_eq!(parse_number("1e3"), Some(1000.0));
        assert_eq!(parse_number("2.5E-1"), Some(0.25));
        for text in [
            "", "-", "+5", " 5", "5 ", "5.", ".5", "inf", "NaN", "0x10", "1e", "1e400",
        ] {
            assert_eq!(parse_number(text), None, "{text:?}");
        }
    }

    #[test]
    fn json_values_read_as_numbers_only_when_numeric() {
        assert_eq!(json_number(&serde_json::json!(12.5)), Some(12.5));
        assert_eq!(json_number(&serde_json::json!("7")), Some(7.0));
        assert_eq!(json_number(&serde_json::json!(" 7")), None);
        assert_eq!(json_number(&serde_json::json!(true)), None);
        assert_eq!(json_number(&serde_json::json!([1])), None);
    }
}
