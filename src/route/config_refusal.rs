//! Node settings that `CONFIG SET` through the proxy must not change: the ones that would cut
//! the proxy off the nodes (their password, where they listen, their TLS) or pull the cluster
//! apart (cluster settings, replication, data files). The proxy applies CONFIG SET to every
//! node at once, so one such value reaches every node in the same instant; changing them is a
//! node-by-node job for an operator.
//!
//! Pure: [`refusal`] maps a setting name to the error the client gets, [`first_refusal`] reads
//! a whole `CONFIG SET`. Invariant: a CONFIG SET naming any refused setting is refused whole,
//! before anything is sent to any node (unless the proxy's `allow_dangerous_config_set` says
//! otherwise; the session decides that).

use bytes::Bytes;

/// Why a group of settings is refused, and what to do instead.
struct Group {
    /// Exact names (lowercase).
    names: &'static [&'static str],
    /// Name prefixes (lowercase): every setting starting with one is in the group.
    prefixes: &'static [&'static str],
    /// What changing it on every node at once would do.
    why: &'static str,
    /// What the operator should do instead.
    instead: &'static str,
}

const GROUPS: &[Group] = &[
    Group {
        names: &["requirepass"],
        prefixes: &[],
        why: "it would cut the proxy off the nodes (its new connections would no longer authenticate)",
        instead: "set it on each node and in the proxy's backend_password, then restart the proxy",
    },
    Group {
        names: &["masterauth", "masteruser"],
        prefixes: &[],
        why: "replicas that cannot authenticate to their masters with it would stop replicating",
        instead: "set it on each node directly, together with the masters' credentials",
    },
    Group {
        names: &["port", "tls-port", "bind", "bind-source-addr"],
        prefixes: &["unixsocket"],
        why: "it would move every node away from the address the proxy and the other nodes reach it at",
        instead: "change it on each node directly, one at a time, and give the proxy the new seeds",
    },
    Group {
        names: &["protected-mode"],
        prefixes: &[],
        why: "the nodes could start refusing the proxy's and each other's connections",
        instead: "set it on each node directly",
    },
    Group {
        names: &[],
        prefixes: &["cluster-"],
        why: "it changes how the nodes form the cluster, on every node at the same instant",
        instead: "set it on each node directly (redis-cli -h <node> -p <port>)",
    },
    Group {
        names: &[
            "dir",
            "dbfilename",
            "appendfilename",
            "appenddirname",
            "aclfile",
            "logfile",
            "pidfile",
        ],
        prefixes: &[],
        why: "it changes where each node keeps its files, the same path for every node",
        instead: "set it on each node directly",
    },
    Group {
        names: &["replicaof", "slaveof"],
        prefixes: &[],
        why: "it would make every node a replica of the same address",
        instead: "use CLUSTER REPLICATE on the node directly",
    },
    Group {
        names: &[],
        prefixes: &["tls-"],
        why: "it changes the nodes' TLS under the proxy, whose backend_tls settings would no longer match",
        instead: "set it on each node directly and the proxy's backend_tls_* settings to match",
    },
    Group {
        names: &[
            "enable-protected-configs",
            "enable-debug-command",
            "enable-module-command",
            "rename-command",
        ],
        prefixes: &[],
        why: "it is one of the nodes' safety switches",
        instead: "set it in each node's redis.conf",
    },
];

/// The error for `CONFIG SET <name>` when `name` is a setting the proxy refuses to change on
/// every node; `None` for every other setting. Names are compared as Redis does, ignoring case.
pub fn refusal(name: &[u8]) -> Option<String> {
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let group = GROUPS.iter().find(|g| {
        g.names.contains(&lower.as_str()) || g.prefixes.iter().any(|p| lower.starts_with(p))
    })?;
    Some(format!(
        "ERR slotproxy refuses CONFIG SET {lower}: {}; {} (or set allow_dangerous_config_set = true in the proxy's settings)",
        group.why, group.instead
    ))
}

/// The error for the first refused setting a `CONFIG SET name value [name value ...]` request
/// names (`args` is the whole request, `CONFIG` and `SET` included). Every name position is
/// read, a trailing name without a value too: such a request is refused rather than sent.
pub fn first_refusal(args: &[Bytes]) -> Option<String> {
    args.iter().skip(2).step_by(2).find_map(|n| refusal(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::resp::test_args as args;

    #[test]
    fn settings_that_would_lock_the_proxy_out_are_refused_by_name() {
        for name in [
            "requirepass",
            "REQUIREPASS",
            "masterauth",
            "masteruser",
            "port",
            "tls-port",
            "bind",
            "bind-source-addr",
            "unixsocket",
            "unixsocketperm",
            "protected-mode",
            "cluster-enabled",
            "cluster-node-timeout",
            "cluster-announce-ip",
            "Cluster-Config-File",
            "dir",
            "dbfilename",
            "appendfilename",
            "appenddirname",
            "aclfile",
            "replicaof",
            "slaveof",
            "tls-cert-file",
            "tls-auth-clients",
            "tls-replication",
            "enable-protected-configs",
            "enable-debug-command",
            "rename-command",
        ] {
            let e = refusal(name.as_bytes()).unwrap_or_else(|| panic!("{name} not refused"));
            assert!(
                e.starts_with(&format!(
                    "ERR slotproxy refuses CONFIG SET {}: ",
                    name.to_ascii_lowercase()
                )),
                "{e}"
            );
            assert!(e.contains("allow_dangerous_config_set"), "{e}");
            assert!(!e.contains(['\r', '\n']), "{e}");
        }
        let e = refusal(b"requirepass").unwrap_or_default();
        assert!(
            e.contains("cut the proxy off the nodes") && e.contains("backend_password"),
            "{e}"
        );
    }

    #[test]
    fn ordinary_settings_pass() {
        for name in [
            "maxmemory",
            "maxmemory-policy",
            "slowlog-log-slower-than",
            "slowlog-max-len",
            "timeout",
            "hz",
            "notify-keyspace-events",
            "appendonly",
            "save",
            "portable",
            "directory",
            "",
        ] {
            assert_eq!(refusal(name.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn one_refused_pair_refuses_the_whole_request() {
        assert_eq!(
            first_refusal(&args(&["CONFIG", "SET", "maxmemory", "0", "hz", "10"])),
            None
        );
        let e = first_refusal(&args(&[
            "config",
            "set",
            "maxmemory",
            "0",
            "requirepass",
            "x",
        ]));
        assert!(e.is_some_and(|e| e.contains("CONFIG SET requirepass")));
        // A value that looks like a setting is a value.
        assert_eq!(
            first_refusal(&args(&["CONFIG", "SET", "logfile-x", "port"])),
            None
        );
        // A trailing name without its value is read too.
        assert!(first_refusal(&args(&["CONFIG", "SET", "hz", "10", "port"])).is_some());
    }
}
