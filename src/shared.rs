//! State shared by every thread of the proxy: settings, the slot map, refresh triggers, counters.
//!
//! Workers touch it on the hot path only through lock-free reads (`ArcSwap::load`) and relaxed
//! atomics on their own padded counters, so adding workers adds no contention.

use crate::cluster::SlotMap;
use crate::config::Config;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::Notify;

/// Counters one worker updates; padded so two workers never share a cache line.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Clients currently served by this worker.
    pub clients: AtomicUsize,
    /// Commands received from clients.
    pub commands: AtomicU64,
    /// Client connections accepted by this worker since start.
    pub accepted: AtomicU64,
}

/// Process-wide state.
pub struct Shared {
    /// Settings in force.
    pub config: Config,
    /// The current slot map; replaced whole, never mutated.
    pub map: ArcSwap<SlotMap>,
    next_version: AtomicU64,
    /// Wakes the topology refresher early (MOVED, lost backend, CLUSTERDOWN, PROXY REFRESH).
    pub refresh: Notify,
    /// Refreshes that finished (successful or not); lets callers wait for a fresh map.
    pub refreshes_done: AtomicU64,
    /// The backends' `redis_version`, as learned by the refresher.
    pub backend_version: RwLock<String>,
    /// When the proxy started.
    pub started: Instant,
    /// Source of client IDs (`CLIENT ID`), unique for the process's life.
    pub next_client_id: AtomicU64,
    /// Connections refused because `max_clients` was reached.
    pub rejected_clients: AtomicU64,
    /// One entry per worker.
    pub workers: Vec<WorkerStats>,
    /// The port clients connect to (INFO's `tcp_port`).
    pub port: u16,
    /// Admin engine runs.
    pub jobs: crate::admin::jobs::Jobs,
}

impl Shared {
    /// Shared state for `workers` workers, with an empty slot map.
    pub fn new(config: Config, workers: usize, port: u16) -> Shared {
        Shared {
            config,
            map: ArcSwap::from_pointee(SlotMap::empty()),
            next_version: AtomicU64::new(1),
            refresh: Notify::new(),
            refreshes_done: AtomicU64::new(0),
            backend_version: RwLock::new(String::from("7.0.0")),
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            rejected_clients: AtomicU64::new(0),
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            port,
            jobs: Default::default(),
        }
    }

    /// A fresh, strictly increasing map version.
    pub fn next_map_version(&self) -> u64 {
        self.next_version.fetch_add(1, Relaxed)
    }

    /// Asks the refresher for a refresh soon (coalesced and rate-limited by the refresher).
    pub fn trigger_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Applies a MOVED redirect to the shared map at once and schedules a full refresh.
    pub fn patch_moved(&self, slot: u16, addr: &str) {
        self.map.rcu(|cur| {
            if cur.owner(slot).is_some_and(|n| &*n.addr == addr) {
                Arc::clone(cur)
            } else {
                Arc::new(cur.with_moved(slot, addr, self.next_map_version()))
            }
        });
        self.trigger_refresh();
    }

    /// Total clients connected, over all workers.
    pub fn client_count(&self) -> usize {
        self.workers.iter().map(|w| w.clients.load(Relaxed)).sum()
    }

    /// The backends' Redis version, for INFO and HELLO.
    pub fn redis_version(&self) -> String {
        self.backend_version
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|_| "7.0.0".into())
    }
}
