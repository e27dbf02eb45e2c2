//! The `PROXY` admin namespace, answered on the data port so operators can use `redis-cli`.
//!
//! Replies read well in redis-cli: the first line is a verdict, then one line per item.
//! Admin commands are futures: the session runs them on its worker and their reply takes its
//! place in the client's in-order reply queue, so a long engine run never blocks other
//! clients. Engines that are not finished say so.

pub mod check;
pub mod create;
pub mod islands;
pub mod jobs;
pub mod rebalance;
pub mod survey;

use crate::resp;
use crate::shared::Shared;
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

const HELP: &[&str] = &[
    "PROXY <subcommand> [<arg> ...]. Subcommands are:",
    "INFO",
    "    Proxy state: clients, slot map version and source, per-worker counters.",
    "SLOTS",
    "    The slot map: one line per contiguous range with its master and replicas.",
    "REFRESH",
    "    Re-read the cluster topology now.",
    "CREATE REPLICAS <r> NODES <host:port> [HOST <label>] ... [DRYRUN] [ASYNC] [TIMEOUT s]",
    "    Build a cluster from empty nodes with a host-aware placement.",
    "CHECK [JSON]",
    "    Report consistency and placement problems; changes nothing.",
    "JOBS | JOB <id>",
    "    Admin engine runs, with progress, log and report.",
    "REBALANCE MASTERS [DRYRUN] [TOLERANCE n] [MAXMOVES k] [ASYNC] [FORCE] [JSON] [TIMEOUT s] [HOST <addr> <label>]...",
    "    Spread masters evenly over hosts with the fewest CLUSTER FAILOVERs.",
    "HELP",
    "    Print this help.",
];

/// A JSON string literal (the admin engines' JSON reports are small and flat, so they are
/// written by hand rather than through a serializer).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Answers `PROXY <args...>`; `args` excludes the word PROXY.
pub async fn answer(args: Vec<Bytes>, shared: Arc<Shared>) -> Bytes {
    let sub = args
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase())
        .unwrap_or_default();
    match sub.as_str() {
        // Engines are added here, one arm each: "CREATE" => create::answer(&args[1..], &shared).await,
        "CHECK" => check::answer(&args[1..], &shared).await,
        "CREATE" => create::answer(&args[1..], &shared).await,
        "REBALANCE" => rebalance::answer(&args[1..], &shared).await,
        _ => answer_now(&args, &shared),
    }
}

/// The admin commands that need no I/O.
fn answer_now(args: &[Bytes], shared: &Shared) -> Bytes {
    let Some(sub) = args.first() else {
        return resp::error("ERR wrong number of arguments for 'proxy' command");
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_uppercase();
    match sub.as_str() {
        "HELP" => jobs::lines_reply(&HELP.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        "SLOTS" => {
            let map = shared.map.load();
            let mut out = vec![format!(
                "OK version {} slots {} masters {}",
                map.version,
                map.coverage(),
                map.nodes.len()
            )];
            for (a, b, addr) in map.ranges() {
                let node = map.nodes.iter().find(|n| n.addr == addr);
                let replicas = node
                    .map(|n| {
                        n.replicas
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                out.push(format!("{a}-{b} {addr} replicas={replicas}"));
            }
            jobs::lines_reply(&out)
        }
        "INFO" => {
            let map = shared.map.load();
            let mut out = vec![
                "OK".to_string(),
                format!("version {}", env!("CARGO_PKG_VERSION")),
                format!("uptime_seconds {}", shared.started.elapsed().as_secs()),
                format!("clients {}", shared.client_count()),
                format!("slot_map_version {}", map.version),
                format!("slot_map_source {}", map.source),
                format!("slots_served {}", map.coverage()),
                format!("refreshes {}", shared.refreshes_done.load(Relaxed)),
            ];
            for (i, w) in shared.workers.iter().enumerate() {
                out.push(format!(
                    "worker {i} clients {} commands {}",
                    w.clients.load(Relaxed),
                    w.commands.load(Relaxed)
                ));
            }
            jobs::lines_reply(&out)
        }
        "REFRESH" => {
            shared.trigger_refresh();
            resp::simple("OK")
        }
        "JOBS" => {
            let jobs = shared.jobs.list();
            let mut out = vec![format!("OK {} jobs", jobs.len())];
            out.extend(jobs.iter().map(|j| j.summary()));
            jobs::lines_reply(&out)
        }
        "JOB" => {
            let id = args
                .get(1)
                .and_then(|a| std::str::from_utf8(a).ok()?.parse::<u64>().ok());
            match id.and_then(|id| shared.jobs.get(id)) {
                Some(job) => jobs::lines_reply(&job.details()),
                None => resp::error("ERR no such job; PROXY JOBS lists them"),
            }
        }
        "CONFIG" => resp::error(&format!(
            "ERR PROXY {sub} is not implemented yet; see the README's list of what is finished"
        )),
        _ => resp::error(&format!(
            "ERR unknown subcommand '{}'. Try PROXY HELP.",
            sub.chars().take(128).collect::<String>()
        )),
    }
}
