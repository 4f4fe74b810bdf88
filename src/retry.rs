//! The one retry policy: exponential backoff with full jitter, bounded by both an attempt
//! count and a total time. The SDK clients are built with their own retries switched off, so
//! every call is retried here and nowhere else. Each call states, where it is built, whether
//! a repeat is harmless ([`Idempotency`]); [`Error::may_retry`] alone decides.
//!
//! The same policy bounds optimistic concurrency: a read-modify-write under If-Match that
//! lost to another writer reads again and retries, through [`RetryPolicy::conflicts`].
//!
//! Every loop that tries something again, and its bound (defaults):
//!
//! | loop | where | bound |
//! |---|---|---|
//! | one call to S3, SQS, STS, Blob, Queue or Table | [`RetryPolicy::run`] | 6 attempts and 60 s; pauses 0.2 s × 2ⁿ (at most 10 s), jittered; a failure that may have been applied only for an idempotent call |
//! | a read-modify-write under If-Match (counters, run row, lock, checkpoint, plan lease) | [`RetryPolicy::conflicts`] | 64 attempts; pauses 5 ms × n (at most 100 ms), jittered |
//! | a copy whose source or blob changed under it | `engine::copy::copy_step` | 3 restarts |
//! | one object's attempts | the queue's `maxDequeueCount`, the worker and `copy_in_process` | `SYNC_MAX_DEQUEUE_COUNT` (5) |
//! | a queued message's next attempt (`watch`, `serve --work-queues`) | [`RetryPolicy::redelivery`] | 2ⁿ s, at most 300 s |
//! | an SQS message whose relay failed on its own | `app::drain::retry_visibility` | `SYNC_SQS_RETRY_BASE_SECS` × 4ⁿ⁻¹, at most 11 h; SQS's `maxReceiveCount` |
//! | the relay's probe while the Azure side is down | `app::drain::Breaker` | every `min(SYNC_SQS_RETRY_BASE_SECS, 30 s)`, until it answers |
//! | a run's webhook | `app::finish::notify` | 6 attempts, paced `SYNC_NOTIFY_RETRY_SECS` × 2ⁿ⁻¹ (at most 1 h) |
//! | a run's settle check | `app::finish::check` | every `SYNC_RUN_CHECK_SECS`; the stall guard after `SYNC_RUN_STALL_SECS` without progress; a check failing for good ends the run |
//! | a run whose chain stopped | `app::sweep` | ended after `SYNC_RUN_STALL_SECS` without a sign (3 leases for a CLI run) |
//! | a run's split copy waiting for its blob | `app::copy_object::watch_split` | 480 looks, 3 check intervals apart |
//! | a split plan's sender | `engine::split` | its lease, 120 s, then another planner sends |
//! | a resumed ranged GET | `aws::ranged_get` | each resume is one call under [`RetryPolicy::run`] |
//!
//! And the three heartbeats that keep work claimed while it runs: a queue message's
//! visibility (every half `SYNC_WORKER_VISIBILITY_SECS`), an SQS batch's (every half
//! `SYNC_SQS_VISIBILITY_SECS`), and a CLI run's lock lease (every third of
//! `SYNC_RUN_LEASE_SECS`; the process stops itself after two thirds without a renewal).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Idempotency, Result};

/// Retry bounds.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// No new attempt starts after this much time since the first.
    pub max_elapsed: Duration,
    /// The first backoff's upper bound.
    pub base_delay: Duration,
    /// The cap on a single backoff.
    pub max_delay: Duration,
    /// Read-modify-write attempts, the first included, before a writer that keeps losing to
    /// others gives up (see [`RetryPolicy::conflicts`]).
    pub max_conflicts: u32,
    /// The first pause after a lost write; pauses grow by this much per loss, to twenty
    /// times it, each one a random part of that.
    pub conflict_pause: Duration,
    /// A queued message's first pause after a failed attempt (the in-process workers); it
    /// doubles after each.
    pub redelivery_base: Duration,
    /// The cap on that pause.
    pub redelivery_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(60),
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            // Sixteen counter shards under hundreds of concurrent copies lose often; the
            // pauses add up to about three seconds at most.
            max_conflicts: 64,
            conflict_pause: Duration::from_millis(5),
            redelivery_base: Duration::from_secs(2),
            redelivery_max: Duration::from_secs(300),
        }
    }
}

/// The attempts of one optimistic-concurrency loop (see [`RetryPolicy::conflicts`]).
#[derive(Debug)]
pub struct Conflicts {
    what: String,
    attempt: u32,
    max: u32,
    pause: Duration,
}

impl Conflicts {
    /// Starts the next attempt and returns its number (0 for the first). Every attempt but
    /// the first follows a lost write: it waits a short, jittered, growing pause first. Once
    /// the attempts are spent, `Throttled` (to be retried later, as a whole), naming `what`.
    pub async fn next(&mut self) -> Result<u32> {
        let n = self.attempt;
        if n >= self.max {
            return Err(Error::new(
                ErrorKind::Throttled,
                format!("{}: lost to other writers {n} times in a row", self.what),
            ));
        }
        if n > 0 {
            let cap = self.pause.saturating_mul(n.min(20)).as_millis() as u64;
            tokio::time::sleep(Duration::from_millis(rand::random_range(0..=cap))).await;
        }
        self.attempt += 1;
        Ok(n)
    }
}

impl RetryPolicy {
    /// The attempts of a read-modify-write under If-Match that may lose to other writers:
    ///
    /// ```ignore
    /// let mut tries = policy.conflicts("run r1: end");
    /// loop {
    ///     tries.next().await?;
    ///     let row = read().await?;
    ///     if write_if_match(&row).await? { break; } // else another writer won: read again
    /// }
    /// ```
    pub fn conflicts(&self, what: impl Into<String>) -> Conflicts {
        Conflicts {
            what: what.into(),
            attempt: 0,
            max: self.max_conflicts.max(1),
            pause: self.conflict_pause,
        }
    }

    /// The backoff before attempt `attempt + 1` (attempt counts from 1): a random duration
    /// between zero and `min(max_delay, base_delay * 2^(attempt-1))`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let cap = exp.min(self.max_delay);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(if millis == 0 { 0 } else { rand::random_range(0..=millis) })
    }

    /// How long a queued message that failed its `attempt`-th delivery stays hidden before
    /// the next: `redelivery_base` × 2^(attempt−1), at most `redelivery_max`.
    pub fn redelivery(&self, attempt: u32) -> Duration {
        self.redelivery_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.redelivery_max)
    }

    /// Runs `op` until it succeeds, fails with an error that may not be retried for a call of
    /// this `idempotency` ([`Error::may_retry`]), or the bounds are spent. `what` names the
    /// call in the retry log line.
    pub async fn run<T, F, Fut>(&self, what: &str, idempotency: Idempotency, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let delay = self.backoff(attempt);
                    let out_of_time = start.elapsed() + delay > self.max_elapsed;
                    let again = e.may_retry(idempotency);
                    if !again || attempt >= self.max_attempts || out_of_time {
                        if again && attempt > 1 {
                            return Err(e.context(format!("{what}: gave up after {attempt} attempts")));
                        }
                        return Err(e);
                    }
                    tracing::warn!(
                        call = what,
                        attempt,
                        error_kind = e.kind().as_str(),
                        error = %e,
                        delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            max_elapsed: Duration::from_secs(5),
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    #[tokio::test]
    async fn conflicts_are_bounded_and_name_the_loop() {
        let p = RetryPolicy {
            max_conflicts: 3,
            conflict_pause: Duration::from_millis(1),
            ..fast()
        };
        let mut tries = p.conflicts("run r1: end");
        for want in 0..3 {
            assert_eq!(tries.next().await.unwrap(), want);
        }
        let e = tries.next().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Throttled);
        assert!(
            e.message().contains("run r1: end") && e.message().contains("3 times"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn retries_throttling_until_success() {
        let n = AtomicU32::new(0);
        let r = fast()
            .run("t", Idempotency::Idempotent, || async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::new(ErrorKind::Throttled, "503"))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stops_at_attempt_bound_and_on_permanent_errors() {
        let n = AtomicU32::new(0);
        let r: Result<()> = fast()
            .run("t", Idempotency::Idempotent, || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(Error::new(ErrorKind::Transient, "reset"))
            })
            .await;
        assert!(r.unwrap_err().message().contains("gave up after 4 attempts"));
        assert_eq!(n.load(Ordering::SeqCst), 4);

        let n = AtomicU32::new(0);
        let _ = fast()
            .run("t", Idempotency::Idempotent, || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::invalid("bad name"))
            })
            .await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stops_at_time_bound() {
        let p = RetryPolicy {
            max_attempts: 1000,
            max_elapsed: Duration::from_millis(50),
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        let start = Instant::now();
        let _: Result<()> = p
            .run("t", Idempotency::Idempotent, || async {
                Err(Error::new(ErrorKind::Throttled, "x"))
            })
            .await;
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_call_that_is_not_idempotent_is_repeated_only_when_nothing_was_applied() {
        for (kind, calls) in [
            (ErrorKind::Transient, 1),
            (ErrorKind::NotSent, 3),
            (ErrorKind::Throttled, 3),
        ] {
            let n = AtomicU32::new(0);
            let r = fast()
                .run("t", Idempotency::NotIdempotent, || async {
                    if n.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(Error::new(kind, "x"))
                    } else {
                        Ok(())
                    }
                })
                .await;
            assert_eq!(n.load(Ordering::SeqCst), calls, "{kind:?}");
            assert_eq!(r.is_ok(), calls == 3, "{kind:?}");
        }
    }

    #[test]
    fn redelivery_pauses_double_to_their_cap() {
        let p = RetryPolicy::default();
        let pauses: Vec<u64> = (1..=10).map(|n| p.redelivery(n).as_secs()).collect();
        assert_eq!(pauses, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn backoff_is_capped() {
        let p = fast();
        for a in 1..20 {
            assert!(p.backoff(a) <= Duration::from_millis(2));
        }
    }
}
