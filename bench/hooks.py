#!/usr/bin/env python3
"""What bundle hooks cost an install, in the same run: a verity bundle of an ext4 image
installed (1) without hooks, (2) with a post-install hook that mounts nothing (raw slot)
and exits 0, (3) with a post-install hook on an ext4 slot (the slot is mounted through a
loop device for it), (4) with an install hook that writes the image itself with dd
(the image is copied out of the bundle, digest checked, then dd copies it to the slot).

Medians of N runs, warm page cache, peak RSS from GNU time; ratios against (1). Needs
root (mount, loop devices). Asserts nothing.
Usage: bench/hooks.py [--size-mib 256] [--runs 3]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import keyring_device, run, verity_bundle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "henb-update")

HOOK = """#!/bin/sh
case "$1" in
  slot-post-install) exit 0 ;;
  slot-install) dd if="$RAUC_IMAGE_NAME" of="$RAUC_SLOT_DEVICE" bs=1M conv=notrunc status=none ;;
  *) exit 1 ;;
esac
"""


def hooked(w, pki, base_content, name, image_hooks):
    """A copy of the content with hook.sh and `hooks=` on the image, bundled."""
    tree = os.path.join(w, name)
    shutil.copytree(base_content, tree)
    with open(os.path.join(tree, "hook.sh"), "w") as f:
        f.write(HOOK)
    os.chmod(os.path.join(tree, "hook.sh"), 0o755)
    with open(os.path.join(tree, "manifest.raucm"), "w") as f:
        f.write("[update]\ncompatible=bench\nversion=1\n\n[hooks]\nfilename=hook.sh\n\n"
                f"[image.rootfs]\nfilename=rootfs.ext4\nhooks={image_hooks}\n")
    out = os.path.join(w, f"{name}.raucb")
    subprocess.run([BIN, "bundle", "--format", "verity", "--cert", f"{pki}/signer-rsa.cert.pem", "--key",
                    f"{pki}/signer-rsa.key.pem", "--intermediate", f"{pki}/release-ca.cert.pem", tree, out],
                   check=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    w = tempfile.mkdtemp(prefix="henb-bench-hooks-")
    try:
        plain = os.path.join(w, "u.raucb")
        pki = verity_bundle(w, a.size_mib, BIN, ROOT, plain)
        content = os.path.join(w, "content")
        post = hooked(w, pki, content, "post", "post-install")
        inst = hooked(w, pki, content, "inst", "install")
        conf = keyring_device(w, pki, a.size_mib)
        with open(conf) as f:
            text = f.read().replace("[system]\n", f"[system]\nmountprefix={w}/mnt\n")
        raw = os.path.join(w, "raw.conf")
        with open(raw, "w") as f:
            f.write(text.replace("type=ext4", "type=raw"))
        with open(conf, "w") as f:
            f.write(text)
        cases = [("no hooks", raw, plain), ("post-install, raw slot", raw, post),
                 ("post-install, ext4 slot mounted", conf, post), ("install hook (dd)", raw, inst)]
        results = {name: [] for name, _, _ in cases}
        for _ in range(a.runs):  # interleaved: same conditions for each case
            for name, c, b in cases:
                results[name].append(run([BIN, "--conf", c, "--override-boot-slot", "A", "install", b]))
        base = statistics.median(x[0] for x in results["no hooks"])
        print(f"{a.size_mib} MiB ext4 image in a verity bundle, medians of {a.runs}, {os.cpu_count()} cores")
        for name, _, _ in cases:
            t = statistics.median(x[0] for x in results[name])
            rss = max(x[1] for x in results[name])
            print(f"{name:34s} {t:7.3f} s  ratio {t / base:5.2f}  peak RSS {rss:6.1f} MiB")
    finally:
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
