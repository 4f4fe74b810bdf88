//! `CopyObject`: queue-triggered on `copy-objects`; one message moves one object.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::protocol::{dequeue_count, InvokeRequest};
use super::{Failure, Handled};
use crate::config::Config;
use crate::engine::{CopyRequest, EventInfo, Listed, PartRef, Step, SyncMode};
use crate::error::{Error, ErrorKind};
use crate::run::service::CopySink;
use crate::AppState;

/// The binding name of the queue trigger in `functions/CopyObject/function.json`.
pub const BINDING: &str = "message";

/// A `copy-objects` message. Unknown fields are ignored so newer producers can add some.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyMessage {
    /// Source bucket.
    pub bucket: String,
    /// Source key (not URL-encoded).
    pub key: String,
    /// Target container; defaults to `SYNC_TARGET_CONTAINER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Defaults to `SYNC_SOURCE_PREFIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix: Option<String>,
    /// Defaults to `SYNC_TARGET_PREFIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_prefix: Option<String>,
    /// The run this belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `additive` or `mirror`; defaults to `SYNC_MODE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The S3 event name, for relayed notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The event's sequencer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
    /// The event's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Look at the blob even when the checkpoint says it is current (`verify` repairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<bool>,
    /// One range of an object split across invocations (`{"etag":…,"index":…}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<crate::engine::PartRef>,
    /// The object's ETag in the listing or event that produced this message (the SQS relay
    /// writes it as S3 events do, `eTag`).
    #[serde(default, alias = "eTag", skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Its size there. With `etag`, a small object is read with one GET instead of HEAD + GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Its Last-Modified there (RFC 3339, whole seconds): with `etag` and `size`, what says
    /// the checkpoint is current (a metadata-only change keeps the ETag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// The lister found no checkpoint row for the key (see `CopyRequest::fresh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<bool>,
}

/// Parses and validates a message; errors say what to fix.
pub fn parse_message(text: &str) -> Result<CopyMessage, Error> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| Error::invalid(format!("copy-objects message is not JSON: {e}")))?;
    let m: CopyMessage = serde_path_to_error::deserialize(v).map_err(|e| {
        // The path names the field a type error is about (`bucket`, `part.index`).
        let path = e.path().to_string();
        let at = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!("`{path}`: ")
        };
        Error::invalid(format!(
            "copy-objects message: {at}{} (expected {{\"bucket\":…,\"key\":…}})",
            e.inner()
        ))
    })?;
    if m.bucket.trim().is_empty() {
        return Err(Error::invalid("copy-objects message: `bucket` is empty"));
    }
    if m.key.is_empty() {
        return Err(Error::invalid("copy-objects message: `key` is empty"));
    }
    if m.key.len() > 1024 {
        return Err(Error::invalid(format!(
            "copy-objects message: `key` is {} bytes; S3 keys are at most 1024",
            m.key.len()
        )));
    }
    if let Some(mode) = &m.mode {
        if !matches!(mode.as_str(), "additive" | "mirror") {
            return Err(Error::invalid(format!(
                "copy-objects message: `mode` `{mode}` is not additive or mirror"
            )));
        }
    }
    if let Some(p) = &m.part {
        if p.etag.is_empty() || u64::from(p.index) >= crate::engine::layout::MAX_BLOCKS {
            return Err(Error::invalid(format!(
                "copy-objects message: `part` needs a source `etag` and an `index` below {}",
                crate::engine::layout::MAX_BLOCKS
            )));
        }
    }
    Ok(m)
}

/// The engine request for a message, with the configured defaults filled in.
pub fn to_request(msg: &CopyMessage, cfg: &Config) -> Result<CopyRequest, Error> {
    let container = msg
        .container
        .clone()
        .or_else(|| cfg.target_container.clone())
        .ok_or_else(|| Error::invalid("message names no container and SYNC_TARGET_CONTAINER is not set"))?;
    Ok(CopyRequest {
        bucket: msg.bucket.clone(),
        key: msg.key.clone(),
        container,
        source_prefix: msg.source_prefix.clone().unwrap_or_else(|| cfg.source_prefix.clone()),
        target_prefix: msg.target_prefix.clone().unwrap_or_else(|| cfg.target_prefix.clone()),
        run_id: msg.run_id.clone(),
        mode: match msg.mode.as_deref() {
            Some("mirror") => SyncMode::Mirror,
            Some(_) => SyncMode::Additive,
            None => cfg.mode,
        },
        // What a listing or a creation event saw. A removal event names the deleted version,
        // which must not pass for "the source still has this".
        listed: match msg.event.as_deref() {
            Some(e) if e.starts_with("ObjectRemoved") => None,
            _ => msg.etag.clone().zip(msg.size).map(|(etag, size)| Listed {
                etag,
                size,
                last_modified: msg.last_modified.clone(),
            }),
        },
        recheck: msg.recheck.unwrap_or(false),
        part: msg.part.clone(),
        // A range's commit needs the row as it is, whatever the lister saw.
        fresh: msg.fresh.unwrap_or(false) && msg.part.is_none(),
        event: msg.event.clone().map(|name| EventInfo {
            name,
            sequencer: msg.sequencer.clone(),
            time: msg.event_time.clone(),
        }),
    })
}

/// Handles one invocation.
pub async fn handle(state: &AppState, req: &InvokeRequest) -> Result<Handled, Failure> {
    let text = super::queue_message(req, BINDING)?;
    let msg = parse_message(&text).map_err(Failure::bad_input)?;
    let cfg = &state.config;
    let copy = to_request(&msg, cfg).map_err(Failure::bad_input)?;
    let attempt = dequeue_count(&req.metadata).unwrap_or(1);
    // Copies of a bulk run count towards its counters; a cancelled run's copies are dropped.
    let run = match &msg.run_id {
        Some(id) => {
            let svc = state.runs().await.map_err(Failure::internal)?;
            if svc.is_cancelled(id).await.map_err(Failure::internal)? {
                return Ok(Handled::new(
                    vec![format!(
                        "s3://{}/{}: run {id} was cancelled; not copied",
                        copy.bucket, copy.key
                    )],
                    serde_json::json!({"outcome": "cancelled", "runId": id}),
                ));
            }
            Some((svc, id.as_str()))
        }
        None => None,
    };
    let budget = cfg.engine.invocation_bytes;
    match state.engine.copy_step(&copy, Some(budget)).await {
        Ok(Step::Split(plan)) => {
            // Too big for one invocation: one message per range, each staged by its own
            // invocation. Only the lease holder sends, so duplicates do not multiply them.
            let sent = if plan.claimed { plan.unstaged.len() } else { 0 };
            if sent > 0 {
                let parts: Vec<CopyMessage> = plan
                    .unstaged
                    .iter()
                    .map(|&index| CopyMessage {
                        part: Some(PartRef {
                            etag: plan.etag.clone(),
                            index,
                        }),
                        fresh: None,
                        ..msg.clone()
                    })
                    .collect();
                let svc = state.runs().await.map_err(Failure::internal)?;
                if let Err(e) = CopySink::send(&svc.copy_queue, parts).await {
                    if let Err(r) = state.engine.release_split(&copy, &plan.etag).await {
                        tracing::warn!(bucket = %copy.bucket, key = %copy.key, error = %r, "could not release the split lease; it runs out by itself");
                    }
                    return Err(Failure::internal(e));
                }
            }
            Ok(Handled::new(
                vec![format!(
                    "s3://{}/{}: split into {} ranges ({} staged, {sent} sent)",
                    copy.bucket, copy.key, plan.ranges, plan.staged
                )],
                serde_json::json!({"outcome": "split", "ranges": plan.ranges, "staged": plan.staged, "sent": sent}),
            ))
        }
        Ok(Step::Staged { index, staged, ranges }) => Ok(Handled::new(
            vec![format!(
                "s3://{}/{}: range {index} staged ({staged} of {ranges})",
                copy.bucket, copy.key
            )],
            serde_json::json!({"outcome": "staged", "range": index, "staged": staged, "ranges": ranges}),
        )),
        Ok(Step::Done(report)) => {
            if let Some((svc, id)) = run {
                let tally = crate::run::counters::Tally::of_copy(report.outcome);
                svc.store
                    .record(id, &copy.key, tally, report.bytes, report.reason.as_deref())
                    .await
                    .map_err(Failure::internal)?;
            }
            Ok(Handled::new(
                vec![format!(
                    "s3://{}/{}: {}{}",
                    copy.bucket,
                    copy.key,
                    report.outcome.as_str(),
                    report.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                )],
                serde_json::json!({
                    "outcome": report.outcome.as_str(),
                    "reason": report.reason,
                    "blob": report.blob,
                    "bytes": report.bytes,
                    "path": report.path,
                    "verified": report.verified,
                }),
            ))
        }
        Err(e) => {
            let last = attempt >= cfg.max_dequeue_count;
            if let (true, Some((svc, id))) = (last, run) {
                let tally = crate::run::counters::Tally::Failed;
                if let Err(ce) = svc.store.record(id, &copy.key, tally, 0, Some(e.message())).await {
                    tracing::warn!(run_id = %id, key = %copy.key, error = %ce, "could not count the failure; the run's stall guard will");
                }
            }
            if let (false, Some((svc, id))) = (last, run) {
                // Shown as `retrying` in the run's report until a final outcome is counted.
                if let Err(ce) = svc.store.record_retrying(id, &copy.key, e.message(), attempt).await {
                    tracing::warn!(run_id = %id, key = %copy.key, error = %ce, "could not note the failed attempt in the run's report");
                }
            }
            if last {
                tracing::error!(
                    bucket = %copy.bucket, key = %copy.key, attempt, outcome = "poisoned",
                    reason = %e, "final attempt failed; the host moves the message to copy-objects-poison"
                );
            }
            let retry_note = if last {
                "final attempt; recorded as failed"
            } else {
                "will be retried"
            };
            let status = if e.kind() == ErrorKind::Invalid { 400 } else { 500 };
            Err(Failure {
                status,
                error: e.context(format!(
                    "s3://{}/{} (attempt {attempt}, {retry_note})",
                    copy.bucket, copy.key
                )),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let m = parse_message(r#"{"bucket":"b","key":"a b","future":1}"#).unwrap();
        assert_eq!(m.key, "a b");
        let m =
            parse_message(r#"{"bucket":"b","key":"k","eTag":"abc","size":3,"part":{"etag":"e","index":2}}"#).unwrap();
        assert_eq!(
            (m.etag.as_deref(), m.size),
            (Some("abc"), Some(3)),
            "the relay's eTag is read"
        );
        assert_eq!(m.part.map(|p| p.index), Some(2));
        for (bad, needle) in [
            ("not json", "not JSON"),
            (r#"{"key":"k"}"#, "missing field `bucket`"),
            (r#"{"bucket":"","key":"k"}"#, "`bucket` is empty"),
            (r#"{"bucket":"b","key":""}"#, "`key` is empty"),
            (r#"{"bucket":"b","key":"k","mode":"sideways"}"#, "`mode`"),
            (r#"[1,2]"#, "expected"),
            (r#"{"bucket":"b","key":"k","part":{"etag":"","index":1}}"#, "`part`"),
            (
                r#"{"bucket":"b","key":"k","part":{"etag":"e","index":50000}}"#,
                "`part`",
            ),
            (r#"{"bucket":"b","key":"k","part":{"index":1}}"#, "missing field `etag`"),
        ] {
            let e = parse_message(bad).unwrap_err();
            assert!(e.message().contains(needle), "{bad}: {e}");
        }
    }
}
