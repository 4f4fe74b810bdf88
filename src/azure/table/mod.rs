//! A thin Azure Table Storage client over `azure_core`'s [`Pipeline`](azure_core::http::Pipeline).
//! There is no official Rust crate for Tables; this covers what the stores in `state` need:
//! create table, get, insert, update and merge with If-Match, delete, query with
//! continuation, and entity-group transactions.
//!
//! - `entity`: the row format (OData JSON), filters and query cursors;
//! - `client`: requests with retry and error mapping, and the single-entity operations;
//! - `batch`: entity-group transactions (`$batch`).

mod batch;
mod client;
mod entity;

pub use batch::{BatchOp, BatchOutcome};
pub use client::TableClient;
pub use entity::{Continuation, Entity, Filter};
