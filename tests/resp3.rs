//! RESP3 clients (HELLO 3) beside RESP2 clients through the proxy, against a real cluster.

mod common;

use common::*;
use redis::{Commands, Value};
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn resp3_and_resp2_clients_side_by_side() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c2 = proxy.conn();
    let mut c3 = redis::Client::open(format!("redis://{}/?protocol=resp3", proxy.addr))
        .unwrap()
        .get_connection()
        .expect("a RESP3 connection (HELLO 3)");
    let _: () = c2.hset("h", "f", "v").unwrap();
    // The same reply in each protocol's own types.
    let v2: Value = redis::cmd("HGETALL").arg("h").query(&mut c2).unwrap();
    let v3: Value = redis::cmd("HGETALL").arg("h").query(&mut c3).unwrap();
    assert!(matches!(v2, Value::Array(_)), "{v2:?}");
    assert!(matches!(v3, Value::Map(_)), "{v3:?}");
    let d: Value = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("1.5")
        .query(&mut c3)
        .unwrap();
    assert_eq!(d, Value::BulkString(b"1.5".to_vec()));
    // Merged replies and the proxy's own use RESP3 nulls.
    let _: () = c3.set("a", "1").unwrap();
    let m: Value = redis::cmd("MGET")
        .arg("a")
        .arg("nope")
        .arg("b")
        .query(&mut c3)
        .unwrap();
    assert_eq!(
        m,
        Value::Array(vec![
            Value::BulkString(b"1".to_vec()),
            Value::Nil,
            Value::Nil
        ])
    );
    let name: Value = redis::cmd("CLIENT").arg("GETNAME").query(&mut c3).unwrap();
    assert_eq!(name, Value::Nil);
    // Transactions and blocking commands keep the protocol.
    let r: Value = redis::pipe().atomic().hgetall("h").query(&mut c3).unwrap();
    assert!(
        matches!(&r, Value::Array(v) if matches!(v.first(), Some(Value::Map(_)))),
        "{r:?}"
    );
    let _: i64 = c3.rpush("l", "x").unwrap();
    let b: Value = redis::cmd("BLPOP").arg("l").arg(1).query(&mut c3).unwrap();
    assert!(matches!(b, Value::Array(_)), "{b:?}");

    // Raw bytes: HELLO 3 answers a map, pub/sub arrives as push frames, and ordinary
    // commands still work on a subscribed RESP3 connection.
    let mut raw = proxy.raw();
    raw.write_all(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n").unwrap();
    let hello = read_some(&mut raw);
    assert!(
        hello.starts_with("%7\r\n") && hello.contains("proto\r\n:3"),
        "{hello}"
    );
    raw.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n")
        .unwrap();
    let got = read_some(&mut raw);
    assert_eq!(got, ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    raw.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n").unwrap();
    assert_eq!(read_some(&mut raw), "$1\r\n1\r\n");
    let _: i64 = redis::cmd("PUBLISH")
        .arg("ch")
        .arg("hi")
        .query(&mut c2)
        .unwrap();
    assert_eq!(
        read_some(&mut raw),
        ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
    );
    // RESET goes back to RESP2, as in Redis.
    raw.write_all(b"*1\r\n$5\r\nRESET\r\n").unwrap();
    assert_eq!(read_some(&mut raw), "+RESET\r\n");
    raw.write_all(b"*2\r\n$7\r\nHGETALL\r\n$1\r\nh\r\n")
        .unwrap();
    assert_eq!(read_some(&mut raw), "*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
}

/// Reads what arrives within a short while (one reply in these exchanges).
fn read_some(s: &mut std::net::TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).unwrap_or(0);
    let mut out = buf[..n].to_vec();
    // A reply may arrive in more than one segment; collect what follows at once.
    s.set_read_timeout(Some(Duration::from_millis(100))).ok();
    while let Ok(m) = s.read(&mut buf) {
        if m == 0 {
            break;
        }
        out.extend_from_slice(&buf[..m]);
    }
    String::from_utf8_lossy(&out).into_owned()
}
