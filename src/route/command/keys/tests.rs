//! Unit tests of the parent module.

use super::super::{check_arity, lookup};
use super::*;

const SYNTAX_ERROR: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

fn req(line: &str) -> Vec<Bytes> {
    line.split(' ')
        .map(|p| {
            let p = if p == "''" { "" } else { p };
            Bytes::copy_from_slice(p.as_bytes())
        })
        .collect()
}

/// Key positions of a request, or its error text.
fn keys(line: &str) -> Result<Vec<usize>, String> {
    let args = req(line);
    let spec = lookup(&args).ok_or("unknown command")?;
    let mut out = vec![99];
    let r = key_positions(spec, &args, &mut out);
    r.map(|()| out.clone())
        .inspect_err(|_| assert!(out.is_empty()))
        .map_err(|e| e.to_string())
}

fn ok(line: &str) -> Vec<usize> {
    let args = req(line);
    let spec = lookup(&args).expect("known command");
    assert!(check_arity(spec, args.len()), "arity of {line}");
    keys(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn err(line: &str) -> String {
    match keys(line) {
        Ok(k) => panic!("{line}: expected an error, got {k:?}"),
        Err(e) => e,
    }
}

#[test]
fn simple_specs() {
    assert_eq!(ok("get k"), [1]);
    assert_eq!(ok("GET k"), [1]);
    assert_eq!(ok("set k v ex 10 get"), [1]);
    assert_eq!(ok("mget a b c"), [1, 2, 3]);
    assert_eq!(ok("mset a 1 b 2 c 3"), [1, 3, 5]);
    assert_eq!(ok("del a b"), [1, 2]);
    assert_eq!(ok("lmove a b left right"), [1, 2]);
    assert_eq!(ok("blpop a b 0"), [1, 2]);
    assert_eq!(ok("object encoding k"), [2]);
    assert_eq!(ok("xinfo stream s full"), [2]);
    assert_eq!(ok("memory usage k"), [2]);
    assert_eq!(ok("ping"), Vec::<usize>::new());
    assert_eq!(ok("config get maxmemory"), Vec::<usize>::new());
    assert_eq!(ok("bitop and d a b"), [2, 3, 4]);
}

#[test]
fn shard_channels_are_slot_positions_not_keys() {
    let args = req("ssubscribe a b c");
    let spec = lookup(&args).expect("ssubscribe");
    let mut out = Vec::new();
    assert_eq!(key_positions(spec, &args, &mut out), Ok(()));
    assert!(out.is_empty());
    assert_eq!(slot_positions(spec, &args, &mut out), Ok(()));
    assert_eq!(out, [1, 2, 3]);
    let args = req("spublish ch msg");
    let spec = lookup(&args).expect("spublish");
    assert_eq!(slot_positions(spec, &args, &mut out), Ok(()));
    assert_eq!(out, [1]);
    let args = req("sunsubscribe");
    let spec = lookup(&args).expect("sunsubscribe");
    assert_eq!(slot_positions(spec, &args, &mut out), Ok(()));
    assert!(out.is_empty());
}

#[test]
fn sort() {
    assert_eq!(ok("sort k"), [1]);
    assert_eq!(ok("sort k store d"), [1, 3]);
    assert_eq!(
        ok("SORT k BY w_* LIMIT 0 10 GET # GET o_* DESC ALPHA STORE d"),
        [1, 14]
    );
    assert_eq!(ok("sort k store d1 store d2"), [1, 5]);
    // "store" as a GET pattern or LIMIT value is not the keyword
    assert_eq!(ok("sort k get store"), [1]);
    assert_eq!(ok("sort k by store limit store store"), [1]);
    // STORE without destination: the command fails with a syntax error wherever it goes
    assert_eq!(ok("sort k store"), [1]);
    assert_eq!(ok("sort_ro k by x get y"), [1]);
}

#[test]
fn migrate() {
    assert_eq!(ok("migrate h 6379 k 0 1000"), [3]);
    assert_eq!(ok("migrate h 6379 k 0 1000 copy replace"), [3]);
    assert_eq!(ok("migrate h 6379 '' 0 1000 keys a b c"), [7, 8, 9]);
    assert_eq!(
        ok("migrate h 6379 '' 0 1000 copy auth keys auth2 u keys keys a b"),
        [13, 14]
    );
    let e = err("migrate h 6379 k 0 1000 keys a b");
    assert!(e.contains("must be set to the empty string"), "{e}");
}

#[test]
fn georadius() {
    assert_eq!(ok("georadius k 0 0 10 km"), [1]);
    assert_eq!(ok("georadius k 0 0 10 km withdist store d"), [1, 8]);
    assert_eq!(ok("georadius k 0 0 10 km storedist d"), [1, 7]);
    assert_eq!(ok("georadius k 0 0 10 km store d1 storedist d2"), [1, 7, 9]);
    assert_eq!(ok("georadius k 0 0 10 km count 5 any store store"), [1, 10]);
    assert_eq!(ok("georadiusbymember k m 10 km store d"), [1, 6]);
    // a member named "store" is not the keyword
    assert_eq!(ok("georadiusbymember k store 10 km"), [1]);
    assert_eq!(ok("georadius_ro k 0 0 10 km"), [1]);
}

#[test]
fn xread() {
    assert_eq!(ok("xread streams a 0"), [2]);
    assert_eq!(ok("XREAD COUNT 10 BLOCK 0 STREAMS a b 0 0"), [6, 7]);
    assert_eq!(ok("xread streams streams streams 0 0"), [2, 3]);
    assert_eq!(ok("xreadgroup group g c streams a 0"), [5]);
    assert_eq!(
        ok("xreadgroup group streams streams noack streams a b > >"),
        [6, 7]
    );
    assert!(err("xread streams a b c").starts_with("ERR Unbalanced XREAD"));
    let blocks = |line: &str| {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|a| Bytes::from(a.to_string()))
            .collect();
        xread_blocks(&args, args[0].eq_ignore_ascii_case(b"xreadgroup"))
    };
    assert!(blocks("XREADGROUP GROUP g streams BLOCK 0 STREAMS s >"));
    assert!(blocks(
        "xreadgroup group streams block noack block 10 streams s >"
    ));
    assert!(!blocks("XREADGROUP GROUP block c STREAMS s >"));
    assert!(!blocks("XREAD COUNT 1 STREAMS block 0"));
    assert!(blocks("XREAD COUNT 1 BLOCK 5 STREAMS s 0"));
    assert!(err("xread count 1 streams").starts_with("ERR Unbalanced XREAD"));
    assert_eq!(err("xread count 1 a 0"), SYNTAX_ERROR);
    assert_eq!(err("xread block 0 count 1"), SYNTAX_ERROR);
    assert!(err("xread group g c streams a 0").contains("only supported by XREADGROUP"));
    assert!(err("xread noack streams a 0").contains("only supported by XREADGROUP"));
    assert_eq!(
        err("xreadgroup count 1 noack streams a 0"),
        "ERR Missing GROUP option for XREADGROUP"
    );
}

#[test]
fn scripts() {
    assert_eq!(ok("eval s 0"), Vec::<usize>::new());
    assert_eq!(ok("eval s 0 a b"), Vec::<usize>::new());
    assert_eq!(ok("eval s 2 a b c"), [3, 4]);
    assert_eq!(ok("EVALSHA sha 1 a"), [3]);
    assert_eq!(ok("eval_ro s 1 a"), [3]);
    assert_eq!(ok("evalsha_ro s 1 a"), [3]);
    assert_eq!(ok("fcall f 2 a b x"), [3, 4]);
    assert_eq!(ok("fcall_ro f 1 a"), [3]);
    assert_eq!(
        err("eval s 3 a b"),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(err("eval s -1 a"), "ERR Number of keys can't be negative");
    assert_eq!(err("eval s x a"), NOT_INTEGER);
    assert_eq!(err("eval s 01 a"), NOT_INTEGER);
    assert_eq!(err("eval s +1 a"), NOT_INTEGER);
    assert_eq!(err("eval s 99999999999999999999 a"), NOT_INTEGER);
    assert_eq!(
        err("fcall f 9223372036854775807 a"),
        "ERR Number of keys can't be greater than number of args"
    );
}

#[test]
fn sorted_set_numkeys() {
    assert_eq!(ok("zunionstore d 2 a b weights 1 2"), [1, 3, 4]);
    assert_eq!(ok("zinterstore d 1 a aggregate max"), [1, 3]);
    assert_eq!(ok("zdiffstore d 2 a b"), [1, 3, 4]);
    assert_eq!(ok("zunion 2 a b withscores"), [2, 3]);
    assert_eq!(ok("zinter 1 a"), [2]);
    assert_eq!(ok("zdiff 2 a b"), [2, 3]);
    assert_eq!(ok("zintercard 2 a b limit 5"), [2, 3]);
    assert_eq!(
        err("zunionstore d 0 a"),
        "ERR at least 1 input key is needed for 'zunionstore' command"
    );
    assert_eq!(
        err("zdiff -3 a"),
        "ERR at least 1 input key is needed for 'zdiff' command"
    );
    assert_eq!(err("zinterstore d 3 a b"), SYNTAX_ERROR);
    assert_eq!(err("zunion x a"), NOT_INTEGER);
    assert_eq!(err("zintercard 3 a b"), SYNTAX_ERROR);
}

#[test]
fn multi_pop_and_intercard() {
    assert_eq!(ok("lmpop 2 a b left count 3"), [2, 3]);
    assert_eq!(ok("blmpop 0.5 1 a right"), [3]);
    assert_eq!(ok("zmpop 1 a min"), [2]);
    assert_eq!(ok("bzmpop 0 2 a b max"), [3, 4]);
    assert_eq!(ok("sintercard 3 a b c limit 1"), [2, 3, 4]);
    let gt0 = "ERR numkeys should be greater than 0";
    assert_eq!(err("lmpop 0 a left"), gt0);
    assert_eq!(err("lmpop x a left"), gt0);
    assert_eq!(err("blmpop 0 -1 a left"), gt0);
    assert_eq!(err("sintercard 0 a"), gt0);
    assert_eq!(err("lmpop 3 a left"), SYNTAX_ERROR);
    assert_eq!(err("bzmpop 0 4 a b min"), SYNTAX_ERROR);
    assert_eq!(
        err("sintercard 3 a b"),
        "ERR Number of keys can't be greater than number of args"
    );
}

#[test]
fn short_requests_never_panic() {
    for cmd in super::super::COMMANDS {
        let entries = std::iter::once(cmd).chain(cmd.subcommands);
        for spec in entries {
            let mut args: Vec<Bytes> = spec
                .name
                .split('|')
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect();
            let mut out = Vec::new();
            for n in 0..8 {
                for prefix in 0..=args.len() {
                    let r = key_positions(spec, &args[..prefix], &mut out);
                    if r.is_ok() {
                        assert!(out.iter().all(|&i| i < prefix), "{}", spec.name);
                    }
                }
                args.push(Bytes::from(if n % 2 == 0 { "1" } else { "streams" }));
            }
        }
    }
}

#[test]
fn parse_ll_matches_string2ll() {
    assert_eq!(parse_ll(b"0"), Some(0));
    assert_eq!(parse_ll(b"12"), Some(12));
    assert_eq!(parse_ll(b"-12"), Some(-12));
    assert_eq!(parse_ll(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_ll(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"-0",
        b"00",
        b"01",
        b"+1",
        b" 1",
        b"1 ",
        b"1a",
        b"9223372036854775808",
    ] {
        assert_eq!(parse_ll(bad), None, "{:?}", bad);
    }
}

#[test]
fn the_one_key_shortcut_agrees_with_the_spec_walk_for_every_command() {
    let mut shortcut = 0;
    for cmd in super::super::COMMANDS {
        for spec in std::iter::once(cmd).chain(cmd.subcommands) {
            if !is_one_key_at_first_argument(spec) {
                continue;
            }
            shortcut += 1;
            assert!(matches!(special(spec.name), Special::None), "{}", spec.name);
            for argc in 0..6 {
                let args: Vec<Bytes> = (0..argc).map(|i| Bytes::from(format!("a{i}"))).collect();
                let (mut fast, mut walked) = (vec![7], vec![7]);
                let fast_result = fill(spec, &args, &mut fast, false);
                walked.clear();
                let walked_result = from_specs(spec, &args, &mut walked, false, None);
                assert_eq!(fast_result, walked_result, "{} argc {argc}", spec.name);
                if walked_result.is_ok() {
                    assert_eq!(fast, walked, "{} argc {argc}", spec.name);
                }
            }
        }
    }
    // GET, SET, INCR, HGET, LPUSH ... : most of the table.
    assert!(shortcut > 100, "{shortcut}");
}
