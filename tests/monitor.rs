//! MONITOR through the proxy, against a real cluster: every client's commands (on both
//! workers) in Redis's line format, checked against what a Redis node itself prints for the
//! same requests; redaction; the admin level; what a monitoring connection refuses; a
//! monitor that stops reading is cut alone.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A raw RESP connection that reads line by line (MONITOR lines are simple strings).
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Conn {
            w: s.try_clone().expect("clone"),
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out).expect("write");
    }

    fn cmd(&mut self, args: &[&str]) {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
    }

    /// The next line, without its CRLF (empty at EOF).
    fn line(&mut self) -> String {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l).expect("a line");
        String::from_utf8_lossy(&l)
            .trim_end_matches("\r\n")
            .to_string()
    }

    /// The next line that is not a MONITOR line (a reply of this connection's own).
    fn reply(&mut self) -> String {
        loop {
            let l = self.line();
            if monitor_line(&l).is_none() {
                return l;
            }
        }
    }

    /// Reads one whole reply (any RESP2/RESP3 type), skipping MONITOR lines before it.
    fn skip_reply(&mut self) {
        let head = self.reply();
        let n = |h: &str| h[1..].parse::<i64>().expect("a length");
        match head.as_bytes().first() {
            Some(b'$' | b'=' | b'!') if n(&head) >= 0 => {
                let mut body = vec![0u8; n(&head) as usize + 2];
                std::io::Read::read_exact(&mut self.r, &mut body).expect("a bulk body");
            }
            Some(b'*' | b'~' | b'>') => (0..n(&head).max(0)).for_each(|_| self.skip_reply()),
            Some(b'%') => (0..2 * n(&head).max(0)).for_each(|_| self.skip_reply()),
            Some(_) => {}
            None => panic!("the connection closed"),
        }
    }

    /// The next MONITOR line, as (client address, arguments text).
    fn next_line(&mut self) -> (String, String) {
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "the connection closed");
            if let Some(parts) = monitor_line(&l) {
                return parts;
            }
        }
    }

    /// Sends MONITOR and expects `+OK`.
    fn monitor(&mut self) {
        self.cmd(&["MONITOR"]);
        assert_eq!(self.reply(), "+OK");
    }
}

/// Splits `+<seconds>.<6 digits> [0 <addr>] <args>` into (addr, args); None for anything
/// else.
fn monitor_line(l: &str) -> Option<(String, String)> {
    let rest = l.strip_prefix('+')?;
    let (stamp, rest) = rest.split_once(' ')?;
    let (secs, micros) = stamp.split_once('.')?;
    if secs.is_empty()
        || !secs.bytes().all(|c| c.is_ascii_digit())
        || micros.len() != 6
        || !micros.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let rest = rest.strip_prefix("[0 ")?;
    let (addr, args) = rest.split_once("] ")?;
    Some((addr.to_string(), args.to_string()))
}

/// The `addr=` a connection has in CLIENT INFO: the address monitors show for it.
fn client_addr(c: &mut redis::Connection) -> String {
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query(c)
        .expect("CLIENT INFO");
    info.split(' ')
        .find_map(|f| f.strip_prefix("addr="))
        .expect("addr= in CLIENT INFO")
        .to_string()
}

/// Each worker's `commands` counter from PROXY INFO.
fn worker_commands(c: &mut redis::Connection) -> Vec<u64> {
    proxy_lines(c, &["INFO"])
        .expect("PROXY INFO")
        .iter()
        .filter(|l| l.starts_with("worker "))
        .map(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            let at = words
                .iter()
                .position(|w| *w == "commands")
                .expect("commands");
            words[at + 1].parse().expect("a count")
        })
        .collect()
}

/// A key whose slot node `index` owns.
fn owned_by(cluster: &slotproxy::admin::localcluster::LocalCluster, index: usize) -> String {
    (0..)
        .map(|i| format!("m{i}"))
        .find(|k| {
            owner_of(
                cluster,
                0,
                slotproxy::cluster::slots::key_slot(k.as_bytes()),
            ) == index
        })
        .expect("a key")
}

/// What a Redis node's own MONITOR prints for each request (the arguments part), sent on a
/// connection of its own to node `index` (requests that run there: keyless, or keys it owns).
fn node_lines(
    cluster: &slotproxy::admin::localcluster::LocalCluster,
    index: usize,
    requests: &[Vec<Vec<u8>>],
) -> Vec<String> {
    let n = &cluster.nodes[index];
    let addr = format!("{}:{}", n.ip, n.port);
    let mut mon = Conn::new(&addr);
    mon.monitor();
    let mut c = Conn::new(&addr);
    let mut c_addr = None;
    requests
        .iter()
        .map(|r| {
            let args: Vec<&[u8]> = r.iter().map(|a| a.as_slice()).collect();
            c.send(&args);
            let (from, text) = mon.next_line();
            assert_eq!(*c_addr.get_or_insert_with(|| from.clone()), from);
            text
        })
        .collect()
}

#[test]
fn a_monitor_sees_every_client_s_commands_in_order_escaped_as_redis_does() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut admin = proxy.conn();
    let mut mon = Conn::new(&proxy.addr);
    mon.monitor();
    let mut a = proxy.conn();
    let mut b = proxy.conn();
    let (a_addr, b_addr) = (client_addr(&mut a), client_addr(&mut b));
    // Commands Redis flags `admin` (CLIENT LIST here) are not shown, as on Redis.
    let mut id_conn = proxy.conn();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut id_conn)
        .unwrap();
    let monitors = list.lines().filter(|l| l.contains(" flags=O ")).count();
    assert_eq!(
        monitors, 1,
        "CLIENT LIST shows the monitor with flag O:\n{list}"
    );

    let binary: &[u8] = b"a\"b\\c\n\r\t\x07\x08\x00\xff\x7f \x1b~";
    let before = worker_commands(&mut admin);
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("a:{i}"))
            .arg(i)
            .query(&mut a)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("b:{i}"))
            .arg(i)
            .query(&mut b)
            .unwrap();
    }
    let echoed: Vec<u8> = redis::cmd("ECHO").arg(binary).query(&mut a).unwrap();
    assert_eq!(echoed, binary);
    let after = worker_commands(&mut admin);
    // The two clients' traffic went through both workers (they are placed on the least busy
    // worker), so lines reached the monitor from its own thread and from the other one.
    assert_eq!(before.len(), 2);
    for w in 0..2 {
        assert!(
            after[w] - before[w] >= 20,
            "worker {w}: {before:?} -> {after:?}"
        );
    }

    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    while from_a.len() < 22 || from_b.len() < 21 {
        let (addr, text) = mon.next_line();
        assert!(
            !text.contains("\"LIST\""),
            "an admin command was shown: {text}"
        );
        if addr == a_addr {
            from_a.push(text);
        } else if addr == b_addr {
            from_b.push(text);
        }
    }
    assert_eq!(
        (&*from_a[0], &*from_b[0]),
        (r#""CLIENT" "INFO""#, r#""CLIENT" "INFO""#)
    );
    for i in 0..20 {
        assert_eq!(from_a[i + 1], format!("\"SET\" \"a:{i}\" \"{i}\""));
        assert_eq!(from_b[i + 1], format!("\"SET\" \"b:{i}\" \"{i}\""));
    }
    // The binary argument reads exactly as a Redis node prints it.
    let node = node_lines(&cluster, 0, &[vec![b"ECHO".to_vec(), binary.to_vec()]]);
    assert_eq!(from_a[21], node[0]);
    assert_eq!(
        from_a[21],
        r#""ECHO" "a\"b\\c\n\r\t\a\b\x00\xff\x7f \x1b~""#
    );
}

const USERS: &str = r#"
[[users]]
name = "admin"
password = "adm"
level = "admin"

[[users]]
name = "writer"
password = "w"
level = "write"

[[users]]
name = "scoped"
password = "s"
level = "admin"
read_prefixes = ["app:"]
"#;

#[test]
fn passwords_are_redacted_as_a_redis_node_redacts_them() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), USERS, false);
    let mut admin = redis::Client::open(format!("redis://admin:adm@{}/", proxy.addr))
        .and_then(|c| c.get_connection())
        .expect("admin connection");
    eventually(
        "the proxy to serve every slot",
        Duration::from_secs(20),
        || serves_all_slots(&mut admin),
    );
    let mut mon = Conn::new(&proxy.addr);
    mon.cmd(&["AUTH", "admin", "adm"]);
    assert_eq!(mon.reply(), "+OK");
    mon.monitor();
    // A key node 0 owns, so that MIGRATE runs there when sent to it directly.
    let key = owned_by(&cluster, 0);
    let requests: Vec<Vec<Vec<u8>>> = [
        &["AUTH", "writer", "w"][..],
        &["AUTH", "nope"],
        &["HELLO", "2", "AUTH", "admin", "adm", "SETNAME", "n"],
        &[
            "MIGRATE",
            "127.0.0.1",
            "1",
            "",
            "0",
            "10",
            "COPY",
            "AUTH2",
            "u",
            "pw",
            "KEYS",
            &key,
        ],
        &["MIGRATE", "127.0.0.1", "1", &key, "0", "10", "AUTH", "pw"],
    ]
    .iter()
    .map(|r| r.iter().map(|a| a.as_bytes().to_vec()).collect())
    .collect();
    let node = node_lines(&cluster, 0, &requests);
    let mut c = Conn::new(&proxy.addr);
    for r in &requests {
        let args: Vec<&[u8]> = r.iter().map(|a| a.as_slice()).collect();
        c.send(&args);
        c.skip_reply();
    }
    // A PROXY command shows its arguments, but not a password it carries.
    c.cmd(&["PROXY", "CONFIG", "SET", "backend_password", "s3cret"]);
    assert!(c.reply().starts_with('-'));
    let shown: Vec<String> = (0..requests.len() + 1).map(|_| mon.next_line().1).collect();
    assert_eq!(shown[..requests.len()], node[..]);
    assert_eq!(shown[0], r#""AUTH" "(redacted)" "(redacted)""#);
    assert_eq!(shown[1], r#""AUTH" "(redacted)""#);
    assert_eq!(
        shown[2],
        r#""HELLO" "2" "AUTH" "(redacted)" "(redacted)" "SETNAME" "n""#
    );
    assert_eq!(
        shown[5],
        r#""PROXY" "CONFIG" "SET" "backend_password" "(redacted)""#
    );
    assert!(!shown
        .iter()
        .any(|l| l.contains("adm\"") || l.contains("s3cret")));
}

#[test]
fn monitor_needs_the_admin_level_and_no_namespace() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), USERS, false);
    let mut c = Conn::new(&proxy.addr);
    c.cmd(&["MONITOR"]);
    assert_eq!(c.reply(), "-NOAUTH Authentication required.");
    c.cmd(&["AUTH", "writer", "w"]);
    assert_eq!(c.reply(), "+OK");
    c.cmd(&["MONITOR"]);
    assert_eq!(
        c.reply(),
        "-NOPERM this user has no permissions to run the 'monitor' command"
    );
    c.cmd(&["AUTH", "scoped", "s"]);
    assert_eq!(c.reply(), "+OK");
    c.cmd(&["MONITOR"]);
    assert!(c
        .reply()
        .starts_with("-NOPERM this user has no permissions to run the 'monitor' command"));
    c.cmd(&["AUTH", "admin", "adm"]);
    assert_eq!(c.reply(), "+OK");
    c.monitor();
}

#[test]
fn a_monitor_connection_refuses_keyspace_commands_as_redis_does() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let n = &cluster.nodes[0];
    let mut node_mon = Conn::new(&format!("{}:{}", n.ip, n.port));
    node_mon.monitor();
    // A key the node owns (another one would get MOVED first).
    let key = owned_by(&cluster, 0);
    node_mon.cmd(&["GET", &key]);
    let refusal = node_mon.reply();
    assert_eq!(refusal, "-ERR Replica can't interact with the keyspace");

    let mut mon = Conn::new(&proxy.addr);
    mon.monitor();
    for cmd in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["EVAL", "return 1", "0"],
        &["PUBLISH", "c", "m"],
        &["KEYS", "*"],
    ] {
        mon.cmd(cmd);
        assert_eq!(mon.reply(), refusal, "{cmd:?}");
    }
    // Other commands run, and a second MONITOR is ignored without a reply, as on Redis.
    mon.cmd(&["MONITOR"]);
    mon.cmd(&["PING"]);
    assert_eq!(mon.reply(), "+PONG");
    // CLIENT PAUSE does not hold a monitor (Redis never pauses one): it may even UNPAUSE.
    let mut pauser = proxy.conn();
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "ALL"])
        .query(&mut pauser)
        .unwrap();
    mon.cmd(&["PING"]);
    assert_eq!(mon.reply(), "+PONG");
    mon.cmd(&["CLIENT", "UNPAUSE"]);
    assert_eq!(mon.reply(), "+OK");
    mon.cmd(&["ECHO", "e"]);
    assert_eq!(mon.reply(), "$1");
    assert_eq!(mon.reply(), "e");
    // RESET ends monitoring: a command another client sends next is not shown.
    mon.cmd(&["RESET"]);
    assert_eq!(mon.reply(), "+RESET");
    let mut other = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("after-reset")
        .arg(1)
        .query(&mut other)
        .unwrap();
    mon.cmd(&["PING"]);
    assert_eq!(mon.line(), "+PONG");
    mon.cmd(&["GET", "after-reset"]);
    assert_eq!(
        (mon.line(), mon.line()),
        ("$1".to_string(), "1".to_string())
    );
    // QUIT: +OK, then the connection closes.
    let mut quitter = Conn::new(&proxy.addr);
    quitter.monitor();
    quitter.cmd(&["QUIT"]);
    assert_eq!(quitter.reply(), "+OK");
    loop {
        let l = quitter.line();
        if l.is_empty() {
            break;
        }
        assert!(monitor_line(&l).is_some(), "{l}");
    }
}

#[test]
fn a_monitor_that_does_not_read_is_cut_alone() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), "max_pubsub_reply_bytes = \"256kb\"", true);
    let mut slow = Conn::new(&proxy.addr);
    slow.monitor();
    let mut fast = Conn::new(&proxy.addr);
    fast.monitor();
    let mut c = proxy.conn();
    let mut admin = proxy.conn();
    let payload = "x".repeat(16 * 1024);
    let monitors = |admin: &mut redis::Connection| {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
        list.lines().filter(|l| l.contains(" flags=O ")).count()
    };
    assert_eq!(monitors(&mut admin), 2);
    // Far more than the socket buffers and the limit hold; the fast monitor reads along.
    let mut cut = false;
    for i in 0..2000 {
        let _: () = redis::cmd("SET")
            .arg("big")
            .arg(&payload)
            .query(&mut c)
            .unwrap();
        let (_, text) = fast.next_line();
        assert!(text.starts_with("\"SET\" \"big\" \"xxx"), "line {i}");
        if i % 20 == 19 && monitors(&mut admin) == 1 {
            cut = true;
            break;
        }
    }
    assert!(cut, "the slow monitor was never disconnected");
    let (_, closed) = raw_exchange(&mut slow.w, b"", Duration::from_secs(10));
    assert!(closed, "the slow monitor's connection is still open");
    assert!(
        proxy.log().contains("max_pubsub_reply_bytes"),
        "{}",
        proxy.log()
    );
    // Everyone else goes on.
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    assert_eq!(fast.next_line().1, r#""SET" "k" "v""#);
}
