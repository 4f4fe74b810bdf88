//! Plain types every layer shares: the copy mode, the content headers an object carries
//! from S3 to Blob, and the naming rules of Azure containers, tables and queues (checked
//! where configuration and requests are read, before any client is built).

use serde::{de::DeserializeOwned, Deserialize, Serialize};

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

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `POST /api/runs` (a Logic App, an operator).
    Http,
    /// The `ScheduledRun` timer.
    Schedule,
    /// `s3-blob-sync copy` or `sync`.
    Cli,
}

/// Where a run's completion webhook stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyState {
    /// The run has no webhook.
    #[default]
    None,
    /// To be sent once the run ends (again after a failure that may pass).
    Pending,
    /// Claimed by one sender (at the run's `notify_claimed_at`).
    Sending,
    /// Sent.
    Sent,
    /// Refused for good (a destination no longer allowed, a redirect, a 4xx).
    Failed,
}

/// The name serde gives a unit variant (its `rename_all` applied): how these enums are
/// written into table rows and status bodies.
pub fn variant_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|x| x.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The variant named `name` (see [`variant_name`]), if there is one.
pub fn from_variant_name<T: DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&variant_name(self))
    }
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

    #[test]
    fn enum_names_round_trip() {
        for t in [Trigger::Http, Trigger::Schedule, Trigger::Cli] {
            assert_eq!(from_variant_name::<Trigger>(&variant_name(&t)), Some(t));
        }
        assert_eq!(variant_name(&NotifyState::Sending), "sending");
        assert_eq!(from_variant_name::<NotifyState>("sent"), Some(NotifyState::Sent));
        assert_eq!(from_variant_name::<NotifyState>("sending@2026-01-01T00:00:00Z"), None);
        assert_eq!(Trigger::Schedule.to_string(), "schedule");
    }
}
