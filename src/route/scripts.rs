//! The script bodies the proxy has seen, so that a NOSCRIPT reply can be repaired.
//!
//! Redis Cluster keeps a script cache per node: a replica promoted by a failover, or a master
//! added later, has never seen a script the application loaded with SCRIPT LOAD, and EVALSHA
//! there answers NOSCRIPT. The proxy remembers each body it forwarded in SCRIPT LOAD (by its
//! SHA1, as Redis names it) and, on NOSCRIPT, loads the body on that node and retries once.
//! Invariant: a body is only ever sent to a node under the SHA1 computed from that same body,
//! so a retry can never run a different script than the client named. The cache is bounded
//! ([`MAX_SCRIPT_BYTES`], least recently used forgotten first) and SCRIPT FLUSH through the
//! proxy empties it, so a flushed script answers NOSCRIPT as in Redis.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Most bytes of script bodies remembered (64 MB); past it the least recently used are
/// forgotten (a NOSCRIPT for them then reaches the client, as it would from Redis).
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024 * 1024;

/// Most scripts remembered, whatever their size (bounds the map's own overhead).
const MAX_SCRIPTS: usize = 10_000;

/// What one remembered script costs besides its body: its SHA1 key and the map entries.
const ENTRY_OVERHEAD: usize = 128;

/// Script bodies by lowercase hex SHA1, bounded in bytes and count (least recently used
/// evicted first), emptied by SCRIPT FLUSH.
pub struct Scripts {
    inner: Mutex<Inner>,
}

struct Inner {
    /// SHA1 -> (body, last use).
    bodies: HashMap<String, (Bytes, u64)>,
    /// Last use -> SHA1: the eviction order. Invariant: exactly one entry per script in
    /// `bodies`, keyed by its last use.
    by_use: BTreeMap<u64, String>,
    /// Sum of the bodies' lengths plus [`ENTRY_OVERHEAD`] each.
    bytes: usize,
    /// Ticks on every remember and lookup hit.
    clock: u64,
    max_bytes: usize,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::with_limit(MAX_SCRIPT_BYTES)
    }
}

/// Redis's name for a script: the lowercase hex SHA1 of its body.
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

impl Inner {
    /// Marks `sha` used now and returns its body; `None` if it is not remembered.
    fn touch(&mut self, sha: &str) -> Option<Bytes> {
        self.clock += 1;
        let now = self.clock;
        let (body, used) = self.bodies.get_mut(sha)?;
        let before = std::mem::replace(used, now);
        let body = body.clone();
        if let Some(name) = self.by_use.remove(&before) {
            self.by_use.insert(now, name);
        }
        Some(body)
    }
}

impl Scripts {
    /// A cache holding at most `max_bytes` of script bodies.
    pub fn with_limit(max_bytes: usize) -> Scripts {
        Scripts {
            inner: Mutex::new(Inner {
                bodies: HashMap::new(),
                by_use: BTreeMap::new(),
                bytes: 0,
                clock: 0,
                max_bytes,
            }),
        }
    }

    /// Remembers `body` (from a SCRIPT LOAD the proxy forwarded), forgetting the least
    /// recently used scripts if the cache would exceed its bounds. The body is copied: a
    /// slice of the client's request would keep that request's whole read buffer alive.
    pub fn remember(&self, body: &[u8]) {
        let sha = sha1_hex(body);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.touch(&sha).is_some() {
            return;
        }
        let cost = body.len() + ENTRY_OVERHEAD;
        if cost > inner.max_bytes {
            return;
        }
        while inner.bytes + cost > inner.max_bytes || inner.bodies.len() >= MAX_SCRIPTS {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            if let Some((old, _)) = inner.bodies.remove(&oldest) {
                inner.bytes -= old.len() + ENTRY_OVERHEAD;
            }
        }
        inner.clock += 1;
        let now = inner.clock;
        inner.by_use.insert(now, sha.clone());
        inner
            .bodies
            .insert(sha, (Bytes::copy_from_slice(body), now));
        inner.bytes += cost;
    }

    /// The body named by `sha` (any case), if the proxy has seen it (and not forgotten it).
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let key = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        self.inner.lock().ok()?.touch(&key)
    }

    /// Forgets every script: SCRIPT FLUSH went through the proxy, so EVALSHA must answer
    /// NOSCRIPT as Redis does, not have the proxy load the flushed script again.
    pub fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.bodies.clear();
            inner.by_use.clear();
            inner.bytes = 0;
        }
    }

    /// Bytes remembered now (bodies plus per-script overhead).
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }
}

/// The SHA1 argument of an EVALSHA / EVALSHA_RO request on the wire, if `wire` is one.
pub fn evalsha_target(wire: &Bytes) -> Option<Bytes> {
    let elements = crate::route::resp::array_elements(wire)?;
    let arg = |i: usize| match elements.get(i).map(crate::route::resp::Value::decode) {
        Some(Ok(crate::route::resp::Value::Bulk(Some(b)))) => Some(b),
        _ => None,
    };
    let name = arg(0)?;
    if name.eq_ignore_ascii_case(b"evalsha") || name.eq_ignore_ascii_case(b"evalsha_ro") {
        arg(1)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_matches_redis_and_lookup_ignores_case() {
        // SCRIPT LOAD "return 1" answers this SHA1 in Redis.
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        let s = Scripts::default();
        s.remember(&Bytes::from_static(b"return 1"));
        assert!(s
            .body(b"E0E1F9FABFC9D4800C877A703B823AC0578FF8DB")
            .is_some());
        let wire = crate::route::resp::encode_command(&[
            &b"EVALSHA"[..],
            b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
            b"0",
        ])
        .freeze();
        assert_eq!(
            evalsha_target(&wire).as_deref(),
            Some(&b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"[..])
        );
        let get = crate::route::resp::encode_command(&[&b"GET"[..], b"k"]).freeze();
        assert_eq!(evalsha_target(&get), None);
    }

    #[test]
    fn bounded_in_bytes_least_recently_used_first_and_flushed() {
        let body = |i: usize| format!("return {i} -- {}", "x".repeat(1000));
        let one = body(0).len() + ENTRY_OVERHEAD;
        let s = Scripts::with_limit(3 * one);
        for i in 0..3 {
            s.remember(body(i).as_bytes());
        }
        // Script 0 is used again, so 1 is the least recently used when 3 arrives.
        assert!(s.body(sha1_hex(body(0).as_bytes()).as_bytes()).is_some());
        s.remember(body(3).as_bytes());
        let has = |i: usize| s.body(sha1_hex(body(i).as_bytes()).as_bytes()).is_some();
        assert!(!has(1));
        assert!(has(0) && has(2) && has(3));
        assert_eq!(s.bytes(), 3 * one);
        // Larger than the whole cache: not kept, nothing evicted for it.
        s.remember("y".repeat(4 * one).as_bytes());
        assert!(has(0) && has(2) && has(3));
        s.clear();
        assert!(!has(0) && !has(2) && !has(3));
        assert_eq!(s.bytes(), 0);
    }
}
