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

say "3b. Its reference values (R5): the final PCR 8 (GRUB commands and command line, per slot)"
say "    and PCR 9 (files GRUB reads) values a build predicts; signed into the package"
# What GRUB measures for each slot (illustrative event texts); final = sha256(0^32 || event).
event() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
final() { python3 -c 'import hashlib,sys; print(hashlib.sha256(bytes(32)+bytes.fromhex(sys.argv[1])).hexdigest())' "$1"; }
ev8A=$(event "linuxefi /vmlinuz root=/dev/vda2 rauc.slot=A")
ev8B=$(event "linuxefi /vmlinuz root=/dev/vda3 rauc.slot=B")
ev9=$(sha256sum "$work/content/rootfs.img" | cut -d' ' -f1)
cat > "$work/reference-values" <<RV
pcr-bank=sha256
pcr.8.A=$(final "$ev8A")
pcr.8.B=$(final "$ev8B")
pcr.9=$(final "$ev9")
component.rootfs=$ev9
RV
sed 's/^/   /' "$work/reference-values"

for fmt in verity plain tr069; do
  say "4. Build a signed $fmt package"
  "$bin" bundle --format "$fmt" --cert "$work/pki/signer-rsa.cert.pem" --key "$work/pki/signer-rsa.key.pem" \
    --intermediate "$work/pki/release-ca.cert.pem" --reference-values "$work/reference-values" \
    "$work/content" "$work/update.$fmt"
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
svc_pid=""; bus_pid=""
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
owner-auth-file=$work/owner-auth
[measured-boot]
required=true
[slot.rootfs.0]
device=$work/slotA
type=ext4
bootname=A
[slot.rootfs.1]
device=$work/slotB
type=ext4
bootname=B
CONF
tcti="swtpm:host=127.0.0.1,port=$port"
# A reboot as the TPM sees it: reset, then GRUB's measurements of the slot it boots.
reboot_into() {
  swtpm_ioctl --tcp 127.0.0.1:$((port + 1)) -i >/dev/null
  TSS2_LOG=all+none tpm2_startup -c -T "$tcti" 2>/dev/null || true
  local ev8=$ev8A; [ "$1" = B ] && ev8=$ev8B
  TSS2_LOG=all+none tpm2_pcrextend "8:sha256=$ev8" -T "$tcti"
  TSS2_LOG=all+none tpm2_pcrextend "9:sha256=${2:-$ev9}" -T "$tcti"
}
dev() { "$bin" --conf "$work/device.conf" "$@"; }
say "   factory flow: set the TPM's owner authorization (a random secret, kept root-only on the device)"
(umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/owner-auth")
TSS2_LOG=all+none tpm2_changeauth -c owner "file:$work/owner-auth" -T "$tcti"
dev trust provision --root "$work/pki/root.cert.pem" --lock | sed 's/^/   /'
dev trust list | sed 's/^/   /'
say "   verify against the roots in the TPM (no PEM file involved)"
dev info --json "$work/update.verity" | grep -E '"(trust-source|minimum-security-version|status)"' | sed 's/^/   /'

say "6a. Measured boot: slot A booted; its PCRs become the policy, the device credential is sealed to it"
reboot_into A
dev --override-boot-slot A policy init --from-pcrs 8,9 | sed 's/^/   /'
echo "device-credential-0042" | dev secret seal device-credential | sed 's/^/   /'
echo "   unseal on A: $(dev secret unseal device-credential)"

say "6b. The CWMP client hands it to the agent over the system D-Bus (here a private bus with the"
say "    shipped policy): the service writes B, commits B's signed reference values to the TPM"
say "    policy (A and B may unseal), then B boots next (GRUB variables as RAUC's)"
sed -e "s|@SOCKET@|$work/bus.sock|" -e "s|@POLICY@|$PWD/dbus/org.henb.Update1.conf|" \
  tests/fixtures/private-system-bus.conf.in > "$work/bus.conf"
dbus-daemon --config-file="$work/bus.conf" --nofork 2>/dev/null & bus_pid=$!
trap 'kill $svc_pid $bus_pid $swtpm_pid 2>/dev/null; rm -rf "$work"' EXIT
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/bus.sock"
for _ in $(seq 100); do [ -S "$work/bus.sock" ] && break; sleep 0.1; done
start_service() { # $1 = booted slot
  "$bin" --conf "$work/device.conf" --override-boot-slot "$1" service 2>"/tmp/henb-demo-service-$1.log" & svc_pid=$!
  for _ in $(seq 100); do "$bin" transfers >/dev/null 2>&1 && return; sleep 0.1; done
}
start_service A
"$bin" download --command-key demo-1 "$work/update.verity" 2>&1 | tail -3 | sed 's/^/   /'
kill $svc_pid; wait $svc_pid 2>/dev/null || true
grub-editenv "$work/grubenv" list | sed 's/^/   grubenv: /'
dev policy show | sed 's/^/   /'
dev --override-boot-slot A status | sed 's/^/   /'
say "   the reboot into B: boot-check compares the PCRs with B's committed values, the credential unseals"
reboot_into B
dev --override-boot-slot B boot-check | sed 's/^/   /'
echo "   unseal on B: $(dev secret unseal device-credential)"
say "   mark good confirms B: the policy approves only B, anti-rollback minimum rises to 3"
dev --override-boot-slot B mark good | sed 's/^/   /'
dev policy show | sed -n 2p | sed 's/^/   /'
say "   the CWMP client, started after the reboot, collects the TransferComplete result and acknowledges it"
start_service B
"$bin" transfers | sed 's/^/   pending TransferComplete: /'
"$bin" transfers --ack demo-1 && echo "   acknowledged: $("$bin" transfers | wc -l) left"
kill $svc_pid; wait $svc_pid 2>/dev/null || true
say "   booting the old slot A (or anything else) now: the credential stays sealed"
reboot_into A
dev secret unseal device-credential 2>&1 | sed 's/^/   /' || true
say "   a kernel nobody signed in B: boot-check refuses, marks B bad, the bootloader falls back"
reboot_into B "$(event 'a different kernel')"
dev --override-boot-slot B boot-check 2>&1 | sed 's/^/   /' || echo "   -> exit status ${PIPESTATUS[0]}"
grub-editenv "$work/grubenv" list | grep B_OK | sed 's/^/   grubenv: /'
dev security-version | sed 's/^/   /'
say "   a later confirmed update moved the minimum to 4: this package (version 3) is now a downgrade"
dev --override-boot-slot A security-version --raise 4 2>&1 | sed 's/^/   /'
dev info --json "$work/update.verity" 2>/dev/null | sed 's/^/   /' || echo "   -> exit status $?"

say "6c. Or the CWMP client hands over the URL: the agent streams the package from the file"
say "    server with Range requests, each block checked before use, nothing stored on the way"
www="$work/www"; mkdir "$www"; cp "$work/update.verity" "$work/update.plain" "$www/"
http_port=$((port + 2))
cat > "$work/nginx.conf" <<NGINX
daemon off; master_process off; user root; error_log $work/nginx.log; pid $work/nginx.pid;
events { worker_connections 16; }
http { access_log off; server { listen 127.0.0.1:$http_port; root $www; } }
NGINX
nginx -c "$work/nginx.conf" -p "$work" & nginx_pid=$!
trap 'kill $nginx_pid $swtpm_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$http_port") 2>/dev/null && break; sleep 0.1; done
"$bin" --conf "$work/system.conf" info "http://127.0.0.1:$http_port/update.verity" | sed 's/^/   /'
say "   a plain bundle cannot be checked before use when streamed: refused"
"$bin" --conf "$work/system.conf" info --json "http://127.0.0.1:$http_port/update.plain" 2>/dev/null | sed 's/^/   /' || echo "   -> exit status $?"

say "6d. Adaptive update (RAUC's adaptive=block-hash-index): a second, small device whose slot A"
say "    holds v1 of a 32 MiB ext4 file system; v2 changes 1 of its 40 files. Only the blocks the"
say "    device lacks are fetched; every block taken from a slot is hashed again, the image's"
say "    signed digest is checked as a whole"
mkdir "$work/fs"
for i in $(seq -w 1 40); do head -c $((256 << 10)) /dev/urandom > "$work/fs/f$i.bin"; done
ext4() {  # reproducible: same UUID, hash seed and times, so unchanged files stay in place
  touch -d @1600000000 "$work/fs" "$work/fs"/*
  E2FSPROGS_FAKE_TIME=1600000000 mke2fs -q -F -t ext4 -b 4096 -U 4f3c1a9e-0d2b-4c55-9a51-6d1e2f3a4b5c \
    -E hash_seed=0b6f7a2c-1d3e-4f50-8a9b-0c1d2e3f4a5b,root_owner=0:0 -d "$work/fs" "$1" 32M >/dev/null
}
ext4 "$work/v1.ext4"
head -c $((256 << 10)) /dev/urandom > "$work/fs/f17.bin"
mkdir "$work/adaptive"
ext4 "$work/adaptive/rootfs.ext4"
printf '[update]\ncompatible=henb-demo\nversion=2.2.0\n\n[image.rootfs]\nfilename=rootfs.ext4\nadaptive=block-hash-index\n' \
  > "$work/adaptive/manifest.raucm"
"$bin" bundle --format verity --block-size 64K --cert "$work/pki/signer-rsa.cert.pem" \
  --key "$work/pki/signer-rsa.key.pem" --intermediate "$work/pki/release-ca.cert.pem" \
  "$work/adaptive" "$www/v2-adaptive.raucb"
cp "$work/v1.ext4" "$work/small-A"; truncate -s 32M "$work/small-B"
grub-editenv "$work/small-grubenv" create
cat > "$work/small.conf" <<CONF
[system]
compatible=henb-demo
bootloader=grub
grubenv=$work/small-grubenv
data-directory=$work/small-data
[keyring]
path=$work/pki/keyring.pem
check-purpose=codesign
[slot.rootfs.0]
device=$work/small-A
type=ext4
bootname=A
[slot.rootfs.1]
device=$work/small-B
type=ext4
bootname=B
CONF
small() { "$bin" --conf "$work/small.conf" --override-boot-slot A "$@"; }
small slot index | sed 's/^/   /'
echo "   bundle: $(stat -c %s "$www/v2-adaptive.raucb") bytes"
small install "http://127.0.0.1:$http_port/v2-adaptive.raucb" | sed 's/^/   /'
cmp -n $((32 << 20)) "$work/small-B" "$work/adaptive/rootfs.ext4" && echo "   slot B holds v2, byte for byte"
kill $nginx_pid; wait $nginx_pid 2>/dev/null || true

say "7. One byte changed in the middle of the image: refused, CWMP fault in JSON"
cp "$work/update.verity" "$work/tampered.verity"
printf '\x00' | dd of="$work/tampered.verity" bs=1 seek=$((32 << 20)) conv=notrunc status=none
"$bin" --conf "$work/system.conf" info --json "$work/tampered.verity" 2>/dev/null | sed 's/^/   /' || echo "   -> exit status $?"

say "8. A package for another device: refused as incompatible, not as a crypto error"
sed -i 's/compatible=henb-demo/compatible=other-device/' "$work/system.conf"
"$bin" --conf "$work/system.conf" info --json "$work/update.tr069" 2>/dev/null | sed 's/^/   /' || echo "   -> exit status $?"
say "Done."
