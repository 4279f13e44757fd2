//! MQTT 3.1.1 source: a persistent session (`clean_session = false`) on a
//! broker such as Mosquitto, subscribed to the configured topic filters.
//!
//! - **Acknowledgement.** Manual acks: a QoS 1 message is PUBACKed only in
//!   [`Broker::ack`], i.e. after its events are stored, and `ack` returns
//!   once the event loop has written those PUBACKs to the socket, not when
//!   they are merely queued in rumqttc (queued ones die with the
//!   connection). Until then the broker
//!   keeps the message in the session and redelivers it (DUP set) when the
//!   same `client_id` connects again. QoS 0 messages need no ack and are lost
//!   if Spout is away or dies before storing them.
//! - **Identity.** MQTT has no stable message identity (packet ids are
//!   reused per connection), so [`Message::identity`] is `None`. With
//!   `id_field` (an id in the body) the guarantee is effectively-once: a
//!   redelivery is recognised and not stored twice. Without it the
//!   guarantee is at-least-once: a message whose events were stored but
//!   whose PUBACK did not reach the broker (crash, lost connection) is
//!   stored again when redelivered.
//! - **Flow control.** MQTT 3.1.1 has no receive window the client sets; the
//!   broker decides how many unacknowledged QoS 1 messages it sends at once
//!   (Mosquitto `max_inflight_messages`, default 20, which Mosquitto 2.0
//!   enforces only for the first window: every PUBACK releases up to 20
//!   more). The event loop task keeps reading whatever arrives into a
//!   channel that QoS 1 traffic cannot fill (at most 65,535 messages are
//!   unacknowledged, the packet id space), so it never stops polling and
//!   PUBACKs and pings always go out; a QoS 0 flood fills it and then TCP
//!   back-pressure applies. A *connected* but slow Spout is bounded by the
//!   broker's queue too: Mosquitto drops QoS 1 messages queued for a client
//!   beyond `max_queued_messages` (+ the inflight ones) even while it is
//!   online.
//! - **Outages.** While Spout is away the broker queues the session's
//!   messages up to its limits (Mosquitto `max_queued_messages`, default
//!   1000, QoS 1 only unless `queue_qos0_messages`); what exceeds them is
//!   dropped by the broker, so the limits bound what survives a long
//!   outage.
//! - **Retained messages** are sent again on every (re)subscribe, i.e. on
//!   every connect; with `id_field` they are recognised as already stored.
//! - **Reconnection** is the relay's: after a connection error the event
//!   loop task ends (rumqttc would otherwise reconnect silently when polled
//!   again), [`Broker::fetch`] returns [`BrokerError::Lost`], and the relay
//!   calls `disconnect` and later `connect`.

use super::broker::{Broker, BrokerError, Message};
use crate::brokers::MqttSource;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Keep-alive interval sent in CONNECT; the event loop pings when idle.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// TCP connect + CONNECT/CONNACK timeout (seconds, rumqttc's unit).
const NETWORK_TIMEOUT_SECS: u64 = 10;
/// How long `connect` waits for the CONNACK and the SUBACK.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest incoming packet accepted (a larger one fails the connection).
const MAX_INCOMING_PACKET: usize = 16 * 1024 * 1024;
/// Largest outgoing packet (SUBSCRIBE with all filters, PUBACKs).
const MAX_OUTGOING_PACKET: usize = 1024 * 1024;
/// Capacity of rumqttc's request channel and of the channel to `fetch`.
/// Every queued PUBACK, and every QoS 1 message waiting in the channel, is
/// a message the broker counts as unacknowledged, of which there are at
/// most 65,535 (the packet id space): neither channel fills with QoS 1
/// traffic, so the event loop never blocks on `fetch` while `ack` waits on
/// the event loop. Both channels allocate as they fill, not up front.
const CHANNEL_CAPACITY: usize = u16::MAX as usize + 16;
/// Least time between dropping a connection and opening the next one. A
/// new CONNECT with the same client id takes the session over at once, and
/// Mosquitto then discards PUBACKs of the old connection it had not read
/// yet (observed: hundreds after an immediate reconnect, none after 100 ms);
/// each one would be a redelivery.
const RECONNECT_GRACE: Duration = Duration::from_millis(250);
/// How long `ack` waits for the event loop to write its PUBACKs.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the event loop task hands to `fetch`.
enum Item {
    /// A PUBLISH from the broker.
    Publish(Publish),
    /// The connection failed; the task has ended.
    Lost(String),
}

/// Acknowledges one MQTT message: its packet id and QoS on the connection
/// that delivered it. Acks from an earlier connection are ignored (their
/// packet ids mean nothing on the new one; the broker redelivers those
/// messages instead).
#[derive(Debug, Clone, Copy)]
pub struct MqttAck {
    generation: u64,
    pkid: u16,
    qos: QoS,
}

/// One live connection: the client (to send PUBACKs), the channel the event
/// loop task forwards PUBLISHes on, the count of PUBACKs it has written,
/// and that task.
struct Conn {
    generation: u64,
    client: AsyncClient,
    rx: mpsc::Receiver<Item>,
    /// PUBACKs queued by `ack` on this connection.
    queued: u64,
    /// PUBACKs the event loop has written and flushed.
    written: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

/// An MQTT 3.1.1 source: a persistent session with manual PUBACKs.
pub struct Mqtt {
    cfg: MqttSource,
    generation: u64,
    conn: Option<Conn>,
    /// When the last connection was dropped.
    closed_at: Option<Instant>,
}

impl Mqtt {
    /// A source for `cfg`; nothing connects until [`Broker::connect`].
    pub fn new(cfg: MqttSource) -> Mqtt {
        Mqtt {
            cfg,
            generation: 0,
            conn: None,
            closed_at: None,
        }
    }

    /// The session's options from the config, or why they are wrong.
    fn options(&self) -> Result<MqttOptions, BrokerError> {
        let cfg = &self.cfg;
        let bad = |why: String| BrokerError::Connect(format!("mqtt {}: {why}", cfg.client_id));
        let url = url::Url::parse(&cfg.url).map_err(|e| bad(format!("url {:?}: {e}", cfg.url)))?;
        if url.scheme() != "mqtt" {
            return Err(bad(format!(
                "url {:?}: scheme must be mqtt:// (TLS and WebSocket are not supported)",
                cfg.url
            )));
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => return Err(bad(format!("url {:?} has no host", cfg.url))),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(bad(format!("url {:?}: unexpected path or query", cfg.url)));
        }
        let port = url.port().unwrap_or(1883);
        if cfg.client_id.is_empty() {
            return Err(bad(
                "client_id is empty (a persistent session needs one)".into()
            ));
        }
        if cfg.topics.is_empty() {
            return Err(bad("no topics".into()));
        }
        if cfg.qos > 1 {
            return Err(bad(format!("qos {} (0 or 1)", cfg.qos)));
        }

        let mut opts = MqttOptions::new(cfg.client_id.clone(), host, port);
        opts.set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_inflight(u16::try_from(cfg.batch.max(1)).unwrap_or(u16::MAX))
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
            .set_request_channel_capacity(CHANNEL_CAPACITY);
        if !url.username().is_empty() {
            let user = decode(url.username()).map_err(|e| bad(format!("user name: {e}")))?;
            let pass =
                decode(url.password().unwrap_or("")).map_err(|e| bad(format!("password: {e}")))?;
            opts.set_credentials(user, pass);
        }
        Ok(opts)
    }

    fn qos(&self) -> QoS {
        if self.cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }
}

/// Percent-decodes a URL user name or password.
fn decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
}

/// Drives the event loop: reports readiness (CONNACK + SUBACK) or the setup
/// failure on `ready`, then forwards PUBLISHes in order on `tx` and counts
/// the PUBACKs written on `written`. Ends at the first connection error
/// (reported on `tx`), so rumqttc never reconnects behind the relay's back.
async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Item>,
    ready: oneshot::Sender<Result<bool, String>>,
    written: watch::Sender<u64>,
    label: String,
) {
    let mut ready = Some(ready);
    let mut session_present = None;
    let mut subscribed = false;
    // PUBLISHes that arrive before the SUBACK (a resumed session's backlog),
    // held until `connect` has returned and `fetch` drains the channel.
    let mut early: Vec<Publish> = Vec::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if ready.is_some() {
                    early.push(p);
                } else if tx.send(Item::Publish(p)).await.is_err() {
                    return; // the source was disconnected
                }
            }
            // rumqttc reports an outgoing packet after writing and flushing it.
            Ok(Event::Outgoing(Outgoing::PubAck(_))) => {
                written.send_modify(|n| *n += 1);
            }
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                session_present = Some(c.session_present);
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                if s.return_codes.contains(&SubscribeReasonCode::Failure) {
                    let why = format!("subscription refused: {:?}", s.return_codes);
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(why));
                    }
                    return;
                }
                debug!(source = %label, codes = ?s.return_codes, "subscribed");
                subscribed = true;
            }
            Ok(_) => {}
            Err(e) => {
                drop(eventloop); // later acks fail at once
                let why = e.to_string();
                match ready.take() {
                    Some(r) => {
                        let _ = r.send(Err(why));
                    }
                    None => {
                        warn!(source = %label, error = %why, "connection lost");
                        let _ = tx.send(Item::Lost(why)).await;
                    }
                }
                return;
            }
        }
        if let (Some(present), true) = (session_present, subscribed) {
            if let Some(r) = ready.take() {
                if r.send(Ok(present)).is_err() {
                    return; // `connect` gave up
                }
                if !early.is_empty() {
                    debug!(source = %label, n = early.len(), "messages delivered before the SUBACK");
                }
                for p in early.drain(..) {
                    if tx.send(Item::Publish(p)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

impl Broker for Mqtt {
    type Ack = MqttAck;

    fn describe(&self) -> String {
        format!("mqtt {}", self.cfg.client_id)
    }

    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.disconnect();
        let opts = self.options()?;
        if let Some(left) = self
            .closed_at
            .take()
            .and_then(|t| RECONNECT_GRACE.checked_sub(t.elapsed()))
        {
            tokio::time::sleep(left).await;
        }
        let qos = self.qos();
        let label = self.describe();

        let (client, mut eventloop) = AsyncClient::new(opts, CHANNEL_CAPACITY);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(NETWORK_TIMEOUT_SECS);
        eventloop.set_network_options(net);

        // Queued now, sent right after the CONNACK.
        let filters = self
            .cfg
            .topics
            .iter()
            .map(|t| SubscribeFilter::new(t.clone(), qos));
        client.try_subscribe_many(filters).map_err(|_| {
            BrokerError::Connect(format!(
                "{label}: invalid topic filter in {:?}",
                self.cfg.topics
            ))
        })?;

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (written_tx, written) = watch::channel(0);
        let task = tokio::spawn(drive(eventloop, tx, ready_tx, written_tx, label.clone()));

        let present = match tokio::time::timeout(SETUP_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(present))) => present,
            Ok(Ok(Err(why))) => {
                task.abort();
                return Err(BrokerError::Connect(format!("{label}: {why}")));
            }
            Ok(Err(_)) => {
                task.abort();
                return Err(BrokerError::Connect(format!("{label}: event loop ended")));
            }
            Err(_) => {
                task.abort();
                return Err(BrokerError::Connect(format!(
                    "{label}: no CONNACK/SUBACK within {SETUP_TIMEOUT:?}"
                )));
            }
        };
        if present {
            info!(source = %label, url = %self.cfg.url, "connected (session resumed)");
        } else if self.generation > 0 {
            warn!(
                source = %label,
                url = %self.cfg.url,
                "connected, but the broker had no session for this client id (restarted \
                 without persistence, or the session expired): messages published while \
                 disconnected are lost"
            );
        } else {
            info!(source = %label, url = %self.cfg.url, "connected (new session)");
        }
        self.generation += 1;
        self.conn = Some(Conn {
            generation: self.generation,
            client,
            rx,
            queued: 0,
            written,
            task,
        });
        Ok(())
    }

    async fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message<MqttAck>>, BrokerError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(BrokerError::Lost("mqtt: not connected".into()));
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        let first = match tokio::time::timeout(wait, conn.rx.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err(BrokerError::Lost("mqtt: event loop ended".into())),
            Ok(Some(item)) => item,
        };
        let mut out = Vec::with_capacity(max.min(64));
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                // Anything fetched in this batch could not be acked any more.
                Item::Lost(why) => return Err(BrokerError::Lost(format!("mqtt: {why}"))),
                Item::Publish(p) => out.push(message(p, conn.generation)),
            }
            if out.len() < max {
                next = conn.rx.try_recv().ok();
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, acks: Vec<MqttAck>) -> Result<(), BrokerError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(BrokerError::Lost("mqtt: not connected".into()));
        };
        let lost = || BrokerError::Lost("mqtt: connection closed before PUBACK".into());
        for a in acks {
            if a.generation != conn.generation {
                debug!(pkid = a.pkid, "ack from an earlier connection ignored");
                continue;
            }
            if a.qos == QoS::AtMostOnce {
                continue;
            }
            let mut p = Publish::new("", a.qos, Vec::new());
            p.pkid = a.pkid;
            conn.client.ack(&p).await.map_err(|_| lost())?;
            conn.queued += 1;
        }
        // Return once they are on the wire, not merely queued: the event loop
        // interleaves them with incoming packets, and queued PUBACKs die with
        // the connection (each one a redelivery, i.e. a duplicate without
        // `id_field`).
        let target = conn.queued;
        match tokio::time::timeout(ACK_TIMEOUT, conn.written.wait_for(|n| *n >= target)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(lost()),
            Err(_) => Err(BrokerError::Lost(format!(
                "mqtt: PUBACKs not written within {ACK_TIMEOUT:?}"
            ))),
        }
    }

    async fn lag(&mut self) -> Option<u64> {
        None
    }

    fn disconnect(&mut self) {
        // No DISCONNECT packet: dropping the socket leaves the persistent
        // session (subscriptions, unacknowledged messages) on the broker.
        if let Some(conn) = self.conn.take() {
            conn.task.abort();
            self.closed_at = Some(Instant::now());
            debug!(source = %self.describe(), "disconnected");
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.task.abort();
        }
    }
}

/// The relay's view of one PUBLISH.
fn message(p: Publish, generation: u64) -> Message<MqttAck> {
    let qos = match p.qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    };
    Message {
        identity: None,
        meta: vec![
            ("qos".into(), qos.into()),
            ("retain".into(), p.retain.to_string()),
            ("dup".into(), p.dup.to_string()),
        ],
        ack: MqttAck {
            generation,
            pkid: p.pkid,
            qos: p.qos,
        },
        subject: Some(p.topic),
        body: p.payload,
    }
}
