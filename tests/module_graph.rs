//! The modules of `src/` form no import cycle: a module that another one builds on does not
//! reach back into it. Read from the source: every `crate::a::b::...` path a module's code
//! uses names the deepest module file it reaches (`src/a/b.rs` or `src/a/b/mod.rs` is module
//! `a::b`). A parent's own uses of its children by relative path are not read; a child's
//! `crate::` uses of its parent are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The module path of a source file (`src/session/tx.rs` -> `session::tx`,
/// `src/backend/mod.rs` -> `backend`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The deepest module that `path` (segments after `crate::`) reaches.
fn resolve(modules: &BTreeSet<String>, path: &[&str]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].join("::"))
        .find(|m| modules.contains(m))
}

/// Module -> the other modules its code names through `crate::` paths (comments left out; a
/// `use crate::a::{b, c}` group counts each name).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        if from == "main" || from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let prefix: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
            let mut paths: Vec<Vec<&str>> = Vec::new();
            if let Some(group) = rest[end..].strip_prefix('{') {
                let close = group.find('}').unwrap_or(group.len());
                for name in group[..close].split(',') {
                    let mut p = prefix.clone();
                    p.extend(
                        name.trim()
                            .split("::")
                            .filter(|s| !s.is_empty() && *s != "self"),
                    );
                    paths.push(p);
                }
            } else {
                paths.push(prefix);
            }
            for p in paths {
                if let Some(to) = resolve(&modules, &p) {
                    if to != from {
                        edges.entry(from.clone()).or_default().insert(to);
                    }
                }
            }
        }
        edges.entry(from).or_default();
    }
    edges
}

/// One cycle of the graph, if there is any (depth-first search).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, edges, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_detector_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("backend", "stream"), ("stream", "tls"), ("tls", "backend")] {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    edges
        .entry("worker".into())
        .or_default()
        .insert("backend".into());
    let cycle = find_cycle(&edges).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    edges.get_mut("tls").expect("tls").clear();
    assert_eq!(find_cycle(&edges), None);
}

#[test]
fn src_modules_import_each_other_in_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() > 20, "read {} modules", edges.len());
    for (from, to) in [
        ("backend::worker", "backend"),
        ("session::tx", "backend::dedicated"),
        ("admin::create", "cluster::slots"),
    ] {
        assert!(
            edges.get(from).is_some_and(|e| e.contains(to)),
            "the reader misses {from} -> {to}: {edges:?}"
        );
    }
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle between modules: {}", cycle.join(" -> "));
    }
}
