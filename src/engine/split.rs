//! Copies split across invocations.
//!
//! An object bigger than one invocation's budget (`SYNC_INVOCATION_MIB`) is cut into ranges
//! of whole blocks of its [`BlockLayout`]. The plan and each staged range are rows in the
//! checkpoint table under a partition of their own (`<object partition>~staging`), so the
//! range queries over object rows never see them. Every range is staged by its own
//! `copy-objects` message; the step that records the last range checks the combined CRC64
//! against the source and commits the block list. A crash loses at most the ranges in
//! flight: a range already recorded is never staged again.

use super::blocks::BlockLayout;
use super::integrity::{combine, crc_mismatch};
use super::naming::blob_name;
use super::{CopyRequest, Engine, PartRef, Step};
use crate::aws::s3::ObjectHead;
use crate::azure::blob::{BlobTarget, WriteCondition};
use crate::config::CopyPath;
use crate::error::{Error, ErrorKind, Mismatch, Result};
use crate::model::{MovedBy, Verification};
use crate::state::checkpoint::{Outcome, Versioned};
use crate::state::staging::{staging_pk, Plan, RangeRow};
use crate::state::unix_now;

/// How long a planner owns the sending of a plan's ranges, renewed by each range that starts
/// or is recorded. A plan with no range at work for this long (its planner died before
/// sending, or its messages were lost) is taken over by the next copy of the object, which
/// sends what is missing: its own message comes back after the host's visibility timeout,
/// which is longer, and so does the next run's copy or a run's look for the blob.
const LEASE_SECS: i64 = 120;
/// Most blocks in one range, so a range row's CRC list stays well below the Table service's
/// 64 KiB property limit (17 characters a block).
const MAX_BLOCKS_PER_RANGE: u64 = 1500;

/// What a split hands to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    /// Source version the plan is for.
    pub etag: String,
    /// Ranges in the plan.
    pub ranges: u32,
    /// Ranges already recorded.
    pub staged: u32,
    /// Ranges not recorded yet, in order.
    pub unstaged: Vec<u32>,
    /// Whether this caller holds the plan's lease and so must send `unstaged` as messages
    /// (a fresh plan, or one whose last sender's lease ran out). A duplicate planner that
    /// does not hold it sends nothing.
    pub claimed: bool,
}

impl Engine {
    /// Splits the object into ranges when it is bigger than `budget`; `None` when it fits
    /// in one invocation. A plan that exists already is reused: its recorded ranges are kept.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn split(
        &self,
        req: &CopyRequest,
        target: &BlobTarget,
        target_id: &str,
        seen: Option<&Versioned>,
        name: &str,
        head: &ObjectHead,
        budget: u64,
    ) -> Result<Option<Step>> {
        let layout = BlockLayout::new(head.size, &head.etag, self.cfg.block_size);
        let per_range = (budget / layout.block_size).clamp(1, MAX_BLOCKS_PER_RANGE);
        let ranges = layout.count().div_ceil(per_range);
        if ranges <= 1 {
            return Ok(None);
        }
        let pk = staging_pk(&req.bucket, target_id);
        let now = unix_now();
        let fresh = Plan {
            etag: head.etag.clone(),
            size: head.size,
            version_id: head.version_id.clone(),
            block_size: layout.block_size,
            per_range,
            ranges: ranges as u32,
            blob: name.to_string(),
            source_key: Some(req.key.clone()),
            lease_until: now + LEASE_SECS,
            tag: String::new(),
        };
        if self.staging.insert_plan(&pk, &fresh, &req.key).await? {
            // Ranges staged for older versions of this key will never be committed.
            self.staging.drop_staging(&pk, name, Some(&head.etag)).await;
            return Ok(Some(Step::Split(SplitPlan {
                etag: head.etag.clone(),
                ranges: fresh.ranges,
                staged: 0,
                unstaged: (0..fresh.ranges).collect(),
                claimed: true,
            })));
        }
        // The plan exists: another planner, or this message again after a crash.
        let plan = self.staging.load_plan(&pk, name, &head.etag).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Precondition,
                format!("s3://{}/{}: split plan vanished while read", req.bucket, req.key),
            )
        })?;
        let rows = self.staging.staged_ranges(&pk, &plan).await?;
        if rows.len() as u32 >= plan.ranges {
            // Everything is staged but the commit did not happen (its step died): do it.
            return self
                .commit_split(req, target, target_id, seen, &plan, rows)
                .await
                .map(Some);
        }
        let unstaged: Vec<u32> = (0..plan.ranges)
            .filter(|i| !rows.iter().any(|r| r.index == *i))
            .collect();
        // Whoever sent the ranges holds the lease; after it runs out (the sender died, or its
        // messages were lost), the next planner takes over and sends what is missing.
        let claimed = plan.lease_until <= now && self.staging.take_over(&pk, &plan, now + LEASE_SECS).await?;
        Ok(Some(Step::Split(SplitPlan {
            etag: plan.etag.clone(),
            ranges: plan.ranges,
            staged: rows.len() as u32,
            unstaged,
            claimed,
        })))
    }

    /// Gives up the lease on a plan whose ranges could not be sent, so the message's retry
    /// sends them instead of finding the plan owned.
    pub async fn release_split(&self, req: &CopyRequest, etag: &str) -> Result<()> {
        let target_id = self.target(&req.container)?.id();
        let name = blob_name(&req.key, &req.source_prefix, &req.target_prefix)
            .map_err(|issue| Error::invalid(format!("s3://{}/{}: {}", req.bucket, req.key, issue.reason())))?;
        // A plan gone meanwhile has no lease to give up.
        self.staging
            .set_lease(&staging_pk(&req.bucket, &target_id), &name, etag, 0)
            .await
            .map(|_| ())
    }

    /// Stages one range (unless it is recorded already) and commits when it was the last.
    pub(super) async fn copy_part(
        &self,
        req: &CopyRequest,
        part: &PartRef,
        target: &BlobTarget,
        target_id: &str,
        seen: Option<&Versioned>,
        budget: Option<u64>,
    ) -> Result<Step> {
        let pk = staging_pk(&req.bucket, target_id);
        // The plan is the blob's; a key that maps to no blob has none.
        let plan = match blob_name(&req.key, &req.source_prefix, &req.target_prefix) {
            Ok(name) => self.staging.load_plan(&pk, &name, &part.etag).await?,
            Err(_) => None,
        };
        // Another key's plan for this blob is not this copy's to finish.
        let Some(plan) = plan.filter(|p| p.source_key.as_deref().is_none_or(|k| k == req.key)) else {
            // Committed already, abandoned after a mismatch, or replaced by a newer version:
            // the whole-object path decides (skip, plan again, or source gone).
            return self
                .copy_inner(&whole_object(req), target, target_id, seen, budget)
                .await;
        };
        if part.index >= plan.ranges {
            return Err(Error::invalid(format!(
                "s3://{}/{}: range {} does not exist; the split has {} ranges",
                req.bucket, req.key, part.index, plan.ranges
            )));
        }
        if !self.staging.has_range(&pk, &plan, part.index).await? {
            // A range at work keeps the plan's lease: only a plan with no range staged for a
            // whole lease is taken over, and its missing ranges sent again (decisions 99).
            let renewed = self
                .staging
                .set_lease(&pk, &plan.blob, &plan.etag, unix_now() + LEASE_SECS)
                .await?;
            if !renewed {
                // Committed and dropped meanwhile.
                return self
                    .copy_inner(&whole_object(req), target, target_id, seen, budget)
                    .await;
            }
            let row = match self.stage_range(req, target, &plan, part.index).await {
                Ok(row) => row,
                // The read was pinned to the plan's version and lost: if the source moved on,
                // this plan can never complete. Drop it and take the object whole (a new plan
                // for the new version, or the source's absence).
                Err(e) if e.kind() == ErrorKind::Precondition => {
                    let now = self.s3.head(&req.bucket, &req.key).await?;
                    if now.is_some_and(|h| h.etag == plan.etag) {
                        return Err(e);
                    }
                    self.staging.drop_version(&pk, &plan.blob, &plan.etag).await;
                    tracing::info!(bucket = %req.bucket, key = %req.key, range = part.index, outcome = "split_restarted", "the source changed during a split copy; starting the object over");
                    return self
                        .copy_inner(&whole_object(req), target, target_id, seen, budget)
                        .await;
                }
                Err(e) => return Err(e),
            };
            // In one transaction with a renewal of the plan's lease, so a plan committed and
            // dropped meanwhile leaves no orphan range row.
            let recorded = self
                .staging
                .record_range(&pk, &plan, &row, unix_now() + LEASE_SECS)
                .await?;
            if !recorded {
                return self
                    .copy_inner(&whole_object(req), target, target_id, seen, budget)
                    .await;
            }
        } else {
            tracing::info!(bucket = %req.bucket, key = %req.key, range = part.index, outcome = "already_staged", "range recorded before; not staged again");
        }
        let rows = self.staging.staged_ranges(&pk, &plan).await?;
        if (rows.len() as u32) < plan.ranges {
            return Ok(Step::Staged {
                index: part.index,
                staged: rows.len() as u32,
                ranges: plan.ranges,
            });
        }
        self.commit_split(req, target, target_id, seen, &plan, rows).await
    }

    /// Moves the blocks of one range: server-side when the path allows and Azure can read
    /// the source, streamed otherwise.
    async fn stage_range(&self, req: &CopyRequest, target: &BlobTarget, plan: &Plan, index: u32) -> Result<RangeRow> {
        let layout = layout_of(plan);
        let blocks = blocks_of(plan, index);
        let bytes = blocks
            .clone()
            .map(|i| layout.range(i).end - layout.range(i).start)
            .sum();
        let streamed = || async {
            let job = super::streamed::StreamJob {
                route: super::copy::Route {
                    req,
                    target,
                    name: &plan.blob,
                },
                etag: &plan.etag,
                layout: &layout,
            };
            self.stage_streamed(&job, blocks.clone(), false)
                .await
                .map(|(crcs, _)| (MovedBy::Streamed, crcs.into_iter().map(Some).collect()))
        };
        let server_side = || async {
            let url = self
                .s3
                .presign_get(
                    &req.bucket,
                    &req.key,
                    plan.version_id.as_deref(),
                    self.cfg.presign_expiry,
                )
                .await?;
            self.stage_from_url(target, &plan.blob, &url, &plan.etag, &layout, blocks.clone())
                .await
                .map(|crcs| (MovedBy::ServerSide, crcs))
        };
        let (path, crcs) = match self.cfg.copy_path {
            CopyPath::Streamed => streamed().await?,
            CopyPath::ServerSide => server_side().await?,
            CopyPath::Auto => match server_side().await {
                Err(e) if e.kind() == ErrorKind::CopySourceUnreachable => streamed().await?,
                r => r?,
            },
        };
        Ok(RangeRow {
            index,
            crcs,
            bytes,
            path,
        })
    }

    /// Checks the recorded ranges against the source and commits the block list. Never
    /// commits a partial or mismatched list; a mismatch drops the staging rows so the retry
    /// stages everything again.
    async fn commit_split(
        &self,
        req: &CopyRequest,
        target: &BlobTarget,
        target_id: &str,
        seen: Option<&Versioned>,
        plan: &Plan,
        mut rows: Vec<RangeRow>,
    ) -> Result<Step> {
        let pk = staging_pk(&req.bucket, target_id);
        let mut rec = match self.start_record(req, target_id, seen) {
            Ok(rec) => rec,
            Err(stale) => return Ok(Step::Done(stale)),
        };
        // The blob before the source (decisions 49): the commit is conditional on this read.
        let existing = target.properties(&plan.blob).await?;
        // The bytes must be the plan's (same ETag and size; every range was read pinned to
        // that ETag). Unlike `source_unchanged`, Last-Modified may differ: the commit takes
        // its headers, metadata and provenance from this HEAD, not from the plan's, so a
        // copy-in-place between the ranges is labelled as the version it is.
        let head = match self.s3.head(&req.bucket, &req.key).await? {
            Some(h) if h.etag == plan.etag && h.size == plan.size => h,
            _ => {
                // The source changed or went away since the split: these blocks are not it.
                // Starting over takes the whole-object path (plan again, or source gone).
                self.staging.drop_staging(&pk, &plan.blob, None).await;
                return Err(Error::new(
                    ErrorKind::Precondition,
                    format!(
                        "s3://{}/{}: source changed while its ranges were staged",
                        req.bucket, req.key
                    ),
                ));
            }
        };
        rows.sort_by_key(|r| r.index);
        let layout = layout_of(plan);
        let crcs: Vec<Option<u64>> = rows.iter().flat_map(|r| r.crcs.iter().copied()).collect();
        let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
        if crcs.len() as u64 != layout.count() || bytes != plan.size {
            self.staging.drop_staging(&pk, &plan.blob, None).await;
            return Err(Error::mismatch(
                Mismatch::Size,
                format_args!(
                    "s3://{}/{}: staged ranges hold {bytes} bytes in {} blocks; the source has {} in {}",
                    req.bucket,
                    req.key,
                    crcs.len(),
                    plan.size,
                    layout.count()
                ),
            ));
        }
        let whole = combine(&layout, crcs.iter().copied());
        let verified = match (head.crc64nvme, whole) {
            (Some(want), Some(got)) if want != got => {
                self.staging.drop_staging(&pk, &plan.blob, None).await;
                return Err(crc_mismatch(req, want, got));
            }
            (Some(_), Some(_)) => Verification::Crc64nvme,
            // Each block was CRC-checked on its way in; the MD5 of a single-part source
            // cannot be rebuilt from ranges hashed in parallel, so the whole object is
            // checked by size.
            _ => Verification::Size,
        };
        rec.blob = Some(plan.blob.clone());
        let attrs = super::metadata::attrs_digest(&head);
        rec.note_source(&head, attrs.clone());
        let (mut props, notes) = match self.commit_props(req, &head).await? {
            Ok(p) => p,
            Err(why) => return self.finish(rec, Outcome::Failed, Some(why), Some(&head), seen).await,
        };
        if let Some(c) = whole {
            props
                .metadata
                .insert(crate::engine::metadata::CRC64_KEY.into(), crate::checksum::to_s3(c));
        }
        // A concurrent step that recorded another last range may have committed already.
        let committed = existing.as_ref().is_some_and(|p| self.holds(req, p, &head, &attrs));
        let server_side = rows.iter().all(|r| r.path == MovedBy::ServerSide);
        rec.path = Some(if server_side {
            MovedBy::ServerSide
        } else {
            MovedBy::Streamed
        });
        rec.verified = Some(verified);
        let (outcome, reason) = if committed {
            (
                Outcome::NoTransferNeeded,
                Some("committed by a concurrent step for another range".to_string()),
            )
        } else {
            let committed = target
                .commit_blocks(
                    &plan.blob,
                    &layout.ids(),
                    &props,
                    &WriteCondition::after(existing.as_ref()),
                )
                .await;
            match committed {
                // The staged blocks are gone: another commit to this name discarded them, or
                // Azure's cleanup of uncommitted blocks (7 days). The recorded ranges can never
                // be committed; drop the plan so the retry starts the object over.
                Err(e) if e.code() == Some("InvalidBlockList") => {
                    self.staging.drop_version(&pk, &plan.blob, &plan.etag).await;
                    tracing::warn!(bucket = %req.bucket, key = %req.key, outcome = "split_restarted", error = %e, "staged blocks are gone; starting the object over");
                    return Err(Error::new(
                        ErrorKind::Precondition,
                        format!(
                            "s3://{}/{}: the staged blocks of its split copy are gone; starting over",
                            req.bucket, req.key
                        ),
                    ));
                }
                r => {
                    r?;
                }
            }
            (Outcome::Copied, (!notes.is_empty()).then(|| notes.join("; ")))
        };
        let step = self.finish(rec, outcome, reason, Some(&head), seen).await?;
        self.staging.drop_staging(&pk, &plan.blob, None).await;
        Ok(step)
    }
}

/// The block layout a plan was cut from.
fn layout_of(plan: &Plan) -> BlockLayout {
    BlockLayout::new(plan.size, &plan.etag, plan.block_size)
}

/// The blocks of range `index` of `plan`.
fn blocks_of(plan: &Plan, index: u32) -> std::ops::Range<u64> {
    let count = layout_of(plan).count();
    let start = u64::from(index) * plan.per_range;
    start.min(count)..(start + plan.per_range).min(count)
}

/// A range request whose plan is gone, taken as a request for the whole object.
fn whole_object(req: &CopyRequest) -> CopyRequest {
    let mut whole = req.clone();
    whole.part = None;
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(size: u64, block: u64, per_range: u64) -> Plan {
        let layout = BlockLayout::new(size, "e", block);
        let ranges = layout.count().div_ceil(per_range) as u32;
        Plan {
            etag: "e".into(),
            size,
            version_id: None,
            block_size: layout.block_size,
            per_range,
            ranges,
            blob: "b".into(),
            source_key: None,
            lease_until: 0,
            tag: String::new(),
        }
    }

    #[test]
    fn ranges_cover_every_block_once() {
        let mib = 1024 * 1024;
        let p = plan(200 * mib + 3, 8 * mib, 4);
        assert_eq!(p.ranges, 7);
        let all: Vec<u64> = (0..p.ranges).flat_map(|i| blocks_of(&p, i)).collect();
        assert_eq!(all, (0..layout_of(&p).count()).collect::<Vec<_>>());
        assert_eq!(blocks_of(&p, 6), 24..26);
    }
}
