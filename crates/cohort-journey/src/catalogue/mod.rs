//! What journeys are made of, versioned: journey definitions and the state of each of their
//! versions, message templates, and channels. Trait [`JourneyCatalogue`].
//!
//! # Journeys
//!
//! [`JourneyCatalogue::save_draft`] saves a definition: as version 1 of a new journey, over the
//! journey's draft if its latest version is one, or else as a new draft version after the
//! latest (a version that has been published never changes). [`JourneyCatalogue::transition`]
//! takes a [`lifecycle`](crate::definition::lifecycle) action on one version:
//!
//! - **publish** checks the draft against everything that exists ([`Catalogue::check`]: this
//!   catalogue's channels and templates, and the segments, tags, experiments and coupon pools
//!   the caller passes) and is refused, with the field, if it fails. Otherwise, in one commit,
//!   the draft takes new entries, fixes the template versions its steps send with
//!   ([`JourneyVersion::templates`]: a later edit of a template reaches a journey only through a
//!   new journey version), and every version published before it is **finishing**: it takes no
//!   new entries, and the customers in flight on it finish on it. Nothing is ever half-published.
//! - **pause** stops a version's entries and steps where they are; **resume** lets them go on
//!   (a finishing version resumes as finishing);
//! - **archive** retires a version for good. Ending its customers' entries is the state store's
//!   part ([`JourneyStateStore::exit_journey`](crate::state::JourneyStateStore::exit_journey)).
//!
//! [`JourneyCatalogue::live`] gives the runner what it runs ([`Runner::new`](crate::runner::Runner::new)):
//! every version taking entries, finishing or paused. Finishing versions stay live until they
//! are archived: whether entries are still in flight on one, or conversions may still come
//! within its goal window, is the state store's to know, not the catalogue's.
//!
//! # Templates and channels
//!
//! Every save of a template is a new version ([`JourneyCatalogue::save_template`]); its source is
//! a JSON object whose text fields (`subject`, `html`, `text`, `body` …) are Liquid, each parsed
//! when saved, and a template keeps the channel kind it was first saved with. A channel
//! ([`JourneyCatalogue::save_channel`]) is a provider configuration, checked when saved, and is
//! not deleted, nor changed to another kind, while a live version sends through it.
//!
//! The embedded implementation is SQLite (`cohort-store`); [`MemoryJourneyCatalogue`] keeps the
//! catalogue in memory. Both pass `journey_catalogue_conformance_suite!` (feature
//! `conformance`).
//!
//! ```
//! use cohort_journey::catalogue::{JourneyCatalogue, MemoryJourneyCatalogue};
//! use cohort_journey::definition::{Catalogue, ChannelKind, lifecycle::Action, parse_json};
//! use cohort_journey::runner::{Run, Runner};
//! use serde_json::json;
//!
//! let mut catalogue = MemoryJourneyCatalogue::default();
//! let now = chrono::Utc::now();
//! catalogue.save_channel("sms", &json!({"provider": "alibaba_sms", "access_key_id": "LTAI5t",
//!     "access_key_secret": "…", "sign_name": "Cohort"}), now)?;
//! catalogue.save_template("hello", ChannelKind::Sms, &json!({"body": "{{ first_name | default: \"顾客\" }}，欢迎！"}), now)?;
//! let welcome = parse_json(r#"{"key": "welcome", "name": "Welcome",
//!   "trigger": {"type": "event", "event": "Signed Up"},
//!   "steps": [{"id": "hello", "type": "send", "channel": "sms", "template": "hello"}]}"#)?;
//! let draft = catalogue.save_draft(&welcome, now)?;
//! let segments_and_the_rest = Catalogue::default();
//! let v1 = catalogue.transition("welcome", draft.version, Action::Publish, &segments_and_the_rest, now)?;
//! assert_eq!((v1.version, v1.run(), v1.templates["hello"]), (1, Some(Run::Entering), 1));
//!
//! let v2 = catalogue.save_draft(&welcome, now)?;
//! catalogue.transition("welcome", v2.version, Action::Publish, &segments_and_the_rest, now)?;
//! let live = catalogue.live()?;
//! assert_eq!(live.iter().map(|p| (p.version, p.run)).collect::<Vec<_>>(),
//!            [(1, Run::Finishing), (2, Run::Entering)]);
//! let runner = Runner::new(live)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod memory;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests;

pub use memory::MemoryJourneyCatalogue;

use crate::channel::config::{ChannelConfig, InvalidChannel};
use crate::definition::lifecycle::{Action, State, TransitionError, transition};
use crate::definition::{CallWebhook, Catalogue, ChannelKind, Invalid, Journey, SendMessage, Step};
use crate::runner::{Published, Run};
use crate::template::TemplateError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One version of a journey, as the catalogue keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyVersion {
    pub key: String,
    /// From 1.
    pub version: u32,
    pub state: State,
    /// A later version was published: this one takes no new entries, and its entries run to
    /// their end. Only published and paused versions are ever finishing.
    pub finishing: bool,
    pub journey: Journey,
    /// The version of each template its steps send with, fixed when it was published (empty
    /// for a draft).
    pub templates: BTreeMap<String, u32>,
    pub created_at: DateTime<Utc>,
    /// The last save or state change.
    pub updated_at: DateTime<Utc>,
}

impl JourneyVersion {
    /// How the runner runs it, if at all (drafts and archived versions do not run).
    pub fn run(&self) -> Option<Run> {
        match self.state {
            State::Published if self.finishing => Some(Run::Finishing),
            State::Published => Some(Run::Entering),
            State::Paused => Some(Run::Paused),
            State::Draft | State::Archived => None,
        }
    }

    /// The state as a user sees it: `draft`, `published`, `finishing`, `paused` or `archived`.
    pub fn status(&self) -> &'static str {
        match self.run() {
            Some(Run::Finishing) => "finishing",
            _ => self.state.as_str(),
        }
    }

    /// What the runner is given for it, when it runs.
    pub fn published(&self) -> Option<Published> {
        self.run().map(|run| Published {
            journey: self.journey.clone(),
            version: self.version,
            run,
        })
    }
}

/// Something that happened to a journey version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Its definition was saved (created, or a draft edited).
    Saved,
    Published,
    Paused,
    Resumed,
    Archived,
    /// A later version was published: it became finishing.
    Superseded,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Saved => "saved",
            Change::Published => "published",
            Change::Paused => "paused",
            Change::Resumed => "resumed",
            Change::Archived => "archived",
            Change::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<Change> {
        [
            Change::Saved,
            Change::Published,
            Change::Paused,
            Change::Resumed,
            Change::Archived,
            Change::Superseded,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }

    fn of(action: Action) -> Change {
        match action {
            Action::Edit => Change::Saved,
            Action::Publish => Change::Published,
            Action::Pause => Change::Paused,
            Action::Resume => Change::Resumed,
            Action::Archive => Change::Archived,
        }
    }
}

/// One line of a journey's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u32,
    pub change: Change,
    pub at: DateTime<Utc>,
}

/// One version of a message template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersion {
    pub key: String,
    /// From 1, one more for each save.
    pub version: u32,
    /// The channel kind it is written for, fixed at its first save.
    pub kind: ChannelKind,
    /// A JSON object whose text fields are Liquid.
    pub source: Value,
    pub saved_at: DateTime<Utc>,
}

/// A configured channel. Its configuration holds the provider's secrets: show it through
/// [`ChannelConfig::redacted`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChannel {
    pub name: String,
    pub kind: ChannelKind,
    /// As saved; [`ChannelConfig::from_json`] reads it.
    pub config: Value,
    pub saved_at: DateTime<Utc>,
}

/// Why the catalogue refused a change or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("{what} {key:?} is not a key: use 1 to 100 letters, digits, '-', '_' or '.'")]
    BadKey { what: &'static str, key: String },
    #[error("journey {key:?} has no version {version}")]
    UnknownVersion { key: String, version: u32 },
    /// The action is not one the version's state allows.
    #[error("journey {key:?} version {version}: {error}")]
    Transition {
        key: String,
        version: u32,
        #[source]
        error: TransitionError,
    },
    /// The version cannot be published: the field, and why.
    #[error("journey {key:?} version {version} cannot be published: {invalid}")]
    Invalid {
        key: String,
        version: u32,
        #[source]
        invalid: Invalid,
    },
    #[error("template {key:?}, {field}: {message}")]
    InvalidTemplate {
        key: String,
        /// The source's field (`html`, `body`, `data.title` …), empty for the whole source.
        field: String,
        message: String,
    },
    #[error("template {key:?} is {was} template; save {now} template under another key")]
    TemplateKind {
        key: String,
        was: &'static str,
        now: &'static str,
    },
    #[error("channel {name:?}: {error}")]
    InvalidChannel {
        name: String,
        #[source]
        error: InvalidChannel,
    },
    /// Live journey versions send through the channel (`key v3`, …).
    #[error("channel {name:?} is used by live journeys: {}", by.join(", "))]
    ChannelInUse { name: String, by: Vec<String> },
    #[error("journey catalogue: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("journey catalogue is unreadable: {0}")]
    Unreadable(String),
}

/// Journey definitions, templates and channels, versioned. Used from one thread at a time
/// (`&mut self`); each call is one commit.
pub trait JourneyCatalogue {
    /// Saves a definition: version 1 of a new journey, the journey's draft edited in place
    /// when its latest version is a draft, else a new draft after the latest.
    fn save_draft(
        &mut self,
        journey: &Journey,
        now: DateTime<Utc>,
    ) -> Result<JourneyVersion, CatalogueError>;

    /// Takes `action` on a version (see the module's documentation); `others` holds what
    /// exists outside this catalogue (segments, tags, experiments, coupon pools), against which
    /// a publish is checked together with this catalogue's channels and templates (those of
    /// `others` are not read). Returns the version as it now is; a refused action changes
    /// nothing.
    fn transition(
        &mut self,
        key: &str,
        version: u32,
        action: Action,
        others: &Catalogue,
        now: DateTime<Utc>,
    ) -> Result<JourneyVersion, CatalogueError>;

    fn get(&mut self, key: &str, version: u32) -> Result<Option<JourneyVersion>, CatalogueError>;

    /// The journey's highest version.
    fn latest(&mut self, key: &str) -> Result<Option<JourneyVersion>, CatalogueError>;

    /// Every version of every journey, by key, then version.
    fn list(&mut self) -> Result<Vec<JourneyVersion>, CatalogueError>;

    /// What happened to the journey's versions, oldest first.
    fn history(&mut self, key: &str) -> Result<Vec<HistoryEntry>, CatalogueError>;

    /// Every version the runner runs (taking entries, finishing or paused), by key, then
    /// version: what [`Runner::new`](crate::runner::Runner::new) takes.
    fn live(&mut self) -> Result<Vec<Published>, CatalogueError> {
        Ok(self
            .list()?
            .iter()
            .filter_map(JourneyVersion::published)
            .collect())
    }

    /// Saves a template as its next version. Its source must be a JSON object whose text
    /// fields parse as Liquid; a template keeps the kind it was first saved with.
    fn save_template(
        &mut self,
        key: &str,
        kind: ChannelKind,
        source: &Value,
        now: DateTime<Utc>,
    ) -> Result<TemplateVersion, CatalogueError>;

    /// A template's latest version.
    fn template(&mut self, key: &str) -> Result<Option<TemplateVersion>, CatalogueError>;

    /// One version of a template: what a published journey's send renders
    /// ([`JourneyVersion::templates`]).
    fn template_version(
        &mut self,
        key: &str,
        version: u32,
    ) -> Result<Option<TemplateVersion>, CatalogueError>;

    /// Every template's latest version, by key.
    fn templates(&mut self) -> Result<Vec<TemplateVersion>, CatalogueError>;

    /// Saves a channel (new, or replacing its configuration) after checking the configuration.
    /// Refused when it would change the kind of a channel live journeys use.
    fn save_channel(
        &mut self,
        name: &str,
        config: &Value,
        now: DateTime<Utc>,
    ) -> Result<StoredChannel, CatalogueError>;

    fn channel(&mut self, name: &str) -> Result<Option<StoredChannel>, CatalogueError>;

    /// Every channel, by name.
    fn channels(&mut self) -> Result<Vec<StoredChannel>, CatalogueError>;

    /// Deletes a channel; false when there is none of that name. Refused
    /// ([`CatalogueError::ChannelInUse`]) while a live version sends through it.
    fn delete_channel(&mut self, name: &str) -> Result<bool, CatalogueError>;
}

/// Whether `key` may name a journey, template or channel: 1 to 100 letters, digits, '-', '_'
/// or '.', as definitions' keys.
pub fn check_key(what: &'static str, key: &str) -> Result<(), CatalogueError> {
    let ok = !key.is_empty()
        && key.len() <= 100
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CatalogueError::BadKey {
            what,
            key: key.to_string(),
        })
    }
}

/// The channels a journey's steps send or call through.
pub fn channels_used(journey: &Journey) -> BTreeSet<&str> {
    journey
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Send(SendMessage { channel, .. })
            | Step::Webhook(CallWebhook { channel, .. }) => Some(channel.as_str()),
            _ => None,
        })
        .collect()
}

/// The templates a journey's steps render.
pub fn templates_used(journey: &Journey) -> BTreeSet<&str> {
    journey
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Send(SendMessage { template, .. }) => Some(template.as_str()),
            Step::Webhook(CallWebhook { template, .. }) => template.as_deref(),
            _ => None,
        })
        .collect()
}

/// The live versions (of `versions`, any states) that send through `channel`, as `key vN`.
pub fn channel_users<'a>(
    versions: impl IntoIterator<Item = &'a JourneyVersion>,
    channel: &str,
) -> Vec<String> {
    versions
        .into_iter()
        .filter(|v| v.run().is_some() && channels_used(&v.journey).contains(channel))
        .map(|v| format!("{} v{}", v.key, v.version))
        .collect()
}

/// The version a save of `journey` writes, given the journey's latest version: that draft
/// edited (same number and creation time), or a new draft after it. For implementations.
pub fn next_draft(
    latest: Option<&JourneyVersion>,
    journey: &Journey,
    now: DateTime<Utc>,
) -> Result<JourneyVersion, CatalogueError> {
    check_key("journey", &journey.key)?;
    let (version, created_at) = match latest {
        Some(draft) if draft.state == State::Draft => (draft.version, draft.created_at),
        Some(latest) => (latest.version.saturating_add(1), now),
        None => (1, now),
    };
    Ok(JourneyVersion {
        key: journey.key.clone(),
        version,
        state: State::Draft,
        finishing: false,
        journey: journey.clone(),
        templates: BTreeMap::new(),
        created_at,
        updated_at: now,
    })
}

/// What exists in the catalogue itself when a version is published: its channels' kinds and
/// its templates' kinds and latest versions.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    pub channels: BTreeMap<String, ChannelKind>,
    pub templates: BTreeMap<String, (ChannelKind, u32)>,
}

/// Takes `action` on `version` among all the versions of one journey, as every implementation
/// does: changes `versions` in place (only when it succeeds) and returns what happened, for
/// the history, the acted-on version first. The implementation writes back the versions named
/// in the returned entries, in one commit.
pub fn apply_transition(
    versions: &mut [JourneyVersion],
    version: u32,
    action: Action,
    others: &Catalogue,
    existing: &Existing,
    now: DateTime<Utc>,
) -> Result<Vec<HistoryEntry>, CatalogueError> {
    let Some(target) = versions.iter().position(|v| v.version == version) else {
        return Err(CatalogueError::UnknownVersion {
            key: versions.first().map(|v| v.key.clone()).unwrap_or_default(),
            version,
        });
    };
    let key = versions[target].key.clone();
    let from = versions[target].state;
    let refused = |error| CatalogueError::Transition {
        key: key.clone(),
        version,
        error,
    };
    if action == Action::Edit {
        return Err(refused(TransitionError {
            from,
            action,
            reason: "an edit is a save of the definition, as a draft",
        }));
    }
    let to = transition(from, action).map_err(refused)?;
    let mut pins = BTreeMap::new();
    if action == Action::Publish {
        let mut catalogue = others.clone();
        catalogue.channels = existing.channels.clone();
        catalogue.templates = existing
            .templates
            .iter()
            .map(|(k, (kind, _))| (k.clone(), *kind))
            .collect();
        catalogue
            .check(&versions[target].journey)
            .map_err(|invalid| CatalogueError::Invalid {
                key: key.clone(),
                version,
                invalid,
            })?;
        for template in templates_used(&versions[target].journey) {
            if let Some((_, latest)) = existing.templates.get(template) {
                pins.insert(template.to_string(), *latest);
            }
        }
    }
    let mut history = vec![HistoryEntry {
        version,
        change: Change::of(action),
        at: now,
    }];
    if action == Action::Publish {
        for other in versions.iter_mut() {
            if other.version != version
                && matches!(other.state, State::Published | State::Paused)
                && !other.finishing
            {
                other.finishing = true;
                other.updated_at = now;
                history.push(HistoryEntry {
                    version: other.version,
                    change: Change::Superseded,
                    at: now,
                });
            }
        }
        versions[target].templates = pins;
    }
    versions[target].state = to;
    versions[target].updated_at = now;
    Ok(history)
}

/// Checks a template's source: a JSON object whose every text field, at any depth, parses as
/// Liquid. For implementations.
pub fn check_template(key: &str, source: &Value) -> Result<(), CatalogueError> {
    check_key("template", key)?;
    let Value::Object(fields) = source else {
        return Err(CatalogueError::InvalidTemplate {
            key: key.to_string(),
            field: String::new(),
            message:
                "a template's source is a JSON object of its parts (subject, html, text, body …)"
                    .into(),
        });
    };
    fn walk(key: &str, field: &str, value: &Value) -> Result<(), CatalogueError> {
        match value {
            Value::String(text) => crate::template::check(text).map_err(|e: TemplateError| {
                CatalogueError::InvalidTemplate {
                    key: key.to_string(),
                    field: field.to_string(),
                    message: e.to_string(),
                }
            }),
            Value::Object(map) => map
                .iter()
                .try_for_each(|(name, v)| walk(key, &format!("{field}.{name}"), v)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| walk(key, &format!("{field}[{i}]"), v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        }
    }
    fields.iter().try_for_each(|(name, v)| walk(key, name, v))
}

/// Reads and checks a channel's configuration, for its kind. For implementations.
pub fn check_channel(name: &str, config: &Value) -> Result<ChannelKind, CatalogueError> {
    check_key("channel", name)?;
    ChannelConfig::from_json(&config.to_string())
        .map(|c| c.kind())
        .map_err(|error| CatalogueError::InvalidChannel {
            name: name.to_string(),
            error,
        })
}

/// Refuses a template saved with another kind than its first. For implementations.
pub fn check_template_kind(
    key: &str,
    was: Option<ChannelKind>,
    now: ChannelKind,
) -> Result<(), CatalogueError> {
    match was {
        Some(was) if was != now => Err(CatalogueError::TemplateKind {
            key: key.to_string(),
            was: with_article(was),
            now: with_article(now),
        }),
        _ => Ok(()),
    }
}

fn with_article(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Email => "an email",
        ChannelKind::Sms => "an sms",
        ChannelKind::Push => "a push",
        ChannelKind::Webhook => "a webhook",
    }
}
