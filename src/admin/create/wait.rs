//! CREATE's wait: one loop that polls every listed node until the cluster has joined and
//! every replication link is up, tops up the paced MEETs, reaps the replicas' attach tasks,
//! nudges nodes whose news is late (decisions in `converge.rs`), and lowers a master's
//! cluster-node-timeout while it waits out Redis's rejoin delay (`rejoin.rs`).

use super::converge::{handshake_problems, handshakes, knows, nudges, MeetQueue, MEET_WINDOW};
use super::execute::{ms, send_meets, Attached};
use super::plan::{step_line, Step};
use super::pool::{meet_cmd, per_node, Pool};
use super::rejoin::Rejoin;
use super::{join_problems, link_problems};
use crate::admin::jobs::Job;
use crate::admin::placement::NodeSpec;
use crate::admin::survey::NodeState;
use anyhow::{anyhow, bail, Context};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Shortest time between the starts of two polls of the wait loop.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Shortest time between two nudges of the same pair: a nudge takes effect at the sender's next
/// cluster cron tick (100 ms) plus a round trip.
const NUDGE_EVERY: Duration = Duration::from_millis(500);

/// The wait loop's context.
pub(super) struct Waiter<'a> {
    pub(super) job: &'a Arc<Job>,
    pub(super) nodes: &'a [NodeSpec],
    pub(super) ids: &'a [String],
    pub(super) attaching: &'a mut JoinSet<Attached>,
    pub(super) meets: &'a mut MeetQueue,
    pub(super) steps: &'a [Step],
    pub(super) rejoin: &'a mut Rejoin,
}

impl Waiter<'_> {
    /// Marks the replicas attached so far; an attach that failed fails the create.
    fn reap(&mut self, started: Instant, attached: &mut usize) -> anyhow::Result<()> {
        while let Some(res) = self.attaching.try_join_next() {
            let (k, r) = res.map_err(|e| anyhow!("task failed: {e}"))?;
            r.with_context(|| {
                format!(
                    "while running: {}",
                    step_line(&self.steps[k], self.nodes, self.ids)
                )
            })?;
            *attached += 1;
            self.job
                .step_done(step_line(&self.steps[k], self.nodes, self.ids));
            if self.attaching.is_empty() {
                self.job.log(format!(
                    "replicate: {attached} replica(s) attached, the last {} ms into the wait",
                    ms(started.elapsed())
                ));
            }
        }
        Ok(())
    }

    /// Polls until the waits of `batch` are reached (both at once when the plan has both: the
    /// links come up while the last handshakes finish), nudging nodes whose news is late;
    /// after `wait` the error lists what is still wrong, with hints.
    pub(super) async fn converge(
        &mut self,
        pool: &mut Pool,
        batch: &[Step],
        wait: Duration,
    ) -> anyhow::Result<()> {
        let links = batch.contains(&Step::WaitLinks);
        let started = Instant::now();
        // Each wait of the plan keeps its own allowance, as when they ran one after the other.
        let wait = wait * u32::try_from(batch.len()).unwrap_or(1).max(1);
        let deadline = started + wait;
        let mut joined = !batch.contains(&Step::WaitJoined);
        let mut attached = 0;
        let mut last_log = Instant::now();
        let mut nudged: HashMap<(usize, usize), Instant> = HashMap::new();
        let mut stale_before: HashSet<(usize, usize)> = HashSet::new();
        let (mut polls, mut sent) = (0usize, 0usize);
        loop {
            let round = Instant::now();
            self.reap(started, &mut attached)?;
            let listed = pool.poll().await;
            polls += 1;
            self.rejoin.tend(pool, &listed, self.job).await;
            let mut p = join_problems(&listed, self.ids);
            p.extend(handshake_problems(&listed));
            if !joined && p.is_empty() {
                joined = true;
                self.job
                    .step_done(step_line(&Step::WaitJoined, self.nodes, self.ids));
                self.job.log(format!(
                    "joined {} ms into the wait: every node sees every other, the slot maps agree",
                    ms(started.elapsed())
                ));
            }
            if links {
                p.extend(link_problems(&listed));
                if !self.attaching.is_empty() {
                    p.push(format!(
                        "{} replica(s) do not know their master yet",
                        self.attaching.len()
                    ));
                }
            }
            if !self.meets.is_empty() {
                p.push(format!("{} CLUSTER MEET(s) not sent yet", self.meets.len()));
            }
            if p.is_empty() {
                if links {
                    self.job
                        .step_done(step_line(&Step::WaitLinks, self.nodes, self.ids));
                }
                self.job.log(format!(
                    "converged {} ms into the wait{}: {polls} poll(s), {sent} nudge(s)",
                    ms(started.elapsed()),
                    if links {
                        " (every replication link up)"
                    } else {
                        ""
                    },
                ));
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(timeout_message(&p, wait));
            }
            let now = Instant::now();
            // Room in the window: handshakes under way hold their place until they finish.
            let mut room = MEET_WINDOW.saturating_sub(handshakes(&listed));
            if !self.meets.is_empty() {
                let ids = self.ids;
                let (pairs, done) = self.meets.take(room, |a, b| {
                    knows(&listed, ids, a, b) || knows(&listed, ids, b, a)
                });
                room -= pairs.len();
                send_meets(pool, self.nodes, &pairs, &|o| {
                    cport_of(&listed, o, o, self.nodes)
                })
                .await?;
                for k in done {
                    self.job
                        .step_done(step_line(&self.steps[k], self.nodes, self.ids));
                }
                if self.meets.is_empty() {
                    self.job.log(format!(
                        "meet: the last CLUSTER MEET sent {} ms into the wait",
                        ms(started.elapsed())
                    ));
                }
            }
            // A pair late in two polls in a row gets a nudge (Redis's own messages often
            // arrive first), once the MEETs are out and while the window has room.
            let stale: HashSet<(usize, usize)> = if self.meets.is_empty() {
                nudges(&listed, self.ids).into_iter().collect()
            } else {
                HashSet::new()
            };
            let due: Vec<(usize, usize)> = stale
                .iter()
                .copied()
                .filter(|pair| stale_before.contains(pair))
                .filter(|pair| {
                    nudged
                        .get(pair)
                        .is_none_or(|t| now.duration_since(*t) >= NUDGE_EVERY)
                })
                .take(room)
                .collect();
            stale_before = stale;
            // Per poll, for `log_level debug`: what the wait is waiting for.
            tracing::debug!(
                job = self.job.id,
                poll = polls,
                took_ms = ms(round.elapsed()) as u64,
                problems = p.len(),
                handshakes = handshakes(&listed),
                meets_left = self.meets.len(),
                nudges = due.len(),
                attaching = self.attaching.len(),
                "create: waiting"
            );
            if !due.is_empty() {
                sent += due.len();
                for pair in &due {
                    nudged.insert(*pair, now);
                }
                let cmds = per_node(due.iter().map(|&(from, to)| {
                    (
                        from,
                        meet_cmd(&self.nodes[to], cport_of(&listed, from, to, self.nodes)),
                    )
                }));
                // A nudge that fails is retried by a later poll; the wait's deadline bounds it.
                for (i, r) in pool.run(cmds).await {
                    if let Err(e) = r {
                        tracing::debug!(
                            "create: nudge from {} failed: {e:#}",
                            self.nodes[i].addr()
                        );
                    }
                }
            }
            if last_log.elapsed() >= Duration::from_secs(5) {
                self.job.log(format!(
                    "still waiting ({} problem(s), e.g. {})",
                    p.len(),
                    p[0]
                ));
                last_log = Instant::now();
            }
            if let Some(rest) = POLL_EVERY.checked_sub(round.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }
}

/// The bus port `from` should MEET `to` at: what `from` already believes (it may have learned
/// a non-default `cluster-port`), else what `to` says of itself, else port + 10000.
fn cport_of(listed: &[NodeState], from: usize, to: usize, nodes: &[NodeSpec]) -> u16 {
    let own = listed.get(to).and_then(NodeState::myself).map(|m| m.cport);
    let seen = listed.get(from).and_then(|f| {
        let id = listed.get(to)?.id()?;
        f.view.iter().find(|l| l.id == id).map(|l| l.cport)
    });
    seen.or(own)
        .filter(|&c| c != 0)
        .unwrap_or(nodes[to].port.saturating_add(10000))
}

/// The error of a wait that ran out of time.
fn timeout_message(p: &[String], wait: Duration) -> String {
    const SHOWN: usize = 20;
    let mut msg = format!(
        "cluster not converged within {wait:?}; {} problem(s): {}",
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
    msg
}
