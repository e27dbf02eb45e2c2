//! What an emulated cross-slot command does, decided from its arguments alone (no I/O).
//!
//! Invariants: only the commands listed in [`crate::metrics::cross_slot::COMMANDS`] get a
//! plan, everything else keeps Redis Cluster's CROSSSLOT; an algebra plan never writes a key
//! the client named other than the command's own destination, and it reads the sources only
//! through copies in the target slot, under names nobody else uses.

use super::sort::{self, SortArgs};
use super::tags;
use crate::cluster::slots::key_slot;
use crate::route::command::{self, CommandSpec};
use crate::route::resp;
use crate::route::router::CROSSSLOT;
use bytes::Bytes;

/// The refusal of MSETNX across slots, even in `emulate`.
pub const MSETNX_REFUSED: &str = "CROSSSLOT Keys in request don't hash to the same slot (slotproxy does not emulate MSETNX across slots: it must set all of its keys or none, and the proxy cannot make that atomic over several nodes)";

/// Lifetime of a temporary key, in milliseconds: a safety net for temporaries left behind by
/// a proxy that died mid-command (they are deleted as soon as the command ran).
pub const TEMP_TTL_MS: u64 = 60_000;

/// A source key brought into the target slot under a temporary name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The key as the client named it.
    pub key: Bytes,
    /// Its slot.
    pub slot: u16,
    /// The temporary name in the target slot.
    pub temp: Bytes,
}

/// What the proxy does for one emulated command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Copy each source into the target slot, run `args` (names rewritten) there, delete the
    /// copies.
    Algebra {
        /// The command with the sources' names replaced by their temporaries.
        args: Vec<Bytes>,
        /// The slot the command runs in: its destination's, or its first key's.
        target: u16,
        /// The keys copied, each once.
        sources: Vec<Source>,
    },
    /// SORT / SORT_RO with BY or GET patterns: the proxy reads the elements and the keys the
    /// patterns name, sorts, and answers or stores ([`super::sort`]).
    Sort(SortArgs),
    /// RENAME / RENAMENX (`nx`): copy with its TTL, then delete the source.
    Rename {
        /// Source key.
        src: Bytes,
        /// Destination key.
        dst: Bytes,
        /// RENAMENX: only when the destination does not exist.
        nx: bool,
    },
    /// COPY: copy with its TTL.
    Copy {
        /// Source key.
        src: Bytes,
        /// Destination key.
        dst: Bytes,
        /// REPLACE given.
        replace: bool,
    },
    /// SMOVE: add to the destination, then remove from the source.
    Smove {
        /// Source set.
        src: Bytes,
        /// Destination set.
        dst: Bytes,
        /// The member.
        member: Bytes,
    },
    /// LMOVE / RPOPLPUSH and their blocking forms: read the end element, push it, pop it.
    Lmove {
        /// Source list.
        src: Bytes,
        /// Destination list.
        dst: Bytes,
        /// Taken from the source's head (LEFT) or tail.
        from_left: bool,
        /// Pushed at the destination's head (LEFT) or tail.
        to_left: bool,
        /// BLMOVE / BRPOPLPUSH: emulated only when the source has an element.
        blocking: bool,
    },
}

impl Plan {
    /// The slots the plan writes or reads, for WAIT's record of touched slots.
    pub fn slots(&self) -> Vec<u16> {
        match self {
            Plan::Algebra {
                target, sources, ..
            } => std::iter::once(*target)
                .chain(sources.iter().map(|s| s.slot))
                .collect(),
            Plan::Sort(a) => std::iter::once(&a.key)
                .chain(a.store.as_ref())
                .map(|k| key_slot(k))
                .collect(),
            Plan::Rename { src, dst, .. }
            | Plan::Copy { src, dst, .. }
            | Plan::Smove { src, dst, .. }
            | Plan::Lmove { src, dst, .. } => vec![key_slot(src), key_slot(dst)],
        }
    }
}

/// Where the slot an algebra command runs in comes from.
enum Target {
    /// The first key (a *STORE destination, or the first source of a read-only form).
    First,
    /// The last key (the STORE / STOREDIST destination of SORT and GEORADIUS*).
    Last,
}

fn algebra_target(name: &str) -> Option<Target> {
    Some(match name {
        "sinterstore" | "sunionstore" | "sdiffstore" | "zinterstore" | "zunionstore"
        | "zdiffstore" | "zrangestore" | "pfmerge" | "bitop" | "geosearchstore" => Target::First,
        "sinter" | "sunion" | "sdiff" | "sintercard" | "zinter" | "zunion" | "zdiff"
        | "zintercard" | "pfcount" | "lcs" => Target::First,
        "sort" | "georadius" | "georadiusbymember" => Target::Last,
        _ => return None,
    })
}

/// The plan for `args` (a command of `spec` whose keys span slots), or the error reply the
/// client gets instead. `unique` makes this command's temporary names its own.
pub fn plan(spec: &CommandSpec, args: &[Bytes], unique: u64) -> Result<Plan, Bytes> {
    let name = spec.name;
    if name == "msetnx" {
        return Err(resp::error(MSETNX_REFUSED));
    }
    match name {
        "rename" | "renamenx" => {
            return Ok(Plan::Rename {
                src: args[1].clone(),
                dst: args[2].clone(),
                nx: name == "renamenx",
            })
        }
        "copy" => return copy(args),
        "smove" => {
            return Ok(Plan::Smove {
                src: args[1].clone(),
                dst: args[2].clone(),
                member: args[3].clone(),
            })
        }
        "rpoplpush" | "brpoplpush" => {
            return Ok(Plan::Lmove {
                src: args[1].clone(),
                dst: args[2].clone(),
                from_left: false,
                to_left: true,
                blocking: name == "brpoplpush",
            })
        }
        "lmove" | "blmove" => {
            let side = |a: &Bytes| {
                if a.eq_ignore_ascii_case(b"left") {
                    Ok(true)
                } else if a.eq_ignore_ascii_case(b"right") {
                    Ok(false)
                } else {
                    Err(resp::error("ERR syntax error"))
                }
            };
            return Ok(Plan::Lmove {
                src: args[1].clone(),
                dst: args[2].clone(),
                from_left: side(&args[3])?,
                to_left: side(&args[4])?,
                blocking: name == "blmove",
            });
        }
        _ => {}
    }
    if matches!(name, "sort" | "sort_ro") && command::sort_uses_patterns(args) {
        return sort::parse(args, name == "sort_ro").map(Plan::Sort);
    }
    let Some(target) = algebra_target(name) else {
        return Err(resp::error(CROSSSLOT));
    };
    let mut keys = Vec::new();
    command::key_positions(spec, args, &mut keys).map_err(|e| resp::error(&e.to_string()))?;
    let target_pos = match target {
        Target::First => keys.first(),
        Target::Last => keys.last(),
    };
    let Some(&target_pos) = target_pos else {
        return Err(resp::error(CROSSSLOT));
    };
    let target = key_slot(&args[target_pos]);
    let tag = tags::tag(target);
    let mut out = args.to_vec();
    let mut sources: Vec<Source> = Vec::new();
    for &k in &keys {
        let slot = key_slot(&args[k]);
        if slot == target {
            continue;
        }
        let temp = match sources.iter().find(|s| s.key == args[k]) {
            Some(s) => s.temp.clone(),
            None => {
                let temp = Bytes::from(format!(
                    "{{{tag}}}slotproxy:tmp:{unique:016x}:{}",
                    sources.len()
                ));
                sources.push(Source {
                    key: args[k].clone(),
                    slot,
                    temp: temp.clone(),
                });
                temp
            }
        };
        out[k] = temp;
    }
    Ok(Plan::Algebra {
        args: out,
        target,
        sources,
    })
}

/// COPY source destination [DB destination-db] [REPLACE]: only database 0 exists in a
/// cluster.
fn copy(args: &[Bytes]) -> Result<Plan, Bytes> {
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if args[i].eq_ignore_ascii_case(b"db") && i + 1 < args.len() {
            if &args[i + 1][..] != b"0" {
                return Err(resp::error(
                    "ERR slotproxy: COPY across slots only copies within database 0 (a cluster has no other)",
                ));
            }
            i += 1;
        } else {
            return Err(resp::error("ERR syntax error"));
        }
        i += 1;
    }
    Ok(Plan::Copy {
        src: args[1].clone(),
        dst: args[2].clone(),
        replace,
    })
}

#[cfg(test)]
mod tests;
