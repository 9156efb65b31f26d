//! Deterministic synthetic shop data as Segment messages.
//!
//! Every customer gets their own [`StdRng`] seeded from `(seed, customer index)`, so a
//! customer's history does not change when the customer count does, and the whole dataset is a
//! pure function of [`DemoOptions`]. (`StdRng`'s algorithm may change between `rand` releases;
//! determinism holds for one build of this crate, which is what tests and benchmarks need.)
//!
//! The story each customer lives through:
//! 1. Anonymous visits on their first device (pages or screens, searches, product views, cart).
//! 2. Most register: `identify` + `Signed Up`, both carrying the userId *and* the device's
//!    anonymousId, which is what an identity graph needs to stitch the earlier visits.
//! 3. Later sessions, sometimes on other devices that start anonymous and become known through
//!    `Logged In`; carts, checkouts and orders.
//! 4. Server-side follow-ups days later: refunds and support tickets. These come from the
//!    shop's backend (library `analytics-node`) and so carry a userId but no device context.
//!
//! Archetypes shape the amount of activity: some customers never register, some churn within a
//! few weeks, a tenth are heavy buyers. App customers who opted into diagnostics also send
//! `Device Telemetry`, with one phone model that overheats noticeably more often than the rest.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::catalog::{self, Category, Product, fen_to_yuan};
use crate::people::{self, City, DeviceKind, DeviceModel, Tier};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Windows longer than this are clamped: ten years of history is already far more than a demo
/// needs, and the clamp keeps every timestamp inside chrono's range.
pub const MAX_DAYS: u32 = 3_660;

const SHOP_URL: &str = "https://shop.example.com";
const APP_NAME: &str = "Cohort Shop";
const APP_NAMESPACE: &str = "com.example.cohortshop";

/// What to generate. Same options, same messages, byte for byte.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of people, including those who never register.
    pub customers: usize,
    /// Length of the activity window, ending at `end`; clamped to [`MAX_DAYS`].
    pub days: u32,
    pub seed: u64,
    /// The newest possible timestamp. Truncated to whole milliseconds. The default is "now",
    /// which makes the default options non-reproducible across runs: pin it for tests.
    pub end: DateTime<Utc>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            customers: 1000,
            days: 60,
            seed: 7,
            end: Utc::now(),
        }
    }
}

/// The behaviour profile a customer was drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Archetype {
    /// Visits a few times and never registers.
    Anonymous,
    /// Registers and shops now and then until the end of the window.
    Regular,
    /// Registers and shops several times a week.
    Heavy,
    /// Registers, is active for a few weeks at most, then disappears.
    Churned,
}

/// The ground truth about one generated person, for checking identity resolution and
/// segmentation against what the generator actually did.
#[derive(Debug, Clone)]
pub struct CustomerTruth {
    /// `None` for people whose `identify` never happened inside the window.
    pub user_id: Option<String>,
    /// One per device, in the order the devices were first used.
    pub anonymous_ids: Vec<String>,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub chinese_name: bool,
    pub archetype: Archetype,
    pub orders: usize,
    /// Revenue of completed orders, before refunds, in CNY.
    pub revenue_cny: f64,
}

/// A generated dataset: messages in timestamp order plus the truth behind them.
#[derive(Debug, Clone)]
pub struct Dataset {
    messages: Vec<Value>,
    customers: Vec<CustomerTruth>,
}

impl Dataset {
    pub fn generate(opts: &DemoOptions) -> Dataset {
        build(opts)
    }

    /// Messages sorted by `timestamp`.
    pub fn messages(&self) -> &[Value] {
        &self.messages
    }

    pub fn customers(&self) -> &[CustomerTruth] {
        &self.customers
    }

    pub fn into_messages(self) -> Vec<Value> {
        self.messages
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Value> {
        self.messages.iter()
    }

    pub fn stats(&self) -> DatasetStats {
        let mut stats = DatasetStats {
            customers: self.customers.len(),
            registered: self
                .customers
                .iter()
                .filter(|c| c.user_id.is_some())
                .count(),
            multi_device: self
                .customers
                .iter()
                .filter(|c| c.anonymous_ids.len() > 1)
                .count(),
            messages: self.messages.len(),
            ..DatasetStats::default()
        };
        for m in &self.messages {
            let kind = m.get("type").and_then(Value::as_str).unwrap_or("?");
            *stats.by_type.entry(kind.to_string()).or_default() += 1;
            if kind == "track" {
                let event = m.get("event").and_then(Value::as_str).unwrap_or("?");
                *stats.by_event.entry(event.to_string()).or_default() += 1;
                if event == "Order Completed" {
                    stats.orders += 1;
                    stats.revenue_cny += m
                        .pointer("/properties/revenue")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0);
                }
            }
        }
        stats
    }
}

impl IntoIterator for Dataset {
    type Item = Value;
    type IntoIter = std::vec::IntoIter<Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.messages.into_iter()
    }
}

impl<'a> IntoIterator for &'a Dataset {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.messages.iter()
    }
}

/// Counts over a [`Dataset`], for CLI output and sanity checks.
#[derive(Debug, Clone, Default)]
pub struct DatasetStats {
    pub customers: usize,
    pub registered: usize,
    pub multi_device: usize,
    pub messages: usize,
    pub by_type: BTreeMap<String, usize>,
    pub by_event: BTreeMap<String, usize>,
    pub orders: usize,
    pub revenue_cny: f64,
}

impl DatasetStats {
    pub fn messages_per_customer(&self) -> f64 {
        if self.customers == 0 {
            0.0
        } else {
            self.messages as f64 / self.customers as f64
        }
    }
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} messages for {} customers ({:.1} per customer); {} registered, {} on several devices",
            self.messages,
            self.customers,
            self.messages_per_customer(),
            self.registered,
            self.multi_device
        )?;
        writeln!(
            f,
            "{} orders, revenue ¥{:.2}",
            self.orders, self.revenue_cny
        )?;
        for (kind, n) in &self.by_type {
            writeln!(f, "  {kind:<10} {n}")?;
        }
        for (event, n) in &self.by_event {
            writeln!(f, "  track  {event:<24} {n}")?;
        }
        Ok(())
    }
}

/// Generates the dataset and returns its messages sorted by timestamp.
pub fn generate(opts: &DemoOptions) -> Vec<Value> {
    build(opts).into_messages()
}

fn build(opts: &DemoOptions) -> Dataset {
    let end_ms = opts.end.timestamp_millis();
    let days = i64::from(opts.days.min(MAX_DAYS));
    let window = Window {
        // Only an `end` near chrono's lower limit could push the start past it.
        start_ms: (end_ms - days * DAY_MS).max(DateTime::<Utc>::MIN_UTC.timestamp_millis()),
        end_ms,
    };
    if days == 0 || opts.customers == 0 {
        return Dataset {
            messages: Vec::new(),
            customers: Vec::new(),
        };
    }

    let mut taken = Taken::default();
    let mut events: Vec<(i64, Value)> = Vec::new();
    let mut truths = Vec::with_capacity(opts.customers);
    for index in 0..opts.customers {
        let mut rng = StdRng::seed_from_u64(mix(opts.seed ^ mix(index as u64 + 1)));
        let customer = make_customer(&mut rng, index, &mut taken, opts.end);
        let mut sim = Sim::new(rng, customer, window);
        sim.live();
        truths.push(sim.truth());
        events.append(&mut sim.out);
    }

    // Stable, so events sharing a millisecond keep customer and within-customer order.
    events.sort_by_key(|(t, _)| *t);
    let id_seed = mix(opts.seed ^ 0x6d65_7373_6167_6549);
    let messages = events
        .into_iter()
        .enumerate()
        .map(|(i, (_, mut msg))| {
            if let Some(obj) = msg.as_object_mut() {
                obj.insert(
                    "messageId".into(),
                    Value::String(uuid_from_pair(id_seed, i as u64)),
                );
            }
            msg
        })
        .collect();
    Dataset {
        messages,
        customers: truths,
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    end_ms: i64,
}

impl Window {
    fn len_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// Emails and phone numbers already handed out: duplicates would make the identity graph merge
/// two different people, which is a feature to demo deliberately, not by accident.
#[derive(Default)]
struct Taken {
    emails: HashSet<String>,
    phones: HashSet<String>,
}

struct Profile {
    chinese: bool,
    name: String,
    first_name: String,
    last_name: String,
    email: String,
    phone: String,
    gender: Option<&'static str>,
    birthday: Option<String>,
    city: &'static City,
    locale: &'static str,
    channel: &'static str,
    carrier: &'static str,
    payment: &'static str,
}

struct Device {
    model: &'static DeviceModel,
    os_version: &'static str,
    anonymous_id: String,
    device_id: String,
    ips: [String; 2],
    logged_in: bool,
    installed: bool,
    used: bool,
    /// How long after a release this device picks up the new app version.
    update_lag_ms: i64,
}

struct Customer {
    index: usize,
    user_id: String,
    archetype: Archetype,
    profile: Profile,
    devices: Vec<Device>,
    favourites: [Category; 2],
    telemetry: bool,
}

fn make_customer(
    rng: &mut StdRng,
    index: usize,
    taken: &mut Taken,
    end: DateTime<Utc>,
) -> Customer {
    let archetype = weighted(
        rng,
        &[
            (Archetype::Anonymous, 18),
            (Archetype::Regular, 50),
            (Archetype::Heavy, 10),
            (Archetype::Churned, 22),
        ],
    );
    let profile = make_profile(rng, taken, end);
    let device_count = if archetype == Archetype::Anonymous {
        1
    } else {
        weighted(rng, &[(1usize, 55), (2, 33), (3, 12)])
    };
    let mut devices: Vec<Device> = Vec::with_capacity(device_count);
    for k in 0..device_count {
        let has_app = devices.iter().any(|d| d.model.kind.is_app());
        let app = match (k, has_app) {
            (0, _) => rng.random_bool(0.8),
            (_, true) => rng.random_bool(0.15),
            (_, false) => rng.random_bool(0.6),
        };
        devices.push(make_device(rng, app, profile.chinese));
    }
    let first = *pick(rng, &Category::ALL);
    let mut second = *pick(rng, &Category::ALL);
    if second == first {
        second = Category::ALL[(first as usize + 3) % Category::ALL.len()];
    }
    let telemetry = devices.iter().any(|d| d.model.kind.is_app()) && rng.random_bool(0.45);
    Customer {
        index,
        user_id: format!("usr_{:06}{:04x}", index, rng.random::<u16>()),
        archetype,
        profile,
        devices,
        favourites: [first, second],
        telemetry,
    }
}

fn make_profile(rng: &mut StdRng, taken: &mut Taken, end: DateTime<Utc>) -> Profile {
    let chinese = rng.random_bool(0.6);
    let female = rng.random_bool(0.52);
    let birth_year = end.year() - weighted_age(rng);
    let (name, first_name, last_name, local) = if chinese {
        let (sur, sur_py) = weighted_pair(rng, people::CN_SURNAMES);
        let (given, given_py) = if female {
            *pick(rng, people::CN_GIVEN_FEMALE)
        } else {
            *pick(rng, people::CN_GIVEN_MALE)
        };
        let local = match rng.random_range(0..4) {
            0 => format!("{given_py}{sur_py}{}", rng.random_range(1..10_000)),
            1 => format!("{sur_py}{given_py}{:02}", birth_year.rem_euclid(100)),
            2 => format!("{sur_py}.{given_py}"),
            _ => format!("{sur_py}_{given_py}{}", rng.random_range(10..1000)),
        };
        (
            format!("{sur}{given}"),
            given.to_string(),
            sur.to_string(),
            local,
        )
    } else {
        let given = if female {
            *pick(rng, people::EN_GIVEN_FEMALE)
        } else {
            *pick(rng, people::EN_GIVEN_MALE)
        };
        let sur = *pick(rng, people::EN_SURNAMES);
        let (g, s) = (given.to_lowercase(), sur.to_lowercase());
        let local = match rng.random_range(0..3) {
            0 => format!("{g}.{s}"),
            1 => format!("{g}{s}{}", rng.random_range(1..100)),
            _ => format!("{}{s}", &g[..1]),
        };
        (
            format!("{given} {sur}"),
            given.to_string(),
            sur.to_string(),
            local,
        )
    };

    let domain = if chinese {
        weighted(
            rng,
            &[
                ("qq.com", 40),
                ("163.com", 30),
                ("gmail.com", 18),
                ("outlook.com", 12),
            ],
        )
    } else {
        weighted(
            rng,
            &[("gmail.com", 60), ("outlook.com", 35), ("qq.com", 5)],
        )
    };
    // Half of QQ mailboxes are the bare QQ number, as they are in the wild.
    let local = if domain == "qq.com" && chinese && rng.random_bool(0.5) {
        rng.random_range(10_000u64..3_999_999_999).to_string()
    } else {
        local
    };
    let mut email = format!("{local}@{domain}");
    while taken.emails.contains(&email) {
        email = format!("{local}{}@{domain}", rng.random_range(1..100_000));
    }
    taken.emails.insert(email.clone());

    let city = weighted_by(rng, people::CITIES, |c| match (chinese, c.tier) {
        (true, Tier::One) => 18,
        (true, Tier::Two | Tier::Three) => 6,
        (true, Tier::International) => 1,
        (false, Tier::One) => 3,
        (false, Tier::Two | Tier::Three) => 0,
        (false, Tier::International) => 8,
    });
    let (phone, carrier) = if chinese {
        loop {
            let (prefix, carrier) = *pick(rng, people::CN_MOBILE_PREFIXES);
            let phone = format!("+86{prefix}{:08}", rng.random_range(0..100_000_000));
            if taken.phones.insert(phone.clone()) {
                break (phone, carrier);
            }
        }
    } else {
        let carrier = *pick(rng, people::US_CARRIERS);
        // 555-0100..0199 is reserved for fiction; fall back to random exchanges only once a
        // large dataset has used that block up.
        let mut tries = 0;
        loop {
            let area = *pick(rng, people::US_AREA_CODES);
            let phone = if tries < 8 {
                format!("+1{area}55501{:02}", rng.random_range(0..100))
            } else {
                format!(
                    "+1{area}{}{:04}",
                    rng.random_range(200..1000),
                    rng.random_range(0..10_000)
                )
            };
            tries += 1;
            if taken.phones.insert(phone.clone()) {
                break (phone, carrier);
            }
        }
    };

    let gender = if rng.random_bool(0.95) {
        Some(if female { "female" } else { "male" })
    } else {
        None
    };
    let birthday = if rng.random_bool(0.93) {
        Some(format!(
            "{birth_year:04}-{:02}-{:02}",
            rng.random_range(1..=12),
            rng.random_range(1..=28)
        ))
    } else {
        None
    };
    let locale = if chinese && !(city.tier == Tier::International && rng.random_bool(0.4)) {
        "zh-CN"
    } else {
        "en-US"
    };
    let channel = if chinese {
        weighted(rng, people::CN_SIGNUP_CHANNELS)
    } else {
        weighted(rng, people::EN_SIGNUP_CHANNELS)
    };
    let payment = if chinese {
        weighted(
            rng,
            &[
                ("alipay", 45),
                ("wechat_pay", 40),
                ("unionpay", 10),
                ("credit_card", 5),
            ],
        )
    } else {
        weighted(
            rng,
            &[
                ("credit_card", 50),
                ("apple_pay", 25),
                ("paypal", 15),
                ("alipay", 10),
            ],
        )
    };
    Profile {
        chinese,
        name,
        first_name,
        last_name,
        email,
        phone,
        gender,
        birthday,
        city,
        locale,
        channel,
        carrier,
        payment,
    }
}

fn weighted_age(rng: &mut StdRng) -> i32 {
    let (lo, hi) = weighted(
        rng,
        &[
            ((18, 24), 22),
            ((25, 34), 38),
            ((35, 44), 24),
            ((45, 54), 11),
            ((55, 65), 5),
        ],
    );
    rng.random_range(lo..=hi)
}

fn make_device(rng: &mut StdRng, app: bool, chinese: bool) -> Device {
    let model = weighted_by(rng, people::DEVICE_MODELS, |m| {
        if m.kind.is_app() != app {
            0
        } else if chinese {
            m.weight_cn
        } else {
            m.weight_en
        }
    });
    let device_id = match model.kind {
        DeviceKind::Ios => uuid_from_rng(rng).to_uppercase(),
        DeviceKind::Android => format!("{:016x}", rng.random::<u64>()),
        DeviceKind::Web => uuid_from_rng(rng),
    };
    Device {
        model,
        os_version: pick::<&str>(rng, model.os_versions),
        anonymous_id: uuid_from_rng(rng),
        device_id,
        ips: [random_ip(rng), random_ip(rng)],
        logged_in: false,
        installed: false,
        used: false,
        update_lag_ms: rng.random_range(0..10 * DAY_MS),
    }
}

/// Addresses from the three documentation ranges (RFC 5737), so no real host is implied.
fn random_ip(rng: &mut StdRng) -> String {
    let prefix = *pick(rng, &["203.0.113", "198.51.100", "192.0.2"]);
    format!("{prefix}.{}", rng.random_range(1..255))
}

/// App releases during the window, as (fraction of the window, version, build).
const RELEASES: [(f64, &str, &str); 4] = [
    (0.0, "5.2.0", "5200"),
    (0.3, "5.3.0", "5300"),
    (0.55, "5.3.1", "5310"),
    (0.8, "5.4.0", "5400"),
];

struct CartLine {
    product: &'static Product,
    quantity: u32,
}

/// What kind of page or screen the customer is on; web and app name them differently.
#[derive(Clone, Copy)]
enum View<'p> {
    Home,
    Search(&'p str),
    Product(&'p Product),
    Cart,
    Checkout,
    Confirmation,
}

/// One customer's life inside the window.
struct Sim {
    rng: StdRng,
    c: Customer,
    window: Window,
    out: Vec<(i64, Value)>,
    registered: bool,
    cart: Vec<CartLine>,
    cart_id: String,
    checkouts: usize,
    orders: usize,
    revenue_fen: i64,
    tickets: usize,
    /// Current web page, echoed in `context.page` the way analytics.js does.
    page: Option<Value>,
    session_ip: usize,
    /// Used devices in order of first use, for the truth record.
    device_order: Vec<usize>,
}

impl Sim {
    fn new(mut rng: StdRng, c: Customer, window: Window) -> Sim {
        let cart_id = uuid_from_rng(&mut rng);
        Sim {
            rng,
            c,
            window,
            out: Vec::new(),
            registered: false,
            cart: Vec::new(),
            cart_id,
            checkouts: 0,
            orders: 0,
            revenue_fen: 0,
            tickets: 0,
            page: None,
            session_ip: 0,
            device_order: Vec::new(),
        }
    }

    fn truth(&self) -> CustomerTruth {
        CustomerTruth {
            user_id: self.registered.then(|| self.c.user_id.clone()),
            anonymous_ids: self
                .device_order
                .iter()
                .map(|&d| self.c.devices[d].anonymous_id.clone())
                .collect(),
            name: self.c.profile.name.clone(),
            email: self.c.profile.email.clone(),
            phone: self.c.profile.phone.clone(),
            chinese_name: self.c.profile.chinese,
            archetype: self.c.archetype,
            orders: self.orders,
            revenue_cny: fen_to_yuan(self.revenue_fen),
        }
    }

    fn live(&mut self) {
        let w = self.window;
        let span = (w.len_ms() as f64
            * match self.c.archetype {
                Archetype::Heavy => 0.5,
                _ => 0.85,
            }) as i64;
        let mut t = w.start_ms + self.rng.random_range(0..span.max(1));
        t = self.snap_to_active_hour(t, w.start_ms);

        if self.c.archetype == Archetype::Anonymous {
            let visits = self.rng.random_range(1..=4);
            for i in 0..visits {
                if i > 0 {
                    t = self.next_session(t, 0.7);
                }
                if t > w.end_ms {
                    return;
                }
                t = self.session(0, t, false);
            }
            return;
        }

        // Registration happens in the k-th visit; the earlier ones stay anonymous.
        let k = weighted(&mut self.rng, &[(1, 45), (2, 35), (3, 20)]);
        for i in 1..=k {
            if i > 1 {
                t = self.next_session(t, 1.2);
            }
            if t > w.end_ms {
                return;
            }
            t = self.session(0, t, i == k);
        }

        let (rate, active_until) = match self.c.archetype {
            Archetype::Heavy => (self.rng.random_range(0.25..0.5), w.end_ms),
            Archetype::Churned => (
                self.rng.random_range(0.2..0.4),
                t + self.rng.random_range(3 * DAY_MS..21 * DAY_MS),
            ),
            _ => (self.rng.random_range(0.05..0.14), w.end_ms),
        };
        loop {
            t = self.next_session(t, rate);
            if t > active_until.min(w.end_ms) {
                return;
            }
            let device = if self.c.devices.len() == 1 || self.rng.random_bool(0.65) {
                0
            } else {
                self.rng.random_range(1..self.c.devices.len())
            };
            t = self.session(device, t, false);
        }
    }

    /// Picks the next session start after `after`, with exponential gaps at `rate` sessions per
    /// day, placed at a plausible local hour.
    fn next_session(&mut self, after: i64, rate: f64) -> i64 {
        let u: f64 = self.rng.random();
        let gap_days = (-(1.0 - u).ln() / rate).min(f64::from(MAX_DAYS));
        let raw = after + (gap_days * DAY_MS as f64) as i64;
        self.snap_to_active_hour(raw, after + 20 * MINUTE_MS)
    }

    fn snap_to_active_hour(&mut self, raw: i64, not_before: i64) -> i64 {
        let offset = self.c.profile.city.utc_offset_hours * HOUR_MS;
        let local_day = (raw + offset).div_euclid(DAY_MS) * DAY_MS;
        let hour = weighted_index(&mut self.rng, &people::HOUR_WEIGHTS) as i64;
        let t = local_day + hour * HOUR_MS + self.rng.random_range(0..HOUR_MS) - offset;
        t.max(not_before + self.rng.random_range(0..40 * MINUTE_MS))
    }

    fn step(&mut self, t: &mut i64, lo_s: i64, hi_s: i64) {
        *t += self
            .rng
            .random_range(lo_s * SECOND_MS..hi_s * SECOND_MS + SECOND_MS);
    }

    /// One visit on device `d` from `t0`; returns when it ended.
    fn session(&mut self, d: usize, t0: i64, register: bool) -> i64 {
        let mut t = t0;
        if !self.c.devices[d].used {
            self.c.devices[d].used = true;
            self.device_order.push(d);
        }
        self.session_ip = usize::from(self.rng.random_bool(0.25));
        self.page = None;
        let app = self.c.devices[d].model.kind.is_app();

        if app {
            let (version, build) = self.app_version(d, t);
            let fresh_install = !self.c.devices[d].installed;
            if fresh_install {
                self.c.devices[d].installed = true;
                self.track(
                    d,
                    t,
                    "Application Installed",
                    json!({"version": version, "build": build}),
                );
                self.step(&mut t, 2, 20);
            }
            let from_background = !fresh_install && self.rng.random_bool(0.4);
            self.track(
                d,
                t,
                "Application Opened",
                json!({"from_background": from_background, "version": version, "build": build}),
            );
            if self.c.telemetry {
                self.step(&mut t, 1, 5);
                self.telemetry(d, t);
            }
            self.step(&mut t, 1, 4);
            self.view(d, t, View::Home);
        } else {
            let landing = if self.rng.random_bool(0.3) {
                let cat = self.pick_category();
                View::Product(self.pick_product(cat))
            } else {
                View::Home
            };
            self.view(d, t, landing);
            if let View::Product(p) = landing {
                self.step(&mut t, 1, 3);
                self.product_viewed(d, t, p);
            }
        }

        // A known customer on a device that is not signed in yet logs in; signed-in devices
        // occasionally have to log in again (expired session, more often on the web).
        let relogin_rate = if app { 0.08 } else { 0.2 };
        if self.registered && (!self.c.devices[d].logged_in || self.rng.random_bool(relogin_rate)) {
            self.step(&mut t, 5, 40);
            self.login(d, t);
        }

        if self.rng.random_bool(0.35) {
            self.step(&mut t, 5, 30);
            let cat = self.pick_category();
            let query = *pick(&mut self.rng, cat.search_terms());
            self.view(d, t, View::Search(query));
            self.step(&mut t, 1, 3);
            self.track(d, t, "Products Searched", json!({"query": query}));
        }

        let views = match self.c.archetype {
            Archetype::Heavy => self.rng.random_range(2..=6),
            Archetype::Anonymous => self.rng.random_range(1..=4),
            _ => self.rng.random_range(1..=4),
        };
        let add_rate = match self.c.archetype {
            Archetype::Heavy => 0.32,
            _ => 0.22,
        };
        for _ in 0..views {
            self.step(&mut t, 8, 90);
            let cat = self.pick_category();
            let product = self.pick_product(cat);
            self.view(d, t, View::Product(product));
            self.step(&mut t, 1, 4);
            self.product_viewed(d, t, product);
            // Big-ticket items get looked at far more than they get bought.
            let p = if product.price_fen > 300_000 {
                add_rate * 0.25
            } else {
                add_rate
            };
            if self.rng.random_bool(p) {
                self.step(&mut t, 5, 60);
                let quantity = match product.category {
                    Category::Food | Category::Beauty => {
                        weighted(&mut self.rng, &[(1, 6), (2, 3), (3, 1)])
                    }
                    _ => 1,
                };
                self.cart.push(CartLine { product, quantity });
                let mut props = product_props(product, self.cart.len());
                props.insert("cart_id".into(), json!(self.cart_id));
                props.insert("quantity".into(), json!(quantity));
                self.track(d, t, "Product Added", Value::Object(props));
            }
        }

        if register {
            self.step(&mut t, 20, 120);
            self.sign_up(d, t);
        }

        if !self.cart.is_empty() {
            let checkout_rate = match self.c.archetype {
                Archetype::Heavy => 0.7,
                Archetype::Churned => 0.35,
                _ => 0.45,
            };
            let will_checkout = self.c.devices[d].logged_in && self.rng.random_bool(checkout_rate);
            if will_checkout || self.rng.random_bool(0.5) {
                self.step(&mut t, 5, 40);
                self.view(d, t, View::Cart);
                self.step(&mut t, 1, 3);
                let props = json!({"cart_id": self.cart_id, "products": self.cart_products()});
                self.track(d, t, "Cart Viewed", props);
            }
            if will_checkout {
                self.step(&mut t, 10, 60);
                t = self.checkout(d, t);
            }
        }

        if app && self.c.telemetry && self.rng.random_bool(0.5) {
            self.step(&mut t, 30, 300);
            self.telemetry(d, t);
        }
        if self.registered && self.rng.random_bool(0.015) {
            let subject = if self.c.profile.chinese {
                *pick(
                    &mut self.rng,
                    &["账号无法登录", "修改手机号", "发票问题", "积分没有到账"],
                )
            } else {
                *pick(
                    &mut self.rng,
                    &["Cannot log in", "Change my phone number", "Invoice request"],
                )
            };
            let at = t + self.rng.random_range(HOUR_MS..2 * DAY_MS);
            self.support_ticket(at, None, subject);
        }
        t
    }

    fn checkout(&mut self, d: usize, mut t: i64) -> i64 {
        self.checkouts += 1;
        let order_id = format!(
            "CO{}{:06}{:03}",
            DateTime::<Utc>::from_timestamp_millis(t)
                .map(|dt| dt.format("%y%m%d").to_string())
                .unwrap_or_default(),
            self.c.index,
            self.checkouts
        );
        let subtotal: i64 = self
            .cart
            .iter()
            .map(|l| l.product.price_fen * i64::from(l.quantity))
            .sum();
        let products = self.cart_products();
        self.track(
            d,
            t,
            "Checkout Started",
            json!({
                "order_id": order_id,
                "value": fen_to_yuan(subtotal),
                "revenue": fen_to_yuan(subtotal),
                "currency": "CNY",
                "products": products,
            }),
        );
        self.step(&mut t, 2, 10);
        self.view(d, t, View::Checkout);
        if !self.rng.random_bool(0.82) {
            // Abandoned at payment: the cart survives for a later visit.
            return t;
        }
        self.orders += 1;

        let (coupon, discount) =
            if self.orders == 1 && subtotal >= 9_900 && self.rng.random_bool(0.6) {
                (Some("NEW20"), 2_000)
            } else if subtotal >= 50_000 && self.rng.random_bool(0.15) {
                (Some("SAVE50"), 5_000)
            } else if self.c.archetype == Archetype::Heavy && self.rng.random_bool(0.25) {
                (Some("VIP95"), subtotal * 5 / 100)
            } else {
                (None, 0)
            };
        let shipping = if subtotal >= 9_900 { 0 } else { 1_000 };
        let revenue = subtotal - discount;
        let total = revenue + shipping;
        let affiliation = if self.c.devices[d].model.kind.is_app() {
            "Cohort Shop App"
        } else {
            "Cohort Shop Web"
        };
        let mut props = json!({
            "order_id": order_id,
            "affiliation": affiliation,
            "total": fen_to_yuan(total),
            "subtotal": fen_to_yuan(subtotal),
            "revenue": fen_to_yuan(revenue),
            "shipping": fen_to_yuan(shipping),
            "tax": 0.0,
            "discount": fen_to_yuan(discount),
            "currency": "CNY",
            "payment_method": self.c.profile.payment,
            "products": products,
        });
        if let (Some(code), Some(obj)) = (coupon, props.as_object_mut()) {
            obj.insert("coupon".into(), json!(code));
        }
        self.step(&mut t, 20, 120);
        self.track(d, t, "Order Completed", props);
        self.revenue_fen += revenue;
        self.step(&mut t, 1, 3);
        self.view(d, t, View::Confirmation);

        match self.orders {
            3 => self.vip_identify(d, t + SECOND_MS, "silver"),
            8 => self.vip_identify(d, t + SECOND_MS, "gold"),
            _ => {}
        }

        let has_apparel = self
            .cart
            .iter()
            .any(|l| l.product.category == Category::Apparel);
        let refund_rate = if has_apparel { 0.12 } else { 0.04 };
        if self.rng.random_bool(refund_rate) {
            let at = t + self.rng.random_range(2 * DAY_MS..12 * DAY_MS);
            let reason = if self.c.profile.chinese {
                *pick(
                    &mut self.rng,
                    &["尺码不合适", "质量问题", "不想要了", "发错货"],
                )
            } else {
                *pick(
                    &mut self.rng,
                    &["Wrong size", "Item defective", "Changed my mind"],
                )
            };
            self.server_track(
                at,
                "Order Refunded",
                json!({
                    "order_id": order_id,
                    "total": fen_to_yuan(total),
                    "currency": "CNY",
                    "reason": reason,
                    "products": self.cart_products(),
                }),
            );
        }
        if self.rng.random_bool(0.07) {
            let subject = if self.c.profile.chinese {
                *pick(
                    &mut self.rng,
                    &["物流太慢", "商品破损", "少发了商品", "如何开发票"],
                )
            } else {
                *pick(
                    &mut self.rng,
                    &["Where is my order?", "Damaged item", "Missing item"],
                )
            };
            let at = t + self.rng.random_range(DAY_MS..6 * DAY_MS);
            self.support_ticket(at, Some(order_id), subject);
        }

        self.cart.clear();
        self.cart_id = uuid_from_rng(&mut self.rng);
        t
    }

    fn support_ticket(&mut self, at: i64, order_id: Option<String>, subject: &str) {
        self.tickets += 1;
        let ticket_id = format!("TK{:06}{:03}", self.c.index, self.tickets);
        let channel = if self.c.profile.chinese {
            *pick(&mut self.rng, &["in_app", "wechat", "phone", "email"])
        } else {
            *pick(&mut self.rng, &["in_app", "email", "phone", "chat"])
        };
        let priority = weighted(
            &mut self.rng,
            &[("low", 5), ("normal", 10), ("high", 3), ("urgent", 1)],
        );
        let mut props = json!({
            "ticket_id": ticket_id,
            "subject": subject,
            "channel": channel,
            "priority": priority,
        });
        if let (Some(id), Some(obj)) = (order_id, props.as_object_mut()) {
            obj.insert("order_id".into(), json!(id));
        }
        if !self.server_track(at, "Support Ticket Created", props) {
            return;
        }
        // Some tickets are still open when the window ends.
        if self.rng.random_bool(0.9) {
            let hours = weighted(&mut self.rng, &[((1, 8), 5), ((8, 24), 3), ((24, 72), 2)]);
            let minutes = self.rng.random_range(hours.0 * 60..hours.1 * 60);
            let satisfaction =
                weighted(&mut self.rng, &[(5, 40), (4, 30), (3, 15), (2, 9), (1, 6)]);
            self.server_track(
                at + minutes * MINUTE_MS,
                "Support Ticket Resolved",
                json!({
                    "ticket_id": ticket_id,
                    "resolution_hours": (minutes as f64 / 6.0).round() / 10.0,
                    "satisfaction": satisfaction,
                }),
            );
        }
    }

    fn sign_up(&mut self, d: usize, t: i64) {
        self.registered = true;
        self.c.devices[d].logged_in = true;
        let p = &self.c.profile;
        let mut traits = json!({
            "name": p.name,
            "first_name": p.first_name,
            "last_name": p.last_name,
            "email": p.email,
            "phone": p.phone,
            "address": {
                "city": if p.locale == "zh-CN" { p.city.name } else { p.city.name_en },
                "country": p.city.country,
            },
            "created_at": format_ms(t),
            "signup_channel": p.channel,
            "vip_level": "regular",
            "marketing_opt_in": self.rng.random_bool(0.6),
        });
        if let Some(obj) = traits.as_object_mut() {
            if let Some(g) = p.gender {
                obj.insert("gender".into(), json!(g));
            }
            if let Some(b) = &p.birthday {
                obj.insert("birthday".into(), json!(b));
            }
        }
        self.identify(d, t, traits);
        let method = self.login_method();
        self.track(
            d,
            t + SECOND_MS,
            "Signed Up",
            json!({"method": method, "signup_channel": self.c.profile.channel}),
        );
    }

    fn login(&mut self, d: usize, t: i64) {
        self.c.devices[d].logged_in = true;
        let traits = json!({"email": self.c.profile.email, "name": self.c.profile.name});
        self.identify(d, t, traits);
        let method = self.login_method();
        self.track(d, t + SECOND_MS, "Logged In", json!({"method": method}));
    }

    fn login_method(&mut self) -> &'static str {
        if self.c.profile.chinese {
            weighted(
                &mut self.rng,
                &[
                    ("wechat", 45),
                    ("sms_code", 35),
                    ("password", 15),
                    ("alipay", 5),
                ],
            )
        } else {
            weighted(
                &mut self.rng,
                &[("password", 50), ("apple", 25), ("google", 25)],
            )
        }
    }

    fn vip_identify(&mut self, d: usize, t: i64, level: &str) {
        self.identify(d, t, json!({"vip_level": level}));
    }

    fn telemetry(&mut self, d: usize, t: i64) {
        let (version, _) = self.app_version(d, t);
        let model = self.c.devices[d].model;
        let wifi = self.session_ip == 0;
        let rng = &mut self.rng;
        let battery: i64 = if rng.random_bool(0.01) {
            rng.random_range(0..=3)
        } else {
            rng.random_range(12..=100)
        };
        let temperature = if rng.random_bool(model.overheat_rate) {
            rng.random_range(52.0..68.0)
        } else {
            rng.random_range(29.0..41.5)
        };
        let signal: i64 = if rng.random_bool(0.01) {
            rng.random_range(-125..=-116)
        } else if wifi {
            rng.random_range(-72..=-35)
        } else {
            rng.random_range(-108..=-70)
        };
        let network = if wifi {
            "wifi"
        } else if rng.random_bool(0.6) {
            "5g"
        } else {
            "4g"
        };
        let charging = rng.random_bool(0.15);
        self.track(
            d,
            t,
            "Device Telemetry",
            json!({
                "battery_level": battery,
                "charging": charging,
                "temperature_c": (temperature * 10.0_f64).round() / 10.0,
                "signal_dbm": signal,
                "network": network,
                "app_version": version,
            }),
        );
    }

    fn pick_category(&mut self) -> Category {
        if self.rng.random_bool(0.65) {
            *pick(&mut self.rng, &self.c.favourites)
        } else {
            *pick(&mut self.rng, &Category::ALL)
        }
    }

    fn pick_product(&mut self, category: Category) -> &'static Product {
        let n = catalog::in_category(category).count();
        let i = self.rng.random_range(0..n.max(1));
        catalog::in_category(category)
            .nth(i)
            .unwrap_or(&catalog::products()[0])
    }

    fn cart_products(&self) -> Value {
        Value::Array(
            self.cart
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let mut props = product_props(l.product, i + 1);
                    props.insert("quantity".into(), json!(l.quantity));
                    Value::Object(props)
                })
                .collect(),
        )
    }

    fn app_version(&self, d: usize, t: i64) -> (&'static str, &'static str) {
        let lag = self.c.devices[d].update_lag_ms;
        let mut current = (RELEASES[0].1, RELEASES[0].2);
        for (frac, version, build) in RELEASES {
            let released = self.window.start_ms + (self.window.len_ms() as f64 * frac) as i64;
            if released + lag <= t {
                current = (version, build);
            }
        }
        current
    }

    /// A page call (web) or screen call (app) for `view`.
    fn view(&mut self, d: usize, t: i64, view: View<'_>) {
        let kind = self.c.devices[d].model.kind;
        let zh = self.c.profile.locale == "zh-CN";
        let label = |zh_title: &str, en_title: &str| {
            if zh {
                zh_title.to_string()
            } else {
                en_title.to_string()
            }
        };
        let (name, category, path, title) = match view {
            View::Home => (
                "Home",
                None,
                "/".to_string(),
                label("Cohort Shop 首页", "Cohort Shop"),
            ),
            View::Search(q) => (
                "Search Results",
                None,
                format!("/search?q={}", url_escape(q)),
                label(&format!("{q} - 搜索结果"), &format!("Search: {q}")),
            ),
            View::Product(p) => (
                "Product Detail",
                Some(p.category.label()),
                format!("/{}/{}", p.category.slug(), p.id),
                p.name.to_string(),
            ),
            View::Cart => (
                "Cart",
                None,
                "/cart".to_string(),
                label("购物车", "Your cart"),
            ),
            View::Checkout => (
                "Checkout",
                None,
                "/checkout".to_string(),
                label("结算", "Checkout"),
            ),
            View::Confirmation => (
                "Order Confirmation",
                None,
                "/checkout/success".to_string(),
                label("下单成功", "Thank you for your order"),
            ),
        };
        let mut m = Map::new();
        if kind.is_app() {
            m.insert("type".into(), json!("screen"));
            m.insert("name".into(), json!(name));
            let mut props = Map::new();
            if let View::Product(p) = view {
                props.insert("product_id".into(), json!(p.id));
            }
            if let Some(c) = category {
                props.insert("category".into(), json!(c));
            }
            m.insert("properties".into(), Value::Object(props));
        } else {
            let url = format!("{SHOP_URL}{path}");
            let referrer = match self.page.as_ref().and_then(|p| p.get("url")) {
                Some(prev) => prev.clone(),
                None => json!(self.external_referrer()),
            };
            let search = path
                .find('?')
                .map(|i| path[i..].to_string())
                .unwrap_or_default();
            let page = json!({
                "path": path.split('?').next().unwrap_or("/"),
                "url": url,
                "title": title,
                "referrer": referrer,
                "search": search,
            });
            self.page = Some(page.clone());
            m.insert("type".into(), json!("page"));
            m.insert("name".into(), json!(name));
            if let Some(c) = category {
                m.insert("category".into(), json!(c));
            }
            m.insert("properties".into(), page);
        }
        self.emit_device(d, t, m);
    }

    fn external_referrer(&mut self) -> &'static str {
        if self.c.profile.chinese {
            pick::<&str>(
                &mut self.rng,
                &[
                    "https://www.baidu.com/",
                    "https://www.xiaohongshu.com/",
                    "https://weixin.qq.com/",
                    "",
                ],
            )
        } else {
            pick::<&str>(
                &mut self.rng,
                &["https://www.google.com/", "https://www.instagram.com/", ""],
            )
        }
    }

    fn product_viewed(&mut self, d: usize, t: i64, p: &'static Product) {
        let props = product_props(p, 0);
        self.track(d, t, "Product Viewed", Value::Object(props));
    }

    fn track(&mut self, d: usize, t: i64, event: &str, properties: Value) {
        let mut m = Map::new();
        m.insert("type".into(), json!("track"));
        m.insert("event".into(), json!(event));
        m.insert("properties".into(), properties);
        self.emit_device(d, t, m);
    }

    fn identify(&mut self, d: usize, t: i64, traits: Value) {
        let mut m = Map::new();
        m.insert("type".into(), json!("identify"));
        m.insert("traits".into(), traits);
        self.emit_device(d, t, m);
    }

    /// A track call from the shop's backend: known user, no device.
    fn server_track(&mut self, t: i64, event: &str, properties: Value) -> bool {
        if t > self.window.end_ms {
            return false;
        }
        let m = json!({
            "type": "track",
            "event": event,
            "userId": self.c.user_id,
            "properties": properties,
            "timestamp": format_ms(t),
            "context": {"library": {"name": "analytics-node", "version": "2.1.2"}},
        });
        self.out.push((t, m));
        true
    }

    fn emit_device(&mut self, d: usize, t: i64, mut m: Map<String, Value>) {
        // Anything past the window's end is simply never sent, as if the export ran then.
        if t > self.window.end_ms {
            return;
        }
        let dev = &self.c.devices[d];
        if dev.logged_in {
            m.insert("userId".into(), json!(self.c.user_id));
        }
        m.insert("anonymousId".into(), json!(dev.anonymous_id));
        m.insert("timestamp".into(), json!(format_ms(t)));
        let context = self.device_context(d, t);
        m.insert("context".into(), context);
        self.out.push((t, Value::Object(m)));
    }

    fn device_context(&self, d: usize, t: i64) -> Value {
        let dev = &self.c.devices[d];
        let p = &self.c.profile;
        let model = dev.model;
        let mut ctx = json!({
            "device": {
                "id": dev.device_id,
                "type": model.kind.as_str(),
                "model": model.model,
                "manufacturer": model.manufacturer,
            },
            "os": {"name": model.os_name, "version": dev.os_version},
            "ip": dev.ips[self.session_ip],
            "locale": p.locale,
            "timezone": p.city.timezone,
            "screen": {"width": model.screen.0, "height": model.screen.1},
        });
        let Some(obj) = ctx.as_object_mut() else {
            return ctx;
        };
        match model.kind {
            DeviceKind::Web => {
                obj.insert(
                    "library".into(),
                    json!({"name": "analytics.js", "version": "next-1.70.0"}),
                );
                if let Some(ua) = model.user_agent {
                    obj.insert("userAgent".into(), json!(ua));
                }
                if let Some(page) = &self.page {
                    obj.insert("page".into(), page.clone());
                }
            }
            DeviceKind::Ios | DeviceKind::Android => {
                let library = if model.kind == DeviceKind::Ios {
                    json!({"name": "analytics-swift", "version": "1.5.11"})
                } else {
                    json!({"name": "analytics-kotlin", "version": "1.15.0"})
                };
                obj.insert("library".into(), library);
                let (version, build) = self.app_version(d, t);
                obj.insert(
                    "app".into(),
                    json!({"name": APP_NAME, "version": version, "build": build, "namespace": APP_NAMESPACE}),
                );
                let wifi = self.session_ip == 0;
                obj.insert(
                    "network".into(),
                    json!({"wifi": wifi, "cellular": !wifi, "carrier": p.carrier}),
                );
            }
        }
        ctx
    }
}

fn product_props(p: &Product, position: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("product_id".into(), json!(p.id));
    m.insert("sku".into(), json!(p.sku));
    m.insert("category".into(), json!(p.category.label()));
    m.insert("name".into(), json!(p.name));
    m.insert("brand".into(), json!(p.brand));
    m.insert("price".into(), json!(p.price()));
    m.insert("currency".into(), json!("CNY"));
    if position > 0 {
        m.insert("position".into(), json!(position));
    }
    m.insert(
        "url".into(),
        json!(format!("{SHOP_URL}/{}/{}", p.category.slug(), p.id)),
    );
    m
}

/// Percent-encodes a search query for a URL path; spaces become `+` like a search form sends.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Benchmark stream

const STREAM_EVENTS: &[(&str, u32)] = &[
    ("Product Viewed", 40),
    ("Products Searched", 10),
    ("Product Added", 12),
    ("Cart Viewed", 6),
    ("Checkout Started", 4),
    ("Order Completed", 3),
    ("Application Opened", 15),
    ("Device Telemetry", 10),
];

/// `count` loosely related track/page/identify messages, cheap to make, for load tests.
///
/// Spread over `count / 50` (at least one) customers whose IDs are derived from the seed and
/// the customer number, so repeated runs with one seed hit the same profiles. Timestamps are
/// spread over the 30 days before the call and are *not* sorted. Unlike [`generate`] there is no
/// story: each message is drawn independently.
pub fn stream_events(count: usize, seed: u64) -> impl Iterator<Item = Value> {
    let customers = (count / 50).max(1) as u64;
    let now = Utc::now().timestamp_millis();
    let mut rng = StdRng::seed_from_u64(mix(seed ^ 0x7374_7265_616d));
    let products = catalog::products();
    (0..count as u64).map(move |i| {
        let c = rng.random_range(0..customers);
        let ident = mix(seed ^ mix(c.wrapping_add(0x5eed)));
        let user_id = format!("bench_{:x}_{c}", seed & 0xffff_ffff);
        let anonymous_id = uuid_from_pair(ident, 0xa5a5);
        // A fifth of a customer's traffic predates their login.
        let known = !(ident >> 7).is_multiple_of(5) || rng.random_bool(0.5);
        let t = now - rng.random_range(0..30 * DAY_MS);
        let mut m = Map::new();
        let roll = rng.random_range(0..100u32);
        if roll < 8 {
            m.insert("type".into(), json!("identify"));
            m.insert(
                "traits".into(),
                json!({
                    "email": format!("bench{c}@example.com"),
                    "name": format!("Bench User {c}"),
                    "vip_level": pick(&mut rng, &["regular", "silver", "gold"]),
                }),
            );
            m.insert("userId".into(), json!(user_id));
        } else if roll < 30 {
            let p = pick(&mut rng, products);
            m.insert("type".into(), json!("page"));
            m.insert("name".into(), json!("Product Detail"));
            m.insert(
                "properties".into(),
                json!({"path": format!("/{}/{}", p.category.slug(), p.id), "title": p.name}),
            );
        } else {
            let event = weighted(&mut rng, STREAM_EVENTS);
            let p = pick(&mut rng, products);
            let props = match event {
                "Products Searched" => json!({"query": pick(&mut rng, p.category.search_terms())}),
                "Order Completed" | "Checkout Started" => json!({
                    "order_id": format!("BO{seed:x}{i}"),
                    "revenue": p.price(),
                    "currency": "CNY",
                    "products": [{"product_id": p.id, "price": p.price(), "quantity": 1}],
                }),
                "Device Telemetry" => json!({
                    "battery_level": rng.random_range(5..=100),
                    "temperature_c": f64::from(rng.random_range(290..420)) / 10.0,
                    "signal_dbm": rng.random_range(-110..=-40),
                }),
                "Application Opened" => json!({"from_background": rng.random_bool(0.5)}),
                _ => json!({
                    "product_id": p.id,
                    "category": p.category.label(),
                    "name": p.name,
                    "price": p.price(),
                    "currency": "CNY",
                }),
            };
            m.insert("type".into(), json!("track"));
            m.insert("event".into(), json!(event));
            m.insert("properties".into(), props);
        }
        if m.get("type").and_then(Value::as_str) != Some("identify") {
            if known {
                m.insert("userId".into(), json!(user_id));
            }
            m.insert("anonymousId".into(), json!(anonymous_id));
        }
        m.insert("messageId".into(), json!(uuid_from_pair(mix(seed), i)));
        m.insert("timestamp".into(), json!(format_ms(t)));
        m.insert(
            "context".into(),
            json!({"library": {"name": "cohort-demo", "version": env!("CARGO_PKG_VERSION")}}),
        );
        Value::Object(m)
    })
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// SplitMix64's finaliser: turns structured seeds (0, 1, 2, …) into well-spread ones.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A version-4-shaped UUID that is a pure function of its inputs.
fn uuid_from_pair(a: u64, b: u64) -> String {
    let hi = mix(a ^ mix(b));
    let lo = mix(hi ^ b.rotate_left(17));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn uuid_from_rng(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

/// RFC 3339 with milliseconds and `Z`, as Segment's libraries send it.
fn format_ms(ms: i64) -> String {
    // Out-of-range instants cannot occur: the window is clamped inside `end`, which is a valid
    // DateTime; the fallback only keeps this total.
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Uniform choice from a non-empty static table.
fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn weighted<T: Copy>(rng: &mut StdRng, items: &[(T, u32)]) -> T {
    weighted_by(rng, items, |(_, w)| *w).0
}

fn weighted_pair(
    rng: &mut StdRng,
    items: &'static [(&'static str, &'static str, u32)],
) -> (&'static str, &'static str) {
    let (a, b, _) = *weighted_by(rng, items, |(_, _, w)| *w);
    (a, b)
}

fn weighted_index(rng: &mut StdRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (i, w) in weights.iter().enumerate() {
        if roll < *w {
            return i;
        }
        roll -= w;
    }
    weights.len().saturating_sub(1)
}

/// Weighted choice from a non-empty static table with at least one positive weight.
fn weighted_by<'a, T>(rng: &mut StdRng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let weights: Vec<u32> = items.iter().map(&weight).collect();
    &items[weighted_index(rng, &weights)]
}
