//! Starts real redis-server clusters from rendered nodes.conf files and checks their layout.

use slotproxy::admin::localcluster::{LocalCluster, LocalClusterSpec};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// `(id, ip, is_master, master_id)` for every line of CLUSTER NODES.
fn parse_nodes(text: &str) -> Vec<(String, String, bool, String)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let ip = f[1].split(':').next()?.to_string();
            Some((
                f[0].to_string(),
                ip,
                f[2].contains("master"),
                f[3].to_string(),
            ))
        })
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn three_hosts_two_nodes_each() {
    let spec = LocalClusterSpec {
        hosts: vec!["127.0.0.1".into(), "127.0.0.2".into(), "127.0.0.3".into()],
        nodes_per_host: 2,
        replicas: 1,
        node_timeout_ms: 2000,
        redis_server: "redis-server".into(),
    };
    let cluster = LocalCluster::start(&spec).expect("start cluster");
    assert_eq!(cluster.nodes.len(), 6);
    assert!(cluster.warnings.is_empty(), "{:?}", cluster.warnings);
    for i in 0..6 {
        let info = cluster
            .command(i, &["CLUSTER", "INFO"])
            .expect("cluster info");
        assert!(info.contains("cluster_state:ok"), "node {i}: {info}");
    }
    let view = parse_nodes(&cluster.command(0, &["CLUSTER", "NODES"]).expect("nodes"));
    assert_eq!(view.len(), 6);
    let masters: HashMap<&str, &str> = view
        .iter()
        .filter(|n| n.2)
        .map(|n| (n.0.as_str(), n.1.as_str()))
        .collect();
    assert_eq!(masters.len(), 3);
    let master_hosts: std::collections::HashSet<&str> = masters.values().copied().collect();
    assert_eq!(master_hosts.len(), 3, "one master per host");
    for (id, host) in &masters {
        let replicas: Vec<&(String, String, bool, String)> =
            view.iter().filter(|n| !n.2 && n.3 == *id).collect();
        assert_eq!(replicas.len(), 1, "master {id}");
        assert_ne!(replicas[0].1, *host, "replica of {id} on its master's host");
    }
    // The RESP client round-trips data through the cluster.
    let key = "{a}k";
    let slot: usize = cluster
        .command(0, &["CLUSTER", "KEYSLOT", key])
        .expect("keyslot")
        .parse()
        .expect("slot number");
    assert!(slot < 16384);
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid).collect();
    assert!(pids.iter().all(|&p| pid_alive(p)));
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} still alive after drop");
    }
    assert!(!dir.exists(), "temp dir not removed");
}

#[test]
fn one_host_colocated_with_failover_helpers() {
    let spec = LocalClusterSpec {
        hosts: vec!["127.0.0.1".into()],
        nodes_per_host: 6,
        replicas: 1,
        node_timeout_ms: 1000,
        redis_server: "redis-server".into(),
    };
    let mut cluster = LocalCluster::start(&spec).expect("start cluster");
    assert_eq!(cluster.nodes.iter().filter(|n| n.is_master).count(), 3);
    assert!(cluster.warnings.iter().any(|w| w.contains("colocated")));
    let view = parse_nodes(&cluster.command(1, &["CLUSTER", "NODES"]).expect("nodes"));
    assert_eq!(view.iter().filter(|n| n.2).count(), 3);
    assert_eq!(view.iter().filter(|n| !n.2).count(), 3);
    let err = cluster
        .command(0, &["NOSUCHCOMMAND"])
        .expect_err("error reply");
    assert!(err.to_string().contains("unknown command"), "{err}");

    // Stop and continue a replica, then restart it: the cluster comes back ok.
    let replica = cluster
        .nodes
        .iter()
        .position(|n| !n.is_master)
        .expect("a replica");
    cluster.stop(replica);
    assert!(!cluster.is_running(replica));
    cluster.cont(replica);
    cluster
        .wait_ok(Duration::from_secs(10))
        .expect("ok after cont");
    let old_pid = cluster.nodes[replica].pid;
    cluster.restart(replica).expect("restart");
    assert_ne!(cluster.nodes[replica].pid, old_pid);
    assert!(!pid_alive(old_pid));
    cluster
        .wait_ok(Duration::from_secs(10))
        .expect("ok after restart");

    // Kill a master: its replica takes over and the cluster is ok again.
    let master = cluster
        .nodes
        .iter()
        .position(|n| n.is_master)
        .expect("a master");
    let pid = cluster.nodes[master].pid;
    let master_id = cluster.nodes[master].node_id.clone();
    cluster.kill(master);
    assert!(!pid_alive(pid));
    let witness = (0..cluster.nodes.len())
        .find(|&i| i != master)
        .expect("another node");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = cluster
            .command(witness, &["CLUSTER", "NODES"])
            .expect("nodes");
        let failed = text
            .lines()
            .any(|l| l.starts_with(&master_id) && l.contains("fail"));
        let healthy_masters = text
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .count();
        if failed && healthy_masters == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no failover:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster
        .wait_ok(Duration::from_secs(20))
        .expect("ok after failover");
}
