//! A session's per-request working memory, shared by the clients of one worker thread.
//!
//! Every request needs a few small vectors (its arguments and their positions, its key
//! positions, the reply queue and the output list) and a reply slot. Kept by every client
//! between requests, they were a quarter of an idle connection's memory (about 700 of 2,750
//! bytes). So they belong to the worker thread instead, and memory follows the number of
//! clients that are busy at once rather than the number connected:
//! - the request vectors ([`Request`]) are used only while a session parses and routes what it
//!   read, which no other session does at the same moment on that thread: one set per thread,
//!   borrowed for the length of a [`with_request`] call;
//! - reply slots are recycled through a per-thread pool ([`slot`], [`reuse`]) and rebound to
//!   the session that takes them;
//! - the reply queue and output list of a client that goes idle (nothing in flight, nothing to
//!   write) are parked ([`park`]) and taken by the next client that reads ([`unpark`]).
//!
//! None of this allocates per request; the cost is a few moves. Invariants: nothing in a pool
//! holds a request's data (vectors empty, slots recycled); pools are bounded, and what stayed
//! in a pool for a whole [`trim_unused`] interval is dropped. Thread-locals, because the pools
//! are per worker thread (sessions never move between workers) and the worker type, in the
//! backend layer, must not know the session's types.

use crate::local_notify::LocalNotify;
use crate::route::dispatch::ReplySlot;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// Parked reply queues a thread keeps: enough for the clients busy at the same moment.
const QUEUES_CAP: usize = 64;

/// Recycled reply slots a thread keeps (a slot is about 180 bytes).
const SLOTS_CAP: usize = 1024;

/// Vectors that grew past this many entries (a deep pipeline, a huge MSET) are not kept.
const KEPT_LEN: usize = 256;

/// The vectors a session uses while it parses and routes one request.
#[derive(Default)]
pub struct Request {
    /// The request's arguments.
    pub args: Vec<Bytes>,
    /// The parser's argument positions (swapped with the parser's, see
    /// [`crate::route::protocol::RequestParser::swap_ranges`]).
    pub ranges: Vec<(usize, usize)>,
    /// Key positions (routing).
    pub keys: Vec<usize>,
    /// Key positions (access control).
    pub acl_keys: Vec<usize>,
}

/// A reply queue and output list, parked while their client is idle.
type Queues = (VecDeque<Rc<ReplySlot>>, VecDeque<Bytes>);

/// A pool with its low-water mark since the last trim: the items below the mark were not
/// taken for a whole interval.
struct Pool<T> {
    items: Vec<T>,
    low: usize,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Pool {
            items: Vec::new(),
            low: 0,
        }
    }

    fn pop(&mut self) -> Option<T> {
        let item = self.items.pop();
        self.low = self.low.min(self.items.len());
        item
    }

    /// Drops the items nobody took since the last call (the pool is last-in first-out, so
    /// they are at the bottom); returns how many.
    fn trim(&mut self) -> usize {
        let unused = self.low.min(self.items.len());
        self.items.drain(..unused);
        self.low = self.items.len();
        unused
    }
}

/// One thread's pools; one thread-local, so each use costs one lookup.
struct Pools {
    slots: Pool<Rc<ReplySlot>>,
    queues: Pool<Queues>,
}

thread_local! {
    static REQUEST: RefCell<Request> = const {
        RefCell::new(Request {
            args: Vec::new(),
            ranges: Vec::new(),
            keys: Vec::new(),
            acl_keys: Vec::new(),
        })
    };
    static POOLS: RefCell<Pools> = const {
        RefCell::new(Pools {
            slots: Pool::new(),
            queues: Pool::new(),
        })
    };
}

/// Runs `f` with this thread's request vectors. Should it be called again from inside `f`
/// (nothing does), the inner call gets fresh vectors rather than a panic.
pub fn with_request<R>(f: impl FnOnce(&mut Request) -> R) -> R {
    REQUEST.with(|r| match r.try_borrow_mut() {
        Ok(mut req) => {
            let out = f(&mut req);
            if req.args.capacity() > KEPT_LEN {
                *req = Request::default();
            }
            out
        }
        Err(_) => f(&mut Request::default()),
    })
}

/// An empty reply slot for a request of the session that wakes `signal` and counts held
/// replies in `tally`: a recycled one when the thread has one.
pub fn slot(signal: &Rc<LocalNotify>, tally: &Rc<Cell<usize>>) -> Rc<ReplySlot> {
    match POOLS.with(|p| p.borrow_mut().slots.pop()) {
        Some(slot) => {
            slot.rebind(signal, tally);
            slot
        }
        None => ReplySlot::counted(signal, tally),
    }
}

/// Keeps a slot whose reply went out for a later request of any session of this thread, if
/// nothing else holds it (see [`ReplySlot::recycle`]).
pub fn reuse(slot: Rc<ReplySlot>) {
    if ReplySlot::recycle(&slot) {
        POOLS.with(|p| {
            let p = &mut p.borrow_mut().slots;
            if p.items.len() < SLOTS_CAP {
                p.items.push(slot);
            }
        });
    }
}

/// Parks an idle client's empty reply queue and output list for the next busy client.
pub fn park(queue: VecDeque<Rc<ReplySlot>>, out: VecDeque<Bytes>) {
    debug_assert!(queue.is_empty() && out.is_empty());
    let queue = match queue.capacity() <= KEPT_LEN {
        true => queue,
        false => VecDeque::new(),
    };
    let out = match out.capacity() <= KEPT_LEN {
        true => out,
        false => VecDeque::new(),
    };
    if queue.capacity() == 0 && out.capacity() == 0 {
        return;
    }
    POOLS.with(|p| {
        let p = &mut p.borrow_mut().queues;
        if p.items.len() < QUEUES_CAP {
            p.items.push((queue, out));
        }
    });
}

/// Gives a client about to read a parked reply queue and output list, if it has neither.
pub fn unpark(queue: &mut VecDeque<Rc<ReplySlot>>, out: &mut VecDeque<Bytes>) {
    if queue.capacity() > 0 || out.capacity() > 0 {
        return;
    }
    if let Some((q, o)) = POOLS.with(|p| p.borrow_mut().queues.pop()) {
        // The vectors replaced have no allocation: forgetting them leaks nothing and skips
        // their (empty) destructors on every request.
        std::mem::forget(std::mem::replace(queue, q));
        std::mem::forget(std::mem::replace(out, o));
    }
}

/// Drops the pooled slots and queues no session took since the previous call: after a burst
/// of busy clients, the worker does not keep their memory for ever. Called about once a
/// second by the worker; returns how many were dropped.
pub fn trim_unused() -> usize {
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        p.slots.trim() + p.queues.trim()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> (Rc<LocalNotify>, Rc<Cell<usize>>) {
        (Rc::new(LocalNotify::new()), Rc::new(Cell::new(0)))
    }

    #[test]
    fn a_recycled_slot_serves_its_next_session() {
        let (a, ta) = owner();
        let (b, tb) = owner();
        let first = slot(&a, &ta);
        first.fill(Bytes::from_static(b"+OK\r\n"));
        assert_eq!(first.take().as_deref(), Some(&b"+OK\r\n"[..]));
        let addr = Rc::as_ptr(&first);
        reuse(first);
        let second = slot(&b, &tb);
        assert_eq!(Rc::as_ptr(&second), addr, "the slot was reused");
        // It now counts held bytes in b's tally, not a's.
        second.fill(Bytes::from_static(b"+OK\r\n"));
        assert_eq!((ta.get(), tb.get()), (0, 5));
    }

    #[test]
    fn a_slot_still_held_elsewhere_is_not_pooled() {
        let (a, ta) = owner();
        let s = slot(&a, &ta);
        let other = Rc::clone(&s);
        reuse(s);
        let fresh = slot(&a, &ta);
        assert!(!Rc::ptr_eq(&fresh, &other));
    }

    #[test]
    fn pooled_items_nobody_took_are_dropped_at_the_next_trim() {
        let (a, ta) = owner();
        let slots: Vec<_> = (0..3).map(|_| slot(&a, &ta)).collect();
        for s in slots {
            reuse(s);
        }
        // Just returned: in use during this interval, so kept.
        assert_eq!(trim_unused(), 0);
        // One is taken and returned; the two others are not touched for an interval.
        reuse(slot(&a, &ta));
        assert_eq!(trim_unused(), 2);
        assert_eq!(trim_unused(), 1);
        assert_eq!(trim_unused(), 0);
    }

    #[test]
    fn parked_queues_go_to_a_client_that_has_none() {
        let mut q = VecDeque::with_capacity(4);
        q.push_back(slot(&owner().0, &owner().1));
        q.clear();
        park(q, VecDeque::with_capacity(4));
        let (mut queue, mut out) = (VecDeque::new(), VecDeque::new());
        unpark(&mut queue, &mut out);
        assert!(queue.capacity() >= 4 && out.capacity() >= 4);
        // An oversized or empty pair is not kept.
        park(VecDeque::new(), VecDeque::with_capacity(KEPT_LEN + 1));
        let (mut queue, mut out) = (VecDeque::new(), VecDeque::new());
        unpark(&mut queue, &mut out);
        assert_eq!((queue.capacity(), out.capacity()), (0, 0));
    }

    #[test]
    fn a_nested_request_borrow_gets_fresh_vectors() {
        with_request(|outer| {
            outer.args.push(Bytes::from_static(b"GET"));
            with_request(|inner| assert!(inner.args.is_empty()));
            outer.args.clear();
        });
    }
}
