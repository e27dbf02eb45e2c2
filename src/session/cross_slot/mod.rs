//! Multi-key commands across slots, carried out by the proxy (`cross_slot = "emulate"`).
//!
//! A command whose keys hash to different slots reaches the session as
//! [`Route::CrossSlot`](crate::route::router::Route::CrossSlot). With `refuse` (the default,
//! or the client's user's own setting) it gets Redis Cluster's CROSSSLOT error, as before.
//! With `emulate`, [`plan`] decides the steps and [`run`] performs them over the nodes
//! involved, not atomically: the result is what one Redis gives when no other client touches
//! those keys meanwhile.
//!
//! Invariants: the emulation starts only once every earlier request of the client has its
//! reply, and nothing the client sends after it is read until its reply is in (the session's
//! fence, [`super::fence`]), so the client's own commands never interleave with its steps;
//! inside a transaction or under WATCH the command keeps CROSSSLOT (it cannot be atomic);
//! the task is never aborted, not even when the client leaves, so a move is never cut
//! between its write and its delete.

pub mod plan;
pub mod replies;
mod run;
pub mod sort;
pub mod tags;

use super::fence::Fenced;
use super::Session;
use crate::config::CrossSlot;
use crate::route::command;
use crate::route::dispatch::ReplySlot;
use crate::route::resp;
use crate::route::router::CROSSSLOT;
use bytes::Bytes;
use std::rc::Rc;

/// An emulation waiting for the client's earlier requests to be answered.
pub(super) struct Pending {
    /// The command's name (lowercase), for the metric and error texts.
    name: &'static str,
    plan: plan::Plan,
    /// The client's reply slot for the command (in its queue).
    slot: Rc<ReplySlot>,
    resp3: bool,
}

impl Pending {
    /// The client's reply slot for the command.
    pub(super) fn slot(&self) -> &Rc<ReplySlot> {
        &self.slot
    }
}

impl Session {
    /// Whether this client's multi-key commands across slots are emulated: its user's
    /// `cross_slot`, else the proxy's (live) setting.
    pub(super) fn cross_slot_emulates(&self) -> bool {
        let own = self.client.user.as_ref().and_then(|s| s.user.cross_slot);
        let mode = own.unwrap_or_else(|| self.worker.shared.settings.live.get().cross_slot);
        mode == CrossSlot::Emulate
    }

    /// A command whose keys span slots: CROSSSLOT, or its emulation (started now, or once
    /// the earlier requests are answered).
    pub(super) fn cross_slot(&mut self, args: &[Bytes]) {
        if self.tx.active() || !self.cross_slot_emulates() {
            return self.push_ready(resp::error(CROSSSLOT));
        }
        let Some(spec) = command::lookup(args) else {
            return self.push_ready(resp::error(CROSSSLOT));
        };
        let plan = match plan::plan(spec, args, rand::random()) {
            Ok(p) => p,
            Err(reply) => return self.push_ready(reply),
        };
        for s in plan.slots() {
            self.touch(s);
        }
        let slot = self.new_slot();
        self.queue.push_back(Rc::clone(&slot));
        let pending = Pending {
            name: spec.name,
            plan,
            slot,
            resp3: self.client.resp3,
        };
        if self.answered_before(&pending.slot) {
            self.cross_slot_start(pending);
        } else {
            self.fenced = Some(Box::new(Fenced::CrossSlot(Box::new(pending))));
        }
    }

    /// Whether every request before the one whose reply goes to `mine` is answered.
    pub(super) fn answered_before(&self, mine: &Rc<ReplySlot>) -> bool {
        self.queue
            .iter()
            .take_while(|s| !Rc::ptr_eq(s, mine))
            .all(|s| s.is_filled())
    }

    /// Starts the emulation's task; the client's later requests wait until it answers.
    pub(super) fn cross_slot_start(&mut self, p: Pending) {
        let worker = Rc::clone(&self.worker);
        worker.shared.metrics.cross_slot.bump(p.name);
        self.fenced = Some(Box::new(Fenced::Running));
        // Not in `self.tasks`: a client that leaves must not cut a move in the middle.
        tokio::task::spawn_local(async move {
            let reply = run::run(&worker, p.name, p.plan, p.resp3, &p.slot).await;
            p.slot.fill(reply);
        });
    }
}
