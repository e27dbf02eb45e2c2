//! Malformed, oversized and hostile input: each gets its defined answer, and the proxy keeps
//! serving everyone else.

mod common;

use common::*;
use redis::Commands;
use std::io::{Read, Write};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[test]
fn protocol_errors_get_redis_texts_and_close_the_connection() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n+PING\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$600000000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"SET \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut s = proxy.raw();
        // A request before the bad one is still answered, in order.
        let mut bytes = b"PING\r\n".to_vec();
        bytes.extend_from_slice(input);
        let (got, closed) = raw_exchange(&mut s, &bytes, T);
        assert_eq!(
            got,
            format!("+PONG\r\n{want}"),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        assert!(closed, "connection must close after a protocol error");
    }
    let mut c = proxy.conn();
    let _: () = c.set("still", "fine").expect("proxy still serves");
}

#[test]
fn two_million_arguments_are_refused() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut s = proxy.raw();
    let (got, closed) = raw_exchange(&mut s, b"*2000000\r\n$4\r\nMSET\r\n", T);
    assert!(got.starts_with("-ERR Protocol error: too many arguments in request (2000000 > max_request_args 1048576)"), "{got}");
    assert!(closed);
    // Within the limit, a large request works: MSET of 100 000 keys across all slots.
    let mut c = proxy.conn();
    let pairs: Vec<(String, usize)> = (0..100_000).map(|i| (format!("big:{i}"), i)).collect();
    let _: () = c.mset(&pairs).expect("large MSET");
    let v: usize = c.get("big:99999").expect("GET");
    assert_eq!(v, 99_999);
}

#[test]
fn a_client_that_never_reads_is_cut_off_alone() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "max_pending_reply_bytes = \"1mb\"\nmax_pipeline = 64",
        true,
    );
    let mut c = proxy.conn();
    let big = "x".repeat(256 * 1024);
    let _: () = c.set("bigval", &big).expect("SET big value");
    // The greedy client asks for the 256 KiB value over and over and never reads.
    let mut greedy = proxy.raw();
    greedy.set_write_timeout(Some(Duration::from_secs(5))).ok();
    let req = b"*2\r\n$3\r\nGET\r\n$6\r\nbigval\r\n".repeat(2000);
    let writer = std::thread::spawn(move || {
        let _ = greedy.write_all(&req);
        greedy
    });
    // Meanwhile everyone else is served.
    for i in 0..200 {
        let _: () = c.set(format!("other:{i}"), i).expect("other client SET");
        let v: i64 = c.get(format!("other:{i}")).expect("other client GET");
        assert_eq!(v, i);
    }
    let mut greedy = writer.join().expect("writer thread");
    // The proxy has closed the greedy connection: reading drains what was sent, then EOF.
    greedy.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match greedy.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("greedy client was not disconnected: {e}"),
        }
    }
    assert!(
        total < 2000 * big.len(),
        "the proxy buffered every reply ({total} bytes)"
    );
    assert!(
        proxy.log().contains("max_pending_reply_bytes"),
        "{}",
        proxy.log()
    );
}

#[test]
fn max_clients_is_enforced_with_redis_error() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), "max_clients = 2", true);
    let mut a = proxy.conn();
    let mut b = proxy.raw();
    let (_, _) = (
        a.get::<_, Option<String>>("x").expect("first"),
        b.write_all(b"PING\r\n"),
    );
    assert_eq!(read_line(&b), "+PONG\r\n");
    let mut third = proxy.raw();
    let (got, closed) = raw_exchange(&mut third, b"PING\r\n", T);
    assert_eq!(got, "-ERR max number of clients reached\r\n");
    assert!(closed);
    drop(b);
    // A slot frees up once a client leaves.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = proxy.raw();
        let (got, _) = raw_exchange(&mut s, b"PING\r\nQUIT\r\n", T);
        if got.starts_with("+PONG") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no client slot freed: {got}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn inline_commands_and_quit() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut s = proxy.raw();
    let (got, closed) = raw_exchange(
        &mut s,
        b"SET \"inline key\" 'a b'\r\nGET \"inline key\"\r\nQUIT\r\nPING\r\n",
        T,
    );
    assert_eq!(got, "+OK\r\n$3\r\na b\r\n+OK\r\n");
    assert!(closed);
}
