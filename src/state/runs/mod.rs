//! Bulk runs as stored: the run row and its lock (`store`), the counters every copy adds
//! to (`counters`), and the per-object report lines (`report`).

pub mod counters;
pub mod report;
pub mod store;
