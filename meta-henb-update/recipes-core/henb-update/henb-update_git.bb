require henb-update.inc

PV = "0.1.0+git"

# Products pin their release: SRC_URI and SRCREV from a bbappend or local.conf. SRCREV must
# be a commit whose Cargo.lock is the one henb-update-crates.inc was generated from
# (scripts/crates-inc.py; CI checks crates.inc against the tree's Cargo.lock).
SRC_URI = "git://github.com/henb-update/henb-update.git;protocol=https;branch=main \
           file://henb-update-boot-check.service \
           file://henb-update-mark-good.service \
           file://henb-provision \
           "
SRCREV = "e5503ffd8f56c9827e6ad6bf6a6b587158235e20"

# After SRC_URI: it appends one crate:// entry per Cargo.lock package.
require henb-update-crates.inc
