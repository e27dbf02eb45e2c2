//! Scripts and functions through the proxy against a real cluster: routing by keys, NOSCRIPT
//! repaired on a node that lost (or never had) a loaded script, functions on every master.

mod common;

use common::*;
use redis::{Commands, Value};
use slotproxy::cluster::slots::key_slot;

#[test]
fn evalsha_survives_a_node_without_the_script_and_functions_reach_every_master() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let body = "return redis.call('INCR', KEYS[1])";
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query(&mut c)
        .unwrap();
    assert_eq!(sha, slotproxy::route::scripts::sha1_hex(body.as_bytes()));
    let key = "counter";
    let owner = owner_of(&cluster, 0, key_slot(key.as_bytes()));
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(key)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    // The owner forgets its scripts (as a promoted replica or a new master never had them).
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut node_conn(&cluster, owner))
        .unwrap();
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(key)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2, "the proxy loads the script again and retries");
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut node_conn(&cluster, owner))
        .unwrap();
    assert_eq!(exists, vec![1]);
    // A script the proxy never saw: Redis's own NOSCRIPT.
    let e = redis::cmd("EVALSHA")
        .arg("0000000000000000000000000000000000000000")
        .arg(1)
        .arg(key)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOSCRIPT"), "{e}");
    // Keys of two slots: CROSSSLOT; no keys: any master.
    let e = redis::cmd("EVAL")
        .arg("return 1")
        .arg(2)
        .arg("a")
        .arg("b")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("crossslot"), "{e}");
    let one: i64 = redis::cmd("EVAL")
        .arg("return 1")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(one, 1);

    // Functions: loaded on every master, callable for keys anywhere, listed, deleted.
    let lib = "#!lua name=mylib\nredis.register_function('setget', function(keys, args) redis.call('SET', keys[1], args[1]) return redis.call('GET', keys[1]) end)";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut c)
        .unwrap();
    assert_eq!(name, "mylib");
    for k in ["a", "b", "c", "d", "e"] {
        let v: String = redis::cmd("FCALL")
            .arg("setget")
            .arg(1)
            .arg(k)
            .arg(format!("v-{k}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, format!("v-{k}"));
        assert_eq!(c.get::<_, String>(k).unwrap(), format!("v-{k}"));
    }
    let list = format!(
        "{:?}",
        redis::cmd("FUNCTION")
            .arg("LIST")
            .query::<Value>(&mut c)
            .unwrap()
    );
    assert!(list.contains("mylib"), "{list}");
    let e = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("mylib")
        .query(&mut c)
        .unwrap();
    for i in 0..cluster.nodes.len() {
        let l: Vec<Value> = redis::cmd("FUNCTION")
            .arg("LIST")
            .query(&mut node_conn(&cluster, i))
            .unwrap();
        assert!(l.is_empty(), "node {i} still lists functions");
    }
    // Nothing is running: every master says NOTBUSY, and so does the proxy.
    let e = redis::cmd("SCRIPT")
        .arg("KILL")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("notbusy"), "{e}");
}

#[test]
fn script_flush_through_the_proxy_makes_evalsha_answer_noscript() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 'flushed?'")
        .query(&mut c)
        .expect("SCRIPT LOAD");
    let v: String = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(0)
        .query(&mut c)
        .expect("EVALSHA");
    assert_eq!(v, "flushed?");
    for flush in [&["SCRIPT", "FLUSH"][..], &["SCRIPT", "FLUSH", "SYNC"]] {
        let _: () = redis::cmd(flush[0])
            .arg(&flush[1..])
            .query(&mut c)
            .expect("SCRIPT FLUSH");
        // As Redis: the script is gone; the proxy does not load it again behind the client.
        let e = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(0)
            .query::<Value>(&mut c)
            .unwrap_err();
        assert_eq!(e.code(), Some("NOSCRIPT"), "{e}");
        let exists: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query(&mut c)
            .expect("SCRIPT EXISTS");
        assert_eq!(exists, vec![0]);
        // Loaded again, it runs again.
        let again: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return 'flushed?'")
            .query(&mut c)
            .expect("SCRIPT LOAD");
        assert_eq!(again, sha);
    }
}
