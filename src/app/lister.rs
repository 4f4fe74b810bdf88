//! One listing page of a run's shard: list, filter, compare with the checkpoint (one range
//! query per page), hand the objects that need work to a sink, then advance the shard's row,
//! splitting its remaining range off to children while it has shard numbers to spare.
//!
//! The row is advanced with If-Match *after* the copies are durable, so a lister killed at any
//! point either redoes the page (duplicate copy messages are harmless; each object is counted
//! once by its marker, whether the lister or a copy records it) or finds the page done and
//! only re-sends the next step. The page's scanned and enqueued counts are in the same row
//! update as the continuation token, so they are never counted twice.

use super::copy_queues::CopySink;
use super::service::RunService;
use crate::engine::decide::is_current;
use crate::engine::naming::{blob_name, NameIssue};
use crate::error::Result;
use crate::messages::CopyMessage;
use crate::model::ListedObject;
use crate::state::checkpoint::CheckpointStore;
use crate::state::runs::counters::{Counters, Tally};
use crate::state::runs::counting::Counted;
use crate::state::runs::store::{Phase, RunState};
use crate::state::runs::{listing::ListerState, pages::PagePlan};

/// What to do after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStep {
    /// List this shard's page `page` next, and the first page of each shard in `start` (the
    /// children it split off).
    Next {
        /// The shard's next page.
        page: u64,
        /// Shards to start.
        start: Vec<u32>,
    },
    /// This shard is listed; others are still listing, among them the shards in `start`
    /// (children its last page split off, as an inventory's first page does when its first
    /// file fits in one page).
    ShardDone {
        /// Shards to start.
        start: Vec<u32>,
    },
    /// Listing finished: check the run.
    Done,
    /// This message was a duplicate or stale: nothing more to do.
    Stale,
    /// The run is unknown or has ended.
    Gone,
    /// This page ended the run (listing failed for good): check it, to send its webhook.
    Ended,
}

/// Lists page `page` of shard `shard` of run `id`.
pub async fn list_page(svc: &RunService, id: &str, shard: u32, page: u64, sink: &dyn CopySink) -> Result<PageStep> {
    let Some(run) = svc.store.get(id).await? else {
        return Ok(PageStep::Gone);
    };
    if run.state.is_final() {
        return Ok(PageStep::Gone);
    }
    let Some(mut lister) = svc.store.shard(id, shard).await? else {
        return Ok(PageStep::Gone);
    };
    if lister.page > page {
        // Already done, maybe by this message's earlier delivery that died before the next
        // step was queued: re-send that step once.
        return step_after(svc, id, &lister, page).await;
    }
    if lister.page < page || lister.done {
        return Ok(PageStep::Stale);
    }
    let spec = &run.spec;
    let bucket = &spec.source.bucket;
    // Every attempt at this page works on the same keys: the first saves what it listed, a
    // redo (after a lister died) reuses it, so no key of an earlier attempt's copies falls
    // outside the page's count (decisions 64).
    // The inventory report, when this attempt opened it to plan its page.
    let mut report = None;
    let plan = match svc.store.page_plan(id, shard, page).await? {
        Some(plan) => plan,
        None => {
            let planned = match &spec.source.inventory {
                Some(url) => match super::inventory::open(svc, spec, url).await {
                    Ok(inv) => {
                        let plan = super::inventory::plan(svc, id, spec, &inv, &lister, page).await;
                        report = Some(inv);
                        plan
                    }
                    Err(e) => Err(e),
                },
                None => list_range(svc, id, spec, &lister, page).await,
            };
            let plan = match planned {
                Ok(plan) => plan,
                Err(e) if !e.is_retryable() => {
                    let from = (spec.source.inventory.clone())
                        .unwrap_or_else(|| format!("s3://{bucket}/{}", spec.source.prefix));
                    let reason = format!("listing {from} failed: {}", e.message());
                    super::service::end(svc, id, RunState::Failed, Some(reason)).await?;
                    return Ok(PageStep::Ended);
                }
                Err(e) => return Err(e),
            };
            // No saved listing meant that no attempt was at the page, or that one finished
            // it (its listing goes in the same transaction as the page's save), or that the
            // run ended (its listings go with it). In the last two cases this attempt listed
            // other keys than the page counted, and must send nothing; reading the lister
            // and run rows now, after the save, tells them apart.
            let moved = svc
                .store
                .shard(id, shard)
                .await?
                .is_none_or(|l| l.page != page || l.done);
            if moved || svc.store.get(id).await?.is_none_or(|r| r.state.is_final()) {
                svc.store.drop_page_plan(id, shard, page, plan.rows).await;
                return Ok(PageStep::Stale);
            }
            plan
        }
    };
    let rows = plan.rows;
    let PagePlan { objects, next, .. } = plan;
    let last_key = objects.last().map(|o| o.key.clone());
    let filters = spec.compiled_filters()?;
    let target_id = svc.target_id(spec)?;
    // Scanned and enqueued are the page's own counts, saved with its token. Every scanned key
    // also gets exactly one per-key outcome: here (excluded, unsupported, no transfer needed)
    // or by its copy. A real run records the ones decided here as per-key markers, like
    // copies do, so a key is never counted twice, whichever attempt of the page or copy
    // counts it first (decisions 56); a dry run changes nothing and counts them in the row.
    let mut counts = Counters::default();
    let mut decided: Vec<Counted> = Vec::new();
    let mut decide = |o: &ListedObject, tally: Tally, reason: Option<String>| {
        if spec.dry_run {
            counts.add(tally, o.size);
        } else {
            decided.push(Counted {
                key: o.key.clone(),
                tally,
                bytes: o.size,
                reason,
            });
        }
    };
    let mut candidates = Vec::new();
    let mut scanned = Counters::default();
    for o in objects {
        scanned.add(Tally::Scanned, o.size);
        let rel = o.key.strip_prefix(spec.source.prefix.as_str()).unwrap_or(&o.key);
        if let Some(why) = filters.excludes(&o, rel) {
            decide(&o, Tally::Excluded, Some(format!("excluded: {why}")));
            continue;
        }
        match blob_name(&o.key, &spec.source.prefix, &spec.target.prefix) {
            Err(issue @ (NameIssue::FolderMarker | NameIssue::OutsidePrefix)) => {
                decide(&o, Tally::Excluded, Some(format!("excluded: {}", issue.reason())))
            }
            Err(issue @ NameIssue::Invalid(_)) => {
                decide(&o, Tally::Unsupported, Some(format!("unsupported: {}", issue.reason())))
            }
            // An archived class goes on like any other: a listing keeps reporting GLACIER after
            // a restore, so only a HEAD (below, for those the checkpoint does not already
            // hold) tells a restored object from one that cannot be read.
            Ok(name) => candidates.push((o, name)),
        }
    }
    let mut copies = Vec::new();
    let by_bytes = |a: &&str, b: &&str| a.as_bytes().cmp(b.as_bytes());
    let names = || candidates.iter().map(|(_, n)| n.as_str());
    if !candidates.is_empty() {
        // The page's rows are its blobs' (decisions 99): range reads bounded by the page.
        let checkpoint = svc.engine.checkpoint();
        let rows = checkpoint
            .range(bucket, &target_id, &names().collect::<Vec<_>>())
            .await?;
        let mut found = Vec::with_capacity(candidates.len());
        for (o, name) in candidates {
            let row = if CheckpointStore::in_range_form(&name) {
                rows.get(&name).cloned()
            } else {
                checkpoint.get(bucket, name.as_str(), &target_id).await?
            };
            found.push((o, name, row));
        }
        // A key with no row may have one of the previous form (not migrated yet): it was
        // copied, so it is not `fresh` (a blind create would fail, or copy it again).
        let missing: Vec<&str> = found
            .iter()
            .filter(|(_, _, r)| r.is_none())
            .map(|(o, _, _)| o.key.as_str())
            .collect();
        let legacy = match (
            missing.iter().copied().min_by(by_bytes),
            missing.iter().copied().max_by(by_bytes),
        ) {
            (Some(a), Some(b)) => checkpoint.legacy_keys(bucket, &target_id, a, b).await?,
            _ => Default::default(),
        };
        // A listing carries no headers: the digest is not compared (`None`).
        let current = |o: &ListedObject, name: &str, row: &Option<crate::state::checkpoint::Versioned>| {
            let modified = o.last_modified.as_deref();
            row.as_ref()
                .is_some_and(|r| is_current(&r.record, &o.key, &o.etag, o.size, modified, None, name))
        };
        let archived: Vec<&ListedObject> = found
            .iter()
            .filter(|(o, name, row)| {
                o.storage_class.as_deref().is_some_and(crate::aws::s3::is_archive_class) && !current(o, name, row)
            })
            .map(|(o, _, _)| o)
            .collect();
        let mut held = unreadable(svc, bucket, &archived).await?;
        for (o, name, row) in found {
            let fresh = row.is_none() && !legacy.contains(&o.key) && CheckpointStore::in_range_form(&o.key);
            if current(&o, &name, &row) {
                decide(&o, Tally::NoTransferNeeded, None);
            } else if let Some((tally, why)) = held.remove(&o.key) {
                decide(&o, tally, Some(why));
            } else if spec.dry_run {
                decide(&o, Tally::WouldTransfer, None);
            } else {
                scanned.add(Tally::Enqueued, o.size);
                copies.push(CopyMessage {
                    bucket: bucket.clone(),
                    key: o.key,
                    container: Some(spec.target.container.clone()),
                    source_prefix: Some(spec.source.prefix.clone()),
                    target_prefix: Some(spec.target.prefix.clone()),
                    run_id: Some(id.to_string()),
                    mode: Some(spec.mode),
                    etag: Some(o.etag),
                    size: Some(o.size),
                    last_modified: o.last_modified,
                    fresh: Some(fresh),
                    ..Default::default()
                });
            }
        }
    }
    let enqueued = copies.len();
    let decided_here = decided.len();
    svc.store.record_many(id, &decided).await?;
    sink.send(copies).await?;
    lister.counters.merge(&counts);
    lister.counters.merge(&scanned);
    lister.page += 1;
    lister.done = next.is_none();
    lister.token = next;
    lister.born = Vec::new();
    let children = match (&spec.source.inventory, &last_key) {
        // A report's shards all start with the first shard's first page.
        (Some(url), _) if lister.spare > 0 && shard == 0 && page == 0 => {
            let inv = match report {
                Some(inv) => inv,
                None => super::inventory::open(svc, spec, url).await?,
            };
            super::inventory::children(&mut lister, &inv, svc.config.runs.list_page_keys)
        }
        (None, Some(last)) if !lister.done && lister.spare > 0 && super::shards::tries_split_after(page) => {
            split(svc, spec, &mut lister, last).await
        }
        _ => Vec::new(),
    };
    if !svc.store.save_page(id, &lister, page, rows, &children).await? {
        // Not saved as read: this attempt's own save whose reply was lost (the retry met
        // the change it made), another attempt's, or the run ended and its listings went.
        if let Some(now) = svc.store.shard(id, shard).await?.filter(|l| l.page > page) {
            // A duplicate of the next step is harmless; a missing one would stall the run.
            return step_after(svc, id, &now, page).await;
        }
        if svc.store.get(id).await?.is_none_or(|r| r.state.is_final()) {
            return Ok(PageStep::Gone);
        }
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::Transient,
            format!("run {id}: page {page} could not be saved (its listing changed under it); trying again"),
        ));
    }
    tracing::info!(
        run_id = %id, bucket = %bucket, shard, page, scanned = scanned.objects(Tally::Scanned), enqueued,
        decided_here, split = children.len(), outcome = "page_listed", "listed a page"
    );
    step_after(svc, id, &lister, page).await
}

/// HEADs listed archived objects, a few at a time, and returns those that cannot be read now
/// with their tally and reason; a restored one (`x-amz-restore: ongoing-request="false"`) is
/// left out, so it is copied like any other. Only objects the checkpoint does not hold at
/// their listed version get here: one HEAD per archived object not yet copied, per run.
async fn unreadable(
    svc: &RunService,
    bucket: &str,
    objects: &[&ListedObject],
) -> Result<std::collections::HashMap<String, (Tally, String)>> {
    let s3 = svc.engine.s3();
    let mut out = std::collections::HashMap::new();
    for chunk in objects.chunks(ARCHIVE_HEADS_AT_ONCE) {
        let heads = futures::future::join_all(chunk.iter().map(|o| s3.head(bucket, &o.key))).await;
        for (o, head) in chunk.iter().zip(heads) {
            let head = match head {
                Ok(h) => h,
                // The page is tried again for what may pass (throttling, a reset)...
                Err(e) if e.is_retryable() => return Err(e),
                // ...but one object S3 will not describe (another account's object, an SSE-C
                // object, a prefix the policy denies) is that object's failure, not the run's.
                Err(e) => {
                    let why = format!("failed: S3 refused the HEAD that tells a restore: {}", e.message());
                    out.insert(o.key.clone(), (Tally::Failed, why));
                    continue;
                }
            };
            let verdict = match head {
                // Deleted since it was listed.
                None => Some((Tally::Vanished, "vanished: deleted since it was listed".to_string())),
                Some(h) => h.unreadable_class().map(|class| {
                    let why = if h.restore_under_way() {
                        format!("unsupported: {class}, its restore is under way (the restore's event, or a run after it, copies it)")
                    } else {
                        format!("unsupported: {class} (restore the object first)")
                    };
                    (Tally::Unsupported, why)
                }),
            };
            if let Some(v) = verdict {
                out.insert(o.key.clone(), v);
            }
        }
    }
    Ok(out)
}

/// HEADs of archived objects a page sends at once.
const ARCHIVE_HEADS_AT_ONCE: usize = 8;

/// Lists shard `l`'s page `page` of run `id` and saves it as the page's plan (or reads the
/// plan another attempt saved first).
async fn list_range(
    svc: &RunService,
    id: &str,
    spec: &crate::messages::run_spec::RunSpec,
    l: &ListerState,
    page: u64,
) -> Result<PagePlan> {
    let (mut objects, mut next) = svc
        .engine
        .s3()
        .list_range(
            &spec.source.bucket,
            &spec.source.prefix,
            l.token.clone(),
            // A shard's first page starts after its lower bound; the token carries the rest.
            l.after.as_deref().filter(|_| l.token.is_none()),
            svc.config.runs.list_page_keys,
        )
        .await?;
    // A shard rests on S3's listing order: keys in increasing byte order, after StartAfter.
    // A source that breaks it (an S3-compatible store, a directory bucket) would lose or
    // repeat keys between shards, so the run stops, saying how to list it instead.
    let unordered = objects
        .windows(2)
        .find(|w| w[0].key.as_bytes() >= w[1].key.as_bytes())
        .map(|w| &w[1].key);
    let before = (l.after.as_deref())
        .and_then(|a| objects.iter().find(|o| o.key.as_bytes() <= a.as_bytes()))
        .map(|o| &o.key);
    let bounded = l.after.is_some() || l.until.is_some();
    if let Some(k) = unordered.or(before).filter(|_| bounded) {
        return Err(crate::error::Error::invalid(format!(
            "s3://{}: the listing is not in S3's key order (`{k}` came after a later key, or before \
             the shard's start); list this source as one shard (`listShards`: 1, or SYNC_LIST_SHARDS=1)",
            spec.source.bucket
        )));
    }
    // S3 has no end key: the shard's listing stops at its bound, which the next shard starts
    // after.
    if let Some(cut) = objects.iter().position(|o| l.past(&o.key)) {
        objects.truncate(cut);
        next = None;
    }
    svc.store
        .save_page_plan(id, l.shard, page, PagePlan::new(objects, next))
        .await
}

/// Shard `l`'s split after a page that ended at `last`: its remaining range's boundaries,
/// probed, shared out to children. A failed probe only means no split this time.
async fn split(
    svc: &RunService,
    spec: &crate::messages::run_spec::RunSpec,
    l: &mut ListerState,
    last: &str,
) -> Vec<ListerState> {
    let probe = super::shards::S3Probe {
        s3: svc.engine.s3(),
        bucket: &spec.source.bucket,
    };
    let pieces = l.spare as usize + 1;
    match super::shards::boundaries(&probe, &spec.source.prefix, Some(last), l.until.as_deref(), pieces).await {
        Ok(b) => super::shards::divide(l, &b),
        Err(e) => {
            tracing::warn!(bucket = %spec.source.bucket, shard = l.shard, error = %e, "could not probe where the listing splits; listing on as one shard");
            Vec::new()
        }
    }
}

/// The step after page `page` when shard `l`'s row is past it: the page's own next step when
/// the row is just past it (with the children that page's save split off), nothing otherwise.
/// The listing is done when the last shard is: whichever shard reads every row done after its
/// own save ends the listing (two may; a duplicate check is harmless).
async fn step_after(svc: &RunService, id: &str, l: &ListerState, page: u64) -> Result<PageStep> {
    if l.page != page + 1 {
        return Ok(PageStep::Stale);
    }
    if !l.done {
        return Ok(PageStep::Next {
            page: l.page,
            start: l.born.clone(),
        });
    }
    if svc.store.listing(id).await?.is_some_and(|all| all.done()) {
        super::finish::set_phase(svc, id, Phase::Copying).await?;
        return Ok(PageStep::Done);
    }
    Ok(PageStep::ShardDone { start: l.born.clone() })
}
