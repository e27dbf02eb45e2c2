//! The pure planner: which failovers balance masters over hosts, island by island, with the
//! fewest moves ([`plan()`]). No sockets; unit-tested against a brute-force optimum.

use super::model::{spread_of, Island, Move, Plan, Topology};
use super::Options;
use crate::admin::flow::FlowNetwork;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A shard that owns slots, in planner terms.
struct Shard {
    /// Node index of its master.
    master: usize,
    /// Host index of its master now.
    at: usize,
    /// Hosts its master may move to, with the replica to promote there (usable replicas on
    /// other hosts, one per host).
    targets: Vec<(usize, usize)>,
    /// Whether a move needs `FORCE` (the master is failing).
    force: bool,
}

/// Plans the failovers that balance masters over hosts; see the module's documentation.
///
/// # The algorithm
///
/// Hosts are vertices; a shard mastered on host `a` with a usable replica on host `b` is an edge
/// `a -> b` (failing it over moves one master from `a` to `b`). Islands are the connected
/// components of all master/replica relations (union-find); no failover moves load between
/// them, so each island is balanced on its own.
///
/// Inside an island the plan is computed in two phases:
///
/// 1. **Best reachable spread**, with the seeds' layered search: breadth-first from the most
///    loaded host (then the next most loaded, and so on), pruning visited hosts, to the nearest
///    host with at least two fewer masters; move one master along that path (the path's shards
///    each fail over once; intermediate hosts keep their count). Each such path lowers the sum
///    of squared loads by at least 2, so this ends, in a state where **no host reaches a host
///    with two fewer masters** (condition C). The window `[lo*, hi*]` of that state's loads is
///    optimal, by this cut argument:
///
///    *Lower max.* Let `h` be a host with the most masters `hi*` and `R` the hosts reachable
///    from `h`. By C every host in `R` has at least `hi* - 1`. A shard mastered in `R` has all
///    its usable members in `R` (a member outside would be an edge leaving `R`), so every
///    reachable configuration keeps at least those masters in `R`: more than
///    `|R| * (hi* - 1)` of them, so some host of `R` holds at least `hi*`. No sequence of
///    failovers makes the island's maximum smaller than `hi*`.
///
///    *Higher min.* Let `m` be a host with the fewest masters `lo*` and `Q` the hosts that
///    reach `m`. By C every host in `Q` has at most `lo* + 1`. A shard with a member in `Q`
///    is mastered in `Q` (its master's host reaches that member, hence `m`), so no
///    configuration has more masters in `Q` than now: fewer than `|Q| * (lo* + 1)`, so some
///    host of `Q` holds at most `lo*`. No sequence makes the minimum larger than `lo*`.
///
///    Hence `hi* - lo*` is the smallest spread reachable, and any configuration with that
///    spread has all loads inside `[lo*, hi*]`. (The search from the single most loaded host
///    alone would only prove the maximum optimal; the minimum needs C for every host.)
///
/// 2. **Fewest failovers.** Let `W = max(TOLERANCE, hi* - lo*)`. If the spread is already at
///    most `W`, nothing moves. Otherwise the target is any configuration whose loads fit in a
///    window `[lo, lo + W]` (with `hi* - W <= lo <= lo*`; every such window contains the
///    phase-1 state, so each is feasible). For each window a min-cost flow (successive shortest
///    paths, Bellman-Ford) finds the configuration inside it that differs from the current one
///    in the fewest shards: units flow from hosts above the window (forced, large negative cost)
///    or inside it (optional) through shard nodes (capacity 1, cost 1 to move) to hosts below
///    the window (forced) or with room (optional). Any failover sequence reaching a
///    configuration `x` makes at least as many failovers as shards whose master host differs in
///    `x`, and each such shard needs exactly one failover (to a replica on its new host), so
///    the cheapest window's cost is the minimum number of failovers, exactly what a brute-force
///    search over failover sequences finds (the unit tests compare the two on random graphs).
///    The plain greedy of the seeds is not minimal: with several equally loaded hosts it may
///    take a long path from one where another has a direct edge, and with a tolerance it may
///    stop at a near target that needs a second path later.
///
/// The flow (acyclic, since every moved shard costs 1) is split into paths from a host that
/// loses a master to one that gains it. A path's failovers are listed **far end first**: the
/// last host gains one, then each earlier host gets back the master it just gave, so an
/// intermediate host never holds more than at the path's start. A gaining host stays below the
/// starting maximum: every path starts above the window or ends below it (a path with neither
/// could be dropped, which would be cheaper), so it ends either below `lo` (and `lo` is below
/// the maximum, else all loads would already be equal) or inside a window whose top is below
/// the path's source. So the cluster's maximum never rises while the engine runs. Paths are
/// ordered busiest source first;
/// `MAXMOVES` keeps whole paths only, in that order (a cut-short path could leave an
/// intermediate host lighter than planned).
///
/// # What is guaranteed
///
/// With links as read (replicas with their link down, or failing, are left out; a failing
/// master's shard moves only with `FORCE`): per island, the final spread is `max(TOLERANCE,
/// best reachable spread)` or better, with the minimum number of failovers, unless `MAXMOVES`
/// cuts the plan. The engine re-plans after every failover from the live topology; if the
/// cluster behaves as modelled (the demoted master re-syncs), the re-plan continues the same
/// count.
pub fn plan(topo: &Topology, opts: &Options) -> Plan {
    let mut hosts: Vec<String> = topo.nodes.iter().map(|n| n.host.clone()).collect();
    hosts.sort();
    hosts.dedup();
    let hidx: HashMap<&str, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    let host_of = |node: usize| {
        hidx.get(topo.nodes[node].host.as_str())
            .copied()
            .unwrap_or(0)
    };
    let byid: HashMap<&str, usize> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut notes = Vec::new();

    // Islands: every master/replica relation links two hosts, usable or not, so that an
    // operator sees the structure rather than today's link states.
    let island = crate::admin::islands::components(
        hosts.len(),
        topo.nodes.iter().enumerate().filter_map(|(i, n)| {
            let m = n.master_id.as_deref().and_then(|m| byid.get(m))?;
            Some((host_of(i), host_of(*m)))
        }),
    );

    let mut shards: Vec<Shard> = Vec::new();
    for (i, n) in topo.nodes.iter().enumerate() {
        if n.master_id.is_some() || n.slots == 0 {
            continue;
        }
        let stuck = n.failing && !opts.force;
        if stuck {
            notes.push(format!(
                "master {} on host {} is failing: its shard is not moved (FORCE allows it)",
                n.addr, n.host
            ));
        }
        let mut targets: Vec<(usize, usize)> = Vec::new();
        for (r, rn) in topo.nodes.iter().enumerate() {
            if rn.master_id.as_deref() != Some(n.id.as_str()) || stuck {
                continue;
            }
            if rn.failing {
                notes.push(format!("replica {} is failing: not promoted", rn.addr));
                continue;
            }
            // A dead master cannot have a linked replica; FORCE accepts that.
            if !(rn.link_up || n.failing && opts.force) {
                notes.push(format!(
                    "replica {} has its link to master {} down: not promoted",
                    rn.addr, n.addr
                ));
                continue;
            }
            let h = host_of(r);
            if h != host_of(i) && !targets.iter().any(|t| t.0 == h) {
                targets.push((h, r));
            }
        }
        shards.push(Shard {
            master: i,
            at: host_of(i),
            targets,
            force: n.failing,
        });
    }
    let mut load = vec![0usize; hosts.len()];
    for s in &shards {
        load[s.at] += 1;
    }

    // Group hosts by island, in host order.
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (h, &r) in island.iter().enumerate() {
        groups.entry(r).or_default().push(h);
    }

    let mut islands = Vec::new();
    let mut paths: Vec<(usize, Vec<(usize, usize)>)> = Vec::new(); // (island, [(shard, to)])
    for members in groups.values() {
        let isl_shards: Vec<usize> = (0..shards.len())
            .filter(|&s| members.contains(&shards[s].at))
            .collect();
        let (best, found) = balance_island(members, &isl_shards, &shards, &load, opts.tolerance);
        let idx = islands.len();
        islands.push(Island {
            hosts: members.iter().map(|&h| hosts[h].clone()).collect(),
            before: members.iter().map(|&h| load[h]).collect(),
            after: Vec::new(),
            best_spread: best,
        });
        paths.extend(found.into_iter().map(|p| (idx, p)));
    }

    // Busiest source first, then the idlest destination; deterministic on ties.
    let key = |p: &(usize, Vec<(usize, usize)>)| {
        let src = p.1.first().map(|m| shards[m.0].at).unwrap_or(0);
        let dst = p.1.last().map(|m| m.1).unwrap_or(0);
        (std::cmp::Reverse(load[src]), load[dst], p.1.len(), src, dst)
    };
    paths.sort_by_key(key);

    let mut moves = Vec::new();
    let mut after = load.clone();
    let mut truncated = false;
    for (n, (_, path)) in paths.iter().enumerate() {
        if let Some(k) = opts.max_moves {
            if moves.len() + path.len() > k {
                truncated = true;
                break;
            }
        }
        if let (Some(first), Some(last)) = (path.first(), path.last()) {
            after[shards[first.0].at] -= 1;
            after[last.1] += 1;
        }
        // Far end first.
        for &(s, to) in path.iter().rev() {
            let sh = &shards[s];
            let Some(&(_, replica)) = sh.targets.iter().find(|t| t.0 == to) else {
                continue;
            };
            let (m, r) = (&topo.nodes[sh.master], &topo.nodes[replica]);
            moves.push(Move {
                path: n + 1,
                replica_id: r.id.clone(),
                replica_addr: r.addr.clone(),
                master_id: m.id.clone(),
                master_addr: m.addr.clone(),
                from_host: hosts[sh.at].clone(),
                to_host: hosts[to].clone(),
                force: sh.force,
            });
        }
    }
    for isl in islands.iter_mut() {
        isl.after = isl
            .hosts
            .iter()
            .map(|h| hidx.get(h.as_str()).map(|&i| after[i]).unwrap_or(0))
            .collect();
    }
    islands.sort_by_key(|i| (std::cmp::Reverse(i.spread_before()), i.hosts.clone()));
    Plan {
        moves,
        islands,
        notes,
        truncated,
    }
}

/// Plans one island: returns the best reachable spread and the paths (lists of
/// `(shard, destination host)` from the losing host to the gaining one).
fn balance_island(
    members: &[usize],
    isl_shards: &[usize],
    shards: &[Shard],
    load: &[usize],
    tolerance: usize,
) -> (usize, Vec<Vec<(usize, usize)>>) {
    let spread_now = spread_of(members.iter().map(|&h| load[h]));
    // Phase 1 on a scratch copy: the seeds' layered search until condition C holds.
    let mut at: Vec<usize> = shards.iter().map(|s| s.at).collect();
    let mut scratch = load.to_vec();
    loop {
        let mut sources = members.to_vec();
        sources.sort_by_key(|&h| (std::cmp::Reverse(scratch[h]), h));
        let path = sources.iter().find_map(|&src| {
            layered_search(src, isl_shards, shards, &at, |h| {
                scratch[h] + 2 <= scratch[src]
            })
        });
        let Some(path) = path else { break };
        if let (Some(first), Some(last)) = (path.first(), path.last()) {
            scratch[at[first.0]] -= 1;
            scratch[last.1] += 1;
        }
        for &(s, to) in &path {
            at[s] = to;
        }
    }
    let lo_best = members.iter().map(|&h| scratch[h]).min().unwrap_or(0);
    let hi_best = members.iter().map(|&h| scratch[h]).max().unwrap_or(0);
    let best = hi_best - lo_best;
    let width = tolerance.max(best);
    if spread_now <= width {
        return (best, Vec::new());
    }
    // Phase 2: the cheapest window.
    // (failovers, resulting spread, the moves)
    type Choice = (usize, usize, Vec<(usize, usize)>);
    let mut chosen: Option<Choice> = None;
    for lo in hi_best.saturating_sub(width)..=lo_best {
        let Some(moved) = cheapest_moves(members, isl_shards, shards, load, lo, lo + width) else {
            continue;
        };
        let mut l = load.to_vec();
        for &(s, to) in &moved {
            l[shards[s].at] -= 1;
            l[to] += 1;
        }
        let sp = spread_of(members.iter().map(|&h| l[h]));
        if chosen
            .as_ref()
            .is_none_or(|c| (moved.len(), sp) < (c.0, c.1))
        {
            chosen = Some((moved.len(), sp, moved));
        }
    }
    let moved = chosen.map(|c| c.2).unwrap_or_default();
    (best, split_paths(members, shards, load, &moved))
}

/// Breadth-first search from `src` along shard edges (pruning visited hosts) for the nearest
/// host satisfying `wanted`; returns the path as `(shard, destination)` hops.
fn layered_search(
    src: usize,
    isl_shards: &[usize],
    shards: &[Shard],
    at: &[usize],
    wanted: impl Fn(usize) -> bool,
) -> Option<Vec<(usize, usize)>> {
    let mut prev: HashMap<usize, (usize, usize)> = HashMap::new(); // host -> (from host, shard)
    let mut queue = VecDeque::from([src]);
    let mut seen = vec![src];
    while let Some(h) = queue.pop_front() {
        if h != src && wanted(h) {
            let mut path = Vec::new();
            let mut cur = h;
            while cur != src {
                let (from, s) = prev[&cur];
                path.push((s, cur));
                cur = from;
            }
            path.reverse();
            return Some(path);
        }
        for &s in isl_shards.iter().filter(|&&s| at[s] == h) {
            let sh = &shards[s];
            // Hosts a shard can be mastered on: its original master's host and its targets.
            let options = std::iter::once(sh.at).chain(sh.targets.iter().map(|t| t.0));
            for to in options {
                if !seen.contains(&to) {
                    seen.push(to);
                    prev.insert(to, (h, s));
                    queue.push_back(to);
                }
            }
        }
    }
    None
}

/// Min-cost flow: the fewest shards to move so every island host's load lands in `[lo, hi]`.
/// `None` if the window cannot be reached.
fn cheapest_moves(
    members: &[usize],
    isl_shards: &[usize],
    shards: &[Shard],
    load: &[usize],
    lo: usize,
    hi: usize,
) -> Option<Vec<(usize, usize)>> {
    let hn = members.len();
    let pos: HashMap<usize, usize> = members.iter().enumerate().map(|(i, &h)| (h, i)).collect();
    let (src, sink) = (0, 1);
    let host_node = |h: usize| 2 + pos[&h];
    let mut g = FlowNetwork::new(2 + hn + isl_shards.len());
    // Outweighs any path of unit-cost moves, so every forced unit flows if it can.
    let big = 4 * (g.node_count() as i64 + 1);
    let mut forced = Vec::new();
    let mut moves = Vec::new();
    for (k, &s) in isl_shards.iter().enumerate() {
        let sn = 2 + hn + k;
        g.add_edge(host_node(shards[s].at), sn, 1, 0);
        for &(to, _) in &shards[s].targets {
            if pos.contains_key(&to) {
                moves.push((g.add_edge(sn, host_node(to), 1, 1), s, to));
            }
        }
    }
    for &h in members {
        let l = load[h] as i64;
        let (lo, hi) = (lo as i64, hi as i64);
        let must_out = (l - hi).max(0);
        let may_out = (l - lo).max(0) - must_out;
        let must_in = (lo - l).max(0);
        let may_in = (hi - l).max(0) - must_in;
        if must_out > 0 {
            forced.push(g.add_edge(src, host_node(h), must_out, -big));
        }
        if may_out > 0 {
            g.add_edge(src, host_node(h), may_out, 0);
        }
        if must_in > 0 {
            forced.push(g.add_edge(host_node(h), sink, must_in, -big));
        }
        if may_in > 0 {
            g.add_edge(host_node(h), sink, may_in, 0);
        }
    }
    g.cheapest_flow(src, sink);
    if forced.iter().any(|&e| g.flow_on(e) < g.capacity(e)) {
        return None;
    }
    Some(
        moves
            .into_iter()
            .filter(|&(e, _, _)| g.flow_on(e) > 0)
            .map(|(_, s, to)| (s, to))
            .collect(),
    )
}

/// Splits a set of shard moves into paths from a host that ends with fewer masters to one that
/// ends with more (a min-cost solution has no cycles: dropping one would be cheaper).
fn split_paths(
    members: &[usize],
    shards: &[Shard],
    load: &[usize],
    moved: &[(usize, usize)],
) -> Vec<Vec<(usize, usize)>> {
    let mut out_of: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    let mut net: HashMap<usize, i64> = HashMap::new();
    for &(s, to) in moved {
        out_of.entry(shards[s].at).or_default().push((s, to));
        *net.entry(shards[s].at).or_default() -= 1;
        *net.entry(to).or_default() += 1;
    }
    // Start at the busiest losing hosts.
    let mut starts: Vec<usize> = members
        .iter()
        .copied()
        .filter(|h| net.get(h).copied().unwrap_or(0) < 0)
        .collect();
    starts.sort_by_key(|&h| (std::cmp::Reverse(load[h]), h));
    let mut paths = Vec::new();
    for h in starts {
        while net.get(&h).copied().unwrap_or(0) < 0 {
            let mut path = Vec::new();
            let mut cur = h;
            while let Some(hop) = out_of.get_mut(&cur).and_then(Vec::pop) {
                path.push(hop);
                cur = hop.1;
                // End where a host gains net; otherwise the unit passes through.
                if net.get(&cur).copied().unwrap_or(0) > 0 {
                    break;
                }
            }
            if path.is_empty() {
                break;
            }
            *net.entry(h).or_default() += 1;
            *net.entry(cur).or_default() -= 1;
            paths.push(path);
        }
    }
    paths
}
