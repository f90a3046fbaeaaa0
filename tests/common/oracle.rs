//! squashfs-ng (libsquashfs, squashfs-tools-ng's C library) as a second, independent
//! reader of every squashfs the suite builds. The product reads bundles with backhand
//! (src/package/squashfs.rs); here both readers walk the whole tree and must find the
//! same inodes (path, type, permissions, owner, symlink target) and the same file bytes.

use henb_update::package::squashfs::{EntryKind, Squashfs};
use sha2::{Digest, Sha256};
use squashfs_ng::read::{Archive, Data, Node};
use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// What one reader saw at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// "file <size> <sha256>", "dir", "symlink <target>", "device", "fifo", "socket".
    pub what: String,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
}

/// Does `path` start with a squashfs (a bundle, or a bare image)?
pub fn is_squashfs(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"hsqs"
}

fn digest(r: &mut dyn Read) -> std::io::Result<(u64, String)> {
    let (mut h, mut buf, mut n) = (Sha256::new(), vec![0u8; 64 * 1024], 0u64);
    loop {
        match r.read(&mut buf)? {
            0 => return Ok((n, hex::encode(h.finalize()))),
            k => {
                h.update(&buf[..k]);
                n += k as u64;
            }
        }
    }
}

/// The tree as backhand (through the product's reader, with its limits) reads it.
pub fn read_backhand(path: &Path) -> Result<BTreeMap<PathBuf, Seen>, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let fs = Squashfs::open(Box::new(BufReader::new(f)), len).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for e in fs.entries() {
        let what = match &e.kind {
            EntryKind::File { size } => {
                let name = e.path.to_str().ok_or("path is not UTF-8")?;
                let (n, sha) = digest(&mut fs.reader(name).map_err(|e| e.to_string())?)
                    .map_err(|err| format!("{}: {err}", e.path.display()))?;
                if n != *size {
                    return Err(format!("{}: {n} bytes read, inode says {size}", e.path.display()));
                }
                format!("file {size} {sha}")
            }
            EntryKind::Dir => "dir".into(),
            EntryKind::Symlink { target } => format!("symlink {}", target.display()),
            EntryKind::Device => "device".into(),
            EntryKind::Fifo => "fifo".into(),
            EntryKind::Socket => "socket".into(),
        };
        out.insert(e.path.clone(), Seen { what, mode: e.mode, uid: e.uid, gid: e.gid });
    }
    Ok(out)
}

/// libsquashfs follows a directory entry that points back at an ancestor: the walk keeps
/// the inode numbers of the directories it is in and refuses a loop (as backhand does).
fn walk(node: &Node, out: &mut BTreeMap<PathBuf, Seen>, ancestors: &mut Vec<u32>) -> Result<(), String> {
    // squashfs-ng names nodes relative to the root ("" is the root itself).
    let path = Path::new("/").join(node.path().ok_or("a node without a path")?);
    let what = match node.data().map_err(|e| e.to_string())? {
        Data::File(mut f) => {
            let size = f.size();
            let (n, sha) = digest(&mut f).map_err(|e| format!("{}: {e}", path.display()))?;
            if n != size {
                return Err(format!("{}: {n} bytes read, inode says {size}", path.display()));
            }
            format!("file {size} {sha}")
        }
        Data::Dir(d) => {
            if ancestors.contains(&node.id()) {
                return Err(format!("{}: a directory inside itself", path.display()));
            }
            ancestors.push(node.id());
            for child in d {
                walk(&child.map_err(|e| e.to_string())?, out, ancestors)?;
            }
            ancestors.pop();
            "dir".into()
        }
        Data::Symlink(t) => format!("symlink {}", t.display()),
        Data::BlockDev(..) | Data::CharDev(..) => "device".into(),
        Data::Fifo => "fifo".into(),
        Data::Socket => "socket".into(),
    };
    let (uid, gid) = (node.uid().map_err(|e| e.to_string())?, node.gid().map_err(|e| e.to_string())?);
    if out.insert(path.clone(), Seen { what, mode: node.mode() & 0o7777, uid, gid }).is_some() {
        return Err(format!("{} reached twice", path.display()));
    }
    Ok(())
}

/// The tree as libsquashfs reads it. squashfs-ng unwraps inside `Read` on some errors:
/// a panic there counts as a refusal.
pub fn read_libsquashfs(path: &Path) -> Result<BTreeMap<PathBuf, Seen>, String> {
    let path = path.to_path_buf();
    std::panic::catch_unwind(move || {
        let a = Archive::open(&path).map_err(|e| e.to_string())?;
        let root = a.get("/").map_err(|e| e.to_string())?.ok_or("no root directory")?;
        let mut out = BTreeMap::new();
        walk(&root, &mut out, &mut Vec::new())?;
        Ok(out)
    })
    .unwrap_or_else(|_| Err("squashfs-ng panicked".into()))
}

/// Where the two readers' trees differ, one line per path (empty when they agree).
pub fn differences(a: &BTreeMap<PathBuf, Seen>, b: &BTreeMap<PathBuf, Seen>) -> Vec<String> {
    let paths: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .map(|p| format!("{}: backhand {:?}, libsquashfs {:?}", p.display(), a.get(p), b.get(p)))
        .collect()
}

/// Both readers read the squashfs at the start of `path` whole and agree; the number of
/// inodes compared, or what went wrong.
pub fn compare(path: &Path) -> Result<usize, String> {
    let ours = read_backhand(path).map_err(|e| format!("backhand: {e}"))?;
    let theirs = read_libsquashfs(path).map_err(|e| format!("libsquashfs: {e}"))?;
    let diff = differences(&ours, &theirs);
    if diff.is_empty() {
        Ok(ours.len())
    } else {
        Err(format!("the readers disagree:\n{}", diff.join("\n")))
    }
}

/// Run the oracle on a package the suite just built (bundles and bare squashfs images;
/// TR-069 packages carry no squashfs and pass through). Returns `path`.
pub fn built(path: &Path) -> PathBuf {
    if is_squashfs(path) {
        if let Err(e) = compare(path) {
            panic!("squashfs oracle on {}: {e}", path.display());
        }
    }
    path.to_path_buf()
}
