//! The generated SQL as text: it parses, and hostile input cannot escape its literals.

mod common;

use cohort_segment::to_sql;
use common::{cond, now};
use serde_json::{Value, json};
use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

const HOSTILE: [&str; 7] = [
    "x' OR '1'='1",
    "'); DROP TABLE profiles; --",
    r"\'; DROP TABLE profiles; --",
    r"\\'; DROP TABLE profiles; /*",
    "\"; DROP TABLE profiles; --",
    "a\n'; DROP TABLE profiles;\n--",
    "上海'||(SELECT DROP)||'",
];

/// Conditions carrying `text` in every field that reaches SQL.
fn carrying(text: &str) -> Vec<Value> {
    vec![
        json!({"type": "trait", "key": text, "op": "eq", "value": text}),
        json!({"type": "trait", "key": text, "op": "contains", "value": text}),
        json!({"type": "trait", "key": text, "op": "in", "value": [text, text]}),
        json!({"type": "trait", "key": text, "op": "between", "value": [text, text]}),
        json!({"type": "trait", "key": text, "op": "starts_with", "value": text}),
        json!({"type": "computed", "key": format!("event_counts.{text}"), "op": "gt", "value": 1}),
        json!({"type": "event", "name": text, "where": [
            {"property": text, "op": "ne", "value": text},
            {"property": text, "op": "gt", "value": 3},
            {"property": text, "op": "is_true"}]}),
        json!({"type": "followed_by", "first": text, "then": text, "within_hours": 2}),
        json!({"type": "not_followed_by", "first": text, "then": text, "within_hours": 2}),
        json!({"type": "in_segment", "segment": text}),
    ]
}

fn words(dialect: &dyn Dialect, sql: &str) -> Vec<String> {
    Tokenizer::new(dialect, sql)
        .tokenize()
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.value.to_uppercase()),
            _ => None,
        })
        .collect()
}

#[test]
fn hostile_text_stays_inside_string_literals() {
    for text in HOSTILE {
        for v in carrying(text) {
            let sql = to_sql(&cond(v.clone()), now()).unwrap();
            // MySQL's dialect treats backslashes as escapes, the others do not: a literal must
            // close in the same place under both readings.
            let dialects: [&dyn Dialect; 3] =
                [&GenericDialect {}, &PostgreSqlDialect {}, &MySqlDialect {}];
            for dialect in dialects {
                let words = words(dialect, &sql);
                assert!(
                    !words.contains(&"DROP".to_string()),
                    "{dialect:?} {v}\n{sql}"
                );
            }
            let statements = Parser::parse_sql(&GenericDialect {}, &sql).unwrap();
            assert_eq!(statements.len(), 1, "{sql}");
        }
    }
}

#[test]
fn backslashes_are_spelled_with_chr() {
    let sql = to_sql(
        &cond(json!({"type": "in_segment", "segment": r"a\b"})),
        now(),
    )
    .unwrap();
    assert_eq!(
        sql,
        "SELECT DISTINCT customer_id FROM memberships WHERE segment = ('a' || chr(92) || 'b')"
    );
}

#[test]
fn a_full_segment_compiles_to_one_parseable_query() {
    let c = cond(json!({"type": "and", "conditions": [
        {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5000},
        {"type": "event", "name": "Order Completed", "window": {"last_days": 30}},
        {"type": "not", "condition": {"type": "or", "conditions": [
            {"type": "in_segment", "segment": "churned"},
            {"type": "trait", "key": "email", "op": "not_exists"}]}}
    ]}));
    let sql = to_sql(&c, now()).unwrap();
    assert_eq!(
        sql,
        "SELECT customer_id FROM profiles WHERE revenue_30d > 5000.0 AND customer_id IN \
         (SELECT customer_id FROM events WHERE name = 'Order Completed' \
         AND \"timestamp\" >= TIMESTAMP '2026-02-13T12:00:00Z' AND \"date\" >= DATE '2026-02-13' \
         GROUP BY customer_id HAVING COUNT(*) >= 1) AND customer_id IN \
         (SELECT customer_id FROM profiles EXCEPT ((SELECT DISTINCT customer_id FROM memberships WHERE segment = 'churned') UNION \
         (SELECT customer_id FROM profiles EXCEPT (SELECT customer_id FROM profile_traits WHERE \"key\" = 'email'))))"
    );
    // Without a test on a profiles column, the children's sets are intersected.
    let sql = to_sql(
        &cond(json!({"type": "and", "conditions": [
            {"type": "trait", "key": "plan", "op": "eq", "value": "pro"},
            {"type": "computed", "key": "revenue_30d", "op": "ne", "value": 0}
        ]})),
        now(),
    )
    .unwrap();
    assert!(sql.contains(") INTERSECT ("), "{sql}");
    assert_eq!(
        Parser::parse_sql(&GenericDialect {}, &sql).unwrap().len(),
        1
    );
}
