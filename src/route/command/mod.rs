//! Redis's command table and the request analysis built on it.
//!
//! The proxy must route every request to the node that owns the hash slot of its keys, and
//! reject malformed requests without a round trip. Both need Redis's own knowledge of each
//! command: its arity, its flags, and where its keys are. That knowledge lives in the
//! generated [`COMMANDS`] table (see `table.rs`, produced from a live server's `COMMAND`
//! reply by `tools/gen_command_table.py`), and this module answers three questions from it:
//!
//! * [`lookup`]: which command (or subcommand) a request names;
//! * [`check_arity`]: whether it has an acceptable number of arguments;
//! * [`key_positions`] / [`slot_positions`]: which arguments are keys, following Redis 7.0's
//!   key-spec semantics plus explicit handling for the commands whose key specs are
//!   incomplete or need a "getkeys" procedure inside Redis.
//!
//! Invariant: [`COMMANDS`] and every [`CommandSpec::subcommands`] slice are sorted by name in
//! byte order and every name is lowercase ASCII; the lookup's binary search depends on it and
//! the unit tests check it.
//!
//! Everything here is allocation-free except for the caller-provided output vector.

use std::cmp::Ordering;

use bytes::Bytes;

mod keys;
mod table;

pub use keys::{key_positions, slot_positions, sort_uses_patterns, xread_blocks, KeyError};
pub use table::{COMMANDS, REDIS_VERSION};

// Command flags, as printed by `COMMAND` (the names are the lowercase const suffixes).
// The bit values are this crate's own; only the names come from Redis.

/// `write`: the command may modify the dataset.
pub const FLAG_WRITE: u32 = 1 << 0;
/// `readonly`: the command only reads keys.
pub const FLAG_READONLY: u32 = 1 << 1;
/// `denyoom`: refused when the server is over its memory limit.
pub const FLAG_DENYOOM: u32 = 1 << 2;
/// `module`: implemented by a module.
pub const FLAG_MODULE: u32 = 1 << 3;
/// `admin`: an administrative command.
pub const FLAG_ADMIN: u32 = 1 << 4;
/// `pubsub`: a publish/subscribe command.
pub const FLAG_PUBSUB: u32 = 1 << 5;
/// `noscript`: not allowed inside scripts.
pub const FLAG_NOSCRIPT: u32 = 1 << 6;
/// `blocking`: may block the client.
pub const FLAG_BLOCKING: u32 = 1 << 7;
/// `loading`: allowed while the server loads its dataset.
pub const FLAG_LOADING: u32 = 1 << 8;
/// `stale`: allowed on a replica with stale data.
pub const FLAG_STALE: u32 = 1 << 9;
/// `skip_monitor`: not shown to MONITOR clients.
pub const FLAG_SKIP_MONITOR: u32 = 1 << 10;
/// `skip_slowlog`: not logged in the slow log.
pub const FLAG_SKIP_SLOWLOG: u32 = 1 << 11;
/// `asking`: accepted for an importing slot after ASKING.
pub const FLAG_ASKING: u32 = 1 << 12;
/// `fast`: O(1) or O(log N).
pub const FLAG_FAST: u32 = 1 << 13;
/// `no_auth`: allowed before authentication.
pub const FLAG_NO_AUTH: u32 = 1 << 14;
/// `may_replicate`: may propagate to replicas (hidden by Redis 7.0's `COMMAND`, so never set
/// in a table generated from it).
pub const FLAG_MAY_REPLICATE: u32 = 1 << 15;
/// `sentinel`: available in Sentinel mode (hidden by `COMMAND`; never set from it).
pub const FLAG_SENTINEL: u32 = 1 << 16;
/// `only_sentinel`: available only in Sentinel mode (hidden by `COMMAND`; never set from it).
pub const FLAG_ONLY_SENTINEL: u32 = 1 << 17;
/// `no_mandatory_keys`: the command may legitimately be called without any key.
pub const FLAG_NO_MANDATORY_KEYS: u32 = 1 << 18;
/// `protected`: disabled unless enabled in the configuration (hidden by `COMMAND`).
pub const FLAG_PROTECTED: u32 = 1 << 19;
/// `no_async_loading`: refused during asynchronous loading.
pub const FLAG_NO_ASYNC_LOADING: u32 = 1 << 20;
/// `no_multi`: not allowed inside MULTI.
pub const FLAG_NO_MULTI: u32 = 1 << 21;
/// `movablekeys`: key positions cannot be derived from the legacy first/last/step triple.
pub const FLAG_MOVABLEKEYS: u32 = 1 << 22;
/// `allow_busy`: allowed while a script or function is busy.
pub const FLAG_ALLOW_BUSY: u32 = 1 << 23;

// Key-spec flags, as printed in `COMMAND`'s key specs.

/// `RO`: the key is only read.
pub const KS_RO: u32 = 1 << 0;
/// `RW`: the key is read and written.
pub const KS_RW: u32 = 1 << 1;
/// `OW`: the key is overwritten without being read.
pub const KS_OW: u32 = 1 << 2;
/// `RM`: the key is deleted.
pub const KS_RM: u32 = 1 << 3;
/// `access`: the value is returned, copied or otherwise exposed.
pub const KS_ACCESS: u32 = 1 << 4;
/// `update`: the value is updated in place.
pub const KS_UPDATE: u32 = 1 << 5;
/// `insert`: data is added, nothing is removed or modified.
pub const KS_INSERT: u32 = 1 << 6;
/// `delete`: data is removed.
pub const KS_DELETE: u32 = 1 << 7;
/// `not_key`: the argument is not a key but still hashes to a slot (shard channels).
pub const KS_NOT_KEY: u32 = 1 << 8;
/// `incomplete`: the spec may miss keys; Redis then falls back to a getkeys procedure.
pub const KS_INCOMPLETE: u32 = 1 << 9;
/// `variable_flags`: the key's flags depend on other arguments.
pub const KS_VARIABLE_FLAGS: u32 = 1 << 10;

/// One command or subcommand of Redis, as reported by `COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lowercase name; `"container|sub"` for a subcommand (e.g. `"object|encoding"`).
    pub name: &'static str,
    /// Redis's arity: `n` means exactly `n` arguments (name included), `-n` at least `n`.
    pub arity: i32,
    /// Bitset of the `FLAG_*` consts.
    pub flags: u32,
    /// Where the keys are, in Redis's order.
    pub key_specs: &'static [KeySpec],
    /// Subcommands, sorted by name; empty for a plain command.
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    /// Whether every bit of `flag` (one or more `FLAG_*` consts) is set.
    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag == flag
    }

    /// Whether this is a container command (such as `OBJECT` or `CONFIG`) whose real
    /// behaviour is chosen by a subcommand.
    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }
}

/// One of Redis 7.0's key specs: how to find a run of keys in the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Where the search for the first key starts.
    pub begin: BeginSearch,
    /// How the keys are laid out from there.
    pub find: FindKeys,
    /// Bitset of the `KS_*` consts.
    pub flags: u32,
}

impl KeySpec {
    /// Whether every bit of `flag` (one or more `KS_*` consts) is set.
    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag == flag
    }
}

/// The `begin_search` half of a key spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// The first key is at this argument index (0 is the command name).
    Index(i32),
    /// The first key follows `keyword` (compared case-insensitively), searched from index
    /// `start_from`; a negative `start_from` counts from the end and searches backwards.
    Keyword {
        /// The keyword, as Redis spells it (uppercase).
        keyword: &'static str,
        /// Where the search starts.
        start_from: i32,
    },
    /// The keys cannot be found from the spec alone (e.g. SORT's STORE).
    Unknown,
}

/// The `find_keys` half of a key spec, relative to the position found by [`BeginSearch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the begin position to `last_key` (relative; negative counts from the end of
    /// the arguments), every `key_step` arguments. With `limit > 1` and `last_key == -1` the
    /// keys are the first `1/limit` of the remaining arguments (XREAD's keys then IDs).
    Range {
        /// Index of the last key relative to the first, or from the end when negative.
        last_key: i32,
        /// Distance between two keys.
        key_step: i32,
        /// Divisor of the remaining arguments, when non-zero.
        limit: i32,
    },
    /// The number of keys is an argument (`numkeys`).
    KeyNum {
        /// Index of the `numkeys` argument, relative to the begin position.
        key_num_idx: i32,
        /// Index of the first key, relative to the begin position.
        first_key: i32,
        /// Distance between two keys.
        key_step: i32,
    },
    /// The keys cannot be found from the spec alone.
    Unknown,
}

/// Compares a stored lowercase name with request bytes as if the request were lowercased,
/// so the hot path never allocates a lowercase copy.
fn cmp_lowercase(stored: &[u8], input: &[u8]) -> Ordering {
    for (s, i) in stored.iter().zip(input) {
        match s.cmp(&i.to_ascii_lowercase()) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    stored.len().cmp(&input.len())
}

/// Binary-searches a sorted table for `input`, comparing the part of each name after the
/// first `skip` bytes (a subcommand table skips its shared `"container|"` prefix).
fn find_sorted(
    table: &'static [CommandSpec],
    input: &[u8],
    skip: usize,
) -> Option<&'static CommandSpec> {
    table
        .binary_search_by(|spec| {
            let name = spec.name.as_bytes();
            cmp_lowercase(name.get(skip..).unwrap_or_default(), input)
        })
        .ok()
        .and_then(|i| table.get(i))
}

/// FNV-1a over the ASCII-lowercased name, for names longer than eight bytes.
fn name_hash(name: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &c in name {
        h ^= u32::from(c.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize
}

/// A name of at most eight bytes as one word: its bytes little-endian, zero-padded, ASCII
/// letters lowercased (other bytes as they are, as `eq_ignore_ascii_case` treats them). Two
/// names of the same length are equal ignoring ASCII case exactly when their words are equal;
/// `None` for a longer name. Almost every command name fits, and one word is hashed and
/// compared in a few instructions where a byte loop took a few per byte.
fn name_word(name: &[u8]) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    if name.len() > 8 {
        return None;
    }
    // A byte loop: for names this short it is cheaper than the call a copy makes.
    let w = name
        .iter()
        .enumerate()
        .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
    // Per byte, with its high bit forced on so no subtraction borrows from its neighbour:
    // the high bit stays set when the byte is at least 'A' (0x41), resp. past 'Z' (0x5a).
    let from_a = (w | HIGHS).wrapping_sub(ONES * 0x41);
    let past_z = (w | HIGHS).wrapping_sub(ONES * 0x5b);
    let upper = from_a & !past_z & !w & HIGHS;
    Some(w | (upper >> 2))
}

/// The index's hash of a name, given its [`name_word`]: of the word when it has one.
fn index_hash(name: &[u8], word: Option<u64>) -> usize {
    match word {
        Some(w) => (w.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize,
        None => name_hash(name),
    }
}

/// Open-addressing index over [`COMMANDS`], built once. Every request looks its command up,
/// so this replaces a case-insensitive binary search (about ten string comparisons) with one
/// hash and, almost always, one comparison.
struct NameIndex {
    slots: Vec<u16>,
    mask: usize,
    /// Each command's [`name_word`] (0 for a longer name), by its index in [`COMMANDS`].
    words: Vec<u64>,
}

const EMPTY_SLOT: u16 = u16::MAX;

fn name_index() -> &'static NameIndex {
    static INDEX: std::sync::OnceLock<NameIndex> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let size = (COMMANDS.len() * 4).next_power_of_two();
        let mask = size - 1;
        let mut slots = vec![EMPTY_SLOT; size];
        for (i, spec) in COMMANDS.iter().enumerate() {
            let name = spec.name.as_bytes();
            let mut at = index_hash(name, name_word(name)) & mask;
            while slots[at] != EMPTY_SLOT {
                at = (at + 1) & mask;
            }
            slots[at] = i as u16;
        }
        let words = COMMANDS
            .iter()
            .map(|c| name_word(c.name.as_bytes()).unwrap_or(0))
            .collect();
        NameIndex { slots, mask, words }
    })
}

fn find_top_level(input: &[u8]) -> Option<&'static CommandSpec> {
    let index = name_index();
    let word = name_word(input);
    let mut at = index_hash(input, word) & index.mask;
    loop {
        let slot = index.slots[at];
        if slot == EMPTY_SLOT {
            return None;
        }
        let spec = &COMMANDS[slot as usize];
        let same = match word {
            Some(w) => index.words[slot as usize] == w && spec.name.len() == input.len(),
            None => spec.name.as_bytes().eq_ignore_ascii_case(input),
        };
        if same {
            return Some(spec);
        }
        at = (at + 1) & index.mask;
    }
}

/// Finds the spec for a request: `args[0]` is the command name (any case); for a container
/// command with subcommands, `args[1]` selects the subcommand (any case).
///
/// Returns `None` for an empty request or an unknown command. When the container has
/// subcommands but `args[1]` is missing or names no subcommand, returns the **container**
/// itself: its arity (always negative, at least 2) and empty key specs then make the request
/// keyless, so a caller that forwards it gets Redis's own "unknown subcommand" or
/// "wrong number of arguments" answer; callers that want to answer locally can test
/// [`CommandSpec::is_container`].
pub fn lookup(args: &[Bytes]) -> Option<&'static CommandSpec> {
    let name = args.first()?;
    let cmd = find_top_level(name)?;
    if !cmd.is_container() {
        return Some(cmd);
    }
    let Some(sub) = args.get(1) else {
        return Some(cmd);
    };
    Some(find_sorted(cmd.subcommands, sub, cmd.name.len() + 1).unwrap_or(cmd))
}

/// Whether `argc` arguments (command name, and subcommand name if any, included) satisfy the
/// spec's arity the way Redis checks it: exactly `arity` when positive, at least `-arity` when
/// negative.
pub fn check_arity(spec: &CommandSpec, argc: usize) -> bool {
    let needed = spec.arity.unsigned_abs() as usize;
    if spec.arity >= 0 {
        argc == needed
    } else {
        argc >= needed
    }
}

/// The error Redis gives for a bad argument count, for callers that answer it locally.
pub fn arity_error(spec: &CommandSpec) -> String {
    format!("ERR wrong number of arguments for '{}' command", spec.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    fn name_of(parts: &[&str]) -> Option<&'static str> {
        lookup(&req(parts)).map(|s| s.name)
    }

    #[test]
    fn name_words_fold_case_exactly_as_eq_ignore_ascii_case() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let same = name_word(&[b'x', a, b'y']) == name_word(&[b'x', b, b'y']);
                assert_eq!(same, [a].eq_ignore_ascii_case(&[b]), "{a:#x} {b:#x}");
            }
        }
        assert_eq!(name_word(b"123456789"), None);
        // Padding is not a byte: the lookup compares lengths too.
        assert_eq!(name_of(&["get\0"]), None);
        for spec in COMMANDS {
            let mixed: String = spec
                .name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            assert_eq!(name_of(&[&mixed]), Some(spec.name), "{mixed}");
        }
    }

    #[test]
    fn table_is_sorted_lowercase_and_prefixed() {
        for w in COMMANDS.windows(2) {
            assert!(w[0].name.as_bytes() < w[1].name.as_bytes(), "{}", w[1].name);
        }
        for cmd in COMMANDS {
            assert_eq!(cmd.name, cmd.name.to_ascii_lowercase());
            assert!(!cmd.name.contains('|'));
            for w in cmd.subcommands.windows(2) {
                assert!(w[0].name.as_bytes() < w[1].name.as_bytes(), "{}", w[1].name);
            }
            for sub in cmd.subcommands {
                assert_eq!(sub.name, sub.name.to_ascii_lowercase());
                let prefix = format!("{}|", cmd.name);
                assert!(sub.name.starts_with(&prefix), "{}", sub.name);
                assert!(sub.subcommands.is_empty());
            }
        }
        assert!(COMMANDS.len() >= 200);
    }

    #[test]
    fn every_entry_is_found_by_its_own_name() {
        for cmd in COMMANDS {
            assert_eq!(name_of(&[cmd.name]), Some(cmd.name));
            for sub in cmd.subcommands {
                let parts: Vec<&str> = sub.name.split('|').collect();
                assert_eq!(name_of(&parts), Some(sub.name));
            }
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(name_of(&["GET", "k"]), Some("get"));
        assert_eq!(name_of(&["gEt", "k"]), Some("get"));
        assert_eq!(name_of(&["ZUNIONSTORE"]), Some("zunionstore"));
        assert_eq!(
            name_of(&["Object", "ENCODING", "k"]),
            Some("object|encoding")
        );
        assert_eq!(name_of(&["CLIENT", "kill"]), Some("client|kill"));
    }

    #[test]
    fn lookup_subcommands_and_fallback_to_container() {
        assert_eq!(name_of(&["config", "get", "x"]), Some("config|get"));
        assert_eq!(name_of(&["xinfo", "stream", "s"]), Some("xinfo|stream"));
        // missing or unknown subcommand: the container
        assert_eq!(name_of(&["object"]), Some("object"));
        assert_eq!(name_of(&["object", "nosuch", "k"]), Some("object"));
        assert_eq!(name_of(&["object", "encodingx"]), Some("object"));
        assert_eq!(name_of(&["object", "encod"]), Some("object"));
        // a command without subcommands ignores args[1]
        assert_eq!(name_of(&["get", "help"]), Some("get"));
    }

    #[test]
    fn lookup_unknown() {
        assert_eq!(name_of(&[]), None);
        assert_eq!(name_of(&["nosuchcommand"]), None);
        assert_eq!(name_of(&[""]), None);
        assert_eq!(name_of(&["ge"]), None);
        // The router looks for its own PROXY only among the names the table lacks.
        assert_eq!(name_of(&["PROXY"]), None);
        assert_eq!(name_of(&["gett"]), None);
        assert_eq!(name_of(&["get\u{0}"]), None);
        assert_eq!(name_of(&["object|encoding"]), None);
        assert!(lookup(&[Bytes::from_static(b"\xff\xfe")]).is_none());
    }

    #[test]
    fn arity() {
        let get = lookup(&req(&["get"])).expect("get");
        assert_eq!(get.arity, 2);
        assert!(check_arity(get, 2));
        assert!(!check_arity(get, 1));
        assert!(!check_arity(get, 3));
        let mset = lookup(&req(&["mset"])).expect("mset");
        assert_eq!(mset.arity, -3);
        assert!(!check_arity(mset, 2));
        assert!(check_arity(mset, 3));
        assert!(check_arity(mset, 7));
        let enc = lookup(&req(&["object", "encoding"])).expect("object|encoding");
        assert_eq!(enc.arity, 3);
        assert!(check_arity(enc, 3));
        assert!(!check_arity(enc, 2));
        assert_eq!(
            arity_error(enc),
            "ERR wrong number of arguments for 'object|encoding' command"
        );
    }

    #[test]
    fn flags() {
        let get = lookup(&req(&["get"])).expect("get");
        assert!(get.has_flag(FLAG_READONLY | FLAG_FAST));
        assert!(!get.has_flag(FLAG_WRITE));
        let set = lookup(&req(&["set"])).expect("set");
        assert!(set.has_flag(FLAG_WRITE | FLAG_DENYOOM));
        assert!(set.key_specs.iter().any(|k| k.has_flag(KS_VARIABLE_FLAGS)));
        let eval = lookup(&req(&["eval"])).expect("eval");
        assert!(eval.has_flag(FLAG_MOVABLEKEYS | FLAG_NO_MANDATORY_KEYS));
    }
}
