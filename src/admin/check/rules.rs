//! CHECK's rules: [`findings`] judges a [`Survey`] and never talks to a node. Each rule is one
//! function from the shared [`Context`] to its findings; `findings` is their concatenation in
//! a fixed order, so the same cluster state always prints the same report.

use super::Severity::{Error, Warn};
use super::{finding, ranges_text, Finding, LAG_BYTES, LAG_IO_SECONDS};
use crate::admin::survey::{HostLabels, NodeState, Survey};
use crate::cluster::slots::SLOT_COUNT;
use crate::cluster::NodeLine;
use std::collections::{BTreeMap, BTreeSet};

/// A node as the cluster as a whole sees it.
#[derive(Clone, Debug)]
struct TopoNode {
    id: String,
    addr: String,
    master: bool,
    master_id: Option<String>,
    slots: Vec<(u16, u16)>,
    epoch: u64,
    reachable: bool,
}

impl TopoNode {
    fn owns_slots(&self) -> bool {
        self.master && !self.slots.is_empty()
    }
}

/// The consensus topology: IDs in first-seen order.
pub(super) struct Topo {
    nodes: Vec<TopoNode>,
}

impl Topo {
    /// The consensus topology of a survey (see the module documentation of `check`).
    pub(super) fn build(s: &Survey) -> Topo {
        let mut nodes: Vec<TopoNode> = Vec::new();
        let from_line = |l: &NodeLine, reachable: bool| TopoNode {
            id: l.id.clone(),
            addr: l.addr(),
            master: l.is_master(),
            master_id: l.master_id.clone(),
            slots: l.slots.clone(),
            epoch: l.config_epoch,
            reachable,
        };
        // Own lines first: they are authoritative for the node's role and slots.
        for n in s.reachable() {
            if let Some(me) = n.myself() {
                let mut t = from_line(me, true);
                t.addr = n.addr.clone();
                nodes.push(t);
            }
        }
        for n in s.reachable() {
            for l in n.view.iter().filter(|l| !l.has("handshake")) {
                if !nodes.iter().any(|t| t.id == l.id) {
                    nodes.push(from_line(l, false));
                }
            }
        }
        Topo { nodes }
    }

    fn get(&self, id: &str) -> Option<&TopoNode> {
        self.nodes.iter().find(|t| t.id == id)
    }

    fn addr_of(&self, id: &str) -> String {
        self.get(id)
            .map(|t| t.addr.clone())
            .unwrap_or_else(|| format!("unknown node {}", short(id)))
    }

    fn masters(&self) -> impl Iterator<Item = &TopoNode> {
        self.nodes.iter().filter(|t| t.owns_slots())
    }

    fn replicas_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a TopoNode> + 'a {
        self.nodes
            .iter()
            .filter(move |t| !t.master && t.master_id.as_deref() == Some(id))
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Slot owner IDs as one node's view says.
fn owners(view: &[NodeLine]) -> Vec<Option<&str>> {
    let mut out = vec![None; SLOT_COUNT];
    for l in view.iter().filter(|l| l.is_master()) {
        for &(a, b) in &l.slots {
            for s in a..=b {
                out[s as usize] = Some(l.id.as_str());
            }
        }
    }
    out
}

fn join(v: &[String]) -> String {
    v.join(", ")
}

/// What every rule reads: the survey, the host labels, the consensus topology, the nodes that
/// answered in cluster mode, and the slot views computed once for the slot rules.
struct Context<'a> {
    survey: &'a Survey,
    hosts: &'a HostLabels,
    topo: Topo,
    /// Reachable, cluster-enabled nodes with a `myself` line.
    live: Vec<&'a NodeState>,
    /// Each live node with the slot owners its view names.
    views: Vec<(&'a NodeState, Vec<Option<&'a str>>)>,
    /// Index in `views` of the most common view (the first of the most common).
    majority: Option<usize>,
    /// Per slot, the live masters that claim it for themselves.
    claims: Vec<Vec<&'a str>>,
}

impl<'a> Context<'a> {
    fn new(s: &'a Survey, hosts: &'a HostLabels) -> Context<'a> {
        let topo = Topo::build(s);
        let live: Vec<&NodeState> = s
            .reachable()
            .filter(|n| n.cluster_enabled && n.myself().is_some())
            .collect();
        let views: Vec<(&NodeState, Vec<Option<&str>>)> =
            live.iter().map(|n| (*n, owners(&n.view))).collect();
        let mut counts: Vec<(usize, usize)> = Vec::new(); // (index of first holder, holders)
        for (i, (_, map)) in views.iter().enumerate() {
            match counts.iter_mut().find(|(j, _)| views[*j].1 == *map) {
                Some(c) => c.1 += 1,
                None => counts.push((i, 1)),
            }
        }
        let majority = counts
            .iter()
            .max_by_key(|(i, c)| (*c, std::cmp::Reverse(*i)))
            .map(|(i, _)| *i);
        let mut claims: Vec<Vec<&str>> = vec![Vec::new(); SLOT_COUNT];
        for n in &live {
            if let Some(me) = n.myself().filter(|m| m.is_master()) {
                for &(a, b) in &me.slots {
                    for s in a..=b {
                        claims[s as usize].push(n.addr.as_str());
                    }
                }
            }
        }
        Context {
            survey: s,
            hosts,
            topo,
            live,
            views,
            majority,
            claims,
        }
    }
}

/// Masters owning slots per host, every host listed (0 for none).
fn masters_per_host(c: &Context) -> BTreeMap<String, usize> {
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for t in &c.topo.nodes {
        per_host.entry(c.hosts.host_of(&t.addr)).or_insert(0);
    }
    for m in c.topo.masters() {
        *per_host.entry(c.hosts.host_of(&m.addr)).or_insert(0) += 1;
    }
    per_host
}

/// Judges a survey. Findings come grouped by code in a fixed order, each list sorted, so the
/// same cluster state always prints the same report. Outsiders (see [`outsiders`]) are
/// reported as such and left out of every other rule.
pub fn findings(s: &Survey, hosts: &HostLabels) -> Vec<Finding> {
    let outside = outsiders(s);
    let inside = Survey {
        nodes: s
            .nodes
            .iter()
            .filter(|n| !outside.contains(&n.addr))
            .cloned()
            .collect(),
    };
    let c = Context::new(&inside, hosts);
    let rules: [fn(&Context) -> Vec<Finding>; 17] = [
        rule_reachability,
        rule_membership,
        rule_flags,
        rule_roles,
        rule_slot_map_differs,
        rule_conflicting_claims,
        rule_uncovered,
        rule_open_slots,
        rule_state_not_ok,
        rule_epoch_duplicate,
        rule_replication,
        rule_master_without_replicas,
        rule_empty_masters,
        rule_colocated_replicas,
        rule_host_majority,
        rule_uneven_masters,
        rule_settings_differ,
    ];
    let mut out: Vec<Finding> = rules.iter().flat_map(|rule| rule(&c)).collect();
    out.extend(outside.into_iter().map(|addr| {
        finding(
            Warn,
            "outsider",
            format!(
                "{addr} answers but is not part of the cluster (it knows no other node and no \
                 node knows it); PROXY ADD joins it, or drop it from the proxy's seeds"
            ),
            vec![addr],
        )
    }));
    out
}

/// Surveyed nodes that stand outside the cluster: reachable, cluster-enabled, alone (their view
/// holds only themselves, handshakes aside), owning no slots, and unknown to every other node,
/// while some other node does belong to a cluster. A seed of the proxy that was never added, or
/// a node PROXY REMOVE NODES reset, looks like this; judged as members they would read as
/// membership errors of a healthy cluster.
pub fn outsiders(s: &Survey) -> Vec<String> {
    let joined = |n: &NodeState| {
        n.view
            .iter()
            .filter(|l| !l.has("handshake") && !l.has("myself"))
            .count()
            > 0
    };
    if !s.reachable().any(joined) {
        return Vec::new();
    }
    s.reachable()
        .filter(|n| n.cluster_enabled && !joined(n))
        .filter(|n| n.myself().is_some_and(|m| m.slots.is_empty()))
        .filter(|n| {
            let id = n.id().unwrap_or_default();
            !s.reachable().any(|o| {
                o.addr != n.addr && o.view.iter().any(|l| l.id == id && !l.has("handshake"))
            })
        })
        .map(|n| n.addr.clone())
        .collect()
}

/// `unreachable` and `cluster-disabled`: nodes that did not answer, or run without cluster mode.
fn rule_reachability(c: &Context) -> Vec<Finding> {
    let s = c.survey;
    let mut out = Vec::new();
    for n in &s.nodes {
        if let Some(e) = &n.error {
            out.push(finding(
                Error,
                "unreachable",
                format!("{} does not answer: {e}", n.addr),
                vec![n.addr.clone()],
            ));
        } else if !n.cluster_enabled {
            out.push(finding(
                Error,
                "cluster-disabled",
                format!("{} runs with cluster-enabled no", n.addr),
                vec![n.addr.clone()],
            ));
        }
    }
    out
}

/// `membership`: every node known to someone should be known to everyone.
fn rule_membership(c: &Context) -> Vec<Finding> {
    let topo = &c.topo;
    let live = &c.live;
    let mut out = Vec::new();
    for t in &topo.nodes {
        let missing: Vec<String> = live
            .iter()
            .filter(|o| !o.view.iter().any(|l| l.id == t.id && !l.has("handshake")))
            .map(|o| o.addr.clone())
            .collect();
        if !missing.is_empty() {
            let mut nodes = vec![t.addr.clone()];
            nodes.extend(missing.iter().cloned());
            out.push(finding(
                Error,
                "membership",
                format!(
                    "{} ({}) is unknown to {}",
                    t.addr,
                    short(&t.id),
                    join(&missing)
                ),
                nodes,
            ));
        }
    }
    out
}

/// `flags`: `handshake`, `noaddr`, `fail` and `fail?` as seen by each observer.
fn rule_flags(c: &Context) -> Vec<Finding> {
    let live = &c.live;
    let mut out = Vec::new();
    let mut flagged: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
    for o in live {
        for l in o.view.iter().filter(|l| !l.has("myself")) {
            for flag in ["fail", "fail?", "handshake", "noaddr"] {
                if l.has(flag) {
                    flagged
                        .entry((l.addr(), flag))
                        .or_default()
                        .push(o.addr.clone());
                }
            }
        }
    }
    for ((addr, flag), observers) in flagged {
        let severity = if flag == "fail?" || flag == "handshake" {
            Warn
        } else {
            Error
        };
        let mut nodes = vec![addr.clone()];
        nodes.extend(observers.iter().cloned());
        out.push(finding(
            severity,
            "flags",
            format!("{addr} is flagged {flag} by {}", join(&observers)),
            nodes,
        ));
    }
    out
}

/// `role`: a node's own view of its role against what the others think.
fn rule_roles(c: &Context) -> Vec<Finding> {
    let topo = &c.topo;
    let live = &c.live;
    let mut out = Vec::new();
    let role_of = |l: &NodeLine| -> String {
        if l.is_master() {
            "master".to_string()
        } else {
            match &l.master_id {
                Some(m) => format!("replica of {}", topo.addr_of(m)),
                None => "replica of nobody".to_string(),
            }
        }
    };
    for n in live {
        let Some(me) = n.myself() else { continue };
        let own = role_of(me);
        let mut differ: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for o in live.iter().filter(|o| o.addr != n.addr) {
            if let Some(l) = o.view.iter().find(|l| l.id == me.id) {
                let theirs = role_of(l);
                if theirs != own {
                    differ.entry(theirs).or_default().push(o.addr.clone());
                }
            }
        }
        for (theirs, observers) in differ {
            let mut nodes = vec![n.addr.clone()];
            nodes.extend(observers.iter().cloned());
            out.push(finding(
                Error,
                "role",
                format!(
                    "{} says it is {own}, but {} see it as {theirs}",
                    n.addr,
                    join(&observers)
                ),
                nodes,
            ));
        }
    }
    out
}

/// `slot-map-differs`: each view's slot owners against the most common view.
fn rule_slot_map_differs(c: &Context) -> Vec<Finding> {
    let topo = &c.topo;
    let views = &c.views;
    let majority = c.majority;
    let mut out = Vec::new();
    if let Some(m) = majority {
        let reference = &views[m].1;
        for (n, map) in views {
            if map == reference {
                continue;
            }
            // Group the differing slots by (this view's owner, majority's owner).
            let mut diffs: BTreeMap<(Option<&str>, Option<&str>), Vec<u16>> = BTreeMap::new();
            for s in 0..SLOT_COUNT {
                if map[s] != reference[s] {
                    diffs
                        .entry((map[s], reference[s]))
                        .or_default()
                        .push(s as u16);
                }
            }
            let name = |o: Option<&str>| o.map_or("nobody".to_string(), |id| topo.addr_of(id));
            let parts: Vec<String> = diffs
                .iter()
                .map(|((mine, theirs), slots)| {
                    format!(
                        "slots {} owned by {} (others: {})",
                        ranges_text(slots),
                        name(*mine),
                        name(*theirs)
                    )
                })
                .collect();
            out.push(finding(
                Error,
                "slot-map-differs",
                format!(
                    "{} disagrees with the majority view of {}: {}",
                    n.addr,
                    views[m].0.addr,
                    parts.join("; ")
                ),
                vec![n.addr.clone(), views[m].0.addr.clone()],
            ));
        }
    }
    out
}

/// `slot-map-differs` too: two reachable masters claiming one slot for themselves.
fn rule_conflicting_claims(c: &Context) -> Vec<Finding> {
    let claims = &c.claims;
    let mut out = Vec::new();
    let mut conflicts: BTreeMap<Vec<&str>, Vec<u16>> = BTreeMap::new();
    for (s, c) in claims.iter().enumerate() {
        if c.len() > 1 {
            conflicts.entry(c.clone()).or_default().push(s as u16);
        }
    }
    for (who, slots) in conflicts {
        let who: Vec<String> = who.iter().map(|s| s.to_string()).collect();
        out.push(finding(
            Error,
            "slot-map-differs",
            format!(
                "slots {} are claimed by several masters: {}",
                ranges_text(&slots),
                join(&who)
            ),
            who,
        ));
    }
    out
}

/// `uncovered`: slots no master claims (reachable masters' own claims, plus the majority view's word for unreachable owners).
fn rule_uncovered(c: &Context) -> Vec<Finding> {
    let topo = &c.topo;
    let live = &c.live;
    let views = &c.views;
    let majority = c.majority;
    let claims = &c.claims;
    let mut out = Vec::new();
    let mut covered = vec![false; SLOT_COUNT];
    for (s, c) in claims.iter().enumerate() {
        covered[s] = !c.is_empty();
    }
    if let Some(m) = majority {
        for (s, owner) in views[m].1.iter().enumerate() {
            if let Some(id) = owner {
                if topo.get(id).is_some_and(|t| !t.reachable) {
                    covered[s] = true;
                }
            }
        }
    }
    let uncovered: Vec<u16> = (0..SLOT_COUNT)
        .filter(|&s| !covered[s])
        .map(|s| s as u16)
        .collect();
    if !uncovered.is_empty() && !live.is_empty() {
        out.push(finding(
            Error,
            "uncovered",
            format!(
                "{} slot(s) have no master: {}; hint: PROXY FIX",
                uncovered.len(),
                ranges_text(&uncovered)
            ),
            Vec::new(),
        ));
    }
    out
}

/// `open-slot`: migrating or importing states left behind.
fn rule_open_slots(c: &Context) -> Vec<Finding> {
    let topo = &c.topo;
    let live = &c.live;
    let mut out = Vec::new();
    for n in live {
        let Some(me) = n.myself() else { continue };
        for (slot, dst) in &me.migrating {
            out.push(finding(
                Error,
                "open-slot",
                format!(
                    "{} has slot {slot} open: migrating to {}; hint: PROXY FIX",
                    n.addr,
                    topo.addr_of(dst)
                ),
                vec![n.addr.clone(), topo.addr_of(dst)],
            ));
        }
        for (slot, src) in &me.importing {
            out.push(finding(
                Error,
                "open-slot",
                format!(
                    "{} has slot {slot} open: importing from {}; hint: PROXY FIX",
                    n.addr,
                    topo.addr_of(src)
                ),
                vec![n.addr.clone(), topo.addr_of(src)],
            ));
        }
    }
    out
}

/// `state-not-ok`: nodes that report a `cluster_state` other than `ok`.
fn rule_state_not_ok(c: &Context) -> Vec<Finding> {
    let live = &c.live;
    let mut out = Vec::new();
    for n in live {
        let state = n
            .cluster_info
            .get("cluster_state")
            .map_or("unknown", String::as_str);
        if state != "ok" {
            out.push(finding(
                Error,
                "state-not-ok",
                format!("{} reports cluster_state:{state}", n.addr),
                vec![n.addr.clone()],
            ));
        }
    }
    out
}

/// `epoch-duplicate`: masters owning slots that share a config epoch.
fn rule_epoch_duplicate(c: &Context) -> Vec<Finding> {
    let topo = &c.topo;
    let mut out = Vec::new();
    let mut by_epoch: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for t in topo.masters() {
        by_epoch.entry(t.epoch).or_default().push(t.addr.clone());
    }
    for (epoch, addrs) in by_epoch.into_iter().filter(|(_, a)| a.len() > 1) {
        out.push(finding(
            Error,
            "epoch-duplicate",
            format!(
                "masters {} share config epoch {epoch}; a failover between them could be \
                 resolved the wrong way",
                join(&addrs)
            ),
            addrs,
        ));
    }
    out
}

/// `master-missing`, `replica-link-down`, `replica-lag`: replication link state and lag, and masters whose replicas cannot take over.
fn rule_replication(c: &Context) -> Vec<Finding> {
    let s = c.survey;
    let topo = &c.topo;
    let live = &c.live;
    let mut out = Vec::new();
    for n in live {
        let Some(me) = n.myself().filter(|m| !m.is_master()) else {
            continue;
        };
        let Some(mid) = me.master_id.as_deref() else {
            continue;
        };
        let master = topo.get(mid);
        let master_addr = topo.addr_of(mid);
        let master_state = master.and_then(|_| s.by_id(mid));
        if master_state.is_none() && master.is_some_and(TopoNode::owns_slots) {
            let never = n.repl("master_link_down_since_seconds") == Some("-1");
            out.push(finding(
                Error,
                "master-missing",
                format!(
                    "{}'s master {master_addr} does not answer and still owns slots{}; \
                     PROXY CREATE over the running nodes promotes the replica",
                    n.addr,
                    if never {
                        " (the replica never synced, so it will not fail over by itself)"
                    } else {
                        ""
                    }
                ),
                vec![n.addr.clone(), master_addr.clone()],
            ));
            continue;
        }
        if master_state.is_none() {
            continue;
        }
        let link = n.repl("master_link_status").unwrap_or("unknown");
        if link != "up" {
            out.push(finding(
                Error,
                "replica-link-down",
                format!("{} replicates {master_addr} but its link is {link}", n.addr),
                vec![n.addr.clone(), master_addr.clone()],
            ));
            continue;
        }
        let num = |v: Option<&str>| v.and_then(|x| x.parse::<u64>().ok());
        let io = num(n.repl("master_last_io_seconds_ago"));
        let gap = match (
            master_state.and_then(|m| num(m.repl("master_repl_offset"))),
            num(n.repl("slave_repl_offset")),
        ) {
            (Some(m), Some(r)) => m.saturating_sub(r),
            _ => 0,
        };
        let syncing = n.repl("master_sync_in_progress") == Some("1");
        if gap > LAG_BYTES || io.is_some_and(|s| s > LAG_IO_SECONDS) || syncing {
            out.push(finding(
                Warn,
                "replica-lag",
                format!(
                    "{} lags behind {master_addr}: {gap} bytes behind, last I/O {}s ago{}",
                    n.addr,
                    io.map_or("?".to_string(), |s| s.to_string()),
                    if syncing { ", still syncing" } else { "" }
                ),
                vec![n.addr.clone(), master_addr],
            ));
        }
    }
    out
}

/// `master-without-replicas`: masters with fewer healthy replicas than the others have.
fn rule_master_without_replicas(c: &Context) -> Vec<Finding> {
    let topo = &c.topo;
    let live = &c.live;
    let mut out = Vec::new();
    let healthy_replicas = |id: &str| {
        topo.replicas_of(id)
            .filter(|r| {
                !live.iter().any(|o| {
                    o.view
                        .iter()
                        .any(|l| l.id == r.id && (l.has("fail") || l.has("noaddr")))
                })
            })
            .count()
    };
    let expected = topo
        .masters()
        .map(|m| healthy_replicas(&m.id))
        .max()
        .unwrap_or(0);
    for m in topo.masters() {
        let have = healthy_replicas(&m.id);
        if have < expected {
            out.push(finding(
                Warn,
                "master-without-replicas",
                format!(
                    "master {} has {have} healthy replica(s) where other masters have {expected}",
                    m.addr
                ),
                vec![m.addr.clone()],
            ));
        }
    }
    out
}

/// `empty-master`: a master that owns no slots while others do (a shard just added by PROXY
/// ADD, or one drained for removal). A warning, not an error: the cluster is healthy, the
/// master just serves no data yet. (`redis-cli --cluster check` says nothing about it.)
fn rule_empty_masters(c: &Context) -> Vec<Finding> {
    let topo = &c.topo;
    if topo.masters().next().is_none() {
        return Vec::new();
    }
    topo.nodes
        .iter()
        .filter(|t| t.master && t.slots.is_empty())
        .map(|t| {
            finding(
                Warn,
                "empty-master",
                format!(
                    "master {} owns no slots, so it serves no data; PROXY REBALANCE SLOTS \
                     gives it a share, PROXY REMOVE NODES removes it",
                    t.addr
                ),
                vec![t.addr.clone()],
            )
        })
        .collect()
}

/// `colocated-replica`: a replica on its master's host.
fn rule_colocated_replicas(c: &Context) -> Vec<Finding> {
    let hosts = c.hosts;
    let topo = &c.topo;
    let mut out = Vec::new();
    for r in topo.nodes.iter().filter(|t| !t.master) {
        let Some(m) = r.master_id.as_deref().and_then(|id| topo.get(id)) else {
            continue;
        };
        let (hr, hm) = (hosts.host_of(&r.addr), hosts.host_of(&m.addr));
        if hr == hm {
            out.push(finding(
                Error,
                "colocated-replica",
                format!(
                    "replica {} and its master {} are both on host {hr}; losing the host \
                     loses the shard",
                    r.addr, m.addr
                ),
                vec![r.addr.clone(), m.addr.clone()],
            ));
        }
    }
    out
}

/// `host-majority`: a host holding half the masters or more.
fn rule_host_majority(c: &Context) -> Vec<Finding> {
    let hosts = c.hosts;
    let topo = &c.topo;
    let mut out = Vec::new();
    let total_masters = topo.masters().count();
    let per_host = masters_per_host(c);
    if total_masters >= 2 {
        for (h, &c) in &per_host {
            if c * 2 >= total_masters {
                out.push(finding(
                    Error,
                    "host-majority",
                    format!(
                        "host {h} holds {c} of {total_masters} masters; losing it leaves no \
                         majority to authorise failovers"
                    ),
                    topo.masters()
                        .filter(|m| hosts.host_of(&m.addr) == *h)
                        .map(|m| m.addr.clone())
                        .collect(),
                ));
            }
        }
    }
    out
}

/// `uneven-masters`: masters per host differ by two or more inside one island.
fn rule_uneven_masters(c: &Context) -> Vec<Finding> {
    let hosts = c.hosts;
    let topo = &c.topo;
    let mut out = Vec::new();
    let per_host = masters_per_host(c);
    for island in islands(topo, hosts) {
        let counts: Vec<(String, usize)> = island
            .iter()
            .map(|h| (h.clone(), per_host.get(h).copied().unwrap_or(0)))
            .collect();
        let max = counts.iter().map(|c| c.1).max().unwrap_or(0);
        let min = counts.iter().map(|c| c.1).min().unwrap_or(0);
        if max >= min + 2 {
            out.push(finding(
                Warn,
                "uneven-masters",
                format!(
                    "masters per host differ by {} inside the island {}; hint: PROXY \
                     REBALANCE MASTERS",
                    max - min,
                    counts
                        .iter()
                        .map(|(h, c)| format!("{h}={c}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                Vec::new(),
            ));
        }
    }
    out
}

/// `settings-differ`: cluster-wide settings that differ between nodes.
fn rule_settings_differ(c: &Context) -> Vec<Finding> {
    let live = &c.live;
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = live.iter().flat_map(|n| n.config.keys()).collect();
    for k in keys {
        let mut values: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for n in live {
            let v = n.config.get(k).map_or("(unset)", String::as_str);
            values.entry(v).or_default().push(n.addr.clone());
        }
        if values.len() > 1 {
            out.push(finding(
                Warn,
                "settings-differ",
                format!(
                    "{k} differs: {}{}",
                    values
                        .iter()
                        .map(|(v, a)| format!("{v:?} on {}", join(a)))
                        .collect::<Vec<_>>()
                        .join("; "),
                    left_by_create(k, &values)
                ),
                values.values().flatten().cloned().collect(),
            ));
        }
    }
    out
}

/// The hint for a `cluster-node-timeout` of exactly the value PROXY CREATE runs a master with
/// while it waits out Redis's rejoin delay: a create stopped in that window (a killed proxy)
/// leaves it there, and only the operator knows the value to set back.
fn left_by_create(setting: &str, values: &BTreeMap<&str, Vec<String>>) -> String {
    let low = crate::admin::create::REJOIN_TIMEOUT_MS.to_string();
    match values.get(low.as_str()) {
        Some(nodes) if setting == "cluster-node-timeout" => format!(
            " ({low} on {} may be left by a PROXY CREATE that was stopped while it had lowered \
             it for Redis's rejoin delay; set the intended value back with CONFIG SET \
             cluster-node-timeout <ms> on each)",
            join(nodes)
        ),
        _ => String::new(),
    }
}

/// Hosts linked by master-replica relations, directly or through chains (union-find), each
/// island sorted, islands in order of their first host.
pub(super) fn islands(topo: &Topo, hosts: &HostLabels) -> Vec<Vec<String>> {
    let names: Vec<String> = {
        let set: BTreeSet<String> = topo.nodes.iter().map(|t| hosts.host_of(&t.addr)).collect();
        set.into_iter().collect()
    };
    let index = |h: &str| names.iter().position(|n| n == h);
    let links = topo.nodes.iter().filter(|t| !t.master).filter_map(|r| {
        let m = r.master_id.as_deref().and_then(|id| topo.get(id))?;
        Some((
            index(&hosts.host_of(&r.addr))?,
            index(&hosts.host_of(&m.addr))?,
        ))
    });
    let island = crate::admin::islands::components(names.len(), links.collect::<Vec<_>>());
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        groups.entry(island[i]).or_default().push(n.clone());
    }
    let mut out: Vec<Vec<String>> = groups.into_values().collect();
    out.sort();
    out
}
