//! Transactions through the proxy (MULTI/EXEC/DISCARD/WATCH/UNWATCH) against a real cluster,
//! with the `redis` crate as the client.

mod common;

use common::*;
use redis::{Commands, Connection, Value};
use slotproxy::cluster::slots::key_slot;

fn cmd(c: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut k = redis::cmd(args[0]);
    for a in &args[1..] {
        k.arg(*a);
    }
    k.query(c)
}

fn err_text(r: redis::RedisResult<Value>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// A key in a different slot from `key`.
fn other_slot_key(key: &str) -> String {
    (0..)
        .map(|i| format!("other:{i}"))
        .find(|k| key_slot(k.as_bytes()) != key_slot(key.as_bytes()))
        .expect("a key in another slot")
}

#[test]
fn transactions_with_hash_tags_run_atomically_and_errors_abort() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();

    // The redis crate's atomic pipeline: MULTI, commands, EXEC in one write.
    let (b, got): (i64, String) = redis::pipe()
        .atomic()
        .set("{user:1}name", "ann")
        .ignore()
        .incr("{user:1}visits", 5)
        .get("{user:1}name")
        .query(&mut c)
        .expect("atomic pipeline");
    assert_eq!((b, got.as_str()), (5, "ann"));

    // Step by step, keyless commands first (held until the slot is known).
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    assert_eq!(
        cmd(&mut c, &["PING"]).unwrap(),
        Value::SimpleString("QUEUED".into())
    );
    assert_eq!(
        cmd(&mut c, &["INCR", "{user:1}visits"]).unwrap(),
        Value::SimpleString("QUEUED".into())
    );
    let exec = cmd(&mut c, &["EXEC"]).unwrap();
    assert_eq!(
        exec,
        Value::Array(vec![Value::SimpleString("PONG".into()), Value::Int(6)])
    );

    // An empty transaction, and one with only keyless commands.
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    assert_eq!(cmd(&mut c, &["EXEC"]).unwrap(), Value::Array(vec![]));
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    cmd(&mut c, &["ECHO", "x"]).unwrap();
    assert_eq!(
        cmd(&mut c, &["EXEC"]).unwrap(),
        Value::Array(vec![Value::BulkString(b"x".to_vec())])
    );

    // A second key in another slot: CROSSSLOT at queue time, EXECABORT, nothing written.
    let other = other_slot_key("{user:1}x");
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    cmd(&mut c, &["SET", "{user:1}x", "1"]).unwrap();
    let e = err_text(cmd(&mut c, &["SET", &other, "1"]));
    assert!(e.to_lowercase().contains("crossslot"), "{e}");
    let e = err_text(cmd(&mut c, &["EXEC"]));
    assert!(e.to_lowercase().contains("execabort"), "{e}");
    assert!(!c.exists::<_, bool>("{user:1}x").unwrap());
    assert!(!c.exists::<_, bool>(&other).unwrap());

    // Other queue-time errors abort too, as in Redis; cluster-wide commands cannot be queued.
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    let e = err_text(cmd(&mut c, &["NOSUCHCOMMAND"]));
    assert!(e.contains("unknown command"), "{e}");
    assert!(err_text(cmd(&mut c, &["EXEC"]))
        .to_lowercase()
        .contains("execabort"));
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    let e = err_text(cmd(&mut c, &["KEYS", "*"]));
    assert!(e.contains("cannot be queued in a transaction"), "{e}");
    assert!(err_text(cmd(&mut c, &["EXEC"]))
        .to_lowercase()
        .contains("execabort"));

    // Redis's texts for misuse.
    assert!(err_text(cmd(&mut c, &["EXEC"])).contains("EXEC without MULTI"));
    assert!(err_text(cmd(&mut c, &["DISCARD"])).contains("DISCARD without MULTI"));
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    assert!(err_text(cmd(&mut c, &["MULTI"])).contains("MULTI calls can not be nested"));
    assert!(err_text(cmd(&mut c, &["WATCH", "k"])).contains("WATCH inside MULTI is not allowed"));
    cmd(&mut c, &["SET", "{user:1}discarded", "1"]).unwrap();
    assert_eq!(cmd(&mut c, &["DISCARD"]).unwrap(), Value::Okay);
    assert!(!c.exists::<_, bool>("{user:1}discarded").unwrap());

    // The connection is back to normal: any slot works again.
    let _: () = c.set(&other, "after").unwrap();
    let _: () = c.set("{user:1}x", "after").unwrap();
    assert_eq!(c.get::<_, String>(&other).unwrap(), "after");
}

#[test]
fn watch_detects_a_concurrent_write() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let mut other = proxy.conn();
    let _: () = c.set("{acct}balance", 100).unwrap();

    // Untouched: EXEC runs.
    assert_eq!(
        cmd(&mut c, &["WATCH", "{acct}balance"]).unwrap(),
        Value::Okay
    );
    let v: i64 = c.get("{acct}balance").unwrap();
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    cmd(&mut c, &["SET", "{acct}balance", &(v - 10).to_string()]).unwrap();
    assert_eq!(
        cmd(&mut c, &["EXEC"]).unwrap(),
        Value::Array(vec![Value::Okay])
    );
    assert_eq!(c.get::<_, i64>("{acct}balance").unwrap(), 90);

    // Another client writes between WATCH and EXEC: EXEC returns nil, nothing written.
    assert_eq!(
        cmd(&mut c, &["WATCH", "{acct}balance"]).unwrap(),
        Value::Okay
    );
    let _: () = other.set("{acct}balance", 500).unwrap();
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    cmd(&mut c, &["SET", "{acct}balance", "0"]).unwrap();
    assert_eq!(cmd(&mut c, &["EXEC"]).unwrap(), Value::Nil);
    assert_eq!(c.get::<_, i64>("{acct}balance").unwrap(), 500);

    // UNWATCH forgets the watch; watching keys of two slots is CROSSSLOT.
    assert_eq!(
        cmd(&mut c, &["WATCH", "{acct}balance"]).unwrap(),
        Value::Okay
    );
    assert_eq!(cmd(&mut c, &["UNWATCH"]).unwrap(), Value::Okay);
    let _: () = other.set("{acct}balance", 7).unwrap();
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    cmd(&mut c, &["INCR", "{acct}balance"]).unwrap();
    assert_eq!(
        cmd(&mut c, &["EXEC"]).unwrap(),
        Value::Array(vec![Value::Int(8)])
    );
    let e = err_text(cmd(&mut c, &["WATCH", "{acct}balance", "unrelated"]));
    assert!(e.to_lowercase().contains("crossslot"), "{e}");

    // The redis crate's optimistic-locking helper (WATCH, read, MULTI/EXEC, retry on nil).
    let key = "{acct}counter";
    let _: () = c.set(key, 1).unwrap();
    let (n,): (i64,) = redis::transaction(&mut c, &[key], |con, pipe| {
        let v: i64 = con.get(key)?;
        pipe.set(key, v + 1).ignore().get(key).query(con)
    })
    .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn a_slot_move_or_a_lost_node_aborts_the_transaction_without_a_redirect() {
    let mut cluster = cluster_with_timeout(3, 1, 0, 60_000);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();

    // WATCH pins the connection; then the (empty) slot moves to another master.
    let key = "{moving}k";
    let slot = key_slot(key.as_bytes());
    let src = owner_of(&cluster, 0, slot);
    let dst = (0..cluster.nodes.len())
        .find(|&i| i != src && cluster.nodes[i].is_master)
        .expect("another master");
    assert_eq!(cmd(&mut c, &["WATCH", key]).unwrap(), Value::Okay);
    migrate_slot(&cluster, slot, src, dst);
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    let e = err_text(cmd(&mut c, &["SET", key, "1"]));
    assert!(
        e.contains("transaction's slot is no longer served") && !e.starts_with("MOVED"),
        "{e}"
    );
    let e = err_text(cmd(&mut c, &["EXEC"]));
    assert!(e.to_lowercase().contains("execabort"), "{e}");
    // Outside the transaction the proxy follows the move as usual.
    let _: () = c.set(key, "moved").unwrap();
    assert_eq!(c.get::<_, String>(key).unwrap(), "moved");

    // The transaction's node dies between MULTI and EXEC.
    let key = "{dying}k";
    let owner = owner_of(&cluster, 0, key_slot(key.as_bytes()));
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    cmd(&mut c, &["SET", key, "1"]).unwrap();
    cluster.kill(owner);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let e = err_text(cmd(&mut c, &["EXEC"]));
    assert!(
        e.to_lowercase().contains("execabort") || e.contains("slotproxy"),
        "{e}"
    );
    // The client keeps working for keys on the living nodes.
    let asked = (0..cluster.nodes.len())
        .find(|&i| i != owner)
        .expect("a living node");
    let living = (0..)
        .map(|i| format!("alive:{i}"))
        .find(|k| owner_of(&cluster, asked, key_slot(k.as_bytes())) != owner)
        .expect("a key on a living node");
    let _: () = c.set(&living, "ok").unwrap();
}
