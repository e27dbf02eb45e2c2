//! Calls a session's helper tasks send on the worker's shared connections and wait on
//! together (SCAN's per-node batches, a cross-slot emulation's steps), outside the session's
//! own reply queue.
//!
//! Invariant: every call gets a reply slot of its own woken by one signal, the replies come
//! back in the order of the calls, and the backend time of each is added to the client's
//! reply slot, so the slow log and latency figures see the time the helper spent on nodes.

use crate::backend::worker::Worker;
use crate::local_notify::LocalNotify;
use crate::route::dispatch::{Call, Dest, ReplySlot, Target};
use bytes::Bytes;
use std::rc::Rc;

/// One call to send: its bytes, where it goes, and whether it needs a RESP3 connection.
pub struct Ask {
    /// The encoded command.
    pub wire: Bytes,
    /// The node, or the owner of a slot.
    pub dest: Dest,
    /// Sent on the RESP3 connections.
    pub resp3: bool,
}

/// Sends every call at once and waits for all the replies (in `calls` order); their backend
/// time is added to the client's `slot`.
pub async fn gather(
    worker: &Worker,
    calls: impl IntoIterator<Item = Ask>,
    slot: &ReplySlot,
) -> Vec<Bytes> {
    let signal = Rc::new(LocalNotify::new());
    let pending: Vec<Rc<ReplySlot>> = calls
        .into_iter()
        .map(|a| {
            let part = ReplySlot::new(&signal);
            let mut call = Call::new(a.wire, a.dest, Target::Whole(Rc::clone(&part)));
            call.resp3 = a.resp3;
            worker.send(call);
            part
        })
        .collect();
    let mut frames = Vec::with_capacity(pending.len());
    for part in pending {
        let frame = loop {
            if let Some(f) = part.take() {
                break f;
            }
            signal.notified().await;
        };
        let meta = part.take_meta();
        slot.add_backend(meta.backend_us, meta.node);
        frames.push(frame);
    }
    frames
}
