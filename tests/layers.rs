//! The rooms of the house stay in their layers: docs/architecture.md's "Layers" table is
//! read, and every path to another room in `src/` (`crate::` paths and `use` groups, also
//! wrapped and nested, and `super::` chains that reach the crate root; comments and
//! strings left out) must name the same room or a room of a lower layer. An arrow up, an arrow
//! between two rooms of one layer (and so any import cycle), or a room the table does
//! not know fails, naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// room -> layer, from the table in docs/architecture.md.
fn layers() -> BTreeMap<String, u32> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let table = doc.split("## Layers").nth(1).expect("docs/architecture.md has a '## Layers' section");
    let mut out = BTreeMap::new();
    for line in table.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(layer) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else { continue };
        for room in cells[2].split(',') {
            out.insert(room.trim().trim_matches('`').to_string(), layer);
        }
    }
    assert!(out.len() >= 20, "the Layers table names only {} rooms: {out:?}", out.len());
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and string literals (so that neither can name a
/// room), line breaks kept for line numbers.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            ('/', Some('/')) => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                    if b[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                i += 2;
            }
            // A raw string: r"..", r#".."#, br".." (no escapes; ends at `"` and its hashes).
            ('r', Some('"' | '#'))
                if i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == '_') || b[i - 1] == 'b' =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                while j < b.len() && !(b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#'))) {
                    if b[j] == '\n' {
                        out.push('\n');
                    }
                    j += 1;
                }
                i = j + 1 + hashes;
                out.push_str("\"\"");
            }
            ('"', _) => {
                i += 1;
                while i < b.len() && b[i] != '"' {
                    if b[i] == '\\' {
                        i += 1;
                    }
                    if b.get(i) == Some(&'\n') {
                        out.push('\n');
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n', '"'), not a lifetime ('a).
            ('\'', _)
                if b.get(i + 2) == Some(&'\'') || (b.get(i + 1) == Some(&'\\') && b.get(i + 3) == Some(&'\'')) =>
            {
                i += if b[i + 1] == '\\' { 4 } else { 3 };
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The module path of a source file under src/ (`install/admit.rs` -> install, admit).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The top-level items of a `{...}` use group starting at `s` (after the brace): `a::b`
/// and `a::{b, c}` name `a`; nested braces are skipped.
fn group_items(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            item.push(c);
        }
    }
    out.push(item);
    out.iter()
        .map(|i| i.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>())
        .filter(|n| !n.is_empty() && n != "self")
        .collect()
}

/// Every room a file's code names, with the line: `crate::` paths and groups, and
/// `super::` chains that climb to the crate root.
fn rooms_named(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i;
        at = start + "crate::".len();
        let rest = &code[at..];
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_items(group).into_iter().map(|n| (line_of(start), n)));
        } else {
            out.push((line_of(start), ident(rest)));
        }
    }
    let mut at = 0;
    while let Some(i) = code[at..].find("super::") {
        let start = at + i;
        let before = code[..start].chars().last();
        at = start + "super::".len();
        // The middle of a chain is counted from its first `super::` (`self::super::`
        // starts a chain too).
        let chained = before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if chained && !code[..start].ends_with("self::") {
            continue;
        }
        let mut depth = 1;
        let mut rest = &code[at..];
        while let Some(r) = rest.strip_prefix("super::") {
            depth += 1;
            rest = r;
        }
        at = code.len() - rest.len();
        // From module a::b, `super::` is a, `super::super::` the crate root.
        // Inline modules (`mod tests { use super::*; }`) are not tracked: their
        // `super::` is read as the file's, which climbs higher, so the check is stricter,
        // never laxer. A glob names no room of its own.
        if depth >= module.len() {
            if let Some(group) = rest.strip_prefix('{') {
                out.extend(group_items(group).into_iter().map(|n| (line_of(start), n)));
            } else if !rest.starts_with('*') {
                out.push((line_of(start), ident(rest)));
            }
        }
    }
    out
}

/// Every arrow that breaks the layers, as "file:line: what".
fn violations(layers: &BTreeMap<String, u32>, file: &str, module: &[String], code: &str) -> Vec<String> {
    let Some(room) = module.first() else { return Vec::new() };
    let Some(&own) = layers.get(room) else {
        return vec![format!("{file}: room '{room}' is not in the Layers table")];
    };
    let mut out = Vec::new();
    // An alias of the crate root would hide the rooms named through it.
    for (n, l) in code.lines().enumerate() {
        if l.contains("crate as ") || (l.contains("crate::{") && l.contains("self as ")) {
            out.push(format!("{file}:{}: an alias of the crate root: name rooms through crate::", n + 1));
        }
    }
    for (line, other) in rooms_named(code, module) {
        if &other == room {
            continue;
        }
        match layers.get(&other) {
            None => out.push(format!("{file}:{line}: '{other}' is not in the Layers table")),
            Some(&l) if l >= own => out.push(format!("{file}:{line}: {room} (layer {own}) uses {other} (layer {l})")),
            Some(_) => {}
        }
    }
    out
}

#[test]
fn no_room_uses_a_room_of_its_own_or_a_higher_layer() {
    let layers = layers();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    let mut arrows = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = module_path(rel);
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        arrows += rooms_named(&code, &module).len();
        problems.extend(violations(&layers, &format!("src/{}", rel.display()), &module, &code));
    }
    assert!(arrows > 100, "only {arrows} paths to rooms found: is the scan broken?");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check itself flags what it must: an arrow up, one within a layer, a room the table
/// does not know, through a path, a wrapped group, a nested group and `super::`.
#[test]
fn the_check_flags_arrows_up_and_across() {
    let layers: BTreeMap<String, u32> =
        [("fault", 1), ("tpm", 3), ("verify", 3), ("config", 5), ("install", 9)].map(|(r, l)| (r.into(), l)).into();
    let tpm = ["tpm".to_string()];
    let flagged = |module: &[String], code: &str| violations(&layers, "f.rs", module, &code_only(code));
    let up = |line: usize, room: &str, layer: u32| format!("f.rs:{line}: tpm (layer 3) uses {room} (layer {layer})");
    assert!(flagged(&tpm, "use crate::fault::Fault;\nuse crate::tpm::policy;").is_empty());
    assert!(flagged(&tpm, "pub(crate) fn f<'a>(x: &'a str) -> &'a str { x }\n/// crate::install::X\n").is_empty());
    assert_eq!(flagged(&tpm, "let x = crate::config::DEFAULT;"), [up(1, "config", 5)], "up");
    assert_eq!(flagged(&tpm, "use crate::verify::Policy;"), [up(1, "verify", 3)], "across one layer");
    assert_eq!(flagged(&tpm, "use crate::nowhere::X;"), ["f.rs:1: 'nowhere' is not in the Layers table"]);
    assert_eq!(flagged(&tpm, "use crate::{\n    fault::Fault,\n    install::admit,\n};"), [up(1, "install", 9)]);
    assert_eq!(flagged(&tpm, "use crate::{fault::{Fault, CwmpFault}, config};"), [up(1, "config", 5)], "nested");
    assert_eq!(flagged(&tpm, "use super::config::Config;"), [up(1, "config", 5)], "super:: from a top-level room");
    let nested = ["tpm".to_string(), "seal".to_string()];
    assert!(flagged(&nested, "use super::policy;").is_empty(), "super:: within the room");
    assert_eq!(flagged(&nested, "use super::super::install::X;"), [up(1, "install", 9)], "to the root");
    assert_eq!(flagged(&nested, "use self::super::super::config::X;"), [up(1, "config", 5)], "self::super::");
    assert_eq!(flagged(&tpm, "macro_rules! m { () => { $crate::config::X } }"), [up(1, "config", 5)], "$crate");
    assert!(flagged(&tpm, "// crate::install is named in a comment\nlet s = \"crate::install\";").is_empty());
    assert_eq!(flagged(&tpm, "let c = '\"'; let x = crate::config::X;"), [up(1, "config", 5)], "a char literal");
    assert_eq!(flagged(&tpm, "let p = r\"C:\\\"; let x = crate::config::X;"), [up(1, "config", 5)], "raw string");
    assert_eq!(flagged(&tpm, "let p = r#\"say \"hi\"#; let x = crate::config::X;"), [up(1, "config", 5)], "r#");
    assert_eq!(flagged(&tpm, "let s = \"a\\\nb\nc\";\nuse crate::config::X;"), [up(4, "config", 5)], "line numbers");
    assert_eq!(flagged(&tpm, "use crate as c;").len(), 1, "an alias of the crate root");
}
