//! SSE streams on plain HTTP/1.1 connections, written straight to the socket.
//!
//! hyper keeps an 8 KiB read buffer, an 8 KiB write buffer and its h1/h2
//! connection state for a connection's whole life: ~17 KB per idle SSE
//! stream (`spout bench --pid`). A stream needs none of it once its head is
//! out, so the accept loop reads a plain connection's first request head
//! here. A `GET` on a stream route (or the Mercure hub) that this module
//! fully understands is handled by the same [`super::handle`] as every
//! request; an SSE answer is then written as a chunked body by [`pump`],
//! with no buffer kept between frames. Anything else (other requests,
//! pipelined bytes, `Connection: close`, HTTP/1.0, h2 prior knowledge, bad
//! heads) goes to hyper with the bytes read so far replayed in front of the
//! socket ([`Prefixed`]), so hyper's answers and limits stay the rule.

use super::Conn;
use crate::app::App;
use bytes::{Buf, Bytes};
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Empty};
use hyper_util::server::graceful::Watcher;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The largest request head read here; longer heads go to hyper (431).
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed here; requests with more go to hyper.
const MAX_HEADERS: usize = 64;

/// What became of a connection's first request.
pub enum First {
    /// The client left, timed out or the server is stopping: close.
    Closed,
    /// An SSE stream whose head is written: [`pump`] its frames.
    Stream(TcpStream, crate::stream::EventStream),
    /// Serve the connection with hyper, replaying what was read.
    Hyper(Prefixed<TcpStream>),
}

/// Reads the first request head (within `timeout`) and serves it here when
/// it opens a stream; see the module docs for what goes to hyper.
pub async fn first_request(app: &Arc<App>, conn: &Conn, io: TcpStream, timeout: Duration) -> First {
    let read = tokio::select! {
        read = tokio::time::timeout(timeout, read_head(io)) => read,
        () = app.stop.cancelled() => return First::Closed,
    };
    let (mut io, buf) = match read {
        Ok(Ok(read)) => read,
        // Timed out or failed before a head: as hyper, close.
        Ok(Err(_)) | Err(_) => return First::Closed,
    };
    let Some(req) = direct_request(app, &buf) else {
        return First::Hyper(Prefixed::new(io, Bytes::from(buf)));
    };
    drop(buf);
    let Ok(resp) = super::handle(app.clone(), conn.clone(), req).await;
    let (parts, body) = resp.into_parts();
    match body {
        Either::Right(stream) => {
            let head = head(&parts, None);
            if io.write_all(&head).await.is_err() {
                return First::Closed;
            }
            First::Stream(io, stream)
        }
        Either::Left(full) => {
            let Ok(body) = full.collect().await.map(|b| b.to_bytes());
            let head = head(&parts, Some(body.len()));
            if write_all_vectored(&mut io, &[&head, &body], 0)
                .await
                .is_err()
            {
                return First::Closed;
            }
            // The next requests on this keep-alive connection: hyper.
            First::Hyper(Prefixed::new(io, Bytes::new()))
        }
    }
}

/// Writes `body`'s frames as HTTP/1.1 chunks until the stream ends (then the
/// last chunk), the client closes or `conn.kill` drops the connection.
/// `_watch` keeps graceful shutdown waiting for the stream's last frame.
pub async fn pump(
    mut io: TcpStream,
    mut body: crate::stream::EventStream,
    conn: Conn,
    _watch: Watcher,
) {
    // By reference: arguments moved into an inner async fn would be stored
    // twice in this future, and it lives as long as the stream.
    if let Err(err) = write_frames(&mut io, &mut body, &conn.kill).await {
        if err.kind() == io::ErrorKind::ConnectionAborted {
            tracing::debug!(peer = %conn.peer, "connection dropped");
        }
    }
}

async fn write_frames(
    io: &mut TcpStream,
    body: &mut crate::stream::EventStream,
    kill: &CancellationToken,
) -> io::Result<()> {
    loop {
        let Some(frame) = std::future::poll_fn(|cx| next_frame(io, body, cx)).await else {
            return Ok(());
        };
        let Some(Ok(frame)) = frame else {
            // The stream ended (shutdown, overflow, revoked...): last chunk.
            write_unless_killed(io, &[b"0\r\n\r\n"], kill).await?;
            return io.shutdown().await;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            // A zero-length chunk would end the body.
            continue;
        }
        let mut size = [0u8; 18];
        let n = chunk_size(&mut size, data.len());
        write_unless_killed(io, &[&size[..n], &data, b"\r\n"], kill).await?;
    }
}

/// Writes `parts`, unless `kill` fires first. Almost always the socket takes
/// them at once: one `writev`, no future state, no look at the token (whose
/// check takes a lock). Only a full socket waits, boxed (so the stream's
/// state does not carry the waiting write), racing `kill`: a client the hub
/// found stuck, or the hard stop after the grace period.
async fn write_unless_killed(
    io: &mut TcpStream,
    parts: &[&[u8]],
    kill: &CancellationToken,
) -> io::Result<()> {
    let mut slices = [IoSlice::new(&[]); 3];
    let used = unwritten(parts, 0, &mut slices);
    let done = match io.try_write_vectored(&slices[..used]) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if done == parts.iter().map(|p| p.len()).sum::<usize>() {
        return Ok(());
    }
    Box::pin(async {
        tokio::select! {
            written = write_all_vectored(io, parts, done) => written,
            () = kill.cancelled() => Err(io::ErrorKind::ConnectionAborted.into()),
        }
    })
    .await
}

/// A frame of the body, `Some(None)` at its end, or `None` when the client
/// left. Read readiness is only watched while the body has nothing to send,
/// through the socket's one reader slot (no waiter registered and removed
/// per frame, as a `readable()` future in a `select!` would).
type Next = Option<Option<Result<http_body::Frame<Bytes>, std::convert::Infallible>>>;

fn next_frame(
    io: &TcpStream,
    body: &mut crate::stream::EventStream,
    cx: &mut Context<'_>,
) -> Poll<Next> {
    if let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) {
        return Poll::Ready(Some(frame));
    }
    // Bytes a client sends on a streaming connection are read and dropped,
    // a bounded number per wake-up.
    for _ in 0..16 {
        match io.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                let mut sink = [0u8; 256];
                match io.try_read(&mut sink) {
                    Ok(0) => return Poll::Ready(None),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(None),
                }
            }
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// `{len:x}\r\n` into `out`; returns its length.
fn chunk_size(out: &mut [u8; 18], len: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// Reads until a complete request head (or a reason to let hyper decide):
/// the buffer is only allocated once the client sent something.
async fn read_head(mut io: TcpStream) -> io::Result<(TcpStream, Vec<u8>)> {
    io.readable().await?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        if io.read_buf(&mut buf).await? == 0 {
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            return Ok((io, buf));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Request::new(&mut headers).parse(&buf) {
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Ok((io, buf)),
        }
    }
}

/// The request, when `buf` is exactly one complete, plain `GET` head for a
/// stream route or the Mercure hub; `None` sends the connection to hyper.
fn direct_request(app: &App, buf: &[u8]) -> Option<Request<Empty<Bytes>>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(buf).ok()? else {
        return None;
    };
    if len != buf.len() || parsed.version != Some(1) || parsed.method != Some("GET") {
        return None;
    }
    let target = parsed.path?;
    if !target.starts_with('/') {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let pipeline = app.pipeline.load();
    let route = super::routes::Target::resolve(&pipeline, path, app.config.server.console);
    if !route.streams(app.config.mercure.is_some()) {
        return None;
    }
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = Uri::try_from(target).ok()?;
    let map = req.headers_mut();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let keep_alive = match name.as_str() {
            // Bodies, upgrades and `Connection: close` are hyper's.
            "content-length" => h.value == b"0",
            "transfer-encoding" | "upgrade" | "expect" => false,
            "connection" => h.value.eq_ignore_ascii_case(b"keep-alive"),
            _ => true,
        };
        if !keep_alive {
            return None;
        }
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(req)
}

/// The response head: status line, the response's headers, `date`, then
/// `content-length` for a whole body or chunked framing for a stream.
fn head(parts: &http::response::Parts, len: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "date"
        ) {
            // Written below, once.
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
    match len {
        Some(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes all of `parts` past the first `done` bytes, with as few `writev`
/// calls as the socket allows.
async fn write_all_vectored(
    io: &mut TcpStream,
    parts: &[&[u8]],
    mut done: usize,
) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    while done < total {
        let mut slices = [IoSlice::new(&[]); 3];
        let used = unwritten(parts, done, &mut slices);
        let n = io.write_vectored(&slices[..used]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

/// The parts of `parts` past their first `done` bytes, as slices in `out`
/// (at most three parts); returns how many slices were filled.
fn unwritten<'a>(parts: &[&'a [u8]], done: usize, out: &mut [IoSlice<'a>; 3]) -> usize {
    let mut used = 0;
    let mut skip = done;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        if used == out.len() {
            break;
        }
        out[used] = IoSlice::new(&part[skip..]);
        skip = 0;
        used += 1;
    }
    used
}

/// A socket with bytes already read from it put back in front, so hyper
/// sees the connection from its first byte.
pub struct Prefixed<T> {
    pre: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    /// `io`, whose next reads return `pre` first.
    pub fn new(io: T, pre: Bytes) -> Prefixed<T> {
        Prefixed { pre, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::chunk_size;

    #[test]
    fn chunk_sizes_are_lowercase_hex_lines() {
        for (len, want) in [
            (1usize, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (4096, "1000\r\n"),
            (0xabcdef, "abcdef\r\n"),
        ] {
            let mut out = [0u8; 18];
            let n = chunk_size(&mut out, len);
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), want);
        }
    }
}
