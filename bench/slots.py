#!/usr/bin/env python3
"""What a boot region costs an install, in the same run (step 17): one verity bundle with
an ext4 root image and a bootloader image, installed with the bootloader's class as
(1) a raw slot of its own (the baseline), (2) boot-raw-fallback (written once from the
stream, then copied to the other half with its digest checked), (3) boot-gpt-switch and
(4) boot-mbr-switch (the inactive half written, then the first partition entry switched:
the GPT's two headers and arrays, or the MBR).

Medians of N runs, warm page cache, peak RSS from GNU time; ratios against (1). Asserts
nothing. Usage: bench/slots.py [--size-mib 128] [--boot-mib 16] [--runs 3]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import keyring_device, run, verity_bundle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "henb-update")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--boot-mib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    w = tempfile.mkdtemp(prefix="henb-bench-slots-")
    try:
        pki = verity_bundle(w, a.size_mib, BIN, ROOT, os.path.join(w, "rootfs-only.raucb"))
        content = os.path.join(w, "content")
        with open(os.path.join(content, "boot.img"), "wb") as f, open("/dev/urandom", "rb") as r:
            f.write(r.read(a.boot_mib << 20))
        with open(os.path.join(content, "manifest.raucm"), "a") as f:
            f.write("\n[image.bootloader]\nfilename=boot.img\n")
        bundle = os.path.join(w, "u.raucb")
        subprocess.run([BIN, "bundle", "--format", "verity", "--cert", f"{pki}/signer-rsa.cert.pem", "--key",
                        f"{pki}/signer-rsa.key.pem", "--intermediate", f"{pki}/release-ca.cert.pem", content,
                        bundle], check=True)
        base = open(keyring_device(w, pki, a.size_mib)).read()
        b = a.boot_mib
        region = f"region-start=1M\nregion-size={2 * b}M\n"
        disk = os.path.join(w, "disk")
        # The disk: 1 MiB, the region (two halves), a data partition after it.
        first, half, data = 2048, b * 2048, 2048 + 2 * b * 2048
        cases = {
            "raw slot": ("raw", ""),
            "boot-raw-fallback": ("boot-raw-fallback", region),
            "boot-gpt-switch": ("boot-gpt-switch", region),
            "boot-mbr-switch": ("boot-mbr-switch", region),
        }
        confs = {}
        for name, (kind, extra) in cases.items():
            dev = os.path.join(w, "bootslot") if kind == "raw" else disk
            c = os.path.join(w, f"{kind}.conf")
            with open(c, "w") as f:
                f.write(base + f"[slot.bootloader.0]\ndevice={dev}\ntype={kind}\n{extra}")
            confs[name] = c
        with open(os.path.join(w, "bootslot"), "wb") as f:
            f.truncate(b << 20)

        def fresh_disk(kind):
            with open(disk, "wb") as f:
                f.truncate((2 * b + 8) << 20)
            if kind == "boot-gpt-switch":
                subprocess.run(["sgdisk", f"-n1:{first}:{first + half - 1}", f"-n2:{data}:0", disk], check=True,
                               stdout=subprocess.DEVNULL)
            elif kind == "boot-mbr-switch":
                subprocess.run(["sfdisk", "-q", disk], check=True, input=f"label: dos\nstart={first}, size={half}\n"
                               f"start={data}\n".encode())
        results = {name: [] for name in cases}
        for _ in range(a.runs):  # interleaved: same conditions for each case
            for name, (kind, _) in cases.items():
                fresh_disk(kind)
                shutil.rmtree(os.path.join(w, "data"), ignore_errors=True)
                results[name].append(run([BIN, "--conf", confs[name], "--override-boot-slot", "A", "install",
                                          bundle]))
        t0 = statistics.median(x[0] for x in results["raw slot"])
        print(f"{a.size_mib} MiB ext4 root + {a.boot_mib} MiB bootloader in a verity bundle, medians of {a.runs}, "
              f"{os.cpu_count()} cores")
        for name in cases:
            t = statistics.median(x[0] for x in results[name])
            rss = max(x[1] for x in results[name])
            print(f"{name:20s} {t:7.3f} s  ratio {t / t0:5.2f}  peak RSS {rss:6.1f} MiB")
    finally:
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
