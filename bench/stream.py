#!/usr/bin/env python3
"""Benchmark a streaming install from a file server against the local install of the
same bundle, in the same run: a verity bundle of a 1 GiB ext4 image, served by Debian's
nginx on 127.0.0.1 (Range requests), installed with `henb-update install http://...`,
against `henb-update install BUNDLE` from the local file (warm page cache for both).
Medians of N runs, interleaved; peak RSS from GNU time; bytes fetched from the agent's
log (`fetched N bytes in R requests`). Usage: bench/stream.py [--size-mib 1024]
[--runs 3]. Asserts nothing.
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import keyring_device, nginx as start_nginx, run, verity_bundle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "henb-update")



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    w = tempfile.mkdtemp(prefix="henb-bench-stream-")
    nginx = None
    try:
        www = os.path.join(w, "www")
        os.mkdir(www)
        bundle = os.path.join(www, "u.raucb")
        pki = verity_bundle(w, a.size_mib, BIN, ROOT, bundle)
        shutil.rmtree(os.path.join(w, "content"))
        conf = keyring_device(w, pki, a.size_mib)
        nginx, port = start_nginx(w, www)
        url = f"http://127.0.0.1:{port}/u.raucb"
        subprocess.run(["cat", bundle], stdout=subprocess.DEVNULL, check=True)
        install = [BIN, "--conf", conf, "--override-boot-slot", "A", "install"]
        local, remote = [], []
        for _ in range(a.runs):
            local.append(run(install + [bundle]))
            remote.append(run(install + [url]))
        env = dict(os.environ, RUST_LOG="henb_update=info")
        log = subprocess.run(install + [url], env=env, capture_output=True, text=True, check=True).stderr
        m = re.search(r"fetched (\d+) bytes in (\d+) requests \((\d+) resumed\)", log)
        size = os.path.getsize(bundle)
        lt, rt = statistics.median(x[0] for x in local), statistics.median(x[0] for x in remote)
        print(f"{a.size_mib} MiB ext4 image in a verity bundle of {size} bytes, medians of {a.runs}, "
              f"{os.cpu_count()} cores, interleaved")
        print(f"local install:     {lt:.3f} s (peak RSS {max(x[1] for x in local):.1f} MiB)")
        print(f"streaming install: {rt:.3f} s (peak RSS {max(x[1] for x in remote):.1f} MiB)  "
              f"streaming / local {rt / lt:.2f}")
        if m:
            fetched = int(m.group(1))
            print(f"  fetched {fetched} bytes ({fetched / size:.4f} of the bundle) in {m.group(2)} requests, "
                  f"{m.group(3)} resumed")
    finally:
        if nginx:
            nginx.kill()
            nginx.wait()
        shutil.rmtree(w)


if __name__ == "__main__":
    main()
