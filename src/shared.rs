//! State shared by every thread of one running proxy: settings, the slot map, refresh triggers,
//! counters, and how it connects (its TLS and node dialer). One per proxy: two proxies in one
//! process share none of it.
//!
//! Workers touch it on the hot path only through lock-free reads (`ArcSwap::load`) and relaxed
//! atomics on their own padded counters, so adding workers adds no contention.

use crate::cluster::SlotMap;
use crate::config::Config;
use arc_swap::ArcSwap;
use std::sync::atomic::{
    AtomicU64, AtomicU8, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::Notify;

/// Counters one worker updates; padded so two workers never share a cache line.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Clients currently served by this worker. Only a [`ClientSeat`] changes it, so it
    /// cannot drift from the clients that exist.
    clients: AtomicUsize,
    /// Commands received from clients.
    pub commands: AtomicU64,
    /// Client connections accepted by this worker since start.
    pub accepted: AtomicU64,
    /// Per-command, traffic and redirect counters (see [`crate::metrics::stats`]).
    pub m: crate::metrics::stats::WorkerMetrics,
}

impl WorkerStats {
    /// Clients currently served by this worker (the `clients` gauge).
    pub fn clients(&self) -> usize {
        self.clients.load(Relaxed)
    }
}

/// One client connection's place in its worker's `clients` gauge, from the moment the
/// acceptor assigns it a worker until the connection is gone. Invariant: the gauge goes up
/// once when the seat is taken and down once when it is dropped, whatever ends the client
/// (the session returning, a failed hand-off or TLS handshake, a panic, the worker's runtime
/// dropping the session at shutdown), so no exit path can leak a count.
pub struct ClientSeat {
    shared: Arc<Shared>,
    worker: usize,
}

impl ClientSeat {
    /// Counts a new client on worker `worker` of `shared`.
    pub fn take(shared: &Arc<Shared>, worker: usize) -> ClientSeat {
        shared.metrics.workers[worker].clients.fetch_add(1, Relaxed);
        ClientSeat {
            shared: Arc::clone(shared),
            worker,
        }
    }
}

impl Drop for ClientSeat {
    fn drop(&mut self) {
        self.shared.metrics.workers[self.worker]
            .clients
            .fetch_sub(1, Relaxed);
    }
}

/// Why a topology refresh was asked for (a label of the refresh metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Trigger {
    /// A MOVED redirect.
    Moved = 1,
    /// A backend connection failed.
    ConnectionLost = 2,
    /// A CLUSTERDOWN reply.
    ClusterDown = 4,
    /// An operator (`PROXY REFRESH`) or an admin engine.
    Admin = 8,
}

impl Trigger {
    /// Every trigger with its label.
    pub const ALL: [(Trigger, &'static str); 4] = [
        (Trigger::Moved, "moved"),
        (Trigger::ConnectionLost, "connection_lost"),
        (Trigger::ClusterDown, "clusterdown"),
        (Trigger::Admin, "admin"),
    ];
}

/// One running proxy's state, shared by its threads (two proxies in a process have one each),
/// in named groups so that a reader sees which concern a field belongs to and a change to one
/// concern touches one group.
pub struct Shared {
    /// What the proxy was configured with, and what follows directly from it.
    pub settings: Settings,
    /// The slot map and everything about keeping it current.
    pub topology: Topology,
    /// Who and what the proxy keeps track of: clients, users, nodes, scripts, admin jobs.
    pub registries: Registries,
    /// Counters, the slow log and the Prometheus exposition.
    pub metrics: Counters,
    /// Requests to return freed memory to the system (see [`crate::memory`]).
    pub trimmer: Arc<crate::memory::Trimmer>,
    /// The graceful stop: started by a signal or `PROXY SHUTDOWN`, waited on by the accept
    /// loop, read by workers and sessions (see [`crate::shutdown`]).
    pub shutdown: crate::shutdown::Shutdown,
}

/// Settings at start-up and at run time, and how the proxy reaches nodes.
pub struct Settings {
    /// Settings as the proxy started. Settings that need a restart (listen, seeds, workers,
    /// connections_per_node, metrics_listen, log_format) are read here; the ones that change
    /// live must be read from [`Settings::live`].
    pub config: Config,
    /// The settings in force, changed by `PROXY CONFIG SET` and SIGHUP.
    pub live: crate::live::Live,
    /// The port clients connect to (INFO's `tcp_port`).
    pub port: u16,
    /// This proxy's TLS (client listener and node side), renewed in place by SIGHUP and
    /// `PROXY CONFIG SET` through [`Settings::live`].
    pub tls: Arc<crate::net::tls::Tls>,
    /// How this proxy connects to nodes (its credentials and node-facing TLS): every node
    /// connection, data path or control plane, is opened with it.
    pub dialer: Arc<crate::net::dialer::Dialer>,
}

/// The slot map and its refresh. Invariant: the map is replaced whole, never mutated, and
/// every replacement carries a version from [`Topology::next_map_version`]; a refresh that reads
/// a map routing like the current one replaces nothing, so the version moves only on change.
pub struct Topology {
    /// The current slot map. Replace it with [`Topology::publish`] (or `patch_moved`), which
    /// also counts the replacement, so workers know when to re-read it.
    pub map: ArcSwap<SlotMap>,
    /// Replacements of `map` so far, counted after each is stored: a worker that has seen this
    /// count holds a map at least that new (see [`Topology::published`]).
    published: AtomicU64,
    next_version: AtomicU64,
    /// Wakes the topology refresher early (MOVED, lost backend, CLUSTERDOWN, PROXY REFRESH).
    pub refresh: Notify,
    /// Triggers (a [`Trigger`] bit set) since the refresher last looked.
    pub refresh_triggers: AtomicU8,
    /// Refreshes that finished (successful or not); lets callers wait for a fresh map.
    pub refreshes_done: AtomicU64,
    /// Woken (all waiters) each time `refreshes_done` grows: calls waiting for a refresh to
    /// confirm a redirect's address wait on it.
    pub refreshed: Notify,
    /// The backends' `redis_version`, as learned by the refresher.
    pub backend_version: RwLock<String>,
    /// Milliseconds since [`Counters::started`] when the current slot map was installed or
    /// last confirmed unchanged by a refresh.
    pub map_installed_ms: AtomicU64,
    /// Which replicas may serve reads ([`crate::cluster::replica_health`]).
    pub replicas: ArcSwap<crate::cluster::replica_health::ReplicaHealth>,
    /// A client sent READONLY: replica health is polled even with `read_from = master`.
    pub replica_reads_wanted: std::sync::atomic::AtomicBool,
}

/// What the proxy keeps track of, each behind its own lock or lock-free structure.
#[derive(Default)]
pub struct Registries {
    /// Source of client IDs (`CLIENT ID`), unique for the proxy's life.
    pub next_client_id: AtomicU64,
    /// Every client connection, for CLIENT LIST / INFO / KILL.
    pub clients: crate::session::clients::Registry,
    /// Configured users; none means the proxy is open.
    pub users: crate::access::Users,
    /// Failed-AUTH counts per client address.
    pub auth_guard: crate::access::AuthGuard,
    /// Every backend node the workers have talked to, with their counters.
    pub nodes: crate::metrics::stats::NodeRegistry,
    /// Script bodies seen in SCRIPT LOAD, by lowercase SHA1, so a NOSCRIPT from a node that
    /// never saw one (a promoted replica, a new master) can be repaired by loading it there.
    pub scripts: crate::route::scripts::Scripts,
    /// Admin engine runs.
    pub jobs: crate::admin::jobs::Jobs,
    /// CLIENT PAUSE in force over all the proxy's clients.
    pub pause: crate::session::pause::ClientPause,
    /// The MONITOR clients, fed by every worker's sessions.
    pub monitors: crate::session::monitor::registry::Monitors,
}

/// The proxy's own counters. Workers write only their own padded [`WorkerStats`]; the rest
/// are written off the hot path.
pub struct Counters {
    /// When the proxy started.
    pub started: Instant,
    /// The same moment as a [`crate::clock::now_us`] stamp, to date the data path's stamps.
    pub started_us: u64,
    /// This run's random ID (INFO's `run_id`: 40 hex digits, fixed for the proxy's life).
    pub run_id: String,
    /// One entry per worker.
    pub workers: Vec<WorkerStats>,
    /// Connections refused because `max_clients` was reached.
    pub rejected_clients: AtomicU64,
    /// TLS client connections that failed their handshake (plain clients on the TLS port,
    /// unknown or missing client certificates, timeouts).
    pub tls_handshake_failures: AtomicU64,
    /// Reads that could have gone to a replica but went to the master, by
    /// [`crate::route::replica_choice::Reason::index`].
    pub replica_read_fallbacks: [AtomicU64; 3],
    /// Commands per second over the last sampling period (INFO's instantaneous_ops_per_sec).
    pub ops_per_sec: AtomicU64,
    /// The proxy's slow log.
    pub slowlog: crate::metrics::slowlog::SlowLog,
    /// Whether the Prometheus endpoint runs (and so whether per-command stats are recorded).
    pub metrics_on: bool,
    /// The text this proxy's `/metrics` serves, replaced whole by each flush.
    pub exposition: Arc<crate::metrics::scrape::Exposition>,
    /// Topology refreshes by trigger and result, and their durations.
    pub refresh_stats: crate::metrics::stats::RefreshStats,
    /// What INFO counts from since the last `CONFIG RESETSTAT` (the counters never reset).
    pub reset: crate::metrics::totals::ResetPoint,
    /// Multi-key commands across slots the proxy carried out (`cross_slot = "emulate"`).
    pub cross_slot: crate::metrics::cross_slot::Emulated,
}

impl Counters {
    /// Total clients connected, over all workers.
    pub fn client_count(&self) -> usize {
        self.workers.iter().map(WorkerStats::clients).sum()
    }
}

impl Topology {
    fn new() -> Topology {
        Topology {
            map: ArcSwap::from_pointee(SlotMap::empty()),
            published: AtomicU64::new(0),
            next_version: AtomicU64::new(1),
            refresh: Notify::new(),
            refresh_triggers: AtomicU8::new(0),
            refreshes_done: AtomicU64::new(0),
            refreshed: Notify::new(),
            backend_version: RwLock::new(String::from("7.0.0")),
            map_installed_ms: AtomicU64::new(0),
            replicas: ArcSwap::from_pointee(Default::default()),
            replica_reads_wanted: Default::default(),
        }
    }

    /// Replaces the slot map and counts the replacement.
    pub fn publish(&self, map: Arc<SlotMap>) {
        self.map.store(map);
        self.published.fetch_add(1, Release);
    }

    /// How many times the map was replaced: one load per request lets a worker keep its own
    /// copy of the map and re-read the shared one only after a change (reading it through
    /// `ArcSwap` cost about a hundred instructions per request).
    pub fn published(&self) -> u64 {
        self.published.load(Acquire)
    }

    /// A fresh, strictly increasing map version.
    pub fn next_map_version(&self) -> u64 {
        self.next_version.fetch_add(1, Relaxed)
    }

    /// Asks the refresher for a refresh soon (coalesced and rate-limited by the refresher).
    pub fn trigger_refresh(&self) {
        self.trigger_refresh_for(Trigger::Admin);
    }

    /// Like [`Topology::trigger_refresh`], saying why (for the refresh metrics).
    pub fn trigger_refresh_for(&self, why: Trigger) {
        self.refresh_triggers.fetch_or(why as u8, Relaxed);
        self.refresh.notify_one();
    }

    /// Applies a MOVED redirect to the shared map at once and schedules a full refresh. Only an
    /// address the map already [knows](SlotMap::knows) is patched in: anything else waits for
    /// the refresh to list it.
    pub fn patch_moved(&self, slot: u16, addr: &str) {
        self.map.rcu(|cur| {
            if !cur.knows(addr) || cur.owner(slot).is_some_and(|n| &*n.addr == addr) {
                Arc::clone(cur)
            } else {
                Arc::new(cur.with_moved(slot, addr, self.next_map_version()))
            }
        });
        self.published.fetch_add(1, Release);
        self.trigger_refresh_for(Trigger::Moved);
    }

    /// The backends' Redis version, for INFO and HELLO.
    pub fn redis_version(&self) -> String {
        self.backend_version
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|_| "7.0.0".into())
    }
}

impl Shared {
    /// Shared state for `workers` workers, with an empty slot map and TLS off whatever
    /// `config` says (state for tests; a proxy starts with [`Shared::with_path`]).
    pub fn new(config: Config, workers: usize, port: u16) -> Shared {
        Shared::with_path(config, None, workers, port, crate::net::tls::Tls::off())
    }

    /// Shared state for `workers` workers, remembering the config file for SIGHUP and `PROXY
    /// CONFIG REWRITE`, with `tls` loaded from `config` ([`crate::net::tls::Tls::load`]) and
    /// the node credentials taken from it.
    pub fn with_path(
        config: Config,
        path: Option<std::path::PathBuf>,
        workers: usize,
        port: u16,
        tls: crate::net::tls::Tls,
    ) -> Shared {
        // Config::validate has built the users once already; an invalid list cannot get here,
        // and if it did, nobody could authenticate (closed, not open).
        let users = crate::access::Users::from_config(&config.users).unwrap_or_else(|e| {
            tracing::error!(error = %e, "invalid users; no client can authenticate");
            crate::access::Users::locked()
        });
        let tls = Arc::new(tls);
        let dialer = Arc::new(crate::net::dialer::Dialer::new(
            crate::backend::credentials::auth_frame(&config.backend_user, &config.backend_password),
            Arc::clone(&tls),
        ));
        Shared {
            metrics: Counters {
                started: Instant::now(),
                started_us: crate::clock::now_us(),
                run_id: rand::random::<[u8; 20]>()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                workers: (0..workers).map(|_| WorkerStats::default()).collect(),
                rejected_clients: AtomicU64::new(0),
                tls_handshake_failures: AtomicU64::new(0),
                replica_read_fallbacks: Default::default(),
                ops_per_sec: AtomicU64::new(0),
                slowlog: Default::default(),
                metrics_on: !config.metrics_listen.is_empty(),
                exposition: Arc::default(),
                refresh_stats: Default::default(),
                reset: Default::default(),
                cross_slot: Default::default(),
            },
            topology: Topology::new(),
            registries: Registries {
                next_client_id: AtomicU64::new(1),
                users,
                ..Default::default()
            },
            settings: Settings {
                live: crate::live::Live::new(config.clone(), path, Arc::clone(&tls)),
                config,
                port,
                tls,
                dialer,
            },
            trimmer: Arc::default(),
            shutdown: Default::default(),
        }
    }

    /// Seconds since the current slot map was installed or last confirmed by a refresh.
    pub fn map_age_secs(&self) -> f64 {
        let now = self.metrics.started.elapsed().as_millis() as f64;
        (now - self.topology.map_installed_ms.load(Relaxed) as f64).max(0.0) / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_seat_counts_while_it_lives_wherever_it_is_dropped() {
        let shared = Arc::new(Shared::new(Config::default(), 2, 0));
        let a = ClientSeat::take(&shared, 1);
        let b = ClientSeat::take(&shared, 1);
        let c = ClientSeat::take(&shared, 0);
        assert_eq!(
            (
                shared.metrics.workers[0].clients(),
                shared.metrics.workers[1].clients()
            ),
            (1, 2)
        );
        assert_eq!(shared.metrics.client_count(), 3);
        drop(b);
        // A seat may travel to another thread (the worker's) and be dropped there.
        std::thread::spawn(move || drop(a)).join().unwrap();
        assert_eq!(
            (
                shared.metrics.workers[0].clients(),
                shared.metrics.workers[1].clients()
            ),
            (1, 0)
        );
        drop(c);
        assert_eq!(shared.metrics.client_count(), 0);
    }
}
