//! What is remembered between invocations, in Azure Table Storage: the per-object
//! checkpoint, the bulk runs (their rows, counters, report lines and lock), the results of
//! `verify`, and the SQS relay's circuit breaker.

pub mod breaker;
pub mod checkpoint;
pub mod runs;
pub mod verify;
