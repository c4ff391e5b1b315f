//! The architecture, checked on the source: the decision core knows no transport, and the
//! crate's top-level modules import each other without a circle. Test code (a `tests.rs`
//! file, or what follows `#[cfg(test)]` in a file) is not part of the shape.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's production code: everything before its first `#[cfg(test)]`, comments dropped.
fn production_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).expect("read file");
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/config/settings.rs` -> `config`; `src/app.rs` -> `app`.
fn top_module(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src()).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

#[test]
fn the_decision_core_imports_no_transport() {
    const FORBIDDEN: &[&str] = &[
        "axum",
        "tonic",
        "hyper",
        "http::",
        "serde_json::Value",
        "Value}",
        "Value,",
    ];
    let mut files = Vec::new();
    for dir in ["decide", "service", "proxy"] {
        rust_files(&src().join(dir), &mut files);
    }
    assert!(files.len() >= 10, "found the core's files: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let code = production_code(file);
        for word in FORBIDDEN {
            if code.contains(word) {
                found.push(format!("{}: {word}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "transport types in the decision core: {found:#?}"
    );
}

#[test]
fn top_level_modules_import_each_other_without_a_circle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_module(file) else {
            continue;
        };
        let code = production_code(file);
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let to: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in &modules {
        if let Some(circle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            panic!("import circle: {}\nedges: {edges:#?}", circle.join(" -> "));
        }
    }
    // The arrows point down the request path.
    for (upper, lower) in [
        ("transport", "service"),
        ("service", "decide"),
        ("decide", "proxy"),
    ] {
        assert!(
            edges.get(upper).is_some_and(|e| e.contains(lower)),
            "{upper} uses {lower}: {edges:#?}"
        );
    }
}
