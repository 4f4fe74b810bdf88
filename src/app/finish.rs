//! Finishing a run: wait until every queued copy has settled, prune (mirror mode), decide
//! the final state, release the lock, and send the webhook once.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;

use super::service::{end, since, RunService};
use crate::engine::metadata::written_for;
use crate::engine::naming::blob_name;
use crate::engine::CopyRequest;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{NotifyState, SyncMode};
use crate::state::checkpoint::now_rfc3339;
use crate::state::runs::counters::Tally;
use crate::state::runs::store::{Phase, RunRecord, RunState};
use crate::state::unix_now;

/// What to do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStep {
    /// Not settled yet: check again after this long.
    Wait(Duration),
    /// Mirror mode's prune did a bounded step and has more to do: check again at once.
    More,
    /// The run has ended (and its webhook, if any, was sent or given up).
    Finished,
    /// The run has ended; its webhook failed and is tried again after this long.
    Notify(Duration),
}

/// Why mirror mode deletes a blob (in the run's report).
const PRUNE_REASON: &str = "mirror: the source object is gone, so its blob is deleted";

/// A claim on sending the webhook older than this is taken over (its sender died).
const NOTIFY_CLAIM: Duration = Duration::from_secs(300);
/// How often a check chain (or a CLI process) shows it is alive: often enough that the sweep,
/// which ends a run after `stall` without a sign, never mistakes a live one.
pub fn heartbeat(stall: Duration) -> Duration {
    (stall / 4).min(Duration::from_secs(60))
}

/// Webhook sends at most, the first included; then `notification.state` is `failed`.
pub const NOTIFY_ATTEMPTS: u32 = 6;

/// The pause after the `attempt`-th failed webhook send: `base` × 2^(attempt−1), at most an
/// hour; at the default base of 60 s, 1, 2, 4, 8 and 16 minutes, so six sends span about
/// half an hour of a receiver's outage.
pub fn notify_pause(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(15)))
        .min(Duration::from_secs(3600))
}

/// Checks run `id` and finishes it when every copy has settled.
pub async fn check(svc: &RunService, id: &str) -> Result<CheckStep> {
    let Some(mut run) = svc.store.get(id).await? else {
        return Ok(CheckStep::Finished);
    };
    if run.state.is_final() {
        // Listings a process left when it died between the run's end and their removal.
        svc.store.drop_page_plans(id).await;
        return Ok(match notify(svc, &mut run).await? {
            Some(pause) => CheckStep::Notify(pause),
            None => CheckStep::Finished,
        });
    }
    let interval = svc.config.runs.check_interval;
    let Some(listing) = svc.store.listing(id).await? else {
        return Ok(CheckStep::Finished);
    };
    if !listing.done() {
        return Ok(CheckStep::Wait(interval));
    }
    // The check chain's heartbeat, by which the sweep tells it is alive (decisions 96).
    let now = unix_now();
    if now - run.checked_at >= heartbeat(svc.config.runs.stall).as_secs() as i64 {
        run.checked_at = now;
        if !svc.store.save(&mut run).await? {
            // Written meanwhile (a cancel, another check's beat): go on with the row as it is.
            run = match svc.store.get(id).await? {
                Some(r) if !r.state.is_final() => r,
                _ => return Box::pin(check(svc, id)).await,
            };
        }
    }
    let copies = svc.store.shard_counters(id).await?;
    let listed = listing.counters();
    let mut all = listed.clone();
    all.merge(&copies);
    let settled = all.accounted();
    let expected = listed.objects(Tally::Scanned);
    // More outcomes than scanned keys cannot happen since every attempt at a page works on
    // its saved listing (decisions 64); if it ever does, the sum proves nothing, so wait
    // until it stops moving for one check rather than end early (decisions 56).
    let strays = settled > expected && settled != run.last_settled;
    if settled < expected || strays {
        if settled != run.last_settled {
            run.last_settled = settled;
            run.last_progress_at = now_rfc3339();
            svc.store.save(&mut run).await?;
        } else if since(&run.last_progress_at) > svc.config.runs.stall {
            // Copies whose attempts failed and that no host reported back on (parked, or lost
            // with a timed-out last attempt) are failures, with their last reason.
            let parked = svc.store.settle_retrying(id).await?;
            let reason = format!(
                "{} of {expected} copies never settled within {} s of the last progress \
                 ({parked} of them, which had failed attempts, are counted as failed); \
                 see the copy-objects-poison queue and the failures list",
                expected.saturating_sub(settled),
                svc.config.runs.stall.as_secs()
            );
            end(svc, id, RunState::PartiallySucceeded, Some(reason)).await?;
            return Box::pin(check(svc, id)).await;
        }
        return Ok(CheckStep::Wait(interval));
    }
    let mut problems = Vec::new();
    if run.spec.mode == crate::model::SyncMode::Mirror {
        if run.phase != Phase::Pruning {
            run.phase = Phase::Pruning;
            svc.store.save(&mut run).await?;
        }
        match prune(svc, &mut run).await? {
            Pruned::More => return Ok(CheckStep::More),
            Pruned::Refused(refused) => problems.push(refused),
            Pruned::Done => {}
        }
    }
    // Failures are counted by copies only (not by the lister or the prune), so the shard sum
    // read above is still the number.
    let failed = copies.objects(Tally::Failed);
    if failed > 0 {
        problems.insert(0, format!("{failed} objects failed; see failures"));
    }
    let state = if problems.is_empty() {
        RunState::Succeeded
    } else {
        RunState::PartiallySucceeded
    };
    end(svc, id, state, (!problems.is_empty()).then(|| problems.join("; "))).await?;
    Box::pin(check(svc, id)).await
}

/// Sets the phase of a running run (best effort: a lost race means someone moved it on).
pub async fn set_phase(svc: &RunService, id: &str, phase: Phase) -> Result<()> {
    if let Some(mut run) = svc.store.get(id).await? {
        if !run.state.is_final() && run.phase != phase {
            run.phase = phase;
            svc.store.save(&mut run).await?;
        }
    }
    Ok(())
}

/// How far a prune step got.
enum Pruned {
    /// Every candidate is dealt with.
    Done,
    /// More pages or candidates remain.
    More,
    /// More candidates than `maxDeletes`: nothing is deleted, for this reason.
    Refused(String),
}

/// The work one check does on a prune before it hands the rest to the next check, so no
/// invocation outlives the host's `functionTimeout`, whatever the size of the target.
const PRUNE_BUDGET: Duration = Duration::from_secs(20);

/// Mirror mode: deletes blobs under the target prefix that this tool wrote for keys no
/// longer in the source, unless there are more than `maxDeletes`. Works a page at a time and
/// for at most [`PRUNE_BUDGET`]: first the target is listed page by page (its marker kept on
/// the run row) and each page's blobs whose source is gone become candidate rows; once the
/// listing is done and within `maxDeletes`, the candidates are deleted (each re-checked by
/// the engine) and dropped. A check that dies loses at most the page or deletes in hand.
async fn prune(svc: &RunService, run: &mut RunRecord) -> Result<Pruned> {
    let started = std::time::Instant::now();
    let spec = run.spec.clone();
    let refusal = |n: u64, listed: bool| {
        format!(
            "mirror: {}{n} blobs have no source object, more than maxDeletes={}; nothing was deleted \
             (check the source prefix, or raise maxDeletes)",
            if listed { "" } else { "at least " },
            spec.max_deletes
        )
    };
    loop {
        if run.delete_candidates > spec.max_deletes {
            let why = refusal(run.delete_candidates, run.prune_listed);
            tracing::warn!(run_id = %run.id, candidates = run.delete_candidates, max_deletes = spec.max_deletes, outcome = "deletes_refused", "{why}");
            return Ok(Pruned::Refused(why));
        }
        if !run.prune_listed {
            let target = svc.engine.target(&spec.target.container)?;
            let (blobs, next) = target
                .list_page(
                    &spec.target.prefix,
                    run.prune_marker.as_deref(),
                    svc.config.runs.prune_page,
                )
                .await?;
            // Blobs this tool wrote for this bucket under this run's mapping: another prefix
            // pair's blobs are not ours to judge.
            let ours: Vec<String> = blobs
                .iter()
                .filter_map(|b| {
                    let key = written_for(&b.metadata, &spec.source.bucket)?;
                    (blob_name(&key, &spec.source.prefix, &spec.target.prefix).as_deref() == Ok(b.name.as_str()))
                        .then_some(key)
                })
                .collect();
            let gone = absent_from_source(svc, &spec.source.bucket, &spec.source.prefix, ours).await?;
            svc.store.add_prune_candidates(&run.id, &gone).await?;
            run.delete_candidates += gone.len() as u64;
            run.prune_listed = next.is_none();
            run.prune_marker = next;
            run.checked_at = unix_now();
            if !svc.store.save(run).await? {
                // Another check moved the prune on (or the run ended): read where it stands.
                match svc.store.get(&run.id).await? {
                    Some(now) if !now.state.is_final() => *run = now,
                    _ => return Ok(Pruned::Done),
                }
            }
        } else {
            let keys = svc.store.prune_candidates(&run.id, 64).await?;
            if keys.is_empty() {
                return Ok(Pruned::Done);
            }
            delete_candidates(svc, run, keys).await?;
        }
        if started.elapsed() >= PRUNE_BUDGET {
            return Ok(Pruned::More);
        }
    }
}

/// Of `keys` (found as blobs), those the source does not have: one listing of the source
/// over the keys' range (S3 order), not a request per key.
async fn absent_from_source(
    svc: &RunService,
    bucket: &str,
    prefix: &str,
    mut keys: Vec<String>,
) -> Result<Vec<String>> {
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let (Some(first), Some(last)) = (keys.first().cloned(), keys.last().cloned()) else {
        return Ok(keys);
    };
    // Any string below the first key starts the listing early enough: the first key without
    // its last character (the keys between the two are listed too, and are harmless).
    let mut start = first.clone();
    start.pop();
    let mut present = HashSet::new();
    let mut token = None;
    loop {
        let (objs, next) = svc
            .engine
            .s3()
            .list_range(
                bucket,
                prefix,
                token,
                (!start.is_empty()).then_some(start.as_str()),
                1000,
            )
            .await?;
        let past_last = objs.last().is_some_and(|o| o.key.as_bytes() > last.as_bytes());
        present.extend(objs.into_iter().map(|o| o.key));
        match next {
            Some(t) if !past_last => token = Some(t),
            _ => break,
        }
    }
    keys.retain(|k| !present.contains(k));
    Ok(keys)
}

/// Deletes (or, in a dry run, counts) candidate blobs and drops their rows.
async fn delete_candidates(svc: &RunService, run: &RunRecord, keys: Vec<String>) -> Result<()> {
    let spec = &run.spec;
    let id = &run.id;
    let results: Vec<Result<()>> = futures::stream::iter(keys)
        .map(|key| async move {
            if spec.dry_run {
                svc.store
                    .record(id, &key, Tally::WouldDelete, 0, Some(PRUNE_REASON))
                    .await?;
            } else {
                // The engine re-checks the source (HEAD) and deletes only our blob, If-Match.
                let req = CopyRequest {
                    bucket: spec.source.bucket.clone(),
                    key: key.clone(),
                    container: spec.target.container.clone(),
                    source_prefix: spec.source.prefix.clone(),
                    target_prefix: spec.target.prefix.clone(),
                    run_id: Some(id.clone()),
                    mode: SyncMode::Mirror,
                    event: None,
                    listed: None,
                    recheck: false,
                    part: None,
                    fresh: false,
                };
                let rep = svc.engine.copy_object(&req).await?;
                if rep.outcome == crate::state::checkpoint::Outcome::Deleted {
                    svc.store.record(id, &key, Tally::Pruned, 0, Some(PRUNE_REASON)).await?;
                }
            }
            svc.store.drop_prune_candidate(id, &key).await
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// Sends the completion webhook if it is pending, claiming it first so concurrent checks
/// send it once. Each claim is an attempt; a failure that may pass is tried again after
/// [`notify_pause`] (returned), until [`NOTIFY_ATTEMPTS`] were made: then, as for a refusal,
/// `notification.state` is `failed` with the reason, and nothing more is tried.
async fn notify(svc: &RunService, run: &mut RunRecord) -> Result<Option<Duration>> {
    let base = svc.config.runs.notify_retry;
    let since_claim = run.notify_claimed_at.as_deref().map(since);
    let claimable = match run.notified {
        // A failed attempt waits out its pause.
        NotifyState::Pending if run.notify_attempts > 0 => {
            let pause = notify_pause(base, run.notify_attempts);
            match since_claim {
                Some(s) if s < pause => return Ok(Some(pause - s)),
                _ => true,
            }
        }
        NotifyState::Pending => true,
        // A sender that died while sending is taken over after a while.
        NotifyState::Sending => since_claim.is_none_or(|s| s > NOTIFY_CLAIM),
        _ => false,
    };
    if !claimable {
        return Ok(None);
    }
    let Some(webhook) = run.notify.clone() else {
        return Ok(None);
    };
    if run.notify_attempts >= NOTIFY_ATTEMPTS {
        // The last claim's sender died: nothing is left to try.
        return give_up(svc, run, "its last sender stopped before reporting back").await;
    }
    run.notified = NotifyState::Sending;
    run.notify_claimed_at = Some(now_rfc3339());
    run.notify_attempts += 1;
    if !svc.store.save(run).await? {
        return Ok(None); // another check claimed it
    }
    let Some(summary) = svc.summary(&run.id).await? else {
        return Ok(None); // the row is gone: nothing left to report
    };
    // The URL is read from the app setting now, so a rotated secret is the one used.
    let sent = match webhook.resolve(&svc.config) {
        Ok(url) => super::webhook::send(url, &summary, &svc.config).await,
        // A setting missing here but present where the run started: a deployment or a Key
        // Vault reference in flux, so it is tried again, within the bound.
        Err(why) => Err(Error::new(ErrorKind::Transient, format!("notify: {why}"))),
    };
    match sent {
        Ok(()) => {
            run.notified = NotifyState::Sent;
            run.notify_error = None;
            svc.store.save(run).await?;
            tracing::info!(run_id = %run.id, state = run.state.as_str(), attempt = run.notify_attempts, outcome = "notified", "webhook sent");
            Ok(None)
        }
        // Refused (a destination no longer allowed, a redirect, a 4xx): final, so it is
        // neither retried forever nor handed to a process that would judge it otherwise.
        Err(e) if e.kind() == crate::error::ErrorKind::Invalid => {
            run.notified = NotifyState::Failed;
            run.notify_error = Some(e.message().to_string());
            svc.store.save(run).await?;
            tracing::warn!(run_id = %run.id, error = %e, outcome = "notify_refused", "webhook refused; not retried");
            Ok(None)
        }
        Err(e) if run.notify_attempts >= NOTIFY_ATTEMPTS => give_up(svc, run, e.message()).await,
        Err(e) => {
            let pause = notify_pause(base, run.notify_attempts);
            run.notified = NotifyState::Pending;
            run.notify_error = Some(e.message().to_string());
            svc.store.save(run).await?;
            tracing::warn!(
                run_id = %run.id, error = %e, attempt = run.notify_attempts, pause_s = pause.as_secs(),
                outcome = "notify_failed", "webhook failed; will try again"
            );
            Ok(Some(pause))
        }
    }
}

/// Records that the webhook will not be sent: `failed`, with the last reason.
async fn give_up(svc: &RunService, run: &mut RunRecord, why: &str) -> Result<Option<Duration>> {
    run.notified = NotifyState::Failed;
    run.notify_error = Some(format!("gave up after {} attempts: {why}", run.notify_attempts));
    svc.store.save(run).await?;
    tracing::warn!(run_id = %run.id, attempts = run.notify_attempts, reason = %why, outcome = "notify_gave_up", "webhook not sent; attempts spent");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_pauses_double_to_an_hour() {
        let base = Duration::from_secs(60);
        let pauses: Vec<u64> = (1..NOTIFY_ATTEMPTS).map(|n| notify_pause(base, n).as_secs()).collect();
        assert_eq!(pauses, [60, 120, 240, 480, 960]);
        assert_eq!(notify_pause(base, 40), Duration::from_secs(3600));
        assert_eq!(notify_pause(Duration::ZERO, 3), Duration::ZERO);
    }
}
