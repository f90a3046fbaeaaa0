"""Shared by the benchmark scripts: time a command and take its peak RSS.

Peak RSS comes from GNU time (package `time`): a child forked from this Python process
would report Python's own RSS as its maximum."""
import subprocess, sys, time


def run(cmd, shell=False):
    """(seconds, peak RSS MiB) of one run of `cmd`; exits loudly if it fails."""
    t = time.perf_counter()
    full = ["/usr/bin/time", "-f", "%M"] + (["sh", "-c", cmd] if shell else list(cmd))
    p = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    err = p.stderr.decode(errors="replace").strip().splitlines()
    if p.returncode != 0:
        sys.exit(f"failed: {cmd}: {err}")
    return dt, int(err[-1]) / 1024
