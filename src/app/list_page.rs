//! One `list-pages` message: a page of a bulk run, a slice of a verify run, or a check
//! whether a run has settled.

use super::finish::{check, CheckStep};
use super::invocation::{Failure, Handled};
use super::lister::{list_page, PageStep};
use super::verify_run::SliceStep;
use super::AppState;
use crate::messages::ListMessage;
use crate::state::runs::store::RunState;

/// Handles one `list-pages` message on its `attempt`-th delivery: lists one page of a run
/// (queueing the next), or checks whether the run has settled (finishing it when it has).
pub async fn handle(state: &AppState, text: &str, attempt: u32) -> Result<Handled, Failure> {
    let msg = ListMessage::parse(text).map_err(Failure::bad_input)?;
    let svc = state.runs().await.map_err(Failure::internal)?;
    let last = attempt >= state.config.queues.max_dequeue_count;
    match &msg {
        ListMessage::Page { run_id, shard, page } => {
            match list_page(svc, run_id, *shard, *page, &svc.copy_queues).await {
                Ok(step) => {
                    let page_of = |shard: u32, page: u64| ListMessage::Page {
                        run_id: run_id.clone(),
                        shard,
                        page,
                    };
                    match &step {
                        PageStep::Next { page: n, start } => {
                            // The children first: a lost next step is re-sent by this page's
                            // redelivery, with them.
                            for &child in start {
                                svc.enqueue(&page_of(child, 0), None).await.map_err(Failure::internal)?;
                            }
                            svc.enqueue(&page_of(*shard, *n), None)
                                .await
                                .map_err(Failure::internal)?
                        }
                        PageStep::Done | PageStep::Ended => svc
                            .enqueue(&ListMessage::Check { run_id: run_id.clone() }, None)
                            .await
                            .map_err(Failure::internal)?,
                        PageStep::ShardDone { start } => {
                            for &child in start {
                                svc.enqueue(&page_of(child, 0), None).await.map_err(Failure::internal)?;
                            }
                        }
                        PageStep::Stale | PageStep::Gone => {}
                    }
                    Ok(Handled::new(
                        vec![format!("run {run_id} shard {shard} page {page}: {step:?}")],
                        serde_json::json!({"runId": run_id, "shard": shard, "page": page, "step": format!("{step:?}")}),
                    ))
                }
                Err(e) => {
                    if last {
                        let reason = format!(
                            "listing page {page} of shard {shard} failed {attempt} times: {}",
                            e.message()
                        );
                        give_up(svc, run_id, reason).await;
                    }
                    Err(Failure::internal(e.context(format!(
                        "run {run_id} shard {shard} page {page} (attempt {attempt})"
                    ))))
                }
            }
        }
        ListMessage::Verify { run_id } => match super::verify_run::slice(svc, run_id).await {
            Ok(step) => {
                match step {
                    SliceStep::More => svc.enqueue(&msg, None).await.map_err(Failure::internal)?,
                    // The webhook goes out from the check, with its retries.
                    SliceStep::Ended => svc
                        .enqueue(&ListMessage::Check { run_id: run_id.clone() }, None)
                        .await
                        .map_err(Failure::internal)?,
                    SliceStep::Stale | SliceStep::Gone => {}
                }
                Ok(Handled::new(
                    vec![format!("run {run_id}: verify {step:?}")],
                    serde_json::json!({"runId": run_id, "step": format!("{step:?}")}),
                ))
            }
            Err(e) => {
                if last {
                    give_up(
                        svc,
                        run_id,
                        format!("the verification failed {attempt} times: {}", e.message()),
                    )
                    .await;
                }
                Err(Failure::internal(
                    e.context(format!("run {run_id} verify slice (attempt {attempt})")),
                ))
            }
        },
        ListMessage::Check { run_id } => match check(svc, run_id).await {
            Ok(step) => {
                match step {
                    CheckStep::Wait(d) | CheckStep::Notify(d) => {
                        svc.enqueue(&msg, Some(d)).await.map_err(Failure::internal)?
                    }
                    CheckStep::More => svc.enqueue(&msg, None).await.map_err(Failure::internal)?,
                    CheckStep::Finished => {}
                }
                Ok(Handled::new(
                    vec![format!("run {run_id}: {step:?}")],
                    serde_json::json!({"runId": run_id, "step": format!("{step:?}")}),
                ))
            }
            Err(e) if last && !e.is_retryable() => {
                // A check that can never pass (a refused listing in the prune, say) ends the
                // run, naming why, instead of coming back for ever.
                let reason = format!("checking the run failed {attempt} times: {}", e.message());
                super::service::end(svc, run_id, RunState::Failed, Some(reason))
                    .await
                    .map_err(Failure::internal)?;
                svc.enqueue(&msg, None).await.map_err(Failure::internal)?;
                Ok(Handled::new(
                    vec![format!("run {run_id}: check failed for good, run ended: {e}")],
                    serde_json::Value::Null,
                ))
            }
            Err(e) if last => {
                // Keep the run's check chain alive with a fresh message rather than poison it.
                tracing::warn!(run_id = %run_id, error = %e, outcome = "check_requeued", "run check keeps failing; trying again later");
                svc.enqueue(&msg, Some(state.config.runs.check_interval * 6))
                    .await
                    .map_err(Failure::internal)?;
                Ok(Handled::new(
                    vec![format!("run {run_id}: check failed, requeued: {e}")],
                    serde_json::Value::Null,
                ))
            }
            Err(e) => Err(Failure::internal(
                e.context(format!("run {run_id} check (attempt {attempt})")),
            )),
        },
    }
}

/// A run's message is about to be poisoned: end the run as Failed, naming why, instead of
/// leaving it Running for ever, and queue the check that sends its webhook (best effort: the
/// sweep ends a run whose messages stopped).
async fn give_up(svc: &super::service::RunService, run_id: &str, reason: String) {
    let _ = super::service::end(svc, run_id, RunState::Failed, Some(reason)).await;
    let _ = svc
        .enqueue(
            &ListMessage::Check {
                run_id: run_id.to_string(),
            },
            None,
        )
        .await;
}
