//! `verify`: compares a source prefix with its target prefix from the two listings (no object
//! is read) and reports what differs; `repair` copies what is missing or stale.
//!
//! A blob is checked against the source object by size, and by the provenance this tool
//! records at every verified copy (`s3sync_etag`, `s3sync_size`, and `s3sync_crc64nvme` when
//! the copy was checked by CRC64): the blob holds exactly the source version whose ETag it
//! names, because the copy was verified before its commit. A blob without provenance cannot
//! be vouched for and is reported as a metadata mismatch. A listing carries no headers, so a
//! metadata-only change in the same second as the write before it (same ETag, size and
//! Last-Modified) is found only with `metadata`, which HEADs each matching object.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde::Serialize;

use crate::engine::decide::same_modified;
use crate::engine::metadata::{
    attrs_digest, compare_attrs, provenance, provenance_attrs, provenance_modified, written_like, AttrsMatch,
};
use crate::engine::naming::blob_name;
use crate::engine::{CopyRequest, Engine};
use crate::error::Result;
use crate::model::{Scope, SyncMode};
use crate::state::verify::VerifyResult;

/// Most differences kept in a report (the counts are always complete).
pub const MAX_LISTED: usize = 1000;

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum DiffKind {
    /// The source object has no blob.
    Missing,
    /// A blob under the target prefix has no source object.
    Extra,
    /// Sizes differ.
    SizeMismatch,
    /// The blob holds another version of the object (its recorded ETag differs).
    ChecksumMismatch,
    /// The blob carries no provenance, so its content cannot be vouched for.
    MetadataMismatch,
}

impl DiffKind {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What differs.
    pub kind: DiffKind,
    /// Source key, when there is one.
    pub key: Option<String>,
    /// Blob name, when there is one.
    pub blob: Option<String>,
    /// Details for the operator.
    pub detail: String,
}

/// The comparison.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Source objects compared (after folder markers and invalid names are left out).
    pub source_objects: u64,
    /// Blobs listed under the target prefix.
    pub target_blobs: u64,
    /// Objects whose blob matches.
    pub matched: u64,
    /// Of those, how many were verified by CRC64NVME at copy time (the rest by MD5 or size).
    pub matched_with_crc64: u64,
    /// Matching objects whose headers and metadata were also compared (HEAD of each, with
    /// `metadata`).
    pub metadata_checked: u64,
    /// Source objects that cannot be blobs (folder markers, invalid names).
    pub skipped: u64,
    /// Differences by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// The first differences.
    pub differences: Vec<Difference>,
    /// Repairs done or queued, when asked for.
    pub repaired: u64,
}

impl VerifyReport {
    /// Whether source and target agree.
    pub fn clean(&self) -> bool {
        self.counts.values().all(|n| *n == 0)
    }

    fn add(&mut self, d: Difference) {
        *self.counts.entry(d.kind.as_str()).or_default() += 1;
        if self.differences.len() < MAX_LISTED {
            self.differences.push(d);
        }
    }

    /// A terminal table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} source objects, {} blobs: {} match ({} by CRC64NVME), {} skipped (folder markers, invalid names){}\n",
            self.source_objects,
            self.target_blobs,
            self.matched,
            self.matched_with_crc64,
            self.skipped,
            if self.metadata_checked > 0 {
                format!("; headers and metadata compared for {}", self.metadata_checked)
            } else {
                String::new()
            }
        );
        for (k, n) in &self.counts {
            s.push_str(&format!("{k:<18} {n:>10}\n"));
        }
        for d in &self.differences {
            s.push_str(&format!(
                "  {:<18} {:<40} {}\n",
                d.kind.as_str(),
                d.key.as_deref().or(d.blob.as_deref()).unwrap_or(""),
                d.detail
            ));
        }
        if self.repaired > 0 {
            s.push_str(&format!("repaired: {}\n", self.repaired));
        }
        s
    }
}

/// Objects HEADed at once by `verify --metadata`.
const METADATA_CONCURRENCY: usize = 16;

/// Compares the two listings, and with `metadata` also each matching object's headers and
/// metadata (one HEAD of the source each). Also returns the keys a repair should copy.
pub async fn verify(engine: &Engine, scope: &Scope, metadata: bool) -> Result<(VerifyReport, Vec<String>)> {
    let started = time::OffsetDateTime::now_utc();
    let mut report = VerifyReport::default();
    let target = engine.target(&scope.container)?;
    let mut blobs: HashMap<String, crate::azure::blob::BlobEntry> = target
        .list(&scope.target_prefix)
        .await?
        .into_iter()
        .map(|b| (b.name.clone(), b))
        .collect();
    report.target_blobs = blobs.len() as u64;
    let mut to_copy = Vec::new();
    let mut heads: Vec<(String, crate::azure::blob::BlobEntry)> = Vec::new();
    let mut token = None;
    loop {
        let (objects, next) = engine
            .s3()
            .list_page(&scope.bucket, &scope.source_prefix, token)
            .await?;
        for o in objects {
            let Ok(name) = blob_name(&o.key, &scope.source_prefix, &scope.target_prefix) else {
                report.skipped += 1;
                continue;
            };
            report.source_objects += 1;
            let diff = |kind, detail: String| Difference {
                kind,
                key: Some(o.key.clone()),
                blob: Some(name.clone()),
                detail,
            };
            let Some(b) = blobs.remove(&name) else {
                report.add(diff(DiffKind::Missing, format!("{} bytes, no blob", o.size)));
                to_copy.push(o.key.clone());
                continue;
            };
            if b.size != o.size {
                report.add(diff(
                    DiffKind::SizeMismatch,
                    format!("source {} bytes, blob {}", o.size, b.size),
                ));
                to_copy.push(o.key.clone());
                continue;
            }
            match provenance(&b.metadata) {
                Some((etag, _))
                    if etag == o.etag
                        && !same_modified(provenance_modified(&b.metadata), o.last_modified.as_deref()) =>
                {
                    // A copy-in-place that replaced headers or metadata keeps a single-part
                    // ETag: only Last-Modified tells.
                    report.add(diff(
                        DiffKind::MetadataMismatch,
                        format!(
                            "blob holds the source as last modified {}, the source was modified {} (headers or metadata changed)",
                            provenance_modified(&b.metadata).unwrap_or("?"),
                            o.last_modified.as_deref().unwrap_or("?")
                        ),
                    ));
                    to_copy.push(o.key.clone());
                }
                Some((etag, _)) if etag == o.etag => {
                    report.matched += 1;
                    if b.metadata.contains_key(crate::engine::metadata::CRC64_KEY) {
                        report.matched_with_crc64 += 1;
                    }
                    if metadata {
                        heads.push((o.key.clone(), b));
                    }
                }
                Some((etag, _)) => {
                    report.add(diff(
                        DiffKind::ChecksumMismatch,
                        format!("blob holds source ETag {etag}, the source is now {}", o.etag),
                    ));
                    to_copy.push(o.key.clone());
                }
                None => {
                    report.add(diff(
                        DiffKind::MetadataMismatch,
                        "blob has no s3sync provenance (not written by s3-blob-sync); its content is unverified".into(),
                    ));
                    to_copy.push(o.key.clone());
                }
            }
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    for d in metadata_differences(engine, scope, heads, &mut report).await? {
        to_copy.push(d.key.clone().unwrap_or_default());
        report.matched -= 1;
        report.add(d);
    }
    let mut extra: Vec<_> = blobs.into_values().collect();
    extra.sort_by(|a, b| a.name.cmp(&b.name));
    for b in extra {
        report.add(Difference {
            kind: DiffKind::Extra,
            key: None,
            detail: format!(
                "{} bytes, no source object (`sync` deletes blobs this tool wrote)",
                b.size
            ),
            blob: Some(b.name),
        });
    }
    record_result(engine, scope, &report, started).await;
    Ok((report, to_copy))
}

/// HEADs each object whose blob matched by the listing, and names those whose headers or
/// metadata the blob does not hold: by the digest recorded at its copy, or, for a blob written
/// before digests were, by its own headers and metadata.
async fn metadata_differences(
    engine: &Engine,
    scope: &Scope,
    heads: Vec<(String, crate::azure::blob::BlobEntry)>,
    report: &mut VerifyReport,
) -> Result<Vec<Difference>> {
    let policy = engine.config().metadata_policy;
    let checked: Vec<Result<Option<Difference>>> = futures::stream::iter(heads)
        .map(|(key, b)| async move {
            // Gone since the listing: the next run or event deals with it.
            let Some(head) = engine.s3().head(&scope.bucket, &key).await? else {
                return Ok(None);
            };
            let now = attrs_digest(&head);
            let same = match compare_attrs(provenance_attrs(&b.metadata), &now) {
                AttrsMatch::Same => true,
                AttrsMatch::Differ => false,
                AttrsMatch::Unknown => written_like(&b.headers, &b.metadata, &scope.bucket, &key, &head, policy),
            };
            Ok((!same).then(|| Difference {
                kind: DiffKind::MetadataMismatch,
                key: Some(key),
                blob: Some(b.name.clone()),
                detail: format!(
                    "the source's headers or metadata changed since the copy (digest {now}, the blob's {}); the bytes are the same",
                    provenance_attrs(&b.metadata).unwrap_or("not recorded")
                ),
            }))
        })
        .buffer_unordered(METADATA_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for c in checked {
        report.metadata_checked += 1;
        if let Some(d) = c? {
            out.push(d);
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Keeps the result of a verification for the cutover gate (best effort: a lost row only
/// makes the gate ask for another verify).
async fn record_result(engine: &Engine, scope: &Scope, report: &VerifyReport, started: time::OffsetDateTime) {
    let result = VerifyResult {
        scope: scope.clone(),
        started,
        at: time::OffsetDateTime::now_utc(),
        differences: report.counts.values().sum(),
        source_objects: report.source_objects,
        matched: report.matched,
    };
    let store = engine.checkpoint().verify();
    if let Err(e) = store.record(&result).await {
        tracing::warn!(bucket = %scope.bucket, container = %scope.container, error = %e, "could not keep the verification's result");
    }
}

/// Copies `keys` with the engine (CLI repair); returns how many now match.
pub async fn repair(engine: &Engine, scope: &Scope, keys: Vec<String>, concurrency: usize) -> u64 {
    futures::stream::iter(keys)
        .map(|key| async move {
            let req = CopyRequest {
                bucket: scope.bucket.clone(),
                key: key.clone(),
                container: scope.container.clone(),
                source_prefix: scope.source_prefix.clone(),
                target_prefix: scope.target_prefix.clone(),
                run_id: None,
                mode: SyncMode::Additive,
                event: None,
                listed: None,
                // The checkpoint may vouch for a blob that was since deleted or overwritten.
                recheck: true,
                part: None,
                fresh: false,
            };
            match engine.copy_object(&req).await {
                Ok(r) => matches!(r.outcome, crate::state::checkpoint::Outcome::Copied),
                Err(e) => {
                    tracing::warn!(bucket = %scope.bucket, key = %key, error = %e, outcome = "repair_failed", "repair failed");
                    false
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await as u64
}
