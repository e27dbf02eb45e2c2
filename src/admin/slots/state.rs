//! The cluster as the slot engines see it, judged from a [`Survey`] by pure functions: the
//! masters (each from its own `myself` line, the only authority on what it owns and has open),
//! and the problems that make a slot move unsafe. REBALANCE SLOTS refuses on any problem; FIX
//! refuses only on the ones it cannot repair (a master it cannot reach or that is failing, or
//! two masters that do not know each other).

use crate::admin::survey::Survey;

/// A master, from its own line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Master {
    /// Node ID.
    pub id: String,
    /// `ip:port` it answered at.
    pub addr: String,
    /// Owned slots, sorted.
    pub slots: Vec<u16>,
    /// Slots it is migrating: (slot, destination ID).
    pub migrating: Vec<(u16, String)>,
    /// Slots it is importing: (slot, source ID).
    pub importing: Vec<(u16, String)>,
}

impl Master {
    /// Whether it owns `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.binary_search(&slot).is_ok()
    }
}

/// Why a slot move would not be safe now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A master someone knows did not answer.
    Unreachable {
        /// Its address.
        addr: String,
        /// Why.
        error: String,
    },
    /// A master flagged `fail` or `fail?` by a node.
    Failing {
        /// Its address.
        addr: String,
        /// Who flags it.
        by: String,
    },
    /// Two masters where one does not know the other yet (or only in handshake): a
    /// `SETSLOT NODE` naming the unknown one would fail there.
    Unknown {
        /// The master whose view lacks the other.
        addr: String,
        /// The master it does not know.
        missing: String,
    },
    /// A node whose `cluster_state` is not `ok`.
    NotOk {
        /// Its address.
        addr: String,
        /// What it says.
        state: String,
    },
    /// A slot left migrating or importing.
    Open {
        /// The slot.
        slot: u16,
        /// `migrating on A to B` / `importing on A from B`.
        what: String,
    },
    /// A slot two masters claim.
    Shared {
        /// The slot.
        slot: u16,
        /// The claimants.
        addrs: Vec<String>,
    },
}

impl Problem {
    /// Whether FIX can repair it (open slots, uncovered slots behind a failed state).
    pub fn fixable(&self) -> bool {
        matches!(self, Problem::Open { .. } | Problem::NotOk { .. })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unreachable { addr, error } => {
                write!(f, "master {addr} is unreachable ({error})")
            }
            Problem::Failing { addr, by } => write!(f, "master {addr} is flagged failing by {by}"),
            Problem::Unknown { addr, missing } => write!(
                f,
                "master {addr} does not know master {missing} yet; wait for the cluster bus \
                 (or CLUSTER MEET) and re-run"
            ),
            Problem::NotOk { addr, state } => write!(
                f,
                "cluster_state is {state} on {addr}; PROXY CHECK shows why (PROXY FIX assigns \
                 uncovered slots)"
            ),
            Problem::Open { slot, what } => {
                write!(f, "slot {slot} is open ({what}); run PROXY FIX first")
            }
            Problem::Shared { slot, addrs } => {
                write!(
                    f,
                    "slot {slot} is claimed by several masters: {}",
                    addrs.join(", ")
                )
            }
        }
    }
}

/// A slot range a slot-moving run was moving when it stopped (one entry of the lease's move
/// note; a run that moves slots in parallel notes every range it has slots open in, joined
/// with `;`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Giving master's ID.
    pub from: String,
    /// Receiving master's ID.
    pub to: String,
    /// First slot of the range.
    pub first: u16,
    /// Last slot (inclusive).
    pub last: u16,
}

impl Note {
    /// Reads `<from-id> <to-id> <first> <last>`; anything else is no note.
    pub fn parse(text: &str) -> Option<Note> {
        let w: Vec<&str> = text.split_whitespace().collect();
        let [from, to, first, last] = w.as_slice() else {
            return None;
        };
        let slot = |x: &str| {
            x.parse::<u16>()
                .ok()
                .filter(|&s| (s as usize) < crate::cluster::slots::SLOT_COUNT)
        };
        let (first, last) = (slot(first)?, slot(last)?);
        (first <= last && from != to).then(|| Note {
            from: from.to_string(),
            to: to.to_string(),
            first,
            last,
        })
    }

    /// The note's text.
    pub fn text(&self) -> String {
        format!("{} {} {} {}", self.from, self.to, self.first, self.last)
    }

    /// Reads a whole move note: its `;`-separated entries (an entry that does not parse is
    /// left out).
    pub fn parse_all(text: &str) -> Vec<Note> {
        text.split(';').filter_map(Note::parse).collect()
    }

    /// A whole move note's text for `notes`.
    pub fn text_all(notes: &[Note]) -> String {
        notes.iter().map(Note::text).collect::<Vec<_>>().join(";")
    }
}

/// The masters and the problems of a surveyed cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotState {
    /// Reachable masters, in survey order.
    pub masters: Vec<Master>,
    /// Every problem found, most serious first.
    pub problems: Vec<Problem>,
}

impl SlotState {
    /// Judges a survey.
    pub fn from_survey(s: &Survey) -> SlotState {
        // A node outside the cluster (a seed of the proxy that PROXY REMOVE NODES reset) is
        // judged as no part of it, as CHECK does.
        let outside = crate::admin::check::outsiders(s);
        let inside = Survey {
            nodes: s
                .nodes
                .iter()
                .filter(|n| !outside.contains(&n.addr))
                .cloned()
                .collect(),
        };
        let s = &inside;
        let mut masters: Vec<Master> = Vec::new();
        for n in s.reachable() {
            let Some(me) = n.myself() else { continue };
            if !me.is_master() || masters.iter().any(|m| m.id == me.id) {
                continue;
            }
            let mut slots: Vec<u16> = me.slots.iter().flat_map(|&(a, b)| a..=b).collect();
            slots.sort_unstable();
            slots.dedup();
            masters.push(Master {
                id: me.id.clone(),
                addr: n.addr.clone(),
                slots,
                migrating: me.migrating.clone(),
                importing: me.importing.clone(),
            });
        }
        let mut unreachable = Vec::new();
        let mut failing = Vec::new();
        let mut unknown = Vec::new();
        let mut not_ok = Vec::new();
        let mut open = Vec::new();
        // Masters others name that did not answer (usable lines only: a handshake has no ID).
        // A node that answered says itself what it is: a view that still calls a new replica
        // a master (Redis demotes a master that gave away its last slot) is only behind.
        for n in s.reachable() {
            for l in n.view.iter().filter(|l| l.is_usable() && l.is_master()) {
                let answered = masters.iter().any(|m| m.id == l.id);
                if !answered && s.by_id(&l.id).is_some() {
                    continue;
                }
                let addr = l.addr();
                let listed = |p: &Problem| match p {
                    Problem::Unreachable { addr: a, .. } | Problem::Failing { addr: a, .. } => {
                        *a == addr
                    }
                    _ => false,
                };
                if !answered && !unreachable.iter().any(listed) {
                    let error = s
                        .get(&addr)
                        .and_then(|x| x.error.clone())
                        .unwrap_or_else(|| "not surveyed".to_string());
                    unreachable.push(Problem::Unreachable {
                        addr: addr.clone(),
                        error,
                    });
                }
                if l.is_failing() && !failing.iter().any(listed) {
                    failing.push(Problem::Failing {
                        addr,
                        by: n.addr.clone(),
                    });
                }
            }
        }
        for n in s.reachable().filter(|n| n.myself().is_some()) {
            if let Some(state) = n.cluster_info.get("cluster_state") {
                if state != "ok" {
                    not_ok.push(Problem::NotOk {
                        addr: n.addr.clone(),
                        state: state.clone(),
                    });
                }
            }
        }
        let addr_of = |id: &str| {
            masters
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.addr.clone())
                .unwrap_or_else(|| format!("node {}", id.get(..8).unwrap_or(id)))
        };
        for m in &masters {
            let Some(view) = s.get(&m.addr) else { continue };
            for other in masters.iter().filter(|o| o.id != m.id) {
                let known = view
                    .view
                    .iter()
                    .any(|l| l.id == other.id && !l.has("handshake"));
                if !known {
                    unknown.push(Problem::Unknown {
                        addr: m.addr.clone(),
                        missing: other.addr.clone(),
                    });
                }
            }
            for (slot, dst) in &m.migrating {
                open.push(Problem::Open {
                    slot: *slot,
                    what: format!("migrating on {} to {}", m.addr, addr_of(dst)),
                });
            }
            for (slot, src) in &m.importing {
                open.push(Problem::Open {
                    slot: *slot,
                    what: format!("importing on {} from {}", m.addr, addr_of(src)),
                });
            }
        }
        open.sort_by_key(|p| match p {
            Problem::Open { slot, .. } => *slot,
            _ => 0,
        });
        let mut shared = Vec::new();
        let mut owner: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
        for m in &masters {
            for &sl in &m.slots {
                owner.entry(sl).or_default().push(m.addr.clone());
            }
        }
        for (slot, addrs) in owner {
            if addrs.len() > 1 {
                shared.push(Problem::Shared { slot, addrs });
            }
        }
        let mut problems = unreachable;
        problems.extend(failing);
        problems.extend(unknown);
        problems.extend(shared);
        problems.extend(open);
        problems.extend(not_ok);
        SlotState { masters, problems }
    }

    /// The first problem that forbids moving slots, if any.
    pub fn refusal(&self) -> Option<&Problem> {
        self.problems.first()
    }

    /// The first problem other than an open slot, if any (open slots are judged with
    /// [`SlotState::resumable`]).
    pub fn blocking(&self) -> Option<&Problem> {
        self.problems
            .iter()
            .find(|p| !matches!(p, Problem::Open { .. }))
    }

    /// The open slots an interrupted run left, per its `notes`: (slot, giving master index,
    /// receiving master index), in slot order. A slot counts as the run's when a note's
    /// range covers it and the only open states on it are the giver migrating it to the
    /// receiver and the receiver importing it from the giver. Any other open slot is the
    /// error: FIX's job, not a re-run's.
    pub fn resumable(&self, notes: &[Note]) -> Result<Vec<(u16, usize, usize)>, Problem> {
        let idx = |id: &str| self.masters.iter().position(|m| m.id == id);
        let mut open: Vec<u16> = Vec::new();
        for m in &self.masters {
            open.extend(m.migrating.iter().map(|x| x.0));
            open.extend(m.importing.iter().map(|x| x.0));
        }
        open.sort_unstable();
        open.dedup();
        let mut out = Vec::new();
        for slot in open {
            let ours = notes
                .iter()
                .filter(|n| n.first <= slot && slot <= n.last)
                .filter_map(|n| Some((n, idx(&n.from)?, idx(&n.to)?)))
                .find(|(n, a, b)| {
                    self.masters.iter().enumerate().all(|(i, m)| {
                        let mig: Vec<&String> = m
                            .migrating
                            .iter()
                            .filter(|x| x.0 == slot)
                            .map(|x| &x.1)
                            .collect();
                        let imp: Vec<&String> = m
                            .importing
                            .iter()
                            .filter(|x| x.0 == slot)
                            .map(|x| &x.1)
                            .collect();
                        match (mig.as_slice(), imp.as_slice()) {
                            ([], []) => true,
                            ([to], []) => i == *a && **to == n.to,
                            ([], [from]) => i == *b && **from == n.from,
                            _ => false,
                        }
                    })
                });
            match ours {
                Some((_, a, b)) => out.push((slot, a, b)),
                None => {
                    let p = self
                        .problems
                        .iter()
                        .find(|p| matches!(p, Problem::Open { slot: s, .. } if *s == slot))
                        .cloned()
                        .unwrap_or(Problem::Open {
                            slot,
                            what: "open".into(),
                        });
                    return Err(p);
                }
            }
        }
        Ok(out)
    }

    /// The first problem FIX cannot repair, if any.
    pub fn fix_refusal(&self) -> Option<&Problem> {
        self.problems
            .iter()
            .find(|p| !p.fixable() && !matches!(p, Problem::Shared { .. }))
    }

    /// The master with ID `id`.
    pub fn by_id(&self, id: &str) -> Option<&Master> {
        self.masters.iter().find(|m| m.id == id)
    }

    /// The master named by `name`: its `ip:port`, its full node ID, or a unique ID prefix of at
    /// least 8 characters.
    pub fn find(&self, name: &str) -> Result<&Master, String> {
        if let Some(m) = self.masters.iter().find(|m| m.addr == name || m.id == name) {
            return Ok(m);
        }
        let hits: Vec<&Master> = if name.len() >= 8 {
            self.masters
                .iter()
                .filter(|m| m.id.starts_with(name))
                .collect()
        } else {
            Vec::new()
        };
        match hits.as_slice() {
            [m] => Ok(m),
            [] => Err(format!(
                "'{}' names no master (give ip:port or a node ID); masters: {}",
                name.chars().take(64).collect::<String>(),
                self.masters
                    .iter()
                    .map(|m| m.addr.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "'{name}' matches several node IDs; give more of it"
            )),
        }
    }

    /// Slots no reachable master owns.
    pub fn uncovered(&self) -> Vec<u16> {
        let mut covered = vec![false; crate::cluster::slots::SLOT_COUNT];
        for m in &self.masters {
            for &s in &m.slots {
                covered[s as usize] = true;
            }
        }
        (0..covered.len() as u16)
            .filter(|&s| !covered[s as usize])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::survey::NodeState;
    use crate::cluster::parse_cluster_nodes;

    fn id(i: usize) -> String {
        format!("{:0>40}", i)
    }

    /// `(index, flags, slots)`; node `i` is at 127.0.0.1:700i.
    fn text(nodes: &[(usize, &str, &str)], me: usize) -> String {
        nodes
            .iter()
            .map(|(i, flags, slots)| {
                format!(
                    "{} 127.0.0.1:700{i}@1700{i} {}{flags} - 0 0 {i} connected {slots}\n",
                    id(*i),
                    if *i == me { "myself," } else { "" }
                )
            })
            .collect()
    }

    fn survey(nodes: &[(usize, &str, &str)], down: &[usize], state: &str) -> Survey {
        Survey {
            nodes: nodes
                .iter()
                .map(|(i, _, _)| {
                    let addr = format!("127.0.0.1:700{i}");
                    if down.contains(i) {
                        return NodeState::unreachable(&addr, "connection refused");
                    }
                    NodeState {
                        addr,
                        cluster_enabled: true,
                        view: parse_cluster_nodes(&text(nodes, *i), "127.0.0.1").expect("parses"),
                        cluster_info: [("cluster_state".to_string(), state.to_string())].into(),
                        ..Default::default()
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn healthy_cluster_has_no_problem() {
        let nodes = [
            (1, "master", "0-8191"),
            (2, "master", "8192-16383"),
            (3, "master", ""),
        ];
        let st = SlotState::from_survey(&survey(&nodes, &[], "ok"));
        assert_eq!(st.masters.len(), 3);
        assert_eq!(st.refusal(), None);
        assert_eq!(st.masters[1].slots.len(), 8192);
        assert!(st.uncovered().is_empty());
        assert_eq!(st.find("127.0.0.1:7002").map(|m| m.id.clone()), Ok(id(2)));
        assert_eq!(
            st.find(&id(3)).map(|m| m.addr.clone()),
            Ok("127.0.0.1:7003".into())
        );
        assert!(st.find("0000000").is_err(), "too short a prefix");
        assert!(st.find("00000000").is_err(), "ambiguous prefix");
        assert!(st.find("10.0.0.1:1").is_err());
    }

    #[test]
    fn a_reset_seed_outside_the_cluster_is_no_master_of_it() {
        let nodes = [(1, "master", "0-8191"), (2, "master", "8192-16383")];
        let mut s = survey(&nodes, &[], "ok");
        // Node 9 knows only itself and nobody knows it (REMOVE NODES reset it).
        let alone = [(9, "master", "")];
        s.nodes.extend(survey(&alone, &[], "ok").nodes);
        let st = SlotState::from_survey(&s);
        assert_eq!(st.masters.len(), 2);
        assert_eq!(st.refusal(), None);
    }

    #[test]
    fn problems_are_found_and_ordered() {
        let one = format!("0-8191 [100->-{}]", id(2));
        let two = format!("8192-16383 [100-<-{}]", id(1));
        let nodes = [
            (1, "master", one.as_str()),
            (2, "master", two.as_str()),
            (3, "master,fail?", ""),
        ];
        let st = SlotState::from_survey(&survey(&nodes, &[3], "fail"));
        let texts: Vec<String> = st.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            texts[0].contains("127.0.0.1:7003 is unreachable"),
            "{texts:?}"
        );
        assert!(texts[1].contains("flagged failing"), "{texts:?}");
        assert!(
            texts
                .iter()
                .any(|t| t
                    .contains("slot 100 is open (migrating on 127.0.0.1:7001 to 127.0.0.1:7002)")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("importing on 127.0.0.1:7002 from 127.0.0.1:7001")),
            "{texts:?}"
        );
        assert!(
            texts
                .last()
                .is_some_and(|t| t.contains("cluster_state is fail")),
            "{texts:?}"
        );
        assert!(st.fix_refusal().is_some());
        // Without the dead node, FIX may go on: open slots and a failed state are its job.
        let st = SlotState::from_survey(&survey(&nodes[..2], &[], "fail"));
        assert!(st.refusal().is_some());
        assert_eq!(st.fix_refusal(), None);
    }

    #[test]
    fn an_interrupted_runs_open_slot_is_resumable() {
        let one = format!("0-8191 [100->-{}]", id(2));
        let two = format!("8192-16383 [100-<-{}]", id(1));
        let nodes = [
            (1, "master", one.as_str()),
            (2, "master", two.as_str()),
            (3, "master", ""),
        ];
        let st = SlotState::from_survey(&survey(&nodes, &[], "ok"));
        assert!(st.blocking().is_none());
        assert!(st.refusal().is_some());
        let note = Note::parse(&format!("{} {} 0 200", id(1), id(2))).expect("note");
        assert_eq!(Note::parse(&note.text()), Some(note.clone()));
        assert_eq!(
            st.resumable(std::slice::from_ref(&note)),
            Ok(vec![(100, 0, 1)])
        );
        // Without a note, or with one for another range or pair, it is FIX's.
        assert!(st.resumable(&[]).is_err());
        let other = Note::parse(&format!("{} {} 101 200", id(1), id(2))).expect("note");
        assert!(st.resumable(&[other]).is_err());
        let reversed = Note::parse(&format!("{} {} 0 200", id(2), id(1))).expect("note");
        assert!(matches!(
            st.resumable(&[reversed]),
            Err(Problem::Open { slot: 100, .. })
        ));
        // Nothing open: nothing to resume.
        let calm = SlotState::from_survey(&survey(&[(1, "master", "0-16383")], &[], "ok"));
        assert_eq!(calm.resumable(&[]), Ok(vec![]));
        for bad in ["", "a b 1", "a a 1 2", "a b 5 4", "a b 0 16384"] {
            assert_eq!(Note::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_parallel_runs_note_covers_each_of_its_ranges() {
        let one = format!("0-8191 [100->-{}]", id(2));
        let two = format!("8192-16383 [100-<-{}]", id(1));
        let nodes = [(1, "master", one.as_str()), (2, "master", two.as_str())];
        let st = SlotState::from_survey(&survey(&nodes, &[], "ok"));
        let a = Note::parse(&format!("{} {} 0 50", id(1), id(2))).expect("note");
        let b = Note::parse(&format!("{} {} 90 120", id(1), id(2))).expect("note");
        let all = Note::parse_all(&Note::text_all(&[a.clone(), b.clone()]));
        assert_eq!(all, vec![a.clone(), b]);
        assert_eq!(st.resumable(&all), Ok(vec![(100, 0, 1)]));
        assert!(st.resumable(&[a]).is_err());
        assert_eq!(Note::parse_all("junk;;"), vec![]);
    }

    #[test]
    fn a_view_behind_a_demotion_is_no_problem() {
        // Node 3 says it is a replica now; node 1's view still calls it a master.
        let mut s = survey(&[(1, "master", "0-16383"), (3, "master", "")], &[], "ok");
        s.nodes[1].view[1].flags = vec!["myself".into(), "slave".into()];
        s.nodes[1].view[1].master_id = Some(id(1));
        let st = SlotState::from_survey(&s);
        assert_eq!(st.masters.len(), 1);
        assert_eq!(st.refusal(), None, "{:?}", st.problems);
    }

    #[test]
    fn unknown_masters_and_shared_slots() {
        let mut s = survey(&[(1, "master", "0-16383"), (2, "master", "")], &[], "ok");
        // Node 1 knows node 2 only in handshake.
        s.nodes[0].view[1].flags.push("handshake".into());
        let st = SlotState::from_survey(&s);
        assert!(
            matches!(st.refusal(), Some(Problem::Unknown { addr, .. }) if addr == "127.0.0.1:7001")
        );
        let st = SlotState::from_survey(&survey(
            &[(1, "master", "0-10"), (2, "master", "10-16383")],
            &[],
            "ok",
        ));
        assert!(matches!(
            st.refusal(),
            Some(Problem::Shared { slot: 10, .. })
        ));
    }
}
