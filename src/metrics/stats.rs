//! Counters and latency histograms the data path keeps, read by INFO, `PROXY INFO`, the slow
//! log and the Prometheus export ([`crate::metrics::prom`]).
//!
//! Invariants that keep this off the hot path's costs:
//! * every counter has exactly one writer (the worker thread that owns it), so an update is a
//!   relaxed load and store, never a locked read-modify-write; readers on other threads see
//!   values that are at most a moment old and never go backwards;
//! * labels are indexes fixed in advance: a command is its position in Redis's command table
//!   ([`command_index`]), a node its position in the [`NodeRegistry`] (nodes come from the slot
//!   map and redirects, never from client input), so recording needs no lookup by label and
//!   label cardinality is bounded;
//! * histograms have fixed buckets ([`BUCKETS_US`]) and keep a count and a sum per bucket, so an
//!   export can rebuild exact bucket counts and an exact total from two snapshots.

use crate::route::command::{self, CommandSpec, COMMANDS};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// Upper bounds of the latency buckets, in microseconds (`le` in Prometheus terms); one more
/// bucket past the last bound holds everything slower.
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Buckets per histogram, the overflow bucket included.
pub const NB: usize = BUCKETS_US.len() + 1;

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Subtracts `n` from a single-writer gauge (saturating at zero).
#[inline]
pub fn drop_by(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).saturating_sub(n), Relaxed);
}

/// A latency histogram with one writer.
#[derive(Default, Debug)]
pub struct Hist {
    counts: [AtomicU64; NB],
    sums_us: [AtomicU64; NB],
}

/// A copy of a histogram's buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistSnap {
    /// Samples per bucket.
    pub counts: [u64; NB],
    /// Sum of the samples per bucket, in microseconds.
    pub sums_us: [u64; NB],
}

impl Hist {
    /// Records one sample of `us` microseconds.
    #[inline]
    pub fn record(&self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        bump(&self.counts[i], 1);
        bump(&self.sums_us[i], us);
    }

    /// The buckets as they are now.
    pub fn snapshot(&self) -> HistSnap {
        let mut s = HistSnap::default();
        for i in 0..NB {
            s.counts[i] = self.counts[i].load(Relaxed);
            s.sums_us[i] = self.sums_us[i].load(Relaxed);
        }
        s
    }
}

impl HistSnap {
    /// Adds another snapshot's buckets.
    pub fn add(&mut self, o: &HistSnap) {
        for i in 0..NB {
            self.counts[i] += o.counts[i];
            self.sums_us[i] += o.sums_us[i];
        }
    }

    /// Samples in total.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in microseconds, interpolated inside its bucket; `None` when
    /// empty. The overflow bucket reports its mean.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0f64;
        for i in 0..NB {
            let c = self.counts[i] as f64;
            if c > 0.0 && seen + c >= rank {
                if i == NB - 1 {
                    return Some(self.sums_us[i] as f64 / c);
                }
                let lo = if i == 0 {
                    0.0
                } else {
                    BUCKETS_US[i - 1] as f64
                };
                let hi = BUCKETS_US[i] as f64;
                return Some(lo + (hi - lo) * ((rank - seen) / c));
            }
            seen += c;
        }
        None
    }
}

/// Labels of the command index space: `other` (names not in the table), `proxy`, then every
/// command and subcommand of the table.
fn labels() -> &'static Labels {
    static L: OnceLock<Labels> = OnceLock::new();
    L.get_or_init(|| {
        let mut names = vec!["other", "proxy"];
        let mut sub_base = Vec::with_capacity(COMMANDS.len());
        for c in COMMANDS {
            names.push(c.name);
        }
        for c in COMMANDS {
            sub_base.push(names.len());
            for s in c.subcommands {
                names.push(s.name);
            }
        }
        Labels { names, sub_base }
    })
}

struct Labels {
    names: Vec<&'static str>,
    /// Index of each top-level command's first subcommand.
    sub_base: Vec<usize>,
}

const TOP_BASE: usize = 2;

fn position(slice: &'static [CommandSpec], spec: &'static CommandSpec) -> Option<usize> {
    let start = slice.as_ptr() as usize;
    let p = spec as *const CommandSpec as usize;
    let size = std::mem::size_of::<CommandSpec>();
    (p >= start && p < start + std::mem::size_of_val(slice)).then(|| (p - start) / size)
}

/// The label index of a request (its command, or subcommand for containers such as CLIENT).
/// Never derived from anything but the command table, so a client cannot add labels.
pub fn command_index(args: &[Bytes]) -> u16 {
    let Some(name) = args.first() else {
        return 0;
    };
    let Some(top) = command::lookup(std::slice::from_ref(name)) else {
        return if name.eq_ignore_ascii_case(b"proxy") {
            1
        } else {
            0
        };
    };
    let Some(ti) = position(COMMANDS, top) else {
        return 0;
    };
    if top.is_container() && args.len() >= 2 {
        if let Some(sub) = command::lookup(&args[..2]) {
            if let Some(si) = position(top.subcommands, sub) {
                return (labels().sub_base[ti] + si) as u16;
            }
        }
    }
    (TOP_BASE + ti) as u16
}

/// [`command_index`] for a request whose spec the router already looked up (`None`: PROXY or
/// an unknown command): a top-level command's label is found from the spec's place in the
/// table, without searching it again.
pub fn command_index_of(args: &[Bytes], spec: Option<&'static CommandSpec>) -> u16 {
    match spec.and_then(|s| position(COMMANDS, s)) {
        Some(ti) if !COMMANDS[ti].is_container() => (TOP_BASE + ti) as u16,
        // PROXY, unknown names and subcommands: the full search (rare on the data path).
        _ => command_index(args),
    }
}

/// Number of command labels.
pub fn command_count() -> usize {
    labels().names.len()
}

/// The label of command index `i` (Redis's spelling, `client|setname` for subcommands).
pub fn command_name(i: usize) -> &'static str {
    labels().names.get(i).copied().unwrap_or("other")
}

/// Per-command counters of one worker.
#[derive(Default, Debug)]
pub struct CmdStats {
    /// Requests answered.
    pub calls: AtomicU64,
    /// Of which error replies.
    pub errors: AtomicU64,
    /// Arrival to reply, whole request.
    pub total: Hist,
    /// Time spent waiting on backends (for a split command, its slowest part).
    pub backend: Hist,
}

/// Counters of one worker beyond the basic ones in [`crate::shared::WorkerStats`].
#[derive(Debug)]
pub struct WorkerMetrics {
    /// Indexed by [`command_index`].
    pub commands: Box<[CmdStats]>,
    /// Requests whose reply has been queued for the client.
    pub completed: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Reply bytes queued for clients and not yet written (a gauge).
    pub pending_out: AtomicU64,
    /// Clients disconnected for exceeding `max_pending_reply_bytes`.
    pub cut_output: AtomicU64,
    /// MOVED redirects followed.
    pub moved: AtomicU64,
    /// ASK redirects followed.
    pub ask: AtomicU64,
    /// TRYAGAIN retries.
    pub tryagain: AtomicU64,
    /// CLUSTERDOWN replies passed on.
    pub clusterdown: AtomicU64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            commands: (0..command_count()).map(|_| CmdStats::default()).collect(),
            completed: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            pending_out: AtomicU64::new(0),
            cut_output: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            ask: AtomicU64::new(0),
            tryagain: AtomicU64::new(0),
            clusterdown: AtomicU64::new(0),
        }
    }
}

/// Labels of `slotproxy_topology_refreshes_total`'s `trigger`: the start-up refresh, the
/// timer, then [`crate::shared::Trigger::ALL`]'s names.
pub const REFRESH_TRIGGERS: [&str; 6] = [
    "start",
    "timer",
    "moved",
    "connection_lost",
    "clusterdown",
    "admin",
];
/// Labels of `slotproxy_topology_refreshes_total`'s `result` (the refresher's outcomes).
pub const REFRESH_RESULTS: [&str; 4] = ["changed", "unchanged", "kept", "failed"];

/// The topology refresher's counters: refreshes by trigger and result, and how long they
/// took. One per proxy, in its [`crate::shared::Shared`], so two proxies in one process count
/// apart. Invariant: its only writer is the proxy's one refresher task (single-writer
/// counters, like the workers').
#[derive(Default, Debug)]
pub struct RefreshStats {
    /// Indexed by [`REFRESH_TRIGGERS`], then [`REFRESH_RESULTS`].
    counts: [[AtomicU64; REFRESH_RESULTS.len()]; REFRESH_TRIGGERS.len()],
    duration: Hist,
}

impl RefreshStats {
    /// Counts one refresh. Both labels are constants of the refresher; one outside the lists
    /// is a bug, caught by a unit test, and its count is dropped rather than mislabelled.
    pub fn record(&self, trigger: &str, result: &str, took: std::time::Duration) {
        let t = REFRESH_TRIGGERS.iter().position(|&x| x == trigger);
        let r = REFRESH_RESULTS.iter().position(|&x| x == result);
        debug_assert!(
            t.is_some() && r.is_some(),
            "unknown refresh label {trigger}/{result}"
        );
        if let (Some(t), Some(r)) = (t, r) {
            bump(&self.counts[t][r], 1);
        }
        self.duration
            .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// (trigger, result, refreshes) for every pair seen at least once: a pair appears in the
    /// export from its first refresh on, as it always has.
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (t, row) in REFRESH_TRIGGERS.iter().zip(&self.counts) {
            for (r, c) in REFRESH_RESULTS.iter().zip(row) {
                let n = c.load(Relaxed);
                if n > 0 {
                    out.push((*t, *r, n));
                }
            }
        }
        out
    }

    /// The refresh durations' buckets.
    pub fn duration(&self) -> HistSnap {
        self.duration.snapshot()
    }
}

/// One worker's counters for one backend node.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Replies received.
    pub replies: AtomicU64,
    /// Of which error replies (redirects included).
    pub error_replies: AtomicU64,
    /// Requests failed by the proxy: connection lost, no reply in time, node unreachable.
    pub failed: AtomicU64,
    /// Write-to-reply latency.
    pub latency: Hist,
    /// Connections up (a gauge).
    pub conns_up: AtomicU64,
    /// Connections being opened (a gauge).
    pub conns_connecting: AtomicU64,
    /// Connections in back-off after a failure (a gauge).
    pub conns_down: AtomicU64,
    /// The node left the topology: the worker holding these counters drops its pool.
    pub retired: std::sync::atomic::AtomicBool,
}

/// A node's address and each worker's counters for it.
pub type NodeEntry = (Arc<str>, Vec<Arc<NodeStats>>);

/// Every node the workers talk to: its address (the label) and each worker's counters.
/// Touched only when a worker opens a pool for a new node, when the topology changes and when
/// stats are read. Invariant: it holds only nodes of the current topology (and seeds), so its
/// size — and the metrics' `node` label values — follow the cluster's, not its history; an id
/// is never reused, so a slow-log entry never names another node than the one it saw.
#[derive(Default)]
pub struct NodeRegistry {
    inner: Mutex<Registered>,
}

#[derive(Default)]
struct Registered {
    next_id: u32,
    entries: Vec<(u32, Arc<str>, Vec<Arc<NodeStats>>)>,
}

impl NodeRegistry {
    /// New counters for one worker and `addr`, with the node's id.
    pub fn register(&self, addr: &str) -> (u32, Arc<NodeStats>) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let stats = Arc::new(NodeStats::default());
        let i = match r.entries.iter().position(|(_, a, _)| &**a == addr) {
            Some(i) => i,
            None => {
                let id = r.next_id;
                r.next_id = r.next_id.wrapping_add(1);
                r.entries.push((id, Arc::from(addr), Vec::new()));
                r.entries.len() - 1
            }
        };
        r.entries[i].2.push(Arc::clone(&stats));
        (r.entries[i].0, stats)
    }

    /// The address of node `id`, while the node is registered.
    pub fn name(&self, id: u32) -> Option<Arc<str>> {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.entries
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, a, _)| Arc::clone(a))
    }

    /// Every node with its workers' counters.
    pub fn all(&self) -> Vec<NodeEntry> {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.entries
            .iter()
            .map(|(_, a, s)| (Arc::clone(a), s.clone()))
            .collect()
    }

    /// Keeps only the nodes `keep` accepts; the others' counters are marked retired, so the
    /// workers still holding a pool for them drop it.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.entries.retain(|(_, addr, stats)| {
            let k = keep(addr);
            if !k {
                for s in stats {
                    s.retired.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            k
        });
    }

    /// Nodes registered now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// Whether no node is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::route::resp::test_args as args;

    #[test]
    fn the_label_from_the_router_s_spec_is_the_label_from_the_name() {
        let cases: &[&[&str]] = &[
            &["GET", "k"],
            &["mset", "a", "1", "b", "2"],
            &["CLIENT", "SETNAME", "x"],
            &["client", "nope"],
            &["CONFIG"],
            &["NOSUCH", "x"],
            &["proxy", "info"],
            &["EVAL", "return 1", "0"],
        ];
        for case in cases {
            let a = args(case);
            let routed = crate::route::router::analyse(&a, &mut Vec::new());
            assert_eq!(
                command_index_of(&a, routed.spec),
                command_index(&a),
                "{case:?}"
            );
        }
    }

    #[test]
    fn command_labels_come_from_the_table() {
        assert_eq!(
            command_name(command_index(&args(&["GET", "k"])) as usize),
            "get"
        );
        assert_eq!(
            command_name(command_index(&args(&["set", "k", "v"])) as usize),
            "set"
        );
        assert_eq!(
            command_name(command_index(&args(&["CLIENT", "SETNAME", "x"])) as usize),
            "client|setname"
        );
        assert_eq!(
            command_name(command_index(&args(&["CLIENT", "NOPE"])) as usize),
            "client"
        );
        assert_eq!(
            command_name(command_index(&args(&["NOSUCH"])) as usize),
            "other"
        );
        assert_eq!(
            command_name(command_index(&args(&["proxy", "info"])) as usize),
            "proxy"
        );
        assert!(command_count() > 300);
    }

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Hist::default();
        for us in [50, 150, 150, 20_000_000] {
            h.record(us);
        }
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 2);
        assert_eq!(s.counts[NB - 1], 1);
        assert_eq!(s.sums_us[1], 300);
        assert_eq!(s.count(), 4);
        let p50 = s.quantile_us(0.5).unwrap();
        assert!((100.0..=250.0).contains(&p50), "{p50}");
        assert_eq!(s.quantile_us(1.0).unwrap(), 20_000_000.0);
        assert_eq!(HistSnap::default().quantile_us(0.5), None);
    }
}
