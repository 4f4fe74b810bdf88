//! A run listed from an S3 Inventory report instead of LIST requests (decisions 121).
//!
//! The report's data files are shared among the run's shards, round robin: shard `s` of `k`
//! reads files `s`, `s + k`, `s + 2k`, and so on. A shard's page is a run of `keys` current
//! objects of one file under the run's prefix. A gzip stream cannot be entered midway, so the
//! first page of a file reads the whole file once and saves every page's listing as it goes
//! (a plan, as a listed page saves its own): the shard's later pages find theirs saved. Pages
//! are cut the same way by every attempt (the cut depends on the file, the prefix and the
//! page size fixed in the cursor), so an attempt that redoes a file saves the same plans.
//!
//! A report is days old, so it only says which keys to look at: each object is decided from
//! the checkpoint and, for a copy, from its own HEAD or GET, and the prune HEADs every
//! candidate whatever the report says.

use super::service::RunService;
use crate::aws::inventory::Inventory;
use crate::config::location::parse_s3_url;
use crate::error::{Error, Result};
use crate::messages::run_spec::RunSpec;
use crate::model::ListedObject;
use crate::state::runs::{listing::ListerState, pages::PagePlan};

/// Where an inventory shard stands, kept as its row's token: the data file it reads, the
/// page of that file it is at, the distance to its next file, and the page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Index of the data file in the manifest.
    pub file: usize,
    /// Page of that file.
    pub part: u64,
    /// Shards reading the report (the step between a shard's files).
    pub stride: usize,
    /// Objects a page.
    pub keys: usize,
}

impl Cursor {
    /// The token form.
    pub fn token(&self) -> String {
        format!("inventory:{}:{}:{}:{}", self.file, self.part, self.stride, self.keys)
    }

    /// Reads a token; `None` when it is not one.
    pub fn parse(token: &str) -> Option<Cursor> {
        let mut parts = token.strip_prefix("inventory:")?.split(':').map(str::parse::<u64>);
        let mut next = || parts.next()?.ok();
        let (file, part, stride, keys) = (next()?, next()?, next()?, next()?);
        (stride > 0 && keys > 0).then_some(Cursor {
            file: file as usize,
            part,
            stride: stride as usize,
            keys: keys as usize,
        })
    }
}

/// The report a run names, opened and checked.
pub async fn open(svc: &RunService, spec: &RunSpec, url: &str) -> Result<Inventory> {
    let at = parse_s3_url(url).map_err(|e| Error::invalid(format!("`source.inventory`: {}", e.message())))?;
    Inventory::open(svc.engine.s3(), &at.bucket, &at.prefix, &spec.source.bucket).await
}

/// Shards that read a report of `files` data files, with `spare + 1` shards to give.
fn shards(files: usize, spare: u32) -> usize {
    files.clamp(1, spare as usize + 1)
}

/// The cursor of shard `l` at its current page: from its token, or, for the first shard's
/// first page, the report's first file.
fn cursor(l: &ListerState, files: usize, keys: u32) -> Result<Cursor> {
    match &l.token {
        Some(t) => Cursor::parse(t)
            .ok_or_else(|| Error::internal(format!("listing shard {}: `{t}` is not an inventory cursor", l.shard))),
        None => Ok(Cursor {
            file: l.shard as usize,
            part: 0,
            stride: shards(files, l.spare),
            keys: keys as usize,
        }),
    }
}

/// The listing of shard `l`'s page `page`: the plan saved for it, after reading its data file
/// and saving the plans of every page of the file from the cursor on.
pub async fn plan(
    svc: &RunService,
    id: &str,
    spec: &RunSpec,
    inv: &Inventory,
    l: &ListerState,
    page: u64,
) -> Result<PagePlan> {
    let c = cursor(l, inv.files.len(), svc.config.runs.list_page_keys)?;
    if c.file >= inv.files.len() {
        // A report with no data files, or a shard with none of its own.
        return svc
            .store
            .save_page_plan(id, l.shard, page, PagePlan::new(Vec::new(), None))
            .await;
    }
    let next_file = (c.file + c.stride < inv.files.len()).then(|| {
        Cursor {
            file: c.file + c.stride,
            part: 0,
            ..c
        }
        .token()
    });
    // Every page of the file from the cursor's on is saved as soon as the next row shows
    // whether it is the file's last; memory holds one page.
    let mut rows = inv.rows(svc.engine.s3(), c.file).await?;
    let mut mine = None;
    let mut part = 0u64;
    let mut chunk: Vec<ListedObject> = Vec::with_capacity(c.keys);
    let mut full: Option<Vec<ListedObject>> = None;
    loop {
        let row = rows.next().await?;
        if let Some(o) = &row {
            if !o.key.starts_with(spec.source.prefix.as_str()) {
                continue;
            }
        }
        // A full page followed by a row, or the file's end: the page is done.
        if full.is_some() || row.is_none() {
            let objects = full.take().unwrap_or_else(|| std::mem::take(&mut chunk));
            let next = match row {
                Some(_) => Some(Cursor { part: part + 1, ..c }.token()),
                None => next_file.clone(),
            };
            if part >= c.part {
                let p = page + (part - c.part);
                let saved = svc
                    .store
                    .save_page_plan(id, l.shard, p, PagePlan::new(sorted(objects), next))
                    .await?;
                if p == page {
                    mine = Some(saved);
                }
            }
            part += 1;
        }
        let Some(o) = row else { break };
        chunk.push(o);
        if chunk.len() == c.keys {
            full = Some(std::mem::take(&mut chunk));
        }
    }
    mine.ok_or_else(|| {
        Error::invalid(format!(
            "inventory data file s3://{}/{} has fewer pages than shard {} expected (page {} of it); \
             the report changed under the run: start it again",
            inv.bucket, inv.files[c.file], l.shard, c.part
        ))
    })
}

/// A page's objects in key order (the checkpoint is read by the page's key range), each key
/// once.
fn sorted(mut objects: Vec<ListedObject>) -> Vec<ListedObject> {
    objects.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    objects.dedup_by(|a, b| a.key == b.key);
    objects
}

/// The shards that read the report beside the first, made by the first shard's first page:
/// each starts at its own first file.
pub fn children(first: &mut ListerState, inv: &Inventory, keys: u32) -> Vec<ListerState> {
    let k = shards(inv.files.len(), first.spare);
    let kids: Vec<ListerState> = (1..k)
        .map(|s| ListerState {
            shard: s as u32,
            token: Some(
                Cursor {
                    file: s,
                    part: 0,
                    stride: k,
                    keys: keys as usize,
                }
                .token(),
            ),
            updated_at: crate::state::unix_now(),
            ..ListerState::default()
        })
        .collect();
    first.spare = 0;
    first.born = kids.iter().map(|c| c.shard).collect();
    kids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_foreign_token_is_not_one() {
        let c = Cursor {
            file: 12,
            part: 3,
            stride: 8,
            keys: 1000,
        };
        assert_eq!(Cursor::parse(&c.token()), Some(c));
        for bad in [
            "",
            "abc",
            "inventory:1:2:0:5",
            "inventory:1:2:3",
            "inventory:x:2:3:4",
            "inventory:1:2:3:0",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn shards_share_the_files_round_robin() {
        assert_eq!(shards(0, 7), 1);
        assert_eq!(shards(3, 7), 3);
        assert_eq!(shards(20, 7), 8);
        let first = ListerState {
            spare: 7,
            ..ListerState::default()
        };
        let c = cursor(&first, 3, 50).unwrap();
        assert_eq!((c.file, c.part, c.stride, c.keys), (0, 0, 3, 50));
    }
}
