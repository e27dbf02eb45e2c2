//! `PROXY FIX [DRYRUN] [ASYNC] [TIMEOUT s] [BATCH n] [PIPELINE n] [MIGRATE-TIMEOUT ms]`:
//! repairs what an interrupted slot move (ours, redis-cli's, anyone's) leaves behind, without
//! losing a key.
//!
//! [`decide`] is pure: from the masters' own lines and the key counts of every open or
//! uncovered slot on every master, it chooses per slot:
//! - **Owner migrating to T** (the normal interrupted move): if the owner or T holds keys of the
//!   slot, *finish* the move to T with the same mover as REBALANCE SLOTS; if neither does,
//!   *close* it (`SETSLOT STABLE`) where it is.
//! - **Importing on N, owner not migrating**: if N holds keys and the owner none, finish the
//!   move to N (no key moves, N becomes the owner); if both hold keys, the owner's are the
//!   ones clients used, so N's keys are *evacuated* to the owner (a key both hold is never
//!   overwritten: FIX stops and names the slot); if N holds none, close it on N.
//! - **Uncovered** (no master owns it): *assign* it to the master holding the most of its keys,
//!   else to the master with the fewest slots; other holders' keys are evacuated to it.
//! - Keys of an open slot on any other master are evacuated to the slot's final owner; stale
//!   open states elsewhere are closed. A slot two masters claim is left, with the reason.
//!
//! The run assigns uncovered slots first (a node refuses MIGRATE while its cluster is down),
//! waits for `cluster_state:ok`, then repairs the open slots, and reads the cluster back.

use super::args::FixArgs;
use super::migrate::{Ctx, Mover, NodeRef};
use super::progress::Progress;
use super::state::SlotState;
use super::{read_cluster, refs, settings, take_lease};
use crate::admin::check;
use crate::admin::jobs::Job;
use crate::admin::lease::LEASE_KEY;
use crate::admin::report::Report;
use crate::cluster::slots::key_slot;
use crate::route::resp::Value;
use crate::shared::Shared;
use anyhow::{anyhow, bail, Context};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One repair step; masters are indices into [`SlotState::masters`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move the slot from its owner to `to` (resuming wherever it stands).
    Finish {
        /// The slot.
        slot: u16,
        /// Its owner.
        from: usize,
        /// Its new owner.
        to: usize,
    },
    /// Move the keys `from` (not the owner) holds to the owner `to`, then close it on `from`.
    Evacuate {
        /// The slot.
        slot: u16,
        /// The node holding stray keys.
        from: usize,
        /// The owner.
        to: usize,
    },
    /// `SETSLOT STABLE` on `node`.
    Close {
        /// The slot.
        slot: u16,
        /// The node.
        node: usize,
    },
    /// Give the uncovered slot to `to`.
    Assign {
        /// The slot.
        slot: u16,
        /// The new owner.
        to: usize,
    },
}

/// What FIX will do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FixPlan {
    /// First: closing and assigning uncovered slots.
    pub assign: Vec<Action>,
    /// Then: finishing, evacuating, closing open slots (and evacuating uncovered ones' keys).
    pub repair: Vec<Action>,
    /// Slots left alone, with why.
    pub left: Vec<(u16, String)>,
}

impl FixPlan {
    /// Slots the plan touches.
    pub fn slots(&self) -> usize {
        let mut s: BTreeSet<u16> = BTreeSet::new();
        for a in self.assign.iter().chain(&self.repair) {
            s.insert(a.slot());
        }
        s.len()
    }
}

impl Action {
    /// The slot it is about.
    pub fn slot(&self) -> u16 {
        match self {
            Action::Finish { slot, .. }
            | Action::Evacuate { slot, .. }
            | Action::Close { slot, .. }
            | Action::Assign { slot, .. } => *slot,
        }
    }

    /// One report line.
    pub fn describe(&self, st: &SlotState, keys: &BTreeMap<u16, Vec<u64>>) -> String {
        let addr = |i: usize| st.masters.get(i).map_or("?", |m| m.addr.as_str());
        let k = |s: u16, i: usize| keys.get(&s).and_then(|v| v.get(i)).copied().unwrap_or(0);
        match *self {
            Action::Finish { slot, from, to } => format!(
                "finish {slot} {} -> {} (keys {} + {})",
                addr(from),
                addr(to),
                k(slot, from),
                k(slot, to)
            ),
            Action::Evacuate { slot, from, to } => format!(
                "evacuate {slot} {} -> {} (keys {})",
                addr(from),
                addr(to),
                k(slot, from)
            ),
            Action::Close { slot, node } => format!("close {slot} on {}", addr(node)),
            Action::Assign { slot, to } => {
                format!("assign {slot} to {} (keys {})", addr(to), k(slot, to))
            }
        }
    }
}

/// Slots open on some master or owned by none, in order.
pub fn candidates(st: &SlotState) -> Vec<u16> {
    let mut s: BTreeSet<u16> = st.uncovered().into_iter().collect();
    for m in &st.masters {
        s.extend(m.migrating.iter().map(|x| x.0));
        s.extend(m.importing.iter().map(|x| x.0));
    }
    s.into_iter().collect()
}

/// Chooses the repairs (see the module documentation). `keys[slot][i]` is how many keys of
/// `slot` master `i` holds; a missing entry counts as none.
pub fn decide(st: &SlotState, keys: &BTreeMap<u16, Vec<u64>>) -> FixPlan {
    let mut out = FixPlan::default();
    let n = st.masters.len();
    let idx = |id: &str| st.masters.iter().position(|m| m.id == id);
    for slot in candidates(st) {
        let k = |i: usize| keys.get(&slot).and_then(|v| v.get(i)).copied().unwrap_or(0);
        let open = |i: usize| {
            let m = &st.masters[i];
            m.migrating.iter().any(|x| x.0 == slot) || m.importing.iter().any(|x| x.0 == slot)
        };
        let owners: Vec<usize> = (0..n).filter(|&i| st.masters[i].owns(slot)).collect();
        if owners.len() > 1 {
            let who: Vec<&str> = owners
                .iter()
                .map(|&i| st.masters[i].addr.as_str())
                .collect();
            out.left.push((
                slot,
                format!("claimed by {}; choose the owner by hand", who.join(" and ")),
            ));
            continue;
        }
        let Some(&owner) = owners.first() else {
            // Uncovered: the biggest holder, else the master with the fewest slots.
            let to = (0..n)
                .filter(|&i| k(i) > 0)
                .max_by(|&a, &b| {
                    k(a).cmp(&k(b))
                        .then(st.masters[b].slots.len().cmp(&st.masters[a].slots.len()))
                        .then(b.cmp(&a))
                })
                .or_else(|| (0..n).min_by_key(|&i| (st.masters[i].slots.len(), i)));
            let Some(to) = to else { continue };
            for i in (0..n).filter(|&i| open(i)) {
                out.assign.push(Action::Close { slot, node: i });
            }
            out.assign.push(Action::Assign { slot, to });
            for i in (0..n).filter(|&i| i != to && k(i) > 0) {
                out.repair.push(Action::Evacuate { slot, from: i, to });
            }
            continue;
        };
        let migrating_to = st.masters[owner]
            .migrating
            .iter()
            .find(|x| x.0 == slot)
            .and_then(|x| idx(&x.1))
            .filter(|&t| t != owner);
        let importer = || {
            let with_keys: Vec<usize> = (0..n)
                .filter(|&i| i != owner && k(i) > 0)
                .filter(|&i| st.masters[i].importing.iter().any(|x| x.0 == slot))
                .collect();
            match with_keys.as_slice() {
                [only] if k(owner) == 0 => Some(*only),
                _ => None,
            }
        };
        let target = migrating_to.or_else(importer);
        let mut final_owner = owner;
        let mut handled: Vec<usize> = vec![owner];
        match target {
            Some(t) if k(owner) + k(t) > 0 => {
                out.repair.push(Action::Finish {
                    slot,
                    from: owner,
                    to: t,
                });
                final_owner = t;
                handled.push(t);
            }
            Some(t) => {
                for i in [owner, t] {
                    if open(i) {
                        out.repair.push(Action::Close { slot, node: i });
                    }
                }
                handled.push(t);
            }
            None => {
                if open(owner) {
                    out.repair.push(Action::Close { slot, node: owner });
                }
            }
        }
        for i in (0..n).filter(|i| !handled.contains(i)) {
            if k(i) > 0 {
                out.repair.push(Action::Evacuate {
                    slot,
                    from: i,
                    to: final_owner,
                });
            } else if open(i) {
                out.repair.push(Action::Close { slot, node: i });
            }
        }
    }
    out
}

/// Counts the keys of `slots` on every master.
async fn count(
    mover: &mut Mover,
    st: &SlotState,
    slots: &[u16],
) -> anyhow::Result<BTreeMap<u16, Vec<u64>>> {
    let mut out: BTreeMap<u16, Vec<u64>> = slots
        .iter()
        .map(|&s| (s, vec![0; st.masters.len()]))
        .collect();
    for (i, m) in st.masters.iter().enumerate() {
        let counts = mover.count_keys(&m.addr, slots).await?;
        for (s, c) in slots.iter().zip(counts) {
            if let Some(v) = out.get_mut(s) {
                v[i] = c;
            }
        }
    }
    Ok(out)
}

/// Runs `actions` in order; returns the report lines of what was done.
async fn apply(
    shared: &Shared,
    mover: &mut Mover,
    st: &SlotState,
    keys: &BTreeMap<u16, Vec<u64>>,
    actions: &[Action],
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Vec<String>> {
    let masters = refs(st);
    let node = |i: usize| -> anyhow::Result<&NodeRef> {
        masters.get(i).ok_or_else(|| anyhow!("no master {i}"))
    };
    let mut lines = Vec::new();
    for a in actions {
        let line = a.describe(st, keys);
        match *a {
            Action::Finish { slot, from, to } => {
                mover
                    .move_slot(node(from)?, node(to)?, &masters, slot, ctx)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                shared.registries.jobs.count_slot_moved();
            }
            Action::Evacuate { slot, from, to } => {
                mover
                    .evacuate(node(from)?, node(to)?, slot, ctx)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
            }
            Action::Close { slot, node: i } => mover.close(&node(i)?.addr, slot).await?,
            Action::Assign { slot, to } => mover.assign(node(to)?, &masters, slot, ctx.job).await?,
        }
        ctx.job.step_done(line.clone());
        lines.push(line);
    }
    Ok(lines)
}

/// Waits until every master reports `cluster_state:ok` (MIGRATE needs it).
async fn wait_ok(
    mover: &mut Mover,
    st: &SlotState,
    job: &Job,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    for m in &st.masters {
        loop {
            let ok = matches!(
                mover.call(&m.addr, &["CLUSTER", "INFO"]).await,
                Ok(Value::Bulk(Some(ref t))) if String::from_utf8_lossy(t).lines().any(|l| l.trim() == "cluster_state:ok")
            );
            if ok {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{} does not report cluster_state:ok within {within:?} after the slots were assigned; PROXY CHECK shows why", m.addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    job.log("every master reports cluster_state:ok");
    Ok(())
}

/// The FIX job.
pub(super) async fn run(shared: Arc<Shared>, a: FixArgs, job: Arc<Job>) -> anyhow::Result<Report> {
    let settings = settings(&shared, &a.knobs);
    let within = settings.slot_timeout;
    let mut mover = Mover::new(
        Arc::clone(&shared.settings.dialer),
        check::node_timeout(&shared),
        settings,
    );
    let (s, st) = read_cluster(&shared).await.context("reading the cluster")?;
    if let Some(p) = st.fix_refusal() {
        bail!("{p}");
    }
    let cand = candidates(&st);
    if cand.is_empty() {
        return Ok(Report::lines(vec![
            "NOTHING TO DO no open or uncovered slot".to_string(),
        ]));
    }
    let keys = count(&mut mover, &st, &cand).await?;
    let fp = decide(&st, &keys);
    job.log(format!(
        "{} open or uncovered slot(s): {} step(s) planned, {} left alone",
        cand.len(),
        fp.assign.len() + fp.repair.len(),
        fp.left.len()
    ));
    if a.dry_run {
        let mut lines = vec![format!(
            "DRYRUN fixes {} slot(s) in {} step(s), leaves {}",
            fp.slots(),
            fp.assign.len() + fp.repair.len(),
            fp.left.len()
        )];
        lines.extend(
            fp.assign
                .iter()
                .chain(&fp.repair)
                .map(|x| x.describe(&st, &keys)),
        );
        lines.extend(fp.left.iter().map(|(s, why)| format!("left {s}: {why}")));
        return Ok(Report::lines(lines));
    }
    // The lease lives in a slot too: if no one owns it, give it an owner first (no engine can
    // be holding a lease no node can store).
    let lease_slot = key_slot(LEASE_KEY.as_bytes());
    let mut s = s;
    if fp.assign.iter().any(|x| x.slot() == lease_slot) {
        let first: Vec<Action> = fp
            .assign
            .iter()
            .filter(|x| x.slot() == lease_slot)
            .cloned()
            .collect();
        let mut ctx = Ctx {
            job: &job,
            lease: None,
            progress: Progress::new(0),
        };
        apply(&shared, &mut mover, &st, &keys, &first, &mut ctx).await?;
        (s, _) = read_cluster(&shared)
            .await
            .context("re-reading the cluster")?;
    }
    let mut lease = take_lease(&shared, &s, &job).await?;
    let result = async {
        let (_, st) = read_cluster(&shared)
            .await
            .context("re-reading the cluster")?;
        if let Some(p) = st.fix_refusal() {
            bail!("{p}");
        }
        let cand = candidates(&st);
        let keys = count(&mut mover, &st, &cand).await?;
        let fp = decide(&st, &keys);
        job.set_total(fp.assign.len() + fp.repair.len());
        let moves = fp
            .repair
            .iter()
            .filter(|x| matches!(x, Action::Finish { .. }))
            .count();
        let mut ctx = Ctx {
            job: &job,
            lease: Some(&mut lease),
            progress: Progress::new(moves),
        };
        let mut lines = apply(&shared, &mut mover, &st, &keys, &fp.assign, &mut ctx).await?;
        if !fp.assign.is_empty() {
            wait_ok(&mut mover, &st, &job, within).await?;
        }
        lines.extend(apply(&shared, &mut mover, &st, &keys, &fp.repair, &mut ctx).await?);
        // Whatever an interrupted run noted as moving is closed now.
        if let Some(l) = ctx.lease.as_deref_mut() {
            l.set_note(None).await?;
        }
        Ok((fp, lines))
    }
    .await;
    if let Err(e) = lease.release().await {
        job.log(format!(
            "could not release the lease (it expires by itself): {e:#}"
        ));
    }
    let (fp, lines) = result?;
    shared.topology.trigger_refresh();
    // Read back: every slot FIX handled must be closed and covered now.
    let (_, after) = read_cluster(&shared)
        .await
        .context("reading the cluster back")?;
    let left: BTreeSet<u16> = fp.left.iter().map(|x| x.0).collect();
    let still: Vec<u16> = candidates(&after)
        .into_iter()
        .filter(|s| !left.contains(s))
        .collect();
    if !still.is_empty() {
        bail!(
            "after the repairs, slot(s) {} are still open or uncovered; run PROXY FIX again",
            check::ranges_text(&still)
        );
    }
    if !fp.left.is_empty() {
        bail!(
            "fixed {} slot(s); left {}: {}",
            fp.slots(),
            fp.left.len(),
            fp.left
                .iter()
                .map(|(s, why)| format!("slot {s}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let mut out = vec![format!(
        "OK fixed {} slot(s) in {} step(s)",
        fp.slots(),
        lines.len()
    )];
    out.extend(lines);
    Ok(Report::lines(out))
}

#[cfg(test)]
#[path = "fix_tests.rs"]
mod tests;
