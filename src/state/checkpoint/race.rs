//! Which version wins a row: what a writer that lost the race for its row does with the
//! row stored now (decisions 105).

use super::record::{ObjectRecord, Outcome};

/// What a writer that lost the race for a key's row does with the row now stored there
/// (another writer's, of the same key): the one rule for which version wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterLostRace {
    /// The stored row describes a strictly newer source version: a slow writer never
    /// regresses it.
    KeepNewer,
    /// The stored row records the copy of the very version this writer only found already
    /// there: its "no transfer" would hide how the copy was made and verified.
    KeepCopy,
    /// Last-Modified has one-second precision, and a removal has none: which of the two the
    /// blob reflects cannot be told from the rows, so the caller looks again (blob, then
    /// source) instead of guessing.
    LookAgain,
    /// This writer's row replaces the stored one.
    Overwrite,
}

pub(super) fn after_lost_race(stored: &ObjectRecord, ours: &ObjectRecord) -> AfterLostRace {
    if is_newer(stored, ours) {
        AfterLostRace::KeepNewer
    } else if copy_of_same_version(stored, ours) {
        AfterLostRace::KeepCopy
    } else if same_second_other_version(stored, ours) || content_vs_removal(stored, ours) {
        AfterLostRace::LookAgain
    } else {
        AfterLostRace::Overwrite
    }
}

/// Whether both rows claim content of different source versions modified in the same second:
/// other bytes, or the same bytes with other headers or metadata (a copy-in-place).
fn same_second_other_version(stored: &ObjectRecord, ours: &ObjectRecord) -> bool {
    let content = |r: &ObjectRecord| matches!(r.outcome, Outcome::Copied | Outcome::NoTransferNeeded);
    content(stored)
        && content(ours)
        && stored.last_modified.is_some()
        && stored.last_modified == ours.last_modified
        && (stored.etag != ours.etag || other_attrs(stored, ours))
}

/// Whether both rows know the source's headers and metadata, and they differ.
fn other_attrs(a: &ObjectRecord, b: &ObjectRecord) -> bool {
    matches!((&a.attrs, &b.attrs), (Some(x), Some(y)) if x != y)
}

/// Whether one row says the blob holds content and the other that it was removed (or the
/// source is gone): rows without a Last-Modified cannot be ordered against each other.
fn content_vs_removal(stored: &ObjectRecord, ours: &ObjectRecord) -> bool {
    let content = |r: &ObjectRecord| matches!(r.outcome, Outcome::Copied | Outcome::NoTransferNeeded);
    let removal = |r: &ObjectRecord| matches!(r.outcome, Outcome::Deleted | Outcome::SourceMissing);
    (content(stored) && removal(ours)) || (removal(stored) && content(ours))
}

/// Whether `stored` records the copy of the very version (and blob) that `ours` only finds
/// already there.
fn copy_of_same_version(stored: &ObjectRecord, ours: &ObjectRecord) -> bool {
    stored.outcome == Outcome::Copied
        && ours.outcome == Outcome::NoTransferNeeded
        && stored.etag.is_some()
        && stored.etag == ours.etag
        && stored.size == ours.size
        && stored.blob == ours.blob
        && stored.last_modified == ours.last_modified
        && !other_attrs(stored, ours)
}

/// Whether `stored` describes a strictly newer source version than `ours`.
fn is_newer(stored: &ObjectRecord, ours: &ObjectRecord) -> bool {
    match (&stored.last_modified, &ours.last_modified) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_by_last_modified() {
        let mut a = ObjectRecord::new("b", "k", "t", Outcome::Copied);
        let mut b = a.clone();
        a.last_modified = Some("2024-01-02T00:00:00Z".into());
        b.last_modified = Some("2024-01-01T00:00:00Z".into());
        assert!(is_newer(&a, &b));
        assert!(!is_newer(&b, &a));
    }

    /// A row of `outcome` for source version `etag` modified at second `lm` (of one minute)
    /// with attribute digest `attrs`, written to blob `k`.
    fn row(outcome: Outcome, etag: Option<&str>, lm: Option<u8>, attrs: Option<&str>) -> ObjectRecord {
        let mut r = ObjectRecord::new("b", "k", "t", outcome);
        r.blob = Some("k".into());
        r.etag = etag.map(Into::into);
        r.size = etag.map(|_| 5);
        r.last_modified = lm.map(|s| format!("2026-12-07T10:00:{s:02}Z"));
        r.attrs = attrs.map(Into::into);
        r
    }

    #[test]
    fn which_version_wins_a_lost_race_for_a_row() {
        use AfterLostRace::*;
        use Outcome::*;
        let copied = |e, lm, a| row(Copied, Some(e), Some(lm), Some(a));
        let found = |e, lm, a| row(NoTransferNeeded, Some(e), Some(lm), Some(a));
        let cases: Vec<(&str, ObjectRecord, ObjectRecord, AfterLostRace)> = vec![
            (
                "a newer copy stays",
                copied("e2", 2, "a"),
                copied("e1", 1, "a"),
                KeepNewer,
            ),
            (
                "a newer failure stays too",
                row(Failed, Some("e2"), Some(2), None),
                copied("e1", 1, "a"),
                KeepNewer,
            ),
            (
                "an older copy is replaced",
                copied("e1", 1, "a"),
                copied("e2", 2, "a"),
                Overwrite,
            ),
            (
                "the copy of this version stays",
                copied("e1", 1, "a"),
                found("e1", 1, "a"),
                KeepCopy,
            ),
            (
                "a copy of the same version is rewritten",
                copied("e1", 1, "a"),
                copied("e1", 1, "a"),
                Overwrite,
            ),
            (
                "a find replaces a find",
                found("e1", 1, "a"),
                found("e1", 1, "a"),
                Overwrite,
            ),
            (
                "a copy replaces a find",
                found("e1", 1, "a"),
                copied("e1", 1, "a"),
                Overwrite,
            ),
            (
                "other bytes, same second",
                copied("e1", 1, "a"),
                copied("e2", 1, "a"),
                LookAgain,
            ),
            (
                "other headers, same second",
                copied("e1", 1, "a"),
                copied("e1", 1, "b"),
                LookAgain,
            ),
            (
                "a find of other headers is not the copy",
                copied("e1", 1, "a"),
                found("e1", 1, "b"),
                LookAgain,
            ),
            (
                "a row without a digest: the bytes decide",
                row(Copied, Some("e1"), Some(1), None),
                found("e1", 1, "b"),
                KeepCopy,
            ),
            (
                "another blob's copy is not this find",
                {
                    let mut r = copied("e1", 1, "a");
                    r.blob = Some("x/k".into());
                    r
                },
                found("e1", 1, "a"),
                Overwrite,
            ),
            (
                "a removal after content",
                copied("e1", 1, "a"),
                row(Deleted, None, None, None),
                LookAgain,
            ),
            (
                "content after a removal",
                row(Deleted, None, None, None),
                copied("e1", 1, "a"),
                LookAgain,
            ),
            (
                "content after a vanished source",
                row(SourceMissing, None, None, None),
                found("e1", 1, "a"),
                LookAgain,
            ),
            (
                "a removal replaces a removal",
                row(SourceMissing, None, None, None),
                row(Deleted, None, None, None),
                Overwrite,
            ),
            (
                "a copy replaces a failure of its second",
                row(Failed, Some("e1"), Some(1), None),
                copied("e1", 1, "a"),
                Overwrite,
            ),
            (
                "a failure after a copy of its second",
                copied("e1", 1, "a"),
                row(Failed, Some("e1"), Some(1), None),
                Overwrite,
            ),
        ];
        for (what, stored, ours, want) in cases {
            assert_eq!(after_lost_race(&stored, &ours), want, "{what}");
        }
    }

    #[test]
    fn a_metadata_change_in_the_same_second_is_another_version() {
        let mut stored = ObjectRecord::new("b", "k", "t", Outcome::Copied);
        stored.etag = Some("e".into());
        stored.last_modified = Some("2026-12-07T10:00:00Z".into());
        stored.attrs = Some("v1:aa".into());
        let mut ours = stored.clone();
        assert!(!same_second_other_version(&stored, &ours));
        ours.attrs = Some("v1:bb".into());
        assert!(same_second_other_version(&stored, &ours));
        // A twin that found the blob holding a copy of other headers is not that copy.
        ours.outcome = Outcome::NoTransferNeeded;
        assert!(!copy_of_same_version(&stored, &ours));
        // A row written before digests were kept cannot tell: the bytes decide, as before.
        ours.attrs = None;
        assert!(copy_of_same_version(&stored, &ours));
        assert!(!same_second_other_version(&stored, &ours));
    }
}
