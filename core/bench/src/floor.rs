//! The publish floor for `--publish-only --baseline`: hyper's HTTP/1.1
//! server reading each request body and answering `{"ids":[n]}`, with no
//! routing, no parsing and no log. It is what any hub built on hyper spends
//! per publish before doing anything, so "Spout / floor" shows how much of
//! the publish rate the hub's own work costs on this box. It runs on a
//! runtime of its own with two workers, as a server process would.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// The next id a floor answers with (ids mean nothing to the load; one
/// counter keeps the answer the size of a real one).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A running floor server on 127.0.0.1 (ephemeral port).
pub struct Floor {
    /// Where it listens.
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Floor {
    /// Binds an ephemeral port and serves it on a new two-worker runtime.
    pub fn start() -> std::io::Result<Floor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("spout-bench-floor")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of files, say: wait instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        req.into_body().collect().await?;
                        let id = NEXT.fetch_add(1, Ordering::Relaxed);
                        let mut resp =
                            Response::new(Full::new(Bytes::from(format!("{{\"ids\":[{id}]}}"))));
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, hyper::Error>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Floor {
            addr,
            runtime: Some(runtime),
        })
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // Callable from inside another runtime, unlike a plain drop.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
