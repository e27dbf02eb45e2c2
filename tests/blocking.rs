//! Blocking commands through the proxy against a real cluster: each blocks on a connection of
//! its own, other clients are not held up, a client that leaves releases its connection.

mod common;

use common::*;
use redis::{Commands, Value};
use std::time::{Duration, Instant};

fn node_info_field(
    cluster: &slotproxy::admin::localcluster::LocalCluster,
    i: usize,
    field: &str,
) -> i64 {
    let info = cluster.command(i, &["INFO", "clients"]).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn blpop_is_woken_by_another_client_and_does_not_hold_up_others() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let addr = proxy.addr.clone();
    let blocked = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://{addr}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        let v: (String, String) = redis::cmd("BLPOP")
            .arg("jobs")
            .arg(0)
            .query(&mut c)
            .expect("BLPOP");
        v
    });
    // Wait until the node sees the blocked client.
    let owner = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"jobs"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_info_field(&cluster, owner, "blocked_clients") != 1 {
        assert!(Instant::now() < deadline, "BLPOP never blocked on the node");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A third client works normally meanwhile, on every node including the blocked one.
    let mut other = proxy.conn();
    for i in 0..2000 {
        let _: () = other.set(format!("k{i}"), i).unwrap();
        assert_eq!(other.get::<_, i64>(format!("k{i}")).unwrap(), i);
    }
    let _: () = other.set("{jobs}x", 1).unwrap();
    let mut pusher = proxy.conn();
    let _: i64 = pusher.lpush("jobs", "job-1").unwrap();
    let (list, item) = blocked.join().expect("blocked thread");
    assert_eq!((list.as_str(), item.as_str()), ("jobs", "job-1"));

    // Timeouts are the command's own: nil after one second.
    let mut c = proxy.conn();
    let v: Value = redis::cmd("BLPOP")
        .arg("empty")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, Value::Nil);
    // Several keys of one slot; keys of different slots get CROSSSLOT.
    let _: i64 = c.rpush("{q}b", "x").unwrap();
    let v: (String, String) = redis::cmd("BRPOP")
        .arg("{q}a")
        .arg("{q}b")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, ("{q}b".to_string(), "x".to_string()));
    let e = redis::cmd("BLMOVE")
        .arg("a")
        .arg("b")
        .arg("LEFT")
        .arg("RIGHT")
        .arg(0)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("crossslot"), "{e}");
    // Sorted sets and streams.
    let _: i64 = c.zadd("{z}s", "m", 3).unwrap();
    let v: (String, String, String) = redis::cmd("BZPOPMIN")
        .arg("{z}s")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(v.1, "m");
    let addr = proxy.addr.clone();
    let reader = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://{addr}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(0)
            .arg("STREAMS")
            .arg("events")
            .arg("$")
            .query::<Value>(&mut c)
            .expect("XREAD BLOCK")
    });
    let owner = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"events"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_info_field(&cluster, owner, "blocked_clients") != 1 {
        assert!(Instant::now() < deadline, "XREAD never blocked on the node");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _: String = redis::cmd("XADD")
        .arg("events")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let got = format!("{:?}", reader.join().expect("reader"));
    assert!(got.contains("events"), "{got}");
}

#[test]
fn a_client_that_leaves_while_blocked_releases_its_connection() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let owner = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"ghost"));
    let clients_before = node_info_field(&cluster, owner, "connected_clients");
    {
        let mut raw = proxy.raw();
        use std::io::Write;
        raw.write_all(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nghost\r\n$1\r\n0\r\n")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while node_info_field(&cluster, owner, "blocked_clients") != 1 {
            assert!(Instant::now() < deadline, "BLPOP never blocked on the node");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The client goes away here.
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_info_field(&cluster, owner, "blocked_clients") != 0 {
        assert!(
            Instant::now() < deadline,
            "the node still has a blocked client after ours left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nobody consumes what is pushed now.
    let mut c = proxy.conn();
    let _: i64 = c.lpush("ghost", "kept").unwrap();
    assert_eq!(c.llen::<_, i64>("ghost").unwrap(), 1);
    assert!(node_info_field(&cluster, owner, "connected_clients") <= clients_before + 2);
}

#[test]
fn dedicated_connections_are_bounded() {
    let cluster = cluster(3, 1, 0);
    // Two workers, one dedicated connection each: a third blocked client is refused.
    let proxy = Proxy::start_with(&cluster.seeds(), "max_dedicated_per_worker = 1", true);
    let mut raws = Vec::new();
    for i in 0..2 {
        let mut raw = proxy.raw();
        use std::io::Write;
        let key = format!("wait{i}");
        raw.write_all(
            format!(
                "*3\r\n$5\r\nBLPOP\r\n${}\r\n{key}\r\n$1\r\n0\r\n",
                key.len()
            )
            .as_bytes(),
        )
        .unwrap();
        raws.push(raw);
    }
    // Both blocked clients must be registered before the third arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let blocked: i64 = (0..cluster.nodes.len())
            .map(|i| node_info_field(&cluster, i, "blocked_clients"))
            .sum();
        if blocked == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "clients never blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = proxy.conn();
    let e = redis::cmd("BLPOP")
        .arg("wait3")
        .arg(0)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("too many dedicated connections"),
        "{e}"
    );
    // Ordinary commands are not affected.
    let _: () = c.set("x", 1).unwrap();
}

#[test]
fn wait_counts_the_replicas_that_acknowledged_the_clients_writes() {
    let cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    for i in 0..50 {
        let _: () = c.set(format!("w{i}"), i).unwrap();
    }
    // Every master written to has one replica: WAIT 1 returns once each acknowledged.
    let n: i64 = redis::cmd("WAIT").arg(1).arg(0).query(&mut c).unwrap();
    assert_eq!(n, 1);
    // Two replicas are never reached: the timeout answers with the count so far.
    let n: i64 = redis::cmd("WAIT").arg(2).arg(300).query(&mut c).unwrap();
    assert_eq!(n, 1);
    // Redis's texts for bad arguments.
    let e = redis::cmd("WAIT")
        .arg(1)
        .arg(-1)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("timeout is negative"), "{e}");
    // The replicas really have the data.
    for i in 0..cluster.nodes.len() {
        if cluster.nodes[i].is_master {
            continue;
        }
        let keys: i64 = redis::cmd("DBSIZE")
            .query(&mut node_conn(&cluster, i))
            .unwrap();
        assert!(keys > 0, "replica {i} is empty");
    }
}

#[test]
fn xreadgroup_with_a_consumer_named_streams_blocks_on_its_own_connection() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("{s}stream")
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query(&mut c)
        .unwrap();
    // "streams" is the consumer's name here, not the keyword: BLOCK 0 still applies.
    let mut blocked = proxy.raw();
    {
        use std::io::Write;
        blocked
            .write_all(b"XREADGROUP GROUP g streams BLOCK 0 STREAMS {s}stream >\r\n")
            .unwrap();
    }
    let owner = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"s"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_info_field(&cluster, owner, "blocked_clients") != 1 {
        assert!(
            Instant::now() < deadline,
            "XREADGROUP never blocked on the node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Clients on every worker (all open at once, so both workers get some) still reach
    // that node: had the read gone to a shared connection, it would be stuck behind it.
    let mut others: Vec<_> = (0..3).map(|_| proxy.conn()).collect();
    for (i, o) in others.iter_mut().enumerate() {
        let _: () = o.set(format!("{{s}}k{i}"), i).unwrap();
        assert_eq!(o.get::<_, usize>(format!("{{s}}k{i}")).unwrap(), i);
    }
    let _: String = redis::cmd("XADD")
        .arg("{s}stream")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let got = read_line(&blocked);
    assert_eq!(got, "*1\r\n", "the blocked reader gets the entry");
}

#[test]
fn one_client_cannot_take_all_dedicated_connections() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), "max_dedicated_per_client = 2", true);
    let mut a = proxy.raw();
    {
        use std::io::Write;
        // Pipelined blocking commands each want a connection at once.
        a.write_all(b"BLPOP {q}1 0\r\nBLPOP {q}2 0\r\nBLPOP {q}3 0\r\n")
            .unwrap();
    }
    let owner = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"q"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_info_field(&cluster, owner, "blocked_clients") != 2 {
        assert!(Instant::now() < deadline, "the BLPOPs never blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = proxy.conn();
    let _: i64 = c.rpush("{q}1", "x").unwrap();
    let _: i64 = c.rpush("{q}2", "y").unwrap();
    let (got, _) = raw_exchange(&mut a, b"", Duration::from_secs(2));
    assert_eq!(
        got,
        "*2\r\n$4\r\n{q}1\r\n$1\r\nx\r\n*2\r\n$4\r\n{q}2\r\n$1\r\ny\r\n-ERR slotproxy: too many dedicated connections for this client (max_dedicated_per_client = 2); blocking commands, transactions and subscriptions each hold one\r\n"
    );
    // Connections given back no longer count.
    let _: i64 = c.rpush("{q}4", "z").unwrap();
    let (got, _) = raw_exchange(&mut a, b"BLPOP {q}4 0\r\n", Duration::from_secs(2));
    assert_eq!(got, "*2\r\n$4\r\n{q}4\r\n$1\r\nz\r\n");
}

#[test]
fn dedicated_connections_have_tcp_keepalive() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut blocked = proxy.raw();
    {
        use std::io::Write;
        blocked.write_all(b"BLPOP ka 0\r\n").unwrap();
    }
    let owner = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"ka"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_info_field(&cluster, owner, "blocked_clients") != 1 {
        assert!(Instant::now() < deadline, "BLPOP never blocked on the node");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The kernel's view of the proxy's sockets to that node: the blocked command's
    // connection runs a keepalive timer, so a node that vanishes without a FIN is noticed.
    let n = &cluster.nodes[owner];
    let out = std::process::Command::new("ss")
        .args(["-tnpo", "state", "established", "dst"])
        .arg(format!("{}:{}", n.ip, n.port))
        .output()
        .expect("running ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = format!("pid={},", proxy.pid());
    let with_keepalive = text
        .lines()
        .filter(|l| l.contains(&pid) && l.contains("timer:(keepalive"))
        .count();
    assert!(
        with_keepalive >= 1,
        "no keepalive on the proxy's sockets:\n{text}"
    );
}

#[test]
fn wait_asks_the_connections_a_resp3_clients_writes_took() {
    let mut cluster = cluster_with_timeout(3, 2, 1, 60_000);
    let proxy = Proxy::start(&cluster);
    let master = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"w3"));
    let text = cluster.nodes_text(master);
    let lines = slotproxy::cluster::parse_cluster_nodes(&text, "").expect("CLUSTER NODES");
    let master_id = cluster.nodes[master].node_id.clone();
    let replica_id = lines
        .iter()
        .find(|l| l.master_id.as_deref() == Some(master_id.as_str()))
        .map(|l| l.id.clone())
        .expect("a replica of the master");
    let replica = cluster
        .nodes
        .iter()
        .position(|n| n.node_id == replica_id)
        .expect("the replica among our nodes");
    let mut raw = proxy.raw();
    let (hello, _) = raw_exchange(&mut raw, b"HELLO 3\r\n", Duration::from_millis(500));
    assert!(hello.contains("proto"), "{hello}");
    let (got, _) = raw_exchange(
        &mut raw,
        b"SET w3 a\r\nWAIT 1 0\r\n",
        Duration::from_secs(2),
    );
    assert_eq!(got, "+OK\r\n:1\r\n");
    // The replica cannot acknowledge the next write: WAIT must say so. (Asked on a connection
    // the write did not take, it would count the replica's older acknowledgement.)
    cluster.stop(replica);
    let (got, _) = raw_exchange(
        &mut raw,
        b"SET w3 b\r\nWAIT 1 300\r\n",
        Duration::from_secs(2),
    );
    cluster.cont(replica);
    assert_eq!(got, "+OK\r\n:0\r\n");
}

#[test]
fn wait_asks_only_the_masters_the_clients_writes_went_to() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    // Reads on every master, one write on one of them.
    let mut read_owners = std::collections::HashSet::new();
    for i in 0..100 {
        let key = format!("r{i}");
        let _: Option<String> = c.get(&key).unwrap();
        read_owners.insert(owner_of(
            &cluster,
            0,
            slotproxy::cluster::slots::key_slot(key.as_bytes()),
        ));
    }
    assert_eq!(read_owners.len(), 3, "the reads should reach every master");
    let _: () = c.set("w", 1).unwrap();
    let written = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"w"));
    let n: i64 = redis::cmd("WAIT").arg(0).arg(0).query(&mut c).unwrap();
    assert_eq!(n, 0);
    // Reads move no replication offset: only the written master is asked.
    let asked: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&i| wait_calls_of(&cluster, i) > 0)
        .collect();
    assert_eq!(asked, vec![written]);
}

/// WAIT calls node `i` of `cluster` has answered.
fn wait_calls_of(cluster: &slotproxy::admin::localcluster::LocalCluster, i: usize) -> i64 {
    let info = cluster
        .command(i, &["INFO", "commandstats"])
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// WAIT calls the nodes have answered, summed over `cluster`'s nodes.
fn node_wait_calls(cluster: &slotproxy::admin::localcluster::LocalCluster) -> i64 {
    (0..cluster.nodes.len())
        .map(|i| wait_calls_of(cluster, i))
        .sum()
}

#[test]
fn pipelined_waits_do_not_stall_other_clients() {
    let cluster = cluster(3, 1, 0);
    // A safety bound, not a measure: a request stuck behind WAITs on a shared connection
    // fails after 3 s instead of hanging the test.
    let proxy = Proxy::start_with(&cluster.seeds(), "request_timeout = \"3s\"", true);
    let mut raw = proxy.raw();
    {
        use std::io::Write;
        // No replicas: WAIT 99 is never satisfied, and 0 waits for ever.
        let mut req = b"SET {w}x 1\r\n".to_vec();
        req.extend_from_slice(&b"WAIT 99 0\r\n".repeat(1024));
        raw.write_all(&req).unwrap();
    }
    assert_eq!(read_line(&raw), "+OK\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_wait_calls(&cluster) == 0 {
        assert!(Instant::now() < deadline, "WAIT never reached a node");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Clients on both workers use the node the WAITs poll, meanwhile.
    let mut others: Vec<_> = (0..3).map(|_| proxy.conn()).collect();
    for round in 0..5 {
        for o in others.iter_mut() {
            let _: () = o.set("{w}y", round).unwrap();
            assert_eq!(o.get::<_, i64>("{w}y").unwrap(), round);
        }
    }
}

/// Makes `addr` (a stopped node's address) a black hole for connects: a listener there with an
/// accept queue of one, filled by a connection it never accepts, so the kernel drops every
/// further SYN and a connect attempt waits until its own timeout. Keep what it returns alive.
fn black_hole(addr: &str) -> (socket2::Socket, Vec<std::net::TcpStream>) {
    let sock_addr: std::net::SocketAddr = addr.parse().expect("node address");
    let listener = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    listener.set_reuse_address(true).expect("SO_REUSEADDR");
    listener
        .bind(&sock_addr.into())
        .expect("binding the stopped node's address");
    listener.listen(0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&sock_addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            // The queue is full: connects now wait for their own timeout.
            Err(_) => return (listener, fillers),
        }
    }
    panic!("the accept queue of {addr} never filled");
}

#[test]
fn connect_timeout_set_live_bounds_dedicated_connections() {
    // A long node timeout: the other nodes keep the stopped node as the slot's owner.
    let mut cluster = cluster_with_timeout(3, 1, 0, 60_000);
    let proxy = Proxy::start_with(&cluster.seeds(), "connect_timeout = \"30s\"", true);
    let mut c = proxy.conn();
    let ok: String = redis::cmd("PROXY")
        .arg("CONFIG")
        .arg("SET")
        .arg("connect_timeout")
        .arg("200ms")
        .query(&mut c)
        .expect("PROXY CONFIG SET");
    assert_eq!(ok, "OK");
    let owner = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"jobs"));
    let addr = cluster.nodes[owner].addr();
    cluster.kill(owner);
    let _hole = black_hole(&addr);
    // BLPOP needs a dedicated connection to the owner, which does not answer the connect: the
    // live connect_timeout (200ms), not the one the proxy started with (30s), ends the wait.
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let reply = redis::cmd("BLPOP")
        .arg("jobs")
        .arg(0)
        .query::<Value>(&mut c);
    let waited = started.elapsed();
    let e = match reply {
        Ok(v) => panic!("BLPOP on an unreachable node answered {v:?}"),
        Err(e) => e.to_string(),
    };
    assert!(
        waited < Duration::from_secs(5),
        "BLPOP waited {waited:?} for the connect, not the live connect_timeout: {e}"
    );
    assert!(
        e.contains(&format!("backend {addr}")) && e.contains("connect: timed out after 200ms"),
        "{e}"
    );
}
