//! `redrive`: dead-lettered S3 events back to the events queue.

use std::time::Duration;

use serde::Serialize;

use crate::aws::sqs::{SqsMessage, SqsQueue};
use crate::error::Result;

/// What `redrive` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveStats {
    /// The dead-letter queue's URL.
    pub dead_letter_queue: String,
    /// Messages waiting there when it started (approximate).
    pub waiting: u64,
    /// Messages sent back to the source queue and deleted from the dead-letter queue.
    pub moved: u64,
    /// Messages left where they are, each with why (another queue's, or of unknown origin).
    pub left: Vec<String>,
}

/// Whether a dead-lettered message is this queue's to take back: SQS names the queue it
/// came from (`DeadLetterQueueSourceArn`), and a dead-letter queue may serve several. One
/// without the attribute was not dead-lettered by SQS; it moves only with `any_source`.
fn belongs(m: &SqsMessage, our_arn: &str, any_source: bool) -> std::result::Result<(), String> {
    match m.dead_letter_source.as_deref() {
        Some(src) if src == our_arn => Ok(()),
        Some(src) => Err(format!("message {}: dead-lettered from {src}, not this queue", m.id)),
        None if any_source => Ok(()),
        None => Err(format!(
            "message {}: no DeadLetterQueueSourceArn (not dead-lettered by SQS); --any-source moves it",
            m.id
        )),
    }
}

/// Moves messages from `sqs`'s dead-letter queue back to `sqs`, at most `max`: only those
/// SQS dead-lettered from `sqs` (or of no recorded origin, with `any_source`). Each is sent
/// first and deleted from the dead-letter queue only after the send succeeded, so a crash
/// can duplicate a message (harmless: events are idempotent) but never lose one. Messages
/// left behind become visible again at once. A dry run only reports how many wait there.
pub async fn redrive(sqs: &SqsQueue, max: u64, dry_run: bool, any_source: bool) -> Result<RedriveStats> {
    let (dlq, _) = sqs.dead_letter().await?.ok_or_else(|| {
        crate::error::Error::invalid(format!(
            "queue {} has no RedrivePolicy, so it has no dead-letter queue to bring messages back from",
            sqs.url()
        ))
    })?;
    let mut stats = RedriveStats {
        dead_letter_queue: dlq.url().to_string(),
        waiting: dlq.depth().await?.visible,
        ..Default::default()
    };
    if dry_run {
        return Ok(stats);
    }
    let our_arn = sqs.arn().await?;
    let mut seen = std::collections::HashSet::new();
    while stats.moved < max {
        let want = (max - stats.moved).min(10) as i32;
        let batch = dlq
            .receive(want, Duration::from_secs(1), Duration::from_secs(300))
            .await?;
        if batch.is_empty() {
            break;
        }
        let mut skipped = Vec::new();
        for m in &batch {
            if !seen.insert(m.id.clone()) {
                skipped.push(m);
                continue;
            }
            if let Err(why) = belongs(m, &our_arn, any_source) {
                tracing::info!(message_id = %m.id, outcome = "left", reason = %why, "dead-lettered message not ours to move");
                stats.left.push(why);
                skipped.push(m);
                continue;
            }
            sqs.send(&m.body).await?;
            if dlq.delete_batch(&[m]).await?.is_empty() {
                stats.moved += 1;
                tracing::info!(message_id = %m.id, outcome = "redriven", "dead-lettered message sent back to the source queue");
                crate::audit::record(
                    crate::audit::Action::RedriveMessage,
                    "the CLI (redrive)",
                    "",
                    &format!("SQS message {} from {}", m.id, dlq.url()),
                    "sent back to the source queue and removed from the dead-letter queue",
                );
            } else {
                stats.left.push(format!(
                    "message {}: sent back, but the dead-letter queue kept it too",
                    m.id
                ));
            }
        }
        if !skipped.is_empty() {
            // Left behind: visible again at once for whoever owns them.
            dlq.extend_visibility(&skipped, Duration::ZERO).await?;
            if skipped.len() == batch.len() {
                break;
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_takes_back_only_its_own_messages() {
        let ours = "arn:aws:sqs:us-east-1:1:events";
        let m = |src: Option<&str>| SqsMessage {
            id: "m".into(),
            dead_letter_source: src.map(str::to_string),
            ..Default::default()
        };
        assert!(belongs(&m(Some(ours)), ours, false).is_ok());
        let other = belongs(&m(Some("arn:aws:sqs:us-east-1:1:other")), ours, true).unwrap_err();
        assert!(other.contains("not this queue"), "{other}");
        let unknown = belongs(&m(None), ours, false).unwrap_err();
        assert!(unknown.contains("--any-source"), "{unknown}");
        assert!(belongs(&m(None), ours, true).is_ok());
    }
}
