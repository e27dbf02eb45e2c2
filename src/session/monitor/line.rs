//! MONITOR lines: which requests monitors see, which arguments they do not, and the text.
//!
//! Everything here is pure and follows what a Redis 7.0 node prints (checked against one in
//! `tests/monitor.rs`): `+<seconds>.<microseconds> [0 <client address>] "arg" "arg" ...`,
//! each argument escaped as Redis's `sdscatrepr` does, so a line is one simple string
//! whatever bytes the request carried.

use crate::route::command::{CommandSpec, FLAG_ADMIN, FLAG_SKIP_MONITOR};
use crate::route::router::Route;
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// What Redis shows in place of a secret argument.
pub const REDACTED: &[u8] = b"(redacted)";

/// Whether a request routed to `route` is shown to monitors, as Redis 7.0 decides: not when
/// it is refused before it runs (an unknown command, a wrong arity, NOAUTH, NOPERM,
/// CROSSSLOT, the proxy's own refusals: every [`Route::Reply`]), nor when Redis flags the
/// command `admin` (CONFIG, CLIENT LIST, SLOWLOG, MONITOR itself, ...). `skip_monitor`
/// commands are not shown either, except the script calls (EVAL*, FCALL*, the only ones Redis
/// 7.0 flags so): Redis shows those when its script engine starts them, once, like any other
/// command. The proxy's PROXY commands are shown, with secrets hidden ([`secrets`]).
pub fn shown(route: &Route, spec: Option<&CommandSpec>) -> bool {
    if matches!(route, Route::Reply(_)) {
        return false;
    }
    spec.is_none_or(|s| {
        s.flags & FLAG_ADMIN == 0 && (s.flags & FLAG_SKIP_MONITOR == 0 || script_call(s.name))
    })
}

fn script_call(name: &str) -> bool {
    matches!(
        name,
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
    )
}

/// The positions of the arguments shown as `(redacted)`: as Redis 7.0, every argument of AUTH,
/// the user and password of each HELLO `AUTH` option, the password of MIGRATE's `AUTH` and
/// the user and password of its `AUTH2`; and the value of `PROXY CONFIG SET` for a setting
/// that holds a password (or the users). Redis reads HELLO's options only after a valid
/// protocol version and prints them unredacted otherwise; the proxy hides them whatever the
/// version says. Empty (no allocation) for every other request.
pub fn secrets(args: &[Bytes], spec: Option<&CommandSpec>) -> Vec<usize> {
    let is = |i: usize, word: &str| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    };
    let name = match spec {
        Some(s) => s.name,
        None if is(0, "proxy") => "proxy",
        None => return Vec::new(),
    };
    let mut out = Vec::new();
    match name {
        "auth" => out.extend(1..args.len()),
        "hello" => {
            let numeric = args
                .get(1)
                .is_some_and(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit));
            let mut j = if numeric { 2 } else { 1 };
            while j < args.len() {
                let more = args.len() - 1 - j;
                if is(j, "auth") && more >= 2 {
                    out.extend([j + 1, j + 2]);
                    j += 3;
                } else if is(j, "setname") && more >= 1 {
                    j += 2;
                } else {
                    break;
                }
            }
        }
        "migrate" => {
            // Redis's own option loop: it stops at KEYS (the rest are keys) or at a syntax
            // error.
            let mut j = 6;
            while j < args.len() {
                let more = args.len() - 1 - j;
                if is(j, "copy") || is(j, "replace") {
                    j += 1;
                } else if is(j, "auth") && more >= 1 {
                    out.push(j + 1);
                    j += 2;
                } else if is(j, "auth2") && more >= 2 {
                    out.extend([j + 1, j + 2]);
                    j += 3;
                } else {
                    break;
                }
            }
        }
        "proxy" if is(1, "config") && is(2, "set") && args.len() > 4 => {
            let setting = String::from_utf8_lossy(&args[3]).to_ascii_lowercase();
            if setting.contains("password") || setting == "users" {
                out.push(4);
            }
        }
        _ => {}
    }
    out
}

/// The line monitors get for a request with `args` from the client at `addr`, received at
/// `now`; the arguments at `secrets` are shown as `(redacted)`.
pub fn format(now: SystemTime, addr: &str, args: &[Bytes], secrets: &[usize]) -> Bytes {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let size: usize = args.iter().map(|a| a.len() + 3).sum();
    let mut out = BytesMut::with_capacity(40 + addr.len() + size);
    // Writing to a BytesMut cannot fail.
    let _ = write!(
        out,
        "+{}.{:06} [0 {addr}]",
        since.as_secs(),
        since.subsec_micros()
    );
    for (i, a) in args.iter().enumerate() {
        out.put_slice(b" \"");
        if secrets.contains(&i) {
            out.put_slice(REDACTED);
        } else {
            escape(&mut out, a);
        }
        out.put_u8(b'"');
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// Appends `arg` escaped as Redis's `sdscatrepr`: `\"` and `\\`, the C escapes `\n` `\r` `\t`
/// `\a` `\b`, printable ASCII as is, and `\xhh` (lowercase) for every other byte.
fn escape(out: &mut BytesMut, arg: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &c in arg {
        match c {
            b'\\' | b'"' => out.put_slice(&[b'\\', c]),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            0x07 => out.put_slice(b"\\a"),
            0x08 => out.put_slice(b"\\b"),
            0x20..=0x7e => out.put_u8(c),
            _ => out.put_slice(&[b'\\', b'x', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::resp::test_args as args;
    use std::time::Duration;

    fn line(a: &[&str]) -> String {
        let a = args(a);
        let spec = crate::route::router::analyse(&a, &mut Vec::new()).spec;
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_042);
        String::from_utf8(format(at, "127.0.0.1:5000", &a, &secrets(&a, spec)).to_vec()).unwrap()
    }

    #[test]
    fn lines_escape_every_byte_as_redis_does() {
        let a = vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"k"),
            Bytes::from_static(b"a\"b\\c\n\r\t\x07\x08\x00\xff\x7f \x1b~"),
        ];
        let at = UNIX_EPOCH + Duration::new(1_796_284_775, 500_907_123);
        assert_eq!(
            &format(at, "127.0.0.1:36208", &a, &[])[..],
            &b"+1796284775.500907 [0 127.0.0.1:36208] \"SET\" \"k\" \"a\\\"b\\\\c\\n\\r\\t\\a\\b\\x00\\xff\\x7f \\x1b~\"\r\n"[..]
        );
        assert_eq!(
            line(&["get", "k"]),
            "+1700000000.000042 [0 127.0.0.1:5000] \"get\" \"k\"\r\n"
        );
    }

    #[test]
    fn secrets_are_redacted_as_redis_7_does() {
        let tail = |a: &[&str]| {
            let l = line(a);
            l.split_once("] ").unwrap().1.trim_end().to_string()
        };
        assert_eq!(tail(&["AUTH", "pw"]), r#""AUTH" "(redacted)""#);
        assert_eq!(
            tail(&["auth", "u", "pw"]),
            r#""auth" "(redacted)" "(redacted)""#
        );
        assert_eq!(
            tail(&["HELLO", "3", "AUTH", "u", "pw", "SETNAME", "x"]),
            r#""HELLO" "3" "AUTH" "(redacted)" "(redacted)" "SETNAME" "x""#
        );
        assert_eq!(
            tail(&["HELLO", "3", "SETNAME", "x", "auth", "u", "pw"]),
            r#""HELLO" "3" "SETNAME" "x" "auth" "(redacted)" "(redacted)""#
        );
        // No protocol version: hidden all the same.
        assert_eq!(
            tail(&["HELLO", "AUTH", "u", "pw"]),
            r#""HELLO" "AUTH" "(redacted)" "(redacted)""#
        );
        assert_eq!(tail(&["HELLO", "2"]), r#""HELLO" "2""#);
        assert_eq!(
            tail(&["MIGRATE", "h", "1", "k", "0", "10", "COPY", "AUTH", "pw"]),
            r#""MIGRATE" "h" "1" "k" "0" "10" "COPY" "AUTH" "(redacted)""#
        );
        assert_eq!(
            tail(&["MIGRATE", "h", "1", "", "0", "10", "AUTH2", "u", "pw", "KEYS", "auth", "x"]),
            r#""MIGRATE" "h" "1" "" "0" "10" "AUTH2" "(redacted)" "(redacted)" "KEYS" "auth" "x""#
        );
        assert_eq!(
            tail(&["PROXY", "CONFIG", "SET", "Backend_Password", "s3"]),
            r#""PROXY" "CONFIG" "SET" "Backend_Password" "(redacted)""#
        );
        assert_eq!(
            tail(&["proxy", "config", "set", "max_pipeline", "10"]),
            r#""proxy" "config" "set" "max_pipeline" "10""#
        );
        assert_eq!(tail(&["SET", "auth", "pw"]), r#""SET" "auth" "pw""#);
    }

    #[test]
    fn admin_commands_and_refused_requests_are_not_shown() {
        let shows = |a: &[&str]| {
            let a = args(a);
            let r = crate::route::router::analyse(&a, &mut Vec::new());
            shown(&r.route, r.spec)
        };
        for a in [
            &["GET", "k"][..],
            &["PING"],
            &["AUTH", "x"],
            &["FLUSHALL"],
            &["EVAL", "return 1", "0"],
            &["FCALL_RO", "f", "0"],
            &["INFO"],
            &["CLIENT", "SETNAME", "n"],
            &["PROXY", "SLOTS"],
            &["QUIT"],
        ] {
            assert!(shows(a), "{a:?}");
        }
        for a in [
            &["CONFIG", "GET", "x"][..],
            &["CLIENT", "LIST"],
            &["SLOWLOG", "LEN"],
            &["MONITOR"],
            &["NOSUCH"],
            &["GET"],
        ] {
            assert!(!shows(a), "{a:?}");
        }
        // Keys of several slots: the session turns a refused one into its CROSSSLOT reply
        // before monitors see it (`monitor_gate`); an emulated one runs, and is shown.
        let a = args(&["RENAME", "a", "b"]);
        assert_eq!(
            crate::route::router::analyse(&a, &mut Vec::new()).route,
            crate::route::router::Route::CrossSlot
        );
    }
}
