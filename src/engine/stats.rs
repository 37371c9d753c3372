//! The loops' counters and the snapshot the application reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::config::Backend;

/// The upper bounds of the latency histograms' buckets (one more bucket counts what is above
/// the last): fixed, so that loops' histograms add up and a scrape needs no allocation.
pub const LATENCY_BUCKETS: [Duration; 16] = [
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// A latency histogram over [`LATENCY_BUCKETS`]: relaxed counters one thread bumps and any
/// thread reads (the loops' handshake times; an embedder's own timings, such as the gateway's).
#[derive(Default, Debug)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// Counts one observation.
    pub fn observe(&self, value: Duration) {
        let i = LATENCY_BUCKETS.iter().position(|&b| value <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a latency histogram over [`LATENCY_BUCKETS`], as Prometheus renders one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last counts those above every bound.
    buckets: [u64; BUCKETS],
    sum_nanos: u64,
}

impl Histogram {
    /// Each bucket's upper bound with the observations at or below it (cumulative), in
    /// [`LATENCY_BUCKETS`] order; the `+Inf` bucket is [`Histogram::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        LATENCY_BUCKETS
            .iter()
            .zip(self.buckets.iter().scan(0, |total, n| {
                *total += n;
                Some(*total)
            }))
            .map(|(bound, n)| (*bound, n))
    }

    /// How many observations were made.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The observations added up.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos)
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
    }
}

/// Counters of one loop, read by [`Handle::stats`](super::Handle::stats).
#[derive(Default, Debug)]
pub(crate) struct LoopStats {
    pub(crate) connections: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) handshakes_ok: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) slow_consumer_closes: AtomicU64,
    pub(crate) slow_consumer_drops: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) rejected_over_limit: AtomicU64,
    pub(crate) queued_events: AtomicUsize,
    pub(crate) commands_queued: AtomicUsize,
    pub(crate) commands_refused: AtomicU64,
    pub(crate) pongs_coalesced: AtomicU64,
    pub(crate) read_pauses: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) assembly_timeouts: AtomicU64,
    pub(crate) assembly_budget_closes: AtomicU64,
    pub(crate) admission_refused: AtomicU64,
    pub(crate) proxy_headers: AtomicU64,
    pub(crate) proxy_errors: AtomicU64,
    /// Bytes queued to this loop's connections and not yet written (kept by `Outbound`).
    pub(crate) outbound_queued: AtomicU64,
    pub(crate) handshake_bytes_in: AtomicU64,
    pub(crate) handshake_bytes_out: AtomicU64,
    /// From the accept to the 101 queued, on the loop's turn clock.
    pub(crate) handshake_duration: AtomicHistogram,
    pub(crate) recv_buffers_exhausted: AtomicU64,
    pub(crate) deflate_negotiated: AtomicU64,
    pub(crate) compressed_in: AtomicU64,
    pub(crate) compressed_out: AtomicU64,
    pub(crate) inflate_too_large: AtomicU64,
    pub(crate) tls_handshakes: AtomicU64,
    pub(crate) tls_resumed: AtomicU64,
    pub(crate) tls_failures: [AtomicU64; TlsFailure::ALL.len()],
}

impl LoopStats {
    /// Adds to a counter that other threads write too (a command refused by a full mailbox).
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds to a counter only its own loop's thread writes: a plain load and store, no locked
    /// instruction (several are bumped per echoed message; readers on other threads still see
    /// whole values, a moment late at most).
    pub(crate) fn count(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Takes from a gauge only its own loop's thread writes ([`LoopStats::count`]).
    pub(crate) fn uncount(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_sub(n), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections: self.connections.load(Ordering::Relaxed),
            accepted: get(&self.accepted),
            handshakes_ok: get(&self.handshakes_ok),
            handshakes_failed: get(&self.handshakes_failed),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            protocol_errors: get(&self.protocol_errors),
            slow_consumer_closes: get(&self.slow_consumer_closes),
            slow_consumer_drops: get(&self.slow_consumer_drops),
            accept_errors: get(&self.accept_errors),
            rejected_over_limit: get(&self.rejected_over_limit),
            queued_events: self.queued_events.load(Ordering::Relaxed),
            channel_len: 0,
            commands_queued: self.commands_queued.load(Ordering::Relaxed),
            commands_refused: get(&self.commands_refused),
            pongs_coalesced: get(&self.pongs_coalesced),
            read_pauses: get(&self.read_pauses),
            rate_limited: get(&self.rate_limited),
            assembly_timeouts: get(&self.assembly_timeouts),
            assembly_budget_closes: get(&self.assembly_budget_closes),
            admission_refused: get(&self.admission_refused),
            proxy_headers: get(&self.proxy_headers),
            proxy_errors: get(&self.proxy_errors),
            outbound_queued: get(&self.outbound_queued),
            handshake_bytes_in: get(&self.handshake_bytes_in),
            handshake_bytes_out: get(&self.handshake_bytes_out),
            handshake_duration: self.handshake_duration.snapshot(),
            publish_duration: Histogram::default(),
            backend: Backend::Auto,
            recv_buffers_exhausted: get(&self.recv_buffers_exhausted),
            deflate_negotiated: get(&self.deflate_negotiated),
            compressed_in: get(&self.compressed_in),
            compressed_out: get(&self.compressed_out),
            inflate_too_large: get(&self.inflate_too_large),
            tls_handshakes: get(&self.tls_handshakes),
            tls_resumed: get(&self.tls_resumed),
            tls_failures: TlsFailures(std::array::from_fn(|i| get(&self.tls_failures[i]))),
        }
    }
}

/// A snapshot of the server's counters, summed over loops ([`Handle::stats`](super::Handle::stats)) or of one loop
/// ([`Handle::loop_stats`](super::Handle::loop_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections held now (handshaking, open and closing).
    pub connections: usize,
    /// TCP connections accepted.
    pub accepted: u64,
    /// Upgrades completed.
    pub handshakes_ok: u64,
    /// Upgrades refused (malformed, rejected by the hook, timed out).
    pub handshakes_failed: u64,
    /// Data messages received.
    pub messages_in: u64,
    /// Data messages queued for sending.
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Connections failed for a protocol violation.
    pub protocol_errors: u64,
    /// Connections closed with 1008 for exceeding the outbound cap.
    pub slow_consumer_closes: u64,
    /// Messages dropped for a connection over the outbound cap.
    pub slow_consumer_drops: u64,
    /// `accept` failures (EMFILE and the like).
    pub accept_errors: u64,
    /// Connections refused for the connection caps.
    pub rejected_over_limit: u64,
    /// Events waiting for the workers in the loops' backlogs (reading pauses while non-zero).
    pub queued_events: usize,
    /// Events waiting in the worker shards' channels, summed (the loops share the shards).
    pub channel_len: usize,
    /// Commands waiting in the loops' command queues (as of each loop's last turn).
    pub commands_queued: usize,
    /// Commands refused because a loop's queue stayed full ([`CommandError::QueueFull`](super::CommandError::QueueFull)).
    pub commands_refused: u64,
    /// Pongs not sent because a newer ping arrived while the queue was full (RFC 6455 §5.5.3).
    pub pongs_coalesced: u64,
    /// Times reading from a connection paused because its outbound queue was full.
    pub read_pauses: u64,
    /// Connections closed with 1008 for exceeding the message rate limit.
    pub rate_limited: u64,
    /// Connections closed with 1008 for not finishing a fragmented message in time.
    pub assembly_timeouts: u64,
    /// Connections closed with 1008 because the loop's budget for partial messages was spent.
    pub assembly_budget_closes: u64,
    /// Connections refused by the [`Admission`](super::Admission) hook (answered with its HTTP status).
    pub admission_refused: u64,
    /// PROXY protocol headers read from trusted proxies.
    pub proxy_headers: u64,
    /// Connections from trusted proxies refused with 400 for a missing or malformed PROXY header.
    pub proxy_errors: u64,
    /// Bytes queued to connections and not yet written to their sockets (a gauge).
    pub outbound_queued: u64,
    /// Of [`Stats::bytes_in`], those read before the upgrade: requests and PROXY headers.
    pub handshake_bytes_in: u64,
    /// HTTP answers queued (the 101s, refusals and pages); [`Stats::bytes_out`] counts them
    /// once written, so the frames' share is the difference (give or take answers in flight).
    pub handshake_bytes_out: u64,
    /// Upgrades completed, by time from the accept to the 101 queued (the loop's turn clock,
    /// to 100 µs; a PROXY header's wait included).
    pub handshake_duration: Histogram,
    /// Publishes queued to at least one connection, by time from the publish call to the last
    /// write of the frame (the kernel took the last subscriber's copy; on io_uring its send
    /// completed; a subscriber that went with the frame unwritten ends it as well). Over all
    /// loops, also in [`Handle::loop_stats`](super::Handle::loop_stats).
    pub publish_duration: Histogram,
    /// The backend the loops run on (io_uring or epoll once started; [`Backend::Auto`] only in
    /// a `Stats` that did not come from a server).
    pub backend: Backend,
    /// io_uring: receives that found the loop's provided buffers all in use (`ENOBUFS`) and
    /// were armed again once buffers came back.
    pub recv_buffers_exhausted: u64,
    /// Upgrades that negotiated permessage-deflate.
    pub deflate_negotiated: u64,
    /// Compressed messages received (and inflated).
    pub compressed_in: u64,
    /// Messages queued compressed (a broadcast counts once per connection).
    pub compressed_out: u64,
    /// Connections closed with 1009 because a compressed message inflated past the message
    /// size limit (a deflate bomb).
    pub inflate_too_large: u64,
    /// TLS handshakes completed (full and resumed).
    pub tls_handshakes: u64,
    /// Of [`Stats::tls_handshakes`], those that resumed a session (a ticket or a cached id).
    pub tls_resumed: u64,
    /// TLS handshakes that failed, by reason.
    pub tls_failures: TlsFailures,
}

/// Why a TLS handshake failed (see [`TlsFailures`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The first bytes were not TLS (typically plain HTTP sent to the TLS port: answered with
    /// a 400 that says so).
    NotTls,
    /// The peer sent malformed or unexpected TLS messages.
    Protocol,
    /// No protocol version, cipher suite, key exchange or ALPN protocol in common.
    Incompatible,
    /// The peer refused the handshake with an alert (a client that does not trust the
    /// certificate says `bad_certificate` or `unknown_ca` this way).
    PeerAlert,
    /// The peer closed the connection before the handshake finished.
    Closed,
    /// The handshake (TLS and then the WebSocket upgrade) did not finish within the handshake
    /// timeout while TLS was still negotiating.
    Timeout,
}

impl TlsFailure {
    /// Every reason, in the order of [`TlsFailures`]' counts.
    pub const ALL: [TlsFailure; 6] = [
        TlsFailure::NotTls,
        TlsFailure::Protocol,
        TlsFailure::Incompatible,
        TlsFailure::PeerAlert,
        TlsFailure::Closed,
        TlsFailure::Timeout,
    ];

    /// The reason as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            TlsFailure::NotTls => "not_tls",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::PeerAlert => "peer_alert",
            TlsFailure::Closed => "closed",
            TlsFailure::Timeout => "timeout",
        }
    }

    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}

/// Failed TLS handshakes counted by [`TlsFailure`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsFailures([u64; TlsFailure::ALL.len()]);

impl TlsFailures {
    /// The failures for `reason`.
    pub fn get(&self, reason: TlsFailure) -> u64 {
        self.0[reason.slot()]
    }

    /// Every reason with its count.
    pub fn iter(&self) -> impl Iterator<Item = (TlsFailure, u64)> + '_ {
        TlsFailure::ALL.iter().map(|&reason| (reason, self.get(reason)))
    }

    /// All failures, whatever the reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Stats {
    pub(crate) fn add(&mut self, other: &Stats) {
        self.connections += other.connections;
        self.accepted += other.accepted;
        self.handshakes_ok += other.handshakes_ok;
        self.handshakes_failed += other.handshakes_failed;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.protocol_errors += other.protocol_errors;
        self.slow_consumer_closes += other.slow_consumer_closes;
        self.slow_consumer_drops += other.slow_consumer_drops;
        self.accept_errors += other.accept_errors;
        self.rejected_over_limit += other.rejected_over_limit;
        self.queued_events += other.queued_events;
        self.commands_queued += other.commands_queued;
        self.commands_refused += other.commands_refused;
        self.pongs_coalesced += other.pongs_coalesced;
        self.read_pauses += other.read_pauses;
        self.rate_limited += other.rate_limited;
        self.assembly_timeouts += other.assembly_timeouts;
        self.assembly_budget_closes += other.assembly_budget_closes;
        self.admission_refused += other.admission_refused;
        self.proxy_headers += other.proxy_headers;
        self.proxy_errors += other.proxy_errors;
        self.outbound_queued += other.outbound_queued;
        self.handshake_bytes_in += other.handshake_bytes_in;
        self.handshake_bytes_out += other.handshake_bytes_out;
        self.handshake_duration.add(&other.handshake_duration);
        self.recv_buffers_exhausted += other.recv_buffers_exhausted;
        self.deflate_negotiated += other.deflate_negotiated;
        self.compressed_in += other.compressed_in;
        self.compressed_out += other.compressed_out;
        self.inflate_too_large += other.inflate_too_large;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_resumed += other.tls_resumed;
        for (a, b) in self.tls_failures.0.iter_mut().zip(other.tls_failures.0) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_loops_add_up() {
        let a = AtomicHistogram::default();
        a.observe(Duration::from_micros(50));
        a.observe(Duration::from_micros(100)); // a bound is inclusive (Prometheus `le`)
        a.observe(Duration::from_millis(3));
        a.observe(Duration::from_secs(60)); // above every bound: only in +Inf
        let b = AtomicHistogram::default();
        b.observe(Duration::from_millis(3));
        let mut sum = a.snapshot();
        sum.add(&b.snapshot());
        assert_eq!(sum.count(), 5);
        assert_eq!(sum.sum(), Duration::from_micros(50 + 100 + 3000 + 3000) + Duration::from_secs(60));
        let cumulative: Vec<(Duration, u64)> = sum.cumulative().collect();
        assert_eq!(cumulative.len(), LATENCY_BUCKETS.len());
        assert_eq!(cumulative[0], (Duration::from_micros(100), 2));
        assert_eq!(cumulative[4], (Duration::from_micros(2500), 2));
        assert_eq!(cumulative[5], (Duration::from_millis(5), 4));
        assert_eq!(cumulative.last(), Some(&(Duration::from_secs(10), 4)));
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
