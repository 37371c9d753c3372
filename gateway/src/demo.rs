//! The demo page: one self-contained HTML file (no CDN). The client listener serves it at `/`
//! (through the engine's plain-HTTP hook) and publishes through the admin API, which allows that
//! origin while the demo is on; the admin listener serves it at `/` too.

use super::admin::Response;
use super::state::{Ctx, Front};

const PAGE: &str = include_str!("demo.html");

pub(crate) fn page(ctx: &Ctx) -> Response {
    let ws = ctx.ws_addr;
    // An unspecified listen address (0.0.0.0) means "the host the page came from".
    let host = if ws.ip().is_unspecified() { String::new() } else { ws.ip().to_string() };
    let config = serde_json::json!({
        "wsHost": host,
        "wsPort": ws.port(),
        "wsPath": ctx.front.settings.ws_path,
        // The client listener's scheme, whatever the admin listener's (this page's) is.
        "wsTls": ctx.front.settings.tls().is_some(),
        "auth": ctx.front.live().jwt_secret.is_some(),
    });
    let html = PAGE.replace("/*CONFIG*/{}", &config.to_string());
    Response::text(200, "text/html; charset=utf-8", html)
}

/// The whole HTTP response for the page served by the client listener: the WebSocket is on the
/// page's own origin; publishing goes to the admin listener.
pub(crate) fn client_page(front: &Front, admin_addr: std::net::SocketAddr) -> Vec<u8> {
    let config = serde_json::json!({
        "sameOrigin": true,
        "wsPath": front.settings.ws_path,
        "auth": front.live().jwt_secret.is_some(),
        "adminBase": format!("{}://{admin_addr}", admin_scheme(front)),
    });
    let html = PAGE.replace("/*CONFIG*/{}", &config.to_string());
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = Response::text(200, "text/html; charset=utf-8", html).write(&mut out, false);
    out
}

/// `https` when the admin listener serves TLS, else `http`.
pub(crate) fn admin_scheme(front: &Front) -> &'static str {
    if front.settings.admin_tls().is_some() {
        "https"
    } else {
        "http"
    }
}

/// The scheme of pages the client listener serves: `https` with TLS on it.
pub(crate) fn page_scheme(front: &Front) -> &'static str {
    if front.settings.tls().is_some() {
        "https"
    } else {
        "http"
    }
}
