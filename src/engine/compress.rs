//! A loop's permessage-deflate state: the compressors and the inflater its connections share,
//! and what the few connections that need more keep.
//!
//! A connection that negotiated the extension carries one flag bit (`DEFLATE` in `conn.rs`).
//! In `Shared` mode (both sides without context takeover, a 32 KiB server window) that bit is
//! all it has: its messages are compressed by the loop's compressor and inflated by the loop's
//! inflater, both reset after every message, so an idle connection owns no compression memory.
//! A connection that agreed on something else — `Dedicated` mode, or a smaller server window
//! the client asked for — has an entry in [`LoopDeflate::special`], whose compressor and
//! inflater are made when it first sends or receives a compressed message and kept (they hold
//! the context) until it goes.

use std::collections::HashMap;

use super::buffers::spare_room;
use crate::proto::deflate::{Compression, DeflateConfig, Deflater, Inflater, Params};
use crate::proto::frame::{FrameHeader, MAX_HEADER_LEN};
use crate::proto::{DataKind, ProtocolError};

/// The scratch buffers shrink back to this after a larger message.
const SCRATCH_KEEP: usize = 64 * 1024;

/// What a connection outside the shared default agreed on, and its own codec once used (boxed:
/// a zlib-rs stream is hundreds of bytes even before its windows, and most entries never get one).
struct Special {
    params: Params,
    deflater: Option<Box<Deflater>>,
    inflater: Option<Box<Inflater>>,
}

/// One loop's compression state (see the module doc).
pub(crate) struct LoopDeflate {
    config: DeflateConfig,
    /// The loop's compressors without context, by window bits (index `bits - 8`), made on
    /// first use: most connections use the 15-bit one.
    shared: [Option<Deflater>; 8],
    /// The loop's compressor for broadcast frames (at the broadcast level, a full window).
    broadcast: Option<Deflater>,
    /// The loop's inflater for peers without context, reset after every message.
    inflater: Option<Inflater>,
    special: HashMap<u32, Special>,
    /// Where a message is compressed before it is framed.
    pub(crate) compressed: Vec<u8>,
}

impl LoopDeflate {
    pub(crate) fn new(config: DeflateConfig) -> Self {
        Self {
            config,
            shared: Default::default(),
            broadcast: None,
            inflater: None,
            special: HashMap::new(),
            compressed: Vec::new(),
        }
    }

    pub(crate) fn config(&self) -> &DeflateConfig {
        &self.config
    }

    /// Slot `index` agreed on `params`: remembered only when they are not the shared default.
    pub(crate) fn negotiated(&mut self, index: u32, params: Params) {
        let default = self.config.mode == Compression::Shared && params.server_max_window_bits == 15;
        if !default {
            self.special.insert(index, Special { params, deflater: None, inflater: None });
        }
    }

    /// Slot `index` is gone: its codec, if it had one, goes too.
    pub(crate) fn removed(&mut self, index: u32) {
        if self.special.is_empty() || self.special.remove(&index).is_none() {
            return;
        }
        if let Some(room) = spare_room(self.special.len(), self.special.capacity()) {
            self.special.shrink_to(room);
        }
    }

    /// Whether slot `index` takes the broadcast frames compressed once for everyone (no
    /// context, a full window); the others get the uncompressed frame.
    pub(crate) fn takes_shared_frames(&self, index: u32) -> bool {
        self.special.is_empty() || !self.special.contains_key(&index)
    }

    /// Compresses a message for slot `index` into [`LoopDeflate::compressed`]; returns whether
    /// it should go compressed (`false`: under the threshold, or — without context — no
    /// smaller compressed, so send it as it is).
    pub(crate) fn compress(&mut self, index: u32, payload: &[u8]) -> bool {
        if payload.len() < self.config.threshold {
            return false;
        }
        let level = self.config.level;
        self.compressed.clear();
        let (deflater, reset) = match self.special.get_mut(&index) {
            Some(special) if !special.params.server_no_context_takeover => {
                let bits = special.params.server_max_window_bits;
                (&mut **special.deflater.get_or_insert_with(|| Box::new(Deflater::new(level, bits))), false)
            }
            // Without context a smaller window is one of the loop's compressors too.
            Some(special) => {
                (shared_deflater(&mut self.shared, level, special.params.server_max_window_bits), true)
            }
            None => (shared_deflater(&mut self.shared, level, 15), true),
        };
        deflater.compress(payload, &mut self.compressed, reset);
        // With context the peer's window must see every message we compressed, so it goes
        // compressed whatever its size; without, the smaller form wins.
        !reset || self.compressed.len() < payload.len()
    }

    /// Inflates a compressed message from slot `index` into `out` (emptied first), holding it
    /// to `limit` bytes.
    pub(crate) fn inflate(
        &mut self,
        index: u32,
        kind: DataKind,
        compressed: &[u8],
        limit: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        out.clear();
        let (inflater, reset) = match self.special.get_mut(&index) {
            Some(special) if !special.params.client_no_context_takeover => {
                let bits = special.params.client_max_window_bits;
                (&mut **special.inflater.get_or_insert_with(|| Box::new(Inflater::new(bits))), false)
            }
            _ => (self.inflater.get_or_insert_with(|| Inflater::new(15)), true),
        };
        inflater.inflate(compressed, kind, limit, out, reset)
    }

    /// Compresses a broadcast frame (header and payload) once, for every subscriber that takes
    /// shared frames: the compressed frame, or `None` when it stays as it is.
    pub(crate) fn compress_frame(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let Ok(Some((header, header_len))) = FrameHeader::decode(frame) else { return None };
        let payload = frame.get(header_len..)?;
        if payload.len() < self.config.threshold || header.opcode.is_control() {
            return None;
        }
        self.compressed.clear();
        let level = self.config.broadcast_level;
        let deflater = self.broadcast.get_or_insert_with(|| Deflater::new(level, 15));
        deflater.compress(payload, &mut self.compressed, true);
        if self.compressed.len() >= payload.len() {
            return None;
        }
        let header = FrameHeader {
            rsv: crate::proto::deflate::RSV1,
            payload_len: self.compressed.len() as u64,
            ..header
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let mut out = Vec::with_capacity(head_len + self.compressed.len());
        out.extend_from_slice(&head[..head_len]);
        out.extend_from_slice(&self.compressed);
        self.trim();
        Some(out)
    }

    /// Gives back the scratch buffer's memory after an unusually large message.
    pub(crate) fn trim(&mut self) {
        if self.compressed.capacity() > SCRATCH_KEEP {
            self.compressed = Vec::new();
        }
    }
}

/// The loop's compressor without context for a window of `bits`.
fn shared_deflater(shared: &mut [Option<Deflater>; 8], level: u8, bits: u8) -> &mut Deflater {
    let slot = usize::from(bits.clamp(8, 15) - 8);
    shared[slot].get_or_insert_with(|| Deflater::new(level, bits))
}
