//! Variable lookup with Shopify's missing-value semantics, and the per-render budget.
//!
//! liquid resolves `{{ a.b }}` through the runtime's `get`, which fails with "Unknown variable" or
//! "Unknown index" when anything on the path is absent, and its own stack frames copy every
//! value they return (so a wrapper on the data is lost after the first lookup). Cohort therefore
//! renders with its own runtime ([`Root`]) and its own loop frames ([`LoopFrame`], used by the
//! `for` tag in `tags.rs`): both walk the path themselves, borrow what they find, and answer nil
//! for anything missing. Nil is false for `if`, replaced by `default`, empty when rendered, and
//! nil again when indexed — the behaviour of Shopify's Liquid and of the engines Braze and
//! Customer.io users know.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use liquid_core::model::ValueView;
use liquid_core::model::{KString, KStringCow, KStringRef, Object, ScalarCow, Value, ValueCow};
use liquid_core::runtime::{PartialStore, Registers};
use liquid_core::{Error, Result, Runtime};

use super::RenderError;

/// How often (in loop iterations, filter calls and writes) the render clock is read: reading it
/// costs tens of nanoseconds, a render a few microseconds.
const CLOCK_EVERY: u32 = 16;

/// Per-render state shared by Cohort's filters, tags and the output writer, kept in liquid's
/// registers (the only state a filter can reach). Borrow it briefly: the registers are one
/// `RefCell`, and a borrow held across rendering a block would panic in the next filter.
#[derive(Debug, Default)]
pub(crate) struct RenderState {
    pub(crate) zone: Option<Tz>,
    pub(crate) now: Option<DateTime<Utc>>,
    pub(crate) currency: Option<String>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) max_render_time: Duration,
    pub(crate) max_value_bytes: usize,
    pub(crate) loops_left: u64,
    pub(crate) max_loop_iterations: u64,
    pub(crate) ticks: u32,
    /// The first limit exceeded, reported instead of liquid's wrapped error.
    pub(crate) tripped: Option<RenderError>,
    /// Set by `abort_message`: the send is cancelled with this reason.
    pub(crate) aborted: Option<String>,
}

impl RenderState {
    /// Records `error` (the first one wins) and returns the liquid error that unwinds the render.
    pub(crate) fn trip(&mut self, error: RenderError) -> Error {
        let message = error.to_string();
        self.tripped.get_or_insert(error);
        Error::with_msg(message)
    }

    /// Counts one unit of work and checks the render's deadline every [`CLOCK_EVERY`] units.
    pub(crate) fn tick(&mut self) -> Result<()> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(CLOCK_EVERY)
            && let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            let limit = self.max_render_time;
            return Err(self.trip(RenderError::Timeout { limit }));
        }
        Ok(())
    }

    /// Takes `n` loop iterations from the render's allowance, before the loop runs.
    pub(crate) fn take_iterations(&mut self, n: u64) -> Result<()> {
        if n > self.loops_left {
            let limit = self.max_loop_iterations;
            return Err(self.trip(RenderError::LoopLimit { limit }));
        }
        self.loops_left -= n;
        Ok(())
    }

    /// Fails when a value built during the render (a filter's result, an output) is larger than
    /// the output may be: nothing that big can be sent, and building it costs memory.
    pub(crate) fn check_value(&mut self, value: &dyn ValueView) -> Result<()> {
        // Only strings and arrays can grow; numbers are not formatted just to be measured.
        let size = if value.type_name() == "string" {
            value.to_kstr().len()
        } else if let Some(array) = value.as_array() {
            usize::try_from(array.size()).unwrap_or(usize::MAX)
        } else {
            0
        };
        if size > self.max_value_bytes {
            let limit = self.max_value_bytes;
            return Err(self.trip(RenderError::ValueTooLarge { limit }));
        }
        Ok(())
    }
}

/// Runs `f` with the render's state borrowed.
pub(crate) fn with_state<T>(runtime: &dyn Runtime, f: impl FnOnce(&mut RenderState) -> T) -> T {
    let mut state = runtime.registers().get_mut::<RenderState>();
    f(&mut state)
}

/// One step down a path: a borrowed child, or a value computed on the spot (`size`).
enum Step<'v> {
    Child(&'v dyn ValueView),
    Computed(Value),
}

/// `value[key]` with Shopify's rules: arrays take integer indexes (negative from the end) and
/// `first`, `last`, `size`; objects their keys and `size` (unless they have a `size` key); strings
/// `size` in characters (liquid counts bytes). Anything else is missing.
fn step<'v>(value: &'v dyn ValueView, key: &ScalarCow<'_>) -> Option<Step<'v>> {
    if let Some(array) = value.as_array() {
        if let Some(index) = key.to_integer() {
            return array.get(index).map(Step::Child);
        }
        return match key.to_kstr().as_str() {
            "first" => array.first().map(Step::Child),
            "last" => array.last().map(Step::Child),
            "size" => Some(Step::Computed(Value::scalar(array.size()))),
            _ => None,
        };
    }
    if let Some(object) = value.as_object() {
        let key = key.to_kstr();
        return match object.get(key.as_str()) {
            Some(child) => Some(Step::Child(child)),
            None if key.as_str() == "size" => Some(Step::Computed(Value::scalar(object.size()))),
            None => None,
        };
    }
    if let Some(scalar) = value.as_scalar()
        && value.type_name() == "string"
        && key.to_kstr().as_str() == "size"
    {
        let chars = scalar.to_kstr().chars().count();
        return Some(Step::Computed(Value::scalar(
            i64::try_from(chars).unwrap_or(i64::MAX),
        )));
    }
    None
}

/// Follows `path` from `value`, borrowing as long as it can.
fn walk_ref<'v>(value: &'v dyn ValueView, path: &[ScalarCow<'_>]) -> Option<ValueCow<'v>> {
    let mut current = value;
    for (i, key) in path.iter().enumerate() {
        match step(current, key)? {
            Step::Child(child) => current = child,
            Step::Computed(computed) => {
                return walk_ref(&computed, &path[i + 1..])
                    .map(|found| ValueCow::Owned(found.into_owned()));
            }
        }
    }
    Some(ValueCow::Borrowed(current))
}

/// Follows `path` from `root`.
pub(crate) fn walk<'v>(root: ValueCow<'v>, path: &[ScalarCow<'_>]) -> Option<ValueCow<'v>> {
    if path.is_empty() {
        return Some(root);
    }
    match root {
        ValueCow::Borrowed(value) => walk_ref(value, path),
        ValueCow::Owned(value) => {
            walk_ref(&value, path).map(|found| ValueCow::Owned(found.into_owned()))
        }
    }
}

/// The outermost runtime: liquid's own frames (globals set by `assign`/`capture`, counters of
/// `increment`, the registers) for storage, Cohort's walk for lookup.
pub(crate) struct Root<R> {
    pub(crate) inner: R,
}

impl<R: Runtime> Runtime for Root<R> {
    fn partials(&self) -> &dyn PartialStore {
        self.inner.partials()
    }
    fn name(&self) -> Option<KStringRef<'_>> {
        self.inner.name()
    }
    fn roots(&self) -> std::collections::BTreeSet<KStringCow<'_>> {
        self.inner.roots()
    }
    fn try_get(&self, path: &[ScalarCow<'_>]) -> Option<ValueCow<'_>> {
        let (first, rest) = path.split_first()?;
        let root = self.inner.try_get(std::slice::from_ref(first))?;
        walk(root, rest)
    }
    fn get(&self, path: &[ScalarCow<'_>]) -> Result<ValueCow<'_>> {
        Ok(self.try_get(path).unwrap_or(ValueCow::Owned(Value::Nil)))
    }
    fn set_global(&self, name: KString, val: Value) -> Option<Value> {
        self.inner.set_global(name, val)
    }
    fn set_index(&self, name: KString, val: Value) -> Option<Value> {
        self.inner.set_index(name, val)
    }
    fn get_index<'a>(&'a self, name: &str) -> Option<ValueCow<'a>> {
        self.inner.get_index(name)
    }
    fn registers(&self) -> &Registers {
        self.inner.registers()
    }
}

/// The scope of one iteration of `for`: the loop variable and `forloop`, then the enclosing scope.
pub(crate) struct LoopFrame<'p> {
    pub(crate) parent: &'p dyn Runtime,
    pub(crate) name: &'p str,
    pub(crate) item: &'p dyn ValueView,
    /// Zero-based position of this iteration.
    pub(crate) index: usize,
    pub(crate) length: usize,
}

impl LoopFrame<'_> {
    /// `forloop.<field>`, computed on demand rather than built as an object per iteration.
    fn forloop_field(&self, field: &str) -> Option<Value> {
        let index = i64::try_from(self.index).ok()?;
        let length = i64::try_from(self.length).ok()?;
        Some(match field {
            "index" => Value::scalar(index + 1),
            "index0" => Value::scalar(index),
            "rindex" => Value::scalar(length - index),
            "rindex0" => Value::scalar(length - index - 1),
            "first" => Value::scalar(index == 0),
            "last" => Value::scalar(index == length - 1),
            "length" => Value::scalar(length),
            _ => return None,
        })
    }

    fn forloop_object(&self) -> Value {
        let mut object = Object::new();
        for field in [
            "index", "index0", "rindex", "rindex0", "first", "last", "length",
        ] {
            if let Some(value) = self.forloop_field(field) {
                object.insert(field.into(), value);
            }
        }
        Value::Object(object)
    }
}

impl Runtime for LoopFrame<'_> {
    fn partials(&self) -> &dyn PartialStore {
        self.parent.partials()
    }
    fn name(&self) -> Option<KStringRef<'_>> {
        self.parent.name()
    }
    fn roots(&self) -> std::collections::BTreeSet<KStringCow<'_>> {
        let mut roots = self.parent.roots();
        roots.insert(KStringCow::from_ref(self.name));
        roots.insert(KStringCow::from_static("forloop"));
        roots
    }
    fn try_get(&self, path: &[ScalarCow<'_>]) -> Option<ValueCow<'_>> {
        let (first, rest) = path.split_first()?;
        let first = first.to_kstr();
        if first.as_str() == self.name {
            return walk(ValueCow::Borrowed(self.item), rest);
        }
        if first.as_str() == "forloop" {
            let Some((field, rest)) = rest.split_first() else {
                return Some(ValueCow::Owned(self.forloop_object()));
            };
            if field.to_kstr().as_str() == "parentloop" {
                // The enclosing loop's `forloop`, if there is one.
                let mut outer = Vec::with_capacity(rest.len() + 1);
                outer.push(ScalarCow::new("forloop"));
                outer.extend(rest.iter().cloned());
                return self
                    .parent
                    .try_get(&outer)
                    .map(|v| ValueCow::Owned(v.into_owned()));
            }
            let value = self.forloop_field(field.to_kstr().as_str())?;
            return walk(ValueCow::Owned(value), rest);
        }
        self.parent.try_get(path)
    }
    fn get(&self, path: &[ScalarCow<'_>]) -> Result<ValueCow<'_>> {
        Ok(self.try_get(path).unwrap_or(ValueCow::Owned(Value::Nil)))
    }
    fn set_global(&self, name: KString, val: Value) -> Option<Value> {
        self.parent.set_global(name, val)
    }
    fn set_index(&self, name: KString, val: Value) -> Option<Value> {
        self.parent.set_index(name, val)
    }
    fn get_index<'a>(&'a self, name: &str) -> Option<ValueCow<'a>> {
        self.parent.get_index(name)
    }
    fn registers(&self) -> &Registers {
        self.parent.registers()
    }
}
