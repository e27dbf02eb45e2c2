//! The rebalancer's model of the cluster: nodes, hosts and the masters on them
//! ([`Topology`]), one failover ([`Move`]) and how it changes the model, the islands (hosts
//! joined by shards that can move between them) and the [`Plan`] with its report in lines and
//! JSON. Pure: no sockets, no clock.

use crate::admin::report::Json;
use std::collections::BTreeMap;

/// One node as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopoNode {
    /// Node ID.
    pub id: String,
    /// `ip:port`.
    pub addr: String,
    /// Host label (its IP unless labelled).
    pub host: String,
    /// The master's ID for a replica, `None` for a master.
    pub master_id: Option<String>,
    /// Slots owned (masters).
    pub slots: usize,
    /// For a replica: `master_link_status:up`. Masters: true.
    pub link_up: bool,
    /// Flagged `fail`/`fail?` by the node the topology was read from, or unreachable.
    pub failing: bool,
}

/// The cluster as the planner sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Every known node with a usable address.
    pub nodes: Vec<TopoNode>,
}

impl Topology {
    /// Masters that own slots, per host (hosts with none are listed with 0).
    pub fn masters_per_host(&self) -> BTreeMap<String, usize> {
        let mut out: BTreeMap<String, usize> = BTreeMap::new();
        for n in &self.nodes {
            let e = out.entry(n.host.clone()).or_default();
            if n.master_id.is_none() && n.slots > 0 {
                *e += 1;
            }
        }
        out
    }

    /// Most minus fewest masters per host over the whole cluster.
    pub fn spread(&self) -> usize {
        spread_of(self.masters_per_host().values().copied())
    }

    /// Applies a failover as Redis does: the replica takes the slots, the old master becomes
    /// its replica, and the old master's other replicas follow the new master.
    pub fn apply(&mut self, mv: &Move) {
        let Some(old) = self.nodes.iter().position(|n| n.id == mv.master_id) else {
            return;
        };
        let Some(new) = self.nodes.iter().position(|n| n.id == mv.replica_id) else {
            return;
        };
        let slots = self.nodes[old].slots;
        for n in self.nodes.iter_mut() {
            if n.master_id.as_deref() == Some(mv.master_id.as_str()) {
                n.master_id = Some(mv.replica_id.clone());
            }
        }
        let (o, r) = (&mut self.nodes[old], slots);
        o.master_id = Some(mv.replica_id.clone());
        o.slots = 0;
        o.link_up = true;
        o.failing = false;
        let n = &mut self.nodes[new];
        n.master_id = None;
        n.slots = r;
        n.link_up = true;
    }
}

/// Most minus fewest of `loads` (0 for none).
pub(super) fn spread_of(loads: impl Iterator<Item = usize>) -> usize {
    let (mut lo, mut hi) = (usize::MAX, 0);
    for l in loads {
        lo = lo.min(l);
        hi = hi.max(l);
    }
    hi.saturating_sub(lo.min(hi))
}

/// One planned failover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Which path of the plan it belongs to (1-based); a path's moves are listed far end first.
    pub path: usize,
    /// The replica that is promoted (`CLUSTER FAILOVER` is sent to it).
    pub replica_id: String,
    /// Its address.
    pub replica_addr: String,
    /// The master it replaces.
    pub master_id: String,
    /// The master's address.
    pub master_addr: String,
    /// Host that loses a master.
    pub from_host: String,
    /// Host that gains a master.
    pub to_host: String,
    /// Whether the master is failing and the operator allowed `CLUSTER FAILOVER FORCE`.
    pub force: bool,
}

impl Move {
    /// One line for an executed failover (re-planning renumbers paths, so no path number).
    pub fn describe_step(&self) -> String {
        format!(
            "CLUSTER FAILOVER{} on {} (replica of {}): host {} -> {}",
            if self.force { " FORCE" } else { "" },
            self.replica_addr,
            self.master_addr,
            self.from_host,
            self.to_host
        )
    }

    /// One line for a planned failover.
    pub fn describe(&self) -> String {
        format!(
            "path {}: CLUSTER FAILOVER{} on {} (replica of {}): host {} -> {}",
            self.path,
            if self.force { " FORCE" } else { "" },
            self.replica_addr,
            self.master_addr,
            self.from_host,
            self.to_host
        )
    }
}

/// One island: hosts linked by master/replica relations, directly or through chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Island {
    /// Its hosts, sorted.
    pub hosts: Vec<String>,
    /// Masters per host now (same order as `hosts`).
    pub before: Vec<usize>,
    /// Masters per host once the planned moves are done.
    pub after: Vec<usize>,
    /// The smallest spread any sequence of failovers over usable links can reach.
    pub best_spread: usize,
}

impl Island {
    /// Spread now.
    pub fn spread_before(&self) -> usize {
        spread_of(self.before.iter().copied())
    }
    /// Spread after the plan.
    pub fn spread_after(&self) -> usize {
        spread_of(self.after.iter().copied())
    }
    fn masters(&self) -> usize {
        self.before.iter().sum()
    }
}

/// What [`plan()`](super::plan()) decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Failovers in execution order.
    pub moves: Vec<Move>,
    /// Every island, the busiest first.
    pub islands: Vec<Island>,
    /// Replicas left out and other remarks, one line each.
    pub notes: Vec<String>,
    /// Whether `MAXMOVES` cut the plan short.
    pub truncated: bool,
}

impl Plan {
    /// The largest island spread now (what rebalancing can act on).
    pub fn spread_before(&self) -> usize {
        self.islands
            .iter()
            .map(Island::spread_before)
            .max()
            .unwrap_or(0)
    }
    /// The largest island spread after the plan.
    pub fn spread_after(&self) -> usize {
        self.islands
            .iter()
            .map(Island::spread_after)
            .max()
            .unwrap_or(0)
    }

    /// Lines describing islands, how to join them, and notes (after the verdict and moves).
    pub fn island_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, isl) in self.islands.iter().enumerate() {
            let loads: Vec<String> = isl
                .hosts
                .iter()
                .zip(isl.before.iter().zip(&isl.after))
                .map(|(h, (b, a))| format!("{h}:{b}->{a}"))
                .collect();
            out.push(format!(
                "island {} hosts {} masters {} spread {} -> {} (best possible {}) {}",
                i + 1,
                isl.hosts.len(),
                isl.masters(),
                isl.spread_before(),
                isl.spread_after(),
                isl.best_spread,
                loads.join(" ")
            ));
        }
        out.extend(join_hints(&self.islands));
        if self.truncated {
            out.push("stopped at MAXMOVES: more failovers would balance further".into());
        }
        out.extend(self.notes.iter().map(|n| format!("note {n}")));
        out
    }

    /// The full report of a plan that is not executed: verdict, moves, islands.
    pub fn report(&self, dry_run: bool) -> Vec<String> {
        let mut out = vec![if self.moves.is_empty() {
            format!("NOTHING TO DO spread {}", self.spread_before())
        } else {
            format!(
                "{} moves {} spread {} -> {}",
                if dry_run { "DRYRUN" } else { "PLAN" },
                self.moves.len(),
                self.spread_before(),
                self.spread_after()
            )
        }];
        out.extend(
            self.moves
                .iter()
                .enumerate()
                .map(|(i, m)| format!("move {} {}", i + 1, m.describe())),
        );
        out.extend(self.island_lines());
        out
    }
}

impl Plan {
    /// The report as one JSON document: `verdict`, `spread_before`, `spread_after`, `moves`
    /// (replica, master, from_host, to_host, force), `islands` (hosts, before, after,
    /// best_spread), `truncated`, `notes`; `moves` are the ones listed (planned, or done).
    pub fn json_value(&self, verdict: &str, moves: &[Move]) -> Json {
        let moves = moves
            .iter()
            .map(|m| {
                Json::Object(vec![
                    ("replica", Json::str(&m.replica_addr)),
                    ("replica_id", Json::str(&m.replica_id)),
                    ("master", Json::str(&m.master_addr)),
                    ("master_id", Json::str(&m.master_id)),
                    ("from_host", Json::str(&m.from_host)),
                    ("to_host", Json::str(&m.to_host)),
                    ("force", Json::Bool(m.force)),
                ])
            })
            .collect();
        let islands = self
            .islands
            .iter()
            .map(|i| {
                Json::Object(vec![
                    ("hosts", Json::strs(&i.hosts)),
                    ("before", Json::nums(&i.before)),
                    ("after", Json::nums(&i.after)),
                    ("best_spread", Json::num(i.best_spread)),
                ])
            })
            .collect();
        let after = self
            .islands
            .iter()
            .map(Island::spread_after)
            .max()
            .unwrap_or(0);
        Json::Object(vec![
            ("verdict", Json::str(verdict)),
            ("spread_before", Json::num(self.spread_before())),
            ("spread_after", Json::num(after)),
            ("moves", Json::List(moves)),
            ("islands", Json::List(islands)),
            ("truncated", Json::Bool(self.truncated)),
            ("notes", Json::strs(&self.notes)),
        ])
    }

    /// [`Plan::json_value`] as text.
    pub fn json(&self, verdict: &str, moves: &[Move]) -> String {
        self.json_value(verdict, moves).render()
    }
}

/// With several islands, how far apart they are after the plan, and how to join them. Nothing
/// moves between islands, so the only cure is a replica of a master on the heaviest island's
/// busiest host placed on the lightest island's idlest host (then a re-run can move load).
fn join_hints(islands: &[Island]) -> Vec<String> {
    if islands.len() < 2 {
        return Vec::new();
    }
    let busiest = islands.iter().enumerate().flat_map(|(i, isl)| {
        isl.hosts
            .iter()
            .zip(&isl.after)
            .map(move |(h, &l)| (l, i, h.clone()))
    });
    let hi = busiest
        .clone()
        .max_by_key(|x| (x.0, std::cmp::Reverse(x.2.clone())));
    let lo = busiest.min_by_key(|x| (x.0, x.2.clone()));
    let (Some(hi), Some(lo)) = (hi, lo) else {
        return Vec::new();
    };
    let mut out = vec![format!(
        "islands {}: nothing moves between them; hosts hold {} to {} masters (gap {})",
        islands.len(),
        lo.0,
        hi.0,
        hi.0 - lo.0
    )];
    if hi.1 != lo.1 && hi.0 >= lo.0 + 2 {
        out.push(format!(
            "join islands {} and {}: add a replica of a master on host {} to host {} \
             (or CLUSTER REPLICATE a node of host {} to such a master), then re-run",
            hi.1 + 1,
            lo.1 + 1,
            hi.2,
            lo.2,
            lo.2
        ));
    }
    out
}
