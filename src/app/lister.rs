//! One listing page of a run: list, filter, compare with the checkpoint (one range query per
//! page), hand the objects that need work to a sink, then advance the lister row.
//!
//! The row is advanced with If-Match *after* the copies are durable, so a lister killed at any
//! point either redoes the page (duplicate copy messages are harmless; each object is counted
//! once by its marker, whether the lister or a copy records it) or finds the page done and
//! only re-sends the next step. The page's scanned and enqueued counts are in the same row
//! update as the continuation token, so they are never counted twice.

use super::service::{CopySink, RunService};
use crate::engine::decide::is_current;
use crate::engine::naming::{blob_name, NameIssue};
use crate::error::Result;
use crate::messages::CopyMessage;
use crate::model::ListedObject;
use crate::state::checkpoint::CheckpointStore;
use crate::state::runs::counters::{Counters, Tally};
use crate::state::runs::counting::Counted;
use crate::state::runs::pages::PagePlan;
use crate::state::runs::store::RunState;

/// What to do after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStep {
    /// List page n next.
    Next(u64),
    /// Listing finished: check the run.
    Done,
    /// This message was a duplicate or stale: nothing more to do.
    Stale,
    /// The run is unknown or has ended.
    Gone,
    /// This page ended the run (listing failed for good): check it, to send its webhook.
    Ended,
}

/// Lists page `page` of run `id`.
pub async fn list_page(svc: &RunService, id: &str, page: u64, sink: &dyn CopySink) -> Result<PageStep> {
    let Some(run) = svc.store.get(id).await? else {
        return Ok(PageStep::Gone);
    };
    if run.state.is_final() {
        return Ok(PageStep::Gone);
    }
    let Some(mut lister) = svc.store.lister(id).await? else {
        return Ok(PageStep::Gone);
    };
    if lister.page > page {
        // Already done, maybe by this message's earlier delivery that died before the next
        // step was queued: re-send that step once.
        return Ok(step_after(&lister, page));
    }
    if lister.page < page || lister.done {
        return Ok(PageStep::Stale);
    }
    let spec = &run.spec;
    let bucket = &spec.source.bucket;
    // Every attempt at this page works on the same keys: the first saves what it listed, a
    // redo (after a lister died) reuses it, so no key of an earlier attempt's copies falls
    // outside the page's count (decisions 64).
    let plan = match svc.store.page_plan(id, page).await? {
        Some(plan) => plan,
        None => {
            let listed = svc
                .engine
                .s3()
                .list_page(bucket, &spec.source.prefix, lister.token.clone())
                .await;
            let (objects, next) = match listed {
                Ok(x) => x,
                Err(e) if !e.is_retryable() => {
                    let reason = format!("listing s3://{bucket}/{} failed: {}", spec.source.prefix, e.message());
                    super::service::end(svc, id, RunState::Failed, Some(reason)).await?;
                    return Ok(PageStep::Ended);
                }
                Err(e) => return Err(e),
            };
            let plan = svc.store.save_page_plan(id, page, PagePlan::new(objects, next)).await?;
            // No saved listing meant that no attempt was at the page, or that one finished
            // it (its listing goes in the same transaction as the page's save), or that the
            // run ended (its listings go with it). In the last two cases this attempt listed
            // other keys than the page counted, and must send nothing; reading the lister
            // and run rows now, after the save, tells them apart.
            let moved = svc.store.lister(id).await?.is_none_or(|l| l.page != page || l.done);
            if moved || svc.store.get(id).await?.is_none_or(|r| r.state.is_final()) {
                svc.store.drop_page_plan(id, page, plan.rows).await;
                return Ok(PageStep::Stale);
            }
            plan
        }
    };
    let rows = plan.rows;
    let PagePlan { objects, next, .. } = plan;
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
            Ok(_) if matches!(o.storage_class.as_deref(), Some("GLACIER" | "DEEP_ARCHIVE")) => {
                // The engine would HEAD it to see a restore; a bulk run counts it unsupported
                // without the request (restored objects are copied by their event or a re-run
                // after the restore changes the class reported in listings).
                let class = o.storage_class.clone().unwrap_or_default();
                decide(
                    &o,
                    Tally::Unsupported,
                    Some(format!("unsupported: {class} (restore the object first)")),
                )
            }
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
        for (o, name, row) in found {
            let fresh = row.is_none() && !legacy.contains(&o.key) && CheckpointStore::in_range_form(&o.key);
            // A listing carries no headers: the digest is not compared (`None`).
            let modified = o.last_modified.as_deref();
            if row.is_some_and(|r| is_current(&r.record, &o.key, &o.etag, o.size, modified, None, &name)) {
                decide(&o, Tally::NoTransferNeeded, None);
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
    if !svc.store.save_page(id, &lister, page, rows).await? {
        // Not saved as read: this attempt's own save whose reply was lost (the retry met
        // the change it made), another attempt's, or the run ended and its listings went.
        if let Some(now) = svc.store.lister(id).await?.filter(|l| l.page > page) {
            let step = step_after(&now, page);
            if step == PageStep::Done {
                super::finish::set_phase(svc, id, crate::state::runs::store::Phase::Copying).await?;
            }
            // A duplicate of the next step is harmless; a missing one would stall the run.
            return Ok(step);
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
        run_id = %id, bucket = %bucket, page, scanned = scanned.objects(Tally::Scanned), enqueued,
        decided_here, outcome = "page_listed", "listed a page"
    );
    if lister.done {
        super::finish::set_phase(svc, id, crate::state::runs::store::Phase::Copying).await?;
        Ok(PageStep::Done)
    } else {
        Ok(PageStep::Next(lister.page))
    }
}

/// The step after page `page` when the lister row is already past it: the page's own next
/// step when the row is just past it, nothing otherwise.
fn step_after(lister: &crate::state::runs::store::ListerState, page: u64) -> PageStep {
    match (lister.page == page + 1, lister.done) {
        (true, true) => PageStep::Done,
        (true, false) => PageStep::Next(lister.page),
        _ => PageStep::Stale,
    }
}
