//! The library's imports run one way (docs/architecture.md): no module imports, directly or
//! through others, a module that imports it back, and only the binary (`src/main.rs`,
//! `src/cli/`) uses `startup`, the wiring. Read from the `use` lines and `crate::` paths of
//! `src/`, file by file, leaving out comments and `#[cfg(test)]` code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files of the binary crate: they sit on top of everything and may use anything.
fn is_binary(rel: &Path) -> bool {
    rel == Path::new("main.rs") || rel.starts_with("cli")
}

/// `chat/mod.rs` → `chat`, `chat/repo.rs` → `chat::repo`, `lib.rs` → `lib`.
fn module_name(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The production part of a file: up to its first `#[cfg(test)]`, without `//` comments.
fn production_code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path named after `crate::`, with `use` groups (`crate::a::{b, c::{d, e}}`) expanded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let (found, used) = expand(after);
        paths.extend(found);
        rest = &after[used..];
    }
    paths
}

/// Reads one path (or `{…}` group) from the start of `s`; returns the full paths and the bytes read.
fn expand(s: &str) -> (Vec<String>, usize) {
    let ident_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let head = s[..ident_len].trim_end_matches(':').to_string();
    let rest = &s[ident_len..];
    if !s[..ident_len].ends_with("::") || !rest.starts_with('{') {
        return (vec![head], ident_len);
    }
    // A group: split at top-level commas.
    let mut depth = 0;
    let mut end = rest.len();
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &rest[1..end];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    let mut paths = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() || item == "self" {
            paths.push(head.clone());
            continue;
        }
        let (found, _) = expand(item);
        for p in found {
            let p = p.split(" as ").next().unwrap_or_default().to_string();
            paths.push(if p == "self" {
                head.clone()
            } else {
                format!("{head}::{p}")
            });
        }
    }
    (paths, ident_len + end + 1)
}

/// The longest module that is a prefix of `path` (`chat::repo::Parties` → `chat::repo`).
fn owning_module(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

/// The library's file-level import graph.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let library: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).expect("under src/").to_path_buf();
            (!is_binary(&rel)).then(|| (module_name(&rel), path))
        })
        .collect();
    let modules: BTreeSet<String> = library.iter().map(|(name, _)| name.clone()).collect();
    library
        .iter()
        .map(|(name, path)| {
            let code = production_code(&std::fs::read_to_string(path).expect("readable source"));
            let deps = crate_paths(&code)
                .iter()
                .filter_map(|p| owning_module(p, &modules))
                .filter(|m| m != name)
                .collect();
            (name.clone(), deps)
        })
        .collect()
}

/// The modules reachable from `start` (without `start` unless a cycle leads back to it).
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&String> = graph[start].iter().collect();
    while let Some(m) = todo.pop() {
        if seen.insert(m.clone()) {
            todo.extend(graph.get(m).into_iter().flatten());
        }
    }
    seen
}

#[test]
fn the_reader_finds_the_imports_it_should() {
    let paths = crate_paths("use crate::a::{b, c::{d, e as f}, self};\nlet x = crate::g::h(1);");
    assert_eq!(paths, ["a::b", "a::c::d", "a::c::e", "a", "g::h"]);
    let g = graph();
    // Known edges, so that a reader broken into seeing nothing cannot pass the tests below.
    assert!(
        g["chat::repo"].contains("chat::sql"),
        "{:?}",
        g["chat::repo"]
    );
    assert!(
        g["startup"].contains("http::pipeline"),
        "{:?}",
        g["startup"]
    );
    assert!(
        g["http::pipeline"].contains("chat"),
        "{:?}",
        g["http::pipeline"]
    );
}

#[test]
fn no_module_imports_itself_through_others() {
    let g = graph();
    let cycles: Vec<String> = g
        .keys()
        .filter(|m| reachable(&g, m).contains(*m))
        .map(|m| {
            let back: Vec<&String> = g[m]
                .iter()
                .filter(|d| reachable(&g, d).contains(m))
                .collect();
            format!("{m} -> {back:?} -> … -> {m}")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn only_the_binary_uses_the_wiring() {
    let g = graph();
    let users: Vec<&String> = g
        .iter()
        .filter(|(_, deps)| deps.contains("startup"))
        .map(|(m, _)| m)
        .collect();
    assert!(
        users.is_empty(),
        "library modules importing startup: {users:?}"
    );
}

#[test]
fn the_foundations_import_nothing_above_them() {
    // laravel/, config/, db/, cache, ids, sync and per_thread sit at the bottom: formats and plumbing.
    let g = graph();
    let foundation = |m: &str| {
        [
            "laravel",
            "config",
            "db",
            "cache",
            "error",
            "ids",
            "sync",
            "per_thread",
        ]
        .iter()
        .any(|f| m == *f || m.starts_with(&format!("{f}::")))
    };
    for (m, deps) in &g {
        if !foundation(m) {
            continue;
        }
        let upward: Vec<&String> = deps
            .iter()
            .filter(|d| !foundation(d) && !d.starts_with("http::response"))
            .collect();
        assert!(upward.is_empty(), "{m} imports {upward:?}");
    }
}
