//! `config.toml`: the whole server configuration, parsed strictly.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default),
//! durations are written like `"15s"`, sizes like `"256KiB"`, and every error
//! names the file, line, column and dotted key so `spout check` can point at it.

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use toml::Spanned;

/// The parsed configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server, SSE and request limits.
    pub server: ServerConfig,
    /// In-memory fan-out.
    pub hub: HubConfig,
    /// The durable event log.
    pub log: LogConfig,
    /// `[plugins.NAME]`: plugin instances the pipeline refers to by name.
    pub plugins: BTreeMap<String, PluginDecl>,
    /// `[[stream]]`: SSE routes with their auth and filters. Without any, one
    /// open route at `/events`.
    #[serde(rename = "stream")]
    pub streams: Vec<StreamRoute>,
    /// `[publish]`: who may publish and what runs before the log.
    pub publish: PublishRoute,
    /// `[[source]]`: source plugins the server drives.
    #[serde(rename = "source")]
    pub sources: Vec<SourceDecl>,
    /// `[[static]]`: directories served as files (example pages, an app).
    #[serde(rename = "static")]
    pub statics: Vec<StaticRoute>,
    /// `[mercure]`: the Mercure protocol at `/.well-known/mercure`; off
    /// when the section is absent.
    pub mercure: Option<MercureConfig>,
    /// `[api]`: the operator API under `/api` (topics, presence,
    /// disconnect and bans, history erasure, info); off when absent.
    pub api: Option<ApiConfig>,
    /// `[cluster]`: run as one of several nodes on Redis Streams; absent =
    /// the embedded sled log.
    pub cluster: Option<ClusterConfig>,
    /// Where the config came from (for error positions); not a config key.
    #[serde(skip)]
    pub origin: Origin,
    /// Where compiled plugins are cached (default `LOG_PATH/plugin-cache`);
    /// set from `SPOUT_PLUGIN_CACHE`, not a config key.
    #[serde(skip)]
    pub plugin_cache: Option<PathBuf>,
}

/// The file and text a config was parsed from, to point errors found after
/// parsing (pipeline validation) at a line.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The config file.
    pub file: PathBuf,
    /// Its text.
    pub text: std::sync::Arc<str>,
}

impl Origin {
    /// An [`ConfigError::Invalid`] at byte span `span` of this file.
    pub fn error(&self, span: std::ops::Range<usize>, key: String, message: String) -> ConfigError {
        self.invalid(span.start, Some(key), message)
    }

    fn invalid(&self, offset: usize, key: Option<String>, message: String) -> ConfigError {
        let (line, column) = position(&self.text, offset);
        ConfigError::Invalid {
            file: self.file.clone(),
            line,
            column,
            key,
            message,
        }
    }
}

/// `[plugins.NAME]`: one plugin instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginDecl {
    /// `builtin:NAME` or a path to a `.wasm` component (relative to the config file).
    #[serde(rename = "use")]
    pub source: Spanned<String>,
    /// The plugin's own settings, passed to its `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// Memory and time limits per instance and call.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Filters only: what a failed call means for the events (`drop` or `pass`).
    #[serde(default)]
    pub on_error: OnError,
}

/// `limits = { memory = "16MiB", time = "5ms", concurrency = 4, queue = 64 }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory per instance (default 16 MiB, at most 64 MiB).
    pub memory: Option<ByteSize>,
    /// Wall time per call (default 50ms).
    #[serde(default, with = "humantime_serde")]
    pub time: Option<Duration>,
    /// Calls running at once (default 4).
    pub concurrency: Option<usize>,
    /// Calls waiting for a turn; past it calls fail at once (default 64).
    pub queue: Option<usize>,
}

/// What happens to events when a filter call fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Drop the batch for that subscription key (fail closed).
    #[default]
    Drop,
    /// Deliver the batch unfiltered.
    Pass,
}

/// `[[stream]]`: an SSE route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRoute {
    /// Request path, e.g. `/events`. `/poll` uses the `/events` route's rules.
    pub path: Spanned<String>,
    /// Auth plugin deciding who may subscribe and to what.
    #[serde(default)]
    pub auth: Option<Spanned<String>>,
    /// Filter plugins, applied in order.
    #[serde(default)]
    pub filters: Vec<Spanned<String>>,
    /// Collect each connection's events over a window and merge them with a
    /// batch plugin (`event: batch`).
    #[serde(default)]
    pub batch: Option<BatchDecl>,
    /// Encode event data with a compress plugin, for subscribers that ask
    /// for it (`?accept-encoding=gzip` or `X-Spout-Accept-Encoding`).
    #[serde(default)]
    pub compress: Option<CompressDecl>,
    /// Track who receives each topic on this route for `GET /api/presence`
    /// and send the route's subscribers `event: join` / `event: leave`.
    #[serde(default)]
    pub presence: bool,
}

/// `batch = { plugin = "NAME", window = "100ms", max = 50 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchDecl {
    /// A `[plugins.NAME]` of the batch kind.
    pub plugin: Spanned<String>,
    /// How long a window stays open after its first event.
    #[serde(deserialize_with = "positive_duration")]
    pub window: Duration,
    /// A window closes early once it holds this many events.
    #[serde(default = "default_batch_max", deserialize_with = "positive_usize")]
    pub max: usize,
}

fn default_batch_max() -> usize {
    100
}

/// `compress = { plugin = "NAME" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressDecl {
    /// A `[plugins.NAME]` of the compress kind.
    pub plugin: Spanned<String>,
}

/// `[[static]]`: a directory served under a URL prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    /// URL prefix, e.g. `/app` (`/` is taken by the console unless it is off).
    pub path: Spanned<String>,
    /// The directory (relative to the config file).
    pub dir: Spanned<PathBuf>,
    /// File served for a directory URL.
    #[serde(default = "default_index")]
    pub index: String,
}

fn default_index() -> String {
    "index.html".into()
}

/// `[[source]]`: where events are born and how the host drives it: exactly
/// one of `every` (timer), `tail` (a file), `webhook` (`POST /hooks/NAME`),
/// or a broker (`postgres`, `nats`, `amqp`, `mqtt`, `redis`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDecl {
    /// A `[plugins.NAME]` of the source kind: required for timers, files
    /// and webhooks; for a broker it maps each message to events.
    #[serde(default)]
    pub plugin: Option<Spanned<String>>,
    /// Call the plugin's `poll` this often; what it returns is published.
    #[serde(default, deserialize_with = "positive_duration_opt")]
    pub every: Option<Duration>,
    /// Follow this file (relative to the config file) and hand each new
    /// complete line to the plugin's `on-input`; rotation and truncation
    /// are followed.
    #[serde(default)]
    pub tail: Option<Spanned<PathBuf>>,
    /// Tail from the start of the file instead of its end.
    #[serde(default)]
    pub from_start: bool,
    /// Serve `POST /hooks/NAME`: body and headers go to `on-input`; a
    /// denial is the HTTP answer and nothing is published.
    #[serde(default)]
    pub webhook: Option<Spanned<String>>,
    /// Drain a PostgreSQL outbox table.
    #[serde(default)]
    pub postgres: Option<Spanned<crate::brokers::PostgresSource>>,
    /// Consume a NATS JetStream stream.
    #[serde(default)]
    pub nats: Option<Spanned<crate::brokers::NatsSource>>,
    /// Consume a RabbitMQ queue.
    #[serde(default)]
    pub amqp: Option<Spanned<crate::brokers::AmqpSource>>,
    /// Subscribe to MQTT topics.
    #[serde(default)]
    pub mqtt: Option<Spanned<crate::brokers::MqttSource>>,
    /// Read a Redis stream as a consumer group.
    #[serde(default)]
    pub redis: Option<Spanned<crate::brokers::RedisSource>>,
    /// A broker source's name in `/stats`, metrics and idempotency keys
    /// (default: kind and target, e.g. `postgres:spout_outbox`).
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// Without a plugin, a message that is not a `/publish` JSON object is
    /// published to this topic with its body as data; `{subject}` is
    /// replaced by the broker subject as a topic (`orders.eu.42` →
    /// `orders/eu/42`).
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// Where a message that cannot become events goes, with the reason
    /// (default `spout/dead-letter`).
    #[serde(default)]
    pub dead_letter: Option<Spanned<String>>,
    /// A dotted field of the JSON body that is the message's identity,
    /// for protocols without a stable one (MQTT; AMQP without `message-id`).
    #[serde(default)]
    pub id_field: Option<Spanned<String>>,
    /// Transform plugins run on the produced events before they are stored.
    #[serde(default)]
    pub transforms: Vec<Spanned<String>>,
}

/// `[publish]`: `POST /publish`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishRoute {
    /// Auth plugin for publishers; the principal's topics bound what it may publish.
    pub auth: Option<Spanned<String>>,
    /// Transform plugins run on published events before they are stored.
    pub transforms: Vec<Spanned<String>>,
}

/// `[api]`: the operator API. Every call is authorized by `auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// An auth plugin (e.g. one using `builtin:auth-apikey`); a call it
    /// refuses gets its status, and the principal is logged with each call.
    pub auth: Spanned<String>,
}

/// `[cluster]`: several Spout nodes sharing one history in Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The shared engine; only `"redis"` (Redis Streams) exists.
    pub backend: ClusterBackend,
    /// Redis URL, e.g. `redis://127.0.0.1:6379` (`rediss://` for TLS).
    pub url: String,
    /// Prefix of every key this cluster uses.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// This node's name (default: hostname-pid).
    #[serde(default)]
    pub node_id: Option<String>,
}

/// The engine a cluster shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterBackend {
    /// Redis Streams.
    Redis,
}

fn default_prefix() -> String {
    "spout".into()
}

impl ClusterConfig {
    /// The configured node id, or `HOSTNAME-PID`.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// `[mercure]`: Spout as a Mercure hub (served by the `spout::http::mercure` module).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MercureConfig {
    /// Auth plugin (`auth-jwt` with `mercure = true`) for subscribers, and
    /// for publishers unless `publish_auth` is set. Without it nobody may
    /// publish and every subscriber is anonymous.
    pub auth: Option<Spanned<String>>,
    /// A separate auth plugin for publishers (Mercure's publisher key).
    pub publish_auth: Option<Spanned<String>>,
    /// Subscribers without a token receive public updates.
    pub anonymous: bool,
    /// Publish subscription events and serve the subscriptions API.
    pub subscriptions: bool,
    /// Origins allowed to subscribe from a browser (CORS, with credentials).
    pub cors_origins: Vec<String>,
    /// Origins allowed to publish from a browser; `*` allows any.
    pub publish_origins: Vec<String>,
}

/// `[server]`: the listener and what every connection gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port (the log line shows which).
    pub listen: SocketAddr,
    /// Interval between `:` heartbeat comments on idle streams.
    #[serde(deserialize_with = "positive_duration")]
    pub heartbeat: Duration,
    /// Reconnection delay sent to clients in the `retry:` field.
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// How long shutdown waits for streams to close before dropping them.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A client must finish sending request headers within this time.
    #[serde(deserialize_with = "positive_duration")]
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long is cut off (408).
    #[serde(deserialize_with = "positive_duration")]
    pub body_timeout: Duration,
    /// Trust a `?user=` query parameter as the subscriber's identity. Only for
    /// development: anyone can claim any user. Auth plugins replace it.
    pub insecure_user_param: bool,
    /// Cross-origin access; empty means same-origin only.
    pub cors: CorsConfig,
    /// Size and count limits.
    pub limits: LimitsConfig,
    /// `[server.tls]`: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls: Option<TlsConfig>,
    /// How long a ticket from `POST /tickets` stays valid (one use).
    #[serde(deserialize_with = "positive_duration")]
    pub ticket_ttl: Duration,
    /// Serve the built-in live console at `GET /`.
    pub console: bool,
}

/// `[server.tls]`: certificate and key files (PEM), reloaded when they change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first (relative to the config file).
    pub cert: PathBuf,
    /// Private key: PKCS#8, PKCS#1 or SEC1 (relative to the config file).
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            shutdown_grace: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            insecure_user_param: false,
            cors: CorsConfig::default(),
            limits: LimitsConfig::default(),
            tls: None,
            ticket_ttl: Duration::from_secs(30),
            console: true,
        }
    }
}

/// `[server.cors]`: which browser origins may use the API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Allowed origins (`"https://app.example"`), or `"*"` for any.
    pub origins: Vec<String>,
    /// Allow cookies and credentials (the origin is echoed, never `*`).
    pub credentials: bool,
}

/// `[server.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent SSE streams; past it new streams get 503.
    #[serde(deserialize_with = "positive_usize")]
    pub max_connections: usize,
    /// Largest `data` of one event.
    pub max_event_bytes: ByteSize,
    /// Largest publish request body.
    pub max_body_bytes: ByteSize,
    /// Most `topic` parameters one subscription may name.
    #[serde(deserialize_with = "positive_usize")]
    pub max_topics: usize,
    /// Stream opens (SSE, Mercure, `/poll`) one client IP may make per
    /// `per_ip_window`; more get 429 with `Retry-After`. 0 = unlimited.
    pub per_ip_attempts: u32,
    /// The window `per_ip_attempts` counts in.
    #[serde(deserialize_with = "positive_duration")]
    pub per_ip_window: Duration,
    /// Concurrent streams one user (principal) may hold. 0 = unlimited.
    pub per_user_connections: usize,
    /// What a user's stream past `per_user_connections` does.
    pub per_user_policy: UserPolicy,
    /// Proxies whose `X-Forwarded-For` names the client (CIDRs). From
    /// anyone else the header is ignored: the peer address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// What happens when a user opens one stream more than allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserPolicy {
    /// The new stream is refused with 429.
    #[default]
    Refuse,
    /// The user's oldest stream ends with `event: replaced`.
    ReplaceOldest,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 100_000,
            max_event_bytes: ByteSize::kib(256),
            max_body_bytes: ByteSize::mib(16),
            max_topics: 100,
            per_ip_attempts: 0,
            per_ip_window: Duration::from_secs(10),
            per_user_connections: 0,
            per_user_policy: UserPolicy::Refuse,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[hub]`: per-subscriber buffering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Events buffered in memory per subscriber before it is switched to
    /// catch-up reads from the log.
    #[serde(deserialize_with = "positive_usize")]
    pub queue: usize,
    /// A subscriber still behind after this long is closed with `event: overflow`.
    #[serde(deserialize_with = "positive_duration")]
    pub catchup_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue: 1024,
            catchup_timeout: Duration::from_secs(30),
        }
    }
}

/// When the log calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before acknowledging each group commit: acknowledged events survive a
    /// power loss or `kill -9`.
    Always,
    /// Every `flush_interval` in the background: a crash loses at most that window.
    Batch,
    /// Leave it to the OS and to shutdown.
    Never,
}

/// `[log]`: where and how events are stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Data directory; relative paths are resolved against the config file's directory.
    pub path: PathBuf,
    /// Durability mode.
    pub fsync: Fsync,
    /// Background flush interval for `fsync = "batch"`.
    #[serde(deserialize_with = "positive_duration")]
    pub flush_interval: Duration,
    /// What to keep.
    pub retention: RetentionConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            path: PathBuf::from("data"),
            fsync: Fsync::Batch,
            flush_interval: Duration::from_millis(100),
            retention: RetentionConfig::default(),
        }
    }
}

/// `[log.retention]`: the oldest events are removed when any bound is exceeded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Drop events older than this.
    #[serde(with = "humantime_serde::option")]
    pub max_age: Option<Duration>,
    /// Keep at most this many events.
    pub max_events: Option<u64>,
    /// Keep at most this many bytes of stored records.
    pub max_bytes: Option<ByteSize>,
    /// How often the background task enforces the bounds.
    #[serde(deserialize_with = "positive_duration")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age: Some(Duration::from_secs(24 * 3600)),
            max_events: Some(1_000_000),
            max_bytes: None,
            interval: Duration::from_secs(1),
        }
    }
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = humantime_serde::deserialize::<Duration, D>(d)?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("must be greater than zero"));
    }
    Ok(v)
}

fn positive_duration_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    positive_duration(d).map(Some)
}

fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(v)
}

/// A config file that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{file}:{line}:{column}: invalid config{}: {message}", key.as_deref().map(|k| format!(" at key `{k}`")).unwrap_or_default())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted path of the offending key, when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The directory compiled plugins are cached in.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.plugin_cache
            .clone()
            .unwrap_or_else(|| self.log.path.join("plugin-cache"))
    }

    /// Reads and validates `file`, resolving relative paths against its directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, file)?;
        let base = file.parent().unwrap_or(Path::new(""));
        if config.log.path.is_relative() {
            config.log.path = base.join(&config.log.path);
        }
        if let Some(tls) = &mut config.server.tls {
            for p in [&mut tls.cert, &mut tls.key] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// Parses config text; `file` names it in errors (also those found
    /// later, through [`Config::origin`]).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let origin = Origin {
            file: file.to_path_buf(),
            text: text.into(),
        };
        let at = |span: Option<std::ops::Range<usize>>| span.map_or(0, |s| s.start);
        let root = toml::de::DeTable::parse(text)
            .map_err(|e| origin.invalid(at(e.span()), None, e.message().trim().to_string()))?;
        check_tables(&origin, root.get_ref(), "")?;
        let de = toml::de::Deserializer::from(root);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = key_path(e.path());
            let inner = e.into_inner();
            origin.invalid(at(inner.span()), key, inner.message().trim().to_string())
        })?;
        config.origin = origin;
        Ok(config)
    }
}

/// Sections and sub-tables the config defines. serde's derive also reads a
/// struct from an array, by position (`hub = [5, "2s"]`), which a strict,
/// key-named format must not accept; these must be tables. `*` is any key,
/// `[]` any element of an array of tables.
const TABLES: &[&str] = &[
    "server",
    "server.cors",
    "server.limits",
    "server.tls",
    "hub",
    "log",
    "log.retention",
    "plugins",
    "plugins.*",
    "plugins.*.config",
    "plugins.*.limits",
    "stream[]",
    "stream[].batch",
    "stream[].compress",
    "publish",
    "source[]",
    "static[]",
    "mercure",
    "cluster",
];

/// Whether `path` (keys joined by `.`, array elements as `[]`) is `pattern`.
fn path_is(path: &str, pattern: &str) -> bool {
    let (mut p, mut q) = (path.split('.'), pattern.split('.'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || b == "*" => {}
            _ => return false,
        }
    }
}

/// Refuses a non-table value where [`TABLES`] expects a table, naming its key.
fn check_tables(
    origin: &Origin,
    table: &toml::de::DeTable<'_>,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter() {
        let k = key.get_ref();
        let path = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        };
        check_value(origin, value, &path)?;
    }
    Ok(())
}

fn check_value(
    origin: &Origin,
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    path: &str,
) -> Result<(), ConfigError> {
    let wants_table = TABLES.iter().any(|t| path_is(path, t));
    match value.get_ref() {
        toml::de::DeValue::Table(t) => check_tables(origin, t, path),
        toml::de::DeValue::Array(items) if !wants_table => {
            let element = format!("{path}[]");
            items
                .iter()
                .try_for_each(|item| check_value(origin, item, &element))
        }
        _ if wants_table => Err(origin.invalid(
            value.span().start,
            Some(path.replace("[]", "[…]")),
            "expected a table (`[section]` or `{ key = value }`)".into(),
        )),
        _ => Ok(()),
    }
}

/// The dotted TOML key of an error: `server.limits.max_topics`,
/// `stream[0].auth`, `server."a.b"`; serde's internal segments (those of
/// `Spanned`) left out. `None` for the document itself.
fn key_path(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with("$__serde") {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(key);
                } else {
                    // A TOML basic string: JSON's escapes are valid there.
                    out.push_str(&serde_json::to_string(key).unwrap_or_default());
                }
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_and_values() {
        let c = parse(
            "[server]\nlisten = \"127.0.0.1:0\"\nheartbeat = \"2s\"\n[log]\nfsync = \"always\"\nretention = { max_events = 10, max_bytes = \"1MiB\" }\n[server.limits]\nmax_event_bytes = \"1KiB\"\n",
        )
        .unwrap();
        assert_eq!(c.server.heartbeat, Duration::from_secs(2));
        assert_eq!(c.server.retry, Duration::from_secs(3));
        assert_eq!(c.log.fsync, Fsync::Always);
        assert_eq!(c.log.retention.max_events, Some(10));
        assert_eq!(c.log.retention.max_bytes, Some(ByteSize::mib(1)));
        assert_eq!(c.server.limits.max_event_bytes, ByteSize::kib(1));
        assert_eq!(c.server.limits.max_connections, 100_000);
    }

    #[test]
    fn unknown_key_names_line_column_and_key() {
        let err = parse("[server]\nheartbeat = \"1s\"\nlistn = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        match err {
            ConfigError::Invalid { line, column, .. } => assert_eq!((line, column), (3, 1)),
            other => panic!("{other:?}"),
        }
        assert!(msg.starts_with("test.toml:3:1:"), "{msg}");
        assert!(msg.contains("listn"), "{msg}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = parse("[log]\nfsync = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml:2:9:"), "{err}");
        assert!(err.contains("`log.fsync`"), "{err}");
        let err = parse("[server]\nheartbeat = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.heartbeat") && err.contains("greater than zero"),
            "{err}"
        );
        let err = parse("[server]\nheartbeat = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.heartbeat"), "{err}");
    }

    #[test]
    fn key_paths_are_toml_keys_without_serde_internals() {
        let key = |text: &str| match parse(text).unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key("[plugins.x]\nuse = 1\n").as_deref(),
            Some("plugins.x.use")
        );
        assert_eq!(key("[server]\n\"\" = 1\n").as_deref(), Some("server.\"\""));
        assert_eq!(key("[server.\"a.b\"]\n").as_deref(), Some("server.\"a.b\""));
        assert_eq!(
            key("[[stream]]\npath = 1\n").as_deref(),
            Some("stream[0].path")
        );
    }

    #[test]
    fn sections_are_tables_never_arrays() {
        for (text, key) in [
            ("hub = [5, \"2s\"]\n", "hub"),
            ("server = { limits = [7] }\n", "server.limits"),
            (
                "[[stream]]\npath = \"/e\"\nbatch = [\"b\", \"1s\"]\n",
                "stream[…].batch",
            ),
            ("[[mercure]]\n", "mercure"),
            ("[plugins]\nx = 1\n", "plugins.x"),
        ] {
            match parse(text).unwrap_err() {
                ConfigError::Invalid {
                    key: Some(k),
                    message,
                    ..
                } => {
                    assert_eq!(k, key, "{text}");
                    assert!(message.contains("expected a table"), "{message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // Arrays where arrays belong still parse.
        parse("[server.cors]\norigins = [\"*\"]\n[[stream]]\npath = \"/e\"\nfilters = []\n")
            .unwrap();
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("[server\n").unwrap_err().to_string();
        assert!(err.starts_with("test.toml:1:"), "{err}");
    }
}
