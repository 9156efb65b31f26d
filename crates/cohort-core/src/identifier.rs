//! Identifiers that identity resolution links into one customer.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Cohort's stable customer identifier. Merged-away customers keep their ID and point at the survivor.
pub type CustomerId = i64;

/// The kind of an identifier. Custom kinds (a loyalty card number, a WeChat OpenID …) carry their name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum IdKind {
    UserId,
    AnonymousId,
    Email,
    Phone,
    Custom(String),
}

impl IdKind {
    pub fn as_str(&self) -> &str {
        match self {
            IdKind::UserId => "user_id",
            IdKind::AnonymousId => "anonymous_id",
            IdKind::Email => "email",
            IdKind::Phone => "phone",
            IdKind::Custom(name) => name,
        }
    }

    /// Parses the names used in URLs and configuration; Segment's camelCase spellings are accepted too.
    pub fn parse(name: &str) -> IdKind {
        match name {
            "user_id" | "userId" => IdKind::UserId,
            "anonymous_id" | "anonymousId" => IdKind::AnonymousId,
            "email" => IdKind::Email,
            "phone" => IdKind::Phone,
            other => IdKind::Custom(other.to_string()),
        }
    }
}

impl From<String> for IdKind {
    fn from(s: String) -> Self {
        IdKind::parse(&s)
    }
}

impl From<IdKind> for String {
    fn from(k: IdKind) -> Self {
        k.as_str().to_string()
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One identifier value of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    pub kind: IdKind,
    pub value: String,
}

impl Identifier {
    pub fn new(kind: IdKind, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_accept_segment_spelling() {
        for kind in [
            IdKind::UserId,
            IdKind::AnonymousId,
            IdKind::Email,
            IdKind::Phone,
        ] {
            assert_eq!(IdKind::parse(kind.as_str()), kind);
        }
        assert_eq!(IdKind::parse("userId"), IdKind::UserId);
        assert_eq!(
            IdKind::parse("wechat_openid"),
            IdKind::Custom("wechat_openid".into())
        );
    }
}
