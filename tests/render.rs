//! `slotproxy render` end to end, through the real binary: every rendered file is checked as
//! text, every node is started from its files exactly as written (only `dir`, `pidfile`,
//! `logfile` and `protected-mode no` are appended), and the started cluster must be the
//! rendered one. Then the seeds' failure case: a planned master that never starts is named by
//! `PROXY CHECK`, and `PROXY CREATE` over the rendered nodes promotes its replica.
//!
//! tests/localcluster.rs already starts rendered clusters through the library (with extra
//! settings); tests/admin_create_check.rs approximates a missing master by killing and
//! restarting a pair. This file covers what neither does: the CLI's files, and a master that
//! truly never ran.

mod common;

use common::{proxy_lines, Proxy};
use slotproxy::cluster::{parse_cluster_nodes, NodeLine};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const HOSTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const PER_HOST: usize = 2;
const MASTERS: usize = 3;
/// Liveness bound for every wait (not a timing assertion).
const DEADLINE: Duration = Duration::from_secs(45);

/// Next port to try; seeded from the PID so concurrent test binaries start far apart.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A client port on `ip` whose bus port (`+10000`) is free too.
fn free_port(ip: &str) -> u16 {
    const FLOOR: u16 = 20000;
    const CEILING: u16 = 55000;
    let seed = FLOOR + (std::process::id() % 1000) as u16 * 30 + 7;
    let _ = NEXT_PORT.compare_exchange(0, seed, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..5000 {
        let port = NEXT_PORT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(if p >= CEILING { FLOOR } else { p + 1 })
            })
            .unwrap_or(FLOOR);
        let free = |p: u16| TcpListener::bind((ip, p)).is_ok();
        if (FLOOR..=CEILING).contains(&port) && free(port) && free(port + 10000) {
            return port;
        }
    }
    panic!("no free port pair on {ip}");
}

/// One rendered node's files, parsed.
#[derive(Debug, Clone)]
struct RenderedFile {
    addr: String,
    dir: PathBuf,
    /// Lines of nodes.conf without the `vars` line, parsed.
    lines: Vec<NodeLine>,
    /// The node's own line (the one flagged `myself`).
    me: NodeLine,
}

/// Runs `slotproxy render --replicas 1 --out <out> <nodes>` and returns its stdout.
fn render_cli(out: &Path, nodes: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args(["render", "--replicas", "1", "--node-timeout-ms", "2000"])
        .arg("--out")
        .arg(out)
        .args(nodes)
        .output()
        .expect("running slotproxy render");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "render failed: {stdout}\n{stderr}");
    assert!(
        !stderr.contains("warning"),
        "a 3x2 layout needs no compromise: {stderr}"
    );
    stdout
}

fn is_node_id(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads and checks one node's rendered files against the seeds' invariants.
fn check_file(dir: &Path, addr: &str) -> RenderedFile {
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let text = std::fs::read_to_string(dir.join("nodes.conf")).expect("reading nodes.conf");
    let raw: Vec<&str> = text.lines().collect();
    let n = HOSTS.len() * PER_HOST;
    assert_eq!(
        raw.len(),
        n + 1,
        "{addr}: one line per node + vars:\n{text}"
    );
    assert_eq!(
        raw[n],
        format!("vars currentEpoch {MASTERS} lastVoteEpoch 0"),
        "{addr}"
    );
    let mut lines = Vec::new();
    for line in &raw[..n] {
        let f: Vec<&str> = line.split(' ').collect();
        assert!(is_node_id(f[0]), "{addr}: bad node id in {line:?}");
        assert!(f.len() >= 8, "{addr}: short line {line:?}");
        assert_eq!(f[7], "connected", "{addr}: {line:?}");
        let l = parse_cluster_nodes(line, "").expect("a nodes.conf line parses");
        lines.push(l.into_iter().next().expect("one line"));
    }
    let mine: Vec<&NodeLine> = lines.iter().filter(|l| l.has("myself")).collect();
    assert_eq!(mine.len(), 1, "{addr}: exactly one myself line:\n{text}");
    let me = mine[0].clone();
    assert_eq!(me.addr(), addr, "{addr}: myself is another node:\n{text}");
    assert_eq!(me.cport, me.port + 10000);

    // Masters: epochs 1..M, contiguous slot ranges covering every slot once.
    let masters: Vec<&NodeLine> = lines.iter().filter(|l| l.is_master()).collect();
    assert_eq!(masters.len(), MASTERS, "{addr}:\n{text}");
    let mut epochs: Vec<u64> = masters.iter().map(|m| m.config_epoch).collect();
    epochs.sort_unstable();
    assert_eq!(epochs, (1..=MASTERS as u64).collect::<Vec<_>>(), "{addr}");
    let mut ranges: Vec<(u16, u16)> = masters
        .iter()
        .map(|m| {
            assert_eq!(m.slots.len(), 1, "{addr}: one range per master");
            assert!(m.master_id.is_none());
            m.slots[0]
        })
        .collect();
    ranges.sort_unstable();
    assert_eq!(ranges[0].0, 0);
    assert_eq!(ranges[MASTERS - 1].1, 16383);
    for w in ranges.windows(2) {
        assert_eq!(w[0].1 + 1, w[1].0, "{addr}: slot ranges {ranges:?}");
    }
    // Replicas: a known master, its epoch, no slots.
    for r in lines.iter().filter(|l| !l.is_master()) {
        assert!(r.has("slave"), "{addr}: {r:?}");
        assert!(r.slots.is_empty());
        let mid = r.master_id.as_deref().expect("a replica names its master");
        let m = masters
            .iter()
            .find(|m| m.id == mid)
            .unwrap_or_else(|| panic!("{addr}: replica of an unknown master {mid}"));
        assert_eq!(r.config_epoch, m.config_epoch, "{addr}: replica epoch");
    }
    // The redis.conf fragment is the node's own and leaves `dir` to the caller.
    let conf = std::fs::read_to_string(dir.join("redis.conf")).expect("reading redis.conf");
    for needle in [
        format!("port {port}\n"),
        format!("bind {ip}\n"),
        format!("bind-source-addr {ip}\n"),
        "cluster-enabled yes\n".to_string(),
        "cluster-config-file nodes.conf\n".to_string(),
    ] {
        assert!(
            conf.contains(&needle),
            "{addr}: redis.conf lacks {needle:?}"
        );
    }
    assert!(!conf.lines().any(|l| l.starts_with("dir ")), "{addr}");
    RenderedFile {
        addr: addr.to_string(),
        dir: dir.to_path_buf(),
        lines,
        me,
    }
}

/// Renders 3 hosts x 2 nodes and checks every file. Also checks that all files describe the
/// same cluster: the same line per node, except for the `myself` flag.
fn render_and_check(out: &Path) -> Vec<RenderedFile> {
    let nodes: Vec<String> = HOSTS
        .iter()
        .flat_map(|ip| (0..PER_HOST).map(move |_| format!("{ip}:{}", free_port(ip))))
        .collect();
    let stdout = render_cli(out, &nodes);
    assert!(stdout.contains("wrote 6 nodes"), "{stdout}");
    let files: Vec<RenderedFile> = nodes
        .iter()
        .map(|addr| {
            let (ip, port) = addr.rsplit_once(':').expect("ip:port");
            check_file(&out.join(format!("{ip}-{port}")), addr)
        })
        .collect();
    let strip = |l: &NodeLine| {
        let mut l = l.clone();
        l.flags.retain(|f| f != "myself");
        l
    };
    let reference: Vec<NodeLine> = files[0].lines.iter().map(strip).collect();
    for f in &files {
        let these: Vec<NodeLine> = f.lines.iter().map(strip).collect();
        assert_eq!(
            these, reference,
            "{} disagrees with {}",
            f.addr, files[0].addr
        );
    }
    // Every listed node appears, each with its own ID.
    let ids: BTreeSet<&str> = files.iter().map(|f| f.me.id.as_str()).collect();
    assert_eq!(ids.len(), nodes.len(), "distinct node IDs");
    let listed: BTreeSet<String> = reference.iter().map(NodeLine::addr).collect();
    assert_eq!(listed, nodes.iter().cloned().collect());
    files
}

/// redis-server processes started from rendered files; killed by PID and reaped on drop.
struct Nodes {
    children: Vec<(String, Child)>,
}

impl Nodes {
    /// Appends only dir/pidfile/logfile/protected-mode to each redis.conf and starts the nodes.
    fn start(files: &[&RenderedFile]) -> Nodes {
        let mut nodes = Nodes {
            children: Vec::new(),
        };
        for f in files {
            let quote = |p: &Path| format!("\"{}\"", p.display());
            let mut conf = File::options()
                .append(true)
                .open(f.dir.join("redis.conf"))
                .expect("opening redis.conf");
            write!(
                conf,
                "dir {}\npidfile {}\nlogfile {}\nprotected-mode no\n",
                quote(&f.dir),
                quote(&f.dir.join("redis.pid")),
                quote(&f.dir.join("redis.log")),
            )
            .expect("appending to redis.conf");
            let log = File::create(f.dir.join("stdout.log")).expect("stdout log");
            let err = log.try_clone().expect("stderr log");
            let child = Command::new(
                std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
            )
            .arg(f.dir.join("redis.conf"))
            .current_dir(&f.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawning redis-server");
            nodes.children.push((f.addr.clone(), child));
        }
        nodes
    }

    fn addrs(&self) -> Vec<String> {
        self.children.iter().map(|(a, _)| a.clone()).collect()
    }

    /// Fails the test if a node exited (for example because its nodes.conf did not load).
    fn assert_alive(&mut self, files: &[RenderedFile]) {
        for (addr, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let dir = &files.iter().find(|f| &f.addr == addr).expect("file").dir;
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server {addr} exited ({status}):\n{log}");
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn conn(addr: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://{addr}/"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

fn cluster_info(addr: &str) -> String {
    conn(addr)
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
        .unwrap_or_default()
}

fn cluster_nodes(addr: &str) -> Vec<NodeLine> {
    let mut c = conn(addr).expect("connecting to a node");
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut c)
        .expect("CLUSTER NODES");
    let ip = addr.rsplit_once(':').map_or("", |x| x.0);
    parse_cluster_nodes(&text, ip).expect("parsing CLUSTER NODES")
}

/// Polls until every node in `addrs` reports cluster_state:ok.
fn wait_all_ok(nodes: &mut Nodes, files: &[RenderedFile], addrs: &[String]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        nodes.assert_alive(files);
        let bad: Vec<(String, String)> = addrs
            .iter()
            .map(|a| (a.clone(), cluster_info(a)))
            .filter(|(_, info)| !info.contains("cluster_state:ok"))
            .collect();
        if bad.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every node is cluster_state:ok: {bad:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Node ID -> (address, is master, master ID, slots): what a view says about each node.
type Roles = BTreeMap<String, (String, bool, Option<String>, Vec<(u16, u16)>)>;

fn roles(lines: &[NodeLine]) -> Roles {
    lines
        .iter()
        .map(|l| {
            (
                l.id.clone(),
                (
                    l.addr(),
                    l.is_master(),
                    l.master_id.clone(),
                    l.slots.clone(),
                ),
            )
        })
        .collect()
}

#[test]
fn rendered_files_load_and_form_the_planned_cluster() {
    let out = tempfile::tempdir().expect("tempdir");
    let files = render_and_check(out.path());
    let mut nodes = Nodes::start(&files.iter().collect::<Vec<_>>());
    let addrs = nodes.addrs();
    wait_all_ok(&mut nodes, &files, &addrs);

    // What each node loaded is what was rendered: same IDs on the same addresses, same roles,
    // same masters, same slots; and every view has every node connected.
    let planned = roles(&files[0].lines);
    for f in &files {
        let view = cluster_nodes(&f.addr);
        let me = view.iter().find(|l| l.has("myself")).expect("myself");
        assert_eq!(me.id, f.me.id, "{} runs with its rendered ID", f.addr);
        let seen = roles(&view);
        assert_eq!(seen, planned, "{}'s view differs from the files", f.addr);
        assert!(view.iter().all(|l| l.connected), "{}: {view:?}", f.addr);

        // Placement invariants on this view.
        let host_of: HashMap<&str, &str> = view
            .iter()
            .map(|l| (l.id.as_str(), l.ip.as_str()))
            .collect();
        let master_hosts: BTreeSet<&str> = view
            .iter()
            .filter(|l| l.is_master())
            .map(|l| l.ip.as_str())
            .collect();
        assert_eq!(master_hosts.len(), MASTERS, "3 masters on 3 distinct hosts");
        for r in view.iter().filter(|l| !l.is_master()) {
            let m = r.master_id.as_deref().expect("master id");
            assert_ne!(
                host_of[m],
                r.ip,
                "replica {} on its master's host",
                r.addr()
            );
        }
    }
    // The loaded epochs are the rendered ones (no collision had to be resolved).
    let info = cluster_info(&files[0].addr);
    assert!(
        info.contains(&format!("cluster_current_epoch:{MASTERS}")),
        "{info}"
    );
}

#[test]
fn a_rendered_master_that_never_starts_is_reported_and_replaced() {
    let out = tempfile::tempdir().expect("tempdir");
    let files = render_and_check(out.path());
    let missing = files
        .iter()
        .find(|f| f.me.is_master())
        .expect("a master")
        .clone();
    let replica = files
        .iter()
        .find(|f| f.me.master_id.as_deref() == Some(missing.me.id.as_str()))
        .expect("its replica")
        .clone();
    let started: Vec<&RenderedFile> = files.iter().filter(|f| f.addr != missing.addr).collect();
    let mut nodes = Nodes::start(&started);
    let running = nodes.addrs();

    // The proxy starts from one running node; the cluster cannot serve the missing slots.
    let p = Proxy::start_with(&running[..1], "", false);
    let mut c = p.conn();
    let expected = format!(
        "ERROR master-missing {}'s master {} does not answer",
        replica.addr, missing.addr
    );
    let deadline = Instant::now() + DEADLINE;
    let report = loop {
        nodes.assert_alive(&files);
        let report = proxy_lines(&mut c, &["CHECK"]).expect("PROXY CHECK");
        if report.iter().any(|l| l.starts_with(&expected)) {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "CHECK never named the missing master: {report:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(report[0].starts_with("ERRORS "), "{report:?}");
    let line = report
        .iter()
        .find(|l| l.starts_with(&expected))
        .expect("finding");
    assert!(line.contains("never synced"), "{line}");

    // CREATE over every rendered node, as the operator listed them for render: the missing
    // node is unreachable, which CREATE refuses by name before changing anything.
    let all: Vec<String> = files.iter().map(|f| f.addr.clone()).collect();
    let mut args = vec!["CREATE", "REPLICAS", "1", "NODES"];
    args.extend(all.iter().map(String::as_str));
    let refusal = proxy_lines(&mut c, &args)
        .expect_err("an unreachable listed node is refused")
        .to_string();
    assert!(
        refusal.contains(&missing.addr) && refusal.contains("unreachable"),
        "{refusal}"
    );

    // CREATE over the running rendered nodes promotes the replica (CHECK's advice).
    let mut args = vec!["CREATE", "REPLICAS", "1", "NODES"];
    args.extend(running.iter().map(String::as_str));
    let out = proxy_lines(&mut c, &args).expect("PROXY CREATE over the rendered nodes");
    assert!(
        out.iter().any(|l| l.starts_with(&format!(
            "step CLUSTER FAILOVER TAKEOVER on {}",
            replica.addr
        ))),
        "{out:?}"
    );
    wait_all_ok(&mut nodes, &files, &running);
    let deadline = Instant::now() + DEADLINE;
    loop {
        // Every running node sees the replica as the master of the missing master's slots.
        let promoted = running.iter().all(|a| {
            cluster_nodes(a)
                .iter()
                .any(|l| l.id == replica.me.id && l.is_master() && l.slots == missing.me.slots)
        });
        if promoted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica was not promoted everywhere"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Data flows through the proxy again, into every shard (the proxy picks the change up on
    // a refresh or a MOVED).
    let deadline = Instant::now() + DEADLINE;
    let keys: Vec<String> = (0..30).map(|i| format!("render-key-{i}")).collect();
    loop {
        let ok = keys.iter().all(|k| {
            redis::cmd("SET")
                .arg(k)
                .arg(format!("v-{k}"))
                .query::<()>(&mut c)
                .is_ok()
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SET through the proxy never worked"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for k in &keys {
        let v: Option<String> = redis::cmd("GET").arg(k).query(&mut c).expect("GET");
        assert_eq!(v.as_deref(), Some(format!("v-{k}").as_str()));
    }
    // At least one key landed in the promoted shard.
    let mut rc = conn(&replica.addr).expect("connecting to the promoted node");
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut rc).expect("DBSIZE");
    assert!(dbsize > 0, "no key landed on the promoted master");
    drop(p);
    drop(nodes);
}
