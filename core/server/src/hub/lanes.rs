//! Filter verdicts, off the fan-out thread: each stream route with filters
//! has a lane (a thread) that runs its filter groups over committed batches
//! in commit order and queues what they keep. A filter that spins to its
//! deadline delays only its own route; a lane that falls behind makes its
//! subscribers catch up from the log instead of holding up anyone.

use super::subscriber::Subscriber;
use crate::event::Event;
use crate::filter::FilterGroup;
use crate::metrics::TopicMetrics;
use crate::plugin::wire::BatchBuilder;
use crate::visibility::Facts;
use metrics::Counter;
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};

/// The lanes of one hub, started on first use per route.
pub(super) struct Lanes {
    senders: Mutex<HashMap<Arc<str>, mpsc::SyncSender<LaneJob>>>,
    topics: Arc<Mutex<TopicMetrics>>,
    lagged: Counter,
}

impl Lanes {
    pub(super) fn new(topics: Arc<Mutex<TopicMetrics>>, lagged: Counter) -> Lanes {
        Lanes {
            senders: Mutex::new(HashMap::new()),
            topics,
            lagged,
        }
    }

    /// Hands filter work to each route's lane (started on first use). A
    /// lane that is full makes its subscribers catch up from the log.
    pub(super) fn dispatch(&self, events: &[Arc<Event>], groups: impl Iterator<Item = GroupWork>) {
        let shared: Arc<[Arc<Event>]> = events.into();
        let mut by_route: HashMap<Arc<str>, LaneJob> = HashMap::new();
        for (g, subs) in groups {
            let Some(route) = subs.first().map(|(s, _)| s.route.clone()) else {
                continue;
            };
            by_route
                .entry(route)
                .or_insert_with(|| LaneJob {
                    events: shared.clone(),
                    groups: Vec::new(),
                })
                .groups
                .push((g, subs));
        }
        let mut lanes = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        for (route, job) in by_route {
            let lane = lanes.entry(route.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::sync_channel(LANE_BACKLOG);
                let topics = self.topics.clone();
                let lagged = self.lagged.clone();
                let spawned = std::thread::Builder::new()
                    .name("spout-filter".into())
                    .spawn(move || run_lane(rx, topics, lagged));
                if let Err(err) = spawned {
                    tracing::error!(%route, error = %err, "cannot start a filter lane; its subscribers catch up from the log");
                }
                tx
            });
            if let Err(e) = lane.try_send(job) {
                let job = match e {
                    mpsc::TrySendError::Full(j) | mpsc::TrySendError::Disconnected(j) => j,
                };
                for (_, subs) in &job.groups {
                    for (s, _) in subs {
                        s.fall_behind(&self.lagged);
                    }
                }
            }
        }
    }
}

/// Filter work the fan-out thread hands to a route's lane: the committed
/// batch and, per filter group, its subscribers with the events (indices)
/// their topics matched.
pub(super) struct LaneJob {
    events: Arc<[Arc<Event>]>,
    groups: Vec<GroupWork>,
}

/// One filter group's subscribers, each with the indices of the events its
/// topics matched.
pub(super) type GroupWork = (Arc<FilterGroup>, Vec<(Arc<Subscriber>, Vec<u32>)>);

/// Batches a lane may hold before further ones make their subscribers catch
/// up from the log instead (they never wait for a lane, nor lose events).
const LANE_BACKLOG: usize = 256;

/// Runs one route's filters, in commit order, and queues what they keep.
fn run_lane(rx: mpsc::Receiver<LaneJob>, topics: Arc<Mutex<TopicMetrics>>, lagged: Counter) {
    while let Ok(job) = rx.recv() {
        // Once per event, not per delivery.
        let facts: Vec<Facts<'_>> = job.events.iter().map(|e| Facts::of_event(e)).collect();
        let mut delivered = vec![0u64; job.events.len()];
        for (group, subs) in &job.groups {
            // Subscribers of one group share user and selectors, so they
            // matched the same events; the union keeps it exact anyway.
            let mut wanted: Vec<u32> = subs.iter().flat_map(|(_, ix)| ix.iter().copied()).collect();
            wanted.sort_unstable();
            wanted.dedup();
            let mut keep = vec![false; job.events.len()];
            if group.is_active() {
                let mut batch = BatchBuilder::default();
                for &i in &wanted {
                    batch.push_event(&job.events[i as usize]);
                }
                for (&i, k) in wanted.iter().zip(group.evaluate(&batch)) {
                    keep[i as usize] = k;
                }
            } else {
                // The route's filters were removed by a reload.
                wanted.iter().for_each(|&i| keep[i as usize] = true);
            }
            for (sub, ix) in subs {
                for &i in ix {
                    let i = i as usize;
                    if keep[i] && sub.offer(&job.events[i], &facts[i], &lagged) {
                        delivered[i] += 1;
                    }
                }
            }
        }
        let mut topics = topics.lock().unwrap_or_else(|e| e.into_inner());
        for (e, n) in job.events.iter().zip(delivered).filter(|(_, n)| *n > 0) {
            topics.get(&e.topic).delivered.increment(n);
        }
    }
}
