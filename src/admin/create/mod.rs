//! `PROXY CREATE REPLICAS <r> NODES <host:port> [HOST <label>] ... [DRYRUN] [ASYNC] [TIMEOUT <s>]`:
//! builds a Redis Cluster online from running nodes, with the exact placement of
//! [`crate::admin::placement::plan`] (the same planner as `slotproxy render`).
//!
//! Shape (the admin engines' common one): survey every listed node, decide in the pure
//! [`decide`] what is left to do, print it (`DRYRUN` stops there), execute it step by step with
//! bounded parallelism and a timeout per call, wait for convergence with a deadline, and end
//! with CHECK. Invariants:
//! - one CREATE at a time on any node, across proxies: before it surveys, a run claims every
//!   listed node with a named connection and refuses if another run's name is there (see
//!   `claim.rs`; dry runs claim nothing);
//! - nothing is written before every node passed validation (reachable, cluster-enabled, and
//!   either empty or already part of exactly the cluster being built);
//! - state that contradicts the plan (foreign node IDs, slots owned elsewhere, keys in a node
//!   that is to become a replica) is never overwritten: the command refuses and names the node;
//! - re-running recomputes from live state, so a create that was killed finishes what is left,
//!   and a finished cluster answers that there is nothing to do.
//!
//! Three situations, recognised from live state:
//! - **Fresh**: every node is empty and alone. Plan, then `CLUSTER SET-CONFIG-EPOCH` (masters get
//!   unique epochs `1..M`, replicas-to-be `M+1..N`, so Redis never has to resolve a collision)
//!   and `ADDSLOTSRANGE` on every node before any MEET, then the `MEET`s of a full mesh (the
//!   handshakes start as fast as the nodes take them, [`MEET_WINDOW`] at a time, instead of
//!   waiting for gossip to spread the nodes from one seed; see [`meet_sender`] for who meets
//!   whom), `CLUSTER REPLICATE` on each replica as soon as it
//!   knows its master, and one wait until every node sees every other, all agree on the slot
//!   map and the roles, every node is `cluster_state:ok` and every `master_link_status` is up
//!   (a master that waits only for Redis's rejoin delay meanwhile runs with a lowered
//!   cluster-node-timeout: see `rejoin.rs`).
//! - **Resume**: the nodes are part way through exactly that plan (a create interrupted after any
//!   step). The same steps, minus what is already done.
//! - **Adopt**: the nodes already form a cluster that is not the fresh plan (for instance one
//!   started from `slotproxy render` files, or one that failed over since). Only repair is
//!   done: `MEET` listed nodes that do not know each other, and promote the replica of a master
//!   that never started (see [`Step::Takeover`]). Nothing else changes.
//!
//! The files: this one has the command (arguments, the run from survey to check) and what a
//! converged cluster is ([`join_problems`], [`link_problems`]); `claim.rs` the claim on the
//! nodes; `plan.rs` the pure [`decide`]
//! and the step and plan lines; `refusal.rs` every refusal's text; `converge.rs` the pure
//! decisions of the wait (MEET pacing, which nodes to nudge); `rejoin.rs` the
//! cluster-node-timeout a master runs with while it waits out Redis's rejoin delay (lowered,
//! then restored); `execute.rs` runs the steps,
//! `pool.rs` holds the connections to the nodes, `wait.rs` polls until converged; `tests.rs`
//! the unit tests. The public items are re-exported here, so their paths are
//! `admin::create::*`.

mod claim;
mod converge;
mod execute;
mod plan;
mod pool;
mod refusal;
mod rejoin;
#[cfg(test)]
mod tests;
mod wait;

pub use claim::{claim_name, rivals, take as claim_nodes, Claim, Rival, CLAIM_PREFIX};
pub use converge::{handshake_problems, handshakes, knows, nudges, MeetQueue, Phase, MEET_WINDOW};
pub use plan::{decide, meet_sender, plan_lines, step_line, Mode, Step, Work};
pub use refusal::{Mismatch, NotResumable, Refusal};
pub use rejoin::{parse_timeout, waits_out_delay, Rejoin, REJOIN_TIMEOUT_MS};

use super::check;
use super::options::{self, Accepts, CommonOptions, OptionError};
use super::survey::NodeState;
use crate::admin::jobs::{self, Job};
use crate::admin::placement::NodeSpec;
use crate::admin::report::Report;
use crate::cluster::slots::SLOT_COUNT;
use crate::net::dialer::Dialer;
use crate::shared::Shared;
use anyhow::anyhow;
use bytes::Bytes;
use execute::{addrs, execute, labels, survey_listed};
use std::sync::Arc;
use std::time::Duration;

/// A parsed `PROXY CREATE` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Replicas per master.
    pub replicas: usize,
    /// The nodes, in the order given (hosts default to the IP).
    pub nodes: Vec<NodeSpec>,
    /// Print the plan and the steps, change nothing.
    pub dryrun: bool,
    /// Reply `OK job <id>` at once and run in the background.
    pub detach: bool,
    /// Deadline for each wait (cluster joined, replication links up).
    pub wait: Duration,
}

const USAGE: &str = "usage: PROXY CREATE REPLICAS <r> NODES <host:port> [HOST <label>] ... \
                     [DRYRUN] [ASYNC] [TIMEOUT <seconds>]";

/// The shared words CREATE takes (its `HOST <label>` follows a node address and is its own).
const ACCEPTS: Accepts = Accepts {
    json: false,
    dryrun: true,
    detach: true,
    timeout_min_secs: Some(0),
    host: None,
};

/// Why `PROXY CREATE`'s arguments were refused. `Display` is the reply's text after
/// `ERR PROXY CREATE: ` (every CREATE usage error, in one place); all but the address error
/// end with the usage line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// The word (upper-cased) needs a value and none follows.
    Missing(String),
    /// `TIMEOUT`'s value is not whole seconds.
    Timeout,
    /// `REPLICAS`'s value is not a number.
    Replicas,
    /// `HOST <label>` before any node address.
    HostFirst,
    /// A word after `NODES` that is not `host:port` (as given).
    Address(String),
    /// A word that is no option (as given).
    Unexpected(String),
    /// No `REPLICAS`.
    NoReplicas,
    /// No `NODES`.
    NoNodes,
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgError::Missing(w) => write!(f, "{w} needs a value; {USAGE}"),
            ArgError::Timeout => write!(f, "TIMEOUT needs whole seconds; {USAGE}"),
            ArgError::Replicas => write!(f, "REPLICAS needs a number; {USAGE}"),
            ArgError::HostFirst => write!(f, "HOST must follow a node address; {USAGE}"),
            ArgError::Address(w) => write!(f, "bad node address '{w}': expected host:port"),
            ArgError::Unexpected(w) => write!(f, "unexpected '{w}'; {USAGE}"),
            ArgError::NoReplicas => write!(f, "REPLICAS is required; {USAGE}"),
            ArgError::NoNodes => write!(f, "NODES is required; {USAGE}"),
        }
    }
}

impl std::error::Error for ArgError {}

/// Parses the arguments after `CREATE`.
pub fn parse_args(args: &[Bytes]) -> Result<Request, ArgError> {
    let words = options::words(args);
    let mut common = CommonOptions::default();
    let mut replicas = usize::MAX;
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut i = 0;
    let mut in_nodes = false;
    while i < words.len() {
        let taken = common.take(&ACCEPTS, &words, i).map_err(|e| match e {
            OptionError::Missing(w) => ArgError::Missing(w),
            _ => ArgError::Timeout,
        })?;
        if let Some(n) = taken {
            in_nodes = false;
            i += n;
            continue;
        }
        let w = words[i].to_ascii_uppercase();
        let next = |i: usize| {
            words
                .get(i + 1)
                .cloned()
                .ok_or_else(|| ArgError::Missing(w.clone()))
        };
        match w.as_str() {
            "REPLICAS" => {
                replicas = next(i)?.parse().map_err(|_| ArgError::Replicas)?;
                in_nodes = false;
                i += 2;
            }
            "NODES" => {
                in_nodes = true;
                i += 1;
            }
            "HOST" => {
                let label = next(i)?;
                let last = nodes.last_mut().ok_or(ArgError::HostFirst)?;
                last.host = label;
                i += 2;
            }
            _ if in_nodes => {
                let (ip, port) = words[i]
                    .rsplit_once(':')
                    .and_then(|(ip, p)| Some((ip, p.parse::<u16>().ok()?)))
                    .filter(|(ip, _)| !ip.is_empty())
                    .ok_or_else(|| ArgError::Address(words[i].clone()))?;
                nodes.push(NodeSpec::new(ip, port));
                i += 1;
            }
            _ => return Err(ArgError::Unexpected(words[i].clone())),
        }
    }
    if replicas == usize::MAX {
        return Err(ArgError::NoReplicas);
    }
    if nodes.is_empty() {
        return Err(ArgError::NoNodes);
    }
    // Handshakes take a few hundred ms per gossip round; big clusters need more rounds.
    let wait = common
        .timeout
        .unwrap_or(Duration::from_secs(30 + nodes.len() as u64 / 10));
    Ok(Request {
        replicas,
        nodes,
        dryrun: common.dryrun,
        detach: common.detach,
        wait,
    })
}

/// What still keeps the listed nodes from being one converged cluster, one line per problem
/// (empty when converged): a node missing from a view, a handshake or failure flag on a listed
/// node, a slot map that differs from the first node's, uncovered slots, or a node whose
/// `cluster_state` is not ok yet.
pub fn join_problems(listed: &[NodeState], ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut reference: Option<(&str, Vec<Option<&str>>)> = None;
    for n in listed {
        if let Some(e) = &n.error {
            out.push(format!("{} does not answer: {e}", n.addr));
            continue;
        }
        for (j, id) in ids.iter().enumerate() {
            let other = listed.get(j).map_or("?", |x| x.addr.as_str());
            if other == n.addr {
                continue;
            }
            match n.view.iter().find(|l| l.id == *id) {
                None => out.push(format!("{} does not see {other}", n.addr)),
                Some(l) => {
                    let bad: Vec<&str> = l
                        .flags
                        .iter()
                        .map(String::as_str)
                        .filter(|f| matches!(*f, "handshake" | "fail" | "fail?" | "noaddr"))
                        .collect();
                    if !bad.is_empty() {
                        out.push(format!("{} sees {other} as {}", n.addr, bad.join(",")));
                    }
                }
            }
        }
        state_problem(n, &mut out);
        let mut map: Vec<Option<&str>> = vec![None; SLOT_COUNT];
        for l in n.view.iter().filter(|l| l.is_master()) {
            for &(a, b) in &l.slots {
                for x in a..=b {
                    map[x as usize] = Some(l.id.as_str());
                }
            }
        }
        let holes = map.iter().filter(|o| o.is_none()).count();
        if holes > 0 {
            out.push(format!("{} sees {holes} slot(s) without owner", n.addr));
        }
        match &reference {
            None => reference = Some((n.addr.as_str(), map)),
            Some((first, r)) => {
                let differ = r.iter().zip(&map).filter(|(a, b)| a != b).count();
                if differ > 0 {
                    out.push(format!(
                        "{} and {first} disagree about the owner of {differ} slot(s)",
                        n.addr
                    ));
                }
            }
        }
    }
    out
}

/// A node that does not report `cluster_state:ok` yet (a master that was alone waits a moment
/// before it turns ok, so a converged view is not enough).
fn state_problem(n: &NodeState, out: &mut Vec<String>) {
    let state = n
        .cluster_info
        .get("cluster_state")
        .map_or("unknown", String::as_str);
    if state != "ok" {
        out.push(format!("{} reports cluster_state:{state}", n.addr));
    }
}

/// What keeps the replicas from being linked (empty when every listed replica's link is up and
/// every listed node sees it as a replica of the same master).
pub fn link_problems(listed: &[NodeState]) -> Vec<String> {
    let mut out = Vec::new();
    for n in listed.iter().filter(|n| n.reachable()) {
        state_problem(n, &mut out);
        let Some(me) = n.myself().filter(|m| !m.is_master()) else {
            continue;
        };
        let link = n.repl("master_link_status").unwrap_or("unknown");
        if link != "up" {
            out.push(format!("{} replication link is {link}", n.addr));
        }
        for o in listed.iter().filter(|o| o.reachable() && o.addr != n.addr) {
            let seen = o.view.iter().find(|l| l.id == me.id);
            if seen.is_none_or(|l| l.is_master() || l.master_id != me.master_id) {
                out.push(format!(
                    "{} does not see {} as the replica it is yet",
                    o.addr, n.addr
                ));
            }
        }
    }
    out
}

/// The whole engine: claim the nodes (unless a dry run), survey, decide, report or execute,
/// check. `listen` names this proxy in the claim (see `claim.rs`).
pub async fn run(
    job: Arc<Job>,
    dialer: Arc<Dialer>,
    req: Request,
    timeout: Duration,
    listen: String,
) -> anyhow::Result<Report> {
    // Held to the end of the run: dropping it lets other proxies' CREATEs in.
    let _claim = if req.dryrun {
        None
    } else {
        let t = std::time::Instant::now();
        let c = claim::take(
            &dialer,
            &req.nodes,
            &claim_name("create", &listen, job.id),
            timeout,
        )
        .await?;
        job.log(format!(
            "claimed {} node(s) in {} ms",
            req.nodes.len(),
            t.elapsed().as_millis()
        ));
        Some(c)
    };
    let t = std::time::Instant::now();
    let s = survey_listed(&dialer, &req.nodes, timeout).await;
    job.log(format!(
        "surveyed {} node(s) in {} ms",
        s.nodes.len(),
        t.elapsed().as_millis()
    ));
    let work = decide(&req.nodes, req.replicas, &s).map_err(|e| anyhow!("refused: {e}"))?;
    let mut lines = Vec::new();
    if let Some(plan) = &work.plan {
        lines.extend(plan_lines(&req.nodes, plan));
    }
    lines.extend(work.notes.iter().map(|n| format!("note {n}")));
    let steps: Vec<String> = work
        .steps
        .iter()
        .map(|st| step_line(st, &req.nodes, &work.ids))
        .collect();
    let mode = format!("{:?}", work.mode).to_ascii_lowercase();
    if req.dryrun {
        let mut out = vec![format!(
            "OK dryrun ({mode}): {} step(s); nothing was changed",
            steps.len()
        )];
        out.extend(lines);
        out.extend(steps);
        return Ok(Report::lines(out));
    }
    if !work.changes_anything() {
        let (cs, f) =
            check::run_check(&dialer, &addrs(&req.nodes), timeout, &labels(&req.nodes)).await;
        let mut out = vec![format!(
            "OK nothing to do: the {} node(s) already form the cluster; check: {}",
            req.nodes.len(),
            check::verdict(&f)
        )];
        out.extend(lines);
        out.extend(
            check::report_lines(&cs, &f)
                .into_iter()
                .map(|l| format!("check {l}")),
        );
        return Ok(Report::lines(out));
    }
    job.set_total(work.steps.len());
    let cports: Vec<u16> = req
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            s.nodes
                .get(i)
                .and_then(NodeState::myself)
                .map(|m| m.cport)
                .filter(|&c| c != 0)
                .unwrap_or(n.port.saturating_add(10000))
        })
        .collect();
    let rejoin = execute(
        &job,
        &dialer,
        &work,
        &req.nodes,
        |i| cports.get(i).copied().unwrap_or(0),
        timeout,
        req.wait,
    )
    .await?;
    let t = std::time::Instant::now();
    let (cs, f) = check::run_check(&dialer, &addrs(&req.nodes), timeout, &labels(&req.nodes)).await;
    let verdict = check::verdict(&f);
    job.log(format!(
        "check: {verdict} in {} ms",
        t.elapsed().as_millis()
    ));
    let what = match &work.plan {
        Some(p) => format!(
            "{} masters, {} replicas",
            p.shards.len(),
            p.shards.iter().map(|s| s.replicas.len()).sum::<usize>()
        ),
        None => "repaired the existing cluster".to_string(),
    };
    let head = if f.iter().all(|x| x.severity == check::Severity::Warn) {
        format!(
            "OK created ({mode}): {what}, {} step(s); check: {verdict}",
            steps.len()
        )
    } else {
        format!(
            "{verdict} after create ({mode}): {what}, {} step(s)",
            steps.len()
        )
    };
    let mut out = vec![head];
    out.extend(lines);
    out.extend(rejoin.report_line(|i| req.nodes.get(i).map_or_else(String::new, NodeSpec::addr)));
    out.extend(steps);
    out.extend(
        check::report_lines(&cs, &f)
            .into_iter()
            .map(|l| format!("check {l}")),
    );
    Ok(Report::lines(out))
}

/// Answers `PROXY CREATE ...` (args after CREATE).
pub async fn answer(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let req = match parse_args(args) {
        Ok(r) => r,
        Err(e) => return crate::route::resp::error(&format!("ERR PROXY CREATE: {e}")),
    };
    if let Some(j) = shared.registries.jobs.running("create") {
        return crate::route::resp::error(&format!(
            "ERR PROXY CREATE: job {} is already creating a cluster ({}); see PROXY JOB {}",
            j.id, j.command, j.id
        ));
    }
    let command = format!(
        "PROXY CREATE {}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let timeout = check::node_timeout(shared);
    let dialer = Arc::clone(&shared.settings.dialer);
    let detach = req.detach;
    let listen = shared.settings.config.listen.to_string();
    // CREATE has no JSON form (yet): its report is lines only.
    jobs::run(
        &shared.registries.jobs,
        "create",
        &command,
        detach,
        false,
        move |job| run(job, dialer, req, timeout, listen),
    )
    .await
}
