//! CREATE's connections: one kept connection per listed node, every node's commands of a
//! phase as one pipeline, nodes served concurrently; and the poll that reads what the wait
//! looks at.

use crate::admin::placement::NodeSpec;
use crate::admin::survey::{self, parse_info, NodeState};
use crate::backend::node_client::NodeClient;
use crate::cluster::parse_cluster_nodes;
use crate::net::dialer::Dialer;
use crate::route::resp::Value;
use anyhow::{anyhow, bail};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Nodes served at once by one phase or poll. The connections are kept, so this bounds work in
/// flight, not sockets opened per poll.
const POOL_PARALLEL: usize = 64;

/// A command as the strings it is made of.
pub(super) type Cmd = Vec<String>;

/// One kept connection per listed node, opened on first use and again after an error.
pub(super) struct Pool {
    dialer: Arc<Dialer>,
    addrs: Vec<String>,
    clients: Vec<Option<NodeClient>>,
    timeout: Duration,
}

impl Pool {
    pub(super) fn new(dialer: &Arc<Dialer>, nodes: &[NodeSpec], timeout: Duration) -> Pool {
        Pool {
            dialer: Arc::clone(dialer),
            addrs: nodes.iter().map(NodeSpec::addr).collect(),
            clients: nodes.iter().map(|_| None).collect(),
            timeout,
        }
    }

    /// The address of listed node `i` (`?` past the end).
    pub(super) fn addr(&self, i: usize) -> &str {
        self.addrs.get(i).map_or("?", String::as_str)
    }

    /// Runs each node's commands as one pipeline, nodes concurrently; the replies per node, in
    /// the order of `batches`. A connection that failed is dropped and reopened next time.
    pub(super) async fn run(
        &mut self,
        batches: Vec<(usize, Vec<Cmd>)>,
    ) -> Vec<(usize, anyhow::Result<Vec<Value>>)> {
        let sem = Arc::new(Semaphore::new(POOL_PARALLEL));
        let mut set = JoinSet::new();
        let count = batches.len();
        for (k, (i, cmds)) in batches.into_iter().enumerate() {
            let Some(addr) = self.addrs.get(i).cloned() else {
                continue;
            };
            let client = self.clients[i].take();
            let (sem, dialer, timeout) = (Arc::clone(&sem), Arc::clone(&self.dialer), self.timeout);
            set.spawn(async move {
                let _permit = sem.acquire().await;
                let mut client = match client {
                    Some(c) => c,
                    None => match NodeClient::connect(&dialer, &addr, timeout).await {
                        Ok(c) => c,
                        Err(e) => return (k, i, None, Err(e)),
                    },
                };
                match client.call_many(&cmds).await {
                    Ok(v) => (k, i, Some(client), Ok(v)),
                    Err(e) => (k, i, None, Err(e)),
                }
            });
        }
        let mut out: Vec<Option<(usize, anyhow::Result<Vec<Value>>)>> =
            (0..count).map(|_| None).collect();
        while let Some(res) = set.join_next().await {
            match res {
                Ok((k, i, client, r)) => {
                    self.clients[i] = client;
                    out[k] = Some((i, r));
                }
                Err(e) => tracing::warn!("create: a node task failed: {e}"),
            }
        }
        out.into_iter().flatten().collect()
    }

    /// Runs the batches; the first failure (a connection error or an error reply) is the error,
    /// naming the node and the command.
    pub(super) async fn run_checked(
        &mut self,
        batches: Vec<(usize, Vec<Cmd>)>,
    ) -> anyhow::Result<()> {
        let sent: HashMap<usize, Vec<Cmd>> = batches.iter().cloned().collect();
        for (i, r) in self.run(batches).await {
            let addr = &self.addrs[i];
            for (cmd, v) in sent[&i].iter().zip(r?) {
                if let Value::Error(e) = v {
                    bail!("{} on {addr} failed: {e}", cmd.join(" "));
                }
            }
        }
        Ok(())
    }

    /// Reads every listed node's `CLUSTER NODES`, `CLUSTER INFO` and `INFO replication` (the
    /// fields the wait looks at) into [`NodeState`]s, in node order.
    pub(super) async fn poll(&mut self) -> Vec<NodeState> {
        let cmd = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Cmd>();
        let reads = vec![
            cmd(&["CLUSTER", "NODES"]),
            cmd(&["CLUSTER", "INFO"]),
            cmd(&["INFO", "replication"]),
        ];
        let batches = (0..self.addrs.len()).map(|i| (i, reads.clone())).collect();
        let mut out: Vec<NodeState> = self
            .addrs
            .iter()
            .map(|a| NodeState::unreachable(a, "not polled"))
            .collect();
        for (i, r) in self.run(batches).await {
            let addr = &self.addrs[i];
            out[i] = match r.and_then(|v| node_state(addr, &v)) {
                Ok(s) => s,
                Err(e) => NodeState::unreachable(addr, format!("{e:#}")),
            };
        }
        out
    }
}

/// A [`NodeState`] from the replies to the poll's three reads.
fn node_state(addr: &str, replies: &[Value]) -> anyhow::Result<NodeState> {
    let text = |k: usize| -> anyhow::Result<String> {
        match replies.get(k) {
            Some(Value::Error(e)) => Err(anyhow!("{addr} replied: {e}")),
            Some(v) => v.text().map_err(|e| anyhow!("{addr} replied: {e}")),
            None => Err(anyhow!("{addr}: reply missing")),
        }
    };
    Ok(NodeState {
        addr: addr.to_string(),
        cluster_enabled: true,
        view: parse_cluster_nodes(&text(0)?, survey::ip_of(addr))
            .map_err(|e| anyhow!("CLUSTER NODES from {addr}: {e}"))?,
        cluster_info: parse_info(&text(1)?),
        replication: parse_info(&text(2)?),
        ..Default::default()
    })
}

/// Groups one-command steps into one pipeline per node, keeping each node's order.
pub(super) fn per_node(cmds: impl IntoIterator<Item = (usize, Cmd)>) -> Vec<(usize, Vec<Cmd>)> {
    let mut out: Vec<(usize, Vec<Cmd>)> = Vec::new();
    for (i, c) in cmds {
        match out.iter_mut().find(|(j, _)| *j == i) {
            Some((_, v)) => v.push(c),
            None => out.push((i, vec![c])),
        }
    }
    out
}

/// `CLUSTER MEET` of `other` at bus port `cport`.
pub(super) fn meet_cmd(other: &NodeSpec, cport: u16) -> Cmd {
    vec![
        s("CLUSTER"),
        s("MEET"),
        other.ip.clone(),
        other.port.to_string(),
        cport.to_string(),
    ]
}

/// A command word as an owned string.
pub(super) fn s(x: &str) -> String {
    x.to_string()
}
