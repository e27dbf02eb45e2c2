//! docker/compose.yaml without Docker: runs exactly the command lines the compose file gives
//! (the six redis-servers, the proxy with docker/slotproxy.toml, the cluster-create shell line)
//! on loopback addresses, so the files cannot drift from what works. The compose network's
//! 172.30.0.N becomes 127.0.0.N, the proxy's 0.0.0.0 its own address 127.0.0.20, and `$$` (the
//! compose escape) `$`. Also checks that Prometheus's target is the proxy's metrics address and
//! that the Grafana dashboard only queries metrics the proxy exports.

mod common;

use common::{eventually, eventually_ok, proxy_query};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

/// Per service: its `command:` (a one-line JSON array) and its `volumes:` entries.
#[derive(Default, Debug)]
struct Service {
    command: Vec<String>,
    volumes: Vec<String>,
}

fn services() -> BTreeMap<String, Service> {
    let text = std::fs::read_to_string(docker_dir().join("compose.yaml")).expect("compose.yaml");
    let mut out: BTreeMap<String, Service> = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<String> = None;
    let mut in_volumes = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            in_services = line == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
            if !name.starts_with(' ') && !name.starts_with('#') {
                current = Some(name.to_string());
                out.entry(name.to_string()).or_default();
                in_volumes = false;
                continue;
            }
        }
        let Some(svc) = current.as_ref().and_then(|c| out.get_mut(c)) else {
            continue;
        };
        let t = line.trim();
        if let Some(json) = t.strip_prefix("command: ") {
            svc.command = serde_json::from_str(json).expect("command: is a one-line JSON array");
            in_volumes = false;
        } else if t == "volumes:" {
            in_volumes = true;
        } else if in_volumes && t.starts_with("- ") {
            svc.volumes.push(t[2..].trim_matches('"').to_string());
        } else if line.starts_with("    ") && !line.starts_with("      ") {
            in_volumes = false;
        }
    }
    out
}

/// Compose network addresses to loopback ones, and compose's `$$` escape to `$`.
fn to_loopback(s: &str) -> String {
    s.replace("172.30.0.", "127.0.0.")
        .replace("0.0.0.0", "127.0.0.20")
        .replace("$$", "$")
}

/// Processes started here, killed by PID at the end even if the test fails.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ping(addr: &str) -> bool {
    redis::Client::open(format!("redis://{addr}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// How long the compose setup may take to reach a state.
const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn compose_command_lines_build_and_serve_a_cluster() {
    let svcs = services();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs(Vec::new());
    let redis_server = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());

    // The six nodes, each in its own directory for `--dir /data`.
    let mut nodes = Vec::new();
    for i in 1..=6 {
        let svc = &svcs[&format!("redis-{i}")];
        let mut args: Vec<String> = svc.command.iter().map(|a| to_loopback(a)).collect();
        assert_eq!(args[0], "redis-server");
        let data = dir.path().join(format!("redis-{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let at = args.iter().position(|a| a == "--dir").expect("--dir") + 1;
        args[at] = data.display().to_string();
        let bind = args[args.iter().position(|a| a == "--bind").expect("--bind") + 1].clone();
        let port = args[args.iter().position(|a| a == "--port").expect("--port") + 1].clone();
        let log = std::fs::File::create(data.join("stdout.log")).unwrap();
        procs.0.push(
            Command::new(&redis_server)
                .args(&args[1..])
                .current_dir(&data)
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server"),
        );
        nodes.push(format!("{bind}:{port}"));
    }
    for n in &nodes {
        eventually(&format!("node {n}"), SETTLE, || ping(n));
    }

    // The proxy: the image's entrypoint is the binary; the config file is the mounted one.
    let svc = &svcs["slotproxy"];
    let mount = svc
        .volumes
        .iter()
        .find(|v| v.contains("slotproxy.toml"))
        .expect("slotproxy.toml volume");
    let mut parts = mount.split(':');
    let (host, inside) = (parts.next().unwrap(), parts.next().unwrap());
    let cfg_text = std::fs::read_to_string(docker_dir().join(host)).expect("docker/slotproxy.toml");
    let cfg_path = dir.path().join("slotproxy.toml");
    std::fs::write(&cfg_path, to_loopback(&cfg_text)).unwrap();
    let cfg = slotproxy::config::Config::from_file(&cfg_path).expect("compose proxy config");
    let args: Vec<String> = svc
        .command
        .iter()
        .map(|a| {
            if a == inside {
                cfg_path.display().to_string()
            } else {
                to_loopback(a)
            }
        })
        .collect();
    let proxy_log = dir.path().join("proxy.log");
    procs.0.push(
        Command::new(env!("CARGO_BIN_EXE_slotproxy"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&proxy_log).unwrap())
            .spawn()
            .expect("starting slotproxy"),
    );
    let proxy_addr = cfg.listen.clone();
    eventually("the proxy", SETTLE, || ping(&proxy_addr));

    // The one-shot create service, as its shell line.
    let create = &svcs["cluster-create"].command;
    assert_eq!(&create[..2], ["sh", "-c"]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(to_loopback(&create[2]))
        .output()
        .expect("running the cluster-create line");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("OK"),
        "cluster-create failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in &nodes {
        assert!(stdout.contains(n.as_str()) || !stdout.is_empty());
    }

    // The proxy picks the new cluster up and serves it.
    let mut c = redis::Client::open(format!("redis://{proxy_addr}/"))
        .and_then(|c| c.get_connection())
        .expect("connecting to the proxy");
    eventually("the proxy to serve all slots", SETTLE, || {
        proxy_query::<Vec<String>>(&mut c, &["SLOTS"])
            .map(|l| {
                l.first()
                    .is_some_and(|f| f.contains("slots 16384 masters 3"))
            })
            .unwrap_or(false)
    });
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("compose:{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET");
    }
    let v: i64 = redis::cmd("GET")
        .arg("compose:7")
        .query(&mut c)
        .expect("GET");
    assert_eq!(v, 7);

    // Prometheus scrapes the proxy's metrics address.
    let prom = std::fs::read_to_string(docker_dir().join("prometheus.yml")).unwrap();
    let target = prom
        .lines()
        .find_map(|l| l.trim().strip_prefix("- targets: [\"")?.strip_suffix("\"]"))
        .expect("a scrape target");
    assert_eq!(to_loopback(target), cfg.metrics_listen);
    let mut scrape = String::new();
    eventually("the SETs to be exported", SETTLE, || {
        scrape = common::http_get(&to_loopback(target), "/metrics");
        common::metric(&scrape, "slotproxy_commands_total{command=\"set\"}") >= 50.0
    });

    // Every metric the dashboard queries is exported.
    let dash =
        std::fs::read_to_string(docker_dir().join("grafana/dashboards/slotproxy.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash).expect("dashboard JSON");
    let mut names = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("slotproxy_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() >= 15, "{names:?}");
    for n in &names {
        assert!(
            scrape.lines().any(|l| l.starts_with(n.as_str())),
            "the dashboard queries {n}, which /metrics does not export"
        );
    }

    // log_format = "json": every log line is a JSON object.
    let log = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(!log.is_empty());
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }

    // `docker stop` sends SIGTERM: the proxy exits 0 (graceful drain).
    let proxy = procs.0.last_mut().expect("proxy process");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(proxy.id().to_string())
        .status();
    let status = eventually_ok(
        "the proxy to stop on SIGTERM",
        Duration::from_secs(30),
        || match proxy.try_wait() {
            Ok(Some(s)) => Ok(s),
            _ => Err("still running"),
        },
    );
    assert!(status.success(), "{status:?}: {log}");
}
