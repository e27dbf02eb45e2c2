//! Why ADD or REMOVE refuses to touch the cluster: every such text of the two engines in one
//! place. `Display` is the text the reply carries after `refused: `; each names the node.
//! Nothing is written before a refusal.

use crate::admin::placement::extend::AssignError;
use crate::admin::placement::PlanError;
use std::fmt;

/// A refusal of [`super::plan::decide_add`] or [`super::remove::decide_remove`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No reachable node owns slots: there is no cluster to change.
    NoCluster,
    /// A member that must take part does not answer or is flagged failing (ADD: it must learn
    /// the new nodes; REMOVE: it must forget the removed ones).
    MemberDown {
        /// Its `ip:port`.
        addr: String,
        /// `does not answer` or `is flagged failing`.
        why: &'static str,
        /// The engine asking (`ADD` or `REMOVE`), for the advice.
        engine: &'static str,
    },
    /// A listed node does not answer.
    Unreachable {
        /// Its `ip:port`.
        addr: String,
        /// What the survey got.
        error: String,
    },
    /// A listed node runs without cluster mode.
    NotClusterEnabled {
        /// Its `ip:port`.
        addr: String,
    },
    /// A listed node's `CLUSTER NODES` has no `myself` line.
    NoMyself {
        /// Its `ip:port`.
        addr: String,
    },
    /// Two listed addresses answer with one node ID.
    SameId {
        /// The first address.
        first: String,
        /// The second.
        second: String,
    },
    /// A listed node knows a node that is not a member of this cluster.
    Foreign {
        /// The listed node.
        addr: String,
        /// The other node's `ip:port`.
        other: String,
        /// Its ID.
        id: String,
    },
    /// A listed node that is not a member holds keys.
    Keys {
        /// Its `ip:port`.
        addr: String,
        /// Its DBSIZE.
        count: u64,
    },
    /// A listed node that is not a member owns slots or replicates someone.
    NotEmpty {
        /// Its `ip:port`.
        addr: String,
        /// What it is (`owns 5 slots`, `is a replica`).
        what: String,
    },
    /// A listed node is a member already and this is not the end of an ADD of these nodes.
    Already {
        /// Its `ip:port`.
        addr: String,
        /// Its role (`a master owning 5461 slots`).
        what: String,
    },
    /// The new shards cannot be placed.
    Placement(PlanError),
    /// The new replicas cannot be placed.
    Assign(AssignError),
    /// `REPLICAS-OF` names no member.
    NoSuchMaster {
        /// As given.
        name: String,
    },
    /// `REPLICAS-OF` names a replica.
    NotAMaster {
        /// As given.
        name: String,
        /// Its master's `ip:port`.
        master: String,
    },
    /// A listed node is the master named by `REPLICAS-OF`.
    OwnMaster {
        /// Its `ip:port`.
        addr: String,
    },
    /// A new replica on its master's host while the cluster has other hosts.
    SameHost {
        /// The node.
        node: String,
        /// The host.
        host: String,
        /// The master's `ip:port`.
        master: String,
    },
    /// A member listed by an ADD is not part way through this ADD's plan.
    Mismatch {
        /// Its `ip:port`.
        addr: String,
        /// What contradicts the plan.
        why: String,
    },
    /// REMOVE: a master that owns slots.
    OwnsSlots {
        /// Its `ip:port`.
        addr: String,
        /// How many.
        slots: usize,
    },
    /// REMOVE: a master whose replicas are not all listed.
    Orphans {
        /// The master.
        addr: String,
        /// Its replicas that are not listed.
        replicas: Vec<String>,
    },
    /// REMOVE without FORCE: the last replica of a master that stays.
    LastReplica {
        /// The replica.
        addr: String,
        /// Its master.
        master: String,
    },
    /// REMOVE: a named node that belongs to another cluster.
    NotOurs {
        /// The node.
        addr: String,
        /// A node it knows that this cluster does not.
        other: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoCluster => f.write_str(
                "no cluster: no node the proxy reaches owns slots (PROXY CREATE builds one)",
            ),
            Refusal::MemberDown { addr, why, engine } => {
                let need = if *engine == "ADD" {
                    "every node must learn the new ones"
                } else {
                    "it would not forget the removed nodes and would bring them back when it \
                     returns"
                };
                write!(
                    f,
                    "node {addr} of the cluster {why}; {need}: bring it back first, or remove it \
                     (PROXY REMOVE NODES {addr})"
                )
            }
            Refusal::Unreachable { addr, error } => {
                write!(f, "node {addr} is unreachable: {error}")
            }
            Refusal::NotClusterEnabled { addr } => write!(
                f,
                "node {addr} is not cluster-enabled (set cluster-enabled yes and restart it)"
            ),
            Refusal::NoMyself { addr } => {
                write!(f, "node {addr} has no myself line in CLUSTER NODES")
            }
            Refusal::SameId { first, second } => write!(
                f,
                "nodes {first} and {second} have the same node ID (the same node listed twice?)"
            ),
            Refusal::Foreign { addr, other, id } => write!(
                f,
                "node {addr} belongs to another cluster: it knows node {other} ({id}), which is \
                 no member of this one; CLUSTER RESET HARD it first if it is to join"
            ),
            Refusal::Keys { addr, count } => write!(
                f,
                "node {addr} holds {count} key(s); ADD only takes empty nodes (FLUSHALL it if \
                 the data is not needed)"
            ),
            Refusal::NotEmpty { addr, what } => write!(
                f,
                "node {addr} {what} but is no member of this cluster; ADD only takes empty nodes"
            ),
            Refusal::Already { addr, what } => write!(
                f,
                "node {addr} is already a member of the cluster ({what}); ADD takes new nodes \
                 (to finish an interrupted ADD, list the same nodes as before)"
            ),
            Refusal::Placement(e) => write!(f, "{e}"),
            Refusal::Assign(e) => write!(f, "{e}"),
            Refusal::NoSuchMaster { name } => write!(
                f,
                "no member of the cluster is {name} (give the master's ip:port or node ID as \
                 CLUSTER NODES shows it, or ANY)"
            ),
            Refusal::NotAMaster { name, master } => write!(
                f,
                "node {name} is a replica (of {master}); REPLICAS-OF needs a master"
            ),
            Refusal::OwnMaster { addr } => {
                write!(f, "node {addr} is the master named by REPLICAS-OF")
            }
            Refusal::SameHost { node, host, master } => write!(
                f,
                "node {node} is on host {host} like its master {master}; a replica there would \
                 not survive the host's loss: use a node on another host, or REPLICAS-OF ANY"
            ),
            Refusal::Mismatch { addr, why } => write!(
                f,
                "node {addr} {why}, which is not part way through this ADD; leave it out, or \
                 CLUSTER RESET HARD it to start it over"
            ),
            Refusal::OwnsSlots { addr, slots } => write!(
                f,
                "master {addr} owns {slots} slots; drain it first with PROXY REBALANCE SLOTS \
                 WEIGHT {addr} 0"
            ),
            Refusal::Orphans { addr, replicas } => write!(
                f,
                "master {addr} has replica(s) {} that are not listed; list them too, or move \
                 them to another master first (CLUSTER REPLICATE <master id> on each)",
                replicas.join(", ")
            ),
            Refusal::LastReplica { addr, master } => write!(
                f,
                "node {addr} is the last replica of master {master}, which would be left \
                 without a copy; add FORCE to remove it anyway, or first give the master \
                 another replica (PROXY ADD REPLICAS-OF {master} NODES ...)"
            ),
            Refusal::NotOurs { addr, other } => write!(
                f,
                "node {addr} is no member of this cluster (it knows {other}, which this cluster \
                 does not); not touching it"
            ),
        }
    }
}

impl std::error::Error for Refusal {}
