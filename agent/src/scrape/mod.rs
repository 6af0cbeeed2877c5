//! Scraping: targets, fetch, parse, series cache, staleness, report series.

pub mod append;
pub mod batch;
pub mod direct_http;
pub mod fetch;
pub mod manager;
pub mod parse;
pub mod scrape_loop;
mod series_cache;
pub mod target;
pub mod tls;
