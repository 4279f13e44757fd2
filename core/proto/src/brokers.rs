//! `[[source]]` keys for the brokers Spout relays from: a PostgreSQL
//! outbox, NATS JetStream, RabbitMQ (AMQP 0-9-1), MQTT and Redis Streams.
//! Each is one inline table (`postgres = { url = …, table = … }`); the keys
//! every broker source shares (`topic`, `dead_letter`, `id_field`, …) sit
//! beside it on the `[[source]]` itself.

use serde::Deserialize;
use std::time::Duration;

fn default_batch() -> usize {
    500
}

fn default_poll() -> Duration {
    Duration::from_secs(1)
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

fn default_id_column() -> String {
    "id".into()
}

fn default_payload_column() -> String {
    "payload".into()
}

fn default_qos() -> u8 {
    1
}

/// `postgres = {…}`: drain an outbox table. Rows are locked in batches with
/// `FOR UPDATE SKIP LOCKED` (so several nodes can drain one table), their
/// events stored, and the rows deleted in the transaction that locked them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// `postgres://user@host/db` (key=value strings work too).
    pub url: String,
    /// The outbox table (may be schema-qualified).
    pub table: String,
    /// Rows per transaction.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// `LISTEN` channel that wakes the drain (default: the table's name).
    #[serde(default)]
    pub channel: Option<String>,
    /// How often the table is read when no notification arrives.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll: Duration,
    /// The primary-key column: the row's identity and its order.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// The column holding the message body (`text`, `json`, `jsonb` or `bytea`).
    #[serde(default = "default_payload_column")]
    pub payload_column: String,
    /// An optional column whose text is the message's subject (for `topic`'s
    /// `{subject}`).
    #[serde(default)]
    pub subject_column: Option<String>,
}

/// `nats = {…}`: a durable pull consumer on a JetStream stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSource {
    /// `nats://host:4222`.
    pub url: String,
    /// The stream; created over `subjects` when it does not exist.
    pub stream: String,
    /// The durable consumer's name (created when absent).
    pub consumer: String,
    /// Subjects the stream captures when Spout creates it, and the
    /// consumer's filter.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Messages per fetch (also the consumer's `max_ack_pending`, so a
    /// restart gets unacknowledged messages back before newer ones).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long an unacknowledged message waits before redelivery.
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
}

/// `amqp = {…}`: consume a RabbitMQ queue with manual acknowledgements.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSource {
    /// `amqp://user:pass@host:5672/%2f`.
    pub url: String,
    /// The queue (declared durable when absent).
    pub queue: String,
    /// Prefetch: unacknowledged messages in flight.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Bind the queue to this exchange (with `routing_keys`) at start.
    #[serde(default)]
    pub exchange: Option<String>,
    /// Routing keys bound when `exchange` is given (default `#`).
    #[serde(default)]
    pub routing_keys: Vec<String>,
}

/// `mqtt = {…}`: a persistent MQTT 3.1.1 session; PUBACK is sent only
/// after the message's events are stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSource {
    /// `mqtt://host:1883`.
    pub url: String,
    /// Topic filters subscribed (`sensors/#`).
    pub topics: Vec<String>,
    /// The client id; the broker keeps this session's subscriptions and
    /// unacknowledged messages while Spout is away.
    pub client_id: String,
    /// 0 (at most once) or 1 (at least once; Spout's default).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Messages handled per batch (also the inflight window).
    #[serde(default = "default_batch")]
    pub batch: usize,
}

/// `redis = {…}`: a consumer group on a Redis stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSource {
    /// `redis://host:6379`.
    pub url: String,
    /// The stream key.
    pub stream: String,
    /// The consumer group (created at the stream's start when absent).
    pub group: String,
    /// This node's consumer name in the group (default: the host name);
    /// keep it stable so a restart re-reads its own pending entries.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Entries per read.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Take over other consumers' entries pending longer than this
    /// (`XAUTOCLAIM`), e.g. a node that died; off when absent.
    #[serde(default, with = "humantime_serde")]
    pub claim_idle: Option<Duration>,
}
