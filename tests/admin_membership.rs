//! `PROXY ADD` and `PROXY REMOVE NODES` against real redis-server nodes on 127.0.0.x "hosts":
//! a 3x1 cluster built by `PROXY CREATE` grows by two shards and a replica, then loses a
//! replica and an empty shard, while the proxy keeps serving reads and writes.

mod common;

use common::*;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::cluster::{parse_cluster_nodes, NodeLine};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a test waits for a state (a liveness bound, not a timing assertion).
const LIVENESS: Duration = Duration::from_secs(60);

fn redis_server() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// Empty cluster-enabled nodes: `(host number, nodes)` -> `127.0.0.<host>`.
fn empty(hosts: &[(u8, usize)]) -> LocalCluster {
    let hosts: Vec<(String, usize)> = hosts
        .iter()
        .map(|&(h, n)| (format!("127.0.0.{h}"), n))
        .collect();
    LocalCluster::start_empty(&hosts, 2000, &redis_server()).expect("starting empty nodes")
}

fn proxy(c: &mut redis::Connection, words: &[&str]) -> Result<Vec<String>, String> {
    proxy_lines(c, words).map_err(|e| e.to_string())
}

/// `PROXY <head...> NODES <nodes...> <tail...>`.
fn with_nodes(
    c: &mut redis::Connection,
    head: &[&str],
    nodes: &[String],
    tail: &[&str],
) -> Result<Vec<String>, String> {
    let mut w: Vec<&str> = head.to_vec();
    w.push("NODES");
    w.extend(nodes.iter().map(String::as_str));
    w.extend(tail);
    proxy(c, &w)
}

/// A node's CLUSTER NODES, asked directly.
fn view_at(addr: &str) -> Vec<NodeLine> {
    let mut c = redis::Client::open(format!("redis://{addr}/"))
        .and_then(|c| c.get_connection())
        .expect("connecting to a node");
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut c)
        .expect("CLUSTER NODES");
    let ip = addr.rsplit_once(':').map_or(addr, |x| x.0);
    parse_cluster_nodes(&text, ip).expect("parse")
}

/// Placement rules on `addr`'s view: no replica on its master's host, and masters per host
/// (slot owners and empty masters alike) within one of each other. Returns masters per host.
fn assert_placement(addr: &str) -> BTreeMap<String, usize> {
    let lines = view_at(addr);
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        per_host.entry(l.ip.clone()).or_insert(0);
    }
    for l in lines.iter().filter(|l| l.is_master()) {
        *per_host.entry(l.ip.clone()).or_insert(0) += 1;
    }
    for r in lines.iter().filter(|l| !l.is_master()) {
        let m = lines
            .iter()
            .find(|m| Some(&m.id) == r.master_id.as_ref())
            .expect("the replica's master");
        assert_ne!(r.ip, m.ip, "replica {} on its master's host", r.addr());
    }
    let (lo, hi) = (
        per_host.values().min().copied().unwrap_or(0),
        per_host.values().max().copied().unwrap_or(0),
    );
    assert!(hi - lo <= 1, "masters per host {per_host:?}");
    per_host
}

/// Writes and reads through the proxy: what the test wrote so far must read back.
struct Data {
    written: BTreeMap<String, String>,
}

impl Data {
    fn round(&mut self, c: &mut redis::Connection, step: &str) {
        for i in 0..25 {
            let (k, v) = (format!("{step}:{i}"), format!("value {step} {i}"));
            redis::cmd("SET")
                .arg(&k)
                .arg(&v)
                .query::<()>(c)
                .unwrap_or_else(|e| panic!("SET {k} after {step}: {e}"));
            self.written.insert(k, v);
        }
        for (k, v) in &self.written {
            let got: Option<String> = redis::cmd("GET")
                .arg(k)
                .query(c)
                .unwrap_or_else(|e| panic!("GET {k} after {step}: {e}"));
            assert_eq!(got.as_deref(), Some(v.as_str()), "{k} after {step}");
        }
    }
}

/// CHECK until it has no error and no warning but `allowed` ones; the report.
fn check_clean(c: &mut redis::Connection, allowed: &[&str]) -> Vec<String> {
    eventually_ok("CHECK without errors", LIVENESS, || {
        let r = proxy(c, &["CHECK"])?;
        let bad: Vec<&String> = r
            .iter()
            .skip(2)
            .filter(|l| !allowed.iter().any(|a| l.starts_with(&format!("WARN {a} "))))
            .collect();
        if bad.is_empty() {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
}

/// Asserts that none of `nodes` lists any of `ids`.
fn nobody_lists(nodes: &[String], ids: &[String]) {
    for n in nodes {
        for l in view_at(n) {
            assert!(!ids.contains(&l.id), "{n} still lists {}", l.addr());
        }
    }
}

#[test]
fn add_shards_and_a_replica_then_remove_nodes() {
    let orig = empty(&[(1, 2), (2, 2), (3, 2)]);
    let p = Proxy::start_with(&orig.seeds(), "", false);
    let mut c = p.conn();
    let out = with_nodes(&mut c, &["CREATE", "REPLICAS", "1"], &orig.seeds(), &[]).expect("create");
    assert!(out[0].starts_with("OK created"), "{out:?}");
    eventually("the proxy serves every slot", LIVENESS, || {
        serves_all_slots(&mut c)
    });
    let mut data = Data {
        written: BTreeMap::new(),
    };
    data.round(&mut c, "created");

    // Two new shards with one replica each, on two new hosts.
    let new = empty(&[(4, 2), (5, 2)]);
    let add = ["ADD", "REPLICAS", "1"];
    let dry = with_nodes(&mut c, &add, &new.seeds(), &["DRYRUN"]).expect("dry run");
    assert!(
        dry[0].starts_with("OK dryrun: 2 master(s), 2 replica(s)"),
        "{dry:?}"
    );
    assert!(
        dry.iter().any(|l| l
            == "masters per host after: 127.0.0.1=1 127.0.0.2=1 127.0.0.3=1 127.0.0.4=1 \
                127.0.0.5=1"),
        "{dry:?}"
    );
    // A dry run changes nothing.
    for a in new.seeds() {
        assert_eq!(view_at(&a).len(), 1, "{a} was touched by a dry run");
    }
    assert_eq!(view_at(&orig.seeds()[0]).len(), 6);

    // Another proxy holds the lease: refused, naming the holder; nothing changes.
    redis::cmd("SET")
        .arg("slotproxy:lease:rebalance")
        .arg("another proxy")
        .query::<()>(&mut c)
        .expect("SET lease");
    let e = with_nodes(&mut c, &add, &new.seeds(), &[]).expect_err("lease held");
    assert!(
        e.contains("holds the lease") && e.contains("another proxy"),
        "{e}"
    );
    assert_eq!(view_at(&new.seeds()[0]).len(), 1);
    redis::cmd("DEL")
        .arg("slotproxy:lease:rebalance")
        .query::<()>(&mut c)
        .expect("DEL lease");

    let out = with_nodes(&mut c, &add, &new.seeds(), &[]).expect("add");
    assert!(
        out[0].starts_with("OK added 2 master(s), 2 replica(s)"),
        "{out:?}"
    );
    let per_host = assert_placement(&orig.seeds()[0]);
    assert_eq!(per_host.values().copied().collect::<Vec<_>>(), vec![1; 5]);
    assert_eq!(view_at(&orig.seeds()[0]).len(), 10);
    // The new masters own no slots: CHECK warns about exactly those, nothing else.
    let r = check_clean(&mut c, &["empty-master"]);
    assert_eq!(r[0], "ERRORS 0 WARNINGS 2", "{r:?}");
    data.round(&mut c, "added");

    // Re-running has nothing to do.
    let again = with_nodes(&mut c, &add, &new.seeds(), &[]).expect("re-run");
    assert!(again[0].starts_with("NOTHING TO DO"), "{again:?}");

    // One more replica for the master on host 1, as a job.
    let extra = empty(&[(6, 1)]);
    let m1 = view_at(&orig.seeds()[0])
        .into_iter()
        .find(|l| l.ip == "127.0.0.1" && l.is_master())
        .expect("a master on host 1");
    let out = with_nodes(
        &mut c,
        &["ADD", "REPLICAS-OF", &m1.addr()],
        &extra.seeds(),
        &["ASYNC"],
    )
    .expect("add replica");
    let job = out[0].strip_prefix("OK job ").expect("job id").to_string();
    let summary = eventually_ok("the ADD job to finish", LIVENESS, || {
        let d = proxy(&mut c, &["JOB", &job])?;
        if d[0].contains(" running ") {
            Err(format!("{d:?}"))
        } else {
            Ok(d[0].clone())
        }
    });
    assert!(summary.contains("done: OK added 1 replica(s)"), "{summary}");
    let lines = view_at(&orig.seeds()[0]);
    let r6 = lines
        .iter()
        .find(|l| l.addr() == extra.seeds()[0])
        .expect("the new replica");
    assert_eq!(r6.master_id.as_deref(), Some(m1.id.as_str()));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.master_id.as_deref() == Some(m1.id.as_str()))
            .count(),
        2
    );
    assert_placement(&orig.seeds()[0]);
    data.round(&mut c, "replica added");

    // Refusals change nothing: a master whose replica is not listed, a master's last replica.
    let owner = lines
        .iter()
        .find(|l| l.is_master() && !l.slots.is_empty() && l.id != m1.id)
        .expect("another slot owner");
    let e = proxy(&mut c, &["REMOVE", "NODES", &owner.addr()]).expect_err("its replica stays");
    assert!(
        e.contains(&format!("master {} has replica(s) ", owner.addr())),
        "{e}"
    );
    let last = lines
        .iter()
        .find(|l| l.master_id.as_deref() == Some(owner.id.as_str()))
        .expect("its replica");
    let e = proxy(&mut c, &["REMOVE", "NODES", &last.addr()]).expect_err("last replica");
    assert!(
        e.contains(&format!(
            "node {} is the last replica of master {}",
            last.addr(),
            owner.addr()
        )),
        "{e}"
    );
    assert_eq!(view_at(&orig.seeds()[0]).len(), 11);

    // Remove the added replica and one new shard (its master owns no slots).
    let empty_master = lines
        .iter()
        .find(|l| l.is_master() && l.slots.is_empty())
        .expect("an empty master");
    let its_replica = lines
        .iter()
        .find(|l| l.master_id.as_deref() == Some(empty_master.id.as_str()))
        .expect("its replica");
    let gone: Vec<String> = vec![r6.addr(), empty_master.addr(), its_replica.addr()];
    let gone_ids: Vec<String> = vec![
        r6.id.clone(),
        empty_master.id.clone(),
        its_replica.id.clone(),
    ];
    let out = with_nodes(&mut c, &["REMOVE"], &gone, &["DRYRUN"]).expect("dry remove");
    assert!(out[0].starts_with("OK dryrun: 3 node(s)"), "{out:?}");
    assert_eq!(view_at(&orig.seeds()[0]).len(), 11);
    let out = with_nodes(&mut c, &["REMOVE"], &gone, &[]).expect("remove");
    assert!(out[0].starts_with("OK removed 3 node(s)"), "{out:?}");
    let staying: Vec<String> = orig
        .seeds()
        .into_iter()
        .chain(new.seeds())
        .filter(|a| !gone.contains(a))
        .collect();
    assert_eq!(staying.len(), 8);
    nobody_lists(&staying, &gone_ids);
    for a in &gone {
        let v = view_at(a);
        assert_eq!(v.len(), 1, "{a} was not reset: {v:?}");
        assert!(!gone_ids.contains(&v[0].id), "{a} kept its node ID");
    }
    // Gossip does not bring them back: look again for a few seconds.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        nobody_lists(&staying, &gone_ids);
        std::thread::sleep(Duration::from_millis(250));
    }
    for a in &gone {
        assert_eq!(view_at(a).len(), 1, "{a} rejoined");
    }
    assert_placement(&staying[0]);
    // The removed nodes answer but belong to nobody: outsiders when the proxy still lists them.
    check_clean(&mut c, &["empty-master", "outsider"]);
    data.round(&mut c, "removed");

    // Re-running has nothing to do.
    let again = with_nodes(&mut c, &["REMOVE"], &gone, &[]).expect("re-run remove");
    assert!(again[0].starts_with("NOTHING TO DO"), "{again:?}");
    data.round(&mut c, "end");
}

#[test]
fn add_finishes_an_interrupted_add_refuses_other_clusters_and_places_any() {
    let orig = empty(&[(1, 2), (2, 2), (3, 2)]);
    let p = Proxy::start_with(&orig.seeds(), "", false);
    let mut c = p.conn();
    let out = with_nodes(&mut c, &["CREATE", "REPLICAS", "1"], &orig.seeds(), &[]).expect("create");
    assert!(out[0].starts_with("OK created"), "{out:?}");
    eventually("the proxy serves every slot", LIVENESS, || {
        serves_all_slots(&mut c)
    });
    let mut data = Data {
        written: BTreeMap::new(),
    };
    data.round(&mut c, "created");
    let seed = orig.seeds()[0].clone();
    let (seed_ip, seed_port) = seed.rsplit_once(':').expect("addr");

    // An ADD killed right after its MEETs: the nodes are in the cluster, nobody replicates.
    let new = empty(&[(4, 1), (5, 1)]);
    for i in 0..2 {
        new.command(i, &["CLUSTER", "MEET", seed_ip, seed_port])
            .expect("MEET");
    }
    let new_ids: Vec<String> = new.nodes.iter().map(|n| n.node_id.clone()).collect();
    eventually_ok("the cluster to know the new nodes", LIVENESS, || {
        // Redis drops a handshake that takes longer than the node timeout (a loaded machine):
        // meet again, as the engine does.
        for (i, a) in new.seeds().iter().enumerate() {
            if !view_at(a).iter().any(|l| l.addr() == seed) {
                let _ = new.command(i, &["CLUSTER", "MEET", seed_ip, seed_port]);
            }
        }
        let v = view_at(&seed);
        let known = new_ids
            .iter()
            .all(|id| v.iter().any(|l| l.id == *id && !l.has("handshake")));
        if known {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    });
    let out = with_nodes(&mut c, &["ADD", "REPLICAS", "1"], &new.seeds(), &[]).expect("finish");
    assert!(
        out[0].starts_with("OK added 1 master(s), 1 replica(s)"),
        "{out:?}"
    );
    assert!(
        !out.iter().any(|l| l.starts_with("step CLUSTER MEET")),
        "{out:?}"
    );
    assert!(
        out.iter().any(|l| l.starts_with("step CLUSTER REPLICATE")),
        "{out:?}"
    );
    assert_placement(&seed);
    data.round(&mut c, "finished");

    // Nodes that already form a cluster of their own are refused; nothing changes.
    let other = empty(&[(6, 1), (7, 1)]);
    let (oip, oport) = other.seeds()[1]
        .rsplit_once(':')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("addr");
    eventually("the two other nodes to know each other", LIVENESS, || {
        let v = view_at(&other.seeds()[0]);
        if v.len() == 1 {
            // Not even shaking hands (never met, or a dropped handshake): meet (again).
            let _ = other.command(0, &["CLUSTER", "MEET", &oip, &oport]);
        }
        v.iter().filter(|l| !l.has("handshake")).count() == 2
    });
    let e = with_nodes(
        &mut c,
        &["ADD", "REPLICAS-OF", "ANY"],
        &other.seeds()[..1],
        &[],
    )
    .expect_err("another cluster");
    assert!(
        e.contains(&format!(
            "node {} belongs to another cluster: it knows node {}",
            other.seeds()[0],
            other.seeds()[1]
        )),
        "{e}"
    );
    assert_eq!(view_at(&seed).len(), 8);

    // ANY: a node on host 2 replicates a master that owns slots, not on host 2.
    let more = empty(&[(2, 1)]);
    // First, while a CREATE elsewhere holds that node (its claim, held here by hand): ADD is
    // refused, changes nothing and gives the lease back.
    let (holder, _) = hold_claim(&more, 0);
    let e = with_nodes(&mut c, &["ADD", "REPLICAS-OF", "ANY"], &more.seeds(), &[])
        .expect_err("the node is claimed");
    assert!(
        e.contains(&format!(
            "refused: {} is claimed by another CREATE or ADD",
            more.seeds()[0]
        )),
        "{e}"
    );
    assert_eq!(view_at(&seed).len(), 8);
    assert_eq!(view_at(&more.seeds()[0]).len(), 1);
    drop(holder);
    let out = with_nodes(&mut c, &["ADD", "REPLICAS-OF", "ANY"], &more.seeds(), &[]).expect("any");
    assert!(out[0].starts_with("OK added 1 replica(s)"), "{out:?}");
    let lines = view_at(&seed);
    let me = lines
        .iter()
        .find(|l| l.addr() == more.seeds()[0])
        .expect("the new replica");
    let master = lines
        .iter()
        .find(|l| Some(&l.id) == me.master_id.as_ref())
        .expect("its master");
    assert!(
        !master.slots.is_empty() && master.ip != "127.0.0.2",
        "{master:?}"
    );
    assert_placement(&seed);
    data.round(&mut c, "any");
}
