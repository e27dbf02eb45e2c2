//! A worker's reads from replicas: the READONLY connections to replicas, the replicas that
//! failed a request here, and the round-robin turn.
//!
//! A read the session marked [`Dest::Read`] goes to the node [`choose`] names from the
//! published [`crate::cluster::replica_health`]; sent to the master it becomes an ordinary
//! `Dest::Slot` call. Invariant: a read a replica could not answer (connection lost, timed out,
//! node down, LOADING, MASTERDOWN) is sent again — to the master, or with `read_from = replica`
//! to another usable replica — so the client gets no error a master read would not have
//! given; the replica is skipped on this worker until a health poll that started after the
//! failure has found it usable.

use super::{Worker, CLUSTERDOWN_UNSERVED};
use crate::backend::Pool;
use crate::cluster::replica_health::ReplicaState;
use crate::route::dispatch::{Call, Dest};
use crate::route::replica_choice::{choose, refusal, Choice, ReadFrom, Reason, Usable};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Resends of one read after replicas failed it, before the client gets the last error
/// (`read_from = replica` only; other modes go to the master after the first).
const MAX_REPLICA_RETRIES: u8 = 3;

/// Per-worker state of reads from replicas.
#[derive(Default)]
pub(super) struct ReplicaReads {
    /// READONLY connections, per replica address.
    pub(super) pools: RefCell<HashMap<Arc<str>, Rc<Pool>>>,
    /// Replicas that failed a request here, with the health round at the time.
    failed: RefCell<Vec<(Arc<str>, u64)>>,
    /// Round-robin counter over the usable replicas.
    turn: Cell<usize>,
}

/// Whether a replica's error reply says it cannot serve reads now (so the read goes
/// elsewhere): it is loading its data set, or its link to the master is down and it does not
/// serve stale data.
pub(super) fn unusable(frame: &[u8]) -> bool {
    frame.starts_with(b"-LOADING") || frame.starts_with(b"-MASTERDOWN")
}

/// Whether a failure recorded in `failed_round` still excludes the replica in `round`: until
/// a poll that started after the failure has finished.
fn still_failed(failed_round: u64, round: u64) -> bool {
    round < failed_round.saturating_add(2)
}

impl Worker {
    /// Sends a read of `slot` to the node `mode` and the replicas' health choose.
    pub(super) fn send_read(&self, mut call: Call, slot: u16, mode: ReadFrom) {
        let map = self.map();
        let Some(n) = map.owner_index(slot) else {
            return call.fail(CLUSTERDOWN_UNSERVED);
        };
        let health = self.shared.topology.replicas.load();
        let known = health.of(&map, n);
        let replicas: &[ReplicaState] = known.map_or(&[], |m| &m.replicas);
        // Replicas the map lists but no poll has seen yet are not usable yet.
        let count = match known {
            Some(_) => replicas.len(),
            None => map.nodes[n].replicas.len(),
        };
        let failed = self.replicas.failed.borrow();
        let usable = |i: usize| match replicas.get(i) {
            Some(r) if !r.usable => Usable::No(Reason::Lagging),
            Some(r)
                if failed
                    .iter()
                    .any(|(a, at)| *a == r.addr && still_failed(*at, health.round)) =>
            {
                Usable::No(Reason::Failed)
            }
            Some(r) if r.preferred => Usable::Preferred,
            Some(_) => Usable::Yes,
            None => Usable::No(Reason::Lagging),
        };
        let turn = self.replicas.turn.get();
        self.replicas.turn.set(turn.wrapping_add(1));
        let master_preferred = known.is_some_and(|m| m.preferred);
        let choice = choose(mode, count, usable, master_preferred, turn);
        drop(failed);
        match choice {
            Choice::Replica(i) => {
                let pool = replicas
                    .get(i)
                    .and_then(|r| self.pool_in(&self.replicas.pools, &r.addr, true));
                if let Some(pool) = pool {
                    return pool.send(call, false);
                }
            }
            Choice::Refuse(why) => return call.fail(&refusal(slot, why)),
            Choice::Fallback(why) => self.count_fallback(why),
            Choice::Master => {}
        }
        call.dest = Dest::Slot(slot);
        match self.pool_for(&map, n) {
            Some(pool) => pool.send(call, false),
            None => call.fail(CLUSTERDOWN_UNSERVED),
        }
    }

    /// A replica (`from`) could not answer a read: it is skipped here until the health poll
    /// finds it usable again, and the read goes to the master (or, with `read_from =
    /// replica`, to another usable replica). Any other call fails with `msg`.
    pub(super) fn on_lost(&self, mut call: Call, from: &str, msg: &str) {
        let Dest::Read(slot, mode) = call.dest else {
            return call.fail(msg);
        };
        let round = self.shared.topology.replicas.load().round;
        {
            let mut failed = self.replicas.failed.borrow_mut();
            failed.retain(|(a, at)| &**a != from && still_failed(*at, round));
            failed.push((Arc::from(from), round));
        }
        tracing::debug!(replica = %from, reason = %msg, "a read from a replica failed; sending it elsewhere");
        if mode != ReadFrom::Replica {
            self.count_fallback(Reason::Failed);
            call.dest = Dest::Slot(slot);
            return self.send(call);
        }
        if call.retries >= MAX_REPLICA_RETRIES {
            return call.fail(msg);
        }
        call.retries = call.retries.saturating_add(1);
        self.send_read(call, slot, mode)
    }

    fn count_fallback(&self, why: Reason) {
        self.shared.metrics.replica_read_fallbacks[why.index()].fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_replica_waits_for_a_whole_later_poll() {
        // Failed during round 4 (a poll may be under way): round 5 may have started before
        // the failure, round 6 started after it.
        assert!(still_failed(4, 4));
        assert!(still_failed(4, 5));
        assert!(!still_failed(4, 6));
    }

    #[test]
    fn loading_and_masterdown_send_the_read_elsewhere() {
        assert!(unusable(
            b"-LOADING Redis is loading the dataset in memory\r\n"
        ));
        assert!(unusable(
            b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n"
        ));
        assert!(!unusable(b"-MOVED 1 127.0.0.1:7000\r\n"));
        assert!(!unusable(b"-WRONGTYPE Operation against a key\r\n"));
    }
}
