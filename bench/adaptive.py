#!/usr/bin/env python3
"""Benchmark an adaptive update against the full streaming install of the same image, in
the same run: a 256 MiB ext4 image (mke2fs -d, reproducible) whose files are random
data, and the same image with 2 % of its files changed; both in verity bundles served by
Debian's nginx on 127.0.0.1. The booted slot A holds the old image; slot B is empty
(zeros) before each install unless said otherwise.

- full:     the new image in a bundle without `adaptive`, streamed whole;
- adaptive: the new image with `adaptive=block-hash-index`, A's index stored
            (`henb-update slot index`, as after any install);
- adaptive, B old: the same, B holding the old image with its index (the device after
            an earlier update): unchanged blocks are neither fetched nor written;
- adaptive, no index: the same as adaptive, A's index not stored (hashed during the
            install).

Medians of N runs, interleaved; peak RSS from GNU time; bytes fetched and requests from
`install --json` ("moved"). Usage: bench/adaptive.py [--size-mib 256] [--changed 0.02]
[--runs 3] [--block-size 128K]. Asserts nothing.
"""
import argparse, json, os, random, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import keyring_device, nginx as start_nginx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "henb-update")
EPOCH = 1_600_000_000



def ext4(w, name, files, size_mib):
    """An ext4 image of `files` ({name: bytes}), made reproducibly."""
    root = os.path.join(w, name + ".root")
    os.mkdir(root)
    for n, data in files.items():
        p = os.path.join(root, n)
        with open(p, "wb") as f:
            f.write(data)
        os.utime(p, (EPOCH, EPOCH))
    os.utime(root, (EPOCH, EPOCH))
    img = os.path.join(w, name)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-U", "4f3c1a9e-0d2b-4c55-9a51-6d1e2f3a4b5c",
                    "-E", "hash_seed=0b6f7a2c-1d3e-4f50-8a9b-0c1d2e3f4a5b,root_owner=0:0", "-d", root, img,
                    f"{size_mib}M"], check=True, env=dict(os.environ, E2FSPROGS_FAKE_TIME=str(EPOCH)))
    shutil.rmtree(root)
    return img


def bundle(w, pki, img, adaptive, out, block_size):
    c = os.path.join(w, "content")
    os.mkdir(c)
    os.link(img, os.path.join(c, "rootfs.ext4"))
    with open(os.path.join(c, "manifest.raucm"), "w") as f:
        f.write("[update]\ncompatible=bench\nversion=2\n\n[image.rootfs]\nfilename=rootfs.ext4\n"
                + ("adaptive=block-hash-index\n" if adaptive else ""))
    cmd = [BIN, "bundle", "--format", "verity", "--cert", f"{pki}/signer-rsa.cert.pem", "--key",
           f"{pki}/signer-rsa.key.pem", "--intermediate", f"{pki}/release-ca.cert.pem"]
    if block_size:
        cmd += ["--block-size", block_size]
    subprocess.run(cmd + [c, out], check=True)
    shutil.rmtree(c)


def install(conf, url, w):
    """(seconds, peak RSS MiB, moved) of one install of `url`."""
    rss = os.path.join(w, "rss")
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss, BIN, "--conf", conf, "--override-boot-slot", "A",
                        "install", "--json", url], capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"install {url} failed: {p.stdout} {p.stderr}")
    with open(rss) as f:
        peak = int(f.read().strip().splitlines()[-1]) / 1024
    return dt, peak, json.loads(p.stdout)["moved"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--changed", type=float, default=0.02)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--block-size", default=None, help="mksquashfs -b of the bundles (default 128K)")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    w = tempfile.mkdtemp(prefix="henb-bench-adaptive-")
    nginx = None
    try:
        pki = os.path.join(w, "pki")
        subprocess.run([os.path.join(ROOT, "tests/pki/make-pki.sh"), pki], check=True, stdout=subprocess.DEVNULL)
        # Files of 16 KiB to 1 MiB filling about 80 % of the image.
        rnd = random.Random(14)
        files, total = {}, 0
        while total < a.size_mib * 0.8 * (1 << 20):
            n = rnd.randint(16, 1024) << 10
            files[f"f{len(files):05}.bin"] = rnd.randbytes(n)
            total += n
        old = ext4(w, "old.ext4", files, a.size_mib)
        changed = rnd.sample(sorted(files), max(1, round(len(files) * a.changed)))
        for n in changed:
            files[n] = rnd.randbytes(len(files[n]))
        new = ext4(w, "new.ext4", files, a.size_mib)
        del files
        www = os.path.join(w, "www")
        os.mkdir(www)
        bundle(w, pki, new, False, os.path.join(www, "full.raucb"), a.block_size)
        bundle(w, pki, new, True, os.path.join(www, "adaptive.raucb"), a.block_size)
        conf = keyring_device(w, pki, a.size_mib)
        with open(old, "rb") as src, open(os.path.join(w, "slotA"), "r+b") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        nginx, port = start_nginx(w, www)
        for b in ("full.raucb", "adaptive.raucb"):
            subprocess.run(["cat", os.path.join(www, b)], stdout=subprocess.DEVNULL, check=True)
        subprocess.run([BIN, "--conf", conf, "--override-boot-slot", "A", "slot", "index"], check=True,
                       stdout=subprocess.DEVNULL)
        a_index = os.path.join(w, "data", "slot.rootfs.0")
        kept = os.path.join(w, "a-index")
        shutil.copytree(a_index, kept)

        def fresh(indexed, b_old=False):
            # B empty (or holding the old image, with its index); A's index stored or not.
            with open(os.path.join(w, "slotB"), "r+b") as f:
                f.truncate(0)
                f.truncate(a.size_mib << 20)
            b_index = os.path.join(w, "data", "slot.rootfs.1")
            shutil.rmtree(a_index, ignore_errors=True)
            shutil.rmtree(b_index, ignore_errors=True)
            if indexed:
                shutil.copytree(kept, a_index)
            if b_old:
                with open(old, "rb") as src, open(os.path.join(w, "slotB"), "r+b") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                shutil.copytree(kept, b_index)
            subprocess.run(["grub-editenv", os.path.join(w, "grubenv"), "set", "ORDER=A B"], check=True)
            os.sync()  # the last run's writeback does not fall into this one

        url = f"http://127.0.0.1:{port}/"
        results = {"full": [], "adaptive": [], "adaptive, B old": [], "adaptive, no index": []}
        for _ in range(a.runs):
            fresh(False)
            results["full"].append(install(conf, url + "full.raucb", w))
            fresh(True)
            results["adaptive"].append(install(conf, url + "adaptive.raucb", w))
            fresh(True, b_old=True)
            results["adaptive, B old"].append(install(conf, url + "adaptive.raucb", w))
            fresh(False)
            results["adaptive, no index"].append(install(conf, url + "adaptive.raucb", w))
        sizes = {k: os.path.getsize(os.path.join(www, k + ".raucb")) for k in ("full", "adaptive")}
        print(f"{a.size_mib} MiB ext4 image, {len(changed)} of {len(changed) / a.changed:.0f} files changed "
              f"({a.changed:.0%}); squashfs block size {a.block_size or '128K'}; bundles: full {sizes['full']}, "
              f"adaptive {sizes['adaptive']} bytes; medians of {a.runs}, {os.cpu_count()} cores, interleaved")
        base = statistics.median(r[0] for r in results["full"])
        for k, rs in results.items():
            t = statistics.median(r[0] for r in rs)
            m = rs[-1][2]
            size = sizes["full" if k == "full" else "adaptive"]
            print(f"{k:20} {t:7.3f} s  x{t / base:.2f} of full  peak RSS {max(r[1] for r in rs):5.1f} MiB  "
                  f"fetched {m['fetched']} bytes ({m['fetched'] / size:.4f} of the bundle) in {m['requests']} "
                  f"requests; image bytes reused {m['reused']}, zero {m['zero']}, from the bundle {m['from-package']}")
    finally:
        if nginx:
            nginx.kill()
            nginx.wait()
        shutil.rmtree(w)


if __name__ == "__main__":
    main()
