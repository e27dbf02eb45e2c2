//! Two proxies in one process, each in front of its own cluster with its own `requirepass`:
//! what a node connection needs (credentials, TLS) belongs to the proxy that opens it, so
//! neither proxy's settings leak into the other's connections.

mod common;

use common::*;
use redis::Commands;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::config::Config;
use std::time::Duration;

/// A proxy for `cluster` that authenticates to its nodes with `password`.
fn start(cluster: &LocalCluster, password: &str) -> InProcessProxy {
    InProcessProxy::start(Config {
        listen: "127.0.0.1:0".into(),
        seeds: cluster.seeds(),
        workers: 1,
        metrics_listen: String::new(),
        backend_password: password.into(),
        ..Config::default()
    })
}

/// Makes every node of `cluster` demand `password` (`requirepass`).
fn require_password(cluster: &LocalCluster, password: &str) {
    for i in 0..cluster.nodes.len() {
        let mut n = node_conn(cluster, i);
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(password)
            .query(&mut n)
            .expect("CONFIG SET requirepass");
    }
}

/// Refused `AUTH`s over every node of `cluster` (the `auth` entries of `ACL LOG`), read with
/// its `password`: for the failure message, so a proxy that sent the wrong password says so.
fn refused_auths(cluster: &LocalCluster, password: &str) -> String {
    let mut total = 0i64;
    for i in 0..cluster.nodes.len() {
        let mut n = node_conn(cluster, i);
        let log: redis::RedisResult<Vec<Vec<redis::Value>>> = redis::cmd("AUTH")
            .arg(password)
            .query::<()>(&mut n)
            .and_then(|()| redis::cmd("ACL").arg("LOG").query(&mut n));
        let log = match log {
            Ok(l) => l,
            Err(e) => return format!("node {i}: ACL LOG: {e}"),
        };
        for entry in log {
            let field = |name: &str| {
                entry
                    .chunks(2)
                    .find(|kv| redis::from_redis_value::<String>(&kv[0]).is_ok_and(|k| k == name))
                    .and_then(|kv| kv.get(1).cloned())
            };
            let is_auth = field("reason")
                .and_then(|v| redis::from_redis_value::<String>(&v).ok())
                .is_some_and(|r| r == "auth");
            if is_auth {
                total += field("count")
                    .and_then(|v| redis::from_redis_value::<i64>(&v).ok())
                    .unwrap_or(1);
            }
        }
    }
    format!("{total} AUTH(s) refused by its nodes")
}

#[test]
fn two_proxies_in_one_process_each_authenticate_with_their_own_password() {
    let cluster_a = cluster(1, 3, 0);
    let cluster_b = cluster(1, 3, 0);
    require_password(&cluster_a, "pa");
    require_password(&cluster_b, "pb");
    let a = start(&cluster_a, "pa");
    let b = start(&cluster_b, "pb");

    let mut ca = a.conn();
    let mut cb = b.conn();
    // Liveness bound only: each proxy first has to learn its cluster's slot map, through
    // connections that authenticate with its own password.
    for (name, c, cluster, password) in [
        ("proxy A", &mut ca, &cluster_a, "pa"),
        ("proxy B", &mut cb, &cluster_b, "pb"),
    ] {
        if let Err(e) = retry_until(Duration::from_secs(20), || {
            if serves_all_slots(c) {
                Ok(())
            } else {
                Err(proxy_lines(c, &["SLOTS"]).map_or_else(|e| e.to_string(), |l| l.join("; ")))
            }
        }) {
            panic!(
                "{name} never served every slot: {e}; {}",
                refused_auths(cluster, password)
            );
        }
    }

    // Same keys through both: each proxy writes and reads its own cluster.
    for i in 0..20 {
        let _: () = ca.set(format!("k{i}"), format!("a{i}")).expect("SET via A");
        let _: () = cb.set(format!("k{i}"), format!("b{i}")).expect("SET via B");
    }
    for i in 0..20 {
        let va: String = ca.get(format!("k{i}")).expect("GET via A");
        let vb: String = cb.get(format!("k{i}")).expect("GET via B");
        assert_eq!((va, vb), (format!("a{i}"), format!("b{i}")));
    }
    // Dedicated connections (a blocking command) authenticate with the proxy's own password
    // too.
    let _: i64 = cb.rpush("q", "x").expect("RPUSH via B");
    let popped: (String, String) = redis::cmd("BLPOP")
        .arg("q")
        .arg(1)
        .query(&mut cb)
        .expect("BLPOP via B");
    assert_eq!(popped.1, "x");
}
