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
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

/// A proxy run by the library API on its own thread; stopped (and joined) when dropped.
struct InProcess {
    addr: SocketAddr,
    metrics: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Starts a proxy with its own metrics endpoint; panics with the proxy's error if it
    /// does not come up.
    fn start(seeds: Vec<String>) -> InProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        let config = slotproxy::config::Config {
            listen: "127.0.0.1:0".into(),
            seeds,
            workers: 2,
            metrics_listen: metrics.clone(),
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("building a runtime: {e}")));
                    return;
                }
            };
            let on_ready = {
                let ready_tx = ready_tx.clone();
                move |r: &slotproxy::server::Running| {
                    let _ = ready_tx.send(Ok(r.addr));
                }
            };
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = rt.block_on(slotproxy::server::serve(config, shutdown, on_ready)) {
                // Only read when the proxy never became ready.
                let _ = ready_tx.send(Err(format!("{e:#}")));
            }
        });
        let addr = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("the proxy did not start: {e}"),
            Err(e) => panic!("the proxy did not report ready: {e}"),
        };
        let proxy = InProcess {
            addr,
            metrics,
            stop: Some(stop),
            thread: Some(thread),
        };
        let mut c = proxy.conn();
        eventually(
            "the proxy to serve every slot",
            Duration::from_secs(30),
            || serves_all_slots(&mut c),
        );
        proxy
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.addr))
            .and_then(|c| c.get_connection())
            .expect("connecting to an in-process proxy")
    }

    fn scrape(&self) -> String {
        http_get(&self.metrics, "/metrics")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
