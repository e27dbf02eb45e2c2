//! A worker: one OS thread with its own current-thread runtime, its clients and its backend
//! connections. Nothing here is shared with other workers, so the data path takes no locks.
//!
//! The worker turns a [`Call`] into bytes on the right node's connection, and handles what
//! comes back before the client sees it: MOVED patches the shared map and resends, ASK resends
//! with ASKING, TRYAGAIN retries after a short back-off, CLUSTERDOWN schedules a refresh. A
//! client never sees MOVED or ASK.

use crate::backend::{Pool, Timeouts};
use crate::cluster::SlotMap;
use crate::dispatch::{self, Call, Dest, Redirect, MAX_REDIRECTS, MAX_RETRIES};
use crate::resp;
use crate::shared::Shared;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

/// Error sent for a key whose slot no node serves.
pub const CLUSTERDOWN_UNSERVED: &str = "CLUSTERDOWN Hash slot not served";

struct RouteCache {
    version: u64,
    pools: Vec<Option<Rc<Pool>>>,
}

/// Per-thread state of one worker.
pub struct Worker {
    /// Position among the workers (for stats).
    pub index: usize,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    me: Weak<Worker>,
    timeouts: Timeouts,
    pools: RefCell<HashMap<Arc<str>, Rc<Pool>>>,
    /// Pools indexed like the current map's nodes, so a request needs no hashing.
    cache: RefCell<RouteCache>,
    /// Connections of single clients: blocking commands, transactions, pub/sub.
    pub dedicated: crate::dedicated::DedicatedPool,
}

impl Worker {
    /// A worker with no connections yet.
    pub fn new(index: usize, shared: Arc<Shared>) -> Rc<Worker> {
        let c = &shared.config;
        let timeouts = Timeouts {
            request: c.request_timeout,
            connect: c.connect_timeout,
            backoff_max: c.reconnect_backoff_max,
        };
        let dedicated =
            crate::dedicated::DedicatedPool::new(c.max_dedicated_per_worker, c.connect_timeout);
        Rc::new_cyclic(|me| Worker {
            index,
            shared,
            me: me.clone(),
            timeouts,
            pools: RefCell::new(HashMap::new()),
            cache: RefCell::new(RouteCache {
                version: u64::MAX,
                pools: Vec::new(),
            }),
            dedicated,
        })
    }

    fn pool(&self, addr: &str) -> Rc<Pool> {
        let mut pools = self.pools.borrow_mut();
        if let Some(p) = pools.get(addr) {
            return Rc::clone(p);
        }
        let addr: Arc<str> = Arc::from(addr);
        let pool = Rc::new(Pool::new(
            Arc::clone(&addr),
            self.me.clone(),
            self.timeouts,
            self.shared.config.connections_per_node,
        ));
        pools.insert(addr, Rc::clone(&pool));
        pool
    }

    fn pool_for(&self, map: &SlotMap, node: usize) -> Rc<Pool> {
        {
            let cache = self.cache.borrow();
            if cache.version == map.version {
                if let Some(Some(p)) = cache.pools.get(node) {
                    return Rc::clone(p);
                }
            }
        }
        let pool = self.pool(&map.nodes[node].addr);
        let mut cache = self.cache.borrow_mut();
        if cache.version != map.version {
            cache.version = map.version;
            cache.pools.clear();
            cache.pools.resize(map.nodes.len(), None);
        }
        if let Some(entry) = cache.pools.get_mut(node) {
            *entry = Some(Rc::clone(&pool));
        }
        pool
    }

    /// Sends a call to the node its destination names in the current map.
    pub fn send(&self, call: Call) {
        match &call.dest {
            Dest::Slot(slot) => {
                let map = self.shared.map.load();
                match map.owner_index(*slot) {
                    Some(node) => self.pool_for(&map, node).send(call, false),
                    None => call.fail(CLUSTERDOWN_UNSERVED),
                }
            }
            Dest::Node(addr) => {
                let addr = Arc::clone(addr);
                self.pool(&addr).send(call, false)
            }
        }
    }

    /// Handles a backend's reply to `call`, which was sent to `from`: redirects are followed,
    /// everything else goes to the client.
    pub fn on_reply(&self, mut call: Call, frame: Bytes, from: &str) {
        if !resp::is_error(&frame) {
            return call.target.deliver(frame);
        }
        let redirect = match dispatch::parse_redirect(&frame, from) {
            None => return call.target.deliver(frame),
            Some(Redirect::ClusterDown) => {
                self.shared.trigger_refresh();
                return call.target.deliver(frame);
            }
            Some(r) => r,
        };
        let exhausted = match redirect {
            Redirect::Moved(..) => call.redirects >= MAX_REDIRECTS,
            _ => {
                call.retries >= MAX_RETRIES
                    || call.born.elapsed() >= self.shared.config.request_timeout
            }
        };
        if exhausted {
            let last = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
            let msg = format!(
                "ERR slotproxy: gave up after {} redirects and {} retries (last from {from}: {last})",
                call.redirects, call.retries
            );
            return call.fail(&msg);
        }
        match redirect {
            Redirect::Moved(slot, addr) => {
                call.redirects += 1;
                self.shared.patch_moved(slot, &addr);
                self.pool(&addr).send(call, false);
            }
            Redirect::Ask(_, addr) => {
                call.retries = call.retries.saturating_add(1);
                self.pool(&addr).send(call, true)
            }
            Redirect::TryAgain => {
                call.retries = call.retries.saturating_add(1);
                let delay = Duration::from_millis((2u64 << call.retries.min(6)).min(100));
                let me = self.me.clone();
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(delay).await;
                    match me.upgrade() {
                        Some(w) => w.send(call),
                        None => call.fail("ERR slotproxy: worker stopped"),
                    }
                });
            }
            Redirect::ClusterDown => call.target.deliver(frame),
        }
    }

    /// Requests queued or in flight on this worker's backend connections, per node.
    pub fn backend_load(&self) -> Vec<(Arc<str>, usize)> {
        let mut v: Vec<_> = self
            .pools
            .borrow()
            .iter()
            .map(|(a, p)| (Arc::clone(a), p.load()))
            .collect();
        v.sort();
        v
    }
}
