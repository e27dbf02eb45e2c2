//! CREATE's side effects: sending the steps to the nodes, phase by phase, each phase's
//! duration in the job's log (an operator sees where a slow create spends its time).
//!
//! Every node is driven over one kept connection (`pool.rs`), each node's commands of a phase
//! go in one pipeline, and nodes are served concurrently. The setup (epochs, slots) finishes on
//! every node before the first MEET (a node that knows another refuses `SET-CONFIG-EPOCH`);
//! the MEETs of the full mesh go out as a sliding window ([`MEET_WINDOW`] handshakes under
//! way); each replica-to-be is sent `CLUSTER REPLICATE` as soon as it knows its master (a
//! retrying task per replica, while the others still shake hands); and one loop (`wait.rs`)
//! polls every node until the cluster has joined and every link is up.

use super::converge::{MeetQueue, Phase, MEET_WINDOW};
use super::plan::{step_line, Step, Work};
use super::pool::{meet_cmd, per_node, s, Cmd, Pool};
use super::rejoin::Rejoin;
use super::wait::Waiter;
use crate::admin::jobs::Job;
use crate::admin::placement::NodeSpec;
use crate::admin::survey::{self, Survey};
use crate::backend::node_client::NodeClient;
use crate::net::dialer::Dialer;
use crate::route::resp::Value;
use anyhow::{anyhow, bail, Context};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// First pause between two `CLUSTER REPLICATE` attempts of a replica that does not know its
/// master yet (a handshake takes one or two cluster cron ticks of 100 ms); it grows by half
/// after each attempt up to [`REPLICATE_RETRY_MAX`], so hundreds of waiting replicas do not
/// keep busy nodes busier.
const REPLICATE_RETRY: Duration = Duration::from_millis(10);

/// Longest pause between two `CLUSTER REPLICATE` attempts.
const REPLICATE_RETRY_MAX: Duration = Duration::from_millis(100);

/// The least time a node gets to answer one call or pipeline during a create. While hundreds
/// of handshakes start at once, nodes sharing a small host's cores answer late, and a create is
/// no latency-sensitive path: a node that does not answer at all still fails the create, just
/// a few seconds later.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The command of a step that is one command on one node (not MEET, REPLICATE or a wait).
fn single_command(step: &Step) -> Option<(usize, Cmd)> {
    match step {
        Step::SetEpoch { node, epoch } => Some((
            *node,
            vec![s("CLUSTER"), s("SET-CONFIG-EPOCH"), epoch.to_string()],
        )),
        Step::AddSlots { node, slots } => Some((
            *node,
            vec![
                s("CLUSTER"),
                s("ADDSLOTSRANGE"),
                slots.0.to_string(),
                slots.1.to_string(),
            ],
        )),
        Step::Takeover { node, .. } => {
            Some((*node, vec![s("CLUSTER"), s("FAILOVER"), s("TAKEOVER")]))
        }
        _ => None,
    }
}

/// Milliseconds, for the job's log.
pub(super) fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// What a replica's task reports: its step's index, and how long it took to attach.
pub(super) type Attached = (usize, anyhow::Result<Duration>);

/// Sends `CLUSTER REPLICATE <master id>` to `addr` until it is accepted. "Unknown node" means
/// the replica's handshake with its master has not finished yet: try again shortly, until the
/// deadline. Any other refusal is final.
async fn attach(
    dialer: Arc<Dialer>,
    addr: String,
    master: String,
    master_id: String,
    timeout: Duration,
    deadline: Instant,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut c = NodeClient::connect(&dialer, &addr, timeout).await?;
    let mut pause = REPLICATE_RETRY;
    loop {
        match c.call(&["CLUSTER", "REPLICATE", &master_id]).await? {
            Value::Error(e) if e.contains("Unknown node") && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 3 / 2).min(REPLICATE_RETRY_MAX);
            }
            Value::Error(e) if e.contains("Unknown node") => bail!(
                "{addr} still does not know its master {master} ({master_id}): {e}. Hints: is \
                 {master}'s cluster bus port reachable from {addr}? Re-running PROXY CREATE \
                 continues from here."
            ),
            Value::Error(e) => bail!("CLUSTER REPLICATE {master_id} on {addr} failed: {e}"),
            _ => return Ok(start.elapsed()),
        }
    }
}

/// Executes the steps in order (see the module comment for how phases overlap); returns what
/// the wait did to `cluster-node-timeout` (every change already undone).
pub(super) async fn execute(
    job: &Arc<Job>,
    dialer: &Arc<Dialer>,
    work: &Work,
    nodes: &[NodeSpec],
    cport: impl Fn(usize) -> u16,
    timeout: Duration,
    wait: Duration,
) -> anyhow::Result<Rejoin> {
    let timeout = timeout.max(BUSY_TIMEOUT);
    let ids = &work.ids;
    let steps = &work.steps;
    let line = |st: &Step| step_line(st, nodes, ids);
    let mut pool = Pool::new(dialer, nodes, timeout);
    let mut attaching: JoinSet<Attached> = JoinSet::new();
    let mut meets = MeetQueue::default();
    let mut rejoin = Rejoin::default();
    let mut i = 0;
    while i < steps.len() {
        let phase = Phase::of(&steps[i]);
        let mut j = i;
        while j < steps.len() && Phase::of(&steps[j]) == phase {
            j += 1;
        }
        let batch = &steps[i..j];
        let t = Instant::now();
        match phase {
            Phase::Setup | Phase::Takeover => {
                let cmds = per_node(batch.iter().filter_map(single_command));
                let touched = cmds.len();
                pool.run_checked(cmds)
                    .await
                    .with_context(|| format!("while running: {}", line(&batch[0])))?;
                for st in batch {
                    job.step_done(line(st));
                }
                job.log(format!(
                    "{}: {} command(s) on {touched} node(s) in {} ms",
                    if phase == Phase::Setup {
                        "epochs and slots"
                    } else {
                        "takeover"
                    },
                    batch.len(),
                    ms(t.elapsed())
                ));
            }
            Phase::Meet => {
                let mut queue = MeetQueue::new((i..j).map(|k| (k, &steps[k])));
                let total = queue.len();
                // The plan skipped pairs that knew each other at the survey.
                let (pairs, done) = queue.take(MEET_WINDOW, |_, _| false);
                send_meets(&mut pool, nodes, &pairs, &cport).await?;
                for k in done {
                    job.step_done(line(&steps[k]));
                }
                let next = steps.get(j).map(Phase::of);
                if matches!(next, Some(Phase::Replicate | Phase::Wait)) {
                    job.log(format!(
                        "meet: {} of {total} CLUSTER MEET(s) sent in {} ms, the rest as \
                         handshakes finish (at most {MEET_WINDOW} under way)",
                        pairs.len(),
                        ms(t.elapsed())
                    ));
                    meets = queue;
                } else {
                    // Nothing to overlap with (adopt mode meets a few nodes): send the rest.
                    while !queue.is_empty() {
                        let (pairs, done) = queue.take(MEET_WINDOW, |_, _| false);
                        send_meets(&mut pool, nodes, &pairs, &cport).await?;
                        for k in done {
                            job.step_done(line(&steps[k]));
                        }
                    }
                    job.log(format!(
                        "meet: {total} CLUSTER MEET(s) in {} ms",
                        ms(t.elapsed())
                    ));
                }
            }
            Phase::Replicate => {
                let deadline = Instant::now() + wait;
                for (k, st) in batch.iter().enumerate() {
                    if let Step::Replicate { node, master } = st {
                        let task = attach(
                            Arc::clone(dialer),
                            nodes[*node].addr(),
                            nodes[*master].addr(),
                            ids[*master].clone(),
                            timeout,
                            deadline,
                        );
                        let index = i + k;
                        attaching.spawn(async move { (index, task.await) });
                    }
                }
            }
            Phase::Wait => {
                let mut w = Waiter {
                    job,
                    nodes,
                    ids,
                    attaching: &mut attaching,
                    meets: &mut meets,
                    steps,
                    rejoin: &mut rejoin,
                };
                let converged = w.converge(&mut pool, batch, wait).await;
                // Whatever the wait's outcome, no node keeps a lowered timeout.
                let restored = rejoin.restore_all(&mut pool, job).await;
                converged?;
                restored?;
            }
        }
        i = j;
    }
    // Replicas whose wait was not in the plan (never the case for plans of `decide`).
    while let Some(res) = attaching.join_next().await {
        let (k, r) = res.map_err(|e| anyhow!("task failed: {e}"))?;
        r?;
        job.step_done(line(&steps[k]));
    }
    Ok(rejoin)
}

/// Sends MEETs `(from, to)`, one pipeline per sending node; a refused MEET fails the create.
pub(super) async fn send_meets(
    pool: &mut Pool,
    nodes: &[NodeSpec],
    pairs: &[(usize, usize)],
    cport: &impl Fn(usize) -> u16,
) -> anyhow::Result<()> {
    let cmds = per_node(
        pairs
            .iter()
            .map(|&(from, to)| (from, meet_cmd(&nodes[to], cport(to)))),
    );
    pool.run_checked(cmds)
        .await
        .context("while sending CLUSTER MEETs")
}
