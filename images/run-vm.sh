#!/usr/bin/env bash
# Boot the test image by hand: images/run-vm.sh OUT_DIR [SCENARIO]
# (a swtpm whose state persists in OUT_DIR/tpm; the serial console on stdout; QEMU exits
# when the guest powers off or reboots). SCENARIO: "" or install:<package> (see guest/init).
set -euo pipefail
out=$(realpath "${1:?usage: images/run-vm.sh OUT_DIR [SCENARIO]}")
scenario=${2:-}
mkdir -p "$out/tpm"
[ -e "$out/tpm/tpm2-00.permall" ] || swtpm_setup --tpm2 --tpmstate "$out/tpm" --pcr-banks sha256 --overwrite >/dev/null
swtpm socket --tpm2 --tpmstate dir="$out/tpm" --ctrl type=unixio,path="$out/tpm/swtpm-sock" --daemon
exec qemu-system-x86_64 -nodefaults -machine q35 -accel tcg -m 512 -smp 1 -display none \
  -serial stdio -monitor none -no-reboot \
  -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
  -drive if=pflash,format=raw,unit=1,file="$out/OVMF_VARS.fd" \
  -drive if=virtio,format=raw,file="$out/disk.img" \
  -drive if=virtio,format=raw,readonly=on,file="$out/packages.img" \
  -chardev socket,id=chrtpm,path="$out/tpm/swtpm-sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
  -device tpm-tis,tpmdev=tpm0 \
  -fw_cfg name=opt/henb/scenario,string="${scenario:-boot}"
