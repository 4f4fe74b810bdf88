//! One `copy-objects` message: the engine's request for it, and the whole handling (copy,
//! split into ranges, count towards the run, record a final failure).

use super::copy_queues::CopySink;
use super::invocation::{Failure, Handled};
use super::AppState;
use crate::config::Config;
use crate::engine::{CopyReport, CopyRequest, Engine, EventInfo, Listed, Step};
use crate::error::{Error, ErrorKind};
use crate::messages::CopyMessage;
use crate::model::PartRef;

/// The engine request for a message, with the configured defaults filled in.
pub fn to_request(msg: &CopyMessage, cfg: &Config) -> Result<CopyRequest, Error> {
    let container = msg
        .container
        .clone()
        .or_else(|| cfg.mapping.container.clone())
        .ok_or_else(|| Error::invalid("message names no container and SYNC_TARGET_CONTAINER is not set"))?;
    Ok(CopyRequest {
        bucket: msg.bucket.clone(),
        key: msg.key.clone(),
        container,
        source_prefix: msg
            .source_prefix
            .clone()
            .unwrap_or_else(|| cfg.mapping.source_prefix.clone()),
        target_prefix: msg
            .target_prefix
            .clone()
            .unwrap_or_else(|| cfg.mapping.target_prefix.clone()),
        run_id: msg.run_id.clone(),
        mode: msg.mode.unwrap_or(cfg.mapping.mode),
        // What a listing or a creation event saw. A removal event names the deleted version,
        // which must not pass for "the source still has this".
        listed: match msg.event.as_deref() {
            Some(e) if e.starts_with("ObjectRemoved") => None,
            _ => msg.etag.clone().zip(msg.size).map(|(etag, size)| Listed {
                etag,
                size,
                last_modified: msg.last_modified.clone(),
            }),
        },
        recheck: msg.recheck.unwrap_or(false),
        part: msg.part.clone(),
        // A range's commit needs the row as it is, whatever the lister saw.
        fresh: msg.fresh.unwrap_or(false) && msg.part.is_none(),
        event: msg.event.clone().map(|name| EventInfo {
            name,
            sequencer: msg.sequencer.clone(),
            time: msg.event_time.clone(),
        }),
    })
}

/// Copies one object in this process (the CLI), attempting it at most
/// `SYNC_MAX_DEQUEUE_COUNT` times: the bound a queued copy has, so an operator reasons about
/// one number whichever way an object travels. A failure that may pass (throttling, a fault,
/// a damaged transfer, a source changing under the copy) is attempted again after the retry
/// policy's backoff; any other comes back at once. Objects over `SYNC_INVOCATION_MIB` are
/// staged range by range, so a killed process resumes them.
pub async fn copy_in_process(engine: &Engine, req: &CopyRequest, cfg: &Config) -> Result<CopyReport, Error> {
    let mut attempt = 1;
    loop {
        match engine.copy_here(req, engine.config().invocation_bytes).await {
            Err(e) if attempt < cfg.queues.max_dequeue_count && may_pass(&e) => {
                tracing::warn!(bucket = %req.bucket, key = %req.key, attempt, error = %e, "object attempt failed; trying again");
                tokio::time::sleep(cfg.retry.backoff(attempt)).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Whether another attempt at the whole object may succeed.
fn may_pass(e: &Error) -> bool {
    e.is_retryable() || matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Precondition)
}

/// Handles one `copy-objects` message on its `attempt`-th delivery: copies the object (or
/// one range of it, or splits it into ranges), and counts the outcome towards its run.
pub async fn handle(state: &AppState, text: &str, attempt: u32) -> Result<Handled, Failure> {
    let msg = CopyMessage::parse(text).map_err(Failure::bad_input)?;
    let cfg = &state.config;
    let copy = to_request(&msg, cfg).map_err(Failure::bad_input)?;
    // Copies of a bulk run count towards its counters; a cancelled run's copies are dropped.
    let run = match &msg.run_id {
        Some(id) => {
            let svc = state.runs().await.map_err(Failure::internal)?;
            if svc.is_cancelled(id).await.map_err(Failure::internal)? {
                return Ok(Handled::new(
                    vec![format!(
                        "s3://{}/{}: run {id} was cancelled; not copied",
                        copy.bucket, copy.key
                    )],
                    serde_json::json!({"outcome": "cancelled", "runId": id}),
                ));
            }
            Some((svc, id.as_str()))
        }
        None => None,
    };
    let budget = cfg.engine.invocation_bytes;
    match state.engine.copy_step(&copy, Some(budget)).await {
        Ok(Step::Split(plan)) if plan.claimed || run.is_some() => {
            // Too big for one invocation: one message per range, each staged by its own
            // invocation. Only the lease holder sends, so duplicates do not multiply them.
            let sent = if plan.claimed { plan.unstaged.len() } else { 0 };
            if sent > 0 {
                let parts: Vec<CopyMessage> = plan
                    .unstaged
                    .iter()
                    .map(|&index| CopyMessage {
                        part: Some(PartRef {
                            etag: plan.etag.clone(),
                            index,
                        }),
                        fresh: None,
                        ..msg.clone()
                    })
                    .collect();
                let svc = state.runs().await.map_err(Failure::internal)?;
                if let Err(e) = CopySink::send(&svc.copy_queues, parts).await {
                    if let Err(r) = state.engine.release_split(&copy, &plan.etag).await {
                        tracing::warn!(bucket = %copy.bucket, key = %copy.key, error = %r, "could not release the split lease; it runs out by itself");
                    }
                    return Err(Failure::internal(e));
                }
            }
            // A run's copy is counted when the blob lands, whoever stages the ranges (another
            // copy may hold the plan, and its last range counts for nobody's run): it looks
            // again until then.
            // One look per run copy: a range's message whose plan is gone (and that split the
            // object again) leaves the looking to the copy it came from.
            let watching = match (run, &msg.part) {
                (Some((svc, id)), None) => watch_split(svc, id, &msg, cfg, attempt)
                    .await
                    .map_err(Failure::internal)?,
                _ => false,
            };
            Ok(Handled::new(
                vec![format!(
                    "s3://{}/{}: split into {} ranges ({} staged, {sent} sent{})",
                    copy.bucket,
                    copy.key,
                    plan.ranges,
                    plan.staged,
                    if watching { "; looking again for the blob" } else { "" }
                )],
                serde_json::json!({"outcome": "split", "ranges": plan.ranges, "staged": plan.staged, "sent": sent, "watching": watching}),
            ))
        }
        // An event's copy that finds another copy in charge of the split: that copy commits.
        Ok(Step::Split(plan)) => Ok(Handled::new(
            vec![format!(
                "s3://{}/{}: split into {} ranges, staged by another copy ({} staged)",
                copy.bucket, copy.key, plan.ranges, plan.staged
            )],
            serde_json::json!({"outcome": "split", "ranges": plan.ranges, "staged": plan.staged, "sent": 0}),
        )),
        Ok(Step::Staged { index, staged, ranges }) => Ok(Handled::new(
            vec![format!(
                "s3://{}/{}: range {index} staged ({staged} of {ranges})",
                copy.bucket, copy.key
            )],
            serde_json::json!({"outcome": "staged", "range": index, "staged": staged, "ranges": ranges}),
        )),
        Ok(Step::Done(report)) => {
            if let Some((svc, id)) = run {
                let tally = crate::state::runs::counters::Tally::of_row(report.outcome);
                svc.store
                    .record(id, &copy.key, tally, report.bytes, report.reason.as_deref())
                    .await
                    .map_err(Failure::internal)?;
            }
            Ok(Handled::new(
                vec![format!(
                    "s3://{}/{}: {}{}",
                    copy.bucket,
                    copy.key,
                    report.outcome.as_str(),
                    report.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                )],
                serde_json::json!({
                    "outcome": report.outcome.as_str(),
                    "reason": report.reason,
                    "blob": report.blob,
                    "bytes": report.bytes,
                    "path": report.path,
                    "verified": report.verified,
                }),
            ))
        }
        Err(e) => {
            // A failure that can never pass (400) is parked by the worker on this delivery;
            // the last attempt is parked by whichever host delivers it. Either way the key is
            // settled now, with its reason, so the run neither waits for it nor reports it as
            // retrying.
            let status = if e.kind() == ErrorKind::Invalid { 400 } else { 500 };
            let last = attempt >= cfg.queues.max_dequeue_count || status == 400;
            if let (true, Some((svc, id))) = (last, run) {
                let tally = crate::state::runs::counters::Tally::Failed;
                if let Err(ce) = svc.store.record(id, &copy.key, tally, 0, Some(e.message())).await {
                    tracing::warn!(run_id = %id, key = %copy.key, error = %ce, "could not count the failure; the run's stall guard will");
                }
            }
            if let (false, Some((svc, id))) = (last, run) {
                // Shown as `retrying` in the run's report until a final outcome is counted.
                if let Err(ce) = svc.store.record_retrying(id, &copy.key, e.message(), attempt).await {
                    tracing::warn!(run_id = %id, key = %copy.key, error = %ce, "could not note the failed attempt in the run's report");
                }
            }
            if last {
                tracing::error!(
                    bucket = %copy.bucket, key = %copy.key, attempt, outcome = "poisoned",
                    reason = %e, "final attempt failed; the message is parked in copy-objects-poison"
                );
            }
            let retry_note = if last {
                "final attempt; recorded as failed"
            } else {
                "will be retried"
            };
            Err(Failure {
                status,
                error: e.context(format!(
                    "s3://{}/{} (attempt {attempt}, {retry_note})",
                    copy.bucket, copy.key
                )),
            })
        }
    }
}

/// How many times a run's split copy looks again for its blob (each after three check
/// intervals: 30 s by default, so about four hours).
pub const MAX_SPLIT_WAITS: u32 = 480;

/// Queues `msg` again to look for its blob later, as `retrying` in the run's report meanwhile;
/// after [`MAX_SPLIT_WAITS`] looks, counts the key failed with the reason. `false` when the run
/// has ended (nothing is left to count for).
async fn watch_split(
    svc: &super::service::RunService,
    id: &str,
    msg: &CopyMessage,
    cfg: &Config,
    attempt: u32,
) -> Result<bool, Error> {
    if svc.store.get(id).await?.is_none_or(|r| r.state.is_final()) {
        return Ok(false);
    }
    let waits = msg.waits.unwrap_or(0) + 1;
    if waits > MAX_SPLIT_WAITS {
        let reason = format!(
            "its split copy did not land after {MAX_SPLIT_WAITS} looks; the ranges staged so far are kept, and the next run or event goes on from them"
        );
        svc.store
            .record(
                id,
                &msg.key,
                crate::state::runs::counters::Tally::Failed,
                0,
                Some(&reason),
            )
            .await?;
        return Ok(false);
    }
    let note = format!("split into ranges; waiting for the blob to land (look {waits} of {MAX_SPLIT_WAITS})");
    svc.store.record_retrying(id, &msg.key, &note, attempt).await?;
    let again = CopyMessage {
        waits: Some(waits),
        fresh: None,
        part: None,
        ..msg.clone()
    };
    svc.copy_queues
        .send_one(&again, Some(cfg.runs.check_interval * 3))
        .await?;
    Ok(true)
}
