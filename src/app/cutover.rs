//! The cutover gate: a yes or no, with reasons, for switching writers from a bucket to its
//! container. It is asked about a scope (a source prefix mapped onto a target prefix; by
//! default the mapping the events use). `ready` only when nothing is in flight, nothing is
//! stuck, and a recent verification whose scope covers the asked one found the two equal
//! (decisions 67 and 92). Served by `GET /api/cutover` (function `Cutover`) and
//! `s3-blob-sync status --cutover`.

use std::time::Duration;

use serde::Serialize;

use super::service::RunService;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Scope;
use crate::state::runs::store::RunState;
use crate::state::verify::VerifyResult;

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
    /// The source prefix asked about.
    pub source_prefix: String,
    /// The target prefix it maps onto.
    pub target_prefix: String,
    /// The verify the gate judged by, when one covers the scope.
    pub verify: Option<UsedVerify>,
    /// When the gate was assessed (RFC 3339).
    pub checked_at: String,
    /// Every check, passed or not.
    pub checks: Vec<Check>,
    /// The failed checks' details, one sentence each.
    pub reasons: Vec<String>,
}

/// The verify the gate judged by.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsedVerify {
    /// Its source prefix.
    pub source_prefix: String,
    /// Its target prefix.
    pub target_prefix: String,
    /// When it ended (RFC 3339).
    pub at: String,
    /// Seconds since.
    pub age_seconds: u64,
    /// Source objects it compared.
    pub source_objects: u64,
    /// Differences it found.
    pub differences: u64,
}

/// The scope the gate is asked about: `source_prefix` and `target_prefix` as given, else the
/// mapping the events use (`SYNC_SOURCE_PREFIX` onto `SYNC_TARGET_PREFIX`, by default the
/// whole bucket into the container's root). A source prefix alone is mapped the events' way,
/// and must fall under theirs.
pub fn asked_scope(
    cfg: &Config,
    bucket: &str,
    container: &str,
    source_prefix: Option<&str>,
    target_prefix: Option<&str>,
) -> Result<Scope> {
    let (source_prefix, target_prefix) = match (source_prefix, target_prefix) {
        (Some(p), Some(t)) => (p.to_string(), t.to_string()),
        (None, None) => (cfg.mapping.source_prefix.clone(), cfg.mapping.target_prefix.clone()),
        (None, Some(_)) => {
            return Err(Error::invalid(
                "sourcePrefix: required with targetPrefix (the keys whose blobs are under it)",
            ))
        }
        (Some(p), None) => match p.strip_prefix(cfg.mapping.source_prefix.as_str()) {
            Some(rest) => (p.to_string(), format!("{}{rest}", cfg.mapping.target_prefix)),
            None => {
                return Err(Error::invalid(format!(
                    "targetPrefix: required, since sourcePrefix `{p}` is not under SYNC_SOURCE_PREFIX `{}`",
                    cfg.mapping.source_prefix
                )))
            }
        },
    };
    Ok(Scope {
        bucket: bucket.to_string(),
        source_prefix,
        container: container.to_string(),
        target_prefix,
    })
}

/// The kept verify results that speak for a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The newest verify whose scope covers the asked one.
    pub used: Option<VerifyResult>,
    /// Verifies inside the asked scope, newer than `used`, that found differences: their
    /// differences count until a covering verify is clean again.
    pub later: Vec<VerifyResult>,
}

/// Which kept results speak for `asked` (decisions 92): the newest covering verify, and the
/// narrower ones that found differences after it started (a long covering verify compared a
/// prefix near its start, so a difference found there later is news to it). A narrower clean
/// verify never stands for the whole scope, and a narrower verify that found differences is
/// never hidden by a covering one that did not look after it.
pub fn evidence(results: &[VerifyResult], asked: &Scope) -> Evidence {
    let used = results
        .iter()
        .filter(|r| r.scope.covers(asked))
        .max_by_key(|r| r.at)
        .cloned();
    let later = results
        .iter()
        .filter(|r| {
            r.differences > 0
                && asked.covers(&r.scope)
                && used.as_ref().is_none_or(|u| r.at > u.started && r.scope != u.scope)
        })
        .cloned()
        .collect();
    Evidence { used, later }
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

/// Assesses the gate for `scope`.
pub async fn assess(svc: &RunService, scope: &Scope, bounds: Bounds) -> Result<Cutover> {
    let cfg = &svc.config;
    let (bucket, container) = (scope.bucket.as_str(), scope.container.as_str());
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
        format!("{n} copies wait in queues {}", cfg.queues.copy_names().join(", ")),
    ));
    let running = svc
        .store
        .recent(1000)
        .await?
        .into_iter()
        .filter(|r| {
            // Only runs whose keys overlap the asked ones.
            let (p, q) = (r.spec.source.prefix.as_str(), scope.source_prefix.as_str());
            r.state == RunState::Running
                && r.spec.source.bucket == bucket
                && r.spec.target.container == container
                && (p.starts_with(q) || q.starts_with(p))
        })
        .map(|r| r.id)
        .collect::<Vec<_>>();
    checks.push(check(
        "runningRuns",
        running.len() as u64,
        0,
        if running.is_empty() {
            "no run is going for these keys of this bucket and container".into()
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
            cfg.queues.reject
        ),
    ));

    // Objects whose last copy failed for good.
    let (rows, more) = svc
        .engine
        .checkpoint()
        .failed_under(
            bucket,
            &target.id(),
            (&scope.source_prefix, &scope.target_prefix),
            FAILED_COUNTED,
        )
        .await?;
    let n = rows.len() as u64;
    let detail = format!(
        "{}{n} objects under s3://{bucket}/{} failed their last copy; see `s3-blob-sync status --bucket {bucket} --problems`",
        if more { "at least " } else { "" },
        scope.source_prefix
    );
    checks.push(if more && n == 0 {
        // Not counted to the end: not proven clean.
        failed(
            "failedObjects",
            format!("{detail} (the count did not finish: try again)"),
        )
    } else {
        check("failedObjects", n, 0, detail)
    });

    // A clean verification of the whole scope, recent enough.
    let results = svc.engine.checkpoint().verify().of_pair(bucket, container).await?;
    let Evidence { used, later } = evidence(&results, scope);
    let used = match used {
        Some(v) => Some(verify_checks(svc, scope, &v, &later, bounds, &mut checks).await?),
        None => {
            let mut detail = format!("no verify covers {scope}: run `s3-blob-sync verify` over it (or a wider prefix)");
            if let Some(n) = results.iter().find(|r| scope.covers(&r.scope)) {
                detail.push_str(&format!(
                    "; verifies of narrower prefixes, such as {}, do not stand for it",
                    n.scope
                ));
            }
            checks.push(failed("verifyDifferences", detail));
            None
        }
    };

    let reasons: Vec<String> = checks.iter().filter(|c| !c.ok).map(|c| c.detail.clone()).collect();
    let ready = reasons.is_empty();
    tracing::info!(
        bucket,
        container,
        source_prefix = %scope.source_prefix,
        target_prefix = %scope.target_prefix,
        outcome = if ready { "cutover_ready" } else { "cutover_not_ready" },
        failed_checks = reasons.len(),
        "cutover gate assessed"
    );
    Ok(Cutover {
        ready,
        state: if ready { "ready" } else { "not ready" },
        bucket: bucket.to_string(),
        container: container.to_string(),
        source_prefix: scope.source_prefix.clone(),
        target_prefix: scope.target_prefix.clone(),
        verify: used,
        checked_at: crate::state::checkpoint::now_rfc3339(),
        checks,
        reasons,
    })
}

/// The checks on the verify the gate uses: its differences (and those found inside the scope
/// since), its age, and that it saw objects unless the source has none.
async fn verify_checks(
    svc: &RunService,
    scope: &Scope,
    used: &VerifyResult,
    later: &[VerifyResult],
    bounds: Bounds,
    checks: &mut Vec<Check>,
) -> Result<UsedVerify> {
    let age = (time::OffsetDateTime::now_utc() - used.at).whole_seconds().max(0) as u64;
    let at = used
        .at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let about = format!(
        "the verify of {} ran {age} s ago, compared {} objects and found {} differences",
        used.scope, used.source_objects, used.differences
    );
    let mut detail = about.clone();
    for l in later {
        detail.push_str(&format!("; a later verify of {} found {}", l.scope, l.differences));
    }
    let differences = used.differences + later.iter().map(|l| l.differences).sum::<u64>();
    checks.push(check("verifyDifferences", differences, 0, detail));
    let limit = bounds.max_verify_age.as_secs();
    checks.push(check(
        "verifyAgeSeconds",
        age,
        limit,
        format!("{about}; a verify counts for {limit} s"),
    ));
    // A verify that saw nothing proves nothing, unless there is nothing to see.
    let check_objects = if used.source_objects > 0 {
        check(
            "verifyObjects",
            0,
            0,
            format!("the verify compared {} objects", used.source_objects),
        )
    } else if svc.engine.s3().any_object(&scope.bucket, &scope.source_prefix).await? {
        failed(
            "verifyObjects",
            format!(
                "the verify of {} compared no object, but s3://{}/{} holds objects (a mistyped prefix?): verify the scope itself",
                used.scope, scope.bucket, scope.source_prefix
            ),
        )
    } else {
        check(
            "verifyObjects",
            0,
            0,
            format!(
                "the verify compared no object, and s3://{}/{} is empty",
                scope.bucket, scope.source_prefix
            ),
        )
    };
    checks.push(check_objects);
    Ok(UsedVerify {
        source_prefix: used.scope.source_prefix.clone(),
        target_prefix: used.scope.target_prefix.clone(),
        at,
        age_seconds: age,
        source_objects: used.source_objects,
        differences: used.differences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(p: &str, t: &str) -> Scope {
        Scope {
            bucket: "b".into(),
            source_prefix: p.into(),
            container: "c".into(),
            target_prefix: t.into(),
        }
    }

    fn kept(p: &str, t: &str, minute: u8, differences: u64) -> VerifyResult {
        let at = time::macros::datetime!(2026-12-07 10:00 UTC)
            .replace_minute(minute)
            .unwrap();
        VerifyResult {
            scope: scope(p, t),
            started: at,
            at,
            differences,
            source_objects: 10,
            matched: 10 - differences,
        }
    }

    #[test]
    fn only_a_covering_verify_speaks_for_a_scope() {
        let whole = scope("", "");
        // A clean verify of tmp/ alone says nothing of the whole bucket.
        let narrow = kept("tmp/", "tmp/", 30, 0);
        assert_eq!(evidence(std::slice::from_ref(&narrow), &whole).used, None);
        // Nor does a verify of the same keys onto other names.
        assert_eq!(evidence(&[kept("", "other/", 30, 0)], &whole).used, None);
        // The newest covering one is used, whatever narrower ones say.
        let broad_dirty = kept("", "", 10, 4);
        let e = evidence(&[broad_dirty.clone(), narrow.clone()], &whole);
        assert_eq!(e.used, Some(broad_dirty.clone()));
        assert!(e.later.is_empty(), "a clean narrower verify changes nothing");
        let broad_clean = kept("", "", 40, 0);
        let e = evidence(&[broad_dirty.clone(), narrow.clone(), broad_clean.clone()], &whole);
        assert_eq!((e.used, e.later), (Some(broad_clean.clone()), vec![]));
        // A narrower verify that found differences after the covering clean one counts.
        let narrow_dirty = kept("tmp/", "tmp/", 50, 2);
        let e = evidence(&[broad_clean.clone(), narrow_dirty.clone()], &whole);
        assert_eq!(
            (e.used, e.later),
            (Some(broad_clean.clone()), vec![narrow_dirty.clone()])
        );
        // ...until a covering verify is clean again.
        let again = kept("", "", 55, 0);
        let e = evidence(&[broad_clean, narrow_dirty.clone(), again.clone()], &whole);
        assert_eq!((e.used, e.later), (Some(again), vec![]));
        // Asked about tmp/ only, its own newer clean verify stands, a broader one too.
        let e = evidence(
            &[broad_dirty.clone(), kept("tmp/", "tmp/", 20, 0)],
            &scope("tmp/", "tmp/"),
        );
        assert_eq!(e.used.map(|u| u.at.minute()), Some(20));
        let e = evidence(&[broad_dirty], &scope("tmp/", "tmp/"));
        assert_eq!(
            e.used.map(|u| u.differences),
            Some(4),
            "a broader dirty verify is not ignored"
        );
        // A long covering verify (09:00 to 12:00) that ends clean after a narrower one found a
        // difference at 11:00 looked at that prefix near 09:00: the difference stands.
        let mut long = kept("", "", 0, 0);
        long.started = time::macros::datetime!(2026-12-07 09:00 UTC);
        long.at = time::macros::datetime!(2026-12-07 12:00 UTC);
        let mut found = kept("data/", "data/", 0, 1);
        found.started = time::macros::datetime!(2026-12-07 10:59 UTC);
        found.at = time::macros::datetime!(2026-12-07 11:00 UTC);
        let e = evidence(&[long.clone(), found.clone()], &whole);
        assert_eq!((e.used, e.later), (Some(long), vec![found]));
    }

    #[test]
    fn the_asked_scope_defaults_to_the_events_mapping() {
        let mut cfg = Config::for_emulators();
        assert_eq!(asked_scope(&cfg, "b", "c", None, None).unwrap(), scope("", ""));
        cfg.mapping.source_prefix = "in/".into();
        cfg.mapping.target_prefix = "out/".into();
        assert_eq!(asked_scope(&cfg, "b", "c", None, None).unwrap(), scope("in/", "out/"));
        assert_eq!(
            asked_scope(&cfg, "b", "c", Some("in/2024/"), None).unwrap(),
            scope("in/2024/", "out/2024/")
        );
        let e = asked_scope(&cfg, "b", "c", Some("tmp/"), None).unwrap_err();
        assert!(e.message().starts_with("targetPrefix: "), "{e}");
        let e = asked_scope(&cfg, "b", "c", None, Some("x/")).unwrap_err();
        assert!(e.message().starts_with("sourcePrefix: "), "{e}");
        assert_eq!(
            asked_scope(&cfg, "b", "c", Some("tmp/"), Some("t/")).unwrap(),
            scope("tmp/", "t/")
        );
    }
}
