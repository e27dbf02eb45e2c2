//! ADD's pure half: from a survey of the cluster and of the new nodes, [`decide_add`] what is
//! left to do as a list of [`Step`]s (REMOVE's half is `remove.rs`; both share [`Step`] and
//! [`Work`]). No sockets: every situation is unit-tested from hand-built surveys.
//!
//! Re-running is safe because the decision is made from live state only. A listed node is
//! either new (empty and alone, or shaking hands with the cluster) or already a member; a
//! member must be part way through the same plan (a planned master is a master, a planned
//! replica is an empty master or already replicates its planned master), and the plan is a
//! function of the cluster's layout without the listed nodes, which an ADD does not change. So
//! an interrupted ADD recomputes the same plan and finishes it, and a finished one has nothing
//! left to do.

use super::args::{MasterName, Shape};
use super::cluster::{Member, Members};
use super::refusal::Refusal;
use crate::admin::placement::extend::{assign_replicas, plan_addition, Target};
use crate::admin::placement::{NodeSpec, PlanOptions};
use crate::admin::survey::{NodeState, Survey};
use std::collections::{BTreeMap, BTreeSet};

/// One change to make, or one wait. Nodes are named by `ip:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `CLUSTER MEET <ip> <port> <cport>` of the seed, sent to a new node.
    Meet {
        /// The new node.
        node: String,
        /// The seed's IP.
        ip: String,
        /// The seed's client port.
        port: u16,
        /// The seed's bus port.
        cport: u16,
    },
    /// Wait until every node sees every other healthy and all agree on the slot map.
    WaitJoined,
    /// `CLUSTER REPLICATE <master id>` on a new replica.
    Replicate {
        /// The new replica.
        node: String,
        /// Its master's ID.
        master_id: String,
        /// Its master's `ip:port`.
        master: String,
    },
    /// Wait until every replication link is up and every node agrees on the roles.
    WaitLinks,
    /// Move every slot off a master before it is removed (the slot mover's drain).
    Drain {
        /// The master.
        node: String,
    },
    /// `CLUSTER FORGET <id>` of every removed node, sent to every node that stays.
    Forget {
        /// `(id, ip:port)` of the removed nodes.
        removed: Vec<(String, String)>,
    },
    /// Wait until no node that stays lists a removed node (FORGET is sent again meanwhile).
    WaitForgotten,
    /// `CLUSTER RESET HARD` on a removed node, so it never gossips its way back.
    Reset {
        /// The removed node.
        node: String,
    },
}

impl Step {
    /// Whether the step changes a node (the waits do not).
    pub fn changes(&self) -> bool {
        !matches!(
            self,
            Step::WaitJoined | Step::WaitLinks | Step::WaitForgotten
        )
    }

    /// The step's report line.
    pub fn line(&self) -> String {
        match self {
            Step::Meet {
                node,
                ip,
                port,
                cport,
            } => format!("step CLUSTER MEET {ip} {port} {cport} on {node}"),
            Step::WaitJoined => {
                "step wait until every node sees every other and the slot maps agree".to_string()
            }
            Step::Replicate {
                node,
                master_id,
                master,
            } => format!("step CLUSTER REPLICATE {master_id} ({master}) on {node}"),
            Step::WaitLinks => "step wait until every replication link is up".to_string(),
            Step::Drain { node } => format!("step drain every slot off {node}"),
            Step::Forget { removed } => format!(
                "step CLUSTER FORGET {} on every node that stays",
                removed
                    .iter()
                    .map(|(id, addr)| format!("{id} ({addr})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Step::WaitForgotten => {
                "step wait until no node lists a removed node (FORGET again meanwhile)".to_string()
            }
            Step::Reset { node } => format!("step CLUSTER RESET HARD on {node}"),
        }
    }
}

/// What a decision found and wants to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// The plan: one line per new shard, new replica or removed node, then warnings and notes.
    pub lines: Vec<String>,
    /// The steps in order.
    pub steps: Vec<Step>,
    /// `(ip:port, id)` of every node of the cluster once done (what the waits and the final
    /// check read).
    pub cluster: Vec<(String, String)>,
    /// What the run does, for the verdict (`2 master(s), 2 replica(s)`).
    pub summary: String,
}

impl Work {
    /// Whether any step changes a node.
    pub fn changes_anything(&self) -> bool {
        self.steps.iter().any(Step::changes)
    }
}

/// A listed node as the survey found it.
struct Listed<'a> {
    spec: &'a NodeSpec,
    state: &'a NodeState,
    id: String,
    /// Its member entry, when the cluster has it already.
    member: Option<&'a Member>,
}

impl Listed<'_> {
    fn addr(&self) -> String {
        self.spec.addr()
    }

    /// Whether it is an empty master nobody replicates (a node this ADD may still turn into
    /// a replica).
    fn blank(&self, members: &Members) -> Result<(), String> {
        let me = self.state.myself();
        if !me.is_some_and(|m| m.is_master()) {
            return Err("is a replica".to_string());
        }
        let slots: usize = me.map_or(0, |m| {
            m.slots.iter().map(|&(a, b)| usize::from(b - a) + 1).sum()
        });
        if slots > 0 {
            return Err(format!("is a master owning {slots} slot(s)"));
        }
        if self.state.dbsize > 0 {
            return Err(format!("holds {} key(s)", self.state.dbsize));
        }
        let reps: Vec<String> = members
            .replicas_of(&self.id)
            .map(|r| r.addr.clone())
            .collect();
        if !reps.is_empty() {
            return Err(format!("is the master of {}", reps.join(", ")));
        }
        Ok(())
    }

    /// The member master it replicates, if it is a member replica.
    fn replicates<'m>(&self, members: &'m Members) -> Option<&'m Member> {
        let m = self.member?;
        (!m.master)
            .then(|| m.master_id.as_deref().and_then(|id| members.by_id(id)))
            .flatten()
    }
}

/// Reads and validates the listed nodes (see the refusals); the cluster's other members must
/// all be healthy.
fn listed<'a>(
    nodes: &'a [NodeSpec],
    s: &'a Survey,
    members: &'a Members,
) -> Result<Vec<Listed<'a>>, Refusal> {
    let mut out: Vec<Listed> = Vec::with_capacity(nodes.len());
    for spec in nodes {
        let addr = spec.addr();
        let Some(state) = s.get(&addr) else {
            return Err(Refusal::Unreachable {
                addr,
                error: "not surveyed".into(),
            });
        };
        if let Some(e) = &state.error {
            return Err(Refusal::Unreachable {
                addr,
                error: e.clone(),
            });
        }
        if !state.cluster_enabled {
            return Err(Refusal::NotClusterEnabled { addr });
        }
        let Some(id) = state.id().map(str::to_string) else {
            return Err(Refusal::NoMyself { addr });
        };
        if let Some(first) = out.iter().find(|l| l.id == id) {
            return Err(Refusal::SameId {
                first: first.addr(),
                second: addr,
            });
        }
        out.push(Listed {
            spec,
            state,
            member: members.by_id(&id),
            id,
        });
    }
    let ids: BTreeSet<&str> = out.iter().map(|l| l.id.as_str()).collect();
    for m in members.list.iter().filter(|m| !ids.contains(m.id.as_str())) {
        if !m.reachable || m.flagged {
            return Err(Refusal::MemberDown {
                addr: m.addr.clone(),
                why: if m.reachable {
                    "is flagged failing"
                } else {
                    "does not answer"
                },
                engine: "ADD",
            });
        }
    }
    for l in out.iter().filter(|l| l.member.is_none()) {
        let addr = l.addr();
        for o in l.state.view.iter() {
            if o.has("myself") || o.has("handshake") || ids.contains(o.id.as_str()) {
                continue;
            }
            if members.by_id(&o.id).is_none() {
                return Err(Refusal::Foreign {
                    addr,
                    other: o.addr(),
                    id: o.id.clone(),
                });
            }
        }
        match l.blank(members) {
            Ok(()) => {}
            Err(_) if l.state.dbsize > 0 => {
                return Err(Refusal::Keys {
                    addr,
                    count: l.state.dbsize,
                })
            }
            Err(what) => return Err(Refusal::NotEmpty { addr, what }),
        }
    }
    Ok(out)
}

/// Whether the new node has not met the cluster yet (it knows no member).
fn needs_meet(l: &Listed, members: &Members) -> bool {
    l.member.is_none()
        && !l
            .state
            .view
            .iter()
            .any(|o| !o.has("myself") && !o.has("handshake") && members.by_id(&o.id).is_some())
}

fn describe(m: &Member, members: &Members) -> String {
    if m.master {
        format!("a master owning {} slot(s)", m.slots)
    } else {
        let of = m
            .master_id
            .as_deref()
            .and_then(|id| members.by_id(id))
            .map_or("?".to_string(), |x| x.addr.clone());
        format!("a replica of {of}")
    }
}

/// Decides what is left of `PROXY ADD` (see the module documentation). `s` must hold the
/// cluster's nodes and every listed node (by the address listed). Pure; an `Err` is a refusal
/// that names the node.
pub fn decide_add(shape: &Shape, nodes: &[NodeSpec], s: &Survey) -> Result<Work, Refusal> {
    let members = Members::of(s);
    let Some(seed) = members.seed() else {
        return Err(Refusal::NoCluster);
    };
    let listed = listed(nodes, s, &members)?;
    let any_new = listed.iter().any(|l| l.member.is_none());
    if any_new {
        for l in &listed {
            if let Some(m) = l.member.filter(|m| m.master && m.slots > 0) {
                return Err(Refusal::Already {
                    addr: l.addr(),
                    what: describe(m, &members),
                });
            }
        }
    }
    let ids: BTreeSet<&str> = listed.iter().map(|l| l.id.as_str()).collect();
    let others: Vec<&Member> = members
        .list
        .iter()
        .filter(|m| !ids.contains(m.id.as_str()))
        .collect();
    // A cluster living on one host (a dev cluster) has no other choice than to colocate.
    let hosts: BTreeSet<&str> = others
        .iter()
        .map(|m| m.host())
        .chain(nodes.iter().map(|n| n.host.as_str()))
        .collect();
    let colocated = hosts.len() <= 1;
    let mut work = Work {
        cluster: others
            .iter()
            .map(|m| (m.addr.clone(), m.id.clone()))
            .chain(listed.iter().map(|l| (l.addr(), l.id.clone())))
            .collect(),
        ..Work::default()
    };
    // (replica index in `listed`, its master's id and address), for every planned replica.
    let mut replicas: Vec<(usize, String, String)> = Vec::new();
    match shape {
        Shape::Shards(r) => {
            let mut before: BTreeMap<String, usize> = BTreeMap::new();
            for m in others.iter().filter(|m| m.master) {
                *before.entry(m.host().to_string()).or_insert(0) += 1;
            }
            let opts = PlanOptions {
                replicas: *r,
                allow_colocated: colocated,
            };
            let add = plan_addition(nodes, &before, &opts).map_err(Refusal::Placement)?;
            let mut mismatch: Option<Refusal> = None;
            for (k, shard) in add.shards.iter().enumerate() {
                let m = &listed[shard.master];
                if m.member.is_some_and(|x| !x.master) {
                    mismatch.get_or_insert(Refusal::Mismatch {
                        addr: m.addr(),
                        why: "is a replica but the plan makes it a master".into(),
                    });
                }
                let reps: Vec<String> = shard
                    .replicas
                    .iter()
                    .map(|&j| format!("{} (host {})", listed[j].addr(), nodes[j].host))
                    .collect();
                work.lines.push(format!(
                    "new shard {}: master {} (host {}) replicas {}",
                    k + 1,
                    m.addr(),
                    nodes[shard.master].host,
                    if reps.is_empty() {
                        "none".to_string()
                    } else {
                        reps.join(", ")
                    }
                ));
                for &j in &shard.replicas {
                    replicas.push((j, m.id.clone(), m.addr()));
                }
            }
            let mut after = before.clone();
            for shard in &add.shards {
                *after.entry(nodes[shard.master].host.clone()).or_insert(0) += 1;
            }
            work.lines.push(format!(
                "masters per host after: {}",
                after
                    .iter()
                    .map(|(h, c)| format!("{h}={c}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            work.lines
                .extend(add.warnings.iter().map(|w| format!("warning {w}")));
            work.summary = format!(
                "{} master(s), {} replica(s)",
                add.shards.len(),
                add.shards.len() * r
            );
            if let Some(e) = mismatch.or_else(|| replicas_mismatch(&replicas, &listed, &members)) {
                return finished_otherwise(&listed, &members, *r, e, work);
            }
        }
        Shape::ReplicasOf(name) => {
            let targets = replica_targets(name, &others, &members, &listed, colocated)?;
            let mut place: Vec<usize> = Vec::new();
            for (i, l) in listed.iter().enumerate() {
                match l.replicates(&members) {
                    Some(m) if targets.iter().any(|t| t.id == m.id) => {
                        replicas.push((i, m.id.clone(), m.addr.clone()))
                    }
                    Some(m) => {
                        return Err(Refusal::Mismatch {
                            addr: l.addr(),
                            why: format!("replicates {}, not the master named", m.addr),
                        })
                    }
                    None => {
                        l.blank(&members).map_err(|why| Refusal::Mismatch {
                            addr: l.addr(),
                            why,
                        })?;
                        place.push(i);
                    }
                }
            }
            let specs: Vec<NodeSpec> = place.iter().map(|&i| nodes[i].clone()).collect();
            let view: Vec<Target> = targets
                .iter()
                .map(|t| Target {
                    host: t.host().to_string(),
                    replicas: members.replicas_of(&t.id).count(),
                    replica_hosts: members
                        .replicas_of(&t.id)
                        .map(|r| r.host().to_string())
                        .collect(),
                })
                .collect();
            let chosen = assign_replicas(&specs, &view, colocated).map_err(Refusal::Assign)?;
            for (k, &i) in place.iter().enumerate() {
                let t = targets[chosen[k]];
                replicas.push((i, t.id.clone(), t.addr.clone()));
            }
            replicas.sort();
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, id, addr) in &replicas {
                let base = members.replicas_of(id).count();
                let n = count.entry(id.as_str()).or_insert(base);
                if listed[*i].member.is_none_or(|m| m.master) {
                    *n += 1;
                }
                let host = targets
                    .iter()
                    .find(|t| t.id == *id)
                    .map_or("?", |t| t.host());
                work.lines.push(format!(
                    "new replica {} (host {}) of master {addr} (host {host})",
                    listed[*i].addr(),
                    nodes[*i].host
                ));
                if host == nodes[*i].host {
                    work.lines.push(format!(
                        "warning {} shares host {host} with its master: the cluster has no \
                         other host",
                        listed[*i].addr()
                    ));
                }
            }
            for (id, n) in count {
                let addr = members.by_id(id).map_or("?", |m| m.addr.as_str());
                work.lines
                    .push(format!("master {addr} will have {n} replica(s)"));
            }
            work.summary = format!("{} replica(s)", replicas.len());
        }
    }
    for l in listed.iter().filter(|l| needs_meet(l, &members)) {
        let (ip, port) = seed_address(seed);
        work.steps.push(Step::Meet {
            node: l.addr(),
            ip,
            port,
            cport: seed.cport,
        });
    }
    work.steps.push(Step::WaitJoined);
    for (i, master_id, master) in &replicas {
        let done = listed[*i]
            .member
            .is_some_and(|m| m.master_id.as_deref() == Some(master_id.as_str()));
        if !done {
            work.steps.push(Step::Replicate {
                node: listed[*i].addr(),
                master_id: master_id.clone(),
                master: master.clone(),
            });
        }
    }
    if !replicas.is_empty() {
        work.steps.push(Step::WaitLinks);
    }
    Ok(work)
}

/// The seed's `(ip, port)`.
fn seed_address(seed: &Member) -> (String, u16) {
    let (ip, port) = seed.addr.rsplit_once(':').unwrap_or((&seed.addr, "0"));
    (ip.to_string(), port.parse().unwrap_or(0))
}

/// A planned replica that is neither blank nor already following its planned master.
fn replicas_mismatch(
    replicas: &[(usize, String, String)],
    listed: &[Listed],
    members: &Members,
) -> Option<Refusal> {
    for (j, master_id, master) in replicas {
        let l = &listed[*j];
        match l.replicates(members) {
            Some(m) if m.id == *master_id => {}
            Some(m) => {
                return Some(Refusal::Mismatch {
                    addr: l.addr(),
                    why: format!("replicates {}, not its planned master {master}", m.addr),
                })
            }
            None => {
                if let Err(why) = l.blank(members) {
                    return Some(Refusal::Mismatch {
                        addr: l.addr(),
                        why: format!("{why} but the plan makes it a replica of {master}"),
                    });
                }
            }
        }
    }
    None
}

/// Live state contradicts the plan: if every listed node is a member and the shards they form
/// are complete (a failover inside a new shard, say), there is nothing to do; else `refusal`.
fn finished_otherwise(
    listed: &[Listed],
    members: &Members,
    r: usize,
    refusal: Refusal,
    mut work: Work,
) -> Result<Work, Refusal> {
    let complete = listed.iter().all(|l| match l.member {
        None => false,
        Some(m) if m.master => members.replicas_of(&m.id).count() >= r,
        Some(_) => l.replicates(members).is_some_and(|m| m.master),
    });
    if !complete {
        return Err(refusal);
    }
    work.lines = vec![format!(
        "note the nodes are members already, in other roles than this plan's ({refusal})"
    )];
    work.steps.clear();
    Ok(work)
}

/// The masters new replicas may follow: the named one, or (ANY) every master that owns slots.
fn replica_targets<'a>(
    name: &MasterName,
    others: &[&'a Member],
    members: &'a Members,
    listed: &[Listed],
    colocated: bool,
) -> Result<Vec<&'a Member>, Refusal> {
    let named = match name {
        MasterName::Any => {
            return Ok(others
                .iter()
                .copied()
                .filter(|m| m.master && m.slots > 0)
                .collect())
        }
        MasterName::Node(n) => n,
    };
    let Some(m) = members.by_addr(named).or_else(|| members.by_id(named)) else {
        return Err(Refusal::NoSuchMaster {
            name: named.clone(),
        });
    };
    if let Some(l) = listed.iter().find(|l| l.id == m.id) {
        return Err(Refusal::OwnMaster { addr: l.addr() });
    }
    if !m.master {
        let master = m
            .master_id
            .as_deref()
            .and_then(|id| members.by_id(id))
            .map_or("?".to_string(), |x| x.addr.clone());
        return Err(Refusal::NotAMaster {
            name: named.clone(),
            master,
        });
    }
    if !colocated {
        if let Some(l) = listed.iter().find(|l| l.spec.host == m.host()) {
            return Err(Refusal::SameHost {
                node: l.addr(),
                host: l.spec.host.clone(),
                master: m.addr.clone(),
            });
        }
    }
    Ok(vec![m])
}
