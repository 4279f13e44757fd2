//! One subscriber's bounded queue: the hub pushes, the stream drains.
//!
//! A `Mutex<VecDeque>` with the reader's waker beside it. tokio's `mpsc`
//! allocated ~1 KB per subscriber up front (its channel state with
//! cache-padded halves plus a first block of 32 slots, massif at 2,000
//! streams) and spent a semaphore and a slot atomic per push; this queue
//! allocates on its first item and gives a drained burst's memory back.
//! The hub holds the only sender for as long as the stream lives, so a
//! receiver never sees the queue closed; a sender sees it closed once the
//! receiver is gone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Capacity a drained queue keeps; a burst's extra memory is given back.
const KEEP: usize = 32;

struct State<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    receiver_alive: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing here can panic while holding the lock but a failed
        // allocation; the queue's state stays consistent either way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why an item was not queued; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The pushing end (the hub's).
pub struct Sender<T>(Arc<Shared<T>>);

/// The draining end (the stream's).
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue that holds at most `capacity` items (at least one).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            receiver_alive: true,
        }),
        capacity: capacity.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` and wakes the receiver, unless the queue is full or
    /// the receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.0.lock();
            if !state.receiver_alive {
                return Err(TrySendError::Closed(item));
            }
            if state.items.len() >= self.0.capacity {
                return Err(TrySendError::Full(item));
            }
            state.items.push_back(item);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Receiver<T> {
    /// Moves up to `limit` queued items into `out`; `Pending` (and a wake-up
    /// at the next push) when there is none.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        limit: usize,
    ) -> Poll<usize> {
        let mut state = self.0.lock();
        if state.items.is_empty() {
            match &state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let n = state.items.len().min(limit.max(1));
        out.extend(state.items.drain(..n));
        if state.items.is_empty() && state.items.capacity() > KEEP {
            state.items.shrink_to(KEEP);
        }
        Poll::Ready(n)
    }

    /// The next queued item, if any.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.lock().items.pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.0.lock();
            state.receiver_alive = false;
            state.waker = None;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn bounded_in_order_wakes_once_per_wait_and_closes_with_the_receiver() {
        let (tx, mut rx) = channel::<u32>(3);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Pending);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.try_send(9), Err(TrySendError::Full(9)));
        // One wake for the one wait, not one per item.
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 2), Poll::Ready(2));
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 2), Poll::Ready(1));
        assert_eq!(out, [0, 1, 2]);
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed(4)));
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, mut rx) = channel::<u64>(4096);
        for i in 0..4096 {
            tx.try_send(i).unwrap();
        }
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        while rx.poll_recv_many(&mut cx, &mut out, 128).is_ready() {}
        assert_eq!(out.len(), 4096);
        assert!(rx.0.lock().items.capacity() <= KEEP);
    }
}
