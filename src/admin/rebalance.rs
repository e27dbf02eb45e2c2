//! `PROXY REBALANCE MASTERS [DRYRUN] [TOLERANCE n] [MAXMOVES k] [ASYNC] [FORCE] [JSON]
//! [TIMEOUT s] [HOST <ip|ip:port> <label>]...`: spread the masters evenly over hosts with failovers.
//!
//! The seeds' section 4, made exact. A host carries load in the form of the masters (shards
//! that own slots) running on it; a `CLUSTER FAILOVER` of a replica on host B whose master runs
//! on host A moves one master from A to B and nothing else. So the engine:
//!
//! 1. reads the live topology: `CLUSTER NODES` from one healthy node, `INFO replication` from
//!    every replica (a replica whose `master_link_status` is not `up` is never promoted);
//! 2. computes a plan with the pure [`plan`] (no sockets; unit-tested against a brute-force
//!    optimum);
//! 3. prints it and stops there with `DRYRUN`;
//! 4. otherwise takes a lease in the cluster ([`LEASE_KEY`], see [`Lease`]), then runs the
//!    plan's first failover, waits until every node shows the new roles and the demoted master
//!    has re-synced, re-reads the topology and re-plans, until the plan is empty or `MAXMOVES`
//!    failovers are done;
//! 5. reports the spread before and after, read back from the cluster.
//!
//! Re-running is safe: every run plans from live state, so a run cut short finishes what is
//! left, and a balanced cluster answers `NOTHING TO DO`.
//!
//! Only the default `CLUSTER FAILOVER` is used: the master stops accepting writes, the replica
//! catches up to the master's replication offset, and only then takes over, so no write the
//! old master acknowledged is lost. `FORCE` (operator's choice) lets the plan also move shards
//! whose master is flagged failing, with `CLUSTER FAILOVER FORCE` sent to their replica, which
//! cannot wait for a dead master. `TAKEOVER` (which skips the cluster's vote) is never used.

use crate::admin::flow::FlowNetwork;
use crate::admin::jobs::{self, Job};
use crate::admin::json_str;
use crate::admin::options::{self, Accepts, CommonOptions, HostAddr, OptionError};
use crate::backend::node_client::NodeClient;
use crate::cluster::{parse_cluster_nodes, NodeLine};
use crate::route::resp::{self, Value};
use crate::shared::Shared;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The job engine name (`PROXY JOBS`); one non-dry run at a time per proxy.
pub const ENGINE: &str = "rebalance-masters";

/// The cluster key that serialises rebalances across proxies (design decision 11).
pub const LEASE_KEY: &str = "slotproxy:lease:rebalance";

/// How long the lease lives without renewal; the engine renews it every third of this.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// Default deadline for one failover to be visible on every node and re-synced.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Print the plan only.
    pub dry_run: bool,
    /// Stop once every island's spread (most minus fewest masters per host) is at most this.
    pub tolerance: usize,
    /// Plan and run at most this many failovers (whole paths only).
    pub max_moves: Option<usize>,
    /// Reply `OK job <id>` at once and run in the background.
    pub detach: bool,
    /// Allow moving shards whose master is flagged failing (`CLUSTER FAILOVER FORCE`).
    pub force: bool,
    /// Per-failover deadline (roles visible everywhere, demoted master re-synced).
    pub timeout: Duration,
    /// Host labels by `ip:port` or `ip`; a node without a label is on the host named by its IP.
    pub labels: BTreeMap<String, String>,
    /// Reply with one JSON document instead of lines (ignored with `ASYNC`).
    pub json: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            tolerance: 1,
            max_moves: None,
            detach: false,
            force: false,
            timeout: DEFAULT_FAILOVER_TIMEOUT,
            labels: BTreeMap::new(),
            json: false,
        }
    }
}

impl Options {
    /// Parses the words after `PROXY REBALANCE` (starting with `MASTERS`).
    pub fn parse(args: &[Bytes]) -> Result<Options, String> {
        let words = options::words(args);
        match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("MASTERS") => {}
            Some("SLOTS") => {
                return Err("PROXY REBALANCE SLOTS is not implemented yet; \
                            see the README's list of what is finished"
                    .into())
            }
            _ => {
                return Err("usage: PROXY REBALANCE MASTERS [DRYRUN] [TOLERANCE n] \
                            [MAXMOVES k] [ASYNC] [FORCE] [JSON] [TIMEOUT seconds] \
                            [HOST <ip|ip:port> <label>]..."
                    .into())
            }
        }
        const ACCEPTS: Accepts = Accepts {
            json: true,
            dryrun: true,
            detach: true,
            timeout_min_secs: Some(1),
            host: Some(HostAddr::IpOrIpPort),
        };
        let mut common = CommonOptions::default();
        let mut o = Options::default();
        let mut i = 1;
        let number = |i: usize, name: &str| -> Result<usize, String> {
            words
                .get(i)
                .and_then(|w| w.parse::<usize>().ok())
                .ok_or_else(|| format!("{name} needs a non-negative integer"))
        };
        while i < words.len() {
            let taken = common.take(&ACCEPTS, &words, i).map_err(|e| match e {
                OptionError::Missing(w) if w == "HOST" => {
                    "HOST needs an address (ip or ip:port) and a label".to_string()
                }
                OptionError::TooShort(_) => "TIMEOUT must be at least 1 second".to_string(),
                _ => "TIMEOUT needs a non-negative integer".to_string(),
            })?;
            if let Some(n) = taken {
                i += n;
                continue;
            }
            match words[i].to_ascii_uppercase().as_str() {
                "FORCE" => o.force = true,
                "TOLERANCE" => {
                    o.tolerance = number(i + 1, "TOLERANCE")?;
                    i += 1;
                }
                "MAXMOVES" => {
                    o.max_moves = Some(number(i + 1, "MAXMOVES")?);
                    i += 1;
                }
                other => {
                    return Err(format!(
                        "unknown option '{}' for PROXY REBALANCE MASTERS",
                        other.chars().take(64).collect::<String>()
                    ))
                }
            }
            i += 1;
        }
        o.dry_run = common.dryrun;
        o.detach = common.detach;
        o.json = common.json;
        o.timeout = common.timeout.unwrap_or(DEFAULT_FAILOVER_TIMEOUT);
        o.labels = common.hosts.labels;
        Ok(o)
    }

    /// The host a node at `ip:port` is on.
    pub fn host_of(&self, ip: &str, port: u16) -> String {
        self.labels
            .get(&format!("{ip}:{port}"))
            .or_else(|| self.labels.get(ip))
            .cloned()
            .unwrap_or_else(|| ip.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// The model and the pure planner.
// ---------------------------------------------------------------------------------------------

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

fn spread_of(loads: impl Iterator<Item = usize>) -> usize {
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

/// What [`plan`] decided.
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
    /// best_spread), `truncated`, `notes`. Written by hand: a few flat fields do not need
    /// serde_json in the proxy.
    pub fn json(&self, verdict: &str, moves: &[Move]) -> String {
        let strs = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| json_str(s)).collect();
            format!("[{}]", items.join(","))
        };
        let nums = |v: &[usize]| {
            let items: Vec<String> = v.iter().map(usize::to_string).collect();
            format!("[{}]", items.join(","))
        };
        let moves: Vec<String> = moves
            .iter()
            .map(|m| {
                format!(
                    "{{\"replica\":{},\"replica_id\":{},\"master\":{},\"master_id\":{},\
                     \"from_host\":{},\"to_host\":{},\"force\":{}}}",
                    json_str(&m.replica_addr),
                    json_str(&m.replica_id),
                    json_str(&m.master_addr),
                    json_str(&m.master_id),
                    json_str(&m.from_host),
                    json_str(&m.to_host),
                    m.force
                )
            })
            .collect();
        let islands: Vec<String> = self
            .islands
            .iter()
            .map(|i| {
                format!(
                    "{{\"hosts\":{},\"before\":{},\"after\":{},\"best_spread\":{}}}",
                    strs(&i.hosts),
                    nums(&i.before),
                    nums(&i.after),
                    i.best_spread
                )
            })
            .collect();
        let after = self
            .islands
            .iter()
            .map(Island::spread_after)
            .max()
            .unwrap_or(0);
        format!(
            "{{\"verdict\":{},\"spread_before\":{},\"spread_after\":{},\"moves\":[{}],\
             \"islands\":[{}],\"truncated\":{},\"notes\":{}}}",
            json_str(verdict),
            self.spread_before(),
            after,
            moves.join(","),
            islands.join(","),
            self.truncated,
            strs(&self.notes)
        )
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

// ---------------------------------------------------------------------------------------------
// The engine: live topology, lease, execution.
// ---------------------------------------------------------------------------------------------

/// Answers `PROXY REBALANCE ...`; `args` starts after `REBALANCE`.
pub async fn answer(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => return resp::error(&format!("ERR {e}")),
    };
    if !opts.dry_run {
        let busy = shared
            .jobs
            .list()
            .into_iter()
            .find(|j| j.engine == ENGINE && j.running() && !j.command.contains("DRYRUN"));
        if let Some(job) = busy {
            return resp::error(&format!(
                "ERR a master rebalance is already running here as job {}; PROXY JOB {} shows it",
                job.id, job.id
            ));
        }
    }
    let words: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .collect();
    let command = format!("PROXY REBALANCE {}", words.join(" "));
    let shared2 = Arc::clone(shared);
    let json_out: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let cell = Rc::clone(&json_out);
    let json = opts.json && !opts.detach;
    let reply = jobs::run(
        &shared.jobs,
        ENGINE,
        &command,
        opts.detach,
        move |job| async move {
            let outcome = run(shared2, opts, job).await?;
            *cell.borrow_mut() = Some(outcome.json);
            Ok(outcome.lines)
        },
    )
    .await;
    let text = json_out.borrow_mut().take();
    match text {
        Some(text) if json => resp::bulk(text.as_bytes()),
        _ => reply,
    }
}

/// The live topology and the `CLUSTER NODES` lines it came from.
struct Live {
    topo: Topology,
    lines: Vec<NodeLine>,
    source: String,
}

fn node_timeout(shared: &Shared) -> Duration {
    shared
        .live
        .connect_timeout()
        .max(Duration::from_secs(2))
        .min(shared.live.request_timeout().max(Duration::from_secs(2)))
}

/// Nodes to read the topology from: the proxy's masters, their replicas, then the seeds.
fn candidates(shared: &Shared) -> Vec<String> {
    let map = shared.map.load();
    let mut out: Vec<String> = Vec::new();
    let masters = map.nodes.iter().filter(|n| !n.failing).map(|n| &*n.addr);
    let replicas = map
        .nodes
        .iter()
        .flat_map(|n| n.replicas.iter().map(|r| &**r));
    for a in masters
        .chain(replicas)
        .chain(shared.config.seeds.iter().map(String::as_str))
    {
        if !out.iter().any(|x| x == a) {
            out.push(a.to_string());
        }
    }
    out
}

/// Reads `CLUSTER NODES` from the first node that knows a master owning slots, then every
/// replica's `INFO replication` (in parallel) for its link state.
async fn read_topology(shared: &Shared, opts: &Options, extra: &[String]) -> anyhow::Result<Live> {
    let timeout = node_timeout(shared);
    let mut errors = Vec::new();
    let mut found = None;
    for addr in extra.iter().cloned().chain(candidates(shared)) {
        let got = async {
            let mut c = NodeClient::connect(&addr, timeout).await?;
            let text = c.call_text(&["CLUSTER", "NODES"]).await?;
            let ip = addr.rsplit_once(':').map_or(addr.as_str(), |x| x.0);
            parse_cluster_nodes(&text, ip).map_err(|e| anyhow!("{addr}: {e}"))
        }
        .await;
        match got {
            Ok(lines) if lines.iter().any(|l| l.is_master() && !l.slots.is_empty()) => {
                found = Some((lines, addr));
                break;
            }
            Ok(_) => errors.push(format!("{addr}: knows no master that owns slots")),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let Some((lines, source)) = found else {
        bail!("no node gave a usable CLUSTER NODES: {}", errors.join("; "));
    };
    let lines: Vec<NodeLine> = lines.into_iter().filter(NodeLine::is_usable).collect();
    let mut links = tokio::task::JoinSet::new();
    for l in lines.iter().filter(|l| !l.is_master() && !l.is_failing()) {
        let addr = l.addr();
        links.spawn(async move {
            let up = async {
                let mut c = NodeClient::connect(&addr, timeout).await?;
                let info = c.call_text(&["INFO", "replication"]).await?;
                anyhow::Ok(info.lines().any(|x| x.trim() == "master_link_status:up"))
            }
            .await
            .unwrap_or(false);
            (addr, up)
        });
    }
    let mut up: HashMap<String, bool> = HashMap::new();
    while let Some(r) = links.join_next().await {
        if let Ok((addr, ok)) = r {
            up.insert(addr, ok);
        }
    }
    let nodes = lines
        .iter()
        .map(|l| TopoNode {
            id: l.id.clone(),
            addr: l.addr(),
            host: opts.host_of(&l.ip, l.port),
            master_id: if l.is_master() {
                None
            } else {
                l.master_id.clone()
            },
            slots: l.slots.iter().map(|&(a, b)| (b - a) as usize + 1).sum(),
            link_up: l.is_master() || up.get(&l.addr()).copied().unwrap_or(false),
            failing: l.is_failing(),
        })
        .collect();
    Ok(Live {
        topo: Topology { nodes },
        lines,
        source,
    })
}

/// What a run hands back: report lines, and the same as JSON.
struct Outcome {
    lines: Vec<String>,
    json: String,
}

async fn run(shared: Arc<Shared>, opts: Options, job: Arc<Job>) -> anyhow::Result<Outcome> {
    let live = read_topology(&shared, &opts, &[])
        .await
        .context("reading the cluster topology")?;
    job.log(format!(
        "read the topology from {}: {} nodes on {} hosts",
        live.source,
        live.topo.nodes.len(),
        live.topo.masters_per_host().len()
    ));
    let first = plan(&live.topo, &opts);
    job.set_total(first.moves.len());
    job.log(format!(
        "planned {} failovers, spread {} -> {}",
        first.moves.len(),
        first.spread_before(),
        first.spread_after()
    ));
    if opts.dry_run || first.moves.is_empty() {
        let lines = first.report(opts.dry_run);
        let json = first.json(&lines[0], &first.moves);
        return Ok(Outcome { lines, json });
    }
    let holder = format!(
        "slotproxy {} pid {} job {}",
        shared.config.listen,
        std::process::id(),
        job.id
    );
    let mut lease = Lease::acquire(&live.lines, holder, node_timeout(&shared)).await?;
    job.log(format!("took the lease {LEASE_KEY} on {}", lease.addr));
    let result = async {
        // Another holder may have changed the cluster before we took the lease: plan from what
        // is there now.
        let live = read_topology(&shared, &opts, &[])
            .await
            .context("re-reading the topology after taking the lease")?;
        execute(&shared, &opts, &job, &mut lease, live, &first).await
    }
    .await;
    if let Err(e) = lease.release().await {
        job.log(format!(
            "could not release the lease (it expires by itself): {e:#}"
        ));
    }
    result
}

async fn execute(
    shared: &Shared,
    opts: &Options,
    job: &Job,
    lease: &mut Lease,
    mut live: Live,
    first: &Plan,
) -> anyhow::Result<Outcome> {
    let mut done: Vec<Move> = Vec::new();
    // Re-planning after each failover continues the first plan's count when the cluster
    // behaves as modelled; if it does not (links that stay down, someone else failing nodes
    // over), stop well before a runaway and let the operator look.
    let safety = first.moves.len() * 2 + 4;
    loop {
        if done.len() >= safety {
            job.log(format!(
                "stopping after {} failovers: the cluster keeps diverging from the plan",
                done.len()
            ));
            break;
        }
        let budget = opts.max_moves.map(|k| k.saturating_sub(done.len()));
        let now = plan(
            &live.topo,
            &Options {
                max_moves: budget,
                ..opts.clone()
            },
        );
        job.set_total(done.len() + now.moves.len());
        let Some(mv) = now.moves.first() else { break };
        lease.renew_if_due(job).await?;
        let n = done.len() + 1;
        failover(opts, job, lease, &live, mv, node_timeout(shared))
            .await
            .with_context(|| {
                format!(
                    "failover {n} ({}); {} failovers were done before it; re-run to continue",
                    mv.describe_step(),
                    done.len()
                )
            })?;
        job.step_done(format!("move {n} {}", mv.describe_step()));
        done.push(mv.clone());
        shared.trigger_refresh();
        // Read from the promoted replica first: it knows the new roles for sure.
        live = read_topology(shared, opts, std::slice::from_ref(&mv.replica_addr))
            .await
            .with_context(|| format!("re-reading the topology after failover {n}"))?;
    }
    // Verify from live state: what is left to do without a move cap.
    let left = plan(
        &live.topo,
        &Options {
            max_moves: None,
            ..opts.clone()
        },
    );
    let verdict = if done.is_empty() {
        format!("NOTHING TO DO spread {}", left.spread_before())
    } else {
        format!(
            "OK moves {} spread {} -> {}",
            done.len(),
            first.spread_before(),
            left.spread_before()
        )
    };
    let mut lines = vec![verdict];
    lines.extend(
        done.iter()
            .enumerate()
            .map(|(i, m)| format!("move {} {}", i + 1, m.describe_step())),
    );
    // Islands: before as first read, after as read back now.
    let loads = live.topo.masters_per_host();
    let mut shown = first.clone();
    for isl in shown.islands.iter_mut() {
        isl.after = isl
            .hosts
            .iter()
            .map(|h| loads.get(h).copied().unwrap_or(0))
            .collect();
    }
    shown.truncated = !left.moves.is_empty();
    shown.notes = left.notes;
    lines.extend(shown.island_lines());
    let json = shown.json(&lines[0], &done);
    Ok(Outcome { lines, json })
}

/// Sends `CLUSTER FAILOVER` to the replica, then waits until every reachable node shows the
/// new roles and the demoted master (and the shard's other replicas) have re-synced.
async fn failover(
    opts: &Options,
    job: &Job,
    lease: &mut Lease,
    live: &Live,
    mv: &Move,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut c = NodeClient::connect(&mv.replica_addr, timeout).await?;
    let args: &[&str] = if mv.force {
        &["CLUSTER", "FAILOVER", "FORCE"]
    } else {
        &["CLUSTER", "FAILOVER"]
    };
    c.call_text(args).await?;
    job.log(format!("sent {} to {}", args.join(" "), mv.replica_addr));
    let deadline = Instant::now() + opts.timeout;

    // Every node that is not known to be failing must see the new roles.
    let watchers: Vec<String> = live
        .lines
        .iter()
        .filter(|l| !l.is_failing())
        .map(NodeLine::addr)
        .collect();
    let mut pending = watchers;
    loop {
        let mut still = Vec::new();
        for addr in &pending {
            let ok = async {
                let mut c = NodeClient::connect(addr, timeout).await?;
                let text = c.call_text(&["CLUSTER", "NODES"]).await?;
                let ip = addr.rsplit_once(':').map_or(addr.as_str(), |x| x.0);
                let lines = parse_cluster_nodes(&text, ip).map_err(anyhow::Error::msg)?;
                let new_ok = lines
                    .iter()
                    .any(|l| l.id == mv.replica_id && l.is_master() && !l.slots.is_empty());
                let old_ok = lines.iter().any(|l| {
                    l.id == mv.master_id && l.master_id.as_deref() == Some(&mv.replica_id)
                });
                anyhow::Ok(new_ok && old_ok)
            }
            .await
            .unwrap_or(false);
            if !ok {
                still.push(addr.clone());
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "after {:?}, {} node(s) do not show {} as master and {} as its replica: {}",
                opts.timeout,
                pending.len(),
                mv.replica_addr,
                mv.master_addr,
                pending.join(", ")
            );
        }
        lease.renew_if_due(job).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    job.log(format!(
        "every node shows {} as master of the shard",
        mv.replica_addr
    ));

    // The demoted master and the shard's other replicas re-sync from the new master.
    let followers: Vec<String> = live
        .topo
        .nodes
        .iter()
        .filter(|n| {
            n.id == mv.master_id
                || (n.master_id.as_deref() == Some(&mv.master_id)
                    && n.id != mv.replica_id
                    && n.link_up)
        })
        .map(|n| n.addr.clone())
        .collect();
    for addr in followers {
        loop {
            let up = async {
                let mut c = NodeClient::connect(&addr, timeout).await?;
                let info = c.call_text(&["INFO", "replication"]).await?;
                anyhow::Ok(info.lines().any(|x| x.trim() == "master_link_status:up"))
            }
            .await
            .unwrap_or(false);
            if up {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{addr} has not re-synced with the new master {} within {:?}",
                    mv.replica_addr,
                    opts.timeout
                );
            }
            lease.renew_if_due(job).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Renews the lease only if this proxy's job still holds it.
const RENEW_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the lease only if this proxy's job still holds it.
const RELEASE_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('del', KEYS[1]) else return 0 end";

/// The rebalance lease: [`LEASE_KEY`] set with `NX PX` on the master owning its slot, holding a
/// description of the job (`slotproxy <listen> pid <pid> job <id>`), renewed by a compare-and-
/// expire script while the job runs and deleted at the end. Two proxies (or two clients of one
/// proxy) cannot both hold it; the loser's error names the holder. If the owner of the key's
/// slot changes (this very rebalance may fail it over), `MOVED` is followed.
pub struct Lease {
    holder: String,
    addr: String,
    timeout: Duration,
    renewed: Instant,
    next_try: Instant,
}

impl Lease {
    async fn call(&mut self, args: &[&str]) -> anyhow::Result<Value> {
        for _ in 0..5 {
            let mut c = NodeClient::connect(&self.addr, self.timeout).await?;
            let v = c.call(args).await?;
            if let Value::Error(e) = &v {
                if let Some(addr) = e
                    .strip_prefix("MOVED ")
                    .and_then(|r| r.split_whitespace().nth(1))
                {
                    self.addr = addr.to_string();
                    continue;
                }
            }
            return Ok(v);
        }
        bail!("too many MOVED redirects for {LEASE_KEY}")
    }

    /// Takes the lease, or fails naming who holds it.
    async fn acquire(
        lines: &[NodeLine],
        holder: String,
        timeout: Duration,
    ) -> anyhow::Result<Lease> {
        let slot = crate::cluster::slots::key_slot(LEASE_KEY.as_bytes());
        let owner = lines
            .iter()
            .find(|l| l.is_master() && l.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .ok_or_else(|| anyhow!("no master owns slot {slot} of the lease key {LEASE_KEY}"))?;
        let mut lease = Lease {
            holder,
            addr: owner.addr(),
            timeout,
            renewed: Instant::now(),
            next_try: Instant::now(),
        };
        let ttl = LEASE_TTL.as_millis().to_string();
        let holder = lease.holder.clone();
        let v = lease
            .call(&["SET", LEASE_KEY, &holder, "NX", "PX", &ttl])
            .await
            .context("taking the rebalance lease")?;
        match v {
            Value::Simple(s) if s == "OK" => {
                lease.renewed = Instant::now();
                lease.next_try = lease.renewed + LEASE_TTL / 3;
                Ok(lease)
            }
            Value::Bulk(None) | Value::Array(None) => {
                let who = lease
                    .call(&["GET", LEASE_KEY])
                    .await
                    .ok()
                    .and_then(|v| v.text().ok())
                    .unwrap_or_default();
                let left = match lease.call(&["PTTL", LEASE_KEY]).await {
                    Ok(Value::Int(ms)) if ms >= 0 => format!(" for another {ms} ms"),
                    _ => String::new(),
                };
                bail!("another rebalance holds the lease {LEASE_KEY}: {who:?}{left}")
            }
            other => bail!("taking the lease {LEASE_KEY}: unexpected reply {other:?}"),
        }
    }

    /// Renews the lease when a third of its life has passed. A failed attempt is retried a
    /// second later; it is an error only once the lease may have expired, or if another job
    /// holds it.
    async fn renew_if_due(&mut self, job: &Job) -> anyhow::Result<()> {
        if Instant::now() < self.next_try {
            return Ok(());
        }
        let ttl = LEASE_TTL.as_millis().to_string();
        let holder = self.holder.clone();
        match self
            .call(&["EVAL", RENEW_SCRIPT, "1", LEASE_KEY, &holder, &ttl])
            .await
        {
            Ok(Value::Int(1)) => {
                self.renewed = Instant::now();
                self.next_try = self.renewed + LEASE_TTL / 3;
                return Ok(());
            }
            Ok(Value::Int(_)) => {
                bail!("lost the rebalance lease {LEASE_KEY}: another job holds it")
            }
            Ok(other) => job.log(format!("renewing the lease: {other:?}; retrying")),
            Err(e) => job.log(format!("renewing the lease: {e:#}; retrying")),
        }
        if self.renewed.elapsed() + Duration::from_secs(2) >= LEASE_TTL {
            bail!("could not renew the rebalance lease {LEASE_KEY} before it expired");
        }
        self.next_try = Instant::now() + Duration::from_secs(1);
        Ok(())
    }

    async fn release(&mut self) -> anyhow::Result<()> {
        let holder = self.holder.clone();
        match self
            .call(&["EVAL", RELEASE_SCRIPT, "1", LEASE_KEY, &holder])
            .await?
        {
            Value::Error(e) => bail!("releasing the lease: {e}"),
            _ => Ok(()),
        }
    }

    /// The node the lease key lives on (as last seen).
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    /// Builds a topology from shards given as (master host, [replica hosts]); host `i` is named
    /// `h{i}`. Node IDs are `m{shard}` and `r{shard}.{k}`.
    fn topo(shards: &[(usize, &[usize])], extra_hosts: &[usize]) -> Topology {
        let mut nodes = Vec::new();
        for (s, (m, reps)) in shards.iter().enumerate() {
            nodes.push(TopoNode {
                id: format!("m{s}"),
                addr: format!("10.0.0.{m}:{}", 7000 + s),
                host: format!("h{m}"),
                master_id: None,
                slots: 100,
                link_up: true,
                failing: false,
            });
            for (k, r) in reps.iter().enumerate() {
                nodes.push(TopoNode {
                    id: format!("r{s}.{k}"),
                    addr: format!("10.0.0.{r}:{}", 8000 + s * 4 + k),
                    host: format!("h{r}"),
                    master_id: Some(format!("m{s}")),
                    slots: 0,
                    link_up: true,
                    failing: false,
                });
            }
        }
        for h in extra_hosts {
            // An empty master (no slots): the host counts, with no load.
            nodes.push(TopoNode {
                id: format!("e{h}"),
                addr: format!("10.0.0.{h}:9000"),
                host: format!("h{h}"),
                master_id: None,
                slots: 0,
                link_up: true,
                failing: false,
            });
        }
        Topology { nodes }
    }

    fn run_plan(t: &Topology, opts: &Options) -> Topology {
        let p = plan(t, opts);
        let mut t = t.clone();
        for m in &p.moves {
            t.apply(m);
        }
        t
    }

    /// Every master per host, island by island, and the spreads, over a sequence of failovers
    /// that checks each step is a real failover of a usable replica.
    fn check_moves_valid(t: &Topology, p: &Plan) {
        let mut t = t.clone();
        for m in &p.moves {
            let r = t
                .nodes
                .iter()
                .find(|n| n.id == m.replica_id)
                .expect("replica exists");
            assert_eq!(r.master_id.as_deref(), Some(m.master_id.as_str()), "{m:?}");
            assert!(r.link_up && !r.failing);
            t.apply(m);
        }
    }

    #[test]
    fn four_masters_on_one_host_none_on_another() {
        // h0 holds 4 masters (replicas on h1, h2, h3, h1), h1 none, h2 and h3 one each.
        let t = topo(
            &[
                (0, &[1]),
                (0, &[2]),
                (0, &[3]),
                (0, &[1]),
                (2, &[0]),
                (3, &[0]),
            ],
            &[],
        );
        let loads: Vec<usize> = t.masters_per_host().values().copied().collect();
        assert_eq!(loads, vec![4, 0, 1, 1]);
        let p = plan(&t, &Options::default());
        check_moves_valid(&t, &p);
        // 6 masters on 4 hosts: spread 1 at best; h0 gives two away directly, one to h1.
        assert_eq!(p.moves.len(), 2, "{:#?}", p.report(true));
        assert!(p.moves.iter().all(|m| m.from_host == "h0"));
        assert!(p.moves.iter().any(|m| m.to_host == "h1"));
        assert_eq!((p.spread_before(), p.spread_after()), (4, 1));
        let json = p.json(&p.report(true)[0], &p.moves);
        assert!(
            json.starts_with("{\"verdict\":\"DRYRUN moves 2 spread 4 -> 1\",\"spread_before\":4")
        );
        assert!(json.contains("\"from_host\":\"h0\""), "{json}");
        assert!(json.contains("\"before\":[4,0,1,1]"), "{json}");
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        let after = run_plan(&t, &Options::default());
        assert_eq!(after.spread(), 1);
        let again = plan(&after, &Options::default());
        assert!(again.moves.is_empty());
        assert!(again.report(false)[0].starts_with("NOTHING TO DO"));
    }

    #[test]
    fn chain_runs_far_end_first() {
        // h0: 2 masters, replicas on h1. h1: 1 master, replica on h2. h2: 0 masters.
        // h0 has no edge to h2: the only cure is h1 -> h2 first, then h0 -> h1.
        let t = topo(&[(0, &[1]), (0, &[1]), (1, &[2])], &[]);
        let p = plan(&t, &Options::default());
        check_moves_valid(&t, &p);
        assert_eq!(p.moves.len(), 2);
        assert_eq!(
            (p.moves[0].from_host.as_str(), p.moves[0].to_host.as_str()),
            ("h1", "h2")
        );
        assert_eq!(
            (p.moves[1].from_host.as_str(), p.moves[1].to_host.as_str()),
            ("h0", "h1")
        );
        assert_eq!(p.moves[0].path, p.moves[1].path);
        // No intermediate state puts more masters on a host than it started with, except the
        // far end, which ends with one more.
        let start = t.masters_per_host();
        let mut cur = t.clone();
        for m in &p.moves {
            cur.apply(m);
            for (h, n) in cur.masters_per_host() {
                assert!(n <= start[&h].max(1), "{h} has {n} masters mid-path");
            }
        }
        assert_eq!(cur.spread(), 0);
        assert!(plan(&cur, &Options::default()).moves.is_empty());
    }

    #[test]
    fn two_islands_balance_separately_and_report_the_gap() {
        // Island A: h0, h1 (3 + 1 masters, linked both ways). Island B: h2, h3 (0 + 0... plus one).
        let t = topo(
            &[
                (0, &[1]),
                (0, &[1]),
                (0, &[1]),
                (1, &[0]),
                (2, &[3]),
                (3, &[2]),
                (3, &[2]),
                (3, &[2]),
                (3, &[2]),
                (3, &[2]),
            ],
            &[],
        );
        let p = plan(&t, &Options::default());
        check_moves_valid(&t, &p);
        assert_eq!(p.islands.len(), 2);
        // A: 3/1 -> 2/2 (1 move). B: 1/5 -> 3/3 (2 moves).
        assert_eq!(p.moves.len(), 3);
        for isl in &p.islands {
            assert_eq!(isl.spread_after(), 0, "{isl:?}");
        }
        let lines = p.island_lines();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("islands 2:") && l.contains("gap 1")),
            "{lines:#?}"
        );
        assert!(p.moves.iter().all(|m| {
            let a = m.from_host == "h0" || m.from_host == "h1";
            let b = m.to_host == "h0" || m.to_host == "h1";
            a == b
        }));
        // An island with a big gap gets a join hint.
        let t = topo(
            &[(0, &[1]), (0, &[1]), (1, &[0]), (1, &[0]), (2, &[3])],
            &[],
        );
        let p = plan(&t, &Options::default());
        let lines = p.island_lines();
        assert!(p.moves.is_empty());
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("join islands") && l.contains("host h3")),
            "{lines:#?}"
        );
    }

    #[test]
    fn tolerance_and_maxmoves() {
        let t = topo(
            &[
                (0, &[1]),
                (0, &[2]),
                (0, &[3]),
                (0, &[1]),
                (0, &[2]),
                (1, &[0]),
            ],
            &[],
        );
        // Loads 5,1,0,0.
        let p = plan(&t, &Options::default());
        assert_eq!(p.spread_after(), 1);
        let exact = p.moves.len();
        let loose = plan(
            &t,
            &Options {
                tolerance: 3,
                ..Options::default()
            },
        );
        assert!(loose.moves.len() < exact);
        assert!(loose.spread_after() <= 3);
        let capped = plan(
            &t,
            &Options {
                max_moves: Some(1),
                ..Options::default()
            },
        );
        assert_eq!(capped.moves.len(), 1);
        assert!(capped.truncated);
        assert!(capped.island_lines().iter().any(|l| l.contains("MAXMOVES")));
        let none = plan(
            &t,
            &Options {
                max_moves: Some(0),
                ..Options::default()
            },
        );
        assert!(none.moves.is_empty() && none.truncated);
    }

    #[test]
    fn skips_replicas_with_link_down_and_failing_masters() {
        // h0: 3 masters, h1: 1; an empty master on h2 makes a host of its own island.
        let mut t = topo(&[(0, &[1]), (0, &[1]), (0, &[1]), (1, &[0])], &[2]);
        let set = |t: &mut Topology, id: &str, f: &dyn Fn(&mut TopoNode)| {
            t.nodes.iter_mut().filter(|n| n.id == id).for_each(f);
        };
        for id in ["r0.0", "r1.0", "r2.0"] {
            set(&mut t, id, &|n| n.link_up = false);
        }
        let p = plan(&t, &Options::default());
        assert!(p.moves.is_empty());
        assert_eq!(p.notes.len(), 3, "{:?}", p.notes);
        assert_eq!(p.islands.len(), 2);
        // m0 is failing (so its replica's link is down too): it moves only with FORCE.
        set(&mut t, "m0", &|n| n.failing = true);
        let p = plan(&t, &Options::default());
        assert!(p.moves.is_empty());
        assert!(p.notes.iter().any(|n| n.contains("is failing")));
        let forced = plan(
            &t,
            &Options {
                force: true,
                ..Options::default()
            },
        );
        assert_eq!(forced.moves.len(), 1, "{:#?}", forced.report(true));
        assert!(forced.moves[0].force && forced.moves[0].master_id == "m0");
    }

    /// The fewest failovers that reach spread <= max(tolerance, best) in a single island,
    /// by breadth-first search over failover sequences (each state a full topology).
    fn brute_force(t: &Topology, tolerance: usize) -> (usize, usize) {
        let key = |t: &Topology| {
            let mut v: Vec<(String, Option<String>)> = t
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.master_id.clone()))
                .collect();
            v.sort();
            v
        };
        let mut seen: HashMap<Vec<(String, Option<String>)>, usize> = HashMap::new();
        let mut states = vec![(t.clone(), 0usize)];
        seen.insert(key(t), 0);
        let mut i = 0;
        while i < states.len() {
            let (cur, d) = states[i].clone();
            i += 1;
            for r in cur.nodes.iter().filter(|n| n.link_up && !n.failing) {
                let Some(m) = r.master_id.as_ref() else {
                    continue;
                };
                let master = cur.nodes.iter().find(|n| &n.id == m).expect("master");
                if master.slots == 0 {
                    continue;
                }
                let mv = Move {
                    path: 0,
                    replica_id: r.id.clone(),
                    replica_addr: r.addr.clone(),
                    master_id: m.clone(),
                    master_addr: master.addr.clone(),
                    from_host: master.host.clone(),
                    to_host: r.host.clone(),
                    force: false,
                };
                let mut next = cur.clone();
                next.apply(&mv);
                let k = key(&next);
                if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(k) {
                    e.insert(d + 1);
                    states.push((next, d + 1));
                }
            }
        }
        let best = states.iter().map(|(s, _)| s.spread()).min().unwrap_or(0);
        let want = best.max(tolerance);
        let moves = states
            .iter()
            .filter(|(s, _)| s.spread() <= want)
            .map(|(_, d)| *d)
            .min()
            .unwrap_or(0);
        (best, moves)
    }

    fn connected(hosts: usize, shards: &[(usize, Vec<usize>)]) -> bool {
        let mut p: Vec<usize> = (0..hosts).collect();
        fn f(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                x = p[x];
            }
            x
        }
        for (m, reps) in shards {
            for r in reps {
                let (a, b) = (f(&mut p, *m), f(&mut p, *r));
                p[a] = b;
            }
        }
        let roots: HashSet<usize> = (0..hosts).map(|h| f(&mut p, h)).collect();
        roots.len() == 1
    }

    #[test]
    fn matches_brute_force_optimum_on_random_graphs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5107);
        let mut checked = 0;
        let mut nontrivial = 0;
        while checked < 400 {
            let hosts = rng.gen_range(2..=5);
            let n_shards = rng.gen_range(1..=6);
            let replicas = if rng.gen_bool(0.3) { 2 } else { 1 };
            let shards: Vec<(usize, Vec<usize>)> = (0..n_shards)
                .map(|_| {
                    let mut hs: Vec<usize> = (0..hosts).collect();
                    // Mostly distinct hosts per shard; sometimes a replica shares its master's.
                    let mut out = Vec::new();
                    for _ in 0..=replicas.min(hosts - 1) {
                        let i = rng.gen_range(0..hs.len());
                        out.push(hs.swap_remove(i));
                    }
                    if rng.gen_bool(0.05) {
                        out.push(out[0]);
                    }
                    (out[0], out[1..].to_vec())
                })
                .collect();
            if !connected(hosts, &shards) {
                continue;
            }
            let refs: Vec<(usize, &[usize])> =
                shards.iter().map(|(m, r)| (*m, r.as_slice())).collect();
            let mut t = topo(&refs, &[]);
            if rng.gen_bool(0.2) {
                // One replica with its link down.
                let reps: Vec<usize> = (0..t.nodes.len())
                    .filter(|&i| t.nodes[i].master_id.is_some())
                    .collect();
                let i = reps[rng.gen_range(0..reps.len())];
                t.nodes[i].link_up = false;
            }
            let tolerance = [0, 1, 1, 2][rng.gen_range(0..4)];
            let opts = Options {
                tolerance,
                ..Options::default()
            };
            let (best, optimum) = brute_force(&t, tolerance);
            let p = plan(&t, &opts);
            check_moves_valid(&t, &p);
            let after = run_plan(&t, &opts);
            assert_eq!(
                p.moves.len(),
                optimum,
                "shards {shards:?} tolerance {tolerance}: plan {:#?}",
                p.report(true)
            );
            assert!(after.spread() <= best.max(tolerance), "{shards:?}");
            assert_eq!(p.islands[0].best_spread, best, "{shards:?}");
            assert_eq!(after.spread(), p.spread_after());
            // A second plan on the result does nothing.
            assert!(plan(&after, &opts).moves.is_empty(), "{shards:?}");
            checked += 1;
            nontrivial += usize::from(optimum >= 2);
        }
        assert!(nontrivial > 40, "too few multi-move cases: {nontrivial}");
    }

    #[test]
    fn seeds_greedy_counterexamples_are_planned_minimally() {
        // Two equally loaded hosts, one with a direct edge to the empty host: 1 move, not 2.
        // h0:1 (edge h0->h3), h2:2 (edges h2->h3, h2->h0), h3:2 (edges h3->h2, h3->h1), h1:0.
        let t = topo(
            &[(3, &[2]), (0, &[3]), (2, &[3]), (3, &[1]), (2, &[0])],
            &[],
        );
        assert_eq!(
            plan(
                &t,
                &Options {
                    tolerance: 0,
                    ..Options::default()
                }
            )
            .moves
            .len(),
            1
        );
        // With TOLERANCE 2 one long path (2 moves) beats a near target plus a second path.
        let t = topo(
            &[(2, &[0]), (1, &[2]), (1, &[2]), (1, &[2]), (1, &[2])],
            &[],
        );
        let p = plan(
            &t,
            &Options {
                tolerance: 2,
                ..Options::default()
            },
        );
        assert_eq!(p.moves.len(), 2, "{:#?}", p.report(true));
    }

    #[test]
    fn plans_a_large_cluster_quickly() {
        // 60 hosts, 300 shards, replicas on the next two hosts, all masters on 10 hosts.
        let mut shards = Vec::new();
        let reps: Vec<Vec<usize>> = (0..300)
            .map(|s| vec![(s % 10 + 1 + s % 50) % 60, (s % 10 + 7 + s % 53) % 60])
            .collect();
        for (s, r) in reps.iter().enumerate() {
            shards.push((s % 10, r.as_slice()));
        }
        let shards: Vec<(usize, &[usize])> =
            shards.into_iter().filter(|(m, r)| !r.contains(m)).collect();
        let t = topo(&shards, &[]);
        let started = Instant::now();
        let p = plan(&t, &Options::default());
        check_moves_valid(&t, &p);
        assert!(p.spread_after() < p.spread_before());
        // Not a timing assertion on the result: only a guard against an exponential blow-up.
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn parses_options() {
        let args: Vec<Bytes> = [
            "masters",
            "dryrun",
            "TOLERANCE",
            "2",
            "MAXMOVES",
            "3",
            "HOST",
            "127.0.0.2",
            "rack-b",
            "ASYNC",
            "FORCE",
            "TIMEOUT",
            "9",
        ]
        .iter()
        .map(|s| Bytes::from(s.to_string()))
        .collect();
        let o = Options::parse(&args).expect("parses");
        assert!(o.dry_run && o.detach && o.force);
        assert_eq!((o.tolerance, o.max_moves), (2, Some(3)));
        assert_eq!(o.timeout, Duration::from_secs(9));
        assert_eq!(o.host_of("127.0.0.2", 7000), "rack-b");
        assert_eq!(o.host_of("127.0.0.3", 7000), "127.0.0.3");
        let bad = |w: &[&str]| {
            Options::parse(
                &w.iter()
                    .map(|s| Bytes::from(s.to_string()))
                    .collect::<Vec<_>>(),
            )
            .unwrap_err()
        };
        assert!(bad(&["SLOTS"]).contains("not implemented"));
        assert!(bad(&["MASTERS", "TOLERANCE"]).contains("TOLERANCE"));
        assert!(bad(&["MASTERS", "BOGUS"]).contains("BOGUS"));
        assert!(bad(&[]).contains("usage"));
    }
}
