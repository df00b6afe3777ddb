//! Imports point down only: every `crate::` path in `proxy/src` names a module of the same
//! layer or of a layer below, by the layer table in `docs/architecture.md`.
//!
//! A path that points up is reported with its file and line.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The layers, top first: each row of the table under "## Layers" whose first cell is a
/// number; its second cell names the layer's top-level modules in backticks.
fn layers(architecture: &str) -> HashMap<String, usize> {
    let section = architecture
        .split("\n## Layers")
        .nth(1)
        .expect("docs/architecture.md has a \"## Layers\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut by_module = HashMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(rank), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(rank) = rank.parse::<usize>() else {
            continue;
        };
        for name in modules.split('`').skip(1).step_by(2) {
            by_module.insert(name.to_string(), rank);
        }
    }
    assert!(!by_module.is_empty(), "the layer table has no rows");
    by_module
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of one line without its `//` comment (doc comments name modules freely).
fn code(line: &str) -> &str {
    let mut in_string = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The top-level modules a line names: `crate::NAME`, and `super::NAME` from a top-level
/// module's own `mod.rs` (where `super` is the crate).
/// A `super::` name that is no layer is the file's own inline module (`mod tests`), not the crate.
fn named(line: &str, top_level_mod_rs: bool) -> Vec<(String, bool)> {
    let mut names = Vec::new();
    let mut prefixes = vec!["crate::"];
    if top_level_mod_rs {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push((name, prefix == "crate::"));
            }
        }
    }
    names
}

#[test]
fn imports_point_down_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("../docs/architecture.md"))
        .expect("docs/architecture.md");
    let rank = layers(&architecture);
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();

    let mut unplaced = BTreeSet::new();
    let mut upward = BTreeSet::new();
    let mut examples = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        let own = parts[0].clone();
        // The binary and the crate root sit above every layer.
        if own == "main" || own == "lib" {
            continue;
        }
        let Some(&own_rank) = rank.get(&own) else {
            unplaced.insert(own);
            continue;
        };
        let top_level_mod_rs = parts.len() == 2 && parts[1] == "mod";
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            for (name, from_crate) in named(code(line), top_level_mod_rs) {
                let Some(&to) = rank.get(&name) else {
                    if from_crate && name.chars().all(|c| c.is_lowercase() || c == '_') {
                        unplaced.insert(name);
                    }
                    continue;
                };
                if to < own_rank {
                    let key = format!("{} -> {}", rel.display(), name);
                    if upward.insert(key) {
                        examples.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from the layer table in docs/architecture.md: {unplaced:?}"
    );

    assert!(
        upward.is_empty(),
        "{} import(s) point up a layer (see the layer table in docs/architecture.md):\n{}",
        upward.len(),
        examples
            .iter()
            .map(|e| format!("  {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
