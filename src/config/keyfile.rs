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
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut kf = KeyFile::default();
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            let err = |what: &str| SyntaxError { line, what: what.to_string() };
            let l = raw.strip_suffix('\r').unwrap_or(raw).trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some(rest) = l.strip_prefix('[') {
                let name = rest.trim_end().strip_suffix(']').ok_or_else(|| err("group header lacks ']'"))?;
                if name.is_empty() || name.chars().any(|c| c == '[' || c == ']' || c.is_control()) {
                    return Err(err("invalid group name"));
                }
                if kf.group(name).is_some() {
                    return Err(err(&format!("duplicate group [{name}]")));
                }
                kf.groups.push(Group { name: name.to_string(), entries: Vec::new(), line });
                continue;
            }
            let (k, v) = l.split_once('=').ok_or_else(|| err("expected 'key=value', '[group]' or a comment"))?;
            let key = k.trim_end();
            if key.is_empty() || key.chars().any(|c| c.is_control()) {
                return Err(err("invalid key"));
            }
            let value = unescape(v.trim_start()).map_err(|w| err(&w))?;
            let group = kf.groups.last_mut().ok_or_else(|| err("key outside of any group"))?;
            if group.get(key).is_some() {
                return Err(err(&format!("duplicate key '{key}' in [{}]", group.name)));
            }
            group.entries.push(Entry { key: key.to_string(), value, line });
        }
        Ok(kf)
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
    }
}
