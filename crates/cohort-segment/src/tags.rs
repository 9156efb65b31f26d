//! The tag definitions Cohort ships: rule-based tags written in the segment condition language.
//!
//! A tag is a named [`Condition`] shown on profiles rather than used for targeting; the engine
//! that stores and applies segments applies tags the same way. The shipped set lives in
//! `tags/builtin.json` (one definition per line) and covers lifecycle stage, value tier, VIP level,
//! purchase frequency, acquisition, channel and payment preference, device preference, category
//! affinity, city tier, discount sensitivity, churn-risk bands, RFM segments, engagement, support
//! and demographics.
//!
//! The rules fit what the demo shop sends (`cohort-demo`): its event names (`Order Completed`,
//! `Product Viewed` with a `category` property, `Application Opened`, `Support Ticket Created`
//! …), order properties (`coupon`, `discount`, `shipping`, `payment_method`, `affiliation` for
//! app versus web), and identify traits (`signup_channel`, `vip_level`, `gender`, `birthday`,
//! `marketing_opt_in`, `address.city`). Amounts are in the shop's currency (CNY). Cities are
//! matched on a `city` trait or on Segment's `address.city`, by Chinese or English name; the
//! `address` trait is stored as compact JSON, so `contains "\"city\":\"上海\""` finds it in both
//! evaluation and SQL. `rfm:*` tags read the traits an RFM run writes ([`crate::rfm`]).
//!
//! ```
//! let tags = cohort_segment::tags::builtin_tags();
//! assert!(tags.len() >= 110);
//! let loyal = tags.iter().find(|t| t.name == "lifecycle:loyal").unwrap();
//! assert_eq!(loyal.group, "lifecycle");
//! ```

use crate::condition::{Condition, ConditionError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use thiserror::Error;

/// The shipped definitions, compiled into the binary.
pub const BUILTIN_JSON: &str = include_str!("../tags/builtin.json");

/// The longest tag name, matching the store's limit on segment names.
pub const MAX_TAG_NAME: usize = 120;

/// One tag: `name` is `group:value`, lower-case letters, digits and `_` on both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagDefinition {
    pub name: String,
    pub group: String,
    pub description: String,
    pub condition: Condition,
}

/// Why a tag definition was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TagError {
    #[error("tag definitions: {0}")]
    Parse(String),
    #[error("tag {name:?}: {message}")]
    Invalid { name: String, message: String },
    #[error("tag {0:?} is defined twice")]
    Duplicate(String),
}

impl TagDefinition {
    /// Checks the name's form, its group, the description and the condition.
    pub fn validate(&self) -> Result<(), TagError> {
        let invalid = |message: String| TagError::Invalid {
            name: self.name.clone(),
            message,
        };
        let part_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let Some((group, value)) = self.name.split_once(':') else {
            return Err(invalid("name must be group:value".into()));
        };
        if !part_ok(group) || !part_ok(value) || self.name.len() > MAX_TAG_NAME {
            return Err(invalid(format!(
                "name must be group:value in a-z, 0-9 and _, at most {MAX_TAG_NAME} characters"
            )));
        }
        if group != self.group {
            return Err(invalid(format!(
                "group {:?} does not match the name's group {group:?}",
                self.group
            )));
        }
        if self.description.trim().is_empty() {
            return Err(invalid("description must not be empty".into()));
        }
        self.condition
            .validate()
            .map_err(|e: ConditionError| invalid(format!("condition: {e}")))
    }
}

/// Parses a JSON array of tag definitions and validates each; names must be unique.
pub fn parse_tags(json: &str) -> Result<Vec<TagDefinition>, TagError> {
    let tags: Vec<TagDefinition> =
        serde_json::from_str(json).map_err(|e| TagError::Parse(e.to_string()))?;
    let mut seen = HashSet::new();
    for tag in &tags {
        tag.validate()?;
        if !seen.insert(tag.name.as_str()) {
            return Err(TagError::Duplicate(tag.name.clone()));
        }
    }
    Ok(tags)
}

/// The shipped tag definitions, in file order. The file is checked by this crate's tests, so
/// this never comes back short; were it ever invalid, no tags would be returned rather than a
/// partial set.
pub fn builtin_tags() -> Vec<TagDefinition> {
    parse_tags(BUILTIN_JSON).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CustomerView, EventRecord, evaluate, to_sql};
    use chrono::{DateTime, TimeDelta, TimeZone, Utc};
    use cohort_profile::ComputedTraits;
    use serde_json::{Map, Value, json};
    use std::collections::BTreeMap;

    #[test]
    fn every_builtin_tag_parses_validates_and_compiles_to_sql() {
        let tags = parse_tags(BUILTIN_JSON).unwrap_or_else(|e| panic!("{e}"));
        assert!(tags.len() >= 110, "only {} tags", tags.len());
        let groups: HashSet<&str> = tags.iter().map(|t| t.group.as_str()).collect();
        for wanted in [
            "lifecycle",
            "value",
            "frequency",
            "channel",
            "device",
            "category",
            "city",
            "discount",
            "churn",
            "rfm",
        ] {
            assert!(groups.contains(wanted), "no {wanted} tags");
        }
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        for tag in &tags {
            to_sql(&tag.condition, now)
                .unwrap_or_else(|e| panic!("{} does not compile to SQL: {e}", tag.name));
        }
        assert_eq!(builtin_tags(), tags);
        // MAX_COST is chosen with room above the shipped tags; its documentation names this.
        let costliest = tags.iter().map(|t| t.condition.cost()).max();
        assert!(costliest.is_some_and(|c| c < 200), "{costliest:?}");
    }

    #[test]
    fn bad_definitions_are_rejected() {
        let one = |name: &str, group: &str| {
            json!([{"name": name, "group": group, "description": "d",
                    "condition": {"type": "trait", "key": "x", "op": "exists"}}])
            .to_string()
        };
        assert!(parse_tags(&one("lifecycle:new", "lifecycle")).is_ok());
        for (name, group) in [
            ("lifecycle", "lifecycle"),
            ("Lifecycle:new", "lifecycle"),
            ("lifecycle:new", "value"),
            ("lifecycle:new tag", "lifecycle"),
            (":new", ""),
        ] {
            assert!(
                matches!(parse_tags(&one(name, group)), Err(TagError::Invalid { .. })),
                "{name}"
            );
        }
        let twice = json!([
            {"name": "a:b", "group": "a", "description": "d", "condition": {"type": "or", "conditions": []}},
            {"name": "a:b", "group": "a", "description": "e", "condition": {"type": "or", "conditions": []}}
        ]);
        assert_eq!(
            parse_tags(&twice.to_string()),
            Err(TagError::Duplicate("a:b".into()))
        );
        let bad_condition = json!([{"name": "a:b", "group": "a", "description": "d",
            "condition": {"type": "computed", "key": "nope", "op": "gt", "value": 1}}]);
        assert!(matches!(
            parse_tags(&bad_condition.to_string()),
            Err(TagError::Invalid { .. })
        ));
        assert!(matches!(
            parse_tags(r#"[{"name": "a:b"}]"#),
            Err(TagError::Parse(_))
        ));
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn event(name: &str, days_ago: i64, properties: Value) -> EventRecord {
        EventRecord {
            name: name.into(),
            timestamp: now() - TimeDelta::days(days_ago),
            properties: properties.as_object().cloned().unwrap_or_default(),
        }
    }

    struct Customer {
        traits: Map<String, Value>,
        computed: ComputedTraits,
        events: Vec<EventRecord>,
    }

    impl Customer {
        fn has(&self, tags: &[TagDefinition], name: &str) -> bool {
            let tag = tags
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("no tag {name}"));
            let view = CustomerView::new(&self.traits, &self.computed, &self.events);
            evaluate(&tag.condition, &view, now(), &|_| false)
        }
    }

    fn at(days_ago: i64) -> Option<String> {
        Some((now() - TimeDelta::days(days_ago)).to_rfc3339())
    }

    /// A Shanghai customer as the demo would make her: signed up in the app, buys often.
    fn li_na() -> Customer {
        let traits = json!({
            "email": "lina88@qq.com", "phone": "+8613812345678", "gender": "female",
            "birthday": "1996-05-12", "signup_channel": "xiaohongshu", "vip_level": "silver",
            "marketing_opt_in": true, "address": {"city": "上海", "country": "CN"},
            "rfm_segment": "Champions", "rfm_cluster": 0, "rfm_monetary": 5
        });
        let app = "Cohort Shop App";
        let events = vec![
            event("Signed Up", 120, json!({"method": "wechat"})),
            event(
                "Order Completed",
                100,
                json!({"affiliation": app, "revenue": 3999.0,
                "coupon": "NEW20", "discount": 20.0, "shipping": 0.0, "payment_method": "alipay"}),
            ),
            event(
                "Order Completed",
                20,
                json!({"affiliation": app, "revenue": 259.0,
                "shipping": 0.0, "payment_method": "wechat_pay"}),
            ),
            event(
                "Order Completed",
                10,
                json!({"affiliation": "Cohort Shop Web", "revenue": 99.0,
                "shipping": 10.0, "payment_method": "wechat_pay"}),
            ),
            event(
                "Order Completed",
                2,
                json!({"affiliation": app, "revenue": 129.0,
                "shipping": 0.0, "payment_method": "alipay"}),
            ),
            event(
                "Product Viewed",
                3,
                json!({"category": "美妆", "price": 350.0}),
            ),
            event(
                "Product Viewed",
                2,
                json!({"category": "美妆", "price": 129.0}),
            ),
            event(
                "Product Viewed",
                1,
                json!({"category": "美妆", "price": 950.0}),
            ),
            event("Application Opened", 1, json!({"version": "5.4.0"})),
        ];
        let computed = ComputedTraits {
            first_seen: at(121),
            last_seen: at(1),
            event_count: 40,
            event_counts: BTreeMap::from([
                ("Signed Up".to_string(), 1),
                ("Application Opened".to_string(), 12),
                ("$screen".to_string(), 30),
                ("Product Viewed".to_string(), 25),
            ]),
            orders: 4,
            total_revenue: 4486.0,
            revenue_30d: 487.0,
            orders_30d: 3,
            last_order_at: at(2),
            average_order_value: Some(1121.5),
        };
        Customer {
            traits: traits.as_object().cloned().unwrap_or_default(),
            computed,
            events,
        }
    }

    /// An English-speaking visitor in Toronto who browses on the web and never bought.
    fn sam() -> Customer {
        let traits = json!({"email": "sam.lee@gmail.com", "address": {"city": "Toronto", "country": "CA"},
                            "gender": "male", "marketing_opt_in": false});
        let events = vec![
            event(
                "Product Viewed",
                40,
                json!({"category": "运动", "price": 899.0}),
            ),
            event("Checkout Started", 40, json!({"revenue": 899.0})),
        ];
        let computed = ComputedTraits {
            first_seen: at(60),
            last_seen: at(40),
            event_count: 12,
            event_counts: BTreeMap::from([
                ("$page".to_string(), 9),
                ("Product Viewed".to_string(), 3),
            ]),
            ..ComputedTraits::default()
        };
        Customer {
            traits: traits.as_object().cloned().unwrap_or_default(),
            computed,
            events,
        }
    }

    #[test]
    fn tags_on_hand_built_customers() {
        let tags = builtin_tags();
        let li = li_na();
        for name in [
            "lifecycle:registered",
            "lifecycle:repeat_buyer",
            "lifecycle:active",
            "value:high",
            "value:spender_30d",
            "vip:silver",
            "frequency:regular",
            "frequency:bought_7d",
            "frequency:multi_30d",
            "acquisition:xiaohongshu",
            "acquisition:social",
            "channel:app_buyer",
            "channel:web_buyer",
            "channel:cross_channel_buyer",
            "channel:email_opt_in",
            "channel:login_wechat",
            "payment:alipay",
            "payment:mobile_wallet",
            "device:app_only",
            "device:latest_app",
            "category:beauty",
            "category:beauty_recent",
            "city:tier1",
            "city:mainland_china",
            "discount:coupon_user",
            "discount:welcome_coupon",
            "churn:low",
            "rfm:champions",
            "rfm:top_cluster",
            "rfm:big_spender",
            "gender:female",
            "age:25_34",
            "contact:cn_mobile",
            "contact:qq_mail",
        ] {
            assert!(li.has(&tags, name), "Li Na should be {name}");
        }
        for name in [
            "lifecycle:anonymous",
            "lifecycle:first_time_buyer",
            "lifecycle:loyal",
            "value:top",
            "frequency:weekly",
            "device:web_user",
            "category:phones",
            "city:tier2",
            "city:international",
            "discount:full_price",
            "discount:coupon_only",
            "churn:churned",
            "rfm:lost",
            "age:18_24",
        ] {
            assert!(!li.has(&tags, name), "Li Na should not be {name}");
        }

        let sam = sam();
        for name in [
            "lifecycle:prospect",
            "lifecycle:dormant",
            "value:none",
            "frequency:never",
            "device:web_only",
            "city:international",
            "channel:email_opt_out",
            "gender:male",
            "age:unknown",
            "contact:gmail",
        ] {
            assert!(sam.has(&tags, name), "Sam should be {name}");
        }
        for name in [
            "lifecycle:registered_no_purchase",
            "city:tier1",
            "city:mainland_china",
            "category:sports",
            "churn:medium",
            "discount:checkout_hesitant",
            "rfm:champions",
        ] {
            assert!(!sam.has(&tags, name), "Sam should not be {name}");
        }
    }
}
