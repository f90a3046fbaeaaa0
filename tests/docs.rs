//! The configuration examples in docs/ are real: every fenced block that is a system.conf
//! (its first section is one of system.conf's) loads with the agent's parser.

use henb_update::config::Config;
use std::path::Path;

#[test]
fn configuration_examples_in_docs_load() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut block: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("```") {
                match block.take() {
                    None => block = Some((n + 1, String::new())),
                    Some((start, body)) => {
                        const SECTIONS: [&str; 9] = [
                            "system",
                            "keyring",
                            "tpm",
                            "measured-boot",
                            "service",
                            "install",
                            "uboot",
                            "handlers",
                            "package",
                        ];
                        let first = body.lines().map(str::trim).find(|l| l.starts_with('['));
                        let is_conf = first.is_some_and(|l| {
                            let name = l.trim_start_matches('[').split(']').next().unwrap_or_default();
                            SECTIONS.contains(&name) || name.starts_with("slot.")
                        });
                        if is_conf {
                            let c = Config::parse(&body, &path);
                            assert!(
                                c.is_ok(),
                                "{}:{start}: {}",
                                path.display(),
                                c.err().map(|e| e.to_string()).unwrap_or_default()
                            );
                            loaded += 1;
                        }
                    }
                }
            } else if let Some((_, body)) = block.as_mut() {
                body.push_str(line.strip_prefix("   ").unwrap_or(line));
                body.push('\n');
            }
        }
    }
    assert!(loaded >= 3, "only {loaded} configuration examples found in docs/");
}
