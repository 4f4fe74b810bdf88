//! The dashboard's data (decisions 70): a page of runs, newest first, each with its summary,
//! its progress, rates and ETA, and its problems grouped by reason; and the queues. Served
//! as JSON by `GET /api/dashboard/data`, and drawn by the page at `GET /api/dashboard`.
//! Every part but the run list is bounded: a page holds at most [`MAX_RUNS`] runs, and
//! reasons are grouped over at most [`REASONS_SAMPLED`] report lines per run, so a run of a
//! million objects costs what a small one does. Finding a page's runs reads windows of
//! start time back from the page (decisions 91), not every older run.

use std::collections::HashMap;

use futures::StreamExt;
use serde::Serialize;

use super::health::{queue_health, QueueHealth};
use super::service::RunService;
use super::summary::RunSummary;
use crate::error::Result;
use crate::state::checkpoint::now_rfc3339;
use crate::state::runs::counters::Tally;
use crate::state::runs::report::{report_page, ReportOutcome};
use crate::state::runs::store::{Phase, RunState};

/// Runs on one page at most.
pub const MAX_RUNS: usize = 100;
/// Report lines read per run to group its problems by reason.
pub const REASONS_SAMPLED: u32 = 200;
/// Reason groups shown per run.
const REASON_GROUPS: usize = 10;
/// The counters of objects that reached an outcome.
const SETTLED: [Tally; 7] = [
    Tally::Transferred,
    Tally::NoTransferNeeded,
    Tally::Excluded,
    Tally::Unsupported,
    Tally::Failed,
    Tally::Vanished,
    Tally::WouldTransfer,
];

/// Objects that were not copied for one reason, in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasonGroup {
    /// `failed`, `retrying`, `unsupported` or `excluded`.
    pub outcome: &'static str,
    /// The reason, as the report gives it.
    pub reason: String,
    /// Keys with it among the lines read.
    pub count: u64,
    /// One of those keys.
    pub example: String,
}

/// One run as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// The run's summary, as `GET /api/runs/{id}` gives it.
    pub summary: RunSummary,
    /// Seconds since the start (to the end, once ended).
    pub elapsed_seconds: f64,
    /// Objects settled (scanned minus pending).
    pub settled: u64,
    /// `settled / scanned`, once the listing is done; `None` while listing.
    pub progress: Option<f64>,
    /// Objects settled per second, over the whole run.
    pub objects_per_second: f64,
    /// Bytes transferred per second, over the whole run.
    pub bytes_per_second: f64,
    /// Seconds left at the run's average rate; `None` while listing or when ended.
    pub eta_seconds: Option<u64>,
    /// Problems grouped by reason, most frequent first.
    pub reasons: Vec<ReasonGroup>,
    /// Whether `reasons` was grouped over only the first [`REASONS_SAMPLED`] lines.
    pub reasons_sampled: bool,
}

/// What the dashboard draws on each refresh.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// When it was read (RFC 3339).
    pub generated_at: String,
    /// Runs, newest first.
    pub runs: Vec<RunView>,
    /// The run id to pass as `before` for the next older page.
    pub next_before: Option<String>,
    /// The queues.
    pub queues: QueueHealth,
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Progress, rates and ETA from a summary, at `now`.
pub fn view_of(summary: RunSummary, now: time::OffsetDateTime) -> RunView {
    let start = parse_time(&summary.start_time);
    let end = summary.end_time.as_deref().and_then(parse_time);
    let elapsed = start.map_or(0.0, |s| ((end.unwrap_or(now) - s).as_seconds_f64()).max(0.0));
    let scanned = summary.objects(Tally::Scanned);
    let pending = summary.pending_copies;
    let running = summary.state == RunState::Running;
    // An ended run's summary says 0 pending whether or not everything was done (a cancel, a
    // failed listing): count what has an outcome instead.
    let settled = if running {
        scanned.saturating_sub(pending)
    } else {
        SETTLED.iter().map(|t| summary.objects(*t)).sum::<u64>().min(scanned)
    };
    let listing = running && summary.phase == Phase::Listing;
    let rate = |n: u64| if elapsed > 0.0 { n as f64 / elapsed } else { 0.0 };
    let objects_per_second = rate(settled);
    let progress = match (listing, scanned) {
        (true, _) => None,
        (false, 0) if running => Some(1.0),
        (false, 0) => Some(if summary.state == RunState::Succeeded { 1.0 } else { 0.0 }),
        (false, n) => Some(settled as f64 / n as f64),
    };
    let eta_seconds =
        (running && !listing && objects_per_second > 0.0).then(|| (pending as f64 / objects_per_second).ceil() as u64);
    RunView {
        elapsed_seconds: elapsed,
        settled,
        progress,
        objects_per_second,
        bytes_per_second: rate(summary.counters.bytes(Tally::Transferred)),
        eta_seconds,
        reasons: Vec::new(),
        reasons_sampled: false,
        summary,
    }
}

/// Groups report lines by outcome and reason, most frequent first, at most `keep` groups.
pub fn group_reasons(lines: &[crate::state::runs::report::ReportLine], keep: usize) -> Vec<ReasonGroup> {
    let mut groups: HashMap<(&'static str, &str), ReasonGroup> = HashMap::new();
    for l in lines {
        let reason = l.reason.as_deref().unwrap_or("no reason recorded");
        let g = groups.entry((l.outcome.name(), reason)).or_insert_with(|| ReasonGroup {
            outcome: l.outcome.name(),
            reason: reason.to_string(),
            count: 0,
            example: l.key.clone(),
        });
        g.count += 1;
    }
    let mut out: Vec<ReasonGroup> = groups.into_values().collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (a.outcome, &a.reason).cmp(&(b.outcome, &b.reason)))
    });
    out.truncate(keep);
    out
}

/// Reads one page of the dashboard: `top` runs (1 to [`MAX_RUNS`]) started before run
/// `before`, and the queues.
pub async fn snapshot(svc: &RunService, top: usize, before: Option<&str>) -> Result<Snapshot> {
    let (runs, next_before) = svc.store.recent_before(before, top.clamp(1, MAX_RUNS)).await?;
    let now = time::OffsetDateTime::now_utc();
    let problems: &[ReportOutcome] = &[
        ReportOutcome::Failed,
        ReportOutcome::Retrying,
        ReportOutcome::Unsupported,
        ReportOutcome::Excluded,
    ];
    // A few runs at a time, in order: a page of a hundred runs is a few hundred reads.
    let views: Vec<RunView> = futures::stream::iter(runs)
        .map(|r| async move {
            // The row just listed: summarised without reading it again.
            let mut view = view_of(svc.summary_of(&r).await?, now);
            let c = &view.summary;
            if [Tally::Failed, Tally::Unsupported, Tally::Excluded]
                .iter()
                .any(|t| c.objects(*t) > 0)
                || view.eta_seconds.is_some()
            {
                let page = report_page(&svc.store, &r.id, problems, REASONS_SAMPLED, None).await?;
                view.reasons_sampled = page.next.is_some();
                view.reasons = group_reasons(&page.lines, REASON_GROUPS);
            }
            Result::Ok(view)
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    Ok(Snapshot {
        generated_at: now_rfc3339(),
        runs: views,
        next_before,
        queues: queue_health(svc).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::summary::summary_from;
    use crate::state::runs::report::ReportLine;
    use serde_json::json;

    fn at(s: &str) -> time::OffsetDateTime {
        parse_time(s).unwrap()
    }

    #[test]
    fn a_copying_run_has_progress_rates_and_an_eta() {
        let s = json!({"state": "Running", "phase": "copying", "startTime": "2026-12-02T10:00:00Z",
                       "endTime": null, "pendingCopies": 300,
                       "counters": {"scanned": 1000, "transferredBytes": 7000}});
        let v = view_of(summary_from(s), at("2026-12-02T10:01:10Z"));
        assert_eq!(v.settled, 700);
        assert_eq!(v.progress, Some(0.7));
        assert_eq!(v.objects_per_second, 10.0);
        assert_eq!(v.bytes_per_second, 100.0);
        assert_eq!(v.eta_seconds, Some(30));
    }

    #[test]
    fn a_listing_run_has_no_eta_and_an_ended_run_keeps_its_duration() {
        let listing = json!({"state": "Running", "phase": "listing", "startTime": "2026-12-02T10:00:00Z",
                             "pendingCopies": 10, "counters": {"scanned": 20}});
        let v = view_of(summary_from(listing), at("2026-12-02T10:00:10Z"));
        assert_eq!((v.progress, v.eta_seconds), (None, None));
        let ended = json!({"state": "Succeeded", "phase": "done", "startTime": "2026-12-02T10:00:00Z",
                           "endTime": "2026-12-02T10:00:20Z", "pendingCopies": 0,
                           "counters": {"scanned": 40, "transferred": 30, "noTransferNeeded": 9, "excluded": 1}});
        let v = view_of(summary_from(ended), at("2026-12-02T11:00:00Z"));
        assert_eq!(
            (v.elapsed_seconds, v.objects_per_second, v.eta_seconds),
            (20.0, 2.0, None)
        );
        assert_eq!(v.progress, Some(1.0));
        // Cancelled a quarter of the way: the summary says 0 pending, the counters do not.
        let cancelled = json!({"state": "Cancelled", "phase": "done", "startTime": "2026-12-02T10:00:00Z",
                               "endTime": "2026-12-02T10:00:10Z", "pendingCopies": 0,
                               "counters": {"scanned": 40, "transferred": 10}});
        let v = view_of(summary_from(cancelled), at("2026-12-02T11:00:00Z"));
        assert_eq!((v.settled, v.progress, v.objects_per_second), (10, Some(0.25), 1.0));
    }

    #[test]
    fn reasons_are_grouped_most_frequent_first() {
        let line = |k: &str, o, r: &str| ReportLine {
            key: k.into(),
            outcome: o,
            bytes: 0,
            reason: Some(r.into()),
            attempt: None,
        };
        let lines = vec![
            line("a", ReportOutcome::Unsupported, "storage class GLACIER"),
            line("b", ReportOutcome::Failed, "checksum mismatch"),
            line("c", ReportOutcome::Unsupported, "storage class GLACIER"),
            line("d", ReportOutcome::Excluded, "folder marker"),
        ];
        let g = group_reasons(&lines, 2);
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].outcome, g[0].reason.as_str(), g[0].count, g[0].example.as_str()),
            ("unsupported", "storage class GLACIER", 2, "a")
        );
        assert_eq!(g[1].count, 1);
    }
}
