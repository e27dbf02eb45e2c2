//! `PROXY REBALANCE MASTERS` against real Redis Clusters on 127.0.0.x hosts, driven through the
//! proxy with the `redis` crate. The clusters are skewed first with `CLUSTER FAILOVER` sent by
//! hand to chosen replicas, so that one host carries many masters and another none.

mod common;

use common::*;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::cluster::slots::key_slot;
use slotproxy::cluster::{parse_cluster_nodes, SlotMap};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Masters that own slots per host (IP), as node `asked` sees them; every host of the cluster is
/// listed, with 0 when it has none.
fn masters_per_host(cluster: &LocalCluster, asked: usize) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> =
        cluster.nodes.iter().map(|n| (n.ip.clone(), 0)).collect();
    let lines = parse_cluster_nodes(&cluster.nodes_text(asked), &cluster.nodes[asked].ip)
        .expect("CLUSTER NODES parses");
    for l in lines
        .iter()
        .filter(|l| l.is_master() && !l.slots.is_empty())
    {
        *out.entry(l.ip.clone()).or_default() += 1;
    }
    out
}

fn spread(loads: &BTreeMap<String, usize>) -> usize {
    let hi = loads.values().max().copied().unwrap_or(0);
    let lo = loads.values().min().copied().unwrap_or(0);
    hi - lo
}

/// Each node's view: (node ID -> (is master with slots, master ID)).
fn roles(cluster: &LocalCluster, asked: usize) -> HashMap<String, (bool, Option<String>)> {
    parse_cluster_nodes(&cluster.nodes_text(asked), &cluster.nodes[asked].ip)
        .expect("CLUSTER NODES parses")
        .into_iter()
        .map(|l| {
            (
                l.id.clone(),
                (l.is_master() && !l.slots.is_empty(), l.master_id),
            )
        })
        .collect()
}

/// Waits until every node agrees on the roles and every replica's link is up.
fn wait_settled(cluster: &LocalCluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views: Vec<_> = (0..cluster.nodes.len())
            .map(|i| roles(cluster, i))
            .collect();
        let agree = views.windows(2).all(|w| w[0] == w[1]);
        let linked = agree
            && cluster.nodes.iter().enumerate().all(|(i, n)| {
                views[0].get(&n.node_id).is_some_and(|r| r.0)
                    || cluster
                        .command(i, &["INFO", "replication"])
                        .is_ok_and(|t| t.lines().any(|l| l.trim() == "master_link_status:up"))
            });
        if linked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not settle: {views:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Promotes node `index` (a replica) with the default `CLUSTER FAILOVER` and waits until the
/// cluster has settled.
fn promote(cluster: &LocalCluster, index: usize) {
    cluster
        .command(index, &["CLUSTER", "FAILOVER"])
        .expect("CLUSTER FAILOVER");
    let id = cluster.nodes[index].node_id.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(0..cluster.nodes.len()).all(|i| roles(cluster, i).get(&id).is_some_and(|r| r.0)) {
        assert!(
            Instant::now() < deadline,
            "failover of node {index} not seen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_settled(cluster);
}

/// Skews the cluster: promotes every replica on `heavy`, then every replica of the masters of
/// the next busiest other host, so that host ends with no master.
fn skew(cluster: &LocalCluster, heavy: &str) -> String {
    for i in 0..cluster.nodes.len() {
        let view = roles(cluster, 0);
        let me = &cluster.nodes[i];
        if me.ip == heavy && view.get(&me.node_id).is_some_and(|r| !r.0) {
            promote(cluster, i);
        }
    }
    let loads = masters_per_host(cluster, 0);
    let light = loads
        .iter()
        .filter(|(h, _)| h.as_str() != heavy)
        .max_by_key(|(h, n)| (**n, std::cmp::Reverse((*h).clone())))
        .map(|(h, _)| h.clone())
        .expect("another host");
    let view = roles(cluster, 0);
    let on_light: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.ip == light && view.get(&n.node_id).is_some_and(|r| r.0))
        .map(|n| n.node_id.clone())
        .collect();
    for master in on_light {
        let replica = cluster
            .nodes
            .iter()
            .position(|n| {
                n.ip != light
                    && roles(cluster, 0)
                        .get(&n.node_id)
                        .is_some_and(|r| r.1.as_deref() == Some(master.as_str()))
            })
            .expect("a replica on another host");
        promote(cluster, replica);
    }
    light
}

/// `moves N` from a verdict line such as `DRYRUN moves 3 spread 4 -> 1`.
fn moves_in(verdict: &str) -> usize {
    let w: Vec<&str> = verdict.split_whitespace().collect();
    w.iter()
        .position(|x| *x == "moves")
        .and_then(|i| w.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no move count in {verdict:?}"))
}

/// A writer that talks to the cluster directly, because the proxy does not forward `WAIT` yet:
/// it routes each `SET` to the slot's master itself (re-reading `CLUSTER NODES` on any error or
/// `MOVED`), and after every `OK` sends `WAIT 1 1000` on the same connection. A write counts as
/// acknowledged only when both the `SET` said OK and `WAIT` reported at least one replica had
/// it: that is the write an application using `WAIT 1` relies on. The default `CLUSTER
/// FAILOVER` must lose none of those (it should lose no OK'd write at all, since the replica
/// catches up before taking over; the `WAIT` makes the check independent of timing).
struct Writer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Vec<u64>, u64)>,
}

impl Writer {
    fn start(seeds: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut errors = 0u64;
            let mut conns: HashMap<String, redis::Connection> = HashMap::new();
            let read_map = |seeds: &[String]| -> Option<SlotMap> {
                seeds.iter().find_map(|s| {
                    let mut c = redis::Client::open(format!("redis://{s}/"))
                        .ok()?
                        .get_connection_with_timeout(Duration::from_secs(2))
                        .ok()?;
                    let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).ok()?;
                    let ip = s.rsplit_once(':').map_or(s.as_str(), |x| x.0);
                    let lines = parse_cluster_nodes(&text, ip).ok()?;
                    let map = SlotMap::from_nodes(&lines, 0, s);
                    (map.coverage() == 16384).then_some(map)
                })
            };
            let mut map = read_map(&seeds).expect("initial slot map");
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let key = format!("rebalance-writer:{i}");
                let Some(owner) = map.owner(key_slot(key.as_bytes())) else {
                    errors += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    map = read_map(&seeds).unwrap_or(map);
                    continue;
                };
                let addr = owner.addr.to_string();
                let result = (|| -> redis::RedisResult<i64> {
                    if !conns.contains_key(&addr) {
                        let c = redis::Client::open(format!("redis://{addr}/"))?
                            .get_connection_with_timeout(Duration::from_secs(2))?;
                        c.set_read_timeout(Some(Duration::from_secs(15)))?;
                        conns.insert(addr.clone(), c);
                    }
                    let c = conns.get_mut(&addr).ok_or_else(|| {
                        redis::RedisError::from((redis::ErrorKind::IoError, "no connection"))
                    })?;
                    let _: () = redis::cmd("SET").arg(&key).arg(i).query(c)?;
                    redis::cmd("WAIT").arg(1).arg(1000).query(c)
                })();
                match result {
                    Ok(n) if n >= 1 => {
                        acked.push(i);
                        i += 1;
                    }
                    // OK but not yet on a replica: not acknowledged; write the next key.
                    Ok(_) => i += 1,
                    Err(e) => {
                        // MOVED after a failover, a paused master, a reset connection: the
                        // outcome of this SET is unknown, so it is not counted; retry it.
                        errors += 1;
                        if !e.is_timeout() {
                            conns.remove(&addr);
                        } else {
                            conns.clear();
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        map = read_map(&seeds).unwrap_or(map);
                    }
                }
            }
            (acked, errors)
        });
        Writer { stop, handle }
    }

    fn acked_so_far_wait(&self, seeds: &[String], at_least: u64) {
        // Waits until the writer has made progress: its keys appear on the cluster.
        let deadline = Instant::now() + Duration::from_secs(20);
        let key = format!("rebalance-writer:{at_least}");
        loop {
            let found = seeds.iter().any(|s| {
                redis::Client::open(format!("redis://{s}/"))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("EXISTS").arg(&key).query::<i64>(&mut c))
                    .is_ok_and(|n| n == 1)
            });
            if found {
                return;
            }
            assert!(Instant::now() < deadline, "the writer makes no progress");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(self) -> (Vec<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("writer thread")
    }
}

#[test]
fn rebalances_a_skewed_cluster_with_the_planned_failovers_and_loses_no_write() {
    // 4 hosts x 4 nodes, 1 replica: 8 masters, 2 per host at start.
    let cluster = cluster(4, 4, 1);
    let light = skew(&cluster, "127.0.0.1");
    let loads = masters_per_host(&cluster, 0);
    assert!(loads["127.0.0.1"] >= 4, "{loads:?}");
    assert_eq!(loads[&light], 0, "{loads:?}");
    let before = spread(&loads);

    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    c.set_read_timeout(Some(Duration::from_secs(150)))
        .expect("read timeout");

    let dry = proxy_lines(&mut c, &["REBALANCE", "MASTERS", "DRYRUN"]).expect("DRYRUN");
    assert!(dry[0].starts_with("DRYRUN moves "), "{dry:#?}");
    assert!(
        dry[0].ends_with(&format!("spread {before} -> 1"))
            || dry[0].ends_with(&format!("spread {before} -> 0")),
        "{dry:#?}"
    );
    let planned = moves_in(&dry[0]);
    assert!(planned >= 2, "{dry:#?}");
    assert_eq!(
        dry.iter().filter(|l| l.starts_with("move ")).count(),
        planned
    );
    // DRYRUN changed nothing.
    assert_eq!(masters_per_host(&cluster, 0), loads);

    let writer = Writer::start(cluster.seeds());
    writer.acked_so_far_wait(&cluster.seeds(), 50);

    let report = proxy_lines(&mut c, &["REBALANCE", "MASTERS"]).expect("REBALANCE");
    eprintln!("{}\n{}", dry.join("\n"), report.join("\n"));
    assert!(report[0].starts_with("OK moves "), "{report:#?}");
    assert_eq!(moves_in(&report[0]), planned, "{dry:#?}\n{report:#?}");
    assert!(
        report.iter().any(|l| l.starts_with("island 1 ")),
        "{report:#?}"
    );

    // Every node agrees the masters are spread evenly.
    wait_settled(&cluster);
    for i in 0..cluster.nodes.len() {
        let after = masters_per_host(&cluster, i);
        assert!(spread(&after) <= 1, "node {i} sees {after:?}\n{report:#?}");
    }

    // A second run has nothing to do.
    let again = proxy_lines(&mut c, &["REBALANCE", "MASTERS"]).expect("second REBALANCE");
    assert!(again[0].starts_with("NOTHING TO DO"), "{again:#?}");

    // The writer kept going through the failovers; every acknowledged write is readable
    // through the proxy (which follows the new topology).
    writer.acked_so_far_wait(&cluster.seeds(), 0);
    let (acked, errors) = writer.finish();
    assert!(!acked.is_empty());
    eprintln!(
        "writer: {} acknowledged writes, {errors} retried errors",
        acked.len()
    );
    for chunk in acked.chunks(500) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|i| format!("rebalance-writer:{i}"))
            .collect();
        let got: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query(&mut c).expect("MGET");
        for (i, v) in chunk.iter().zip(got) {
            assert_eq!(
                v,
                Some(*i),
                "acknowledged write rebalance-writer:{i} was lost"
            );
        }
    }

    // The jobs are listed with their outcome.
    let jobs = proxy_lines(&mut c, &["JOBS"]).expect("PROXY JOBS");
    assert!(
        jobs.iter()
            .filter(|l| l.contains("rebalance-masters"))
            .count()
            >= 3,
        "{jobs:#?}"
    );
}

#[test]
fn lease_async_and_tolerance() {
    // 3 hosts x 2 nodes: one master per host; promote one replica so one host has 2, one 0.
    let cluster = cluster(3, 2, 1);
    let view = roles(&cluster, 0);
    let replica = (0..cluster.nodes.len())
        .find(|&i| view.get(&cluster.nodes[i].node_id).is_some_and(|r| !r.0))
        .expect("a replica");
    promote(&cluster, replica);
    let loads = masters_per_host(&cluster, 0);
    assert_eq!(spread(&loads), 2, "{loads:?}");

    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    c.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("read timeout");

    // TOLERANCE 2 accepts this spread.
    let tol = proxy_lines(&mut c, &["REBALANCE", "MASTERS", "TOLERANCE", "2"]).expect("TOLERANCE");
    assert!(tol[0].starts_with("NOTHING TO DO spread 2"), "{tol:#?}");

    // The JSON form, for tooling.
    let json: String =
        proxy_query(&mut c, &["REBALANCE", "MASTERS", "DRYRUN", "JSON"]).expect("DRYRUN JSON");
    assert!(
        json.starts_with("{\"verdict\":\"DRYRUN moves 1 spread 2 -> 0\""),
        "{json}"
    );

    // Another proxy holds the lease: this one refuses and names the holder; nothing moves.
    let _: () = redis::cmd("SET")
        .arg("slotproxy:lease:rebalance")
        .arg("the other proxy")
        .arg("PX")
        .arg(60_000)
        .query(&mut c)
        .expect("SET lease");
    let err = proxy_lines(&mut c, &["REBALANCE", "MASTERS"]).expect_err("lease is held");
    assert!(err.to_string().contains("the other proxy"), "{err}");
    assert_eq!(masters_per_host(&cluster, 0), loads);
    let _: () = redis::cmd("DEL")
        .arg("slotproxy:lease:rebalance")
        .query(&mut c)
        .expect("DEL lease");

    // ASYNC: a job ID at once, then PROXY JOB until it is done.
    let started = proxy_lines(&mut c, &["REBALANCE", "MASTERS", "ASYNC"]).expect("ASYNC");
    let id = started[0]
        .strip_prefix("OK job ")
        .unwrap_or_else(|| panic!("{started:?}"))
        .to_string();
    // A second rebalance while the first runs is refused (or, if the first was quicker than
    // this request, finds nothing to do); a DRYRUN is always allowed.
    let mut other = proxy.conn();
    match proxy_lines(&mut other, &["REBALANCE", "MASTERS"]) {
        Err(e) => {
            eprintln!("second rebalance: {e}");
            assert!(e.to_string().contains("already running"), "{e}")
        }
        Ok(lines) => assert!(lines[0].starts_with("NOTHING TO DO"), "{lines:#?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let details = loop {
        let d = proxy_lines(&mut c, &["JOB", &id]).expect("PROXY JOB");
        if !d[0].contains(" running ") {
            break d;
        }
        assert!(Instant::now() < deadline, "job still running: {d:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        details[0].contains("done: OK moves 1 spread 2 -> 0"),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|l| l.starts_with("report move 1 ")),
        "{details:#?}"
    );
    wait_settled(&cluster);
    assert_eq!(spread(&masters_per_host(&cluster, 0)), 0);
    // The lease was released.
    let held: Option<String> = redis::cmd("GET")
        .arg("slotproxy:lease:rebalance")
        .query(&mut c)
        .expect("GET lease");
    assert_eq!(held, None);
}
