//! The Prometheus endpoint and the once-a-second housekeeping that feeds it.
//!
//! The data path never calls the `metrics` facade: workers keep single-writer counters and
//! bucketed histograms ([`crate::metrics::stats`]), and [`housekeeping`] copies their sums into the
//! exporter's registry every [`FLUSH_EVERY`] as absolute values, and renders the latency
//! histograms' text from the same reading ([`crate::metrics::scrape`]). So a scrape is at most one flush
//! behind, its counts are exact, and label handles are created once, not per request.
//! Invariant: label values come from the command table, the node registry and fixed word lists,
//! never from client input.

use crate::metrics::info::{self, Totals};
use crate::metrics::stats::{self, BUCKETS_US};
use crate::shared::Shared;
use anyhow::Context;
use metrics::{counter, gauge, Counter};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How often worker counters are copied into the exporter and ops/sec sampled.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// MOVED + ASK redirects per second above which a "redirect storm" line is logged.
pub const REDIRECT_STORM_PER_SEC: u64 = 1000;

/// Binds the metrics endpoint's listener on `listen` and installs the exporter as the
/// process's recorder (with the proxy's histogram buckets). The caller serves the listener
/// with [`crate::metrics::scrape::serve`]; [`housekeeping`] runs the exporter's upkeep.
pub fn install(listen: &str) -> anyhow::Result<std::net::TcpListener> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("metrics_listen {listen:?} is not ip:port"))?;
    // SO_REUSEADDR: the endpoint closes each scrape first, leaving TIME_WAIT behind.
    let listener = crate::net::listener::bind(&addr.to_string())
        .with_context(|| format!("starting the metrics listener on {listen}"))?;
    let buckets: Vec<f64> = BUCKETS_US.iter().map(|&us| us as f64 / 1e6).collect();
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&buckets)
        .context("setting histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    crate::metrics::scrape::set_registry(handle);
    describe();
    Ok(listener)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("slotproxy_commands_total", "Requests answered, by command.");
    describe_counter!(
        "slotproxy_command_errors_total",
        "Error replies, by command."
    );
    describe_gauge!("slotproxy_client_connections", "Clients connected.");
    describe_counter!(
        "slotproxy_client_connections_accepted_total",
        "Client connections accepted."
    );
    describe_counter!(
        "slotproxy_client_connections_rejected_total",
        "Client connections refused (max_clients)."
    );
    describe_counter!(
        "slotproxy_tls_handshake_failures_total",
        "TLS client connections that failed their handshake."
    );
    describe_counter!(
        "slotproxy_auth_failures_total",
        "AUTH attempts with a wrong user or password."
    );
    describe_counter!(
        "slotproxy_auth_rate_limited_total",
        "AUTH attempts refused by auth_failures_per_minute."
    );
    describe_counter!(
        "slotproxy_user_connections_rejected_total",
        "AUTHs refused by a user's max_connections."
    );
    describe_gauge!(
        "slotproxy_requests_in_flight",
        "Requests read and not yet answered."
    );
    describe_counter!(
        "slotproxy_client_received_bytes_total",
        "Bytes read from clients."
    );
    describe_counter!(
        "slotproxy_client_sent_bytes_total",
        "Bytes written to clients."
    );
    describe_gauge!(
        "slotproxy_pending_reply_bytes",
        "Reply bytes waiting for clients to read them."
    );
    describe_counter!(
        "slotproxy_clients_cut_total",
        "Clients disconnected by the proxy, by reason."
    );
    describe_counter!(
        "slotproxy_redirects_total",
        "Redirects and retries handled, by kind."
    );
    describe_counter!(
        "slotproxy_topology_refreshes_total",
        "Topology refreshes, by trigger and result."
    );
    describe_histogram!(
        "slotproxy_topology_refresh_duration_seconds",
        Unit::Seconds,
        "Duration of topology refreshes."
    );
    describe_gauge!(
        "slotproxy_slot_map_version",
        "Version of the slot map in use."
    );
    describe_gauge!(
        "slotproxy_slot_map_age_seconds",
        "Seconds since the slot map in use was installed."
    );
    describe_gauge!(
        "slotproxy_slot_map_masters",
        "Masters in the slot map in use."
    );
    describe_counter!(
        "slotproxy_admin_jobs_total",
        "Admin engine runs, by engine and result."
    );
    describe_gauge!("slotproxy_slowlog_entries", "Entries in the slow log.");
    describe_gauge!(
        "slotproxy_uptime_seconds",
        "Seconds since the proxy started."
    );
}

#[derive(Default)]
struct Feeds {
    commands: HashMap<usize, (Counter, Counter)>,
}

/// Runs forever on the control runtime: samples ops/sec, logs redirect storms and, when
/// metrics are on, copies the workers' counters into the exporter.
pub async fn housekeeping(shared: Arc<Shared>) {
    let mut feeds = Feeds::default();
    let mut last = Totals::read(&shared);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t = Totals::read(&shared);
        let secs = FLUSH_EVERY.as_secs_f64();
        shared.ops_per_sec.store(
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
        if shared.metrics_on {
            flush(&shared, &t, &mut feeds);
        }
        last = t;
    }
}

fn flush(shared: &Shared, t: &Totals, feeds: &mut Feeds) {
    gauge!("slotproxy_client_connections").set(t.clients as f64);
    counter!("slotproxy_client_connections_accepted_total").absolute(t.accepted);
    counter!("slotproxy_client_connections_rejected_total")
        .absolute(shared.rejected_clients.load(Relaxed));
    counter!("slotproxy_tls_handshake_failures_total")
        .absolute(shared.tls_handshake_failures.load(Relaxed));
    counter!("slotproxy_auth_failures_total").absolute(shared.auth_guard.failed.load(Relaxed));
    counter!("slotproxy_auth_rate_limited_total").absolute(shared.auth_guard.limited.load(Relaxed));
    counter!("slotproxy_user_connections_rejected_total")
        .absolute(shared.auth_guard.user_limited.load(Relaxed));
    gauge!("slotproxy_requests_in_flight").set(t.in_flight() as f64);
    counter!("slotproxy_client_received_bytes_total").absolute(t.bytes_in);
    counter!("slotproxy_client_sent_bytes_total").absolute(t.bytes_out);
    gauge!("slotproxy_pending_reply_bytes").set(t.pending_out as f64);
    counter!("slotproxy_clients_cut_total", "reason" => "output_limit").absolute(t.cut_output);
    for (kind, v) in [
        ("moved", t.moved),
        ("ask", t.ask),
        ("tryagain", t.tryagain),
        ("clusterdown", t.clusterdown),
    ] {
        counter!("slotproxy_redirects_total", "kind" => kind).absolute(v);
    }
    let map = shared.map.load();
    gauge!("slotproxy_slot_map_version").set(map.version as f64);
    gauge!("slotproxy_slot_map_masters").set(map.nodes.len() as f64);
    gauge!("slotproxy_slot_map_age_seconds").set(shared.map_age_secs());
    gauge!("slotproxy_slowlog_entries").set(shared.slowlog.len() as f64);
    gauge!("slotproxy_uptime_seconds").set(shared.started.elapsed().as_secs_f64());

    let (mut total, mut backend, mut node) = (Vec::new(), Vec::new(), Vec::new());
    for c in info::command_totals(shared) {
        let name = stats::command_name(c.index);
        let f = feeds.commands.entry(c.index).or_insert_with(|| {
            (
                counter!("slotproxy_commands_total", "command" => name),
                counter!("slotproxy_command_errors_total", "command" => name),
            )
        });
        f.0.absolute(c.calls);
        f.1.absolute(c.errors);
        let labels = format!("command=\"{name}\"");
        total.push((labels.clone(), c.total));
        backend.push((labels, c.backend));
    }
    // Per-node families are rendered here rather than registered in the exporter, so a node
    // that left the topology (and the node registry) leaves the output with it.
    let (mut conns, mut replies, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for n in info::node_totals(shared) {
        let label = format!("node=\"{}\"", n.addr);
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
    let mut text = String::new();
    use crate::metrics::scrape::{render_histogram, render_values};
    render_values(
        &mut text,
        "slotproxy_backend_connections",
        "gauge",
        "Backend connections, by node and state.",
        &conns,
    );
    render_values(
        &mut text,
        "slotproxy_node_requests_total",
        "counter",
        "Replies received, by node.",
        &replies,
    );
    render_values(
        &mut text,
        "slotproxy_node_errors_total",
        "counter",
        "Errors, by node and kind (reply: error replies; failed: lost, timed out or unreachable).",
        &errors,
    );
    render_histogram(
        &mut text,
        "slotproxy_command_duration_seconds",
        "Arrival to reply, by command.",
        &total,
    );
    render_histogram(
        &mut text,
        "slotproxy_command_backend_duration_seconds",
        "Time waiting on backends (slowest part of split commands), by command.",
        &backend,
    );
    render_histogram(
        &mut text,
        "slotproxy_node_request_duration_seconds",
        "Write to reply, by node.",
        &node,
    );
    crate::metrics::scrape::set_histograms(text);
    crate::metrics::scrape::upkeep();
}
