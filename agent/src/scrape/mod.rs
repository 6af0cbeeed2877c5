//! Scraping: targets, fetch, parse, series cache, staleness, report series.

pub mod append;
pub mod batch;
pub mod parse;
pub mod target;
