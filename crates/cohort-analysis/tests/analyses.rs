//! Every analysis against a real lake in a temporary directory. Time series
//! are checked against a plain Rust computation over the same fixture events;
//! funnels and retention against hand-built journeys with hand-counted
//! answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use cohort_analysis::{
    ActiveRequest, AnalysisError, Breakdown, ConversionWindow, EventSpec, FunnelRequest,
    FunnelStep, GroupKey, Interval, PropertyFilter, Retention, RetentionCohort, RetentionPeriod,
    RetentionRequest, RevenueRequest, RunOptions, Trends, TrendsRequest, escape_key,
};
use cohort_lake::arrow::array::TimestampMicrosecondArray;
use cohort_lake::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use cohort_lake::{
    Lake, LakeEvent, LakeWriter, StateError, StateTables, identities_schema, memberships_schema,
    profile_traits_schema, profiles_schema,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, m, d).unwrap_or_default()
}

fn at(m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, m, d, h, min, 0)
        .single()
        .unwrap_or_default()
}

fn ev(seq: i64, customer: Option<i64>, when: DateTime<Utc>, name: &str, props: Value) -> LakeEvent {
    LakeEvent {
        seq,
        source_id: 1,
        message_id: format!("m-{seq}"),
        customer_id: customer,
        kind: if name.starts_with('$') {
            "page"
        } else {
            "track"
        }
        .into(),
        name: name.into(),
        timestamp: when,
        received_at: when,
        user_id: customer.map(|c| format!("u{c}")),
        anonymous_id: None,
        properties: props,
        context: json!({}).into(),
        traits: Value::Null.into(),
    }
}

/// The event with this `context`.
fn in_context(mut e: LakeEvent, context: Value) -> LakeEvent {
    e.context = context.into();
    e
}

/// Traits and segment memberships for breakdowns and segments.
#[derive(Default)]
struct TestState {
    traits: Vec<(i64, &'static str, &'static str)>,
    members: Vec<(&'static str, i64)>,
}

impl StateTables for TestState {
    fn profiles(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(profiles_schema()))
    }
    fn profile_traits(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::try_new(
            profile_traits_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    self.traits.iter().map(|t| t.0),
                )),
                Arc::new(StringArray::from_iter_values(
                    self.traits.iter().map(|t| t.1),
                )),
                Arc::new(StringArray::from_iter_values(
                    self.traits.iter().map(|t| t.2),
                )),
                Arc::new(Float64Array::from(vec![None; self.traits.len()])),
            ],
        )?)
    }
    fn identities(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::new_empty(identities_schema()))
    }
    fn memberships(&self) -> Result<RecordBatch, StateError> {
        Ok(RecordBatch::try_new(
            memberships_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    self.members.iter().map(|m| m.0),
                )),
                Arc::new(Int64Array::from_iter_values(
                    self.members.iter().map(|m| m.1),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![0i64; self.members.len()])
                        .with_timezone("UTC"),
                ),
            ],
        )?)
    }
}

fn lake_with(
    events: &[LakeEvent],
    state: TestState,
) -> Result<(tempfile::TempDir, Lake), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut writer = LakeWriter::open(dir.path())?;
    writer.append(events)?;
    let lake = Lake::open(dir.path())?.with_state(Arc::new(state));
    Ok((dir, lake))
}

/// A lake without traits or segments.
fn lake_of(events: &[LakeEvent]) -> Result<(tempfile::TempDir, Lake), Box<dyn std::error::Error>> {
    lake_with(events, TestState::default())
}

fn opts() -> RunOptions {
    RunOptions::default()
}

/// Event trends of a request given as its JSON body.
async fn trends_of(lake: &Lake, body: Value) -> Result<Trends, Box<dyn std::error::Error>> {
    let request: TrendsRequest = serde_json::from_value(body)?;
    Ok(cohort_analysis::trends(lake, &request, &opts()).await?)
}

// ---------------------------------------------------------------------------
// Time series over a generated shop, checked against a Rust computation.

const CITIES: [(i64, &str); 10] = [
    (1, "上海"),
    (2, "上海"),
    (3, "上海"),
    (4, "上海"),
    (5, "Paris"),
    (6, "Paris"),
    (7, "Paris"),
    (8, "Paris"),
    (9, "Berlin"),
    (10, "Berlin"),
];
const VIP: [i64; 5] = [1, 2, 5, 9, 11];

/// 400 events from 2024-04-20 to 2024-06-18 for customers 1..=12 and some
/// without a customer, from a fixed linear congruential sequence.
fn shop() -> Vec<LakeEvent> {
    let mut state: u64 = 42;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let names = ["App Opened", "Product Viewed", "Order Completed", "$page"];
    let start = at(4, 20, 0, 0);
    (0..400)
        .map(|i| {
            let when = start + Duration::minutes(next(60 * 24 * 60) as i64);
            let customer = match next(13) {
                0 => None,
                c => Some(c as i64),
            };
            let name = names[next(4) as usize];
            let mut props = serde_json::Map::new();
            match next(3) {
                0 => {
                    props.insert("plan".into(), json!("pro"));
                }
                1 => {
                    props.insert("plan".into(), json!("free"));
                }
                _ => {}
            }
            if name == "Order Completed" {
                props.insert("revenue".into(), json!(next(400) as f64 * 0.25));
                props.insert(
                    "currency".into(),
                    json!(if next(2) == 0 { "EUR" } else { "CNY" }),
                );
            }
            ev(i + 1, customer, when, name, Value::Object(props))
        })
        .collect()
}

fn shop_state() -> TestState {
    TestState {
        traits: CITIES.iter().map(|(c, city)| (*c, "city", *city)).collect(),
        members: VIP.iter().map(|c| ("vip", *c)).collect(),
    }
}

fn bucket_of(interval: Interval, d: NaiveDate) -> NaiveDate {
    match interval {
        Interval::Day => d,
        Interval::Week => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
        Interval::Month => d.with_day(1).unwrap_or(d),
    }
}

fn in_range(e: &LakeEvent, from: NaiveDate, to: NaiveDate) -> bool {
    let d = e.timestamp.date_naive();
    d >= from && d < to
}

fn city(customer: Option<i64>) -> Option<&'static str> {
    CITIES
        .iter()
        .find(|(c, _)| Some(*c) == customer)
        .map(|(_, city)| *city)
}

fn plan(e: &LakeEvent) -> Option<String> {
    e.properties
        .get("plan")
        .and_then(Value::as_str)
        .map(String::from)
}

/// Distinct customers per bucket and over the whole range, counted directly.
#[derive(Default)]
struct Distinct {
    per: HashMap<NaiveDate, HashSet<i64>>,
    all: HashSet<i64>,
}

impl Distinct {
    fn add(&mut self, interval: Interval, e: &LakeEvent, customer: i64) {
        self.per
            .entry(bucket_of(interval, e.timestamp.date_naive()))
            .or_default()
            .insert(customer);
        self.all.insert(customer);
    }

    /// The count of each bucket of an axis.
    fn per_bucket(&self, buckets: &[NaiveDate]) -> Vec<u64> {
        buckets
            .iter()
            .map(|b| self.per.get(b).map_or(0, |s| s.len() as u64))
            .collect()
    }
}

/// Top `limit` groups by the size of their set, ties by name.
fn top<T>(sizes: &HashMap<String, HashSet<T>>, limit: usize) -> Vec<String> {
    let mut ranked: Vec<(&String, usize)> = sizes.iter().map(|(k, v)| (k, v.len())).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(limit)
        .map(|(k, _)| k.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn active_customers_match_a_direct_count() -> TestResult {
    let events = shop();
    let (_dir, lake) = lake_with(&events, shop_state())?;
    for (interval, from, to) in [
        (Interval::Day, day(5, 1), day(5, 15)),
        (Interval::Week, day(5, 1), day(6, 1)),
        (Interval::Month, day(4, 15), day(6, 15)),
    ] {
        for segment in [None, Some("vip")] {
            for event in [None, Some("Order Completed")] {
                let request = ActiveRequest {
                    from,
                    to,
                    interval,
                    event: event.map(String::from),
                    segment: segment.map(String::from),
                    breakdown: None,
                    breakdown_limit: None,
                };
                let result = cohort_analysis::active_customers(&lake, &request, &opts()).await?;
                let mut direct = Distinct::default();
                for e in &events {
                    let Some(c) = e.customer_id else { continue };
                    if !in_range(e, from, to)
                        || event.is_some_and(|n| n != e.name)
                        || (segment.is_some() && !VIP.contains(&c))
                    {
                        continue;
                    }
                    direct.add(interval, e, c);
                }
                let expected = direct.per_bucket(&result.buckets);
                let what = format!("{interval:?} {segment:?} {event:?}");
                assert_eq!(result.series.len(), 1, "{what}");
                assert_eq!(result.series[0].customers, expected, "{what}");
                assert_eq!(result.series[0].total, direct.all.len() as u64, "{what}");
                // Every bucket of the direct count is on the axis.
                assert!(
                    direct.per.keys().all(|b| result.buckets.contains(b)),
                    "{what}"
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn week_and_month_buckets_start_on_monday_and_the_first() -> TestResult {
    let (_dir, lake) = lake_with(&shop(), shop_state())?;
    let week = cohort_analysis::active_customers(
        &lake,
        &serde_json::from_value(
            json!({"from": "2024-05-01", "to": "2024-05-14", "interval": "week"}),
        )?,
        &opts(),
    )
    .await?;
    assert_eq!(week.buckets, vec![day(4, 29), day(5, 6), day(5, 13)]);
    let month = cohort_analysis::active_customers(
        &lake,
        &serde_json::from_value(
            json!({"from": "2024-04-20", "to": "2024-06-02", "interval": "month"}),
        )?,
        &opts(),
    )
    .await?;
    assert_eq!(month.buckets, vec![day(4, 1), day(5, 1), day(6, 1)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn active_customers_by_trait_keep_the_top_groups() -> TestResult {
    let events = shop();
    let (_dir, lake) = lake_with(&events, shop_state())?;
    let (from, to) = (day(5, 1), day(6, 1));
    let request = ActiveRequest {
        from,
        to,
        interval: Interval::Week,
        event: None,
        segment: None,
        breakdown: Some(Breakdown::Trait("city".into())),
        breakdown_limit: Some(2),
    };
    let result = cohort_analysis::active_customers(&lake, &request, &opts()).await?;
    let mut by_city: HashMap<String, HashSet<i64>> = HashMap::new();
    for e in events.iter().filter(|e| in_range(e, from, to)) {
        if let (Some(c), Some(city)) = (e.customer_id, city(e.customer_id)) {
            by_city.entry(city.to_owned()).or_default().insert(c);
        }
    }
    let top = top(&by_city, 2);
    let key_of = |c: i64| match city(Some(c)) {
        None => GroupKey::None,
        Some(city) if top.iter().any(|t| t == city) => GroupKey::Value(city.to_owned()),
        Some(_) => GroupKey::Other,
    };
    let mut expected_groups: Vec<GroupKey> = top.iter().cloned().map(GroupKey::Value).collect();
    expected_groups.extend([GroupKey::None, GroupKey::Other]);
    let groups: Vec<GroupKey> = result.series[1..]
        .iter()
        .filter_map(|s| s.group.clone())
        .collect();
    assert_eq!(groups, expected_groups);
    for series in &result.series[1..] {
        let Some(group) = &series.group else {
            return Err("a breakdown series without a group".into());
        };
        let mut direct = Distinct::default();
        for e in events.iter().filter(|e| in_range(e, from, to)) {
            let Some(c) = e.customer_id else { continue };
            if key_of(c) == *group {
                direct.add(Interval::Week, e, c);
            }
        }
        let expected = direct.per_bucket(&result.buckets);
        assert_eq!(series.customers, expected, "{}", series.label);
        assert_eq!(series.total, direct.all.len() as u64, "{}", series.label);
    }
    // Trait groups partition the customers: they add up to `all`.
    let sum: u64 = result.series[1..].iter().map(|s| s.total).sum();
    assert_eq!(sum, result.series[0].total);
    let table = result.to_table();
    assert!(
        table.contains("上海") && table.contains("(other)"),
        "{table}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn trends_count_events_and_customers_per_event_and_group() -> TestResult {
    let events = shop();
    let (_dir, lake) = lake_with(&events, shop_state())?;
    let (from, to) = (day(5, 1), day(5, 22));
    let names = ["Product Viewed", "$page"];
    let request = TrendsRequest {
        from,
        to,
        interval: Interval::Week,
        events: names.iter().map(|s| s.to_string()).collect(),
        filters: vec![],
        segment: None,
        breakdown: Some(Breakdown::Property("plan".into())),
        breakdown_limit: Some(1),
    };
    let result = cohort_analysis::trends(&lake, &request, &opts()).await?;
    let selected: Vec<&LakeEvent> = events
        .iter()
        .filter(|e| in_range(e, from, to) && names.contains(&e.name.as_str()))
        .collect();
    // Groups are ranked by events across both names.
    let mut by_plan: HashMap<String, HashSet<i64>> = HashMap::new();
    for e in &selected {
        if let Some(p) = plan(e) {
            by_plan.entry(p).or_default().insert(e.seq);
        }
    }
    let top = top(&by_plan, 1);
    let key_of = |e: &LakeEvent| match plan(e) {
        None => GroupKey::None,
        Some(p) if top.contains(&p) => GroupKey::Value(p),
        Some(_) => GroupKey::Other,
    };
    assert_eq!(result.series.len(), 2 * 4, "{:?}", result.series);
    for series in &result.series {
        let mine: Vec<&&LakeEvent> = selected
            .iter()
            .filter(|e| e.name == series.event)
            .filter(|e| series.group.as_ref().is_none_or(|g| key_of(e) == *g))
            .collect();
        let mut events_per = vec![0u64; result.buckets.len()];
        let mut customers_per = vec![HashSet::new(); result.buckets.len()];
        for e in &mine {
            let b = bucket_of(Interval::Week, e.timestamp.date_naive());
            let i = result
                .buckets
                .iter()
                .position(|x| *x == b)
                .ok_or("bucket missing")?;
            events_per[i] += 1;
            if let Some(c) = e.customer_id {
                customers_per[i].insert(c);
            }
        }
        let customers: Vec<u64> = customers_per.iter().map(|s| s.len() as u64).collect();
        let total_customers: HashSet<i64> = mine.iter().filter_map(|e| e.customer_id).collect();
        assert_eq!(series.events, events_per, "{}", series.label);
        assert_eq!(series.customers, customers, "{}", series.label);
        assert_eq!(series.total_events, mine.len() as u64, "{}", series.label);
        assert_eq!(
            series.total_customers,
            total_customers.len() as u64,
            "{}",
            series.label
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn trend_filters_and_segments() -> TestResult {
    let events = shop();
    let (_dir, lake) = lake_with(&events, shop_state())?;
    let (from, to) = (day(4, 1), day(7, 1));
    let request: TrendsRequest = serde_json::from_value(json!({
        "from": "2024-04-01", "to": "2024-07-01", "interval": "month",
        "events": ["App Opened"], "segment": "vip",
        "filters": [{"property": "plan", "equals": "free"}]
    }))?;
    let result = cohort_analysis::trends(&lake, &request, &opts()).await?;
    let expected = events
        .iter()
        .filter(|e| in_range(e, from, to) && e.name == "App Opened")
        .filter(|e| plan(e).as_deref() == Some("free"))
        .filter(|e| e.customer_id.is_some_and(|c| VIP.contains(&c)))
        .count() as u64;
    assert!(expected > 0);
    assert_eq!(result.series[0].total_events, expected);
    assert_eq!(result.series[0].events.iter().sum::<u64>(), expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn revenue_orders_buyers_and_average_order_value() -> TestResult {
    let events = shop();
    let (_dir, lake) = lake_with(&events, shop_state())?;
    let (from, to) = (day(4, 1), day(7, 1));
    let request = RevenueRequest {
        from,
        to,
        interval: Interval::Month,
        order_event: "Order Completed".into(),
        filters: vec![],
        segment: None,
        breakdown: Some(Breakdown::Property("currency".into())),
        breakdown_limit: None,
    };
    let result = cohort_analysis::revenue(&lake, &request, &opts()).await?;
    assert_eq!(result.buckets, vec![day(4, 1), day(5, 1), day(6, 1)]);
    for series in &result.series {
        let orders: Vec<&LakeEvent> = events
            .iter()
            .filter(|e| in_range(e, from, to) && e.name == "Order Completed")
            .filter(|e| {
                series.group.as_ref().is_none_or(|g| {
                    *g == GroupKey::Value(
                        e.properties["currency"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
            })
            .collect();
        for (i, b) in result.buckets.iter().enumerate() {
            let here: Vec<&&LakeEvent> = orders
                .iter()
                .filter(|e| bucket_of(Interval::Month, e.timestamp.date_naive()) == *b)
                .collect();
            // Revenues are multiples of 0.25: sums are exact in binary.
            let revenue: f64 = here
                .iter()
                .map(|e| e.properties["revenue"].as_f64().unwrap_or(0.0))
                .sum();
            let buyers: HashSet<i64> = here.iter().filter_map(|e| e.customer_id).collect();
            assert_eq!(series.revenue[i], revenue, "{} {b}", series.label);
            assert_eq!(series.orders[i], here.len() as u64, "{} {b}", series.label);
            assert_eq!(
                series.buyers[i],
                buyers.len() as u64,
                "{} {b}",
                series.label
            );
            let aov = (!here.is_empty()).then(|| revenue / here.len() as f64);
            assert_eq!(series.average_order_value[i], aov, "{} {b}", series.label);
        }
        let revenue: f64 = orders
            .iter()
            .map(|e| e.properties["revenue"].as_f64().unwrap_or(0.0))
            .sum();
        assert_eq!(series.totals.revenue, revenue);
        assert_eq!(series.totals.orders, orders.len() as u64);
    }
    let labels: Vec<&str> = result.series.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(
        labels.contains(&"EUR") && labels.contains(&"CNY"),
        "{labels:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_ranges_give_empty_or_zero_series() -> TestResult {
    let (_dir, lake) = lake_with(&shop(), shop_state())?;
    let empty: ActiveRequest =
        serde_json::from_value(json!({"from": "2024-05-01", "to": "2024-05-01"}))?;
    let result = cohort_analysis::active_customers(&lake, &empty, &opts()).await?;
    assert!(result.buckets.is_empty());
    assert_eq!(result.series[0].total, 0);
    // A range before any event: every bucket is there, at zero.
    let quiet: RevenueRequest = serde_json::from_value(
        json!({"from": "2023-01-01", "to": "2023-01-04", "breakdown": {"property": "currency"}}),
    )?;
    let result = cohort_analysis::revenue(&lake, &quiet, &opts()).await?;
    assert_eq!(result.buckets.len(), 3);
    assert_eq!(result.series.len(), 1);
    assert_eq!(result.series[0].revenue, vec![0.0; 3]);
    assert_eq!(result.series[0].average_order_value, vec![None; 3]);
    let funnel: FunnelRequest = serde_json::from_value(json!({
        "from": "2023-01-01", "to": "2023-01-04",
        "steps": [{"event": "App Opened"}, {"event": "Order Completed"}]
    }))?;
    let result = cohort_analysis::funnel(&lake, &funnel, &opts()).await?;
    assert_eq!(result.steps[0].customers, 0);
    assert_eq!(result.steps[1].conversion_from_previous, None);
    let retention: RetentionRequest = serde_json::from_value(json!({
        "from": "2023-01-01", "to": "2023-01-03",
        "first_event": {"event": "App Opened"}, "returning_event": {"event": "App Opened"}
    }))?;
    let result = cohort_analysis::retention(&lake, &retention, &opts()).await?;
    assert_eq!(result.cohorts.len(), 2);
    assert_eq!(result.total.customers, 0);
    assert_eq!(result.total.percentages[0], None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn user_text_is_escaped_not_executed() -> TestResult {
    let nasty = "it's \"q\" \\ ; -- ') OR 1=1 -- a.b";
    let events = vec![
        in_context(
            ev(1, Some(1), at(5, 1, 10, 0), nasty, json!({nasty: nasty})),
            json!({nasty: {nasty: "deep"}}),
        ),
        ev(2, Some(2), at(5, 1, 11, 0), nasty, json!({nasty: "other"})),
        ev(3, Some(3), at(5, 1, 12, 0), "Plain", json!({})),
    ];
    // A path of the one key `nasty`, and of `nasty` within `nasty`.
    let key = escape_key(nasty);
    let deep = format!("{key}.{key}");
    let (_dir, lake) = lake_of(&events)?;
    let request = TrendsRequest {
        from: day(5, 1),
        to: day(5, 2),
        interval: Interval::Day,
        events: vec![nasty.into()],
        filters: vec![PropertyFilter::on_property(key.clone(), json!(nasty))],
        segment: None,
        breakdown: Some(Breakdown::Property(key.clone())),
        breakdown_limit: None,
    };
    let result = cohort_analysis::trends(&lake, &request, &opts()).await?;
    assert_eq!(result.series[0].events, vec![1]);
    assert_eq!(result.series[1].group, Some(GroupKey::Value(nasty.into())));
    let mut request = request;
    request.filters = vec![PropertyFilter::on_context(deep.clone(), json!("deep"))];
    request.breakdown = Some(Breakdown::Context(deep));
    let result = cohort_analysis::trends(&lake, &request, &opts()).await?;
    assert_eq!(result.series[0].events, vec![1]);
    assert_eq!(result.series[1].group, Some(GroupKey::Value("deep".into())));
    let segment = ActiveRequest {
        from: day(5, 1),
        to: day(5, 2),
        interval: Interval::Day,
        event: None,
        segment: Some(nasty.into()),
        breakdown: Some(Breakdown::Trait(nasty.into())),
        breakdown_limit: None,
    };
    let result = cohort_analysis::active_customers(&lake, &segment, &opts()).await?;
    assert_eq!(result.series[0].total, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn number_and_boolean_filters() -> TestResult {
    let events = vec![
        ev(
            1,
            Some(1),
            at(5, 1, 10, 0),
            "Rated",
            json!({"stars": 5, "verified": true}),
        ),
        ev(
            2,
            Some(2),
            at(5, 1, 11, 0),
            "Rated",
            json!({"stars": 5.0, "verified": false}),
        ),
        ev(
            3,
            Some(3),
            at(5, 1, 12, 0),
            "Rated",
            json!({"stars": "5", "verified": "true"}),
        ),
        ev(4, Some(4), at(5, 1, 13, 0), "Rated", json!({"stars": 4.5})),
    ];
    let (_dir, lake) = lake_of(&events)?;
    let count = async |filter: Value| {
        let body = json!({
            "from": "2024-05-01", "to": "2024-05-02", "events": ["Rated"], "filters": [filter]
        });
        Ok::<u64, Box<dyn std::error::Error>>(trends_of(&lake, body).await?.series[0].total_events)
    };
    // Numbers compare numerically, numeric strings included (as the lake's typed columns).
    assert_eq!(count(json!({"property": "stars", "equals": 5})).await?, 3);
    assert_eq!(count(json!({"property": "stars", "equals": 4.5})).await?, 1);
    assert_eq!(count(json!({"property": "stars", "equals": "5"})).await?, 2);
    // Booleans match booleans and the strings "true" / "false".
    assert_eq!(
        count(json!({"property": "verified", "equals": true})).await?,
        2
    );
    assert_eq!(
        count(json!({"property": "verified", "equals": false})).await?,
        1
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Funnels over hand-built journeys.

const VIEW: &str = "Viewed";
const ADD: &str = "Added";
const BUY: &str = "Bought";

/// See `funnel_over_hand_built_journeys` for what each customer does.
fn journeys() -> Vec<LakeEvent> {
    let mut seq = 0;
    let mut e = |c: i64, when: DateTime<Utc>, name: &str, props: Value| {
        seq += 1;
        ev(seq, Some(c), when, name, props)
    };
    let eur = || json!({"currency": "EUR"});
    vec![
        // 1: A → B → C, 1 h and 2 h.
        e(1, at(5, 1, 10, 0), VIEW, json!({"source": "ads"})),
        e(1, at(5, 1, 10, 30), "$page", json!({})),
        e(1, at(5, 1, 11, 0), ADD, json!({})),
        e(1, at(5, 1, 12, 0), BUY, eur()),
        // 2: B before A: step 1 only.
        e(2, at(5, 1, 9, 0), ADD, json!({})),
        e(2, at(5, 1, 10, 0), VIEW, json!({"source": "ads"})),
        // 3: C exactly at the window's end (24 h): converts; 12 h and 24 h.
        e(3, at(5, 2, 0, 0), VIEW, json!({"source": "email"})),
        e(3, at(5, 2, 12, 0), ADD, json!({})),
        e(3, at(5, 3, 0, 0), BUY, eur()),
        // 4: C one minute past the window: step 2, 1 h.
        e(4, at(5, 2, 0, 0), VIEW, json!({"source": "email"})),
        e(4, at(5, 2, 1, 0), ADD, json!({})),
        e(4, at(5, 3, 0, 1), BUY, eur()),
        // 5: the first attempt times out, the second converts: 1 h and 3 h, source ads.
        e(5, at(5, 3, 0, 0), VIEW, json!({"source": "seo"})),
        e(5, at(5, 4, 0, 0), VIEW, json!({"source": "ads"})),
        e(5, at(5, 4, 1, 0), ADD, json!({})),
        e(5, at(5, 4, 3, 0), BUY, eur()),
        // 6: step 1 before the range: not in the funnel.
        e(6, at(4, 30, 23, 0), VIEW, json!({"source": "ads"})),
        e(6, at(5, 1, 1, 0), ADD, json!({})),
        e(6, at(5, 1, 2, 0), BUY, eur()),
        // 7: starts on the range's last day, finishes after it: 2 h and 3 h.
        e(7, at(5, 7, 23, 0), VIEW, json!({})),
        e(7, at(5, 8, 1, 0), ADD, json!({})),
        e(7, at(5, 8, 2, 0), BUY, eur()),
        // 8: step 1 twice, then B: step 2, 2 h from the first A, source email.
        e(8, at(5, 5, 10, 0), VIEW, json!({"source": "email"})),
        e(8, at(5, 5, 11, 0), VIEW, json!({"source": "ads"})),
        e(8, at(5, 5, 12, 0), ADD, json!({})),
        // 9: the steps backwards: step 1 only.
        e(9, at(5, 5, 10, 0), BUY, eur()),
        e(9, at(5, 5, 11, 0), ADD, json!({})),
        e(9, at(5, 5, 12, 0), VIEW, json!({"source": "seo"})),
        // 10: C in the wrong currency does not match step 3: step 2, 30 min.
        e(10, at(5, 6, 10, 0), VIEW, json!({"source": "ads"})),
        e(10, at(5, 6, 10, 30), ADD, json!({})),
        e(10, at(5, 6, 11, 0), BUY, json!({"currency": "USD"})),
        // 11: B and A at the same instant, B ingested first: step 1 only.
        e(11, at(5, 6, 9, 0), ADD, json!({})),
        e(11, at(5, 6, 9, 0), VIEW, json!({})),
    ]
}

fn funnel_request() -> FunnelRequest {
    FunnelRequest {
        from: day(5, 1),
        to: day(5, 8),
        steps: vec![
            EventSpec::named(VIEW),
            EventSpec::named(ADD),
            EventSpec {
                event: BUY.into(),
                filters: vec![PropertyFilter::on_property("currency", json!("EUR"))],
            },
        ],
        window: ConversionWindow::Days(1),
        segment: None,
        breakdown: None,
        breakdown_limit: None,
    }
}

const HOUR: f64 = 3600.0;

/// Customers per step.
fn customers(steps: &[FunnelStep]) -> Vec<u64> {
    steps.iter().map(|s| s.customers).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn funnel_over_hand_built_journeys() -> TestResult {
    let (_dir, lake) = lake_of(&journeys())?;
    let result = cohort_analysis::funnel(&lake, &funnel_request(), &opts()).await?;
    // Step 1: 1, 2, 3, 4, 5, 7, 8, 9, 10, 11. Step 2: 1, 3, 4, 5, 7, 8, 10. Step 3: 1, 3, 5, 7.
    assert_eq!(customers(&result.steps), vec![10, 7, 4]);
    assert_eq!(result.steps[1].conversion_from_previous, Some(0.7));
    assert_eq!(result.steps[2].conversion_from_previous, Some(4.0 / 7.0));
    assert_eq!(result.steps[2].conversion_from_first, Some(0.4));
    assert_eq!(result.steps[0].conversion_from_first, Some(1.0));
    assert_eq!(result.steps[0].median_seconds_from_first, None);
    // Step 2 times: 0.5, 1, 1, 1, 2, 2, 12 h. Step 3: 2, 3, 3, 24 h.
    assert_eq!(result.steps[1].median_seconds_from_first, Some(HOUR));
    assert_eq!(result.steps[2].median_seconds_from_first, Some(3.0 * HOUR));
    assert_eq!(result.window_seconds, 86_400);
    let table = result.to_table();
    assert!(
        table.contains("57.1%") && table.contains("3h 0m"),
        "{table}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn funnel_breakdown_uses_the_chosen_attempts_first_step() -> TestResult {
    let (_dir, lake) = lake_of(&journeys())?;
    let mut request = funnel_request();
    request.breakdown = Some(Breakdown::Property("source".into()));
    request.breakdown_limit = Some(2);
    let result = cohort_analysis::funnel(&lake, &request, &opts()).await?;
    let groups: Vec<(GroupKey, Vec<u64>)> = result
        .breakdown
        .iter()
        .map(|g| (g.group.clone(), customers(&g.steps)))
        .collect();
    // ads: 1, 2, 5 (second attempt), 10. email: 3, 4, 8 (first attempt).
    // none: 7, 11. other (seo): 9.
    assert_eq!(
        groups,
        vec![
            (GroupKey::Value("ads".into()), vec![4, 3, 2]),
            (GroupKey::Value("email".into()), vec![3, 3, 1]),
            (GroupKey::None, vec![2, 1, 1]),
            (GroupKey::Other, vec![1, 0, 0]),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn funnel_segment_window_in_hours_and_repeated_steps() -> TestResult {
    let state = TestState {
        traits: vec![],
        members: vec![("vip", 1), ("vip", 3), ("vip", 5)],
    };
    let (_dir, lake) = lake_with(&journeys(), state)?;
    let mut request = funnel_request();
    request.segment = Some("vip".into());
    let result = cohort_analysis::funnel(&lake, &request, &opts()).await?;
    assert_eq!(customers(&result.steps), vec![3, 3, 3]);
    // A 2-hour window: 3 reaches nothing past step 1; 5 reaches step 2 only.
    let mut request = funnel_request();
    request.window = ConversionWindow::Hours(2);
    let result = cohort_analysis::funnel(&lake, &request, &opts()).await?;
    // Step 2 within 2 h: 1, 4, 5, 7, 8, 10. Step 3 within 2 h: 1.
    assert_eq!(customers(&result.steps), vec![10, 6, 1]);
    // A → A: 5 (24 h apart, the window's edge) and 8 (1 h); median 12.5 h.
    let mut request = funnel_request();
    request.steps = vec![EventSpec::named(VIEW), EventSpec::named(VIEW)];
    let result = cohort_analysis::funnel(&lake, &request, &opts()).await?;
    assert_eq!(result.steps[1].customers, 2);
    assert_eq!(result.steps[1].median_seconds_from_first, Some(12.5 * HOUR));
    Ok(())
}

// ---------------------------------------------------------------------------
// Retention over hand-built journeys.

const UP: &str = "Signed Up";
const ORDER: &str = "Order Completed";

/// See `weekly_retention_over_hand_built_journeys` for what each customer
/// does. Sign-ups carry `utm.source` (nested) and `context.device.type`; the
/// cohort-defining one is the first in the range.
fn weekly_journeys() -> Vec<LakeEvent> {
    let mut seq = 0;
    let mut e =
        |c: i64, when: DateTime<Utc>, name: &str, source: Option<&str>, device: Option<&str>| {
            seq += 1;
            let props = match source {
                Some(s) => json!({"utm": {"source": s}}),
                None => json!({}),
            };
            let context = match device {
                Some(d) => json!({"device": {"type": d}}),
                None => json!({}),
            };
            in_context(ev(seq, Some(c), when, name, props), context)
        };
    let (up, order) = (UP, ORDER);
    // Weeks start on Mondays: May 6, 13, 20, 27, June 3, 10.
    vec![
        // 1: cohort May 6; orders in weeks 0, 1 and 3.
        e(1, at(5, 6, 10, 0), up, Some("ads"), Some("ios")),
        e(1, at(5, 6, 12, 0), order, None, None),
        e(1, at(5, 14, 9, 0), order, None, None),
        e(1, at(5, 27, 0, 0), order, None, None),
        // 2: signs up on Sunday night, orders on Monday: week 1.
        e(2, at(5, 12, 23, 0), up, Some("ads"), Some("web")),
        e(2, at(5, 13, 1, 0), order, None, None),
        // 3: ordered before signing up only.
        e(3, at(5, 7, 9, 0), order, Some("seo"), Some("web")),
        e(3, at(5, 8, 9, 0), up, Some("email"), Some("ios")),
        // 4: cohort May 13; signs up again later (from ads, on the web); two
        //    orders in week 1.
        e(4, at(5, 14, 9, 0), up, Some("email"), Some("android")),
        e(4, at(5, 21, 9, 0), up, Some("ads"), Some("web")),
        e(4, at(5, 21, 10, 0), order, None, None),
        e(4, at(5, 22, 10, 0), order, None, None),
        // 5: signed up before the range too (from ads); the first sign-up in
        //    range counts (May 15, no source); its only later order is in
        //    week 4, past the matrix.
        e(5, at(5, 5, 9, 0), up, Some("ads"), Some("web")),
        e(5, at(5, 15, 11, 0), order, None, None),
        e(5, at(5, 15, 12, 0), up, None, Some("ios")),
        e(5, at(6, 10, 12, 0), order, None, None),
        // 6: signs up at the last minute of the cohort week, orders a minute later.
        e(6, at(5, 19, 23, 59), up, Some("seo"), None),
        e(6, at(5, 20, 0, 0), order, None, None),
        // 7: signs up after the range.
        e(7, at(5, 20, 9, 0), up, Some("ads"), Some("ios")),
        e(7, at(5, 21, 9, 0), order, None, None),
    ]
}

fn weekly_request() -> RetentionRequest {
    RetentionRequest {
        from: day(5, 6),
        to: day(5, 20),
        period: RetentionPeriod::Week,
        periods: Some(3),
        first_event: EventSpec::named(UP),
        returning_event: EventSpec::named(ORDER),
        segment: None,
        breakdown: None,
        breakdown_limit: None,
    }
}

/// Cities of the weekly journeys' customers (5 and 7 have none).
fn weekly_state() -> TestState {
    TestState {
        traits: vec![
            (1, "city", "Paris"),
            (2, "city", "Paris"),
            (3, "city", "Rome"),
            (4, "city", "Berlin"),
            (6, "city", "Berlin"),
        ],
        members: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn weekly_retention_over_hand_built_journeys() -> TestResult {
    let (_dir, lake) = lake_with(&weekly_journeys(), weekly_state())?;
    let request = weekly_request();
    let result = cohort_analysis::retention(&lake, &request, &opts()).await?;
    weekly_matrix(&result);
    assert_eq!(result.total.customers, 6);
    assert!(result.breakdown.is_empty());
    assert_eq!(
        result.cohorts[0].percentages,
        vec![
            Some(100.0 / 3.0),
            Some(200.0 / 3.0),
            Some(0.0),
            Some(100.0 / 3.0)
        ]
    );
    let table = result.to_table();
    assert!(
        table.contains("week 3") && table.contains("2 (66.7%)"),
        "{table}"
    );
    Ok(())
}

/// A matrix's rows as (cohort start, customers, returned per period).
fn rows(cohorts: &[RetentionCohort]) -> Vec<(NaiveDate, u64, Vec<u64>)> {
    cohorts
        .iter()
        .map(|c| (c.start, c.customers, c.returned.clone()))
        .collect()
}

/// A matrix as its rows and the total.
type Matrix = (Vec<(NaiveDate, u64, Vec<u64>)>, (u64, Vec<u64>));

/// The breakdown of a retention result: per group, its key and matrix.
fn groups_of(result: &Retention) -> Vec<(GroupKey, Matrix)> {
    result
        .breakdown
        .iter()
        .map(|g| {
            let total = (g.total.customers, g.total.returned.clone());
            (g.group.clone(), (rows(&g.cohorts), total))
        })
        .collect()
}

/// The overall matrix of the weekly journeys; see
/// `weekly_retention_over_hand_built_journeys`.
fn weekly_matrix(result: &Retention) {
    assert_eq!(
        rows(&result.cohorts),
        vec![
            (day(5, 6), 3, vec![1, 2, 0, 1]),
            (day(5, 13), 3, vec![0, 2, 0, 0]),
        ]
    );
    assert_eq!(result.total.returned, vec![1, 4, 0, 1]);
}

/// The same, broken down: the groups add up to it.
fn weekly_overall(result: &Retention) -> Result<(), Box<dyn std::error::Error>> {
    weekly_matrix(result);
    // Every customer is in one group: the groups add up to the overall matrix.
    for (i, cohort) in result.cohorts.iter().enumerate() {
        let customers: u64 = result
            .breakdown
            .iter()
            .map(|g| g.cohorts[i].customers)
            .sum();
        assert_eq!(customers, cohort.customers);
        for k in 0..=result.periods {
            let returned: u64 = result
                .breakdown
                .iter()
                .map(|g| g.cohorts[i].returned[k])
                .sum();
            assert_eq!(returned, cohort.returned[k]);
        }
    }
    Ok(())
}

/// The weekly retention with a breakdown, whose overall matrix is checked.
async fn weekly_by(
    lake: &Lake,
    breakdown: Breakdown,
    limit: Option<usize>,
) -> Result<Retention, Box<dyn std::error::Error>> {
    let mut request = weekly_request();
    request.breakdown = Some(breakdown);
    request.breakdown_limit = limit;
    let result = cohort_analysis::retention(lake, &request, &opts()).await?;
    weekly_overall(&result)?;
    Ok(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_breakdown_by_a_nested_property_of_the_first_event() -> TestResult {
    let (_dir, lake) = lake_with(&weekly_journeys(), weekly_state())?;
    let result = weekly_by(&lake, Breakdown::Property("utm.source".into()), Some(2)).await?;
    let (may6, may13) = (day(5, 6), day(5, 13));
    let zero = || vec![0, 0, 0, 0];
    // By the cohort-defining sign-up: ads 1, 2 (4's later sign-up and 5's
    // earlier one do not count); email 3, 4; seo 6; none 5. ads and email tie
    // with 2 customers and are the top 2; seo is `other`.
    assert_eq!(
        groups_of(&result),
        vec![
            (
                GroupKey::Value("ads".into()),
                (
                    vec![(may6, 2, vec![1, 2, 0, 1]), (may13, 0, zero())],
                    (2, vec![1, 2, 0, 1])
                )
            ),
            (
                GroupKey::Value("email".into()),
                (
                    vec![(may6, 1, zero()), (may13, 1, vec![0, 1, 0, 0])],
                    (2, vec![0, 1, 0, 0])
                )
            ),
            (
                GroupKey::None,
                (vec![(may6, 0, zero()), (may13, 1, zero())], (1, zero()))
            ),
            (
                GroupKey::Other,
                (
                    vec![(may6, 0, zero()), (may13, 1, vec![0, 1, 0, 0])],
                    (1, vec![0, 1, 0, 0])
                )
            ),
        ]
    );
    let ads = &result.breakdown[0];
    assert_eq!(ads.label, "ads");
    assert_eq!(
        ads.cohorts[0].percentages,
        vec![Some(50.0), Some(100.0), Some(0.0), Some(50.0)]
    );
    assert_eq!(ads.cohorts[1].percentages, vec![None; 4]);
    // Chart-ready JSON: the overall matrix, then one per group.
    let body = serde_json::to_value(&result)?;
    assert_eq!(
        body["breakdown"][0]["group"],
        json!({"kind": "value", "value": "ads"})
    );
    assert_eq!(body["breakdown"][3]["group"], json!({"kind": "other"}));
    assert_eq!(
        body["breakdown"][1]["total"]["returned"],
        json!([0, 1, 0, 0])
    );
    assert_eq!(
        body["breakdown"][1]["cohorts"][1]["percentages"],
        json!([0.0, 100.0, 0.0, 0.0])
    );
    // The table: the overall matrix, then each group's under its label.
    let table = result.to_table();
    let labels: Vec<&str> = table
        .lines()
        .filter(|l| !l.is_empty() && !l.contains("  ") && !l.starts_with('-'))
        .collect();
    assert_eq!(labels, vec!["ads", "email", "(none)", "(other)"], "{table}");
    assert!(table.contains("2 (100.0%)"), "{table}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_breakdown_by_context_and_by_trait() -> TestResult {
    let (_dir, lake) = lake_with(&weekly_journeys(), weekly_state())?;
    let (may6, may13) = (day(5, 6), day(5, 13));
    let zero = || vec![0, 0, 0, 0];
    let one = || vec![0, 1, 0, 0];

    // Device of the cohort-defining sign-up: ios 1, 3, 5; android 4; web 2;
    // none 6 (ties by name: android before web).
    let result = weekly_by(&lake, Breakdown::Context("device.type".into()), None).await?;
    assert_eq!(
        groups_of(&result),
        vec![
            (
                GroupKey::Value("ios".into()),
                (
                    vec![(may6, 2, vec![1, 1, 0, 1]), (may13, 1, zero())],
                    (3, vec![1, 1, 0, 1])
                )
            ),
            (
                GroupKey::Value("android".into()),
                (vec![(may6, 0, zero()), (may13, 1, one())], (1, one()))
            ),
            (
                GroupKey::Value("web".into()),
                (vec![(may6, 1, one()), (may13, 0, zero())], (1, one()))
            ),
            (
                GroupKey::None,
                (vec![(may6, 0, zero()), (may13, 1, one())], (1, one()))
            ),
        ]
    );

    // City trait, top 1: Berlin (4, 6) ties with Paris (1, 2) and wins by
    // name; Paris and Rome (3) are `other`; 5 has no city.
    let result = weekly_by(&lake, Breakdown::Trait("city".into()), Some(1)).await?;
    assert_eq!(
        groups_of(&result),
        vec![
            (
                GroupKey::Value("Berlin".into()),
                (
                    vec![(may6, 0, zero()), (may13, 2, vec![0, 2, 0, 0])],
                    (2, vec![0, 2, 0, 0])
                )
            ),
            (
                GroupKey::None,
                (vec![(may6, 0, zero()), (may13, 1, zero())], (1, zero()))
            ),
            (
                GroupKey::Other,
                (
                    vec![(may6, 3, vec![1, 2, 0, 1]), (may13, 0, zero())],
                    (3, vec![1, 2, 0, 1])
                )
            ),
        ]
    );

    // With a segment and a filter on the first event: only 1, 2, 3 and 4
    // are in the segment; of their cohort-defining sign-ups, those on ios
    // are 1's and 3's.
    let state = TestState {
        traits: vec![],
        members: vec![("s", 1), ("s", 2), ("s", 3), ("s", 4)],
    };
    let (_dir2, lake) = lake_with(&weekly_journeys(), state)?;
    let mut request = weekly_request();
    request.segment = Some("s".into());
    request.first_event.filters = vec![PropertyFilter::on_context("device.type", json!("ios"))];
    request.breakdown = Some(Breakdown::Property("utm.source".into()));
    let result = cohort_analysis::retention(&lake, &request, &opts()).await?;
    assert_eq!(
        groups_of(&result),
        vec![
            (
                GroupKey::Value("ads".into()),
                (
                    vec![(may6, 1, vec![1, 1, 0, 1]), (may13, 0, zero())],
                    (1, vec![1, 1, 0, 1])
                )
            ),
            (
                GroupKey::Value("email".into()),
                (vec![(may6, 1, zero()), (may13, 0, zero())], (1, zero()))
            ),
        ]
    );
    assert_eq!(result.total.customers, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_property_and_context_paths() -> TestResult {
    let visit = "Visited";
    let events = vec![
        in_context(
            ev(
                1,
                Some(1),
                at(5, 1, 10, 0),
                visit,
                json!({"address": {"city": "Paris"}, "utm.source": "ads", "items": [{"sku": "A"}]}),
            ),
            json!({"device": {"type": "ios"}, "os": {"name": "iOS"}}),
        ),
        in_context(
            ev(
                2,
                Some(2),
                at(5, 1, 11, 0),
                visit,
                json!({"address": {"city": "Berlin"}, "utm": {"source": "email"},
                       "items": [{"sku": "A"}, {"sku": "B"}]}),
            ),
            json!({"device": {"type": "android"}, "os": {"name": "Android"}}),
        ),
        in_context(
            ev(
                3,
                Some(3),
                at(5, 1, 12, 0),
                visit,
                json!({"address": {"city": "Paris", "zip": 75001}, "utm": {"source": "ads"}}),
            ),
            json!({"device": {"type": "ios"}, "os": {"name": "iOS", "version": 17}}),
        ),
        // `address` is text here, and there is no context.
        ev(
            4,
            Some(4),
            at(5, 1, 13, 0),
            visit,
            json!({"address": "Paris"}),
        ),
    ];
    let (_dir, lake) = lake_of(&events)?;
    let run = async |filters: Value, breakdown: Value| {
        let body = json!({
            "from": "2024-05-01", "to": "2024-05-02", "events": [visit],
            "filters": filters, "breakdown": breakdown
        });
        let groups: Vec<(String, u64)> = (trends_of(&lake, body).await?.series.iter())
            .map(|s| (s.label.clone(), s.total_events))
            .collect();
        Ok::<_, Box<dyn std::error::Error>>(groups)
    };
    let count = async |filters: Value| {
        Ok::<_, Box<dyn std::error::Error>>(run(filters, Value::Null).await?[0].1)
    };
    let all = |groups: &[(&str, u64)]| -> Vec<(String, u64)> {
        groups
            .iter()
            .map(|(l, n)| {
                (
                    format!("{visit}{}{l}", if l.is_empty() { "" } else { ": " }),
                    *n,
                )
            })
            .collect()
    };
    for (filters, expected) in [
        // Nested property paths; the top-level key still works as before.
        (json!([{"property": "address.city", "equals": "Paris"}]), 2),
        (json!([{"property": "address", "equals": "Paris"}]), 1),
        (json!([{"property": "address.zip", "equals": 75001}]), 1),
        (json!([{"property": "address.zip", "equals": "75001"}]), 1),
        // `utm.source` is the nested key, `utm\.source` the top-level key with a dot.
        (json!([{"property": "utm.source", "equals": "ads"}]), 1),
        (json!([{"property": "utm\\.source", "equals": "ads"}]), 1),
        (json!([{"property": "utm\\.source", "equals": "email"}]), 0),
        // A numeric key indexes an array; a negative one counts from its end.
        (json!([{"property": "items.0.sku", "equals": "A"}]), 2),
        (json!([{"property": "items.1.sku", "equals": "B"}]), 1),
        (json!([{"property": "items.-1.sku", "equals": "B"}]), 1),
        (json!([{"property": "items.-1.sku", "equals": "A"}]), 1),
        // Context paths, alone and with a property filter.
        (json!([{"context": "device.type", "equals": "ios"}]), 2),
        (json!([{"context": "os.version", "equals": 17}]), 1),
        (
            json!([{"context": "os.name", "equals": "iOS"},
                   {"property": "address.city", "equals": "Berlin"}]),
            0,
        ),
        (
            json!([{"context": "os.name", "equals": "Android"},
                   {"property": "address.city", "equals": "Berlin"}]),
            1,
        ),
    ] {
        assert_eq!(count(filters.clone()).await?, expected, "{filters}");
    }
    // Breakdowns by nested paths.
    assert_eq!(
        run(json!([]), json!({"property": "address.city"})).await?,
        all(&[("", 4), ("Paris", 2), ("Berlin", 1), ("(none)", 1)])
    );
    assert_eq!(
        run(json!([]), json!({"context": "device.type"})).await?,
        all(&[("", 4), ("ios", 2), ("android", 1), ("(none)", 1)])
    );
    assert_eq!(
        run(json!([]), json!({"property": "utm\\.source"})).await?,
        all(&[("", 4), ("ads", 1), ("(none)", 3)])
    );
    // An object is grouped by its JSON text (ranked by events, then by text).
    assert_eq!(
        run(
            json!([{"context": "os.name", "equals": "iOS"}]),
            json!({"context": "os"})
        )
        .await?,
        all(&[
            ("", 2),
            (r#"{"name":"iOS","version":17}"#, 1),
            (r#"{"name":"iOS"}"#, 1)
        ])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn daily_retention_of_the_same_event() -> TestResult {
    let open = "App Opened";
    let events = vec![
        // 1: opens twice on day 0 and again on day 2.
        ev(1, Some(1), at(5, 6, 8, 0), open, json!({})),
        ev(2, Some(1), at(5, 6, 9, 0), open, json!({})),
        ev(3, Some(1), at(5, 8, 10, 0), open, json!({})),
        // 2: opens once.
        ev(4, Some(2), at(5, 6, 20, 0), open, json!({})),
        // 3: cohort May 7, back the next day.
        ev(5, Some(3), at(5, 7, 0, 0), open, json!({})),
        ev(6, Some(3), at(5, 8, 0, 0), open, json!({})),
    ];
    let (_dir, lake) = lake_of(&events)?;
    let request: RetentionRequest = serde_json::from_value(json!({
        "from": "2024-05-06", "to": "2024-05-08", "period": "day", "periods": 2,
        "first_event": {"event": open}, "returning_event": {"event": open}
    }))?;
    let result = cohort_analysis::retention(&lake, &request, &opts()).await?;
    assert_eq!(result.cohorts[0].customers, 2);
    assert_eq!(result.cohorts[0].returned, vec![1, 0, 1]);
    assert_eq!(result.cohorts[1].customers, 1);
    assert_eq!(result.cohorts[1].returned, vec![0, 1, 0]);
    assert_eq!(result.cohorts[0].percentages[0], Some(50.0));
    Ok(())
}

// ---------------------------------------------------------------------------
// Bad requests.

/// The field named by the error of an invalid request.
fn bad_field<T>(result: Result<T, AnalysisError>) -> Option<String> {
    result.err().map(|e| match e {
        AnalysisError::Invalid { field, .. } => field,
        other => format!("not invalid: {other}"),
    })
}

/// Why a body is not a `T`.
fn parse_error<T: DeserializeOwned>(body: Value) -> String {
    serde_json::from_value::<T>(body)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// A body with the keys of `extra` added or replaced.
fn with(mut body: Value, extra: &Value) -> Value {
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_name_the_field() -> TestResult {
    let (_dir, lake) = lake_of(&journeys())?;
    let active = |v: Value| serde_json::from_value::<ActiveRequest>(v);
    let backwards = active(json!({"from": "2024-05-02", "to": "2024-05-01"}))?;
    let err = cohort_analysis::active_customers(&lake, &backwards, &opts()).await;
    assert_eq!(bad_field(err).as_deref(), Some("from"));
    let too_long = active(json!({"from": "2000-01-01", "to": "2024-05-01"}))?;
    assert_eq!(bad_field(too_long.validate()).as_deref(), Some("to"));
    let limit = active(json!({"from": "2024-05-01", "to": "2024-05-02", "breakdown_limit": 0}))?;
    assert_eq!(
        bad_field(limit.validate()).as_deref(),
        Some("breakdown_limit")
    );
    let empty_trait =
        active(json!({"from": "2024-05-01", "to": "2024-05-02", "breakdown": {"trait": " "}}))?;
    assert_eq!(
        bad_field(empty_trait.validate()).as_deref(),
        Some("breakdown.trait")
    );

    // Parse errors name the field.
    for (body, needle) in [
        (
            json!({"from": "2024-05-01", "to": "2024-05-02", "interval": "hour"}),
            "interval must be day, week or month",
        ),
        (
            json!({"from": "May 1st", "to": "2024-05-02"}),
            "from must be a date",
        ),
        (
            json!({"from": "2024-05-01", "to": "2024-05-02", "intervall": "day"}),
            "unknown field `intervall`",
        ),
    ] {
        let err = parse_error::<ActiveRequest>(body);
        assert!(err.contains(needle), "{err}");
    }

    let funnel = |steps: Value| {
        serde_json::from_value::<FunnelRequest>(
            json!({"from": "2024-05-01", "to": "2024-05-08", "steps": steps}),
        )
    };
    assert_eq!(
        bad_field(funnel(json!([]))?.validate()).as_deref(),
        Some("steps")
    );
    let eleven: Vec<Value> = (0..11).map(|i| json!({"event": format!("e{i}")})).collect();
    let err = funnel(json!(eleven))?;
    assert_eq!(
        bad_field(cohort_analysis::funnel(&lake, &err, &opts()).await).as_deref(),
        Some("steps")
    );
    let bad_step = funnel(json!([{"event": "a"}, {"event": ""}]))?;
    assert_eq!(
        bad_field(bad_step.validate()).as_deref(),
        Some("steps[1].event")
    );
    let bad_filter = funnel(
        json!([{"event": "a"}, {"event": "b", "filters": [{"property": "x", "equals": {"y": 1}}]}]),
    )?;
    assert_eq!(
        bad_field(bad_filter.validate()).as_deref(),
        Some("steps[1].filters[0].equals")
    );
    let mut zero_window = funnel(json!([{"event": "a"}, {"event": "b"}]))?;
    zero_window.window = ConversionWindow::Hours(0);
    assert_eq!(
        bad_field(zero_window.validate()).as_deref(),
        Some("window.hours")
    );

    let retention_body = json!({"from": "2024-05-01", "to": "2024-05-08",
                                "first_event": {"event": "a"}, "returning_event": {"event": "b"}});
    let retention: RetentionRequest = serde_json::from_value(with(
        retention_body.clone(),
        &json!({"period": "week", "periods": 53}),
    ))?;
    assert_eq!(bad_field(retention.validate()).as_deref(), Some("periods"));
    let err =
        parse_error::<RetentionRequest>(with(retention_body.clone(), &json!({"period": "month"})));
    assert!(err.contains("period must be day or week"), "{err}");

    let trends_body = json!({"from": "2024-05-01", "to": "2024-05-08", "events": ["a"]});
    let trends =
        |extra: Value| serde_json::from_value::<TrendsRequest>(with(trends_body.clone(), &extra));
    let twice = trends(json!({"events": ["a", "a"]}))?;
    assert_eq!(bad_field(twice.validate()).as_deref(), Some("events[1]"));
    let none = trends(json!({"events": []}))?;
    assert_eq!(bad_field(none.validate()).as_deref(), Some("events"));

    // Paths: empty keys, stray backslashes, too deep; property or context.
    let deep = "k.".repeat(cohort_analysis::MAX_PATH_KEYS) + "k";
    for (extra, field) in [
        (
            json!({"breakdown": {"property": "a..b"}}),
            "breakdown.property",
        ),
        (
            json!({"breakdown": {"context": "device."}}),
            "breakdown.context",
        ),
        (
            json!({"breakdown": {"property": "a\\b"}}),
            "breakdown.property",
        ),
        (json!({"breakdown": {"context": deep}}), "breakdown.context"),
        (
            json!({"filters": [{"property": ".plan", "equals": "x"}]}),
            "filters[0].property",
        ),
        (json!({"filters": [{"equals": "x"}]}), "filters[0].property"),
        (
            json!({"filters": [{"property": "a", "context": "b", "equals": "x"}]}),
            "filters[0].context",
        ),
        (
            json!({"filters": [{"property": "a", "equals": 1}, {"context": "os.", "equals": 1}]}),
            "filters[1].context",
        ),
    ] {
        let request = trends(extra.clone())?;
        let err = cohort_analysis::trends(&lake, &request, &opts()).await;
        assert_eq!(bad_field(err).as_deref(), Some(field), "{extra}");
    }
    let err = parse_error::<TrendsRequest>(with(
        trends_body.clone(),
        &json!({"breakdown": {"device": "type"}}),
    ));
    assert!(err.contains("unknown variant `device`"), "{err}");
    let bad_step_path = funnel(
        json!([{"event": "a"}, {"event": "b", "filters": [{"context": "a..b", "equals": 1}]}]),
    )?;
    assert_eq!(
        bad_field(bad_step_path.validate()).as_deref(),
        Some("steps[1].filters[0].context")
    );

    // Retention breakdowns.
    for (extra, field) in [
        (json!({"breakdown_limit": 51}), "breakdown_limit"),
        (json!({"breakdown": {"trait": ""}}), "breakdown.trait"),
        (
            json!({"breakdown": {"property": "utm."}}),
            "breakdown.property",
        ),
        (
            json!({"first_event": {"event": "a", "filters": [{"equals": 1}]}}),
            "first_event.filters[0].property",
        ),
    ] {
        let request: RetentionRequest =
            serde_json::from_value(with(retention_body.clone(), &extra))?;
        let err = cohort_analysis::retention(&lake, &request, &opts()).await;
        assert_eq!(bad_field(err).as_deref(), Some(field), "{extra}");
    }
    Ok(())
}
