//! Copy of one object, as in DESIGN.md: HEAD the source, skip what is already there, move the
//! bytes server-side or streamed, verify, then checkpoint.

use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use md5::{Digest, Md5};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::layout::BlockLayout;
use super::metadata::{map_metadata, provenance, provenance_modified, written_for};
use super::naming::{blob_name, NameIssue};
use super::{CopyReport, CopyRequest, Engine, PartRef, Step};
use crate::aws::events::sequencer_cmp;
use crate::aws::s3::ObjectHead;
use crate::azure::blob::{BlobProps, BlobTarget, CommitProps, WriteCondition};
use crate::checksum;
use crate::config::CopyPath;
use crate::error::{Error, ErrorKind, Mismatch, Result};
use crate::model::{MovedBy, SyncMode, Verification};
use crate::redact::Secret;
use crate::state::checkpoint::{now_rfc3339, ObjectRecord, Outcome, Versioned};

impl Engine {
    /// Brings one object up to date in one go and checkpoints the outcome; never splits.
    ///
    /// Object-level verdicts that retrying cannot change (archived class, invalid name,
    /// metadata refused by policy) come back as `Ok` with that outcome. Anything that may
    /// succeed later (throttling, a checksum mismatch, a network fault) is recorded as
    /// `failed` with its reason and returned as `Err`, so the caller retries or parks it.
    pub async fn copy_object(&self, req: &CopyRequest) -> Result<CopyReport> {
        match self.copy_step(req, None).await? {
            Step::Done(r) => Ok(r),
            other => Err(Error::internal(format!("an unsplit copy ended as {other:?}"))),
        }
    }

    /// Copies an object in this process (CLI). Above `budget` bytes it is split into ranges
    /// that are staged and recorded one after another, so a killed process resumes from the
    /// ranges already recorded.
    pub async fn copy_here(&self, req: &CopyRequest, budget: u64) -> Result<CopyReport> {
        let plan = match self.copy_step(req, Some(budget)).await? {
            Step::Done(r) => return Ok(r),
            Step::Split(plan) => plan,
            Step::Staged { .. } => return Err(Error::internal("a whole-object request staged one range")),
        };
        for index in plan.unstaged {
            let mut part = req.clone();
            part.part = Some(PartRef {
                etag: plan.etag.clone(),
                index,
            });
            if let Step::Done(r) = self.copy_step(&part, Some(budget)).await? {
                return Ok(r);
            }
        }
        // Another process holds some ranges: what it recorded is committed by whoever
        // records the last one, and the checkpoint says so.
        Err(Error::new(
            ErrorKind::Transient,
            format!(
                "s3://{}/{}: some ranges are being staged elsewhere; not committed yet",
                req.bucket, req.key
            ),
        ))
    }

    /// One step of bringing an object up to date. With a `budget`, an object bigger than it
    /// is split ([`Step::Split`]) instead of copied; a request with a `part` stages that
    /// range, and the step that records the last range commits.
    pub async fn copy_step(&self, req: &CopyRequest, budget: Option<u64>) -> Result<Step> {
        let started = Instant::now();
        let target = self.target(&req.container)?;
        let target_id = target.id();
        let mut restarts = 0;
        let mut cur = std::borrow::Cow::Borrowed(req);
        let (result, seen) = loop {
            let seen = if cur.fresh {
                None
            } else {
                self.checkpoint.get(&req.bucket, &req.key, &target_id).await?
            };
            let step = match &cur.part {
                Some(part) => {
                    self.copy_part(&cur, part, &target, &target_id, seen.as_ref(), budget)
                        .await
                }
                None => self.copy_inner(&cur, &target, &target_id, seen.as_ref(), budget).await,
            };
            match step {
                // The source or the blob changed under us (a conditional write or an
                // If-Match read lost), or a `fresh` hint was wrong: look again, reading
                // everything this time.
                Err(e) if e.kind() == ErrorKind::Precondition && restarts < 3 => {
                    restarts += 1;
                    cur.to_mut().fresh = false;
                    tracing::info!(bucket = %req.bucket, key = %req.key, error = %e, "changed during the copy; starting over");
                }
                r => break (r, seen),
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let run_id = req.run_id.as_deref().unwrap_or("");
        match &result {
            Ok(Step::Done(r)) => tracing::info!(
                bucket = %req.bucket, key = %req.key, blob = r.blob.as_deref().unwrap_or(""),
                bytes = r.bytes, outcome = r.outcome.as_str(), reason = r.reason.as_deref().unwrap_or(""),
                path = r.path.map_or("", MovedBy::as_str), verified = r.verified.map_or("", Verification::as_str),
                run_id, duration_ms, "object done"
            ),
            Ok(Step::Split(p)) => tracing::info!(
                bucket = %req.bucket, key = %req.key, outcome = "split", ranges = p.ranges,
                staged = p.staged, to_send = p.unstaged.len(), claimed = p.claimed, run_id, duration_ms,
                "object split into ranges"
            ),
            Ok(Step::Staged { index, staged, ranges }) => tracing::info!(
                bucket = %req.bucket, key = %req.key, outcome = "staged", range = index, staged, ranges,
                run_id, duration_ms, "range staged"
            ),
            Err(e) => {
                tracing::warn!(
                    bucket = %req.bucket, key = %req.key, outcome = "failed", error_kind = e.kind().as_str(),
                    reason = %e, range = req.part.as_ref().map(|p| p.index as i64).unwrap_or(-1),
                    run_id, duration_ms, "object failed"
                );
                let mut rec = ObjectRecord::new(&req.bucket, &req.key, &target_id, Outcome::Failed);
                rec.reason = Some(failure_reason(e));
                rec.run_id = req.run_id.clone();
                rec.failed_attempts = seen.as_ref().map_or(0, |s| s.record.failed_attempts) + 1;
                // Keep what we knew of the last good copy so a later skip check still works.
                if let Some(s) = &seen {
                    rec.blob = s.record.blob.clone();
                    rec.sequencer = s.record.sequencer.clone();
                    rec.last_event = s.record.last_event.clone();
                    rec.event_time = s.record.event_time.clone();
                }
                if let Err(w) = self.checkpoint.put(&rec, seen.as_ref()).await {
                    tracing::error!(bucket = %req.bucket, key = %req.key, error = %w, "could not record failure");
                }
            }
        }
        result
    }

    /// The checkpoint record a copy starts from, with the event's sequencer applied; `Err`
    /// carries the report for an event that is stale or a duplicate.
    pub(super) fn start_record(
        &self,
        req: &CopyRequest,
        target_id: &str,
        seen: Option<&Versioned>,
    ) -> std::result::Result<ObjectRecord, CopyReport> {
        let mut rec = ObjectRecord::new(&req.bucket, &req.key, target_id, Outcome::Copied);
        rec.run_id = req.run_id.clone();
        let applied = seen.and_then(|s| s.record.sequencer.clone());
        if let Some(ev) = &req.event {
            // A sequencer at or below the one applied is a duplicate or an old event.
            if let (Some(new), Some(old), Some(s)) = (&ev.sequencer, &applied, seen) {
                if s.record.outcome != Outcome::Failed && sequencer_cmp(new, old) != Ordering::Greater {
                    let mut rep = CopyReport::new(Outcome::NoTransferNeeded);
                    rep.blob = s.record.blob.clone();
                    rep.reason = Some(format!("stale event: sequencer {new} is not after applied {old}"));
                    return Err(rep);
                }
            }
            rec.sequencer = match (&ev.sequencer, &applied) {
                (Some(n), Some(o)) if sequencer_cmp(n, o) == Ordering::Greater => Some(n.clone()),
                (Some(n), None) => Some(n.clone()),
                _ => applied.clone(),
            };
            rec.last_event = Some(ev.name.clone());
            rec.event_time = ev.time.clone();
        } else if let Some(s) = seen {
            rec.sequencer = applied.clone();
            rec.last_event = s.record.last_event.clone();
            rec.event_time = s.record.event_time.clone();
        }
        Ok(rec)
    }

    pub(super) async fn copy_inner(
        &self,
        req: &CopyRequest,
        target: &BlobTarget,
        target_id: &str,
        seen: Option<&Versioned>,
        budget: Option<u64>,
    ) -> Result<Step> {
        let mut rec = match self.start_record(req, target_id, seen) {
            Ok(rec) => rec,
            Err(stale) => return Ok(Step::Done(stale)),
        };

        let name = match blob_name(&req.key, &req.source_prefix, &req.target_prefix) {
            Ok(n) => n,
            Err(issue) => {
                let outcome = match issue {
                    NameIssue::FolderMarker | NameIssue::OutsidePrefix => Outcome::Excluded,
                    NameIssue::Invalid(_) => Outcome::Unsupported,
                };
                return self.finish(rec, outcome, Some(issue.reason()), None, seen).await;
            }
        };
        rec.blob = Some(name.clone());

        // `recheck` ignores the checkpoint's word; the blob's own provenance still counts.
        let seen_for_skip = if req.recheck { None } else { seen };
        if let (Some(l), Some(s)) = (&req.listed, seen_for_skip) {
            // Only a listing's hint: an event's carries no Last-Modified, and ETag and size
            // alone miss a metadata-only change, so an event always looks at the source.
            let modified = l.last_modified.as_deref();
            if modified.is_some() && is_current(&s.record, &l.etag, l.size, modified, &name) {
                return self
                    .skip_current(rec, s, l.size, name, "checkpoint matches the listing")
                    .await;
            }
        }

        // The blob first, the source second (decisions 49): every write below is conditional
        // on this state of the blob, so a newer version committed by another worker after
        // this read makes our write lose, and one committed before it was read from a source
        // that our later read cannot see older than.
        let existing = self.existing_blob(req, target, &name, seen).await?;
        let Some((head, small)) = self.read_source(req).await? else {
            return self.source_gone(req, target, rec, &name, seen, existing).await;
        };
        rec.note_source(&head);

        if let Some(class) = head.unreadable_class() {
            let reason = format!("unsupported: {class} (restore the object first)");
            return self
                .finish(rec, Outcome::Unsupported, Some(reason), Some(&head), seen)
                .await;
        }

        // Skip when the checkpoint already has this version at this blob...
        if let Some(s) = seen_for_skip {
            if is_current(&s.record, &head.etag, head.size, head.last_modified.as_deref(), &name) {
                return self
                    .skip_current(rec, s, head.size, name, "checkpoint has this version")
                    .await;
            }
        }
        // ...or the blob's provenance says it holds it.
        if let Some(p) = &existing {
            if holds(p, &head) {
                rec.verified = Some(Verification::Provenance);
                let reason = Some("blob already holds this version".into());
                return self
                    .finish(rec, Outcome::NoTransferNeeded, reason, Some(&head), seen)
                    .await;
            }
        }

        let props = match self.commit_props(req, &head) {
            Ok(p) => p,
            Err(why) => return self.finish(rec, Outcome::Failed, Some(why), Some(&head), seen).await,
        };
        if let Some((data, _mem)) = small {
            let verified = self
                .commit_small(req, target, &name, &head, data, props, existing.as_ref())
                .await?;
            rec.path = Some(MovedBy::Streamed);
            rec.verified = Some(verified);
            return self.finish(rec, Outcome::Copied, None, Some(&head), seen).await;
        }
        if let Some(budget) = budget {
            if let Some(step) = self.split(req, target, target_id, seen, &name, &head, budget).await? {
                return Ok(step);
            }
        }

        let job = Transfer {
            req,
            target,
            name: &name,
            head: &head,
            props: &props,
            existing: existing.as_ref(),
        };
        let (path, verified) = match self.cfg.copy_path {
            CopyPath::Streamed => (MovedBy::Streamed, self.streamed(&job).await?),
            CopyPath::ServerSide => (MovedBy::ServerSide, self.server_side(&job).await?),
            CopyPath::Auto => match self.server_side(&job).await {
                Ok(v) => (MovedBy::ServerSide, v),
                Err(e) if e.kind() == ErrorKind::CopySourceUnreachable => {
                    tracing::info!(bucket = %req.bucket, key = %req.key, "Azure cannot read the source; streaming instead");
                    (MovedBy::Streamed, self.streamed(&job).await?)
                }
                Err(e) => return Err(e),
            },
        };
        rec.path = Some(path);
        rec.verified = Some(verified);
        self.finish(rec, Outcome::Copied, None, Some(&head), seen).await
    }

    /// The checkpoint already holds this version: nothing to copy. When the event advanced
    /// the key's sequencer, the row records it (one conditional update), so a later stale or
    /// duplicate event is dropped without a HEAD. Losing that update to another writer costs
    /// nothing but the shortcut.
    async fn skip_current(
        &self,
        rec: ObjectRecord,
        seen: &Versioned,
        bytes: u64,
        name: String,
        why: &str,
    ) -> Result<Step> {
        if rec.sequencer != seen.record.sequencer {
            let mut row = seen.record.clone();
            row.sequencer = rec.sequencer;
            row.last_event = rec.last_event;
            row.event_time = rec.event_time;
            row.updated_at = now_rfc3339();
            match self.checkpoint.replace(&row, seen).await {
                Err(e) if e.kind() == ErrorKind::Precondition => {}
                r => r?,
            }
        }
        Ok(no_transfer(bytes, name, why))
    }

    /// The blob's properties, unless the request is `fresh` and no checkpoint row was read:
    /// then it is taken to be absent and the write's If-None-Match checks that.
    async fn existing_blob(
        &self,
        req: &CopyRequest,
        target: &BlobTarget,
        name: &str,
        seen: Option<&Versioned>,
    ) -> Result<Option<BlobProps>> {
        if req.fresh && seen.is_none() {
            return Ok(None);
        }
        target.properties(name).await
    }

    /// The source's headers, and its bytes when a small object of known ETag could be read
    /// with one GET (its answer carries every header HEAD gives) instead of HEAD + ranged
    /// GET; `None` when the object does not exist. Streamed only: server-side reads nothing
    /// here.
    async fn read_source(&self, req: &CopyRequest) -> Result<Option<(ObjectHead, Option<Held>)>> {
        if let (CopyPath::Streamed, Some(l)) = (self.cfg.copy_path, &req.listed) {
            if l.size <= self.cfg.block_size.max(WHOLE_READ_MAX) {
                let mem = self.reserve_buffer(l.size).await?;
                match self.s3.get_small(&req.bucket, &req.key, &l.etag).await {
                    Ok(got) => return Ok(got.map(|(head, data)| (head, Some((data, mem))))),
                    // Changed since listed, archived, or otherwise unreadable: HEAD decides.
                    Err(e) if !e.is_retryable() => {
                        tracing::debug!(bucket = %req.bucket, key = %req.key, error = %e, "single GET declined; taking HEAD");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(self.s3.head(&req.bucket, &req.key).await?.map(|h| (h, None)))
    }

    /// A small object already read whole: verified in memory like a streamed one, then one
    /// Put Blob carrying its CRC64 (Azure checks it) and the commit's headers, metadata and
    /// condition. Returns the verification used.
    #[allow(clippy::too_many_arguments)]
    async fn commit_small(
        &self,
        req: &CopyRequest,
        target: &BlobTarget,
        name: &str,
        head: &ObjectHead,
        data: bytes::Bytes,
        mut props: CommitProps,
        existing: Option<&BlobProps>,
    ) -> Result<Verification> {
        if data.len() as u64 != head.size {
            return Err(Error::mismatch(
                Mismatch::Size,
                format_args!(
                    "s3://{}/{}: source {} bytes, read {}",
                    req.bucket,
                    req.key,
                    head.size,
                    data.len()
                ),
            ));
        }
        let crc = checksum::crc64(&data);
        let verified = verify_streamed(req, head, crc, || Md5::digest(&data).into())?;
        props
            .metadata
            .insert(crate::engine::metadata::CRC64_KEY.into(), checksum::to_s3(crc));
        let cond = WriteCondition::after(existing);
        match target.put_blob(name, data.clone(), crc, &props, &cond).await {
            Err(e) if held_by_uncommitted(target, name, &e, existing).await? => {
                // The same bytes as one block, committed under the same create-only
                // condition: a committed blob that lands meanwhile still wins.
                let layout = BlockLayout::new(head.size, &head.etag, head.size.max(1));
                let ids = layout.ids();
                if let Some(id) = ids.first() {
                    target.stage_block(name, id, data, crc).await?;
                }
                target.commit_blocks(name, &ids, &props, &cond).await?;
            }
            r => r?,
        }
        Ok(verified)
    }

    /// Content headers and mapped metadata for the blob; `Err` is the policy's refusal.
    pub(super) fn commit_props(
        &self,
        req: &CopyRequest,
        head: &ObjectHead,
    ) -> std::result::Result<CommitProps, String> {
        let meta = map_metadata(&req.bucket, &req.key, head, self.cfg.metadata_policy)?;
        if !meta.excluded.is_empty() || !meta.renamed.is_empty() {
            tracing::info!(
                bucket = %req.bucket, key = %req.key, excluded = ?meta.excluded, renamed = ?meta.renamed,
                "metadata names adjusted by policy"
            );
        }
        Ok(CommitProps {
            headers: head.headers.clone(),
            metadata: meta.values,
        })
    }

    /// The source object is gone: mirror deletes our blob, additive keeps it. `existing` is
    /// the blob as read before the source was found gone.
    async fn source_gone(
        &self,
        req: &CopyRequest,
        target: &BlobTarget,
        rec: ObjectRecord,
        name: &str,
        seen: Option<&Versioned>,
        existing: Option<BlobProps>,
    ) -> Result<Step> {
        if req.mode == SyncMode::Mirror {
            // A `fresh` request skipped the blob read: read it now, then look at the source
            // again, so the delete is still conditional on a blob read before the source.
            let existing = match existing {
                None if req.fresh && seen.is_none() => match target.properties(name).await? {
                    Some(p) if self.s3.head(&req.bucket, &req.key).await?.is_none() => Some(p),
                    Some(_) => return Err(Error::new(ErrorKind::Precondition, "source re-created meanwhile")),
                    None => None,
                },
                e => e,
            };
            if let Some(p) = existing {
                // Only what this tool wrote for this very key: never an unrelated blob, nor
                // one another prefix pair wrote under the same name.
                let ours = written_for(&p.metadata, &req.bucket).as_deref() == Some(req.key.as_str());
                // Only the blob we looked at: a copy that landed meanwhile is left alone.
                if ours && target.delete_if(name, &WriteCondition::after(Some(&p))).await? {
                    let why = match &req.event {
                        Some(_) => "the source object was deleted",
                        None => "mirror: the source has no such object",
                    };
                    crate::audit::record(
                        crate::audit::Action::DeleteBlob,
                        &requested_by(req),
                        req.run_id.as_deref().unwrap_or(""),
                        &format!("{}/{name}", target.id()),
                        why,
                    );
                    return self
                        .finish(rec, Outcome::Deleted, Some("source deleted".into()), None, seen)
                        .await;
                }
            }
        }
        let reason = match req.mode {
            SyncMode::Mirror => "source object does not exist",
            SyncMode::Additive => "source object does not exist (additive mode keeps the blob)",
        };
        self.finish(rec, Outcome::SourceMissing, Some(reason.into()), None, seen)
            .await
    }

    pub(super) async fn finish(
        &self,
        mut rec: ObjectRecord,
        outcome: Outcome,
        reason: Option<String>,
        head: Option<&ObjectHead>,
        seen: Option<&Versioned>,
    ) -> Result<Step> {
        rec.outcome = outcome;
        rec.reason = reason;
        rec.updated_at = now_rfc3339();
        if outcome == Outcome::Failed {
            // A failure applies no event.
            rec.sequencer = seen.and_then(|s| s.record.sequencer.clone());
        }
        self.checkpoint.put(&rec, seen).await?;
        Ok(Step::Done(CopyReport {
            outcome,
            reason: rec.reason,
            bytes: head.map_or(0, |h| h.size),
            blob: rec.blob,
            path: rec.path,
            verified: rec.verified,
        }))
    }

    /// Server-side copy: Azure reads a presigned GET itself. Returns the verification used.
    async fn server_side(&self, job: &Transfer<'_>) -> Result<Verification> {
        let Transfer {
            req,
            target,
            name,
            head,
            props,
            existing,
        } = *job;
        let url = self
            .s3
            .presign_get(
                &req.bucket,
                &req.key,
                head.version_id.as_deref(),
                self.cfg.presign_expiry,
            )
            .await?;
        let expected = head.md5();
        // One Put Blob From URL only when Azure can check what it read against the source's
        // MD5 before it commits. Otherwise blocks: their CRC64s fold into S3's full-object
        // CRC64 when it has one, and the source is HEADed again before the commit, so nothing
        // is committed from a version other than the one HEADed (decisions 55).
        if head.size <= self.cfg.put_blob_from_url_max && expected.is_some() {
            let cond = WriteCondition::after(existing);
            let put = target
                .put_blob_from_url(name, &url, &head.etag, expected.as_ref().map(|m| &m[..]), props, &cond)
                .await;
            match put {
                // Go on with blocks, whose commit the uncommitted ones do not stop.
                Err(e) if held_by_uncommitted(target, name, &e, existing).await? => {}
                put => {
                    if let (Some(want), Some(got)) = (expected, put?.as_deref()) {
                        if got != want {
                            // Committed but wrong: a corrupt blob is worse than none.
                            if existing.is_none() {
                                target.delete(name).await?;
                                crate::audit::record(
                                    crate::audit::Action::DeleteBlob,
                                    &requested_by(req),
                                    req.run_id.as_deref().unwrap_or(""),
                                    &format!("{}/{name}", target.id()),
                                    "the bytes Azure committed failed the source's MD5",
                                );
                            }
                            return Err(mismatch(req, &hex::encode(want), &hex::encode(got)));
                        }
                    }
                    return Ok(Verification::Md5);
                }
            }
        }
        let layout = BlockLayout::new(head.size, &head.etag, self.cfg.block_size);
        let crcs = self
            .stage_from_url(target, name, &url, &head.etag, &layout, 0..layout.count())
            .await?;
        let whole = combine(&layout, crcs);
        let mut props = props.clone();
        let verified = match (head.crc64nvme, whole) {
            (Some(want), Some(got)) => {
                if got != want {
                    return Err(crc_mismatch(req, want, got));
                }
                props
                    .metadata
                    .insert(crate::engine::metadata::CRC64_KEY.into(), checksum::to_s3(want));
                Verification::Crc64nvme
            }
            // S3 has a CRC64 but Azure did not return one for every block.
            (Some(_), None) => {
                return Err(Error::new(
                    ErrorKind::Transient,
                    format!("{name}: Put Block From URL returned no CRC64"),
                ))
            }
            // No whole-object checksum to compare: the blocks tile exactly `head.size` bytes
            // of the version HEADed, which is still the source's (checked just below).
            (None, _) => Verification::Size,
        };
        self.source_unchanged(req, head).await?;
        target
            .commit_blocks(name, &layout.ids(), &props, &WriteCondition::after(existing))
            .await?;
        Ok(verified)
    }

    /// Before a server-side commit without a whole-object checksum: the source must still be
    /// the version HEADed (same ETag and size), so every range Azure read was of it. Otherwise
    /// `Precondition`, and the copy starts over from the new version.
    async fn source_unchanged(&self, req: &CopyRequest, head: &ObjectHead) -> Result<()> {
        match self.s3.head(&req.bucket, &req.key).await? {
            // Last-Modified and version id too: the same bytes written again (same ETag)
            // between two of Azure's range reads would still be another version.
            Some(now)
                if now.etag == head.etag
                    && now.size == head.size
                    && now.last_modified == head.last_modified
                    && now.version_id == head.version_id =>
            {
                Ok(())
            }
            _ => Err(Error::new(
                ErrorKind::Precondition,
                format!(
                    "s3://{}/{}: the source changed while Azure read it; not committed",
                    req.bucket, req.key
                ),
            )),
        }
    }

    /// Put Block From URL for `blocks` of `layout`, `block_concurrency` at a time. Returns
    /// the CRC64 Azure computed for each block, in block order.
    pub(super) async fn stage_from_url(
        &self,
        target: &BlobTarget,
        name: &str,
        url: &Secret,
        etag: &str,
        layout: &BlockLayout,
        blocks: Range<u64>,
    ) -> Result<Vec<Option<u64>>> {
        let mut crcs: Vec<(u64, Option<u64>)> = futures::stream::iter(blocks)
            .map(|i| async move {
                target
                    .stage_block_from_url(name, &layout.id(i), url, etag, layout.range(i))
                    .await
                    .map(|c| (i, c))
            })
            .buffer_unordered(self.cfg.block_concurrency)
            .collect::<Vec<Result<_>>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        crcs.sort_by_key(|(i, _)| *i);
        Ok(crcs.into_iter().map(|(_, c)| c).collect())
    }

    /// Streams `blocks` of `layout` (pinned to `etag`) into Put Block. The blocks are cut into
    /// up to `block_concurrency` contiguous spans, each read by one GET (resumed where it
    /// broke). A block holds one of `block_concurrency` permits from its first byte read to
    /// the end of its upload, so at most `block_concurrency` blocks of this copy are in
    /// memory, and it also holds its bytes of the process-wide stream buffer budget. Each
    /// block goes up with its CRC64, which Azure checks. Returns the blocks' CRC64s, and with
    /// `ordered_md5` the MD5 of all the bytes in order (then there is one span, as an MD5
    /// cannot be combined from parts).
    pub(super) async fn stage_streamed(
        &self,
        job: &StreamJob<'_>,
        blocks: Range<u64>,
        ordered_md5: bool,
    ) -> Result<(Vec<u64>, Option<[u8; 16]>)> {
        let c = self.cfg.block_concurrency as u64;
        let n = blocks.end - blocks.start;
        let spans = if ordered_md5 { 1 } else { c.min(n).max(1) };
        let uploads = Arc::new(Semaphore::new(self.cfg.block_concurrency));
        let parts = futures::future::try_join_all((0..spans).map(|s| {
            let span = blocks.start + n * s / spans..blocks.start + n * (s + 1) / spans;
            self.stage_span(job, span, uploads.clone(), ordered_md5)
        }))
        .await?;
        let mut crcs = Vec::with_capacity(n as usize);
        let mut md5 = None;
        for (c, m) in parts {
            crcs.extend(c);
            md5 = md5.or(m);
        }
        Ok((crcs, md5))
    }

    /// One span of [`Self::stage_streamed`]: read block by block, each handed to an upload
    /// task once one of the shared `uploads` permits is free.
    async fn stage_span(
        &self,
        job: &StreamJob<'_>,
        span: Range<u64>,
        uploads: Arc<Semaphore>,
        ordered_md5: bool,
    ) -> Result<(Vec<u64>, Option<[u8; 16]>)> {
        let StreamJob {
            req,
            target,
            name,
            etag,
            layout,
        } = *job;
        let mut whole = ordered_md5.then(Md5::new);
        if span.is_empty() {
            return Ok((Vec::new(), whole.map(|h| h.finalize().into())));
        }
        let bytes = layout.range(span.start).start..layout.range(span.end - 1).end;
        let reader = self.s3.span(&req.bucket, &req.key, etag, bytes);
        let mut running = JoinSet::new();
        let mut crcs = Vec::with_capacity((span.end - span.start) as usize);
        for i in span {
            // The permit covers the block from its first byte read to its upload's end, so at
            // most `block_concurrency` blocks are in memory, whatever the number of spans.
            let permit = uploads
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Error::internal(e.to_string()))?;
            let r = layout.range(i);
            let mem = self.reserve_buffer(r.end - r.start).await?;
            let data = reader.next(r.end - r.start).await?;
            if let Some(h) = whole.as_mut() {
                h.update(&data);
            }
            let block_crc = checksum::crc64(&data);
            crcs.push(block_crc);
            let (t, id, n) = (target.clone(), layout.id(i), name.to_string());
            running.spawn(async move {
                let _held = (permit, mem);
                t.stage_block(&n, &id, data, block_crc).await
            });
            while let Some(done) = running.try_join_next() {
                done.map_err(|e| Error::internal(format!("upload task: {e}")))??;
            }
        }
        while let Some(done) = running.join_next().await {
            done.map_err(|e| Error::internal(format!("upload task: {e}")))??;
        }
        let gets = reader.gets().await;
        tracing::debug!(bucket = %req.bucket, key = %req.key, gets, blocks = crcs.len(), "span staged");
        Ok((crcs, whole.map(|h| h.finalize().into())))
    }

    /// Streamed copy of the whole object. The whole-object checksum is compared before the
    /// block list is committed, so a mismatch leaves the previous blob (or none) in place.
    async fn streamed(&self, job: &Transfer<'_>) -> Result<Verification> {
        let Transfer {
            req,
            target,
            name,
            head,
            props,
            existing,
        } = *job;
        let layout = BlockLayout::new(head.size, &head.etag, self.cfg.block_size);
        // The MD5 is the check only when the source has no CRC64 but an MD5 ETag.
        let need_md5 = head.crc64nvme.is_none() && head.md5().is_some();
        let job = StreamJob {
            req,
            target,
            name,
            etag: &head.etag,
            layout: &layout,
        };
        let (crcs, md5) = self.stage_streamed(&job, 0..layout.count(), need_md5).await?;
        // Every block's CRC is known here, so the fold always has a value.
        let crc = combine(&layout, crcs.iter().copied().map(Some)).unwrap_or_default();
        // The strongest check the source offers: its full-object CRC64, else its MD5 ETag,
        // else the size. Every block was also CRC-checked by Azure on the way in.
        let mut props = props.clone();
        props
            .metadata
            .insert(crate::engine::metadata::CRC64_KEY.into(), checksum::to_s3(crc));
        // `need_md5` is exactly when verify_streamed asks for it, so the default is never used.
        let verified = verify_streamed(req, head, crc, || md5.unwrap_or_default())?;
        target
            .commit_blocks(name, &layout.ids(), &props, &WriteCondition::after(existing))
            .await?;
        Ok(verified)
    }
}

/// Objects up to this size (or one block, if blocks are bigger) are read with one GET and
/// written with one Put Blob: two requests instead of five for an 8 MiB object at 4 MiB
/// blocks, at the cost of holding it whole (within the stream buffer budget).
const WHOLE_READ_MAX: u64 = 8 * 1024 * 1024;

/// A small object read whole, with its share of the stream buffer budget.
type Held = (bytes::Bytes, tokio::sync::OwnedSemaphorePermit);

/// What a streamed staging works on: one version (`etag`) of one object, laid out as
/// `layout`, into blob `name` of `target`.
#[derive(Clone, Copy)]
pub(super) struct StreamJob<'a> {
    pub req: &'a CopyRequest,
    pub target: &'a BlobTarget,
    pub name: &'a str,
    pub etag: &'a str,
    pub layout: &'a BlockLayout,
}

/// Checks bytes read by this process against the strongest value the source offers: its
/// full-object CRC64, else its MD5 ETag (computed only then), else nothing but the size the
/// caller checked. Returns the verification used.
fn verify_streamed(
    req: &CopyRequest,
    head: &ObjectHead,
    crc: u64,
    md5: impl FnOnce() -> [u8; 16],
) -> Result<Verification> {
    match (head.crc64nvme, head.md5()) {
        (Some(want), _) if want != crc => Err(crc_mismatch(req, want, crc)),
        (Some(_), _) => Ok(Verification::Crc64nvme),
        (None, Some(want)) => {
            let got = md5();
            if got != want {
                return Err(mismatch(req, &hex::encode(want), &hex::encode(got)));
            }
            Ok(Verification::Md5)
        }
        (None, None) => Ok(Verification::Size),
    }
}

/// Whether a blob's provenance says it holds the source version `head`: same ETag and size,
/// and the same Last-Modified where the blob recorded one (a metadata-only change keeps the
/// ETag of a single-part object).
pub(super) fn holds(p: &BlobProps, head: &ObjectHead) -> bool {
    p.size == head.size
        && provenance(&p.metadata) == Some((head.etag.as_str(), head.size))
        && same_modified(provenance_modified(&p.metadata), head.last_modified.as_deref())
}

/// Last-Modified values agree, or one side does not know it (rows and blobs written before
/// it was recorded).
pub(crate) fn same_modified(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The CRC64 of the layout's blocks from the first on, combined in order; `None` when one
/// is unknown.
pub(super) fn combine(layout: &BlockLayout, crcs: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    let mut whole = checksum::Running::default();
    for (i, c) in (0..).zip(crcs) {
        let r = layout.range(i);
        whole.push(c?, r.end - r.start);
    }
    Some(whole.value())
}

/// Whether a checkpoint row says `name` already holds the source version (`etag`, `size`,
/// Last-Modified where both know it).
pub(crate) fn is_current(r: &ObjectRecord, etag: &str, size: u64, modified: Option<&str>, name: &str) -> bool {
    matches!(r.outcome, Outcome::Copied | Outcome::NoTransferNeeded)
        && r.etag.as_deref() == Some(etag)
        && r.size == Some(size)
        && same_modified(r.last_modified.as_deref(), modified)
        && r.blob.as_deref() == Some(name)
}

/// Whether a create-only write failed only because the name holds uncommitted blocks (a
/// writer that died between Put Block and Put Block List): the write lost a precondition,
/// yet the blob still reads as absent. Azurite answers Put Blob and Put Blob From URL with
/// 409 `BlobAlreadyExists` there for good, while Put Block List under the same condition
/// succeeds (decision 69); a caller that restarted instead would loop until poisoned.
async fn held_by_uncommitted(target: &BlobTarget, name: &str, e: &Error, existing: Option<&BlobProps>) -> Result<bool> {
    if existing.is_some() || e.kind() != ErrorKind::Precondition {
        return Ok(false);
    }
    let held = target.properties(name).await?.is_none();
    if held {
        tracing::info!(blob = name, error = %e, outcome = "uncommitted_blocks", "a create-only write met uncommitted blocks; committing as a block list");
    }
    Ok(held)
}

/// Who asked for a copy request, for the audit trail.
fn requested_by(req: &CopyRequest) -> String {
    match (&req.event, &req.run_id) {
        (Some(ev), _) => format!(
            "s3 event {} (sequencer {})",
            ev.name,
            ev.sequencer.as_deref().unwrap_or("none")
        ),
        (None, Some(run)) => format!("run {run}"),
        (None, None) => "a copy request".into(),
    }
}

fn no_transfer(bytes: u64, blob: String, why: &str) -> Step {
    let mut rep = CopyReport::new(Outcome::NoTransferNeeded);
    rep.bytes = bytes;
    rep.blob = Some(blob);
    rep.reason = Some(why.into());
    Step::Done(rep)
}

/// One object being moved: what both copy paths need.
#[derive(Clone, Copy)]
struct Transfer<'a> {
    req: &'a CopyRequest,
    target: &'a BlobTarget,
    name: &'a str,
    head: &'a ObjectHead,
    props: &'a CommitProps,
    existing: Option<&'a BlobProps>,
}

pub(super) fn mismatch(req: &CopyRequest, want: &str, got: &str) -> Error {
    Error::mismatch(
        Mismatch::Checksum,
        format_args!("s3://{}/{}: source MD5 {want}, copied {got}", req.bucket, req.key),
    )
}

pub(super) fn crc_mismatch(req: &CopyRequest, want: u64, got: u64) -> Error {
    Error::mismatch(
        Mismatch::Checksum,
        format_args!(
            "s3://{}/{}: source CRC64NVME {}, copied {}",
            req.bucket,
            req.key,
            checksum::to_s3(want),
            checksum::to_s3(got)
        ),
    )
}

/// The reason stored for a failure: a stable category first, then the detail. An integrity
/// error's message already begins with its category (see [`Error::mismatch`]).
fn failure_reason(e: &Error) -> String {
    match e.kind() {
        // A service's own refusal (Md5Mismatch, BadDigest): its code, not our words.
        ErrorKind::Integrity if e.code().is_some() => {
            format!("{} mismatch: {}", Mismatch::Checksum.as_str(), e.message())
        }
        ErrorKind::Integrity => e.message().to_string(),
        k => format!("{}: {}", k.as_str(), e.message()),
    }
}
