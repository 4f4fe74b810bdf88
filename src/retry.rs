//! The one retry policy: exponential backoff with full jitter, bounded by both an attempt
//! count and a total time. The SDK clients are built with their own retries switched off, so
//! every call is retried here and nowhere else, and [`Error::is_retryable`] alone decides.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::Result;

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
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(60),
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
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

    /// Runs `op` until it succeeds, fails with a non-retryable error, or the bounds are spent.
    /// `what` names the call in the retry log line.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
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
                    if !e.is_retryable() || attempt >= self.max_attempts || out_of_time {
                        if e.is_retryable() && attempt > 1 {
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
        }
    }

    #[tokio::test]
    async fn retries_throttling_until_success() {
        let n = AtomicU32::new(0);
        let r = fast()
            .run("t", || async {
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
            .run("t", || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(Error::new(ErrorKind::Transient, "reset"))
            })
            .await;
        assert!(r.unwrap_err().message().contains("gave up after 4 attempts"));
        assert_eq!(n.load(Ordering::SeqCst), 4);

        let n = AtomicU32::new(0);
        let _ = fast()
            .run("t", || async {
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
        };
        let start = Instant::now();
        let _: Result<()> = p
            .run("t", || async { Err(Error::new(ErrorKind::Throttled, "x")) })
            .await;
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn backoff_is_capped() {
        let p = fast();
        for a in 1..20 {
            assert!(p.backoff(a) <= Duration::from_millis(2));
        }
    }
}
