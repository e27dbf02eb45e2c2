//! Merging the replies of a command that was split per slot back into the one reply the
//! client expects (pure functions; the reply frames are passed in, nothing is sent).
//!
//! Invariant: the merged reply is what a single Redis would have answered for the whole
//! command, or the first error one of the parts returned.

use crate::resp;
use bytes::{Bytes, BytesMut};

/// How the parts of a split command combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeKind {
    /// MGET: one array element per key, in the client's key order.
    Mget,
    /// MSET: `+OK` when every part said OK.
    AllOk,
    /// DEL, UNLINK, EXISTS, TOUCH: the sum of the parts' integers.
    Sum,
}

/// Merges the parts' reply frames. `order[i]` is the part that holds the client's i-th key
/// (used by MGET; each part's elements are in the client's order within that part).
pub fn merge(kind: MergeKind, order: &[u32], parts: &[Bytes]) -> Bytes {
    if let Some(err) = parts.iter().find(|p| resp::is_error(p)) {
        return err.clone();
    }
    match kind {
        MergeKind::AllOk => resp::simple("OK"),
        MergeKind::Sum => {
            let mut total: i64 = 0;
            for p in parts {
                match parse_int_reply(p) {
                    Some(n) => total = total.saturating_add(n),
                    None => return unexpected(p),
                }
            }
            resp::int(total)
        }
        MergeKind::Mget => {
            let mut elements = Vec::with_capacity(parts.len());
            for p in parts {
                match resp::array_elements(p) {
                    Some(e) => elements.push(e.into_iter()),
                    None => return unexpected(p),
                }
            }
            let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>());
            resp::put_array_header(&mut out, order.len());
            for &part in order {
                match elements.get_mut(part as usize).and_then(|it| it.next()) {
                    Some(e) => out.extend_from_slice(&e),
                    None => return resp::error("ERR slotproxy: a backend's MGET reply was short"),
                }
            }
            out.freeze()
        }
    }
}

fn parse_int_reply(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

fn unexpected(frame: &[u8]) -> Bytes {
    resp::error(&format!(
        "ERR slotproxy: unexpected reply from a backend: {:?}",
        String::from_utf8_lossy(&frame[..frame.len().min(64)])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn mget_restores_key_order() {
        // keys: k0 (part 1), k1 (part 0), k2 (part 1)
        let parts = [b(b"*1\r\n$2\r\nv1\r\n"), b(b"*2\r\n$2\r\nv0\r\n$-1\r\n")];
        let got = merge(MergeKind::Mget, &[1, 0, 1], &parts);
        assert_eq!(&got[..], b"*3\r\n$2\r\nv0\r\n$2\r\nv1\r\n$-1\r\n");
    }

    #[test]
    fn sums_and_errors() {
        assert_eq!(
            &merge(MergeKind::Sum, &[], &[b(b":2\r\n"), b(b":3\r\n")])[..],
            b":5\r\n"
        );
        assert_eq!(
            &merge(MergeKind::AllOk, &[], &[b(b"+OK\r\n"), b(b"-ERR boom\r\n")])[..],
            b"-ERR boom\r\n"
        );
        assert!(resp::is_error(&merge(
            MergeKind::Sum,
            &[],
            &[b(b"+OK\r\n")]
        )));
        assert!(resp::is_error(&merge(
            MergeKind::Mget,
            &[0, 0],
            &[b(b"*1\r\n:1\r\n")]
        )));
    }
}
