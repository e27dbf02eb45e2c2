//! Slot moves: `PROXY REBALANCE SLOTS`, `PROXY FIX`, and [`drain`] (the first half of
//! `PROXY REMOVE NODES` for masters that own slots).
//!
//! `REBALANCE SLOTS` is the skeleton every engine follows: survey every node; refuse (changing
//! nothing) when a move would not be safe ([`state::Problem`]: a master unreachable or failing,
//! masters that do not know each other, a slot already open, the cluster not `ok`); plan with
//! the pure [`plan::plan`]; print the plan and stop there with `DRYRUN`; otherwise take the
//! cluster-wide [`Lease`], survey and plan again from what is there now, move the slots one by
//! one with [`migrate::Mover`], and read the cluster back for the report.
//!
//! Every step of a slot move is idempotent and the mover resumes a move from whatever state it
//! finds, so a run cut short (the proxy killed, a deadline, a big key) is finished by running
//! the same command again; `PROXY FIX` closes what another tool left open.
//!
//! The files: this one has the commands and the REBALANCE flow; `args.rs` the arguments;
//! `plan.rs` the planner (`plan_tests.rs` its tests); `state.rs` what a survey says about
//! masters and problems; `migrate.rs` the one-slot mover, `settings.rs` its terms and
//! `error.rs` why it stops; `run.rs` runs the moves, several slots at once; `progress.rs` the
//! figures `PROXY JOB` shows; `fix.rs` the FIX
//! engine (`fix_tests.rs` its decisions' tests).

pub mod args;
pub mod error;
pub mod fix;
pub mod migrate;
pub mod plan;
pub mod progress;
pub mod run;
pub mod settings;
pub mod state;

use crate::admin::check;
use crate::admin::jobs::{self, Job};
use crate::admin::lease::Lease;
use crate::admin::report::Report;
use crate::admin::survey::{self, Survey};
use crate::cluster::NodeLine;
use crate::route::resp;
use crate::shared::Shared;
use anyhow::{anyhow, bail, Context};
use args::{Knobs, RebalanceArgs};
use bytes::Bytes;
use migrate::{MigrateAuth, MoveSettings, NodeRef, DEFAULT_SLOT_TIMEOUT};
use plan::{MasterIn, Plan, PlanOptions};
use run::{execute, Step};
use state::SlotState;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The job engine name of `PROXY REBALANCE SLOTS`.
pub const REBALANCE_ENGINE: &str = "rebalance-slots";
/// The job engine name of `PROXY FIX`.
pub const FIX_ENGINE: &str = "fix";

/// Report lines listing planned or done ranges, at most this many (then a count of the rest).
const RANGES_SHOWN: usize = 64;

/// An error reply if this proxy already runs a slot-moving job (one at a time per proxy; the
/// lease keeps proxies apart).
fn busy(shared: &Shared) -> Option<Bytes> {
    let job = shared
        .registries
        .jobs
        .changing(&[REBALANCE_ENGINE, FIX_ENGINE])?;
    Some(resp::error(&format!(
        "ERR a slot move is already running here as job {}; PROXY JOB {} shows it",
        job.id, job.id
    )))
}

/// The command line as recorded in the job (words upper-cased, as REBALANCE MASTERS does).
fn command_line(prefix: &str, args: &[Bytes]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .collect();
    format!("{prefix} {}", words.join(" "))
        .trim_end()
        .to_string()
}

/// Answers `PROXY REBALANCE SLOTS ...`; `args` starts after `SLOTS`.
pub async fn answer_rebalance(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let a = match args::parse_rebalance(args) {
        Ok(a) => a,
        Err(e) => return resp::error(&format!("ERR {e}")),
    };
    if !a.dry_run {
        if let Some(e) = busy(shared) {
            return e;
        }
    }
    let command = command_line("PROXY REBALANCE SLOTS", args);
    let shared2 = Arc::clone(shared);
    let detach = a.detach;
    jobs::run(
        &shared.registries.jobs,
        REBALANCE_ENGINE,
        &command,
        detach,
        false,
        move |job| run_rebalance(shared2, a, job),
    )
    .await
}

/// Answers `PROXY FIX ...`; `args` starts after `FIX`.
pub async fn answer_fix(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let a = match args::parse_fix(args) {
        Ok(a) => a,
        Err(e) => return resp::error(&format!("ERR {e}")),
    };
    if !a.dry_run {
        if let Some(e) = busy(shared) {
            return e;
        }
    }
    let command = command_line("PROXY FIX", args);
    let shared2 = Arc::clone(shared);
    let detach = a.detach;
    jobs::run(
        &shared.registries.jobs,
        FIX_ENGINE,
        &command,
        detach,
        false,
        move |job| fix::run(shared2, a, job),
    )
    .await
}

/// How the mover works for this proxy: the knobs, and the proxy's backend login for MIGRATE.
pub fn settings(shared: &Shared, knobs: &Knobs) -> MoveSettings {
    let cfg = &shared.settings.config;
    MoveSettings {
        batch: knobs.batch,
        pipeline: knobs.pipeline,
        migrate_timeout_ms: knobs.migrate_timeout_ms,
        slot_timeout: knobs.slot_timeout.unwrap_or(DEFAULT_SLOT_TIMEOUT),
        parallel: knobs.parallel,
        auth: MigrateAuth::from_settings(&cfg.backend_user, &cfg.backend_password),
    }
}

/// Surveys every node the proxy knows and every node those know.
async fn read_cluster(shared: &Shared) -> anyhow::Result<(Survey, SlotState)> {
    let start = check::start_nodes(shared);
    if start.is_empty() {
        bail!("no nodes known (no seeds configured)");
    }
    let s =
        survey::survey_closure(&shared.settings.dialer, &start, check::node_timeout(shared)).await;
    let st = SlotState::from_survey(&s);
    if st.masters.is_empty() {
        bail!(
            "no master answered: {}",
            s.nodes
                .iter()
                .filter_map(|n| n.error.as_ref().map(|e| format!("{}: {e}", n.addr)))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok((s, st))
}

/// The lines the lease is taken from: every reachable node's own line (authoritative for what
/// it owns), then what others say of the nodes that did not answer.
fn lease_lines(s: &Survey) -> Vec<NodeLine> {
    let mut out: Vec<NodeLine> = Vec::new();
    for n in s.reachable() {
        if let Some(me) = n.myself() {
            let mut l = me.clone();
            let (ip, port) = n.addr.rsplit_once(':').unwrap_or((&n.addr, ""));
            l.ip = ip.to_string();
            l.port = port.parse().unwrap_or(l.port);
            out.push(l);
        }
    }
    for n in s.reachable() {
        for l in n.view.iter().filter(|l| l.is_usable()) {
            if !out.iter().any(|o| o.id == l.id) {
                let mut l = l.clone();
                // Only own lines may claim slots for the lease's owner lookup.
                l.slots.clear();
                out.push(l);
            }
        }
    }
    out
}

/// Takes the cluster lease for `job`.
async fn take_lease(shared: &Shared, s: &Survey, job: &Job) -> anyhow::Result<Lease> {
    let holder = super::lease::holder_text(&shared.settings.config.listen.to_string(), job.id);
    let lease = Lease::acquire(
        Arc::clone(&shared.settings.dialer),
        &lease_lines(s),
        holder,
        check::node_timeout(shared),
    )
    .await?;
    super::lease::log_taken(job, &lease);
    Ok(lease)
}

/// Every master as a mover target.
fn refs(st: &SlotState) -> Vec<NodeRef> {
    st.masters
        .iter()
        .map(|m| NodeRef {
            id: m.id.clone(),
            addr: m.addr.clone(),
        })
        .collect()
}

/// The planner's input: every master with its weight (1 unless named).
fn inputs(st: &SlotState, weights: &[(String, u32)]) -> Vec<MasterIn> {
    st.masters
        .iter()
        .map(|m| MasterIn {
            id: m.id.clone(),
            addr: m.addr.clone(),
            weight: weights
                .iter()
                .rev()
                .find(|(id, _)| *id == m.id)
                .map_or(1, |(_, w)| *w),
            slots: m.slots.clone(),
        })
        .collect()
}

/// Resolves the operator's `WEIGHT` names to node IDs.
fn resolve(st: &SlotState, weights: &[(String, u32)]) -> anyhow::Result<Vec<(String, u32)>> {
    weights
        .iter()
        .map(|(name, w)| {
            st.find(name)
                .map(|m| (m.id.clone(), *w))
                .map_err(|e| anyhow!("WEIGHT: {e}"))
        })
        .collect()
}

/// The plan's moves as steps (masters looked up in the survey).
fn steps(st: &SlotState, plan: &Plan) -> anyhow::Result<Vec<Step>> {
    let masters = refs(st);
    let by_id = |id: &str| {
        masters
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or_else(|| anyhow!("master {id} is not in the survey"))
    };
    plan.moves
        .iter()
        .map(|m| {
            Ok(Step {
                slot: m.slot,
                from: by_id(&plan.masters[m.from].id)?,
                to: by_id(&plan.masters[m.to].id)?,
            })
        })
        .collect()
}

/// The open slots an interrupted run left (per the move note), or the refusal: the first
/// problem that is not such a slot.
fn check_state(st: &SlotState, note: Option<&str>) -> anyhow::Result<Vec<(u16, usize, usize)>> {
    if let Some(p) = st.blocking() {
        bail!("{p}");
    }
    let notes = note.map(state::Note::parse_all).unwrap_or_default();
    st.resumable(&notes).map_err(|p| anyhow!("{p}"))
}

/// The steps that finish the slots an interrupted run left open.
fn resume_steps(st: &SlotState, open: &[(u16, usize, usize)]) -> Vec<Step> {
    let masters = refs(st);
    open.iter()
        .map(|&(slot, a, b)| Step {
            slot,
            from: masters[a].clone(),
            to: masters[b].clone(),
        })
        .collect()
}

fn range_text(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// The plan's lines after the verdict: ranges (capped) and masters.
fn plan_lines(plan: &Plan) -> Vec<String> {
    let ranges = plan.ranges();
    let mut out: Vec<String> = ranges
        .iter()
        .take(RANGES_SHOWN)
        .map(|r| {
            format!(
                "move {} {} -> {} ({} slots)",
                range_text(r.first, r.last),
                plan.masters[r.from].addr,
                plan.masters[r.to].addr,
                r.len()
            )
        })
        .collect();
    if ranges.len() > RANGES_SHOWN {
        out.push(format!("and {} more ranges", ranges.len() - RANGES_SHOWN));
    }
    if plan.capped > 0 {
        out.push(format!(
            "MAXSLOTS leaves {} moves for a later run",
            plan.capped
        ));
    }
    out
}

fn master_lines(plan: &Plan) -> Vec<String> {
    plan.masters
        .iter()
        .map(|m| {
            format!(
                "master {} weight {} slots {} -> {} target {}",
                m.addr, m.weight, m.before, m.after, m.target
            )
        })
        .collect()
}

async fn run_rebalance(
    shared: Arc<Shared>,
    a: RebalanceArgs,
    job: Arc<Job>,
) -> anyhow::Result<Report> {
    let (s, st) = read_cluster(&shared).await.context("reading the cluster")?;
    if let Some(p) = st.blocking() {
        bail!("{p}");
    }
    let note = if st.refusal().is_some() {
        // Open slots: an interrupted run of ours resumes them, anything else is FIX's.
        Lease::peek_note(
            Arc::clone(&shared.settings.dialer),
            &lease_lines(&s),
            check::node_timeout(&shared),
        )
        .await
        .context("reading the move note")?
    } else {
        None
    };
    let resume = check_state(&st, note.as_deref())?;
    let weights = resolve(&st, &a.weights)?;
    let opts = PlanOptions {
        threshold_pct: a.threshold_pct,
        max_slots: a.max_slots,
        only_donors: None,
    };
    let first = plan::plan(&inputs(&st, &weights), &opts)?;
    job.log(format!(
        "surveyed {} nodes, {} masters; {} slot(s) to resume; planned {} slot moves in {} ranges",
        s.nodes.len(),
        st.masters.len(),
        resume.len(),
        first.moves.len(),
        first.ranges().len()
    ));
    let resume_lines: Vec<String> = resume_steps(&st, &resume)
        .iter()
        .map(|x| {
            format!(
                "resume {} {} -> {} (left open by an interrupted run)",
                x.slot, x.from.addr, x.to.addr
            )
        })
        .collect();
    if first.moves.is_empty() && resume.is_empty() {
        let why = first
            .skipped
            .clone()
            .unwrap_or_else(|| format!("off target {}", first.off_target_before()));
        let mut lines = vec![format!("NOTHING TO DO {why}")];
        lines.extend(master_lines(&first));
        return Ok(Report::lines(lines));
    }
    if a.dry_run {
        let mut lines = vec![format!(
            "DRYRUN moves {} slots in {} ranges, off target {} -> {}",
            first.moves.len() + resume.len(),
            first.ranges().len(),
            first.off_target_before(),
            first.off_target_after()
        )];
        lines.extend(resume_lines);
        lines.extend(plan_lines(&first));
        lines.extend(master_lines(&first));
        return Ok(Report::lines(lines));
    }
    let mut lease = take_lease(&shared, &s, &job).await?;
    let settings = settings(&shared, &a.knobs);
    let result = async {
        // Another holder may have changed the cluster before we took the lease: judge and plan
        // from what is there now.
        let (_, mut st) = read_cluster(&shared)
            .await
            .context("re-reading the cluster")?;
        let note = lease.read_note().await?;
        let resume = check_state(&st, note.as_deref())?;
        let mut keys = 0;
        if !resume.is_empty() {
            let steps = resume_steps(&st, &resume);
            job.log(format!(
                "resuming {} slot(s) an interrupted run left open",
                steps.len()
            ));
            keys += execute(
                &shared,
                &job,
                &mut lease,
                &refs(&st),
                &steps,
                settings.clone(),
            )
            .await?;
            (_, st) = read_cluster(&shared)
                .await
                .context("re-reading the cluster")?;
            if let Some(p) = st.refusal() {
                bail!("{p}");
            }
        }
        let now = plan::plan(&inputs(&st, &weights), &opts)?;
        let steps = steps(&st, &now)?;
        keys += execute(&shared, &job, &mut lease, &refs(&st), &steps, settings).await?;
        Ok((now, resume.len(), keys))
    }
    .await;
    if let Err(e) = lease.release().await {
        job.log(format!(
            "could not release the lease (it expires by itself): {e:#}"
        ));
    }
    let (done, resumed, keys) = result?;
    // Read back what the cluster says now.
    let (_, after) = read_cluster(&shared)
        .await
        .context("reading the cluster back")?;
    let mut shown = done.clone();
    for m in shown.masters.iter_mut() {
        m.after = after.by_id(&m.id).map_or(m.after, |x| x.slots.len());
    }
    let mut lines = vec![format!(
        "OK moved {} slots in {} ranges, keys {keys}, off target {} -> {}",
        done.moves.len() + resumed,
        done.ranges().len(),
        shown.off_target_before(),
        shown.off_target_after()
    )];
    if resumed > 0 {
        lines.push(format!(
            "resumed {resumed} slot(s) an interrupted run left open"
        ));
    }
    lines.extend(plan_lines(&shown));
    lines.extend(master_lines(&shown));
    if let Some(p) = after.refusal() {
        lines.push(format!("after: {p}"));
    }
    Ok(Report::lines(lines))
}

/// What [`drain`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Slots moved off the drained masters.
    pub slots: usize,
    /// Keys moved with them.
    pub keys: u64,
}

/// Moves every slot off the named masters (`ip:port` or node ID) to the other masters, where
/// they are furthest below an even share; the other masters give nothing. For `PROXY REMOVE
/// NODES` (its `execute::drain` hook): the caller holds the cluster `lease` (renewed here
/// between rounds, and carrying the move note) and runs this as part of its `job` (steps, log
/// and progress line are this drain's while it runs). Refuses, changing nothing, when a move
/// would not be safe (see [`state::Problem`]) or a name is not a reachable master. Safe to
/// re-run: a drain cut short is finished by the next call (slots it left open are finished
/// first, as REBALANCE SLOTS does). Uses the default mover knobs and the proxy's backend login.
/// Redis 7 then turns each drained master into a replica of the master that took its last
/// slot (`cluster-allow-replica-migration`, on by default).
pub async fn drain(
    shared: &Shared,
    job: &Job,
    lease: &mut Lease,
    masters: &[String],
) -> anyhow::Result<Drained> {
    let (_, st) = read_cluster(shared).await.context("reading the cluster")?;
    let note = lease.read_note().await?;
    let resume = check_state(&st, note.as_deref())?;
    let mut keys = 0;
    let mut st = st;
    if !resume.is_empty() {
        let steps = resume_steps(&st, &resume);
        keys += execute(
            shared,
            job,
            lease,
            &refs(&st),
            &steps,
            settings(shared, &Knobs::default()),
        )
        .await?;
        (_, st) = read_cluster(shared)
            .await
            .context("re-reading the cluster")?;
        if let Some(p) = st.refusal() {
            bail!("{p}");
        }
    }
    let ids: Vec<String> = masters
        .iter()
        .map(|name| {
            st.find(name)
                .map(|m| m.id.clone())
                .map_err(|e| anyhow!("drain: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let weights: Vec<(String, u32)> = ids.iter().map(|id| (id.clone(), 0)).collect();
    let opts = PlanOptions {
        threshold_pct: 0.0,
        max_slots: None,
        only_donors: Some(ids.iter().cloned().collect::<BTreeSet<String>>()),
    };
    let p = plan::plan(&inputs(&st, &weights), &opts)?;
    job.log(format!(
        "drain: {} slot moves off {} master(s)",
        p.moves.len(),
        ids.len()
    ));
    let steps = steps(&st, &p)?;
    keys += execute(
        shared,
        job,
        lease,
        &refs(&st),
        &steps,
        settings(shared, &Knobs::default()),
    )
    .await?;
    Ok(Drained {
        slots: p.moves.len() + resume.len(),
        keys,
    })
}
