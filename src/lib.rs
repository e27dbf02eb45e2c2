//! slotproxy: a multi-threaded RESP proxy in front of a Redis Cluster, with built-in cluster
//! administration.
//!
//! The data path reads top-down: [`server`] accepts and hands clients to a [`worker`];
//! a [`session`] reads and parses ([`protocol`]), asks the [`router`] where each request goes,
//! sends it through the worker's [`backend`] connections, and writes replies back in order,
//! merging split commands ([`merge`]). The [`topology`] refresher keeps the [`cluster`] slot map
//! current. Commands the proxy answers itself live in [`local`], [`info`], [`slowlog`] and
//! [`admin`]. Operations: [`stats`] and [`observe`] count on the data path, [`prom`] exports,
//! [`live`] changes settings at run time, [`logging`] sets up the logs, [`memory`] hands freed
//! memory back, [`shutdown`] is the one state every part that must stop reads. Admin engine
//! runs are [`jobs`]. Modules import each other in no cycle (`tests/module_graph.rs` checks).

pub mod access;
pub mod admin;
pub mod backend;
pub mod blocking;
pub mod clients;
pub mod cluster;
pub mod command;
pub mod config;
pub mod credentials;
pub mod dedicated;
pub mod dispatch;
pub mod fanout;
pub mod flow;
pub mod info;
pub mod jobs;
pub mod listener;
pub mod live;
pub mod local;
pub mod localcluster;
pub mod logging;
pub mod memory;
pub mod merge;
pub mod node_client;
pub mod observe;
pub mod placement;
pub mod prom;
pub mod protocol;
pub mod render;
pub mod resp;
pub mod router;
pub mod scrape;
pub mod scripts;
pub mod server;
pub mod session;
pub mod shared;
pub mod shutdown;
pub mod slots;
pub mod slowlog;
pub mod stats;
pub mod stream;
pub mod tls;
pub mod topology;
pub mod worker;
