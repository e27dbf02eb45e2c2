//! Plans for emulated commands, checked without a cluster.
use super::*;

fn args(a: &[&str]) -> Vec<Bytes> {
    a.iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

fn p(a: &[&str]) -> Result<Plan, String> {
    let a = args(a);
    let spec = command::lookup(&a).expect("known command");
    plan(spec, &a, 0xab).map_err(|e| String::from_utf8_lossy(&e).into_owned())
}

fn algebra(a: &[&str]) -> (Vec<String>, u16, Vec<Source>) {
    match p(a) {
        Ok(Plan::Algebra {
            args,
            target,
            sources,
        }) => (
            args.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            target,
            sources,
        ),
        other => panic!("expected an algebra plan, got {other:?}"),
    }
}

#[test]
fn store_forms_run_in_the_destination_slot_with_sources_renamed_once() {
    let (a, target, sources) = algebra(&["SUNIONSTORE", "d", "a", "{d}x", "a", "b"]);
    assert_eq!(target, key_slot(b"d"));
    assert_eq!(sources.len(), 2, "a is copied once, {{d}}x not at all");
    assert_eq!(a[0], "SUNIONSTORE");
    assert_eq!(a[1], "d");
    assert_eq!(a[2], a[4], "both mentions of a use one temporary");
    assert_eq!(a[3], "{d}x");
    for s in &sources {
        assert_eq!(key_slot(&s.temp), target);
        assert!(String::from_utf8_lossy(&s.temp).contains("slotproxy:tmp:"));
    }
}

#[test]
fn options_are_kept_and_only_keys_are_renamed() {
    let (a, target, sources) = algebra(&[
        "ZUNIONSTORE",
        "d",
        "2",
        "a",
        "b",
        "WEIGHTS",
        "2",
        "3",
        "AGGREGATE",
        "MAX",
    ]);
    assert_eq!(target, key_slot(b"d"));
    assert_eq!(sources.len(), 2);
    assert_eq!(&a[5..], ["WEIGHTS", "2", "3", "AGGREGATE", "MAX"]);
    let (a, target, _) = algebra(&["SINTERCARD", "2", "a", "b", "LIMIT", "5"]);
    assert_eq!(target, key_slot(b"a"));
    assert_eq!(a[2], "a", "read-only forms run in the first key's slot");
    assert_ne!(a[3], "b");
    let (a, _, sources) = algebra(&["BITOP", "AND", "d", "a", "b"]);
    assert_eq!(a[1], "AND");
    assert_eq!(sources.len(), 2);
}

#[test]
fn sort_and_georadius_store_run_where_they_store() {
    let (a, target, sources) = algebra(&["SORT", "a", "LIMIT", "0", "5", "STORE", "d"]);
    assert_eq!(target, key_slot(b"d"));
    assert_eq!(sources[0].key, "a");
    assert_eq!(a[6], "d");
    let (_, target, _) = algebra(&["GEORADIUS", "a", "0", "0", "10", "km", "STORE", "d"]);
    assert_eq!(target, key_slot(b"d"));
    let (a, target, _) = algebra(&[
        "GEOSEARCHSTORE",
        "d",
        "a",
        "FROMLONLAT",
        "0",
        "0",
        "BYRADIUS",
        "1",
        "km",
    ]);
    assert_eq!(target, key_slot(b"d"));
    assert_ne!(a[2], "a");
}

#[test]
fn moves_and_refusals() {
    assert_eq!(
        p(&["RENAMENX", "a", "b"]),
        Ok(Plan::Rename {
            src: "a".into(),
            dst: "b".into(),
            nx: true
        })
    );
    assert_eq!(
        p(&["COPY", "a", "b", "db", "0", "REPLACE"]),
        Ok(Plan::Copy {
            src: "a".into(),
            dst: "b".into(),
            replace: true
        })
    );
    assert!(p(&["COPY", "a", "b", "DB", "1"])
        .unwrap_err()
        .contains("database 0"));
    assert_eq!(
        p(&["COPY", "a", "b", "NOPE"]).unwrap_err(),
        "-ERR syntax error\r\n"
    );
    assert_eq!(
        p(&["LMOVE", "a", "b", "RIGHT", "left"]),
        Ok(Plan::Lmove {
            src: "a".into(),
            dst: "b".into(),
            from_left: false,
            to_left: true,
            blocking: false
        })
    );
    assert_eq!(
        p(&["LMOVE", "a", "b", "UP", "LEFT"]).unwrap_err(),
        "-ERR syntax error\r\n"
    );
    assert!(matches!(
        p(&["BRPOPLPUSH", "a", "b", "0"]),
        Ok(Plan::Lmove { blocking: true, .. })
    ));
    assert!(p(&["MSETNX", "a", "1", "b", "2"])
        .unwrap_err()
        .contains("atomic"));
    assert_eq!(
        p(&["BLPOP", "a", "b", "0"]).unwrap_err(),
        format!("-{CROSSSLOT}\r\n")
    );
    assert_eq!(
        p(&["WATCH", "a", "b"]).unwrap_err(),
        format!("-{CROSSSLOT}\r\n")
    );
}
