//! The events of one object's copy (`engine::copy::copy_step`): settled, split, one range
//! staged, failed, restarted, and a failure that could not be recorded.

use super::{count, InternalEvent};

/// Writes one per-object event at `$level`: the stable fields, from `$object` and the values
/// given, then the event's own fields and its message. The one place the stable fields are
/// named, so no event can leave one out or spell it otherwise.
macro_rules! object_event {
    ($level:ident, $object:expr, bytes: $bytes:expr, outcome: $outcome:expr, reason: $reason:expr,
     duration_ms: $ms:expr, $($rest:tt)+) => {
        tracing::$level!(
            bucket = $object.bucket,
            key = $object.key,
            blob = $object.blob,
            bytes = $bytes,
            outcome = $outcome,
            reason = $reason,
            run_id = $object.run_id,
            duration_ms = $ms,
            $($rest)+
        )
    };
}

/// The object an event is about and the run it belongs to: the stable fields every
/// per-object event carries besides its own.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    /// Source bucket.
    pub bucket: &'a str,
    /// Source key.
    pub key: &'a str,
    /// Target blob ("" when the key maps to none).
    pub blob: &'a str,
    /// The run it belongs to ("" for events and the worker).
    pub run_id: &'a str,
}

/// An object is settled: copied, already current, deleted, refused or left out.
#[derive(Debug)]
pub struct ObjectDone<'a> {
    /// The object.
    pub object: ObjectRef<'a>,
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
    /// Time spent on the step.
    pub duration_ms: u64,
}

impl InternalEvent for ObjectDone<'_> {
    fn emit(self) {
        object_event!(
            info,
            self.object,
            bytes: self.bytes,
            outcome: self.outcome,
            reason: self.reason,
            duration_ms: self.duration_ms,
            path = self.path,
            verified = self.verified,
            "object done"
        );
        count("objects", self.outcome, 1);
        count("bytes", self.outcome, self.bytes);
    }
}

/// An object too big for one invocation was cut into ranges (or its plan found again).
#[derive(Debug)]
pub struct ObjectSplit<'a> {
    /// The object.
    pub object: ObjectRef<'a>,
    /// Ranges in the plan.
    pub ranges: u32,
    /// Ranges recorded already.
    pub staged: u32,
    /// Ranges this caller is to send.
    pub to_send: usize,
    /// Whether this caller holds the plan's lease.
    pub claimed: bool,
    /// Time spent on the step.
    pub duration_ms: u64,
}

impl InternalEvent for ObjectSplit<'_> {
    fn emit(self) {
        object_event!(
            info,
            self.object,
            // Nothing moves in this step; the ranges count their own.
            bytes: 0u64,
            outcome: "split",
            reason: "",
            duration_ms: self.duration_ms,
            ranges = self.ranges,
            staged = self.staged,
            to_send = self.to_send,
            claimed = self.claimed,
            "object split into ranges"
        );
        count("objects", "split", 1);
    }
}

/// One range of a split copy is recorded.
#[derive(Debug)]
pub struct RangeStaged<'a> {
    /// The object.
    pub object: ObjectRef<'a>,
    /// Which range.
    pub range: u32,
    /// Ranges recorded now.
    pub staged: u32,
    /// Ranges in the plan.
    pub ranges: u32,
    /// Time spent on the step.
    pub duration_ms: u64,
}

impl InternalEvent for RangeStaged<'_> {
    fn emit(self) {
        object_event!(
            info,
            self.object,
            bytes: 0u64,
            outcome: "staged",
            reason: "",
            duration_ms: self.duration_ms,
            range = self.range,
            staged = self.staged,
            ranges = self.ranges,
            "range staged"
        );
        count("ranges", "staged", 1);
    }
}

/// An attempt at an object failed; the checkpoint records why, and the caller retries or
/// parks it.
#[derive(Debug)]
pub struct ObjectFailed<'a> {
    /// The object.
    pub object: ObjectRef<'a>,
    /// The error's kind (`transient`, `integrity`, ...).
    pub error_kind: &'static str,
    /// The error, redacted.
    pub reason: &'a str,
    /// The range, for a range of a split copy.
    pub range: Option<u32>,
    /// Time spent on the step.
    pub duration_ms: u64,
}

impl InternalEvent for ObjectFailed<'_> {
    fn emit(self) {
        object_event!(
            warn,
            self.object,
            bytes: 0u64,
            outcome: "failed",
            reason: self.reason,
            duration_ms: self.duration_ms,
            error_kind = self.error_kind,
            range = self.range.map_or(-1, i64::from),
            "object failed"
        );
        count("attempts_failed", self.error_kind, 1);
    }
}

/// The source or the blob changed during an attempt; it starts over, reading everything.
#[derive(Debug)]
pub struct CopyRestarted<'a> {
    /// The object.
    pub object: ObjectRef<'a>,
    /// What changed, as the lost condition says.
    pub reason: &'a str,
    /// Restarts so far in this attempt.
    pub restarts: u32,
}

impl InternalEvent for CopyRestarted<'_> {
    fn emit(self) {
        object_event!(
            info,
            self.object,
            bytes: 0u64,
            outcome: "restarted",
            reason: self.reason,
            duration_ms: 0u64,
            restarts = self.restarts,
            "changed during the copy; starting over"
        );
        count("copies", "restarted", 1);
    }
}

/// A failed attempt could not be written to the checkpoint (the table failed too): the
/// caller still retries the object, but `status` shows its previous row meanwhile.
#[derive(Debug)]
pub struct FailureNotRecorded<'a> {
    /// The object.
    pub object: ObjectRef<'a>,
    /// Why the write failed.
    pub reason: &'a str,
}

impl InternalEvent for FailureNotRecorded<'_> {
    fn emit(self) {
        object_event!(
            error,
            self.object,
            bytes: 0u64,
            outcome: "unrecorded",
            reason: self.reason,
            duration_ms: 0u64,
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
                object: ObjectRef {
                    bucket: "bkt",
                    key: "a/b",
                    blob: "p/a/b",
                    run_id: "R1",
                },
                bytes: 42,
                outcome: "copied",
                reason: "",
                path: "streamed",
                verified: "crc64nvme",
                duration_ms: 7,
            }
            .emit();
            ObjectSplit {
                object: ObjectRef {
                    bucket: "bkt",
                    key: "big",
                    blob: "big",
                    run_id: "R1",
                },
                ranges: 4,
                staged: 1,
                to_send: 3,
                claimed: true,
                duration_ms: 3,
            }
            .emit();
            RangeStaged {
                object: ObjectRef {
                    bucket: "bkt",
                    key: "big",
                    blob: "big",
                    run_id: "R1",
                },
                range: 2,
                staged: 2,
                ranges: 4,
                duration_ms: 9,
            }
            .emit();
            ObjectFailed {
                object: ObjectRef {
                    bucket: "bkt",
                    key: "k",
                    blob: "",
                    run_id: "",
                },
                error_kind: "transient",
                reason: "HTTP 503",
                range: None,
                duration_ms: 11,
            }
            .emit();
            CopyRestarted {
                object: ObjectRef {
                    bucket: "bkt",
                    key: "k",
                    blob: "k",
                    run_id: "",
                },
                reason: "ETag changed",
                restarts: 1,
            }
            .emit();
            FailureNotRecorded {
                object: ObjectRef {
                    bucket: "bkt",
                    key: "k",
                    blob: "k",
                    run_id: "",
                },
                reason: "table down",
            }
            .emit();
        });
        assert_eq!(got.len(), 6, "{got:?}");
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
