//! The run lock: one row per source/target pair names the run working on it, with an
//! optional lease its driving process renews.

use std::time::Duration;

use super::store::RunStore;
use crate::azure::table::Entity;
use crate::error::{ErrorKind, Result};
use crate::state::unix_now;

const LOCK_PK: &str = "lock";

impl RunStore {
    /// Takes the lock for `key` for run `id`, as a lease of `lease` when the run is driven by
    /// one process that renews it ([`Self::renew`]), or for as long as the run runs when it is
    /// driven by queues (`None`).
    pub async fn lock(&self, key: &str, id: &str, lease: Option<Duration>) -> Result<Lock> {
        let mut e = Entity::new(LOCK_PK, key);
        e.set_str("RunId", id);
        if let Some(l) = lease {
            e.set_i64("LeaseUntil", unix_now() + l.as_secs() as i64);
        }
        let mut tries = self.conflicts(format!("run lock {key}: taking it for run {id}"));
        loop {
            tries.next().await?;
            match self.table.insert(&e).await {
                Ok(_) => return Ok(Lock::Taken),
                Err(err) if err.kind() == ErrorKind::Precondition => {}
                Err(err) => return Err(err),
            }
            let Some(held) = self.table.get(LOCK_PK, key).await? else {
                continue;
            };
            let holder = held.get_str("RunId").unwrap_or_default().to_string();
            let lease = held.get_i64("LeaseUntil");
            let lapsed = lease.is_some_and(|t| t < unix_now());
            let running = self.get(&holder).await?.is_some_and(|r| !r.state.is_final());
            // A current lease holds even for a run that ended (cancelled elsewhere): its
            // process may still be finishing copies, and releases the lease when it stops.
            if (running || lease.is_some()) && !lapsed {
                return Ok(Lock::Busy(holder));
            }
            // The holder ended (or vanished) without releasing, or its process stopped
            // renewing the lease: take the lock over.
            match self.table.update(&e, held.etag.as_deref()).await {
                Ok(_) if running => return Ok(Lock::TakenOver(holder)),
                Ok(_) => return Ok(Lock::Taken),
                Err(err) if err.kind() == ErrorKind::Precondition => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Extends run `id`'s lease on `key` to `lease` from now. `false` when the lock is no
    /// longer this run's (it lapsed and another run took it over).
    pub async fn renew(&self, key: &str, id: &str, lease: Duration) -> Result<bool> {
        let mut tries = self.conflicts(format!("run lock {key}: renewing run {id}'s lease"));
        loop {
            tries.next().await?;
            let Some(held) = self.table.get(LOCK_PK, key).await? else {
                return Ok(false);
            };
            if held.get_str("RunId") != Some(id) {
                return Ok(false);
            }
            let mut e = Entity::new(LOCK_PK, key);
            e.set_str("RunId", id)
                .set_i64("LeaseUntil", unix_now() + lease.as_secs() as i64);
            match self.table.update(&e, held.etag.as_deref()).await {
                Ok(_) => return Ok(true),
                Err(err) if err.kind() == ErrorKind::Precondition => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Until when run `id` holds `key` as a lease (unix seconds): `None` when it holds no
    /// lease on it (another run took it, or it was never a lease).
    pub async fn lease_until(&self, key: &str, id: &str) -> Result<Option<i64>> {
        Ok(self
            .table
            .get(LOCK_PK, key)
            .await?
            .filter(|held| held.get_str("RunId") == Some(id))
            .and_then(|held| held.get_i64("LeaseUntil")))
    }

    /// Releases `key` if run `id` still holds it.
    ///
    /// A lease (a lock its driving process renews) is released only with `leased`: by that
    /// process itself, once it has stopped writing. Anyone else ending the run (a cancel)
    /// leaves it to run out, so no second run starts while the first still writes.
    pub async fn unlock(&self, key: &str, id: &str, leased: bool) -> Result<()> {
        if let Some(held) = self.table.get(LOCK_PK, key).await? {
            if held.get_str("RunId") == Some(id) && (leased || held.get_i64("LeaseUntil").is_none()) {
                let r = self
                    .table
                    .delete(LOCK_PK, key, held.etag.as_deref().unwrap_or("*"))
                    .await;
                return crate::error::ok_if(r, ErrorKind::Precondition);
            }
        }
        Ok(())
    }
}

/// What taking a run lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// Taken for this run.
    Taken,
    /// This run (by id) holds it and is alive: still running, its lease (if any) current.
    Busy(String),
    /// Taken over from this run, still marked running, whose process stopped renewing its
    /// lease: the caller ends it.
    TakenOver(String),
}
