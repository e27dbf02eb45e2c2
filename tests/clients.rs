//! CLIENT LIST / INFO / KILL / NO-EVICT answered from the proxy's own client registry.

mod common;

use common::*;
use redis::Value;
use std::io::Write;
use std::time::{Duration, Instant};

fn list(c: &mut redis::Connection, extra: &[&str]) -> Vec<String> {
    let text: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg(extra)
        .query(c)
        .expect("CLIENT LIST");
    text.lines().map(str::to_string).collect()
}

#[test]
fn client_list_info_and_kill_see_the_proxys_clients() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut app = proxy.conn();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("app")
        .query(&mut app)
        .unwrap();
    let app_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut app).unwrap();
    let mut sub = proxy.raw();
    sub.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n")
        .unwrap();
    let _ = read_line(&sub);
    let mut admin = proxy.conn();
    let admin_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut admin).unwrap();

    let lines = list(&mut admin, &[]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let app_line = lines
        .iter()
        .find(|l| l.starts_with(&format!("id={app_id} ")))
        .expect("the app's line");
    assert!(
        app_line.contains(" name=app ") && app_line.contains(" flags=N "),
        "{app_line}"
    );
    let pubsub = list(&mut admin, &["TYPE", "pubsub"]);
    assert_eq!(pubsub.len(), 1, "{pubsub:?}");
    assert!(pubsub[0].contains(" sub=1 ") && pubsub[0].contains(" flags=P "));
    assert_eq!(list(&mut admin, &["ID", &app_id.to_string()]).len(), 1);
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut admin).unwrap();
    assert!(info.starts_with(&format!("id={admin_id} ")), "{info}");
    let ok: Value = redis::cmd("CLIENT")
        .arg("NO-EVICT")
        .arg("on")
        .query(&mut admin)
        .unwrap();
    assert_eq!(ok, Value::Okay);

    // KILL by ID (a count), and the old address form (OK or Redis's error).
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(app_id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        redis::cmd("PING").query::<String>(&mut app).is_err(),
        "the killed client still works"
    );
    let e = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("10.9.9.9:1")
        .query::<Value>(&mut admin)
        .unwrap_err();
    assert!(e.to_string().contains("No such client"), "{e}");
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while list(&mut admin, &[]).len() != 1 {
        assert!(Instant::now() < deadline, "killed clients are still listed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SKIPME yes by default: a client does not kill itself with a filter.
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(admin_id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn client_reply_off_and_skip_drop_exactly_the_replies_asked() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut raw = proxy.raw();
    let cmd = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        out
    };
    let mut batch = String::new();
    for c in [
        &["CLIENT", "REPLY", "OFF"][..],
        &["SET", "a", "1"],
        &["GET", "a"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "a"],
        &["CLIENT", "REPLY", "SKIP"],
        &["SET", "b", "2"],
        &["GET", "b"],
        &["CLIENT", "REPLY", "MAYBE"],
    ] {
        batch.push_str(&cmd(c));
    }
    raw.write_all(batch.as_bytes()).unwrap();
    let want = "+OK\r\n$1\r\n1\r\n$1\r\n2\r\n-ERR syntax error\r\n";
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while got.len() < want.len() && Instant::now() < deadline {
        use std::io::Read;
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), want);
    let mut c = proxy.conn();
    let v: String = redis::cmd("GET").arg("b").query(&mut c).unwrap();
    assert_eq!(v, "2");
}
