//! Test harness: real redis-server clusters (through the crate's own renderer and launcher) and
//! the real `slotproxy` binary, stopped by PID when the test ends, even on panic.

#![allow(dead_code)]

use slotproxy::admin::localcluster::{LocalCluster, LocalClusterSpec};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cluster of `hosts` x `per_host` nodes with `replicas` replicas per master, on 127.0.0.1..
pub fn cluster(hosts: usize, per_host: usize, replicas: usize) -> LocalCluster {
    cluster_with_timeout(hosts, per_host, replicas, 1000)
}

/// Like [`cluster`], with a chosen cluster-node-timeout. A long timeout keeps Redis from
/// declaring a stopped or killed node failed (and, without replicas, the whole cluster down)
/// while a test looks at how the proxy alone deals with it.
pub fn cluster_with_timeout(
    hosts: usize,
    per_host: usize,
    replicas: usize,
    node_timeout_ms: u64,
) -> LocalCluster {
    let spec = LocalClusterSpec {
        hosts: (1..=hosts).map(|i| format!("127.0.0.{i}")).collect(),
        nodes_per_host: per_host,
        replicas,
        node_timeout_ms,
        redis_server: std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
    };
    LocalCluster::start(&spec).expect("starting a local cluster")
}

/// Calls `f` until it returns `Ok`, pausing between tries (20 ms at first, growing to 200 ms);
/// `f`'s last `Err` once `timeout` has passed. The bound is for liveness, never a timing
/// assertion: choose it generously.
pub fn retry_until<T, E>(timeout: Duration, mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 3 / 2).min(Duration::from_millis(200));
    }
}

/// Polls `f` until it returns true; after `timeout`, fails the test naming `what` (e.g. "the
/// node to be marked down").
#[track_caller]
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    if retry_until(timeout, || if f() { Ok(()) } else { Err(()) }).is_err() {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Polls `f` until it returns `Ok`, and returns its value; after `timeout`, fails the test
/// naming `what` and showing the last `Err` (the state the test was waiting to change).
#[track_caller]
pub fn eventually_ok<T, E: std::fmt::Display>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Result<T, E>,
) -> T {
    match retry_until(timeout, f) {
        Ok(v) => v,
        Err(e) => panic!("timed out after {timeout:?} waiting for {what}; last: {e}"),
    }
}

/// Sends `PROXY <args...>` and returns the reply as it came.
pub fn proxy_cmd(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    proxy_query(c, args)
}

/// Sends `PROXY <args...>` and converts the reply (e.g. to `Vec<String>` for the line-list
/// replies of PROXY INFO, SLOTS, CHECK, CONFIG GET).
pub fn proxy_query<T: redis::FromRedisValue>(
    c: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd("PROXY");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query(c)
}

/// Sends `PROXY <args...>` and returns its reply as lines (PROXY INFO, SLOTS, CHECK, JOBS...).
pub fn proxy_lines(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Vec<String>> {
    proxy_query(c, args)
}

/// `PROXY CONFIG GET <name>`: the value of that one setting.
pub fn proxy_config_get(c: &mut redis::Connection, name: &str) -> String {
    let v: Vec<String> = proxy_query(c, &["CONFIG", "GET", name]).expect("PROXY CONFIG GET");
    assert_eq!(v.len(), 2, "PROXY CONFIG GET {name}: {v:?}");
    v[1].clone()
}

/// Whether PROXY SLOTS on this connection says every slot is served.
pub fn serves_all_slots(c: &mut redis::Connection) -> bool {
    proxy_query::<Vec<String>>(c, &["SLOTS"])
        .is_ok_and(|l| l.first().is_some_and(|f| f.contains("slots 16384 ")))
}

/// Starts the `slotproxy` binary on config file `cfg`, its log (stderr) to `log`.
fn spawn_proxy(cfg: &std::path::Path, log: std::fs::File) -> Child {
    Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .arg("--config")
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawning slotproxy")
}

/// A running proxy process.
pub struct Proxy {
    child: Child,
    /// `127.0.0.1:port`
    pub addr: String,
    pub port: u16,
    /// The Prometheus endpoint's port (0 when the test turned metrics off or chose its own).
    pub metrics_port: u16,
    /// The proxy's config file (tests of SIGHUP and CONFIG REWRITE change it).
    pub config_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    l.local_addr().expect("local addr").port()
}

impl Proxy {
    /// Starts the proxy with these seeds and extra TOML settings, and waits until it serves
    /// every slot (when `wait_slots`).
    pub fn start_with(seeds: &[String], toml: &str, wait_slots: bool) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let cfg = dir.path().join("proxy.toml");
        let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
        // Every proxy of a test run gets its own metrics port, unless the test sets one.
        let (metrics_port, metrics_line) = if toml.contains("metrics_listen") {
            (0, String::new())
        } else {
            let p = free_port();
            (p, format!("metrics_listen = \"127.0.0.1:{p}\"\n"))
        };
        // Two workers, so that clients spread over threads, unless the test says otherwise.
        let workers = if toml.contains("workers") {
            ""
        } else {
            "workers = 2\n"
        };
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{port}\"\nseeds = [{}]\n{workers}log_level = \"warn\"\n{metrics_line}{toml}\n",
                seeds.join(", ")
            ),
        )
        .expect("writing proxy config");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("log file");
        let child = spawn_proxy(&cfg, log);
        let proxy = Proxy {
            child,
            addr: format!("127.0.0.1:{port}"),
            port,
            metrics_port,
            config_path: cfg,
            _dir: dir,
        };
        proxy.wait_ready(wait_slots);
        proxy
    }

    /// Waits until the proxy answers (and, when `wait_slots`, serves every slot); fails the
    /// test with its log otherwise.
    fn wait_ready(&self, wait_slots: bool) {
        let ready = retry_until(Duration::from_secs(20), || {
            let mut c = self.try_conn().map_err(|e| e.to_string())?;
            if !wait_slots || serves_all_slots(&mut c) {
                Ok(())
            } else {
                Err("not every slot is served".to_string())
            }
        });
        if let Err(e) = ready {
            panic!("proxy did not become ready ({e}): {}", self.log());
        }
    }

    /// Kills the process and starts it again from its config file as the file is now (what
    /// `PROXY CONFIG REWRITE` wrote, say), on the same ports; returns once it serves every
    /// slot. The log goes on in the same file.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self._dir.path().join("proxy.log"))
            .expect("log file");
        self.child = spawn_proxy(&self.config_path, log);
        self.wait_ready(true);
    }

    /// Starts the proxy in front of `cluster` with default settings.
    pub fn start(cluster: &LocalCluster) -> Proxy {
        Proxy::start_with(&cluster.seeds(), "", true)
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://{}/", self.addr))?.get_connection()
    }

    /// A fresh client connection.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("connecting to the proxy")
    }

    /// A raw TCP connection, for protocol-level tests.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("raw connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The proxy's process ID (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the proxy (by its PID).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {} failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit; its exit code, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        retry_until(timeout, || match self.child.try_wait() {
            Ok(Some(status)) => Ok(status.code().unwrap_or(-1)),
            _ => Err(()),
        })
        .ok()
    }

    /// The Prometheus text the proxy serves now.
    pub fn scrape(&self) -> String {
        http_get(&format!("127.0.0.1:{}", self.metrics_port), "/metrics")
    }

    /// Scrapes until `done` holds for the text (the proxy rewrites its metrics about once a
    /// second); that text. After `timeout`, fails naming `what` and showing the last scrape.
    #[track_caller]
    pub fn scrape_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        eventually_ok(&format!("the metrics to show {what}"), timeout, || {
            let text = self.scrape();
            if done(&text) {
                Ok(text)
            } else {
                Err(format!("\n{text}"))
            }
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A direct connection to node `index` of the cluster.
pub fn node_conn(cluster: &LocalCluster, index: usize) -> redis::Connection {
    let n = &cluster.nodes[index];
    redis::Client::open(format!("redis://{}:{}/", n.ip, n.port))
        .and_then(|c| c.get_connection())
        .expect("connecting to a node")
}

/// The connection name a CREATE or ADD of another proxy gives its claim on a node.
pub const HELD_CLAIM: &str = "slotproxy-claim:create:127.0.0.9:1:pid1:job1";

/// A connection to node `index` named as another proxy's CREATE names its claim
/// ([`HELD_CLAIM`]), as that CREATE would hold it while it runs; and its client ID there.
pub fn hold_claim(cluster: &LocalCluster, index: usize) -> (redis::Connection, i64) {
    let mut c = node_conn(cluster, index);
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(HELD_CLAIM)
        .query::<()>(&mut c)
        .expect("CLIENT SETNAME");
    let id = redis::cmd("CLIENT")
        .arg("ID")
        .query(&mut c)
        .expect("CLIENT ID");
    (c, id)
}

/// The index of the master that owns `slot`, according to node `asked`.
pub fn owner_of(cluster: &LocalCluster, asked: usize, slot: u16) -> usize {
    let text = cluster.nodes_text(asked);
    let lines = slotproxy::cluster::parse_cluster_nodes(&text, "").expect("CLUSTER NODES");
    let owner = lines
        .iter()
        .find(|l| l.is_master() && l.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
        .expect("slot owner");
    cluster
        .nodes
        .iter()
        .position(|n| n.node_id == owner.id)
        .expect("owner among our nodes")
}

/// Extension: CLUSTER NODES text of one node.
pub trait NodesText {
    fn nodes_text(&self, index: usize) -> String;
}

impl NodesText for LocalCluster {
    fn nodes_text(&self, index: usize) -> String {
        self.command(index, &["CLUSTER", "NODES"])
            .expect("CLUSTER NODES")
    }
}

/// Sends raw bytes and reads until the proxy closes the connection or `timeout` passes.
pub fn raw_exchange(s: &mut TcpStream, bytes: &[u8], timeout: Duration) -> (String, bool) {
    s.set_read_timeout(Some(timeout)).ok();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Reads one line (a simple reply) from a raw connection.
pub fn read_line(s: &TcpStream) -> String {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let _ = r.read_line(&mut line);
    line
}

/// Moves `slot` from `src` to `dst` the way `redis-cli --cluster reshard` does, a few keys at
/// a time (the steps of `data_path.rs::slot_migration_is_invisible_to_clients`).
pub fn migrate_slot(
    cluster: &slotproxy::admin::localcluster::LocalCluster,
    slot: u16,
    src: usize,
    dst: usize,
) {
    let (src_id, dst_id) = (
        cluster.nodes[src].node_id.clone(),
        cluster.nodes[dst].node_id.clone(),
    );
    let s = slot.to_string();
    cluster
        .command(dst, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id])
        .expect("IMPORTING");
    cluster
        .command(src, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id])
        .expect("MIGRATING");
    let dst_node = &cluster.nodes[dst];
    let port = dst_node.port.to_string();
    loop {
        let keys = cluster
            .command(src, &["CLUSTER", "GETKEYSINSLOT", &s, "5"])
            .expect("GETKEYSINSLOT");
        let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let mut args = vec!["MIGRATE", &dst_node.ip, &port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        cluster.command(src, &args).expect("MIGRATE");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..cluster.nodes.len() {
        cluster
            .command(i, &["CLUSTER", "SETSLOT", &s, "NODE", &dst_id])
            .expect("SETSLOT NODE");
    }
}

/// A plain HTTP/1.0 GET; the response body (empty on any failure).
pub fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The value of one Prometheus series (`name{labels}` exactly as exported, labels in the order
/// the proxy writes them), or 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// A proxy run through the library API (`slotproxy::server::serve`) on a thread and
/// current-thread runtime of its own, inside the test process: how tests put two proxies in
/// one process. Dropping it stops the proxy gracefully and joins its thread.
pub struct InProcessProxy {
    /// The bound client address (`listen` may use port 0).
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessProxy {
    /// Starts a proxy with `config` and returns once it listens; panics with the proxy's own
    /// error if it does not start.
    pub fn start(config: slotproxy::config::Config) -> InProcessProxy {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<Result<std::net::SocketAddr, String>>();
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
            // A dropped sender stops the proxy too.
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
        InProcessProxy {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A new client connection to it.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.addr))
            .and_then(|c| c.get_connection())
            .expect("connecting to an in-process proxy")
    }
}

impl Drop for InProcessProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
