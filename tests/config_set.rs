//! CONFIG SET, CONFIG GET and CONFIG RESETSTAT where they concern the proxy too, against real
//! clusters: the slow log's settings change the proxy's own slow log (and every node's), CONFIG
//! GET shows the proxy's values for them, SIGHUP keeps them unless the file's line changed,
//! RESETSTAT restarts INFO's counters but not Prometheus', and the settings that would cut the
//! proxy off the nodes are refused before any node sees them.

mod common;

use common::*;
use redis::{Commands, Value};
use std::time::Duration;

fn cmd(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut k = redis::cmd(args[0]);
    for a in &args[1..] {
        k.arg(*a);
    }
    k.query(c)
}

fn err_text(r: redis::RedisResult<Value>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// `CONFIG GET name` answered by node `i` directly.
fn node_config(
    cluster: &slotproxy::admin::localcluster::LocalCluster,
    i: usize,
    name: &str,
) -> String {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(&mut node_conn(cluster, i))
        .expect("node CONFIG GET");
    v.get(1).cloned().unwrap_or_default()
}

/// `CONFIG GET pattern` through the proxy, as name -> value pairs.
fn config_get(c: &mut redis::Connection, pattern: &str) -> Vec<(String, String)> {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(pattern)
        .query(c)
        .expect("CONFIG GET");
    v.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
}

/// The arguments of every entry in the proxy's SLOWLOG, newest first.
fn slowlog_args(c: &mut redis::Connection) -> Vec<Vec<String>> {
    let v: Value = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg("1000")
        .query(c)
        .expect("SLOWLOG GET");
    let Value::Array(entries) = v else {
        panic!("SLOWLOG GET: {v:?}")
    };
    entries
        .into_iter()
        .map(|e| match e {
            Value::Array(fields) => match fields.get(3) {
                Some(Value::Array(args)) => args
                    .iter()
                    .map(|a| match a {
                        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
                other => panic!("entry arguments: {other:?}"),
            },
            other => panic!("entry: {other:?}"),
        })
        .collect()
}

fn logged(c: &mut redis::Connection, key: &str) -> bool {
    slowlog_args(c)
        .iter()
        .any(|a| a.len() >= 2 && a[0].eq_ignore_ascii_case("set") && a[1] == key)
}

#[test]
fn config_set_of_the_slow_log_settings_changes_the_proxy_s_slow_log_too() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    // A second client, served by the other worker (clients go to the least loaded one).
    let mut d = proxy.conn();

    // The default threshold (10 ms): a quick SET is not logged.
    let _: () = c.set("slow:before", 1).unwrap();
    assert!(!logged(&mut c, "slow:before"));

    // Threshold 0: every node and the proxy log every command, on every worker.
    assert_eq!(
        cmd(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]).unwrap(),
        Value::Okay
    );
    for i in 0..cluster.nodes.len() {
        assert_eq!(
            node_config(&cluster, i, "slowlog-log-slower-than"),
            "0",
            "node {i}"
        );
    }
    let _: () = c.set("slow:c", 1).unwrap();
    let _: () = d.set("slow:d", 1).unwrap();
    assert!(logged(&mut c, "slow:c"), "{:?}", slowlog_args(&mut c));
    assert!(logged(&mut c, "slow:d"), "{:?}", slowlog_args(&mut c));
    assert_eq!(proxy_config_get(&mut c, "slowlog_threshold"), "0s");
    assert_eq!(
        config_get(&mut d, "slowlog-log-slower-than"),
        vec![("slowlog-log-slower-than".into(), "0".into())]
    );

    // The length: the proxy keeps at most that many; CONFIG GET with a pattern shows both.
    assert_eq!(
        cmd(&mut c, &["CONFIG", "SET", "SLOWLOG-MAX-LEN", "2"]).unwrap(),
        Value::Okay
    );
    assert_eq!(proxy_config_get(&mut c, "slowlog_max_len"), "2");
    assert_eq!(node_config(&cluster, 0, "slowlog-max-len"), "2");
    for i in 0..5 {
        let _: () = c.set(format!("slow:n{i}"), i).unwrap();
    }
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert!(len <= 2, "{len}");
    let mut both = config_get(&mut c, "slowlog*");
    both.sort();
    assert_eq!(
        both,
        vec![
            ("slowlog-log-slower-than".into(), "0".into()),
            ("slowlog-max-len".into(), "2".into())
        ]
    );
    // A RESP3 client gets a map, as from Redis.
    let mut r3 = redis::Client::open(format!("redis://{}/?protocol=resp3", proxy.addr))
        .and_then(|cl| cl.get_connection())
        .expect("RESP3 connection");
    assert_eq!(
        cmd(&mut r3, &["CONFIG", "GET", "slowlog-max-len"]).unwrap(),
        Value::Map(vec![(
            Value::BulkString(b"slowlog-max-len".to_vec()),
            Value::BulkString(b"2".to_vec())
        )])
    );

    // -1 turns the proxy's slow log off, as Redis's.
    assert_eq!(
        cmd(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]).unwrap(),
        Value::Okay
    );
    assert_eq!(proxy_config_get(&mut c, "slowlog_threshold"), "off");
    assert_eq!(
        config_get(&mut c, "slowlog-log-slower-than"),
        vec![("slowlog-log-slower-than".into(), "-1".into())]
    );
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: () = c.set("slow:off", 1).unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert_eq!(len, 0);

    // Values refused: Redis's texts, and nothing changes anywhere.
    let e = err_text(cmd(&mut c, &["CONFIG", "SET", "slowlog-max-len", "-5"]));
    assert!(e.contains("argument must be between 0 and"), "{e}");
    let e = err_text(cmd(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "slowlog-log-slower-than",
            "999999999999999",
        ],
    ));
    assert!(e.contains("at most 604800000000 microseconds"), "{e}");
    assert_eq!(node_config(&cluster, 0, "slowlog-log-slower-than"), "-1");
    // The nodes refuse the other pair: the proxy keeps its value too.
    let e = err_text(cmd(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "slowlog-max-len",
            "9",
            "maxmemory",
            "bogus",
        ],
    ));
    assert!(e.contains("maxmemory"), "{e}");
    assert_eq!(proxy_config_get(&mut c, "slowlog_max_len"), "2");
    assert_eq!(node_config(&cluster, 0, "slowlog-max-len"), "2");
}

#[test]
fn sighup_keeps_a_config_set_unless_the_file_changes_that_setting() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    assert_eq!(
        cmd(&mut c, &["CONFIG", "SET", "slowlog-max-len", "5"]).unwrap(),
        Value::Okay
    );
    assert_eq!(proxy_config_get(&mut c, "slowlog_max_len"), "5");

    // The file changes another setting: the value CONFIG SET gave stays, and the log says so.
    let mut file = std::fs::read_to_string(&proxy.config_path).unwrap();
    file.push_str("request_timeout = \"4s\"\n");
    std::fs::write(&proxy.config_path, &file).unwrap();
    proxy.signal("HUP");
    eventually(
        "SIGHUP to apply request_timeout",
        Duration::from_secs(20),
        || proxy_config_get(&mut c, "request_timeout") == "4s",
    );
    assert_eq!(proxy_config_get(&mut c, "slowlog_max_len"), "5");
    assert_eq!(config_get(&mut c, "slowlog-max-len")[0].1, "5");
    eventually(
        "the log to name the kept run-time value",
        Duration::from_secs(20),
        || proxy.log().contains("keep the values set at run time"),
    );

    // The file changes that setting: the file's new value wins, and the log says it replaced
    // the run-time one.
    file.push_str("slowlog_max_len = 6\n");
    std::fs::write(&proxy.config_path, &file).unwrap();
    proxy.signal("HUP");
    eventually(
        "SIGHUP to apply slowlog_max_len",
        Duration::from_secs(20),
        || proxy_config_get(&mut c, "slowlog_max_len") == "6",
    );
    assert_eq!(config_get(&mut c, "slowlog-max-len")[0].1, "6");
    eventually(
        "the log to say a run-time value was replaced",
        Duration::from_secs(20),
        || proxy.log().contains("replace the values set at run time"),
    );
}

/// A field of `INFO stats` through the proxy.
fn stat(c: &mut redis::Connection, name: &str) -> u64 {
    let text: String = redis::cmd("INFO")
        .arg("stats")
        .query(c)
        .expect("INFO stats");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from {text}"))
}

#[test]
fn config_resetstat_restarts_info_counters_but_not_prometheus() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let _: () = c.set("rs:k", "v").unwrap();
    for _ in 0..20 {
        let _: String = c.get("rs:k").unwrap();
    }
    assert!(stat(&mut c, "total_commands_processed") >= 21);
    assert!(stat(&mut c, "total_connections_received") >= 1);
    assert!(stat(&mut c, "keyspace_hits") >= 20);
    let series = "slotproxy_commands_total{command=\"get\"}";
    let text = proxy.scrape_until("20 GETs", Duration::from_secs(20), |t| {
        metric(t, series) >= 20.0
    });
    let gets = metric(&text, series);

    assert_eq!(cmd(&mut c, &["CONFIG", "RESETSTAT"]).unwrap(), Value::Okay);
    // The figures Redis shows: 1 right after RESETSTAT, then one more per command.
    assert_eq!(stat(&mut c, "total_commands_processed"), 1);
    assert_eq!(stat(&mut c, "total_commands_processed"), 2);
    assert_eq!(stat(&mut c, "total_connections_received"), 0);
    assert_eq!(stat(&mut c, "keyspace_hits"), 0);
    assert!(stat(&mut c, "total_net_input_bytes") < 1000);
    let _new = proxy.conn();
    assert_eq!(stat(&mut c, "total_connections_received"), 1);

    // Prometheus counters stay monotonic: the GETs are still counted.
    let _: String = c.get("rs:k").unwrap();
    let text = proxy.scrape_until("one more GET", Duration::from_secs(20), |t| {
        metric(t, series) > gets
    });
    assert_eq!(metric(&text, series), gets + 1.0);
}

#[test]
fn config_set_that_would_cut_the_proxy_off_is_refused_before_any_node_sees_it() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let timeout = node_config(&cluster, 0, "cluster-node-timeout");
    let policy = node_config(&cluster, 0, "maxmemory-policy");
    let protected = node_config(&cluster, 0, "protected-mode");
    let cases: &[(&[&str], &str)] = &[
        (&["requirepass", "secret"], "requirepass"),
        (
            &["maxmemory-policy", "allkeys-lru", "requirepass", "x"],
            "requirepass",
        ),
        (&["masterauth", "x"], "masterauth"),
        (&["port", "1"], "port"),
        (&["BIND", "10.9.9.9"], "bind"),
        (&["cluster-node-timeout", "1"], "cluster-node-timeout"),
        (&["tls-port", "1"], "tls-port"),
        (&["dir", "/"], "dir"),
        (&["protected-mode", "no"], "protected-mode"),
    ];
    for (pairs, name) in cases {
        let mut args = vec!["CONFIG", "SET"];
        args.extend_from_slice(pairs);
        let e = err_text(cmd(&mut c, &args));
        assert!(
            e.contains(&format!("slotproxy refuses CONFIG SET {name}:"))
                && e.contains("allow_dangerous_config_set"),
            "{pairs:?}: {e}"
        );
    }
    let e = err_text(cmd(&mut c, &["CONFIG", "SET", "requirepass", "x"]));
    assert!(e.contains("backend_password"), "{e}");

    // No node got any of it, the harmless pair included.
    for i in 0..cluster.nodes.len() {
        assert_eq!(node_config(&cluster, i, "requirepass"), "", "node {i}");
        assert_eq!(
            node_config(&cluster, i, "maxmemory-policy"),
            policy,
            "node {i}"
        );
        assert_eq!(
            node_config(&cluster, i, "cluster-node-timeout"),
            timeout,
            "node {i}"
        );
        assert_eq!(
            node_config(&cluster, i, "protected-mode"),
            protected,
            "node {i}"
        );
    }
    // New connections through the proxy still work.
    let mut fresh = proxy.conn();
    let _: () = fresh.set("after:refusal", "ok").unwrap();
    let v: String = fresh.get("after:refusal").unwrap();
    assert_eq!(v, "ok");
    // Ordinary settings still go through.
    assert_eq!(
        cmd(&mut c, &["CONFIG", "SET", "maxmemory-policy", &policy]).unwrap(),
        Value::Okay
    );
}

#[test]
fn allow_dangerous_config_set_lets_such_settings_through() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), "allow_dangerous_config_set = true", true);
    let mut c = proxy.conn();
    let timeout: u64 = node_config(&cluster, 0, "cluster-node-timeout")
        .parse()
        .expect("a number");
    let longer = (timeout + 1000).to_string();
    assert_eq!(
        cmd(&mut c, &["CONFIG", "SET", "cluster-node-timeout", &longer]).unwrap(),
        Value::Okay
    );
    for i in 0..cluster.nodes.len() {
        assert_eq!(
            node_config(&cluster, i, "cluster-node-timeout"),
            longer,
            "node {i}"
        );
    }
    // The setting is live: turned off, the refusal is back.
    proxy_cmd(
        &mut c,
        &["CONFIG", "SET", "allow_dangerous_config_set", "no"],
    )
    .unwrap();
    let e = err_text(cmd(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "cluster-node-timeout",
            &timeout.to_string(),
        ],
    ));
    assert!(
        e.contains("slotproxy refuses CONFIG SET cluster-node-timeout"),
        "{e}"
    );
    assert_eq!(node_config(&cluster, 0, "cluster-node-timeout"), longer);
}
