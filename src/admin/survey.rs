//! The node survey: what every node of a cluster says about itself and about the others, read
//! concurrently with a deadline per node, into plain data.
//!
//! The admin engines decide from a [`Survey`] alone (pure functions over it, unit-tested with
//! hand-built surveys), so this module is the only place where CHECK and CREATE read nodes.
//! Invariant: a [`NodeState`] is either reachable (`error == None`, every field read in one
//! pass) or not (`error` says why, the other fields are empty); a survey never mutates a node.

use crate::backend::node_client::NodeClient;
use crate::cluster::{parse_cluster_nodes, NodeLine};
use crate::net::dialer::Dialer;
use crate::route::resp::Value;
use anyhow::{anyhow, Context};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Nodes read at the same time; enough to survey hundreds of nodes in a few round trips
/// without opening hundreds of sockets at once.
pub const PARALLEL: usize = 32;

/// Cluster settings that differ between nodes by design (addresses, ports, file names, and
/// the deprecated `slave` aliases of settings that are compared under their new name).
const PER_NODE_SETTINGS: &[&str] = &[
    "cluster-config-file",
    "cluster-announce-ip",
    "cluster-announce-port",
    "cluster-announce-bus-port",
    "cluster-announce-tls-port",
    "cluster-announce-hostname",
    "cluster-port",
    "cluster-slave-no-failover",
    "cluster-slave-validity-factor",
];

/// What one node reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// `ip:port` the node was asked at.
    pub addr: String,
    /// Why the node could not be read; `None` when it answered everything.
    pub error: Option<String>,
    /// Whether `cluster-enabled` is on (false also when unreachable).
    pub cluster_enabled: bool,
    /// The node's `CLUSTER NODES`, parsed; its own line carries `myself`.
    pub view: Vec<NodeLine>,
    /// `CLUSTER INFO` fields (`cluster_state`, `cluster_current_epoch`, ...).
    pub cluster_info: BTreeMap<String, String>,
    /// `INFO replication` fields (`role`, `master_link_status`, offsets, ...).
    pub replication: BTreeMap<String, String>,
    /// Keys in the node (`DBSIZE`).
    pub dbsize: u64,
    /// `CONFIG GET cluster-*`, without the settings that differ per node by design.
    pub config: BTreeMap<String, String>,
}

impl NodeState {
    /// An unreachable node.
    pub fn unreachable(addr: &str, error: impl Into<String>) -> NodeState {
        NodeState {
            addr: addr.to_string(),
            error: Some(error.into()),
            ..Default::default()
        }
    }

    /// Whether the node answered.
    pub fn reachable(&self) -> bool {
        self.error.is_none()
    }

    /// The node's own line (`myself`) of its view.
    pub fn myself(&self) -> Option<&NodeLine> {
        self.view.iter().find(|l| l.has("myself"))
    }

    /// The node's ID, when it answered.
    pub fn id(&self) -> Option<&str> {
        self.myself().map(|m| m.id.as_str())
    }

    /// The IP part of `addr`.
    pub fn ip(&self) -> &str {
        ip_of(&self.addr)
    }

    /// A field of `INFO replication`.
    pub fn repl(&self, key: &str) -> Option<&str> {
        self.replication.get(key).map(String::as_str)
    }
}

/// The IP part of an `ip:port` address (the whole string if it has no port).
pub fn ip_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(ip, _)| ip)
}

/// Every node read in one survey, in the order they were first named or discovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Survey {
    /// One entry per node address.
    pub nodes: Vec<NodeState>,
}

impl Survey {
    /// The node asked at `addr`.
    pub fn get(&self, addr: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.addr == addr)
    }

    /// The reachable node whose own ID is `id`.
    pub fn by_id(&self, id: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.id() == Some(id))
    }

    /// The reachable nodes.
    pub fn reachable(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.iter().filter(|n| n.reachable())
    }
}

/// Failure-domain labels: a node's host is its IP unless the operator labelled it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostLabels {
    /// `ip:port` -> label.
    pub labels: BTreeMap<String, String>,
}

impl HostLabels {
    /// The host of the node at `addr`.
    pub fn host_of(&self, addr: &str) -> String {
        self.labels
            .get(addr)
            .cloned()
            .unwrap_or_else(|| ip_of(addr).to_string())
    }
}

/// Parses `key:value` lines (INFO, CLUSTER INFO), skipping comments and blank lines.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Turns a flat `CONFIG GET` reply into a map.
fn config_map(v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Value::Array(Some(items)) = v {
        for pair in items.chunks(2) {
            if let [k, val] = pair {
                if let (Ok(k), Ok(val)) = (k.text(), val.text()) {
                    if !PER_NODE_SETTINGS.contains(&k.as_str()) {
                        out.insert(k, val);
                    }
                }
            }
        }
    }
    out
}

/// Reads one node, connecting through `dialer` (the proxy's credentials and TLS). Never fails: an error becomes [`NodeState::error`]. `timeout` bounds the
/// connect and each command, and the whole read is bounded by five times that, so a node that
/// accepts connections but never answers (SIGSTOP) costs at most one timeout.
pub async fn read_node(dialer: &Dialer, addr: &str, timeout: Duration) -> NodeState {
    match tokio::time::timeout(timeout * 5, read_node_inner(dialer, addr, timeout)).await {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => NodeState::unreachable(addr, format!("{e:#}")),
        Err(_) => {
            NodeState::unreachable(addr, format!("no complete answer within {:?}", timeout * 5))
        }
    }
}

async fn read_node_inner(
    dialer: &Dialer,
    addr: &str,
    timeout: Duration,
) -> anyhow::Result<NodeState> {
    let mut c = NodeClient::connect(dialer, addr, timeout).await?;
    let mut state = NodeState {
        addr: addr.to_string(),
        ..Default::default()
    };
    match c.call(&["CLUSTER", "NODES"]).await? {
        Value::Error(e) if e.contains("cluster support disabled") => {
            state.cluster_enabled = false;
        }
        Value::Error(e) => return Err(anyhow!("CLUSTER NODES to {addr} failed: {e}")),
        v => {
            state.cluster_enabled = true;
            let text = v
                .text()
                .map_err(|e| anyhow!("CLUSTER NODES to {addr}: {e}"))?;
            state.view = parse_cluster_nodes(&text, ip_of(addr))
                .map_err(|e| anyhow!("CLUSTER NODES from {addr}: {e}"))?;
            let info = c.call_text(&["CLUSTER", "INFO"]).await?;
            state.cluster_info = parse_info(&info);
        }
    }
    let repl = c.call_text(&["INFO", "replication"]).await?;
    state.replication = parse_info(&repl);
    state.dbsize = match c.call(&["DBSIZE"]).await? {
        Value::Int(n) => u64::try_from(n).unwrap_or(0),
        other => {
            return Err(anyhow!("DBSIZE to {addr}: unexpected reply {other:?}"));
        }
    };
    let config = c
        .call(&["CONFIG", "GET", "cluster-*"])
        .await
        .with_context(|| format!("CONFIG GET cluster-* to {addr}"))?;
    state.config = config_map(&config);
    Ok(state)
}

/// Reads `addrs` concurrently (at most [`PARALLEL`] at once) through `dialer`, in the given
/// order.
pub async fn survey(dialer: &Arc<Dialer>, addrs: &[String], timeout: Duration) -> Survey {
    let sem = Arc::new(Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for (i, addr) in addrs.iter().enumerate() {
        let sem = Arc::clone(&sem);
        let dialer = Arc::clone(dialer);
        let addr = addr.clone();
        set.spawn(async move {
            let _permit = sem.acquire().await;
            (i, read_node(&dialer, &addr, timeout).await)
        });
    }
    let mut out: Vec<Option<NodeState>> = vec![None; addrs.len()];
    while let Some(res) = set.join_next().await {
        match res {
            Ok((i, state)) => out[i] = Some(state),
            Err(e) => tracing::warn!("survey task failed: {e}"),
        }
    }
    Survey {
        nodes: out
            .into_iter()
            .zip(addrs)
            .map(|(s, a)| s.unwrap_or_else(|| NodeState::unreachable(a, "survey task failed")))
            .collect(),
    }
}

/// Addresses the surveyed nodes know about that are not in the survey yet (usable lines only:
/// no handshake or noaddr entries, which carry no stable identity).
pub fn unsurveyed(s: &Survey) -> Vec<String> {
    let have: BTreeSet<&str> = s.nodes.iter().map(|n| n.addr.as_str()).collect();
    let mut out: Vec<String> = Vec::new();
    for n in s.reachable() {
        for l in &n.view {
            let a = l.addr();
            if l.is_usable() && !have.contains(a.as_str()) && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Reads `start` and then, round after round, every node the read nodes know about, until no
/// new node appears (CHECK's scope: the whole cluster, including nodes the proxy never saw).
pub async fn survey_closure(dialer: &Arc<Dialer>, start: &[String], timeout: Duration) -> Survey {
    let mut all = survey(dialer, &dedup(start), timeout).await;
    // Each round adds at least one node, and a cluster has at most a few thousand: bounded.
    for _ in 0..64 {
        let more = unsurveyed(&all);
        if more.is_empty() {
            break;
        }
        all.nodes.extend(survey(dialer, &more, timeout).await.nodes);
    }
    all
}

/// `addrs` without repeats, first occurrence kept.
pub fn dedup(addrs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in addrs {
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_config_parsing() {
        let m = parse_info("# Replication\r\nrole:slave\r\nmaster_link_status:up\r\n\r\n");
        assert_eq!(m.get("role").map(String::as_str), Some("slave"));
        assert_eq!(m.len(), 2);
        let v = Value::Array(Some(vec![
            Value::Bulk(Some("cluster-node-timeout".into())),
            Value::Bulk(Some("1000".into())),
            Value::Bulk(Some("cluster-config-file".into())),
            Value::Bulk(Some("nodes.conf".into())),
        ]));
        let c = config_map(&v);
        assert_eq!(c.len(), 1);
        assert_eq!(c["cluster-node-timeout"], "1000");
        assert_eq!(ip_of("127.0.0.2:7000"), "127.0.0.2");
        let labels = HostLabels {
            labels: [("127.0.0.2:7000".to_string(), "rack-a".to_string())].into(),
        };
        assert_eq!(labels.host_of("127.0.0.2:7000"), "rack-a");
        assert_eq!(labels.host_of("127.0.0.2:7001"), "127.0.0.2");
    }
}
