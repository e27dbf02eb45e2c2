//! Reads from replicas against real clusters with replicas: who answers (each node's own
//! `INFO commandstats`), READONLY / READWRITE per connection, a replica whose link to its
//! master is down, a replica killed under read load, failovers under read load (errors
//! compared with reads from masters in the same run), and `prefer_hosts` (in the file, set
//! live, written by `PROXY CONFIG REWRITE` and kept over a restart).

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
/// Reads every key once on `c`; returns the GETs the masters and the replicas answered.
fn read_once(cluster: &LocalCluster, c: &mut redis::Connection) -> (u64, u64) {
    let before = all_calls(cluster, "get");
    read_keys(c, 1);
    split_delta(cluster, "get", &before)
}

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
    assert_eq!(read_once(&cluster, &mut c), (KEYS as u64, 0));
    // READWRITE: back to the setting (master).
    let ok: String = redis::cmd("READWRITE").query(&mut ro).expect("READWRITE");
    assert_eq!(ok, "OK");
    assert_eq!(read_once(&cluster, &mut ro), (KEYS as u64, 0));
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
    assert_eq!(read_once(&cluster, &mut c), (KEYS as u64, 0));
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
/// errors. Each thread sends every GET on each of its connections in turn: one connection
/// (as the proxy's `read_from` says), or with [`Load::paired`] a second one that sent
/// READONLY (`prefer-replica`). Paired, both modes ask for the same keys at the same moments,
/// so their error counts compare without any clock.
struct Load {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    /// Errors per connection of a thread (the first: the setting; the second: READONLY).
    errors: Arc<[AtomicU64; 2]>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &Proxy, threads: usize) -> Load {
        Load::with_modes(proxy, threads, false)
    }

    /// Like [`Load::start`], each thread reading on a plain and on a READONLY connection.
    fn paired(proxy: &Proxy, threads: usize) -> Load {
        Load::with_modes(proxy, threads, true)
    }

    fn with_modes(proxy: &Proxy, threads: usize, paired: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let errors = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let threads = (0..threads)
            .map(|t| {
                let (stop, reads, errors) = (stop.clone(), reads.clone(), errors.clone());
                let mut conns = vec![proxy.conn()];
                if paired {
                    let mut ro = proxy.conn();
                    let ok: String = redis::cmd("READONLY").query(&mut ro).expect("READONLY");
                    assert_eq!(ok, "OK");
                    conns.push(ro);
                }
                std::thread::spawn(move || {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("k{}", i % KEYS);
                        for (mode, c) in conns.iter_mut().enumerate() {
                            match redis::cmd("GET").arg(&key).query::<Option<String>>(c) {
                                Ok(Some(v)) if v == format!("v{}", i % KEYS) => {}
                                other => {
                                    eprintln!("GET {key} (connection {mode}): {other:?}");
                                    errors[mode].fetch_add(1, Ordering::Relaxed);
                                }
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

    /// Waits until `n` more reads (pairs of reads, when paired) were answered.
    fn wait_reads(&self, n: u64) {
        let start = self.reads.load(Ordering::Relaxed);
        eventually("reads to go on", Duration::from_secs(60), || {
            self.reads.load(Ordering::Relaxed) >= start + n
        });
    }

    /// Stops the readers; the errors they saw, per connection (the second 0 when not paired).
    fn stop(self) -> [u64; 2] {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("reader thread");
        }
        [0, 1].map(|m| self.errors[m].load(Ordering::Relaxed))
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
    assert_eq!(load.stop()[0], 0, "{}", proxy.log());
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

/// How [`failover_under_paired_load`] makes a replica take over.
#[derive(Clone, Copy, PartialEq)]
enum Failover {
    /// `CLUSTER FAILOVER` on the replica (its master becomes its replica).
    Manual,
    /// kill -9 of its master; the cluster promotes the replica after the node timeout.
    MasterKilled,
}

/// Whether every key reads back through this connection without an error.
fn every_key_reads(c: &mut redis::Connection) -> bool {
    (0..KEYS).all(|i| {
        redis::cmd("GET")
            .arg(format!("k{i}"))
            .query::<Option<String>>(c)
            .is_ok_and(|v| v.as_deref() == Some(format!("v{i}").as_str()))
    })
}

/// One failover of a master with replicas under paired read load (every GET once from the
/// masters, `read_from = master`, and once on a READONLY connection, `prefer-replica`),
/// through one proxy; the clients' errors in each mode, `[master, prefer-replica]`. Both
/// modes go through the same failover at the same moments, so the counts compare.
fn failover_under_paired_load(how: Failover) -> [u64; 2] {
    let mut cluster = cluster(3, 2, 1);
    wait_replicas_linked(&cluster);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    write_keys(&mut c);
    let mut ro = proxy.conn();
    let ok: String = redis::cmd("READONLY").query(&mut ro).expect("READONLY");
    assert_eq!(ok, "OK");
    wait_reads_on_replicas(&cluster, &mut ro);
    let load = Load::paired(&proxy, 4);
    load.wait_reads(2000);
    let r = (0..cluster.nodes.len())
        .find(|&i| !cluster.nodes[i].is_master)
        .expect("a replica");
    match how {
        // The replica takes over; its master becomes its replica.
        Failover::Manual => {
            cluster
                .command(r, &["CLUSTER", "FAILOVER"])
                .expect("CLUSTER FAILOVER");
        }
        Failover::MasterKilled => {
            // Without full coverage the nodes keep serving the other slots while the master
            // is failing. With it, every node answers CLUSTERDOWN for a while, each from its
            // own moment (a master and its replica a little apart): Redis's window, not the
            // proxy's, and it would blur the comparison.
            for i in 0..cluster.nodes.len() {
                cluster
                    .command(i, &["CONFIG", "SET", "cluster-require-full-coverage", "no"])
                    .expect("CONFIG SET cluster-require-full-coverage");
            }
            let m = master_of(&cluster, r);
            cluster.kill(m);
        }
    }
    eventually(
        "the replica to be promoted",
        Duration::from_secs(60),
        || {
            let text: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut node_conn(&cluster, r))
                .expect("INFO replication");
            text.contains("role:master")
        },
    );
    // Until the proxy routes to the new master in both modes, then some more.
    let mut check = proxy.conn();
    eventually(
        "every key to read without an error again",
        Duration::from_secs(60),
        || every_key_reads(&mut check),
    );
    load.wait_reads(5000);
    let errors = load.stop();
    if how == Failover::Manual {
        // Reads reach replicas again (the old master, now a replica, among them).
        wait_reads_on_replicas_of(&cluster, &mut ro);
    }
    errors
}

#[test]
fn a_failover_under_replica_read_load_costs_no_client_an_error() {
    let [master, replica] = failover_under_paired_load(Failover::Manual);
    // None, so not more than the master reads' errors either.
    assert_eq!(
        replica, 0,
        "prefer-replica reads failed ({master} master reads did)"
    );
}

#[test]
fn a_master_killed_under_replica_read_load_costs_no_more_errors_than_reading_from_masters() {
    let [master, replica] = failover_under_paired_load(Failover::MasterKilled);
    assert!(
        replica <= master,
        "{replica} prefer-replica reads failed, {master} master reads"
    );
}

/// The node replica `i` follows (its own INFO replication).
fn master_of(cluster: &LocalCluster, i: usize) -> usize {
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut node_conn(cluster, i))
        .expect("INFO replication");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim_end().strip_prefix(name))
            .map(str::to_string)
            .expect("master_host / master_port")
    };
    let (host, port) = (field("master_host:"), field("master_port:"));
    cluster
        .nodes
        .iter()
        .position(|n| n.ip == host && n.port.to_string() == port)
        .expect("the master among the cluster's nodes")
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

/// On a cluster of three hosts with a master and two replicas each (every master has a
/// replica on each of the other two hosts), per node: whether it takes reads with
/// `prefer_hosts = [host]`. Those are the replicas on `host`, and those of the master on
/// `host` (its replicas are all on other hosts, so they read as without the setting).
fn preferred_readers(cluster: &LocalCluster, host: &str) -> Vec<bool> {
    let readers: Vec<bool> = (0..cluster.nodes.len())
        .map(|i| {
            let n = &cluster.nodes[i];
            !n.is_master && (n.ip == host || master_host_of(cluster, i) == host)
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
    readers
}

/// Waits until reads are answered by exactly the nodes `readers` marks (each of them
/// answering some), then checks that ten more rounds are too.
fn reads_only_on(cluster: &LocalCluster, c: &mut redis::Connection, readers: &[bool]) {
    let only_readers = |before: &[u64], after: &[u64]| {
        (0..after.len()).all(|i| (after[i] > before[i]) == readers[i])
    };
    eventually(
        "reads to be answered by the preferred replicas",
        Duration::from_secs(30),
        || {
            let before = all_calls(cluster, "get");
            read_keys(c, 3);
            only_readers(&before, &all_calls(cluster, "get"))
        },
    );
    let before = all_calls(cluster, "get");
    read_keys(c, 10);
    let after = all_calls(cluster, "get");
    assert!(
        only_readers(&before, &after),
        "GETs per node before {before:?} after {after:?}, readers {readers:?}"
    );
}

#[test]
fn prefer_hosts_sends_reads_to_the_replicas_on_listed_hosts() {
    let cluster = cluster(3, 3, 2);
    wait_replicas_linked(&cluster);
    let host = "127.0.0.2";
    let readers = preferred_readers(&cluster, host);
    let settings = format!(
        "read_from = \"prefer-replica\"\nmax_replica_lag = \"10s\"\nprefer_hosts = [\"{host}\"]\n"
    );
    let proxy = Proxy::start_with(&cluster.seeds(), &settings, true);
    let mut c = proxy.conn();
    write_keys(&mut c);
    reads_only_on(&cluster, &mut c, &readers);
}

#[test]
fn prefer_hosts_set_live_moves_reads_and_rewrite_keeps_it_over_a_restart() {
    let cluster = cluster(3, 3, 2);
    wait_replicas_linked(&cluster);
    let host = "127.0.0.2";
    let readers = preferred_readers(&cluster, host);
    let settings = "read_from = \"prefer-replica\"\nmax_replica_lag = \"10s\"\n";
    let mut proxy = Proxy::start_with(&cluster.seeds(), settings, true);
    let mut c = proxy.conn();
    write_keys(&mut c);
    // Not set: every replica takes reads, those off the listed host too.
    let replicas: Vec<bool> = cluster.nodes.iter().map(|n| !n.is_master).collect();
    reads_only_on(&cluster, &mut c, &replicas);

    // Set live: reads move to the listed host's replicas, on the connection already open.
    let ok: String = proxy_query(&mut c, &["CONFIG", "SET", "prefer_hosts", host])
        .expect("PROXY CONFIG SET prefer_hosts");
    assert_eq!(ok, "OK");
    assert_eq!(proxy_config_get(&mut c, "prefer_hosts"), host);
    reads_only_on(&cluster, &mut c, &readers);

    // REWRITE puts it in the file, and a proxy started from that file has it.
    proxy_cmd(&mut c, &["CONFIG", "REWRITE"]).expect("PROXY CONFIG REWRITE");
    let file = std::fs::read_to_string(&proxy.config_path).expect("config file");
    let parsed = slotproxy::config::Config::from_toml(&file).expect("rewritten file parses");
    assert_eq!(parsed.prefer_hosts, vec![host.to_string()], "{file}");
    proxy.restart();
    let mut c = proxy.conn();
    assert_eq!(proxy_config_get(&mut c, "prefer_hosts"), host);
    reads_only_on(&cluster, &mut c, &readers);

    // Emptied live: every replica reads again.
    let ok: String = proxy_query(&mut c, &["CONFIG", "SET", "prefer_hosts", ""])
        .expect("PROXY CONFIG SET prefer_hosts \"\"");
    assert_eq!(ok, "OK");
    reads_only_on(&cluster, &mut c, &replicas);
}
