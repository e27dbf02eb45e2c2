//! CREATE's pure half: from a survey of the listed nodes, [`decide`] what is left to do (fresh,
//! resume or adopt) as a list of [`Step`]s, and the lines that print a plan and its steps. No
//! sockets: every situation is unit-tested from hand-built surveys.

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
