//! `ListPage`: queue-triggered on `list-pages`. A message lists one page of a run (and
//! queues the next), or checks whether a listed run has settled (and finishes it).

use super::protocol::{dequeue_count, InvokeRequest};
use super::{Failure, Handled};
use crate::error::Error;
use crate::run::finish::{check, CheckStep};
use crate::run::lister::{list_page, PageStep};
use crate::run::service::ListMessage;
use crate::run::store::RunState;
use crate::AppState;

/// The queue trigger's binding name in `functions/ListPage/function.json`.
pub const BINDING: &str = "message";

/// Parses a `list-pages` message; errors say what to fix.
pub fn parse_message(text: &str) -> Result<ListMessage, Error> {
    serde_json::from_str(text).map_err(|e| {
        Error::invalid(format!(
            "list-pages message: {e} (expected {{\"kind\":\"page\",\"runId\":…,\"page\":0}} or {{\"kind\":\"check\",\"runId\":…}})"
        ))
    })
}

/// Handles one invocation.
pub async fn handle(state: &AppState, req: &InvokeRequest) -> Result<Handled, Failure> {
    let text = super::queue_message(req, BINDING)?;
    let msg = parse_message(&text).map_err(Failure::bad_input)?;
    let svc = state.runs().await.map_err(Failure::internal)?;
    let attempt = dequeue_count(&req.metadata).unwrap_or(1);
    let last = attempt >= state.config.max_dequeue_count;
    match &msg {
        ListMessage::Page { run_id, page } => match list_page(svc, run_id, *page, &svc.copy_queue).await {
            Ok(step) => {
                match step {
                    PageStep::Next(n) => svc
                        .enqueue(
                            &ListMessage::Page {
                                run_id: run_id.clone(),
                                page: n,
                            },
                            None,
                        )
                        .await
                        .map_err(Failure::internal)?,
                    PageStep::Done | PageStep::Ended => svc
                        .enqueue(&ListMessage::Check { run_id: run_id.clone() }, None)
                        .await
                        .map_err(Failure::internal)?,
                    PageStep::Stale | PageStep::Gone => {}
                }
                Ok(Handled::new(
                    vec![format!("run {run_id} page {page}: {step:?}")],
                    serde_json::json!({"runId": run_id, "page": page, "step": format!("{step:?}")}),
                ))
            }
            Err(e) => {
                if last {
                    // The message is about to be poisoned: end the run clearly instead of
                    // leaving it Running forever.
                    let reason = format!("listing page {page} failed {attempt} times: {}", e.message());
                    let _ = crate::run::finish::end(svc, run_id, RunState::Failed, Some(reason)).await;
                    let _ = svc.enqueue(&ListMessage::Check { run_id: run_id.clone() }, None).await;
                }
                Err(Failure::internal(
                    e.context(format!("run {run_id} page {page} (attempt {attempt})")),
                ))
            }
        },
        ListMessage::Check { run_id } => match check(svc, run_id).await {
            Ok(step) => {
                if let CheckStep::Wait(d) = step {
                    svc.enqueue(&msg, Some(d)).await.map_err(Failure::internal)?;
                }
                Ok(Handled::new(
                    vec![format!("run {run_id}: {step:?}")],
                    serde_json::json!({"runId": run_id, "step": format!("{step:?}")}),
                ))
            }
            Err(e) if last => {
                // Keep the run's check chain alive with a fresh message rather than poison it.
                tracing::warn!(run_id = %run_id, error = %e, outcome = "check_requeued", "run check keeps failing; trying again later");
                svc.enqueue(&msg, Some(state.config.run_check_interval * 6))
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
