//! The arguments of `PROXY ADD` and `PROXY REMOVE NODES`, and every usage error of the two
//! commands in one place (`Display` is the reply's text after `ERR PROXY ADD: ` or
//! `ERR PROXY REMOVE: `).

use crate::admin::options::{self, Accepts, CommonOptions, OptionError};
use crate::admin::placement::NodeSpec;
use bytes::Bytes;
use std::time::Duration;

/// `PROXY ADD`'s usage line.
pub const ADD_USAGE: &str = "usage: PROXY ADD REPLICAS <r> | REPLICAS-OF <master ip:port|id|ANY> \
     NODES <host:port> [HOST <label>] ... [DRYRUN] [ASYNC] [TIMEOUT <seconds>]";

/// `PROXY REMOVE`'s usage line.
pub const REMOVE_USAGE: &str = "usage: PROXY REMOVE NODES <host:port|id> ... [FORCE] [DRYRUN] \
     [ASYNC] [TIMEOUT <seconds>]";

/// The shared words both commands take (ADD's `HOST <label>` follows a node and is its own).
const ACCEPTS: Accepts = Accepts {
    json: false,
    dryrun: true,
    detach: true,
    timeout_min_secs: Some(1),
    host: None,
};

/// Which master new replicas follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterName {
    /// A member's `ip:port` or node ID.
    Node(String),
    /// The masters with the fewest replicas.
    Any,
}

/// What ADD makes of the new nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// New shards of one master and this many replicas each.
    Shards(usize),
    /// Replicas of existing masters.
    ReplicasOf(MasterName),
}

/// A parsed `PROXY ADD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddRequest {
    /// Shards or replicas.
    pub shape: Shape,
    /// The new nodes in the order given (hosts default to the IP).
    pub nodes: Vec<NodeSpec>,
    /// Print the plan only.
    pub dryrun: bool,
    /// Reply `OK job <id>` at once.
    pub detach: bool,
    /// Deadline of each wait, if given.
    pub wait: Option<Duration>,
}

/// A parsed `PROXY REMOVE NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveRequest {
    /// The nodes, as given (`ip:port` or node ID), without repeats.
    pub names: Vec<String>,
    /// Remove a master's last replica too.
    pub force: bool,
    /// Print the plan only.
    pub dryrun: bool,
    /// Reply `OK job <id>` at once.
    pub detach: bool,
    /// Deadline of each wait, if given.
    pub wait: Option<Duration>,
}

/// Why the arguments were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// The word (upper-cased) needs a value and none follows.
    Missing(String),
    /// `TIMEOUT` is not whole seconds of at least 1.
    Timeout,
    /// `REPLICAS`'s value is not a number.
    Replicas,
    /// `HOST <label>` before any node address.
    HostFirst,
    /// A node that is not `host:port` (ADD) or `host:port`/node ID (REMOVE), as given.
    Address(String),
    /// A word that is no option, as given.
    Unexpected(String),
    /// ADD without `REPLICAS` or `REPLICAS-OF`, or with both.
    Shape,
    /// No `NODES`, or no node after it.
    NoNodes,
}

impl ArgError {
    /// The text after `ERR PROXY <engine>: `, ending with `usage`.
    pub fn text(&self, usage: &str) -> String {
        // Words are the client's: capped before they land in a reply and a log line.
        let cap = |w: &str| w.chars().take(64).collect::<String>();
        match self {
            ArgError::Missing(w) => format!("{w} needs a value; {usage}"),
            ArgError::Timeout => format!("TIMEOUT needs whole seconds, at least 1; {usage}"),
            ArgError::Replicas => format!("REPLICAS needs a number; {usage}"),
            ArgError::HostFirst => format!("HOST must follow a node address; {usage}"),
            ArgError::Address(w) => format!("bad node '{}': expected host:port; {usage}", cap(w)),
            ArgError::Unexpected(w) => format!("unexpected '{}'; {usage}", cap(w)),
            ArgError::Shape => format!("give one of REPLICAS or REPLICAS-OF; {usage}"),
            ArgError::NoNodes => format!("NODES and at least one node are required; {usage}"),
        }
    }
}

fn address(word: &str) -> Option<NodeSpec> {
    let (ip, port) = word.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    (!ip.is_empty()).then(|| NodeSpec::new(ip, port))
}

fn node_id(word: &str) -> bool {
    word.len() == 40 && word.bytes().all(|b| b.is_ascii_hexdigit())
}

fn timeout_error(e: OptionError) -> ArgError {
    match e {
        OptionError::Missing(w) => ArgError::Missing(w),
        _ => ArgError::Timeout,
    }
}

/// Parses the words after `ADD`.
pub fn parse_add(args: &[Bytes]) -> Result<AddRequest, ArgError> {
    let words = options::words(args);
    let mut common = CommonOptions::default();
    let mut shape: Option<Shape> = None;
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut in_nodes = false;
    let mut i = 0;
    while i < words.len() {
        if let Some(n) = common.take(&ACCEPTS, &words, i).map_err(timeout_error)? {
            in_nodes = false;
            i += n;
            continue;
        }
        let w = words[i].to_ascii_uppercase();
        let value = || {
            words
                .get(i + 1)
                .cloned()
                .ok_or_else(|| ArgError::Missing(w.clone()))
        };
        match w.as_str() {
            "REPLICAS" | "REPLICAS-OF" if shape.is_some() => return Err(ArgError::Shape),
            "REPLICAS" => {
                let r = value()?.parse().map_err(|_| ArgError::Replicas)?;
                shape = Some(Shape::Shards(r));
                in_nodes = false;
                i += 2;
            }
            "REPLICAS-OF" => {
                let v = value()?;
                shape = Some(Shape::ReplicasOf(if v.eq_ignore_ascii_case("ANY") {
                    MasterName::Any
                } else {
                    MasterName::Node(v)
                }));
                in_nodes = false;
                i += 2;
            }
            "NODES" => {
                in_nodes = true;
                i += 1;
            }
            "HOST" => {
                let label = value()?;
                nodes.last_mut().ok_or(ArgError::HostFirst)?.host = label;
                i += 2;
            }
            _ if in_nodes => {
                nodes.push(address(&words[i]).ok_or_else(|| ArgError::Address(words[i].clone()))?);
                i += 1;
            }
            _ => return Err(ArgError::Unexpected(words[i].clone())),
        }
    }
    let shape = shape.ok_or(ArgError::Shape)?;
    if nodes.is_empty() {
        return Err(ArgError::NoNodes);
    }
    Ok(AddRequest {
        shape,
        nodes,
        dryrun: common.dryrun,
        detach: common.detach,
        wait: common.timeout,
    })
}

/// Parses the words after `REMOVE`.
pub fn parse_remove(args: &[Bytes]) -> Result<RemoveRequest, ArgError> {
    let words = options::words(args);
    if !words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("NODES"))
    {
        return Err(ArgError::NoNodes);
    }
    let mut common = CommonOptions::default();
    let mut names: Vec<String> = Vec::new();
    let mut force = false;
    let mut i = 1;
    while i < words.len() {
        if let Some(n) = common.take(&ACCEPTS, &words, i).map_err(timeout_error)? {
            i += n;
            continue;
        }
        let w = &words[i];
        if w.eq_ignore_ascii_case("FORCE") {
            force = true;
        } else if address(w).is_some() || node_id(w) {
            // Node IDs are lower-case in CLUSTER NODES.
            let name = if node_id(w) {
                w.to_ascii_lowercase()
            } else {
                w.clone()
            };
            if !names.contains(&name) {
                names.push(name);
            }
        } else if w.contains(':') || w.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ArgError::Address(w.clone()));
        } else {
            return Err(ArgError::Unexpected(w.clone()));
        }
        i += 1;
    }
    if names.is_empty() {
        return Err(ArgError::NoNodes);
    }
    Ok(RemoveRequest {
        names,
        force,
        dryrun: common.dryrun,
        detach: common.detach,
        wait: common.timeout,
    })
}
