//! S3 event notifications as they arrive through SQS: strict typed parsing at the boundary,
//! tolerant of the new.
//!
//! Handles S3 event records (eventVersion 2.x), the `s3:TestEvent` S3 sends when a
//! notification is configured, and messages wrapped in an SNS envelope. Keys arrive
//! URL-encoded with `+` for a space: `+` becomes a space first, then percent-decoding.
//! Event names S3 adds in the future are kept as [`EventKind::Unknown`] (counted and
//! acknowledged by the caller), never an error.

use serde::{Deserialize, Deserializer};

/// What a record says happened, as far as syncing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `ObjectCreated:*`: a put, post, copy or multipart completion.
    Created,
    /// `ObjectRemoved:*` (including `DeleteMarkerCreated`) and `LifecycleExpiration:*`.
    Removed,
    /// `ObjectRestore:Completed`: an archived object became readable.
    Restored,
    /// `ObjectTagging:Put` and `ObjectTagging:Delete`: the object's tags changed, its bytes
    /// did not. Their sequencers are not compared with content events' (decisions 135).
    Tagged,
    /// Anything else (ACL, replication, future names): not a content change.
    Unknown,
}

impl EventKind {
    /// Classifies an S3 event name (with or without the `s3:` prefix).
    pub fn of(name: &str) -> Self {
        let n = name.strip_prefix("s3:").unwrap_or(name);
        if n.starts_with("ObjectCreated:") {
            EventKind::Created
        } else if n.starts_with("ObjectRemoved:") || n.starts_with("LifecycleExpiration:") {
            EventKind::Removed
        } else if n == "ObjectRestore:Completed" {
            EventKind::Restored
        } else if n == "ObjectTagging:Put" || n == "ObjectTagging:Delete" {
            EventKind::Tagged
        } else {
            EventKind::Unknown
        }
    }

    /// Whether the key should be looked at again.
    pub fn is_relevant(self) -> bool {
        self != EventKind::Unknown
    }
}

/// One S3 event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The event name as S3 sent it (e.g. `ObjectCreated:Put`).
    pub name: String,
    /// Its classification.
    pub kind: EventKind,
    /// Bucket.
    pub bucket: String,
    /// Decoded key.
    pub key: String,
    /// Size, for creations.
    pub size: Option<u64>,
    /// ETag, for creations.
    pub etag: Option<String>,
    /// Version id, on versioned buckets.
    pub version_id: Option<String>,
    /// S3's per-key ordering token (hex), when present.
    pub sequencer: Option<String>,
    /// When the event happened.
    pub event_time: Option<String>,
}

/// A parsed SQS message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// S3's configuration test message: acknowledge, nothing to do.
    TestEvent,
    /// Event records (possibly with unknown kinds among them).
    Records(Vec<EventRecord>),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Records")]
    records: Option<Vec<RawRecord>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRecord {
    event_version: Option<String>,
    event_source: Option<String>,
    event_name: String,
    event_time: Option<String>,
    s3: RawS3,
}

#[derive(Deserialize)]
struct RawS3 {
    bucket: RawBucket,
    object: RawObject,
}

#[derive(Deserialize)]
struct RawBucket {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    #[serde(deserialize_with = "decode_key")]
    key: String,
    size: Option<u64>,
    #[serde(rename = "eTag")]
    e_tag: Option<String>,
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// `+` means a space in S3 event keys; after that, percent-decoding (UTF-8).
fn decode_key<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    decode_event_key(&raw).map_err(serde::de::Error::custom)
}

/// Decodes an event key: `+` to space, then percent-decoding.
pub fn decode_event_key(raw: &str) -> Result<String, String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("object key `{raw}` does not decode to UTF-8"))
}

/// What is wrong with a body serde could not read, as a sentence for an operator: where,
/// and what kind of problem, without serde's quote of the input (which can be the whole body).
fn json_problem(body: &str, e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    // serde counts lines from 1 and columns from 1 (in bytes); the offset counts from 0.
    let at = body
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum::<usize>()
        + e.column().saturating_sub(1);
    match e.classify() {
        Category::Syntax => format!("body is not JSON (at byte {at}), so not an S3 event notification"),
        Category::Eof => format!(
            "body is not JSON (it ends at byte {} in the middle of a value), so not an S3 event notification",
            body.len()
        ),
        Category::Io => "body could not be read".into(),
        Category::Data => {
            // serde's own words name the field or type; the position is said once, and a
            // quoted value is cut short.
            let said = e.to_string();
            let said = said.split(" at line ").next().unwrap_or(&said);
            let mut end = said.len().min(200);
            while !said.is_char_boundary(end) {
                end -= 1;
            }
            let ell = if end < said.len() { "…" } else { "" };
            format!(
                "body is JSON but not an S3 event notification ({}{ell}, at byte {at})",
                &said[..end]
            )
        }
    }
}

/// Parses one SQS message body. The error says what is wrong, for the rejects queue.
pub fn parse(body: &str) -> Result<Notification, String> {
    // With the path, a type error names its field (`Records[0].s3.object.key`), not only the
    // type serde expected.
    let mut de = serde_json::Deserializer::from_str(body);
    let env: Envelope = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let said = json_problem(body, e.inner());
        if e.inner().classify() == serde_json::error::Category::Data && !path.is_empty() && path != "." {
            format!("{path}: {said}")
        } else {
            said
        }
    })?;
    de.end().map_err(|e| json_problem(body, &e))?;
    if env.kind.as_deref() == Some("Notification") {
        let inner = env.message.ok_or("SNS envelope without a Message")?;
        return parse(&inner).map_err(|e| format!("inside SNS envelope: {e}"));
    }
    if env.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Notification::TestEvent);
    }
    let Some(records) = env.records else {
        return Err("body has no Records (and is not an s3:TestEvent or SNS envelope)".into());
    };
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        if let Some(src) = &r.event_source {
            if src != "aws:s3" {
                return Err(format!("eventSource `{src}` is not aws:s3"));
            }
        }
        let version = r.event_version.as_deref().unwrap_or("2.0");
        if !version.starts_with("2.") {
            return Err(format!("eventVersion `{version}` is not 2.x"));
        }
        if r.s3.bucket.name.is_empty() || r.s3.object.key.is_empty() {
            return Err("record without a bucket name or object key".into());
        }
        out.push(EventRecord {
            kind: EventKind::of(&r.event_name),
            name: r.event_name,
            bucket: r.s3.bucket.name,
            key: r.s3.object.key,
            size: r.s3.object.size,
            etag: r
                .s3
                .object
                .e_tag
                .map(|e| e.trim_matches('"').to_string())
                .filter(|e| !e.is_empty()),
            version_id: r.s3.object.version_id.filter(|v| !v.is_empty()),
            sequencer: r.s3.object.sequencer.filter(|s| !s.is_empty()),
            event_time: r.event_time,
        });
    }
    Ok(Notification::Records(out))
}

/// Orders two sequencers of the same key, as S3's event-structure page says: the shorter one
/// is **right**-padded with zeros, then both compare lexicographically (case-insensitively,
/// since they are hex). `0055AED6DCD90281E5` is later than `0055AED6DCD90281E4A0`.
pub fn sequencer_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    let pad = |s: &str| {
        let mut p = s.to_ascii_uppercase();
        p.extend(std::iter::repeat_n('0', n - s.len()));
        p
    };
    pad(a).cmp(&pad(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn record(name: &str, key: &str, extra: &str) -> String {
        format!(
            r#"{{"Records":[{{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"{name}",
            "eventTime":"2026-01-01T00:00:00.000Z",
            "s3":{{"bucket":{{"name":"bkt"}},"object":{{"key":"{key}"{extra}}}}}}}]}}"#
        )
    }

    #[test]
    fn created_record_with_all_fields() {
        let body = record(
            "ObjectCreated:CompleteMultipartUpload",
            "dir/a+b%2Bc%C3%BC.txt",
            r#","size":12,"eTag":"abc-2","versionId":"v1","sequencer":"0055AED6DCD90281E5""#,
        );
        let Notification::Records(r) = parse(&body).unwrap() else {
            panic!()
        };
        assert_eq!(r[0].kind, EventKind::Created);
        assert_eq!(r[0].key, "dir/a b+cü.txt");
        assert_eq!((r[0].size, r[0].etag.as_deref()), (Some(12), Some("abc-2")));
        assert_eq!(r[0].sequencer.as_deref(), Some("0055AED6DCD90281E5"));
    }

    #[test]
    fn kinds_including_new_names() {
        assert_eq!(EventKind::of("ObjectRemoved:DeleteMarkerCreated"), EventKind::Removed);
        assert_eq!(EventKind::of("s3:ObjectRemoved:Delete"), EventKind::Removed);
        assert_eq!(EventKind::of("LifecycleExpiration:Delete"), EventKind::Removed);
        assert_eq!(EventKind::of("ObjectRestore:Completed"), EventKind::Restored);
        assert_eq!(EventKind::of("ObjectRestore:Post"), EventKind::Unknown);
        assert_eq!(EventKind::of("s3:ObjectTagging:Put"), EventKind::Tagged);
        assert_eq!(EventKind::of("ObjectTagging:Delete"), EventKind::Tagged);
        assert_eq!(EventKind::of("ObjectTagging:Other"), EventKind::Unknown);
        assert_eq!(EventKind::of("ObjectTeleported:Quantum"), EventKind::Unknown);
        let Notification::Records(r) = parse(&record("ObjectTeleported:Quantum", "k", "")).unwrap() else {
            panic!()
        };
        assert_eq!(r[0].kind, EventKind::Unknown);
    }

    #[test]
    fn test_event_and_sns_envelope() {
        let t = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00Z","Bucket":"bkt"}"#;
        assert_eq!(parse(t).unwrap(), Notification::TestEvent);
        let inner = record("ObjectCreated:Put", "x", "");
        let sns = serde_json::json!({"Type":"Notification","MessageId":"m","Message": inner}).to_string();
        let Notification::Records(r) = parse(&sns).unwrap() else {
            panic!()
        };
        assert_eq!(r[0].key, "x");
        let sns_test = serde_json::json!({"Type":"Notification","Message": t}).to_string();
        assert_eq!(parse(&sns_test).unwrap(), Notification::TestEvent);
    }

    #[test]
    fn malformed_bodies_say_why() {
        for (body, needle) in [
            ("not json", "not an S3 event notification"),
            ("{}", "no Records"),
            (
                r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#,
                "missing field `s3`",
            ),
            (&record("ObjectCreated:Put", "%FF%FE", ""), "does not decode to UTF-8"),
            (
                &record("ObjectCreated:Put", "", ""),
                "without a bucket name or object key",
            ),
            (
                &record("ObjectCreated:Put", "k", "").replace("2.1", "3.0"),
                "eventVersion `3.0`",
            ),
            (r#"{"Type":"Notification","Message":"oops"}"#, "inside SNS envelope"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn reject_reasons_read_as_sentences() {
        let e = parse("this is not json").unwrap_err();
        assert_eq!(e, "body is not JSON (at byte 1), so not an S3 event notification");
        let e = parse("{\n  \"Records\": [").unwrap_err();
        assert!(e.contains("ends at byte 16 in the middle of a value"), "{e}");
        let e = parse("{\"a\":1,\n\"b\": x}").unwrap_err();
        assert!(e.starts_with("body is not JSON (at byte 13)"), "{e}");
        let huge = format!("\"{}\"", "z".repeat(100_000));
        let e = parse(&huge).unwrap_err();
        assert!(
            e.starts_with("body is JSON but not an S3 event notification (invalid type: string"),
            "{e}"
        );
        assert!(e.len() < 300, "the body is not quoted whole: {} bytes", e.len());
    }

    #[test]
    fn sequencers_compare_right_padded() {
        assert_eq!(
            sequencer_cmp("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
            Ordering::Less
        );
        // The case from S3's page: the shorter, later sequencer wins after right-padding
        // (left-padding would call it older and drop the event).
        assert_eq!(
            sequencer_cmp("0055AED6DCD90281E5", "0055AED6DCD90281E4A0"),
            Ordering::Greater
        );
        assert_eq!(
            sequencer_cmp("0055AED6DCD90281E4A0", "0055AED6DCD90281E5"),
            Ordering::Less
        );
        assert_eq!(sequencer_cmp("FF", "0100"), Ordering::Greater);
        assert_eq!(sequencer_cmp("ff00", "FF"), Ordering::Equal);
        assert_eq!(sequencer_cmp("10", "F"), Ordering::Less);
        assert_eq!(sequencer_cmp("abc", "ABC"), Ordering::Equal);
    }
}
