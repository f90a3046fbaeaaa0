#!/bin/bash
# make-pki.sh OUTDIR -- create a fresh test PKI for henb-update (in the spirit of
# RAUC's test/openssl-ca). Needs only the `openssl` binary (OpenSSL 3.0, Debian 12).
#
# Every certificate is issued with `openssl ca` (OpenSSL 3.0's `x509`/`req -x509`
# cannot set an explicit notBefore), from a throw-away config and database in a
# temp dir. Output (PEM; keys are unencrypted PKCS#8 as `openssl genpkey` writes them):
#
#   NAME.cert.pem / NAME.key.pem for
#     root            self-signed, RSA-2048           (trust anchor)
#     root-ec         self-signed, EC P-384           (trust anchor)
#     release-ca      intermediate of root, RSA-2048, pathlen:0
#     dev-ca          intermediate of root, EC P-256, pathlen:0
#     signer-rsa      RSA-2048, by release-ca
#     signer-rsa-b    RSA-2048, by release-ca (second signer for multi-signer tests)
#     signer-p256     EC P-256, by release-ca
#     signer-p384     EC P-384, by release-ca
#     signer-ec-root  EC P-256, directly by root-ec (no intermediate)
#     signer-dev      EC P-256, by dev-ca
#     signer-expired  EC P-256, by release-ca, valid 2020-01-01..2021-01-01
#     signer-notyet   EC P-256, by release-ca, valid 2048-01-01..2049-01-01
#     signer-wrong-eku EC P-256, by release-ca, EKU serverAuth only
#     signer-noeku    EC P-256, by release-ca, no EKU extension at all
#     signer-rsa1024  RSA-1024, by release-ca
#     signer-sha1cert RSA-2048, by release-ca, certificate signed with sha1WithRSA
#     untrusted-root  self-signed, EC P-256 (NOT in keyring.pem)
#     signer-untrusted EC P-256, by untrusted-root, EKU codeSigning
#   keyring.pem            root + root-ec certificates (the trust anchors)
#   release-ca.chain.pem   release-ca certificate (pass with `openssl cms -certfile`)
#   dev-ca.chain.pem       dev-ca certificate
#   untrusted-keyring.pem  untrusted-root certificate
#
# Unless stated, validity is 2020-01-01 00:00:00Z .. 2049-12-31 23:59:59Z and
# certificates are signed with SHA-256. Signers: basicConstraints critical CA:FALSE,
# keyUsage critical digitalSignature, extendedKeyUsage codeSigning (non-critical),
# SKI + AKI. CAs: basicConstraints critical CA:TRUE (+ pathlen:0 for intermediates),
# keyUsage critical keyCertSign,cRLSign, SKI (+ AKI for intermediates).
# Serial numbers are random (`openssl ca -rand_serial`), so two runs never produce
# colliding issuer/serial pairs; file names are fixed.
#
# OpenSSL notes:
#  * `openssl cms -verify` defaults to the S/MIME signing purpose, which rejects a
#    signer whose EKU lacks emailProtection: verify codeSigning signers with
#    `-purpose any` (OpenSSL 3.0 has no "codesign" purpose; 3.2+ has).
#  * Dates: 2049 and earlier are encoded as UTCTime (RFC 5280), so the same
#    -startdate/-enddate strings always give the same encoding.
#  * `openssl verify` does not enforce a security level unless -auth_level is given,
#    so signer-rsa1024 / signer-sha1cert verify "OK" by default; they fail with
#    `-auth_level 2` (the verifier under test must reject them itself).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -e "$OUT/root.cert.pem" ]; then
    echo "$0: $OUT already holds a PKI; use a fresh directory" >&2
    exit 1
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOG=$WORK/log

START=20200101000000Z
END=20491231235959Z
ORG="henb-update test PKI"

# run CMD...: run quietly, show the command's output only on failure.
run() {
    if ! "$@" >"$LOG" 2>&1; then
        echo "$0: failed: $*" >&2
        cat "$LOG" >&2
        exit 1
    fi
}

# Throw-away config shared by all CAs; each CA gets its own database dir via $ENV::CADIR.
CONF=$WORK/openssl.cnf
cat >"$CONF" <<'EOF'
[ ca ]
default_ca = CA_default

[ CA_default ]
dir             = $ENV::CADIR
database        = $dir/index.txt
new_certs_dir   = $dir/newcerts
serial          = $dir/serial
default_md      = sha256
policy          = policy_any
unique_subject  = no
copy_extensions = none
email_in_dn     = no

[ policy_any ]
commonName             = supplied
organizationName       = optional
organizationalUnitName = optional

[ req ]
distinguished_name = req_dn
prompt             = no
[ req_dn ]
CN = unused

[ v3_root ]
basicConstraints     = critical, CA:TRUE
keyUsage             = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_intermediate ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_signer ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = codeSigning
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_signer_serverauth ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_signer_noeku ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
EOF
export CADIR=/nonexistent

# genkey NAME TYPE   (TYPE: rsa2048 | rsa1024 | p256 | p384)
genkey() {
    local name=$1 type=$2 key=$OUT/$1.key.pem
    case $type in
        rsa2048) run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" ;;
        rsa1024) run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$key" ;;
        p256)    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
                     -pkeyopt ec_param_enc:named_curve -out "$key" ;;
        p384)    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 \
                     -pkeyopt ec_param_enc:named_curve -out "$key" ;;
        *) echo "$0: bad key type $type" >&2; exit 1 ;;
    esac
    run openssl req -config "$CONF" -new -key "$key" \
        -subj "/O=$ORG/CN=henb-update test $name" -out "$WORK/$name.csr"
}

# cadb NAME: create the database dir of CA NAME
cadb() {
    mkdir -p "$WORK/ca-$1/newcerts"
    : >"$WORK/ca-$1/index.txt"
}

# selfsign NAME: issue NAME's self-signed CA certificate
selfsign() {
    local name=$1
    cadb "$name"
    CADIR=$WORK/ca-$name run openssl ca -config "$CONF" -batch -notext -rand_serial -preserveDN \
        -selfsign -keyfile "$OUT/$name.key.pem" -in "$WORK/$name.csr" \
        -startdate "$START" -enddate "$END" -md sha256 -extensions v3_root \
        -out "$OUT/$name.cert.pem"
}

# issue NAME ISSUER EXTSECTION [STARTDATE ENDDATE [MD]]
issue() {
    local name=$1 issuer=$2 ext=$3 start=${4:-$START} end=${5:-$END} md=${6:-sha256}
    CADIR=$WORK/ca-$issuer run openssl ca -config "$CONF" -batch -notext -rand_serial -preserveDN \
        -cert "$OUT/$issuer.cert.pem" -keyfile "$OUT/$issuer.key.pem" \
        -in "$WORK/$name.csr" -startdate "$start" -enddate "$end" -md "$md" \
        -extensions "$ext" -out "$OUT/$name.cert.pem"
}

# --- trust anchors and intermediates
genkey root rsa2048;           selfsign root
genkey root-ec p384;           selfsign root-ec
genkey untrusted-root p256;    selfsign untrusted-root
genkey release-ca rsa2048;     issue release-ca root v3_intermediate; cadb release-ca
genkey dev-ca p256;            issue dev-ca root v3_intermediate;     cadb dev-ca

# --- signers
genkey signer-rsa rsa2048;        issue signer-rsa release-ca v3_signer
genkey signer-rsa-b rsa2048;      issue signer-rsa-b release-ca v3_signer
genkey signer-p256 p256;          issue signer-p256 release-ca v3_signer
genkey signer-p384 p384;          issue signer-p384 release-ca v3_signer
genkey signer-ec-root p256;       issue signer-ec-root root-ec v3_signer
genkey signer-dev p256;           issue signer-dev dev-ca v3_signer
genkey signer-expired p256;       issue signer-expired release-ca v3_signer 20200101000000Z 20210101000000Z
genkey signer-notyet p256;        issue signer-notyet release-ca v3_signer 20480101000000Z 20490101000000Z
genkey signer-wrong-eku p256;     issue signer-wrong-eku release-ca v3_signer_serverauth
genkey signer-noeku p256;         issue signer-noeku release-ca v3_signer_noeku
genkey signer-rsa1024 rsa1024;    issue signer-rsa1024 release-ca v3_signer
genkey signer-sha1cert rsa2048;   issue signer-sha1cert release-ca v3_signer "$START" "$END" sha1
genkey signer-untrusted p256;     issue signer-untrusted untrusted-root v3_signer

# --- bundles
cat "$OUT/root.cert.pem" "$OUT/root-ec.cert.pem" >"$OUT/keyring.pem"
cp "$OUT/release-ca.cert.pem" "$OUT/release-ca.chain.pem"
cp "$OUT/dev-ca.cert.pem" "$OUT/dev-ca.chain.pem"
cp "$OUT/untrusted-root.cert.pem" "$OUT/untrusted-keyring.pem"

# --- self-check
# expect_ok CAFILE UNTRUSTED CERT [extra verify options]
expect_ok() {
    local ca=$1 untrusted=$2 cert=$3
    shift 3
    local args=(-x509_strict -CAfile "$OUT/$ca")
    [ -n "$untrusted" ] && args+=(-untrusted "$OUT/$untrusted")
    if ! out=$(openssl verify "${args[@]}" "$@" "$OUT/$cert" 2>&1) || [ "$out" != "$OUT/$cert: OK" ]; then
        echo "$0: self-check: $cert should verify:" >&2
        echo "$out" >&2
        exit 1
    fi
}
# expect_fail CAFILE UNTRUSTED CERT [extra verify options]
expect_fail() {
    local ca=$1 untrusted=$2 cert=$3
    shift 3
    local args=(-CAfile "$OUT/$ca")
    [ -n "$untrusted" ] && args+=(-untrusted "$OUT/$untrusted")
    if openssl verify "${args[@]}" "$@" "$OUT/$cert" >/dev/null 2>&1; then
        echo "$0: self-check: $cert unexpectedly verifies with $ca $*" >&2
        exit 1
    fi
}
for s in signer-rsa signer-rsa-b signer-p256 signer-p384 signer-rsa1024 signer-sha1cert; do
    expect_ok keyring.pem release-ca.chain.pem "$s.cert.pem"
done
expect_ok root.cert.pem release-ca.cert.pem signer-rsa.cert.pem -purpose any
expect_ok keyring.pem "" signer-ec-root.cert.pem
expect_ok keyring.pem dev-ca.chain.pem signer-dev.cert.pem
expect_ok keyring.pem release-ca.chain.pem signer-wrong-eku.cert.pem -purpose sslserver
expect_ok keyring.pem release-ca.chain.pem signer-noeku.cert.pem
expect_ok untrusted-keyring.pem "" signer-untrusted.cert.pem
expect_ok root.cert.pem "" release-ca.cert.pem
expect_ok root.cert.pem "" dev-ca.cert.pem
expect_ok root-ec.cert.pem "" root-ec.cert.pem
expect_fail keyring.pem release-ca.chain.pem signer-expired.cert.pem
expect_fail keyring.pem release-ca.chain.pem signer-notyet.cert.pem
expect_ok keyring.pem release-ca.chain.pem signer-expired.cert.pem -attime 1593561600   # 2020-07-01
expect_ok keyring.pem release-ca.chain.pem signer-notyet.cert.pem -attime 2474582400    # 2048-06-01
expect_fail keyring.pem "" signer-rsa.cert.pem                       # intermediate missing
expect_fail keyring.pem release-ca.chain.pem signer-untrusted.cert.pem
expect_fail root-ec.cert.pem release-ca.chain.pem signer-rsa.cert.pem
expect_fail keyring.pem release-ca.chain.pem signer-rsa1024.cert.pem -auth_level 2
expect_fail keyring.pem release-ca.chain.pem signer-sha1cert.cert.pem -auth_level 2
# extension / date spot checks
# expect_text CERT X509-OPTIONS... -- EXPECTED-SUBSTRING
expect_text() {
    local cert=$1 want=${!#} out
    out=$(openssl x509 -in "$OUT/$cert" -noout "${@:2:$#-3}" 2>&1)
    if [[ $out != *"$want"* ]]; then
        echo "$0: self-check: $cert ${*:2:$#-3}: want '$want', got:" >&2
        echo "$out" >&2
        exit 1
    fi
}
expect_text signer-rsa.cert.pem -ext extendedKeyUsage -- "Code Signing"
expect_text signer-wrong-eku.cert.pem -ext extendedKeyUsage -- "TLS Web Server Authentication"
if openssl x509 -in "$OUT/signer-noeku.cert.pem" -noout -ext extendedKeyUsage 2>/dev/null | grep -q .; then
    echo "$0: self-check: signer-noeku has an EKU" >&2; exit 1
fi
expect_text signer-sha1cert.cert.pem -text -- "Signature Algorithm: sha1WithRSAEncryption"
expect_text signer-rsa1024.cert.pem -text -- "Public-Key: (1024 bit)"
expect_text signer-rsa.cert.pem -startdate -- "notBefore=Jan  1 00:00:00 2020 GMT"
expect_text signer-rsa.cert.pem -enddate -- "notAfter=Dec 31 23:59:59 2049 GMT"
expect_text signer-expired.cert.pem -enddate -- "notAfter=Jan  1 00:00:00 2021 GMT"
expect_text signer-notyet.cert.pem -startdate -- "notBefore=Jan  1 00:00:00 2048 GMT"
expect_text release-ca.cert.pem -ext basicConstraints -- "CA:TRUE, pathlen:0"

echo "test PKI written to $OUT"
