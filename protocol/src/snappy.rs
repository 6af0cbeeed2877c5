//! Snappy *block* compression, the only framing remote write allows.
//!
//! The framed ("streaming") format is recognised by its stream identifier and rejected with its
//! own error, so a receiver can tell the sender exactly what is wrong. Decoding checks the
//! declared length against a limit before allocating, so a 20-byte body cannot ask for 4 GiB.

use thiserror::Error;

/// The first bytes of every framed-format stream: chunk type 0xff, length 6, "sNaPpY".
pub const FRAMED_MAGIC: [u8; 10] = [0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];

/// The decoded-size limit Prometheus' receiver uses (client_golang `maxDecodedSize`).
pub const DEFAULT_MAX_DECODED_SIZE: usize = 32 * 1024 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SnappyError {
    #[error("body uses the snappy framed format; remote write requires the block format")]
    Framed,
    #[error("decoded body would be {len} bytes, over the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("corrupt snappy block: {0}")]
    Corrupt(String),
}

/// Decodes one snappy block, refusing framed input and anything that decodes to over `limit`.
pub fn decode_block(input: &[u8], limit: usize) -> Result<Vec<u8>, SnappyError> {
    let mut out = Vec::new();
    decode_block_into(input, limit, &mut out)?;
    Ok(out)
}

/// Like [`decode_block`], into a buffer the caller reuses; `out` is cleared first.
pub fn decode_block_into(input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), SnappyError> {
    if input.starts_with(&FRAMED_MAGIC) {
        return Err(SnappyError::Framed);
    }
    let len = snap::raw::decompress_len(input).map_err(|e| SnappyError::Corrupt(e.to_string()))?;
    if len > limit {
        return Err(SnappyError::TooLarge { len, limit });
    }
    out.clear();
    out.resize(len, 0);
    let written =
        snap::raw::Decoder::new().decompress(input, out).map_err(|e| SnappyError::Corrupt(e.to_string()))?;
    out.truncate(written);
    Ok(())
}

/// Encodes one snappy block.
pub fn encode_block(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    BlockEncoder::default().encode_into(input, &mut out);
    out
}

/// A reusable block encoder: keeps snap's hash table and the caller's output buffer warm
/// across requests, so steady-state sending allocates nothing here.
pub struct BlockEncoder {
    inner: snap::raw::Encoder,
    /// Room for the worst case of [`encode`](BlockEncoder::encode)'s input, zeroed once.
    scratch: Vec<u8>,
}

impl Default for BlockEncoder {
    fn default() -> Self {
        BlockEncoder { inner: snap::raw::Encoder::new(), scratch: Vec::new() }
    }
}

impl std::fmt::Debug for BlockEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockEncoder")
    }
}

impl BlockEncoder {
    /// Replaces `out`'s contents with the compressed form of `input`.
    pub fn encode_into(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.resize(snap::raw::max_compress_len(input.len()), 0);
        let n = self.inner.compress(input, out).expect("output buffer sized by max_compress_len");
        out.truncate(n);
    }

    /// The compressed form of `input` in a buffer of its own, of exactly its length: for a
    /// body that leaves with a request. snap wants room for the worst case, about 7/6 of the
    /// input, so compressing straight into the body would allocate and zero that much for
    /// every request and keep it while the request is in flight; compressing into the
    /// encoder's scratch and copying out the result (a fifth to a third of that here) does
    /// neither.
    pub fn encode(&mut self, input: &[u8]) -> Vec<u8> {
        let max = snap::raw::max_compress_len(input.len());
        if self.scratch.len() < max {
            self.scratch.resize(max, 0);
        }
        let n = self.inner.compress(input, &mut self.scratch).expect("scratch sized by max_compress_len");
        self.scratch[..n].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let enc = encode_block(&data);
        assert!(enc.len() < data.len());
        assert_eq!(decode_block(&enc, DEFAULT_MAX_DECODED_SIZE).unwrap(), data);
    }

    #[test]
    fn empty_input_round_trips() {
        let enc = encode_block(&[]);
        assert_eq!(decode_block(&enc, 0).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn framed_format_is_rejected() {
        let mut w = snap::write::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut w, b"hello hello hello").unwrap();
        let framed = w.into_inner().unwrap();
        assert_eq!(decode_block(&framed, DEFAULT_MAX_DECODED_SIZE), Err(SnappyError::Framed));
    }

    #[test]
    fn oversize_is_rejected_before_allocating() {
        let enc = encode_block(&vec![7u8; 4096]);
        assert_eq!(decode_block(&enc, 4095), Err(SnappyError::TooLarge { len: 4096, limit: 4095 }));
        assert!(decode_block(&enc, 4096).is_ok());
        // A header that claims ~4 GiB with no data behind it.
        let liar = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(matches!(decode_block(&liar, DEFAULT_MAX_DECODED_SIZE), Err(SnappyError::TooLarge { .. })));
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut enc = encode_block(b"some protobuf bytes, some protobuf bytes");
        let last = enc.len() - 1;
        enc.truncate(last);
        assert!(matches!(decode_block(&enc, DEFAULT_MAX_DECODED_SIZE), Err(SnappyError::Corrupt(_))));
        assert!(matches!(decode_block(b"0garbage", DEFAULT_MAX_DECODED_SIZE), Err(SnappyError::Corrupt(_))));
    }

    #[test]
    fn an_owned_body_is_the_block_and_no_longer() {
        let mut enc = BlockEncoder::default();
        let big: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        // A large input grows the scratch; smaller ones after it reuse it and get their
        // own length back, not the scratch's.
        for input in [&big[..], b"short", b"", &big[..1000]] {
            let body = enc.encode(input);
            assert_eq!(body, encode_block(input));
            assert_eq!(body.capacity(), body.len());
            assert_eq!(decode_block(&body, DEFAULT_MAX_DECODED_SIZE).unwrap(), input);
        }
    }

    #[test]
    fn reusable_encoder_matches_one_shot() {
        let mut e = BlockEncoder::default();
        let mut out = Vec::new();
        for input in [&b"abcabcabc"[..], b"", b"xyz"] {
            e.encode_into(input, &mut out);
            assert_eq!(out, encode_block(input));
        }
    }
}
