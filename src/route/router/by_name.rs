//! Which commands the router must look at by name. Most requests name an ordinary keyed
//! command (GET, SET, HSET, ...) that goes to its keys' slot; they skip the router's long
//! match on the command name, which would compare the name against a hundred strings.
//!
//! Invariant: every command whose route depends on its name is admitted here (the unit test
//! `by_name_admits_every_named_route` walks the whole command table to hold this).

use crate::route::command::{CommandSpec, COMMANDS};
use std::sync::OnceLock;

/// Top-level plain commands that `route_by_name` or `keyed` match by name. Containers
/// (CLIENT, CONFIG, ACL, ...) and their subcommands are always looked at by name.
const NAMED: &[&str] = &[
    "auth",
    "bgrewriteaof",
    "bgsave",
    "dbsize",
    "del",
    "discard",
    "echo",
    "exec",
    "exists",
    "flushall",
    "flushdb",
    "hello",
    "info",
    "keys",
    "lastsave",
    "lolwut",
    "mget",
    "monitor",
    "mset",
    "multi",
    "pfselftest",
    "ping",
    "psubscribe",
    "publish",
    "punsubscribe",
    "quit",
    "randomkey",
    "readonly",
    "readwrite",
    "reset",
    "save",
    "scan",
    "select",
    "sort",
    "sort_ro",
    "ssubscribe",
    "subscribe",
    "sunsubscribe",
    "time",
    "touch",
    "unlink",
    "unsubscribe",
    "unwatch",
    "wait",
    "watch",
];

/// Whether the router must match `spec` by name: true for containers, subcommands and the
/// [`NAMED`] commands, false for every other top-level command. One table read per request.
pub(super) fn routed_by_name(spec: &'static CommandSpec) -> bool {
    static PLAIN: OnceLock<Vec<bool>> = OnceLock::new();
    let plain = PLAIN.get_or_init(|| {
        COMMANDS
            .iter()
            .map(|c| !c.is_container() && !NAMED.contains(&c.name))
            .collect()
    });
    // A top-level spec's index in COMMANDS, from its address; a subcommand lives in another
    // slice, and the `ptr::eq` check sends it (like anything unexpected) down the named path.
    let offset = (spec as *const CommandSpec as usize).wrapping_sub(COMMANDS.as_ptr() as usize);
    let index = offset / std::mem::size_of::<CommandSpec>();
    !matches!(
        (COMMANDS.get(index), plain.get(index)),
        (Some(top), Some(&true)) if std::ptr::eq(top, spec)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::command::check_arity;
    use bytes::Bytes;

    /// Every spec in the table, subcommands included.
    fn every_spec() -> Vec<&'static CommandSpec> {
        let mut all = Vec::new();
        for c in COMMANDS {
            all.push(c);
            all.extend(c.subcommands.iter());
        }
        all
    }

    #[test]
    fn by_name_admits_every_named_route() {
        // A command this skips must get no route from the named match, with any argument
        // count (the arms that look at arguments look at their count first).
        let words = ["k", "by", "w_*", "get", "x->f", "0", "reset"];
        for spec in every_spec() {
            if routed_by_name(spec) {
                continue;
            }
            // Past the arity check, as in the router.
            for argc in (1..=words.len()).filter(|&n| check_arity(spec, n)) {
                let mut args: Vec<Bytes> = vec![Bytes::from_static(spec.name.as_bytes())];
                args.extend(
                    words[..argc - 1]
                        .iter()
                        .map(|w| Bytes::from_static(w.as_bytes())),
                );
                assert!(
                    super::super::route_by_name(spec, &args, None).is_none(),
                    "{} is routed by name but not admitted by routed_by_name",
                    spec.name
                );
                if super::super::keyed_by_name(spec, &args, 0).is_some() {
                    panic!("{} is routed by name after its keys", spec.name);
                }
            }
        }
    }

    #[test]
    fn plain_keyed_commands_skip_the_match_and_special_ones_do_not() {
        let find = |name: &str| COMMANDS.iter().find(|c| c.name == name).expect(name);
        for plain in ["get", "set", "hset", "zadd", "incr", "eval", "xadd"] {
            assert!(!routed_by_name(find(plain)), "{plain}");
        }
        for named in [
            "mset",
            "ping",
            "client",
            "config",
            "watch",
            "sort",
            "subscribe",
        ] {
            assert!(routed_by_name(find(named)), "{named}");
        }
        for sub in find("client").subcommands {
            assert!(routed_by_name(sub), "{}", sub.name);
        }
    }
}
