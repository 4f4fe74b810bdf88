//! The server-side path: Azure reads a presigned GET of the source itself (Put Blob From
//! URL, or Put Block From URL per block), and the result is verified before the commit.

use std::ops::Range;

use futures::StreamExt;

use super::blocks::BlockLayout;
use super::copy::{requested_by, Route, Transfer};
use super::decide::held_by_uncommitted;
use super::integrity::{combine, crc_mismatch, mismatch};
use super::{CopyRequest, Engine};
use crate::aws::s3::ObjectHead;
use crate::azure::blob::{BlobTarget, WriteCondition};
use crate::checksum;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Verification;
use crate::redact::Secret;

impl Engine {
    /// Server-side copy: Azure reads a presigned GET itself. Returns the verification used.
    pub(super) async fn server_side(&self, job: &Transfer<'_>) -> Result<Verification> {
        let Route { req, target, name } = job.route;
        let (head, props, existing) = (job.head, job.props, job.existing);
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
            .await
            .map_err(|e| super::copy::staged_blocks_gone(e, name))?;
        Ok(verified)
    }

    /// Before a server-side commit without a whole-object checksum: the source must still be
    /// the version HEADed (same ETag and size), so every range Azure read was of it. Otherwise
    /// `Precondition`, and the copy starts over from the new version.
    pub(super) async fn source_unchanged(&self, req: &CopyRequest, head: &ObjectHead) -> Result<()> {
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
}
