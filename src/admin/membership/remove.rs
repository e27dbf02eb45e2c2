//! REMOVE's pure half: from a survey of the cluster (and of the named nodes), [`decide_remove`]
//! what is left to do. No sockets.
//!
//! A removal is: every node that stays forgets the removed ones (`CLUSTER FORGET`, all of them
//! within Redis's 60 s ban window, checked and repeated until no node that stays lists them),
//! then each removed node is reset (`CLUSTER RESET HARD`), so that it can never gossip its way
//! back and starts over as a fresh node. Re-running is safe: a node that every member forgot
//! but that still remembers the cluster only gets the reset; a node nobody knows needs nothing.

use super::cluster::{Member, Members};
use super::plan::{Step, Work};
use super::refusal::Refusal;
use crate::admin::survey::Survey;
use std::collections::BTreeSet;

/// Whether REMOVE drains a master that owns slots (a [`Step::Drain`] before it is forgotten,
/// run by [`crate::admin::slots::drain`]) instead of refusing it.
pub const DRAIN_READY: bool = true;

fn role(m: &Member, members: &Members) -> String {
    if m.master {
        format!("master owning {} slot(s)", m.slots)
    } else {
        let of = m
            .master_id
            .as_deref()
            .and_then(|id| members.by_id(id))
            .map_or("?", |x| x.addr.as_str());
        format!("replica of {of}")
    }
}

/// Decides what is left of `PROXY REMOVE NODES names...`. `s` must hold the cluster's nodes
/// and every named address. Pure; an `Err` is a refusal naming the node.
pub fn decide_remove(names: &[String], force: bool, s: &Survey) -> Result<Work, Refusal> {
    decide_remove_after(names, force, s, &[])
}

/// [`decide_remove`] after an interrupted run that drained the masters `drained` (node IDs,
/// from the remove note): a named node among them that is now a replica is one only because
/// the drain gave away its last slot, and is never some master's "last replica".
pub fn decide_remove_after(
    names: &[String],
    force: bool,
    s: &Survey,
    drained: &[String],
) -> Result<Work, Refusal> {
    let members = Members::of(s);
    if members.seed().is_none() {
        return Err(Refusal::NoCluster);
    }
    let mut work = Work::default();
    let mut removed: Vec<&Member> = Vec::new();
    let mut resets: Vec<String> = Vec::new();
    for name in names {
        if let Some(m) = members.by_addr(name).or_else(|| members.by_id(name)) {
            if !removed.iter().any(|x| x.id == m.id) {
                removed.push(m);
            }
            continue;
        }
        let state = s
            .get(name)
            .or_else(|| s.by_id(name))
            .filter(|n| n.reachable());
        let Some(state) = state else {
            work.lines.push(format!(
                "note {name} is no member of the cluster (no node of it knows it): nothing to do"
            ));
            continue;
        };
        let known: Vec<_> = state
            .view
            .iter()
            .filter(|l| !l.has("myself") && !l.has("handshake"))
            .collect();
        if known.iter().any(|l| members.by_id(&l.id).is_some()) {
            work.lines.push(format!(
                "note {} was forgotten by the cluster but still remembers it: it gets its reset",
                state.addr
            ));
            resets.push(state.addr.clone());
        } else if let Some(other) = known.first() {
            return Err(Refusal::NotOurs {
                addr: state.addr.clone(),
                other: other.addr(),
            });
        } else {
            work.lines.push(format!(
                "note {} is no member of the cluster (it knows no other node): nothing to do",
                state.addr
            ));
        }
    }
    let gone: BTreeSet<&str> = removed.iter().map(|m| m.id.as_str()).collect();
    for m in &removed {
        if m.master && m.slots > 0 {
            if !DRAIN_READY {
                return Err(Refusal::OwnsSlots {
                    addr: m.addr.clone(),
                    slots: m.slots,
                });
            }
            work.steps.push(Step::Drain {
                node: m.addr.clone(),
            });
        }
        if m.master {
            let orphans: Vec<String> = members
                .replicas_of(&m.id)
                .filter(|r| !gone.contains(r.id.as_str()))
                .map(|r| r.addr.clone())
                .collect();
            if !orphans.is_empty() {
                return Err(Refusal::Orphans {
                    addr: m.addr.clone(),
                    replicas: orphans,
                });
            }
        } else if drained.contains(&m.id) {
            work.lines.push(format!(
                "note {} is a replica only because this command drained it before it was \
                 interrupted",
                m.addr
            ));
        } else if let Some(master) = m
            .master_id
            .as_deref()
            .filter(|id| !gone.contains(id))
            .and_then(|id| members.by_id(id))
        {
            let left = members
                .replicas_of(&master.id)
                .filter(|r| !gone.contains(r.id.as_str()))
                .count();
            if left == 0 && !force {
                return Err(Refusal::LastReplica {
                    addr: m.addr.clone(),
                    master: master.addr.clone(),
                });
            }
            if left == 0 {
                work.lines.push(format!(
                    "warning master {} keeps no replica (FORCE)",
                    master.addr
                ));
            }
        }
    }
    let staying: Vec<&Member> = members
        .list
        .iter()
        .filter(|m| !gone.contains(m.id.as_str()))
        .collect();
    if !removed.is_empty() {
        for m in &staying {
            if !m.healthy() {
                return Err(Refusal::MemberDown {
                    addr: m.addr.clone(),
                    why: if m.reachable {
                        "is flagged failing"
                    } else {
                        "does not answer"
                    },
                    engine: "REMOVE",
                });
            }
        }
    }
    let mut head: Vec<String> = removed
        .iter()
        .map(|m| format!("remove {} ({})", m.addr, role(m, &members)))
        .collect();
    head.append(&mut work.lines);
    work.lines = head;
    for m in &removed {
        if !m.reachable {
            work.lines.push(format!(
                "note {} does not answer: every node forgets it, but it cannot be reset; run \
                 CLUSTER RESET HARD on it before it ever runs again",
                m.addr
            ));
        }
    }
    if !removed.is_empty() {
        work.steps.push(Step::Forget {
            removed: removed
                .iter()
                .map(|m| (m.id.clone(), m.addr.clone()))
                .collect(),
        });
        work.steps.push(Step::WaitForgotten);
    }
    for m in removed.iter().filter(|m| m.reachable) {
        work.steps.push(Step::Reset {
            node: m.addr.clone(),
        });
    }
    let resets_count = resets.len();
    work.steps
        .extend(resets.into_iter().map(|node| Step::Reset { node }));
    work.cluster = staying
        .iter()
        .map(|m| (m.addr.clone(), m.id.clone()))
        .collect();
    work.summary = format!("{} node(s)", removed.len() + resets_count);
    Ok(work)
}
