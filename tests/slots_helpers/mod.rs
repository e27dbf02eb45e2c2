//! What the slot-engine tests share: nodes reached by address, empty masters joined with
//! `CLUSTER MEET`, slot counts and open-slot markers read from the nodes, reference data
//! written and read back through the proxy, and hash tags for chosen slots.

#![allow(dead_code)]

use crate::common::*;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::cluster::parse_cluster_nodes;
use slotproxy::cluster::slots::key_slot;
use std::collections::BTreeMap;
use std::time::Duration;

pub const LIVENESS: Duration = Duration::from_secs(60);

pub fn redis_server() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

pub fn node(addr: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .and_then(|c| c.get_connection())
        .expect("connecting to a node")
}

pub fn nodes_text(addr: &str) -> String {
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut node(addr))
        .expect("CLUSTER NODES")
}

/// Empty cluster-enabled masters on the new hosts `ips`, joined with `CLUSTER MEET` and nothing
/// else; returns once every node knows every other (no handshake) and all report ok.
pub fn join_empty(cluster: &LocalCluster, ips: &[&str]) -> LocalCluster {
    let hosts: Vec<(String, usize)> = ips.iter().map(|ip| (ip.to_string(), 1)).collect();
    let extra =
        LocalCluster::start_empty(&hosts, 1000, &redis_server()).expect("starting empty nodes");
    for n in &extra.nodes {
        cluster
            .command(0, &["CLUSTER", "MEET", &n.ip, &n.port.to_string()])
            .expect("CLUSTER MEET");
    }
    let all = all_addrs(cluster, &extra);
    eventually("the new masters to join", LIVENESS, || {
        all.iter().all(|a| {
            let text = nodes_text(a);
            let lines = parse_cluster_nodes(&text, "").unwrap_or_default();
            lines.len() == all.len()
                && lines
                    .iter()
                    .all(|l| !l.has("handshake") && !l.has("noaddr"))
                && redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(&mut node(a))
                    .is_ok_and(|t| t.contains("cluster_state:ok"))
        })
    });
    extra
}

pub fn all_addrs(cluster: &LocalCluster, extra: &LocalCluster) -> Vec<String> {
    cluster.seeds().into_iter().chain(extra.seeds()).collect()
}

/// Slots per master address, as node `addr` sees them (masters without slots included).
pub fn slot_counts(addr: &str) -> BTreeMap<String, usize> {
    parse_cluster_nodes(&nodes_text(addr), "")
        .expect("CLUSTER NODES")
        .into_iter()
        .filter(|l| l.is_master())
        .map(|l| {
            let n = l.slots.iter().map(|&(a, b)| (b - a) as usize + 1).sum();
            (l.addr(), n)
        })
        .collect()
}

/// The `[...]` open-slot markers on every node's own line.
pub fn open_slots(addrs: &[String]) -> Vec<String> {
    addrs
        .iter()
        .flat_map(|a| {
            let text = nodes_text(a);
            text.lines()
                .filter(|l| l.contains("myself"))
                .flat_map(|l| {
                    l.split_whitespace()
                        .filter(|w| w.starts_with('['))
                        .map(|w| format!("{a} {w}"))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn check_ok(c: &mut redis::Connection) {
    eventually_ok("CHECK to say OK", LIVENESS, || {
        let r = proxy_lines(c, &["CHECK"]).map_err(|e| e.to_string())?;
        if r.first().map(String::as_str) == Some("OK") {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
}

/// Key `i`'s value: mostly small, some 10 KB, a few 100 KB.
pub fn value(prefix: &str, i: usize) -> Vec<u8> {
    let size = match i % 50 {
        0 => 100_000,
        1..=5 => 10_000,
        _ => 100 + (i % 7) * 100,
    };
    format!("{prefix}{i}:").bytes().cycle().take(size).collect()
}

/// Writes `n` keys through the proxy; the reference map.
pub fn preload(c: &mut redis::Connection, n: usize, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let reference: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("{prefix}:{i}"), value(prefix, i)))
        .collect();
    for chunk in reference.chunks(100) {
        let mut p = redis::pipe();
        for (k, v) in chunk {
            p.cmd("SET").arg(k).arg(v.as_slice()).ignore();
        }
        let () = p.query(c).expect("preloading");
    }
    reference
}

/// Reads every key back through the proxy and compares.
pub fn verify(c: &mut redis::Connection, reference: &[(String, Vec<u8>)]) {
    for chunk in reference.chunks(100) {
        let mut p = redis::pipe();
        for (k, _) in chunk {
            p.cmd("GET").arg(k);
        }
        let got: Vec<Option<Vec<u8>>> = p.query(c).expect("reading back");
        for ((k, v), g) in chunk.iter().zip(got) {
            assert!(
                g.as_deref() == Some(v.as_slice()),
                "key {k} lost or changed"
            );
        }
    }
}

/// Keys and their expected values.
pub type Reference = Vec<(String, Vec<u8>)>;

pub fn spread_ok(counts: &BTreeMap<String, usize>) -> bool {
    let with: Vec<usize> = counts.values().copied().collect();
    let max = with.iter().max().copied().unwrap_or(0);
    let min = with.iter().min().copied().unwrap_or(0);
    let avg = 16384 / with.len().max(1);
    (max - min) * 100 <= avg
}

/// A tag whose slot is `slot`.
pub fn tag_for(slot: u16) -> String {
    (0u64..)
        .map(|n| format!("t{n}"))
        .find(|t| key_slot(t.as_bytes()) == slot)
        .expect("a tag")
}

/// (slot, migrating node, importing node) of the first open slot on `a`'s own line.
pub fn migrating_on(addr: &str) -> Option<u16> {
    let text = nodes_text(addr);
    let me = parse_cluster_nodes(&text, "")
        .ok()?
        .into_iter()
        .find(|l| l.has("myself"))?;
    me.migrating.first().map(|m| m.0)
}

pub fn count_in(addr: &str, slot: u16) -> i64 {
    redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut node(addr))
        .unwrap_or(0)
}

/// The first planned range of a `DRYRUN`: (first slot, last slot, from, to).
pub fn first_range(dry: &[String]) -> (u16, u16, String, String) {
    let line = dry
        .iter()
        .find_map(|l| l.strip_prefix("move "))
        .expect("a planned range");
    let w: Vec<&str> = line.split_whitespace().collect();
    let (a, b) = w[0].split_once('-').unwrap_or((w[0], w[0]));
    (
        a.parse().expect("slot"),
        b.parse().expect("slot"),
        w[1].to_string(),
        w[3].to_string(),
    )
}
