//! Bulk runs as stored: the run row (`store`), its listing shards (`listing`) and pages
//! (`pages`), its lock
//! (`lock`), the counters every copy adds to (`counters`) and how each key is counted once
//! (`counting`), the per-object report lines (`report`), and mirror mode's delete
//! candidates (`prune`), and a verify run's place and differences (`verifying`).

pub mod counters;
pub mod counting;
pub mod listing;
pub mod lock;
pub mod pages;
pub mod prune;
pub mod report;
pub mod store;
pub mod verifying;
