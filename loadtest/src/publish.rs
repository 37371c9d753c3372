//! `fanout`'s publisher: messages at a steady rate through the gateway's admin API (a plain
//! HTTP/1.1 keep-alive client on one thread) or through a command, each carrying its send time.
//!
//! A message's data is `{"t":T,"seq":S}` (`,"pad":"…"` with `--pad`): `T` is the send time in
//! nanoseconds of `CLOCK_MONOTONIC`, which every process of the machine shares, so a
//! subscriber in another process can subtract it from its own clock.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};
use serde::{Deserialize, Serialize};

use crate::stats::{bump, ratio, round3, Causes, Latency};
use crate::target::Target;

/// How long one publish request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response accepted from the admin API.
const MAX_RESPONSE: usize = 64 * 1024;

/// Nanoseconds of `CLOCK_MONOTONIC` (the same clock in every process of the machine).
pub(crate) fn now_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// Where messages are published.
#[derive(Clone, Debug)]
pub(crate) enum Publisher {
    /// `POST` to the admin API's `/v1/publish`.
    Http(HttpTarget),
    /// `sh -c CMD` per message.
    Command(String),
}

/// An HTTP endpoint.
#[derive(Clone, Debug)]
pub(crate) struct HttpTarget {
    pub(crate) addr: SocketAddr,
    host: String,
    path: String,
    api_key: Option<String>,
}

impl HttpTarget {
    /// Parses `http://HOST[:PORT][/PATH]` (the path defaults to `/v1/publish`), HOST an IP
    /// literal or a DNS name: the same rules as the `ws://` target.
    pub(crate) fn parse(url: &str, api_key: Option<String>) -> Result<Self, String> {
        let target =
            Target::parse_scheme(url, "http://", "/v1/publish", 80).map_err(|e| format!("--publish {e}"))?;
        Ok(HttpTarget { addr: target.addr, host: target.host, path: target.path, api_key })
    }
}

/// What to publish, how fast, for how long.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) publisher: Publisher,
    pub(crate) channel: String,
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    pub(crate) pad: usize,
}

impl Plan {
    /// The messages the plan sends if nothing stops it.
    pub(crate) fn planned(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).ceil().max(1.0) as u64
    }
}

/// What the publisher did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PublishStats {
    /// Messages sent (sequence numbers 0 to attempted − 1).
    pub(crate) attempted: u64,
    /// Messages the API accepted (HTTP 200, or the command's exit status 0).
    pub(crate) accepted: u64,
    pub(crate) failed: Causes,
    pub(crate) elapsed_s: f64,
    /// Accepted messages per second.
    pub(crate) rate: f64,
    /// One request: send to response (or the command's run time).
    pub(crate) request: Latency,
    /// The `queued` figure of the API's answers (local subscribers the message was queued to).
    pub(crate) queued_min: Option<u64>,
    pub(crate) queued_max: Option<u64>,
    /// How far the publisher fell behind its schedule at worst (slow answers), in ms.
    pub(crate) behind_max_ms: f64,
}

impl PublishStats {
    pub(crate) fn line(&self) -> String {
        let queued = match (self.queued_min, self.queued_max) {
            (Some(lo), Some(hi)) if lo == hi => format!(", queued to {lo} each"),
            (Some(lo), Some(hi)) => format!(", queued to {lo}..{hi}"),
            _ => String::new(),
        };
        format!(
            "{}/{} accepted in {:.2}s ({:.1}/s), failed {:?}{queued}; request {}",
            self.accepted,
            self.attempted,
            self.elapsed_s,
            self.rate,
            self.failed,
            self.request.summary().line()
        )
    }
}

/// Publishes per `plan` until done or `stop`. Blocking: run it on its own thread.
pub(crate) fn run(plan: &Plan, stop: &AtomicBool) -> PublishStats {
    let mut stats = PublishStats::default();
    let channel_json = serde_json::to_string(&plan.channel).unwrap_or_else(|_| "\"\"".into());
    let pad = if plan.pad > 0 { format!(",\"pad\":\"{}\"", "x".repeat(plan.pad)) } else { String::new() };
    let planned = plan.planned();
    let mut client = match &plan.publisher {
        Publisher::Http(target) => Some(HttpClient::new(target.clone())),
        Publisher::Command(_) => None,
    };
    let mut data = String::with_capacity(64 + plan.pad);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / plan.rate);
    let mut behind = Duration::ZERO;
    for seq in 0..planned {
        let due = start + interval.mul_f64(seq as f64);
        loop {
            if stop.load(Ordering::Relaxed) {
                return finish(stats, start);
            }
            let now = Instant::now();
            if now >= due {
                behind = behind.max(now - due);
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
        data.clear();
        let sent = Instant::now();
        let t = now_ns();
        let _ = write!(data, "{{\"t\":{t},\"seq\":{seq}{pad}}}");
        stats.attempted += 1;
        let result = match (&mut client, &plan.publisher) {
            (Some(client), _) => client.publish(&channel_json, &data),
            (None, Publisher::Command(cmd)) => run_command(cmd, &plan.channel, &data),
            (None, Publisher::Http(_)) => Err("no_client"),
        };
        stats.request.record(sent.elapsed());
        match result {
            Ok(queued) => {
                stats.accepted += 1;
                if let Some(q) = queued {
                    stats.queued_min = Some(stats.queued_min.map_or(q, |m| m.min(q)));
                    stats.queued_max = Some(stats.queued_max.map_or(q, |m| m.max(q)));
                }
            }
            Err(cause) => bump(&mut stats.failed, cause),
        }
    }
    stats.behind_max_ms = round3(behind.as_secs_f64() * 1000.0);
    finish(stats, start)
}

fn finish(mut stats: PublishStats, start: Instant) -> PublishStats {
    let elapsed = start.elapsed().as_secs_f64();
    stats.elapsed_s = round3(elapsed);
    stats.rate = round3(ratio(stats.accepted as f64, elapsed));
    stats
}

fn run_command(cmd: &str, channel: &str, data: &str) -> Result<Option<u64>, &'static str> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("THRONG_LOAD_CHANNEL", channel)
        .env("THRONG_LOAD_DATA", data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|_| "command_not_run")?;
    if status.success() {
        Ok(None)
    } else {
        Err("command_failed")
    }
}

/// A keep-alive HTTP/1.1 client for one endpoint; reconnects when the server closes.
pub(crate) struct HttpClient {
    target: HttpTarget,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl HttpClient {
    pub(crate) fn new(target: HttpTarget) -> Self {
        HttpClient {
            target,
            stream: None,
            request: Vec::with_capacity(512),
            response: Vec::with_capacity(1024),
        }
    }

    /// `POST {"channel":…,"data":…}`; `Ok(queued)` on a 200. `channel_json` is the channel as
    /// a JSON string, `data` a JSON value.
    pub(crate) fn publish(&mut self, channel_json: &str, data: &str) -> Result<Option<u64>, &'static str> {
        let body_len = "{\"channel\":,\"data\":}".len() + channel_json.len() + data.len();
        self.request.clear();
        let t = &self.target;
        let _ = write!(
            self.request,
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n",
            t.path, t.host
        );
        if let Some(key) = &t.api_key {
            let _ = write!(self.request, "Authorization: Bearer {key}\r\n");
        }
        let _ = write!(self.request, "\r\n{{\"channel\":{channel_json},\"data\":{data}}}");
        // A kept-alive connection the server has closed fails on first use: retry once on a new one.
        let reused = self.stream.is_some();
        match self.exchange() {
            Err(_) if reused => {
                self.stream = None;
                self.exchange()
            }
            other => other,
        }
        .and_then(|(status, keep_alive)| {
            if !keep_alive {
                self.stream = None;
            }
            if status == 200 {
                Ok(find_number(&self.response, b"\"queued\":"))
            } else if status == 401 {
                Err("http_401_unauthorized")
            } else if (400..500).contains(&status) {
                Err("http_4xx")
            } else {
                Err("http_error")
            }
        })
    }

    /// Sends the request, reads the response; `(status, keep-alive)`, the body in `response`.
    fn exchange(&mut self) -> Result<(u16, bool), &'static str> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.target.addr, HTTP_TIMEOUT)
                .map_err(|e| crate::net::cause(&e))?;
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(HTTP_TIMEOUT));
            let _ = stream.set_write_timeout(Some(HTTP_TIMEOUT));
            self.stream = Some(stream);
        }
        let result = self.exchange_on_stream();
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange_on_stream(&mut self) -> Result<(u16, bool), &'static str> {
        let stream = self.stream.as_mut().ok_or("no_connection")?;
        stream.write_all(&self.request).map_err(|e| crate::net::cause(&e))?;
        self.response.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(head) = parse_head(&self.response)? {
                let total = head.head_len + head.content_length;
                if self.response.len() >= total {
                    self.response.drain(..head.head_len);
                    self.response.truncate(head.content_length);
                    return Ok((head.status, head.keep_alive));
                }
            }
            if self.response.len() > MAX_RESPONSE {
                return Err("http_response_too_large");
            }
            match stream.read(&mut chunk) {
                Ok(0) => return Err("http_eof"),
                Ok(n) => self.response.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err("http_timeout");
                }
                Err(e) => return Err(crate::net::cause(&e)),
            }
        }
    }
}

struct Head {
    status: u16,
    head_len: usize,
    content_length: usize,
    keep_alive: bool,
}

/// The response head once complete (`Content-Length` bodies only, as the admin API sends).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(None) };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "http_bad_response")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok()).ok_or("http_bad_response")?;
    if !version.starts_with("HTTP/1.") {
        return Err("http_bad_response");
    }
    let mut content_length = 0;
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| "http_bad_response")?;
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("http_chunked_unsupported");
        }
    }
    Ok(Some(Head { status, head_len: end + 4, content_length, keep_alive }))
}

/// The unsigned integer right after `key` in `text` (spaces allowed), if any.
pub(crate) fn find_number(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &text[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits = rest[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&rest[start..start + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn urls_follow_the_target_rules() {
        let t = HttpTarget::parse("http://127.0.0.1:9090/v1/publish", None).unwrap();
        assert_eq!(
            (t.addr.port(), t.path.as_str(), t.host.as_str()),
            (9090, "/v1/publish", "127.0.0.1:9090")
        );
        let t = HttpTarget::parse("http://localhost:9090", None).unwrap();
        assert_eq!(t.path, "/v1/publish");
        assert!(t.addr.ip().is_loopback());
        assert!(HttpTarget::parse("http://10.1.2.3:9090/v1/publish", None).is_ok());
        for bad in ["https://127.0.0.1/", "http://bad!name/", "127.0.0.1", "http://127.0.0.1:x/"] {
            let err = HttpTarget::parse(bad, None).unwrap_err();
            assert!(err.starts_with("--publish "), "{bad}: {err}");
        }
    }

    #[test]
    fn numbers_and_heads() {
        assert_eq!(find_number(br#"{"channel":"c","queued": 15000}"#, b"\"queued\":"), Some(15000));
        assert_eq!(find_number(br#"{"seq":12,"t":99}"#, b"\"t\":"), Some(99));
        assert_eq!(find_number(br#"{"ts":5}"#, b"\"t\":"), None);
        assert_eq!(find_number(br#"{"t":"x"}"#, b"\"t\":"), None);
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{}").unwrap().unwrap();
        assert_eq!((head.status, head.content_length, head.keep_alive), (200, 12, true));
        let head = parse_head(b"HTTP/1.1 503 X\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }

    /// A fake admin API on a loopback port: answers each request with `queued: 7`, closes the
    /// connection after the second request to check that the client reconnects.
    #[test]
    fn publishes_at_the_rate_over_keep_alive_and_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for _ in 0..3 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut served = 0;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while served < 2 {
                    let n = stream.read(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = find_number(head.to_ascii_lowercase().as_bytes(), b"content-length:")
                            .unwrap() as usize;
                        if buf.len() < end + 4 + len {
                            break;
                        }
                        bodies.push(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string());
                        buf.drain(..end + 4 + len);
                        served += 1;
                        let body = "{\"channel\":\"c\",\"queued\":7}";
                        let close = if served == 2 { "Connection: close\r\n" } else { "" };
                        write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{close}\r\n{body}",
                            body.len()
                        )
                        .unwrap();
                    }
                }
                if bodies.len() >= 5 {
                    break;
                }
            }
            bodies
        });
        let plan = Plan {
            publisher: Publisher::Http(
                HttpTarget::parse(&format!("http://{addr}/v1/publish"), None).unwrap(),
            ),
            channel: "c".into(),
            rate: 50.0,
            duration: Duration::from_millis(100),
            pad: 3,
        };
        let stats = run(&plan, &AtomicBool::new(false));
        assert_eq!((stats.attempted, stats.accepted), (5, 5), "{stats:?}");
        assert_eq!((stats.queued_min, stats.queued_max), (Some(7), Some(7)));
        assert!(stats.elapsed_s >= 0.075, "paced at 50/s: {stats:?}");
        let bodies = server.join().unwrap();
        assert_eq!(bodies.len(), 5);
        for (seq, body) in bodies.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["channel"], "c");
            assert_eq!(v["data"]["seq"], seq as u64);
            assert_eq!(v["data"]["pad"], "xxx");
            assert!(v["data"]["t"].as_u64().unwrap() > 0);
        }
    }

    #[test]
    fn command_publisher_sees_the_data() {
        let plan = Plan {
            publisher: Publisher::Command("test \"$THRONG_LOAD_CHANNEL\" = ch && case \"$THRONG_LOAD_DATA\" in *seq*) ;; *) exit 1;; esac".into()),
            channel: "ch".into(),
            rate: 100.0,
            duration: Duration::from_millis(20),
            pad: 0,
        };
        let stats = run(&plan, &AtomicBool::new(false));
        assert_eq!((stats.attempted, stats.accepted), (2, 2), "{stats:?}");
    }
}
