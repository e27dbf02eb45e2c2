//! Reading the nodes' replies to an emulation's steps (DUMP, PTTL, TYPE, SISMEMBER, LINDEX,
//! RESTORE, ...). A reply is input, not an order: each is matched against what its command
//! answers, and anything else becomes a clear error for the client, never a write.
//!
//! Invariant: a step's outcome is taken as known only from a reply the node itself gave; the
//! proxy's own errors for a lost connection or a timeout ("the command may or may not have
//! run") leave the outcome unknown, and the client's error says so.

use crate::route::resp::{self, Value};
use bytes::Bytes;

/// The reply to DUMP: the payload, or `None` for a missing key.
pub fn dump(frame: &Bytes) -> Option<Option<Bytes>> {
    match Value::decode(frame) {
        Ok(Value::Bulk(v)) => Some(v),
        _ => None,
    }
}

/// What PTTL says about a key about to be copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No expiry (RESTORE's TTL argument 0).
    Persistent,
    /// Milliseconds left (at least 1: a key expiring this millisecond must not become
    /// persistent in its copy).
    Ms(i64),
    /// The key is gone (expired or deleted since it was read).
    Gone,
}

/// The reply to PTTL, or `None` when it is not one.
pub fn pttl(frame: &Bytes) -> Option<Ttl> {
    match Value::decode(frame) {
        Ok(Value::Int(-1)) => Some(Ttl::Persistent),
        Ok(Value::Int(-2)) => Some(Ttl::Gone),
        Ok(Value::Int(n)) if n >= 0 => Some(Ttl::Ms(n.max(1))),
        _ => None,
    }
}

/// Whether the reply is `+OK` (RESTORE's success).
pub fn is_ok(frame: &[u8]) -> bool {
    frame == b"+OK\r\n"
}

/// The type name TYPE answered.
pub fn type_name(frame: &Bytes) -> Option<String> {
    match Value::decode(frame) {
        Ok(Value::Simple(t)) => Some(t),
        _ => None,
    }
}

/// The reply to SISMEMBER.
pub fn is_member(frame: &Bytes) -> Option<bool> {
    match Value::decode(frame) {
        Ok(Value::Int(1)) => Some(true),
        Ok(Value::Int(0)) => Some(false),
        _ => None,
    }
}

/// The reply to LINDEX: the element, or `None` for an empty or missing list.
pub fn element(frame: &Bytes) -> Option<Option<Bytes>> {
    dump(frame)
}

/// Whether the reply is an integer (the reply of SADD, LPUSH, DEL, ...).
pub fn is_int(frame: &Bytes) -> bool {
    matches!(Value::decode(frame), Ok(Value::Int(_)))
}

/// Whether a failed step may still have run: the proxy lost the connection or the reply (its
/// own error says "may or may not have run"), or the reply was not one the command gives.
pub fn outcome_unknown(frame: &[u8]) -> bool {
    !resp::is_error(frame) || contains(frame, b"may or may not have run")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The text of a reply for an error message: an error's text, or "unexpected reply".
pub fn why(frame: &[u8]) -> String {
    if resp::is_error(frame) {
        String::from_utf8_lossy(frame.get(1..).unwrap_or_default())
            .trim_end()
            .to_string()
    } else {
        "unexpected reply".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn replies_of_the_expected_type_are_read_and_others_refused() {
        assert_eq!(dump(&f("$2\r\nab\r\n")), Some(Some(f("ab"))));
        assert_eq!(dump(&f("$-1\r\n")), Some(None));
        for bad in ["-ERR x\r\n", ":1\r\n", "+OK\r\n", "*0\r\n", "", "$5\r\nab"] {
            assert_eq!(dump(&f(bad)), None, "{bad:?}");
            assert_eq!(element(&f(bad)), None, "{bad:?}");
        }
        assert_eq!(pttl(&f(":-1\r\n")), Some(Ttl::Persistent));
        assert_eq!(pttl(&f(":-2\r\n")), Some(Ttl::Gone));
        assert_eq!(pttl(&f(":1500\r\n")), Some(Ttl::Ms(1500)));
        assert_eq!(pttl(&f(":0\r\n")), Some(Ttl::Ms(1)));
        for bad in [":-3\r\n", "-LOADING x\r\n", "$1\r\n5\r\n", "+5\r\n"] {
            assert_eq!(pttl(&f(bad)), None, "{bad:?}");
        }
        assert!(is_ok(b"+OK\r\n"));
        assert!(!is_ok(b"+QUEUED\r\n") && !is_ok(b"-ERR x\r\n") && !is_ok(b":1\r\n"));
        assert_eq!(type_name(&f("+set\r\n")).as_deref(), Some("set"));
        assert_eq!(type_name(&f("$3\r\nset\r\n")), None);
        assert_eq!(type_name(&f("-ERR x\r\n")), None);
        assert_eq!(is_member(&f(":1\r\n")), Some(true));
        assert_eq!(is_member(&f(":0\r\n")), Some(false));
        assert_eq!(is_member(&f(":2\r\n")), None);
        assert_eq!(is_member(&f("-WRONGTYPE x\r\n")), None);
        assert!(is_int(&f(":3\r\n")) && !is_int(&f("+OK\r\n")) && !is_int(&f("-ERR\r\n")));
    }

    #[test]
    fn a_lost_reply_leaves_the_outcome_unknown() {
        assert!(!outcome_unknown(
            b"-BUSYKEY Target key name already exists.\r\n"
        ));
        assert!(!outcome_unknown(
            b"-ERR slotproxy: backend a:1 is unreachable (x)\r\n"
        ));
        assert!(outcome_unknown(
            b"-ERR slotproxy: no reply from backend a:1 within request_timeout (x); the command may or may not have run\r\n"
        ));
        assert!(outcome_unknown(b":1\r\n"));
        assert_eq!(why(b"-ERR boom\r\n"), "ERR boom");
        assert_eq!(why(b":1\r\n"), "unexpected reply");
    }
}
