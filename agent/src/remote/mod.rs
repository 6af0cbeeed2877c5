//! Remote write: one queue per `remote_write` endpoint, reading from the WAL.

pub mod client;
pub mod encode;
pub mod held_values;
pub mod id_runs;
pub mod packing;
pub mod queue;
pub mod wire;
