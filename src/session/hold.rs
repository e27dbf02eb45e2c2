//! A client's request held by CLIENT PAUSE (see [`crate::session::pause`] for the rules).
//!
//! Invariants: a session holds at most one request, and reads, parses and dispatches nothing
//! after it until it is released, so the client's order is kept; the held client counts as
//! blocked (INFO's `blocked_clients`, CLIENT LIST's `b`), as a paused client does in Redis
//! 7.0, and stops counting when the request is released or the client leaves; a session pays
//! for the pause only when the batch's one load of the pause word says one is in force.

use super::Session;
use crate::route::command::{CommandSpec, FLAG_MAY_REPLICATE, FLAG_WRITE};
use crate::route::router::{Local, Route, Tx};
use crate::session::clients::BlockedMark;
use crate::session::pause::{self, ClientPause};
use bytes::Bytes;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

/// Commands Redis 7.0 marks `may_replicate` (its `COMMAND` reply hides the flag, so the
/// generated table lacks it): a WRITE pause holds them like writes.
const MAY_REPLICATE: &[&str] = &["eval", "evalsha", "fcall", "publish", "spublish", "pfcount"];

/// Whether a command may write or replicate, for a WRITE pause (an EXEC counts when its
/// transaction queued such a command: `tx_writes`).
pub(super) fn may_write(spec: Option<&CommandSpec>, route: &Route, tx_writes: bool) -> bool {
    let Some(spec) = spec else {
        return false;
    };
    spec.flags & (FLAG_WRITE | FLAG_MAY_REPLICATE) != 0
        || MAY_REPLICATE.contains(&spec.name)
        || (matches!(route, Route::Tx(Tx::Exec)) && tx_writes)
}

/// The request a pause holds, as read.
pub(super) struct Held {
    /// Its arguments.
    pub(super) args: Vec<Bytes>,
    /// Its bytes as they go to a node.
    pub(super) wire: Bytes,
    /// Set when the pause no longer holds it (and the session was woken).
    released: Rc<Cell<bool>>,
    /// Counts the client as blocked while held.
    _mark: BlockedMark,
}

impl Held {
    /// Whether the pause let the request go.
    pub(super) fn released(&self) -> bool {
        self.released.get()
    }
}

impl Session {
    /// Whether the pause in force (`word`, read for this batch) holds a request routed to
    /// `route`; `Some(write)` when it does, saying whether the request may write. Requests
    /// answered with an error at once (unknown, refused, not logged in), PROXY commands and
    /// monitors' requests are never held, nor anything while the proxy shuts down.
    pub(super) fn pause_holds(
        &self,
        word: u64,
        route: &Route,
        spec: Option<&CommandSpec>,
    ) -> Option<bool> {
        let now = self.worker.shared.metrics.started.elapsed().as_millis() as u64;
        let (mode, _) = ClientPause::in_force(word, now)?;
        // A monitor is never held, as Redis never pauses its replicas and monitors.
        if matches!(route, Route::Reply(_) | Route::Local(Local::Proxy))
            || (matches!(route, Route::CrossSlot) && !self.cross_slot_emulates())
            || self.obs.draining()
            || self.is_monitor()
        {
            return None;
        }
        let write = may_write(spec, route, self.tx.writes());
        pause::holds(mode, write).then_some(write)
    }

    /// Keeps the request (`args`, `wire`) and starts waiting for the pause to let it go
    /// (`write`: it may write); the release wakes the session, which dispatches it then.
    pub(super) fn hold(&mut self, write: bool, args: Vec<Bytes>, wire: Bytes) {
        let shared = Arc::clone(&self.worker.shared);
        let released = Rc::new(Cell::new(false));
        let flag = Rc::clone(&released);
        let signal = Rc::clone(&self.signal);
        let task = tokio::task::spawn_local(async move {
            let started = shared.metrics.started;
            shared
                .registries
                .pause
                .released(write, || started.elapsed().as_millis() as u64)
                .await;
            flag.set(true);
            signal.notify_one();
        });
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(task.abort_handle());
        self.paused = Some(Box::new(Held {
            args,
            wire,
            released,
            _mark: BlockedMark::new(&self.live),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::resp::test_args as args;

    fn write(a: &[&str], tx_writes: bool) -> bool {
        let a = args(a);
        let r = crate::route::router::analyse(&a, &mut Vec::new());
        may_write(r.spec, &r.route, tx_writes)
    }

    #[test]
    fn writes_and_may_replicate_commands_are_held_by_a_write_pause() {
        assert!(write(&["SET", "k", "v"], false));
        assert!(write(&["BLPOP", "k", "0"], false));
        assert!(write(&["EVAL", "return 1", "0"], false));
        assert!(write(&["PUBLISH", "c", "m"], false));
        assert!(write(&["PFCOUNT", "h"], false));
        assert!(!write(&["GET", "k"], false));
        assert!(!write(&["EVAL_RO", "return 1", "0"], false));
        assert!(!write(&["CLIENT", "UNPAUSE"], false));
        assert!(!write(&["EXEC"], false));
        assert!(write(&["EXEC"], true));
        assert!(!write(&["NOSUCH"], false));
    }
}
