//! S3 object tags on the blob (`SYNC_TAGS`): as blob index tags written with the commit
//! (`x-ms-tags`), or as one metadata entry.
//!
//! Azure holds at most 10 index tags per blob, keys of 1–128 and values of 0–256 characters,
//! each from letters, digits, space and `+ - . / : = _`. S3 allows 10 tags too, but keys up to
//! 128 and values up to 256 Unicode characters from a wider set. A tag Azure cannot hold is
//! dropped and recorded, or fails the object under `SYNC_METADATA_POLICY=fail`; writing a
//! tag under another name (the metadata policy's `rename`) would take two of the ten places,
//! so for tags `rename` drops as `exclude` does.

use crate::azure::blob::tags_header;
use crate::config::{MetadataPolicy, TagsMode};

/// The metadata entry holding the tag set in `metadata` mode.
pub const TAGS_KEY: &str = "s3sync_tags";
/// The most index tags a blob holds.
pub const MAX_TAGS: usize = 10;

/// What a commit writes of the tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedTags {
    /// The tags written as index tags, in `index` mode.
    pub index: Vec<(String, String)>,
    /// The metadata entry, in `metadata` mode: the `x-ms-tags` encoding of the whole set.
    pub metadata: Option<String>,
    /// Each tag left out, with why (recorded in the checkpoint row's reason).
    pub dropped: Vec<String>,
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '+' | '-' | '.' | '/' | ':' | '=' | '_')
}

/// Why Azure cannot hold this tag as an index tag, if it cannot.
fn refusal(key: &str, value: &str) -> Option<String> {
    let (k, v) = (key.chars().count(), value.chars().count());
    if k == 0 || k > 128 {
        return Some(format!("tag `{key}`: a key of {k} characters (Azure takes 1 to 128)"));
    }
    if v > 256 {
        return Some(format!(
            "tag `{key}`: a value of {v} characters (Azure takes up to 256)"
        ));
    }
    if let Some(c) = key.chars().chain(value.chars()).find(|c| !allowed(*c)) {
        return Some(format!(
            "tag `{key}`: `{c}` is not allowed (Azure takes letters, digits, space and + - . / : = _)"
        ));
    }
    None
}

/// Maps an object's tags for `mode` under `policy`; `Err` is the policy's refusal, naming
/// the tag.
pub fn map_tags(
    tags: &[(String, String)],
    mode: TagsMode,
    policy: MetadataPolicy,
) -> std::result::Result<MappedTags, String> {
    let mut out = MappedTags::default();
    if tags.is_empty() || mode == TagsMode::Drop {
        return Ok(out);
    }
    if mode == TagsMode::Metadata {
        // Metadata values are ASCII: the encoding keeps every tag whole.
        out.metadata = Some(tags_header(tags));
        return Ok(out);
    }
    let mut kept = Vec::new();
    for (k, v) in tags {
        let why =
            refusal(k, v).or_else(|| (kept.len() == MAX_TAGS).then(|| format!("tag `{k}`: more than {MAX_TAGS} tags")));
        match why {
            None => kept.push((k.clone(), v.clone())),
            Some(why) if policy == MetadataPolicy::Fail => {
                return Err(format!("failed: {why} (SYNC_METADATA_POLICY=fail)"))
            }
            Some(why) => out.dropped.push(why),
        }
    }
    out.index = kept;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn index_tags_are_encoded_so_no_value_passes_for_a_separator() {
        let m = map_tags(
            &t(&[("team", "data"), ("cost center", "a/b+c=d e")]),
            TagsMode::Index,
            MetadataPolicy::Exclude,
        )
        .unwrap();
        let header = tags_header(&m.index);
        assert_eq!(header, "team=data&cost%20center=a%2Fb%2Bc%3Dd%20e");
        assert!(m.dropped.is_empty() && m.metadata.is_none());
        // Decoded back, the pairs are the same.
        let back: Vec<(String, String)> = header
            .split('&')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                let d = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .unwrap()
                        .into_owned()
                };
                (d(k), d(v))
            })
            .collect();
        assert_eq!(back, t(&[("team", "data"), ("cost center", "a/b+c=d e")]));
    }

    #[test]
    fn what_azure_cannot_hold_is_dropped_with_its_reason_or_fails_the_object() {
        let long_key = "k".repeat(129);
        let long_value = "v".repeat(257);
        let mut tags = t(&[("ok", "1"), ("café", "x"), ("", "empty key"), ("v", "ünïcode")]);
        tags.push((long_key.clone(), "x".into()));
        tags.push(("long".into(), long_value));
        for i in 0..12 {
            tags.push((format!("n{i}"), i.to_string()));
        }
        for policy in [MetadataPolicy::Exclude, MetadataPolicy::Rename] {
            let m = map_tags(&tags, TagsMode::Index, policy).unwrap();
            let kept = tags_header(&m.index);
            assert_eq!(kept.split('&').count(), MAX_TAGS, "{kept}");
            assert!(kept.starts_with("ok=1&n0=0"), "{kept}");
            let dropped = m.dropped.join("\n");
            for why in [
                "`café`: `é`",
                "a key of 0 characters",
                "`v`: `ü`",
                "a key of 129",
                "a value of 257",
                "`n9`: more than 10",
            ] {
                assert!(dropped.contains(why), "{why} not in {dropped}");
            }
        }
        let e = map_tags(&tags, TagsMode::Index, MetadataPolicy::Fail).unwrap_err();
        assert!(
            e.contains("tag `café`") && e.contains("SYNC_METADATA_POLICY=fail"),
            "{e}"
        );
    }

    #[test]
    fn metadata_mode_keeps_every_tag_and_drop_reads_none() {
        let tags = t(&[("café", "ü"), ("a", "b")]);
        let m = map_tags(&tags, TagsMode::Metadata, MetadataPolicy::Fail).unwrap();
        assert_eq!(m.metadata.as_deref(), Some("caf%C3%A9=%C3%BC&a=b"));
        assert!(m.index.is_empty() && m.dropped.is_empty());
        assert_eq!(
            map_tags(&tags, TagsMode::Drop, MetadataPolicy::Fail).unwrap(),
            MappedTags::default()
        );
        assert_eq!(
            map_tags(&[], TagsMode::Index, MetadataPolicy::Fail).unwrap(),
            MappedTags::default()
        );
    }
}
