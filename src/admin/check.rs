//! `PROXY CHECK [JSON]`: a read-only consistency and placement check of the whole cluster.
//!
//! [`findings`] is pure: it judges a [`Survey`] (what every node said) and never talks to a node,
//! so every finding is unit-tested from hand-built surveys. [`answer`] only surveys and prints.
//! Invariant: CHECK never sends a command that changes a node.
//!
//! Where nodes disagree, the *consensus topology* decides what a node is: a reachable node's own
//! line (`myself`) says its role, master and slots; a node that did not answer is taken from the
//! first view that lists it. Slot coverage counts only what reachable masters claim for
//! themselves (plus the claims others make for unreachable masters), so a DELSLOTS on an owner
//! shows up as uncovered even while other nodes still remember the old owner.

use super::options::{self, Accepts, CommonOptions, HostAddr, OptionError};
use super::survey::{self, HostLabels, NodeState, Survey};
use crate::admin::jobs;
use crate::admin::json_str;
use crate::cluster::slots::SLOT_COUNT;
use crate::cluster::NodeLine;
use crate::shared::Shared;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The cluster is broken or one failure away from losing data or availability.
    Error,
    /// Worth fixing; the cluster works.
    Warn,
}

impl Severity {
    /// `ERROR` or `WARN`.
    pub fn word(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Warn => "WARN",
        }
    }
}

/// One problem found. `code` is stable (tools match on it); `message` is for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// ERROR or WARN.
    pub severity: Severity,
    /// Stable identifier, e.g. `open-slot`.
    pub code: &'static str,
    /// What is wrong, naming nodes by `ip:port`.
    pub message: String,
    /// The nodes involved (`ip:port`), the offending one first.
    pub nodes: Vec<String>,
}

fn finding(severity: Severity, code: &'static str, message: String, nodes: Vec<String>) -> Finding {
    Finding {
        severity,
        code,
        message,
        nodes,
    }
}

/// Replication offset gap (bytes) above which a replica counts as lagging.
pub const LAG_BYTES: u64 = 1024 * 1024;
/// Seconds without traffic from the master above which a replica counts as lagging (masters
/// ping replicas every 10 s by default, so less is normal on an idle cluster).
pub const LAG_IO_SECONDS: u64 = 30;

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
struct Topo {
    nodes: Vec<TopoNode>,
}

impl Topo {
    fn build(s: &Survey) -> Topo {
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

/// Compact `a-b` ranges of a sorted slot list.
pub fn ranges_text(slots: &[u16]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let mut j = i;
        while j + 1 < slots.len() && slots[j + 1] == slots[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            slots[i].to_string()
        } else {
            format!("{}-{}", slots[i], slots[j])
        });
        i = j + 1;
    }
    const SHOWN: usize = 8;
    if out.len() > SHOWN {
        let more = out.len() - SHOWN;
        out.truncate(SHOWN);
        out.push(format!("and {more} more range(s)"));
    }
    out.join(",")
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

/// Judges a survey. Findings come grouped by code in a fixed order, each list sorted, so the
/// same cluster state always prints the same report.
pub fn findings(s: &Survey, hosts: &HostLabels) -> Vec<Finding> {
    use Severity::{Error, Warn};
    let mut out = Vec::new();
    let topo = Topo::build(s);
    let live: Vec<&NodeState> = s
        .reachable()
        .filter(|n| n.cluster_enabled && n.myself().is_some())
        .collect();

    // unreachable / cluster-disabled
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

    // membership: every node known to someone should be known to everyone.
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

    // flags: handshake / noaddr / fail / fail? as seen by each observer.
    let mut flagged: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
    for o in &live {
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

    // role: a node's own view of its role against what others think.
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
    for n in &live {
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

    // slot-map-differs: compare each view's slot owners with the most common one.
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
    if let Some(m) = majority {
        let reference = &views[m].1;
        for (n, map) in &views {
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
    // Two reachable masters claiming one slot for themselves.
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

    // uncovered: claims of reachable masters, plus others' word for unreachable owners.
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
                "{} slot(s) have no master: {}",
                uncovered.len(),
                ranges_text(&uncovered)
            ),
            Vec::new(),
        ));
    }

    // open-slot: migrating / importing left behind.
    for n in &live {
        let Some(me) = n.myself() else { continue };
        for (slot, dst) in &me.migrating {
            out.push(finding(
                Error,
                "open-slot",
                format!(
                    "{} has slot {slot} open: migrating to {}",
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
                    "{} has slot {slot} open: importing from {}",
                    n.addr,
                    topo.addr_of(src)
                ),
                vec![n.addr.clone(), topo.addr_of(src)],
            ));
        }
    }

    // state-not-ok
    for n in &live {
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

    // epoch-duplicate among masters that own slots.
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

    // Replication: link state and lag, and masters whose replicas cannot take over.
    for n in &live {
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

    // master-without-replicas: fewer replicas than the other masters have.
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

    // Placement: colocated replicas, host majority, islands.
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
    let total_masters = topo.masters().count();
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for t in &topo.nodes {
        per_host.entry(hosts.host_of(&t.addr)).or_insert(0);
    }
    for m in topo.masters() {
        *per_host.entry(hosts.host_of(&m.addr)).or_insert(0) += 1;
    }
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
    for island in islands(&topo, hosts) {
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

    // settings-differ
    let keys: BTreeSet<&String> = live.iter().flat_map(|n| n.config.keys()).collect();
    for k in keys {
        let mut values: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for n in &live {
            let v = n.config.get(k).map_or("(unset)", String::as_str);
            values.entry(v).or_default().push(n.addr.clone());
        }
        if values.len() > 1 {
            out.push(finding(
                Warn,
                "settings-differ",
                format!(
                    "{k} differs: {}",
                    values
                        .iter()
                        .map(|(v, a)| format!("{v:?} on {}", join(a)))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                values.values().flatten().cloned().collect(),
            ));
        }
    }
    out
}

/// Hosts linked by master-replica relations, directly or through chains (union-find), each
/// island sorted, islands in order of their first host.
fn islands(topo: &Topo, hosts: &HostLabels) -> Vec<Vec<String>> {
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

/// `OK` or `ERRORS n WARNINGS m`.
pub fn verdict(f: &[Finding]) -> String {
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    let warnings = f.len() - errors;
    if f.is_empty() {
        "OK".to_string()
    } else {
        format!("ERRORS {errors} WARNINGS {warnings}")
    }
}

/// The redis-cli form: the verdict, a summary, then one line per finding.
pub fn report_lines(s: &Survey, f: &[Finding]) -> Vec<String> {
    let mut out = vec![verdict(f)];
    let reachable = s.reachable().count();
    out.push(format!(
        "nodes {} reachable {reachable} findings {}",
        s.nodes.len(),
        f.len()
    ));
    out.extend(
        f.iter()
            .map(|x| format!("{} {} {}", x.severity.word(), x.code, x.message)),
    );
    out
}

/// The JSON form: `{"verdict", "errors", "warnings", "nodes", "reachable", "findings": [...]}`.
/// Hand-written (a few string fields) rather than pulling serde_json into the proxy.
pub fn report_json(s: &Survey, f: &[Finding]) -> String {
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    let mut out = format!(
        "{{\"verdict\":{},\"errors\":{errors},\"warnings\":{},\"nodes\":{},\"reachable\":{},\
         \"findings\":[",
        json_str(&verdict(f)),
        f.len() - errors,
        s.nodes.len(),
        s.reachable().count()
    );
    for (i, x) in f.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let nodes: Vec<String> = x.nodes.iter().map(|n| json_str(n)).collect();
        let _ = write!(
            out,
            "{{\"severity\":{},\"code\":{},\"message\":{},\"nodes\":[{}]}}",
            json_str(&x.severity.word().to_ascii_lowercase()),
            json_str(x.code),
            json_str(&x.message),
            nodes.join(",")
        );
    }
    out.push_str("]}");
    out
}

/// Per-node deadline of the admin engines' reads.
pub fn node_timeout(shared: &Shared) -> Duration {
    shared.live.connect_timeout().max(Duration::from_secs(1))
}

/// The nodes CHECK starts from: the proxy's masters, their replicas, and the seeds; the survey
/// then follows every node those know about.
pub fn start_nodes(shared: &Shared) -> Vec<String> {
    let map = shared.map.load();
    let mut out: Vec<String> = Vec::new();
    for n in &map.nodes {
        out.push(n.addr.to_string());
        out.extend(n.replicas.iter().map(|r| r.to_string()));
    }
    out.extend(shared.config.seeds.iter().cloned());
    survey::dedup(&out)
}

/// Surveys the cluster and judges it (what CREATE runs at its end too, with its host labels).
pub async fn run_check(
    start: &[String],
    timeout: Duration,
    hosts: &HostLabels,
) -> (Survey, Vec<Finding>) {
    let s = survey::survey_closure(start, timeout).await;
    let f = findings(&s, hosts);
    (s, f)
}

/// Answers `PROXY CHECK [JSON]` (args after CHECK). Registered as a job, always synchronous.
/// Parses `[JSON] [HOST <ip:port> <label>] ...`: the JSON flag and the operator's host labels
/// (a node's host is its IP unless labelled, as in CREATE and REBALANCE).
pub fn parse_args(args: &[Bytes]) -> Result<(bool, HostLabels), String> {
    const ACCEPTS: Accepts = Accepts {
        json: true,
        dryrun: false,
        detach: false,
        timeout_min_secs: None,
        host: Some(HostAddr::IpPort),
    };
    let usage = "usage: PROXY CHECK [JSON] [HOST <ip:port> <label>] ...";
    let unknown = |word: &str| {
        format!(
            "unknown or incomplete option '{}'; {usage}",
            word.to_ascii_uppercase()
                .chars()
                .take(64)
                .collect::<String>()
        )
    };
    let words = options::words(args);
    let mut common = CommonOptions::default();
    let mut i = 0;
    while i < words.len() {
        match common.take(&ACCEPTS, &words, i) {
            Ok(Some(n)) => i += n,
            Ok(None) => return Err(unknown(&words[i])),
            Err(OptionError::HostWithoutPort(addr)) => {
                return Err(format!("HOST wants ip:port, got '{addr}'; {usage}"))
            }
            Err(_) => return Err(unknown(&words[i])),
        }
    }
    Ok((common.json, common.hosts))
}

/// Answers `PROXY CHECK [JSON] [HOST <ip:port> <label>] ...`.
pub async fn answer(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let (json, hosts) = match parse_args(args) {
        Ok(x) => x,
        Err(e) => return crate::route::resp::error(&format!("ERR PROXY CHECK: {e}")),
    };
    let start = start_nodes(shared);
    if start.is_empty() {
        return crate::route::resp::error("ERR PROXY CHECK: no nodes known (no seeds configured)");
    }
    let timeout = node_timeout(shared);
    let json_out: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let cell = Rc::clone(&json_out);
    let command = if json {
        "PROXY CHECK JSON"
    } else {
        "PROXY CHECK"
    };
    let reply = jobs::run(&shared.jobs, "check", command, false, |job| async move {
        job.set_total(2);
        let (s, f) = run_check(&start, timeout, &hosts).await;
        job.step_done(format!("surveyed {} node(s)", s.nodes.len()));
        let lines = report_lines(&s, &f);
        *cell.borrow_mut() = Some(report_json(&s, &f));
        job.step_done(lines[0].clone());
        Ok(lines)
    })
    .await;
    let text = json_out.borrow_mut().take();
    match text {
        Some(text) if json => crate::route::resp::bulk(text.as_bytes()),
        _ => reply,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_arguments() {
        let a = |w: &[&str]| -> Vec<bytes::Bytes> {
            w.iter()
                .map(|x| bytes::Bytes::copy_from_slice(x.as_bytes()))
                .collect()
        };
        let (json, hosts) =
            super::parse_args(&a(&["host", "10.0.0.1:7000", "rack1", "JSON"])).expect("valid");
        assert!(json);
        assert_eq!(hosts.host_of("10.0.0.1:7000"), "rack1");
        assert_eq!(hosts.host_of("10.0.0.1:7001"), "10.0.0.1");
        assert!(super::parse_args(&a(&["HOST", "10.0.0.1:7000"])).is_err());
        assert!(super::parse_args(&a(&["HOST", "10.0.0.1", "x"])).is_err());
        assert!(super::parse_args(&a(&["NOPE"])).is_err());
    }

    use super::*;
    use crate::cluster::parse_cluster_nodes;

    /// IDs `aaaa...1`, `aaaa...2`, ... for node `i`.
    fn id(i: usize) -> String {
        format!("{:0>40}", i)
    }

    /// A node line for `parse_cluster_nodes`.
    struct L {
        i: usize,
        ip: &'static str,
        port: u16,
        flags: &'static str,
        master: Option<usize>,
        epoch: u64,
        slots: &'static str,
    }

    fn line(l: &L, myself: bool) -> String {
        format!(
            "{} {}:{}@{} {}{} {} 0 0 {} connected {}",
            id(l.i),
            l.ip,
            l.port,
            l.port + 10000,
            if myself { "myself," } else { "" },
            l.flags,
            l.master.map_or("-".to_string(), id),
            l.epoch,
            l.slots
        )
    }

    /// A healthy 3 masters + 3 replicas cluster over hosts .2 .3 .4, replicas crosswise.
    fn layout() -> Vec<L> {
        vec![
            L {
                i: 1,
                ip: "127.0.0.2",
                port: 7000,
                flags: "master",
                master: None,
                epoch: 1,
                slots: "0-5460",
            },
            L {
                i: 2,
                ip: "127.0.0.3",
                port: 7000,
                flags: "master",
                master: None,
                epoch: 2,
                slots: "5461-10922",
            },
            L {
                i: 3,
                ip: "127.0.0.4",
                port: 7000,
                flags: "master",
                master: None,
                epoch: 3,
                slots: "10923-16383",
            },
            L {
                i: 4,
                ip: "127.0.0.3",
                port: 7001,
                flags: "slave",
                master: Some(1),
                epoch: 1,
                slots: "",
            },
            L {
                i: 5,
                ip: "127.0.0.4",
                port: 7001,
                flags: "slave",
                master: Some(2),
                epoch: 2,
                slots: "",
            },
            L {
                i: 6,
                ip: "127.0.0.2",
                port: 7001,
                flags: "slave",
                master: Some(3),
                epoch: 3,
                slots: "",
            },
        ]
    }

    /// A survey in which every node sees `lines` (its own line marked myself).
    fn survey_of(lines: &[L]) -> Survey {
        let mut nodes = Vec::new();
        for me in lines {
            let text: String = lines.iter().map(|l| line(l, l.i == me.i) + "\n").collect();
            let view = parse_cluster_nodes(&text, me.ip).expect("parse");
            let mut replication = BTreeMap::new();
            if me.master.is_some() {
                replication.insert("role".into(), "slave".into());
                replication.insert("master_link_status".into(), "up".into());
                replication.insert("slave_repl_offset".into(), "100".into());
                replication.insert("master_last_io_seconds_ago".into(), "1".into());
            } else {
                replication.insert("role".into(), "master".into());
                replication.insert("master_repl_offset".into(), "100".into());
            }
            nodes.push(NodeState {
                addr: format!("{}:{}", me.ip, me.port),
                error: None,
                cluster_enabled: true,
                view,
                cluster_info: [("cluster_state".to_string(), "ok".to_string())].into(),
                replication,
                dbsize: 0,
                config: [("cluster-node-timeout".to_string(), "1000".to_string())].into(),
            });
        }
        Survey { nodes }
    }

    fn codes(f: &[Finding]) -> Vec<&'static str> {
        let mut c: Vec<&'static str> = f.iter().map(|x| x.code).collect();
        c.dedup();
        c
    }

    fn run(s: &Survey) -> Vec<Finding> {
        findings(s, &HostLabels::default())
    }

    fn set_view(s: &mut Survey, node: usize, edit: impl Fn(&mut Vec<NodeLine>)) {
        edit(&mut s.nodes[node].view);
    }

    #[test]
    fn healthy_cluster_is_ok() {
        let s = survey_of(&layout());
        let f = run(&s);
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(verdict(&f), "OK");
        assert_eq!(report_lines(&s, &f)[0], "OK");
    }

    #[test]
    fn unreachable_and_flags() {
        let mut s = survey_of(&layout());
        s.nodes[2] = NodeState::unreachable("127.0.0.4:7000", "no reply within 1s");
        for n in 0..s.nodes.len() {
            set_view(&mut s, n, |v| {
                for l in v.iter_mut().filter(|l| l.id == id(3)) {
                    l.flags = vec!["master".into(), "fail?".into()];
                }
            });
        }
        let f = run(&s);
        let c = codes(&f);
        assert!(c.contains(&"unreachable"), "{f:?}");
        let flags = f.iter().find(|x| x.code == "flags").expect("flags finding");
        assert_eq!(flags.severity, Severity::Warn);
        assert!(flags.message.contains("127.0.0.4:7000 is flagged fail?"));
        // Its slots are still covered (others vouch for the unreachable owner).
        assert!(!c.contains(&"uncovered"));
        s.nodes[0].view[2].flags = vec!["master".into(), "fail".into()];
        let f = run(&s);
        assert!(f
            .iter()
            .any(|x| x.code == "flags" && x.severity == Severity::Error));
        s.nodes[0].view.push(
            parse_cluster_nodes(
                "ffffffffffffffffffffffffffffffffffffffff 127.0.0.9:7000@17000 handshake - 0 0 0 connected",
                "",
            )
            .expect("line")
            .remove(0),
        );
        let f = run(&s);
        assert!(f.iter().any(
            |x| x.code == "flags" && x.message.contains("127.0.0.9:7000 is flagged handshake")
        ));
        // A handshake entry is not a member; nobody is "missing" it.
        assert!(!codes(&f).contains(&"membership"), "{f:?}");
    }

    #[test]
    fn membership_after_forget() {
        let mut s = survey_of(&layout());
        set_view(&mut s, 0, |v| v.retain(|l| l.id != id(5)));
        let f = run(&s);
        let m: Vec<&Finding> = f.iter().filter(|x| x.code == "membership").collect();
        assert_eq!(m.len(), 1, "{f:?}");
        assert_eq!(m[0].nodes, vec!["127.0.0.4:7001", "127.0.0.2:7000"]);
        assert!(m[0].message.contains("is unknown to 127.0.0.2:7000"));
    }

    #[test]
    fn role_disagreement() {
        let mut s = survey_of(&layout());
        // Node 4 says it is a master now; the others still see a replica.
        set_view(&mut s, 3, |v| {
            for l in v.iter_mut().filter(|l| l.id == id(4)) {
                l.flags = vec!["myself".into(), "master".into()];
                l.master_id = None;
            }
        });
        let f = run(&s);
        let r: Vec<&Finding> = f.iter().filter(|x| x.code == "role").collect();
        assert_eq!(r.len(), 1, "{f:?}");
        assert!(r[0].message.contains("127.0.0.3:7001 says it is master"));
        assert!(r[0].message.contains("replica of 127.0.0.2:7000"));
    }

    #[test]
    fn delslots_is_uncovered_and_differs() {
        let mut s = survey_of(&layout());
        // The owner deleted slots 0-99 from itself; others still remember it as owner.
        set_view(&mut s, 0, |v| {
            for l in v.iter_mut().filter(|l| l.id == id(1)) {
                l.slots = vec![(100, 5460)];
            }
        });
        s.nodes[0]
            .cluster_info
            .insert("cluster_state".into(), "fail".into());
        let f = run(&s);
        let u = f.iter().find(|x| x.code == "uncovered").expect("uncovered");
        assert!(
            u.message.contains("100 slot(s) have no master: 0-99"),
            "{u:?}"
        );
        let d = f
            .iter()
            .find(|x| x.code == "slot-map-differs")
            .expect("differs");
        assert!(d.message.starts_with("127.0.0.2:7000 disagrees"));
        assert!(d
            .message
            .contains("slots 0-99 owned by nobody (others: 127.0.0.2:7000)"));
        assert!(codes(&f).contains(&"state-not-ok"));
    }

    #[test]
    fn conflicting_claims() {
        let mut s = survey_of(&layout());
        set_view(&mut s, 1, |v| {
            for l in v.iter_mut().filter(|l| l.id == id(2)) {
                l.slots = vec![(0, 10), (5461, 10922)];
            }
        });
        let f = run(&s);
        assert!(f.iter().any(|x| x.code == "slot-map-differs"
            && x.message
                .contains("slots 0-10 are claimed by several masters")));
    }

    #[test]
    fn open_slots() {
        let mut s = survey_of(&layout());
        s.nodes[0].view[0].migrating.push((42, id(2)));
        s.nodes[1].view[1].importing.push((42, id(1)));
        let f = run(&s);
        let o: Vec<&Finding> = f.iter().filter(|x| x.code == "open-slot").collect();
        assert_eq!(o.len(), 2);
        assert!(o[0]
            .message
            .contains("127.0.0.2:7000 has slot 42 open: migrating to 127.0.0.3:7000"));
        assert!(o[1].message.contains("importing from 127.0.0.2:7000"));
    }

    #[test]
    fn duplicate_epochs() {
        let mut l = layout();
        l[2].epoch = 2;
        let f = run(&survey_of(&l));
        let e = f
            .iter()
            .find(|x| x.code == "epoch-duplicate")
            .expect("epoch-duplicate");
        assert_eq!(e.nodes, vec!["127.0.0.3:7000", "127.0.0.4:7000"]);
    }

    #[test]
    fn replication_link_and_lag() {
        let mut s = survey_of(&layout());
        s.nodes[3]
            .replication
            .insert("master_link_status".into(), "down".into());
        s.nodes[4]
            .replication
            .insert("slave_repl_offset".into(), "0".into());
        s.nodes[1].replication.insert(
            "master_repl_offset".into(),
            (LAG_BYTES + 10_000).to_string(),
        );
        let f = run(&s);
        let d = f
            .iter()
            .find(|x| x.code == "replica-link-down")
            .expect("link down");
        assert_eq!(d.nodes, vec!["127.0.0.3:7001", "127.0.0.2:7000"]);
        let l = f.iter().find(|x| x.code == "replica-lag").expect("lag");
        assert_eq!(l.severity, Severity::Warn);
        assert!(l
            .message
            .starts_with("127.0.0.4:7001 lags behind 127.0.0.3:7000"));
    }

    #[test]
    fn master_without_replicas_and_missing_master() {
        // Replica 6 is gone from the cluster entirely.
        let mut l = layout();
        l.pop();
        let f = run(&survey_of(&l));
        let m = f
            .iter()
            .find(|x| x.code == "master-without-replicas")
            .expect("master-without-replicas");
        assert_eq!(m.nodes, vec!["127.0.0.4:7000"]);

        // Master 1 never started: everyone has its rendered line, its replica never synced.
        let mut s = survey_of(&layout());
        s.nodes[0] = NodeState::unreachable("127.0.0.2:7000", "connection refused");
        s.nodes[3]
            .replication
            .insert("master_link_status".into(), "down".into());
        s.nodes[3]
            .replication
            .insert("master_link_down_since_seconds".into(), "-1".into());
        let f = run(&s);
        let m = f
            .iter()
            .find(|x| x.code == "master-missing")
            .expect("master-missing");
        assert_eq!(m.nodes, vec!["127.0.0.3:7001", "127.0.0.2:7000"]);
        assert!(m.message.contains("never synced"));
        assert!(!codes(&f).contains(&"replica-link-down"));
    }

    #[test]
    fn placement_findings() {
        // Replica 5 re-pointed to master 2's... no: to master 3, which is on its own host .4.
        let mut l = layout();
        l[4].master = Some(3);
        let f = run(&survey_of(&l));
        let c = f
            .iter()
            .find(|x| x.code == "colocated-replica")
            .expect("colocated");
        assert_eq!(c.nodes, vec!["127.0.0.4:7001", "127.0.0.4:7000"]);
        assert!(codes(&f).contains(&"master-without-replicas"));

        // Two of three masters on one host: host-majority, and uneven inside the island.
        let mut l = layout();
        l[1].ip = "127.0.0.2";
        l[1].port = 7002;
        l[3].ip = "127.0.0.3";
        let f = run(&survey_of(&l));
        let h = f
            .iter()
            .find(|x| x.code == "host-majority")
            .expect("host-majority");
        assert!(h.message.contains("host 127.0.0.2 holds 2 of 3 masters"));
        let u = f
            .iter()
            .find(|x| x.code == "uneven-masters")
            .expect("uneven");
        assert!(u.message.contains("127.0.0.2=2"));
        assert!(u.message.contains("127.0.0.3=0"));
        assert!(u.message.contains("PROXY REBALANCE MASTERS"));
    }

    #[test]
    fn islands_follow_replica_links() {
        let s = survey_of(&layout());
        let topo = Topo::build(&s);
        let isl = islands(&topo, &HostLabels::default());
        assert_eq!(isl.len(), 1);
        assert_eq!(isl[0].len(), 3);
        // Host labels merge addresses into one host.
        let labels = HostLabels {
            labels: [
                ("127.0.0.3:7000".to_string(), "127.0.0.2".to_string()),
                ("127.0.0.3:7001".to_string(), "127.0.0.2".to_string()),
            ]
            .into(),
        };
        let isl = islands(&topo, &labels);
        assert_eq!(
            isl,
            vec![vec!["127.0.0.2".to_string(), "127.0.0.4".to_string()]]
        );
    }

    #[test]
    fn settings_and_cluster_disabled() {
        let mut s = survey_of(&layout());
        s.nodes[5]
            .config
            .insert("cluster-node-timeout".into(), "5000".into());
        s.nodes.push(NodeState {
            addr: "127.0.0.9:6379".into(),
            ..Default::default()
        });
        let f = run(&s);
        let d = f
            .iter()
            .find(|x| x.code == "settings-differ")
            .expect("settings");
        assert!(d.message.contains("\"5000\" on 127.0.0.2:7001"));
        assert!(codes(&f).contains(&"cluster-disabled"));
    }

    #[test]
    fn json_and_text_forms() {
        let mut s = survey_of(&layout());
        s.nodes[2] = NodeState::unreachable("127.0.0.4:7000", "said \"no\"\n");
        let f = run(&s);
        let j = report_json(&s, &f);
        assert!(j.starts_with("{\"verdict\":\"ERRORS "));
        assert!(j.contains("\\\"no\\\"\\n"));
        assert!(j.contains("\"code\":\"unreachable\""));
        let lines = report_lines(&s, &f);
        assert!(lines[0].starts_with("ERRORS "));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("ERROR unreachable 127.0.0.4:7000")));
        assert_eq!(json_str("a\u{1}"), "\"a\\u0001\"");
        assert_eq!(ranges_text(&[1, 2, 3, 7, 9, 10]), "1-3,7,9-10");
    }
}
