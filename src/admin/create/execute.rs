//! CREATE's side effects: sending the steps to the nodes (at most [`PARALLEL`] calls in flight
//! per kind of step, a timeout per call) and waiting, with a deadline, until the cluster has
//! converged.

use super::plan::{step_line, Step, Work};
use super::{join_problems, link_problems, PARALLEL};
use crate::admin::jobs::Job;
use crate::admin::placement::NodeSpec;
use crate::admin::survey::{self, NodeState, Survey};
use crate::backend::node_client::NodeClient;
use crate::net::dialer::Dialer;
use crate::route::resp::Value;
use anyhow::{anyhow, bail, Context};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Sends one command; an error reply is an error naming the node and the command.
async fn call(
    dialer: &Dialer,
    addr: &str,
    args: &[String],
    timeout: Duration,
) -> anyhow::Result<Value> {
    let mut c = NodeClient::connect(dialer, addr, timeout).await?;
    match c.call(args).await? {
        Value::Error(e) => bail!("{} on {addr} failed: {e}", args.join(" ")),
        v => Ok(v),
    }
}

/// Runs commands `(addr, args)` with at most [`PARALLEL`] in flight; the first error wins.
async fn run_all(
    dialer: &Arc<Dialer>,
    cmds: Vec<(String, Vec<String>)>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let sem = Arc::new(Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for (addr, args) in cmds {
        let sem = Arc::clone(&sem);
        let dialer = Arc::clone(dialer);
        set.spawn(async move {
            let _permit = sem.acquire().await;
            call(&dialer, &addr, &args, timeout).await.map(|_| ())
        });
    }
    let mut first: Option<anyhow::Error> = None;
    while let Some(res) = set.join_next().await {
        let r = res.map_err(|e| anyhow!("task failed: {e}")).and_then(|r| r);
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

pub(super) fn addrs(nodes: &[NodeSpec]) -> Vec<String> {
    nodes.iter().map(NodeSpec::addr).collect()
}

/// The operator's `HOST` labels, so the final check judges placement by the same hosts.
pub(super) fn labels(nodes: &[NodeSpec]) -> survey::HostLabels {
    survey::HostLabels {
        labels: nodes
            .iter()
            .filter(|n| n.host != n.ip)
            .map(|n| (n.addr(), n.host.clone()))
            .collect(),
    }
}

/// Surveys the listed nodes, then once more the unlisted ones they know (to tell a foreign
/// cluster from a master that never started).
pub(super) async fn survey_listed(
    dialer: &Arc<Dialer>,
    nodes: &[NodeSpec],
    timeout: Duration,
) -> Survey {
    let mut s = survey::survey(dialer, &addrs(nodes), timeout).await;
    let more = survey::unsurveyed(&s);
    if !more.is_empty() {
        s.nodes
            .extend(survey::survey(dialer, &more, timeout).await.nodes);
    }
    s
}

/// Polls until `problems` of a fresh survey is empty, or the deadline passes; then the error
/// lists what is still wrong with hints.
async fn wait_until(
    job: &Job,
    dialer: &Arc<Dialer>,
    what: &str,
    nodes: &[NodeSpec],
    timeout: Duration,
    wait: Duration,
    problems: impl Fn(&[NodeState]) -> Vec<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let mut last_log = Instant::now();
    loop {
        let s = survey::survey(dialer, &addrs(nodes), timeout).await;
        let p = problems(&s.nodes);
        if p.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            const SHOWN: usize = 20;
            let mut msg = format!(
                "{what}: not reached within {wait:?}; {} problem(s): {}",
                p.len(),
                p.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ")
            );
            if p.len() > SHOWN {
                msg.push_str(&format!("; and {} more", p.len() - SHOWN));
            }
            msg.push_str(
                ". Hints: is each node's cluster bus port (port + 10000 unless cluster-port is \
                 set) reachable from every other node (firewall)? Do nodes announce the \
                 address they are listed under (cluster-announce-ip, bind-source-addr on \
                 hosts with several addresses)? Re-running PROXY CREATE continues from here.",
            );
            bail!(msg);
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            job.log(format!(
                "{what}: still waiting ({} problem(s), e.g. {})",
                p.len(),
                p[0]
            ));
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Executes the steps in order; consecutive steps of one kind run in parallel.
pub(super) async fn execute(
    job: &Job,
    dialer: &Arc<Dialer>,
    work: &Work,
    nodes: &[NodeSpec],
    seed_cport: impl Fn(usize) -> u16,
    timeout: Duration,
    wait: Duration,
) -> anyhow::Result<()> {
    let ids = &work.ids;
    let mut i = 0;
    while i < work.steps.len() {
        let kind = std::mem::discriminant(&work.steps[i]);
        let mut j = i;
        while j < work.steps.len() && std::mem::discriminant(&work.steps[j]) == kind {
            j += 1;
        }
        let batch = &work.steps[i..j];
        let mut cmds = Vec::new();
        for step in batch {
            let s = |x: &str| x.to_string();
            match step {
                Step::SetEpoch { node, epoch } => cmds.push((
                    nodes[*node].addr(),
                    vec![s("CLUSTER"), s("SET-CONFIG-EPOCH"), epoch.to_string()],
                )),
                Step::AddSlots { node, slots } => cmds.push((
                    nodes[*node].addr(),
                    vec![
                        s("CLUSTER"),
                        s("ADDSLOTSRANGE"),
                        slots.0.to_string(),
                        slots.1.to_string(),
                    ],
                )),
                Step::Meet { node, seed } => cmds.push((
                    nodes[*node].addr(),
                    vec![
                        s("CLUSTER"),
                        s("MEET"),
                        nodes[*seed].ip.clone(),
                        nodes[*seed].port.to_string(),
                        seed_cport(*seed).to_string(),
                    ],
                )),
                Step::Replicate { node, master } => cmds.push((
                    nodes[*node].addr(),
                    vec![s("CLUSTER"), s("REPLICATE"), ids[*master].clone()],
                )),
                Step::Takeover { node, .. } => cmds.push((
                    nodes[*node].addr(),
                    vec![s("CLUSTER"), s("FAILOVER"), s("TAKEOVER")],
                )),
                Step::WaitJoined => {
                    wait_until(job, dialer, "cluster joined", nodes, timeout, wait, |l| {
                        join_problems(l, ids)
                    })
                    .await?
                }
                Step::WaitLinks => {
                    wait_until(
                        job,
                        dialer,
                        "replication links up",
                        nodes,
                        timeout,
                        wait,
                        link_problems,
                    )
                    .await?
                }
            }
        }
        if !cmds.is_empty() {
            run_all(dialer, cmds, timeout)
                .await
                .with_context(|| format!("while running: {}", step_line(&batch[0], nodes, ids)))?;
        }
        for step in batch {
            job.step_done(step_line(step, nodes, ids));
        }
        i = j;
    }
    Ok(())
}
