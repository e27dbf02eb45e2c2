//! Redis compatibility as a table: one line per case, `(command line, expected reply)`, run in
//! order on one client connection through the proxy in front of a real cluster. The reply is
//! written compactly: `+simple`, `-ERROR text`, `:int`, `$bulk`, `nil`, `*[a,b]` for arrays.
//! Arguments are split on spaces; `"..."` keeps spaces inside one argument.
//!
//! Every line of `CASES` is the answer of a Redis 7.0 cluster node (all slots on one node, so no
//! MOVED). `COMPAT_REFERENCE=1 cargo test --release --test compat_table` runs the table against
//! such a node as well and fails on any line that real Redis answers differently, so a new line
//! is checked against Redis, not against the proxy's idea of it. `SPLIT_CASES` are the
//! multi-key commands the proxy splits per slot: they answer as a single (non-cluster) Redis
//! does, where a cluster node would say CROSSSLOT.
//!
//! All mismatches are collected and reported at once, so a regression names every broken case.

mod common;

use common::*;
use redis::Value;
use std::time::Duration;

/// `(command line, expected reply)`. Adding a case is adding a line.
const CASES: &[(&str, &str)] = &[
    // Answered by the proxy itself.
    ("PING", "+PONG"),
    ("PING hello", "$hello"),
    ("ECHO hi", "$hi"),
    ("ECHO", "-ERR wrong number of arguments for 'echo' command"),
    ("SELECT 0", "+OK"),
    ("SELECT 1", "-ERR SELECT is not allowed in cluster mode"),
    ("CLIENT SETNAME compat", "+OK"),
    ("CLIENT GETNAME", "$compat"),
    ("EXEC", "-ERR EXEC without MULTI"),
    ("DISCARD", "-ERR DISCARD without MULTI"),
    ("HELLO 4", "-NOPROTO unsupported protocol version"),
    // Unknown commands and wrong arities.
    (
        "FOO",
        "-ERR unknown command 'FOO', with args beginning with: ",
    ),
    (
        "FOO bar baz",
        "-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' ",
    ),
    ("GET", "-ERR wrong number of arguments for 'get' command"),
    (
        "GET t:a extra",
        "-ERR wrong number of arguments for 'get' command",
    ),
    // Strings.
    ("SET t:a 1", "+OK"),
    ("GET t:a", "$1"),
    ("INCR t:a", ":2"),
    ("INCRBY t:a 10", ":12"),
    ("DECR t:a", ":11"),
    ("SETNX t:a 5", ":0"),
    ("OBJECT ENCODING t:a", "$int"),
    ("GET t:nope", "nil"),
    ("SET t:s hello", "+OK"),
    ("INCR t:s", "-ERR value is not an integer or out of range"),
    ("APPEND t:s _world", ":11"),
    ("STRLEN t:s", ":11"),
    ("GETRANGE t:s 0 4", "$hello"),
    ("SET t:s x NX XX", "-ERR syntax error"),
    (
        "SET t:s x EX 0",
        "-ERR invalid expire time in 'set' command",
    ),
    ("GETDEL t:s", "$hello_world"),
    ("EXISTS t:s", ":0"),
    // Lists.
    ("LPUSH t:l a b c", ":3"),
    ("LRANGE t:l 0 -1", "*[$c,$b,$a]"),
    ("LLEN t:l", ":3"),
    ("LINDEX t:l 0", "$c"),
    ("LPOS t:l b", ":1"),
    ("RPOP t:l", "$a"),
    (
        "GET t:l",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
    ),
    ("TYPE t:l", "+list"),
    ("LRANGE t:nope 0 -1", "*[]"),
    // Hashes.
    ("HSET t:h f1 v1 f2 v2", ":2"),
    ("HGET t:h f1", "$v1"),
    ("HGETALL t:h", "*[$f1,$v1,$f2,$v2]"),
    ("HINCRBYFLOAT t:h f2 1", "-ERR hash value is not a float"),
    ("HDEL t:h f1 nope", ":1"),
    ("HLEN t:h", ":1"),
    ("HMGET t:h f1 f2", "*[nil,$v2]"),
    // Sets and sorted sets.
    ("SADD t:set x y x", ":2"),
    ("SCARD t:set", ":2"),
    ("SISMEMBER t:set x", ":1"),
    ("SINTERCARD 1 t:set", ":2"),
    ("ZADD t:z 1 a 2 b", ":2"),
    ("ZRANGE t:z 0 -1 WITHSCORES", "*[$a,$1,$b,$2]"),
    ("ZINCRBY t:z 1.5 a", "$2.5"),
    ("ZSCORE t:z nope", "nil"),
    ("ZADD t:z nan c", "-ERR value is not a valid float"),
    // Expiry.
    ("EXPIRE t:h 1000", ":1"),
    ("PERSIST t:h", ":1"),
    ("TTL t:h", ":-1"),
    ("TTL t:nope", ":-2"),
    ("TYPE t:nope", "+none"),
    // HyperLogLog and streams.
    ("PFADD t:hll a b c", ":1"),
    ("PFCOUNT t:hll", ":3"),
    ("XADD t:x 1-1 f v", "$1-1"),
    (
        "XADD t:x 1-0 f v",
        "-ERR The ID specified in XADD is equal or smaller than the target stream top item",
    ),
    ("XLEN t:x", ":1"),
    // Multi-key commands in one slot, and across slots.
    ("MSETNX {t}a 1 {t}b 2", ":1"),
    ("MSETNX {t}a 3 {t}c 4", ":0"),
    ("MGET {t}a {t}b {t}c", "*[$1,$2,nil]"),
    ("RENAME {t}b {t}c", "+OK"),
    ("EXISTS {t}a {t}b {t}c", ":2"),
    (
        "MSETNX t:a 1 t:b 2",
        "-CROSSSLOT Keys in request don't hash to the same slot",
    ),
    (
        "SUNION t:set t:z",
        "-CROSSSLOT Keys in request don't hash to the same slot",
    ),
    (
        "RENAME t:a t:b",
        "-CROSSSLOT Keys in request don't hash to the same slot",
    ),
    // Scripts.
    ("EVAL \"return 1\" 0", ":1"),
    ("EVAL \"return redis.call('GET', KEYS[1])\" 1 t:a", "$11"),
    ("EVAL \"return {1, 'x', false}\" 0", "*[:1,$x,nil]"),
    (
        "EVAL \"return 1\" 2 t:a t:b",
        "-CROSSSLOT Keys in request don't hash to the same slot",
    ),
];

/// Multi-key commands the proxy splits per slot and merges: answered as one (non-cluster)
/// Redis 7.0 answers them. A Redis Cluster node would answer CROSSSLOT instead (by design, see
/// the README's "Commands"), so these are not part of the reference run.
const SPLIT_CASES: &[(&str, &str)] = &[
    ("MSET s:1 1 s:2 2 s:3 3", "+OK"),
    ("MGET s:1 s:nope s:3 s:2", "*[$1,nil,$3,$2]"),
    ("EXISTS s:1 s:2 s:nope s:1", ":3"),
    ("TOUCH s:1 s:2 s:nope", ":2"),
    ("DEL s:1 s:2 s:nope", ":2"),
    ("UNLINK s:3 s:nope", ":1"),
];

/// Splits a command line on spaces; `"..."` is one argument (without the quotes).
fn split_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (arg, tail) = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').expect("an unterminated quote"),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        args.push(arg.to_string());
        rest = tail.trim_start();
    }
    args
}

/// The compact form of a reply (see the module documentation).
fn compact(v: &Value) -> String {
    let list = |prefix: &str, items: &[Value]| {
        let items: Vec<String> = items.iter().map(compact).collect();
        format!("{prefix}[{}]", items.join(","))
    };
    match v {
        Value::Nil => "nil".into(),
        Value::Okay => "+OK".into(),
        Value::SimpleString(s) => format!("+{s}"),
        Value::Int(i) => format!(":{i}"),
        Value::BulkString(b) => format!("${}", String::from_utf8_lossy(b)),
        Value::Array(items) => list("*", items),
        Value::Set(items) => list("~", items),
        Value::Push { data, .. } => list(">", data),
        Value::Map(pairs) => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{}", compact(k), compact(v)))
                .collect();
            format!("%{{{}}}", pairs.join(","))
        }
        Value::Double(d) => format!(",{d}"),
        Value::Boolean(b) => format!("#{}", if *b { 't' } else { 'f' }),
        Value::BigNumber(n) => format!("({n}"),
        Value::VerbatimString { text, .. } => format!("={text}"),
        Value::Attribute { data, .. } => compact(data),
        Value::ServerError(e) => match e.details() {
            Some(d) => format!("-{} {d}", e.code()),
            None => format!("-{}", e.code()),
        },
    }
}

/// Sends one command line and returns the compact reply; an error reply is `-CODE detail`.
fn run(c: &mut redis::Connection, line: &str) -> String {
    let args = split_args(line);
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    match cmd.query::<Value>(c) {
        Ok(v) => compact(&v),
        Err(e) => match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("-{code} {detail}"),
            (Some(code), None) => format!("-{code}"),
            _ => format!("(client error: {e})"),
        },
    }
}

/// Runs `cases` in order on `c`; one line per case whose reply differs from the expected one.
fn mismatches(c: &mut redis::Connection, cases: &[(&str, &str)]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|&(line, want)| {
            let got = run(c, line);
            (got != want).then(|| format!("  {line:?}: expected {want:?}, got {got:?}"))
        })
        .collect()
}

#[test]
fn the_proxy_answers_the_table_as_redis_does() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let mut failed = mismatches(&mut c, CASES);
    failed.extend(mismatches(&mut c, SPLIT_CASES));
    assert!(
        failed.is_empty(),
        "{} of {} cases differ:\n{}",
        failed.len(),
        CASES.len() + SPLIT_CASES.len(),
        failed.join("\n")
    );
}

/// With `COMPAT_REFERENCE=1`: the table's expectations are what a real Redis cluster node (one
/// node holding every slot) answers.
#[test]
fn the_table_is_what_a_redis_cluster_node_answers() {
    if std::env::var_os("COMPAT_REFERENCE").is_none() {
        return;
    }
    let redis_server = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let node = slotproxy::admin::localcluster::LocalCluster::start_empty(
        &[("127.0.0.1".to_string(), 1)],
        2000,
        &redis_server,
    )
    .expect("starting a cluster-enabled redis-server");
    node.command(0, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
        .expect("CLUSTER ADDSLOTSRANGE");
    eventually(
        "the one-node cluster to be ok",
        Duration::from_secs(30),
        || {
            node.command(0, &["CLUSTER", "INFO"])
                .is_ok_and(|i| i.contains("cluster_state:ok"))
        },
    );
    let mut c = node_conn(&node, 0);
    let failed = mismatches(&mut c, CASES);
    assert!(
        failed.is_empty(),
        "{} of {} cases are not what redis-server answers:\n{}",
        failed.len(),
        CASES.len(),
        failed.join("\n")
    );
}

#[test]
fn command_lines_split_on_spaces_and_quotes() {
    assert_eq!(split_args("GET  k"), ["GET", "k"]);
    assert_eq!(split_args("EVAL \"return 1\" 0"), ["EVAL", "return 1", "0"]);
    assert_eq!(
        compact(&Value::Array(vec![
            Value::Int(1),
            Value::Nil,
            Value::BulkString(b"x".to_vec()),
            Value::Okay
        ])),
        "*[:1,nil,$x,+OK]"
    );
}
