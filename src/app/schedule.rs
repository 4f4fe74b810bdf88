//! Scheduled runs: what `ScheduledRun` does when its timer fires, and the timer itself for
//! deployments without the Functions host (`serve --work-queues` in a container), read from
//! the same `SYNC_SCHEDULE` the host reads through `%SYNC_SCHEDULE%`.

use std::time::Duration;

use time::OffsetDateTime;

use super::invocation::Failure;
use super::service::Started;
use super::AppState;
use crate::error::{Error, Result};
use crate::messages::run_spec::RunSpec;
use crate::redact::ExposeSecret;

/// What one firing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// `SYNC_SCHEDULED_RUN` is not set.
    NotConfigured,
    /// The run started.
    Started(String),
    /// A run over the same source and target still runs; none was started.
    Busy(String),
}

/// Sweeps runs that stopped moving, then starts the run in `SYNC_SCHEDULED_RUN`, unless one
/// for the same source and target is still running.
pub async fn fire(state: &AppState) -> std::result::Result<Fired, Failure> {
    let Some(text) = state.config.runs.scheduled.as_ref().map(ExposeSecret::expose_secret) else {
        return Ok(Fired::NotConfigured);
    };
    let (spec, notify) = RunSpec::parse(text, "SYNC_SCHEDULED_RUN", &state.config).map_err(Failure::bad_input)?;
    let svc = state.runs().await.map_err(Failure::internal)?;
    // A run that stopped moving must not block this one for ever: ended first, naming why.
    if let Err(e) = super::sweep::sweep(svc).await {
        tracing::warn!(error = %e, "the sweep failed; a stalled run may still block this schedule");
    }
    match svc
        .start_queued(spec, notify, crate::model::Trigger::Schedule)
        .await
        .map_err(Failure::internal)?
    {
        Started::Created(run) => Ok(Fired::Started(run.id.to_string())),
        Started::Busy(other) => {
            tracing::warn!(run_id = %other, outcome = "schedule_skipped", "previous run still running; not starting another");
            Ok(Fired::Busy(other.to_string()))
        }
    }
}

/// An NCRONTAB schedule as the Functions host reads it: six fields, `{second} {minute}
/// {hour} {day} {month} {day-of-week}`, in UTC. Where both the day and the day of the week
/// are restricted, both must match, as in NCRONTAB (Vixie cron takes either).
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    text: String,
}

impl Schedule {
    /// Parses `text`; the error names `SYNC_SCHEDULE` and the form it takes.
    pub fn parse(text: &str) -> Result<Schedule> {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .year(croner::parser::Year::Disallowed)
            .dom_and_dow(true)
            .build();
        let cron = parser.parse(text).map_err(|e| {
            Error::invalid(format!(
                "SYNC_SCHEDULE: `{text}` is not a six-field NCRONTAB schedule \
                 ({{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}, e.g. `0 0 2 * * *`): {e}"
            ))
        })?;
        Ok(Schedule {
            cron,
            text: text.trim().to_string(),
        })
    }

    /// The first time after `t` the schedule fires, if it ever does.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let at = chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }
}

/// Fires `schedule` until `stop` turns true. Several processes may run it: the run's lock
/// lets one start, and the others find it busy.
pub async fn every(state: AppState, schedule: Schedule, mut stop: tokio::sync::watch::Receiver<bool>) {
    tracing::info!(schedule = %schedule.text, "scheduled runs: timer started");
    loop {
        let now = OffsetDateTime::now_utc();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!(schedule = %schedule.text, "SYNC_SCHEDULE never fires again; the timer stops");
            return;
        };
        let wait = Duration::try_from(next - now).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match fire(&state).await {
            Ok(Fired::Started(id)) => tracing::info!(run_id = %id, outcome = "started", "scheduled run started"),
            Ok(Fired::Busy(_)) => {}
            Ok(Fired::NotConfigured) => {
                tracing::warn!("SYNC_SCHEDULE is set but SYNC_SCHEDULED_RUN is not: nothing to start")
            }
            Err(f) => tracing::error!(error = %f.error, outcome = "failed", "the scheduled run could not start"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn ncrontab_six_fields_in_utc() {
        let s = Schedule::parse("0 0 2 * * *").unwrap();
        let t = datetime!(2026-12-08 01:59:59 UTC);
        assert_eq!(s.next_after(t), Some(datetime!(2026-12-08 02:00:00 UTC)));
        assert_eq!(
            s.next_after(datetime!(2026-12-08 02:00:00 UTC)),
            Some(datetime!(2026-12-09 02:00:00 UTC))
        );
        let every_5s = Schedule::parse("*/5 * * * * *").unwrap();
        assert_eq!(
            every_5s.next_after(datetime!(2026-12-08 10:00:01 UTC)),
            Some(datetime!(2026-12-08 10:00:05 UTC))
        );
        // Sunday is 0, as in NCRONTAB; 2026-12-13 is a Sunday.
        let sundays = Schedule::parse("0 30 9 * * 0").unwrap();
        assert_eq!(
            sundays.next_after(datetime!(2026-12-08 00:00:00 UTC)),
            Some(datetime!(2026-12-13 09:30:00 UTC))
        );
        let named = Schedule::parse("0 30 9 * * SUN").unwrap();
        assert_eq!(
            named.next_after(datetime!(2026-12-08 00:00:00 UTC)),
            Some(datetime!(2026-12-13 09:30:00 UTC))
        );
        // Day and day of week both restricted: both must hold (the 1st that is a Monday).
        let both = Schedule::parse("0 0 0 1 * MON").unwrap();
        assert_eq!(
            both.next_after(datetime!(2026-12-08 00:00:00 UTC)),
            Some(datetime!(2027-02-01 00:00:00 UTC))
        );
    }

    #[test]
    fn a_bad_schedule_names_the_setting_and_the_form() {
        for bad in ["", "0 2 * * *", "every day", "0 0 25 * * *", "0 0 2 * * * 2027"] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("SYNC_SCHEDULE") && e.to_string().contains("six-field"),
                "{bad}: {e}"
            );
        }
    }
}
