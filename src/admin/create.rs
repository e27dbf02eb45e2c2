//! `PROXY CREATE REPLICAS <r> NODES <host:port> [HOST <label>] ... [DRYRUN] [ASYNC] [TIMEOUT <s>]`:
//! builds a Redis Cluster online from running nodes, with the exact placement of
//! [`crate::admin::placement::plan`] (the same planner as `slotproxy render`).
//!
//! Shape (the admin engines' common one): survey every listed node, decide in the pure
//! [`decide`] what is left to do, print it (`DRYRUN` stops there), execute it step by step with
//! bounded parallelism and a timeout per call, wait for convergence with a deadline, and end
//! with CHECK. Invariants:
//! - nothing is written before every node passed validation (reachable, cluster-enabled, and
//!   either empty or already part of exactly the cluster being built);
//! - state that contradicts the plan (foreign node IDs, slots owned elsewhere, keys in a node
//!   that is to become a replica) is never overwritten: the command refuses and names the node;
//! - re-running recomputes from live state, so a create that was killed finishes what is left,
//!   and a finished cluster answers that there is nothing to do.
//!
//! Three situations, recognised from live state:
//! - **Fresh**: every node is empty and alone. Plan, then `CLUSTER SET-CONFIG-EPOCH` (masters get
//!   unique epochs `1..M`, replicas-to-be `M+1..N`, so Redis never has to resolve a collision),
//!   `ADDSLOTSRANGE`, `MEET`
//!   every node to one seed (gossip spreads the rest; O(N) handshakes started by us, not
//!   O(N^2)), wait until every node sees every other healthy and all agree on the slot map,
//!   `CLUSTER REPLICATE`, wait for `master_link_status:up`.
//! - **Resume**: the nodes are part way through exactly that plan (a create interrupted after any
//!   step). The same steps, minus what is already done.
//! - **Adopt**: the nodes already form a cluster that is not the fresh plan (for instance one
//!   started from `slotproxy render` files, or one that failed over since). Only repair is
//!   done: `MEET` listed nodes that do not know each other, and promote the replica of a master
//!   that never started (see [`Step::Takeover`]). Nothing else changes.

use super::check::{self, ranges_text};
use super::options::{self, Accepts, CommonOptions, OptionError};
use super::survey::{self, NodeState, Survey};
use crate::admin::jobs::{self, Job};
use crate::admin::placement::{self, NodeSpec, Plan, PlanOptions};
use crate::backend::node_client::NodeClient;
use crate::cluster::slots::SLOT_COUNT;
use crate::cluster::NodeLine;
use crate::route::resp::Value;
use crate::shared::Shared;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Calls to nodes in flight at once while executing one kind of step.
pub const PARALLEL: usize = 16;

/// A parsed `PROXY CREATE` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Replicas per master.
    pub replicas: usize,
    /// The nodes, in the order given (hosts default to the IP).
    pub nodes: Vec<NodeSpec>,
    /// Print the plan and the steps, change nothing.
    pub dryrun: bool,
    /// Reply `OK job <id>` at once and run in the background.
    pub detach: bool,
    /// Deadline for each wait (cluster joined, replication links up).
    pub wait: Duration,
}

const USAGE: &str = "usage: PROXY CREATE REPLICAS <r> NODES <host:port> [HOST <label>] ... \
                     [DRYRUN] [ASYNC] [TIMEOUT <seconds>]";

/// The shared words CREATE takes (its `HOST <label>` follows a node address and is its own).
const ACCEPTS: Accepts = Accepts {
    json: false,
    dryrun: true,
    detach: true,
    timeout_min_secs: Some(0),
    host: None,
};

/// Parses the arguments after `CREATE`.
pub fn parse_args(args: &[Bytes]) -> Result<Request, String> {
    let words = options::words(args);
    let mut common = CommonOptions::default();
    let mut replicas = usize::MAX;
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut i = 0;
    let mut in_nodes = false;
    while i < words.len() {
        let taken = common.take(&ACCEPTS, &words, i).map_err(|e| match e {
            OptionError::Missing(w) => format!("{w} needs a value; {USAGE}"),
            _ => format!("TIMEOUT needs whole seconds; {USAGE}"),
        })?;
        if let Some(n) = taken {
            in_nodes = false;
            i += n;
            continue;
        }
        let w = words[i].to_ascii_uppercase();
        let next = |i: usize| {
            words
                .get(i + 1)
                .cloned()
                .ok_or_else(|| format!("{w} needs a value; {USAGE}"))
        };
        match w.as_str() {
            "REPLICAS" => {
                replicas = next(i)?
                    .parse()
                    .map_err(|_| format!("REPLICAS needs a number; {USAGE}"))?;
                in_nodes = false;
                i += 2;
            }
            "NODES" => {
                in_nodes = true;
                i += 1;
            }
            "HOST" => {
                let label = next(i)?;
                let last = nodes
                    .last_mut()
                    .ok_or_else(|| format!("HOST must follow a node address; {USAGE}"))?;
                last.host = label;
                i += 2;
            }
            _ if in_nodes => {
                let (ip, port) = words[i]
                    .rsplit_once(':')
                    .and_then(|(ip, p)| Some((ip, p.parse::<u16>().ok()?)))
                    .filter(|(ip, _)| !ip.is_empty())
                    .ok_or_else(|| {
                        format!("bad node address '{}': expected host:port", words[i])
                    })?;
                nodes.push(NodeSpec::new(ip, port));
                i += 1;
            }
            _ => return Err(format!("unexpected '{}'; {USAGE}", words[i])),
        }
    }
    if replicas == usize::MAX {
        return Err(format!("REPLICAS is required; {USAGE}"));
    }
    if nodes.is_empty() {
        return Err(format!("NODES is required; {USAGE}"));
    }
    // Handshakes take a few hundred ms per gossip round; big clusters need more rounds.
    let wait = common
        .timeout
        .unwrap_or(Duration::from_secs(30 + nodes.len() as u64 / 10));
    Ok(Request {
        replicas,
        nodes,
        dryrun: common.dryrun,
        detach: common.detach,
        wait,
    })
}

/// One change to make (indices refer to the listed nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `CLUSTER SET-CONFIG-EPOCH <epoch>` on a node that knows no other node yet (masters
    /// `1..M` in shard order, replicas-to-be `M+1..N`).
    SetEpoch {
        /// Node index.
        node: usize,
        /// Its unique epoch.
        epoch: u64,
    },
    /// `CLUSTER ADDSLOTSRANGE <first> <last>`.
    AddSlots {
        /// Node index.
        node: usize,
        /// Inclusive range.
        slots: (u16, u16),
    },
    /// `CLUSTER MEET <seed ip> <seed port> <seed bus port>` sent to `node`.
    Meet {
        /// Node index.
        node: usize,
        /// The seed node's index.
        seed: usize,
    },
    /// Wait until every listed node sees every other healthy and all agree on the slot map.
    WaitJoined,
    /// `CLUSTER REPLICATE <master id>` on `node`.
    Replicate {
        /// Node index.
        node: usize,
        /// The master's node index.
        master: usize,
    },
    /// Wait until every replica's link to its master is up and everyone agrees on the roles.
    WaitLinks,
    /// `CLUSTER FAILOVER TAKEOVER` on `node`, a replica whose master never started.
    ///
    /// TAKEOVER is right only here, and why: the master has never run (or does not answer and
    /// the replica never synced from it), so there is no acknowledged write it could lose and
    /// no master to coordinate a default failover with; a never-synced replica refuses to fail
    /// over by itself (its data age is unbounded); and TAKEOVER needs no votes, so it also
    /// works when the missing masters leave the rest without a majority. It bumps the epoch
    /// on its own, which is safe because no other node competes for those slots.
    Takeover {
        /// Node index of the replica.
        node: usize,
        /// The missing master's address, for the report.
        master: String,
    },
}

/// Which situation [`decide`] recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every node empty and alone.
    Fresh,
    /// Part way through the fresh plan.
    Resume,
    /// Already a cluster; repair only.
    Adopt,
}

/// What [`decide`] found and wants to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    /// The situation.
    pub mode: Mode,
    /// The placement (Fresh and Resume).
    pub plan: Option<Plan>,
    /// Node IDs of the listed nodes, by index.
    pub ids: Vec<String>,
    /// Steps in order; waits are steps too.
    pub steps: Vec<Step>,
    /// Things the operator should know (why adopt mode, skipped epochs, ...).
    pub notes: Vec<String>,
}

impl Work {
    /// Whether any step changes a node.
    pub fn changes_anything(&self) -> bool {
        self.steps
            .iter()
            .any(|s| !matches!(s, Step::WaitJoined | Step::WaitLinks))
    }
}

/// Whether a node is empty and alone: no other node known, no slots, no keys, not a replica.
fn is_fresh(n: &NodeState) -> bool {
    let others = n
        .view
        .iter()
        .filter(|l| !l.has("myself") && !l.has("handshake"))
        .count();
    n.myself()
        .is_some_and(|m| m.is_master() && m.slots.is_empty() && m.migrating.is_empty())
        && others == 0
        && n.dbsize == 0
}

fn contains(range: (u16, u16), slots: &[(u16, u16)]) -> bool {
    slots.iter().all(|&(a, b)| range.0 <= a && b <= range.1)
}

/// Decides what to do from the survey of the listed nodes. `s.nodes[i]` is `nodes[i]` for
/// every listed node; nodes the listed ones know about but that are not listed may follow.
/// Pure; an `Err` is a refusal that names the offending node.
pub fn decide(nodes: &[NodeSpec], replicas: usize, s: &Survey) -> Result<Work, String> {
    if s.nodes.len() < nodes.len() {
        return Err("internal: the survey misses listed nodes".into());
    }
    let listed = &s.nodes[..nodes.len()];
    let mut ids = Vec::with_capacity(nodes.len());
    for n in listed {
        if let Some(e) = &n.error {
            return Err(format!("node {} is unreachable: {e}", n.addr));
        }
        if !n.cluster_enabled {
            return Err(format!(
                "node {} is not cluster-enabled (set cluster-enabled yes and restart it)",
                n.addr
            ));
        }
        match n.id() {
            Some(id) => ids.push(id.to_string()),
            None => {
                return Err(format!(
                    "node {} has no myself line in CLUSTER NODES",
                    n.addr
                ))
            }
        }
    }
    for (i, a) in ids.iter().enumerate() {
        if let Some(j) = ids[..i].iter().position(|b| b == a) {
            return Err(format!(
                "nodes {} and {} have the same node ID {a} (the same node listed twice?)",
                listed[j].addr, listed[i].addr
            ));
        }
    }
    let index_of = |id: &str| ids.iter().position(|x| x == id);

    // Foreign nodes: known to a listed node but not listed. A reachable one means the node
    // belongs to another cluster; an unreachable one may be a rendered master that never
    // started (adopt mode decides).
    let mut ghosts: Vec<&NodeLine> = Vec::new();
    for n in listed {
        for l in n.view.iter().filter(|l| !l.has("handshake")) {
            if index_of(&l.id).is_some() || ghosts.iter().any(|g| g.id == l.id) {
                continue;
            }
            let reachable = s
                .get(&l.addr())
                .is_some_and(|f| f.reachable() && f.id() == Some(l.id.as_str()));
            if reachable || s.get(&l.addr()).is_none() {
                return Err(format!(
                    "node {} already belongs to another cluster: it knows node {} ({}) which \
                     is not in NODES; reset it (CLUSTER RESET) or list every node of that cluster",
                    n.addr,
                    l.addr(),
                    l.id
                ));
            }
            ghosts.push(l);
        }
    }

    let all_fresh = listed.iter().all(is_fresh);
    let opts = PlanOptions {
        replicas,
        allow_colocated: false,
    };
    if all_fresh {
        let plan = placement::plan(nodes, &opts).map_err(|e| e.to_string())?;
        let steps = plan_steps(&plan, listed, &ids);
        return Ok(Work {
            mode: Mode::Fresh,
            plan: Some(plan),
            ids,
            steps,
            notes: Vec::new(),
        });
    }
    // Keys in a node that is not already a slot owner: never overwritten.
    for n in listed {
        let owns = n.myself().is_some_and(|m| !m.slots.is_empty());
        if n.dbsize > 0 && !owns && n.myself().is_some_and(NodeLine::is_master) {
            return Err(format!(
                "node {} holds {} key(s) but owns no slots; CREATE only uses empty nodes \
                 (FLUSHALL it if the data is not needed)",
                n.addr, n.dbsize
            ));
        }
    }
    let reason = match placement::plan(nodes, &opts) {
        Ok(plan) if ghosts.is_empty() => match compatible(&plan, listed, &ids) {
            Ok(()) => {
                let steps = plan_steps(&plan, listed, &ids);
                return Ok(Work {
                    mode: Mode::Resume,
                    plan: Some(plan),
                    ids,
                    steps,
                    notes: vec!["resuming: the nodes are part way through this plan".into()],
                });
            }
            Err(why) => why,
        },
        Ok(_) => format!(
            "the nodes know {} node(s) that are not listed and do not answer",
            ghosts.len()
        ),
        Err(e) => e.to_string(),
    };
    adopt(listed, &ids, &ghosts, reason)
}

/// Checks that live state is a partial execution of `plan`; `Err` says what contradicts it.
fn compatible(plan: &Plan, listed: &[NodeState], ids: &[String]) -> Result<(), String> {
    let roles = plan.roles(listed.len());
    for (i, n) in listed.iter().enumerate() {
        let Some(me) = n.myself() else {
            return Err(format!("{} has no myself line", n.addr));
        };
        let Some((k, is_master)) = roles[i] else {
            return Err(format!("{} is not in the plan", n.addr));
        };
        let shard = &plan.shards[k];
        if is_master {
            if !me.is_master() {
                return Err(format!(
                    "{} is a replica but the plan makes it a master",
                    n.addr
                ));
            }
            if !me.slots.is_empty() && me.slots != vec![shard.slots] {
                return Err(format!(
                    "{} owns slots {} but the plan gives it {}-{}",
                    n.addr,
                    slot_list(&me.slots),
                    shard.slots.0,
                    shard.slots.1
                ));
            }
        } else {
            if !me.slots.is_empty() {
                return Err(format!(
                    "{} owns slots {} but the plan makes it a replica",
                    n.addr,
                    slot_list(&me.slots)
                ));
            }
            if !me.is_master() && me.master_id.as_deref() != Some(ids[shard.master].as_str()) {
                return Err(format!(
                    "{} replicates another master than the plan's {}",
                    n.addr, listed[shard.master].addr
                ));
            }
        }
        // What this node believes about the others must not contradict the plan either.
        for l in n.view.iter().filter(|l| !l.has("handshake")) {
            let Some(j) = ids.iter().position(|x| *x == l.id) else {
                continue;
            };
            let Some((kj, master_j)) = roles[j] else {
                continue;
            };
            let range = plan.shards[kj].slots;
            let fits = master_j && contains(range, &l.slots);
            if !l.slots.is_empty() && !fits {
                return Err(format!(
                    "{} believes {} owns slots {}, which the plan gives elsewhere",
                    n.addr,
                    listed[j].addr,
                    slot_list(&l.slots)
                ));
            }
        }
    }
    Ok(())
}

fn slot_list(slots: &[(u16, u16)]) -> String {
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

/// Whether node `i` knows node `j`, or is shaking hands with its address (a second MEET
/// would add nothing).
fn knows_node(listed: &[NodeState], ids: &[String], i: usize, j: usize) -> bool {
    listed[i]
        .view
        .iter()
        .any(|l| l.id == ids[j] || (l.has("handshake") && l.addr() == listed[j].addr))
}

/// The steps of `plan` that live state has not done yet.
fn plan_steps(plan: &Plan, listed: &[NodeState], ids: &[String]) -> Vec<Step> {
    let mut steps = Vec::new();
    let knows = |i: usize, j: usize| knows_node(listed, ids, i, j);
    // Handshake entries count: SET-CONFIG-EPOCH is refused once a node knows anyone at all.
    let alone = |i: usize| listed[i].view.len() <= 1;
    // Masters get 1..M. Replicas-to-be get M+1..N: until REPLICATE they are empty masters,
    // and empty masters sharing epoch 0 trigger Redis's collision resolution, which bumps
    // epochs and can collide with (and bump) a real master's epoch. Unique epochs for every
    // node mean no collision ever happens; a replica shows its master's epoch afterwards.
    let mut next_replica_epoch = plan.shards.len() as u64;
    for shard in &plan.shards {
        let m = shard.master;
        let epoch = listed[m].myself().map_or(0, |l| l.config_epoch);
        if epoch == 0 && alone(m) {
            steps.push(Step::SetEpoch {
                node: m,
                epoch: shard.epoch,
            });
        }
    }
    for shard in &plan.shards {
        for &r in &shard.replicas {
            next_replica_epoch += 1;
            let me = listed[r].myself();
            if me.is_some_and(|l| l.config_epoch == 0 && l.is_master()) && alone(r) {
                steps.push(Step::SetEpoch {
                    node: r,
                    epoch: next_replica_epoch,
                });
            }
        }
    }
    for shard in &plan.shards {
        let m = shard.master;
        if listed[m].myself().is_some_and(|l| l.slots.is_empty()) {
            steps.push(Step::AddSlots {
                node: m,
                slots: shard.slots,
            });
        }
    }
    let seed = plan.shards.first().map_or(0, |s| s.master);
    for i in 0..listed.len() {
        if i != seed && !knows(seed, i) && !knows(i, seed) {
            steps.push(Step::Meet { node: i, seed });
        }
    }
    steps.push(Step::WaitJoined);
    let mut any_replica = false;
    for shard in &plan.shards {
        for &r in &shard.replicas {
            any_replica = true;
            let done = listed[r]
                .myself()
                .is_some_and(|l| l.master_id.as_deref() == Some(ids[shard.master].as_str()));
            if !done {
                steps.push(Step::Replicate {
                    node: r,
                    master: shard.master,
                });
            }
        }
    }
    if any_replica {
        steps.push(Step::WaitLinks);
    }
    steps
}

/// Adopt mode: the nodes already form a cluster that is not the fresh plan. Repair only.
fn adopt(
    listed: &[NodeState],
    ids: &[String],
    ghosts: &[&NodeLine],
    reason: String,
) -> Result<Work, String> {
    if let Some(n) = listed.iter().find(|n| is_fresh(n)) {
        return Err(format!(
            "node {} is empty and alone while other listed nodes are not ({reason}); CREATE \
             does not mix new nodes into a cluster that differs from its plan",
            n.addr
        ));
    }
    let mut steps = Vec::new();
    let mut notes = vec![format!("adopting the existing cluster: {reason}")];
    // Promote a replica of every slot-owning master that never answers.
    for g in ghosts
        .iter()
        .filter(|g| g.is_master() && !g.slots.is_empty())
    {
        let candidates: Vec<usize> = (0..listed.len())
            .filter(|&i| {
                listed[i]
                    .myself()
                    .is_some_and(|m| !m.is_master() && m.master_id.as_deref() == Some(&g.id))
            })
            .collect();
        // The replica with the most data wins; ties go to the first listed.
        let offset = |i: usize| {
            listed[i]
                .repl("slave_repl_offset")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let best = candidates
            .iter()
            .copied()
            .max_by_key(|&i| (offset(i), std::cmp::Reverse(i)));
        match best {
            Some(i) => steps.push(Step::Takeover {
                node: i,
                master: g.addr(),
            }),
            None => {
                return Err(format!(
                    "master {} ({}) owns slots {} but does not answer and none of the listed \
                     nodes replicates it; start it, or list its replica",
                    g.addr(),
                    g.id,
                    slot_list(&g.slots)
                ))
            }
        }
    }
    // Slots nobody claims cannot be assigned safely in a running cluster.
    let mut claimed = vec![false; SLOT_COUNT];
    for n in listed {
        for l in n.view.iter().filter(|l| l.is_master()) {
            for &(a, b) in &l.slots {
                for x in a..=b {
                    claimed[x as usize] = true;
                }
            }
        }
    }
    let free: Vec<u16> = (0..SLOT_COUNT)
        .filter(|&x| !claimed[x])
        .map(|x| x as u16)
        .collect();
    if !free.is_empty() {
        return Err(format!(
            "the nodes already form a cluster ({reason}) and {} slot(s) ({}) have no owner; \
             CREATE does not assign slots in a running cluster",
            free.len(),
            ranges_text(&free)
        ));
    }
    // Join nodes that do not know each other yet, through the first slot owner.
    let seed = listed
        .iter()
        .position(|n| {
            n.myself()
                .is_some_and(|m| m.is_master() && !m.slots.is_empty())
        })
        .unwrap_or(0);
    let knows = |i: usize, j: usize| knows_node(listed, ids, i, j);
    for i in 0..listed.len() {
        if i != seed && !knows(seed, i) && !knows(i, seed) {
            steps.insert(0, Step::Meet { node: i, seed });
        }
    }
    for g in ghosts
        .iter()
        .filter(|g| !g.is_master() || g.slots.is_empty())
    {
        notes.push(format!(
            "node {} ({}) is known to the cluster but does not answer; left as it is",
            g.addr(),
            g.id
        ));
    }
    if !steps.is_empty() {
        steps.push(Step::WaitJoined);
    }
    Ok(Work {
        mode: Mode::Adopt,
        plan: None,
        ids: ids.to_vec(),
        steps,
        notes,
    })
}

/// What still keeps the listed nodes from being one converged cluster, one line per problem
/// (empty when converged): a node missing from a view, a handshake or failure flag on a listed
/// node, a slot map that differs from the first node's, uncovered slots, or a node whose
/// `cluster_state` is not ok yet.
pub fn join_problems(listed: &[NodeState], ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut reference: Option<(&str, Vec<Option<&str>>)> = None;
    for n in listed {
        if let Some(e) = &n.error {
            out.push(format!("{} does not answer: {e}", n.addr));
            continue;
        }
        for (j, id) in ids.iter().enumerate() {
            let other = listed.get(j).map_or("?", |x| x.addr.as_str());
            if other == n.addr {
                continue;
            }
            match n.view.iter().find(|l| l.id == *id) {
                None => out.push(format!("{} does not see {other}", n.addr)),
                Some(l) => {
                    let bad: Vec<&str> = l
                        .flags
                        .iter()
                        .map(String::as_str)
                        .filter(|f| matches!(*f, "handshake" | "fail" | "fail?" | "noaddr"))
                        .collect();
                    if !bad.is_empty() {
                        out.push(format!("{} sees {other} as {}", n.addr, bad.join(",")));
                    }
                }
            }
        }
        state_problem(n, &mut out);
        let mut map: Vec<Option<&str>> = vec![None; SLOT_COUNT];
        for l in n.view.iter().filter(|l| l.is_master()) {
            for &(a, b) in &l.slots {
                for x in a..=b {
                    map[x as usize] = Some(l.id.as_str());
                }
            }
        }
        let holes = map.iter().filter(|o| o.is_none()).count();
        if holes > 0 {
            out.push(format!("{} sees {holes} slot(s) without owner", n.addr));
        }
        match &reference {
            None => reference = Some((n.addr.as_str(), map)),
            Some((first, r)) => {
                let differ = r.iter().zip(&map).filter(|(a, b)| a != b).count();
                if differ > 0 {
                    out.push(format!(
                        "{} and {first} disagree about the owner of {differ} slot(s)",
                        n.addr
                    ));
                }
            }
        }
    }
    out
}

/// A node that does not report `cluster_state:ok` yet (a master that was alone waits a moment
/// before it turns ok, so a converged view is not enough).
fn state_problem(n: &NodeState, out: &mut Vec<String>) {
    let state = n
        .cluster_info
        .get("cluster_state")
        .map_or("unknown", String::as_str);
    if state != "ok" {
        out.push(format!("{} reports cluster_state:{state}", n.addr));
    }
}

/// What keeps the replicas from being linked (empty when every listed replica's link is up and
/// every listed node sees it as a replica of the same master).
pub fn link_problems(listed: &[NodeState]) -> Vec<String> {
    let mut out = Vec::new();
    for n in listed.iter().filter(|n| n.reachable()) {
        state_problem(n, &mut out);
        let Some(me) = n.myself().filter(|m| !m.is_master()) else {
            continue;
        };
        let link = n.repl("master_link_status").unwrap_or("unknown");
        if link != "up" {
            out.push(format!("{} replication link is {link}", n.addr));
        }
        for o in listed.iter().filter(|o| o.reachable() && o.addr != n.addr) {
            let seen = o.view.iter().find(|l| l.id == me.id);
            if seen.is_none_or(|l| l.is_master() || l.master_id != me.master_id) {
                out.push(format!(
                    "{} does not see {} as the replica it is yet",
                    o.addr, n.addr
                ));
            }
        }
    }
    out
}

/// Human-readable lines for a plan.
pub fn plan_lines(nodes: &[NodeSpec], plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for (k, s) in plan.shards.iter().enumerate() {
        let reps: Vec<String> = s
            .replicas
            .iter()
            .map(|&r| format!("{} (host {})", nodes[r].addr(), nodes[r].host))
            .collect();
        out.push(format!(
            "shard {}: master {} (host {}) slots {}-{} epoch {} replicas {}",
            k + 1,
            nodes[s.master].addr(),
            nodes[s.master].host,
            s.slots.0,
            s.slots.1,
            s.epoch,
            if reps.is_empty() {
                "none".to_string()
            } else {
                reps.join(", ")
            }
        ));
    }
    out.extend(plan.warnings.iter().map(|w| format!("warning {w}")));
    out
}

/// One line per step.
pub fn step_line(step: &Step, nodes: &[NodeSpec], ids: &[String]) -> String {
    let a = |i: usize| nodes.get(i).map_or("?".to_string(), NodeSpec::addr);
    match step {
        Step::SetEpoch { node, epoch } => {
            format!("step CLUSTER SET-CONFIG-EPOCH {epoch} on {}", a(*node))
        }
        Step::AddSlots { node, slots } => format!(
            "step CLUSTER ADDSLOTSRANGE {} {} on {}",
            slots.0,
            slots.1,
            a(*node)
        ),
        Step::Meet { node, seed } => format!("step CLUSTER MEET {} from {}", a(*seed), a(*node)),
        Step::WaitJoined => {
            "step wait until every node sees every other and the slot maps agree".to_string()
        }
        Step::Replicate { node, master } => format!(
            "step CLUSTER REPLICATE {} ({}) on {}",
            ids.get(*master).map_or("?", String::as_str),
            a(*master),
            a(*node)
        ),
        Step::WaitLinks => "step wait until every replication link is up".to_string(),
        Step::Takeover { node, master } => format!(
            "step CLUSTER FAILOVER TAKEOVER on {} (its master {master} never answers)",
            a(*node)
        ),
    }
}

/// Sends one command; an error reply is an error naming the node and the command.
async fn call(addr: &str, args: &[String], timeout: Duration) -> anyhow::Result<Value> {
    let mut c = NodeClient::connect(addr, timeout).await?;
    match c.call(args).await? {
        Value::Error(e) => bail!("{} on {addr} failed: {e}", args.join(" ")),
        v => Ok(v),
    }
}

/// Runs commands `(addr, args)` with at most [`PARALLEL`] in flight; the first error wins.
async fn run_all(cmds: Vec<(String, Vec<String>)>, timeout: Duration) -> anyhow::Result<()> {
    let sem = Arc::new(Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for (addr, args) in cmds {
        let sem = Arc::clone(&sem);
        set.spawn(async move {
            let _permit = sem.acquire().await;
            call(&addr, &args, timeout).await.map(|_| ())
        });
    }
    let mut first: Option<anyhow::Error> = None;
    while let Some(res) = set.join_next().await {
        let r = res.map_err(|e| anyhow!("task failed: {e}")).and_then(|r| r);
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn addrs(nodes: &[NodeSpec]) -> Vec<String> {
    nodes.iter().map(NodeSpec::addr).collect()
}

/// The operator's `HOST` labels, so the final check judges placement by the same hosts.
fn labels(nodes: &[NodeSpec]) -> survey::HostLabels {
    survey::HostLabels {
        labels: nodes
            .iter()
            .filter(|n| n.host != n.ip)
            .map(|n| (n.addr(), n.host.clone()))
            .collect(),
    }
}

/// Surveys the listed nodes, then once more the unlisted ones they know (to tell a foreign
/// cluster from a master that never started).
async fn survey_listed(nodes: &[NodeSpec], timeout: Duration) -> Survey {
    let mut s = survey::survey(&addrs(nodes), timeout).await;
    let more = survey::unsurveyed(&s);
    if !more.is_empty() {
        s.nodes.extend(survey::survey(&more, timeout).await.nodes);
    }
    s
}

/// Polls until `problems` of a fresh survey is empty, or the deadline passes; then the error
/// lists what is still wrong with hints.
async fn wait_until(
    job: &Job,
    what: &str,
    nodes: &[NodeSpec],
    ids: &[String],
    timeout: Duration,
    wait: Duration,
    problems: impl Fn(&[NodeState], &[String]) -> Vec<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let mut last_log = Instant::now();
    loop {
        let s = survey::survey(&addrs(nodes), timeout).await;
        let p = problems(&s.nodes, ids);
        if p.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            const SHOWN: usize = 20;
            let mut msg = format!(
                "{what}: not reached within {wait:?}; {} problem(s): {}",
                p.len(),
                p.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ")
            );
            if p.len() > SHOWN {
                msg.push_str(&format!("; and {} more", p.len() - SHOWN));
            }
            msg.push_str(
                ". Hints: is each node's cluster bus port (port + 10000 unless cluster-port is \
                 set) reachable from every other node (firewall)? Do nodes announce the \
                 address they are listed under (cluster-announce-ip, bind-source-addr on \
                 hosts with several addresses)? Re-running PROXY CREATE continues from here.",
            );
            bail!(msg);
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            job.log(format!(
                "{what}: still waiting ({} problem(s), e.g. {})",
                p.len(),
                p[0]
            ));
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Executes the steps in order; consecutive steps of one kind run in parallel.
async fn execute(
    job: &Job,
    work: &Work,
    nodes: &[NodeSpec],
    seed_cport: impl Fn(usize) -> u16,
    timeout: Duration,
    wait: Duration,
) -> anyhow::Result<()> {
    let ids = &work.ids;
    let mut i = 0;
    while i < work.steps.len() {
        let kind = std::mem::discriminant(&work.steps[i]);
        let mut j = i;
        while j < work.steps.len() && std::mem::discriminant(&work.steps[j]) == kind {
            j += 1;
        }
        let batch = &work.steps[i..j];
        let mut cmds = Vec::new();
        for step in batch {
            let s = |x: &str| x.to_string();
            match step {
                Step::SetEpoch { node, epoch } => cmds.push((
                    nodes[*node].addr(),
                    vec![s("CLUSTER"), s("SET-CONFIG-EPOCH"), epoch.to_string()],
                )),
                Step::AddSlots { node, slots } => cmds.push((
                    nodes[*node].addr(),
                    vec![
                        s("CLUSTER"),
                        s("ADDSLOTSRANGE"),
                        slots.0.to_string(),
                        slots.1.to_string(),
                    ],
                )),
                Step::Meet { node, seed } => cmds.push((
                    nodes[*node].addr(),
                    vec![
                        s("CLUSTER"),
                        s("MEET"),
                        nodes[*seed].ip.clone(),
                        nodes[*seed].port.to_string(),
                        seed_cport(*seed).to_string(),
                    ],
                )),
                Step::Replicate { node, master } => cmds.push((
                    nodes[*node].addr(),
                    vec![s("CLUSTER"), s("REPLICATE"), ids[*master].clone()],
                )),
                Step::Takeover { node, .. } => cmds.push((
                    nodes[*node].addr(),
                    vec![s("CLUSTER"), s("FAILOVER"), s("TAKEOVER")],
                )),
                Step::WaitJoined => {
                    wait_until(
                        job,
                        "cluster joined",
                        nodes,
                        ids,
                        timeout,
                        wait,
                        join_problems,
                    )
                    .await?
                }
                Step::WaitLinks => {
                    wait_until(
                        job,
                        "replication links up",
                        nodes,
                        ids,
                        timeout,
                        wait,
                        |l, _| link_problems(l),
                    )
                    .await?
                }
            }
        }
        if !cmds.is_empty() {
            run_all(cmds, timeout)
                .await
                .with_context(|| format!("while running: {}", step_line(&batch[0], nodes, ids)))?;
        }
        for step in batch {
            job.step_done(step_line(step, nodes, ids));
        }
        i = j;
    }
    Ok(())
}

/// The whole engine: survey, decide, report or execute, check.
pub async fn run(job: Arc<Job>, req: Request, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let s = survey_listed(&req.nodes, timeout).await;
    job.log(format!("surveyed {} node(s)", s.nodes.len()));
    let work = decide(&req.nodes, req.replicas, &s).map_err(|e| anyhow!("refused: {e}"))?;
    let mut lines = Vec::new();
    if let Some(plan) = &work.plan {
        lines.extend(plan_lines(&req.nodes, plan));
    }
    lines.extend(work.notes.iter().map(|n| format!("note {n}")));
    let steps: Vec<String> = work
        .steps
        .iter()
        .map(|st| step_line(st, &req.nodes, &work.ids))
        .collect();
    let mode = format!("{:?}", work.mode).to_ascii_lowercase();
    if req.dryrun {
        let mut out = vec![format!(
            "OK dryrun ({mode}): {} step(s); nothing was changed",
            steps.len()
        )];
        out.extend(lines);
        out.extend(steps);
        return Ok(out);
    }
    if !work.changes_anything() {
        let (cs, f) = check::run_check(&addrs(&req.nodes), timeout, &labels(&req.nodes)).await;
        let mut out = vec![format!(
            "OK nothing to do: the {} node(s) already form the cluster; check: {}",
            req.nodes.len(),
            check::verdict(&f)
        )];
        out.extend(lines);
        out.extend(
            check::report_lines(&cs, &f)
                .into_iter()
                .map(|l| format!("check {l}")),
        );
        return Ok(out);
    }
    job.set_total(work.steps.len());
    let cports: Vec<u16> = req
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            s.nodes
                .get(i)
                .and_then(NodeState::myself)
                .map(|m| m.cport)
                .filter(|&c| c != 0)
                .unwrap_or(n.port.saturating_add(10000))
        })
        .collect();
    execute(
        &job,
        &work,
        &req.nodes,
        |i| cports.get(i).copied().unwrap_or(0),
        timeout,
        req.wait,
    )
    .await?;
    let (cs, f) = check::run_check(&addrs(&req.nodes), timeout, &labels(&req.nodes)).await;
    let verdict = check::verdict(&f);
    let what = match &work.plan {
        Some(p) => format!(
            "{} masters, {} replicas",
            p.shards.len(),
            p.shards.iter().map(|s| s.replicas.len()).sum::<usize>()
        ),
        None => "repaired the existing cluster".to_string(),
    };
    let head = if f.iter().all(|x| x.severity == check::Severity::Warn) {
        format!(
            "OK created ({mode}): {what}, {} step(s); check: {verdict}",
            steps.len()
        )
    } else {
        format!(
            "{verdict} after create ({mode}): {what}, {} step(s)",
            steps.len()
        )
    };
    let mut out = vec![head];
    out.extend(lines);
    out.extend(steps);
    out.extend(
        check::report_lines(&cs, &f)
            .into_iter()
            .map(|l| format!("check {l}")),
    );
    Ok(out)
}

/// Answers `PROXY CREATE ...` (args after CREATE).
pub async fn answer(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let req = match parse_args(args) {
        Ok(r) => r,
        Err(e) => return crate::route::resp::error(&format!("ERR PROXY CREATE: {e}")),
    };
    if let Some(j) = shared.jobs.running("create") {
        return crate::route::resp::error(&format!(
            "ERR PROXY CREATE: job {} is already creating a cluster ({}); see PROXY JOB {}",
            j.id, j.command, j.id
        ));
    }
    let command = format!(
        "PROXY CREATE {}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let timeout = check::node_timeout(shared);
    let detach = req.detach;
    jobs::run(&shared.jobs, "create", &command, detach, move |job| {
        run(job, req, timeout)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::parse_cluster_nodes;
    use std::collections::BTreeMap;

    fn id(i: usize) -> String {
        format!("{:0>40}", i + 1)
    }

    fn specs(hosts: usize, per_host: usize) -> Vec<NodeSpec> {
        let mut v = Vec::new();
        for h in 0..hosts {
            for k in 0..per_host {
                v.push(NodeSpec::new(format!("127.0.0.{}", h + 2), 7000 + k as u16));
            }
        }
        v
    }

    /// Node `i` alone and empty.
    fn fresh(n: &NodeSpec, i: usize) -> NodeState {
        let text = format!(
            "{} :{}@{} myself,master - 0 0 0 connected\n",
            id(i),
            n.port,
            n.port + 10000
        );
        NodeState {
            addr: n.addr(),
            cluster_enabled: true,
            view: parse_cluster_nodes(&text, &n.ip).expect("parse"),
            cluster_info: BTreeMap::new(),
            replication: BTreeMap::new(),
            ..Default::default()
        }
    }

    fn fresh_survey(nodes: &[NodeSpec]) -> Survey {
        Survey {
            nodes: nodes.iter().enumerate().map(|(i, n)| fresh(n, i)).collect(),
        }
    }

    /// The state after executing `work` completely: every node sees the planned cluster.
    fn finished(nodes: &[NodeSpec], plan: &Plan) -> Survey {
        let roles = plan.roles(nodes.len());
        let line = |j: usize, me: bool| {
            let (k, m) = roles[j].expect("role");
            let sh = &plan.shards[k];
            let n = &nodes[j];
            format!(
                "{} {}:{}@{} {}{} {} 0 0 {} connected {}\n",
                id(j),
                n.ip,
                n.port,
                n.port + 10000,
                if me { "myself," } else { "" },
                if m { "master" } else { "slave" },
                if m { "-".to_string() } else { id(sh.master) },
                sh.epoch,
                if m {
                    format!("{}-{}", sh.slots.0, sh.slots.1)
                } else {
                    String::new()
                }
            )
        };
        Survey {
            nodes: (0..nodes.len())
                .map(|i| {
                    let text: String = (0..nodes.len()).map(|j| line(j, i == j)).collect();
                    NodeState {
                        addr: nodes[i].addr(),
                        cluster_enabled: true,
                        view: parse_cluster_nodes(&text, &nodes[i].ip).expect("parse"),
                        replication: [("master_link_status".to_string(), "up".to_string())].into(),
                        cluster_info: [("cluster_state".to_string(), "ok".to_string())].into(),
                        ..Default::default()
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn parses_arguments() {
        let a: Vec<Bytes> =
            "REPLICAS 1 NODES 127.0.0.2:7000 HOST rack-a 127.0.0.3:7000 DRYRUN ASYNC"
                .split(' ')
                .map(|s| Bytes::from(s.to_string()))
                .collect();
        let r = parse_args(&a).expect("parse");
        assert_eq!(r.replicas, 1);
        assert_eq!(r.nodes.len(), 2);
        assert_eq!(r.nodes[0].host, "rack-a");
        assert_eq!(r.nodes[1].host, "127.0.0.3");
        assert!(r.dryrun && r.detach);
        let bad: Vec<Bytes> = vec![Bytes::from("NODES"), Bytes::from("x")];
        assert!(parse_args(&bad).unwrap_err().contains("bad node address"));
        let bad: Vec<Bytes> = vec![Bytes::from("NODES"), Bytes::from("a:1")];
        assert!(parse_args(&bad)
            .unwrap_err()
            .contains("REPLICAS is required"));
    }

    #[test]
    fn fresh_create_steps() {
        let nodes = specs(3, 2);
        let w = decide(&nodes, 1, &fresh_survey(&nodes)).expect("decide");
        assert_eq!(w.mode, Mode::Fresh);
        let plan = w.plan.clone().expect("plan");
        let count = |f: fn(&Step) -> bool| w.steps.iter().filter(|s| f(s)).count();
        assert_eq!(count(|s| matches!(s, Step::SetEpoch { .. })), 6);
        assert_eq!(count(|s| matches!(s, Step::AddSlots { .. })), 3);
        assert_eq!(count(|s| matches!(s, Step::Meet { .. })), 5);
        assert_eq!(count(|s| matches!(s, Step::Replicate { .. })), 3);
        assert_eq!(w.steps.last(), Some(&Step::WaitLinks));
        // Meets all go to one seed, a master.
        let seed = plan.shards[0].master;
        assert!(w.steps.iter().all(|s| match s {
            Step::Meet { seed: x, .. } => *x == seed,
            _ => true,
        }));
        // A finished cluster has nothing left.
        let done = decide(&nodes, 1, &finished(&nodes, &plan)).expect("decide");
        assert_eq!(done.mode, Mode::Resume);
        assert!(!done.changes_anything(), "{:?}", done.steps);
    }

    #[test]
    fn resume_after_meet_only_replicates() {
        let nodes = specs(3, 2);
        let w = decide(&nodes, 1, &fresh_survey(&nodes)).expect("decide");
        let plan = w.plan.expect("plan");
        let mut s = finished(&nodes, &plan);
        // Killed after MEET: replicas are still empty masters everywhere.
        for n in &mut s.nodes {
            for l in &mut n.view {
                if !l.is_master() {
                    l.flags = l
                        .flags
                        .iter()
                        .map(|f| {
                            if f == "slave" {
                                "master".to_string()
                            } else {
                                f.clone()
                            }
                        })
                        .collect();
                    l.master_id = None;
                }
            }
        }
        let w = decide(&nodes, 1, &s).expect("decide");
        assert_eq!(w.mode, Mode::Resume);
        let kinds: Vec<&Step> = w
            .steps
            .iter()
            .filter(|s| !matches!(s, Step::Replicate { .. }))
            .collect();
        assert_eq!(kinds, vec![&Step::WaitJoined, &Step::WaitLinks]);
        assert_eq!(
            w.steps
                .iter()
                .filter(|s| matches!(s, Step::Replicate { .. }))
                .count(),
            3
        );
    }

    #[test]
    fn refusals_name_the_node() {
        let mut nodes = specs(2, 5);
        nodes.pop();
        let e = decide(&nodes, 2, &fresh_survey(&nodes)).unwrap_err();
        assert!(e.contains("not enough distinct hosts"), "{e}");

        let nodes = specs(3, 2);
        let mut s = fresh_survey(&nodes);
        s.nodes[4].dbsize = 1;
        let e = decide(&nodes, 1, &s).unwrap_err();
        assert!(e.contains("127.0.0.4:7000 holds 1 key"), "{e}");

        let mut s = fresh_survey(&nodes);
        s.nodes[2] = NodeState::unreachable(&nodes[2].addr(), "connection refused");
        let e = decide(&nodes, 1, &s).unwrap_err();
        assert!(e.contains("node 127.0.0.3:7000 is unreachable"), "{e}");

        let mut s = fresh_survey(&nodes);
        s.nodes[1].cluster_enabled = false;
        assert!(decide(&nodes, 1, &s)
            .unwrap_err()
            .contains("127.0.0.2:7001 is not cluster-enabled"));

        // A node that knows a reachable foreign node belongs to another cluster.
        let mut s = fresh_survey(&nodes);
        let foreign = parse_cluster_nodes(
            "ffffffffffffffffffffffffffffffffffffffff 127.0.0.9:7000@17000 master - 0 0 1 connected 0-16383",
            "",
        )
        .expect("line");
        s.nodes[3].view.extend(foreign.clone());
        let mut other = fresh(&NodeSpec::new("127.0.0.9", 7000), 99);
        other.view[0].id = foreign[0].id.clone();
        s.nodes.push(other);
        let e = decide(&nodes, 1, &s).unwrap_err();
        assert!(
            e.contains("node 127.0.0.3:7001 already belongs to another cluster"),
            "{e}"
        );

        // Too few nodes for 3 masters.
        let nodes = specs(2, 2);
        let e = decide(&nodes, 1, &fresh_survey(&nodes)).unwrap_err();
        assert!(e.contains("too few masters"), "{e}");
    }

    #[test]
    fn contradicting_slots_are_not_overwritten() {
        let nodes = specs(3, 2);
        let w = decide(&nodes, 1, &fresh_survey(&nodes)).expect("decide");
        let plan = w.plan.expect("plan");
        let mut s = fresh_survey(&nodes);
        // A planned replica already owns slots (someone else's work): refused, not overwritten.
        let r = plan.shards[0].replicas[0];
        s.nodes[r].view[0].slots = vec![(0, 100)];
        let e = decide(&nodes, 1, &s).unwrap_err();
        assert!(
            e.contains("owns slots 0-100 but the plan makes it a replica"),
            "{e}"
        );
        // Alone with a partial slot set and no fresh nodes around: adopt finds slots unowned.
        let mut s = finished(&nodes, &plan);
        for n in &mut s.nodes {
            for l in &mut n.view {
                if l.slots == vec![plan.shards[2].slots] {
                    l.slots = vec![(plan.shards[2].slots.0, plan.shards[2].slots.0 + 9)];
                }
            }
        }
        let e = decide(&nodes, 1, &s).unwrap_err();
        assert!(e.contains("have no owner"), "{e}");
    }

    #[test]
    fn missing_rendered_master_is_promoted() {
        let nodes = specs(3, 2);
        let plan = decide(&nodes, 1, &fresh_survey(&nodes))
            .expect("decide")
            .plan
            .expect("plan");
        let full = finished(&nodes, &plan);
        let gone = plan.shards[1].master;
        let replica = plan.shards[1].replicas[0];
        let listed: Vec<NodeSpec> = (0..nodes.len())
            .filter(|&i| i != gone)
            .map(|i| nodes[i].clone())
            .collect();
        let mut s = Survey {
            nodes: full
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != gone)
                .map(|(_, n)| n.clone())
                .collect(),
        };
        s.nodes.push(NodeState::unreachable(
            &nodes[gone].addr(),
            "connection refused",
        ));
        let w = decide(&listed, 1, &s).expect("decide");
        assert_eq!(w.mode, Mode::Adopt);
        let want = listed
            .iter()
            .position(|n| *n == nodes[replica])
            .expect("replica listed");
        assert_eq!(
            w.steps,
            vec![
                Step::Takeover {
                    node: want,
                    master: nodes[gone].addr()
                },
                Step::WaitJoined
            ]
        );
    }

    #[test]
    fn convergence_problems() {
        let nodes = specs(3, 2);
        let plan = decide(&nodes, 1, &fresh_survey(&nodes))
            .expect("decide")
            .plan
            .expect("plan");
        let mut s = finished(&nodes, &plan);
        let ids: Vec<String> = (0..nodes.len()).map(id).collect();
        assert!(join_problems(&s.nodes, &ids).is_empty());
        assert!(link_problems(&s.nodes).is_empty());
        s.nodes[0].view.retain(|l| l.id != id(3));
        s.nodes[1].view[2].flags.push("fail?".into());
        let p = join_problems(&s.nodes, &ids);
        assert!(
            p.iter()
                .any(|x| x == "127.0.0.2:7000 does not see 127.0.0.3:7001"),
            "{p:?}"
        );
        assert!(
            p.iter().any(|x| x.contains("sees 127.0.0.3:7000 as fail?")),
            "{p:?}"
        );
        let r = plan.shards[0].replicas[0];
        s.nodes[r]
            .replication
            .insert("master_link_status".into(), "down".into());
        assert!(!link_problems(&s.nodes).is_empty());
    }
}
