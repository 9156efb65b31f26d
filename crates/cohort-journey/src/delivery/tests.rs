use super::*;
use crate::definition::QuietHours;
use chrono::{TimeDelta, TimeZone};
use chrono_tz::Tz;
use serde_json::json;

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
}

fn rules(json: serde_json::Value) -> DeliveryRules {
    DeliveryRules::from_json(&json.to_string()).unwrap()
}

fn marketing(kind: ChannelKind) -> SendRequest<'static> {
    SendRequest {
        channel: match kind {
            ChannelKind::Email => "email-main",
            ChannelKind::Sms => "sms-main",
            ChannelKind::Push => "push-main",
            ChannelKind::Webhook => "hook",
        },
        kind,
        transactional: false,
        quiet_hours: QuietHours::Hold,
    }
}

fn hold(until: DateTime<Utc>) -> Decision {
    Decision::Hold {
        until,
        reason: HoldReason::QuietHours,
    }
}

fn at_zone(r: &DeliveryRules, request: &SendRequest<'_>, zone: Tz, now: DateTime<Utc>) -> Decision {
    decide(r, request, &CustomerFacts::new(zone), now)
}

#[test]
fn a_quiet_window_across_midnight() {
    let r = rules(json!({"quiet_hours": {"default": {"start": "21:00", "end": "08:00"}}}));
    let sh = chrono_tz::Asia::Shanghai; // UTC+8, no daylight saving
    let sms = marketing(ChannelKind::Sms);
    // Local times on 2026-05-01 / 02, written in UTC (local − 8h).
    let next_morning = utc(2026, 5, 2, 0, 0, 0);
    assert_eq!(
        at_zone(&r, &sms, sh, utc(2026, 5, 1, 12, 59, 59)),
        Decision::Send,
        "20:59:59"
    );
    assert_eq!(
        at_zone(&r, &sms, sh, utc(2026, 5, 1, 13, 0, 0)),
        hold(next_morning),
        "21:00"
    );
    assert_eq!(
        at_zone(&r, &sms, sh, utc(2026, 5, 1, 15, 59, 0)),
        hold(next_morning),
        "23:59"
    );
    assert_eq!(
        at_zone(&r, &sms, sh, utc(2026, 5, 1, 16, 0, 0)),
        hold(next_morning),
        "00:00"
    );
    assert_eq!(
        at_zone(&r, &sms, sh, utc(2026, 5, 1, 23, 59, 59)),
        hold(next_morning),
        "07:59:59"
    );
    assert_eq!(at_zone(&r, &sms, sh, next_morning), Decision::Send, "08:00");
    let skip = SendRequest {
        quiet_hours: QuietHours::Skip,
        ..sms
    };
    assert_eq!(
        at_zone(&r, &skip, sh, utc(2026, 5, 1, 15, 0, 0)),
        Decision::Skip(SkipReason::QuietHours)
    );
    // Transactional messages are not held.
    let receipt = SendRequest {
        transactional: true,
        ..sms
    };
    assert_eq!(
        at_zone(&r, &receipt, sh, utc(2026, 5, 1, 15, 0, 0)),
        Decision::Send
    );
    // The same instant is daytime for a customer in New York.
    assert_eq!(
        at_zone(
            &r,
            &sms,
            chrono_tz::America::New_York,
            utc(2026, 5, 1, 15, 0, 0)
        ),
        Decision::Send
    );
}

#[test]
fn a_window_inside_one_day_and_per_channel_overrides() {
    let r = rules(json!({"quiet_hours": {
        "default": {"start": "12:00", "end": "14:00"},
        "channels": {"sms": {"start": "20:00", "end": "09:00"}, "webhook": null}
    }}));
    let z = chrono_tz::UTC;
    let noon = utc(2026, 5, 1, 12, 30, 0);
    assert_eq!(
        at_zone(&r, &marketing(ChannelKind::Email), z, noon),
        hold(utc(2026, 5, 1, 14, 0, 0))
    );
    assert_eq!(
        at_zone(&r, &marketing(ChannelKind::Sms), z, noon),
        Decision::Send
    );
    assert_eq!(
        at_zone(&r, &marketing(ChannelKind::Webhook), z, noon),
        Decision::Send
    );
    let night = utc(2026, 5, 1, 22, 0, 0);
    assert_eq!(
        at_zone(&r, &marketing(ChannelKind::Sms), z, night),
        hold(utc(2026, 5, 2, 9, 0, 0))
    );
    assert_eq!(
        at_zone(&r, &marketing(ChannelKind::Email), z, night),
        Decision::Send
    );
}

#[test]
fn a_window_that_opens_at_a_time_the_spring_change_skips() {
    let r = rules(json!({"quiet_hours": {"default": {"start": "22:00", "end": "02:30"}}}));
    let sms = marketing(ChannelKind::Sms);
    // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 never shows.
    let ny = chrono_tz::America::New_York;
    let change = utc(2026, 3, 8, 7, 0, 0);
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 3, 8, 6, 0, 0)),
        hold(change),
        "01:00 EST"
    );
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 3, 8, 6, 59, 59)),
        hold(change),
        "01:59:59 EST"
    );
    assert_eq!(at_zone(&r, &sms, ny, change), Decision::Send, "03:00 EDT");
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 3, 8, 3, 0, 0)),
        hold(change),
        "22:00 EST the night before"
    );
    // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    let berlin = chrono_tz::Europe::Berlin;
    let change = utc(2026, 3, 29, 1, 0, 0);
    assert_eq!(
        at_zone(&r, &sms, berlin, utc(2026, 3, 28, 23, 30, 0)),
        hold(change),
        "00:30 CET"
    );
    assert_eq!(at_zone(&r, &sms, berlin, change), Decision::Send);
    // A window whose start is skipped begins with the change.
    let r = rules(json!({"quiet_hours": {"default": {"start": "02:15", "end": "06:00"}}}));
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 3, 8, 6, 59, 0)),
        Decision::Send,
        "01:59 EST"
    );
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 3, 8, 7, 0, 0)),
        hold(utc(2026, 3, 8, 10, 0, 0))
    );
}

#[test]
fn a_window_over_the_repeated_fall_back_hour() {
    // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:00–02:00 shows twice.
    let ny = chrono_tz::America::New_York;
    let sms = marketing(ChannelKind::Sms);
    let r = rules(json!({"quiet_hours": {"default": {"start": "00:00", "end": "01:30"}}}));
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 11, 1, 5, 0, 0)),
        hold(utc(2026, 11, 1, 5, 30, 0)),
        "01:00 EDT"
    );
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 11, 1, 5, 45, 0)),
        Decision::Send,
        "01:45 EDT"
    );
    // The wall clock reads 01:10 again: quiet, until it reads 01:30 again.
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 11, 1, 6, 10, 0)),
        hold(utc(2026, 11, 1, 6, 30, 0)),
        "01:10 EST"
    );
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 11, 1, 6, 30, 0)),
        Decision::Send,
        "01:30 EST"
    );
    // A night window over the change ends at 07:00 EST, a 10-hour night rather than 9.
    let r = rules(json!({"quiet_hours": {"default": {"start": "22:00", "end": "07:00"}}}));
    let opens = utc(2026, 11, 1, 12, 0, 0);
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 11, 1, 2, 0, 0)),
        hold(opens),
        "22:00 EDT"
    );
    assert_eq!(
        at_zone(&r, &sms, ny, utc(2026, 11, 1, 6, 30, 0)),
        hold(opens),
        "01:30 EST"
    );
}

/// Sends one marketing SMS to `customer` at `at` and decides on the next.
fn send_then_decide(
    r: &DeliveryRules,
    store: &mut MemoryDelivery,
    customer: i64,
    zone: Tz,
    sent_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Decision {
    store
        .record_send(&SendRecord {
            key: format!("j:1:{customer}:{}", sent_at.timestamp()),
            customer,
            channel: "sms-main".into(),
            kind: ChannelKind::Sms,
            purpose: Purpose::Marketing,
            at: sent_at,
        })
        .unwrap();
    let facts = customer_facts(store, r, customer, ChannelKind::Sms, zone, now).unwrap();
    decide(r, &marketing(ChannelKind::Sms), &facts, now)
}

fn capped(scope: CapScope, period: Period) -> Decision {
    Decision::Skip(SkipReason::FrequencyCap { scope, period })
}

#[test]
fn daily_caps_count_the_customers_own_calendar_day() {
    let r = rules(json!({"caps": {"sms": {"day": 1}}}));
    let sms_day = capped(CapScope::Channel(ChannelKind::Sms), Period::Day);
    let mut store = MemoryDelivery::default();
    let kiritimati = chrono_tz::Pacific::Kiritimati; // UTC+14
    // 23:59 and 00:01 local on June 1 / 2 in Kiritimati: 09:59 and 10:01 UTC on June 1.
    let (late, early) = (utc(2026, 6, 1, 9, 59, 0), utc(2026, 6, 1, 10, 1, 0));
    assert_eq!(
        send_then_decide(&r, &mut store, 1, kiritimati, late, early),
        Decision::Send
    );
    assert_eq!(
        send_then_decide(
            &r,
            &mut store,
            2,
            kiritimati,
            late,
            late + TimeDelta::seconds(30)
        ),
        sms_day
    );
    // In UTC both instants are on June 1: one day, capped.
    assert_eq!(
        send_then_decide(&r, &mut store, 3, chrono_tz::UTC, late, early),
        sms_day
    );
    // Pago Pago (UTC−11): 23:59 May 31 and 00:01 June 1 local are 10:59 and 11:01 UTC.
    let pago = chrono_tz::Pacific::Pago_Pago;
    let (late, early) = (utc(2026, 6, 1, 10, 59, 0), utc(2026, 6, 1, 11, 1, 0));
    assert_eq!(
        send_then_decide(&r, &mut store, 4, pago, late, early),
        Decision::Send
    );
    assert_eq!(
        send_then_decide(&r, &mut store, 5, chrono_tz::UTC, late, early),
        sms_day
    );
    // New York's spring-forward day begins at 00:00 EST: 23:59 EST the night before is
    // another day, 00:30 EST the same one as 10:00 EDT.
    let ny = chrono_tz::America::New_York;
    let ten = utc(2026, 3, 8, 14, 0, 0);
    assert_eq!(
        send_then_decide(&r, &mut store, 6, ny, utc(2026, 3, 8, 4, 59, 0), ten),
        Decision::Send
    );
    assert_eq!(
        send_then_decide(&r, &mut store, 7, ny, utc(2026, 3, 8, 5, 30, 0), ten),
        sms_day
    );
}

#[test]
fn weekly_and_monthly_caps_count_the_customers_own_weeks_and_months() {
    let week = rules(json!({"caps": {"global": {"week": 1}}}));
    let mut store = MemoryDelivery::default();
    let kiritimati = chrono_tz::Pacific::Kiritimati;
    // Sunday 2026-05-31 23:59 and Monday 2026-06-01 00:01 in Kiritimati.
    let (sunday, monday) = (utc(2026, 5, 31, 9, 59, 0), utc(2026, 5, 31, 10, 1, 0));
    assert_eq!(
        send_then_decide(&week, &mut store, 1, kiritimati, sunday, monday),
        Decision::Send
    );
    assert_eq!(
        send_then_decide(&week, &mut store, 2, chrono_tz::UTC, sunday, monday),
        capped(CapScope::Global, Period::Week)
    );
    let month = rules(json!({"caps": {"global": {"month": 1}}}));
    // 23:59 on March 31 and 00:01 on April 1 in Kiritimati.
    let (march, april) = (utc(2026, 3, 31, 9, 59, 0), utc(2026, 3, 31, 10, 1, 0));
    assert_eq!(
        send_then_decide(&month, &mut store, 3, kiritimati, march, april),
        Decision::Send
    );
    assert_eq!(
        send_then_decide(
            &month,
            &mut store,
            4,
            kiritimati,
            march,
            march + TimeDelta::seconds(30)
        ),
        capped(CapScope::Global, Period::Month)
    );
}

#[test]
fn every_cap_is_checked_and_named() {
    let r = rules(
        json!({"caps": {"global": {"day": 5, "week": 3, "month": 10}, "sms": {"month": 2}, "email": {"day": 1}}}),
    );
    let z = chrono_tz::UTC;
    let now = utc(2026, 5, 6, 12, 0, 0);
    let mut facts = CustomerFacts::new(z);
    facts.sent = PeriodCounts {
        day: 2,
        week: 2,
        month: 2,
    };
    facts.sent_on_kind = PeriodCounts {
        day: 0,
        week: 1,
        month: 1,
    };
    assert_eq!(
        decide(&r, &marketing(ChannelKind::Sms), &facts, now),
        Decision::Send
    );
    facts.sent_on_kind.month = 2;
    let d = decide(&r, &marketing(ChannelKind::Sms), &facts, now);
    assert_eq!(d.to_string(), "skip:frequency_cap:sms:month");
    facts.sent.week = 3;
    let d = decide(&r, &marketing(ChannelKind::Sms), &facts, now);
    assert_eq!(d.to_string(), "skip:frequency_cap:global:week");
    let Decision::Skip(reason) = d else {
        panic!("{d}")
    };
    assert_eq!(reason.code(), "frequency_cap");
    // Push has no cap of its own; the global one applies.
    facts.sent_on_kind = PeriodCounts::default();
    assert_eq!(
        decide(&r, &marketing(ChannelKind::Push), &facts, now).to_string(),
        "skip:frequency_cap:global:week"
    );
    // Counts read through the store only for caps that exist.
    let mut store = MemoryDelivery::default();
    for (i, kind) in [ChannelKind::Email, ChannelKind::Sms, ChannelKind::Email]
        .into_iter()
        .enumerate()
    {
        store
            .record_send(&SendRecord {
                key: format!("k{i}"),
                customer: 1,
                channel: "c".into(),
                kind,
                purpose: Purpose::Marketing,
                at: now - TimeDelta::hours(i as i64),
            })
            .unwrap();
    }
    let facts = customer_facts(&mut store, &r, 1, ChannelKind::Email, z, now).unwrap();
    assert_eq!(
        facts.sent,
        PeriodCounts {
            day: 3,
            week: 3,
            month: 3
        }
    );
    assert_eq!(
        facts.sent_on_kind,
        PeriodCounts {
            day: 2,
            week: 0,
            month: 0
        }
    );
}

#[test]
fn transactional_messages_bypass_caps_but_never_consent() {
    let r = rules(json!({"caps": {"global": {"day": 0}}}));
    let z = chrono_tz::UTC;
    let now = utc(2026, 5, 6, 12, 0, 0);
    let sms = marketing(ChannelKind::Sms);
    let otp = SendRequest {
        transactional: true,
        ..sms
    };
    let facts = CustomerFacts::new(z);
    assert_eq!(
        decide(&r, &sms, &facts, now),
        capped(CapScope::Global, Period::Day)
    );
    assert_eq!(decide(&r, &otp, &facts, now), Decision::Send);

    let mut store = MemoryDelivery::default();
    // Unsubscribed from marketing: transactional still goes.
    let identify = json!({"type": "identify", "traits": {"unsubscribed": true}});
    for fact in consent_facts(&identify, &r.consent, now) {
        store.record_consent(1, &fact).unwrap();
    }
    let facts = customer_facts(&mut store, &r, 1, ChannelKind::Sms, z, now).unwrap();
    assert_eq!(
        decide(&r, &sms, &facts, now),
        Decision::Skip(SkipReason::Unsubscribed)
    );
    assert_eq!(decide(&r, &otp, &facts, now), Decision::Send);
    // A STOP reply: no SMS at all.
    let stop = ConsentFact::channel_unsubscribe(ChannelKind::Sms, "sms-main: STOP", now);
    store.record_consent(1, &stop).unwrap();
    let facts = customer_facts(&mut store, &r, 1, ChannelKind::Sms, z, now).unwrap();
    assert_eq!(
        decide(&r, &otp, &facts, now),
        Decision::Skip(SkipReason::Unsubscribed)
    );
    // Do-not-contact: nothing on any channel.
    let dnc = json!({"type": "identify", "traits": {"do_not_contact": true}});
    for fact in consent_facts(&dnc, &r.consent, now) {
        store.record_consent(1, &fact).unwrap();
    }
    let facts = customer_facts(&mut store, &r, 1, ChannelKind::Email, z, now).unwrap();
    let email_receipt = SendRequest {
        kind: ChannelKind::Email,
        ..otp
    };
    assert_eq!(
        decide(&r, &email_receipt, &facts, now).to_string(),
        "skip:do_not_contact"
    );
}

#[test]
fn a_capped_customer_in_quiet_hours_waits_to_be_counted_on_the_day_it_is_sent() {
    let r = rules(json!({
        "caps": {"global": {"day": 1}},
        "quiet_hours": {"default": {"start": "21:00", "end": "08:00"}}
    }));
    let mut store = MemoryDelivery::default();
    let z = chrono_tz::UTC;
    let evening = utc(2026, 5, 6, 22, 0, 0);
    let d = send_then_decide(&r, &mut store, 1, z, utc(2026, 5, 6, 10, 0, 0), evening);
    assert_eq!(d, hold(utc(2026, 5, 7, 8, 0, 0)));
    let facts = customer_facts(
        &mut store,
        &r,
        1,
        ChannelKind::Sms,
        z,
        utc(2026, 5, 7, 8, 0, 0),
    )
    .unwrap();
    assert_eq!(
        decide(
            &r,
            &marketing(ChannelKind::Sms),
            &facts,
            utc(2026, 5, 7, 8, 0, 0)
        ),
        Decision::Send
    );
    // Outside quiet hours, the capped customer is skipped, not held.
    let facts = customer_facts(
        &mut store,
        &r,
        1,
        ChannelKind::Sms,
        z,
        utc(2026, 5, 6, 20, 0, 0),
    )
    .unwrap();
    assert_eq!(
        decide(
            &r,
            &marketing(ChannelKind::Sms),
            &facts,
            utc(2026, 5, 6, 20, 0, 0)
        ),
        capped(CapScope::Global, Period::Day)
    );
}

#[test]
fn rate_limits_hold_for_a_moment_on_the_time_given() {
    let r = rules(
        json!({"rate_limits": {"sms-main": {"per_second": 2}, "push-main": {"per_second": 0.5, "burst": 3}}}),
    );
    let mut limiter = RateLimiter::default();
    let t = utc(2026, 5, 6, 12, 0, 0);
    let ms = |n: i64| t + TimeDelta::milliseconds(n);
    let rate_hold = |until| Decision::Hold {
        until,
        reason: HoldReason::RateLimit,
    };
    assert_eq!(
        limiter.gate(&r, "sms-main", Decision::Send, t),
        Decision::Send
    );
    assert_eq!(
        limiter.gate(&r, "sms-main", Decision::Send, t),
        Decision::Send
    );
    assert_eq!(
        limiter.gate(&r, "sms-main", Decision::Send, t),
        rate_hold(ms(500))
    );
    // Skips and holds pass through without taking a token.
    let skip = Decision::Skip(SkipReason::Unsubscribed);
    assert_eq!(limiter.gate(&r, "sms-main", skip, t), skip);
    assert_eq!(
        limiter.gate(&r, "sms-main", Decision::Send, ms(500)),
        Decision::Send
    );
    assert_eq!(
        limiter.gate(&r, "sms-main", Decision::Send, ms(500)),
        rate_hold(ms(1000))
    );
    // A time behind the last one adds no tokens.
    assert_eq!(
        limiter.gate(&r, "sms-main", Decision::Send, ms(100)),
        rate_hold(ms(600))
    );
    assert_eq!(
        limiter.gate(&r, "sms-main", Decision::Send, ms(1000)),
        Decision::Send
    );
    // A channel without a limit, and a burst above the rate.
    for _ in 0..100 {
        assert_eq!(
            limiter.gate(&r, "email-main", Decision::Send, t),
            Decision::Send
        );
    }
    for _ in 0..3 {
        assert_eq!(
            limiter.gate(&r, "push-main", Decision::Send, t),
            Decision::Send
        );
    }
    assert_eq!(
        limiter.gate(&r, "push-main", Decision::Send, t),
        rate_hold(ms(2000))
    );
    // A long idle refills only up to the burst.
    let later = t + TimeDelta::hours(1);
    for _ in 0..3 {
        assert_eq!(
            limiter.gate(&r, "push-main", Decision::Send, later),
            Decision::Send
        );
    }
    assert!(matches!(
        limiter.gate(&r, "push-main", Decision::Send, later),
        Decision::Hold { .. }
    ));
}

#[test]
fn rules_read_from_json_with_errors_at_their_field() {
    let r = DeliveryRules::from_json(
        r#"{
          "time_zone": "Asia/Shanghai",
          "caps": {"global": {"day": 3, "week": 10}, "sms": {"day": 1}},
          "quiet_hours": {
            "default": {"start": "21:00", "end": "08:00"},
            "channels": {"sms": {"start": "20:00", "end": "09:00"}, "webhook": null}
          },
          "rate_limits": {"sms-main": {"per_second": 50}},
          "consent": {"opt_in": ["email:marketing"]}
        }"#,
    )
    .unwrap();
    assert_eq!(r.time_zone, chrono_tz::Asia::Shanghai);
    assert_eq!(r.caps.global.week, Some(10));
    assert_eq!(r.caps.channel(ChannelKind::Sms).day, Some(1));
    assert_eq!(r.caps.channel(ChannelKind::Email).day, None);
    assert!(r.quiet_hours.window(ChannelKind::Webhook).is_none());
    assert_eq!(
        r.quiet_hours.window(ChannelKind::Push),
        r.quiet_hours.default.as_ref()
    );
    assert_eq!(r.consent.categories.len(), 4, "the default categories stay");
    // What it writes, it reads back the same.
    let again = DeliveryRules::from_json(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(again, r);
    assert_eq!(
        DeliveryRules::from_json("{}").unwrap(),
        DeliveryRules::default()
    );

    for (text, path, says) in [
        (
            r#"{"caps": {"fax": {"day": 1}}}"#,
            "caps.fax",
            "unknown field `fax`",
        ),
        (
            r#"{"caps": {"sms": {"hour": 1}}}"#,
            "caps.sms.hour",
            "unknown field `hour`",
        ),
        (
            r#"{"time_zone": "Mars/Olympus"}"#,
            "time_zone",
            "not a time zone",
        ),
        (
            r#"{"quiet_hours": {"default": {"start": "21:00", "end": "8:00"}}}"#,
            "quiet_hours.default.end",
            "HH:MM",
        ),
        (
            r#"{"quiet_hours": {"default": {"start": "21:00", "end": "21:00"}}}"#,
            "quiet_hours.default",
            "ambiguous",
        ),
        (
            r#"{"rate_limits": {"sms": {"per_second": 0}}}"#,
            "rate_limits.sms",
            "above 0",
        ),
        (
            r#"{"consent": {"opt_in": ["email"]}}"#,
            "consent.opt_in[0]",
            "not a consent scope",
        ),
    ] {
        let err = DeliveryRules::from_json(text).expect_err(text);
        assert_eq!(err.path, path, "{text}: {err}");
        assert!(err.message.contains(says), "{text}: {err}");
    }
}

#[test]
fn decisions_read_as_stable_records() {
    let until = utc(2026, 5, 6, 12, 0, 0);
    assert_eq!(Decision::Send.to_string(), "send");
    assert_eq!(hold(until).to_string(), "hold:quiet_hours");
    let rate = Decision::Hold {
        until,
        reason: HoldReason::RateLimit,
    };
    assert_eq!(rate.to_string(), "hold:rate_limit");
    for (reason, text) in [
        (SkipReason::DoNotContact, "skip:do_not_contact"),
        (SkipReason::Unsubscribed, "skip:unsubscribed"),
        (SkipReason::NoConsent, "skip:no_consent"),
        (SkipReason::QuietHours, "skip:quiet_hours"),
        (
            SkipReason::FrequencyCap {
                scope: CapScope::Channel(ChannelKind::Push),
                period: Period::Month,
            },
            "skip:frequency_cap:push:month",
        ),
    ] {
        assert_eq!(Decision::Skip(reason).to_string(), text);
    }
}

#[test]
fn a_send_step_becomes_a_request() {
    let step: crate::definition::SendMessage = serde_json::from_value(json!({
        "id": "otp", "channel": "sms-main", "template": "otp", "transactional": true, "quiet_hours": "skip"
    }))
    .unwrap();
    let request = SendRequest::for_step(&step, ChannelKind::Sms);
    assert_eq!(request.channel, "sms-main");
    assert_eq!(request.purpose(), Purpose::Transactional);
    assert_eq!(request.quiet_hours, QuietHours::Skip);
}
