//! `ListPage`: queue-triggered on `list-pages`. A message lists one page of a run (and
//! queues the next), or checks whether a listed run has settled (and finishes it).

use super::protocol::{dequeue_count, InvokeRequest};
use super::{Failure, Handled};
use crate::app::AppState;

/// The queue trigger's binding name in `functions/ListPage/function.json`.
pub const BINDING: &str = "message";

/// Handles one invocation: the queue message and its delivery count, handed to the app.
pub async fn handle(state: &AppState, req: &InvokeRequest) -> Result<Handled, Failure> {
    let text = super::queue_message(req, BINDING)?;
    let attempt = dequeue_count(&req.metadata).unwrap_or(1);
    crate::app::list_page::handle(state, &text, attempt).await
}
