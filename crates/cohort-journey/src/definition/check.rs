//! Checking a journey as a whole against what else exists, before it is saved or published.

use super::{
    CallWebhook, Condition, DateSource, DelayUntil, ExitCriterion, Goal, GoalOn, Invalid, Journey,
    PropertyFilter, Reentry, SendMessage, Step, TagAction, Trigger, WaitUntil, invalid,
};
use cohort_segment::{ConditionError, referenced_segments, tags::MAX_TAG_NAME};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The most steps one journey may have: far above what a marketer draws (Braze caps a Canvas
/// at 200), and it bounds the graph checks and what the engine keeps per version.
pub const MAX_STEPS: usize = 500;

/// The longest conversion window, in days: Customer.io's limit, and it bounds how long the
/// engine keeps an entry open to see a conversion.
pub const MAX_GOAL_WINDOW_DAYS: i64 = 90;

/// What a channel sends, and so which templates fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Email,
    Sms,
    Push,
    Webhook,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
            ChannelKind::Push => "push",
            ChannelKind::Webhook => "webhook",
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            ChannelKind::Email => "an email",
            ChannelKind::Sms => "an sms",
            ChannelKind::Push => "a push",
            ChannelKind::Webhook => "a webhook",
        }
    }
}

/// How a tag is decided: by its rule (the segment language), or set by hand and by journeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagKind {
    Rule,
    Manual,
}

/// Everything else that exists, by key, against which a journey is checked.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// Channels and what they send.
    pub channels: BTreeMap<String, ChannelKind>,
    /// Templates and the kind of channel they are written for.
    pub templates: BTreeMap<String, ChannelKind>,
    pub segments: BTreeSet<String>,
    pub tags: BTreeMap<String, TagKind>,
    /// Experiments and their variant keys.
    pub experiments: BTreeMap<String, BTreeSet<String>>,
    pub coupon_pools: BTreeSet<String>,
}

/// Whether `key` is a key: 1 to 100 letters, digits, '-', '_' or '.'.
pub(crate) fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 100
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_key(field: &str, what: &str, key: &str) -> Result<(), Invalid> {
    if is_key(key) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{key:?} is not {what}: use 1 to 100 letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn non_empty(field: &str, what: &str, text: &str) -> Result<(), Invalid> {
    if text.trim().is_empty() {
        Err(invalid(field, format!("{what} cannot be empty")))
    } else {
        Ok(())
    }
}

fn positive(field: &str, what: &str, d: super::Duration) -> Result<(), Invalid> {
    if d.is_positive() {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{what} must be longer than zero, not {d}"),
        ))
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// A condition error as a field under `field`.
fn condition_error(field: &str, e: ConditionError) -> Invalid {
    match e {
        ConditionError::Invalid { path, message } => invalid(join(field, &path), message),
        other => invalid(field, other.to_string()),
    }
}

/// One step's field: `steps[its-id].field`.
fn at(id: &str, field: &str) -> String {
    format!("steps[{id}].{field}")
}

impl Catalogue {
    /// Checks a journey as it would be saved: its own values, its references to what exists,
    /// and its step graph. The first problem found is returned, with its field.
    ///
    /// The graph must start at the first step, every target must be a step, every step must
    /// be reachable, and every loop must pause: pass a path that always waits for time or for
    /// a new event. Those are a delay `for` a positive duration or `until_time`, either path
    /// of a wait for an event, and the `no` (timed out) path of a wait for a condition. A
    /// delay until a date, or a wait's `yes` for a condition, may pass at once (the date is
    /// past, the condition already holds), so a loop through only those would spin.
    pub fn check(&self, journey: &Journey) -> Result<(), Invalid> {
        check_key("key", "a journey key", &journey.key)?;
        non_empty("name", "a journey's name", &journey.name)?;
        if !(journey.holdout.is_finite() && (0.0..1.0).contains(&journey.holdout)) {
            return Err(invalid(
                "holdout",
                format!(
                    "{} is not a share from 0 up to (not including) 1",
                    journey.holdout
                ),
            ));
        }
        match journey.reentry {
            Reentry::After { cooldown } => positive("reentry.cooldown", "a cool-down", cooldown)?,
            Reentry::Never if journey.multiple_entries => {
                return Err(invalid(
                    "multiple_entries",
                    "reentry policy \"never\" lets nobody in twice: choose \"after\" or \
                     \"always\" to allow more than one entry",
                ));
            }
            Reentry::Never | Reentry::Always => {}
        }
        self.check_trigger(&journey.trigger)?;
        self.check_steps(&journey.steps)?;
        check_graph(&journey.steps)?;
        if let Some(goal) = &journey.goal {
            self.check_goal(goal)?;
        }
        for (i, exit) in journey.exit.iter().enumerate() {
            self.check_exit(&format!("exit[{i}]"), exit, journey.goal.is_some())?;
        }
        Ok(())
    }

    fn segment(&self, field: &str, segment: &str) -> Result<(), Invalid> {
        if self.segments.contains(segment) {
            Ok(())
        } else {
            Err(invalid(field, format!("there is no segment {segment:?}")))
        }
    }

    fn known_tag(&self, field: &str, tag: &str) -> Result<(), Invalid> {
        if self.tags.contains_key(tag) {
            Ok(())
        } else {
            Err(invalid(field, format!("there is no tag {tag:?}")))
        }
    }

    /// An event name and its property filters, as the segment language checks an `event`
    /// node's: `event_field` names the event, filters sit under `prefix.where[i]`.
    fn event(
        &self,
        prefix: &str,
        event_field: &str,
        event: &str,
        filters: &[PropertyFilter],
    ) -> Result<(), Invalid> {
        non_empty(event_field, "an event name", event)?;
        Condition::Event {
            name: event.to_string(),
            filters: filters.to_vec(),
            count: Default::default(),
            window: None,
        }
        .validate()
        .map_err(|e| condition_error(prefix, e))
    }

    fn condition(&self, field: &str, condition: &Condition) -> Result<(), Invalid> {
        condition
            .validate()
            .map_err(|e| condition_error(field, e))?;
        for segment in referenced_segments(condition) {
            if !self.segments.contains(&segment) {
                return Err(invalid(
                    field,
                    format!("the condition names segment {segment:?}, which does not exist"),
                ));
            }
        }
        Ok(())
    }

    fn check_trigger(&self, trigger: &Trigger) -> Result<(), Invalid> {
        match trigger {
            Trigger::Event { event, filters } => {
                self.event("trigger", "trigger.event", event, filters)
            }
            Trigger::SegmentEntered { segment } | Trigger::SegmentExited { segment } => {
                self.segment("trigger.segment", segment)
            }
            Trigger::TagAdded { tag } | Trigger::TagRemoved { tag } => {
                self.known_tag("trigger.tag", tag)
            }
            Trigger::TraitChanged { key, to } => {
                non_empty("trigger.trait", "a trait name", key)?;
                if let Some(test) = to {
                    Condition::Trait {
                        key: key.clone(),
                        op: test.op,
                        value: test.value.clone(),
                    }
                    .validate()
                    .map_err(|e| condition_error("trigger.to", e))?;
                }
                Ok(())
            }
            Trigger::Schedule(schedule) => self.segment("trigger.segment", &schedule.segment),
            Trigger::Api { required } => {
                let mut seen = BTreeSet::new();
                for (i, name) in required.iter().enumerate() {
                    let field = format!("trigger.required[{i}]");
                    non_empty(&field, "a payload field name", name)?;
                    if !seen.insert(name) {
                        return Err(invalid(field, format!("{name:?} is listed twice")));
                    }
                }
                Ok(())
            }
        }
    }

    fn check_steps(&self, steps: &[Step]) -> Result<(), Invalid> {
        if steps.is_empty() {
            return Err(invalid("steps", "a journey needs at least one step"));
        }
        if steps.len() > MAX_STEPS {
            return Err(invalid(
                "steps",
                format!("{} steps; the limit is {MAX_STEPS}", steps.len()),
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, step) in steps.iter().enumerate() {
            let id = step.id();
            check_key(&format!("steps[{i}].id"), "a step id", id)?;
            if !ids.insert(id) {
                return Err(invalid(
                    at(id, "id"),
                    format!("two steps are called {id:?}"),
                ));
            }
        }
        for step in steps {
            self.check_step(step)?;
        }
        Ok(())
    }

    fn check_step(&self, step: &Step) -> Result<(), Invalid> {
        let id = step.id();
        match step {
            Step::Delay(delay) => match &delay.until {
                DelayUntil::For(d) => positive(&at(id, "for"), "a delay", *d),
                DelayUntil::Date { date, .. } => match date {
                    DateSource::Trait(name) => {
                        non_empty(&at(id, "until_date.trait"), "a trait name", name)
                    }
                    DateSource::EventProperty(name) => non_empty(
                        &at(id, "until_date.event_property"),
                        "a property name",
                        name,
                    ),
                },
                DelayUntil::At(_) | DelayUntil::TimeOfDay { .. } => Ok(()),
            },
            Step::Wait(wait) => {
                match &wait.until {
                    WaitUntil::Event { event, filters } => {
                        self.event(&format!("steps[{id}]"), &at(id, "event"), event, filters)?
                    }
                    WaitUntil::Condition(c) => self.condition(&at(id, "condition"), c)?,
                }
                positive(&at(id, "timeout"), "a timeout", wait.timeout)
            }
            Step::Branch(branch) => self.condition(&at(id, "condition"), &branch.condition),
            Step::RandomSplit(split) => {
                if split.paths.len() < 2 {
                    return Err(invalid(
                        at(id, "paths"),
                        "a random split needs at least two paths",
                    ));
                }
                let mut names = BTreeSet::new();
                let mut sum = 0.0;
                for (i, path) in split.paths.iter().enumerate() {
                    let field = at(id, &format!("paths[{i}]"));
                    check_key(&join(&field, "name"), "a path name", &path.name)?;
                    if !names.insert(path.name.as_str()) {
                        return Err(invalid(
                            join(&field, "name"),
                            format!("two paths are called {:?}", path.name),
                        ));
                    }
                    if !(path.weight.is_finite() && (0.0..=1.0).contains(&path.weight)) {
                        return Err(invalid(
                            join(&field, "weight"),
                            format!("{} is not a weight from 0 to 1", path.weight),
                        ));
                    }
                    sum += path.weight;
                }
                // Weights such as 0.1 + 0.2 + 0.7 add up to 1 only within rounding.
                if (sum - 1.0).abs() > 1e-9 {
                    return Err(invalid(
                        at(id, "paths"),
                        format!("the weights sum to {sum}, not 1"),
                    ));
                }
                Ok(())
            }
            Step::ExperimentSplit(split) => {
                let Some(variants) = self.experiments.get(&split.experiment) else {
                    return Err(invalid(
                        at(id, "experiment"),
                        format!("there is no experiment {:?}", split.experiment),
                    ));
                };
                if let Some(unknown) = split.paths.keys().find(|k| !variants.contains(*k)) {
                    return Err(invalid(
                        at(id, &format!("paths.{unknown}")),
                        format!(
                            "experiment {:?} has no variant {unknown:?}",
                            split.experiment
                        ),
                    ));
                }
                if let Some(missing) = variants.iter().find(|v| !split.paths.contains_key(*v)) {
                    return Err(invalid(
                        at(id, "paths"),
                        format!(
                            "variant {missing:?} of experiment {:?} has no path: every \
                             variant needs one (with null to end the entry there)",
                            split.experiment
                        ),
                    ));
                }
                Ok(())
            }
            Step::Send(SendMessage {
                channel, template, ..
            }) => {
                let kind = self.channel(id, channel)?;
                if kind == ChannelKind::Webhook {
                    return Err(invalid(
                        at(id, "channel"),
                        format!("channel {channel:?} is a webhook: call it with a webhook step"),
                    ));
                }
                self.template(id, channel, kind, template)
            }
            Step::IssueCoupon(coupon) => {
                if self.coupon_pools.contains(&coupon.pool) {
                    Ok(())
                } else {
                    Err(invalid(
                        at(id, "pool"),
                        format!("there is no coupon pool {:?}", coupon.pool),
                    ))
                }
            }
            Step::SetTrait(set) => non_empty(&at(id, "trait"), "a trait name", &set.key),
            Step::Tag(tag) => {
                let field = at(id, "tag");
                check_tag_name(&field, &tag.tag)?;
                if self.tags.get(&tag.tag) == Some(&TagKind::Rule) {
                    let verb = match tag.action {
                        TagAction::Add => "given",
                        TagAction::Remove => "taken away",
                    };
                    return Err(invalid(
                        field,
                        format!(
                            "tag {:?} is decided by its rule and cannot be {verb} by a journey",
                            tag.tag
                        ),
                    ));
                }
                Ok(())
            }
            Step::Webhook(CallWebhook {
                channel, template, ..
            }) => {
                let kind = self.channel(id, channel)?;
                if kind != ChannelKind::Webhook {
                    return Err(invalid(
                        at(id, "channel"),
                        format!(
                            "channel {channel:?} sends {}: a webhook step calls a webhook channel",
                            kind.as_str()
                        ),
                    ));
                }
                match template {
                    Some(template) => self.template(id, channel, kind, template),
                    None => Ok(()),
                }
            }
            Step::Exit(_) => Ok(()),
        }
    }

    fn channel(&self, id: &str, channel: &str) -> Result<ChannelKind, Invalid> {
        self.channels.get(channel).copied().ok_or_else(|| {
            invalid(
                at(id, "channel"),
                format!("there is no channel {channel:?}"),
            )
        })
    }

    fn template(
        &self,
        id: &str,
        channel: &str,
        kind: ChannelKind,
        template: &str,
    ) -> Result<(), Invalid> {
        let field = at(id, "template");
        match self.templates.get(template) {
            None => Err(invalid(field, format!("there is no template {template:?}"))),
            Some(t) if *t != kind => Err(invalid(
                field,
                format!(
                    "{template:?} is {} template; channel {channel:?} sends {}",
                    t.with_article(),
                    kind.as_str()
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn check_goal(&self, goal: &Goal) -> Result<(), Invalid> {
        match &goal.on {
            GoalOn::Event {
                event,
                filters,
                revenue,
            } => {
                self.event("goal", "goal.event", event, filters)?;
                if let Some(revenue) = revenue {
                    non_empty("goal.revenue", "a property name", revenue)?;
                }
            }
            GoalOn::SegmentEntered(segment) | GoalOn::SegmentExited(segment) => {
                self.segment("goal.segment", segment)?;
            }
        }
        let window = goal.window;
        positive("goal.window", "a conversion window", window)?;
        if window.seconds() > MAX_GOAL_WINDOW_DAYS * 86_400 {
            return Err(invalid(
                "goal.window",
                format!("{window} is longer than {MAX_GOAL_WINDOW_DAYS} days"),
            ));
        }
        Ok(())
    }

    fn check_exit(&self, field: &str, exit: &ExitCriterion, has_goal: bool) -> Result<(), Invalid> {
        match exit {
            ExitCriterion::Event { event, filters } => {
                self.event(field, &join(field, "event"), event, filters)
            }
            ExitCriterion::SegmentEntered { segment }
            | ExitCriterion::SegmentExited { segment } => {
                self.segment(&join(field, "segment"), segment)
            }
            ExitCriterion::TagAdded { tag } | ExitCriterion::TagRemoved { tag } => {
                self.known_tag(&join(field, "tag"), tag)
            }
            ExitCriterion::Condition { condition } => {
                self.condition(&join(field, "condition"), condition)
            }
            ExitCriterion::Goal if !has_goal => Err(invalid(
                field,
                "the journey has no goal to meet: add one, or remove this exit",
            )),
            ExitCriterion::Goal => Ok(()),
        }
    }
}

/// A tag's name is `group:value`, lower-case letters, digits and `_` on both sides, as the
/// segment crate's tag definitions are named.
fn check_tag_name(field: &str, tag: &str) -> Result<(), Invalid> {
    let part_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    match tag.split_once(':') {
        Some((group, value)) if part_ok(group) && part_ok(value) && tag.len() <= MAX_TAG_NAME => {
            Ok(())
        }
        _ => Err(invalid(
            field,
            format!(
                "{tag:?} is not a tag name: write group:value in a-z, 0-9 and _, at most \
                 {MAX_TAG_NAME} characters"
            ),
        )),
    }
}

/// One way out of a step, by index.
struct Edge {
    target: usize,
    field: String,
    pauses: bool,
}

/// The step graph: targets exist, everything is reachable from the first step, and no loop
/// runs without pausing. Step ids are known to be unique and well formed.
fn check_graph(steps: &[Step]) -> Result<(), Invalid> {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id(), i)).collect();
    let mut edges: Vec<Vec<Edge>> = Vec::with_capacity(steps.len());
    for step in steps {
        let mut out = Vec::new();
        for path in step.paths() {
            let Some(target) = path.target else { continue };
            let Some(&t) = index.get(target) else {
                return Err(invalid(
                    at(step.id(), &path.field),
                    format!("there is no step {target:?}"),
                ));
            };
            out.push(Edge {
                target: t,
                field: path.field,
                pauses: path.pauses,
            });
        }
        edges.push(out);
    }

    let mut reached = vec![false; steps.len()];
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut reached[i], true) {
            continue;
        }
        stack.extend(edges[i].iter().map(|e| e.target));
    }
    if let Some(i) = reached.iter().position(|r| !r) {
        return Err(invalid(
            format!("steps[{}]", steps[i].id()),
            format!(
                "no path leads to this step, so it never runs (every entry starts at the \
                 first step, {:?})",
                steps[0].id()
            ),
        ));
    }

    // A loop made only of paths that do not pause would run without end in one go. Depth
    // first over those paths, with the current path on a stack: reaching a step that is on
    // the stack closes a loop.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; steps.len()];
    for start in 0..steps.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // (step, next edge to look at)
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnPath;
        while let Some(top) = path.last_mut() {
            let step = top.0;
            let found = edges[step]
                .iter()
                .enumerate()
                .skip(top.1)
                .find(|(_, e)| !e.pauses);
            let Some((k, edge)) = found else {
                mark[step] = Mark::Done;
                path.pop();
                continue;
            };
            // Resume after this edge when the search comes back to this step.
            top.1 = k + 1;
            match mark[edge.target] {
                Mark::Done => {}
                Mark::New => {
                    mark[edge.target] = Mark::OnPath;
                    path.push((edge.target, 0));
                }
                Mark::OnPath => {
                    let from = path
                        .iter()
                        .position(|(s, _)| *s == edge.target)
                        .unwrap_or(0);
                    let mut names: Vec<&str> =
                        path[from..].iter().map(|(s, _)| steps[*s].id()).collect();
                    names.push(steps[edge.target].id());
                    return Err(invalid(
                        at(steps[step].id(), &edge.field),
                        format!(
                            "this closes a loop that never pauses, so it would run without \
                             end: {}; put a delay for a duration or until a time of day, or a \
                             wait for an event, on it",
                            names.join(" → ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
