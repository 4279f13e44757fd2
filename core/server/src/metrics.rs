//! Prometheus metrics: the global recorder and the per-topic counters.
//!
//! Every metric is named `spout_*`. Topic labels are capped so that a service
//! with a topic per user cannot blow up the metrics endpoint: past
//! [`MAX_TOPIC_LABELS`] distinct topics, the rest are counted under `_other`.

use metrics::Counter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Most distinct topics that get their own label.
pub const MAX_TOPIC_LABELS: usize = 1000;

/// Installs the process-wide Prometheus recorder (once) and returns a handle
/// that renders the text exposition for `GET /metrics`.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// Counters for one topic label.
pub struct TopicCounters {
    /// `spout_events_published_total{topic}`.
    pub published: Counter,
    /// `spout_events_delivered_total{topic}`: events queued to subscribers.
    pub delivered: Counter,
    /// Events fanned out on this node since start (for `/api/topics`).
    pub count: u64,
    /// The last of them.
    pub last_id: u64,
}

impl TopicCounters {
    fn new(label: &str) -> TopicCounters {
        TopicCounters {
            published: metrics::counter!("spout_events_published_total", "topic" => label.to_string()),
            delivered: metrics::counter!("spout_events_delivered_total", "topic" => label.to_string()),
            count: 0,
            last_id: 0,
        }
    }
}

/// Caches counter handles per topic so the hot path does not rebuild metric keys.
#[derive(Default)]
pub struct TopicMetrics {
    by_topic: HashMap<Arc<str>, TopicCounters>,
    other: Option<TopicCounters>,
}

impl TopicMetrics {
    /// Events fanned out to `topic` since start and the last one's id, if
    /// the topic has its own counters.
    pub fn seen(&self, topic: &str) -> Option<(u64, u64)> {
        self.by_topic.get(topic).map(|c| (c.count, c.last_id))
    }

    /// The counters for `topic` (or for `_other` once the cap is reached).
    pub fn get(&mut self, topic: &Arc<str>) -> &mut TopicCounters {
        if !self.by_topic.contains_key(topic) && self.by_topic.len() >= MAX_TOPIC_LABELS {
            return self
                .other
                .get_or_insert_with(|| TopicCounters::new("_other"));
        }
        self.by_topic
            .entry(topic.clone())
            .or_insert_with(|| TopicCounters::new(topic))
    }
}
