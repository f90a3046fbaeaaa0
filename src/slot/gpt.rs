//! The GUID partition table of a `boot-gpt-switch` disk (UEFI 2.10 §5.3): both copies
//! read and checked, and the one change the slot type makes, the first entry's LBAs,
//! planned so that a power cut at any point leaves at least one whole copy.
//!
//! Why not the `gpt` crate (4.1): it writes both entry arrays before either header and
//! syncs once at the end, so a cut in between leaves two copies whose array CRCs fail
//! (no bootable table), it rewrites the arrays at LBA 2 whatever the header says, and it
//! does not check the arrays' CRCs when reading. This is the update's own switch, the
//! part of the product that must not brick the device, so it is written here:
//!
//! 1. the backup entry array, then the backup header (its array CRC), then sync;
//! 2. the primary entry array, then the primary header, then sync.
//!
//! Until the backup header is written the primary copy is whole (old); from then on the
//! backup copy is whole (new); once the primary header is written both are. Firmware and
//! the kernel take the backup copy when the primary one fails its CRCs (UEFI §5.3.2).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The most bytes an entry array may have (the usual is 128 entries × 128 bytes).
const MAX_ARRAY: u64 = 1 << 20;

/// The smallest header (UEFI table 5.5: 92 bytes).
const HEADER_SIZE: usize = 92;

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("GPT: {why}"))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// One copy's header (UEFI table 5.5), checked.
#[derive(Debug, Clone)]
struct Header {
    /// The header's sector as read.
    sector: Vec<u8>,
    /// `HeaderSize`.
    size: usize,
    /// `AlternateLBA`.
    alternate: u64,
    /// `FirstUsableLBA`, `LastUsableLBA`.
    usable: (u64, u64),
    /// `PartitionEntryLBA`.
    entries_lba: u64,
    /// `NumberOfPartitionEntries`, `SizeOfPartitionEntry`.
    count: u32,
    entry_size: u32,
}

impl Header {
    /// The header in `sector`, read at `lba`: signature, size, CRC, `MyLBA` and entry
    /// shape checked.
    fn parse(sector: Vec<u8>, lba: u64, which: &str) -> io::Result<Self> {
        if sector.len() < HEADER_SIZE || &sector[..8] != b"EFI PART" {
            return Err(bad(format!("no {which} header at LBA {lba}")));
        }
        let size = u32_at(&sector, 12) as usize;
        if !(HEADER_SIZE..=sector.len()).contains(&size) {
            return Err(bad(format!("{which} header size {size}")));
        }
        if crc(&sector[..size], 16) != u32_at(&sector, 16) {
            return Err(bad(format!("{which} header CRC does not match")));
        }
        if u64_at(&sector, 24) != lba {
            return Err(bad(format!("{which} header at LBA {lba} says it is at LBA {}", u64_at(&sector, 24))));
        }
        let (count, entry_size) = (u32_at(&sector, 80), u32_at(&sector, 84));
        if entry_size < 128 || !entry_size.is_power_of_two() || u64::from(count) * u64::from(entry_size) > MAX_ARRAY {
            return Err(bad(format!("{which} header: {count} entries of {entry_size} bytes")));
        }
        Ok(Self {
            alternate: u64_at(&sector, 32),
            usable: (u64_at(&sector, 40), u64_at(&sector, 48)),
            entries_lba: u64_at(&sector, 72),
            count,
            entry_size,
            size,
            sector,
        })
    }

    fn array_bytes(&self) -> u64 {
        u64::from(self.count) * u64::from(self.entry_size)
    }

    /// The header with `array_crc` as its `PartitionEntryArrayCRC32`, its own CRC redone.
    fn with_array_crc(&self, array_crc: u32) -> Vec<u8> {
        let mut s = self.sector.clone();
        s[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let c = crc(&s[..self.size], 16);
        s[16..20].copy_from_slice(&c.to_le_bytes());
        s
    }
}

/// CRC32 of `b` with the 4 bytes at `zeroed` taken as zero (`usize::MAX`: none).
fn crc(b: &[u8], zeroed: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if zeroed < b.len() {
        h.update(&b[..zeroed]);
        h.update(&[0; 4]);
        h.update(&b[zeroed + 4..]);
    } else {
        h.update(b);
    }
    h.finalize()
}

/// A disk's GPT, both copies whole and alike.
#[derive(Debug, Clone)]
pub struct Gpt {
    sector: u64,
    primary: Header,
    backup: Header,
    /// The entry array (both copies hold these bytes).
    array: Vec<u8>,
}

/// One write of a planned change: `bytes` at byte offset `at`, then a sync if `sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Byte offset on the disk.
    pub at: u64,
    /// What is written.
    pub bytes: Vec<u8>,
    /// Sync the disk after this write.
    pub sync: bool,
}

impl Gpt {
    /// Read and check the GPT of a disk of `device_size` bytes with `sector`-byte
    /// sectors: both headers (CRC, `MyLBA`, each other's `AlternateLBA`), the backup at
    /// the disk's last LBA, both arrays (CRC, outside the usable LBAs) and equal.
    ///
    /// Errors (`InvalidData`, naming what failed): a damaged or missing copy, copies that
    /// differ, an array in the usable area. `sgdisk -v` shows the same; `sgdisk -e`
    /// moves a backup left short of the disk's end.
    pub fn read(f: &File, sector: u64, device_size: u64) -> io::Result<Self> {
        let n = sector as usize;
        let last =
            (device_size / sector).checked_sub(1).filter(|l| *l > 2).ok_or_else(|| bad("disk too small".into()))?;
        let sector_at = |lba: u64| -> io::Result<Vec<u8>> {
            let mut b = vec![0u8; n];
            f.read_exact_at(&mut b, lba * sector)?;
            Ok(b)
        };
        let primary = Header::parse(sector_at(1)?, 1, "primary")?;
        if primary.alternate != last {
            return Err(bad(format!(
                "the backup header is at LBA {}, not at the disk's last LBA {last} (sgdisk -e moves it)",
                primary.alternate
            )));
        }
        let backup = Header::parse(sector_at(last)?, last, "backup")?;
        if backup.alternate != 1
            || backup.usable != primary.usable
            || (backup.count, backup.entry_size) != (primary.count, primary.entry_size)
            || backup.sector[56..72] != primary.sector[56..72]
        {
            return Err(bad("the primary and backup headers disagree (sgdisk -v shows how)".into()));
        }
        let (first_usable, last_usable) = primary.usable;
        if first_usable > last_usable || last_usable >= last {
            return Err(bad(format!("usable LBAs {first_usable}..{last_usable}")));
        }
        let sectors = primary.array_bytes().div_ceil(sector);
        let array_at = |h: &Header, which: &str, lo: u64, hi: u64| -> io::Result<Vec<u8>> {
            let end = h.entries_lba.checked_add(sectors).filter(|e| h.entries_lba >= lo && *e <= hi);
            if end.is_none() {
                return Err(bad(format!(
                    "the {which} entry array at LBA {} is not between LBA {lo} and {hi}",
                    h.entries_lba
                )));
            }
            let mut a = vec![0u8; h.array_bytes() as usize];
            f.read_exact_at(&mut a, h.entries_lba * sector)?;
            if crc(&a, usize::MAX) != u32_at(&h.sector, 88) {
                return Err(bad(format!("the {which} entry array's CRC does not match")));
            }
            Ok(a)
        };
        let array = array_at(&primary, "primary", 2, first_usable)?;
        if array_at(&backup, "backup", last_usable + 1, last)? != array {
            return Err(bad("the primary and backup entry arrays differ".into()));
        }
        let g = Self { sector, primary, backup, array };
        for (i, e) in g.entries().iter().enumerate() {
            if let Some((a, b)) = e {
                if a > b || *a < first_usable || *b > last_usable {
                    return Err(bad(format!("entry {} spans LBA {a}..{b}, outside the usable LBAs", i + 1)));
                }
            }
        }
        Ok(g)
    }

    /// `(FirstUsableLBA, LastUsableLBA)`.
    pub fn usable(&self) -> (u64, u64) {
        self.primary.usable
    }

    /// `(StartingLBA, EndingLBA)` of each entry by number from 1 up to the last used
    /// one; `None` for an unused entry (type GUID zero).
    pub fn entries(&self) -> Vec<Option<(u64, u64)>> {
        let mut out: Vec<Option<(u64, u64)>> = self
            .array
            .chunks_exact(self.primary.entry_size as usize)
            .map(|e| (e[..16] != [0; 16]).then(|| (u64_at(e, 32), u64_at(e, 40))))
            .collect();
        while out.last().is_some_and(Option::is_none) {
            out.pop();
        }
        out
    }

    /// The writes that point the first entry at LBAs `first..=last`, in the order that
    /// keeps one copy whole at every point (see the module's documentation).
    ///
    /// Errors: the first entry is unused, or the LBAs are not usable ones.
    pub fn switch_first(&self, first: u64, last: u64) -> io::Result<Vec<Write>> {
        if self.entries().first().copied().flatten().is_none() {
            return Err(bad("the first entry is unused".into()));
        }
        let (lo, hi) = self.usable();
        if first > last || first < lo || last > hi {
            return Err(bad(format!("LBA {first}..{last} is outside the usable LBAs {lo}..{hi}")));
        }
        let mut array = self.array.clone();
        array[32..40].copy_from_slice(&first.to_le_bytes());
        array[40..48].copy_from_slice(&last.to_le_bytes());
        let array_crc = crc(&array, usize::MAX);
        let w = |lba: u64, bytes: Vec<u8>, sync: bool| Write { at: lba * self.sector, bytes, sync };
        Ok(vec![
            w(self.backup.entries_lba, array.clone(), false),
            w(self.primary.alternate, self.backup.with_array_crc(array_crc), true),
            w(self.primary.entries_lba, array, false),
            w(1, self.primary.with_array_crc(array_crc), true),
        ])
    }
}

/// Make `writes` on `f` in order, syncing (`fdatasync`) where a write asks to.
///
/// Errors: I/O.
pub fn apply(f: &File, writes: &[Write]) -> io::Result<()> {
    for w in writes {
        f.write_all_at(&w.bytes, w.at)?;
        if w.sync {
            f.sync_data()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A 16 MiB disk made by sgdisk: entry 1 at LBA 2048..4095, entry 2 at 8192..10239.
    fn disk(dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("disk");
        File::create(&p).unwrap().set_len(16 << 20).unwrap();
        let o = Command::new("sgdisk").args(["-n", "1:2048:4095", "-n", "2:8192:10239"]).arg(&p).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        p
    }

    fn read(p: &std::path::Path) -> io::Result<Gpt> {
        Gpt::read(&File::open(p).unwrap(), 512, 16 << 20)
    }

    /// Each copy on its own: the primary header and array, or the backup's.
    fn copy_valid(p: &std::path::Path, lba: u64) -> Option<(u64, u64)> {
        let f = File::open(p).unwrap();
        let mut s = vec![0u8; 512];
        f.read_exact_at(&mut s, lba * 512).unwrap();
        let h = Header::parse(s, lba, "copy").ok()?;
        let mut a = vec![0u8; h.array_bytes() as usize];
        f.read_exact_at(&mut a, h.entries_lba * 512).unwrap();
        (crc(&a, usize::MAX) == u32_at(&h.sector, 88)).then(|| (u64_at(&a, 32), u64_at(&a, 40)))
    }

    #[test]
    fn a_cut_at_any_write_leaves_one_whole_copy_and_sgdisk_reads_the_result() {
        let d = tempfile::tempdir().unwrap();
        let p = disk(d.path());
        let g = read(&p).unwrap();
        assert_eq!(g.entries(), vec![Some((2048, 4095)), Some((8192, 10239))]);
        let writes = g.switch_first(6144, 8191).unwrap();
        let before = std::fs::read(&p).unwrap();
        let last = 16 * 2048 - 1;
        for cut in 0..=writes.len() {
            std::fs::write(&p, &before).unwrap();
            apply(&File::options().write(true).open(&p).unwrap(), &writes[..cut]).unwrap();
            let (primary, backup) = (copy_valid(&p, 1), copy_valid(&p, last));
            let whole = [primary, backup].into_iter().flatten().collect::<Vec<_>>();
            assert!(!whole.is_empty(), "no whole copy after {cut} writes");
            assert!(whole.iter().all(|e| *e == (2048, 4095) || *e == (6144, 8191)), "{whole:?}");
        }
        assert_eq!(read(&p).unwrap().entries()[0], Some((6144, 8191)));
        let v = Command::new("sgdisk").arg("-v").arg(&p).output().unwrap();
        assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"), "{v:?}");
    }

    #[test]
    fn damaged_or_differing_copies_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = disk(d.path());
        let good = std::fs::read(&p).unwrap();
        let poke = |at: usize| {
            let mut b = good.clone();
            b[at] ^= 1;
            std::fs::write(&p, b).unwrap();
            read(&p).unwrap_err().to_string()
        };
        assert!(poke(512 + 20).contains("primary header CRC"), "header");
        assert!(poke(1024 + 33).contains("primary entry array's CRC"), "primary array");
        let backup_array = (16 << 20) - 512 - 128 * 128;
        assert!(poke(backup_array + 33).contains("backup entry array's CRC"), "backup array");
        assert!(poke((16 << 20) - 512 + 20).contains("backup header CRC"), "backup header");
        // A disk grown after partitioning: the backup is no longer at its end.
        std::fs::write(&p, &good).unwrap();
        File::options().write(true).open(&p).unwrap().set_len(32 << 20).unwrap();
        let e = Gpt::read(&File::open(&p).unwrap(), 512, 32 << 20).unwrap_err().to_string();
        assert!(e.contains("not at the disk's last LBA"), "{e}");
        let g = {
            std::fs::write(&p, &good).unwrap();
            read(&p).unwrap()
        };
        assert!(g.switch_first(10, 20).unwrap_err().to_string().contains("outside the usable"));
    }
}
