//! A verify run (`POST /api/verify`, or a run body with `verify`): the comparison of
//! [`super::verify`] as a run like the others, with `202 Accepted` and `Location`, a report
//! line per difference, and the webhook at its end.
//!
//! Each `list-pages` message compares a slice: pages of both listings for about
//! `SYNC_VERIFY_SLICE_SECS`, up to a clean point, whose place and tallies it saves with
//! If-Match before it queues the next. A redelivered or doubled slice starts from the same
//! place and tallies, and only the first to save goes on, so no object is counted twice and
//! no invocation outlives the host's timeout, whatever the prefix holds.

use std::time::Instant;

use super::copy_queues::CopySink;
use super::service::{end, RunService};
use super::verify::{record_result, DiffKind, Limits, Verifier, VerifyReport};
use crate::error::{Error, Result};
use crate::messages::CopyMessage;
use crate::model::Scope;
use crate::state::runs::report::ReportOutcome;
use crate::state::runs::store::RunState;
use crate::state::runs::verifying::DiffLine;

/// What a slice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceStep {
    /// Saved its place; the next slice goes on from there.
    More,
    /// The comparison ended, and so did the run (its webhook is the check's job).
    Ended,
    /// Another delivery of this slice saved first: this one stops.
    Stale,
    /// The run ended already (cancelled, swept) or is gone.
    Gone,
}

/// The report outcome of a difference.
pub fn outcome(kind: DiffKind) -> ReportOutcome {
    match kind {
        DiffKind::Missing => ReportOutcome::Missing,
        DiffKind::Extra => ReportOutcome::Extra,
        DiffKind::SizeMismatch => ReportOutcome::SizeMismatch,
        DiffKind::ChecksumMismatch => ReportOutcome::ChecksumMismatch,
        DiffKind::MetadataMismatch => ReportOutcome::MetadataMismatch,
    }
}

/// Compares the next slice of verify run `id`.
pub async fn slice(svc: &RunService, id: &str) -> Result<SliceStep> {
    let Some(run) = svc.store.get(id).await? else {
        return Ok(SliceStep::Gone);
    };
    if run.state.is_final() {
        return Ok(SliceStep::Gone);
    }
    let Some(spec) = run.spec.verify else {
        return Err(Error::invalid(format!("run {id} is a copy, not a verification")));
    };
    // The sign of life the sweep looks for.
    svc.store.touch(id).await?;
    let scope = Scope {
        bucket: run.spec.source.bucket.clone(),
        source_prefix: run.spec.source.prefix.clone(),
        container: run.spec.target.container.clone(),
        target_prefix: run.spec.target.prefix.clone(),
    };
    let mut place = svc.store.verify_place(id).await?.unwrap_or_default();
    if !place.done {
        let limits = Limits {
            source_page: svc.config.runs.list_page_keys,
            target_page: svc.config.runs.prune_page,
            ..Limits::default()
        };
        let mut v = Verifier::resume(&svc.engine, &scope, spec.metadata, limits, &place)?;
        let started = Instant::now();
        loop {
            let step = v.page().await?;
            let lines: Vec<DiffLine> = std::mem::take(&mut v.report.differences)
                .into_iter()
                .map(|d| DiffLine {
                    outcome: outcome(d.kind),
                    blob: d.key.is_none(),
                    name: d.key.or(d.blob).unwrap_or_default(),
                    reason: d.detail,
                })
                .collect();
            // Lines before the place that covers them: a replay writes the same rows again.
            svc.store.record_differences(id, &lines).await?;
            if spec.repair && !step.to_copy.is_empty() {
                let copies: Vec<CopyMessage> = step
                    .to_copy
                    .into_iter()
                    .map(|key| CopyMessage {
                        bucket: scope.bucket.clone(),
                        key,
                        container: Some(scope.container.clone()),
                        source_prefix: Some(scope.source_prefix.clone()),
                        target_prefix: Some(scope.target_prefix.clone()),
                        recheck: Some(true),
                        ..Default::default()
                    })
                    .collect();
                v.report.repaired += copies.len() as u64;
                CopySink::send(&svc.copy_queues, copies).await?;
            }
            if v.finished() || (started.elapsed() >= svc.config.runs.verify_slice && v.at_clean_point()) {
                break;
            }
            if svc.is_cancelled(id).await? {
                return Ok(SliceStep::Gone);
            }
        }
        let mut next = v.place();
        next.slices = place.slices + 1;
        next.etag = place.etag.clone();
        if !svc.store.save_verify_place(id, &mut next).await? {
            return Ok(SliceStep::Stale);
        }
        tracing::info!(
            run_id = %id, bucket = %scope.bucket, container = %scope.container, slice = next.slices,
            duration_ms = started.elapsed().as_millis() as u64, outcome = "verify_slice", "verify slice saved"
        );
        place = next;
        if !place.done {
            return Ok(SliceStep::More);
        }
    }
    let report = VerifyReport::of_place(&place).map_err(|e| e.context(format!("run {id}")))?;
    let started = time::OffsetDateTime::parse(&run.started_at, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    record_result(&svc.engine, &scope, &report, started).await;
    let (state, reason) = if report.clean() {
        (RunState::Succeeded, None)
    } else {
        (
            RunState::PartiallySucceeded,
            Some(format!(
                "the target differs from the source: {} (the report names each)",
                report.counts_text()
            )),
        )
    };
    end(svc, id, state, reason).await?;
    Ok(SliceStep::Ended)
}
