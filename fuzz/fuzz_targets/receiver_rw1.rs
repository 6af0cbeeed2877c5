//! Any bytes as an RW1 request body: snappy, protobuf, and the receiver's per-series checks
//! must never panic.
#![no_main]
use ferry_receiver::config::Limits;
use ferry_receiver::ingest::{Rules, from_rw1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw protobuf (no snappy), and snappy-framed bytes as sent.
    let limits = Limits { max_labels_per_series: 30, max_label_value_length: 64, ..Default::default() };
    let rules = Rules { limits: &limits, tenant: None };
    if let Ok(req) = <ferry_protocol::rw1::WriteRequest as prost::Message>::decode(data) {
        let _ = from_rw1(req, rules);
    }
    if let Ok(req) = ferry_protocol::codec::decode_body::<ferry_protocol::rw1::WriteRequest>(data, 1 << 20) {
        let _ = from_rw1(req, rules);
    }
});
