//! The slot planner's unit tests: the scenarios of the README (add empty masters, drain, weights,
//! threshold, cap) and properties over random layouts (fewest moves, exact targets, donors only
//! give, receivers only take, determinism).

use super::*;
use proptest::prelude::*;

fn id(i: usize) -> String {
    format!("{:0>40}", i)
}

fn master(i: usize, weight: u32, ranges: &[(u16, u16)]) -> MasterIn {
    MasterIn {
        id: id(i),
        addr: format!("127.0.0.{i}:7000"),
        weight,
        slots: ranges.iter().flat_map(|&(a, b)| a..=b).collect(),
    }
}

/// The standard 3-master layout.
fn three() -> Vec<MasterIn> {
    vec![
        master(1, 1, &[(0, 5460)]),
        master(2, 1, &[(5461, 10922)]),
        master(3, 1, &[(10923, 16383)]),
    ]
}

/// Each master's slots after the plan, as sorted lists.
fn after(ms: &[MasterIn], p: &Plan) -> Vec<Vec<u16>> {
    let mut owner: std::collections::BTreeMap<u16, usize> = std::collections::BTreeMap::new();
    for m in ms {
        let i = p.masters.iter().position(|x| x.id == m.id).expect("listed");
        for &s in &m.slots {
            owner.insert(s, i);
        }
    }
    for mv in &p.moves {
        assert_eq!(
            owner.get(&mv.slot),
            Some(&mv.from),
            "slot {} moved from a non-owner",
            mv.slot
        );
        owner.insert(mv.slot, mv.to);
    }
    let mut out = vec![Vec::new(); p.masters.len()];
    for (s, i) in owner {
        out[i].push(s);
    }
    out
}

/// Contiguous ranges in a sorted slot list.
fn ranges(slots: &[u16]) -> usize {
    slots.windows(2).filter(|w| w[1] != w[0] + 1).count() + usize::from(!slots.is_empty())
}

/// What every plan must satisfy: moves only from donors to receivers, each slot once, and
/// without a cap every master on its target.
fn check_invariants(ms: &[MasterIn], p: &Plan) {
    let mut seen = std::collections::BTreeSet::new();
    for mv in &p.moves {
        assert!(seen.insert(mv.slot), "slot {} moves twice", mv.slot);
        let (f, t) = (&p.masters[mv.from], &p.masters[mv.to]);
        assert!(
            f.before > f.target,
            "{} gives but is not above target",
            f.addr
        );
        assert!(
            t.before < t.target,
            "{} takes but is not below target",
            t.addr
        );
    }
    let surplus: usize = p
        .masters
        .iter()
        .map(|m| m.before.saturating_sub(m.target))
        .sum();
    assert_eq!(p.moves.len() + p.capped, surplus, "fewest moves");
    let counts: Vec<usize> = after(ms, p).iter().map(Vec::len).collect();
    for (m, c) in p.masters.iter().zip(&counts) {
        assert_eq!(m.after, *c);
        if p.capped == 0 && p.skipped.is_none() {
            assert_eq!(m.after, m.target, "{} ends on its target", m.addr);
        }
    }
}

#[test]
fn two_empty_masters_get_one_range_each() {
    let mut ms = three();
    ms.push(master(4, 1, &[]));
    ms.push(master(5, 1, &[]));
    let p = plan(&ms, &PlanOptions::default()).expect("plan");
    check_invariants(&ms, &p);
    let targets: Vec<usize> = p.masters.iter().map(|m| m.target).collect();
    assert_eq!(targets.iter().sum::<usize>(), 16384);
    assert!(targets.iter().max().unwrap() - targets.iter().min().unwrap() <= 1);
    assert_eq!(p.moves.len(), 16384 - 3 * 3277, "sum of the surpluses");
    for (m, slots) in p.masters.iter().zip(after(&ms, &p)) {
        assert_eq!(
            ranges(&slots),
            1,
            "{} ends with one range: {:?}",
            m.addr,
            slots.len()
        );
    }
    // Each new master takes from two neighbouring donors: two runs, one range.
    assert_eq!(p.ranges().len(), 4, "{:?}", p.ranges());
    assert_eq!(p.off_target_after(), 0);
}

#[test]
fn one_empty_master_gets_at_most_two_ranges() {
    let mut ms = three();
    ms.push(master(4, 1, &[]));
    let p = plan(&ms, &PlanOptions::default()).expect("plan");
    check_invariants(&ms, &p);
    assert!(p.masters.iter().all(|m| m.target == 4096));
    let slots = after(&ms, &p);
    // With the fewest moves the new master cannot be contiguous (its donors' surpluses lie
    // on both sides of a donor that keeps 4096), but it gets no more than two ranges.
    assert!(ranges(&slots[3]) <= 2, "{}", ranges(&slots[3]));
    for s in &slots[..3] {
        assert_eq!(ranges(s), 1);
    }
}

#[test]
fn weight_zero_drains_to_the_neighbours() {
    let mut ms = three();
    ms[1].weight = 0;
    let p = plan(&ms, &PlanOptions::default()).expect("plan");
    check_invariants(&ms, &p);
    assert_eq!(p.masters[1].target, 0);
    assert_eq!(p.masters[0].target + p.masters[2].target, 16384);
    assert_eq!(p.moves.len(), 5462);
    let slots = after(&ms, &p);
    assert!(slots[1].is_empty());
    assert_eq!(ranges(&slots[0]), 1);
    assert_eq!(ranges(&slots[2]), 1);
    // Draining the first master: the neighbour grows its range, the other takes the rest.
    let mut ms = three();
    ms[0].weight = 0;
    let p = plan(&ms, &PlanOptions::default()).expect("plan");
    check_invariants(&ms, &p);
    let slots = after(&ms, &p);
    assert_eq!(ranges(&slots[1]), 1, "the neighbour stays contiguous");
    assert_eq!(ranges(&slots[2]), 2);
    // The drain of an empty master is nothing to do.
    let mut ms2 = three();
    ms2.push(master(4, 0, &[]));
    let p = plan(&ms2, &PlanOptions::default()).expect("plan");
    assert!(p.moves.is_empty() && p.skipped.is_none());
}

#[test]
fn weights_two_to_one() {
    let ms = vec![master(1, 2, &[(0, 8191)]), master(2, 1, &[(8192, 16383)])];
    let p = plan(&ms, &PlanOptions::default()).expect("plan");
    check_invariants(&ms, &p);
    assert_eq!(p.masters[0].target, 10923);
    assert_eq!(p.masters[1].target, 5461);
    assert_eq!(p.moves.len(), 10923 - 8192);
    let slots = after(&ms, &p);
    assert_eq!(ranges(&slots[0]), 1);
    assert_eq!(ranges(&slots[1]), 1);
    // 2:1:1 over three masters.
    let mut ms = three();
    ms[0].weight = 2;
    let p = plan(&ms, &PlanOptions::default()).expect("plan");
    check_invariants(&ms, &p);
    assert_eq!(
        p.masters.iter().map(|m| m.target).collect::<Vec<_>>(),
        vec![8192, 4096, 4096]
    );
}

#[test]
fn threshold_skips_small_differences() {
    // Balanced: nothing to do and no reason needed.
    let p = plan(&three(), &PlanOptions::default()).expect("plan");
    assert!(p.moves.is_empty());
    assert_eq!(p.skipped, None);
    assert_eq!(p.off_target_before(), 0);
    // 5000 / 5692 / 5692: 8.4% below for the first.
    let ms = vec![
        master(1, 1, &[(0, 4999)]),
        master(2, 1, &[(5000, 10691)]),
        master(3, 1, &[(10692, 16383)]),
    ];
    let p = plan(&ms, &PlanOptions::default()).expect("plan");
    check_invariants(&ms, &p);
    assert_eq!(p.moves.len(), 461);
    let lenient = PlanOptions {
        threshold_pct: 10.0,
        ..PlanOptions::default()
    };
    let p = plan(&ms, &lenient).expect("plan");
    assert!(p.moves.is_empty());
    assert!(
        p.skipped.as_deref().is_some_and(|w| w.contains("10%")),
        "{:?}",
        p.skipped
    );
    // A weight-0 master with slots is never within the threshold.
    let mut ms = three();
    ms[2].weight = 0;
    let p = plan(
        &ms,
        &PlanOptions {
            threshold_pct: 1000.0,
            ..PlanOptions::default()
        },
    )
    .expect("plan");
    assert_eq!(p.moves.len(), 5461);
}

#[test]
fn maxslots_caps_the_moves() {
    let mut ms = three();
    ms.push(master(4, 1, &[]));
    let opts = PlanOptions {
        max_slots: Some(100),
        ..PlanOptions::default()
    };
    let p = plan(&ms, &opts).expect("plan");
    check_invariants(&ms, &p);
    assert_eq!(p.moves.len(), 100);
    assert_eq!(p.capped, 4096 - 100);
    assert_eq!(p.masters[3].after, 100);
    assert!(p.off_target_after() > 0);
    assert!(
        p.moves.windows(2).all(|w| w[0].slot < w[1].slot),
        "slot order"
    );
}

#[test]
fn only_donors_limits_who_gives() {
    // Unbalanced others: 1 has 3000, 2 has 7000, 3 (drained) has 6384.
    let ms = vec![
        master(1, 1, &[(0, 2999)]),
        master(2, 1, &[(3000, 9999)]),
        master(3, 1, &[(10000, 16383)]),
    ];
    let opts = PlanOptions {
        only_donors: Some([id(3)].into_iter().collect()),
        ..PlanOptions::default()
    };
    let mut drained = ms.clone();
    drained[2].weight = 0;
    let p = plan(&drained, &opts).expect("plan");
    check_invariants(&drained, &p);
    assert!(p.moves.iter().all(|m| m.from == 2));
    assert_eq!(p.moves.len(), 6384);
    assert_eq!(p.masters[2].after, 0);
    // Master 1 (furthest below) gets more than master 2; both end equal (8192 each).
    assert_eq!(p.masters[0].after, 8192);
    assert_eq!(p.masters[1].after, 8192);
}

#[test]
fn errors() {
    let mut ms = three();
    for m in &mut ms {
        m.weight = 0;
    }
    assert_eq!(plan(&ms, &PlanOptions::default()), Err(PlanError::NoWeight));
    let mut ms = three();
    ms[1].slots.push(0);
    assert_eq!(
        plan(&ms, &PlanOptions::default()),
        Err(PlanError::Shared(0))
    );
}

#[test]
fn a_run_cut_short_replans_the_rest_of_the_same_moves() {
    let mut ms = three();
    ms.push(master(4, 1, &[]));
    ms.push(master(5, 1, &[]));
    let first = plan(&ms, &PlanOptions::default()).expect("plan");
    // Apply the first 1000 moves, then plan again from there.
    let done = 1000;
    let mut owner: std::collections::BTreeMap<u16, usize> = Default::default();
    for (i, m) in ms.iter().enumerate() {
        for &s in &m.slots {
            owner.insert(s, i);
        }
    }
    for mv in &first.moves[..done] {
        owner.insert(mv.slot, mv.to);
    }
    let mut ms2 = ms.clone();
    for m in &mut ms2 {
        m.slots.clear();
    }
    for (s, i) in owner {
        ms2[i].slots.push(s);
    }
    let second = plan(&ms2, &PlanOptions::default()).expect("plan");
    assert_eq!(second.moves, first.moves[done..].to_vec());
}

/// A random layout: `n` masters, slots dealt in runs of random lengths, some masters empty.
fn layout(n: usize, runs: &[(usize, u16)], weights: &[u32]) -> Vec<MasterIn> {
    let mut ms: Vec<MasterIn> = (0..n)
        .map(|i| MasterIn {
            id: id(i + 1),
            addr: format!("127.0.0.1:{}", 7000 + i),
            weight: weights[i % weights.len()],
            slots: Vec::new(),
        })
        .collect();
    let mut s: u32 = 0;
    for &(who, len) in runs.iter().cycle() {
        if s >= 16384 {
            break;
        }
        let end = (s + len as u32).min(16384);
        ms[who % n].slots.extend((s..end).map(|x| x as u16));
        s = end;
    }
    ms
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_layouts_keep_the_invariants(
        n in 2usize..9,
        runs in proptest::collection::vec((0usize..9, 1u16..3000), 1..20),
        weights in proptest::collection::vec(0u32..4, 1..5),
        cap in proptest::option::of(0usize..3000),
    ) {
        let ms = layout(n, &runs, &weights);
        let opts = PlanOptions { threshold_pct: 0.0, max_slots: cap, only_donors: None };
        match plan(&ms, &opts) {
            Err(PlanError::NoWeight) => {
                prop_assert!(ms.iter().all(|m| m.weight == 0));
            }
            Err(e) => prop_assert!(false, "{e}"),
            Ok(p) => {
                check_invariants(&ms, &p);
                for a in &p.masters {
                    for b in &p.masters {
                        if a.weight == b.weight {
                            prop_assert!(a.target.abs_diff(b.target) <= 1);
                        }
                    }
                }
                // Deterministic whatever the input order.
                let mut rev = ms.clone();
                rev.reverse();
                prop_assert_eq!(plan(&rev, &opts).expect("plan"), p);
            }
        }
    }
}
