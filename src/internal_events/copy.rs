//! The events of one object's copy (`engine::copy::copy_step`): settled, split, one range
//! staged, failed, restarted, and a failure that could not be recorded.

use super::{count, InternalEvent};

/// An object is settled: copied, already current, deleted, refused or left out.
#[derive(Debug)]
pub struct ObjectDone<'a> {
    /// Source bucket.
    pub bucket: &'a str,
    /// Source key.
    pub key: &'a str,
    /// Target blob ("" when the key maps to none).
    pub blob: &'a str,
    /// Bytes moved (0 when nothing was).
    pub bytes: u64,
    /// The checkpoint row's outcome (`copied`, `no_transfer_needed`, ...).
    pub outcome: &'static str,
    /// Why, when the outcome needs one.
    pub reason: &'a str,
    /// How the bytes moved (`server_side`, `streamed`, or "").
    pub path: &'static str,
    /// How the copy was checked (`crc64nvme`, `md5`, `size`, or "").
    pub verified: &'static str,
    /// The run it belongs to ("" for events).
    pub run_id: &'a str,
    /// Time spent on the step.
    pub duration_ms: u64,
}

impl InternalEvent for ObjectDone<'_> {
    fn emit(self) {
        tracing::info!(
            bucket = self.bucket,
            key = self.key,
            blob = self.blob,
            bytes = self.bytes,
            outcome = self.outcome,
            reason = self.reason,
            path = self.path,
            verified = self.verified,
            run_id = self.run_id,
            duration_ms = self.duration_ms,
            "object done"
        );
        count("objects", self.outcome, 1);
        count("bytes", self.outcome, self.bytes);
    }
}

/// An object too big for one invocation was cut into ranges (or its plan found again).
#[derive(Debug)]
pub struct ObjectSplit<'a> {
    /// Source bucket.
    pub bucket: &'a str,
    /// Source key.
    pub key: &'a str,
    /// Target blob.
    pub blob: &'a str,
    /// Ranges in the plan.
    pub ranges: u32,
    /// Ranges recorded already.
    pub staged: u32,
    /// Ranges this caller is to send.
    pub to_send: usize,
    /// Whether this caller holds the plan's lease.
    pub claimed: bool,
    /// The run it belongs to.
    pub run_id: &'a str,
    /// Time spent on the step.
    pub duration_ms: u64,
}

impl InternalEvent for ObjectSplit<'_> {
    fn emit(self) {
        tracing::info!(
            bucket = self.bucket,
            key = self.key,
            blob = self.blob,
            // Nothing moves in this step; the ranges count their own.
            bytes = 0u64,
            outcome = "split",
            reason = "",
            ranges = self.ranges,
            staged = self.staged,
            to_send = self.to_send,
            claimed = self.claimed,
            run_id = self.run_id,
            duration_ms = self.duration_ms,
            "object split into ranges"
        );
        count("objects", "split", 1);
    }
}

/// One range of a split copy is recorded.
#[derive(Debug)]
pub struct RangeStaged<'a> {
    /// Source bucket.
    pub bucket: &'a str,
    /// Source key.
    pub key: &'a str,
    /// Target blob.
    pub blob: &'a str,
    /// Which range.
    pub range: u32,
    /// Ranges recorded now.
    pub staged: u32,
    /// Ranges in the plan.
    pub ranges: u32,
    /// The run it belongs to.
    pub run_id: &'a str,
    /// Time spent on the step.
    pub duration_ms: u64,
}

impl InternalEvent for RangeStaged<'_> {
    fn emit(self) {
        tracing::info!(
            bucket = self.bucket,
            key = self.key,
            blob = self.blob,
            bytes = 0u64,
            outcome = "staged",
            reason = "",
            range = self.range,
            staged = self.staged,
            ranges = self.ranges,
            run_id = self.run_id,
            duration_ms = self.duration_ms,
            "range staged"
        );
        count("ranges", "staged", 1);
    }
}

/// An attempt at an object failed; the checkpoint records why, and the caller retries or
/// parks it.
#[derive(Debug)]
pub struct ObjectFailed<'a> {
    /// Source bucket.
    pub bucket: &'a str,
    /// Source key.
    pub key: &'a str,
    /// Target blob ("" when the key maps to none).
    pub blob: &'a str,
    /// The error's kind (`transient`, `integrity`, ...).
    pub error_kind: &'static str,
    /// The error, redacted.
    pub reason: &'a str,
    /// The range, for a range of a split copy.
    pub range: Option<u32>,
    /// The run it belongs to.
    pub run_id: &'a str,
    /// Time spent on the step.
    pub duration_ms: u64,
}

impl InternalEvent for ObjectFailed<'_> {
    fn emit(self) {
        tracing::warn!(
            bucket = self.bucket,
            key = self.key,
            blob = self.blob,
            bytes = 0u64,
            outcome = "failed",
            reason = self.reason,
            error_kind = self.error_kind,
            range = self.range.map_or(-1, i64::from),
            run_id = self.run_id,
            duration_ms = self.duration_ms,
            "object failed"
        );
        count("attempts_failed", self.error_kind, 1);
    }
}

/// The source or the blob changed during an attempt; it starts over, reading everything.
#[derive(Debug)]
pub struct CopyRestarted<'a> {
    /// Source bucket.
    pub bucket: &'a str,
    /// Source key.
    pub key: &'a str,
    /// What changed, as the lost condition says.
    pub reason: &'a str,
    /// Restarts so far in this attempt.
    pub restarts: u32,
    /// The run it belongs to.
    pub run_id: &'a str,
}

impl InternalEvent for CopyRestarted<'_> {
    fn emit(self) {
        tracing::info!(
            bucket = self.bucket,
            key = self.key,
            outcome = "restarted",
            reason = self.reason,
            restarts = self.restarts,
            run_id = self.run_id,
            "changed during the copy; starting over"
        );
        count("copies", "restarted", 1);
    }
}

/// A failed attempt could not be written to the checkpoint (the table failed too): the
/// caller still retries the object, but `status` shows its previous row meanwhile.
#[derive(Debug)]
pub struct FailureNotRecorded<'a> {
    /// Source bucket.
    pub bucket: &'a str,
    /// Source key.
    pub key: &'a str,
    /// Why the write failed.
    pub reason: &'a str,
    /// The run it belongs to.
    pub run_id: &'a str,
}

impl InternalEvent for FailureNotRecorded<'_> {
    fn emit(self) {
        tracing::error!(
            bucket = self.bucket,
            key = self.key,
            outcome = "unrecorded",
            reason = self.reason,
            run_id = self.run_id,
            "could not record failure"
        );
        count("failures", "unrecorded", 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal_events::capture::events;
    use crate::internal_events::{counters, STABLE_FIELDS};

    /// Every per-object event carries the stable fields, under their names, once; the
    /// values are the struct's.
    #[test]
    fn per_object_events_carry_every_stable_field() {
        let before = counters().get("objects{copied}").copied().unwrap_or(0);
        let got = events(|| {
            ObjectDone {
                bucket: "bkt",
                key: "a/b",
                blob: "p/a/b",
                bytes: 42,
                outcome: "copied",
                reason: "",
                path: "streamed",
                verified: "crc64nvme",
                run_id: "R1",
                duration_ms: 7,
            }
            .emit();
            ObjectSplit {
                bucket: "bkt",
                key: "big",
                blob: "big",
                ranges: 4,
                staged: 1,
                to_send: 3,
                claimed: true,
                run_id: "R1",
                duration_ms: 3,
            }
            .emit();
            RangeStaged {
                bucket: "bkt",
                key: "big",
                blob: "big",
                range: 2,
                staged: 2,
                ranges: 4,
                run_id: "R1",
                duration_ms: 9,
            }
            .emit();
            ObjectFailed {
                bucket: "bkt",
                key: "k",
                blob: "",
                error_kind: "transient",
                reason: "HTTP 503",
                range: None,
                run_id: "",
                duration_ms: 11,
            }
            .emit();
        });
        assert_eq!(got.len(), 4, "{got:?}");
        for e in &got {
            let names = e.names();
            for f in STABLE_FIELDS {
                assert_eq!(
                    names.iter().filter(|n| **n == f).count(),
                    1,
                    "{f} in {}: {names:?}",
                    e.message
                );
            }
        }
        let done = &got[0];
        assert_eq!(
            (done.get("bucket"), done.get("key"), done.get("blob"), done.get("bytes")),
            (Some("bkt"), Some("a/b"), Some("p/a/b"), Some("42"))
        );
        assert_eq!(
            (done.get("outcome"), done.get("run_id"), done.get("duration_ms")),
            (Some("copied"), Some("R1"), Some("7"))
        );
        assert_eq!(done.level, "INFO");
        let failed = &got[3];
        assert_eq!(
            (failed.level.as_str(), failed.get("outcome"), failed.get("range")),
            ("WARN", Some("failed"), Some("-1"))
        );
        assert_eq!(failed.get("reason"), Some("HTTP 503"));
        assert!(counters()["objects{copied}"] > before);
    }
}
