//! The reply side of a session: the in-order queue of reply slots, and the output it writes
//! to the socket.
//!
//! Invariants: replies leave in request order (a slot is collected only once every slot
//! before it was); a reply's bytes count toward the client's output limits from the moment
//! it arrives (`held`) until it is written (`out_bytes`); a slot whose reply went out is
//! recycled for a later request of any session of the thread ([`super::scratch`]).

use super::{scratch, Session};
use crate::route::dispatch::ReplySlot;
use bytes::{Buf, Bytes};
use std::io;
use std::rc::Rc;

/// Most buffers one vectored write takes.
const MAX_IOV: usize = 256;

impl Session {
    /// Queues a reply the proxy composed itself (ready at once, in order with the others).
    pub(super) fn push_ready(&mut self, reply: Bytes) {
        self.queue
            .push_back(ReplySlot::ready_counted(&self.signal, reply, &self.held));
    }

    /// A reply slot for this client's queue; its reply counts toward the output limits from
    /// the moment it arrives, even while it waits behind an unanswered request.
    pub(super) fn new_slot(&mut self) -> Rc<ReplySlot> {
        scratch::slot(&self.signal, &self.held)
    }

    /// Keeps a slot whose reply went out for a later request (see [`scratch::reuse`]).
    pub(super) fn reuse(&mut self, slot: Rc<ReplySlot>) {
        scratch::reuse(slot);
    }

    /// Moves the filled replies at the head of the queue to the output.
    pub(super) fn collect_ready(&mut self) {
        while let Some(head) = self.queue.front() {
            match head.take() {
                Some(_) if head.discarded() => {
                    self.obs.dropped(&self.worker, head);
                    if let Some(slot) = self.queue.pop_front() {
                        self.reuse(slot);
                    }
                }
                Some(reply) => {
                    self.obs.done(&self.worker, head, &reply, &self.client);
                    self.out_bytes += reply.len();
                    self.out.push_back(reply);
                    if let Some(slot) = self.queue.pop_front() {
                        self.reuse(slot);
                    }
                }
                None => break,
            }
        }
    }

    /// Writes as much output as the socket takes without blocking.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            // TLS records encrypted earlier may still wait for the socket.
            self.stream.try_flush()?;
        }
        while !self.out.is_empty() {
            let result = self.stream.try_write_bufs(&self.out, MAX_IOV);
            let mut n = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            self.obs.wrote(&self.worker, n);
            self.out_bytes -= n;
            while n > 0 {
                let Some(front) = self.out.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.out.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        Ok(())
    }
}
