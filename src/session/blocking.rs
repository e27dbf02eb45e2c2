//! Blocking commands (BLPOP, BZPOPMIN, BLMOVE, XREAD BLOCK, WAIT, ...): each runs on a
//! dedicated connection leased from the worker's pool, so a command that waits for minutes
//! never holds up the multiplexed connections other clients share.
//!
//! Invariants: the command keeps its own timeout semantics (the proxy adds no deadline of its
//! own; 0 waits forever); redirects are followed as on the shared path (MOVED patches the map,
//! ASK sends ASKING first, an address the topology does not list waits for a refresh to list
//! it); the lease is returned only once its reply arrived, and when the client leaves, the
//! session aborts the task, which drops the lease and closes the connection — the node then
//! forgets the blocked client. While it waits, the command counts as blocked for its client
//! (INFO's `blocked_clients`, CLIENT LIST's `b`) and CLIENT UNBLOCK can end it (see
//! [`crate::session::unblock`]).

use super::Session;
use crate::backend::dedicated::{Expect, Lease, Quota};
use crate::backend::worker::{Worker, CLUSTERDOWN_UNSERVED};
use crate::route::dispatch::{parse_redirect, Redirect, ReplySlot, MAX_REDIRECTS};
use crate::route::resp;
use crate::session::unblock::{self, OpGuard};
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
const CLIENT_ID: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";

impl Session {
    /// Runs a blocking command on a connection of its own, as a task of this client.
    pub(super) fn blocking(&mut self, start: Start, wire: Bytes) {
        let slot_rc = self.new_slot();
        self.queue.push_back(Rc::clone(&slot_rc));
        let task = tokio::task::spawn_local(run(
            Rc::clone(&self.worker),
            wire,
            start,
            self.client.resp3,
            self.quota.clone(),
            slot_rc,
            self.start_blocked_op(),
        ));
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(task.abort_handle());
    }
}

/// Where a blocking command goes first.
pub enum Start {
    /// The owner of this slot.
    Slot(u16),
    /// This node (WAIT goes to the nodes a client wrote to).
    Node(Arc<str>),
}

/// Runs one blocking command to completion and fills `reply` with its answer; its connection
/// counts against the client's `quota` while the command runs, and `op` counts it as blocked
/// until the reply is in.
pub async fn run(
    worker: Rc<Worker>,
    wire: Bytes,
    start: Start,
    resp3: bool,
    quota: Quota,
    reply: Rc<ReplySlot>,
    op: OpGuard,
) {
    reply.fill(answer(&worker, wire, start, resp3, &quota, &op).await);
}

async fn answer(
    worker: &Worker,
    wire: Bytes,
    start: Start,
    resp3: bool,
    quota: &Quota,
    op: &OpGuard,
) -> Bytes {
    let mut addr = match start {
        Start::Node(a) => a,
        Start::Slot(slot) => match worker.shared.topology.map.load().owner(slot) {
            Some(n) => Arc::clone(&n.addr),
            None => return resp::error(CLUSTERDOWN_UNSERVED),
        },
    };
    let mut asking = false;
    let mut tries = 0u8;
    loop {
        let per_client = worker.shared.settings.live.get().max_dedicated_per_client;
        let lease = match worker.dedicated.take(&addr, resp3, quota, per_client) {
            Ok(l) => l,
            Err(e) => return resp::error(&e.to_string()),
        };
        let frame = wait_reply(worker, &lease, wire.clone(), asking, op).await;
        worker.dedicated.give_back(lease);
        tries += 1;
        let redirect = if resp::is_error(&frame) {
            parse_redirect(&frame, &addr)
        } else {
            None
        };
        if tries > MAX_REDIRECTS && redirect.is_some() {
            return frame;
        }
        if let Some(Redirect::Moved(_, to) | Redirect::Ask(_, to)) = &redirect {
            // Only a node the trusted topology lists is connected to (see
            // dispatch::vet_redirect); a refresh may confirm a new one.
            if !crate::backend::worker::confirm_address(&worker.shared, to, None).await {
                return frame;
            }
        }
        match redirect {
            None => return frame,
            Some(Redirect::ClusterDown) => {
                worker.shared.topology.trigger_refresh();
                return frame;
            }
            Some(Redirect::Moved(slot, to)) => {
                worker.shared.topology.patch_moved(slot, &to);
                addr = Arc::from(to);
                asking = false;
            }
            Some(Redirect::Ask(_, to)) => {
                addr = Arc::from(to);
                asking = true;
            }
            Some(Redirect::TryAgain) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Sends the command on `lease` (after `ASKING` if `asking`) and waits for its reply. A CLIENT
/// UNBLOCK handed to `op` meanwhile is passed on to the node, which then answers the command.
async fn wait_reply(
    worker: &Worker,
    lease: &Lease,
    wire: Bytes,
    asking: bool,
    op: &OpGuard,
) -> Bytes {
    let signal = op.signal();
    // The connection's id on its node, asked once, before the first command it blocks:
    // pipelined, so it costs no round trip, and it has arrived by the time the node blocks.
    let mut id_slot = None;
    if lease.node_id().is_none() {
        let s = ReplySlot::new(signal);
        lease.send(
            Bytes::from_static(CLIENT_ID),
            Expect::Reply {
                slot: Rc::clone(&s),
                pinned: false,
                timeout: None,
            },
        );
        id_slot = Some(s);
    }
    if asking {
        lease.send(Bytes::from_static(ASKING), Expect::Discard);
    }
    let slot = ReplySlot::new(signal);
    lease.send(
        wire,
        Expect::Reply {
            slot: Rc::clone(&slot),
            pinned: false,
            timeout: None,
        },
    );
    let mut request = None;
    loop {
        if let Some(frame) = slot.take() {
            // An UNBLOCK not passed on yet is dropped: the asker gets 0, as the command is done.
            return frame;
        }
        if let Some(id) = id_slot.as_ref().and_then(|s| s.take()) {
            let id = id
                .strip_prefix(b":")
                .and_then(|b| resp::parse_int(b.strip_suffix(b"\r\n")?));
            lease.set_node_id(id);
            id_slot = None;
        }
        if request.is_none() {
            request = op.take_request();
        }
        match (request.take(), lease.node_id()) {
            (Some(r), Some(id)) => unblock::ask_node(worker, lease.addr(), id, r),
            // The id is on its way (it precedes the command's reply).
            (Some(r), None) if id_slot.is_some() => request = Some(r),
            (Some(r), None) => {
                let _ = r.done.send(Err(unblock::NO_NODE_ID.to_string()));
            }
            (None, _) => {}
        }
        signal.notified().await;
    }
}
