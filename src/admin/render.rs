//! Renders a [`Plan`] into each node's `nodes.conf` and a `redis.conf` fragment, so nodes start
//! already knowing the whole cluster (the seeds' fast creation: no `CLUSTER MEET` handshakes, no
//! slot assignment round trips).
//!
//! Invariants of the rendered text, which Redis 7.0 needs to load the files without fixing them
//! up after start: every file lists every node once, exactly one line carries `myself`, masters
//! have unique config epochs `1..=M` (shard order) so no epoch collision has to be resolved,
//! replicas carry their master's epoch, and the last line is `vars currentEpoch M lastVoteEpoch 0`.
//! Lines appear in node-index order, so the files of all nodes agree line by line except for the
//! `myself` flag.

use crate::admin::placement::{NodeSpec, Plan};
use anyhow::Context;
use rand::Rng;
use std::fmt::Write as _;
use std::path::Path;

/// The rendered configuration of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedNode {
    /// Index of the node in the `nodes` given to [`render`].
    pub index: usize,
    /// Address the node binds, announces and sends cluster-bus traffic from.
    pub ip: String,
    /// Client port; the cluster bus is `port + 10000`.
    pub port: u16,
    /// The node's 40-hex-digit cluster ID.
    pub node_id: String,
    /// Full `nodes.conf` content, with this node's line flagged `myself`.
    pub nodes_conf: String,
    /// `redis.conf` fragment; the caller appends `dir`, `logfile` and `pidfile`.
    pub redis_conf: String,
}

/// Knobs of [`render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// `cluster-node-timeout` in milliseconds.
    pub node_timeout_ms: u64,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            node_timeout_ms: 5000,
        }
    }
}

/// A fresh random cluster node ID: 40 lowercase hex characters, like Redis's own.
pub fn random_node_id() -> String {
    let mut rng = rand::thread_rng();
    (0..40)
        .map(|_| {
            let digit: u32 = rng.gen_range(0..16);
            char::from_digit(digit, 16).unwrap_or('0')
        })
        .collect()
}

/// Renders every node's configuration. `ids[i]` is the ID of `nodes[i]`; nodes that belong to no
/// shard of `plan` are left out (a plan from [`crate::admin::placement::plan`] uses every node).
///
/// # Panics
/// If `ids.len() != nodes.len()` or the plan refers to a node index outside `nodes`; both are
/// programming errors of the caller, not bad input.
pub fn render(
    nodes: &[NodeSpec],
    plan: &Plan,
    ids: &[String],
    opts: &RenderOptions,
) -> Vec<RenderedNode> {
    assert_eq!(ids.len(), nodes.len(), "one node ID per node");
    let roles = plan.roles(nodes.len());
    let current_epoch = plan.shards.iter().map(|s| s.epoch).max().unwrap_or(0);

    // Each node's line split around the flags, so each file can insert its own `myself,`.
    let mut lines: Vec<(usize, String, String)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let Some((shard_index, is_master)) = roles[i] else {
            continue;
        };
        let shard = &plan.shards[shard_index];
        let bus_port = u32::from(node.port) + 10000;
        let head = format!("{} {}:{}@{} ", ids[i], node.ip, node.port, bus_port);
        let tail = if is_master {
            format!(
                "master - 0 0 {} connected {}-{}",
                shard.epoch, shard.slots.0, shard.slots.1
            )
        } else {
            format!("slave {} 0 0 {} connected", ids[shard.master], shard.epoch)
        };
        lines.push((i, head, tail));
    }

    lines
        .iter()
        .map(|(i, _, _)| {
            let node = &nodes[*i];
            let mut nodes_conf = String::new();
            for (j, head, tail) in &lines {
                nodes_conf.push_str(head);
                if j == i {
                    nodes_conf.push_str("myself,");
                }
                nodes_conf.push_str(tail);
                nodes_conf.push('\n');
            }
            let _ = writeln!(
                nodes_conf,
                "vars currentEpoch {current_epoch} lastVoteEpoch 0"
            );
            RenderedNode {
                index: *i,
                ip: node.ip.clone(),
                port: node.port,
                node_id: ids[*i].clone(),
                nodes_conf,
                redis_conf: redis_conf_fragment(node, opts),
            }
        })
        .collect()
}

/// The per-node `redis.conf` fragment. `bind-source-addr` matters on multi-address hosts (and on
/// 127.0.0.x test layouts): without it cluster-bus connections leave from the default address,
/// peers see an unknown source, and the cluster never forms. Protected mode is left to the
/// operator (a comment in the fragment says what to do): turning it off is a security decision.
fn redis_conf_fragment(node: &NodeSpec, opts: &RenderOptions) -> String {
    format!(
        "port {port}\n\
         bind {ip}\n\
         bind-source-addr {ip}\n\
         cluster-enabled yes\n\
         cluster-config-file nodes.conf\n\
         cluster-node-timeout {timeout}\n\
         appendonly no\n\
         save \"\"\n\
         # Redis 7 protected mode refuses replicas on other hosts while no password is set:\n\
         # add requirepass + masterauth, or protected-mode no on a trusted network.\n",
        port = node.port,
        ip = node.ip,
        timeout = opts.node_timeout_ms,
    )
}

/// Writes `<dir>/<ip>-<port>/nodes.conf` and `<dir>/<ip>-<port>/redis.conf` for every node,
/// creating the directories.
pub fn render_to_dir(dir: &Path, rendered: &[RenderedNode]) -> anyhow::Result<()> {
    for node in rendered {
        let node_dir = dir.join(format!("{}-{}", node.ip, node.port));
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("creating node directory {}", node_dir.display()))?;
        let nodes_conf = node_dir.join("nodes.conf");
        std::fs::write(&nodes_conf, &node.nodes_conf)
            .with_context(|| format!("writing {}", nodes_conf.display()))?;
        let redis_conf = node_dir.join("redis.conf");
        std::fs::write(&redis_conf, &node.redis_conf)
            .with_context(|| format!("writing {}", redis_conf.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::placement::{plan, PlanOptions};

    fn sample() -> (Vec<NodeSpec>, Plan, Vec<String>, Vec<RenderedNode>) {
        let mut nodes = Vec::new();
        for h in 1..=3 {
            for k in 0..2 {
                nodes.push(NodeSpec::new(format!("127.0.0.{h}"), 30000 + k));
            }
        }
        let p = plan(&nodes, &PlanOptions::default()).expect("plan");
        let ids: Vec<String> = (0..nodes.len()).map(|_| random_node_id()).collect();
        let rendered = render(&nodes, &p, &ids, &RenderOptions::default());
        (nodes, p, ids, rendered)
    }

    #[test]
    fn node_ids_are_40_lowercase_hex() {
        for _ in 0..100 {
            let id = random_node_id();
            assert_eq!(id.len(), 40);
            assert!(id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_ne!(random_node_id(), random_node_id());
    }

    #[test]
    fn nodes_conf_lines() {
        let (nodes, p, ids, rendered) = sample();
        assert_eq!(rendered.len(), nodes.len());
        for r in &rendered {
            let lines: Vec<&str> = r.nodes_conf.lines().collect();
            assert_eq!(lines.len(), nodes.len() + 1);
            assert_eq!(lines[nodes.len()], "vars currentEpoch 3 lastVoteEpoch 0");
            let myself: Vec<&&str> = lines.iter().filter(|l| l.contains("myself")).collect();
            assert_eq!(myself.len(), 1);
            assert!(myself[0].starts_with(&r.node_id));
            for (i, line) in lines[..nodes.len()].iter().enumerate() {
                let f: Vec<&str> = line.split(' ').collect();
                assert_eq!(f[0], ids[i]);
                assert_eq!(
                    f[1],
                    format!(
                        "{}:{}@{}",
                        nodes[i].ip,
                        nodes[i].port,
                        nodes[i].port + 10000
                    )
                );
                assert_eq!(f[4..6], ["0", "0"]);
                assert_eq!(f[7], "connected");
                let (shard_index, is_master) = p.roles(nodes.len())[i].expect("placed");
                let shard = &p.shards[shard_index];
                assert_eq!(f[6], shard.epoch.to_string());
                let flags = if is_master { "master" } else { "slave" };
                let expected = if i == r.index {
                    format!("myself,{flags}")
                } else {
                    flags.to_string()
                };
                assert_eq!(f[2], expected);
                if is_master {
                    assert_eq!(f[3], "-");
                    assert_eq!(f[8], format!("{}-{}", shard.slots.0, shard.slots.1));
                    assert_eq!(f.len(), 9);
                } else {
                    assert_eq!(f[3], ids[shard.master]);
                    assert_eq!(f.len(), 8);
                }
            }
        }
        // Master epochs are exactly 1..=M.
        let mut epochs: Vec<u64> = p.shards.iter().map(|s| s.epoch).collect();
        epochs.sort_unstable();
        assert_eq!(epochs, vec![1, 2, 3]);
    }

    #[test]
    fn redis_conf_fragment_and_files() {
        let (_, _, _, rendered) = sample();
        let r = &rendered[2];
        for needle in [
            format!("port {}\n", r.port),
            format!("bind {}\n", r.ip),
            format!("bind-source-addr {}\n", r.ip),
            "cluster-enabled yes\n".to_string(),
            "cluster-config-file nodes.conf\n".to_string(),
            "cluster-node-timeout 5000\n".to_string(),
            "appendonly no\n".to_string(),
            "save \"\"\n".to_string(),
        ] {
            assert!(r.redis_conf.contains(&needle), "missing {needle:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        render_to_dir(dir.path(), &rendered).expect("render_to_dir");
        let node_dir = dir.path().join(format!("{}-{}", r.ip, r.port));
        let text = std::fs::read_to_string(node_dir.join("nodes.conf")).expect("read nodes.conf");
        assert_eq!(text, r.nodes_conf);
        assert!(node_dir.join("redis.conf").is_file());
    }
}
