//! Run counters as Azure Storage Mover reports them: objects and bytes per outcome.

use serde_json::{Map, Value};

use crate::azure::table::Entity;
use crate::state::checkpoint::Outcome;

/// One counter of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "camelCase")]
pub enum Tally {
    /// Listed (after the source prefix, before filters).
    Scanned,
    /// Left out by filters or because they are folder markers.
    Excluded,
    /// Cannot be copied (archived class, invalid blob name).
    Unsupported,
    /// Already at the target with the same ETag.
    NoTransferNeeded,
    /// Copied and verified.
    Transferred,
    /// Failed for good (after the last attempt).
    Failed,
    /// Blobs the prune deleted because their source is gone (mirror mode, after listing).
    /// Named `deleted` wherever it is stored or shown.
    #[strum(serialize = "deleted")]
    Pruned,
    /// Listed, then gone from the source before its copy.
    Vanished,
    /// Dry run: would be copied.
    WouldTransfer,
    /// Dry run: would be deleted.
    WouldDelete,
    /// Sent to `copy-objects` (bookkeeping: the run is settled when these are).
    Enqueued,
}

impl Tally {
    /// Every counter, in report order.
    pub const ALL: [Tally; 11] = [
        Tally::Scanned,
        Tally::Excluded,
        Tally::Unsupported,
        Tally::NoTransferNeeded,
        Tally::Transferred,
        Tally::Failed,
        Tally::Pruned,
        Tally::Vanished,
        Tally::WouldTransfer,
        Tally::WouldDelete,
        Tally::Enqueued,
    ];

    /// The JSON and column name (bytes are `<name>Bytes`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The counter a key's copy is counted in, from the outcome its checkpoint row records:
    /// the one mapping from rows to counters (and, by the counter's name, to report lines).
    ///
    /// | row (`Outcome` column) | counter and report name |
    /// |---|---|
    /// | `copied` | `transferred` |
    /// | `no_transfer_needed` | `noTransferNeeded` |
    /// | `unsupported` | `unsupported` |
    /// | `excluded` | `excluded` |
    /// | `failed` | `failed` (a report says `retrying` until the last attempt) |
    /// | `deleted`, `source_missing` | `vanished`: listed, then gone from the source before its copy (its blob deleted in mirror mode, kept in additive) |
    ///
    /// The `deleted` counter ([`Tally::Pruned`]) is not a row's outcome: it counts the
    /// blobs a mirror run's prune deletes after listing.
    pub fn of_row(o: Outcome) -> Tally {
        match o {
            Outcome::Copied => Tally::Transferred,
            Outcome::NoTransferNeeded => Tally::NoTransferNeeded,
            Outcome::Unsupported => Tally::Unsupported,
            Outcome::Excluded => Tally::Excluded,
            Outcome::Failed => Tally::Failed,
            Outcome::Deleted | Outcome::SourceMissing => Tally::Vanished,
        }
    }

    fn index(self) -> usize {
        Tally::ALL.iter().position(|t| *t == self).expect("in ALL")
    }
}

/// Objects and bytes per counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters([(u64, u64); 11]);

impl Counters {
    /// Adds one object of `bytes` to `t`.
    pub fn add(&mut self, t: Tally, bytes: u64) {
        let e = &mut self.0[t.index()];
        e.0 += 1;
        e.1 += bytes;
    }

    /// Takes one object of `bytes` back out of `t` (never below zero).
    pub fn remove(&mut self, t: Tally, bytes: u64) {
        let e = &mut self.0[t.index()];
        e.0 = e.0.saturating_sub(1);
        e.1 = e.1.saturating_sub(bytes);
    }

    /// Objects counted in `t`.
    pub fn objects(&self, t: Tally) -> u64 {
        self.0[t.index()].0
    }

    /// Bytes counted in `t`.
    pub fn bytes(&self, t: Tally) -> u64 {
        self.0[t.index()].1
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Counters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            a.0 += b.0;
            a.1 += b.1;
        }
    }

    /// Objects with a final per-key outcome, decided by the lister or by a copy (everything
    /// but the scan itself, the queue bookkeeping and the prune). A run has settled when this
    /// reaches `scanned`.
    pub fn accounted(&self) -> u64 {
        [
            Tally::Excluded,
            Tally::Unsupported,
            Tally::NoTransferNeeded,
            Tally::WouldTransfer,
            Tally::Transferred,
            Tally::Failed,
            Tally::Vanished,
        ]
        .iter()
        .map(|t| self.objects(*t))
        .sum()
    }

    /// Writes the counters as `C_<name>` / `B_<name>` columns.
    pub fn write(&self, e: &mut Entity) {
        for t in Tally::ALL {
            e.set_i64(&format!("C_{}", t.name()), self.objects(t) as i64);
            e.set_i64(&format!("B_{}", t.name()), self.bytes(t) as i64);
        }
    }

    /// Reads counters written by [`Self::write`] (missing columns are zero).
    pub fn read(e: &Entity) -> Self {
        let mut c = Counters::default();
        for t in Tally::ALL {
            let n = e.get_i64(&format!("C_{}", t.name())).unwrap_or(0).max(0) as u64;
            let b = e.get_i64(&format!("B_{}", t.name())).unwrap_or(0).max(0) as u64;
            c.0[t.index()] = (n, b);
        }
        c
    }

    /// `{"scanned": n, "scannedBytes": b, ...}` (bookkeeping counters left out).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for t in Tally::ALL {
            if t == Tally::Enqueued {
                continue;
            }
            m.insert(t.name().into(), self.objects(t).into());
            m.insert(format!("{}Bytes", t.name()), self.bytes(t).into());
        }
        Value::Object(m)
    }
}

/// Counters travel in run summaries as the flat map of [`Counters::to_json`].
impl serde::Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// Reads the flat map back; a counter it lacks is zero, a name it does not know is ignored.
impl<'de> serde::Deserialize<'de> for Counters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: std::collections::HashMap<String, u64> = serde::Deserialize::deserialize(d)?;
        let mut c = Counters::default();
        for t in Tally::ALL {
            let n = m.get(t.name()).copied().unwrap_or(0);
            let b = m.get(&format!("{}Bytes", t.name())).copied().unwrap_or(0);
            c.0[t.index()] = (n, b);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key can be followed from its row to its counter and its report line by name, and
    /// the names stored and shown stay as they were.
    #[test]
    fn each_row_outcome_has_one_counter_and_report_name() {
        use crate::state::runs::report::ReportOutcome;
        let every = |o: Outcome| match o {
            // A new outcome fails to compile here until it is given its counter below.
            Outcome::Copied
            | Outcome::NoTransferNeeded
            | Outcome::Unsupported
            | Outcome::Excluded
            | Outcome::Failed
            | Outcome::Deleted
            | Outcome::SourceMissing => o,
        };
        let table = [
            (Outcome::Copied, "copied", "transferred"),
            (Outcome::NoTransferNeeded, "no_transfer_needed", "noTransferNeeded"),
            (Outcome::Unsupported, "unsupported", "unsupported"),
            (Outcome::Excluded, "excluded", "excluded"),
            (Outcome::Failed, "failed", "failed"),
            (Outcome::Deleted, "deleted", "vanished"),
            (Outcome::SourceMissing, "source_missing", "vanished"),
        ];
        for (o, row, counter) in table {
            let o = every(o);
            assert_eq!(o.as_str(), row);
            assert_eq!(Outcome::parse(row), Some(o));
            let t = Tally::of_row(o);
            assert_eq!(t.name(), counter, "{row}");
            let line: ReportOutcome = counter.parse().unwrap();
            assert_eq!(line.name(), counter);
        }
        // `deleted` in counters and reports is the prune's, never a row's copy.
        assert!(table.iter().all(|(o, _, _)| Tally::of_row(*o) != Tally::Pruned));
        assert_eq!(Tally::Pruned.name(), "deleted");
        assert_eq!(ReportOutcome::Pruned.name(), "deleted");
        assert_eq!(serde_json::to_value(ReportOutcome::Pruned).unwrap(), "deleted");
        assert_eq!("deleted".parse::<ReportOutcome>().unwrap(), ReportOutcome::Pruned);
    }

    #[test]
    fn round_trip_and_merge() {
        let mut a = Counters::default();
        a.add(Tally::Scanned, 10);
        a.add(Tally::Transferred, 10);
        let mut e = Entity::new("p", "r");
        a.write(&mut e);
        let mut b = Counters::read(&e);
        assert_eq!(b, a);
        b.merge(&a);
        assert_eq!(b.objects(Tally::Scanned), 2);
        assert_eq!(b.bytes(Tally::Transferred), 20);
        assert_eq!(b.accounted(), 2);
        assert_eq!(b.to_json()["transferredBytes"], 20);
        let back: Counters = serde_json::from_value(serde_json::to_value(&b).unwrap()).unwrap();
        let mut want = b.clone();
        want.0[Tally::Enqueued.index()] = (0, 0);
        assert_eq!(back, want);
        assert!(b.to_json().get("enqueued").is_none());
    }
}
