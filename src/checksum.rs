//! CRC-64/NVME, the checksum both clouds compute: Azure as `x-ms-content-crc64` (base64 of
//! the 8 bytes little-endian), S3 as `x-amz-checksum-crc64nvme` (base64 of the 8 bytes
//! big-endian, always over the whole object, multipart or not). The arithmetic is the
//! `crc-fast` crate's (the one the AWS SDK uses); this module only handles the two encodings
//! and folds per-block values into a whole-object one.

use base64::Engine as _;
use crc_fast::CrcAlgorithm;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// CRC-64/NVME of `data`.
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data)
}

/// The CRC of A‖B from crc(A), crc(B) and len(B).
pub fn combine(a: u64, b: u64, len_b: u64) -> u64 {
    crc_fast::checksum_combine(CrcAlgorithm::Crc64Nvme, a, b, len_b)
}

/// The bytes Azure's `x-ms-content-crc64` carries (little-endian).
pub fn to_azure(c: u64) -> Vec<u8> {
    c.to_le_bytes().to_vec()
}

/// A value from Azure's `x-ms-content-crc64` (8 bytes, little-endian).
pub fn from_azure(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// S3's `x-amz-checksum-crc64nvme` text (base64, big-endian).
pub fn to_s3(c: u64) -> String {
    B64.encode(c.to_be_bytes())
}

/// A value from S3's `x-amz-checksum-crc64nvme`.
pub fn from_s3(s: &str) -> Option<u64> {
    let b = B64.decode(s.trim()).ok()?;
    Some(u64::from_be_bytes(b.as_slice().try_into().ok()?))
}

/// A whole-object CRC built from consecutive blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Running {
    value: u64,
    len: u64,
}

impl Running {
    /// Appends a block with CRC `crc` and length `len`.
    pub fn push(&mut self, crc: u64, len: u64) {
        self.value = if self.len == 0 {
            crc
        } else {
            combine(self.value, crc, len)
        };
        self.len += len;
    }

    /// The CRC of everything pushed (0 for nothing, as CRC-64/NVME of "" is).
    pub fn value(&self) -> u64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_and_both_encodings() {
        assert_eq!(crc64(b"123456789"), 0xAE8B_1486_0A79_9888);
        assert_eq!(crc64(b""), 0);
        // The same value as each cloud writes it.
        assert_eq!(B64.encode(to_azure(crc64(b"123456789"))), "iJh5CoYUi64=");
        assert_eq!(to_s3(crc64(b"123456789")), "rosUhgp5mIg=");
        assert_eq!(from_s3("rosUhgp5mIg="), Some(0xAE8B_1486_0A79_9888));
        assert_eq!(
            from_azure(&B64.decode("iJh5CoYUi64=").unwrap()),
            Some(0xAE8B_1486_0A79_9888)
        );
        assert_eq!(from_s3("not base64!"), None);
        assert_eq!(from_azure(&[1, 2, 3]), None);
    }

    #[test]
    fn blocks_fold_into_the_whole_object_value() {
        assert_eq!(combine(crc64(b"1234"), crc64(b"56789"), 5), 0xAE8B_1486_0A79_9888);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for block in [1, 7, 4096, 33_333, 100_000] {
            let mut r = Running::default();
            for chunk in data.chunks(block) {
                r.push(crc64(chunk), chunk.len() as u64);
            }
            assert_eq!(r.value(), crc64(&data), "block {block}");
        }
        assert_eq!(Running::default().value(), crc64(b""));
    }
}
