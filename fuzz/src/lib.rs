//! Helpers shared by the fuzz targets: the engine's receive loop over a [`Decoder`], with every
//! invariant the loop can see asserted, and owned outputs so that two runs can be compared.

pub mod assembly;

use std::fmt;

use throng::proto::frame::{MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use throng::proto::{DataKind, Decoder, Item, Limits, ProtocolError, Role};

/// What the decoder produced, owned: whole messages (pieces assembled), control frames, or the
/// error that ended the run.
#[derive(Clone, PartialEq, Eq)]
pub enum Out {
    /// A complete data message.
    Message(DataKind, Vec<u8>),
    /// A ping and its payload.
    Ping(Vec<u8>),
    /// A pong and its payload.
    Pong(Vec<u8>),
    /// The peer's close frame: code and reason.
    Close(Option<u16>, String),
    /// The first protocol error; nothing follows it.
    Error(ProtocolError),
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Out::Message(kind, m) => write!(f, "Message({kind:?}, {:?})", Short(m)),
            Out::Ping(p) => write!(f, "Ping({:?})", Short(p)),
            Out::Pong(p) => write!(f, "Pong({:?})", Short(p)),
            Out::Close(code, reason) => write!(f, "Close({code:?}, {:?})", Short(reason.as_bytes())),
            Out::Error(e) => write!(f, "Error({e:?})"),
        }
    }
}

/// Bytes shown by length and their first few, so that a failure report stays readable.
pub struct Short<'a>(pub &'a [u8]);

impl fmt::Debug for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 24;
        let head = &self.0[..self.0.len().min(SHOWN)];
        let more = if self.0.len() > SHOWN { "…" } else { "" };
        write!(f, "{} bytes \"{}{more}\"", self.0.len(), head.escape_ascii())
    }
}

/// `value`'s `Debug` form, cut to a few hundred bytes.
pub fn clipped(value: &impl fmt::Debug) -> String {
    let mut text = format!("{value:?}");
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Panics with the first difference (and the lengths) unless the two runs yielded the same.
pub fn assert_same(a: &[Out], b: &[Out], what: &str) {
    if a == b {
        return;
    }
    let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    panic!(
        "{what}: outputs differ at #{at} (of {} vs {}): {:?} vs {:?}",
        a.len(),
        b.len(),
        a.get(at),
        b.get(at)
    );
}

/// The most bytes the engine may have to keep between reads: an incomplete header, or a whole
/// control frame (header and 125 bytes of payload) that has not fully arrived.
pub const MAX_KEPT: usize = MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD;

/// Feeds `wire` to a decoder in pieces of `piece_sizes` (cycled; 0 counts as 1), the way the
/// engine's loop does: the bytes the decoder did not use are kept and the next piece is appended
/// to them. Panics on any broken invariant of the decoder's contract.
pub fn run(wire: &[u8], piece_sizes: &[usize], role: Role, limits: &Limits) -> Vec<Out> {
    let mut decoder = Decoder::new(role);
    let mut out = Vec::new();
    // The message being assembled and its kind.
    let mut message: Option<(DataKind, Vec<u8>)> = None;
    let mut closed = false;
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let whole = [usize::MAX];
    let sizes = if piece_sizes.is_empty() { &whole[..] } else { piece_sizes };
    let mut sizes = sizes.iter().cycle();
    while at < wire.len() {
        let n = (*sizes.next().unwrap()).clamp(1, wire.len() - at);
        pending.extend_from_slice(&wire[at..at + n]);
        at += n;
        let mut used = 0;
        loop {
            let available = pending.len() - used;
            let result = decoder.decode(&mut pending[used..], limits);
            let (n, item) = match result {
                Err(e) => {
                    assert!(!closed, "error {e:?} after the close frame");
                    out.push(Out::Error(e));
                    return out;
                }
                Ok(ok) => ok,
            };
            assert!(n <= available, "decode used {n} of {available} bytes");
            used += n;
            let Some(item) = item else { break };
            assert!(n > 0, "an item from no bytes: the loop would never end ({item:?})");
            assert!(!closed, "{item:?} after the close frame");
            match item {
                Item::Data { kind, chunk, first, last } => {
                    assert!(chunk.len() as u64 <= limits.max_frame_size, "chunk larger than a frame");
                    match (&mut message, first) {
                        (None, true) => message = Some((kind, chunk.to_vec())),
                        (Some(_), true) => panic!("first piece while a message is in progress"),
                        (None, false) => panic!("continuing piece with no message in progress"),
                        (Some((k, m)), false) => {
                            assert_eq!(*k, kind, "the kind changed inside a message");
                            m.extend_from_slice(chunk);
                        }
                    }
                    let len = message.as_ref().map_or(0, |(_, m)| m.len());
                    assert!(len as u64 <= limits.max_message_size, "message of {len} bytes over the limit");
                    assert_eq!(decoder.in_message(), !last, "in_message() after a piece with last={last}");
                    if last {
                        let (kind, m) = message.take().unwrap();
                        // A compressed message's UTF-8 is checked once inflated, not here.
                        if kind == DataKind::Text && !decoder.compressed() {
                            assert!(
                                std::str::from_utf8(&m).is_ok(),
                                "text message is not UTF-8: {:?}",
                                Short(&m)
                            );
                        }
                        out.push(Out::Message(kind, m));
                    }
                }
                Item::Ping(p) => {
                    assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                    out.push(Out::Ping(p.to_vec()));
                }
                Item::Pong(p) => {
                    assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                    out.push(Out::Pong(p.to_vec()));
                }
                Item::Close { code, reason } => {
                    if let Some(code) = code {
                        assert!(code.is_sendable(), "accepted close code {}", code.0);
                    }
                    assert!(reason.len() <= MAX_CONTROL_PAYLOAD - 2);
                    assert!(decoder.is_closed());
                    closed = true;
                    out.push(Out::Close(code.map(|c| c.0), reason.to_owned()));
                }
            }
            if used == pending.len() {
                break;
            }
        }
        pending.drain(..used);
        assert!(pending.len() <= MAX_KEPT, "kept {} bytes between reads", pending.len());
    }
    out
}

/// Prefix lengths below `end` worth re-parsing: all of them for short heads; for long ones those
/// next to a CR or LF (where a parser's decisions change) plus evenly spaced ones, about 130 at most.
pub fn prefixes(data: &[u8], end: usize) -> Vec<usize> {
    const ALL_BELOW: usize = 128;
    const MAX: usize = 128;
    let end = end.min(data.len());
    if end <= ALL_BELOW {
        return (0..end).collect();
    }
    let near_line_end = |i: usize| {
        let is_eol = |j: usize| matches!(data.get(j), Some(b'\r' | b'\n'));
        i == 0 || is_eol(i) || is_eol(i - 1) || (i >= 2 && is_eol(i - 2))
    };
    let mut cuts: Vec<usize> = (0..end).filter(|&i| near_line_end(i)).collect();
    if cuts.len() > MAX / 2 {
        let step = cuts.len().div_ceil(MAX / 2);
        cuts = cuts.into_iter().step_by(step).collect();
    }
    cuts.extend((0..end).step_by(end.div_ceil(MAX / 2)));
    cuts.push(end - 1);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Checks a serialized HTTP head: ends with the blank line, every CR is followed by LF and every
/// LF preceded by CR (no bare CR or LF that a proxy could read as a line break), and it has
/// exactly `lines` lines before the blank one.
pub fn assert_head_lines(head: &[u8], lines: usize) {
    assert!(
        head.ends_with(b"\r\n\r\n"),
        "head does not end with a blank line: {}",
        clipped(&head.escape_ascii().to_string())
    );
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(head.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert_eq!(head.get(i.wrapping_sub(1)), Some(&b'\r'), "bare LF at {i}"),
            _ => {}
        }
    }
    let crlfs = head.windows(2).filter(|w| w == b"\r\n").count();
    assert_eq!(crlfs, lines + 1, "{}", clipped(&head.escape_ascii().to_string()));
}

/// A tiny reader of fuzz input bytes that never fails: past the end it answers zeros.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, or 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// Piece sizes for [`run`]: one byte for how many (0 to 7), then one byte each (1 to 256).
    pub fn piece_sizes(&mut self) -> Vec<usize> {
        let count = usize::from(self.byte() % 8);
        (0..count).map(|_| usize::from(self.byte()) + 1).collect()
    }
}
