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

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::engine::decide::same_modified;
use crate::engine::metadata::{
    attrs_digest, compare_attrs, provenance, provenance_attrs, provenance_modified, written_like, AttrsMatch,
};
use crate::engine::naming::blob_name;
use crate::engine::{CopyRequest, Engine};
use crate::error::Result;
use crate::model::{Scope, SyncMode};
use crate::state::runs::verifying::VerifyPlace;
use crate::state::verify::VerifyResult;

/// Most differences kept in a report (the counts are always complete).
pub const MAX_LISTED: usize = 1000;

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, strum::IntoStaticStr)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
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
    pub counts: BTreeMap<String, u64>,
    /// The first differences.
    pub differences: Vec<Difference>,
    /// Repairs done or queued, when asked for.
    pub repaired: u64,
    /// Keep every difference, not the first [`MAX_LISTED`] (a verify run takes them after
    /// each page).
    #[serde(skip)]
    pub list_all: bool,
}

impl VerifyReport {
    /// Whether source and target agree.
    pub fn clean(&self) -> bool {
        self.counts.values().all(|n| *n == 0)
    }

    /// The differences by kind, as a phrase: `1 extra, 2 missing`.
    pub fn counts_text(&self) -> String {
        let kinds: Vec<String> = self.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        kinds.join(", ")
    }

    /// The tallies a verify run's saved place holds (none before its first slice saved them).
    pub fn of_place(place: &VerifyPlace) -> Result<Self> {
        if place.tallies.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(place.tallies.clone())
            .map_err(|e| crate::error::Error::internal(format!("verify tallies unreadable: {e}")))
    }

    fn add(&mut self, d: Difference) {
        *self.counts.entry(d.kind.as_str().to_string()).or_default() += 1;
        if self.list_all || self.differences.len() < MAX_LISTED {
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

/// How far `verify` reads ahead and waits: both listings are walked in key order, a page at a
/// time, so memory is bounded by these, whatever the prefix holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Keys per source listing page.
    pub source_page: u32,
    /// Blobs per target listing page.
    pub target_page: u32,
    /// How many source objects whose blob was not listed yet, and how many listed blobs no
    /// source object has named yet, are kept waiting. The listings agree on order for ASCII
    /// names; Azure does not document its order for others, so an entry waits for its
    /// partner this long before it is reported missing or extra (never matched wrongly).
    pub window: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            source_page: 1000,
            target_page: 5000,
            window: 20_000,
        }
    }
}

/// [`verify_each`], keeping the keys a repair should copy: for tests and small prefixes.
pub async fn verify(engine: &Engine, scope: &Scope, metadata: bool) -> Result<(VerifyReport, Vec<String>)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let keep = async {
        let mut all = Vec::new();
        while let Some(batch) = rx.recv().await {
            all.extend(batch);
        }
        all
    };
    let (report, to_copy) = tokio::join!(verify_each(engine, scope, metadata, Limits::default(), tx), keep);
    Ok((report?, to_copy))
}

/// Compares the two listings, and with `metadata` also each matching object's headers and
/// metadata (one HEAD of the source each). `stale` gets the keys a repair should copy, a
/// batch at a time, as they are found, and is dropped at the end: nothing grows with the
/// prefix but the counts. A receiver that goes away stops the comparison.
pub async fn verify_each(
    engine: &Engine,
    scope: &Scope,
    metadata: bool,
    limits: Limits,
    stale: tokio::sync::mpsc::Sender<Vec<String>>,
) -> Result<VerifyReport> {
    let started = time::OffsetDateTime::now_utc();
    let mut v = Verifier::new(engine, scope, metadata, limits)?;
    loop {
        let step = v.page().await?;
        if !step.to_copy.is_empty() {
            stale
                .send(step.to_copy)
                .await
                .map_err(|_| crate::error::Error::internal("the repair of the differences stopped"))?;
        }
        if step.finished {
            break;
        }
    }
    record_result(engine, scope, &v.report, started).await;
    Ok(v.report)
}

/// Source objects still waiting for their blob that a saved place may carry to the next
/// slice, and their keys' bytes at most: a few names the target lists out of byte order
/// (a missing `café.jpg`) must not stop every clean point, and the place is one table row
/// (a property holds 64 KiB).
const CARRIED: usize = 16;
const CARRIED_BYTES: usize = 16 * 1024;

/// One page of a comparison: the keys a repair should copy, and whether it has ended.
#[derive(Debug, Default)]
pub struct Step {
    /// Missing or stale source keys found in the page.
    pub to_copy: Vec<String>,
    /// Both listings were read to their end.
    pub finished: bool,
}

/// A comparison under way: both listings' places and what waits for its partner. It can
/// stop at a clean point ([`Self::at_clean_point`]) and go on later from its
/// [`VerifyPlace`], in another process, counting every object once.
pub struct Verifier<'a> {
    engine: &'a Engine,
    scope: &'a Scope,
    metadata: bool,
    limits: Limits,
    /// The tallies and the differences found since they were last taken.
    pub report: VerifyReport,
    blobs: BlobPages,
    walk: Walk,
    /// The last source key compared.
    after: Option<String>,
    /// The blob name of the last source object compared (byte order: every blob before it
    /// that waits has no source object).
    through: Option<String>,
    source_done: bool,
    finished: bool,
}

impl<'a> Verifier<'a> {
    /// A comparison from the start.
    pub fn new(engine: &'a Engine, scope: &'a Scope, metadata: bool, limits: Limits) -> Result<Self> {
        let target = engine.target(&scope.container)?;
        Ok(Verifier {
            engine,
            scope,
            metadata,
            limits,
            report: VerifyReport::default(),
            blobs: BlobPages::new(target, scope.target_prefix.clone(), limits.target_page),
            walk: Walk::default(),
            after: None,
            through: None,
            source_done: false,
            finished: false,
        })
    }

    /// A comparison going on from `place`, with every difference kept for the caller to take.
    pub fn resume(
        engine: &'a Engine,
        scope: &'a Scope,
        metadata: bool,
        limits: Limits,
        place: &VerifyPlace,
    ) -> Result<Self> {
        let mut v = Self::new(engine, scope, metadata, limits)?;
        v.report = VerifyReport::of_place(place)?;
        v.report.list_all = true;
        v.after = place.source_after.clone();
        v.through = place.blob_through.clone();
        v.blobs.marker = place.blob_marker.clone();
        // Until a page is read, the place is the one read (a slice whose source pages held
        // only skipped keys saves it again, not the listing's start).
        v.blobs.page_marker = place.blob_marker.clone();
        v.blobs.skip_through = place.blob_through.clone();
        v.blobs.skip_until = place.blob_page_last.clone();
        v.blobs.page_last = place.blob_page_last.clone();
        for o in &place.waiting {
            if let Ok(name) = blob_name(&o.key, &scope.source_prefix, &scope.target_prefix) {
                v.walk.objects.insert(name, o.clone());
            }
        }
        v.finished = place.done;
        Ok(v)
    }

    /// Whether both listings were read to their end.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Whether the comparison can stop here and go on from [`Self::place`]: at most a few
    /// source objects wait (the place carries them), and every blob that waits is from the
    /// target page being read and after the last source object (so reading that page again,
    /// from past it, lists exactly them).
    pub fn at_clean_point(&self) -> bool {
        // With both listings read, only the last settling is left (and a place saved now would
        // have no target page to name).
        let settling = self.source_done && self.blobs.done;
        let carried: usize = self.walk.objects.values().map(|o| o.key.len()).sum();
        self.finished
            || (!settling
                && self.walk.objects.len() <= CARRIED
                && carried <= CARRIED_BYTES
                && self.walk.blobs.iter().all(|(name, (_, page))| {
                    *page == self.blobs.page_no
                        && self.through.as_deref().is_some_and(|t| name.as_bytes() > t.as_bytes())
                }))
    }

    /// Where the comparison stands, with its tallies (at a clean point).
    pub fn place(&self) -> VerifyPlace {
        let mut tallies = self.report.clone();
        tallies.differences.clear();
        // The blobs that wait are listed again when the next slice reads their page.
        tallies.target_blobs -= self.walk.blobs.len() as u64;
        // Once the source has ended, every blob listed was judged as it came: the next slice
        // reads the target from its next page. Before, it reads the current page again.
        let (blob_marker, blob_through, blob_page_last) = match self.source_done {
            true => (self.blobs.marker.clone(), None, None),
            false => (
                self.blobs.page_marker.clone(),
                self.through.clone(),
                self.blobs.page_last.clone(),
            ),
        };
        VerifyPlace {
            source_after: self.after.clone(),
            blob_marker,
            blob_through,
            blob_page_last,
            tallies: serde_json::to_value(&tallies).expect("plain data"),
            waiting: self.walk.objects.values().cloned().collect(),
            slices: 0,
            done: self.finished,
            etag: None,
        }
    }

    /// Compares one page of the source (and the target up to it); at the source's end, the
    /// rest of the target.
    pub async fn page(&mut self) -> Result<Step> {
        let (mut to_copy, mut heads) = (Vec::new(), Vec::new());
        if !self.source_done {
            let (objects, next) = self
                .engine
                .s3()
                .list_range(
                    &self.scope.bucket,
                    &self.scope.source_prefix,
                    None,
                    self.after.as_deref(),
                    self.limits.source_page,
                )
                .await?;
            self.source_done = next.is_none() || objects.is_empty();
            for o in objects {
                self.after = Some(o.key.clone());
                let Ok(name) = blob_name(&o.key, &self.scope.source_prefix, &self.scope.target_prefix) else {
                    self.report.skipped += 1;
                    continue;
                };
                self.report.source_objects += 1;
                // Read the target until its listing has passed this name.
                while self.blobs.before(&name) {
                    self.read_target_page(&mut to_copy, &mut heads).await?;
                }
                match self.walk.blobs.remove(&name) {
                    Some((b, _)) => judge(
                        &mut self.report,
                        (name.clone(), o),
                        b,
                        self.metadata,
                        &mut to_copy,
                        &mut heads,
                    ),
                    None => {
                        self.walk.objects.insert(name.clone(), o);
                    }
                }
                self.through = Some(name.clone());
                let passed = Passed {
                    at: Some(&name),
                    ascii: self.blobs.last_ascii.as_deref(),
                    target_done: self.blobs.done,
                };
                self.walk
                    .settle(&mut self.report, &mut to_copy, self.limits.window, passed);
            }
        }
        if self.source_done && !self.blobs.done && !self.finished {
            // The rest of the target, a page a call (so a slice can stop between them):
            // partners of objects still waiting, or extra.
            self.read_target_page(&mut to_copy, &mut heads).await?;
            let passed = Passed {
                at: None,
                ascii: self.blobs.last_ascii.as_deref(),
                target_done: self.blobs.done,
            };
            self.walk
                .settle(&mut self.report, &mut to_copy, self.limits.window, passed);
        } else if self.source_done && !self.finished {
            // Whatever still waits has no partner.
            let passed = Passed {
                at: None,
                ascii: None,
                target_done: true,
            };
            self.walk.settle(&mut self.report, &mut to_copy, 0, passed);
            self.finished = true;
        }
        for d in metadata_differences(self.engine, self.scope, heads, &mut self.report).await? {
            to_copy.push(d.key.clone().unwrap_or_default());
            self.report.matched -= 1;
            self.report.add(d);
        }
        Ok(Step {
            to_copy,
            finished: self.finished,
        })
    }

    /// Reads the next target page: each blob is judged with the source object waiting for
    /// it, or waits for one.
    async fn read_target_page(
        &mut self,
        to_copy: &mut Vec<String>,
        heads: &mut Vec<(String, crate::azure::blob::BlobEntry)>,
    ) -> Result<()> {
        for b in self.blobs.next().await? {
            self.walk
                .listed(&mut self.report, b, self.blobs.page_no, self.metadata, to_copy, heads);
        }
        Ok(())
    }
}

/// The target listing, a page at a time.
struct BlobPages {
    target: crate::azure::blob::BlobTarget,
    prefix: String,
    page: u32,
    /// The next page's marker.
    marker: Option<String>,
    /// The marker the page being read was asked for with (`None`: the first page).
    page_marker: Option<String>,
    /// Pages read by this process (which page a waiting blob came from).
    page_no: u64,
    /// On a resumed comparison, the blobs of the page it stopped in up to this name were
    /// judged before: dropped from what is listed until `skip_until` is.
    skip_through: Option<String>,
    /// The last name of the page it stopped in.
    skip_until: Option<String>,
    /// The last name of the page being read (or, before one is read, of the page it stopped
    /// in).
    page_last: Option<String>,
    /// The last name listed so far.
    last: Option<String>,
    /// The greatest ASCII name listed so far.
    last_ascii: Option<String>,
    done: bool,
}

impl BlobPages {
    fn new(target: crate::azure::blob::BlobTarget, prefix: String, page: u32) -> Self {
        BlobPages {
            target,
            prefix,
            page,
            marker: None,
            page_marker: None,
            page_no: 0,
            skip_through: None,
            skip_until: None,
            page_last: None,
            last: None,
            last_ascii: None,
            done: false,
        }
    }

    /// Whether the listing has more and has not reached `name` yet (byte order).
    fn before(&self, name: &str) -> bool {
        !self.done && self.last.as_deref().is_none_or(|l| l.as_bytes() < name.as_bytes())
    }

    async fn next(&mut self) -> Result<Vec<crate::azure::blob::BlobEntry>> {
        let (mut page, next) = self
            .target
            .list_page(&self.prefix, self.marker.as_deref(), self.page)
            .await?;
        self.page_marker = self.marker.take();
        self.page_no += 1;
        if let Some(b) = page.last() {
            self.last = Some(b.name.clone());
        }
        self.page_last = self.last.clone();
        for b in &page {
            if b.name.is_ascii() && self.last_ascii.as_deref().is_none_or(|l| l < b.name.as_str()) {
                self.last_ascii = Some(b.name.clone());
            }
        }
        if let Some(t) = self.skip_through.clone() {
            // Blobs written into that page since it was read push its tail into this one:
            // the same rule holds until its last name has been listed again (a shift).
            // Only up to that name: what follows it was never read.
            let end = self
                .skip_until
                .as_deref()
                .and_then(|u| page.iter().position(|b| b.name == u));
            let cut = end.map_or(page.len(), |i| i + 1);
            let mut at = 0;
            page.retain(|b| {
                at += 1;
                at > cut || b.name.as_bytes() > t.as_bytes()
            });
            if end.is_some() || self.skip_until.is_none() {
                self.skip_through = None;
            }
        }
        self.done = next.is_none();
        self.marker = next;
        Ok(page)
    }
}

/// How far the listings have gone, which says what waits in vain.
#[derive(Default, Clone, Copy)]
struct Passed<'a> {
    /// The source listing's place (`None` once it has ended): S3 lists in byte order, so a
    /// blob before it that waits has no source object, and once it has ended none has.
    at: Option<&'a str>,
    /// The greatest ASCII name the target listed: an ASCII name before it was listed already
    /// if it exists (both listings order ASCII names byte by byte).
    ascii: Option<&'a str>,
    /// The target listing has ended: nothing more will come.
    target_done: bool,
}

/// What waits for its partner: source objects whose blob was not listed yet, and listed
/// blobs no source object has named yet (with the page they came from), by name.
#[derive(Default)]
struct Walk {
    objects: BTreeMap<String, crate::model::ListedObject>,
    blobs: BTreeMap<String, (crate::azure::blob::BlobEntry, u64)>,
}

impl Walk {
    /// A blob just listed: judged with the source object waiting for it, or kept waiting
    /// for one.
    fn listed(
        &mut self,
        report: &mut VerifyReport,
        b: crate::azure::blob::BlobEntry,
        page: u64,
        metadata: bool,
        to_copy: &mut Vec<String>,
        heads: &mut Vec<(String, crate::azure::blob::BlobEntry)>,
    ) {
        report.target_blobs += 1;
        match self.objects.remove(&b.name) {
            Some(waiting) => judge(report, (b.name.clone(), waiting), b, metadata, to_copy, heads),
            None => {
                self.blobs.insert(b.name.clone(), (b, page));
            }
        }
    }

    /// Reports as missing the source objects whose blob cannot come any more, and as extra the
    /// blobs before the source's place; then, of what still waits, the entries that waited
    /// longest, until at most `window` of each wait. A blob read ahead of the source is never
    /// called extra early.
    fn settle(&mut self, report: &mut VerifyReport, to_copy: &mut Vec<String>, window: usize, passed: Passed) {
        let missing =
            |report: &mut VerifyReport, to_copy: &mut Vec<String>, name: String, o: crate::model::ListedObject| {
                report.add(Difference {
                    kind: DiffKind::Missing,
                    detail: format!("{} bytes, no blob", o.size),
                    key: Some(o.key.clone()),
                    blob: Some(name),
                });
                to_copy.push(o.key);
            };
        let gone: Vec<String> = self
            .objects
            .keys()
            .filter(|n| passed.target_done || (n.is_ascii() && passed.ascii.is_some_and(|a| n.as_str() < a)))
            .cloned()
            .collect();
        for name in gone {
            let o = self.objects.remove(&name).expect("listed above");
            missing(report, to_copy, name, o);
        }
        while self.objects.len() > window {
            let Some((name, o)) = self.objects.pop_first() else {
                break;
            };
            missing(report, to_copy, name, o);
        }
        while let Some((name, _)) = self.blobs.first_key_value() {
            // Before the source's place it waits in vain, and so does every blob once the
            // source has ended (a waiting object would have taken it when it was listed).
            let go = match passed.at {
                Some(at) => name.as_bytes() < at.as_bytes(),
                // The source has ended: no object will name it any more.
                None => true,
            };
            if !go {
                break;
            }
            let Some((name, (b, _))) = self.blobs.pop_first() else {
                break;
            };
            report.add(Difference {
                kind: DiffKind::Extra,
                key: None,
                detail: format!(
                    "{} bytes, no source object (`sync` deletes blobs this tool wrote)",
                    b.size
                ),
                blob: Some(name),
            });
        }
    }
}

/// Compares one source object with its blob.
fn judge(
    report: &mut VerifyReport,
    (name, o): (String, crate::model::ListedObject),
    b: crate::azure::blob::BlobEntry,
    metadata: bool,
    to_copy: &mut Vec<String>,
    heads: &mut Vec<(String, crate::azure::blob::BlobEntry)>,
) {
    let diff = |kind, detail: String| Difference {
        kind,
        key: Some(o.key.clone()),
        blob: Some(name.clone()),
        detail,
    };
    if b.size != o.size {
        report.add(diff(
            DiffKind::SizeMismatch,
            format!("source {} bytes, blob {}", o.size, b.size),
        ));
        to_copy.push(o.key.clone());
        return;
    }
    match provenance(&b.metadata) {
        Some((etag, _))
            if etag == o.etag && !same_modified(provenance_modified(&b.metadata), o.last_modified.as_deref()) =>
        {
            // A copy-in-place that replaced headers or metadata keeps a single-part ETag:
            // only Last-Modified tells.
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
pub(super) async fn record_result(
    engine: &Engine,
    scope: &Scope,
    report: &VerifyReport,
    started: time::OffsetDateTime,
) {
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
