SUMMARY = "System configuration and operator roots of henb-update"
DESCRIPTION = "The target's /etc/henb-update/system.conf (slots, bootloader, TPM, measured \
boot) and the operator root certificates factory provisioning writes into the TPM. The \
files here are placeholders: a product overrides them with a bbappend \
(FILESEXTRAPATHS:prepend) or the HENB_* variables."
HOMEPAGE = "https://github.com/henb-update/henb-update"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://system.conf.in \
           file://roots.pem \
           "

# [doc] flags: what a product sets.
HENB_COMPATIBLE ??= "henb-${MACHINE}"
HENB_COMPATIBLE[doc] = "The device's compatible string; packages for anything else are refused (9001)."
HENB_SLOT_A_DEVICE ??= "/dev/disk/by-partlabel/rootfs-A"
HENB_SLOT_A_DEVICE[doc] = "Block device of root slot A (bootname A)."
HENB_SLOT_B_DEVICE ??= "/dev/disk/by-partlabel/rootfs-B"
HENB_SLOT_B_DEVICE[doc] = "Block device of root slot B (bootname B)."
HENB_GRUBENV ??= "/boot/efi/EFI/BOOT/grubenv"
HENB_GRUBENV[doc] = "GRUB environment file the bootloader reads (RAUC's variables)."
HENB_DATA_DIRECTORY ??= "/data/henb-update"
HENB_DATA_DIRECTORY[doc] = "Persistent directory for status, measured-boot record and sealed secrets."
HENB_OWNER_AUTH_FILE ??= "${HENB_DATA_DIRECTORY}/owner-auth"
HENB_OWNER_AUTH_FILE[doc] = "Root-only file holding the TPM owner authorization the factory flow sets (tpm2_changeauth -c owner); measured boot requires it."
HENB_ALLOW_EMPTY_OWNER_AUTH ??= "false"
HENB_ALLOW_EMPTY_OWNER_AUTH[doc] = "true (development images only): measured boot with the TPM's empty owner authorization, which any local process could use to rewrite the policy."
HENB_RAUC_COMPATIBLE ??= "false"
HENB_RAUC_COMPATIBLE[doc] = "true: also serve RAUC's D-Bus API (de.pengutronix.rauc)."

# The configuration names the machine (HENB_COMPATIBLE): one package per machine.
PACKAGE_ARCH = "${MACHINE_ARCH}"

FILES:${PN} += "${sysconfdir}/henb-update ${datadir}/henb-update"
CONFFILES:${PN} = "${sysconfdir}/henb-update/system.conf"
RPROVIDES:${PN} = "virtual-henb-update-conf"

do_install() {
    install -d ${D}${sysconfdir}/henb-update ${D}${datadir}/henb-update
    if [ "${HENB_ALLOW_EMPTY_OWNER_AUTH}" = "true" ]; then
        owner_auth="allow-empty-owner-auth=true"
        bbwarn "henb-update-conf: HENB_ALLOW_EMPTY_OWNER_AUTH=true is for development images only"
    else
        owner_auth="owner-auth-file=${HENB_OWNER_AUTH_FILE}"
    fi
    sed -e 's,@COMPATIBLE@,${HENB_COMPATIBLE},' \
        -e "s,@OWNER_AUTH@,$owner_auth," \
        -e 's,@SLOT_A@,${HENB_SLOT_A_DEVICE},' \
        -e 's,@SLOT_B@,${HENB_SLOT_B_DEVICE},' \
        -e 's,@GRUBENV@,${HENB_GRUBENV},' \
        -e 's,@DATA@,${HENB_DATA_DIRECTORY},' \
        -e 's,@RAUC@,${HENB_RAUC_COMPATIBLE},' \
        ${UNPACKDIR}/system.conf.in > ${D}${sysconfdir}/henb-update/system.conf
    install -m 0644 ${UNPACKDIR}/roots.pem ${D}${datadir}/henb-update/roots.pem
    if grep -q PLACEHOLDER ${UNPACKDIR}/roots.pem; then
        bbwarn "henb-update-conf: roots.pem is a placeholder; provide the operator root certificates in a bbappend"
    fi
}
