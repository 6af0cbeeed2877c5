//! Scraping: fetch, parse, series cache, staleness, report series.

pub mod parse;
