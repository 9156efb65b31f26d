//! `cohort bench journeys`: a million customers waiting in one delay that ends for all of them
//! at once, their SMS sent through the Twilio adapter to a loopback stand-in, beside a floor that
//! posts the same requests to the same kind of sink and does nothing else.
//!
//! One run, in phases, each timed apart (wall, and CPU of the thread or process doing it):
//!
//! 1. **Enter** (setup, not a target): `--customers` customers each send `Trial Started`, which
//!    [`Runner::on_event`] turns into an entry of the journey `trial-ending` (a delay of one
//!    hour, then an SMS), stored in the SQLite journey state (`cohort_store`, on a temporary
//!    data directory). The process's peak RSS (`VmHWM`) is read before and after: its growth
//!    over the customers is the memory each waiting customer costs.
//! 2. **Timer firings**: one hour later, [`Runner::fire_due`] in batches of `--fire-batch`
//!    until nothing is due. Each firing moves the entry out of the delay into the send step
//!    and records the SMS effect in the outbox; each batch is one SQLite transaction
//!    (`SqliteJourneyState::in_one_transaction`, as the journey loop fires).
//!    Beside it, the **timer floor** of this disk: the same number of timers in a bare SQLite
//!    table (WAL, the same `synchronous`), each selected when due, recorded under its
//!    idempotency key and deleted, with a commit per batch and with a commit per firing.
//! 3. **Rule checks and renders, no I/O**: the N effects are read from the outbox once
//!    (untimed), then, on two threads over halves, timed apart: the delivery rules
//!    ([`customer_zone`], [`decide`] with caps and quiet hours, [`RateLimiter::gate`]) for each,
//!    and the Liquid SMS template (a `default` filter, an event property) rendered for each
//!    (the template data built from the customer's traits and the trigger's properties).
//!    Each runs three passes over all effects; the pass with the median wall time is reported.
//!    The customers' traits and send counts are made up in memory, in place of the profile
//!    and ledger reads.
//! 4. **Sends**: a worker thread takes the pending effects from the outbox in batches, decides
//!    and renders each as in phase 3, and hands it to the Tokio runtime, where at most
//!    `--concurrency` [`Sender::send`] calls to the stand-in are in flight; each outcome goes
//!    back to the worker, which completes the effects whose outcomes are in, as
//!    [`RetryPolicy::decide`] says, in one transaction.
//! 5. **Floor**: a bare reqwest client posts the same form bodies (the texts phase 3 rendered),
//!    with the same headers, to a second stand-in at the same concurrency: no state store, no
//!    rules, no rendering. `--floor-first` runs it before the sends.
//!
//! Then the sinks are checked: the stand-in must have received exactly one request per effect
//! key (distinct keys = customers, none twice, none missing, no request failing the stand-in's
//! checks); the floor's stand-in is counted apart. The stand-ins run in this process, on the
//! same runtime and cores as the senders, and keep every request in memory.
//!
//! Everything printed is measured; nothing here judges the numbers.

use crate::BenchJourneysArgs;
use crate::machine::{
    fmt_int, fmt_rate, load_average, peak_rss, print_machine, process_cpu_seconds, rss, status_kb,
    thread_cpu_seconds,
};
use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use cohort_journey::channel::retry::{Decision as Retry, RetryPolicy};
use cohort_journey::channel::standin::{self, Provider, StandIn};
use cohort_journey::channel::{IDEMPOTENCY_KEY, Message, Outcome, Outgoing, Sender, SmsMessage};
use cohort_journey::definition::{ChannelKind, QuietHours, parse_value};
use cohort_journey::delivery::{
    CustomerFacts as DeliveryFacts, Decision, DeliveryRules, PeriodCounts, RateLimiter,
    SendRequest, customer_zone, decide,
};
use cohort_journey::runner::{CustomerFacts, ProcessedEvent, Published, Run, Runner};
use cohort_journey::state::{CustomerId, JourneyStateStore, PendingEffect};
use cohort_journey::template::message::{
    CompiledMessage, MessageParts, MessageTemplate, RenderedMessage,
};
use cohort_profile::ComputedTraits;
use cohort_segment::EventRecord;
use cohort_store::{Durability, SqliteJourneyState, Store, StoreConfig, TimerFloor};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOURNEY: &str = "trial-ending";
/// The SMS channel's name: effects are recorded under it.
const CHANNEL: &str = "sms";
const EVENT: &str = "Trial Started";
const DELAY: TimeDelta = TimeDelta::hours(1);

/// A Chinese marketing SMS of one UCS-2 part: a trait with a `default`, event properties (one
/// with a `default`, one always there).
const TEMPLATE_BODY: &str = "【Cohort】{{ first_name | default: \"顾客\" }}，您的{{ event.plan | default: \"会员\" }}试用1小时后结束，优惠码{{ event.coupon }}续订立减20元。回复TD退订";

/// The workspace's delivery rules: caps over all channels and on SMS, quiet hours with an SMS
/// window of its own, a rate limit on another channel (the SMS channel has none: the bench
/// measures throughput, not a provider's contract).
const RULES: &str = r#"{
  "time_zone": "Asia/Shanghai",
  "caps": {"global": {"day": 3, "week": 10}, "sms": {"day": 2, "month": 20}},
  "quiet_hours": {
    "default": {"start": "21:00", "end": "08:00"},
    "channels": {"sms": {"start": "20:00", "end": "09:00"}}
  },
  "rate_limits": {"sms-transactional": {"per_second": 100}}
}"#;

/// The customers' zones (by their `timezone` trait; every fifth has none and takes the
/// workspace's). At the firing instant, 10:00 UTC, every one of them is outside quiet hours.
const ZONES: [&str; 4] = [
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Europe/Berlin",
];
const FIRST_NAMES: [&str; 5] = ["李雷", "韩梅梅", "王芳", "张伟", "陈静"];
const PLANS: [&str; 2] = ["专业版", "团队版"];

/// Effects read from the outbox per batch by the send worker, and the fewest waiting to be
/// sent before it reads the next batch.
const SEND_BATCH: usize = 2048;
const SEND_LOW_WATER: usize = 512;
/// Outcomes completed in one transaction at most, and how long the worker waits for them.
const SETTLE_BATCH: usize = 256;
const SETTLE_WAIT: Duration = Duration::from_millis(2);

/// When everyone enters (09:00 UTC) and when their delay ends.
fn entered_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn fire_at() -> DateTime<Utc> {
    entered_at() + DELAY
}

fn journey() -> anyhow::Result<Runner> {
    let journey = parse_value(&json!({
        "key": JOURNEY,
        "name": "Trial ending",
        "trigger": {"type": "event", "event": EVENT},
        "steps": [
            {"id": "wait-1h", "type": "delay", "for": "1h", "next": "sms-1"},
            {"id": "sms-1", "type": "send", "channel": CHANNEL, "template": "trial-ending-sms"}
        ]
    }))?;
    Ok(Runner::new(vec![Published {
        journey,
        version: 1,
        run: Run::Entering,
    }])?)
}

fn template() -> anyhow::Result<CompiledMessage> {
    Ok(MessageTemplate::from_value(&json!({"kind": "sms", "body": TEMPLATE_BODY}))?.compile()?)
}

// ---------------------------------------------------------------------------------------------
// The customers, made up from their number

/// What the runner reads of a customer: this journey has no conditions, so nothing but the id.
struct Entrant<'a> {
    id: CustomerId,
    empty: &'a Map<String, Value>,
    computed: &'a ComputedTraits,
}

impl CustomerFacts for Entrant<'_> {
    fn id(&self) -> CustomerId {
        self.id
    }
    fn traits(&self) -> &Map<String, Value> {
        self.empty
    }
    fn computed(&self) -> &ComputedTraits {
        self.computed
    }
    fn events(&self) -> &[EventRecord] {
        &[]
    }
    fn in_segment(&self, _: &str) -> bool {
        false
    }
    fn time_zone(&self) -> chrono_tz::Tz {
        chrono_tz::Asia::Shanghai
    }
    fn in_global_control(&self) -> bool {
        false
    }
    fn experiment_variation(&self, _: &str) -> Option<String> {
        None
    }
}

/// The customer's traits, as the profile would give them: a phone number, a first name for
/// two in three, a time zone for four in five.
fn traits(customer: CustomerId) -> Value {
    let n = customer.unsigned_abs() as usize;
    let mut traits = Map::new();
    traits.insert("id".into(), json!(customer));
    traits.insert("phone".into(), json!(phone(customer)));
    if !n.is_multiple_of(3) {
        traits.insert(
            "first_name".into(),
            json!(FIRST_NAMES[n % FIRST_NAMES.len()]),
        );
    }
    if !n.is_multiple_of(5) {
        traits.insert("timezone".into(), json!(ZONES[n % ZONES.len()]));
    }
    Value::Object(traits)
}

fn phone(customer: CustomerId) -> String {
    format!("+86138{:08}", customer.unsigned_abs() % 100_000_000)
}

/// The properties of the customer's `Trial Started`: a coupon code always, a plan for two in
/// three.
fn trigger_properties(customer: CustomerId) -> Value {
    let n = customer.unsigned_abs() as usize;
    let mut properties = Map::new();
    properties.insert("coupon".into(), json!(format!("TRIAL{:04}", n % 10_000)));
    if n % 3 != 1 {
        properties.insert("plan".into(), json!(PLANS[n % PLANS.len()]));
    }
    Value::Object(properties)
}

/// The delivery facts the ledger and consent store would give: marketing sends so far this
/// day, week and month, all under the caps.
fn delivery_facts(customer: CustomerId, zone: chrono_tz::Tz) -> DeliveryFacts {
    let n = customer.unsigned_abs();
    let mut facts = DeliveryFacts::new(zone);
    facts.sent = PeriodCounts {
        day: n % 3,
        week: n % 7,
        month: n % 11,
    };
    facts.sent_on_kind = PeriodCounts {
        day: n % 2,
        week: n % 4,
        month: n % 9,
    };
    facts
}

// ---------------------------------------------------------------------------------------------
// One effect's rules and render, as the send worker does them

/// What the send worker needs of an effect: its key, the customer and the trigger's
/// properties.
struct Work {
    key: String,
    customer: CustomerId,
    event: Value,
}

impl Work {
    fn from_effect(pending: PendingEffect) -> anyhow::Result<Work> {
        let mut payload = pending.effect.payload;
        let customer = payload["customer"]
            .as_i64()
            .with_context(|| format!("effect {} has no customer", pending.effect.key))?;
        let event = payload["trigger"]["event"].take();
        Ok(Work {
            key: pending.effect.key,
            customer,
            event,
        })
    }
}

/// The SMS step's request to the rules (a marketing message that waits out quiet hours).
fn request() -> SendRequest<'static> {
    SendRequest {
        channel: CHANNEL,
        kind: ChannelKind::Sms,
        transactional: false,
        quiet_hours: QuietHours::Hold,
    }
}

/// The rules' decision for one customer at `now`.
fn check(
    rules: &DeliveryRules,
    limiter: &mut RateLimiter,
    customer: CustomerId,
    traits: &Value,
    now: DateTime<Utc>,
) -> Decision {
    let zone = customer_zone(traits, None, rules.time_zone);
    let facts = delivery_facts(customer, zone.tz);
    let decision = decide(rules, &request(), &facts, now);
    limiter.gate(rules, CHANNEL, decision, now)
}

/// The SMS text for one customer.
fn render(
    template: &CompiledMessage,
    traits: Value,
    event: &Value,
    zone: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let data = json!({"customer": traits, "event_name": EVENT, "event": event});
    match template.render(&data, zone, Some(now))? {
        RenderedMessage::Message(MessageParts::Sms { text, .. }) => Ok(text),
        RenderedMessage::Message(_) => bail!("the template is not an SMS"),
        RenderedMessage::Aborted { part, reason } => bail!("{part} aborted: {reason}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// Wall and CPU seconds of one phase over `count` units.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    count: u64,
    wall: f64,
    cpu: f64,
}

impl Timing {
    fn rate(&self) -> f64 {
        if self.wall > 0.0 {
            self.count as f64 / self.wall
        } else {
            0.0
        }
    }
    fn cpu_per_unit(&self) -> String {
        if self.count == 0 {
            return "-".into();
        }
        let micros = self.cpu / self.count as f64 * 1e6;
        if micros < 10.0 {
            format!("{micros:.2} µs")
        } else {
            format!("{micros:.1} µs")
        }
    }
}

/// What one sink received: requests per idempotency key, and requests that failed its checks.
#[derive(Debug, Clone, Default)]
pub(crate) struct SinkCount {
    pub requests: u64,
    pub distinct: u64,
    /// Keys received more than once.
    pub duplicated: u64,
    /// Effect keys never received.
    pub missing: u64,
    /// Keys received that are no effect's.
    pub unknown: u64,
    pub problems: u64,
}

fn count_sink(sink: &StandIn, expected: &HashSet<String>) -> SinkCount {
    let keys = sink.keys();
    SinkCount {
        requests: keys.values().map(|&n| n as u64).sum(),
        distinct: keys.len() as u64,
        duplicated: keys.values().filter(|&&n| n > 1).count() as u64,
        missing: expected.iter().filter(|k| !keys.contains_key(*k)).count() as u64,
        unknown: keys.keys().filter(|k| !expected.contains(*k)).count() as u64,
        problems: sink.problems().len() as u64,
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    pub customers: u64,
    enter: Timing,
    fire: Timing,
    fire_moves: u64,
    timer_floor_batched: Timing,
    timer_floor_each: Timing,
    checks: Timing,
    renders: Timing,
    decisions: BTreeMap<String, u64>,
    read_outbox: Timing,
    sends: Timing,
    /// CPU of the send worker thread alone (outbox, rules, render, completing).
    send_worker_cpu: f64,
    outcomes: BTreeMap<String, u64>,
    pending_after: u64,
    floor: Timing,
    floor_statuses: BTreeMap<String, u64>,
    pub sink: SinkCount,
    pub floor_sink: SinkCount,
    /// The sink's body for a key equals the floor's for the same key (sampled keys).
    pub same_bodies: (u64, u64),
    hwm_before_kb: Option<u64>,
    hwm_waiting_kb: Option<u64>,
    hwm_fired_kb: Option<u64>,
    /// After the sends and the floor, before the sinks are checked.
    hwm_end_kb: Option<u64>,
    state_bytes: u64,
}

fn status_value_kb(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_kb(&s, key))
}

fn disk_bytes(dir: &Path) -> u64 {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Runs the whole bench and prints its figures.
pub(crate) async fn run(args: BenchJourneysArgs) -> anyhow::Result<()> {
    print_machine();
    println!(
        "Journeys: {} customers wait in one delay of 1 h that ends for all at once; SMS through \
         the Twilio adapter to a loopback stand-in, {} in flight; state in SQLite (durability \
         {}).",
        fmt_int(args.customers as u64),
        args.concurrency,
        args.durability
    );
    let figures = measure(&args, true).await?;
    print_figures(&args, &figures);
    Ok(())
}

/// Runs every phase; `progress` prints each phase as it starts.
pub(crate) async fn measure(args: &BenchJourneysArgs, progress: bool) -> anyhow::Result<Figures> {
    if args.customers == 0 {
        bail!("--customers must be at least 1");
    }
    let say = |line: String| {
        if progress {
            println!("{line}");
        }
    };
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let mut config = StoreConfig::new(dir.path());
    config.process = false;
    config.durability = match args.durability.as_str() {
        "full" => Durability::Full,
        _ => Durability::Normal,
    };
    let store = Store::open(config).context("opening the store")?;
    let state = store.journey_state()?;
    let runner = Arc::new(journey()?);
    let mut figures = Figures {
        customers: args.customers as u64,
        ..Figures::default()
    };

    // 1 and 2: enter, wait, fire.
    say(format!(
        "  entering {} customers …",
        fmt_int(args.customers as u64)
    ));
    let (customers, fire_batch) = (args.customers, args.fire_batch.max(1));
    let timers = {
        let runner = runner.clone();
        let data_dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            enter_and_fire(&runner, state, &data_dir, customers, fire_batch)
        })
    };
    let (mut state, timers) = timers.await??;
    figures.enter = timers.enter;
    figures.fire = timers.fire;
    figures.fire_moves = timers.moves;
    figures.hwm_before_kb = timers.hwm_before_kb;
    figures.hwm_waiting_kb = timers.hwm_waiting_kb;
    figures.hwm_fired_kb = status_value_kb("VmHWM");
    figures.state_bytes = timers.state_bytes;
    say(format!(
        "  entered in {:.1} s; fired {} in {:.1} s",
        figures.enter.wall,
        fmt_int(figures.fire.count),
        figures.fire.wall
    ));

    // 2b: the floor of timer firings on this disk: bare SQLite, no journey.
    say("  timer floor: bare SQLite select, record, delete …".into());
    let (batch, synchronous) = (fire_batch, args.durability.clone());
    (figures.timer_floor_batched, figures.timer_floor_each) =
        tokio::task::spawn_blocking(move || timer_floor(customers, batch, &synchronous)).await??;

    // 3: rules and renders over the outbox's effects, without I/O.
    let read_started = Instant::now();
    let read_cpu = process_cpu_seconds();
    let work = tokio::task::block_in_place(|| -> anyhow::Result<Vec<Work>> {
        state
            .pending_effects(CHANNEL, fire_at(), customers)?
            .into_iter()
            .map(Work::from_effect)
            .collect()
    })?;
    figures.read_outbox = Timing {
        count: work.len() as u64,
        wall: read_started.elapsed().as_secs_f64(),
        cpu: process_cpu_seconds() - read_cpu,
    };
    say(format!(
        "  read {} effects from the outbox; rules and renders on 2 threads …",
        fmt_int(work.len() as u64)
    ));
    let rules = Arc::new(DeliveryRules::from_json(RULES)?);
    let compute = tokio::task::block_in_place(|| checks_and_renders(&rules, &work))?;
    figures.checks = compute.checks;
    figures.renders = compute.renders;
    figures.decisions = compute.decisions;
    let expected: HashSet<String> = work.iter().map(|w| w.key.clone()).collect();

    // 4 and 5: sends and the floor, each to its own stand-in.
    let sink = StandIn::start(Provider::Twilio).await;
    let floor_sink = StandIn::start(Provider::Twilio).await;
    let bodies: Vec<(String, String)> = work
        .iter()
        .zip(&compute.texts)
        .map(|(w, text)| (w.key.clone(), form_body(&phone(w.customer), text)))
        .collect();
    drop(work);
    drop(compute.texts);
    let sender = Arc::new(Sender::new(&sink.config())?);
    if args.floor_first {
        say("  floor: bare reqwest posts …".into());
        (figures.floor, figures.floor_statuses) =
            floor(floor_sink.url(), &bodies, args.concurrency).await?;
    }
    say("  sends: outbox → rules → render → Twilio adapter …".into());
    let sent = send_all(state, sender, rules.clone(), args.concurrency).await?;
    figures.hwm_end_kb = status_value_kb("VmHWM");
    figures.sends = sent.timing;
    figures.send_worker_cpu = sent.worker_cpu;
    figures.outcomes = sent.outcomes;
    figures.pending_after = sent.pending_after;
    if !args.floor_first {
        say("  floor: bare reqwest posts …".into());
        (figures.floor, figures.floor_statuses) =
            floor(floor_sink.url(), &bodies, args.concurrency).await?;
        figures.hwm_end_kb = status_value_kb("VmHWM");
    }

    figures.sink = count_sink(&sink, &expected);
    figures.floor_sink = count_sink(&floor_sink, &expected);
    figures.same_bodies = same_bodies(&sink, &floor_sink, &bodies);
    drop(store);
    Ok(figures)
}

/// The floor of durable timer firings: `customers` timers due at once in a bare SQLite table
/// (WAL, the same `synchronous` as the state store), each firing selected, recorded under its
/// idempotency key and deleted ([`TimerFloor`]); once with one commit per `batch` firings, once
/// with one commit per firing. Measured on a fresh file; each row is one thread's wall and CPU.
fn timer_floor(
    customers: usize,
    batch: usize,
    synchronous: &str,
) -> anyhow::Result<(Timing, Timing)> {
    let run = |per_commit: usize| -> anyhow::Result<Timing> {
        let dir = tempfile::tempdir()?;
        let mut floor = TimerFloor::prepare(dir.path(), customers, synchronous)?;
        let started = Instant::now();
        let cpu = thread_cpu_seconds();
        let fired = floor.fire_all(per_commit)?;
        Ok(Timing {
            count: fired,
            wall: started.elapsed().as_secs_f64(),
            cpu: thread_cpu_seconds() - cpu,
        })
    };
    Ok((run(batch)?, run(1)?))
}

struct Timers {
    enter: Timing,
    fire: Timing,
    moves: u64,
    hwm_before_kb: Option<u64>,
    hwm_waiting_kb: Option<u64>,
    state_bytes: u64,
}

fn enter_and_fire(
    runner: &Runner,
    mut state: SqliteJourneyState,
    data_dir: &Path,
    customers: usize,
    fire_batch: usize,
) -> anyhow::Result<(SqliteJourneyState, Timers)> {
    let empty = Map::new();
    let computed = ComputedTraits::default();
    let facts = |id| Entrant {
        id,
        empty: &empty,
        computed: &computed,
    };
    let hwm_before_kb = status_value_kb("VmHWM");
    let t0 = entered_at();
    let started = Instant::now();
    let cpu = thread_cpu_seconds();
    let mut entered = 0u64;
    for customer in 1..=customers as CustomerId {
        let event = ProcessedEvent::new(&format!("m-{customer}"), EVENT, t0)
            .properties(trigger_properties(customer));
        let report = runner.on_event(&mut state, &facts(customer), &event, t0)?;
        entered += report.entered.len() as u64;
    }
    let enter = Timing {
        count: entered,
        wall: started.elapsed().as_secs_f64(),
        cpu: thread_cpu_seconds() - cpu,
    };
    let hwm_waiting_kb = status_value_kb("VmHWM");
    let state_bytes = disk_bytes(data_dir);
    if entered != customers as u64 {
        bail!("{entered} of {customers} customers entered the journey");
    }

    let started = Instant::now();
    let cpu = thread_cpu_seconds();
    let (mut fired, mut moves) = (0u64, 0u64);
    loop {
        let report = state.in_one_transaction(|state| {
            runner.fire_due(
                state,
                |id| Ok::<_, std::convert::Infallible>(facts(id)),
                fire_at(),
                fire_batch,
            )
        })??;
        if report.moves == 0 {
            break;
        }
        fired += report.effects as u64;
        moves += report.moves as u64;
    }
    let fire = Timing {
        count: fired,
        wall: started.elapsed().as_secs_f64(),
        cpu: thread_cpu_seconds() - cpu,
    };
    Ok((
        state,
        Timers {
            enter,
            fire,
            moves,
            hwm_before_kb,
            hwm_waiting_kb,
            state_bytes,
        },
    ))
}

struct Computed {
    checks: Timing,
    renders: Timing,
    decisions: BTreeMap<String, u64>,
    /// Each effect's rendered text, in the order of the effects.
    texts: Vec<String>,
}

/// How many times the rules and the renders each run over every effect; the pass with the
/// median wall time is reported (a pass takes a second or two, short enough for one busy moment
/// of a shared machine to move it).
const COMPUTE_PASSES: usize = 3;

/// Rules, then renders, each on two threads over halves of `work`, [`COMPUTE_PASSES`] times;
/// the rate is over the wall time of both threads, the CPU theirs.
fn checks_and_renders(rules: &DeliveryRules, work: &[Work]) -> anyhow::Result<Computed> {
    let now = fire_at();
    let half = work.len().div_ceil(2);
    let halves: Vec<&[Work]> = work.chunks(half.max(1)).collect();

    let mut check_passes = Vec::with_capacity(COMPUTE_PASSES);
    let mut decisions = BTreeMap::new();
    for _ in 0..COMPUTE_PASSES {
        let (timing, decided) = check_pass(rules, &halves, now);
        check_passes.push(timing);
        decisions = decided;
    }
    let mut render_passes = Vec::with_capacity(COMPUTE_PASSES);
    let mut texts = Vec::new();
    for _ in 0..COMPUTE_PASSES {
        let (timing, rendered) = render_pass(rules, &halves, now)?;
        render_passes.push(timing);
        texts = rendered;
    }
    Ok(Computed {
        checks: median_pass(check_passes),
        renders: median_pass(render_passes),
        decisions,
        texts,
    })
}

/// The pass with the median wall time.
fn median_pass(mut passes: Vec<Timing>) -> Timing {
    passes.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    let middle = passes.len() / 2;
    passes.swap_remove(middle)
}

/// One pass of the delivery rules over every effect; its timing and the decisions by record.
fn check_pass(
    rules: &DeliveryRules,
    halves: &[&[Work]],
    now: DateTime<Utc>,
) -> (Timing, BTreeMap<String, u64>) {
    let started = Instant::now();
    let decided: Vec<(BTreeMap<String, u64>, f64)> = std::thread::scope(|scope| {
        let threads: Vec<_> = halves
            .iter()
            .map(|part| {
                scope.spawn(move || {
                    let cpu = thread_cpu_seconds();
                    let mut limiter = RateLimiter::default();
                    let mut sends = 0u64;
                    // Other decisions, by their record (`hold:quiet_hours`): none expected.
                    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                    for w in *part {
                        let traits = traits(w.customer);
                        match check(rules, &mut limiter, w.customer, &traits, now) {
                            Decision::Send => sends += 1,
                            other => *counts.entry(other.to_string()).or_insert(0) += 1,
                        }
                    }
                    if sends > 0 {
                        counts.insert(Decision::Send.to_string(), sends);
                    }
                    (counts, thread_cpu_seconds() - cpu)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect()
    });
    let timing = Timing {
        count: halves.iter().map(|h| h.len() as u64).sum(),
        wall: started.elapsed().as_secs_f64(),
        cpu: decided.iter().map(|(_, cpu)| cpu).sum(),
    };
    let mut decisions = BTreeMap::new();
    for (counts, _) in decided {
        for (d, n) in counts {
            *decisions.entry(d).or_insert(0) += n;
        }
    }
    (timing, decisions)
}

/// One pass of the SMS template over every effect; its timing and the texts in order.
fn render_pass(
    rules: &DeliveryRules,
    halves: &[&[Work]],
    now: DateTime<Utc>,
) -> anyhow::Result<(Timing, Vec<String>)> {
    let started = Instant::now();
    let rendered: Vec<anyhow::Result<(Vec<String>, f64)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = halves
            .iter()
            .map(|part| {
                scope.spawn(move || {
                    let cpu = thread_cpu_seconds();
                    let template = template()?;
                    let mut texts = Vec::with_capacity(part.len());
                    for w in *part {
                        let traits = traits(w.customer);
                        let zone = customer_zone(&traits, None, rules.time_zone).tz;
                        texts.push(render(&template, traits, &w.event, zone, now)?);
                    }
                    Ok((texts, thread_cpu_seconds() - cpu))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow!("a render thread panicked")))
            })
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut texts = Vec::new();
    let mut cpu = 0.0;
    for part in rendered {
        let (part, part_cpu) = part?;
        texts.extend(part);
        cpu += part_cpu;
    }
    let timing = Timing {
        count: texts.len() as u64,
        wall,
        cpu,
    };
    Ok((timing, texts))
}

/// `application/x-www-form-urlencoded`, as reqwest's `form` writes it (the WHATWG
/// serializer: letters, digits and `*-._` kept, a space as `+`, every other byte `%XX`).
fn form_encode(out: &mut String, value: &str) {
    for &b in value.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// The Twilio adapter's form: `To`, `From`, `Body`, in that order.
fn form_body(to: &str, text: &str) -> String {
    let mut body = String::with_capacity(32 + text.len() * 3);
    for (i, (name, value)) in [("To", to), ("From", standin::TWILIO_FROM), ("Body", text)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            body.push('&');
        }
        body.push_str(name);
        body.push('=');
        form_encode(&mut body, value);
    }
    body
}

struct Sent {
    timing: Timing,
    worker_cpu: f64,
    outcomes: BTreeMap<String, u64>,
    pending_after: u64,
}

/// One message handed to the runtime, and its outcome handed back.
struct Job {
    outgoing: Outgoing,
    attempts: u32,
}

/// Phase 4: the worker thread drains the outbox through the runtime's senders.
async fn send_all(
    state: SqliteJourneyState,
    sender: Arc<Sender>,
    rules: Arc<DeliveryRules>,
    concurrency: usize,
) -> anyhow::Result<Sent> {
    let (jobs, mut queued) = tokio::sync::mpsc::channel::<Job>(SEND_BATCH * 2);
    let (done, outcomes) = std::sync::mpsc::channel::<(Job, Outcome)>();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let dispatcher = tokio::spawn(async move {
        while let Some(job) = queued.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let sender = sender.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let outcome = sender.send(&job.outgoing, Utc::now()).await;
                drop(permit);
                let _ = done.send((job, outcome));
            });
        }
    });
    let started = Instant::now();
    let cpu = process_cpu_seconds();
    let worker = tokio::task::spawn_blocking(move || send_worker(state, &rules, jobs, outcomes));
    let (worker_cpu, outcome_counts, pending_after) = worker.await??;
    let timing = Timing {
        count: outcome_counts.get("sent").copied().unwrap_or(0),
        wall: started.elapsed().as_secs_f64(),
        cpu: process_cpu_seconds() - cpu,
    };
    dispatcher.await?;
    Ok(Sent {
        timing,
        worker_cpu,
        outcomes: outcome_counts,
        pending_after,
    })
}

/// The send worker: reads pending effects (leaving out those in flight), decides and renders
/// each, queues it, and completes the outcomes that came back, all those at hand in one
/// transaction (as the engine's workers settle a batch). Returns its CPU seconds, the outcomes
/// by status and the effects still pending at the end.
fn send_worker(
    mut state: SqliteJourneyState,
    rules: &DeliveryRules,
    jobs: tokio::sync::mpsc::Sender<Job>,
    outcomes: std::sync::mpsc::Receiver<(Job, Outcome)>,
) -> anyhow::Result<(f64, BTreeMap<String, u64>, u64)> {
    let cpu = thread_cpu_seconds();
    let template = template()?;
    let policy = RetryPolicy::default();
    let now = fire_at();
    let mut limiter = RateLimiter::default();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut finish = |state: &mut SqliteJourneyState,
                      finished: Vec<(Job, Outcome)>,
                      in_flight: &mut HashSet<String>|
     -> anyhow::Result<()> {
        if finished.is_empty() {
            return Ok(());
        }
        state.in_one_transaction(|state| -> anyhow::Result<()> {
            for (job, outcome) in finished {
                let key = job.outgoing.key;
                *counts.entry(outcome.status().to_string()).or_insert(0) += 1;
                match policy.decide(&key, job.attempts, &outcome, now) {
                    Retry::Done { status } => state.complete_effect(&key, status, true)?,
                    Retry::RetryAt(at) => {
                        state.defer_effect(&key, at, &format!("{outcome:?}"))?;
                    }
                    Retry::DeadLetter { reason } => {
                        state.dead_letter_effect(&key, &reason)?;
                    }
                }
                in_flight.remove(&key);
            }
            Ok(())
        })?
    };
    loop {
        finish(&mut state, outcomes.try_iter().collect(), &mut in_flight)?;
        if in_flight.len() < SEND_LOW_WATER {
            let pending = state.pending_effects(CHANNEL, now, in_flight.len() + SEND_BATCH)?;
            let mut queued = 0;
            for pending in pending {
                if in_flight.contains(&pending.effect.key) {
                    continue;
                }
                let attempts = pending.attempts;
                let work = Work::from_effect(pending)?;
                let traits = traits(work.customer);
                let zone = customer_zone(&traits, None, rules.time_zone).tz;
                match check(rules, &mut limiter, work.customer, &traits, now) {
                    Decision::Send => {}
                    other => {
                        // Every made-up customer may be sent to at the firing instant.
                        bail!("effect {}: the rules said {other}", work.key);
                    }
                }
                let text = render(&template, traits, &work.event, zone, now)?;
                let outgoing = Outgoing {
                    key: work.key,
                    to: phone(work.customer),
                    message: Message::Sms(SmsMessage::text(text)),
                };
                in_flight.insert(outgoing.key.clone());
                jobs.blocking_send(Job { outgoing, attempts })
                    .map_err(|_| anyhow!("the dispatcher stopped"))?;
                queued += 1;
            }
            if queued == 0 && in_flight.is_empty() {
                break;
            }
            if queued > 0 {
                continue;
            }
        }
        match outcomes.recv_timeout(Duration::from_secs(60)) {
            Ok(first) => {
                // Gather a few more before committing: one commit per outcome is what the
                // batch transaction saves.
                let mut finished = vec![first];
                let until = Instant::now() + SETTLE_WAIT;
                while finished.len() < SETTLE_BATCH {
                    match outcomes.recv_timeout(until.saturating_duration_since(Instant::now())) {
                        Ok(more) => finished.push(more),
                        Err(_) => break,
                    }
                }
                finish(&mut state, finished, &mut in_flight)?;
            }
            Err(e) => bail!("no send finished within a minute: {e}"),
        }
    }
    drop(jobs);
    let pending_after = state.pending_effects(CHANNEL, now, 1)?.len() as u64;
    Ok((thread_cpu_seconds() - cpu, counts, pending_after))
}

/// Phase 5: the same form bodies posted by a bare client, `concurrency` in flight.
async fn floor(
    base: &str,
    bodies: &[(String, String)],
    concurrency: usize,
) -> anyhow::Result<(Timing, BTreeMap<String, u64>)> {
    let client = cohort_demo::send::http_client()
        .build()
        .context("the floor's HTTP client")?;
    let url = format!(
        "{base}/2010-04-01/Accounts/{}/Messages.json",
        standin::TWILIO_ACCOUNT_SID
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            standin::TWILIO_ACCOUNT_SID,
            standin::TWILIO_AUTH_TOKEN
        ))
    );
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let (done, mut statuses) = tokio::sync::mpsc::unbounded_channel::<String>();
    let started = Instant::now();
    let cpu = process_cpu_seconds();
    for (key, body) in bodies {
        let permit = permits.clone().acquire_owned().await?;
        let request = client
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, &auth)
            .header(IDEMPOTENCY_KEY, key)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.clone());
        let done = done.clone();
        tokio::spawn(async move {
            let status = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16().to_string();
                    // Read the answer whole, as the adapter does.
                    match response.bytes().await {
                        Ok(_) => status,
                        Err(e) => format!("body: {e}"),
                    }
                }
                Err(e) => format!("error: {e}"),
            };
            drop(permit);
            let _ = done.send(status);
        });
    }
    drop(done);
    let mut counts = BTreeMap::new();
    while let Some(status) = statuses.recv().await {
        *counts.entry(status).or_insert(0u64) += 1;
    }
    let timing = Timing {
        count: counts.get("201").copied().unwrap_or(0),
        wall: started.elapsed().as_secs_f64(),
        cpu: process_cpu_seconds() - cpu,
    };
    Ok((timing, counts))
}

/// Compares, for up to 1,000 keys spread over the run, the body the sink received from Cohort
/// with the floor's: (equal, compared).
fn same_bodies(sink: &StandIn, floor: &StandIn, bodies: &[(String, String)]) -> (u64, u64) {
    let step = (bodies.len() / 1000).max(1);
    let sampled: HashSet<&str> = bodies
        .iter()
        .step_by(step)
        .map(|(k, _)| k.as_str())
        .collect();
    let by_key = |s: &StandIn| -> BTreeMap<String, Vec<u8>> {
        s.requests()
            .into_iter()
            .filter_map(|r| {
                let key = r.header("idempotency-key")?.to_string();
                sampled.contains(key.as_str()).then_some((key, r.body))
            })
            .collect()
    };
    let (ours, theirs) = (by_key(sink), by_key(floor));
    let compared = ours.keys().filter(|k| theirs.contains_key(*k)).count() as u64;
    let equal = ours
        .iter()
        .filter(|(k, body)| theirs.get(*k) == Some(body))
        .count() as u64;
    (equal, compared)
}

// ---------------------------------------------------------------------------------------------
// Printing

fn mb(kb: Option<u64>) -> String {
    kb.map_or("unknown".into(), |kb| {
        format!("{:.0} MB", kb as f64 / 1024.0)
    })
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{k} {}", fmt_int(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_figures(args: &BenchJourneysArgs, f: &Figures) {
    println!();
    println!(
        "  {:<62} {:>11} {:>10} {:>12} {:>12}",
        "phase", "count", "wall", "rate", "CPU/unit"
    );
    let row = |label: &str, t: &Timing| {
        println!(
            "  {label:<62} {:>11} {:>10} {:>12} {:>12}",
            fmt_int(t.count),
            format!("{:.2} s", t.wall),
            fmt_rate(t.rate()),
            t.cpu_per_unit()
        );
    };
    row(
        "enter: on_event → SQLite entry waiting 1 h (setup, 1 thread)",
        &f.enter,
    );
    row(
        &format!(
            "timer firings: fire_due, a transaction per {} (1 thread)",
            fmt_int(args.fire_batch as u64)
        ),
        &f.fire,
    );
    row(
        &format!(
            "timer floor: bare SQLite, a commit per {} firings",
            fmt_int(args.fire_batch as u64)
        ),
        &f.timer_floor_batched,
    );
    row(
        "timer floor: bare SQLite, a commit per firing",
        &f.timer_floor_each,
    );
    row(
        "read the outbox once (pending_effects, untimed below)",
        &f.read_outbox,
    );
    row(
        "rule checks: zone, decide, rate gate (2 threads, median of 3)",
        &f.checks,
    );
    row(
        "renders: template data + Liquid SMS (2 threads, median of 3)",
        &f.renders,
    );
    row(
        &format!(
            "sends: outbox → rules → render → Twilio → stand-in ({} in flight)",
            args.concurrency
        ),
        &f.sends,
    );
    row(
        &format!(
            "floor: bare reqwest, same bodies → stand-in ({} in flight)",
            args.concurrency
        ),
        &f.floor,
    );
    let ratio = if f.floor.rate() > 0.0 {
        format!("{:.1} %", f.sends.rate() / f.floor.rate() * 100.0)
    } else {
        "-".into()
    };
    println!(
        "  Sends against the floor: {ratio} ({} in this run{}). CPU/unit of timers and \
         setup is the thread's; of rules and renders, both threads'; of sends and floor, the \
         whole process's (senders, stand-in, runtime).",
        if args.floor_first {
            "floor first"
        } else {
            "sends first"
        },
        if f.sends.count > 0 {
            format!(
                "; the send worker thread alone: {:.2} µs per send",
                f.send_worker_cpu / f.sends.count as f64 * 1e6
            )
        } else {
            String::new()
        }
    );
    println!(
        "  Firings: {} effects recorded in {} moves. Decisions: {}. Send outcomes: {}; still \
         pending: {}. Floor answers: {}.",
        fmt_int(f.fire.count),
        fmt_int(f.fire_moves),
        counts(&f.decisions),
        counts(&f.outcomes),
        fmt_int(f.pending_after),
        counts(&f.floor_statuses)
    );
    let growth = match (f.hwm_before_kb, f.hwm_waiting_kb) {
        (Some(before), Some(after)) => format!(
            "{} bytes per waiting customer",
            fmt_int(after.saturating_sub(before) * 1024 / f.customers.max(1))
        ),
        _ => "unknown".into(),
    };
    println!(
        "  Memory (VmHWM): {} before entering, {} with everyone waiting: {growth}; {} after the \
         firings; {} after sends and floor, which includes the outbox's effects read for \
         phase 3, the floor's bodies and both stand-ins' logs of every request ({} after the \
         sink checks; RSS now {}). State on disk while waiting: {} ({} bytes per customer).",
        mb(f.hwm_before_kb),
        mb(f.hwm_waiting_kb),
        mb(f.hwm_fired_kb),
        mb(f.hwm_end_kb),
        peak_rss(),
        rss(),
        format_args!("{:.0} MB", f.state_bytes as f64 / 1e6),
        fmt_int(f.state_bytes / f.customers.max(1))
    );
    let sink = |label: &str, s: &SinkCount| {
        println!(
            "  {label}: {} requests, {} distinct keys, {} keys more than once, {} effect keys \
             missing, {} unknown keys, {} failed checks.",
            fmt_int(s.requests),
            fmt_int(s.distinct),
            fmt_int(s.duplicated),
            fmt_int(s.missing),
            fmt_int(s.unknown),
            fmt_int(s.problems)
        );
    };
    sink("Sink (Cohort's sends)", &f.sink);
    sink("Floor's sink", &f.floor_sink);
    println!(
        "  Bodies: {} of {} sampled keys reached both sinks with the same form body.",
        fmt_int(f.same_bodies.0),
        fmt_int(f.same_bodies.1)
    );
    println!(
        "  Load average after the run (1, 5, 15 min): {}",
        load_average()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(customers: usize) -> BenchJourneysArgs {
        BenchJourneysArgs {
            customers,
            fire_batch: 300,
            concurrency: 16,
            durability: "normal".into(),
            floor_first: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiting_customer_gets_one_sms_at_the_sink() {
        const N: u64 = 2_000;
        let f = measure(&args(N as usize), false).await.unwrap();
        assert_eq!((f.fire.count, f.checks.count, f.renders.count), (N, N, N));
        assert_eq!(f.decisions.get("send"), Some(&N));
        assert_eq!(f.outcomes.get("sent"), Some(&N));
        assert_eq!(f.pending_after, 0);
        let s = &f.sink;
        assert_eq!(
            (
                s.requests,
                s.distinct,
                s.duplicated,
                s.missing,
                s.unknown,
                s.problems
            ),
            (N, N, 0, 0, 0, 0)
        );
        let s = &f.floor_sink;
        assert_eq!(
            (s.requests, s.distinct, s.duplicated, s.missing, s.problems),
            (N, N, 0, 0, 0)
        );
        assert!(f.same_bodies.1 > 0);
        assert_eq!(f.same_bodies.0, f.same_bodies.1);
    }

    #[test]
    fn a_rendered_sms_has_its_defaults_and_the_event_property() {
        let template = template().unwrap();
        let now = fire_at();
        // Customer 3: no first name, a plan; customer 1: a first name, no plan.
        let text = render(
            &template,
            traits(3),
            &trigger_properties(3),
            chrono_tz::UTC,
            now,
        )
        .unwrap();
        assert_eq!(
            text,
            "【Cohort】顾客，您的团队版试用1小时后结束，优惠码TRIAL0003续订立减20元。回复TD退订"
        );
        let text = render(
            &template,
            traits(1),
            &trigger_properties(1),
            chrono_tz::UTC,
            now,
        )
        .unwrap();
        assert!(text.starts_with("【Cohort】韩梅梅，您的会员试用"), "{text}");
    }

    #[test]
    fn every_made_up_customer_may_be_sent_to_at_the_firing_instant() {
        let rules = DeliveryRules::from_json(RULES).unwrap();
        let mut limiter = RateLimiter::default();
        for customer in 1..=1_000 {
            let decision = check(&rules, &mut limiter, customer, &traits(customer), fire_at());
            assert_eq!(decision, Decision::Send, "customer {customer}");
        }
        // An hour later, 20:00 in Tokyo, SMS quiet hours have begun there.
        let later = fire_at() + TimeDelta::hours(1);
        let tokyo = (1..=20)
            .find(|c| traits(*c)["timezone"] == "Asia/Tokyo")
            .unwrap();
        assert!(matches!(
            check(&rules, &mut limiter, tokyo, &traits(tokyo), later),
            Decision::Hold { .. }
        ));
    }

    #[test]
    fn the_floor_bodies_are_encoded_as_reqwest_encodes_forms() {
        assert_eq!(
            form_body("+8613800000001", "a b&c=【】*-._~"),
            "To=%2B8613800000001&From=%2B15005550006&Body=a+b%26c%3D%E3%80%90%E3%80%91*-._%7E"
        );
    }
}
