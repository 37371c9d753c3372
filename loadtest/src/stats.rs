//! Counters and latency histograms, and their serialisable summaries.
//!
//! A [`Latency`] serialises as its percentiles; in a child process of `--procs` it also carries
//! the whole histogram (HdrHistogram V2, base64) so the parent can add the histograms and
//! compute exact percentiles over every process.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer as HistDeserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Failure counts by cause (see [`crate::net::cause`] and [`crate::conn::End`]).
pub(crate) type Causes = BTreeMap<String, u64>;

/// Adds one to `cause` (allocates only the first time a cause is seen).
pub(crate) fn bump(causes: &mut Causes, cause: &str) {
    match causes.get_mut(cause) {
        Some(n) => *n += 1,
        None => {
            causes.insert(cause.to_owned(), 1);
        }
    }
}

/// Adds `other`'s counts to `into`.
pub(crate) fn merge_causes(into: &mut Causes, other: Causes) {
    for (cause, n) in other {
        *into.entry(cause).or_default() += n;
    }
}

/// Bytes and data messages through a loop's sockets, both ways. Counted by the connections
/// (`conn.rs`), so both backends count the same way.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Traffic {
    /// Bytes written to the sockets: handshakes, frame headers, payloads, control frames.
    pub(crate) wire_bytes_sent: u64,
    /// Bytes read from the sockets.
    pub(crate) wire_bytes_received: u64,
    /// Data messages queued.
    pub(crate) messages_sent: u64,
    /// Data messages received whole.
    pub(crate) messages_received: u64,
    /// Of the messages sent, those sent compressed (permessage-deflate, `--deflate`).
    pub(crate) compressed_sent: u64,
    /// Of the messages received, those that arrived compressed.
    pub(crate) compressed_received: u64,
    /// The data messages' payload bytes as framed: compressed where compressed.
    pub(crate) payload_bytes_sent: u64,
    pub(crate) payload_bytes_received: u64,
    /// The same messages' payloads uncompressed (what the application sent and received).
    pub(crate) uncompressed_bytes_sent: u64,
    pub(crate) uncompressed_bytes_received: u64,
    /// `payload_bytes / uncompressed_bytes` each way: below 1 when compression saved bytes (1
    /// without compression, 0 without messages).
    #[serde(default)]
    pub(crate) ratio_sent: f64,
    #[serde(default)]
    pub(crate) ratio_received: f64,
    /// `wss://`: TLS handshakes completed, and of them those that resumed an earlier session
    /// (`--tls-resume on`).
    #[serde(default)]
    pub(crate) tls_handshakes: u64,
    #[serde(default)]
    pub(crate) tls_resumed: u64,
}

impl Traffic {
    /// Adds another loop's or process's counts.
    pub(crate) fn merge(&mut self, other: &Traffic) {
        self.wire_bytes_sent += other.wire_bytes_sent;
        self.wire_bytes_received += other.wire_bytes_received;
        self.messages_sent += other.messages_sent;
        self.messages_received += other.messages_received;
        self.compressed_sent += other.compressed_sent;
        self.compressed_received += other.compressed_received;
        self.payload_bytes_sent += other.payload_bytes_sent;
        self.payload_bytes_received += other.payload_bytes_received;
        self.uncompressed_bytes_sent += other.uncompressed_bytes_sent;
        self.uncompressed_bytes_received += other.uncompressed_bytes_received;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_resumed += other.tls_resumed;
        self.finish();
    }

    /// The counts since `earlier` (a copy taken before), for a measured window.
    pub(crate) fn since(&self, earlier: &Traffic) -> Traffic {
        let mut out = Traffic {
            wire_bytes_sent: self.wire_bytes_sent - earlier.wire_bytes_sent,
            wire_bytes_received: self.wire_bytes_received - earlier.wire_bytes_received,
            messages_sent: self.messages_sent - earlier.messages_sent,
            messages_received: self.messages_received - earlier.messages_received,
            compressed_sent: self.compressed_sent - earlier.compressed_sent,
            compressed_received: self.compressed_received - earlier.compressed_received,
            payload_bytes_sent: self.payload_bytes_sent - earlier.payload_bytes_sent,
            payload_bytes_received: self.payload_bytes_received - earlier.payload_bytes_received,
            uncompressed_bytes_sent: self.uncompressed_bytes_sent - earlier.uncompressed_bytes_sent,
            uncompressed_bytes_received: self.uncompressed_bytes_received
                - earlier.uncompressed_bytes_received,
            tls_handshakes: self.tls_handshakes - earlier.tls_handshakes,
            tls_resumed: self.tls_resumed - earlier.tls_resumed,
            ..Traffic::default()
        };
        out.finish();
        out
    }

    /// Computes the ratios.
    pub(crate) fn finish(&mut self) {
        let r = |framed: u64, plain: u64| round3(ratio(framed as f64, plain as f64));
        self.ratio_sent = r(self.payload_bytes_sent, self.uncompressed_bytes_sent);
        self.ratio_received = r(self.payload_bytes_received, self.uncompressed_bytes_received);
    }

    /// `sent 1.2 MiB (N messages, payload … of … uncompressed = 0.31), received …` for the table.
    pub(crate) fn line(&self) -> String {
        let side = |wire: u64, messages: u64, compressed: u64, payload: u64, plain: u64, r: f64| {
            let mut out = format!("{} on the wire, {messages} messages", fmt_bytes(wire));
            if compressed > 0 {
                out.push_str(&format!(
                    " ({compressed} compressed: payload {} of {} = {r:.3})",
                    fmt_bytes(payload),
                    fmt_bytes(plain)
                ));
            }
            out
        };
        let tls = match self.tls_handshakes {
            0 => String::new(),
            n => format!("; TLS: {n} handshakes, {} resumed", self.tls_resumed),
        };
        format!(
            "sent {}; received {}{tls}",
            side(
                self.wire_bytes_sent,
                self.messages_sent,
                self.compressed_sent,
                self.payload_bytes_sent,
                self.uncompressed_bytes_sent,
                self.ratio_sent
            ),
            side(
                self.wire_bytes_received,
                self.messages_received,
                self.compressed_received,
                self.payload_bytes_received,
                self.uncompressed_bytes_received,
                self.ratio_received
            ),
        )
    }
}

/// `512 B`, `12.3 KiB`, `4.56 MiB`, `1.23 GiB`.
pub(crate) fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

thread_local! {
    /// Whether [`Latency`] values serialised by this thread carry their whole histogram (set
    /// where a child of `--procs` or `--threads` writes its report; per thread, so that the
    /// parent's own report, written by another thread of the same process, stays a summary).
    static EXPORT_HISTOGRAMS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes every [`Latency`] this thread serialises from now on carry its histogram.
pub(crate) fn export_histograms() {
    EXPORT_HISTOGRAMS.with(|export| export.set(true));
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, three significant digits.
#[derive(Clone)]
pub(crate) struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.summary().fmt(f)
    }
}

impl Latency {
    pub(crate) fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds");
        Latency { hist }
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        self.record_ns(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records `nanos` (clamped to the histogram's range; never allocates).
    pub(crate) fn record_ns(&mut self, nanos: u64) {
        self.hist.saturating_record(nanos.max(1));
    }

    /// Forgets every value recorded (keeps the allocation).
    pub(crate) fn clear(&mut self) {
        self.hist.reset();
    }

    /// Adds `other`'s counts.
    pub(crate) fn add(&mut self, other: &Latency) {
        // Same bounds on both sides (V2 keeps them), so this cannot fail; saturate if it does.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// The histogram, for charts.
    pub(crate) fn hist(&self) -> &Histogram<u64> {
        &self.hist
    }

    pub(crate) fn summary(&self) -> Percentiles {
        let us = |nanos: u64| round3(nanos as f64 / 1000.0);
        let h = &self.hist;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean_us: round3(h.mean() / 1000.0),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    /// HdrHistogram V2 (uncompressed), base64.
    pub(crate) fn encode(&self) -> String {
        let mut bytes = Vec::new();
        // Serialising into a Vec cannot fail.
        let _ = V2Serializer::new().serialize(&self.hist, &mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub(crate) fn decode(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| e.to_string())?;
        let hist: Histogram<u64> =
            HistDeserializer::new().deserialize(&mut &bytes[..]).map_err(|e| format!("{e:?}"))?;
        let mut latency = Latency::new();
        latency.add(&Latency { hist });
        Ok(latency)
    }
}

#[derive(Serialize)]
struct LatencyOut {
    #[serde(flatten)]
    summary: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    hist: Option<String>,
}

#[derive(Deserialize)]
struct LatencyIn {
    hist: Option<String>,
}

impl Serialize for Latency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let hist = EXPORT_HISTOGRAMS.with(std::cell::Cell::get).then(|| self.encode());
        LatencyOut { summary: self.summary(), hist }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let input = LatencyIn::deserialize(deserializer)?;
        match input.hist {
            Some(text) => Latency::decode(&text).map_err(serde::de::Error::custom),
            None => Ok(Latency::new()),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) mean_us: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
}

impl Percentiles {
    /// `p50 … p99.9 … max` for a summary line.
    pub(crate) fn line(&self) -> String {
        format!(
            "n={} p50={} p90={} p99={} p99.9={} max={}",
            self.count,
            fmt_us(self.p50_us),
            fmt_us(self.p90_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us)
        )
    }
}

/// `850µs`, `12.3ms`, `1.20s`.
pub(crate) fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// Rounds to three decimals for the JSON output.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `a / b`, 0 when `b` is 0.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut l = Latency::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let p = l.summary();
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.max_us - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Latency::new().summary().count, 0);
    }

    #[test]
    fn histograms_survive_base64_and_add_exactly() {
        let (mut a, mut b, mut both) = (Latency::new(), Latency::new(), Latency::new());
        for us in 1..=500u64 {
            a.record(Duration::from_micros(us));
            both.record(Duration::from_micros(us));
        }
        for ms in 1..=50u64 {
            b.record(Duration::from_millis(ms));
            both.record(Duration::from_millis(ms));
        }
        let mut merged = Latency::decode(&a.encode()).unwrap();
        merged.add(&Latency::decode(&b.encode()).unwrap());
        let (m, w) = (merged.summary(), both.summary());
        assert_eq!(m.count, 550);
        assert_eq!((m.p50_us, m.p99_us, m.max_us), (w.p50_us, w.p99_us, w.max_us));
        assert!(Latency::decode("not base64!").is_err());
    }

    #[test]
    fn causes_count_and_merge() {
        let mut a = Causes::new();
        bump(&mut a, "refused");
        bump(&mut a, "refused");
        let mut b = Causes::new();
        bump(&mut b, "refused");
        bump(&mut b, "timeout");
        merge_causes(&mut a, b);
        assert_eq!(a.get("refused"), Some(&3));
        assert_eq!(a.get("timeout"), Some(&1));
    }
}
