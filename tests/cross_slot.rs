//! `cross_slot = "emulate"`: multi-key commands across slots, carried out by the proxy, give
//! the replies one plain Redis gives. Every test runs a real 3-master cluster behind the
//! proxy; the comparison test also runs one plain (non-cluster) redis-server and sends both
//! the same commands, in RESP2 and RESP3, on keys spread over the three masters.

mod common;

use common::{cluster, cluster_with_timeout, free_port, node_conn, Proxy};
use slotproxy::cluster::slots::key_slot;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A plain redis-server child process, killed by PID when dropped.
struct Plain {
    child: Child,
    port: u16,
}

impl Drop for Plain {
    fn drop(&mut self) {
        // Child::kill signals this child's own PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plain_server() -> Plain {
    let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let port = free_port();
    let child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server");
    let plain = Plain { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return plain;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server did not come up on port {port}");
}

/// A reply, RESP2 or RESP3, as a tree that compares by value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Double(String),
    Array(Vec<Reply>),
    Set(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// The same reply with the members of sets and arrays sorted (for the commands whose
    /// order depends on a server's hash seed).
    fn sorted(self) -> Reply {
        match self {
            Reply::Array(mut v) => {
                v.sort();
                Reply::Array(v)
            }
            Reply::Set(mut v) => {
                v.sort();
                Reply::Set(v)
            }
            other => other,
        }
    }
}

/// A raw RESP client (so RESP3 types are seen exactly as sent).
struct Raw {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Raw {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    fn call(&mut self, args: &[&str]) -> Reply {
        self.pipeline(&[args]).remove(0)
    }

    /// Sends every command in one write, then reads their replies.
    fn pipeline(&mut self, cmds: &[&[&str]]) -> Vec<Reply> {
        let mut out = Vec::new();
        for args in cmds {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in *args {
                out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        self.w.write_all(&out).expect("write");
        cmds.iter().map(|_| self.read()).collect()
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read line");
        l.trim_end_matches("\r\n").to_string()
    }

    fn read(&mut self) -> Reply {
        let l = self.line();
        let (kind, rest) = l.split_at(1);
        let n = || rest.parse::<i64>().expect("length");
        match kind {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(n()),
            "," => Reply::Double(rest.into()),
            "_" => Reply::Nil,
            "$" if n() < 0 => Reply::Nil,
            "$" => {
                let mut b = vec![0; n() as usize + 2];
                self.r.read_exact(&mut b).expect("bulk");
                b.truncate(b.len() - 2);
                Reply::Bulk(b)
            }
            "*" if n() < 0 => Reply::Nil,
            "*" => Reply::Array((0..n()).map(|_| self.read()).collect()),
            "~" => Reply::Set((0..n()).map(|_| self.read()).collect()),
            "%" => Reply::Map((0..n()).map(|_| (self.read(), self.read())).collect()),
            other => panic!("unexpected reply type {other:?}"),
        }
    }
}

/// A key called `name` whose slot is in the `third`-th third of the slots (so, in a 3-master
/// cluster made by the harness, on master `third`).
fn spread(prefix: &str, name: &str, third: usize) -> String {
    let (lo, hi) = [(0, 5460), (5461, 10922), (10923, 16383)][third % 3];
    (0..)
        .map(|i| format!("{prefix}{name}:{i}"))
        .find(|k| (lo..=hi).contains(&key_slot(k.as_bytes())))
        .expect("a key in range")
}

/// The commands both servers get: `(command, compare sorted)`, with `$name` standing for a
/// key spread over the masters by its position in `NAMES`.
const NAMES: &[&str] = &[
    "sa", "sb", "sc", "za", "zb", "ha", "hb", "ba", "bb", "la", "lb", "lista", "listb", "ga",
    "str", "miss", "r1", "r2", "r3", "r4", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9",
    "d10", "d11", "d12", "sl", "ss", "sz", "lx", "d13", "d14",
];

const SCRIPT: &[(&str, bool)] = &[
    ("SADD $sa 1 2 3 x y", false),
    ("SADD $sb 3 4 y z", false),
    ("SADD $sc 3 y q", false),
    ("ZADD $za 1 a 2 b 3 c", false),
    ("ZADD $zb 10 b 20 c 30 d", false),
    ("PFADD $ha a b c", false),
    ("PFADD $hb c d e", false),
    ("SET $ba foobar", false),
    ("SET $bb abcdef", false),
    ("SET $la ohmytext", false),
    ("SET $lb mynewtext", false),
    ("RPUSH $lista 1 2 3 4", false),
    ("RPUSH $listb x", false),
    (
        "GEOADD $ga 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
        false,
    ),
    ("SET $str hello", false),
    ("SET $r1 value", false),
    // Algebra, read-only forms.
    ("SINTER $sa $sb $sc", true),
    ("SUNION $sa $sb", true),
    ("SDIFF $sa $sb $sc", true),
    ("SINTER $sa $miss", true),
    ("SUNION $sa $str", false),
    ("SINTERCARD 3 $sa $sb $sc", false),
    ("SINTERCARD 2 $sa $sb LIMIT 1", false),
    ("ZINTER 2 $za $zb WITHSCORES", false),
    (
        "ZUNION 2 $za $zb WEIGHTS 2 3 AGGREGATE MAX WITHSCORES",
        false,
    ),
    ("ZDIFF 2 $za $zb WITHSCORES", false),
    ("ZINTERCARD 2 $za $zb", false),
    ("PFCOUNT $ha $hb", false),
    ("LCS $la $lb", false),
    ("LCS $la $lb LEN", false),
    ("LCS $la $lb IDX MINMATCHLEN 2 WITHMATCHLEN", false),
    // Algebra, STORE forms.
    ("SINTERSTORE $d1 $sa $sb", false),
    ("SMEMBERS $d1", true),
    ("SUNIONSTORE $d2 $sa $sb $sc", false),
    ("SMEMBERS $d2", true),
    ("SDIFFSTORE $d3 $sa $sb", false),
    ("SMEMBERS $d3", true),
    ("SUNIONSTORE $d3 $miss $sc", false),
    ("SMEMBERS $d3", true),
    ("ZINTERSTORE $d4 2 $za $zb", false),
    ("ZRANGE $d4 0 -1 WITHSCORES", false),
    ("ZUNIONSTORE $d5 2 $za $zb WEIGHTS 1 2 AGGREGATE SUM", false),
    ("ZRANGE $d5 0 -1 WITHSCORES", false),
    ("ZDIFFSTORE $d6 2 $za $zb", false),
    ("ZRANGE $d6 0 -1 WITHSCORES", false),
    ("ZRANGESTORE $d7 $za 0 1", false),
    ("ZRANGE $d7 0 -1 WITHSCORES", false),
    ("PFMERGE $d8 $ha $hb", false),
    ("PFCOUNT $d8", false),
    ("BITOP AND $d9 $ba $bb", false),
    ("GET $d9", false),
    ("BITOP OR $d9 $ba $bb $miss", false),
    ("GET $d9", false),
    ("SORT $lista DESC STORE $d10", false),
    ("LRANGE $d10 0 -1", false),
    ("GEORADIUS $ga 15 37 200 km STORE $d11", false),
    ("ZRANGE $d11 0 -1 WITHSCORES", false),
    (
        "GEOSEARCHSTORE $d12 $ga FROMLONLAT 15 37 BYRADIUS 200 km STOREDIST",
        false,
    ),
    ("ZRANGE $d12 0 -1 WITHSCORES", false),
    ("SINTERSTORE $d1 $str $sa", false),
    // Moves.
    ("RENAME $r1 $r2", false),
    ("GET $r2", false),
    ("EXISTS $r1", false),
    ("RENAME $miss $r1", false),
    ("RENAMENX $r2 $sa", false),
    ("RENAMENX $r2 $r3", false),
    ("GET $r3", false),
    ("COPY $r3 $r4", false),
    ("COPY $r3 $r4", false),
    ("SET $r3 other", false),
    ("COPY $r3 $r4 REPLACE", false),
    ("GET $r4", false),
    ("COPY $miss $r4", false),
    ("SMOVE $sa $sb 1", false),
    ("SMOVE $sa $sb notthere", false),
    ("SMOVE $miss $sb 1", false),
    ("SMOVE $sa $str 2", false),
    ("SMOVE $str $sa 2", false),
    ("SMEMBERS $sa", true),
    ("SMEMBERS $sb", true),
    ("LMOVE $lista $listb LEFT RIGHT", false),
    ("RPOPLPUSH $lista $listb", false),
    ("BLMOVE $lista $listb RIGHT LEFT 0", false),
    ("BRPOPLPUSH $lista $listb 0", false),
    ("LRANGE $lista 0 -1", false),
    ("LRANGE $listb 0 -1", false),
    ("LMOVE $miss $listb LEFT LEFT", false),
    ("LMOVE $str $listb LEFT LEFT", false),
    ("LMOVE $listb $str LEFT LEFT", false),
    ("LRANGE $listb 0 -1", false),
    // SORT with BY / GET patterns (a node refuses them; `%` is the run's key prefix, so the
    // keys a pattern names spread over the masters).
    ("RPUSH $sl 3 1 2 10 5", false),
    ("SADD $ss 4 9 7", false),
    ("ZADD $sz 1 a 2 b 3 c", false),
    ("RPUSH $lx 1 x", false),
    (
        "MSET %w_3 1 %w_1 3 %w_2 2 %w_10 5 %w_5 4 %w_a 3 %w_b 1 %w_c 2",
        false,
    ),
    (
        "MSET %w_4 0.5 %w_9 -2 %w_7 1e1 %bad_1 7 %bad_x notanumber",
        false,
    ),
    ("HSET %h_3 f c3 n 1.5", false),
    ("HSET %h_1 f c1 n 0.5", false),
    ("HSET %h_2 f c2 n 2.5", false),
    ("HSET %h_10 f c10 n -1", false),
    ("MSET %o_1 one %o_2 two %o_3 three", false),
    ("SORT $sl BY %w_*", false),
    ("SORT $sl BY %w_* DESC", false),
    ("SORT $sl BY %h_*->n", false),
    ("SORT $sl BY %h_*->f ALPHA", false),
    ("SORT $sl BY %h_*->f ALPHA DESC GET # GET %h_*->f", false),
    ("SORT $sl GET # GET %o_*", false),
    (
        "SORT $sl GET %h_*->f GET # GET %h_*->nofield GET nostar",
        false,
    ),
    ("SORT $sl BY nosort GET %o_*", false),
    ("SORT $sl BY nosort DESC LIMIT 1 2 GET # GET %o_*", false),
    ("SORT $sl BY %w_* LIMIT 1 3 GET %o_*", false),
    ("SORT $sl BY %w_* LIMIT -5 2 GET #", false),
    ("SORT $sl BY %w_* LIMIT 9 2 GET #", false),
    ("SORT $sl ALPHA GET %o_* GET #", false),
    ("SORT $sl BY %missing_* GET #", false),
    ("SORT $sl BY %missing_* ALPHA GET #", false),
    ("SORT $sz BY %w_* GET #", false),
    ("SORT $sz BY nosort DESC GET # GET %w_*", false),
    ("SORT $sz BY nosort LIMIT 1 5 GET #", false),
    ("SORT $ss BY %w_*", false),
    ("SORT $ss BY %w_* GET # GET %w_*", false),
    ("SORT $ss BY nosort GET #", false),
    ("SORT $ss BY nosort GET # STORE $d13", false),
    ("LRANGE $d13 0 -1", false),
    ("SORT $sl BY %w_* GET # GET %o_* STORE $d13", false),
    ("LRANGE $d13 0 -1", false),
    ("SET $d14 x", false),
    ("SORT $sl BY %w_* GET %o_* LIMIT 5 5 STORE $d14", false),
    ("EXISTS $d14", false),
    ("SORT $lx BY %bad_*", false),
    ("SORT $lx BY %bad_* STORE $d13", false),
    ("LRANGE $d13 0 -1", false),
    ("SORT $sl BY %h_*->f", false),
    ("SORT $str BY %w_*", false),
    ("SORT $str GET #", false),
    ("SORT $miss BY %w_* GET #", false),
    ("SORT $miss GET # STORE $d13", false),
    ("EXISTS $d13", false),
    ("SORT_RO $sl BY %w_* GET # GET %o_*", false),
    ("SORT_RO $sl BY %w_* STORE $d13", false),
    ("SORT $sl BY %w_* LIMIT a b", false),
    ("SORT $sl BY %w_* LIMIT 01 2", false),
    ("SORT $sl GET %o_* foo", false),
    ("SORT $sl GET", false),
];

/// `line` with its `$name`s replaced by the keys for `prefix`.
fn expand(line: &str, prefix: &str) -> Vec<String> {
    line.split(' ')
        .map(|w| match w.strip_prefix('$') {
            Some(name) => {
                let i = NAMES.iter().position(|n| *n == name).expect("known name");
                spread(prefix, name, i)
            }
            None => w.replace('%', prefix),
        })
        .collect()
}

fn run_both(proxy: &mut Raw, plain: &mut Raw, prefix: &str) {
    for (line, sorted) in SCRIPT {
        let args = expand(line, prefix);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (mut a, mut b) = (proxy.call(&args), plain.call(&args));
        if *sorted {
            (a, b) = (a.sorted(), b.sorted());
        }
        assert_eq!(a, b, "{line} ({prefix}): proxy vs plain redis-server");
    }
}

fn tmp_keys(cluster: &slotproxy::admin::localcluster::LocalCluster) -> Vec<String> {
    let mut found = Vec::new();
    for i in 0..cluster.nodes.len() {
        let mut c = node_conn(cluster, i);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*slotproxy:tmp:*")
            .query(&mut c)
            .expect("KEYS");
        found.extend(keys);
    }
    found
}

#[test]
fn emulated_commands_answer_as_one_plain_redis_in_resp2_and_resp3() {
    let cluster = cluster(3, 1, 0);
    let plain = plain_server();
    let proxy = Proxy::start_with(&cluster.seeds(), "cross_slot = \"emulate\"", true);
    for (prefix, resp3) in [("p2:", false), ("p3:", true)] {
        let mut p = Raw::connect(&proxy.addr);
        let mut s = Raw::connect(&format!("127.0.0.1:{}", plain.port));
        if resp3 {
            assert!(matches!(p.call(&["HELLO", "3"]), Reply::Map(_)));
            assert!(matches!(s.call(&["HELLO", "3"]), Reply::Map(_)));
        }
        run_both(&mut p, &mut s, prefix);
    }
    // Nothing the emulation made is left on any node.
    assert_eq!(tmp_keys(&cluster), Vec::<String>::new());
    // Each temporary is made with a TTL of at most 60 s, so one left behind by a failure
    // part-way (a node or the proxy gone before the delete) expires on its own.
    let (d, a, b) = (
        spread("m:", "d", 2),
        spread("m:", "a", 0),
        spread("m:", "b", 1),
    );
    let target = common::owner_of(&cluster, 0, key_slot(d.as_bytes()));
    let mut monitor = Raw::connect(&cluster.nodes[target].addr());
    assert_eq!(monitor.call(&["MONITOR"]), Reply::Simple("OK".into()));
    let mut p = Raw::connect(&proxy.addr);
    p.call(&["SADD", &a, "1"]);
    p.call(&["SADD", &b, "2"]);
    assert_eq!(p.call(&["SUNIONSTORE", &d, &a, &b]), Reply::Int(2));
    let mut restores = 0;
    loop {
        let Reply::Simple(line) = monitor.read() else {
            panic!("a MONITOR line");
        };
        let words: Vec<&str> = line.split('"').collect();
        // `... "RESTORE" "<temporary>" "<ttl>" ...`: the words at odd positions are the arguments.
        if words.get(1) == Some(&"RESTORE")
            && words.get(3).is_some_and(|k| k.contains("slotproxy:tmp:"))
        {
            let ttl: u64 = words.get(5).and_then(|t| t.parse().ok()).expect("a TTL");
            assert!(ttl > 0 && ttl <= 60_000, "{line}");
            restores += 1;
        }
        if words.get(1) == Some(&"DEL") && line.contains("slotproxy:tmp:") {
            break;
        }
    }
    assert_eq!(restores, 2);
    // The TTL moves with a renamed key.
    let mut p = Raw::connect(&proxy.addr);
    let (src, dst) = (spread("t:", "src", 0), spread("t:", "dst", 1));
    p.call(&["SET", &src, "v", "EX", "1000"]);
    assert_eq!(p.call(&["RENAME", &src, &dst]), Reply::Simple("OK".into()));
    assert!(matches!(p.call(&["TTL", &dst]), Reply::Int(t) if t > 900));
    let text = proxy.scrape_until("the emulated RENAMEs", Duration::from_secs(20), |t| {
        common::metric(t, "slotproxy_cross_slot_emulated_total{command=\"rename\"}") >= 5.0
    });
    assert!(
        common::metric(
            &text,
            "slotproxy_cross_slot_emulated_total{command=\"sunionstore\"}"
        ) >= 4.0
    );
}

#[test]
fn pipelined_requests_around_an_emulated_command_run_in_the_client_order() {
    let cluster = cluster(3, 1, 0);
    // Several connections per node: a client's requests and the emulation's steps may travel
    // on different ones, which keep no order between them.
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "cross_slot = \"emulate\"\nconnections_per_node = 4",
        true,
    );
    let mut p = Raw::connect(&proxy.addr);
    let (a, b, d) = (spread("", "a", 0), spread("", "b", 1), spread("", "d", 2));
    let (l1, l2) = (spread("", "l1", 0), spread("", "l2", 2));
    // One write: the writes before each emulated command must be seen by it, and the reads
    // after it must see its result.
    let replies = p.pipeline(&[
        &["SADD", &a, "1", "2"],
        &["SADD", &b, "2", "3"],
        &["SUNIONSTORE", &d, &a, &b],
        &["SCARD", &d],
        &["RPUSH", &l1, "x", "y"],
        &["LMOVE", &l1, &l2, "LEFT", "LEFT"],
        &["LMOVE", &l1, &l2, "LEFT", "LEFT"],
        &["LRANGE", &l2, "0", "-1"],
        &["EXISTS", &l1],
        &["RENAME", &d, &a],
        &["SCARD", &a],
        &["EXISTS", &d],
    ]);
    let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
    assert_eq!(
        replies,
        vec![
            Reply::Int(2),
            Reply::Int(2),
            Reply::Int(3),
            Reply::Int(3),
            Reply::Int(2),
            bulk("x"),
            bulk("y"),
            Reply::Array(vec![bulk("y"), bulk("x")]),
            Reply::Int(0),
            Reply::Simple("OK".into()),
            Reply::Int(3),
            Reply::Int(0),
        ]
    );
}

#[test]
fn refuse_keeps_crossslot_and_the_setting_changes_live() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut p = Raw::connect(&proxy.addr);
    let (a, b, d) = (spread("", "a", 0), spread("", "b", 1), spread("", "d", 2));
    p.call(&["SADD", &a, "1"]);
    p.call(&["SADD", &b, "2"]);
    let crossslot = Reply::Error("CROSSSLOT Keys in request don't hash to the same slot".into());
    for cmd in [
        vec!["SUNIONSTORE", &d, &a, &b],
        vec!["SUNION", &a, &b],
        vec!["RENAME", &a, &d],
        vec!["SMOVE", &a, &b, "1"],
    ] {
        assert_eq!(p.call(&cmd), crossslot, "{cmd:?}");
    }
    // A SORT with patterns gets the node's own refusal, as before `cross_slot` existed.
    assert_eq!(
        p.call(&["SORT", &a, "BY", "w_*"]),
        Reply::Error("ERR BY option of SORT denied in Cluster mode.".into())
    );
    assert_eq!(
        p.call(&["PROXY", "CONFIG", "SET", "cross_slot", "emulate"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(p.call(&["SUNIONSTORE", &d, &a, &b]), Reply::Int(2));
    // Still refused: what cannot be atomic, transactions and watches.
    let Reply::Error(e) = p.call(&["MSETNX", &a, "1", &b, "2"]) else {
        panic!("MSETNX across slots must be refused");
    };
    assert!(e.starts_with("CROSSSLOT") && e.contains("atomic"), "{e}");
    assert_eq!(p.call(&["MULTI"]), Reply::Simple("OK".into()));
    assert_eq!(p.call(&["SUNIONSTORE", &d, &a, &b]), crossslot);
    assert_eq!(p.call(&["DISCARD"]), Reply::Simple("OK".into()));
    assert_eq!(p.call(&["WATCH", &a, &b]), crossslot);
    assert_eq!(
        p.call(&["PROXY", "CONFIG", "SET", "cross_slot", "refuse"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(p.call(&["SUNIONSTORE", &d, &a, &b]), crossslot);
}

#[test]
fn access_control_checks_every_key_a_user_names_and_a_user_may_choose_emulate() {
    let cluster = cluster(3, 1, 0);
    let users = r#"
[[users]]
name = "app"
password = "pw"
level = "write"
write_prefixes = ["app:"]
read_prefixes = ["app:"]
cross_slot = "emulate"

[[users]]
name = "other"
password = "pw2"
level = "write"
"#;
    // Slots are checked by logging in (the harness's readiness probe cannot).
    let proxy = Proxy::start_with(&cluster.seeds(), users, false);
    let mut p = Raw::connect(&proxy.addr);
    assert_eq!(p.call(&["AUTH", "app", "pw"]), Reply::Simple("OK".into()));
    let (a, b, d) = (
        spread("app:", "a", 0),
        spread("app:", "b", 1),
        spread("app:", "d", 2),
    );
    let outside = spread("x:", "b", 1);
    common::eventually(
        "the proxy to serve every slot",
        Duration::from_secs(20),
        || {
            matches!(p.call(&["SADD", &d, "0"]), Reply::Int(_))
                && p.call(&["DEL", &d]) == Reply::Int(1)
        },
    );
    p.call(&["SADD", &a, "1"]);
    p.call(&["SADD", &b, "2"]);
    assert_eq!(p.call(&["SUNIONSTORE", &d, &a, &b]), Reply::Int(2));
    let Reply::Error(e) = p.call(&["SUNIONSTORE", &d, &a, &outside]) else {
        panic!("a key outside the user's prefixes must be refused");
    };
    assert!(e.starts_with("NOPERM"), "{e}");
    // An emulated SORT reads the keys its patterns name: they must be inside the prefixes.
    p.call(&["SET", "app:w_1", "5"]);
    assert_eq!(
        p.call(&["SORT", &a, "BY", "app:w_*", "GET", "#", "GET", "app:w_*"]),
        Reply::Array(vec![Reply::Bulk(b"1".to_vec()), Reply::Bulk(b"5".to_vec())])
    );
    let Reply::Error(e) = p.call(&["SORT", &a, "BY", "app:w_*", "GET", "x:*"]) else {
        panic!("a pattern naming keys outside the user's prefixes must be refused");
    };
    assert!(e.starts_with("NOPERM"), "{e}");
    // The other user has the proxy's setting: refuse.
    let mut o = Raw::connect(&proxy.addr);
    assert_eq!(
        o.call(&["AUTH", "other", "pw2"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        o.call(&["SUNIONSTORE", &d, &a, &b]),
        Reply::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
}

#[test]
fn a_rename_whose_destination_node_is_down_leaves_the_value_in_the_source() {
    // A long node timeout: the cluster does not declare the killed master failed.
    let mut cluster = cluster_with_timeout(3, 1, 0, 60_000);
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "cross_slot = \"emulate\"\nrequest_timeout = \"2s\"",
        true,
    );
    let mut p = Raw::connect(&proxy.addr);
    let src = spread("k:", "src", 0);
    let dst = spread("k:", "dst", 2);
    assert_eq!(
        p.call(&["SET", &src, "precious"]),
        Reply::Simple("OK".into())
    );
    let owner = common::owner_of(&cluster, 0, key_slot(dst.as_bytes()));
    cluster.kill(owner);
    let Reply::Error(e) = p.call(&["RENAME", &src, &dst]) else {
        panic!("RENAME to a dead node must fail");
    };
    assert!(e.contains("still in the source"), "{e}");
    assert_eq!(p.call(&["GET", &src]), Reply::Bulk(b"precious".to_vec()));
}

/// Sends a command without reading its reply.
fn send_only(raw: &mut Raw, args: &[&str]) {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    raw.w.write_all(&out).expect("write");
}

/// Waits until node `index` holds a client's `cmd` under CLIENT PAUSE (the proxy's step).
fn wait_held(cluster: &slotproxy::admin::localcluster::LocalCluster, index: usize, cmd: &str) {
    let mut c = node_conn(cluster, index);
    let want = format!(" cmd={cmd} ");
    common::eventually(
        "the proxy's step to reach the paused node",
        Duration::from_secs(20),
        || {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut c)
                .expect("CLIENT LIST");
            list.lines()
                .any(|l| l.contains(&want) && l.contains(" flags=b"))
        },
    );
}

fn pause_writes(cluster: &slotproxy::admin::localcluster::LocalCluster, index: usize, on: bool) {
    let mut c = node_conn(cluster, index);
    let mut cmd = redis::cmd("CLIENT");
    if on {
        cmd.arg("PAUSE").arg(30_000).arg("WRITE");
    } else {
        cmd.arg("UNPAUSE");
    }
    let _: () = cmd.query(&mut c).expect("CLIENT PAUSE / UNPAUSE");
}

/// Sets `key` through the proxy and waits until a replica has it (it must outlive its
/// master): some node other than the master `owner` serves it to a READONLY connection.
fn set_replicated(
    p: &mut Raw,
    cluster: &slotproxy::admin::localcluster::LocalCluster,
    owner: usize,
    key: &str,
    value: &str,
) {
    assert_eq!(p.call(&["SET", key, value]), Reply::Simple("OK".into()));
    common::eventually("a replica to have the key", Duration::from_secs(60), || {
        cluster
            .nodes
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != owner)
            .any(|(_, n)| {
                // Killed nodes refuse the connection.
                let Ok(mut c) = redis::Client::open(format!("redis://{}/", n.addr()))
                    .and_then(|c| c.get_connection())
                else {
                    return false;
                };
                let _: redis::RedisResult<()> = redis::cmd("READONLY").query(&mut c);
                redis::cmd("GET")
                    .arg(key)
                    .query::<Option<String>>(&mut c)
                    .ok()
                    .flatten()
                    == Some(value.to_string())
            })
    });
}

#[test]
fn a_node_killed_in_the_middle_of_an_emulated_rename_loses_no_value() {
    let mut cluster = cluster(3, 2, 1);
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "cross_slot = \"emulate\"\nrequest_timeout = \"10s\"",
        true,
    );
    let mut p = Raw::connect(&proxy.addr);
    let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec());

    // The source's master dies once the destination's write is on its way (held by a pause
    // on the destination's master until the kill): the value is in the destination, and in
    // the source (now on its promoted replica) unless the proxy could still delete it there.
    let (src, dst) = (spread("k:", "src", 0), spread("k:", "dst", 2));
    let (x, y) = (
        common::owner_of(&cluster, 0, key_slot(src.as_bytes())),
        common::owner_of(&cluster, 0, key_slot(dst.as_bytes())),
    );
    assert_ne!(x, y);
    set_replicated(&mut p, &cluster, x, &src, "precious");
    pause_writes(&cluster, y, true);
    send_only(&mut p, &["RENAME", &src, &dst]);
    wait_held(&cluster, y, "restore");
    cluster.kill(x);
    pause_writes(&cluster, y, false);
    let reply = p.read();
    assert_eq!(p.call(&["GET", &dst]), bulk("precious"), "{reply:?}");
    match &reply {
        Reply::Simple(ok) if ok == "OK" => {}
        // The delete's reply was lost: the source may or may not still hold the value.
        Reply::Error(e) if e.contains("may still be in the source too") => {}
        Reply::Error(e) => {
            assert!(e.contains("the value is in both keys"), "{e}");
            common::eventually(
                "the source on its promoted replica",
                Duration::from_secs(30),
                || p.call(&["GET", &src]) == bulk("precious"),
            );
        }
        other => panic!("unexpected RENAME reply {other:?}"),
    }

    // The destination's master dies while it holds the write: nothing was written, so the
    // value stays in the source (or, if the proxy wrote the promoted replica, it moved).
    let live = (0..cluster.nodes.len())
        .find(|&i| i != x)
        .expect("a live node");
    let (src, dst) = (spread("m:", "src", 1), spread("m:", "dst", 2));
    let (s, d) = (
        common::owner_of(&cluster, live, key_slot(src.as_bytes())),
        common::owner_of(&cluster, live, key_slot(dst.as_bytes())),
    );
    assert_ne!(s, d);
    set_replicated(&mut p, &cluster, s, &src, "kept");
    pause_writes(&cluster, d, true);
    send_only(&mut p, &["RENAME", &src, &dst]);
    wait_held(&cluster, d, "restore");
    cluster.kill(d);
    match p.read() {
        Reply::Error(e) => {
            assert!(e.contains("still in the source key"), "{e}");
            assert_eq!(p.call(&["GET", &src]), bulk("kept"));
        }
        Reply::Simple(ok) if ok == "OK" => common::eventually(
            "the destination on its promoted replica",
            Duration::from_secs(30),
            || p.call(&["GET", &dst]) == bulk("kept"),
        ),
        other => panic!("unexpected RENAME reply {other:?}"),
    }
}
