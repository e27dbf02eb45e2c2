//! A client library's own cache through the proxy: redis-rs's server-assisted client-side cache
//! (RESP3, `CLIENT TRACKING ON` sent by the library when it connects) must serve repeated reads
//! from memory and drop a key as soon as another client changes it, whichever master holds the
//! key. The raw-protocol tests of tracking are in `tracking.rs`.

mod common;

use common::*;
use redis_cached::caching::CacheConfig;
use redis_cached::AsyncConnectionConfig;
use std::time::Duration;

/// Keys whose slots are spread over the three masters of a 3-master cluster.
const KEYS: [&str; 6] = ["a", "b", "c", "user:1", "user:2", "{x}y"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A multiplexed RESP3 connection to the proxy with the library's cache switched on.
async fn cached(proxy: &Proxy) -> redis_cached::aio::MultiplexedConnection {
    let client = redis_cached::Client::open(format!("redis://{}/?protocol=resp3", proxy.addr))
        .expect("client");
    let config = AsyncConnectionConfig::new().set_cache_config(CacheConfig::new());
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("a cached connection through the proxy")
}

async fn get(c: &mut redis_cached::aio::MultiplexedConnection, k: &str) -> Option<String> {
    redis_cached::cmd("GET")
        .arg(k)
        .query_async(c)
        .await
        .expect("GET through the cache")
}

/// Reads `k` until it is `want`: an invalidation is a push the library handles when its
/// connection next reads, so a read right after another client's write may still be served
/// from memory. A cache that never drops the key fails after 5 s.
async fn reads_eventually(
    c: &mut redis_cached::aio::MultiplexedConnection,
    k: &str,
    want: Option<&str>,
) {
    let mut seen = get(c, k).await;
    for _ in 0..100 {
        if seen.as_deref() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = get(c, k).await;
    }
    assert_eq!(seen.as_deref(), want, "{k} kept its cached value");
}

#[test]
fn a_library_cache_serves_repeats_and_drops_what_another_client_changed() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut writer = proxy.conn();
    for k in KEYS {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("v1")
            .query(&mut writer)
            .expect("SET");
    }
    runtime().block_on(async {
        let mut c = cached(&proxy).await;
        for k in KEYS {
            assert_eq!(get(&mut c, k).await.as_deref(), Some("v1"), "{k}");
        }
        // Second reads come from the library's memory.
        for k in KEYS {
            assert_eq!(get(&mut c, k).await.as_deref(), Some("v1"), "{k}");
        }
        let s = c.get_cache_statistics().expect("statistics");
        assert_eq!((s.miss, s.hit), (KEYS.len(), KEYS.len()), "{s:?}");

        // Another client changes every key (on every master); the cache must not keep serving
        // v1 for any of them. The invalidation is a push, so it may arrive a moment after the
        // writer's reply: poll (each read that misses fetches from the proxy).
        for k in KEYS {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg("v2")
                .query(&mut writer)
                .expect("SET");
        }
        for k in KEYS {
            reads_eventually(&mut c, k, Some("v2")).await;
        }
        let s = c.get_cache_statistics().expect("statistics");
        assert!(s.invalidate >= KEYS.len(), "{s:?}");

        // A deleted key reads as missing, not as its cached value.
        let _: () = redis::cmd("DEL").arg("a").query(&mut writer).expect("DEL");
        reads_eventually(&mut c, "a", None).await;

        // Several keys written by one command (one slot, one node, one event-loop turn):
        // each must be dropped, though the library reads only the first key of a message.
        let group = ["{t}1", "{t}2", "{t}3", "{t}4"];
        for k in group {
            assert_eq!(get(&mut c, k).await, None, "{k}");
            assert_eq!(get(&mut c, k).await, None, "{k}");
        }
        let _: () = redis::cmd("MSET")
            .arg(&[("{t}1", "m"), ("{t}2", "m"), ("{t}3", "m"), ("{t}4", "m")])
            .query(&mut writer)
            .expect("MSET");
        for k in group {
            reads_eventually(&mut c, k, Some("m")).await;
        }

        // And the re-read values are cached again.
        let before = c.get_cache_statistics().expect("statistics").hit;
        assert_eq!(get(&mut c, "b").await.as_deref(), Some("v2"));
        assert_eq!(get(&mut c, "b").await.as_deref(), Some("v2"));
        let after = c.get_cache_statistics().expect("statistics").hit;
        assert!(after > before, "hits {before} -> {after}");
    });
}

#[test]
fn a_library_cache_drops_a_key_whose_master_failed_over() {
    let mut cluster = cluster(3, 2, 1);
    let proxy = Proxy::start(&cluster);
    let mut writer = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v1")
        .query(&mut writer)
        .expect("SET");
    let rt = runtime();
    let mut c = rt.block_on(cached(&proxy));
    rt.block_on(async {
        assert_eq!(get(&mut c, "k").await.as_deref(), Some("v1"));
        assert_eq!(get(&mut c, "k").await.as_deref(), Some("v1"));
    });
    let s = c.get_cache_statistics().expect("statistics");
    assert_eq!((s.miss, s.hit), (1, 1), "{s:?}");

    // The master of k dies. Until its replica takes over, nothing hears writes to k: the proxy
    // must make the library forget k, which this library only does for a message naming it
    // (it ignores Redis's null "forget everything").
    let slot = slotproxy::cluster::slots::key_slot(b"k");
    let owner = owner_of(&cluster, 0, slot);
    cluster.kill(owner);
    let asked = (0..cluster.nodes.len()).find(|&i| i != owner).unwrap_or(0);
    eventually("the replica took over", Duration::from_secs(30), || {
        std::panic::catch_unwind(|| owner_of(&cluster, asked, slot)).ok() != Some(owner)
    });
    eventually(
        "a write through the new master",
        Duration::from_secs(30),
        || {
            redis::cmd("SET")
                .arg("k")
                .arg("v2")
                .query::<()>(&mut writer)
                .is_ok()
        },
    );
    rt.block_on(async {
        reads_eventually(&mut c, "k", Some("v2")).await;
        // Tracking goes on through the new master.
        assert_eq!(get(&mut c, "k").await.as_deref(), Some("v2"));
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v3")
            .query(&mut writer)
            .expect("SET");
        reads_eventually(&mut c, "k", Some("v3")).await;
    });
}
