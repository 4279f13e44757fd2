//! What a bench run measured, as a table for people and JSON for machines.

use super::BenchArgs;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// One measurement (against the hub, or against the raw baseline or the
/// publish floor).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `spout`, `nchan`, `raw` or `floor`.
    pub label: String,
    /// Connections that got a `200` event stream.
    pub connected: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Events published (acknowledged).
    pub published: u64,
    /// Deliveries expected: each event × the connected subscribers of its topic.
    pub expected: u64,
    /// Event frames received, all subscribers together.
    pub delivered: u64,
    /// Failed publishes and broken streams.
    pub errors: u64,
    /// Seconds spent publishing.
    pub publish_seconds: f64,
    /// Deliveries per second over the publishing time plus the drain.
    pub deliveries_per_second: f64,
    /// Acknowledged publishes per second over the publishing time.
    pub publishes_per_second: f64,
    /// Publish → deliver latency percentiles, milliseconds.
    pub latency_ms: Latency,
    /// Server resident memory before connecting, KiB (with `--pid`).
    pub rss_idle_kib: Option<u64>,
    /// Server resident memory with every connection open, KiB.
    pub rss_connected_kib: Option<u64>,
    /// (connected − idle) / connections, bytes.
    pub rss_per_connection_bytes: Option<u64>,
    /// The reconnect storm, with `--storm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<super::StormRun>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds, in milliseconds (all
    /// zero without one, or when it is empty).
    pub(super) fn of(hist: Option<&Histogram<u64>>) -> Latency {
        let Some(h) = hist.filter(|h| !h.is_empty()) else {
            return Latency::default();
        };
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

impl Run {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        label: &str,
        connected: u64,
        failed: u64,
        published: u64,
        expected: u64,
        delivered: u64,
        errors: u64,
        publish_time: Duration,
        elapsed: Duration,
        hist: Option<&Histogram<u64>>,
        rss_idle: Option<u64>,
        rss_connected: Option<u64>,
    ) -> Run {
        Run {
            label: label.to_owned(),
            connected,
            failed,
            published,
            expected,
            delivered,
            errors,
            publish_seconds: publish_time.as_secs_f64(),
            deliveries_per_second: delivered as f64 / elapsed.as_secs_f64().max(1e-9),
            publishes_per_second: published as f64 / publish_time.as_secs_f64().max(1e-9),
            latency_ms: Latency::of(hist),
            rss_idle_kib: rss_idle,
            rss_connected_kib: rss_connected,
            rss_per_connection_bytes: match (rss_idle, rss_connected) {
                (Some(a), Some(b)) if connected > 0 => Some(b.saturating_sub(a) * 1024 / connected),
                _ => None,
            },
            storm: None,
        }
    }
}

/// The whole report: the options, the runs, and hub / raw.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Topics.
    pub topics: usize,
    /// Offered events per second.
    pub rate: u64,
    /// Payload bytes.
    pub size: usize,
    /// How events were published: `http` or the broker relayed.
    pub via: String,
    /// Publishing time asked for, seconds.
    pub duration_seconds: f64,
    /// The hub's run.
    pub hub: Run,
    /// The raw baseline's run (the publish floor's with `--publish-only`),
    /// with `--baseline`.
    pub baseline: Option<Run>,
    /// Hub deliveries/s ÷ raw deliveries/s (with `--publish-only`: hub
    /// publishes/s ÷ the publish floor's).
    pub hub_vs_raw: Option<f64>,
    /// What `hub_vs_raw` compares: `deliveries/s` or `publishes/s`.
    pub compared: &'static str,
    /// Limits that capped the run.
    pub warnings: Vec<String>,
}

impl Report {
    pub(super) fn new(
        args: &BenchArgs,
        hub: Run,
        baseline: Option<Run>,
        warnings: Vec<String>,
    ) -> Report {
        // Publish-only runs compare publishes/s (nothing is delivered).
        let (compared, rate): (_, fn(&Run) -> f64) = if args.publish_only {
            ("publishes/s", |r| r.publishes_per_second)
        } else {
            ("deliveries/s", |r| r.deliveries_per_second)
        };
        let hub_vs_raw = baseline
            .as_ref()
            .filter(|b| rate(b) > 0.0)
            .map(|b| rate(&hub) / rate(b));
        Report {
            subscribers: args.subscribers,
            topics: args.topics,
            rate: args.rate,
            size: args.size,
            via: format!("{:?}", args.via).to_lowercase(),
            duration_seconds: args.duration.as_secs_f64(),
            hub,
            baseline,
            hub_vs_raw,
            compared,
            warnings,
        }
    }

    /// The report as a plain-text table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} subscribers, {} topics, {} events/s offered via {}, {} B payloads, {:.0} s\n\n",
            self.subscribers, self.topics, self.rate, self.via, self.size, self.duration_seconds
        );
        out.push_str(&format!(
            "{:<6} {:>9} {:>6} {:>10} {:>10} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>10}\n",
            "", "connected", "failed", "published", "pub/s", "expected", "delivered", "deliveries/s", "p50 ms", "p90", "p99", "p99.9", "max", "errors", "B/conn"
        ));
        for r in std::iter::once(&self.hub).chain(self.baseline.iter()) {
            out.push_str(&format!(
                "{:<6} {:>9} {:>6} {:>10} {:>10.0} {:>12} {:>12} {:>12.0} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>7} {:>10}\n",
                r.label,
                r.connected,
                r.failed,
                r.published,
                r.publishes_per_second,
                r.expected,
                r.delivered,
                r.deliveries_per_second,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.p999,
                r.latency_ms.max,
                r.errors,
                r.rss_per_connection_bytes.map_or("-".into(), |b| b.to_string()),
            ));
        }
        if let Some(s) = &self.hub.storm {
            out.push_str(&format!(
                "\nstorm: {} streams {} events behind: connected {} failed {} | replayed {} of {} | caught up {}",
                s.streams, s.behind, s.connected, s.failed, s.replayed, s.expected, s.caught_up
            ));
            match s.all_caught_up_seconds {
                Some(t) => out.push_str(&format!(" | all in {t:.2} s")),
                None => out.push_str(" | NOT all caught up"),
            }
            out.push_str(&format!(" | {:.0} frames/s\n", s.frames_per_second));
            let l = &s.catch_up_ms;
            out.push_str(&format!(
                "storm: catch-up per stream ms p50 {:.0} p90 {:.0} p99 {:.0} max {:.0}\n",
                l.p50, l.p90, l.p99, l.max
            ));
            let l = &s.live_during_ms;
            out.push_str(&format!(
                "storm: live latency during it ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n",
                l.p50, l.p90, l.p99, l.p999, l.max
            ));
            if let (Some(a), Some(b)) = (s.rss_before_kib, s.rss_peak_kib) {
                out.push_str(&format!(
                    "storm: server RSS {} MiB before, {} MiB at peak (+{} MiB)\n",
                    a / 1024,
                    b / 1024,
                    b.saturating_sub(a) / 1024
                ));
            }
        }
        if let (Some(ratio), Some(b)) = (self.hub_vs_raw, &self.baseline) {
            out.push_str(&format!(
                "\n{} / {} {}: {ratio:.2}\n",
                self.hub.label, b.label, self.compared
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

/// Resident memory of process `pid` in KiB (Linux `/proc`).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
