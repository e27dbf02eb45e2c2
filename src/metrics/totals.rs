//! The workers' counters summed over all workers ([`Totals`], [`CommandTotals`]), and the
//! point INFO counts from since `CONFIG RESETSTAT` ([`ResetPoint`]).
//!
//! A reset never touches a counter: the counters stay monotonic (Prometheus' rates and
//! `PROXY INFO` read them as they are), and the data path keeps its single-writer updates with
//! nothing added per request. RESETSTAT stores the sums as they are at that moment, and INFO
//! shows the sums minus that point. Invariant: a figure shown since a reset never goes below
//! zero, and gauges (clients connected, bytes pending) are never offset.

use crate::metrics::stats::{HistSnap, NB};
use std::sync::{Arc, Mutex};

/// Worker counters summed over all workers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Clients connected now.
    pub clients: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Requests parsed.
    pub commands: u64,
    /// Requests whose reply is queued for the client.
    pub completed: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Reply bytes waiting to be written.
    pub pending_out: u64,
    /// Clients cut for output limits.
    pub cut_output: u64,
    /// MOVED redirects followed.
    pub moved: u64,
    /// ASK redirects followed.
    pub ask: u64,
    /// TRYAGAIN retries.
    pub tryagain: u64,
    /// CLUSTERDOWN replies seen.
    pub clusterdown: u64,
}

impl Totals {
    /// Requests read and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.commands.saturating_sub(self.completed)
    }

    /// The counters since `base` was taken; the gauges as they are.
    pub fn since(&self, base: &Totals) -> Totals {
        Totals {
            clients: self.clients,
            accepted: self.accepted.saturating_sub(base.accepted),
            commands: self.commands.saturating_sub(base.commands),
            completed: self.completed.saturating_sub(base.completed),
            bytes_in: self.bytes_in.saturating_sub(base.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(base.bytes_out),
            pending_out: self.pending_out,
            cut_output: self.cut_output.saturating_sub(base.cut_output),
            moved: self.moved.saturating_sub(base.moved),
            ask: self.ask.saturating_sub(base.ask),
            tryagain: self.tryagain.saturating_sub(base.tryagain),
            clusterdown: self.clusterdown.saturating_sub(base.clusterdown),
        }
    }
}

/// One command's counters summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandTotals {
    /// Label index.
    pub index: usize,
    /// Requests answered.
    pub calls: u64,
    /// Error replies.
    pub errors: u64,
    /// Whole-request latency.
    pub total: HistSnap,
    /// Backend part.
    pub backend: HistSnap,
}

impl CommandTotals {
    /// The counts since `base` (the same command's, taken earlier).
    pub fn since(&self, base: &CommandTotals) -> CommandTotals {
        CommandTotals {
            index: self.index,
            calls: self.calls.saturating_sub(base.calls),
            errors: self.errors.saturating_sub(base.errors),
            total: hist_since(&self.total, &base.total),
            backend: hist_since(&self.backend, &base.backend),
        }
    }
}

fn hist_since(now: &HistSnap, base: &HistSnap) -> HistSnap {
    let mut out = HistSnap::default();
    for i in 0..NB {
        out.counts[i] = now.counts[i].saturating_sub(base.counts[i]);
        out.sums_us[i] = now.sums_us[i].saturating_sub(base.sums_us[i]);
    }
    out
}

/// Per-command totals since `base` (both as [`crate::metrics::info::command_totals`] lists
/// them: commands called at least once, by label index); commands not called since are left
/// out.
pub fn commands_since(now: Vec<CommandTotals>, base: &[CommandTotals]) -> Vec<CommandTotals> {
    now.into_iter()
        .map(|c| match base.iter().find(|b| b.index == c.index) {
            Some(b) => c.since(b),
            None => c,
        })
        .filter(|c| c.calls > 0)
        .collect()
}

/// The sums at the last `CONFIG RESETSTAT` (all zero before the first).
#[derive(Debug, Default, Clone)]
pub struct Baseline {
    /// The worker counters.
    pub totals: Totals,
    /// Connections refused at `max_clients`.
    pub rejected: u64,
    /// Freed memory handed back to the system.
    pub trims: u64,
    /// Per-command counts (INFO's commandstats, errorstats and latencystats count from here).
    pub commands: Vec<CommandTotals>,
}

/// Where INFO counts from: one per running proxy. Written by RESETSTAT, read by INFO; never on
/// the data path.
#[derive(Default)]
pub struct ResetPoint {
    at: Mutex<Arc<Baseline>>,
}

impl ResetPoint {
    /// Makes `b` the point INFO counts from.
    pub fn set(&self, b: Baseline) {
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(b);
    }

    /// The point INFO counts from.
    pub fn get(&self) -> Arc<Baseline> {
        Arc::clone(&self.at.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_from_the_reset_and_gauges_do_not() {
        let base = Totals {
            clients: 9,
            accepted: 10,
            commands: 100,
            completed: 99,
            bytes_in: 1000,
            pending_out: 5,
            moved: 3,
            ..Totals::default()
        };
        let now = Totals {
            clients: 2,
            accepted: 12,
            commands: 150,
            completed: 150,
            bytes_in: 1500,
            pending_out: 7,
            moved: 3,
            ..Totals::default()
        };
        let s = now.since(&base);
        assert_eq!(
            (s.accepted, s.commands, s.bytes_in, s.moved),
            (2, 50, 500, 0)
        );
        assert_eq!((s.clients, s.pending_out), (2, 7));
        // Never below zero (a point taken from a later reading than `now`).
        assert_eq!(base.since(&now).commands, 0);
    }

    #[test]
    fn command_counts_from_the_reset() {
        let mut h = HistSnap::default();
        h.counts[2] = 4;
        h.sums_us[2] = 1200;
        let get = CommandTotals {
            index: 7,
            calls: 4,
            errors: 1,
            total: h,
            backend: h,
        };
        let set = CommandTotals {
            index: 8,
            calls: 2,
            ..CommandTotals::default()
        };
        let mut later = get.clone();
        later.calls = 6;
        later.total.counts[2] = 6;
        let since = commands_since(vec![later, set.clone()], &[get.clone(), set]);
        assert_eq!(since.len(), 1, "SET was not called since: {since:?}");
        assert_eq!((since[0].index, since[0].calls, since[0].errors), (7, 2, 0));
        assert_eq!(since[0].total.counts[2], 2);
        let point = ResetPoint::default();
        assert_eq!(point.get().totals, Totals::default());
        point.set(Baseline {
            commands: vec![get],
            ..Baseline::default()
        });
        assert_eq!(point.get().commands.len(), 1);
    }
}
