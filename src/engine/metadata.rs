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
/// Azure's limit on all metadata names and values together.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

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
}
