//! Scraping: targets, fetch, parse, series cache, staleness, report series.

pub mod append;
pub mod batch;
pub mod fetch;
pub mod manager;
pub mod parse;
pub mod plain_http;
pub mod scrape_loop;
pub mod target;
