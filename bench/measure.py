"""Shared by the benchmark scripts: time a command and take its peak RSS.

Peak RSS comes from GNU time (package `time`): a child forked from this Python process
would report Python's own RSS as its maximum."""
import os, shutil, socket, subprocess, sys, time


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


def verity_bundle(w, size_mib, bin_path, root, out, content="random"):
    """A verity bundle of a `size_mib` MiB ext4 image (random data, or every other MiB
    zero) at `out`, signed by a test PKI made in `<w>/pki`; returns the PKI directory."""
    pki = os.path.join(w, "pki")
    if not os.path.isdir(pki):
        subprocess.run([os.path.join(root, "tests/pki/make-pki.sh"), pki], check=True, stdout=subprocess.DEVNULL)
    files = os.path.join(w, "files")
    os.mkdir(files)
    with open(os.path.join(files, "data.bin"), "wb") as f, open("/dev/urandom", "rb") as r:
        for i in range(size_mib - 64):
            chunk = r.read(1 << 20)
            if content == "half-zero" and i % 2:
                chunk = bytes(1 << 20)
            f.write(chunk)
    tree = os.path.join(w, "content")
    os.mkdir(tree)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", files, os.path.join(tree, "rootfs.ext4"), f"{size_mib}M"],
                   check=True)
    shutil.rmtree(files)
    with open(os.path.join(tree, "manifest.raucm"), "w") as f:
        f.write("[update]\ncompatible=bench\nversion=1\n\n[image.rootfs]\nfilename=rootfs.ext4\n")
    subprocess.run([bin_path, "bundle", "--format", "verity", "--cert", f"{pki}/signer-rsa.cert.pem", "--key",
                    f"{pki}/signer-rsa.key.pem", "--intermediate", f"{pki}/release-ca.cert.pem", tree, out],
                   check=True)
    return pki


def keyring_device(w, pki, size_mib, slots=("slotA", "slotB")):
    """File slots of `size_mib` MiB, a GRUB environment and a system.conf with the PKI's
    keyring in `w`; returns the configuration's path."""
    for s in slots:
        with open(os.path.join(w, s), "wb") as f:
            f.truncate(size_mib << 20)
    subprocess.run(["grub-editenv", os.path.join(w, "grubenv"), "create"], check=True)
    conf = os.path.join(w, "system.conf")
    with open(conf, "w") as f:
        f.write(f"[system]\ncompatible=bench\nbootloader=grub\ngrubenv={w}/grubenv\ndata-directory={w}/data\n"
                f"[keyring]\npath={pki}/keyring.pem\ncheck-purpose=codesign\n"
                f"[slot.rootfs.0]\ndevice={w}/{slots[0]}\ntype=ext4\nbootname=A\n"
                f"[slot.rootfs.1]\ndevice={w}/{slots[1]}\ntype=ext4\nbootname=B\n")
    return conf


def nginx(w, www):
    """Debian's nginx serving `www` on 127.0.0.1 (a free port), its files in `w`;
    returns (process, port) once it accepts connections."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(os.path.join(w, "nginx.conf"), "w") as f:
        f.write(f"daemon off;\nmaster_process off;\nuser root;\nerror_log {w}/error.log;\npid {w}/nginx.pid;\n"
                f"events {{ worker_connections 64; }}\nhttp {{ access_log off; server {{ listen 127.0.0.1:{port}; "
                f"root {www}; }} }}\n")
    proc = subprocess.Popen(["nginx", "-c", f"{w}/nginx.conf", "-p", w])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port
