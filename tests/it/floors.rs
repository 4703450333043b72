//! The floors of the house: each module of `src/` imports only from its own floor or the ones
//! below, and no file takes part in a circle of imports of any size, two-way ties included.
//! The list below is the layering; a new top-level module must be given a floor here, so that
//! the layering stays a decision rather than an accident.
//!
//! The imports are read as text: every `crate::`, `super::` and `self::` path of a file (in a
//! `use` or inline), outside its `#[cfg(test)]` tail, resolved to the file that defines the
//! module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may use modules of its own floor only where the file graph stays
/// free of circles (checked below); across floors, only downwards.
const FLOORS: &[(u8, &[&str])] = &[
    (7, &["main"]),
    (6, &["http", "notify", "backfill", "auth"]),
    (5, &["app"]),
    (4, &["account"]),
    (3, &["collector"]),
    (
        2,
        &["withings", "render", "telemetry", "invite", "remote_write"],
    ),
    (1, &["config"]),
    (
        0,
        &["secret", "text", "clock", "files", "lock", "answer", "lib"],
    ),
];

fn floor_of(top: &str) -> Option<u8> {
    FLOORS
        .iter()
        .find(|(_, modules)| modules.contains(&top))
        .map(|(floor, _)| *floor)
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are both the module path `["a", "b"]`; `lib.rs` and
/// `main.rs` are crate roots.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs").to_owned();
    if stem != "mod" {
        parts.push(stem);
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments, string and char literals, and without its
/// `#[cfg(test)]` tail (unit tests may use whatever helps them). The tail starts at the first
/// `#[cfg(test)]`: this project keeps its unit tests in one `mod tests` at the end of a file.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if matches!(bytes.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !is_ident(bytes[i - 1])) =>
            {
                // A raw string: r"..." or r#"..."#.
                let mut j = i + 1;
                let mut hashes = 0;
                while bytes.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if bytes.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= bytes.len() {
                        break;
                    }
                    if bytes[j] == b'"'
                        && bytes[j + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|b| **b == b'#')
                            .count()
                            == hashes
                    {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => {
                // A char literal ('a', '\n', '\u{..}') or a lifetime ('a): only the first
                // is skipped.
                let close = if bytes.get(i + 1) == Some(&b'\\') {
                    bytes[i + 2..]
                        .iter()
                        .position(|b| *b == b'\'')
                        .map(|p| i + 2 + p)
                } else if bytes.get(i + 2) == Some(&b'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match close {
                    Some(end) => {
                        out.push_str("' '");
                        i = end + 1;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every path that starts with `crate`, `super` or `self`, with use-groups expanded:
/// `crate::{a::b, c}` gives `crate::a::b` and `crate::c`.
fn paths_of(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b':');
        if starts_word {
            for root in ["crate", "super", "self"] {
                let end = i + root.len();
                if code[i..].starts_with(root)
                    && !bytes.get(end).copied().is_some_and(is_ident)
                    && code[end..].trim_start().starts_with("::")
                {
                    let mut j = i;
                    parse_tree(code, &mut j, Vec::new(), &mut out);
                    i = j.max(i + 1);
                    break;
                }
            }
        }
        i += 1;
    }
    out
}

fn skip_ws(code: &str, i: &mut usize) {
    while *i < code.len() && code.as_bytes()[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

/// Parses a use-tree at `i` (segments separated by `::`, ending in a group, a glob or a
/// name), pushing every whole path onto `out`.
fn parse_tree(code: &str, i: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let bytes = code.as_bytes();
    loop {
        skip_ws(code, i);
        if *i < bytes.len() && bytes[*i] == b'{' {
            *i += 1;
            loop {
                skip_ws(code, i);
                if *i >= bytes.len() {
                    return;
                }
                if bytes[*i] == b'}' {
                    *i += 1;
                    return;
                }
                if bytes[*i] == b',' {
                    *i += 1;
                    continue;
                }
                let before = *i;
                parse_tree(code, i, prefix.clone(), out);
                if *i == before {
                    *i += 1;
                }
            }
        }
        let start = *i;
        while *i < bytes.len() && is_ident(bytes[*i]) {
            *i += 1;
        }
        if *i == start {
            // A glob or the end of the path.
            if *i < bytes.len() && bytes[*i] == b'*' {
                *i += 1;
            }
            out.push(prefix);
            return;
        }
        prefix.push(code[start..*i].to_owned());
        let mut j = *i;
        skip_ws(code, &mut j);
        if code[j..].starts_with("::") {
            *i = j + 2;
        } else {
            out.push(prefix);
            return;
        }
    }
}

/// The file that defines the longest prefix of `path` that is a module of the crate.
fn resolve<'a>(
    from: &[String],
    path: &[String],
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
) -> Option<&'a PathBuf> {
    let mut absolute: Vec<String> = Vec::new();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => rest = &rest[1..],
        Some("self") | Some("super") => {
            // `self` in `a/b.rs` is `a::b`; `super` there is `a`. A mod.rs is its folder.
            absolute = from.to_vec();
            while let Some(first) = rest.first().map(String::as_str) {
                match first {
                    "self" => {}
                    "super" => {
                        absolute.pop();
                    }
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    absolute.extend(rest.iter().cloned());
    while !absolute.is_empty() {
        if let Some(file) = modules.get(&absolute) {
            return Some(file);
        }
        absolute.pop();
    }
    None
}

struct House {
    /// file -> the files it imports from (other than itself).
    edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    /// file -> its module path.
    modules: BTreeMap<PathBuf, Vec<String>>,
}

fn read_house() -> House {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let by_path: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_path(&src, f), f.clone()))
        .filter(|(m, _)| !m.is_empty() && m[0] != "lib" && m[0] != "main")
        .collect();
    let mut edges = BTreeMap::new();
    let mut modules = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file");
        let module = module_path(&src, file);
        let mut to = BTreeSet::new();
        for path in paths_of(&code_of(&text)) {
            if let Some(target) = resolve(&module, &path, &by_path)
                && target != file
            {
                to.insert(target.clone());
            }
        }
        edges.insert(file.clone(), to);
        modules.insert(file.clone(), module);
    }
    House { edges, modules }
}

fn top_of(module: &[String]) -> &str {
    module.first().map_or("lib", String::as_str)
}

fn shown(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_top_level_module_has_a_floor() {
    let house = read_house();
    let unplaced: BTreeSet<&str> = house
        .modules
        .values()
        .map(|m| top_of(m))
        .filter(|top| floor_of(top).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a floor: {unplaced:?}; give each one in FLOORS (tests/it/floors.rs)"
    );
}

#[test]
fn imports_point_down() {
    let house = read_house();
    let mut upward = Vec::new();
    for (file, targets) in &house.edges {
        let Some(from) = floor_of(top_of(&house.modules[file])) else {
            continue;
        };
        for target in targets {
            let top = top_of(&house.modules[target]);
            if let Some(to) = floor_of(top)
                && to > from
            {
                upward.push(format!(
                    "{} (floor {from}) imports {} (floor {to})",
                    shown(file),
                    shown(target)
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_file_is_in_a_circle_of_imports() {
    let house = read_house();
    let circles = strongly_connected(&house.edges);
    let shown_circles: Vec<String> = circles
        .iter()
        .map(|c| c.iter().map(|f| shown(f)).collect::<Vec<_>>().join(" <-> "))
        .collect();
    assert!(
        shown_circles.is_empty(),
        "circles of imports:\n{}",
        shown_circles.join("\n")
    );
}

/// Tarjan's strongly connected components of more than one file.
fn strongly_connected(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.edges.get(v) {
            for w in targets {
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn the_reader_sees_what_it_must() {
    // The checks above are only as good as the reading: a known upward import, a group and a
    // relative path must all be seen.
    let code = code_of(
        "use crate::{config::Config, account::{tokens::X, Y}};\n\
         use super::state::Z; // crate::http::ignored\n\
         let s = \"crate::notify::ignored\";\n\
         fn f() { crate::app::App::new(); }\n\
         #[cfg(test)]\nmod tests { use crate::http::Server; }\n",
    );
    let paths: Vec<String> = paths_of(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "crate::config::Config",
            "crate::account::tokens::X",
            "crate::account::Y",
            "super::state::Z",
            "crate::app::App::new",
        ]
    );
}
