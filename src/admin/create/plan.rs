//! CREATE's pure half: from a survey of the listed nodes, [`decide`] what is left to do (fresh,
//! resume or adopt) as a list of [`Step`]s, and the lines that print a plan and its steps. No
//! sockets: every situation is unit-tested from hand-built surveys.

use super::refusal::{Mismatch, NotResumable, Refusal};
use crate::admin::check::ranges_text;
use crate::admin::placement::{self, NodeSpec, Plan, PlanOptions};
use crate::admin::survey::{NodeState, Survey};
use crate::cluster::slots::SLOT_COUNT;
use crate::cluster::NodeLine;

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
    /// `CLUSTER MEET <ip> <port> <bus port>` of each of `others`, sent to `node` (in one
    /// pipeline).
    Meet {
        /// Node index of the node that starts the handshakes.
        node: usize,
        /// The nodes it meets, in the order sent.
        others: Vec<usize>,
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
pub fn decide(nodes: &[NodeSpec], replicas: usize, s: &Survey) -> Result<Work, Refusal> {
    if s.nodes.len() < nodes.len() {
        return Err(Refusal::SurveyShort);
    }
    let listed = &s.nodes[..nodes.len()];
    let mut ids = Vec::with_capacity(nodes.len());
    for n in listed {
        if let Some(e) = &n.error {
            return Err(Refusal::Unreachable {
                addr: n.addr.clone(),
                error: e.clone(),
            });
        }
        if !n.cluster_enabled {
            return Err(Refusal::NotClusterEnabled {
                addr: n.addr.clone(),
            });
        }
        match n.id() {
            Some(id) => ids.push(id.to_string()),
            None => {
                return Err(Refusal::NoMyself {
                    addr: n.addr.clone(),
                })
            }
        }
    }
    for (i, a) in ids.iter().enumerate() {
        if let Some(j) = ids[..i].iter().position(|b| b == a) {
            return Err(Refusal::SameId {
                first: listed[j].addr.clone(),
                second: listed[i].addr.clone(),
                id: a.clone(),
            });
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
                return Err(Refusal::Foreign {
                    addr: n.addr.clone(),
                    other: l.addr(),
                    id: l.id.clone(),
                });
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
        let plan = placement::plan(nodes, &opts).map_err(Refusal::Placement)?;
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
            return Err(Refusal::Keys {
                addr: n.addr.clone(),
                count: n.dbsize,
            });
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
            Err(why) => NotResumable::Contradicts(why),
        },
        Ok(_) => NotResumable::Ghosts(ghosts.len()),
        Err(e) => NotResumable::Placement(e),
    };
    adopt(listed, &ids, &ghosts, reason)
}

/// Checks that live state is a partial execution of `plan`; `Err` says what contradicts it.
fn compatible(plan: &Plan, listed: &[NodeState], ids: &[String]) -> Result<(), Mismatch> {
    let roles = plan.roles(listed.len());
    for (i, n) in listed.iter().enumerate() {
        let addr = || n.addr.clone();
        let Some(me) = n.myself() else {
            return Err(Mismatch::NoMyself { addr: addr() });
        };
        let Some((k, is_master)) = roles[i] else {
            return Err(Mismatch::NotPlanned { addr: addr() });
        };
        let shard = &plan.shards[k];
        if is_master {
            if !me.is_master() {
                return Err(Mismatch::Replica { addr: addr() });
            }
            if !me.slots.is_empty() && me.slots != vec![shard.slots] {
                return Err(Mismatch::MasterSlots {
                    addr: addr(),
                    owns: me.slots.clone(),
                    planned: shard.slots,
                });
            }
        } else {
            if !me.slots.is_empty() {
                return Err(Mismatch::ReplicaSlots {
                    addr: addr(),
                    owns: me.slots.clone(),
                });
            }
            if !me.is_master() && me.master_id.as_deref() != Some(ids[shard.master].as_str()) {
                return Err(Mismatch::OtherMaster {
                    addr: addr(),
                    planned: listed[shard.master].addr.clone(),
                });
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
                return Err(Mismatch::Believes {
                    addr: addr(),
                    other: listed[j].addr.clone(),
                    slots: l.slots.clone(),
                });
            }
        }
    }
    Ok(())
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
    steps.extend(mesh_meets(plan, listed.len(), knows));
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
    steps.push(Step::WaitJoined);
    if any_replica {
        steps.push(Step::WaitLinks);
    }
    steps
}

/// Which node of the pair `(a, b)` sends the `CLUSTER MEET` in a full mesh. `role[i]` is
/// `Some(master index)` for a replica-to-be, `None` for a master.
///
/// Why it matters: the node that sends the MEET learns the other's slots and role within one
/// cluster cron tick (the other's first PING reaches it after its handshake is complete), while
/// the receiver completes its handshake on a PONG, which Redis does not read for configuration,
/// and learns the sender's slots only from the sender's next message (up to half the
/// cluster-node-timeout later; the engine nudges it sooner). So a replica-to-be meets its own
/// master (it can replicate as soon as the handshake ends) and every master (its slot map, and
/// with it its `cluster_state`, is complete at once); masters among themselves and replicas
/// among themselves alternate around the ring so each node starts about half of its handshakes.
pub fn meet_sender(a: usize, b: usize, role: &[Option<usize>]) -> usize {
    let kind = |i: usize| role.get(i).copied().flatten().is_some();
    match (kind(a), kind(b)) {
        (true, false) => a,
        (false, true) => b,
        (k, _) => {
            // Positions on the ring of the nodes of this kind.
            let rank = |i: usize| (0..i).filter(|&j| kind(j) == k).count();
            let size = (0..role.len()).filter(|&j| kind(j) == k).count().max(1);
            let (ra, rb) = (rank(a), rank(b));
            let d = (rb + size - ra % size) % size;
            if 2 * d < size || (2 * d == size && ra < rb) {
                a
            } else {
                b
            }
        }
    }
}

/// The MEETs of a full mesh between the plan's nodes, leaving out pairs where one side already
/// knows the other (`knows(i, j)`: node `i` knows node `j` or is shaking hands with it). One
/// step per sending node; a replica-to-be meets its own master first.
///
/// A full mesh instead of one seed: with one seed, every other pair has to discover each other
/// through gossip, a few nodes per PING and one PING per node per second, which took seconds at
/// 12 nodes and grows with N; with the mesh every handshake can start as soon as the nodes can
/// take it (the executor paces them, see [`crate::admin::create::MEET_WINDOW`]). The cost is
/// N(N-1)/2 MEET commands (pipelined per node) and no extra cluster-bus links: a converged
/// cluster holds a link between every pair anyway.
fn mesh_meets(plan: &Plan, n: usize, knows: impl Fn(usize, usize) -> bool) -> Vec<Step> {
    let mut role: Vec<Option<usize>> = vec![None; n];
    for shard in &plan.shards {
        for &r in &shard.replicas {
            if let Some(x) = role.get_mut(r) {
                *x = Some(shard.master);
            }
        }
    }
    let members: Vec<usize> = plan
        .shards
        .iter()
        .flat_map(|s| std::iter::once(s.master).chain(s.replicas.iter().copied()))
        .filter(|&i| i < n)
        .collect();
    let mut steps = Vec::new();
    for i in 0..n {
        if !members.contains(&i) {
            continue;
        }
        let mut others: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&j| j != i && meet_sender(i, j, &role) == i)
            .filter(|&j| !knows(i, j) && !knows(j, i))
            .collect();
        others.sort_by_key(|&j| (role[i] != Some(j), j));
        if !others.is_empty() {
            steps.push(Step::Meet { node: i, others });
        }
    }
    steps
}

/// Adopt mode: the nodes already form a cluster that is not the fresh plan. Repair only.
fn adopt(
    listed: &[NodeState],
    ids: &[String],
    ghosts: &[&NodeLine],
    reason: NotResumable,
) -> Result<Work, Refusal> {
    if let Some(n) = listed.iter().find(|n| is_fresh(n)) {
        return Err(Refusal::Mixed {
            addr: n.addr.clone(),
            reason,
        });
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
                return Err(Refusal::Orphaned {
                    addr: g.addr(),
                    id: g.id.clone(),
                    slots: g.slots.clone(),
                })
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
        return Err(Refusal::Unowned {
            reason,
            count: free.len(),
            ranges: ranges_text(&free),
        });
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
            steps.insert(
                0,
                Step::Meet {
                    node: i,
                    others: vec![seed],
                },
            );
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
        Step::Meet { node, others } => {
            // A full mesh is N-1 addresses per node at most; a line lists a few.
            const LISTED: usize = 8;
            let mut list: Vec<String> = others.iter().take(LISTED).map(|&j| a(j)).collect();
            if others.len() > LISTED {
                list.push(format!("and {} more", others.len() - LISTED));
            }
            format!("step CLUSTER MEET {} from {}", list.join(", "), a(*node))
        }
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
