//! The sweep: finds runs that stopped moving and ends them, naming why. It does not depend
//! on a run's own chain of messages (a page that could not queue its successor, a check
//! that outlived the host's timeout and was parked) nor on its process (a CLI killed
//! outright), so a run always ends and its lock frees. In Azure the `ScheduledRun` and
//! `DrainSqs` timers sweep; `serve --work-queues` and `watch`, which have no timers, sweep
//! every `SYNC_SWEEP_SECS` (decisions 96).

use std::time::Duration;

use super::finish::{check, CheckStep};
use super::service::{end, RunService};
use crate::error::Result;
use crate::messages::ListMessage;
use crate::model::Trigger;
use crate::state::runs::store::{RunRecord, RunState};
use crate::state::unix_now;

/// A run the sweep ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The run.
    pub run_id: String,
    /// The state it ended in.
    pub state: RunState,
    /// Why.
    pub reason: String,
}

/// How long a run may show no sign of life before the sweep ends it: `SYNC_RUN_STALL_SECS`
/// for a run driven by queues, three of its process's leases for one driven by a CLI (which
/// marks it alive every third of a lease; the lease is the process's own, recorded on the run,
/// not this sweeper's setting).
pub fn bound(run: &RunRecord, cfg: &crate::config::Config) -> Duration {
    match run.trigger {
        Some(Trigger::Cli) => run.lease_secs.map_or(cfg.runs.lease, Duration::from_secs) * 3,
        _ => cfg.runs.stall,
    }
}

/// Ends every running run with no sign of life within its [`bound`]: no page listed, no
/// check, no mark from its process. Its keys still `retrying` are counted failed, its lock
/// is released, and its webhook is sent (or its check queued to send it).
pub async fn sweep(svc: &RunService) -> Result<Vec<Swept>> {
    let mut swept = Vec::new();
    for run in svc.store.running().await? {
        let listing = svc.store.listing(&run.id).await?.unwrap_or_default();
        // Rows of the previous version (or rewritten by one during a rollout) carry no sign
        // the sweep can read: such a run is marked alive now, and gets a whole bound from
        // here, so an upgrade never ends a run that is still moving.
        if listing.updated_at() == 0 && run.checked_at == 0 {
            svc.store.touch(&run.id).await?;
            continue;
        }
        let started = time::OffsetDateTime::parse(&run.started_at, &time::format_description::well_known::Rfc3339)
            .map_or(0, |t| t.unix_timestamp());
        let last_sign = started.max(listing.updated_at()).max(run.checked_at);
        let quiet = (unix_now() - last_sign).max(0) as u64;
        let bound = bound(&run, &svc.config);
        if quiet <= bound.as_secs() {
            continue;
        }
        // A process that still renews its lease is alive, whatever else it writes.
        if let Some(key) = &run.lock_key {
            if svc
                .store
                .lease_until(key, &run.id)
                .await?
                .is_some_and(|t| t > unix_now())
            {
                continue;
            }
        }
        let parked = svc.store.settle_retrying(&run.id).await?;
        let parked_note = if parked > 0 {
            format!("; {parked} keys whose copies had failed attempts are counted as failed")
        } else {
            String::new()
        };
        let (state, reason) = if run.trigger == Some(Trigger::Cli) {
            (
                RunState::Cancelled,
                format!(
                    "abandoned: the process running it showed no sign of life for {quiet} s; run the command again, it skips what was copied{parked_note}"
                ),
            )
        } else if run.spec.verify.is_some() {
            (
                RunState::Failed,
                format!(
                    "stalled: the verification compared nothing for {quiet} s (its list-pages message was lost or parked: see list-pages-poison); start it again"
                ),
            )
        } else if !listing.done() {
            let stopped: Vec<String> = listing
                .shards
                .iter()
                .filter(|s| !s.done)
                .map(|s| format!("shard {} after page {}", s.shard, s.page))
                .collect();
            (
                RunState::Failed,
                format!(
                    "stalled: the listing stopped ({}), with no page listed for {quiet} s (its list-pages message was lost or parked: see list-pages-poison); start the run again, it skips what was copied{parked_note}",
                    stopped.join(", ")
                ),
            )
        } else {
            (
                RunState::PartiallySucceeded,
                format!(
                    "stalled: its checks stopped {quiet} s ago (a check outlived the host's timeout, or its message was lost or parked: see list-pages-poison){parked_note}"
                ),
            )
        };
        tracing::warn!(
            run_id = %run.id, bucket = %run.spec.source.bucket, container = %run.spec.target.container,
            quiet_s = quiet, bound_s = bound.as_secs(), state = state.as_str(), reason = %reason,
            outcome = "run_swept", "a run that stopped moving is ended"
        );
        end(svc, &run.id, state, Some(reason.clone())).await?;
        // The ended run's webhook: sent now, or its check queued for the pause after a failure.
        match check(svc, &run.id).await {
            Ok(CheckStep::Notify(pause)) => {
                let msg = ListMessage::Check { run_id: run.id.clone() };
                if let Err(e) = svc.enqueue(&msg, Some(pause)).await {
                    tracing::warn!(run_id = %run.id, error = %e, "could not queue the swept run's webhook retry");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(run_id = %run.id, error = %e, "could not send the swept run's webhook"),
        }
        swept.push(Swept {
            run_id: run.id,
            state,
            reason,
        });
    }
    Ok(swept)
}

/// Sweeps every `period` until `stop` turns true (processes without timers).
pub async fn every(state: super::AppState, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match state.runs().await {
            Ok(svc) => {
                if let Err(e) = sweep(svc).await {
                    tracing::warn!(error = %e, "the sweep failed; trying again next period");
                }
            }
            Err(e) => tracing::warn!(error = %e, "the sweep could not reach the runs table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cli_run_is_judged_by_its_own_lease() {
        let cfg = crate::config::Config::for_emulators();
        let (spec, _) = crate::messages::run_spec::RunSpec::parse(
            r#"{"source":{"bucket":"bkt"},"target":{"container":"ctr"}}"#,
            "test",
            &cfg,
        )
        .unwrap();
        let mut run = RunRecord {
            id: "20261207T000000Z-00000000".into(),
            spec,
            notify: None,
            trigger: Some(Trigger::Cli),
            state: RunState::Running,
            phase: crate::state::runs::store::Phase::Listing,
            reason: None,
            started_at: String::new(),
            ended_at: None,
            notified: Default::default(),
            notify_claimed_at: None,
            notify_error: None,
            notify_attempts: 0,
            lock_key: None,
            last_settled: 0,
            checked_at: 0,
            lease_secs: Some(600),
            last_progress_at: String::new(),
            delete_candidates: 0,
            prune_marker: None,
            prune_listed: false,
            etag: String::new(),
        };
        // Its process renews every 200 s: three of its leases, whatever this sweeper's own.
        assert_eq!(bound(&run, &cfg), Duration::from_secs(1800));
        run.lease_secs = None;
        assert_eq!(
            bound(&run, &cfg),
            cfg.runs.lease * 3,
            "a run from before the lease was kept"
        );
        run.trigger = Some(Trigger::Http);
        assert_eq!(bound(&run, &cfg), cfg.runs.stall);
    }
}
