//! Properties over random conditions and random customers.

mod common;

use cohort_segment::{Condition, Op, to_sql};
use common::strategies::{TRAIT_KEYS, condition, customers, op_value};
use common::{Customer, now};
use proptest::prelude::*;
use proptest::sample::select;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

fn all_match(people: &[Customer], f: impl Fn(&Customer) -> bool) -> Result<(), TestCaseError> {
    for c in people {
        prop_assert!(f(c), "customer {:?}", c);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn not_inverts_membership(c in condition(), people in customers(4)) {
        let negated = Condition::negate(c.clone());
        all_match(&people, |p| p.matches(&negated, now()) != p.matches(&c, now()))?;
    }

    #[test]
    fn de_morgan_laws_hold(a in condition(), b in condition(), people in customers(4)) {
        let not = Condition::negate;
        let not_and = not(Condition::and(vec![a.clone(), b.clone()]));
        let or_nots = Condition::or(vec![not(a.clone()), not(b.clone())]);
        let not_or = not(Condition::or(vec![a.clone(), b.clone()]));
        let and_nots = Condition::and(vec![not(a), not(b)]);
        all_match(&people, |p| p.matches(&not_and, now()) == p.matches(&or_nots, now()))?;
        all_match(&people, |p| p.matches(&not_or, now()) == p.matches(&and_nots, now()))?;
    }

    #[test]
    fn complement_operators_are_exact_negations(
        key in select(TRAIT_KEYS.to_vec()),
        (op, value) in op_value(),
        people in customers(6),
    ) {
        let complement = match op {
            Op::Eq => Op::Ne,
            Op::Contains => Op::NotContains,
            Op::In => Op::NotIn,
            Op::Exists => Op::NotExists,
            _ => return Ok(()),
        };
        let positive = Condition::Trait { key: key.to_string(), op, value: value.clone() };
        let negative = Condition::Trait { key: key.to_string(), op: complement, value };
        all_match(&people, |p| p.matches(&negative, now()) != p.matches(&positive, now()))?;
    }

    #[test]
    fn conditions_survive_a_json_round_trip(c in condition()) {
        let json = serde_json::to_value(&c).unwrap();
        let back: Condition = serde_json::from_value(json.clone()).unwrap();
        prop_assert_eq!(&back, &c, "{}", json);
    }

    #[test]
    fn valid_conditions_compile_to_one_parseable_statement(c in condition()) {
        prop_assume!(c.validate().is_ok());
        let sql = to_sql(&c, now()).unwrap();
        let statements = Parser::parse_sql(&GenericDialect {}, &sql)
            .map_err(|e| TestCaseError::fail(format!("{e}: {sql}")))?;
        prop_assert_eq!(statements.len(), 1, "{}", sql);
    }
}
