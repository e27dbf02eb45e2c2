//! slotproxy: a multi-threaded RESP proxy in front of a Redis Cluster, with built-in cluster
//! administration.
//!
//! The source is grouped by concern, one folder ("wing") each; the data path reads top-down
//! through them: [`server`] accepts and hands clients to a worker ([`backend::worker`]); a
//! [`session`] reads and parses ([`route::protocol`]), asks the [`route::router`] where each
//! request goes, sends it through the worker's [`backend`] connections, and writes replies back
//! in order, merging split commands ([`route::merge`]).
//!
//! - [`net`]: connections (plain or TLS, both sides), the per-proxy dialer that opens node
//!   connections (credentials and TLS), and listening sockets.
//! - [`session`]: one client connection: its loop, the commands the proxy answers itself,
//!   cluster-wide commands, blocking commands, pub/sub, transactions, WAIT, logins and access
//!   checks, what it records, the client registry, MONITOR.
//! - [`route`]: RESP, the request parser, the command table and key specs, the router, calls
//!   and redirects, fan-out, reply merging, the script cache.
//! - [`backend`]: the per-node multiplexed connections, dedicated connections, the worker that
//!   owns them and follows redirects, the control-plane node client, backend credentials.
//! - [`cluster`]: the slot map, slot hashing, the topology refresher.
//! - [`metrics`]: counters and histograms, Prometheus, INFO, the slow log.
//! - [`admin`]: the `PROXY` namespace, its engines (create, check, rebalance) and planners
//!   (placement, flow, islands), jobs, rendered clusters and local clusters.
//!
//! At the top: [`server`] (listeners, workers, the accept loop), [`shared`] (one running
//! proxy's state in named groups), [`config`] and [`live`] (settings at start and at run time),
//! [`access`] (users), [`shutdown`], [`local_notify`] (the data path's wake-ups), [`memory`]
//! (handing freed memory back), [`logging`]. Modules import each other in no cycle
//! (`tests/module_graph.rs` checks).

pub mod access;
pub mod admin;
pub mod backend;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod live;
pub mod local_notify;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod route;
pub mod server;
pub mod session;
pub mod shared;
pub mod shutdown;
