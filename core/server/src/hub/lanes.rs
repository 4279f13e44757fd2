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
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};

/// The lanes of one hub, started on first use per route.
pub(super) struct Lanes {
    senders: Mutex<HashMap<Arc<str>, mpsc::SyncSender<LaneJob>>>,
    topics: Arc<Mutex<TopicMetrics>>,
    lagged: Counter,
    /// Lane rounds that merged batches queued behind each other.
    coalesced: Counter,
}

impl Lanes {
    pub(super) fn new(topics: Arc<Mutex<TopicMetrics>>, lagged: Counter) -> Lanes {
        Lanes {
            senders: Mutex::new(HashMap::new()),
            topics,
            lagged,
            coalesced: metrics::counter!("spout_filter_rounds_coalesced_total"),
        }
    }

    /// Hands filter work to each route's lane (started on first use). A
    /// lane that is full makes its subscribers catch up from the log.
    pub(super) fn dispatch(&self, events: &[Arc<Event>], groups: impl Iterator<Item = GroupWork>) {
        let shared: Arc<[Arc<Event>]> = events.into();
        // One job per route with filters: a handful at most, so a list
        // searched by name (the route of the previous group, most often)
        // rather than a map hashing the name once per group.
        let mut by_route: Vec<(Arc<str>, LaneJob)> = Vec::new();
        for (g, subs) in groups {
            let Some(route) = subs.first().map(|(s, _)| &s.route) else {
                continue;
            };
            let at = match by_route.iter().rposition(|(r, _)| r == route) {
                Some(at) => at,
                None => {
                    let job = LaneJob {
                        events: shared.clone(),
                        groups: Vec::new(),
                    };
                    by_route.push((route.clone(), job));
                    by_route.len() - 1
                }
            };
            by_route[at].1.groups.push((g, subs));
        }
        let mut lanes = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        for (route, job) in by_route {
            let lane = lanes.entry(route.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::sync_channel(LANE_BACKLOG);
                let topics = self.topics.clone();
                let lagged = self.lagged.clone();
                let coalesced = self.coalesced.clone();
                let spawned = std::thread::Builder::new()
                    .name("spout-filter".into())
                    .spawn(move || run_lane(rx, topics, lagged, coalesced));
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

/// Most events, and bytes of frames, one lane round takes when jobs have
/// queued behind each other (the bounds of a catch-up read): a backlog is
/// filtered with one call per group, not one per committed batch.
const COALESCE_EVENTS: usize = 4096;
const COALESCE_BYTES: usize = 256 * 1024;

/// Runs one route's filters, in commit order, and queues what they keep.
fn run_lane(
    rx: mpsc::Receiver<LaneJob>,
    topics: Arc<Mutex<TopicMetrics>>,
    lagged: Counter,
    coalesced: Counter,
) {
    while let Ok(first) = rx.recv() {
        let job = coalesce(first, &rx, &coalesced);
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

/// `first` merged with the jobs already queued behind it, up to
/// [`COALESCE_EVENTS`] / [`COALESCE_BYTES`]: the events in commit order, each
/// group's subscribers once, each with its indices (ascending) into the
/// merged events. When the lane keeps up nothing is queued and `first` is
/// returned as it is; when it falls behind (many distinct filter keys, each
/// a plugin call per round) its rounds grow instead of its backlog.
fn coalesce(first: LaneJob, rx: &mpsc::Receiver<LaneJob>, coalesced: &Counter) -> LaneJob {
    let bytes = |events: &[Arc<Event>]| events.iter().map(|e| e.frame().len()).sum::<usize>();
    let (mut count, mut size) = (first.events.len(), bytes(&first.events));
    let mut more = Vec::new();
    while count < COALESCE_EVENTS && size < COALESCE_BYTES {
        let Ok(job) = rx.try_recv() else { break };
        count += job.events.len();
        size += bytes(&job.events);
        more.push(job);
    }
    if more.is_empty() {
        return first;
    }
    coalesced.increment(1);
    let mut events: Vec<Arc<Event>> = Vec::with_capacity(count);
    let mut groups: Vec<GroupWork> = Vec::new();
    let mut group_at: FxHashMap<*const FilterGroup, usize> = FxHashMap::default();
    let mut sub_at: FxHashMap<(usize, *const Subscriber), usize> = FxHashMap::default();
    for job in std::iter::once(first).chain(more) {
        let offset = events.len() as u32;
        events.extend(job.events.iter().cloned());
        for (group, subs) in job.groups {
            let g = *group_at.entry(Arc::as_ptr(&group)).or_insert_with(|| {
                groups.push((group.clone(), Vec::new()));
                groups.len() - 1
            });
            for (sub, ix) in subs {
                let members = &mut groups[g].1;
                let at = *sub_at.entry((g, Arc::as_ptr(&sub))).or_insert_with(|| {
                    members.push((sub.clone(), Vec::new()));
                    members.len() - 1
                });
                members[at].1.extend(ix.iter().map(|i| i + offset));
            }
        }
    }
    LaneJob {
        events: events.into(),
        groups,
    }
}
