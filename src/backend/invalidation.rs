//! Client-side caching: how the proxy learns that keys changed, and whom it tells.
//!
//! Design. A Redis node only tracks its own clients, and the proxy's clients are not the
//! node's clients (their reads travel on shared connections). So the proxy keeps the
//! tracking table for its own clients ([`crate::backend::tracking_table`]) and asks every
//! master to report every key written there: each worker that has tracking clients opens one
//! dedicated connection per master with `HELLO 3` and `CLIENT TRACKING ON BCAST`, and maps
//! the `invalidate` pushes it receives to its clients (keys they read, or their BCAST
//! prefixes). Per worker rather than proxy-wide: the table, the connections and the sessions
//! then live on one thread, with no lock anywhere, and a worker with no tracking client
//! pays nothing at all (no connection, no task). The price is one connection per master per
//! tracking worker, and each worker hears every write of the cluster while it has tracking
//! clients.
//!
//! Invariant: a tracking client never misses an invalidation. When the proxy cannot be sure
//! it heard every write — an invalidation connection dropped, the slot map changed owners
//! (failover, slot moved), a connection to a new master has just become ready — every
//! tracking client of the worker gets a flush (`invalidate` with a null key list, "forget
//! everything"), as Redis sends on FLUSHALL. A spurious invalidation only costs a cache miss;
//! a missed one serves stale data. An invalidation is queued behind the client's pending
//! replies, so a value read before the write can never reach the client after the
//! invalidation that made it stale. `CLIENT TRACKING ON` is answered once the connections to
//! every master are ready (or failed, which flushes), so nothing written after the reply
//! goes unheard.

use crate::backend::dedicated::{Dedicated, Expect, Sink};
use crate::backend::tracking_table::{Mode, Table};
use crate::cluster::SlotMap;
use crate::local_notify::LocalNotify;
use crate::route::dispatch::ReplySlot;
use crate::route::resp;
use crate::session::clients::{Invalidation, Live};
use crate::shared::Shared;
use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

/// Keys one worker's table tracks at most (Redis's `tracking-table-max-keys` default); past
/// it, a key is evicted and its clients told it is invalid.
pub const MAX_TRACKED_KEYS: usize = 1_000_000;

/// How often the maintenance task looks at the slot map and the connections.
const TICK: Duration = Duration::from_millis(100);

/// What the worker sends to open tracking on an invalidation connection.
const TRACKING_ON: &[u8] = b"*4\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$5\r\nBCAST\r\n";

/// A tracking client: where its messages go.
struct Tracker {
    /// Its own registry entry.
    live: Arc<Live>,
    /// REDIRECT: the client that gets its messages instead.
    redirect: Option<u64>,
}

/// One invalidation connection and its `CLIENT TRACKING ON` reply.
struct Conn {
    conn: Dedicated,
    ready: Rc<ReplySlot>,
    confirmed: bool,
}

struct State {
    table: Table,
    trackers: HashMap<u64, Tracker>,
    conns: HashMap<Arc<str>, Conn>,
    /// The maintenance task runs.
    running: bool,
    /// The slot map the connections follow.
    seen: Option<Arc<SlotMap>>,
    /// That map's masters that own slots.
    masters: Vec<Arc<str>>,
    /// Replies to `CLIENT TRACKING ON` waiting for the connections.
    waiters: Vec<Waiter>,
}

/// A `CLIENT TRACKING ON` not answered yet.
struct Waiter {
    id: u64,
    reply: Rc<ReplySlot>,
    /// The client read keys meanwhile (pipelined after the command): a connection that
    /// becomes ready now may have missed writes to them.
    read: bool,
    /// Answered by then even if a master cannot be reached (its connection becoming ready
    /// later flushes the client).
    deadline: tokio::time::Instant,
}

/// One worker's client-side-caching state: its tracking clients, their table and the
/// invalidation connections. Created empty with the worker; comes alive with the first
/// tracking client and goes quiet (connections closed) when the last one stops.
pub struct Hub {
    shared: Arc<Shared>,
    state: RefCell<State>,
    wake: Rc<LocalNotify>,
    me: Weak<Hub>,
}

/// Receives the invalidation connections' pushes.
struct HubSink(Weak<Hub>);

impl Sink for HubSink {
    fn message(&self, addr: &Arc<str>, frame: Bytes, _before: Option<Rc<ReplySlot>>) {
        if let Some(hub) = self.0.upgrade() {
            match parse_invalidate(&frame) {
                Some(Some(keys)) => hub.invalidate(&keys),
                Some(None) => hub.flush(),
                None => {
                    tracing::debug!(node = %addr, "unexpected push on an invalidation connection")
                }
            }
        }
    }

    fn unsubscribed(&self, _addr: &Arc<str>, _frame: Bytes) {}

    fn closed(&self, addr: &Arc<str>, reason: &str) {
        if let Some(hub) = self.0.upgrade() {
            tracing::info!(node = %addr, %reason, "invalidation connection lost; tracking clients get a flush");
            hub.flush();
            hub.wake.notify_one();
        }
    }

    fn refused(&self, _addr: &Arc<str>, _slot: &Rc<ReplySlot>) {}
}

/// The keys of an `invalidate` push: `Some(None)` for a flush, `None` for another frame. An
/// `invalidate` push whose keys cannot be read is taken as a flush: a reply is input, and a
/// client must never keep a cached value because the proxy could not read which keys changed.
pub fn parse_invalidate(frame: &Bytes) -> Option<Option<Vec<Bytes>>> {
    if frame.first() != Some(&b'>') {
        return None;
    }
    let mut as_array = BytesMut::from(&frame[..]);
    as_array[0] = b'*';
    let parts = resp::array_elements(&as_array.freeze())?;
    if parts.len() != 2 || parts[0].as_ref() != b"$10\r\ninvalidate\r\n" {
        return None;
    }
    let keys = &parts[1];
    if keys.starts_with(b"_") || keys.starts_with(b"$-1") || keys.starts_with(b"*-1") {
        return Some(None);
    }
    let Some(items) = resp::array_elements(keys) else {
        return Some(None);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match resp::Value::decode(&item) {
            Ok(resp::Value::Bulk(Some(k))) => out.push(k),
            _ => return Some(None),
        }
    }
    Some(Some(out))
}

/// The masters that own at least one slot in `map`.
fn owners(map: &SlotMap) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = Vec::new();
    for s in 0..crate::cluster::slots::SLOT_COUNT as u16 {
        if let Some(n) = map.owner(s) {
            if !out.contains(&n.addr) {
                out.push(Arc::clone(&n.addr));
            }
        }
    }
    out
}

impl Hub {
    /// An idle hub for a worker.
    pub fn new(shared: Arc<Shared>) -> Rc<Hub> {
        Rc::new_cyclic(|me| Hub {
            shared,
            state: RefCell::new(State {
                table: Table::new(MAX_TRACKED_KEYS),
                trackers: HashMap::new(),
                conns: HashMap::new(),
                running: false,
                seen: None,
                masters: Vec::new(),
                waiters: Vec::new(),
            }),
            wake: Rc::new(LocalNotify::new()),
            me: me.clone(),
        })
    }

    /// Starts or changes client `id`'s tracking; `reply` gets `+OK` once the invalidation
    /// connections are ready.
    pub fn enable(
        &self,
        id: u64,
        live: &Arc<Live>,
        redirect: Option<u64>,
        mode: Mode,
        reply: Rc<ReplySlot>,
    ) {
        let mut st = self.state.borrow_mut();
        st.table.enable(id, mode);
        st.trackers.insert(
            id,
            Tracker {
                live: Arc::clone(live),
                redirect,
            },
        );
        let deadline =
            tokio::time::Instant::now() + self.shared.settings.live.connect_timeout() * 2;
        st.waiters.push(Waiter {
            id,
            reply,
            read: false,
            deadline,
        });
        if !st.running {
            st.running = true;
            if let Some(me) = self.me.upgrade() {
                tokio::task::spawn_local(me.maintain());
            }
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Ends client `id`'s tracking.
    pub fn disable(&self, id: u64) {
        let mut st = self.state.borrow_mut();
        st.table.disable(id);
        st.trackers.remove(&id);
    }

    /// Client `id` read `key`.
    pub fn record(&self, id: u64, key: &Bytes) {
        let evicted = {
            let mut st = self.state.borrow_mut();
            for w in st.waiters.iter_mut().filter(|w| w.id == id) {
                w.read = true;
            }
            st.table.record(id, key)
        };
        if let Some((key, ids)) = evicted {
            let keys = vec![key];
            self.deliver(ids.into_iter().map(|i| (i, keys.clone())));
        }
    }

    /// Client `id` wrote `key` with NOLOOP.
    pub fn forget(&self, id: u64, key: &[u8]) {
        self.state.borrow_mut().table.forget(id, key);
    }

    /// Keys changed on a node.
    fn invalidate(&self, keys: &[Bytes]) {
        let d = self.state.borrow_mut().table.invalidate(keys);
        self.deliver(d);
    }

    /// Every tracking client must forget everything.
    fn flush(&self) {
        let msgs = self.state.borrow_mut().table.flush(None);
        self.send(msgs.into_iter());
    }

    /// Clients `ids` must forget everything (the others keep their keys tracked).
    fn flush_some(&self, ids: Vec<u64>) {
        let msgs = self.state.borrow_mut().table.flush(Some(&ids));
        self.send(msgs.into_iter());
    }

    fn deliver(&self, d: impl IntoIterator<Item = (u64, Vec<Bytes>)>) {
        self.send(d.into_iter().map(|(i, k)| (i, Some(k))));
    }

    /// Hands each client's message to its receiver (itself, or the client it redirects to;
    /// a redirect to a client that left tells the tracker, as Redis does).
    fn send(&self, msgs: impl Iterator<Item = (u64, Option<Vec<Bytes>>)>) {
        let st = self.state.borrow();
        for (id, keys) in msgs {
            let Some(t) = st.trackers.get(&id) else {
                continue;
            };
            match t.redirect {
                None => t.live.deliver([Invalidation::Keys(keys)]),
                Some(to) => match self.shared.registries.clients.live(to) {
                    Some(target) => target.deliver([Invalidation::Keys(keys)]),
                    None => t.live.deliver([Invalidation::RedirectBroken(to)]),
                },
            }
        }
    }

    /// Keeps one ready invalidation connection per master while the worker has tracking
    /// clients, and flushes them whenever it cannot be sure it heard every write.
    async fn maintain(self: Rc<Self>) {
        loop {
            if self.state.borrow().table.is_empty() {
                let mut st = self.state.borrow_mut();
                st.conns.clear();
                st.seen = None;
                st.running = false;
                for w in st.waiters.drain(..) {
                    w.reply.fill(resp::simple("OK"));
                }
                return;
            }
            self.follow_map();
            self.confirm();
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Opens connections to new masters and closes the others; a change of slot owners
    /// flushes every client.
    fn follow_map(&self) {
        let map = self.shared.topology.map.load_full();
        let mut st = self.state.borrow_mut();
        let changed = match &st.seen {
            Some(old) if old.version == map.version => false,
            Some(old) => !old.same_assignment(&map),
            None => false,
        };
        if changed
            || st.seen.is_none()
            || st.seen.as_ref().is_some_and(|o| o.version != map.version)
        {
            st.masters = owners(&map);
        }
        st.seen = Some(map);
        let masters = std::mem::take(&mut st.masters);
        st.conns
            .retain(|a, c| masters.contains(a) && c.conn.closed().is_none());
        let me = self.me.clone();
        for addr in &masters {
            if st.conns.contains_key(addr) {
                continue;
            }
            let signal = Rc::clone(&self.wake);
            let ready = ReplySlot::new(&signal);
            let hello = Some(Bytes::from_static(resp::HELLO3));
            let sink: Rc<dyn Sink> = Rc::new(HubSink(me.clone()));
            let conn = Dedicated::open(
                Arc::clone(&self.shared.settings.dialer),
                Arc::clone(addr),
                self.shared.settings.live.connect_timeout(),
                hello,
                Some(sink),
            );
            conn.send(
                Bytes::from_static(TRACKING_ON),
                Expect::Reply {
                    slot: Rc::clone(&ready),
                    pinned: false,
                    timeout: Some(self.shared.settings.live.connect_timeout() * 2),
                },
            );
            st.conns.insert(
                Arc::clone(addr),
                Conn {
                    conn,
                    ready,
                    confirmed: false,
                },
            );
        }
        st.masters = masters;
        drop(st);
        if changed {
            tracing::info!("slot owners changed; tracking clients get a flush");
            self.flush();
        }
    }

    /// Notes connections whose tracking is on; a connection that became ready after clients
    /// were answered flushes them (writes before it were not heard). Answers the waiting
    /// `CLIENT TRACKING ON` requests once no connection is still opening.
    fn confirm(&self) {
        let mut st = self.state.borrow_mut();
        let mut newly = false;
        let mut failed = false;
        for (addr, c) in st.conns.iter_mut() {
            if c.confirmed {
                continue;
            }
            if let Some(reply) = c.ready.take() {
                c.confirmed = true;
                if resp::is_error(&reply) {
                    tracing::warn!(node = %addr, reply = %String::from_utf8_lossy(&reply).trim_end(), "a node refused CLIENT TRACKING; tracking clients get a flush");
                    failed = true;
                } else {
                    newly = true;
                }
            }
        }
        // A refused connection is dropped and tried again next tick.
        st.conns
            .retain(|_, c| !(c.confirmed && c.conn.closed().is_some()));
        let opening = st.conns.values().any(|c| !c.confirmed);
        // Clients answered earlier (and waiting ones that read already) may hold values
        // written before this connection listened.
        let stale: Vec<u64> = if newly || failed {
            st.trackers
                .keys()
                .copied()
                .filter(|id| !st.waiters.iter().any(|w| w.id == *id && !w.read))
                .collect()
        } else {
            Vec::new()
        };
        let now = tokio::time::Instant::now();
        let mut answer = Vec::new();
        st.waiters.retain(|w| {
            let go = !opening || now >= w.deadline;
            if go {
                answer.push(Rc::clone(&w.reply));
            }
            !go
        });
        drop(st);
        if !stale.is_empty() {
            self.flush_some(stale);
        }
        for w in answer {
            w.fill(resp::simple("OK"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_invalidate;
    use bytes::Bytes;

    fn parse(frame: &str) -> Option<Option<Vec<Bytes>>> {
        parse_invalidate(&Bytes::copy_from_slice(frame.as_bytes()))
    }

    #[test]
    fn invalidations_are_read_and_anything_unreadable_is_a_flush() {
        assert_eq!(
            parse(">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            Some(Some(vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b")
            ]))
        );
        assert_eq!(parse(">2\r\n$10\r\ninvalidate\r\n_\r\n"), Some(None));
        // Keys that are not bulk strings, or a keys part that is not an array: a flush.
        assert_eq!(parse(">2\r\n$10\r\ninvalidate\r\n*1\r\n:5\r\n"), Some(None));
        assert_eq!(parse(">2\r\n$10\r\ninvalidate\r\n+x\r\n"), Some(None));
        // Not an invalidation at all.
        assert_eq!(parse(">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"), None);
        assert_eq!(parse("+OK\r\n"), None);
    }
}
