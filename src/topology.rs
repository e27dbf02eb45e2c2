//! The topology refresher: one task that keeps the shared slot map current.
//!
//! It reads `CLUSTER NODES` from any healthy known node — on a jittered timer, and at once
//! (coalesced, at most one refresh per `refresh_min_gap`) when a worker sees MOVED, loses a
//! backend or gets CLUSTERDOWN. A map that looks worse than the current one (fewer slots, or
//! older epochs) is installed only when a second node confirms it ([`crate::cluster::judge`]).
//! Refreshing never blocks requests: workers keep using the old snapshot until the swap.

use crate::cluster::{self, judge, SlotMap, Verdict};
use crate::node_client::NodeClient;
use crate::shared::Shared;
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Runs forever; spawn it on the control runtime.
pub async fn run(shared: Arc<Shared>) {
    let mut last = Instant::now() - shared.config.refresh_min_gap;
    let mut first = true;
    loop {
        if !first {
            let base = shared.config.refresh_interval;
            let jitter = rand::thread_rng().gen_range(0.8..1.2);
            let wait = base.mul_f64(jitter);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shared.refresh.notified() => {}
            }
            let gap = shared.config.refresh_min_gap;
            if last.elapsed() < gap {
                tokio::time::sleep(gap - last.elapsed()).await;
            }
        }
        first = false;
        last = Instant::now();
        refresh_once(&shared).await;
        shared.refreshes_done.fetch_add(1, Relaxed);
    }
}

/// Nodes to ask, best first: current masters, then their replicas, then the seeds.
fn candidates(shared: &Shared) -> Vec<String> {
    let map = shared.map.load();
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
    for s in &shared.config.seeds {
        push(s);
    }
    out
}

async fn fetch(
    addr: &str,
    timeout: Duration,
) -> anyhow::Result<(Vec<cluster::NodeLine>, Option<String>)> {
    let mut c = NodeClient::connect(addr, timeout).await?;
    let text = c.call_text(&["CLUSTER", "NODES"]).await?;
    let ip = addr.rsplit_once(':').map_or(addr, |x| x.0);
    let lines = cluster::parse_cluster_nodes(&text, ip).map_err(anyhow::Error::msg)?;
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

/// One refresh: ask candidates in turn until one gives a map that may be installed.
pub async fn refresh_once(shared: &Shared) {
    let timeout = shared
        .config
        .connect_timeout
        .max(Duration::from_millis(200));
    let mut pending: Option<(SlotMap, String)> = None;
    let mut errors = Vec::new();
    for addr in candidates(shared) {
        let (lines, version) = match fetch(&addr, timeout).await {
            Ok(x) => x,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        if let Some(v) = version {
            if let Ok(mut cur) = shared.backend_version.write() {
                *cur = v;
            }
        }
        let candidate = SlotMap::from_nodes(&lines, 0, &addr);
        if let Some((first, reason)) = &pending {
            if first.same_assignment(&candidate) {
                tracing::info!(%reason, confirmed_by = %addr, "installing confirmed slot map");
                install(shared, candidate);
                return;
            }
            continue;
        }
        let current = shared.map.load_full();
        match judge(&current, &candidate) {
            Verdict::Unchanged => return,
            Verdict::Accept => {
                install(shared, candidate);
                return;
            }
            Verdict::NeedsConfirmation(reason) => {
                tracing::debug!(node = %addr, %reason, "slot map needs a second opinion");
                pending = Some((candidate, reason));
            }
        }
    }
    if let Some((_, reason)) = pending {
        tracing::warn!(%reason, "kept the current slot map: no second node confirmed the new one");
    } else if !errors.is_empty() {
        tracing::warn!(errors = %errors.join("; "), "topology refresh failed: no node answered");
    }
}

fn install(shared: &Shared, mut map: SlotMap) {
    map.version = shared.next_map_version();
    let old = shared.map.load();
    if !old.same_assignment(&map) {
        tracing::info!(
            version = map.version,
            source = %map.source,
            masters = map.nodes.len(),
            slots = map.coverage(),
            "slot map changed"
        );
    }
    shared.map.store(Arc::new(map));
}
