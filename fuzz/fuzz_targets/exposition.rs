//! Any text as a scrape body, in both formats: the parser and the label parser must never
//! panic, whatever they accept or refuse.
#![no_main]
use ferry_agent::scrape::parse::{Entry, Format, Parser, parse_series};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    for format in [Format::Text, Format::OpenMetrics] {
        let mut p = Parser::new(body, format);
        while let Ok(Some(e)) = p.next_entry() {
            if let Entry::Sample(s) = e {
                let _ = parse_series(s.series, s.norm, format);
            }
        }
    }
});
