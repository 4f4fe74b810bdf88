//! The checkpoint row: what happened to one object, and the entity it is stored as.

use crate::azure::table::Entity;
use crate::model::{MovedBy, Verification};

use super::keys::{row_keys, Subject};

/// What happened to one object. The snake-case names are stored in the table and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// Copied and verified.
    Copied,
    /// Already at the target with the same ETag and size.
    NoTransferNeeded,
    /// Cannot be copied (archived class, invalid blob name).
    Unsupported,
    /// Left out on purpose (folder markers, outside the prefix).
    Excluded,
    /// Failed; the reason says why.
    Failed,
    /// The source is gone and the blob was deleted (mirror mode).
    Deleted,
    /// The source is gone; the blob was kept (additive mode) or never existed.
    SourceMissing,
}

impl Outcome {
    /// Stable name stored in the table and logs.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// One object's checkpoint row.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRecord {
    /// Source bucket.
    pub bucket: String,
    /// Source key.
    pub key: String,
    /// Target, as `account/container`.
    pub target: String,
    /// Blob name, when the key maps to one.
    pub blob: Option<String>,
    /// Last outcome.
    pub outcome: Outcome,
    /// Why, for anything but a copy.
    pub reason: Option<String>,
    /// Source ETag the outcome applies to.
    pub etag: Option<String>,
    /// Source size.
    pub size: Option<u64>,
    /// Source version id.
    pub version_id: Option<String>,
    /// Source Last-Modified (RFC 3339).
    pub last_modified: Option<String>,
    /// Digest of the source's content headers and user metadata the outcome applies to
    /// (`engine::metadata::attrs_digest`); `None` on rows written before it was kept.
    pub attrs: Option<String>,
    /// How the copy was verified.
    pub verified: Option<Verification>,
    /// Which path moved the bytes.
    pub path: Option<MovedBy>,
    /// Run that wrote it.
    pub run_id: Option<String>,
    /// Attempts that failed since the last success.
    pub failed_attempts: u32,
    /// Highest S3 event sequencer applied for this key.
    pub sequencer: Option<String>,
    /// Name of the last event applied.
    pub last_event: Option<String>,
    /// Time of the last event applied.
    pub event_time: Option<String>,
    /// When written (RFC 3339).
    pub updated_at: String,
}

impl ObjectRecord {
    /// A record with no outcome details yet.
    pub fn new(bucket: &str, key: &str, target: &str, outcome: Outcome) -> Self {
        ObjectRecord {
            bucket: bucket.into(),
            key: key.into(),
            target: target.into(),
            blob: None,
            outcome,
            reason: None,
            etag: None,
            size: None,
            version_id: None,
            last_modified: None,
            attrs: None,
            verified: None,
            path: None,
            run_id: None,
            failed_attempts: 0,
            sequencer: None,
            last_event: None,
            event_time: None,
            updated_at: now_rfc3339(),
        }
    }

    /// Records which source version the outcome applies to: its bytes (ETag, size), its
    /// time, and the digest of its headers and metadata.
    pub fn note_source(&mut self, head: &crate::aws::s3::ObjectHead, attrs: String) {
        self.etag = Some(head.etag.clone());
        self.size = Some(head.size);
        self.version_id = head.version_id.clone();
        self.last_modified = head.last_modified.clone();
        self.attrs = Some(attrs);
    }

    /// What the row is about: its blob, or its key when it maps to none.
    pub fn subject(&self) -> Subject<'_> {
        match &self.blob {
            Some(b) => Subject::Blob(b),
            None => Subject::Key(&self.key),
        }
    }

    pub(super) fn to_entity(&self) -> Entity {
        let (pk, rk) = row_keys(&self.bucket, self.subject(), &self.target);
        let mut e = Entity::new(pk, rk);
        e.set_str("Bucket", &self.bucket)
            .set_str("Key", &self.key)
            .set_str("Target", &self.target)
            .set_str("Outcome", self.outcome.as_str())
            .set_i64("FailedAttempts", self.failed_attempts as i64)
            .set_str("UpdatedAt", &self.updated_at);
        let opt = [
            ("Blob", &self.blob),
            ("Reason", &self.reason),
            ("ETag", &self.etag),
            ("VersionId", &self.version_id),
            ("LastModified", &self.last_modified),
            ("Attrs", &self.attrs),
            ("RunId", &self.run_id),
            ("Sequencer", &self.sequencer),
            ("LastEvent", &self.last_event),
            ("EventTime", &self.event_time),
        ];
        for (name, v) in opt {
            if let Some(v) = v {
                e.set_str(name, v);
            }
        }
        if let Some(s) = self.size {
            e.set_i64("Size", s as i64);
        }
        if let Some(v) = self.verified {
            e.set_str("Verified", v.as_str());
        }
        if let Some(p) = self.path {
            e.set_str("Path", p.as_str());
        }
        e
    }

    pub(super) fn from_entity(e: &Entity) -> Option<Self> {
        let s = |n: &str| e.get_str(n).map(str::to_string);
        Some(ObjectRecord {
            bucket: s("Bucket")?,
            key: s("Key")?,
            target: s("Target")?,
            blob: s("Blob"),
            outcome: Outcome::parse(e.get_str("Outcome")?)?,
            reason: s("Reason"),
            etag: s("ETag"),
            size: e.get_i64("Size").map(|v| v as u64),
            version_id: s("VersionId"),
            last_modified: s("LastModified"),
            attrs: s("Attrs"),
            // A name this build does not know reads as unknown, not as a broken row.
            verified: e.get_str("Verified").and_then(|v| v.parse().ok()),
            path: e.get_str("Path").and_then(|v| v.parse().ok()),
            run_id: s("RunId"),
            failed_attempts: e.get_i64("FailedAttempts").unwrap_or(0) as u32,
            sequencer: s("Sequencer"),
            last_event: s("LastEvent"),
            event_time: s("EventTime"),
            updated_at: s("UpdatedAt").unwrap_or_default(),
        })
    }
}

/// A record as read, with the ETag to write it back under.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The record.
    pub record: ObjectRecord,
    /// Table ETag for If-Match.
    pub etag: String,
    /// Found in the partition rows had before they were spread (decision 123): a write
    /// inserts the row in its own partition and removes this one.
    pub previous_layout: bool,
}

/// RFC 3339 now, UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_an_entity() {
        let mut r = ObjectRecord::new("b", "a/b c", "http://t/c", Outcome::Failed);
        r.reason = Some("checksum mismatch".into());
        r.size = Some(5 << 30);
        r.attrs = Some("v1:0123".into());
        r.failed_attempts = 2;
        let back = ObjectRecord::from_entity(&r.to_entity()).unwrap();
        assert_eq!(back, r);
    }
}
