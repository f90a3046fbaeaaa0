#!/usr/bin/env bash
# The main job, end to end on this machine: an operator PKI, a signed update in each
# format, verification, and what happens to a tampered or foreign package.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -q
bin="$PWD/target/release/henb-update"
work=$(mktemp -d /tmp/henb-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. An operator PKI (root, release CA, code-signing signer) made with openssl"
tests/pki/make-pki.sh "$work/pki" >/dev/null
ls "$work/pki" | grep -E '^(root|release-ca|signer-rsa)\.' | sed 's/^/   /'

say "2. The device's configuration (RAUC system.conf syntax)"
cat > "$work/system.conf" <<CONF
[system]
compatible=henb-demo
[keyring]
path=$work/pki/keyring.pem
check-purpose=codesign
CONF
sed 's/^/   /' "$work/system.conf"

say "3. A firmware release: manifest + a 64 MiB root filesystem image"
mkdir "$work/content"
head -c $((64 << 20)) /dev/urandom > "$work/content/rootfs.img"
cat > "$work/content/manifest.raucm" <<MAN
[update]
compatible=henb-demo
version=2.1.0

[image.rootfs]
filename=rootfs.img

[meta.anti-rollback]
security-version=3
MAN
sed 's/^/   /' "$work/content/manifest.raucm"

for fmt in verity plain tr069; do
  say "4. Build a signed $fmt package"
  "$bin" bundle --format "$fmt" --cert "$work/pki/signer-rsa.cert.pem" --key "$work/pki/signer-rsa.key.pem" \
    --intermediate "$work/pki/release-ca.cert.pem" "$work/content" "$work/update.$fmt"
  ls -l "$work/update.$fmt" | awk '{print "   " $5 " bytes  " $9}'
  say "   verify it (signature, structure, every image digest)"
  "$bin" --conf "$work/system.conf" info "$work/update.$fmt" | sed 's/^/   /'
done

say "5. rauc (the reference updater) accepts our verity bundle too"
printf '[system]\ncompatible=henb-demo\nbootloader=noop\n[keyring]\npath=%s\ncheck-purpose=codesign\n' "$work/pki/keyring.pem" > "$work/rauc.conf"
rauc --conf="$work/rauc.conf" info "$work/update.verity" 2>&1 | grep -E "Verified|Compatible|Version" | sed 's/^/   /'

say "6. The device's Trusted Environment: a TPM 2.0 (here a private swtpm) holds the operator roots"
port=$((20000 + (RANDOM % 10000) * 2))
swtpm socket --tpm2 --tpmstate dir="$work" --flags not-need-init,startup-clear \
  --server type=tcp,port=$port,bindaddr=127.0.0.1 --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 &
swtpm_pid=$!
trap 'kill $swtpm_pid 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.5
truncate -s 80M "$work/slotA" "$work/slotB"
grub-editenv "$work/grubenv" create
grub-editenv "$work/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
cat > "$work/device.conf" <<CONF
[system]
compatible=henb-demo
bootloader=grub
grubenv=$work/grubenv
data-directory=$work/data
[keyring]
check-purpose=codesign
[tpm]
tcti=swtpm:host=127.0.0.1,port=$port
[slot.rootfs.0]
device=$work/slotA
type=ext4
bootname=A
[slot.rootfs.1]
device=$work/slotB
type=ext4
bootname=B
CONF
dev() { "$bin" --conf "$work/device.conf" "$@"; }
dev trust provision --root "$work/pki/root.cert.pem" --lock | sed 's/^/   /'
dev trust list | sed 's/^/   /'
say "   verify against the roots in the TPM (no PEM file involved)"
dev info --json "$work/update.verity" | grep -E '"(trust-source|minimum-security-version|status)"' | sed 's/^/   /'

say "6b. Install it while slot A runs: written into B, then B boots next (GRUB variables as RAUC's)"
dev --override-boot-slot A install --command-key demo-1 "$work/update.verity" | sed 's/^/   /'
grub-editenv "$work/grubenv" list | sed 's/^/   grubenv: /'
dev --override-boot-slot A status | sed 's/^/   /'
say "   after the reboot into B: mark good confirms it and raises the anti-rollback minimum to 3"
dev --override-boot-slot B mark good | sed 's/^/   /'
dev security-version | sed 's/^/   /'
say "   a later confirmed update moved the minimum to 4: this package (version 3) is now a downgrade"
dev security-version --raise 4 | sed 's/^/   /'
dev info --json "$work/update.verity" 2>/dev/null | sed 's/^/   /' || echo "   -> exit status $?"

say "7. One byte changed in the middle of the image: refused, CWMP fault in JSON"
cp "$work/update.verity" "$work/tampered.verity"
printf '\x00' | dd of="$work/tampered.verity" bs=1 seek=$((32 << 20)) conv=notrunc status=none
"$bin" --conf "$work/system.conf" info --json "$work/tampered.verity" 2>/dev/null | sed 's/^/   /' || echo "   -> exit status $?"

say "8. A package for another device: refused as incompatible, not as a crypto error"
sed -i 's/compatible=henb-demo/compatible=other-device/' "$work/system.conf"
"$bin" --conf "$work/system.conf" info --json "$work/update.tr069" 2>/dev/null | sed 's/^/   /' || echo "   -> exit status $?"
say "Done."
