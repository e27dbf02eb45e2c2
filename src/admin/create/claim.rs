//! The claim on empty nodes: one `PROXY CREATE` or `PROXY ADD` at a time on any node that is
//! not in a cluster yet, across proxies.
//!
//! The engines that change a cluster serialise through the lease, a key of the cluster; before
//! CREATE there is no cluster, and an empty node refuses every key (no slot is served). So the
//! claim is a connection instead: before it surveys anything, CREATE (and ADD, for its new
//! nodes, once it holds the lease) opens one connection per listed node and names it
//! `slotproxy-claim:<engine>:<listen>:pid<pid>:job<id>` (`CLIENT SETNAME`), then reads every
//! node's `CLIENT LIST`. Seeing another such name anywhere, it refuses and closes its
//! connections. The claim lives exactly as long as the run holds the connections: a proxy
//! that dies (even by SIGKILL) lets go at once, as its kernel closes the sockets.
//!
//! Why it is safe: every run names itself on all of its nodes before it lists any. Of two
//! runs sharing a node, the one that lists that node last sees the other's name there, so at
//! least one of them refuses; both may refuse (and are retried by hand), never both go on.
//! A run that went on is seen by every later run until it ends.

use super::pool::{Cmd, Pool};
use crate::admin::placement::NodeSpec;
use crate::net::dialer::Dialer;
use crate::route::resp::Value;
use anyhow::{anyhow, bail};
use std::sync::Arc;
use std::time::Duration;

/// The start of every claim's connection name.
pub const CLAIM_PREFIX: &str = "slotproxy-claim:";

/// The connection name of job `job` of engine `engine` of the proxy listening on `listen`
/// (Redis allows no spaces in a connection name, so the parts are joined with colons).
pub fn claim_name(engine: &str, listen: &str, job: u64) -> String {
    let graphic = |s: &str| -> String { s.chars().filter(|c| c.is_ascii_graphic()).collect() };
    format!(
        "{CLAIM_PREFIX}{}:{}:pid{}:job{job}",
        graphic(engine),
        graphic(listen),
        std::process::id()
    )
}

/// Another run's claim seen in a node's `CLIENT LIST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rival {
    /// Its connection name.
    pub name: String,
    /// Its client ID on that node (what `CLIENT KILL ID` takes).
    pub id: String,
    /// The address it connected from.
    pub addr: String,
}

/// The claims in a `CLIENT LIST` reply other than the connection `own_id`.
pub fn rivals(client_list: &str, own_id: &str) -> Vec<Rival> {
    client_list
        .lines()
        .filter_map(|line| {
            let field = |k: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
                    .unwrap_or("")
            };
            let name = field("name");
            (name.starts_with(CLAIM_PREFIX) && field("id") != own_id).then(|| Rival {
                name: name.to_string(),
                id: field("id").to_string(),
                addr: field("addr").to_string(),
            })
        })
        .collect()
}

/// A claim on every listed node: dropping it closes the connections, which ends the claim.
pub struct Claim {
    _conns: Pool,
}

/// Takes the claim on `nodes` under `name`, or says which node another run holds (and how to
/// free it if that run's proxy is gone).
pub async fn take(
    dialer: &Arc<Dialer>,
    nodes: &[NodeSpec],
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Claim> {
    let cmd = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Cmd>();
    let mut pool = Pool::new(dialer, nodes, timeout);
    let naming = vec![cmd(&["CLIENT", "SETNAME", name]), cmd(&["CLIENT", "ID"])];
    // None: not reached. The survey that follows refuses such a node by name (or, adopting a
    // cluster, leaves it alone), so it needs no claim.
    let mut own: Vec<Option<String>> = vec![None; nodes.len()];
    for (i, r) in pool
        .run((0..nodes.len()).map(|i| (i, naming.clone())).collect())
        .await
    {
        let Ok(replies) = r else { continue };
        match replies.as_slice() {
            [Value::Error(e), ..] | [_, Value::Error(e)] => {
                bail!("claiming {}: CLIENT refused: {e}", pool.addr(i))
            }
            [_, Value::Int(id)] => own[i] = Some(id.to_string()),
            other => bail!(
                "claiming {}: unexpected CLIENT ID reply {other:?}",
                pool.addr(i)
            ),
        }
    }
    let listing = vec![cmd(&["CLIENT", "LIST", "TYPE", "normal"])];
    let claimed = (0..nodes.len()).filter(|&i| own[i].is_some());
    let mut seen = Vec::new();
    for (i, r) in pool
        .run(claimed.map(|i| (i, listing.clone())).collect())
        .await
    {
        let replies = r.map_err(|e| anyhow!("claiming {}: {e:#}", pool.addr(i)))?;
        let text = match replies.first() {
            Some(Value::Error(e)) => {
                bail!("claiming {}: CLIENT LIST refused: {e}", pool.addr(i))
            }
            Some(v) => v
                .text()
                .map_err(|e| anyhow!("claiming {}: CLIENT LIST: {e}", pool.addr(i)))?,
            None => String::new(),
        };
        let own_id = own.get(i).and_then(Option::as_deref).unwrap_or("");
        seen.extend(rivals(&text, own_id).into_iter().map(|r| (i, r)));
    }
    if let Some((i, r)) = seen.first() {
        let node = pool.addr(*i);
        bail!(
            "refused: {node} is claimed by another CREATE or ADD (connection {} from {}, \
             client id {}); run it again when that one has finished, or, if the proxy that \
             runs it is gone, free the node with CLIENT KILL ID {} on {node}",
            r.name,
            r.addr,
            r.id,
            r.id
        );
    }
    Ok(Claim { _conns: pool })
}
