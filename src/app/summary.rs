//! A run's summary: what `GET /api/runs/{id}`, `status RUN_ID`, the dashboard and the
//! completion webhook all show. One type, built in one place and read by field.

use serde::{Deserialize, Serialize};

use crate::messages::run_spec::{FilterSpec, SourceSpec, TargetSpec};
use crate::model::{NotifyState, SyncMode, Trigger};
use crate::state::runs::counters::{Counters, Tally};
use crate::state::runs::store::{Phase, RunRecord, RunState};

/// A run as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// State.
    pub state: RunState,
    /// Phase while running.
    pub phase: Phase,
    /// What started it, when the row says.
    pub trigger: Option<Trigger>,
    /// When it started (RFC 3339).
    pub start_time: String,
    /// When it ended.
    pub end_time: Option<String>,
    /// Why it ended as it did, when not plainly Succeeded.
    pub reason: Option<String>,
    /// Where from.
    pub source: SourceSpec,
    /// Where to.
    pub target: TargetSpec,
    /// Copy mode.
    pub mode: SyncMode,
    /// Whether nothing is changed.
    pub dry_run: bool,
    /// Mirror mode's delete cap.
    pub max_deletes: u64,
    /// Which objects the run considers.
    pub filters: FilterSpec,
    /// Objects and bytes per counter, the lister's and every copy's together.
    pub counters: Counters,
    /// Listed objects without an outcome yet (0 once the run has ended).
    pub pending_copies: u64,
    /// Mirror mode: blobs found without a source.
    pub delete_candidates: u64,
    /// The first failures, with their reasons.
    pub failures: Vec<FailureLine>,
    /// Every key that was not copied, with its reason (JSON Lines, paged; `?outcome=all` for
    /// every key): relative to the Function App, or `status RUN_ID --report`.
    pub report_url: String,
    /// The completion webhook.
    pub notification: Notification,
    /// A verify run's comparison so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyProgress>,
}

/// Where a verify run's comparison stands: its tallies (as `verify` reports them), whether
/// source and target agree, and the slices done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyProgress {
    /// The tallies.
    #[serde(flatten)]
    pub report: super::verify::VerifyReport,
    /// Both listings were compared to their end and no difference was found.
    pub clean: bool,
    /// Both listings were compared to their end.
    pub done: bool,
    /// Slices compared.
    pub slices: u64,
}

impl VerifyProgress {
    /// The progress a verify run's saved place holds.
    pub fn of(place: &crate::state::runs::verifying::VerifyPlace) -> crate::error::Result<Self> {
        let report = super::verify::VerifyReport::of_place(place)?;
        Ok(VerifyProgress {
            clean: place.done && report.clean(),
            done: place.done,
            slices: place.slices,
            report,
        })
    }
}

/// One failed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureLine {
    /// Source key.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Where a run's webhook stands; names the setting, never the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Whether the run has a webhook.
    pub configured: bool,
    /// The app setting that holds its URL.
    pub webhook: Option<String>,
    /// Sent, pending, failed…
    pub state: NotifyState,
    /// The last send's error.
    pub error: Option<String>,
    /// Sends tried so far (at most `NOTIFY_ATTEMPTS`).
    #[serde(default)]
    pub attempts: u32,
}

impl RunSummary {
    /// The summary of a run row, its lister's and its copies' counters, and its first
    /// failures.
    pub fn of(run: &RunRecord, listed: &Counters, copies: &Counters, failures: Vec<(String, String)>) -> Self {
        let mut all = listed.clone();
        all.merge(copies);
        let pending = listed.objects(Tally::Scanned).saturating_sub(all.accounted());
        RunSummary {
            run_id: run.id.clone(),
            state: run.state,
            phase: run.phase,
            trigger: run.trigger,
            start_time: run.started_at.clone(),
            end_time: run.ended_at.clone(),
            reason: run.reason.clone(),
            source: run.spec.source.clone(),
            target: run.spec.target.clone(),
            mode: run.spec.mode,
            dry_run: run.spec.dry_run,
            max_deletes: run.spec.max_deletes,
            filters: run.spec.filters.clone(),
            counters: all,
            pending_copies: if run.state.is_final() { 0 } else { pending },
            delete_candidates: run.delete_candidates,
            failures: failures
                .into_iter()
                .map(|(key, reason)| FailureLine { key, reason })
                .collect(),
            report_url: format!("/api/runs/{}/report", run.id),
            notification: Notification {
                configured: run.notify.is_some(),
                webhook: run.notify.as_ref().map(ToString::to_string),
                state: run.notified,
                error: run.notify_error.clone(),
                attempts: run.notify_attempts,
            },
            verify: None,
        }
    }

    /// What the run works on, as its messages name it: `s3://b/p -> c/p` for a copy,
    /// `s3://b/p against c/p` for a verification.
    pub fn route(&self) -> String {
        format!(
            "s3://{}/{} {} {}/{}",
            self.source.bucket,
            self.source.prefix,
            if self.verify.is_some() { "against" } else { "->" },
            self.target.container,
            self.target.prefix
        )
    }

    /// Objects counted in `t`.
    pub fn objects(&self, t: Tally) -> u64 {
        self.counters.objects(t)
    }

    /// The summary as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a summary is plain data")
    }
}

/// Summaries for tests elsewhere: `partial` names only the fields a test is about; the rest
/// are those of an empty, just-started run.
#[cfg(test)]
pub(crate) fn summary_from(partial: serde_json::Value) -> RunSummary {
    let mut v = serde_json::json!({
        "runId": "r", "state": "Running", "phase": "listing", "trigger": null,
        "startTime": "2026-12-02T10:00:00Z", "endTime": null, "reason": null,
        "source": {"bucket": "b", "prefix": ""}, "target": {"container": "c", "prefix": ""},
        "mode": "additive", "dryRun": false, "maxDeletes": 0, "filters": {}, "counters": {},
        "pendingCopies": 0, "deleteCandidates": 0, "failures": [], "reportUrl": "/api/runs/r/report",
        "notification": {"configured": false, "webhook": null, "state": "none", "error": null},
    });
    for (k, x) in partial.as_object().expect("an object").clone() {
        v[k] = x;
    }
    serde_json::from_value(v).expect("a summary")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_as_written() {
        let s = summary_from(serde_json::json!({"state": "PartiallySucceeded", "phase": "done",
            "counters": {"scanned": 5, "failed": 2, "failedBytes": 7},
            "failures": [{"key": "k", "reason": "checksum mismatch: s3://b/k: source MD5 a, copied b"}]}));
        assert_eq!((s.objects(Tally::Failed), s.counters.bytes(Tally::Failed)), (2, 7));
        let text = s.to_json().to_string();
        let back: RunSummary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.to_json()["state"], "PartiallySucceeded");
        assert_eq!(s.to_json()["counters"]["scannedBytes"], 0);
    }
}
