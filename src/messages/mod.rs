//! The queue messages, one type each, shared by every producer and consumer: a
//! `copy-objects` message moves one object (from a listing, an S3 event or a split), a
//! `list-pages` message lists one page of a bulk run or checks whether it has settled.
//! Parsing is strict about what it needs and tolerant of fields it does not know.

pub mod run_spec;
pub mod webhook;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::model::{PartRef, SyncMode, MAX_BLOCKS};

/// A `copy-objects` message. Unknown fields are ignored so newer producers can add some.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyMessage {
    /// Source bucket.
    pub bucket: String,
    /// Source key (not URL-encoded).
    pub key: String,
    /// Target container; defaults to `SYNC_TARGET_CONTAINER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Defaults to `SYNC_SOURCE_PREFIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix: Option<String>,
    /// Defaults to `SYNC_TARGET_PREFIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_prefix: Option<String>,
    /// The run this belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `additive` or `mirror`; defaults to `SYNC_MODE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SyncMode>,
    /// The S3 event name, for relayed notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The event's sequencer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
    /// The event's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Look at the blob even when the checkpoint says it is current (`verify` repairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<bool>,
    /// One range of an object split across invocations (`{"etag":…,"index":…}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartRef>,
    /// The object's ETag in the listing or event that produced this message (the SQS relay
    /// writes it as S3 events do, `eTag`).
    #[serde(default, alias = "eTag", skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Its size there. With `etag`, a small object is read with one GET instead of HEAD + GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Its Last-Modified there (RFC 3339, whole seconds): with `etag` and `size`, what says
    /// the checkpoint is current (a metadata-only change keeps the ETag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// The lister found no checkpoint row for the key (see `CopyRequest::fresh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<bool>,
    /// A run's copy of an object split into ranges: how many times it has looked again for
    /// the blob to land (decisions 99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits: Option<u32>,
}

impl CopyMessage {
    /// The message as queued.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a copy message is plain data")
    }

    /// Parses and validates a message; errors say what to fix.
    pub fn parse(text: &str) -> Result<CopyMessage, Error> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("copy-objects message is not JSON: {e}")))?;
        let m: CopyMessage = serde_path_to_error::deserialize(v).map_err(|e| {
            // The path names the field a type error is about (`bucket`, `part.index`).
            let path = e.path().to_string();
            let at = if path.is_empty() || path == "." {
                String::new()
            } else {
                format!("`{path}`: ")
            };
            Error::invalid(format!(
                "copy-objects message: {at}{} (expected {{\"bucket\":…,\"key\":…}})",
                e.inner()
            ))
        })?;
        if m.bucket.trim().is_empty() {
            return Err(Error::invalid("copy-objects message: `bucket` is empty"));
        }
        if m.key.is_empty() {
            return Err(Error::invalid("copy-objects message: `key` is empty"));
        }
        if m.key.len() > 1024 {
            return Err(Error::invalid(format!(
                "copy-objects message: `key` is {} bytes; S3 keys are at most 1024",
                m.key.len()
            )));
        }
        if let Some(p) = &m.part {
            if p.etag.is_empty() || u64::from(p.index) >= MAX_BLOCKS {
                return Err(Error::invalid(format!(
                    "copy-objects message: `part` needs a source `etag` and an `index` below {}",
                    MAX_BLOCKS
                )));
            }
        }
        Ok(m)
    }
}

/// A `list-pages` message: list one page, or check whether a run has finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ListMessage {
    /// List page `page` (0-based) of listing shard `shard` of run `run_id`.
    #[serde(rename_all = "camelCase")]
    Page {
        /// Run.
        run_id: String,
        /// Listing shard (0, and left out, for the first: a message of a run with no shards).
        #[serde(default, skip_serializing_if = "is_zero")]
        shard: u32,
        /// Page number.
        page: u64,
    },
    /// Compare the next slice of verify run `run_id`, from where its last slice stopped.
    #[serde(rename_all = "camelCase")]
    Verify {
        /// Run.
        run_id: String,
    },
    /// See whether the run has settled; finish it (prune, notify) when it has.
    #[serde(rename_all = "camelCase")]
    Check {
        /// Run.
        run_id: String,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ListMessage {
    /// Parses a `list-pages` message; errors say what to fix.
    pub fn parse(text: &str) -> Result<ListMessage, Error> {
        serde_json::from_str(text).map_err(|e| {
        Error::invalid(format!(
            "list-pages message: {e} (expected {{\"kind\":\"page\",\"runId\":…,\"page\":0}} or {{\"kind\":\"check\",\"runId\":…}})"
        ))
    })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_message_of_a_run_without_shards_is_shard_zero() {
        let old = r#"{"kind":"page","runId":"r1","page":3}"#;
        let m = ListMessage::parse(old).unwrap();
        assert_eq!(
            m,
            ListMessage::Page {
                run_id: "r1".into(),
                shard: 0,
                page: 3
            }
        );
        // Shard 0's messages read as before, for hosts of the previous version mid-rollout.
        assert_eq!(serde_json::to_string(&m).unwrap(), old);
        let m = ListMessage::parse(r#"{"kind":"page","runId":"r1","shard":12,"page":0}"#).unwrap();
        assert!(matches!(m, ListMessage::Page { shard: 12, page: 0, .. }));
        let e = ListMessage::parse(r#"{"kind":"page","runId":"r1","shard":-1,"page":0}"#).unwrap_err();
        assert!(e.message().contains("list-pages message"), "{e}");
    }

    #[test]
    fn messages() {
        let m = CopyMessage::parse(r#"{"bucket":"b","key":"a b","future":1}"#).unwrap();
        assert_eq!(m.key, "a b");
        let m = CopyMessage::parse(r#"{"bucket":"b","key":"k","eTag":"abc","size":3,"part":{"etag":"e","index":2}}"#)
            .unwrap();
        assert_eq!(
            (m.etag.as_deref(), m.size),
            (Some("abc"), Some(3)),
            "the relay's eTag is read"
        );
        assert_eq!(m.part.map(|p| p.index), Some(2));
        for (bad, needle) in [
            ("not json", "not JSON"),
            (r#"{"key":"k"}"#, "missing field `bucket`"),
            (r#"{"bucket":"","key":"k"}"#, "`bucket` is empty"),
            (r#"{"bucket":"b","key":""}"#, "`key` is empty"),
            (r#"{"bucket":"b","key":"k","mode":"sideways"}"#, "`mode`"),
            (r#"[1,2]"#, "expected"),
            (r#"{"bucket":"b","key":"k","part":{"etag":"","index":1}}"#, "`part`"),
            (
                r#"{"bucket":"b","key":"k","part":{"etag":"e","index":50000}}"#,
                "`part`",
            ),
            (r#"{"bucket":"b","key":"k","part":{"index":1}}"#, "missing field `etag`"),
        ] {
            let e = CopyMessage::parse(bad).unwrap_err();
            assert!(e.message().contains(needle), "{bad}: {e}");
        }
    }
}
