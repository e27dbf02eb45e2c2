//! ACL through the proxy, against real clusters: WHOAMI answered by the proxy, the reads asked
//! of one master, the changes made on every node (masters and replicas) with the merged reply,
//! and the changes refused because they would lock the proxy out of its nodes.

mod common;

use common::*;
use redis::Value;

fn acl(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    redis::cmd("ACL").arg(args).query(c)
}

fn err(r: redis::RedisResult<Value>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Whether node `i` has ACL user `name`.
fn node_has_user(
    cluster: &slotproxy::admin::localcluster::LocalCluster,
    i: usize,
    name: &str,
) -> bool {
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query(&mut node_conn(cluster, i))
        .expect("node ACL USERS");
    users.iter().any(|u| u == name)
}

#[test]
fn acl_reads_come_from_a_master_and_changes_reach_every_node() {
    let cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let me: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query(&mut c)
        .expect("WHOAMI");
    assert_eq!(me, "default");

    // SETUSER on every node, masters and replicas.
    let ok: String = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">apppw", "~app:*", "+@read"])
        .query(&mut c)
        .expect("ACL SETUSER");
    assert_eq!(ok, "OK");
    assert_eq!(cluster.nodes.len(), 6);
    for i in 0..cluster.nodes.len() {
        assert!(node_has_user(&cluster, i, "app"), "node {i}");
    }
    // Reads: one master's answer, in Redis's shapes.
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query(&mut c).expect("USERS");
    assert!(users.contains(&"app".to_string()), "{users:?}");
    let list: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut c).expect("LIST");
    assert!(
        list.iter().any(|l| l.starts_with("user app on")),
        "{list:?}"
    );
    let Value::Array(user) = acl(&mut c, &["GETUSER", "app"]).expect("GETUSER") else {
        panic!("GETUSER is not an array")
    };
    assert!(
        user.contains(&Value::BulkString(b"flags".to_vec())),
        "{user:?}"
    );
    let cats: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut c).expect("CAT");
    assert!(cats.contains(&"keyspace".to_string()), "{cats:?}");
    let ok: String = redis::cmd("ACL")
        .arg(&["DRYRUN", "app", "GET", "app:1"])
        .query(&mut c)
        .expect("DRYRUN");
    assert_eq!(ok, "OK");
    let denied: String = redis::cmd("ACL")
        .arg(&["DRYRUN", "app", "SET", "app:1", "x"])
        .query(&mut c)
        .expect("DRYRUN");
    assert!(denied.contains("no permissions"), "{denied}");
    let _: Vec<Value> = redis::cmd("ACL").arg("LOG").query(&mut c).expect("LOG");
    let ok: String = redis::cmd("ACL")
        .arg(&["LOG", "RESET"])
        .query(&mut c)
        .expect("LOG RESET");
    assert_eq!(ok, "OK");
    let pass: String = redis::cmd("ACL")
        .arg("GENPASS")
        .query(&mut c)
        .expect("GENPASS");
    assert_eq!(pass.len(), 64);

    // A rule every node refuses: Redis's own error, as from one server.
    let e = err(acl(&mut c, &["SETUSER", "app", "bogus-rule"]));
    assert!(e.contains("Syntax error"), "{e}");
    assert!(!e.contains("failed on"), "{e}");
    // Without an ACL file, SAVE and LOAD fail alike on every node.
    let e = err(acl(&mut c, &["SAVE"]));
    assert!(e.contains("ACL file"), "{e}");
    let e = err(acl(&mut c, &["LOAD"]));
    assert!(e.contains("ACL file"), "{e}");

    // DELUSER on every node.
    let n: i64 = redis::cmd("ACL")
        .arg(&["DELUSER", "app"])
        .query(&mut c)
        .expect("DELUSER");
    assert_eq!(n, 1);
    for i in 0..cluster.nodes.len() {
        assert!(!node_has_user(&cluster, i, "app"), "node {i}");
    }

    // The proxy logs in as `default` (no backend_user): its password and on/off state are
    // left alone, anything else about it passes.
    for rules in [
        &["off"][..],
        &[">newpw"],
        &["resetpass"],
        &["nopass"],
        &["reset"],
    ] {
        let mut args = vec!["SETUSER", "default"];
        args.extend_from_slice(rules);
        let e = err(acl(&mut c, &args));
        assert!(e.contains("refused ACL SETUSER default"), "{e}");
        assert!(!e.contains("newpw"), "{e}");
    }
    let ok: String = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "on", "~*", "+@all"])
        .query(&mut c)
        .expect("SETUSER default, other rules");
    assert_eq!(ok, "OK");
    // Still serving, on new connections too.
    let mut fresh = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut fresh)
        .expect("SET");
    let mut direct = node_conn(&cluster, 0);
    let _: String = redis::cmd("PING")
        .query(&mut direct)
        .expect("the default user still logs in");

    // One node down: the change is made on the others and the error names the one.
    let replica = (0..cluster.nodes.len())
        .find(|&i| !cluster.nodes[i].is_master)
        .expect("a replica");
    let down = cluster.nodes[replica].addr();
    let mut cluster = cluster;
    cluster.kill(replica);
    let e = err(acl(&mut c, &["SETUSER", "late", "on"]));
    assert!(e.contains("failed on 1 of 6 nodes"), "{e}");
    assert!(e.contains(&down), "{down} missing from {e}");
    for i in (0..cluster.nodes.len()).filter(|&i| i != replica) {
        assert!(node_has_user(&cluster, i, "late"), "node {i}");
    }
}

/// A 3-master cluster whose nodes have user `proxy` (password `pw`), and a proxy that logs in
/// as it, with `extra` settings.
fn with_backend_user(extra: &str) -> (slotproxy::admin::localcluster::LocalCluster, Proxy) {
    let cluster = cluster(3, 1, 0);
    for i in 0..cluster.nodes.len() {
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "proxy", "on", ">pw", "~*", "&*", "+@all"])
            .query(&mut node_conn(&cluster, i))
            .expect("node ACL SETUSER");
    }
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        &format!("backend_user = \"proxy\"\nbackend_password = \"pw\"\n{extra}"),
        true,
    );
    (cluster, proxy)
}

#[test]
fn the_backend_user_cannot_be_changed_or_deleted_through_the_proxy() {
    let (cluster, proxy) = with_backend_user("");
    let mut c = proxy.conn();
    for args in [
        &["SETUSER", "proxy", "off"][..],
        &["SETUSER", "proxy", "-@all"],
        &["DELUSER", "someone", "proxy"],
    ] {
        let e = err(acl(&mut c, args));
        assert!(e.contains("backend_user"), "{args:?}: {e}");
    }
    for i in 0..cluster.nodes.len() {
        let flags: Vec<Value> = redis::cmd("ACL")
            .arg(&["GETUSER", "proxy"])
            .query(&mut node_conn(&cluster, i))
            .expect("node ACL GETUSER");
        assert!(
            format!("{flags:?}").contains("on"),
            "node {i}: the user is untouched"
        );
    }
    // Other users, `default` included, may change.
    let ok: String = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "resetpass", ">x"])
        .query(&mut c)
        .expect("SETUSER default");
    assert_eq!(ok, "OK");
    let ok: String = redis::cmd("ACL")
        .arg(&["SETUSER", "other", "on"])
        .query(&mut c)
        .expect("SETUSER other");
    assert_eq!(ok, "OK");
    // WHOAMI is the client's own user of the proxy, not the proxy's login on the nodes.
    let me: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query(&mut c)
        .expect("WHOAMI");
    assert_eq!(me, "default");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut proxy.conn())
        .expect("SET");
}

const USERS: &str = r#"
[[users]]
name = "boss"
password = "b"
level = "admin"

[[users]]
name = "app"
password = "a"
level = "write"
"#;

#[test]
fn acl_whoami_names_the_proxy_user_and_admin_rules_apply() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), USERS, false);
    let conn_as = |user: &str, pass: &str| {
        redis::Client::open(format!("redis://{user}:{pass}@{}/", proxy.addr))
            .and_then(|c| c.get_connection())
            .expect("AUTH user pass")
    };
    let mut boss = eventually_ok(
        "the proxy to serve every slot",
        std::time::Duration::from_secs(20),
        || {
            let mut c = conn_as("boss", "b");
            if serves_all_slots(&mut c) {
                Ok(c)
            } else {
                Err("not yet")
            }
        },
    );
    let me: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query(&mut boss)
        .expect("WHOAMI");
    assert_eq!(me, "boss");
    let mut app = conn_as("app", "a");
    let me: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query(&mut app)
        .expect("WHOAMI");
    assert_eq!(me, "app");
    // Redis's admin commands need the proxy's admin level.
    for args in [&["SETUSER", "x", "on"][..], &["LIST"], &["DELUSER", "x"]] {
        let e = err(acl(&mut app, args));
        assert!(e.contains("NOPERM"), "{args:?}: {e}");
    }
    let _: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut app).expect("CAT");
    let ok: String = redis::cmd("ACL")
        .arg(&["SETUSER", "x", "on"])
        .query(&mut boss)
        .expect("SETUSER by an admin");
    assert_eq!(ok, "OK");
    // Not logged in: NOAUTH, as from Redis.
    let mut anon = redis::Client::open(format!("redis://{}/", proxy.addr))
        .and_then(|c| c.get_connection())
        .expect("connect");
    let e = err(acl(&mut anon, &["WHOAMI"]));
    assert!(
        e.contains("NOAUTH") || e.contains("Authentication required"),
        "{e}"
    );
}

/// `allow_dangerous_config_set` also lets ACL changes of the proxy's own login through (the
/// operator says they know what they are doing).
#[test]
fn the_dangerous_settings_switch_lets_backend_user_changes_through() {
    let (cluster, proxy) = with_backend_user("allow_dangerous_config_set = true");
    let mut c = proxy.conn();
    // A harmless change the guard would refuse: a second password for the proxy's user.
    let ok: String = redis::cmd("ACL")
        .arg(&["SETUSER", "proxy", ">second"])
        .query(&mut c)
        .expect("SETUSER proxy");
    assert_eq!(ok, "OK");
    for i in 0..cluster.nodes.len() {
        let mut n = node_conn(&cluster, i);
        let ok: String = redis::cmd("AUTH")
            .arg("proxy")
            .arg("second")
            .query(&mut n)
            .expect("the new password works on every node");
        assert_eq!(ok, "OK", "node {i}");
    }
}
