# henb_bundle: build signed update packages from an image, with the reference values of
# the kernel, initrd and boot config the image contains (3GPP TS 33.320 R5).
#
#   inherit henb_bundle
#   HENB_BUNDLE_IMAGE = "core-image-minimal"
#   HENB_BUNDLE_CERT = "/secure/signer.cert.pem"
#   HENB_BUNDLE_KEY = "/secure/signer.key.pem"
#
# Produces in DEPLOY_DIR_IMAGE: <name>.verity.raucb (RAUC verity bundle) and
# <name>.tr069.tr069 (TR-069 signed package), both signed with HENB_BUNDLE_CERT/KEY, both
# carrying [meta.measured-boot] as predicted by `henb-update reference-values` from the
# image's /boot. Keys never come from this layer: a recipe without them parses (world,
# `bitbake -n`), and do_bundle stops with an explanation.

LICENSE ?= "MIT"

DEPENDS += "henb-update-native squashfs-tools-native e2fsprogs-native"

# The packages hold one machine's image.
PACKAGE_ARCH = "${MACHINE_ARCH}"

inherit nopackages deploy image-artifact-names

PACKAGES = ""
INHIBIT_DEFAULT_DEPS = "1"

HENB_BUNDLE_IMAGE ??= ""
HENB_BUNDLE_IMAGE[doc] = "Image recipe whose ext4 root filesystem becomes the slot image."
HENB_BUNDLE_IMAGE_FSTYPE ??= "ext4"
HENB_BUNDLE_IMAGE_FSTYPE[doc] = "Image type to take from DEPLOY_DIR_IMAGE (an ext4 root slot)."
HENB_BUNDLE_IMAGE_LINK_NAME ??= "${HENB_BUNDLE_IMAGE}${IMAGE_MACHINE_SUFFIX}${IMAGE_NAME_SUFFIX}"
HENB_BUNDLE_IMAGE_LINK_NAME[doc] = "The image's IMAGE_LINK_NAME (image-artifact-names.bbclass, with HENB_BUNDLE_IMAGE as IMAGE_BASENAME): set it if the image changes its IMAGE_BASENAME or IMAGE_LINK_NAME."
HENB_BUNDLE_VERSION ??= "${DISTRO_VERSION}"
HENB_BUNDLE_VERSION[doc] = "Package version ([update] version)."
HENB_BUNDLE_COMPATIBLE ??= "henb-${MACHINE}"
HENB_BUNDLE_COMPATIBLE[doc] = "Must equal the devices' [system] compatible (HENB_COMPATIBLE)."
HENB_BUNDLE_SECURITY_VERSION ??= "0"
HENB_BUNDLE_SECURITY_VERSION[doc] = "Anti-rollback security version; devices refuse anything lower than their minimum."
HENB_BUNDLE_FORMATS ??= "verity tr069"
HENB_BUNDLE_FORMATS[doc] = "Which packages to build: verity, plain, tr069."
HENB_BUNDLE_CERT ??= ""
HENB_BUNDLE_CERT[doc] = "Signer certificate (PEM, codeSigning), issued under an operator root."
HENB_BUNDLE_KEY ??= ""
HENB_BUNDLE_KEY[doc] = "Signer private key (PEM)."
HENB_BUNDLE_INTERMEDIATE ??= ""
HENB_BUNDLE_INTERMEDIATE[doc] = "Intermediate CA certificate(s) to embed (PEM), if any."
HENB_BUNDLE_BOOTNAMES ??= "A B"
HENB_BUNDLE_BOOTNAMES[doc] = "Bootnames of the slots the package may be installed into (one pcr.8.<bootname> each)."
HENB_BUNDLE_NAME ??= "${PN}-${MACHINE}"
HENB_BUNDLE_NAME[doc] = "File name (without suffix) of the packages in DEPLOY_DIR_IMAGE."

do_fetch[noexec] = "1"
do_unpack[noexec] = "1"
do_patch[noexec] = "1"
do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"
deltask do_populate_sysroot

do_bundle() {
    if [ -z "${HENB_BUNDLE_IMAGE}" ]; then
        bbfatal "HENB_BUNDLE_IMAGE is not set: name the image recipe whose root filesystem becomes the slot."
    fi
    if [ -z "${HENB_BUNDLE_CERT}" ] || [ -z "${HENB_BUNDLE_KEY}" ]; then
        bbfatal "HENB_BUNDLE_CERT and HENB_BUNDLE_KEY are not set: they name the signer's certificate and private key (PEM). Set them in local.conf, the distro or a bbappend of ${PN}; development keys: tests/pki/make-pki.sh DIR in the henb-update repository (docs/integrator-guide.md, section 3)."
    fi
    for f in ${HENB_BUNDLE_CERT} ${HENB_BUNDLE_KEY} ${HENB_BUNDLE_INTERMEDIATE}; do
        if [ ! -r "$f" ]; then
            bbfatal "$f (HENB_BUNDLE_CERT, HENB_BUNDLE_KEY or HENB_BUNDLE_INTERMEDIATE) is not a readable file"
        fi
    done
    image=${DEPLOY_DIR_IMAGE}/${HENB_BUNDLE_IMAGE_LINK_NAME}.${HENB_BUNDLE_IMAGE_FSTYPE}
    if [ ! -r "$image" ]; then
        bbfatal "$image is not there: HENB_BUNDLE_IMAGE_FSTYPE must be in the image's IMAGE_FSTYPES, and HENB_BUNDLE_IMAGE_LINK_NAME its IMAGE_LINK_NAME"
    fi
    rm -rf ${B}/content ${B}/slot ${B}/out
    mkdir -p ${B}/content ${B}/slot ${B}/out
    cp -L "$image" ${B}/content/rootfs.ext4
    # The boot files the bootloader will measure, from the slot image itself.
    debugfs -R "rdump /boot ${B}/slot" ${B}/content/rootfs.ext4
    slots=""
    for s in ${HENB_BUNDLE_BOOTNAMES}; do
        slots="$slots --slot $s"
    done
    henb-update reference-values --grub-config ${B}/slot/boot/grub.cfg --slot-root ${B}/slot $slots \
        > ${B}/reference-values
    printf '[update]\ncompatible=%s\nversion=%s\n\n[image.rootfs]\nfilename=rootfs.ext4\n\n[meta.anti-rollback]\nsecurity-version=%s\n' \
        "${HENB_BUNDLE_COMPATIBLE}" "${HENB_BUNDLE_VERSION}" "${HENB_BUNDLE_SECURITY_VERSION}" > ${B}/content/manifest.raucm
    intermediate=""
    if [ -n "${HENB_BUNDLE_INTERMEDIATE}" ]; then
        intermediate="--intermediate ${HENB_BUNDLE_INTERMEDIATE}"
    fi
    for f in ${HENB_BUNDLE_FORMATS}; do
        case "$f" in
            tr069) suffix=tr069 ;;
            *) suffix=raucb ;;
        esac
        henb-update bundle --format $f --cert ${HENB_BUNDLE_CERT} --key ${HENB_BUNDLE_KEY} $intermediate \
            --reference-values ${B}/reference-values ${B}/content ${B}/out/${HENB_BUNDLE_NAME}.$f.$suffix
    done
}
addtask bundle after do_configure before do_deploy
do_bundle[cleandirs] = "${B}"
do_bundle[depends] += "henb-update-native:do_populate_sysroot squashfs-tools-native:do_populate_sysroot e2fsprogs-native:do_populate_sysroot"
do_bundle[depends] += "${@'%s:do_image_complete' % d.getVar('HENB_BUNDLE_IMAGE') if d.getVar('HENB_BUNDLE_IMAGE') else ''}"
# A new key or certificate rebuilds the packages (":True": checksummed, unlike ":False").
do_bundle[file-checksums] += "${@' '.join('%s:True' % f for f in (d.getVar('HENB_BUNDLE_CERT') or '').split() + (d.getVar('HENB_BUNDLE_KEY') or '').split() + (d.getVar('HENB_BUNDLE_INTERMEDIATE') or '').split())}"
do_bundle[vardeps] += "HENB_BUNDLE_IMAGE_LINK_NAME HENB_BUNDLE_VERSION HENB_BUNDLE_COMPATIBLE HENB_BUNDLE_SECURITY_VERSION HENB_BUNDLE_BOOTNAMES HENB_BUNDLE_FORMATS"

do_deploy() {
    install -m 0644 ${B}/out/* ${DEPLOYDIR}/
}
addtask deploy after do_bundle before do_build
