//! `PROXY CREATE` and `PROXY CHECK` against real redis-server nodes on 127.0.0.x "hosts",
//! driven through the real proxy binary with the `redis` crate, checked with the real redis-cli.

mod common;

use common::*;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::admin::placement::{plan, NodeSpec, PlanOptions};
use slotproxy::cluster::{parse_cluster_nodes, NodeLine};
use std::collections::BTreeMap;
use std::time::Duration;

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

fn create_args(cluster: &LocalCluster, replicas: usize, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "CREATE".to_string(),
        "REPLICAS".into(),
        replicas.to_string(),
    ];
    args.push("NODES".into());
    args.extend(cluster.seeds());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn create(
    c: &mut redis::Connection,
    cluster: &LocalCluster,
    replicas: usize,
    extra: &[&str],
) -> Result<Vec<String>, String> {
    let args = create_args(cluster, replicas, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    proxy_lines(c, &refs).map_err(|e| e.to_string())
}

fn view(cluster: &LocalCluster, i: usize) -> Vec<NodeLine> {
    parse_cluster_nodes(&cluster.nodes_text(i), &cluster.nodes[i].ip).expect("CLUSTER NODES")
}

/// Asserts the invariants of a perfect placement on every node's view, and cluster_state:ok.
fn assert_perfect(cluster: &LocalCluster, replicas: usize) {
    let n = cluster.nodes.len();
    let m = n / (replicas + 1);
    let lines = view(cluster, 0);
    assert_eq!(lines.len(), n, "node 0 sees every node");
    let masters: Vec<&NodeLine> = lines.iter().filter(|l| l.is_master()).collect();
    assert_eq!(masters.len(), m);
    // Masters per host as even as possible (every layout here allows a spread of at most one).
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        per_host.entry(l.ip.clone()).or_insert(0);
    }
    for l in &masters {
        *per_host.get_mut(&l.ip).expect("host") += 1;
    }
    let (lo, hi) = (
        per_host.values().min().copied().unwrap_or(0),
        per_host.values().max().copied().unwrap_or(0),
    );
    assert!(hi - lo <= 1, "masters per host {per_host:?}");
    for &c in per_host.values() {
        assert!(c * 2 < m, "a host holds half the masters: {per_host:?}");
    }
    // Replicas: r per master, none on its master's host, distinct hosts per shard.
    for master in &masters {
        let reps: Vec<&NodeLine> = lines
            .iter()
            .filter(|l| l.master_id.as_deref() == Some(&master.id))
            .collect();
        assert_eq!(reps.len(), replicas, "replicas of {}", master.addr());
        let mut hosts: Vec<&str> = reps.iter().map(|r| r.ip.as_str()).collect();
        hosts.push(&master.ip);
        hosts.sort_unstable();
        hosts.dedup();
        assert_eq!(
            hosts.len(),
            replicas + 1,
            "shard of {} shares a host",
            master.addr()
        );
    }
    // Slots: contiguous, sizes differ by at most one, all covered; epochs 1..M distinct.
    let mut sizes: Vec<usize> = masters
        .iter()
        .map(|l| {
            assert_eq!(l.slots.len(), 1, "one contiguous range");
            (l.slots[0].1 - l.slots[0].0) as usize + 1
        })
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes.iter().sum::<usize>(), 16384);
    assert!(sizes[sizes.len() - 1] - sizes[0] <= 1, "{sizes:?}");
    let mut epochs: Vec<u64> = masters.iter().map(|l| l.config_epoch).collect();
    epochs.sort_unstable();
    assert_eq!(epochs, (1..=m as u64).collect::<Vec<_>>());
    for i in 0..n {
        let info = cluster
            .command(i, &["CLUSTER", "INFO"])
            .expect("CLUSTER INFO");
        assert!(info.contains("cluster_state:ok"), "node {i}: {info}");
    }
}

/// How long a test waits for a state (a liveness bound, not a timing assertion).
const LIVENESS: Duration = Duration::from_secs(60);

fn check(c: &mut redis::Connection) -> Vec<String> {
    proxy_lines(c, &["CHECK"]).expect("PROXY CHECK")
}

fn has(lines: &[String], prefix: &str) -> bool {
    lines.iter().any(|l| l.starts_with(prefix))
}

/// Waits until CHECK reports `prefix` (e.g. `ERROR open-slot`), returning the report.
fn check_until(c: &mut redis::Connection, prefix: &str) -> Vec<String> {
    eventually_ok(&format!("CHECK to report {prefix}"), LIVENESS, || {
        let last = check(c);
        if has(&last, prefix) {
            Ok(last)
        } else {
            Err(format!("{last:?}"))
        }
    })
}

fn check_until_ok(c: &mut redis::Connection) {
    eventually_ok("CHECK to say OK", LIVENESS, || {
        let last = check(c);
        if last.first().map(String::as_str) == Some("OK") {
            Ok(())
        } else {
            Err(format!("{last:?}"))
        }
    })
}

fn index_of(cluster: &LocalCluster, addr: &str) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| n.addr() == addr)
        .expect("node of the cluster")
}

#[test]
fn create_six_hosts_then_check_findings() {
    let cluster = empty(&[(2, 4), (3, 4), (4, 4), (5, 4), (6, 4), (7, 4)]);
    let proxy_proc = Proxy::start_with(&cluster.seeds()[..1], "", false);
    let mut c = proxy_proc.conn();

    // Before the cluster exists, data commands are refused with Redis's error.
    let e = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut c)
        .expect_err("no cluster yet");
    assert!(e.to_string().to_uppercase().contains("CLUSTERDOWN"), "{e}");

    let dry = create(&mut c, &cluster, 1, &["DRYRUN"]).expect("dry run");
    assert!(dry[0].starts_with("OK dryrun (fresh)"), "{dry:?}");
    assert_eq!(dry.iter().filter(|l| l.starts_with("shard ")).count(), 12);
    // A dry run changes nothing.
    assert_eq!(view(&cluster, 0).len(), 1);

    let out = create(&mut c, &cluster, 1, &[]).expect("create");
    assert!(
        out[0].starts_with("OK created (fresh): 12 masters, 12 replicas"),
        "{out:?}"
    );
    assert_perfect(&cluster, 1);
    let cli = std::process::Command::new("redis-cli")
        .args(["--cluster", "check", &cluster.seeds()[0]])
        .output()
        .expect("running redis-cli");
    assert!(
        cli.status.success(),
        "redis-cli --cluster check: {}",
        String::from_utf8_lossy(&cli.stdout)
    );

    // Re-running has nothing to do.
    let again = create(&mut c, &cluster, 1, &[]).expect("re-run");
    assert!(again[0].starts_with("OK nothing to do"), "{again:?}");

    // Data flows through the same proxy once its refresher has seen the cluster.
    eventually("SET through the proxy", LIVENESS, || {
        redis::cmd("SET")
            .arg("after-create")
            .arg("yes")
            .query::<()>(&mut c)
            .is_ok()
    });
    let v: String = redis::cmd("GET")
        .arg("after-create")
        .query(&mut c)
        .expect("GET");
    assert_eq!(v, "yes");
    check_until_ok(&mut c);
    let json: String = proxy_query(&mut c, &["CHECK", "JSON"]).expect("CHECK JSON");
    assert!(json.starts_with("{\"verdict\":\"OK\""), "{json}");

    let lines = view(&cluster, 0);
    let owner_of_0 = lines
        .iter()
        .find(|l| l.is_master() && l.slots.first().is_some_and(|s| s.0 == 0))
        .expect("owner of slot 0");
    let m0 = index_of(&cluster, &owner_of_0.addr());
    let other = lines
        .iter()
        .find(|l| l.is_master() && l.id != owner_of_0.id)
        .expect("another master");

    // An open slot.
    cluster
        .command(m0, &["CLUSTER", "SETSLOT", "0", "MIGRATING", &other.id])
        .expect("SETSLOT MIGRATING");
    let r = check_until(&mut c, "ERROR open-slot");
    assert!(r[0].starts_with("ERRORS "), "{r:?}");
    assert!(
        r.iter().any(|l| l.starts_with(&format!(
            "ERROR open-slot {} has slot 0 open: migrating to {}",
            owner_of_0.addr(),
            other.addr()
        ))),
        "{r:?}"
    );
    cluster
        .command(m0, &["CLUSTER", "SETSLOT", "0", "STABLE"])
        .expect("SETSLOT STABLE");
    check_until_ok(&mut c);

    // A slot dropped by its owner.
    cluster
        .command(m0, &["CLUSTER", "DELSLOTS", "5"])
        .expect("DELSLOTS");
    let r = check_until(&mut c, "ERROR uncovered");
    assert!(
        r.iter()
            .any(|l| l == "ERROR uncovered 1 slot(s) have no master: 5; hint: PROXY FIX"),
        "{r:?}"
    );
    assert!(has(&r, "ERROR state-not-ok"), "{r:?}");
    cluster
        .command(m0, &["CLUSTER", "ADDSLOTS", "5"])
        .expect("ADDSLOTS");
    check_until_ok(&mut c);

    // A replica re-pointed to a master on its own host.
    let lines = view(&cluster, 0);
    let (rep, old_master, local_master) = lines
        .iter()
        .filter(|l| !l.is_master())
        .find_map(|r| {
            let local = lines
                .iter()
                .find(|m| m.is_master() && m.ip == r.ip && !m.slots.is_empty())?;
            Some((r.clone(), r.master_id.clone()?, local.clone()))
        })
        .expect("a replica with a master on its host");
    let ri = index_of(&cluster, &rep.addr());
    cluster
        .command(ri, &["CLUSTER", "REPLICATE", &local_master.id])
        .expect("REPLICATE local");
    let r = check_until(&mut c, "ERROR colocated-replica");
    assert!(
        r.iter().any(|l| l.starts_with(&format!(
            "ERROR colocated-replica replica {} and its master {} are both on host {}",
            rep.addr(),
            local_master.addr(),
            rep.ip
        ))),
        "{r:?}"
    );
    cluster
        .command(ri, &["CLUSTER", "REPLICATE", &old_master])
        .expect("REPLICATE back");
    check_until_ok(&mut c);

    // A hung node (a replica, so no failover starts).
    let mut cluster = cluster;
    cluster.stop(ri);
    let r = check_until(&mut c, &format!("ERROR unreachable {}", rep.addr()));
    assert!(r[0].starts_with("ERRORS "), "{r:?}");
    cluster.cont(ri);
    check_until_ok(&mut c);

    // A node forgotten by one other node (the blacklist keeps it out for a minute).
    let forget_by = index_of(&cluster, &other.addr());
    cluster
        .command(forget_by, &["CLUSTER", "FORGET", &owner_of_0.id])
        .expect("FORGET");
    let r = check(&mut c);
    assert!(
        r.iter().any(|l| l.starts_with(&format!(
            "ERROR membership {} ({}) is unknown to {}",
            owner_of_0.addr(),
            &owner_of_0.id[..8],
            other.addr()
        ))),
        "{r:?}"
    );
    drop(proxy_proc);
}

#[test]
fn create_uneven_hosts_and_two_replicas() {
    // 5/4/3 nodes with one replica: 6 masters, 2 per host.
    let uneven = empty(&[(2, 5), (3, 4), (4, 3)]);
    // 3 x 3 nodes with two replicas: 3 masters, one per host, replicas on the two others.
    let triple = empty(&[(5, 3), (6, 3), (7, 3)]);
    let p = Proxy::start_with(&uneven.seeds()[..1], "", false);
    let mut c = p.conn();
    let out = create(&mut c, &uneven, 1, &[]).expect("create 5/4/3");
    assert!(out[0].starts_with("OK created"), "{out:?}");
    assert_perfect(&uneven, 1);
    let out = create(&mut c, &triple, 2, &["TIMEOUT", "60"]).expect("create 3x3 r=2");
    assert!(
        out[0].starts_with("OK created (fresh): 3 masters, 6 replicas"),
        "{out:?}"
    );
    assert_perfect(&triple, 2);
    // Both runs are jobs.
    let jobs = proxy_lines(&mut c, &["JOBS"]).expect("JOBS");
    assert!(
        jobs.iter().filter(|l| l.contains(" create ")).count() >= 2,
        "{jobs:?}"
    );
    // A job's log says how long each phase took (the operator's view of a slow create).
    let log = create_job_log(&mut c, &jobs);
    for phase in [
        "surveyed 12 node(s) in ",
        "epochs and slots: ",
        "meet: ",
        "replicate: 6 replica(s) attached, the last ",
        "converged ",
        "check: OK in ",
    ] {
        assert!(
            log.iter()
                .any(|l| l.starts_with("log +") && l.contains(phase)),
            "no {phase:?} in {log:?}"
        );
    }
}

/// A master that idled past Redis's 2 s start-up delay before it got its slots turns ok only
/// min(cluster-node-timeout, 5 s) later (the rejoin delay). CREATE lowers such a master's
/// cluster-node-timeout while it waits and sets each node's own value back; CHECK points at a
/// node left with the low value (as a create stopped in that window would leave it).
#[test]
fn create_lowers_then_restores_node_timeout_on_idle_masters() {
    let hosts: Vec<(String, usize)> = (2..=4).map(|h| (format!("127.0.0.{h}"), 2)).collect();
    let cluster =
        LocalCluster::start_empty(&hosts, 5000, &redis_server()).expect("starting empty nodes");
    let timeout_of = |i: usize| {
        cluster
            .command(i, &["CONFIG", "GET", "cluster-node-timeout"])
            .expect("CONFIG GET")
            .lines()
            .nth(1)
            .map(str::to_string)
    };
    // A value of its own on every node, to see that each gets its own back.
    let before: Vec<String> = (0..cluster.nodes.len())
        .map(|i| {
            let v = (5000 + 10 * i).to_string();
            cluster
                .command(i, &["CONFIG", "SET", "cluster-node-timeout", &v])
                .expect("CONFIG SET");
            v
        })
        .collect();
    // Idle past the start-up delay, so the rejoin delay is what keeps the masters at fail.
    std::thread::sleep(Duration::from_millis(2500));
    let p = Proxy::start_with(&cluster.seeds()[..1], "", false);
    let mut c = p.conn();
    let out = create(&mut c, &cluster, 1, &[]).expect("create");
    assert!(
        out[0].starts_with("OK created (fresh): 3 masters, 3 replicas"),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("note cluster-node-timeout was lowered to 500 ms on ")),
        "{out:?}"
    );
    assert_perfect(&cluster, 1);
    for (i, v) in before.iter().enumerate() {
        assert_eq!(timeout_of(i).as_deref(), Some(v.as_str()), "node {i}");
    }
    let jobs = proxy_lines(&mut c, &["JOBS"]).expect("JOBS");
    let log = create_job_log(&mut c, &jobs);
    for what in [
        "cluster-node-timeout lowered to 500 ms",
        "cluster-node-timeout restored",
    ] {
        assert!(
            log.iter().any(|l| l.contains(what)),
            "no {what:?} in {log:?}"
        );
    }

    cluster
        .command(0, &["CONFIG", "SET", "cluster-node-timeout", "500"])
        .expect("CONFIG SET");
    let lines = check_until(&mut c, "WARN settings-differ");
    let addr = cluster.nodes[0].addr();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cluster-node-timeout differs")
                && l.contains(&format!("500 on {addr} may be left by a PROXY CREATE"))),
        "{lines:?}"
    );
}

/// What must not change when CREATE refuses: membership, roles, slots, epochs and keys of the
/// first `listed` nodes (the ones CREATE was given). Only lines about listed nodes count, and no
/// line in handshake: a node outside the list gossips with its peers on Redis's own schedule (a
/// handshake can time out and restart on a loaded machine), and nothing CREATE does reaches it.
fn snapshot(cluster: &LocalCluster, listed: usize) -> Vec<String> {
    let ids: Vec<String> = (0..listed)
        .map(|i| cluster.command(i, &["CLUSTER", "MYID"]).expect("MYID"))
        .collect();
    (0..listed)
        .map(|i| {
            let mut v: Vec<String> = view(cluster, i)
                .iter()
                .filter(|l| !l.has("handshake") && ids.contains(&l.id))
                .map(|l| {
                    format!(
                        "{} {} {:?} {} {:?}",
                        l.id,
                        l.is_master(),
                        l.master_id,
                        l.config_epoch,
                        l.slots
                    )
                })
                .collect();
            v.sort();
            let keys = cluster.command(i, &["DBSIZE"]).expect("DBSIZE");
            format!("{} keys={keys}", v.join(" | "))
        })
        .collect()
}

#[test]
fn refusals_change_nothing_and_resume_finishes() {
    // Two hosts cannot hold shards of three members.
    let two = empty(&[(2, 5), (3, 4)]);
    let p = Proxy::start_with(&two.seeds()[..1], "", false);
    let mut c = p.conn();
    let before = snapshot(&two, two.nodes.len());
    let e = create(&mut c, &two, 2, &[]).expect_err("two hosts, r=2");
    assert!(e.contains("refused: not enough distinct hosts"), "{e}");
    assert_eq!(snapshot(&two, two.nodes.len()), before);
    drop(two);

    // A node holding a key.
    let nodes = empty(&[(4, 2), (5, 2), (6, 2), (7, 1)]);
    let (main, outsider): (Vec<String>, String) = {
        let s = nodes.seeds();
        (s[..6].to_vec(), s[6].clone())
    };
    let mut args: Vec<String> = ["CREATE", "REPLICAS", "1", "NODES"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(main.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // A cluster node serves no key without a slot: lend it the key's slot, write, take the
    // slot back. Left: a node with a key and no slots, the dirty node CREATE must refuse.
    let key_node = 3;
    nodes
        .command(key_node, &["CLUSTER", "ADDSLOTS", "15495"])
        .expect("ADDSLOTS");
    // With one slot of 16384 the node is "down" unless full coverage is not required.
    nodes
        .command(
            key_node,
            &["CONFIG", "SET", "cluster-require-full-coverage", "no"],
        )
        .expect("CONFIG SET");
    // {a} is slot 15495; the node turns writable once it has recomputed its state.
    eventually("the lone node accepts a write", LIVENESS, || {
        nodes.command(key_node, &["SET", "{a}", "1"]).is_ok()
    });
    nodes
        .command(
            key_node,
            &["CONFIG", "SET", "cluster-require-full-coverage", "yes"],
        )
        .expect("CONFIG SET");
    nodes
        .command(key_node, &["CLUSTER", "DELSLOTS", "15495"])
        .expect("DELSLOTS");
    let before = snapshot(&nodes, main.len());
    let e = proxy_lines(&mut c, &refs)
        .expect_err("a node holds a key")
        .to_string();
    assert!(
        e.contains(&format!("{} holds 1 key", main[key_node])),
        "{e}"
    );
    assert_eq!(snapshot(&nodes, main.len()), before);
    nodes.command(key_node, &["FLUSHALL"]).expect("FLUSHALL");

    // A node already in another cluster (it met a node that is not listed).
    let ip_port = outsider.rsplit_once(':').expect("addr");
    nodes
        .command(0, &["CLUSTER", "MEET", ip_port.0, ip_port.1])
        .expect("MEET outsider");
    eventually("the outsider is known", LIVENESS, || {
        view(&nodes, 0)
            .iter()
            .filter(|l| !l.has("handshake"))
            .count()
            == 2
            && view(&nodes, 6)
                .iter()
                .filter(|l| !l.has("handshake"))
                .count()
                == 2
    });
    let before = snapshot(&nodes, main.len());
    let e = proxy_lines(&mut c, &refs)
        .expect_err("a node is in another cluster")
        .to_string();
    assert!(
        e.contains(&format!(
            "node {} already belongs to another cluster",
            main[0]
        )),
        "{e}"
    );
    assert_eq!(snapshot(&nodes, main.len()), before);
    drop(nodes);

    // A create killed after MEET finishes on re-run: do the plan's first steps by hand.
    let fresh = empty(&[(2, 2), (3, 2), (4, 2)]);
    let specs: Vec<NodeSpec> = fresh
        .nodes
        .iter()
        .map(|n| NodeSpec::new(n.ip.clone(), n.port))
        .collect();
    let placed = plan(
        &specs,
        &PlanOptions {
            replicas: 1,
            allow_colocated: false,
        },
    )
    .expect("plan");
    for s in &placed.shards {
        fresh
            .command(
                s.master,
                &["CLUSTER", "SET-CONFIG-EPOCH", &s.epoch.to_string()],
            )
            .expect("SET-CONFIG-EPOCH");
        fresh
            .command(
                s.master,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &s.slots.0.to_string(),
                    &s.slots.1.to_string(),
                ],
            )
            .expect("ADDSLOTSRANGE");
    }
    // CREATE gives replicas-to-be unique epochs M+1..N before any MEET (empty masters sharing
    // epoch 0 would make Redis bump epochs, sometimes a real master's), so a create killed after
    // MEET leaves them set: do the same here.
    let mut next_epoch = placed.shards.len() as u64;
    for s in &placed.shards {
        for &r in &s.replicas {
            next_epoch += 1;
            fresh
                .command(r, &["CLUSTER", "SET-CONFIG-EPOCH", &next_epoch.to_string()])
                .expect("SET-CONFIG-EPOCH replica");
        }
    }
    let seed = placed.shards[0].master;
    for i in 0..fresh.nodes.len() {
        if i != seed {
            let port = fresh.nodes[seed].port.to_string();
            fresh
                .command(i, &["CLUSTER", "MEET", &fresh.nodes[seed].ip, &port])
                .expect("MEET");
        }
    }
    let dry = create(&mut c, &fresh, 1, &["DRYRUN"]).expect("dry run");
    assert!(dry[0].starts_with("OK dryrun (resume)"), "{dry:?}");
    assert!(!dry.iter().any(|l| l.contains("ADDSLOTSRANGE")), "{dry:?}");
    let out = create(&mut c, &fresh, 1, &[]).expect("resume");
    assert!(out[0].starts_with("OK created (resume)"), "{out:?}");
    assert_perfect(&fresh, 1);
    let again = create(&mut c, &fresh, 1, &[]).expect("re-run");
    assert!(again[0].starts_with("OK nothing to do"), "{again:?}");
}

#[test]
fn rendered_cluster_with_a_master_that_never_started() {
    // A rendered cluster; then master A and its replica R go away, and R comes back alone:
    // R never synced in its new life, so it will not fail over by itself, like the replica of
    // a rendered master that never started.
    let mut cluster = cluster_with_timeout(3, 2, 1, 1000);
    let lines = view(&cluster, 0);
    let a = lines
        .iter()
        .find(|l| l.is_master())
        .expect("a master")
        .clone();
    let r = lines
        .iter()
        .find(|l| l.master_id.as_deref() == Some(&a.id))
        .expect("its replica")
        .clone();
    let (ai, ri) = (index_of(&cluster, &a.addr()), index_of(&cluster, &r.addr()));
    cluster.kill(ri);
    cluster.kill(ai);
    cluster.restart(ri).expect("restart the replica");
    let running: Vec<String> = (0..cluster.nodes.len())
        .filter(|&i| i != ai)
        .map(|i| cluster.nodes[i].addr())
        .collect();
    let p = Proxy::start_with(&running, "", false);
    let mut c = p.conn();
    let report = check_until(&mut c, "ERROR master-missing");
    assert!(
        report.iter().any(|l| l.starts_with(&format!(
            "ERROR master-missing {}'s master {} does not answer",
            r.addr(),
            a.addr()
        ))),
        "{report:?}"
    );
    let mut args = vec!["CREATE", "REPLICAS", "1", "NODES"];
    args.extend(running.iter().map(String::as_str));
    let out = proxy_lines(&mut c, &args).expect("create over rendered nodes");
    assert!(
        out.iter().any(|l| l.contains("FAILOVER TAKEOVER on")),
        "{out:?}"
    );
    eventually(
        "the replica owns the slots and every running node is ok",
        LIVENESS,
        || {
            let me = view(&cluster, ri);
            me.iter()
                .any(|l| l.has("myself") && l.is_master() && l.slots == a.slots)
                && cluster.wait_ok(Duration::from_millis(1)).is_ok()
        },
    );
    // Data flows again.
    eventually("SET through the proxy", LIVENESS, || {
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query::<()>(&mut c)
            .is_ok()
    });
}

/// The log of the first create job `jobs` (PROXY JOBS's lines) lists.
fn create_job_log(c: &mut redis::Connection, jobs: &[String]) -> Vec<String> {
    let id = jobs
        .iter()
        .find(|l| l.contains(" create "))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a create job")
        .to_string();
    proxy_lines(c, &["JOB", &id]).expect("JOB")
}

/// The connection names of CREATE claims on node `i`.
fn claims(cluster: &LocalCluster, i: usize) -> Vec<String> {
    let list = cluster
        .command(i, &["CLIENT", "LIST", "TYPE", "normal"])
        .expect("CLIENT LIST");
    slotproxy::admin::create::rivals(&list, "none")
        .into_iter()
        .map(|r| r.name)
        .collect()
}

#[test]
fn one_create_at_a_time_across_proxies() {
    let cluster = empty(&[(2, 2), (3, 2), (4, 2)]);
    let seeds = cluster.seeds();

    // A claim held by another client (what another proxy's running CREATE holds): refused,
    // naming the node and how to free it; nothing changed.
    let (holder, holder_id) = hold_claim(&cluster, 4);
    let a = Proxy::start_with(&seeds[..1], "", false);
    let mut ca = a.conn();
    let before = snapshot(&cluster, seeds.len());
    let e = create(&mut ca, &cluster, 1, &[]).expect_err("the node is claimed");
    assert!(
        e.contains(&format!(
            "refused: {} is claimed by another CREATE or ADD",
            seeds[4]
        )) && e.contains(&format!("CLIENT KILL ID {holder_id}")),
        "{e}"
    );
    assert_eq!(snapshot(&cluster, seeds.len()), before);
    // The refused run let go of every node it had claimed.
    for i in 0..seeds.len() {
        let expected: Vec<String> = if i == 4 {
            vec![HELD_CLAIM.to_string()]
        } else {
            vec![]
        };
        assert_eq!(claims(&cluster, i), expected, "node {i}");
    }
    // A dry run claims nothing and is not refused.
    let dry = create(&mut ca, &cluster, 1, &["DRYRUN"]).expect("dry run");
    assert!(dry[0].starts_with("OK dryrun (fresh)"), "{dry:?}");
    drop(holder);

    // A proxy killed mid-create lets go of its nodes, and another proxy finishes the job.
    let b = Proxy::start_with(&seeds[..1], "", false);
    eventually("the holder's claim is gone", LIVENESS, || {
        claims(&cluster, 4).is_empty()
    });
    // Replicas wait out a 5 s diskless-sync delay, so A's run lasts long enough to be seen
    // (and killed) while it holds its claim.
    let sync_delay = |secs: &str| {
        for i in 0..seeds.len() {
            cluster
                .command(i, &["CONFIG", "SET", "repl-diskless-sync-delay", secs])
                .expect("CONFIG SET");
        }
    };
    sync_delay("5");
    let args = create_args(&cluster, 1, &["ASYNC"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = proxy_lines(&mut ca, &refs).expect("CREATE ASYNC");
    assert!(started[0].starts_with("OK job"), "{started:?}");
    eventually("proxy A's claim shows on every node", LIVENESS, || {
        (0..seeds.len()).all(|i| claims(&cluster, i).len() == 1)
    });
    // While A runs, B is refused.
    let mut cb = b.conn();
    let e = create(&mut cb, &cluster, 1, &[]).expect_err("A holds the nodes");
    assert!(e.contains(" is claimed by another CREATE or ADD"), "{e}");
    a.signal("KILL");
    eventually("the killed proxy's claims are gone", LIVENESS, || {
        (0..seeds.len()).all(|i| claims(&cluster, i).is_empty())
    });
    sync_delay("0");
    let out = create(&mut cb, &cluster, 1, &[]).expect("B finishes the cluster");
    assert!(
        out[0].starts_with("OK created") || out[0].starts_with("OK nothing to do"),
        "{out:?}"
    );
    assert_perfect(&cluster, 1);
    // B's run ended: no claim is left behind.
    for i in 0..seeds.len() {
        assert!(claims(&cluster, i).is_empty(), "node {i}");
    }
}
