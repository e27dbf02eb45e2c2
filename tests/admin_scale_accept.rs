//! Issue 15's acceptance tests, against real redis-server clusters on 127.0.0.x "hosts" and the
//! real proxy binary: a 3x1 cluster (three masters, one replica each) holding 50,000 keys is
//! scaled out by two shards, rebalanced, scaled in by one original shard and rebalanced again
//! while 20 clients write and read through the proxy; and the same scale-out is finished by
//! re-running it after the proxy was SIGKILLed at random points three times.
//!
//! The data set ([`size_of`]): 50,000 keys, of which
//! - 200 large ones (every 250th key) of 64 KiB, 128 KiB, 256 KiB, 512 KiB or 1 MiB (about 80 MB
//!   in all),
//! - 1,000 of 10 KB (every 50th key, offset 1; 10 MB),
//! - and the other 48,800 of 100 B to 1,000 B (about 27 MB),
//!
//! so that a MIGRATE batch meets values from 100 B to 1 MiB while the whole set (and its
//! replicas) stays near 250 MB of memory. Values are computed from (key number, version), so
//! the reference the test keeps is one version number per key, not a copy of the data.

mod common;
mod slots_helpers;

use common::*;
use slotproxy::admin::localcluster::LocalCluster;
use slotproxy::cluster::{parse_cluster_nodes, NodeLine};
use slots_helpers::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys in the data set.
const KEYS: usize = 50_000;
/// Client threads writing and reading through the proxy.
const CLIENTS: usize = 20;

/// Key `i`'s value size (see the module comment for the distribution).
fn size_of(i: usize) -> usize {
    if i.is_multiple_of(250) {
        (64 << 10) << ((i / 250) % 5)
    } else if i % 50 == 1 {
        10_000
    } else {
        100 + (i * 37) % 901
    }
}

fn key(i: usize) -> String {
    format!("acc:{i}")
}

/// Key `i`'s value at `version` (0 is the preloaded one).
fn value(i: usize, version: u32) -> Vec<u8> {
    format!("{i}.{version}|")
        .bytes()
        .cycle()
        .take(size_of(i))
        .collect()
}

/// Writes every key at version 0 through the proxy, in pipelines of about 1 MB.
fn preload_all(c: &mut redis::Connection) {
    let mut i = 0;
    while i < KEYS {
        let mut p = redis::pipe();
        let mut bytes = 0;
        while i < KEYS && bytes < 1 << 20 {
            p.cmd("SET").arg(key(i)).arg(value(i, 0)).ignore();
            bytes += size_of(i);
            i += 1;
        }
        let () = p.query(c).expect("preloading");
    }
}

/// Reads every key back through the proxy and compares it with `versions` (absent: 0).
fn verify_all(c: &mut redis::Connection, versions: &HashMap<usize, u32>) {
    for start in (0..KEYS).step_by(100) {
        let end = (start + 100).min(KEYS);
        let mut p = redis::pipe();
        for i in start..end {
            p.cmd("GET").arg(key(i));
        }
        let got: Vec<Option<Vec<u8>>> = p.query(c).expect("reading back");
        for (i, g) in (start..end).zip(got) {
            let v = versions.get(&i).copied().unwrap_or(0);
            assert!(
                g.as_deref() == Some(value(i, v).as_slice()),
                "key {} lost or changed (expected version {v}, got {} bytes)",
                key(i),
                g.map_or(0, |g| g.len())
            );
        }
    }
}

/// A small deterministic generator (xorshift64*), seeded per test run and printed so that a
/// failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    let s = std::env::var("ACCEPT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1;
    eprintln!("ACCEPT_SEED={s}");
    s
}

/// Client threads through the proxy. Client `t` owns the keys `i` with `i % CLIENTS == t`
/// and is their only writer, so its reference (a version per key) is exact: it overwrites a
/// random key of its own with the next version, or reads one back and compares. Every error
/// and mismatch is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<HashMap<usize, u32>>>,
}

impl Load {
    fn start(proxy: &Proxy, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..CLIENTS)
            .map(|t| {
                let (stop, ops, errors) =
                    (Arc::clone(&stop), Arc::clone(&ops), Arc::clone(&errors));
                let mut c = proxy.conn();
                c.set_read_timeout(Some(Duration::from_secs(60)))
                    .expect("read timeout");
                let mut rng = Rng(seed.wrapping_add(t as u64 * 7919) | 1);
                std::thread::spawn(move || {
                    let mut versions: HashMap<usize, u32> = HashMap::new();
                    let fail = |e: String| {
                        let mut v = errors.lock().unwrap_or_else(|e| e.into_inner());
                        if v.len() < 20 {
                            v.push(e);
                        }
                    };
                    let started = Instant::now();
                    // Bounded in time even if the test never says stop.
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(900)
                    {
                        let i = t + CLIENTS * rng.below((KEYS / CLIENTS) as u64) as usize;
                        let now = versions.get(&i).copied().unwrap_or(0);
                        if rng.below(3) == 0 {
                            let v = now + 1;
                            match redis::cmd("SET")
                                .arg(key(i))
                                .arg(value(i, v))
                                .query::<()>(&mut c)
                            {
                                Ok(()) => {
                                    versions.insert(i, v);
                                }
                                Err(e) => fail(format!("SET {}: {e}", key(i))),
                            }
                        } else {
                            match redis::cmd("GET")
                                .arg(key(i))
                                .query::<Option<Vec<u8>>>(&mut c)
                            {
                                Ok(Some(got)) if got == value(i, now) => {}
                                Ok(got) => fail(format!(
                                    "GET {}: not version {now} ({} bytes)",
                                    key(i),
                                    got.map_or(0, |g| g.len())
                                )),
                                Err(e) => fail(format!("GET {}: {e}", key(i))),
                            }
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    versions
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

    fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the clients: (operations, errors, every key's version).
    fn finish(mut self) -> (u64, Vec<String>, HashMap<usize, u32>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut versions = HashMap::new();
        for t in std::mem::take(&mut self.threads) {
            versions.extend(t.join().expect("client thread"));
        }
        let errors = self.errors();
        (self.ops.load(Ordering::Relaxed), errors, versions)
    }
}

/// `addr`'s CLUSTER NODES.
fn view_at(addr: &str) -> Vec<NodeLine> {
    let ip = addr.rsplit_once(':').map_or(addr, |x| x.0);
    parse_cluster_nodes(&nodes_text(addr), ip).expect("CLUSTER NODES")
}

/// The placement rule on `addr`'s view: every replica on another host than its master's.
fn placement_violations(addr: &str) -> Vec<String> {
    let lines = view_at(addr);
    lines
        .iter()
        .filter(|r| !r.is_master())
        .filter_map(|r| {
            let m = lines.iter().find(|m| Some(&m.id) == r.master_id.as_ref())?;
            (m.ip == r.ip)
                .then(|| format!("replica {} on its master {}'s host", r.addr(), m.addr()))
        })
        .collect()
}

/// Asserts the placement rule on every node in `addrs` (views settle within gossip time).
fn assert_placement(addrs: &[String], step: &str) {
    for a in addrs {
        eventually_ok(&format!("placement after {step}"), LIVENESS, || {
            let v = placement_violations(a);
            if v.is_empty() {
                Ok(())
            } else {
                Err(format!("{a}: {v:?}"))
            }
        });
    }
}

/// Masters per host on `addr`'s view (every host listed, also those with none).
fn masters_per_host(addr: &str) -> BTreeMap<String, usize> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for l in view_at(addr) {
        *per.entry(l.ip.clone()).or_insert(0) += usize::from(l.is_master());
    }
    per
}

/// Slots per master that owns any, on `addr`'s view.
fn owners(addr: &str) -> BTreeMap<String, usize> {
    slot_counts(addr)
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn run(c: &mut redis::Connection, words: &[&str]) -> Vec<String> {
    proxy_lines(c, words).unwrap_or_else(|e| panic!("PROXY {words:?}: {e}"))
}

fn add_words(new: &LocalCluster) -> Vec<String> {
    let mut w: Vec<String> = ["ADD", "REPLICAS", "1", "NODES"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    w.extend(new.seeds());
    w
}

fn refs(w: &[String]) -> Vec<&str> {
    w.iter().map(String::as_str).collect()
}

/// Two new hosts with two empty nodes each: two shards of one master and one replica.
fn two_new_hosts() -> LocalCluster {
    let hosts = [("127.0.0.4".to_string(), 2), ("127.0.0.5".to_string(), 2)];
    LocalCluster::start_empty(&hosts, 1000, &redis_server()).expect("starting empty nodes")
}

#[test]
fn add_rebalance_remove_rebalance_under_load_loses_nothing() {
    let seed = seed();
    let orig = cluster(3, 2, 1);
    let proxy = Proxy::start(&orig);
    let mut c = proxy.conn();
    preload_all(&mut c);
    let new = two_new_hosts();
    let load = Load::start(&proxy, seed);

    // ADD two shards on the new hosts: one master per host, replicas off their masters' hosts.
    let out = run(&mut c, &refs(&add_words(&new)));
    assert!(
        out[0].starts_with("OK added 2 master(s), 2 replica(s)"),
        "{out:?}"
    );
    let everyone: Vec<String> = orig.seeds().into_iter().chain(new.seeds()).collect();
    assert_placement(&everyone, "ADD");
    let per_host = masters_per_host(&everyone[0]);
    assert_eq!(
        per_host.values().copied().collect::<Vec<_>>(),
        vec![1; 5],
        "{per_host:?}"
    );

    // REBALANCE SLOTS to even: five masters within 1% of each other.
    let out = run(&mut c, &["REBALANCE", "SLOTS"]);
    assert!(out[0].starts_with("OK moved "), "{out:?}");
    let counts = owners(&everyone[0]);
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(spread_ok(&counts), "{counts:?}");
    assert!(
        open_slots(&everyone).is_empty(),
        "{:?}",
        open_slots(&everyone)
    );
    assert_placement(&everyone, "REBALANCE SLOTS");

    // REMOVE one original master with its replica.
    let lines = view_at(&orig.seeds()[0]);
    let gone = lines
        .iter()
        .find(|l| l.is_master() && l.ip == "127.0.0.1")
        .expect("the master on host 1")
        .clone();
    let gone_replica = lines
        .iter()
        .find(|l| l.master_id.as_deref() == Some(gone.id.as_str()))
        .expect("its replica")
        .clone();
    let out = run(
        &mut c,
        &["REMOVE", "NODES", &gone.addr(), &gone_replica.addr()],
    );
    assert!(out[0].starts_with("OK removed 2 node(s)"), "{out:?}");
    let staying: Vec<String> = everyone
        .iter()
        .filter(|a| **a != gone.addr() && **a != gone_replica.addr())
        .cloned()
        .collect();
    assert_placement(&staying, "REMOVE NODES");
    for a in &staying {
        let listed: Vec<String> = view_at(a).iter().map(NodeLine::addr).collect();
        assert!(
            !listed.contains(&gone.addr()) && !listed.contains(&gone_replica.addr()),
            "{a} still lists a removed node: {listed:?}"
        );
    }

    // REBALANCE again: four masters within 1%.
    let out = run(&mut c, &["REBALANCE", "SLOTS"]);
    assert!(
        out[0].starts_with("OK moved ") || out[0].starts_with("NOTHING TO DO"),
        "{out:?}"
    );
    let counts = owners(&staying[0]);
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(spread_ok(&counts), "{counts:?}");
    assert!(
        open_slots(&staying).is_empty(),
        "{:?}",
        open_slots(&staying)
    );
    assert_placement(&staying, "the second REBALANCE SLOTS");

    let (ops, errors, versions) = load.finish();
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    assert!(ops > 0);
    eprintln!("{ops} client operations, {} keys rewritten", versions.len());
    verify_all(&mut c, &versions);
    // The proxy's seeds still name the removed nodes: CHECK finds nothing but that, and a
    // proxy whose seeds are the nodes that stay finds nothing at all.
    let removed = [gone.addr(), gone_replica.addr()];
    eventually_ok("CHECK to find only the removed seeds", LIVENESS, || {
        let r = proxy_lines(&mut c, &["CHECK"]).map_err(|e| e.to_string())?;
        let other: Vec<&String> = r
            .iter()
            .skip(2)
            .filter(|l| {
                !(l.starts_with("WARN outsider ") && removed.iter().any(|a| l.contains(a.as_str())))
            })
            .collect();
        if r[0] == "ERRORS 0 WARNINGS 2" && other.is_empty() {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    let fresh = Proxy::start_with(&staying, "", true);
    check_ok(&mut fresh.conn());
}

/// When [`kill_during`] kills the proxy.
enum KillAt {
    /// A random time below this many milliseconds after the job started.
    Millis(u64),
    /// Once the job reports a random number of slots moved, from 1 to 40% of its plan (of
    /// the planned moves, not of the open slots a re-run finishes first).
    SlotsMoved,
}

/// `(slots moved, slots planned)` from a job's `progress slots d/t ...` line.
fn slots_progress(job: &[String]) -> Option<(u64, u64)> {
    let rest = job.iter().find_map(|l| l.strip_prefix("progress slots "))?;
    let (d, t) = rest.split_whitespace().next()?.split_once('/')?;
    Some((d.parse().ok()?, t.parse().ok()?))
}

/// Starts `words` as a job, lets it run until `at`, then SIGKILLs the proxy and starts a new
/// one in front of the same cluster.
fn kill_during(
    orig: &LocalCluster,
    everyone: &[String],
    proxy: Proxy,
    words: &[&str],
    rng: &mut Rng,
    at: KillAt,
) -> Proxy {
    let mut proxy = proxy;
    let mut c = proxy.conn();
    let mut w = words.to_vec();
    w.push("ASYNC");
    let out = run(&mut c, &w);
    let job = out[0]
        .strip_prefix("OK job ")
        .expect("a job id")
        .to_string();
    let mut target = None;
    match at {
        KillAt::Millis(window) => {
            std::thread::sleep(Duration::from_millis(rng.below(window)));
        }
        KillAt::SlotsMoved => {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let state = run(&mut c, &["JOB", &job]);
                if !state[0].contains(" running ") {
                    break;
                }
                // (A re-run first finishes the slots the last one left open: a short list.)
                if let Some((done, total)) = slots_progress(&state).filter(|p| p.1 > 50) {
                    let t = *target.get_or_insert_with(|| 1 + rng.below(total * 2 / 5));
                    if done >= t {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    // The job ran (or is running): it was not refused for the lease the last proxy held.
    let state = run(&mut c, &["JOB", &job]);
    assert!(
        !state.iter().any(|l| l.contains("holds the lease")),
        "{state:?}"
    );
    proxy.signal("KILL");
    assert!(proxy.wait_exit(LIVENESS).is_some(), "the proxy did not die");
    eprintln!(
        "killed the proxy during {:?} at {:?} (target {target:?}); open: {:?}",
        words[..2].join(" "),
        slots_progress(&state),
        open_slots(everyone)
    );
    drop(proxy);
    Proxy::start(orig)
}

/// Runs `words` to the end on `proxy`, right after another proxy was killed in the middle of
/// it: the re-run takes over the dead proxy's lease instead of waiting for it to expire.
fn rerun(proxy: &Proxy, words: &[&str]) -> Vec<String> {
    let mut c = proxy.conn();
    let out = run(&mut c, words);
    assert!(
        out[0].starts_with("OK ") || out[0].starts_with("NOTHING TO DO"),
        "{out:?}"
    );
    out
}

#[test]
fn add_and_rebalance_finish_after_three_proxy_kills() {
    let mut rng = Rng(seed());
    let orig = cluster(3, 2, 1);
    let mut proxy = Proxy::start(&orig);
    preload_all(&mut proxy.conn());
    let new = two_new_hosts();
    let everyone: Vec<String> = orig.seeds().into_iter().chain(new.seeds()).collect();
    let add = add_words(&new);
    let add = refs(&add);
    let rebalance = ["REBALANCE", "SLOTS"];

    // Kill 1 during ADD; the re-run finishes it.
    proxy = kill_during(
        &orig,
        &everyone,
        proxy,
        &add,
        &mut rng,
        KillAt::Millis(1500),
    );
    let out = rerun(&proxy, &add);
    assert!(
        out[0].starts_with("OK added") || out[0].starts_with("NOTHING TO DO"),
        "{out:?}"
    );
    assert_placement(&everyone, "ADD");
    assert_eq!(view_at(&everyone[0]).len(), 10);

    // Kills 2 and 3 during REBALANCE SLOTS; the re-run finishes it.
    for _ in 0..2 {
        proxy = kill_during(
            &orig,
            &everyone,
            proxy,
            &rebalance,
            &mut rng,
            KillAt::SlotsMoved,
        );
    }
    rerun(&proxy, &rebalance);

    let mut c = proxy.conn();
    let again = run(&mut c, &rebalance);
    assert!(again[0].starts_with("NOTHING TO DO"), "{again:?}");
    let counts = owners(&everyone[0]);
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(spread_ok(&counts), "{counts:?}");
    assert!(
        open_slots(&everyone).is_empty(),
        "{:?}",
        open_slots(&everyone)
    );
    assert_placement(&everyone, "REBALANCE SLOTS");
    verify_all(&mut c, &HashMap::new());
    check_ok(&mut c);
}
