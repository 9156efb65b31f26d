//! Whether a customer may be sent a message: consent per channel kind and purpose, kept as
//! facts with their source and time.
//!
//! A [`ConsentFact`] says that messages of a [`Scope`] are allowed or not. A scope is a
//! channel kind and a [`Purpose`], either of which may be "any" (`*`), or
//! [`Scope::Contact`], do-not-contact. Scopes are written as short strings: `email:marketing`,
//! `*:marketing`, `sms:*`, `contact`.
//!
//! **Where facts come from.** The engine calls [`consent_facts`] on every processed message
//! and records what it returns ([`DeliveryStore::record_consent`](super::DeliveryStore)):
//!
//! - Segment's `context.consent.categoryPreferences` (a map of category → bool, as consent
//!   managers such as OneTrust fill it). [`ConsentRules::categories`] maps category names,
//!   compared without regard to ASCII case, to scopes; by default `marketing` → `*:marketing`,
//!   and `email`, `sms` and `push` → that channel's marketing. Other categories (analytics,
//!   advertising cookies) say nothing about messages and are ignored. A `false` here is a
//!   missing consent (reason `no_consent`).
//! - The traits of an `identify` call (only `identify`: other calls' `context.traits` are
//!   copies an SDK attaches, often stale). Honoured, as booleans (or `"true"`/`"false"`, `1`/`0`):
//!   - `unsubscribed`: all marketing (`*:marketing`);
//!   - `email_unsubscribed`, `sms_unsubscribed`, `push_unsubscribed`: that channel's marketing;
//!   - `do_not_contact`: [`Scope::Contact`];
//!   - and, as strings, `email_subscribe`, `sms_subscribe`, `push_subscribe`: `"opted_in"`
//!     allows that channel's marketing, `"unsubscribed"` refuses it, `"subscribed"` (no
//!     explicit choice) says nothing.
//!
//!   A refusal here is an unsubscribe (reason `unsubscribed`).
//! - Channels ([`ConsentFact::channel_unsubscribe`]): an email one-click unsubscribe refuses
//!   that channel's marketing; an SMS `STOP` reply refuses every SMS, transactional too,
//!   because carriers treat STOP as ending all messages from the sender.
//!
//! **Which fact decides.** For a message of one channel kind and purpose, of the facts whose
//! scope covers it, the latest decides (on equal times, a refusal). A later
//! `email:marketing` grant thus lifts an earlier `*:marketing` refusal for email only. A store
//! keeps one fact per scope and treats a fact that repeats what it holds as no news
//! ([`ConsentFact::replaces`]): apps send `unsubscribed: false` with every identify, and
//! without that rule each repeat would look like a fresh opt-in and undo a later `STOP`.
//!
//! **Do-not-contact blocks every send**, transactional ones too, and no channel-level grant
//! lifts it: only a later fact on `contact` itself (`do_not_contact: false`). It is the
//! setting an operator uses for a legal hold, a deceased customer or a complaint, where any
//! message at all is the harm; a receipt that must still go out is the operator's decision to
//! clear the flag, not a default.
//!
//! **Transactional messages** need consent like any other: they are refused by facts on their
//! channel's `*` or `transactional` scope (an SMS STOP) and by do-not-contact, but not by
//! marketing refusals, which do not cover them.
//!
//! **Opt-in scopes.** By default a message is allowed when no fact covers it. Scopes listed in
//! [`ConsentRules::opt_in`] (for example `email:marketing` under GDPR) need a grant: with no
//! fact, the reason is `no_consent`.

use super::SkipReason;
use crate::definition::ChannelKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Why a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Marketing,
    /// What the customer needs for something they did (a receipt, a password reset): not
    /// capped, never held by quiet hours, still subject to consent.
    Transactional,
}

impl Purpose {
    /// The purpose of a send step's message, by its `transactional` flag.
    pub fn of(transactional: bool) -> Purpose {
        if transactional {
            Purpose::Transactional
        } else {
            Purpose::Marketing
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Transactional => "transactional",
        }
    }
}

impl FromStr for Purpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Purpose, String> {
        match s {
            "marketing" => Ok(Purpose::Marketing),
            "transactional" => Ok(Purpose::Transactional),
            _ => Err(format!(
                "{s:?} is not a purpose: marketing or transactional"
            )),
        }
    }
}

/// What a consent fact is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Do-not-contact: refusing it blocks every send.
    Contact,
    /// Messages of a channel kind and purpose, each `None` for any.
    Messages {
        channel: Option<ChannelKind>,
        purpose: Option<Purpose>,
    },
}

impl Scope {
    pub fn messages(channel: Option<ChannelKind>, purpose: Option<Purpose>) -> Scope {
        Scope::Messages { channel, purpose }
    }

    /// Whether this scope's facts decide messages of `channel` and `purpose`.
    pub fn covers(self, channel: ChannelKind, purpose: Purpose) -> bool {
        match self {
            Scope::Contact => true,
            Scope::Messages {
                channel: c,
                purpose: p,
            } => c.is_none_or(|c| c == channel) && p.is_none_or(|p| p == purpose),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Contact => f.write_str("contact"),
            Scope::Messages { channel, purpose } => write!(
                f,
                "{}:{}",
                channel.map_or("*", ChannelKind::as_str),
                purpose.map_or("*", Purpose::as_str)
            ),
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        if s == "contact" {
            return Ok(Scope::Contact);
        }
        let wrong = || {
            format!(
                "{s:?} is not a consent scope: write channel:purpose (email, sms, push, webhook \
                 or *; marketing, transactional or *), such as \"email:marketing\", or \"contact\""
            )
        };
        let (channel, purpose) = s.split_once(':').ok_or_else(wrong)?;
        let channel = match channel {
            "*" => None,
            c => Some(
                serde_json::from_value::<ChannelKind>(Value::String(c.to_string()))
                    .map_err(|_| wrong())?,
            ),
        };
        let purpose = match purpose {
            "*" => None,
            p => Some(p.parse().map_err(|_| wrong())?),
        };
        Ok(Scope::Messages { channel, purpose })
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Who stated a consent fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    /// Segment's `context.consent.categoryPreferences`.
    SegmentConsent,
    /// An `identify` call's traits.
    Traits,
    /// A channel: an email one-click unsubscribe, an SMS STOP reply.
    Channel,
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::SegmentConsent => "segment_consent",
            ConsentSource::Traits => "traits",
            ConsentSource::Channel => "channel",
        }
    }
}

impl FromStr for ConsentSource {
    type Err = String;

    fn from_str(s: &str) -> Result<ConsentSource, String> {
        match s {
            "segment_consent" => Ok(ConsentSource::SegmentConsent),
            "traits" => Ok(ConsentSource::Traits),
            "channel" => Ok(ConsentSource::Channel),
            _ => Err(format!("{s:?} is not a consent source")),
        }
    }
}

/// That messages of a scope are allowed or not, as of a time, and who said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentFact {
    pub scope: Scope,
    pub allowed: bool,
    pub source: ConsentSource,
    /// What exactly said it: `categoryPreferences.Marketing`, `traits.sms_unsubscribed`,
    /// `sms-main: STOP`.
    pub detail: String,
    pub at: DateTime<Utc>,
}

impl ConsentFact {
    /// An unsubscribe recorded by a channel: an SMS STOP reply refuses every SMS (carriers
    /// stop all messages from the sender after STOP); on other channels (an email one-click
    /// unsubscribe) it refuses marketing. `detail` says which channel and how.
    pub fn channel_unsubscribe(
        kind: ChannelKind,
        detail: impl Into<String>,
        at: DateTime<Utc>,
    ) -> ConsentFact {
        let purpose = match kind {
            ChannelKind::Sms => None,
            _ => Some(Purpose::Marketing),
        };
        ConsentFact {
            scope: Scope::messages(Some(kind), purpose),
            allowed: false,
            source: ConsentSource::Channel,
            detail: detail.into(),
            at,
        }
    }

    /// Whether a store holding `kept` for this scope keeps this fact instead: when it says
    /// something else, and is later (or as late, and refuses). A fact that repeats the kept
    /// one is no news, and one older than it is out of date. Every store applies this rule,
    /// on record and on merge.
    pub fn replaces(&self, kept: &ConsentFact) -> bool {
        self.allowed != kept.allowed && (self.at > kept.at || (self.at == kept.at && !self.allowed))
    }
}

/// A workspace's consent settings (part of [`DeliveryRules`](super::DeliveryRules)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRules {
    /// Segment consent categories (compared without regard to ASCII case) and the scopes
    /// they decide.
    #[serde(default = "default_categories")]
    pub categories: BTreeMap<String, Scope>,
    /// Scopes whose messages need a grant; elsewhere, no fact means allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opt_in: Vec<Scope>,
}

fn default_categories() -> BTreeMap<String, Scope> {
    let marketing = Some(Purpose::Marketing);
    BTreeMap::from([
        ("marketing".to_string(), Scope::messages(None, marketing)),
        (
            "email".to_string(),
            Scope::messages(Some(ChannelKind::Email), marketing),
        ),
        (
            "sms".to_string(),
            Scope::messages(Some(ChannelKind::Sms), marketing),
        ),
        (
            "push".to_string(),
            Scope::messages(Some(ChannelKind::Push), marketing),
        ),
    ])
}

impl Default for ConsentRules {
    fn default() -> Self {
        ConsentRules {
            categories: default_categories(),
            opt_in: Vec::new(),
        }
    }
}

impl ConsentRules {
    fn category(&self, name: &str) -> Option<Scope> {
        self.categories
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, scope)| *scope)
    }
}

/// Identify traits that refuse a scope when true.
const UNSUBSCRIBE_TRAITS: [(&str, Option<ChannelKind>); 4] = [
    ("unsubscribed", None),
    ("email_unsubscribed", Some(ChannelKind::Email)),
    ("sms_unsubscribed", Some(ChannelKind::Sms)),
    ("push_unsubscribed", Some(ChannelKind::Push)),
];

/// Identify traits holding a subscription state, as Braze writes them.
const SUBSCRIBE_TRAITS: [(&str, ChannelKind); 3] = [
    ("email_subscribe", ChannelKind::Email),
    ("sms_subscribe", ChannelKind::Sms),
    ("push_subscribe", ChannelKind::Push),
];

const DO_NOT_CONTACT_TRAIT: &str = "do_not_contact";

/// A flag as apps send it: a boolean, `"true"`/`"false"`, or `1`/`0`.
fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The consent facts one Segment message states, as of `at` (the message's timestamp as
/// processed): from `context.consent.categoryPreferences` and, for `identify`, its traits.
/// Empty for most messages. Two categories deciding one scope differently give a refusal.
pub fn consent_facts(message: &Value, rules: &ConsentRules, at: DateTime<Utc>) -> Vec<ConsentFact> {
    let mut facts: Vec<ConsentFact> = Vec::new();
    let mut add = |scope: Scope, allowed: bool, source: ConsentSource, detail: String| {
        if let Some(same) = facts.iter_mut().find(|f| f.scope == scope) {
            if same.allowed && !allowed {
                same.allowed = false;
                same.source = source;
                same.detail = detail;
            }
        } else {
            facts.push(ConsentFact {
                scope,
                allowed,
                source,
                detail,
                at,
            });
        }
    };
    if let Some(preferences) = message
        .pointer("/context/consent/categoryPreferences")
        .and_then(Value::as_object)
    {
        for (name, value) in preferences {
            if let (Some(scope), Value::Bool(allowed)) = (rules.category(name), value) {
                add(
                    scope,
                    *allowed,
                    ConsentSource::SegmentConsent,
                    format!("categoryPreferences.{name}"),
                );
            }
        }
    }
    let traits = (message.get("type").and_then(Value::as_str) == Some("identify"))
        .then(|| message.get("traits").and_then(Value::as_object))
        .flatten();
    if let Some(traits) = traits {
        let detail = |name: &str| format!("traits.{name}");
        for (name, channel) in UNSUBSCRIBE_TRAITS {
            if let Some(unsubscribed) = traits.get(name).and_then(flag) {
                let scope = Scope::messages(channel, Some(Purpose::Marketing));
                add(scope, !unsubscribed, ConsentSource::Traits, detail(name));
            }
        }
        for (name, channel) in SUBSCRIBE_TRAITS {
            let allowed = match traits.get(name).and_then(Value::as_str) {
                Some("opted_in") => true,
                Some("unsubscribed") => false,
                _ => continue,
            };
            let scope = Scope::messages(Some(channel), Some(Purpose::Marketing));
            add(scope, allowed, ConsentSource::Traits, detail(name));
        }
        if let Some(dnc) = traits.get(DO_NOT_CONTACT_TRAIT).and_then(flag) {
            add(
                Scope::Contact,
                !dnc,
                ConsentSource::Traits,
                detail(DO_NOT_CONTACT_TRAIT),
            );
        }
    }
    facts
}

/// Whether `facts` (a customer's, one per scope or more) allow a message of `channel` and
/// `purpose`; if not, why.
pub fn check_consent(
    facts: &[ConsentFact],
    rules: &ConsentRules,
    channel: ChannelKind,
    purpose: Purpose,
) -> Result<(), SkipReason> {
    let latest = |a: &ConsentFact, b: &ConsentFact| (a.at, !a.allowed) > (b.at, !b.allowed);
    let mut contact: Option<&ConsentFact> = None;
    let mut deciding: Option<&ConsentFact> = None;
    for fact in facts {
        let slot = match fact.scope {
            Scope::Contact => &mut contact,
            scope if scope.covers(channel, purpose) => &mut deciding,
            _ => continue,
        };
        if slot.is_none_or(|kept| latest(fact, kept)) {
            *slot = Some(fact);
        }
    }
    if contact.is_some_and(|f| !f.allowed) {
        return Err(SkipReason::DoNotContact);
    }
    match deciding {
        Some(f) if f.allowed => Ok(()),
        Some(f) if f.source == ConsentSource::SegmentConsent => Err(SkipReason::NoConsent),
        Some(_) => Err(SkipReason::Unsubscribed),
        None if rules.opt_in.iter().any(|s| s.covers(channel, purpose)) => {
            Err(SkipReason::NoConsent)
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn t(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 12, minute, 0).unwrap()
    }

    fn fact(scope: &str, allowed: bool, source: ConsentSource, minute: u32) -> ConsentFact {
        ConsentFact {
            scope: scope.parse().unwrap(),
            allowed,
            source,
            detail: String::new(),
            at: t(minute),
        }
    }

    use ChannelKind::{Email, Push, Sms};
    use Purpose::{Marketing, Transactional};

    #[test]
    fn scopes_read_and_write_as_short_strings() {
        for text in [
            "contact",
            "*:*",
            "*:marketing",
            "email:*",
            "sms:transactional",
            "webhook:marketing",
        ] {
            let scope: Scope = text.parse().unwrap();
            assert_eq!(scope.to_string(), text);
            assert_eq!(serde_json::to_value(scope).unwrap(), json!(text));
        }
        for bad in ["", "email", "fax:marketing", "email:promo", "Contact"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        let s: Scope = "sms:*".parse().unwrap();
        assert!(s.covers(Sms, Marketing) && s.covers(Sms, Transactional));
        assert!(!s.covers(Email, Marketing));
    }

    #[test]
    fn consent_from_segment_category_preferences() {
        // As analytics.js sends it with a consent manager (OneTrust categories renamed in the
        // workspace's settings to Cohort's defaults).
        let message = json!({
            "type": "track",
            "event": "Product Viewed",
            "userId": "u-1",
            "properties": {"product_id": "p-1"},
            "context": {
                "consent": {
                    "categoryPreferences": {
                        "Marketing": false,
                        "Analytics": true,
                        "email": true,
                        "Advertising": false,
                        "sms": "yes"
                    }
                },
                "timezone": "Asia/Shanghai"
            },
            "messageId": "m-1",
            "timestamp": "2026-05-01T12:00:00Z"
        });
        let rules = ConsentRules::default();
        let facts = consent_facts(&message, &rules, t(0));
        let got: Vec<(String, bool, &str)> = facts
            .iter()
            .map(|f| (f.scope.to_string(), f.allowed, f.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "*:marketing".to_string(),
                    false,
                    "categoryPreferences.Marketing"
                ),
                (
                    "email:marketing".to_string(),
                    true,
                    "categoryPreferences.email"
                ),
            ]
        );
        assert!(
            facts
                .iter()
                .all(|f| f.source == ConsentSource::SegmentConsent && f.at == t(0))
        );
        // Email marketing was granted in the same message that refused marketing at large:
        // equal times, so the refusal decides email too; push is refused by the category.
        assert_eq!(
            check_consent(&facts, &rules, Email, Marketing),
            Err(SkipReason::NoConsent)
        );
        assert_eq!(
            check_consent(&facts, &rules, Push, Marketing),
            Err(SkipReason::NoConsent)
        );
        assert_eq!(check_consent(&facts, &rules, Push, Transactional), Ok(()));

        // A workspace maps its consent manager's own category ids.
        let rules: ConsentRules = serde_json::from_value(json!({
            "categories": {"C0004": "*:marketing", "C0005": "sms:*"},
            "opt_in": ["email:marketing"]
        }))
        .unwrap();
        let message = json!({"type": "page", "context": {"consent": {"categoryPreferences": {"c0004": true, "C0005": false}}}});
        let facts = consent_facts(&message, &rules, t(1));
        assert_eq!(facts.len(), 2);
        assert_eq!(check_consent(&facts, &rules, Push, Marketing), Ok(()));
        assert_eq!(
            check_consent(&facts, &rules, Sms, Transactional),
            Err(SkipReason::NoConsent)
        );
        assert_eq!(
            check_consent(&[], &rules, Email, Marketing),
            Err(SkipReason::NoConsent)
        );
        assert_eq!(check_consent(&[], &rules, Email, Transactional), Ok(()));
    }

    #[test]
    fn consent_from_identify_traits() {
        let message = json!({
            "type": "identify",
            "userId": "u-1",
            "traits": {
                "email": "li@example.com",
                "unsubscribed": false,
                "sms_unsubscribed": "true",
                "push_unsubscribed": 0,
                "email_subscribe": "opted_in",
                "push_subscribe": "subscribed",
                "do_not_contact": false,
                "email_unsubscribed": "maybe"
            }
        });
        let facts = consent_facts(&message, &ConsentRules::default(), t(2));
        let got: Vec<(String, bool, &str)> = facts
            .iter()
            .map(|f| (f.scope.to_string(), f.allowed, f.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("*:marketing".to_string(), true, "traits.unsubscribed"),
                (
                    "sms:marketing".to_string(),
                    false,
                    "traits.sms_unsubscribed"
                ),
                (
                    "push:marketing".to_string(),
                    true,
                    "traits.push_unsubscribed"
                ),
                (
                    "email:marketing".to_string(),
                    true,
                    "traits.email_subscribe"
                ),
                ("contact".to_string(), true, "traits.do_not_contact"),
            ]
        );
        assert!(facts.iter().all(|f| f.source == ConsentSource::Traits));
        let rules = ConsentRules::default();
        assert_eq!(
            check_consent(&facts, &rules, Sms, Marketing),
            Err(SkipReason::Unsubscribed)
        );
        assert_eq!(check_consent(&facts, &rules, Sms, Transactional), Ok(()));
        assert_eq!(check_consent(&facts, &rules, Email, Marketing), Ok(()));
        // Traits travelling with other calls are an SDK's cached copy: not facts.
        let track = json!({"type": "track", "traits": {"unsubscribed": true}, "context": {"traits": {"unsubscribed": true}}});
        assert!(consent_facts(&track, &rules, t(2)).is_empty());
        // No consent in a message: nothing, and nothing allocated to say so.
        assert_eq!(
            consent_facts(
                &json!({"type": "identify", "traits": {"name": "李"}}),
                &rules,
                t(2)
            )
            .capacity(),
            0
        );
    }

    #[test]
    fn the_latest_fact_covering_a_message_decides() {
        use ConsentSource::{Channel, SegmentConsent, Traits};
        let rules = ConsentRules::default();
        let facts = vec![
            fact("*:marketing", false, Traits, 1),
            fact("email:marketing", true, SegmentConsent, 2),
        ];
        assert_eq!(check_consent(&facts, &rules, Email, Marketing), Ok(()));
        assert_eq!(
            check_consent(&facts, &rules, Sms, Marketing),
            Err(SkipReason::Unsubscribed)
        );
        // The order facts are given in does not matter, only their times.
        let mut reversed = facts.clone();
        reversed.reverse();
        assert_eq!(check_consent(&reversed, &rules, Email, Marketing), Ok(()));
        let facts = vec![
            fact("email:marketing", true, SegmentConsent, 2),
            fact("*:marketing", false, Traits, 3),
        ];
        assert_eq!(
            check_consent(&facts, &rules, Email, Marketing),
            Err(SkipReason::Unsubscribed)
        );
        // Equal times: the refusal.
        let facts = vec![
            fact("email:*", true, Traits, 4),
            fact("*:*", false, Channel, 4),
        ];
        assert_eq!(
            check_consent(&facts, &rules, Email, Marketing),
            Err(SkipReason::Unsubscribed)
        );
        // An SMS STOP refuses transactional SMS too, not email.
        let stop = ConsentFact::channel_unsubscribe(Sms, "sms-main: STOP", t(5));
        assert_eq!(stop.scope.to_string(), "sms:*");
        let facts = vec![fact("sms:marketing", true, Traits, 1), stop];
        assert_eq!(
            check_consent(&facts, &rules, Sms, Transactional),
            Err(SkipReason::Unsubscribed)
        );
        assert_eq!(check_consent(&facts, &rules, Email, Transactional), Ok(()));
        let one_click = ConsentFact::channel_unsubscribe(Email, "email-main: one-click", t(5));
        assert_eq!(one_click.scope.to_string(), "email:marketing");
    }

    #[test]
    fn do_not_contact_blocks_everything_until_it_is_itself_lifted() {
        use ConsentSource::Traits;
        let rules = ConsentRules::default();
        let facts = vec![
            fact("contact", false, Traits, 1),
            fact("*:*", true, Traits, 2),
        ];
        for (channel, purpose) in [
            (Email, Marketing),
            (Sms, Transactional),
            (ChannelKind::Webhook, Transactional),
        ] {
            assert_eq!(
                check_consent(&facts, &rules, channel, purpose),
                Err(SkipReason::DoNotContact)
            );
        }
        let lifted = vec![
            fact("contact", false, Traits, 1),
            fact("contact", true, Traits, 3),
        ];
        assert_eq!(check_consent(&lifted, &rules, Email, Marketing), Ok(()));
    }

    #[test]
    fn stores_keep_a_change_not_a_repeat() {
        use ConsentSource::Traits;
        let kept = fact("*:marketing", true, Traits, 5);
        assert!(
            !fact("*:marketing", true, Traits, 9).replaces(&kept),
            "a repeat"
        );
        assert!(fact("*:marketing", false, Traits, 9).replaces(&kept));
        assert!(
            !fact("*:marketing", false, Traits, 4).replaces(&kept),
            "out of date"
        );
        assert!(
            fact("*:marketing", false, Traits, 5).replaces(&kept),
            "a tie refuses"
        );
        let refused = fact("*:marketing", false, Traits, 5);
        assert!(!fact("*:marketing", true, Traits, 5).replaces(&refused));
    }
}
