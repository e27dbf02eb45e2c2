//! The proxy's SORT decisions, checked without a cluster.
use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn args(a: &str) -> Vec<Bytes> {
    a.split(' ').map(b).collect()
}

fn parsed(a: &str) -> Result<SortArgs, String> {
    let ro = a.starts_with("SORT_RO");
    parse(&args(a), ro).map_err(|e| String::from_utf8_lossy(&e).trim_end().to_string())
}

fn texts(v: &[Bytes]) -> Vec<&str> {
    v.iter()
        .map(|e| std::str::from_utf8(e).expect("utf8"))
        .collect()
}

#[test]
fn options_parse_as_redis_reads_them() {
    let a = parsed("SORT k BY w_* LIMIT 1 2 GET # GET o_*->f DESC ALPHA STORE d1 STORE d2")
        .expect("valid");
    assert_eq!(a.by, Some(b("w_*")));
    assert!(!a.dontsort && a.desc && a.alpha);
    assert_eq!(a.limit, (1, 2));
    assert_eq!(a.gets, [b("#"), b("o_*->f")]);
    assert_eq!(a.store, Some(b("d2")));
    // A BY without `*` stays "do not sort", even when a later BY has one.
    assert!(parsed("SORT k BY nosort BY w_*").expect("valid").dontsort);
    assert_eq!(parsed("SORT k GET").unwrap_err(), "-ERR syntax error");
    assert_eq!(parsed("SORT k GET # foo").unwrap_err(), "-ERR syntax error");
    assert_eq!(
        parsed("SORT_RO k GET # STORE d").unwrap_err(),
        "-ERR syntax error"
    );
    for bad in [
        "LIMIT a 1",
        "LIMIT 01 1",
        "LIMIT -0 1",
        "LIMIT 0 99999999999999999999",
    ] {
        assert_eq!(
            parsed(&format!("SORT k GET # {bad}")).unwrap_err(),
            "-ERR value is not an integer or out of range",
            "{bad}"
        );
    }
    assert_eq!(
        parsed("SORT k LIMIT -9223372036854775808 -1")
            .expect("valid")
            .limit,
        (i64::MIN, -1)
    );
}

#[test]
fn the_router_sends_only_pattern_sorts_here() {
    use crate::route::command::sort_uses_patterns as uses;
    assert!(uses(&args("SORT k BY w_*")));
    assert!(uses(&args("sort k get #")));
    assert!(uses(&args("SORT_RO k LIMIT 0 1 GET x")));
    assert!(!uses(&args("SORT k BY nosort")));
    assert!(!uses(&args("SORT k LIMIT 0 1 STORE d DESC ALPHA")));
    // "get" as the LIMIT values or the STORE destination is not the keyword.
    assert!(!uses(&args("SORT k LIMIT get get STORE get")));
    // A bad option before any pattern: the node answers it as a single Redis would.
    assert!(!uses(&args("SORT k foo GET #")));
}

#[test]
fn a_pattern_names_a_key_or_a_hash_field_per_element() {
    let key = |k: &str, f: Option<&str>| Lookup::Key {
        key: b(k),
        field: f.map(b),
    };
    assert_eq!(lookup(b"#", b"e"), Lookup::Itself);
    assert_eq!(lookup(b"#\0x", b"e"), Lookup::Itself);
    assert_eq!(lookup(b"##", b"e"), Lookup::Nothing);
    assert_eq!(lookup(b"nostar", b"e"), Lookup::Nothing);
    assert_eq!(lookup(b"w_*", b"e"), key("w_e", None));
    assert_eq!(lookup(b"a*b*c", b"e"), key("aeb*c", None));
    assert_eq!(lookup(b"h_*->f", b"e"), key("h_e", Some("f")));
    assert_eq!(lookup(b"h_*->f->g", b"e"), key("h_e", Some("f->g")));
    // `->` with nothing after it is part of the key; before the `*` it is no field.
    assert_eq!(lookup(b"h_*->", b"e"), key("h_e->", None));
    assert_eq!(lookup(b"a->b*", b"e"), key("a->be", None));
    // C's string search stops at a NUL; the key keeps every byte.
    assert_eq!(lookup(b"w\0*", b"e"), Lookup::Nothing);
    assert_eq!(lookup(b"w*\0x", b"e"), key("we\0x", None));
}

#[test]
fn numbers_read_as_strtod_reads_them() {
    assert_eq!(score(b"1.5"), Some(1.5));
    assert_eq!(score(b" 2"), Some(2.0));
    assert_eq!(score(b"-1e1"), Some(-10.0));
    assert_eq!(score(b"0x10"), Some(16.0));
    assert_eq!(score(b"inf"), Some(f64::INFINITY));
    assert_eq!(score(b""), Some(0.0));
    assert_eq!(score(b"3\0junk"), Some(3.0));
    for bad in ["abc", "1x", "nan", "1e999", "1e-400", "2 "] {
        assert_eq!(score(bad.as_bytes()), None, "{bad}");
    }
}

fn sorted(
    cmd: &str,
    kind: Kind,
    native: &[&str],
    by: Option<&[Option<&str>]>,
) -> Result<Vec<String>, String> {
    let a = parsed(cmd).expect("valid");
    let l = load(&a, kind, native.iter().map(|s| b(s)).collect());
    let by = by.map(|v| v.iter().map(|x| x.map(b)).collect());
    l.order(by)
        .map(|v| texts(&v).iter().map(|s| s.to_string()).collect())
        .map_err(|e| String::from_utf8_lossy(&e).trim_end().to_string())
}

#[test]
fn the_order_and_range_are_redis_s() {
    let l = &["3", "1", "2", "10"];
    // Numeric by the elements; equal scores fall back to the elements' bytes.
    assert_eq!(
        sorted("SORT k GET #", Kind::List, l, None).unwrap(),
        ["1", "2", "3", "10"]
    );
    assert_eq!(
        sorted(
            "SORT k BY w_*",
            Kind::List,
            l,
            Some(&[Some("1"), None, Some("1"), Some("-1")])
        )
        .unwrap(),
        ["10", "1", "2", "3"]
    );
    assert_eq!(
        sorted(
            "SORT k BY w_* DESC LIMIT 1 2",
            Kind::List,
            l,
            Some(&[Some("4"), Some("3"), Some("2"), Some("1")])
        )
        .unwrap(),
        ["1", "2"]
    );
    // ALPHA by a pattern: a missing value sorts first.
    assert_eq!(
        sorted(
            "SORT k BY w_* ALPHA",
            Kind::List,
            l,
            Some(&[Some("b"), None, Some("a"), Some("c")])
        )
        .unwrap(),
        ["1", "2", "3", "10"]
    );
    assert_eq!(
        sorted("SORT k ALPHA GET #", Kind::List, l, None).unwrap(),
        ["1", "10", "2", "3"]
    );
    assert_eq!(
        sorted(
            "SORT k BY w_*",
            Kind::List,
            l,
            Some(&[Some("x"), None, None, None])
        )
        .unwrap_err(),
        "-ERR One or more scores can't be converted into double"
    );
    // nosort: a list or sorted set keeps its order (DESC reverses it), LIMIT cuts it; a set
    // keeps its order and ignores DESC, unless stored (then ALPHA).
    assert_eq!(
        sorted("SORT k BY no DESC LIMIT 1 2 GET #", Kind::List, l, None).unwrap(),
        ["2", "1"]
    );
    assert_eq!(
        sorted("SORT k BY no LIMIT 3 9 GET #", Kind::Zset, l, None).unwrap(),
        ["10"]
    );
    assert_eq!(
        sorted("SORT k BY no DESC GET #", Kind::Set, l, None).unwrap(),
        ["3", "1", "2", "10"]
    );
    assert_eq!(
        sorted("SORT k BY no DESC GET # STORE d", Kind::Set, l, None).unwrap(),
        ["3", "2", "10", "1"]
    );
    // Ranges past the end, negative offsets, a zero count.
    assert!(sorted("SORT k GET # LIMIT 4 1", Kind::List, l, None)
        .unwrap()
        .is_empty());
    assert_eq!(
        sorted("SORT k GET # LIMIT -3 1", Kind::List, l, None).unwrap(),
        ["1"]
    );
    assert!(sorted("SORT k GET # LIMIT 0 0", Kind::List, l, None)
        .unwrap()
        .is_empty());
    assert!(sorted("SORT k BY no GET # LIMIT 1 0", Kind::List, l, None)
        .unwrap()
        .is_empty());
    assert!(sorted("SORT k GET #", Kind::List, &[], None)
        .unwrap()
        .is_empty());
}

#[test]
fn node_replies_are_checked_before_use() {
    let frame = |s: &str| b(s);
    let src = |t: &str, e: &str| source("SORT", &frame(t), &frame(e));
    assert_eq!(
        src("+list\r\n", "*2\r\n$1\r\na\r\n$1\r\nb\r\n").unwrap(),
        (Kind::List, vec![b("a"), b("b")])
    );
    assert_eq!(src("+none\r\n", "*0\r\n").unwrap(), (Kind::List, vec![]));
    let wrongtype = src("+string\r\n", "-WRONGTYPE x\r\n").unwrap_err();
    assert!(wrongtype.starts_with(b"-WRONGTYPE"));
    for (t, e) in [
        ("-CLUSTERDOWN down\r\n", "*0\r\n"),
        ("+set\r\n", "-LOADING busy\r\n"),
        (":1\r\n", "*0\r\n"),
        ("+set\r\n", "*1\r\n:1\r\n"),
        ("+set\r\n", "*-1\r\n"),
        ("+set\r\n", "garbage"),
    ] {
        let err = src(t, e).unwrap_err();
        let text = String::from_utf8_lossy(&err);
        assert!(
            text.starts_with("-ERR slotproxy: SORT across slots could not read the key to sort"),
            "{t:?} {e:?}: {text}"
        );
    }
    assert_eq!(
        value_of("SORT", &frame("$1\r\nv\r\n")).unwrap(),
        Some(b("v"))
    );
    assert_eq!(value_of("SORT", &frame("$-1\r\n")).unwrap(), None);
    assert_eq!(value_of("SORT", &frame("-WRONGTYPE x\r\n")).unwrap(), None);
    for bad in ["-MOVED 1 x:1\r\n", ":1\r\n", "*0\r\n", "+OK\r\n", ""] {
        assert!(value_of("SORT", &frame(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn the_reply_lists_values_and_nils() {
    let out = output(vec![b("a"), b("b")], 0, vec![]);
    assert_eq!(&array_reply(&out)[..], b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    let out = output(vec![b("a")], 2, vec![Some(b("x")), None]);
    assert_eq!(&array_reply(&out)[..], b"*2\r\n$1\r\nx\r\n$-1\r\n");
}
