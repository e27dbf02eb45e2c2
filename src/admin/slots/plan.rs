//! The slot planner: which slots move from which master to which, so that every master owns
//! slots in proportion to its weight, with the fewest moves and in contiguous ranges where
//! possible. Pure: no sockets, deterministic for a given input (masters are taken in node-ID
//! order whatever order they come in).
//!
//! How it decides:
//! 1. **Targets.** Each master's share of the owned slots is `slots * weight / total weight`,
//!    rounded by largest remainder, so targets add up exactly and masters of equal weight differ
//!    by at most one slot. Ties in the rounding go to the master that owns more slots now (fewer
//!    moves), then to the lower node ID.
//! 2. **Threshold.** If every master is within `threshold` percent of its exact share (and no
//!    weight-0 master owns a slot), nothing moves.
//! 3. **Fewest moves.** A master above its target (a donor) gives exactly its surplus and keeps
//!    the rest of its own slots; a master below (a receiver) keeps all its slots and gets
//!    exactly its deficit. No slot moves twice and no receiver gives, so the number of moves is
//!    the sum of the surpluses: the least any plan can do.
//! 4. **Contiguity.** An *ideal layout* lays the masters along the slot line, each on one
//!    interval as long as its target: masters that own slots in the order of their median
//!    slot, masters that own none placed at the boundaries where the neighbouring donors give
//!    up the most (so a new master lands between two donors and takes the tail of one and the
//!    head of the other). Donors keep the own slots nearest their ideal interval (so they give
//!    from the edges of their ranges). Receivers first take the ends of released runs that
//!    touch their own slots (growing their ranges), then the released slots inside their ideal
//!    interval, then the rest next to slots they already have.
//!
//! With an *only donors* set (a drain), only those masters give; the others receive the
//! released slots where they are furthest below their targets.

use std::collections::BTreeSet;

/// One master as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterIn {
    /// Node ID (the planner's order and tie-breaker).
    pub id: String,
    /// `ip:port`, for the report.
    pub addr: String,
    /// Relative share; 0 drains the master.
    pub weight: u32,
    /// The slots it owns now (any order; duplicates are ignored).
    pub slots: Vec<u16>,
}

/// What the operator asked for besides the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Skip when every master is within this many percent of its share (redis-cli's default
    /// is 2).
    pub threshold_pct: f64,
    /// Plan at most this many slot moves (the first ones in slot order).
    pub max_slots: Option<usize>,
    /// Only these masters (node IDs) give slots; `None`: every master above its target.
    pub only_donors: Option<BTreeSet<String>>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            threshold_pct: DEFAULT_THRESHOLD_PCT,
            max_slots: None,
            only_donors: None,
        }
    }
}

/// The default `THRESHOLD`, as redis-cli's `--cluster-threshold`.
pub const DEFAULT_THRESHOLD_PCT: f64 = 2.0;

/// One slot to move, masters named by their index in [`Plan::masters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotMove {
    /// The slot.
    pub slot: u16,
    /// Index of the giving master.
    pub from: usize,
    /// Index of the receiving master.
    pub to: usize,
}

/// A master in the plan: before, target, after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterPlan {
    /// Node ID.
    pub id: String,
    /// `ip:port`.
    pub addr: String,
    /// Its weight.
    pub weight: u32,
    /// Slots owned now.
    pub before: usize,
    /// Slots it should own.
    pub target: usize,
    /// Slots it owns once the planned moves (possibly capped) are done.
    pub after: usize,
}

/// A planned run of consecutive slots between one pair of masters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First slot.
    pub first: u16,
    /// Last slot (inclusive).
    pub last: u16,
    /// Index of the giving master.
    pub from: usize,
    /// Index of the receiving master.
    pub to: usize,
}

impl Range {
    /// Slots in the range.
    pub fn len(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    /// Never empty; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Every master, in node-ID order.
    pub masters: Vec<MasterPlan>,
    /// The moves, in slot order.
    pub moves: Vec<SlotMove>,
    /// Why nothing moves although masters are off target (the threshold), if so.
    pub skipped: Option<String>,
    /// Moves left out by `MAXSLOTS`.
    pub capped: usize,
}

impl Plan {
    /// The moves grouped into runs of consecutive slots between the same pair, in slot order.
    pub fn ranges(&self) -> Vec<Range> {
        let mut out: Vec<Range> = Vec::new();
        for m in &self.moves {
            match out.last_mut() {
                Some(r) if r.from == m.from && r.to == m.to && r.last + 1 == m.slot => {
                    r.last = m.slot
                }
                _ => out.push(Range {
                    first: m.slot,
                    last: m.slot,
                    from: m.from,
                    to: m.to,
                }),
            }
        }
        out
    }

    /// The largest distance of a master from its target, before the moves.
    pub fn off_target_before(&self) -> usize {
        self.masters
            .iter()
            .map(|m| m.before.abs_diff(m.target))
            .max()
            .unwrap_or(0)
    }

    /// The largest distance of a master from its target once the moves are done.
    pub fn off_target_after(&self) -> usize {
        self.masters
            .iter()
            .map(|m| m.after.abs_diff(m.target))
            .max()
            .unwrap_or(0)
    }
}

/// Why no plan can be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// Every weight is 0: the slots would have nowhere to go.
    NoWeight,
    /// Two masters claim one slot.
    Shared(u16),
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::NoWeight => {
                f.write_str("every master has weight 0: the slots would have nowhere to go")
            }
            PlanError::Shared(s) => write!(f, "slot {s} is claimed by two masters"),
        }
    }
}

impl std::error::Error for PlanError {}

/// Targets by largest remainder (see the module documentation); `cur` breaks ties.
fn targets(total: usize, weights: &[u32], cur: &[usize], ids: &[String]) -> Vec<usize> {
    let w_sum: u64 = weights.iter().map(|&w| w as u64).sum();
    let n = weights.len();
    let mut t: Vec<usize> = Vec::with_capacity(n);
    let mut rem: Vec<u64> = Vec::with_capacity(n);
    for &w in weights {
        let share = total as u64 * w as u64;
        t.push((share / w_sum) as usize);
        rem.push(share % w_sum);
    }
    let extra = total - t.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        rem[b]
            .cmp(&rem[a])
            .then(cur[b].cmp(&cur[a]))
            .then(ids[a].cmp(&ids[b]))
    });
    for &i in order.iter().take(extra) {
        t[i] += 1;
    }
    t
}

/// Whether every master is within `pct` percent of its exact share.
fn within_threshold(total: usize, weights: &[u32], cur: &[usize], pct: f64) -> bool {
    let w_sum: f64 = weights.iter().map(|&w| w as f64).sum();
    weights.iter().zip(cur).all(|(&w, &c)| {
        if w == 0 {
            return c == 0;
        }
        let expected = total as f64 * w as f64 / w_sum;
        ((c as f64 - expected).abs() / expected * 100.0) <= pct
    })
}

/// Receivers' shares of `released` slots when only some masters give: one slot at a time to
/// the receiver furthest below its target (ties: lower index).
fn water_fill(released: usize, deficits: &[i64]) -> Vec<usize> {
    let mut need = vec![0usize; deficits.len()];
    let mut left: Vec<i64> = deficits.to_vec();
    for _ in 0..released {
        let Some(i) = (0..left.len()).max_by(|&a, &b| left[a].cmp(&left[b]).then(b.cmp(&a))) else {
            break;
        };
        need[i] += 1;
        left[i] -= 1;
    }
    need
}

/// The order of the masters along the ideal layout (see the module documentation).
fn layout_order(owned: &[Vec<usize>], tgt: &[usize], cur: &[usize]) -> Vec<usize> {
    let n = owned.len();
    let mut seq: Vec<usize> = (0..n).filter(|&i| cur[i] > 0).collect();
    // Median position; ties by index (= node-ID order).
    seq.sort_by_key(|&i| (owned[i][owned[i].len() / 2], i));
    let surplus = |i: usize| cur[i].saturating_sub(tgt[i]) as i64;
    // Twice the slots available at each boundary: half of each neighbour's surplus.
    let mut avail: Vec<i64> = (0..=seq.len())
        .map(|k| {
            let left = if k > 0 { surplus(seq[k - 1]) } else { 0 };
            let right = if k < seq.len() { surplus(seq[k]) } else { 0 };
            left + right
        })
        .collect();
    let mut empties: Vec<usize> = (0..n).filter(|&i| cur[i] == 0 && tgt[i] > 0).collect();
    empties.sort_by_key(|&i| (std::cmp::Reverse(tgt[i]), i));
    let mut at: Vec<Vec<usize>> = vec![Vec::new(); seq.len() + 1];
    for e in empties {
        let k = (0..avail.len())
            .max_by(|&a, &b| avail[a].cmp(&avail[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        avail[k] -= 2 * tgt[e] as i64;
        at[k].push(e);
    }
    let mut out = Vec::with_capacity(n);
    for (k, group) in at.into_iter().enumerate() {
        out.extend(group);
        if let Some(&m) = seq.get(k) {
            out.push(m);
        }
    }
    out
}

/// Plans the moves. `masters` may come in any order; the plan lists them by node ID.
pub fn plan(masters: &[MasterIn], opts: &PlanOptions) -> Result<Plan, PlanError> {
    let mut ms: Vec<&MasterIn> = masters.iter().collect();
    ms.sort_by(|a, b| a.id.cmp(&b.id));
    let n = ms.len();
    let ids: Vec<String> = ms.iter().map(|m| m.id.clone()).collect();
    let weights: Vec<u32> = ms.iter().map(|m| m.weight).collect();

    // The slot line: every owned slot, in order; positions index it.
    let mut owner_of = std::collections::BTreeMap::<u16, usize>::new();
    for (i, m) in ms.iter().enumerate() {
        for &s in &m.slots {
            if let Some(&j) = owner_of.get(&s) {
                if j != i {
                    return Err(PlanError::Shared(s));
                }
            }
            owner_of.insert(s, i);
        }
    }
    let line: Vec<u16> = owner_of.keys().copied().collect();
    let total = line.len();
    let mut owned: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (p, s) in line.iter().enumerate() {
        owned[owner_of[s]].push(p);
    }
    let cur: Vec<usize> = owned.iter().map(Vec::len).collect();
    if weights.iter().all(|&w| w == 0) {
        if total == 0 {
            return Ok(empty_plan(&ms, &cur, &cur, None));
        }
        return Err(PlanError::NoWeight);
    }
    let mut tgt = targets(total, &weights, &cur, &ids);

    let donors_only: Option<Vec<bool>> = opts
        .only_donors
        .as_ref()
        .map(|set| ids.iter().map(|id| set.contains(id)).collect());
    if let Some(only) = &donors_only {
        // Listed masters give down to their target; the others keep what they have and share
        // what is released where they are furthest below their targets.
        let released: usize = (0..n)
            .filter(|&i| only[i])
            .map(|i| cur[i].saturating_sub(tgt[i]))
            .sum();
        let deficits: Vec<i64> = (0..n)
            .map(|i| {
                if only[i] {
                    i64::MIN / 2
                } else {
                    tgt[i] as i64 - cur[i] as i64
                }
            })
            .collect();
        let share = water_fill(released, &deficits);
        for i in 0..n {
            tgt[i] = if only[i] {
                tgt[i].min(cur[i])
            } else {
                cur[i] + share[i]
            };
        }
        if released == 0 {
            return Ok(empty_plan(&ms, &cur, &tgt, None));
        }
    } else if within_threshold(total, &weights, &cur, opts.threshold_pct) {
        let why = (cur != tgt).then(|| {
            format!(
                "every master is within {}% of its share (THRESHOLD)",
                opts.threshold_pct
            )
        });
        return Ok(empty_plan(&ms, &cur, &tgt, why));
    }

    // Ideal layout: owner of each position.
    let order = layout_order(&owned, &tgt, &cur);
    let mut ideal = vec![usize::MAX; total];
    let mut interval = vec![(0usize, 0usize); n];
    let mut p = 0;
    for &i in &order {
        interval[i] = (p, p + tgt[i]);
        for slot in ideal.iter_mut().skip(p).take(tgt[i]) {
            *slot = i;
        }
        p += tgt[i];
    }
    // Masters with no slots and no target are not in `order`: their interval stays empty.
    let dist = |i: usize, p: usize| -> usize {
        let (a, b) = interval[i];
        if p < a {
            a - p
        } else if p >= b {
            p + 1 - b
        } else {
            0
        }
    };

    // Donors keep the own positions nearest their ideal interval.
    let mut fin: Vec<usize> = vec![usize::MAX; total];
    let mut released: Vec<usize> = Vec::new();
    for i in 0..n {
        if cur[i] > tgt[i] {
            let mut mine = owned[i].clone();
            mine.sort_by_key(|&p| (dist(i, p), p));
            for (k, &p) in mine.iter().enumerate() {
                if k < tgt[i] {
                    fin[p] = i;
                } else {
                    released.push(p);
                }
            }
        } else {
            for &p in &owned[i] {
                fin[p] = i;
            }
        }
    }
    released.sort_unstable();

    // Receivers: first the ends of each run of released positions that touch a receiver's
    // own slots (the receiver grows its range), then released positions inside their ideal
    // interval, then the rest next to what they have.
    let mut need: Vec<usize> = (0..n).map(|i| tgt[i].saturating_sub(cur[i])).collect();
    let mut k = 0;
    while k < released.len() {
        let mut e = k;
        while e + 1 < released.len() && released[e + 1] == released[e] + 1 {
            e += 1;
        }
        let (lo, hi) = (released[k], released[e]);
        if let Some(y) = lo.checked_sub(1).map(|q| fin[q]) {
            let mut p = lo;
            while y != usize::MAX && need[y] > 0 && p <= hi {
                fin[p] = y;
                need[y] -= 1;
                p += 1;
            }
        }
        if let Some(&y) = fin.get(hi + 1) {
            let mut p = hi;
            while y != usize::MAX && need[y] > 0 && p >= lo && fin[p] == usize::MAX {
                fin[p] = y;
                need[y] -= 1;
                if p == 0 {
                    break;
                }
                p -= 1;
            }
        }
        k = e + 1;
    }
    let mut left: Vec<usize> = Vec::new();
    let open: Vec<usize> = released
        .iter()
        .copied()
        .filter(|&p| fin[p] == usize::MAX)
        .collect();
    for p in open {
        let y = ideal.get(p).copied().unwrap_or(usize::MAX);
        if y != usize::MAX && need[y] > 0 {
            fin[p] = y;
            need[y] -= 1;
        } else {
            left.push(p);
        }
    }
    // Then next to what they own (final), else nearest their ideal interval.
    for &p in &left {
        let neighbour = |q: Option<usize>| {
            q.and_then(|q| fin.get(q).copied())
                .filter(|&y| y != usize::MAX && need[y] > 0)
        };
        let y = neighbour(p.checked_sub(1))
            .or_else(|| neighbour(Some(p + 1)))
            .or_else(|| {
                (0..n)
                    .filter(|&y| need[y] > 0)
                    .min_by_key(|&y| (dist(y, p), y))
            });
        if let Some(y) = y {
            fin[p] = y;
            need[y] -= 1;
        }
    }

    let mut moves: Vec<SlotMove> = Vec::new();
    for (p, &s) in line.iter().enumerate() {
        let from = owner_of[&s];
        let to = fin[p];
        if to != usize::MAX && to != from {
            moves.push(SlotMove { slot: s, from, to });
        }
    }
    let mut capped = 0;
    if let Some(k) = opts.max_slots {
        if moves.len() > k {
            capped = moves.len() - k;
            moves.truncate(k);
        }
    }
    let mut after = cur.clone();
    for m in &moves {
        after[m.from] -= 1;
        after[m.to] += 1;
    }
    let mut out = empty_plan(&ms, &cur, &tgt, None);
    for (m, a) in out.masters.iter_mut().zip(after) {
        m.after = a;
    }
    out.moves = moves;
    out.capped = capped;
    Ok(out)
}

fn empty_plan(ms: &[&MasterIn], cur: &[usize], tgt: &[usize], skipped: Option<String>) -> Plan {
    Plan {
        masters: ms
            .iter()
            .enumerate()
            .map(|(i, m)| MasterPlan {
                id: m.id.clone(),
                addr: m.addr.clone(),
                weight: m.weight,
                before: cur[i],
                target: tgt[i],
                after: cur[i],
            })
            .collect(),
        moves: Vec::new(),
        skipped,
        capped: 0,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
