//! The admin API's endpoints. Every answer is JSON except `/metrics` (Prometheus text) and `/`
//! (the demo page); errors are `{"error": code, "message": text}`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{Request, Response};
use crate::channels::{check_name, percent_decode, user_topic};
use crate::expiry::unix_now;
use crate::metrics::{self, AdminLimit, CloseReason};
use crate::state::Ctx;
use throng::{ConnId, Message, PublishReceipt};

/// The most messages in one batch publish.
const MAX_BATCH: usize = 1000;

enum Route<'a> {
    Demo,
    Health,
    Ready,
    Metrics,
    Stats,
    Channels,
    Publish,
    PublishBatch,
    Channel(&'a str),
    User(&'a str),
    CloseConnection(&'a str),
    TlsReload,
}

impl Route<'_> {
    /// The methods each route answers to, as in an `Allow` header.
    fn methods(&self) -> &'static str {
        match self {
            Route::Demo | Route::Health | Route::Ready | Route::Metrics | Route::Stats | Route::Channels => {
                "GET, HEAD"
            }
            // GET: the channel's subscribers across the fleet; POST: publish.
            Route::Channel(_) => "GET, HEAD, POST",
            _ => "POST",
        }
    }

    /// Whether the route works without the API key (load balancer probes, the demo page).
    fn is_open(&self) -> bool {
        matches!(self, Route::Demo | Route::Health | Route::Ready)
    }

    /// Load balancer probes: answered from the reserve slots and whatever the `Host`.
    fn is_probe(&self) -> bool {
        matches!(self, Route::Health | Route::Ready)
    }

    /// Whether `method` on this route hands messages to the broker.
    fn publishes(&self, method: &str) -> bool {
        match self {
            Route::Publish | Route::PublishBatch | Route::User(_) => true,
            Route::Channel(_) => method == "POST",
            _ => false,
        }
    }

    /// The body types a `POST` may declare. Neither is a CORS "simple" type, so another site's
    /// page cannot make a browser send such a request without a preflight, which only the demo
    /// page's origin passes.
    fn body_types(&self) -> &'static [&'static str] {
        match self {
            Route::Channel(_) | Route::User(_) => &["application/json", "application/octet-stream"],
            _ => &["application/json"],
        }
    }
}

/// Whether `path` is `/healthz` or `/readyz`.
pub(super) fn is_probe(path: &str) -> bool {
    route(path).is_some_and(|r| r.is_probe())
}

fn route(path: &str) -> Option<Route<'_>> {
    Some(match path {
        "/" => Route::Demo,
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        "/metrics" => Route::Metrics,
        "/v1/stats" => Route::Stats,
        "/v1/channels" => Route::Channels,
        "/v1/publish" => Route::Publish,
        "/v1/publish/batch" => Route::PublishBatch,
        "/v1/tls/reload" => Route::TlsReload,
        _ => {
            if let Some(name) = path.strip_prefix("/v1/channels/").filter(|n| !n.is_empty()) {
                Route::Channel(name)
            } else if let Some(id) = path.strip_prefix("/v1/users/").filter(|n| !n.is_empty()) {
                Route::User(id)
            } else {
                let id = path.strip_prefix("/v1/connections/")?.strip_suffix("/close")?;
                Route::CloseConnection(id)
            }
        }
    })
}

pub(super) fn handle(ctx: &Ctx, req: &Request) -> Response {
    // The demo page on the client listener publishes through this API: a cross-origin request,
    // allowed for that one origin while the demo is on.
    let demo_origin = req.header("origin").filter(|o| ctx.front.live().demo && is_demo_origin(ctx, o));
    let Some(origin) = demo_origin.map(str::to_owned) else {
        return respond(ctx, req);
    };
    let response = if req.method == "OPTIONS" {
        Response::text(204, "text/plain", Vec::new())
            .with_header("Access-Control-Allow-Methods", "GET, POST")
            .with_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
            .with_header("Access-Control-Max-Age", "600")
    } else {
        respond(ctx, req)
    };
    response.with_header("Access-Control-Allow-Origin", origin).with_header("Vary", "Origin")
}

/// The origins the demo page has when served by the client listener.
fn is_demo_origin(ctx: &Ctx, origin: &str) -> bool {
    let port = ctx.ws_addr.port();
    let ip = ctx.ws_addr.ip();
    let hosts = [ip.to_string(), "localhost".to_owned(), "127.0.0.1".to_owned()];
    let served_here = ip.is_loopback() || ip.is_unspecified();
    let scheme = crate::demo::page_scheme(&ctx.front);
    hosts
        .iter()
        .enumerate()
        .any(|(i, host)| (i == 0 || served_here) && origin == format!("{scheme}://{host}:{port}"))
}

fn respond(ctx: &Ctx, req: &Request) -> Response {
    // HEAD is GET without the body (load balancers probe with it): answered the same way, the
    // body left out when written.
    if req.method == "HEAD" {
        return respond_to(ctx, req, "GET").without_body();
    }
    respond_to(ctx, req, &req.method)
}

fn respond_to(ctx: &Ctx, req: &Request, method: &str) -> Response {
    let Some(route) = route(&req.path) else {
        return Response::error(404, "not_found", format!("no endpoint at {}", req.path));
    };
    if !route.methods().split(", ").any(|m| m == req.method) {
        let text = format!("{} {} is not supported; use {}", req.method, req.path, route.methods());
        return Response::error(405, "method_not_allowed", text).with_header("Allow", route.methods());
    }
    if !route.is_probe() && !host_allowed(&ctx.front.settings.admin_allowed_hosts, req.header("host")) {
        ctx.counters().admin_limit(AdminLimit::Host);
        let host = req.header("host").unwrap_or("(none)");
        return Response::error(
            421,
            "misdirected_request",
            format!("Host {host:?} is not in admin_allowed_hosts"),
        );
    }
    let live = ctx.front.live();
    if !route.is_open() {
        if let Some(key) = &live.api_key {
            let given = req.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
            if !constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
                return Response::error(
                    401,
                    "unauthorized",
                    "missing or wrong API key (Authorization: Bearer <key>)",
                )
                .with_header("WWW-Authenticate", "Bearer");
            }
        }
    }
    if method == "POST" {
        if let Err(refused) = check_body_type(&route, req) {
            ctx.counters().admin_limit(AdminLimit::ContentType);
            return refused;
        }
    }
    let _publishing = match route.publishes(method).then(|| ctx.begin_publish()) {
        Some(None) => {
            ctx.counters().admin_limit(AdminLimit::Draining);
            let text = "this node is shutting down and takes no more publishes; retry (another node)";
            return Response::error(503, "draining", text).with_header("Retry-After", "1");
        }
        gate => gate.flatten(),
    };
    match route {
        Route::Demo if live.demo => super::super::demo::page(ctx),
        Route::Demo => Response::error(404, "not_found", "the demo page is disabled (demo = false)"),
        Route::Health => {
            let (status, body) = ctx.front.workers.report();
            Response::json(status, &body)
        }
        Route::Ready => ready(ctx),
        Route::Metrics => {
            let text = metrics::prometheus(ctx.counters(), &ctx.snapshot());
            Response::text(200, "text/plain; version=0.0.4; charset=utf-8", text)
        }
        Route::Stats => {
            let mut stats = metrics::json(ctx.counters(), &ctx.snapshot());
            stats["config"] = ctx.front.settings.to_json();
            Response::json(200, &stats)
        }
        Route::Channels => channels(ctx, req),
        Route::Publish => match parse_json::<Publication>(&req.body) {
            Ok(p) => publish_envelope(ctx, p).unwrap_or_else(|e| e),
            Err(e) => e,
        },
        Route::PublishBatch => batch(ctx, req),
        Route::Channel(name) => match percent_decode(name) {
            Some(name) if method == "GET" => channel_presence(ctx, &name),
            Some(name) => publish_raw(ctx, &name, &req.body),
            None => Response::error(400, "bad_request", "invalid percent-encoding in the channel name"),
        },
        Route::User(id) => match percent_decode(id) {
            Some(id) if !id.is_empty() => publish_raw(ctx, &user_topic(&id), &req.body),
            _ => Response::error(400, "bad_request", "invalid user id"),
        },
        Route::CloseConnection(id) => close_connection(ctx, id, &req.body),
        Route::TlsReload => tls_reload(ctx),
    }
}

/// `POST /v1/tls/reload`: re-reads both listeners' certificate files, as SIGHUP does.
fn tls_reload(ctx: &Ctx) -> Response {
    if !ctx.tls.is_on() {
        let text = "neither listener serves TLS: set tls_cert and tls_key (or admin_tls_cert and \
                    admin_tls_key) and restart";
        return Response::error(409, "tls_off", text);
    }
    match ctx.tls.reload(ctx.counters(), "admin API") {
        Ok(body) => Response::json(200, &body),
        Err(why) => Response::error(500, "reload_failed", why),
    }
}

/// With a non-empty `allowed`, the `Host` header must be one of them, with or without its port
/// (an entry with a port matches that port only). A defence against DNS rebinding: a page on
/// another site whose name resolves to this address still sends its own name as `Host`.
fn host_allowed(allowed: &[String], host: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(host) = host else { return false };
    let name = match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') =>
        {
            name
        }
        _ => host,
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
}

fn check_body_type(route: &Route<'_>, req: &Request) -> Result<(), Response> {
    let given = req.header("content-type").unwrap_or("");
    let media = given.split(';').next().unwrap_or("").trim();
    if route.body_types().iter().any(|t| media.eq_ignore_ascii_case(t)) {
        return Ok(());
    }
    let wanted = route.body_types().join(" or ");
    let given = if given.is_empty() { "none" } else { given };
    let text = format!("POST {} needs Content-Type: {wanted} (got {given})", req.path);
    Err(Response::error(415, "unsupported_media_type", text))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| Response::error(400, "bad_request", format!("invalid JSON body: {e}")))
}

fn ready(ctx: &Ctx) -> Response {
    let broker = ctx.broker.state();
    if ctx.draining.load(Ordering::Relaxed) {
        return Response::json(503, &json!({ "status": "draining", "broker": broker.as_str() }));
    }
    if !broker.is_ready() {
        return Response::json(503, &json!({ "status": "not_ready", "broker": broker.as_str() }));
    }
    Response::json(200, &json!({ "status": "ready", "broker": broker.as_str() }))
}

fn channels(ctx: &Ctx, req: &Request) -> Response {
    let with_users = req.query.as_deref().and_then(|q| crate::channels::query_param(q, "users"));
    let with_users = with_users.as_deref() == Some("true");
    let list = ctx.handle.topics();
    let channels: Vec<Value> = (list.iter())
        .filter(|(name, _)| with_users || !name.starts_with(crate::channels::USER_PREFIX))
        .map(|(name, n)| json!({ "name": &**name, "subscribers": n }))
        .collect();
    Response::json(200, &json!({ "channels": channels }))
}

/// `GET /v1/channels/{name}`: subscribers on every node (from the broker's presence records,
/// refreshed within a fraction of a second of a change) and on this one. Without a broker, or
/// while it is unreachable, both counts are this node's and `cluster` is false.
fn channel_presence(ctx: &Ctx, name: &str) -> Response {
    if let Err(e) = checked(name) {
        return e;
    }
    let local = ctx.handle.subscribers(name);
    let (subscribers, nodes, cluster) = match ctx.broker.presence(name, local) {
        Some(p) => (p.subscribers, p.nodes, true),
        None => (local as u64, u64::from(local > 0), false),
    };
    Response::json(
        200,
        &json!({
            "channel": name,
            "subscribers": subscribers,
            "local": local,
            "nodes": nodes,
            "cluster": cluster,
            "broker": ctx.broker.state().as_str(),
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publication {
    channel: String,
    #[serde(default)]
    data: Value,
}

/// How long a publish (or a whole batch) waits for the loops to say how many connections they
/// queued it to; a loop that has not said by then is counted with the topic's subscribers at the
/// time of the wait.
const RECEIPT_WAIT: Duration = Duration::from_secs(1);

/// Hands `message` to the broker, or 503 when an event loop refused it (overloaded: its
/// subscribers miss it; the engine counted it). The count comes with [`queued`].
fn post(ctx: &Ctx, topic: &str, message: Message) -> Result<PublishReceipt, Response> {
    let counters = ctx.counters();
    counters.inc(&counters.publishes);
    counters.add(&counters.publish_bytes, message.as_bytes().len() as u64);
    ctx.broker.publish(topic, message).map_err(overloaded)
}

/// The local connections a posted publish was queued to, as the loops count them (after each
/// one's outbound cap: a connection closing meanwhile is not in it), waiting until `deadline`.
fn queued(ctx: &Ctx, topic: &str, receipt: &PublishReceipt, deadline: Instant) -> usize {
    let wait = deadline.saturating_duration_since(Instant::now());
    let queued = receipt.wait(wait).unwrap_or_else(|| ctx.handle.subscribers(topic));
    ctx.counters().add(&ctx.counters().fanout, queued as u64);
    queued
}

/// [`post`] and [`queued`]: one publish and its count.
fn deliver(ctx: &Ctx, topic: &str, message: Message) -> Result<usize, Response> {
    let receipt = post(ctx, topic, message)?;
    Ok(queued(ctx, topic, &receipt, Instant::now() + RECEIPT_WAIT))
}

/// The answer when an event loop's command queue stayed full.
fn overloaded(e: throng::CommandError) -> Response {
    Response::error(503, "overloaded", format!("{e}: retry later")).with_header("Retry-After", "1")
}

fn checked(channel: &str) -> Result<(), Response> {
    check_name(channel)
        .map_err(|e| Response::error(400, "invalid_channel", format!("{}: {channel:?}", e.reason())))
}

/// `/v1/publish`: clients receive `{"channel", "data", "ts"}` (ts in Unix milliseconds, for
/// latency measurements).
fn publish_envelope(ctx: &Ctx, p: Publication) -> Result<Response, Response> {
    checked(&p.channel)?;
    let queued = deliver(ctx, &p.channel, Message::Text(envelope(&p).to_string()))?;
    Ok(Response::json(200, &json!({ "channel": p.channel, "queued": queued })))
}

fn envelope(p: &Publication) -> Value {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(unix_now() * 1000, |d| d.as_millis() as u64);
    json!({ "channel": p.channel, "data": p.data, "ts": ts })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    messages: Vec<Publication>,
}

fn batch(ctx: &Ctx, req: &Request) -> Response {
    let batch = match parse_json::<Batch>(&req.body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if batch.messages.len() > MAX_BATCH {
        return Response::error(400, "batch_too_large", format!("at most {MAX_BATCH} messages per batch"));
    }
    // Check everything first: a batch is published whole or not at all.
    if let Some(Err(e)) = batch.messages.iter().map(|p| checked(&p.channel)).find(Result::is_err) {
        return e;
    }
    // Every message is posted before any count is waited for: the loops work on the whole
    // batch while this thread waits once.
    let posted: Vec<_> = batch
        .messages
        .iter()
        .map(|p| post(ctx, &p.channel, Message::Text(envelope(p).to_string())))
        .collect();
    let deadline = Instant::now() + RECEIPT_WAIT;
    let (mut total, mut refused) = (0, 0);
    let results: Vec<Value> = (batch.messages.iter().zip(&posted))
        .map(|(p, posted)| match posted {
            Ok(receipt) => {
                let queued = queued(ctx, &p.channel, receipt, deadline);
                total += queued;
                json!({ "channel": p.channel, "queued": queued })
            }
            Err(_) => {
                refused += 1;
                json!({ "channel": p.channel, "error": "overloaded" })
            }
        })
        .collect();
    if refused > 0 {
        let body = json!({ "results": results, "queued": total, "refused": refused });
        return Response::json(503, &body).with_header("Retry-After", "1");
    }
    Response::json(200, &json!({ "results": results, "queued": total }))
}

/// `/v1/channels/{name}` and `/v1/users/{id}`: the body goes out as it is, as a text message
/// when it is UTF-8 and binary otherwise.
fn publish_raw(ctx: &Ctx, topic: &str, body: &[u8]) -> Response {
    if let Err(e) = checked(topic) {
        return e;
    }
    let message = match std::str::from_utf8(body) {
        Ok(text) => Message::Text(text.to_owned()),
        Err(_) => Message::Binary(body.to_vec()),
    };
    match deliver(ctx, topic, message) {
        Ok(queued) => Response::json(200, &json!({ "channel": topic, "queued": queued })),
        Err(response) => response,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    code: Option<u16>,
    reason: Option<String>,
}

fn close_connection(ctx: &Ctx, id: &str, body: &[u8]) -> Response {
    let Ok(raw) = id.parse::<u64>() else {
        return Response::error(400, "bad_request", format!("connection id must be a number, got {id:?}"));
    };
    let close: CloseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CloseRequest::default()
    } else {
        match parse_json(body) {
            Ok(c) => c,
            Err(e) => return e,
        }
    };
    let code = close.code.unwrap_or(1000);
    if !(code == 1000 || (3000..=4999).contains(&code)) {
        return Response::error(400, "bad_request", "code must be 1000 or in 3000..=4999");
    }
    let reason = close.reason.unwrap_or_else(|| "closed by server".into());
    if reason.len() > throng::proto::close::MAX_REASON_LEN {
        return Response::error(400, "bad_request", "reason is over 123 bytes");
    }
    if !ctx.conns.contains(ConnId::from_u64(raw)) {
        return Response::error(404, "not_found", format!("no open connection {raw}"));
    }
    if let Err(e) = ctx.handle.close_tagged(ConnId::from_u64(raw), code, &reason, CloseReason::Admin.tag()) {
        return overloaded(e);
    }
    ctx.counters().inc(&ctx.counters().admin_closes);
    Response::json(200, &json!({ "conn": raw.to_string(), "code": code, "closing": true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each route's path as `docs/admin-api.json` names it. The match is exhaustive: a new
    /// route does not compile without its documented path.
    fn documented_path(r: &Route<'_>) -> &'static str {
        match r {
            Route::Demo => "/",
            Route::Health => "/healthz",
            Route::Ready => "/readyz",
            Route::Metrics => "/metrics",
            Route::Stats => "/v1/stats",
            Route::Channels => "/v1/channels",
            Route::Publish => "/v1/publish",
            Route::PublishBatch => "/v1/publish/batch",
            Route::Channel(_) => "/v1/channels/{name}",
            Route::User(_) => "/v1/users/{id}",
            Route::CloseConnection(_) => "/v1/connections/{id}/close",
            Route::TlsReload => "/v1/tls/reload",
        }
    }

    /// The router against the admin API's OpenAPI document (tests/gateway_openapi.rs checks the
    /// answers). `route` is a match, not a table, so one request path per route is listed here:
    /// a new route needs one (and `documented_path` above makes it need a documented path).
    #[test]
    fn every_route_is_in_the_openapi_document_with_its_methods() {
        let doc: Value = serde_json::from_str(include_str!("../../../docs/admin-api.json")).unwrap();
        let paths = doc["paths"].as_object().expect("paths");
        let served = [
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/stats",
            "/v1/channels",
            "/v1/publish",
            "/v1/publish/batch",
            "/v1/channels/news",
            "/v1/users/alice",
            "/v1/connections/7/close",
            "/v1/tls/reload",
        ];
        let mut seen = Vec::new();
        for path in served {
            let r = route(path).unwrap_or_else(|| panic!("{path} is not routed"));
            let documented = documented_path(&r);
            let item = paths.get(documented).unwrap_or_else(|| panic!("{documented} is not documented"));
            let mut methods: Vec<String> =
                item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
            let mut served: Vec<&str> = r.methods().split(", ").collect();
            methods.sort();
            served.sort();
            assert_eq!(methods, served, "{documented}: documented methods against served ones");
            for method in &methods {
                let security = item[method.to_lowercase()].get("security").and_then(Value::as_array);
                let open = security.is_some_and(|s| s.is_empty());
                assert_eq!(open, r.is_open(), "{method} {documented}: documented auth");
            }
            seen.push(documented);
        }
        let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
        documented.sort();
        seen.sort();
        assert_eq!(seen, documented, "a documented path the router does not serve, or one served twice");
    }

    #[test]
    fn hosts_match_with_or_without_the_port() {
        let allowed = ["localhost".to_owned(), "admin.test:7000".to_owned(), "[::1]".to_owned()];
        for host in ["localhost", "LocalHost:9090", "admin.test:7000", "[::1]:9090", "[::1]"] {
            assert!(host_allowed(&allowed, Some(host)), "{host}");
        }
        for host in ["admin.test", "admin.test:7001", "localhost:", "localhost:x", "evil", "[::2]:1"] {
            assert!(!host_allowed(&allowed, Some(host)), "{host}");
        }
        assert!(!host_allowed(&allowed, None));
        assert!(host_allowed(&[], None), "an empty list allows anything");
    }

    #[test]
    fn body_types_per_route() {
        assert_eq!(route("/v1/publish").unwrap().body_types(), ["application/json"]);
        assert!(route("/v1/channels/x").unwrap().body_types().contains(&"application/octet-stream"));
        assert!(route("/v1/users/x").unwrap().body_types().contains(&"application/octet-stream"));
        assert!(!route("/v1/connections/1/close").unwrap().publishes("POST"));
        assert!(route("/v1/channels/x").unwrap().publishes("POST"));
        assert!(!route("/v1/channels/x").unwrap().publishes("GET"));
        assert!(is_probe("/healthz") && is_probe("/readyz") && !is_probe("/metrics"));
    }
}
