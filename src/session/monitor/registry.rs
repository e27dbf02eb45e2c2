//! The proxy-wide list of MONITOR clients and the queue each one is fed through.
//!
//! Any worker's session may publish a line and any worker's session may be a monitor, so a
//! line crosses threads: it is pushed onto each monitor's own queue (a [`Bytes`] clone, the
//! text is shared) and the monitor's session is woken through its client entry
//! ([`Live::alert`]), only when it has not been woken for lines it has not taken yet.
//!
//! Invariants: [`Monitors::active`] is one relaxed load, the only cost the data path pays
//! while nobody monitors; a monitor is listed exactly while its [`Seat`] lives (dropping the
//! seat, on any exit path, unlists it); a queue never holds more than its limit: the line
//! that would pass it empties the queue and marks it overflowed, and the monitor's session
//! then disconnects the client, so a monitor that does not read costs bounded memory and
//! never slows the clients it watches.

use crate::session::clients::{Live, MONITOR};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Every MONITOR client of one proxy.
#[derive(Default)]
pub struct Monitors {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// How many monitors are listed; what the data path reads.
    count: AtomicUsize,
    /// The monitors' queues; replaced whole when one joins or leaves, so publishing takes no
    /// lock over the list.
    feeds: ArcSwap<Vec<Arc<Feed>>>,
}

/// One monitor's queue of lines not yet taken by its session.
struct Feed {
    queue: Mutex<Queue>,
    /// The monitor's client entry: its session is woken through it.
    live: Arc<Live>,
    /// The most bytes the queue may hold.
    limit: usize,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Bytes>,
    bytes: usize,
    /// A line did not fit: lines were lost, and the monitor must be disconnected.
    overflow: bool,
}

/// What a monitor's session finds in its queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// The lines that arrived since the last take (possibly none), with their total size.
    Lines(usize),
    /// The queue passed its limit: the monitor is cut.
    Overflow,
}

/// A monitor's place in [`Monitors`]: listed while it lives.
pub struct Seat {
    inner: Arc<Inner>,
    feed: Arc<Feed>,
}

impl Monitors {
    /// Whether any client monitors (one relaxed load: the data path's only cost when none
    /// does).
    pub fn active(&self) -> bool {
        self.inner.count.load(Relaxed) != 0
    }

    /// Lists a new monitor whose session `live` belongs to, with a queue of at most `limit`
    /// bytes.
    pub fn join(&self, live: Arc<Live>, limit: usize) -> Seat {
        let feed = Arc::new(Feed {
            queue: Mutex::new(Queue::default()),
            live,
            limit,
        });
        self.inner.feeds.rcu(|cur| {
            let mut next = Vec::with_capacity(cur.len() + 1);
            next.extend(cur.iter().cloned());
            next.push(Arc::clone(&feed));
            next
        });
        self.inner.count.fetch_add(1, Relaxed);
        Seat {
            inner: Arc::clone(&self.inner),
            feed,
        }
    }

    /// Hands `line` to every monitor (the same bytes to each) and wakes the ones that are
    /// not already due to look.
    pub fn publish(&self, line: &Bytes) {
        for feed in self.inner.feeds.load().iter() {
            {
                let mut q = feed.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.overflow {
                    continue;
                }
                if q.bytes + line.len() > feed.limit {
                    *q = Queue {
                        overflow: true,
                        ..Queue::default()
                    };
                } else {
                    q.bytes += line.len();
                    q.lines.push_back(line.clone());
                }
            }
            feed.live.alert(MONITOR);
        }
    }

    /// How many clients monitor now.
    pub fn count(&self) -> usize {
        self.inner.count.load(Relaxed)
    }
}

impl Seat {
    /// Moves the lines that arrived into `out`. Call after clearing [`MONITOR`] in the
    /// client's attention bits, so a line published meanwhile wakes the session again.
    pub fn take(&self, out: &mut VecDeque<Bytes>) -> Taken {
        let mut q = self.feed.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.overflow {
            return Taken::Overflow;
        }
        let bytes = std::mem::take(&mut q.bytes);
        out.extend(q.lines.drain(..));
        Taken::Lines(bytes)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.inner.feeds.rcu(|cur| {
            cur.iter()
                .filter(|f| !Arc::ptr_eq(f, &self.feed))
                .cloned()
                .collect::<Vec<_>>()
        });
        self.inner.count.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::clients::Registry;
    use std::sync::atomic::Ordering;

    #[test]
    fn lines_reach_every_monitor_in_order_until_it_leaves() {
        let clients = Registry::default();
        let (a, b) = (
            clients.add(1, String::new(), String::new(), 1),
            clients.add(2, String::new(), String::new(), 2),
        );
        let m = Monitors::default();
        assert!(!m.active());
        let seat_a = m.join(Arc::clone(&a), 1000);
        let seat_b = m.join(Arc::clone(&b), 1000);
        assert!(m.active() && m.count() == 2);
        m.publish(&Bytes::from_static(b"one"));
        m.publish(&Bytes::from_static(b"two"));
        assert_eq!(a.attention.load(Ordering::Relaxed) & MONITOR, MONITOR);
        let mut out = VecDeque::new();
        assert_eq!(seat_a.take(&mut out), Taken::Lines(6));
        assert_eq!(out, [&b"one"[..], b"two"]);
        assert_eq!(seat_a.take(&mut out), Taken::Lines(0));
        drop(seat_b);
        assert_eq!(m.count(), 1);
        m.publish(&Bytes::from_static(b"three"));
        drop(seat_a);
        assert!(!m.active());
        m.publish(&Bytes::from_static(b"nobody"));
    }

    #[test]
    fn a_queue_past_its_limit_overflows_alone() {
        let clients = Registry::default();
        let (a, b) = (
            clients.add(1, String::new(), String::new(), 1),
            clients.add(2, String::new(), String::new(), 2),
        );
        let m = Monitors::default();
        let slow = m.join(a, 10);
        let fast = m.join(b, 10);
        let line = Bytes::from_static(b"123456");
        m.publish(&line);
        let mut out = VecDeque::new();
        assert_eq!(fast.take(&mut out), Taken::Lines(6));
        m.publish(&line);
        assert_eq!(slow.take(&mut VecDeque::new()), Taken::Overflow);
        assert_eq!(fast.take(&mut out), Taken::Lines(6));
        m.publish(&line);
        assert_eq!(slow.take(&mut VecDeque::new()), Taken::Overflow);
    }
}
