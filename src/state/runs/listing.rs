//! A run's listing shards as stored: one row per shard (`lister` for the first, `lister~<nnnn>`
//! for the others) with its key range, token, page and counters. `pages` reads and writes
//! them with the page plans.

use super::counters::Counters;
use crate::azure::table::Entity;

/// One listing shard's row: its key range, where its listing stands and what it counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListerState {
    /// Shard number (0 holds the whole key space at the start; its row is `lister`).
    pub shard: u32,
    /// The range's lower bound, exclusive (`None`: from the first key).
    pub after: Option<String>,
    /// The range's upper bound, inclusive (`None`: to the last key).
    pub until: Option<String>,
    /// Shard numbers after this one that it may still hand to children: it owns
    /// `shard..=shard + spare`, so children never need to agree on numbers.
    pub spare: u32,
    /// The children its last page's save created, whose first pages that save's step starts
    /// (a redelivered page re-sends them).
    pub born: Vec<u32>,
    /// Continuation token for the next page (`None` before the first page and at the end).
    pub token: Option<String>,
    /// Pages done.
    pub page: u64,
    /// Listing finished.
    pub done: bool,
    /// Scanned, excluded, unsupported, noTransferNeeded, wouldTransfer and enqueued.
    pub counters: Counters,
    /// When a page was last saved (unix seconds; the run's start before the first): how the
    /// sweep tells a listing chain that stopped.
    pub updated_at: i64,
    /// Table ETag for If-Match.
    pub etag: String,
}

impl ListerState {
    /// Whether `key` is past this shard's range (the listing of the shard stops there).
    pub fn past(&self, key: &str) -> bool {
        self.until.as_deref().is_some_and(|u| key.as_bytes() > u.as_bytes())
    }

    /// A child taking `(after, until]` with shard numbers `shard..=shard + spare`.
    pub fn child(shard: u32, after: String, until: Option<String>, spare: u32) -> Self {
        ListerState {
            shard,
            after: Some(after),
            until,
            spare,
            updated_at: crate::state::unix_now(),
            ..ListerState::default()
        }
    }
}

/// A run's listing: every shard's row.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The shards, by number.
    pub shards: Vec<ListerState>,
}

impl Listing {
    /// Every shard listed its range to the end.
    pub fn done(&self) -> bool {
        self.shards.iter().all(|s| s.done)
    }

    /// The shards' counters, summed.
    pub fn counters(&self) -> Counters {
        let mut all = Counters::default();
        for s in &self.shards {
            all.merge(&s.counters);
        }
        all
    }

    /// When any shard last saved a page.
    pub fn updated_at(&self) -> i64 {
        self.shards.iter().map(|s| s.updated_at).max().unwrap_or(0)
    }

    /// Pages listed by all shards.
    pub fn pages(&self) -> u64 {
        self.shards.iter().map(|s| s.page).sum()
    }
}

/// The row of shard `shard` (shard 0 keeps the name of a listing that had no shards).
pub(super) fn lister_row(shard: u32) -> String {
    match shard {
        0 => "lister".to_string(),
        n => format!("lister~{n:04}"),
    }
}

fn shard_of_row(row: &str) -> Option<u32> {
    match row {
        "lister" => Some(0),
        r => r.strip_prefix("lister~")?.parse().ok(),
    }
}

/// The row of shard `l`.
pub(crate) fn lister_entity(id: &str, l: &ListerState) -> Entity {
    let mut e = Entity::new(id, lister_row(l.shard));
    e.set_i64("Page", l.page as i64)
        .set_str("Done", if l.done { "true" } else { "false" })
        .set_i64("UpdatedAt", crate::state::unix_now());
    for (k, v) in [("Token", &l.token), ("After", &l.after), ("Until", &l.until)] {
        if let Some(v) = v {
            e.set_str(k, v);
        }
    }
    if l.spare > 0 {
        e.set_i64("Spare", i64::from(l.spare));
    }
    if !l.born.is_empty() {
        e.set_str("Born", l.born.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    }
    l.counters.write(&mut e);
    e
}

/// A shard's row as read (`None` for a row that is not one).
pub(super) fn lister_state(e: &Entity) -> Option<ListerState> {
    let s = |n: &str| e.get_str(n).map(str::to_string);
    Some(ListerState {
        shard: shard_of_row(&e.row_key)?,
        after: s("After"),
        until: s("Until"),
        spare: e
            .get_i64("Spare")
            .unwrap_or(0)
            .clamp(0, i64::from(crate::config::MAX_LIST_SHARDS)) as u32,
        born: e
            .get_str("Born")
            .map(|b| b.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default(),
        token: s("Token"),
        page: e.get_i64("Page").unwrap_or(0).max(0) as u64,
        done: e.get_str("Done") == Some("true"),
        counters: Counters::read(e),
        updated_at: e.get_i64("UpdatedAt").unwrap_or(0),
        etag: e.etag.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shards_row_reads_back_as_written() {
        let mut l = ListerState::child(7, "a/b".into(), Some("c/\u{e9}'x".into()), 3);
        l.born = vec![8, 10];
        l.token = Some("tok".into());
        l.page = 4;
        l.counters.add(super::super::counters::Tally::Scanned, 12);
        let mut e = lister_entity("run1", &l);
        e.etag = Some("W/1".into());
        let back = lister_state(&e).expect("a shard row");
        assert_eq!(
            (back.shard, back.after, back.until, back.spare),
            (7, l.after.clone(), l.until.clone(), 3)
        );
        assert_eq!(
            (back.born, back.token, back.page, back.done),
            (vec![8, 10], l.token.clone(), 4, false)
        );
        assert_eq!(back.counters, l.counters);
        assert_eq!(lister_row(0), "lister");
        assert_eq!(shard_of_row(&lister_row(42)), Some(42));
        assert_eq!(shard_of_row("plan~000000000001~000"), None);
    }
}
