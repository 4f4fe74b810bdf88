//! Rows of earlier forms, found and moved by `migrate-checkpoints`: rows by source key, to
//! their blob's row (decisions 99); and rows in their bucket and target's single partition,
//! to their own of the sixteen (decision 123).

use crate::azure::table::{Entity, Filter};
use crate::error::{ErrorKind, Result};

use super::keys::{legacy_row_key, row_keys, target_partition};
use super::record::ObjectRecord;
use super::CheckpointStore;

/// What [`CheckpointStore::migrate_legacy`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Migrated {
    /// Rows of the previous form found.
    pub found: u64,
    /// Moved to their blob's row.
    pub moved: u64,
    /// Dropped because the blob's row already held a later word.
    pub superseded: u64,
    /// Split plans and ranges of the previous form dropped (a split in flight starts over).
    pub staging_dropped: u64,
    /// Rows moved from their bucket and target's single partition to their own.
    pub spread: u64,
}

impl CheckpointStore {
    /// The keys in `[first, last]` (S3 order) that still have a row of the previous form:
    /// a lister must not take them for never copied (decisions 99). One range query.
    pub async fn legacy_keys(
        &self,
        bucket: &str,
        target: &str,
        first: &str,
        last: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let filter = Filter::eq("PartitionKey", &target_partition(bucket, target))
            .and("RowKey", "ge", &legacy_row_key(first))
            .and("RowKey", "le", &legacy_row_key(last));
        Ok(self
            .table
            .query_all(Some(filter.as_str()))
            .await?
            .iter()
            .filter(|e| e.row_key.starts_with('k'))
            .filter_map(|e| e.get_str("Key").map(str::to_string))
            .collect())
    }

    /// Moves every row of the previous form (by source key) to its blob's row, keeping a row
    /// already there (it was written later), and drops split plans of the previous form.
    /// Idempotent and resumable: a row is deleted only after its blob's row exists. With
    /// `dry_run`, only counts. `progress` is called after each page of rows.
    pub async fn migrate_legacy(&self, dry_run: bool, progress: &(dyn Fn(&Migrated) + Sync)) -> Result<Migrated> {
        let mut done = Migrated::default();
        // Rows of the blob form in the partition without the hash digit (decision 123), first:
        // a row of the first form below must meet its blob's newer row where it is read, in
        // its own partition, and lose to it. A scan of the whole table, as this command is,
        // run once after upgrading.
        for (from, to) in [("n", "o"), ("s", "t"), ("~n", "~o")] {
            let filter = Filter::default().and("RowKey", "ge", from).and("RowKey", "lt", to);
            self.each_page(&filter, async |rows: Vec<Entity>| {
                for e in &rows {
                    let Some(rec) = ObjectRecord::from_entity(e) else {
                        continue;
                    };
                    let (pk, rk) = row_keys(&rec.bucket, rec.subject(), &rec.target);
                    // In its own partition already, or not a checkpoint row (a split row).
                    if e.partition_key == pk || e.row_key != rk || e.partition_key.ends_with("~staging") {
                        continue;
                    }
                    done.spread += 1;
                    if dry_run {
                        continue;
                    }
                    let seen = Some((e.etag.as_deref().unwrap_or("*"), true));
                    match self.write_over(&rec.to_entity(), seen).await {
                        Ok(()) => {}
                        // Written since in its own partition: that row is newer; drop this one.
                        Err(err) if err.kind() == ErrorKind::Precondition => {
                            let r = self.table.delete(&e.partition_key, &e.row_key, "*").await;
                            crate::error::ok_if(r, ErrorKind::NotFound)?;
                        }
                        Err(err) => return Err(err),
                    }
                }
                progress(&done);
                Ok(())
            })
            .await?;
        }
        // Ordered rows ("k…") and hashed ones ("~" and a hex digit; "~n…" is the new form).
        for (from, to) in [("k", "l"), ("~0", "~g")] {
            let filter = Filter::default().and("RowKey", "ge", from).and("RowKey", "lt", to);
            self.each_page(&filter, async |rows: Vec<Entity>| {
                for e in &rows {
                    let Some(rec) = ObjectRecord::from_entity(e) else {
                        continue;
                    };
                    // Not a checkpoint row of the previous form (a split row, another table's).
                    if e.partition_key.ends_with("~staging") || e.row_key != legacy_row_key(&rec.key) {
                        continue;
                    }
                    done.found += 1;
                    if dry_run {
                        continue;
                    }
                    match self.table.insert(&rec.to_entity()).await {
                        Ok(_) => done.moved += 1,
                        Err(err) if err.kind() == ErrorKind::Precondition => done.superseded += 1,
                        Err(err) => return Err(err),
                    }
                    let r = self.table.delete(&e.partition_key, &e.row_key, "*").await;
                    crate::error::ok_if(r, ErrorKind::NotFound)?;
                }
                progress(&done);
                Ok(())
            })
            .await?;
        }
        // Split plans and ranges of the previous form: their row keys start with a hex digit
        // (the new ones with `n`).
        let filter = Filter::default().and("RowKey", "ge", "0").and("RowKey", "lt", "g");
        self.each_page(&filter, async |rows: Vec<Entity>| {
            for e in rows.iter().filter(|e| e.partition_key.ends_with("~staging")) {
                done.staging_dropped += 1;
                if !dry_run {
                    let r = self.table.delete(&e.partition_key, &e.row_key, "*").await;
                    crate::error::ok_if(r, ErrorKind::NotFound)?;
                }
            }
            progress(&done);
            Ok(())
        })
        .await?;
        Ok(done)
    }
}
