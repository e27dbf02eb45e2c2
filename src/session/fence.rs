//! Holding one request back until every earlier request of its client is answered.
//!
//! A client's requests travel on several backend connections (the shared ones, a
//! transaction's own), and two connections keep no order between them. Where the order
//! matters (a request that moves between a transaction's connection and the shared ones; see
//! [`super::tx`]), the request waits here until the earlier ones have their replies, which
//! means the nodes ran them; it is then routed and dispatched as if it had just been read.
//! Invariants: while a request is held nothing after it is parsed (as with CLIENT PAUSE's
//! hold, [`super::hold`]), so requests still run, and are answered, in the order they came;
//! the check costs a client without a transaction or a watch nothing but the flags it already
//! tests. An emulated cross-slot command ([`super::cross_slot`]) uses the same hold: it waits
//! here for the earlier replies before it starts, and holds everything after it until its
//! own reply is in.

use super::tx::{lane, must_wait};
use super::Session;
use crate::route::router::Route;
use bytes::Bytes;

/// What holds the client's next requests back.
pub(super) enum Fenced {
    /// A request waiting for the earlier requests' replies, as read.
    Request {
        /// Its arguments.
        args: Vec<Bytes>,
        /// Its bytes as they go to a node.
        wire: Bytes,
    },
    /// An emulated cross-slot command (its reply slot already queued) waiting for the
    /// earlier requests' replies before it starts.
    CrossSlot(Box<super::cross_slot::Pending>),
    /// An emulated cross-slot command running: nothing after it is read until every reply,
    /// its own included, is in.
    Running,
}

impl Fenced {
    /// Whether a request was read but not dispatched (the other holds have their reply slot
    /// queued already).
    pub(super) fn is_request(&self) -> bool {
        matches!(self, Fenced::Request { .. })
    }
}

impl Session {
    /// Whether a request routed to `route` (while a transaction or a watch is active) must
    /// wait for the earlier requests' replies: it changes lanes, and some are unanswered.
    pub(super) fn must_fence(&self, route: &Route) -> bool {
        let (in_multi, pinned, last_pinned) = self.tx.lanes();
        must_wait(lane(route, in_multi, pinned), last_pinned) && !self.all_answered()
    }

    /// Holds the request (`args`, `wire`) until every earlier request is answered; a reply's
    /// arrival wakes the session, which then routes and dispatches it.
    pub(super) fn fence(&mut self, args: Vec<Bytes>, wire: Bytes) {
        self.fenced = Some(Box::new(Fenced::Request { args, wire }));
    }

    /// The held request's bytes once every earlier request is answered (its arguments are
    /// put in `args`), to be routed and dispatched now.
    /// (An emulated cross-slot command is started here instead, once its turn came.)
    pub(super) fn release_fenced(&mut self, args: &mut Vec<Bytes>) -> Option<Bytes> {
        match self.fenced.as_deref()? {
            Fenced::Request { .. } if self.all_answered() => {
                let Fenced::Request { args: a, wire } = *self.fenced.take()? else {
                    return None;
                };
                *args = a;
                Some(wire)
            }
            Fenced::CrossSlot(p) if self.answered_before(p.slot()) => {
                if let Fenced::CrossSlot(p) = *self.fenced.take()? {
                    self.cross_slot_start(*p);
                }
                None
            }
            Fenced::Running if self.all_answered() => {
                self.fenced = None;
                None
            }
            _ => None,
        }
    }

    /// Whether a request is held (by CLIENT PAUSE or by this fence): nothing after it is
    /// parsed, and the client is not read from.
    pub(super) fn holding(&self) -> bool {
        self.paused.is_some() || self.fenced.is_some()
    }

    /// Whether every request read so far has its reply (written or waiting its turn).
    pub(super) fn all_answered(&self) -> bool {
        self.queue.iter().all(|s| s.is_filled())
    }
}
