//! The GLib key-file syntax RAUC uses for manifests and system.conf: `[group]` headers,
//! `key=value` lines, `#` comments, `\s \n \t \r \\` escapes and `;`-separated lists.
//!
//! Stricter than GLib where GLib's leniency would make a signed file ambiguous: a
//! duplicate group or key is an error (GLib silently lets the last one win).

use std::fmt::Write as _;
use thiserror::Error;

/// A syntax error, with its 1-based line number.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {what}")]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl crate::fault::Fault for SyntaxError {
    fn kind(&self) -> &'static str {
        "syntax"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::FileCorrupted
    }
}

/// One `key=value` entry, value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The unescaped value.
    pub value: String,
    /// Line it came from (0 when set programmatically).
    pub line: usize,
}

/// A group and its entries, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Name between the brackets.
    pub name: String,
    /// Entries in file order.
    pub entries: Vec<Entry>,
    /// Line of the header (0 when created programmatically).
    pub line: usize,
}

impl Group {
    /// Value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|e| e.key == key).map(|e| e.value.as_str())
    }

    /// The entry of `key`, if present.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// A parsed key file: groups in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    /// Groups in file order.
    pub groups: Vec<Group>,
}

impl KeyFile {
    /// Parse key-file text.
    ///
    /// Errors: the first [`SyntaxError`] (see [`KeyFile::parse_all`] for every one).
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let (kf, mut errors) = Self::parse_all(text);
        match errors.is_empty() {
            true => Ok(kf),
            false => Err(errors.swap_remove(0)),
        }
    }

    /// Parse key-file text, going on past bad lines: the groups and entries of the good
    /// lines, and every syntax error in file order. A bad group header drops the entries
    /// under it (they would land in the wrong group); a duplicate group or key keeps the
    /// first.
    pub fn parse_all(text: &str) -> (Self, Vec<SyntaxError>) {
        let mut kf = KeyFile::default();
        let mut errors = Vec::new();
        // Whether entries go into the last group (false after a bad header).
        let mut open = true;
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            let err = |what: &str| SyntaxError { line, what: what.to_string() };
            let l = raw.strip_suffix('\r').unwrap_or(raw).trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some(rest) = l.strip_prefix('[') {
                open = false;
                let Some(name) = rest.trim_end().strip_suffix(']') else {
                    errors.push(err("group header lacks ']'"));
                    continue;
                };
                if name.is_empty() || name.chars().any(|c| c == '[' || c == ']' || c.is_control()) {
                    errors.push(err("invalid group name"));
                    continue;
                }
                if kf.group(name).is_some() {
                    errors.push(err(&format!("duplicate group [{name}]")));
                    continue;
                }
                kf.groups.push(Group { name: name.to_string(), entries: Vec::new(), line });
                open = true;
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                errors.push(err("expected 'key=value', '[group]' or a comment"));
                continue;
            };
            let key = k.trim_end();
            if key.is_empty() || key.chars().any(|c| c.is_control()) {
                errors.push(err("invalid key"));
                continue;
            }
            let value = match unescape(v.trim_start()) {
                Ok(v) => v,
                Err(w) => {
                    errors.push(err(&w));
                    continue;
                }
            };
            if !open {
                continue; // under a bad header: reported there
            }
            let Some(group) = kf.groups.last_mut() else {
                errors.push(err("key outside of any group"));
                continue;
            };
            if group.get(key).is_some() {
                errors.push(err(&format!("duplicate key '{key}' in [{}]", group.name)));
                continue;
            }
            group.entries.push(Entry { key: key.to_string(), value, line });
        }
        (kf, errors)
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Value of `key` in `group`.
    pub fn get(&self, group: &str, key: &str) -> Option<&str> {
        self.group(group)?.get(key)
    }

    /// Set `key` in `group` (both created at the end when missing). Does not write anything.
    pub fn set(&mut self, group: &str, key: &str, value: &str) {
        let gi = match self.groups.iter().position(|g| g.name == group) {
            Some(i) => i,
            None => {
                self.groups.push(Group { name: group.to_string(), entries: Vec::new(), line: 0 });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[gi];
        match g.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = value.to_string(),
            None => g.entries.push(Entry { key: key.to_string(), value: value.to_string(), line: 0 }),
        }
    }

    /// Remove `key` from `group` if present.
    pub fn remove(&mut self, group: &str, key: &str) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.name == group) {
            g.entries.retain(|e| e.key != key);
        }
    }

    /// Serialize (comments are not kept).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "[{}]", g.name);
            for e in &g.entries {
                let _ = writeln!(out, "{}={}", e.key, escape(&e.value));
            }
        }
        out
    }
}

fn unescape(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            // List separators stay escaped for `list()` to split on.
            Some(';') => out.push_str("\\;"),
            Some(o) => return Err(format!("invalid escape '\\{o}'")),
            None => return Err("value ends with a lone '\\'".into()),
        }
    }
    Ok(out)
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            ' ' if i == 0 => out.push_str("\\s"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// Split a GLib list value (`a;b;c;`) into its items.
pub fn list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&';') => {
                chars.next();
                cur.push(';');
            }
            ';' => items.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_keys_and_escapes() {
        let kf = KeyFile::parse("# c\n[update]\ncompatible = a\\sb\nversion=1\n\n[x.y]\nk=a;b\\;c;\n").unwrap();
        assert_eq!(kf.get("update", "compatible"), Some("a b"));
        assert_eq!(kf.get("update", "version"), Some("1"));
        assert_eq!(list(kf.get("x.y", "k").unwrap()), vec!["a", "b;c"]);
        let again = KeyFile::parse(&kf.to_text()).unwrap();
        assert_eq!(again.get("update", "compatible"), Some("a b"));
    }

    #[test]
    fn rejects_ambiguity() {
        assert_eq!(KeyFile::parse("[a]\nk=1\nk=2\n").unwrap_err().line, 3);
        assert_eq!(KeyFile::parse("[a]\n[a]\n").unwrap_err().line, 2);
        assert_eq!(KeyFile::parse("k=1\n").unwrap_err().line, 1);
        assert!(KeyFile::parse("[a\n").is_err());
        assert!(KeyFile::parse("[a]\nnoequals\n").is_err());
        assert!(KeyFile::parse("[a]\nk=\\x\n").is_err());
        // Every error, in file order; good lines still parsed.
        let (kf, errors) = KeyFile::parse_all("[a]\nk=1\nbad\n[b\nx=1\n[c]\nk=\\q\nm=2\nm=3\n");
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [3, 4, 7, 9]);
        assert_eq!(kf.get("a", "k"), Some("1"));
        assert_eq!(kf.get("c", "m"), Some("2"));
        assert!(kf.group("b").is_none());
    }
}
