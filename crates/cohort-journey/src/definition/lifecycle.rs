//! A journey's versions and the states each goes through.
//!
//! A journey is a series of numbered versions. A draft can be edited in place; publishing
//! freezes it: from then on its definition never changes, because customers are in flight on
//! it. An edit to a published (or paused, or archived) version is a new draft version with
//! the next number. When that draft is published, new entries go to it and the customers in
//! flight finish on the version they entered.
//!
//! | from \ action | edit | publish | pause | resume | archive |
//! | --- | --- | --- | --- | --- | --- |
//! | draft | draft | published | – | – | archived |
//! | published | – (new version) | – | paused | – | archived |
//! | paused | – (new version) | – | – | published | archived |
//! | archived | – (new version) | – | – | – | – |
//!
//! ```
//! use cohort_journey::definition::lifecycle::{Action, State, Version, transition};
//! assert_eq!(transition(State::Draft, Action::Publish), Ok(State::Published));
//! let refused = transition(State::Published, Action::Edit).unwrap_err();
//! assert!(refused.to_string().contains("new version"));
//!
//! let v1 = Version { number: 1, state: State::Published };
//! let v2 = v1.revise();
//! assert_eq!((v2.number, v2.state), (2, State::Draft));
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Being written: editable, not running.
    Draft,
    /// Running: the trigger lets customers in; the definition is frozen.
    Published,
    /// No new entries and no steps run; customers in flight wait where they are until it is
    /// resumed (their timers come due then).
    Paused,
    /// Finished for good: no new entries, and customers in flight are exited.
    Archived,
}

/// What a user asks of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Edit,
    Publish,
    Pause,
    Resume,
    Archive,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::Published => "published",
            State::Paused => "paused",
            State::Archived => "archived",
        }
    }
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Edit => "edit",
            Action::Publish => "publish",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Archive => "archive",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action a version's state does not allow, and what to do instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a {from} version: {reason}")]
pub struct TransitionError {
    pub from: State,
    pub action: Action,
    pub reason: &'static str,
}

/// The state a version moves to when `action` is taken, or why it cannot be.
pub fn transition(from: State, action: Action) -> Result<State, TransitionError> {
    use Action as A;
    use State as S;
    let refuse = |reason| {
        Err(TransitionError {
            from,
            action,
            reason,
        })
    };
    match (from, action) {
        (S::Draft, A::Edit) => Ok(S::Draft),
        (S::Draft, A::Publish) => Ok(S::Published),
        (S::Draft, A::Archive) => Ok(S::Archived),
        (S::Draft, A::Pause | A::Resume) => refuse("it has not been published"),
        (S::Published | S::Paused | S::Archived, A::Edit) => refuse(
            "a version that has been published never changes: save the edit as a new version",
        ),
        (S::Published, A::Publish) => refuse("it is already published"),
        (S::Published, A::Pause) => Ok(S::Paused),
        (S::Published, A::Resume) => refuse("it is not paused"),
        (S::Published | S::Paused, A::Archive) => Ok(S::Archived),
        (S::Paused, A::Publish) => refuse("it was published and is paused: resume it"),
        (S::Paused, A::Pause) => refuse("it is already paused"),
        (S::Paused, A::Resume) => Ok(S::Published),
        (S::Archived, A::Publish | A::Pause | A::Resume | A::Archive) => {
            refuse("archived is final: edit it to start a new version")
        }
    }
}

/// One version of a journey, by number (from 1), and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub number: u32,
    pub state: State,
}

impl Version {
    /// The first version of a new journey.
    pub fn first() -> Version {
        Version {
            number: 1,
            state: State::Draft,
        }
    }

    /// Takes `action`, moving to its state, or says why not.
    pub fn apply(&mut self, action: Action) -> Result<(), TransitionError> {
        self.state = transition(self.state, action)?;
        Ok(())
    }

    /// Where an edit goes: this version itself while it is a draft, else a new draft with the
    /// next number (this one is left as it is).
    pub fn revise(self) -> Version {
        match self.state {
            State::Draft => self,
            _ => Version {
                number: self.number.saturating_add(1),
                state: State::Draft,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [State; 4] = [
        State::Draft,
        State::Published,
        State::Paused,
        State::Archived,
    ];
    const ACTIONS: [Action; 5] = [
        Action::Edit,
        Action::Publish,
        Action::Pause,
        Action::Resume,
        Action::Archive,
    ];

    #[test]
    fn every_transition_is_as_the_table_says() {
        use Action as A;
        use State as S;
        let allowed = [
            (S::Draft, A::Edit, S::Draft),
            (S::Draft, A::Publish, S::Published),
            (S::Draft, A::Archive, S::Archived),
            (S::Published, A::Pause, S::Paused),
            (S::Published, A::Archive, S::Archived),
            (S::Paused, A::Resume, S::Published),
            (S::Paused, A::Archive, S::Archived),
        ];
        for from in STATES {
            for action in ACTIONS {
                let expected = allowed
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|(_, _, to)| *to);
                match (transition(from, action), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} {action}"),
                    (Err(e), None) => {
                        assert_eq!((e.from, e.action), (from, action));
                        assert!(
                            e.to_string()
                                .starts_with(&format!("cannot {action} a {from}"))
                        );
                    }
                    (got, want) => panic!("{from} {action}: got {got:?}, expected {want:?}"),
                }
            }
        }
    }

    #[test]
    fn a_published_version_is_never_edited_in_place() {
        let mut v = Version::first();
        v.apply(Action::Edit).expect("a draft is edited in place");
        assert_eq!(v.revise(), v);
        v.apply(Action::Publish).expect("publish");
        let err = v.apply(Action::Edit).expect_err("frozen");
        assert!(err.reason.contains("new version"));
        assert_eq!(
            v.state,
            State::Published,
            "a refused action changes nothing"
        );
        let next = v.revise();
        assert_eq!(
            next,
            Version {
                number: 2,
                state: State::Draft
            }
        );
        v.apply(Action::Pause).expect("pause");
        v.apply(Action::Archive).expect("archive");
        assert_eq!(v.revise().number, 2);
        assert!(v.apply(Action::Resume).is_err());
    }
}
