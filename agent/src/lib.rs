//! `ferry-agent`: discover, relabel, scrape, WAL, remote write.
//!
//! - [`config`]: the YAML configuration and every job's effective settings;
//! - [`discovery`]: static and file discovery;
//! - [`labels`]: Prometheus' label builder semantics;
//! - [`series_labels`]: active series' labels, interned, and [`packed_value`]: label values
//!   held packed; `thin_block`: the compact shared block a set is (the crate's only `unsafe`);
//! - [`relabel`]: the relabel engine;
//! - [`duration`]: Prometheus durations;
//! - [`scrape`]: targets, fetching, parsing, the scrape loop and its output;
//! - [`telemetry`]: self-metrics, the targets API, health and reload endpoints;
//! - [`remote`]: the remote-write queues, one per endpoint;
//! - [`wal`]: the crash-safe write-ahead log of scrape batches and its cursors;
//! - [`dump`]: JSON-lines rendering of batches for debugging.

pub mod config;
pub mod discovery;
pub mod dump;
pub mod duration;
pub mod labels;
pub mod packed_value;
pub mod relabel;
pub mod remote;
pub mod scrape;
pub mod series_labels;
pub mod telemetry;
mod thin_block;
pub mod wal;
