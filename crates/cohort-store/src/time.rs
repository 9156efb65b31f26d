use chrono::{DateTime, TimeZone, Utc};

pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

pub(crate) fn format_micros(us: i64) -> String {
    cohort_core::message::format_timestamp(from_micros(us))
}

pub(crate) use cohort_profile::day_of;
