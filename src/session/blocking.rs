//! Blocking commands (BLPOP, BZPOPMIN, BLMOVE, XREAD BLOCK, WAIT, ...): each runs on a
//! dedicated connection leased from the worker's pool, so a command that waits for minutes
//! never holds up the multiplexed connections other clients share.
//!
//! Invariants: the command keeps its own timeout semantics (the proxy adds no deadline of its
//! own; 0 waits forever); redirects are followed as on the shared path (MOVED patches the map,
//! ASK sends ASKING first, an address the topology does not list waits for a refresh to list
//! it); the lease is returned only once its reply arrived, and when the client leaves, the
//! session aborts the task, which drops the lease and closes the connection — the node then
//! forgets the blocked client.

use crate::backend::dedicated::{Expect, Quota};
use crate::backend::worker::{Worker, CLUSTERDOWN_UNSERVED};
use crate::route::dispatch::{parse_redirect, Redirect, ReplySlot, MAX_REDIRECTS};
use crate::route::resp;
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// Where a blocking command goes first.
pub enum Start {
    /// The owner of this slot.
    Slot(u16),
    /// This node (WAIT goes to the nodes a client wrote to).
    Node(Arc<str>),
}

/// Runs one blocking command to completion and fills `reply` with its answer; its connection
/// counts against the client's `quota` while the command runs.
pub async fn run(
    worker: Rc<Worker>,
    wire: Bytes,
    start: Start,
    resp3: bool,
    quota: Quota,
    reply: Rc<ReplySlot>,
) {
    reply.fill(answer(&worker, wire, start, resp3, &quota).await);
}

async fn answer(worker: &Worker, wire: Bytes, start: Start, resp3: bool, quota: &Quota) -> Bytes {
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
        if asking {
            lease.send(Bytes::from_static(ASKING), Expect::Discard);
        }
        let frame = lease.request(wire.clone(), None).await;
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
