//! The script bodies the proxy has seen, so that a NOSCRIPT reply can be repaired.
//!
//! Redis Cluster keeps a script cache per node: a replica promoted by a failover, or a master
//! added later, has never seen a script the application loaded with SCRIPT LOAD, and EVALSHA
//! there answers NOSCRIPT. The proxy remembers each body it forwarded in SCRIPT LOAD (by its
//! SHA1, as Redis names it) and, on NOSCRIPT, loads the body on that node and retries once.
//! Invariant: a body is only ever sent to a node under the SHA1 computed from that same body,
//! so a retry can never run a different script than the client named.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::RwLock;

/// Most scripts remembered; past it the oldest are not evicted, new ones are just not kept
/// (a NOSCRIPT for them then reaches the client, as it would from Redis).
const MAX_SCRIPTS: usize = 10_000;

/// Script bodies by lowercase hex SHA1.
#[derive(Default)]
pub struct Scripts {
    bodies: RwLock<HashMap<String, Bytes>>,
}

/// Redis's name for a script: the lowercase hex SHA1 of its body.
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

impl Scripts {
    /// Remembers `body` (from a SCRIPT LOAD the proxy forwarded).
    pub fn remember(&self, body: &Bytes) {
        let sha = sha1_hex(body);
        if let Ok(mut map) = self.bodies.write() {
            if map.len() < MAX_SCRIPTS || map.contains_key(&sha) {
                map.insert(sha, body.clone());
            }
        }
    }

    /// The body named by `sha` (any case), if the proxy has seen it.
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let key = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        self.bodies.read().ok()?.get(&key).cloned()
    }
}

/// The SHA1 argument of an EVALSHA / EVALSHA_RO request on the wire, if `wire` is one.
pub fn evalsha_target(wire: &Bytes) -> Option<Bytes> {
    let elements = crate::resp::array_elements(wire)?;
    let arg = |i: usize| match elements.get(i).map(crate::resp::Value::decode) {
        Some(Ok(crate::resp::Value::Bulk(Some(b)))) => Some(b),
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
        let wire = crate::resp::encode_command(&[
            &b"EVALSHA"[..],
            b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
            b"0",
        ])
        .freeze();
        assert_eq!(
            evalsha_target(&wire).as_deref(),
            Some(&b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"[..])
        );
        let get = crate::resp::encode_command(&[&b"GET"[..], b"k"]).freeze();
        assert_eq!(evalsha_target(&get), None);
    }
}
