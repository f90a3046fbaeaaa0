#!/usr/bin/env bash
# Build the VM test image of henb-update from Debian 12 packages only (apt, no other
# network): a GPT disk with an ESP (a reproducible GRUB EFI whose embedded config is RAUC's
# A/B logic, then `insmod tpm` and `source` of the slot's own boot config), two ext4 root
# slots and a data partition; plus the slot images and signed update packages the VM tests
# install.
#
#   images/build.sh OUT_DIR [AGENT_BINARY]      (default: target/release/henb-update)
#
# OUT_DIR/
#   disk.img            slot A = v1 (bootable), slot B empty, data empty
#   OVMF_VARS.fd        a fresh copy of the UEFI variables
#   slot-v1.ext4 slot-v2.ext4      the root slot images (v2: a new initrd)
#   rv-v1 rv-v2         their predicted reference values (henb-update reference-values)
#   pki/                the operator PKI (tests/pki/make-pki.sh)
#   packages.img        a FAT disk holding factory.raucb (v1), update.raucb (v2),
#                       wrong-rv.raucb (v2 image, v1's reference values), tampered.raucb,
#                       hw.raucb (the flash slots' images: guest/hw.conf)
#   hw-rootfs.img hw-app.ubifs hw-boot.img hw-firmware.img hw-data.jffs2   hw.raucb's images
#
# Deterministic inputs give the same bytes: fixed times (SOURCE_DATE_EPOCH), sorted cpio,
# gzip -n, fixed filesystem UUIDs and volume ids, GRUB via grub-mkimage + a sorted tar.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=$(realpath -m "${1:?usage: images/build.sh OUT_DIR [AGENT]}")
agent=$(realpath "${2:-$root/target/release/henb-update}")
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}   # 2026-01-01
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
mkdir -p "$out" && cd "$out"
rm -rf work && mkdir work

# --- kernel (Debian's, unpacked) ---------------------------------------------------------
if [ ! -d kernel ]; then
  mkdir -p kernel.tmp && (cd kernel.tmp && apt-get download -q \
    "$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image/{print $2; exit}')" >/dev/null 2>&1)
  dpkg -x kernel.tmp/linux-image-*.deb kernel.tmp/x && mv kernel.tmp/x kernel && rm -rf kernel.tmp
fi
kver=$(ls kernel/lib/modules)
vmlinuz=kernel/boot/vmlinuz-$kver

# --- PKI ---------------------------------------------------------------------------------
[ -d pki ] || "$root/tests/pki/make-pki.sh" "$out/pki" >/dev/null

# --- the slot's root: an initramfs holding busybox, dbus-daemon, the agent ---------------
copy_with_libs() { # copy binaries and every library they need into $1
  local dest=$1; shift
  for f in "$@"; do
    install -D "$f" "$dest$f"
    ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | while read -r l; do
      [ -e "$dest$l" ] || install -D "$(readlink -f "$l")" "$dest$l"
    done
  done
}
make_initrd() { # $1 = version, $2 = output
  local r=work/root-$1
  rm -rf "$r" && mkdir -p "$r"/{bin,sbin,etc/henb-update,proc,sys,dev,run,tmp,data,boot/efi,pkg,usr/share/dbus-1/system.d}
  install -m 0755 /bin/busybox "$r/bin/busybox"
  strip -o work/henb-update "$agent"
  install -D -m 0755 work/henb-update "$r/usr/bin/henb-update"
  copy_with_libs "$r" "$agent" /usr/bin/dbus-daemon /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0 \
    /usr/bin/efibootmgr /usr/sbin/flash_erase /usr/sbin/nandwrite /usr/sbin/nanddump /usr/sbin/ubiattach \
    /usr/sbin/ubimkvol /usr/sbin/ubinfo
  rm -f "$r$agent" && [ "$agent" = /usr/bin/henb-update ] || true
  install -D "$(readlink -f /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0)" \
    "$r/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0"
  for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
           drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/block/virtio_blk \
           lib/crc16 fs/mbcache fs/jbd2/jbd2 crypto/crc32c_generic fs/ext4/ext4 fs/fat/fat fs/fat/vfat \
           fs/nls/nls_cp437 fs/nls/nls_ascii drivers/firmware/qemu_fw_cfg \
           fs/efivarfs/efivarfs drivers/mtd/mtd lib/bch drivers/mtd/nand/nandcore drivers/mtd/nand/raw/nand \
           drivers/mtd/nand/raw/nandsim drivers/mtd/ubi/ubi drivers/mtd/devices/mtdram; do
    install -D "kernel/lib/modules/$kver/kernel/$m.ko" "$r/lib/modules/$(basename "$m").ko"
  done
  install -m 0755 "$here/guest/init" "$r/init"
  install -m 0644 "$here/guest/system.conf" "$r/etc/henb-update/system.conf"
  install -m 0644 "$here/guest/bus.conf" "$r/etc/henb-update/bus.conf"
  install -m 0644 "$here/guest/hw.conf" "$r/etc/henb-update/hw.conf"
  install -m 0644 "$root/dbus/org.henb.Update1.conf" "$r/usr/share/dbus-1/system.d/org.henb.Update1.conf"
  install -m 0644 pki/root.cert.pem "$r/etc/henb-update/root.pem"
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$r/etc/passwd"
  printf 'root:x:0:\ncwmp:x:100:\nnogroup:x:65534:\n' > "$r/etc/group"
  echo "$1" > "$r/etc/version"
  find "$r" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  (cd "$r" && find . -print0 | LC_ALL=C sort -z | cpio --null --reproducible -o -H newc --quiet) | gzip -9 -n > "$2"
}

# --- a slot image: kernel, initrd, the slot's boot config --------------------------------
make_slot() { # $1 = version, $2 = output
  local s=work/slot-$1
  rm -rf "$s" && mkdir -p "$s/boot"
  cp "$vmlinuz" "$s/boot/vmlinuz"
  make_initrd "$1" "$s/boot/initrd.img"
  cp "$here/guest/slot-grub.cfg" "$s/boot/grub.cfg"
  find "$s" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  rm -f "$2" && mkfs.ext4 -q -F -L "slot" -U 3f0b6a4e-0000-4000-8000-00000000000$1 \
    -E hash_seed=3f0b6a4e-0000-4000-8000-000000000000,root_owner=0:0 -d "$s" "$2" 64M
}
make_slot 1 slot-v1.ext4
make_slot 2 slot-v2.ext4

# --- predicted reference values (GRUB's events for this layout) --------------------------
rv() { # $1 = slot dir
  "$agent" reference-values --grub-config "$1/boot/grub.cfg" --slot-root "$1" \
    --slot A --slot B
}
rv work/slot-1 > rv-v1
rv work/slot-2 > rv-v2

# --- packages ----------------------------------------------------------------------------
bundle() { # $1 = slot image, $2 = version, $3 = reference values, $4 = output
  local c=work/content-$2-$(basename "$4")
  rm -rf "$c" && mkdir -p "$c" && cp "$1" "$c/rootfs.ext4"
  printf '[update]\ncompatible=henb-vm\nversion=%s\n\n[image.rootfs]\nfilename=rootfs.ext4\n' "$2" > "$c/manifest.raucm"
  "$agent" bundle --format verity --cert pki/signer-rsa.cert.pem --key pki/signer-rsa.key.pem \
    --intermediate pki/release-ca.cert.pem --reference-values "$3" "$c" "$4" >/dev/null
}
bundle slot-v1.ext4 1.0 rv-v1 work/factory.raucb
bundle slot-v2.ext4 2.0 rv-v2 work/update.raucb
bundle slot-v2.ext4 2.0 rv-v1 work/wrong-rv.raucb     # signed, but v1's values: B will not measure as them
cp work/update.raucb work/tampered.raucb
printf '\x00' | dd of=work/tampered.raucb bs=1 seek=$((20 << 20)) conv=notrunc status=none
# The flash slots' package (tests/vm.rs, scenario hw; guest/hw.conf): a UBI volume image,
# a UBIFS image (mkfs.ubifs for nandsim's 2 KiB pages and 128 KiB blocks; its UUID is
# random, so this one image is not reproducible), a NAND and a NOR image, from a fixed stream,
# and a JFFS2 image.
stream() { head -c "$1" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$(printf %-32s "$2" | tr " " 0)" -iv 00000000000000000000000000000000; }
c=work/content-hw && rm -rf "$c" && mkdir -p "$c" work/app-root
stream 1048576 0a > "$c/rootfs.img"
stream 307200 0b > "$c/boot.img"
stream 204800 0d > "$c/firmware.img"
stream 65536 0c > work/app-root/data && echo henb-hw > work/app-root/release
mkfs.ubifs -q -r work/app-root -m 2048 -e 126976 -c 64 -x none -o "$c/app.ubifs"
# JFFS2 for nandsim's NAND: 128 KiB erase blocks, 2 KiB pages, no cleanmarkers (NAND keeps
# them out of band), padded to whole blocks.
mkfs.jffs2 -q -r work/app-root -e 128KiB -s 2048 -n -p -o "$c/data.jffs2"
printf '[update]\ncompatible=henb-vm-hw\nversion=3.0\n\n[image.rootfs]\nfilename=rootfs.img\n\n[image.app]\nfilename=app.ubifs\n\n[image.boot]\nfilename=boot.img\n\n[image.firmware]\nfilename=firmware.img\n\n[image.data]\nfilename=data.jffs2\n' > "$c/manifest.raucm"
"$agent" bundle --format verity --cert pki/signer-rsa.cert.pem --key pki/signer-rsa.key.pem \
  --intermediate pki/release-ca.cert.pem "$c" work/hw.raucb >/dev/null
for f in rootfs.img app.ubifs boot.img firmware.img data.jffs2; do cp "$c/$f" "hw-$f"; done
rm -f packages.img && truncate -s 256M packages.img && mkfs.vfat -n PACKAGES -i 5eed0001 --invariant packages.img >/dev/null
for p in factory update wrong-rv tampered hw; do mcopy -i packages.img "work/$p.raucb" "::$p.raucb"; done

# --- ESP: GRUB EFI with the A/B logic embedded, an environment ---------------------------
rm -rf work/memdisk && mkdir -p work/memdisk/boot/grub/x86_64-efi
cp "$here/guest/grub.cfg" work/memdisk/boot/grub/grub.cfg
cp /usr/lib/grub/x86_64-efi/tpm.mod work/memdisk/boot/grub/x86_64-efi/   # loaded by `insmod tpm`, not preloaded
find work/memdisk -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd work/memdisk && find boot -print0 | LC_ALL=C sort -z | tar --null --no-recursion --owner=0 --group=0 \
  --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" -cf ../memdisk.tar -T -)
grub-mkimage -O x86_64-efi -p '(memdisk)/boot/grub' -m work/memdisk.tar -o work/BOOTX64.EFI \
  memdisk tar part_gpt fat ext2 normal configfile loadenv test echo linux linuxefi halt reboot sleep
grub-editenv work/grubenv create
grub-editenv work/grubenv set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
rm -f work/esp.img && truncate -s 32M work/esp.img && mkfs.vfat -n ESP -i 5eed0002 --invariant work/esp.img >/dev/null
mmd -i work/esp.img ::EFI ::EFI/BOOT
mcopy -i work/esp.img work/BOOTX64.EFI ::EFI/BOOT/BOOTX64.EFI
mcopy -i work/esp.img work/grubenv ::EFI/BOOT/grubenv

# --- data partition ----------------------------------------------------------------------
rm -f work/data.img && mkfs.ext4 -q -F -L data -U 3f0b6a4e-0000-4000-8000-0000000000da \
  -E hash_seed=3f0b6a4e-0000-4000-8000-000000000000,root_owner=0:0 work/data.img 32M

# --- the disk ----------------------------------------------------------------------------
# 1 MiB alignment: ESP 32 MiB, A 64 MiB, B 64 MiB, data 32 MiB.
rm -f disk.img && truncate -s 200M disk.img
sgdisk -o -U 3f0b6a4e-0000-4000-8000-0000000000d1 \
  -n 1:2048:+32M -t 1:EF00 -c 1:esp -u 1:3f0b6a4e-0000-4000-8000-0000000000e1 \
  -n 2:0:+64M -t 2:8300 -c 2:rootfs-A -u 2:3f0b6a4e-0000-4000-8000-0000000000a1 \
  -n 3:0:+64M -t 3:8300 -c 3:rootfs-B -u 3:3f0b6a4e-0000-4000-8000-0000000000b1 \
  -n 4:0:+32M -t 4:8300 -c 4:data -u 4:3f0b6a4e-0000-4000-8000-0000000000c1 disk.img >/dev/null
put() { # $1 = partition number, $2 = image
  local start; start=$(sgdisk -i "$1" disk.img | awk '/First sector/{print $3}')
  dd if="$2" of=disk.img bs=512 seek="$start" conv=notrunc,sparse status=none
}
put 1 work/esp.img
put 2 slot-v1.ext4
put 4 work/data.img
cp /usr/share/OVMF/OVMF_VARS_4M.fd OVMF_VARS.fd
echo "built $out: disk.img packages.img (kernel $kver)"
