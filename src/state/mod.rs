//! What is remembered between invocations, in Azure Table Storage: the per-object
//! checkpoint, the bulk runs (their rows, counters, report lines and lock), the results of
//! `verify`, the staging rows of split copies, the SQS relay's lag and its circuit breaker.
//! Each row family has one store here; no other layer names the Table client.

pub mod breaker;
pub mod checkpoint;
pub mod lag;
pub mod runs;
pub mod staging;
mod tables;
pub mod verify;

/// Seconds since the Unix epoch, the clock of leases and timestamps kept as numbers.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
