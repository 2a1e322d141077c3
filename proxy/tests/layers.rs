//! The proxy's modules form layers and their imports no circle: reads the layer list at the top
//! of `src/lib.rs` and every `crate::`/`super::` path in `src/`, and fails on a module imported
//! from a lower layer, on a circle, and on a module the list leaves out. It never compiles or
//! runs the code it reads.
//!
//! Code under `#[cfg(test)]` is not counted: a test may use a higher layer as its harness.
//! Doc comments (`///`, `//!`) are read too, by a check of their own: their `crate::`/`super::`
//! links follow the layers as imports do, so a plain text search finds no circle either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate root's own items (`crate::run`, `crate::ProxyArgs`): above every layer.
const ROOT: &str = "crate root";

/// What `src/` says: each module's layer, and the modules each one imports.
struct Crate {
    layers: BTreeMap<String, usize>,
    imports: BTreeMap<String, BTreeSet<String>>,
    /// Mistakes of the list itself.
    unlisted: Vec<String>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// What counts as a module's use of another.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    /// Paths in code.
    Code,
    /// Paths in code and in doc comments (intra-doc links).
    CodeAndDocs,
}

/// Reads the crate at `src`: its modules (`name.rs`, or a `name/` directory, beside `lib.rs`).
fn read(src: &Path, reading: Reading) -> Crate {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src/") {
        let path = entry.expect("a directory entry").path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            files.entry(stem).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" && stem != "main" {
            files.entry(stem).or_default().push(path);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let listed = layer_list(&lib);
    let mut layers = BTreeMap::new();
    let mut unlisted = Vec::new();
    for (module, layer) in &listed {
        if !modules.contains(module) {
            unlisted.push(format!(
                "the layer list names `{module}`, which is no module"
            ));
        } else if layers.insert(module.clone(), *layer).is_some() {
            unlisted.push(format!("the layer list names `{module}` twice"));
        }
    }
    for module in &modules {
        if !layers.contains_key(module) {
            unlisted.push(format!(
                "`{module}` is in no layer of the list in src/lib.rs"
            ));
        }
    }
    let imports = files
        .iter()
        .map(|(module, paths)| {
            let mut used = BTreeSet::new();
            for path in paths {
                let text = std::fs::read_to_string(path).expect("a source file");
                used.extend(referenced(&text, &modules, reading));
            }
            used.remove(module);
            (module.clone(), used)
        })
        .collect();
    Crate {
        layers,
        imports,
        unlisted,
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a module directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The layer list of `lib.rs`'s inner doc comment: lines `//! N. Name: [`module`] (...), ...`
/// and their indented continuations. Every `[`name`]` link in them names a module.
fn layer_list(lib: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut current: Option<usize> = None;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            break; // the inner doc comment is over
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        let numbered = doc
            .split_once(". ")
            .and_then(|(n, _)| n.parse::<usize>().ok());
        if let Some(n) = numbered {
            current = Some(n);
        } else if !doc.starts_with("   ") {
            current = None;
        }
        let Some(layer) = current else { continue };
        let mut rest = doc;
        while let Some(start) = rest.find("[`") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("`]") else { break };
            out.push((after[..end].to_string(), layer));
            rest = &after[end + 2..];
        }
    }
    out
}

/// The modules (of `modules`, or [`ROOT`]) that the code of `text` names through `crate::` or
/// `super::` paths, comments, strings and `#[cfg(test)]` items left out.
fn imported(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    referenced(text, modules, Reading::Code)
}

/// As [`imported`], with the paths of doc comments too if `reading` says so.
fn referenced(text: &str, modules: &BTreeSet<String>, reading: Reading) -> BTreeSet<String> {
    let code = without_tests(&code_only(text, reading == Reading::CodeAndDocs));
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = next_path(rest) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        rest = &tail[1..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate`, or a longer word ending in "crate" or "super"
        }
        let from_crate = tail.starts_with("crate");
        // Both keywords are five letters; then `::` and perhaps more `super::`.
        let Some(mut path) = after_colons(&tail[5..]) else {
            continue; // `pub(crate)`, or a word starting with "crate" or "super"
        };
        while identifier(path) == "super" {
            match after_colons(&path[5..]) {
                Some(more) => path = more,
                None => break,
            }
        }
        let names = if let Some(group) = path.strip_prefix('{') {
            top_level_names(group)
        } else {
            vec![identifier(path)]
        };
        for name in names {
            if modules.contains(&name) {
                out.insert(name);
            } else if from_crate && !name.is_empty() && name != "self" {
                out.insert(ROOT.to_string());
            }
        }
    }
    out
}

/// What follows `::` (and spaces) at the start of `s`.
fn after_colons(s: &str) -> Option<&str> {
    s.trim_start()
        .strip_prefix("::")
        .map(|rest| rest.trim_start())
}

/// Where the next `crate` or `super` keyword starts in `code`.
fn next_path(code: &str) -> Option<usize> {
    match (code.find("crate"), code.find("super")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn identifier(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first names of the paths of a `{a::b, c, d::{e, f}}` group (`group` starts after `{`).
fn top_level_names(group: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut expecting = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && (c.is_alphabetic() || c == '_') => {
                names.push(identifier(&group[i..]));
                expecting = false;
            }
            _ => {}
        }
    }
    names
}

/// `text` with comments, string and character literals blanked out; doc comments (`///`, `//!`)
/// too, unless `docs`: then their text stays, without braces and semicolons (so that the items
/// of [`without_tests`] still end where the code says).
fn code_only(text: &str, docs: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let third = chars.get(i + 2).copied();
            let doc = matches!(third, Some('/' | '!')) && chars.get(i + 3) != Some(&'/');
            while i < chars.len() && chars[i] != '\n' {
                if docs && doc {
                    out.push(if matches!(chars[i], '{' | '}' | ';') {
                        ' '
                    } else {
                        chars[i]
                    });
                }
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !word_before(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime ('a), kept.
            if next == Some('\\') {
                i += 3; // the quote, the backslash and the escaped character
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn word_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `code` (comments and strings already out) without the items under `#[cfg(test)]`: each up
/// to its `;` or its matching `}`.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let mut depth = 0;
        let mut end = item.len();
        for (i, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Every import of a module from a higher layer, as "a (layer i) imports b (layer j)".
fn upward_imports(krate: &Crate) -> Vec<String> {
    let mut out = Vec::new();
    for (module, used) in &krate.imports {
        let Some(&layer) = krate.layers.get(module) else {
            continue;
        };
        for other in used {
            let above = match krate.layers.get(other) {
                Some(&l) => (l > layer).then(|| format!("layer {l}")),
                None if other == ROOT => Some("the crate root".to_string()),
                None => None,
            };
            if let Some(above) = above {
                out.push(format!(
                    "`{module}` (layer {layer}) imports `{other}` ({above})"
                ));
            }
        }
    }
    out
}

/// One circle of imports, as "a → b → … → a", if there is any.
fn a_circle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_string());
            return Some(circle.join(" → "));
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, imports, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    imports
        .keys()
        .find_map(|module| visit(module, imports, &mut Vec::new(), &mut done))
}

/// The modules that are part of some circle (each reaches itself through its imports).
fn in_circles(imports: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = imports.get(from).into_iter().flatten().collect();
        while let Some(m) = todo.pop() {
            if seen.insert(m.clone()) {
                todo.extend(imports.get(m).into_iter().flatten());
            }
        }
        seen
    };
    imports
        .keys()
        .filter(|m| reach(m).contains(*m))
        .cloned()
        .collect()
}

#[test]
fn every_module_is_in_one_layer() {
    let krate = read(&src(), Reading::Code);
    assert!(krate.unlisted.is_empty(), "{}", krate.unlisted.join("\n"));
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let krate = read(&src(), Reading::Code);
    let upward = upward_imports(&krate);
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_imports_form_no_circle() {
    let krate = read(&src(), Reading::Code);
    if let Some(circle) = a_circle(&krate.imports) {
        panic!(
            "imports in a circle: {circle}; every module of a circle: {:?}",
            in_circles(&krate.imports)
        );
    }
}

/// Doc comments link to their own layer or a lower one, so their links form no circle either.
#[test]
fn doc_links_follow_the_layers() {
    let krate = read(&src(), Reading::CodeAndDocs);
    let upward = upward_imports(&krate);
    assert!(
        upward.is_empty(),
        "imports or doc links against the layers (name a higher module in plain text):\n{}",
        upward.join("\n")
    );
    if let Some(circle) = a_circle(&krate.imports) {
        panic!("imports and doc links in a circle: {circle}");
    }
}

/// The reader itself: what counts as an import and what does not.
#[test]
fn reads_paths_not_comments_strings_or_tests() {
    let modules: BTreeSet<String> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|m| m.to_string())
        .collect();
    let text = r##"
//! Links to [`crate::g`] in docs are not imports.
use std::sync::Arc;
use super::a::Thing;
use crate::{b::{self, X}, c};
/* crate::g in a block comment */
fn f<'a>(x: &'a str) -> char {
    let _ = "crate::g in a string";
    let _ = r#"super::g in a raw string"#;
    let _ = super::super::d::call();
    let _ = crate::ProxyArgs::default();
    '"'
}
const Q: char = '\'';
type T = crate::e::Type;
#[cfg(test)]
mod tests {
    use crate::g::Fixture;
}
#[cfg(test)]
use crate::g::Other;
fn after() { crate::f::go() }
"##;
    let found: Vec<String> = imported(text, &modules).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "crate root", "d", "e", "f"]);
    // Read with its docs: the link of the `//!` line counts, the test module's still not.
    let found: Vec<String> = referenced(text, &modules, Reading::CodeAndDocs)
        .into_iter()
        .collect();
    assert_eq!(found, ["a", "b", "c", "crate root", "d", "e", "f", "g"]);
    let docs = "//! See [`crate::a`]; {braces} in docs.\n/// Made by [`super::b::{X, Y}`].\n\
                //// Not a doc comment: crate::c.\n#[cfg(test)]\n/// [`crate::d`]; here.\n\
                mod tests { use crate::e; }\nfn f() {}\n";
    let found: Vec<String> = referenced(docs, &modules, Reading::CodeAndDocs)
        .into_iter()
        .collect();
    assert_eq!(found, ["a", "b"]);
}

/// The two checks fail on what they must catch.
#[test]
fn catches_a_circle_and_an_upward_import() {
    let imports: BTreeMap<String, BTreeSet<String>> = [
        ("balancer", vec!["rebalance", "metrics"]),
        ("rebalance", vec!["balancer"]),
        ("metrics", vec![]),
    ]
    .into_iter()
    .map(|(m, used)| (m.to_string(), used.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        a_circle(&imports).as_deref(),
        Some("balancer → rebalance → balancer")
    );
    assert_eq!(
        in_circles(&imports).into_iter().collect::<Vec<_>>(),
        ["balancer", "rebalance"]
    );
    let krate = Crate {
        layers: [("balancer", 1), ("rebalance", 2), ("metrics", 0)]
            .into_iter()
            .map(|(m, l)| (m.to_string(), l))
            .collect(),
        imports,
        unlisted: Vec::new(),
    };
    assert_eq!(
        upward_imports(&krate),
        ["`balancer` (layer 1) imports `rebalance` (layer 2)"]
    );
    let list = "//! Top.\n//!\n//! 0. Parts: [`metrics`] (the families),\n//!    [`bounded`].\n\
                //! 1. Data: [`balancer`].\n//!\n//! Not a layer: [`server`].\n";
    assert_eq!(
        layer_list(list),
        [
            ("metrics".to_string(), 0),
            ("bounded".to_string(), 0),
            ("balancer".to_string(), 1)
        ]
    );
}
