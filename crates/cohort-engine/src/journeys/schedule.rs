//! Schedule triggers: at each minute of the journey clock, the scheduled journeys whose wall
//! clock (a fixed zone, or each customer's own) shows a firing minute enter the members of
//! their segment. A firing is identified by the journey and the minute, so a firing handled
//! again after a crash enters nobody twice.
//!
//! The loop keeps the last minute it looked at in `meta`. After a stop (or a test clock moved
//! far ahead) it catches up at most an hour of minutes, and enters each member once, for the
//! latest firing among them: a daily message is sent late rather than never, but a week's
//! missed mornings are not sent in one burst. For schedules in customers' zones, the members' zones are read at most
//! every [`ZONES_TTL`] per segment, not at every minute.

use super::facts::FactsContext;
use super::run::{JourneyLoop, internal};
use crate::EngineError;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use cohort_core::CustomerId;
use cohort_journey::definition::{Schedule, Zone};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const CURSOR: &str = "journeys_schedule_minute";
/// The most minutes caught up after a stop.
const CATCH_UP_MINUTES: i64 = 60;
/// How long the members' zones of a segment are reused.
pub(crate) const ZONES_TTL: Duration = Duration::from_secs(600);
/// Members read per page.
const PAGE: usize = 5_000;

/// Members' zones by segment, read for schedules in customers' zones.
#[derive(Default)]
pub(crate) struct MemberZones(HashMap<String, (Instant, Vec<(CustomerId, Tz)>)>);

impl JourneyLoop {
    /// Fires the schedules whose minutes passed since the last round; returns the customers
    /// entered.
    pub(crate) fn schedules(&mut self, now: DateTime<Utc>) -> Result<usize, EngineError> {
        let current = now.timestamp().div_euclid(60);
        let last = self.state().cursor(CURSOR).map_err(internal)?;
        if last == 0 {
            // The first round ever: schedules fire from now on, not for the past.
            self.state().set_cursor(CURSOR, current).map_err(internal)?;
            return Ok(0);
        }
        if current <= last {
            return Ok(0);
        }
        let from = (last + 1).max(current - CATCH_UP_MINUTES);
        let schedules: Vec<(String, Schedule)> = self
            .runner()
            .schedules()
            .into_iter()
            .map(|(key, s)| (key.to_string(), s.clone()))
            .collect();
        let mut entered = 0;
        for (key, schedule) in &schedules {
            for (customer, minute) in self.firings(schedule, from, current)? {
                entered += self.enter_scheduled(key, customer, minute, now)?;
            }
        }
        self.state().set_cursor(CURSOR, current).map_err(internal)?;
        Ok(entered)
    }

    /// Each member of the schedule's segment with the last minute in `from..=to` (Unix
    /// minutes) at which the schedule fires on their wall clock, if any.
    fn firings(
        &mut self,
        schedule: &Schedule,
        from: i64,
        to: i64,
    ) -> Result<Vec<(CustomerId, i64)>, EngineError> {
        let fires = |tz: Tz, minute: i64| {
            Utc.timestamp_opt(minute * 60, 0)
                .single()
                .is_some_and(|at| schedule.when.matches(at.with_timezone(&tz).naive_local()))
        };
        let mut firings = Vec::new();
        match schedule.time_zone {
            Zone::Fixed(tz) => {
                let Some(minute) = (from..=to).rev().find(|&m| fires(tz, m)) else {
                    return Ok(firings);
                };
                for customer in self.members(&schedule.segment)? {
                    firings.push((customer, minute));
                }
            }
            Zone::Customer => {
                for (customer, tz) in self.member_zones(&schedule.segment)? {
                    if let Some(minute) = (from..=to).rev().find(|&m| fires(tz, m)) {
                        firings.push((customer, minute));
                    }
                }
            }
        }
        Ok(firings)
    }

    fn members(&self, segment: &str) -> Result<Vec<CustomerId>, EngineError> {
        let store = &self.shared().store;
        let Ok(definition) = store.segments().get(segment) else {
            return Ok(Vec::new());
        };
        let mut members = Vec::new();
        let mut after = 0;
        loop {
            let page = store.segments().members(definition.id, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.customer_id;
            members.extend(page.iter().map(|m| m.customer_id));
        }
        Ok(members)
    }

    fn member_zones(&mut self, segment: &str) -> Result<Vec<(CustomerId, Tz)>, EngineError> {
        if let Some((read, zones)) = self.zones_cache().0.get(segment)
            && read.elapsed() < ZONES_TTL
        {
            return Ok(zones.clone());
        }
        let members = self.members(segment)?;
        let store = self.shared().store.clone();
        let now = self.shared().clock.now();
        let workspace_zone = self.rules().time_zone;
        let mut zones = Vec::with_capacity(members.len());
        let mut delivery = store.delivery()?;
        let context = FactsContext {
            store: &store,
            workspace_zone,
            holdout: None,
            assigner: None,
        };
        for customer in members {
            if let Some(facts) = context.load(&mut delivery, customer, now)? {
                zones.push((facts.id, facts.zone));
            }
        }
        self.zones_cache()
            .0
            .insert(segment.to_string(), (Instant::now(), zones.clone()));
        Ok(zones)
    }

    /// Enters one customer for one firing; 1 when an entry started.
    fn enter_scheduled(
        &mut self,
        key: &str,
        customer: CustomerId,
        minute: i64,
        now: DateTime<Utc>,
    ) -> Result<usize, EngineError> {
        let request_id = format!("schedule:{key}:{minute}:{customer}");
        let fired_at = Utc
            .timestamp_opt(minute * 60, 0)
            .single()
            .map(|t| t.to_rfc3339());
        self.enter(
            key,
            customer,
            &request_id,
            json!({"scheduled_at": fired_at}),
            now,
        )
    }
}
