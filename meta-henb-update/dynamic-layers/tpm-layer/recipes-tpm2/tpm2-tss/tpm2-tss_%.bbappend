# henb-update-native links tpm2-tss (tss-esapi) even though the build-host tools
# (reference-values, bundle) never talk to a TPM.
BBCLASSEXTEND:append = " native"
