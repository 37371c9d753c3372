//! permessage-deflate on the client side (`--deflate`, RFC 7692), on throng's
//! `proto::deflate`.
//!
//! Every connection offers both no-context-takeover parameters, so that it keeps no
//! compression window between messages: one [`Codec`] per loop (one compressor per window size
//! the servers asked for, one inflater, the buffers) serves all its connections, and a
//! connection's own state is the agreed [`Params`] and, only while a compressed message arrives
//! in pieces, its compressed bytes ([`ConnDeflate`]).
//!
//! Our compressor is reset after every message whatever the server answered (a sender may
//! always start a message from an empty window). A server that answers without
//! `server_no_context_takeover` keeps its window between messages: such a connection gets an
//! inflater of its own (tens of KiB) when its first compressed message arrives, and is counted
//! ([`DeflateReport::server_context`]) — the run goes on, but its client memory is not what
//! the shared mode would cost. A server that declines (no extension in the 101) is counted too
//! ([`DeflateReport::declined`]); those connections run uncompressed.

use serde::{Deserialize, Serialize};
use throng::proto::deflate::{self, Deflater, Inflater, Params};
use throng::proto::handshake::HandshakeError;
use throng::proto::{DataKind, ProtocolError};

use crate::stats::{merge_causes, Causes};

/// The deflate level of our compressor: zlib's default.
const LEVEL: u8 = 6;

/// What [`Codec::inflate`] keeps between calls above this size is given back: a single huge
/// message should not pin its buffer for the rest of the run.
const KEEP: usize = 1 << 20;

/// Whether the offer leaves the server its context (`--deflate-context`): set once at start.
static OFFER_CONTEXT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--deflate-context`: the offer from now on lets the server keep its context.
pub(crate) fn offer_context_takeover(on: bool) {
    OFFER_CONTEXT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The `Sec-WebSocket-Extensions` value every connection offers.
pub(crate) fn offer() -> &'static str {
    deflate::client_offer(!OFFER_CONTEXT.load(std::sync::atomic::Ordering::Relaxed))
}

/// One loop's compression state, shared by its connections.
#[derive(Debug, Default)]
pub(crate) struct Codec {
    /// By `client_max_window_bits - 8`: made when a server first asks for that window.
    deflaters: [Option<Deflater>; 8],
    /// For servers that keep no context (any window up to 15 bits inflates with a 15-bit one).
    inflater: Option<Inflater>,
    /// A compressed payload being framed.
    compressed: Vec<u8>,
    /// The last message inflated.
    inflated: Vec<u8>,
    /// How the connections' negotiations went.
    agreed: Vec<(Params, u64)>,
    declined: u64,
    server_context: u64,
    own_inflaters: u64,
}

impl Codec {
    /// Checks the extensions a 101 accepted (its `Sec-WebSocket-Extensions` list elements, as
    /// `ServerResponse::extensions` gives them) against our offer and counts the outcome: the connection's state when compression was agreed,
    /// `None` when the server declined, an error (fail the connection) for an invalid answer.
    pub(crate) fn negotiate<'a>(
        &mut self,
        elements: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Box<ConnDeflate>>, HandshakeError> {
        let Some(params) = deflate::accept_response(elements)? else {
            self.declined += 1;
            return Ok(None);
        };
        match self.agreed.iter_mut().find(|(p, _)| *p == params) {
            Some((_, n)) => *n += 1,
            None => self.agreed.push((params, 1)),
        }
        self.server_context += u64::from(!params.server_no_context_takeover);
        Ok(Some(Box::new(ConnDeflate { params, own_inflater: None, partial: Vec::new() })))
    }

    /// Compresses one whole message for a connection that agreed on `params`; the payload to
    /// send with RSV1 (its sync-flush tail removed).
    pub(crate) fn compress(&mut self, params: &Params, payload: &[u8]) -> &[u8] {
        let bits = params.client_max_window_bits.clamp(8, 15);
        let deflater =
            self.deflaters[usize::from(bits - 8)].get_or_insert_with(|| Deflater::new(LEVEL, bits));
        self.compressed.clear();
        // Reset after every message: we offered client_no_context_takeover, and a compressor
        // that forgets is valid whatever the server answered.
        deflater.compress(payload, &mut self.compressed, true);
        &self.compressed
    }

    /// Inflates one whole compressed message of a connection (`compressed`: its frames'
    /// payloads joined), at most `limit` bytes; the message.
    pub(crate) fn inflate(
        &mut self,
        conn: &mut ConnDeflate,
        compressed: &[u8],
        kind: DataKind,
        limit: u64,
    ) -> Result<&[u8], ProtocolError> {
        if self.inflated.capacity() > KEEP {
            self.inflated = Vec::new();
        }
        self.inflated.clear();
        if conn.params.server_no_context_takeover {
            let inflater = self.inflater.get_or_insert_with(|| Inflater::new(15));
            inflater.inflate(compressed, kind, limit, &mut self.inflated, true)?;
        } else {
            let own = conn.own_inflater.get_or_insert_with(|| {
                self.own_inflaters += 1;
                Box::new(Inflater::new(conn.params.server_max_window_bits))
            });
            own.inflate(compressed, kind, limit, &mut self.inflated, false)?;
        }
        Ok(&self.inflated)
    }

    /// The negotiation counts for the report.
    pub(crate) fn report(&self) -> DeflateReport {
        let mut negotiated = Causes::new();
        for (params, n) in &self.agreed {
            *negotiated.entry(describe(params)).or_default() += n;
        }
        DeflateReport {
            offer: offer().to_owned(),
            negotiated,
            declined: self.declined,
            server_context: self.server_context,
            own_inflaters: self.own_inflaters,
        }
    }
}

/// A connection's permessage-deflate state, once agreed.
#[derive(Debug)]
pub(crate) struct ConnDeflate {
    pub(crate) params: Params,
    /// Only when the server keeps its context, made on its first compressed message.
    own_inflater: Option<Box<Inflater>>,
    /// The compressed bytes of a message arriving in pieces (given back once it is whole).
    pub(crate) partial: Vec<u8>,
}

/// How the runs' connections negotiated permessage-deflate (`--deflate`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct DeflateReport {
    /// The `Sec-WebSocket-Extensions` value offered.
    pub(crate) offer: String,
    /// Connections upgraded with compression, by the parameters agreed (as a response would
    /// state them).
    pub(crate) negotiated: Causes,
    /// Connections upgraded without it (the server declined): they ran uncompressed.
    pub(crate) declined: u64,
    /// Of the negotiated, those whose server keeps its window between messages (it answered
    /// without `server_no_context_takeover`): each needs an inflater of its own.
    pub(crate) server_context: u64,
    /// The inflaters of their own those connections made (on a first compressed message).
    pub(crate) own_inflaters: u64,
}

impl DeflateReport {
    /// Adds another loop's or process's counts.
    pub(crate) fn merge(&mut self, other: DeflateReport) {
        if self.offer.is_empty() {
            self.offer = other.offer;
        }
        merge_causes(&mut self.negotiated, other.negotiated);
        self.declined += other.declined;
        self.server_context += other.server_context;
        self.own_inflaters += other.own_inflaters;
    }

    /// The table's line.
    pub(crate) fn line(&self) -> String {
        let agreed: u64 = self.negotiated.values().sum();
        let mut out = format!("{agreed} connections compressed, {} declined by the server", self.declined);
        for (params, n) in &self.negotiated {
            out.push_str(&format!("; {n}× {params}"));
        }
        if self.server_context > 0 {
            out.push_str(&format!(
                "; {} where the server keeps its context ({} with an inflater of their own)",
                self.server_context, self.own_inflaters
            ));
        }
        out
    }
}

/// Merges two optional reports (a process without `--deflate` has none).
pub(crate) fn merge(into: &mut Option<DeflateReport>, other: Option<DeflateReport>) {
    match (into.as_mut(), other) {
        (Some(into), Some(other)) => into.merge(other),
        (None, Some(other)) => *into = Some(other),
        (_, None) => {}
    }
}

/// The agreed parameters as a response would state them (window sizes when not 15).
pub(crate) fn describe(params: &Params) -> String {
    let mut out = String::from("permessage-deflate");
    if params.server_no_context_takeover {
        out.push_str("; server_no_context_takeover");
    }
    if params.client_no_context_takeover {
        out.push_str("; client_no_context_takeover");
    }
    if params.server_max_window_bits < 15 {
        out.push_str(&format!("; server_max_window_bits={}", params.server_max_window_bits));
    }
    if params.client_max_window_bits < 15 {
        out.push_str(&format!("; client_max_window_bits={}", params.client_max_window_bits));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_is_counted_by_outcome() {
        let mut codec = Codec::default();
        let shared = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        let conn = codec.negotiate([shared]).unwrap().unwrap();
        assert!(conn.params.server_no_context_takeover && conn.params.client_no_context_takeover);
        let conn = codec.negotiate(["permessage-deflate; client_max_window_bits=10"]).unwrap().unwrap();
        assert_eq!((conn.params.client_max_window_bits, conn.params.server_no_context_takeover), (10, false));
        assert!(codec.negotiate(std::iter::empty()).unwrap().is_none());
        assert!(codec.negotiate(["x-other"]).is_err());
        assert!(codec.negotiate(["permessage-deflate", "permessage-deflate"]).is_err());
        let report = codec.report();
        assert_eq!((report.declined, report.server_context, report.own_inflaters), (1, 1, 0));
        assert_eq!(report.negotiated.get(shared), Some(&1));
        assert_eq!(report.negotiated.get("permessage-deflate; client_max_window_bits=10"), Some(&1));
    }

    #[test]
    fn messages_round_trip_through_the_shared_and_the_own_inflater() {
        let mut codec = Codec::default();
        let payload = br#"{"seq":"0000000000000001","items":[{"id":1},{"id":2},{"id":3},{"id":4}]}"#;
        for (header, own) in [
            ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", 0),
            ("permessage-deflate; client_no_context_takeover; server_max_window_bits=9", 1),
        ] {
            let mut conn = codec.negotiate([header]).unwrap().unwrap();
            for _ in 0..2 {
                // Our own compressor stands in for the server's (it resets: valid either way).
                let compressed = codec.compress(&conn.params, payload).to_vec();
                assert!(compressed.len() < payload.len(), "{}", compressed.len());
                let inflated = codec.inflate(&mut conn, &compressed, DataKind::Text, 1 << 20).unwrap();
                assert_eq!(inflated, payload);
            }
            assert_eq!(codec.report().own_inflaters, own);
        }
        let mut conn = codec.negotiate(["permessage-deflate"]).unwrap().unwrap();
        let big = vec![b'a'; 4096];
        let compressed = codec.compress(&conn.params, &big).to_vec();
        assert_eq!(
            codec.inflate(&mut conn, &compressed, DataKind::Binary, 1000),
            Err(ProtocolError::MessageTooLarge)
        );
    }
}
