# nooelint: oelint.var.mandatoryvar.SRC_URI - nothing to fetch: the packages are made from an image
SUMMARY = "Demo update packages of core-image-minimal for henb-update"
DESCRIPTION = "Signed RAUC bundle and TR-069 package of the demo image, with its reference values."
HOMEPAGE = "https://github.com/henb-update/henb-update"
LICENSE = "MIT"

inherit henb_bundle

HENB_BUNDLE_IMAGE = "core-image-minimal"
# Development keys: made by the project's tests/pki/make-pki.sh, never shipped in the layer.
# HENB_BUNDLE_CERT = "/path/to/signer.cert.pem"
# HENB_BUNDLE_KEY = "/path/to/signer.key.pem"
