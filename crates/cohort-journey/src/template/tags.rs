//! Cohort's tags: `for` with bounds and missing-value semantics, `abort_message`, and an HTML
//! escaping wrapper for tags that print values.

use std::io::Write;

use liquid_core::error::ResultLiquidExt;
use liquid_core::model::{KString, Value, ValueView};
use liquid_core::parser::{BlockElement, FilterChain, TryMatchToken};
use liquid_core::runtime::{Interrupt, InterruptRegister};
use liquid_core::{
    BlockReflection, Error, Expression, Language, ParseBlock, ParseTag, Renderable, Result,
    Runtime, TagBlock, TagReflection, TagTokenIter, Template,
};

use super::filters::escape_once;
use super::runtime::{LoopFrame, with_state};

/// The `for` block: `{% for item in collection limit: n offset: n reversed %}…{% else %}…{% endfor %}`.
///
/// Cohort's own rather than liquid's for two reasons. liquid's materialises the whole range
/// before the first iteration (`(1..100000000)` allocates gigabytes before any bound could
/// apply), and its loop frame copies each item and fails on a missing key inside the loop body;
/// this one takes the iterations from the render's allowance before it starts, walks items in
/// place and gives nil for what is missing (see `runtime.rs`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ForBlock;

impl BlockReflection for ForBlock {
    fn start_tag(&self) -> &str {
        "for"
    }
    fn end_tag(&self) -> &str {
        "endfor"
    }
    fn description(&self) -> &str {
        "Repeats a block for each item of an array, each pair of an object, or each integer of a range."
    }
}

#[derive(Debug)]
enum Collection {
    Value(Expression),
    Range(Expression, Expression),
}

fn parse_attribute(arguments: &mut TagTokenIter<'_>) -> Result<Expression> {
    arguments
        .expect_next("\":\" expected.")?
        .expect_str(":")
        .into_result_custom_msg("\":\" expected.")?;
    arguments
        .expect_next("Value expected.")?
        .expect_value()
        .into_result()
}

impl ParseBlock for ForBlock {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        mut tokens: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let name = arguments
            .expect_next("Identifier expected.")?
            .expect_identifier()
            .into_result()?;
        arguments
            .expect_next("\"in\" expected.")?
            .expect_str("in")
            .into_result_custom_msg("\"in\" expected.")?;
        let collection = match arguments
            .expect_next("Array or range expected.")?
            .expect_value()
        {
            TryMatchToken::Matches(value) => Collection::Value(value),
            TryMatchToken::Fails(token) => match token.expect_range() {
                TryMatchToken::Matches((start, end)) => Collection::Range(start, end),
                TryMatchToken::Fails(token) => return token.raise_error().into_err(),
            },
        };

        let mut limit = None;
        let mut offset = None;
        let mut reversed = false;
        while let Some(token) = arguments.next() {
            match token.as_str() {
                "limit" => limit = Some(parse_attribute(&mut arguments)?),
                "offset" => offset = Some(parse_attribute(&mut arguments)?),
                "reversed" => reversed = true,
                _ => {
                    return token
                        .raise_custom_error("\"limit\", \"offset\" or \"reversed\" expected.")
                        .into_err();
                }
            }
        }

        let mut body = Vec::new();
        let mut otherwise = None;
        while let Some(element) = tokens.next()? {
            match element {
                BlockElement::Tag(mut tag) if tag.name() == "else" => {
                    tag.tokens().expect_nothing()?;
                    otherwise = Some(Template::new(tokens.parse_all(options)?));
                    break;
                }
                element => body.push(element.parse(&mut tokens, options)?),
            }
        }
        tokens.assert_empty();

        Ok(Box::new(For {
            name: KString::from_ref(name),
            collection,
            limit,
            offset,
            reversed,
            body: Template::new(body),
            otherwise,
        }))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self
    }
}

#[derive(Debug)]
struct For {
    name: KString,
    collection: Collection,
    limit: Option<Expression>,
    offset: Option<Expression>,
    reversed: bool,
    body: Template,
    otherwise: Option<Template>,
}

static NIL: Value = Value::Nil;

/// An integer from a template value, as Ruby's `to_i` reads it (nil and text are 0).
fn integer(value: &dyn ValueView) -> i64 {
    value
        .as_scalar()
        .and_then(|s| s.to_integer().or_else(|| s.to_float().map(|f| f as i64)))
        .unwrap_or(0)
}

/// What a loop runs over, without copying it.
enum Items<'a> {
    Array(&'a dyn liquid_core::model::ArrayView),
    Range(i64),
    One(&'a dyn ValueView),
    Pairs(Vec<Value>),
}

impl Items<'_> {
    fn len(&self) -> usize {
        match self {
            Items::Array(array) => usize::try_from(array.size()).unwrap_or(0),
            Items::Range(n) => usize::try_from(*n).unwrap_or(0),
            Items::One(_) => 1,
            Items::Pairs(pairs) => pairs.len(),
        }
    }
}

impl For {
    fn trace(&self) -> String {
        format!("{{% for {} %}}", self.name)
    }
}

impl Renderable for For {
    fn render_to(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        // The collection stays borrowed from the data for the whole loop.
        let evaluated = match &self.collection {
            Collection::Value(expression) => Some(expression.evaluate(runtime)?),
            Collection::Range(..) => None,
        };
        let mut range_start = 0;
        let items = match (&self.collection, &evaluated) {
            (Collection::Range(start, end), _) => {
                let start = integer(start.evaluate(runtime)?.as_view());
                let end = integer(end.evaluate(runtime)?.as_view());
                range_start = start;
                Items::Range(end.saturating_sub(start).saturating_add(1).max(0))
            }
            (Collection::Value(_), Some(collection)) => {
                let value = collection.as_view();
                if let Some(array) = value.as_array() {
                    Items::Array(array)
                } else if let Some(object) = value.as_object() {
                    // Ruby iterates a hash as [key, value] pairs.
                    Items::Pairs(
                        object
                            .iter()
                            .map(|(k, v)| {
                                Value::Array(vec![Value::scalar(k.into_owned()), v.to_value()])
                            })
                            .collect(),
                    )
                } else if value.type_name() == "string" && !value.to_kstr().is_empty() {
                    // Ruby's Liquid loops once over a non-empty string.
                    Items::One(value)
                } else {
                    // nil, numbers, booleans, empty strings: no iterations.
                    Items::Range(0)
                }
            }
            (Collection::Value(_), None) => Items::Range(0),
        };

        let total = items.len();
        let offset = match &self.offset {
            Some(e) => usize::try_from(integer(e.evaluate(runtime)?.as_view()).max(0))
                .unwrap_or(usize::MAX),
            None => 0,
        };
        let first = offset.min(total);
        let available = total - first;
        let count = match &self.limit {
            Some(e) => usize::try_from(integer(e.evaluate(runtime)?.as_view()).max(0))
                .unwrap_or(usize::MAX)
                .min(available),
            None => available,
        };

        if count == 0 {
            if let Some(otherwise) = &self.otherwise {
                otherwise
                    .render_to(writer, runtime)
                    .trace_with(|| self.trace().into())?;
            }
            return Ok(());
        }

        with_state(runtime, |s| {
            s.take_iterations(u64::try_from(count).unwrap_or(u64::MAX))
        })?;

        for i in 0..count {
            let position = if self.reversed {
                first + count - 1 - i
            } else {
                first + i
            };
            let owned;
            let item: &dyn ValueView = match &items {
                Items::Array(array) => {
                    let index = i64::try_from(position).unwrap_or(i64::MAX);
                    match array.get(index) {
                        Some(item) => item,
                        None => &NIL,
                    }
                }
                Items::Range(_) => {
                    owned = Value::scalar(
                        range_start.saturating_add(i64::try_from(position).unwrap_or(i64::MAX)),
                    );
                    &owned
                }
                Items::One(value) => *value,
                Items::Pairs(pairs) => pairs.get(position).unwrap_or(&NIL),
            };
            let frame = LoopFrame {
                parent: runtime,
                name: self.name.as_str(),
                item,
                index: i,
                length: count,
            };
            with_state(runtime, |s| s.tick())?;
            self.body
                .render_to(writer, &frame)
                .trace_with(|| self.trace().into())
                .context_key("index")
                .value_with(|| format!("{}", i + 1).into())?;

            // `break` and `continue` stop the body and leave a note for the loop.
            let interrupt = runtime.registers().get_mut::<InterruptRegister>().reset();
            if let Some(Interrupt::Break) = interrupt {
                break;
            }
        }
        Ok(())
    }
}

/// `{% abort_message "reason" %}` (Braze's `{% abort_message("reason") %}` is accepted too):
/// stops rendering and cancels the send with the reason, which is not an error.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AbortMessageTag;

impl TagReflection for AbortMessageTag {
    fn tag(&self) -> &str {
        "abort_message"
    }
    fn description(&self) -> &str {
        "Cancels the send; the optional value is recorded as the reason."
    }
}

impl ParseTag for AbortMessageTag {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let reason = match arguments.next() {
            None => None,
            Some(token) => Some(token.expect_filter_chain(options).into_result()?),
        };
        arguments.expect_nothing()?;
        Ok(Box::new(AbortMessage { reason }))
    }

    fn reflection(&self) -> &dyn TagReflection {
        self
    }
}

#[derive(Debug)]
struct AbortMessage {
    reason: Option<FilterChain>,
}

impl Renderable for AbortMessage {
    fn render_to(&self, _writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let reason = match &self.reason {
            Some(chain) => chain.evaluate(runtime)?.to_kstr().into_owned().to_string(),
            None => String::new(),
        };
        with_state(runtime, |s| s.aborted = Some(reason));
        // An error is the only way to stop liquid mid-render; `render` sees the note above and
        // reports an abort rather than a failure.
        Err(Error::with_msg("abort_message"))
    }
}

/// Wraps a tag that prints values (`cycle`) so that, in HTML, what it prints is escaped once like
/// every `{{ }}` output.
#[derive(Clone)]
pub(crate) struct EscapedTag(pub(crate) Box<dyn ParseTag>);

impl ParseTag for EscapedTag {
    fn parse(
        &self,
        arguments: TagTokenIter<'_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        Ok(Box::new(Escaped(self.0.parse(arguments, options)?)))
    }
    fn reflection(&self) -> &dyn TagReflection {
        self.0.reflection()
    }
}

#[derive(Debug)]
struct Escaped(Box<dyn Renderable>);

impl Renderable for Escaped {
    fn render_to(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let mut buffer = Vec::new();
        self.0.render_to(&mut buffer, runtime)?;
        let text = String::from_utf8_lossy(&buffer);
        writer
            .write_all(escape_once(&text).as_bytes())
            .map_err(|e| Error::with_msg(format!("Failed to render: {e}")))
    }
}
