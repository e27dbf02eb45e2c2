//! Runs the planned slot moves, several slots at once ([`execute`]).
//!
//! A slot holding few keys costs a handful of round trips that wait on each other (IMPORTING,
//! MIGRATING with the first listing, MIGRATE, SETSLOT NODE on the target, then on the others),
//! so one slot at a time leaves the nodes idle most of the time. Up to `PARALLEL` slots move at
//! once, each with its own [`Mover`] (its own connections); a slot is only ever moved by one of
//! them, and every slot keeps the one-slot order that keeps clients correct. Concurrent
//! `SETSLOT NODE` on different targets each bump the target's config epoch; Redis resolves
//! equal epochs among masters by itself (the node with the smaller ID takes a new one), and no
//! slot is claimed by two of them, so no slot's owner flips back.
//!
//! The lease's move note names every range that has a slot open (`;`-separated), so a killed
//! run's open slots, however many, are told from another tool's and finished by a re-run.
//!
//! The slots in flight are spread over the source masters ([`pick_next`]): at most
//! `ceil(PARALLEL / sources)` from one source at once. A MIGRATE holds its source node while
//! it runs, so eight lanes all draining the first source of the plan held that node (and the
//! clients queued behind it) eight times over while the other sources idled.

use super::migrate::{Ctx, MoveError, MoveSettings, Mover, NodeRef};
use super::progress::Progress;
use super::range_text;
use super::state::Note;
use crate::admin::check;
use crate::admin::jobs::Job;
use crate::admin::lease::Lease;
use crate::shared::Shared;
use anyhow::anyhow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// One slot to move, with its masters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The slot.
    pub slot: u16,
    /// The master giving it.
    pub from: NodeRef,
    /// The master taking it.
    pub to: NodeRef,
}

/// The steps as runs: index ranges of consecutive slots between one pair.
pub fn runs(steps: &[Step]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let mut j = i + 1;
        while j < steps.len()
            && steps[j].from == steps[i].from
            && steps[j].to == steps[i].to
            && steps[j].slot == steps[j - 1].slot + 1
        {
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// One slot's move in flight: (lane, its mover back, step index, keys moved or the error).
type Flight<'a> =
    Pin<Box<dyn Future<Output = (usize, Mover, usize, Result<u64, MoveError>)> + Send + 'a>>;

/// Waits for the first of `flying` to finish and takes it out. Never called empty.
async fn next_done<T>(flying: &mut Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> T {
    std::future::poll_fn(|cx| {
        for i in 0..flying.len() {
            if let Poll::Ready(v) = flying[i].as_mut().poll(cx) {
                drop(flying.swap_remove(i));
                return Poll::Ready(v);
            }
        }
        Poll::Pending
    })
    .await
}

/// Moves the slots, up to `settings.parallel` at once, in plan order; returns the keys
/// moved. Before a run of consecutive slots between one pair gets its first slot started, the
/// move note is rewritten to name every run with a slot open; it is deleted at the end. Each
/// slot counts in the job's steps, in `slotproxy_admin_slots_moved_total` and in the progress
/// line. After a failed slot no other is started; those in flight finish first.
pub async fn execute(
    shared: &Shared,
    job: &Job,
    lease: &mut Lease,
    masters: &[NodeRef],
    steps: &[Step],
    settings: MoveSettings,
) -> anyhow::Result<u64> {
    let lanes = settings.parallel.max(1);
    let mut movers: Vec<Option<Mover>> = (0..lanes)
        .map(|_| {
            Some(Mover::new(
                Arc::clone(&shared.settings.dialer),
                check::node_timeout(shared),
                settings.clone(),
            ))
        })
        .collect();
    let progress = Progress::new(steps.len());
    job.set_total(job.snapshot().1 + steps.len());
    job.set_detail(progress.line());
    let runs = runs(steps);
    let run_of: Vec<usize> = runs
        .iter()
        .enumerate()
        .flat_map(|(r, range)| range.clone().map(move |_| r))
        .collect();
    // Per run: slots started, slots finished, keys moved.
    let mut started = vec![0usize; runs.len()];
    let mut finished = vec![0usize; runs.len()];
    let mut keys_of = vec![0u64; runs.len()];
    let mut noted: Vec<usize> = Vec::new();
    let mut flying: Vec<Flight<'_>> = Vec::new();
    // The first step not started yet (every one before it has been).
    let mut next = 0;
    let mut step_started = vec![false; steps.len()];
    let mut from_source: HashMap<&str, usize> = HashMap::new();
    let cap = per_source_cap(steps, lanes);
    let mut failed: Option<anyhow::Error> = None;
    loop {
        // Start slots while a lane is free.
        while failed.is_none() && next < steps.len() {
            let Some(lane) = movers.iter().position(Option::is_some) else {
                break;
            };
            let Some(i) = pick_next(steps, &step_started, &from_source, cap, next) else {
                break;
            };
            let r = run_of[i];
            if started[r] == 0 {
                noted.retain(|&o| started[o] > finished[o]);
                noted.push(r);
                let notes: Vec<Note> = noted
                    .iter()
                    .map(|&o| {
                        let range = &runs[o];
                        Note {
                            from: steps[range.start].from.id.clone(),
                            to: steps[range.start].to.id.clone(),
                            first: steps[range.start].slot,
                            last: steps[range.end - 1].slot,
                        }
                    })
                    .collect();
                if let Err(e) = lease.set_note(Some(&Note::text_all(&notes))).await {
                    failed = Some(e);
                    break;
                }
            }
            started[r] += 1;
            let Some(mut mover) = movers[lane].take() else {
                break;
            };
            let step = &steps[i];
            step_started[i] = true;
            *from_source.entry(step.from.id.as_str()).or_default() += 1;
            while next < steps.len() && step_started[next] {
                next += 1;
            }
            let progress = progress.clone();
            flying.push(Box::pin(async move {
                let mut ctx = Ctx {
                    job,
                    lease: None,
                    progress,
                };
                let r = mover
                    .move_slot(&step.from, &step.to, masters, step.slot, &mut ctx)
                    .await;
                (lane, mover, i, r)
            }));
        }
        if flying.is_empty() {
            break;
        }
        // The lease is renewed here: the slots in flight hold none.
        let done = tokio::select! {
            d = next_done(&mut flying) => Some(d),
            _ = tokio::time::sleep(Duration::from_millis(500)) => None,
        };
        if let Err(e) = lease.renew_if_due(job).await {
            failed.get_or_insert(e);
        }
        let Some((lane, mover, i, result)) = done else {
            continue;
        };
        movers[lane] = Some(mover);
        if let Some(n) = from_source.get_mut(steps[i].from.id.as_str()) {
            *n = n.saturating_sub(1);
        }
        let r = run_of[i];
        match result {
            Ok(keys) => {
                finished[r] += 1;
                keys_of[r] += keys;
                progress.slot_done();
                job.advance(1);
                shared.registries.jobs.count_slot_moved();
                job.set_detail(progress.line());
                if finished[r] == runs[r].len() {
                    let (a, b) = (&steps[runs[r].start], &steps[runs[r].end - 1]);
                    job.log(format!(
                        "moved {} {} -> {} ({} slots, {} keys)",
                        range_text(a.slot, b.slot),
                        a.from.addr,
                        a.to.addr,
                        runs[r].len(),
                        keys_of[r]
                    ));
                }
            }
            Err(e) => {
                if failed.is_none() {
                    failed = Some(anyhow!(
                        "{e} ({} of {} planned slots were moved before it)",
                        progress.slots_done(),
                        steps.len()
                    ));
                }
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    lease.set_note(None).await?;
    let moved = |map: &crate::cluster::SlotMap| {
        steps
            .iter()
            .all(|s| map.owner(s.slot).is_some_and(|n| *n.addr == *s.to.addr))
    };
    if !crate::cluster::topology::await_map(shared, MAP_WAIT, moved).await {
        job.log(format!(
            "the proxy's slot map did not show every moved slot at its new owner within {}s; \
             the next refresh will",
            MAP_WAIT.as_secs()
        ));
    }
    Ok(progress.keys())
}

/// How long a finished move waits for the proxy's own map to show it (see
/// [`crate::cluster::topology::await_map`]).
const MAP_WAIT: Duration = Duration::from_secs(5);

/// How many slots one source master may have in flight: the lanes shared evenly by the
/// plan's sources (at least one).
fn per_source_cap(steps: &[Step], lanes: usize) -> usize {
    let sources: std::collections::HashSet<&str> =
        steps.iter().map(|s| s.from.id.as_str()).collect();
    lanes.div_ceil(sources.len().max(1)).max(1)
}

/// The next step to start: the first one, from `next` on, that is not started and whose
/// source has fewer than `cap` slots in flight (`in_flight`, by source ID). `None` when every
/// source with steps left is at its cap (or nothing is left).
fn pick_next(
    steps: &[Step],
    started: &[bool],
    in_flight: &HashMap<&str, usize>,
    cap: usize,
    next: usize,
) -> Option<usize> {
    (next..steps.len()).find(|&i| {
        !started[i]
            && in_flight
                .get(steps[i].from.id.as_str())
                .copied()
                .unwrap_or(0)
                < cap
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_in_flight_are_spread_over_the_sources() {
        // Plan order drains source 1 first, then 2, then 3.
        let steps: Vec<Step> = (0..12).map(|i| s(i, 1 + (i / 4) as u8, 9)).collect();
        let cap = per_source_cap(&steps, 3);
        assert_eq!(cap, 1);
        let mut started = vec![false; steps.len()];
        let mut in_flight: HashMap<&str, usize> = HashMap::new();
        let mut order = Vec::new();
        while let Some(i) = pick_next(&steps, &started, &in_flight, cap, 0) {
            started[i] = true;
            *in_flight.entry(steps[i].from.id.as_str()).or_default() += 1;
            order.push(i);
        }
        // One slot from each source, the first of each in plan order.
        assert_eq!(order, vec![0, 4, 8]);
        // Source 2's slot finishes: its next slot starts, not another of source 1's.
        *in_flight.get_mut(steps[4].from.id.as_str()).unwrap() -= 1;
        assert_eq!(pick_next(&steps, &started, &in_flight, cap, 1), Some(5));
        // Eight lanes over three sources: three each.
        assert_eq!(per_source_cap(&steps, 8), 3);
        assert_eq!(per_source_cap(&[], 8), 8);
    }

    fn n(i: u8) -> NodeRef {
        NodeRef {
            id: format!("{i:0>40}"),
            addr: format!("127.0.0.{i}:7000"),
        }
    }

    fn s(slot: u16, from: u8, to: u8) -> Step {
        Step {
            slot,
            from: n(from),
            to: n(to),
        }
    }

    #[test]
    fn runs_are_consecutive_slots_of_one_pair() {
        let steps = [
            s(0, 1, 4),
            s(1, 1, 4),
            s(2, 1, 5),
            s(3, 1, 5),
            s(7, 1, 5),
            s(8, 2, 5),
        ];
        assert_eq!(runs(&steps), vec![0..2, 2..4, 4..5, 5..6]);
        assert!(runs(&[]).is_empty());
    }
}
