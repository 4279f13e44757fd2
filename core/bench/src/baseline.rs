//! The raw baseline: the least an SSE server can do. A tokio TCP server
//! that answers any request with an event-stream head and then writes each
//! frame it is handed to every socket of that topic — no log, no routing
//! beyond the topic, no HTTP framing. Like the raw writers it stands for, a
//! socket that falls behind skips frames (tokio broadcast lag) instead of
//! slowing the others; Spout must deliver every frame, so only throughput
//! and latency are comparable.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Frames buffered per topic before slow sockets start skipping.
const CAPACITY: usize = 1024;

/// Hands frames to the baseline server's sockets.
#[derive(Clone)]
pub struct Sender {
    topics: Arc<Vec<broadcast::Sender<Bytes>>>,
}

impl Sender {
    /// Queues `frame` for every socket subscribed to `topic`.
    pub fn publish(&self, topic: usize, frame: Bytes) {
        if let Some(tx) = self.topics.get(topic) {
            let _ = tx.send(frame);
        }
    }
}

/// A running raw writer on 127.0.0.1 (ephemeral port).
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    sender: Sender,
    stop: CancellationToken,
}

impl Server {
    /// Starts the server with `topics` topics (`?topic=bench/K`).
    pub async fn start(topics: usize) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sender = Sender {
            topics: Arc::new(
                (0..topics)
                    .map(|_| broadcast::channel(CAPACITY).0)
                    .collect(),
            ),
        };
        let stop = CancellationToken::new();
        let (s, st) = (sender.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = st.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(serve(stream, s.clone(), st.clone()));
            }
        });
        Ok(Server { addr, sender, stop })
    }

    /// The handle publishers use.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Stops accepting and closes every socket.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn serve(mut stream: tokio::net::TcpStream, sender: Sender, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while memchr::memmem::find(&head, b"\r\n\r\n").is_none() {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let topic = text
        .split_once("topic=bench/")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse::<usize>().ok())
        .unwrap_or(0);
    let Some(tx) = sender.topics.get(topic) else {
        return;
    };
    let mut rx = tx.subscribe();
    let ok =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n";
    if stream.write_all(ok).await.is_err() {
        return;
    }
    let mut out = Vec::new();
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => return,
            f = rx.recv() => f,
        };
        match frame {
            Ok(frame) => out.extend_from_slice(&frame),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
        // Whatever else is ready goes out in the same write.
        loop {
            match rx.try_recv() {
                Ok(frame) => out.extend_from_slice(&frame),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}
