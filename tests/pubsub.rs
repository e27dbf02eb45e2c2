//! Pub/sub through the proxy against real clusters: channels, patterns and shard channels,
//! subscribed-mode rules, resubscription after a failover, and the slow-subscriber limit.

mod common;

use common::*;
use redis::Value;
use slotproxy::cluster::slots::key_slot;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A client speaking raw RESP, reading replies with the `redis` crate's parser.
struct Raw {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Raw {
    fn new(proxy: &Proxy) -> Raw {
        let s = proxy.raw();
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Raw {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(out.as_bytes()).unwrap();
    }

    fn read(&mut self) -> Value {
        read_value(&mut self.r).expect("a reply frame")
    }
}

/// Reads one RESP2/RESP3 frame (the subset the proxy sends) into the `redis` crate's `Value`.
fn read_value(r: &mut impl BufRead) -> std::io::Result<Value> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, line.to_string());
    Ok(match kind {
        "+" if rest == "OK" => Value::Okay,
        "+" => Value::SimpleString(rest.to_string()),
        "-" => Value::SimpleString(format!("ERROR {rest}")),
        ":" => Value::Int(rest.parse().map_err(|_| bad())?),
        "_" => Value::Nil,
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Value::BulkString(buf)
        }
        "*" | ">" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let items = (0..n)
                .map(|_| read_value(r))
                .collect::<std::io::Result<Vec<_>>>()?;
            Value::Array(items)
        }
        // A map (HELLO 3's reply), read as its keys and values in turn.
        "%" => {
            let n: usize = rest.parse().map_err(|_| bad())?;
            let items = (0..2 * n)
                .map(|_| read_value(r))
                .collect::<std::io::Result<Vec<_>>>()?;
            Value::Array(items)
        }
        _ => return Err(bad()),
    })
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Push { data: items, .. } => items
            .iter()
            .map(|i| match i {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::Int(n) => n.to_string(),
                Value::Nil => "nil".into(),
                other => format!("{other:?}"),
            })
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|x| x.to_string()).collect()
}

#[test]
fn channels_and_patterns_reach_subscribers_from_every_node() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut sub = Raw::new(&proxy);
    sub.send(&["SUBSCRIBE", "news", "sport"]);
    assert_eq!(strings(&sub.read()), s(&["subscribe", "news", "1"]));
    assert_eq!(strings(&sub.read()), s(&["subscribe", "sport", "2"]));
    sub.send(&["PSUBSCRIBE", "log.*"]);
    assert_eq!(strings(&sub.read()), s(&["psubscribe", "log.*", "3"]));

    // A PUBLISH sent straight to any node reaches the subscriber (cluster pub/sub).
    for i in 0..cluster.nodes.len() {
        let mut n = node_conn(&cluster, i);
        let _: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg(format!("from-{i}"))
            .query(&mut n)
            .unwrap();
        assert_eq!(
            strings(&sub.read()),
            s(&["message", "news", &format!("from-{i}")])
        );
    }
    // And through the proxy, patterns included.
    let mut c = proxy.conn();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("log.app")
        .arg("hello")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        strings(&sub.read()),
        s(&["pmessage", "log.*", "log.app", "hello"])
    );
    let numsub: Vec<Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("news")
        .arg("none")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        strings(&Value::Array(numsub)),
        s(&["news", "1", "none", "0"])
    );
    let channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").query(&mut c).unwrap();
    assert_eq!(
        channels.iter().filter(|c| *c == "news").count(),
        1,
        "{channels:?}"
    );
    let numpat: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut c).unwrap();
    assert_eq!(numpat, 1);

    // Subscribed mode: PING answers as Redis does, other commands are refused with Redis's text.
    sub.send(&["PING"]);
    assert_eq!(strings(&sub.read()), s(&["pong", ""]));
    sub.send(&["GET", "x"]);
    let e = format!("{:?}", sub.read());
    assert!(
        e.contains("ERROR ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET"),
        "{e}"
    );
    // UNSUBSCRIBE with no argument ends every channel subscription, one confirmation each.
    sub.send(&["UNSUBSCRIBE"]);
    let mut got = vec![strings(&sub.read()), strings(&sub.read())];
    got.sort();
    assert_eq!(
        got,
        vec![
            s(&["unsubscribe", "news", "2"]),
            s(&["unsubscribe", "sport", "1"])
        ]
    );
    sub.send(&["PUNSUBSCRIBE"]);
    assert_eq!(strings(&sub.read()), s(&["punsubscribe", "log.*", "0"]));
    // Out of subscribed mode: ordinary commands work again on the same connection.
    sub.send(&["SET", "after", "1"]);
    assert_eq!(sub.read(), Value::Okay);
    // A message published now does not arrive.
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("late")
        .query(&mut c)
        .unwrap();
    sub.send(&["PING"]);
    assert_eq!(sub.read(), Value::SimpleString("PONG".into()));

    // RESET leaves subscribed mode at once.
    sub.send(&["SUBSCRIBE", "x"]);
    assert_eq!(strings(&sub.read()), s(&["subscribe", "x", "1"]));
    sub.send(&["RESET"]);
    assert_eq!(sub.read(), Value::SimpleString("RESET".into()));
    sub.send(&["GET", "after"]);
    assert_eq!(sub.read(), Value::BulkString(b"1".to_vec()));
}

#[test]
fn shard_channels_follow_their_slot_through_a_failover() {
    let mut cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut sub = Raw::new(&proxy);
    sub.send(&["SSUBSCRIBE", "{orders}new", "{orders}paid"]);
    assert_eq!(strings(&sub.read()), s(&["ssubscribe", "{orders}new", "1"]));
    assert_eq!(
        strings(&sub.read()),
        s(&["ssubscribe", "{orders}paid", "2"])
    );
    let e = {
        sub.send(&["SSUBSCRIBE", "a", "b"]);
        sub.read()
    };
    assert!(format!("{e:?}").contains("CROSSSLOT"), "{e:?}");

    let mut c = proxy.conn();
    let n: i64 = redis::cmd("SPUBLISH")
        .arg("{orders}new")
        .arg("o-1")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(strings(&sub.read()), s(&["smessage", "{orders}new", "o-1"]));

    // The shard's master dies; a replica takes over; the subscription follows.
    let slot = key_slot(b"{orders}new");
    let owner = owner_of(&cluster, 0, slot);
    cluster.kill(owner);
    let asked = (0..cluster.nodes.len()).find(|&i| i != owner).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now_owner = std::panic::catch_unwind(|| owner_of(&cluster, asked, slot)).ok();
        if now_owner.is_some_and(|o| o != owner) {
            break;
        }
        assert!(Instant::now() < deadline, "no failover happened");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Publish until the re-subscribed client gets a message (the proxy needs a moment to
    // learn the new owner and subscribe there).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        i += 1;
        let receivers: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
            .arg("{orders}paid")
            .arg(format!("p-{i}"))
            .query(&mut c);
        if let Ok(1) = receivers {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription was not restored"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        strings(&sub.read()),
        s(&["smessage", "{orders}paid", &format!("p-{i}")])
    );
    sub.send(&["SUNSUBSCRIBE"]);
    let mut got = [strings(&sub.read()), strings(&sub.read())];
    got.sort();
    assert_eq!(got[0][0], "sunsubscribe");
    assert_eq!(got.iter().map(|g| g[2].as_str()).min(), Some("0"));
}

#[test]
fn a_subscriber_that_does_not_read_is_cut_alone() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), "max_pubsub_reply_bytes = \"256kb\"", true);
    let mut slow = proxy.raw();
    slow.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nfeed\r\n")
        .unwrap();
    let mut fast = Raw::new(&proxy);
    fast.send(&["SUBSCRIBE", "feed"]);
    assert_eq!(strings(&fast.read()), s(&["subscribe", "feed", "1"]));
    std::thread::sleep(Duration::from_millis(200));
    let mut c = proxy.conn();
    let payload = "x".repeat(16 * 1024);
    // Far more than the socket buffers and the limit hold; the fast subscriber reads along.
    let mut cut = false;
    for i in 0..2000 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("feed")
            .arg(&payload)
            .query(&mut c)
            .unwrap();
        let got = strings(&fast.read());
        assert_eq!(got.len(), 3, "message {i}");
        if i % 20 == 19 {
            let numsub: Vec<Value> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("feed")
                .query(&mut c)
                .unwrap();
            if strings(&Value::Array(numsub)) == s(&["feed", "1"]) {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the slow subscriber was never disconnected");
    let (_, closed) = raw_exchange(&mut slow, b"", Duration::from_secs(10));
    assert!(closed, "the slow subscriber's connection is still open");
    assert!(
        proxy.log().contains("max_pubsub_reply_bytes"),
        "{}",
        proxy.log()
    );
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
}

/// PUBLISH answers how many clients received the message, as one Redis would: subscribers
/// through the proxy are counted, whichever client publishes (two workers, clients spread over
/// the masters by ID), patterns included.
#[test]
fn publish_counts_the_subscribers_of_the_proxy() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut sub = Raw::new(&proxy);
    sub.send(&["SUBSCRIBE", "orders"]);
    assert_eq!(strings(&sub.read()), s(&["subscribe", "orders", "1"]));
    let mut psub = Raw::new(&proxy);
    psub.send(&["PSUBSCRIBE", "ord*"]);
    assert_eq!(strings(&psub.read()), s(&["psubscribe", "ord*", "1"]));
    for i in 0..6 {
        // A new connection each time: a new client ID, and so, before, another master.
        let mut c = proxy.conn();
        let received: i64 = redis::cmd("PUBLISH")
            .arg("orders")
            .arg(format!("m{i}"))
            .query(&mut c)
            .expect("PUBLISH");
        assert_eq!(received, 2, "PUBLISH from client {i}");
        assert_eq!(
            strings(&sub.read()),
            s(&["message", "orders", &format!("m{i}")])
        );
        assert_eq!(
            strings(&psub.read()),
            s(&["pmessage", "ord*", "orders", &format!("m{i}")])
        );
    }
    let mut c = proxy.conn();
    let nobody: i64 = redis::cmd("PUBLISH")
        .arg("elsewhere")
        .arg("x")
        .query(&mut c)
        .expect("PUBLISH");
    assert_eq!(nobody, 0);
}

/// Subscription confirmations are pushes in Redis, which CLIENT REPLY OFF does not silence
/// (RESP2 and RESP3 alike); other replies stay silenced.
#[test]
fn client_reply_off_still_gets_subscription_confirmations() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    for resp3 in [false, true] {
        let mut sub = Raw::new(&proxy);
        if resp3 {
            sub.send(&["HELLO", "3"]);
            let _ = sub.read();
        }
        sub.send(&["CLIENT", "REPLY", "OFF"]);
        sub.send(&["SET", "silenced", "1"]);
        sub.send(&["SUBSCRIBE", "alerts"]);
        assert_eq!(
            strings(&sub.read()),
            s(&["subscribe", "alerts", "1"]),
            "resp3: {resp3}"
        );
        let mut c = proxy.conn();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("alerts")
            .arg("fire")
            .query(&mut c)
            .expect("PUBLISH");
        assert_eq!(strings(&sub.read()), s(&["message", "alerts", "fire"]));
        sub.send(&["UNSUBSCRIBE", "alerts"]);
        assert_eq!(strings(&sub.read()), s(&["unsubscribe", "alerts", "0"]));
    }
}
