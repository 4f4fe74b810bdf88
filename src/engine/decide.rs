//! What a copy decides before it moves a byte: which event applies (sequencers), whether
//! the checkpoint or the blob already holds the source version, and whether a name is held
//! only by a dead writer's uncommitted blocks.

use std::cmp::Ordering;

use super::metadata::{compare_attrs, provenance, provenance_attrs, provenance_modified, written_like, AttrsMatch};
use super::{CopyReport, CopyRequest, Engine};
use crate::aws::events::sequencer_cmp;
use crate::aws::s3::ObjectHead;
use crate::azure::blob::{BlobProps, BlobTarget};
use crate::error::{Error, ErrorKind, Result};
use crate::state::checkpoint::{ObjectRecord, Outcome, Versioned};

impl Engine {
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
        // Sequencers are comparable for one key only: another key's row of this blob says
        // nothing of this key's events.
        let seen = seen.filter(|s| s.record.key == req.key);
        let applied = seen.and_then(|s| s.record.sequencer.clone());
        if let Some(ev) = req.event.as_ref().filter(|e| e.is_tag_change()) {
            // A tag change says "look at this key's tags now": neither judged by nor recorded
            // as the key's content sequencer, which orders puts and deletes.
            rec.sequencer = applied.clone();
            rec.last_event = Some(ev.name.clone());
            rec.event_time = ev.time.clone();
        } else if let Some(ev) = &req.event {
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
}

impl Engine {
    /// Whether a blob's provenance says it holds the source version `head`: same ETag and
    /// size, the same Last-Modified where the blob recorded one, and the same headers and
    /// metadata: by the recorded digest (`attrs`), or, for a blob written before digests were
    /// recorded, by its own headers and metadata (decisions 98).
    pub(super) fn holds(&self, req: &CopyRequest, p: &BlobProps, head: &ObjectHead, attrs: &str) -> bool {
        let same_bytes = p.size == head.size
            && provenance(&p.metadata) == Some((head.etag.as_str(), head.size))
            && same_modified(provenance_modified(&p.metadata), head.last_modified.as_deref());
        same_bytes
            && match compare_attrs(provenance_attrs(&p.metadata), attrs) {
                AttrsMatch::Same => true,
                AttrsMatch::Differ => false,
                AttrsMatch::Unknown => written_like(
                    &p.headers,
                    &p.metadata,
                    &req.bucket,
                    &req.key,
                    head,
                    self.cfg.metadata_policy,
                ),
            }
    }
}

/// Last-Modified values agree, or one side does not know it (rows and blobs written before
/// it was recorded).
pub(crate) fn same_modified(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Whether a checkpoint row says `name` already holds the source version of `key` (`etag`,
/// `size`, Last-Modified where both know it). With `attrs` (the caller HEADed the source), the row
/// must also record that digest of its headers and metadata; a row written before digests
/// were kept then does not say, and the blob itself is asked. A listing knows no headers:
/// it passes `None`, and a same-second metadata change is for events and `verify --metadata`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn is_current(
    r: &ObjectRecord,
    key: &str,
    etag: &str,
    size: u64,
    modified: Option<&str>,
    attrs: Option<&str>,
    name: &str,
) -> bool {
    matches!(r.outcome, Outcome::Copied | Outcome::NoTransferNeeded)
        && r.key == key
        && r.etag.as_deref() == Some(etag)
        && r.size == Some(size)
        && same_modified(r.last_modified.as_deref(), modified)
        && attrs.is_none_or(|a| r.attrs.as_deref() == Some(a))
        && r.blob.as_deref() == Some(name)
}

/// Whether a create-only write failed only because the name holds uncommitted blocks (a
/// writer that died between Put Block and Put Block List): the write lost a precondition,
/// yet the blob still reads as absent. Azurite answers Put Blob and Put Blob From URL with
/// 409 `BlobAlreadyExists` there for good, while Put Block List under the same condition
/// succeeds (decisions 69); a caller that restarted instead would loop until poisoned.
pub(super) async fn held_by_uncommitted(
    target: &BlobTarget,
    name: &str,
    e: &Error,
    existing: Option<&BlobProps>,
) -> Result<bool> {
    if existing.is_some() || e.kind() != ErrorKind::Precondition {
        return Ok(false);
    }
    let held = target.properties(name).await?.is_none();
    if held {
        tracing::info!(blob = name, error = %e, outcome = "uncommitted_blocks", "a create-only write met uncommitted blocks; committing as a block list");
    }
    Ok(held)
}
