//! The `PROXY` admin namespace, answered on the data port so operators can use `redis-cli`.
//!
//! Replies read well in redis-cli: the first line is a verdict, then one line per item.
//! Admin commands are futures: the session runs them on its worker and their reply takes its
//! place in the client's in-order reply queue, so a long engine run never blocks other
//! clients. Engines that are not finished say so.

pub mod check;
pub mod create;
pub mod flow;
pub mod islands;
pub mod jobs;
pub mod lease;
pub mod localcluster;
pub mod membership;
pub mod options;
pub mod placement;
pub mod rebalance;
pub mod render;
pub mod report;
pub mod resize;
pub mod slots;
pub mod survey;

use crate::route::resp;
use crate::shared::Shared;
use bytes::Bytes;
use std::sync::Arc;

const HELP: &[&str] = &[
    "PROXY <subcommand> [<arg> ...]. Subcommands are:",
    "INFO [LATENCY]",
    "    Proxy state with per-worker and per-node detail; LATENCY: percentiles by command and node.",
    "CONFIG GET <pattern> | CONFIG SET <name> <value> | CONFIG REWRITE",
    "    Read settings, change the ones that may change live, write them back to the config file.",
    "SLOWLOG [GET [count] | LEN | RESET]",
    "    The slow log with backend wait, node and slowest part of split commands.",
    "SHUTDOWN",
    "    Stop accepting, finish in-flight requests (within shutdown_timeout), close clients, exit.",
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
    "ADD REPLICAS <r> | REPLICAS-OF <master|ANY> NODES <host:port> [HOST <label>] ... [DRYRUN] [ASYNC] [TIMEOUT s]",
    "    Join empty nodes as new shards (their masters own no slots yet) or as replicas of masters.",
    "REMOVE NODES <host:port|id> ... [FORCE] [DRYRUN] [ASYNC] [TIMEOUT s]",
    "    Remove replicas and masters (slots drained first): every node forgets them, then they are reset.",
    "REBALANCE MASTERS [DRYRUN] [TOLERANCE n] [MAXMOVES k] [ASYNC] [FORCE] [JSON] [TIMEOUT s] [HOST <addr> <label>]...",
    "    Spread masters evenly over hosts with the fewest CLUSTER FAILOVERs.",
    "REBALANCE SLOTS [WEIGHT <node> <w> ...] [THRESHOLD pct] [MAXSLOTS n] [BATCH n] [PIPELINE n] [PARALLEL n] [MIGRATE-TIMEOUT ms] [DRYRUN] [ASYNC] [TIMEOUT s]",
    "    Move slots so each master owns a share proportional to its weight (0 drains it).",
    "FIX [DRYRUN] [ASYNC] [TIMEOUT s] [BATCH n] [PIPELINE n] [MIGRATE-TIMEOUT ms]",
    "    Finish or close slots an interrupted move left open; assign uncovered slots.",
    "RESIZE MAXMEMORY <bytes|size like 2gb|percent like 50%> [FORCE] [DRYRUN] [ASYNC] [TIMEOUT s]",
    "    Set and persist maxmemory on every node (masters and replicas alike).",
    "HELP",
    "    Print this help.",
];

pub use report::json_str;

/// Answers `PROXY <args...>`; `args` excludes the word PROXY.
pub async fn answer(args: Vec<Bytes>, shared: Arc<Shared>) -> Bytes {
    let sub = args
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase())
        .unwrap_or_default();
    match sub.as_str() {
        // Engines are added here, one arm each: "CREATE" => create::answer(&args[1..], &shared).await,
        "ADD" => membership::answer_add(&args[1..], &shared).await,
        "CHECK" => check::answer(&args[1..], &shared).await,
        "CREATE" => create::answer(&args[1..], &shared).await,
        "REBALANCE" => rebalance::answer(&args[1..], &shared).await,
        "FIX" => slots::answer_fix(&args[1..], &shared).await,
        "REMOVE" => membership::answer_remove(&args[1..], &shared).await,
        "RESIZE" => resize::answer(&args[1..], &shared).await,
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
        "HELP" => {
            crate::route::resp::lines_reply(&HELP.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        }
        "SLOTS" => {
            let map = shared.topology.map.load();
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
            crate::route::resp::lines_reply(&out)
        }
        "INFO" => crate::metrics::info::proxy_info(&args[1..], shared),
        "CONFIG" => config(&args[1..], shared),
        "SLOWLOG" => crate::metrics::slowlog::proxy_answer(&args[1..], &shared.metrics.slowlog),
        "SHUTDOWN" => {
            tracing::info!("PROXY SHUTDOWN received");
            shared.shutdown.stop();
            resp::simple("OK")
        }
        "REFRESH" => {
            shared.topology.trigger_refresh();
            resp::simple("OK")
        }
        "JOBS" => {
            let jobs = shared.registries.jobs.list();
            let mut out = vec![format!("OK {} jobs", jobs.len())];
            out.extend(jobs.iter().map(|j| j.summary()));
            crate::route::resp::lines_reply(&out)
        }
        "JOB" => {
            let id = args
                .get(1)
                .and_then(|a| std::str::from_utf8(a).ok()?.parse::<u64>().ok());
            match id.and_then(|id| shared.registries.jobs.get(id)) {
                Some(job) => crate::route::resp::lines_reply(&job.details()),
                None => resp::error("ERR no such job; PROXY JOBS lists them"),
            }
        }
        _ => resp::error(&format!(
            "ERR unknown subcommand '{}'. Try PROXY HELP.",
            sub.chars().take(128).collect::<String>()
        )),
    }
}

/// Redis-style glob match (`*`, `?`, `[...]` not needed for setting names), case-insensitive.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    glob_counting(pattern, name).0
}

/// [`glob`] and the number of steps it took. The steps are bounded by
/// `(pattern.len() + 1) * (name.len() + 1)`, whatever the pattern: only the last `*` seen is
/// ever backtracked to (a match found for an earlier one can be kept, since the later star can
/// absorb anything the earlier one would have), so the client chooses the pattern but not an
/// exponential (or, with a deep recursion, stack-overflowing) amount of work.
fn glob_counting(pattern: &[u8], name: &[u8]) -> (bool, usize) {
    let (mut p, mut n, mut steps) = (0, 0, 0);
    // The last star's position in the pattern, and the name position it absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        steps += 1;
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return (false, steps),
            },
        }
    }
    let rest = pattern.get(p..).unwrap_or_default();
    (rest.iter().all(|&c| c == b'*'), steps + rest.len())
}

/// The settings `pattern` matches. A pattern with more non-`*` bytes than the longest setting
/// name matches none, and runs of `*` match as one: so a huge pattern costs one pass over it,
/// and the matching itself works on at most about twice the longest name.
fn matching_settings(pattern: &[u8]) -> Vec<&'static crate::config::Setting> {
    let longest = crate::config::SETTINGS
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    if pattern.iter().filter(|&&c| c != b'*').count() > longest {
        return Vec::new();
    }
    let mut compact = Vec::with_capacity(pattern.len().min(2 * longest + 1));
    for &c in pattern {
        if !(c == b'*' && compact.last() == Some(&b'*')) {
            compact.push(c);
        }
    }
    crate::config::SETTINGS
        .iter()
        .filter(|s| glob(&compact, s.name.as_bytes()))
        .collect()
}

/// `PROXY CONFIG GET <pattern> | SET <name> <value> | REWRITE`.
fn config(args: &[Bytes], shared: &Shared) -> Bytes {
    let sub = args
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase())
        .unwrap_or_default();
    let text = |i: usize| args.get(i).map(|a| String::from_utf8_lossy(a).into_owned());
    match (sub.as_str(), args.len()) {
        ("GET", 2) => {
            let cfg = shared.settings.live.get();
            let pattern = &args[1];
            let mut out = bytes::BytesMut::new();
            let matches = matching_settings(pattern);
            resp::put_array_header(&mut out, matches.len() * 2);
            for s in matches {
                resp::put_bulk(&mut out, s.name.as_bytes());
                resp::put_bulk(&mut out, cfg.get(s.name).unwrap_or_default().as_bytes());
            }
            out.freeze()
        }
        ("SET", 3) => {
            let (Some(name), Some(value)) = (text(1), text(2)) else {
                return resp::error("ERR wrong number of arguments for 'proxy config set'");
            };
            let name = name.to_ascii_lowercase();
            match shared.settings.live.set(&name, &value) {
                Ok(()) => {
                    if name == "slowlog_max_len" {
                        shared
                            .metrics
                            .slowlog
                            .trim(shared.settings.live.slowlog_max_len());
                    }
                    resp::simple("OK")
                }
                Err(e) => {
                    let msg = format!("{e:#}").replace(['\r', '\n'], " ");
                    if msg.starts_with("Unknown option") {
                        resp::error(&format!("ERR {msg}"))
                    } else {
                        resp::error(&format!("ERR slotproxy: {msg}"))
                    }
                }
            }
        }
        ("REWRITE", 1) => match shared.settings.live.rewrite() {
            Ok(written) => {
                tracing::info!(?written, "PROXY CONFIG REWRITE");
                resp::simple("OK")
            }
            Err(e) => resp::error(&format!(
                "ERR slotproxy: {}",
                format!("{e:#}").replace(['\r', '\n'], " ")
            )),
        },
        ("GET" | "SET" | "REWRITE", _) => resp::error(&format!(
            "ERR wrong number of arguments for 'proxy config {}' command",
            sub.to_ascii_lowercase()
        )),
        _ => resp::error("ERR unknown subcommand for PROXY CONFIG. Try GET, SET or REWRITE."),
    }
}

#[cfg(test)]
mod glob_tests {
    use super::{glob, glob_counting, matching_settings};

    /// The obvious recursive definition, as the reference on small inputs.
    fn reference(p: &[u8], n: &[u8]) -> bool {
        match (p.split_first(), n.split_first()) {
            (None, None) => true,
            (Some((b'*', rest)), _) => {
                reference(rest, n) || (!n.is_empty() && reference(p, &n[1..]))
            }
            (Some((b'?', rest)), Some((_, n))) => reference(rest, n),
            (Some((c, rest)), Some((d, n))) => c.eq_ignore_ascii_case(d) && reference(rest, n),
            _ => false,
        }
    }

    #[test]
    fn glob_agrees_with_the_recursive_definition() {
        // Every pattern of up to 5 bytes over {a, b, ?, *} against every name of up to 5 bytes
        // over {a, b}.
        fn all(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
            let mut out = vec![Vec::new()];
            let mut layer = vec![Vec::new()];
            for _ in 0..max {
                layer = layer
                    .iter()
                    .flat_map(|w: &Vec<u8>| {
                        alphabet.iter().map(move |&c| {
                            let mut w = w.clone();
                            w.push(c);
                            w
                        })
                    })
                    .collect();
                out.extend(layer.iter().cloned());
            }
            out
        }
        let names = all(b"ab", 5);
        for p in all(b"ab?*", 5) {
            for n in &names {
                assert_eq!(glob(&p, n), reference(&p, n), "{p:?} {n:?}");
            }
        }
    }

    #[test]
    fn many_stars_take_polynomial_steps() {
        // `*a*a...*a*b` against `aaa...a`: a recursive matcher tries every way of sharing the a's
        // among the stars (C(60, 30) ways here) before failing.
        let pattern = [&b"*a".repeat(30)[..], b"*b"].concat();
        let name = b"a".repeat(60);
        let (matched, steps) = glob_counting(&pattern, &name);
        assert!(!matched);
        let bound = (pattern.len() + 1) * (name.len() + 1);
        assert!(steps <= bound, "{steps} steps > {bound}");
        let (matched, steps) = glob_counting(&[&b"*a".repeat(30)[..], b"*"].concat(), &name);
        assert!(matched && steps <= bound, "{steps}");
    }

    #[test]
    fn huge_patterns_are_one_pass() {
        let stars = vec![b'*'; 1 << 20];
        assert_eq!(
            matching_settings(&stars).len(),
            crate::config::SETTINGS.len()
        );
        let timeouts = [&stars[..], b"timeout", &stars[..]].concat();
        let names: Vec<_> = matching_settings(&timeouts)
            .iter()
            .map(|s| s.name)
            .collect();
        assert!(names.contains(&"request_timeout") && names.contains(&"shutdown_timeout"));
        assert!(matching_settings(&vec![b'?'; 1 << 20]).is_empty());
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob(b"*", b"max_pipeline"));
        assert!(glob(b"max_*", b"max_pipeline"));
        assert!(glob(b"MAX_PIPELIN?", b"max_pipeline"));
        assert!(!glob(b"max_", b"max_pipeline"));
        assert!(glob(b"*timeout", b"request_timeout"));
        assert!(!glob(b"*timeout", b"request_timeouts"));
    }
}
