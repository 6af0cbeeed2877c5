//! `ferry-agent`: discover, relabel, scrape, WAL, remote write.
//!
//! - [`labels`]: Prometheus' label builder semantics;
//! - [`relabel`]: the relabel engine;
//! - [`duration`]: Prometheus durations;
//! - [`scrape`]: exposition parsing, the scrape loop and its output.

pub mod duration;
pub mod labels;
pub mod relabel;
pub mod scrape;
