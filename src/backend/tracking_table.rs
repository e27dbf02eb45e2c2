//! The tracking table of one worker: which of its clients must hear that a key changed.
//!
//! Client-side caching through the proxy (see [`crate::backend::invalidation`]): the nodes
//! tell the proxy about every key written (BCAST tracking), and this table narrows that down
//! to the clients that care, the way a Redis node's own table would. Pure data, no I/O.
//!
//! Invariants: a key is in `keys` only while some client read it since its last
//! invalidation (an invalidation removes it, as in Redis: the next read adds it again); the
//! table never holds more than `max_keys` keys, a key evicted to make room is reported so
//! its clients get an invalidation for it (they must not keep a value nobody watches any
//! more); entries of clients that stopped tracking are dropped lazily (at invalidation or
//! eviction), as Redis does, so turning tracking off costs nothing per key.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// How one client tracks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mode {
    /// BCAST: every key under one of `prefixes` (every key if none), read or not.
    pub bcast: bool,
    /// BCAST prefixes.
    pub prefixes: Vec<Bytes>,
}

/// Keys read by tracking clients and the clients tracking on this worker.
#[derive(Debug)]
pub struct Table {
    keys: HashMap<Bytes, Vec<u64>>,
    clients: BTreeMap<u64, Mode>,
    max_keys: usize,
}

/// The messages to send: a client and the keys of one message, in the order they changed. A
/// default-mode client gets one message per key and a BCAST client one message per batch, as
/// from Redis (client libraries' caches rely on the first: redis-rs reads only the first key
/// of a message).
pub type Deliveries = Vec<(u64, Vec<Bytes>)>;

impl Table {
    /// An empty table holding at most `max_keys` keys (at least 1).
    pub fn new(max_keys: usize) -> Table {
        Table {
            keys: HashMap::new(),
            clients: BTreeMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// Starts (or changes) client `id`'s tracking.
    pub fn enable(&mut self, id: u64, mode: Mode) {
        self.clients.insert(id, mode);
    }

    /// Ends client `id`'s tracking (its key entries go lazily).
    pub fn disable(&mut self, id: u64) {
        self.clients.remove(&id);
    }

    /// Whether any client tracks on this worker.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// How many keys are tracked.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Client `id` read `key` (default mode). When the table is full, another key is evicted
    /// first; its clients are returned, to be told it is invalid.
    pub fn record(&mut self, id: u64, key: &Bytes) -> Option<(Bytes, Vec<u64>)> {
        if let Some(ids) = self.keys.get_mut(key) {
            if !ids.contains(&id) {
                ids.push(id);
            }
            return None;
        }
        let evicted = if self.keys.len() >= self.max_keys {
            // Whichever key the hash order gives first: as arbitrary as Redis's random pick.
            let victim = self.keys.keys().next().cloned();
            victim.and_then(|k| {
                let ids = self.keys.remove(&k)?;
                let live: Vec<u64> = ids
                    .into_iter()
                    .filter(|i| self.clients.contains_key(i))
                    .collect();
                Some((k, live))
            })
        } else {
            None
        };
        self.keys.insert(key.clone(), vec![id]);
        evicted
    }

    /// Client `id` wrote `key` with NOLOOP: like Redis, it is not told about its own write,
    /// and no longer tracks the key (the write's invalidation ends everyone's tracking of it).
    pub fn forget(&mut self, id: u64, key: &[u8]) {
        if let Some(ids) = self.keys.get_mut(key) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// `keys` changed: who must be told which. Default-mode entries of those keys end.
    pub fn invalidate(&mut self, keys: &[Bytes]) -> Deliveries {
        let mut out = Deliveries::new();
        let mut batches: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
        for key in keys {
            if let Some(ids) = self.keys.remove(key) {
                for id in ids {
                    if self.clients.get(&id).is_some_and(|m| !m.bcast) {
                        out.push((id, vec![key.clone()]));
                    }
                }
            }
            for (id, mode) in &self.clients {
                if mode.bcast
                    && (mode.prefixes.is_empty()
                        || mode.prefixes.iter().any(|p| key.starts_with(p)))
                {
                    push_once(batches.entry(*id).or_default(), key);
                }
            }
        }
        out.extend(batches);
        out
    }

    /// For a flush (the proxy may have missed writes): the messages that make each client in
    /// `scope` (every client when `None`) forget what it may have cached. A default-mode client
    /// that read keys gets one message per key, and those entries end as an invalidation ends
    /// them; a BCAST client, or one that read nothing, gets a null (forget everything). Naming
    /// the keys is what Redis's null means for these clients, and some client libraries ignore
    /// a null (redis-rs 0.32's cache does), so they would keep values changed behind a failover.
    pub fn flush(&mut self, scope: Option<&[u64]>) -> Vec<(u64, Option<Vec<Bytes>>)> {
        let in_scope = |id: &u64| scope.is_none_or(|s| s.contains(id));
        let mut read: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
        let clients = &self.clients;
        self.keys.retain(|key, ids| {
            ids.retain(|id| {
                let Some(mode) = clients.get(id) else {
                    return false;
                };
                if in_scope(id) && !mode.bcast {
                    read.entry(*id).or_default().push(key.clone());
                    return false;
                }
                true
            });
            !ids.is_empty()
        });
        let mut out = Vec::new();
        for &id in self.clients.keys().filter(|id| in_scope(id)) {
            match read.remove(&id) {
                Some(keys) => out.extend(keys.into_iter().map(|k| (id, Some(vec![k])))),
                None => out.push((id, None)),
            }
        }
        out
    }
}

fn push_once(list: &mut Vec<Bytes>, key: &Bytes) {
    if !list.contains(key) {
        list.push(key.clone());
    }
}

/// Redis's check of BCAST prefixes: none may be a prefix of another (or equal to it), among
/// the new ones and against the client's existing ones. The error text is Redis's.
pub fn check_prefixes(existing: &[Bytes], new: &[Bytes]) -> Result<(), String> {
    let overlap = |a: &[u8], b: &[u8]| a.starts_with(b) || b.starts_with(a);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (i, p) in new.iter().enumerate() {
        if let Some(e) = existing.iter().find(|e| overlap(p, e)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                text(p),
                text(e)
            ));
        }
        if let Some(o) = new[i + 1..].iter().find(|o| overlap(p, o)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                text(p),
                text(o)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn readers_hear_about_their_keys_once_then_read_again() {
        let mut t = Table::new(10);
        t.enable(1, Mode::default());
        t.enable(2, Mode::default());
        t.record(1, &b("k"));
        t.record(1, &b("k"));
        t.record(2, &b("j"));
        let d = t.invalidate(&[b("k"), b("x")]);
        assert_eq!(d, vec![(1, vec![b("k")])]);
        // The entry ended with the invalidation: a second write tells nobody.
        assert!(t.invalidate(&[b("k")]).is_empty());
        assert_eq!(t.key_count(), 1);
    }

    #[test]
    fn bcast_clients_hear_about_their_prefixes_whoever_read() {
        let mut t = Table::new(10);
        t.enable(
            7,
            Mode {
                bcast: true,
                prefixes: vec![b("user:")],
            },
        );
        t.enable(
            8,
            Mode {
                bcast: true,
                prefixes: vec![],
            },
        );
        let d = t.invalidate(&[b("user:1"), b("order:1")]);
        assert_eq!(
            d,
            vec![(7, vec![b("user:1")]), (8, vec![b("user:1"), b("order:1")])]
        );
    }

    #[test]
    fn a_flush_names_the_keys_a_default_mode_client_read_and_is_null_for_the_others() {
        let mut t = Table::new(10);
        t.enable(1, Mode::default());
        t.enable(2, Mode::default());
        t.enable(
            3,
            Mode {
                bcast: true,
                prefixes: vec![],
            },
        );
        t.enable(4, Mode::default());
        t.record(1, &b("a"));
        t.record(4, &b("a"));
        t.record(4, &b("b"));
        // Only 1 and 2 are flushed: 4 keeps its keys tracked.
        let d = t.flush(Some(&[1, 2]));
        assert_eq!(d, vec![(1, Some(vec![b("a")])), (2, None)]);
        assert_eq!(t.key_count(), 2);
        let mut d = t.flush(None);
        d[3..].sort();
        assert_eq!(
            d,
            vec![
                (1, None),
                (2, None),
                (3, None),
                (4, Some(vec![b("a")])),
                (4, Some(vec![b("b")])),
            ]
        );
        assert_eq!(t.key_count(), 0);
        // Default-mode entries ended: a write tells only the BCAST client.
        assert_eq!(
            t.invalidate(&[b("a"), b("b")]),
            vec![(3, vec![b("a"), b("b")])]
        );
    }

    #[test]
    fn a_default_mode_client_gets_one_message_per_key_a_bcast_client_one_per_batch() {
        let mut t = Table::new(10);
        t.enable(1, Mode::default());
        t.enable(
            2,
            Mode {
                bcast: true,
                prefixes: vec![],
            },
        );
        for k in ["a", "b", "c"] {
            t.record(1, &b(k));
        }
        let d = t.invalidate(&[b("a"), b("b"), b("c"), b("a")]);
        assert_eq!(
            d,
            vec![
                (1, vec![b("a")]),
                (1, vec![b("b")]),
                (1, vec![b("c")]),
                (2, vec![b("a"), b("b"), b("c")]),
            ]
        );
    }

    #[test]
    fn clients_that_stopped_are_not_told_and_noloop_writers_stop_tracking_the_key() {
        let mut t = Table::new(10);
        t.enable(1, Mode::default());
        t.enable(2, Mode::default());
        t.record(1, &b("k"));
        t.record(2, &b("k"));
        t.disable(1);
        t.forget(2, b"k");
        assert!(t.invalidate(&[b("k")]).is_empty());
        assert!(!t.is_empty());
        t.disable(2);
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_evicts_a_key_and_names_its_clients() {
        let mut t = Table::new(2);
        t.enable(1, Mode::default());
        assert_eq!(t.record(1, &b("a")), None);
        assert_eq!(t.record(1, &b("b")), None);
        let (k, ids) = t.record(1, &b("c")).expect("an eviction");
        assert!(k == b("a") || k == b("b"));
        assert_eq!(ids, vec![1]);
        assert_eq!(t.key_count(), 2);
        assert_eq!(t.flush(None).len(), 2);
        assert_eq!(t.key_count(), 0);
    }

    #[test]
    fn overlapping_prefixes_are_refused_with_redis_text() {
        assert!(check_prefixes(&[], &[b("a:"), b("b:")]).is_ok());
        assert_eq!(
            check_prefixes(&[], &[b("a"), b("ab")]).unwrap_err(),
            "ERR Prefix 'a' overlaps with another provided prefix 'ab'. Prefixes for a single client must not overlap."
        );
        assert!(check_prefixes(&[b("ab")], &[b("a")])
            .unwrap_err()
            .contains("overlaps with an existing prefix 'ab'"));
        // Even the same prefix again (as in Redis).
        assert!(check_prefixes(&[b("ab")], &[b("ab")]).is_err());
    }
}
