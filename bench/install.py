#!/usr/bin/env python3
"""Benchmark `henb-update install` of a verity bundle (1 GiB ext4 image, mksquashfs
defaults) against the naive baseline `unsquashfs -cat BUNDLE IMAGE > slot && openssl dgst
-sha256 slot` (which checks no signature), in the same run.

Medians of N runs, warm page cache, peak RSS from GNU time; file-backed slots, a GRUB
environment, roots from a keyring; then the same install on a device whose roots are in
a swtpm and which has measured boot (reference values committed to the TPM policy before
the switch), to show what the TPM side costs. rauc 1.8 cannot be
the third contender here: installing a verity bundle needs device-mapper, which this
machine's kernel lacks. With --baseline-bin OTHER, another build of the agent (an older
commit) runs the keyring install (interleaved with this build's) and the TPM part in the
same run, and the ratios say what changed.
Usage: bench/install.py [--size-mib 1024] [--runs 3] [--content random|half-zero]
[--baseline-bin PATH]. Asserts nothing.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import keyring_device, run, verity_bundle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "henb-update")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--content", choices=["random", "half-zero"], default="random")
    ap.add_argument("--baseline-bin", help="another henb-update build, timed in the same run (keyring and TPM installs)")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    w = tempfile.mkdtemp(prefix="henb-bench-install-")
    try:
        bundle = os.path.join(w, "u.raucb")
        pki = verity_bundle(w, a.size_mib, BIN, ROOT, bundle, a.content)
        content = os.path.join(w, "content")
        conf = keyring_device(w, pki, a.size_mib)
        with open(os.path.join(w, "naive-slot"), "wb") as f:
            f.truncate(a.size_mib << 20)
        subprocess.run(["cat", bundle], stdout=subprocess.DEVNULL, check=True)
        naive = f"unsquashfs -q -cat {bundle} rootfs.ext4 > {w}/naive-slot && openssl dgst -sha256 {w}/naive-slot"
        base = [run(naive, shell=True) for _ in range(a.runs)]
        ours, theirs = [], []
        for _ in range(a.runs):  # interleaved with the baseline's, when there is one: same conditions
            ours.append(run([BIN, "--conf", conf, "--override-boot-slot", "A", "install", bundle]))
            if a.baseline_bin:
                theirs.append(run([a.baseline_bin, "--conf", conf, "--override-boot-slot", "A", "install", bundle]))
        with open(conf, "a") as f:
            f.write("[install]\nverify-written=true\n")
        back = [run([BIN, "--conf", conf, "--override-boot-slot", "A", "install", bundle]) for _ in range(a.runs)]
        b, o = statistics.median(x[0] for x in base), statistics.median(x[0] for x in ours)
        rb = statistics.median(x[0] for x in back)
        print(f"{a.size_mib} MiB ext4 image ({a.content}) in a verity bundle of {os.path.getsize(bundle)} bytes, "
              f"medians of {a.runs}, {os.cpu_count()} cores")
        print(f"naive unsquashfs+openssl: {b:.3f} s (peak RSS {max(x[1] for x in base):.1f} MiB)")
        print(f"henb-update install:      {o:.3f} s (peak RSS {max(x[1] for x in ours):.1f} MiB)  ratio {o / b:.2f}")
        if theirs:
            t = statistics.median(x[0] for x in theirs)
            print(f"  baseline {a.baseline_bin}: {t:.3f} s (peak RSS {max(x[1] for x in theirs):.1f} MiB)  "
                  f"ratio {t / b:.2f}; this build / baseline {o / t:.2f}")
        print(f"  with verify-written:    {rb:.3f} s (peak RSS {max(x[1] for x in back):.1f} MiB)  ratio {rb / b:.2f}")
        mb, mb_steps = measured_boot_runs(w, pki, content, a.runs, BIN, "mb")
        m = statistics.median(x[0] for x in mb)
        print(f"  TPM roots + measured boot: {m:.3f} s (peak RSS {max(x[1] for x in mb):.1f} MiB)  ratio {m / b:.2f}"
              f"  ({m / o:.2f} of the keyring install)")
        for name, t in mb_steps:
            print(f"    {name}: {t * 1000:.0f} ms")
        if a.baseline_bin:
            bl, bl_steps = measured_boot_runs(w, pki, content, a.runs, a.baseline_bin, "bl")
            n = statistics.median(x[0] for x in bl)
            print(f"  the same with {a.baseline_bin}: {n:.3f} s (peak RSS {max(x[1] for x in bl):.1f} MiB); "
                  f"this build / baseline {m / n:.2f}")
            for (name, t), (_, u) in zip(mb_steps, bl_steps):
                print(f"    {name}: {u * 1000:.0f} ms baseline, this build / baseline {t / u:.2f}")
    finally:
        shutil.rmtree(w)


def free(port):
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def measured_boot_runs(w, pki, content, runs, BIN, tag):
    """Install with the roots in a swtpm and [measured-boot] on; also time boot-check and
    secret unseal (the TPM-only steps)."""
    import socket, time
    # An even port below the ephemeral range (32768..60999), both it and the next free.
    port = next(p for p in range(20000 + (os.getpid() % 2000) * 2, 32000, 2) if free(p) and free(p + 1))
    tdir = os.path.join(w, f"tpm-{tag}")
    os.mkdir(tdir)
    tpm = subprocess.Popen(["swtpm", "socket", "--tpm2", "--flags", "not-need-init,startup-clear", "--tpmstate",
                            f"dir={tdir}", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1", "--ctrl",
                            f"type=tcp,port={port + 1},bindaddr=127.0.0.1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until swtpm listens (slow under load)
            try:
                socket.create_connection(("127.0.0.1", port + 1), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        tcti = f"swtpm:host=127.0.0.1,port={port}"
        rv = os.path.join(w, f"rv-{tag}")
        with open(rv, "w") as f:
            f.write("pcr.8.A=" + "00" * 32 + "\npcr.8.B=" + "00" * 32 + "\npcr.9=" + "00" * 32 + "\n")
        bundle = os.path.join(w, f"{tag}.raucb")
        subprocess.run([BIN, "bundle", "--format", "verity", "--cert", f"{pki}/signer-rsa.cert.pem", "--key",
                        f"{pki}/signer-rsa.key.pem", "--intermediate", f"{pki}/release-ca.cert.pem",
                        "--reference-values", rv, content, bundle], check=True)
        # The factory flow: an owner authorization set in the TPM and kept in a root-only file.
        auth = os.path.join(w, f"{tag}-owner-auth")
        fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, os.urandom(16).hex().encode())
        os.close(fd)
        subprocess.run(["tpm2_changeauth", "-c", "owner", f"file:{auth}", "-T", tcti], check=True,
                       env=dict(os.environ, TSS2_LOG="all+none"))
        conf = os.path.join(w, f"{tag}.conf")
        with open(conf, "w") as f:
            f.write(f"[system]\ncompatible=bench\nbootloader=grub\ngrubenv={w}/grubenv\ndata-directory={w}/{tag}data\n"
                    f"[keyring]\ncheck-purpose=codesign\n[tpm]\ntcti={tcti}\nowner-auth-file={auth}\n[measured-boot]\n"
                    f"[slot.rootfs.0]\ndevice={w}/slotA\ntype=ext4\nbootname=A\n"
                    f"[slot.rootfs.1]\ndevice={w}/slotB\ntype=ext4\nbootname=B\n")
        cli = [BIN, "--conf", conf, "--override-boot-slot", "A"]
        env = dict(os.environ, TSS2_LOG="all+none")
        subprocess.run(cli + ["trust", "provision", "--root", f"{pki}/root.cert.pem"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run(cli + ["policy", "init", "--from-pcrs", "8,9"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(cli + ["secret", "seal", "bench"], input=b"x" * 32, check=True, env=env,
                       stdout=subprocess.DEVNULL)
        results = [run(cli + ["install", bundle]) for _ in range(runs)]
        steps = []
        for name, args in [("boot-check", ["boot-check"]), ("secret unseal", ["secret", "unseal", "bench"])]:
            ts = []
            for _ in range(runs):
                t0 = time.monotonic()
                subprocess.run(cli + args, check=True, env=env, stdout=subprocess.DEVNULL)
                ts.append(time.monotonic() - t0)
            steps.append((name, statistics.median(ts)))
        return results, steps
    finally:
        tpm.kill()
        tpm.wait()


if __name__ == "__main__":
    main()
