//! Routing: where one client request goes. This is the one place that decides it.
//!
//! [`route`] is pure (no sockets, no map): from the arguments alone it decides whether the
//! proxy answers, which hash slot the request belongs to, how a multi-key command splits per
//! slot, or which error the client gets. Invariants: a command is only ever sent whole to the
//! owner of the one slot all its keys hash to (or split per slot, for the commands whose
//! meaning a split preserves); a command that would change the state of a shared backend
//! connection (SELECT, CLIENT REPLY, READONLY, blocking and pub/sub commands, transactions) is
//! never forwarded on one. Commands that concern the whole cluster (KEYS, DBSIZE, SCAN,
//! FLUSHALL, SCRIPT LOAD, CONFIG SET, ...) become a [`FanOut`]: the router names the kind of
//! nodes and the merge, the session resolves the nodes with the current map.

use crate::cluster::slots::key_slot;
use crate::route::command::{self, CommandSpec};
use crate::route::fanout::ScanCursor;
use crate::route::merge::MergeKind;
use crate::route::resp;
use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::collections::HashMap;

mod by_name;

/// Commands the proxy answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// `PING [message]`
    Ping,
    /// ECHO message
    Echo,
    /// QUIT
    Quit,
    /// SELECT db
    Select,
    /// HELLO [protover [AUTH user pass] [SETNAME name]]
    Hello,
    /// `AUTH [user] pass`
    Auth,
    /// INFO [section ...]
    Info,
    /// CLIENT SETNAME name
    ClientSetName,
    /// CLIENT GETNAME
    ClientGetName,
    /// CLIENT ID
    ClientId,
    /// SLOWLOG GET|LEN|RESET|HELP (the proxy's own slow log)
    Slowlog,
    /// PROXY ... (the admin namespace)
    Proxy,
    /// RESET
    Reset,
    /// CLIENT LIST [TYPE type] [ID id ...]
    ClientList,
    /// CLIENT INFO
    ClientInfo,
    /// CLIENT KILL addr | CLIENT KILL filter value ...
    ClientKill,
    /// CLIENT NO-EVICT on|off (the proxy evicts nothing: accepted, no effect)
    ClientNoEvict,
    /// CLIENT REPLY ON|OFF|SKIP (run by the session, which owns the reply queue)
    ClientReply,
    /// ACL WHOAMI (the client's proxy user)
    AclWhoami,
    /// CLIENT UNBLOCK id [TIMEOUT|ERROR] (run by the session: the outcome comes from the
    /// blocked client's session)
    ClientUnblock,
    /// CLIENT PAUSE timeout [WRITE|ALL] (the proxy's clients, on every worker)
    ClientPause,
    /// CLIENT UNPAUSE
    ClientUnpause,
    /// CLIENT TRACKING / CACHING / GETREDIR / TRACKINGINFO (client-side caching, run by the
    /// session, which owns the client's tracking state)
    ClientTracking,
    /// CONFIG GET parameter [parameter ...]: asked of any one node, with the settings the
    /// proxy owns (the slow log's, see [`crate::route::own_settings`]) shown as the proxy's.
    ConfigGet,
    /// MONITOR (the proxy's clients, on every worker)
    Monitor,
    /// READONLY: this connection's reads may go to replicas (`prefer-replica`).
    ReadOnly,
    /// READWRITE: this connection's reads follow the `read_from` setting again.
    ReadWrite,
}

/// One part of a split command: the keys of one slot.
#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    /// The slot all of this part's keys hash to.
    pub slot: u16,
    /// The part's request as it goes to the node (the command with this part's keys, in
    /// the order the client gave them), a slice of one buffer shared by all parts.
    pub wire: Bytes,
}

/// A multi-key command split per slot.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// How the parts' replies merge.
    pub kind: MergeKind,
    /// For each key of the request, in order, the index of the part that holds it.
    pub order: Vec<u32>,
    /// The parts, in order of their first key.
    pub parts: Vec<Part>,
}

/// A command that concerns the whole cluster: which nodes it goes to and how their replies
/// merge. The session resolves the nodes from the current slot map.
#[derive(Debug, PartialEq, Eq)]
pub enum FanOut {
    /// The request, unchanged, to every master; the replies merge by this kind.
    Masters(MergeKind),
    /// The request, unchanged, to every node, masters and replicas (CONFIG SET / RESETSTAT).
    AllNodes {
        /// How the replies merge.
        kind: MergeKind,
        /// CONFIG SET or RESETSTAT, which concern the proxy too.
        config: Option<NodeConfig>,
    },
    /// One step of a cluster-wide SCAN from this (decoded) cursor; the request is sent to one
    /// node with argument 1 replaced by that node's own cursor.
    Scan(ScanCursor),
}

/// The CONFIG subcommands sent to every node that the proxy has a part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeConfig {
    /// CONFIG SET: refused by `allow_config_set = false` and for the settings
    /// [`crate::route::config_refusal`] names; the slow log's settings apply to the proxy too.
    Set,
    /// CONFIG RESETSTAT: the proxy's INFO counters start again from zero too.
    ResetStat,
}

/// Transaction commands; the session runs them on a connection pinned to one slot's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tx {
    /// MULTI
    Multi,
    /// EXEC
    Exec,
    /// DISCARD
    Discard,
    /// WATCH key [key ...], all keys in this slot.
    Watch(u16),
    /// UNWATCH
    Unwatch,
}

/// Commands that change a client's subscriptions; the session keeps them on its own pub/sub
/// connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    /// SUBSCRIBE channel [channel ...]
    Subscribe,
    /// PSUBSCRIBE pattern [pattern ...]
    Psubscribe,
    /// UNSUBSCRIBE [channel ...]
    Unsubscribe,
    /// PUNSUBSCRIBE [pattern ...]
    Punsubscribe,
    /// SSUBSCRIBE shardchannel [shardchannel ...], all in this slot.
    Ssubscribe(u16),
    /// SUNSUBSCRIBE [shardchannel ...]
    Sunsubscribe,
}

/// The routing decision for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Forward the request unchanged to the owner of this slot.
    Slot(u16),
    /// Split per slot and merge the replies.
    Split(Split),
    /// Forward to any one master (keyless commands whose answer is the same everywhere).
    AnyNode,
    /// PUBLISH: to the node where this proxy's subscribers are
    /// ([`crate::cluster::SlotMap::pubsub_node`]), so its reply counts them.
    Publish,
    /// Send to several nodes and merge (KEYS, DBSIZE, SCAN, FLUSHALL, CONFIG SET, ...).
    FanOut(FanOut),
    /// A blocking command with keys in this slot: runs on a dedicated connection.
    Blocking(u16),
    /// WAIT numreplicas timeout: for the nodes this client wrote to.
    Wait,
    /// A transaction command.
    Tx(Tx),
    /// A subscription change.
    Sub(Sub),
    /// The proxy answers.
    Local(Local),
    /// Answer with this reply (an error) without contacting any node.
    Reply(Bytes),
    /// A multi-key command whose keys hash to different slots (and that no split serves):
    /// the session answers [`CROSSSLOT`] or, when the client's `cross_slot` is `emulate`,
    /// carries it out over the nodes involved ([`crate::session::cross_slot`]).
    CrossSlot,
    /// A SORT / SORT_RO in this slot with BY or GET patterns, which a cluster node refuses:
    /// sent to the node as any request (which answers with its refusal), or, when the
    /// client's `cross_slot` is `emulate`, carried out by the proxy
    /// ([`crate::session::cross_slot`]).
    SortPatterns(u16),
}

impl Route {
    /// The local command, when the proxy answers this request itself.
    pub fn local(&self) -> Option<Local> {
        match self {
            Route::Local(l) => Some(*l),
            _ => None,
        }
    }
}

/// Redis's reply to a command whose keys hash to different slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Redis 7.0's text for an unknown command, quoting the first arguments as Redis does.
pub fn unknown_command(args: &[Bytes]) -> Bytes {
    let name = String::from_utf8_lossy(&args[0]);
    let name: String = name.chars().take(128).collect();
    let mut quoted = String::new();
    for a in &args[1..] {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        let a = String::from_utf8_lossy(a);
        let a: String = a.chars().take(room).collect();
        quoted.push_str(&format!("'{a}' "));
    }
    resp::error(&format!(
        "ERR unknown command '{name}', with args beginning with: {quoted}"
    ))
}

fn unsupported(spec: &CommandSpec, what: &str) -> Route {
    Route::Reply(resp::error(&format!(
        "ERR slotproxy does not support '{}' yet ({what}); see the README's command list",
        spec.name.replace('|', " ").to_uppercase()
    )))
}

fn not_through_proxy(spec: &CommandSpec) -> Route {
    Route::Reply(resp::error(&format!(
        "ERR '{}' is not available through slotproxy: it concerns a single node or connection; send it to a node directly",
        spec.name.replace('|', " ").to_uppercase()
    )))
}

/// Commands that talk about one node or change a connection's mode; never forwarded.
const NODE_LEVEL: &[&str] = &[
    "asking",
    "cluster",
    "sync",
    "psync",
    "replconf",
    "replicaof",
    "slaveof",
    "failover",
    "shutdown",
    "debug",
    "module",
];

/// A request as the router read it: where it goes, and the command it names. The command
/// table is searched once per request, here; the session reuses `spec` for the metrics label
/// and access control instead of searching again.
pub struct Routed {
    /// Where the request goes.
    pub route: Route,
    /// The command (or subcommand) the request names; `None` for PROXY and unknown commands.
    pub spec: Option<&'static CommandSpec>,
}

/// Decides where `args` goes. `keys` is scratch space, reused across calls to avoid allocation.
pub fn route(args: &[Bytes], keys: &mut Vec<usize>) -> Route {
    analyse(args, keys).route
}

/// Like [`route`], and also returns the command spec it looked up.
pub fn analyse(args: &[Bytes], keys: &mut Vec<usize>) -> Routed {
    analyse_request(args, None, keys)
}

/// Like [`analyse`], for a request whose `args` are slices of `frame`, the request as the
/// client sent it: a split command's parts are then cut from it rather than encoded anew.
pub fn analyse_request(args: &[Bytes], frame: Option<&[u8]>, keys: &mut Vec<usize>) -> Routed {
    let Some(spec) = command::lookup(args) else {
        // PROXY is no Redis command: it is looked for only among the names the table lacks.
        let route = match args[0].eq_ignore_ascii_case(b"proxy") {
            true => Route::Local(Local::Proxy),
            false => Route::Reply(unknown_command(args)),
        };
        return Routed { route, spec: None };
    };
    Routed {
        route: route_command(spec, args, frame, keys),
        spec: Some(spec),
    }
}

/// Where a request for the known command `spec` goes.
fn route_command(
    spec: &'static CommandSpec,
    args: &[Bytes],
    frame: Option<&[u8]>,
    keys: &mut Vec<usize>,
) -> Route {
    if !spec.subcommands.is_empty() && args.len() >= 2 {
        return Route::Reply(resp::error(&format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(&args[1])
                .chars()
                .take(128)
                .collect::<String>(),
            spec.name.to_uppercase()
        )));
    }
    if !command::check_arity(spec, args.len()) {
        return Route::Reply(resp::error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        )));
    }
    let by_name = by_name::routed_by_name(spec);
    if by_name {
        if let Some(route) = route_by_name(spec, args, frame) {
            return route;
        }
    }
    keyed(spec, args, keys, by_name)
}

/// The commands routed by their name rather than by their keys alone: the proxy's own, the
/// split ones, the fan-outs, transactions, pub/sub. `None` for every other command. Only
/// commands [`by_name::routed_by_name`] admits reach this match (a unit test holds the
/// two together), so an ordinary keyed command skips it.
fn route_by_name(
    spec: &'static CommandSpec,
    args: &[Bytes],
    frame: Option<&[u8]>,
) -> Option<Route> {
    let route = match spec.name {
        "ping" => Route::Local(Local::Ping),
        "reset" => Route::Local(Local::Reset),
        "echo" => Route::Local(Local::Echo),
        "quit" => Route::Local(Local::Quit),
        "select" => Route::Local(Local::Select),
        "hello" => Route::Local(Local::Hello),
        "auth" => Route::Local(Local::Auth),
        "info" => Route::Local(Local::Info),
        "client|setname" => Route::Local(Local::ClientSetName),
        "client|getname" => Route::Local(Local::ClientGetName),
        "client|id" => Route::Local(Local::ClientId),
        "client|list" => Route::Local(Local::ClientList),
        "client|info" => Route::Local(Local::ClientInfo),
        "client|kill" => Route::Local(Local::ClientKill),
        "client|no-evict" => Route::Local(Local::ClientNoEvict),
        "client|reply" => Route::Local(Local::ClientReply),
        "client|unblock" => Route::Local(Local::ClientUnblock),
        "client|pause" => Route::Local(Local::ClientPause),
        "client|unpause" => Route::Local(Local::ClientUnpause),
        "client|tracking" | "client|caching" | "client|getredir" | "client|trackinginfo" => {
            Route::Local(Local::ClientTracking)
        }
        "monitor" => Route::Local(Local::Monitor),
        "readonly" => Route::Local(Local::ReadOnly),
        "readwrite" => Route::Local(Local::ReadWrite),
        "slowlog|get" | "slowlog|len" | "slowlog|reset" | "slowlog|help" => {
            Route::Local(Local::Slowlog)
        }
        "command"
        | "command|count"
        | "command|info"
        | "command|docs"
        | "command|getkeys"
        | "command|getkeysandflags"
        | "command|list" => Route::AnyNode,
        "mget" => split(args, frame, MergeKind::Mget, 1),
        "mset" if args.len().is_multiple_of(2) => Route::Reply(resp::error(
            "ERR wrong number of arguments for 'mset' command",
        )),
        "mset" => split(args, frame, MergeKind::AllOk, 2),
        "del" | "unlink" | "exists" | "touch" => split(args, frame, MergeKind::Sum, 1),
        "keys" => Route::FanOut(FanOut::Masters(MergeKind::Concat)),
        "dbsize" => Route::FanOut(FanOut::Masters(MergeKind::Sum)),
        "randomkey" => Route::FanOut(FanOut::Masters(MergeKind::FirstNonNil)),
        "flushall" | "flushdb" | "script|load" | "script|flush" => {
            Route::FanOut(FanOut::Masters(MergeKind::Unanimous))
        }
        "script|exists" => Route::FanOut(FanOut::Masters(MergeKind::AndPositions)),
        // Functions, like scripts, live in each node's memory: change them everywhere, read
        // them anywhere.
        "function|load" | "function|delete" | "function|flush" | "function|restore" => {
            Route::FanOut(FanOut::Masters(MergeKind::Unanimous))
        }
        "function|list" | "function|dump" | "function|stats" | "lolwut" | "pfselftest" => {
            Route::AnyNode
        }
        // A busy script runs on one node; the others answer NOTBUSY.
        "script|kill" | "function|kill" => Route::FanOut(FanOut::Masters(MergeKind::AnyOk)),
        // Cluster pub/sub carries a PUBLISH to every node, but the count it answers is the
        // receiving node's: it goes where the proxy's subscribers are.
        "publish" => Route::Publish,
        // The same answer from any one master.
        "time" => Route::AnyNode,
        "config|get" => Route::Local(Local::ConfigGet),
        // Server administration: every node has its own users, persistence and diagnostics,
        // so changes go to every node and per-node reports come back listed by node.
        "acl|whoami" => Route::Local(Local::AclWhoami),
        "acl|log" if args.len() == 3 && args[2].eq_ignore_ascii_case(b"reset") => {
            every_node(MergeKind::Unanimous)
        }
        "acl|cat" | "acl|getuser" | "acl|list" | "acl|users" | "acl|log" | "acl|dryrun"
        | "acl|genpass" => Route::AnyNode,
        "acl|setuser" | "acl|deluser" | "acl|save" | "acl|load" | "save" | "bgsave"
        | "bgrewriteaof" | "config|rewrite" | "memory|purge" => every_node(MergeKind::Unanimous),
        "lastsave" => every_node(MergeKind::Min),
        "latency|reset" => every_node(MergeKind::Sum),
        "latency|latest"
        | "latency|history"
        | "latency|doctor"
        | "latency|graph"
        | "latency|histogram"
        | "memory|stats"
        | "memory|doctor"
        | "memory|malloc-stats" => every_node(MergeKind::ByNode),
        "config|set" => Route::FanOut(FanOut::AllNodes {
            kind: MergeKind::Unanimous,
            config: Some(NodeConfig::Set),
        }),
        "config|resetstat" => Route::FanOut(FanOut::AllNodes {
            kind: MergeKind::Unanimous,
            config: Some(NodeConfig::ResetStat),
        }),
        "scan" => {
            match std::str::from_utf8(&args[1])
                .ok()
                .and_then(|c| c.parse::<u64>().ok())
            {
                Some(c) => Route::FanOut(FanOut::Scan(ScanCursor::decode(c))),
                None => Route::Reply(resp::error("ERR invalid cursor")),
            }
        }
        "multi" => Route::Tx(Tx::Multi),
        "exec" => Route::Tx(Tx::Exec),
        "discard" => Route::Tx(Tx::Discard),
        "unwatch" => Route::Tx(Tx::Unwatch),
        "wait" => Route::Wait,
        // Subscriptions live on the node a client's connection went to: ask every node.
        "pubsub|channels" => Route::FanOut(FanOut::AllNodes {
            kind: MergeKind::Union,
            config: None,
        }),
        "pubsub|numsub" => Route::FanOut(FanOut::AllNodes {
            kind: MergeKind::SumPairs,
            config: None,
        }),
        "pubsub|numpat" => Route::FanOut(FanOut::AllNodes {
            kind: MergeKind::Sum,
            config: None,
        }),
        "pubsub|shardchannels" => Route::FanOut(FanOut::Masters(MergeKind::Union)),
        "pubsub|shardnumsub" => Route::FanOut(FanOut::Masters(MergeKind::SumPairs)),
        "subscribe" => Route::Sub(Sub::Subscribe),
        "psubscribe" => Route::Sub(Sub::Psubscribe),
        "unsubscribe" => Route::Sub(Sub::Unsubscribe),
        "punsubscribe" => Route::Sub(Sub::Punsubscribe),
        "sunsubscribe" => Route::Sub(Sub::Sunsubscribe),
        _ => return None,
    };
    Some(route)
}

/// Where a command [`route_by_name`] left goes: by its keys' slot. `by_name` is the
/// command's [`by_name::routed_by_name`], which also covers the few keyed commands whose route
/// depends on their name.
fn keyed(
    spec: &'static CommandSpec,
    args: &[Bytes],
    keys: &mut Vec<usize>,
    by_name: bool,
) -> Route {
    keys.clear();
    // Shard channels (SPUBLISH, SSUBSCRIBE) route by slot exactly like keys.
    if let Err(e) = command::slot_positions(spec, args, keys) {
        return Route::Reply(resp::error(&e.to_string()));
    }
    let Some(&first) = keys.first() else {
        return keyless(spec);
    };
    let slot = key_slot(&args[first]);
    if keys[1..].iter().any(|&k| key_slot(&args[k]) != slot) {
        return Route::CrossSlot;
    }
    if by_name {
        if let Some(route) = keyed_by_name(spec, args, slot) {
            return route;
        }
    }
    if spec.flags & command::FLAG_BLOCKING != 0 && !is_nonblocking_stream_read(spec, args) {
        return Route::Blocking(slot);
    }
    Route::Slot(slot)
}

/// The keyed commands whose route, once their slot is known, depends on their name.
fn keyed_by_name(spec: &CommandSpec, args: &[Bytes], slot: u16) -> Option<Route> {
    match spec.name {
        "watch" => Some(Route::Tx(Tx::Watch(slot))),
        "ssubscribe" => Some(Route::Sub(Sub::Ssubscribe(slot))),
        "sort" | "sort_ro" if command::sort_uses_patterns(args) => Some(Route::SortPatterns(slot)),
        _ => None,
    }
}

/// To every node, masters and replicas, merged by `kind`.
fn every_node(kind: MergeKind) -> Route {
    Route::FanOut(FanOut::AllNodes { kind, config: None })
}

/// Where a command without keys goes (after the commands the proxy answers itself).
fn keyless(spec: &CommandSpec) -> Route {
    let container = spec.name.split('|').next().unwrap_or(spec.name);
    if container == "client" {
        return unsupported(
            spec,
            "the proxy answers CLIENT SETNAME, GETNAME, ID, LIST, INFO, KILL, NO-EVICT, REPLY, UNBLOCK, PAUSE, UNPAUSE, TRACKING, CACHING, GETREDIR and TRACKINGINFO",
        );
    }
    if NODE_LEVEL.contains(&container) {
        return not_through_proxy(spec);
    }
    if spec.name.ends_with("|help") {
        // The node's own help text (it may list subcommands the proxy refuses).
        return Route::AnyNode;
    }
    if matches!(
        container,
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
    ) {
        // A script that declares no keys may run on any master, as a cluster client would.
        return Route::AnyNode;
    }
    unsupported(spec, "keyless commands that concern the whole cluster")
}

/// XREAD and XREADGROUP only block with a BLOCK option; without one they are ordinary reads.
/// The options are parsed as Redis parses them: a group or consumer named "streams" or
/// "block" is not a keyword.
fn is_nonblocking_stream_read(spec: &CommandSpec, args: &[Bytes]) -> bool {
    match spec.name {
        "xread" => !command::xread_blocks(args, false),
        "xreadgroup" => !command::xread_blocks(args, true),
        _ => false,
    }
}

/// Splits a command whose keys start at argument 1, one key every `step` arguments (the
/// arguments between keys travel with their key). When all keys share a slot the request is
/// forwarded whole. `frame` is the request as the client sent it, when `args` are slices of
/// it: each part's keys are then copied from it encoded as they are, instead of encoded anew.
fn split(args: &[Bytes], frame: Option<&[u8]>, kind: MergeKind, step: usize) -> Route {
    let keys = (args.len() - 1) / step;
    // Each key's slot, hashed once (on the stack for the usual sizes).
    let mut inline = [0u16; 32];
    let mut heap = Vec::new();
    let slots: &mut [u16] = if keys <= inline.len() {
        &mut inline[..keys]
    } else {
        heap.resize(keys, 0);
        &mut heap
    };
    for (k, slot) in slots.iter_mut().enumerate() {
        *slot = key_slot(&args[1 + k * step]);
    }
    if slots.iter().all(|&s| s == slots[0]) {
        return Route::Slot(slots[0]);
    }
    // Parts in order of first appearance (on the stack for the usual sizes), and each key's
    // next key in the same part (a chain, so encoding a part visits only its keys). A linear
    // search is cheaper than hashing for the handful of slots a request usually spans; many
    // slots get an index.
    let mut inline_next = [u32::MAX; 32];
    let mut heap_next = Vec::new();
    let next: &mut [u32] = if keys <= inline_next.len() {
        &mut inline_next[..keys]
    } else {
        heap_next.resize(keys, u32::MAX);
        &mut heap_next
    };
    let mut parts: SmallVec<[PartPlan; 16]> = SmallVec::new();
    let mut index: HashMap<u16, u32> = HashMap::new();
    // Only MGET's merge needs each key's part (to put the values back in the client's order).
    let mut order = Vec::with_capacity(if kind == MergeKind::Mget { keys } else { 0 });
    for (k, &slot) in slots.iter().enumerate() {
        let found = if parts.len() <= 16 {
            parts.iter().position(|p| p.slot == slot).map(|p| p as u32)
        } else {
            if index.is_empty() {
                index.extend(parts.iter().enumerate().map(|(i, p)| (p.slot, i as u32)));
            }
            index.get(&slot).copied()
        };
        let p = match found {
            Some(p) => {
                let part = &mut parts[p as usize];
                next[part.last] = k as u32;
                part.count += 1;
                part.last = k;
                p
            }
            None => {
                parts.push(PartPlan {
                    slot,
                    count: 1,
                    first: k,
                    last: k,
                    end: 0,
                });
                if !index.is_empty() {
                    index.insert(slot, (parts.len() - 1) as u32);
                }
                (parts.len() - 1) as u32
            }
        };
        if kind == MergeKind::Mget {
            order.push(p);
        }
    }
    // Every part's request encoded into one buffer, then cut into one `Bytes` per part: one
    // allocation for the whole split, however many parts.
    let name = &args[0];
    let spans = frame.and_then(|f| ArgSpans::of(f, args));
    let bytes: usize =
        args[1..].iter().map(|a| a.len() + 16).sum::<usize>() + parts.len() * (name.len() + 32);
    let mut out = BytesMut::with_capacity(bytes);
    for part in parts.iter_mut() {
        resp::put_array_header(&mut out, 1 + part.count * step);
        match &spans {
            Some(spans) => out.extend_from_slice(spans.run(0, 1)),
            None => resp::put_bulk(&mut out, name),
        }
        let mut k = part.first;
        for _ in 0..part.count {
            let (first_arg, end_arg) = (1 + k * step, 1 + (k + 1) * step);
            match &spans {
                // A key and the arguments that travel with it are one run of the frame.
                Some(spans) => out.extend_from_slice(spans.run(first_arg, end_arg)),
                None => {
                    for a in &args[first_arg..end_arg] {
                        resp::put_bulk(&mut out, a);
                    }
                }
            }
            k = next[k] as usize;
        }
        part.end = out.len();
    }
    let mut wire = out.freeze();
    let mut start = 0;
    let parts = parts
        .iter()
        .map(|plan| {
            let part = wire.split_to(plan.end - start);
            start = plan.end;
            Part {
                slot: plan.slot,
                wire: part,
            }
        })
        .collect();
    Route::Split(Split { kind, order, parts })
}

/// How many decimal digits `n` takes.
fn decimal_width(mut n: usize) -> usize {
    let mut width = 1;
    while n >= 10 {
        n /= 10;
        width += 1;
    }
    width
}

/// One part of a split while it is planned: its slot, how many keys it holds, its first and
/// last key (the ends of its chain) and where its encoding ends in the shared buffer.
struct PartPlan {
    slot: u16,
    count: usize,
    first: usize,
    last: usize,
    end: usize,
}

/// Where each argument's encoding lies in the frame it was parsed from. Argument `i`'s
/// `$<len>\r\n` header starts two bytes after argument `i - 1`'s payload ends, so the
/// encoding of arguments `a..b` is one run of the frame. Checked once for all arguments,
/// then read from the arguments' own positions (nothing stored per argument).
struct ArgSpans<'f> {
    frame: &'f [u8],
    args: &'f [Bytes],
    /// Where argument 0's header starts (after the `*<count>\r\n` line).
    head: usize,
}

impl<'f> ArgSpans<'f> {
    /// The spans of `args` in `frame`, or `None` when `args` are not, one after the other,
    /// bulk strings of `frame` (an inline request, encoded anew; arguments built by hand).
    fn of(frame: &'f [u8], args: &'f [Bytes]) -> Option<ArgSpans<'f>> {
        let head = frame.iter().position(|&b| b == b'\n')? + 1;
        if frame.first() != Some(&b'*') || frame.get(head) != Some(&b'$') {
            return None;
        }
        let spans = ArgSpans { frame, args, head };
        let mut header = head;
        for a in args {
            let start = spans.start(a)?;
            let end = start.checked_add(a.len())?;
            // `$`, the length's digits and CRLF right where the header should start, nothing
            // skipped in between; the payload and its two closing bytes inside the frame.
            if start != header + 3 + decimal_width(a.len())
                || frame[header] != b'$'
                || &frame[start - 2..start] != b"\r\n"
                || end + 2 > frame.len()
            {
                return None;
            }
            header = end + 2;
        }
        Some(spans)
    }

    /// Where `a`'s payload starts in the frame (`None`: not in it).
    fn start(&self, a: &Bytes) -> Option<usize> {
        let start = (a.as_ptr() as usize).checked_sub(self.frame.as_ptr() as usize)?;
        (start <= self.frame.len()).then_some(start)
    }

    /// Just past argument `i`'s payload and its CRLF (checked in [`ArgSpans::of`]).
    fn after(&self, i: usize) -> usize {
        self.args[i].as_ptr() as usize - self.frame.as_ptr() as usize + self.args[i].len() + 2
    }

    /// The encoding of arguments `first..end`, headers and CRLFs included.
    fn run(&self, first: usize, end: usize) -> &'f [u8] {
        let start = match first {
            0 => self.head,
            _ => self.after(first - 1),
        };
        &self.frame[start..self.after(end - 1)]
    }
}

#[cfg(test)]
mod tests;
