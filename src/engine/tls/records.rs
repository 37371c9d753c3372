//! The TLS 1.3 record layer of an established connection, kept small.
//!
//! rustls' connection object holds about 3.3 KiB per connection after the handshake (the
//! connection struct, its handshake deframer, two expanded AEAD keys, the key schedule),
//! which is most of what an idle `wss://` connection would cost. Once a TLS 1.3 handshake is
//! done, the session moves here, the way kTLS offload takes a session from rustls
//! ([`rustls::kernel`]): rustls keeps the key schedule (a [`KernelConnection`], for key
//! updates), and this module keeps the two directions' traffic keys as key bytes and sequence
//! numbers. The AEAD key is expanded (ring) for the records of one read or one flush and
//! dropped after, so an idle connection holds no expanded key.
//!
//! What this layer does (RFC 8446 §5, §4.6.3): it opens and seals `application_data`
//! records; takes the peer's `close_notify` and other alerts; answers a `KeyUpdate` (and
//! updates its own sending key before the suite's confidentiality limit); refuses anything
//! else with the right alert. The AEAD and the nonce construction are ring's and rustls'.

use ring::aead::{
    Aad, LessSafeKey, Nonce as RingNonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use rustls::crypto::cipher::Nonce;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{AlertDescription, ConnectionTrafficSecrets, ExtractedSecrets};

use super::ENCRYPT_AHEAD;
use crate::engine::outbound::Outbound;

/// Content types (RFC 8446 §5.1).
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// The KeyUpdate handshake message type (RFC 8446 §4).
const KEY_UPDATE: u8 = 24;

const HEADER: usize = 5;
const TAG: usize = 16;
/// The largest plaintext of a record, and of its ciphertext (RFC 8446 §5.1, §5.2).
const MAX_PLAIN: usize = 1 << 14;
const MAX_CIPHER: usize = MAX_PLAIN + 256;

/// KeyUpdates a client may ask us to answer between two of its application data records (as
/// rustls allows): past it, a peer is making us work (and queue answers) for nothing.
const MAX_KEY_UPDATE_REQUESTS: u8 = 32;

/// How a connection's records ended, if they did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer sent close_notify.
    PeerClosed,
    /// The peer sent a fatal alert.
    PeerAlert(AlertDescription),
    /// The peer broke the protocol: this alert was queued for it.
    Broken(AlertDescription),
}

/// One direction's traffic key and the sequence number of its next record.
struct Direction {
    secrets: ConnectionTrafficSecrets,
    seq: u64,
}

impl Direction {
    /// The expanded key, for the records of one read or one flush.
    fn key(&self) -> Option<LessSafeKey> {
        let (algorithm, key) = match &self.secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, .. } => (&AES_128_GCM, key),
            ConnectionTrafficSecrets::Aes256Gcm { key, .. } => (&AES_256_GCM, key),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, .. } => (&CHACHA20_POLY1305, key),
            _ => return None,
        };
        UnboundKey::new(algorithm, key.as_ref()).ok().map(LessSafeKey::new)
    }

    /// The nonce of the next record (the IV XOR the sequence number: rustls' rule), which
    /// moves the sequence on.
    fn next_nonce(&mut self) -> RingNonce {
        let iv = match &self.secrets {
            ConnectionTrafficSecrets::Aes128Gcm { iv, .. }
            | ConnectionTrafficSecrets::Aes256Gcm { iv, .. }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { iv, .. } => iv,
            _ => unreachable!("Records::new accepts only the suites above"),
        };
        let nonce = Nonce::new(iv, self.seq);
        self.seq += 1;
        RingNonce::assume_unique_for_key(nonce.0)
    }

    fn supported(secrets: &ConnectionTrafficSecrets) -> bool {
        matches!(
            secrets,
            ConnectionTrafficSecrets::Aes128Gcm { .. }
                | ConnectionTrafficSecrets::Aes256Gcm { .. }
                | ConnectionTrafficSecrets::Chacha20Poly1305 { .. }
        )
    }
}

/// An established TLS 1.3 session's record layer.
pub(crate) struct Records {
    kernel: Box<KernelConnection<ServerConnectionData>>,
    tx: Direction,
    rx: Direction,
    /// Records one sending key protects before it is replaced (a margin under the suite's
    /// confidentiality limit).
    tx_limit: u64,
    /// KeyUpdates answered since the peer's last application data record.
    key_update_requests: u8,
}

impl Records {
    /// Takes over a session rustls finished the handshake of. `None` for a suite this layer
    /// does not seal (rustls' ring provider offers none other for TLS 1.3).
    pub(crate) fn new(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
    ) -> Option<Self> {
        let ExtractedSecrets { tx: (tx_seq, tx), rx: (rx_seq, rx) } = secrets;
        if !Direction::supported(&tx) || !Direction::supported(&rx) {
            return None;
        }
        let limit = kernel.negotiated_cipher_suite().tls13()?.common.confidentiality_limit;
        Some(Self {
            kernel: Box::new(kernel),
            tx: Direction { secrets: tx, seq: tx_seq },
            rx: Direction { secrets: rx, seq: rx_seq },
            tx_limit: limit - limit / 16,
            key_update_requests: 0,
        })
    }

    /// Opens the complete records at the front of `data`, appending their application data to
    /// `plain` and queuing what the protocol answers (a KeyUpdate, an alert) to `out`. Returns
    /// the bytes consumed (what is left is the start of a record) and how the records ended,
    /// if they did; nothing after an end is read.
    pub(crate) fn open(
        &mut self,
        data: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Outbound,
    ) -> (usize, Option<End>) {
        let mut offset = 0;
        let mut key = None;
        while let Some(header) = data.get(offset..offset + HEADER) {
            let header: [u8; HEADER] = header.try_into().expect("a slice of HEADER bytes");
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[0] != APPLICATION_DATA {
                // After the handshake every record is protected: a plaintext alert, a
                // ChangeCipherSpec or a handshake record is a protocol violation.
                return (offset, Some(self.broken(AlertDescription::UnexpectedMessage, out)));
            }
            if len > MAX_CIPHER {
                return (offset, Some(self.broken(AlertDescription::RecordOverflow, out)));
            }
            if len < TAG + 1 {
                return (offset, Some(self.broken(AlertDescription::DecodeError, out)));
            }
            let Some(record) = data.get_mut(offset + HEADER..offset + HEADER + len) else { break };
            offset += HEADER + len;
            if key.is_none() {
                key = self.rx.key();
            }
            let Some(opener) = &key else {
                return (offset, Some(self.broken(AlertDescription::InternalError, out)));
            };
            let nonce = self.rx.next_nonce();
            let Ok(inner) = opener.open_in_place(nonce, Aad::from(header), record) else {
                return (offset, Some(self.broken(AlertDescription::BadRecordMac, out)));
            };
            // TLSInnerPlaintext: content, the real content type, then zero padding.
            let Some(type_at) = inner.iter().rposition(|&b| b != 0) else {
                return (offset, Some(self.broken(AlertDescription::UnexpectedMessage, out)));
            };
            let (content, content_type) = (&inner[..type_at], inner[type_at]);
            if content.len() > MAX_PLAIN {
                return (offset, Some(self.broken(AlertDescription::RecordOverflow, out)));
            }
            match content_type {
                APPLICATION_DATA => {
                    self.key_update_requests = 0;
                    plain.extend_from_slice(content);
                }
                ALERT => match alert(content) {
                    Ok(None) => {}
                    Ok(Some(end)) => return (offset, Some(end)),
                    Err(description) => return (offset, Some(self.broken(description, out))),
                },
                HANDSHAKE => {
                    let requested = match key_update(content) {
                        Ok(requested) => requested,
                        Err(description) => return (offset, Some(self.broken(description, out))),
                    };
                    match self.kernel.update_rx_secret() {
                        Ok((seq, secrets)) => self.rx = Direction { secrets, seq },
                        Err(_) => return (offset, Some(self.broken(AlertDescription::InternalError, out))),
                    }
                    // The next records are under the new key.
                    key = None;
                    if requested {
                        // Our answer is queued whether or not the peer reads: one that asks
                        // again and again, or asks while 64 KiB of ours wait unread, would
                        // grow the queue without bound.
                        self.key_update_requests += 1;
                        if self.key_update_requests > MAX_KEY_UPDATE_REQUESTS || out.queued() >= ENCRYPT_AHEAD
                        {
                            return (offset, Some(self.broken(AlertDescription::UnexpectedMessage, out)));
                        }
                        if !self.update_tx(out) {
                            return (offset, Some(End::Broken(AlertDescription::InternalError)));
                        }
                    }
                }
                _ => return (offset, Some(self.broken(AlertDescription::UnexpectedMessage, out))),
            }
        }
        (offset, None)
    }

    /// Seals `plain` into application_data records at the back of `out`; `false` if it could
    /// not (the session is then unusable and the caller ends it).
    pub(crate) fn seal(&mut self, plain: &[u8], out: &mut Outbound) -> bool {
        let mut key = None;
        for chunk in plain.chunks(MAX_PLAIN) {
            if self.tx.seq >= self.tx_limit {
                if !self.update_tx(out) {
                    return false;
                }
                key = None;
            }
            if key.is_none() {
                key = self.tx.key();
            }
            let Some(sealer) = &key else { return false };
            if !self.seal_record(sealer, APPLICATION_DATA, chunk, out) {
                return false;
            }
        }
        true
    }

    /// Queues our close_notify (after it, nothing more is sealed).
    pub(crate) fn close_notify(&mut self, out: &mut Outbound) {
        self.seal_one(ALERT, &[1, u8::from(AlertDescription::CloseNotify)], out);
    }

    /// Queues a fatal alert for a protocol violation.
    fn broken(&mut self, description: AlertDescription, out: &mut Outbound) -> End {
        self.seal_one(ALERT, &[2, u8::from(description)], out);
        End::Broken(description)
    }

    /// Sends a KeyUpdate (not asking the peer for one) under the current key, then moves to
    /// the next sending key.
    fn update_tx(&mut self, out: &mut Outbound) -> bool {
        if !self.seal_one(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out) {
            return false;
        }
        match self.kernel.update_tx_secret() {
            Ok((seq, secrets)) => {
                self.tx = Direction { secrets, seq };
                true
            }
            Err(_) => false,
        }
    }

    fn seal_one(&mut self, content_type: u8, content: &[u8], out: &mut Outbound) -> bool {
        match self.tx.key() {
            Some(sealer) => self.seal_record(&sealer, content_type, content, out),
            None => false,
        }
    }

    /// One record: header, then content and content type sealed in place, then the tag.
    fn seal_record(
        &mut self,
        sealer: &LessSafeKey,
        content_type: u8,
        content: &[u8],
        out: &mut Outbound,
    ) -> bool {
        let len = content.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let nonce = self.tx.next_nonce();
        let tail = out.owned_tail(HEADER + len);
        let start = tail.len();
        tail.extend_from_slice(&header);
        tail.extend_from_slice(content);
        tail.push(content_type);
        match sealer.seal_in_place_separate_tag(nonce, Aad::from(header), &mut tail[start + HEADER..]) {
            Ok(tag) => {
                tail.extend_from_slice(tag.as_ref());
                out.commit(HEADER + len);
                true
            }
            Err(_) => {
                tail.truncate(start);
                false
            }
        }
    }
}

/// An alert's meaning: `Ok(None)` to carry on (user_canceled, which a close_notify follows),
/// `Ok(Some)` the end it makes, `Err` the alert to answer a malformed one with.
fn alert(content: &[u8]) -> Result<Option<End>, AlertDescription> {
    let [_level, description] = content else { return Err(AlertDescription::DecodeError) };
    Ok(match AlertDescription::from(*description) {
        AlertDescription::CloseNotify => Some(End::PeerClosed),
        AlertDescription::UserCanceled => None,
        // RFC 8446 §6: every other alert is fatal, whatever its level says.
        other => Some(End::PeerAlert(other)),
    })
}

/// A post-handshake handshake record: only a whole KeyUpdate, alone in its record, is
/// accepted from a client (no post-handshake authentication was asked for). Returns whether
/// the client asked for our key to be updated too.
fn key_update(content: &[u8]) -> Result<bool, AlertDescription> {
    match content {
        [KEY_UPDATE, 0, 0, 1, request] => match request {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(AlertDescription::IllegalParameter),
        },
        [KEY_UPDATE, ..] => Err(AlertDescription::DecodeError),
        _ => Err(AlertDescription::UnexpectedMessage),
    }
}

#[cfg(test)]
mod tests;
