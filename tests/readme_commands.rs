//! The README's command reference lists every Redis 7.0 command and subcommand with the status
//! the router actually gives it. Each status names a path whose behaviour other test files
//! check against real clusters (data_path, fanout, transactions, blocking, pubsub, scripts,
//! clients, resp3, bad_input); this test keeps the README honest about which command takes
//! which path. On a mismatch it prints the table the router implies.

use bytes::Bytes;
use slotproxy::route::command::{CommandSpec, COMMANDS};
use slotproxy::route::merge::MergeKind;
use slotproxy::route::router::{route, FanOut, Local, Route};

/// Example invocations for commands whose minimal synthesized arguments are not valid (the
/// router would only answer a syntax error for those).
const EXAMPLES: &[(&str, &[&str])] = &[
    ("xread", &["XREAD", "STREAMS", "k", "0"]),
    (
        "xreadgroup",
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "k", ">"],
    ),
    ("georadius", &["GEORADIUS", "k", "0", "0", "1", "m"]),
    ("georadius_ro", &["GEORADIUS_RO", "k", "0", "0", "1", "m"]),
    (
        "georadiusbymember",
        &["GEORADIUSBYMEMBER", "k", "m", "1", "m"],
    ),
    (
        "georadiusbymember_ro",
        &["GEORADIUSBYMEMBER_RO", "k", "m", "1", "m"],
    ),
    ("migrate", &["MIGRATE", "h", "1", "k", "0", "1"]),
    ("scan", &["SCAN", "0"]),
    ("eval", &["EVAL", "s", "1", "k"]),
    ("eval_ro", &["EVAL_RO", "s", "1", "k"]),
    ("evalsha", &["EVALSHA", "s", "1", "k"]),
    ("evalsha_ro", &["EVALSHA_RO", "s", "1", "k"]),
    ("fcall", &["FCALL", "f", "1", "k"]),
    ("fcall_ro", &["FCALL_RO", "f", "1", "k"]),
];

/// The split commands: the router forwards them whole when all keys share a slot.
const SPLIT: &[&str] = &["mget", "mset", "del", "unlink", "exists", "touch"];

fn invocation(spec: &CommandSpec) -> Vec<Bytes> {
    if let Some((_, ex)) = EXAMPLES.iter().find(|(n, _)| *n == spec.name) {
        return ex
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
    }
    let mut args: Vec<Bytes> = spec
        .name
        .split('|')
        .map(|p| Bytes::copy_from_slice(p.to_uppercase().as_bytes()))
        .collect();
    let want = spec.arity.unsigned_abs() as usize;
    while args.len() < want {
        args.push(Bytes::from_static(b"1"));
    }
    args
}

fn error_text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

/// The status the router gives `spec`, in the README's words.
fn status(spec: &CommandSpec) -> String {
    if SPLIT.contains(&spec.name) {
        return "split per slot, replies merged".into();
    }
    let args = invocation(spec);
    match route(&args, &mut Vec::new()) {
        Route::Slot(_) | Route::SortPatterns(_) => "to the key's slot owner".into(),
        Route::Split(_) => "split per slot, replies merged".into(),
        Route::AnyNode => "to any master".into(),
        Route::Publish => "to the pub/sub node (where the proxy's subscribers are)".into(),
        Route::FanOut(FanOut::Masters(_)) => "to every master, replies merged".into(),
        Route::FanOut(FanOut::AllNodes {
            kind: MergeKind::ByNode,
            ..
        }) => "to every node, replies listed by node".into(),
        Route::FanOut(FanOut::AllNodes { .. }) => "to every node, replies merged".into(),
        Route::FanOut(FanOut::Scan(_)) => "every master in turn (cluster cursor)".into(),
        Route::Blocking(_) => "blocking: own connection to the key's slot owner".into(),
        Route::Wait => "replicas of the nodes written to (polled)".into(),
        Route::Tx(_) => "transaction: connection pinned to one slot".into(),
        Route::Sub(_) => "pub/sub: own connection".into(),
        Route::Local(Local::ConfigGet) => "to any master; the proxy's own settings shown".into(),
        Route::Local(_) => "answered by the proxy".into(),
        // The invocation's keys share a slot; never reached.
        Route::CrossSlot => "UNCLASSIFIED (keys in several slots)".into(),
        Route::Reply(e) => {
            let t = error_text(&e);
            if t.contains("does not support") {
                "not supported yet".into()
            } else if t.contains("not available through slotproxy") {
                "refused: node-level, use the node".into()
            } else {
                format!("UNCLASSIFIED ({t})")
            }
        }
    }
}

fn all_specs() -> Vec<&'static CommandSpec> {
    let mut out = Vec::new();
    for c in COMMANDS {
        if c.subcommands.is_empty() {
            out.push(c);
        } else {
            out.extend(c.subcommands.iter());
        }
    }
    out.sort_by_key(|c| c.name);
    out
}

fn display_name(spec: &CommandSpec) -> String {
    spec.name.replace('|', " ").to_uppercase()
}

#[test]
fn readme_lists_every_command_with_the_routers_status() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut expected = String::new();
    let mut unclassified = Vec::new();
    for spec in all_specs() {
        let st = status(spec);
        if st.starts_with("UNCLASSIFIED") {
            unclassified.push(format!("{}: {st}", spec.name));
        }
        expected.push_str(&format!("| `{}` | {} |\n", display_name(spec), st));
    }
    assert!(
        unclassified.is_empty(),
        "add example invocations for: {unclassified:#?}"
    );
    let path = std::env::temp_dir().join("slotproxy-readme-commands.md");
    let _ = std::fs::write(&path, &expected);
    let start = readme
        .find("<!-- commands:start -->\n")
        .expect("README has a <!-- commands:start --> marker");
    let end = readme
        .find("<!-- commands:end -->")
        .expect("README has a <!-- commands:end --> marker");
    let body = &readme[start + "<!-- commands:start -->\n".len()..end];
    let rows: String = body
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| format!("{l}\n"))
        .collect();
    if rows != expected {
        panic!(
            "README's command table differs from the router; the expected rows are in {}",
            path.display()
        );
    }
}
