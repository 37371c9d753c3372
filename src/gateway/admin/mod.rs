//! The admin listener: a small HTTP/1.1 server on plain threads (one per connection, capped),
//! separate from the client listener so it can stay on a private address.

pub(crate) mod http;
mod routes;

pub(crate) use self::http::Response;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use self::http::{read_request, ReadError};
use super::state::Ctx;

/// Admin connections served at once; more get a 503 and are closed.
const MAX_ADMIN_CONNECTIONS: usize = 256;

/// Binds `addr` and serves the admin API on background threads.
pub(crate) fn start(ctx: Arc<Ctx>, listener: TcpListener) -> std::io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("throng-admin".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_ADMIN_CONNECTIONS {
                active.fetch_sub(1, Ordering::AcqRel);
                let busy = Response::error(503, "busy", "too many admin connections");
                let _ = busy.write(&mut stream, false);
                continue;
            }
            let ctx = ctx.clone();
            let active = active.clone();
            let spawned = std::thread::Builder::new().name("throng-admin-conn".into()).spawn(move || {
                serve(&ctx, stream);
                active.fetch_sub(1, Ordering::AcqRel);
            });
            if let Err(e) = spawned {
                tracing::error!("admin: cannot start a connection thread: {e}");
            }
        }
    })?;
    Ok(())
}

fn serve(ctx: &Ctx, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(http::REQUEST_TIMEOUT));
    let mut buf = Vec::new();
    loop {
        match read_request(&mut stream, &mut buf) {
            Ok(request) => {
                let response = routes::handle(ctx, &request);
                ctx.counters().inc(&ctx.counters().admin_requests);
                if response.status >= 400 {
                    ctx.counters().inc(&ctx.counters().admin_errors);
                }
                if response.write(&mut stream, request.keep_alive).is_err() || !request.keep_alive {
                    return;
                }
            }
            Err(ReadError::Gone) => return,
            Err(ReadError::Refuse(response)) => {
                ctx.counters().inc(&ctx.counters().admin_requests);
                ctx.counters().inc(&ctx.counters().admin_errors);
                if response.write(&mut stream, false).is_ok() {
                    linger(&mut stream);
                }
                return;
            }
        }
    }
}

/// After refusing a request whose body we did not read, close our side and read briefly, so
/// the unread bytes do not make the kernel answer with a reset that destroys the response.
fn linger(stream: &mut TcpStream) {
    use std::io::Read;
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 8192];
    let mut budget = 4 * http::MAX_BODY;
    while budget > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}
