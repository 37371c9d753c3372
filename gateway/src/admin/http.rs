//! Just enough HTTP/1.1 for the admin API: `httparse` for the head, `Content-Length` bodies
//! (no chunked uploads), keep-alive, `Expect: 100-continue`, and hard limits so a client
//! cannot make a thread hold unbounded memory or time: a request has one deadline from its
//! first byte to its last, however the bytes trickle in, and an idle connection is closed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest request head accepted; more is 431.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The largest body accepted; more is 413.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// How long requests may take; from `admin_request_timeout` and `admin_idle_timeout`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// From a request's first byte to its last.
    pub(crate) request: Duration,
    /// Between requests on a keep-alive connection (and before the first).
    pub(crate) idle: Duration,
}

/// A byte stream whose reads can be given a timeout: the socket, or bytes in memory for the
/// fuzz target and the unit tests.
pub(crate) trait Stream: Read + Write {
    /// Like [`TcpStream::set_read_timeout`]; `timeout` is never zero.
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        TcpStream::set_read_timeout(self, Some(timeout))
    }
}

/// One request, body included.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) keep_alive: bool,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Vec<(&'static str, String)>,
    /// An answer to HEAD: the head says the body's length, the body is not sent.
    pub(crate) head_only: bool,
}

impl Response {
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Response { status, content_type: "application/json", body, headers: Vec::new(), head_only: false }
    }

    /// `{"error": code, "message": message}` with `status`.
    pub(crate) fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": code, "message": message.into() }))
    }

    pub(crate) fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, body: body.into(), headers: Vec::new(), head_only: false }
    }

    /// The same answer for a HEAD request.
    pub(crate) fn without_body(mut self) -> Response {
        self.head_only = true;
        self
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn write(&self, out: &mut impl Write, keep_alive: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            self.status,
            phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !keep_alive {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        out.write_all(&bytes)
    }
}

fn phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed or the socket failed: just close.
    Gone,
    /// No request started within the idle limit: close (counted).
    Idle,
    /// A request started but did not arrive whole within the request limit: 408 (counted).
    Deadline,
    /// A request that must be answered with this error, then the connection closed.
    Refuse(Response),
}

/// The time left until `deadline`, `None` once it has passed.
fn left(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

/// Reads one request. `buf` carries bytes of a pipelined next request between calls. The idle
/// limit runs until the request's first byte; from then on the request limit runs once, for
/// head and body together, so a peer sending a byte now and then is cut all the same.
pub(crate) fn read_request(
    stream: &mut impl Stream,
    buf: &mut Vec<u8>,
    limits: &Limits,
) -> Result<Request, ReadError> {
    let idle_until = Instant::now() + limits.idle;
    let mut deadline = (!buf.is_empty()).then(|| Instant::now() + limits.request);
    let too_large =
        || ReadError::Refuse(Response::error(431, "header_too_large", "request head over 16 KiB"));
    // Where the search for the head's end goes on from.
    let mut scanned = 0;
    let (head_len, mut request, content_length) = loop {
        // Parse only once a blank line may have arrived: a head trickled in byte by byte is
        // then parsed a few times, not once per byte.
        let mut parsed = None;
        while let Some(end) = head_end(buf, scanned) {
            scanned = end;
            // Only the bytes up to a blank line: what comes after it cannot change the verdict
            // on this head, however the bytes were split into reads.
            if let Some(head) = parse_head(&buf[..end])? {
                parsed = Some(head);
                break;
            }
        }
        scanned = scanned.max(buf.len());
        if let Some(parsed) = parsed {
            if parsed.0 > MAX_HEAD {
                return Err(too_large());
            }
            break parsed;
        }
        if buf.len() >= MAX_HEAD {
            return Err(too_large());
        }
        let Some(timeout) = left(deadline.unwrap_or(idle_until)) else {
            return Err(if deadline.is_some() { ReadError::Deadline } else { ReadError::Idle });
        };
        stream.set_read_timeout(timeout).map_err(|_| ReadError::Gone)?;
        if read_some(stream, buf)? > 0 && deadline.is_none() {
            deadline = Some(Instant::now() + limits.request);
        }
    };
    let deadline = deadline.unwrap_or_else(|| Instant::now() + limits.request);
    buf.drain(..head_len);
    if content_length > MAX_BODY {
        let text = format!("body of {content_length} bytes is over the 1 MiB limit");
        return Err(ReadError::Refuse(Response::error(413, "body_too_large", text)));
    }
    if content_length > buf.len()
        && request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|_| ReadError::Gone)?;
    }
    while buf.len() < content_length {
        let timeout = left(deadline).ok_or(ReadError::Deadline)?;
        stream.set_read_timeout(timeout).map_err(|_| ReadError::Gone)?;
        read_some(stream, buf)?;
    }
    request.body = buf.drain(..content_length).collect();
    Ok(request)
}

/// The end of the first empty line in `buf` (`\n\n` or `\n\r\n`: httparse accepts both line
/// ends) that ends after `from`: where a head may end. Parsing only there means a head trickled
/// in byte by byte is parsed a few times, not once per byte.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(2);
    (start..buf.len()).find_map(|i| {
        let end = match buf.get(i..)? {
            [b'\n', b'\n', ..] => i + 2,
            [b'\n', b'\r', b'\n', ..] => i + 3,
            _ => return None,
        };
        (end > from).then_some(end)
    })
}

/// Reads what is there into `buf`: `Ok(0)` when a timeout passed (the caller checks its
/// deadline), `Gone` at the end of the stream or on an error.
fn read_some(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, ReadError> {
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(ReadError::Gone),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(0)
            }
            Err(_) => return Err(ReadError::Gone),
        }
    }
}
/// `Some((head length, request without body, content length))` once the head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request, usize)>, ReadError> {
    let bad = |message: &str| ReadError::Refuse(Response::error(400, "bad_request", message));
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ReadError::Refuse(Response::error(431, "header_too_large", "more than 64 headers")));
        }
        Err(e) => return Err(bad(&format!("malformed request: {e}"))),
    };
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(bad("malformed request line"));
    };
    let headers: Vec<(String, String)> = (parsed.headers.iter())
        .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).trim().to_owned()))
        .collect();
    let find =
        |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    if find("transfer-encoding").is_some() {
        return Err(ReadError::Refuse(Response::error(
            501,
            "not_implemented",
            "chunked bodies are not supported; send Content-Length",
        )));
    }
    let content_length = match find("content-length") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| bad("invalid Content-Length"))?,
    };
    let connection = find("connection").map(str::to_ascii_lowercase);
    let keep_alive = match version {
        1 => connection.as_deref() != Some("close"),
        _ => connection.as_deref() == Some("keep-alive"),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let request = Request { method: method.to_owned(), path, query, headers, body: Vec::new(), keep_alive };
    Ok(Some((head_len, request, content_length)))
}

/// Bytes in memory handed out at most `chunk` at a time, as a socket might; the end reads as
/// the peer closing. For the fuzz target and the tests.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
    written: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl Write for Chunked<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.written += bytes.len();
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Chunked<'_> {
    fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// What [`read_all`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Reading {
    /// Each request read, in order: method, path, query, body length.
    pub requests: Vec<(String, String, Option<String>, usize)>,
    /// The status of the refusal that ended the stream; `None` when the input ran out.
    pub refused: Option<u16>,
}

/// Reads requests from `input` handed over at most `chunk` bytes at a time (at least 1), the
/// way the admin listener reads a keep-alive connection, until the input runs out or a
/// request is refused. For the fuzz target: the result must not depend on `chunk`.
pub fn read_all(input: &[u8], chunk: usize) -> Reading {
    let mut stream = Chunked { data: input, chunk: chunk.max(1), written: 0 };
    let limits = Limits { request: Duration::from_secs(3600), idle: Duration::from_secs(3600) };
    let mut buf = Vec::new();
    let mut requests = Vec::new();
    loop {
        match read_request(&mut stream, &mut buf, &limits) {
            Ok(r) => requests.push((r.method, r.path, r.query, r.body.len())),
            Err(ReadError::Refuse(response)) => return Reading { requests, refused: Some(response.status) },
            Err(ReadError::Gone | ReadError::Idle | ReadError::Deadline) => {
                return Reading { requests, refused: None };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_requests_with_bodies_and_continue() {
        let input = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\
                      Expect: 100-continue\r\n\r\nabcGET /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let want = Reading {
            requests: vec![
                ("GET".into(), "/a".into(), Some("x=1".into()), 0),
                ("POST".into(), "/b".into(), None, 3),
            ],
            refused: Some(501),
        };
        for chunk in [1, 2, 7, 8192, input.len()] {
            assert_eq!(read_all(input, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn head_limit_does_not_depend_on_how_the_bytes_arrive() {
        let mut input = b"GET / HTTP/1.1\r\nX: ".to_vec();
        input.resize(MAX_HEAD + 10, b'a');
        input.extend_from_slice(b"\r\n\r\n");
        for chunk in [1, 100, input.len()] {
            assert_eq!(read_all(&input, chunk).refused, Some(431), "chunk {chunk}");
        }
        // Found by the fuzz target: an error after a leading blank line, with no blank line
        // after it, was seen only when the bytes came in one read.
        let input = b"\r\n\r\nGET /v1/stats HTTP/1.1\r0.\n";
        assert_eq!(read_all(input, 1), read_all(input, input.len()));
        let big = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert_eq!(read_all(big.as_bytes(), 5).refused, Some(413));
        assert_eq!(read_all(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 5).refused, Some(400));
    }

    /// A stream that never delivers the next byte: every read times out.
    struct Stalled;
    impl Read for Stalled {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(5));
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
    impl Write for Stalled {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Stream for Stalled {
        fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn idle_and_request_deadlines() {
        let limits = Limits { request: Duration::from_millis(30), idle: Duration::from_millis(30) };
        let err = read_request(&mut Stalled, &mut Vec::new(), &limits).unwrap_err();
        assert!(matches!(err, ReadError::Idle), "{err:?}");
        // A started request (bytes carried over) runs on the request deadline.
        let mut started = b"GET / HT".to_vec();
        let err = read_request(&mut Stalled, &mut started, &limits).unwrap_err();
        assert!(matches!(err, ReadError::Deadline), "{err:?}");
    }
}
