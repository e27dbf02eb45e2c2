//! Exact, host-aware placement of a new Redis Cluster: which node is a master, which nodes
//! replicate it, and which slot range each shard owns. Pure computation, no I/O.
//!
//! # What a plan guarantees
//! Given `N` nodes on hosts (a host is a label; it defaults to the node's IP) and `r` replicas per
//! master, a plan has `M = N / (r + 1)` shards of one master and `r` replicas each, uses every node
//! exactly once, and (unless `allow_colocated` had to relax it) keeps these invariants:
//! 1. the `r + 1` members of a shard are on pairwise distinct hosts, so no master shares a host
//!    with one of its replicas and the replicas of one master sit on distinct hosts;
//! 2. the number of masters per host is as even as the host sizes allow (it minimises the sum of
//!    squares of the per-host master counts, which means counts differ by at most one except on
//!    hosts too small to take their share, and the largest count is as small as possible), so no
//!    host holds half or more of the masters unless that cannot be avoided (a warning says so);
//! 3. replica links between hosts are spread: the number `x[h][g]` of replicas on host `h` that
//!    serve masters on host `g` first has the smallest possible maximum, then the smallest possible
//!    sum of squares. When host `g` dies, its masters fail over onto as many different hosts as the
//!    layout permits (the "chunk" idea of seeds.md section 1, generalised);
//! 4. slot ranges are contiguous over `0..=16383`, sizes differ by at most one, shard `i` gets the
//!    `i`-th range and master epoch `i + 1`. Shards are ordered by their master's node index.
//!
//! The output depends only on the input (no randomness, no hash-map iteration order).
//!
//! # Why the algorithm is exact
//! *When a placement exists.* Let `c[h]` be the nodes on host `h`. A host can give at most one node
//! to each shard, so `c[h] <= M` is necessary. It is also sufficient: list the nodes host by host
//! and put the `k`-th node into shard `k mod M`; a host's nodes form a contiguous run of length at
//! most `M`, so they land in distinct shards, and every shard gets exactly `r + 1` nodes. Any
//! member of each shard can then be its master. So [`plan`] refuses exactly when some host has more
//! than `M` nodes (with fewer than `r + 1` hosts this always happens), and the unit tests confirm by
//! brute force on small layouts that it never refuses a layout that has a valid placement.
//!
//! *Which master counts are possible.* Fix masters per host `m[h]`. Host `h` then has
//! `s[h] = c[h] - m[h]` replicas and host `g` needs `r * m[g]` replicas. A placement with these
//! counts exists iff the transport problem "send `s[h]` from each `h` to hosts `g != h`, at most
//! `m[g]` on each pair `(h, g)`, so that `g` receives `r * m[g]`" is feasible: the pair cap is
//! necessary (one node of `h` per shard of `g`), and given such an `x`, laying out `g`'s incoming
//! replicas host by host and dealing them round robin over `g`'s `m[g]` shards puts each host's
//! run of at most `m[g]` nodes into distinct shards, `r` per shard. Feasibility is a max-flow.
//!
//! *Choosing the counts.* The ideal counts are the water-filling of `M` over the caps `c[h]`
//! (level `L` with `sum(min(c, L)) <= M < sum(min(c, L + 1))`, the remainder as `+1` on the
//! largest hosts); that minimises the sum of squares over all count vectors, so if the flow says
//! it is feasible it is optimal. It was feasible on every layout the tests generated (thousands of
//! random host sizes with `c[h] <= M`), but we have no proof that it always is, so if the flow
//! says no we do not fail: we start from the counts of
//! the round-robin placement above (feasible by construction, masters picked by a matching that
//! minimises the largest count) and repeatedly move one master from a host with at least two more
//! masters than another host to that host, largest improvement first, each move checked by the
//! flow, until no move helps. The tests compare the result with the brute-force optimum.
//!
//! *Spreading links.* With the counts fixed, the smallest uniform pair cap `K` for which the
//! transport flow saturates is found by binary search; then a min-cost flow with convex costs
//! (the `k`-th unit on a pair costs `2k - 1`) inside that cap minimises the sum of squares of the
//! links. Both are exact optimisation over the same feasible set, so invariant 1 still holds.
//!
//! *Colocated dev clusters.* With `allow_colocated`, a host with more than `M` nodes is split into
//! the fewest virtual hosts of at most `M` nodes each (sizes differing by at most one) and the
//! exact algorithm runs on those; members of one shard stay on distinct hosts wherever the
//! split leaves that possible, and a warning names the host and the shards that share it.

pub mod extend;

use crate::admin::flow::{EdgeId, FlowNetwork};
use std::collections::{HashMap, VecDeque};
use std::fmt;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// One node to place: its address and the host it runs on.
///
/// `host` is a failure-domain label; two nodes with the same `host` are assumed to fail together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeSpec {
    /// Failure-domain label (machine, rack, ...). Defaults to `ip` in [`NodeSpec::new`].
    pub host: String,
    /// Address the node listens on and announces to the cluster.
    pub ip: String,
    /// Client port; the cluster bus uses `port + 10000`.
    pub port: u16,
}

impl NodeSpec {
    /// A node whose host label is its IP (the usual case: one IP per machine).
    pub fn new(ip: impl Into<String>, port: u16) -> Self {
        let ip = ip.into();
        NodeSpec {
            host: ip.clone(),
            ip,
            port,
        }
    }

    /// A node with an explicit host label (several IPs on one machine, or rack-level domains).
    pub fn on_host(host: impl Into<String>, ip: impl Into<String>, port: u16) -> Self {
        NodeSpec {
            host: host.into(),
            ip: ip.into(),
            port,
        }
    }

    /// `ip:port`, the node's identity in error messages and in the cluster.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// Knobs of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Replicas per master (`r`); every shard has `r + 1` members.
    pub replicas: usize,
    /// Dev clusters on one machine: never refuse for lack of hosts, place members of one shard
    /// on the same host when unavoidable, and say so in [`Plan::warnings`].
    pub allow_colocated: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            replicas: 1,
            allow_colocated: false,
        }
    }
}

/// One master with its replicas and its slot range. Indices refer to the `nodes` given to [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Index of the master node.
    pub master: usize,
    /// Indices of the replica nodes, in placement order.
    pub replicas: Vec<usize>,
    /// First and last slot owned, both inclusive.
    pub slots: (u16, u16),
    /// Config epoch of the master (unique, `1..=M` in shard order); replicas carry it too.
    pub epoch: u64,
}

/// The result of [`plan`]: shards in slot order plus human-readable warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Shards in slot order; shard `i` owns the `i`-th slot range and has epoch `i + 1`.
    pub shards: Vec<Shard>,
    /// Things an operator should know (colocated members, a host holding half the masters).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Index of the shard each node belongs to and whether it is that shard's master, by node index.
    pub fn roles(&self, node_count: usize) -> Vec<Option<(usize, bool)>> {
        let mut roles = vec![None; node_count];
        for (i, shard) in self.shards.iter().enumerate() {
            if let Some(slot) = roles.get_mut(shard.master) {
                *slot = Some((i, true));
            }
            for &rep in &shard.replicas {
                if let Some(slot) = roles.get_mut(rep) {
                    *slot = Some((i, false));
                }
            }
        }
        roles
    }
}

/// Why no plan was produced. The message names the problem and the offending node or host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The node list is empty.
    NoNodes,
    /// Fewer than three masters would result; Redis Cluster needs a majority of at least 2 of 3.
    TooFewMasters {
        /// Nodes given.
        nodes: usize,
        /// Replicas per master requested.
        replicas: usize,
        /// Masters that would result.
        masters: usize,
    },
    /// The node count is not a multiple of `replicas + 1`.
    NotDivisible {
        /// Nodes given.
        nodes: usize,
        /// Replicas per master requested.
        replicas: usize,
    },
    /// Two entries share one `ip:port`.
    DuplicateAddress {
        /// The repeated `ip:port`.
        addr: String,
        /// Index of the first entry.
        first: usize,
        /// Index of the second entry.
        second: usize,
    },
    /// A node's cluster bus port (`port + 10000`) does not fit in 16 bits.
    BusPortOverflow {
        /// The node's `ip:port`.
        addr: String,
    },
    /// More shards than slots.
    TooManyShards {
        /// Shards that would result.
        shards: usize,
    },
    /// Fewer distinct hosts than members per shard.
    TooFewHosts {
        /// The hosts given, in order of first appearance.
        hosts: Vec<String>,
        /// Distinct hosts each shard needs (`replicas + 1`).
        needed: usize,
    },
    /// A host has more nodes than there are shards, so some shard would use it twice.
    HostOverloaded {
        /// The host label.
        host: String,
        /// Nodes on that host.
        nodes: usize,
        /// Shards in the cluster.
        shards: usize,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::NoNodes => write!(f, "no nodes to place"),
            PlanError::TooFewMasters {
                nodes,
                replicas,
                masters,
            } => write!(
                f,
                "too few masters: {nodes} node(s) with {replicas} replica(s) per master make \
                 {masters} master(s), but Redis Cluster needs at least 3 (give at least {} nodes)",
                3 * (replicas + 1)
            ),
            PlanError::NotDivisible { nodes, replicas } => write!(
                f,
                "node count not divisible: {nodes} node(s) cannot form shards of {} \
                 (1 master + {replicas} replica(s)); use a multiple of {}",
                replicas + 1,
                replicas + 1
            ),
            PlanError::DuplicateAddress {
                addr,
                first,
                second,
            } => write!(
                f,
                "duplicate node address {addr} (entries {first} and {second})"
            ),
            PlanError::BusPortOverflow { addr } => write!(
                f,
                "node {addr}: its cluster bus port (port + 10000) exceeds 65535"
            ),
            PlanError::TooManyShards { shards } => {
                write!(f, "too many shards: {shards} shards for {SLOTS} slots")
            }
            PlanError::TooFewHosts { hosts, needed } => write!(
                f,
                "not enough distinct hosts: each shard needs {needed} members on distinct hosts, \
                 but only {} host(s) were given ({}); add hosts, lower the replica count, or \
                 allow colocated placement for a dev cluster",
                hosts.len(),
                hosts.join(", ")
            ),
            PlanError::HostOverloaded {
                host,
                nodes,
                shards,
            } => write!(
                f,
                "host {host} is overloaded: it has {nodes} nodes but there are only {shards} \
                 shards and a shard may use a host at most once; move {} node(s) off {host} or \
                 add nodes on other hosts",
                nodes - shards
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// Places `nodes` into shards; see the module documentation for the guarantees and the argument.
pub fn plan(nodes: &[NodeSpec], opts: &PlanOptions) -> Result<Plan, PlanError> {
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
    if shards < 3 {
        return Err(PlanError::TooFewMasters {
            nodes: n,
            replicas: r,
            masters: shards,
        });
    }
    if shards > SLOTS {
        return Err(PlanError::TooManyShards { shards });
    }

    let hosts = Hosts::of(nodes);
    let host_names = &hosts.names;
    let host_index = &hosts.index;
    let mut warnings = Vec::new();
    let (groups, overloaded) = hosts.groups(shards, r, opts.allow_colocated)?;

    let caps: Vec<usize> = groups.iter().map(Vec::len).collect();
    let masters_per_group = choose_master_counts(&caps, r, shards);
    let links = spread_links(&caps, &masters_per_group, r);
    let mut raw = materialize(&groups, &masters_per_group, &links, r);
    raw.sort_by_key(|(master, _)| *master);

    let ranges = slot_ranges(shards);
    let shards_out: Vec<Shard> = raw
        .into_iter()
        .zip(ranges)
        .enumerate()
        .map(|(i, ((master, replicas), slots))| Shard {
            master,
            replicas,
            slots,
            epoch: i as u64 + 1,
        })
        .collect();

    // Warnings are about real hosts, not the virtual split.
    let host_of = |node: usize| host_index.get(nodes[node].host.as_str()).copied();
    let colocated: Vec<usize> = shards_out
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            let mut hs: Vec<Option<usize>> = std::iter::once(s.master)
                .chain(s.replicas.iter().copied())
                .map(host_of)
                .collect();
            hs.sort();
            hs.windows(2).any(|w| w[0] == w[1])
        })
        .map(|(i, _)| i)
        .collect();
    if !colocated.is_empty() {
        let names: Vec<String> = overloaded.iter().map(|&h| host_names[h].clone()).collect();
        warnings.push(format!(
            "colocated placement: host(s) {} have more nodes than the {shards} shards, so {} \
             shard(s) ({}) keep members on one host and will not survive its loss",
            names.join(", "),
            colocated.len(),
            colocated
                .iter()
                .map(|i| format!("#{i}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let mut per_host = vec![0usize; host_names.len()];
    for s in &shards_out {
        if let Some(h) = host_of(s.master) {
            per_host[h] += 1;
        }
    }
    for (h, &count) in per_host.iter().enumerate() {
        if count * 2 >= shards {
            warnings.push(format!(
                "host {} holds {count} of {shards} masters; losing it leaves no majority of \
                 masters to authorise failovers (spread the nodes over more hosts)",
                host_names[h]
            ));
        }
    }

    Ok(Plan {
        shards: shards_out,
        warnings,
    })
}

/// Refuses a bus port beyond 65535 and an `ip:port` listed twice.
fn check_addresses(nodes: &[NodeSpec]) -> Result<(), PlanError> {
    let mut seen: HashMap<(&str, u16), usize> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        if node.port > u16::MAX - 10000 {
            return Err(PlanError::BusPortOverflow { addr: node.addr() });
        }
        if let Some(&first) = seen.get(&(node.ip.as_str(), node.port)) {
            return Err(PlanError::DuplicateAddress {
                addr: node.addr(),
                first,
                second: i,
            });
        }
        seen.insert((node.ip.as_str(), node.port), i);
    }
    Ok(())
}

/// The nodes' hosts in order of first appearance, each with its nodes in input order.
struct Hosts<'a> {
    /// Host labels.
    names: Vec<String>,
    /// Node indices per host.
    nodes: Vec<Vec<usize>>,
    /// Label -> host index.
    index: HashMap<&'a str, usize>,
}

impl<'a> Hosts<'a> {
    fn of(nodes: &'a [NodeSpec]) -> Hosts<'a> {
        let mut hosts = Hosts {
            names: Vec::new(),
            nodes: Vec::new(),
            index: HashMap::new(),
        };
        for (i, node) in nodes.iter().enumerate() {
            let h = *hosts.index.entry(node.host.as_str()).or_insert_with(|| {
                hosts.names.push(node.host.clone());
                hosts.nodes.push(Vec::new());
                hosts.names.len() - 1
            });
            hosts.nodes[h].push(i);
        }
        hosts
    }

    /// The groups the exact algorithm places (host by host) and the hosts with more nodes than
    /// `shards`. Such a host is refused, unless `allow_colocated`: then it is split into the
    /// fewest near-equal parts of at most `shards` nodes, each part a group of its own.
    fn groups(
        &self,
        shards: usize,
        r: usize,
        allow_colocated: bool,
    ) -> Result<(Vec<Vec<usize>>, Vec<usize>), PlanError> {
        let overloaded: Vec<usize> = (0..self.nodes.len())
            .filter(|&h| self.nodes[h].len() > shards)
            .collect();
        if overloaded.is_empty() {
            return Ok((self.nodes.clone(), overloaded));
        }
        if !allow_colocated {
            if self.names.len() < r + 1 {
                return Err(PlanError::TooFewHosts {
                    hosts: self.names.clone(),
                    needed: r + 1,
                });
            }
            // Name the worst offender; ties go to the first host listed.
            let worst = overloaded
                .iter()
                .copied()
                .max_by_key(|&h| (self.nodes[h].len(), std::cmp::Reverse(h)))
                .unwrap_or(overloaded[0]);
            return Err(PlanError::HostOverloaded {
                host: self.names[worst].clone(),
                nodes: self.nodes[worst].len(),
                shards,
            });
        }
        let mut groups = Vec::new();
        for members in &self.nodes {
            let parts = members.len().div_ceil(shards);
            let base = members.len() / parts;
            let extra = members.len() % parts;
            let mut start = 0;
            for p in 0..parts {
                let len = base + usize::from(p < extra);
                groups.push(members[start..start + len].to_vec());
                start += len;
            }
        }
        Ok((groups, overloaded))
    }
}

/// Contiguous slot ranges over `0..SLOTS`, sizes differing by at most one (larger ones first).
pub fn slot_ranges(shards: usize) -> Vec<(u16, u16)> {
    if shards == 0 {
        return Vec::new();
    }
    let base = SLOTS / shards;
    let extra = SLOTS % shards;
    let mut start = 0usize;
    (0..shards)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let range = (start as u16, (start + len - 1) as u16);
            start += len;
            range
        })
        .collect()
}

/// Masters per host group: the water-filling optimum if it is feasible, else a local optimum
/// reached from a feasible start by flow-checked single moves (see the module documentation).
fn choose_master_counts(caps: &[usize], r: usize, shards: usize) -> Vec<usize> {
    let target = water_fill(caps, shards);
    if counts_feasible(caps, &target, r) {
        return target;
    }
    improve_counts(caps, r, round_robin_counts(caps, shards))
}

/// Local search from feasible counts `m`: moves one master at a time from a host with at least two
/// more masters than another to that host, largest improvement of the sum of squares first, each
/// move kept only if the flow says it is still feasible; stops when no move helps.
fn improve_counts(caps: &[usize], r: usize, m: Vec<usize>) -> Vec<usize> {
    improve_counts_over(caps, &vec![0; caps.len()], r, m)
}

/// [`improve_counts`] when host `h` already runs `before[h]` masters that stay where they are
/// (a cluster being extended): a host's load is `before[h] + m[h]`, and only the new masters
/// (`m`) move.
fn improve_counts_over(
    caps: &[usize],
    before: &[usize],
    r: usize,
    mut m: Vec<usize>,
) -> Vec<usize> {
    let h = caps.len();
    let load = |m: &[usize], x: usize| before[x] + m[x];
    loop {
        // Candidate moves a -> b, best improvement of the sum of squares first; ties broken by
        // preferring to take from bigger-count hosts and to give to larger hosts, then by index.
        let mut moves: Vec<(usize, usize)> = Vec::new();
        for a in 0..h {
            for b in 0..h {
                if a != b && m[a] > 0 && load(&m, a) >= load(&m, b) + 2 && m[b] < caps[b] {
                    moves.push((a, b));
                }
            }
        }
        moves.sort_by_key(|&(a, b)| {
            (
                std::cmp::Reverse(load(&m, a) - load(&m, b)),
                std::cmp::Reverse(caps[b] - m[b]),
                a,
                b,
            )
        });
        let mut moved = false;
        for (a, b) in moves {
            m[a] -= 1;
            m[b] += 1;
            if counts_feasible(caps, &m, r) {
                moved = true;
                break;
            }
            m[a] += 1;
            m[b] -= 1;
        }
        if !moved {
            return m;
        }
    }
}

/// Water-filling of `total` over `caps`: every count is `min(cap, L)` or `L + 1`, the `+1`s going
/// to the hosts with the most capacity (then the earliest). Minimises the sum of squares.
fn water_fill(caps: &[usize], total: usize) -> Vec<usize> {
    let max_cap = caps.iter().copied().max().unwrap_or(0);
    let filled = |level: usize| caps.iter().map(|&c| c.min(level)).sum::<usize>();
    let mut level = 0;
    while level < max_cap && filled(level + 1) <= total {
        level += 1;
    }
    let mut counts: Vec<usize> = caps.iter().map(|&c| c.min(level)).collect();
    let mut rest = total - filled(level);
    let mut order: Vec<usize> = (0..caps.len()).filter(|&h| caps[h] > level).collect();
    order.sort_by_key(|&h| (std::cmp::Reverse(caps[h]), h));
    for h in order {
        if rest == 0 {
            break;
        }
        counts[h] += 1;
        rest -= 1;
    }
    counts
}

/// Master counts of the round-robin placement (host by host, node `k` into shard `k mod M`), with
/// each shard's master picked by a matching that minimises the largest per-host count.
fn round_robin_counts(caps: &[usize], shards: usize) -> Vec<usize> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); shards];
    let mut k = 0;
    for (h, &c) in caps.iter().enumerate() {
        for _ in 0..c {
            members[k % shards].push(h);
            k += 1;
        }
    }
    let h = caps.len();
    let lower = shards.div_ceil(h.max(1));
    for cap in lower..=shards {
        // source -> shard (1) -> host member (1) -> sink (cap)
        let (s, t) = (0, 1);
        let mut net = FlowNetwork::new(2 + shards + h);
        for (i, hosts) in members.iter().enumerate() {
            net.add_edge(s, 2 + i, 1, 0);
            for &host in hosts {
                net.add_edge(2 + i, 2 + shards + host, 1, 0);
            }
        }
        let sink_edges: Vec<EdgeId> = (0..h)
            .map(|host| net.add_edge(2 + shards + host, t, cap as i64, 0))
            .collect();
        if net.min_cost_flow(s, t, i64::MAX).flow == shards as i64 {
            return sink_edges
                .iter()
                .map(|&e| net.flow_on(e) as usize)
                .collect();
        }
    }
    // Unreachable: with cap = shards every shard can take its first member.
    water_fill(caps, shards)
}

/// Builds the transport network "replica host h -> master host g" with pair caps
/// `min(m[g], pair_cap)`, optionally with convex per-unit costs; returns it with the pair edges.
fn link_network(
    caps: &[usize],
    m: &[usize],
    r: usize,
    pair_cap: usize,
    convex: bool,
) -> (FlowNetwork, Vec<Vec<Vec<EdgeId>>>) {
    let h = caps.len();
    let (s, t) = (0, 1);
    let mut net = FlowNetwork::new(2 + 2 * h);
    let mut pairs = vec![vec![Vec::new(); h]; h];
    for a in 0..h {
        net.add_edge(s, 2 + a, (caps[a] - m[a]) as i64, 0);
        net.add_edge(2 + h + a, t, (r * m[a]) as i64, 0);
    }
    for a in 0..h {
        for g in 0..h {
            if a == g {
                continue;
            }
            let cap = m[g].min(pair_cap);
            if cap == 0 || caps[a] == m[a] {
                continue;
            }
            if convex {
                for k in 0..cap {
                    let e = net.add_edge(2 + a, 2 + h + g, 1, 2 * k as i64 + 1);
                    pairs[a][g].push(e);
                }
            } else {
                let e = net.add_edge(2 + a, 2 + h + g, cap as i64, 0);
                pairs[a][g].push(e);
            }
        }
    }
    (net, pairs)
}

/// Whether master counts `m` admit a placement with distinct hosts per shard (a max-flow).
fn counts_feasible(caps: &[usize], m: &[usize], r: usize) -> bool {
    if m.iter().zip(caps).any(|(&mh, &c)| mh > c) {
        return false;
    }
    let total: usize = m.iter().sum();
    let (mut net, _) = link_network(caps, m, r, usize::MAX, false);
    net.min_cost_flow(0, 1, i64::MAX).flow == (r * total) as i64
}

/// Link matrix `x[h][g]`: replicas on host `h` serving masters on host `g`, with the smallest
/// possible maximum and then the smallest sum of squares. `m` must be feasible.
fn spread_links(caps: &[usize], m: &[usize], r: usize) -> Vec<Vec<usize>> {
    let h = caps.len();
    let total: usize = m.iter().sum();
    let need = (r * total) as i64;
    let max_m = m.iter().copied().max().unwrap_or(0);
    let saturates = |cap: usize| {
        let (mut net, _) = link_network(caps, m, r, cap, false);
        net.min_cost_flow(0, 1, i64::MAX).flow == need
    };
    let (mut lo, mut hi) = (0usize, max_m);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if saturates(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let (mut net, pairs) = link_network(caps, m, r, lo, true);
    net.min_cost_flow(0, 1, i64::MAX);
    let mut x = vec![vec![0usize; h]; h];
    for a in 0..h {
        for g in 0..h {
            x[a][g] = pairs[a][g].iter().map(|&e| net.flow_on(e) as usize).sum();
        }
    }
    x
}

/// Turns counts and links into concrete shards `(master, replicas)`. The first `m[h]` nodes of a
/// host (input order) are its masters; each master host's incoming replicas are laid out host by
/// host (largest contribution first) and dealt round robin over its shards, which keeps every
/// shard's replicas on distinct hosts because no contribution exceeds the shard count.
fn materialize(
    groups: &[Vec<usize>],
    m: &[usize],
    x: &[Vec<usize>],
    r: usize,
) -> Vec<(usize, Vec<usize>)> {
    let h = groups.len();
    let mut pools: Vec<VecDeque<usize>> = groups
        .iter()
        .zip(m)
        .map(|(g, &mh)| g[mh..].iter().copied().collect())
        .collect();
    let mut out = Vec::new();
    for g in 0..h {
        let masters = &groups[g][..m[g]];
        if masters.is_empty() {
            continue;
        }
        let mut sources: Vec<usize> = (0..h).filter(|&a| x[a][g] > 0).collect();
        sources.sort_by_key(|&a| (std::cmp::Reverse(x[a][g]), a));
        let mut shard_replicas: Vec<Vec<usize>> = vec![Vec::with_capacity(r); masters.len()];
        let mut k = 0;
        for a in sources {
            for _ in 0..x[a][g] {
                if let Some(node) = pools[a].pop_front() {
                    shard_replicas[k % masters.len()].push(node);
                }
                k += 1;
            }
        }
        for (&master, replicas) in masters.iter().zip(shard_replicas) {
            out.push((master, replicas));
        }
    }
    out
}

#[cfg(test)]
mod tests;
