//! TLS between the backend's bytes and the connection's WebSocket logic, on rustls' unbuffered
//! API, for every backend.
//!
//! Reading: the backend reads ciphertext into its buffer behind the connection's ciphertext
//! leftover (a partial record, [`TlsConn::spill`]); [`TlsConn::receive`] runs the records
//! through rustls, queues handshake records to send, and appends the plaintext to the loop's
//! plaintext buffer behind the connection's plaintext leftover, which the `Conn` then reads
//! as if it came from the socket. Writing: the `Conn`'s queue stays the plaintext queue (the
//! outbound cap, slow-consumer policy and read pausing apply to it unchanged);
//! [`TlsConn::encrypt`] moves its front into a ciphertext queue, at most [`ENCRYPT_AHEAD`] at
//! a time, and the backend writes that queue as it would a plain one.
//!
//! Memory: once a TLS 1.3 handshake is done the session leaves rustls' connection object for
//! [`records::Records`] (rustls keeps only its key schedule, for key updates; the traffic keys
//! are kept unexpanded), so an idle connection holds about 1 KiB of TLS state; both leftovers
//! and both queues are empty `Vec`s between bursts, like a plain connection's. A TLS 1.2
//! session stays in rustls' object (about 3.5 KiB).

mod records;

use std::io::IoSlice;
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};

use self::records::{End, Records};

use super::outbound::{Outbound, MAX_IOVECS};
use super::stats::{LoopStats, TlsFailure};
use crate::proto::handshake::Rejection;

/// The most ciphertext queued ahead of the socket: past it, plaintext waits in the `Conn`'s
/// queue, where the outbound cap sees it.
pub(crate) const ENCRYPT_AHEAD: usize = 64 * 1024;

/// How many queued records an error may still flush (a server flight is a handful).
const MAX_PENDING_RECORDS: usize = 16;

/// The plaintext buffer shrinks back after a read larger than this.
const PLAIN_KEEP: usize = 512 * 1024;

/// The loop's TLS: the configuration, each connection's state by slot, the plaintext buffer.
pub(crate) struct LoopTls {
    config: Arc<ServerConfig>,
    conns: Vec<Option<Box<TlsConn>>>,
    /// Where a read's plaintext is put (behind the connection's plaintext leftover).
    pub(crate) plain: Vec<u8>,
}

impl LoopTls {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Self {
        Self { config, conns: Vec::new(), plain: Vec::new() }
    }

    /// A new connection in slot `index` starts its TLS handshake. `false`: rustls refused to
    /// start one (it only does for a configuration it cannot use).
    pub(crate) fn start(&mut self, index: u32, stats: &Arc<LoopStats>) -> bool {
        let tls = match UnbufferedServerConnection::new(self.config.clone()) {
            Ok(tls) => tls,
            Err(e) => {
                log::error!("TLS: cannot start a session: {e}");
                return false;
            }
        };
        let mut out = Outbound::default();
        out.track(stats);
        let conn = Box::new(TlsConn {
            session: Session::Rustls(Box::new(tls)),
            spill: Vec::new(),
            out,
            state: State::Handshaking,
        });
        let index = index as usize;
        if self.conns.len() <= index {
            self.conns.resize_with(index + 1, || None);
        }
        self.conns[index] = Some(conn);
        true
    }

    /// Takes slot `index`'s state out while the loop drives it ([`LoopTls::put`] puts it back),
    /// or for good when its connection is gone.
    pub(crate) fn take(&mut self, index: u32) -> Option<Box<TlsConn>> {
        self.conns.get_mut(index as usize)?.take()
    }

    pub(crate) fn put(&mut self, index: u32, conn: Box<TlsConn>) {
        if let Some(slot) = self.conns.get_mut(index as usize) {
            *slot = Some(conn);
        }
    }

    /// Slot `index`'s state, in place.
    pub(crate) fn get(&mut self, index: u32) -> Option<&mut TlsConn> {
        self.conns.get_mut(index as usize)?.as_deref_mut()
    }

    /// Gives the plaintext buffer's room back after an unusually large read.
    pub(crate) fn trim(&mut self) {
        self.plain.clear();
        if self.plain.capacity() > PLAIN_KEEP {
            self.plain = Vec::new();
        }
    }
}

/// Where a connection's TLS is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The handshake is under way (no application data either way yet).
    Handshaking,
    /// Application data flows.
    Open,
    /// Our close_notify is queued: nothing more is encrypted.
    Closing,
    /// Failed (an alert or an HTTP answer is queued, nothing else goes out), or the failure
    /// of a handshake that timed out or was cut off was counted.
    Failed,
}

/// Who runs a connection's records.
enum Session {
    /// rustls, for the handshake (and for the life of a TLS 1.2 session).
    Rustls(Box<UnbufferedServerConnection>),
    /// An established TLS 1.3 session, in the compact record layer.
    Records(Records),
    /// Neither: the hand-over to the record layer failed and the connection is ending.
    Ended,
}

/// One connection's TLS state.
pub(crate) struct TlsConn {
    session: Session,
    /// Ciphertext kept from the previous read: the start of a record.
    spill: Vec<u8>,
    /// Ciphertext waiting for the socket (TLS records, or an HTTP answer to a plain request).
    pub(crate) out: Outbound,
    state: State,
}

/// What [`TlsConn::receive`] found, besides plaintext.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Records to send were queued (handshake messages, tickets, an alert).
    pub(crate) queued: bool,
    /// The handshake finished in this read.
    pub(crate) opened: bool,
    /// The connection cannot go on: a TLS error, a plain HTTP request, the peer's
    /// close_notify. The caller winds the connection down (what is queued still goes out).
    pub(crate) ended: bool,
    /// Of `ended`: a broken record after the handshake, the peer's protocol error.
    pub(crate) broken: bool,
}

impl TlsConn {
    /// The ciphertext leftover, to put in front of the next read.
    pub(crate) fn spill(&self) -> &[u8] {
        &self.spill
    }

    /// Whether nothing more will be accepted: failed or closing.
    pub(crate) fn done(&self) -> bool {
        matches!(self.state, State::Failed | State::Closing)
    }

    /// Counts a handshake that ended without an error of its own (the deadline, the peer's
    /// FIN) once; later calls and finished handshakes count nothing.
    pub(crate) fn abandoned(&mut self, stats: &LoopStats, reason: TlsFailure) {
        if self.state == State::Handshaking {
            LoopStats::count(&stats.tls_failures[reason.slot()], 1);
            self.state = State::Failed;
        }
    }

    /// Runs `data` (the ciphertext leftover followed by what was just read) through the
    /// session: plaintext is appended to `plain`, records to send go to the ciphertext queue,
    /// and what is left of a partial record is kept for the next read.
    pub(crate) fn receive(&mut self, data: &mut [u8], plain: &mut Vec<u8>, stats: &LoopStats) -> Received {
        let mut received = Received::default();
        if self.done() {
            self.spill = Vec::new();
            return received;
        }
        if self.state == State::Handshaking
            && self.spill.is_empty()
            && data.first().is_some_and(u8::is_ascii_uppercase)
        {
            // A TLS record starts with a content type (20..=24); an HTTP request with its
            // method. Tell a person with curl what happened instead of sending them an alert.
            let mut response = Vec::new();
            Rejection::new(400, "this port speaks TLS: use https:// or wss://").write(&mut response);
            self.queue_raw(&response);
            fail(&mut self.state, stats, TlsFailure::NotTls);
            received.queued = true;
            received.ended = true;
            return received;
        }
        let offset = match &mut self.session {
            Session::Records(records) => {
                let queued = self.out.queued();
                let (offset, end) = records.open(data, plain, &mut self.out);
                received.queued = self.out.queued() > queued;
                if let Some(end) = end {
                    log::debug!("TLS: records ended: {end:?}");
                    // After the peer's close_notify our last records (a close frame's answer,
                    // then our close_notify) still go out; after an alert nothing does.
                    match end {
                        End::PeerClosed => {}
                        End::PeerAlert(_) => {
                            fail(&mut self.state, stats, TlsFailure::PeerAlert);
                        }
                        End::Broken(_) => {
                            received.broken = fail(&mut self.state, stats, TlsFailure::Protocol)
                        }
                    }
                    received.ended = true;
                }
                offset
            }
            Session::Rustls(tls) => {
                let (offset, writable) =
                    drive(tls, data, plain, &mut self.out, &mut self.state, stats, &mut received);
                if self.state == State::Handshaking && !tls.is_handshaking() {
                    self.state = State::Open;
                    received.opened = true;
                    LoopStats::count(&stats.tls_handshakes, 1);
                    if tls.handshake_kind() == Some(HandshakeKind::Resumed) {
                        LoopStats::count(&stats.tls_resumed, 1);
                    }
                }
                if writable
                    && self.state == State::Open
                    && tls.protocol_version() == Some(ProtocolVersion::TLSv1_3)
                {
                    self.hand_over();
                }
                offset
            }
            Session::Ended => data.len(),
        };
        let rest = data.get(offset..).unwrap_or_default();
        if self.done() || rest.is_empty() {
            self.spill = Vec::new();
        } else {
            self.spill.clear();
            self.spill.extend_from_slice(rest);
        }
        received
    }

    /// Moves an established TLS 1.3 session from rustls' connection object to the compact
    /// record layer (see [`records`]). rustls is ready for it once it answers `WriteTraffic`
    /// with every record read and every record it had to send encoded.
    fn hand_over(&mut self) {
        let Session::Rustls(tls) = std::mem::replace(&mut self.session, Session::Ended) else { return };
        match tls.dangerous_into_kernel_connection() {
            Ok((secrets, kernel)) => match Records::new(secrets, kernel) {
                Some(records) => self.session = Session::Records(records),
                None => {
                    log::error!("TLS: a cipher suite the record layer does not seal was negotiated");
                    self.state = State::Failed;
                }
            },
            Err(e) => {
                // The configuration lacks `enable_secret_extraction`: nothing was negotiated
                // that this session could go on without, so it ends here.
                log::error!("TLS: cannot take over the session from rustls: {e}");
                self.state = State::Failed;
            }
        }
    }

    /// Queues bytes as they are (not a TLS record).
    fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.owned_tail(bytes.len()).extend_from_slice(bytes);
        self.out.commit(bytes.len());
    }

    /// Encrypts the front of `queue` (the connection's plaintext queue) into the ciphertext
    /// queue while that holds less than [`ENCRYPT_AHEAD`]. Returns the plaintext bytes taken
    /// (the caller advances `queue` by them).
    pub(crate) fn encrypt(&mut self, queue: &Outbound) -> usize {
        if self.state != State::Open || self.out.queued() >= ENCRYPT_AHEAD {
            return 0;
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = queue.io_slices(&mut slices);
        let mut taken = 0;
        match &mut self.session {
            Session::Records(records) => {
                for slice in &slices[..n] {
                    if self.out.queued() >= ENCRYPT_AHEAD {
                        break;
                    }
                    let take = slice.len().min(ENCRYPT_AHEAD);
                    if !records.seal(&slice[..take], &mut self.out) {
                        log::warn!("TLS: sealing a record failed");
                        self.state = State::Failed;
                        break;
                    }
                    taken += take;
                    if take < slice.len() {
                        break;
                    }
                }
            }
            Session::Rustls(tls) => {
                // The leftover is the start of a record, never a whole one (a read runs every
                // complete record), so this finds no record to process and answers whether we
                // may write.
                let UnbufferedStatus { state, .. } = tls.process_tls_records(&mut self.spill);
                if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
                    for slice in &slices[..n] {
                        if self.out.queued() >= ENCRYPT_AHEAD {
                            break;
                        }
                        // At most this much per pass, so the queue stays near its bound.
                        let take = slice.len().min(ENCRYPT_AHEAD);
                        let plain = &slice[..take];
                        match encode_into(&mut self.out, |buf| traffic.encrypt(plain, buf)) {
                            Ok(_) => taken += take,
                            Err(e) => {
                                log::warn!("TLS: encrypting failed: {e}");
                                break;
                            }
                        }
                        if take < slice.len() {
                            break;
                        }
                    }
                }
            }
            Session::Ended => {}
        }
        taken
    }

    /// Queues our close_notify, once, after the last data (nothing is encrypted after it).
    pub(crate) fn close_notify(&mut self) {
        if self.state != State::Open {
            return;
        }
        match &mut self.session {
            Session::Records(records) => records.close_notify(&mut self.out),
            Session::Rustls(tls) => {
                let UnbufferedStatus { state, .. } = tls.process_tls_records(&mut self.spill);
                if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
                    if let Err(e) = encode_into(&mut self.out, |buf| traffic.queue_close_notify(buf)) {
                        log::debug!("TLS: close_notify not queued: {e}");
                    }
                }
            }
            Session::Ended => {}
        }
        self.state = State::Closing;
    }
}

/// Runs `data` through rustls (the handshake, or a TLS 1.2 session): see
/// [`TlsConn::receive`]. Returns the bytes consumed and whether rustls ended on
/// `WriteTraffic` (every complete record read, the session established).
fn drive(
    tls: &mut UnbufferedServerConnection,
    data: &mut [u8],
    plain: &mut Vec<u8>,
    out: &mut Outbound,
    state: &mut State,
    stats: &LoopStats,
    received: &mut Received,
) -> (usize, bool) {
    let mut offset = 0;
    loop {
        let UnbufferedStatus { mut discard, state: status } = tls.process_tls_records(&mut data[offset..]);
        match status {
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            offset += discard;
                            error(tls, &e, out, state, stats, received);
                            return (offset, false);
                        }
                    }
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                if let Err(e) = encode_into(out, |buf| encode.encode(buf)) {
                    log::warn!("TLS: encoding a handshake record failed: {e}");
                }
                received.queued = true;
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                // Queued for the end of the loop's turn: every record of this read goes out
                // in one write.
                transmit.done();
            }
            Ok(ConnectionState::WriteTraffic(_)) => return (offset + discard, true),
            Ok(ConnectionState::BlockedHandshake) => return (offset + discard, false),
            Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                if *state == State::Handshaking {
                    fail(state, stats, TlsFailure::Closed);
                }
                received.ended = true;
                return (offset + discard, false);
            }
            Ok(ConnectionState::ReadEarlyData(_)) | Ok(_) => {
                // Early data is off (`max_early_data_size` 0): nothing to read here.
                return (offset + discard, false);
            }
            Err(e) => {
                offset += discard;
                error(tls, &e, out, state, stats, received);
                return (offset, false);
            }
        }
        offset += discard;
    }
}

/// A TLS error: rustls has an alert for the peer queued; count it, queue the alert.
fn error(
    tls: &mut UnbufferedServerConnection,
    error: &rustls::Error,
    out: &mut Outbound,
    state: &mut State,
    stats: &LoopStats,
    received: &mut Received,
) {
    log::debug!("TLS: {error}");
    let reason = failure_reason(error);
    // Take the alert: after an error rustls hands out what it still has to send (records of
    // this flight queued before the error, then the alert) as records to encode.
    for _ in 0..MAX_PENDING_RECORDS {
        let UnbufferedStatus { state, .. } = tls.process_tls_records(&mut []);
        let Ok(ConnectionState::EncodeTlsData(mut encode)) = state else { break };
        if encode_into(out, |buf| encode.encode(buf)).is_err() {
            break;
        }
        received.queued = true;
    }
    received.broken = fail(state, stats, reason);
    received.ended = true;
}

/// The session failed: a failure during the handshake is counted by reason, a protocol
/// violation after it with the connections' other protocol errors. Returns whether it was
/// the latter.
fn fail(state: &mut State, stats: &LoopStats, reason: TlsFailure) -> bool {
    let broken = *state != State::Handshaking && reason == TlsFailure::Protocol;
    if *state == State::Handshaking {
        LoopStats::count(&stats.tls_failures[reason.slot()], 1);
    } else if broken {
        LoopStats::count(&stats.protocol_errors, 1);
    }
    *state = State::Failed;
    broken
}

/// A rustls output call that says how much room it needs when the buffer is too small.
trait NeedsRoom {
    fn required(&self) -> Option<usize>;
}

impl NeedsRoom for EncodeError {
    fn required(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => Some(*required_size),
            _ => None,
        }
    }
}

impl NeedsRoom for EncryptError {
    fn required(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => Some(*required_size),
            _ => None,
        }
    }
}

/// Runs `write` into room at the end of `out`'s owned tail (the size unknown until rustls says:
/// `owned_tail(0)`) and commits what it wrote. rustls is asked first with no room and says how
/// much it needs: a guess (a record's worth, 16 KiB) would leave that much capacity in the
/// queue's chunk of every connection handshaking in a turn, which in a reconnect storm is heap
/// the process keeps, fragmented, after it.
fn encode_into<E: NeedsRoom + std::fmt::Display>(
    out: &mut Outbound,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> Result<usize, E> {
    let tail = out.owned_tail(0);
    let start = tail.len();
    let mut room = 0;
    loop {
        tail.resize(start + room, 0);
        match write(&mut tail[start..]) {
            Ok(n) => {
                tail.truncate(start + n);
                out.commit(n);
                return Ok(n);
            }
            Err(e) => match e.required() {
                Some(required) if required > room => room = required,
                _ => {
                    tail.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

/// The counted reason for a TLS error.
fn failure_reason(error: &rustls::Error) -> TlsFailure {
    use rustls::Error;
    match error {
        Error::PeerIncompatible(_) | Error::NoApplicationProtocol => TlsFailure::Incompatible,
        Error::AlertReceived(_) => TlsFailure::PeerAlert,
        _ => TlsFailure::Protocol,
    }
}
