//! Unit tests of the addition planners, against brute force on small layouts.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

/// `sizes[i]` new nodes on host `10.0.0.<i+1>`, ports from 8000.
fn layout(sizes: &[usize]) -> Vec<NodeSpec> {
    let mut nodes = Vec::new();
    for (h, &count) in sizes.iter().enumerate() {
        for k in 0..count {
            nodes.push(NodeSpec::new(format!("10.0.0.{}", h + 1), 8000 + k as u16));
        }
    }
    nodes
}

fn host(i: usize) -> String {
    format!("10.0.0.{}", i + 1)
}

fn before(counts: &[usize]) -> BTreeMap<String, usize> {
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (host(i), c))
        .collect()
}

fn strict(replicas: usize) -> PlanOptions {
    PlanOptions {
        replicas,
        allow_colocated: false,
    }
}

/// Masters per host after the add (`before` plus the new masters), in host order.
fn totals(nodes: &[NodeSpec], b: &BTreeMap<String, usize>, shards: &[NewShard]) -> Vec<usize> {
    let mut out = b.clone();
    for n in nodes {
        out.entry(n.host.clone()).or_insert(0);
    }
    for s in shards {
        *out.entry(nodes[s.master].host.clone()).or_insert(0) += 1;
    }
    out.into_values().collect()
}

fn sum_sq(v: &[usize]) -> usize {
    v.iter().map(|&x| x * x).sum()
}

/// Every node once, `r` replicas per shard, and (when `distinct`) distinct hosts per shard.
fn check_shape(nodes: &[NodeSpec], r: usize, a: &Addition, distinct: bool) {
    assert_eq!(a.shards.len(), nodes.len() / (r + 1));
    let mut used = vec![false; nodes.len()];
    for s in &a.shards {
        assert_eq!(s.replicas.len(), r);
        let members: Vec<usize> = std::iter::once(s.master)
            .chain(s.replicas.iter().copied())
            .collect();
        for &x in &members {
            assert!(!used[x], "node {x} twice");
            used[x] = true;
        }
        if distinct {
            let hs: HashSet<&str> = members.iter().map(|&x| nodes[x].host.as_str()).collect();
            assert_eq!(hs.len(), r + 1, "shard {s:?} repeats a host");
        }
    }
    assert!(used.iter().all(|&u| u));
    assert!(a.shards.windows(2).all(|w| w[0].master < w[1].master));
}

/// The smallest sum of squares of the totals over every valid placement (None if none).
fn best_totals(nodes: &[NodeSpec], r: usize, b: &BTreeMap<String, usize>) -> Option<usize> {
    let shards = nodes.len() / (r + 1);
    let mut best = None;
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); shards];
    fn rec(
        i: usize,
        nodes: &[NodeSpec],
        r: usize,
        b: &BTreeMap<String, usize>,
        groups: &mut Vec<Vec<usize>>,
        best: &mut Option<usize>,
    ) {
        if i == nodes.len() {
            // Every choice of master per shard.
            let mut choice = vec![0usize; groups.len()];
            loop {
                let shards: Vec<NewShard> = groups
                    .iter()
                    .zip(&choice)
                    .map(|(g, &c)| NewShard {
                        master: g[c],
                        replicas: Vec::new(),
                    })
                    .collect();
                let v = sum_sq(&totals(nodes, b, &shards));
                *best = Some(best.map_or(v, |x: usize| x.min(v)));
                let mut k = 0;
                while k < choice.len() {
                    choice[k] += 1;
                    if choice[k] <= r {
                        break;
                    }
                    choice[k] = 0;
                    k += 1;
                }
                if k == choice.len() {
                    return;
                }
            }
        }
        let first_empty = groups
            .iter()
            .position(Vec::is_empty)
            .unwrap_or(groups.len());
        for g in 0..groups.len().min(first_empty + 1) {
            if groups[g].len() < r + 1 && groups[g].iter().all(|&x| nodes[x].host != nodes[i].host)
            {
                groups[g].push(i);
                rec(i + 1, nodes, r, b, groups, best);
                groups[g].pop();
            }
        }
    }
    rec(0, nodes, r, b, &mut groups, &mut best);
    best
}

#[test]
fn two_shards_on_two_new_hosts() {
    // A 3x1 cluster on hosts 1-3; four new nodes on hosts 4 and 5.
    let nodes = layout(&[0, 0, 0, 2, 2]);
    let b = before(&[1, 1, 1]);
    let a = plan_addition(&nodes, &b, &strict(1)).expect("plan");
    check_shape(&nodes, 1, &a, true);
    assert_eq!(totals(&nodes, &b, &a.shards), vec![1, 1, 1, 1, 1]);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
}

#[test]
fn new_masters_go_where_the_cluster_has_fewest() {
    // Host 1 already runs two masters, host 3 none: the new master goes to host 3 and its
    // replica to host 1, although host 1 is listed first.
    let nodes = vec![
        NodeSpec::new("10.0.0.1", 8000),
        NodeSpec::new("10.0.0.3", 8000),
    ];
    let b = before(&[2, 1, 0]);
    let a = plan_addition(&nodes, &b, &strict(1)).expect("plan");
    assert_eq!(
        a.shards,
        vec![NewShard {
            master: 1,
            replicas: vec![0]
        }]
    );
    // And a warning when a host ends up with half the masters.
    let b = before(&[0, 0, 1]);
    let a = plan_addition(&nodes, &b, &strict(1)).expect("plan");
    assert_eq!(a.shards[0].master, 0);
    assert!(
        a.warnings.iter().any(|w| w.contains("1 of 2 masters")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn refusals_name_the_problem() {
    let b = before(&[1, 1, 1]);
    let e = plan_addition(&layout(&[3]), &b, &strict(1)).expect_err("not divisible");
    assert!(e.to_string().contains("not divisible"), "{e}");
    let e = plan_addition(&layout(&[2]), &b, &strict(1)).expect_err("one host");
    assert!(e.to_string().contains("not enough distinct hosts"), "{e}");
    let e = plan_addition(&layout(&[3, 1]), &b, &strict(1)).expect_err("overloaded");
    assert!(e.to_string().contains("host 10.0.0.1 is overloaded"), "{e}");
    let e = plan_addition(&[], &b, &strict(1)).expect_err("empty");
    assert_eq!(e, PlanError::NoNodes);
    let mut nodes = layout(&[1, 1]);
    nodes[1] = nodes[0].clone();
    let e = plan_addition(&nodes, &b, &strict(1)).expect_err("duplicate");
    assert!(e.to_string().contains("duplicate node address"), "{e}");
    // Colocated mode places them anyway and says so.
    let o = PlanOptions {
        replicas: 1,
        allow_colocated: true,
    };
    let a = plan_addition(&layout(&[2]), &b, &o).expect("colocated");
    check_shape(&layout(&[2]), 1, &a, false);
    assert!(a.warnings.iter().any(|w| w.contains("colocated")));
}

#[test]
fn random_layouts_against_brute_force() {
    let mut rng = StdRng::seed_from_u64(0xADD_0001);
    let (mut checked, mut refused) = (0, 0);
    for _ in 0..1500 {
        let r = rng.gen_range(0..=2usize);
        let hosts = rng.gen_range(1..=5usize);
        let mut sizes: Vec<usize> = (0..hosts).map(|_| rng.gen_range(0..=3usize)).collect();
        let total: usize = sizes.iter().sum();
        let rem = total % (r + 1);
        if rem != 0 || total == 0 {
            sizes[0] += r + 1 - rem;
        }
        if sizes.iter().sum::<usize>() > 8 {
            continue;
        }
        let nodes = layout(&sizes);
        let b = before(
            &(0..rng.gen_range(0..=5usize))
                .map(|_| rng.gen_range(0..=3usize))
                .collect::<Vec<_>>(),
        );
        let best = best_totals(&nodes, r, &b);
        match plan_addition(&nodes, &b, &strict(r)) {
            Ok(a) => {
                check_shape(&nodes, r, &a, true);
                let got = sum_sq(&totals(&nodes, &b, &a.shards));
                assert_eq!(Some(got), best, "{sizes:?} before {b:?} r={r}");
                checked += 1;
                // Deterministic.
                assert_eq!(plan_addition(&nodes, &b, &strict(r)), Ok(a));
            }
            Err(e) => {
                assert_eq!(best, None, "{sizes:?} r={r}: refused ({e}) but placeable");
                refused += 1;
            }
        }
    }
    assert!(checked > 300 && refused > 20, "{checked} {refused}");
}

#[test]
fn fallback_search_matches_the_greedy_optimum() {
    // The greedy counts have been feasible on every case tried; exercise the fallback search
    // from the round-robin start and compare its totals with the greedy's.
    let mut rng = StdRng::seed_from_u64(0xADD_0002);
    let mut tried = 0;
    for _ in 0..2000 {
        let r = rng.gen_range(1..=3usize);
        let h = rng.gen_range(2..=7usize);
        let mut caps: Vec<usize> = (0..h).map(|_| rng.gen_range(1..=6usize)).collect();
        let rem = caps.iter().sum::<usize>() % (r + 1);
        if rem != 0 {
            caps[0] += r + 1 - rem;
        }
        let shards = caps.iter().sum::<usize>() / (r + 1);
        if caps.iter().any(|&c| c > shards) {
            continue;
        }
        let b: Vec<usize> = (0..h).map(|_| rng.gen_range(0..=4usize)).collect();
        let greedy = fill_over(&caps, &b, shards);
        if !counts_feasible(&caps, &greedy, r) {
            continue;
        }
        tried += 1;
        let found = improve_counts_over(&caps, &b, r, round_robin_counts(&caps, shards));
        assert!(counts_feasible(&caps, &found, r));
        let load = |m: &[usize]| -> Vec<usize> { m.iter().zip(&b).map(|(x, y)| x + y).collect() };
        assert_eq!(
            sum_sq(&load(&found)),
            sum_sq(&load(&greedy)),
            "{caps:?} {b:?} r={r}"
        );
    }
    assert!(tried > 300, "{tried}");
}

fn target(h: usize, replicas: &[usize]) -> Target {
    Target {
        host: host(h),
        replicas: replicas.len(),
        replica_hosts: replicas.iter().map(|&x| host(x)).collect(),
    }
}

#[test]
fn replicas_go_to_the_masters_with_fewest() {
    // Masters on hosts 1, 2, 3; the one on host 1 has no replica, the others one each.
    let masters = vec![target(0, &[]), target(1, &[2]), target(2, &[0])];
    let nodes = layout(&[0, 0, 0, 2]);
    let got = assign_replicas(&nodes, &masters, false).expect("assign");
    // First to the master without a replica, then to another master than that one (both on
    // host 4), never two replicas of one master on one host when it can be avoided.
    assert_eq!(got, vec![0, 1]);
    // A node on host 1 cannot replicate the master on host 1.
    let nodes = layout(&[1]);
    assert_eq!(
        assign_replicas(&nodes, &masters, false).expect("assign"),
        vec![1]
    );
    // Unless nothing else exists.
    let only = vec![target(0, &[])];
    let e = assign_replicas(&nodes, &only, false).expect_err("own host only");
    assert_eq!(
        e,
        AssignError::OnlyOwnHost {
            node: "10.0.0.1:8000".into(),
            host: host(0)
        }
    );
    assert!(e.to_string().contains("every master runs"), "{e}");
    assert_eq!(
        assign_replicas(&nodes, &only, true).expect("colocated"),
        vec![0]
    );
    assert_eq!(
        assign_replicas(&nodes, &[], true),
        Err(AssignError::NoMasters)
    );
}

#[test]
fn replica_assignment_against_brute_force() {
    let mut rng = StdRng::seed_from_u64(0xADD_0003);
    for _ in 0..600 {
        let hosts = rng.gen_range(1..=4usize);
        let masters: Vec<Target> = (0..rng.gen_range(1..=4usize))
            .map(|_| {
                let reps: Vec<usize> = (0..rng.gen_range(0..=2usize))
                    .map(|_| rng.gen_range(0..hosts))
                    .collect();
                target(rng.gen_range(0..hosts), &reps)
            })
            .collect();
        let sizes: Vec<usize> = (0..hosts).map(|_| rng.gen_range(0..=2usize)).collect();
        let nodes = layout(&sizes);
        if nodes.is_empty() {
            continue;
        }
        // (sum of squares of replica counts, replicas sharing a host with their master's
        // other replicas or itself) of an assignment.
        let score = |a: &[usize]| -> (usize, usize) {
            let mut count: Vec<usize> = masters.iter().map(|m| m.replicas).collect();
            let mut seen: Vec<Vec<String>> = masters
                .iter()
                .map(|m| {
                    let mut v = m.replica_hosts.clone();
                    v.push(m.host.clone());
                    v
                })
                .collect();
            let mut dup = 0;
            for (i, &g) in a.iter().enumerate() {
                count[g] += 1;
                if seen[g].contains(&nodes[i].host) {
                    dup += 1;
                }
                seen[g].push(nodes[i].host.clone());
            }
            (sum_sq(&count), dup)
        };
        let mut best: Option<(usize, usize)> = None;
        let mut a = vec![0usize; nodes.len()];
        loop {
            let valid = a
                .iter()
                .enumerate()
                .all(|(i, &g)| masters[g].host != nodes[i].host);
            if valid {
                let s = score(&a);
                best = Some(best.map_or(s, |b| b.min(s)));
            }
            let mut k = 0;
            while k < a.len() {
                a[k] += 1;
                if a[k] < masters.len() {
                    break;
                }
                a[k] = 0;
                k += 1;
            }
            if k == a.len() {
                break;
            }
        }
        match assign_replicas(&nodes, &masters, false) {
            Ok(got) => {
                assert!(got
                    .iter()
                    .enumerate()
                    .all(|(i, &g)| masters[g].host != nodes[i].host));
                assert_eq!(Some(score(&got)), best, "{sizes:?} {masters:?} {got:?}");
            }
            Err(e) => assert_eq!(best, None, "{sizes:?} {masters:?}: {e}"),
        }
    }
}
