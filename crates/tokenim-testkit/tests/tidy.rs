//! The house's habits, checked on every test run (after rust-analyzer's
//! `tidy`): every Rust file opens with a `//!` header; no test is
//! skipped with an ignore attribute; a file over 800 lines says why in a
//! `//! long:` line of its header; and the modules of the server crate import each other without
//! a cycle, file by file and layer by layer (test code excepted: it may use
//! the composition root).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every Rust file of the workspace's crates.
fn crate_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    rust_files(&workspace().join("crates"), &mut out);
    assert!(out.len() > 50, "found only {} Rust files", out.len());
    out.sort();
    out
}

fn header(text: &str) -> Vec<&str> {
    text.lines().take_while(|l| l.starts_with("//!")).collect()
}

#[test]
fn every_file_opens_with_a_header() {
    let missing: Vec<_> = crate_files()
        .into_iter()
        .filter(|p| header(&fs::read_to_string(p).unwrap()).is_empty())
        .collect();
    assert!(missing.is_empty(), "no //! header: {missing:#?}");
}

#[test]
fn no_test_is_ignored() {
    let pat = concat!("#[", "ignore");
    let found: Vec<_> = crate_files()
        .into_iter()
        .filter(|p| fs::read_to_string(p).unwrap().contains(pat))
        .collect();
    assert!(found.is_empty(), "{pat}] in {found:#?}");
}

#[test]
fn long_files_say_why() {
    let mut unexplained = Vec::new();
    for p in crate_files() {
        let text = fs::read_to_string(&p).unwrap();
        let n = text.lines().count();
        if n > MAX_LINES && !header(&text).iter().any(|l| l.starts_with("//! long: ")) {
            unexplained.push(format!("{} ({n} lines)", p.display()));
        }
    }
    assert!(
        unexplained.is_empty(),
        "over {MAX_LINES} lines without a `//! long:` reason: {unexplained:#?}"
    );
}

/// The production text of a file: comments dropped, and everything from
/// its `#[cfg(test)] mod tests {` on (test modules close a file).
fn production(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if t.starts_with("#[cfg(test)]") {
            match lines.peek() {
                Some(next) if next.trim_start().starts_with("mod ") && next.ends_with(';') => {
                    lines.next();
                    continue;
                }
                _ => break,
            }
        }
        let code = match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The paths named after each `crate::` or `super::` in `code`, groups
/// (`crate::{a, b::c}`) spread out; `super::` is resolved against `parent`.
fn paths(code: &str, parent: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        let mut at = 0;
        while let Some(i) = code[at..].find(prefix) {
            let start = at + i;
            at = start + prefix.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            expand(&code[at..], &base, &mut out);
        }
    }
    out
}

/// Reads one path (or group of paths) at the start of `rest`.
fn expand(rest: &str, base: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = base.to_vec();
    let mut s = rest;
    loop {
        let n = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if n == 0 {
            break;
        }
        path.push(s[..n].to_owned());
        s = &s[n..];
        match s.strip_prefix("::") {
            Some(r) => s = r,
            None => break,
        }
    }
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut item = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(group[item..i].trim(), &path, out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(group[item..i].trim(), &path, out);
                    item = i + 1;
                }
                _ => {}
            }
        }
    } else if path.len() > base.len() {
        out.push(path);
    }
}

/// The server crate's modules (by path, `api::ws`) and the modules each
/// one's production code names.
fn server_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace().join("crates/tokenim-server/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules: BTreeMap<Vec<String>, PathBuf> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        modules.insert(parts, f.clone());
    }
    let mut graph = BTreeMap::new();
    for (m, f) in &modules {
        if m.last().is_some_and(|n| n == "tests") {
            continue;
        }
        // `super` of `a::b` is `a`, from `a/b.rs` and `a/b/mod.rs` alike.
        let parent = m[..m.len().saturating_sub(1)].to_vec();
        let code = production(&fs::read_to_string(f).unwrap());
        let mut targets = BTreeSet::new();
        for p in paths(&code, &parent) {
            // The longest prefix that is a module of the crate.
            if let Some(k) = (1..=p.len()).rev().find(|k| modules.contains_key(&p[..*k]))
                && p[..k] != m[..]
            {
                targets.insert(p[..k].join("::"));
            }
        }
        graph.insert(m.join("::"), targets);
    }
    assert!(
        graph.len() > 20,
        "found only {} server modules",
        graph.len()
    );
    graph
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for t in graph.get(n).into_iter().flatten() {
            match state.get(t.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == t).unwrap();
                    let mut c = stack[from..].to_vec();
                    c.push(t.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(t, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str())
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn server_modules_import_without_cycles() {
    let files = server_graph();
    // The check sees the imports it must: the socket adapter uses the
    // timeline service, and the dispatcher the hub.
    assert!(
        files["api::ws"].contains("services::timeline"),
        "{files:#?}"
    );
    assert!(files["delivery::dispatcher"].contains("delivery::hub"));
    if let Some(c) = cycle(&files) {
        panic!("server files import in a circle: {}", c.join(" → "));
    }

    let top = |m: &str| m.split("::").next().unwrap_or_default().to_owned();
    let mut layers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, targets) in &files {
        let entry = layers.entry(top(m)).or_default();
        entry.extend(targets.iter().map(|t| top(t)).filter(|t| *t != top(m)));
    }
    if let Some(c) = cycle(&layers) {
        panic!("server modules import in a circle: {}", c.join(" → "));
    }
}

#[test]
fn the_cycle_check_finds_cycles() {
    // The check itself can fail: a made-up graph with a cycle.
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let code = production("use crate::{a::b, c::{d, e}};\nuse super::f::G; // crate::x\n");
    let mut got = paths(&code, &["p".to_owned()]);
    got.sort();
    let want: Vec<Vec<String>> = [
        vec!["a", "b"],
        vec!["c", "d"],
        vec!["c", "e"],
        vec!["p", "f", "G"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_owned).collect())
    .collect();
    assert_eq!(got, want);
}
