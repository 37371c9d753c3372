//! Just enough HTTP/1.1 for the admin API: `httparse` for the head, `Content-Length` bodies
//! (no chunked uploads), keep-alive, `Expect: 100-continue`, and hard limits so a client
//! cannot make a thread hold unbounded memory.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The largest request head accepted; more is 431.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The largest body accepted; more is 413.
pub(crate) const MAX_BODY: usize = 1 << 20;
/// How long a keep-alive connection may sit idle between requests.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request may take to arrive once it has started.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Response {
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Response { status, content_type: "application/json", body, headers: Vec::new() }
    }

    /// `{"error": code, "message": message}` with `status`.
    pub(crate) fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": code, "message": message.into() }))
    }

    pub(crate) fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, body: body.into(), headers: Vec::new() }
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
        bytes.extend_from_slice(&self.body);
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
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Why no request could be read.
pub(crate) enum ReadError {
    /// The peer closed, timed out between requests, or the socket failed: just close.
    Gone,
    /// A request that must be answered with this error, then the connection closed.
    Refuse(Response),
}

/// Reads one request. `buf` carries bytes of a pipelined next request between calls.
pub(crate) fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Request, ReadError> {
    let gone = |_| ReadError::Gone;
    let (head_len, mut request, content_length) = loop {
        if let Some(parsed) = parse_head(buf)? {
            break parsed;
        }
        if buf.len() >= MAX_HEAD {
            return Err(ReadError::Refuse(Response::error(
                431,
                "header_too_large",
                "request head over 16 KiB",
            )));
        }
        let timeout = if buf.is_empty() { IDLE_TIMEOUT } else { REQUEST_TIMEOUT };
        stream.set_read_timeout(Some(timeout)).map_err(gone)?;
        if read_some(stream, buf)? == 0 {
            return Err(ReadError::Gone);
        }
    };
    buf.drain(..head_len);
    if content_length > MAX_BODY {
        let text = format!("body of {content_length} bytes is over the 1 MiB limit");
        return Err(ReadError::Refuse(Response::error(413, "body_too_large", text)));
    }
    if content_length > buf.len()
        && request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(gone)?;
    }
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(gone)?;
    while buf.len() < content_length {
        if read_some(stream, buf)? == 0 {
            return Err(ReadError::Gone);
        }
    }
    request.body = buf.drain(..content_length).collect();
    Ok(request)
}

fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, ReadError> {
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
