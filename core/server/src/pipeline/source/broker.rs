//! What a broker connection gives the relay: messages in the broker's
//! order, each with a stable identity where the protocol has one, and a way
//! to acknowledge them once their events are in the log. Each protocol
//! (`postgres`, `nats`, `amqp`, `mqtt`, `streams`) implements [`Broker`];
//! `relay` drives any of them the same way.

use bytes::Bytes;
use std::future::Future;
use std::time::Duration;

/// A message read from a broker and not yet acknowledged.
#[derive(Debug)]
pub struct Message<A> {
    /// Its stable identity (outbox key, stream sequence, entry id,
    /// `message-id`): the idempotency key of its events. `None` where the
    /// protocol has none (then `id_field` may name one in the body).
    pub identity: Option<String>,
    /// The broker's subject, routing key or MQTT topic, as the broker
    /// spells it (for the `topic` template's `{subject}`).
    pub subject: Option<String>,
    /// The payload.
    pub body: Bytes,
    /// Headers or properties as text, handed to a plugin's `on-input`.
    pub meta: Vec<(String, String)>,
    /// What acknowledges it.
    pub ack: A,
}

/// Why talking to a broker failed; the relay reconnects with backoff.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Could not connect, or set up the stream/queue/group/session.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection failed while reading or acknowledging.
    #[error("{0}")]
    Lost(String),
}

/// One broker connection as the relay sees it. The relay calls `connect`,
/// then `fetch` → (store the events) → `ack` in a loop; after any error it
/// calls `disconnect` and, after a backoff, `connect` again. Messages
/// fetched and not acknowledged are redelivered by the broker; the relay
/// stores nothing twice for them (their identity is the idempotency key).
pub trait Broker: Send + 'static {
    /// What acknowledges one message.
    type Ack: Send + 'static;

    /// What the source is, for logs: `nats ORDERS/spout`.
    fn describe(&self) -> String;

    /// Connects and sets up (stream, consumer, queue, group, session).
    fn connect(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Up to `max` messages in the broker's order. Waits at most `wait` for
    /// the first one, then returns what it has (possibly nothing).
    fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Message<Self::Ack>>, BrokerError>> + Send;

    /// Acknowledges messages whose events are stored (or dead-lettered).
    fn ack(&mut self, acks: Vec<Self::Ack>)
        -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Messages waiting for this consumer, where the broker tells (JetStream
    /// pending, outbox rows, a group's lag, a queue's ready count).
    fn lag(&mut self) -> impl Future<Output = Option<u64>> + Send;

    /// Drops the connection; messages fetched and not acknowledged are the
    /// broker's to redeliver.
    fn disconnect(&mut self);
}
