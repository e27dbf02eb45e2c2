//! Reads from replicas against real clusters with replicas: who answers (each node's own
//! `INFO commandstats`), READONLY / READWRITE per connection, a replica whose link to its
//! master is down, and a replica killed under read load.

mod common;

use common::*;
use slotproxy::admin::localcluster::LocalCluster;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KEYS: usize = 100;

/// `calls` of `cmdstat_<cmd>` in node `i`'s own INFO commandstats.
fn calls(cluster: &LocalCluster, i: usize, cmd: &str) -> u64 {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut node_conn(cluster, i))
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{cmd}:calls=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `cmd` calls per node (in node order).
fn all_calls(cluster: &LocalCluster, cmd: &str) -> Vec<u64> {
    (0..cluster.nodes.len())
        .map(|i| calls(cluster, i, cmd))
        .collect()
}

/// Calls since `before`, summed over masters and over replicas.
fn split_delta(cluster: &LocalCluster, cmd: &str, before: &[u64]) -> (u64, u64) {
    let after = all_calls(cluster, cmd);
    let (mut masters, mut replicas) = (0, 0);
    for (i, n) in cluster.nodes.iter().enumerate() {
        let d = after[i] - before[i];
        if n.is_master {
            masters += d;
        } else {
            replicas += d;
        }
    }
    (masters, replicas)
}

fn replica_link_up(cluster: &LocalCluster, i: usize) -> bool {
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut node_conn(cluster, i))
        .expect("INFO replication");
    text.contains("master_link_status:up")
}

/// Waits until every replica is linked to its master.
fn wait_replicas_linked(cluster: &LocalCluster) {
    for (i, n) in cluster.nodes.iter().enumerate() {
        if !n.is_master {
            eventually("a replica to be linked", Duration::from_secs(30), || {
                replica_link_up(cluster, i)
            });
        }
    }
}

/// Writes `k0..k{KEYS}` and waits (WAIT) until every replica has them.
fn write_keys(c: &mut redis::Connection) {
    for i in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query(c)
            .expect("SET");
    }
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(c).expect("WAIT");
}

/// GETs every key `rounds` times, pipelined, checking each value.
fn read_keys(c: &mut redis::Connection, rounds: usize) {
    for _ in 0..rounds {
        let mut p = redis::pipe();
        for i in 0..KEYS {
            p.cmd("GET").arg(format!("k{i}"));
        }
        let values: Vec<Option<String>> = p.query(c).expect("pipelined GETs");
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v.as_deref(), Some(format!("v{i}").as_str()));
        }
    }
}

/// Waits until a batch of reads is answered by the nodes that are replicas now (after a
/// failover: whatever each node says its role is).
fn wait_reads_on_replicas_of(cluster: &LocalCluster, c: &mut redis::Connection) {
    let is_replica: Vec<bool> = (0..cluster.nodes.len())
        .map(|i| {
            let text: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut node_conn(cluster, i))
                .expect("INFO replication");
            text.contains("role:slave")
        })
        .collect();
    eventually(
        "reads to be answered by the replicas",
        Duration::from_secs(30),
        || {
            let before = all_calls(cluster, "get");
            read_keys(c, 1);
            let after = all_calls(cluster, "get");
            let on_replicas: u64 = (0..after.len())
                .filter(|&i| is_replica[i])
                .map(|i| after[i] - before[i])
                .sum();
            on_replicas == KEYS as u64
        },
    );
}

/// Waits until a batch of reads is answered by replicas only (the health poll has seen them).
fn wait_reads_on_replicas(cluster: &LocalCluster, c: &mut redis::Connection) {
    eventually(
        "reads to be answered by replicas only",
        Duration::from_secs(30),
        || {
            let before = all_calls(cluster, "get");
            read_keys(c, 1);
            let (m, r) = split_delta(cluster, "get", &before);
            m == 0 && r == KEYS as u64
        },
    );
}

#[test]
fn prefer_replica_reads_are_answered_by_replicas_and_writes_by_masters() {
    let cluster = cluster(3, 2, 1);
    wait_replicas_linked(&cluster);
    let proxy = Proxy::start_with(&cluster.seeds(), "read_from = \"prefer-replica\"\n", true);
    let mut c = proxy.conn();
    let sets = all_calls(&cluster, "set");
    write_keys(&mut c);
    let after = all_calls(&cluster, "set");
    let master_sets: u64 = (0..cluster.nodes.len())
        .filter(|&i| cluster.nodes[i].is_master)
        .map(|i| after[i] - sets[i])
        .sum();
    assert_eq!(master_sets, KEYS as u64, "every SET went to a master");
    wait_reads_on_replicas(&cluster, &mut c);

    // 10,000 GETs: the masters answer (about) none of them.
    let gets = all_calls(&cluster, "get");
    read_keys(&mut c, 100);
    let (masters, replicas) = split_delta(&cluster, "get", &gets);
    assert!(masters <= 100, "masters answered {masters} GETs");
    assert_eq!(masters + replicas, 10_000);
    let after = all_calls(&cluster, "get");
    for (i, n) in cluster.nodes.iter().enumerate() {
        if !n.is_master {
            assert!(after[i] > gets[i], "replica {i} answered no GET");
        }
    }

    // A split MGET: each slot's part to a replica.
    let mgets = all_calls(&cluster, "mget");
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let values: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut c).expect("MGET");
    assert_eq!(values[7], "v7");
    let (masters, replicas) = split_delta(&cluster, "mget", &mgets);
    assert_eq!(masters, 0);
    assert!(replicas >= 3, "{replicas} MGET parts on replicas");
}

#[test]
fn readonly_sends_one_connections_reads_to_replicas_until_readwrite() {
    let cluster = cluster(3, 2, 1);
    wait_replicas_linked(&cluster);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    write_keys(&mut c);
    let mut ro = proxy.conn();
    let ok: String = redis::cmd("READONLY").query(&mut ro).expect("READONLY");
    assert_eq!(ok, "OK");
    wait_reads_on_replicas(&cluster, &mut ro);
    // The other connection still reads from masters.
    let before = all_calls(&cluster, "get");
    read_keys(&mut c, 1);
    assert_eq!(split_delta(&cluster, "get", &before), (KEYS as u64, 0));
    // READWRITE: back to the setting (master).
    let ok: String = redis::cmd("READWRITE").query(&mut ro).expect("READWRITE");
    assert_eq!(ok, "OK");
    let before = all_calls(&cluster, "get");
    read_keys(&mut ro, 1);
    assert_eq!(split_delta(&cluster, "get", &before), (KEYS as u64, 0));
}

#[test]
fn a_users_read_from_replaces_the_setting_for_its_connections() {
    let cluster = cluster(3, 2, 1);
    wait_replicas_linked(&cluster);
    let users = "[[users]]\nname = \"default\"\npassword = \"\"\nlevel = \"admin\"\nread_from = \"prefer-replica\"\n\n[[users]]\nname = \"m\"\npassword = \"pw\"\nlevel = \"write\"\n";
    let proxy = Proxy::start_with(&cluster.seeds(), users, true);
    let mut c = proxy.conn();
    write_keys(&mut c);
    wait_reads_on_replicas(&cluster, &mut c);
    // Logged in as a user without read_from: the setting (master).
    let ok: String = redis::cmd("AUTH")
        .arg("m")
        .arg("pw")
        .query(&mut c)
        .expect("AUTH");
    assert_eq!(ok, "OK");
    let before = all_calls(&cluster, "get");
    read_keys(&mut c, 1);
    assert_eq!(split_delta(&cluster, "get", &before), (KEYS as u64, 0));
}

#[test]
fn a_replica_whose_link_is_down_gets_no_reads_and_clients_see_no_error() {
    let cluster = cluster(3, 2, 1);
    wait_replicas_linked(&cluster);
    let proxy = Proxy::start_with(&cluster.seeds(), "read_from = \"prefer-replica\"\n", true);
    let mut c = proxy.conn();
    write_keys(&mut c);
    wait_reads_on_replicas(&cluster, &mut c);
    let r = (0..cluster.nodes.len())
        .find(|&i| !cluster.nodes[i].is_master)
        .expect("a replica");
    // The replica cannot log in to its master any more: its link goes down and stays down.
    cluster
        .command(r, &["CONFIG", "SET", "masterauth", "not-the-password"])
        .expect("masterauth");
    cluster
        .command(r, &["CLIENT", "KILL", "TYPE", "master"])
        .expect("CLIENT KILL TYPE master");
    eventually(
        "the replica's link to go down",
        Duration::from_secs(30),
        || !replica_link_up(&cluster, r),
    );
    // Within a poll it gets no reads; every read is still answered.
    eventually(
        "the unlinked replica to get no reads",
        Duration::from_secs(30),
        || {
            let before = calls(&cluster, r, "get");
            read_keys(&mut c, 3);
            calls(&cluster, r, "get") == before
        },
    );
    let text = proxy.scrape_until("a lagging fallback", Duration::from_secs(10), |t| {
        metric(
            t,
            "slotproxy_replica_read_fallbacks_total{reason=\"lagging\"}",
        ) > 0.0
    });
    assert!(text.contains("role=\"replica\""), "{text}");
    // Linked again: it serves reads again.
    cluster
        .command(r, &["CONFIG", "SET", "masterauth", ""])
        .expect("masterauth");
    eventually(
        "the replica to be linked again",
        Duration::from_secs(30),
        || replica_link_up(&cluster, r),
    );
    eventually(
        "the replica to get reads again",
        Duration::from_secs(30),
        || {
            let before = calls(&cluster, r, "get");
            read_keys(&mut c, 3);
            calls(&cluster, r, "get") > before
        },
    );
}

/// Readers that GET (and check) keys through the proxy until stopped, counting reads and
/// errors.
struct Load {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &Proxy, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (reads, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..threads)
            .map(|t| {
                let (stop, reads, errors) = (stop.clone(), reads.clone(), errors.clone());
                let mut c = proxy.conn();
                std::thread::spawn(move || {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("k{}", i % KEYS);
                        match redis::cmd("GET").arg(&key).query::<Option<String>>(&mut c) {
                            Ok(Some(v)) if v == format!("v{}", i % KEYS) => {}
                            other => {
                                eprintln!("GET {key}: {other:?}");
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            reads,
            errors,
            threads,
        }
    }

    /// Waits until `n` more reads were answered.
    fn wait_reads(&self, n: u64) {
        let start = self.reads.load(Ordering::Relaxed);
        eventually("reads to go on", Duration::from_secs(60), || {
            self.reads.load(Ordering::Relaxed) >= start + n
        });
    }

    /// Stops the readers; the errors they saw.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("reader thread");
        }
        self.errors.load(Ordering::Relaxed)
    }
}

#[test]
fn a_replica_killed_under_read_load_costs_no_client_an_error() {
    let mut cluster = cluster(3, 2, 1);
    wait_replicas_linked(&cluster);
    let proxy = Proxy::start_with(&cluster.seeds(), "read_from = \"prefer-replica\"\n", true);
    let mut c = proxy.conn();
    write_keys(&mut c);
    wait_reads_on_replicas(&cluster, &mut c);
    let load = Load::start(&proxy, 4);
    load.wait_reads(2000);
    let r = (0..cluster.nodes.len())
        .find(|&i| !cluster.nodes[i].is_master)
        .expect("a replica");
    cluster.kill(r);
    load.wait_reads(5000);
    assert_eq!(load.stop(), 0, "{}", proxy.log());
    let text = proxy.scrape_until("a failed fallback", Duration::from_secs(10), |t| {
        metric(
            t,
            "slotproxy_replica_read_fallbacks_total{reason=\"failed\"}",
        ) > 0.0
            || metric(
                t,
                "slotproxy_replica_read_fallbacks_total{reason=\"lagging\"}",
            ) > 0.0
    });
    assert!(text.contains("slotproxy_replica_read_fallbacks_total"));
}

#[test]
fn a_failover_under_replica_read_load_costs_no_client_an_error() {
    let cluster = cluster(3, 2, 1);
    wait_replicas_linked(&cluster);
    let proxy = Proxy::start_with(&cluster.seeds(), "read_from = \"prefer-replica\"\n", true);
    let mut c = proxy.conn();
    write_keys(&mut c);
    wait_reads_on_replicas(&cluster, &mut c);
    let load = Load::start(&proxy, 4);
    load.wait_reads(2000);
    let r = (0..cluster.nodes.len())
        .find(|&i| !cluster.nodes[i].is_master)
        .expect("a replica");
    // A manual failover: the replica takes over, its master becomes its replica.
    cluster
        .command(r, &["CLUSTER", "FAILOVER"])
        .expect("CLUSTER FAILOVER");
    eventually(
        "the replica to be promoted",
        Duration::from_secs(30),
        || {
            let text: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut node_conn(&cluster, r))
                .expect("INFO replication");
            text.contains("role:master")
        },
    );
    load.wait_reads(5000);
    assert_eq!(load.stop(), 0, "{}", proxy.log());
    // Reads reach replicas again (the old master, now a replica, among them).
    wait_reads_on_replicas_of(&cluster, &mut c);
}

/// The host of the master replica `i` follows (its own INFO replication).
fn master_host_of(cluster: &LocalCluster, i: usize) -> String {
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut node_conn(cluster, i))
        .expect("INFO replication");
    text.lines()
        .find_map(|l| l.trim_end().strip_prefix("master_host:"))
        .expect("master_host")
        .to_string()
}

#[test]
fn prefer_hosts_sends_reads_to_the_replicas_on_listed_hosts() {
    // Three hosts, a master and two replicas each: every master has a replica on each of
    // the other two hosts.
    let cluster = cluster(3, 3, 2);
    wait_replicas_linked(&cluster);
    let host = "127.0.0.2";
    // The replicas that should read: those on the listed host, and those of the master on
    // that host (its replicas are all on other hosts, so they read as without the setting).
    let readers: Vec<bool> = (0..cluster.nodes.len())
        .map(|i| {
            let n = &cluster.nodes[i];
            !n.is_master && (n.ip == host || master_host_of(&cluster, i) == host)
        })
        .collect();
    let others = (0..cluster.nodes.len())
        .filter(|&i| !cluster.nodes[i].is_master && !readers[i])
        .count();
    assert!(others >= 2, "the layout has replicas off the listed host");
    assert!(
        cluster.nodes.iter().any(|n| n.is_master && n.ip == host),
        "a master on the listed host"
    );
    let settings = format!(
        "read_from = \"prefer-replica\"\nmax_replica_lag = \"10s\"\nprefer_hosts = [\"{host}\"]\n"
    );
    let proxy = Proxy::start_with(&cluster.seeds(), &settings, true);
    let mut c = proxy.conn();
    write_keys(&mut c);
    let only_readers = |before: &[u64], after: &[u64]| {
        (0..after.len()).all(|i| (after[i] > before[i]) == readers[i])
    };
    eventually(
        "reads to be answered by the preferred replicas",
        Duration::from_secs(30),
        || {
            let before = all_calls(&cluster, "get");
            read_keys(&mut c, 3);
            only_readers(&before, &all_calls(&cluster, "get"))
        },
    );
    let before = all_calls(&cluster, "get");
    read_keys(&mut c, 10);
    let after = all_calls(&cluster, "get");
    assert!(
        only_readers(&before, &after),
        "GETs per node before {before:?} after {after:?}, readers {readers:?}"
    );
}
