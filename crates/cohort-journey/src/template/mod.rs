//! Message templates in Liquid, as Braze, Shopify and Customer.io users write them.
//!
//! A template is parsed (and so validated) once, when it is saved, and rendered for each
//! customer at send time:
//!
//! ```
//! use cohort_journey::template::{render, RenderMode, Rendered, Template};
//! use serde_json::json;
//!
//! let template = Template::parse(
//!     "{{ last_name }}{{ gender | honorific }}，您好！\
//!      {% for p in event.products %}{{ p.name | default: \"商品\" }} {{ p.price | money: \"CNY\" }}；{% endfor %}",
//! )?;
//! let data = json!({
//!     "customer": { "last_name": "王", "gender": "female" },
//!     "event": { "products": [{ "name": "茶具", "price": 1234.5 }, { "price": 12 }] },
//! });
//! let zone = "Asia/Shanghai".parse().unwrap();
//! assert_eq!(
//!     render(&template, &data, RenderMode::Text, zone)?,
//!     Rendered::Message("王女士，您好！茶具 ¥1,234.50；商品 ¥12.00；".into()),
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The data a template sees
//!
//! [`render`] takes the customer's data as one JSON object whose keys are the template's
//! variables. The journey engine fills these names ([`TemplateData`] builds the object):
//!
//! | name | holds | example |
//! |---|---|---|
//! | `customer` | the profile's traits, and `id` | `{{ customer.first_name }}` |
//! | `computed` | computed traits by name | `{{ computed.lifetime_value \| money: "CNY" }}` |
//! | `event` | the triggering event's properties | `{% for p in event.products %}` |
//! | `event_name` | the triggering event's name | `{{ event_name }}` |
//! | `coupon` | the coupon issued for this send | `{{ coupon.code }}` |
//! | `segments` | keys of the segments the customer is in | `{% if segments contains "platinum" %}` |
//!
//! A name the object does not have is looked up among the customer's traits, so
//! `{{ first_name }}` reads `customer.first_name` (Braze and Iterable users write it that way);
//! the names above win over a trait with the same name.
//!
//! Missing values are blank, never errors: an absent variable, key or index (`{{ a.b }}` with no
//! `a`, `{{ list[5].x }}` past the end) is nil, which is false for `if`, replaced by `default`,
//! empty when printed, and nil again when indexed. `{{ first_name | default: "顾客" }}` prints
//! 顾客 for a customer without a first name. One exception: a missing variable used *as* an
//! index (`list[i]` with no `i`) fails the render, because liquid evaluates index expressions
//! before Cohort's lookup sees the path.
//!
//! Preview is the same [`render`] call: against a chosen customer's data, or against an empty
//! profile ([`TemplateData::default`], or any JSON that is not an object), where every variable
//! is missing and each `default` shows.
//!
//! # Liquid as Shopify's Ruby implementation defines it
//!
//! The engine is the `liquid` crate. Where it departs from Ruby Liquid (the reference the other
//! tools follow), Cohort registers its own filters under the standard names:
//!
//! - `size`, `slice`, `truncate` count characters, not bytes (`"深圳市" | size` is 3).
//! - `divided_by` floors integer ÷ integer (`7 | divided_by: 2` is 3, `-7 | divided_by: 2` is
//!   -4) and divides floats as floats (`7 | divided_by: 2.0` is 3.5); `modulo` takes the
//!   divisor's sign. Floats print as Ruby prints them (`3.0`).
//! - `plus`, `minus`, `times`, `round`, `ceil`, `floor`, `abs`, `at_least`, `at_most` read
//!   their operands as Ruby does: a missing value or text that is not a number is 0, not an
//!   error.
//! - `default` replaces nil, false and empty strings, arrays and objects — not `0` or
//!   whitespace; `default: "x", allow_false: true` keeps `false`.
//! - `url_encode` is Ruby's `CGI.escape` (a space is `+`); `url_decode` its inverse.
//! - `for` (with `limit:`, `offset:`, `reversed`, `else`, `forloop.*`) loops once over a
//!   non-empty string and over an object's `[key, value]` pairs, as Ruby does.
//!
//! An independent check: the tests render 26 templates as python-liquid 2.3.6 does, except
//! where it departs from Ruby (a string of exactly the `truncate` length, `round` of a half).
//!
//! And adds:
//!
//! - `honorific`: 先生 for a gender of `male`/`m`/`man`/`男`/`男性`, 女士 for
//!   `female`/`f`/`woman`/`女`/`女性` (any case), otherwise its argument or nothing:
//!   `{{ last_name }}{{ gender | honorific: "先生/女士" }}`.
//! - `date: "%Y年%m月%d日 %H:%M"` formats (strftime, as chrono implements it) in the customer's
//!   time zone given to [`render`], or in the zone named by a second argument
//!   (`date: "%H:%M", "Asia/Tokyo"`). It reads RFC 3339 times (`2026-03-01T02:00:00Z`), Ruby's
//!   `2026-03-01 10:00:00 +0800`, Unix seconds, `now`/`today` (the render's clock), and times
//!   or dates without an offset, which are taken as already local. Text it cannot read as a
//!   date is printed unchanged, as Ruby does.
//! - `money` prints an amount in major units (as Segment's events carry it, not Shopify's cents)
//!   with its ISO 4217 currency: the currency's symbol, thousands grouped with commas, a dot
//!   before the currency's minor-unit digits, rounded — `¥1,234.50` (CNY), `$12.00`, `€9.99`,
//!   `JP¥1,235`; currencies without a symbol here print their code: `CHF 9.90`. Without an
//!   argument it uses [`RenderOptions::currency`].
//! - `{% abort_message "reason" %}` (or Braze's `{% abort_message("reason") %}`) stops rendering:
//!   the result is [`Rendered::Aborted`] with the reason, and nothing is sent.
//!
//! Not available: `include`/`render` (no partials) and `tablerow`.
//!
//! # Escaping
//!
//! In [`RenderMode::Html`] (email HTML bodies) every `{{ }}` output is escaped once: `& < > " '`
//! become entities, but entities already there (`&amp;`, `&#39;`) are kept, as `escape_once`
//! does — so `{{ name }}` and `{{ name | escape }}` print the same. `{{ html | raw }}` (`raw` as
//! the last filter) prints unescaped. Text built with `capture` is escaped when it is printed,
//! so markup in a capture needs `| raw`. [`RenderMode::Text`] (SMS, plain-text email, push)
//! never escapes.
//!
//! # Bounds and failures
//!
//! [`Limits`] bound the template's size (checked when it is parsed), the output's size (and any
//! value built while rendering), the loop iterations of one render, and its time. Exceeding one
//! fails the render with a [`RenderError`] naming it. A failed render never returns part of a
//! message: the send fails with the error as its reason.

mod filters;
pub mod message;
mod runtime;
mod source;
mod tags;
mod view;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use liquid_core::runtime::RuntimeBuilder;
use liquid_core::{Language, ParseBlock, ParseFilter, ParseTag, Renderable, Runtime};
use liquid_lib::stdlib;
use serde_json::{Map, Value};

use self::runtime::{RenderState, Root};
use self::view::Scope;

/// Top-level name of the customer's traits.
pub const CUSTOMER: &str = "customer";
/// Top-level name of the computed traits.
pub const COMPUTED: &str = "computed";
/// Top-level name of the triggering event's properties.
pub const EVENT: &str = "event";
/// Top-level name of the triggering event's name.
pub const EVENT_NAME: &str = "event_name";
/// Top-level name of the coupon issued for the send.
pub const COUPON: &str = "coupon";
/// Top-level name of the customer's segment keys.
pub const SEGMENTS: &str = "segments";

/// Where the rendered text goes, which decides escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderMode {
    /// An email's HTML body: every output is escaped once.
    Html,
    /// SMS, push, plain-text email, webhook text: nothing is escaped.
    Text,
}

/// Bounds on one template and one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest template source, in bytes (checked by [`Template::parse_with_limits`]).
    pub max_template_bytes: usize,
    /// Largest output, in bytes; also the largest string or array built while rendering.
    pub max_output_bytes: usize,
    /// Most loop iterations in one render, all loops together.
    pub max_loop_iterations: u64,
    /// Longest a render may take.
    pub max_render_time: Duration,
}

impl Default for Limits {
    /// 512 KiB of template, 1 MiB of output, 10,000 iterations, 100 ms: far above a real
    /// message (Gmail clips HTML past 102 KB; a render takes microseconds), far below harm.
    fn default() -> Self {
        Limits {
            max_template_bytes: 512 * 1024,
            max_output_bytes: 1024 * 1024,
            max_loop_iterations: 10_000,
            max_render_time: Duration::from_millis(100),
        }
    }
}

/// Everything a render needs besides the template and the data.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// HTML (escaped) or text.
    pub mode: RenderMode,
    /// The customer's time zone: `date` renders in it.
    pub zone: Tz,
    /// The render's "now" (`{{ "now" | date: … }}`), from the journey's clock; `None` reads the
    /// system clock.
    pub now: Option<DateTime<Utc>>,
    /// The currency `money` uses without an argument (ISO 4217, e.g. `CNY`).
    pub currency: Option<String>,
    /// Bounds on the render.
    pub limits: Limits,
}

impl RenderOptions {
    /// Options with the system clock, no default currency and default limits.
    pub fn new(mode: RenderMode, zone: Tz) -> RenderOptions {
        RenderOptions {
            mode,
            zone,
            now: None,
            currency: None,
            limits: Limits::default(),
        }
    }
}

/// The result of a render that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// The message to send.
    Message(String),
    /// `abort_message` ran: do not send; the reason (possibly empty) is recorded.
    Aborted(String),
}

/// Why a template could not be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The source is longer than [`Limits::max_template_bytes`].
    #[error("template is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The source's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Liquid could not parse it.
    #[error("{}", syntax_message(message, *line, *column))]
    Syntax {
        /// liquid's description of the problem.
        message: String,
        /// 1-based line of the problem, when liquid reports one.
        line: Option<usize>,
        /// 1-based column of the problem, when liquid reports one.
        column: Option<usize>,
    },
}

fn syntax_message(message: &str, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => {
            format!("syntax error at line {line}, column {column}: {message}")
        }
        _ => format!("syntax error: {message}"),
    }
}

/// Why a render failed; the send fails with this as its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The output grew past [`Limits::max_output_bytes`].
    #[error("output exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A string or array built while rendering grew past [`Limits::max_output_bytes`].
    #[error("a value built while rendering exceeds the limit of {limit} bytes or items")]
    ValueTooLarge {
        /// The limit in bytes (strings) or items (arrays).
        limit: usize,
    },
    /// The loops of one render would run more than [`Limits::max_loop_iterations`] times.
    #[error("loops exceed the limit of {limit} iterations")]
    LoopLimit {
        /// The limit.
        limit: u64,
    },
    /// The render took longer than [`Limits::max_render_time`].
    #[error("rendering took longer than the limit of {limit:?}")]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// A filter or tag failed (`divided_by: 0`, `money` without a currency, …).
    #[error("template error: {message}")]
    Liquid {
        /// liquid's description, with where it happened.
        message: String,
    },
}

/// A parsed template, ready to render in either mode. Cheap to share (`Send + Sync`): parse when
/// the template is saved, keep it, render it for every customer.
#[derive(Debug)]
pub struct Template {
    source: String,
    text: liquid_core::Template,
    html: liquid_core::Template,
}

impl Template {
    /// Parses `source` under the default [`Limits`].
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        Template::parse_with_limits(source, &Limits::default())
    }

    /// Parses `source`, refusing one longer than `limits.max_template_bytes`.
    pub fn parse_with_limits(source: &str, limits: &Limits) -> Result<Template, TemplateError> {
        if source.len() > limits.max_template_bytes {
            return Err(TemplateError::TooLarge {
                size: source.len(),
                limit: limits.max_template_bytes,
            });
        }
        let normalized = source::normalize(source);
        let text = parse_in(&source::add_finishers(&normalized, false), &TEXT);
        let html = parse_in(&source::add_finishers(&normalized, true), &HTML);
        match (text, html) {
            (Ok(text), Ok(html)) => Ok(Template {
                source: source.to_owned(),
                text,
                html,
            }),
            (Err(rewritten), _) | (_, Err(rewritten)) => {
                // Report the error where it is in the template as written (the finishers shift
                // columns); if only the rewritten form fails, report that.
                let error = match liquid_core::parser::parse(&normalized, &TEXT) {
                    Err(original) => original,
                    Ok(_) => rewritten,
                };
                Err(syntax_error(&error))
            }
        }
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Validates a template at save time: `Ok` if it parses within the default limits.
pub fn check(source: &str) -> Result<(), TemplateError> {
    Template::parse(source).map(|_| ())
}

fn parse_in(
    source: &str,
    language: &Language,
) -> Result<liquid_core::Template, liquid_core::Error> {
    liquid_core::parser::parse(source, language).map(liquid_core::Template::new)
}

/// Turns liquid's parse error into a [`TemplateError::Syntax`], taking the position from pest's
/// ` --> line:column` marker when there is one.
fn syntax_error(error: &liquid_core::Error) -> TemplateError {
    let text = error.to_string();
    let position = text.split_once(" --> ").and_then(|(_, rest)| {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ':'))
            .unwrap_or(rest.len());
        let (line, column) = rest[..end].split_once(':')?;
        Some((line.parse().ok()?, column.parse().ok()?))
    });
    TemplateError::Syntax {
        message: clean_message(&text),
        line: position.map(|(l, _)| l),
        column: position.map(|(_, c)| c),
    }
}

/// liquid's multi-line error text as one line: `liquid: ` dropped, lines joined.
fn clean_message(text: &str) -> String {
    text.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("liquid: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ")
        // The output finishers are Cohort's plumbing, not filters a user can write.
        .replace(&format!("{}, ", filters::FINISH_HTML), "")
        .replace(&format!("{}, ", filters::FINISH_TEXT), "")
}

/// Renders `template` against `data` in `mode`, with dates in `zone`, the system clock, no
/// default currency and the default [`Limits`]. See [`render_with`].
pub fn render(
    template: &Template,
    data: &Value,
    mode: RenderMode,
    zone: Tz,
) -> Result<Rendered, RenderError> {
    render_with(template, data, &RenderOptions::new(mode, zone))
}

/// Renders `template` against `data` (an object of the names in the module documentation; an
/// empty profile is `{}`).
///
/// Returns the message, or [`Rendered::Aborted`] when the template ran `abort_message`, or the
/// reason the render failed — never a partial message.
pub fn render_with(
    template: &Template,
    data: &Value,
    options: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let scope = Scope::new(data);
    let runtime = Root {
        inner: RuntimeBuilder::new().set_globals(&scope).build(),
    };
    let limits = options.limits;
    {
        let mut state = runtime.registers().get_mut::<RenderState>();
        *state = RenderState {
            zone: Some(options.zone),
            now: options.now,
            currency: options.currency.clone(),
            deadline: Instant::now().checked_add(limits.max_render_time),
            max_render_time: limits.max_render_time,
            max_value_bytes: limits.max_output_bytes,
            loops_left: limits.max_loop_iterations,
            max_loop_iterations: limits.max_loop_iterations,
            ..RenderState::default()
        };
    }
    let parsed = match options.mode {
        RenderMode::Html => &template.html,
        RenderMode::Text => &template.text,
    };
    let mut output = Output {
        // The template's own length is a fair first guess of the message's.
        bytes: Vec::with_capacity((template.source.len() + 64).min(limits.max_output_bytes)),
        limit: limits.max_output_bytes,
        exceeded: false,
    };
    let result = parsed.render_to(&mut output, &runtime);
    let (aborted, tripped) = {
        let mut state = runtime.registers().get_mut::<RenderState>();
        (state.aborted.take(), state.tripped.take())
    };
    if let Some(reason) = aborted {
        return Ok(Rendered::Aborted(reason));
    }
    if output.exceeded {
        return Err(RenderError::OutputTooLarge {
            limit: limits.max_output_bytes,
        });
    }
    if let Some(error) = tripped {
        return Err(error);
    }
    if let Err(error) = result {
        return Err(RenderError::Liquid {
            message: clean_message(&error.to_string()),
        });
    }
    String::from_utf8(output.bytes)
        .map(Rendered::Message)
        .map_err(|_| RenderError::Liquid {
            message: "the output is not UTF-8".to_owned(),
        })
}

/// The render's output, refusing to grow past the limit.
struct Output {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("output limit exceeded"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The customer's data in the shape templates read (see the module documentation). Build it,
/// then pass [`TemplateData::to_value`] to [`render`]. The default is the empty profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateData {
    /// Traits, plus `id`.
    pub customer: Map<String, Value>,
    /// Computed traits by name.
    pub computed: Map<String, Value>,
    /// The triggering event's name.
    pub event_name: Option<String>,
    /// The triggering event's properties.
    pub event: Map<String, Value>,
    /// The coupon issued for this send (`{"code": …, "expires_at": …}`).
    pub coupon: Option<Value>,
    /// Keys of the segments the customer is in.
    pub segments: Vec<String>,
}

impl TemplateData {
    /// The JSON object [`render`] reads.
    pub fn to_value(&self) -> Value {
        let mut root = Map::new();
        root.insert(CUSTOMER.into(), Value::Object(self.customer.clone()));
        root.insert(COMPUTED.into(), Value::Object(self.computed.clone()));
        root.insert(EVENT.into(), Value::Object(self.event.clone()));
        if let Some(name) = &self.event_name {
            root.insert(EVENT_NAME.into(), Value::String(name.clone()));
        }
        if let Some(coupon) = &self.coupon {
            root.insert(COUPON.into(), coupon.clone());
        }
        root.insert(
            SEGMENTS.into(),
            Value::Array(self.segments.iter().cloned().map(Value::String).collect()),
        );
        Value::Object(root)
    }
}

static TEXT: LazyLock<Language> = LazyLock::new(|| language(false));
static HTML: LazyLock<Language> = LazyLock::new(|| language(true));

/// liquid's standard filters that Cohort keeps as they are.
fn kept_filters() -> Vec<Box<dyn ParseFilter>> {
    vec![
        Box::new(stdlib::Append),
        Box::new(stdlib::Capitalize),
        Box::new(stdlib::Compact),
        Box::new(stdlib::Concat),
        Box::new(stdlib::Downcase),
        Box::new(stdlib::First),
        Box::new(stdlib::Join),
        Box::new(stdlib::Last),
        Box::new(stdlib::Lstrip),
        Box::new(stdlib::Map),
        Box::new(stdlib::NewlineToBr),
        Box::new(stdlib::Prepend),
        Box::new(stdlib::Remove),
        Box::new(stdlib::RemoveFirst),
        Box::new(stdlib::Replace),
        Box::new(stdlib::ReplaceFirst),
        Box::new(stdlib::Reverse),
        Box::new(stdlib::Rstrip),
        Box::new(stdlib::Sort),
        Box::new(stdlib::SortNatural),
        Box::new(stdlib::Split),
        Box::new(stdlib::Strip),
        Box::new(stdlib::StripHtml),
        Box::new(stdlib::StripNewlines),
        Box::new(stdlib::TruncateWords),
        Box::new(stdlib::Uniq),
        Box::new(stdlib::Upcase),
        Box::new(stdlib::Where),
    ]
}

/// The tags, blocks and filters of one render mode.
fn language(html: bool) -> Language {
    let mut language = Language::empty();
    let blocks: Vec<Box<dyn ParseBlock>> = vec![
        Box::new(stdlib::RawBlock),
        Box::new(stdlib::IfBlock),
        Box::new(stdlib::UnlessBlock),
        Box::new(stdlib::IfChangedBlock),
        Box::new(stdlib::CommentBlock),
        Box::new(stdlib::CaptureBlock),
        Box::new(stdlib::CaseBlock),
        Box::new(tags::ForBlock),
    ];
    for block in blocks {
        let name = block.reflection().start_tag().to_owned();
        language.blocks.register(name, block);
    }
    let cycle: Box<dyn ParseTag> = if html {
        Box::new(tags::EscapedTag(Box::new(stdlib::CycleTag)))
    } else {
        Box::new(stdlib::CycleTag)
    };
    let tag_list: Vec<Box<dyn ParseTag>> = vec![
        Box::new(stdlib::AssignTag),
        Box::new(stdlib::BreakTag),
        Box::new(stdlib::ContinueTag),
        Box::new(stdlib::IncrementTag),
        Box::new(stdlib::DecrementTag),
        cycle,
        Box::new(tags::AbortMessageTag),
    ];
    for tag in tag_list {
        let name = tag.reflection().tag().to_owned();
        language.tags.register(name, tag);
    }
    let filter_list = kept_filters().into_iter().chain(
        filters::cohort_filters(html)
            .into_iter()
            .map(|f| Box::new(f) as Box<dyn ParseFilter>),
    );
    for filter in filter_list {
        let name = filter.reflection().name().to_owned();
        language
            .filters
            .register(name, Box::new(filters::Guarded(filter)));
    }
    language
}

// Templates are parsed once and shared between the threads that render them.
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Template>();
};
