//! The running graph built from config: which plugins exist, which route
//! authenticates and filters with which, what runs before the log.
//!
//! A [`Pipeline`] is immutable; hot reload ([`reload`]) builds a new one off
//! to the side and swaps it in whole, so a request sees one generation.

pub mod auth;
pub mod brokers;
pub mod ingest;
pub mod reload;
pub mod source;

use crate::config::{Config, ConfigError, Origin, Spanned};
use crate::filter::Stage;
use crate::plugin::typed::{kinds, PluginKind};
use crate::plugin::{
    AuthPlugin, Limits, Plugin, Runtime, SourcePlugin, TransformPlugin, Typed, MAX_MEMORY,
};
use crate::shape::BatchStage;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The path of the stream route used when config declares none; `/poll`
/// follows its rules.
pub const DEFAULT_STREAM: &str = "/events";

/// Spout's own paths: stream and static routes may not take them or a
/// path below them (nor `/`, the console's).
const OWN_PATHS: &[&str] = &[
    "/publish",
    "/tickets",
    "/poll",
    "/metrics",
    "/healthz",
    "/readyz",
    "/stats",
    "/hooks",
    "/connections",
    "/.well-known",
    "/api",
    "/openapi.json",
];

/// Whether `path` is `/` or one of [`OWN_PATHS`] or below one.
fn is_own_path(path: &str) -> bool {
    path == "/"
        || OWN_PATHS.iter().any(|own| {
            path.strip_prefix(own)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// An SSE route: who may subscribe and which events each subscription sees.
#[derive(Debug, Clone)]
pub struct Route {
    /// Request path.
    pub path: String,
    /// Auth plugin; `None` means open.
    pub auth: Option<AuthPlugin>,
    /// Filters, in order.
    pub filters: Arc<[Stage]>,
    /// Window batching, if configured.
    pub batch: Option<BatchStage>,
    /// Compression for subscribers that accept it, if configured.
    pub compress: Option<Arc<crate::shape::Compressor>>,
    /// Whether presence is tracked and announced (`presence = true`).
    pub presence: bool,
}

/// `POST /publish` rules.
#[derive(Debug, Clone, Default)]
pub struct PublishRules {
    /// Auth plugin for publishers.
    pub auth: Option<AuthPlugin>,
    /// Transforms run before the log, in order.
    pub transforms: Vec<TransformPlugin>,
}

/// The Mercure hub's auth plugins (`[mercure]`).
#[derive(Debug, Clone, Default)]
pub struct MercureRules {
    /// Verifies subscribers' tokens (and publishers' unless `publish_auth`).
    pub auth: Option<AuthPlugin>,
    /// Verifies publishers' tokens.
    pub publish_auth: Option<AuthPlugin>,
}

/// How the host feeds a source plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// `poll` on a timer.
    Every(std::time::Duration),
    /// New complete lines of a file, to `on-input`.
    Tail {
        /// The file followed.
        path: std::path::PathBuf,
        /// Start at the beginning of the file (else at its end).
        from_start: bool,
    },
    /// `POST /hooks/NAME` bodies, to `on-input`.
    Webhook(String),
}

/// A source plugin, how it is driven, and what runs before the log.
#[derive(Debug, Clone)]
pub struct SourceRoute {
    /// The source plugin.
    pub plugin: SourcePlugin,
    /// Timer, file or webhook.
    pub driver: Driver,
    /// Transforms run on its events before they are stored.
    pub transforms: Vec<TransformPlugin>,
    /// Equal for an unchanged declaration with unchanged plugins: a reload
    /// keeps such a source running.
    pub fingerprint: u64,
}

/// Equal for equal declarations (`what`, their `Debug` text) with
/// unchanged plugins (their [`Plugin::fingerprint`]s, in order): a reload
/// keeps such a source running.
fn fingerprint(what: &str, plugins: impl Iterator<Item = u64>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    what.hash(&mut h);
    for p in plugins {
        p.hash(&mut h);
    }
    h.finish()
}

/// The loaded plugins, for wiring config slots.
struct Wiring<'a> {
    plugins: &'a BTreeMap<String, Arc<Plugin>>,
    origin: &'a Origin,
}

impl Wiring<'_> {
    /// Wires a list of transform slots at `KEY[j]` (`publish.transforms`,
    /// `source[i].transforms`), in order.
    fn transforms(
        &self,
        slots: &[Spanned<String>],
        key: &str,
        route: &str,
    ) -> Result<Vec<TransformPlugin>, ConfigError> {
        slots
            .iter()
            .enumerate()
            .map(|(j, t)| {
                self.slot(t, format!("{key}[{j}]"), route)
                    .wire::<kinds::Transform>()
            })
            .collect()
    }

    /// The slot `slot` (at `key`, in `route`) to be wired.
    fn slot<'b>(&'b self, slot: &'b Spanned<String>, key: String, route: &'b str) -> Slot<'b> {
        Slot {
            plugins: self.plugins,
            origin: self.origin,
            slot,
            key,
            route,
        }
    }
}

/// A config slot naming a plugin, to be wired with a handle of the slot's
/// kind (an error naming the file, line and key otherwise).
struct Slot<'a> {
    plugins: &'a BTreeMap<String, Arc<Plugin>>,
    origin: &'a Origin,
    slot: &'a Spanned<String>,
    key: String,
    route: &'a str,
}

impl Slot<'_> {
    fn wire<K: PluginKind>(self) -> Result<Typed<K>, ConfigError> {
        let (name, route) = (self.slot.get_ref(), self.route);
        let plugin = self.plugins.get(name).ok_or_else(|| {
            self.origin.error(
                self.slot.span(),
                self.key.clone(),
                format!("{route}: no plugin named `{name}` (declare it as [plugins.{name}])"),
            )
        })?;
        Typed::of(plugin).ok_or_else(|| {
            self.origin.error(
                self.slot.span(),
                self.key,
                format!(
                    "{route}: plugin `{name}` is {} plugin; this slot takes {} plugin",
                    article(plugin.kind().as_str()),
                    article(K::KIND.as_str())
                ),
            )
        })
    }
}

/// A `[[static]]` route: files of `dir` under URL prefix `path`.
#[derive(Debug, Clone)]
pub struct StaticDir {
    /// URL prefix without a trailing `/` (empty for the root).
    pub path: String,
    /// The directory, resolved against the config file.
    pub dir: std::path::PathBuf,
    /// File served for a directory URL.
    pub index: String,
}

/// One generation of the pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// Increases by one with every successful reload.
    pub generation: u64,
    /// Every declared plugin by name.
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    /// SSE routes.
    pub streams: Vec<Route>,
    /// Publishing rules.
    pub publish: PublishRules,
    /// Sources: timers, tailed files, webhooks.
    pub sources: Vec<SourceRoute>,
    /// Broker sources: outbox, JetStream, AMQP, MQTT, Redis Streams.
    pub brokers: Vec<brokers::BrokerRoute>,
    /// The Mercure hub's plugins.
    pub mercure: MercureRules,
    /// Static file routes, longest prefix first.
    pub statics: Vec<StaticDir>,
    /// The operator API's auth plugin (`[api] auth`); `None`: the API is off.
    pub api: Option<AuthPlugin>,
}

impl Pipeline {
    /// Loads every declared plugin and resolves the routes. Any problem is
    /// an error naming the file, line, key and plugin.
    pub fn build(
        config: &Config,
        runtime: &Runtime,
        generation: u64,
    ) -> Result<Pipeline, ConfigError> {
        let origin = &config.origin;
        let base = origin.file.parent().unwrap_or(Path::new(""));
        let mut plugins = BTreeMap::new();
        for (name, decl) in &config.plugins {
            let key = format!("plugins.{name}");
            let memory = decl
                .limits
                .memory
                .map_or(crate::plugin::DEFAULT_MEMORY, |m| m.as_u64());
            if !((1 << 20)..=MAX_MEMORY).contains(&memory) {
                return Err(origin.error(
                    decl.source.span(),
                    format!("{key}.limits.memory"),
                    format!(
                        "plugin `{name}`: memory limit must be between 1MiB and {}MiB",
                        MAX_MEMORY >> 20
                    ),
                ));
            }
            let time = decl.limits.time.unwrap_or(crate::plugin::DEFAULT_TIME);
            if time.is_zero() || time > std::time::Duration::from_secs(10) {
                return Err(origin.error(
                    decl.source.span(),
                    format!("{key}.limits.time"),
                    format!("plugin `{name}`: time limit must be between 1ms and 10s"),
                ));
            }
            let concurrency = decl
                .limits
                .concurrency
                .unwrap_or(crate::plugin::DEFAULT_CONCURRENCY);
            let queue = decl.limits.queue.unwrap_or(crate::plugin::DEFAULT_QUEUE);
            if !(1..=256).contains(&concurrency) || queue > 100_000 {
                return Err(origin.error(
                    decl.source.span(),
                    format!("{key}.limits"),
                    format!("plugin `{name}`: concurrency must be between 1 and 256 and queue at most 100000"),
                ));
            }
            let mut table = decl.config.clone();
            expand_env(&mut table).map_err(|(path, var)| {
                origin.error(
                    decl.source.span(),
                    format!("{key}.config.{path}"),
                    format!("plugin `{name}`: environment variable `{var}` is not set"),
                )
            })?;
            let json = serde_json::to_string(&table).unwrap_or_else(|_| "{}".into());
            let plugin = runtime
                .load(
                    name,
                    decl.source.get_ref(),
                    base,
                    json,
                    Limits {
                        memory,
                        time,
                        concurrency,
                        queue,
                    },
                )
                .map_err(|e| {
                    origin.error(
                        decl.source.span(),
                        format!("{key}.use"),
                        format!("plugin `{name}`: {e}"),
                    )
                })?;
            tracing::info!(plugin = %name, kind = %plugin.kind(), source = %decl.source.get_ref(), "plugin loaded");
            plugins.insert(name.clone(), plugin);
        }

        let wiring = Wiring {
            plugins: &plugins,
            origin,
        };

        let mut streams = Vec::new();
        for (i, r) in config.streams.iter().enumerate() {
            let path = r.path.get_ref();
            let route = format!("stream route `{path}`");
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err(origin.error(
                    r.path.span(),
                    format!("stream[{i}].path"),
                    format!("{route}: a path starts with `/` and has no query"),
                ));
            }
            if is_own_path(path) {
                return Err(origin.error(
                    r.path.span(),
                    format!("stream[{i}].path"),
                    format!("{route}: `{path}` is reserved"),
                ));
            }
            if streams.iter().any(|s: &Route| s.path == *path) {
                return Err(origin.error(
                    r.path.span(),
                    format!("stream[{i}].path"),
                    format!("{route}: declared twice"),
                ));
            }
            let auth = match &r.auth {
                Some(a) => Some(
                    wiring
                        .slot(a, format!("stream[{i}].auth"), &route)
                        .wire::<kinds::Auth>()?,
                ),
                None => None,
            };
            let filters = r
                .filters
                .iter()
                .enumerate()
                .map(|(j, f)| {
                    let plugin = wiring
                        .slot(f, format!("stream[{i}].filters[{j}]"), &route)
                        .wire::<kinds::Filter>()?;
                    let on_error = config
                        .plugins
                        .get(f.get_ref())
                        .map(|d| d.on_error)
                        .unwrap_or_default();
                    Ok(Stage { plugin, on_error })
                })
                .collect::<Result<Vec<_>, ConfigError>>()?;
            let batch = match &r.batch {
                Some(b) => Some(BatchStage {
                    plugin: wiring
                        .slot(&b.plugin, format!("stream[{i}].batch.plugin"), &route)
                        .wire::<kinds::Batch>()?,
                    window: b.window,
                    max: b.max,
                }),
                None => None,
            };
            let compress = match &r.compress {
                Some(c) => Some(Arc::new(crate::shape::Compressor::new(
                    wiring
                        .slot(&c.plugin, format!("stream[{i}].compress.plugin"), &route)
                        .wire::<kinds::Compress>()?,
                ))),
                None => None,
            };
            streams.push(Route {
                path: path.clone(),
                auth,
                filters: filters.into(),
                batch,
                compress,
                presence: r.presence,
            });
        }
        if !streams.iter().any(|s| s.path == DEFAULT_STREAM) {
            streams.push(Route {
                path: DEFAULT_STREAM.into(),
                auth: None,
                filters: Arc::from(Vec::new()),
                batch: None,
                compress: None,
                presence: false,
            });
        }

        let route = "[publish]";
        let publish = PublishRules {
            auth: match &config.publish.auth {
                Some(a) => Some(
                    wiring
                        .slot(a, "publish.auth".into(), route)
                        .wire::<kinds::Auth>()?,
                ),
                None => None,
            },
            transforms: wiring.transforms(
                &config.publish.transforms,
                "publish.transforms",
                route,
            )?,
        };

        let mut sources: Vec<SourceRoute> = Vec::new();
        let mut relays: Vec<brokers::BrokerRoute> = Vec::new();
        for (i, src) in config.sources.iter().enumerate() {
            let route = format!("source[{i}]");
            if brokers::is_broker(src) {
                let relay = brokers::resolve(src, i, &wiring, origin)?;
                if let Some(other) = relays.iter().find(|r| r.name == relay.name) {
                    let span = src.name.as_ref().map_or(0..0, |n| n.span());
                    return Err(origin.error(
                        span,
                        format!("{route}.name"),
                        format!(
                            "{route}: source name `{}` is used twice; give one a `name`",
                            other.name
                        ),
                    ));
                }
                relays.push(relay);
                continue;
            }
            let broker_only = [
                ("name", src.name.as_ref()),
                ("topic", src.topic.as_ref()),
                ("dead_letter", src.dead_letter.as_ref()),
                ("id_field", src.id_field.as_ref()),
            ];
            if let Some((key, Some(v))) = broker_only.iter().find(|(_, v)| v.is_some()) {
                return Err(origin.error(
                    v.span(),
                    format!("{route}.{key}"),
                    format!("{route}: `{key}` is for broker sources (postgres, nats, amqp, mqtt, redis)"),
                ));
            }
            let Some(plugin) = &src.plugin else {
                return Err(origin.error(
                    0..0,
                    route.clone(),
                    format!("{route}: a source needs a `plugin` (for `every`, `tail` or `webhook`) or a broker (`postgres`, `nats`, `amqp`, `mqtt`, `redis`)"),
                ));
            };
            let plugin = wiring
                .slot(plugin, format!("{route}.plugin"), &route)
                .wire::<kinds::Source>()?;
            let driver = match (&src.every, &src.tail, &src.webhook) {
                (Some(every), None, None) => Driver::Every(*every),
                (None, Some(tail), None) => Driver::Tail {
                    path: base.join(tail.get_ref()),
                    from_start: src.from_start,
                },
                (None, None, Some(name)) => {
                    let valid = !name.get_ref().is_empty()
                        && name
                            .get_ref()
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !valid {
                        return Err(origin.error(
                            name.span(),
                            format!("{route}.webhook"),
                            format!("{route}: a webhook name is letters, digits, `-` and `_` (it becomes /hooks/NAME)"),
                        ));
                    }
                    if sources
                        .iter()
                        .any(|s| s.driver == Driver::Webhook(name.get_ref().clone()))
                    {
                        return Err(origin.error(
                            name.span(),
                            format!("{route}.webhook"),
                            format!("{route}: webhook `{}` is declared twice", name.get_ref()),
                        ));
                    }
                    Driver::Webhook(name.get_ref().clone())
                }
                _ => {
                    return Err(origin.error(
                        src.plugin.as_ref().map_or(0..0, |p| p.span()),
                        route.clone(),
                        format!("{route}: give exactly one of `every`, `tail`, `webhook`, `postgres`, `nats`, `amqp`, `mqtt` or `redis`"),
                    ))
                }
            };
            let transforms =
                wiring.transforms(&src.transforms, &format!("{route}.transforms"), &route)?;
            let fingerprint = fingerprint(
                &format!("{driver:?}"),
                std::iter::once(plugin.fingerprint())
                    .chain(transforms.iter().map(|t| t.fingerprint())),
            );
            sources.push(SourceRoute {
                plugin,
                driver,
                transforms,
                fingerprint,
            });
        }

        let mut statics = Vec::new();
        for (i, st) in config.statics.iter().enumerate() {
            let path = st.path.get_ref().trim_end_matches('/');
            let key = format!("static[{i}].path");
            if !st.path.get_ref().starts_with('/') || path.contains(['?', '#', '%', '\\']) {
                return Err(origin.error(
                    st.path.span(),
                    key,
                    format!(
                        "static route `{}`: a path starts with `/` and has no query or escapes",
                        st.path.get_ref()
                    ),
                ));
            }
            let taken = (path.is_empty() && config.server.console)
                || is_own_path(path)
                || streams.iter().any(|s| s.path == path);
            if taken {
                return Err(origin.error(
                    st.path.span(),
                    key,
                    format!("static route `{}`: the path is taken by Spout's own routes (for `/`, set `server.console = false`)", st.path.get_ref()),
                ));
            }
            let dir = base.join(st.dir.get_ref());
            if !dir.is_dir() {
                return Err(origin.error(
                    st.dir.span(),
                    format!("static[{i}].dir"),
                    format!(
                        "static route `{}`: {} is not a directory",
                        st.path.get_ref(),
                        dir.display()
                    ),
                ));
            }
            statics.push(StaticDir {
                path: path.to_owned(),
                dir,
                index: st.index.clone(),
            });
        }
        statics.sort_by_key(|s: &StaticDir| std::cmp::Reverse(s.path.len()));

        let mut mercure = MercureRules::default();
        if let Some(m) = &config.mercure {
            let route = "[mercure]";
            if let Some(a) = &m.auth {
                mercure.auth = Some(
                    wiring
                        .slot(a, "mercure.auth".into(), route)
                        .wire::<kinds::Auth>()?,
                );
            }
            if let Some(a) = &m.publish_auth {
                mercure.publish_auth = Some(
                    wiring
                        .slot(a, "mercure.publish_auth".into(), route)
                        .wire::<kinds::Auth>()?,
                );
            }
        }

        let api = match &config.api {
            Some(a) => Some(
                wiring
                    .slot(&a.auth, "api.auth".into(), "[api]")
                    .wire::<kinds::Auth>()?,
            ),
            None => None,
        };

        Ok(Pipeline {
            api,
            generation,
            plugins,
            streams,
            publish,
            sources,
            brokers: relays,
            mercure,
            statics,
        })
    }

    /// The stream route serving `path`.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.streams.iter().find(|r| r.path == path)
    }
}

/// Replaces every string value that is exactly `${NAME}` with the
/// environment variable NAME, so secrets stay out of config files (plugins
/// themselves cannot read the environment). Errors with the dotted path and
/// the variable.
fn expand_env(table: &mut toml::Table) -> Result<(), (String, String)> {
    fn walk(v: &mut toml::Value, path: &str) -> Result<(), (String, String)> {
        match v {
            toml::Value::String(s) => {
                if let Some(var) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                    *s = std::env::var(var).map_err(|_| (path.to_owned(), var.to_owned()))?;
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter_mut().enumerate() {
                    walk(v, &format!("{path}[{i}]"))?;
                }
            }
            toml::Value::Table(t) => {
                for (k, v) in t.iter_mut() {
                    walk(v, &format!("{path}.{k}"))?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    for (k, v) in table.iter_mut() {
        walk(v, k)?;
    }
    Ok(())
}

/// Checks a config the way serving would, without serving: loads every
/// plugin into a throwaway runtime (`spout check`).
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let dir = std::env::temp_dir().join(format!("spout-check-{}", std::process::id()));
    let db = sled::Config::new()
        .temporary(true)
        .path(dir.join("kv"))
        .open();
    let db = match db {
        Ok(db) => db,
        Err(e) => {
            return Err(error_at_start(
                &config.origin,
                format!("cannot open a scratch store: {e}"),
            ));
        }
    };
    let stores: crate::plugin::Stores = std::sync::Arc::new(move |name| {
        db.open_tree(format!("plugin:{name}"))
            .map(crate::log::Store::Local)
            .map_err(|e| crate::plugin::LoadError::Kv(e.to_string()))
    });
    let runtime = Runtime::new(config.plugin_cache_dir(), stores)
        .map_err(|e| error_at_start(&config.origin, e.to_string()))?;
    let result = Pipeline::build(config, &runtime, 0).map(|_| ());
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn error_at_start(origin: &Origin, message: String) -> ConfigError {
    origin.error(0..0, "plugins".into(), message)
}

/// "a filter", "an auth": a kind with its article, for error messages.
fn article(kind: &str) -> String {
    match kind.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}
