//! Any bytes as an RW2 request: symbol resolution, label checks, histogram validation must
//! never panic.
#![no_main]
use ferry_receiver::config::Limits;
use ferry_receiver::ingest::{Rules, from_rw2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let rules = Rules { limits: &limits, tenant: None };
    if let Ok(req) = <ferry_protocol::rw2::Request as prost::Message>::decode(data) {
        let _ = from_rw2(req, rules);
    }
    if let Ok(req) = ferry_protocol::codec::decode_body::<ferry_protocol::rw2::Request>(data, 1 << 20) {
        let _ = from_rw2(req, rules);
    }
});
