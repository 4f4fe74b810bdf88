//! Turning S3 user metadata into Azure metadata, and our provenance entries.
//!
//! Azure metadata names must be C# identifiers; S3 names often are not (`x-amz-meta-foo-bar`,
//! `1st`). The policy follows azcopy: exclude (default), fail, or rename to
//! `rename_<sanitized>` with `rename_key_<sanitized>` holding the original name. Azurite
//! accepts names Azure rejects, so the check is ours.

use std::collections::HashMap;

use crate::aws::s3::ObjectHead;
use crate::config::MetadataPolicy;

/// Prefix of our provenance entries.
pub const PROVENANCE_PREFIX: &str = "s3sync_";

/// The metadata entry holding the whole object's CRC-64/NVME (S3 encoding) that was verified
/// when the blob was written.
pub const CRC64_KEY: &str = "s3sync_crc64nvme";
/// The metadata entry holding the digest of the source's content headers and user metadata
/// that the blob was written from (see [`attrs_digest`]).
pub const ATTRS_KEY: &str = "s3sync_attrs";
/// Azure's limit on all metadata names and values together.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// The version of [`attrs_digest`]'s input: a digest of another version reads as unknown, so
/// adding what it covers (tags, the tier) later re-checks each object once, by its blob.
const ATTRS_VERSION: &str = "v1";

/// A digest of what the engine writes besides the bytes, taken over the source's values as
/// read from S3 (its five content headers and its user metadata, names lower-cased), not
/// over what the metadata policy made of them: changing the policy re-copies nothing, and a
/// metadata-only change that keeps the ETag, the size and the Last-Modified second still
/// changes it. `v1:` and 32 hex digits.
pub fn attrs_digest(head: &ObjectHead) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    // Each part length-prefixed, so no value can pass for another's boundary.
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let c = &head.headers;
    for v in [
        &c.content_type,
        &c.content_encoding,
        &c.content_language,
        &c.content_disposition,
        &c.cache_control,
    ] {
        match v {
            Some(v) => {
                part(b"1");
                part(v.as_bytes());
            }
            None => part(b"0"),
        }
    }
    let mut meta: Vec<(String, &String)> = head.metadata.iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    meta.sort();
    for (k, v) in meta {
        part(k.as_bytes());
        part(v.as_bytes());
    }
    format!("{ATTRS_VERSION}:{}", hex::encode(&h.finalize()[..16]))
}

/// How a recorded digest compares with the source's now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrsMatch {
    /// The same headers and metadata.
    Same,
    /// Something differs.
    Differ,
    /// Nothing comparable was recorded (written before digests were, or by another version).
    Unknown,
}

/// Compares a recorded digest with the source's digest `now`.
pub fn compare_attrs(recorded: Option<&str>, now: &str) -> AttrsMatch {
    match recorded {
        Some(r) if r == now => AttrsMatch::Same,
        Some(r) if r.split(':').next() == now.split(':').next() => AttrsMatch::Differ,
        _ => AttrsMatch::Unknown,
    }
}

/// For a blob with no digest (written before digests were): whether its own content headers
/// and user metadata are what this version of the source would be written with, under
/// `policy`. Checked once per such blob; the checkpoint then keeps the digest.
pub fn written_like(
    headers: &crate::model::ContentHeaders,
    meta: &HashMap<String, String>,
    bucket: &str,
    key: &str,
    head: &ObjectHead,
    policy: MetadataPolicy,
) -> bool {
    let Ok(want) = map_metadata(bucket, key, head, policy) else {
        return false;
    };
    let user = |m: &HashMap<String, String>| -> HashMap<String, String> {
        m.iter()
            .filter(|(k, _)| !k.to_ascii_lowercase().starts_with(PROVENANCE_PREFIX))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    // An empty header and an absent one look alike on a blob (a listing gives `Some("")`).
    let set = |h: &crate::model::ContentHeaders| {
        [
            &h.content_type,
            &h.content_encoding,
            &h.content_language,
            &h.content_disposition,
            &h.cache_control,
        ]
        .map(|v| v.as_deref().filter(|v| !v.is_empty()).map(str::to_string))
    };
    set(headers) == set(&head.headers) && user(meta) == user(&want.values)
}

/// Metadata ready for the blob, plus what the policy did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MappedMetadata {
    /// Name -> value for the blob.
    pub values: HashMap<String, String>,
    /// Names dropped under `exclude`.
    pub excluded: Vec<String>,
    /// Names renamed under `rename`.
    pub renamed: Vec<String>,
}

/// Whether `name` is a C# identifier as Azure requires: a letter or `_` first, then
/// letters, digits or `_` (ASCII; Azure also rejects non-ASCII in headers).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

/// Values go out as HTTP headers: keep printable ASCII, percent-encode the rest.
fn header_safe(v: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(v.trim(), SET).to_string()
}

/// The source key as a metadata value that decodes back to exactly the key: like
/// [`header_safe`], but edge spaces are encoded instead of trimmed (a key `"a.txt "` must not
/// read back as `"a.txt"`, or its blob could never be matched for a delete).
fn key_safe(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    // Controls (tabs, newlines) are encoded; only spaces can remain at the edges.
    let enc = percent_encoding::utf8_percent_encode(key, SET).to_string();
    let body = enc.trim_matches(' ');
    let lead = enc.len() - enc.trim_start_matches(' ').len();
    let trail = enc.len() - lead - body.len();
    format!("{}{body}{}", "%20".repeat(lead), "%20".repeat(trail))
}

/// Applies `policy` to the object's user metadata and adds provenance. Errors name the first
/// offending entry (for `fail`) or the size overrun.
pub fn map_metadata(
    bucket: &str,
    key: &str,
    head: &ObjectHead,
    policy: MetadataPolicy,
) -> Result<MappedMetadata, String> {
    let mut out = MappedMetadata::default();
    let mut names: Vec<&String> = head.metadata.keys().collect();
    names.sort();
    for name in names {
        let value = header_safe(&head.metadata[name]);
        let lower = name.to_ascii_lowercase();
        if is_valid_name(&lower) && !lower.starts_with(PROVENANCE_PREFIX) {
            out.values.insert(lower, value);
            continue;
        }
        match policy {
            MetadataPolicy::Exclude => out.excluded.push(name.clone()),
            MetadataPolicy::Fail => return Err(format!("invalid metadata name `{name}` (policy: fail)")),
            MetadataPolicy::Rename => {
                let s = sanitize(&lower);
                out.values.insert(format!("rename_{s}"), value);
                out.values.insert(format!("rename_key_{s}"), header_safe(name));
                out.renamed.push(name.clone());
            }
        }
    }
    let p = |k: &str| format!("{PROVENANCE_PREFIX}{k}");
    out.values.insert(p("bucket"), bucket.to_string());
    out.values.insert(p("key"), key_safe(key));
    out.values.insert(p("etag"), head.etag.clone());
    out.values.insert(p("size"), head.size.to_string());
    if let Some(v) = &head.version_id {
        out.values.insert(p("version_id"), v.clone());
    }
    if let Some(v) = &head.last_modified {
        out.values.insert(p("last_modified"), v.clone());
    }
    out.values.insert(ATTRS_KEY.to_string(), attrs_digest(head));
    let total: usize = out.values.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_METADATA_BYTES {
        return Err(format!(
            "metadata is {total} bytes, more than Azure's {MAX_METADATA_BYTES}"
        ));
    }
    Ok(out)
}

/// The source key a blob was written for, when its provenance says this tool wrote it from
/// `bucket`. Deleting a blob on the strength of a missing source key is only right when the
/// blob was written for that very key (another prefix pair may map a different key to the
/// same name), so every delete asks this.
pub fn written_for(meta: &HashMap<String, String>, bucket: &str) -> Option<String> {
    if meta.get(&format!("{PROVENANCE_PREFIX}bucket")).map(String::as_str) != Some(bucket) {
        return None;
    }
    let enc = meta.get(&format!("{PROVENANCE_PREFIX}key"))?;
    Some(
        percent_encoding::percent_decode_str(enc)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The source Last-Modified recorded on a blob by an earlier copy.
pub fn provenance_modified(meta: &HashMap<String, String>) -> Option<&str> {
    meta.get(&format!("{PROVENANCE_PREFIX}last_modified"))
        .map(String::as_str)
}

/// The digest of the source's headers and metadata recorded on a blob by an earlier copy.
pub fn provenance_attrs(meta: &HashMap<String, String>) -> Option<&str> {
    meta.get(ATTRS_KEY).map(String::as_str)
}

/// The source ETag and size recorded on a blob by an earlier copy.
pub fn provenance(meta: &HashMap<String, String>) -> Option<(&str, u64)> {
    let etag = meta.get(&format!("{PROVENANCE_PREFIX}etag"))?;
    let size = meta.get(&format!("{PROVENANCE_PREFIX}size"))?.parse().ok()?;
    Some((etag, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(meta: &[(&str, &str)]) -> ObjectHead {
        ObjectHead {
            etag: "e".into(),
            size: 3,
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn identifiers() {
        for ok in ["a", "_x", "abc_123", "Author"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "1st", "foo-bar", "a.b", "ü"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn each_policy() {
        let h = head(&[("good", "1"), ("has-dash", "2"), ("9lives", "3")]);
        let m = map_metadata("b", "k", &h, MetadataPolicy::Exclude).unwrap();
        assert_eq!(m.values.get("good").map(String::as_str), Some("1"));
        assert_eq!(m.excluded, vec!["9lives".to_string(), "has-dash".to_string()]);
        assert!(!m.values.keys().any(|k| k.contains("dash")));

        let e = map_metadata("b", "k", &h, MetadataPolicy::Fail).unwrap_err();
        assert!(e.contains("`9lives`"), "{e}");

        let m = map_metadata("b", "k", &h, MetadataPolicy::Rename).unwrap();
        assert_eq!(m.values["rename_has_dash"], "2");
        assert_eq!(m.values["rename_key_has_dash"], "has-dash");
        assert_eq!(m.values["rename_9lives"], "3");
        assert_eq!(m.values["rename_key_9lives"], "9lives");
    }

    #[test]
    fn provenance_and_limits() {
        let h = head(&[]);
        let m = map_metadata("b", "dir/ü k", &h, MetadataPolicy::Exclude).unwrap();
        assert_eq!(provenance(&m.values), Some(("e", 3)));
        assert_eq!(m.values["s3sync_key"], "dir/%C3%BC k");
        assert_eq!(written_for(&m.values, "b").as_deref(), Some("dir/ü k"));
        assert_eq!(written_for(&m.values, "other"), None);
        for key in [" edge spaces.txt ", "\ttab", "   "] {
            let m = map_metadata("b", key, &h, MetadataPolicy::Exclude).unwrap();
            assert_eq!(written_for(&m.values, "b").as_deref(), Some(key));
            assert!(!m.values["s3sync_key"].starts_with(' ') && !m.values["s3sync_key"].ends_with(' '));
        }
        let big = "x".repeat(9000);
        let h = head(&[("big", big.as_str())]);
        assert!(map_metadata("b", "k", &h, MetadataPolicy::Exclude)
            .unwrap_err()
            .contains("8192"));
    }

    #[test]
    fn the_attrs_digest_sees_headers_and_metadata_not_the_policy() {
        let mut h = head(&[("a", "1")]);
        let d = attrs_digest(&h);
        assert!(d.starts_with("v1:") && d.len() == 3 + 32, "{d}");
        // Names are case-insensitive in S3; order does not matter.
        let mut upper = head(&[("A", "1")]);
        upper.metadata.insert("b".into(), "2".into());
        h.metadata.insert("b".into(), "2".into());
        assert_eq!(attrs_digest(&h), attrs_digest(&upper));
        // A metadata value, a header, or a header's absence changes it.
        let mut v = h.clone();
        v.metadata.insert("a".into(), "2".into());
        assert_ne!(attrs_digest(&v), attrs_digest(&h));
        let mut t = h.clone();
        t.headers.content_type = Some("text/plain".into());
        assert_ne!(attrs_digest(&t), attrs_digest(&h));
        let mut empty = h.clone();
        empty.headers.content_type = Some(String::new());
        assert_ne!(
            attrs_digest(&empty),
            attrs_digest(&h),
            "an empty header is not a missing one"
        );
        // Boundaries cannot be shifted between a name and its value.
        assert_ne!(attrs_digest(&head(&[("ab", "c")])), attrs_digest(&head(&[("a", "bc")])));
        // What the policy writes carries the digest of the source's values, whatever the policy.
        let odd = head(&[("has-dash", "x")]);
        let ex = map_metadata("b", "k", &odd, MetadataPolicy::Exclude).unwrap();
        let re = map_metadata("b", "k", &odd, MetadataPolicy::Rename).unwrap();
        assert_eq!(provenance_attrs(&ex.values), provenance_attrs(&re.values));
        assert_eq!(provenance_attrs(&ex.values), Some(attrs_digest(&odd).as_str()));
        assert_eq!(compare_attrs(Some(&d), &d), AttrsMatch::Same);
        assert_eq!(compare_attrs(Some("v1:00"), &d), AttrsMatch::Differ);
        assert_eq!(compare_attrs(None, &d), AttrsMatch::Unknown);
        assert_eq!(compare_attrs(Some("v0:00"), &d), AttrsMatch::Unknown);
    }

    #[test]
    fn a_blob_without_a_digest_is_judged_by_its_own_headers_and_metadata() {
        let h = head(&[("a", "1"), ("has-dash", "x")]);
        let written = map_metadata("b", "k", &h, MetadataPolicy::Exclude).unwrap().values;
        let mut legacy = written.clone();
        legacy.remove(ATTRS_KEY);
        assert!(written_like(&h.headers, &legacy, "b", "k", &h, MetadataPolicy::Exclude));
        let mut changed = h.clone();
        changed.metadata.insert("a".into(), "2".into());
        assert!(!written_like(
            &h.headers,
            &legacy,
            "b",
            "k",
            &changed,
            MetadataPolicy::Exclude
        ));
        let mut typed = h.clone();
        typed.headers.content_type = Some("text/plain".into());
        assert!(!written_like(
            &h.headers,
            &legacy,
            "b",
            "k",
            &typed,
            MetadataPolicy::Exclude
        ));
        // A blob listed with empty elements for headers never set holds what S3 says is absent.
        let listed = crate::model::ContentHeaders {
            content_type: h.headers.content_type.clone(),
            content_encoding: Some(String::new()),
            cache_control: Some(String::new()),
            ..Default::default()
        };
        assert!(written_like(&listed, &legacy, "b", "k", &h, MetadataPolicy::Exclude));
    }
}
