//! What is remembered between invocations, in Azure Table Storage: the per-object
//! checkpoint, and the bulk runs (their rows, counters, report lines and lock).

pub mod checkpoint;
pub mod runs;
