#!/usr/bin/env bash
# Seeds for the fuzz targets: small packages signed by fuzz-signer (chains to
# fuzz-root.pem, the anchor the targets use), so that mutations get past the signature
# into the squashfs, verity and image code. Usage: fuzz/make-seeds.sh [corpus-dir]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus}
bin=$here/../target/debug/henb-update
[ -x "$bin" ] || (cd "$here/.." && cargo build -q)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"/{bundle,tr069,squashfs,manifest} "$tmp/c"
head -c 20000 /dev/urandom > "$tmp/c/rootfs.img"
head -c 5000 /dev/zero >> "$tmp/c/rootfs.img"
printf '[update]\ncompatible=fz\nversion=1\n\n[image.rootfs]\nfilename=rootfs.img\n\n[meta.measured-boot]\npcr.9=00\n\n[meta.anti-rollback]\nsecurity-version=2\n' > "$tmp/c/manifest.raucm"
cp "$tmp/c/manifest.raucm" "$out/manifest/m1"
for f in plain verity tr069; do
  "$bin" bundle --format $f --cert "$here/fuzz-signer.pem" --key "$here/fuzz-signer.key" "$tmp/c" "$out/bundle/seed.$f"
done
cp "$out/bundle/seed.tr069" "$out/tr069/seed"
for comp in gzip xz zstd lz4; do
  mksquashfs "$tmp/c" "$out/squashfs/seed.$comp" -comp $comp -noappend -all-root -no-xattrs -quiet -no-progress
done
# A richer tree for squashfs and squashfs_diff: nested directories, symlinks, a hard
# link, a fragment tail, owners and a device inode (the product refuses fifos and sockets).
mkdir -p "$tmp/t/a/b"
head -c 4097 /dev/urandom > "$tmp/t/a/b/frag"
printf 'x' > "$tmp/t/a/one"
ln "$tmp/t/a/one" "$tmp/t/a/b/hard"
ln -s ../one "$tmp/t/a/b/up"
cp "$tmp/c/manifest.raucm" "$tmp/t/"
for comp in gzip xz zstd lz4; do
  mksquashfs "$tmp/t" "$out/squashfs/tree.$comp" -comp $comp -b 4096 -noappend -no-xattrs -quiet -no-progress \
    -force-uid 1234 -force-gid 567 -p 'chr c 600 0 0 1 3'
done
