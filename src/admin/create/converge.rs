//! What CREATE's wait does about a cluster that has not converged yet, decided from one poll of
//! the listed nodes (pure; the loop that polls and sends lives in `execute.rs`).
//!
//! Redis spreads a node's slots and role only in that node's own messages, and after a
//! handshake, or a `CLUSTER REPLICATE`, a node may stay silent towards a peer for up to half the
//! cluster-node-timeout (its next PING of that peer) or until a random PING picks it. Waiting for
//! that made most of a create's time. A nudge is a `CLUSTER MEET <observer>` sent to the node
//! whose news is missing: Redis then opens a short handshake link and its MEET packet carries
//! the node's slots and role, which the observer reads at once because it knows the sender;
//! the handshake entry is dropped again when the PONG names a known node. A MEET to a node it
//! already knows changes nothing else, so a nudge is always safe to send.

use super::plan::Step;
use crate::admin::survey::NodeState;
use crate::cluster::NodeLine;
use std::collections::VecDeque;

/// Handshakes allowed under way at once (`handshake` lines in the polled views). A node that
/// falls behind by more than its handshake timeout (cluster-node-timeout, at least 1 s) makes
/// its peers drop their half-done handshakes and close the links, and Redis 7.0 crashes on a
/// MEET it reads from a link its sender already closed (the assertion on `nodeIp2String` in
/// `clusterProcessPacket`, src/cluster.c line 2288 at tag 7.0.15): with all 18,336 MEETs of 192
/// nodes at once on two cores, nodes lagged more than 5 s and some crashed. So the MEETs go out
/// as a sliding window, topped up after every poll.
pub const MEET_WINDOW: usize = 1024;

/// The MEETs of a plan's `Meet` steps, in the order they are sent: round-robin over the
/// sending nodes (each node's first peer, then each node's second, ...), so a replica's MEET of
/// its own master, which its step lists first, goes out in the first window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeetQueue {
    /// `(step index, from, to)`, next first.
    pairs: VecDeque<(usize, usize, usize)>,
    /// MEETs not sent yet per step index (steps with none left are done).
    left: Vec<(usize, usize)>,
}

impl MeetQueue {
    /// The queue of the `Meet` steps among `(step index, step)`.
    pub fn new<'a>(steps: impl IntoIterator<Item = (usize, &'a Step)>) -> MeetQueue {
        let lists: Vec<(usize, usize, &Vec<usize>)> = steps
            .into_iter()
            .filter_map(|(k, st)| match st {
                Step::Meet { node, others } => Some((k, *node, others)),
                _ => None,
            })
            .collect();
        let mut q = MeetQueue::default();
        let longest = lists.iter().map(|l| l.2.len()).max().unwrap_or(0);
        for round in 0..longest {
            for &(k, from, others) in &lists {
                if let Some(&to) = others.get(round) {
                    q.pairs.push_back((k, from, to));
                }
            }
        }
        q.left = lists.iter().map(|&(k, _, o)| (k, o.len())).collect();
        q
    }

    /// Whether every MEET was handed out.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// MEETs not handed out yet.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Hands out up to `n` MEETs `(from, to)`, skipping (and counting as done) pairs where
    /// `skip(from, to)` says one side already knows the other; also returns the indexes of
    /// the steps that have no MEET left.
    pub fn take(
        &mut self,
        n: usize,
        skip: impl Fn(usize, usize) -> bool,
    ) -> (Vec<(usize, usize)>, Vec<usize>) {
        let mut out = Vec::new();
        let mut done = Vec::new();
        while out.len() < n {
            let Some((k, from, to)) = self.pairs.pop_front() else {
                break;
            };
            if !skip(from, to) {
                out.push((from, to));
            }
            if let Some(e) = self.left.iter_mut().find(|e| e.0 == k) {
                e.1 -= 1;
                if e.1 == 0 {
                    done.push(k);
                }
            }
        }
        (out, done)
    }
}

/// Whether node `i` knows node `j` by ID, or has a handshake open with `j`'s address.
pub fn knows(listed: &[NodeState], ids: &[String], i: usize, j: usize) -> bool {
    let (Some(a), Some(b), Some(id)) = (listed.get(i), listed.get(j), ids.get(j)) else {
        return false;
    };
    a.view.iter().any(|l| l.id == *id) || shaking(a, &b.addr)
}

/// Handshakes under way in the polled views (each counted on the node that shows it).
pub fn handshakes(listed: &[NodeState]) -> usize {
    listed
        .iter()
        .map(|n| n.view.iter().filter(|l| l.has("handshake")).count())
        .sum()
}

/// Pairs `(from, to)` of listed nodes where `to` misses news about `from`: it does not know
/// `from` at all (and neither is shaking hands with the other), or its line for `from` differs
/// from `from`'s own line in role, master or slots. Sending `CLUSTER MEET <to>` to `from`
/// fixes either. `ids[i]` is the ID of `listed[i]`; unreachable nodes take no part.
pub fn nudges(listed: &[NodeState], ids: &[String]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (s, subject) in listed.iter().enumerate() {
        let Some(me) = subject.reachable().then(|| subject.myself()).flatten() else {
            continue;
        };
        let Some(id) = ids.get(s) else {
            continue;
        };
        for (o, observer) in listed.iter().enumerate() {
            if o == s || !observer.reachable() {
                continue;
            }
            match observer.view.iter().find(|l| l.id == *id) {
                Some(l) if !l.has("handshake") => {
                    if !same_config(l, me) {
                        out.push((s, o));
                    }
                }
                _ => {
                    // A handshake under way on either side brings the news without help.
                    if !shaking(observer, &subject.addr) && !shaking(subject, &observer.addr) {
                        out.push((s, o));
                    }
                }
            }
        }
    }
    out
}

/// Whether `n` has a handshake open with the node at `addr`.
fn shaking(n: &NodeState, addr: &str) -> bool {
    n.view
        .iter()
        .any(|l| l.has("handshake") && l.addr() == addr)
}

/// Whether an observer's line agrees with the node's own line on what the node announces.
fn same_config(seen: &NodeLine, own: &NodeLine) -> bool {
    seen.is_master() == own.is_master()
        && seen.master_id == own.master_id
        && seen.slots == own.slots
}

/// Handshakes still open between listed nodes, one line each (a nudge leaves one for a moment;
/// a create that returned then would leave a `handshake` flag for CHECK to warn about).
pub fn handshake_problems(listed: &[NodeState]) -> Vec<String> {
    let mut out = Vec::new();
    for o in listed.iter().filter(|n| n.reachable()) {
        for l in o.view.iter().filter(|l| l.has("handshake")) {
            let a = l.addr();
            if listed.iter().any(|n| n.addr == a) {
                out.push(format!("{} is still shaking hands with {a}", o.addr));
            }
        }
    }
    out
}

/// How the executor (`execute.rs`) groups consecutive steps: one pipeline per node for the setup and
/// for the MEETs, a retrying task per replica, one wait loop for the waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `SET-CONFIG-EPOCH` and `ADDSLOTSRANGE`: before any MEET, on nodes that know nobody.
    Setup,
    /// `CLUSTER MEET`s.
    Meet,
    /// `CLUSTER FAILOVER TAKEOVER`s.
    Takeover,
    /// `CLUSTER REPLICATE`s, each sent as soon as its replica knows its master.
    Replicate,
    /// The waits (joined, links up), watched together by one loop.
    Wait,
}

impl Phase {
    /// The phase a step runs in.
    pub fn of(step: &Step) -> Phase {
        match step {
            Step::SetEpoch { .. } | Step::AddSlots { .. } => Phase::Setup,
            Step::Meet { .. } => Phase::Meet,
            Step::Takeover { .. } => Phase::Takeover,
            Step::Replicate { .. } => Phase::Replicate,
            Step::WaitJoined | Step::WaitLinks => Phase::Wait,
        }
    }
}
