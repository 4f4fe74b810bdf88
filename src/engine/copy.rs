//! Copy of one object, the orchestration (docs/decisions.md, "Architecture"): HEAD the
//! source, skip what is already there (`decide`), move the bytes (`server_side` or
//! `streamed`), check what was written (`integrity`), then checkpoint. Each step's outcome is
//! one typed event (`internal_events::copy`).

use std::time::Instant;

use super::decide::is_current;
use super::metadata::{attrs_digest, map_metadata, written_for};
use super::naming::{blob_name, NameIssue};
use super::tags::{map_tags, TAGS_KEY};
use super::{CopyReport, CopyRequest, Engine, PartRef, Step};
use crate::aws::s3::ObjectHead;
use crate::azure::blob::{BlobProps, BlobTarget, CommitProps, WriteCondition};
use crate::config::{CopyPath, TagsMode};
use crate::error::{Error, ErrorKind, Mismatch, Result};
use crate::internal_events::{
    emit, CopyRestarted, FailureNotRecorded, ObjectDone, ObjectFailed, ObjectRef, ObjectSplit, RangeStaged,
};
use crate::model::{MovedBy, SyncMode, Verification};
use crate::state::checkpoint::{now_rfc3339, ObjectRecord, Outcome, Subject, Versioned};

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
        // The row is the blob's, whichever key and mapping wrote it (decisions 99); a key that
        // maps to no blob has a row of its own.
        let name = blob_name(&req.key, &req.source_prefix, &req.target_prefix).ok();
        let subject = match &name {
            Some(n) => Subject::Blob(n),
            None => Subject::Key(&req.key),
        };
        let (result, seen) = loop {
            let seen = if cur.fresh {
                None
            } else {
                self.checkpoint.get(&req.bucket, subject, &target_id).await?
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
                    emit(CopyRestarted {
                        object: ObjectRef {
                            bucket: &req.bucket,
                            key: &req.key,
                            blob: name.as_deref().unwrap_or(""),
                            run_id: req.run_id.as_deref().unwrap_or(""),
                        },
                        reason: e.message(),
                        restarts,
                    });
                }
                r => break (r, seen),
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let run_id = req.run_id.as_deref().unwrap_or("");
        let object = ObjectRef {
            bucket: &req.bucket,
            key: &req.key,
            blob: name.as_deref().unwrap_or(""),
            run_id,
        };
        match &result {
            Ok(Step::Done(r)) => emit(ObjectDone {
                object: ObjectRef {
                    blob: r.blob.as_deref().unwrap_or(""),
                    ..object
                },
                bytes: r.bytes,
                outcome: r.outcome.as_str(),
                reason: r.reason.as_deref().unwrap_or(""),
                path: r.path.map_or("", MovedBy::as_str),
                verified: r.verified.map_or("", Verification::as_str),
                duration_ms,
            }),
            Ok(Step::Split(p)) => emit(ObjectSplit {
                object,
                ranges: p.ranges,
                staged: p.staged,
                to_send: p.unstaged.len(),
                claimed: p.claimed,
                duration_ms,
            }),
            Ok(Step::Staged { index, staged, ranges }) => emit(RangeStaged {
                object,
                range: *index,
                staged: *staged,
                ranges: *ranges,
                duration_ms,
            }),
            Err(e) => {
                emit(ObjectFailed {
                    object,
                    error_kind: e.kind().as_str(),
                    reason: &e.to_string(),
                    range: req.part.as_ref().map(|p| p.index),
                    duration_ms,
                });
                let mut rec = ObjectRecord::new(&req.bucket, &req.key, &target_id, Outcome::Failed);
                rec.reason = Some(failure_reason(e));
                rec.run_id = req.run_id.clone();
                rec.blob = name.clone();
                // Keep what we knew of this key's last good copy so a later skip check still
                // works (not another key's, whose row this blob's may have been).
                let ours = seen.as_ref().filter(|s| s.record.key == req.key);
                rec.failed_attempts = ours.map_or(0, |s| s.record.failed_attempts) + 1;
                if let Some(s) = ours {
                    rec.sequencer = s.record.sequencer.clone();
                    rec.last_event = s.record.last_event.clone();
                    rec.event_time = s.record.event_time.clone();
                }
                if let Err(w) = self.checkpoint.put(&rec, seen.as_ref()).await {
                    emit(FailureNotRecorded {
                        object,
                        reason: &w.to_string(),
                    });
                }
            }
        }
        result
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
            if modified.is_some() && is_current(&s.record, &req.key, &l.etag, l.size, modified, None, &name) {
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
        let attrs = attrs_digest(&head);
        rec.note_source(&head, attrs.clone());

        if let Some(class) = head.unreadable_class() {
            let reason = format!("unsupported: {class} (restore the object first)");
            return self
                .finish(rec, Outcome::Unsupported, Some(reason), Some(&head), seen)
                .await;
        }

        // A tag change on a blob that holds this version: its tags alone are brought over
        // (the bytes and the row's version stay). Otherwise the copy below writes them.
        let tagging = req.event.as_ref().is_some_and(|e| e.is_tag_change());
        if tagging && self.cfg.tags == TagsMode::Index {
            if let Some(p) = existing.as_ref().filter(|p| self.holds(req, p, &head, &attrs)) {
                return self.retag(req, target, &name, &head, p, rec, seen).await;
            }
        }

        // Skip when the checkpoint already has this version at this blob...
        if let Some(s) = seen_for_skip {
            let modified = head.last_modified.as_deref();
            if is_current(
                &s.record,
                &req.key,
                &head.etag,
                head.size,
                modified,
                Some(&attrs),
                &name,
            ) {
                return self
                    .skip_current(rec, s, head.size, name, "checkpoint has this version")
                    .await;
            }
        }
        // ...or the blob's provenance says it holds it.
        if let Some(p) = &existing {
            if self.holds(req, p, &head, &attrs) {
                rec.verified = Some(Verification::Provenance);
                let reason = Some("blob already holds this version".into());
                return self
                    .finish(rec, Outcome::NoTransferNeeded, reason, Some(&head), seen)
                    .await;
            }
        }

        let (props, notes) = match self.commit_props(req, &head).await? {
            Ok(p) => p,
            Err(why) => return self.finish(rec, Outcome::Failed, Some(why), Some(&head), seen).await,
        };
        // A copy's reason is empty, but for what its commit left out.
        let copied_reason = (!notes.is_empty()).then(|| notes.join("; "));
        if let Some((data, _mem)) = small {
            let verified = self
                .commit_small(req, target, &name, &head, data, props, existing.as_ref())
                .await?;
            rec.path = Some(MovedBy::Streamed);
            rec.verified = Some(verified);
            return self
                .finish(rec, Outcome::Copied, copied_reason, Some(&head), seen)
                .await;
        }
        if let Some(budget) = budget {
            if let Some(step) = self.split(req, target, target_id, seen, &name, &head, budget).await? {
                return Ok(step);
            }
        }

        let job = Transfer {
            route: Route {
                req,
                target,
                name: &name,
            },
            head: &head,
            props: &props,
            existing: existing.as_ref(),
        };
        let moved = match self.cfg.copy_path {
            CopyPath::Streamed => self.streamed(&job).await.map(|v| (MovedBy::Streamed, v)),
            CopyPath::ServerSide => self.server_side(&job).await.map(|v| (MovedBy::ServerSide, v)),
            CopyPath::Auto => match self.server_side(&job).await {
                Err(e) if e.kind() == ErrorKind::CopySourceUnreachable => {
                    tracing::info!(bucket = %req.bucket, key = %req.key, "Azure cannot read the source; streaming instead");
                    self.streamed(&job).await.map(|v| (MovedBy::Streamed, v))
                }
                r => r.map(|v| (MovedBy::ServerSide, v)),
            },
        };
        let (path, verified) = match moved {
            // S3 refuses to read an archived object, whatever HEAD said of it (a HEAD that
            // carried no archive status, an archive transition since): a verdict, not a fault.
            Err(e) if e.code() == Some("InvalidObjectState") => {
                let reason = format!(
                    "unsupported: {} is archived (S3 answered InvalidObjectState; restore the object first)",
                    head.storage_class.as_deref().unwrap_or("the object")
                );
                return self
                    .finish(rec, Outcome::Unsupported, Some(reason), Some(&head), seen)
                    .await;
            }
            r => r?,
        };
        rec.path = Some(path);
        rec.verified = Some(verified);
        self.finish(rec, Outcome::Copied, copied_reason, Some(&head), seen)
            .await
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

    /// Content headers, mapped metadata and tags for the blob, and what was left out of them
    /// (for the row's reason); the inner `Err` is the policy's refusal. Reads the tags
    /// (GetObjectTagging) only when the object has any and `SYNC_TAGS` keeps them.
    pub(super) async fn commit_props(
        &self,
        req: &CopyRequest,
        head: &ObjectHead,
    ) -> Result<std::result::Result<(CommitProps, Vec<String>), String>> {
        let meta = match map_metadata(&req.bucket, &req.key, head, self.cfg.metadata_policy) {
            Ok(m) => m,
            Err(why) => return Ok(Err(why)),
        };
        if !meta.excluded.is_empty() || !meta.renamed.is_empty() {
            tracing::info!(
                bucket = %req.bucket, key = %req.key, excluded = ?meta.excluded, renamed = ?meta.renamed,
                "metadata names adjusted by policy"
            );
        }
        let mut metadata = meta.values;
        let tags = if head.tag_count > 0 && self.cfg.tags != TagsMode::Drop {
            let set = self.s3.tags(&req.bucket, &req.key, head.version_id.as_deref()).await?;
            match map_tags(&set, self.cfg.tags, self.cfg.metadata_policy) {
                Ok(t) => t,
                Err(why) => return Ok(Err(why)),
            }
        } else {
            Default::default()
        };
        if let Some(v) = tags.metadata {
            metadata.insert(TAGS_KEY.to_string(), v);
        }
        let mut notes = Vec::new();
        if !tags.dropped.is_empty() {
            tracing::warn!(
                bucket = %req.bucket, key = %req.key, dropped = ?tags.dropped, outcome = "tags_dropped",
                "tags Azure cannot hold were left out"
            );
            notes.push(format!("tags left out: {}", tags.dropped.join("; ")));
        }
        Ok(Ok((
            CommitProps {
                headers: head.headers.clone(),
                metadata,
                tags: tags.index,
            },
            notes,
        )))
    }

    /// Sets the blob's index tags to the source's now (none, after `ObjectTagging:Delete`),
    /// on the blob as read (If-Match), and records that no bytes moved.
    #[allow(clippy::too_many_arguments)]
    async fn retag(
        &self,
        req: &CopyRequest,
        target: &BlobTarget,
        name: &str,
        head: &ObjectHead,
        blob: &BlobProps,
        mut rec: ObjectRecord,
        seen: Option<&Versioned>,
    ) -> Result<Step> {
        let (props, notes) = match self.commit_props(req, head).await? {
            Ok(p) => p,
            Err(why) => return self.finish(rec, Outcome::Failed, Some(why), Some(head), seen).await,
        };
        target
            .set_tags(name, &props.tags, &WriteCondition::IfMatch(blob.etag.clone()))
            .await?;
        let n = props.tags.len();
        let mut reason = format!("tags updated ({n} tags), no bytes moved");
        if !notes.is_empty() {
            reason = format!("{reason}; {}", notes.join("; "));
        }
        rec.verified = Some(Verification::Provenance);
        self.finish(rec, Outcome::NoTransferNeeded, Some(reason), Some(head), seen)
            .await
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
}

/// Objects up to this size (or one block, if blocks are bigger) are read with one GET and
/// written with one Put Blob: two requests instead of five for an 8 MiB object at 4 MiB
/// blocks, at the cost of holding it whole (within the stream buffer budget).
const WHOLE_READ_MAX: u64 = 8 * 1024 * 1024;

/// A small object read whole, with its share of the stream buffer budget.
type Held = (bytes::Bytes, tokio::sync::OwnedSemaphorePermit);

/// Who asked for a copy request, for the audit trail.
pub(super) fn requested_by(req: &CopyRequest) -> String {
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

/// Where one object's bytes go: the object of `req` into blob `name` of `target`.
#[derive(Clone, Copy)]
pub(super) struct Route<'a> {
    pub req: &'a CopyRequest,
    pub target: &'a BlobTarget,
    pub name: &'a str,
}

/// One object being moved: what both copy paths need.
#[derive(Clone, Copy)]
pub(super) struct Transfer<'a> {
    pub route: Route<'a>,
    pub head: &'a ObjectHead,
    pub props: &'a CommitProps,
    pub existing: Option<&'a BlobProps>,
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

/// A commit whose staged blocks are gone (another writer's commit or delete of this name
/// discarded them) lost a race, as a failed condition does: `Precondition`, so the copy looks
/// again from the blob. Azure answers 400 `InvalidBlockList`, which would otherwise read as a
/// refusal and be parked at once (decisions 102).
pub(super) fn staged_blocks_gone(e: Error, name: &str) -> Error {
    if e.code() != Some("InvalidBlockList") {
        return e;
    }
    Error::new(
        ErrorKind::Precondition,
        format!("{name}: the staged blocks are gone (another write to this name discarded them); looking again"),
    )
    .with_service(400, Some("InvalidBlockList"))
}
