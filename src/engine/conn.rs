//! One connection's logic, driven by "these bytes arrived", "the queue was written", "a timer
//! fired". It touches no socket: a backend reads into the loop's scratch buffer, calls in here,
//! and writes what [`Conn::outbound`] holds. That is what lets a completion-based backend reuse it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::buffers::{spare_room, Cold};
use super::config::FINE;
use super::core::LoopCore;
use super::event::{CloseCause, Event, Flow, Inline};
use super::ids::ConnId;
use super::outbound::{Chunk, Form, Outbound, Prepared};
use super::stats::LoopStats;
use super::timer::{after, earlier, reached, Tick};
use super::topics::{Joined, TopicShared, NONE};
use super::SlowConsumerPolicy;
use crate::proto::deflate::{accept_offers, RSV1};
use crate::proto::frame::{MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::proto::handshake::{parse_request, write_accept, write_error, HandshakeError, Parsed, Rejection};
use crate::proto::proxy;
use crate::proto::Message;
use crate::proto::{CloseCode, DataKind, Item, OpCode, ProtocolError, Role, Session, Transmit};

/// The inflate buffer shrinks back after a message larger than this.
const INFLATED_KEEP: usize = 256 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// From a trusted proxy: waiting for the PROXY protocol header that names the client.
    Proxy,
    /// Waiting for the upgrade request.
    Handshaking,
    /// Upgraded: the session decides what may still be sent (after our close frame, we wait
    /// for the peer's until `phase_tick`).
    Open,
    /// Done: flush what is queued, send FIN, then wait for the peer's FIN (discarding reads).
    Lingering,
}

const OPENED: u8 = 1 << 0;
const DIRTY: u8 = 1 << 1;
const AWAITING_PONG: u8 = 1 << 2;
const FIN_SENT: u8 = 1 << 3;
/// A timer entry is armed at `armed` (every tick value is a valid tick, so no sentinel).
const ARMED: u8 = 1 << 4;
/// Reading stopped because the outbound queue is full: TCP pushes back on this peer alone.
const READ_PAUSED: u8 = 1 << 5;
/// permessage-deflate was negotiated: RSV1 marks compressed messages both ways (the loop's
/// [`LoopDeflate`](super::compress::LoopDeflate) holds anything beyond this bit).
const DEFLATE: u8 = 1 << 6;

/// The most a control frame takes on the wire from the server (2-byte header, 125 payload).
const CONTROL_FRAME_MAX: usize = 2 + MAX_CONTROL_PAYLOAD;

/// A pooled box, its queue counted in the loop's `outbound_queued` gauge.
fn take_cold(core: &mut LoopCore) -> Box<Cold> {
    let mut cold = core.cold_pool.take();
    cold.outbound.track(&core.stats);
    cold
}

/// What the backend must do after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Carry on.
    Continue,
    /// Drop the connection now.
    Remove,
}

/// The per-connection state, kept small: an idle open connection owns no heap memory.
pub(crate) struct Conn {
    /// The WebSocket rules: decoding, pings, the close handshake and the close code to report.
    session: Session,
    cold: Option<Box<Cold>>,
    /// The tick of this connection's armed timer entry (valid with the `ARMED` flag).
    pub(crate) armed: Tick,
    /// The last tick bytes arrived (or the accept, while handshaking).
    last_seen: Tick,
    /// When the ping went out, or when the wait for the peer's close (or lingering) gives up.
    phase_tick: Tick,
    /// The message-rate limiter's theoretical arrival time (GCRA), in [`super::core::FINE`]
    /// units of the loop clock. The limiter only runs once the connection is open, so until
    /// the upgrade this is the accept's time: the handshake duration is measured from it
    /// (one field, two uses, so that measuring costs an idle connection nothing).
    rate_tat: u32,
    /// The first node of this connection's subscriptions in the loop's topic index, or
    /// [`NONE`] (in what was padding).
    pub(crate) topics: u32,
    pub(crate) phase: Phase,
    flags: u8,
    /// The first decision to close the connection ([`CloseCause::to_byte`]; 0: none yet), for
    /// its Close event (in what was padding).
    cause: u8,
}

impl Conn {
    pub(crate) fn new(core: &mut LoopCore) -> Self {
        Self {
            session: Session::new(Role::Server),
            cold: None,
            armed: 0,
            last_seen: core.now_tick,
            phase_tick: 0,
            rate_tat: core.now_fine,
            topics: NONE,
            phase: Phase::Handshaking,
            flags: 0,
            cause: 0,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Records why the connection is closing, unless a cause was recorded already: the first
    /// decision is the one reported (a close handshake that then times out keeps its cause).
    fn decide(&mut self, cause: CloseCause) {
        if self.cause == 0 {
            self.cause = cause.to_byte();
        }
    }

    fn set(&mut self, flag: u8) {
        self.flags |= flag;
    }

    fn clear(&mut self, flag: u8) {
        self.flags &= !flag;
    }

    fn cold(&mut self, core: &mut LoopCore) -> &mut Cold {
        self.cold.get_or_insert_with(|| take_cold(core))
    }

    fn id(&self, core: &LoopCore, index: u32) -> ConnId {
        ConnId::new(core.loop_id, index as usize, core.generation(index))
    }

    /// Releases the boxed state once nothing is in it, so that idle connections hold no heap.
    /// A box still in use keeps no spare outbound buffer once its queue drained (a peer that
    /// leaves a partial frame must not hold one); the pool keeps it.
    fn release_cold(&mut self, core: &mut LoopCore) {
        let Some(cold) = self.cold.as_mut() else { return };
        if cold.is_idle() {
            if let Some(cold) = self.cold.take() {
                core.cold_pool.give_back(cold);
            }
        } else if cold.outbound.is_empty() {
            cold.outbound.trim();
        }
    }

    /// Bytes kept from the previous read, to be put in front of the next one.
    pub(crate) fn spill(&self) -> &[u8] {
        self.cold.as_ref().map_or(&[], |c| &c.spill)
    }

    /// The queue the backend writes from. A pong held back while the queue was full joins it
    /// here, once it fits under the cap.
    pub(crate) fn outbound(&mut self, core: &LoopCore) -> Option<&mut Outbound> {
        let cold = self.cold.as_mut()?;
        if cold.pong.is_some() && cold.outbound.fits(CONTROL_FRAME_MAX, core.config.max_outbound_bytes) {
            if let Some(pong) = cold.pong.take() {
                cold.outbound.push_frame(OpCode::Pong, &pong);
            }
        }
        Some(&mut cold.outbound).filter(|o| !o.is_empty())
    }

    /// Whether the outbound queue is too full to take even a control frame: the backend stops
    /// reading from this connection until [`Conn::written`] says it may resume, so a peer that
    /// sends without reading (pings, requests answered inline) is pushed back by TCP alone.
    pub(crate) fn pause_reading(&mut self, core: &LoopCore) -> bool {
        let queued = self.cold.as_ref().map_or(0, |c| c.outbound.queued());
        if queued + CONTROL_FRAME_MAX <= core.config.max_outbound_bytes {
            return false;
        }
        if !self.has(READ_PAUSED) {
            self.set(READ_PAUSED);
            LoopStats::count(&core.stats.read_pauses, 1);
        }
        true
    }

    /// Whether the backend should send FIN now: lingering and everything written.
    pub(crate) fn wants_fin(&self) -> bool {
        self.phase == Phase::Lingering
            && !self.has(FIN_SENT)
            && self.cold.as_ref().is_none_or(|c| c.outbound.is_empty())
    }

    /// Whether both close frames were exchanged (and so nothing more will arrive).
    pub(crate) fn close_handshake_done(&self) -> bool {
        self.session.close_handshake_done()
    }

    /// Whether data may still be queued: upgraded, and our close frame not sent.
    fn may_send(&self) -> bool {
        self.phase == Phase::Open && self.session.can_send()
    }

    pub(crate) fn fin_sent(&mut self) {
        self.set(FIN_SENT);
    }

    /// The backend wrote `n` bytes of the queue. Returns true when reading was paused for a
    /// full queue and may resume now.
    pub(crate) fn written(&mut self, core: &mut LoopCore, n: usize) -> bool {
        if let Some(cold) = self.cold.as_mut() {
            cold.outbound.advance(n);
        }
        LoopStats::count(&core.stats.bytes_out, n as u64);
        self.release_cold(core);
        if self.has(READ_PAUSED) && !self.pause_reading(core) {
            self.clear(READ_PAUSED);
            return true;
        }
        false
    }

    /// Marks the connection for a flush at the end of the turn.
    fn mark_dirty(&mut self, core: &mut LoopCore, index: u32) {
        if !self.has(DIRTY) {
            self.set(DIRTY);
            core.dirty.push(index);
        }
    }

    /// Bytes were queued beneath the connection (TLS records): flush at the end of the turn.
    pub(crate) fn wants_flush(&mut self, core: &mut LoopCore, index: u32) {
        self.mark_dirty(core, index);
    }

    /// The transport under the connection ended or failed (TLS: an error, a plain HTTP
    /// request, the peer's close_notify): nothing more is read; what is queued still goes,
    /// then FIN. Before the upgrade this is a failed handshake.
    /// `broken`: TLS failed on a broken record (the peer's protocol error), not an orderly
    /// close_notify or an alert.
    pub(crate) fn abandon(&mut self, core: &mut LoopCore, index: u32, broken: bool) {
        if broken {
            self.decide(CloseCause::ProtocolError);
        }
        if self.before_upgrade() {
            // Counted here: lingering, the removal does not count it again.
            LoopStats::count(&core.stats.handshakes_failed, 1);
        }
        self.linger(core, index);
    }

    /// Whether the connection is lingering (flushing, then FIN).
    pub(crate) fn lingering(&self) -> bool {
        self.phase == Phase::Lingering
    }

    /// The backend took the connection off the dirty list.
    pub(crate) fn flushed(&mut self) {
        self.clear(DIRTY);
    }

    /// Appends a control frame to the queue: it always goes.
    fn queue_control(&mut self, core: &mut LoopCore, index: u32, opcode: OpCode, payload: &[u8]) {
        self.cold(core).outbound.push_frame(opcode, payload);
        self.mark_dirty(core, index);
    }

    /// Queues a data message (from the application) under the outbound cap, compressed when
    /// deflate was negotiated and it is worth it.
    pub(crate) fn send(&mut self, core: &mut LoopCore, index: u32, message: &Message) {
        self.send_data(core, index, message.kind(), message.as_bytes());
    }

    /// [`Conn::send`] of a payload of `kind` (text must be valid UTF-8: the caller checked).
    fn send_data(&mut self, core: &mut LoopCore, index: u32, kind: DataKind, payload: &[u8]) {
        if !self.may_send() {
            return;
        }
        // The cap is applied before compressing (to the larger, uncompressed size): a message
        // compressed with context and then refused would leave the peer's window behind ours.
        if !self.admit(core, index, MAX_HEADER_LEN + payload.len()) {
            return;
        }
        let compressed = self.has(DEFLATE) && core.deflate.compress(index, payload);
        let scratch = std::mem::take(&mut core.deflate.compressed);
        let bytes = if compressed { &scratch[..] } else { payload };
        self.cold(core).outbound.push_data(kind.opcode(), compressed, bytes);
        self.mark_dirty(core, index);
        LoopStats::count(&core.stats.messages_out, 1);
        LoopStats::count(&core.stats.compressed_out, u64::from(compressed));
        core.deflate.compressed = scratch;
        core.deflate.trim();
    }

    /// Queues a frame shared with other connections. Returns whether it was queued (not
    /// refused by the outbound cap, or because the connection is closing).
    pub(crate) fn send_prepared(&mut self, core: &mut LoopCore, index: u32, frame: &Prepared) -> bool {
        if !self.may_send() {
            return false;
        }
        // Compressed once for every connection that shares the loops' compressors.
        let deflate = self.has(DEFLATE) && core.deflate.takes_shared_frames(index);
        let chunk = frame.chunk(deflate, |plain| core.deflate.compress_frame(plain));
        let compressed = matches!(chunk, Chunk::Shared(_, Form::Deflated));
        if !self.admit(core, index, chunk.bytes().len()) {
            return false;
        }
        self.cold(core).outbound.push_shared(chunk);
        self.mark_dirty(core, index);
        LoopStats::count(&core.stats.messages_out, 1);
        LoopStats::count(&core.stats.compressed_out, u64::from(compressed));
        true
    }

    /// Applies the outbound cap ([`Outbound::fits`]).
    fn admit(&mut self, core: &mut LoopCore, index: u32, len: usize) -> bool {
        let cap = core.config.max_outbound_bytes;
        if self.cold.as_ref().is_none_or(|c| c.outbound.fits(len, cap)) {
            return true;
        }
        self.over_cap(core, index, 1);
        false
    }

    /// `refused` messages did not fit under the outbound cap: apply the slow-consumer policy.
    fn over_cap(&mut self, core: &mut LoopCore, index: u32, refused: u64) {
        match core.config.slow_consumer {
            SlowConsumerPolicy::Drop => LoopStats::count(&core.stats.slow_consumer_drops, refused),
            SlowConsumerPolicy::Close => {
                LoopStats::count(&core.stats.slow_consumer_closes, 1);
                self.decide(CloseCause::SlowConsumer);
                self.fail(core, index, CloseCode::POLICY_VIOLATION, "slow consumer");
            }
        }
    }

    /// The application asked to close (or a shutdown, an idle timeout: the `cause`): the session
    /// sends our close frame, once, and we wait for theirs until the close timeout.
    pub(crate) fn close(
        &mut self,
        core: &mut LoopCore,
        index: u32,
        code: CloseCode,
        reason: &str,
        cause: CloseCause,
    ) {
        if self.phase == Phase::Open {
            self.decide(cause);
        }
        match self.phase {
            Phase::Open => {
                let mut queue = Queue::new(&mut self.cold, core);
                if self.session.close(code, reason, &mut queue) {
                    self.queued(core, index);
                    self.phase_tick = core.wheel.deadline(core.now, core.config.close_timeout);
                    self.rearm(core, index);
                }
            }
            Phase::Proxy | Phase::Handshaking => self.linger(core, index),
            Phase::Lingering => {}
        }
    }

    /// Fails the connection: the session sends a close frame with `code` (unless one went
    /// already) and keeps the code to report; then FIN.
    fn fail(&mut self, core: &mut LoopCore, index: u32, code: CloseCode, reason: &str) {
        if self.phase == Phase::Open {
            self.session.fail(code, reason, &mut Queue::new(&mut self.cold, core));
            self.queued(core, index);
        }
        self.linger(core, index);
    }

    /// The session may have queued a control frame: flush at the end of the turn.
    fn queued(&mut self, core: &mut LoopCore, index: u32) {
        if self.cold.as_ref().is_some_and(|c| !c.outbound.is_empty() || c.pong.is_some()) {
            self.mark_dirty(core, index);
        }
    }

    /// Nothing more will be exchanged: flush, FIN, and wait a little for the peer's FIN.
    fn linger(&mut self, core: &mut LoopCore, index: u32) {
        if self.phase == Phase::Lingering {
            return;
        }
        self.phase = Phase::Lingering;
        self.phase_tick = core.wheel.deadline(core.now, core.config.close_timeout);
        self.discard_message(core);
        if let Some(cold) = self.cold.as_mut() {
            cold.spill = Vec::new();
            cold.pong = None;
        }
        self.rearm(core, index);
        self.mark_dirty(core, index);
    }

    /// The backend accepted the connection from `peer`. A peer in the trusted-proxy list must
    /// start with a PROXY header, which names the client; any other peer is the client itself
    /// and goes through admission now.
    pub(crate) fn on_accepted(&mut self, core: &mut LoopCore, index: u32, peer: SocketAddr) {
        if core.config.proxy_trusted.as_ref().is_some_and(|trusted| trusted.contains(peer.ip())) {
            self.phase = Phase::Proxy;
            return;
        }
        self.admit_client(core, index, peer, false);
    }

    /// Asks the admission hook for a slot for `client`; a refusal is answered with its HTTP
    /// status at once (the request, when it comes, is discarded). The address is kept in the
    /// loop's map of handshaking clients until the upgrade (not in a `Cold` box: a burst of
    /// handshakes would hold a box each), so that a connection that never opens gives its slot
    /// back.
    /// `proxied`: the address came from a PROXY header, so it is kept for the upgrade hook and
    /// the Open event even without admission (the socket's peer is the balancer).
    fn admit_client(&mut self, core: &mut LoopCore, index: u32, client: SocketAddr, proxied: bool) {
        let Some(admission) = core.config.admission.clone() else {
            if proxied {
                core.keep_client(index, client);
            }
            return;
        };
        match admission.admit(client) {
            Ok(()) => core.keep_client(index, client),
            Err(rejection) => {
                LoopStats::count(&core.stats.admission_refused, 1);
                let mut response = Vec::new();
                rejection.write(&mut response);
                self.refuse(core, index, &response);
            }
        }
    }

    /// Reads the PROXY header; returns how many bytes it took, or `None` if it needs more (the
    /// bytes are kept) or the connection was refused.
    fn proxy_header(
        &mut self,
        core: &mut LoopCore,
        index: u32,
        data: &[u8],
        peer: SocketAddr,
    ) -> Option<usize> {
        match proxy::parse(data) {
            Ok(proxy::Status::Partial) => {
                self.keep_spill(core, data);
                None
            }
            Ok(proxy::Status::Complete { len, source }) => {
                LoopStats::count(&core.stats.proxy_headers, 1);
                self.phase = Phase::Handshaking;
                // LOCAL (a balancer's own health check): the balancer is the client.
                self.admit_client(core, index, source.unwrap_or(peer), true);
                (self.phase == Phase::Handshaking).then_some(len)
            }
            Err(error) => {
                LoopStats::count(&core.stats.proxy_errors, 1);
                let mut response = Vec::new();
                Rejection::new(400, error.reason()).write(&mut response);
                self.refuse(core, index, &response);
                None
            }
        }
    }

    /// Keeps `data` (all of it) for the next read; nothing to keep frees the buffer.
    fn keep_spill(&mut self, core: &mut LoopCore, data: &[u8]) {
        let spill = &mut self.cold(core).spill;
        spill.clear();
        spill.extend_from_slice(data);
        if spill.is_empty() {
            *spill = Vec::new();
        }
    }

    /// Whether the connection is still before its upgrade (PROXY header or request).
    fn before_upgrade(&self) -> bool {
        matches!(self.phase, Phase::Proxy | Phase::Handshaking)
    }

    /// Bytes arrived: `data` is the spill followed by what was just read. Takes what it can and
    /// keeps the rest as the new spill.
    pub(crate) fn on_bytes(
        &mut self,
        core: &mut LoopCore,
        index: u32,
        data: &mut [u8],
        peer: &dyn Fn() -> SocketAddr,
    ) {
        let fresh = data.len().saturating_sub(self.spill().len()) as u64;
        LoopStats::count(&core.stats.bytes_in, fresh);
        // A client sends no frame before it has read the 101 (RFC 6455 §4.1), so what arrives
        // before the upgrade is the request (and a PROXY header).
        if self.before_upgrade() {
            LoopStats::count(&core.stats.handshake_bytes_in, fresh);
        }
        // While handshaking, `last_seen` stays the accept time: a slowloris client trickling
        // bytes must not push its handshake deadline back.
        if !self.before_upgrade() {
            if let Some(rate) = &core.config.message_rate {
                // Quiet for longer than the limiter can remember: its state may have wrapped.
                if !earlier(core.now_tick, after(self.last_seen, rate.memory())) {
                    self.rate_tat = core.now_fine;
                }
            }
            self.last_seen = core.now_tick;
        }
        let mut used = 0;
        if self.phase == Phase::Proxy {
            match self.proxy_header(core, index, data, peer()) {
                Some(n) => used = n,
                None => return,
            }
        }
        if self.phase == Phase::Handshaking {
            match self.handshake(core, index, &data[used..], peer) {
                Some(n) => used += n,
                None => return,
            }
        }
        let mut limits = core.config.limits;
        if self.has(DEFLATE) {
            limits.allowed_rsv |= RSV1;
        }
        while used < data.len() && self.phase == Phase::Open {
            let read =
                self.session.handle_read(&mut data[used..], &limits, &mut Queue::new(&mut self.cold, core));
            match read {
                Err(_) => {
                    // The session queued the close with the error's code.
                    LoopStats::count(&core.stats.protocol_errors, 1);
                    self.decide(CloseCause::ProtocolError);
                    self.queued(core, index);
                    self.linger(core, index);
                    used = data.len();
                }
                Ok((n, item)) => {
                    used += n;
                    let Some(item) = item else { break };
                    self.on_item(core, index, item);
                }
            }
        }
        if self.phase == Phase::Lingering {
            used = data.len();
        }
        let rest = &data[used..];
        if !rest.is_empty() || !self.spill().is_empty() {
            self.keep_spill(core, rest);
        }
        self.release_cold(core);
    }

    /// Parses the upgrade request; returns how many bytes it used, or `None` if it needs more
    /// (the bytes are kept) or the connection was refused.
    fn handshake(
        &mut self,
        core: &mut LoopCore,
        index: u32,
        data: &[u8],
        peer: &dyn Fn() -> SocketAddr,
    ) -> Option<usize> {
        let parsed = parse_request(data, &core.config.request_limits);
        let request = match parsed {
            Ok(Parsed::Complete(request)) => request,
            Ok(Parsed::Partial) => {
                self.keep_spill(core, data);
                return None;
            }
            Err(HandshakeError::MissingUpgrade) if core.config.http_hook.is_some() => {
                // A complete plain GET: the application may serve it.
                let target = request_target(data);
                let answer = core.config.http_hook.as_ref().and_then(|hook| hook(target, data));
                let response = answer.unwrap_or_else(|| {
                    let mut response = Vec::new();
                    write_error(&mut response, &HandshakeError::MissingUpgrade);
                    response
                });
                self.answer(core, index, &response);
                return None;
            }
            Err(error) => {
                let mut response = Vec::new();
                write_error(&mut response, &error);
                self.refuse(core, index, &response);
                return None;
            }
        };
        // The client's address: from the PROXY header or the accept, when kept; else the socket's.
        let peer = core.clients.get(&index).copied().unwrap_or_else(peer);
        let accepted = match &core.config.upgrade_hook {
            Some(hook) => hook(&request, peer),
            // Without a hook the value is `()`, the type `Server::builder` starts with.
            None => Ok(super::event::Accepted::new(Box::new(()) as super::delivery::Erased)),
        };
        let mut accepted = match accepted {
            Ok(accepted) => accepted,
            Err(rejection) => {
                let mut response = Vec::new();
                rejection.write(&mut response);
                self.refuse(core, index, &response);
                return None;
            }
        };
        // permessage-deflate, unless the hook answered for the extensions itself.
        let hook_extensions =
            accepted.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"));
        let deflate = match hook_extensions {
            false => accept_offers(request.extensions(), core.deflate.config()),
            true => None,
        };
        let mut response = std::mem::take(&mut core.response);
        response.clear();
        let mut extra: Vec<(&str, &str)> =
            accepted.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        if let Some((_, header)) = &deflate {
            extra.push(("Sec-WebSocket-Extensions", header));
        }
        if write_accept(&mut response, request.key().as_bytes(), accepted.subprotocol.as_deref(), &extra)
            .is_err()
        {
            // Refused after the hook accepted: no Open, so no Close; the hook's value is dropped
            // here with `accepted`.
            Rejection::new(500, "invalid response header from the upgrade hook").write(&mut response);
            self.refuse(core, index, &response);
            return None;
        }
        let conn = self.id(core, index);
        // Written before the value moves into the Open event; queued behind the 101 below.
        let mut greeting = std::mem::take(&mut core.greeting);
        greeting.clear();
        if let Some(hook) = &core.config.open_hook {
            hook(conn, &mut accepted.value, &mut greeting);
        }
        let topics = accepted.topics;
        // Built only for workers that asked for it: without lifecycle events the value is
        // dropped here, and an upgrade allocates nothing for the event.
        let open = core.config.lifecycle_events.then(|| Event::Open {
            conn,
            peer,
            path: request.path().to_owned(),
            query: request.query().map(str::to_owned),
            subprotocol: accepted.subprotocol,
            headers: (core.config.open_headers.iter())
                .filter_map(|name| request.header_str(name).map(|v| (name.clone(), v.to_owned())))
                .collect(),
            value: accepted.value,
        });
        let used = request.len();
        if let Some((params, _)) = deflate {
            self.set(DEFLATE);
            core.deflate.negotiated(index, params);
            LoopStats::count(&core.stats.deflate_negotiated, 1);
        }
        if accepted.user != 0 {
            core.tags.insert(index, accepted.user);
        }
        LoopStats::count(&core.stats.handshake_bytes_out, response.len() as u64);
        let outbound = &mut self.cold(core).outbound;
        outbound.owned_tail(response.len()).extend_from_slice(&response);
        outbound.commit(response.len());
        core.response = response;
        if let Some(cold) = self.cold.as_mut() {
            cold.spill = Vec::new();
        }
        // The admission slot passes to the application with the Open event.
        core.forget_client(index);
        self.mark_dirty(core, index);
        self.phase = Phase::Open;
        self.last_seen = core.now_tick;
        self.set(OPENED);
        LoopStats::count(&core.stats.handshakes_ok, 1);
        // Until the upgrade the limiter's timestamp is still the accept's turn time (reads
        // leave it alone while handshaking), so no clock is read and no field is added.
        core.stats.handshake_duration.observe(FINE * core.now_fine.wrapping_sub(self.rate_tat));
        // Joined before anything reaches the client, so whatever it reads next, a publish to
        // these topics from then on reaches it.
        for topic in &topics {
            core.topics.subscribe_name(&mut self.topics, index, topic);
        }
        if !greeting.is_empty() {
            match std::str::from_utf8(&greeting) {
                Ok(_) => self.send_data(core, index, DataKind::Text, &greeting),
                Err(e) => {
                    log::warn!("loop {}: the open hook wrote invalid UTF-8 ({e}): not sent", core.loop_id)
                }
            }
        }
        // The buffer is kept for the next upgrade unless a greeting made it large.
        if greeting.capacity() <= 4096 {
            core.greeting = greeting;
        }
        if let Some(open) = open {
            core.emit(open);
        }
        self.rearm(core, index);
        Some(used)
    }

    fn refuse(&mut self, core: &mut LoopCore, index: u32, response: &[u8]) {
        LoopStats::count(&core.stats.handshakes_failed, 1);
        self.answer(core, index, response);
    }

    /// Sends an HTTP response instead of upgrading, then closes.
    fn answer(&mut self, core: &mut LoopCore, index: u32, response: &[u8]) {
        LoopStats::count(&core.stats.handshake_bytes_out, response.len() as u64);
        let outbound = &mut self.cold(core).outbound;
        outbound.owned_tail(response.len()).extend_from_slice(response);
        outbound.commit(response.len());
        self.cold(core).spill = Vec::new();
        self.linger(core, index);
    }

    /// Acts on what the session handed out: it answered pings and the peer's close already, and
    /// dropped data arriving after our close.
    fn on_item(&mut self, core: &mut LoopCore, index: u32, item: Item<'_>) {
        match item {
            Item::Data { kind, chunk, first, last } => {
                let compressed = self.session.compressed();
                if first && last {
                    match compressed {
                        false => self.deliver(core, index, kind, chunk),
                        true => self.deliver_compressed(core, index, kind, chunk),
                    }
                    return;
                }
                if !self.append_message(core, index, first, chunk) {
                    return;
                }
                if last {
                    let message = self.take_message(core);
                    match compressed {
                        false => self.deliver(core, index, kind, &message),
                        true => self.deliver_compressed(core, index, kind, &message),
                    }
                }
            }
            Item::Ping(_) => {
                // The session queued the pong; the ping counts against the rate all the same.
                self.mark_dirty(core, index);
                self.within_rate(core, index);
            }
            Item::Pong(_) => self.clear(AWAITING_PONG),
            Item::Close { reason, .. } => {
                // The session answered (echoing the code) unless our close went first, and keeps
                // the code to report.
                self.decide(CloseCause::Peer);
                if !reason.is_empty() {
                    self.cold(core).close_reason = reason.to_owned();
                }
                self.queued(core, index);
                self.linger(core, index);
            }
        }
    }

    /// Charges one message (or ping) to the connection's rate limit; over it the connection is
    /// failed with 1008. A GCRA: one timestamp per connection, no counters to reset.
    fn within_rate(&mut self, core: &mut LoopCore, index: u32) -> bool {
        let Some(rate) = &core.config.message_rate else { return true };
        let now = core.now_fine;
        // How far the theoretical arrival time is ahead of now; behind (or wrapped past the
        // window) means the bucket is full again.
        let ahead = self.rate_tat.wrapping_sub(now);
        let base = if (ahead as i32) <= 0 || ahead > rate.window() { now } else { self.rate_tat };
        if base.wrapping_sub(now) > rate.tolerance() {
            LoopStats::count(&core.stats.rate_limited, 1);
            self.decide(CloseCause::RateLimited);
            self.fail(core, index, CloseCode::POLICY_VIOLATION, "message rate limit exceeded");
            return false;
        }
        self.rate_tat = base.wrapping_add(rate.interval());
        true
    }

    /// Adds a piece of a message that did not arrive whole to its assembly buffer, under the
    /// loop's budget for partial messages. Returns false when the connection was failed.
    fn append_message(&mut self, core: &mut LoopCore, index: u32, first: bool, chunk: &[u8]) -> bool {
        if core.assembly_bytes + chunk.len() > core.config.max_assembly_bytes {
            LoopStats::count(&core.stats.assembly_budget_closes, 1);
            self.decide(CloseCause::AssemblyBudget);
            self.fail(core, index, CloseCode::POLICY_VIOLATION, "server busy: too many partial messages");
            return false;
        }
        core.assembly_bytes += chunk.len();
        let now = core.now_tick;
        let cold = self.cold(core);
        if first {
            cold.message_started = Some(now);
        }
        cold.message.extend_from_slice(chunk);
        if first && core.config.message_timeout.is_some() {
            self.rearm(core, index);
        }
        true
    }

    /// The assembled message, leaving the buffer (and the budget) empty.
    fn take_message(&mut self, core: &mut LoopCore) -> Vec<u8> {
        let Some(cold) = self.cold.as_mut() else { return Vec::new() };
        cold.message_started = None;
        core.assembly_bytes -= cold.message.len();
        std::mem::take(&mut cold.message)
    }

    /// Drops a message that will never be finished.
    fn discard_message(&mut self, core: &mut LoopCore) {
        if let Some(cold) = self.cold.as_mut() {
            cold.message_started = None;
            core.assembly_bytes -= cold.message.len();
            cold.message = Vec::new();
        }
    }

    /// Inflates a whole compressed message (held to the message size limit while inflating)
    /// and delivers it; an error fails the connection with its code (1009 for a bomb, 1007 for
    /// bad data or text that is not UTF-8).
    fn deliver_compressed(&mut self, core: &mut LoopCore, index: u32, kind: DataKind, compressed: &[u8]) {
        let mut out = std::mem::take(&mut core.inflated);
        let limit = core.config.limits.max_message_size;
        match core.deflate.inflate(index, kind, compressed, limit, &mut out) {
            Ok(()) => {
                LoopStats::count(&core.stats.compressed_in, 1);
                self.deliver(core, index, kind, &out);
            }
            Err(error) => {
                if error == ProtocolError::MessageTooLarge {
                    LoopStats::count(&core.stats.inflate_too_large, 1);
                }
                LoopStats::count(&core.stats.protocol_errors, 1);
                self.decide(CloseCause::ProtocolError);
                self.fail(core, index, error.close_code(), error.reason());
            }
        }
        out.clear();
        if out.capacity() > INFLATED_KEEP {
            out = Vec::new();
        }
        core.inflated = out;
    }

    fn deliver(&mut self, core: &mut LoopCore, index: u32, kind: DataKind, payload: &[u8]) {
        if !self.within_rate(core, index) {
            return;
        }
        LoopStats::count(&core.stats.messages_in, 1);
        let conn = self.id(core, index);
        if core.config.message_hook.is_some() {
            let user = if core.tags.is_empty() { 0 } else { core.tags.get(&index).copied().unwrap_or(0) };
            let cap = core.config.max_outbound_bytes;
            let open = self.may_send();
            let deflate_on = self.has(DEFLATE);
            // Replies are framed straight into this connection's queue: no intermediate copy.
            let cold = self.cold.get_or_insert_with(|| take_cold(core));
            // Borrowed, not cloned: the hook runs on every message (no reference count traffic).
            let Some(hook) = core.config.message_hook.as_deref() else { return };
            let deflate = deflate_on.then_some(&mut core.deflate);
            let mut inline = Inline {
                conn,
                user,
                open,
                cap,
                outbound: &mut cold.outbound,
                deflate,
                index,
                sent: 0,
                compressed: 0,
                refused: 0,
            };
            let flow = hook(&mut inline, kind, payload);
            let (sent, compressed, refused) = (inline.sent, inline.compressed, inline.refused);
            core.deflate.trim();
            if sent > 0 {
                LoopStats::count(&core.stats.messages_out, sent);
                LoopStats::count(&core.stats.compressed_out, compressed);
                self.mark_dirty(core, index);
            }
            if refused > 0 {
                self.over_cap(core, index, refused);
            }
            self.release_cold(core);
            if flow == Flow::Consumed {
                return;
            }
        }
        core.emit(Event::Message { conn, message: Message::from_parts(kind, payload.to_vec()) });
    }

    /// Joins `record`'s topic (pinned by the caller) unless it is in `limit` topics already,
    /// if messages may still be sent to it.
    pub(crate) fn subscribe(
        &mut self,
        core: &mut LoopCore,
        index: u32,
        record: &Arc<TopicShared>,
        limit: usize,
    ) -> Joined {
        if !self.may_send() {
            return Joined::Closed;
        }
        core.topics.subscribe(&mut self.topics, index, record, limit)
    }

    /// Leaves `record`'s topic. Returns whether it was in it.
    pub(crate) fn unsubscribe(&mut self, core: &mut LoopCore, record: &TopicShared) -> bool {
        core.topics.unsubscribe(&mut self.topics, record)
    }

    /// The connection leaves the slab: report it and leave its topics.
    pub(crate) fn on_removed(&mut self, core: &mut LoopCore, index: u32) {
        self.discard_message(core);
        if self.has(DEFLATE) {
            core.deflate.removed(index);
        }
        let cold = self.cold.take();
        core.topics.unsubscribe_all(&mut self.topics);
        if core.tags.remove(&index).is_some() {
            if let Some(room) = spare_room(core.tags.len(), core.tags.capacity()) {
                core.tags.shrink_to(room);
            }
        }
        if self.has(OPENED) {
            let code = self.session.close_code().unwrap_or(CloseCode::ABNORMAL).0;
            let reason = cold.map(|c| c.close_reason).unwrap_or_default();
            let clean = self.session.close_handshake_done();
            let cause = CloseCause::from_byte(self.cause);
            let conn = self.id(core, index);
            if let Some(hook) = &core.config.close_hook {
                hook(conn, code, &reason, clean, cause);
            }
            if core.config.lifecycle_events {
                core.emit(Event::Close { conn, code, reason, clean, cause });
            }
        } else {
            if self.before_upgrade() {
                LoopStats::count(&core.stats.handshakes_failed, 1);
            }
            // Admitted but never opened: the slot goes back here, exactly once.
            if let (Some(peer), Some(admission)) = (core.forget_client(index), &core.config.admission) {
                admission.release(peer);
            }
        }
        core.stats.connections.fetch_sub(1, Ordering::Relaxed);
        core.total_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The next time this connection must be looked at, if ever.
    fn next_deadline(&self, core: &LoopCore) -> Option<Tick> {
        let config = &core.config;
        match self.phase {
            Phase::Proxy | Phase::Handshaking => Some(after(self.last_seen, config.handshake_timeout)),
            Phase::Lingering => Some(self.phase_tick),
            Phase::Open if self.session.close_sent() => Some(self.phase_tick),
            Phase::Open => {
                let mut next: Option<Tick> = None;
                let mut consider = |at: Tick| {
                    next = Some(next.map_or(at, |n| if earlier(at, n) { at } else { n }));
                };
                if let Some(idle) = config.idle_timeout {
                    consider(after(self.last_seen, idle));
                }
                if let Some(interval) = config.ping_interval {
                    consider(if self.has(AWAITING_PONG) {
                        after(self.phase_tick, config.pong_timeout)
                    } else {
                        after(self.last_seen, interval)
                    });
                }
                if let (Some(limit), Some(started)) = (config.message_timeout, self.message_started()) {
                    consider(after(started, limit));
                }
                next
            }
        }
    }

    fn message_started(&self) -> Option<Tick> {
        self.cold.as_ref().and_then(|c| c.message_started)
    }

    /// Arms the timer if the next deadline is earlier than the armed one (later ones re-arm
    /// themselves when the earlier entry fires).
    pub(crate) fn rearm(&mut self, core: &mut LoopCore, index: u32) {
        let Some(next) = self.next_deadline(core) else { return };
        if !self.has(ARMED) || earlier(next, self.armed) {
            self.armed = core.wheel.arm(index, next);
            self.set(ARMED);
        }
    }

    /// Whether a wheel entry filed under `tick` is this connection's armed one.
    pub(crate) fn armed_at(&self, tick: Tick) -> bool {
        self.has(ARMED) && self.armed == tick
    }

    /// The armed timer fired.
    pub(crate) fn on_timer(&mut self, core: &mut LoopCore, index: u32) -> Next {
        self.clear(ARMED);
        let now = core.now_tick;
        let config = core.config.clone();
        match self.phase {
            Phase::Proxy | Phase::Handshaking
                if reached(now, after(self.last_seen, config.handshake_timeout)) =>
            {
                return Next::Remove
            }
            Phase::Lingering if reached(now, self.phase_tick) => return Next::Remove,
            // Our close went: wait for theirs until the deadline, nothing else.
            Phase::Open if self.session.close_sent() && reached(now, self.phase_tick) => return Next::Remove,
            Phase::Open if self.session.close_sent() => {}
            Phase::Open => {
                if let (Some(limit), Some(started)) = (config.message_timeout, self.message_started()) {
                    if reached(now, after(started, limit)) {
                        LoopStats::count(&core.stats.assembly_timeouts, 1);
                        self.decide(CloseCause::MessageTimeout);
                        self.fail(core, index, CloseCode::POLICY_VIOLATION, "message not completed in time");
                        self.rearm(core, index);
                        return Next::Continue;
                    }
                }
                if config.idle_timeout.is_some_and(|idle| reached(now, after(self.last_seen, idle))) {
                    self.close(core, index, CloseCode::GOING_AWAY, "idle timeout", CloseCause::IdleTimeout);
                    return Next::Continue;
                }
                if let Some(interval) = config.ping_interval {
                    if self.has(AWAITING_PONG) {
                        if reached(now, after(self.phase_tick, config.pong_timeout)) {
                            if self.has(READ_PAUSED) || core.workers_behind() {
                                // We stopped reading: the pong may be waiting unread in the
                                // socket. Wait again rather than drop a live peer.
                                self.phase_tick = now;
                            } else {
                                // A peer that does not answer pings is gone; a close frame would
                                // not reach it either.
                                self.decide(CloseCause::PongTimeout);
                                return Next::Remove;
                            }
                        }
                    } else if reached(now, after(self.last_seen, interval)) {
                        self.queue_control(core, index, OpCode::Ping, b"");
                        self.set(AWAITING_PONG);
                        self.phase_tick = now;
                    }
                }
            }
            _ => {}
        }
        self.rearm(core, index);
        Next::Continue
    }

    /// Server shutdown: open connections get 1001, half-open ones are dropped.
    pub(crate) fn on_shutdown(&mut self, core: &mut LoopCore, index: u32) -> Next {
        match self.phase {
            Phase::Proxy | Phase::Handshaking => Next::Remove,
            _ => {
                self.close(core, index, CloseCode::GOING_AWAY, "server shutting down", CloseCause::Shutdown);
                Next::Continue
            }
        }
    }
}

/// The engine's [`Transmit`]: the session's pongs and close frames go to the connection's
/// outbound queue (its `Cold` box, taken from the pool when needed).
///
/// Queue policy stays here: control frames always go in; under the cap every ping gets its pong
/// (Autobahn 2.10 checks it), over it only the latest unanswered ping's pong is kept (RFC 6455
/// §5.5.3), to go out once the queue has room ([`Conn::outbound`]), so a peer that pings without
/// reading cannot grow our memory.
struct Queue<'a> {
    cold: &'a mut Option<Box<Cold>>,
    core: &'a mut LoopCore,
}

impl<'a> Queue<'a> {
    fn new(cold: &'a mut Option<Box<Cold>>, core: &'a mut LoopCore) -> Self {
        Self { cold, core }
    }
}

impl Transmit for Queue<'_> {
    fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        let cold = self.cold.get_or_insert_with(|| take_cold(self.core));
        if opcode != OpCode::Pong {
            cold.outbound.push_frame(opcode, payload);
        } else if cold.pong.is_none()
            && cold.outbound.fits(CONTROL_FRAME_MAX, self.core.config.max_outbound_bytes)
        {
            cold.outbound.push_frame(OpCode::Pong, payload);
        } else {
            let pong = cold.pong.get_or_insert_with(Vec::new);
            pong.clear();
            pong.extend_from_slice(payload);
            LoopStats::count(&self.core.stats.pongs_coalesced, 1);
        }
    }
}

/// The request target of a request head (`/` when it cannot be read; the parser accepted the
/// request line already).
fn request_target(head: &[u8]) -> &str {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or(b"/");
    std::str::from_utf8(target).unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_target_of_a_head() {
        assert_eq!(request_target(b"GET /demo?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"), "/demo?x=1");
        assert_eq!(request_target(b"garbage"), "/");
    }

    #[test]
    fn connection_state_is_small() {
        let size = std::mem::size_of::<Conn>();
        println!("size_of::<Conn>() = {size}");
        assert!(size <= 64, "Conn grew to {size} bytes");
    }
}
