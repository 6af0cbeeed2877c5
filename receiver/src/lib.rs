//! `ferry-receiver`: a Remote-Write 1.0/2.0 storage receiver on an embedded sled store.
//!
//! - [`write`]: the ingest endpoint (header checks, decode, status codes);
//! - [`ingest`]: per-series validation of decoded requests;
//! - [`fast`]: zero-copy decoding of the common write;
//! - [`histogram`]: native-histogram validation;
//! - [`store`]: the sled store (index, postings, samples, chunks);
//! - [`read`], [`selector`]: the Prometheus-shaped read API and series selectors;
//! - [`auth`]: tenants, credentials and rate limits;
//! - [`config`], [`metrics`], [`app`]: configuration, self-metrics, routes;
//! - [`server`]: start and stop a receiver (the binary, or embedded in the agent);
//! - [`tls`]: TLS termination with rustls.

pub mod app;
pub mod auth;
pub mod config;
pub mod fast;
pub mod histogram;
pub mod ingest;
pub mod metrics;
pub mod read;
pub mod selector;
pub mod server;
pub mod store;
pub mod tls;
pub mod write;
