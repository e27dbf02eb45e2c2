//! The router's decisions, driven without sockets.
use super::*;

fn r(args: &[&str]) -> Route {
    let args: Vec<Bytes> = args
        .iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect();
    route(&args, &mut Vec::new())
}

fn err(route: Route) -> String {
    match route {
        Route::Reply(b) => String::from_utf8_lossy(&b)
            .trim_end_matches("\r\n")
            .to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn single_key_commands_go_to_their_slot() {
    assert_eq!(r(&["GET", "foo"]), Route::Slot(12182));
    assert_eq!(r(&["set", "{foo}x", "1"]), Route::Slot(12182));
    assert_eq!(r(&["OBJECT", "ENCODING", "foo"]), Route::Slot(12182));
    assert_eq!(
        r(&["XREAD", "COUNT", "1", "STREAMS", "foo", "0"]),
        Route::Slot(12182)
    );
}

#[test]
fn split_commands() {
    assert_eq!(r(&["MGET", "{a}1", "{a}2"]), Route::Slot(key_slot(b"a")));
    let Route::Split(s) = r(&["MSET", "foo", "1", "bar", "2", "{foo}z", "3"]) else {
        panic!("not split")
    };
    assert_eq!(s.kind, MergeKind::AllOk);
    assert!(s.order.is_empty(), "only MGET's merge uses the key order");
    assert_eq!(s.parts[0].slot, 12182);
    assert_eq!(
        &s.parts[0].wire[..],
        b"*5\r\n$4\r\nMSET\r\n$3\r\nfoo\r\n$1\r\n1\r\n$6\r\n{foo}z\r\n$1\r\n3\r\n"
    );
    assert_eq!(
        &s.parts[1].wire[..],
        b"*3\r\n$4\r\nMSET\r\n$3\r\nbar\r\n$1\r\n2\r\n"
    );
    assert!(err(r(&["MSET", "a", "1", "b"])).contains("wrong number of arguments for 'mset'"));
}

/// `args` as a client sends them: the frame, and the arguments parsed from it (slices of it).
fn parsed(args: &[Bytes]) -> (Bytes, Vec<Bytes>) {
    let mut buf = resp::encode_command(args);
    let mut parser = crate::route::protocol::RequestParser::new(Default::default());
    let mut out = Vec::new();
    let Ok(Some(Some(frame))) = parser.parse_into(&mut buf, &mut out) else {
        panic!("the encoded request did not parse")
    };
    (frame, out)
}

/// The parts a split of `args` (a key every `step` arguments) must make, decoded: one per
/// slot in order of the slot's first key, each with that slot's keys (and what travels with
/// them) in the client's order.
fn expected_parts(args: &[Bytes], step: usize) -> Vec<(u16, Vec<Vec<u8>>)> {
    let mut parts: Vec<(u16, Vec<Vec<u8>>)> = Vec::new();
    for group in args[1..].chunks(step) {
        let slot = key_slot(&group[0]);
        let i = match parts.iter().position(|p| p.0 == slot) {
            Some(i) => i,
            None => {
                parts.push((slot, vec![args[0].to_vec()]));
                parts.len() - 1
            }
        };
        parts[i].1.extend(group.iter().map(|a| a.to_vec()));
    }
    parts
}

fn decoded(split: &Split) -> Vec<(u16, Vec<Vec<u8>>)> {
    split
        .parts
        .iter()
        .map(|part| {
            let Ok(resp::Value::Array(Some(items))) = resp::Value::decode(&part.wire) else {
                panic!("a part is not a multibulk: {:?}", part.wire)
            };
            let words = items
                .into_iter()
                .map(|v| match v {
                    resp::Value::Bulk(Some(b)) => b.to_vec(),
                    other => panic!("not a bulk: {other:?}"),
                })
                .collect();
            (part.slot, words)
        })
        .collect()
}

#[test]
fn every_key_of_a_big_split_goes_to_its_slot_s_part_in_client_order() {
    // 300 keys (more than the inline arrays hold) over far more than 16 slots (the
    // indexed search), each part's request decoded back; parts encoded anew (arguments
    // built by hand) and parts cut from the client's frame alike.
    let mut args = vec![Bytes::from_static(b"MSET")];
    for i in 0..300 {
        args.push(Bytes::from(format!("key:{}", i % 97)));
        args.push(Bytes::from(format!("v{i}")));
    }
    let want = expected_parts(&args, 2);
    assert!(want.len() > 16);
    let Route::Split(fresh) = route(&args, &mut Vec::new()) else {
        panic!("not split")
    };
    assert_eq!(decoded(&fresh), want);
    let (frame, from_frame) = parsed(&args);
    let Route::Split(cut) = analyse_request(&from_frame, Some(&frame), &mut Vec::new()).route
    else {
        panic!("not split")
    };
    assert_eq!(decoded(&cut), want);
    // Byte for byte the same requests either way.
    let wires = |s: &Split| s.parts.iter().map(|p| p.wire.clone()).collect::<Vec<_>>();
    assert_eq!(wires(&cut), wires(&fresh));
    // MSET's merge does not need the key order; MGET's does.
    assert!(cut.order.is_empty());
    let mut mget = vec![Bytes::from_static(b"MGET")];
    mget.extend(args[1..].iter().step_by(2).cloned());
    let (frame, from_frame) = parsed(&mget);
    let Route::Split(s) = analyse_request(&from_frame, Some(&frame), &mut Vec::new()).route else {
        panic!("not split")
    };
    assert_eq!(decoded(&s), expected_parts(&mget, 1));
    assert_eq!(s.order.len(), 300);
    for (k, &p) in s.order.iter().enumerate() {
        assert_eq!(s.parts[p as usize].slot, key_slot(&mget[1 + k]), "key {k}");
    }
}

#[test]
fn parts_are_cut_from_the_frame_only_when_the_arguments_come_from_it() {
    let args = resp::test_args(&["DEL", "foo", "bar", "{foo}z"]);
    let (frame, from_frame) = parsed(&args);
    assert!(ArgSpans::of(&frame, &from_frame).is_some());
    // Arguments that are not slices of the frame (an inline request, encoded anew).
    assert!(ArgSpans::of(&frame, &args).is_none());
    // Slices of the frame in another order.
    let mut swapped = from_frame.clone();
    swapped.swap(1, 2);
    assert!(ArgSpans::of(&frame, &swapped).is_none());
    // Slices of the frame with one left out.
    let skipped = [from_frame[0].clone(), from_frame[2].clone()];
    assert!(ArgSpans::of(&frame, &skipped).is_none());
    // Either way the parts are the same.
    for frame_given in [None, Some(&frame[..])] {
        let Route::Split(s) = analyse_request(&from_frame, frame_given, &mut Vec::new()).route
        else {
            panic!("not split")
        };
        assert_eq!(decoded(&s), expected_parts(&args, 1));
        assert_eq!(s.kind, MergeKind::Sum);
    }
}

#[test]
fn errors_match_redis() {
    assert_eq!(
        err(r(&["FOO", "a", "b"])),
        "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        err(r(&["GET"])),
        "-ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(r(&["RENAME", "foo", "bar"]), Route::CrossSlot);
    // Patterns a node refuses: the session decides (the node's refusal, or the emulation).
    let s = key_slot(b"foo");
    assert_eq!(r(&["SORT", "foo", "BY", "w_*"]), Route::SortPatterns(s));
    assert_eq!(r(&["SORT_RO", "foo", "GET", "#"]), Route::SortPatterns(s));
    assert_eq!(r(&["SORT", "foo", "BY", "nosort"]), Route::Slot(s));
    assert_eq!(
        r(&["SORT", "foo", "GET", "#", "STORE", "bar"]),
        Route::CrossSlot
    );
    assert_eq!(
        err(r(&["CLIENT", "NOPE"])),
        "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP."
    );
}

#[test]
fn refusals_name_the_command() {
    assert!(err(r(&["SWAPDB", "0", "1"])).contains("'SWAPDB' yet"));
    assert!(err(r(&["DEBUG", "SLEEP", "0"])).contains("not available through slotproxy"));
    assert!(err(r(&["CLUSTER", "NODES"])).contains("not available through slotproxy"));
    assert!(err(r(&["ASKING"])).contains("not available"));
}

#[test]
fn readonly_and_readwrite_change_where_the_connection_reads() {
    assert_eq!(r(&["READONLY"]), Route::Local(Local::ReadOnly));
    assert_eq!(r(&["readwrite"]), Route::Local(Local::ReadWrite));
}

#[test]
fn connection_state_commands_get_their_own_routes() {
    let s = key_slot(b"a");
    assert_eq!(r(&["BLPOP", "a", "0"]), Route::Blocking(s));
    assert_eq!(
        r(&["XREAD", "BLOCK", "0", "STREAMS", "a", "$"]),
        Route::Blocking(s)
    );
    // A group or consumer name is not a keyword.
    assert_eq!(
        r(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "streams",
            "BLOCK",
            "0",
            "STREAMS",
            "a",
            ">"
        ]),
        Route::Blocking(s)
    );
    assert_eq!(
        r(&["XREADGROUP", "GROUP", "block", "c", "STREAMS", "a", ">"]),
        Route::Slot(s)
    );
    assert_eq!(
        r(&["BLPOP", "{a}1", "{a}2", "0"]),
        Route::Blocking(key_slot(b"a"))
    );
    assert_eq!(r(&["BLPOP", "a", "b", "0"]), Route::CrossSlot);
    assert_eq!(r(&["MULTI"]), Route::Tx(Tx::Multi));
    assert_eq!(r(&["WATCH", "a"]), Route::Tx(Tx::Watch(s)));
    assert_eq!(r(&["WATCH", "a", "b"]), Route::CrossSlot);
    assert_eq!(r(&["SUBSCRIBE", "c"]), Route::Sub(Sub::Subscribe));
    assert_eq!(r(&["SSUBSCRIBE", "a"]), Route::Sub(Sub::Ssubscribe(s)));
    assert_eq!(r(&["SSUBSCRIBE", "a", "b"]), Route::CrossSlot);
    assert_eq!(r(&["SPUBLISH", "a", "m"]), Route::Slot(s));
    assert_eq!(r(&["WAIT", "1", "0"]), Route::Wait);
    assert_eq!(r(&["RESET"]), Route::Local(Local::Reset));
}

#[test]
fn cluster_wide_commands_fan_out() {
    assert_eq!(
        r(&["KEYS", "*"]),
        Route::FanOut(FanOut::Masters(MergeKind::Concat))
    );
    assert_eq!(
        r(&["dbsize"]),
        Route::FanOut(FanOut::Masters(MergeKind::Sum))
    );
    assert_eq!(
        r(&["FLUSHALL", "ASYNC"]),
        Route::FanOut(FanOut::Masters(MergeKind::Unanimous))
    );
    assert_eq!(
        r(&["SCRIPT", "EXISTS", "a", "b"]),
        Route::FanOut(FanOut::Masters(MergeKind::AndPositions))
    );
    assert_eq!(
        r(&["CONFIG", "SET", "maxmemory", "0"]),
        Route::FanOut(FanOut::AllNodes {
            kind: MergeKind::Unanimous,
            config: Some(NodeConfig::Set)
        })
    );
    assert_eq!(
        r(&["CONFIG", "RESETSTAT"]),
        Route::FanOut(FanOut::AllNodes {
            kind: MergeKind::Unanimous,
            config: Some(NodeConfig::ResetStat)
        })
    );
    assert_eq!(
        r(&["CONFIG", "GET", "maxmemory"]),
        Route::Local(Local::ConfigGet)
    );
    for args in [&["ACL", "SETUSER", "u", "on"][..], &["ACL", "LOG", "reset"]] {
        assert_eq!(r(args), every_node(MergeKind::Unanimous));
    }
    assert_eq!(r(&["ACL", "LOG", "5"]), Route::AnyNode);
    assert_eq!(r(&["ACL", "WHOAMI"]), Route::Local(Local::AclWhoami));
    assert_eq!(r(&["LATENCY", "LATEST"]), every_node(MergeKind::ByNode));
    assert_eq!(r(&["LASTSAVE"]), every_node(MergeKind::Min));
    assert_eq!(r(&["PUBLISH", "ch", "m"]), Route::Publish);
    assert_eq!(r(&["TIME"]), Route::AnyNode);
    assert_eq!(
        r(&["SCAN", "0", "COUNT", "10"]),
        Route::FanOut(FanOut::Scan(ScanCursor::START))
    );
    let c = ScanCursor {
        position: 2,
        fingerprint: 99,
        node_cursor: 1234,
    };
    let text = c.encode().unwrap().to_string();
    assert_eq!(r(&["SCAN", &text]), Route::FanOut(FanOut::Scan(c)));
    assert_eq!(err(r(&["SCAN", "x1"])), "-ERR invalid cursor");
    assert_eq!(err(r(&["SCAN", "-1"])), "-ERR invalid cursor");
}

#[test]
fn proxy_answers_connection_commands() {
    assert_eq!(r(&["ping"]), Route::Local(Local::Ping));
    assert_eq!(r(&["MONITOR"]), Route::Local(Local::Monitor));
    assert_eq!(r(&["PROXY", "SLOTS"]), Route::Local(Local::Proxy));
    assert_eq!(
        r(&["CLIENT", "SETNAME", "x"]),
        Route::Local(Local::ClientSetName)
    );
    assert_eq!(r(&["COMMAND", "COUNT"]), Route::AnyNode);
    assert_eq!(r(&["EVAL", "return 1", "0"]), Route::AnyNode);
    assert_eq!(r(&["EVAL", "return 1", "1", "foo"]), Route::Slot(12182));
}
