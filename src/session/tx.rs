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

use super::Session;
use crate::backend::dedicated::{Expect, Lease};
use crate::route::dispatch::ReplySlot;
use crate::route::resp;
use crate::route::router::{Local, Route, Tx, CROSSSLOT};
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
}

impl TxState {
    /// Whether requests must go through [`Session::tx_dispatch`]: a transaction is open, or keys
    /// are watched on the pinned connection.
    pub(super) fn active(&self) -> bool {
        self.in_multi || self.conn.is_some()
    }

    /// Between MULTI and EXEC/DISCARD.
    pub(super) fn in_multi(&self) -> bool {
        self.in_multi
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
    /// command at any time.
    pub(super) fn tx_dispatch(&mut self, route: Route, wire: Bytes, args: &[Bytes]) {
        let in_multi = self.tx.in_multi;
        match route {
            Route::Tx(t) => self.tx_command(t, wire),
            _ if !in_multi => self.dispatch_plain(route, wire, args),
            Route::Slot(slot) | Route::Blocking(slot) => self.tx_queue(Some(slot), wire),
            Route::AnyNode
            | Route::Publish
            | Route::Local(Local::Ping)
            | Route::Local(Local::Echo) => self.tx_queue(None, wire),
            Route::Split(_) => self.tx_refuse(resp::error(CROSSSLOT)),
            Route::Reply(err) => self.tx_refuse(err),
            // RESET is run at once inside MULTI too, as in Redis: it ends the transaction.
            Route::Local(Local::Quit) | Route::Local(Local::Reset) => {
                self.dispatch_plain(route, wire, args)
            }
            _ => {
                let name = String::from_utf8_lossy(&args[0]).to_uppercase();
                self.tx_refuse(resp::error(&format!(
                    "ERR slotproxy: '{name}' cannot be queued in a transaction: it does not concern one slot's node"
                )))
            }
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
