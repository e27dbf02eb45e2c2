//! A worker: one OS thread with its own current-thread runtime, its clients and its backend
//! connections. Nothing here is shared with other workers, so the data path takes no locks.
//!
//! The worker turns a [`Call`] into bytes on the right node's connection, and handles what
//! comes back before the client sees it: MOVED patches the shared map and resends, ASK resends
//! with ASKING, TRYAGAIN retries after a short back-off, CLUSTERDOWN schedules a refresh. A
//! client never sees MOVED or ASK.

use crate::backend::{NodeRef, Pool, ReplyHandler};
use crate::cluster::SlotMap;
use crate::local_notify::LocalNotify;
use crate::metrics::stats::bump;
use crate::route::dispatch::{self, Call, Dest, Redirect, Vetted, MAX_REDIRECTS, MAX_RETRIES};
use crate::route::resp;
use crate::shared::{Shared, Trigger};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

mod replica_reads;

/// Error sent for a key whose slot no node serves.
pub const CLUSTERDOWN_UNSERVED: &str = "CLUSTERDOWN Hash slot not served";

/// Waits until the trusted topology backs a redirect to `addr` — lists it, or with `slot`, has
/// it serving that slot — or says it does not. True at once if the current map does;
/// otherwise asks for a refresh (from nodes already trusted, never from `addr`) and waits for
/// the refreshes that can answer — the one under way, if any, and the one asked for — bounded
/// by `request_timeout`.
pub async fn confirm_address(shared: &Shared, addr: &str, slot: Option<u16>) -> bool {
    use std::sync::atomic::Ordering::Acquire;
    let backed = || {
        let map = shared.topology.map.load();
        match slot {
            Some(s) => map.owner(s).is_some_and(|n| &*n.addr == addr),
            None => map.knows(addr),
        }
    };
    if backed() {
        return true;
    }
    let start = shared.topology.refreshes_done.load(Acquire);
    shared.topology.trigger_refresh_for(Trigger::Moved);
    let deadline = tokio::time::Instant::now() + shared.settings.live.request_timeout();
    loop {
        let refreshed = shared.topology.refreshed.notified();
        tokio::pin!(refreshed);
        refreshed.as_mut().enable();
        if backed() {
            return true;
        }
        if shared.topology.refreshes_done.load(Acquire) >= start + 2 {
            return false;
        }
        if tokio::time::timeout_at(deadline, refreshed).await.is_err() {
            return backed();
        }
    }
}

struct RouteCache {
    version: u64,
    pools: Vec<Option<Rc<Pool>>>,
    /// The shared map as of the `seen`-th replacement ([`crate::shared::Topology::published`]).
    map: Arc<SlotMap>,
    seen: u64,
}

/// Per-thread state of one worker.
pub struct Worker {
    /// Position among the workers (for stats).
    pub index: usize,
    /// The proxy's shared state.
    pub shared: Arc<Shared>,
    me: Weak<Worker>,
    pools: RefCell<HashMap<Arc<str>, Rc<Pool>>>,
    /// Reads from replicas: READONLY connections per replica, their failures and turns.
    replicas: replica_reads::ReplicaReads,
    /// Pools indexed like the current map's nodes, so a request needs no hashing.
    cache: RefCell<RouteCache>,
    /// Connections of single clients: blocking commands, transactions, pub/sub.
    pub dedicated: crate::backend::dedicated::DedicatedPool,
    /// Client-side caching: this worker's tracking clients and invalidation connections.
    pub tracking: Rc<crate::backend::invalidation::Hub>,
    /// A node's NOAUTH was logged already (once per worker, not once per request).
    noauth_logged: Cell<bool>,
    /// Each live session's wake-up signal, so shutdown can wake sessions parked on a read.
    sessions: RefCell<HashMap<u64, Weak<LocalNotify>>>,
    /// Read buffers that sessions with nothing left to parse gave back, for the next session
    /// that reads: an idle client holds no read buffer, and a busy one takes a warm buffer
    /// instead of allocating (see [`Worker::lend_read_buffer`]).
    read_buffers: RefCell<Vec<bytes::BytesMut>>,
    /// The fewest spare read buffers since the last [`Worker::trim_spares`]: that many were
    /// not needed for a whole interval.
    read_buffers_low: Cell<usize>,
}

/// Read buffers a worker keeps for its sessions: enough for the clients that read at the same
/// moment, not so many that a burst of connections leaves memory behind.
const SPARE_READ_BUFFERS: usize = 64;

/// The least room a returned read buffer must have to be kept.
const MIN_KEPT_READ_BUFFER: usize = 4 * 1024;

impl Worker {
    /// A worker with no connections yet.
    pub fn new(index: usize, shared: Arc<Shared>) -> Rc<Worker> {
        let dedicated = crate::backend::dedicated::DedicatedPool::new(
            shared.settings.config.max_dedicated_per_worker,
            Arc::clone(&shared),
        );
        let tracking = crate::backend::invalidation::Hub::new(Arc::clone(&shared));
        let map = shared.topology.map.load_full();
        Rc::new_cyclic(|me| Worker {
            index,
            shared,
            me: me.clone(),
            pools: RefCell::new(HashMap::new()),
            replicas: Default::default(),
            cache: RefCell::new(RouteCache {
                version: u64::MAX,
                pools: Vec::new(),
                map,
                seen: u64::MAX,
            }),
            dedicated,
            tracking,
            noauth_logged: Cell::new(false),
            sessions: RefCell::new(HashMap::new()),
            read_buffers: RefCell::new(Vec::new()),
            read_buffers_low: Cell::new(0),
        })
    }

    /// A read buffer for a session about to read (empty; capacity from an earlier client, or
    /// none).
    pub fn lend_read_buffer(&self) -> bytes::BytesMut {
        let mut spare = self.read_buffers.borrow_mut();
        let buf = spare.pop().unwrap_or_default();
        self.read_buffers_low
            .set(self.read_buffers_low.get().min(spare.len()));
        buf
    }

    /// Drops the spare read buffers no session needed since the previous call, so that a
    /// burst of busy clients does not leave its buffers with the worker for ever. Called
    /// about once a second; returns the bytes dropped.
    pub fn trim_spares(&self) -> usize {
        let mut spare = self.read_buffers.borrow_mut();
        let unused = self.read_buffers_low.get().min(spare.len());
        // Lent last-in first-out: the buffers at the bottom are the ones nobody took.
        let freed = spare.drain(..unused).map(|b| b.capacity()).sum();
        self.read_buffers_low.set(spare.len());
        freed
    }

    /// Takes back a session's empty read buffer. Buffers with little room left (their
    /// allocation is mostly held by requests still in flight) are dropped instead of kept.
    pub fn return_read_buffer(&self, buf: bytes::BytesMut) {
        debug_assert!(buf.is_empty());
        let mut spare = self.read_buffers.borrow_mut();
        if buf.capacity() >= MIN_KEPT_READ_BUFFER && spare.len() < SPARE_READ_BUFFERS {
            spare.push(buf);
        }
    }

    /// Whether the proxy may connect to `addr`: a node the trusted topology lists (see
    /// [`SlotMap::knows`]) or a configured seed. Nothing else is ever connected to, so no
    /// request and no credentials reach an address a reply merely named.
    fn trusted(&self, map: &SlotMap, addr: &str) -> bool {
        map.knows(addr) || self.shared.settings.config.seeds.iter().any(|s| s == addr)
    }

    /// This worker's pool for `addr`, created on first use; `None` for an address the proxy
    /// does not trust.
    fn pool(&self, addr: &str) -> Option<Rc<Pool>> {
        self.pool_in(&self.pools, addr, false)
    }

    /// [`Worker::pool`] in `pools`, whose connections are `readonly` ones if so.
    fn pool_in(
        &self,
        pools: &RefCell<HashMap<Arc<str>, Rc<Pool>>>,
        addr: &str,
        readonly: bool,
    ) -> Option<Rc<Pool>> {
        let mut pools = pools.borrow_mut();
        if let Some(p) = pools.get(addr) {
            return Some(Rc::clone(p));
        }
        if !self.trusted(&self.shared.topology.map.load(), addr) {
            return None;
        }
        let addr: Arc<str> = Arc::from(addr);
        let (id, stats) = self.shared.registries.nodes.register(&addr);
        let node = NodeRef {
            id,
            stats,
            shared: Arc::clone(&self.shared),
        };
        let handler: Weak<dyn ReplyHandler> = self.me.clone();
        let pool = Rc::new(Pool::new(
            Arc::clone(&addr),
            handler,
            node,
            self.shared.settings.config.connections_per_node,
            readonly,
        ));
        pools.insert(addr, Rc::clone(&pool));
        Some(pool)
    }

    /// Drops the pools of nodes the new map no longer lists (their connections close once
    /// their last reply is in), so pools, node stats and metric labels stay bounded by the
    /// cluster's size however many nodes come and go.
    fn prune(&self, map: &SlotMap) {
        let mut gone = Vec::new();
        self.pools.borrow_mut().retain(|addr, pool| {
            let keep = self.trusted(map, addr) && !pool.retired();
            if !keep {
                gone.push(Rc::clone(pool));
            }
            keep
        });
        self.replicas.pools.borrow_mut().retain(|addr, pool| {
            let keep = self.trusted(map, addr) && !pool.retired();
            if !keep {
                gone.push(Rc::clone(pool));
            }
            keep
        });
        for pool in gone {
            tracing::debug!("closing the connections to a node that left the slot map");
            pool.retire();
        }
        self.dedicated
            .drop_idle_except(|addr| self.trusted(map, addr));
    }

    fn pool_for(&self, map: &SlotMap, node: usize) -> Option<Rc<Pool>> {
        {
            let cache = self.cache.borrow();
            if cache.version == map.version {
                if let Some(Some(p)) = cache.pools.get(node) {
                    return Some(Rc::clone(p));
                }
            }
        }
        if self.cache.borrow().version != map.version {
            self.prune(map);
        }
        let pool = self.pool(&map.nodes[node].addr)?;
        let mut cache = self.cache.borrow_mut();
        if cache.version != map.version {
            cache.version = map.version;
            cache.pools.clear();
            cache.pools.resize(map.nodes.len(), None);
        }
        if let Some(entry) = cache.pools.get_mut(node) {
            *entry = Some(Rc::clone(&pool));
        }
        Some(pool)
    }

    /// The current slot map: this worker's copy, re-read from the shared one only when a new
    /// map was published since. (A clone, not a borrow: sending may re-enter the worker.)
    pub fn map(&self) -> Arc<SlotMap> {
        let published = self.shared.topology.published();
        let mut cache = self.cache.borrow_mut();
        if cache.seen != published {
            cache.map = self.shared.topology.map.load_full();
            cache.seen = published;
        }
        Arc::clone(&cache.map)
    }

    /// Sends a call to the node its destination names in the current map.
    pub fn send(&self, call: Call) {
        match &call.dest {
            Dest::Slot(slot) => {
                let map = self.map();
                match map.owner_index(*slot).and_then(|n| self.pool_for(&map, n)) {
                    Some(pool) => pool.send(call, false),
                    None => call.fail(CLUSTERDOWN_UNSERVED),
                }
            }
            Dest::Node(addr) => {
                let addr = Arc::clone(addr);
                self.send_to(&addr, call, false)
            }
            &Dest::Read(slot, mode) => self.send_read(call, slot, mode),
        }
    }

    /// Sends a call addressed to a node (`Dest::Node`) on a connection of its own, opened for
    /// it and closed after its reply: for commands that must not queue behind what the
    /// worker's shared connection to that node carries (SCRIPT KILL behind the busy script).
    /// The reply goes to the client as the node sent it; redirects are not followed.
    pub fn send_alone(&self, call: Call) {
        let Dest::Node(addr) = &call.dest else {
            return call.fail("ERR slotproxy: internal error: no node for a one-off connection");
        };
        let addr = Arc::clone(addr);
        if !self.trusted(&self.shared.topology.map.load(), &addr) {
            return call.fail(&format!(
                "ERR slotproxy: {addr} is not a node of the cluster's topology"
            ));
        }
        let timeout = self.shared.settings.live.request_timeout();
        let dialer = Arc::clone(&self.shared.settings.dialer);
        tokio::task::spawn_local(async move {
            let reply = async {
                let mut node =
                    crate::backend::node_client::NodeClient::connect(&dialer, &addr, timeout)
                        .await?;
                node.call_wire(&call.wire).await
            };
            match reply.await {
                Ok(frame) => call.target.deliver(frame),
                Err(e) => call.fail(&format!("ERR slotproxy: {e:#}")),
            }
        });
    }

    /// Sends a call to `addr`, which must be trusted; otherwise the call fails.
    fn send_to(&self, addr: &str, call: Call, asking: bool) {
        match self.pool(addr) {
            Some(pool) => pool.send(call, asking),
            None => call.fail(&format!(
                "ERR slotproxy: {addr} is not a node of the cluster's topology"
            )),
        }
    }

    /// Handles a backend's reply to `call`, which was sent to `from`: redirects are followed
    /// when they can be trusted (see [`dispatch::vet_redirect`]), everything else goes to the
    /// client.
    pub fn on_reply(&self, mut call: Call, frame: Bytes, from: &str) {
        if !resp::is_error(&frame) {
            return call.target.deliver(frame);
        }
        if let Dest::Read(slot, _) = call.dest {
            // A replica's error: one that says it cannot serve (loading, link down) sends the
            // read elsewhere; any other, a redirect included, is handled like a master's.
            if replica_reads::unusable(&frame) {
                let msg = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
                return self.on_lost(call, from, &msg);
            }
            call.dest = Dest::Slot(slot);
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
            if let Some(body) = crate::route::scripts::evalsha_target(&call.wire)
                .and_then(|sha| self.shared.registries.scripts.body(&sha))
            {
                return self.load_script_and_retry(call, body, from);
            }
        }
        let Some(redirect) = dispatch::parse_redirect(&frame, from) else {
            return call.target.deliver(frame);
        };
        let vetted = dispatch::vet_redirect(&redirect, &self.shared.topology.map.load(), &call);
        if vetted == Vetted::PassOn {
            return call.target.deliver(frame);
        }
        let m = &self.stats().m;
        bump(
            match redirect {
                Redirect::Moved(..) => &m.moved,
                Redirect::Ask(..) => &m.ask,
                Redirect::TryAgain => &m.tryagain,
                Redirect::ClusterDown => &m.clusterdown,
            },
            1,
        );
        if redirect == Redirect::ClusterDown {
            self.shared
                .topology
                .trigger_refresh_for(Trigger::ClusterDown);
            return call.target.deliver(frame);
        }
        let exhausted = match redirect {
            Redirect::Moved(..) => call.redirects >= MAX_REDIRECTS,
            _ => {
                call.retries >= MAX_RETRIES
                    || call
                        .born
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed()
                        >= self.shared.settings.live.request_timeout()
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
        if let Vetted::Confirm { owner } = vetted {
            return self.confirm_then_follow(call, redirect, frame, owner);
        }
        self.follow(call, redirect);
    }

    /// Acts on a redirect that passed [`dispatch::vet_redirect`].
    fn follow(&self, mut call: Call, redirect: Redirect) {
        match redirect {
            Redirect::Moved(slot, addr) => {
                call.redirects += 1;
                self.shared.topology.patch_moved(slot, &addr);
                self.send_to(&addr, call, false);
            }
            Redirect::Ask(_, addr) => {
                call.retries = call.retries.saturating_add(1);
                self.send_to(&addr, call, true)
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
            Redirect::ClusterDown => call.fail("ERR slotproxy: CLUSTERDOWN is not a redirect"),
        }
    }

    /// A redirect the map does not back: the call waits for a refresh from trusted nodes, and
    /// is redirected only if the new map backs it ([`Vetted::Confirm`]); otherwise the client
    /// gets the node's error as it came, and nothing was sent to that address.
    fn confirm_then_follow(&self, call: Call, redirect: Redirect, frame: Bytes, owner: bool) {
        let (Redirect::Moved(slot, addr) | Redirect::Ask(slot, addr)) = &redirect else {
            return self.follow(call, redirect);
        };
        let (addr, slot) = (addr.clone(), owner.then_some(*slot));
        let me = self.me.clone();
        tokio::task::spawn_local(async move {
            let Some(shared) = me.upgrade().map(|w| Arc::clone(&w.shared)) else {
                return call.fail("ERR slotproxy: worker stopped");
            };
            let confirmed = confirm_address(&shared, &addr, slot).await;
            match me.upgrade() {
                Some(w) if confirmed => w.follow(call, redirect),
                Some(_) => {
                    tracing::debug!(%addr, "a redirect named a node no trusted node lists; passed to the client");
                    call.target.deliver(frame)
                }
                None => call.fail("ERR slotproxy: worker stopped"),
            }
        });
    }

    /// Registers a session's wake-up signal for shutdown.
    pub fn register_session(&self, id: u64, signal: &Rc<LocalNotify>) {
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

    /// This worker's part of the graceful stop ([`crate::shutdown::Shutdown::stop`]):
    /// wakes its sessions so they stop reading and close once their replies are out.
    pub fn begin_stop(&self) {
        self.shared.shutdown.stop();
        self.wake_sessions();
    }

    /// Shutdown's deadline passed ([`crate::shutdown::Shutdown::abort`]): wakes this worker's
    /// sessions so they answer what is left with an error and close.
    pub fn abort(&self) {
        self.shared.shutdown.abort();
        self.wake_sessions();
    }

    /// Sessions still running on this worker.
    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    /// This worker's counters.
    pub fn stats(&self) -> &crate::shared::WorkerStats {
        &self.shared.metrics.workers[self.index]
    }

    /// A node answered NOSCRIPT for a script the proxy has seen: load it there, then send the
    /// call again (once; a second NOSCRIPT reaches the client).
    fn load_script_and_retry(&self, mut call: Call, body: Bytes, from: &str) {
        let Some(me) = self.me.upgrade() else {
            return call.fail("ERR slotproxy: worker stopped");
        };
        let node: Arc<str> = Arc::from(from);
        tokio::task::spawn_local(async move {
            let signal = Rc::new(crate::local_notify::LocalNotify::new());
            let slot = crate::route::dispatch::ReplySlot::new(&signal);
            let load = resp::encode_command(&[&b"SCRIPT"[..], b"LOAD", &body]).freeze();
            me.send(Call::new(
                load,
                Dest::Node(Arc::clone(&node)),
                crate::route::dispatch::Target::Whole(Rc::clone(&slot)),
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
        signal: &Rc<crate::local_notify::LocalNotify>,
        resp3: bool,
    ) -> Vec<Rc<crate::route::dispatch::ReplySlot>> {
        let Some(pool) = self.pool(addr) else {
            return Vec::new();
        };
        (0..pool.width())
            .map(|_| {
                let slot = crate::route::dispatch::ReplySlot::new(signal);
                let mut call = Call::new(
                    wire.clone(),
                    Dest::Node(Arc::clone(addr)),
                    crate::route::dispatch::Target::Whole(Rc::clone(&slot)),
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

impl ReplyHandler for Worker {
    fn on_reply(&self, call: Call, frame: Bytes, from: &str) {
        Worker::on_reply(self, call, frame, from)
    }
    fn on_lost(&self, call: Call, from: &str, msg: &str) {
        Worker::on_lost(self, call, from, msg)
    }
}
