//! Step 0 of the pipeline on the raw connection (COMPAT §1.2): request-head
//! size and the client timeout for the request line and headers.
//!
//! Why a stream wrapper: actix-http decides these cases itself, before any
//! handler runs, and answers differently from the contract — an oversized head
//! gets `431` with an empty body, a slow head gets `408` with an empty body.
//! The contract wants `431` with the pretty JSON body for every client (§1.3)
//! and a slow head disconnected without an answer. So every accepted TCP
//! connection is wrapped in [`Guarded`], which follows the HTTP/1.1 framing of
//! the bytes it hands to actix:
//!
//! - a head larger than `SHOPCHAT_MAX_HEADER_BYTES` (below actix's own 128 KiB
//!   buffer) or with more header fields than actix accepts ([`MAX_HEADERS`]) is
//!   never completed for actix: it sees the end of the stream, finishes the
//!   answers it owes for earlier requests, and when it shuts the connection
//!   down the wrapper writes the contract's 431 answer first;
//! - a head not complete within `SHOPCHAT_CLIENT_TIMEOUT` (from the connection
//!   start, or from the first byte of a later request) ends the stream without
//!   an answer;
//! - a body is given the same timeout plus a grace period as a backstop: the
//!   handler's own timeout (`pipeline::read_body`, 408 JSON) fires first for
//!   bodies shopchat reads; bodies nobody reads are cut off.
//!
//! Framing the tracker does not follow exactly like actix (upgrade, CONNECT,
//! duplicate or malformed length headers, odd chunk syntax) switches it to
//! pass-through for the rest of the connection: actix then answers by its own
//! rules (400 and close for malformed requests). Body size (413) is decided
//! by the pipeline, which sees the parsed request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::http::origin;
use crate::laravel::json::to_php_json_pretty;

/// actix-http parses at most this many header fields; more is its `431`.
pub const MAX_HEADERS: usize = 96;

/// Extra time a body gets beyond the client timeout before the connection is
/// cut, so the handler's own 408 answer always comes first.
const BODY_GRACE: Duration = Duration::from_secs(2);

/// How long, and how much, a rejected client's remaining input is read and
/// discarded after the 431 answer, so that closing the socket does not reset
/// the connection before the client has read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head_bytes: usize,
    pub client_timeout: Duration,
}

/// Where in the request stream the tracker is.
#[derive(Debug)]
enum Phase {
    /// Reading a request head; `buf` holds it so far (leading empty lines
    /// dropped, like httparse does).
    Head {
        buf: Vec<u8>,
        line_start: usize,
    },
    /// A `Content-Length` body.
    Body {
        remaining: u64,
    },
    Chunked(Chunk),
    /// Framing not followed (see module docs): no more checks.
    Passthrough,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// The chunk-size line: value so far, whether a digit was seen, whether
    /// we are in a chunk extension.
    Size {
        size: u64,
        digits: bool,
        ext: bool,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Trailer section: length of the current line.
    Trailer {
        line: usize,
    },
}

/// What one read means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The head that started at byte `keep` of this read is too large: hand
    /// actix only `..keep`, then end the stream and answer 431.
    TooLarge {
        keep: usize,
    },
}

/// The framing tracker: pure, fed with the bytes as they are read.
#[derive(Debug)]
pub struct Tracker {
    limits: HeadLimits,
    phase: Phase,
}

impl Tracker {
    pub fn new(limits: HeadLimits) -> Tracker {
        Tracker {
            limits,
            phase: Phase::Head {
                buf: Vec::new(),
                line_start: 0,
            },
        }
    }

    /// Whether a request head is in progress (something of it was read).
    pub fn head_started(&self) -> bool {
        matches!(&self.phase, Phase::Head { buf, .. } if !buf.is_empty())
    }

    pub fn in_head(&self) -> bool {
        matches!(self.phase, Phase::Head { .. })
    }

    pub fn in_body(&self) -> bool {
        matches!(self.phase, Phase::Body { .. } | Phase::Chunked(_))
    }

    pub fn passthrough(&self) -> bool {
        matches!(self.phase, Phase::Passthrough)
    }

    /// Feeds the bytes of one read.
    pub fn feed(&mut self, data: &[u8]) -> Verdict {
        let mut i = 0;
        while i < data.len() {
            match &mut self.phase {
                Phase::Passthrough => return Verdict::Pass,
                Phase::Body { remaining } => {
                    let take = (*remaining).min((data.len() - i) as u64);
                    *remaining -= take;
                    i += take as usize;
                    if *remaining == 0 {
                        self.phase = new_head();
                    }
                }
                Phase::Chunked(state) => {
                    let (next, used) = step_chunked(*state, &data[i..]);
                    i += used;
                    self.phase = match next {
                        Some(Some(state)) => Phase::Chunked(state),
                        Some(None) => new_head(),
                        None => Phase::Passthrough,
                    };
                }
                Phase::Head { buf, line_start } => {
                    let head_began_here = buf.is_empty();
                    let start_of_head = i;
                    let mut complete = false;
                    while i < data.len() {
                        let b = data[i];
                        i += 1;
                        buf.push(b);
                        if b == b'\n' {
                            let line = &buf[*line_start..buf.len() - 1];
                            let line = line.strip_suffix(b"\r").unwrap_or(line);
                            if line.is_empty() {
                                if *line_start == 0 {
                                    // An empty line before the request line is skipped.
                                    buf.clear();
                                    continue;
                                }
                                complete = true;
                                break;
                            }
                            *line_start = buf.len();
                        }
                        if buf.len() > self.limits.max_head_bytes {
                            break;
                        }
                    }
                    let keep = if head_began_here { start_of_head } else { 0 };
                    if buf.len() > self.limits.max_head_bytes {
                        return Verdict::TooLarge { keep };
                    }
                    if complete {
                        match framing(buf) {
                            Framing::TooManyHeaders => return Verdict::TooLarge { keep },
                            Framing::Length(0) => self.phase = new_head(),
                            Framing::Length(n) => self.phase = Phase::Body { remaining: n },
                            Framing::Chunked => {
                                self.phase = Phase::Chunked(Chunk::Size {
                                    size: 0,
                                    digits: false,
                                    ext: false,
                                })
                            }
                            Framing::Unknown => self.phase = Phase::Passthrough,
                        }
                    }
                }
            }
        }
        Verdict::Pass
    }
}

fn new_head() -> Phase {
    Phase::Head {
        buf: Vec::new(),
        line_start: 0,
    }
}

enum Framing {
    Length(u64),
    Chunked,
    TooManyHeaders,
    Unknown,
}

/// The body framing of a complete head, by the rules actix-http applies
/// (RFC 9112 §6.3): chunked wins over Content-Length, Transfer-Encoding only
/// counts in HTTP/1.1, no body without either.
fn framing(head: &[u8]) -> Framing {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Framing::TooManyHeaders,
        _ => return Framing::Unknown,
    }
    if req.method == Some("CONNECT") {
        return Framing::Unknown;
    }
    let http11 = req.version == Some(1);
    let (mut te, mut cl) = (None, None);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if te.replace(h.value).is_some() {
                return Framing::Unknown;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if cl.replace(h.value).is_some() {
                return Framing::Unknown;
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            return Framing::Unknown;
        }
    }
    if let (true, Some(te)) = (http11, te) {
        return match std::str::from_utf8(te).map(str::trim) {
            Ok(v) if v.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::Unknown,
        };
    }
    match cl.map(std::str::from_utf8) {
        None => Framing::Length(0),
        Some(Ok(v)) if !v.trim().starts_with('+') => match v.trim().parse::<u64>() {
            Ok(n) => Framing::Length(n),
            Err(_) => Framing::Unknown,
        },
        Some(_) => Framing::Unknown,
    }
}

/// One step of the chunked-body state machine over `data`. Returns the next
/// state (`Some(None)` = body complete, `None` = syntax not followed) and the
/// bytes used.
fn step_chunked(mut state: Chunk, data: &[u8]) -> (Option<Option<Chunk>>, usize) {
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        match state {
            Chunk::Data { remaining } => {
                let take = remaining.min((data.len() - i) as u64);
                i += take as usize;
                state = if remaining == take {
                    Chunk::DataCr
                } else {
                    Chunk::Data {
                        remaining: remaining - take,
                    }
                };
                continue;
            }
            Chunk::Size { size, digits, ext } => {
                state = match b {
                    b'\r' if digits => Chunk::SizeLf { size },
                    b'\n' if digits => after_size(size),
                    _ if ext => state,
                    b';' if digits => Chunk::Size {
                        size,
                        digits,
                        ext: true,
                    },
                    _ if b.is_ascii_hexdigit() => {
                        let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                        match size.checked_mul(16).and_then(|s| s.checked_add(d)) {
                            Some(size) => Chunk::Size {
                                size,
                                digits: true,
                                ext,
                            },
                            None => return (None, i),
                        }
                    }
                    _ => return (None, i),
                };
            }
            Chunk::SizeLf { size } => {
                if b != b'\n' {
                    return (None, i);
                }
                state = after_size(size);
            }
            Chunk::DataCr => {
                state = match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size {
                        size: 0,
                        digits: false,
                        ext: false,
                    },
                    _ => return (None, i),
                };
            }
            Chunk::DataLf => {
                if b != b'\n' {
                    return (None, i);
                }
                state = Chunk::Size {
                    size: 0,
                    digits: false,
                    ext: false,
                };
            }
            Chunk::Trailer { line } => {
                if b == b'\n' {
                    if line == 0 {
                        return (Some(None), i + 1);
                    }
                    state = Chunk::Trailer { line: 0 };
                } else if b != b'\r' {
                    state = Chunk::Trailer { line: line + 1 };
                }
            }
        }
        i += 1;
    }
    (Some(Some(state)), i)
}

fn after_size(size: u64) -> Chunk {
    if size == 0 {
        Chunk::Trailer { line: 0 }
    } else {
        Chunk::Data { remaining: size }
    }
}

/// The contract's 431 answer (§1.3): pretty JSON for every client, the
/// headers of §1.6, and the connection closed.
pub fn too_large_answer() -> Vec<u8> {
    let body = to_php_json_pretty(&serde_json::json!({
        "message": "Request Header Fields Too Large"
    }));
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-cache, private\r\ncontent-type: application/json\r\nx-request-id: {}\r\ndate: {date}\r\n\r\n{body}",
        body.len(),
        origin::request_id(None),
    )
    .into_bytes()
}

/// What the wrapper does instead of passing bytes on.
#[derive(Debug)]
enum Ending {
    Open,
    /// Stream ended for actix; on shutdown write `reply[written..]`, then linger.
    Reject {
        reply: Vec<u8>,
        written: usize,
    },
    /// Stream ended for actix (timeout); shut down without an answer.
    Silent,
}

/// A TCP connection with step 0 enforced on what actix reads.
pub struct Guarded {
    io: TcpStream,
    tracker: Tracker,
    limits: HeadLimits,
    /// The deadline of the head or body in progress.
    timer: Option<Pin<Box<Sleep>>>,
    ending: Ending,
    shut: bool,
    lingered: usize,
}

impl Guarded {
    pub fn new(io: TcpStream, limits: HeadLimits) -> Guarded {
        Guarded {
            io,
            tracker: Tracker::new(limits),
            limits,
            // The first request line and headers are due from the connection start.
            timer: Some(Box::pin(tokio::time::sleep(limits.client_timeout))),
            ending: Ending::Open,
            shut: false,
            lingered: 0,
        }
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.io.peer_addr()
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.timer {
            Some(t) => t.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// Re-arms the timer after the tracker moved on.
    fn rearm(&mut self, was_head: bool, was_body: bool) {
        if self.tracker.passthrough() {
            self.timer = None;
        } else if self.tracker.in_body() && !was_body {
            let at = Instant::now() + self.limits.client_timeout + BODY_GRACE;
            self.timer = Some(Box::pin(tokio::time::sleep_until(at)));
        } else if self.tracker.in_head() {
            if !self.tracker.head_started() {
                // Between requests: keep-alive governs idle time.
                self.timer = None;
            } else if !was_head || self.timer.is_none() {
                let at = Instant::now() + self.limits.client_timeout;
                self.timer = Some(Box::pin(tokio::time::sleep_until(at)));
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !matches!(this.ending, Ending::Open) {
            return Poll::Ready(Ok(()));
        }
        if this.tracker.passthrough() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                if this.expired(cx) {
                    tracing::debug!("client timeout: request not complete in time, closing");
                    this.ending = Ending::Silent;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let was_head = this.tracker.in_head() && this.tracker.head_started();
                let was_body = this.tracker.in_body();
                if this.expired(cx) {
                    buf.set_filled(before);
                    tracing::debug!("client timeout: request not complete in time, closing");
                    this.ending = Ending::Silent;
                    return Poll::Ready(Ok(()));
                }
                let verdict = this.tracker.feed(&buf.filled()[before..]);
                if let Verdict::TooLarge { keep } = verdict {
                    buf.set_filled(before + keep);
                    tracing::debug!("request head too large: 431");
                    this.ending = Ending::Reject {
                        reply: too_large_answer(),
                        written: 0,
                    };
                    this.timer = None;
                    return Poll::Ready(Ok(()));
                }
                this.rearm(was_head, was_body);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Ending::Reject { reply, written } = &mut this.ending else {
            return Pin::new(&mut this.io).poll_shutdown(cx);
        };
        // actix has flushed every answer it owed; the 431 goes last.
        while *written < reply.len() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &reply[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        if !this.shut {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.shut = true;
            this.timer = Some(Box::pin(tokio::time::sleep(LINGER_TIME)));
        }
        // Lingering close: read and drop what the client still sends.
        let mut scratch = [0u8; 8192];
        while this.lingered < LINGER_BYTES {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => break,
                Poll::Ready(Ok(())) => this.lingered += rb.filled().len(),
                Poll::Ready(Err(_)) => break,
                Poll::Pending => {
                    if this.expired(cx) {
                        break;
                    }
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Best effort when actix drops the connection without shutting it down.
        if let Ending::Reject { reply, written } = &self.ending {
            if *written < reply.len() {
                let _ = self.io.try_write(&reply[*written..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> HeadLimits {
        HeadLimits {
            max_head_bytes: max,
            client_timeout: Duration::from_secs(10),
        }
    }

    fn feed_all(t: &mut Tracker, data: &[u8], step: usize) -> Vec<Verdict> {
        data.chunks(step.max(1)).map(|c| t.feed(c)).collect()
    }

    #[test]
    fn keep_alive_requests_are_followed() {
        let mut t = Tracker::new(limits(200));
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n\r\n";
        for step in [1, 3, 7, two.len()] {
            let mut t2 = Tracker::new(limits(200));
            assert!(feed_all(&mut t2, two, step)
                .iter()
                .all(|v| *v == Verdict::Pass));
            assert!(t2.in_head() && !t2.head_started());
        }
        assert_eq!(t.feed(b"\r\n\r\nGET / HTTP/1.1\r\n"), Verdict::Pass);
        assert!(t.head_started());
    }

    #[test]
    fn chunked_bodies_are_followed() {
        let mut t = Tracker::new(limits(100));
        let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: v\r\n\r\nGET / HTTP/1.1\r\n";
        for step in [1, 2, 5, req.len()] {
            let mut t2 = Tracker::new(limits(100));
            feed_all(&mut t2, req, step);
            assert!(t2.head_started() && !t2.passthrough(), "step {step}");
        }
        assert_eq!(t.feed(req), Verdict::Pass);
        // Bad chunk syntax: actix decides from here on.
        let mut t = Tracker::new(limits(100));
        t.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert!(t.passthrough());
    }

    #[test]
    fn oversized_heads_are_rejected_where_they_start() {
        let mut t = Tracker::new(limits(64));
        let first = b"GET / HTTP/1.1\r\n\r\n";
        let mut data = first.to_vec();
        data.extend_from_slice(b"GET / HTTP/1.1\r\nX: ");
        data.extend_from_slice(&[b'a'; 100]);
        assert_eq!(t.feed(&data), Verdict::TooLarge { keep: first.len() });

        // A head that grows over several reads: nothing more of it is passed on.
        let mut t = Tracker::new(limits(64));
        assert_eq!(t.feed(b"GET / HTTP/1.1\r\nX: aaaa"), Verdict::Pass);
        assert_eq!(t.feed(&[b'a'; 80]), Verdict::TooLarge { keep: 0 });
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let mut t = Tracker::new(limits(100_000));
        assert_eq!(t.feed(&head), Verdict::TooLarge { keep: 0 });
    }

    #[test]
    fn ambiguous_framing_is_left_to_actix() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            let mut t = Tracker::new(limits(1000));
            assert_eq!(t.feed(head), Verdict::Pass);
            assert!(t.passthrough(), "{:?}", String::from_utf8_lossy(head));
        }
        // HTTP/1.0 ignores Transfer-Encoding, like actix.
        let mut t = Tracker::new(limits(1000));
        t.feed(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert!(t.in_body());
    }

    #[test]
    fn answer_bytes() {
        let a = String::from_utf8(too_large_answer()).unwrap();
        assert!(a.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(a.ends_with("\r\n\r\n{\n    \"message\": \"Request Header Fields Too Large\"\n}"));
        assert!(a.contains("content-type: application/json\r\n"));
    }
}
