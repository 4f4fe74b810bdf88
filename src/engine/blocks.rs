//! Block layout for staged copies: equal-size blocks, at most 50,000, deterministic ids.

use sha2::{Digest, Sha256};

use crate::model::MAX_BLOCKS;

/// Azure's limit on one block.
pub const MAX_BLOCK_SIZE: u64 = 4000 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// How an object is cut into blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLayout {
    /// Object size.
    pub size: u64,
    /// Block size (the last block may be shorter).
    pub block_size: u64,
    /// Id prefix derived from the source version, so blocks staged for another version of
    /// the object are never committed with this one.
    id_prefix: String,
}

impl BlockLayout {
    /// Layout for an object of `size` bytes at source `etag`, with `preferred` block size
    /// raised (to whole MiB) when needed to stay within 50,000 blocks.
    pub fn new(size: u64, etag: &str, preferred: u64) -> Self {
        let needed = size.div_ceil(MAX_BLOCKS).div_ceil(MIB) * MIB;
        let block_size = preferred.max(needed).clamp(1, MAX_BLOCK_SIZE);
        let digest = Sha256::digest(format!("{etag}:{size}").as_bytes());
        BlockLayout {
            size,
            block_size,
            id_prefix: hex::encode(&digest[..4]),
        }
    }

    /// Number of blocks (zero for an empty object).
    pub fn count(&self) -> u64 {
        self.size.div_ceil(self.block_size)
    }

    /// Byte range of block `i`.
    pub fn range(&self, i: u64) -> std::ops::Range<u64> {
        let start = i * self.block_size;
        start..(start + self.block_size).min(self.size)
    }

    /// Block id of block `i` (raw bytes; the SDK base64-encodes). All ids have one length.
    pub fn id(&self, i: u64) -> Vec<u8> {
        format!("{}-{i:06}", self.id_prefix).into_bytes()
    }

    /// All ids in order.
    pub fn ids(&self) -> Vec<Vec<u8>> {
        (0..self.count()).map(|i| self.id(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_the_object_exactly() {
        let l = BlockLayout::new(20 * MIB + 5, "e", 8 * MIB);
        assert_eq!(l.count(), 3);
        assert_eq!(l.range(2), 16 * MIB..20 * MIB + 5);
        let total: u64 = (0..l.count()).map(|i| l.range(i).end - l.range(i).start).sum();
        assert_eq!(total, l.size);
    }

    #[test]
    fn largest_s3_object_fits_in_50000_blocks() {
        let five_tib = 5 * 1024 * 1024 * MIB;
        let l = BlockLayout::new(five_tib, "e", 8 * MIB);
        assert!(l.count() <= MAX_BLOCKS);
        assert!(l.block_size <= MAX_BLOCK_SIZE);
        assert_eq!(l.block_size % MIB, 0);
    }

    #[test]
    fn ids_are_equal_length_and_version_bound() {
        let l = BlockLayout::new(MAX_BLOCKS * MIB, "e1", MIB);
        let ids = l.ids();
        assert!(ids.iter().all(|id| id.len() == ids[0].len()));
        assert_eq!(ids.len() as u64, MAX_BLOCKS);
        assert_ne!(
            BlockLayout::new(10, "e2", MIB).id(0),
            BlockLayout::new(10, "e1", MIB).id(0)
        );
        assert_eq!(BlockLayout::new(0, "e", MIB).count(), 0);
    }
}
