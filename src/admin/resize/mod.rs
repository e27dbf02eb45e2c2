//! `PROXY RESIZE MAXMEMORY <bytes|size|percent> [FORCE] [DRYRUN] [ASYNC] [TIMEOUT s]`: vertical
//! scaling. Sets `maxmemory` on every node of the cluster with `CONFIG SET` and persists it with
//! `CONFIG REWRITE` where the node has a config file.
//!
//! The flow: survey the whole cluster (every node the proxy's nodes know), read each node's
//! `INFO memory` and `INFO server`, decide with the pure [`plan`] (every refusal is made there,
//! before the first write, so a refused run changes nothing on any node), print the plan and
//! stop with `DRYRUN`, otherwise write node by node in [`plan`]'s order and read each value back.
//!
//! Invariants: masters and replicas get the same value. A replica keeps its master's whole
//! data set (replicas do not evict on their own, `replica-ignore-maxmemory yes`), so a replica
//! limited below its master is the first node to run out of memory on a full sync, and with
//! `replica-ignore-maxmemory no` it would evict keys its master keeps and diverge. For the same
//! reason the writes go in the order that keeps every replica's limit at or above its master's
//! at each step (see [`plan`]).
//!
//! No cluster lease is taken: `CONFIG SET maxmemory` changes no slot, role or membership, so it
//! cannot confuse a slot move or failover another engine runs, and an operator who must raise
//! memory during an hour-long rebalance should not wait for it. One run at a time per proxy
//! (the job registry); two proxies resizing at once end with the last writer's value per node,
//! and a re-run converges. A node that joins while a run is under way is not in its survey:
//! re-running sets it too.
//!
//! The files: this one has the command (options, the job, reading and writing nodes);
//! `plan.rs` the pure planning, refusals and report lines; `tests.rs` their unit tests. The
//! public items are re-exported here, so their paths are `admin::resize::*`.

mod plan;
#[cfg(test)]
mod tests;

pub use plan::{
    human, node_line, node_memory, parse_memory, plan, rewrite_outcome, verdict, NodeMemory,
    NodeRead, Persisted, Plan, Refusal, Role, Step, Target, Unreachable,
};

use crate::admin::jobs::{self, Job};
use crate::admin::options::{self, Accepts, CommonOptions, OptionError};
use crate::admin::report::Report;
use crate::admin::survey::{self, NodeState};
use crate::backend::node_client::NodeClient;
use crate::net::dialer::Dialer;
use crate::route::resp::{self, Value};
use crate::shared::Shared;
use anyhow::{anyhow, Context};
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The job engine name (`PROXY JOBS`); one non-dry run at a time per proxy.
pub const ENGINE: &str = "resize-maxmemory";

/// Default deadline of each connect and command sent to a node (`TIMEOUT` changes it).
/// `CONFIG REWRITE` writes and fsyncs a file, so this is longer than a plain read needs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The new maxmemory.
    pub target: Target,
    /// Set a value below a node's `used_memory` anyway.
    pub force: bool,
    /// Print the plan only.
    pub dry_run: bool,
    /// Reply `OK job <id>` at once and run in the background.
    pub detach: bool,
    /// Deadline of each connect and command ([`DEFAULT_TIMEOUT`] if not given).
    pub timeout: Duration,
}

const USAGE: &str =
    "usage: PROXY RESIZE MAXMEMORY <bytes|size like 2gb|percent like 50%> [FORCE] [DRYRUN] \
     [ASYNC] [TIMEOUT seconds]";

/// Why `PROXY RESIZE`'s arguments were refused. `Display` is the reply's text after `ERR `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// Not `MAXMEMORY <value> ...`.
    Usage,
    /// A value that is no memory size or percent (as given).
    Value(String),
    /// A percent outside 1..=100 (as given).
    Percent(String),
    /// `TIMEOUT` missing, not a number, or below one second.
    Timeout,
    /// A word that is no option (as given).
    Unknown(String),
}

/// At most 64 characters of a client's word: it lands in a reply and a log line.
fn capped(word: &str) -> String {
    word.chars().take(64).collect()
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Usage => f.write_str(USAGE),
            // Redis's own text for a memory-or-percent setting, then what is accepted.
            ArgError::Value(v) => write!(
                f,
                "argument must be a memory or percent value ('{}'): bytes, or a number with \
                 b, k (1000), kb (1024), m, mb, g or gb, or 1% to 100% of each node's \
                 total_system_memory",
                capped(v)
            ),
            ArgError::Percent(v) => write!(
                f,
                "percent must be between 1% and 100% ('{}'); 0 (bytes) means no limit",
                capped(v)
            ),
            ArgError::Timeout => f.write_str("TIMEOUT needs a whole number of seconds, at least 1"),
            ArgError::Unknown(w) => write!(
                f,
                "unknown option '{}' for PROXY RESIZE MAXMEMORY; {USAGE}",
                capped(&w.to_ascii_uppercase())
            ),
        }
    }
}

impl std::error::Error for ArgError {}

/// Parses the value word: a memory size, or `N%`.
pub fn parse_target(word: &str) -> Result<Target, ArgError> {
    if let Some(number) = word.strip_suffix('%') {
        let digits_only = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
        if !digits_only {
            return Err(ArgError::Value(word.to_string()));
        }
        return match number.parse::<u64>() {
            Ok(p @ 1..=100) => Ok(Target::Percent(p)),
            _ => Err(ArgError::Percent(word.to_string())),
        };
    }
    parse_memory(word)
        .map(Target::Bytes)
        .ok_or_else(|| ArgError::Value(word.to_string()))
}

impl Options {
    /// Parses the words after `PROXY RESIZE` (starting with `MAXMEMORY`).
    pub fn parse(args: &[Bytes]) -> Result<Options, ArgError> {
        let words = options::words(args);
        let (Some(sub), Some(value)) = (words.first(), words.get(1)) else {
            return Err(ArgError::Usage);
        };
        if !sub.eq_ignore_ascii_case("MAXMEMORY") {
            return Err(ArgError::Usage);
        }
        let target = parse_target(value)?;
        const ACCEPTS: Accepts = Accepts {
            json: false,
            dryrun: true,
            detach: true,
            timeout_min_secs: Some(1),
            host: None,
        };
        let mut common = CommonOptions::default();
        let mut force = false;
        let mut i = 2;
        while i < words.len() {
            match common.take(&ACCEPTS, &words, i) {
                Ok(Some(n)) => i += n,
                Err(
                    OptionError::Missing(_) | OptionError::NotSeconds | OptionError::TooShort(_),
                ) => return Err(ArgError::Timeout),
                Err(OptionError::HostWithoutPort(_)) | Ok(None) => {
                    if !words[i].eq_ignore_ascii_case("FORCE") {
                        return Err(ArgError::Unknown(words[i].clone()));
                    }
                    force = true;
                    i += 1;
                }
            }
        }
        Ok(Options {
            target,
            force,
            dry_run: common.dryrun,
            detach: common.detach,
            timeout: common.timeout.unwrap_or(DEFAULT_TIMEOUT),
        })
    }
}

/// Answers `PROXY RESIZE ...`; `args` starts after `RESIZE`.
pub async fn answer(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => return resp::error(&format!("ERR {e}")),
    };
    if !opts.dry_run {
        let busy = shared
            .registries
            .jobs
            .list()
            .into_iter()
            .find(|j| j.engine == ENGINE && j.running() && !j.command.contains("DRYRUN"));
        if let Some(job) = busy {
            return resp::error(&format!(
                "ERR a resize is already running here as job {}; PROXY JOB {} shows it",
                job.id, job.id
            ));
        }
    }
    let words: Vec<String> = options::words(args)
        .iter()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let command = format!("PROXY RESIZE {}", words.join(" "));
    let shared2 = Arc::clone(shared);
    jobs::run(
        &shared.registries.jobs,
        ENGINE,
        &command,
        opts.detach,
        false,
        move |job| run(shared2, opts, job),
    )
    .await
}

/// Where the survey starts: the nodes of the proxy's slot map (the survey then follows every
/// node they know), or the seeds while the map is empty. Not the seeds as well, as CHECK does:
/// a seed that has left the cluster and is down would refuse every run, though no node of the
/// cluster knows it.
fn start_nodes(shared: &Shared) -> Vec<String> {
    let map = shared.topology.map.load();
    let mut out: Vec<String> = Vec::new();
    for n in &map.nodes {
        out.push(n.addr.to_string());
        out.extend(n.replicas.iter().map(|r| r.to_string()));
    }
    if out.is_empty() {
        out.extend(shared.settings.config.seeds.iter().cloned());
    }
    survey::dedup(&out)
}

/// Reads one reachable node's memory figures.
async fn read_memory(dialer: &Dialer, state: &NodeState, timeout: Duration) -> NodeRead {
    let read = async {
        let mut c = NodeClient::connect(dialer, &state.addr, timeout).await?;
        let memory = c.call_text(&["INFO", "memory"]).await?;
        let server = c.call_text(&["INFO", "server"]).await?;
        anyhow::Ok(node_memory(state, &memory, &server))
    };
    read.await.map_err(|e| Unreachable {
        addr: state.addr.clone(),
        error: format!("{e:#}"),
    })
}

/// Surveys the cluster and reads every node's memory (at most [`survey::PARALLEL`] at once).
async fn read_all(dialer: &Arc<Dialer>, start: &[String], timeout: Duration) -> Vec<NodeRead> {
    let s = survey::survey_closure(dialer, start, timeout).await;
    let sem = Arc::new(tokio::sync::Semaphore::new(survey::PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for (i, state) in s.nodes.iter().enumerate() {
        let (sem, dialer, state) = (Arc::clone(&sem), Arc::clone(dialer), state.clone());
        set.spawn(async move {
            let _permit = sem.acquire().await;
            let read = match &state.error {
                Some(e) => Err(Unreachable {
                    addr: state.addr.clone(),
                    error: e.clone(),
                }),
                None => read_memory(&dialer, &state, timeout).await,
            };
            (i, read)
        });
    }
    let mut out: Vec<Option<NodeRead>> = vec![None; s.nodes.len()];
    while let Some(res) = set.join_next().await {
        if let Ok((i, read)) = res {
            out[i] = Some(read);
        }
    }
    out.into_iter()
        .zip(&s.nodes)
        .map(|(r, n)| {
            r.unwrap_or_else(|| {
                Err(Unreachable {
                    addr: n.addr.clone(),
                    error: "read task failed".into(),
                })
            })
        })
        .collect()
}

/// Sets one node's value (when it differs), reads it back, and persists it.
async fn apply(dialer: &Dialer, step: &Step, timeout: Duration) -> anyhow::Result<Persisted> {
    let addr = &step.node.addr;
    let mut c = NodeClient::connect(dialer, addr, timeout).await?;
    let new = step.new.to_string();
    if step.changes() {
        c.call_text(&["CONFIG", "SET", "maxmemory", &new])
            .await
            .context("CONFIG SET maxmemory")?;
    }
    let got = match c.call(&["CONFIG", "GET", "maxmemory"]).await? {
        Value::Array(Some(v)) => v.get(1).and_then(|x| x.text().ok()),
        _ => None,
    };
    if got.as_deref() != Some(new.as_str()) {
        return Err(anyhow!(
            "CONFIG GET maxmemory reads {} after setting {new}",
            got.unwrap_or_else(|| "nothing".into())
        ));
    }
    // Every node is rewritten, also one already at the value: a run stopped after a node's
    // CONFIG SET (a failed rewrite, a killed proxy) is finished by running it again.
    let reply = c.call(&["CONFIG", "REWRITE"]).await?;
    rewrite_outcome(&reply).map_err(|e| anyhow!("CONFIG REWRITE: {e}"))
}

async fn run(shared: Arc<Shared>, opts: Options, job: Arc<Job>) -> anyhow::Result<Report> {
    let dialer = Arc::clone(&shared.settings.dialer);
    let start = start_nodes(&shared);
    let reads = read_all(&dialer, &start, opts.timeout).await;
    job.log(format!("read {} node(s)", reads.len()));
    let plan = plan(&reads, opts.target, opts.force).map_err(|e| anyhow!("refused: {e}"))?;
    if opts.dry_run {
        let mut lines = vec![verdict(&plan, true)];
        lines.extend(plan.steps.iter().map(|s| node_line(s, None)));
        return Ok(Report::lines(lines));
    }
    job.set_total(plan.steps.len());
    let mut lines = vec![verdict(&plan, false)];
    for (done, step) in plan.steps.iter().enumerate() {
        match apply(&dialer, step, opts.timeout).await {
            Ok(persisted) => {
                let line = node_line(step, Some(persisted));
                job.step_done(line.clone());
                lines.push(line);
            }
            Err(e) => {
                return Err(anyhow!(
                    "stopped at {} after {done} of {} nodes: {e:#}; the nodes after it are \
                     unchanged (PROXY JOB {} lists the done ones); run it again to finish",
                    step.node.addr,
                    plan.steps.len(),
                    job.id
                ))
            }
        }
    }
    Ok(Report::lines(lines))
}
