//! Cluster-wide commands (KEYS, DBSIZE, SCAN, RANDOMKEY, FLUSHALL, SCRIPT, CONFIG, PUBLISH,
//! TIME, LASTSAVE) against real Redis Clusters, through the `redis` crate as the client, with
//! direct node connections to check what reached each node.

mod common;

use common::*;
use redis::Commands;
use slotproxy::cluster::slots::key_slot;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Runs a full SCAN (cursor 0 to cursor 0) with extra arguments; returns every key returned,
/// duplicates included, and the number of calls.
fn full_scan(c: &mut redis::Connection, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    let mut calls = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg(extra)
            .query(c)
            .expect("SCAN");
        calls += 1;
        assert!(calls < 100_000, "SCAN does not terminate");
        keys.extend(batch);
        if next == 0 {
            return (keys, calls);
        }
        cursor = next;
    }
}

fn masters(cluster: &slotproxy::admin::localcluster::LocalCluster) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|&i| cluster.nodes[i].is_master)
        .collect()
}

fn write_keys(c: &mut redis::Connection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let mut p = redis::pipe();
        for k in chunk {
            p.set(k, "v").ignore();
        }
        let _: () = p.query(c).expect("pipelined SET");
    }
}

#[test]
fn keys_dbsize_scan_randomkey_scripts_and_flushall() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let strings: Vec<String> = (0..2000).map(|i| format!("k:{i}")).collect();
    write_keys(&mut c, &strings);
    let hashes: Vec<String> = (0..20).map(|i| format!("h:{i}")).collect();
    for h in &hashes {
        let _: () = c.hset(h, "f", 1).expect("HSET");
    }
    let all: BTreeSet<String> = strings.iter().chain(&hashes).cloned().collect();
    let masters = masters(&cluster);
    assert_eq!(masters.len(), 3);
    for &m in &masters {
        let n: usize = redis::cmd("DBSIZE")
            .query(&mut node_conn(&cluster, m))
            .expect("node DBSIZE");
        assert!(n > 0, "every master holds keys");
    }

    // DBSIZE sums, KEYS concatenates.
    let n: usize = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(n, all.len());
    let keys: Vec<String> = c.keys("*").expect("KEYS");
    assert_eq!(keys.len(), all.len(), "KEYS returns each key once");
    assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), all);
    let some: Vec<String> = c.keys("h:*").expect("KEYS h:*");
    assert_eq!(
        some.into_iter().collect::<BTreeSet<_>>(),
        hashes.iter().cloned().collect()
    );

    // A full SCAN returns every key (Redis allows repeats; the set must be exact).
    let (scanned, calls) = full_scan(&mut c, &["COUNT", "10"]);
    assert!(
        calls > 3,
        "COUNT 10 over {} keys took {calls} calls",
        all.len()
    );
    assert!(scanned.len() >= all.len());
    assert_eq!(scanned.into_iter().collect::<BTreeSet<_>>(), all);
    // MATCH and TYPE pass through to the nodes.
    let (matched, _) = full_scan(&mut c, &["MATCH", "h:*", "COUNT", "50"]);
    assert_eq!(
        matched.into_iter().collect::<BTreeSet<_>>(),
        hashes.iter().cloned().collect()
    );
    let (typed, _) = full_scan(&mut c, &["COUNT", "100", "TYPE", "hash"]);
    assert_eq!(
        typed.into_iter().collect::<BTreeSet<_>>(),
        hashes.iter().cloned().collect()
    );
    let err = redis::cmd("SCAN")
        .arg("nope")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("invalid cursor"), "{err}");

    // RANDOMKEY, TIME, LASTSAVE: Redis's shapes.
    for _ in 0..10 {
        let k: Option<String> = redis::cmd("RANDOMKEY").query(&mut c).expect("RANDOMKEY");
        let k = k.expect("a key");
        assert!(all.contains(&k), "{k}");
    }
    let time: Vec<String> = redis::cmd("TIME").query(&mut c).expect("TIME");
    assert_eq!(time.len(), 2);
    assert!(time[0].parse::<u64>().expect("seconds") > 1_600_000_000);
    let _: i64 = redis::cmd("LASTSAVE").query(&mut c).expect("LASTSAVE");

    // SCRIPT LOAD reaches every master: EVALSHA works for a key on each of them.
    let body = "return redis.call('GET', KEYS[1])";
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query(&mut c)
        .expect("SCRIPT LOAD");
    assert_eq!(sha.len(), 40);
    let mut seen = BTreeSet::new();
    for k in &strings {
        let owner = owner_of(&cluster, 0, key_slot(k.as_bytes()));
        if seen.insert(owner) {
            let v: String = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(k)
                .query(&mut c)
                .unwrap_or_else(|e| panic!("EVALSHA on {k} (node {owner}): {e}"));
            assert_eq!(v, "v");
        }
        if seen.len() == masters.len() {
            break;
        }
    }
    assert_eq!(seen.len(), masters.len());
    let missing = "0".repeat(40);
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg(&missing)
        .query(&mut c)
        .expect("SCRIPT EXISTS");
    assert_eq!(exists, vec![1, 0]);
    // Loaded on one master only: EXISTS is 0 through the proxy (AND across masters).
    let other = "return 2";
    let other_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(other)
        .query(&mut node_conn(&cluster, masters[0]))
        .expect("direct SCRIPT LOAD");
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&other_sha)
        .arg(&sha)
        .query(&mut c)
        .expect("SCRIPT EXISTS");
    assert_eq!(exists, vec![0, 1]);
    let ok: String = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut c)
        .expect("SCRIPT FLUSH");
    assert_eq!(ok, "OK");
    for &m in &masters {
        let e: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query(&mut node_conn(&cluster, m))
            .expect("node SCRIPT EXISTS");
        assert_eq!(e, vec![0]);
    }

    // PUBLISH goes to one master and cluster pub/sub carries it to every node.
    let mut sub_conn = node_conn(&cluster, masters[2]);
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("news").expect("SUBSCRIBE");
    sub.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg("hello")
            .query(&mut c)
            .expect("PUBLISH");
        assert!((0..=1).contains(&receivers), "{receivers}");
        if let Ok(msg) = sub.get_message() {
            got = Some(msg.get_payload::<String>().expect("payload"));
        }
    }
    assert_eq!(got.as_deref(), Some("hello"));
    drop(sub);

    // FLUSHDB / FLUSHALL empty every master.
    let ok: String = redis::cmd("FLUSHALL").query(&mut c).expect("FLUSHALL");
    assert_eq!(ok, "OK");
    for &m in &masters {
        let n: usize = redis::cmd("DBSIZE")
            .query(&mut node_conn(&cluster, m))
            .expect("node DBSIZE");
        assert_eq!(n, 0, "master {m} is empty");
    }
    let n: usize = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(n, 0);
    let k: Option<String> = redis::cmd("RANDOMKEY").query(&mut c).expect("RANDOMKEY");
    assert_eq!(k, None);
    let (scanned, _) = full_scan(&mut c, &[]);
    assert!(scanned.is_empty());
    write_keys(&mut c, &strings[..100]);
    let ok: String = redis::cmd("FLUSHDB")
        .arg("ASYNC")
        .query(&mut c)
        .expect("FLUSHDB ASYNC");
    assert_eq!(ok, "OK");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: usize = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "FLUSHDB ASYNC left {n} keys");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Refused the same way by every master: Redis's own error text.
    let err = redis::cmd("FLUSHALL")
        .arg("SOMETIMES")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
    assert!(!err.to_string().contains("failed on"), "{err}");
}

/// Keys named `{prefix}{i}`, `per_master` of them on each master (by slot owner).
fn keys_on_every_master(
    cluster: &slotproxy::admin::localcluster::LocalCluster,
    prefix: &str,
    per_master: usize,
) -> Vec<String> {
    let masters = masters(cluster);
    let mut taken = vec![0; cluster.nodes.len()];
    let mut keys = Vec::new();
    for i in 0.. {
        let k = format!("{prefix}{i}");
        let owner = owner_of(cluster, masters[0], key_slot(k.as_bytes()));
        if taken[owner] < per_master {
            taken[owner] += 1;
            keys.push(k);
        }
        if keys.len() == per_master * masters.len() {
            return keys;
        }
    }
    unreachable!()
}

fn scan_once(c: &mut redis::Connection, args: &[&str]) -> (u64, BTreeSet<String>) {
    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN").arg(args).query(c).expect("SCAN");
    (next, batch.into_iter().collect())
}

#[test]
fn scan_of_a_small_keyspace_answers_in_one_call_as_redis_does() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    // Five keys over three masters (at least one on each).
    let mut five = keys_on_every_master(&cluster, "s", 1);
    five.extend(keys_on_every_master(&cluster, "t", 1).into_iter().take(2));
    write_keys(&mut c, &five);
    let want: BTreeSet<String> = five.iter().cloned().collect();
    assert_eq!(scan_once(&mut c, &["0"]), (0, want.clone()));
    assert_eq!(scan_once(&mut c, &["0", "COUNT", "10"]), (0, want.clone()));
    let s_keys: BTreeSet<String> = five
        .iter()
        .filter(|k| k.starts_with('s'))
        .cloned()
        .collect();
    assert_eq!(scan_once(&mut c, &["0", "MATCH", "s*"]), (0, s_keys));

    // One set among strings: found in the one call, which ends the iteration.
    let strings = keys_on_every_master(&cluster, "str", 12);
    write_keys(&mut c, &strings);
    let _: i64 = c.sadd("the-set", "m").expect("SADD");
    let only = BTreeSet::from(["the-set".to_string()]);
    assert_eq!(scan_once(&mut c, &["0", "TYPE", "set"]), (0, only.clone()));
    assert_eq!(scan_once(&mut c, &["0", "MATCH", "the-*"]), (0, only));
    // A batch stops once it holds COUNT keys; the iteration then goes on as before.
    let (next, batch) = scan_once(&mut c, &["0", "COUNT", "5"]);
    assert_ne!(next, 0);
    assert!(batch.len() >= 5, "{batch:?}");
    let (all, _) = full_scan(&mut c, &["COUNT", "5"]);
    let every: BTreeSet<String> = five
        .iter()
        .chain(&strings)
        .cloned()
        .chain(["the-set".to_string()])
        .collect();
    assert_eq!(all.into_iter().collect::<BTreeSet<_>>(), every);
}

#[test]
fn persistence_and_diagnostics_reach_every_node() {
    let mut cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let every: BTreeSet<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
    assert_eq!(every.len(), 6);
    // Per-node reports: `[addr, reply, ...]` with every node's address once.
    let listed = |c: &mut redis::Connection, args: &[&str]| -> Vec<(String, redis::Value)> {
        let v: Vec<redis::Value> = redis::cmd(args[0])
            .arg(&args[1..])
            .query(c)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(v.len(), 12, "{args:?}: {v:?}");
        let pairs: Vec<(String, redis::Value)> = v
            .chunks(2)
            .map(|p| {
                let addr: String = redis::from_redis_value(&p[0]).expect("an address");
                (addr, p[1].clone())
            })
            .collect();
        let addrs: BTreeSet<String> = pairs.iter().map(|p| p.0.clone()).collect();
        assert_eq!(addrs, every, "{args:?}");
        pairs
    };
    for (addr, stats) in listed(&mut c, &["MEMORY", "STATS"]) {
        assert!(format!("{stats:?}").contains("peak.allocated"), "{addr}");
    }
    for (addr, doctor) in listed(&mut c, &["MEMORY", "DOCTOR"]) {
        let text: String = redis::from_redis_value(&doctor).expect("text");
        assert!(!text.is_empty(), "{addr}");
    }
    listed(&mut c, &["MEMORY", "MALLOC-STATS"]);
    let ok: String = redis::cmd("MEMORY")
        .arg("PURGE")
        .query(&mut c)
        .expect("PURGE");
    assert_eq!(ok, "OK");
    // A latency event on every node, then LATENCY reads it back per node.
    let ok: String = redis::cmd("CONFIG")
        .arg(&["SET", "latency-monitor-threshold", "1"])
        .query(&mut c)
        .expect("CONFIG SET");
    assert_eq!(ok, "OK");
    // A script that spins for 10 ms: a `command` latency event on the node it ran on.
    let spin = "local a = redis.call('TIME') \
                repeat local b = redis.call('TIME') \
                until (b[1] - a[1]) * 1000000 + b[2] - a[2] > 10000";
    for i in 0..cluster.nodes.len() {
        let _: () = redis::cmd("EVAL_RO")
            .arg(&[spin, "0"])
            .query(&mut node_conn(&cluster, i))
            .expect("a slow script");
    }
    for (addr, latest) in listed(&mut c, &["LATENCY", "LATEST"]) {
        assert!(
            format!("{latest:?}").contains("command"),
            "{addr}: {latest:?}"
        );
    }
    for (addr, history) in listed(&mut c, &["LATENCY", "HISTORY", "command"]) {
        let redis::Value::Array(events) = history else {
            panic!("{addr}: {history:?}")
        };
        assert!(!events.is_empty(), "{addr}");
    }
    listed(&mut c, &["LATENCY", "DOCTOR"]);
    listed(&mut c, &["LATENCY", "GRAPH", "command"]);
    listed(&mut c, &["LATENCY", "HISTOGRAM", "set"]);
    // Monitoring off first, so no new event can arrive between the RESET and the check.
    let ok: String = redis::cmd("CONFIG")
        .arg(&["SET", "latency-monitor-threshold", "0"])
        .query(&mut c)
        .expect("CONFIG SET");
    assert_eq!(ok, "OK");
    let n: i64 = redis::cmd("LATENCY")
        .arg("RESET")
        .query(&mut c)
        .expect("RESET");
    assert!(n >= 6, "one event kind on each of the six nodes: {n}");
    for (addr, latest) in listed(&mut c, &["LATENCY", "LATEST"]) {
        assert_eq!(latest, redis::Value::Array(vec![]), "{addr}");
    }

    // Persistence on every node; LASTSAVE is the oldest save among them.
    let t0: Vec<String> = redis::cmd("TIME")
        .query(&mut node_conn(&cluster, 0))
        .expect("TIME");
    let t0: i64 = t0[0].parse().expect("seconds");
    let ok: String = redis::cmd("SAVE").query(&mut c).expect("SAVE");
    assert_eq!(ok, "OK");
    let saves: Vec<i64> = (0..cluster.nodes.len())
        .map(|i| {
            redis::cmd("LASTSAVE")
                .query(&mut node_conn(&cluster, i))
                .expect("node LASTSAVE")
        })
        .collect();
    assert!(saves.iter().all(|&s| s >= t0), "{saves:?} before {t0}");
    let oldest: i64 = redis::cmd("LASTSAVE").query(&mut c).expect("LASTSAVE");
    assert_eq!(Some(oldest), saves.iter().copied().min());
    let started: String = redis::cmd("BGSAVE")
        .arg("SCHEDULE")
        .query(&mut c)
        .expect("BGSAVE");
    assert!(started.starts_with("Background saving"), "{started}");
    let rewrite: String = redis::cmd("BGREWRITEAOF")
        .query(&mut c)
        .expect("BGREWRITEAOF");
    assert!(
        rewrite.starts_with("Background append only file"),
        "{rewrite}"
    );
    let ok: String = redis::cmd("CONFIG")
        .arg(&["SET", "slowlog-max-len", "1234"])
        .query(&mut c)
        .expect("CONFIG SET");
    assert_eq!(ok, "OK");
    let ok: String = redis::cmd("CONFIG")
        .arg("REWRITE")
        .query(&mut c)
        .expect("CONFIG REWRITE");
    assert_eq!(ok, "OK");
    for n in &cluster.nodes {
        let conf = std::fs::read_to_string(n.dir.join("redis.conf")).expect("redis.conf");
        assert!(
            conf.contains("slowlog-max-len 1234"),
            "{}: CONFIG REWRITE wrote the file",
            n.addr()
        );
    }

    // A RESP3 client gets each listing as a map.
    let mut raw = proxy.raw();
    let (out, closed) = raw_exchange(
        &mut raw,
        b"HELLO 3\r\nMEMORY DOCTOR\r\nQUIT\r\n",
        Duration::from_secs(10),
    );
    assert!(closed, "QUIT closes: {out}");
    // HELLO's own map has 7 entries; the listing's has one per node.
    let listing = out
        .split_once("\r\n%6\r\n$")
        .map(|x| x.1)
        .unwrap_or_default();
    assert!(listing.contains("\r\n127.0.0."), "{out}");

    // One node down: the others answer, and the error names the one that did not.
    let replica = (0..cluster.nodes.len())
        .find(|&i| !cluster.nodes[i].is_master)
        .expect("a replica");
    let down = cluster.nodes[replica].addr();
    cluster.kill(replica);
    for args in [
        &["MEMORY", "STATS"][..],
        &["MEMORY", "PURGE"],
        &["LATENCY", "LATEST"],
    ] {
        let err = redis::cmd(args[0])
            .arg(&args[1..])
            .query::<redis::Value>(&mut c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("failed on 1 of 6 nodes"), "{args:?}: {err}");
        assert!(err.contains(&down), "{args:?}: {down} missing from {err}");
    }
}

#[test]
fn config_set_reaches_masters_and_replicas() {
    let mut cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    // Wait until the map lists every replica (they are in nodes.conf from the start).
    let ok: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("4242")
        .query(&mut c)
        .expect("CONFIG SET");
    assert_eq!(ok, "OK");
    assert_eq!(cluster.nodes.len(), 6);
    for i in 0..cluster.nodes.len() {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("slowlog-log-slower-than")
            .query(&mut node_conn(&cluster, i))
            .expect("node CONFIG GET");
        assert_eq!(
            v,
            vec!["slowlog-log-slower-than".to_string(), "4242".to_string()],
            "node {i} (master: {})",
            cluster.nodes[i].is_master
        );
    }
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("slowlog-log-slower-than")
        .query(&mut c)
        .expect("CONFIG GET");
    assert_eq!(v[1], "4242");
    let ok: String = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut c)
        .expect("CONFIG RESETSTAT");
    assert_eq!(ok, "OK");
    // A setting every node rejects: Redis's own error, as from one server.
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("no-such-setting")
        .arg("1")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("Unknown option"), "{err}");
    assert!(!err.to_string().contains("failed on"), "{err}");

    // allow_config_set = false refuses CONFIG SET; CONFIG GET still answers.
    let locked = Proxy::start_with(&cluster.seeds(), "allow_config_set = false", true);
    let mut l = locked.conn();
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("1")
        .query::<()>(&mut l)
        .unwrap_err();
    assert!(err.to_string().contains("allow_config_set"), "{err}");
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut l)
        .expect("CONFIG GET");
    assert_eq!(v.len(), 2, "CONFIG GET still answers: {v:?}");
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("slowlog-log-slower-than")
        .query(&mut node_conn(&cluster, 0))
        .expect("node CONFIG GET");
    assert_eq!(v[1], "4242", "the refused CONFIG SET changed nothing");
    drop(l);
    drop(locked);

    // One replica down: the others apply it, and the error names the one that failed.
    let replica = (0..cluster.nodes.len())
        .find(|&i| !cluster.nodes[i].is_master)
        .expect("a replica");
    let down = cluster.nodes[replica].addr();
    cluster.kill(replica);
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("777")
        .query::<()>(&mut c)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("failed on 1 of 6 nodes"), "{text}");
    assert!(text.contains(&down), "{down} missing from {text}");
    for i in (0..cluster.nodes.len()).filter(|&i| i != replica) {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("slowlog-log-slower-than")
            .query(&mut node_conn(&cluster, i))
            .expect("node CONFIG GET");
        assert_eq!(v[1], "777", "node {i}");
    }
}

#[test]
fn scan_during_a_slot_migration_misses_no_key() {
    // Keys move from the master visited first to one visited later.
    scan_during_migration(0, 16383);
}

#[test]
fn scan_during_a_backward_slot_migration_misses_no_key() {
    // Keys move from the master visited last to the one visited first: only the final visit
    // of the importing node finds the keys that moved after the first visit.
    scan_during_migration(16383, 0);
}

/// Moves a slot from the owner of slot `from` to the owner of slot `to` while full SCANs run;
/// every scan must return every key.
fn scan_during_migration(from: u16, to: u16) {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let src = owner_of(&cluster, 0, from);
    let dst = owner_of(&cluster, 0, to);
    let tag = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| owner_of(&cluster, 0, key_slot(t.as_bytes())) == src)
        .expect("a tag on the source");
    let slot = key_slot(tag.as_bytes());
    let mut all: Vec<String> = (0..2000).map(|i| format!("k:{i}")).collect();
    all.extend((0..300).map(|i| format!("{{{tag}}}:{i}")));
    write_keys(&mut c, &all);
    let all: BTreeSet<String> = all.into_iter().collect();

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = std::sync::Arc::clone(&done);
    let mover = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            migrate_slot(&cluster, slot, src, dst);
            done2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut scans = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let (keys, _) = full_scan(&mut c, &["COUNT", "10"]);
            let got: BTreeSet<String> = keys.into_iter().collect();
            let missing: Vec<&String> = all.difference(&got).take(5).collect();
            assert!(missing.is_empty(), "scan {scans} missed {missing:?}");
            assert_eq!(got.len(), all.len());
            scans += 1;
        }
        h.join().expect("migration");
        scans
    });
    eprintln!("{mover} full scans ran during the migration");
    assert!(mover >= 1, "no scan ran during the migration");
    // After the move (the proxy learns it from MOVED or its refresh), a full scan is exact.
    std::thread::sleep(Duration::from_millis(1500));
    let (keys, _) = full_scan(&mut c, &["COUNT", "10"]);
    assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), all);
    assert_eq!(owner_of(&cluster, dst, slot), dst);
    let n: usize = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(n, all.len());
}
