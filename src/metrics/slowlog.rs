//! The proxy's slow log: `SLOWLOG GET/LEN/RESET/HELP` in Redis's format, and `PROXY SLOWLOG`
//! with what only the proxy knows (time waiting on backends, the node, the slowest part of a
//! split command).
//!
//! A request enters it when the time from its arrival to its reply reaches
//! `slowlog_threshold`. Invariants: entries keep Redis's six fields and truncation (at most 32
//! arguments, the last saying how many more; at most 128 bytes each, saying how many more), so
//! clients' SLOWLOG parsers read them; the log never holds more than `slowlog_max_len` entries;
//! the lock is taken only for slow requests and SLOWLOG commands, never for ordinary ones.

use crate::route::resp;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most arguments an entry keeps (Redis's SLOWLOG_ENTRY_MAX_ARGC).
pub const MAX_ARGC: usize = 32;
/// Most bytes an argument keeps (Redis's SLOWLOG_ENTRY_MAX_STRING).
pub const MAX_STRING: usize = 128;

/// One slow request.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Unique, increasing.
    pub id: u64,
    /// Unix time (seconds) when it was logged.
    pub time: u64,
    /// Arrival to reply, microseconds.
    pub duration_us: u64,
    /// The arguments, truncated as Redis does.
    pub args: Vec<Bytes>,
    /// `ip:port` of the client.
    pub client_addr: String,
    /// The client's name (empty if none).
    pub client_name: Bytes,
    /// Time waiting on backends, microseconds (for a split command, its slowest part).
    pub backend_us: u64,
    /// The node that answered (the slowest one, for a split command).
    pub node: String,
    /// For a split or fanned-out command: which part was slowest, and of how many.
    pub part: Option<(u32, u32)>,
}

/// What a session knows about a slow request when it logs it.
pub struct Slow<'a> {
    /// The request as it arrived (a RESP multibulk).
    pub wire: &'a [u8],
    /// Arrival to reply, microseconds.
    pub duration_us: u64,
    /// Backend wait, microseconds.
    pub backend_us: u64,
    /// The node, if one answered.
    pub node: String,
    /// Slowest part and part count, for split commands.
    pub part: Option<(u32, u32)>,
    /// `ip:port` of the client.
    pub client_addr: String,
    /// The client's name.
    pub client_name: Bytes,
}

/// The log.
#[derive(Default)]
pub struct SlowLog {
    next_id: AtomicU64,
    entries: Mutex<VecDeque<Entry>>,
}

impl SlowLog {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs a slow request, dropping the oldest entries beyond `max_len`.
    pub fn push(&self, slow: Slow<'_>, max_len: usize) {
        if max_len == 0 {
            return;
        }
        let entry = Entry {
            id: self.next_id.fetch_add(1, Relaxed),
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            duration_us: slow.duration_us,
            args: redacted(truncated_args(slow.wire)),
            client_addr: slow.client_addr,
            client_name: slow.client_name,
            backend_us: slow.backend_us,
            node: slow.node,
            part: slow.part,
        };
        let mut log = self.lock();
        log.push_front(entry);
        log.truncate(max_len);
    }

    /// Entries, newest first; `count` of them (all when `None`).
    pub fn get(&self, count: Option<usize>) -> Vec<Entry> {
        let log = self.lock();
        log.iter()
            .take(count.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the log (ids keep increasing, as in Redis).
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// Keeps at most `max_len` entries (after `slowlog_max_len` shrank).
    pub fn trim(&self, max_len: usize) {
        self.lock().truncate(max_len);
    }
}

/// Reads the arguments of a RESP multibulk request, truncated as Redis's slow log does. A
/// request the proxy could not re-read yields what it could read.
pub fn truncated_args(wire: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut pos = 0;
    let line = |pos: &mut usize| -> Option<i64> {
        let rest = wire.get(*pos..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(rest.get(1..end)?).ok()?.parse().ok()?;
        *pos += end + 2;
        Some(n)
    };
    if wire.first() != Some(&b'*') {
        return out;
    }
    let Some(argc) = line(&mut pos) else {
        return out;
    };
    let argc = usize::try_from(argc).unwrap_or(0);
    let keep = if argc > MAX_ARGC { MAX_ARGC - 1 } else { argc };
    for _ in 0..keep {
        let Some(len) = line(&mut pos).and_then(|n| usize::try_from(n).ok()) else {
            return out;
        };
        let Some(arg) = wire.get(pos..pos + len) else {
            return out;
        };
        pos += len + 2;
        if len > MAX_STRING {
            let mut a = BytesMut::from(&arg[..MAX_STRING]);
            a.extend_from_slice(format!("... ({} more bytes)", len - MAX_STRING).as_bytes());
            out.push(a.freeze());
        } else {
            out.push(Bytes::copy_from_slice(arg));
        }
    }
    if argc > MAX_ARGC {
        out.push(Bytes::from(format!(
            "... ({} more arguments)",
            argc - MAX_ARGC + 1
        )));
    }
    out
}

/// What a secret argument becomes in the log, as in Redis.
pub const REDACTED: &[u8] = b"(redacted)";

/// Settings whose values are secrets: Redis 7.0's sensitive configs, and the proxy's own
/// passwords (for `PROXY CONFIG SET`).
const SECRET_SETTINGS: &[&str] = &[
    "requirepass",
    "masterauth",
    "masteruser",
    "tls-key-file-pass",
    "tls-client-key-file-pass",
    "backend_password",
];

/// Replaces the secrets of a logged request with `(redacted)`, where Redis 7.0 does: every
/// argument of AUTH and of ACL SETUSER, HELLO's and MIGRATE's AUTH / AUTH2 credentials, and
/// the values of CONFIG SET (and PROXY CONFIG SET) for password settings. Works on
/// [`truncated_args`]' output; its closing "... more arguments" stays as it is.
pub fn redacted(mut args: Vec<Bytes>) -> Vec<Bytes> {
    let len = match args.last() {
        Some(l) if args.len() == MAX_ARGC && l.starts_with(b"... (") => args.len() - 1,
        _ => args.len(),
    };
    let is = |i: usize, word: &str| {
        args.get(i)
            .is_some_and(|a| i < len && a.eq_ignore_ascii_case(word.as_bytes()))
    };
    let mut secret = Vec::new();
    if is(0, "auth") {
        secret.extend(1..len);
    } else if is(0, "acl") && is(1, "setuser") {
        secret.extend(2..len);
    } else if is(0, "hello") {
        let mut j = 2;
        while j < len {
            if is(j, "auth") && j + 2 < len {
                secret.extend([j + 1, j + 2]);
                j += 3;
            } else if is(j, "setname") {
                j += 2;
            } else {
                break;
            }
        }
    } else if is(0, "migrate") {
        let mut j = 6;
        while j < len {
            if is(j, "keys") {
                break;
            } else if is(j, "auth") {
                secret.push(j + 1);
                j += 1;
            } else if is(j, "auth2") {
                secret.extend([j + 1, j + 2]);
                j += 2;
            }
            j += 1;
        }
    } else {
        let from = if is(0, "config") && is(1, "set") {
            Some(2)
        } else if is(0, "proxy") && is(1, "config") && is(2, "set") {
            Some(3)
        } else {
            None
        };
        if let Some(from) = from {
            let mut j = from;
            while j + 1 < len {
                if SECRET_SETTINGS.iter().any(|name| is(j, name)) {
                    secret.push(j + 1);
                }
                j += 2;
            }
        }
    }
    for i in secret {
        if i < len {
            args[i] = Bytes::from_static(REDACTED);
        }
    }
    args
}

const HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
];

fn count_arg(arg: Option<&Bytes>) -> Result<Option<usize>, Bytes> {
    let Some(a) = arg else {
        return Ok(Some(10));
    };
    match std::str::from_utf8(a)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(-1) => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as usize)),
        _ => Err(resp::error(
            "ERR count should be greater than or equal to -1",
        )),
    }
}

/// Answers `SLOWLOG ...` (`args` includes the word SLOWLOG; the router checked arity).
pub fn answer(args: &[Bytes], log: &SlowLog) -> Bytes {
    let sub = args
        .get(1)
        .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase())
        .unwrap_or_default();
    match sub.as_str() {
        "GET" => {
            let count = match count_arg(args.get(2)) {
                Ok(c) => c,
                Err(e) => return e,
            };
            let entries = log.get(count);
            let mut out = BytesMut::new();
            resp::put_array_header(&mut out, entries.len());
            for e in &entries {
                resp::put_array_header(&mut out, 6);
                resp::put_int(&mut out, e.id as i64);
                resp::put_int(&mut out, e.time as i64);
                resp::put_int(&mut out, e.duration_us as i64);
                resp::put_array_header(&mut out, e.args.len());
                for a in &e.args {
                    resp::put_bulk(&mut out, a);
                }
                resp::put_bulk(&mut out, e.client_addr.as_bytes());
                resp::put_bulk(&mut out, &e.client_name);
            }
            out.freeze()
        }
        "LEN" => resp::int(log.len() as i64),
        "RESET" => {
            log.reset();
            resp::simple("OK")
        }
        "HELP" => {
            let mut out = BytesMut::new();
            resp::put_array_header(&mut out, HELP.len());
            for l in HELP {
                out.extend_from_slice(b"+");
                out.extend_from_slice(l.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.freeze()
        }
        _ => resp::error(&format!(
            "ERR unknown subcommand '{}'. Try SLOWLOG HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |a| a))
                .chars()
                .take(128)
                .collect::<String>()
        )),
    }
}

/// `PROXY SLOWLOG [GET [count] | LEN | RESET]`: entries as readable lines with the proxy's own
/// fields.
pub fn proxy_answer(args: &[Bytes], log: &SlowLog) -> Bytes {
    let sub = args
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase())
        .unwrap_or_else(|| "GET".into());
    if sub != "GET" {
        let mut full = vec![Bytes::from_static(b"SLOWLOG")];
        full.extend_from_slice(args);
        return answer(&full, log);
    }
    let count = match count_arg(args.get(1)) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let entries = log.get(count);
    let mut lines = vec![format!("OK {} entries", entries.len())];
    for e in &entries {
        let args: Vec<String> = e
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let part = match e.part {
            Some((i, n)) => format!(" slowest_part {}/{n}", i + 1),
            None => String::new(),
        };
        lines.push(format!(
            "id {} time {} duration_us {} backend_us {} node {}{part} client {} name {} command {}",
            e.id,
            e.time,
            e.duration_us,
            e.backend_us,
            if e.node.is_empty() { "-" } else { &e.node },
            e.client_addr,
            if e.client_name.is_empty() {
                "-".to_string()
            } else {
                String::from_utf8_lossy(&e.client_name).into_owned()
            },
            args.join(" ")
        ));
    }
    crate::route::resp::lines_reply(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(args: &[&[u8]]) -> Vec<u8> {
        resp::encode_command(args).to_vec()
    }

    #[test]
    fn truncation_follows_redis() {
        let a = truncated_args(&wire(&[b"GET", b"k"]));
        assert_eq!(
            a,
            vec![Bytes::from_static(b"GET"), Bytes::from_static(b"k")]
        );
        let long = vec![b'x'; 200];
        let a = truncated_args(&wire(&[b"SET", b"k", &long]));
        assert_eq!(a[2].len(), 128 + "... (72 more bytes)".len());
        assert!(a[2].ends_with(b"... (72 more bytes)"));
        let many: Vec<Vec<u8>> = (0..40).map(|i| format!("a{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = many.iter().map(|v| v.as_slice()).collect();
        let a = truncated_args(&wire(&refs));
        assert_eq!(a.len(), 32);
        assert_eq!(&a[31][..], b"... (9 more arguments)");
        assert_eq!(&a[30][..], b"a30");
    }

    fn logged(args: &[&str]) -> Vec<String> {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        redacted(truncated_args(&wire(&refs)))
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn secrets_are_redacted_as_redis_does() {
        let r = "(redacted)";
        assert_eq!(logged(&["AUTH", "pw"]), ["AUTH", r]);
        assert_eq!(logged(&["auth", "u", "pw"]), ["auth", r, r]);
        assert_eq!(
            logged(&["HELLO", "3", "AUTH", "u", "pw", "SETNAME", "x"]),
            ["HELLO", "3", "AUTH", r, r, "SETNAME", "x"]
        );
        assert_eq!(
            logged(&["HELLO", "3", "SETNAME", "x", "auth", "u", "pw"]),
            ["HELLO", "3", "SETNAME", "x", "auth", r, r]
        );
        assert_eq!(
            logged(&["MIGRATE", "h", "1", "k", "0", "10", "COPY", "AUTH", "pw"]),
            ["MIGRATE", "h", "1", "k", "0", "10", "COPY", "AUTH", r]
        );
        assert_eq!(
            logged(&["MIGRATE", "h", "1", "", "0", "10", "AUTH2", "u", "pw", "KEYS", "auth"]),
            ["MIGRATE", "h", "1", "", "0", "10", "AUTH2", r, r, "KEYS", "auth"]
        );
        assert_eq!(
            logged(&[
                "CONFIG",
                "SET",
                "maxmemory",
                "0",
                "REQUIREPASS",
                "pw",
                "masterauth",
                "m"
            ]),
            [
                "CONFIG",
                "SET",
                "maxmemory",
                "0",
                "REQUIREPASS",
                r,
                "masterauth",
                r
            ]
        );
        assert_eq!(
            logged(&["PROXY", "CONFIG", "SET", "backend_password", "pw"]),
            ["PROXY", "CONFIG", "SET", "backend_password", r]
        );
        assert_eq!(
            logged(&["ACL", "SETUSER", "u", "on", ">pw"]),
            ["ACL", "SETUSER", r, r, r]
        );
        assert_eq!(logged(&["GET", "auth"]), ["GET", "auth"]);
        assert_eq!(
            logged(&["CONFIG", "GET", "requirepass"]),
            ["CONFIG", "GET", "requirepass"]
        );
        // A truncated AUTH keeps its "... more arguments" marker.
        let mut many = vec!["AUTH"];
        many.extend(std::iter::repeat_n("pw", 40));
        let a = logged(&many);
        assert_eq!(a.len(), MAX_ARGC);
        assert!(a[1..31].iter().all(|x| x == r));
        assert!(a[31].starts_with("... ("));
    }

    #[test]
    fn log_keeps_newest_first_and_bounded() {
        let log = SlowLog::default();
        for i in 0..5u64 {
            log.push(
                Slow {
                    wire: &wire(&[b"GET", format!("k{i}").as_bytes()]),
                    duration_us: 100 + i,
                    backend_us: 0,
                    node: String::new(),
                    part: None,
                    client_addr: "127.0.0.1:1".into(),
                    client_name: Bytes::new(),
                },
                3,
            );
        }
        let e = log.get(None);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].id, 4);
        assert_eq!(e[0].duration_us, 104);
        let r = answer(
            &[Bytes::from_static(b"SLOWLOG"), Bytes::from_static(b"LEN")],
            &log,
        );
        assert_eq!(&r[..], b":3\r\n");
    }
}
