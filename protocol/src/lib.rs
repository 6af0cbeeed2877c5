//! `ferry-protocol`: the wire formats every Ferry binary shares.
//!
//! - [`rw1`], [`rw2`]: Remote-Write 1.0 and 2.0 protobuf messages (hand-written `prost` types,
//!   no `protoc` needed);
//! - [`symbols`]: the RW2 symbol table and ref resolution;
//! - [`snappy`]: block-format compression with a decoded-size limit;
//! - [`codec`]: protobuf + snappy in one call;
//! - [`headers`]: header names and values, the Content-Type / Content-Encoding checks;
//! - [`stale`]: the staleness marker;
//! - [`labels`]: the sorted, validated label set;
//! - [`read`]: remote-read request and response messages.
//!
//! Nothing here does I/O; the crate is small so that the agent, the receiver and the
//! conformance harness agree on every byte.

pub mod codec;
pub mod headers;
pub mod labels;
pub mod read;
pub mod rw1;
pub mod rw2;
pub mod snappy;
pub mod stale;
pub mod symbols;
pub mod time;

pub use headers::WriteProto;
pub use labels::{Label, LabelError, LabelSet, METRIC_NAME, NameValidation};
pub use stale::{STALE_NAN, is_stale};
pub use symbols::SymbolTable;
