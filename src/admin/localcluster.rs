//! Starts a real Redis Cluster from `redis-server` processes on loopback addresses, from rendered
//! `nodes.conf` files (no `CLUSTER MEET`), for `slotproxy demo`, integration tests and benchmarks.
//!
//! Invariants: every process this module starts is tracked by its [`Child`] handle and killed by
//! PID (never by name) and reaped when the [`LocalCluster`] is dropped, also while a test panics;
//! the node directories live in one temporary directory that is removed on drop; ports come from a
//! process-wide, thread-safe allocator so parallel tests in one binary never pick the same port.
//! A small blocking RESP2 client lives here too, so tests can poke nodes without extra crates.

use crate::admin::placement::{plan, NodeSpec, PlanOptions};
use crate::admin::render::{random_node_id, render, render_to_dir, RenderOptions};
use anyhow::{anyhow, bail, Context};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// What cluster to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalClusterSpec {
    /// Loopback addresses, one per simulated host, e.g. `127.0.0.1`, `127.0.0.2`, `127.0.0.3`.
    pub hosts: Vec<String>,
    /// Redis nodes started on each host.
    pub nodes_per_host: usize,
    /// Replicas per master.
    pub replicas: usize,
    /// `cluster-node-timeout` in milliseconds (short values make failover tests quick).
    pub node_timeout_ms: u64,
    /// The `redis-server` binary to run (looked up on `PATH` if not a path).
    pub redis_server: String,
}

impl Default for LocalClusterSpec {
    /// 3 masters + 3 replicas on 127.0.0.1-3, 2 s node timeout, `redis-server` from `PATH`.
    fn default() -> Self {
        LocalClusterSpec {
            hosts: vec![
                "127.0.0.1".to_string(),
                "127.0.0.2".to_string(),
                "127.0.0.3".to_string(),
            ],
            nodes_per_host: 2,
            replicas: 1,
            node_timeout_ms: 2000,
            redis_server: "redis-server".to_string(),
        }
    }
}

/// One started node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// Address the node binds and announces.
    pub ip: String,
    /// Client port (cluster bus at `port + 10000`).
    pub port: u16,
    /// Cluster node ID (rendered before start).
    pub node_id: String,
    /// PID of the current `redis-server` process (changes on [`LocalCluster::restart`]).
    pub pid: u32,
    /// The node's working directory (nodes.conf, redis.conf, logs).
    pub dir: PathBuf,
    /// Role in the plan at start; failovers later are not reflected here.
    pub is_master: bool,
}

impl LocalNode {
    /// `ip:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// A running local cluster. Dropping it kills every process it started and removes its files.
pub struct LocalCluster {
    /// The nodes, in planning order (host by host).
    pub nodes: Vec<LocalNode>,
    /// Placement warnings (for example colocated shards on a single-host layout).
    pub warnings: Vec<String>,
    children: Vec<Option<Child>>,
    stopped: Vec<bool>,
    redis_server: String,
    // Declared last so it is removed after the processes are gone.
    dir: TempDir,
}

/// Next candidate port; 0 until the first allocation seeds it from the process ID, so parallel
/// test binaries start in different windows.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);
const PORT_FLOOR: u16 = 20000;
const PORT_CEILING: u16 = 55000;

/// Allocates a client port on `ip` whose bus port (`+10000`) is free too. Thread-safe.
pub fn alloc_port(ip: &str) -> anyhow::Result<u16> {
    let base = PORT_FLOOR + (std::process::id() % 400) as u16 * 20;
    let _ = NEXT_PORT.compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..5000 {
        let port = NEXT_PORT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(if p >= PORT_CEILING { PORT_FLOOR } else { p + 1 })
            })
            .unwrap_or(PORT_FLOOR);
        if !(PORT_FLOOR..=PORT_CEILING).contains(&port) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(format!("{ip}:{p}")).is_ok();
        if free(port) && free(port + 10000) {
            return Ok(port);
        }
    }
    bail!("no free port pair (port, port+10000) found on {ip}")
}

/// Why a start attempt failed: port races are worth another attempt, the rest is not.
enum StartError {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

impl LocalCluster {
    /// Plans (colocated placement allowed: this is a dev cluster), renders, spawns and waits until
    /// every node reports `cluster_state:ok`, sees every other node connected, and every replica
    /// has synced with its master (30 s deadline).
    /// A node that dies at start (a port taken meanwhile by another process) causes a retry with
    /// fresh ports, up to three attempts.
    pub fn start(spec: &LocalClusterSpec) -> anyhow::Result<LocalCluster> {
        if spec.hosts.is_empty() || spec.nodes_per_host == 0 {
            bail!("local cluster spec needs at least one host and one node per host");
        }
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(spec) {
                Ok(cluster) => return Ok(cluster),
                Err(StartError::Fatal(e)) => return Err(e),
                Err(StartError::Retry(e)) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("start failed"))
            .context("local cluster did not start after 3 attempts"))
    }

    fn try_start(spec: &LocalClusterSpec) -> Result<LocalCluster, StartError> {
        let fatal = StartError::Fatal;
        let mut specs = Vec::new();
        for host in &spec.hosts {
            for _ in 0..spec.nodes_per_host {
                let port = alloc_port(host).map_err(fatal)?;
                specs.push(NodeSpec::new(host.clone(), port));
            }
        }
        let opts = PlanOptions {
            replicas: spec.replicas,
            allow_colocated: true,
        };
        let placement =
            plan(&specs, &opts).map_err(|e| fatal(anyhow!("planning the local cluster: {e}")))?;
        let ids: Vec<String> = specs.iter().map(|_| random_node_id()).collect();
        let rendered = render(
            &specs,
            &placement,
            &ids,
            &RenderOptions {
                node_timeout_ms: spec.node_timeout_ms,
            },
        );
        let dir = tempfile::Builder::new()
            .prefix("slotproxy-cluster-")
            .tempdir()
            .context("creating the cluster's temporary directory")
            .map_err(fatal)?;
        render_to_dir(dir.path(), &rendered).map_err(fatal)?;

        let roles = placement.roles(specs.len());
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            warnings: placement.warnings.clone(),
            children: Vec::new(),
            stopped: Vec::new(),
            redis_server: spec.redis_server.clone(),
            dir,
        };
        for node in &rendered {
            let node_dir = cluster
                .dir
                .path()
                .join(format!("{}-{}", node.ip, node.port));
            append_local_settings(&node_dir).map_err(fatal)?;
            cluster.add_node(LocalNode {
                ip: node.ip.clone(),
                port: node.port,
                node_id: node.node_id.clone(),
                pid: 0,
                dir: node_dir,
                is_master: matches!(roles.get(node.index), Some(Some((_, true)))),
            });
        }
        cluster.launch_all()?;
        cluster
            .wait_formed(Instant::now() + Duration::from_secs(30))
            .map_err(fatal)?;
        Ok(cluster)
    }

    /// Starts empty cluster-enabled nodes with no `nodes.conf` (each knows only itself, owns no
    /// slots), for tests of `PROXY CREATE`. `hosts` lists each host address with its node count.
    /// Waits only until every node answers PING (an empty node is never `cluster_state:ok`);
    /// `node_id` is read back with `CLUSTER MYID`. Port races are retried as in
    /// [`LocalCluster::start`].
    pub fn start_empty(
        hosts: &[(String, usize)],
        node_timeout_ms: u64,
        redis_server: &str,
    ) -> anyhow::Result<LocalCluster> {
        if hosts.iter().map(|h| h.1).sum::<usize>() == 0 {
            bail!("start_empty needs at least one node");
        }
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start_empty(hosts, node_timeout_ms, redis_server) {
                Ok(cluster) => return Ok(cluster),
                Err(StartError::Fatal(e)) => return Err(e),
                Err(StartError::Retry(e)) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("start failed"))
            .context("empty nodes did not start after 3 attempts"))
    }

    fn try_start_empty(
        hosts: &[(String, usize)],
        node_timeout_ms: u64,
        redis_server: &str,
    ) -> Result<LocalCluster, StartError> {
        let fatal = StartError::Fatal;
        let dir = tempfile::Builder::new()
            .prefix("slotproxy-empty-")
            .tempdir()
            .context("creating the nodes' temporary directory")
            .map_err(fatal)?;
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            warnings: Vec::new(),
            children: Vec::new(),
            stopped: Vec::new(),
            redis_server: redis_server.to_string(),
            dir,
        };
        for (ip, count) in hosts {
            for _ in 0..*count {
                let port = alloc_port(ip).map_err(fatal)?;
                let node_dir = cluster.dir.path().join(format!("{ip}-{port}"));
                std::fs::create_dir_all(&node_dir)
                    .with_context(|| format!("creating {}", node_dir.display()))
                    .map_err(fatal)?;
                // The same settings the renderer writes, minus the nodes.conf content.
                let conf = format!(
                    "port {port}\nbind {ip}\nbind-source-addr {ip}\ncluster-enabled yes\n\
                     cluster-config-file nodes.conf\ncluster-node-timeout {node_timeout_ms}\n\
                     appendonly no\nsave \"\"\n"
                );
                std::fs::write(node_dir.join("redis.conf"), conf)
                    .with_context(|| format!("writing {}/redis.conf", node_dir.display()))
                    .map_err(fatal)?;
                append_local_settings(&node_dir).map_err(fatal)?;
                cluster.add_node(LocalNode {
                    ip: ip.clone(),
                    port,
                    node_id: String::new(),
                    pid: 0,
                    dir: node_dir,
                    is_master: true,
                });
            }
        }
        cluster.launch_all()?;
        for i in 0..cluster.nodes.len() {
            cluster.nodes[i].node_id = cluster
                .command(i, &["CLUSTER", "MYID"])
                .map_err(fatal)?
                .trim()
                .to_string();
        }
        Ok(cluster)
    }

    /// Starts node `index`'s process and records its PID.
    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let out = File::options()
            .create(true)
            .append(true)
            .open(node.dir.join("stdout.log"))
            .with_context(|| format!("opening the output log of {}", node.addr()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating the output log of {}", node.addr()))?;
        let child = Command::new(&self.redis_server)
            .arg(node.dir.join("redis.conf"))
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {} for {}", self.redis_server, node.addr()))?;
        self.nodes[index].pid = child.id();
        self.children[index] = Some(child);
        self.stopped[index] = false;
        Ok(())
    }

    /// Waits until node `index` answers PING, failing early (with its log) if it exits.
    fn wait_ping(&mut self, index: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.children[index].as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.children[index] = None;
                    bail!(
                        "redis-server for {} exited at start ({status}); log:\n{}",
                        self.nodes[index].addr(),
                        log_tail(&self.nodes[index].dir)
                    );
                }
            }
            match self.command(index, &["PING"]) {
                Ok(reply) if reply == "PONG" => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(reply) => bail!("{} answered PING with {reply:?}", self.nodes[index].addr()),
                Err(e) => {
                    return Err(e.context(format!(
                        "{} did not answer PING within {timeout:?}; log:\n{}",
                        self.nodes[index].addr(),
                        log_tail(&self.nodes[index].dir)
                    )))
                }
            }
        }
    }

    /// Waits until every node is `cluster_state:ok`, sees every other node connected and healthy,
    /// and every replica has finished its first sync: what a freshly started cluster reaches.
    fn wait_formed(&self, deadline: Instant) -> anyhow::Result<()> {
        let total = self.nodes.len();
        loop {
            let mut problem = None;
            for i in 0..total {
                if let Err(e) = self.node_ok(i) {
                    problem = Some(e);
                    break;
                }
                let view = match self.command(i, &["CLUSTER", "NODES"]) {
                    Ok(text) => text,
                    Err(e) => {
                        problem = Some(e);
                        break;
                    }
                };
                let healthy = view
                    .lines()
                    .filter(|line| {
                        let f: Vec<&str> = line.split_whitespace().collect();
                        f.len() >= 8
                            && f[7] == "connected"
                            && !f[2].contains("fail")
                            && !f[2].contains("handshake")
                            && !f[2].contains("noaddr")
                    })
                    .count();
                if healthy != total {
                    problem = Some(anyhow!(
                        "node {} sees {healthy} of {total} nodes connected:\n{view}",
                        self.nodes[i].addr()
                    ));
                    break;
                }
                // A replica that never finished its first sync refuses to fail over (its data
                // age is unbounded), so failure tests need every replica linked up first.
                if !self.nodes[i].is_master {
                    let repl = match self.command(i, &["INFO", "replication"]) {
                        Ok(text) => text,
                        Err(e) => {
                            problem = Some(e);
                            break;
                        }
                    };
                    if !repl.lines().any(|l| l.trim() == "master_link_status:up") {
                        problem = Some(anyhow!(
                            "replica {} has not synced with its master:\n{repl}\n{}",
                            self.nodes[i].addr(),
                            log_tail(&self.nodes[i].dir)
                        ));
                        break;
                    }
                }
            }
            match problem {
                None => return Ok(()),
                Some(e) if Instant::now() >= deadline => {
                    return Err(e.context("the local cluster did not form within 30 s"))
                }
                Some(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `Ok` if node `index` reports `cluster_state:ok`; otherwise an error with its CLUSTER INFO.
    fn node_ok(&self, index: usize) -> anyhow::Result<()> {
        let info = self.command(index, &["CLUSTER", "INFO"])?;
        if info.lines().any(|l| l.trim() == "cluster_state:ok") {
            Ok(())
        } else {
            bail!(
                "node {} is not ok; CLUSTER INFO:\n{info}",
                self.nodes[index].addr()
            )
        }
    }

    /// Registers a node not started yet.
    fn add_node(&mut self, node: LocalNode) {
        self.nodes.push(node);
        self.children.push(None);
        self.stopped.push(false);
    }

    /// Starts every registered node and waits until each answers PING. A node that exits
    /// here most likely lost its port to a race, so that is a retryable error.
    fn launch_all(&mut self) -> Result<(), StartError> {
        for i in 0..self.nodes.len() {
            self.spawn(i).map_err(StartError::Fatal)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ping(i, Duration::from_secs(10))
                .map_err(StartError::Retry)?;
        }
        Ok(())
    }

    /// `ip:port` of every node, in node order (including nodes currently killed or stopped).
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(LocalNode::addr).collect()
    }

    /// The temporary directory holding every node's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether node `index` has a live process that is not stopped.
    pub fn is_running(&self, index: usize) -> bool {
        self.children.get(index).is_some_and(Option::is_some) && !self.stopped[index]
    }

    /// SIGKILLs node `index` by PID and reaps it. No-op if it is not running.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children.get_mut(index).and_then(Option::take) {
            // Errors mean the process is already gone; waiting reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(s) = self.stopped.get_mut(index) {
            *s = false;
        }
    }

    /// SIGSTOPs node `index` (it stays alive but silent, like a hung host).
    pub fn stop(&mut self, index: usize) {
        if self.signal(index, "-STOP") {
            self.stopped[index] = true;
        }
    }

    /// SIGCONTs node `index` after [`LocalCluster::stop`].
    pub fn cont(&mut self, index: usize) {
        if self.signal(index, "-CONT") {
            self.stopped[index] = false;
        }
    }

    /// Sends a signal with `kill <sig> <pid>` to node `index`'s live process; true on success.
    fn signal(&self, index: usize, sig: &str) -> bool {
        let Some(Some(child)) = self.children.get(index) else {
            return false;
        };
        let pid = child.id().to_string();
        match Command::new("kill").args([sig, &pid]).status() {
            Ok(status) if status.success() => true,
            Ok(status) => {
                eprintln!("localcluster: kill {sig} {pid} failed: {status}");
                false
            }
            Err(e) => {
                eprintln!("localcluster: running kill {sig} {pid}: {e}");
                false
            }
        }
    }

    /// Kills node `index` if running, starts it again from its directory (its own nodes.conf, as
    /// Redis last saved it) and waits until it answers PING. Use [`LocalCluster::wait_ok`] after.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        if index >= self.nodes.len() {
            bail!("no node {index} (cluster has {})", self.nodes.len());
        }
        self.kill(index);
        self.spawn(index)?;
        self.wait_ping(index, Duration::from_secs(10))
    }

    /// Waits until every running (not killed, not stopped) node reports `cluster_state:ok`.
    /// The error names the first node that is not ok and includes its CLUSTER INFO.
    pub fn wait_ok(&self, deadline: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let problem = (0..self.nodes.len())
                .filter(|&i| self.is_running(i))
                .find_map(|i| self.node_ok(i).err());
            match problem {
                None => return Ok(()),
                Some(e) if Instant::now() >= until => {
                    return Err(e.context(format!("cluster not ok within {deadline:?}")))
                }
                Some(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends one command to node `index` on a fresh connection and renders the reply as text:
    /// simple and bulk strings as-is, integers in decimal, nil as `(nil)`, arrays as their
    /// elements joined with `\n` (nested errors as `(error) ...`). An error reply is an `Err`.
    pub fn command(&self, index: usize, args: &[&str]) -> anyhow::Result<String> {
        let node = self
            .nodes
            .get(index)
            .ok_or_else(|| anyhow!("no node {index} (cluster has {})", self.nodes.len()))?;
        let addr = node.addr();
        let reply = (|| {
            let sock = addr
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| anyhow!("address resolves to nothing"))?;
            let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(&encode_command(args))?;
            let mut reader = BufReader::new(stream);
            read_reply(&mut reader)
        })()
        .with_context(|| format!("{} to {addr}", args.join(" ")))?;
        match reply {
            Reply::Error(msg) => Err(anyhow!("{} to {addr}: {msg}", args.join(" "))),
            other => Ok(other.render()),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut() {
            if let Some(mut child) = child.take() {
                // SIGKILL also ends a SIGSTOPped process; wait reaps it so no zombie is left.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `dir` (the TempDir) is removed when the fields drop, after this.
    }
}

/// Adds the settings the renderer leaves to the caller: where the node keeps its files and logs.
/// `repl-diskless-sync-delay 0` lets replicas sync at once instead of after Redis's default 5 s
/// batching delay, which only helps when many replicas attach at the same moment.
/// `protected-mode no`: Redis 7 counts only 127.0.0.1 and ::1 as loopback, so without a password
/// it refuses a replica connecting from 127.0.0.2 (`-DENIED`), and replication never starts.
/// Safe here because every address is in 127.0.0.0/8.
fn append_local_settings(node_dir: &Path) -> anyhow::Result<()> {
    let conf = node_dir.join("redis.conf");
    let quoted = |p: PathBuf| format!("\"{}\"", p.display().to_string().replace('"', "\\\""));
    let extra = format!(
        "dir {}\nlogfile {}\npidfile {}\ndaemonize no\nrepl-diskless-sync-delay 0\n\
         protected-mode no\n",
        quoted(node_dir.to_path_buf()),
        quoted(node_dir.join("redis.log")),
        quoted(node_dir.join("redis.pid")),
    );
    let mut file = File::options()
        .append(true)
        .open(&conf)
        .with_context(|| format!("opening {}", conf.display()))?;
    file.write_all(extra.as_bytes())
        .with_context(|| format!("writing {}", conf.display()))
}

/// The last lines of a node's logs, for error messages.
fn log_tail(node_dir: &Path) -> String {
    let mut out = String::new();
    for name in ["stdout.log", "redis.log"] {
        if let Ok(text) = std::fs::read_to_string(node_dir.join(name)) {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(15);
            out.push_str(&format!("--- {name}\n{}\n", lines[start..].join("\n")));
        }
    }
    out
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn render(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Error(e) => format!("(error) {e}"),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => "(nil)".to_string(),
            Reply::Array(Some(items)) => items
                .iter()
                .map(Reply::render)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A command as a RESP array of bulk strings.
fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one `\r\n`-terminated header line (without the terminator).
fn read_line(reader: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).context("reading a reply")?;
    if n == 0 {
        bail!("connection closed before a full reply");
    }
    let trimmed = line
        .strip_suffix("\r\n")
        .ok_or_else(|| anyhow!("reply line without CRLF: {line:?}"))?;
    Ok(trimmed.to_string())
}

/// Parses one RESP2 reply (recursively for arrays; these replies are small and shallow).
fn read_reply(reader: &mut impl BufRead) -> anyhow::Result<Reply> {
    let line = read_line(reader)?;
    let mut chars = line.chars();
    let kind = chars.next().ok_or_else(|| anyhow!("empty reply line"))?;
    let rest = chars.as_str();
    let number = |s: &str| -> anyhow::Result<i64> {
        s.parse::<i64>()
            .with_context(|| format!("bad number in reply: {s:?}"))
    };
    Ok(match kind {
        '+' => Reply::Simple(rest.to_string()),
        '-' => Reply::Error(rest.to_string()),
        ':' => Reply::Int(number(rest)?),
        '$' => {
            let len = number(rest)?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let len = usize::try_from(len).context("bulk length")?;
                if len > 512 * 1024 * 1024 {
                    bail!("bulk reply of {len} bytes is too large");
                }
                let mut buf = vec![0u8; len + 2];
                reader
                    .read_exact(&mut buf)
                    .context("reading a bulk reply")?;
                if &buf[len..] != b"\r\n" {
                    bail!("bulk reply not terminated by CRLF");
                }
                buf.truncate(len);
                Reply::Bulk(Some(buf))
            }
        }
        '*' => {
            let len = number(rest)?;
            if len < 0 {
                Reply::Array(None)
            } else {
                let len = usize::try_from(len).context("array length")?;
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    items.push(read_reply(reader)?);
                }
                Reply::Array(Some(items))
            }
        }
        other => bail!("unexpected reply type {other:?} in {line:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_replies() {
        let raw = b"*4\r\n+OK\r\n:42\r\n$-1\r\n*2\r\n$3\r\nfoo\r\n-ERR x\r\n";
        let mut reader = BufReader::new(&raw[..]);
        let reply = read_reply(&mut reader).expect("parse");
        assert_eq!(reply.render(), "OK\n42\n(nil)\nfoo\n(error) ERR x");
    }

    #[test]
    fn rejects_truncated_replies() {
        let mut reader = BufReader::new(&b"$5\r\nab"[..]);
        assert!(read_reply(&mut reader).is_err());
        let mut reader = BufReader::new(&b"+OK"[..]);
        assert!(read_reply(&mut reader).is_err());
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(
            encode_command(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn ports_are_unique_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..25)
                        .map(|_| alloc_port("127.0.0.1"))
                        .collect::<anyhow::Result<Vec<u16>>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("thread").expect("ports"));
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
