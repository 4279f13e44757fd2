//! Follows a file like `tail -F` and hands each batch of new complete lines
//! to a source plugin's `on-input`.
//!
//! - Rotation (the file renamed away, a new one created): the old file is
//!   read to its end first, then the new one from its start.
//! - Truncation (the file got shorter than what was read): read again from
//!   the start.
//! - The position (file identity and offset) is kept per path in the
//!   node-local sled tree `tails` after each stored batch, so a restart or a config
//!   reload neither repeats nor skips lines. Drivers of one path share one
//!   state behind a lock, so an old driver still running during a reload
//!   cannot deliver a line the new one delivers too.
//!
//! notify wakes the driver on changes in the file's directory; a 500 ms
//! poll backs it up (network filesystems, missed events).

use super::{ingest, SourceRoute, Sources};
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most bytes handed to the plugin in one call.
const CHUNK: usize = 256 * 1024;
/// A line longer than this (no newline yet) is dropped with a warning.
const MAX_LINE: usize = 1024 * 1024;
/// How often the file is checked without a notification.
const POLL: Duration = Duration::from_millis(500);

/// Where reading stands in one file.
#[derive(Default)]
struct TailState {
    file: Option<File>,
    /// (device, inode) of `file`.
    ident: Option<(u64, u64)>,
    /// Bytes of `file` accounted for: lines delivered (or dropped as too
    /// long); `partial` follows it.
    pos: u64,
    /// Bytes read after the last newline.
    partial: Vec<u8>,
    /// Whether the start position was decided (first step done).
    initialized: bool,
}

type States = Mutex<HashMap<(PathBuf, PathBuf), Arc<Mutex<TailState>>>>;

/// One state per (data directory, followed path): two servers in one
/// process (tests) keep positions of their own.
fn states() -> &'static States {
    static STATES: OnceLock<States> = OnceLock::new();
    STATES.get_or_init(Default::default)
}

/// Starts following `path` on a thread of its own until `stop`.
pub fn spawn(
    sources: Sources,
    src: SourceRoute,
    path: PathBuf,
    from_start: bool,
    stop: CancellationToken,
) {
    let rt = tokio::runtime::Handle::current();
    let key = (sources.data_dir.clone(), path.clone());
    let state = states()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    let spawned = std::thread::Builder::new()
        .name("spout-tail".into())
        .spawn(move || {
            let tailer = Tailer {
                sources,
                src,
                path,
                from_start,
                rt,
            };
            tailer.run(&state, &stop);
            // The last driver of a path drops the shared state; a later one
            // starts from the position saved in the log's tree.
            let mut all = states().lock().unwrap_or_else(|e| e.into_inner());
            if Arc::strong_count(&state) == 2 {
                all.remove(&key);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start a file-tail thread");
    }
}

struct Tailer {
    sources: Sources,
    src: SourceRoute,
    path: PathBuf,
    from_start: bool,
    rt: tokio::runtime::Handle,
}

impl Tailer {
    fn run(&self, state: &Mutex<TailState>, stop: &CancellationToken) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        if let Err(error) = &watcher {
            tracing::warn!(path = %self.path.display(), %error, "cannot watch for changes; polling only");
        }
        tracing::info!(plugin = self.src.plugin.name(), path = %self.path.display(), "following file");
        loop {
            {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                // Checked under the lock: once a newer driver has the state,
                // this one delivers nothing more.
                if stop.is_cancelled() {
                    return;
                }
                if let Err(error) = self.step(&mut st) {
                    tracing::warn!(path = %self.path.display(), %error, "file tail");
                }
            }
            match rx.recv_timeout(POLL) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
            }
            // Coalesce a burst of notifications into one read.
            while rx.try_recv().is_ok() {}
        }
    }

    /// Reads whatever is new and delivers it.
    fn step(&self, st: &mut TailState) -> std::io::Result<()> {
        let current = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let ident = current.as_ref().map(|m| (m.dev(), m.ino()));
        if st.file.is_some() && ident != st.ident {
            // Rotated (or removed): finish the old file, then switch.
            self.drain(st)?;
            if !st.partial.is_empty() {
                // The old file's last line had no newline: it is complete now.
                st.partial.push(b'\n');
                let rest = std::mem::take(&mut st.partial);
                self.deliver(st, rest)?;
            }
            st.file = None;
            st.ident = None;
        }
        if st.file.is_none() {
            // The first look decides where to start: the saved position of
            // this very file, else its end (or start with `from_start`).
            // A file that appears later (rotation) is read from its start.
            let first = !st.initialized;
            st.initialized = true;
            let Some(meta) = &current else { return Ok(()) };
            let mut file = File::open(&self.path)?;
            st.pos = match (first, self.saved(ident)) {
                (true, Some(pos)) if pos <= meta.len() => pos,
                (true, _) if !self.from_start => meta.len(),
                _ => 0,
            };
            file.seek(SeekFrom::Start(st.pos))?;
            st.file = Some(file);
            st.ident = ident;
            st.partial.clear();
        }
        if let Some(meta) = &current {
            if meta.len() < st.pos {
                tracing::info!(path = %self.path.display(), "file truncated; reading from the start");
                st.pos = 0;
                st.partial.clear();
                if let Some(f) = st.file.as_mut() {
                    f.seek(SeekFrom::Start(0))?;
                }
            }
        }
        self.drain(st)
    }

    /// Reads the open file to its end, delivering complete lines in chunks.
    fn drain(&self, st: &mut TailState) -> std::io::Result<()> {
        loop {
            let Some(file) = st.file.as_mut() else {
                return Ok(());
            };
            // Straight into the line buffer, at most a chunk at a time.
            let n = file
                .by_ref()
                .take(CHUNK as u64)
                .read_to_end(&mut st.partial)?;
            if n == 0 {
                return Ok(());
            }
            let Some(last_nl) = memchr::memrchr(b'\n', &st.partial) else {
                if st.partial.len() > MAX_LINE {
                    tracing::warn!(path = %self.path.display(), bytes = st.partial.len(), "line too long; dropped");
                    st.pos += st.partial.len() as u64;
                    st.partial.clear();
                }
                continue;
            };
            let rest = st.partial.split_off(last_nl + 1);
            let lines = std::mem::replace(&mut st.partial, rest);
            self.deliver(st, lines)?;
        }
    }

    /// Hands complete lines to the plugin and stores what it returns; the
    /// position advances (and is saved) only once they are in the log.
    fn deliver(&self, st: &mut TailState, lines: Vec<u8>) -> std::io::Result<()> {
        let len = lines.len() as u64;
        let meta = vec![("path".to_owned(), self.path.display().to_string())];
        let returned = match self.src.plugin.on_input(&lines, &meta) {
            Ok(Ok(r)) => r,
            Ok(Err(denial)) => {
                tracing::warn!(plugin = self.src.plugin.name(), reason = %denial.reason, "source refused lines; skipped");
                Vec::new()
            }
            // Counted and logged by the plugin host; the lines are skipped
            // rather than retried forever.
            Err(_) => Vec::new(),
        };
        if !returned.is_empty() {
            if let Err(error) = self
                .rt
                .block_on(ingest(&self.sources.ingest, &self.src, returned))
            {
                if error.is_retryable() {
                    // Not stored (log unavailable): keep the position and try
                    // these lines again on the next step.
                    if let Some(f) = st.file.as_mut() {
                        f.seek(SeekFrom::Start(st.pos))?;
                    }
                    st.partial.clear();
                    return Err(std::io::Error::other(error.to_string()));
                }
                tracing::warn!(plugin = self.src.plugin.name(), %error, "source events refused");
            }
        }
        st.pos += len;
        self.save(st);
        Ok(())
    }

    fn tree(&self) -> Option<sled::Tree> {
        self.sources.positions.clone()
    }

    /// The saved offset for this path, if it belongs to the same file.
    fn saved(&self, ident: Option<(u64, u64)>) -> Option<u64> {
        let (dev, ino) = ident?;
        let v = self
            .tree()?
            .get(self.path.as_os_str().as_encoded_bytes())
            .ok()??;
        let v: [u8; 24] = v.as_ref().try_into().ok()?;
        let word =
            |i: usize| u64::from_be_bytes(v[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        (word(0) == dev && word(1) == ino).then(|| word(2))
    }

    fn save(&self, st: &TailState) {
        let (Some((dev, ino)), Some(tree)) = (st.ident, self.tree()) else {
            return;
        };
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&dev.to_be_bytes());
        v[8..16].copy_from_slice(&ino.to_be_bytes());
        v[16..].copy_from_slice(&st.pos.to_be_bytes());
        if let Err(error) = tree.insert(self.path.as_os_str().as_encoded_bytes(), &v[..]) {
            tracing::warn!(%error, "cannot save the file-tail position");
        }
    }
}
