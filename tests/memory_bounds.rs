//! Memory one client can make the proxy hold: unauthenticated clients get Redis's limits, a
//! declared bulk length reserves nothing up front, queues and caches are bounded. Measured on
//! the real proxy process (/proc/PID/status) against real redis-server nodes.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

/// `VmSize` and `VmRSS` of a process, in kB.
fn vm_kb(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let get = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (get("VmSize:"), get("VmRSS:"))
}

/// A field of the proxy's `INFO stats`.
fn info_stat(c: &mut redis::Connection, name: &str) -> u64 {
    let text: String = redis::cmd("INFO")
        .arg("stats")
        .query(c)
        .expect("INFO stats");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in INFO: {text}"))
}

#[test]
fn unauthenticated_clients_get_redis_s_request_limits() {
    let cluster = cluster(3, 1, 0);
    let users = "[[users]]\nname = \"default\"\npassword = \"pw\"\nlevel = \"admin\"\n";
    let proxy = Proxy::start_with(&cluster.seeds(), users, false);
    // The texts are redis-server 7.0's with requirepass (checked against one).
    let cases: &[(&[u8], &str)] = &[
        (
            b"*11\r\n",
            "-ERR Protocol error: unauthenticated multibulk length\r\n",
        ),
        (
            b"*2\r\n$16385\r\n",
            "-ERR Protocol error: unauthenticated bulk length\r\n",
        ),
        // A wrong password does not lift the limits.
        (
            b"*2\r\n$4\r\nAUTH\r\n$1\r\nx\r\n*11\r\n",
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n-ERR Protocol error: unauthenticated multibulk length\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut s = proxy.raw();
        let (got, closed) = raw_exchange(&mut s, input, T);
        assert_eq!(got, *want, "input {:?}", String::from_utf8_lossy(input));
        assert!(closed, "connection must close after a protocol error");
    }
    // At the limits, the request is read (and refused for want of AUTH, not closed).
    let mut s = proxy.raw();
    let mut at_limit = b"*10\r\n$6\r\nEXISTS\r\n".to_vec();
    for i in 0..8 {
        at_limit.extend_from_slice(format!("$4\r\n{{t}}{i}\r\n").as_bytes());
    }
    at_limit.extend_from_slice(b"$16384\r\n");
    at_limit.extend_from_slice(&[b'x'; 16384]);
    at_limit.extend_from_slice(b"\r\n");
    let (got, closed) = raw_exchange(&mut s, &at_limit, Duration::from_millis(500));
    assert_eq!(got, "-NOAUTH Authentication required.\r\n");
    assert!(!closed);
    // After AUTH in the same pipeline, the ordinary limits apply.
    let mut s = proxy.raw();
    let mut after = b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*11\r\n$6\r\nEXISTS\r\n".to_vec();
    for i in 0..10 {
        after.extend_from_slice(format!("$4\r\n{{t}}{i}\r\n").as_bytes());
    }
    after.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$3\r\n{t}\r\n$16385\r\n");
    after.extend_from_slice(&[b'x'; 16385]);
    after.extend_from_slice(b"\r\n*2\r\n$6\r\nSTRLEN\r\n$3\r\n{t}\r\n");
    let (got, closed) = raw_exchange(&mut s, &after, Duration::from_millis(500));
    assert_eq!(got, "+OK\r\n:0\r\n+OK\r\n:16385\r\n");
    assert!(!closed);
}

#[test]
fn a_huge_bulk_header_reserves_no_memory_up_front() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    // Warm up: every worker has served clients, so what follows measures the clients alone.
    let warm: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = proxy.raw();
            let (got, _) = raw_exchange(&mut s, b"PING\r\n", Duration::from_millis(200));
            assert_eq!(got, "+PONG\r\n");
            s
        })
        .collect();
    drop(warm);
    let input_before = info_stat(&mut c, "total_net_input_bytes");
    let (size_before, rss_before) = vm_kb(proxy.pid());
    // Eight clients each announce a 512 MB argument (just under proto-max-bulk-len), then,
    // once the proxy has read that, send a few bytes of it (the read that would reserve).
    let header: &[u8] = b"*1\r\n$536870000\r\n";
    let some: &[u8] = b"some bytes";
    let mut clients: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = proxy.raw();
            s.write_all(header).expect("write");
            s
        })
        .collect();
    let mut want = input_before + 8 * header.len() as u64;
    let read_all = |c: &mut redis::Connection, want: u64| {
        // A safety bound, not a timing assertion.
        let deadline = Instant::now() + Duration::from_secs(10);
        while info_stat(c, "total_net_input_bytes") < want {
            assert!(
                Instant::now() < deadline,
                "the proxy did not read the bytes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    read_all(&mut c, want);
    for s in &mut clients {
        s.write_all(some).expect("write");
    }
    want += 8 * some.len() as u64;
    read_all(&mut c, want);
    let (size_after, rss_after) = vm_kb(proxy.pid());
    let grew_mb = |a: u64, b: u64| a.saturating_sub(b) / 1024;
    assert!(
        grew_mb(size_after, size_before) < 64,
        "VmSize grew from {size_before} kB to {size_after} kB"
    );
    assert!(
        grew_mb(rss_after, rss_before) < 64,
        "VmRSS grew from {rss_before} kB to {rss_after} kB"
    );
    drop(clients);
    let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
    assert_eq!(pong, "PONG");
}

/// Queues `n` keyless commands (ECHO of `arg`) in a transaction that names no key yet; the
/// replies, as text ("QUEUED" or the error).
fn queue_keyless(c: &mut redis::Connection, n: usize, arg: &[u8]) -> Vec<String> {
    (0..n)
        .map(|_| match redis::cmd("ECHO").arg(arg).query::<String>(c) {
            Ok(s) => s,
            Err(e) => e.to_string(),
        })
        .collect()
}

#[test]
fn a_transaction_queue_before_its_slot_is_known_is_bounded() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "max_pipeline = 16\nmax_pending_reply_bytes = \"64kb\"",
        true,
    );
    let mut c = proxy.conn();
    // By count: the 17th keyless command is refused, and the transaction is discarded.
    let _: () = redis::cmd("MULTI").query(&mut c).expect("MULTI");
    let got = queue_keyless(&mut c, 20, b"x");
    assert!(got[..16].iter().all(|r| r == "QUEUED"), "{got:?}");
    assert!(
        got[16].contains("too many commands queued before the transaction named a key"),
        "{got:?}"
    );
    // Like Redis after an error at queue time: later commands are QUEUED, EXEC aborts.
    assert!(got[17..].iter().all(|r| r == "QUEUED"), "{got:?}");
    let _: String = redis::cmd("ECHO").arg("k").query(&mut c).expect("QUEUED");
    let err = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c)
        .expect_err("EXEC must abort");
    assert_eq!(err.kind(), redis::ErrorKind::ExecAbortError, "{err}");
    // By bytes: 10 KB arguments, 64 KB in all.
    let _: () = redis::cmd("MULTI").query(&mut c).expect("MULTI");
    let got = queue_keyless(&mut c, 8, &[b'x'; 10 * 1024]);
    assert!(got[..6].iter().all(|r| r == "QUEUED"), "{got:?}");
    assert!(got[6].contains("max_pending_reply_bytes 65536"), "{got:?}");
    let err = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c)
        .expect_err("EXEC must abort");
    assert_eq!(err.kind(), redis::ErrorKind::ExecAbortError, "{err}");
    // Within the bounds a transaction still works, and the connection is usable after.
    let _: () = redis::cmd("MULTI").query(&mut c).expect("MULTI");
    assert!(queue_keyless(&mut c, 16, b"y")
        .iter()
        .all(|r| r == "QUEUED"));
    let _: String = redis::cmd("SET")
        .arg("{tx}k")
        .arg("v")
        .query(&mut c)
        .expect("QUEUED");
    let results: Vec<redis::Value> = redis::cmd("EXEC").query(&mut c).expect("EXEC");
    assert_eq!(results.len(), 17);
    let v: String = redis::cmd("GET").arg("{tx}k").query(&mut c).expect("GET");
    assert_eq!(v, "v");
}

/// `total_connections_received` summed over the cluster's nodes, asked on `conns` (one open
/// connection per node, so asking opens nothing).
fn node_connections(conns: &mut [redis::Connection]) -> u64 {
    conns
        .iter_mut()
        .map(|c| info_stat(c, "total_connections_received"))
        .sum()
}

#[test]
fn pipelined_info_opens_no_connection_per_call() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("info:{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET");
    }
    let mut nodes: Vec<redis::Connection> = (0..cluster.nodes.len())
        .map(|i| node_conn(&cluster, i))
        .collect();
    let before = node_connections(&mut nodes);
    let mut pipe = redis::pipe();
    for _ in 0..1000 {
        pipe.cmd("INFO");
    }
    let replies: Vec<String> = pipe.query(&mut c).expect("1000 INFOs");
    assert_eq!(replies.len(), 1000);
    for r in &replies {
        // The masters' figures are there: every master answered.
        assert!(r.contains("slotproxy_info_unreachable_masters:0"), "{r}");
        assert!(r.contains("db0:keys="), "{r}");
    }
    let keys: u64 = replies[999]
        .lines()
        .find_map(|l| l.strip_prefix("db0:keys=")?.split(',').next()?.parse().ok())
        .expect("db0 keys");
    assert_eq!(keys, 20);
    let opened = node_connections(&mut nodes) - before;
    assert!(opened < 100, "1000 INFOs opened {opened} node connections");
}

#[test]
fn replies_waiting_behind_an_unanswered_request_count_toward_the_limit() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), "max_pending_reply_bytes = \"1mb\"", true);
    let mut c = proxy.conn();
    let big = vec![b'v'; 100 * 1024];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut c)
        .expect("SET");
    // A request that is never answered, then 10 MB of replies behind it.
    let heads: [&[u8]; 2] = [b"BLPOP never:pushed 0\r\n", b"SET k v\r\nWAIT 99 0\r\n"];
    for head in heads {
        let mut s = proxy.raw();
        let mut bytes = head.to_vec();
        for _ in 0..100 {
            bytes.extend_from_slice(b"GET big\r\n");
        }
        let (got, closed) = raw_exchange(&mut s, &bytes, Duration::from_secs(10));
        assert!(
            closed,
            "{:?}: client still connected holding 10 MB",
            String::from_utf8_lossy(head)
        );
        assert!(got.len() < 1024 * 1024, "{} bytes written", got.len());
    }
    assert_eq!(info_stat(&mut c, "slotproxy_clients_cut_output"), 2);
    let v: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).expect("GET");
    assert_eq!(v.len(), big.len());
}

#[test]
fn a_resp3_subscriber_s_messages_behind_an_unanswered_request_count_toward_its_limit() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), "max_pubsub_reply_bytes = \"1mb\"", true);
    let mut c = proxy.conn();
    let mut s = proxy.raw();
    s.write_all(b"HELLO 3\r\nSUBSCRIBE news\r\nBLPOP never:pushed 0\r\n")
        .expect("write");
    // Wait (bounded) until the subscription is in place (NUMSUB asks every node).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("news")
            .query(&mut c)
            .expect("PUBSUB NUMSUB");
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the subscriber never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let big = vec![b'm'; 100 * 1024];
    for _ in 0..20 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg(&big)
            .query(&mut c)
            .expect("PUBLISH");
    }
    let (got, closed) = raw_exchange(&mut s, b"", Duration::from_secs(10));
    assert!(
        closed,
        "subscriber still connected holding 2 MB: {} {:?}",
        got.len(),
        &got[..got.len().min(600)]
    );
    assert!(got.len() < 1024 * 1024, "{} bytes written", got.len());
    assert_eq!(info_stat(&mut c, "slotproxy_clients_cut_output"), 1);
}

#[test]
fn an_idle_connection_that_sent_nothing_holds_no_read_buffer() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let clients = |c: &mut redis::Connection| -> u64 {
        let text: String = redis::cmd("INFO").arg("clients").query(c).expect("INFO");
        text.lines()
            .find_map(|l| l.strip_prefix("connected_clients:")?.trim().parse().ok())
            .expect("connected_clients")
    };
    // The connections that waited for the proxy to start may still be closing: count from
    // the moment this one is the only client, or the total below could never be reached.
    eventually(
        "the start-up probes to leave",
        Duration::from_secs(10),
        || clients(&mut c) == 1,
    );
    let base = 1;
    let (_, rss_before) = vm_kb(proxy.pid());
    // Under the usual 1024 open files of both processes.
    const N: u64 = 800;
    let idle: Vec<TcpStream> = (0..N).map(|_| proxy.raw()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients(&mut c) < base + N {
        assert!(
            Instant::now() < deadline,
            "the proxy did not accept them all"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, rss_after) = vm_kb(proxy.pid());
    let per_conn = rss_after.saturating_sub(rss_before) * 1024 / N;
    // About 2.0 KiB today (session, task, registry entry); a 16 KB read buffer allocated
    // up front made it about 6 KiB.
    assert!(
        per_conn < 4096,
        "{per_conn} bytes of RSS per idle connection"
    );
    eprintln!("{per_conn} bytes of RSS per idle connection");
    drop(idle);
}

#[test]
fn a_connection_between_requests_holds_no_more_than_a_new_one() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut warm = proxy.raw();
    warm.write_all(b"SET warm 1\r\n").expect("write");
    assert_eq!(read_line(&warm), "+OK\r\n");
    // Under the usual 1024 open files of both processes.
    const N: u64 = 800;
    let (_, rss_before) = vm_kb(proxy.pid());
    let mut idle: Vec<TcpStream> = (0..N).map(|_| proxy.raw()).collect();
    // A worker takes a connection some time after the kernel accepted it: wait until the proxy
    // counts them all (and the warm and admin clients), so the reading includes every session.
    let mut admin = proxy.conn();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut admin)
            .expect("INFO");
        let connected = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if connected >= N + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the proxy never saw {N} clients");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, rss_new) = vm_kb(proxy.pid());
    for (i, s) in idle.iter_mut().enumerate() {
        // One request each, answered before the next client speaks: every session has read,
        // been answered and gone idle.
        s.write_all(format!("SET key:{i} v\r\n").as_bytes())
            .expect("write");
        assert_eq!(read_line(s), "+OK\r\n", "client {i}");
    }
    let (_, rss_used) = vm_kb(proxy.pid());
    let new_per_conn = rss_new.saturating_sub(rss_before) * 1024 / N;
    let extra_per_conn = rss_used.saturating_sub(rss_new) * 1024 / N;
    eprintln!(
        "{new_per_conn} bytes of RSS per new connection, {extra_per_conn} more once it has \
         been used"
    );
    // A used connection keeps no read buffer (about 6.5 KiB more when it did) and no
    // per-request vectors or reply slot (about 700 bytes more when it did): those stay with
    // the worker, for the clients busy at the moment.
    assert!(
        extra_per_conn < 256,
        "an idle connection that was used holds {extra_per_conn} bytes more than a new one"
    );
    drop(idle);
}

/// Waits (at most 20 s) until the proxy's RSS satisfies `ok`; the last reading, in kB.
fn rss_until(proxy: &Proxy, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, rss) = vm_kb(proxy.pid());
        if ok(rss) {
            return rss;
        }
        assert!(Instant::now() < deadline, "RSS never {what}: {rss} kB");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_slow_reader_s_backlog_goes_back_to_the_system_once_it_is_gone() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let big = vec![b'x'; 1 << 20];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big[..])
        .query(&mut c)
        .expect("SET big");
    let (_, base) = vm_kb(proxy.pid());
    // Clients that ask for 40 MB of replies each and read none of them (under the 64 MB
    // max_pending_reply_bytes): the proxy holds the replies.
    let request = b"GET big\r\n".repeat(40);
    let mut readers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = proxy.raw();
            s.write_all(&request).expect("write");
            s
        })
        .collect();
    rss_until(&proxy, "grew with the backlog", |rss| {
        rss > base + 100 * 1024
    });

    // One reader catches up and stays; the others leave.
    let mut catching_up = readers.pop().expect("a reader");
    drop(readers);
    let want = 40 * ((1 << 20) + "$1048576\r\n\r\n".len());
    catching_up.set_read_timeout(Some(T)).ok();
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 20];
    while got < want {
        match std::io::Read::read(&mut catching_up, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert_eq!(got, want, "the reader that caught up got every reply");
    // Freed memory is handed back to the system (glibc keeps it for reuse otherwise: RSS
    // stayed at its peak before).
    let after = rss_until(&proxy, "came back down", |rss| rss < base + 48 * 1024);
    // The trim task looks once a second; the RSS may have come down before it ran (the
    // allocator unmaps its largest blocks by itself), so wait for the count.
    eventually("a memory trim to run", Duration::from_secs(10), || {
        info_stat(&mut c, "slotproxy_memory_trims") >= 1
    });
    eprintln!("RSS {base} kB before, {after} kB after the backlogs were gone");
    let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
    assert_eq!(pong, "PONG");
}
