//! `[[source]]`s that relay a broker (`postgres`, `nats`, `amqp`, `mqtt`,
//! `redis`): checked and resolved from config into a [`BrokerRoute`], which
//! `source::relay` drives.

use super::Wiring;
use crate::brokers::{AmqpSource, MqttSource, NatsSource, PostgresSource, RedisSource};
use crate::config::SourceDecl;
use crate::config::{ConfigError, Origin};
use crate::plugin::typed::kinds;
use crate::plugin::{SourcePlugin, TransformPlugin};

/// Where dead letters go when a source names no `dead_letter` topic.
pub const DEFAULT_DEAD_LETTER: &str = "spout/dead-letter";

/// The broker a source relays, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerKind {
    /// A PostgreSQL outbox table.
    Postgres(PostgresSource),
    /// A NATS JetStream consumer.
    Nats(NatsSource),
    /// A RabbitMQ queue.
    Amqp(AmqpSource),
    /// An MQTT session.
    Mqtt(MqttSource),
    /// A Redis stream consumer group.
    Redis(RedisSource),
}

impl BrokerKind {
    /// `postgres`, `nats`, …: the config key, for logs and `/stats`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BrokerKind::Postgres(_) => "postgres",
            BrokerKind::Nats(_) => "nats",
            BrokerKind::Amqp(_) => "amqp",
            BrokerKind::Mqtt(_) => "mqtt",
            BrokerKind::Redis(_) => "redis",
        }
    }

    /// The default source name: kind and what it reads.
    fn default_name(&self) -> String {
        match self {
            BrokerKind::Postgres(c) => format!("postgres:{}", c.table),
            BrokerKind::Nats(c) => format!("nats:{}/{}", c.stream, c.consumer),
            BrokerKind::Amqp(c) => format!("amqp:{}", c.queue),
            BrokerKind::Mqtt(c) => format!("mqtt:{}", c.client_id),
            BrokerKind::Redis(c) => format!("redis:{}/{}", c.stream, c.group),
        }
    }

    /// Whether the broker's subjects are dot-separated (`orders.eu.42`),
    /// so `{subject}` turns dots into topic slashes.
    pub fn dotted_subjects(&self) -> bool {
        matches!(self, BrokerKind::Nats(_) | BrokerKind::Amqp(_))
    }
}

/// A broker source resolved from config.
#[derive(Debug, Clone)]
pub struct BrokerRoute {
    /// Its name in `/stats`, metrics and idempotency keys.
    pub name: String,
    /// What it reads.
    pub kind: BrokerKind,
    /// Maps each message to events (`on-input`); without one a message is
    /// a `/publish` body or data for `topic`.
    pub plugin: Option<SourcePlugin>,
    /// Run on each message's events before they are stored.
    pub transforms: Vec<TransformPlugin>,
    /// Topic template for bodies that are not `/publish` objects.
    pub topic: Option<String>,
    /// Where refused messages go.
    pub dead_letter: String,
    /// The body field that is a message's identity.
    pub id_field: Option<String>,
    /// Equal for an unchanged declaration (with unchanged plugins): a
    /// reload keeps such a source running.
    pub fingerprint: u64,
}

/// Whether `decl` declares a broker source.
pub(super) fn is_broker(decl: &SourceDecl) -> bool {
    decl.postgres.is_some()
        || decl.nats.is_some()
        || decl.amqp.is_some()
        || decl.mqtt.is_some()
        || decl.redis.is_some()
}

/// Resolves the broker source `decl` (the `index`th `[[source]]`).
pub(super) fn resolve(
    decl: &SourceDecl,
    index: usize,
    wiring: &Wiring<'_>,
    origin: &Origin,
) -> Result<BrokerRoute, ConfigError> {
    let route = format!("source[{index}]");
    let mut found: Vec<(std::ops::Range<usize>, BrokerKind)> = Vec::new();
    if let Some(c) = &decl.postgres {
        found.push((c.span(), BrokerKind::Postgres(c.get_ref().clone())));
    }
    if let Some(c) = &decl.nats {
        found.push((c.span(), BrokerKind::Nats(c.get_ref().clone())));
    }
    if let Some(c) = &decl.amqp {
        found.push((c.span(), BrokerKind::Amqp(c.get_ref().clone())));
    }
    if let Some(c) = &decl.mqtt {
        found.push((c.span(), BrokerKind::Mqtt(c.get_ref().clone())));
    }
    if let Some(c) = &decl.redis {
        found.push((c.span(), BrokerKind::Redis(c.get_ref().clone())));
    }
    let err = |span: std::ops::Range<usize>, key: &str, msg: String| {
        origin.error(span, format!("{route}{key}"), format!("{route}: {msg}"))
    };
    let (span, mut kind) = match found.len() {
        1 => found.remove(0),
        _ => {
            return Err(err(
                found[0].0.clone(),
                "",
                "give exactly one of `every`, `tail`, `webhook`, `postgres`, `nats`, `amqp`, `mqtt` or `redis`".into(),
            ))
        }
    };
    let key = format!(".{}", kind.as_str());
    if decl.every.is_some() || decl.tail.is_some() || decl.webhook.is_some() {
        return Err(err(
            span,
            "",
            "give exactly one of `every`, `tail`, `webhook`, `postgres`, `nats`, `amqp`, `mqtt` or `redis`".into(),
        ));
    }
    check_broker(&mut kind).map_err(|(k, msg)| err(span.clone(), &format!("{key}.{k}"), msg))?;
    let name = match &decl.name {
        Some(n) => {
            let ok = !n.get_ref().is_empty()
                && n.get_ref().len() <= 64
                && n.get_ref().bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(err(
                    n.span(),
                    ".name",
                    "a source name is 1 to 64 printable characters without spaces".into(),
                ));
            }
            n.get_ref().clone()
        }
        None => kind.default_name(),
    };
    let topic = match &decl.topic {
        Some(t) => {
            // A template: check it with a sample subject in place.
            let sample = t.get_ref().replace("{subject}", "s");
            crate::topic::validate_topic(&sample)
                .map_err(|e| err(t.span(), ".topic", format!("topic {:?}: {e}", t.get_ref())))?;
            Some(t.get_ref().clone())
        }
        None => None,
    };
    let dead_letter = match &decl.dead_letter {
        Some(t) => {
            crate::topic::validate_topic(t.get_ref()).map_err(|e| {
                err(
                    t.span(),
                    ".dead_letter",
                    format!("topic {:?}: {e}", t.get_ref()),
                )
            })?;
            t.get_ref().clone()
        }
        None => DEFAULT_DEAD_LETTER.to_owned(),
    };
    let id_field = decl.id_field.as_ref().map(|f| f.get_ref().clone());
    let plugin = match &decl.plugin {
        Some(p) => Some(
            wiring
                .slot(p, format!("{route}.plugin"), &route)
                .wire::<kinds::Source>()?,
        ),
        None => None,
    };
    let transforms = wiring.transforms(&decl.transforms, &format!("{route}.transforms"), &route)?;
    let fingerprint = super::fingerprint(
        &format!("{name:?} {kind:?} {topic:?} {dead_letter:?} {id_field:?}"),
        plugin
            .iter()
            .map(|p| p.fingerprint())
            .chain(transforms.iter().map(|t| t.fingerprint())),
    );
    Ok(BrokerRoute {
        name,
        kind,
        plugin,
        transforms,
        topic,
        dead_letter,
        id_field,
        fingerprint,
    })
}

/// Checks a broker's settings; `${NAME}` URLs are read from the
/// environment. The error names the key.
fn check_broker(kind: &mut BrokerKind) -> Result<(), (&'static str, String)> {
    let (url, batch) = match kind {
        BrokerKind::Postgres(c) => {
            let ident = |s: &str| {
                !s.is_empty()
                    && s.split('.').all(|p| {
                        !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
            };
            if !ident(&c.table) {
                return Err((
                    "table",
                    format!(
                        "table {:?}: letters, digits, `_` and one `.` for a schema",
                        c.table
                    ),
                ));
            }
            for (k, col) in [
                ("id_column", Some(&c.id_column)),
                ("payload_column", Some(&c.payload_column)),
                ("subject_column", c.subject_column.as_ref()),
            ] {
                if let Some(col) = col {
                    if !ident(col) || col.contains('.') {
                        return Err((k, format!("column {col:?}: letters, digits and `_`")));
                    }
                }
            }
            if let Some(ch) = &c.channel {
                if !ident(ch) || ch.contains('.') {
                    return Err((
                        "channel",
                        format!("channel {ch:?}: letters, digits and `_`"),
                    ));
                }
            }
            (&mut c.url, c.batch)
        }
        BrokerKind::Nats(c) => {
            if c.stream.is_empty() || c.consumer.is_empty() {
                return Err(("stream", "`stream` and `consumer` must not be empty".into()));
            }
            (&mut c.url, c.batch)
        }
        BrokerKind::Amqp(c) => {
            if c.queue.is_empty() {
                return Err(("queue", "`queue` must not be empty".into()));
            }
            (&mut c.url, c.batch)
        }
        BrokerKind::Mqtt(c) => {
            if c.topics.is_empty() {
                return Err(("topics", "subscribe to at least one topic filter".into()));
            }
            if c.qos > 1 {
                return Err(("qos", "qos is 0 or 1".into()));
            }
            if c.client_id.is_empty() {
                return Err(("client_id", "`client_id` must not be empty".into()));
            }
            (&mut c.url, c.batch)
        }
        BrokerKind::Redis(c) => {
            if c.stream.is_empty() || c.group.is_empty() {
                return Err(("stream", "`stream` and `group` must not be empty".into()));
            }
            (&mut c.url, c.batch)
        }
    };
    if !(1..=10_000).contains(&batch) {
        return Err(("batch", "batch is between 1 and 10000".into()));
    }
    if let Some(var) = url.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        *url = std::env::var(var)
            .map_err(|_| ("url", format!("environment variable `{var}` is not set")))?;
    }
    Ok(())
}
