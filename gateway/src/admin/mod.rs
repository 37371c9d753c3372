//! The admin listener: a small HTTP/1.1 server on plain threads (one per connection, capped),
//! separate from the client listener so it can stay on a private address.
//!
//! Connections take one of `admin_max_connections` slots. Past that, a few more
//! (`admin_probe_reserve`) are served for `/healthz` and `/readyz` only, one request each with a
//! short deadline, so clients that hold every slot (slowly, or idle on keep-alive) cannot make
//! a load balancer take the node out; anything else past the cap gets 503 at once.

pub(crate) mod http;
mod routes;
mod tls;

pub(crate) use self::http::Response;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::http::{read_request, Limits, ReadError};
use self::tls::TlsStream;
use super::metrics::AdminLimit;
use super::state::Ctx;

/// The most a reserve connection is given for its one request: probes arrive in one packet.
const PROBE_DEADLINE: Duration = Duration::from_secs(1);
/// How long a refused request's unread bytes are drained, at most, before closing.
const LINGER: Duration = Duration::from_millis(500);

/// Which slots a connection holds, and so what it may ask.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Any request, keep-alive.
    Full,
    /// One probe request, from the reserve.
    Probe,
}

/// A counted slot; given back when dropped.
struct Taken(Arc<AtomicUsize>);

impl Drop for Taken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take(active: &Arc<AtomicUsize>, cap: usize) -> Option<Taken> {
    let mut now = active.load(Ordering::Acquire);
    loop {
        if now >= cap {
            return None;
        }
        match active.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(Taken(active.clone())),
            Err(seen) => now = seen,
        }
    }
}

/// Serves the admin API on `listener` from background threads.
pub(crate) fn start(ctx: Arc<Ctx>, listener: TcpListener) -> std::io::Result<()> {
    let settings = &ctx.front.settings;
    let (cap, reserve) = (settings.admin_max_connections, settings.admin_probe_reserve);
    let full = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("throng-admin".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let taken = match take(&full, cap) {
                Some(t) => Some((t, Slot::Full)),
                None => take(&probes, reserve).map(|t| (t, Slot::Probe)),
            };
            let Some((taken, slot)) = taken else {
                refuse_busy(&ctx, stream);
                continue;
            };
            let ctx = ctx.clone();
            let spawned = std::thread::Builder::new().name("throng-admin-conn".into()).spawn(move || {
                serve(&ctx, stream, slot);
                drop(taken);
            });
            if let Err(e) = spawned {
                tracing::error!("admin: cannot start a connection thread: {e}");
            }
        }
    })?;
    Ok(())
}

fn busy() -> Response {
    Response::error(503, "busy", "too many admin connections; /healthz and /readyz are still answered")
        .with_header("Retry-After", "1")
}

/// Over every cap: answer from the accept thread without waiting on the peer.
fn refuse_busy(ctx: &Ctx, mut stream: TcpStream) {
    ctx.counters().admin_limit(AdminLimit::Connections);
    count_error(ctx);
    if ctx.tls.admin().is_some() {
        // The answer would need a TLS handshake, which the accept thread must not wait on: the
        // connection is just closed (the client sees the handshake fail, and retries).
        return;
    }
    // A fresh socket's send buffer takes the short answer whole; never block accepting on it.
    let _ = stream.set_nonblocking(true);
    let _ = busy().write(&mut stream, false);
    // Read what request bytes are already here so that closing does not reset the answer
    // away (bytes arriving later still may: the peer then sees a reset instead of the 503).
    let mut sink = [0u8; 4096];
    while matches!(std::io::Read::read(&mut stream, &mut sink), Ok(n) if n > 0) {}
    let _ = stream.shutdown(Shutdown::Write);
}

fn count_error(ctx: &Ctx) {
    ctx.counters().inc(&ctx.counters().admin_requests);
    ctx.counters().inc(&ctx.counters().admin_errors);
}

/// An admin connection: the socket itself, or TLS over it (`admin_tls_cert`).
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl std::io::Read for Conn {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(out),
            Conn::Tls(s) => s.read(out),
        }
    }
}

impl std::io::Write for Conn {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(bytes),
            Conn::Tls(s) => s.write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl http::Stream for Conn {
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => http::Stream::set_read_timeout(s, timeout),
            Conn::Tls(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Conn {
    /// Ends the session (a TLS `close_notify`) and hands back the socket.
    fn finish(&mut self) -> &mut TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => {
                s.close();
                s.socket()
            }
        }
    }
}

fn serve(ctx: &Ctx, stream: TcpStream, slot: Slot) {
    let settings = &ctx.front.settings;
    let mut limits = Limits { request: settings.admin_request_timeout, idle: settings.admin_idle_timeout };
    if slot == Slot::Probe {
        limits =
            Limits { request: limits.request.min(PROBE_DEADLINE), idle: limits.idle.min(PROBE_DEADLINE) };
    }
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(limits.request));
    let mut conn = match ctx.tls.admin() {
        None => Conn::Plain(stream),
        // The handshake gets the request deadline: it is the first part of the first request.
        Some(config) => match TlsStream::accept(config.clone(), stream, limits.request) {
            Ok(tls) => Conn::Tls(Box::new(tls)),
            Err(e) => {
                ctx.counters().inc(&ctx.counters().admin_tls_failures);
                tracing::debug!("admin: {e}");
                return;
            }
        },
    };
    let mut buf = Vec::new();
    loop {
        let refusal = match read_request(&mut conn, &mut buf, &limits) {
            Ok(request) => {
                let keep_alive = request.keep_alive && slot == Slot::Full;
                let response = if slot == Slot::Probe && !routes::is_probe(&request.path) {
                    ctx.counters().admin_limit(AdminLimit::Connections);
                    busy()
                } else {
                    routes::handle(ctx, &request)
                };
                ctx.counters().inc(&ctx.counters().admin_requests);
                tracing::debug!(method = %request.method, path = %request.path, status = response.status, "admin request");
                if response.status >= 400 {
                    ctx.counters().inc(&ctx.counters().admin_errors);
                }
                if response.write(&mut conn, keep_alive).is_err() {
                    return;
                }
                if !keep_alive {
                    conn.finish();
                    return;
                }
                continue;
            }
            Err(ReadError::Gone) => return,
            Err(ReadError::Idle) => {
                ctx.counters().admin_limit(AdminLimit::IdleTimeout);
                conn.finish();
                return;
            }
            Err(ReadError::Deadline) => {
                ctx.counters().admin_limit(AdminLimit::RequestTimeout);
                let text = format!("the request did not arrive whole within {:?}", limits.request);
                Response::error(408, "request_timeout", text)
            }
            Err(ReadError::Refuse(response)) => response,
        };
        count_error(ctx);
        if refusal.write(&mut conn, false).is_ok() {
            linger(conn.finish());
        }
        return;
    }
}

/// After refusing a request whose body we did not read, close our side and read briefly, so
/// the unread bytes do not make the kernel answer with a reset that destroys the response.
/// Bounded in bytes and in time, whatever the peer sends.
fn linger(stream: &mut TcpStream) {
    use std::io::Read;
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 8192];
    let mut budget = 4 * http::MAX_BODY;
    while budget > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}
