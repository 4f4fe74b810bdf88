//! Where a row lives: its partition (bucket, target and a hash of the row key) and its row key
//! (the blob, or a key with no blob), and the keys of the previous forms.

use sha2::{Digest, Sha256};

/// Longest RowKey written in the ordered form ("n" + hex); longer names are hashed.
const MAX_ORDERED_ROW_KEY: usize = 1001;

/// What a checkpoint row is about: the blob a key is copied to, or, for a key that maps to no
/// blob (a folder marker, a name Azure cannot hold, a key outside the prefix), the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A blob name.
    Blob(&'a str),
    /// A source key with no blob.
    Key(&'a str),
}

/// A plain name is a blob's.
impl<'a> From<&'a str> for Subject<'a> {
    fn from(blob: &'a str) -> Self {
        Subject::Blob(blob)
    }
}

impl<'a> From<&'a String> for Subject<'a> {
    fn from(blob: &'a String) -> Self {
        Subject::Blob(blob)
    }
}

/// Checkpoint partitions per bucket and target (decision 123).
pub const PARTITIONS: u8 = 16;

/// The partition every row of `bucket` copied to `target` had before rows were spread
/// (decision 123). Rows still there are read until they move; split plans (`~staging`) and
/// rows of the first form (by source key) keep it as their prefix.
pub fn target_partition(bucket: &str, target: &str) -> String {
    let h = Sha256::digest(target.as_bytes());
    format!("{bucket}~{}", hex::encode(&h[..6]))
}

/// PartitionKey of the row with RowKey `row_key` about `bucket` copied to `target`: one of
/// [`PARTITIONS`], by the row key's hash, so a bulk run's writes meet no single partition's
/// target (about 2,000 entities/s).
pub fn partition_key(bucket: &str, target: &str, row_key: &str) -> String {
    let h = Sha256::digest(row_key.as_bytes())[0] % PARTITIONS;
    partition_numbered(&target_partition(bucket, target), h)
}

/// Every partition rows of `bucket` copied to `target` are spread over, in order.
pub fn partitions(bucket: &str, target: &str) -> impl Iterator<Item = String> {
    let base = target_partition(bucket, target);
    (0..PARTITIONS).map(move |h| partition_numbered(&base, h))
}

/// Partition `h` of those under `base` (a [`target_partition`]).
fn partition_numbered(base: &str, h: u8) -> String {
    format!("{base}~{h:x}")
}

/// The [`target_partition`] a spread partition `pk` belongs to: where its rows were before.
pub(super) fn previous_partition(pk: &str) -> &str {
    pk.rsplit_once('~').map_or("", |(base, _)| base)
}

/// RowKey for a row's subject: ordered by blob name when short enough, hashed otherwise.
pub fn row_key<'a>(subject: impl Into<Subject<'a>>) -> String {
    match subject.into() {
        Subject::Blob(name) if 2 * name.len() < MAX_ORDERED_ROW_KEY => {
            format!("n{}", hex::encode(name.as_bytes()))
        }
        Subject::Blob(name) => format!("~n{}", hex::encode(Sha256::digest(name.as_bytes()))),
        Subject::Key(key) => format!("s{}", hex::encode(Sha256::digest(key.as_bytes()))),
    }
}

/// PartitionKey and RowKey of a row about `subject` for `bucket` copied to `target`.
pub fn row_keys<'a>(bucket: &str, subject: impl Into<Subject<'a>>, target: &str) -> (String, String) {
    let rk = row_key(subject);
    (partition_key(bucket, target, &rk), rk)
}

/// The RowKey of the previous form (by source key), read only to migrate it.
pub(super) fn legacy_row_key(key: &str) -> String {
    if 2 * key.len() < MAX_ORDERED_ROW_KEY {
        format!("k{}", hex::encode(key.as_bytes()))
    } else {
        format!("~{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::checkpoint::CheckpointStore;

    #[test]
    fn keys_are_table_safe_for_any_blob_name_or_key() {
        for name in [
            format!("{}/#?\\ü{}", "x".repeat(300), "\u{7}"),
            "x".repeat(1024),
            "a".into(),
        ] {
            for subject in [Subject::Blob(&name), Subject::Key(&name)] {
                let (pk, rk) = row_keys("my.bucket", subject, "http://h/acct/c");
                assert!(rk.len() <= 1024, "{}", rk.len());
                assert!(rk
                    .trim_start_matches(['~', 'n', 's'])
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit()));
                assert!(pk.starts_with("my.bucket~"));
                for k in [&pk, &rk] {
                    assert!(!k.contains(['/', '\\', '#', '?']) && !k.chars().any(char::is_control));
                }
                // Same name, other target: another partition; and under the previous one.
                assert!(!row_keys("my.bucket", subject, "http://h/acct/d")
                    .0
                    .starts_with(&pk[..pk.len() - 2]));
                assert_eq!(
                    pk.strip_suffix(&pk[pk.len() - 2..]),
                    Some(target_partition("my.bucket", "http://h/acct/c").as_str())
                );
                assert_eq!(
                    previous_partition(&pk),
                    target_partition("my.bucket", "http://h/acct/c")
                );
                assert!(partitions("my.bucket", "http://h/acct/c").any(|p| p == pk));
            }
            // A blob's row and a nameless key's row never meet, nor the previous form's.
            assert_ne!(row_key(Subject::Blob(&name)), row_key(Subject::Key(&name)));
            assert_ne!(row_key(Subject::Blob(&name)), legacy_row_key(&name));
        }
        assert!(row_key(&"x".repeat(1024)).starts_with("~n"));
        assert!(CheckpointStore::in_range_form(&"x".repeat(500)));
        // The previous form's hashed keys ("~" and a hex digit) sort apart from "~n".
        assert!(legacy_row_key(&"x".repeat(1024)).as_str() < "~g");
    }

    #[test]
    fn rows_spread_evenly_over_the_partitions() {
        // 16,000 names of one folder, as a bulk run writes them: each partition takes its
        // share within 10%, so none meets its target before the others.
        let mut per = std::collections::HashMap::new();
        for i in 0..16_000 {
            *per.entry(row_keys("b", format!("data/2024/{i:08}.json").as_str(), "t").0)
                .or_insert(0u32) += 1;
        }
        assert_eq!(per.len(), PARTITIONS as usize);
        assert!(per.values().all(|&n| (900..=1100).contains(&n)), "{per:?}");
        assert!(per
            .keys()
            .all(|pk| pk.starts_with(&format!("{}~", target_partition("b", "t")))));
    }

    #[test]
    fn ordered_row_keys_follow_s3_listing_order() {
        // S3 lists in UTF-8 byte order; the RowKeys must sort the same way as strings.
        let mut keys = vec![
            "a",
            "a/b",
            "a0",
            "a b",
            "Z",
            "é",
            "a\u{7f}",
            "ab",
            "",
            "\u{10000}",
            "\u{ffff}",
        ];
        keys.retain(|k| !k.is_empty());
        let mut by_bytes = keys.clone();
        by_bytes.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut by_row_key = keys.clone();
        by_row_key.sort_by_key(|k| row_key(*k));
        assert_eq!(by_bytes, by_row_key);
    }
}
