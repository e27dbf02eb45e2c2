//! The data path against real Redis Clusters, through the `redis` crate as the client.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use redis::Commands;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::cluster::slots::key_slot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn keys_land_on_the_node_that_owns_their_slot() {
    let cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("key:{i}:{}", rng.gen::<u64>()))
        .collect();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.set(k, format!("v-{k}")).ignore();
    }
    pipe.query::<()>(&mut c).expect("pipelined SETs");

    // Read every key straight from the master that owns its slot: a key on any other node
    // would answer MOVED and fail the read.
    let owners: Vec<usize> = (0..16384u16).map(|s| owner_of(&cluster, 0, s)).collect();
    let mut conns: Vec<Option<redis::Connection>> = cluster.nodes.iter().map(|_| None).collect();
    for k in &keys {
        let owner = owners[key_slot(k.as_bytes()) as usize];
        let conn = conns[owner].get_or_insert_with(|| node_conn(&cluster, owner));
        let v: String = conn.get(k).expect("direct read from the owner");
        assert_eq!(v, format!("v-{k}"));
    }
    // Hash tags land together.
    let tagged: Vec<String> = (0..50).map(|i| format!("{{user:42}}:{i}")).collect();
    for k in &tagged {
        let _: () = c.set(k, 1).expect("SET tagged");
    }
    let owner = owners[key_slot(b"user:42") as usize];
    let mut direct = node_conn(&cluster, owner);
    let n: usize = redis::cmd("EXISTS")
        .arg(&tagged)
        .query(&mut direct)
        .expect("EXISTS");
    assert_eq!(n, tagged.len());
}

#[test]
fn multi_key_commands_split_and_merge_in_order() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let keys: Vec<String> = (0..40).map(|i| format!("mk:{i}")).collect();
    let slots: std::collections::HashSet<u16> =
        keys.iter().map(|k| key_slot(k.as_bytes())).collect();
    assert!(slots.len() > 10, "keys must spread over many slots");
    let pairs: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("val-{k}")))
        .collect();
    let _: () = c.mset(&pairs).expect("MSET");
    // Every other key missing, in a mixed order.
    let mut query: Vec<String> = Vec::new();
    for (i, k) in keys.iter().enumerate().rev() {
        query.push(k.clone());
        query.push(format!("missing:{i}"));
    }
    let got: Vec<Option<String>> = c.mget(&query).expect("MGET");
    let want: Vec<Option<String>> = query
        .iter()
        .map(|k| k.starts_with("mk:").then(|| format!("val-{k}")))
        .collect();
    assert_eq!(got, want);
    let n: usize = redis::cmd("EXISTS")
        .arg(&query)
        .query(&mut c)
        .expect("EXISTS");
    assert_eq!(n, keys.len());
    let n: usize = redis::cmd("TOUCH")
        .arg(&query)
        .query(&mut c)
        .expect("TOUCH");
    assert_eq!(n, keys.len());
    let n: usize = c.del(&query[..20]).expect("DEL");
    assert_eq!(n, 10);
    let n: usize = redis::cmd("UNLINK")
        .arg(&query)
        .query(&mut c)
        .expect("UNLINK");
    assert_eq!(n, keys.len() - 10);
    let got: Vec<Option<String>> = c.mget(&keys).expect("MGET after DEL");
    assert!(got.iter().all(Option::is_none));
    // Atomic multi-key commands across slots get Redis's CROSSSLOT error.
    let err = redis::cmd("RENAME")
        .arg("mk:1")
        .arg("mk:2")
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    assert!(
        err.to_string()
            .contains("Keys in request don't hash to the same slot"),
        "{err}"
    );
    let _: () = c.set("{t}a", "1").expect("SET");
    let _: () = redis::cmd("RENAME")
        .arg("{t}a")
        .arg("{t}b")
        .query(&mut c)
        .expect("same-slot RENAME");
    let v: String = c.get("{t}b").expect("GET");
    assert_eq!(v, "1");
}

#[test]
fn concurrent_pipelines_come_back_complete_and_in_order() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let addr = proxy.addr.clone();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://{addr}/"))
                    .and_then(|c| c.get_connection())
                    .expect("connect");
                let mut pipe = redis::pipe();
                for i in 0..1000 {
                    let k = format!("p:{t}:{i}");
                    match i % 4 {
                        0 => pipe.set(&k, i),
                        1 => pipe.incr(format!("p:{t}:{}", i - 1), 1),
                        2 => pipe.get(format!("p:{t}:{}", i - 2)),
                        _ => pipe
                            .cmd("MGET")
                            .arg(format!("p:{t}:{}", i - 3))
                            .arg("nokey")
                            .arg(&k),
                    };
                }
                let replies: Vec<redis::Value> = pipe.query(&mut c).expect("pipeline");
                assert_eq!(replies.len(), 1000);
                for (i, r) in replies.iter().enumerate() {
                    let base = (i - i % 4) as i64;
                    let want = match i % 4 {
                        0 => redis::Value::Okay,
                        1 => redis::Value::Int(base + 1),
                        2 => redis::Value::BulkString((base + 1).to_string().into_bytes()),
                        _ => redis::Value::Array(vec![
                            redis::Value::BulkString((base + 1).to_string().into_bytes()),
                            redis::Value::Nil,
                            redis::Value::Nil,
                        ]),
                    };
                    assert_eq!(r, &want, "thread {t} reply {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("pipeline thread");
    }
}

#[test]
fn slot_migration_is_invisible_to_clients() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let slot = key_slot(b"mig");
    let src = owner_of(&cluster, 0, slot);
    let dst = (src + 1) % cluster.nodes.len();
    let (src_id, dst_id) = (
        cluster.nodes[src].node_id.clone(),
        cluster.nodes[dst].node_id.clone(),
    );
    let mut c = proxy.conn();
    for i in 0..300 {
        let _: () = c.set(format!("{{mig}}:{i}"), i).expect("seed SET");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let addr = proxy.addr.clone();
    let stop2 = Arc::clone(&stop);
    let client = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://{addr}/"))
            .and_then(|c| c.get_connection())
            .expect("connect");
        let mut round = 0u64;
        let mut ops = 0u64;
        while !stop2.load(Ordering::Relaxed) || round < 3 {
            for i in 0..300 {
                let k = format!("{{mig}}:{i}");
                let v: i64 = c.get(&k).unwrap_or_else(|e| panic!("GET {k}: {e}"));
                assert_eq!(v, i as i64 + round as i64, "value of {k}");
                let _: i64 = c.incr(&k, 1).unwrap_or_else(|e| panic!("INCR {k}: {e}"));
                ops += 2;
            }
            let fresh = format!("{{mig}}:new:{round}");
            let _: () = c
                .set(&fresh, "x")
                .unwrap_or_else(|e| panic!("SET {fresh}: {e}"));
            let got: Vec<Option<String>> = c
                .mget(&[fresh.clone(), "{mig}:absent".to_string()])
                .unwrap_or_else(|e| panic!("MGET: {e}"));
            assert_eq!(got, vec![Some("x".to_string()), None]);
            round += 1;
        }
        ops
    });
    // Move the slot the way redis-cli --cluster reshard does, a few keys at a time.
    let dst_node = &cluster.nodes[dst];
    cluster
        .command(
            dst,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot.to_string(),
                "IMPORTING",
                &src_id,
            ],
        )
        .expect("IMPORTING");
    cluster
        .command(
            src,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot.to_string(),
                "MIGRATING",
                &dst_id,
            ],
        )
        .expect("MIGRATING");
    loop {
        let keys = cluster
            .command(src, &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "5"])
            .expect("GETKEYSINSLOT");
        let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let port = dst_node.port.to_string();
        let mut args = vec!["MIGRATE", &dst_node.ip, &port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        cluster.command(src, &args).expect("MIGRATE");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..cluster.nodes.len() {
        cluster
            .command(
                i,
                &["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &dst_id],
            )
            .expect("SETSLOT NODE");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let ops = client.join().expect("client thread saw an error");
    assert!(ops > 0);
    assert_eq!(owner_of(&cluster, dst, slot), dst);
    let mut direct = node_conn(&cluster, dst);
    let n: usize = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut direct)
        .expect("count");
    assert!(n >= 300);
}

#[test]
fn failover_of_a_killed_master_heals_without_restart() {
    let mut cluster = cluster(3, 2, 1);
    let proxy = Proxy::start_with(&cluster.seeds(), "request_timeout = \"1s\"", true);
    let mut c = proxy.conn();
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.is_master)
        .expect("a master");
    // Keys in every master's slots.
    let keys: Vec<String> = (0..300).map(|i| format!("fo:{i}")).collect();
    for k in &keys {
        let _: () = c.set(k, "before").expect("SET before");
    }
    cluster.kill(victim);
    let killed_at = Instant::now();
    let mut errors = 0usize;
    let mut streak = 0usize;
    let mut i = 0usize;
    while streak < 2 * keys.len() {
        assert!(
            killed_at.elapsed() < Duration::from_secs(40),
            "cluster did not heal: {errors} errors"
        );
        let k = &keys[i % keys.len()];
        i += 1;
        match c
            .set::<_, _, ()>(k, "after")
            .and_then(|_| c.get::<_, String>(k))
        {
            Ok(v) => {
                assert_eq!(v, "after");
                streak += 1;
            }
            Err(e) => {
                let text = e.to_string();
                assert!(
                    !text.contains("MOVED") && !text.contains("ASK "),
                    "client saw a redirect: {text}"
                );
                errors += 1;
                streak = 0;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    assert!(
        errors > 0,
        "killing a master should have failed some requests"
    );
    // Every key is readable afterwards through the same proxy and connection.
    for k in &keys {
        let v: String = c.get(k).expect("GET after failover");
        assert_eq!(v, "after");
    }
}

#[test]
fn a_dead_node_fails_only_its_own_requests() {
    let mut cluster = cluster_with_timeout(3, 1, 0, 60_000);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let dead = 0;
    let dead_slot_key = (0..)
        .map(|i| format!("d:{i}"))
        .find(|k| owner_of(&cluster, 1, key_slot(k.as_bytes())) == dead)
        .expect("a key on the dead node");
    let live_key = (0..)
        .map(|i| format!("l:{i}"))
        .find(|k| owner_of(&cluster, 1, key_slot(k.as_bytes())) != dead)
        .expect("a key elsewhere");
    cluster.kill(dead);
    for _ in 0..20 {
        let err = c
            .get::<_, Option<String>>(&dead_slot_key)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("slotproxy") && err.contains("backend"),
            "{err}"
        );
        let _: () = c.set(&live_key, "ok").expect("other nodes keep serving");
    }
    // A split command touching both gets the error, not a partial answer.
    let err = c
        .mget::<_, Vec<Option<String>>>(&[&dead_slot_key, &live_key])
        .unwrap_err();
    assert!(err.to_string().contains("backend"), "{err}");
}

/// The master [`with_a_stopped_master`] stops.
const STOPPED: usize = 0;

/// A 3-master cluster whose first master is stopped (SIGSTOP) behind a proxy with a 2 s
/// `request_timeout`, after a warm-up GET opened the proxy's connection to it; with a key
/// that master serves and one it does not. The caller resumes the node.
fn with_a_stopped_master() -> (LocalCluster, Proxy, String, String) {
    let mut cluster = cluster_with_timeout(3, 1, 0, 60_000);
    let proxy = Proxy::start_with(&cluster.seeds(), "request_timeout = \"2s\"", true);
    let key = |prefix: &str, on_stopped: bool| {
        (0..)
            .map(|i| format!("{prefix}:{i}"))
            .find(|k| (owner_of(&cluster, 1, key_slot(k.as_bytes())) == STOPPED) == on_stopped)
            .expect("key")
    };
    let stuck_key = key("s", true);
    let free_key = key("f", false);
    let mut warm = proxy.conn();
    let _: Option<String> = warm.get(&stuck_key).expect("warm-up GET");
    cluster.stop(STOPPED);
    (cluster, proxy, stuck_key, free_key)
}

/// Resumes the stopped master, then checks what both stopped-master tests expect: the stuck
/// client got the reply deadline's error, and `done` requests of another client went through
/// meanwhile.
fn resume_and_check(cluster: &mut LocalCluster, err: &str, done: usize) {
    cluster.cont(STOPPED);
    assert!(err.contains("no reply within 2000ms"), "{err}");
    assert!(
        done > 10,
        "only {done} requests passed while one node was stopped"
    );
}

#[test]
fn a_stopped_node_does_not_stall_other_clients() {
    let (mut cluster, proxy, stuck_key, free_key) = with_a_stopped_master();
    let addr = proxy.addr.clone();
    let stuck = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://{addr}/"))
            .and_then(|c| c.get_connection())
            .expect("connect");
        c.get::<_, Option<String>>(&stuck_key)
            .unwrap_err()
            .to_string()
    });
    // While that client waits on the stopped node, another client's requests to other nodes
    // go through, many times over.
    let mut c = proxy.conn();
    let mut done = 0;
    while !stuck.is_finished() {
        let _: () = c.set(&free_key, done).expect("SET on a live node");
        done += 1;
    }
    let err = stuck.join().expect("stuck thread");
    resume_and_check(&mut cluster, &err, done);
}

/// The reply deadline must hold while the proxy's write to a node is itself stuck: a stopped
/// node stops reading, its socket fills, and the connection's writer waits for room. The
/// requests must still fail with the timeout, and other clients keep being served.
#[test]
fn a_write_stuck_on_a_stopped_node_still_times_out() {
    let (mut cluster, proxy, stuck_key, free_key) = with_a_stopped_master();
    // 32 MiB for the stopped node: more than loopback's socket buffers on both sides hold,
    // so the proxy's write to it cannot complete.
    let big = vec![b'x'; 1 << 20];
    let addr = proxy.addr.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://{addr}/"))
            .and_then(|c| c.get_connection())
            .expect("connect");
        let mut pipe = redis::pipe();
        for _ in 0..32 {
            pipe.set(&stuck_key, &big[..]).ignore();
        }
        let r = pipe.query::<()>(&mut c).map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    let mut c = proxy.conn();
    let mut done = 0;
    // A bound on how long to wait for the proxy (thirty times `request_timeout`), not a
    // measured time: without the deadline the pipeline would wait for ever.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let outcome = loop {
        match rx.recv_timeout(std::time::Duration::from_millis(1)) {
            Ok(r) => break Some(r),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                if std::time::Instant::now() < give_up => {}
            Err(_) => break None,
        }
        let _: () = c.set(&free_key, done).expect("SET on a live node");
        done += 1;
    };
    let err = outcome
        .expect("the pipeline to the stopped node never got its replies")
        .expect_err("SETs to a stopped node succeeded");
    resume_and_check(&mut cluster, &err, done);
}

#[test]
fn proxy_starts_without_reachable_seeds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let proxy = Proxy::start_with(&[format!("127.0.0.1:{port}")], "", false);
    let mut c = proxy.conn();
    let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
    assert_eq!(pong, "PONG");
    let err = c.get::<_, Option<String>>("k").unwrap_err();
    assert_eq!(err.code(), Some("CLUSTERDOWN"));
    assert!(err.to_string().contains("Hash slot not served"), "{err}");
}

#[test]
fn connection_commands_and_info_look_like_redis() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let info: redis::InfoDict = redis::cmd("INFO").query(&mut c).expect("INFO");
    assert!(info
        .get::<String>("redis_version")
        .is_some_and(|v| v.starts_with("7.")));
    assert_eq!(info.get::<i64>("cluster_enabled"), Some(0));
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).expect("SELECT 0");
    let err = redis::cmd("SELECT").arg(1).query::<()>(&mut c).unwrap_err();
    assert!(
        err.to_string()
            .contains("SELECT is not allowed in cluster mode"),
        "{err}"
    );
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("app1")
        .query(&mut c)
        .expect("SETNAME");
    let name: String = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query(&mut c)
        .expect("GETNAME");
    assert_eq!(name, "app1");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).expect("ID");
    assert!(id > 0);
    let echo: String = redis::cmd("ECHO").arg("hi").query(&mut c).expect("ECHO");
    assert_eq!(echo, "hi");
    let count: i64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query(&mut c)
        .expect("COMMAND COUNT");
    assert!(count > 200);
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut c)
        .expect("GETKEYS");
    assert_eq!(keys, vec!["a", "b"]);
    let hello: redis::Value = redis::cmd("HELLO").arg(2).query(&mut c).expect("HELLO 2");
    assert!(format!("{hello:?}").contains("standalone"));
    let err = redis::cmd("HELLO").arg(4).query::<()>(&mut c).unwrap_err();
    assert_eq!(err.code(), Some("NOPROTO"));
    // Unknown and unsupported commands: an error, and the connection keeps working.
    let err = redis::cmd("NOSUCHCMD")
        .arg("x")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown command 'NOSUCHCMD', with args beginning with: 'x'"),
        "{err}"
    );
    for (cmd, text) in [
        (vec!["SWAPDB", "0", "1"], "does not support 'SWAPDB' yet"),
        (
            vec!["DEBUG", "SLEEP", "0"],
            "'DEBUG' is not available through slotproxy",
        ),
        (
            vec!["CLUSTER", "NODES"],
            "'CLUSTER NODES' is not available through slotproxy",
        ),
        (vec!["GET"], "wrong number of arguments for 'get' command"),
    ] {
        let err = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query::<()>(&mut c)
            .unwrap_err();
        assert!(err.to_string().contains(text), "{cmd:?}: {err}");
    }
    let pong: String = redis::cmd("PING").query(&mut c).expect("still serving");
    assert_eq!(pong, "PONG");
}

/// A single-node cluster that nobody has MET reports its own address as `:port`; the proxy
/// must reach it at the address it used to ask.
#[test]
fn single_node_cluster_with_empty_own_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let port = if port > 55000 { port - 20000 } else { port };
    let mut child = std::process::Command::new(
        std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
    )
    .args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
    ])
    .args(["--save", "", "--appendonly", "no", "--dir"])
    .arg(dir.path())
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("redis-server");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut node = loop {
        if let Ok(c) =
            redis::Client::open(format!("redis://{addr}/")).and_then(|c| c.get_connection())
        {
            break c;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query(&mut node)
        .expect("ADDSLOTSRANGE");
    let own: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut node)
        .expect("CLUSTER NODES");
    assert!(
        own.contains(&format!(" :{port}@")),
        "expected an empty own address: {own}"
    );
    // The node turns its cluster state ok shortly after it owns every slot.
    loop {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut node)
            .expect("CLUSTER INFO");
        if info.contains("cluster_state:ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "single node never reached cluster_state:ok"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let proxy = Proxy::start_with(&[addr], "", true);
    let mut c = proxy.conn();
    let _: () = c.set("solo", "yes").expect("SET through the proxy");
    let v: String = node.get("solo").expect("GET on the node");
    assert_eq!(v, "yes");
    drop(proxy);
    drop(guard);
}
