//! The accept loop and the server's lifecycle, from `listening on` to exit.
//!
//! [`run`] takes the listener and the shutdown signal as parameters (as
//! mini-redis does), so tests run the real server on `127.0.0.1:0` and stop it
//! whenever they like. Shutdown order: stop accepting, mark not-ready, send
//! every stream `event: shutdown`, let connections finish within the grace
//! period (then drop them), stop the ticker, and flush and close the log.

use crate::app::App;
use crate::http::direct::First;
use crate::http::{self, Conn};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listener failed.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
    /// The log could not be flushed and closed.
    #[error("closing the log failed: {0}")]
    Log(#[from] crate::log::LogError),
    /// `[server.tls]` could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Serves `app` on `listener` until `shutdown` completes, then shuts down
/// gracefully. Logs `listening on http://ADDR` with the bound address first.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let addr = listener.local_addr()?;
    let cfg = &app.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .keep_alive(true)
        // Every open SSE connection keeps hyper's read buffer. Capped at the
        // minimum (8 KiB) it stays 8 KiB instead of growing to 16 KiB on the
        // first request: ~24 KB -> ~17 KB RSS per idle stream (spout bench,
        // 10,000 connections). Request heads are limited to 8 KiB (431), as
        // nginx's default; bodies stream and are not affected.
        .max_buf_size(8 * 1024);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let tls = match &cfg.tls {
        Some(t) => Some(Arc::new(crate::tls::Tls::new(&t.cert, &t.key)?)),
        None => None,
    };
    let graceful = GracefulShutdown::new();
    let hard_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let ticker = tokio::spawn(tick(app.clone()));
    app.sources.restart(&app.pipeline.load());
    let stop_watch = CancellationToken::new();
    let watcher = tokio::spawn(crate::pipeline::reload::watch(
        app.reloader(),
        stop_watch.clone(),
    ));
    if let Some(t) = &tls {
        t.clone().watch(stop_watch.clone());
    }
    // After the reload watches (SIGHUP included) are set up.
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{addr}");

    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Conn { peer, kill: hard_stop.child_token() };
                    let app = app.clone();
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    let handshake_timeout = cfg.header_timeout;
                    // Two tasks, not one with two branches: a task's cell is
                    // as big as its largest state, and a TLS connection's
                    // (rustls state inline) made every plain one ~4 KiB bigger.
                    match tls.clone() {
                        None => {
                            let streams = tracker.clone();
                            tracker.spawn(async move {
                                // Boxed, as hyper's branch below: the task cell
                                // of an idle stream holds only `pump`'s state.
                                let first = Box::pin(http::direct::first_request(&app, &conn, stream, handshake_timeout)).await;
                                match first {
                                    First::Closed => {}
                                    // Its own task: this one's cell (sized for
                                    // every branch) is freed, the stream's
                                    // holds only what `pump` needs.
                                    First::Stream(io, body) => drop(streams.spawn(http::direct::pump(io, body, conn, watcher))),
                                    First::Hyper(io) => Box::pin(serve_hyper(builder, io, app, conn, watcher)).await,
                                }
                            });
                        }
                        Some(tls) => {
                            tracker.spawn(async move {
                                let stream = match tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(err)) => {
                                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return;
                                    }
                                };
                                serve_hyper(builder, stream, app, conn, watcher).await;
                            });
                        }
                    }
                }
                Err(err) => {
                    // Out of file descriptors and similar: back off, do not
                    // spin or exit, and do not flood the log either.
                    accept_errors.record(&err);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down");
    app.begin_shutdown();
    app.hub.close_all();
    let grace = app.config.server.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = %humantime::format_duration(grace), "connections still open after the grace period; dropping them");
    }
    hard_stop.cancel();
    tracker.close();
    tracker.wait().await;
    ticker.abort();
    stop_watch.cancel();
    app.sources.stop();
    // Wait for both to end: they hold the app (and the log) open.
    let _ = ticker.await;
    let _ = watcher.await;
    let log = app.log.clone();
    tokio::task::spawn_blocking(move || log.close())
        .await
        .map_err(std::io::Error::other)??;
    tracing::info!("stopped");
    Ok(())
}

/// Counts failed accepts (`spout_accept_errors_total`) and logs them at
/// most once a second, with how many there were since the last line: at the
/// file-descriptor limit they come by the thousand.
struct AcceptErrors {
    counter: metrics::Counter,
    last_line: Option<std::time::Instant>,
    unlogged: u64,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        AcceptErrors {
            counter: metrics::counter!("spout_accept_errors_total"),
            last_line: None,
            unlogged: 0,
        }
    }
}

impl AcceptErrors {
    fn record(&mut self, err: &std::io::Error) {
        self.counter.increment(1);
        self.unlogged += 1;
        if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(error = %err, count = self.unlogged, "accept failed (count: failures since the last such line)");
            self.unlogged = 0;
            self.last_line = Some(std::time::Instant::now());
        }
    }
}

/// Serves a connection with hyper (h1/h2 auto) until it ends, or until
/// `conn.kill` drops it; graceful shutdown watches it through `watcher`.
async fn serve_hyper<I>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    app: Arc<App>,
    conn: Conn,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (kill, peer) = (conn.kill.clone(), conn.peer);
    let svc = service_fn(move |req| http::handle(app.clone(), conn.clone(), req));
    let served = watcher.watch(builder.serve_connection(TokioIo::new(io), svc));
    finish(served, kill, peer).await;
}

/// Drives one connection until it ends or is dropped.
async fn finish<E: std::fmt::Display>(
    served: impl Future<Output = Result<(), E>>,
    kill: CancellationToken,
    peer: std::net::SocketAddr,
) {
    tokio::select! {
        result = served => if let Err(err) = result {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        },
        () = kill.cancelled() => tracing::debug!(%peer, "connection dropped"),
    }
}

/// The one timer for all connections: heartbeats, stuck-subscriber sweeps and
/// metrics upkeep.
async fn tick(app: Arc<App>) {
    let mut interval = tokio::time::interval(app.config.server.heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        app.hub.tick(app.config.hub.catchup_timeout * 2);
        app.limits.sweep();
        let swept = app.clone();
        // sled reads block: off the async workers.
        drop(tokio::task::spawn_blocking(move || {
            swept.tickets.sweep(crate::event::now_ms())
        }));
        app.metrics.run_upkeep();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
