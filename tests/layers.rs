//! The rooms of the house stay in their layers: docs/architecture.md's "Layers" table is
//! read, and every `crate::` path in `src/` (in `use` lines and in code, comments left
//! out) must name the same room or a room of a lower layer. An arrow up, an arrow
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

/// The rooms a line of code names through `crate::` (paths and `use crate::{a, b::c}`).
fn rooms_named(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            for item in inner.split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            out.push(name);
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
        let first = rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        if first == "lib" || first == "main" {
            continue;
        }
        let Some(&own) = layers.get(&first) else {
            problems.push(format!("src/{}: room '{first}' is not in the Layers table", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for room in rooms_named(code) {
                if room == first {
                    continue;
                }
                arrows += 1;
                match layers.get(&room) {
                    None => {
                        problems.push(format!("src/{}:{}: '{room}' is not in the Layers table", rel.display(), n + 1))
                    }
                    Some(&other) if other >= own => problems.push(format!(
                        "src/{}:{}: {first} (layer {own}) uses {room} (layer {other})",
                        rel.display(),
                        n + 1
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    assert!(arrows > 100, "only {arrows} crate:: paths found: is the scan broken?");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_paths_and_groups() {
    assert_eq!(rooms_named("use crate::fault::{CwmpFault, Fault};"), ["fault"]);
    assert_eq!(rooms_named("use crate::{config, install::admit};"), ["config", "install"]);
    assert_eq!(rooms_named("let x = crate::tpm::policy::nv_name(crate::slot::x);"), ["tpm", "slot"]);
}
