//! The upgrade hook, and the loop's side of a gateway connection's open and close
//! ([`opened`], [`closed`]). The upgrade hook runs on a loop thread for every WebSocket
//! request and decides, before the 101, whether the connection may open: cheap refusals first.
//! The connection caps are not here: the engine's admission hook (`admission::Gate`) applies
//! them from the first byte.

use std::net::SocketAddr;
use std::sync::Arc;

use super::admission::IpKey;
use super::auth::{self, Claims, TokenError};
use super::channels::{allowed, check_client_channel, query_channels, query_param, user_topic, NameError};
use super::conns::{Conns, Principal};
use super::expiry::{unix_now, Expiry};
use super::metrics::{CloseReason, Reject};
use super::state::Front;
use serde::Serialize;
use throng::proto::handshake::UpgradeRequest;
use throng::{Accepted, CloseCause, ConnId, Rejection};

/// The subprotocol prefix browsers use to carry a token (`new WebSocket(url, ["bearer.<jwt>"])`).
pub const BEARER_PROTOCOL: &str = "bearer.";

/// What the upgrade hook decided that the connection's open needs: the token's claims and the
/// channels from the query, already checked, and the address its admission slot was counted
/// under. It travels as the upgrade value into [`opened`] (on the loop), then into
/// `Event::Open`; a connection refused after the hook is dropped with it.
pub(crate) struct Opening {
    /// Taken by [`opened`] into the connection's entry.
    pub(crate) claims: Option<Claims>,
    pub(crate) channels: Vec<String>,
    pub(crate) ip: IpKey,
}

pub(crate) fn decide(
    front: &Front,
    req: &UpgradeRequest<'_>,
    peer: SocketAddr,
) -> Result<Accepted<Opening>, Rejection> {
    let refuse = |why: Reject, status: u16, text: String| {
        front.counters.reject(why, status, &text, peer);
        Err(Rejection::new(status, text))
    };
    let settings = &front.settings;
    if req.path() != settings.ws_path {
        return refuse(
            Reject::NotFound,
            404,
            format!("no WebSocket endpoint here; use {}", settings.ws_path),
        );
    }
    let live = front.live();
    if !live.origins.allows(req.origin()) {
        return refuse(Reject::Origin, 403, "origin not allowed".into());
    }

    let bearer_protocol = req.protocols().find(|p| p.starts_with(BEARER_PROTOCOL));
    let claims = match &live.jwt_secret {
        None => None,
        Some(secret) => {
            let Some(token) = token(req, bearer_protocol) else {
                return refuse(Reject::MissingToken, 401, "missing token".into());
            };
            match auth::verify(&token, secret, &settings.jwt_rules, unix_now()) {
                Ok(claims) => Some(claims),
                Err(e @ TokenError::Expired) => return refuse(Reject::ExpiredToken, 401, e.reason().into()),
                Err(e) => return refuse(Reject::InvalidToken, 401, e.reason().into()),
            }
        }
    };

    // The cap is applied while the list is parsed, before any per-channel work.
    let max = settings.max_channels_per_connection;
    let Ok(channels) = query_channels(req.query().unwrap_or(""), max) else {
        return refuse(Reject::TooManyChannels, 400, format!("too many channels (at most {max})"));
    };
    for channel in &channels {
        match check_client_channel(channel) {
            Ok(()) => {}
            Err(e @ NameError::Reserved) => {
                return refuse(Reject::ChannelForbidden, 403, format!("{}: {channel}", e.reason()))
            }
            Err(e) => return refuse(Reject::BadChannel, 400, format!("{}: {channel}", e.reason())),
        }
        let allow = claims.as_ref().and_then(|c| c.channels.as_deref());
        if !allowed(allow, channel) {
            return refuse(Reject::ChannelForbidden, 403, format!("channel not allowed: {channel}"));
        }
    }

    let preference: Vec<&str> = settings.subprotocols.iter().map(String::as_str).collect();
    // A browser that offered only the token entry fails the connection unless one protocol is
    // echoed, so the token entry itself is the fallback.
    let subprotocol = req.select_subprotocol(&preference).or(bearer_protocol).map(str::to_owned);
    // The engine joins these before the 101 and the welcome go out (see `welcome`).
    let topics =
        claims.as_ref().map(|c| user_topic(&c.sub)).into_iter().chain(channels.iter().cloned()).collect();
    Ok(Accepted {
        subprotocol,
        topics,
        ..Accepted::new(Opening { claims, channels, ip: IpKey::from(peer.ip()) })
    })
}

/// The engine's open hook, on the loop thread before the 101 goes out: the connection's entry
/// (so the admin API knows it as soon as its client can have read its id), its token's expiry,
/// and its welcome, written into `out`.
pub(crate) fn opened(conns: &Conns, expiry: &Expiry, conn: ConnId, opening: &mut Opening, out: &mut Vec<u8>) {
    welcome(conn, opening, out);
    let claims = opening.claims.take();
    let exp = claims.as_ref().and_then(|c| c.exp);
    let principal =
        claims.map(|c| Principal { sub: Arc::from(c.sub), allowed: c.channels.map(Vec::into_boxed_slice) });
    conns.open(conn, opening.ip, principal, exp.is_some());
    if let Some(exp) = exp {
        expiry.schedule(conn, exp);
    }
}

/// What the engine reports of a connection's end ([`throng::ServerBuilder::on_close`]).
pub(crate) struct Ended<'a> {
    pub(crate) code: u16,
    /// The peer's close reason (free text, logged, never a label).
    pub(crate) reason: &'a str,
    pub(crate) clean: bool,
    pub(crate) cause: CloseCause,
}

/// The engine's close hook, on the loop thread as an open connection is removed (before the
/// slot can take its next connection): it is counted by code and reason, and its entry, token
/// expiry and admission slot go with it. It is logged at `debug` (`peer` is the address its
/// admission slot was counted under: an IPv4 address or an IPv6 /64).
pub(crate) fn closed(front: &Front, conns: &Conns, expiry: &Expiry, conn: ConnId, ended: &Ended<'_>) {
    let Ended { code, reason, clean, cause } = *ended;
    let why = CloseReason::of(cause);
    front.counters.close(code, why);
    let Some(info) = conns.close(conn) else {
        tracing::debug!(conn = conn.as_u64(), code, reason, clean, cause = why.label(), "connection closed");
        return;
    };
    if info.expires {
        expiry.closed(conns);
    }
    front.admission.release_key(info.ip);
    tracing::debug!(
        conn = conn.as_u64(),
        peer = %info.ip,
        user = info.principal.as_ref().map(|p| &*p.sub),
        code,
        reason,
        clean,
        cause = why.label(),
        duration_ms = info.open_for.as_millis() as u64,
        "connection closed"
    );
}

/// The connection's first message, queued by the engine behind its 101 (one write), after it
/// joined its user topic and channels: a client that has read it is subscribed. Written on the
/// loop thread into the loop's buffer, so a connection's open costs no command from a worker
/// and no allocation.
fn welcome(conn: ConnId, opening: &Opening, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Welcome<'a> {
        r#type: &'static str,
        /// A string: JavaScript numbers cannot hold every 64-bit id.
        #[serde(serialize_with = "as_string")]
        conn: u64,
        user: Option<&'a str>,
        channels: &'a [String],
    }
    fn as_string<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }
    let welcome = Welcome {
        r#type: "welcome",
        conn: conn.as_u64(),
        user: opening.claims.as_ref().map(|c| c.sub.as_str()),
        channels: &opening.channels,
    };
    // Writing to a Vec cannot fail, and these fields always serialize.
    let _ = serde_json::to_writer(out, &welcome);
}

/// The token from `Authorization: Bearer`, then `?token=`, then a `bearer.` subprotocol.
fn token(req: &UpgradeRequest<'_>, bearer_protocol: Option<&str>) -> Option<String> {
    let from_header = req.header_str("authorization").and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    });
    from_header
        .or_else(|| req.query().and_then(|q| query_param(q, "token")))
        .or_else(|| bearer_protocol.map(|p| p[BEARER_PROTOCOL.len()..].to_owned()))
        .filter(|t| !t.is_empty())
}
