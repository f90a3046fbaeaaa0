#!/usr/bin/env python3
"""Benchmark `henb-update info` on 1 GiB plain and verity bundles against
`openssl dgst -sha256` of the same file, in the same run.

Reports medians of N runs (page cache warm: every tool reads the same cached bytes),
the ratio to openssl, and each command's peak RSS (wait4). Usage:
    bench/info.py [--size-mib 1024] [--runs 3] [--content random|half-zero]
No timing is asserted: this is a measurement, not a test.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "henb-update")


def measure(cmd, runs):
    res = [run(cmd) for _ in range(runs)]
    return statistics.median(r[0] for r in res), max(r[1] for r in res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--content", choices=["random", "half-zero"], default="random")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="henb-bench-")
    try:
        pki = os.path.join(work, "pki")
        subprocess.run([os.path.join(ROOT, "tests/pki/make-pki.sh"), pki], check=True, stdout=subprocess.DEVNULL)
        content = os.path.join(work, "content")
        os.mkdir(content)
        img = os.path.join(content, "rootfs.img")
        with open(img, "wb") as f, open("/dev/urandom", "rb") as r:
            for i in range(a.size_mib):
                chunk = r.read(1 << 20)
                if a.content == "half-zero" and i % 2:
                    chunk = bytes(1 << 20)
                f.write(chunk)
        with open(os.path.join(content, "manifest.raucm"), "w") as f:
            f.write("[update]\ncompatible=bench\nversion=1\n\n[image.rootfs]\nfilename=rootfs.img\n")
        conf = os.path.join(work, "system.conf")
        with open(conf, "w") as f:
            f.write(f"[system]\ncompatible=bench\n[keyring]\npath={pki}/keyring.pem\ncheck-purpose=codesign\n")
        rows = []
        for fmt in ["plain", "verity", "tr069"]:
            out = os.path.join(work, f"b.{fmt}")
            subprocess.run([BIN, "bundle", "--format", fmt, "--cert", f"{pki}/signer-rsa.cert.pem", "--key",
                            f"{pki}/signer-rsa.key.pem", "--intermediate", f"{pki}/release-ca.cert.pem", content, out],
                           check=True)
            subprocess.run(["cat", out], stdout=subprocess.DEVNULL, check=True)  # warm the cache
            base, base_rss = measure(["openssl", "dgst", "-sha256", out], a.runs)
            ours, rss = measure([BIN, "--conf", conf, "info", out], a.runs)
            rows.append((fmt, os.path.getsize(out), base, base_rss, ours, rss))
        print(f"{a.size_mib} MiB image ({a.content}), medians of {a.runs}, {os.cpu_count()} cores")
        print(f"{'format':8} {'bytes':>12} {'openssl s':>10} {'rss MiB':>8} {'info s':>8} {'rss MiB':>8} {'ratio':>6}")
        for fmt, size, base, base_rss, ours, rss in rows:
            print(f"{fmt:8} {size:12d} {base:10.3f} {base_rss:8.1f} {ours:8.3f} {rss:8.1f} {ours / base:6.2f}")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
