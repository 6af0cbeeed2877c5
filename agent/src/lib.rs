//! `ferry-agent`: discover, relabel, scrape, WAL, remote write.
//!
//! - [`config`]: the YAML configuration and every job's effective settings;
//! - [`labels`]: Prometheus' label builder semantics;
//! - [`relabel`]: the relabel engine;
//! - [`duration`]: Prometheus durations;
//! - [`scrape`]: exposition parsing, the scrape loop and its output.

pub mod config;
pub mod duration;
pub mod labels;
pub mod relabel;
pub mod scrape;
