//! Transactions (MULTI/EXEC/DISCARD/WATCH/UNWATCH) on a connection pinned to one slot's owner.
//!
//! Invariants: a transaction's commands all reach one node on one connection of its own, in
//! order; every key in it hashes to the slot of the first key (WATCH's or the first queued
//! command's), and a key elsewhere gets Redis's CROSSSLOT error and marks the transaction so
//! that EXEC answers `EXECABORT`, as Redis does for any error at queue time; a redirect or a
//! lost connection inside the transaction reaches the client as an abort, never as MOVED.
//! MULTI is answered at once and sent to the node with the first command that names a slot,
//! because only then is the node known. Until then the proxy holds the queued commands itself,
//! at most `max_pipeline` of them and `max_pending_reply_bytes` bytes; one more is refused with
//! an error and EXEC answers `EXECABORT`, like any other error at queue time.
//!
//! Order across connections: a transaction's commands travel on its own connection, the
//! client's other commands on the shared ones, and two connections keep no order between
//! them. So that a pipelined `WATCH k; FLUSHALL; MULTI; ...; EXEC` (or `MULTI; ...; EXEC; GET
//! k`) runs in the order a single Redis runs it, a request that changes lanes (to the
//! transaction's connection from the shared ones, or back) waits until every earlier request
//! of the client is answered ([`lane`], [`must_wait`]; the session holds it in its
//! [`super::fence`]). Requests on one lane are not held, and a client without a transaction
//! or a watch never pays for any of this.

use super::Session;
use crate::backend::dedicated::{Expect, Lease};
use crate::route::dispatch::ReplySlot;
use crate::route::resp;
use crate::route::router::{FanOut, Local, NodeConfig, Route, Tx, CROSSSLOT};
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// One client's transaction state.
#[derive(Default)]
pub(super) struct TxState {
    /// The pinned connection, once the slot is known.
    conn: Option<Lease>,
    /// The slot every key must hash to.
    slot: Option<u16>,
    /// Between MULTI and EXEC/DISCARD.
    in_multi: bool,
    /// An error at queue time: EXEC discards the transaction.
    aborted: bool,
    /// A command that may write was queued since MULTI: a WRITE pause holds the EXEC.
    writes: bool,
    /// Keyless commands queued before the slot was known, sent once it is. They were
    /// answered `+QUEUED` at once (a client may wait for that before sending more); the
    /// node's own `+QUEUED` is dropped, and their results come with EXEC's. Bounded by
    /// `max_pipeline` commands and `max_pending_reply_bytes` bytes (see [`Session::tx_queue`]).
    buffered: Vec<Bytes>,
    /// Bytes in `buffered`.
    buffered_bytes: usize,
    /// The last request that reached a node went on the transaction's connection (it
    /// outlives the transaction: the request after EXEC waits for EXEC's reply).
    last_pinned: bool,
}

/// Which connections a request travels on, for the order between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    /// The transaction's own connection (or held by the proxy for it).
    Pinned,
    /// The shared connections, or any other of the client's.
    Shared,
    /// Answered by the proxy without running anything on a node.
    Neutral,
}

/// The lane of a request, given whether a transaction is open (`in_multi`) and whether the
/// connection is pinned (keys watched, or a slot named inside MULTI).
pub(super) fn lane(route: &Route, in_multi: bool, pinned: bool) -> Lane {
    match route {
        Route::Tx(Tx::Multi) if !in_multi && pinned => Lane::Pinned,
        Route::Tx(Tx::Multi) => Lane::Neutral,
        Route::Tx(Tx::Watch(_)) if in_multi => Lane::Neutral,
        Route::Tx(Tx::Watch(_)) => Lane::Pinned,
        Route::Tx(Tx::Unwatch) if in_multi || pinned => Lane::Pinned,
        Route::Tx(Tx::Exec | Tx::Discard) if in_multi => Lane::Pinned,
        Route::Tx(_) => Lane::Neutral,
        // Refused with CROSSSLOT under a transaction or a watch (see `super::cross_slot`).
        Route::Reply(_) | Route::CrossSlot | Route::Local(Local::Quit | Local::Reset) => {
            Lane::Neutral
        }
        _ if in_multi => Lane::Pinned,
        Route::Local(Local::ConfigGet) => Lane::Shared,
        Route::Local(_) => Lane::Neutral,
        _ => Lane::Shared,
    }
}

/// Whether a request on `lane` must wait for every earlier request's reply: it changes lanes.
pub(super) fn must_wait(lane: Lane, last_pinned: bool) -> bool {
    match lane {
        Lane::Pinned => !last_pinned,
        Lane::Shared => last_pinned,
        Lane::Neutral => false,
    }
}

/// The queue-time error of a command the proxy cannot put in a transaction.
fn not_queueable(args: &[Bytes]) -> Bytes {
    let name = String::from_utf8_lossy(&args[0]).to_uppercase();
    resp::error(&format!(
        "ERR slotproxy: '{name}' cannot be queued in a transaction: it does not concern one slot's node"
    ))
}

impl TxState {
    /// Whether requests must go through [`Session::tx_dispatch`]: a transaction is open, keys
    /// are watched on the pinned connection, or the last request went on that connection.
    pub(super) fn active(&self) -> bool {
        self.in_multi || self.conn.is_some() || self.last_pinned
    }

    /// Between MULTI and EXEC/DISCARD.
    pub(super) fn in_multi(&self) -> bool {
        self.in_multi
    }

    /// What [`lane`] and [`must_wait`] read: in MULTI, pinned, last request pinned.
    pub(super) fn lanes(&self) -> (bool, bool, bool) {
        (self.in_multi, self.conn.is_some(), self.last_pinned)
    }

    /// Whether a command that may write was queued since MULTI.
    pub(super) fn writes(&self) -> bool {
        self.writes
    }

    /// Notes a command queued (or refused) inside MULTI that may write.
    pub(super) fn note_write(&mut self) {
        self.writes = true;
    }
}

impl Session {
    /// Handles a request while a transaction is open or keys are watched, or a transaction
    /// command at any time. The session has made it wait for the earlier replies if it
    /// changes lanes (see the module's documentation); this notes its lane.
    pub(super) fn tx_dispatch(&mut self, route: Route, wire: Bytes, args: &[Bytes]) {
        let lane = lane(&route, self.tx.in_multi, self.tx.conn.is_some());
        self.tx_run(route, wire, args);
        match lane {
            Lane::Pinned => self.tx.last_pinned = true,
            Lane::Shared => self.tx.last_pinned = false,
            Lane::Neutral => {}
        }
    }

    fn tx_run(&mut self, route: Route, wire: Bytes, args: &[Bytes]) {
        let in_multi = self.tx.in_multi;
        match route {
            Route::Tx(t) => self.tx_command(t, wire),
            _ if !in_multi => self.dispatch_plain(route, wire, args),
            Route::Slot(slot) | Route::Blocking(slot) | Route::SortPatterns(slot) => {
                self.tx_queue(Some(slot), wire)
            }
            // CONFIG GET queued shows the node's values, the slow log's included.
            Route::AnyNode
            | Route::Publish
            | Route::Local(Local::Ping)
            | Route::Local(Local::Echo)
            | Route::Local(Local::ConfigGet) => self.tx_queue(None, wire),
            Route::Split(_) | Route::CrossSlot => self.tx_refuse(resp::error(CROSSSLOT)),
            Route::Reply(err) => self.tx_refuse(err),
            // A CONFIG SET the proxy refuses anyway gets that refusal.
            Route::FanOut(FanOut::AllNodes {
                config: Some(NodeConfig::Set),
                ..
            }) => {
                let refused = self
                    .config_set_refusal(args)
                    .unwrap_or_else(|| not_queueable(args));
                self.tx_refuse(refused)
            }
            // RESET is run at once inside MULTI too, as in Redis: it ends the transaction.
            Route::Local(Local::Quit) | Route::Local(Local::Reset) => {
                self.dispatch_plain(route, wire, args)
            }
            _ => self.tx_refuse(not_queueable(args)),
        }
    }

    fn tx_command(&mut self, t: Tx, wire: Bytes) {
        let in_multi = self.tx.in_multi;
        match t {
            Tx::Multi if in_multi => {
                self.push_ready(resp::error("ERR MULTI calls can not be nested"))
            }
            Tx::Multi => {
                self.tx.in_multi = true;
                self.live
                    .multi
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.tx.aborted = false;
                self.tx.writes = false;
                if self.tx.conn.is_some() {
                    self.tx_send(wire);
                } else {
                    self.push_ready(resp::simple("OK"));
                }
            }
            Tx::Watch(_) if in_multi => {
                self.push_ready(resp::error("ERR WATCH inside MULTI is not allowed"))
            }
            Tx::Watch(slot) => match self.tx.slot {
                Some(s) if s != slot => self.push_ready(resp::error(CROSSSLOT)),
                _ => match self.tx_pin(slot) {
                    Ok(()) => self.tx_send(wire),
                    Err(e) => self.push_ready(e),
                },
            },
            Tx::Unwatch if in_multi => self.tx_queue(None, wire),
            Tx::Unwatch => {
                if self.tx.conn.is_some() {
                    self.tx_send(wire);
                    self.tx_end(true);
                } else {
                    self.push_ready(resp::simple("OK"));
                }
            }
            Tx::Exec if !in_multi => self.push_ready(resp::error("ERR EXEC without MULTI")),
            Tx::Discard if !in_multi => self.push_ready(resp::error("ERR DISCARD without MULTI")),
            Tx::Exec | Tx::Discard => {
                if let Some(conn) = &self.tx.conn {
                    if let Some(why) = conn.closed() {
                        let msg = format!(
                            "EXECABORT slotproxy: the connection to the transaction's node {} was lost ({why}); the transaction was discarded",
                            conn.addr()
                        );
                        self.push_ready(resp::error(&msg));
                        return self.tx_end(false);
                    }
                }
                if t == Tx::Exec && self.tx.aborted {
                    if self.tx.conn.is_some() {
                        self.tx_send_silent(Bytes::from_static(DISCARD));
                    }
                    self.push_ready(resp::error(EXECABORT));
                    return self.tx_end(true);
                }
                if self.tx.conn.is_none() {
                    if t == Tx::Discard {
                        self.tx.buffered.clear();
                        self.tx.buffered_bytes = 0;
                        self.push_ready(resp::simple("OK"));
                        return self.tx_end(true);
                    }
                    // Nothing named a slot: any master runs it.
                    if let Err(e) = self.tx_pin_any() {
                        self.push_ready(e);
                        return self.tx_end(false);
                    }
                }
                self.tx_send(wire);
                self.tx_end(true);
            }
        }
    }

    /// Queues a command inside MULTI: pins the connection on the first slot, sends it there.
    fn tx_queue(&mut self, slot: Option<u16>, wire: Bytes) {
        if let Some(slot) = slot {
            match self.tx.slot {
                Some(s) if s != slot => return self.tx_refuse(resp::error(CROSSSLOT)),
                Some(_) => {}
                None => {
                    if let Err(e) = self.tx_pin(slot) {
                        return self.tx_refuse(e);
                    }
                }
            }
        }
        if self.tx.conn.is_some() {
            self.tx_send(wire);
        } else if self.tx.aborted {
            // EXEC will discard it anyway: answered as Redis does, but not kept.
            self.push_ready(resp::simple("QUEUED"));
        } else if self.tx.buffered.len() >= self.max_pipeline
            || self.tx.buffered_bytes + wire.len() > self.max_out
        {
            // The proxy holds these itself (no node has them yet), so they are bounded like
            // a client's pipeline and its pending replies.
            self.tx.buffered = Vec::new();
            self.tx.buffered_bytes = 0;
            self.tx_refuse(resp::error(&format!(
                "ERR slotproxy: too many commands queued before the transaction named a key (at most max_pipeline {} commands and max_pending_reply_bytes {} bytes); the transaction will be discarded",
                self.max_pipeline, self.max_out
            )));
        } else {
            self.tx.buffered_bytes += wire.len();
            self.tx.buffered.push(wire);
            self.push_ready(resp::simple("QUEUED"));
        }
    }

    /// An error at queue time: the client gets it, and EXEC will discard the transaction.
    fn tx_refuse(&mut self, err: Bytes) {
        self.tx.aborted = true;
        self.push_ready(err);
    }

    fn tx_pin(&mut self, slot: u16) -> Result<(), Bytes> {
        if self.tx.conn.is_some() {
            self.tx.slot.get_or_insert(slot);
            return Ok(());
        }
        let addr = match self.worker.shared.topology.map.load().owner(slot) {
            Some(n) => Arc::clone(&n.addr),
            None => return Err(resp::error(crate::backend::worker::CLUSTERDOWN_UNSERVED)),
        };
        self.tx.slot = Some(slot);
        self.tx_open(&addr)
    }

    fn tx_pin_any(&mut self) -> Result<(), Bytes> {
        let map = self.worker.shared.topology.map.load();
        let masters = crate::route::fanout::masters(&map);
        if masters.is_empty() {
            return Err(resp::error(crate::backend::worker::CLUSTERDOWN_UNSERVED));
        }
        let addr = Arc::clone(&masters[self.client.id as usize % masters.len()]);
        self.tx_open(&addr)
    }

    fn tx_open(&mut self, addr: &Arc<str>) -> Result<(), Bytes> {
        let lease = self
            .worker
            .dedicated
            .open(
                addr,
                self.client.resp3,
                None,
                &self.quota,
                self.dedicated_cap(),
            )
            .map_err(|e| resp::error(&e.to_string()))?;
        self.tx.conn = Some(lease);
        if self.tx.in_multi {
            // MULTI was answered already; the node's +OK is dropped.
            self.tx_send_silent(Bytes::from_static(MULTI));
            self.tx.buffered_bytes = 0;
            for wire in std::mem::take(&mut self.tx.buffered) {
                self.tx_send_silent(wire);
            }
        }
        Ok(())
    }

    fn tx_send(&mut self, wire: Bytes) {
        let r = self.new_slot();
        self.queue.push_back(Rc::clone(&r));
        self.tx_send_to(wire, r);
    }

    fn tx_send_to(&mut self, wire: Bytes, slot: Rc<ReplySlot>) {
        let timeout = Some(self.worker.shared.settings.live.request_timeout());
        match &self.tx.conn {
            Some(conn) => conn.send(
                wire,
                Expect::Reply {
                    slot,
                    pinned: true,
                    timeout,
                },
            ),
            None => slot.fill(resp::error("ERR slotproxy: transaction has no connection")),
        }
    }

    fn tx_send_silent(&mut self, wire: Bytes) {
        if let Some(conn) = &self.tx.conn {
            conn.send(wire, Expect::Discard);
        }
    }

    /// Ends the transaction (and the watch). The connection is released once its last reply
    /// is in; with `clean` the node holds no state for it any more and it may be reused.
    fn tx_end(&mut self, clean: bool) {
        let tx = std::mem::take(&mut self.tx);
        self.tx.last_pinned = tx.last_pinned;
        self.live
            .multi
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(conn) = tx.conn {
            self.retire(conn, clean);
        }
    }

    /// Releases a dedicated connection once it has no pending reply (dropping it earlier would
    /// fail those replies).
    pub(super) fn retire(&mut self, conn: Lease, reusable: bool) {
        self.retired.push((conn, reusable));
    }

    /// Drops or returns the retired connections that are done.
    pub(super) fn reap_retired(&mut self) {
        if self.retired.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.retired.len() {
            let done = {
                let (c, _) = &self.retired[i];
                c.idle() || c.closed().is_some()
            };
            if done {
                let (conn, reusable) = self.retired.swap_remove(i);
                if reusable {
                    self.worker.dedicated.give_back(conn);
                }
            } else {
                i += 1;
            }
        }
    }

    /// RESET: drops the transaction and the watch without telling the node (closing the
    /// connection clears them there).
    pub(super) fn tx_reset(&mut self) {
        self.tx_end(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::resp::test_args as args;
    use crate::route::router::route;

    fn r(a: &[&str]) -> Route {
        route(&args(a), &mut Vec::new())
    }

    #[test]
    fn requests_keep_to_their_lane() {
        use Lane::*;
        // Outside a transaction, nothing watched.
        assert_eq!(lane(&r(&["GET", "k"]), false, false), Shared);
        assert_eq!(lane(&r(&["FLUSHALL"]), false, false), Shared);
        assert_eq!(lane(&r(&["CONFIG", "GET", "x"]), false, false), Shared);
        assert_eq!(lane(&r(&["PING"]), false, false), Neutral);
        assert_eq!(lane(&r(&["NOSUCH"]), false, false), Neutral);
        assert_eq!(lane(&r(&["MULTI"]), false, false), Neutral);
        assert_eq!(lane(&r(&["EXEC"]), false, false), Neutral);
        assert_eq!(lane(&r(&["UNWATCH"]), false, false), Neutral);
        assert_eq!(lane(&r(&["WATCH", "k"]), false, false), Pinned);
        // Watching: MULTI and UNWATCH go to the node; other commands stay shared.
        assert_eq!(lane(&r(&["MULTI"]), false, true), Pinned);
        assert_eq!(lane(&r(&["UNWATCH"]), false, true), Pinned);
        assert_eq!(lane(&r(&["SET", "k", "v"]), false, true), Shared);
        // Inside MULTI everything queued is the transaction's; errors and RESET are the proxy's.
        for a in [
            &["SET", "k", "v"][..],
            &["PING"],
            &["EXEC"],
            &["DISCARD"],
            &["KEYS", "*"],
        ] {
            assert_eq!(lane(&r(a), true, false), Pinned, "{a:?}");
        }
        assert_eq!(lane(&r(&["NOSUCH"]), true, true), Neutral);
        assert_eq!(lane(&r(&["WATCH", "k"]), true, true), Neutral);
        assert_eq!(lane(&r(&["MULTI"]), true, true), Neutral);
        assert_eq!(lane(&r(&["RESET"]), true, true), Neutral);
    }

    #[test]
    fn only_a_change_of_lane_waits() {
        assert!(must_wait(Lane::Pinned, false));
        assert!(!must_wait(Lane::Pinned, true));
        assert!(must_wait(Lane::Shared, true));
        assert!(!must_wait(Lane::Shared, false));
        assert!(!must_wait(Lane::Neutral, true));
        assert!(!must_wait(Lane::Neutral, false));
    }
}
