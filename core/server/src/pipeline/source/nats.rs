//! NATS JetStream: a durable pull consumer on a stream.
//!
//! - A message's identity is its JetStream stream sequence, so a
//!   redelivered message carries the identity it had the first time.
//! - Messages are acknowledged (explicit ack) only after their events are
//!   stored; what is not acknowledged comes back after the consumer's
//!   `ack_wait`, which therefore governs how long redelivery after a crash
//!   takes.
//! - The consumer's `max_ack_pending` is `batch`, and on connecting with
//!   unacknowledged messages outstanding the source waits one `ack_wait`
//!   before pulling: after a crash those are redelivered before any newer
//!   one, so the broker's order is kept.
//! - One long-lived pull stream (`Consumer::stream`, with idle heartbeats)
//!   feeds `fetch`: a single message is returned as soon as it arrives,
//!   never held back to fill a batch.

use super::broker::{Broker, BrokerError, Message};
use crate::brokers::NatsSource;
use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream;
use async_nats::jetstream::ErrorCode;
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use std::time::Duration;

/// The idle heartbeat asked of the server on the pull stream; two missed
/// ones end the stream with an error, so a dead connection is noticed.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long acknowledging a batch (sending and flushing) may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long asking for the consumer's pending count may take.
const LAG_TIMEOUT: Duration = Duration::from_secs(3);

/// The payload of an explicit acknowledgement.
const ACK: Bytes = Bytes::from_static(b"+ACK");

/// Acknowledges one JetStream message: its `$JS.ACK…` reply subject.
#[derive(Debug, Clone)]
pub struct NatsAck(Subject);

/// A live connection: the client, the consumer and its message stream.
struct Conn {
    client: Client,
    consumer: PullConsumer,
    messages: pull::Stream,
}

/// A durable pull consumer on a JetStream stream, as a [`Broker`].
pub struct Nats {
    cfg: NatsSource,
    conn: Option<Conn>,
    /// An error the stream reported after some messages of a batch were
    /// taken; returned by the next `fetch` so those messages are not lost.
    failed: Option<String>,
}

impl Nats {
    /// A source for `cfg`; nothing is contacted before `connect`.
    pub fn new(cfg: NatsSource) -> Nats {
        Nats {
            cfg,
            conn: None,
            failed: None,
        }
    }

    /// The consumer configuration Spout wants.
    fn consumer_config(&self) -> pull::Config {
        let mut config = pull::Config {
            durable_name: Some(self.cfg.consumer.clone()),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        self.apply(&mut config);
        config
    }

    /// Sets on `config` the fields Spout relies on (ack policy and wait,
    /// `max_ack_pending`, filter), leaving the others as they are.
    fn apply(&self, config: &mut pull::Config) {
        config.ack_policy = AckPolicy::Explicit;
        config.ack_wait = self.cfg.ack_wait;
        config.max_ack_pending = i64::try_from(self.batch()).unwrap_or(i64::MAX);
        // One subject goes in `filter_subject`, which servers before 2.10
        // understand too; several need `filter_subjects` (2.10).
        match self.cfg.subjects.as_slice() {
            [one] => {
                config.filter_subject = one.clone();
                config.filter_subjects = Vec::new();
            }
            many => {
                config.filter_subject = String::new();
                config.filter_subjects = many.to_vec();
            }
        }
    }

    /// Messages per pull request and the consumer's `max_ack_pending`.
    fn batch(&self) -> usize {
        self.cfg.batch.max(1)
    }

    /// Whether the existing consumer's `config` differs from what Spout
    /// wants in the fields it relies on.
    fn differs(&self, config: &consumer::Config) -> bool {
        let mut have = if config.filter_subject.is_empty() {
            config.filter_subjects.clone()
        } else {
            vec![config.filter_subject.clone()]
        };
        have.sort();
        let mut want = self.cfg.subjects.clone();
        want.sort();
        config.ack_policy != AckPolicy::Explicit
            || config.ack_wait != self.cfg.ack_wait
            || usize::try_from(config.max_ack_pending).ok() != Some(self.batch())
            || have != want
    }

    /// Gets the stream, or creates it over `subjects`.
    async fn stream(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<stream::Stream, BrokerError> {
        let name = &self.cfg.stream;
        let err = match js.get_stream(name).await {
            Ok(stream) => return Ok(stream),
            Err(err) => err,
        };
        let missing = matches!(
            err.kind(),
            GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND
        );
        if !missing {
            return Err(BrokerError::Connect(format!("stream {name}: {err}")));
        }
        if self.cfg.subjects.is_empty() {
            return Err(BrokerError::Connect(format!(
                "stream {name} does not exist and no subjects are given to create it"
            )));
        }
        let config = stream::Config {
            name: name.clone(),
            subjects: self.cfg.subjects.clone(),
            ..Default::default()
        };
        match js.create_stream(config).await {
            Ok(stream) => {
                tracing::info!(
                    stream = %name,
                    subjects = ?self.cfg.subjects,
                    "nats: created stream"
                );
                Ok(stream)
            }
            // Another node may have created it meanwhile.
            Err(create) => js.get_stream(name).await.map_err(|_| {
                BrokerError::Connect(format!("cannot create stream {name}: {create}"))
            }),
        }
    }

    /// Gets the durable consumer or creates it; an existing one whose ack
    /// policy, `ack_wait`, `max_ack_pending` or filter differ is updated
    /// (its other settings kept), or used as it is if the server refuses.
    async fn consumer(&self, stream: &stream::Stream) -> Result<PullConsumer, BrokerError> {
        let name = &self.cfg.consumer;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(name, self.consumer_config())
            .await
            .map_err(|e| BrokerError::Connect(format!("consumer {name}: {e}")))?;
        let existing = &consumer.cached_info().config;
        if !self.differs(existing) {
            return Ok(consumer);
        }
        let mut config = match <pull::Config as consumer::FromConsumer>::try_from_consumer_config(
            existing.clone(),
        ) {
            Ok(config) => config,
            Err(e) => return Err(BrokerError::Connect(format!("consumer {name}: {e}"))),
        };
        self.apply(&mut config);
        match stream.update_consumer(config).await {
            Ok(updated) => {
                tracing::info!(consumer = %name, "nats: updated the consumer's settings");
                Ok(updated)
            }
            Err(e) => {
                tracing::warn!(
                    consumer = %name,
                    error = %e,
                    "nats: cannot update the consumer's settings; using it as it is"
                );
                Ok(consumer)
            }
        }
    }
}

impl Broker for Nats {
    type Ack = NatsAck;

    fn describe(&self) -> String {
        format!("nats {}/{}", self.cfg.stream, self.cfg.consumer)
    }

    async fn connect(&mut self) -> Result<(), BrokerError> {
        self.disconnect();
        let client = async_nats::ConnectOptions::new()
            .name("spout")
            .connect(self.cfg.url.as_str())
            .await
            .map_err(|e| BrokerError::Connect(format!("{}: {e}", self.cfg.url)))?;
        let js = async_nats::jetstream::new(client.clone());
        let stream = self.stream(&js).await?;
        let consumer = self.consumer(&stream).await?;
        // A pull request above the consumer's `max_batch` would be refused.
        let mut batch = self.batch();
        if let Ok(max) = usize::try_from(consumer.cached_info().config.max_batch) {
            if max > 0 {
                batch = batch.min(max);
            }
        }
        // Messages delivered before a crash (or a lost connection) and never
        // acknowledged come back only once their `ack_wait` has passed, and
        // the server then sends them before newer ones; a pull made sooner
        // would get the newer ones first (`max_ack_pending` holds them back
        // only when a whole batch was pending). So wait it out once.
        let unacked = consumer.cached_info().num_ack_pending;
        if unacked > 0 {
            tracing::info!(
                source = %self.describe(),
                unacked,
                wait = ?self.cfg.ack_wait,
                "nats: waiting for unacknowledged messages to come back first"
            );
            tokio::time::sleep(self.cfg.ack_wait).await;
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| BrokerError::Connect(format!("pull stream: {e}")))?;
        tracing::info!(
            source = %self.describe(),
            pending = consumer.cached_info().num_pending,
            "nats: connected"
        );
        self.conn = Some(Conn {
            client,
            consumer,
            messages,
        });
        Ok(())
    }

    async fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message<NatsAck>>, BrokerError> {
        if let Some(failed) = self.failed.take() {
            return Err(BrokerError::Lost(failed));
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| BrokerError::Lost("not connected".into()))?;
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        match tokio::time::timeout(wait, conn.messages.next()).await {
            Err(_) => return Ok(out),
            Ok(next) => push(&mut out, next)?,
        }
        while out.len() < max {
            // Only what has already arrived: never wait to fill a batch.
            let Some(next) = conn.messages.next().now_or_never() else {
                break;
            };
            if let Err(e) = push(&mut out, next) {
                // Hand over what was taken; the error comes with the next fetch.
                self.failed = Some(e.to_string());
                break;
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, acks: Vec<NatsAck>) -> Result<(), BrokerError> {
        if acks.is_empty() {
            return Ok(());
        }
        let client = &self
            .conn
            .as_ref()
            .ok_or_else(|| BrokerError::Lost("not connected".into()))?
            .client;
        let send = async {
            for NatsAck(reply) in acks {
                client.publish(reply, ACK).await?;
            }
            // Put the acks on the wire now, so a clean stop sees no
            // redelivery.
            client.flush().await?;
            Ok::<(), async_nats::Error>(())
        };
        // While the client is reconnecting, a flush waits for the new
        // connection; give up instead and let the relay reconnect.
        match tokio::time::timeout(ACK_TIMEOUT, send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BrokerError::Lost(format!("ack: {e}"))),
            Err(_) => Err(BrokerError::Lost("ack: timed out".into())),
        }
    }

    async fn lag(&mut self) -> Option<u64> {
        let conn = self.conn.as_ref()?;
        match tokio::time::timeout(LAG_TIMEOUT, conn.consumer.get_info()).await {
            Ok(Ok(info)) => Some(info.num_pending),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "nats: consumer info");
                None
            }
            Err(_) => None,
        }
    }

    fn disconnect(&mut self) {
        // Dropping the stream stops its pull requests; the connection
        // closes once the client's last handle is gone.
        self.conn = None;
        self.failed = None;
    }
}

/// Appends the stream's next item to `out`, or says why it cannot.
fn push(
    out: &mut Vec<Message<NatsAck>>,
    next: Option<Result<async_nats::jetstream::Message, pull::MessagesError>>,
) -> Result<(), BrokerError> {
    let message = match next {
        None => return Err(BrokerError::Lost("the message stream ended".into())),
        Some(Err(e)) => return Err(BrokerError::Lost(format!("messages: {e}"))),
        Some(Ok(message)) => message,
    };
    let sequence = match message.info() {
        Ok(info) => info.stream_sequence,
        Err(e) => {
            tracing::warn!(
                error = %e,
                subject = %message.subject,
                "nats: skipped a message without JetStream metadata"
            );
            return Ok(());
        }
    };
    let message = message.message;
    let Some(reply) = message.reply else {
        return Ok(());
    };
    let meta = message
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect();
    out.push(Message {
        identity: Some(sequence.to_string()),
        subject: Some(message.subject.to_string()),
        body: message.payload,
        meta,
        ack: NatsAck(reply),
    });
    Ok(())
}
