//! Transactions through the proxy (MULTI/EXEC/DISCARD/WATCH/UNWATCH) against a real cluster,
//! with the `redis` crate as the client.

mod common;

use common::*;
use redis::{Commands, Connection, Value};
use slotproxy::cluster::slots::key_slot;
use std::io::{Read, Write};

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

#[test]
fn a_watch_and_commands_outside_multi_keep_redis_s_order_pipelined_or_not() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();

    // One command at a time: cluster-wide commands run while a key is watched. FLUSHALL (and
    // FLUSHDB) outside MULTI invalidate the watch on a key they removed: EXEC returns a null
    // array and runs nothing.
    let key = "{w}k";
    for flush in [
        &["FLUSHALL"][..],
        &["FLUSHDB"][..],
        &["FLUSHALL", "ASYNC"][..],
    ] {
        let _: () = c.set(key, "1").unwrap();
        assert_eq!(cmd(&mut c, &["WATCH", key]).unwrap(), Value::Okay);
        assert_eq!(cmd(&mut c, flush).unwrap(), Value::Okay, "{flush:?}");
        assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
        cmd(&mut c, &["SET", key, "2"]).unwrap();
        assert_eq!(cmd(&mut c, &["EXEC"]).unwrap(), Value::Nil, "{flush:?}");
        assert!(!c.exists::<_, bool>(key).unwrap(), "{flush:?}");
    }

    // Cluster-wide commands that touch no watched key leave the watch in force: EXEC runs.
    let _: () = c.set(key, "1").unwrap();
    assert_eq!(cmd(&mut c, &["WATCH", key]).unwrap(), Value::Okay);
    assert_eq!(cmd(&mut c, &["SCRIPT", "FLUSH"]).unwrap(), Value::Okay);
    assert_eq!(cmd(&mut c, &["DBSIZE"]).unwrap(), Value::Int(1));
    let keys = cmd(&mut c, &["KEYS", "*"]).unwrap();
    assert_eq!(keys, Value::Array(vec![Value::BulkString(key.into())]));
    assert_eq!(cmd(&mut c, &["CONFIG", "RESETSTAT"]).unwrap(), Value::Okay);
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    cmd(&mut c, &["INCR", key]).unwrap();
    assert_eq!(
        cmd(&mut c, &["EXEC"]).unwrap(),
        Value::Array(vec![Value::Int(2)])
    );

    // FLUSHALL of a watched key that did not exist leaves the watch in force, as in Redis.
    let absent = "{w}absent";
    assert_eq!(cmd(&mut c, &["WATCH", absent]).unwrap(), Value::Okay);
    assert_eq!(cmd(&mut c, &["FLUSHALL"]).unwrap(), Value::Okay);
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    cmd(&mut c, &["SET", absent, "x"]).unwrap();
    assert_eq!(
        cmd(&mut c, &["EXEC"]).unwrap(),
        Value::Array(vec![Value::Okay])
    );

    // Pipelined: the proxy runs them in the client's order, though the transaction has a
    // connection of its own.
    let key = "{p}k";
    for round in 0..20 {
        // WATCH, a flush and the transaction in one write: the flush runs after WATCH and
        // before EXEC, as a single Redis runs them, so EXEC finds the watch broken.
        let _: () = c.set(key, "1").unwrap();
        let replies: Vec<Value> = redis::pipe()
            .cmd("WATCH")
            .arg(key)
            .cmd("FLUSHALL")
            .cmd("MULTI")
            .cmd("SET")
            .arg(key)
            .arg("2")
            .cmd("EXEC")
            .query(&mut c)
            .unwrap();
        assert_eq!(replies[4], Value::Nil, "round {round}: {replies:?}");
        assert!(!c.exists::<_, bool>(key).unwrap(), "round {round}");

        // A write before WATCH in the same write does not break the watch; one after does.
        let replies: Vec<Value> = redis::pipe()
            .cmd("SET")
            .arg(key)
            .arg("before")
            .cmd("WATCH")
            .arg(key)
            .cmd("MULTI")
            .cmd("GET")
            .arg(key)
            .cmd("EXEC")
            .query(&mut c)
            .unwrap();
        assert_eq!(
            replies[4],
            Value::Array(vec![Value::BulkString(b"before".to_vec())]),
            "round {round}: {replies:?}"
        );
        let replies: Vec<Value> = redis::pipe()
            .cmd("WATCH")
            .arg(key)
            .cmd("SET")
            .arg(key)
            .arg("after")
            .cmd("MULTI")
            .cmd("SET")
            .arg(key)
            .arg("tx")
            .cmd("EXEC")
            .cmd("GET")
            .arg(key)
            .query(&mut c)
            .unwrap();
        assert_eq!(replies[4], Value::Nil, "round {round}: {replies:?}");
        assert_eq!(
            replies[5],
            Value::BulkString(b"after".to_vec()),
            "round {round}: {replies:?}"
        );

        // A read right after EXEC in the same write sees the transaction's writes.
        let replies: Vec<Value> = redis::pipe()
            .cmd("MULTI")
            .cmd("SET")
            .arg(key)
            .arg(format!("tx{round}"))
            .cmd("EXEC")
            .cmd("GET")
            .arg(key)
            .query(&mut c)
            .unwrap();
        assert_eq!(
            replies[3],
            Value::BulkString(format!("tx{round}").into_bytes()),
            "round {round}: {replies:?}"
        );
    }

    // A client that sends it all and shuts down its writing side still gets every reply, in
    // order, the ones after a request that waited for the earlier replies included.
    let mut raw = proxy.raw();
    let requests = [
        &["SET", "{h}k", "1"][..],
        &["WATCH", "{h}k"],
        &["GET", "{h}k"],
        &["MULTI"],
        &["INCR", "{h}k"],
        &["EXEC"],
        &["GET", "{h}k"],
    ];
    let mut wire = Vec::new();
    for r in requests {
        wire.extend_from_slice(format!("*{}\r\n", r.len()).as_bytes());
        for a in r {
            wire.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    raw.write_all(&wire).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = String::new();
    raw.read_to_string(&mut got).unwrap();
    assert_eq!(
        got,
        "+OK\r\n+OK\r\n$1\r\n1\r\n+OK\r\n+QUEUED\r\n*1\r\n:2\r\n$1\r\n2\r\n"
    );
}

#[test]
fn queue_time_errors_abort_the_transaction_as_in_redis() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let key = "{q}k";
    let queued = Value::SimpleString("QUEUED".into());
    // Each of these is refused at queue time with its own error; EXEC then answers Redis's
    // EXECABORT and runs nothing, the commands queued before and after included.
    let refused: &[(&[&str], &str)] = &[
        (&["NOSUCHCOMMAND", "x"], "unknown command 'NOSUCHCOMMAND'"),
        (&["GET"], "wrong number of arguments for 'get' command"),
        (&["MGET", "{q}k", "{other}k"], "hash to the same slot"),
        (
            &["CONFIG", "SET", "requirepass", "x"],
            "slotproxy refuses CONFIG SET requirepass",
        ),
        (
            &["CONFIG", "SET", "maxmemory", "0"],
            "cannot be queued in a transaction",
        ),
        (&["SUBSCRIBE", "ch"], "cannot be queued in a transaction"),
        (&["KEYS", "*"], "cannot be queued in a transaction"),
    ];
    for (args, text) in refused {
        let _: () = c.set(key, "before").unwrap();
        assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
        assert_eq!(cmd(&mut c, &["SET", key, "queued"]).unwrap(), queued);
        let e = err_text(cmd(&mut c, args));
        assert!(e.contains(text), "{args:?}: {e}");
        assert_eq!(cmd(&mut c, &["INCR", "{q}n"]).unwrap(), queued, "{args:?}");
        let e = err_text(cmd(&mut c, &["EXEC"]));
        assert!(
            e.to_lowercase().contains("execabort")
                && e.contains("Transaction discarded because of previous errors."),
            "{args:?}: {e}"
        );
        assert_eq!(c.get::<_, String>(key).unwrap(), "before", "{args:?}");
        assert!(!c.exists::<_, bool>("{q}n").unwrap(), "{args:?}");
        // The connection is out of the transaction.
        assert!(err_text(cmd(&mut c, &["EXEC"])).contains("EXEC without MULTI"));
    }
    // The refused CONFIG SET reached no node.
    let pass: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("requirepass")
        .query(&mut node_conn(&cluster, 0))
        .unwrap();
    assert_eq!(pass[1], "");

    // Errors Redis answers at once without aborting (WATCH inside MULTI, nested MULTI) do not
    // abort; CONFIG GET can be queued.
    assert_eq!(cmd(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    assert!(err_text(cmd(&mut c, &["WATCH", key])).contains("WATCH inside MULTI"));
    assert!(err_text(cmd(&mut c, &["MULTI"])).contains("can not be nested"));
    assert_eq!(cmd(&mut c, &["SET", key, "ran"]).unwrap(), queued);
    assert_eq!(
        cmd(&mut c, &["CONFIG", "GET", "maxmemory"]).unwrap(),
        queued
    );
    let exec = cmd(&mut c, &["EXEC"]).unwrap();
    let Value::Array(results) = exec else {
        panic!("EXEC: {exec:?}")
    };
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0], Value::Okay);
    assert_eq!(c.get::<_, String>(key).unwrap(), "ran");
}
