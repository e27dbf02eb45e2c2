//! A worker: one OS thread with its own current-thread runtime, its clients and its backend
//! connections. Nothing here is shared with other workers, so the data path takes no locks.
//!
//! The worker turns a [`Call`] into bytes on the right node's connection, and handles what
//! comes back before the client sees it: MOVED patches the shared map and resends, ASK resends
//! with ASKING, TRYAGAIN retries after a short back-off, CLUSTERDOWN schedules a refresh. A
//! client never sees MOVED or ASK.

use crate::backend::{NodeRef, Pool};
use crate::cluster::SlotMap;
use crate::dispatch::{self, Call, Dest, Redirect, MAX_REDIRECTS, MAX_RETRIES};
use crate::resp;
use crate::shared::{Shared, Trigger};
use crate::stats::bump;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

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
    pools: RefCell<HashMap<Arc<str>, Rc<Pool>>>,
    /// Pools indexed like the current map's nodes, so a request needs no hashing.
    cache: RefCell<RouteCache>,
    /// Connections of single clients: blocking commands, transactions, pub/sub.
    pub dedicated: crate::dedicated::DedicatedPool,
    /// A node's NOAUTH was logged already (once per worker, not once per request).
    noauth_logged: Cell<bool>,
    /// Each live session's wake-up signal, so shutdown can wake sessions parked on a read.
    sessions: RefCell<HashMap<u64, Weak<Notify>>>,
    /// Shutdown began: sessions read no more requests and close once answered.
    stopping: Cell<bool>,
    /// Shutdown's deadline passed: sessions answer what is left with an error and close.
    aborting: Cell<bool>,
}

impl Worker {
    /// A worker with no connections yet.
    pub fn new(index: usize, shared: Arc<Shared>) -> Rc<Worker> {
        let dedicated = crate::dedicated::DedicatedPool::new(
            shared.config.max_dedicated_per_worker,
            shared.config.connect_timeout,
        );
        Rc::new_cyclic(|me| Worker {
            index,
            shared,
            me: me.clone(),
            pools: RefCell::new(HashMap::new()),
            cache: RefCell::new(RouteCache {
                version: u64::MAX,
                pools: Vec::new(),
            }),
            dedicated,
            noauth_logged: Cell::new(false),
            sessions: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
            aborting: Cell::new(false),
        })
    }

    fn pool(&self, addr: &str) -> Rc<Pool> {
        let mut pools = self.pools.borrow_mut();
        if let Some(p) = pools.get(addr) {
            return Rc::clone(p);
        }
        let addr: Arc<str> = Arc::from(addr);
        let (id, stats) = self.shared.nodes.register(&addr);
        let node = NodeRef {
            id,
            stats,
            shared: Arc::clone(&self.shared),
        };
        let pool = Rc::new(Pool::new(
            Arc::clone(&addr),
            self.me.clone(),
            node,
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
        if frame.starts_with(b"-NOAUTH") {
            // A node that wants a password the proxy was not given: a configuration error.
            let msg = format!(
                "ERR slotproxy: node {from} requires authentication; set backend_user / backend_password"
            );
            if !self.noauth_logged.replace(true) {
                tracing::error!(node = %from, "{msg}");
            }
            return call.fail(&msg);
        }
        if frame.starts_with(b"-NOSCRIPT") && call.retries == 0 {
            if let Some(body) = crate::scripts::evalsha_target(&call.wire)
                .and_then(|sha| self.shared.scripts.body(&sha))
            {
                return self.load_script_and_retry(call, body, from);
            }
        }
        let redirect = match dispatch::parse_redirect(&frame, from) {
            None => return call.target.deliver(frame),
            Some(Redirect::ClusterDown) => {
                bump(&self.stats().m.clusterdown, 1);
                self.shared.trigger_refresh_for(Trigger::ClusterDown);
                return call.target.deliver(frame);
            }
            Some(r) => r,
        };
        let m = &self.stats().m;
        bump(
            match redirect {
                Redirect::Moved(..) => &m.moved,
                Redirect::Ask(..) => &m.ask,
                _ => &m.tryagain,
            },
            1,
        );
        let exhausted = match redirect {
            Redirect::Moved(..) => call.redirects >= MAX_REDIRECTS,
            _ => {
                call.retries >= MAX_RETRIES
                    || call
                        .born
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed()
                        >= self.shared.live.request_timeout()
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

    /// Registers a session's wake-up signal for shutdown.
    pub fn register_session(&self, id: u64, signal: &Rc<Notify>) {
        self.sessions.borrow_mut().insert(id, Rc::downgrade(signal));
    }

    /// Forgets a session that ended.
    pub fn unregister_session(&self, id: u64) {
        self.sessions.borrow_mut().remove(&id);
    }

    fn wake_sessions(&self) {
        let signals: Vec<_> = self.sessions.borrow().values().cloned().collect();
        for s in signals.iter().filter_map(Weak::upgrade) {
            s.notify_one();
        }
    }

    /// Starts the graceful stop: sessions stop reading and close once their replies are out.
    pub fn begin_stop(&self) {
        self.stopping.set(true);
        self.wake_sessions();
    }

    /// Shutdown's deadline passed: sessions answer what is left with an error and close.
    pub fn abort(&self) {
        self.stopping.set(true);
        self.aborting.set(true);
        self.wake_sessions();
    }

    /// Whether the graceful stop began.
    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Whether the graceful stop's deadline passed.
    pub fn aborting(&self) -> bool {
        self.aborting.get()
    }

    /// Sessions still running on this worker.
    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    /// This worker's counters.
    pub fn stats(&self) -> &crate::shared::WorkerStats {
        &self.shared.workers[self.index]
    }

    /// A node answered NOSCRIPT for a script the proxy has seen: load it there, then send the
    /// call again (once; a second NOSCRIPT reaches the client).
    fn load_script_and_retry(&self, mut call: Call, body: Bytes, from: &str) {
        let Some(me) = self.me.upgrade() else {
            return call.fail("ERR slotproxy: worker stopped");
        };
        let node: Arc<str> = Arc::from(from);
        tokio::task::spawn_local(async move {
            let signal = Rc::new(tokio::sync::Notify::new());
            let slot = crate::dispatch::ReplySlot::new(&signal);
            let load = resp::encode_command(&[&b"SCRIPT"[..], b"LOAD", &body]).freeze();
            me.send(Call::new(
                load,
                Dest::Node(Arc::clone(&node)),
                crate::dispatch::Target::Whole(Rc::clone(&slot)),
            ));
            let reply = loop {
                if let Some(r) = slot.take() {
                    break r;
                }
                signal.notified().await;
            };
            if resp::is_error(&reply) {
                let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
                return call.fail(&format!(
                    "NOSCRIPT No matching script (slotproxy could not load it on {node}: {text})"
                ));
            }
            tracing::info!(%node, "loaded a script on a node that answered NOSCRIPT");
            call.retries = call.retries.saturating_add(1);
            call.dest = Dest::Node(node);
            me.send(call);
        });
    }

    /// Sends `wire` on every shared connection to `addr` of one protocol (`resp3`: the RESP3
    /// set) — WAIT asks each connection, since each has its own replication offset; the
    /// replies fill the returned slots.
    pub fn send_on_each_conn(
        &self,
        addr: &Arc<str>,
        wire: &Bytes,
        signal: &Rc<tokio::sync::Notify>,
        resp3: bool,
    ) -> Vec<Rc<crate::dispatch::ReplySlot>> {
        let pool = self.pool(addr);
        (0..pool.width())
            .map(|_| {
                let slot = crate::dispatch::ReplySlot::new(signal);
                let mut call = Call::new(
                    wire.clone(),
                    Dest::Node(Arc::clone(addr)),
                    crate::dispatch::Target::Whole(Rc::clone(&slot)),
                );
                call.resp3 = resp3;
                pool.send(call, false);
                slot
            })
            .collect()
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
