//! Why CREATE refuses to touch the listed nodes, and why they are not part way through its
//! plan: every such text of the engine in one place. `Display` gives the text the reply carries
//! after `refused: ` (and, for [`NotResumable`], inside adopt mode's note), so the wording a
//! test or an operator relies on lives only here.

use crate::admin::placement::PlanError;
use std::fmt;

/// Slot ranges as `a-b` (or `a` for one slot), comma-separated, as the refusals print them.
pub fn slot_list(slots: &[(u16, u16)]) -> String {
    slots
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A refusal of [`super::decide`]: nothing was written, and the text names the offending node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The survey has fewer entries than nodes were listed (a bug, not the operator's doing).
    SurveyShort,
    /// A listed node did not answer.
    Unreachable {
        /// Its `ip:port`.
        addr: String,
        /// What the survey got instead.
        error: String,
    },
    /// A listed node runs without `cluster-enabled yes`.
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
        /// The first address listed.
        first: String,
        /// The second.
        second: String,
        /// The shared ID.
        id: String,
    },
    /// A listed node knows a node that answers but is not listed.
    Foreign {
        /// The listed node.
        addr: String,
        /// The foreign node's `ip:port`.
        other: String,
        /// The foreign node's ID.
        id: String,
    },
    /// The fresh nodes cannot be placed.
    Placement(PlanError),
    /// A master without slots holds keys: CREATE never overwrites data.
    Keys {
        /// Its `ip:port`.
        addr: String,
        /// Its DBSIZE.
        count: u64,
    },
    /// A fresh node among nodes that already form a different cluster.
    Mixed {
        /// The fresh node's `ip:port`.
        addr: String,
        /// Why the others are not part way through the plan.
        reason: NotResumable,
    },
    /// A master that owns slots does not answer and no listed node replicates it.
    Orphaned {
        /// Its `ip:port`.
        addr: String,
        /// Its ID.
        id: String,
        /// Its slot ranges.
        slots: Vec<(u16, u16)>,
    },
    /// The existing cluster leaves slots without owner.
    Unowned {
        /// Why the nodes are not part way through the plan.
        reason: NotResumable,
        /// How many slots.
        count: usize,
        /// The slots, as ranges text.
        ranges: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::SurveyShort => f.write_str("internal: the survey misses listed nodes"),
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
            Refusal::SameId { first, second, id } => write!(
                f,
                "nodes {first} and {second} have the same node ID {id} (the same node listed twice?)"
            ),
            Refusal::Foreign { addr, other, id } => write!(
                f,
                "node {addr} already belongs to another cluster: it knows node {other} ({id}) which \
                 is not in NODES; reset it (CLUSTER RESET) or list every node of that cluster"
            ),
            Refusal::Placement(e) => write!(f, "{e}"),
            Refusal::Keys { addr, count } => write!(
                f,
                "node {addr} holds {count} key(s) but owns no slots; CREATE only uses empty nodes \
                 (FLUSHALL it if the data is not needed)"
            ),
            Refusal::Mixed { addr, reason } => write!(
                f,
                "node {addr} is empty and alone while other listed nodes are not ({reason}); CREATE \
                 does not mix new nodes into a cluster that differs from its plan"
            ),
            Refusal::Orphaned { addr, id, slots } => write!(
                f,
                "master {addr} ({id}) owns slots {} but does not answer and none of the listed \
                 nodes replicates it; start it, or list its replica",
                slot_list(slots)
            ),
            Refusal::Unowned {
                reason,
                count,
                ranges,
            } => write!(
                f,
                "the nodes already form a cluster ({reason}) and {count} slot(s) ({ranges}) have \
                 no owner; CREATE does not assign slots in a running cluster"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Why the nodes, not all fresh, are not part way through CREATE's plan (so adopt mode is
/// tried). `Display` is the reason adopt mode's note and its refusals quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotResumable {
    /// Live state contradicts the plan.
    Contradicts(Mismatch),
    /// The nodes know this many nodes that are not listed and do not answer.
    Ghosts(usize),
    /// The listed nodes admit no plan.
    Placement(PlanError),
}

impl fmt::Display for NotResumable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotResumable::Contradicts(m) => write!(f, "{m}"),
            NotResumable::Ghosts(n) => write!(
                f,
                "the nodes know {n} node(s) that are not listed and do not answer"
            ),
            NotResumable::Placement(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for NotResumable {}

/// What in one node's live state contradicts the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The node's view has no `myself` line.
    NoMyself {
        /// Its `ip:port`.
        addr: String,
    },
    /// The node has no role in the plan.
    NotPlanned {
        /// Its `ip:port`.
        addr: String,
    },
    /// A planned master is a replica.
    Replica {
        /// Its `ip:port`.
        addr: String,
    },
    /// A planned master owns other slots than the plan gives it.
    MasterSlots {
        /// Its `ip:port`.
        addr: String,
        /// What it owns.
        owns: Vec<(u16, u16)>,
        /// What the plan gives it.
        planned: (u16, u16),
    },
    /// A planned replica owns slots.
    ReplicaSlots {
        /// Its `ip:port`.
        addr: String,
        /// What it owns.
        owns: Vec<(u16, u16)>,
    },
    /// A planned replica replicates another master.
    OtherMaster {
        /// Its `ip:port`.
        addr: String,
        /// The planned master's `ip:port`.
        planned: String,
    },
    /// A node believes another listed node owns slots the plan gives elsewhere.
    Believes {
        /// The believing node's `ip:port`.
        addr: String,
        /// The other node's `ip:port`.
        other: String,
        /// The slots it believes the other owns.
        slots: Vec<(u16, u16)>,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NoMyself { addr } => write!(f, "{addr} has no myself line"),
            Mismatch::NotPlanned { addr } => write!(f, "{addr} is not in the plan"),
            Mismatch::Replica { addr } => {
                write!(f, "{addr} is a replica but the plan makes it a master")
            }
            Mismatch::MasterSlots {
                addr,
                owns,
                planned,
            } => write!(
                f,
                "{addr} owns slots {} but the plan gives it {}-{}",
                slot_list(owns),
                planned.0,
                planned.1
            ),
            Mismatch::ReplicaSlots { addr, owns } => write!(
                f,
                "{addr} owns slots {} but the plan makes it a replica",
                slot_list(owns)
            ),
            Mismatch::OtherMaster { addr, planned } => {
                write!(
                    f,
                    "{addr} replicates another master than the plan's {planned}"
                )
            }
            Mismatch::Believes { addr, other, slots } => write!(
                f,
                "{addr} believes {other} owns slots {}, which the plan gives elsewhere",
                slot_list(slots)
            ),
        }
    }
}

impl std::error::Error for Mismatch {}
