//! The `spout` command: `serve` (the default), `check` and `bench`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use spout::app::App;
use spout::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "spout",
    version,
    about = "A durable Server-Sent Events hub with WASM plugins",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `spout [--config FILE] …` serves, as `spout serve` does.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured pipeline (the default command).
    Serve(ServeArgs),
    /// Validate a config file without serving; exits non-zero on errors.
    Check {
        /// The config file (also accepted as `--config FILE`).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// The config file.
        #[arg(long, short, conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// Rebuild a damaged log from every intact event (the damaged files are
    /// moved aside, not deleted) and move the id mark above every used id.
    Repair {
        /// The data directory (default: `log.path` of the config file).
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The config file whose `log.path` to repair.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Measure a running hub: N SSE subscribers, a fixed publish rate,
    /// deliveries/s and publish→deliver latency (optionally against a raw
    /// socket writer in the same run).
    Bench(spout::bench::BenchArgs),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// The config file.
    #[arg(long, short, default_value = "config.toml")]
    config: PathBuf,
    /// Listen on this address instead of `server.listen` (port 0 picks one).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep the log here instead of `log.path`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// If the log is damaged, repair it (as `spout repair`) and serve.
    #[arg(long)]
    recover: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPOUT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    spout::log::install_panic_hook();
    let result = match cli.command {
        Some(Command::Check { file, config }) => check(
            &file
                .or(config)
                .unwrap_or_else(|| PathBuf::from("config.toml")),
        ),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Bench(args)) => bench(args),
        Some(Command::Repair { dir, config }) => repair(dir, &config),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message before it already includes (many of our errors quote their cause).
fn report(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

/// `SPOUT_PLUGIN_CACHE` moves the compiled-plugin cache (e.g. to a shared
/// or persistent directory).
fn load_config(file: &std::path::Path) -> anyhow::Result<Config> {
    let mut config = Config::load(file)?;
    config.plugin_cache = std::env::var_os("SPOUT_PLUGIN_CACHE").map(PathBuf::from);
    Ok(config)
}

fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let config = load_config(file)?;
    spout::pipeline::check(&config)?;
    println!(
        "{}: ok (listen {}, log {}, fsync {:?}, {} plugins, {} stream routes)",
        file.display(),
        config.server.listen,
        config.log.path.display(),
        config.log.fsync,
        config.plugins.len(),
        config.streams.len().max(1)
    );
    Ok(())
}

fn repair(dir: Option<PathBuf>, config: &std::path::Path) -> anyhow::Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => load_config(config)?.log.path,
    };
    let report = spout::log::repair(&dir)?;
    println!("{report}");
    Ok(())
}

fn bench(args: spout::bench::BenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(spout::bench::run(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.log.path = dir;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work (`/poll` reads, ticket and ban stores, erasure, reloads)
        // queues past this many threads instead of starting more; catch-up
        // reads bound themselves further (replay.rs: two scans at once).
        .max_blocking_threads(64)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let app = match App::open(config.clone()) {
            Err(spout::app::OpenError::Log(err @ spout::log::LogError::Damaged { .. }))
                if args.recover =>
            {
                tracing::warn!(error = %err, "the log is damaged; repairing it (--recover)");
                let report = spout::log::repair(&config.log.path)?;
                for line in report.to_string().lines() {
                    tracing::warn!("{line}");
                }
                App::open(config)?
            }
            other => other?,
        };
        spout::server::run(listener, app, spout::server::shutdown_signal()).await?;
        anyhow::Ok(())
    })
}
