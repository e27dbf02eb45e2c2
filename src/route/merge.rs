//! Merging the replies of a command that was split per slot, or sent to several nodes, back
//! into the one reply the client expects (pure functions; the reply frames are passed in,
//! nothing is sent).
//!
//! Invariant: the merged reply is what a single Redis would have answered for the whole
//! command, or an error: the first error one of the parts returned, or, for commands that must
//! succeed everywhere ([`MergeKind::Unanimous`]), an error naming every node that failed.

use crate::route::resp;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// How the parts of a split command combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeKind {
    /// MGET: one array element per key, in the client's key order.
    Mget,
    /// MSET: `+OK` when every part said OK.
    AllOk,
    /// DEL, UNLINK, EXISTS, TOUCH, DBSIZE, LATENCY RESET: the sum of the parts' integers.
    Sum,
    /// KEYS: the parts' arrays concatenated.
    Concat,
    /// FLUSHALL, FLUSHDB, SCRIPT LOAD / FLUSH, CONFIG SET / RESETSTAT / REWRITE, ACL SETUSER /
    /// DELUSER / SAVE / LOAD, SAVE, BGSAVE, BGREWRITEAOF: every node must succeed;
    /// the reply is the first part's (`+OK`, a script's SHA1). When every node answered the
    /// same error it is passed on unchanged (Redis's own text, as from a single server);
    /// otherwise the reply is an error naming each node that failed and why.
    Unanimous,
    /// SCRIPT KILL / FUNCTION KILL: `+OK` if any node succeeded (the one running the script);
    /// otherwise the first error (NOTBUSY from every node).
    AnyOk,
    /// SCRIPT EXISTS: per position, 1 only when every node has the script.
    AndPositions,
    /// RANDOMKEY: the first part (in send order) that is not nil; nil when all are.
    FirstNonNil,
    /// PUBSUB CHANNELS / SHARDCHANNELS: the parts' arrays merged, each element once, in order
    /// of first appearance.
    Union,
    /// PUBSUB NUMSUB / SHARDNUMSUB: `[name, count, name, count, ...]` from every node (the
    /// same names in the same order), counts summed.
    SumPairs,
    /// LASTSAVE: the smallest of the parts' integers (the oldest save among the nodes, so
    /// it moves past a time only once every node saved after it).
    Min,
    /// Per-node reports (LATENCY LATEST / HISTORY / DOCTOR, MEMORY STATS / DOCTOR, ...): each
    /// node's reply under its address, `[addr, reply, addr, reply, ...]` (a map for RESP3
    /// clients, see [`to_resp3`]). When a node failed, the error names each failed node, as
    /// for [`MergeKind::Unanimous`].
    ByNode,
}

/// Merges the parts' reply frames. `order[i]` is the part that holds the client's i-th key
/// (used by MGET; each part's elements are in the client's order within that part).
pub fn merge(kind: MergeKind, order: &[u32], parts: &[Bytes]) -> Bytes {
    merge_labeled(kind, order, parts, &[])
}

/// Like [`merge`], with the address of the node each part went to (`labels[i]` for
/// `parts[i]`), used to name the failed nodes in a [`MergeKind::Unanimous`] error.
pub fn merge_labeled(
    kind: MergeKind,
    order: &[u32],
    parts: &[Bytes],
    labels: &[Arc<str>],
) -> Bytes {
    if kind == MergeKind::Unanimous {
        return unanimous(parts, labels);
    }
    if kind == MergeKind::ByNode {
        if parts.iter().any(|p| resp::is_error(p)) {
            return unanimous(parts, labels);
        }
        let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len() + 32).sum());
        resp::put_array_header(&mut out, 2 * parts.len());
        for (i, p) in parts.iter().enumerate() {
            let label = labels.get(i).map_or(String::new(), |l| l.to_string());
            resp::put_bulk(&mut out, label.as_bytes());
            out.extend_from_slice(p);
        }
        return out.freeze();
    }
    if kind == MergeKind::AnyOk {
        return parts
            .iter()
            .find(|p| !resp::is_error(p))
            .or(parts.first())
            .cloned()
            .unwrap_or_else(|| resp::error("ERR slotproxy: no node answered"));
    }
    if let Some(err) = parts.iter().find(|p| resp::is_error(p)) {
        return err.clone();
    }
    match kind {
        MergeKind::Unanimous | MergeKind::ByNode => unanimous(parts, labels),
        MergeKind::AnyOk => parts.first().cloned().unwrap_or_default(),
        MergeKind::Min => {
            let mut least: Option<i64> = None;
            for p in parts {
                match parse_int_reply(p) {
                    Some(n) => least = Some(least.map_or(n, |l| l.min(n))),
                    None => return unexpected(p),
                }
            }
            match least {
                Some(n) => resp::int(n),
                None => resp::error("ERR slotproxy: no node answered"),
            }
        }
        MergeKind::Concat => {
            let mut elements = Vec::with_capacity(parts.len());
            let mut count = 0;
            for p in parts {
                match resp::array_elements(p) {
                    Some(e) => {
                        count += e.len();
                        elements.push(e);
                    }
                    None => return unexpected(p),
                }
            }
            let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>());
            resp::put_array_header(&mut out, count);
            for e in elements.iter().flatten() {
                out.extend_from_slice(e);
            }
            out.freeze()
        }
        MergeKind::Union => {
            let mut seen = std::collections::HashSet::new();
            let mut kept = Vec::new();
            for p in parts {
                let Some(elements) = resp::array_elements(p) else {
                    return unexpected(p);
                };
                for e in elements {
                    if seen.insert(e.clone()) {
                        kept.push(e);
                    }
                }
            }
            let mut out = BytesMut::with_capacity(kept.iter().map(|e| e.len()).sum::<usize>() + 16);
            resp::put_array_header(&mut out, kept.len());
            for e in kept {
                out.extend_from_slice(&e);
            }
            out.freeze()
        }
        MergeKind::SumPairs => {
            let mut acc: Option<(Vec<Bytes>, Vec<i64>)> = None;
            for p in parts {
                let Some(elements) = resp::array_elements(p) else {
                    return unexpected(p);
                };
                let mut names = Vec::with_capacity(elements.len() / 2);
                let mut counts = Vec::with_capacity(elements.len() / 2);
                for pair in elements.chunks(2) {
                    match pair {
                        [name, count] => match parse_int_reply(count) {
                            Some(n) => {
                                names.push(name.clone());
                                counts.push(n);
                            }
                            None => return unexpected(p),
                        },
                        _ => return unexpected(p),
                    }
                }
                acc = Some(match acc {
                    None => (names, counts),
                    Some((n0, c0)) if n0 == names => {
                        let sum = c0.iter().zip(&counts).map(|(a, b)| a + b).collect();
                        (n0, sum)
                    }
                    Some(_) => return unexpected(p),
                });
            }
            let (names, counts) = acc.unwrap_or_default();
            let mut out = BytesMut::with_capacity(names.len() * 24 + 16);
            resp::put_array_header(&mut out, names.len() * 2);
            for (n, c) in names.iter().zip(counts) {
                out.extend_from_slice(n);
                resp::put_int(&mut out, c);
            }
            out.freeze()
        }
        MergeKind::AndPositions => {
            let mut all: Option<Vec<bool>> = None;
            for p in parts {
                let Some(elements) = resp::array_elements(p) else {
                    return unexpected(p);
                };
                let mut flags = Vec::with_capacity(elements.len());
                for e in &elements {
                    match parse_int_reply(e) {
                        Some(n) => flags.push(n != 0),
                        None => return unexpected(p),
                    }
                }
                all = Some(match all {
                    None => flags,
                    Some(prev) if prev.len() == flags.len() => {
                        prev.iter().zip(&flags).map(|(a, b)| *a && *b).collect()
                    }
                    Some(_) => return unexpected(p),
                });
            }
            let all = all.unwrap_or_default();
            let mut out = BytesMut::with_capacity(all.len() * 4 + 16);
            resp::put_array_header(&mut out, all.len());
            for f in all {
                resp::put_int(&mut out, i64::from(f));
            }
            out.freeze()
        }
        MergeKind::FirstNonNil => parts
            .iter()
            .find(|p| &p[..] != resp::NULL_BULK)
            .cloned()
            .unwrap_or_else(|| Bytes::from_static(resp::NULL_BULK)),
        MergeKind::AllOk => Bytes::from_static(OK),
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

/// A merged reply for a RESP3 client (the parts came over RESP2): a per-node listing becomes a
/// map, and null bulks and arrays become RESP3's null.
pub fn to_resp3(kind: MergeKind, merged: Bytes) -> Bytes {
    if kind == MergeKind::ByNode && merged.first() == Some(&b'*') {
        let Some(cr) = merged.iter().position(|&b| b == b'\r') else {
            return merged;
        };
        let pairs = std::str::from_utf8(&merged[1..cr])
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| n / 2);
        if let Some(pairs) = pairs {
            let mut out = BytesMut::with_capacity(merged.len() + 4);
            out.extend_from_slice(format!("%{pairs}").as_bytes());
            out.extend_from_slice(&merged[cr..]);
            return out.freeze();
        }
        return merged;
    }
    resp::resp3_nulls(merged)
}

/// Every part must have succeeded; otherwise one error naming each failed node.
fn unanimous(parts: &[Bytes], labels: &[Arc<str>]) -> Bytes {
    let failed: Vec<String> = parts
        .iter()
        .enumerate()
        .filter(|(_, p)| resp::is_error(p))
        .map(|(i, p)| {
            let why = String::from_utf8_lossy(&p[1..]);
            match labels.get(i) {
                Some(node) => format!("{node}: {}", why.trim_end()),
                None => format!("part {i}: {}", why.trim_end()),
            }
        })
        .collect();
    if failed.is_empty() {
        return parts.first().cloned().unwrap_or_else(|| resp::simple("OK"));
    }
    if parts.len() > 1 && parts.iter().all(|p| p == &parts[0]) {
        // Every node refused it the same way (a syntax error, an unknown setting): that is
        // what a single Redis would have answered, so pass Redis's own text on.
        return parts[0].clone();
    }
    resp::error(&format!(
        "ERR slotproxy: failed on {} of {} nodes ({})",
        failed.len(),
        parts.len(),
        failed.join("; ")
    ))
}

/// MSET's merged reply when every part said OK: built once, not per request.
const OK: &[u8] = b"+OK\r\n";

/// The merge of the kinds whose result needs no part kept ([`MergeKind::AllOk`] and
/// [`MergeKind::Sum`]), folded as the parts arrive, in any order: the same reply
/// [`merge`] gives for the same parts, without a vector of them.
#[derive(Default)]
pub struct Fold {
    /// The error of the lowest-numbered part that answered one.
    error: Option<(usize, Bytes)>,
    /// The lowest-numbered part whose reply was not an integer (Sum only).
    unexpected: Option<(usize, Bytes)>,
    total: i64,
}

impl Fold {
    /// Whether parts of `kind` can be folded instead of kept.
    pub fn suits(kind: MergeKind) -> bool {
        matches!(kind, MergeKind::AllOk | MergeKind::Sum)
    }

    /// Takes part `index`'s reply.
    pub fn add(&mut self, kind: MergeKind, index: usize, frame: Bytes) {
        fn keep_lowest(slot: &mut Option<(usize, Bytes)>, index: usize, frame: Bytes) {
            if slot.as_ref().is_none_or(|(i, _)| index < *i) {
                *slot = Some((index, frame));
            }
        }
        if resp::is_error(&frame) {
            return keep_lowest(&mut self.error, index, frame);
        }
        if kind == MergeKind::Sum {
            match parse_int_reply(&frame) {
                Some(n) => self.total = self.total.saturating_add(n),
                None => keep_lowest(&mut self.unexpected, index, frame),
            }
        }
    }

    /// The merged reply.
    pub fn finish(self, kind: MergeKind) -> Bytes {
        if let Some((_, err)) = self.error {
            return err;
        }
        if let Some((_, p)) = self.unexpected {
            return unexpected(&p);
        }
        match kind {
            MergeKind::Sum => resp::int(self.total),
            _ => Bytes::from_static(OK),
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

    #[test]
    fn keys_concatenate_and_scripts_and() {
        let parts = [
            b(b"*1\r\n$1\r\na\r\n"),
            b(b"*0\r\n"),
            b(b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ];
        assert_eq!(
            &merge(MergeKind::Concat, &[], &parts)[..],
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        let exists = [
            b(b"*3\r\n:1\r\n:1\r\n:0\r\n"),
            b(b"*3\r\n:1\r\n:0\r\n:0\r\n"),
        ];
        assert_eq!(
            &merge(MergeKind::AndPositions, &[], &exists)[..],
            b"*3\r\n:1\r\n:0\r\n:0\r\n"
        );
        assert!(resp::is_error(&merge(
            MergeKind::AndPositions,
            &[],
            &[b(b"*1\r\n:1\r\n"), b(b"*2\r\n:1\r\n:1\r\n")]
        )));
        assert_eq!(
            &merge(
                MergeKind::FirstNonNil,
                &[],
                &[b(b"$-1\r\n"), b(b"$1\r\nk\r\n")]
            )[..],
            b"$1\r\nk\r\n"
        );
        assert_eq!(
            &merge(MergeKind::FirstNonNil, &[], &[b(b"$-1\r\n"), b(b"$-1\r\n")])[..],
            b"$-1\r\n"
        );
    }

    #[test]
    fn unanimous_names_failed_nodes() {
        let labels: Vec<Arc<str>> = vec![Arc::from("10.0.0.1:7000"), Arc::from("10.0.0.2:7000")];
        assert_eq!(
            &merge_labeled(
                MergeKind::Unanimous,
                &[],
                &[b(b"$2\r\nab\r\n"), b(b"$2\r\nab\r\n")],
                &labels
            )[..],
            b"$2\r\nab\r\n"
        );
        let err = merge_labeled(
            MergeKind::Unanimous,
            &[],
            &[b(b"+OK\r\n"), b(b"-ERR Unknown option\r\n")],
            &labels,
        );
        assert_eq!(
            &err[..],
            &b"-ERR slotproxy: failed on 1 of 2 nodes (10.0.0.2:7000: ERR Unknown option)\r\n"[..]
        );
        let same = [b(b"-ERR syntax error\r\n"), b(b"-ERR syntax error\r\n")];
        assert_eq!(
            &merge_labeled(MergeKind::Unanimous, &[], &same, &labels)[..],
            b"-ERR syntax error\r\n"
        );
        let differ = [b(b"-ERR syntax error\r\n"), b(b"-ERR other\r\n")];
        assert!(String::from_utf8_lossy(&merge_labeled(
            MergeKind::Unanimous,
            &[],
            &differ,
            &labels
        ))
        .contains(
            "failed on 2 of 2 nodes (10.0.0.1:7000: ERR syntax error; 10.0.0.2:7000: ERR other)"
        ));
    }

    #[test]
    fn per_node_reports_are_listed_by_address_and_lastsave_is_the_oldest() {
        let labels: Vec<Arc<str>> = vec![Arc::from("10.0.0.1:7000"), Arc::from("10.0.0.2:7000")];
        let parts = [b(b"*0\r\n"), b(b"$2\r\nok\r\n")];
        let got = merge_labeled(MergeKind::ByNode, &[], &parts, &labels);
        assert_eq!(
            &got[..],
            b"*4\r\n$13\r\n10.0.0.1:7000\r\n*0\r\n$13\r\n10.0.0.2:7000\r\n$2\r\nok\r\n"
        );
        assert_eq!(
            &to_resp3(MergeKind::ByNode, got)[..],
            b"%2\r\n$13\r\n10.0.0.1:7000\r\n*0\r\n$13\r\n10.0.0.2:7000\r\n$2\r\nok\r\n"
        );
        let failed = merge_labeled(
            MergeKind::ByNode,
            &[],
            &[b(b"*0\r\n"), b(b"-ERR down\r\n")],
            &labels,
        );
        assert_eq!(
            &failed[..],
            &b"-ERR slotproxy: failed on 1 of 2 nodes (10.0.0.2:7000: ERR down)\r\n"[..]
        );
        assert_eq!(
            &to_resp3(MergeKind::ByNode, failed.clone())[..],
            &failed[..]
        );
        assert_eq!(
            &merge(MergeKind::Min, &[], &[b(b":170\r\n"), b(b":150\r\n")])[..],
            b":150\r\n"
        );
        assert!(resp::is_error(&merge(
            MergeKind::Min,
            &[],
            &[b(b"+OK\r\n")]
        )));
        assert_eq!(
            &to_resp3(MergeKind::Mget, b(b"*1\r\n$-1\r\n"))[..],
            b"*1\r\n_\r\n"
        );
    }

    #[test]
    fn folding_as_parts_arrive_gives_the_merged_reply_in_any_order() {
        let cases: &[(MergeKind, &[&[u8]])] = &[
            (MergeKind::AllOk, &[b"+OK\r\n", b"+OK\r\n", b"+OK\r\n"]),
            (
                MergeKind::AllOk,
                &[b"+OK\r\n", b"-ERR two\r\n", b"-ERR three\r\n"],
            ),
            (MergeKind::Sum, &[b":1\r\n", b":2\r\n", b":40\r\n"]),
            (MergeKind::Sum, &[b":1\r\n", b"+forged\r\n", b"$1\r\nx\r\n"]),
            (
                MergeKind::Sum,
                &[b"$1\r\nx\r\n", b":2\r\n", b"-MOVED 1 a:1\r\n"],
            ),
            (MergeKind::Sum, &[b":9223372036854775807\r\n", b":5\r\n"]),
        ];
        let orders: &[&[usize]] = &[&[0, 1, 2], &[2, 1, 0], &[1, 2, 0]];
        for &(kind, frames) in cases {
            let parts: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
            let want = merge(kind, &[], &parts);
            for order in orders {
                let mut fold = Fold::default();
                for &i in order.iter().filter(|&&i| i < parts.len()) {
                    fold.add(kind, i, parts[i].clone());
                }
                assert_eq!(
                    fold.finish(kind),
                    want,
                    "{kind:?} {frames:?} in order {order:?}"
                );
            }
        }
    }
}
