//! Pub/sub for one client: SUBSCRIBE/PSUBSCRIBE on one dedicated connection to the pub/sub
//! node ([`crate::cluster::SlotMap::pubsub_node`]: cluster pub/sub carries every PUBLISH to
//! every node, so any node would deliver, but PUBLISH answers the receiving node's own count,
//! and PUBLISH goes to that node), SSUBSCRIBE on a dedicated connection per shard-channel
//! owner.
//!
//! Invariants: the proxy keeps the client's subscriptions and composes the confirmations
//! itself (their counts must cover every connection, as a single Redis's would), but a
//! confirmation reaches the client only after the node confirmed, so a message published
//! right after it is not missed; a message is placed before any reply its connection sent
//! after it; a subscription whose node failed, or whose slot moved, is made again on the
//! slot's new owner without the client noticing; a subscriber that does not read is cut at
//! `max_pubsub_reply_bytes`.

use super::Session;
use crate::backend::dedicated::{Expect, Lease, Sink};
use crate::cluster::slots::key_slot;
use crate::local_notify::LocalNotify;
use crate::route::dispatch::ReplySlot;
use crate::route::resp;
use crate::route::router::{Local, Route, Sub};
use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Pause before re-subscribing shard channels whose node failed or gave up their slot, so the
/// slot map has a chance to catch up.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(200);

/// Frames and events the client's pub/sub connections produced, waiting for the session.
struct Mailbox {
    messages: RefCell<VecDeque<(Bytes, Option<Rc<ReplySlot>>)>>,
    /// Connections that ended, by node.
    lost: RefCell<Vec<Arc<str>>>,
    /// Shard channels a node unsubscribed on its own.
    dropped: RefCell<Vec<Bytes>>,
    /// Subscription commands a node refused, by their reply slot.
    refused: RefCell<Vec<Rc<ReplySlot>>>,
    signal: Rc<LocalNotify>,
}

impl Sink for Mailbox {
    fn message(&self, _addr: &Arc<str>, frame: Bytes, before: Option<Rc<ReplySlot>>) {
        self.messages.borrow_mut().push_back((frame, before));
        self.signal.notify_one();
    }

    fn unsubscribed(&self, _addr: &Arc<str>, frame: Bytes) {
        if let Some(elements) = resp::array_elements(&frame) {
            if let Some(Ok(resp::Value::Bulk(Some(ch)))) = elements.get(1).map(resp::Value::decode)
            {
                self.dropped.borrow_mut().push(ch);
            }
        }
        self.signal.notify_one();
    }

    fn closed(&self, addr: &Arc<str>, _reason: &str) {
        self.lost.borrow_mut().push(Arc::clone(addr));
        self.signal.notify_one();
    }

    fn refused(&self, _addr: &Arc<str>, slot: &Rc<ReplySlot>) {
        self.refused.borrow_mut().push(Rc::clone(slot));
        self.signal.notify_one();
    }
}

/// Which set a subscription command adds to.
#[derive(Clone, Copy)]
enum SubKind {
    Channel,
    Pattern,
    Shard,
}

/// One client's subscriptions and the connections that carry them.
pub(super) struct PubSub {
    main: Option<Lease>,
    shards: HashMap<Arc<str>, Lease>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    /// Shard channel -> the node it is subscribed on.
    shard_channels: BTreeMap<Bytes, Arc<str>>,
    mailbox: Rc<Mailbox>,
    /// Shard channels to subscribe again (their node failed or gave up the slot).
    orphans: BTreeSet<Bytes>,
    /// Re-subscriptions under way: channel and the slot its node's reply fills.
    resubscribing: Vec<(Bytes, Rc<ReplySlot>)>,
    /// A re-subscription timer is running.
    timer: bool,
    /// Subscription commands not confirmed yet: their reply slot and what they added, undone
    /// if the node refuses them (the client then gets the node's error, as from Redis, and is
    /// not subscribed).
    unconfirmed: Vec<(Rc<ReplySlot>, SubKind, Vec<Bytes>)>,
}

impl PubSub {
    /// Remembers what a subscription command newly added until the node confirms it.
    fn note_unconfirmed(&mut self, slot: &Rc<ReplySlot>, kind: SubKind, added: Vec<Bytes>) {
        // Confirmed commands' slots are held by nothing else any more.
        self.unconfirmed.retain(|(s, _, _)| Rc::strong_count(s) > 1);
        if !added.is_empty() {
            self.unconfirmed.push((Rc::clone(slot), kind, added));
        }
    }

    /// Undoes the subscriptions of commands the nodes refused; whether there were any.
    fn undo_refused(&mut self) -> bool {
        let refused = std::mem::take(&mut *self.mailbox.refused.borrow_mut());
        let mut any = false;
        for slot in refused {
            let Some(i) = self
                .unconfirmed
                .iter()
                .position(|(s, _, _)| Rc::ptr_eq(s, &slot))
            else {
                continue;
            };
            let (_, kind, names) = self.unconfirmed.swap_remove(i);
            for n in &names {
                match kind {
                    SubKind::Channel => {
                        self.channels.remove(n);
                    }
                    SubKind::Pattern => {
                        self.patterns.remove(n);
                    }
                    SubKind::Shard => {
                        self.shard_channels.remove(n);
                    }
                }
            }
            any = true;
        }
        any
    }

    fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Channels, patterns and shard channels subscribed (CLIENT LIST's sub, psub, ssub).
    pub(super) fn counts(&self) -> (usize, usize, usize) {
        (
            self.channels.len(),
            self.patterns.len(),
            self.shard_channels.len() + self.orphans.len(),
        )
    }

    /// Subscriptions of any kind; at zero the client leaves subscribed mode.
    pub(super) fn total(&self) -> usize {
        self.count() + self.shard_channels.len() + self.orphans.len()
    }
}

fn ack(out: &mut BytesMut, resp3: bool, kind: &str, name: Option<&[u8]>, count: usize) {
    out.extend_from_slice(if resp3 { b">3\r\n" } else { b"*3\r\n" });
    resp::put_bulk(out, kind.as_bytes());
    match name {
        Some(n) => resp::put_bulk(out, n),
        None if resp3 => out.extend_from_slice(b"_\r\n"),
        None => out.extend_from_slice(resp::NULL_BULK),
    }
    resp::put_int(out, count as i64);
}

impl Session {
    /// RESP2 subscribed mode: only subscription commands, PING, QUIT and RESET.
    pub(super) fn dispatch_subscribed(&mut self, route: Route, wire: Bytes, args: &[Bytes]) {
        match route {
            Route::Sub(_) | Route::Local(Local::Quit) | Route::Local(Local::Reset) => {
                self.dispatch_plain(route, wire, args)
            }
            Route::Local(Local::Ping) => self.push_ready(Self::subscribed_ping(args)),
            Route::Reply(err) => self.push_ready(err),
            Route::CrossSlot => self.push_ready(resp::error(crate::route::router::CROSSSLOT)),
            _ => {
                let name = String::from_utf8_lossy(&args[0]).to_lowercase();
                self.push_ready(resp::error(&format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                )))
            }
        }
    }

    fn pubsub(&mut self) -> &mut PubSub {
        let signal = Rc::clone(&self.signal);
        self.subs.get_or_insert_with(|| {
            Box::new(PubSub {
                main: None,
                shards: HashMap::new(),
                channels: BTreeSet::new(),
                patterns: BTreeSet::new(),
                shard_channels: BTreeMap::new(),
                mailbox: Rc::new(Mailbox {
                    messages: RefCell::new(VecDeque::new()),
                    lost: RefCell::new(Vec::new()),
                    dropped: RefCell::new(Vec::new()),
                    refused: RefCell::new(Vec::new()),
                    signal,
                }),
                orphans: BTreeSet::new(),
                resubscribing: Vec::new(),
                timer: false,
                unconfirmed: Vec::new(),
            })
        })
    }

    /// Opens a pub/sub connection to `addr` whose messages go to this client's mailbox.
    fn open_sub(&mut self, addr: &Arc<str>) -> Result<Lease, Bytes> {
        let sink: Rc<dyn Sink> = self.pubsub().mailbox.clone();
        self.worker
            .dedicated
            .open(
                addr,
                self.client.resp3,
                Some(sink),
                &self.quota,
                self.dedicated_cap(),
            )
            .map_err(|e| resp::error(&e.to_string()))
    }

    /// The node for SUBSCRIBE/PSUBSCRIBE: where PUBLISH goes too
    /// ([`crate::cluster::SlotMap::pubsub_node`]), so PUBLISH counts this client.
    fn pubsub_node(&self, avoid: Option<&str>) -> Option<Arc<str>> {
        let map = self.worker.shared.topology.map.load();
        map.pubsub_node(avoid).map(|n| Arc::clone(&n.addr))
    }

    /// Handles a subscription command.
    pub(super) fn sub_dispatch(&mut self, sub: Sub, wire: Bytes, args: &[Bytes]) {
        match sub {
            Sub::Subscribe | Sub::Psubscribe => self.subscribe(sub == Sub::Psubscribe, wire, args),
            Sub::Unsubscribe | Sub::Punsubscribe => {
                self.unsubscribe(sub == Sub::Punsubscribe, args)
            }
            Sub::Ssubscribe(slot) => self.ssubscribe(slot, wire, args),
            Sub::Sunsubscribe => self.sunsubscribe(args),
        }
        self.sub_leave_if_done();
    }

    fn subscribe(&mut self, pattern: bool, wire: Bytes, args: &[Bytes]) {
        let signal = Rc::clone(&self.signal);
        if self.subs.as_ref().is_none_or(|s| s.main.is_none()) {
            let Some(addr) = self.pubsub_node(None) else {
                return self.push_ready(resp::error(crate::backend::worker::CLUSTERDOWN_UNSERVED));
            };
            match self.open_sub(&addr) {
                Ok(lease) => self.pubsub().main = Some(lease),
                Err(e) => return self.push_ready(e),
            }
        }
        let resp3 = self.client.resp3;
        let ps = self.pubsub();
        let mut out = BytesMut::new();
        let mut added = Vec::new();
        for name in &args[1..] {
            let new = if pattern {
                ps.patterns.insert(name.clone())
            } else {
                ps.channels.insert(name.clone())
            };
            if new {
                added.push(name.clone());
            }
            let kind = if pattern { "psubscribe" } else { "subscribe" };
            ack(&mut out, resp3, kind, Some(name), ps.count());
        }
        let slot = ReplySlot::new(&signal);
        let kind = if pattern {
            SubKind::Pattern
        } else {
            SubKind::Channel
        };
        ps.note_unconfirmed(&slot, kind, added);
        let expect = Expect::Acks {
            count: args.len() - 1,
            slot: Rc::clone(&slot),
            reply: out.freeze(),
        };
        if let Some(main) = &ps.main {
            main.send(wire, expect);
        }
        self.queue.push_back(slot);
    }

    fn unsubscribe(&mut self, pattern: bool, args: &[Bytes]) {
        let signal = Rc::clone(&self.signal);
        let resp3 = self.client.resp3;
        let kind = if pattern {
            "punsubscribe"
        } else {
            "unsubscribe"
        };
        let ps = self.pubsub();
        let names: Vec<Bytes> = if args.len() > 1 {
            args[1..].to_vec()
        } else if pattern {
            ps.patterns.iter().cloned().collect()
        } else {
            ps.channels.iter().cloned().collect()
        };
        let mut out = BytesMut::new();
        if names.is_empty() {
            ack(&mut out, resp3, kind, None, ps.count());
            return self.push_ready(out.freeze());
        }
        for name in &names {
            if pattern {
                ps.patterns.remove(name);
            } else {
                ps.channels.remove(name);
            }
            ack(&mut out, resp3, kind, Some(name), ps.count());
        }
        match &ps.main {
            Some(main) => {
                let slot = ReplySlot::new(&signal);
                let mut cmd = Vec::with_capacity(names.len() + 1);
                cmd.push(Bytes::from_static(kind.as_bytes()));
                cmd.extend(names.iter().cloned());
                main.send(
                    resp::encode_command(&cmd).freeze(),
                    Expect::Acks {
                        count: names.len(),
                        slot: Rc::clone(&slot),
                        reply: out.freeze(),
                    },
                );
                self.queue.push_back(slot);
            }
            None => self.push_ready(out.freeze()),
        }
    }

    fn ssubscribe(&mut self, slot: u16, wire: Bytes, args: &[Bytes]) {
        let signal = Rc::clone(&self.signal);
        let owner = self
            .worker
            .shared
            .topology
            .map
            .load()
            .owner(slot)
            .map(|n| Arc::clone(&n.addr));
        let Some(addr) = owner else {
            return self.push_ready(resp::error(crate::backend::worker::CLUSTERDOWN_UNSERVED));
        };
        if !self
            .subs
            .as_ref()
            .is_some_and(|s| s.shards.contains_key(&addr))
        {
            match self.open_sub(&addr) {
                Ok(lease) => {
                    self.pubsub().shards.insert(Arc::clone(&addr), lease);
                }
                Err(e) => return self.push_ready(e),
            }
        }
        let resp3 = self.client.resp3;
        let ps = self.pubsub();
        let mut out = BytesMut::new();
        let mut added = Vec::new();
        for name in &args[1..] {
            ps.orphans.remove(name);
            if ps
                .shard_channels
                .insert(name.clone(), Arc::clone(&addr))
                .is_none()
            {
                added.push(name.clone());
            }
            ack(
                &mut out,
                resp3,
                "ssubscribe",
                Some(name),
                ps.shard_channels.len(),
            );
        }
        let reply_slot = ReplySlot::new(&signal);
        ps.note_unconfirmed(&reply_slot, SubKind::Shard, added);
        if let Some(conn) = ps.shards.get(&addr) {
            conn.send(
                wire,
                Expect::Acks {
                    count: args.len() - 1,
                    slot: Rc::clone(&reply_slot),
                    reply: out.freeze(),
                },
            );
        }
        self.queue.push_back(reply_slot);
    }

    fn sunsubscribe(&mut self, args: &[Bytes]) {
        let signal = Rc::clone(&self.signal);
        let resp3 = self.client.resp3;
        let ps = self.pubsub();
        let names: Vec<Bytes> = if args.len() > 1 {
            args[1..].to_vec()
        } else {
            ps.shard_channels
                .keys()
                .chain(ps.orphans.iter())
                .cloned()
                .collect()
        };
        if names.is_empty() {
            let mut out = BytesMut::new();
            ack(
                &mut out,
                resp3,
                "sunsubscribe",
                None,
                ps.shard_channels.len(),
            );
            return self.push_ready(out.freeze());
        }
        // One reply slot per run of channels on the same node, in the client's order: each
        // is confirmed by its own node.
        let mut runs: Vec<(Option<Arc<str>>, Vec<Bytes>, BytesMut)> = Vec::new();
        for name in names {
            ps.orphans.remove(&name);
            let node = ps.shard_channels.remove(&name);
            let mut frame = BytesMut::new();
            ack(
                &mut frame,
                resp3,
                "sunsubscribe",
                Some(&name),
                ps.shard_channels.len() + ps.orphans.len(),
            );
            let node = node.filter(|n| ps.shards.contains_key(n));
            match runs.last_mut() {
                Some((n, list, out)) if *n == node => {
                    list.push(name);
                    out.extend_from_slice(&frame);
                }
                _ => runs.push((node, vec![name], frame)),
            }
        }
        let mut slots = Vec::with_capacity(runs.len());
        for (node, list, out) in runs {
            let conn = node.as_ref().and_then(|n| ps.shards.get(n));
            match conn {
                Some(conn) => {
                    let slot = ReplySlot::new(&signal);
                    let mut cmd = vec![Bytes::from_static(b"sunsubscribe")];
                    let count = list.len();
                    cmd.extend(list);
                    conn.send(
                        resp::encode_command(&cmd).freeze(),
                        Expect::Acks {
                            count,
                            slot: Rc::clone(&slot),
                            reply: out.freeze(),
                        },
                    );
                    slots.push(slot);
                }
                None => slots.push(ReplySlot::ready(&signal, out.freeze())),
            }
        }
        self.queue.extend(slots);
    }

    /// Closes the connections no subscription needs any more; with no subscription left the
    /// client is out of subscribed mode.
    fn sub_leave_if_done(&mut self) {
        let Some(ps) = self.subs.as_mut() else {
            return;
        };
        let used: std::collections::HashSet<Arc<str>> =
            ps.shard_channels.values().cloned().collect();
        let idle: Vec<Arc<str>> = ps
            .shards
            .keys()
            .filter(|a| !used.contains(*a))
            .cloned()
            .collect();
        let mut retire = Vec::new();
        for a in idle {
            if let Some(l) = ps.shards.remove(&a) {
                retire.push(l);
            }
        }
        if ps.count() == 0 {
            if let Some(l) = ps.main.take() {
                retire.push(l);
            }
        }
        // The state stays (empty) until RESET or the end of the connection: a retired
        // connection may still deliver messages sent before its last confirmation.
        for l in retire {
            self.retire(l, false);
        }
    }

    /// Whether the client is in RESP2 subscribed mode, where only subscription commands,
    /// PING, QUIT and RESET may run.
    pub(super) fn subscribed(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.total() > 0)
    }

    /// RESET: every subscription ends; the connections close.
    pub(super) fn sub_reset(&mut self) {
        if let Some(ps) = self.subs.take() {
            let ps = *ps;
            if let Some(l) = ps.main {
                self.retire(l, false);
            }
            for (_, l) in ps.shards {
                self.retire(l, false);
            }
        }
    }

    /// Moves arrived messages into the reply queue and repairs lost subscriptions. Called on
    /// every turn of the session loop while the client has subscriptions.
    pub(super) fn sub_maintain(&mut self) {
        let signal = Rc::clone(&self.signal);
        let Some(ps) = self.subs.as_mut() else {
            return;
        };
        let messages = std::mem::take(&mut *ps.mailbox.messages.borrow_mut());
        for (frame, before) in messages {
            let at = before.and_then(|b| self.queue.iter().position(|q| Rc::ptr_eq(q, &b)));
            // Counted like any reply: a RESP3 subscriber's messages queued behind an
            // unanswered request count toward its limits too.
            let slot = ReplySlot::ready_counted(&signal, frame, &self.held);
            match at {
                Some(i) => self.queue.insert(i, slot),
                None => self.queue.push_back(slot),
            }
        }
        let Some(ps) = self.subs.as_mut() else {
            return;
        };
        if ps.undo_refused() {
            self.sub_leave_if_done();
            self.sync_registry();
        }
        let Some(ps) = self.subs.as_mut() else {
            return;
        };
        let lost = std::mem::take(&mut *ps.mailbox.lost.borrow_mut());
        let dropped = std::mem::take(&mut *ps.mailbox.dropped.borrow_mut());
        let mut failed_main = None;
        for addr in lost {
            if ps.main.as_ref().is_some_and(|m| *m.addr() == addr) {
                failed_main = ps.main.take();
            }
            if let Some(l) = ps.shards.remove(&addr) {
                drop(l);
                let gone: Vec<Bytes> = ps
                    .shard_channels
                    .iter()
                    .filter(|(_, n)| **n == addr)
                    .map(|(c, _)| c.clone())
                    .collect();
                for c in gone {
                    ps.shard_channels.remove(&c);
                    ps.orphans.insert(c);
                }
            }
        }
        for c in dropped {
            if ps.shard_channels.remove(&c).is_some() {
                ps.orphans.insert(c);
            }
        }
        // Re-subscriptions that finished: an error (MOVED, node down) makes the channel an
        // orphan again.
        let mut retry = Vec::new();
        ps.resubscribing.retain(|(c, slot)| {
            let Some(reply) = slot.take() else {
                return true;
            };
            if resp::is_error(&reply) {
                retry.push(c.clone());
            }
            false
        });
        for c in retry {
            ps.shard_channels.remove(&c);
            ps.orphans.insert(c);
        }
        if let Some(old) = failed_main {
            let avoid = Arc::clone(old.addr());
            drop(old);
            self.resubscribe_main(&avoid);
        }
        let Some(ps) = self.subs.as_mut() else {
            return;
        };
        if !ps.orphans.is_empty() && !ps.timer {
            ps.timer = true;
            self.worker.shared.topology.trigger_refresh();
            let signal = Rc::clone(&self.signal);
            let due = Rc::clone(&self.sub_due);
            due.set(false);
            let h = tokio::task::spawn_local(async move {
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
                due.set(true);
                signal.notify_one();
            });
            self.tasks.push(h.abort_handle());
        } else if ps.timer && self.sub_due.get() {
            ps.timer = false;
            self.resubscribe_orphans();
        }
    }

    /// The SUBSCRIBE/PSUBSCRIBE connection failed: subscribe everything again on another
    /// node. Confirmations are dropped; the client never asked for these.
    fn resubscribe_main(&mut self, avoid: &str) {
        let Some(addr) = self.pubsub_node(Some(avoid)) else {
            return;
        };
        let Ok(lease) = self.open_sub(&addr) else {
            return;
        };
        tracing::info!(client = self.client.id, node = %addr, "re-subscribing a client's channels after its node connection failed");
        let Some(ps) = self.subs.as_mut() else {
            return;
        };
        for (kind, set) in [("subscribe", &ps.channels), ("psubscribe", &ps.patterns)] {
            if set.is_empty() {
                continue;
            }
            let mut cmd = vec![Bytes::from_static(kind.as_bytes())];
            cmd.extend(set.iter().cloned());
            let sink = ReplySlot::new(&Rc::new(LocalNotify::new()));
            lease.send(
                resp::encode_command(&cmd).freeze(),
                Expect::Acks {
                    count: set.len(),
                    slot: sink,
                    reply: Bytes::new(),
                },
            );
        }
        ps.main = Some(lease);
    }

    fn resubscribe_orphans(&mut self) {
        let orphans: Vec<Bytes> = match self.subs.as_mut() {
            Some(ps) => std::mem::take(&mut ps.orphans).into_iter().collect(),
            None => return,
        };
        let map = self.worker.shared.topology.map.load();
        for c in orphans {
            let owner = map.owner(key_slot(&c)).map(|n| Arc::clone(&n.addr));
            let Some(addr) = owner else {
                self.pubsub().orphans.insert(c);
                continue;
            };
            if !self
                .subs
                .as_ref()
                .is_some_and(|s| s.shards.contains_key(&addr))
            {
                match self.open_sub(&addr) {
                    Ok(l) => {
                        self.pubsub().shards.insert(Arc::clone(&addr), l);
                    }
                    Err(_) => {
                        self.pubsub().orphans.insert(c);
                        continue;
                    }
                }
            }
            let signal = Rc::clone(&self.signal);
            let ps = self.pubsub();
            let slot = ReplySlot::new(&signal);
            if let Some(conn) = ps.shards.get(&addr) {
                let cmd = [Bytes::from_static(b"ssubscribe"), c.clone()];
                conn.send(
                    resp::encode_command(&cmd).freeze(),
                    Expect::Reply {
                        slot: Rc::clone(&slot),
                        pinned: false,
                        timeout: None,
                    },
                );
                tracing::info!(node = %addr, "re-subscribing a shard channel after its slot moved or its node failed");
                ps.shard_channels.insert(c.clone(), Arc::clone(&addr));
                ps.resubscribing.push((c, slot));
            }
        }
    }

    /// The reply to PING in RESP2 subscribed mode: `["pong", message]`.
    pub(super) fn subscribed_ping(args: &[Bytes]) -> Bytes {
        let mut out = BytesMut::new();
        resp::put_array_header(&mut out, 2);
        resp::put_bulk(&mut out, b"pong");
        resp::put_bulk(&mut out, args.get(1).map_or(&b""[..], |a| &a[..]));
        out.freeze()
    }
}
