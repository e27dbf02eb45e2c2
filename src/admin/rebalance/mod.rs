//! `PROXY REBALANCE MASTERS [DRYRUN] [TOLERANCE n] [MAXMOVES k] [ASYNC] [FORCE] [JSON]
//! [TIMEOUT s] [HOST <ip|ip:port> <label>]...`: spread the masters evenly over hosts with failovers.
//!
//! The seeds' section 4, made exact. A host carries load in the form of the masters (shards
//! that own slots) running on it; a `CLUSTER FAILOVER` of a replica on host B whose master runs
//! on host A moves one master from A to B and nothing else. So the engine:
//!
//! 1. reads the live topology: `CLUSTER NODES` from one healthy node, `INFO replication` from
//!    every replica (a replica whose `master_link_status` is not `up` is never promoted);
//! 2. computes a plan with the pure [`plan()`] (no sockets; unit-tested against a brute-force
//!    optimum);
//! 3. prints it and stops there with `DRYRUN`;
//! 4. otherwise takes a lease in the cluster ([`LEASE_KEY`], see [`Lease`]), then runs the
//!    plan's first failover, waits until every node shows the new roles and the demoted master
//!    has re-synced, re-reads the topology and re-plans, until the plan is empty or `MAXMOVES`
//!    failovers are done;
//! 5. reports the spread before and after, read back from the cluster.
//!
//! Re-running is safe: every run plans from live state, so a run cut short finishes what is
//! left, and a balanced cluster answers `NOTHING TO DO`.
//!
//! Only the default `CLUSTER FAILOVER` is used: the master stops accepting writes, the replica
//! catches up to the master's replication offset, and only then takes over, so no write the
//! old master acknowledged is lost. `FORCE` (operator's choice) lets the plan also move shards
//! whose master is flagged failing, with `CLUSTER FAILOVER FORCE` sent to their replica, which
//! cannot wait for a dead master. `TAKEOVER` (which skips the cluster's vote) is never used.
//!
//! The files: this one has the command (options, the job, reading the live topology);
//! `model.rs` the planner's view of the cluster and the report; `plan.rs` the pure planning,
//! island by island; `execute.rs` runs the failovers and waits for each; `lease.rs` the
//! cluster-wide lease that keeps two rebalances apart; `tests.rs` the planner's unit tests.
//! The public items are re-exported here, so their paths are `admin::rebalance::*`.

mod execute;
mod model;
mod plan;
#[cfg(test)]
mod tests;

pub use crate::admin::lease::{Lease, LEASE_KEY, LEASE_TTL};
pub use model::{Island, Move, Plan, TopoNode, Topology};
pub use plan::plan;

use crate::admin::jobs::{self, Job};
use crate::admin::options::{self, Accepts, CommonOptions, HostAddr, OptionError};
use crate::admin::report::Report;
use crate::backend::node_client::NodeClient;
use crate::cluster::{parse_cluster_nodes, NodeLine};
use crate::route::resp;
use crate::shared::Shared;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The job engine name (`PROXY JOBS`); one non-dry run at a time per proxy.
pub const ENGINE: &str = "rebalance-masters";

/// Default deadline for one failover to be visible on every node and re-synced.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Print the plan only.
    pub dry_run: bool,
    /// Stop once every island's spread (most minus fewest masters per host) is at most this.
    pub tolerance: usize,
    /// Plan and run at most this many failovers (whole paths only).
    pub max_moves: Option<usize>,
    /// Reply `OK job <id>` at once and run in the background.
    pub detach: bool,
    /// Allow moving shards whose master is flagged failing (`CLUSTER FAILOVER FORCE`).
    pub force: bool,
    /// Per-failover deadline (roles visible everywhere, demoted master re-synced).
    pub timeout: Duration,
    /// Host labels by `ip:port` or `ip`; a node without a label is on the host named by its IP.
    pub labels: BTreeMap<String, String>,
    /// Reply with one JSON document instead of lines (ignored with `ASYNC`).
    pub json: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            tolerance: 1,
            max_moves: None,
            detach: false,
            force: false,
            timeout: DEFAULT_FAILOVER_TIMEOUT,
            labels: BTreeMap::new(),
            json: false,
        }
    }
}

/// Why `PROXY REBALANCE`'s arguments were refused. `Display` is the reply's text after
/// `ERR ` (every REBALANCE usage error, in one place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// Not `MASTERS` (`SLOTS` is answered by [`crate::admin::slots`] before this parser).
    Usage,
    /// `HOST` without its address and label.
    Host,
    /// `TIMEOUT` below one second.
    TimeoutTooShort,
    /// `TIMEOUT` missing or not a number.
    Timeout,
    /// `TOLERANCE` or `MAXMOVES` (named) without a non-negative integer.
    Number(&'static str),
    /// A word that is no option (as given).
    Unknown(String),
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgError::Usage => f.write_str(
                "usage: PROXY REBALANCE MASTERS [DRYRUN] [TOLERANCE n] \
                 [MAXMOVES k] [ASYNC] [FORCE] [JSON] [TIMEOUT seconds] \
                 [HOST <ip|ip:port> <label>]... | PROXY REBALANCE SLOTS ... (PROXY HELP)",
            ),
            ArgError::Host => f.write_str("HOST needs an address (ip or ip:port) and a label"),
            ArgError::TimeoutTooShort => f.write_str("TIMEOUT must be at least 1 second"),
            ArgError::Timeout => f.write_str("TIMEOUT needs a non-negative integer"),
            ArgError::Number(name) => write!(f, "{name} needs a non-negative integer"),
            // Capped: the word is the client's and lands in a reply and a log line.
            ArgError::Unknown(word) => write!(
                f,
                "unknown option '{}' for PROXY REBALANCE MASTERS",
                word.to_ascii_uppercase()
                    .chars()
                    .take(64)
                    .collect::<String>()
            ),
        }
    }
}

impl std::error::Error for ArgError {}

impl Options {
    /// Parses the words after `PROXY REBALANCE` (starting with `MASTERS`).
    pub fn parse(args: &[Bytes]) -> Result<Options, ArgError> {
        let words = options::words(args);
        match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("MASTERS") => {}
            _ => return Err(ArgError::Usage),
        }
        const ACCEPTS: Accepts = Accepts {
            json: true,
            dryrun: true,
            detach: true,
            timeout_min_secs: Some(1),
            host: Some(HostAddr::IpOrIpPort),
        };
        let mut common = CommonOptions::default();
        let mut o = Options::default();
        let mut i = 1;
        let number = |i: usize, name: &'static str| -> Result<usize, ArgError> {
            words
                .get(i)
                .and_then(|w| w.parse::<usize>().ok())
                .ok_or(ArgError::Number(name))
        };
        while i < words.len() {
            let taken = common.take(&ACCEPTS, &words, i).map_err(|e| match e {
                OptionError::Missing(w) if w == "HOST" => ArgError::Host,
                OptionError::TooShort(_) => ArgError::TimeoutTooShort,
                _ => ArgError::Timeout,
            })?;
            if let Some(n) = taken {
                i += n;
                continue;
            }
            match words[i].to_ascii_uppercase().as_str() {
                "FORCE" => o.force = true,
                "TOLERANCE" => {
                    o.tolerance = number(i + 1, "TOLERANCE")?;
                    i += 1;
                }
                "MAXMOVES" => {
                    o.max_moves = Some(number(i + 1, "MAXMOVES")?);
                    i += 1;
                }
                _ => return Err(ArgError::Unknown(words[i].clone())),
            }
            i += 1;
        }
        o.dry_run = common.dryrun;
        o.detach = common.detach;
        o.json = common.json;
        o.timeout = common.timeout.unwrap_or(DEFAULT_FAILOVER_TIMEOUT);
        o.labels = common.hosts.labels;
        Ok(o)
    }

    /// The host a node at `ip:port` is on.
    pub fn host_of(&self, ip: &str, port: u16) -> String {
        self.labels
            .get(&format!("{ip}:{port}"))
            .or_else(|| self.labels.get(ip))
            .cloned()
            .unwrap_or_else(|| ip.to_string())
    }
}

/// Answers `PROXY REBALANCE ...`; `args` starts after `REBALANCE`. `SLOTS` goes to the slot
/// engine ([`crate::admin::slots`]).
pub async fn answer(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    if args
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"SLOTS"))
    {
        return crate::admin::slots::answer_rebalance(&args[1..], shared).await;
    }
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => return resp::error(&format!("ERR {e}")),
    };
    if !opts.dry_run {
        let busy = shared.registries.jobs.changing(&[ENGINE]);
        if let Some(job) = busy {
            return resp::error(&format!(
                "ERR a master rebalance is already running here as job {}; PROXY JOB {} shows it",
                job.id, job.id
            ));
        }
    }
    let words: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .collect();
    let command = format!("PROXY REBALANCE {}", words.join(" "));
    let shared2 = Arc::clone(shared);
    // With ASYNC the reply is `OK job <id>` whatever was asked.
    let json = opts.json && !opts.detach;
    jobs::run(
        &shared.registries.jobs,
        ENGINE,
        &command,
        opts.detach,
        json,
        move |job| run(shared2, opts, job),
    )
    .await
}

/// The live topology and the `CLUSTER NODES` lines it came from.
struct Live {
    topo: Topology,
    lines: Vec<NodeLine>,
    source: String,
}

fn node_timeout(shared: &Shared) -> Duration {
    shared
        .settings
        .live
        .connect_timeout()
        .max(Duration::from_secs(2))
        .min(
            shared
                .settings
                .live
                .request_timeout()
                .max(Duration::from_secs(2)),
        )
}

/// Nodes to read the topology from: the proxy's masters, their replicas, then the seeds.
fn candidates(shared: &Shared) -> Vec<String> {
    let map = shared.topology.map.load();
    let mut out: Vec<String> = Vec::new();
    let masters = map.nodes.iter().filter(|n| !n.failing).map(|n| &*n.addr);
    let replicas = map
        .nodes
        .iter()
        .flat_map(|n| n.replicas.iter().map(|r| &**r));
    for a in masters
        .chain(replicas)
        .chain(shared.settings.config.seeds.iter().map(String::as_str))
    {
        if !out.iter().any(|x| x == a) {
            out.push(a.to_string());
        }
    }
    out
}

/// Reads `CLUSTER NODES` from the first node that knows a master owning slots, then every
/// replica's `INFO replication` (in parallel) for its link state.
async fn read_topology(shared: &Shared, opts: &Options, extra: &[String]) -> anyhow::Result<Live> {
    let timeout = node_timeout(shared);
    let mut errors = Vec::new();
    let mut found = None;
    for addr in extra.iter().cloned().chain(candidates(shared)) {
        let got = async {
            let mut c = NodeClient::connect(&shared.settings.dialer, &addr, timeout).await?;
            let text = c.call_text(&["CLUSTER", "NODES"]).await?;
            let ip = addr.rsplit_once(':').map_or(addr.as_str(), |x| x.0);
            parse_cluster_nodes(&text, ip).map_err(|e| anyhow!("{addr}: {e}"))
        }
        .await;
        match got {
            Ok(lines) if lines.iter().any(|l| l.is_master() && !l.slots.is_empty()) => {
                found = Some((lines, addr));
                break;
            }
            Ok(_) => errors.push(format!("{addr}: knows no master that owns slots")),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let Some((lines, source)) = found else {
        bail!("no node gave a usable CLUSTER NODES: {}", errors.join("; "));
    };
    let lines: Vec<NodeLine> = lines.into_iter().filter(NodeLine::is_usable).collect();
    let mut links = tokio::task::JoinSet::new();
    for l in lines.iter().filter(|l| !l.is_master() && !l.is_failing()) {
        let addr = l.addr();
        let dialer = Arc::clone(&shared.settings.dialer);
        links.spawn(async move {
            let up = async {
                let mut c = NodeClient::connect(&dialer, &addr, timeout).await?;
                let info = c.call_text(&["INFO", "replication"]).await?;
                anyhow::Ok(info.lines().any(|x| x.trim() == "master_link_status:up"))
            }
            .await
            .unwrap_or(false);
            (addr, up)
        });
    }
    let mut up: HashMap<String, bool> = HashMap::new();
    while let Some(r) = links.join_next().await {
        if let Ok((addr, ok)) = r {
            up.insert(addr, ok);
        }
    }
    let nodes = lines
        .iter()
        .map(|l| TopoNode {
            id: l.id.clone(),
            addr: l.addr(),
            host: opts.host_of(&l.ip, l.port),
            master_id: if l.is_master() {
                None
            } else {
                l.master_id.clone()
            },
            slots: l.slots.iter().map(|&(a, b)| (b - a) as usize + 1).sum(),
            link_up: l.is_master() || up.get(&l.addr()).copied().unwrap_or(false),
            failing: l.is_failing(),
        })
        .collect();
    Ok(Live {
        topo: Topology { nodes },
        lines,
        source,
    })
}

async fn run(shared: Arc<Shared>, opts: Options, job: Arc<Job>) -> anyhow::Result<Report> {
    let live = read_topology(&shared, &opts, &[])
        .await
        .context("reading the cluster topology")?;
    job.log(format!(
        "read the topology from {}: {} nodes on {} hosts",
        live.source,
        live.topo.nodes.len(),
        live.topo.masters_per_host().len()
    ));
    let first = plan(&live.topo, &opts);
    job.set_total(first.moves.len());
    job.log(format!(
        "planned {} failovers, spread {} -> {}",
        first.moves.len(),
        first.spread_before(),
        first.spread_after()
    ));
    if opts.dry_run || first.moves.is_empty() {
        let lines = first.report(opts.dry_run);
        let json = first.json_value(&lines[0], &first.moves);
        return Ok(Report::lines(lines).with_json(json));
    }
    let holder = super::lease::holder_text(&shared.settings.config.listen.to_string(), job.id);
    let mut lease = Lease::acquire(
        Arc::clone(&shared.settings.dialer),
        &live.lines,
        holder,
        node_timeout(&shared),
    )
    .await?;
    super::lease::log_taken(&job, &lease);
    let result = async {
        // Another holder may have changed the cluster before we took the lease: plan from what
        // is there now.
        let live = read_topology(&shared, &opts, &[])
            .await
            .context("re-reading the topology after taking the lease")?;
        execute::execute(&shared, &opts, &job, &mut lease, live, &first).await
    }
    .await;
    if let Err(e) = lease.release().await {
        job.log(format!(
            "could not release the lease (it expires by itself): {e:#}"
        ));
    }
    result
}
