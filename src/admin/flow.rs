//! Min-cost flow on small networks, shared by the placement planner ([`crate::admin::placement`]) and
//! the master rebalance planner ([`crate::admin::rebalance`]).
//!
//! Both planners build networks of at most a few thousand edges, so the algorithm favours being
//! obviously right and reproducible over asymptotics: *successive shortest paths*, where each
//! round finds a cheapest `s -> t` path in the residual network with a queue-based Bellman-Ford
//! (SPFA) search and pushes as much flow along it as it takes.
//!
//! # Invariants
//! * **Optimality.** Bellman-Ford copes with negative edge costs, so edges may have negative costs
//!   as long as the network as built has no cycle of negative total cost (the search panics if it
//!   meets one, see [`FlowNetwork::min_cost_flow`]). Augmenting along cheapest paths never
//!   creates a negative residual cycle, so after every round the flow is the cheapest among all
//!   flows of its value.
//! * **Determinism.** Edges are scanned in the order they were added, the queue is FIFO and a
//!   distance is only replaced by a strictly smaller one. Among equally cheap paths the search
//!   therefore keeps the first it found, and the same network built in the same order always
//!   yields the same flow on every edge, so plans derived from it are reproducible.
//!
//! # Arithmetic
//! Capacities and costs are `i64`. Path costs and the reported total cost saturate instead of
//! overflowing; keep `|cost| * capacity` summed over all edges well inside `i64` (both planners'
//! costs and capacities are small multiples of the cluster's node count).

use std::collections::VecDeque;

/// Names an edge added with [`FlowNetwork::add_edge`]; pass it to [`FlowNetwork::flow_on`] and
/// [`FlowNetwork::capacity`]. Only meaningful for the network that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(usize);

/// What one call to [`FlowNetwork::min_cost_flow`] or [`FlowNetwork::cheapest_flow`] added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCost {
    /// Units of flow sent from the source to the sink by this call.
    pub flow: i64,
    /// Total cost of those units (the sum of flow times cost over the edges it changed).
    pub cost: i64,
}

/// One direction of an edge in the residual network. Edges are stored in pairs: the forward arc
/// at an even index `2k` and its reverse twin at `2k + 1`, so `a ^ 1` is the twin of arc `a`.
#[derive(Clone, Debug)]
struct Arc {
    /// Head node.
    to: usize,
    /// Residual capacity: how much more flow this arc can take.
    residual: i64,
    /// Cost per unit (the twin's cost is the negation).
    cost: i64,
}

/// A directed network with per-edge capacities and per-unit costs, plus the flow currently on
/// it. Nodes are `0..nodes`; flow starts at zero and only grows through
/// [`min_cost_flow`](Self::min_cost_flow) and [`cheapest_flow`](Self::cheapest_flow), which may
/// be called repeatedly to extend the flow already present.
#[derive(Clone, Debug)]
pub struct FlowNetwork {
    /// Outgoing arc indices per node, in insertion order (this order breaks ties).
    adj: Vec<Vec<usize>>,
    /// Forward and reverse arcs, paired as described on [`Arc`].
    arcs: Vec<Arc>,
    /// Capacity each edge was created with, indexed by [`EdgeId`].
    capacity: Vec<i64>,
}

impl FlowNetwork {
    /// An empty network on nodes `0..nodes`.
    pub fn new(nodes: usize) -> Self {
        FlowNetwork {
            adj: vec![Vec::new(); nodes],
            arcs: Vec::new(),
            capacity: Vec::new(),
        }
    }

    /// The number of nodes the network was created with.
    pub fn node_count(&self) -> usize {
        self.adj.len()
    }

    /// Adds a directed edge `from -> to` that carries up to `capacity` units at `cost` per unit,
    /// and returns its id. Parallel edges and zero capacities are allowed; a zero-capacity edge
    /// never carries flow.
    ///
    /// # Panics
    /// If `from` or `to` is not a node of the network or `capacity` is negative: both are
    /// mistakes in the code building the network.
    pub fn add_edge(&mut self, from: usize, to: usize, capacity: i64, cost: i64) -> EdgeId {
        let n = self.node_count();
        assert!(
            from < n && to < n,
            "edge {from} -> {to} outside a network of {n} nodes"
        );
        assert!(
            capacity >= 0,
            "negative capacity {capacity} on {from} -> {to}"
        );
        let id = EdgeId(self.capacity.len());
        let forward = self.arcs.len();
        self.adj[from].push(forward);
        self.arcs.push(Arc {
            to,
            residual: capacity,
            cost,
        });
        self.adj[to].push(forward + 1);
        self.arcs.push(Arc {
            to: from,
            residual: 0,
            cost: cost.saturating_neg(),
        });
        self.capacity.push(capacity);
        id
    }

    /// The capacity `edge` was created with.
    pub fn capacity(&self, edge: EdgeId) -> i64 {
        self.capacity[edge.0]
    }

    /// The flow currently on `edge`, between zero and its [`capacity`](Self::capacity).
    pub fn flow_on(&self, edge: EdgeId) -> i64 {
        self.capacity[edge.0] - self.arcs[2 * edge.0].residual
    }

    /// Sends up to `limit` more units from `s` to `t` (`i64::MAX` for as many as the network
    /// takes, i.e. a maximum flow), cheapest paths first, and returns how much was sent and what
    /// it cost. Afterwards the total flow on the network is the cheapest among all flows of its
    /// value. With all costs zero this is a plain max-flow. Sends nothing when `s == t` or
    /// `limit <= 0`.
    ///
    /// # Panics
    /// If the residual network has a negative-cost cycle reachable from `s`, which cannot happen
    /// when the network as built had none.
    pub fn min_cost_flow(&mut self, s: usize, t: usize, limit: i64) -> FlowCost {
        self.augment(s, t, limit, i64::MAX)
    }

    /// Sends flow from `s` to `t` along cheapest paths for as long as a path of negative cost
    /// remains, and returns what was sent: the result is the cheapest flow of *any* value
    /// (so `cost <= 0`). This is how a planner forces edges to be used: give them a large
    /// negative cost and check afterwards whether they are saturated.
    ///
    /// # Panics
    /// As [`min_cost_flow`](Self::min_cost_flow).
    pub fn cheapest_flow(&mut self, s: usize, t: usize) -> FlowCost {
        self.augment(s, t, i64::MAX, 0)
    }

    /// Successive shortest paths: augments along a cheapest `s -> t` path while its cost is below
    /// `cost_below` and fewer than `limit` units have been sent.
    fn augment(&mut self, s: usize, t: usize, limit: i64, cost_below: i64) -> FlowCost {
        let mut done = FlowCost::default();
        if s == t {
            return done;
        }
        while done.flow < limit {
            let Some((dist, via)) = self.shortest_path(s, t) else {
                break;
            };
            if dist >= cost_below {
                break;
            }
            // The bottleneck along the path, walking back from the sink.
            let mut push = limit - done.flow;
            let mut v = t;
            while v != s {
                let a = via[v];
                push = push.min(self.arcs[a].residual);
                v = self.arcs[a ^ 1].to;
            }
            let mut v = t;
            while v != s {
                let a = via[v];
                self.arcs[a].residual -= push;
                self.arcs[a ^ 1].residual += push;
                v = self.arcs[a ^ 1].to;
            }
            done.flow += push;
            done.cost = done.cost.saturating_add(push.saturating_mul(dist));
        }
        done
    }

    /// Queue-based Bellman-Ford over arcs with residual capacity. Returns the cost of a cheapest
    /// `s -> t` path and, per node, the arc it was reached by; `None` if `t` is unreachable.
    fn shortest_path(&self, s: usize, t: usize) -> Option<(i64, Vec<usize>)> {
        let n = self.node_count();
        let mut dist = vec![i64::MAX; n];
        let mut via = vec![usize::MAX; n];
        // Arcs on the path behind each label; reaching `n` means the path repeats a node, which
        // strict improvement only allows around a negative cycle.
        let mut hops = vec![0usize; n];
        let mut queued = vec![false; n];
        let mut queue = VecDeque::from([s]);
        dist[s] = 0;
        queued[s] = true;
        while let Some(u) = queue.pop_front() {
            queued[u] = false;
            for &a in &self.adj[u] {
                let arc = &self.arcs[a];
                let through = dist[u].saturating_add(arc.cost);
                if arc.residual > 0 && through < dist[arc.to] {
                    let v = arc.to;
                    dist[v] = through;
                    via[v] = a;
                    hops[v] = hops[u] + 1;
                    assert!(hops[v] < n, "negative-cost cycle in the flow network");
                    if !queued[v] {
                        queued[v] = true;
                        queue.push_back(v);
                    }
                }
            }
        }
        (dist[t] != i64::MAX).then_some((dist[t], via))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// `(from, to, capacity, cost)`.
    type Edge = (usize, usize, i64, i64);
    /// An [`Edge`] with the id the network gave it.
    type Added = (usize, usize, i64, i64, EdgeId);

    /// Checks capacity bounds and conservation (except at `s` and `t`); returns the flow's value
    /// (net out of `s`) and cost.
    fn check_flow(net: &FlowNetwork, edges: &[Added], s: usize) -> (i64, i64) {
        let mut balance = vec![0i64; net.node_count()];
        let mut cost = 0;
        for &(u, v, cap, c, e) in edges {
            let f = net.flow_on(e);
            assert!((0..=cap).contains(&f), "flow {f} outside 0..={cap}");
            assert_eq!(net.capacity(e), cap);
            balance[u] -= f;
            balance[v] += f;
            cost += f * c;
        }
        let t = net.node_count() - 1;
        for (v, &b) in balance.iter().enumerate() {
            if v != s && v != t {
                assert_eq!(b, 0, "conservation broken at node {v}");
            }
        }
        (-balance[s], cost)
    }

    /// For a graph with source 0 and sink `n - 1`: the least cost of a feasible flow of each value
    /// `0..=max`, by trying every assignment of flows to edges (index = value).
    fn brute_force(n: usize, edges: &[Edge]) -> Vec<i64> {
        let mut best: Vec<Option<i64>> = Vec::new();
        let mut f = vec![0i64; edges.len()];
        loop {
            let mut balance = vec![0i64; n];
            let mut cost = 0;
            for (&(u, v, _, c), &x) in edges.iter().zip(&f) {
                balance[u] -= x;
                balance[v] += x;
                cost += x * c;
            }
            if balance[1..n - 1].iter().all(|&b| b == 0) && balance[0] <= 0 {
                let value = (-balance[0]) as usize;
                if best.len() <= value {
                    best.resize(value + 1, None);
                }
                best[value] = Some(best[value].map_or(cost, |b: i64| b.min(cost)));
            }
            // Next assignment, odometer style.
            let mut i = 0;
            while i < f.len() && f[i] == edges[i].2 {
                f[i] = 0;
                i += 1;
            }
            if i == f.len() {
                break;
            }
            f[i] += 1;
        }
        // Flow values form an interval, so every value up to the maximum is reachable.
        best.into_iter()
            .map(|b| b.expect("flow values are contiguous"))
            .collect()
    }

    /// A random graph on `n` nodes: either acyclic (edges go up in index) with costs that may be
    /// negative, or arbitrary with non-negative costs, so it never has a negative cycle.
    fn random_graph(rng: &mut StdRng) -> (usize, Vec<Edge>) {
        let n = rng.gen_range(2..=5usize);
        let acyclic = rng.gen_bool(0.5);
        let m = rng.gen_range(0..=7usize);
        let mut edges = Vec::new();
        for _ in 0..m {
            let mut u = rng.gen_range(0..n);
            let mut v = rng.gen_range(0..n);
            if u == v {
                continue;
            }
            if acyclic && u > v {
                std::mem::swap(&mut u, &mut v);
            }
            let cap = rng.gen_range(0..=2i64);
            let cost = if acyclic {
                rng.gen_range(-3..=4i64)
            } else {
                rng.gen_range(0..=4i64)
            };
            edges.push((u, v, cap, cost));
        }
        (n, edges)
    }

    fn build(n: usize, edges: &[Edge]) -> (FlowNetwork, Vec<Added>) {
        let mut net = FlowNetwork::new(n);
        let ids = edges
            .iter()
            .map(|&(u, v, cap, c)| (u, v, cap, c, net.add_edge(u, v, cap, c)))
            .collect();
        (net, ids)
    }

    #[test]
    fn textbook_network() {
        // s=0, t=3. The cheapest route 0-1-3 (cost 2) takes 2 units, then 0-2-3 and 0-1-2-3
        // (cost 4 each) take 2 and 1: max flow 5 at cost 16.
        let mut net = FlowNetwork::new(4);
        let a = net.add_edge(0, 1, 3, 1);
        let b = net.add_edge(0, 2, 2, 2);
        let c = net.add_edge(1, 3, 2, 1);
        let d = net.add_edge(2, 3, 3, 2);
        let e = net.add_edge(1, 2, 1, 1);
        let got = net.min_cost_flow(0, 3, i64::MAX);
        assert_eq!(got, FlowCost { flow: 5, cost: 16 });
        assert_eq!([a, b, c, d, e].map(|x| net.flow_on(x)), [3, 2, 2, 3, 1]);
    }

    #[test]
    fn prefers_a_cheap_long_path_and_reroutes() {
        // The classic case where the second augmentation cancels flow on the first path's
        // middle edge (a negative residual cost): 0-1-2-3 first (cost 3), then 0-2 + 2->1 back +
        // 1-3, ending with both outer routes used and the middle edge empty.
        let mut net = FlowNetwork::new(4);
        let e01 = net.add_edge(0, 1, 1, 1);
        let e02 = net.add_edge(0, 2, 1, 5);
        let e12 = net.add_edge(1, 2, 1, 1);
        let e13 = net.add_edge(1, 3, 1, 5);
        let e23 = net.add_edge(2, 3, 1, 1);
        assert_eq!(net.min_cost_flow(0, 3, 1), FlowCost { flow: 1, cost: 3 });
        assert_eq!(net.flow_on(e12), 1);
        assert_eq!(
            net.min_cost_flow(0, 3, i64::MAX),
            FlowCost { flow: 1, cost: 9 }
        );
        assert_eq!(
            [e01, e02, e12, e13, e23].map(|e| net.flow_on(e)),
            [1, 1, 0, 1, 1]
        );
    }

    #[test]
    fn zero_capacity_unreachable_and_degenerate_calls() {
        let mut net = FlowNetwork::new(4);
        let z = net.add_edge(0, 1, 0, -10);
        let x = net.add_edge(1, 3, 5, 1);
        net.add_edge(2, 3, 5, 1); // 2 has no way in
        assert_eq!(net.min_cost_flow(0, 3, i64::MAX), FlowCost::default());
        assert_eq!(net.cheapest_flow(0, 3), FlowCost::default());
        assert_eq!((net.flow_on(z), net.flow_on(x)), (0, 0));
        assert_eq!(net.min_cost_flow(1, 1, i64::MAX), FlowCost::default());
        assert_eq!(net.min_cost_flow(1, 3, 0), FlowCost::default());
        assert_eq!(net.min_cost_flow(1, 3, -4), FlowCost::default());
        assert_eq!(net.flow_on(x), 0);
        // A node with no edges at all, and a network with no edges.
        assert_eq!(
            FlowNetwork::new(2).min_cost_flow(0, 1, 9),
            FlowCost::default()
        );
    }

    #[test]
    fn limit_splits_an_augmentation() {
        let mut net = FlowNetwork::new(3);
        let a = net.add_edge(0, 1, 10, 2);
        net.add_edge(1, 2, 10, 3);
        assert_eq!(net.min_cost_flow(0, 2, 4), FlowCost { flow: 4, cost: 20 });
        assert_eq!(net.flow_on(a), 4);
        assert_eq!(
            net.min_cost_flow(0, 2, i64::MAX),
            FlowCost { flow: 6, cost: 30 }
        );
        assert_eq!(net.flow_on(a), 10);
    }

    #[test]
    fn cheapest_flow_stops_at_non_negative_paths() {
        // Two forced units (cost -100 each) must go through; the optional route costs +1 and
        // stays empty; a -1 route is taken.
        let mut net = FlowNetwork::new(5);
        let forced = net.add_edge(0, 1, 2, -100);
        let optional = net.add_edge(0, 2, 3, 0);
        let bonus = net.add_edge(0, 3, 1, -1);
        net.add_edge(1, 4, 5, 1);
        net.add_edge(2, 4, 5, 1);
        net.add_edge(3, 4, 5, 0);
        let got = net.cheapest_flow(0, 4);
        assert_eq!(
            got,
            FlowCost {
                flow: 3,
                cost: 2 * -99 - 1
            }
        );
        assert_eq!(net.flow_on(forced), net.capacity(forced));
        assert_eq!(net.flow_on(optional), 0);
        assert_eq!(net.flow_on(bonus), 1);
        // Nothing cheaper is left, so a second call sends nothing.
        assert_eq!(net.cheapest_flow(0, 4), FlowCost::default());
    }

    #[test]
    fn ties_go_to_the_edge_added_first() {
        for first in [1, 2] {
            let second = 3 - first;
            let mut net = FlowNetwork::new(4);
            let a = net.add_edge(0, first, 1, 1);
            let b = net.add_edge(0, second, 1, 1);
            net.add_edge(1, 3, 1, 1);
            net.add_edge(2, 3, 1, 1);
            assert_eq!(net.min_cost_flow(0, 3, 1), FlowCost { flow: 1, cost: 2 });
            assert_eq!((net.flow_on(a), net.flow_on(b)), (1, 0));
        }
    }

    #[test]
    fn matches_brute_force_on_random_small_graphs() {
        let mut rng = StdRng::seed_from_u64(0xF10_0001);
        let mut nontrivial = 0;
        for _ in 0..400 {
            let (n, edges) = random_graph(&mut rng);
            let (s, t) = (0, n - 1);
            let best = brute_force(n, &edges);
            let max = best.len() as i64 - 1;
            nontrivial += usize::from(max >= 2);

            // Maximum flow of least cost.
            let (mut net, ids) = build(n, &edges);
            let got = net.min_cost_flow(s, t, i64::MAX);
            assert_eq!(
                got,
                FlowCost {
                    flow: max,
                    cost: best[max as usize]
                },
                "{edges:?}"
            );
            assert_eq!(check_flow(&net, &ids, s), (got.flow, got.cost));

            // Every flow limit, in one go and in unit steps.
            for limit in 0..=max + 1 {
                let want = limit.min(max);
                let (mut net, ids) = build(n, &edges);
                let got = net.min_cost_flow(s, t, limit);
                assert_eq!(
                    got,
                    FlowCost {
                        flow: want,
                        cost: best[want as usize]
                    },
                    "{edges:?}"
                );
                assert_eq!(check_flow(&net, &ids, s), (got.flow, got.cost));
            }
            let (mut net, ids) = build(n, &edges);
            let mut cost = 0;
            for k in 1..=max {
                cost += net.min_cost_flow(s, t, 1).cost;
                assert_eq!(cost, best[k as usize], "{edges:?}");
            }
            assert_eq!(check_flow(&net, &ids, s).0, max);

            // Cheapest flow of any value.
            let (mut net, ids) = build(n, &edges);
            let got = net.cheapest_flow(s, t);
            let cheapest = best.iter().copied().min().unwrap_or(0);
            assert_eq!(got.cost, cheapest, "{edges:?}");
            assert_eq!(best[got.flow as usize], cheapest);
            assert_eq!(check_flow(&net, &ids, s), (got.flow, got.cost));
        }
        assert!(
            nontrivial > 40,
            "too few graphs with flow >= 2: {nontrivial}"
        );
    }

    #[test]
    fn same_network_same_flows() {
        let mut rng = StdRng::seed_from_u64(0xF10_0002);
        for _ in 0..50 {
            let n = rng.gen_range(3..=12usize);
            // Many equal costs, so ties are everywhere.
            let edges: Vec<Edge> = (0..rng.gen_range(0..40))
                .map(|_| {
                    let u = rng.gen_range(0..n);
                    let v = rng.gen_range(0..n);
                    (u, v, rng.gen_range(0..=3i64), rng.gen_range(0..=1i64))
                })
                .collect();
            let run = || {
                let (mut net, ids) = build(n, &edges);
                let got = net.min_cost_flow(0, n - 1, i64::MAX);
                let flows: Vec<i64> = ids.iter().map(|e| net.flow_on(e.4)).collect();
                (got, flows)
            };
            assert_eq!(run(), run());
        }
    }

    #[test]
    #[should_panic(expected = "negative-cost cycle")]
    fn negative_cycle_is_refused() {
        let mut net = FlowNetwork::new(4);
        net.add_edge(0, 1, 1, 0);
        net.add_edge(1, 2, 1, -2);
        net.add_edge(2, 1, 1, 1);
        net.add_edge(2, 3, 1, 0);
        net.min_cost_flow(0, 3, i64::MAX);
    }

    #[test]
    #[should_panic(expected = "outside a network")]
    fn edge_to_a_missing_node_is_refused() {
        FlowNetwork::new(2).add_edge(0, 2, 1, 0);
    }
}
