//! RabbitMQ (AMQP 0-9-1): a durable queue consumed with manual
//! acknowledgements.
//!
//! - **Identity** is the message's `message-id` property. Publishers should
//!   set it: without it a message has no stable identity, and a redelivery
//!   (after a crash between storing its events and acknowledging it) stores
//!   them again, so the guarantee is at-least-once, unless the source's
//!   `id_field` names a field of the body that identifies it.
//! - **Acknowledged after store**: a delivery is acknowledged only once its
//!   events are in the log (or dead-lettered). Deliveries not acknowledged
//!   when the connection drops go back to the queue, at their original
//!   position, and are redelivered first (with `redelivered` set).
//! - **Prefetch = `batch`**: RabbitMQ keeps at most `batch` unacknowledged
//!   deliveries in flight on the channel, so one fetch gets up to a batch.
//! - The queue is declared durable when it does not exist (an existing one
//!   is used as it is, whatever its type and arguments). With `exchange`,
//!   the queue is bound to it for each of `routing_keys` (default `#`); the
//!   exchange is not declared, so a missing one is a connect error.
//! - Acknowledgements are one `basic.ack` with `multiple` when the batch
//!   continues the run of acknowledged tags (the usual case), else one each.

use super::broker::{Broker, BrokerError, Message};
use crate::brokers::AmqpSource;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use std::collections::BTreeSet;
use std::time::Duration;

/// How long connecting and setting up (queue, bindings, consumer) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer tag Spout consumes with (one consumer per channel).
const CONSUMER_TAG: &str = "spout";

/// What acknowledges one AMQP delivery: its delivery tag on the channel it
/// came from. Tags are numbered per channel, so the tag carries which
/// connection it belongs to; one from an earlier connection is not acked
/// (that connection's unacknowledged deliveries went back to the queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmqpAck {
    /// Which connection (counted from 1 by [`Amqp`]) delivered it.
    pub connection: u64,
    /// The delivery tag on that connection's channel.
    pub tag: u64,
}

/// A RabbitMQ queue as a [`Broker`]: one connection, one channel, one
/// consumer with manual acknowledgements and prefetch = `batch`.
pub struct Amqp {
    cfg: AmqpSource,
    /// Kept so the connection stays open; dropping it closes it.
    conn: Option<Connection>,
    channel: Option<Channel>,
    consumer: Option<Consumer>,
    /// A second channel for `lag`'s passive declare, so that a failing one
    /// (the queue deleted) does not close the consuming channel.
    lag_channel: Option<Channel>,
    /// Connections made so far; the current one's number.
    generation: u64,
    /// Every tag up to this one is acknowledged (on this connection).
    acked: u64,
    /// Tags above `acked` acknowledged one by one, out of order.
    acked_above: BTreeSet<u64>,
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Amqp")
            .field("queue", &self.cfg.queue)
            .field("connected", &self.consumer.is_some())
            .field("generation", &self.generation)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

impl Amqp {
    /// A source for `cfg`; nothing connects before [`Broker::connect`].
    pub fn new(cfg: AmqpSource) -> Amqp {
        Amqp {
            cfg,
            conn: None,
            channel: None,
            consumer: None,
            lag_channel: None,
            generation: 0,
            acked: 0,
            acked_above: BTreeSet::new(),
        }
    }

    /// Connects, declares/binds the queue and starts the consumer.
    async fn setup(&self) -> Result<(Connection, Channel, Consumer), BrokerError> {
        let cfg = &self.cfg;
        let queue = short(&cfg.queue, "queue")?;
        let props = ConnectionProperties::default().with_connection_name("spout".into());
        let conn = Connection::connect(&cfg.url, props)
            .await
            .map_err(|e| BrokerError::Connect(format!("{}: {e}", redact(&cfg.url))))?;

        // A passive declare uses the queue as it is when it exists (any type
        // and arguments); only when it fails (404 closes that channel) is
        // it declared, durable, on a fresh channel.
        let mut channel = open_channel(&conn).await?;
        let passive = QueueDeclareOptions::default().passive();
        if let Err(e) = channel
            .queue_declare(queue.clone(), passive, FieldTable::default())
            .await
        {
            tracing::debug!(queue = %cfg.queue, error = %e, "queue not there; declaring it");
            channel = open_channel(&conn).await?;
            channel
                .queue_declare(
                    queue.clone(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| BrokerError::Connect(format!("declare queue {}: {e}", cfg.queue)))?;
        }

        if let Some(exchange) = &cfg.exchange {
            let name = short(exchange, "exchange")?;
            let default_keys = ["#".to_owned()];
            let keys = if cfg.routing_keys.is_empty() {
                &default_keys[..]
            } else {
                &cfg.routing_keys[..]
            };
            for key in keys {
                channel
                    .queue_bind(
                        queue.clone(),
                        name.clone(),
                        short(key, "routing key")?,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| {
                        BrokerError::Connect(format!(
                            "bind queue {} to exchange {exchange} ({key}): {e}",
                            cfg.queue
                        ))
                    })?;
            }
        }

        // Prefetch 0 would mean unlimited: keep it within 1..=u16::MAX.
        let prefetch = u16::try_from(cfg.batch.max(1)).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| BrokerError::Connect(format!("basic.qos: {e}")))?;

        let options = BasicConsumeOptions {
            no_ack: false,
            ..BasicConsumeOptions::default()
        };
        let consumer = channel
            .basic_consume(queue, CONSUMER_TAG.into(), options, FieldTable::default())
            .await
            .map_err(|e| BrokerError::Connect(format!("consume {}: {e}", cfg.queue)))?;
        Ok((conn, channel, consumer))
    }

    /// One delivery as the relay's [`Message`].
    fn message(&self, d: Delivery) -> Message<AmqpAck> {
        let p = &d.properties;
        let mut meta = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                meta.push((k.to_owned(), v));
            }
        };
        put(
            "content_type",
            p.content_type().as_ref().map(|s| s.to_string()),
        );
        put("message_id", p.message_id().as_ref().map(|s| s.to_string()));
        put(
            "correlation_id",
            p.correlation_id().as_ref().map(|s| s.to_string()),
        );
        put("timestamp", p.timestamp().map(|t| t.to_string()));
        put("type", p.kind().as_ref().map(|s| s.to_string()));
        put("app_id", p.app_id().as_ref().map(|s| s.to_string()));
        if let Some(headers) = p.headers() {
            for (k, v) in headers {
                put(k.as_str(), header_text(v));
            }
        }
        Message {
            identity: p.message_id().as_ref().map(|s| s.to_string()),
            subject: Some(d.routing_key.to_string()),
            body: Bytes::from(d.data),
            meta,
            ack: AmqpAck {
                connection: self.generation,
                tag: d.delivery_tag,
            },
        }
    }

    /// Notes `tag` acknowledged and advances the contiguous mark.
    fn mark_acked(&mut self, tag: u64) {
        if tag > self.acked {
            self.acked_above.insert(tag);
        }
        while self.acked_above.remove(&(self.acked + 1)) {
            self.acked += 1;
        }
    }
}

impl Broker for Amqp {
    type Ack = AmqpAck;

    fn describe(&self) -> String {
        format!("amqp {}", self.cfg.queue)
    }

    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.disconnect();
        let (conn, channel, consumer) = tokio::time::timeout(SETUP_TIMEOUT, self.setup())
            .await
            .map_err(|_| {
            BrokerError::Connect(format!(
                "{}: no answer in {SETUP_TIMEOUT:?}",
                redact(&self.cfg.url)
            ))
        })??;
        self.generation += 1;
        self.acked = 0;
        self.acked_above.clear();
        self.conn = Some(conn);
        self.channel = Some(channel);
        self.consumer = Some(consumer);
        tracing::debug!(queue = %self.cfg.queue, "amqp consumer started");
        Ok(())
    }

    async fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message<AmqpAck>>, BrokerError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let consumer = self
            .consumer
            .as_mut()
            .ok_or_else(|| BrokerError::Lost("not connected".into()))?;
        let first = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err(BrokerError::Lost("consumer cancelled by the broker".into())),
            Ok(Some(Err(e))) => return Err(BrokerError::Lost(e.to_string())),
            Ok(Some(Ok(d))) => d,
        };
        let mut deliveries = vec![first];
        while deliveries.len() < max {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => deliveries.push(d),
                // The error (or cancel) comes back at the next fetch; these
                // deliveries' acks fail then and they are redelivered.
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "amqp consumer failed mid-batch");
                    break;
                }
                Some(None) | None => break,
            }
        }
        let redelivered = deliveries.iter().filter(|d| d.redelivered).count();
        if redelivered > 0 {
            tracing::debug!(queue = %self.cfg.queue, redelivered, "amqp redeliveries");
        }
        Ok(deliveries.into_iter().map(|d| self.message(d)).collect())
    }

    async fn ack(&mut self, acks: Vec<AmqpAck>) -> Result<(), BrokerError> {
        let generation = self.generation;
        let mut tags: Vec<u64> = acks
            .iter()
            .filter(|a| a.connection == generation)
            .map(|a| a.tag)
            .collect();
        if tags.len() < acks.len() {
            tracing::debug!(
                stale = acks.len() - tags.len(),
                "acks from an earlier connection ignored (those were requeued)"
            );
        }
        tags.sort_unstable();
        tags.dedup();
        tags.retain(|&t| t > self.acked && !self.acked_above.contains(&t));
        let (Some(&lowest), Some(&highest)) = (tags.first(), tags.last()) else {
            return Ok(());
        };
        let channel = self
            .channel
            .clone()
            .ok_or_else(|| BrokerError::Lost("not connected".into()))?;
        let lost = |e: lapin::Error| BrokerError::Lost(format!("basic.ack: {e}"));
        let contiguous = lowest == self.acked + 1 && highest - lowest + 1 == tags.len() as u64;
        if contiguous {
            channel
                .basic_ack(highest, BasicAckOptions { multiple: true })
                .await
                .map_err(lost)?;
            self.acked = highest;
            // Out-of-order acks just above the run join it.
            self.mark_acked(highest);
        } else {
            for tag in tags {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: false })
                    .await
                    .map_err(lost)?;
                self.mark_acked(tag);
            }
        }
        Ok(())
    }

    async fn lag(&mut self) -> Option<u64> {
        let conn = self.conn.as_ref()?;
        let channel = match &self.lag_channel {
            Some(c) if c.status().connected() => c.clone(),
            _ => {
                let c = conn.create_channel().await.ok()?;
                self.lag_channel = Some(c.clone());
                c
            }
        };
        let queue = ShortString::try_new(self.cfg.queue.as_str()).ok()?;
        let passive = QueueDeclareOptions::default().passive();
        match channel
            .queue_declare(queue, passive, FieldTable::default())
            .await
        {
            Ok(q) => Some(u64::from(q.message_count())),
            Err(e) => {
                tracing::debug!(queue = %self.cfg.queue, error = %e, "amqp lag unknown");
                self.lag_channel = None;
                None
            }
        }
    }

    fn disconnect(&mut self) {
        // Dropping the consumer cancels it, the channels close, and dropping
        // the connection closes it: RabbitMQ requeues what was not acked.
        let was = self.conn.is_some();
        self.consumer = None;
        self.lag_channel = None;
        self.channel = None;
        self.conn = None;
        if was {
            tracing::debug!(queue = %self.cfg.queue, "amqp disconnected");
        }
    }
}

/// Opens a channel, as a connect error.
async fn open_channel(conn: &Connection) -> Result<Channel, BrokerError> {
    conn.create_channel()
        .await
        .map_err(|e| BrokerError::Connect(format!("open channel: {e}")))
}

/// A name as an AMQP short string (at most 255 bytes).
fn short(s: &str, what: &str) -> Result<ShortString, BrokerError> {
    ShortString::try_new(s).map_err(|e| BrokerError::Connect(format!("{what} {s:?}: {e}")))
}

/// A header value as text: strings, numbers, booleans and timestamps.
fn header_text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

/// The URL without its password, for errors and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
