//! INFO answered by the proxy in Redis's format, `PROXY INFO` and `PROXY INFO LATENCY`, and
//! the sums over workers that they and the Prometheus export share.
//!
//! INFO runs as a task on the client's worker (like `PROXY` commands): the sections that come
//! from the backends (`keyspace_hits`/`misses`, `# Keyspace`) ask every master concurrently over
//! the worker's shared data-path connections (no connection is opened per INFO), so a slow
//! node delays only this reply. Invariants: the proxy
//! keeps presenting itself as a standalone server (`cluster_enabled:0`, `redis_mode:standalone`),
//! since clients such as redis-py switch to cluster mode when they see a cluster; a master
//! that does not answer is counted in `slotproxy_info_unreachable_masters`, never silently
//! dropped.

use crate::backend::worker::Worker;
use crate::local_notify::LocalNotify;
use crate::metrics::stats::{self, HistSnap};
use crate::route::dispatch::{Call, Dest, ReplySlot, Target};
use crate::route::fanout;
use crate::route::resp;
use crate::route::resp::lines_reply;
use crate::shared::Shared;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::totals::{commands_since, Baseline};
pub use crate::metrics::totals::{CommandTotals, Totals};

impl Totals {
    /// Sums the workers' counters now.
    pub fn read(shared: &Shared) -> Totals {
        let mut t = Totals::default();
        for w in &shared.metrics.workers {
            let m = &w.m;
            t.clients += w.clients() as u64;
            t.accepted += w.accepted.load(Relaxed);
            t.commands += w.commands.load(Relaxed);
            t.completed += m.completed.load(Relaxed);
            t.bytes_in += m.bytes_in.load(Relaxed);
            t.bytes_out += m.bytes_out.load(Relaxed);
            t.pending_out += m.pending_out.load(Relaxed);
            t.cut_output += m.cut_output.load(Relaxed);
            t.moved += m.moved.load(Relaxed);
            t.ask += m.ask.load(Relaxed);
            t.tryagain += m.tryagain.load(Relaxed);
            t.clusterdown += m.clusterdown.load(Relaxed);
        }
        t
    }
}

/// Every command that was called at least once, summed over workers.
pub fn command_totals(shared: &Shared) -> Vec<CommandTotals> {
    let mut out = Vec::new();
    for i in 0..stats::command_count() {
        let mut c = CommandTotals {
            index: i,
            ..Default::default()
        };
        for w in &shared.metrics.workers {
            let Some(s) = w.m.commands.get(i) else {
                continue;
            };
            let calls = s.calls.load(Relaxed);
            if calls == 0 {
                continue;
            }
            c.calls += calls;
            c.errors += s.errors.load(Relaxed);
            c.total.add(&s.total.snapshot());
            c.backend.add(&s.backend.snapshot());
        }
        if c.calls > 0 {
            out.push(c);
        }
    }
    out
}

/// `CONFIG RESETSTAT`'s part in the proxy: INFO's counters (`# Stats`, and the per-command
/// figures) count from now on. The counters themselves, Prometheus and `PROXY INFO` are left
/// as they are (see [`crate::metrics::totals`]).
pub fn reset_stats(shared: &Shared) {
    shared.metrics.reset.set(Baseline {
        totals: Totals::read(shared),
        rejected: shared.metrics.rejected_clients.load(Relaxed),
        trims: shared.trimmer.trims(),
        commands: command_totals(shared),
    });
}

/// [`command_totals`] since the last `CONFIG RESETSTAT`: what INFO's per-command sections
/// (commandstats, errorstats, latencystats) show.
pub fn command_totals_since_reset(shared: &Shared) -> Vec<CommandTotals> {
    commands_since(command_totals(shared), &shared.metrics.reset.get().commands)
}

/// One node's counters summed over workers.
#[derive(Debug, Clone, Default)]
pub struct NodeTotals {
    /// `host:port`.
    pub addr: String,
    /// Replies received.
    pub replies: u64,
    /// Error replies.
    pub error_replies: u64,
    /// Requests failed by the proxy (connection lost, timeout, unreachable).
    pub failed: u64,
    /// Write-to-reply latency.
    pub latency: HistSnap,
    /// Connections up, connecting, down.
    pub conns: [u64; 3],
}

/// Every node the workers have talked to.
pub fn node_totals(shared: &Shared) -> Vec<NodeTotals> {
    shared
        .registries
        .nodes
        .all()
        .into_iter()
        .map(|(addr, per_worker)| {
            let mut n = NodeTotals {
                addr: addr.to_string(),
                ..Default::default()
            };
            for s in per_worker {
                n.replies += s.replies.load(Relaxed);
                n.error_replies += s.error_replies.load(Relaxed);
                n.failed += s.failed.load(Relaxed);
                n.latency.add(&s.latency.snapshot());
                n.conns[0] += s.conns_up.load(Relaxed);
                n.conns[1] += s.conns_connecting.load(Relaxed);
                n.conns[2] += s.conns_down.load(Relaxed);
            }
            n
        })
        .collect()
}

/// The sections INFO with these arguments shows. No argument and `default` give Redis's
/// default set; `all` and `everything` give every section.
fn wanted(args: &[Bytes]) -> Vec<&'static str> {
    const ALL: [&str; 5] = ["server", "clients", "stats", "cluster", "keyspace"];
    if args.is_empty() {
        return ALL.to_vec();
    }
    ALL.iter()
        .copied()
        .filter(|name| {
            args.iter().any(|a| {
                a.eq_ignore_ascii_case(name.as_bytes())
                    || a.eq_ignore_ascii_case(b"all")
                    || a.eq_ignore_ascii_case(b"default")
                    || a.eq_ignore_ascii_case(b"everything")
            })
        })
        .collect()
}

/// What the masters report for INFO.
#[derive(Default, Debug)]
struct Backends {
    hits: u64,
    misses: u64,
    /// db name -> (keys, expires, avg_ttl * expires)
    keyspace: BTreeMap<String, (u64, u64, u128)>,
    unreachable: usize,
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// The text of a bulk-string reply (`$len\r\n...\r\n`); `None` for anything else (an error
/// the node or the proxy answered instead).
fn bulk_text(frame: &[u8]) -> Option<String> {
    let rest = frame.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    let body = rest.get(cr + 2..cr + 2 + len)?;
    Some(String::from_utf8_lossy(body).into_owned())
}

const INFO_STATS: &[u8] = b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n";
const INFO_KEYSPACE: &[u8] = b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n";

/// Asks every master for its INFO sections over the worker's shared, multiplexed connections
/// (as any data command travels), so an INFO costs requests, never connections: a client
/// pipelining INFOs cannot make the proxy open connections to every master per call. One
/// request per section, which every Redis version accepts.
async fn backends(worker: &Worker, stats: bool, keyspace: bool) -> Backends {
    let masters = fanout::masters(&worker.shared.topology.map.load());
    let wires: Vec<&'static [u8]> = [(stats, INFO_STATS), (keyspace, INFO_KEYSPACE)]
        .into_iter()
        .filter_map(|(want, w)| want.then_some(w))
        .collect();
    let signal = Rc::new(LocalNotify::new());
    let mut slots = Vec::with_capacity(masters.len() * wires.len());
    for m in &masters {
        for w in &wires {
            let slot = ReplySlot::new(&signal);
            slots.push(Rc::clone(&slot));
            worker.send(Call::new(
                Bytes::from_static(w),
                Dest::Node(Arc::clone(m)),
                Target::Whole(slot),
            ));
        }
    }
    // Every call is answered or failed by the worker (request_timeout bounds it); the
    // deadline is only a safety net. A fill while this task is not waiting leaves a permit,
    // so no wake-up is lost.
    let live = &worker.shared.settings.live;
    let deadline = tokio::time::Instant::now()
        + live.request_timeout()
        + live.connect_timeout()
        + Duration::from_secs(1);
    let mut replies: Vec<Option<Bytes>> = vec![None; slots.len()];
    loop {
        for (r, s) in replies.iter_mut().zip(&slots) {
            if r.is_none() {
                *r = s.take();
            }
        }
        if replies.iter().all(Option::is_some) {
            break;
        }
        if tokio::time::timeout_at(deadline, signal.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    let mut b = Backends::default();
    for per_master in replies.chunks(wires.len().max(1)) {
        let texts: Option<Vec<String>> = per_master
            .iter()
            .map(|r| r.as_deref().and_then(bulk_text))
            .collect();
        let Some(texts) = texts else {
            b.unreachable += 1;
            continue;
        };
        let text = texts.concat();
        b.hits += field(&text, "keyspace_hits").unwrap_or(0);
        b.misses += field(&text, "keyspace_misses").unwrap_or(0);
        for l in text.lines() {
            // db0:keys=1,expires=0,avg_ttl=0
            let Some((db, rest)) = l.trim().split_once(':') else {
                continue;
            };
            if !db.starts_with("db") {
                continue;
            }
            let get = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let e = b.keyspace.entry(db.to_string()).or_default();
            e.0 += get("keys");
            e.1 += get("expires");
            e.2 += u128::from(get("avg_ttl")) * u128::from(get("expires"));
        }
    }
    b
}

/// Answers `INFO [section ...]` (`args` excludes the word INFO). With `hide_keyspace` (a
/// user confined to key prefixes) the `# Keyspace` section is shown empty: the cluster's key
/// counts are beyond that user's namespace.
pub async fn answer(args: Vec<Bytes>, worker: Rc<Worker>, hide_keyspace: bool) -> Bytes {
    let sections = wanted(&args);
    let need_stats = sections.contains(&"stats");
    let need_keyspace = sections.contains(&"keyspace") && !hide_keyspace;
    let b = if need_stats || need_keyspace {
        backends(&worker, need_stats, need_keyspace).await
    } else {
        Backends::default()
    };
    resp::bulk(render(&sections, &worker.shared, &b).as_bytes())
}

fn render(sections: &[&str], shared: &Shared, b: &Backends) -> String {
    // Counters since the last CONFIG RESETSTAT, as Redis shows them.
    let base = shared.metrics.reset.get();
    let raw = Totals::read(shared);
    let t = raw.since(&base.totals);
    let cfg = shared.settings.live.get();
    let mut out = String::new();
    for s in sections {
        match *s {
            "server" => {
                out.push_str("# Server\r\n");
                for (k, v) in server_fields(shared) {
                    let _ = write!(out, "{k}:{v}\r\n");
                }
                out.push_str("\r\n");
            }
            "clients" => {
                let _ = write!(
                    out,
                    "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\nslotproxy_pending_reply_bytes:{}\r\nslotproxy_requests_in_flight:{}\r\n\r\n",
                    t.clients,
                    cfg.max_clients,
                    shared.registries.clients.blocked(),
                    t.pending_out,
                    raw.in_flight(),
                );
            }
            "stats" => {
                let _ = write!(
                    out,
                    "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\nslotproxy_redirects_moved:{}\r\nslotproxy_redirects_ask:{}\r\nslotproxy_retries_tryagain:{}\r\nslotproxy_clients_cut_output:{}\r\nslotproxy_slowlog_len:{}\r\nslotproxy_memory_trims:{}\r\n\r\n",
                    t.accepted,
                    t.commands,
                    shared.metrics.ops_per_sec.load(Relaxed),
                    t.bytes_in,
                    t.bytes_out,
                    shared
                        .metrics
                        .rejected_clients
                        .load(Relaxed)
                        .saturating_sub(base.rejected),
                    b.hits,
                    b.misses,
                    t.moved,
                    t.ask,
                    t.tryagain,
                    t.cut_output,
                    shared.metrics.slowlog.len(),
                    shared.trimmer.trims().saturating_sub(base.trims),
                );
            }
            "cluster" => {
                let map = shared.topology.map.load();
                let replicas: usize = map.nodes.iter().map(|n| n.replicas.len()).sum();
                let _ = write!(
                    out,
                    "# Cluster\r\ncluster_enabled:0\r\nslotproxy_masters:{}\r\nslotproxy_nodes:{}\r\nslotproxy_slots_served:{}\r\nslotproxy_slot_map_version:{}\r\nslotproxy_slot_map_age_seconds:{}\r\nslotproxy_slot_map_source:{}\r\nslotproxy_refreshes:{}\r\nslotproxy_info_unreachable_masters:{}\r\n\r\n",
                    map.nodes.len(),
                    map.nodes.len() + replicas,
                    map.coverage(),
                    map.version,
                    shared.map_age_secs() as u64,
                    map.source,
                    shared.topology.refreshes_done.load(Relaxed),
                    b.unreachable,
                );
            }
            "keyspace" => {
                out.push_str("# Keyspace\r\n");
                for (db, (keys, expires, ttl_weighted)) in &b.keyspace {
                    let avg = ttl_weighted.checked_div(u128::from(*expires)).unwrap_or(0);
                    let _ = write!(out, "{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n");
                }
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    if out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

/// INFO's `# Server` fields: every field of Redis 7.0's, in its order, with the proxy's own
/// values where the backends' would mislead (its process, executable, config file, port,
/// run ID, uptime), then the proxy's own fields. `redis_version` is the backends', which
/// clients use to pick features.
fn server_fields(shared: &Shared) -> Vec<(&'static str, String)> {
    let uptime = shared.metrics.started.elapsed().as_secs();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let multiplexing = if cfg!(target_os = "linux") {
        "epoll"
    } else if cfg!(any(target_os = "macos", target_os = "freebsd")) {
        "kqueue"
    } else {
        "poll"
    };
    let workers = shared.metrics.workers.len();
    vec![
        ("redis_version", shared.topology.redis_version()),
        ("redis_git_sha1", "00000000".into()),
        ("redis_git_dirty", "0".into()),
        ("redis_build_id", build_id()),
        ("redis_mode", "standalone".into()),
        ("os", os_name()),
        ("arch_bits", usize::BITS.to_string()),
        // Rust's `Instant` reads CLOCK_MONOTONIC.
        ("monotonic_clock", "POSIX clock_gettime".into()),
        ("multiplexing_api", multiplexing.into()),
        ("atomicvar_api", "rust-std-atomics".into()),
        // Not built by GCC: Redis shows 0.0.0 then.
        ("gcc_version", "0.0.0".into()),
        ("process_id", std::process::id().to_string()),
        ("process_supervised", "no".into()),
        ("run_id", shared.metrics.run_id.clone()),
        ("tcp_port", shared.settings.port.to_string()),
        ("server_time_usec", unix.as_micros().to_string()),
        ("uptime_in_seconds", uptime.to_string()),
        ("uptime_in_days", (uptime / 86400).to_string()),
        // Redis's defaults: the proxy has no cron whose rate these would describe.
        ("hz", "10".into()),
        ("configured_hz", "10".into()),
        // Redis's LRU clock: seconds, in 24 bits.
        ("lru_clock", (unix.as_secs() & ((1 << 24) - 1)).to_string()),
        (
            "executable",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        (
            "config_file",
            shared
                .settings
                .live
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        // Its workers do client I/O on as many threads.
        ("io_threads_active", u8::from(workers > 1).to_string()),
        ("slotproxy_version", env!("CARGO_PKG_VERSION").into()),
        ("workers", workers.to_string()),
    ]
}

/// A fixed hex ID for this build of the proxy (INFO's `redis_build_id`).
fn build_id() -> String {
    // FNV-1a over the name and version: stable across runs and machines.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in concat!("slotproxy ", env!("CARGO_PKG_VERSION")).bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:x}")
}

/// The system's name, release and machine, as Redis shows them (`uname`).
fn os_name() -> String {
    // SAFETY: `uname` fills the zeroed struct it is given; its fields are NUL-terminated
    // strings within their arrays.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

/// `PROXY INFO [LATENCY]`: proxy state with per-worker and per-node detail, or latency
/// percentiles per command and node.
pub fn proxy_info(args: &[Bytes], shared: &Shared) -> Bytes {
    if args
        .first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"latency"))
    {
        return latency(shared);
    }
    let map = shared.topology.map.load();
    let t = Totals::read(shared);
    let mut out = vec![
        "OK".to_string(),
        format!("version {}", env!("CARGO_PKG_VERSION")),
        format!(
            "uptime_seconds {}",
            shared.metrics.started.elapsed().as_secs()
        ),
        format!("clients {}", t.clients),
        format!("slot_map_version {}", map.version),
        format!("slot_map_source {}", map.source),
        format!("slot_map_age_seconds {:.1}", shared.map_age_secs()),
        format!("slots_served {}", map.coverage()),
        format!("refreshes {}", shared.topology.refreshes_done.load(Relaxed)),
        format!("commands {} in_flight {}", t.commands, t.in_flight()),
        format!(
            "redirects moved {} ask {} tryagain {} clusterdown {}",
            t.moved, t.ask, t.tryagain, t.clusterdown
        ),
        format!(
            "metrics {}",
            if shared.metrics.metrics_on {
                &shared.settings.config.metrics_listen
            } else {
                "off"
            }
        ),
    ];
    for (i, w) in shared.metrics.workers.iter().enumerate() {
        let m = &w.m;
        out.push(format!(
            "worker {i} clients {} commands {} completed {} bytes_in {} bytes_out {} pending_reply_bytes {} clients_cut {}",
            w.clients(),
            w.commands.load(Relaxed),
            m.completed.load(Relaxed),
            m.bytes_in.load(Relaxed),
            m.bytes_out.load(Relaxed),
            m.pending_out.load(Relaxed),
            m.cut_output.load(Relaxed),
        ));
    }
    for n in node_totals(shared) {
        out.push(format!(
            "node {} replies {} error_replies {} failed {} conns_up {} conns_connecting {} conns_down {} p50_us {} p99_us {}",
            n.addr,
            n.replies,
            n.error_replies,
            n.failed,
            n.conns[0],
            n.conns[1],
            n.conns[2],
            us(n.latency.quantile_us(0.5)),
            us(n.latency.quantile_us(0.99)),
        ));
    }
    lines_reply(&out)
}

fn latency(shared: &Shared) -> Bytes {
    let mut out = vec![
        "OK latency percentiles in microseconds (interpolated within histogram buckets)"
            .to_string(),
    ];
    if !shared.metrics.metrics_on {
        out.push(
            "per-command latency is not recorded: metrics are off (metrics_listen = \"\")".into(),
        );
    }
    for c in command_totals(shared) {
        out.push(format!(
            "command {} calls {} errors {} p50 {} p90 {} p99 {} p999 {} backend_p50 {} backend_p99 {}",
            stats::command_name(c.index),
            c.calls,
            c.errors,
            us(c.total.quantile_us(0.5)),
            us(c.total.quantile_us(0.9)),
            us(c.total.quantile_us(0.99)),
            us(c.total.quantile_us(0.999)),
            us(c.backend.quantile_us(0.5)),
            us(c.backend.quantile_us(0.99)),
        ));
    }
    for n in node_totals(shared) {
        out.push(format!(
            "node {} requests {} p50 {} p90 {} p99 {} p999 {}",
            n.addr,
            n.latency.count(),
            us(n.latency.quantile_us(0.5)),
            us(n.latency.quantile_us(0.9)),
            us(n.latency.quantile_us(0.99)),
            us(n.latency.quantile_us(0.999)),
        ));
    }
    lines_reply(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    use crate::route::resp::test_args as args;

    fn field_text(text: &str, name: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn sections_and_filtering() {
        let shared = Shared::new(Config::default(), 2, 7617);
        let mut b = Backends::default();
        b.keyspace.insert("db0".into(), (10, 2, 2000));
        let all = render(&wanted(&[]), &shared, &b);
        assert!(all.contains("redis_version:") && all.contains("cluster_enabled:0"));
        assert!(all.contains("db0:keys=10,expires=2,avg_ttl=1000"), "{all}");
        let server = render(&wanted(&args(&["server"])), &shared, &b);
        assert!(server.starts_with("# Server") && !server.contains("# Cluster"));
        let two = render(&wanted(&args(&["CLUSTER", "clients"])), &shared, &b);
        assert!(
            two.starts_with("# Clients") && two.contains("# Cluster") && !two.contains("# Stats")
        );
        assert!(render(&wanted(&args(&["nosuch"])), &shared, &b).is_empty());
        let run_id = field_text(&server, "run_id");
        assert!(run_id.len() == 40 && run_id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(field_text(&server, "tcp_port"), "7617");
        assert_eq!(
            field_text(&server, "process_id"),
            std::process::id().to_string()
        );
        assert!(
            field_text(&server, "os").split(' ').count() >= 3,
            "{server}"
        );
        let again = render(&wanted(&args(&["server"])), &shared, &b);
        assert_eq!(
            field_text(&again, "run_id"),
            run_id,
            "fixed for the proxy's life"
        );
        assert_eq!(wanted(&args(&["everything"])).len(), 5);
    }

    #[test]
    fn resetstat_restarts_info_s_counters_and_leaves_the_counters_alone() {
        let shared = Shared::new(Config::default(), 2, 7617);
        let w = &shared.metrics.workers[1];
        stats::bump(&w.commands, 40);
        stats::bump(&w.accepted, 3);
        stats::bump(&w.m.completed, 39);
        stats::bump(&w.m.bytes_in, 900);
        let stats_text = |s: &Shared| render(&["stats", "clients"], s, &Backends::default());
        assert!(stats_text(&shared).contains("total_commands_processed:40\r\n"));
        reset_stats(&shared);
        stats::bump(&w.commands, 2);
        stats::bump(&w.m.completed, 2);
        let text = stats_text(&shared);
        assert!(text.contains("total_commands_processed:2\r\n"), "{text}");
        assert!(text.contains("total_connections_received:0\r\n"), "{text}");
        assert!(text.contains("total_net_input_bytes:0\r\n"), "{text}");
        // In flight is a gauge: the request in flight at the reset still is.
        assert!(
            text.contains("slotproxy_requests_in_flight:1\r\n"),
            "{text}"
        );
        // The counters Prometheus and PROXY INFO read are untouched.
        assert_eq!(Totals::read(&shared).commands, 42);
    }
}
