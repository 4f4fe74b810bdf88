//! The `copy-objects` consumer for the `watch` worker: what the Functions host does for
//! `CopyObject`, done in-process — receive, copy one object, delete only after the outcome
//! is durable, retry with backoff, and park a message in `<queue>-poison` after
//! `SYNC_MAX_DEQUEUE_COUNT` attempts.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::Result;
use crate::functions::copy_object::{parse_message, to_request};
use crate::retry::RetryPolicy;
use crate::target::queue::{WorkItem, WorkQueue};

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Copied, skipped or otherwise settled; deleted from the queue.
    Done,
    /// Failed; visible again after a backoff.
    Retry,
    /// Parked in the poison queue.
    Poisoned,
}

/// Totals of a worker run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Messages settled.
    pub done: u64,
    /// Messages released for a retry.
    pub retried: u64,
    /// Messages parked.
    pub poisoned: u64,
}

/// The consumer.
#[derive(Clone)]
pub struct Worker {
    engine: Arc<Engine>,
    config: Arc<Config>,
    queue: WorkQueue,
    poison: WorkQueue,
    /// Messages processed at once.
    pub concurrency: usize,
    /// How long a received message stays hidden while it is worked on.
    pub visibility: Duration,
}

impl Worker {
    /// A worker on the configured copy queue; creates it and its poison queue if needed.
    pub async fn new(engine: Arc<Engine>, config: Arc<Config>, concurrency: usize) -> Result<Self> {
        let auth = config.azure.authorizer()?;
        let retry = RetryPolicy::default();
        let queue = WorkQueue::new(&config.azure, &auth, &config.copy_queue, retry)?;
        let poison = WorkQueue::new(&config.azure, &auth, &format!("{}-poison", config.copy_queue), retry)?;
        queue.create_if_missing().await?;
        poison.create_if_missing().await?;
        Ok(Worker {
            visibility: config.worker_visibility,
            engine,
            config,
            queue,
            poison,
            concurrency: concurrency.max(1),
        })
    }

    /// Handles one message.
    pub async fn process(&self, item: &WorkItem) -> Result<ItemOutcome> {
        let req = match parse_message(&item.text).and_then(|m| to_request(&m, &self.config)) {
            Ok(r) => r,
            Err(e) => {
                // It can never succeed: park it at once, with the reason in the log.
                tracing::warn!(message_id = %item.id, outcome = "poisoned", reason = %e, "malformed copy message");
                self.poison.send(&item.text, None).await?;
                self.queue.delete(item).await?;
                return Ok(ItemOutcome::Poisoned);
            }
        };
        match self.engine.copy_object(&req).await {
            Ok(_) => {
                self.queue.delete(item).await?;
                Ok(ItemOutcome::Done)
            }
            Err(e) if item.dequeue_count >= self.config.max_dequeue_count => {
                tracing::error!(
                    bucket = %req.bucket, key = %req.key, attempt = item.dequeue_count, outcome = "poisoned",
                    reason = %e, "final attempt failed; message parked"
                );
                self.poison.send(&item.text, None).await?;
                self.queue.delete(item).await?;
                Ok(ItemOutcome::Poisoned)
            }
            Err(_) => {
                let delay = Duration::from_secs(2u64.saturating_pow(item.dequeue_count).min(300));
                self.queue.release(item, delay).await?;
                Ok(ItemOutcome::Retry)
            }
        }
    }

    /// Receives and processes until `stop` turns true, or — with `idle_exit` — until the queue
    /// has been empty that long. In-flight messages are finished before returning.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>, idle_exit: Option<Duration>) -> WorkerStats {
        let mut stats = WorkerStats::default();
        let mut running: JoinSet<Result<ItemOutcome>> = JoinSet::new();
        let mut idle_since = tokio::time::Instant::now();
        loop {
            while let Some(done) = running.try_join_next() {
                tally(&mut stats, done);
            }
            if *stop.borrow() {
                break;
            }
            let free = self.concurrency.saturating_sub(running.len());
            if free == 0 {
                if let Some(done) = running.join_next().await {
                    tally(&mut stats, done);
                }
                continue;
            }
            let items = match self.queue.receive(free.min(32) as u32, self.visibility).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(error = %e, queue = self.queue.name(), "receive failed");
                    Vec::new()
                }
            };
            if items.is_empty() {
                if running.is_empty() && idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            idle_since = tokio::time::Instant::now();
            for item in items {
                let w = self.clone();
                running.spawn(async move { w.process(&item).await });
            }
        }
        while let Some(done) = running.join_next().await {
            tally(&mut stats, done);
        }
        stats
    }
}

fn tally(stats: &mut WorkerStats, r: std::result::Result<Result<ItemOutcome>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(ItemOutcome::Done)) => stats.done += 1,
        Ok(Ok(ItemOutcome::Retry)) => stats.retried += 1,
        Ok(Ok(ItemOutcome::Poisoned)) => stats.poisoned += 1,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "queue operation failed; the message becomes visible again")
        }
        Err(e) => tracing::error!(error = %e, "worker task failed"),
    }
}
