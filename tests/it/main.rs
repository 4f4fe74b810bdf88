//! Integration tests against real servers on loopback: Azurite (blob, queue, table) and moto
//! (S3). One binary, one shared harness.

mod harness;

mod architecture;
mod chaos;
mod contract;
mod copy_engine;
mod cutover;
mod dashboard;
mod deployment;
mod divergence;
mod events;
mod faults;
mod handler;
mod image;
mod interrupt;
mod listing;
mod report;
mod runs;
mod scale;
mod secrets;
mod split;
mod table;
mod tags;
mod verify;
mod web_identity;
