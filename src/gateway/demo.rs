//! The demo page: one self-contained HTML file (no CDN), served by the admin listener because
//! the engine only answers WebSocket upgrades on the client listener.

use super::admin::Response;
use super::state::Ctx;

const PAGE: &str = include_str!("demo.html");

pub(crate) fn page(ctx: &Ctx) -> Response {
    let ws = ctx.ws_addr;
    // An unspecified listen address (0.0.0.0) means "the host the page came from".
    let host = if ws.ip().is_unspecified() { String::new() } else { ws.ip().to_string() };
    let config = serde_json::json!({
        "wsHost": host,
        "wsPort": ws.port(),
        "wsPath": ctx.front.settings.ws_path,
        "auth": ctx.front.live().jwt_secret.is_some(),
    });
    let html = PAGE.replace("/*CONFIG*/{}", &config.to_string());
    Response::text(200, "text/html; charset=utf-8", html)
}
