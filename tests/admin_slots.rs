//! `PROXY REBALANCE SLOTS` (and REMOVE NODES' drain) against real redis-server clusters on
//! 127.0.0.x "hosts", driven through the real proxy binary with the `redis` crate: a rebalance
//! onto new empty masters under client load, a drain, a run resumed after the proxy was
//! SIGKILLed, a key MIGRATE cannot move in time, MIGRATE with the proxy's ACL login, and REMOVE
//! NODES of a master that owns slots. FIX's tests are in `admin_fix.rs`.

mod common;
mod slots_helpers;

use common::*;
use slotproxy::cluster::parse_cluster_nodes;
use slots_helpers::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client threads writing and reading through the proxy, each with its own keys and a
/// reference of what it wrote, and reading the preloaded keys; every error or mismatch is
/// recorded.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<HashMap<String, Vec<u8>>>>,
}

impl Load {
    fn start(proxy: &Proxy, n: usize, pre: Arc<Vec<(String, Vec<u8>)>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..n)
            .map(|t| {
                let (stop, ops, errors, pre) = (
                    Arc::clone(&stop),
                    Arc::clone(&ops),
                    Arc::clone(&errors),
                    Arc::clone(&pre),
                );
                let mut c = proxy.conn();
                std::thread::spawn(move || {
                    let mut mine: HashMap<String, Vec<u8>> = HashMap::new();
                    let fail = |e: String| {
                        let mut v = errors.lock().unwrap_or_else(|e| e.into_inner());
                        if v.len() < 20 {
                            v.push(e);
                        }
                    };
                    let started = Instant::now();
                    let mut i: usize = 0;
                    // Bounded in time even if the test never says stop.
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(600)
                    {
                        let key = format!("load{t}:{}", i % 100);
                        let val = format!("t{t}-i{i}-").repeat(20).into_bytes();
                        match redis::cmd("SET")
                            .arg(&key)
                            .arg(val.as_slice())
                            .query::<()>(&mut c)
                        {
                            Ok(()) => {
                                mine.insert(key, val);
                            }
                            Err(e) => fail(format!("SET {key}: {e}")),
                        }
                        let other = format!("load{t}:{}", (i * 7) % 100);
                        match redis::cmd("GET")
                            .arg(&other)
                            .query::<Option<Vec<u8>>>(&mut c)
                        {
                            Ok(got) if got.as_ref() == mine.get(&other) => {}
                            Ok(_) => fail(format!("GET {other}: not what was written")),
                            Err(e) => fail(format!("GET {other}: {e}")),
                        }
                        let (k, v) = &pre[(i * 13 + t) % pre.len()];
                        match redis::cmd("GET").arg(k).query::<Option<Vec<u8>>>(&mut c) {
                            Ok(Some(got)) if got == *v => {}
                            Ok(_) => fail(format!("GET {k}: lost or changed")),
                            Err(e) => fail(format!("GET {k}: {e}")),
                        }
                        ops.fetch_add(3, Ordering::Relaxed);
                        i += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    mine
                })
            })
            .collect();
        Load {
            stop,
            ops,
            errors,
            threads,
        }
    }

    /// Stops the threads: (operations, errors, what they wrote last).
    fn finish(self) -> (u64, Vec<String>, Reference) {
        self.stop.store(true, Ordering::Relaxed);
        let mut written = Vec::new();
        for t in self.threads {
            written.extend(t.join().expect("load thread"));
        }
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.ops.load(Ordering::Relaxed), errors, written)
    }
}

#[test]
fn rebalance_onto_two_new_masters_under_load() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let reference = Arc::new(preload(&mut c, 3000, "pre"));
    let extra = join_empty(&cluster, &["127.0.0.4", "127.0.0.5"]);
    let all = all_addrs(&cluster, &extra);
    assert_eq!(
        slot_counts(&all[0]).values().filter(|&&n| n == 0).count(),
        2
    );

    let dry = proxy_lines(&mut c, &["REBALANCE", "SLOTS", "DRYRUN"]).expect("DRYRUN");
    assert!(
        dry[0].starts_with("DRYRUN moves 6553 slots in 4 ranges"),
        "{dry:?}"
    );
    assert!(open_slots(&all).is_empty());

    let load = Load::start(&proxy, 10, Arc::clone(&reference));
    let r = proxy_lines(&mut c, &["REBALANCE", "SLOTS"]).expect("REBALANCE SLOTS");
    let (ops, errors, written) = load.finish();
    assert!(r[0].starts_with("OK moved 6553 slots"), "{r:?}");
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    assert!(ops > 0);

    let counts = slot_counts(&all[0]);
    assert_eq!(counts.len(), 5);
    assert!(spread_ok(&counts), "{counts:?}");
    assert!(open_slots(&all).is_empty());
    verify(&mut c, &reference);
    let written: Vec<(String, Vec<u8>)> = written.into_iter().collect();
    verify(&mut c, &written);
    check_ok(&mut c);
    let again = proxy_lines(&mut c, &["REBALANCE", "SLOTS"]).expect("again");
    assert!(again[0].starts_with("NOTHING TO DO"), "{again:?}");
}

/// CHECK's findings other than the ones about replicas and master placement (a drained master
/// becomes a replica, and fewer masters may not spread over the hosts).
fn slot_findings(c: &mut redis::Connection) -> Vec<String> {
    proxy_lines(c, &["CHECK"])
        .expect("CHECK")
        .into_iter()
        .skip(2)
        .filter(|l| !l.contains("replica") && !l.contains("host-majority"))
        .collect()
}

#[test]
fn weight_zero_drains_a_master() {
    let cluster = cluster(4, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let reference = preload(&mut c, 1000, "drain");
    let drained = cluster.nodes[0].addr();
    let before = slot_counts(&drained);
    let owned = before[&drained];

    let dry = proxy_lines(
        &mut c,
        &["REBALANCE", "SLOTS", "WEIGHT", &drained, "0", "DRYRUN"],
    )
    .expect("DRYRUN");
    assert!(
        dry[0].starts_with(&format!("DRYRUN moves {owned} slots")),
        "{dry:?}"
    );
    assert_eq!(slot_counts(&drained), before, "DRYRUN changed nothing");

    let r = proxy_lines(
        &mut c,
        &[
            "REBALANCE",
            "SLOTS",
            "WEIGHT",
            &drained,
            "0",
            "BATCH",
            "7",
            "PIPELINE",
            "2",
        ],
    )
    .expect("REBALANCE SLOTS");
    assert!(
        r[0].starts_with(&format!("OK moved {owned} slots")),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|l| l.starts_with(&format!("master {drained} weight 0 slots {owned} -> 0"))),
        "{r:?}"
    );
    // Redis 7 makes a master that gave away its last slot a replica of the node that took it.
    let counts = slot_counts(&cluster.nodes[1].addr());
    assert_eq!(counts.get(&drained).copied().unwrap_or(0), 0, "{counts:?}");
    let rest: Vec<usize> = counts.values().copied().filter(|&n| n > 0).collect();
    assert_eq!(rest.len(), 3, "{counts:?}");
    assert_eq!(rest.iter().sum::<usize>(), 16384);
    assert!(
        rest.iter().max().unwrap() - rest.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
    assert!(open_slots(&cluster.seeds()).is_empty());
    verify(&mut c, &reference);
    eventually_ok("CHECK to find nothing about slots", LIVENESS, || {
        let f = slot_findings(&mut c);
        if f.is_empty() {
            Ok(())
        } else {
            Err(format!("{f:?}"))
        }
    });

    // Progress and the metric.
    let jobs = proxy_lines(&mut c, &["JOBS"]).expect("JOBS");
    let id = jobs
        .iter()
        .rev()
        .find(|l| l.contains("rebalance-slots") && !l.contains("DRYRUN"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the job")
        .to_string();
    let job = proxy_lines(&mut c, &["JOB", &id]).expect("JOB");
    assert!(
        job.iter()
            .any(|l| l.starts_with(&format!("progress slots {owned}/{owned} keys "))),
        "{job:?}"
    );
    proxy.scrape_until("the slots moved", LIVENESS, |t| {
        metric(t, "slotproxy_admin_slots_moved_total") >= owned as f64
    });
    // Refusals name what is wrong and change nothing.
    let e = proxy_lines(&mut c, &["REBALANCE", "SLOTS", "WEIGHT", "10.9.9.9:1", "1"])
        .expect_err("unknown node");
    assert!(e.to_string().contains("names no master"), "{e}");
    let e = proxy_lines(&mut c, &["REBALANCE", "SLOTS", "THRESHOLD", "x"]).expect_err("bad");
    assert!(e.to_string().contains("THRESHOLD needs"), "{e}");
}

#[test]
fn a_run_killed_with_the_proxy_is_finished_by_running_it_again() {
    let cluster = cluster(3, 1, 0);
    let mut first = Proxy::start(&cluster);
    let mut c = first.conn();
    let mut reference = preload(&mut c, 2000, "resume");
    let extra = join_empty(&cluster, &["127.0.0.4", "127.0.0.5"]);
    let all = all_addrs(&cluster, &extra);
    // A slot of the first planned range gets 3000 keys, so that moving it one key per MIGRATE
    // takes long enough to kill the proxy in the middle of it.
    let dry = proxy_lines(&mut c, &["REBALANCE", "SLOTS", "DRYRUN"]).expect("DRYRUN");
    let (lo, hi, from, to) = first_range(&dry);
    assert!(hi - lo > 60, "{dry:?}");
    let heavy = lo + 50;
    let tag = tag_for(heavy);
    let mut heavy_keys: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|k| (format!("{{{tag}}}:{k}"), format!("h{k}").into_bytes()))
        .collect();
    for chunk in heavy_keys.chunks(500) {
        let mut p = redis::pipe();
        for (k, v) in chunk {
            p.cmd("SET").arg(k).arg(v.as_slice()).ignore();
        }
        let () = p.query(&mut c).expect("writing");
    }
    reference.append(&mut heavy_keys);

    let r = proxy_lines(
        &mut c,
        &[
            "REBALANCE",
            "SLOTS",
            "ASYNC",
            "BATCH",
            "1",
            "PIPELINE",
            "1",
            "PARALLEL",
            "1",
        ],
    )
    .expect("ASYNC");
    assert!(r[0].starts_with("OK job "), "{r:?}");
    eventually("the heavy slot to be half moved", LIVENESS, || {
        migrating_on(&from) == Some(heavy) && count_in(&to, heavy) > 0
    });
    first.signal("KILL");
    assert!(first.wait_exit(LIVENESS).is_some());
    drop(first);
    assert!(count_in(&from, heavy) > 0 && count_in(&to, heavy) > 0);
    assert_eq!(open_slots(&all).len(), 2, "{:?}", open_slots(&all));

    let second = Proxy::start(&cluster);
    let mut c = second.conn();
    // The killed proxy's lease is taken over (its process is gone); were it another
    // machine's, it would expire within its TTL, and until then a new run is told who holds it.
    let r = eventually_ok(
        "the lease to expire and the run to finish",
        Duration::from_secs(120),
        || match proxy_lines(&mut c, &["REBALANCE", "SLOTS"]) {
            Ok(r) => Ok(r),
            Err(e) if e.to_string().contains("holds the lease") => Err(e.to_string()),
            Err(e) => panic!("re-run failed: {e}"),
        },
    );
    assert!(r[0].starts_with("OK moved "), "{r:?}");
    assert!(
        r.iter()
            .any(|l| l == "resumed 1 slot(s) an interrupted run left open"),
        "{r:?}"
    );
    assert!(open_slots(&all).is_empty(), "{:?}", open_slots(&all));
    assert_eq!(count_in(&to, heavy), 3000);
    let counts = slot_counts(&all[0]);
    assert!(spread_ok(&counts), "{counts:?}");
    verify(&mut c, &reference);
    check_ok(&mut c);
}

#[test]
fn a_key_too_big_for_migrate_timeout_is_named_and_the_slot_stays_served() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let extra = join_empty(&cluster, &["127.0.0.4"]);
    let all = all_addrs(&cluster, &extra);
    // The plan's first slot gets the only key: 50 MB.
    let dry = proxy_lines(&mut c, &["REBALANCE", "SLOTS", "DRYRUN"]).expect("DRYRUN");
    let (first, _, _, _) = first_range(&dry);
    let key = format!("{{{}}}:big", tag_for(first));
    let big: Vec<u8> = (0..50_000_000u32).map(|i| (i % 251) as u8).collect();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(big.as_slice())
        .query(&mut c)
        .expect("SET big");

    let e = proxy_lines(&mut c, &["REBALANCE", "SLOTS", "MIGRATE-TIMEOUT", "1"])
        .expect_err("the big key stops the run");
    let text = e.to_string();
    assert!(text.contains(&format!("key '{key}'")), "{text}");
    assert!(text.contains("MIGRATE-TIMEOUT 1 ms"), "{text}");
    assert!(text.contains("clients are still served"), "{text}");
    let open = open_slots(&all);
    assert_eq!(
        open.len(),
        2,
        "migrating on one side, importing on the other: {open:?}"
    );
    assert!(
        open.iter().all(|o| o.contains(&format!("[{first}-"))),
        "{open:?}"
    );
    // Clients still read it.
    let got: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut c).expect("GET big");
    assert!(got == big, "the big key reads back whole");

    // Running again with the default timeout finishes (the copy the timed-out MIGRATE left
    // on the target is replaced from the source).
    let r = proxy_lines(&mut c, &["REBALANCE", "SLOTS"]).expect("re-run");
    assert!(r[0].starts_with("OK moved "), "{r:?}");
    assert!(r.iter().any(|l| l.starts_with("resumed 1 slot")), "{r:?}");
    // The timed-out MIGRATE left a copy on the target: BUSYKEY, then REPLACE from the source.
    let jobs = proxy_lines(&mut c, &["JOBS"]).expect("JOBS");
    let id = jobs
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the job")
        .to_string();
    let job = proxy_lines(&mut c, &["JOB", &id]).expect("JOB");
    assert!(
        job.iter()
            .any(|l| l.contains("sending them again with REPLACE")),
        "{job:?}"
    );
    assert!(open_slots(&all).is_empty());
    let got: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut c).expect("GET big");
    assert!(got == big, "the big key reads back whole after the move");
    check_ok(&mut c);
}

#[test]
fn keys_move_with_the_proxys_acl_login() {
    let cluster = cluster(4, 1, 0);
    // Nodes that accept only the ACL user `proxy`: every MIGRATE must log in with AUTH2.
    for i in 0..cluster.nodes.len() {
        cluster
            .command(
                i,
                &["ACL", "SETUSER", "proxy", "on", ">pw", "~*", "&*", "+@all"],
            )
            .expect("ACL SETUSER proxy");
        cluster
            .command(i, &["ACL", "SETUSER", "default", "off"])
            .expect("ACL SETUSER default off");
    }
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "backend_user = \"proxy\"\nbackend_password = \"pw\"",
        true,
    );
    let mut c = proxy.conn();
    let reference = preload(&mut c, 1000, "acl");
    let drained = cluster.nodes[0].addr();
    let r = proxy_lines(&mut c, &["REBALANCE", "SLOTS", "WEIGHT", &drained, "0"])
        .expect("REBALANCE SLOTS");
    assert!(r[0].starts_with("OK moved "), "{r:?}");
    assert!(
        r.iter().any(
            |l| l.starts_with(&format!("master {drained} weight 0 slots ")) && l.contains("-> 0 ")
        ),
        "{r:?}"
    );
    verify(&mut c, &reference);
}

#[test]
fn remove_nodes_drains_a_master_that_owns_slots() {
    let cluster = cluster(4, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let reference = preload(&mut c, 1000, "remove");
    let gone = cluster.nodes[0].addr();
    let owned = slot_counts(&gone)[&gone];
    let dry = proxy_lines(&mut c, &["REMOVE", "NODES", &gone, "DRYRUN"]).expect("DRYRUN");
    assert!(
        dry.iter()
            .any(|l| l == &format!("step drain every slot off {gone}")),
        "{dry:?}"
    );
    let r = proxy_lines(&mut c, &["REMOVE", "NODES", &gone]).expect("REMOVE NODES");
    assert!(r[0].starts_with("OK removed 1 node(s)"), "{r:?}");
    let staying: Vec<String> = cluster.seeds()[1..].to_vec();
    let counts = slot_counts(&staying[0]);
    assert!(!counts.contains_key(&gone), "{counts:?}");
    let rest: Vec<usize> = counts.values().copied().collect();
    assert_eq!(rest.len(), 3, "{counts:?}");
    assert_eq!(rest.iter().sum::<usize>(), 16384);
    assert!(
        rest.iter().max().unwrap() - rest.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
    assert!(open_slots(&staying).is_empty());
    verify(&mut c, &reference);
    proxy.scrape_until("the slots moved", LIVENESS, |t| {
        metric(t, "slotproxy_admin_slots_moved_total") >= owned as f64
    });
}

#[test]
fn a_remove_interrupted_after_its_drain_is_finished_without_force() {
    let cluster = cluster(4, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let reference = preload(&mut c, 500, "irem");
    let gone = cluster.nodes[0].addr();
    let gone_id = parse_cluster_nodes(&nodes_text(&gone), "")
        .expect("CLUSTER NODES")
        .into_iter()
        .find(|l| l.has("myself"))
        .expect("its own line")
        .id;
    // What a REMOVE interrupted between its drain and FORGET leaves: the master drained (Redis
    // made it the replica of the master that took its last slot, which had none).
    let r = proxy_lines(&mut c, &["REBALANCE", "SLOTS", "WEIGHT", &gone, "0"]).expect("drain");
    assert!(r[0].starts_with("OK moved "), "{r:?}");
    eventually("the drained master to be a replica", LIVENESS, || {
        nodes_text(&gone)
            .lines()
            .any(|l| l.contains("myself") && l.contains("slave"))
    });
    let e = proxy_lines(&mut c, &["REMOVE", "NODES", &gone]).expect_err("last replica");
    assert!(e.to_string().contains("is the last replica"), "{e}");
    // The remove note the interrupted run kept names it: the re-run finishes without FORCE.
    let () = redis::cmd("SET")
        .arg("{slotproxy:lease:rebalance}:removing")
        .arg(&gone_id)
        .query(&mut c)
        .expect("SET note");
    let r = proxy_lines(&mut c, &["REMOVE", "NODES", &gone]).expect("REMOVE NODES");
    assert!(r[0].starts_with("OK removed 1 node(s)"), "{r:?}");
    assert!(
        r.iter()
            .any(|l| l.starts_with(&format!("note {gone} is a replica only"))),
        "{r:?}"
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg("{slotproxy:lease:rebalance}:removing")
        .query(&mut c)
        .expect("EXISTS");
    assert_eq!(exists, 0, "the finished run deletes the note");
    let staying: Vec<String> = cluster.seeds()[1..].to_vec();
    let counts = slot_counts(&staying[0]);
    assert!(!counts.contains_key(&gone), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 16384);
    verify(&mut c, &reference);
}
