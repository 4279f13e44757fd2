//! What keeps one misbehaving plugin from stalling the others: a bounded
//! number of calls at once with a bounded queue behind them ([`Gate`]), and
//! a circuit breaker that makes a plugin that keeps failing fail at once
//! for a while ([`Breaker`]).
//!
//! A plugin that spins to its deadline on every call costs its callers one
//! deadline each; without these, 200 clients on a spinning auth route would
//! hold 200 threads for 50 ms apiece and everything sharing those threads
//! would wait. With them, `concurrency` calls run, `queue` more wait, the
//! rest are refused at once (`busy`), and after [`TRIP_AFTER`] failures in a
//! row every call is refused for [`COOLDOWN`] (`circuit_open`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Consecutive failed calls that open the circuit.
pub const TRIP_AFTER: u32 = 5;
/// How long an open circuit refuses calls before letting one through.
pub const COOLDOWN: Duration = Duration::from_secs(5);

/// Calls of one plugin running at once, and those waiting for a turn.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<(usize, usize)>,
    turn: Condvar,
    concurrency: usize,
    queue: usize,
}

/// A running call's place in the gate; dropping it lets the next one in.
pub struct Permit<'a>(&'a Gate);

impl Gate {
    /// A gate for `concurrency` calls at once and `queue` waiting.
    pub fn new(concurrency: usize, queue: usize) -> Gate {
        Gate {
            state: Mutex::new((0, 0)),
            turn: Condvar::new(),
            concurrency: concurrency.max(1),
            queue,
        }
    }

    /// Waits for a turn; `None` at once when the queue is full.
    pub fn enter(&self) -> Option<Permit<'_>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 < self.concurrency {
            s.0 += 1;
            return Some(Permit(self));
        }
        if s.1 >= self.queue {
            return None;
        }
        s.1 += 1;
        while s.0 >= self.concurrency {
            s = self.turn.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.1 -= 1;
        s.0 += 1;
        Some(Permit(self))
    }

    /// Whether a call arriving now would get a turn or a place in the
    /// queue (checked before handing a call to a thread at all).
    pub fn has_room(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 + s.1 < self.concurrency + self.queue
    }

    /// Calls running and waiting now.
    pub fn load(&self) -> (usize, usize) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 -= 1;
        drop(s);
        self.0.turn.notify_one();
    }
}

/// Opens after [`TRIP_AFTER`] consecutive failures; while open (for
/// [`COOLDOWN`]) calls fail at once. After the cool-down calls go through
/// again: a success closes it, a failure opens it again at once.
#[derive(Debug, Default)]
pub struct Breaker {
    consecutive: AtomicU32,
    open_until_ms: AtomicU64,
    trips: AtomicU64,
}

impl Breaker {
    /// Whether calls are refused at `now_ms`.
    pub fn is_open(&self, now_ms: u64) -> bool {
        now_ms < self.open_until_ms.load(Ordering::Acquire)
    }

    /// Records a call's outcome; returns true when this failure opened it.
    pub fn record(&self, ok: bool, now_ms: u64) -> bool {
        if ok {
            self.consecutive.store(0, Ordering::Release);
            return false;
        }
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= TRIP_AFTER && !self.is_open(now_ms) {
            self.open_until_ms
                .store(now_ms + COOLDOWN.as_millis() as u64, Ordering::Release);
            self.trips.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Times it opened since the plugin was loaded.
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Failures in a row right now.
    #[cfg(test)]
    pub fn consecutive(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn gate_bounds_running_and_waiting() {
        let gate = Arc::new(Gate::new(1, 1));
        let first = gate.enter().unwrap();
        assert!(gate.has_room());
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.enter().map(|_| ()).is_some());
        while gate.load() != (1, 1) {
            std::thread::yield_now();
        }
        assert!(!gate.has_room());
        assert!(gate.enter().is_none(), "past the queue: refused at once");
        drop(first);
        assert!(waiter.join().unwrap(), "the waiter got its turn");
        assert_eq!(gate.load(), (0, 0));
    }

    #[test]
    fn breaker_opens_after_failures_in_a_row_and_closes_on_success() {
        let b = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            assert!(!b.record(false, 1000));
        }
        assert!(!b.is_open(1000));
        assert!(b.record(false, 1000), "the K-th failure opens it");
        assert!(b.is_open(1000 + COOLDOWN.as_millis() as u64 - 1));
        let later = 1000 + COOLDOWN.as_millis() as u64;
        assert!(!b.is_open(later), "half open after the cool-down");
        assert!(b.record(false, later), "one more failure opens it again");
        let later = later + COOLDOWN.as_millis() as u64;
        assert!(!b.record(true, later));
        assert_eq!(b.consecutive(), 0);
        assert_eq!(b.trips(), 2);
    }
}
