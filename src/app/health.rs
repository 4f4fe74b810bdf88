//! What waits and what is stuck, read from the queues: the SQS backlog and its dead letters,
//! the relay's last drain, the copy and list queues, the poison and reject queues. One read
//! shared by the cutover gate and the dashboard.

use serde::Serialize;

use super::service::RunService;
use crate::aws::sqs::SqsQueue;
use crate::azure::queue::WorkQueue;
use crate::error::Result;

/// The S3 event queue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsHealth {
    /// Events waiting.
    pub visible: u64,
    /// Events a relay holds now.
    pub in_flight: u64,
    /// Events in the dead-letter queue; `None` when the queue has none.
    pub dead_letters: Option<u64>,
    /// When a relay last drained the queue (RFC 3339); `None` before the first drain.
    pub last_drain_at: Option<String>,
    /// The oldest event that drain saw, in seconds.
    pub oldest_age_seconds: Option<u64>,
}

/// Messages in one Azure queue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Depth {
    /// The queue's name.
    pub queue: String,
    /// Approximate number of messages.
    pub messages: u64,
}

/// Every queue the service reads or parks to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueHealth {
    /// `None` when SYNC_SQS_QUEUE_URL is not set.
    pub sqs: Option<SqsHealth>,
    /// Copies waiting in every copy queue (`copy-objects`, and `copy-objects-1`, … with
    /// `SYNC_COPY_QUEUES`), named together.
    pub copies: Depth,
    /// Listing steps waiting (`list-pages`).
    pub list_pages: Depth,
    /// Messages parked after their last attempt, per poison queue.
    pub poison: Vec<Depth>,
    /// SQS messages that could not be read, parked with their reason.
    pub rejected: Depth,
}

impl QueueHealth {
    /// Messages parked in all poison queues.
    pub fn poisoned(&self) -> u64 {
        self.poison.iter().map(|d| d.messages).sum()
    }
}

/// Reads every queue once.
pub async fn queue_health(svc: &RunService) -> Result<QueueHealth> {
    let cfg = &svc.config;
    let retry = cfg.retry;
    let sqs = match cfg.relay.queue_url.as_deref() {
        Some(url) => {
            let q = SqsQueue::new(&cfg.aws, url, retry).await;
            let depth = q.depth().await?;
            let dead_letters = match q.dead_letter().await? {
                Some((dlq, _)) => Some(dlq.depth().await?.visible),
                None => None,
            };
            let drain = svc.engine.checkpoint().lag().last(url).await?;
            Some(SqsHealth {
                visible: depth.visible,
                in_flight: depth.in_flight,
                dead_letters,
                oldest_age_seconds: drain.as_ref().map(|d| d.oldest_age_ms.max(0) as u64 / 1000),
                last_drain_at: drain.map(|d| d.at),
            })
        }
        None => None,
    };
    let auth = cfg.queue_account.authorizer()?;
    let depth = |name: String| {
        let auth = &auth;
        async move {
            let messages = WorkQueue::new(&cfg.queue_account, auth, &name, retry)?
                .approximate_count()
                .await?;
            Result::Ok(Depth { queue: name, messages })
        }
    };
    Ok(QueueHealth {
        sqs,
        copies: Depth {
            queue: cfg.queues.copy_names().join(", "),
            messages: svc.copy_queues.approximate_count().await?,
        },
        list_pages: Depth {
            queue: cfg.queues.list.clone(),
            messages: svc.list_queue.approximate_count().await?,
        },
        poison: futures::future::try_join_all(
            cfg.queues
                .copy_names()
                .iter()
                .chain([&cfg.queues.list])
                .map(|q| depth(format!("{q}-poison"))),
        )
        .await?,
        rejected: depth(cfg.queues.reject.clone()).await?,
    })
}
