//! A verify run's rows: its place (`<id>` / `verify`), saved at the end of each slice with
//! the tallies up to there, and one report line per difference (`<id>~<nn>` / `o<hash>`,
//! the shape of a copy's marker, so the run report reads both).
//!
//! The place and the tallies are one row, written with If-Match: a slice that is replayed
//! (a redelivery, or two deliveries at once) starts from the same place with the same
//! tallies, and only the first to save goes on. So every object is counted once. Report
//! lines are written before the place that covers them, and are upserts, so a replay
//! rewrites the same rows.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::counting::key_rows;
use super::report::ReportOutcome;
use super::store::RunStore;
use crate::azure::table::Entity;
use crate::error::{Error, Result};

const PLACE_ROW: &str = "verify";

/// Where a verify run stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyPlace {
    /// The last source key compared (`None` before the first).
    pub source_after: Option<String>,
    /// The marker of the target listing page being read (`None`: its first page).
    pub blob_marker: Option<String>,
    /// In that page, every blob whose name is at most this (byte order) was judged.
    pub blob_through: Option<String>,
    /// The last name that page held: blobs written into it since push its tail into the next
    /// page, so the names up to `blob_through` are dropped until this one is listed again.
    pub blob_page_last: Option<String>,
    /// The tallies so far (the app's report without its list of differences).
    pub tallies: serde_json::Value,
    /// Source objects compared and counted whose blob was not listed yet (a few, whose names
    /// the target may list out of byte order): they wait on in the next slice.
    pub waiting: Vec<crate::model::ListedObject>,
    /// Slices done.
    pub slices: u64,
    /// Both listings were read to their end.
    pub done: bool,
    /// Table ETag for If-Match (`None` before the first save).
    pub etag: Option<String>,
}

impl VerifyPlace {
    /// The same place and tallies (whatever the ETag).
    fn same_as(&self, other: &VerifyPlace) -> bool {
        VerifyPlace {
            etag: None,
            ..self.clone()
        } == VerifyPlace {
            etag: None,
            ..other.clone()
        }
    }
}

/// One difference as a report line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// The report outcome (`missing`, `extra`, …).
    pub outcome: ReportOutcome,
    /// The source key, or the blob's name for a blob without one.
    pub name: String,
    /// Whether `name` is a blob's (an extra blob).
    pub blob: bool,
    /// What differs.
    pub reason: String,
}

impl RunStore {
    /// Verify run `id`'s place (`None` before its first slice saved one).
    pub async fn verify_place(&self, id: &str) -> Result<Option<VerifyPlace>> {
        let Some(e) = self.table.get(id, PLACE_ROW).await? else {
            return Ok(None);
        };
        let s = |n: &str| e.get_str(n).filter(|v| !v.is_empty()).map(str::to_string);
        let tallies = match e.get_str("Tallies") {
            Some(t) => serde_json::from_str(t)
                .map_err(|err| Error::internal(format!("run {id}: stored verify tallies unreadable: {err}")))?,
            None => serde_json::Value::Null,
        };
        let waiting = match e.get_str("Waiting") {
            Some(w) if !w.is_empty() => serde_json::from_str(w)
                .map_err(|err| Error::internal(format!("run {id}: stored verify waiting list unreadable: {err}")))?,
            _ => Vec::new(),
        };
        Ok(Some(VerifyPlace {
            waiting,
            source_after: s("SourceAfter"),
            blob_marker: s("BlobMarker"),
            blob_through: s("BlobThrough"),
            blob_page_last: s("BlobPageLast"),
            tallies,
            slices: e.get_i64("Slices").unwrap_or(0).max(0) as u64,
            done: e.get_str("Done") == Some("true"),
            etag: e.etag.clone(),
        }))
    }

    /// Saves `place` if the row is still the one it was read as (inserts the first).
    /// `Ok(false)`: another delivery of the slice saved first; this one stops.
    pub async fn save_verify_place(&self, id: &str, place: &mut VerifyPlace) -> Result<bool> {
        let mut e = Entity::new(id, PLACE_ROW);
        for (k, v) in [
            ("SourceAfter", &place.source_after),
            ("BlobMarker", &place.blob_marker),
            ("BlobThrough", &place.blob_through),
            ("BlobPageLast", &place.blob_page_last),
        ] {
            e.set_str(k, v.clone().unwrap_or_default());
        }
        e.set_str("Tallies", place.tallies.to_string())
            .set_str("Waiting", serde_json::to_string(&place.waiting).expect("plain data"))
            .set_i64("Slices", place.slices as i64)
            .set_str("Done", if place.done { "true" } else { "false" });
        let written = match &place.etag {
            Some(tag) => self.table.update(&e, Some(tag)).await,
            None => self.table.insert(&e).await,
        };
        match written {
            Ok(tag) => {
                place.etag = Some(tag);
                Ok(true)
            }
            // 412 on a changed row, 409 on a first row another delivery inserted; or our own
            // write, whose reply was lost and whose retry met it: then the row is ours.
            Err(err) if err.kind() == crate::error::ErrorKind::Precondition => match self.verify_place(id).await? {
                Some(now) if now.same_as(place) => {
                    place.etag = now.etag;
                    Ok(true)
                }
                _ => Ok(false),
            },
            Err(err) => Err(err),
        }
    }

    /// Writes `lines` as run `id`'s report lines: one transaction per partition and hundred,
    /// each an upsert, so writing them again changes nothing.
    pub async fn record_differences(&self, id: &str, lines: &[DiffLine]) -> Result<()> {
        let mut parts: HashMap<String, Vec<Entity>> = HashMap::new();
        for l in lines {
            let e = diff_row(id, l);
            parts.entry(e.partition_key.clone()).or_default().push(e);
        }
        for (pk, rows) in parts {
            // Two lines for one name in a batch would be refused: the later one stands.
            let mut by_row: HashMap<String, Entity> = HashMap::new();
            for e in rows {
                by_row.insert(e.row_key.clone(), e);
            }
            let rows: Vec<Entity> = by_row.into_values().collect();
            self.upsert_rows(id, &format!("report lines in {pk}"), &rows).await?;
        }
        Ok(())
    }
}

/// A difference's row: a source key's in its counter shard as a copy's marker would be; an
/// extra blob's by a hash that no key can have (a NUL is not in S3 keys' hashes' input).
fn diff_row(id: &str, l: &DiffLine) -> Entity {
    let (pk, hash) = if l.blob {
        let h = Sha256::digest(format!("\0blob\0{}", l.name).as_bytes());
        let (pk, _) = key_rows(id, &l.name);
        (pk, hex::encode(&h[..20]))
    } else {
        key_rows(id, &l.name)
    };
    let mut e = Entity::new(pk, format!("o{hash}"));
    e.set_str("Key", &l.name)
        .set_str("Tally", l.outcome.name())
        .set_str("Reason", super::counting::stored_reason(&l.reason));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_the_same_whatever_its_etag_and_not_when_anything_else_differs() {
        let a = VerifyPlace {
            source_after: Some("k".into()),
            tallies: serde_json::json!({"matched": 3}),
            slices: 2,
            etag: Some("W/1".into()),
            ..Default::default()
        };
        let b = VerifyPlace {
            etag: Some("W/2".into()),
            ..a.clone()
        };
        assert!(a.same_as(&b));
        assert!(!a.same_as(&VerifyPlace { slices: 3, ..b.clone() }));
        assert!(!a.same_as(&VerifyPlace {
            tallies: serde_json::json!({"matched": 4}),
            ..b
        }));
    }

    #[test]
    fn an_extra_blob_and_a_key_of_the_same_name_have_rows_of_their_own() {
        let line = |blob| DiffLine {
            outcome: ReportOutcome::Missing,
            name: "a/b".into(),
            blob,
            reason: "r".into(),
        };
        let (k, b) = (diff_row("r1", &line(false)), diff_row("r1", &line(true)));
        assert_eq!(k.partition_key, b.partition_key);
        assert_ne!(k.row_key, b.row_key);
        assert_eq!(
            diff_row("r1", &line(false)).row_key,
            k.row_key,
            "the same line, the same row"
        );
        assert!(k.partition_key.starts_with("r1~"), "{}", k.partition_key);
    }
}
