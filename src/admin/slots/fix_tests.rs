//! FIX's decisions, from hand-built states: every case of the module documentation.

use super::*;
use crate::admin::slots::state::Master;

fn id(i: usize) -> String {
    format!("{:0>40}", i)
}

/// Masters 0..n; master 0 owns 0-8191, master 1 owns 8192-16383, the rest own nothing.
fn state(n: usize) -> SlotState {
    SlotState {
        masters: (0..n)
            .map(|i| Master {
                id: id(i),
                addr: format!("127.0.0.1:700{i}"),
                slots: match i {
                    0 => (0..8192).collect(),
                    1 => (8192..16384).collect(),
                    _ => Vec::new(),
                },
                migrating: Vec::new(),
                importing: Vec::new(),
            })
            .collect(),
        problems: Vec::new(),
    }
}

fn keys(slot: u16, counts: &[u64]) -> BTreeMap<u16, Vec<u64>> {
    [(slot, counts.to_vec())].into()
}

#[test]
fn nothing_open_nothing_to_do() {
    let st = state(3);
    assert!(candidates(&st).is_empty());
    assert_eq!(decide(&st, &BTreeMap::new()), FixPlan::default());
}

#[test]
fn interrupted_move_is_finished_when_keys_exist() {
    let mut st = state(3);
    st.masters[0].migrating.push((100, id(2)));
    st.masters[2].importing.push((100, id(0)));
    assert_eq!(candidates(&st), vec![100]);
    // Keys on both sides (a reshard killed mid-way): finish to the importer.
    let fp = decide(&st, &keys(100, &[5, 0, 7]));
    assert_eq!(
        fp.repair,
        vec![Action::Finish {
            slot: 100,
            from: 0,
            to: 2
        }]
    );
    assert!(fp.assign.is_empty() && fp.left.is_empty());
    // All keys already moved: finishing moves none and makes the importer the owner.
    let fp = decide(&st, &keys(100, &[0, 0, 7]));
    assert_eq!(
        fp.repair,
        vec![Action::Finish {
            slot: 100,
            from: 0,
            to: 2
        }]
    );
    // No keys anywhere: close it where it is.
    let fp = decide(&st, &keys(100, &[0, 0, 0]));
    assert_eq!(
        fp.repair,
        vec![
            Action::Close { slot: 100, node: 0 },
            Action::Close { slot: 100, node: 2 }
        ]
    );
    assert_eq!(fp.slots(), 1);
}

#[test]
fn migrating_without_importing_is_finished_or_closed() {
    let mut st = state(3);
    st.masters[0].migrating.push((100, id(2)));
    let fp = decide(&st, &keys(100, &[3, 0, 0]));
    assert_eq!(
        fp.repair,
        vec![Action::Finish {
            slot: 100,
            from: 0,
            to: 2
        }]
    );
    let fp = decide(&st, &keys(100, &[0, 0, 0]));
    assert_eq!(fp.repair, vec![Action::Close { slot: 100, node: 0 }]);
}

#[test]
fn importing_without_migrating_follows_the_keys() {
    let mut st = state(3);
    st.masters[2].importing.push((100, id(0)));
    // Keys only on the importer: it becomes the owner (nothing moves).
    let fp = decide(&st, &keys(100, &[0, 0, 4]));
    assert_eq!(
        fp.repair,
        vec![Action::Finish {
            slot: 100,
            from: 0,
            to: 2
        }]
    );
    // Keys on both: the owner's are the live ones; the importer's go back to it.
    let fp = decide(&st, &keys(100, &[6, 0, 4]));
    assert_eq!(
        fp.repair,
        vec![Action::Evacuate {
            slot: 100,
            from: 2,
            to: 0
        }]
    );
    // Keys only on the owner: close the importer.
    let fp = decide(&st, &keys(100, &[6, 0, 0]));
    assert_eq!(fp.repair, vec![Action::Close { slot: 100, node: 2 }]);
}

#[test]
fn stray_keys_and_stale_states_elsewhere() {
    let mut st = state(4);
    st.masters[0].migrating.push((100, id(2)));
    st.masters[2].importing.push((100, id(0)));
    st.masters[3].importing.push((100, id(1)));
    st.masters[1].importing.push((100, id(0)));
    // Master 1 holds stray keys, master 3 has a stale open state and none.
    let fp = decide(&st, &keys(100, &[5, 2, 1, 0]));
    assert_eq!(
        fp.repair,
        vec![
            Action::Finish {
                slot: 100,
                from: 0,
                to: 2
            },
            Action::Evacuate {
                slot: 100,
                from: 1,
                to: 2
            },
            Action::Close { slot: 100, node: 3 },
        ]
    );
}

#[test]
fn uncovered_slots_are_assigned_by_keys_then_by_fewest_slots() {
    let mut st = state(3);
    st.masters[0].slots.retain(|&s| s != 5);
    st.masters[0].slots.retain(|&s| s != 6);
    assert_eq!(candidates(&st), vec![5, 6]);
    let mut k = keys(5, &[0, 3, 0]);
    k.insert(6, vec![0, 0, 0]);
    let fp = decide(&st, &k);
    assert_eq!(
        fp.assign,
        vec![
            Action::Assign { slot: 5, to: 1 },
            Action::Assign { slot: 6, to: 2 }
        ]
    );
    assert!(fp.repair.is_empty());
    // Keys on two masters: the bigger holder gets it, the other's keys follow; an open state on
    // the slot is closed before the assignment.
    st.masters[2].importing.push((5, id(0)));
    let fp = decide(&st, &keys(5, &[2, 3, 0]));
    assert_eq!(
        fp.assign[..2],
        [
            Action::Close { slot: 5, node: 2 },
            Action::Assign { slot: 5, to: 1 }
        ]
    );
    assert_eq!(
        fp.repair,
        vec![Action::Evacuate {
            slot: 5,
            from: 0,
            to: 1
        }]
    );
    let lines: Vec<String> = fp
        .repair
        .iter()
        .map(|a| a.describe(&st, &keys(5, &[2, 3, 0])))
        .collect();
    assert_eq!(
        lines,
        vec!["evacuate 5 127.0.0.1:7000 -> 127.0.0.1:7001 (keys 2)"]
    );
}

#[test]
fn a_slot_two_masters_claim_is_left() {
    let mut st = state(3);
    st.masters[1].slots.insert(0, 7);
    st.masters[1].migrating.push((7, id(2)));
    let fp = decide(&st, &keys(7, &[1, 1, 0]));
    assert!(fp.repair.is_empty());
    assert_eq!(fp.left.len(), 1);
    assert!(
        fp.left[0]
            .1
            .contains("claimed by 127.0.0.1:7000 and 127.0.0.1:7001"),
        "{:?}",
        fp.left
    );
}
