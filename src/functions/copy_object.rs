//! `CopyObject`: queue-triggered on `copy-objects`; one message moves one object.

use super::protocol::{dequeue_count, InvokeRequest};
use super::{Failure, Handled};
use crate::app::AppState;

/// The binding name of the queue trigger in `functions/CopyObject/function.json`.
pub const BINDING: &str = "message";

/// Handles one invocation: the queue message and its delivery count, handed to the app.
pub async fn handle(state: &AppState, req: &InvokeRequest) -> Result<Handled, Failure> {
    let text = super::queue_message(req, BINDING)?;
    let attempt = dequeue_count(&req.metadata).unwrap_or(1);
    crate::app::copy_object::handle(state, &text, attempt).await
}
