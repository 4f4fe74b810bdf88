//! Checks of what was written against what the source says it holds: its full-object
//! CRC-64/NVME, its MD5 ETag, or its size.

use super::blocks::BlockLayout;
use super::CopyRequest;
use crate::aws::s3::ObjectHead;
use crate::checksum;
use crate::error::{Error, Mismatch, Result};
use crate::model::Verification;

/// Checks bytes read by this process against the strongest value the source offers: its
/// full-object CRC64, else its MD5 ETag (computed only then), else nothing but the size the
/// caller checked. Returns the verification used.
pub(super) fn verify_streamed(
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
