//! The streamed path: the bytes pass through this process (one GET and one Put Blob for a
//! small object; ranged GETs into Put Block otherwise), checked before the commit.

use std::ops::Range;
use std::sync::Arc;

use md5::{Digest, Md5};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::blocks::BlockLayout;
use super::copy::{Route, Transfer};
use super::decide::held_by_uncommitted;
use super::integrity::{combine, verify_streamed};
use super::{CopyRequest, Engine};
use crate::aws::s3::ObjectHead;
use crate::azure::blob::{BlobProps, BlobTarget, CommitProps, WriteCondition};
use crate::checksum;
use crate::error::{Error, Mismatch, Result};
use crate::model::Verification;

impl Engine {
    /// A small object already read whole: verified in memory like a streamed one, then one
    /// Put Blob carrying its CRC64 (Azure checks it) and the commit's headers, metadata and
    /// condition. Returns the verification used.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit_small(
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
                target
                    .commit_blocks(name, &ids, &props, &cond)
                    .await
                    .map_err(|e| super::copy::staged_blocks_gone(e, name))?;
            }
            r => r?,
        }
        Ok(verified)
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
    pub(super) async fn stage_span(
        &self,
        job: &StreamJob<'_>,
        span: Range<u64>,
        uploads: Arc<Semaphore>,
        ordered_md5: bool,
    ) -> Result<(Vec<u64>, Option<[u8; 16]>)> {
        let StreamJob {
            route: Route { req, target, name },
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
    pub(super) async fn streamed(&self, job: &Transfer<'_>) -> Result<Verification> {
        let Route { req, target, name } = job.route;
        let (head, props, existing) = (job.head, job.props, job.existing);
        let layout = BlockLayout::new(head.size, &head.etag, self.cfg.block_size);
        // The MD5 is the check only when the source has no CRC64 but an MD5 ETag.
        let need_md5 = head.crc64nvme.is_none() && head.md5().is_some();
        let job = StreamJob {
            route: job.route,
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
            .await
            .map_err(|e| super::copy::staged_blocks_gone(e, name))?;
        Ok(verified)
    }
}

/// What a streamed staging works on: one version (`etag`) of one object, laid out as
/// `layout`, into blob `name` of `target`.
#[derive(Clone, Copy)]
pub(super) struct StreamJob<'a> {
    pub route: Route<'a>,
    pub etag: &'a str,
    pub layout: &'a BlockLayout,
}
