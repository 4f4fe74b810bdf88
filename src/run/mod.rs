//! Runs: bulk runs (spec, store, lister, finish, webhook) with counters as Azure Storage
//! Mover reports job runs; the SQS drain loop; the `watch` worker.

pub mod counters;
pub mod cutover;
pub mod dashboard;
pub mod drain;
pub mod finish;
pub mod health;
pub mod lag;
pub mod lister;
pub mod report;
pub mod service;
pub mod spec;
pub mod store;
pub mod verify;
pub mod webhook;
pub mod worker;

use std::collections::BTreeMap;

use crate::checkpoint::Outcome;

/// Counts and bytes per outcome, plus the first failures with their reasons.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Objects seen.
    pub scanned: u64,
    /// Outcome -> (objects, bytes).
    pub by_outcome: BTreeMap<&'static str, (u64, u64)>,
    /// First failures: (key, reason).
    pub failures: Vec<(String, String)>,
}

/// How many failures a summary keeps.
pub const MAX_LISTED_FAILURES: usize = 20;

impl RunSummary {
    /// Adds one object's outcome.
    pub fn add(&mut self, key: &str, outcome: Outcome, bytes: u64, reason: Option<&str>) {
        self.scanned += 1;
        let e = self.by_outcome.entry(outcome.as_str()).or_default();
        e.0 += 1;
        e.1 += bytes;
        if matches!(outcome, Outcome::Failed | Outcome::Unsupported) && self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push((key.to_string(), reason.unwrap_or("").to_string()));
        }
    }

    /// Objects with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.by_outcome.get(outcome.as_str()).map_or(0, |e| e.0)
    }

    /// Bytes with `outcome`.
    pub fn bytes(&self, outcome: Outcome) -> u64 {
        self.by_outcome.get(outcome.as_str()).map_or(0, |e| e.1)
    }

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let mut s = format!("{:<20} {:>10} {:>16}\n", "outcome", "objects", "bytes");
        for (k, (n, b)) in &self.by_outcome {
            s.push_str(&format!("{k:<20} {n:>10} {b:>16}\n"));
        }
        s.push_str(&format!("{:<20} {:>10}\n", "scanned", self.scanned));
        for (k, r) in &self.failures {
            s.push_str(&format!("  ! {k}: {r}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bytes() {
        let mut s = RunSummary::default();
        s.add("a", Outcome::Copied, 10, None);
        s.add("b", Outcome::Copied, 5, None);
        s.add("c", Outcome::Failed, 0, Some("checksum mismatch"));
        assert_eq!(s.scanned, 3);
        assert_eq!(s.count(Outcome::Copied), 2);
        assert_eq!(s.bytes(Outcome::Copied), 15);
        assert!(s.table().contains("c: checksum mismatch"));
    }
}
