//! Counting a run's outcomes exactly once per key: sharded counter rows, and per-key
//! markers written in the same entity-group transaction as their shard's counter.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::counters::{Counters, Tally};
use super::store::RunStore;
use crate::azure::table::{BatchOp, BatchOutcome, Entity};
use crate::error::{Error, Result};

/// Counter shards (partitions) per run.
pub const SHARDS: u32 = 16;

/// Counter rows per shard: a key's outcome goes to one of them, chosen by its hash, so
/// copies in flight meet on a row four times less often (If-Match conflicts, each a re-read
/// and a retry, grew to 0.87 per object with 64 copies in flight on one row per shard:
/// bench/scaleout.sh). The first keeps the name of a run counted before (`counter`).
const COUNTER_ROWS: u8 = 4;

impl RunStore {
    /// Counts many keys, each once per run, with one transaction per shard for up to 99 of
    /// them (their markers plus the shard's counter). For a single writer, the CLI, that is
    /// about one table request per hundred copies instead of two a copy. A key counted
    /// before (a replay) makes its group fall back to [`Self::record`], key by key.
    pub async fn record_many(&self, id: &str, items: &[Counted]) -> Result<()> {
        let mut shards: HashMap<(String, String), Vec<(Entity, &Counted)>> = HashMap::new();
        for c in items {
            let m = count_marker(id, &c.key, c.tally, c.bytes, c.reason.as_deref());
            shards
                .entry((m.partition_key.clone(), counter_row(&c.key)))
                .or_default()
                .push((m, c));
        }
        for ((pk, counter), group) in shards {
            for chunk in group.chunks(99) {
                self.record_chunk(id, &pk, &counter, chunk).await?;
            }
        }
        Ok(())
    }

    async fn record_chunk(&self, id: &str, pk: &str, counter: &str, chunk: &[(Entity, &Counted)]) -> Result<()> {
        let mut tries = self.conflicts(format!("run {id}: counter shard {pk}"));
        loop {
            tries.next().await?;
            let current = self.table.get(pk, counter).await?;
            let mut counters = current.as_ref().map(Counters::read).unwrap_or_default();
            for (_, c) in chunk {
                counters.add(c.tally, c.bytes);
            }
            let mut row = Entity::new(pk, counter);
            counters.write(&mut row);
            let tag = current.as_ref().and_then(|c| c.etag.clone());
            let mut ops: Vec<BatchOp> = chunk.iter().map(|(m, _)| BatchOp::Insert(m)).collect();
            ops.push(match &tag {
                Some(t) => BatchOp::Update(&row, Some(t)),
                None => BatchOp::Insert(&row),
            });
            match self.table.transact(&ops).await? {
                BatchOutcome::Committed => return Ok(()),
                BatchOutcome::Rejected { status: 409, code } if code != "EntityAlreadyExists" || tag.is_some() => {
                    for (_, c) in chunk {
                        self.record(id, &c.key, c.tally, c.bytes, c.reason.as_deref()).await?;
                    }
                    return Ok(());
                }
                // The shard moved under us: read it again.
                BatchOutcome::Rejected { status: 409 | 412, .. } => {}
                BatchOutcome::Rejected { status, code } => {
                    return Err(Error::new(
                        crate::error::kind_from_status(status, Some(&code)),
                        format!("run {id}: counting {} keys: HTTP {status} {code}", chunk.len()),
                    ))
                }
            }
        }
    }

    /// Counts `key` under `tally` exactly once per run, however often it is replayed.
    /// Returns whether this call counted it.
    pub async fn record(&self, id: &str, key: &str, tally: Tally, bytes: u64, reason: Option<&str>) -> Result<bool> {
        let marker = count_marker(id, key, tally, bytes, reason);
        let pk = marker.partition_key.clone();
        let counter = counter_row(key);
        // Set when the key was counted as "no transfer needed" by a twin delivery that lost
        // the race to this one's copy: the count moves over instead of being added.
        let mut upgrade: Option<(String, u64)> = None;
        let mut tries = self.conflicts(format!("run {id}: counter shard {pk}"));
        loop {
            tries.next().await?;
            let current = self.table.get(&pk, &counter).await?;
            let mut counters = current.as_ref().map(Counters::read).unwrap_or_default();
            counters.add(tally, bytes);
            if let Some((_, old_bytes)) = &upgrade {
                counters.remove(Tally::NoTransferNeeded, *old_bytes);
            }
            let mut row = Entity::new(&pk, &counter);
            counters.write(&mut row);
            let tag = current.as_ref().and_then(|c| c.etag.clone());
            let op = match &tag {
                Some(t) => BatchOp::Update(&row, Some(t)),
                None => BatchOp::Insert(&row),
            };
            let mark = match &upgrade {
                Some((marker_tag, _)) => BatchOp::Update(&marker, Some(marker_tag)),
                None => BatchOp::Insert(&marker),
            };
            match self.table.transact(&[mark, op]).await? {
                BatchOutcome::Committed => return Ok(true),
                BatchOutcome::Rejected { status: 409, .. } | BatchOutcome::Rejected { status: 412, .. } => {
                    if let Some(existing) = self.table.get(&pk, &marker.row_key).await? {
                        let was = existing.get_str("Tally").unwrap_or_default();
                        if tally == Tally::Transferred && was == Tally::NoTransferNeeded.name() {
                            let old_bytes = existing.get_i64("Bytes").unwrap_or(0).max(0) as u64;
                            upgrade = Some((existing.etag.clone().unwrap_or_default(), old_bytes));
                            continue;
                        }
                        return Ok(false);
                    }
                    // The shard moved under us: read it again.
                }
                BatchOutcome::Rejected { status, code } => {
                    return Err(Error::new(
                        crate::error::kind_from_status(status, Some(&code)),
                        format!("run {id}: counting {key}: HTTP {status} {code}"),
                    ))
                }
            }
        }
    }

    /// The sum of every counter shard.
    pub async fn shard_counters(&self, id: &str) -> Result<Counters> {
        let filter = format!(
            "PartitionKey ge '{id}~' and PartitionKey lt '{id}~~' and RowKey ge 'counter' and RowKey lt 'counter~~'"
        );
        let mut c = Counters::default();
        for e in self.table.query_all(Some(&filter)).await? {
            c.merge(&Counters::read(&e));
        }
        Ok(c)
    }

    /// The first `n` failed keys with their reasons.
    pub async fn failures(&self, id: &str, n: u32) -> Result<Vec<(String, String)>> {
        let filter = format!("PartitionKey ge '{id}~' and PartitionKey lt '{id}~~' and Tally eq 'failed'");
        let (rows, _) = self.table.query(Some(&filter), Some(n), None).await?;
        Ok(rows
            .iter()
            .take(n as usize)
            .map(|e| {
                (
                    e.get_str("Key").unwrap_or_default().to_string(),
                    e.get_str("Reason").unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Notes that `key`'s copy failed an attempt that is not its last (`retrying` in the
    /// run's report until a final outcome is counted). Counts nothing. Insert-or-replace: the
    /// latest attempt's reason wins.
    pub async fn record_retrying(&self, id: &str, key: &str, reason: &str, attempt: u32) -> Result<()> {
        let (pk, hash) = key_rows(id, key);
        let mut row = Entity::new(pk, format!("r{hash}"));
        row.set_str("Key", key)
            .set_str("Tally", RETRYING)
            .set_str("Reason", stored_reason(reason))
            .set_i64("Attempt", attempt as i64);
        self.table.update(&row, None).await.map(|_| ())
    }

    /// Counts every key still `retrying` (its copy failed an attempt and no final outcome
    /// was counted) as failed, with its last attempt's reason: for a run that ends while
    /// such copies are parked or lost (a host that poisoned a message whose last attempt
    /// timed out never told us). Keys counted meanwhile are left as counted. Returns how many
    /// were settled here.
    pub async fn settle_retrying(&self, id: &str) -> Result<u64> {
        let filter = format!("PartitionKey ge '{id}~' and PartitionKey lt '{id}~~' and Tally eq '{RETRYING}'");
        let mut settled = 0;
        for row in self.table.query_all(Some(&filter)).await? {
            let Some(key) = row.get_str("Key") else { continue };
            let reason = format!(
                "never settled: attempt {} failed ({}), and no later attempt reported back",
                row.get_i64("Attempt").unwrap_or(0),
                row.get_str("Reason").unwrap_or("no reason recorded")
            );
            if self.record(id, key, Tally::Failed, 0, Some(&reason)).await? {
                settled += 1;
            }
        }
        Ok(settled)
    }
}

/// One key's count for [`RunStore::record_many`].
#[derive(Debug, Clone)]
pub struct Counted {
    /// The key.
    pub key: String,
    /// Its counter.
    pub tally: Tally,
    /// Its bytes.
    pub bytes: u64,
    /// Why, for failures.
    pub reason: Option<String>,
}

/// The longest reason a row keeps, in characters: rows stay small (a run has one per key),
/// and far under the Table service's 64 KiB a property.
pub const MAX_REASON_CHARS: usize = 1000;

/// A reason as a row keeps it: redacted, and cut to [`MAX_REASON_CHARS`].
pub(super) fn stored_reason(r: &str) -> String {
    let r = crate::redact::redact(r);
    match r.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &r[..cut]),
        None => r,
    }
}

/// A key's counter shard (partition) and its hash, which names its rows there.
pub(crate) fn key_rows(id: &str, key: &str) -> (String, String) {
    let h = Sha256::digest(key.as_bytes());
    (format!("{id}~{:02}", u32::from(h[0]) % SHARDS), hex::encode(&h[..20]))
}

/// The counter row of `key` in its shard: one of [`COUNTER_ROWS`], by a byte of its hash that
/// the shard's choice does not use, so a key always counts on the same row (a count moved by
/// an upgrade is removed where it was added).
fn counter_row(key: &str) -> String {
    match Sha256::digest(key.as_bytes())[1] % COUNTER_ROWS {
        0 => "counter".to_string(),
        n => format!("counter~{n}"),
    }
}

/// The per-key marker that makes counting idempotent, in the key's counter shard.
fn count_marker(id: &str, key: &str, tally: Tally, bytes: u64, reason: Option<&str>) -> Entity {
    let (pk, hash) = key_rows(id, key);
    let mut marker = Entity::new(pk, format!("o{hash}"));
    marker
        .set_str("Key", key)
        .set_str("Tally", tally.name())
        .set_i64("Bytes", bytes as i64);
    if let Some(r) = reason {
        marker.set_str("Reason", stored_reason(r));
    }
    marker
}

/// The `Tally` a retrying row carries (not a counter).
pub(crate) const RETRYING: &str = "retrying";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_count_goes_to_one_of_its_shards_rows_always_the_same() {
        let mut rows = std::collections::BTreeMap::new();
        for i in 0..400 {
            let key = format!("k/{i}");
            assert_eq!(counter_row(&key), counter_row(&key));
            *rows.entry(counter_row(&key)).or_insert(0) += 1;
        }
        let names: Vec<&String> = rows.keys().collect();
        assert_eq!(names, ["counter", "counter~1", "counter~2", "counter~3"]);
        assert!(rows.values().all(|&n| n > 60), "spread: {rows:?}");
    }
}
