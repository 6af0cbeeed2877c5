//! The write-ahead log: scrape batches on disk, one record each, until every remote-write
//! endpoint has sent them.

pub mod codec;
pub mod crc;
pub mod id_map;
pub mod log;

pub use id_map::IdMap;
pub use log::{Entry, LabelTable, Options, Pos, Reader, Recovery, Wal};
