//! `spout bench`: a load generator for SSE hubs, and the raw-socket baseline
//! it compares them with.
//!
//! It opens N SSE connections spread over T topics, publishes at a fixed
//! rate with a timestamp in every payload, and measures what arrives:
//! deliveries per second and publish→deliver latency (HDR histogram).
//! `--baseline` runs the same fan-out against a built-in raw writer (a tokio
//! TCP server writing the same SSE bytes, no log, no routing) in the same
//! run, so every report carries "Spout / raw". With `--publish-only` it
//! runs the same publishes against the publish floor instead (hyper
//! answering each POST, no log): "Spout / floor".
//!
//! A crate of its own, outside the server's layers: it speaks HTTP and SSE
//! to any hub over sockets and imports none of Spout's crates.

mod baseline;
mod client;
mod floor;
mod report;
mod storm;

pub use report::{Latency, Report, Run};
pub use storm::StormRun;

pub mod broker;
mod ingest;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Command-line options of `spout bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The hub to measure, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// More nodes of the same cluster (repeatable): subscribers and
    /// publishers are spread round-robin over `--url` and these, so events
    /// published on one node are delivered by the others.
    #[arg(long = "also", value_name = "URL")]
    pub also: Vec<String>,
    /// SSE connections to open.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Topics the connections are spread over (`bench/0` .. `bench/T-1`).
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// The stream route subscribers connect to.
    #[arg(long, default_value = "/events")]
    pub path: String,
    /// Extra query parameters for subscribers, e.g. `where=n:exists`;
    /// `{i}` becomes the subscriber's number (a filter key per subscriber).
    #[arg(long, default_value = "")]
    pub query: String,
    /// Idle subscribers opened before the measured ones, each on its own
    /// topic or pattern (`--idle-topic`): the cost of many distinct
    /// subscriptions that receive nothing of the load.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// The idle subscribers' selector; `{i}` becomes their number (e.g.
    /// `users/{i}/**`).
    #[arg(long, default_value = "idle/{i}")]
    pub idle_topic: String,
    /// Events published per second, in all.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Payload size in bytes (at least 20: a timestamp and padding).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// How long to publish.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Concurrent publishers sharing the rate.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Spread connection set-up over this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub ramp: Duration,
    /// Source addresses 127.0.0.1 .. 127.0.0.K for loopback connections,
    /// to get past one address's ~28k ephemeral ports.
    #[arg(long, default_value_t = 1)]
    pub source_addrs: u8,
    /// Report this process's resident memory (a local server's pid).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Also run the same load against the built-in raw-socket writer
    /// (with `--publish-only`: against the publish floor, a bare hyper
    /// server that answers each POST and stores nothing).
    #[arg(long)]
    pub baseline: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No live status line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Publish through a broker the hub relays (`[[source]]`, names as in
    /// docs/bench/sources.toml) instead of `POST /publish`.
    #[arg(long, value_enum, default_value = "http")]
    pub via: broker::Via,
    /// The broker's URL (default: this machine's, per `--via`).
    #[arg(long)]
    pub broker: Option<String>,
    /// Publish ingest alone: `--publishers` connections, one event per
    /// request back to back, no subscribers; reports publishes/s and the
    /// publish round trip.
    #[arg(long)]
    pub publish_only: bool,
    /// With `--publish-only`: the hub is nginx + Nchan (`POST
    /// /pub?id=bench-T`, the payload as the body), for a same-session
    /// reference.
    #[arg(long, requires = "publish_only")]
    pub nchan: bool,
    /// A reconnect storm: this many streams connect within `--storm-ramp`,
    /// `--storm-after` into the load, each with a `Last-Event-ID`
    /// `--behind` events back on a topic of their own (`bench/storm`), while
    /// the subscribers keep receiving the load.
    #[arg(long, default_value_t = 0)]
    pub storm: usize,
    /// Events each storm stream is behind.
    #[arg(long, default_value_t = 1000)]
    pub behind: u64,
    /// When the storm starts, counted from the start of publishing.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub storm_after: Duration,
    /// The storm's streams connect over this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub storm_ramp: Duration,
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `--url` is not `http://HOST:PORT`.
    #[error("--url must be http://HOST:PORT (got {0:?})")]
    Url(String),
    /// Options that cannot work together.
    #[error("{0}")]
    Args(String),
    /// The baseline server could not start.
    #[error("cannot start the baseline server: {0}")]
    Baseline(std::io::Error),
}

/// The address of an `http://HOST:PORT` URL.
fn address(url: &str) -> Result<SocketAddr, BenchError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| BenchError::Url(url.to_owned()))?;
    let host = rest.trim_end_matches('/');
    use std::net::ToSocketAddrs;
    host.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BenchError::Url(url.to_owned()))
}

impl BenchArgs {
    fn target(&self) -> Result<SocketAddr, BenchError> {
        address(&self.url)
    }

    /// `--url` and every `--also`: the nodes the load is spread over.
    fn nodes(&self) -> Result<Vec<SocketAddr>, BenchError> {
        std::iter::once(&self.url)
            .chain(&self.also)
            .map(|u| address(u))
            .collect()
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.size < 20 {
            return Err(BenchError::Args("--size must be at least 20 bytes".into()));
        }
        if self.topics == 0 || (self.subscribers == 0 && !self.publish_only) || self.publishers == 0
        {
            return Err(BenchError::Args(
                "--topics, --subscribers and --publishers must be at least 1".into(),
            ));
        }
        if !self.path.starts_with('/') || self.path.contains(['?', ' ']) {
            return Err(BenchError::Args(
                "--path must be a path like /events".into(),
            ));
        }
        if self.query.contains([' ', '#']) {
            return Err(BenchError::Args(
                "--query must be URL-encoded (no spaces)".into(),
            ));
        }
        if !self.also.is_empty() && (self.publish_only || self.via != broker::Via::Http) {
            return Err(BenchError::Args(
                "--also spreads HTTP subscribers and publishers over nodes: not with --publish-only or --via".into(),
            ));
        }
        if self.storm > 0 && (self.publish_only || self.behind == 0) {
            return Err(BenchError::Args(
                "--storm needs subscribers (not --publish-only) and --behind of at least 1".into(),
            ));
        }
        if self.source_addrs == 0 {
            return Err(BenchError::Args("--source-addrs must be at least 1".into()));
        }
        Ok(())
    }
}

/// Raises the open-file limit to what `needed` sockets take, if it can;
/// returns a warning when the limit stays below it.
fn raise_nofile(needed: u64) -> Option<String> {
    match rlimit::increase_nofile_limit(needed + 64) {
        Ok(limit) if limit >= needed + 16 => None,
        Ok(limit) => Some(format!(
            "the open-file limit is {limit} (hard limit), below the {needed} sockets asked for: connections past it will fail; run several bench processes or raise `ulimit -n`"
        )),
        Err(e) => Some(format!("cannot raise the open-file limit: {e}")),
    }
}

/// Source addresses to connect from.
fn sources(args: &BenchArgs, target: SocketAddr) -> Vec<Option<IpAddr>> {
    if target.ip().is_loopback() && args.source_addrs > 1 {
        (1..=args.source_addrs)
            .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))))
            .collect()
    } else {
        vec![None]
    }
}

/// Runs the bench (and the baseline if asked) and returns the report.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    args.check()?;
    let target = args.target()?;
    let mut warnings = Vec::new();
    let sockets = (args.subscribers + args.publishers + args.storm + args.idle) as u64;
    if let Some(w) = raise_nofile(if args.baseline { sockets * 2 } else { sockets }) {
        warnings.push(w);
    }
    if args.publish_only {
        let label = if args.nchan { "nchan" } else { "spout" };
        let hub = ingest::measure(&args, target, label).await;
        let floor = if args.baseline {
            let floor = floor::Floor::start().map_err(BenchError::Baseline)?;
            Some(ingest::measure(&args, floor.addr, "floor").await)
        } else {
            None
        };
        return Ok(Report::new(&args, hub, floor, warnings));
    }
    let from = sources(&args, target);
    let nodes = args.nodes()?;
    let hub = client::measure(&args, client::Target::Http(&nodes), &from, "spout").await;
    let baseline = if args.baseline {
        let server = baseline::Server::start(args.topics)
            .await
            .map_err(BenchError::Baseline)?;
        // The raw writer runs in this process: the server pid's memory says
        // nothing about it.
        let raw_args = BenchArgs {
            pid: None,
            storm: 0,
            ..args.clone()
        };
        let run = client::measure(&raw_args, client::Target::Raw(&server), &from, "raw").await;
        server.stop();
        Some(run)
    } else {
        None
    };
    Ok(Report::new(&args, hub, baseline, warnings))
}
