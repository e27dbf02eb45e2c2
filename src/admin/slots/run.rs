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

use super::migrate::{Ctx, MoveError, MoveSettings, Mover, NodeRef};
use super::progress::Progress;
use super::range_text;
use super::state::Note;
use crate::admin::check;
use crate::admin::jobs::Job;
use crate::admin::lease::Lease;
use crate::shared::Shared;
use anyhow::anyhow;
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
    let mut next = 0;
    let mut failed: Option<anyhow::Error> = None;
    loop {
        // Start slots while a lane is free.
        while failed.is_none() && next < steps.len() {
            let Some(lane) = movers.iter().position(Option::is_some) else {
                break;
            };
            let r = run_of[next];
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
            let (step, i) = (&steps[next], next);
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
            next += 1;
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
    shared.topology.trigger_refresh();
    Ok(progress.keys())
}

#[cfg(test)]
mod tests {
    use super::*;

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
