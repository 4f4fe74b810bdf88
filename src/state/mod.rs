//! What is remembered between invocations, in Azure Table Storage: the per-object
//! checkpoint, the bulk runs (their rows, counters, report lines and lock), and the results
//! of `verify`.

pub mod checkpoint;
pub mod runs;
pub mod verify;
