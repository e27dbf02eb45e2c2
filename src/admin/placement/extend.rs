//! Placement of nodes added to a running cluster: new shards ([`plan_addition`]) and new
//! replicas for masters that exist ([`assign_replicas`]). Pure, like the rest of the planner:
//! the caller says what the cluster looks like now, nothing is read here.
//!
//! # New shards
//! The rules of [`super::plan`], with the cluster's present layout taken into account:
//! 1. the `r + 1` members of a new shard are on pairwise distinct hosts (no replica on its
//!    master's host), refused or (with `allow_colocated`) relaxed and warned about exactly as in
//!    `plan`;
//! 2. masters per host as even as possible over the *whole* cluster after the add: the new
//!    masters minimise the sum over hosts of `(masters already there + new masters there)^2`.
//!    Without the placement constraint that optimum is a greedy fill (one master at a time to
//!    the host with the fewest masters in total that still has a new node to spare; ties to
//!    the host with the most nodes to spare, then the first), which is exact for a separable
//!    convex objective under per-host caps. The transport flow of `plan` then says whether a
//!    placement with those counts exists; if not, `plan`'s flow-checked local search runs from
//!    the round-robin counts, moving a new master only between hosts whose totals differ by
//!    two or more;
//! 3. replica links among the new shards are spread as in `plan` (existing shards keep theirs).
//!
//! New shards own no slots (the slot mover gives them their share later), so they have no slot
//! range and no planned epoch.
//!
//! # New replicas
//! [`assign_replicas`] gives each new node a master: never one on the node's own host (unless
//! the caller allows it, for a cluster that lives on one host), masters with the fewest
//! replicas first, and among equally even outcomes the one that puts the fewest replicas of
//! one master on one host. It is a min-cost flow (node hosts -> masters on other hosts ->
//! sink) whose costs are lexicographic: the `k`-th replica a master gains costs the growth of
//! the sum of squares of replica counts, times a weight larger than the total of the second
//! criterion, and a replica on a host where its master already has one costs one unit more.

use super::{
    check_addresses, counts_feasible, improve_counts_over, materialize, round_robin_counts,
    spread_links, Hosts, NodeSpec, PlanError, PlanOptions, SLOTS,
};
use crate::admin::flow::{EdgeId, FlowNetwork};
use std::collections::BTreeMap;
use std::fmt;

/// One new shard; indices refer to the `nodes` given to [`plan_addition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShard {
    /// Index of the master node.
    pub master: usize,
    /// Indices of its replicas, in placement order.
    pub replicas: Vec<usize>,
}

/// The result of [`plan_addition`]: new shards ordered by their master's index, and warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addition {
    /// The new shards.
    pub shards: Vec<NewShard>,
    /// Things an operator should know (colocated members, a host holding half the masters).
    pub warnings: Vec<String>,
}

/// Places `nodes` as new shards of `opts.replicas` replicas each into a cluster that already
/// runs `before[host]` masters on each host (hosts as labelled in `nodes`; hosts with no new
/// node may be listed too). See the module documentation for the rules.
pub fn plan_addition(
    nodes: &[NodeSpec],
    before: &BTreeMap<String, usize>,
    opts: &PlanOptions,
) -> Result<Addition, PlanError> {
    let n = nodes.len();
    if n == 0 {
        return Err(PlanError::NoNodes);
    }
    check_addresses(nodes)?;
    let r = opts.replicas;
    if !n.is_multiple_of(r + 1) {
        return Err(PlanError::NotDivisible {
            nodes: n,
            replicas: r,
        });
    }
    let shards = n / (r + 1);
    if shards > SLOTS {
        return Err(PlanError::TooManyShards { shards });
    }
    let hosts = Hosts::of(nodes);
    let (groups, overloaded) = hosts.groups(shards, r, opts.allow_colocated)?;
    let host_of = |node: usize| hosts.index.get(nodes[node].host.as_str()).copied();
    // A host split into several groups (colocated mode) counts its masters once, on its first.
    let mut offsets = vec![0usize; groups.len()];
    let mut counted = vec![false; hosts.names.len()];
    for (g, members) in groups.iter().enumerate() {
        if let Some(h) = members.first().and_then(|&x| host_of(x)) {
            if !counted[h] {
                counted[h] = true;
                offsets[g] = before.get(&hosts.names[h]).copied().unwrap_or(0);
            }
        }
    }
    let caps: Vec<usize> = groups.iter().map(Vec::len).collect();
    let m = choose_counts_over(&caps, &offsets, r, shards);
    let links = spread_links(&caps, &m, r);
    let mut raw = materialize(&groups, &m, &links, r);
    raw.sort_by_key(|(master, _)| *master);
    let out: Vec<NewShard> = raw
        .into_iter()
        .map(|(master, replicas)| NewShard { master, replicas })
        .collect();

    let mut warnings = Vec::new();
    let colocated: Vec<String> = out
        .iter()
        .filter(|s| {
            let mut hs: Vec<Option<usize>> = std::iter::once(s.master)
                .chain(s.replicas.iter().copied())
                .map(host_of)
                .collect();
            hs.sort();
            hs.windows(2).any(|w| w[0] == w[1])
        })
        .map(|s| nodes[s.master].addr())
        .collect();
    if !colocated.is_empty() {
        let names: Vec<&str> = overloaded
            .iter()
            .map(|&h| hosts.names[h].as_str())
            .collect();
        warnings.push(format!(
            "colocated placement: host(s) {} have more new nodes than the {shards} new shards, \
             so the shard(s) of {} keep members on one host and will not survive its loss",
            names.join(", "),
            colocated.join(", ")
        ));
    }
    let total = before.values().sum::<usize>() + shards;
    let mut added = vec![0usize; hosts.names.len()];
    for s in &out {
        if let Some(h) = host_of(s.master) {
            added[h] += 1;
        }
    }
    for (h, &k) in added.iter().enumerate().filter(|(_, &k)| k > 0) {
        let count = k + before.get(&hosts.names[h]).copied().unwrap_or(0);
        if count * 2 >= total {
            warnings.push(format!(
                "host {} will hold {count} of {total} masters; losing it leaves no majority of \
                 masters to authorise failovers (add nodes on other hosts)",
                hosts.names[h]
            ));
        }
    }
    Ok(Addition {
        shards: out,
        warnings,
    })
}

/// New masters per host group: the greedy optimum of the totals if some placement has those
/// counts, else the flow-checked local search from the round-robin counts.
fn choose_counts_over(caps: &[usize], before: &[usize], r: usize, shards: usize) -> Vec<usize> {
    let target = fill_over(caps, before, shards);
    if counts_feasible(caps, &target, r) {
        return target;
    }
    improve_counts_over(caps, before, r, round_robin_counts(caps, shards))
}

/// `total` new masters, one at a time to the group with the smallest total load that has a node
/// to spare (ties: the most nodes to spare, then the first group). Minimises the sum of squares
/// of `before + m` under `m <= caps`.
fn fill_over(caps: &[usize], before: &[usize], total: usize) -> Vec<usize> {
    let mut m = vec![0usize; caps.len()];
    for _ in 0..total {
        let best = (0..caps.len())
            .filter(|&g| m[g] < caps[g])
            .min_by_key(|&g| (before[g] + m[g], std::cmp::Reverse(caps[g] - m[g]), g));
        match best {
            Some(g) => m[g] += 1,
            None => break,
        }
    }
    m
}

/// A master that can take new replicas, as [`assign_replicas`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The master's host.
    pub host: String,
    /// Replicas it has now.
    pub replicas: usize,
    /// The hosts of those replicas.
    pub replica_hosts: Vec<String>,
}

/// Why [`assign_replicas`] placed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignError {
    /// No master to give replicas to.
    NoMasters,
    /// Every master runs on this node's host.
    OnlyOwnHost {
        /// The node's `ip:port`.
        node: String,
        /// Its host.
        host: String,
    },
}

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssignError::NoMasters => f.write_str("the cluster has no master to replicate"),
            AssignError::OnlyOwnHost { node, host } => write!(
                f,
                "node {node} is on host {host}, where every master runs; a replica there would \
                 not survive the host's loss (use a node on another host)"
            ),
        }
    }
}

impl std::error::Error for AssignError {}

/// Gives each of `nodes` a master among `masters` (the result's `i`-th entry is the index in
/// `masters` of node `i`'s master); see the module documentation for the rules.
/// `allow_colocated` permits a master on the node's own host (at a small extra cost).
pub fn assign_replicas(
    nodes: &[NodeSpec],
    masters: &[Target],
    allow_colocated: bool,
) -> Result<Vec<usize>, AssignError> {
    if masters.is_empty() {
        return Err(AssignError::NoMasters);
    }
    let n = nodes.len();
    // Hosts of the new nodes in order of first appearance, with their nodes in input order.
    let mut host_names: Vec<&str> = Vec::new();
    let mut host_nodes: Vec<Vec<usize>> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        match host_names.iter().position(|&h| h == node.host) {
            Some(h) => host_nodes[h].push(i),
            None => {
                host_names.push(&node.host);
                host_nodes.push(vec![i]);
            }
        }
    }
    let (hn, gn) = (host_names.len(), masters.len());
    let (s, t) = (0, 1);
    let host_vertex = |h: usize| 2 + h;
    let master_vertex = |g: usize| 2 + hn + g;
    let mut net = FlowNetwork::new(2 + hn + gn);
    // Weight of the evenness criterion: above the largest possible total of the host
    // criterion (one unit per node).
    let weight = n as i64 + 1;
    let mut sources: Vec<EdgeId> = Vec::with_capacity(hn);
    let mut pairs: Vec<Vec<Vec<EdgeId>>> = vec![vec![Vec::new(); gn]; hn];
    for (h, members) in host_nodes.iter().enumerate() {
        sources.push(net.add_edge(s, host_vertex(h), members.len() as i64, 0));
        for (g, m) in masters.iter().enumerate() {
            let own = m.host == host_names[h];
            if own && !allow_colocated {
                continue;
            }
            let shared = own || m.replica_hosts.iter().any(|x| x == host_names[h]);
            for k in 0..members.len() {
                let cost = i64::from(shared || k > 0);
                pairs[h][g].push(net.add_edge(host_vertex(h), master_vertex(g), 1, cost));
            }
        }
    }
    for (g, m) in masters.iter().enumerate() {
        for j in 0..n {
            let grown = 2 * (m.replicas + j) as i64 + 1;
            net.add_edge(master_vertex(g), t, 1, weight * grown);
        }
    }
    net.min_cost_flow(s, t, i64::MAX);
    let mut out = vec![usize::MAX; n];
    for (h, members) in host_nodes.iter().enumerate() {
        if net.flow_on(sources[h]) < members.len() as i64 {
            return Err(AssignError::OnlyOwnHost {
                node: nodes[members[0]].addr(),
                host: host_names[h].to_string(),
            });
        }
        let mut next = members.iter();
        for (g, edges) in pairs[h].iter().enumerate() {
            let count: i64 = edges.iter().map(|&e| net.flow_on(e)).sum();
            for _ in 0..count {
                if let Some(&node) = next.next() {
                    out[node] = g;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
