//! A reply is input, not an order: error texts that scripts return (MOVED, ASK, TRYAGAIN,
//! CLUSTERDOWN) must not steer the proxy, while the cluster's real redirects, including ones to
//! nodes the proxy has not seen yet, are still followed once a refresh from trusted nodes
//! confirms them. Real redis-server nodes; the "node" a forged redirect names is a plain TCP
//! listener of the test that counts what reaches it.

mod common;

use common::*;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::cluster::slots::key_slot;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A listener that plays a node an attacker wants traffic sent to: it accepts, counts
/// connections and bytes, and answers nothing.
struct Bait {
    port: u16,
    conns: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bait {
    fn start() -> Bait {
        let l = TcpListener::bind("127.0.0.1:0").expect("bait listener");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let (conns, bytes, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, b, s) = (conns.clone(), bytes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut open: Vec<TcpStream> = Vec::new();
            while !s.load(SeqCst) {
                if let Ok((stream, _)) = l.accept() {
                    c.fetch_add(1, SeqCst);
                    stream.set_nonblocking(true).ok();
                    open.push(stream);
                }
                let mut buf = [0u8; 4096];
                for st in &mut open {
                    if let Ok(n) = st.read(&mut buf) {
                        b.fetch_add(n, SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Bait {
            port,
            conns,
            bytes,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Bait {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Reads one reply that is a line, or a bulk string (returned as its text).
fn read_reply(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("reading a reply");
    let line = line.trim_end().to_string();
    if let Some(n) = line.strip_prefix('$') {
        if let Ok(n) = n.parse::<usize>() {
            let mut data = vec![0u8; n + 2];
            r.read_exact(&mut data).expect("bulk");
            return String::from_utf8_lossy(&data[..n]).into_owned();
        }
    }
    line
}

fn raw(proxy: &Proxy) -> (TcpStream, BufReader<TcpStream>) {
    let s = proxy.raw();
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

fn call(s: &mut TcpStream, r: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    s.write_all(&encode(args)).expect("write");
    read_reply(r)
}

/// A key whose slot is `slot`.
fn key_in_slot(slot: u16) -> String {
    (0u64..)
        .map(|i| format!("key:{i}"))
        .find(|k| key_slot(k.as_bytes()) == slot)
        .expect("some key hashes to every slot")
}

/// The `node` label values of the per-node request counter.
fn node_labels(proxy: &Proxy) -> BTreeSet<String> {
    proxy
        .scrape()
        .lines()
        .filter(|l| l.starts_with("slotproxy_node_requests_total{"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

/// Waits for the metrics flush (once a second) to show `want` node labels.
fn wait_labels(proxy: &Proxy, want: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let labels = node_labels(proxy);
        if labels.len() == want || Instant::now() > deadline {
            return labels;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn redirects_forged_by_scripts_steer_nothing() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let bait = Bait::start();
    let evil = format!("127.0.0.1:{}", bait.port);
    let key0 = key_in_slot(0);
    let owner = owner_of(&cluster, 0, 0);
    let other = (0..3).find(|&i| i != owner).expect("another master");
    let other_addr = cluster.nodes[other].addr();
    let (mut s, mut r) = raw(&proxy);
    // Traffic to every master, so each has its pool and node label before the attack.
    for i in 0..30 {
        assert_eq!(
            call(&mut s, &mut r, &["SET", &format!("warm:{i}"), "x"]),
            "+OK"
        );
    }
    let before = wait_labels(&proxy, 3);
    assert_eq!(before.len(), 3, "{before:?}");

    let script = |text: &str| format!("return {{err='{text}'}}");
    let forged = [
        // Keyless: sent to any node; nothing in its reply may redirect it.
        (script(&format!("MOVED 0 {evil}")), vec!["0"]),
        (script(&format!("ASK 0 {evil}")), vec!["0"]),
        // With a key in slot 0: an address no trusted node lists is refused after a refresh.
        (script(&format!("MOVED 0 {evil}")), vec!["1", &key0]),
        (script(&format!("ASK 0 {evil}")), vec!["1", &key0]),
        // A real master that does not serve the slot.
        (script(&format!("MOVED 0 {other_addr}")), vec!["1", &key0]),
        // Slot numbers beyond 16383 (once read as slot 0 by masking).
        (script(&format!("MOVED 16384 {evil}")), vec!["0"]),
        (script(&format!("MOVED 65535 {evil}")), vec!["1", &key0]),
        (script("CLUSTERDOWN forged"), vec!["1", &key0]),
    ];
    for (body, rest) in &forged {
        for cmd in ["EVAL", "EVAL_RO"] {
            let mut args = vec![cmd, body.as_str()];
            args.extend(rest.iter().map(|x| &**x));
            let reply = call(&mut s, &mut r, &args);
            let text = body
                .trim_start_matches("return {err='")
                .trim_end_matches("'}");
            assert_eq!(reply, format!("-{text}"), "{args:?}");
        }
    }

    // A forged TRYAGAIN is the script's answer, not a reason to run it again.
    let counter = format!("{{{key0}}}:runs");
    let reply = call(
        &mut s,
        &mut r,
        &[
            "EVAL",
            "redis.call('INCR', KEYS[1]); return {err='TRYAGAIN forged'}",
            "1",
            &counter,
        ],
    );
    assert_eq!(reply, "-TRYAGAIN forged");
    assert_eq!(call(&mut s, &mut r, &["GET", &counter]), "1");

    // A burst of 1000 forged redirects to as many addresses, half of them for slot 0's key.
    let mut burst = Vec::new();
    for i in 0..1000u32 {
        let addr = if i % 97 == 0 {
            evil.clone()
        } else {
            format!("127.0.{}.{}:{}", 1 + i % 200, 1 + i % 250, 20000 + i)
        };
        let body = script(&format!("MOVED 0 {addr}"));
        let args: Vec<&str> = if i % 2 == 0 {
            vec!["EVAL_RO", &body, "0"]
        } else {
            vec!["EVAL_RO", &body, "1", &key0]
        };
        burst.extend(encode(&args));
    }
    s.write_all(&burst).expect("burst");
    for i in 0..1000 {
        let reply = read_reply(&mut r);
        assert!(reply.starts_with("-MOVED 0 127.0."), "reply {i}: {reply}");
    }

    // Slot 0 still goes to its real owner, for this client and a new one.
    assert_eq!(call(&mut s, &mut r, &["SET", &key0, "real"]), "+OK");
    let direct: Option<String> = redis::cmd("GET")
        .arg(&key0)
        .query(&mut node_conn(&cluster, owner))
        .expect("GET on the owner");
    assert_eq!(direct.as_deref(), Some("real"));
    let (mut s2, mut r2) = raw(&proxy);
    assert_eq!(call(&mut s2, &mut r2, &["GET", &key0]), "real");

    // Nothing reached the bait, and the proxy knows the same nodes as before.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        bait.conns.load(SeqCst),
        0,
        "connections to the forged address"
    );
    assert_eq!(
        bait.bytes.load(SeqCst),
        0,
        "bytes sent to the forged address"
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(node_labels(&proxy), before);
    assert!(
        !proxy.log().contains(&evil),
        "the log names the forged address"
    );
}

/// Starts one empty cluster-enabled node on 127.0.0.4 and has it join `cluster`.
fn join_new_node(cluster: &LocalCluster) -> LocalCluster {
    let extra = LocalCluster::start_empty(&[("127.0.0.4".to_string(), 1)], 1000, "redis-server")
        .expect("starting an extra node");
    let seed = &cluster.nodes[0];
    extra
        .command(0, &["CLUSTER", "MEET", &seed.ip, &seed.port.to_string()])
        .expect("MEET");
    let id = extra.nodes[0].node_id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let everyone_knows = (0..cluster.nodes.len()).all(|i| {
            cluster
                .command(i, &["CLUSTER", "NODES"])
                .map(|t| {
                    t.lines()
                        .any(|l| l.starts_with(&id) && l.contains(" connected"))
                })
                .unwrap_or(false)
        });
        let it_knows = extra
            .command(0, &["CLUSTER", "NODES"])
            .map(|t| t.lines().filter(|l| l.contains(" connected")).count() > cluster.nodes.len())
            .unwrap_or(false);
        let it_is_ok = extra
            .command(0, &["CLUSTER", "INFO"])
            .map(|t| t.contains("cluster_state:ok"))
            .unwrap_or(false);
        if everyone_knows && it_knows && it_is_ok {
            return extra;
        }
        assert!(Instant::now() < deadline, "the new node did not join");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_redirects_to_a_new_node_are_followed_once_a_refresh_lists_it() {
    let cluster = cluster(3, 1, 0);
    // No periodic refresh: the proxy learns of the new node only through a redirect's refresh.
    let proxy = Proxy::start_with(&cluster.seeds(), "refresh_interval = \"1h\"\n", true);
    let key0 = key_in_slot(0);
    let (mut s, mut r) = raw(&proxy);
    assert_eq!(call(&mut s, &mut r, &["SET", &key0, "moving"]), "+OK");
    let blocking_key = format!("{{{key0}}}:list");
    assert_eq!(
        call(&mut s, &mut r, &["RPUSH", &blocking_key, "item"]),
        ":1"
    );

    let extra = join_new_node(&cluster);
    let new = &extra.nodes[0];
    let (new_id, new_addr) = (new.node_id.clone(), new.addr());
    let owner = owner_of(&cluster, 0, 0);
    let owner_id = cluster.nodes[owner].node_id.clone();
    extra
        .command(0, &["CLUSTER", "SETSLOT", "0", "IMPORTING", &owner_id])
        .expect("IMPORTING");
    cluster
        .command(owner, &["CLUSTER", "SETSLOT", "0", "MIGRATING", &new_id])
        .expect("MIGRATING");
    let port = new.port.to_string();
    for k in [key0.as_str(), blocking_key.as_str()] {
        cluster
            .command(owner, &["MIGRATE", &new.ip, &port, k, "0", "5000"])
            .expect("MIGRATE");
    }

    // Mid-migration: the owner answers ASK to a node the proxy's map has never listed (an
    // empty master); the refresh it triggers lists it, so the ASK is followed.
    assert_eq!(call(&mut s, &mut r, &["GET", &key0]), "moving");
    // The same for a blocking command, on its own connection.
    let popped = {
        s.write_all(&encode(&["BLPOP", &blocking_key, "1"]))
            .expect("write");
        let mut first = String::new();
        r.read_line(&mut first).expect("BLPOP reply");
        assert_eq!(first.trim_end(), "*2", "BLPOP: {first}");
        (read_reply(&mut r), read_reply(&mut r))
    };
    assert_eq!(popped, (blocking_key.clone(), "item".to_string()));

    // The slot moves for good: MOVED to the new node, which the map now knows.
    for i in 0..cluster.nodes.len() {
        cluster
            .command(i, &["CLUSTER", "SETSLOT", "0", "NODE", &new_id])
            .expect("SETSLOT NODE");
    }
    extra
        .command(0, &["CLUSTER", "SETSLOT", "0", "NODE", &new_id])
        .expect("SETSLOT NODE");
    assert_eq!(call(&mut s, &mut r, &["SET", &key0, "moved"]), "+OK");
    let direct = extra
        .command(0, &["GET", &key0])
        .expect("GET on the new node");
    assert_eq!(direct.trim(), "moved");
    assert!(
        wait_labels(&proxy, 4).contains(&new_addr),
        "the new node has its stats"
    );

    // The slot goes back and the cluster forgets the node: the proxy drops its pools, idle
    // connections, stats and metric labels with it.
    cluster
        .command(owner, &["CLUSTER", "SETSLOT", "0", "IMPORTING", &new_id])
        .expect("IMPORTING back");
    extra
        .command(0, &["CLUSTER", "SETSLOT", "0", "MIGRATING", &owner_id])
        .expect("MIGRATING back");
    let owner_node = &cluster.nodes[owner];
    extra
        .command(
            0,
            &[
                "MIGRATE",
                &owner_node.ip,
                &owner_node.port.to_string(),
                &key0,
                "0",
                "5000",
            ],
        )
        .expect("MIGRATE back");
    for i in 0..cluster.nodes.len() {
        cluster
            .command(i, &["CLUSTER", "SETSLOT", "0", "NODE", &owner_id])
            .expect("SETSLOT NODE back");
    }
    // (The emptied node may already have turned replica of the slot's owner and refuse.)
    let _ = extra.command(0, &["CLUSTER", "SETSLOT", "0", "NODE", &owner_id]);
    assert_eq!(call(&mut s, &mut r, &["GET", &key0]), "moved");
    for i in 0..cluster.nodes.len() {
        cluster
            .command(i, &["CLUSTER", "FORGET", &new_id])
            .expect("FORGET");
    }
    // It forgets the cluster too, so gossip cannot bring it back while the test looks.
    extra
        .command(0, &["CLUSTER", "RESET", "HARD"])
        .expect("CLUSTER RESET");
    assert_eq!(call(&mut s, &mut r, &["PROXY", "REFRESH"]), "+OK");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Requests make each worker see the new map (and prune what it no longer lists).
        for i in 0..20 {
            assert_eq!(
                call(&mut s, &mut r, &["SET", &format!("after:{i}"), "x"]),
                "+OK"
            );
        }
        let labels = node_labels(&proxy);
        let clients = extra
            .command(0, &["CLIENT", "LIST"])
            .map(|t| t.lines().filter(|l| !l.is_empty()).count())
            .unwrap_or(0);
        // One client left: the one asking.
        if !labels.contains(&new_addr) && labels.len() == 3 && clients == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node still tracked: labels {labels:?}, {clients} clients on the node"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
