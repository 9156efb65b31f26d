//! The customer's data as liquid values, read in place from `serde_json`.
//!
//! Rendering a message must not copy the customer's profile into liquid's own value tree first:
//! a journey renders the same template for a million customers, so the view borrows the JSON the
//! caller already holds. [`JsonView`] is a zero-cost newtype over [`serde_json::Value`] (cast by
//! reference with `ref-cast`), and [`Scope`] is the top-level object the template's variables are
//! looked up in.

use std::fmt;

use liquid_core::Object;
use liquid_core::model::{
    ArrayView, DisplayCow, KStringCow, ObjectView, ScalarCow, State, Value, ValueView,
};
use ref_cast::RefCast;
use serde_json::Map;

/// A JSON value seen as a liquid value.
#[derive(Debug, RefCast)]
#[repr(transparent)]
pub(crate) struct JsonView(serde_json::Value);

impl JsonView {
    pub(crate) fn new(value: &serde_json::Value) -> &JsonView {
        JsonView::ref_cast(value)
    }
}

/// A number as liquid sees it: integers stay integers (so `divided_by` floors), anything else
/// (fractions, and integers beyond `i64`) is a float.
fn number(n: &serde_json::Number) -> ScalarCow<'static> {
    match n.as_i64() {
        Some(i) => ScalarCow::new(i),
        None => ScalarCow::new(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// Renders a JSON array the way liquid renders its own arrays: the items' renderings joined.
struct ArrayRender<'a>(&'a [serde_json::Value]);

impl fmt::Display for ArrayRender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in self.0 {
            write!(f, "{}", JsonView::new(item).render())?;
        }
        Ok(())
    }
}

impl ValueView for JsonView {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }

    fn render(&self) -> DisplayCow<'_> {
        match &self.0 {
            serde_json::Value::Null => DisplayCow::Borrowed(&""),
            serde_json::Value::Bool(b) => DisplayCow::Borrowed(b),
            serde_json::Value::String(s) => DisplayCow::Borrowed(s),
            serde_json::Value::Number(n) => {
                DisplayCow::Owned(Box::new(number(n).into_owned().render().to_string()))
            }
            serde_json::Value::Array(items) => DisplayCow::Owned(Box::new(ArrayRender(items))),
            serde_json::Value::Object(_) => {
                DisplayCow::Owned(Box::new(self.to_value().render().to_string()))
            }
        }
    }

    fn source(&self) -> DisplayCow<'_> {
        // Used in liquid's error messages only: JSON is a faithful source form.
        DisplayCow::Owned(Box::new(self.0.to_string()))
    }

    fn type_name(&self) -> &'static str {
        match &self.0 {
            serde_json::Value::Null => "nil",
            serde_json::Value::Bool(_) => "boolean",
            serde_json::Value::Number(n) if n.is_i64() => "whole number",
            serde_json::Value::Number(_) => "fractional number",
            serde_json::Value::String(_) => "string",
            serde_json::Value::Array(_) => "array",
            serde_json::Value::Object(_) => "object",
        }
    }

    fn query_state(&self, state: State) -> bool {
        match &self.0 {
            serde_json::Value::Null => !matches!(state, State::Truthy),
            serde_json::Value::Bool(b) => b.query_state(state),
            serde_json::Value::Number(_) => matches!(state, State::Truthy),
            serde_json::Value::String(s) => s.query_state(state),
            serde_json::Value::Array(items) => match state {
                State::Truthy => true,
                State::DefaultValue | State::Empty | State::Blank => items.is_empty(),
            },
            serde_json::Value::Object(map) => match state {
                State::Truthy => true,
                State::DefaultValue | State::Empty | State::Blank => map.is_empty(),
            },
        }
    }

    fn to_kstr(&self) -> KStringCow<'_> {
        match &self.0 {
            serde_json::Value::String(s) => KStringCow::from_ref(s),
            _ => KStringCow::from_string(self.render().to_string()),
        }
    }

    fn to_value(&self) -> Value {
        to_liquid(&self.0)
    }

    fn as_scalar(&self) -> Option<ScalarCow<'_>> {
        match &self.0 {
            serde_json::Value::Bool(b) => Some(ScalarCow::new(*b)),
            serde_json::Value::Number(n) => Some(number(n)),
            serde_json::Value::String(s) => Some(ScalarCow::new(s.as_str())),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&dyn ArrayView> {
        match &self.0 {
            serde_json::Value::Array(_) => Some(self),
            _ => None,
        }
    }

    fn as_object(&self) -> Option<&dyn ObjectView> {
        match &self.0 {
            serde_json::Value::Object(_) => Some(self),
            _ => None,
        }
    }

    fn is_nil(&self) -> bool {
        self.0.is_null()
    }
}

impl JsonView {
    fn items(&self) -> &[serde_json::Value] {
        match &self.0 {
            serde_json::Value::Array(items) => items,
            _ => &[],
        }
    }

    fn map(&self) -> Option<&Map<String, serde_json::Value>> {
        match &self.0 {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    }
}

impl ArrayView for JsonView {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        self.items().len() as i64
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(
            self.items()
                .iter()
                .map(|v| JsonView::new(v) as &dyn ValueView),
        )
    }

    fn contains_key(&self, index: i64) -> bool {
        ArrayView::get(self, index).is_some()
    }

    fn get(&self, index: i64) -> Option<&dyn ValueView> {
        let items = self.items();
        // Negative indexes count from the end, as in Ruby.
        let index = if index < 0 {
            (items.len() as i64).checked_add(index)?
        } else {
            index
        };
        let index = usize::try_from(index).ok()?;
        items.get(index).map(|v| JsonView::new(v) as &dyn ValueView)
    }
}

impl ObjectView for JsonView {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        self.map().map_or(0, |m| m.len() as i64)
    }

    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(
            self.map()
                .into_iter()
                .flat_map(|m| m.keys())
                .map(|k| KStringCow::from_ref(k)),
        )
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(
            self.map()
                .into_iter()
                .flat_map(|m| m.values())
                .map(|v| JsonView::new(v) as &dyn ValueView),
        )
    }

    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(
            self.map()
                .into_iter()
                .flat_map(|m| m.iter())
                .map(|(k, v)| (KStringCow::from_ref(k), JsonView::new(v) as &dyn ValueView)),
        )
    }

    fn contains_key(&self, index: &str) -> bool {
        self.map().is_some_and(|m| m.contains_key(index))
    }

    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        self.map()?
            .get(index)
            .map(|v| JsonView::new(v) as &dyn ValueView)
    }
}

/// Converts JSON into liquid's own value tree (when liquid needs an owned copy, e.g. `assign`).
pub(crate) fn to_liquid(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::scalar(*b),
        serde_json::Value::Number(n) => Value::Scalar(number(n).into_owned()),
        serde_json::Value::String(s) => Value::scalar(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(to_liquid).collect()),
        serde_json::Value::Object(map) => {
            let mut object = Object::new();
            for (k, v) in map {
                object.insert(k.clone().into(), to_liquid(v));
            }
            Value::Object(object)
        }
    }
}

/// The template's top level: the data object's keys, then (for names it does not have) the keys
/// of its `customer` object, so `{{ first_name }}` reads `customer.first_name` as Braze and
/// Iterable users write it, while `customer`, `event`, `coupon`, … keep their meaning even when a
/// trait has the same name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    root: Option<&'a Map<String, serde_json::Value>>,
    customer: Option<&'a Map<String, serde_json::Value>>,
}

impl<'a> Scope<'a> {
    /// A scope over `data`; anything but a JSON object is an empty profile.
    pub(crate) fn new(data: &'a serde_json::Value) -> Scope<'a> {
        let root = data.as_object();
        let customer = root
            .and_then(|r| r.get(super::CUSTOMER))
            .and_then(|c| c.as_object());
        Scope { root, customer }
    }

    fn lookup(&self, key: &str) -> Option<&'a serde_json::Value> {
        self.root
            .and_then(|r| r.get(key))
            .or_else(|| self.customer.and_then(|c| c.get(key)))
    }

    fn entries(&self) -> impl Iterator<Item = (&'a String, &'a serde_json::Value)> + 'a {
        self.root.into_iter().flat_map(|m| m.iter())
    }
}

impl ValueView for Scope<'_> {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(self.to_value().render().to_string()))
    }
    fn source(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(self.to_value().source().to_string()))
    }
    fn type_name(&self) -> &'static str {
        "object"
    }
    fn query_state(&self, state: State) -> bool {
        match state {
            State::Truthy => true,
            _ => self.entries().next().is_none(),
        }
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        KStringCow::from_string(self.render().to_string())
    }
    fn to_value(&self) -> Value {
        let mut object = Object::new();
        for (k, v) in self.entries() {
            object.insert(k.clone().into(), to_liquid(v));
        }
        Value::Object(object)
    }
    fn as_object(&self) -> Option<&dyn ObjectView> {
        Some(self)
    }
}

impl ObjectView for Scope<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        self.root.map_or(0, |m| m.len() as i64)
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(self.entries().map(|(k, _)| KStringCow::from_ref(k)))
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(
            self.entries()
                .map(|(_, v)| JsonView::new(v) as &dyn ValueView),
        )
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(
            self.entries()
                .map(|(k, v)| (KStringCow::from_ref(k), JsonView::new(v) as &dyn ValueView)),
        )
    }
    fn contains_key(&self, index: &str) -> bool {
        self.lookup(index).is_some()
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        self.lookup(index)
            .map(|v| JsonView::new(v) as &dyn ValueView)
    }
}
