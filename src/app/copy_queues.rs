//! The copy queues: `SYNC_COPY_QUEUES` of them (decision 125), so that no single queue's
//! target (about 2,000 messages/s) caps a run. A key always goes to the same queue, chosen by
//! its hash, so its messages (an event's and a run's, a split's parts) meet in one queue.

use sha2::{Digest, Sha256};

use crate::azure::auth::Authorizer;
use crate::azure::queue::WorkQueue;
use crate::config::Config;
use crate::error::Result;
use crate::messages::CopyMessage;
use crate::retry::RetryPolicy;

/// Copy messages a listing page sends at once.
const SEND_AT_ONCE: usize = 64;

/// Where the lister sends per-object work.
#[async_trait::async_trait]
pub trait CopySink: Send + Sync {
    /// Hands over copies; returns once they are durable (queued) or done.
    async fn send(&self, copies: Vec<CopyMessage>) -> Result<()>;
}

/// One queue as a sink.
#[async_trait::async_trait]
impl CopySink for WorkQueue {
    async fn send(&self, copies: Vec<CopyMessage>) -> Result<()> {
        use futures::StreamExt;
        let texts: Vec<String> = copies.iter().map(CopyMessage::to_json).collect();
        // Queue Storage has no batch put: a page's messages go out this many at once, so a
        // page of 1,000 takes 16 round trips, not 63 (measured behind 250 ms of latency, the
        // sends at 16 capped four processes' copies: bench/scaleout.sh).
        let results: Vec<Result<()>> = futures::stream::iter(texts)
            .map(|t| async move { WorkQueue::send(self, &t, None).await })
            .buffer_unordered(SEND_AT_ONCE)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

/// Every copy queue, the first being `SYNC_COPY_QUEUE`.
#[derive(Debug, Clone)]
pub struct CopyQueues {
    queues: Vec<WorkQueue>,
}

impl From<Vec<WorkQueue>> for CopyQueues {
    fn from(queues: Vec<WorkQueue>) -> Self {
        assert!(!queues.is_empty(), "at least one copy queue");
        CopyQueues { queues }
    }
}

impl From<WorkQueue> for CopyQueues {
    fn from(queue: WorkQueue) -> Self {
        vec![queue].into()
    }
}

impl CopyQueues {
    /// The configured queues, on the queue account, signed by `auth` (that account's; no
    /// network calls).
    pub fn open(config: &Config, auth: &Authorizer, retry: RetryPolicy) -> Result<Self> {
        let queues = config
            .queues
            .copy_names()
            .iter()
            .map(|name| WorkQueue::new(&config.queue_account, auth, name, retry))
            .collect::<Result<Vec<_>>>()?;
        Ok(queues.into())
    }

    /// The queue of `key` in `bucket`.
    pub fn for_key(&self, bucket: &str, key: &str) -> &WorkQueue {
        &self.queues[Self::index(bucket, key, self.queues.len())]
    }

    fn index(bucket: &str, key: &str, n: usize) -> usize {
        let h = Sha256::new()
            .chain_update(bucket.as_bytes())
            .chain_update([0])
            .chain_update(key.as_bytes())
            .finalize();
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize % n
    }

    /// Creates every queue if needed.
    pub async fn create_if_missing(&self) -> Result<()> {
        for q in &self.queues {
            q.create_if_missing().await?;
        }
        Ok(())
    }

    /// Messages waiting in all of them (each count is approximate).
    pub async fn approximate_count(&self) -> Result<u64> {
        let counts = futures::future::try_join_all(self.queues.iter().map(WorkQueue::approximate_count)).await?;
        Ok(counts.into_iter().sum())
    }

    /// Sends one message to its key's queue, visible after `delay`.
    pub async fn send_one(&self, msg: &CopyMessage, delay: Option<std::time::Duration>) -> Result<()> {
        self.for_key(&msg.bucket, &msg.key).send(&msg.to_json(), delay).await
    }
}

/// Each message to its key's queue; the queues' shares go out side by side.
#[async_trait::async_trait]
impl CopySink for CopyQueues {
    async fn send(&self, copies: Vec<CopyMessage>) -> Result<()> {
        let mut shares: Vec<Vec<CopyMessage>> = vec![Vec::new(); self.queues.len()];
        for c in copies {
            shares[Self::index(&c.bucket, &c.key, self.queues.len())].push(c);
        }
        let sends = self
            .queues
            .iter()
            .zip(shares)
            .filter(|(_, share)| !share.is_empty())
            .map(|(q, share)| CopySink::send(q, share));
        futures::future::try_join_all(sends).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_queues_and_stay_put() {
        for n in [1usize, 4, 16] {
            let mut per = vec![0u32; n];
            for i in 0..16_000 {
                let key = format!("data/{i:06}");
                let at = CopyQueues::index("b", &key, n);
                assert_eq!(at, CopyQueues::index("b", &key, n), "stable");
                per[at] += 1;
            }
            let share = 16_000 / n as u32;
            assert!(
                per.iter().all(|&c| c > share * 9 / 10 && c < share * 11 / 10),
                "{n}: {per:?}"
            );
        }
        // The bucket counts: the same key of two buckets is two keys.
        let differ = (0..64).any(|i| {
            let k = format!("k{i}");
            CopyQueues::index("a", &k, 16) != CopyQueues::index("b", &k, 16)
        });
        assert!(differ);
    }
}
