//! The log on Redis Streams, for cluster mode: every node appends to and
//! reads from one Redis stream, so every node has the same history.
//!
//! - One stream (`PREFIX:log`) holds every topic. One stream keeps one total
//!   order, which is what `Last-Event-ID` resume needs (an id means "after
//!   this point", whatever topics a subscriber asks for), and replay is one
//!   `XRANGE`; per-topic streams would need a merge of N streams per replay
//!   and a cursor per topic. A single Redis stream takes well over 100k
//!   `XADD`/s, more than a node fans out.
//! - Ids on the wire are the stream ids packed into one integer:
//!   `ms << 20 | seq`. Monotonic, so resume and the hub's cursor rules are
//!   unchanged, and any node turns one back into the stream id it names.
//! - Appends run one Lua script per request: idempotency keys and Mercure
//!   ids are checked and set (`PREFIX:dedupe:*`, expiring with retention)
//!   in the same atomic step as the `XADD … MAXLEN ~`. The publish is
//!   acknowledged when Redis answered.
//! - One reader per node (`XREAD BLOCK`) feeds the local hub, in stream
//!   order, from the last id it delivered; after a failure it reconnects
//!   with backoff and goes on from that id, so nothing is skipped or
//!   delivered twice.

use crate::config::RetentionConfig;
use crate::event::{now_ms, Event, NewEvent};
use crate::remote::{unavailable, Redis};
use crate::{dedupe_keys, record, Backend, BoxFuture, FanOut, LogError, View};
use redis::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Bits of a packed id that hold the stream id's sequence part.
const SEQ_BITS: u32 = 20;
/// How long the reader's `XREAD` blocks before it looks around.
const BLOCK_MS: u64 = 1000;
/// Entries per `XREAD`.
const READ_COUNT: usize = 1024;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Appends checked for duplicates and added in one atomic step.
/// KEYS[1] stream, KEYS[2] dedupe key prefix. ARGV[1] MAXLEN ('' = none),
/// ARGV[2] dedupe TTL in seconds, then per event: key dedupe, id dedupe
/// (each '' when absent), content digest (hex), record. A dedupe entry is
/// `ID|DIGEST`; a key already used with another digest makes the whole
/// request a conflict (`{'conflict', key, id}`) and nothing is added.
const APPEND: &str = r"
local function known(k, pending)
  if k == '' then return nil end
  local v = pending[k] or redis.call('GET', KEYS[2] .. k)
  if not v then return nil end
  local id, d = string.match(v, '^([^|]*)|?(.*)$')
  return id, d
end
local pending = {}
local i = 3
while i <= #ARGV do
  local k1, k2, dg = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local hit = false
  for _, k in ipairs({k1, k2}) do
    local id, d = known(k, pending)
    if id then
      if d ~= '' and d ~= dg then return {'conflict', k, id} end
      hit = true
      break
    end
  end
  if not hit then
    if k1 ~= '' then pending[k1] = '|' .. dg end
    if k2 ~= '' then pending[k2] = '|' .. dg end
  end
  i = i + 4
end
local out = {}
i = 3
while i <= #ARGV do
  local k1, k2, dg, rec = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local id = known(k1, {}) or known(k2, {})
  if id then
    out[#out + 1] = id
  else
    if ARGV[1] ~= '' then
      id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', rec)
    else
      id = redis.call('XADD', KEYS[1], '*', 'r', rec)
    end
    if k1 ~= '' then redis.call('SET', KEYS[2] .. k1, id .. '|' .. dg, 'EX', ARGV[2]) end
    if k2 ~= '' then redis.call('SET', KEYS[2] .. k2, id .. '|' .. dg, 'EX', ARGV[2]) end
    out[#out + 1] = id
  end
  i = i + 4
end
return out
";

/// Packs a stream id (`ms-seq`) into a wire id.
pub fn pack(stream_id: &str) -> Option<u64> {
    let (ms, seq) = stream_id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (seq < 1 << SEQ_BITS && ms < 1 << (64 - SEQ_BITS)).then_some(ms << SEQ_BITS | seq)
}

/// The stream id a wire id names.
pub fn unpack(id: u64) -> String {
    format!("{}-{}", id >> SEQ_BITS, id & ((1 << SEQ_BITS) - 1))
}

/// The Redis Streams backend of an [`crate::EventLog`] in cluster mode.
pub struct RedisLog {
    redis: Arc<Redis>,
    stream: String,
    dedupe: String,
    max_events: Option<u64>,
    max_age: Option<Duration>,
    dedupe_ttl: u64,
    /// Last id the reader handed to the hub.
    head: AtomicU64,
    /// First id still in the stream (0 when empty).
    first: AtomicU64,
    /// Entries in the stream.
    count: AtomicU64,
    /// Whether the reader is connected.
    healthy: AtomicBool,
    stop: CancellationToken,
}

impl RedisLog {
    /// Connects lazily: the reader task connects (and reconnects) in the
    /// background and hands what it reads to `fanout`; until it has
    /// connected, the node is not ready and publishes fail.
    pub(crate) fn start(
        redis: Arc<Redis>,
        retention: &RetentionConfig,
        fanout: Arc<FanOut>,
    ) -> Result<Arc<RedisLog>, LogError> {
        let prefix = redis.prefix.clone();
        let dedupe_ttl = retention
            .max_age
            .map_or(7 * 24 * 3600, |d| d.as_secs().max(1));
        let log = Arc::new(RedisLog {
            redis,
            stream: format!("{prefix}log"),
            dedupe: format!("{prefix}dedupe:"),
            max_events: retention.max_events,
            max_age: retention.max_age,
            dedupe_ttl,
            head: AtomicU64::new(0),
            first: AtomicU64::new(0),
            count: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| unavailable("cluster mode needs a tokio runtime"))?;
        rt.spawn(log.clone().run_reader(fanout));
        tracing::info!(stream = %log.stream, node = %log.redis.node_id, "log on Redis Streams");
        Ok(log)
    }

    /// Appends `events` in one atomic script; returns their packed ids
    /// (an event whose key or Mercure id is known returns the first id).
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, LogError> {
        let time_ms = now_ms();
        let script = redis::Script::new(APPEND);
        let mut inv = script.prepare_invoke();
        inv.key(&self.stream)
            .key(&self.dedupe)
            .arg(self.max_events.map_or(String::new(), |n| n.to_string()))
            .arg(self.dedupe_ttl);
        let mut buf = Vec::new();
        for ne in events {
            let [k1, k2] = dedupe_keys(
                &ne.topic,
                ne.key.as_deref(),
                ne.extra.as_ref().and_then(|x| x.wire_id.as_deref()),
            );
            let digest: String = if k1.is_some() || k2.is_some() {
                record::digest_new(&ne)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            } else {
                String::new()
            };
            let event = Event::new(0, time_ms, ne);
            buf.clear();
            record::encode_into(&mut buf, &event);
            inv.arg(k1.unwrap_or_default())
                .arg(k2.unwrap_or_default())
                .arg(&digest)
                .arg(&buf[..]);
        }
        let mut conn = self.redis.connection().await?;
        let ids: Vec<Vec<u8>> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        if ids.first().map(Vec::as_slice) == Some(b"conflict") {
            let key = ids.get(1).map_or(&[][..], Vec::as_slice);
            let id = ids
                .get(2)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(pack)
                .unwrap_or(0);
            return Err(LogError::Conflict {
                what: super::describe_key(key),
                id,
            });
        }
        let ids: Vec<String> = ids
            .into_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        ids.iter()
            .map(|s| pack(s).ok_or_else(|| unavailable(format!("unexpected stream id {s:?}"))))
            .collect()
    }

    /// Last id handed to the local hub.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Highest id no longer stored (everything before the first entry).
    pub fn trimmed(&self) -> u64 {
        match self.first.load(Ordering::Acquire) {
            0 => self.head(),
            first => first - 1,
        }
    }

    /// Lowest id still stored, or one past the head when empty.
    pub fn earliest(&self) -> u64 {
        match self.first.load(Ordering::Acquire) {
            0 => self.head() + 1,
            first => first,
        }
    }

    /// Entries in the stream (as of the reader's last look).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the reader is connected to Redis.
    pub fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.stop.is_cancelled()
    }

    async fn run_reader(self: Arc<Self>, fanout: Arc<FanOut>) {
        let up = metrics::gauge!("spout_cluster_redis_up");
        let reconnects = metrics::counter!("spout_cluster_reconnects_total");
        let mut last: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = self.read(&fanout, &mut last, &mut backoff, &up).await;
            self.healthy.store(false, Ordering::Release);
            up.set(0.0);
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, last = ?last, "Redis reader lost its connection");
                    reconnects.increment(1);
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Reads until stopped (`Ok`) or until Redis fails (`Err`).
    async fn read(
        &self,
        fanout: &FanOut,
        last: &mut Option<String>,
        backoff: &mut Duration,
        up: &metrics::Gauge,
    ) -> redis::RedisResult<()> {
        let mut conn = self
            .redis
            .dedicated(Duration::from_millis(BLOCK_MS + 5000))
            .await?;
        let _: () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{}reader:{}", self.redis.prefix, self.redis.node_id).replace(' ', "_"))
            .query_async(&mut conn)
            .await?;
        if last.is_none() {
            // Start after the newest entry: older ones are history (replay).
            let newest: Value = redis::cmd("XREVRANGE")
                .arg(&self.stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            let id = entries_of(newest).first().map_or(0, |e| e.0);
            self.head.store(id, Ordering::Release);
            *last = Some(if id == 0 { "0-0".into() } else { unpack(id) });
        }
        self.refresh(&mut conn).await?;
        // The publish path's connection may still be the one that broke:
        // make it answer before calling the node ready again.
        self.ping_writer().await?;
        self.healthy.store(true, Ordering::Release);
        up.set(1.0);
        *backoff = Duration::from_millis(100);
        tracing::info!(from = ?last, "Redis reader connected");
        let mut looked = std::time::Instant::now();
        loop {
            let from = last.clone().unwrap_or_else(|| "0-0".into());
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&from);
            let reply: Value = tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                r = xread.query_async(&mut conn) => r?,
            };
            let mut events = Vec::new();
            for (id, rec) in xread_entries(reply) {
                match record::decode(&rec).and_then(|v| v.to_event(id)) {
                    Ok(e) => events.push(Arc::new(e)),
                    Err(e) => tracing::error!(id, error = %e, "unreadable stream entry skipped"),
                }
                *last = Some(unpack(id));
                self.head.store(id, Ordering::Release);
                // The stream was empty at the last look: this is its first entry.
                let _ = self
                    .first
                    .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire);
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            // To the fan-out thread, never run here on a runtime worker
            // (filter plugins run in the sink); a full backlog waits.
            let mut pending = events;
            while !pending.is_empty() {
                match fanout.try_send(pending) {
                    Ok(()) => break,
                    Err(back) => {
                        pending = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            if looked.elapsed() >= Duration::from_secs(1) {
                looked = std::time::Instant::now();
                self.refresh(&mut conn).await?;
            }
        }
    }

    /// PINGs through the publish connection until it answers (it
    /// reconnects by itself after a failed command), a few tries at most.
    async fn ping_writer(&self) -> redis::RedisResult<()> {
        let mut last = None;
        for _ in 0..5 {
            let Ok(mut m) = self.redis.connection().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match redis::cmd("PING").query_async::<()>(&mut m).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Io, "publish connection not ready"))
        }))
    }

    /// Trims by age and reads the stream's size and first id.
    async fn refresh(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        if let Some(age) = self.max_age {
            let floor = now_ms().saturating_sub(age.as_millis() as u64);
            let _: Value = redis::cmd("XTRIM")
                .arg(&self.stream)
                .arg("MINID")
                .arg("~")
                .arg(format!("{floor}-0"))
                .query_async(conn)
                .await?;
        }
        let len: u64 = redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(conn)
            .await?;
        let first: Value = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        self.count.store(len, Ordering::Relaxed);
        self.first.store(
            entries_of(first).first().map_or(0, |e| e.0),
            Ordering::Release,
        );
        Ok(())
    }
}

impl Backend for RedisLog {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(self.append_events(events))
    }
    fn head(&self) -> u64 {
        RedisLog::head(self)
    }
    fn trimmed(&self) -> u64 {
        RedisLog::trimmed(self)
    }
    fn earliest(&self) -> u64 {
        RedisLog::earliest(self)
    }
    fn count(&self) -> u64 {
        RedisLog::count(self)
    }
    fn bytes(&self) -> Option<u64> {
        None
    }
    fn first_id(&self) -> Option<u64> {
        Some(RedisLog::earliest(self)).filter(|&e| e <= RedisLog::head(self))
    }
    fn scan(
        &self,
        after: u64,
        until: u64,
        max_scan: usize,
        visit: &mut dyn FnMut(u64, View<'_>) -> Result<bool, LogError>,
    ) -> Result<u64, LogError> {
        if after >= until || max_scan == 0 {
            return Ok(after.max(until));
        }
        let start = if after == 0 {
            "-".to_owned()
        } else {
            format!("({}", unpack(after))
        };
        let entries: Value = self.redis.with_sync(|c| {
            redis::cmd("XRANGE")
                .arg(&self.stream)
                .arg(&start)
                .arg(unpack(until))
                .arg("COUNT")
                .arg(max_scan)
                .query(c)
        })?;
        let entries = entries_of(entries);
        let full = entries.len() == max_scan;
        let mut cursor = after;
        for (id, rec) in &entries {
            let view =
                record::decode(rec).map_err(|source| LogError::Corrupt { id: *id, source })?;
            cursor = *id;
            if !visit(*id, view)? {
                return Ok(cursor);
            }
        }
        Ok(if full { cursor } else { until })
    }

    fn find_wire_id(&self, wire_id: &str) -> Result<Option<u64>, LogError> {
        let [_, key] = dedupe_keys("", None, Some(wire_id));
        let Some(key) = key else { return Ok(None) };
        let mut full = self.dedupe.clone().into_bytes();
        full.extend_from_slice(&key);
        let v: Option<String> = self
            .redis
            .with_sync(|c| redis::cmd("GET").arg(&full[..]).query(c))?;
        Ok(v.as_deref()
            .and_then(|v| v.split('|').next())
            .and_then(pack))
    }
    fn is_ready(&self) -> bool {
        RedisLog::is_ready(self)
    }
    fn erase(&self, matches: &(dyn Fn(&View<'_>) -> bool + Sync)) -> Result<u64, LogError> {
        // Walks the stream in pages; XDEL removes an entry for every node
        // at once (their replays read the same stream), and ids in a Redis
        // stream only grow, so an erased id is never handed out again.
        let mut start = "-".to_owned();
        let mut erased = 0u64;
        loop {
            let page: Value = self.redis.with_sync(|c| {
                redis::cmd("XRANGE")
                    .arg(&self.stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(ERASE_PAGE)
                    .query(c)
            })?;
            let entries = entries_of(page);
            let Some((last, _)) = entries.last() else {
                break;
            };
            start = format!("({}", unpack(*last));
            let full = entries.len() == ERASE_PAGE;
            let mut ids = Vec::new();
            let mut keys = Vec::new();
            for (id, rec) in &entries {
                let view =
                    record::decode(rec).map_err(|source| LogError::Corrupt { id: *id, source })?;
                if matches(&view) {
                    ids.push(unpack(*id));
                    for k in dedupe_keys(view.topic, view.key, view.wire_id)
                        .into_iter()
                        .flatten()
                    {
                        let mut full = self.dedupe.clone().into_bytes();
                        full.extend_from_slice(&k);
                        keys.push(full);
                    }
                }
            }
            if !ids.is_empty() {
                let n: u64 = self.redis.with_sync(|c| {
                    let mut p = redis::pipe();
                    p.cmd("XDEL").arg(&self.stream).arg(&ids);
                    if !keys.is_empty() {
                        p.cmd("DEL").arg(&keys).ignore();
                    }
                    let (n,): (u64,) = p.query(c)?;
                    Ok(n)
                })?;
                erased += n;
                self.count.fetch_sub(n.min(self.count()), Ordering::Relaxed);
            }
            if !full {
                break;
            }
        }
        Ok(erased)
    }
    fn close(&self) -> Result<(), LogError> {
        self.stop.cancel();
        Ok(())
    }
}

/// An `XREAD` reply (RESP2 array or RESP3 map of stream → entries) → entries.
fn xread_entries(reply: Value) -> Vec<(u64, Vec<u8>)> {
    let per_stream: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    per_stream.into_iter().flat_map(entries_of).collect()
}

/// `[[id, [field, value, …]], …]` → (packed id, value of field `r`).
/// Entries read per page while erasing.
const ERASE_PAGE: usize = 1000;

fn entries_of(v: Value) -> Vec<(u64, Vec<u8>)> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| {
            let Value::Array(mut pair) = e else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = match pair.pop()? {
                Value::BulkString(b) => pack(std::str::from_utf8(&b).ok()?)?,
                Value::SimpleString(s) => pack(&s)?,
                _ => return None,
            };
            let Value::Array(fields) = fields else {
                return None;
            };
            let mut it = fields.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if matches!(&k, Value::BulkString(b) if b == b"r") {
                    if let Value::BulkString(rec) = v {
                        return Some((id, rec));
                    }
                }
            }
            None
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_pack_and_unpack() {
        let id = pack("1700000000123-7").unwrap();
        assert_eq!(unpack(id), "1700000000123-7");
        assert!(pack("1700000000123-8").unwrap() > id);
        assert!(pack("1700000000124-0").unwrap() > pack("1700000000123-99").unwrap());
        assert_eq!(pack("0-1"), Some(1));
        assert_eq!(pack("x-1"), None);
        assert_eq!(pack("1-2000000"), None);
    }
}
