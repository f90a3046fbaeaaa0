//! The documentation cannot drift from the code:
//! - every fenced block in docs/ and README.md that is a system.conf (its first section is
//!   one of system.conf's) loads with the agent's parser; a fragment without `[system]`
//!   is loaded after a minimal `[system] compatible=` line;
//! - every `henb-update ...` command line shown in a fenced block parses with the real
//!   command line parser, in its shortest form (optional `[...]` parts left out, the first
//!   of `a|b` alternatives) and its longest (every optional part, the last alternative).

use henb_update::config::Config;
use std::path::{Path, PathBuf};

/// (file, first line of the block, body) of every fenced block.
fn blocks() -> Vec<(PathBuf, usize, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.push(root.join("README.md"));
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut block: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                match block.take() {
                    None => block = Some((n + 2, String::new())),
                    Some((start, body)) => out.push((path.clone(), start, body)),
                }
            } else if let Some((_, body)) = block.as_mut() {
                body.push_str(line.strip_prefix("   ").unwrap_or(line));
                body.push('\n');
            }
        }
    }
    out
}

#[test]
fn configuration_examples_in_docs_load() {
    const SECTIONS: [&str; 11] = [
        "system",
        "keyring",
        "tpm",
        "measured-boot",
        "service",
        "install",
        "uboot",
        "handlers",
        "package",
        "download",
        "streaming",
    ];
    let mut loaded = 0;
    let mut failures = Vec::new();
    for (path, start, body) in blocks() {
        let first = body.lines().map(str::trim).find(|l| l.starts_with('['));
        let is_conf = first.is_some_and(|l| {
            let name = l.trim_start_matches('[').split(']').next().unwrap_or_default();
            SECTIONS.contains(&name) || name.starts_with("slot.")
        });
        if !is_conf {
            continue;
        }
        let text = if body.lines().any(|l| l.trim() == "[system]") {
            body.clone()
        } else {
            format!("[system]\ncompatible=doc-example\n{body}")
        };
        if let Err(e) = Config::parse(&text, &path) {
            failures.push(format!("{}:{start}: {e}", path.display()));
        }
        // The keys shown commented out (`# key=value`) are real keys of their section too.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(kv)
                    if kv.split_once('=').is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    }) =>
                {
                    kv
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        if let Err(e) = Config::parse(&uncommented, &path) {
            failures.push(format!("{}:{start} (commented keys set): {e}", path.display()));
        }
        loaded += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(loaded >= 3, "only {loaded} configuration examples found");
}

/// One synopsis token list in its shortest or longest form.
fn form(tokens: &[&str], longest: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut alternative_done = false;
    for t in tokens {
        let opens = t.matches('[').count();
        let closes = t.matches(']').count();
        let inside = depth > 0 || opens > 0;
        depth = (depth + opens).saturating_sub(closes);
        if *t == "|" {
            // Alternatives between whole argument groups: the shortest form stops at the
            // first, the longest starts again after the last.
            if longest {
                out.retain(|a: &String| !a.starts_with('-') || a == "--json");
                out.truncate(out.iter().position(|a| a.starts_with('-')).unwrap_or(out.len()));
            } else {
                alternative_done = true;
            }
            continue;
        }
        if alternative_done || *t == "..." || (inside && !longest) {
            continue;
        }
        let t = t.trim_matches(|c| c == '[' || c == ']').trim_end_matches("...");
        if t.is_empty() {
            continue;
        }
        let alts: Vec<&str> = t.split('|').collect();
        out.push(if longest { alts[alts.len() - 1] } else { alts[0] }.to_string());
    }
    out
}

#[test]
fn command_lines_in_docs_parse() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (path, start, body) in blocks() {
        // Join continuation lines, then split `a ; b` sequences.
        let joined = body.replace("\\\n", " ");
        for (i, line) in joined.lines().enumerate() {
            let line = line.trim().trim_start_matches("$ ");
            let Some(rest) = line.strip_prefix("henb-update ") else { continue };
            let rest = rest.split("  #").next().unwrap_or_default();
            let rest = rest.split(['<', '>']).next().unwrap_or_default();
            for (k, cmd) in rest.split(" ; ").enumerate() {
                let tokens: Vec<&str> = cmd.split_whitespace().collect();
                if k > 0 && tokens.first().is_some_and(|t| t.starts_with('-')) {
                    continue;
                }
                for longest in [false, true] {
                    let args = form(&tokens, longest);
                    if let Err(e) = henb_update::cli::check_args(&args) {
                        let first = e.lines().next().unwrap_or_default().to_string();
                        failures.push(format!(
                            "{}:{}: henb-update {}: {first}",
                            path.display(),
                            start + i,
                            args.join(" ")
                        ));
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 20, "only {checked} command lines found");
}

/// The configurations the project ships load too: the VM test image's, and the Yocto
/// recipe's template as `henb-update-conf` renders it (both ways of
/// `HENB_ALLOW_EMPTY_OWNER_AUTH`).
#[test]
fn shipped_configurations_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for guest in ["images/guest/system.conf", "images/guest/hw.conf"] {
        Config::load(&root.join(guest)).unwrap_or_else(|e| panic!("{e}"));
    }
    let template = root.join("meta-henb-update/recipes-core/henb-update-conf/files/system.conf.in");
    let text = std::fs::read_to_string(&template).unwrap();
    for (owner_auth, allowed) in
        [("owner-auth-file=/data/henb-update/owner-auth", false), ("allow-empty-owner-auth=true", true)]
    {
        let rendered = text
            .replace("@COMPATIBLE@", "henb-qemux86-64")
            .replace("@SLOT_A@", "/dev/disk/by-partlabel/rootfs-A")
            .replace("@SLOT_B@", "/dev/disk/by-partlabel/rootfs-B")
            .replace("@GRUBENV@", "/boot/efi/EFI/BOOT/grubenv")
            .replace("@DATA@", "/data/henb-update")
            .replace("@RAUC@", "false")
            .replace("@OWNER_AUTH@", owner_auth);
        assert!(!rendered.contains('@'), "a placeholder the test does not know: {rendered}");
        let c = Config::parse(&rendered, &template).unwrap_or_else(|e| panic!("{owner_auth}: {e}"));
        assert!(c.measured_boot.is_some());
        assert_eq!(c.tpm.allow_empty_owner_auth, allowed);
    }
    // The recipe substitutes every placeholder of its template.
    let recipe =
        std::fs::read_to_string(root.join("meta-henb-update/recipes-core/henb-update-conf/henb-update-conf_1.0.bb"))
            .unwrap();
    for p in text.split('@').skip(1).step_by(2) {
        assert!(recipe.contains(&format!("@{p}@")), "the recipe does not substitute @{p}@");
    }
}

/// The operator guide's table of RAUC's keys says what the parser does with each, and
/// names every key the parser knows (read or refused).
#[test]
fn the_rauc_key_table_is_what_the_parser_does() {
    use henb_update::config::{known_keys, support, Support};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/operator-guide.md")).unwrap();
    let table = guide.split("### RAUC's keys").nth(1).expect("a RAUC's keys section");
    let rows: Vec<(String, String, bool)> = table
        .lines()
        .skip_while(|l| !l.starts_with("| section"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let c: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (c[0].to_string(), c[1].to_string(), c[2].starts_with("yes"))
        })
        .collect();
    assert!(rows.len() > 50, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for (section, key, yes) in &rows {
        let got = if key == "(section)" { support(section, "any-key") } else { support(section, key) };
        let want = if *yes { Support::Supported } else { Support::Unsupported };
        if got != want {
            wrong.push(format!("[{section}] {key}: the guide says {want:?}, the parser {got:?}"));
        }
    }
    // Every RAUC key the parser refuses is in the table; every key it reads is in the
    // table or named as one of the agent's own.
    let own = table.split("Keys of this agent's own").nth(1).unwrap_or_default();
    for (section, key) in known_keys() {
        let listed = rows.iter().any(|(s, k, _)| s == section && k == key);
        let named_own = own.contains(&format!("`{key}`")) || own.contains(&format!("`[{section}]`"));
        let own_key = support(section, key) == Support::Supported && named_own;
        if !(listed || own_key) {
            wrong.push(format!("[{section}] {key}: not in the guide's table"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
