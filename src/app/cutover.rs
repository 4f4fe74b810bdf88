//! The cutover gate: a yes or no, with reasons, for switching writers from a bucket to its
//! container. `ready` only when nothing is in flight, nothing is stuck, and a recent
//! verification found the two equal (decisions 67). Served by `GET /api/cutover` (function
//! `Cutover`) and `s3-blob-sync status --cutover`.

use std::time::Duration;

use serde::Serialize;

use super::service::RunService;
use crate::error::{ErrorKind, Result};
use crate::state::runs::store::RunState;

/// Default bound on the event relay's lag (`maxLagSeconds`).
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(300);
/// Default bound on the age of the last clean verification (`maxVerifyAgeSeconds`).
pub const DEFAULT_MAX_VERIFY_AGE: Duration = Duration::from_secs(24 * 3600);
/// Failed checkpoint rows counted at most (the number says "at least" beyond it).
const FAILED_COUNTED: u32 = 1000;

/// One condition of the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Its stable name.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// The number it was judged on.
    pub value: u64,
    /// The largest value that passes.
    pub limit: u64,
    /// What the number means, and what to do when it fails.
    pub detail: String,
}

/// The gate's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cutover {
    /// Every check holds.
    pub ready: bool,
    /// `ready` or `not ready`.
    pub state: &'static str,
    /// The source bucket.
    pub bucket: String,
    /// The target container.
    pub container: String,
    /// When the gate was assessed (RFC 3339).
    pub checked_at: String,
    /// Every check, passed or not.
    pub checks: Vec<Check>,
    /// The failed checks' details, one sentence each.
    pub reasons: Vec<String>,
}

/// The gate's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The relay's lag (the oldest event it saw, or the time since it last drained) at most.
    pub max_lag: Duration,
    /// The last clean verification at most this old.
    pub max_verify_age: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_lag: DEFAULT_MAX_LAG,
            max_verify_age: DEFAULT_MAX_VERIFY_AGE,
        }
    }
}

fn check(name: &'static str, value: u64, limit: u64, detail: String) -> Check {
    Check {
        name,
        ok: value <= limit,
        value,
        limit,
        detail,
    }
}

fn failed(name: &'static str, detail: String) -> Check {
    Check {
        name,
        ok: false,
        value: 0,
        limit: 0,
        detail,
    }
}

/// Seconds since an RFC 3339 time (0 when it cannot be read).
fn seconds_since(rfc3339: &str) -> u64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0) as u64)
        .unwrap_or(u64::MAX)
}

/// Assesses the gate for `bucket` into `container`.
pub async fn assess(svc: &RunService, bucket: &str, container: &str, bounds: Bounds) -> Result<Cutover> {
    let cfg = &svc.config;
    let table = svc.engine.checkpoint().table();
    let target = svc.engine.target(container)?;
    let queues = super::health::queue_health(svc).await?;
    let mut checks = Vec::new();

    // Events not relayed yet, events SQS gave up on, and the relay's lag.
    match &queues.sqs {
        Some(sqs) => {
            let n = sqs.visible + sqs.in_flight;
            checks.push(check(
                "sqsBacklog",
                n,
                0,
                format!(
                    "{n} S3 events wait in SQS ({} visible, {} being relayed)",
                    sqs.visible, sqs.in_flight
                ),
            ));
            match sqs.dead_letters {
                Some(n) => checks.push(check(
                    "sqsDeadLetters",
                    n,
                    0,
                    format!("{n} S3 events are in the dead-letter queue; move them back with `s3-blob-sync redrive`"),
                )),
                None => checks.push(check(
                    "sqsDeadLetters",
                    0,
                    0,
                    "the SQS queue has no dead-letter queue".into(),
                )),
            }
            let limit = bounds.max_lag.as_secs();
            match (&sqs.last_drain_at, sqs.oldest_age_seconds) {
                (Some(at), oldest) => {
                    let oldest = oldest.unwrap_or(0);
                    let since = seconds_since(at);
                    checks.push(check(
                        "relayLagSeconds",
                        since.max(oldest),
                        limit,
                        format!(
                            "the relay last drained SQS {since} s ago, and the oldest event it saw was {oldest} s old"
                        ),
                    ));
                }
                (None, _) => checks.push(failed(
                    "relayLagSeconds",
                    "no relay has drained SQS yet: run `s3-blob-sync watch` or the DrainSqs function".into(),
                )),
            }
        }
        None => checks.push(failed(
            "sqsBacklog",
            "SYNC_SQS_QUEUE_URL is not set: without the event queue, changes since the last run cannot be seen".into(),
        )),
    }

    // Copies queued, runs still going, and what was parked.
    let n = queues.copies.messages;
    checks.push(check(
        "pendingCopies",
        n,
        0,
        format!("{n} copies wait in queue {}", cfg.copy_queue),
    ));
    let running = svc
        .store
        .recent(1000)
        .await?
        .into_iter()
        .filter(|r| {
            r.state == RunState::Running && r.spec.source.bucket == bucket && r.spec.target.container == container
        })
        .map(|r| r.id)
        .collect::<Vec<_>>();
    checks.push(check(
        "runningRuns",
        running.len() as u64,
        0,
        if running.is_empty() {
            "no run is going for this bucket and container".into()
        } else {
            format!("{} runs are still going: {}", running.len(), running.join(", "))
        },
    ));
    let names: Vec<String> = queues
        .poison
        .iter()
        .filter(|d| d.messages > 0)
        .map(|d| format!("{} in {}", d.messages, d.queue))
        .collect();
    checks.push(check(
        "poisonedMessages",
        queues.poisoned(),
        0,
        if names.is_empty() {
            "no message is parked".into()
        } else {
            format!("parked after their last attempt: {}", names.join(", "))
        },
    ));
    let n = queues.rejected.messages;
    checks.push(check(
        "rejectedEvents",
        n,
        0,
        format!(
            "{n} SQS messages could not be read and wait in queue {}",
            cfg.reject_queue
        ),
    ));

    // Objects whose last copy failed for good.
    let pk = crate::state::checkpoint::partition_key(bucket, &target.id());
    let filter = format!(
        "PartitionKey eq '{}' and Outcome eq '{}'",
        pk.replace('\'', "''"),
        crate::state::checkpoint::Outcome::Failed.as_str()
    );
    // No table yet is no failed row.
    let (rows, more) = match table.query(Some(&filter), Some(FAILED_COUNTED), None).await {
        Err(e) if e.kind() == ErrorKind::NotFound => (Vec::new(), None),
        r => r?,
    };
    let n = rows.len() as u64;
    checks.push(check(
        "failedObjects",
        n,
        0,
        format!(
            "{}{n} objects failed their last copy; see `s3-blob-sync status --bucket {bucket} --problems`",
            if more.is_some() { "at least " } else { "" }
        ),
    ));

    // A clean verification, recent enough.
    let limit = bounds.max_verify_age.as_secs();
    let last = match super::verify::last_verify(table, bucket, container).await {
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        r => r?,
    };
    match last {
        Some(v) => {
            let age = seconds_since(&v.at);
            let detail = format!(
                "the last verify (s3://{bucket}/{} -> {container}/{}) ran {age} s ago and found {} differences",
                v.source_prefix, v.target_prefix, v.differences
            );
            checks.push(check("verifyDifferences", v.differences, 0, detail.clone()));
            checks.push(check(
                "verifyAgeSeconds",
                age,
                limit,
                format!("{detail}; a verify counts for {limit} s"),
            ));
        }
        None => checks.push(failed(
            "verifyDifferences",
            format!("no verify has run for s3://{bucket} into {container}: run `s3-blob-sync verify`"),
        )),
    }

    let reasons: Vec<String> = checks.iter().filter(|c| !c.ok).map(|c| c.detail.clone()).collect();
    let ready = reasons.is_empty();
    tracing::info!(
        bucket,
        container,
        outcome = if ready { "cutover_ready" } else { "cutover_not_ready" },
        failed_checks = reasons.len(),
        "cutover gate assessed"
    );
    Ok(Cutover {
        ready,
        state: if ready { "ready" } else { "not ready" },
        bucket: bucket.to_string(),
        container: container.to_string(),
        checked_at: crate::state::checkpoint::now_rfc3339(),
        checks,
        reasons,
    })
}
