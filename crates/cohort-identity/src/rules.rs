use cohort_core::IdKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Limit and priority of one identifier kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindRule {
    /// Most identifiers of this kind one customer may hold.
    pub limit: usize,
    /// Higher wins: the event goes to the customer of the highest-priority known identifier.
    pub priority: u32,
}

/// Configurable identity rules. `Default` is what a new installation runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentityRules {
    /// Rules by kind name (`user_id`, `email`, `phone`, `anonymous_id`, or a custom kind).
    pub kinds: BTreeMap<String, KindRule>,
    /// Rule for custom kinds not named in `kinds`.
    pub custom_default: KindRule,
    /// Values never used to link customers, compared after trimming and lower-casing.
    pub blocklist: Vec<String>,
    #[serde(skip)]
    blocked: HashSet<String>,
}

impl Default for IdentityRules {
    fn default() -> Self {
        let kinds = [
            (
                "user_id",
                KindRule {
                    limit: 1,
                    priority: 100,
                },
            ),
            (
                "email",
                KindRule {
                    limit: 5,
                    priority: 80,
                },
            ),
            (
                "phone",
                KindRule {
                    limit: 5,
                    priority: 70,
                },
            ),
            (
                "anonymous_id",
                KindRule {
                    limit: 200,
                    priority: 10,
                },
            ),
        ]
        .into_iter()
        .map(|(k, r)| (k.to_string(), r))
        .collect();
        let blocklist = [
            "",
            "null",
            "undefined",
            "none",
            "nil",
            "nan",
            "0",
            "-1",
            "anonymous",
            "unknown",
            "guest",
            "test",
            "test@test.com",
            "test@example.com",
            "noemail@example.com",
            "user@example.com",
            "00000000-0000-0000-0000-000000000000",
            "[object object]",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        IdentityRules::new(
            kinds,
            KindRule {
                limit: 10,
                priority: 50,
            },
            blocklist,
        )
    }
}

impl IdentityRules {
    pub fn new(
        kinds: BTreeMap<String, KindRule>,
        custom_default: KindRule,
        blocklist: Vec<String>,
    ) -> Self {
        let mut rules = IdentityRules {
            kinds,
            custom_default,
            blocklist,
            blocked: HashSet::new(),
        };
        rules.reindex();
        rules
    }

    /// Rebuilds the lookup set after `blocklist` changed (for example after deserialising).
    pub fn reindex(&mut self) {
        self.blocked = self
            .blocklist
            .iter()
            .map(|v| v.trim().to_lowercase())
            .collect();
    }

    pub fn rule(&self, kind: &IdKind) -> KindRule {
        self.kinds
            .get(kind.as_str())
            .copied()
            .unwrap_or(self.custom_default)
    }

    /// True for values that must never link customers.
    pub fn is_blocked(&self, value: &str) -> bool {
        let normalised = value.trim().to_lowercase();
        if self.blocked.is_empty() && !self.blocklist.is_empty() {
            // Deserialised without `reindex`: fall back to a scan rather than miss a junk value.
            return self
                .blocklist
                .iter()
                .any(|b| b.trim().eq_ignore_ascii_case(&normalised));
        }
        self.blocked.contains(&normalised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_values_are_blocked_regardless_of_case_and_spaces() {
        let rules = IdentityRules::default();
        for junk in ["null", " NULL ", "undefined", "0", "Test@Test.com", ""] {
            assert!(rules.is_blocked(junk), "{junk:?} should be blocked");
        }
        assert!(!rules.is_blocked("ada@example.org"));
    }

    #[test]
    fn unknown_custom_kinds_use_the_custom_default() {
        let rules = IdentityRules::default();
        assert_eq!(rules.rule(&IdKind::UserId).limit, 1);
        assert_eq!(
            rules.rule(&IdKind::Custom("loyalty".into())),
            rules.custom_default
        );
    }
}
