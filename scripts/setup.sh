#!/usr/bin/env bash
# Install the Debian 12 packages henb-update's build, demo and tests need, if missing.
set -euo pipefail
pkgs=(
  squashfs-tools   # mksquashfs: the bundler, as rauc uses it
  libsquashfs-dev  # libsquashfs (squashfs-tools-ng): squashfs-ng, the tests' second squashfs reader
  libclang-dev     # bindgen, which builds squashfs-ng's bindings
  openssl          # test PKI and an independent CMS producer
  rauc             # peer: builds and checks bundles
  cryptsetup-bin   # veritysetup: independent verity oracle
  python3          # the independent TR-069 builder in tests/tools
  pkg-config
  libtss2-dev      # tpm2-tss, linked by tss-esapi (the TrE is a TPM 2.0)
  swtpm            # a software TPM per test
  swtpm-tools      # swtpm_ioctl: TPM reset (reboot simulation)
  tpm2-tools       # a second reader of the TPM in tests
  grub-common      # grub-editenv: reads our GRUB environment blocks in tests
  libubootenv-tool # fw_printenv/fw_setenv: read and write U-Boot environments in tests
  time             # GNU time: peak RSS in bench/info.py
  dbus-daemon      # a private system bus per service test
  dbus-bin         # dbus-send: the unprivileged caller of the bus-policy test
  util-linux       # setpriv: run that caller as nobody
  qemu-system-x86  # the VM suite (tests/vm.rs): TCG emulation
  ovmf             # UEFI firmware with the TCG2 event log
  grub-efi-amd64-bin # GRUB's x86_64-efi modules for images/build.sh
  mtools           # mcopy/mmd: fill FAT images without loop devices
  dosfstools       # mkfs.vfat
  gdisk            # sgdisk: the GPT test disk, and the reader of boot-gpt-switch's table
  fdisk            # sfdisk: the reader of boot-mbr-switch's table
  dt-utils         # barebox-state: the barebox bootloader backend and its test reader
  device-tree-compiler # dtc: the barebox state's device tree in tests
  mtd-utils        # flash_erase, nandwrite, nanddump, ubiattach, ubimkvol, mkfs.ubifs: the VM's flash slots
  efibootmgr       # the efi bootloader backend, in the VM image
  busybox-static   # the guest's shell and tools
  cpio             # the guest's initramfs
  e2fsprogs        # mkfs.ext4 -d: slot and data images
  systemd          # systemd-analyze verify: the layer's units (scripts/check-layer.sh)
  python3-yaml     # reads the kas file in scripts/check-layer-deps.py
  git              # scripts/crates-inc.py and check-srcrev.py read the pinned commit
  python3-venv     # a venv for oelint-adv (pinned, from PyPI) in scripts/check-layer.sh
  python3-pip
  python3-fusepy   # tests/tools/switchfs.py: a FUSE file system whose bytes change between reads
  fuse3            # its mount helper
  nginx-light      # the file server of the download tests (tests/download.rs) and bench/stream.py
  lighttpd         # HTTP Digest authentication in the download tests (Debian's nginx has no Digest module)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
