//! Plain types every layer shares: the copy mode, the content headers an object carries
//! from S3 to Blob, and the naming rules of Azure containers, tables and queues (checked
//! where configuration and requests are read, before any client is built).

use crate::error::{Error, Result};

/// What to do when the source object is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Never delete from the target.
    #[default]
    Additive,
    /// Delete the blob when the source is gone.
    Mirror,
}

/// Content headers carried from the source object to the blob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentHeaders {
    /// Content-Type.
    pub content_type: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
}

/// Checks a container name: 3-63 lower-case letters, digits and single hyphens.
pub fn validate_container_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{name}` is not a valid container name (3-63 lower-case letters, digits and single hyphens)"
        )))
    }
}

/// Checks an Azure table name: 3-63 alphanumerics, starting with a letter.
pub fn validate_table_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{name}` is not a valid table name (3-63 letters and digits, starting with a letter)"
        )))
    }
}

/// Checks an Azure queue name: 3-63 lower-case letters, digits and single hyphens.
pub fn validate_queue_name(name: &str) -> Result<()> {
    validate_container_name(name).map_err(|_| {
        Error::invalid(format!(
            "`{name}` is not a valid queue name (3-63 lower-case letters, digits and single hyphens)"
        ))
    })
}

/// One range of a split copy: which source version, which range of its block layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartRef {
    /// Source ETag the split was planned for; a range of another version is never staged.
    pub etag: String,
    /// Range number, from 0.
    pub index: u32,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListedObject {
    /// Key.
    pub key: String,
    /// Size.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Storage class.
    pub storage_class: Option<String>,
    /// Last-Modified (RFC 3339), when listed.
    pub last_modified: Option<String>,
}

/// Azure's limit on committed blocks per blob.
pub const MAX_BLOCKS: u64 = 50_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_container_name("my-container1").is_ok());
        for bad in ["ab", "Upper", "a--b", "-ab", "ab-", "under_score"] {
            assert!(validate_container_name(bad).is_err(), "{bad}");
        }
        assert!(validate_table_name("objects").is_ok());
        assert!(validate_table_name("t1x").is_ok());
        for bad in ["1abc", "ab", "has-dash"] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
        assert!(validate_queue_name("copy-objects").is_ok());
        assert!(validate_queue_name("Copy")
            .unwrap_err()
            .message()
            .contains("queue name"));
    }
}
