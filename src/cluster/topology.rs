//! The topology refresher: one task that keeps the shared slot map current.
//!
//! It reads `CLUSTER NODES` from any healthy known node — on a jittered timer, and at once
//! (coalesced, at most one refresh per `refresh_min_gap`) when a worker sees MOVED, loses a
//! backend or gets CLUSTERDOWN. A map that looks worse than the current one (fewer slots, or
//! older epochs) is installed only when a second node confirms it ([`crate::cluster::judge`]).
//! Refreshing never blocks requests: workers keep using the old snapshot until the swap.

use crate::backend::node_client::NodeClient;
use crate::cluster::{self, judge, SlotMap, Verdict};
use crate::net::dialer::Dialer;
use crate::shared::{Shared, Trigger};
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Runs forever; spawn it on the control runtime.
pub async fn run(shared: Arc<Shared>) {
    let mut last = Instant::now() - shared.settings.live.get().refresh_min_gap;
    let mut first = true;
    loop {
        let mut trigger = "start";
        if !first {
            // Settings are re-read every round: PROXY CONFIG SET may have changed them.
            let base = shared.settings.live.get().refresh_interval;
            let jitter = rand::thread_rng().gen_range(0.8..1.2);
            let wait = base.mul_f64(jitter);
            trigger = tokio::select! {
                _ = tokio::time::sleep(wait) => "timer",
                _ = shared.topology.refresh.notified() => "triggered",
            };
            let gap = shared.settings.live.get().refresh_min_gap;
            // One reading of the clock: a second one could pass `gap` and make the
            // subtraction underflow.
            let waited = last.elapsed();
            if waited < gap {
                tokio::time::sleep(gap - waited).await;
            }
        }
        // Every trigger that arrived is served by this refresh; the metric names the strongest.
        let bits = shared.topology.refresh_triggers.swap(0, Relaxed);
        if trigger != "start" {
            trigger = Trigger::ALL
                .iter()
                .find(|(t, _)| bits & (*t as u8) != 0)
                .map_or("timer", |(_, name)| name);
        }
        first = false;
        last = Instant::now();
        let outcome = refresh_once(&shared).await;
        shared
            .metrics
            .refresh_stats
            .record(trigger, outcome.label(), last.elapsed());
        shared
            .topology
            .refreshes_done
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        shared.topology.refreshed.notify_waiters();
    }
}

/// How a refresh ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A different map was installed.
    Changed,
    /// The cluster's map is the one in use (possibly re-stamped).
    Unchanged,
    /// A worse-looking map was not confirmed by a second node; the current one stays.
    Kept,
    /// No node answered.
    Failed,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Changed => "changed",
            Outcome::Unchanged => "unchanged",
            Outcome::Kept => "kept",
            Outcome::Failed => "failed",
        }
    }
}

/// Nodes to ask, best first: current masters, then their replicas, then the seeds.
fn candidates(shared: &Shared) -> Vec<String> {
    let map = shared.topology.map.load();
    let mut out: Vec<String> = Vec::new();
    let mut push = |a: &str| {
        if !out.iter().any(|x| x == a) {
            out.push(a.to_string());
        }
    };
    let mut masters: Vec<_> = map.nodes.iter().filter(|n| !n.failing).collect();
    // Spread the load of refreshing over the masters.
    let start = if masters.is_empty() {
        0
    } else {
        rand::thread_rng().gen_range(0..masters.len())
    };
    masters.rotate_left(start);
    for n in &masters {
        push(&n.addr);
    }
    for n in map.nodes.iter() {
        for r in &n.replicas {
            push(r);
        }
    }
    for s in &shared.settings.config.seeds {
        push(s);
    }
    out
}

async fn fetch(
    dialer: &Dialer,
    addr: &str,
    timeout: Duration,
) -> anyhow::Result<(Vec<cluster::NodeLine>, Option<String>)> {
    let mut c = NodeClient::connect(dialer, addr, timeout).await?;
    let text = c.call_text(&["CLUSTER", "NODES"]).await?;
    let ip = addr.rsplit_once(':').map_or(addr, |x| x.0);
    let lines = cluster::parse_cluster_nodes(&text, ip)?;
    let version = match c.call(&["INFO", "server"]).await {
        Ok(v) => v.text().ok().and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("redis_version:")
                    .map(|v| v.trim().to_string())
            })
        }),
        Err(_) => None,
    };
    Ok((lines, version))
}

/// Refreshes until `ready` holds for the map in use, or `bound` passes; returns whether it
/// holds. For the admin engines that move slots: they return once the proxy routes by the
/// move, so a client's next request does not follow the old map to a node that no longer
/// serves the slot (a drained and reset master answers CLUSTERDOWN, not MOVED). A refresh asked
/// for while one runs is coalesced, so this waits for one that started after the ask.
pub async fn await_map(shared: &Shared, bound: Duration, ready: impl Fn(&SlotMap) -> bool) -> bool {
    use std::sync::atomic::Ordering::Acquire;
    let deadline = Instant::now() + bound;
    loop {
        if ready(&shared.topology.map.load()) {
            return true;
        }
        let start = shared.topology.refreshes_done.load(Acquire);
        shared.topology.trigger_refresh();
        loop {
            let refreshed = shared.topology.refreshed.notified();
            tokio::pin!(refreshed);
            refreshed.as_mut().enable();
            if shared.topology.refreshes_done.load(Acquire) >= start + 2 {
                break;
            }
            if tokio::time::timeout_at(deadline, refreshed).await.is_err() {
                return ready(&shared.topology.map.load());
            }
        }
    }
}

/// One refresh: ask candidates in turn until one gives a map that may be installed.
pub async fn refresh_once(shared: &Shared) -> Outcome {
    let timeout = shared
        .settings
        .live
        .connect_timeout()
        .max(Duration::from_millis(200));
    let mut pending: Option<(SlotMap, String)> = None;
    let mut errors = Vec::new();
    for addr in candidates(shared) {
        let (lines, version) = match fetch(&shared.settings.dialer, &addr, timeout).await {
            Ok(x) => x,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        if let Some(v) = version {
            if let Ok(mut cur) = shared.topology.backend_version.write() {
                *cur = v;
            }
        }
        let candidate = SlotMap::from_nodes(&lines, 0, &addr);
        if let Some((first, reason)) = &pending {
            if first.same_assignment(&candidate) {
                tracing::info!(%reason, confirmed_by = %addr, "installing confirmed slot map");
                return install(shared, candidate);
            }
            continue;
        }
        let current = shared.topology.map.load_full();
        match judge(&current, &candidate) {
            Verdict::Unchanged => {
                // Confirmed current: the map's age counts from this reading.
                stamp(shared);
                return Outcome::Unchanged;
            }
            Verdict::Accept => return install(shared, candidate),
            Verdict::NeedsConfirmation(reason) => {
                tracing::debug!(node = %addr, %reason, "slot map needs a second opinion");
                pending = Some((candidate, reason));
            }
        }
    }
    if let Some((_, reason)) = pending {
        tracing::warn!(%reason, "kept the current slot map: no second node confirmed the new one");
        Outcome::Kept
    } else {
        tracing::warn!(errors = %errors.join("; "), "topology refresh failed: no node answered");
        Outcome::Failed
    }
}

/// What changed between two maps, in words: masters added and removed, slots that changed
/// owner, replicas added and removed, nodes now failing or recovered.
pub fn describe_change(old: &SlotMap, new: &SlotMap) -> String {
    let addrs =
        |m: &SlotMap| -> Vec<String> { m.nodes.iter().map(|n| n.addr.to_string()).collect() };
    let (a, b) = (addrs(old), addrs(new));
    let mut parts = Vec::new();
    let added: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
    let removed: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
    if !added.is_empty() {
        parts.push(format!("masters added {added:?}"));
    }
    if !removed.is_empty() {
        parts.push(format!("masters removed {removed:?}"));
    }
    let moved = (0..crate::cluster::slots::SLOT_COUNT as u16)
        .filter(|&s| old.owner(s).map(|n| &n.addr) != new.owner(s).map(|n| &n.addr))
        .count();
    if moved > 0 {
        parts.push(format!("{moved} slots changed owner"));
    }
    let reps = |m: &SlotMap| -> Vec<String> {
        m.nodes
            .iter()
            .flat_map(|n| n.replicas.iter().map(|r| r.to_string()))
            .collect()
    };
    let (ra, rb) = (reps(old), reps(new));
    let radd: Vec<&String> = rb.iter().filter(|x| !ra.contains(x)).collect();
    let rrem: Vec<&String> = ra.iter().filter(|x| !rb.contains(x)).collect();
    if !radd.is_empty() {
        parts.push(format!("replicas added {radd:?}"));
    }
    if !rrem.is_empty() {
        parts.push(format!("replicas removed {rrem:?}"));
    }
    for n in &new.nodes {
        let was = old
            .nodes
            .iter()
            .find(|o| o.addr == n.addr)
            .map(|o| o.failing);
        match (was, n.failing) {
            (Some(false), true) => parts.push(format!("master {} failing", n.addr)),
            (Some(true), false) => parts.push(format!("master {} recovered", n.addr)),
            _ => {}
        }
    }
    if parts.is_empty() {
        "no change in owners".into()
    } else {
        parts.join("; ")
    }
}

/// Records that the map in use was read from the cluster just now (its age starts again).
fn stamp(shared: &Shared) {
    shared
        .topology
        .map_installed_ms
        .store(shared.metrics.started.elapsed().as_millis() as u64, Relaxed);
}

/// Installs `map` with a new version, unless it routes exactly like the map in use: then the
/// map and its version stay (a version moves only when the map does).
fn install(shared: &Shared, mut map: SlotMap) -> Outcome {
    let old = shared.topology.map.load();
    if old.same_routing(&map) {
        stamp(shared);
        return Outcome::Unchanged;
    }
    map.version = shared.topology.next_map_version();
    let changed = !old.same_assignment(&map);
    if changed {
        tracing::info!(
            version = map.version,
            source = %map.source,
            masters = map.nodes.len(),
            slots = map.coverage(),
            change = %describe_change(&old, &map),
            "slot map changed"
        );
    }
    stamp(shared);
    // Nodes that left the topology leave the stats and the metrics' labels with it (workers
    // drop their pools when they see the new map).
    shared
        .registries
        .nodes
        .retain(|addr| map.knows(addr) || shared.settings.config.seeds.iter().any(|s| s == addr));
    shared.topology.publish(Arc::new(map));
    if changed {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::stats::{RefreshStats, REFRESH_RESULTS, REFRESH_TRIGGERS};

    #[test]
    fn every_refresh_label_the_refresher_uses_is_counted() {
        let outcomes = [
            Outcome::Changed,
            Outcome::Unchanged,
            Outcome::Kept,
            Outcome::Failed,
        ];
        let triggers: Vec<&str> = ["start", "timer"]
            .into_iter()
            .chain(Trigger::ALL.iter().map(|(_, name)| *name))
            .collect();
        assert_eq!(triggers, REFRESH_TRIGGERS);
        let results: Vec<&str> = outcomes.iter().map(|o| o.label()).collect();
        assert_eq!(results, REFRESH_RESULTS);
        let stats = RefreshStats::default();
        for t in &triggers {
            for o in &outcomes {
                stats.record(t, o.label(), Duration::from_millis(3));
            }
        }
        stats.record("timer", "unchanged", Duration::from_millis(3));
        let counts = stats.counts();
        assert_eq!(counts.len(), triggers.len() * outcomes.len());
        assert!(counts.contains(&("timer", "unchanged", 2)));
        assert!(counts.contains(&("admin", "failed", 1)));
        assert_eq!(stats.duration().count(), 25);
    }
}
