//! Mirror mode's delete candidates: the keys whose blobs a run found with no source object,
//! one row each under `<id>~prune`, written while the blobs are listed page by page and
//! removed as each is deleted, so a prune spread over many checks resumes where it stopped.

use sha2::{Digest, Sha256};

use super::store::RunStore;
use crate::azure::table::{Entity, Filter};
use crate::error::{ErrorKind, Result};

fn partition(id: &str) -> String {
    format!("{id}~prune")
}

fn candidate(id: &str, key: &str) -> Entity {
    let mut e = Entity::new(
        partition(id),
        format!("c{}", hex::encode(&Sha256::digest(key.as_bytes())[..20])),
    );
    e.set_str("Key", key);
    e
}

impl RunStore {
    /// Keeps `keys` as delete candidates of run `id` (insert-or-replace: a page listed twice
    /// adds nothing).
    pub async fn add_prune_candidates(&self, id: &str, keys: &[String]) -> Result<()> {
        let rows: Vec<Entity> = keys.iter().map(|k| candidate(id, k)).collect();
        self.upsert_rows(id, "delete candidates", &rows).await
    }

    /// Up to `limit` of run `id`'s delete candidates.
    pub async fn prune_candidates(&self, id: &str, limit: u32) -> Result<Vec<String>> {
        let filter = Filter::eq("PartitionKey", &partition(id));
        let (rows, _) = self.table.query(Some(filter.as_str()), Some(limit), None).await?;
        Ok(rows
            .iter()
            .filter_map(|e| e.get_str("Key").map(str::to_string))
            .collect())
    }

    /// Drops one candidate, once it is dealt with (already gone is fine).
    pub async fn drop_prune_candidate(&self, id: &str, key: &str) -> Result<()> {
        let e = candidate(id, key);
        crate::error::ok_if(
            self.table.delete(&e.partition_key, &e.row_key, "*").await,
            ErrorKind::NotFound,
        )
    }
}
