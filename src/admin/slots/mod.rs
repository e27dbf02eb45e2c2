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
//! masters and problems; `migrate.rs` the one-slot mover; `progress.rs` the figures `PROXY JOB`
//! shows; `fix.rs` the FIX engine.

pub mod args;
pub mod fix;
pub mod migrate;
pub mod plan;
pub mod progress;
pub mod state;

use crate::admin::check;
use crate::admin::jobs::{self, Job};
use crate::admin::lease::{Lease, LEASE_KEY};
use crate::admin::report::Report;
use crate::admin::survey::{self, Survey};
use crate::cluster::NodeLine;
use crate::route::resp;
use crate::shared::Shared;
use anyhow::{anyhow, bail, Context};
use args::{Knobs, RebalanceArgs};
use bytes::Bytes;
use migrate::{Ctx, MigrateAuth, MoveSettings, Mover, NodeRef, DEFAULT_SLOT_TIMEOUT};
use plan::{MasterIn, Plan, PlanOptions};
use progress::Progress;
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
    let job = shared.registries.jobs.list().into_iter().find(|j| {
        (j.engine == REBALANCE_ENGINE || j.engine == FIX_ENGINE)
            && j.running()
            && !j.command.contains("DRYRUN")
    })?;
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
    let holder = format!(
        "slotproxy {} pid {} job {}",
        shared.settings.config.listen,
        std::process::id(),
        job.id
    );
    let lease = Lease::acquire(
        Arc::clone(&shared.settings.dialer),
        &lease_lines(s),
        holder,
        check::node_timeout(shared),
    )
    .await?;
    job.log(format!("took the lease {LEASE_KEY} on {}", lease.addr()));
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

/// Moves the plan's slots, range by range; returns the keys moved. Each slot counts in the
/// job's steps, in `slotproxy_admin_slots_moved_total` and in the progress line.
async fn execute(
    shared: &Shared,
    job: &Job,
    lease: Option<&mut Lease>,
    st: &SlotState,
    plan: &Plan,
    settings: MoveSettings,
) -> anyhow::Result<u64> {
    let masters = refs(st);
    let by_id = |id: &str| {
        masters
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or_else(|| anyhow!("master {id} is not in the survey"))
    };
    let mut mover = Mover::new(
        Arc::clone(&shared.settings.dialer),
        check::node_timeout(shared),
        settings,
    );
    let mut ctx = Ctx {
        job,
        lease,
        progress: Progress::new(plan.moves.len()),
    };
    job.set_total(plan.moves.len());
    job.set_detail(ctx.progress.line());
    for r in plan.ranges() {
        let from = by_id(&plan.masters[r.from].id)?;
        let to = by_id(&plan.masters[r.to].id)?;
        let keys_before = ctx.progress.keys;
        for slot in r.first..=r.last {
            let done = ctx.progress.slots_done;
            mover
                .move_slot(&from, &to, &masters, slot, &mut ctx)
                .await
                .map_err(|e| {
                    anyhow!(
                        "{e} ({done} of {} planned slots were moved before it)",
                        plan.moves.len()
                    )
                })?;
            ctx.progress.slots_done += 1;
            job.advance(1);
            shared.registries.jobs.count_slot_moved();
            job.set_detail(ctx.progress.line());
        }
        job.log(format!(
            "moved {} {} -> {} ({} slots, {} keys)",
            range_text(r.first, r.last),
            from.addr,
            to.addr,
            r.len(),
            ctx.progress.keys - keys_before
        ));
    }
    shared.topology.trigger_refresh();
    Ok(ctx.progress.keys)
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
    if let Some(p) = st.refusal() {
        bail!("{p}");
    }
    let weights = resolve(&st, &a.weights)?;
    let opts = PlanOptions {
        threshold_pct: a.threshold_pct,
        max_slots: a.max_slots,
        only_donors: None,
    };
    let first = plan::plan(&inputs(&st, &weights), &opts)?;
    job.log(format!(
        "surveyed {} nodes, {} masters; planned {} slot moves in {} ranges",
        s.nodes.len(),
        st.masters.len(),
        first.moves.len(),
        first.ranges().len()
    ));
    if first.moves.is_empty() {
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
            first.moves.len(),
            first.ranges().len(),
            first.off_target_before(),
            first.off_target_after()
        )];
        lines.extend(plan_lines(&first));
        lines.extend(master_lines(&first));
        return Ok(Report::lines(lines));
    }
    let mut lease = take_lease(&shared, &s, &job).await?;
    let settings = settings(&shared, &a.knobs);
    let result = async {
        // Another holder may have changed the cluster before we took the lease: plan from
        // what is there now.
        let (_, st) = read_cluster(&shared)
            .await
            .context("re-reading the cluster")?;
        if let Some(p) = st.refusal() {
            bail!("{p}");
        }
        let now = plan::plan(&inputs(&st, &weights), &opts)?;
        let keys = execute(&shared, &job, Some(&mut lease), &st, &now, settings).await?;
        Ok((now, keys))
    }
    .await;
    if let Err(e) = lease.release().await {
        job.log(format!(
            "could not release the lease (it expires by itself): {e:#}"
        ));
    }
    let (done, keys) = result?;
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
        done.moves.len(),
        done.ranges().len(),
        shown.off_target_before(),
        shown.off_target_after()
    )];
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

/// Moves every slot off the masters named by `ids` (node IDs) to the other masters, where they
/// are furthest below an even share; the other masters give nothing. For `PROXY REMOVE NODES`:
/// the caller holds the cluster `lease` (renewed here between rounds) and runs this as part of
/// its `job` (steps, log and progress line are this drain's while it runs). Refuses, changing
/// nothing, when a move would not be safe (see [`state::Problem`]) or an ID is not a master.
/// Safe to re-run: a drain cut short is finished by the next call. Uses the default mover
/// knobs and the proxy's backend login.
pub async fn drain(
    shared: &Arc<Shared>,
    job: &Job,
    lease: &mut Lease,
    ids: &[String],
) -> anyhow::Result<Drained> {
    let (_, st) = read_cluster(shared).await.context("reading the cluster")?;
    if let Some(p) = st.refusal() {
        bail!("{p}");
    }
    for id in ids {
        if st.by_id(id).is_none() {
            bail!("{id} is not a reachable master");
        }
    }
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
    let settings = settings(shared, &Knobs::default());
    let keys = execute(shared, job, Some(lease), &st, &p, settings).await?;
    Ok(Drained {
        slots: p.moves.len(),
        keys,
    })
}
