//! Who belongs to the cluster, read from a survey: the membership engines' view of the present
//! layout. Pure.
//!
//! Membership is anchored on the masters that own slots (neither ADD nor REMOVE ever changes
//! which nodes those are): a node is a member when a reachable slot owner lists it (handshakes
//! aside). So a node that a REMOVE made everyone forget is no member even while it still
//! remembers the cluster itself, and a new node is a member once the slot owners have accepted
//! it, whatever it believes.

use crate::admin::survey::{ip_of, NodeState, Survey};
use crate::cluster::NodeLine;

/// A member as the cluster sees it: its own line when it answers, else a slot owner's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node ID.
    pub id: String,
    /// `ip:port` (the address it answered at, when it answered).
    pub addr: String,
    /// Cluster bus port (0 when unknown).
    pub cport: u16,
    /// Master or replica.
    pub master: bool,
    /// The master's ID, for a replica.
    pub master_id: Option<String>,
    /// Slots owned.
    pub slots: usize,
    /// Keys held (0 when it did not answer).
    pub keys: u64,
    /// Whether it answered the survey.
    pub reachable: bool,
    /// Whether a slot owner flags it `fail` or `noaddr` (not `fail?`: one node's passing doubt
    /// is no reason to refuse, and the waits see it clear).
    pub flagged: bool,
}

impl Member {
    /// The host (its IP: the membership engines take labels only for the nodes they add).
    pub fn host(&self) -> &str {
        ip_of(&self.addr)
    }

    /// Whether it answers and nobody flags it.
    pub fn healthy(&self) -> bool {
        self.reachable && !self.flagged
    }
}

/// The members of the cluster, in the order the slot owners list them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Every member.
    pub list: Vec<Member>,
    /// The first reachable slot owner's `CLUSTER NODES` (for the lease: who owns its key's slot).
    pub anchor_view: Vec<NodeLine>,
}

/// Whether a reachable node is a master owning slots by its own account.
fn owns_slots(n: &NodeState) -> bool {
    n.reachable()
        && n.myself()
            .is_some_and(|m| m.is_master() && !m.slots.is_empty())
}

impl Members {
    /// The members of the cluster the survey's slot owners form.
    pub fn of(s: &Survey) -> Members {
        let anchors: Vec<&NodeState> = s.nodes.iter().filter(|n| owns_slots(n)).collect();
        let mut list: Vec<Member> = Vec::new();
        for a in &anchors {
            for l in a.view.iter().filter(|l| !l.has("handshake")) {
                let flagged = l.has("fail") || l.has("noaddr");
                if let Some(m) = list.iter_mut().find(|m| m.id == l.id) {
                    m.flagged |= flagged;
                    continue;
                }
                let own = s.by_id(&l.id).filter(|n| n.cluster_enabled);
                let line = own.and_then(NodeState::myself).unwrap_or(l);
                list.push(Member {
                    id: l.id.clone(),
                    addr: own.map_or_else(|| l.addr(), |n| n.addr.clone()),
                    cport: line.cport,
                    master: line.is_master(),
                    master_id: line.master_id.clone().filter(|_| !line.is_master()),
                    slots: line
                        .slots
                        .iter()
                        .map(|&(a, b)| usize::from(b - a) + 1)
                        .sum(),
                    keys: own.map_or(0, |n| n.dbsize),
                    reachable: own.is_some(),
                    flagged,
                });
            }
        }
        Members {
            list,
            anchor_view: anchors.first().map(|a| a.view.clone()).unwrap_or_default(),
        }
    }

    /// The member with this ID.
    pub fn by_id(&self, id: &str) -> Option<&Member> {
        self.list.iter().find(|m| m.id == id)
    }

    /// The member at this `ip:port`.
    pub fn by_addr(&self, addr: &str) -> Option<&Member> {
        self.list.iter().find(|m| m.addr == addr)
    }

    /// The replicas of the master `id`.
    pub fn replicas_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.list
            .iter()
            .filter(move |m| !m.master && m.master_id.as_deref() == Some(id))
    }

    /// The first healthy master that owns slots: the node new nodes meet.
    pub fn seed(&self) -> Option<&Member> {
        self.list
            .iter()
            .find(|m| m.master && m.slots > 0 && m.healthy())
    }
}
