//! Every relative link of the user-facing Markdown resolves: the file or folder it names exists
//! inside the repository, and a `#anchor` (to the same file or another `.md` file) is produced
//! by one of that file's headings, slugged the way GitHub does. External links (anything with a
//! scheme, such as `https:`) are not checked; links inside code blocks and code spans are not
//! links.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The documents checked, besides every `docs/*.md`.
const DOCUMENTS: &[&str] = &[
    "README.md",
    "CONTRIBUTING.md",
    "SECURITY.md",
    "CHANGELOG.md",
    "charts/meteor-operator/README.md",
];

#[test]
fn relative_links_and_anchors_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents: Vec<PathBuf> = DOCUMENTS.iter().map(PathBuf::from).collect();
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| {
            path.strip_prefix(root)
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    docs.sort();
    documents.extend(docs);

    let (checked, problems) = check(root, &documents);
    assert!(
        problems.is_empty(),
        "{} broken link(s) in the documentation:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // A parser that finds nothing would pass too: the README alone links to docs/ many times.
    assert!(checked > 50, "only {checked} relative links found");
}

#[test]
fn slugs_follow_github() {
    let slugs = anchors(
        "# Managed MongoDB\n## `meteor-operator` command\n## Benchmark: against HAProxy and nginx\n### Status\n### Status\n#### Status\n## A/B: x_y — z?\n```\n# not a heading\n```\n",
    );
    for slug in [
        "managed-mongodb",
        "meteor-operator-command",
        "benchmark-against-haproxy-and-nginx",
        "status",
        "status-1",
        "status-2",
        "ab-x_y--z",
    ] {
        assert!(slugs.contains(slug), "{slug} missing from {slugs:?}");
    }
    assert!(!slugs.contains("not-a-heading"));
}

#[test]
fn broken_links_are_reported() {
    let dir = std::env::temp_dir().join(format!("docs-links-{}", std::process::id()));
    fs::create_dir_all(dir.join("docs")).unwrap();
    fs::write(dir.join("docs/a.md"), "# A\n## Known limits\n").unwrap();
    fs::write(
        dir.join("README.md"),
        "# Top\n\
         [ok](docs/a.md#known-limits) [ok](#top) [ok](docs/) [external](https://example.com/x#y)\n\
         `[in a span](missing.md)`\n\
         ```\n[in a block](missing.md)\n```\n\
         [no file](docs/b.md) [no anchor](docs/a.md#limits) [no local anchor](#bottom)\n\
         [outside](../elsewhere.md)\n\
         [ref]: docs/c.md\n",
    )
    .unwrap();
    let (checked, problems) = check(&dir, &[PathBuf::from("README.md")]);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(checked, 8, "{problems:?}");
    let reported: Vec<&str> = problems
        .iter()
        .map(|p| p.split('`').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        reported,
        [
            "docs/b.md",
            "docs/a.md#limits",
            "#bottom",
            "../elsewhere.md",
            "docs/c.md"
        ],
        "{problems:?}"
    );
}

/// Checks the relative links of `documents` (paths relative to `root`); returns how many
/// relative links were checked and one line per broken one.
fn check(root: &Path, documents: &[PathBuf]) -> (usize, Vec<String>) {
    let mut anchor_cache: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    for document in documents {
        let text = fs::read_to_string(root.join(document))
            .unwrap_or_else(|e| panic!("{}: {e}", document.display()));
        let folder = document.parent().unwrap_or(Path::new(""));
        for (line_no, target) in links(&text) {
            if has_scheme(&target) {
                continue;
            }
            checked += 1;
            let at = format!("{}:{line_no}: `{target}`", document.display());
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let path = percent_decode(path);
            let resolved = if path.is_empty() {
                Some(document.clone())
            } else if let Some(from_root) = path.strip_prefix('/') {
                normalize(Path::new(from_root))
            } else {
                normalize(&folder.join(&path))
            };
            let Some(resolved) = resolved else {
                problems.push(format!("{at}: points outside the repository"));
                continue;
            };
            let full = root.join(&resolved);
            if !full.exists() {
                problems.push(format!("{at}: no such file {}", resolved.display()));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if full.is_dir() || resolved.extension().is_none_or(|ext| ext != "md") {
                continue; // GitHub's line anchors of other files are not headings
            }
            let slugs = anchor_cache.entry(resolved.clone()).or_insert_with(|| {
                anchors(
                    &fs::read_to_string(&full)
                        .unwrap_or_else(|e| panic!("{}: {e}", full.display())),
                )
            });
            let fragment = percent_decode(fragment).to_lowercase();
            if !slugs.contains(&fragment) {
                problems.push(format!(
                    "{at}: no heading of {} has the anchor #{fragment}",
                    resolved.display()
                ));
            }
        }
    }
    (checked, problems)
}

/// `scheme:` at the start (`https:`, `mailto:`): not a relative link.
fn has_scheme(target: &str) -> bool {
    match target.split_once(':') {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// `folder/../x` → `x`; `None` when the path climbs out of the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The lines outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<(char, usize)> = None;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |m| trimmed.chars().take_while(|c| *c == m).count());
        match (fence, marker) {
            (None, Some(m)) if run >= 3 => fence = Some((m, run)),
            (Some((m, n)), Some(c)) if c == m && run >= n && trimmed[run..].trim().is_empty() => {
                fence = None
            }
            (None, _) => lines.push((index + 1, line)),
            (Some(_), _) => {}
        }
    }
    lines
}

/// The line with every code span blanked out (backticks included), so nothing in one is read
/// as a link.
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        // The closing run has exactly the same length.
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let other = chars[j..].iter().take_while(|c| **c == '`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out.extend(std::iter::repeat_n(' ', j + run - i));
                i = j + run;
            }
            None => {
                out.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// Every link target with its line: inline `[text](target)` and `![alt](target)`, and
/// reference definitions `[label]: target`.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (line_no, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some(end) = trimmed.find("]:")
            && !trimmed[..end].contains("](")
        {
            if let Some(target) = trimmed[end + 2..].split_whitespace().next() {
                found.push((line_no, target.trim_matches(['<', '>']).to_string()));
            }
            continue;
        }
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let (target, consumed) = link_target(after);
            if !target.is_empty() {
                found.push((line_no, target));
            }
            rest = &after[consumed..];
        }
    }
    found
}

/// The destination at the start of `text` (just after `](`) and how many bytes it took.
fn link_target(text: &str) -> (String, usize) {
    let body = text.trim_start();
    let skipped = text.len() - body.len();
    if let Some(inner) = body.strip_prefix('<') {
        let end = inner.find('>').unwrap_or(inner.len());
        return (inner[..end].to_string(), skipped + 1 + end);
    }
    let mut depth = 0usize;
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return (body[..i].to_string(), skipped + i),
            ')' => depth -= 1,
            c if c.is_whitespace() => return (body[..i].to_string(), skipped + i),
            _ => {}
        }
    }
    (body.to_string(), text.len())
}

/// The anchors GitHub gives the headings of a Markdown text.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut slugs = HashSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() > 3 {
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&level) {
            continue;
        }
        let rest = &trimmed[level..];
        if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            continue;
        }
        let title = rest.trim().trim_end_matches('#').trim_end();
        let base = slug(&heading_text(title));
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        slugs.insert(anchor);
    }
    slugs
}

/// A heading as rendered text: links and images keep only their text.
fn heading_text(title: &str) -> String {
    let mut out = String::new();
    let mut rest = title;
    while let Some(start) = rest.find("](") {
        let (_, consumed) = link_target(&rest[start + 2..]);
        out.push_str(&rest[..start]);
        rest = rest[start + 2 + consumed..]
            .strip_prefix(')')
            .unwrap_or(&rest[start + 2 + consumed..]);
    }
    out.push_str(rest);
    out
}

/// GitHub's slug: lowercase; letters, digits, `-` and `_` kept; each space becomes `-`; every
/// other character (punctuation, backticks, symbols) dropped.
fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}
