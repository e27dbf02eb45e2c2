//! The membership engines' side effects: sending the steps (at most [`PARALLEL`] calls in
//! flight, a timeout per call), waiting with a deadline until the cluster has converged, and
//! making the nodes that stay forget the removed ones. The cluster lease is renewed between
//! steps and on every poll.

use super::plan::{Step, Work};
use crate::admin::create::{join_problems, link_problems};
use crate::admin::jobs::Job;
use crate::admin::lease::Lease;
use crate::admin::survey::{self, NodeState};
use crate::backend::node_client::NodeClient;
use crate::net::dialer::Dialer;
use crate::route::resp::Value;
use anyhow::{anyhow, bail, Context};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Calls to nodes in flight at once.
pub const PARALLEL: usize = 16;

/// How often a poll reads the nodes.
const POLL: Duration = Duration::from_millis(200);

/// How long a new node may go without knowing the node it was to meet before MEET is sent
/// again: Redis drops a handshake that has not finished within the node timeout (a loaded
/// host can take that long) and never retries it.
const AGAIN: Duration = Duration::from_secs(3);

/// MEETs to send again: those of `meets` whose node neither knows its seed nor is shaking
/// hands with it.
pub fn meets_again(states: &[NodeState], meets: &[Step]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for step in meets {
        let Step::Meet {
            node,
            ip,
            port,
            cport,
        } = step
        else {
            continue;
        };
        let seed = format!("{ip}:{port}");
        let Some(n) = states.iter().find(|n| n.addr == *node && n.reachable()) else {
            continue;
        };
        if !n.view.iter().any(|l| !l.has("myself") && l.addr() == seed) {
            out.push((
                node.clone(),
                vec![
                    "CLUSTER".into(),
                    "MEET".into(),
                    ip.clone(),
                    port.to_string(),
                    cport.to_string(),
                ],
            ));
        }
    }
    out
}

/// How long FORGET is left to spread before it is sent again to every node that stays (each
/// send also restarts that node's 60 s ban of the forgotten ID).
const FORGET_AGAIN: Duration = Duration::from_secs(2);

/// Everything a run needs to reach the nodes.
pub struct Exec<'a> {
    /// The proxy (for the slot mover's drain).
    pub shared: &'a crate::shared::Shared,
    /// The job (log and progress).
    pub job: &'a Job,
    /// How the proxy reaches nodes.
    pub dialer: &'a Arc<Dialer>,
    /// The cluster lease this run holds.
    pub lease: &'a mut Lease,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Deadline of one wait.
    pub wait: Duration,
    /// The command to re-run, for the hints.
    pub engine: &'static str,
}

/// Sends one command; an error reply is an error naming the node and the command, unless
/// `tolerated` accepts it.
async fn call(
    dialer: &Dialer,
    addr: &str,
    args: &[String],
    timeout: Duration,
    tolerated: fn(&str) -> bool,
) -> anyhow::Result<Value> {
    let mut c = NodeClient::connect(dialer, addr, timeout).await?;
    match c.call(args).await? {
        Value::Error(e) if !tolerated(&e) => bail!("{} on {addr} failed: {e}", args.join(" ")),
        v => Ok(v),
    }
}

fn strict(_: &str) -> bool {
    false
}

/// `CLUSTER FORGET` of a node the receiver no longer knows is what we want.
fn unknown_node(e: &str) -> bool {
    e.contains("Unknown node")
}

/// Runs `(addr, args)` commands with at most [`PARALLEL`] in flight; the first error wins.
async fn run_all(
    dialer: &Arc<Dialer>,
    cmds: Vec<(String, Vec<String>)>,
    timeout: Duration,
    tolerated: fn(&str) -> bool,
) -> anyhow::Result<()> {
    let sem = Arc::new(Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for (addr, args) in cmds {
        let sem = Arc::clone(&sem);
        let dialer = Arc::clone(dialer);
        set.spawn(async move {
            let _permit = sem.acquire().await;
            call(&dialer, &addr, &args, timeout, tolerated)
                .await
                .map(|_| ())
        });
    }
    let mut first: Option<anyhow::Error> = None;
    while let Some(res) = set.join_next().await {
        if let Err(e) = res.map_err(|e| anyhow!("task failed: {e}")).and_then(|r| r) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// Polls until `problems` of a fresh survey of `addrs` is empty, or the deadline passes; the
/// error then lists what is still wrong. Every [`AGAIN`], the commands `again` derives from
/// the survey are sent (errors only logged: the next poll judges).
async fn wait_until(
    x: &mut Exec<'_>,
    what: &str,
    addrs: &[String],
    problems: impl Fn(&[NodeState]) -> Vec<String>,
    again: impl Fn(&[NodeState]) -> Vec<(String, Vec<String>)>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + x.wait;
    let mut last_log = Instant::now();
    let mut last_again = Instant::now();
    loop {
        x.lease.renew_if_due(x.job).await?;
        let s = survey::survey(x.dialer, addrs, x.timeout).await;
        let p = problems(&s.nodes);
        if p.is_empty() {
            return Ok(());
        }
        if last_again.elapsed() >= AGAIN {
            let cmds = again(&s.nodes);
            if !cmds.is_empty() {
                x.job
                    .log(format!("{what}: sending again: {}", cmds[0].1.join(" ")));
                if let Err(e) = run_all(x.dialer, cmds, x.timeout, strict).await {
                    x.job.log(format!("{what}: {e:#}"));
                }
            }
            last_again = Instant::now();
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not reached within {:?}; {}. Is every node's cluster bus port \
                 reachable from every other node? Re-running PROXY {} continues from here",
                x.wait,
                shown(&p),
                x.engine
            );
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            x.job.log(format!(
                "{what}: still waiting ({} problem(s), e.g. {})",
                p.len(),
                p[0]
            ));
            last_log = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The first problems, and how many more.
fn shown(p: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut out = format!(
        "{} problem(s): {}",
        p.len(),
        p.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ")
    );
    if p.len() > SHOWN {
        out.push_str(&format!("; and {} more", p.len() - SHOWN));
    }
    out
}

/// Which node that stays still lists which removed node (empty when every one forgot).
pub fn remembered(staying: &[NodeState], removed: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for n in staying {
        if let Some(e) = &n.error {
            out.push(format!("{} does not answer: {e}", n.addr));
            continue;
        }
        for (id, addr) in removed {
            if n.view.iter().any(|l| l.id == *id) {
                out.push(format!("{} still lists {addr}", n.addr));
            }
        }
    }
    out
}

/// Sends FORGET of every removed node to every node that stays, concurrently.
async fn forget_everywhere(
    x: &Exec<'_>,
    staying: &[String],
    removed: &[(String, String)],
) -> anyhow::Result<()> {
    let cmds = staying
        .iter()
        .flat_map(|addr| {
            removed.iter().map(move |(id, _)| {
                (
                    addr.clone(),
                    vec!["CLUSTER".into(), "FORGET".into(), id.clone()],
                )
            })
        })
        .collect();
    run_all(x.dialer, cmds, x.timeout, unknown_node).await
}

/// Polls until no node that stays lists a removed node, sending FORGET to every node again
/// while one does (so every node's ban of the removed IDs runs at the same time, and gossip
/// from a late node cannot bring them back to the others).
async fn wait_forgotten(
    x: &mut Exec<'_>,
    staying: &[String],
    removed: &[(String, String)],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + x.wait;
    let mut sent = Instant::now();
    loop {
        x.lease.renew_if_due(x.job).await?;
        let s = survey::survey(x.dialer, staying, x.timeout).await;
        let p = remembered(&s.nodes, removed);
        if p.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the nodes did not forget within {:?}; {}. Re-running PROXY REMOVE NODES \
                 continues from here",
                x.wait,
                shown(&p)
            );
        }
        if sent.elapsed() >= FORGET_AGAIN {
            x.job.log(format!("FORGET again: {}", p[0]));
            forget_everywhere(x, staying, removed).await?;
            sent = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Moves every slot off `nodes` (masters to be removed, all at once, so no slot lands on
/// another of them) with the slot mover, under this run's lease; then waits until every node
/// of `addrs` sees that they own nothing. The mover tells the masters at once and the replicas
/// learn it by gossip: a node told to FORGET a master it still thinks owns slots would be left
/// with those slots owned by nobody (and `cluster_state:fail`) until gossip repairs it.
async fn drain(x: &mut Exec<'_>, addrs: &[String], nodes: &[String]) -> anyhow::Result<()> {
    let done = crate::admin::slots::drain(x.shared, x.job, x.lease, nodes).await?;
    x.job.log(format!(
        "drained {}: {} slot(s), {} key(s) moved",
        nodes.join(", "),
        done.slots,
        done.keys
    ));
    let problems = |s: &[NodeState]| drain_unseen(s, nodes);
    let none = |_: &[NodeState]| Vec::new();
    wait_until(x, "every node sees the drain", addrs, problems, none).await
}

/// The nodes whose view still gives one of the `drained` masters slots.
pub fn drain_unseen(states: &[NodeState], drained: &[String]) -> Vec<String> {
    states
        .iter()
        .filter(|n| n.error.is_none())
        .flat_map(|n| {
            n.view
                .iter()
                .filter(|l| !l.slots.is_empty() && drained.contains(&l.addr()))
                .map(|l| format!("{} still sees {} owning slots", n.addr, l.addr()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Checks that every reset node now knows no other node.
async fn verify_reset(x: &Exec<'_>, nodes: &[String]) -> anyhow::Result<()> {
    let s = survey::survey(x.dialer, nodes, x.timeout).await;
    for n in &s.nodes {
        if let Some(e) = &n.error {
            bail!("{} does not answer after its reset: {e}", n.addr);
        }
        let others = n.view.iter().filter(|l| !l.has("myself")).count();
        if others > 0 {
            bail!(
                "{} still knows {others} node(s) after CLUSTER RESET HARD",
                n.addr
            );
        }
    }
    Ok(())
}

/// Executes the steps in order; consecutive steps of one kind run together.
pub async fn execute(x: &mut Exec<'_>, work: &Work) -> anyhow::Result<()> {
    let addrs: Vec<String> = work.cluster.iter().map(|(a, _)| a.clone()).collect();
    let ids: Vec<String> = work.cluster.iter().map(|(_, id)| id.clone()).collect();
    let removed: Vec<(String, String)> = work
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Forget { removed } => Some(removed.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let mut i = 0;
    while i < work.steps.len() {
        x.lease.renew_if_due(x.job).await?;
        let kind = std::mem::discriminant(&work.steps[i]);
        let j = i + work.steps[i..]
            .iter()
            .take_while(|s| std::mem::discriminant(*s) == kind)
            .count();
        let batch = &work.steps[i..j];
        let mut cmds: Vec<(String, Vec<String>)> = Vec::new();
        let mut reset: Vec<String> = Vec::new();
        let mut drained = false;
        for step in batch {
            match step {
                Step::Meet {
                    node,
                    ip,
                    port,
                    cport,
                } => cmds.push((
                    node.clone(),
                    vec![
                        "CLUSTER".into(),
                        "MEET".into(),
                        ip.clone(),
                        port.to_string(),
                        cport.to_string(),
                    ],
                )),
                Step::Replicate {
                    node, master_id, ..
                } => cmds.push((
                    node.clone(),
                    vec!["CLUSTER".into(), "REPLICATE".into(), master_id.clone()],
                )),
                Step::Reset { node } => {
                    cmds.push((node.clone(), words(&["CLUSTER", "RESET", "HARD"])));
                    reset.push(node.clone());
                }
                Step::WaitJoined => {
                    let meets: Vec<Step> = work
                        .steps
                        .iter()
                        .filter(|s| matches!(s, Step::Meet { .. }))
                        .cloned()
                        .collect();
                    let problems = |s: &[NodeState]| join_problems(s, &ids);
                    let again = |s: &[NodeState]| meets_again(s, &meets);
                    wait_until(x, "cluster joined", &addrs, problems, again).await?
                }
                Step::WaitLinks => {
                    let none = |_: &[NodeState]| Vec::new();
                    wait_until(x, "replication links up", &addrs, link_problems, none).await?
                }
                Step::Drain { .. } => {
                    // The batch's drains run as one.
                    if !drained {
                        let nodes: Vec<String> = batch
                            .iter()
                            .filter_map(|s| match s {
                                Step::Drain { node } => Some(node.clone()),
                                _ => None,
                            })
                            .collect();
                        let ids: Vec<&str> = removed
                            .iter()
                            .filter(|(_, a)| nodes.contains(a))
                            .map(|(id, _)| id.as_str())
                            .collect();
                        x.lease.set_remove_note(Some(&ids.join(" "))).await?;
                        drain(x, &addrs, &nodes).await?;
                        drained = true;
                    }
                }
                Step::Forget { removed } => forget_everywhere(x, &addrs, removed).await?,
                Step::WaitForgotten => wait_forgotten(x, &addrs, &removed).await?,
            }
        }
        if !cmds.is_empty() {
            run_all(x.dialer, cmds, x.timeout, strict)
                .await
                .with_context(|| format!("while running: {}", batch[0].line()))?;
        }
        if !reset.is_empty() {
            verify_reset(x, &reset).await?;
        }
        for step in batch {
            x.job.step_done(step.line());
        }
        i = j;
    }
    if work.steps.iter().any(|s| matches!(s, Step::Drain { .. })) {
        x.lease.set_remove_note(None).await?;
    }
    Ok(())
}
