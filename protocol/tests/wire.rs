//! Wire-level tests of ferry-protocol: round trips for every message (proptest), golden bytes
//! written by an independent encoder straight from the field numbers in the reference, packed
//! and unpacked repeated fields, and the codec's refusal of framed and oversize bodies.

use ferry_protocol::codec::{DecodeError, Encoder, decode_body};
use ferry_protocol::rw1::{self, MetricType, histogram as h1};
use ferry_protocol::rw2::{self, histogram as h2};
use ferry_protocol::snappy::{self, SnappyError};
use ferry_protocol::stale::STALE_NAN_BITS;
use ferry_protocol::symbols::{SymbolTable, resolve_label_set};
use ferry_protocol::{LabelSet, STALE_NAN, is_stale};
use proptest::prelude::*;
use prost::Message;

// ---------------------------------------------------------------------------------------------
// An independent protobuf writer: it knows wire types and nothing of prost or our structs.

mod pb {
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
        varint(((field as u64) << 3) | wire as u64, out);
    }
    pub fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
        key(field, 0, out);
        varint(v, out);
    }
    pub fn int64(out: &mut Vec<u8>, field: u32, v: i64) {
        uint(out, field, v as u64);
    }
    pub fn sint(out: &mut Vec<u8>, field: u32, v: i64) {
        uint(out, field, ((v << 1) ^ (v >> 63)) as u64);
    }
    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        key(field, 1, out);
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        key(field, 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    pub fn msg(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
        let mut inner = Vec::new();
        f(&mut inner);
        bytes(out, field, &inner);
    }
    pub fn packed_uint(out: &mut Vec<u8>, field: u32, vs: &[u64]) {
        let mut inner = Vec::new();
        for &v in vs {
            varint(v, &mut inner);
        }
        bytes(out, field, &inner);
    }
    pub fn packed_sint(out: &mut Vec<u8>, field: u32, vs: &[i64]) {
        let z: Vec<u64> = vs.iter().map(|&v| ((v << 1) ^ (v >> 63)) as u64).collect();
        packed_uint(out, field, &z);
    }
    pub fn packed_double(out: &mut Vec<u8>, field: u32, vs: &[f64]) {
        let inner: Vec<u8> = vs.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
        bytes(out, field, &inner);
    }
}

fn label(out: &mut Vec<u8>, field: u32, name: &str, value: &str) {
    pb::msg(out, field, |m| {
        pb::bytes(m, 1, name.as_bytes());
        pb::bytes(m, 2, value.as_bytes());
    });
}

// ---------------------------------------------------------------------------------------------
// Golden cases.

#[test]
fn rw1_golden_bytes_decode_and_re_encode_identically() {
    let ts = 1_700_000_000_123i64;
    let mut body = Vec::new();
    pb::msg(&mut body, 1, |s| {
        label(s, 1, "__name__", "up");
        label(s, 1, "job", "node");
        pb::msg(s, 2, |x| {
            pb::double(x, 1, 1.0);
            pb::int64(x, 2, ts);
        });
        pb::msg(s, 2, |x| {
            pb::double(x, 1, f64::from_bits(STALE_NAN_BITS));
            pb::int64(x, 2, ts + 1000);
        });
        pb::msg(s, 3, |e| {
            label(e, 1, "trace_id", "abc");
            pb::double(e, 2, 0.5);
            pb::int64(e, 3, ts);
        });
        pb::msg(s, 4, |hg| {
            pb::uint(hg, 1, 27);
            pb::double(hg, 3, 12.5);
            pb::sint(hg, 4, -2);
            pb::double(hg, 5, 0.001);
            pb::double(hg, 7, 1.5);
            pb::msg(hg, 8, |sp| {
                pb::sint(sp, 1, -1);
                pb::uint(sp, 2, 2);
            });
            pb::packed_sint(hg, 9, &[1, -1]);
            // proto3 omits zero values, so the span's offset 0 is not written.
            pb::msg(hg, 11, |sp| pb::uint(sp, 2, 3));
            pb::packed_sint(hg, 12, &[1, 2, -3]);
            pb::uint(hg, 14, 2);
            pb::int64(hg, 15, ts);
        });
    });
    pb::msg(&mut body, 3, |m| {
        pb::uint(m, 1, 1);
        pb::bytes(m, 2, b"http_requests_total");
        pb::bytes(m, 4, b"Requests.");
        pb::bytes(m, 5, b"requests");
    });

    let got = rw1::WriteRequest::decode(body.as_slice()).unwrap();
    let want = rw1::WriteRequest {
        timeseries: vec![rw1::TimeSeries {
            labels: vec![rw1::Label::new("__name__", "up"), rw1::Label::new("job", "node")],
            samples: vec![
                rw1::Sample { value: 1.0, timestamp: ts },
                rw1::Sample { value: STALE_NAN, timestamp: ts + 1000 },
            ],
            exemplars: vec![rw1::Exemplar {
                labels: vec![rw1::Label::new("trace_id", "abc")],
                value: 0.5,
                timestamp: ts,
            }],
            histograms: vec![rw1::Histogram {
                count: Some(h1::Count::CountInt(27)),
                sum: 12.5,
                schema: -2,
                zero_threshold: 0.001,
                zero_count: Some(h1::ZeroCount::ZeroCountFloat(1.5)),
                negative_spans: vec![rw1::BucketSpan { offset: -1, length: 2 }],
                negative_deltas: vec![1, -1],
                positive_spans: vec![rw1::BucketSpan { offset: 0, length: 3 }],
                positive_deltas: vec![1, 2, -3],
                reset_hint: rw1::ResetHint::No as i32,
                timestamp: ts,
                ..Default::default()
            }],
        }],
        metadata: vec![rw1::MetricMetadata {
            r#type: MetricType::Counter as i32,
            metric_family_name: "http_requests_total".into(),
            help: "Requests.".into(),
            unit: "requests".into(),
        }],
    };
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    assert!(is_stale(got.timeseries[0].samples[1].value), "stale bits must survive decoding");
    // Our encoder must produce exactly the bytes written from the field numbers.
    assert_eq!(want.encode_to_vec(), body);
}

#[test]
fn rw2_golden_bytes_decode_and_re_encode_identically() {
    let ts = 1_700_000_000_000i64;
    let symbols = ["", "__name__", "up", "job", "node", "Health.", "trace_id", "t1", "seconds"];
    let mut body = Vec::new();
    for s in symbols {
        pb::bytes(&mut body, 4, s.as_bytes());
    }
    pb::msg(&mut body, 5, |s| {
        pb::packed_uint(s, 1, &[1, 2, 3, 4]);
        pb::msg(s, 2, |x| {
            pb::double(x, 1, 1.0);
            pb::int64(x, 2, ts);
            pb::int64(x, 3, ts - 60_000);
        });
        pb::msg(s, 4, |e| {
            pb::packed_uint(e, 1, &[6, 7]);
            pb::double(e, 2, 2.0);
            pb::int64(e, 3, ts);
        });
        pb::msg(s, 5, |m| {
            pb::uint(m, 1, 2);
            pb::uint(m, 3, 5);
            pb::uint(m, 4, 8);
        });
    });
    pb::msg(&mut body, 5, |s| {
        pb::packed_uint(s, 1, &[1, 2]);
        pb::msg(s, 3, |hg| {
            pb::double(hg, 2, 30.0);
            pb::double(hg, 3, 42.0);
            pb::sint(hg, 4, -53);
            pb::msg(hg, 11, |sp| pb::uint(sp, 2, 3));
            pb::packed_double(hg, 13, &[10.0, 15.0, 5.0]);
            pb::uint(hg, 14, 3);
            pb::int64(hg, 15, ts);
            pb::packed_double(hg, 16, &[0.1, 1.0]);
            pb::int64(hg, 17, ts - 5);
        });
    });

    let got = rw2::Request::decode(body.as_slice()).unwrap();
    let want = rw2::Request {
        symbols: symbols.map(String::from).to_vec(),
        timeseries: vec![
            rw2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![rw2::Sample { value: 1.0, timestamp: ts, start_timestamp: ts - 60_000 }],
                exemplars: vec![rw2::Exemplar { labels_refs: vec![6, 7], value: 2.0, timestamp: ts }],
                metadata: Some(rw2::Metadata {
                    r#type: rw2::MetricType::Gauge as i32,
                    help_ref: 5,
                    unit_ref: 8,
                }),
                ..Default::default()
            },
            rw2::TimeSeries {
                labels_refs: vec![1, 2],
                histograms: vec![rw2::Histogram {
                    count: Some(h2::Count::CountFloat(30.0)),
                    sum: 42.0,
                    schema: -53,
                    positive_spans: vec![rw2::BucketSpan { offset: 0, length: 3 }],
                    positive_counts: vec![10.0, 15.0, 5.0],
                    reset_hint: rw2::ResetHint::Gauge as i32,
                    timestamp: ts,
                    custom_values: vec![0.1, 1.0],
                    start_timestamp: ts - 5,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    assert_eq!(got, want);
    assert_eq!(want.encode_to_vec(), body);
    let ls = resolve_label_set(&got.timeseries[0].labels_refs, &got.symbols).unwrap();
    assert_eq!(ls.to_string(), r#"{__name__="up", job="node"}"#);
}

#[test]
fn repeated_uint32_decodes_packed_and_unpacked() {
    let refs = [1u64, 2, 300, 70_000];
    let mut packed = Vec::new();
    pb::packed_uint(&mut packed, 1, &refs);
    let mut unpacked = Vec::new();
    for &r in &refs {
        pb::uint(&mut unpacked, 1, r);
    }
    // A mix is legal too: a decoder must concatenate.
    let mut mixed = Vec::new();
    pb::packed_uint(&mut mixed, 1, &refs[..2]);
    pb::uint(&mut mixed, 1, refs[2]);
    pb::uint(&mut mixed, 1, refs[3]);
    for body in [packed, unpacked, mixed] {
        let ts = rw2::TimeSeries::decode(body.as_slice()).unwrap();
        assert_eq!(ts.labels_refs, vec![1, 2, 300, 70_000]);
        let ex = rw2::Exemplar::decode(body.as_slice()).unwrap();
        assert_eq!(ex.labels_refs, vec![1, 2, 300, 70_000]);
    }
}

#[test]
fn negative_zero_is_a_proto3_default() {
    // Like Prometheus' gogo-generated code (`if m.Value != 0`), prost does not write -0.0, so
    // it arrives as +0.0. Equal as a number; recorded here so nobody is surprised by the bits.
    let s = rw1::Sample { value: -0.0, timestamp: 1 };
    let back = rw1::Sample::decode(s.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.value.to_bits(), 0.0f64.to_bits());
    // Every NaN, including the stale marker, keeps its exact bits.
    for bits in [STALE_NAN_BITS, 0x7ff8_0000_0000_0001, 0xfff8_0000_0000_0000, 0x7ff0_0000_0000_0001] {
        let s = rw1::Sample { value: f64::from_bits(bits), timestamp: 1 };
        let back = rw1::Sample::decode(s.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.value.to_bits(), bits);
    }
}

#[test]
fn rc3_created_timestamp_field_is_skipped_not_an_error() {
    // rc.3 senders put created_timestamp in TimeSeries field 6; rc.4 reserves it.
    let mut body = Vec::new();
    pb::packed_uint(&mut body, 1, &[1, 2]);
    pb::int64(&mut body, 6, 1_699_999_999_000);
    let ts = rw2::TimeSeries::decode(body.as_slice()).unwrap();
    assert_eq!(ts.labels_refs, vec![1, 2]);
}

#[test]
fn rw1_body_decoded_as_rw2_is_empty() {
    // Fields 1..=3 are reserved in v2.Request precisely so that this happens.
    let rw1 = rw1::WriteRequest {
        timeseries: vec![rw1::TimeSeries {
            labels: vec![rw1::Label::new("__name__", "up")],
            samples: vec![rw1::Sample { value: 1.0, timestamp: 1 }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let as_v2 = rw2::Request::decode(rw1.encode_to_vec().as_slice()).unwrap();
    assert!(as_v2.symbols.is_empty() && as_v2.timeseries.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Codec.

#[test]
fn codec_round_trip_and_rejections() {
    let req = rw2::Request {
        symbols: vec!["".into(), "__name__".into(), "m".into()],
        timeseries: vec![rw2::TimeSeries {
            labels_refs: vec![1, 2],
            samples: vec![rw2::Sample { value: STALE_NAN, timestamp: 5, start_timestamp: 0 }],
            ..Default::default()
        }],
    };
    let mut enc = Encoder::default();
    let body = enc.encode(&req);
    let back: rw2::Request = decode_body(&body, snappy::DEFAULT_MAX_DECODED_SIZE).unwrap();
    assert_eq!(back.timeseries[0].samples[0].value.to_bits(), STALE_NAN_BITS);

    // Framed snappy of the same protobuf.
    let mut w = snap::write::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut w, &req.encode_to_vec()).unwrap();
    let framed = w.into_inner().unwrap();
    assert!(matches!(
        decode_body::<rw2::Request>(&framed, snappy::DEFAULT_MAX_DECODED_SIZE),
        Err(DecodeError::Snappy(SnappyError::Framed))
    ));
    // Oversize.
    let raw_len = req.encoded_len();
    assert!(matches!(
        decode_body::<rw2::Request>(&body, raw_len - 1),
        Err(DecodeError::Snappy(SnappyError::TooLarge { .. }))
    ));
    // Valid snappy, invalid protobuf (a truncated varint).
    let junk = snappy::encode_block(&[0x08, 0xff]);
    assert!(matches!(decode_body::<rw2::Request>(&junk, 1024), Err(DecodeError::Protobuf(_))));
}

// ---------------------------------------------------------------------------------------------
// Property tests: every message round-trips bit-exactly.

/// Any float but -0.0, which proto3 encoders (prost here, gogo in Prometheus) skip as a default
/// value; see `negative_zero_is_a_proto3_default`.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => Just(STALE_NAN),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => any::<u64>().prop_map(f64::from_bits),
    ]
    .prop_map(|v| if v == 0.0 { 0.0 } else { v })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z_]{1,8}", any::<String>()]
}

fn label1() -> impl Strategy<Value = rw1::Label> {
    (text(), text()).prop_map(|(n, v)| rw1::Label { name: n, value: v })
}

fn span() -> impl Strategy<Value = rw1::BucketSpan> {
    (any::<i32>(), any::<u32>()).prop_map(|(offset, length)| rw1::BucketSpan { offset, length })
}

fn hist1() -> impl Strategy<Value = rw1::Histogram> {
    (
        (
            prop::option::of(prop_oneof![
                any::<u64>().prop_map(h1::Count::CountInt),
                float().prop_map(h1::Count::CountFloat)
            ]),
            float(),
            -53i32..=8,
            float(),
            prop::option::of(prop_oneof![
                any::<u64>().prop_map(h1::ZeroCount::ZeroCountInt),
                float().prop_map(h1::ZeroCount::ZeroCountFloat)
            ]),
        ),
        (
            prop::collection::vec(span(), 0..3),
            prop::collection::vec(any::<i64>(), 0..4),
            prop::collection::vec(float(), 0..4),
            prop::collection::vec(span(), 0..3),
            prop::collection::vec(any::<i64>(), 0..4),
            prop::collection::vec(float(), 0..4),
        ),
        (0i32..4, any::<i64>(), prop::collection::vec(float(), 0..3)),
    )
        .prop_map(|((count, sum, schema, zt, zc), (ns, nd, nc, ps, pd, pc), (rh, ts, cv))| {
            rw1::Histogram {
                count,
                sum,
                schema,
                zero_threshold: zt,
                zero_count: zc,
                negative_spans: ns,
                negative_deltas: nd,
                negative_counts: nc,
                positive_spans: ps,
                positive_deltas: pd,
                positive_counts: pc,
                reset_hint: rh,
                timestamp: ts,
                custom_values: cv,
            }
        })
}

fn write_request() -> impl Strategy<Value = rw1::WriteRequest> {
    let series = (
        prop::collection::vec(label1(), 0..4),
        prop::collection::vec(
            (float(), any::<i64>()).prop_map(|(value, timestamp)| rw1::Sample { value, timestamp }),
            0..4,
        ),
        prop::collection::vec(
            (prop::collection::vec(label1(), 0..2), float(), any::<i64>())
                .prop_map(|(labels, value, timestamp)| rw1::Exemplar { labels, value, timestamp }),
            0..2,
        ),
        prop::collection::vec(hist1(), 0..2),
    )
        .prop_map(|(labels, samples, exemplars, histograms)| rw1::TimeSeries {
            labels,
            samples,
            exemplars,
            histograms,
        });
    let meta = (0i32..8, text(), text(), text()).prop_map(|(t, n, h, u)| rw1::MetricMetadata {
        r#type: t,
        metric_family_name: n,
        help: h,
        unit: u,
    });
    (prop::collection::vec(series, 0..4), prop::collection::vec(meta, 0..3))
        .prop_map(|(timeseries, metadata)| rw1::WriteRequest { timeseries, metadata })
}

fn hist2() -> impl Strategy<Value = rw2::Histogram> {
    (hist1(), any::<i64>()).prop_map(|(h, st)| rw2::Histogram { start_timestamp: st, ..h.into() })
}

fn request2() -> impl Strategy<Value = rw2::Request> {
    let series = (
        prop::collection::vec(any::<u32>(), 0..6),
        prop::collection::vec(
            (float(), any::<i64>(), any::<i64>()).prop_map(|(value, timestamp, start_timestamp)| {
                rw2::Sample { value, timestamp, start_timestamp }
            }),
            0..4,
        ),
        prop::collection::vec(hist2(), 0..2),
        prop::collection::vec(
            (prop::collection::vec(any::<u32>(), 0..4), float(), any::<i64>())
                .prop_map(|(labels_refs, value, timestamp)| rw2::Exemplar { labels_refs, value, timestamp }),
            0..2,
        ),
        prop::option::of((0i32..8, any::<u32>(), any::<u32>()).prop_map(|(t, h, u)| rw2::Metadata {
            r#type: t,
            help_ref: h,
            unit_ref: u,
        })),
    )
        .prop_map(|(labels_refs, samples, histograms, exemplars, metadata)| rw2::TimeSeries {
            labels_refs,
            samples,
            histograms,
            exemplars,
            metadata,
        });
    (prop::collection::vec(text(), 0..6), prop::collection::vec(series, 0..4))
        .prop_map(|(symbols, timeseries)| rw2::Request { symbols, timeseries })
}

/// Encode → decode → encode gives the same bytes (so every float keeps its bits) and the same
/// value (compared through Debug, since NaN != NaN).
fn assert_round_trip<M: Message + Default + std::fmt::Debug>(m: &M) -> Result<(), TestCaseError> {
    let bytes = m.encode_to_vec();
    let back = M::decode(bytes.as_slice()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back.encode_to_vec(), bytes);
    prop_assert_eq!(format!("{back:?}"), format!("{m:?}"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rw1_write_request_round_trips(req in write_request()) {
        assert_round_trip(&req)?;
        for ts in &req.timeseries {
            assert_round_trip(ts)?;
            for l in &ts.labels { assert_round_trip(l)?; }
            for s in &ts.samples { assert_round_trip(s)?; }
            for e in &ts.exemplars { assert_round_trip(e)?; }
            for h in &ts.histograms {
                assert_round_trip(h)?;
                for s in &h.positive_spans { assert_round_trip(s)?; }
            }
        }
        for m in &req.metadata { assert_round_trip(m)?; }
    }

    #[test]
    fn rw2_request_round_trips(req in request2()) {
        assert_round_trip(&req)?;
        for ts in &req.timeseries {
            assert_round_trip(ts)?;
            for s in &ts.samples { assert_round_trip(s)?; }
            for e in &ts.exemplars { assert_round_trip(e)?; }
            for h in &ts.histograms { assert_round_trip(h)?; }
            if let Some(m) = &ts.metadata { assert_round_trip(m)?; }
        }
    }

    #[test]
    fn compressed_bodies_round_trip(req in request2()) {
        let body = Encoder::default().encode(&req);
        let back: rw2::Request = decode_body(&body, snappy::DEFAULT_MAX_DECODED_SIZE).unwrap();
        prop_assert_eq!(back.encode_to_vec(), req.encode_to_vec());
    }

    #[test]
    fn snappy_round_trips_any_bytes(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let enc = snappy::encode_block(&data);
        prop_assert_eq!(snappy::decode_block(&enc, data.len()).unwrap(), data);
    }

    #[test]
    fn snappy_decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = snappy::decode_block(&data, 1 << 16);
    }

    #[test]
    fn symbolized_label_sets_resolve_back(pairs in prop::collection::btree_map("[a-z_]{1,6}", "[a-z0-9]{0,4}", 0..8)) {
        let ls = LabelSet::from_pairs(pairs.clone()).unwrap();
        // Invariants: sorted, unique, no empty values.
        prop_assert!(ls.as_slice().windows(2).all(|w| w[0].name < w[1].name));
        prop_assert!(ls.iter().all(|l| !l.value.is_empty()));
        prop_assert_eq!(ls.len(), pairs.values().filter(|v| !v.is_empty()).count());
        let mut table = SymbolTable::new();
        let mut refs = Vec::new();
        table.symbolize_labels(&ls, &mut refs);
        let symbols = table.take_symbols();
        prop_assert_eq!(&symbols[0], "");
        let distinct: std::collections::HashSet<_> = symbols.iter().collect();
        prop_assert_eq!(distinct.len(), symbols.len());
        prop_assert_eq!(resolve_label_set(&refs, &symbols).unwrap(), ls);
    }
}
