//! Per-source normalisation rules, applied to every message on the way in.
//!
//! Downstream joins (identity resolution, audiences, revenue reports) only work when the same
//! fact is spelled the same way everywhere: one e-mail casing, one phone format (E.164), one
//! gender code, money as numbers with an explicit currency. Sources send whatever their
//! developers typed, so each source carries a [`NormaliseRules`] and every message passes
//! through [`NormaliseRules::apply`] before it is stored.
//!
//! Normalisation never drops data: a value that cannot be normalised is kept exactly as sent and
//! reported in a human-readable note, so operators can fix the source instead of losing events.

use std::fmt::Write as _;
use std::panic;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest rendering of an offending value inside a note; a source that sends a megabyte in
/// `phone` should not produce a megabyte of log line.
const NOTE_VALUE_LIMIT: usize = 80;

/// Which normalisations a source wants, and the defaults they rely on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormaliseRules {
    /// Trim and lower-case `email`.
    pub emails: bool,
    /// Rewrite `phone` and `mobile` as E.164.
    pub phones: bool,
    /// ISO 3166 alpha-2 region assumed for numbers written without a `+country` prefix.
    pub default_phone_region: String,
    /// Map `gender` and `sex` to `male`, `female` or `unknown`.
    pub gender: bool,
    /// Turn money strings into numbers and make sure a `currency` accompanies them.
    pub money: bool,
    /// Currency assumed for amounts that carry no symbol or code.
    pub default_currency: String,
    /// Keys treated as amounts of money.
    pub money_fields: Vec<String>,
}

impl Default for NormaliseRules {
    fn default() -> Self {
        Self {
            emails: true,
            phones: true,
            default_phone_region: "CN".to_owned(),
            gender: true,
            money: true,
            default_currency: "CNY".to_owned(),
            money_fields: [
                "revenue", "price", "total", "value", "amount", "subtotal", "tax", "shipping",
                "discount",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        }
    }
}

impl NormaliseRules {
    /// Normalises one Segment message in place (a JSON object with "type", "traits", "context",
    /// "properties" ...).
    ///
    /// Returns a list of human-readable notes for values it could not normalise (kept unchanged),
    /// e.g. `traits.phone: "12ab" is not a phone number for region CN`. Never drops data.
    pub fn apply(&self, message: &mut Map<String, Value>) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(Value::Object(traits)) = message.get_mut("traits") {
            self.apply_object(traits, "traits", &mut notes);
        }
        if let Some(Value::Object(context)) = message.get_mut("context")
            && let Some(Value::Object(traits)) = context.get_mut("traits")
        {
            self.apply_object(traits, "context.traits", &mut notes);
        }
        if let Some(Value::Object(properties)) = message.get_mut("properties") {
            self.apply_object(properties, "properties", &mut notes);
            if self.money {
                // Segment's e-commerce spec puts one `currency` on the event for the whole
                // order, so products inherit it rather than each getting the default.
                let inherited = properties
                    .get("currency")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(Value::Array(products)) = properties.get_mut("products") {
                    for (index, product) in products.iter_mut().enumerate() {
                        if let Value::Object(product) = product {
                            let path = format!("properties.products[{index}]");
                            self.apply_money(product, &path, inherited.as_deref(), &mut notes);
                        }
                    }
                }
            }
        }
        notes
    }

    fn apply_object(&self, object: &mut Map<String, Value>, path: &str, notes: &mut Vec<String>) {
        if self.emails
            && let Some(value) = object.get_mut("email")
        {
            normalise_email(value, &format!("{path}.email"), notes);
        }
        if self.phones {
            let region = parse_region(&self.default_phone_region);
            for key in ["phone", "mobile"] {
                if let Some(value) = object.get_mut(key) {
                    let at = format!("{path}.{key}");
                    self.normalise_phone(value, region, &at, notes);
                }
            }
        }
        if self.gender {
            for key in ["gender", "sex"] {
                if let Some(value) = object.get_mut(key) {
                    normalise_gender(value, &format!("{path}.{key}"), notes);
                }
            }
        }
        if self.money {
            self.apply_money(object, path, None, notes);
        }
    }

    fn normalise_phone(
        &self,
        value: &mut Value,
        region: Option<phonenumber::country::Id>,
        path: &str,
        notes: &mut Vec<String>,
    ) {
        // Spreadsheets and some SDKs send mobile numbers as JSON integers.
        let text = match value {
            Value::Null => return,
            Value::String(s) if s.trim().is_empty() => return,
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            _ => {
                notes.push(format!("{path}: {} is not a phone number", show(value)));
                return;
            }
        };
        match to_e164(&text, region) {
            Ok(e164) => *value = Value::String(e164),
            Err(reason) => {
                let region = self.default_phone_region.as_str();
                let why = match reason {
                    PhoneProblem::NotANumber => {
                        format!("is not a phone number for region {region}")
                    }
                    PhoneProblem::HasExtension => {
                        "has an extension, which E.164 cannot hold".to_owned()
                    }
                };
                notes.push(format!("{path}: {} {why}", show(value)));
            }
        }
    }

    /// `inherited` is the currency of an enclosing object that already covers this one's amounts.
    fn apply_money(
        &self,
        object: &mut Map<String, Value>,
        path: &str,
        inherited: Option<&str>,
        notes: &mut Vec<String>,
    ) {
        let mut has_amount = false;
        let mut symbols: Vec<(String, &'static str)> = Vec::new();
        for field in &self.money_fields {
            let Some(value) = object.get_mut(field.as_str()) else {
                continue;
            };
            let at = format!("{path}.{field}");
            match value {
                Value::Null => {}
                Value::Number(_) => has_amount = true,
                Value::String(text) => match parse_money(text)
                    .and_then(|m| Some((serde_json::Number::from_f64(m.amount)?, m.currency)))
                {
                    Some((number, currency)) => {
                        *value = Value::Number(number);
                        has_amount = true;
                        if let Some(currency) = currency {
                            symbols.push((at, currency));
                        }
                    }
                    None => notes.push(format!("{at}: {} is not an amount of money", show(value))),
                },
                _ => notes.push(format!("{at}: {} is not an amount of money", show(value))),
            }
        }
        if !has_amount {
            return;
        }

        if let Some(existing) = object.get("currency") {
            // The explicit key wins, but a contradicting symbol usually means a buggy source.
            if let Some(existing) = existing.as_str() {
                for (at, symbol) in &symbols {
                    if !existing.trim().eq_ignore_ascii_case(symbol) {
                        notes.push(format!(
                            "{at}: amount was written in {symbol} but currency is {existing:?}; \
                             kept currency"
                        ));
                    }
                }
            }
            return;
        }

        let chosen = symbols.first().map(|(_, symbol)| *symbol);
        for (at, symbol) in symbols.iter().skip(1) {
            if Some(*symbol) != chosen {
                notes.push(format!(
                    "{at}: amount was written in {symbol} but another amount set currency {}",
                    chosen.unwrap_or_default()
                ));
            }
        }
        let currency = match (chosen, inherited) {
            (Some(symbol), Some(parent)) if parent.trim().eq_ignore_ascii_case(symbol) => None,
            (Some(symbol), _) => Some(symbol.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(self.default_currency.clone()),
        };
        if let Some(currency) = currency {
            object.insert("currency".to_owned(), Value::String(currency));
        }
    }
}

fn normalise_email(value: &mut Value, path: &str, notes: &mut Vec<String>) {
    match value {
        Value::String(email) => {
            let normalised = email.trim().to_lowercase();
            if normalised != *email {
                *email = normalised;
            }
        }
        Value::Null => {}
        _ => notes.push(format!("{path}: {} is not an e-mail address", show(value))),
    }
}

fn normalise_gender(value: &mut Value, path: &str, notes: &mut Vec<String>) {
    let code = match value {
        Value::Null => return,
        Value::String(s) => gender_code(s.trim()),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some("male"),
            Some(2.0) => Some("female"),
            Some(0.0) => Some("unknown"),
            _ => None,
        },
        _ => None,
    };
    match code {
        Some(code) => *value = Value::String(code.to_owned()),
        None => notes.push(format!(
            "{path}: {} is not a recognised gender",
            show(value)
        )),
    }
}

fn gender_code(text: &str) -> Option<&'static str> {
    match text.to_lowercase().as_str() {
        "male" | "m" | "man" | "1" | "男" | "男性" | "先生" => Some("male"),
        "female" | "f" | "woman" | "2" | "女" | "女性" | "女士" => Some("female"),
        "unknown" | "0" | "" | "未知" | "保密" => Some("unknown"),
        _ => None,
    }
}

fn parse_region(region: &str) -> Option<phonenumber::country::Id> {
    region.trim().to_ascii_uppercase().parse().ok()
}

enum PhoneProblem {
    NotANumber,
    HasExtension,
}

fn to_e164(text: &str, region: Option<phonenumber::country::Id>) -> Result<String, PhoneProblem> {
    // Letters (vanity numbers, "ext.") are rejected up front: we never want to guess at them,
    // and the parser has panicked on garbage input before.
    let plausible = text.chars().all(|c| {
        c.is_ascii_digit() || c.is_whitespace() || matches!(c, '+' | '-' | '(' | ')' | '.' | '/')
    });
    let digits = text.chars().filter(char::is_ascii_digit).count();
    if !plausible || !(3..=20).contains(&digits) {
        return Err(PhoneProblem::NotANumber);
    }
    // The parser still contains internal unwraps; one malformed number must not take down the
    // request that carried it.
    let parsed = panic::catch_unwind(|| {
        let number = phonenumber::parse(region, text).ok()?;
        if !number.is_valid() {
            return None;
        }
        let has_extension = number.extension().is_some();
        let mut e164 = String::new();
        write!(e164, "{}", number.format().mode(phonenumber::Mode::E164)).ok()?;
        Some((e164, has_extension))
    });
    match parsed {
        Ok(Some((_, true))) => Err(PhoneProblem::HasExtension),
        Ok(Some((e164, false))) => Ok(e164),
        Ok(None) | Err(_) => Err(PhoneProblem::NotANumber),
    }
}

#[derive(Debug, PartialEq)]
struct Money {
    amount: f64,
    currency: Option<&'static str>,
}

/// Currency markers, longest first so that `HK$` is not read as `$` followed by junk.
const CURRENCY_MARKERS: &[(&str, &str)] = &[
    ("US$", "USD"),
    ("HK$", "HKD"),
    ("RMB", "CNY"),
    ("CNY", "CNY"),
    ("USD", "USD"),
    ("EUR", "EUR"),
    ("GBP", "GBP"),
    ("HKD", "HKD"),
    ("JPY", "JPY"),
    ("¥", "CNY"),
    ("￥", "CNY"),
    ("元", "CNY"),
    ("$", "USD"),
    ("€", "EUR"),
    ("£", "GBP"),
    ("円", "JPY"),
];

/// Parses a human-written amount such as `¥1,299.00`, `12,50 €` or `-5.00`.
fn parse_money(text: &str) -> Option<Money> {
    let mut rest = text.trim();
    let mut negative = false;
    if let Some(stripped) = rest.strip_prefix('-') {
        negative = true;
        rest = stripped.trim_start();
    } else if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped.trim_start();
    }

    let mut currency = None;
    for (marker, code) in CURRENCY_MARKERS {
        if let Some(stripped) = strip_prefix_ignore_case(rest, marker) {
            currency = Some(*code);
            rest = stripped.trim_start();
            break;
        }
        if let Some(stripped) = strip_suffix_ignore_case(rest, marker) {
            currency = Some(*code);
            rest = stripped.trim_end();
            break;
        }
    }

    // "¥-5.00" puts the sign after the symbol.
    if !negative && let Some(stripped) = rest.strip_prefix('-') {
        negative = true;
        rest = stripped.trim_start();
    }

    let magnitude = parse_decimal(rest)?;
    let amount = if negative { -magnitude } else { magnitude };
    amount.is_finite().then_some(Money { amount, currency })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

fn strip_suffix_ignore_case<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let split = text.len().checked_sub(suffix.len())?;
    let tail = text.get(split..)?;
    tail.eq_ignore_ascii_case(suffix)
        .then(|| text.get(..split))
        .flatten()
}

/// Parses an unsigned number that may use `,` or `.` as either the decimal or the thousands
/// separator. Both present: the last one is the decimal mark. Only commas: a single comma
/// followed by anything but three digits is a decimal comma (`12,50`). Only dots: a single dot is
/// a decimal point, several are thousands separators (`1.299.000`).
fn parse_decimal(text: &str) -> Option<f64> {
    // Spaces, narrow no-break spaces and apostrophes group thousands in French and Swiss usage.
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\''))
        .collect();
    if !compact.chars().any(|c| c.is_ascii_digit())
        || !compact
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
    {
        return None;
    }

    let last_comma = compact.rfind(',');
    let last_dot = compact.rfind('.');
    let decimal_mark = match (last_comma, last_dot) {
        (Some(comma), Some(dot)) => Some(if comma > dot { ',' } else { '.' }),
        (Some(_), None) => {
            let single = compact.matches(',').count() == 1;
            let after = compact.rsplit(',').next().map_or(0, str::len);
            (single && after != 3).then_some(',')
        }
        (None, Some(_)) => (compact.matches('.').count() == 1).then_some('.'),
        (None, None) => None,
    };

    let (whole, fraction) = match decimal_mark {
        Some(mark) => compact.rsplit_once(mark)?,
        None => (compact.as_str(), ""),
    };
    if fraction.contains([',', '.']) {
        return None;
    }
    let whole_digits = ungroup(whole)?;
    let canonical = if fraction.is_empty() {
        whole_digits
    } else {
        format!("{whole_digits}.{fraction}")
    };
    canonical.parse().ok()
}

/// Removes thousands separators, insisting on well-formed groups so that typos such as
/// `1,2,3` are reported instead of silently becoming 123.
fn ungroup(whole: &str) -> Option<String> {
    let groups: Vec<&str> = whole.split([',', '.']).collect();
    if groups.len() > 1 {
        let well_formed = groups.first().is_some_and(|g| (1..=3).contains(&g.len()))
            && groups.iter().skip(1).all(|g| g.len() == 3);
        let one_kind = !(whole.contains(',') && whole.contains('.'));
        if !well_formed || !one_kind {
            return None;
        }
    }
    let digits: String = groups.concat();
    if digits.is_empty() {
        // ".5" and ",5" have an implicit leading zero.
        return Some("0".to_owned());
    }
    Some(digits)
}

/// Renders an offending value for a note: JSON-quoted so that whitespace and control
/// characters stay visible, and cut short so that hostile input cannot bloat logs.
fn show(value: &Value) -> String {
    let rendered = value.to_string();
    if rendered.chars().count() <= NOTE_VALUE_LIMIT {
        return rendered;
    }
    let mut short: String = rendered.chars().take(NOTE_VALUE_LIMIT).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn normalise(message: Value) -> (Value, Vec<String>) {
        normalise_with(&NormaliseRules::default(), message)
    }

    fn normalise_with(rules: &NormaliseRules, message: Value) -> (Value, Vec<String>) {
        let Value::Object(mut map) = message else {
            panic!("test messages are objects");
        };
        let notes = rules.apply(&mut map);
        (Value::Object(map), notes)
    }

    fn us_rules() -> NormaliseRules {
        NormaliseRules {
            default_phone_region: "US".to_owned(),
            ..NormaliseRules::default()
        }
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let rules = NormaliseRules::default();
        assert!(rules.emails && rules.phones && rules.gender && rules.money);
        assert_eq!(rules.default_phone_region, "CN");
        assert_eq!(rules.default_currency, "CNY");
        assert_eq!(rules.money_fields.len(), 9);
        assert!(rules.money_fields.contains(&"discount".to_owned()));
    }

    #[test]
    fn rules_deserialise_from_partial_json_with_defaults() {
        let rules: NormaliseRules =
            serde_json::from_value(json!({"default_phone_region": "US", "money": false})).unwrap();
        assert_eq!(rules.default_phone_region, "US");
        assert!(!rules.money);
        assert!(rules.emails);
        assert_eq!(rules.default_currency, "CNY");
    }

    #[test]
    fn rules_reject_unknown_fields() {
        let result = serde_json::from_value::<NormaliseRules>(json!({"emial": true}));
        assert!(result.is_err());
    }

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        let (out, notes) = normalise(json!({"traits": {"email": "  Alice@Example.COM "}}));
        assert_eq!(out["traits"]["email"], "alice@example.com");
        assert!(notes.is_empty());
    }

    #[test]
    fn email_in_context_traits_and_properties_is_normalised() {
        let (out, _) = normalise(json!({
            "context": {"traits": {"email": "BOB@X.CN"}},
            "properties": {"email": " Carol@Y.com"}
        }));
        assert_eq!(out["context"]["traits"]["email"], "bob@x.cn");
        assert_eq!(out["properties"]["email"], "carol@y.com");
    }

    #[test]
    fn disabled_email_rule_leaves_email_alone() {
        let rules = NormaliseRules {
            emails: false,
            ..NormaliseRules::default()
        };
        let (out, _) = normalise_with(&rules, json!({"traits": {"email": " A@B.C "}}));
        assert_eq!(out["traits"]["email"], " A@B.C ");
    }

    #[test]
    fn chinese_mobile_without_prefix_becomes_e164() {
        let (out, notes) = normalise(json!({"traits": {"phone": "13812345678"}}));
        assert_eq!(out["traits"]["phone"], "+8613812345678");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn chinese_mobile_with_spaces_becomes_e164() {
        let (out, notes) = normalise(json!({"traits": {"phone": "138 1234 5678"}}));
        assert_eq!(out["traits"]["phone"], "+8613812345678");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn chinese_mobile_with_plus_prefix_and_dashes_becomes_e164() {
        let (out, _) = normalise(json!({"traits": {"mobile": "+86 138-1234-5678"}}));
        assert_eq!(out["traits"]["mobile"], "+8613812345678");
    }

    #[test]
    fn chinese_mobile_with_0086_prefix_becomes_e164() {
        let (out, notes) = normalise(json!({"traits": {"phone": "0086 13812345678"}}));
        assert_eq!(out["traits"]["phone"], "+8613812345678");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn us_number_with_region_us_becomes_e164() {
        let (out, notes) =
            normalise_with(&us_rules(), json!({"traits": {"phone": "(415) 555-2671"}}));
        assert_eq!(out["traits"]["phone"], "+14155552671");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn phone_sent_as_json_integer_becomes_e164_string() {
        let (out, _) = normalise(json!({"traits": {"phone": 13812345678_u64}}));
        assert_eq!(out["traits"]["phone"], "+8613812345678");
    }

    #[test]
    fn garbage_phone_is_kept_with_a_note() {
        let (out, notes) = normalise(json!({"traits": {"phone": "12ab"}}));
        assert_eq!(out["traits"]["phone"], "12ab");
        assert_eq!(
            notes,
            vec![r#"traits.phone: "12ab" is not a phone number for region CN"#]
        );
    }

    #[test]
    fn invalid_phone_of_plausible_shape_is_kept_with_a_note() {
        let (out, notes) = normalise(json!({"traits": {"phone": "12345"}}));
        assert_eq!(out["traits"]["phone"], "12345");
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn empty_phone_is_left_alone_without_a_note() {
        let (out, notes) = normalise(json!({"traits": {"phone": ""}}));
        assert_eq!(out["traits"]["phone"], "");
        assert!(notes.is_empty());
    }

    #[test]
    fn hostile_phone_strings_never_panic() {
        for input in [
            "  2 22#:",
            "+",
            "++++",
            "+0",
            "000",
            "+999 1234",
            "(((((",
            "+1 ",
            "0",
        ] {
            let (out, _) = normalise(json!({"traits": {"phone": input}}));
            assert!(out["traits"]["phone"].is_string());
        }
    }

    #[test]
    fn male_spellings_map_to_male() {
        for input in [
            json!("男"),
            json!("M"),
            json!("m"),
            json!("male"),
            json!("Male"),
            json!("MALE"),
            json!("man"),
            json!("1"),
            json!("先生"),
            json!(1),
        ] {
            let (out, notes) = normalise(json!({"traits": {"gender": input.clone()}}));
            assert_eq!(out["traits"]["gender"], "male", "input {input}");
            assert!(notes.is_empty());
        }
    }

    #[test]
    fn female_spellings_map_to_female() {
        for input in [
            json!("女"),
            json!("F"),
            json!("f"),
            json!("female"),
            json!("woman"),
            json!("2"),
            json!("女士"),
            json!(2),
        ] {
            let (out, _) = normalise(json!({"traits": {"sex": input.clone()}}));
            assert_eq!(out["traits"]["sex"], "female", "input {input}");
        }
    }

    #[test]
    fn unknown_spellings_map_to_unknown() {
        for input in [
            json!("0"),
            json!("unknown"),
            json!("未知"),
            json!(""),
            json!("保密"),
            json!(0),
        ] {
            let (out, _) = normalise(json!({"traits": {"gender": input.clone()}}));
            assert_eq!(out["traits"]["gender"], "unknown", "input {input}");
        }
    }

    #[test]
    fn unrecognised_gender_is_kept_with_a_note() {
        let (out, notes) = normalise(json!({"traits": {"gender": "robot"}}));
        assert_eq!(out["traits"]["gender"], "robot");
        assert_eq!(
            notes,
            vec![r#"traits.gender: "robot" is not a recognised gender"#]
        );
        let (out, notes) = normalise(json!({"traits": {"gender": 7}}));
        assert_eq!(out["traits"]["gender"], 7);
        assert_eq!(notes.len(), 1);
    }

    fn money(input: &str) -> (Value, Vec<String>) {
        let (out, notes) = normalise(json!({"properties": {"price": input}}));
        (out["properties"].clone(), notes)
    }

    #[test]
    fn yuan_sign_with_thousands_separator_becomes_number_in_cny() {
        let (props, notes) = money("¥1,299.00");
        assert_eq!(props, json!({"price": 1299.0, "currency": "CNY"}));
        assert!(notes.is_empty());
    }

    #[test]
    fn bare_number_string_gets_default_currency() {
        let (props, _) = money("1299");
        assert_eq!(props, json!({"price": 1299.0, "currency": "CNY"}));
    }

    #[test]
    fn dollar_sign_means_usd() {
        let (props, _) = money("$12.50");
        assert_eq!(props, json!({"price": 12.5, "currency": "USD"}));
    }

    #[test]
    fn decimal_comma_with_trailing_euro_sign_means_eur() {
        let (props, _) = money("12,50 €");
        assert_eq!(props, json!({"price": 12.5, "currency": "EUR"}));
    }

    #[test]
    fn european_thousands_dot_and_decimal_comma_are_understood() {
        let (props, _) = money("1.299,00 €");
        assert_eq!(props, json!({"price": 1299.0, "currency": "EUR"}));
    }

    #[test]
    fn us_dollar_prefix_with_space_means_usd() {
        let (props, _) = money("US$ 9.99");
        assert_eq!(props, json!({"price": 9.99, "currency": "USD"}));
    }

    #[test]
    fn rmb_prefix_means_cny() {
        let (props, _) = money("RMB 88");
        assert_eq!(props, json!({"price": 88.0, "currency": "CNY"}));
    }

    #[test]
    fn trailing_yuan_character_means_cny() {
        let (props, _) = money("1,299.00元");
        assert_eq!(props, json!({"price": 1299.0, "currency": "CNY"}));
    }

    #[test]
    fn negative_amount_is_kept_negative() {
        let (props, _) = money("-5.00");
        assert_eq!(props, json!({"price": -5.0, "currency": "CNY"}));
    }

    #[test]
    fn other_currency_markers_are_recognised() {
        for (input, amount, currency) in [
            ("£3.20", 3.2, "GBP"),
            ("HK$ 100", 100.0, "HKD"),
            ("500円", 500.0, "JPY"),
            ("JPY 500", 500.0, "JPY"),
            ("20 usd", 20.0, "USD"),
            ("EUR 1.299,50", 1299.5, "EUR"),
            ("¥-5", -5.0, "CNY"),
        ] {
            let (props, notes) = money(input);
            assert_eq!(
                props,
                json!({"price": amount, "currency": currency}),
                "input {input}"
            );
            assert!(notes.is_empty(), "input {input}: {notes:?}");
        }
    }

    #[test]
    fn unparseable_amount_is_kept_with_a_note() {
        for input in ["free", "1,2,3", "12.5.6,7", "$", ",", "1e5", ""] {
            let (props, notes) = money(input);
            assert_eq!(props, json!({"price": input}), "input {input}");
            assert_eq!(notes.len(), 1, "input {input}");
            assert!(notes[0].starts_with("properties.price: "), "{notes:?}");
        }
    }

    #[test]
    fn numeric_amount_without_currency_gets_default_currency() {
        let (out, _) = normalise(json!({"properties": {"revenue": 42.5}}));
        assert_eq!(
            out["properties"],
            json!({"revenue": 42.5, "currency": "CNY"})
        );
    }

    #[test]
    fn existing_currency_is_never_overwritten() {
        let (out, notes) = normalise(json!({"properties": {"revenue": 10, "currency": "USD"}}));
        assert_eq!(out["properties"], json!({"revenue": 10, "currency": "USD"}));
        assert!(notes.is_empty());

        let (out, notes) = normalise(json!({"properties": {"price": "€5", "currency": "USD"}}));
        assert_eq!(out["properties"], json!({"price": 5.0, "currency": "USD"}));
        assert_eq!(notes.len(), 1, "a contradicting symbol is reported");
    }

    #[test]
    fn configured_default_currency_is_used() {
        let rules = NormaliseRules {
            default_currency: "EUR".to_owned(),
            ..NormaliseRules::default()
        };
        let (out, _) = normalise_with(&rules, json!({"properties": {"total": "99"}}));
        assert_eq!(out["properties"], json!({"total": 99.0, "currency": "EUR"}));
    }

    #[test]
    fn absent_keys_add_nothing() {
        let message = json!({
            "type": "track",
            "event": "Viewed",
            "traits": {"name": "Ann"},
            "context": {"traits": {"plan": "pro"}},
            "properties": {"colour": "red"}
        });
        let (out, notes) = normalise(message.clone());
        assert_eq!(out, message);
        assert!(notes.is_empty());
    }

    #[test]
    fn message_without_any_rule_objects_is_untouched() {
        let message = json!({"type": "page", "name": "Home", "email": " X@Y.Z "});
        let (out, notes) = normalise(message.clone());
        assert_eq!(out, message);
        assert!(notes.is_empty());
    }

    #[test]
    fn nested_product_prices_are_converted() {
        let (out, notes) = normalise(json!({
            "properties": {
                "products": [
                    {"sku": "A", "price": "¥1,299.00"},
                    {"sku": "B", "price": 5},
                    "not an object",
                    {"sku": "C", "price": "oops"}
                ]
            }
        }));
        let products = &out["properties"]["products"];
        assert_eq!(
            products[0],
            json!({"sku": "A", "price": 1299.0, "currency": "CNY"})
        );
        assert_eq!(
            products[1],
            json!({"sku": "B", "price": 5, "currency": "CNY"})
        );
        assert_eq!(products[2], "not an object");
        assert_eq!(products[3], json!({"sku": "C", "price": "oops"}));
        assert_eq!(
            notes,
            vec![r#"properties.products[3].price: "oops" is not an amount of money"#]
        );
    }

    #[test]
    fn products_inherit_the_order_currency() {
        let (out, _) = normalise(json!({
            "properties": {
                "revenue": "$30",
                "products": [{"price": "10"}, {"price": "$20"}, {"price": "€5"}]
            }
        }));
        let props = &out["properties"];
        assert_eq!(props["revenue"], 30.0);
        assert_eq!(props["currency"], "USD");
        assert_eq!(props["products"][0], json!({"price": 10.0}));
        assert_eq!(props["products"][1], json!({"price": 20.0}));
        assert_eq!(
            props["products"][2],
            json!({"price": 5.0, "currency": "EUR"})
        );
    }

    #[test]
    fn disabled_money_rule_leaves_amounts_alone() {
        let rules = NormaliseRules {
            money: false,
            ..NormaliseRules::default()
        };
        let message = json!({"properties": {"price": "¥5", "products": [{"price": "$1"}]}});
        let (out, notes) = normalise_with(&rules, message.clone());
        assert_eq!(out, message);
        assert!(notes.is_empty());
    }

    #[test]
    fn long_offending_values_are_shortened_in_notes() {
        let long = "x".repeat(10_000);
        let (_, notes) = normalise(json!({"traits": {"gender": long}}));
        assert!(notes[0].len() < 200, "{}", notes[0]);
    }
}
