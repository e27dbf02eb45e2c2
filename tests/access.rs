//! Access control through the proxy: users, levels, key namespaces, AUTH / HELLO AUTH from real
//! clients (the `redis` crate and redis-cli), against a real cluster.

mod common;

use common::*;
use redis::{Commands, Value};

const USERS: &str = r#"
[[users]]
name = "admin"
password = "adm"
level = "admin"

[[users]]
name = "writer"
password = "w"
level = "write"
read_prefixes = ["a"]
write_prefixes = ["a"]

[[users]]
name = "writer2"
password_sha256 = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
level = "write"
write_prefixes = ["ab"]

[[users]]
name = "reader"
password = "r"
level = "read"

[[users]]
name = "getter"
password = "g"
level = "write"
commands_allow = ["get", "@pubsub"]
commands_deny = ["publish"]
"#;

fn conn_as(proxy: &Proxy, user: &str, pass: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{user}:{pass}@{}/", proxy.addr))
        .unwrap()
        .get_connection()
        .expect("AUTH user pass through the redis crate")
}

fn err(r: redis::RedisResult<Value>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn users_levels_and_namespaces_are_enforced_on_every_key() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), USERS, false);
    // Not authenticated: Redis's NOAUTH; a wrong password: WRONGPASS.
    let mut anon = redis::Client::open(format!("redis://{}/", proxy.addr))
        .unwrap()
        .get_connection()
        .unwrap();
    let e = err(redis::cmd("GET").arg("k").query(&mut anon));
    assert!(
        e.contains("NOAUTH") || e.contains("Authentication required"),
        "{e}"
    );
    let e = err(redis::cmd("AUTH")
        .arg("writer")
        .arg("nope")
        .query(&mut anon));
    assert!(
        e.contains("WRONGPASS") || e.contains("invalid username-password"),
        "{e}"
    );
    let e = err(redis::cmd("AUTH").arg("nope").query(&mut anon));
    assert!(e.contains("invalid username-password"), "{e}");

    let mut admin = conn_as(&proxy, "admin", "adm");
    let users: Vec<String> = proxy_query(&mut admin, &["CONFIG", "GET", "users"]).unwrap();
    assert_eq!(
        users[1],
        "admin:admin,writer:write,writer2:write,reader:read,getter:write"
    );
    // Wait until the proxy serves every slot (the harness could not check without a user).
    wait_served(&mut admin);

    let mut w = conn_as(&proxy, "writer", "w");
    let _: () = w.set("a1", "1").unwrap();
    let _: () = w.set("abc", "1").unwrap();
    let e = err(redis::cmd("SET").arg("b1").arg("1").query(&mut w));
    assert!(e.contains("access one of the keys"), "{e}");
    // One key outside the namespace: the whole MSET (split over slots) writes nothing.
    let e = err(redis::cmd("MSET")
        .arg("a2")
        .arg("1")
        .arg("a3")
        .arg("1")
        .arg("b2")
        .arg("2")
        .query(&mut w));
    assert!(e.contains("access one of the keys"), "{e}");
    let n: i64 = redis::cmd("EXISTS")
        .arg("a2")
        .arg("a3")
        .arg("b2")
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 0);
    let e = err(redis::cmd("GET").arg("zz").query(&mut w));
    assert!(e.contains("access one of the keys"), "{e}");
    let e = err(redis::cmd("KEYS").arg("*").query(&mut w));
    assert!(
        e.contains("no permissions to run the 'keys' command"),
        "{e}"
    );
    let e = err(proxy_query(&mut w, &["SLOTS"]));
    assert!(
        e.contains("no permissions to run the 'proxy' command"),
        "{e}"
    );
    let e = err(redis::cmd("FLUSHALL").query(&mut w));
    assert!(
        e.contains("no permissions to run the 'flushall' command"),
        "{e}"
    );
    let e = err(redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut w));
    assert!(e.contains("'config|set'"), "{e}");

    // Overlapping prefixes: "ab" does not reach "ac"; with no read prefixes it reads anything.
    let mut w2 = conn_as(&proxy, "writer2", "x");
    let _: () = w2.set("abz", "1").unwrap();
    let e = err(redis::cmd("SET").arg("ac").arg("1").query(&mut w2));
    assert!(e.contains("access one of the keys"), "{e}");
    assert_eq!(w2.get::<_, String>("a1").unwrap(), "1");

    let mut r = conn_as(&proxy, "reader", "r");
    assert_eq!(r.get::<_, String>("a1").unwrap(), "1");
    let e = err(redis::cmd("SET").arg("a1").arg("2").query(&mut r));
    assert!(e.contains("no permissions to run the 'set' command"), "{e}");
    let n: i64 = redis::cmd("DBSIZE").query(&mut r).unwrap();
    assert!(n >= 3);

    // Command lists: only GET and pub/sub, but not PUBLISH.
    let mut g = conn_as(&proxy, "getter", "g");
    assert_eq!(g.get::<_, String>("a1").unwrap(), "1");
    let e = err(redis::cmd("SET").arg("a1").arg("3").query(&mut g));
    assert!(e.contains("no permissions to run the 'set' command"), "{e}");
    let e = err(redis::cmd("PUBLISH").arg("c").arg("m").query(&mut g));
    assert!(
        e.contains("no permissions to run the 'publish' command"),
        "{e}"
    );
    let n: Vec<Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("c")
        .query(&mut g)
        .unwrap();
    assert_eq!(n.len(), 2);

    // HELLO 3 AUTH, and redis-cli's --user/--pass.
    let mut raw = proxy.raw();
    use std::io::{Read, Write};
    raw.write_all(b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nadmin\r\n$3\r\nadm\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = raw.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"%7\r\n"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &proxy.port.to_string(),
            "--user",
            "writer",
            "--pass",
            "w",
        ])
        .args(["--no-auth-warning", "SET", "a-cli", "v"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    assert_eq!(admin.get::<_, String>("a-cli").unwrap(), "v");
}

#[test]
fn per_user_connection_limits_and_failed_auth_rate_limit() {
    let cluster = cluster(3, 1, 0);
    let users = "auth_failures_per_minute = 3\n[[users]]\nname = \"one\"\npassword = \"p\"\nlevel = \"read\"\nmax_connections = 1\n[[users]]\nname = \"admin\"\npassword = \"a\"\nlevel = \"admin\"\n";
    let proxy = Proxy::start_with(&cluster.seeds(), users, false);
    let mut first = conn_as(&proxy, "one", "p");
    let _: Value = redis::cmd("PING").query(&mut first).unwrap();
    // A second connection as the same user is refused while the first lives.
    let mut second = redis::Client::open(format!("redis://{}/", proxy.addr))
        .unwrap()
        .get_connection()
        .unwrap();
    let e = err(redis::cmd("AUTH").arg("one").arg("p").query(&mut second));
    assert!(e.contains("max_connections"), "{e}");
    drop(first);
    // Once the first is gone, the slot is free again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match redis::cmd("AUTH")
            .arg("one")
            .arg("p")
            .query::<Value>(&mut second)
        {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the user's connection was never released: {e}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Three wrong passwords from this address: the fourth AUTH is refused unchecked, even
    // with the right password.
    let mut guesser = redis::Client::open(format!("redis://{}/", proxy.addr))
        .unwrap()
        .get_connection()
        .unwrap();
    for _ in 0..3 {
        let e = err(redis::cmd("AUTH")
            .arg("admin")
            .arg("guess")
            .query(&mut guesser));
        assert!(e.contains("invalid username-password"), "{e}");
    }
    let e = err(redis::cmd("AUTH").arg("admin").arg("a").query(&mut guesser));
    assert!(e.contains("too many failed AUTH attempts"), "{e}");
    // Both show in the metrics (rendered once a second; the retries above may
    // have been refused more than once while the first connection was closing).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = proxy.scrape();
        let failures = metric(&text, "slotproxy_auth_failures_total");
        let limited = metric(&text, "slotproxy_auth_rate_limited_total");
        let users = metric(&text, "slotproxy_user_connections_rejected_total");
        if failures == 3.0 && limited == 1.0 && users >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "failures {failures}, limited {limited}, user-limited {users}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Waits until the proxy serves every slot (the harness cannot check without a user).
fn wait_served(admin: &mut redis::Connection) {
    eventually(
        "the proxy to serve every slot",
        std::time::Duration::from_secs(20),
        || serves_all_slots(admin),
    );
}

/// Collects failed checks, so that one run names every rule that does not hold (each check
/// is a rule of its own; a panic at the first would hide the others).
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn that(&mut self, ok: bool, what: impl std::fmt::Display) {
        if !ok {
            self.0.push(what.to_string());
        }
    }

    /// The request fails with an error containing `needle`.
    fn refused(&mut self, r: redis::RedisResult<Value>, needle: &str, what: &str) {
        match r {
            Err(e) if e.to_string().contains(needle) => {}
            Err(e) => self
                .0
                .push(format!("{what}: error {e}, expected {needle:?}")),
            Ok(v) => self
                .0
                .push(format!("{what}: got {v:?}, expected {needle:?}")),
        }
    }

    fn done(self) {
        assert!(self.0.is_empty(), "failed checks:\n{}", self.0.join("\n"));
    }
}

const RULE_USERS: &str = r#"
[[users]]
name = "admin"
password = "adm"
level = "admin"

[[users]]
name = "ns"
password = "n"
level = "write"
read_prefixes = ["app:"]
write_prefixes = ["app:"]

[[users]]
name = "scripted"
password = "s"
level = "write"
read_prefixes = ["app:"]
write_prefixes = ["app:"]
allow_scripts = true

[[users]]
name = "split"
password = "x"
level = "write"
read_prefixes = ["r:"]
write_prefixes = ["r:", "w:"]

[[users]]
name = "w"
password = "w"
level = "write"
"#;

#[test]
fn scripts_read_write_commands_and_dangerous_commands() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), RULE_USERS, false);
    let mut admin = conn_as(&proxy, "admin", "adm");
    wait_served(&mut admin);
    let _: () = admin.set("secret", "s3cr3t").unwrap();
    let mut check = Checks::default();

    // A script reaches undeclared keys of its slot: namespaced users need allow_scripts.
    let read_secret = |c: &mut redis::Connection| {
        redis::cmd("EVAL_RO")
            .arg("return redis.call('GET','secret')")
            .arg(1)
            .arg("app:{secret}")
            .query::<Value>(c)
    };
    let mut ns = conn_as(&proxy, "ns", "n");
    check.refused(
        read_secret(&mut ns),
        "no permissions to run the 'eval_ro' command",
        "EVAL_RO reading outside the namespace",
    );
    check.refused(
        redis::cmd("FCALL").arg("f").arg(0).query(&mut ns),
        "no permissions to run the 'fcall' command",
        "FCALL by a namespaced user",
    );
    let mut scripted = conn_as(&proxy, "scripted", "s");
    check.that(
        read_secret(&mut scripted).ok() == Some(Value::BulkString(b"s3cr3t".to_vec())),
        "allow_scripts lets the script reach its slot",
    );
    // SCRIPT LOAD is admin, as the README says.
    let mut w = conn_as(&proxy, "w", "w");
    check.refused(
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return 1")
            .query(&mut w),
        "'script|load'",
        "SCRIPT LOAD by a write user",
    );
    check.that(
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return 1")
            .query::<String>(&mut admin)
            .is_ok(),
        "SCRIPT LOAD by admin",
    );

    // Commands that read and write: their source keys need read permission too.
    let mut split = conn_as(&proxy, "split", "x");
    let _: () = split.set("w:{1}x", "hidden").unwrap();
    let _: () = split.set("r:{1}a", "visible").unwrap();
    for req in [
        redis::cmd("SET").arg("w:{1}x").arg("v").arg("GET").clone(),
        redis::cmd("GETDEL").arg("w:{1}x").clone(),
        redis::cmd("GETSET").arg("w:{1}x").arg("v").clone(),
        redis::cmd("GETEX").arg("w:{1}x").clone(),
        redis::cmd("COPY").arg("w:{1}x").arg("r:{1}y").clone(),
        redis::cmd("RENAME").arg("w:{1}x").arg("r:{1}y").clone(),
        redis::cmd("SUNIONSTORE")
            .arg("r:{1}y")
            .arg("w:{1}x")
            .clone(),
        redis::cmd("SORT")
            .arg("w:{1}x")
            .arg("ALPHA")
            .arg("STORE")
            .arg("r:{1}y")
            .clone(),
    ] {
        let what = format!("{} reading an unreadable key", shown(&req));
        check.refused(req.query(&mut split), "access one of the keys", &what);
        // Put back what a command that was let through changed.
        let _: () = admin.set("w:{1}x", "hidden").unwrap();
        let _: () = admin.del("r:{1}y").unwrap();
    }
    let copied: redis::RedisResult<i64> = redis::cmd("COPY")
        .arg("r:{1}a")
        .arg("w:{1}b")
        .query(&mut split);
    check.that(copied.ok() == Some(1), "COPY from a readable key");

    // RESTORE and MIGRATE (Redis's @dangerous) are admin only.
    let dump: Vec<u8> = redis::cmd("DUMP").arg("secret").query(&mut admin).unwrap();
    check.refused(
        redis::cmd("RESTORE")
            .arg("app:r")
            .arg(0)
            .arg(&dump[..])
            .query(&mut w),
        "no permissions to run the 'restore' command",
        "RESTORE by a write user",
    );
    check.refused(
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(1)
            .arg("secret")
            .arg(0)
            .arg(100)
            .query(&mut w),
        "no permissions to run the 'migrate' command",
        "MIGRATE by a write user",
    );
    let restored: redis::RedisResult<()> = redis::cmd("RESTORE")
        .arg("restored")
        .arg(0)
        .arg(&dump[..])
        .query(&mut admin);
    check.that(restored.is_ok(), "RESTORE by admin");
    check.done();
}

/// A request's words, for messages.
fn shown(req: &redis::Cmd) -> String {
    req.args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Arg::Cursor => "<cursor>".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn anon(proxy: &Proxy) -> redis::Connection {
    redis::Client::open(format!("redis://{}/", proxy.addr))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn noauth(c: &mut redis::Connection) -> bool {
    match redis::cmd("GET").arg("app:k").query::<Value>(c) {
        Err(e) => e.to_string().contains("Authentication required"),
        Ok(_) => false,
    }
}

#[test]
fn reset_hello_and_auth_keep_logins_straight_and_client_list_shows_them() {
    let cluster = cluster(3, 1, 0);
    let users = "[[users]]\nname = \"admin\"\npassword = \"adm\"\nlevel = \"admin\"\n\
                 [[users]]\nname = \"app\"\npassword = \"p\"\nlevel = \"write\"\nmax_connections = 1\n\
                 [[users]]\nname = \"other\"\npassword = \"o\"\nlevel = \"read\"\n";
    let proxy = Proxy::start_with(&cluster.seeds(), users, false);
    let mut admin = conn_as(&proxy, "admin", "adm");
    wait_served(&mut admin);
    let mut check = Checks::default();

    // HELLO before login: Redis 7.0's NOAUTH, not the server's version.
    let mut c = anon(&proxy);
    for v in [Some(3), Some(2), None] {
        let mut hello = redis::cmd("HELLO");
        if let Some(v) = v {
            hello.arg(v);
        }
        check.refused(
            hello.query(&mut c),
            "HELLO must be called with the client already authenticated",
            &format!("HELLO {v:?} before login"),
        );
    }
    // A HELLO that fails after its AUTH option logs nobody in.
    let r = redis::cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("admin")
        .arg("adm")
        .arg("SETNAME")
        .arg("a b")
        .query(&mut c);
    check.refused(r, "Client names cannot contain", "HELLO ... SETNAME 'a b'");
    check.that(noauth(&mut c), "a failed HELLO AUTH ... SETNAME logged in");
    let r = redis::cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("admin")
        .arg("adm")
        .arg("BOGUS")
        .query(&mut c);
    check.refused(r, "Syntax error in HELLO option", "HELLO ... BOGUS");
    check.that(noauth(&mut c), "a failed HELLO AUTH ... BOGUS logged in");

    // RESET logs out (no default user here), inside MULTI too.
    let _: () = redis::cmd("AUTH")
        .arg("admin")
        .arg("adm")
        .query(&mut c)
        .unwrap();
    let r: redis::RedisResult<String> = redis::cmd("RESET").query(&mut c);
    check.that(r.ok().as_deref() == Some("RESET"), "RESET answers RESET");
    check.that(noauth(&mut c), "RESET kept the login");
    let _: () = redis::cmd("AUTH")
        .arg("admin")
        .arg("adm")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let r: redis::RedisResult<String> = redis::cmd("RESET").query(&mut c);
    check.that(
        r.ok().as_deref() == Some("RESET"),
        "RESET inside MULTI answers RESET",
    );
    check.that(noauth(&mut c), "RESET inside MULTI kept the login");
    drop(c);

    // AUTH refused by max_connections keeps the current login.
    let mut a = conn_as(&proxy, "app", "p");
    let mut b = conn_as(&proxy, "other", "o");
    let a_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut a).unwrap();
    let b_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut b).unwrap();
    check.refused(
        redis::cmd("AUTH").arg("app").arg("p").query(&mut b),
        "max_connections",
        "AUTH past max_connections",
    );
    check.that(!noauth(&mut b), "a refused AUTH logged the client out");
    // Logging in again as the same user keeps the connection's own hold.
    let again: redis::RedisResult<()> = redis::cmd("AUTH").arg("app").arg("p").query(&mut a);
    check.that(again.is_ok(), "AUTH again as the same user");

    // CLIENT LIST / INFO show each client's user; CLIENT KILL USER matches it.
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    let user_of = |id: i64| {
        list.lines()
            .find(|l| l.starts_with(&format!("id={id} ")))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("user=")))
            .map(str::to_string)
    };
    check.that(
        user_of(a_id).as_deref() == Some("app"),
        format!("user=app in {list}"),
    );
    check.that(
        user_of(b_id).as_deref() == Some("other"),
        format!("user=other in {list}"),
    );
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut admin).unwrap();
    check.that(
        info.contains(" user=admin "),
        format!("user=admin in {info}"),
    );
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("app")
        .query(&mut admin)
        .unwrap();
    check.that(killed == 1, format!("CLIENT KILL USER app killed {killed}"));
    if killed == 1 {
        check.that(
            redis::cmd("PING").query::<Value>(&mut a).is_err(),
            "the killed client is gone",
        );
        check.that(
            redis::cmd("PING").query::<Value>(&mut b).is_ok(),
            "the other user's client lives",
        );
    }
    check.done();
}

#[test]
fn slow_log_never_holds_passwords() {
    let cluster = cluster(3, 1, 0);
    let users = "slowlog_threshold = \"0ms\"\n[[users]]\nname = \"admin\"\npassword = \"adm-secret-1\"\nlevel = \"admin\"\n";
    let proxy = Proxy::start_with(&cluster.seeds(), users, false);
    let mut admin = conn_as(&proxy, "admin", "adm-secret-1");
    wait_served(&mut admin);
    let mut c = anon(&proxy);
    let _ = redis::cmd("AUTH")
        .arg("admin")
        .arg("wrong-secret-2")
        .query::<Value>(&mut c);
    let _ = redis::cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("admin")
        .arg("adm-secret-1")
        .query::<Value>(&mut c);
    let _ = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(1)
        .arg("k")
        .arg(0)
        .arg(10)
        .arg("AUTH2")
        .arg("u")
        .arg("mig-secret-3")
        .query::<Value>(&mut c);
    // Refused (it would change every node's masterauth), and logged redacted all the same.
    let refused = redis::cmd("CONFIG")
        .arg("SET")
        .arg("masterauth")
        .arg("cfg-secret-4")
        .query::<Value>(&mut admin);
    assert!(refused.is_err(), "{refused:?}");
    let log: Value = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut admin)
        .unwrap();
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(&log, &mut all);
    let text = all.join(" ");
    let shown = |s: &str| all.iter().any(|a| a.contains(s));
    assert!(shown("masterauth") && shown("AUTH2"), "{text}");
    assert!(shown("(redacted)"), "{text}");
    for secret in [
        "adm-secret-1",
        "wrong-secret-2",
        "mig-secret-3",
        "cfg-secret-4",
    ] {
        assert!(!shown(secret), "{secret} in the slow log: {text}");
    }
}

#[test]
fn namespaced_users_pubsub_and_info_keyspace() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(&cluster.seeds(), RULE_USERS, false);
    let mut admin = conn_as(&proxy, "admin", "adm");
    wait_served(&mut admin);
    let _: () = admin.set("other", "1").unwrap();
    let mut check = Checks::default();
    let mut ns = conn_as(&proxy, "ns", "n");
    for req in [
        redis::cmd("PUBLISH").arg("other").arg("m").clone(),
        redis::cmd("SPUBLISH").arg("other").arg("m").clone(),
        redis::cmd("PUBSUB").arg("CHANNELS").clone(),
        redis::cmd("PUBSUB").arg("NUMSUB").arg("other").clone(),
    ] {
        let what = shown(&req);
        check.refused(req.query(&mut ns), "access one of the channels", &what);
    }
    let n: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg("app:news")
        .arg("m")
        .query(&mut ns);
    check.that(n.ok() == Some(0), "PUBLISH inside the namespace");
    // Each refused subscription on a connection of its own (an accepted one would leave it
    // in subscribed mode).
    for req in [
        redis::cmd("SUBSCRIBE").arg("app:news").arg("other").clone(),
        redis::cmd("PSUBSCRIBE").arg("*").clone(),
        redis::cmd("PSUBSCRIBE").arg("app*").clone(),
        redis::cmd("SSUBSCRIBE").arg("other").clone(),
    ] {
        let mut c = conn_as(&proxy, "ns", "n");
        let what = shown(&req);
        check.refused(req.query(&mut c), "access one of the channels", &what);
    }
    // Allowed ones work: a subscription inside the namespace.
    let mut sub = conn_as(&proxy, "ns", "n");
    let r: redis::RedisResult<Value> = redis::cmd("PSUBSCRIBE").arg("app:*").query(&mut sub);
    check.that(
        format!("{r:?}").contains("psubscribe"),
        format!("PSUBSCRIBE app:* gave {r:?}"),
    );

    // INFO keyspace: the cluster's totals for admins, nothing for a namespaced user.
    let all: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut admin)
        .unwrap();
    check.that(
        all.contains("db0:keys="),
        format!("admin's keyspace: {all}"),
    );
    let mine: String = redis::cmd("INFO").arg("keyspace").query(&mut ns).unwrap();
    check.that(
        mine.contains("# Keyspace") && !mine.contains("db0:"),
        format!("namespaced INFO keyspace: {mine}"),
    );
    let mine: String = redis::cmd("INFO").query(&mut ns).unwrap();
    check.that(!mine.contains("db0:"), "namespaced INFO shows db0");
    check.done();
}
