#!/usr/bin/python3
"""A FUSE file system whose files change between reads (the review's finding 2).

    switchfs.py MOUNTPOINT NAME=FIRST,THEN [...]

Serves each NAME read-only. Its bytes are those of the file FIRST until as many bytes
as it has were read (one full pass, e.g. a hash), then those of THEN: what a network or
FUSE file system can do behind the kernel's back. direct_io keeps the page cache out.
Debian's python3-fusepy; runs in the foreground until unmounted.
"""
import errno
import stat
import sys

from fusepy import FUSE, FuseOSError, Operations


class SwitchFS(Operations):
    def __init__(self, files):
        self.files = {}
        for name, (first, then) in files.items():
            a, b = open(first, "rb").read(), open(then, "rb").read()
            if len(a) != len(b):
                sys.exit(f"{name}: {first} and {then} differ in size")
            self.files["/" + name] = {"first": a, "then": b, "read": 0}

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        f = self.files.get(path)
        if f is None:
            raise FuseOSError(errno.ENOENT)
        return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": len(f["first"])}

    def readdir(self, path, fh):
        return [".", ".."] + [p[1:] for p in self.files]

    def open(self, path, flags):
        if path not in self.files:
            raise FuseOSError(errno.ENOENT)
        if flags & 3 != 0:
            raise FuseOSError(errno.EROFS)
        return 0

    def read(self, path, size, offset, fh):
        f = self.files[path]
        data = f["first"] if f["read"] < len(f["first"]) else f["then"]
        out = data[offset : offset + size]
        f["read"] += len(out)
        return out


if __name__ == "__main__":
    files = {}
    for spec in sys.argv[2:]:
        name, paths = spec.split("=", 1)
        first, then = paths.split(",", 1)
        files[name] = (first, then)
    FUSE(SwitchFS(files), sys.argv[1], foreground=True, ro=True, direct_io=True)
