//! Two proxies in one process keep their metrics apart: each `/metrics` shows only the
//! traffic, refreshes and admin jobs of the proxy that serves it. Embedders (and tests) run
//! several proxies through the library API; a process-wide registry would make their counters
//! overwrite each other (or refuse to start the second proxy's exporter at all).
//!
//! Both proxies run through `slotproxy::server::serve`, each on its own thread and runtime, in
//! front of one real local cluster. No assertion depends on timing: the test polls for the
//! counts it waits for with a generous deadline, then checks them exactly.

mod common;

use common::*;
use redis::Commands;
use std::time::Duration;

/// An in-process proxy with its own metrics endpoint.
struct InProcess {
    proxy: InProcessProxy,
    metrics: String,
}

impl InProcess {
    /// Starts a proxy with its own metrics endpoint and waits until it serves every slot.
    fn start(seeds: Vec<String>) -> InProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        let proxy = InProcessProxy::start(slotproxy::config::Config {
            listen: "127.0.0.1:0".into(),
            seeds,
            workers: 2,
            metrics_listen: metrics.clone(),
            ..Default::default()
        });
        let mut c = proxy.conn();
        eventually(
            "the proxy to serve every slot",
            Duration::from_secs(30),
            || serves_all_slots(&mut c),
        );
        InProcess { proxy, metrics }
    }

    fn conn(&self) -> redis::Connection {
        self.proxy.conn()
    }

    fn scrape(&self) -> String {
        http_get(&self.metrics, "/metrics")
    }
}

/// The sum of every series of `family` whose labels start with `prefix` (e.g.
/// `trigger="start"`).
fn sum_series(text: &str, family: &str, prefix: &str) -> f64 {
    let head = format!("{family}{{{prefix}");
    text.lines()
        .filter(|l| l.starts_with(&head))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn two_proxies_in_one_process_each_export_their_own_counts() {
    let cluster = cluster(3, 1, 0);
    let a = InProcess::start(cluster.seeds());
    let b = InProcess::start(cluster.seeds());
    const N: usize = 7;
    const M: usize = 12;
    let mut ca = a.conn();
    for i in 0..N {
        let _: Option<String> = ca.get(format!("two:a:{i}")).expect("GET through A");
    }
    let mut cb = b.conn();
    for i in 0..M {
        let _: Option<String> = cb.get(format!("two:b:{i}")).expect("GET through B");
    }
    // An admin job on A only.
    let _ = proxy_cmd(&mut ca, &["CHECK"]).expect("PROXY CHECK through A");

    let get = "slotproxy_commands_total{command=\"get\"}";
    let jobs = "slotproxy_admin_jobs_total{engine=\"check\",result=\"done\"}";
    let mut text_a = String::new();
    eventually(
        "A's scrape to show its GETs and its job",
        Duration::from_secs(30),
        || {
            text_a = a.scrape();
            metric(&text_a, get) >= N as f64 && metric(&text_a, jobs) >= 1.0
        },
    );
    let mut text_b = String::new();
    eventually(
        "B's scrape to show its GETs",
        Duration::from_secs(30),
        || {
            text_b = b.scrape();
            metric(&text_b, get) >= M as f64
        },
    );
    // Both flushes have run since the traffic: a shared registry would now show one
    // proxy's counts through both endpoints.
    text_a = a.scrape();
    assert_eq!(metric(&text_a, get), N as f64, "A's scrape:\n{text_a}");
    assert_eq!(metric(&text_b, get), M as f64, "B's scrape:\n{text_b}");
    assert_eq!(metric(&text_a, jobs), 1.0, "A's scrape:\n{text_a}");
    assert!(
        !text_b.contains("slotproxy_admin_jobs_total"),
        "B ran no admin job:\n{text_b}"
    );
    // Each proxy made exactly one start-up refresh of its own.
    for (name, text) in [("A", &text_a), ("B", &text_b)] {
        assert_eq!(
            sum_series(
                text,
                "slotproxy_topology_refreshes_total",
                "trigger=\"start\""
            ),
            1.0,
            "{name}'s scrape:\n{text}"
        );
    }
    drop(a);
    drop(b);
    drop(cluster);
}
