//! What one client `SCAN` call gathers. A cluster SCAN moves through node steps (visits of one
//! master, checks; see [`crate::route::fanout`]); one client call runs as many of them as it
//! takes to fill the batch, so a small keyspace comes back whole with cursor 0 in one call, as
//! from a single Redis, and a `MATCH` / `TYPE` filter does not hand out empty batches while
//! keys are left.
//!
//! A call ends after the step that:
//! - ends the iteration (cursor 0), or restarts it (the slot assignment changed);
//! - brings the batch to `COUNT` keys or more (Redis's default 10);
//! - is the call's [`MAX_STEPS_PER_CALL`]th, so one SCAN with a filter that matches nothing
//!   cannot keep the nodes busy for a whole large keyspace (a check, which asks every master
//!   at once, counts as one step).
//!
//! Invariants: the cursor handed out is the one after the last step whose keys are in the
//! batch, so a call is exactly the sequence of calls a client would have made one step at a
//! time, and every guarantee of the cluster cursor holds unchanged. A step that fails after
//! others succeeded ends the call with what was gathered and the cursor before the failed
//! step (the next call runs it again and reports its error); a first step that fails is the
//! call's error. Everything here is pure; the session sends the steps.

use crate::route::fanout::ScanCursor;
use crate::route::resp;
use bytes::{Bytes, BytesMut};

/// Most node steps one client SCAN call runs. Each step is one round trip (a visit of one
/// master with the client's COUNT, or a check of every master at once).
pub const MAX_STEPS_PER_CALL: u32 = 32;

/// Redis's COUNT when a SCAN names none.
pub const DEFAULT_COUNT: usize = 10;

/// The COUNT a SCAN request (`SCAN cursor [MATCH p] [COUNT n] [TYPE t]`) asks for: the last
/// `COUNT` option, as Redis reads it; [`DEFAULT_COUNT`] when there is none or it is not a
/// positive number (the node then answers Redis's own error on the first step).
pub fn requested_count(args: &[Bytes]) -> usize {
    let mut count = DEFAULT_COUNT;
    let mut i = 2;
    while i + 1 < args.len() {
        if args[i].eq_ignore_ascii_case(b"count") {
            count = std::str::from_utf8(&args[i + 1])
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_COUNT);
        }
        i += 2;
    }
    count
}

/// Reads a node's SCAN reply: its own cursor and its keys (each an element frame, as the
/// node sent it). An error reply comes back as the `Err`; so does a reply of another shape,
/// as an error naming it.
pub fn read_node_reply(frame: &Bytes) -> Result<(u64, Vec<Bytes>), Bytes> {
    if resp::is_error(frame) {
        return Err(frame.clone());
    }
    let unexpected = || {
        resp::error(&format!(
            "ERR slotproxy: unexpected SCAN reply from a backend: {:?}",
            String::from_utf8_lossy(&frame[..frame.len().min(64)])
        ))
    };
    let elements = match resp::array_elements(frame) {
        Some(e) if e.len() == 2 => e,
        _ => return Err(unexpected()),
    };
    let cursor = match resp::Value::decode(&elements[0]) {
        Ok(resp::Value::Bulk(Some(c))) => std::str::from_utf8(&c)
            .ok()
            .and_then(|c| c.parse::<u64>().ok()),
        _ => None,
    };
    match (cursor, resp::array_elements(&elements[1])) {
        (Some(c), Some(keys)) => Ok((c, keys)),
        _ => Err(unexpected()),
    }
}

/// The keys one client call gathered so far, and how many steps it ran.
#[derive(Debug)]
pub struct Batch {
    want: usize,
    keys: Vec<Bytes>,
    steps: u32,
}

impl Batch {
    /// An empty batch for a call that asked for `want` keys (its COUNT).
    pub fn new(want: usize) -> Batch {
        Batch {
            want,
            keys: Vec::new(),
            steps: 0,
        }
    }

    /// Records one step that succeeded, with the keys it returned (none for a check).
    pub fn add(&mut self, keys: Vec<Bytes>) {
        self.keys.extend(keys);
        self.steps += 1;
    }

    /// Steps run so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Whether the call runs another step after one that handed out the cluster cursor
    /// `next`: not when the iteration ended or restarts, the batch is full, or the call ran
    /// its [`MAX_STEPS_PER_CALL`].
    pub fn goes_on(&self, next: u64) -> bool {
        // Mid-iteration cursors carry the assignment's fingerprint, never 0; a restart has 0.
        let restarts = ScanCursor::decode(next).fingerprint == 0;
        next != 0 && !restarts && self.keys.len() < self.want && self.steps < MAX_STEPS_PER_CALL
    }

    /// The client's reply: `[next, [keys...]]`.
    pub fn reply(&self, next: u64) -> Bytes {
        let cursor = next.to_string();
        let size: usize = self.keys.iter().map(Bytes::len).sum();
        let mut out = BytesMut::with_capacity(size + 48);
        resp::put_array_header(&mut out, 2);
        resp::put_bulk(&mut out, cursor.as_bytes());
        resp::put_array_header(&mut out, self.keys.len());
        for k in &self.keys {
            out.extend_from_slice(k);
        }
        out.freeze()
    }

    /// The client's reply when a step failed with `error`: the error itself if nothing ran
    /// before it, otherwise what was gathered, with `current`, the cursor the failed step
    /// started from.
    pub fn fail(&self, error: Bytes, current: u64) -> Bytes {
        if self.steps == 0 {
            error
        } else {
            self.reply(current)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn count_is_read_as_redis_does() {
        assert_eq!(requested_count(&args("SCAN 0")), 10);
        assert_eq!(requested_count(&args("SCAN 0 COUNT 100")), 100);
        assert_eq!(requested_count(&args("SCAN 0 count 5 MATCH a* COUNT 7")), 7);
        assert_eq!(requested_count(&args("SCAN 0 MATCH count TYPE set")), 10);
        // Not a positive number: the default here, the node's error on the first step.
        assert_eq!(requested_count(&args("SCAN 0 COUNT 0")), 10);
        assert_eq!(requested_count(&args("SCAN 0 COUNT x")), 10);
        assert_eq!(requested_count(&args("SCAN 0 COUNT")), 10);
    }

    #[test]
    fn node_replies_are_read_or_refused() {
        let frame = Bytes::from_static(b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        let (cursor, keys) = read_node_reply(&frame).unwrap();
        assert_eq!(cursor, 17);
        assert_eq!(keys, vec![resp::bulk(b"a"), resp::bulk(b"b")]);
        let err = Bytes::from_static(b"-ERR syntax error\r\n");
        assert_eq!(read_node_reply(&err).unwrap_err(), err);
        for bad in [
            &b"+OK\r\n"[..],
            b"*1\r\n$1\r\n0\r\n",
            b"*2\r\n$1\r\nx\r\n*0\r\n",
            b"*2\r\n$1\r\n0\r\n$1\r\na\r\n",
        ] {
            let e = read_node_reply(&Bytes::from_static(bad)).unwrap_err();
            assert!(
                String::from_utf8_lossy(&e).contains("unexpected SCAN reply"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_call_goes_on_until_full_done_restarted_or_out_of_steps() {
        let mid = ScanCursor {
            position: 1,
            fingerprint: 77,
            node_cursor: 0,
        }
        .encode()
        .unwrap();
        let restart = ScanCursor {
            position: 1023,
            fingerprint: 0,
            node_cursor: 0,
        }
        .encode()
        .unwrap();
        let mut b = Batch::new(3);
        b.add(vec![resp::bulk(b"a")]);
        assert!(b.goes_on(mid));
        assert!(!b.goes_on(0), "the iteration ended");
        assert!(!b.goes_on(restart), "the iteration restarts");
        b.add(vec![resp::bulk(b"b"), resp::bulk(b"c")]);
        assert!(!b.goes_on(mid), "the batch is full");
        let mut empty = Batch::new(10);
        for _ in 0..MAX_STEPS_PER_CALL - 1 {
            empty.add(Vec::new());
            assert!(empty.goes_on(mid));
        }
        empty.add(Vec::new());
        assert!(!empty.goes_on(mid), "out of steps");
    }

    #[test]
    fn replies_carry_every_key_and_failures_keep_what_was_gathered() {
        let mut b = Batch::new(10);
        let err = resp::error("ERR boom");
        assert_eq!(b.fail(err.clone(), 5), err);
        b.add(vec![resp::bulk(b"a")]);
        b.add(vec![resp::bulk(b"bc")]);
        assert_eq!(
            &b.reply(0)[..],
            b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
        );
        assert_eq!(b.fail(err, 42), b.reply(42));
        assert_eq!(b.steps(), 2);
    }
}
