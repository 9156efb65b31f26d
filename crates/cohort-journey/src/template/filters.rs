//! Cohort's filters, and the guard every filter runs behind.
//!
//! Some replace liquid's filters of the same name where liquid departs from Shopify's Ruby Liquid
//! (the reference Braze, Customer.io and Shopify users learned): `size`, `slice` and `truncate`
//! count characters rather than bytes, `divided_by` and `modulo` floor as Ruby does, `default`
//! takes `allow_false`. Others are Cohort's own: `honorific`, `money`, a `date` that renders in
//! the customer's time zone, `raw`, and the two output finishers the HTML escaping rewrite
//! appends to every `{{ }}` (see `source.rs`).

use std::fmt;
use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use liquid_core::model::{KString, Value, ValueCow, ValueView};
use liquid_core::parser::{FilterArguments, ParameterReflection};
use liquid_core::{Error, Expression, Filter, FilterReflection, ParseFilter, Result, Runtime};

use super::runtime::with_state;

/// Evaluated arguments of a filter call.
pub(crate) struct Args<'a> {
    positional: Vec<ValueCow<'a>>,
    keyword: Vec<(&'a str, ValueCow<'a>)>,
}

impl Args<'_> {
    fn get(&self, i: usize) -> Option<&dyn ValueView> {
        self.positional.get(i).map(|v| v.as_view())
    }
    fn keyword(&self, name: &str) -> Option<&dyn ValueView> {
        self.keyword
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_view())
    }
}

type Eval = fn(&dyn ValueView, &Args<'_>, &dyn Runtime) -> Result<Value>;

/// A filter defined by a function: its name, how many positional arguments it takes, which
/// keywords it accepts, and what it does. Arity is checked when the template is saved.
#[derive(Clone)]
pub(crate) struct Def {
    name: &'static str,
    description: &'static str,
    min: usize,
    max: usize,
    keywords: &'static [&'static str],
    eval: Eval,
}

impl FilterReflection for Def {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        self.description
    }
    fn positional_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }
    fn keyword_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }
}

impl ParseFilter for Def {
    fn parse(&self, arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        let positional: Vec<Expression> = arguments.positional.collect();
        let keyword: Vec<(KString, Expression)> = arguments
            .keyword
            .map(|(k, e)| (KString::from_ref(k), e))
            .collect();
        if positional.len() < self.min || positional.len() > self.max {
            let expected = if self.min == self.max {
                format!("{}", self.min)
            } else {
                format!("{} to {}", self.min, self.max)
            };
            return Err(Error::with_msg(format!(
                "filter `{}` takes {expected} argument(s), {} given",
                self.name,
                positional.len()
            )));
        }
        if let Some((unknown, _)) = keyword
            .iter()
            .find(|(k, _)| !self.keywords.contains(&k.as_str()))
        {
            return Err(Error::with_msg(format!(
                "filter `{}` has no argument `{unknown}`",
                self.name
            )));
        }
        Ok(Box::new(Call {
            name: self.name,
            eval: self.eval,
            positional,
            keyword,
        }))
    }

    fn reflection(&self) -> &dyn FilterReflection {
        self
    }
}

#[derive(Debug)]
struct Call {
    name: &'static str,
    eval: Eval,
    positional: Vec<Expression>,
    keyword: Vec<(KString, Expression)>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        let mut separator = ": ";
        for argument in &self.positional {
            write!(f, "{separator}{argument}")?;
            separator = ", ";
        }
        for (key, argument) in &self.keyword {
            write!(f, "{separator}{key}: {argument}")?;
            separator = ", ";
        }
        Ok(())
    }
}

impl Filter for Call {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let positional = self
            .positional
            .iter()
            .map(|e| e.evaluate(runtime))
            .collect::<Result<Vec<_>>>()?;
        let keyword = self
            .keyword
            .iter()
            .map(|(k, e)| Ok((k.as_str(), e.evaluate(runtime)?)))
            .collect::<Result<Vec<_>>>()?;
        (self.eval)(
            input,
            &Args {
                positional,
                keyword,
            },
            runtime,
        )
    }
}

/// Runs a filter behind the render's budget: the clock is checked, and a result larger than the
/// output may be fails the render (`{% assign s = s | append: s %}` in a loop would otherwise
/// grow without bound before anything is written).
#[derive(Clone)]
pub(crate) struct Guarded(pub(crate) Box<dyn ParseFilter>);

impl ParseFilter for Guarded {
    fn parse(&self, arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        Ok(Box::new(GuardedFilter(self.0.parse(arguments)?)))
    }
    fn reflection(&self) -> &dyn FilterReflection {
        self.0.reflection()
    }
}

#[derive(Debug)]
struct GuardedFilter(Box<dyn Filter>);

impl fmt::Display for GuardedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Filter for GuardedFilter {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let value = self.0.evaluate(input, runtime)?;
        // One borrow of the render's state per call: filters run for every output.
        with_state(runtime, |s| {
            s.tick()?;
            s.check_value(&value)
        })?;
        Ok(value)
    }
}

// ---- numbers -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
    fn value(self) -> Value {
        match self {
            Num::Int(i) => Value::scalar(i),
            Num::Float(f) => Value::scalar(f),
        }
    }
}

/// A number the way Ruby's Liquid reads one (`Utils.to_number`): integers and floats as they
/// are, text holding a decimal number as that number, other text by its leading integer, and
/// anything else as 0.
fn to_num(value: &dyn ValueView) -> Num {
    let Some(scalar) = value.as_scalar() else {
        return Num::Int(0);
    };
    match value.type_name() {
        "whole number" => return Num::Int(scalar.to_integer().unwrap_or(0)),
        "fractional number" => return Num::Float(scalar.to_float().unwrap_or(0.0)),
        "string" => {}
        _ => return Num::Int(0),
    }
    let text = scalar.to_kstr();
    let text = text.trim();
    if let Ok(i) = text.parse::<i64>() {
        return Num::Int(i);
    }
    let decimal = {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let mut parts = digits.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let fraction = parts.next().unwrap_or("");
        !whole.is_empty()
            && !fraction.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.bytes().all(|b| b.is_ascii_digit())
    };
    if decimal && let Ok(f) = text.parse::<f64>() {
        return Num::Float(f);
    }
    let end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(text.len(), |(i, _)| i);
    Num::Int(text[..end].parse::<i64>().unwrap_or(0))
}

fn divided_by(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    let a = to_num(input);
    let b = to_num(args.get(0).unwrap_or(&Value::Nil));
    match (a, b) {
        (_, Num::Int(0)) => Err(Error::with_msg("divided by 0")),
        (_, Num::Float(0.0)) => Err(Error::with_msg("divided by 0")),
        (Num::Int(a), Num::Int(b)) => {
            // Ruby's integer division floors (-7 / 2 is -4); Rust's truncates.
            let q = a
                .checked_div(b)
                .ok_or_else(|| Error::with_msg("integer overflow"))?;
            let floored = if a % b != 0 && ((a < 0) != (b < 0)) {
                q - 1
            } else {
                q
            };
            Ok(Value::scalar(floored))
        }
        (a, b) => Ok(Value::scalar(a.as_f64() / b.as_f64())),
    }
}

fn modulo(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    let a = to_num(input);
    let b = to_num(args.get(0).unwrap_or(&Value::Nil));
    match (a, b) {
        (_, Num::Int(0)) => Err(Error::with_msg("divided by 0")),
        (_, Num::Float(0.0)) => Err(Error::with_msg("divided by 0")),
        (Num::Int(a), Num::Int(b)) => {
            // Ruby's modulo takes the divisor's sign (-7 % 3 is 2).
            let r = a
                .checked_rem(b)
                .ok_or_else(|| Error::with_msg("integer overflow"))?;
            Ok(Value::scalar(if r != 0 && ((r < 0) != (b < 0)) {
                r + b
            } else {
                r
            }))
        }
        (a, b) => {
            let (a, b) = (a.as_f64(), b.as_f64());
            Ok(Num::Float(a - b * (a / b).floor()).value())
        }
    }
}

/// `plus`, `minus`, `times`: both sides read as Ruby reads numbers (a missing value is 0, not an
/// error); integer with integer stays an integer, anything else is a float.
fn arithmetic(
    input: &dyn ValueView,
    args: &Args<'_>,
    int: fn(i64, i64) -> Option<i64>,
    float: fn(f64, f64) -> f64,
) -> Value {
    let a = to_num(input);
    let b = to_num(args.get(0).unwrap_or(&Value::Nil));
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => match int(x, y) {
            Some(r) => Value::scalar(r),
            None => Value::scalar(float(x as f64, y as f64)),
        },
        (a, b) => Value::scalar(float(a.as_f64(), b.as_f64())),
    }
}

fn plus(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(arithmetic(input, args, i64::checked_add, |a, b| a + b))
}

fn minus(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(arithmetic(input, args, i64::checked_sub, |a, b| a - b))
}

fn times(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(arithmetic(input, args, i64::checked_mul, |a, b| a * b))
}

fn abs(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(match to_num(input) {
        Num::Int(i) => i
            .checked_abs()
            .map_or_else(|| Value::scalar((i as f64).abs()), Value::scalar),
        Num::Float(f) => Value::scalar(f.abs()),
    })
}

/// A float rounded to an integer value, as an integer when it fits.
fn integral(f: f64) -> Value {
    if f.is_finite() && f.abs() < 9.0e15 {
        Value::scalar(f as i64)
    } else {
        Value::scalar(f)
    }
}

fn ceil(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(integral(to_num(input).as_f64().ceil()))
}

fn floor(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(integral(to_num(input).as_f64().floor()))
}

/// `round` (to an integer) or `round: n` (to a float with n decimals), halves away from zero.
fn round(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    let places = int_arg(args.get(0), 0).clamp(0, 15);
    let n = to_num(input);
    if places == 0 {
        return Ok(match n {
            Num::Int(i) => Value::scalar(i),
            Num::Float(f) => integral(f.round()),
        });
    }
    let scale = 10f64.powi(i32::try_from(places).unwrap_or(15));
    Ok(Value::scalar((n.as_f64() * scale).round() / scale))
}

fn bound(input: &dyn ValueView, args: &Args<'_>, keep_larger: bool) -> Value {
    let a = to_num(input);
    let b = to_num(args.get(0).unwrap_or(&Value::Nil));
    let a_wins = if keep_larger {
        a.as_f64() >= b.as_f64()
    } else {
        a.as_f64() <= b.as_f64()
    };
    if a_wins { a.value() } else { b.value() }
}

fn at_least(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(bound(input, args, true))
}

fn at_most(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(bound(input, args, false))
}

// ---- characters ----------------------------------------------------------------------------

fn is_string(value: &dyn ValueView) -> bool {
    value.type_name() == "string"
}

fn int_arg(value: Option<&dyn ValueView>, default: i64) -> i64 {
    match value {
        None => default,
        Some(v) if v.is_nil() => default,
        Some(v) => match to_num(v) {
            Num::Int(i) => i,
            Num::Float(f) => f as i64,
        },
    }
}

fn count(n: usize) -> Value {
    Value::scalar(i64::try_from(n).unwrap_or(i64::MAX))
}

fn size(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    if let Some(array) = input.as_array() {
        return Ok(Value::scalar(array.size()));
    }
    if let Some(object) = input.as_object() {
        return Ok(Value::scalar(object.size()));
    }
    if is_string(input) {
        return Ok(count(input.to_kstr().chars().count()));
    }
    Ok(Value::scalar(0i64))
}

/// Ruby's `slice(offset, length)` on a sequence of `len` items: the range it takes, or `None`
/// when the offset is outside the sequence.
fn slice_range(len: usize, offset: i64, length: i64) -> Option<(usize, usize)> {
    let len_i = i64::try_from(len).ok()?;
    let start = if offset < 0 { len_i + offset } else { offset };
    if start < 0 || start > len_i || length < 0 {
        return None;
    }
    let end = start.saturating_add(length).min(len_i);
    Some((usize::try_from(start).ok()?, usize::try_from(end).ok()?))
}

fn slice(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    let offset = int_arg(args.get(0), 0);
    let length = int_arg(args.get(1), 1);
    if let Some(array) = input.as_array() {
        let len = usize::try_from(array.size()).unwrap_or(0);
        let items = match slice_range(len, offset, length) {
            Some((start, end)) => array
                .values()
                .skip(start)
                .take(end - start)
                .map(|v| v.to_value())
                .collect(),
            None => Vec::new(),
        };
        return Ok(Value::Array(items));
    }
    if input.is_nil() {
        return Ok(Value::Nil);
    }
    let text = input.to_kstr();
    let chars = text.chars().count();
    let out: String = match slice_range(chars, offset, length) {
        Some((start, end)) => text.chars().skip(start).take(end - start).collect(),
        None => String::new(),
    };
    Ok(Value::scalar(out))
}

fn truncate(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    if input.is_nil() {
        return Ok(Value::Nil);
    }
    let length = int_arg(args.get(0), 50);
    let ellipsis = args
        .get(1)
        .map_or_else(|| "...".to_owned(), |e| e.to_kstr().to_string());
    let text = input.to_kstr();
    let chars = text.chars().count();
    if i64::try_from(chars).unwrap_or(i64::MAX) <= length {
        return Ok(Value::scalar(text.to_string()));
    }
    let keep = (length - i64::try_from(ellipsis.chars().count()).unwrap_or(i64::MAX)).max(0);
    let mut out: String = text
        .chars()
        .take(usize::try_from(keep).unwrap_or(0))
        .collect();
    out.push_str(&ellipsis);
    Ok(Value::scalar(out))
}

fn default(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    let allow_false = args
        .keyword("allow_false")
        .is_some_and(|v| v.query_state(liquid_core::model::State::Truthy));
    let is_false = input.as_scalar().and_then(|s| s.to_bool()) == Some(false);
    let empty = (is_string(input) && input.to_kstr().is_empty())
        || input.as_array().is_some_and(|a| a.size() == 0)
        || input.as_object().is_some_and(|o| o.size() == 0);
    // Ruby: nil, false (unless allow_false) and empty strings, arrays and hashes take the
    // default; 0 and whitespace do not.
    if input.is_nil() || (is_false && !allow_false) || empty {
        Ok(args
            .get(0)
            .map_or_else(|| Value::scalar(""), |v| v.to_value()))
    } else {
        Ok(input.to_value())
    }
}

// ---- HTML ----------------------------------------------------------------------------------

/// Escapes `& < > " '` for HTML, as Ruby's `CGI.escapeHTML`.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Length of the character reference at the start of `rest` (which begins after a `&`):
/// `name;`, `#123;` or `#x1F;`.
fn entity_len(rest: &str) -> Option<usize> {
    let (prefix, body) =
        if let Some(hex) = rest.strip_prefix("#x").or_else(|| rest.strip_prefix("#X")) {
            (2, hex.bytes().take_while(u8::is_ascii_hexdigit).count())
        } else if let Some(dec) = rest.strip_prefix('#') {
            (1, dec.bytes().take_while(u8::is_ascii_digit).count())
        } else if rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
            (
                0,
                rest.bytes().take_while(u8::is_ascii_alphanumeric).count(),
            )
        } else {
            return None;
        };
    let end = prefix + body;
    (body > 0 && rest.as_bytes().get(end) == Some(&b';')).then_some(end + 1)
}

/// Escapes like [`escape`], leaving character references that are already escaped (`&amp;`,
/// `&#39;`, `&#x27;`) alone, so escaping twice changes nothing.
pub(crate) fn escape_once(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let width = c.len_utf8();
        match c {
            '&' => match entity_len(&rest[1..]) {
                Some(n) => {
                    out.push_str(&rest[..1 + n]);
                    rest = &rest[1 + n..];
                    continue;
                }
                None => out.push_str("&amp;"),
            },
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
        rest = &rest[width..];
    }
    out
}

fn escape_text(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    if input.is_nil() {
        return Ok(Value::Nil);
    }
    Ok(Value::scalar(escape(&input.to_kstr())))
}

fn escape_once_filter(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    if input.is_nil() {
        return Ok(Value::Nil);
    }
    Ok(Value::scalar(escape_once(&input.to_kstr())))
}

fn raw(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(input.to_value())
}

/// A float as Ruby prints it: `3.0`, not Rust's `3`.
fn ruby_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// The text an output prints: nil as nothing, floats as Ruby prints them.
fn output_text(input: &dyn ValueView) -> String {
    if input.is_nil() {
        return String::new();
    }
    if input.type_name() == "fractional number"
        && let Some(f) = input.as_scalar().and_then(|s| s.to_float())
    {
        return ruby_float(f);
    }
    input.render().to_string()
}

fn finish_text(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(Value::scalar(output_text(input)))
}

fn finish_html(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    Ok(Value::scalar(escape_once(&output_text(input))))
}

/// Ruby's `CGI.escape`, which Shopify's `url_encode` is: letters, digits and `_ . - ~` stay, a
/// space becomes `+`, every other byte of the UTF-8 is `%XX`.
fn url_encode(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    if input.is_nil() {
        return Ok(Value::Nil);
    }
    let text = input.to_kstr();
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    Ok(Value::scalar(out))
}

/// Ruby's `CGI.unescape`: `+` is a space and `%XX` a byte; malformed escapes stay as they are.
fn url_decode(input: &dyn ValueView, _: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    if input.is_nil() {
        return Ok(Value::Nil);
    }
    let text = input.to_kstr();
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |b: u8| char::from(b).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
                i += 3;
                continue;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(Value::scalar(String::from_utf8_lossy(&out).into_owned()))
}

// ---- people, money, dates ------------------------------------------------------------------

/// 先生 or 女士 for a gender trait; anything else gives the fallback argument (default empty).
fn honorific(input: &dyn ValueView, args: &Args<'_>, _: &dyn Runtime) -> Result<Value> {
    let gender = input.to_kstr().trim().to_lowercase();
    let title = match gender.as_str() {
        "male" | "m" | "man" | "男" | "男性" | "先生" => Some("先生"),
        "female" | "f" | "woman" | "女" | "女性" | "女士" => Some("女士"),
        _ => None,
    };
    Ok(match title {
        Some(title) => Value::scalar(title),
        None => args
            .get(0)
            .map_or_else(|| Value::scalar(""), |v| v.to_value()),
    })
}

/// (symbol, minor-unit digits) for an ISO 4217 code. Unlisted codes print as `CODE ` with two
/// decimals.
fn currency(code: &str) -> (Option<&'static str>, usize) {
    match code {
        "CNY" | "RMB" => (Some("¥"), 2),
        "USD" => (Some("$"), 2),
        "EUR" => (Some("€"), 2),
        "GBP" => (Some("£"), 2),
        "JPY" => (Some("JP¥"), 0),
        "HKD" => (Some("HK$"), 2),
        "TWD" => (Some("NT$"), 2),
        "MOP" => (Some("MOP$"), 2),
        "SGD" => (Some("S$"), 2),
        "AUD" => (Some("A$"), 2),
        "CAD" => (Some("CA$"), 2),
        "NZD" => (Some("NZ$"), 2),
        "KRW" => (Some("₩"), 0),
        "INR" => (Some("₹"), 2),
        "THB" => (Some("฿"), 2),
        "VND" => (Some("₫"), 0),
        "PHP" => (Some("₱"), 2),
        "RUB" => (Some("₽"), 2),
        "CLP" | "ISK" | "UGX" | "PYG" | "XOF" | "XAF" => (None, 0),
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "IQD" | "LYD" => (None, 3),
        _ => (None, 2),
    }
}

/// `value` (not negative) with exactly `digits` decimals, rounding half away from zero on the
/// shortest decimal form of the float — the digits the price was written with — so 1.005 is
/// 1.01, as a person expects, where binary rounding would give 1.00.
fn round_decimal(value: f64, digits: usize) -> String {
    let shortest = format!("{value}");
    let (whole, fraction) = shortest.split_once('.').unwrap_or((shortest.as_str(), ""));
    if fraction.len() <= digits {
        let mut out = whole.to_owned();
        if digits > 0 {
            out.push('.');
            out.push_str(fraction);
            out.extend(std::iter::repeat_n('0', digits - fraction.len()));
        }
        return out;
    }
    // Keep `digits` decimals, then carry one in if the first dropped digit is 5 or more.
    let mut kept: Vec<u8> = whole.bytes().chain(fraction.bytes().take(digits)).collect();
    if fraction.as_bytes()[digits] >= b'5' {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, b'1');
                break;
            }
            i -= 1;
            if kept[i] == b'9' {
                kept[i] = b'0';
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    let split = kept.len() - digits;
    let mut out = String::from_utf8_lossy(&kept[..split]).into_owned();
    if digits > 0 {
        out.push('.');
        out.push_str(&String::from_utf8_lossy(&kept[split..]));
    }
    out
}

/// Formats an amount in major units: the symbol, the amount grouped by thousands with commas and
/// a dot before the currency's minor digits (`¥1,234.50`, `$12.00`, `JP¥1,235`, `CHF 9.90`),
/// a minus sign first for negative amounts.
pub(crate) fn format_money(amount: f64, code: &str) -> String {
    let (symbol, digits) = currency(code);
    let fixed = round_decimal(amount.abs(), digits);
    let (whole, fraction) = match fixed.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (fixed.as_str(), None),
    };
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let negative = amount < 0.0 && fixed.bytes().any(|b| (b'1'..=b'9').contains(&b));
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    match symbol {
        Some(symbol) => out.push_str(symbol),
        None => {
            out.push_str(code);
            out.push(' ');
        }
    }
    out.push_str(&grouped);
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

fn money(input: &dyn ValueView, args: &Args<'_>, runtime: &dyn Runtime) -> Result<Value> {
    if input.is_nil() || (is_string(input) && input.to_kstr().trim().is_empty()) {
        return Ok(Value::Nil);
    }
    let amount = match input.as_scalar() {
        Some(_) if matches!(input.type_name(), "whole number" | "fractional number") => {
            to_num(input).as_f64()
        }
        Some(s) => s
            .to_kstr()
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| Error::with_msg(format!("money: `{}` is not an amount", s.to_kstr())))?,
        None => return Err(Error::with_msg("money: the amount is not a number")),
    };
    let code = match args.get(0).filter(|v| !v.is_nil()) {
        Some(v) => v.to_kstr().trim().to_uppercase(),
        None => with_state(runtime, |s| s.currency.clone()).unwrap_or_default(),
    };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::with_msg(if code.is_empty() {
            "money: no currency (pass one, e.g. `money: \"CNY\"`, or set the render's default)"
                .to_owned()
        } else {
            format!("money: `{code}` is not an ISO 4217 currency code")
        }));
    }
    Ok(Value::scalar(format_money(amount, &code)))
}

/// A moment in the render's zone: `input` read as a date, or `None` if it is not one.
fn moment(input: &dyn ValueView, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
    let local = |naive: NaiveDateTime| {
        // A local time inside a daylight-saving gap does not exist: take the hour after.
        zone.from_local_datetime(&naive).earliest().or_else(|| {
            zone.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })
    };
    let from_seconds = |seconds: f64| {
        if !seconds.is_finite() {
            return None;
        }
        let whole = seconds.floor();
        let nanos = ((seconds - whole) * 1e9) as u32;
        DateTime::<Utc>::from_timestamp(whole as i64, nanos).map(|t| t.with_timezone(&zone))
    };
    match input.type_name() {
        "whole number" | "fractional number" => return from_seconds(to_num(input).as_f64()),
        "string" => {}
        _ => return None,
    }
    let text = input.to_kstr();
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") || text.eq_ignore_ascii_case("today") {
        return Some(now.with_timezone(&zone));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<f64>().ok().and_then(from_seconds);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&zone));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(text, format) {
            return Some(t.with_timezone(&zone));
        }
    }
    // No offset: the time is already the customer's local time.
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return local(naive);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return local(date.and_hms_opt(0, 0, 0)?);
    }
    None
}

fn date(input: &dyn ValueView, args: &Args<'_>, runtime: &dyn Runtime) -> Result<Value> {
    let format = match args.get(0) {
        Some(f) if !f.is_nil() && !f.to_kstr().is_empty() => f.to_kstr().into_owned(),
        // Ruby returns the input untouched without a format.
        _ => return Ok(input.to_value()),
    };
    let (zone, now) = with_state(runtime, |s| (s.zone.unwrap_or(Tz::UTC), s.now));
    let zone = match args.get(1).filter(|z| !z.is_nil()) {
        Some(name) => name.to_kstr().trim().parse::<Tz>().map_err(|_| {
            Error::with_msg(format!("date: unknown time zone `{}`", name.to_kstr()))
        })?,
        None => zone,
    };
    let Some(moment) = moment(input, zone, now.unwrap_or_else(Utc::now)) else {
        // Ruby leaves what it cannot read as a date as it is.
        return Ok(input.to_value());
    };
    let items: Vec<Item<'_>> = StrftimeItems::new(format.as_str()).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(Error::with_msg(format!("date: invalid format `{format}`")));
    }
    let mut out = String::new();
    write!(out, "{}", moment.format_with_items(items.into_iter()))
        .map_err(|_| Error::with_msg(format!("date: cannot format with `{format}`")))?;
    Ok(Value::scalar(out))
}

// ---- registration --------------------------------------------------------------------------

/// The name of the finisher appended to outputs in plain text (and to `| raw` outputs in HTML).
pub(crate) const FINISH_TEXT: &str = "__cohort_text";
/// The name of the finisher appended to outputs in HTML: prints and escapes once.
pub(crate) const FINISH_HTML: &str = "__cohort_html";

const fn def(
    name: &'static str,
    description: &'static str,
    min: usize,
    max: usize,
    keywords: &'static [&'static str],
    eval: Eval,
) -> Def {
    Def {
        name,
        description,
        min,
        max,
        keywords,
        eval,
    }
}

/// Cohort's filters for one render mode (`escape` is `escape_once` in HTML, so that
/// `{{ name | escape }}` and `{{ name }}` print the same).
pub(crate) fn cohort_filters(html: bool) -> Vec<Def> {
    vec![
        def(
            "size",
            "Number of characters, items or keys.",
            0,
            0,
            &[],
            size,
        ),
        def(
            "slice",
            "Characters or items from offset (negative: from the end), length (1).",
            1,
            2,
            &[],
            slice,
        ),
        def(
            "truncate",
            "Shortens to length characters including the ellipsis (\"...\").",
            0,
            2,
            &[],
            truncate,
        ),
        def(
            "divided_by",
            "Division; integer by integer floors.",
            1,
            1,
            &[],
            divided_by,
        ),
        def("plus", "Addition (a missing value is 0).", 1, 1, &[], plus),
        def(
            "minus",
            "Subtraction (a missing value is 0).",
            1,
            1,
            &[],
            minus,
        ),
        def(
            "times",
            "Multiplication (a missing value is 0).",
            1,
            1,
            &[],
            times,
        ),
        def("abs", "Absolute value.", 0, 0, &[], abs),
        def("ceil", "Rounds up to an integer.", 0, 0, &[], ceil),
        def("floor", "Rounds down to an integer.", 0, 0, &[], floor),
        def(
            "round",
            "Rounds to an integer, or to n decimals.",
            0,
            1,
            &[],
            round,
        ),
        def(
            "at_least",
            "The larger of the input and the argument.",
            1,
            1,
            &[],
            at_least,
        ),
        def(
            "at_most",
            "The smaller of the input and the argument.",
            1,
            1,
            &[],
            at_most,
        ),
        def(
            "modulo",
            "Remainder with the divisor's sign.",
            1,
            1,
            &[],
            modulo,
        ),
        def(
            "default",
            "The argument when the input is nil, false or empty.",
            0,
            1,
            &["allow_false"],
            default,
        ),
        def(
            "escape",
            "HTML-escapes the input.",
            0,
            0,
            &[],
            if html {
                escape_once_filter
            } else {
                escape_text
            },
        ),
        def(
            "escape_once",
            "HTML-escapes, leaving existing entities alone.",
            0,
            0,
            &[],
            escape_once_filter,
        ),
        def(
            "h",
            "Alias of escape.",
            0,
            0,
            &[],
            if html {
                escape_once_filter
            } else {
                escape_text
            },
        ),
        def(
            "url_encode",
            "Percent-encodes as Ruby's CGI.escape (a space is +).",
            0,
            0,
            &[],
            url_encode,
        ),
        def("url_decode", "Decodes + and %XX.", 0, 0, &[], url_decode),
        def(
            "raw",
            "Prints the input unescaped in HTML (must be the last filter).",
            0,
            0,
            &[],
            raw,
        ),
        def(
            "honorific",
            "先生 for male, 女士 for female, else the argument (empty).",
            0,
            1,
            &[],
            honorific,
        ),
        def(
            "money",
            "Amount with its currency: ¥1,234.50.",
            0,
            1,
            &[],
            money,
        ),
        def(
            "date",
            "Formats a date (strftime) in the customer's time zone or the one given.",
            0,
            2,
            &[],
            date,
        ),
        def(
            FINISH_TEXT,
            "Cohort's output finisher (text).",
            0,
            0,
            &[],
            finish_text,
        ),
        def(
            FINISH_HTML,
            "Cohort's output finisher (HTML).",
            0,
            0,
            &[],
            finish_html,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_once_leaves_entities() {
        assert_eq!(escape_once("a & b"), "a &amp; b");
        assert_eq!(escape_once("a &amp; b &lt;"), "a &amp; b &lt;");
        assert_eq!(escape_once("&#39;&#x27;&#X27;"), "&#39;&#x27;&#X27;");
        assert_eq!(
            escape_once("&#;&#x;&;&1a;"),
            "&amp;#;&amp;#x;&amp;;&amp;1a;"
        );
        assert_eq!(escape_once("<b>\"'"), "&lt;b&gt;&quot;&#39;");
        assert_eq!(escape_once("深圳 & 广州"), "深圳 &amp; 广州");
        assert_eq!(escape_once(&escape("x<&amp;")), escape("x<&amp;"));
    }

    #[test]
    fn money_rule() {
        assert_eq!(format_money(1234.5, "CNY"), "¥1,234.50");
        assert_eq!(format_money(12.0, "USD"), "$12.00");
        assert_eq!(format_money(9.99, "EUR"), "€9.99");
        assert_eq!(format_money(1234.5, "JPY"), "JP¥1,235");
        assert_eq!(format_money(1234.4, "JPY"), "JP¥1,234");
        assert_eq!(format_money(1235.5, "JPY"), "JP¥1,236");
        assert_eq!(format_money(-1234567.891, "CNY"), "-¥1,234,567.89");
        assert_eq!(format_money(-0.001, "USD"), "$0.00");
        assert_eq!(format_money(9.9, "CHF"), "CHF 9.90");
        assert_eq!(format_money(1.2345, "KWD"), "KWD 1.235");
        assert_eq!(format_money(1.005, "USD"), "$1.01");
        assert_eq!(format_money(999.995, "CNY"), "¥1,000.00");
        assert_eq!(format_money(0.5, "JPY"), "JP¥1");
        assert_eq!(format_money(1e20, "USD"), "$100,000,000,000,000,000,000.00");
        assert_eq!(format_money(999.0, "CNY"), "¥999.00");
        assert_eq!(format_money(100000.0, "CNY"), "¥100,000.00");
    }

    #[test]
    fn floats_print_as_ruby() {
        assert_eq!(ruby_float(3.0), "3.0");
        assert_eq!(ruby_float(3.5), "3.5");
        assert_eq!(ruby_float(-0.25), "-0.25");
        assert_eq!(ruby_float(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn ruby_slices() {
        assert_eq!(slice_range(5, 1, 2), Some((1, 3)));
        assert_eq!(slice_range(5, -2, 5), Some((3, 5)));
        assert_eq!(slice_range(5, 5, 1), Some((5, 5)));
        assert_eq!(slice_range(5, 6, 1), None);
        assert_eq!(slice_range(5, -6, 1), None);
        assert_eq!(slice_range(5, 0, -1), None);
    }

    #[test]
    fn numbers_as_ruby_reads_them() {
        assert_eq!(to_num(&Value::scalar("12")), Num::Int(12));
        assert_eq!(to_num(&Value::scalar(" 3.5 ")), Num::Float(3.5));
        assert_eq!(to_num(&Value::scalar("12abc")), Num::Int(12));
        assert_eq!(to_num(&Value::scalar("abc")), Num::Int(0));
        assert_eq!(to_num(&Value::scalar("1e5")), Num::Int(1));
        assert_eq!(to_num(&Value::Nil), Num::Int(0));
    }
}
