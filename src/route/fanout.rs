//! Commands that concern the whole cluster (KEYS, DBSIZE, SCAN, FLUSHALL, SCRIPT, CONFIG SET,
//! ...): which nodes they reach, and SCAN's cluster-wide cursor. Everything here is pure; the
//! session resolves node addresses from the current slot map and sends the calls.
//!
//! # SCAN's cursor
//!
//! A cluster SCAN visits the masters one after another, in a *scan order* that depends only
//! on the slot map ([`scan_plan`]): the masters sorted by the lowest slot they own. The
//! client's cursor is a `u64` with this layout ([`ScanCursor`]):
//!
//! ```text
//!  63                               24 23            10 9          0
//! +-----------------------------------+----------------+------------+
//! |  node cursor (40 bits)            | fingerprint    | position   |
//! |  the visited node's own cursor    | (14 bits)      | (10 bits)  |
//! +-----------------------------------+----------------+------------+
//! ```
//!
//! With `M` masters in the scan order, the position says what the next *step* does
//! ([`ScanCursor::step`]); one client call runs one step or more, until its batch is full
//! (see [`crate::route::scan_batch`]):
//!
//! - `0 <= position < M`, the *main pass*: continue the SCAN of master `position` from
//!   `node cursor` (its own cursor; 0 = from its start). When that node answers 0 the pass
//!   moves to the next master; after the last one, to the check.
//! - `position == M`, the *check*: the proxy asks every master for `CLUSTER NODES` and reads
//!   each one's own line (`myself`): which slots it owns and which it is importing or
//!   migrating. The step adds no keys; its cursor says what comes next. Here the node-cursor
//!   field holds `from`, the first master index the check may still pick.
//! - `M < position <= 2M`, a *revisit*: master `position - M - 1`, a migration target, is
//!   scanned again from its start; when it finishes, the check runs again with `from` past it.
//!
//! `fingerprint` is a hash of the slot assignment (which address owns which slot range)
//! under which the iteration runs; it is never 0.
//!
//! Invariants:
//! - Cursor 0 starts an iteration and the proxy returns 0 exactly once, from a check that
//!   found the assignment unchanged and no migration left to revisit. A cursor the proxy
//!   hands out between is never 0 (its position or node cursor is non-zero). A restart is
//!   handed out as position 1023 with fingerprint 0, which no map's fingerprint equals, so it
//!   resumes as a fresh iteration.
//! - The check compares what the masters claim, keyed by the addresses the proxy asked (the
//!   map's), so a cluster whose nodes name themselves differently still ends its iterations;
//!   while the proxy's map is stale (a refresh is at most `refresh_interval` away) each check
//!   restarts, so an iteration ends once the map has caught up.
//! - A full iteration runs a complete SCAN on every master, so every key that stayed on one
//!   master throughout is returned, with Redis's own per-node guarantees (a key may be
//!   returned more than once; keys added or removed meanwhile may or may not appear).
//! - **Topology changes.** A cursor whose fingerprint differs from the current map's, or a
//!   check that finds the masters' own view of the assignment different from the fingerprint
//!   (a slot changed owner, a failover replaced a master, the proxy's map is stale), restarts
//!   the iteration from position 0 on the current map. Keys then repeat, but none that
//!   existed throughout is missed; an iteration only ends after a main pass during which the
//!   assignment did not change.
//! - **Migrations.** While a slot migrates, its keys move from the source to the target with
//!   the assignment unchanged. A key that moves from a master not visited yet to one already
//!   visited would be missed by the main pass alone; the check sees every migration still in
//!   progress after the main pass and revisits its target, where such a key now is. A
//!   migration that ended during the pass changed the assignment, so the check restarts the
//!   iteration. (A migration that is aborted with `SETSLOT STABLE` after moving keys back can
//!   still hide a key; redis-cli never does that.)

use crate::cluster::slots::SLOT_COUNT;
use crate::cluster::SlotMap;
use std::sync::Arc;

const POSITION_BITS: u32 = 10;
const FINGERPRINT_BITS: u32 = 14;
const NODE_SHIFT: u32 = POSITION_BITS + FINGERPRINT_BITS;

/// Size of the position field's range.
pub const MAX_SCAN_NODES: usize = 1 << POSITION_BITS;

/// Most masters a cluster SCAN supports (positions run up to `2 * masters`).
pub const MAX_SCAN_MASTERS: usize = MAX_SCAN_NODES / 2 - 1;

/// Largest node cursor the proxy can carry (40 bits: a hash table of 2^40 buckets).
pub const MAX_NODE_CURSOR: u64 = (1 << (64 - NODE_SHIFT)) - 1;

/// A decoded cluster SCAN cursor. Invariant: `position < MAX_SCAN_NODES`,
/// `fingerprint < 2^14`, `node_cursor <= MAX_NODE_CURSOR`, so encoding is lossless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanCursor {
    /// What the next step does: visit, check or revisit (see the module doc).
    pub position: u32,
    /// Fingerprint of the slot assignment the cursor was issued under (0 for a fresh scan).
    pub fingerprint: u16,
    /// The visited node's own SCAN cursor.
    pub node_cursor: u64,
}

impl ScanCursor {
    /// The cursor that starts an iteration.
    pub const START: ScanCursor = ScanCursor {
        position: 0,
        fingerprint: 0,
        node_cursor: 0,
    };

    /// Splits a client's cursor into its fields (every `u64` decodes).
    pub fn decode(cursor: u64) -> ScanCursor {
        ScanCursor {
            position: (cursor & ((1 << POSITION_BITS) - 1)) as u32,
            fingerprint: ((cursor >> POSITION_BITS) & ((1 << FINGERPRINT_BITS) - 1)) as u16,
            node_cursor: cursor >> NODE_SHIFT,
        }
    }

    /// The client's cursor for these fields; `None` when a field is out of range.
    pub fn encode(&self) -> Option<u64> {
        if self.position as usize >= MAX_SCAN_NODES
            || u32::from(self.fingerprint) >= 1 << FINGERPRINT_BITS
            || self.node_cursor > MAX_NODE_CURSOR
        {
            return None;
        }
        Some(
            (self.node_cursor << NODE_SHIFT)
                | (u64::from(self.fingerprint) << POSITION_BITS)
                | u64::from(self.position),
        )
    }

    /// Whether this is the cursor that starts an iteration.
    pub fn is_start(&self) -> bool {
        *self == ScanCursor::START
    }

    /// Where to continue under a map with this `plan`: this cursor when it was issued under
    /// the same slot assignment and points inside the plan, the start of a new iteration
    /// otherwise (see the module doc).
    pub fn resume(&self, plan: &ScanPlan) -> ScanCursor {
        let masters = plan.order.len() as u32;
        if self.is_start() || self.fingerprint != plan.fingerprint || self.position > 2 * masters {
            return ScanCursor {
                position: 0,
                fingerprint: plan.fingerprint,
                node_cursor: 0,
            };
        }
        *self
    }

    /// What the step from this (resumed) cursor does, with `masters` masters in the order.
    pub fn step(&self, masters: u32) -> ScanStep {
        if self.position < masters {
            ScanStep::Visit(self.position as usize)
        } else if self.position == masters {
            ScanStep::Check {
                from: self.node_cursor as usize,
            }
        } else {
            ScanStep::Visit((self.position - masters - 1) as usize)
        }
    }

    /// The cursor the client gets after the master visited by this cursor answered with
    /// `node_cursor`, with `masters` masters in the order. `None` when the node's cursor does
    /// not fit.
    pub fn next(&self, node_cursor: u64, masters: u32) -> Option<u64> {
        if node_cursor != 0 {
            return ScanCursor {
                node_cursor,
                ..*self
            }
            .encode();
        }
        let (position, node_cursor) = if self.position + 1 < masters {
            (self.position + 1, 0)
        } else if self.position < masters {
            (masters, 0) // the main pass is over: check
        } else {
            // A revisit of master `t` is over: check again, from the next master.
            (masters, u64::from(self.position - masters))
        };
        ScanCursor {
            position,
            node_cursor,
            ..*self
        }
        .encode()
    }

    /// The cursor a check hands out, given what the masters reported.
    pub fn after_check(&self, masters: u32, report: &CheckReport) -> u64 {
        let restart = ScanCursor {
            position: (MAX_SCAN_NODES - 1) as u32,
            fingerprint: 0,
            node_cursor: 0,
        };
        let restart = restart.encode().unwrap_or(u64::MAX);
        if report.fingerprint != Some(self.fingerprint) {
            return restart;
        }
        let from = self.node_cursor as usize;
        match report
            .importing
            .iter()
            .copied()
            .filter(|&t| t >= from)
            .min()
        {
            None => 0,
            Some(t) => ScanCursor {
                position: masters + 1 + t as u32,
                node_cursor: 0,
                ..*self
            }
            .encode()
            .unwrap_or(restart),
        }
    }
}

/// What one step of a cluster SCAN does (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanStep {
    /// SCAN the master at this index of the scan order, from the cursor's node cursor.
    Visit(usize),
    /// Ask every master for its own view; revisit migration targets at index `from` or later.
    Check {
        /// The lowest master index a revisit may still pick.
        from: usize,
    },
}

/// What the masters' own `CLUSTER NODES` lines say, as the check needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The fingerprint of the assignment the masters claim; `None` when they disagree (two
    /// claim one slot) or a reply could not be read.
    pub fingerprint: Option<u16>,
    /// Scan-order indices of the masters that are the target of a migration in progress.
    pub importing: Vec<usize>,
}

/// Reads the masters' `CLUSTER NODES` texts (`texts[i]` from `order[i]`, the scan order)
/// into a [`CheckReport`].
pub fn check_report(order: &[Arc<str>], texts: &[String]) -> CheckReport {
    let mut owners: Vec<Option<usize>> = vec![None; SLOT_COUNT];
    let mut ids: Vec<String> = Vec::with_capacity(order.len());
    let mut selves = Vec::with_capacity(order.len());
    let mut consistent = texts.len() == order.len();
    for (i, text) in texts.iter().enumerate() {
        let asked_ip = order
            .get(i)
            .and_then(|a| a.rsplit_once(':'))
            .map_or("", |x| x.0);
        let me = crate::cluster::parse_cluster_nodes(text, asked_ip)
            .ok()
            .and_then(|lines| lines.into_iter().find(|l| l.has("myself")));
        let Some(me) = me else {
            consistent = false;
            ids.push(String::new());
            continue;
        };
        for &(a, b) in &me.slots {
            for s in a..=b {
                match &mut owners[s as usize] {
                    Some(_) => consistent = false,
                    slot => *slot = Some(i),
                }
            }
        }
        ids.push(me.id.clone());
        selves.push((i, me));
    }
    let mut importing = Vec::new();
    for (i, me) in &selves {
        if !me.importing.is_empty() {
            importing.push(*i);
        }
        for (_, dst) in &me.migrating {
            match ids.iter().position(|id| id == dst) {
                Some(t) => importing.push(t),
                // A target that is not a master of the map: the map is stale.
                None => consistent = false,
            }
        }
    }
    importing.sort_unstable();
    importing.dedup();
    let fingerprint = consistent.then(|| {
        let mut ranges: Vec<(u16, u16, usize)> = Vec::new();
        for (s, o) in owners.iter().enumerate() {
            let Some(o) = *o else { continue };
            let s = s as u16;
            match ranges.last_mut() {
                Some(last) if last.1 + 1 == s && last.2 == o => last.1 = s,
                _ => ranges.push((s, s, o)),
            }
        }
        fingerprint(
            ranges
                .iter()
                .filter_map(|&(a, b, o)| order.get(o).map(|addr| (a, b, &**addr))),
        )
    });
    CheckReport {
        fingerprint,
        importing,
    }
}

/// The fingerprint of an assignment given as contiguous `(first, last, owner)` ranges in
/// slot order: FNV-1a folded to `FINGERPRINT_BITS`, never 0.
fn fingerprint<'a>(ranges: impl Iterator<Item = (u16, u16, &'a str)>) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (first, last, addr) in ranges {
        feed(&first.to_le_bytes());
        feed(&last.to_le_bytes());
        feed(addr.as_bytes());
        feed(b"\n");
    }
    let mask = (1u64 << FINGERPRINT_BITS) - 1;
    let folded = (hash ^ (hash >> 16) ^ (hash >> 32) ^ (hash >> 48)) & mask;
    if folded == 0 {
        1
    } else {
        folded as u16
    }
}

/// The nodes a SCAN visits under one slot map, and that map's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPlan {
    /// Masters by their lowest slot.
    pub order: Vec<Arc<str>>,
    /// Hash of the slot assignment, `FINGERPRINT_BITS` wide, never 0 (so a fresh cursor never
    /// matches by accident).
    pub fingerprint: u16,
}

/// The scan order and fingerprint of `map` (walks the 16384 slots once).
pub fn scan_plan(map: &SlotMap) -> ScanPlan {
    let ranges = map.ranges();
    let mut order: Vec<Arc<str>> = Vec::new();
    for (_, _, addr) in &ranges {
        if !order.contains(addr) {
            order.push(Arc::clone(addr));
        }
    }
    ScanPlan {
        order,
        fingerprint: fingerprint(ranges.iter().map(|(a, b, addr)| (*a, *b, &**addr))),
    }
}

/// Every distinct master address of `map`, in map order.
pub fn masters(map: &SlotMap) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = Vec::with_capacity(map.nodes.len());
    for n in &map.nodes {
        if !out.contains(&n.addr) {
            out.push(Arc::clone(&n.addr));
        }
    }
    out
}

/// Every distinct node address of `map`: masters, then their replicas.
pub fn all_nodes(map: &SlotMap) -> Vec<Arc<str>> {
    let mut out = masters(map);
    for n in &map.nodes {
        for r in &n.replicas {
            if !out.contains(r) {
                out.push(Arc::clone(r));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::parse_cluster_nodes;

    const NODES: &str = "\
a000000000000000000000000000000000000000 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 5461-10922
b000000000000000000000000000000000000000 127.0.0.1:7001@17001 master - 0 0 2 connected 0-5460
c000000000000000000000000000000000000000 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
d000000000000000000000000000000000000000 127.0.0.1:7003@17003 slave a000000000000000000000000000000000000000 0 0 1 connected
";

    fn map(text: &str) -> SlotMap {
        SlotMap::from_nodes(&parse_cluster_nodes(text, "").unwrap(), 1, "t")
    }

    #[test]
    fn cursor_round_trips_and_never_collides_with_zero() {
        for c in [
            ScanCursor {
                position: 0,
                fingerprint: 1,
                node_cursor: 1,
            },
            ScanCursor {
                position: 1023,
                fingerprint: 16383,
                node_cursor: MAX_NODE_CURSOR,
            },
            ScanCursor {
                position: 2,
                fingerprint: 77,
                node_cursor: 0,
            },
        ] {
            let enc = c.encode().unwrap();
            assert_ne!(enc, 0);
            assert_eq!(ScanCursor::decode(enc), c);
        }
        assert_eq!(ScanCursor::decode(0), ScanCursor::START);
        assert_eq!(ScanCursor::decode(u64::MAX).encode(), Some(u64::MAX));
        assert!(ScanCursor {
            node_cursor: MAX_NODE_CURSOR + 1,
            ..ScanCursor::START
        }
        .encode()
        .is_none());
    }

    #[test]
    fn next_walks_every_master_then_checks() {
        let c = ScanCursor {
            position: 0,
            fingerprint: 9,
            node_cursor: 0,
        };
        assert_eq!(c.step(3), ScanStep::Visit(0));
        // The node has more: stay on it.
        let n = ScanCursor::decode(c.next(17, 3).unwrap());
        assert_eq!((n.position, n.node_cursor, n.fingerprint), (0, 17, 9));
        // The node is done: next position, from its start.
        let n = ScanCursor::decode(c.next(0, 3).unwrap());
        assert_eq!((n.position, n.node_cursor), (1, 0));
        // The last master is done: the check, from master 0.
        let last = ScanCursor { position: 2, ..c };
        let check = ScanCursor::decode(last.next(0, 3).unwrap());
        assert_eq!(check.step(3), ScanStep::Check { from: 0 });
        // A revisit of master 1 (position 3 + 1 + 1) that ends: the check, from master 2.
        let revisit = ScanCursor { position: 5, ..c };
        assert_eq!(revisit.step(3), ScanStep::Visit(1));
        let again = ScanCursor::decode(revisit.next(0, 3).unwrap());
        assert_eq!(again.step(3), ScanStep::Check { from: 2 });
        assert!(c.next(MAX_NODE_CURSOR + 1, 3).is_none());
    }

    #[test]
    fn check_ends_revisits_or_restarts() {
        let order: Vec<Arc<str>> = ["127.0.0.1:7001", "127.0.0.1:7000", "127.0.0.1:7002"]
            .into_iter()
            .map(Arc::from)
            .collect();
        // Each master's own view: mark its line `myself` (and only its line).
        let view = |me: &str, extra: &str| {
            NODES
                .replace("myself,master", "master")
                .lines()
                .map(|l| {
                    if l.starts_with(me) {
                        format!("{}{extra}", l.replacen(" master ", " myself,master ", 1))
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let plan = scan_plan(&map(NODES));
        let at = ScanCursor {
            position: 3,
            fingerprint: plan.fingerprint,
            node_cursor: 0,
        };
        let calm = vec![view("b", ""), view("a", ""), view("c", "")];
        let report = check_report(&order, &calm);
        assert_eq!(report.fingerprint, Some(plan.fingerprint));
        assert_eq!(at.after_check(3, &report), 0);
        // Master a (index 1) migrates slot 6000 to c (index 2): revisit c, then end.
        let moving = vec![
            view("b", ""),
            view("a", " [6000->-c000000000000000000000000000000000000000]"),
            view("c", " [6000-<-a000000000000000000000000000000000000000]"),
        ];
        let report = check_report(&order, &moving);
        assert_eq!(report.importing, vec![2]);
        let next = ScanCursor::decode(at.after_check(3, &report));
        assert_eq!(next.step(3), ScanStep::Visit(2));
        assert_eq!(next.node_cursor, 0);
        let after = ScanCursor::decode(next.next(0, 3).unwrap());
        assert_eq!(after.step(3), ScanStep::Check { from: 3 });
        assert_eq!(after.after_check(3, &report), 0);
        // The masters claim another assignment: restart.
        let moved = vec![
            view("b", ""),
            view("a", "").replace("5461-10922", "5462-10922"),
            view("c", "").replace("10923-16383", "5461 10923-16383"),
        ];
        let report = check_report(&order, &moved);
        assert_ne!(report.fingerprint, Some(plan.fingerprint));
        let restart = at.after_check(3, &report);
        assert_ne!(restart, 0);
        assert_eq!(
            ScanCursor::decode(restart).resume(&plan),
            ScanCursor::START.resume(&plan)
        );
        // Two masters claim one slot, or a reply is unreadable: restart too.
        let twice = vec![
            view("b", ""),
            view("a", "").replace("5461-10922", "0 5461-10922"),
            view("c", ""),
        ];
        assert_eq!(check_report(&order, &twice).fingerprint, None);
        let short = vec![view("b", ""), String::new(), view("c", "")];
        assert_eq!(check_report(&order, &short).fingerprint, None);
    }

    #[test]
    fn plan_orders_masters_by_slot_and_resume_restarts_on_change() {
        let m = map(NODES);
        let plan = scan_plan(&m);
        let order: Vec<&str> = plan.order.iter().map(|a| &**a).collect();
        assert_eq!(
            order,
            ["127.0.0.1:7001", "127.0.0.1:7000", "127.0.0.1:7002"]
        );
        assert_ne!(plan.fingerprint, 0);
        // Same assignment, another version: same plan.
        let again = SlotMap::from_nodes(&parse_cluster_nodes(NODES, "").unwrap(), 9, "u");
        assert_eq!(scan_plan(&again), plan);
        // A fresh cursor starts at position 0 under the current fingerprint.
        let start = ScanCursor::START.resume(&plan);
        assert_eq!(
            (start.position, start.fingerprint, start.node_cursor),
            (0, plan.fingerprint, 0)
        );
        let mid = ScanCursor {
            position: 1,
            fingerprint: plan.fingerprint,
            node_cursor: 5,
        };
        assert_eq!(mid.resume(&plan), mid);
        // One slot changes owner: the fingerprint changes and the scan restarts.
        let moved = m.with_moved(0, "127.0.0.1:7002", 2);
        let plan2 = scan_plan(&moved);
        assert_ne!(plan2.fingerprint, plan.fingerprint);
        assert_eq!(mid.resume(&plan2), ScanCursor::START.resume(&plan2));
        // Past the end of the positions: restart.
        let past = ScanCursor { position: 7, ..mid };
        assert_eq!(past.resume(&plan), start);
        assert_eq!(all_nodes(&m).len(), 4);
        assert_eq!(masters(&m).len(), 3);
    }
}
