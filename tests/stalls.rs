//! One client must not hold up the others, nor itself: pipelines past `max_pipeline`, a
//! half-closed client, requests left in flight by clients that leave, blocking commands hidden
//! behind option names, dedicated connections hoarded by one client.

mod common;

use common::*;
use redis::Commands;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Reads until `want` bytes arrived, the connection closes or `T` passes without data.
fn read_bytes(s: &mut TcpStream, want: usize) -> Vec<u8> {
    s.set_read_timeout(Some(T)).ok();
    let mut out = Vec::with_capacity(want);
    let mut buf = vec![0u8; 64 * 1024];
    while out.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

#[test]
fn pipelines_longer_than_max_pipeline_get_every_reply() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    {
        let mut s = proxy.raw();
        // Replies the proxy composes itself are ready at once: nothing wakes the session
        // when they drain below the cap.
        for n in [1025usize, 5000] {
            s.write_all(&b"PING\r\n".repeat(n)).expect("write");
            let got = read_bytes(&mut s, n * 7);
            assert_eq!(got.len(), n * 7, "{n} PINGs: got {} bytes", got.len());
            assert_eq!(got, b"+PONG\r\n".repeat(n), "{n} PINGs");
        }
        // Backend replies, past the cap, mixed with the proxy's own.
        let mut req = Vec::new();
        let mut want = Vec::new();
        for i in 0..3000 {
            if i % 3 == 0 {
                req.extend_from_slice(b"PING\r\n");
                want.extend_from_slice(b"+PONG\r\n");
            } else {
                req.extend_from_slice(format!("SET stall:{i} {i}\r\n").as_bytes());
                want.extend_from_slice(b"+OK\r\n");
            }
        }
        s.write_all(&req).expect("write");
        let got = read_bytes(&mut s, want.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        // The connection still works.
        s.write_all(b"ECHO still\r\n").expect("write");
        assert_eq!(read_bytes(&mut s, 11), b"$5\r\nstill\r\n");
    }
    // Closed: the session ended and gave back its client slot.
    proxy.scrape_until("no client connections", Duration::from_secs(20), |t| {
        t.contains("slotproxy_client_connections")
            && metric(t, "slotproxy_client_connections") == 0.0
    });
}

#[test]
fn a_half_closed_client_gets_its_replies_before_the_proxy_closes() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut s = proxy.raw();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$2\r\nv1\r\nGET half\r\nPING\r\n")
        .expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let (got, closed) = raw_exchange(&mut s, b"", T);
    assert_eq!(got, "+OK\r\n$2\r\nv1\r\n+PONG\r\n");
    assert!(closed, "the proxy closes after the replies");

    // A blocked command is not waited for: the client may be gone altogether.
    let mut s = proxy.raw();
    s.write_all(b"BLPOP half:list 0\r\n").expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let (got, closed) = raw_exchange(&mut s, b"", T);
    assert_eq!(got, "");
    assert!(closed, "a half-closed blocked client is closed");

    let mut c = proxy.conn();
    let v: String = c.get("half").expect("GET");
    assert_eq!(v, "v1");
}

#[test]
fn requests_in_flight_returns_to_zero_when_clients_leave() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut sent = 0usize;
    let mut send = |bytes: &[u8], half_close: bool| {
        let mut s = proxy.raw();
        s.write_all(bytes).expect("write");
        sent += bytes.len();
        if half_close {
            s.shutdown(Shutdown::Write).expect("shutdown");
        }
        raw_exchange(&mut s, b"", Duration::from_millis(300));
    };
    // Replies the client asked not to get.
    send(
        b"CLIENT REPLY OFF\r\nSET f:1 1\r\nGET f:1\r\nCLIENT REPLY SKIP\r\n",
        false,
    );
    send(b"CLIENT REPLY SKIP\r\nSET f:2 2\r\nPING\r\n", false);
    // A client that leaves while blocked.
    send(b"BLPOP f:list 0\r\n", true);
    // A protocol error after a pipeline.
    send(b"PING\r\nSET f:3 3\r\n*1\r\n+PING\r\n", false);
    // A long pipeline the client never reads.
    send(&b"GET f:1\r\n".repeat(5000), true);
    let text = proxy.scrape_until("every client gone", Duration::from_secs(20), |t| {
        t.contains("slotproxy_client_connections")
            && metric(t, "slotproxy_client_connections") == 0.0
            && metric(t, "slotproxy_client_received_bytes_total") >= sent as f64
    });
    assert_eq!(
        metric(&text, "slotproxy_requests_in_flight"),
        0.0,
        "in flight on an idle proxy:\n{text}"
    );
}

/// One command on a fresh raw connection; its first reply line.
fn one_request(proxy: &Proxy, request: &[u8]) -> String {
    let mut s = proxy.raw();
    s.set_read_timeout(Some(T)).ok();
    s.write_all(request).expect("write");
    read_line(&s).trim_end().to_string()
}

#[test]
fn a_busy_script_does_not_take_its_node_down_and_script_kill_reaches_it() {
    let cluster = cluster(3, 1, 0);
    // One worker: every client shares its one connection to the busy node.
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "workers = 1\nrequest_timeout = \"20s\"",
        true,
    );
    let owner = owner_of(&cluster, 0, slotproxy::cluster::slots::key_slot(b"busy"));
    let mut direct = node_conn(&cluster, owner);
    // The node answers other connections BUSY after 100 ms of script (Redis's default is 5 s).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("lua-time-limit")
        .arg("100")
        .query(&mut direct)
        .expect("CONFIG SET lua-time-limit");
    let start_script = |direct: &mut redis::Connection| {
        let mut looping = proxy.raw();
        looping.set_read_timeout(Some(T)).ok();
        looping
            .write_all(b"EVAL \"while true do end\" 1 busy\r\n")
            .expect("write");
        eventually(
            "the script to make the node BUSY",
            Duration::from_secs(10),
            || {
                redis::cmd("GET")
                    .arg("{busy}:other")
                    .query::<Option<String>>(direct)
                    .is_err_and(|e| e.code() == Some("BUSY"))
            },
        );
        looping
    };

    // SCRIPT KILL does not queue behind the script on the shared connection.
    let looping = start_script(&mut direct);
    assert_eq!(one_request(&proxy, b"SCRIPT KILL\r\n"), "+OK");
    let reply = read_line(&looping);
    assert!(
        reply.contains("Script killed"),
        "the script's client got {reply:?}"
    );

    // A script that outlives request_timeout: the requests written behind it time out, and
    // the node is not declared down; the next client gets the node's own BUSY at once.
    let _: () = proxy_query(
        &mut proxy.conn(),
        &["CONFIG", "SET", "request_timeout", "1500ms"],
    )
    .expect("PROXY CONFIG SET request_timeout");
    let looping = start_script(&mut direct);
    let mut behind = proxy.raw();
    behind.set_read_timeout(Some(T)).ok();
    behind.write_all(b"GET {busy}:other\r\n").expect("write");
    for (who, s) in [("script", &looping), ("request behind it", &behind)] {
        let reply = read_line(s);
        assert!(
            reply.contains("no reply within"),
            "the {who}'s client got {reply:?}"
        );
    }
    for _ in 0..5 {
        let reply = one_request(&proxy, b"GET {busy}:other\r\n");
        assert!(reply.starts_with("-BUSY"), "a client got {reply:?}");
    }
    assert_eq!(one_request(&proxy, b"SCRIPT KILL\r\n"), "+OK");
    let mut c = proxy.conn();
    eventually("a SET after the script", Duration::from_secs(10), || {
        c.set::<_, _, ()>("{busy}:after", 1).is_ok()
    });
    let got: i64 = c.get("{busy}:after").expect("GET after the kill");
    assert_eq!(got, 1);
    assert_eq!(
        one_request(&proxy, b"SCRIPT KILL\r\n"),
        "-NOTBUSY No scripts in execution right now."
    );
}
