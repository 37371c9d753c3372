//! Raw deflate with a sync flush per message (RFC 7692 §7.2), on `flate2`.

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

use super::TAIL;
use crate::proto::error::ProtocolError;
use crate::proto::utf8;
use crate::proto::DataKind;

/// zlib's raw deflate has no 256-byte window: 8 becomes 9, which is safe for a peer that asked
/// for 8, because deflate never emits a distance beyond the window minus 262 bytes of lookahead
/// (250 bytes with a 512-byte window), so every reference stays inside a 256-byte window.
fn zlib_bits(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// A message compressor: one per loop (shared by connections that keep no context), or one per
/// connection with context takeover.
pub struct Deflater {
    inner: Compress,
    window_bits: u8,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").field("window_bits", &self.window_bits).finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor at `level` (0–9) whose back-references stay within a window of
    /// `window_bits` (8–15).
    pub fn new(level: u8, window_bits: u8) -> Self {
        let level = flate2::Compression::new(u32::from(level.min(9)));
        Self { inner: Compress::new_with_window_bits(level, false, zlib_bits(window_bits)), window_bits }
    }

    /// The window this compressor was made for (as negotiated, 8–15).
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Compresses one whole message, appending the payload to send (the sync flush's tail
    /// removed) to `out`. `reset`: forget this message afterwards (no context takeover), so the
    /// next one starts from an empty window.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>, reset: bool) {
        let start = out.len();
        // Room for incompressible input: deflate's stored blocks add 5 bytes per 16 KiB.
        out.reserve(payload.len() + payload.len() / 1024 + 16);
        let mut input = payload;
        loop {
            let before_in = self.inner.total_in();
            // Only a caller's bug (a stream used after an error) fails here; the bytes so far stay.
            let result = self.inner.compress_vec(input, out, FlushCompress::Sync);
            let consumed = (self.inner.total_in() - before_in) as usize;
            input = &input[consumed.min(input.len())..];
            // The flush is complete once all input went in and the output did not fill up.
            if result.is_err() || (input.is_empty() && out.len() < out.capacity()) {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        } else if out.len() == start {
            // zlib skips a flush with nothing new (an empty message right after another flush):
            // send the empty stored block's header byte, which the receiver's tail completes.
            out.push(0x00);
        }
        if reset {
            self.inner.reset();
        }
    }
}

/// A message inflater: one per loop for peers that keep no context, or one per connection.
pub struct Inflater {
    inner: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

/// How much output is made room for at a time: the work done past the limit is at most this.
const INFLATE_STEP: usize = 16 * 1024;

impl Inflater {
    /// An inflater for a peer that compresses with windows of at most `window_bits` (8–15).
    pub fn new(window_bits: u8) -> Self {
        Self { inner: Decompress::new_with_window_bits(false, zlib_bits(window_bits)) }
    }

    /// Inflates one whole compressed message (its frames' payloads joined, without the tail),
    /// appending it to `out`, and checks a text message is UTF-8. The inflated size is held to
    /// `limit` while inflating: a bomb fails with [`ProtocolError::MessageTooLarge`] (1009)
    /// after at most `limit` bytes of output. `reset`: the peer keeps no context, so neither do
    /// we. On error the inflater is reset (the connection is failed anyway).
    pub fn inflate(
        &mut self,
        compressed: &[u8],
        kind: DataKind,
        limit: u64,
        out: &mut Vec<u8>,
        reset: bool,
    ) -> Result<(), ProtocolError> {
        let start = out.len();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let result = self.run(compressed, limit, start, out);
        let result = result.and_then(|()| match kind {
            DataKind::Text => utf8::validate(&out[start..]).map_err(|_| ProtocolError::InvalidUtf8),
            DataKind::Binary => Ok(()),
        });
        if reset || result.is_err() {
            self.inner.reset(false);
        }
        result
    }

    fn run(
        &mut self,
        compressed: &[u8],
        limit: usize,
        start: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        for mut input in [compressed, &TAIL[..]] {
            loop {
                let produced = out.len() - start;
                if produced > limit {
                    return Err(ProtocolError::MessageTooLarge);
                }
                // One byte of room past the limit tells "exactly the limit" from "more". The
                // first step is sized from the input (most messages inflate in one), later ones
                // grow up to the step.
                let guess = input.len().saturating_mul(4).max(out.len() - start).max(256);
                let room = (limit - produced).saturating_add(1).min(guess).min(INFLATE_STEP);
                // Output goes into at most `room` bytes past what was made, so the work done
                // over the limit is bounded by the step, not by the vector's spare capacity.
                let before_out = out.len();
                out.reserve(room);
                out.resize(before_out + room, 0);
                let before_in = self.inner.total_in();
                let before_total = self.inner.total_out();
                let status = self.inner.decompress(input, &mut out[before_out..], FlushDecompress::Sync);
                let made = (self.inner.total_out() - before_total) as usize;
                out.truncate(before_out + made);
                let status = status.map_err(|_| ProtocolError::InvalidCompressedData)?;
                let consumed = (self.inner.total_in() - before_in) as usize;
                input = &input[consumed.min(input.len())..];
                let progressed = consumed > 0 || made > 0;
                let filled = made == room;
                if status == Status::StreamEnd {
                    // A final block (BFINAL): the message is whole; what follows is ignored.
                    if out.len() - start > limit {
                        return Err(ProtocolError::MessageTooLarge);
                    }
                    self.inner.reset(false);
                    return Ok(());
                }
                if input.is_empty() && !filled {
                    break;
                }
                if !progressed {
                    // No input used and room left: the stream wants bytes that never come.
                    return Err(ProtocolError::InvalidCompressedData);
                }
            }
        }
        if out.len() - start > limit {
            return Err(ProtocolError::MessageTooLarge);
        }
        Ok(())
    }
}
