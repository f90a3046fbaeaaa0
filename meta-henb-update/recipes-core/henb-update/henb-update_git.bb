require henb-update.inc
require henb-update-licenses.inc

# One release of the agent, pinned by scripts/release-layer.sh: SRCREV is the commit of its
# tag, PV its version, henb-update-crates.inc and henb-update-licenses.inc follow from its
# Cargo.lock. CI (scripts/check-srcrev.py) checks that this commit has every file, command
# and option the recipes and the class use. A product may pin another release the same way
# in a bbappend (SRCREV, PV and both .inc files together).
PV = "0.4.2"
SRC_URI = "git://github.com/henb-update/henb-update.git;protocol=https;branch=main \
           file://henb-update-boot-check.service \
           file://henb-update-mark-good.service \
           file://henb-provision \
           "
SRCREV = "f27b911f6205ac12aef2bee2720c4f3bdefbbd35"

# After SRC_URI: it appends one crate:// entry per Cargo.lock package.
require henb-update-crates.inc
