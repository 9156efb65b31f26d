//! Running an entry from where it is: leaving its step, passing through the steps that only
//! decide, and stopping at the next step that acts, waits or ends it.

use super::compiled::{Compiled, holds, unit_hash};
use super::{COMPLETED, COUPONS, CustomerFacts, PROFILE, Report, RunError, Runner, time};
use crate::definition::{QuietHours, RandomSplit, Step, TagAction, WaitUntil};
use crate::state::{Effect, Entry, JourneyStateStore, Message, Move};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The step a new entry is stored at before its first move: not a step id (ids are keys,
/// without parentheses), so a crash right after entering leaves an entry that starts over.
pub(super) const START: &str = "(start)";

/// Why an entry is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// Its time came: a delay ended, a wait timed out, or it was left at a step that acts.
    Due,
    /// What its wait waited for happened.
    WaitMet,
}

/// Where passing through deciding steps ends.
enum Resolved {
    /// A step that waits, until `due`.
    Wait { step: usize, due: DateTime<Utc> },
    /// A step that acts.
    Act(usize),
    /// The end of the entry, with its reason.
    End(String),
}

/// What leaving a step does: where it goes, the effects it records, the message it sent.
struct Leave<'a> {
    target: Option<&'a str>,
    effects: Vec<Effect>,
    message: Option<Message>,
}

impl Runner {
    /// Runs the entry from its step until it waits or ends: one move per step that acts, each
    /// a compare-and-set from that step, so a step committed before a crash is not run again.
    pub(super) fn proceed<S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        facts: &dyn CustomerFacts,
        version: &Compiled,
        mut entry: Entry,
        mut cause: Cause,
        now: DateTime<Utc>,
    ) -> Result<Report, RunError> {
        let mut report = Report::default();
        let steps = &version.journey.steps;
        // Checked journeys cannot act without end (a loop must pause); the bound keeps a run
        // finite regardless, leaving the entry due at its step for the next timer pass.
        for _ in 0..=steps.len() {
            let (leave, resolved) = match version.positions.get(&entry.step) {
                Some(&at) => {
                    // A condition can come true with no message saying so (a window passing,
                    // a change the loop was not told of): a timed-out wait looks once more.
                    if cause == Cause::Due && version.condition_wait_met(&entry, facts, now) {
                        cause = Cause::WaitMet;
                    }
                    let leave = self.leave(version, &entry, at, cause, now);
                    let resolved = resolve(version, facts, &entry, leave.target, now);
                    (leave, resolved)
                }
                None => {
                    let resolved = if entry.step == START {
                        resolve(version, facts, &entry, steps.first().map(Step::id), now)
                    } else {
                        Resolved::End(format!("steps[{}]: no such step", entry.step))
                    };
                    let leave = Leave {
                        target: None,
                        effects: Vec::new(),
                        message: None,
                    };
                    (leave, resolved)
                }
            };
            let to = match &resolved {
                Resolved::Wait { step, due } => Move::to_at(steps[*step].id(), *due),
                Resolved::Act(step) => Move::to_at(steps[*step].id(), now),
                Resolved::End(reason) => Move::exit(reason),
            };
            if !store.advance_with_message(
                entry.id,
                &entry.step,
                &to,
                &leave.effects,
                leave.message.as_ref(),
            )? {
                return Ok(report);
            }
            report.moves += 1;
            report.effects += leave.effects.len();
            entry.moves = entry.moves.saturating_add(1);
            if let Some(message) = leave.message {
                entry.last_message = Some(message);
            }
            match resolved {
                Resolved::Act(step) => {
                    entry.step = steps[step].id().to_string();
                    cause = Cause::Due;
                }
                Resolved::Wait { .. } => return Ok(report),
                Resolved::End(_) => {
                    report.exited += 1;
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }

    /// Leaving the step the entry is at.
    fn leave<'v>(
        &self,
        version: &'v Compiled,
        entry: &Entry,
        at: usize,
        cause: Cause,
        now: DateTime<Utc>,
    ) -> Leave<'v> {
        let step = &version.journey.steps[at];
        let plain = |target: &'v Option<String>| Leave {
            target: target.as_deref(),
            effects: Vec::new(),
            message: None,
        };
        let effect = |channel: &str, mut payload: Value| {
            let key = super::step_effect_key(version, entry, at, entry.moves);
            if let Value::Object(fields) = &mut payload {
                fields.insert("journey".into(), json!(version.journey.key));
                fields.insert("version".into(), json!(version.version));
                fields.insert("entry".into(), json!(entry.id.0));
                fields.insert("step".into(), json!(step.id()));
                fields.insert("customer".into(), json!(entry.customer));
                fields.insert("trigger".into(), entry.payload.clone());
            }
            Effect {
                key,
                channel: channel.to_string(),
                payload,
            }
        };
        match step {
            Step::Delay(delay) => plain(&delay.next),
            Step::Wait(wait) => match cause {
                Cause::Due => plain(&wait.no),
                Cause::WaitMet => plain(&wait.yes),
            },
            Step::Send(send) => {
                let quiet_hours = match send.quiet_hours {
                    QuietHours::Hold => "hold",
                    QuietHours::Skip => "skip",
                };
                let sent = effect(
                    &send.channel,
                    json!({
                        "kind": "send",
                        "channel": send.channel,
                        "template": send.template,
                        "transactional": send.transactional,
                        "quiet_hours": quiet_hours,
                        "coupon_pools": version.coupon_pools[at],
                    }),
                );
                let message = Message {
                    key: sent.key.clone(),
                    at: now,
                };
                Leave {
                    target: send.next.as_deref(),
                    effects: vec![sent],
                    message: Some(message),
                }
            }
            Step::IssueCoupon(coupon) => Leave {
                target: coupon.next.as_deref(),
                effects: vec![effect(
                    COUPONS,
                    json!({
                        "kind": "issue_coupon",
                        "pool": coupon.pool,
                        "campaign": version.journey.key,
                    }),
                )],
                message: None,
            },
            Step::SetTrait(set) => Leave {
                target: set.next.as_deref(),
                effects: vec![effect(
                    PROFILE,
                    json!({"kind": "set_trait", "trait": set.key, "value": set.value}),
                )],
                message: None,
            },
            Step::Tag(tag) => {
                let action = match tag.action {
                    TagAction::Add => "add",
                    TagAction::Remove => "remove",
                };
                Leave {
                    target: tag.next.as_deref(),
                    effects: vec![effect(
                        PROFILE,
                        json!({"kind": "tag", "tag": tag.tag, "action": action}),
                    )],
                    message: None,
                }
            }
            Step::Webhook(hook) => Leave {
                target: hook.next.as_deref(),
                effects: vec![effect(
                    &hook.channel,
                    json!({
                        "kind": "webhook",
                        "channel": hook.channel,
                        "template": hook.template,
                    }),
                )],
                message: None,
            },
            // Steps that only decide are never stored; should one be (a definition changed
            // under a running version), deciding it again from itself is what it means.
            Step::Branch(_) | Step::RandomSplit(_) | Step::ExperimentSplit(_) | Step::Exit(_) => {
                Leave {
                    target: Some(step.id()),
                    effects: Vec::new(),
                    message: None,
                }
            }
        }
    }
}

/// Passes from `target` through the steps that only decide, to the first that acts, waits
/// or ends the entry.
fn resolve<'v>(
    version: &'v Compiled,
    facts: &dyn CustomerFacts,
    entry: &Entry,
    mut target: Option<&'v str>,
    now: DateTime<Utc>,
) -> Resolved {
    let steps = &version.journey.steps;
    for _ in 0..=steps.len() {
        let Some(id) = target else {
            return Resolved::End(COMPLETED.to_string());
        };
        let Some(&i) = version.positions.get(id) else {
            return Resolved::End(format!("steps[{id}]: no such step"));
        };
        match &steps[i] {
            Step::Delay(delay) => match time::delay_end(&delay.until, entry, facts, now) {
                Ok(end) if end > now => return Resolved::Wait { step: i, due: end },
                Ok(_) => target = delay.next.as_deref(),
                Err(why) => return Resolved::End(format!("steps[{id}]: {why}")),
            },
            Step::Wait(wait) => {
                let met = match &wait.until {
                    WaitUntil::Condition(condition) => holds(condition, facts, now),
                    WaitUntil::Event { .. } => false,
                };
                if met {
                    target = wait.yes.as_deref();
                } else {
                    let due = now
                        .checked_add_signed(wait.timeout.as_time_delta())
                        .unwrap_or(DateTime::<Utc>::MAX_UTC);
                    return Resolved::Wait { step: i, due };
                }
            }
            Step::Branch(branch) => {
                target = if holds(&branch.condition, facts, now) {
                    branch.yes.as_deref()
                } else {
                    branch.no.as_deref()
                };
            }
            Step::RandomSplit(split) => target = pick(split, version, entry),
            Step::ExperimentSplit(split) => {
                let Some(variation) = facts.experiment_variation(&split.experiment) else {
                    return Resolved::End(format!(
                        "steps[{id}]: not in experiment {:?}",
                        split.experiment
                    ));
                };
                match split.paths.get(&variation) {
                    Some(next) => target = next.as_deref(),
                    None => {
                        return Resolved::End(format!(
                            "steps[{id}]: variation {variation:?} has no path"
                        ));
                    }
                }
            }
            Step::Exit(_) => return Resolved::End(format!("steps[{id}]")),
            Step::Send(_)
            | Step::IssueCoupon(_)
            | Step::SetTrait(_)
            | Step::Tag(_)
            | Step::Webhook(_) => return Resolved::Act(i),
        }
    }
    Resolved::End("steps: a loop that never pauses".to_string())
}

/// A random split's path for the entry: decided by (journey, version, entry, step), so a run
/// repeated after a crash takes the same one.
fn pick<'a>(split: &'a RandomSplit, version: &Compiled, entry: &Entry) -> Option<&'a str> {
    let draw = unit_hash(&[
        "split",
        &version.journey.key,
        &version.version.to_string(),
        &entry.id.0.to_string(),
        &split.id,
    ]);
    let mut upto = 0.0;
    for path in &split.paths {
        upto += path.weight;
        if draw < upto {
            return path.next.as_deref();
        }
    }
    // Weights sum to 1 within rounding: a draw above their float sum takes the last path.
    split.paths.last().and_then(|p| p.next.as_deref())
}
