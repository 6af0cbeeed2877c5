//! Whole-body encode and decode: protobuf + snappy block, in one call each.
//!
//! Senders reuse an [`Encoder`] (its scratch buffer and snappy state) for every request;
//! receivers call [`decode_body`] with their size limit.

use prost::Message;
use thiserror::Error;

use crate::snappy::{self, BlockEncoder, SnappyError};

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error(transparent)]
    Snappy(#[from] SnappyError),
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// Decompresses a snappy block of at most `max_decoded` bytes and decodes message `M` from it.
pub fn decode_body<M: Message + Default>(body: &[u8], max_decoded: usize) -> Result<M, DecodeError> {
    let raw = snappy::decode_block(body, max_decoded)?;
    Ok(M::decode(raw.as_slice())?)
}

/// Encodes messages into snappy-compressed request bodies, reusing its buffers.
#[derive(Debug, Default)]
pub struct Encoder {
    scratch: Vec<u8>,
    snappy: BlockEncoder,
}

impl Encoder {
    /// Replaces `out` with the compressed encoding of `msg`.
    pub fn encode_into(&mut self, msg: &impl Message, out: &mut Vec<u8>) {
        self.scratch.clear();
        msg.encode(&mut self.scratch).expect("Vec<u8> grows as needed");
        self.snappy.encode_into(&self.scratch, out);
    }

    /// The compressed encoding of `msg` as a new vector.
    pub fn encode(&mut self, msg: &impl Message) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(msg, &mut out);
        out
    }
}
