//! Checks the generated command table and the key extraction against a live redis-server.
//!
//! The table is generated from one Redis version's `COMMAND` reply and the key extraction
//! re-implements Redis's key-spec walk, so the only trustworthy oracle is Redis itself: this
//! test starts its own redis-server on a free loopback port (killed by PID when the guard
//! drops), then
//!
//! * compares every command and subcommand of the live `COMMAND` reply with the table
//!   (counts, names, arity, flags, key specs), and
//! * compares `key_positions` with `COMMAND GETKEYS` for a corpus of requests, generated
//!   from the table for every plain index/range key spec and written by hand for the
//!   keyword, keynum and getkeys-procedure commands.
//!
//! Comparison rules (the deliberate differences are documented in `check_case`):
//! key names must match as multisets (we report keys in argument order, Redis in key-spec
//! order); where Redis answers an error we must answer `Err` or no keys; where we answer
//! `Err` but Redis lists keys (or an empty list), running the request itself on the server
//! must fail, because we only reject what the command itself rejects.
//!
//! The test needs the `redis-server` binary (override with `REDIS_SERVER=/path`); `make test`
//! installs it, and without it the test fails rather than pass without checking anything.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use slotproxy::route::command::{
    check_arity, key_positions, lookup, BeginSearch, CommandSpec, FindKeys, KeySpec, COMMANDS,
};

/// A redis-server child process, killed by PID when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill signals this child's own PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts redis-server on a free loopback port.
fn start_server() -> Option<Server> {
    let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => panic!("cannot start {bin} (install redis-server, or run `make test`): {e}"),
    };
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut c) = server.connect() {
            if matches!(c.call(&[b"PING".to_vec()]), Ok(Reply::Status(_))) {
                return Some(server);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server did not come up on port {port}");
}

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected text, got {other:?}"),
        }
    }
    fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected integer, got {other:?}"),
        }
    }
    fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(v)) => v,
            other => panic!("expected array, got {other:?}"),
        }
    }
}

/// A blocking RESP2 connection, just enough for COMMAND and COMMAND GETKEYS.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Server {
    fn connect(&self) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }
}

impl Conn {
    fn call(&mut self, args: &[Vec<u8>]) -> io::Result<Reply> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&buf)?;
        self.read()
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.ends_with("\r\n") {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short line"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read(&mut self) -> io::Result<Reply> {
        let line = self.line()?;
        let bad = |_| io::Error::new(io::ErrorKind::InvalidData, "bad length");
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(bad)?),
            "$" => {
                let n: i64 = rest.parse().map_err(bad)?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0; n as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(bad)?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, line)),
        })
    }
}

/// The crate's FLAG_* / KS_* consts by the names COMMAND prints.
fn command_flag(name: &str) -> u32 {
    use slotproxy::route::command::*;
    match name {
        "write" => FLAG_WRITE,
        "readonly" => FLAG_READONLY,
        "denyoom" => FLAG_DENYOOM,
        "module" => FLAG_MODULE,
        "admin" => FLAG_ADMIN,
        "pubsub" => FLAG_PUBSUB,
        "noscript" => FLAG_NOSCRIPT,
        "blocking" => FLAG_BLOCKING,
        "loading" => FLAG_LOADING,
        "stale" => FLAG_STALE,
        "skip_monitor" => FLAG_SKIP_MONITOR,
        "skip_slowlog" => FLAG_SKIP_SLOWLOG,
        "asking" => FLAG_ASKING,
        "fast" => FLAG_FAST,
        "no_auth" => FLAG_NO_AUTH,
        "may_replicate" => FLAG_MAY_REPLICATE,
        "sentinel" => FLAG_SENTINEL,
        "only_sentinel" => FLAG_ONLY_SENTINEL,
        "no_mandatory_keys" => FLAG_NO_MANDATORY_KEYS,
        "protected" => FLAG_PROTECTED,
        "no_async_loading" => FLAG_NO_ASYNC_LOADING,
        "no_multi" => FLAG_NO_MULTI,
        "movablekeys" => FLAG_MOVABLEKEYS,
        "allow_busy" => FLAG_ALLOW_BUSY,
        other => panic!("unknown command flag {other}"),
    }
}

fn key_spec_flag(name: &str) -> u32 {
    use slotproxy::route::command::*;
    match name {
        "RO" => KS_RO,
        "RW" => KS_RW,
        "OW" => KS_OW,
        "RM" => KS_RM,
        "access" => KS_ACCESS,
        "update" => KS_UPDATE,
        "insert" => KS_INSERT,
        "delete" => KS_DELETE,
        "not_key" => KS_NOT_KEY,
        "incomplete" => KS_INCOMPLETE,
        "variable_flags" => KS_VARIABLE_FLAGS,
        other => panic!("unknown key-spec flag {other}"),
    }
}

/// A RESP2-flattened map as (key, value) pairs.
fn map_get<'a>(flat: &'a [Reply], key: &str) -> Option<&'a Reply> {
    flat.chunks(2)
        .find(|kv| kv[0].text() == key)
        .and_then(|kv| kv.get(1))
}

fn describe_ours(ks: &KeySpec) -> String {
    let begin = match ks.begin {
        BeginSearch::Index(i) => format!("index {i}"),
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => format!("keyword {keyword} {start_from}"),
        BeginSearch::Unknown => "unknown".into(),
    };
    let find = match ks.find {
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => format!("range {last_key} {key_step} {limit}"),
        FindKeys::KeyNum {
            key_num_idx,
            first_key,
            key_step,
        } => format!("keynum {key_num_idx} {first_key} {key_step}"),
        FindKeys::Unknown => "unknown".into(),
    };
    format!("{begin} / {find} / {:#x}", ks.flags)
}

fn describe_live(raw: &Reply) -> String {
    let spec = raw.items();
    let flags = map_get(spec, "flags")
        .map(|f| f.items().iter().map(|x| key_spec_flag(&x.text())).sum())
        .unwrap_or(0u32);
    let bs = map_get(spec, "begin_search").expect("begin_search").items();
    let bs_spec = map_get(bs, "spec").expect("bs spec").items();
    let begin = match map_get(bs, "type").expect("bs type").text().as_str() {
        "index" => format!("index {}", map_get(bs_spec, "index").expect("index").int()),
        "keyword" => format!(
            "keyword {} {}",
            map_get(bs_spec, "keyword").expect("keyword").text(),
            map_get(bs_spec, "startfrom").expect("startfrom").int()
        ),
        _ => "unknown".into(),
    };
    let fk = map_get(spec, "find_keys").expect("find_keys").items();
    let fk_spec = map_get(fk, "spec").expect("fk spec").items();
    let int = |k: &str| map_get(fk_spec, k).map(Reply::int).expect(k);
    let find = match map_get(fk, "type").expect("fk type").text().as_str() {
        "range" => format!(
            "range {} {} {}",
            int("lastkey"),
            int("keystep"),
            int("limit")
        ),
        "keynum" => format!(
            "keynum {} {} {}",
            int("keynumidx"),
            int("firstkey"),
            int("keystep")
        ),
        _ => "unknown".into(),
    };
    format!("{begin} / {find} / {flags:#x}")
}

fn spec_for(name: &str) -> &'static CommandSpec {
    let args: Vec<Bytes> = name
        .split('|')
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect();
    let spec = lookup(&args).unwrap_or_else(|| panic!("{name} missing from the table"));
    assert_eq!(spec.name, name);
    spec
}

/// Compares one live COMMAND entry with the table; returns how many entries it covered.
fn compare_entry(raw: &Reply) -> usize {
    let e = raw.items();
    let name = e[0].text().to_ascii_lowercase();
    let spec = spec_for(&name);
    assert_eq!(i64::from(spec.arity), e[1].int(), "arity of {name}");
    let flags: u32 = e[2].items().iter().map(|f| command_flag(&f.text())).sum();
    assert_eq!(spec.flags, flags, "flags of {name}");
    let live: Vec<String> = e[8].items().iter().map(describe_live).collect();
    let ours: Vec<String> = spec.key_specs.iter().map(describe_ours).collect();
    assert_eq!(ours, live, "key specs of {name}");
    let subs = e[9].items();
    assert_eq!(spec.subcommands.len(), subs.len(), "subcommands of {name}");
    1 + subs.iter().map(compare_entry).sum::<usize>()
}

#[test]
fn table_matches_live_command() {
    let Some(server) = start_server() else { return };
    let mut conn = server.connect().expect("connect");
    let reply = conn.call(&[b"COMMAND".to_vec()]).expect("COMMAND");
    let entries = reply.items();
    assert_eq!(entries.len(), COMMANDS.len(), "number of commands");
    let covered: usize = entries.iter().map(compare_entry).sum();
    let ours: usize = COMMANDS.iter().map(|c| 1 + c.subcommands.len()).sum();
    assert_eq!(covered, ours, "number of commands and subcommands");
    let count = conn
        .call(&[b"COMMAND".to_vec(), b"COUNT".to_vec()])
        .expect("COMMAND COUNT");
    assert_eq!(count.int() as usize, COMMANDS.len());
}

/// Requests whose keys need more than a plain index/range key spec, written by hand.
/// `''` stands for an empty argument.
const HAND_CORPUS: &[&str] = &[
    // keyless commands and subcommands
    "ping",
    "config get maxmemory",
    "client list",
    "object help",
    // shard channels: not_key specs, so no keys (Redis: "The command has no key arguments")
    "ssubscribe a b",
    "sunsubscribe a",
    "spublish ch msg",
    // SORT / SORT_RO
    "sort k",
    "sort k store d",
    "SORT k BY w_* LIMIT 0 10 GET # GET o_* DESC ALPHA STORE d",
    "sort k store d1 store d2",
    "sort k get store",
    "sort k by store limit store store",
    "sort k store",
    "sort_ro k",
    "sort_ro k by x get y alpha",
    // MIGRATE
    "migrate h 6379 k 0 1000",
    "migrate h 6379 k 0 1000 copy replace",
    "migrate h 6379 '' 0 1000 keys a b c",
    "migrate h 6379 '' 0 1000 copy auth pw keys a b",
    "migrate h 6379 '' 0 1000 auth2 u keys keys a b",
    "migrate h 6379 k 0 1000 keys a b",
    // GEORADIUS / GEORADIUSBYMEMBER
    "georadius k 0 0 10 km",
    "georadius k 0 0 10 km withdist store d",
    "georadius k 0 0 10 km storedist d",
    "georadius k 0 0 10 km store d1 storedist d2",
    "georadius k 0 0 10 km storedist d2 store d1",
    "georadius k 0 0 10 km count 5 any store store",
    "georadius k 0 0 10 km storedist store",
    "georadiusbymember k m 10 km store d",
    "georadiusbymember k m 10 km withcoord storedist d",
    "georadiusbymember k store 10 km",
    "georadius_ro k 0 0 10 km withdist",
    "georadiusbymember_ro k m 10 km",
    // XREAD / XREADGROUP
    "xread streams a 0",
    "XREAD COUNT 10 BLOCK 0 STREAMS a b 0 0",
    "xread streams streams streams 0 0",
    "xread count 1 streams a b c",
    "xread streams a b c",
    "xread count 1 a 0",
    "xreadgroup group g c streams a 0",
    "xreadgroup group g c count 1 block 0 noack streams a b > >",
    "xreadgroup group streams streams noack streams a b > >",
    "xreadgroup group g c streams a b c",
    // EVAL family and FCALL
    "eval s 0",
    "eval s 0 a b",
    "eval s 2 a b c",
    "eval s 3 a b",
    "eval s -1 a",
    "eval s x a",
    "eval s 01 a",
    "evalsha 0123456789012345678901234567890123456789 1 a",
    "evalsha 0123456789012345678901234567890123456789 2 a",
    "eval_ro s 1 a",
    "evalsha_ro s 2 a b",
    "fcall f 2 a b x",
    "fcall f 0",
    "fcall f 3 a",
    "fcall_ro f 1 a",
    // ZUNIONSTORE family
    "zunionstore d 2 a b weights 1 2",
    "zunionstore d 0 a",
    "zunionstore d 3 a b",
    "zunionstore d x a",
    "zinterstore d 1 a aggregate max",
    "zinterstore d -1 a",
    "zdiffstore d 2 a b",
    "zdiffstore d 5 a b",
    "zunion 2 a b withscores",
    "zunion 0 a",
    "zinter 1 a",
    "zinter 3 a b",
    "zdiff 2 a b",
    "zdiff x a",
    // numkeys commands
    "lmpop 2 a b left count 3",
    "lmpop 0 a left",
    "lmpop 3 a left",
    "lmpop 2 a left",
    "blmpop 0.5 1 a right",
    "blmpop 0 0 a left",
    "blmpop 0 3 a left",
    "zmpop 1 a min",
    "zmpop 0 a min",
    "bzmpop 0 2 a b max",
    "bzmpop 0 4 a b max",
    "sintercard 3 a b c limit 1",
    "sintercard 0 a",
    "sintercard 3 a b",
    "zintercard 2 a b limit 5",
    "zintercard 0 a",
    "zintercard 3 a b",
    // variable flags (Redis uses its getkeys procedure)
    "set k v get",
    "set k v ex 10 nx",
    "bitfield k get u8 0 set u8 0 1",
    "bitfield_ro k get u8 0",
    // open-ended ranges
    "mset a 1 b 2 c 3",
    "msetnx a 1 b 2",
    "mget a b c d",
    "del a b c",
    "blpop a b c 0",
    "bitop and d a b",
    "pfcount a b",
    "object encoding k",
    "xinfo stream s full",
    "memory usage k samples 5",
    "lcs a b len",
];

/// Requests where we deliberately find keys although COMMAND GETKEYS answers an error, with
/// the reason. Everything else must follow the rules in `check_case`.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(
    "pfmerge a1",
    "PFMERGE dest with no source keys is valid (arity -2), but Redis 7.0's spec walk calls \
     the empty source range invalid and GETKEYS errors; the request still writes `dest`, so \
     we report it to route the request to its slot",
)];

/// Requests generated from the table: for every command whose key specs are plain
/// index/range specs, the minimal request and, for variadic commands, three longer ones.
fn generated_corpus() -> Vec<Vec<Vec<u8>>> {
    let mut corpus = Vec::new();
    for cmd in COMMANDS {
        for spec in std::iter::once(cmd).chain(cmd.subcommands) {
            let plain = !spec.key_specs.is_empty()
                && spec.key_specs.iter().all(|ks| {
                    matches!(ks.begin, BeginSearch::Index(_))
                        && matches!(ks.find, FindKeys::Range { .. })
                        && ks.flags & slotproxy::route::command::KS_INCOMPLETE == 0
                });
            if !plain || spec.is_container() {
                continue;
            }
            let head: Vec<Vec<u8>> = spec
                .name
                .split('|')
                .map(|p| p.as_bytes().to_vec())
                .collect();
            let min = spec.arity.unsigned_abs() as usize;
            let extra = if spec.arity < 0 { 3 } else { 0 };
            for len in min.max(head.len())..=min.max(head.len()) + extra {
                let mut args = head.clone();
                while args.len() < len {
                    args.push(format!("a{}", args.len()).into_bytes());
                }
                corpus.push(args);
            }
        }
    }
    corpus
}

fn split(line: &str) -> Vec<Vec<u8>> {
    line.split(' ')
        .map(|p| {
            if p == "''" {
                Vec::new()
            } else {
                p.as_bytes().to_vec()
            }
        })
        .collect()
}

fn show(args: &[Vec<u8>]) -> String {
    let parts: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    parts.join(" ")
}

/// Whether the request itself fails on the server (run on a fresh connection, so a blocking
/// or erroring request cannot disturb the main one). Only for requests we reject.
fn request_fails(server: &Server, args: &[Vec<u8>]) -> bool {
    let mut conn = server.connect().expect("connect");
    matches!(conn.call(args), Ok(Reply::Error(_)))
}

/// Checks one request; returns a description of the mismatch, if any.
fn check_case(server: &Server, conn: &mut Conn, args: &[Vec<u8>]) -> Option<String> {
    let request: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.clone())).collect();
    let spec = lookup(&request)?;
    assert!(
        check_arity(spec, request.len()),
        "corpus request with bad arity: {}",
        show(args)
    );
    let mut out = Vec::new();
    let ours = key_positions(spec, &request, &mut out).map(|()| {
        let mut names: Vec<Vec<u8>> = out.iter().map(|&i| args[i].clone()).collect();
        names.sort();
        names
    });

    let mut getkeys = vec![b"COMMAND".to_vec(), b"GETKEYS".to_vec()];
    getkeys.extend(args.iter().cloned());
    let redis = match conn.call(&getkeys).expect("COMMAND GETKEYS") {
        Reply::Error(e) => Err(e),
        Reply::Array(Some(items)) => {
            let mut names: Vec<Vec<u8>> = items
                .iter()
                .map(|r| match r {
                    Reply::Bulk(Some(b)) => b.clone(),
                    other => panic!("unexpected GETKEYS item {other:?}"),
                })
                .collect();
            names.sort();
            Ok(names)
        }
        other => panic!("unexpected GETKEYS reply {other:?}"),
    };

    match (&redis, &ours) {
        (Ok(r), Ok(o)) if r == o => None,
        // Redis could not find keys and reports an error: we may find none or reject.
        (Err(_), Err(_)) => None,
        (Err(_), Ok(o)) if o.is_empty() => None,
        // Deliberate: we reject requests that the command itself rejects (bad numkeys,
        // unbalanced XREAD streams...), where COMMAND GETKEYS answers with the keys its
        // spec walk found or an empty list; the server must agree that the request fails.
        (Ok(_), Err(_)) if request_fails(server, args) => None,
        _ if KNOWN_DIFFERENCES.iter().any(|(req, _)| *req == show(args)) => None,
        _ => Some(format!(
            "{}: redis {:?}, ours {:?}",
            show(args),
            redis.map(|v| v
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect::<Vec<_>>()),
            ours.map(|v| v
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect::<Vec<_>>()),
        )),
    }
}

#[test]
fn key_positions_match_command_getkeys() {
    let Some(server) = start_server() else { return };
    let mut conn = server.connect().expect("connect");
    let mut corpus = generated_corpus();
    let generated = corpus.len();
    corpus.extend(HAND_CORPUS.iter().map(|l| split(l)));
    assert!(corpus.len() >= 150, "corpus too small: {}", corpus.len());

    let mismatches: Vec<String> = corpus
        .iter()
        .filter_map(|args| check_case(&server, &mut conn, args))
        .collect();
    eprintln!(
        "checked {} requests ({} generated, {} by hand) against COMMAND GETKEYS",
        corpus.len(),
        generated,
        HAND_CORPUS.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
