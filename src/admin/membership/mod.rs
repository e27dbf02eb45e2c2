//! Node membership of a running cluster: `PROXY ADD` (new shards, or new replicas of existing
//! masters) and `PROXY REMOVE NODES` (replicas and masters that own no slots).
//!
//! ```text
//! PROXY ADD REPLICAS <r> NODES <host:port> [HOST <label>] ... [DRYRUN] [ASYNC] [TIMEOUT s]
//! PROXY ADD REPLICAS-OF <master ip:port|id|ANY> NODES <host:port> [HOST <label>] ... [...]
//! PROXY REMOVE NODES <host:port|id> ... [FORCE] [DRYRUN] [ASYNC] [TIMEOUT s]
//! ```
//!
//! Both follow the admin engines' shape: survey the cluster (every node the proxy knows, and
//! what those know) and the named nodes; decide in a pure function what is left to do
//! ([`decide_add`], [`decide_remove`]), refusing with a text that names the node before
//! anything is written; print it (`DRYRUN` stops there); take the cluster lease, survey and
//! decide again (another engine may have changed the cluster meanwhile), execute step by step
//! with a deadline on every wait, and end with CHECK. Re-running recomputes from live state: a
//! finished run answers `NOTHING TO DO`, an interrupted one finishes.
//!
//! ADD places new shards with the same planner rules as CREATE, against the cluster's present
//! layout ([`crate::admin::placement::extend`]); new masters own no slots (the slot mover gives
//! them their share). REMOVE makes every node that stays forget the removed ones within
//! Redis's 60 s ban window, then resets them (`CLUSTER RESET HARD`) so that gossip never brings
//! them back.
//!
//! The files: this one has the commands and the runs; `args.rs` the arguments; `cluster.rs`
//! who the members are; `plan.rs` ADD's decision and the steps; `remove.rs` REMOVE's decision;
//! `refusal.rs` every refusal's text; `execute.rs` the calls and waits; `tests.rs` the unit
//! tests of the decisions.

mod args;
mod cluster;
mod execute;
mod plan;
mod refusal;
mod remove;
#[cfg(test)]
mod tests;

pub use args::{parse_add, parse_remove, AddRequest, ArgError, MasterName, RemoveRequest, Shape};
pub use cluster::{Member, Members};
pub use execute::{drain_unseen, meets_again, remembered};
pub use plan::{decide_add, Step, Work};
pub use refusal::Refusal;
pub use remove::{decide_remove, decide_remove_after, DRAIN_READY};

use super::check;
use super::lease::Lease;
use super::survey::{self, HostLabels, Survey};
use crate::admin::jobs::{self, Job};
use crate::admin::report::Report;
use crate::net::dialer::Dialer;
use crate::route::resp;
use crate::shared::Shared;
use anyhow::anyhow;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The job engine name of `PROXY ADD`.
pub const ADD_ENGINE: &str = "add-nodes";
/// The job engine name of `PROXY REMOVE NODES`.
pub const REMOVE_ENGINE: &str = "remove-nodes";

/// What a run needs from the proxy, taken before the job starts.
struct Env {
    /// The proxy (the slot mover's drain needs its settings and counters).
    shared: Arc<Shared>,
    dialer: Arc<Dialer>,
    /// Where the survey starts: the proxy's masters, replicas and seeds.
    start: Vec<String>,
    /// Deadline of one call to a node.
    timeout: Duration,
    /// The proxy's listen address, for the lease's holder text.
    listen: String,
}

impl Env {
    fn of(shared: &Arc<Shared>) -> Env {
        Env {
            shared: Arc::clone(shared),
            dialer: Arc::clone(&shared.settings.dialer),
            start: check::start_nodes(shared),
            timeout: check::node_timeout(shared),
            listen: shared.settings.config.listen.to_string(),
        }
    }

    /// The cluster (every node reachable from the start nodes), then the named addresses not
    /// reached that way (their own views are not followed: a named node of another cluster must
    /// not make that cluster look like ours).
    async fn survey(&self, named: &[String]) -> Survey {
        let mut s = survey::survey_closure(&self.dialer, &self.start, self.timeout).await;
        let more: Vec<String> = named
            .iter()
            .filter(|a| a.contains(':') && s.get(a).is_none())
            .cloned()
            .collect();
        if !more.is_empty() {
            s.nodes.extend(
                survey::survey(&self.dialer, &more, self.timeout)
                    .await
                    .nodes,
            );
        }
        s
    }

    async fn lease(&self, job: &Job, s: &Survey) -> anyhow::Result<Lease> {
        let lease = Lease::acquire(
            Arc::clone(&self.dialer),
            &Members::of(s).anchor_view,
            super::lease::holder_text(&self.listen, job.id),
            self.timeout,
        )
        .await?;
        super::lease::log_taken(job, &lease);
        Ok(lease)
    }
}

/// Refuses a second ADD or REMOVE while one changes the cluster from this proxy (the lease
/// keeps other proxies out).
fn busy(shared: &Shared) -> Option<Bytes> {
    let job = shared
        .registries
        .jobs
        .changing(&[ADD_ENGINE, REMOVE_ENGINE])?;
    Some(resp::error(&format!(
        "ERR job {} is already changing the cluster's nodes ({}); see PROXY JOB {}",
        job.id, job.command, job.id
    )))
}

fn command_line(name: &str, args: &[Bytes]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    format!("PROXY {name} {}", words.join(" "))
}

/// Answers `PROXY ADD ...` (args after ADD).
pub async fn answer_add(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let req = match parse_add(args) {
        Ok(r) => r,
        Err(e) => {
            return resp::error(&format!("ERR PROXY ADD: {}", e.text(args::ADD_USAGE)));
        }
    };
    if !req.dryrun {
        if let Some(e) = busy(shared) {
            return e;
        }
    }
    let env = Env::of(shared);
    jobs::run(
        &shared.registries.jobs,
        ADD_ENGINE,
        &command_line("ADD", args),
        req.detach,
        false,
        move |job| run_add(job, env, req),
    )
    .await
}

/// Answers `PROXY REMOVE ...` (args after REMOVE).
pub async fn answer_remove(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let req = match parse_remove(args) {
        Ok(r) => r,
        Err(e) => {
            return resp::error(&format!("ERR PROXY REMOVE: {}", e.text(args::REMOVE_USAGE)));
        }
    };
    if !req.dryrun {
        if let Some(e) = busy(shared) {
            return e;
        }
    }
    let env = Env::of(shared);
    jobs::run(
        &shared.registries.jobs,
        REMOVE_ENGINE,
        &command_line("REMOVE", args),
        req.detach,
        false,
        move |job| run_remove(job, env, req),
    )
    .await
}

/// CHECK from the nodes of `work.cluster`, as report lines (`check ...`) and its verdict,
/// and whether it found errors.
async fn final_check(env: &Env, work: &Work, labels: &HostLabels) -> (Vec<String>, String, bool) {
    let start: Vec<String> = work.cluster.iter().map(|(a, _)| a.clone()).collect();
    let (s, f) = check::run_check(&env.dialer, &start, env.timeout, labels).await;
    let lines = check::report_lines(&s, &f)
        .into_iter()
        .map(|l| format!("check {l}"))
        .collect();
    let errors = f.iter().any(|x| x.severity == check::Severity::Error);
    (lines, check::verdict(&f), errors)
}

/// The report of a run that found nothing to change.
async fn nothing_to_do(env: &Env, work: &Work, labels: &HostLabels, what: &str) -> Report {
    let (check, verdict, _) = final_check(env, work, labels).await;
    let mut out = vec![format!("NOTHING TO DO: {what}; check: {verdict}")];
    out.extend(work.lines.iter().cloned());
    out.extend(check);
    Report::lines(out)
}

/// The report of a dry run.
fn dry_report(work: &Work) -> Report {
    let steps: Vec<String> = work.steps.iter().map(Step::line).collect();
    let mut out = vec![format!(
        "OK dryrun: {}, {} step(s); nothing was changed",
        work.summary,
        steps.len()
    )];
    out.extend(work.lines.iter().cloned());
    out.extend(steps);
    Report::lines(out)
}

/// Runs `decide` over a fresh survey under the lease and executes what it says.
async fn run_locked(
    job: &Job,
    env: &Env,
    lease: &mut Lease,
    named: &[String],
    wait: Duration,
    engine: &'static str,
    decide: impl Fn(&Survey) -> Result<Work, Refusal>,
) -> anyhow::Result<Option<Work>> {
    let s = env.survey(named).await;
    let work = decide(&s).map_err(|e| anyhow!("refused: {e}"))?;
    if !work.changes_anything() {
        return Ok(None);
    }
    job.set_total(work.steps.len());
    let mut x = execute::Exec {
        shared: &env.shared,
        job,
        dialer: &env.dialer,
        lease,
        timeout: env.timeout,
        wait,
        engine,
    };
    execute::execute(&mut x, &work).await?;
    Ok(Some(work))
}

/// The whole of `PROXY ADD`.
async fn run_add(job: Arc<Job>, env: Env, req: AddRequest) -> anyhow::Result<Report> {
    let named: Vec<String> = req.nodes.iter().map(|n| n.addr()).collect();
    let labels = HostLabels {
        labels: req
            .nodes
            .iter()
            .filter(|n| n.host != n.ip)
            .map(|n| (n.addr(), n.host.clone()))
            .collect(),
    };
    let wait = req
        .wait
        .unwrap_or(Duration::from_secs(30 + req.nodes.len() as u64 / 10));
    let decide = |s: &Survey| decide_add(&req.shape, &req.nodes, s);
    let s = env.survey(&named).await;
    job.log(format!("surveyed {} node(s)", s.nodes.len()));
    let work = decide(&s).map_err(|e| anyhow!("refused: {e}"))?;
    let already = format!("the {} node(s) are in the cluster already", req.nodes.len());
    if req.dryrun {
        return Ok(dry_report(&work));
    }
    if !work.changes_anything() {
        return Ok(nothing_to_do(&env, &work, &labels, &already).await);
    }
    let mut lease = env.lease(&job, &s).await?;
    // The new nodes are empty and in no cluster, so the lease does not cover them: the claim
    // CREATE takes keeps a CREATE (or an ADD through another cluster's proxy) off them.
    let name = crate::admin::create::claim_name(ADD_ENGINE, &env.listen, job.id);
    let done = match crate::admin::create::claim_nodes(&env.dialer, &req.nodes, &name, env.timeout)
        .await
    {
        Ok(claim) => {
            job.log(format!("claimed the {} new node(s)", req.nodes.len()));
            let done = run_locked(&job, &env, &mut lease, &named, wait, "ADD", decide).await;
            drop(claim);
            done
        }
        Err(e) => Err(e),
    };
    release(&job, &mut lease).await;
    let Some(work) = done? else {
        return Ok(nothing_to_do(&env, &work, &labels, &already).await);
    };
    let (check, verdict, errors) = final_check(&env, &work, &labels).await;
    let steps = work.steps.len();
    let head = if errors {
        format!("{verdict} after add: {}, {steps} step(s)", work.summary)
    } else {
        format!(
            "OK added {}, {steps} step(s); check: {verdict}",
            work.summary
        )
    };
    Ok(Report::lines(verdict_lines(head, &work, check)))
}

/// The whole of `PROXY REMOVE NODES`.
async fn run_remove(job: Arc<Job>, env: Env, req: RemoveRequest) -> anyhow::Result<Report> {
    let wait = req.wait.unwrap_or(Duration::from_secs(30));
    let s = env.survey(&req.names).await;
    // The masters an interrupted run of REMOVE drained (none when the note cannot be read).
    let drained: Vec<String> = Lease::peek_remove_note(
        Arc::clone(&env.dialer),
        &Members::of(&s).anchor_view,
        env.timeout,
    )
    .await
    .ok()
    .flatten()
    .map(|n| n.split_whitespace().map(str::to_string).collect())
    .unwrap_or_default();
    let decide = |s: &Survey| decide_remove_after(&req.names, req.force, s, &drained);
    job.log(format!("surveyed {} node(s)", s.nodes.len()));
    let work = decide(&s).map_err(|e| anyhow!("refused: {e}"))?;
    let labels = HostLabels::default();
    let gone =
        "no node of the cluster lists the named nodes, and none of them remembers the cluster";
    if req.dryrun {
        return Ok(dry_report(&work));
    }
    if !work.changes_anything() {
        return Ok(nothing_to_do(&env, &work, &labels, gone).await);
    }
    let mut lease = env.lease(&job, &s).await?;
    let done = run_locked(
        &job,
        &env,
        &mut lease,
        &req.names,
        wait,
        "REMOVE NODES",
        decide,
    )
    .await;
    if done.is_ok() && !drained.is_empty() {
        // The interrupted run this one finished is over: its note goes.
        if let Err(e) = lease.set_remove_note(None).await {
            job.log(format!("could not delete the remove note: {e:#}"));
        }
    }
    release(&job, &mut lease).await;
    let Some(work) = done? else {
        return Ok(nothing_to_do(&env, &work, &labels, gone).await);
    };
    let (check, verdict, errors) = final_check(&env, &work, &labels).await;
    let steps = work.steps.len();
    let head = if errors {
        format!("{verdict} after remove: {}, {steps} step(s)", work.summary)
    } else {
        format!(
            "OK removed {}, {steps} step(s); check: {verdict}",
            work.summary
        )
    };
    Ok(Report::lines(verdict_lines(head, &work, check)))
}

fn verdict_lines(head: String, work: &Work, check: Vec<String>) -> Vec<String> {
    let mut out = vec![head];
    out.extend(work.lines.iter().cloned());
    out.extend(work.steps.iter().map(Step::line));
    out.extend(check);
    out
}

async fn release(job: &Job, lease: &mut Lease) {
    if let Err(e) = lease.release().await {
        job.log(format!(
            "could not release the lease (it expires by itself): {e:#}"
        ));
    }
}
