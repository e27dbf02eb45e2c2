//! Unit tests of the parent module.

use super::*;

fn users() -> Users {
    let cfg: Vec<UserConfig> = toml::from_str::<toml::Table>(
        r#"
        [[u]]
        name = "reader"
        password = "r"
        level = "read"
        commands_deny = ["@keyspace-wide", "CLIENT"]
        [[u]]
        name = "getter"
        password = "g"
        level = "write"
        commands_allow = ["get", "mget", "object encoding"]
        [[u]]
        name = "a"
        password_sha256 = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        level = "write"
        read_prefixes = ["a"]
        write_prefixes = ["a"]
        [[u]]
        name = "ab"
        password = "x"
        level = "write"
        write_prefixes = ["ab"]
        "#,
    )
    .unwrap()["u"]
        .clone()
        .try_into()
        .unwrap();
    Users::from_config(&cfg).unwrap()
}

use crate::route::resp::test_args as args;

fn check(u: &User, a: &[&str]) -> Result<(), String> {
    let a = args(a);
    let spec = command::lookup(&a).unwrap();
    let mut keys = Vec::new();
    command::key_positions(spec, &a, &mut keys).unwrap();
    u.check(spec, &a, &keys).map_err(|e| e.to_string())
}

#[test]
fn passwords_levels_and_overlapping_namespaces() {
    let us = users();
    assert!(us.authenticate(b"reader", b"r").is_some());
    assert!(us.authenticate(b"reader", b"x").is_none());
    // sha256("a")
    let a = us.authenticate(b"a", b"a").unwrap();
    let ab = us.authenticate(b"ab", b"x").unwrap();
    let reader = us.authenticate(b"reader", b"r").unwrap();
    assert!(check(&reader, &["GET", "k"]).is_ok());
    assert!(check(&reader, &["SET", "k", "v"])
        .unwrap_err()
        .contains("no permissions to run the 'set' command"));
    assert!(check(&reader, &["FLUSHALL"]).is_err());
    assert!(check(&reader, &["KEYS", "*"]).is_err());
    assert!(check(&reader, &["CLIENT", "LIST"]).is_err());
    let getter = us.authenticate(b"getter", b"g").unwrap();
    assert!(check(&getter, &["GET", "k"]).is_ok());
    assert!(check(&getter, &["OBJECT", "ENCODING", "k"]).is_ok());
    assert!(check(&getter, &["OBJECT", "FREQ", "k"]).is_err());
    assert!(check(&getter, &["SET", "k", "v"]).is_err());
    assert!(check(&getter, &["CONFIG", "RESETSTAT"]).is_err());
    // "a" covers "ab..." keys too; "ab" does not cover "a..." keys.
    assert!(check(&a, &["SET", "abc", "1"]).is_ok());
    assert!(check(&ab, &["SET", "abc", "1"]).is_ok());
    assert!(check(&ab, &["SET", "ac", "1"]).is_err());
    assert!(check(&a, &["MSET", "a1", "1", "b1", "2"])
        .unwrap_err()
        .contains("access one of the keys"));
    assert!(check(&a, &["KEYS", "*"]).is_err());
    // No read namespace for "ab": reads anywhere.
    assert!(check(&ab, &["GET", "zzz"]).is_ok());
    assert!(check(&a, &["CONFIG", "SET", "x", "y"])
        .unwrap_err()
        .contains("'config|set'"));
    let no_password = UserConfig {
        name: "x".into(),
        password: None,
        password_sha256: None,
        level: Level::Read,
        read_prefixes: vec![],
        write_prefixes: vec![],
        max_connections: None,
        commands_allow: vec![],
        commands_deny: vec![],
        certificate_names: vec![],
        allow_scripts: false,
        cross_slot: None,
        read_from: None,
    };
    assert!(Users::from_config(std::slice::from_ref(&no_password)).is_err());
    // A certificate-only user: reachable by its certificate names, never by a password.
    let cert_only = UserConfig {
        certificate_names: vec!["svc.example".into()],
        ..no_password
    };
    let us = Users::from_config(&[cert_only]).expect("certificate-only user");
    assert!(us.use_certificates());
    assert!(us.authenticate(b"x", b"").is_none());
    let names = ["other".to_string(), "svc.example".to_string()];
    assert_eq!(
        us.by_certificate(&names).map(|u| u.name.clone()),
        Some("x".into())
    );
    assert!(us.by_certificate(&["SVC.example".to_string()]).is_none());
}

fn user(toml_text: &str) -> Arc<User> {
    let cfg: UserConfig = toml::from_str(toml_text).unwrap();
    Users::from_config(&[cfg]).unwrap().list.remove(0)
}

#[test]
fn namespaced_users_need_allow_scripts_and_script_load_is_admin() {
    let ns = user(
        "name='n'\npassword='p'\nlevel='admin'\nread_prefixes=['app:']\nwrite_prefixes=['app:']",
    );
    let scripted =
        user("name='s'\npassword='p'\nlevel='write'\nwrite_prefixes=['app:']\nallow_scripts=true");
    let open = user("name='o'\npassword='p'\nlevel='write'");
    for req in [
        &["EVAL_RO", "return 1", "1", "app:{x}"][..],
        &["EVALSHA_RO", "abc", "1", "app:{x}"],
        &["EVAL", "return 1", "0"],
        &["EVALSHA", "abc", "1", "app:x"],
        &["FCALL", "f", "1", "app:x"],
        &["FCALL_RO", "f", "0"],
        &["SCRIPT", "LOAD", "return 1"],
        &["FUNCTION", "LOAD", "#!lua name=l"],
        &["FUNCTION", "RESTORE", "x"],
    ] {
        let e = check(&ns, req).unwrap_err();
        assert!(
            e.starts_with("NOPERM this user has no permissions to run the '"),
            "{e}"
        );
        assert!(e.contains("allow_scripts"), "{req:?}: {e}");
    }
    assert!(check(&ns, &["SCRIPT", "EXISTS", "abc"]).is_ok());
    assert!(check(&scripted, &["EVAL", "return 1", "1", "app:x"]).is_ok());
    assert!(check(&scripted, &["FCALL_RO", "f", "1", "app:x"]).is_ok());
    // allow_scripts does not widen the declared keys.
    assert!(check(&scripted, &["EVAL", "return 1", "1", "zz"])
        .unwrap_err()
        .contains("access one of the keys"));
    assert!(check(&open, &["EVAL", "return 1", "1", "zz"]).is_ok());
    // SCRIPT LOAD changes every node's script cache: admin, as the README says.
    for u in [&scripted, &open] {
        assert!(check(u, &["SCRIPT", "LOAD", "return 1"])
            .unwrap_err()
            .contains("'script|load'"));
    }
}

#[test]
fn restore_and_migrate_are_admin_only() {
    let w = user("name='w'\npassword='p'\nlevel='write'");
    let a = user("name='a'\npassword='p'\nlevel='admin'");
    for req in [
        &["RESTORE", "k", "0", "payload"][..],
        &["RESTORE-ASKING", "k", "0", "payload"],
        &["MIGRATE", "127.0.0.1", "7000", "k", "0", "100"],
    ] {
        let e = check(&w, req).unwrap_err();
        assert!(e.contains("no permissions to run the '"), "{e}");
        assert!(check(&a, req).is_ok(), "{req:?}");
    }
}

#[test]
fn keys_a_writing_command_reads_need_read_permission() {
    // Writes "r..." and "w..."; reads only "r...".
    let u = user(
        "name='u'\npassword='p'\nlevel='write'\nread_prefixes=['r']\nwrite_prefixes=['r','w']",
    );
    for req in [
        &["SET", "w1", "v", "GET"][..],
        &["SET", "w1", "v", "EX", "10", "get"],
        &["GETDEL", "w1"],
        &["GETSET", "w1", "v"],
        &["GETEX", "w1"],
        &["COPY", "w1", "r1"],
        &["LMOVE", "w1", "r1", "LEFT", "LEFT"],
        &["BLMOVE", "w1", "r1", "LEFT", "LEFT", "0"],
        &["RPOPLPUSH", "w1", "r1"],
        &["SMOVE", "w1", "r1", "m"],
        &["RENAME", "w1", "r1"],
        &["SUNIONSTORE", "r1", "r2", "w1"],
        &["ZUNIONSTORE", "r1", "2", "r2", "w1"],
        &["ZRANGESTORE", "r1", "w1", "0", "-1"],
        &["BITOP", "AND", "r1", "w1"],
        &["PFMERGE", "r1", "w1"],
        &["SORT", "w1", "STORE", "r1"],
        &["GEORADIUS", "w1", "0", "0", "1", "km", "STORE", "r1"],
        &["INCR", "w1"],
    ] {
        assert!(
            check(&u, req)
                .unwrap_err()
                .contains("access one of the keys"),
            "{req:?}"
        );
    }
    for req in [
        &["SET", "w1", "get"][..],
        &["SET", "w1", "v", "EX", "10"],
        &["DEL", "w1"],
        &["LPUSH", "w1", "x"],
        &["HSET", "w1", "f", "v"],
        &["EXPIRE", "w1", "10"],
        &["COPY", "r1", "w1"],
        &["LMOVE", "r1", "w1", "LEFT", "LEFT"],
        &["SMOVE", "r1", "w1", "m"],
        &["RENAME", "r1", "w1"],
        &["SUNIONSTORE", "w1", "r1", "r2"],
        &["ZUNIONSTORE", "w1", "1", "r2"],
        &["BITOP", "AND", "w1", "r1"],
        &["SORT", "r1", "STORE", "w1"],
        &["GEORADIUS", "r1", "0", "0", "1", "km", "STORE", "w1"],
        &["GETDEL", "r1"],
    ] {
        assert!(check(&u, req).is_ok(), "{req:?}");
    }
}

#[test]
fn mixed_key_specs_have_the_layout_reads_key_assumes() {
    let access = |ks: &command::KeySpec| ks.flags & command::KS_ACCESS != 0;
    for cmd in command::COMMANDS {
        for spec in std::iter::once(cmd).chain(cmd.subcommands) {
            if matches!(
                spec.name,
                "sort" | "georadius" | "georadiusbymember" | "set"
            ) {
                continue;
            }
            let specs: Vec<_> = spec
                .key_specs
                .iter()
                .filter(|ks| ks.flags & command::KS_NOT_KEY == 0)
                .collect();
            let mixed = specs.iter().any(|k| access(k)) && !specs.iter().all(|k| access(k));
            if !mixed {
                continue;
            }
            assert_eq!(specs.len(), 2, "{}", spec.name);
            assert!(
                matches!(
                    (specs[0].begin, specs[0].find, specs[1].begin),
                    (
                        command::BeginSearch::Index(a),
                        command::FindKeys::Range { last_key: 0, .. },
                        command::BeginSearch::Index(b),
                    ) if b > a
                ),
                "{}: {:?}",
                spec.name,
                specs
            );
        }
    }
}

#[test]
fn namespaced_channels_and_patterns() {
    let u = user(
        "name='u'\npassword='p'\nlevel='write'\nread_prefixes=['app:']\nwrite_prefixes=['app:']",
    );
    let glob = user("name='g'\npassword='p'\nlevel='write'\nread_prefixes=['a*']");
    let open = user("name='o'\npassword='p'\nlevel='write'");
    for ok in [
        &["SUBSCRIBE", "app:news", "app:x"][..],
        &["SSUBSCRIBE", "app:{1}"],
        &["PUBLISH", "app:news", "anything at all"],
        &["SPUBLISH", "app:news", "zz"],
        &["PSUBSCRIBE", "app:*", "app:?x"],
        &["PUBSUB", "CHANNELS", "app:*"],
        &["PUBSUB", "NUMSUB", "app:a"],
        &["PUBSUB", "NUMPAT"],
        &["UNSUBSCRIBE", "other"],
        &["PUNSUBSCRIBE"],
    ] {
        assert!(check(&u, ok).is_ok(), "{ok:?}");
        assert!(check(&open, ok).is_ok(), "{ok:?}");
    }
    for refused in [
        &["SUBSCRIBE", "app:news", "other"][..],
        &["SSUBSCRIBE", "other"],
        &["PUBLISH", "other", "app:"],
        &["SPUBLISH", "other", "m"],
        &["PSUBSCRIBE", "*"],
        &["PSUBSCRIBE", "app*"],
        &["PSUBSCRIBE", "ap?:x"],
        &["PSUBSCRIBE", "[a]pp:x"],
        &["PUBSUB", "CHANNELS"],
        &["PUBSUB", "CHANNELS", "*"],
        &["PUBSUB", "SHARDCHANNELS", "a*"],
        &["PUBSUB", "NUMSUB", "app:a", "b"],
        &["PUBSUB", "SHARDNUMSUB", "b"],
    ] {
        let e = check(&u, refused).unwrap_err();
        assert!(e.contains("access one of the channels"), "{refused:?}: {e}");
        assert!(check(&open, refused).is_ok(), "{refused:?}");
    }
    // A prefix holding a glob character covers channels but no pattern.
    assert!(check(&glob, &["SUBSCRIBE", "a*b"]).is_ok());
    assert!(check(&glob, &["PSUBSCRIBE", "a*b"]).is_err());
}

#[test]
fn monitor_is_admin_and_refused_to_every_namespace() {
    let admin = user("name = \"adm\"\npassword = \"p\"\nlevel = \"admin\"");
    assert_eq!(check(&admin, &["MONITOR"]), Ok(()));
    let writer = user("name = \"w\"\npassword = \"p\"\nlevel = \"write\"");
    assert_eq!(
        check(&writer, &["MONITOR"]),
        Err("NOPERM this user has no permissions to run the 'monitor' command".into())
    );
    // It would show keys outside the user's prefixes: refused even to a read namespace.
    let reads_a =
        user("name = \"r\"\npassword = \"p\"\nlevel = \"admin\"\nread_prefixes = [\"a\"]");
    assert!(check(&reads_a, &["MONITOR"])
        .unwrap_err()
        .contains("outside the user's key prefixes"));
}

#[test]
fn an_emulated_sort_s_patterns_stay_inside_the_namespace() {
    let ns = user(
        "name='n'\npassword='p'\nlevel='write'\nread_prefixes=['app:']\nwrite_prefixes=['app:']",
    );
    let open = user("name='o'\npassword='p'\nlevel='write'");
    let check = |u: &User, a: &[&str]| {
        let a: Vec<Bytes> = a
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        let spec = command::lookup(&a).expect("known");
        u.check_sort_patterns(spec, &a).is_ok()
    };
    for ok in [
        &[
            "SORT",
            "app:l",
            "BY",
            "app:w_*",
            "GET",
            "#",
            "GET",
            "app:h_*->f",
        ][..],
        &["SORT", "app:l", "BY", "nosort", "GET", "nostar"],
        &["SORT_RO", "app:l", "LIMIT", "0", "1", "GET", "app:*"],
    ] {
        assert!(check(&ns, ok), "{ok:?}");
    }
    for refused in [
        &["SORT", "app:l", "BY", "w_*"][..],
        &["SORT", "app:l", "GET", "#", "GET", "other:*"],
        // A stem shorter than the prefix can name keys outside it.
        &["SORT", "app:l", "GET", "app*"],
        // STORE's destination is not a pattern, what follows it is.
        &["SORT", "app:l", "STORE", "by", "GET", "x*"],
        &["SORT", "app:l", "LIMIT", "0", "1", "BY", "*"],
    ] {
        assert!(!check(&ns, refused), "{refused:?}");
        assert!(check(&open, refused), "{refused:?}");
    }
}
