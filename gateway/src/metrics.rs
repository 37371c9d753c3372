//! The gateway's own counters, and `/metrics` (Prometheus text) and `/v1/stats` (JSON) built
//! from them plus the engine's [`Stats`](throng::Stats).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use throng::CloseCause;

/// Why an upgrade was refused by the gateway (the engine counts malformed requests itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    NotFound,
    Origin,
    MissingToken,
    InvalidToken,
    ExpiredToken,
    ChannelForbidden,
    BadChannel,
    TooManyChannels,
    PerIpLimit,
    GlobalLimit,
}

impl Reject {
    const ALL: [Reject; 10] = [
        Reject::NotFound,
        Reject::Origin,
        Reject::MissingToken,
        Reject::InvalidToken,
        Reject::ExpiredToken,
        Reject::ChannelForbidden,
        Reject::BadChannel,
        Reject::TooManyChannels,
        Reject::PerIpLimit,
        Reject::GlobalLimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Reject::NotFound => "not_found",
            Reject::Origin => "origin",
            Reject::MissingToken => "missing_token",
            Reject::InvalidToken => "invalid_token",
            Reject::ExpiredToken => "expired_token",
            Reject::ChannelForbidden => "channel_forbidden",
            Reject::BadChannel => "bad_channel",
            Reject::TooManyChannels => "too_many_channels",
            Reject::PerIpLimit => "per_ip_limit",
            Reject::GlobalLimit => "global_limit",
        }
    }
}

/// Why the admin API cut a connection or refused a request before serving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdminLimit {
    /// Over `admin_max_connections` (and the probe reserve, or not a probe): 503.
    Connections,
    /// The request did not arrive whole within `admin_request_timeout`: 408.
    RequestTimeout,
    /// A keep-alive connection sat idle for `admin_idle_timeout`: closed.
    IdleTimeout,
    /// A `POST` without an accepted `Content-Type`: 415.
    ContentType,
    /// A `Host` not in `admin_allowed_hosts`: 421.
    Host,
    /// A publish while draining: 503 with `Retry-After`.
    Draining,
}

impl AdminLimit {
    const ALL: [AdminLimit; 6] = [
        AdminLimit::Connections,
        AdminLimit::RequestTimeout,
        AdminLimit::IdleTimeout,
        AdminLimit::ContentType,
        AdminLimit::Host,
        AdminLimit::Draining,
    ];

    fn label(self) -> &'static str {
        match self {
            AdminLimit::Connections => "connections",
            AdminLimit::RequestTimeout => "request_timeout",
            AdminLimit::IdleTimeout => "idle_timeout",
            AdminLimit::ContentType => "content_type",
            AdminLimit::Host => "host",
            AdminLimit::Draining => "draining",
        }
    }
}

/// The close codes `throng_closes_total` names; any other is counted as `other`. These are the
/// codes RFC 6455 defines that a peer or the engine uses, plus the gateway's own 4001 (token
/// expired): a peer choosing codes cannot grow the label set.
const CLOSE_CODES: [u16; 12] = [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 4001];

/// Why a connection closed: the `reason` label of `throng_closes_total`. The engine's
/// [`CloseCause`], with the gateway's own closes told apart by the tag they are made with
/// ([`CloseReason::tag`]); never the peer's reason text, so the label set is fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The gateway closed it for a reason not listed here (an untagged close).
    Server = 0,
    /// `POST /v1/connections/{id}/close`.
    Admin,
    /// Its token's `exp` passed (4001).
    TokenExpired,
    /// Its worker thread had died (1011).
    WorkerGone,
    /// Handling one of its events panicked (1011).
    WorkerPanic,
    /// It sent a data message that is not a command while `client_messages = "reject"` (1003).
    PushOnly,
    Peer,
    Disconnected,
    Drain,
    IdleTimeout,
    PongTimeout,
    ProtocolError,
    SlowConsumer,
    RateLimited,
    AssemblyTimeout,
    AssemblyBudget,
}

impl CloseReason {
    const ALL: [CloseReason; 16] = [
        CloseReason::Server,
        CloseReason::Admin,
        CloseReason::TokenExpired,
        CloseReason::WorkerGone,
        CloseReason::WorkerPanic,
        CloseReason::PushOnly,
        CloseReason::Peer,
        CloseReason::Disconnected,
        CloseReason::Drain,
        CloseReason::IdleTimeout,
        CloseReason::PongTimeout,
        CloseReason::ProtocolError,
        CloseReason::SlowConsumer,
        CloseReason::RateLimited,
        CloseReason::AssemblyTimeout,
        CloseReason::AssemblyBudget,
    ];

    /// The tag the gateway closes a connection with ([`throng::Handle::close_tagged`]), for a
    /// reason of its own; the engine hands it back in [`CloseCause::Application`].
    pub(crate) fn tag(self) -> u8 {
        self as u8
    }

    /// The reason for what the engine reported.
    pub(crate) fn of(cause: CloseCause) -> CloseReason {
        match cause {
            CloseCause::Application(tag) => {
                let own = &CloseReason::ALL[..=CloseReason::PushOnly as usize];
                own.get(usize::from(tag)).copied().unwrap_or(CloseReason::Server)
            }
            CloseCause::Peer => CloseReason::Peer,
            CloseCause::Disconnected => CloseReason::Disconnected,
            CloseCause::Shutdown => CloseReason::Drain,
            CloseCause::IdleTimeout => CloseReason::IdleTimeout,
            CloseCause::PongTimeout => CloseReason::PongTimeout,
            CloseCause::ProtocolError => CloseReason::ProtocolError,
            CloseCause::SlowConsumer => CloseReason::SlowConsumer,
            CloseCause::RateLimited => CloseReason::RateLimited,
            CloseCause::MessageTimeout => CloseReason::AssemblyTimeout,
            CloseCause::AssemblyBudget => CloseReason::AssemblyBudget,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::Server => "server",
            CloseReason::Admin => "admin",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::WorkerGone => "worker_gone",
            CloseReason::WorkerPanic => "worker_panic",
            CloseReason::PushOnly => "push_only",
            CloseReason::Peer => "peer",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Drain => "drain",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::PongTimeout => "pong_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::AssemblyTimeout => "assembly_timeout",
            CloseReason::AssemblyBudget => "assembly_budget",
        }
    }
}

/// How many `upgrade refused` (and, apart, `admin request refused`) lines are logged per
/// second at most.
pub(crate) const REFUSAL_LINES_PER_SECOND: u32 = 20;

/// Counters bumped by the hook, the workers and the admin API.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) rejects: [AtomicU64; Reject::ALL.len()],
    pub(crate) publishes: AtomicU64,
    pub(crate) publish_bytes: AtomicU64,
    pub(crate) fanout: AtomicU64,
    pub(crate) commands_ok: AtomicU64,
    pub(crate) commands_failed: AtomicU64,
    pub(crate) client_messages_rejected: AtomicU64,
    pub(crate) client_messages_forwarded: AtomicU64,
    pub(crate) token_expired_closes: AtomicU64,
    pub(crate) admin_closes: AtomicU64,
    pub(crate) admin_requests: AtomicU64,
    pub(crate) admin_errors: AtomicU64,
    pub(crate) admin_limits: [AtomicU64; AdminLimit::ALL.len()],
    pub(crate) reloads: AtomicU64,
    /// TLS certificate reloads (SIGHUP, `POST /v1/tls/reload`) by result.
    pub(crate) tls_reloads_ok: AtomicU64,
    pub(crate) tls_reloads_failed: AtomicU64,
    /// Admin connections whose TLS handshake failed or did not finish in time.
    pub(crate) admin_tls_failures: AtomicU64,
    pub(crate) worker_panics: AtomicU64,
    /// Caps the `info` lines for refused upgrades (a flood of them must not fill the disk).
    pub(crate) refusal_log: super::logging::LogLimiter,
    /// The same for admin requests refused by a limit.
    pub(crate) admin_refusal_log: super::logging::LogLimiter,
    /// Closes by code (one row per [`CLOSE_CODES`], then `other`) and reason, counted by the
    /// close hook on the loops.
    pub(crate) closes: [[AtomicU64; CloseReason::ALL.len()]; CLOSE_CODES.len() + 1],
    /// Client messages, by time from the loop turn that decoded them to a worker taking them.
    pub(crate) event_delay: throng::engine::AtomicHistogram,
}

impl Counters {
    pub(crate) fn inc(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a refused upgrade and logs it at `info`, at most
    /// [`REFUSAL_LINES_PER_SECOND`] lines a second (the rest are counted in the next line).
    pub(crate) fn reject(&self, why: Reject, status: u16, text: &str, peer: std::net::SocketAddr) {
        self.inc(&self.rejects[why as usize]);
        if let Some(suppressed) = self.refusal_log.allow(std::time::Instant::now()) {
            tracing::info!(reason = why.label(), status, %peer, detail = text, suppressed, "upgrade refused");
        }
    }

    /// Counts an admin limit hit; a refusal (all but the routine idle cut) is also logged at
    /// `info`, under the same per-second cap as upgrade refusals (its own budget).
    pub(crate) fn admin_limit(&self, which: AdminLimit) {
        self.inc(&self.admin_limits[which as usize]);
        if which == AdminLimit::IdleTimeout {
            return;
        }
        if let Some(suppressed) = self.admin_refusal_log.allow(std::time::Instant::now()) {
            tracing::info!(limit = which.label(), suppressed, "admin request refused");
        }
    }

    /// Counts a connection's close under its code (or `other`) and reason.
    pub(crate) fn close(&self, code: u16, reason: CloseReason) {
        let i = CLOSE_CODES.iter().position(|&c| c == code).unwrap_or(CLOSE_CODES.len());
        self.inc(&self.closes[i][reason as usize]);
    }
}

/// Everything the two renderings need, gathered once.
pub(crate) struct Snapshot {
    pub(crate) engine: throng::Stats,
    pub(crate) loops: Vec<throng::Stats>,
    pub(crate) open: usize,
    pub(crate) topics: usize,
    pub(crate) subscriptions: usize,
    pub(crate) broker: &'static str,
    pub(crate) broker_stats: super::broker::BrokerStats,
    pub(crate) draining: bool,
    pub(crate) uptime_secs: u64,
    pub(crate) nofile: Option<(u64, u64)>,
    /// Connections waiting for their token's expiry (one entry per open connection with `exp`).
    pub(crate) token_expiry_entries: usize,
    /// Worker threads that died (each is also named by `/healthz`).
    pub(crate) workers_dead: usize,
    /// `/proc/self` read at scrape time (`None` where there is no `/proc`).
    pub(crate) process: Option<super::process::Process>,
    /// Whether the client listener serves TLS (`tls_cert`).
    pub(crate) tls_client: bool,
    /// Whether the admin listener serves TLS (`admin_tls_cert`).
    pub(crate) tls_admin: bool,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One metric family: name (without the `throng_` prefix), type, help, samples (labels, value).
type Family<'a> = (&'a str, &'a str, &'a str, Vec<(String, u64)>);

/// Prometheus text exposition format 0.0.4.
pub(crate) fn prometheus(c: &Counters, s: &Snapshot) -> String {
    const G: &str = "gauge";
    const C: &str = "counter";
    let e = &s.engine;
    let b = &s.broker_stats;
    let one = |v: u64| vec![(String::new(), v)];
    let labelled = |label: &str, pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
        pairs.iter().map(|(l, v)| (format!("{{{label}=\"{l}\"}}"), *v)).collect()
    };
    // One sample per event loop, labelled with its index.
    let per_loop = |value: fn(&throng::Stats) -> u64| -> Vec<(String, u64)> {
        s.loops.iter().enumerate().map(|(i, l)| (format!("{{loop=\"{i}\"}}"), value(l))).collect()
    };
    let rejects: Vec<(&str, u64)> =
        Reject::ALL.iter().map(|r| (r.label(), get(&c.rejects[*r as usize]))).collect();
    let admin_limits: Vec<(&str, u64)> =
        AdminLimit::ALL.iter().map(|l| (l.label(), get(&c.admin_limits[*l as usize]))).collect();
    // Only the pairs that happened: every code with every reason would be some 200 series,
    // nearly all of them zero forever (most pairs cannot occur).
    let closes: Vec<(String, u64)> = (CLOSE_CODES.iter().map(|c| c.to_string()))
        .chain(["other".to_owned()])
        .zip(&c.closes)
        .flat_map(|(code, row)| {
            (CloseReason::ALL.iter().zip(row)).filter(|(_, n)| get(n) > 0).map(move |(reason, n)| {
                (format!("{{code=\"{code}\",reason=\"{}\"}}", reason.label()), get(n))
            })
        })
        .collect();
    let mut metrics: Vec<Family<'_>> = vec![
        (
            "build_info",
            G,
            "The running build: version and I/O backend, as labels; always 1.",
            vec![(format!("{{version=\"{}\",backend=\"{}\"}}", env!("CARGO_PKG_VERSION"), e.backend), 1)],
        ),
        ("connections", G, "TCP connections held (handshaking, open, closing).", one(e.connections as u64)),
        ("connections_open", G, "WebSocket connections open (gateway view).", one(s.open as u64)),
        ("accepted_total", C, "TCP connections accepted.", one(e.accepted)),
        (
            "handshakes_total",
            C,
            "Upgrades by result.",
            labelled("result", &[("ok", e.handshakes_ok), ("failed", e.handshakes_failed)]),
        ),
        (
            "upgrade_rejections_total",
            C,
            "Upgrades refused by the gateway, by reason.",
            labelled("reason", &rejects),
        ),
        (
            "rejected_over_limit_total",
            C,
            "Sockets dropped at accept by the engine's cap.",
            one(e.rejected_over_limit),
        ),
        ("accept_errors_total", C, "accept() failures (EMFILE and the like).", one(e.accept_errors)),
        ("messages_in_total", C, "Data messages received from clients.", one(e.messages_in)),
        ("messages_out_total", C, "Data messages queued to clients.", one(e.messages_out)),
        (
            "outbound_queued_bytes",
            G,
            "Bytes queued to clients and not yet written to their sockets.",
            one(e.outbound_queued),
        ),
        ("bytes_in_total", C, "Bytes read from client sockets.", one(e.bytes_in)),
        ("bytes_out_total", C, "Bytes written to client sockets.", one(e.bytes_out)),
        (
            "bytes_total",
            C,
            "Client socket bytes by direction and kind (HTTP before the upgrade, or frames).",
            vec![
                (r#"{direction="in",kind="handshake"}"#.into(), e.handshake_bytes_in),
                (r#"{direction="in",kind="frames"}"#.into(), e.bytes_in.saturating_sub(e.handshake_bytes_in)),
                (r#"{direction="out",kind="handshake"}"#.into(), e.handshake_bytes_out),
                (
                    r#"{direction="out",kind="frames"}"#.into(),
                    e.bytes_out.saturating_sub(e.handshake_bytes_out),
                ),
            ],
        ),
        (
            "closes_total",
            C,
            "Open connections closed, by close code (unlisted codes as other) and reason (what ended it); a pair appears with its first close.",
            closes,
        ),
        ("protocol_errors_total", C, "Connections failed for a protocol violation.", one(e.protocol_errors)),
        (
            "slow_consumer_closes_total",
            C,
            "Connections closed with 1008 over the outbound cap.",
            one(e.slow_consumer_closes),
        ),
        (
            "slow_consumer_drops_total",
            C,
            "Messages dropped for connections over the outbound cap.",
            one(e.slow_consumer_drops),
        ),
        (
            "engine_refusals_total",
            C,
            "Connections closed and commands refused by the engine's limits, by reason.",
            labelled(
                "reason",
                &[
                    ("rate_limited", e.rate_limited),
                    ("assembly_timeout", e.assembly_timeouts),
                    ("assembly_budget", e.assembly_budget_closes),
                    ("command_queue_full", e.commands_refused),
                    ("proxy_header", e.proxy_errors),
                    ("inflated_too_large", e.inflate_too_large),
                ],
            ),
        ),
        (
            "deflate_negotiated_total",
            C,
            "Upgrades that negotiated permessage-deflate.",
            one(e.deflate_negotiated),
        ),
        (
            "compressed_messages_total",
            C,
            "Messages received inflated (in) and queued compressed (out; a publish counts per client).",
            labelled("direction", &[("in", e.compressed_in), ("out", e.compressed_out)]),
        ),
        (
            "proxy_headers_total",
            C,
            "PROXY protocol headers read from trusted balancers.",
            one(e.proxy_headers),
        ),
        (
            "pongs_coalesced_total",
            C,
            "Pongs replaced by a newer one while the queue was full.",
            one(e.pongs_coalesced),
        ),
        (
            "read_pauses_total",
            C,
            "Times reading from a client paused for its full outbound queue.",
            one(e.read_pauses),
        ),
        (
            "recv_buffers_exhausted_total",
            C,
            "io_uring: receives that found the loop's receive buffers all in use (armed again once some came back).",
            one(e.recv_buffers_exhausted),
        ),
        (
            "loop_commands_queued",
            G,
            "Commands waiting in each loop's command queue.",
            per_loop(|l| l.commands_queued as u64),
        ),
        (
            "loop_commands_refused_total",
            C,
            "Commands refused because a loop's queue stayed full, per loop.",
            per_loop(|l| l.commands_refused),
        ),
        (
            "queued_events",
            G,
            "Events held in the loops' backlogs (reading pauses).",
            one(e.queued_events as u64),
        ),
        (
            "event_channel_len",
            G,
            "Events waiting in the loops-to-workers channels (all workers' shards).",
            one(e.channel_len as u64),
        ),
        ("loop_connections", G, "TCP connections held, per event loop.", per_loop(|l| l.connections as u64)),
        (
            "loop_queued_events",
            G,
            "Events held in each loop's backlog (that loop pauses reading while non-zero).",
            per_loop(|l| l.queued_events as u64),
        ),
        ("publishes_total", C, "Messages published through the admin API.", one(get(&c.publishes))),
        (
            "publish_bytes_total",
            C,
            "Payload bytes published through the admin API.",
            one(get(&c.publish_bytes)),
        ),
        (
            "fanout_total",
            C,
            "Local deliveries queued by publishes (sum of subscribers).",
            one(get(&c.fanout)),
        ),
        ("channels", G, "Topics with a local subscriber (user topics included).", one(s.topics as u64)),
        ("subscriptions", G, "Local subscriptions (user topics included).", one(s.subscriptions as u64)),
        (
            "commands_total",
            C,
            "Client subscribe/unsubscribe commands by result.",
            labelled("result", &[("ok", get(&c.commands_ok)), ("error", get(&c.commands_failed))]),
        ),
        (
            "client_messages_total",
            C,
            "Client data messages by fate.",
            labelled(
                "fate",
                &[
                    ("rejected", get(&c.client_messages_rejected)),
                    ("forwarded", get(&c.client_messages_forwarded)),
                ],
            ),
        ),
        (
            "token_expired_closes_total",
            C,
            "Connections closed with 4001 at token expiry.",
            one(get(&c.token_expired_closes)),
        ),
        (
            "token_expiry_entries",
            G,
            "Open connections scheduled to close at their token's expiry.",
            one(s.token_expiry_entries as u64),
        ),
        ("admin_closes_total", C, "Connections closed through the admin API.", one(get(&c.admin_closes))),
        ("admin_requests_total", C, "Admin API requests.", one(get(&c.admin_requests))),
        ("admin_errors_total", C, "Admin API requests answered with 4xx/5xx.", one(get(&c.admin_errors))),
        (
            "admin_limits_total",
            C,
            "Admin connections cut or requests refused by a limit, by limit.",
            labelled("limit", &admin_limits),
        ),
        ("reloads_total", C, "Configuration reloads (SIGHUP).", one(get(&c.reloads))),
        (
            "worker_panics_total",
            C,
            "Panics caught while a worker handled an event (that connection closed with 1011).",
            one(get(&c.worker_panics)),
        ),
        (
            "workers_dead",
            G,
            "Worker threads that died; /healthz answers 503 then.",
            one(s.workers_dead as u64),
        ),
        (
            "broker_state",
            G,
            "The broker's state, as the label; always 1.",
            labelled("state", &[(s.broker, 1)]),
        ),
        (
            "broker_sent_total",
            C,
            "Messages handed to the upstream broker (publishes, forwarded client messages).",
            one(b.sent),
        ),
        (
            "broker_received_total",
            C,
            "Publishes from other nodes delivered to this node's loops.",
            one(b.received),
        ),
        (
            "broker_dropped_total",
            C,
            "Messages not carried by the broker, by reason.",
            labelled(
                "reason",
                &[
                    ("queue_full", b.dropped_queue_full),
                    ("send_failed", b.dropped_send_failed),
                    ("malformed", b.dropped_malformed),
                    ("drain", b.dropped_drain),
                    ("oversize", b.dropped_oversize),
                    ("raw_user_topic", b.dropped_raw_user_topic),
                ],
            ),
        ),
        ("broker_reconnects_total", C, "Broker connections re-established.", one(b.reconnects)),
        ("broker_queue", G, "Messages waiting to be sent to the broker.", one(b.queued)),
        ("draining", G, "1 while shutting down.", one(u64::from(s.draining))),
        ("uptime_seconds", G, "Seconds since start.", one(s.uptime_secs)),
    ];
    // The TLS families exist only where TLS is on, each with every label value from the start.
    if s.tls_client {
        let failures: Vec<(String, u64)> =
            (e.tls_failures.iter()).map(|(r, n)| (format!("{{reason=\"{}\"}}", r.name()), n)).collect();
        metrics.extend([
            (
                "tls_handshakes_total",
                C,
                "TLS handshakes completed on the client listener (full and resumed).",
                one(e.tls_handshakes),
            ),
            (
                "tls_resumed_total",
                C,
                "Of those, handshakes that resumed a session (a ticket or a cached id).",
                one(e.tls_resumed),
            ),
            (
                "tls_handshake_failures_total",
                C,
                "TLS handshakes that failed on the client listener, by reason.",
                failures,
            ),
        ]);
    }
    if s.tls_client || s.tls_admin {
        let reloads =
            labelled("result", &[("ok", get(&c.tls_reloads_ok)), ("error", get(&c.tls_reloads_failed))]);
        metrics.push((
            "tls_reloads_total",
            C,
            "TLS certificate reloads (SIGHUP, POST /v1/tls/reload) by result; on error the previous certificates stay.",
            reloads,
        ));
    }
    if s.tls_admin {
        metrics.push((
            "admin_tls_handshake_failures_total",
            C,
            "Admin connections closed because their TLS handshake failed or did not finish in time.",
            one(get(&c.admin_tls_failures)),
        ));
    }
    if let Some((soft, hard)) = s.nofile {
        let pairs = labelled("kind", &[("soft", soft), ("hard", hard)]);
        metrics.push((
            "nofile_limit",
            G,
            "Open-files limit found at start (soft) and the hard limit.",
            pairs,
        ));
    }
    let mut out = String::with_capacity(8192);
    for (name, kind, help, samples) in metrics {
        let _ = writeln!(out, "# HELP throng_{name} {help}\n# TYPE throng_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "throng_{name}{labels} {value}");
        }
    }
    histogram(
        &mut out,
        "handshake_duration_seconds",
        "Upgrades completed, by time from the accept to the 101 queued (loop turn clock, 100 us).",
        &e.handshake_duration,
    );
    histogram(
        &mut out,
        "publish_duration_seconds",
        "Publishes (admin API or broker) queued to at least one local subscriber, by time from the publish to the last subscriber's write of the frame (or its connection's end, if that came first).",
        &e.publish_duration,
    );
    histogram(
        &mut out,
        "event_delay_seconds",
        "Client messages, by time from the loop turn that decoded them to a worker taking them (queueing in the loop's backlog and the worker's shard).",
        &c.event_delay.snapshot(),
    );
    if let Some(p) = &s.process {
        process_families(&mut out, p);
    }
    out
}

/// A histogram family: cumulative `_bucket{le=...}` lines ending with `+Inf` (= `_count`),
/// then `_sum` in seconds and `_count`.
fn histogram(out: &mut String, name: &str, help: &str, h: &throng::engine::Histogram) {
    let _ = writeln!(out, "# HELP throng_{name} {help}\n# TYPE throng_{name} histogram");
    for (bound, n) in h.cumulative() {
        let _ = writeln!(out, "throng_{name}_bucket{{le=\"{}\"}} {n}", bound.as_secs_f64());
    }
    let count = h.count();
    let _ = writeln!(out, "throng_{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "throng_{name}_sum {}\nthrong_{name}_count {count}", h.sum().as_secs_f64());
}

/// The standard `process_*` families (unprefixed, as every Prometheus client library names
/// them, so existing dashboards work). Values are floats, unlike the `throng_*` counters.
fn process_families(out: &mut String, p: &super::process::Process) {
    let mut families: Vec<(&str, &str, &str, f64)> = vec![
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
            p.resident_bytes as f64,
        ),
        ("process_open_fds", "gauge", "Open file descriptors.", p.open_fds as f64),
    ];
    if let Some(max) = p.max_fds {
        families.push(("process_max_fds", "gauge", "The open file descriptors limit (soft).", max as f64));
    }
    families.push((
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        p.start_time_seconds,
    ));
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// The JSON body of `GET /v1/stats`.
pub(crate) fn json(c: &Counters, s: &Snapshot) -> serde_json::Value {
    let e = &s.engine;
    let rejects: serde_json::Map<String, serde_json::Value> =
        (Reject::ALL.iter()).map(|r| (r.label().to_owned(), get(&c.rejects[*r as usize]).into())).collect();
    let admin_limits: serde_json::Map<String, serde_json::Value> = (AdminLimit::ALL.iter())
        .map(|l| (l.label().to_owned(), get(&c.admin_limits[*l as usize]).into()))
        .collect();
    // Built apart: one json! over every key exceeds the macro recursion limit.
    let broker_stats = serde_json::json!({
        "sent": s.broker_stats.sent,
        "received": s.broker_stats.received,
        "dropped_queue_full": s.broker_stats.dropped_queue_full,
        "dropped_send_failed": s.broker_stats.dropped_send_failed,
        "dropped_malformed": s.broker_stats.dropped_malformed,
        "dropped_oversize": s.broker_stats.dropped_oversize,
        "dropped_raw_user_topic": s.broker_stats.dropped_raw_user_topic,
        "dropped_drain": s.broker_stats.dropped_drain,
        "reconnects": s.broker_stats.reconnects,
        "queued": s.broker_stats.queued,
    });
    let tls = serde_json::json!({
        "client": s.tls_client,
        "admin": s.tls_admin,
        "handshakes": e.tls_handshakes,
        "resumed": e.tls_resumed,
        "handshake_failures": (e.tls_failures.iter())
            .map(|(r, n)| (r.name().to_owned(), n.into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "reloads_ok": get(&c.tls_reloads_ok),
        "reloads_failed": get(&c.tls_reloads_failed),
        "admin_handshake_failures": get(&c.admin_tls_failures),
    });
    serde_json::json!({
        "connections": e.connections,
        "connections_open": s.open,
        "accepted": e.accepted,
        "handshakes_ok": e.handshakes_ok,
        "handshakes_failed": e.handshakes_failed,
        "upgrade_rejections": rejects,
        "rejected_over_limit": e.rejected_over_limit,
        "accept_errors": e.accept_errors,
        "messages_in": e.messages_in,
        "messages_out": e.messages_out,
        "bytes_in": e.bytes_in,
        "bytes_out": e.bytes_out,
        "outbound_queued_bytes": e.outbound_queued,
        "protocol_errors": e.protocol_errors,
        "slow_consumer_closes": e.slow_consumer_closes,
        "slow_consumer_drops": e.slow_consumer_drops,
        "queued_events": e.queued_events,
        "rate_limited": e.rate_limited,
        "assembly_timeouts": e.assembly_timeouts,
        "assembly_budget_closes": e.assembly_budget_closes,
        "commands_refused": e.commands_refused,
        "commands_queued": e.commands_queued,
        "pongs_coalesced": e.pongs_coalesced,
        "read_pauses": e.read_pauses,
        "recv_buffers_exhausted": e.recv_buffers_exhausted,
        "deflate_negotiated": e.deflate_negotiated,
        "compressed_in": e.compressed_in,
        "compressed_out": e.compressed_out,
        "inflated_too_large": e.inflate_too_large,
        "backend": e.backend.name(),
        "proxy_headers": e.proxy_headers,
        "proxy_errors": e.proxy_errors,
        "event_channel_len": e.channel_len,
        "publishes": get(&c.publishes),
        "publish_bytes": get(&c.publish_bytes),
        "fanout": get(&c.fanout),
        "channels": s.topics,
        "subscriptions": s.subscriptions,
        "commands_ok": get(&c.commands_ok),
        "commands_failed": get(&c.commands_failed),
        "client_messages_rejected": get(&c.client_messages_rejected),
        "client_messages_forwarded": get(&c.client_messages_forwarded),
        "token_expired_closes": get(&c.token_expired_closes),
        "token_expiry_entries": s.token_expiry_entries,
        "admin_closes": get(&c.admin_closes),
        "admin_requests": get(&c.admin_requests),
        "admin_limits": admin_limits,
        "reloads": get(&c.reloads),
        "worker_panics": get(&c.worker_panics),
        "workers_dead": s.workers_dead,
        "broker": s.broker,
        "broker_stats": broker_stats,
        "tls": tls,
        "draining": s.draining,
        "uptime_seconds": s.uptime_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_close_reason_has_its_own_label_and_the_gateways_own_come_back_from_their_tag() {
        let mut labels: Vec<&str> = CloseReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), CloseReason::ALL.len(), "{labels:?}");
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "ALL is in discriminant order: the counters index by it");
        }
        for own in &CloseReason::ALL[..=CloseReason::PushOnly as usize] {
            assert_eq!(CloseReason::of(CloseCause::Application(own.tag())), *own);
        }
        // A tag the gateway never uses is its catch-all, not a new label.
        assert_eq!(CloseReason::of(CloseCause::Application(CloseCause::MAX_TAG)), CloseReason::Server);
        assert_eq!(CloseReason::of(CloseCause::Shutdown), CloseReason::Drain);
    }
}
