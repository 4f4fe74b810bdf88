//! Plain types every layer shares: the copy mode, the content headers an object carries
//! from S3 to Blob, and the naming rules of Azure containers, tables and queues (checked
//! where configuration and requests are read, before any client is built).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What to do when the source object is gone. Named `additive` and `mirror` in settings,
/// run bodies and queue messages.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SyncMode {
    /// Never delete from the target.
    #[default]
    Additive,
    /// Delete the blob when the source is gone.
    Mirror,
}

/// Which path moved an object's bytes, as stored in its checkpoint row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumString, strum::IntoStaticStr)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum MovedBy {
    /// Azure read the source itself (Put Blob / Put Block From URL).
    ServerSide,
    /// The bytes went through this process (GET, then Put Blob or Put Block).
    Streamed,
}

/// How a copy was shown to hold the source's bytes, as stored in its checkpoint row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumString, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Verification {
    /// S3's full-object CRC-64/NVME matched the CRC of what was written.
    Crc64nvme,
    /// S3's MD5 (a single-part ETag) matched the MD5 of what was written.
    Md5,
    /// Neither checksum exists at the source (a multipart ETag without a CRC): only the size.
    Size,
    /// Nothing was written: the blob's provenance says it already holds this version.
    Provenance,
}

impl MovedBy {
    /// The stored and logged name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Verification {
    /// The stored and logged name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Parses a setting or field that names one of an enum's variants; the refusal lists them.
pub fn parse_choice<T>(s: &str) -> std::result::Result<T, String>
where
    T: std::str::FromStr + strum::VariantNames,
{
    s.parse()
        .map_err(|_| format!("`{s}` is not one of {}", T::VARIANTS.join(", ")))
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

/// Checks an S3 bucket name: 3-63 lower-case letters, digits, `.` and `-`, starting and
/// ending with a letter or digit. The one copy of the rule (CLI URLs and run bodies alike).
pub fn validate_bucket_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{name}` is not a valid S3 bucket name (3-63 lower-case letters, digits, `.` or `-`, \
             starting and ending with a letter or digit)"
        )))
    }
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumString, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Trigger {
    /// `POST /api/runs` (a Logic App, an operator).
    Http,
    /// The `ScheduledRun` timer.
    Schedule,
    /// `s3-blob-sync copy` or `sync`.
    Cli,
}

/// Where a run's completion webhook stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::EnumString, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
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

impl Trigger {
    /// The stored and reported name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl NotifyState {
    /// The stored and reported name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Azure's limit on committed blocks per blob.
pub const MAX_BLOCKS: u64 = 50_000;

/// A source prefix of a bucket mapped onto a target prefix of a container: the key
/// `source_prefix + rest` becomes the blob `target_prefix + rest`. What a verify compared, and
/// what the cutover gate is asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// Bucket.
    pub bucket: String,
    /// Key prefix.
    pub source_prefix: String,
    /// Container.
    pub container: String,
    /// Blob name prefix.
    pub target_prefix: String,
}

impl Scope {
    /// Whether every key `other` maps is mapped by `self` too, onto the same blob name: `self`
    /// is (p′ → t′) and `other` is (p → t) with p = p′ + r and t = t′ + r.
    pub fn covers(&self, other: &Scope) -> bool {
        self.bucket == other.bucket
            && self.container == other.container
            && other
                .source_prefix
                .strip_prefix(self.source_prefix.as_str())
                .is_some_and(|rest| {
                    other.target_prefix.len() == self.target_prefix.len() + rest.len()
                        && other.target_prefix.starts_with(self.target_prefix.as_str())
                        && other.target_prefix.ends_with(rest)
                })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s3://{}/{} -> {}/{}",
            self.bucket, self.source_prefix, self.container, self.target_prefix
        )
    }
}

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
            assert_eq!(t.as_str().parse::<Trigger>().ok(), Some(t));
        }
        assert_eq!(NotifyState::Sending.as_str(), "sending");
        assert_eq!("sent".parse::<NotifyState>().ok(), Some(NotifyState::Sent));
        assert!("sending@2026-01-01T00:00:00Z".parse::<NotifyState>().is_err());
        assert_eq!(Trigger::Schedule.to_string(), "schedule");
    }

    /// An enum that is both stored in a table (by strum) and sent as JSON (by serde) has one
    /// name in both.
    #[test]
    fn table_and_json_names_agree() {
        fn same<T: Serialize + Copy + Into<&'static str>>(all: &[T]) {
            for v in all {
                let json = serde_json::to_value(v).unwrap();
                let name: &'static str = (*v).into();
                assert_eq!(json.as_str(), Some(name));
            }
        }
        same(&[SyncMode::Additive, SyncMode::Mirror]);
        same(&[MovedBy::ServerSide, MovedBy::Streamed]);
        same(&[
            Verification::Crc64nvme,
            Verification::Md5,
            Verification::Size,
            Verification::Provenance,
        ]);
        same(&[Trigger::Http, Trigger::Schedule, Trigger::Cli]);
        same(&[
            NotifyState::None,
            NotifyState::Pending,
            NotifyState::Sending,
            NotifyState::Sent,
            NotifyState::Failed,
        ]);
        assert_eq!(
            parse_choice::<SyncMode>("sideways").unwrap_err(),
            "`sideways` is not one of additive, mirror"
        );
    }

    #[test]
    fn a_scope_covers_the_scopes_it_maps_the_same_way() {
        let s = |b: &str, p: &str, c: &str, t: &str| Scope {
            bucket: b.into(),
            source_prefix: p.into(),
            container: c.into(),
            target_prefix: t.into(),
        };
        let whole = s("b", "", "c", "");
        assert!(whole.covers(&whole));
        assert!(whole.covers(&s("b", "tmp/", "c", "tmp/")));
        // The same keys onto other names, another bucket or container: not covered.
        assert!(!whole.covers(&s("b", "tmp/", "c", "")));
        assert!(!whole.covers(&s("b", "tmp/", "c", "x/tmp/")));
        assert!(!whole.covers(&s("other", "", "c", "")));
        assert!(!whole.covers(&s("b", "", "d", "")));
        // A narrow verify never covers the whole bucket.
        assert!(!s("b", "tmp/", "c", "tmp/").covers(&whole));
        let mapped = s("b", "in/", "c", "out/");
        assert!(mapped.covers(&s("b", "in/2024/", "c", "out/2024/")));
        assert!(!mapped.covers(&s("b", "in/2024/", "c", "in/2024/")));
        assert!(!mapped.covers(&s("b", "", "c", "out/")));
        // Prefixes are strings, not folders.
        assert!(s("b", "a", "c", "x").covers(&s("b", "ab", "c", "xb")));
    }
}
