//! The `slotproxy` command: `serve` (the default), `demo` and `render`.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use slotproxy::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "slotproxy",
    version,
    about = "A Redis Cluster proxy with built-in cluster administration"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Start a local 3-master/3-replica cluster from the redis-server on PATH and serve the
    /// proxy in front of it until Ctrl-C.
    Demo(DemoArgs),
    /// Write nodes.conf and a redis.conf fragment per node for a planned cluster.
    Render(RenderArgs),
}

#[derive(Args, Default, Clone)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Client address, overriding the file.
    #[arg(long)]
    listen: Option<String>,
    /// Comma-separated seed nodes (host:port), overriding the file.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// Worker threads (0 = one per core), overriding the file.
    #[arg(long)]
    workers: Option<usize>,
    /// Log filter, overriding the file.
    #[arg(long)]
    log_level: Option<String>,
    /// Prometheus endpoint (ip:port, "" turns metrics off), overriding the file.
    #[arg(long)]
    metrics_listen: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Client address of the proxy.
    #[arg(long, default_value = "127.0.0.1:7617")]
    listen: String,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Prometheus endpoint of the proxy ("" turns metrics off).
    #[arg(long, default_value = "127.0.0.1:9617")]
    metrics_listen: String,
    /// A config file for the demo's proxy (users, limits, TLS, ...); its listen, seeds,
    /// workers and metrics_listen are replaced by the demo's own.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct RenderArgs {
    /// Replicas per master.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Output directory; one sub-directory per node.
    #[arg(long)]
    out: PathBuf,
    /// Allow a master and its replica on one host (development clusters only).
    #[arg(long)]
    allow_colocated: bool,
    /// Cluster node timeout written to each redis.conf, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    node_timeout_ms: u64,
    /// The nodes, as ip:port (a node's host is its IP).
    #[arg(required = true)]
    nodes: Vec<String>,
}

fn load_config(a: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = match &a.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(l) = &a.listen {
        cfg.listen = l.clone();
    }
    if let Some(s) = &a.seeds {
        cfg.seeds = s.clone();
    }
    if let Some(w) = a.workers {
        cfg.workers = w;
    }
    if let Some(l) = &a.log_level {
        cfg.log_level = l.clone();
    }
    if let Some(m) = &a.metrics_listen {
        cfg.metrics_listen = m.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the control runtime")
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => ctrl_c().await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c().await;
}

fn serve(a: &ServeArgs) -> anyhow::Result<()> {
    let cfg = load_config(a)?;
    slotproxy::logging::init(&cfg.log_level, &cfg.log_format);
    let path = a.config.clone();
    control_runtime()?.block_on(slotproxy::server::serve_with(
        cfg,
        path,
        stop_signal(),
        |r| {
            println!("slotproxy listening on {}", r.addr);
        },
    ))
}

fn demo(a: &DemoArgs) -> anyhow::Result<()> {
    use slotproxy::admin::localcluster::{LocalCluster, LocalClusterSpec};
    slotproxy::logging::init("info", "text");
    let spec = LocalClusterSpec {
        hosts: vec!["127.0.0.1".into(), "127.0.0.2".into(), "127.0.0.3".into()],
        nodes_per_host: 2,
        replicas: 1,
        node_timeout_ms: 2000,
        redis_server: a.redis_server.clone(),
    };
    println!("starting a 3-master/3-replica Redis Cluster on 127.0.0.1-3 ...");
    let cluster = LocalCluster::start(&spec).context("starting the demo cluster")?;
    for n in &cluster.nodes {
        println!(
            "  {} {}:{} pid {} ({})",
            if n.is_master { "master " } else { "replica" },
            n.ip,
            n.port,
            n.pid,
            n.dir.display()
        );
    }
    let base = match &a.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let cfg = Config {
        listen: a.listen.clone(),
        seeds: cluster.seeds(),
        workers: a.workers,
        metrics_listen: a.metrics_listen.clone(),
        ..base
    };
    let result = control_runtime()?.block_on(slotproxy::server::serve(cfg, stop_signal(), |r| {
        println!(
            "slotproxy demo ready: redis-cli -p {} (Ctrl-C stops everything)",
            r.addr.port()
        );
    }));
    drop(cluster);
    println!("demo stopped; every redis-server it started is gone");
    result
}

fn render(a: &RenderArgs) -> anyhow::Result<()> {
    use slotproxy::admin::placement::{plan, NodeSpec, PlanOptions};
    use slotproxy::admin::render::{random_node_id, render, render_to_dir, RenderOptions};
    let nodes = a
        .nodes
        .iter()
        .map(|n| {
            let (ip, port) = n
                .rsplit_once(':')
                .with_context(|| format!("node {n:?} is not ip:port"))?;
            let port = port
                .parse()
                .with_context(|| format!("node {n:?} has a bad port"))?;
            Ok(NodeSpec {
                host: ip.to_string(),
                ip: ip.to_string(),
                port,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let p = plan(
        &nodes,
        &PlanOptions {
            replicas: a.replicas,
            allow_colocated: a.allow_colocated,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    let ids: Vec<String> = nodes.iter().map(|_| random_node_id()).collect();
    let rendered = render(
        &nodes,
        &p,
        &ids,
        &RenderOptions {
            node_timeout_ms: a.node_timeout_ms,
        },
    );
    render_to_dir(&a.out, &rendered)?;
    for s in &p.shards {
        let m = &nodes[s.master];
        let reps: Vec<String> = s
            .replicas
            .iter()
            .map(|&r| format!("{}:{}", nodes[r].ip, nodes[r].port))
            .collect();
        println!(
            "master {}:{} slots {}-{} epoch {} replicas {}",
            m.ip,
            m.port,
            s.slots.0,
            s.slots.1,
            s.epoch,
            reps.join(",")
        );
    }
    println!("wrote {} nodes under {}", rendered.len(), a.out.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => serve(&cli.serve),
        Some(Cmd::Serve(a)) => serve(a),
        Some(Cmd::Demo(a)) => demo(a),
        Some(Cmd::Render(a)) => render(a),
    };
    if let Err(e) = result {
        eprintln!("slotproxy: {e:#}");
        std::process::exit(1);
    }
}
