//! The pure half of `PROXY RESIZE MAXMEMORY`: memory values, what a node reported, the plan
//! (every node's new value and the write order) with its refusals, and the report's lines.
//! No sockets here: [`super`] reads the nodes and writes the plan's steps.
//!
//! Invariant: [`plan`] refuses before any write, so a refused run changes nothing; a plan gives
//! masters and replicas of one shard the same value, in an order that keeps each replica's
//! limit at or above its master's after every write.

use crate::admin::survey::{self, NodeState};
use crate::route::resp::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The value asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A number of bytes (0: no limit, as in Redis).
    Bytes(u64),
    /// A percent (1..=100) of each node's `total_system_memory`.
    Percent(u64),
}

/// Parses a memory value the way redis.conf and `CONFIG SET` do (Redis's `memtoull`): decimal
/// digits, then an optional unit, any case: `b`, `k` (1000), `kb` (1024), `m` (1000²), `mb`
/// (1024²), `g` (1000³), `gb` (1024³). Stricter than Redis where Redis is silent: no digits
/// (`mb`, or an empty string, which Redis reads as 0) and values past 2^64 are refused.
pub fn parse_memory(s: &str) -> Option<u64> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    if digits.is_empty() {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mul)
}

/// Bytes as Redis's `*_human` INFO fields write them (`1.50M`, 1024-based), for the report.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size {
            return format!("{:.2}{unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

/// A node's role, as the report names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A master (with or without slots).
    Master,
    /// A replica.
    Replica,
}

impl Role {
    /// `master` or `replica`.
    pub fn word(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// What one reachable node reported before any write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMemory {
    /// `ip:port`.
    pub addr: String,
    /// Master or replica.
    pub role: Role,
    /// The shard: a master's own node ID, a replica's master's ID (the address when the node
    /// has no cluster view).
    pub shard: String,
    /// `maxmemory` now (0: no limit).
    pub maxmemory: u64,
    /// `used_memory`.
    pub used_memory: u64,
    /// `total_system_memory` (0 when the node does not report it).
    pub total_system_memory: u64,
    /// Whether the node runs from a config file (`config_file` in `INFO server`).
    pub config_file: bool,
}

/// A node that could not be read; its presence refuses the whole run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// `ip:port`.
    pub addr: String,
    /// Why.
    pub error: String,
}

/// What reading one node gave.
pub type NodeRead = Result<NodeMemory, Unreachable>;

/// [`NodeMemory`] from the survey's entry for a node and its `INFO memory` and `INFO server`.
pub fn node_memory(state: &NodeState, info_memory: &str, info_server: &str) -> NodeMemory {
    let memory = survey::parse_info(info_memory);
    let server = survey::parse_info(info_server);
    let number = |key: &str| {
        memory
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (role, shard) = match state.myself() {
        Some(me) if me.is_master() => (Role::Master, me.id.clone()),
        Some(me) => (
            Role::Replica,
            me.master_id.clone().unwrap_or_else(|| me.id.clone()),
        ),
        None if state.repl("role") == Some("slave") => (Role::Replica, state.addr.clone()),
        None => (Role::Master, state.addr.clone()),
    };
    NodeMemory {
        addr: state.addr.clone(),
        role,
        shard,
        maxmemory: number("maxmemory"),
        used_memory: number("used_memory"),
        total_system_memory: number("total_system_memory"),
        config_file: server.get("config_file").is_some_and(|f| !f.is_empty()),
    }
}

/// One node's planned write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The node as read.
    pub node: NodeMemory,
    /// Its new maxmemory.
    pub new: u64,
}

impl Step {
    /// Whether the running value changes.
    pub fn changes(&self) -> bool {
        self.new != self.node.maxmemory
    }
}

/// Every node's write, in the order to run them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// One per node of the cluster.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Nodes whose running value changes.
    pub fn changed(&self) -> usize {
        self.steps.iter().filter(|s| s.changes()).count()
    }
}

/// Why [`plan`] refuses: nothing has been written. `Display` is the text after `refused: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The survey found no node.
    NoNodes,
    /// These nodes did not answer.
    Unreachable(Vec<Unreachable>),
    /// A percent was asked and these nodes report no `total_system_memory`.
    NoSystemMemory(Vec<String>),
    /// The new value is below these nodes' `used_memory` and `FORCE` was not given:
    /// (`ip:port`, used_memory, new value).
    BelowUsed(Vec<(String, u64, u64)>),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoNodes => f.write_str("no nodes known (no seeds configured)"),
            Refusal::Unreachable(nodes) => {
                let list: Vec<String> = nodes
                    .iter()
                    .map(|n| format!("{} ({})", n.addr, n.error))
                    .collect();
                write!(
                    f,
                    "node(s) not reachable: {}; every node must answer before any is changed \
                     (remove dead nodes from the cluster first)",
                    list.join(", ")
                )
            }
            Refusal::NoSystemMemory(addrs) => write!(
                f,
                "node(s) {} report no total_system_memory; give the size in bytes instead",
                addrs.join(", ")
            ),
            Refusal::BelowUsed(nodes) => {
                let list: Vec<String> = nodes
                    .iter()
                    .map(|(addr, used, new)| {
                        format!(
                            "{addr} uses {used} ({}), above the new maxmemory {new} ({})",
                            human(*used),
                            human(*new)
                        )
                    })
                    .collect();
                write!(
                    f,
                    "{}; FORCE sets it anyway (those nodes then evict keys or refuse writes, \
                     as their maxmemory-policy says)",
                    list.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// `0` (no limit) as the largest limit, so "raises" and "lowers" compare limits.
fn limit(maxmemory: u64) -> u64 {
    if maxmemory == 0 {
        u64::MAX
    } else {
        maxmemory
    }
}

/// Decides every node's new value and the write order, or refuses.
///
/// Checks, in order: a node at all, every node reachable, `total_system_memory` everywhere
/// for a percent, and (unless `force`) no new value below a node's `used_memory` (0, no limit,
/// is never below). A percent is taken of the smallest `total_system_memory` in each shard, so
/// master and replicas get one value that no node of the shard finds above its share.
///
/// The order keeps each replica's limit at or above its master's after every write: first
/// the replicas whose limit goes up, then the masters, then the other replicas. Within each
/// group, nodes keep the survey's order.
pub fn plan(reads: &[NodeRead], target: Target, force: bool) -> Result<Plan, Refusal> {
    if reads.is_empty() {
        return Err(Refusal::NoNodes);
    }
    let unreachable: Vec<Unreachable> = reads.iter().filter_map(|r| r.clone().err()).collect();
    if !unreachable.is_empty() {
        return Err(Refusal::Unreachable(unreachable));
    }
    let nodes: Vec<&NodeMemory> = reads.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut per_shard: BTreeMap<&str, u64> = BTreeMap::new();
    if let Target::Percent(p) = target {
        let missing: Vec<String> = nodes
            .iter()
            .filter(|n| n.total_system_memory == 0)
            .map(|n| n.addr.clone())
            .collect();
        if !missing.is_empty() {
            return Err(Refusal::NoSystemMemory(missing));
        }
        for n in &nodes {
            let m = per_shard.entry(&n.shard).or_insert(u64::MAX);
            *m = (*m).min(n.total_system_memory);
        }
        for total in per_shard.values_mut() {
            let share = u128::from(*total) * u128::from(p) / 100;
            *total = u64::try_from(share).unwrap_or(u64::MAX);
        }
    }
    let new_value = |n: &NodeMemory| match target {
        Target::Bytes(b) => b,
        Target::Percent(_) => per_shard.get(n.shard.as_str()).copied().unwrap_or(0),
    };
    let steps: Vec<Step> = nodes
        .iter()
        .map(|n| Step {
            node: (*n).clone(),
            new: new_value(n),
        })
        .collect();
    let below: Vec<(String, u64, u64)> = steps
        .iter()
        .filter(|s| s.new != 0 && s.new < s.node.used_memory)
        .map(|s| (s.node.addr.clone(), s.node.used_memory, s.new))
        .collect();
    if !below.is_empty() && !force {
        return Err(Refusal::BelowUsed(below));
    }
    let group = |s: &Step| match s.node.role {
        Role::Replica if limit(s.new) > limit(s.node.maxmemory) => 0,
        Role::Master => 1,
        Role::Replica => 2,
    };
    let mut steps = steps;
    steps.sort_by_key(group);
    Ok(Plan { steps })
}

/// Whether a node's config file now holds the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// `CONFIG REWRITE` answered OK.
    Yes,
    /// The node runs without a config file: there is nothing to persist to (not a failure).
    NoConfigFile,
}

impl Persisted {
    /// The report's words.
    pub fn words(self) -> &'static str {
        match self {
            Persisted::Yes => "yes",
            Persisted::NoConfigFile => "no (no config file)",
        }
    }
}

/// Reads `CONFIG REWRITE`'s reply: Redis answers "The server is running without a config file"
/// to a node started with arguments only, which leaves nothing to persist; any other error is a
/// failure (a file Redis cannot write, a command renamed away, ...).
pub fn rewrite_outcome(reply: &Value) -> Result<Persisted, String> {
    match reply {
        Value::Error(e) if e.contains("without a config file") => Ok(Persisted::NoConfigFile),
        Value::Error(e) => Err(e.clone()),
        _ => Ok(Persisted::Yes),
    }
}

/// One report line for a node: address, role, old and new value, used memory, and whether the
/// value is (or, in a dry run, will be) in its config file.
pub fn node_line(step: &Step, persisted: Option<Persisted>) -> String {
    let n = &step.node;
    let persist = match persisted {
        Some(p) => format!("persisted {}", p.words()),
        None if n.config_file => "persist yes".to_string(),
        None => format!("persist {}", Persisted::NoConfigFile.words()),
    };
    format!(
        "{} {} old {} ({}) new {} ({}) used {} ({}) {persist}",
        n.addr,
        n.role.word(),
        n.maxmemory,
        human(n.maxmemory),
        step.new,
        human(step.new),
        n.used_memory,
        human(n.used_memory),
    )
}

/// The verdict: `DRYRUN would resize n nodes`, `OK resized n nodes`, or `NOTHING TO DO ...`
/// when no node's running value changes.
pub fn verdict(plan: &Plan, dry_run: bool) -> String {
    match (plan.changed(), dry_run) {
        (0, _) => format!(
            "NOTHING TO DO maxmemory already set on {} nodes",
            plan.steps.len()
        ),
        (n, true) => format!("DRYRUN would resize {n} nodes"),
        (n, false) => format!("OK resized {n} nodes"),
    }
}
