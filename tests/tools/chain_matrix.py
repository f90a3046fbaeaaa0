#!/usr/bin/env python3
"""chain_matrix.py [--crl] OUTDIR -- certificate chains with one defect or variant each, made by
`openssl ca`, for the differential test of `henb-update check-chain` against
`openssl verify -x509_strict` (tests/chains.rs).

Every case directory holds leaf.pem, keyring.pem (the trust anchors), untrusted.pem
(candidate intermediates, possibly empty) and case.json:
  {"name", "purpose": "smimesign"|"any", "attime": epoch seconds or null,
   "partial": bool, "documented": null or the id of a deliberate difference listed in
   docs/verification.md}
Keys are EC P-256 unless a case says otherwise; validity 2020-01-01..2049-12-31.
"""
import json
import os
import subprocess
import sys
import tempfile

START, END = "20200101000000Z", "20491231235959Z"
# Attimes for validity cases: mid-2030 is inside the default validity.
T2030 = 1909000000

CRL_MODE = sys.argv[1:2] == ["--crl"]
OUT = sys.argv[-1]
os.makedirs(OUT, exist_ok=True)
WORK = tempfile.mkdtemp()

CONF_HEAD = """
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
[ req ]
distinguished_name = req_dn
prompt             = no
[ req_dn ]
CN = unused
[ dir_ok ]
O = henb-update chains
[ dir_other ]
O = somebody else
"""

ROOT = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash"]
INT = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign",
       "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid:always"]
LEAF = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=codeSigning,emailProtection", "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid:always"]


def run(*cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"chain_matrix: failed: {' '.join(cmd)}\n{r.stderr}{r.stdout}")
    return r.stdout


def with_ext(base, key, value):
    """base with the extension `key` replaced (value None: removed)."""
    out = [e for e in base if not e.startswith(key + "=")]
    if value is not None:
        out.append(f"{key}={value}")
    return out


class Case:
    def __init__(self, name, purpose="smimesign", attime=None, partial=False, documented=None):
        self.name, self.purpose, self.attime, self.partial, self.documented = name, purpose, attime, partial, documented
        self.dir = os.path.join(OUT, name)
        os.makedirs(self.dir)
        self.work = os.path.join(WORK, name)
        os.makedirs(self.work)
        self.n = 0

    def key(self, kind="p256"):
        self.n += 1
        path = os.path.join(self.work, f"k{self.n}.pem")
        if kind == "p256":
            run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
        else:
            run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{kind[3:]}", "-out", path)
        return path

    def cert(self, cn, key, issuer=None, ext=None, start=START, end=END, md="sha256", dn_o=None):
        """Issue a certificate for `key` named CN=cn; issuer: (cert, key) or None for
        self-signed; ext: list of extension lines (None: a v1 certificate)."""
        self.n += 1
        base = os.path.join(self.work, f"c{self.n}")
        conf = base + ".cnf"
        with open(conf, "w") as f:
            f.write(CONF_HEAD)
            if ext is not None:
                f.write("[ x ]\n" + "\n".join(ext) + "\n")
        cadir = base + ".ca"
        os.makedirs(cadir + "/newcerts")
        open(cadir + "/index.txt", "w").close()
        env = dict(os.environ, CADIR=cadir)
        subj = f"/O={dn_o or 'henb-update chains'}/CN={cn}"
        run("openssl", "req", "-config", conf, "-new", "-key", key, "-subj", subj, "-out", base + ".csr", env=env)
        cmd = ["openssl", "ca", "-config", conf, "-batch", "-notext", "-rand_serial", "-preserveDN",
               "-in", base + ".csr", "-startdate", start, "-enddate", end, "-md", md, "-out", base + ".pem"]
        if ext is not None:
            cmd += ["-extensions", "x"]
        if issuer is None:
            cmd += ["-selfsign", "-keyfile", key]
        else:
            cmd += ["-cert", issuer[0], "-keyfile", issuer[1]]
        run(*cmd, env=env)
        return base + ".pem"

    def write(self, leaf, keyring, untrusted=(), leaf_key=None):
        def cat(paths, name):
            with open(os.path.join(self.dir, name), "w") as f:
                for p in paths:
                    f.write(open(p).read())
        cat([leaf], "leaf.pem")
        if leaf_key:
            cat([leaf_key], "leaf.key.pem")
        cat(keyring, "keyring.pem")
        cat(untrusted, "untrusted.pem")
        with open(os.path.join(self.dir, "case.json"), "w") as f:
            json.dump({"name": self.name, "purpose": self.purpose, "attime": self.attime,
                       "partial": self.partial, "documented": self.documented}, f)


def chain(name, root_ext=ROOT, int_exts=(INT,), leaf_ext=LEAF, root_dates=(START, END), int_dates=None,
          leaf_dates=(START, END), root_md="sha256", int_md="sha256", leaf_md="sha256", int_key="p256",
          leaf_key="p256", extra_untrusted=0, reverse=False, keyring_ints=False, only_ints_in_keyring=False,
          **kw):
    """root -> intermediates (int_exts, top first) -> leaf, with per-part variations."""
    c = Case(name, **kw)
    rk = c.key()
    root = c.cert("Root", rk, None, root_ext, *root_dates, md=root_md)
    issuer = (root, rk)
    ints = []
    for i, e in enumerate(int_exts):
        k = c.key(int_key)
        dates = (int_dates or {}).get(i, (START, END))
        cert = c.cert(f"Intermediate {i}", k, issuer, e, *dates, md=int_md)
        ints.append(cert)
        issuer = (cert, k)
    lk = c.key(leaf_key)
    leaf = c.cert("Signer", lk, issuer, leaf_ext, *leaf_dates, md=leaf_md)
    untrusted = list(reversed(ints)) if reverse else list(ints)
    for i in range(extra_untrusted):
        ok = c.key()
        untrusted.insert(i, c.cert(f"Unrelated {i}", ok, None, ROOT))
    keyring = [root]
    if only_ints_in_keyring:
        keyring, untrusted = ints[-1:], ints[:-1]
    elif keyring_ints:
        keyring = [root] + ints
        untrusted = []
    c.write(leaf, keyring, untrusted, lk)


def leaf_variant(name, **ext):
    """The default 1-intermediate chain with leaf extensions changed: key=value or None."""
    purpose = ext.pop("purpose", "smimesign")
    documented = ext.pop("documented", None)
    leaf = LEAF
    for k, v in ext.items():
        leaf = with_ext(leaf, k, v)
    chain(name, leaf_ext=leaf, purpose=purpose, documented=documented)


def int_variant(name, purpose="smimesign", documented=None, **ext):
    e = INT
    for k, v in ext.items():
        e = with_ext(e, k, v)
    chain(name, int_exts=(e,), purpose=purpose, documented=documented)


def root_variant(name, purpose="smimesign", documented=None, **ext):
    e = ROOT
    for k, v in ext.items():
        e = with_ext(e, k, v)
    chain(name, root_ext=e, purpose=purpose, documented=documented)


def matrix():
    # --- the good paths and their shapes
    chain("ok-one-intermediate")
    chain("ok-direct", int_exts=())
    chain("ok-two-intermediates", int_exts=(INT, INT))
    chain("ok-any-purpose", purpose="any")
    chain("ok-reversed-intermediates", int_exts=(INT, INT, INT), reverse=True)
    chain("ok-unrelated-certificates", extra_untrusted=2)
    chain("ok-rsa-intermediate", int_key="rsa2048")
    chain("ok-rsa-signer", leaf_key="rsa2048")
    chain("ok-intermediates-in-keyring", keyring_ints=True)
    chain("ok-sha384-signatures", root_md="sha384", int_md="sha384", leaf_md="sha384")
    chain("ok-past-time", attime=T2030)
    # --- finding 1: issuers and key usage
    int_variant("int-no-keycertsign", keyUsage="critical,digitalSignature,cRLSign")
    int_variant("int-no-keycertsign-any", purpose="any", keyUsage="critical,digitalSignature,cRLSign")
    int_variant("int-no-keyusage", keyUsage=None, documented="ca-without-key-usage")
    int_variant("int-keycertsign-only", keyUsage="critical,keyCertSign")
    root_variant("root-no-keycertsign", keyUsage="critical,digitalSignature,cRLSign")
    root_variant("root-no-keyusage", keyUsage=None, documented="ca-without-key-usage")
    # --- basicConstraints
    int_variant("int-ca-false", basicConstraints="critical,CA:FALSE")
    int_variant("int-no-basic-constraints", basicConstraints=None)
    int_variant("int-basic-constraints-not-critical", basicConstraints="CA:TRUE", documented="profile-basic-constraints-critical")
    root_variant("root-ca-false", basicConstraints="critical,CA:FALSE")
    root_variant("root-no-basic-constraints", basicConstraints=None)
    leaf_variant("leaf-is-ca", basicConstraints="critical,CA:TRUE", documented="signer-is-ca")
    leaf_variant("leaf-no-basic-constraints", basicConstraints=None)
    # --- v1 certificates
    chain("int-v1", int_exts=(None,), leaf_ext=with_ext(LEAF, "authorityKeyIdentifier", None))
    chain("root-v1", root_ext=None, int_exts=(with_ext(INT, "authorityKeyIdentifier", None),))
    # --- pathLenConstraint
    chain("pathlen0-two-intermediates", int_exts=(with_ext(INT, "basicConstraints", "critical,CA:TRUE,pathlen:0"), INT))
    chain("pathlen1-two-intermediates", int_exts=(with_ext(INT, "basicConstraints", "critical,CA:TRUE,pathlen:1"), INT))
    chain("pathlen0-one-intermediate", int_exts=(with_ext(INT, "basicConstraints", "critical,CA:TRUE,pathlen:0"),))
    chain("root-pathlen0-one-intermediate", root_ext=with_ext(ROOT, "basicConstraints", "critical,CA:TRUE,pathlen:0"))
    chain("root-pathlen0-direct", int_exts=(), root_ext=with_ext(ROOT, "basicConstraints", "critical,CA:TRUE,pathlen:0"))
    chain("root-pathlen1-two-intermediates", int_exts=(INT, INT),
          root_ext=with_ext(ROOT, "basicConstraints", "critical,CA:TRUE,pathlen:1"))
    # --- validity (at the default time: now)
    chain("int-expired", int_dates={0: (START, "20210101000000Z")})
    chain("int-not-yet-valid", int_dates={0: ("20480101000000Z", END)})
    chain("root-expired", root_dates=(START, "20210101000000Z"))
    chain("root-not-yet-valid", root_dates=("20480101000000Z", END))
    chain("leaf-expired", leaf_dates=(START, "20210101000000Z"))
    chain("leaf-not-yet-valid", leaf_dates=("20480101000000Z", END))
    chain("leaf-expired-attime-inside", leaf_dates=(START, "20210101000000Z"), attime=1593561600)
    chain("int-expired-attime-after", int_dates={0: (START, "20300101000000Z")}, attime=T2030)
    # --- critical extensions
    leaf_variant("leaf-unknown-critical", **{"1.3.6.1.4.1.55555.1": "critical,DER:0500"})
    leaf_variant("leaf-unknown-noncritical", **{"1.3.6.1.4.1.55555.1": "DER:0500"})
    int_variant("int-unknown-critical", **{"1.3.6.1.4.1.55555.1": "critical,DER:0500"})
    root_variant("root-unknown-critical", **{"1.3.6.1.4.1.55555.1": "critical,DER:0500"})
    int_variant("int-policies-critical", **{"certificatePolicies": "critical,1.3.6.1.4.1.55555.7"},
                documented="critical-policies")
    # --- extended key usage per purpose
    leaf_variant("leaf-eku-serverauth", extendedKeyUsage="serverAuth")
    leaf_variant("leaf-eku-serverauth-any", extendedKeyUsage="serverAuth", purpose="any")
    leaf_variant("leaf-eku-email", extendedKeyUsage="emailProtection")
    leaf_variant("leaf-eku-codesigning-only", extendedKeyUsage="codeSigning")
    leaf_variant("leaf-eku-codesigning-only-any", extendedKeyUsage="codeSigning", purpose="any")
    leaf_variant("leaf-no-eku", extendedKeyUsage=None)
    leaf_variant("leaf-eku-any-eku", extendedKeyUsage="anyExtendedKeyUsage")
    int_variant("int-eku-serverauth", extendedKeyUsage="serverAuth")
    int_variant("int-eku-email", extendedKeyUsage="emailProtection")
    int_variant("int-eku-serverauth-any", purpose="any", extendedKeyUsage="serverAuth")
    root_variant("root-eku-serverauth", extendedKeyUsage="serverAuth")
    # --- the signer's key usage
    leaf_variant("leaf-ku-keyencipherment", keyUsage="critical,keyEncipherment")
    leaf_variant("leaf-ku-nonrepudiation", keyUsage="critical,nonRepudiation")
    leaf_variant("leaf-ku-keyencipherment-any", keyUsage="critical,keyEncipherment", purpose="any",
                 documented="signer-key-usage-any")
    leaf_variant("leaf-no-keyusage", keyUsage=None)
    # --- names and key identifiers
    leaf_variant("leaf-aki-mismatch", authorityKeyIdentifier=None,
                 **{"2.5.29.35": "DER:30:16:80:14:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33"})
    leaf_variant("leaf-duplicate-extension", **{"2.5.29.15": "critical,DER:03:02:07:80"})
    leaf_variant("leaf-no-aki", authorityKeyIdentifier="none", documented="profile-key-identifiers")
    chain("int-no-ski", int_exts=(with_ext(INT, "subjectKeyIdentifier", "none"),),
          leaf_ext=with_ext(LEAF, "authorityKeyIdentifier", "none"), documented="profile-key-identifiers")
    # --- algorithms
    chain("int-rsa1024", int_key="rsa1024")
    chain("leaf-rsa1024", leaf_key="rsa1024")
    chain("int-signed-sha1", int_md="sha1")
    chain("leaf-signed-sha1", leaf_md="sha1")
    chain("root-self-signed-sha1", root_md="sha1")
    # --- nameConstraints
    NC_DNS = "critical,permitted;DNS:example.com"
    chain("nc-dns-permitted-inside", int_exts=(INT + ["nameConstraints=" + NC_DNS],),
          leaf_ext=LEAF + ["subjectAltName=DNS:signer.example.com"])
    chain("nc-dns-permitted-outside", int_exts=(INT + ["nameConstraints=" + NC_DNS],),
          leaf_ext=LEAF + ["subjectAltName=DNS:signer.example.org"])
    chain("nc-dns-excluded", int_exts=(INT + ["nameConstraints=critical,excluded;DNS:example.com"],),
          leaf_ext=LEAF + ["subjectAltName=DNS:signer.example.com"])
    chain("nc-email-outside", int_exts=(INT + ["nameConstraints=critical,permitted;email:example.com"],),
          leaf_ext=LEAF + ["subjectAltName=email:signer@example.org"])
    chain("nc-dirname-inside", int_exts=(INT + ["nameConstraints=critical,permitted;dirName:dir_ok"],),
          documented="directory-name-constraints")
    chain("nc-dirname-outside", int_exts=(INT + ["nameConstraints=critical,permitted;dirName:dir_other"],))
    # --- anchors
    chain("partial-chain", only_ints_in_keyring=True)
    chain("partial-chain-allowed", only_ints_in_keyring=True, partial=True)
    chain("partial-chain-two-intermediates-allowed", int_exts=(INT, INT), only_ints_in_keyring=True, partial=True)


def special():
    # A signer issued by an intermediate whose name is not the one carried.
    c = Case("issuer-name-mismatch")
    rk = c.key()
    root = c.cert("Root", rk, None, ROOT)
    ik = c.key()
    int_a = c.cert("Intermediate A", ik, (root, rk), INT)
    int_b = c.cert("Intermediate B", ik, (root, rk), INT)
    lk = c.key()
    leaf = c.cert("Signer", lk, (int_a, ik), LEAF)
    c.write(leaf, [root], [int_b], lk)
    # A self-signed signer, not trusted.
    c = Case("self-signed-leaf")
    rk = c.key()
    root = c.cert("Root", rk, None, ROOT)
    lk = c.key()
    leaf = c.cert("Signer", lk, None, LEAF)
    c.write(leaf, [root], [], lk)
    # A self-signed signer in the keyring.
    c = Case("self-signed-leaf-trusted", documented="anchor-is-ca")
    lk = c.key()
    leaf = c.cert("Signer", lk, None, LEAF)
    c.write(leaf, [leaf], [], lk)
    # The wrong root.
    c = Case("untrusted-root")
    rk = c.key()
    root = c.cert("Root", rk, None, ROOT)
    ok = c.key()
    other = c.cert("Other Root", ok, None, ROOT)
    ik = c.key()
    inter = c.cert("Intermediate", ik, (root, rk), INT)
    lk = c.key()
    c.write(c.cert("Signer", lk, (inter, ik), LEAF), [other], [inter], lk)
    # The intermediate is missing.
    c = Case("missing-intermediate")
    rk = c.key()
    root = c.cert("Root", rk, None, ROOT)
    ik = c.key()
    inter = c.cert("Intermediate", ik, (root, rk), INT)
    lk = c.key()
    c.write(c.cert("Signer", lk, (inter, ik), LEAF), [root], [], lk)
    # Two intermediates of one name and key: an expired one first, then a valid one.
    c = Case("two-candidates-first-expired")
    rk = c.key()
    root = c.cert("Root", rk, None, ROOT)
    ik = c.key()
    old = c.cert("Intermediate", ik, (root, rk), INT, START, "20210101000000Z")
    new = c.cert("Intermediate", ik, (root, rk), INT)
    lk = c.key()
    c.write(c.cert("Signer", lk, (new, ik), LEAF), [root], [old, new], lk)
    # Two intermediates of one name: one without keyCertSign, one good.
    c = Case("two-candidates-first-bad-key-usage", documented="path-building")
    rk = c.key()
    root = c.cert("Root", rk, None, ROOT)
    ik = c.key()
    bad = c.cert("Intermediate", ik, (root, rk), with_ext(INT, "keyUsage", "critical,digitalSignature"))
    good = c.cert("Intermediate", ik, (root, rk), INT)
    lk = c.key()
    c.write(c.cert("Signer", lk, (good, ik), LEAF), [root], [bad, good], lk)


class Ca:
    """A CA with a persistent `openssl ca` database, for revocations and CRLs."""

    def __init__(self, name, issuer=None, dn_name=None):
        self.name = name
        self.dir = os.path.join(WORK, "crl-" + name)
        os.makedirs(self.dir + "/newcerts")
        open(self.dir + "/index.txt", "w").close()
        with open(self.dir + "/crlnumber", "w") as f:
            f.write("1000\n")  # a crlnumber makes the CRLs v2 (RFC 5280 §5.2.3)
        self.conf = self.dir + "/ca.cnf"
        with open(self.conf, "w") as f:
            f.write(CONF_HEAD.replace("serial          = $dir/serial",
                                      "serial          = $dir/serial\ncrlnumber       = $dir/crlnumber"))
            f.write("[ root ]\n" + "\n".join(ROOT) + "\n[ int ]\n" + "\n".join(INT) +
                    "\n[ leaf ]\n" + "\n".join(LEAF) + "\n")
        self.env = dict(os.environ, CADIR=self.dir)
        self.key = os.path.join(OUT, name + ".key.pem")
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", self.key)
        self.cert = os.path.join(OUT, name + ".pem")
        if issuer is None:
            self._issue(self, self.key, dn_name or name, "root", self.cert, selfsign=True)
        else:
            issuer._issue(issuer, self.key, dn_name or name, "int", self.cert)

    def _issue(self, ca, key, cn, ext, out, selfsign=False):
        csr = out + ".csr"
        run("openssl", "req", "-config", self.conf, "-new", "-key", key, "-subj", f"/O=henb-update chains/CN={cn}",
            "-out", csr, env=self.env)
        cmd = ["openssl", "ca", "-config", self.conf, "-batch", "-notext", "-rand_serial", "-preserveDN", "-in", csr,
               "-startdate", START, "-enddate", END, "-extensions", ext, "-out", out]
        cmd += ["-selfsign", "-keyfile", key] if selfsign else ["-cert", self.cert, "-keyfile", self.key]
        run(*cmd, env=self.env)
        os.remove(csr)

    def leaf(self, name):
        key = os.path.join(OUT, name + ".key.pem")
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        out = os.path.join(OUT, name + ".pem")
        self._issue(self, key, name, "leaf", out)
        return out

    def revoke(self, cert):
        run("openssl", "ca", "-config", self.conf, "-revoke", cert, "-cert", self.cert, "-keyfile", self.key,
            env=self.env)

    def crl(self, name, last=None, next_=None, md="sha256", v1=False):
        out = os.path.join(OUT, name)
        conf = self.conf
        if v1:  # without a crlnumber, `openssl ca` writes a v1 CRL
            conf = self.conf + ".v1"
            with open(conf, "w") as f:
                f.write(open(self.conf).read().replace("crlnumber       = $dir/crlnumber\n", ""))
        cmd = ["openssl", "ca", "-config", conf, "-gencrl", "-cert", self.cert, "-keyfile", self.key,
               "-md", md, "-out", out]
        cmd += ["-crl_lastupdate", last or "20200101000000Z", "-crl_nextupdate", next_ or "20491231000000Z"]
        run(*cmd, env=self.env)
        return out


def crl_scenario():
    """root -> intermediate -> signer, plus the CRLs of the revocation tests (PEM, v2 unless
    named v1): root.crl (empty), root-revokes-int.crl, int.crl (empty),
    int-revokes-signer.crl (also -v1, -sha512, -sha1), int-expired.crl (nextUpdate 2021),
    int-future.crl (thisUpdate 2040, empty), other-revokes-signer.crl (another CA),
    forged-revokes-signer.crl (the intermediate's name, another key: forged.pem)."""
    root = Ca("root")
    inter = Ca("intermediate", root)
    signer = inter.leaf("signer")
    root.crl("root.crl")
    inter.crl("int.crl")
    inter.crl("int-expired.crl", "20200101000000Z", "20210101000000Z")
    other = Ca("other")
    other.revoke(signer)
    other.crl("other-revokes-signer.crl")
    forged = Ca("forged", dn_name="intermediate")
    forged.revoke(signer)
    forged.crl("forged-revokes-signer.crl")
    # Issued ahead of time (thisUpdate in 2040), before the revocation: lists nothing.
    inter.crl("int-future.crl", "20400101000000Z", "20491231000000Z")
    inter.revoke(signer)
    inter.crl("int-revokes-signer.crl")
    inter.crl("int-revokes-signer-v1.crl", v1=True)
    inter.crl("int-revokes-signer-sha512.crl", md="sha512")
    inter.crl("int-revokes-signer-sha1.crl", md="sha1")
    root.revoke(inter.cert)
    root.crl("root-revokes-int.crl")
    with open(os.path.join(OUT, "keyring.pem"), "w") as f:
        f.write(open(root.cert).read())


if CRL_MODE:
    crl_scenario()
    print(f"CRL scenario written to {OUT}")
else:
    matrix()
    special()
    print(f"chain matrix written to {OUT}")
