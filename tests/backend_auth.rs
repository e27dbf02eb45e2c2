//! Backend credentials: nodes that require an ACL user, with a proxy that has the right one,
//! a limited one, and none.

mod common;

use common::*;
use redis::{Commands, Value};
use std::io::Write;

/// Creates ACL user `proxy` (everything but FLUSHALL) on every node and disables `default`.
fn require_acl(cluster: &slotproxy::admin::localcluster::LocalCluster) {
    for i in 0..cluster.nodes.len() {
        let mut n = node_conn(cluster, i);
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("proxy")
            .arg("on")
            .arg(">pw")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-flushall")
            .query(&mut n)
            .unwrap();
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg("off")
            .query(&mut n)
            .unwrap();
    }
}

#[test]
fn the_proxy_authenticates_everywhere_and_a_refusal_is_a_clear_error() {
    let cluster = cluster(3, 1, 0);
    require_acl(&cluster);
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "backend_user = \"proxy\"\nbackend_password = \"pw\"",
        true,
    );
    let mut c = proxy.conn();
    for i in 0..50 {
        let _: () = c.set(format!("k{i}"), i).unwrap();
    }
    let v: Vec<i64> = redis::cmd("MGET")
        .arg("k1")
        .arg("k2")
        .arg("k3")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, vec![1, 2, 3]);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 50);
    // Dedicated connections authenticate too (blocking, transactions).
    let _: i64 = c.rpush("q", "x").unwrap();
    let b: (String, String) = redis::cmd("BLPOP").arg("q").arg(1).query(&mut c).unwrap();
    assert_eq!(b.1, "x");
    let (x,): (i64,) = redis::pipe()
        .atomic()
        .incr("{t}n", 1)
        .query(&mut c)
        .unwrap();
    assert_eq!(x, 1);
    // The ACL user's limits are the node's: FLUSHALL is refused with the node's NOPERM.
    let e = redis::cmd("FLUSHALL").query::<Value>(&mut c).unwrap_err();
    assert!(
        e.to_string().contains("NOPERM") || e.to_string().contains("permission"),
        "{e}"
    );
    // The password is not shown.
    let p: Vec<String> = proxy_query(&mut c, &["CONFIG", "GET", "backend_password"]).unwrap();
    assert_eq!(p[1], "(set)");
    drop(proxy);

    // Wrong password: the proxy says so instead of passing NOAUTH on.
    let wrong = Proxy::start_with(
        &cluster.seeds(),
        "backend_user = \"proxy\"\nbackend_password = \"nope\"",
        false,
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        wrong.log().contains("refused the proxy's credentials"),
        "{}",
        wrong.log()
    );
    drop(wrong);

    // No credentials at all: clients get a configuration error naming the settings.
    let none = Proxy::start_with(&cluster.seeds(), "", false);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut raw = none.raw();
    raw.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    let line = read_line(&raw);
    assert!(line.starts_with("-"), "{line}");
    assert!(
        line.contains("backend_user") || line.contains("CLUSTERDOWN"),
        "{line}"
    );
    // The refresher cannot read the topology and says why.
    assert!(none.log().contains("NOAUTH"), "{}", none.log());
}

/// A connection to node `index` as the ACL user `proxy` (password `pw`).
fn as_proxy(
    cluster: &slotproxy::admin::localcluster::LocalCluster,
    index: usize,
) -> redis::Connection {
    let n = &cluster.nodes[index];
    redis::Client::open(format!("redis://proxy:pw@{}:{}/", n.ip, n.port))
        .and_then(|c| c.get_connection())
        .expect("connecting to a node as proxy")
}

#[test]
fn dedicated_connections_report_refused_credentials_and_refused_subscriptions() {
    let cluster = cluster(3, 1, 0);
    require_acl(&cluster);
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "backend_user = \"proxy\"\nbackend_password = \"pw\"",
        true,
    );
    let mut c = proxy.conn();
    for i in 0..50 {
        let _: () = c.set(format!("k{i}"), i).unwrap();
    }
    // The nodes take away the proxy's channel permissions: SUBSCRIBE gets the node's
    // NOPERM, not a confirmation, and the client is not left in subscribed mode.
    for i in 0..cluster.nodes.len() {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("proxy")
            .arg("resetchannels")
            .query(&mut as_proxy(&cluster, i))
            .unwrap();
    }
    let mut raw = proxy.raw();
    raw.write_all(b"SUBSCRIBE news sport\r\n").unwrap();
    let line = read_line(&raw);
    assert!(line.starts_with("-NOPERM"), "{line}");
    raw.write_all(b"GET k7\r\n").unwrap();
    let (got, _) = raw_exchange(&mut raw, b"", std::time::Duration::from_millis(500));
    assert_eq!(got, "$1\r\n7\r\n");

    // The nodes change the proxy's password: the shared connections stay logged in, a new
    // dedicated connection's AUTH is refused, and the client hears so (not a bare NOAUTH).
    for i in 0..cluster.nodes.len() {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("proxy")
            .arg("resetpass")
            .arg(">changed")
            .query(&mut as_proxy(&cluster, i))
            .unwrap();
    }
    let e = redis::cmd("BLPOP")
        .arg("q")
        .arg(1)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("refused the proxy's credentials"),
        "{e}"
    );
    let e = redis::pipe()
        .atomic()
        .incr("{t}n", 1)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("refused the proxy's credentials"),
        "{e}"
    );
    let v: i64 = c.get("k3").unwrap();
    assert_eq!(v, 3);
}
