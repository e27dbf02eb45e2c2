//! Access control: users, their permission level and key namespaces, and the check every
//! request passes when users are configured.
//!
//! Invariants: with no users configured the proxy is open and this module is never consulted
//! on the data path (one boolean per request); a password is kept only as its SHA-256 and
//! compared in constant time; every key of a request is checked (all keys of MGET/MSET/DEL,
//! before any split), so a request with one key outside the namespace runs nowhere; commands
//! that would see keys beyond one namespace (KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSH*) are refused
//! to users with a namespace. Errors use Redis's texts (`NOAUTH`, `WRONGPASS`, `NOPERM`).
//! [`acl_guard`] keeps node ACL changes sent through the proxy from locking the proxy out.

pub mod acl_guard;

use crate::route::command::{self, CommandSpec};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What a user may do; each level includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Read-only commands, connection commands, subscriptions.
    Read,
    /// Also commands that change data.
    Write,
    /// Also PROXY commands and commands that change the whole cluster (FLUSHALL, CONFIG SET,
    /// SCRIPT/FUNCTION FLUSH, CLIENT KILL, ...).
    Admin,
}

/// The `cross_slot` setting, the proxy's or a user's own: what a multi-key command whose keys
/// hash to different slots gets.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CrossSlot {
    /// Redis Cluster's own `-CROSSSLOT` error (the default, as a cluster node answers).
    #[default]
    Refuse,
    /// The proxy carries the command out over the nodes involved, not atomically.
    Emulate,
}

/// One user as written in the configuration file (`[[users]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name for `AUTH <name> <password>`; `default` is the user of `AUTH <password>`.
    pub name: String,
    /// The password in clear text (or use `password_sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The SHA-256 of the password, hex, as Redis ACL's `#<hash>` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_sha256: Option<String>,
    /// `read`, `write` or `admin`.
    pub level: Level,
    /// Key prefixes this user may read; empty means every key.
    #[serde(default)]
    pub read_prefixes: Vec<String>,
    /// Key prefixes this user may write; empty means every key.
    #[serde(default)]
    pub write_prefixes: Vec<String>,
    /// Most connections authenticated as this user at once; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Commands this user may run, by name (`get`, `config|get`, `client` for every CLIENT
    /// subcommand) or category (`@read`, `@write`, `@admin`, `@pubsub`, `@blocking`,
    /// `@scripting`, `@keyspace-wide`); empty: every command its level allows.
    #[serde(default)]
    pub commands_allow: Vec<String>,
    /// Commands this user may not run (same forms); wins over `commands_allow`.
    #[serde(default)]
    pub commands_deny: Vec<String>,
    /// Names (subject common name or DNS subject alternative name) of client certificates
    /// that log a TLS client in as this user, without AUTH. Needs `tls_client_ca_file`, so
    /// only certificates the operator's CA signed count. With names, the password is optional.
    #[serde(default)]
    pub certificate_names: Vec<String>,
    /// Lets a user with key prefixes run scripts and functions (EVAL*, FCALL*, SCRIPT LOAD,
    /// FUNCTION LOAD/RESTORE, as its level allows). Off by default, because a script can reach
    /// any key of its declared keys' slots and the proxy cannot see which ones it touches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_scripts: bool,
    /// This user's own `cross_slot` (what its multi-key commands across slots get); absent:
    /// the proxy's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_slot: Option<CrossSlot>,
    /// Where this user's reads go (`master`, `prefer-replica`, `replica`, `any`), in place of
    /// the proxy's `read_from`; absent: the setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_from: Option<String>,
}

/// A configured user, ready for checks.
#[derive(Debug)]
pub struct User {
    /// Its name.
    pub name: String,
    /// SHA-256 of the password; `None`: no password logs in as this user (certificate only).
    hash: Option<[u8; 32]>,
    certificate_names: Vec<String>,
    /// Its level.
    pub level: Level,
    read_prefixes: Vec<Vec<u8>>,
    write_prefixes: Vec<Vec<u8>>,
    max_connections: Option<usize>,
    commands_allow: Vec<String>,
    commands_deny: Vec<String>,
    allow_scripts: bool,
    /// Its own `cross_slot`, over the proxy's setting.
    pub cross_slot: Option<CrossSlot>,
    /// Its `read_from`, in place of the proxy's.
    pub read_from: Option<crate::route::replica_choice::ReadFrom>,
    /// Connections authenticated as this user now.
    connections: std::sync::atomic::AtomicUsize,
}

/// One connection's hold on its user's connection count; released when dropped (the
/// connection ends or authenticates as someone else).
#[derive(Debug)]
pub struct Session {
    /// The user.
    pub user: Arc<User>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.user
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::ops::Deref for Session {
    type Target = User;
    fn deref(&self) -> &User {
        &self.user
    }
}

impl User {
    /// Takes one of the user's connections; refused past `max_connections`.
    pub fn open_session(self: &Arc<Self>) -> Result<Session, Denied> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.connections.fetch_add(1, Relaxed);
        if self.max_connections.is_some_and(|max| now >= max) {
            self.connections.fetch_sub(1, Relaxed);
            return Err(Denied::MaxConnections {
                user: self.name.clone(),
                max: self.max_connections.unwrap_or_default(),
            });
        }
        Ok(Session {
            user: Arc::clone(self),
        })
    }
}

/// Failed AUTH attempts per client address, to slow down password guessing: past `limit`
/// failures within a minute, AUTH from that address is refused without checking the
/// password until the minute is over.
#[derive(Debug, Default)]
pub struct AuthGuard {
    failures:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
    /// AUTH attempts refused by the limit, for metrics.
    pub limited: std::sync::atomic::AtomicU64,
    /// Failed AUTH attempts, for metrics.
    pub failed: std::sync::atomic::AtomicU64,
    /// AUTHs refused by a user's `max_connections`, for metrics.
    pub user_limited: std::sync::atomic::AtomicU64,
}

const AUTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

impl AuthGuard {
    /// Whether `ip` may try a password now.
    pub fn allowed(&self, ip: std::net::IpAddr, limit: u32) -> bool {
        if limit == 0 {
            return true;
        }
        let Ok(map) = self.failures.lock() else {
            return true;
        };
        match map.get(&ip) {
            Some((since, n)) if since.elapsed() < AUTH_WINDOW && *n >= limit => {
                self.limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }

    /// Records a failed attempt from `ip`.
    pub fn failed(&self, ip: std::net::IpAddr) {
        self.failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut map) = self.failures.lock() {
            if map.len() > 100_000 {
                map.retain(|_, (since, _)| since.elapsed() < AUTH_WINDOW);
            }
            let e = map.entry(ip).or_insert((std::time::Instant::now(), 0));
            if e.0.elapsed() >= AUTH_WINDOW {
                *e = (std::time::Instant::now(), 0);
            }
            e.1 += 1;
        }
    }
}

/// Every configured user.
#[derive(Debug, Default)]
pub struct Users {
    list: Vec<Arc<User>>,
}

/// `-NOAUTH`, for a request before authentication.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// `-WRONGPASS`, for a failed AUTH.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Users {
    /// Builds the users from the configuration, checking each has exactly one password form.
    pub fn from_config(list: &[UserConfig]) -> anyhow::Result<Users> {
        let mut users = Vec::with_capacity(list.len());
        for u in list {
            let hash = match (&u.password, &u.password_sha256) {
                (Some(p), None) => Some(sha256(p.as_bytes())),
                (None, Some(h)) => Some(parse_hex32(h).ok_or_else(|| {
                    anyhow::anyhow!("user {:?}: password_sha256 is not 64 hex digits", u.name)
                })?),
                (None, None) if !u.certificate_names.is_empty() => None,
                _ => anyhow::bail!(
                    "user {:?}: give exactly one of password and password_sha256 (or only certificate_names)",
                    u.name
                ),
            };
            if users.iter().any(|x: &Arc<User>| x.name == u.name) {
                anyhow::bail!("user {:?} is configured twice", u.name);
            }
            let bytes = |v: &Vec<String>| v.iter().map(|p| p.as_bytes().to_vec()).collect();
            let read_from = match &u.read_from {
                None => None,
                Some(text) => Some(
                    crate::route::replica_choice::ReadFrom::parse(text).ok_or_else(|| {
                        anyhow::anyhow!(
                            "user {:?}: read_from must be {}, not {text:?}",
                            u.name,
                            crate::route::replica_choice::ReadFrom::NAMES
                        )
                    })?,
                ),
            };
            users.push(Arc::new(User {
                name: u.name.clone(),
                hash,
                certificate_names: u.certificate_names.clone(),
                level: u.level,
                read_prefixes: bytes(&u.read_prefixes),
                write_prefixes: bytes(&u.write_prefixes),
                max_connections: u.max_connections,
                commands_allow: lower(&u.commands_allow)?,
                commands_deny: lower(&u.commands_deny)?,
                allow_scripts: u.allow_scripts,
                cross_slot: u.cross_slot,
                read_from,
                connections: Default::default(),
            }));
        }
        Ok(Users { list: users })
    }

    /// Access control on, with no user anyone can authenticate as (for a configuration that
    /// failed to load: closed rather than open).
    pub fn locked() -> Users {
        Users {
            list: vec![Arc::new(User {
                name: String::new(),
                hash: None,
                certificate_names: Vec::new(),
                level: Level::Read,
                read_prefixes: vec![Vec::new()],
                write_prefixes: vec![Vec::new()],
                max_connections: Some(0),
                commands_allow: Vec::new(),
                commands_deny: Vec::new(),
                allow_scripts: false,
                cross_slot: None,
                read_from: None,
                connections: Default::default(),
            })],
        }
    }

    /// Whether access control is on (at least one user configured).
    pub fn active(&self) -> bool {
        !self.list.is_empty()
    }

    /// The user `name` if `password` is its password.
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let given = sha256(password);
        let user = self.list.iter().find(|u| u.name.as_bytes() == name)?;
        let hash = user.hash.as_ref()?;
        // Constant time over the hash, so timing tells nothing about the password.
        let diff = hash
            .iter()
            .zip(given.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        (diff == 0).then(|| Arc::clone(user))
    }

    /// The user a verified client certificate carrying `names` logs in as: the first user
    /// listing one of them in `certificate_names` (exact, case-sensitive match).
    pub fn by_certificate(&self, names: &[String]) -> Option<Arc<User>> {
        self.list
            .iter()
            .find(|u| u.certificate_names.iter().any(|n| names.contains(n)))
            .cloned()
    }

    /// Whether any user is reached by client certificates.
    pub fn use_certificates(&self) -> bool {
        self.list.iter().any(|u| !u.certificate_names.is_empty())
    }
}

/// The categories a command list may name.
const CATEGORIES: &[&str] = &[
    "@read",
    "@write",
    "@admin",
    "@pubsub",
    "@blocking",
    "@scripting",
    "@keyspace-wide",
];

/// Command-list entries in lowercase; an unknown `@category` is a configuration error.
fn lower(list: &[String]) -> anyhow::Result<Vec<String>> {
    list.iter()
        .map(|e| {
            let e = e.trim().to_ascii_lowercase().replace(' ', "|");
            if e.starts_with('@') && !CATEGORIES.contains(&e.as_str()) {
                anyhow::bail!(
                    "unknown command category {e:?} (known: {})",
                    CATEGORIES.join(", ")
                );
            }
            Ok(e)
        })
        .collect()
}

/// Whether a command-list entry names `spec`.
fn names(entry: &str, spec: &CommandSpec) -> bool {
    let container = spec.name.split('|').next().unwrap_or(spec.name);
    match entry {
        "@read" => required(spec) == Level::Read,
        "@write" => required(spec) == Level::Write,
        "@admin" => required(spec) == Level::Admin,
        "@pubsub" => spec.flags & command::FLAG_PUBSUB != 0,
        "@blocking" => spec.flags & command::FLAG_BLOCKING != 0,
        "@scripting" => matches!(
            container,
            "eval"
                | "evalsha"
                | "eval_ro"
                | "evalsha_ro"
                | "fcall"
                | "fcall_ro"
                | "script"
                | "function"
        ),
        "@keyspace-wide" => KEYSPACE_WIDE.contains(&spec.name),
        name => name == spec.name || name == container,
    }
}

/// The commands that change the whole cluster or other clients: admin only. RESTORE and
/// MIGRATE are Redis's `@dangerous`: RESTORE writes any payload (a crafted one can crash a
/// node), MIGRATE makes a node connect anywhere and move keys out of the proxy's reach.
const ADMIN_COMMANDS: &[&str] = &[
    "flushall",
    "flushdb",
    "config|set",
    "config|resetstat",
    "script|flush",
    "script|kill",
    "script|load",
    "function|flush",
    "function|kill",
    "function|delete",
    "function|restore",
    "function|load",
    "client|kill",
    "restore",
    "restore-asking",
    "migrate",
];

/// Commands that see keys of the whole keyspace: refused to users with a namespace (MONITOR
/// shows every client's keys, so it is refused to read namespaces too).
const KEYSPACE_WIDE: &[&str] = &[
    "keys",
    "scan",
    "randomkey",
    "dbsize",
    "flushall",
    "flushdb",
    "monitor",
];

/// Commands that run or install code: a script reaches any key of its declared keys' slots
/// (Redis Cluster only checks slots), and Redis's ACL checks what a script runs against the
/// caller while the proxy cannot, so users with a namespace need `allow_scripts`.
const RUNS_CODE: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "script|load",
    "function|load",
    "function|restore",
];

/// Redis's refusal for a key outside the user's key permissions.
/// Why access control refused a request. `Display` is the reply the client gets: Redis's
/// `NOPERM` texts, with the proxy's reason added where Redis has no such rule. Every refusal
/// text of this module is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The user's level is below the command's, or its command lists refuse it.
    Command(&'static str),
    /// A namespaced user without `allow_scripts` asked to run a script or function.
    Script(&'static str),
    /// A namespaced user asked for a command that reaches the whole keyspace.
    KeyspaceWide(&'static str),
    /// A key outside the user's prefixes.
    Keys,
    /// A channel or pattern outside the user's prefixes.
    Channels,
    /// The user already has `max_connections` connections.
    MaxConnections {
        /// The user's name.
        user: String,
        /// Its limit.
        max: usize,
    },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = "NOPERM this user has no permissions to run the";
        match self {
            Denied::Command(name) => write!(f, "{run} '{name}' command"),
            Denied::Script(name) => write!(
                f,
                "{run} '{name}' command (a script can reach keys outside the user's key prefixes; see allow_scripts)"
            ),
            Denied::KeyspaceWide(name) => write!(
                f,
                "{run} '{name}' command (it would reach keys outside the user's key prefixes)"
            ),
            Denied::Keys => f.write_str(
                "NOPERM this user has no permissions to access one of the keys used as arguments",
            ),
            Denied::Channels => f.write_str(
                "NOPERM this user has no permissions to access one of the channels used as arguments",
            ),
            Denied::MaxConnections { user, max } => write!(
                f,
                "ERR slotproxy: user '{user}' has reached its max_connections ({max})"
            ),
        }
    }
}

impl std::error::Error for Denied {}

/// The level a command needs.
pub fn required(spec: &CommandSpec) -> Level {
    if ADMIN_COMMANDS.contains(&spec.name) || spec.flags & command::FLAG_ADMIN != 0 {
        return Level::Admin;
    }
    let writes = spec.flags & command::FLAG_WRITE != 0
        || matches!(
            spec.name,
            "eval" | "evalsha" | "fcall" | "publish" | "spublish"
        );
    if writes {
        Level::Write
    } else {
        Level::Read
    }
}

/// Whether the `nth` key of a request (counting from 0, in argument order) has its value
/// read: returned, copied or moved somewhere (Redis's `access` key-spec flag). A command that
/// writes such a key needs the user's read permission for it as well.
fn reads_key(spec: &CommandSpec, args: &[Bytes], nth: usize) -> bool {
    let access = |ks: &command::KeySpec| ks.flags & command::KS_ACCESS != 0;
    match spec.name {
        // The flag varies with the arguments; as Redis's setGetKeys: read only with GET.
        "set" => args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"get")),
        // The source comes first; every later key is a STORE destination.
        "sort" | "georadius" | "georadiusbymember" => nth == 0,
        _ => {
            let mut specs = spec
                .key_specs
                .iter()
                .filter(|ks| ks.flags & command::KS_NOT_KEY == 0);
            match (specs.next(), specs.next(), specs.next()) {
                // Two runs that differ (COPY, LMOVE, RENAME, SMOVE, *STORE, BITOP): the first
                // is the single first key (checked by a unit test over the whole table).
                (Some(first), Some(rest), None) if access(first) != access(rest) => {
                    access(if nth == 0 { first } else { rest })
                }
                _ => spec.key_specs.iter().any(access),
            }
        }
    }
}

/// Whether `name` starts with one of `prefixes` (none: every name).
fn inside(prefixes: &[Vec<u8>], name: &[u8]) -> bool {
    prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p))
}

/// Whether every channel a pattern can match starts with one of `prefixes`: the pattern
/// starts with a prefix and has no glob character within it.
fn pattern_inside(prefixes: &[Vec<u8>], pattern: &[u8]) -> bool {
    prefixes.is_empty()
        || prefixes.iter().any(|p| {
            pattern.starts_with(p) && !p.iter().any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
        })
}

impl User {
    fn prefixes(&self, level: Level) -> &[Vec<u8>] {
        if level >= Level::Write {
            &self.write_prefixes
        } else {
            &self.read_prefixes
        }
    }

    /// Whether the user is confined to key prefixes (for reading or writing).
    pub fn namespaced(&self) -> bool {
        !self.read_prefixes.is_empty() || !self.write_prefixes.is_empty()
    }

    /// Checks one request: the command's level, then every key against the namespace (keys a
    /// writing command also reads against the read prefixes too), then the channels of a
    /// pub/sub command. `keys` holds the positions of the request's keys in `args`.
    pub fn check(
        &self,
        spec: &'static CommandSpec,
        args: &[Bytes],
        keys: &[usize],
    ) -> Result<(), Denied> {
        let need = required(spec);
        // Redis names a subcommand `container|sub`, as the table does; no copy per request.
        let shown = spec.name;
        let listed = |list: &[String]| list.iter().any(|e| names(e, spec));
        let refused_by_list = listed(&self.commands_deny)
            || (!self.commands_allow.is_empty() && !listed(&self.commands_allow));
        if need > self.level || refused_by_list {
            return Err(Denied::Command(shown));
        }
        if !self.namespaced() {
            return Ok(());
        }
        if !self.allow_scripts && RUNS_CODE.contains(&spec.name) {
            return Err(Denied::Script(shown));
        }
        let prefixes = self.prefixes(need);
        if (!prefixes.is_empty() || spec.name == "monitor") && KEYSPACE_WIDE.contains(&spec.name) {
            return Err(Denied::KeyspaceWide(shown));
        }
        let also_read = need >= Level::Write && !self.read_prefixes.is_empty();
        for (nth, &i) in keys.iter().enumerate() {
            let Some(k) = args.get(i) else {
                return Err(Denied::Keys);
            };
            if !inside(prefixes, k)
                || (also_read && !inside(&self.read_prefixes, k) && reads_key(spec, args, nth))
            {
                return Err(Denied::Keys);
            }
        }
        if spec.flags & command::FLAG_PUBSUB != 0 && !prefixes.is_empty() {
            return check_channels(spec, args, prefixes);
        }
        Ok(())
    }
}

impl User {
    /// For a SORT / SORT_RO with BY or GET patterns that the proxy carries out itself: the
    /// keys the patterns name are read too. Every key a pattern names starts with the
    /// pattern's text before its `*`, so that text must be inside the prefixes the command's
    /// keys need, and inside the read prefixes. (`#` and patterns without `*` name no key.)
    pub fn check_sort_patterns(&self, spec: &CommandSpec, args: &[Bytes]) -> Result<(), Denied> {
        if !self.namespaced() {
            return Ok(());
        }
        let prefixes = self.prefixes(required(spec));
        let mut j = 2;
        while j + 1 < args.len() {
            let a = &args[j];
            if a.eq_ignore_ascii_case(b"limit") {
                j += 3;
                continue;
            }
            if a.eq_ignore_ascii_case(b"store") {
                j += 2;
                continue;
            }
            if a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get") {
                let p = &args[j + 1];
                let visible = p.split(|&c| c == 0).next().unwrap_or_default();
                if let Some(star) = visible.iter().position(|&c| c == b'*') {
                    let stem = &p[..star];
                    if visible != b"#"
                        && !(inside(prefixes, stem) && inside(&self.read_prefixes, stem))
                    {
                        return Err(Denied::Keys);
                    }
                }
                j += 2;
                continue;
            }
            j += 1;
        }
        Ok(())
    }
}

/// The channel rule for users with a namespace: channels (and shard channels) must start with
/// one of the prefixes, patterns must start with one and have no glob character within it,
/// and listing every active channel needs a pattern that satisfies the same rule.
fn check_channels(spec: &CommandSpec, args: &[Bytes], prefixes: &[Vec<u8>]) -> Result<(), Denied> {
    let all = |from: usize, ok: &dyn Fn(&[u8]) -> bool| {
        if args.iter().skip(from).all(|a| ok(a)) {
            Ok(())
        } else {
            Err(Denied::Channels)
        }
    };
    let channel = |c: &[u8]| inside(prefixes, c);
    let pattern = |c: &[u8]| pattern_inside(prefixes, c);
    match spec.name {
        "subscribe" | "ssubscribe" => all(1, &channel),
        // Only the channel: the message is free text.
        "publish" | "spublish" => match args.get(1) {
            Some(c) if channel(c) => Ok(()),
            _ => Err(Denied::Channels),
        },
        "pubsub|numsub" | "pubsub|shardnumsub" => all(2, &channel),
        "psubscribe" => all(1, &pattern),
        "pubsub|channels" | "pubsub|shardchannels" => match args.get(2) {
            Some(p) if pattern(p) => Ok(()),
            _ => Err(Denied::Channels),
        },
        // Leaving, and counts that name no channel.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
