//! A journey version made ready to run (its steps by id, which steps are on a loop, its event
//! matchers built once), and the index from what arrives to the versions it can concern.

use super::{CustomerFacts, Membership, MembershipChange, Published, Run, TraitChange};
use crate::definition::{
    Condition, ExitCriterion, Goal, GoalOn, Journey, PropertyFilter, Reentry, Step, Trigger,
    WaitUntil,
};
use crate::state::{CustomerId, Entry};
use chrono::{DateTime, TimeDelta, Utc};
use cohort_profile::ComputedTraits;
use cohort_segment::{CustomerView, EventRecord, dependencies, evaluate, trait_number};
use serde_json::Map;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

#[derive(Debug)]
pub(super) struct Compiled {
    pub journey: Journey,
    pub version: u32,
    pub run: Run,
    /// Step ids to their index in `journey.steps`.
    pub positions: HashMap<String, usize>,
    /// Whether each step can be reached again from itself.
    pub on_loop: Vec<bool>,
    /// For each send step, the pools of the coupon steps that can come before it.
    pub coupon_pools: Vec<Vec<String>>,
    /// The trigger's event and filters as one `event` condition, when it is an event trigger.
    trigger_event: Option<Condition>,
    /// The exit criteria that are events, by their index in `journey.exit`.
    exit_events: Vec<(usize, Condition)>,
    /// Waits for events, by step index.
    wait_events: HashMap<usize, Condition>,
}

/// An `event` condition matching one event of `name` with every filter.
fn event_condition(name: &str, filters: &[PropertyFilter]) -> Condition {
    Condition::Event {
        name: name.to_string(),
        filters: filters.to_vec(),
        count: Default::default(),
        window: None,
    }
}

/// Whether the one event satisfies an `event` condition (its name and property filters).
fn event_matches(condition: &Condition, record: &EventRecord, now: DateTime<Utc>) -> bool {
    let traits = Map::new();
    let computed = ComputedTraits::default();
    let view = CustomerView::new(&traits, &computed, std::slice::from_ref(record));
    evaluate(condition, &view, now, &|_| false)
}

/// Whether the customer meets the condition now.
pub(super) fn holds(condition: &Condition, facts: &dyn CustomerFacts, now: DateTime<Utc>) -> bool {
    let view = CustomerView::new(facts.traits(), facts.computed(), facts.events());
    evaluate(condition, &view, now, &|segment| facts.in_segment(segment))
}

/// A number in `[0, 1)` decided by `parts` alone, the same on every run and every machine.
pub(super) fn unit_hash(parts: &[&str]) -> f64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        // A separator no key contains, so ("ab", "c") and ("a", "bc") differ.
        hasher.update([0x1f]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits, as many as an f64 holds exactly.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether an event meets an event goal within its filters, and its revenue: `Some(revenue)`
/// when it counts (the revenue itself may be absent).
pub(super) fn goal_event_value(
    goal: &Goal,
    record: &EventRecord,
    now: DateTime<Utc>,
) -> Option<Option<f64>> {
    let GoalOn::Event {
        event,
        filters,
        revenue,
    } = &goal.on
    else {
        return None;
    };
    if !event_matches(&event_condition(event, filters), record, now) {
        return None;
    }
    let property = revenue.as_deref().unwrap_or("revenue");
    Some(record.properties.get(property).and_then(trait_number))
}

impl Compiled {
    pub fn new(published: Published) -> Compiled {
        let Published {
            journey,
            version,
            run,
        } = published;
        let positions: HashMap<String, usize> = journey
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id().to_string(), i))
            .collect();
        let successors: Vec<Vec<usize>> = journey
            .steps
            .iter()
            .map(|s| {
                s.paths()
                    .iter()
                    .filter_map(|p| p.target.and_then(|t| positions.get(t).copied()))
                    .collect()
            })
            .collect();
        // reach[i][j]: j can be reached from i in one step or more. Journeys have at most
        // MAX_STEPS steps, so this is at most a quarter of a million booleans, once.
        let n = journey.steps.len();
        let reach: Vec<Vec<bool>> = (0..n)
            .map(|from| {
                let mut seen = vec![false; n];
                let mut stack: Vec<usize> = successors[from].clone();
                while let Some(i) = stack.pop() {
                    if !std::mem::replace(&mut seen[i], true) {
                        stack.extend(&successors[i]);
                    }
                }
                seen
            })
            .collect();
        let on_loop = (0..n).map(|i| reach[i][i]).collect();
        let coupon_pools = (0..n)
            .map(|send| {
                if !matches!(journey.steps[send], Step::Send(_)) {
                    return Vec::new();
                }
                let mut pools: Vec<String> = journey
                    .steps
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| match s {
                        Step::IssueCoupon(c) if reach[i][send] => Some(c.pool.clone()),
                        _ => None,
                    })
                    .collect();
                pools.sort();
                pools.dedup();
                pools
            })
            .collect();
        let trigger_event = match &journey.trigger {
            Trigger::Event { event, filters } => Some(event_condition(event, filters)),
            _ => None,
        };
        let exit_events = journey
            .exit
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                ExitCriterion::Event { event, filters } => {
                    Some((i, event_condition(event, filters)))
                }
                _ => None,
            })
            .collect();
        let wait_events = journey
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Step::Wait(w) => match &w.until {
                    WaitUntil::Event { event, filters } => {
                        Some((i, event_condition(event, filters)))
                    }
                    WaitUntil::Condition(_) => None,
                },
                _ => None,
            })
            .collect();
        Compiled {
            journey,
            version,
            run,
            positions,
            on_loop,
            coupon_pools,
            trigger_event,
            exit_events,
            wait_events,
        }
    }

    pub fn trigger_matches_event(&self, record: &EventRecord, now: DateTime<Utc>) -> bool {
        self.trigger_event
            .as_ref()
            .is_some_and(|c| event_matches(c, record, now))
    }

    /// Whether a trait change fires a `trait_changed` trigger: the trait is the trigger's, and
    /// its new value passes the trigger's test when there is one.
    pub fn trait_trigger_passes(&self, change: &TraitChange, now: DateTime<Utc>) -> bool {
        let Trigger::TraitChanged { key, to } = &self.journey.trigger else {
            return false;
        };
        if *key != change.key {
            return false;
        }
        let Some(test) = to else {
            return true;
        };
        let mut traits = Map::new();
        if let Some(new) = &change.new {
            traits.insert(key.clone(), new.clone());
        }
        let computed = ComputedTraits::default();
        let view = CustomerView::new(&traits, &computed, &[]);
        let condition = Condition::Trait {
            key: key.clone(),
            op: test.op,
            value: test.value.clone(),
        };
        evaluate(&condition, &view, now, &|_| false)
    }

    /// Whether the re-entry policy lets the customer in, given their latest entry.
    pub fn reentry_allows(&self, latest: Option<&Entry>, now: DateTime<Utc>) -> bool {
        let Some(latest) = latest else {
            return true;
        };
        match self.journey.reentry {
            Reentry::Never => false,
            Reentry::After { cooldown } => latest
                .entered_at
                .checked_add_signed(cooldown.as_time_delta())
                .is_some_and(|open| open <= now),
            Reentry::Always => true,
        }
    }

    /// Whether the customer is in the journey's holdout: decided by the journey's key (not
    /// the version) and the customer, so a customer stays on one side across versions and
    /// entries.
    pub fn holds_out(&self, customer: CustomerId) -> bool {
        self.journey.holdout > 0.0
            && unit_hash(&["holdout", &self.journey.key, &customer.to_string()])
                < self.journey.holdout
    }

    /// The reason of the first exit criterion an event meets (an event, or a condition now
    /// true).
    pub fn exit_on_event(
        &self,
        record: &EventRecord,
        facts: &dyn CustomerFacts,
        now: DateTime<Utc>,
    ) -> Option<String> {
        self.journey
            .exit
            .iter()
            .enumerate()
            .find(|(i, criterion)| match criterion {
                ExitCriterion::Event { .. } => self
                    .exit_events
                    .iter()
                    .any(|(j, c)| j == i && event_matches(c, record, now)),
                ExitCriterion::Condition { condition } => holds(condition, facts, now),
                _ => false,
            })
            .map(|(i, _)| exit_reason(i))
    }

    /// The reason of the first exit criterion a membership change meets.
    pub fn exit_on_membership(
        &self,
        change: &MembershipChange,
        facts: &dyn CustomerFacts,
        now: DateTime<Utc>,
    ) -> Option<String> {
        self.journey
            .exit
            .iter()
            .position(|criterion| match (criterion, &change.of) {
                (ExitCriterion::SegmentEntered { segment }, Membership::Segment(s))
                | (ExitCriterion::TagAdded { tag: segment }, Membership::Tag(s)) => {
                    change.entered && segment == s
                }
                (ExitCriterion::SegmentExited { segment }, Membership::Segment(s))
                | (ExitCriterion::TagRemoved { tag: segment }, Membership::Tag(s)) => {
                    !change.entered && segment == s
                }
                (ExitCriterion::Condition { condition }, _) => holds(condition, facts, now),
                _ => false,
            })
            .map(exit_reason)
    }

    /// The reason of the first condition exit criterion the customer now meets.
    pub fn exit_on_condition(
        &self,
        facts: &dyn CustomerFacts,
        now: DateTime<Utc>,
    ) -> Option<String> {
        self.journey
            .exit
            .iter()
            .position(|criterion| match criterion {
                ExitCriterion::Condition { condition } => holds(condition, facts, now),
                _ => false,
            })
            .map(exit_reason)
    }

    /// The reason of the exit criterion "the goal is met", if the journey has one.
    pub fn exit_on_goal(&self) -> Option<String> {
        self.journey
            .exit
            .iter()
            .position(|criterion| matches!(criterion, ExitCriterion::Goal))
            .map(exit_reason)
    }

    /// The wait step an entry is waiting at, by index.
    fn waiting_at(&self, entry: &Entry) -> Option<(usize, &crate::definition::Wait)> {
        let i = *self.positions.get(&entry.step)?;
        match &self.journey.steps[i] {
            Step::Wait(w) if entry.due_at.is_some() => Some((i, w)),
            _ => None,
        }
    }

    /// Whether the entry waits for this event (performed after the wait began, so that an
    /// event delivered twice cannot pass two waits), or for a condition the customer now
    /// meets.
    pub fn wait_met_by_event(
        &self,
        entry: &Entry,
        record: &EventRecord,
        facts: &dyn CustomerFacts,
        now: DateTime<Utc>,
    ) -> bool {
        let Some((i, wait)) = self.waiting_at(entry) else {
            return false;
        };
        match &wait.until {
            WaitUntil::Event { .. } => {
                let began = entry
                    .due_at
                    .and_then(|due| due.checked_sub_signed(wait.timeout.as_time_delta()));
                began.is_some_and(|began| record.timestamp > began)
                    && self
                        .wait_events
                        .get(&i)
                        .is_some_and(|c| event_matches(c, record, now))
            }
            WaitUntil::Condition(condition) => holds(condition, facts, now),
        }
    }

    /// Whether the entry waits for a condition the customer now meets.
    pub fn condition_wait_met(
        &self,
        entry: &Entry,
        facts: &dyn CustomerFacts,
        now: DateTime<Utc>,
    ) -> bool {
        match self.waiting_at(entry) {
            Some((_, wait)) => match &wait.until {
                WaitUntil::Condition(condition) => holds(condition, facts, now),
                WaitUntil::Event { .. } => false,
            },
            None => false,
        }
    }
}

fn exit_reason(index: usize) -> String {
    format!("exit[{index}]")
}

/// From what arrives to the versions it can concern.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Entering versions by their trigger's event name.
    pub event_triggers: HashMap<String, Vec<usize>>,
    /// Entering versions by the membership change that triggers them.
    pub membership_triggers: HashMap<(Membership, bool), Vec<usize>>,
    /// Entering versions by the trait whose change triggers them.
    pub trait_triggers: HashMap<String, Vec<usize>>,
    /// Event names that exits, waits and their conditions name.
    entry_events: HashSet<String>,
    /// Some exit or wait condition reads what every event moves (computed traits).
    any_event_moves_entries: bool,
    /// Segments and tags that exits and conditions name.
    entry_memberships: HashSet<Membership>,
    /// Some exit or wait condition reads traits.
    pub traits_move_entries: bool,
    pub goal_events: HashSet<String>,
    pub goal_segments: HashSet<String>,
    pub longest_goal_window: TimeDelta,
}

impl Index {
    pub fn new(versions: &[Compiled], entering: &HashMap<String, usize>) -> Index {
        let mut index = Index::default();
        for &i in entering.values() {
            let list = match &versions[i].journey.trigger {
                Trigger::Event { event, .. } => index.event_triggers.entry(event.clone()),
                Trigger::SegmentEntered { segment } => {
                    index.add_membership_trigger(Membership::Segment(segment.clone()), true, i);
                    continue;
                }
                Trigger::SegmentExited { segment } => {
                    index.add_membership_trigger(Membership::Segment(segment.clone()), false, i);
                    continue;
                }
                Trigger::TagAdded { tag } => {
                    index.add_membership_trigger(Membership::Tag(tag.clone()), true, i);
                    continue;
                }
                Trigger::TagRemoved { tag } => {
                    index.add_membership_trigger(Membership::Tag(tag.clone()), false, i);
                    continue;
                }
                Trigger::TraitChanged { key, .. } => index.trait_triggers.entry(key.clone()),
                Trigger::Schedule(_) | Trigger::Api { .. } => continue,
            };
            list.or_default().push(i);
        }
        for version in versions.iter().filter(|v| v.run != Run::Paused) {
            let journey = &version.journey;
            for criterion in &journey.exit {
                match criterion {
                    ExitCriterion::Event { event, .. } => {
                        index.entry_events.insert(event.clone());
                    }
                    ExitCriterion::SegmentEntered { segment }
                    | ExitCriterion::SegmentExited { segment } => {
                        index
                            .entry_memberships
                            .insert(Membership::Segment(segment.clone()));
                    }
                    ExitCriterion::TagAdded { tag } | ExitCriterion::TagRemoved { tag } => {
                        index.entry_memberships.insert(Membership::Tag(tag.clone()));
                    }
                    ExitCriterion::Condition { condition } => index.add_condition(condition),
                    ExitCriterion::Goal => {}
                }
            }
            for step in &journey.steps {
                if let Step::Wait(wait) = step {
                    match &wait.until {
                        WaitUntil::Event { event, .. } => {
                            index.entry_events.insert(event.clone());
                        }
                        WaitUntil::Condition(condition) => index.add_condition(condition),
                    }
                }
            }
        }
        // Goals count for ended entries too, and are judged by the entering version when an
        // entry's own is gone: every version's goal is indexed, paused ones included.
        for version in versions {
            let Some(goal) = &version.journey.goal else {
                continue;
            };
            match &goal.on {
                GoalOn::Event { event, .. } => {
                    index.goal_events.insert(event.clone());
                }
                GoalOn::SegmentEntered(segment) | GoalOn::SegmentExited(segment) => {
                    index.goal_segments.insert(segment.clone());
                }
            }
            index.longest_goal_window = index.longest_goal_window.max(goal.window.as_time_delta());
        }
        index
    }

    fn add_membership_trigger(&mut self, of: Membership, entered: bool, version: usize) {
        self.membership_triggers
            .entry((of, entered))
            .or_default()
            .push(version);
    }

    fn add_condition(&mut self, condition: &Condition) {
        let deps = dependencies(condition);
        self.entry_events.extend(deps.events);
        self.any_event_moves_entries |= deps.any_event || deps.orders;
        self.traits_move_entries |= deps.traits;
        for segment in deps.segments {
            // `in_segment` answers tags too.
            self.entry_memberships
                .insert(Membership::Segment(segment.clone()));
            self.entry_memberships.insert(Membership::Tag(segment));
        }
    }

    pub fn event_moves_entries(&self, name: &str) -> bool {
        self.any_event_moves_entries || self.entry_events.contains(name)
    }

    pub fn membership_moves_entries(&self, of: &Membership) -> bool {
        self.entry_memberships.contains(of)
    }
}
