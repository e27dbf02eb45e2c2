//! CLIENT UNBLOCK for clients blocked through the proxy, and the per-client list of blocked
//! commands it acts on.
//!
//! A blocking command (BLPOP, XREAD BLOCK, ...) waits on a dedicated connection of its own,
//! so the node, not the proxy, holds the blocked state. The proxy ends the wait by sending
//! `CLIENT UNBLOCK <that connection's id> TIMEOUT|ERROR` to the node on another connection;
//! the node then answers the blocked command itself. This is chosen over the proxy answering
//! the command and dropping the connection because the node decides atomically whether the
//! command was still blocked: if it was served a moment earlier, the node answers the
//! UNBLOCK `0` and the client gets the element it popped, where a proxy-made reply would race
//! the node and could lose that element. The reply is also the node's exact one for that
//! command, version and protocol (`*-1` or `_`, the UNBLOCKED error), and the connection
//! stays in step (its one reply arrives as usual), so it goes back to the pool clean. The
//! connection's id is asked once per connection, pipelined before its first blocking command
//! (no extra round trip). WAIT is run by the proxy itself (see `wait`), so the proxy ends it.
//!
//! Invariants: a client's blocked commands are listed oldest first and only while they wait
//! (an [`OpGuard`] is their place; its drop removes it, on every exit path); one CLIENT
//! UNBLOCK ends at most one of them, the oldest not already being unblocked, as Redis unblocks
//! the one command a client can have blocked; the asker gets `:1` only when the wait was
//! ended (by the node's own `:1`, or by the proxy for WAIT), `:0` otherwise.

use super::Session;
use crate::backend::worker::Worker;
use crate::local_notify::LocalNotify;
use crate::route::dispatch::{Call, Dest, ReplySlot, Target};
use crate::route::resp;
use crate::session::clients::{BlockedMark, Live, UnblockMode, UnblockRequest};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Redis's error for a command ended by `CLIENT UNBLOCK id ERROR`.
pub const UNBLOCKED: &str = "UNBLOCKED client unblocked via CLIENT UNBLOCK";

/// Reads CLIENT UNBLOCK's arguments (after `CLIENT`, from the subcommand as typed) in Redis's
/// order (the reason is checked before the id) and with its error texts.
pub fn parse(args: &[Bytes]) -> Result<(i64, UnblockMode), String> {
    let (id, mode) = match args {
        [_, id] => (id, UnblockMode::Timeout),
        [_, id, m] if m.eq_ignore_ascii_case(b"timeout") => (id, UnblockMode::Timeout),
        [_, id, m] if m.eq_ignore_ascii_case(b"error") => (id, UnblockMode::Error),
        [_, _, _] => return Err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR".into()),
        _ => return Err(crate::session::clients::syntax_error(&args[0])),
    };
    let id = resp::parse_int(id).ok_or("ERR value is not an integer or out of range")?;
    Ok((id, mode))
}

/// The blocked commands of one client, oldest first.
#[derive(Default)]
pub struct Ops {
    list: RefCell<VecDeque<Rc<Op>>>,
}

/// One blocked command's link to CLIENT UNBLOCK.
struct Op {
    /// Wakes the command's task: its replies arrive on it, and an UNBLOCK handed over.
    signal: Rc<LocalNotify>,
    /// The UNBLOCK handed to it, until the task takes it.
    request: RefCell<Option<UnblockRequest>>,
    /// An UNBLOCK was handed to it already: later ones go to the next command, or get `:0`.
    assigned: Cell<bool>,
}

/// A blocked command's place in its client's [`Ops`] and in the client's blocked count; held
/// by the command's task and dropped when the reply is in or the task is aborted.
pub struct OpGuard {
    ops: Rc<Ops>,
    op: Rc<Op>,
    _mark: BlockedMark,
}

impl Ops {
    /// Lists a command that starts waiting now, and counts it for `live`.
    pub fn start(self: &Rc<Self>, live: &Arc<Live>) -> OpGuard {
        let op = Rc::new(Op {
            signal: Rc::new(LocalNotify::new()),
            request: RefCell::new(None),
            assigned: Cell::new(false),
        });
        self.list.borrow_mut().push_back(Rc::clone(&op));
        OpGuard {
            ops: Rc::clone(self),
            op,
            _mark: BlockedMark::new(live),
        }
    }

    /// Hands `r` to the oldest command not being unblocked already and wakes its task; gives
    /// `r` back when there is none.
    fn assign(&self, r: UnblockRequest) -> Result<(), UnblockRequest> {
        let list = self.list.borrow();
        let Some(op) = list.iter().find(|op| !op.assigned.get()) else {
            return Err(r);
        };
        op.assigned.set(true);
        *op.request.borrow_mut() = Some(r);
        op.signal.notify_one();
        Ok(())
    }
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        self.ops
            .list
            .borrow_mut()
            .retain(|op| !Rc::ptr_eq(op, &self.op));
    }
}

impl OpGuard {
    /// The signal the command's task waits on: its reply slots wake it, and so does an
    /// UNBLOCK handed to it.
    pub fn signal(&self) -> &Rc<LocalNotify> {
        &self.op.signal
    }

    /// The UNBLOCK handed to this command, if one arrived since the last call.
    pub fn take_request(&self) -> Option<UnblockRequest> {
        self.op.request.borrow_mut().take()
    }
}

/// Asks node `addr` to unblock its client `id` (a dedicated connection's), on the worker's
/// shared connection to it, and tells `r`'s asker what the node answered. The command's own
/// reply then arrives on the dedicated connection as usual.
pub fn ask_node(worker: &Worker, addr: &Arc<str>, id: i64, r: UnblockRequest) {
    let word: &[u8] = match r.mode {
        UnblockMode::Timeout => b"TIMEOUT",
        UnblockMode::Error => b"ERROR",
    };
    let wire = resp::encode_command(&[&b"CLIENT"[..], b"UNBLOCK", id.to_string().as_bytes(), word])
        .freeze();
    let signal = Rc::new(LocalNotify::new());
    let slot = ReplySlot::new(&signal);
    worker.send(Call::new(
        wire,
        Dest::Node(Arc::clone(addr)),
        Target::Whole(Rc::clone(&slot)),
    ));
    let addr = Arc::clone(addr);
    // The worker answers or fails every call (`request_timeout` bounds it), so this ends.
    tokio::task::spawn_local(async move {
        let frame = loop {
            if let Some(f) = slot.take() {
                break f;
            }
            signal.notified().await;
        };
        let outcome = match &frame[..] {
            b":1\r\n" => Ok(true),
            b":0\r\n" => Ok(false),
            other => Err(format!(
                "ERR slotproxy: node {addr} did not unblock the command ({})",
                String::from_utf8_lossy(other.get(1..).unwrap_or_default()).trim_end()
            )),
        };
        let _ = r.done.send(outcome);
    });
}

/// What an asker is told when the node never said which client the blocked connection is.
pub const NO_NODE_ID: &str =
    "ERR slotproxy: the blocked command's node did not answer CLIENT ID on its connection, so it cannot be unblocked";

impl Session {
    /// CLIENT UNBLOCK id [TIMEOUT|ERROR]: hands the request to the blocked client's session
    /// (on whichever worker it runs); the reply keeps its place in the queue until the outcome
    /// is known.
    pub(super) fn client_unblock(&mut self, args: &[Bytes]) {
        let (id, mode) = match parse(&args[1..]) {
            Ok(v) => v,
            Err(e) => return self.push_ready(resp::error(&e)),
        };
        let target = u64::try_from(id)
            .ok()
            .and_then(|id| self.worker.shared.registries.clients.live(id))
            .filter(|l| l.blocked.load(Relaxed) > 0);
        let Some(target) = target else {
            return self.push_ready(resp::int(0));
        };
        let (done, outcome) = tokio::sync::oneshot::channel();
        target.request_unblock(UnblockRequest { mode, done });
        let slot = self.new_slot();
        self.queue.push_back(Rc::clone(&slot));
        // Not one of the client's waiting tasks: the outcome comes soon whatever happens (the
        // blocked client's session answers or drops the request, or a node call ends), and
        // a client that shuts down its writing side still gets the reply.
        tokio::task::spawn_local(async move {
            slot.fill(match outcome.await {
                Ok(Ok(true)) => resp::int(1),
                // Dropped unanswered: the client stopped waiting (or left) first.
                Ok(Ok(false)) | Err(_) => resp::int(0),
                Ok(Err(e)) => resp::error(&e),
            });
        });
    }

    /// Passes the CLIENT UNBLOCKs other clients sent for this one to its blocked commands
    /// (called when [`crate::session::clients::UNBLOCK`] is seen). A client that is only held by
    /// CLIENT PAUSE has none, and the asker gets `:0`, as from Redis.
    pub(super) fn serve_unblocks(&mut self) {
        for r in self.live.take_unblocks() {
            let unassigned = match &self.blocked_ops {
                Some(ops) => ops.assign(r).err(),
                None => Some(r),
            };
            if let Some(r) = unassigned {
                let _ = r.done.send(Ok(false));
            }
        }
    }

    /// Registers a blocking command or WAIT that starts now. The client's list of them is
    /// made at its first (most clients never block, and an idle connection should hold as
    /// little as possible).
    pub(super) fn start_blocked_op(&mut self) -> OpGuard {
        self.blocked_ops
            .get_or_insert_with(Rc::default)
            .start(&self.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::resp::test_args as args;
    use crate::session::clients::Registry;

    #[test]
    fn arguments_are_read_in_redis_order_with_its_errors() {
        let p = |a: &[&str]| parse(&args(a));
        assert_eq!(p(&["UNBLOCK", "7"]), Ok((7, UnblockMode::Timeout)));
        assert_eq!(p(&["unblock", "7", "Error"]), Ok((7, UnblockMode::Error)));
        assert_eq!(
            p(&["unblock", "-3", "timeout"]),
            Ok((-3, UnblockMode::Timeout))
        );
        assert_eq!(
            p(&["unblock", "x", "nope"]),
            Err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR".into())
        );
        assert_eq!(
            p(&["unblock", "x"]),
            Err("ERR value is not an integer or out of range".into())
        );
        assert_eq!(
            p(&["UNBLOCK", "1", "timeout", "x"]),
            Err(
                "ERR unknown subcommand or wrong number of arguments for 'UNBLOCK'. Try CLIENT HELP."
                    .into()
            )
        );
    }

    #[test]
    fn an_unblock_goes_to_the_oldest_waiting_command_once() {
        let reg = Registry::default();
        let live = reg.add(1, String::new(), String::new(), 0);
        let ops = Rc::new(Ops::default());
        let first = ops.start(&live);
        let second = ops.start(&live);
        assert_eq!(live.blocked.load(Relaxed), 2);
        assert_eq!(reg.blocked(), 1);
        let req = || {
            let (done, rx) = tokio::sync::oneshot::channel();
            (
                UnblockRequest {
                    mode: UnblockMode::Error,
                    done,
                },
                rx,
            )
        };
        let (r1, _rx1) = req();
        assert!(ops.assign(r1).is_ok());
        assert!(first.take_request().is_some() && second.take_request().is_none());
        let (r2, _rx2) = req();
        assert!(ops.assign(r2).is_ok());
        assert!(second.take_request().is_some());
        let (r3, _rx3) = req();
        assert!(ops.assign(r3).is_err(), "both are being unblocked already");
        drop(first);
        drop(second);
        assert_eq!(live.blocked.load(Relaxed), 0);
        assert_eq!(reg.blocked(), 0);
        let (r4, _rx4) = req();
        assert!(ops.assign(r4).is_err());
    }
}
