//! The once-a-second housekeeping that writes the proxy's Prometheus exposition, and the
//! binding of its endpoint.
//!
//! The data path never calls a metrics library: workers keep single-writer counters and
//! bucketed histograms ([`crate::metrics::stats`]), the refresher and the admin jobs keep
//! theirs in the proxy's [`Shared`], and [`housekeeping`] reads them all every [`FLUSH_EVERY`]
//! and renders the whole text ([`crate::metrics::scrape`]) into the proxy's own
//! [`crate::metrics::scrape::Exposition`]. So a scrape is at most one flush behind, its counts
//! are exact, counters and histogram `_count`s come from the same reading, and each running
//! proxy exports only its own state (two proxies in one process never mix). Invariant: label
//! values come from the command table, the node registry and fixed word lists, never from
//! client input.

use crate::metrics::info::{self, Totals};
use crate::metrics::scrape::{render_histogram, render_value, render_values};
use crate::metrics::stats;
use crate::shared::Shared;
use anyhow::Context;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How often the exposition is rewritten from the proxy's counters and ops/sec sampled.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// MOVED + ASK redirects per second above which a "redirect storm" line is logged.
pub const REDIRECT_STORM_PER_SEC: u64 = 1000;

/// Binds the metrics endpoint's listener on `listen`. The caller serves it with
/// [`crate::metrics::scrape::serve`] from the proxy's exposition, which [`housekeeping`]
/// writes.
pub fn bind(listen: &str) -> anyhow::Result<std::net::TcpListener> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("metrics_listen {listen:?} is not ip:port"))?;
    // SO_REUSEADDR: the endpoint closes each scrape first, leaving TIME_WAIT behind.
    crate::net::listener::bind(&addr.to_string())
        .with_context(|| format!("starting the metrics listener on {listen}"))
}

/// Runs forever on the control runtime: samples ops/sec, logs redirect storms and, when
/// metrics are on, rewrites the proxy's exposition (the first time at once, so the endpoint
/// has something to serve from the start).
pub async fn housekeeping(shared: Arc<Shared>) {
    let mut last = Totals::read(&shared);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t = Totals::read(&shared);
        let secs = FLUSH_EVERY.as_secs_f64();
        shared.metrics.ops_per_sec.store(
            ((t.commands - last.commands.min(t.commands)) as f64 / secs) as u64,
            Relaxed,
        );
        let redirects = (t.moved + t.ask).saturating_sub(last.moved + last.ask);
        if redirects as f64 / secs > REDIRECT_STORM_PER_SEC as f64 {
            tracing::warn!(
                moved = t.moved.saturating_sub(last.moved),
                ask = t.ask.saturating_sub(last.ask),
                tryagain = t.tryagain.saturating_sub(last.tryagain),
                "redirect storm: the slot map is behind the cluster (resharding or failover under way?)"
            );
        }
        if shared.metrics.metrics_on {
            shared.metrics.exposition.set(render(&shared, &t));
        }
        last = t;
    }
}

/// The proxy's whole exposition, from one reading of its counters (`t` and what `shared`
/// holds). Family names, help texts, types, labels and buckets are the proxy's public
/// interface (dashboards, alerts): change them only on purpose.
fn render(shared: &Shared, t: &Totals) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;

    let (mut calls, mut errs, mut total, mut backend) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in info::command_totals(shared) {
        let labels = format!("command=\"{}\"", stats::command_name(c.index));
        calls.push((labels.clone(), c.calls));
        errs.push((labels.clone(), c.errors));
        total.push((labels.clone(), c.total));
        backend.push((labels, c.backend));
    }
    let counter = "counter";
    let gauge = "gauge";
    render_values(
        o,
        "slotproxy_commands_total",
        counter,
        "Requests answered, by command.",
        &calls,
    );
    render_values(
        o,
        "slotproxy_command_errors_total",
        counter,
        "Error replies, by command.",
        &errs,
    );
    render_value(
        o,
        "slotproxy_client_connections",
        gauge,
        "Clients connected.",
        t.clients,
    );
    render_value(
        o,
        "slotproxy_client_connections_accepted_total",
        counter,
        "Client connections accepted.",
        t.accepted,
    );
    render_value(
        o,
        "slotproxy_client_connections_rejected_total",
        counter,
        "Client connections refused (max_clients).",
        shared.metrics.rejected_clients.load(Relaxed),
    );
    render_value(
        o,
        "slotproxy_tls_handshake_failures_total",
        counter,
        "TLS client connections that failed their handshake.",
        shared.metrics.tls_handshake_failures.load(Relaxed),
    );
    let fallbacks: Vec<(String, u64)> = crate::route::replica_choice::Reason::ALL
        .iter()
        .map(|r| {
            (
                format!("reason=\"{}\"", r.label()),
                shared.metrics.replica_read_fallbacks[r.index()].load(Relaxed),
            )
        })
        .collect();
    render_values(
        o,
        "slotproxy_replica_read_fallbacks_total",
        counter,
        "Reads that could have gone to a replica but went to the master, by reason.",
        &fallbacks,
    );
    render_value(
        o,
        "slotproxy_auth_failures_total",
        counter,
        "AUTH attempts with a wrong user or password.",
        shared.registries.auth_guard.failed.load(Relaxed),
    );
    render_value(
        o,
        "slotproxy_auth_rate_limited_total",
        counter,
        "AUTH attempts refused by auth_failures_per_minute.",
        shared.registries.auth_guard.limited.load(Relaxed),
    );
    render_value(
        o,
        "slotproxy_user_connections_rejected_total",
        counter,
        "AUTHs refused by a user's max_connections.",
        shared.registries.auth_guard.user_limited.load(Relaxed),
    );
    render_value(
        o,
        "slotproxy_requests_in_flight",
        gauge,
        "Requests read and not yet answered.",
        t.in_flight(),
    );
    render_value(
        o,
        "slotproxy_client_received_bytes_total",
        counter,
        "Bytes read from clients.",
        t.bytes_in,
    );
    render_value(
        o,
        "slotproxy_client_sent_bytes_total",
        counter,
        "Bytes written to clients.",
        t.bytes_out,
    );
    render_value(
        o,
        "slotproxy_pending_reply_bytes",
        gauge,
        "Reply bytes waiting for clients to read them.",
        t.pending_out,
    );
    render_values(
        o,
        "slotproxy_clients_cut_total",
        counter,
        "Clients disconnected by the proxy, by reason.",
        &[("reason=\"output_limit\"".to_string(), t.cut_output)],
    );
    let redirects: Vec<(String, u64)> = [
        ("moved", t.moved),
        ("ask", t.ask),
        ("tryagain", t.tryagain),
        ("clusterdown", t.clusterdown),
    ]
    .into_iter()
    .map(|(kind, v)| (format!("kind=\"{kind}\""), v))
    .collect();
    render_values(
        o,
        "slotproxy_redirects_total",
        counter,
        "Redirects and retries handled, by kind.",
        &redirects,
    );
    let refreshes: Vec<(String, u64)> = shared
        .metrics
        .refresh_stats
        .counts()
        .into_iter()
        .map(|(trigger, result, n)| (format!("trigger=\"{trigger}\",result=\"{result}\""), n))
        .collect();
    render_values(
        o,
        "slotproxy_topology_refreshes_total",
        counter,
        "Topology refreshes, by trigger and result.",
        &refreshes,
    );
    // Like any family, the histogram appears with its first sample.
    let took = shared.metrics.refresh_stats.duration();
    let took: Vec<(String, stats::HistSnap)> = if took.count() > 0 {
        vec![(String::new(), took)]
    } else {
        Vec::new()
    };
    render_histogram(
        o,
        "slotproxy_topology_refresh_duration_seconds",
        "Duration of topology refreshes.",
        &took,
    );
    let map = shared.topology.map.load();
    render_value(
        o,
        "slotproxy_slot_map_version",
        gauge,
        "Version of the slot map in use.",
        map.version,
    );
    render_value(
        o,
        "slotproxy_slot_map_age_seconds",
        gauge,
        "Seconds since the slot map in use was installed or confirmed by a refresh.",
        shared.map_age_secs(),
    );
    render_value(
        o,
        "slotproxy_slot_map_masters",
        gauge,
        "Masters in the slot map in use.",
        map.nodes.len(),
    );
    let jobs: Vec<(String, u64)> = shared
        .registries
        .jobs
        .finished()
        .into_iter()
        .map(|(engine, result, n)| (format!("engine=\"{engine}\",result=\"{result}\""), n))
        .collect();
    render_values(
        o,
        "slotproxy_admin_jobs_total",
        counter,
        "Admin engine runs, by engine and result.",
        &jobs,
    );
    render_value(
        o,
        "slotproxy_admin_slots_moved_total",
        counter,
        "Slots moved by the admin engines (REBALANCE SLOTS, FIX, drains of REMOVE NODES).",
        shared.registries.jobs.slots_moved(),
    );
    let emulated: Vec<(String, u64)> = shared
        .metrics
        .cross_slot
        .totals()
        .into_iter()
        .map(|(command, n)| (format!("command=\"{command}\""), n))
        .collect();
    render_values(
        o,
        "slotproxy_cross_slot_emulated_total",
        counter,
        "Multi-key commands across slots the proxy carried out itself (cross_slot = emulate), by command.",
        &emulated,
    );
    render_value(
        o,
        "slotproxy_slowlog_entries",
        gauge,
        "Entries in the slow log.",
        shared.metrics.slowlog.len(),
    );
    render_value(
        o,
        "slotproxy_uptime_seconds",
        gauge,
        "Seconds since the proxy started.",
        shared.metrics.started.elapsed().as_secs_f64(),
    );

    // Per-node series are read from the node registry each time, so a node that left the
    // topology (and the registry) leaves the output with it.
    let (mut conns, mut replies, mut errors, mut node) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let map = shared.topology.map.load();
    for n in info::node_totals(shared) {
        let addr: &str = &n.addr;
        let role = if map.nodes.iter().any(|m| &*m.addr == addr) {
            "master"
        } else if map
            .nodes
            .iter()
            .any(|m| m.replicas.iter().any(|r| &**r == addr))
        {
            "replica"
        } else {
            "unknown"
        };
        let label = format!("node=\"{addr}\",role=\"{role}\"");
        for (state, v) in [
            ("up", n.conns[0]),
            ("connecting", n.conns[1]),
            ("down", n.conns[2]),
        ] {
            conns.push((format!("{label},state=\"{state}\""), v));
        }
        replies.push((label.clone(), n.replies));
        errors.push((format!("{label},kind=\"reply\""), n.error_replies));
        errors.push((format!("{label},kind=\"failed\""), n.failed));
        node.push((label, n.latency));
    }
    render_values(
        o,
        "slotproxy_backend_connections",
        gauge,
        "Backend connections, by node and state.",
        &conns,
    );
    render_values(
        o,
        "slotproxy_node_requests_total",
        counter,
        "Replies received, by node.",
        &replies,
    );
    render_values(
        o,
        "slotproxy_node_errors_total",
        counter,
        "Errors, by node and kind (reply: error replies; failed: lost, timed out or unreachable).",
        &errors,
    );
    render_histogram(
        o,
        "slotproxy_command_duration_seconds",
        "Arrival to reply, by command.",
        &total,
    );
    render_histogram(
        o,
        "slotproxy_command_backend_duration_seconds",
        "Time waiting on backends (slowest part of split commands), by command.",
        &backend,
    );
    render_histogram(
        o,
        "slotproxy_node_request_duration_seconds",
        "Write to reply, by node.",
        &node,
    );
    out
}
