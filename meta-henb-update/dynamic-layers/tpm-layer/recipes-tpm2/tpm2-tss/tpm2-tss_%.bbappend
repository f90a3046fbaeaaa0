# henb-update-native links tpm2-tss (tss-esapi) even though the build-host tools
# (reference-values, bundle) never talk to a TPM. Adding a native variant changes nothing
# for the target package, but it is not "Yocto compatible" in the strict sense: drop this
# bbappend once meta-tpm provides tpm2-tss-native itself.
# nooelint: oelint.vars.noncoreoverride
BBCLASSEXTEND:append = " native"
