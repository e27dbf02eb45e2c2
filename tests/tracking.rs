//! Client-side caching through the proxy, against a real cluster: CLIENT TRACKING in its
//! modes, invalidation pushes and redirected messages, the tracking commands' answers
//! compared with a real node's, and the flush a tracking client gets when a master fails.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A client speaking raw RESP that renders every frame as compact text, keeping its type:
/// `>[invalidate,[k]]` for a push, `*[...]` for an array, `%{a:b}` for a map, `~[...]` for a
/// set, `$v` for a bulk string, `+OK`, `-ERR ...`, `:1`, `_` for RESP3 null, `$nil` / `*nil`.
struct Raw {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        Raw {
            w: s.try_clone().expect("clone"),
            r: BufReader::new(s),
        }
    }

    fn to_proxy(proxy: &Proxy) -> Raw {
        Raw::connect(&proxy.addr)
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(out.as_bytes()).expect("write");
    }

    fn read(&mut self) -> String {
        render(&mut self.r).expect("a frame")
    }

    /// Sends and reads one frame.
    fn call(&mut self, args: &[&str]) -> String {
        self.send(args);
        self.read()
    }

    /// Reads frames until one equals `want`; returns the frames before it.
    fn read_until(&mut self, want: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let f = self.read();
            if f == want {
                return before;
            }
            before.push(f);
        }
    }
}

fn render(r: &mut dyn BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    let n = || rest.parse::<i64>().unwrap_or(-1);
    let items = |r: &mut dyn BufRead, count: i64| -> std::io::Result<Vec<String>> {
        let mut v = Vec::new();
        for _ in 0..count {
            v.push(render(r)?);
        }
        Ok(v)
    };
    Ok(match kind {
        "+" | "-" | ":" => line.to_string(),
        "_" => "_".into(),
        "$" if n() < 0 => "$nil".into(),
        "$" => {
            let mut buf = vec![0u8; n() as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n() as usize);
            format!("${}", String::from_utf8_lossy(&buf))
        }
        "*" if n() < 0 => "*nil".into(),
        "*" | ">" | "~" => format!("{kind}[{}]", items(r, n())?.join(",")),
        "%" => {
            let v = items(r, 2 * n())?;
            let pairs: Vec<String> = v.chunks(2).map(|p| format!("{}:{}", p[0], p[1])).collect();
            format!("%{{{}}}", pairs.join(","))
        }
        _ => format!("?{line}"),
    })
}

/// A RESP3 connection to the proxy (the HELLO reply read and dropped).
fn resp3(proxy: &Proxy) -> Raw {
    let mut c = Raw::to_proxy(proxy);
    let hello = c.call(&["HELLO", "3"]);
    assert!(hello.starts_with('%'), "{hello}");
    c
}

fn set(c: &mut redis::Connection, k: &str, v: &str) {
    let _: () = redis::cmd("SET").arg(k).arg(v).query(c).expect("SET");
}

#[test]
fn a_resp3_client_hears_about_the_keys_it_read() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = resp3(&proxy);
    assert_eq!(c.call(&["CLIENT", "TRACKING", "ON"]), "+OK");
    assert_eq!(c.call(&["GET", "k"]), "_");
    let mut w = proxy.conn();
    // A key it did not read, then one it did.
    set(&mut w, "other", "1");
    set(&mut w, "k", "1");
    assert_eq!(c.read(), ">[$invalidate,*[$k]]");
    // The invalidation ended the tracking of k until it is read again.
    set(&mut w, "k", "2");
    assert_eq!(c.call(&["GET", "k"]), "$2");
    set(&mut w, "k", "3");
    assert_eq!(c.read(), ">[$invalidate,*[$k]]");
    // Off: nothing more.
    assert_eq!(c.call(&["CLIENT", "TRACKING", "OFF"]), "+OK");
    assert_eq!(c.call(&["GET", "k"]), "$3");
    set(&mut w, "k", "4");
    assert_eq!(c.call(&["PING"]), "+PONG");
}

#[test]
fn bcast_with_a_prefix_hears_every_write_under_it() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = resp3(&proxy);
    assert_eq!(
        c.call(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:"]),
        "+OK"
    );
    let mut w = proxy.conn();
    set(&mut w, "order:1", "x");
    set(&mut w, "user:1", "x");
    assert_eq!(c.read(), ">[$invalidate,*[$user:1]]");
    set(&mut w, "user:2", "x");
    assert_eq!(c.read(), ">[$invalidate,*[$user:2]]");
    assert!(c
        .call(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "use"])
        .contains("overlaps with an existing prefix"));
}

#[test]
fn optin_tracks_only_reads_after_client_caching_yes() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = resp3(&proxy);
    assert!(c
        .call(&["CLIENT", "CACHING", "yes"])
        .starts_with("-ERR CLIENT CACHING can be called only"));
    assert_eq!(c.call(&["CLIENT", "TRACKING", "ON", "OPTIN"]), "+OK");
    assert_eq!(c.call(&["GET", "a"]), "_");
    assert_eq!(c.call(&["CLIENT", "CACHING", "yes"]), "+OK");
    assert_eq!(c.call(&["GET", "b"]), "_");
    let mut w = proxy.conn();
    set(&mut w, "a", "1");
    set(&mut w, "b", "1");
    assert_eq!(c.read(), ">[$invalidate,*[$b]]");
    assert!(c
        .call(&["CLIENT", "CACHING", "no"])
        .contains("only valid when tracking is enabled in OPTOUT mode"));
}

#[test]
fn noloop_keeps_a_client_s_own_writes_from_it() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = resp3(&proxy);
    assert_eq!(c.call(&["CLIENT", "TRACKING", "ON", "NOLOOP"]), "+OK");
    assert_eq!(c.call(&["GET", "k"]), "_");
    assert_eq!(c.call(&["GET", "j"]), "_");
    assert_eq!(c.call(&["SET", "k", "mine"]), "+OK");
    let mut w = proxy.conn();
    set(&mut w, "j", "theirs");
    let before = c.read_until(">[$invalidate,*[$j]]");
    assert!(before.is_empty(), "{before:?}");
    c.send(&["PING"]);
    let before = c.read_until("+PONG");
    assert!(before.is_empty(), "{before:?}");
}

#[test]
fn a_resp2_client_redirects_to_a_subscriber_of_redis_invalidate() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut sub = Raw::to_proxy(&proxy);
    let id = sub.call(&["CLIENT", "ID"]);
    let id = id.trim_start_matches(':').to_string();
    assert_eq!(
        sub.call(&["SUBSCRIBE", "__redis__:invalidate"]),
        "*[$subscribe,$__redis__:invalidate,:1]"
    );
    let mut c = Raw::to_proxy(&proxy);
    assert_eq!(
        c.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", "999999"]),
        "-ERR The client ID you want redirect to does not exist"
    );
    assert_eq!(
        c.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id]),
        "+OK"
    );
    assert_eq!(c.call(&["CLIENT", "GETREDIR"]), format!(":{id}"));
    assert_eq!(c.call(&["GET", "k"]), "$nil");
    let mut w = proxy.conn();
    set(&mut w, "k", "v");
    assert_eq!(sub.read(), "*[$message,$__redis__:invalidate,*[$k]]");
    // The redirecting client itself gets nothing: its next reply is its own.
    assert_eq!(c.call(&["PING"]), "+PONG");
}

#[test]
fn getredir_and_trackinginfo_answer_like_a_node() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let script: &[&[&str]] = &[
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "ON", "OPTIN", "NOLOOP"],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "ON", "OPTOUT"],
        &["CLIENT", "TRACKING", "ON", "BCAST"],
        &["CLIENT", "TRACKING", "OFF"],
        &["CLIENT", "TRACKING", "ON", "PREFIX", "a"],
        &[
            "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "b", "PREFIX", "a",
        ],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "bb"],
        &[
            "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "c", "PREFIX", "cd",
        ],
        &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a"],
        &["CLIENT", "TRACKING", "MAYBE"],
        &["CLIENT", "CACHING", "yes"],
    ];
    for hello in [None, Some("3")] {
        let mut answers = Vec::new();
        for addr in [proxy.addr.clone(), cluster.nodes[0].addr()] {
            let mut c = Raw::connect(&addr);
            if let Some(v) = hello {
                c.call(&["HELLO", v]);
            }
            answers.push(script.iter().map(|cmd| c.call(cmd)).collect::<Vec<_>>());
        }
        assert_eq!(answers[0], answers[1], "RESP{}", hello.unwrap_or("2"));
    }
}

#[test]
fn a_failover_of_a_read_key_s_master_invalidates_it_by_name_then_flushes() {
    let mut cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut c = resp3(&proxy);
    assert_eq!(c.call(&["CLIENT", "TRACKING", "ON"]), "+OK");
    assert_eq!(c.call(&["GET", "k"]), "_");
    let slot = slotproxy::cluster::slots::key_slot(b"k");
    let owner = owner_of(&cluster, 0, slot);
    cluster.kill(owner);
    // The invalidation connection to the dead master drops: the client is told to forget the
    // key it read (by name: some libraries ignore a null); then the slot changes owner, and
    // with no key left to name, it gets a null (forget everything).
    let before = c.read_until(">[$invalidate,*[$k]]");
    assert!(before.is_empty(), "{before:?}");
    c.read_until(">[$invalidate,_]");
    let asked = (0..cluster.nodes.len()).find(|&i| i != owner).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::panic::catch_unwind(|| owner_of(&cluster, asked, slot)).ok() == Some(owner) {
        assert!(Instant::now() < deadline, "no failover happened");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Tracking goes on with the new master: a read, a write, an invalidation.
    let mut w = proxy.conn();
    eventually(
        "a write through the new master",
        Duration::from_secs(30),
        || {
            redis::cmd("SET")
                .arg("k")
                .arg("v")
                .query::<()>(&mut w)
                .is_ok()
        },
    );
    c.send(&["GET", "k"]);
    c.read_until("$v");
    set(&mut w, "k", "w");
    c.read_until(">[$invalidate,*[$k]]");
}
