#!/usr/bin/env python3
"""Benchmark a streaming install from a file server against the local install of the
same bundle, in the same run: a verity bundle of a 1 GiB ext4 image, served by Debian's
nginx on 127.0.0.1 (Range requests), installed with `henb-update install http://...`,
against `henb-update install BUNDLE` from the local file (warm page cache for both).
Medians of N runs, interleaved; peak RSS from GNU time; bytes fetched from the agent's
log (`fetched N bytes in R requests`). Usage: bench/stream.py [--size-mib 1024]
[--runs 3]. Asserts nothing.
"""
import argparse, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import keyring_device, run, verity_bundle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "henb-update")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


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
        port = free_port()
        with open(os.path.join(w, "nginx.conf"), "w") as f:
            f.write(f"daemon off;\nmaster_process off;\nuser root;\nerror_log {w}/error.log;\npid {w}/nginx.pid;\n"
                    f"events {{ worker_connections 64; }}\nhttp {{ access_log off; server {{ listen 127.0.0.1:{port}; "
                    f"root {www}; }} }}\n")
        nginx = subprocess.Popen(["nginx", "-c", f"{w}/nginx.conf", "-p", w])
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
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
