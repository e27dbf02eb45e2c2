//! What tools and test suites wait on, through the proxy against a real cluster: INFO's
//! `blocked_clients` and CLIENT LIST's `b` flag for clients in blocking commands, CLIENT
//! UNBLOCK, CLIENT PAUSE / UNPAUSE over the proxy's clients, and INFO `server`'s fields.

mod common;

use common::*;
use redis::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// One RESP command, encoded.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// A client on a raw socket, to see replies byte for byte.
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        Raw {
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, args: &[&str]) {
        self.reader
            .get_mut()
            .write_all(&encode(args))
            .expect("write");
    }

    /// One reply line (enough for the simple, error, integer and null replies used here).
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).expect("read a reply line");
        l
    }

    fn call(&mut self, args: &[&str]) -> String {
        self.send(args);
        self.line()
    }

    /// A two-element reply of bulk strings (BLPOP's key and value), as its five lines.
    fn pair(&mut self) -> String {
        (0..5).map(|_| self.line()).collect()
    }

    fn id(&mut self) -> u64 {
        let l = self.call(&["CLIENT", "ID"]);
        l.trim().trim_start_matches(':').parse().expect("CLIENT ID")
    }
}

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> String {
    let text: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn blocked(c: &mut redis::Connection) -> String {
    info_field(c, "clients", "blocked_clients")
}

#[track_caller]
fn wait_blocked(c: &mut redis::Connection, n: usize) {
    let want = n.to_string();
    eventually(&format!("blocked_clients:{n}"), WAIT, || blocked(c) == want);
}

/// CLIENT LIST's flags for client `id`.
fn flags_of(c: &mut redis::Connection, id: u64) -> String {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(c).expect("LIST");
    list.lines()
        .find(|l| l.starts_with(&format!("id={id} ")))
        .and_then(|l| l.split(' ').find_map(|kv| kv.strip_prefix("flags=")))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn blocked_clients_counts_a_blpop_until_it_is_served_unblocked_killed_or_gone() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut admin = proxy.conn();
    assert_eq!(blocked(&mut admin), "0");

    // Served.
    let mut a = Raw::connect(&proxy.addr);
    let id = a.id();
    a.send(&["BLPOP", "intro:q", "0"]);
    wait_blocked(&mut admin, 1);
    assert!(flags_of(&mut admin, id).contains('b'), "CLIENT LIST flags");
    let _: i64 = redis::cmd("LPUSH")
        .arg("intro:q")
        .arg("x")
        .query(&mut admin)
        .unwrap();
    assert_eq!(a.pair(), "*2\r\n$7\r\nintro:q\r\n$1\r\nx\r\n");
    wait_blocked(&mut admin, 0);
    assert_eq!(flags_of(&mut admin, id), "N");

    // Unblocked.
    a.send(&["BLPOP", "intro:q", "0"]);
    wait_blocked(&mut admin, 1);
    let n: i64 = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(a.line(), "*-1\r\n");
    wait_blocked(&mut admin, 0);

    // Gone: the client disconnects while blocked.
    let mut b = Raw::connect(&proxy.addr);
    b.send(&["BRPOP", "intro:other", "0"]);
    wait_blocked(&mut admin, 1);
    drop(b);
    wait_blocked(&mut admin, 0);

    // Killed while blocked.
    let mut k = Raw::connect(&proxy.addr);
    let kid = k.id();
    k.send(&["BLPOP", "intro:q", "0"]);
    wait_blocked(&mut admin, 1);
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(kid)
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    wait_blocked(&mut admin, 0);
}

#[test]
fn client_unblock_gives_redis_s_replies_and_the_client_keeps_working() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut admin = proxy.conn();
    let mut a = Raw::connect(&proxy.addr);
    let id = a.id().to_string();

    // Not blocked, or no such client: 0.
    assert_eq!(
        Raw::connect(&proxy.addr).call(&["CLIENT", "UNBLOCK", &id]),
        ":0\r\n"
    );
    assert_eq!(
        Raw::connect(&proxy.addr).call(&["CLIENT", "UNBLOCK", "999999", "ERROR"]),
        ":0\r\n"
    );

    // TIMEOUT: the command's timeout reply; then the client goes on as usual.
    a.send(&["BLPOP", "intro:unblock", "0"]);
    wait_blocked(&mut admin, 1);
    let mut asker = Raw::connect(&proxy.addr);
    assert_eq!(asker.call(&["CLIENT", "UNBLOCK", &id, "TIMEOUT"]), ":1\r\n");
    assert_eq!(a.line(), "*-1\r\n");
    assert_eq!(a.call(&["SET", "intro:after", "1"]), "+OK\r\n");
    assert_eq!(a.call(&["GET", "intro:after"]), "$1\r\n");
    assert_eq!(a.line(), "1\r\n");

    // ERROR: Redis's UNBLOCKED error.
    a.send(&["XREAD", "BLOCK", "0", "STREAMS", "intro:stream", "$"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(asker.call(&["CLIENT", "UNBLOCK", &id, "ERROR"]), ":1\r\n");
    assert_eq!(
        a.line(),
        "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
    );
    assert_eq!(a.call(&["PING"]), "+PONG\r\n");
    wait_blocked(&mut admin, 0);

    // The dedicated connection went back to the pool in step: the next blocking command on
    // it gets its own reply, not the unblocked one's.
    let _: i64 = redis::cmd("RPUSH")
        .arg("intro:unblock")
        .arg("v")
        .query(&mut admin)
        .unwrap();
    a.send(&["BLPOP", "intro:unblock", "0"]);
    assert_eq!(a.pair(), "*2\r\n$13\r\nintro:unblock\r\n$1\r\nv\r\n");

    // WAIT, which the proxy runs itself (no replicas: it would wait forever).
    a.send(&["WAIT", "1", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(asker.call(&["CLIENT", "UNBLOCK", &id]), ":1\r\n");
    assert_eq!(a.line(), ":0\r\n");
    assert_eq!(a.call(&["PING"]), "+PONG\r\n");

    // Errors as a real node gives them.
    let node = cluster.nodes[0].addr();
    for bad in [
        &["CLIENT", "UNBLOCK", &id, "SOON"][..],
        &["CLIENT", "UNBLOCK", "abc"],
        &["CLIENT", "UNBLOCK", "abc", "nope"],
        &["CLIENT", "UNBLOCK", "1", "TIMEOUT", "x"],
    ] {
        let want = Raw::connect(&node).call(bad);
        assert!(want.starts_with("-ERR"), "{want}");
        assert_eq!(asker.call(bad), want, "{bad:?}");
    }
}

#[test]
fn client_pause_write_holds_writes_until_unpaused_and_lets_reads_through() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut admin = proxy.conn();
    let mut reader = proxy.conn();
    assert_eq!(
        Raw::connect(&proxy.addr).call(&["CLIENT", "PAUSE", "100000", "WRITE"]),
        "+OK\r\n"
    );
    let mut w = Raw::connect(&proxy.addr);
    let wid = w.id();
    // A write, and a read pipelined behind it on the same connection.
    w.send(&["SET", "intro:paused", "v"]);
    w.send(&["GET", "intro:paused"]);
    wait_blocked(&mut admin, 1);
    assert!(flags_of(&mut admin, wid).contains('b'));
    // Reads of other clients go through, and the SET has not run.
    let v: Value = redis::cmd("GET")
        .arg("intro:paused")
        .query(&mut reader)
        .unwrap();
    assert_eq!(v, Value::Nil);
    // A paused client is not blocked in a command: CLIENT UNBLOCK leaves it (as Redis does).
    assert_eq!(
        Raw::connect(&proxy.addr).call(&["CLIENT", "UNBLOCK", &wid.to_string()]),
        ":0\r\n"
    );
    assert_eq!(
        Raw::connect(&proxy.addr).call(&["CLIENT", "UNPAUSE"]),
        "+OK\r\n"
    );
    // The held SET runs, then the GET behind it, in order.
    assert_eq!(w.line(), "+OK\r\n");
    assert_eq!(w.line(), "$1\r\n");
    assert_eq!(w.line(), "v\r\n");
    wait_blocked(&mut admin, 0);

    // A pause that ends by itself releases what it held.
    assert_eq!(
        Raw::connect(&proxy.addr).call(&["CLIENT", "PAUSE", "300", "ALL"]),
        "+OK\r\n"
    );
    assert_eq!(w.call(&["SET", "intro:paused", "w"]), "+OK\r\n");
    let v: String = redis::cmd("GET")
        .arg("intro:paused")
        .query(&mut reader)
        .unwrap();
    assert_eq!(v, "w");

    // Errors as a real node gives them (none of these pauses the node).
    let node = cluster.nodes[0].addr();
    for bad in [
        &["CLIENT", "PAUSE", "abc"][..],
        &["CLIENT", "PAUSE", "-1"],
        &["CLIENT", "PAUSE", "10", "SOMETIMES"],
        &["CLIENT", "PAUSE", "10", "WRITE", "x"],
        &["CLIENT", "UNPAUSE", "x"],
    ] {
        let want = Raw::connect(&node).call(bad);
        assert!(want.starts_with("-ERR"), "{want}");
        assert_eq!(Raw::connect(&proxy.addr).call(bad), want, "{bad:?}");
    }
}

#[test]
fn info_server_has_every_field_a_redis_node_has_with_the_proxy_s_own_values() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let node_text = cluster.command(0, &["INFO", "server"]).expect("node INFO");
    let keys = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_string()))
            .collect()
    };
    let mut c = proxy.conn();
    let text: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    let ours = keys(&text);
    let missing: Vec<String> = keys(&node_text)
        .into_iter()
        .filter(|k| !ours.contains(k))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in\n{text}");
    let field = |name: &str| info_field(&mut proxy.conn(), "server", name);
    assert_eq!(field("process_id"), proxy.pid().to_string());
    assert_eq!(field("tcp_port"), proxy.port.to_string());
    assert_eq!(field("redis_mode"), "standalone");
    assert_eq!(
        field("config_file"),
        proxy.config_path.display().to_string()
    );
    assert!(field("executable").ends_with("slotproxy"));
    let run_id = field("run_id");
    assert!(
        run_id.len() == 40 && run_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{run_id}"
    );
    assert_eq!(field("run_id"), run_id);
    assert_ne!(
        run_id,
        cluster
            .command(0, &["INFO", "server"])
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
    );
}
