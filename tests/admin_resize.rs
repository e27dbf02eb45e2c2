//! `PROXY RESIZE MAXMEMORY` against real Redis Clusters: every node's running value (CONFIG GET),
//! the value in its config file (read back from disk), refusals that change nothing, the percent
//! form and bad values.

mod common;

use common::*;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::admin::resize::parse_memory;
use slotproxy::cluster::slots::key_slot;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIVENESS: Duration = Duration::from_secs(30);

fn resize(c: &mut redis::Connection, extra: &[&str]) -> Result<Vec<String>, String> {
    let mut args = vec!["RESIZE", "MAXMEMORY"];
    args.extend_from_slice(extra);
    proxy_lines(c, &args).map_err(|e| e.to_string())
}

/// A node's running maxmemory.
fn maxmemory(cluster: &LocalCluster, i: usize) -> u64 {
    let text = cluster
        .command(i, &["CONFIG", "GET", "maxmemory"])
        .expect("CONFIG GET");
    text.lines()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("CONFIG GET maxmemory: {text:?}"))
}

fn all_maxmemory(cluster: &LocalCluster) -> Vec<u64> {
    (0..cluster.nodes.len())
        .map(|i| maxmemory(cluster, i))
        .collect()
}

/// A numeric field of a node's INFO section.
fn info_number(cluster: &LocalCluster, i: usize, section: &str, field: &str) -> u64 {
    let text = cluster.command(i, &["INFO", section]).expect("INFO");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}:"))?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// The maxmemory a node's redis.conf holds, if any (CONFIG REWRITE writes `100mb` style units).
fn file_maxmemory(cluster: &LocalCluster, i: usize) -> Option<u64> {
    let conf =
        std::fs::read_to_string(cluster.nodes[i].dir.join("redis.conf")).expect("redis.conf");
    conf.lines().find_map(|l| {
        let value = l.strip_prefix("maxmemory ")?;
        Some(parse_memory(value.trim()).unwrap_or_else(|| panic!("maxmemory line {l:?}")))
    })
}

/// A node process the test started itself, killed by PID when dropped.
struct OwnNode(Child);

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Restarts node `i` with its settings as command-line arguments instead of its redis.conf,
/// so it runs without a config file (same directory, so the same nodes.conf and node ID).
fn restart_without_config_file(cluster: &mut LocalCluster, i: usize) -> OwnNode {
    cluster.kill(i);
    let conf =
        std::fs::read_to_string(cluster.nodes[i].dir.join("redis.conf")).expect("redis.conf");
    let mut args = Vec::new();
    for line in conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.split_once(' ').unwrap_or((line, ""));
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        args.push(format!("--{name}"));
        args.push(value.to_string());
    }
    let server = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let child = Command::new(server)
        .args(&args)
        .current_dir(&cluster.nodes[i].dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server with arguments");
    let node = OwnNode(child);
    eventually_ok("the restarted replica to sync", LIVENESS, || {
        let text = cluster
            .command(i, &["INFO", "replication"])
            .map_err(|e| e.to_string())?;
        if text.lines().any(|l| l.trim() == "master_link_status:up") {
            Ok(())
        } else {
            Err(text)
        }
    });
    let server_info = cluster
        .command(i, &["INFO", "server"])
        .expect("INFO server");
    assert!(
        server_info.lines().any(|l| l.trim() == "config_file:"),
        "{server_info}"
    );
    node
}

fn first_replica(cluster: &LocalCluster) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| !n.is_master)
        .expect("a replica")
}

#[test]
fn resizes_every_node_and_persists_where_there_is_a_config_file() {
    let mut cluster = cluster(3, 2, 1);
    let bare = first_replica(&cluster);
    let _bare_node = restart_without_config_file(&mut cluster, bare);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let n = cluster.nodes.len();

    // Bad values get a clear error and the proxy keeps serving.
    let e = resize(&mut c, &["2xb"]).expect_err("bad unit");
    assert!(
        e.contains("argument must be a memory or percent value ('2xb')"),
        "{e}"
    );
    let e = resize(&mut c, &["150%"]).expect_err("too many percent");
    assert!(e.contains("percent must be between 1% and 100%"), "{e}");
    let e = resize(&mut c, &[]).expect_err("no value");
    assert!(e.contains("usage: PROXY RESIZE MAXMEMORY"), "{e}");
    let e = resize(&mut c, &["1gb", "LATER"]).expect_err("unknown option");
    assert!(e.contains("unknown option 'LATER'"), "{e}");
    let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
    assert_eq!(pong, "PONG");
    assert_eq!(all_maxmemory(&cluster), vec![0; n]);

    // DRYRUN prints the plan and changes nothing.
    let dry = resize(&mut c, &["100mb", "DRYRUN"]).expect("dry run");
    assert_eq!(dry[0], "DRYRUN would resize 6 nodes", "{dry:#?}");
    assert_eq!(dry.len(), 1 + n, "{dry:#?}");
    let bare_addr = cluster.nodes[bare].addr();
    for node in &cluster.nodes {
        let line = dry
            .iter()
            .find(|l| l.starts_with(&format!("{} ", node.addr())))
            .unwrap_or_else(|| panic!("no line for {}: {dry:#?}", node.addr()));
        assert!(
            line.contains(" old 0 (0B) new 104857600 (100.00M) used "),
            "{line}"
        );
        let persist = if node.addr() == bare_addr {
            "persist no (no config file)"
        } else {
            "persist yes"
        };
        assert!(line.ends_with(persist), "{line}");
    }
    assert_eq!(all_maxmemory(&cluster), vec![0; n]);
    assert!((0..n).all(|i| i == bare || file_maxmemory(&cluster, i).is_none()));

    let out = resize(&mut c, &["100mb"]).expect("resize");
    assert_eq!(out[0], "OK resized 6 nodes", "{out:#?}");
    assert_eq!(all_maxmemory(&cluster), vec![100 << 20; n]);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let line = out
            .iter()
            .find(|l| l.starts_with(&format!("{} ", node.addr())))
            .unwrap_or_else(|| panic!("no line for {}: {out:#?}", node.addr()));
        let role = if node.is_master {
            " master "
        } else {
            " replica "
        };
        assert!(line.contains(role), "{line}");
        if i == bare {
            assert!(line.ends_with("persisted no (no config file)"), "{line}");
        } else {
            assert!(line.ends_with("persisted yes"), "{line}");
            assert_eq!(file_maxmemory(&cluster, i), Some(100 << 20), "node {i}");
        }
    }

    let again = resize(&mut c, &["104857600"]).expect("re-run");
    assert_eq!(
        again[0], "NOTHING TO DO maxmemory already set on 6 nodes",
        "{again:#?}"
    );
}

#[test]
fn refuses_a_value_below_used_memory_unless_forced() {
    let cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    // 8 MB on one shard: its master and replica use more than 6 MB, the others about 2 MB.
    let value = vec![b'x'; 8 << 20];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut c)
        .expect("SET");
    let master = owner_of(&cluster, 0, key_slot(b"big"));
    let master_id = cluster.nodes[master].node_id.clone();
    let replica = (0..cluster.nodes.len())
        .find(|&i| {
            cluster
                .command(i, &["CLUSTER", "NODES"])
                .expect("CLUSTER NODES")
                .lines()
                .any(|l| l.contains("myself,slave") && l.contains(&master_id))
        })
        .expect("the master's replica");
    eventually("the replica to hold the big value", LIVENESS, || {
        info_number(&cluster, replica, "memory", "used_memory") > 7 << 20
    });
    let before = all_maxmemory(&cluster);

    let e = resize(&mut c, &["6mb"]).expect_err("below used_memory");
    assert!(e.contains("refused: "), "{e}");
    for (i, node) in cluster.nodes.iter().enumerate() {
        let named = e.contains(&format!("{} uses ", node.addr()));
        assert_eq!(named, i == master || i == replica, "node {i}: {e}");
    }
    assert!(e.contains("FORCE"), "{e}");
    assert_eq!(all_maxmemory(&cluster), before);
    assert!((0..cluster.nodes.len()).all(|i| file_maxmemory(&cluster, i).is_none()));

    let out = resize(&mut c, &["6mb", "FORCE"]).expect("forced");
    assert_eq!(out[0], "OK resized 6 nodes", "{out:#?}");
    assert_eq!(all_maxmemory(&cluster), vec![6 << 20; cluster.nodes.len()]);
}

#[test]
fn percent_of_system_memory_and_unreachable_nodes() {
    let mut cluster = cluster(3, 2, 1);
    // A seed that is down and that no node knows (one that left the cluster) is not a node of
    // the cluster: it does not stop a resize.
    let mut seeds = cluster.seeds();
    seeds.push(format!("127.0.0.1:{}", free_port()));
    let proxy = Proxy::start_with(&seeds, "", true);
    let mut c = proxy.conn();
    let n = cluster.nodes.len();

    let started = resize(&mut c, &["50%", "ASYNC"]).expect("ASYNC");
    let id = started[0]
        .strip_prefix("OK job ")
        .unwrap_or_else(|| panic!("{started:?}"))
        .to_string();
    let details = eventually_ok("the resize job to finish", LIVENESS, || {
        let d = proxy_lines(&mut c, &["JOB", &id]).map_err(|e| e.to_string())?;
        if d[0].contains(" running ") {
            Err(format!("{d:?}"))
        } else {
            Ok(d)
        }
    });
    assert!(
        details[0].contains("done: OK resized 6 nodes"),
        "{details:#?}"
    );
    for i in 0..n {
        let total = info_number(&cluster, i, "memory", "total_system_memory");
        assert_eq!(maxmemory(&cluster, i), total / 2, "node {i}");
        assert_eq!(file_maxmemory(&cluster, i), Some(total / 2), "node {i}");
    }

    // A node that does not answer refuses the run, named, before any write.
    let dead = first_replica(&cluster);
    cluster.kill(dead);
    let e = resize(&mut c, &["200mb"]).expect_err("a node is down");
    assert!(
        e.contains(&format!("not reachable: {} (", cluster.nodes[dead].addr())),
        "{e}"
    );
    for i in (0..n).filter(|&i| i != dead) {
        let total = info_number(&cluster, i, "memory", "total_system_memory");
        assert_eq!(maxmemory(&cluster, i), total / 2, "node {i}");
    }
}
