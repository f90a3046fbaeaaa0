#!/usr/bin/env python3
"""tr069_build.py -- independent builder of TR-069 Annex E signed packages (test tool).

Written straight from the Annex E tables (see /work/shared/reference/
tr069-signed-package.md); it shares no code with the Rust product on purpose, so
that the product's reader is tested against an independent producer. Python 3.11
stdlib only; signatures come from the `openssl` binary.

Package layout (all numbers big-endian unsigned 32-bit):

    [header, 24 octets][command list][signature block][payload files]

  header      "2WIRE_SP" | major=1 | minor=0 | command list length | payload length
  commands    TLVs: type u32 | length u32 | value, in this order:
                10 Version, 11 Description (UTF-8),
                1000 Compatible (UTF-8), 1001 Reference values (UTF-8 text of a file),
                1002 Security version (u32)            -- this product's vendor types
                20 Role (u32), 18/19 Minimum/Maximum Version (array of u32),
                file commands in command-line order:
                  1 Extract File / 3 Add File:
                      flags u32 (0) | path offset u32 | path length u32 |
                      hash type u32 | hash offset u32 | hash length u32 |
                      file offset u32 (from the start of the payload) | file length u32 |
                      path | hash
                    offsets count from the start of the value: path offset = 32,
                    hash offset = 32 + len(path).  Hash type 3 = SHA-256 (32 octets,
                    this product's default) or, with --sha1, 1 = SHA-1 (20 octets, the
                    strictly conformant annex value).
                  5 Remove File: flags | path offset | path length | path
                  8 Move File:   flags | src offset | src len | dst offset | dst len |
                                 src | dst
                  --raw-command TYPE HEX: any TLV (e.g. unknown types a reader must skip)
                16 Reboot (empty), 0 End (empty, only with --end; always last).
  signature   one DER ContentInfo/SignedData, detached (content absent), over
              header || command list, made by
                openssl cms -sign -binary -outform DER -md MD -in TMP \\
                    -signer C1 -inkey K1 [-signer C2 -inkey K2 ...] [-certfile CHAIN]
              There is no length field: the DER object's own length delimits it.
  payload     the files of the Extract/Add commands, back to back in command order.

Signers with different digests (e.g. a SHA-256 signer next to a legacy SHA-1/RSA one):
`openssl cms` applies one -md to every signer and `-resign` can only reuse an existing
digest, so the builder signs once per digest and merges the SignedData structures
(digestAlgorithms, certificates and signerInfos, each SET OF re-sorted as DER wants).

SHA-1: OpenSSL 3.0.x on Debian 12 signs with plain `openssl cms -sign -md sha1` and
verifies the result with plain `openssl cms -verify` (checked; no extra option needed):
the security-level rules that refuse SHA-1 apply to TLS (Debian: SECLEVEL=2) and to
`openssl verify -auth_level N`, not to CMS signing. On a system whose config or
provider does refuse it, the builder stops with openssl's error; `--openssl-arg`
passes extra options to every `openssl cms -sign`.

Verifying a package by hand (signed part = first 24 + command-list-length octets; the
signature is the DER object right after it):
  openssl cms -verify -binary -inform DER -in SIG.der -content SIGNED.bin \
      -CAfile root.cert.pem -purpose any -out /dev/null
`-purpose any` is needed: the default S/MIME purpose rejects codeSigning-only signers.

Usage examples:
  tr069_build.py --out pkg.bin --signer signer-rsa.cert.pem signer-rsa.key.pem \\
      --certfile release-ca.chain.pem --version 1.2.3 --compatible henb-test \\
      --security-version 4 --role 1 --extract /slot/rootfs=rootfs.img --reboot --end
  # strictly conformant legacy package: SHA-1 file hashes, SHA-1/RSA signature
  tr069_build.py --out legacy.bin --sha1 --md sha1 --signer c.pem k.pem ...
  # two signers: SHA-256 by default, SHA-1 for the second one
  tr069_build.py --out two.bin --signer a.cert a.key --signer b.cert b.key sha1 ...
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import subprocess
import sys
import tempfile

PREAMBLE = b"2WIRE_SP"
MAJOR, MINOR = 1, 0
CHUNK = 1 << 20
U32_MAX = 0xFFFFFFFF

T_END, T_EXTRACT, T_ADD, T_REMOVE, T_MOVE = 0, 1, 3, 5, 8
T_VERSION, T_DESCRIPTION, T_REBOOT = 10, 11, 16
T_MIN_VERSION, T_MAX_VERSION, T_ROLE = 18, 19, 20
T_COMPATIBLE, T_REFERENCE_VALUES, T_SECURITY_VERSION = 1000, 1001, 1002

HASH_SHA1, HASH_SHA256 = 1, 3
MDS = ("sha256", "sha384", "sha512", "sha1")


def die(msg: str) -> None:
    print(f"tr069_build: {msg}", file=sys.stderr)
    sys.exit(1)


def u32(n: int) -> bytes:
    if not 0 <= n <= U32_MAX:
        die(f"value {n} does not fit in u32")
    return struct.pack(">I", n)


def tlv(ctype: int, value: bytes) -> bytes:
    return u32(ctype) + u32(len(value)) + value


def path_bytes(p: str) -> bytes:
    if not p:
        die("empty path")
    return p.encode("utf-8")


def dotted(v: str) -> bytes:
    try:
        parts = [int(x, 10) for x in v.split(".")]
    except ValueError:
        die(f"bad dotted version {v!r}")
    return b"".join(u32(x) for x in parts)


def hash_file(fn: str, algo: str) -> tuple[bytes, int]:
    h = hashlib.new(algo)
    n = 0
    with open(fn, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.digest(), n


# --- ordered operations from the command line ------------------------------------

class Op(argparse.Action):
    """Append (kind, values) to args.ops, keeping command-line order across kinds."""

    def __call__(self, parser, ns, values, option_string=None):
        ops = getattr(ns, "ops", None) or []
        ops.append((self.dest, values))
        ns.ops = ops


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Build a TR-069 Annex E signed package (independent test builder).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Usage examples:", 1)[1])
    p.add_argument("--out", required=True, help="output package file")
    p.add_argument("--signer", nargs="+", action="append", default=[],
                   metavar="CERT KEY [MD]",
                   help="signer certificate and key (PEM); optional per-signer digest")
    p.add_argument("--certfile", action="append", default=[],
                   help="extra certificates (intermediates) to put in the SignedData")
    p.add_argument("--md", default="sha256", choices=MDS,
                   help="signature digest (default sha256)")
    p.add_argument("--sha1", action="store_true",
                   help="per-file hash type 1 = SHA-1 (20 octets) instead of 3 = SHA-256")
    p.add_argument("--version")
    p.add_argument("--description")
    p.add_argument("--compatible")
    p.add_argument("--security-version", type=int)
    p.add_argument("--reference-values", metavar="FILE")
    p.add_argument("--role", type=int)
    p.add_argument("--min-version", metavar="A.B.C")
    p.add_argument("--max-version", metavar="A.B.C")
    p.add_argument("--extract", action=Op, metavar="PATH=FILE",
                   help="Extract File (type 1); repeatable, kept in order")
    p.add_argument("--add", action=Op, metavar="PATH=FILE", help="Add File (type 3)")
    p.add_argument("--remove", action=Op, metavar="PATH", help="Remove File (type 5)")
    p.add_argument("--move", action=Op, nargs=2, metavar=("SRC", "DST"),
                   help="Move File (type 8)")
    p.add_argument("--raw-command", action=Op, nargs=2, metavar=("TYPE", "HEX"),
                   help="arbitrary TLV (type, hex value) at this position")
    p.add_argument("--reboot", action="store_true", help="Reboot (16) before End")
    p.add_argument("--end", action="store_true", help="End (0) as the last command")
    p.add_argument("--openssl", default="openssl", help="openssl binary")
    p.add_argument("--openssl-arg", action="append", default=[],
                   help="extra argument passed to every `openssl cms -sign`")
    a = p.parse_args(argv)
    if not a.signer:
        p.error("at least one --signer CERT KEY is required "
                "(openssl cannot write a SignedData with zero signers)")
    for s in a.signer:
        if len(s) not in (2, 3):
            p.error("--signer takes CERT KEY [MD]")
        if len(s) == 3 and s[2] not in MDS:
            p.error(f"--signer MD must be one of {', '.join(MDS)}")
    if not hasattr(a, "ops") or a.ops is None:
        a.ops = []
    return a


# --- command list ------------------------------------------------------------------

def file_value(path: str, hash_type: int, digest: bytes, offset: int, length: int) -> bytes:
    pb = path_bytes(path)
    head = 8 * 4
    return (u32(0) + u32(head) + u32(len(pb))
            + u32(hash_type) + u32(head + len(pb)) + u32(len(digest))
            + u32(offset) + u32(length) + pb + digest)


def build_commands(a) -> tuple[bytes, list[tuple[str, bytes, int]]]:
    """Return (command list, payload files as (filename, digest, length))."""
    cmds = []
    if a.version is not None:
        cmds.append(tlv(T_VERSION, a.version.encode("utf-8")))
    if a.description is not None:
        cmds.append(tlv(T_DESCRIPTION, a.description.encode("utf-8")))
    if a.compatible is not None:
        cmds.append(tlv(T_COMPATIBLE, a.compatible.encode("utf-8")))
    if a.reference_values is not None:
        try:
            with open(a.reference_values, "rb") as f:
                rv = f.read()
        except OSError as e:
            die(f"--reference-values {a.reference_values}: {e.strerror}")
        try:
            rv.decode("utf-8")
        except UnicodeDecodeError:
            die(f"{a.reference_values}: not UTF-8")
        cmds.append(tlv(T_REFERENCE_VALUES, rv))
    if a.security_version is not None:
        cmds.append(tlv(T_SECURITY_VERSION, u32(a.security_version)))
    if a.role is not None:
        cmds.append(tlv(T_ROLE, u32(a.role)))
    if a.min_version is not None:
        cmds.append(tlv(T_MIN_VERSION, dotted(a.min_version)))
    if a.max_version is not None:
        cmds.append(tlv(T_MAX_VERSION, dotted(a.max_version)))

    algo, htype = ("sha1", HASH_SHA1) if a.sha1 else ("sha256", HASH_SHA256)
    files = []
    offset = 0
    for kind, val in a.ops:
        if kind in ("extract", "add"):
            if "=" not in val:
                die(f"--{kind} wants PATH=FILE, got {val!r}")
            path, fn = val.split("=", 1)
            try:
                size = os.stat(fn).st_size
            except OSError as e:
                die(f"--{kind} {val}: {e.strerror}")
            if offset + size > U32_MAX:
                die("payload exceeds 4 GiB - 1 octets (u32 payload length and offsets)")
            digest, length = hash_file(fn, algo)
            cmds.append(tlv(T_EXTRACT if kind == "extract" else T_ADD,
                            file_value(path, htype, digest, offset, length)))
            files.append((fn, digest, length))
            offset += length
            if offset > U32_MAX:
                die("payload exceeds 4 GiB - 1 octets (u32 payload length and offsets)")
        elif kind == "remove":
            pb = path_bytes(val)
            cmds.append(tlv(T_REMOVE, u32(0) + u32(12) + u32(len(pb)) + pb))
        elif kind == "move":
            src, dst = path_bytes(val[0]), path_bytes(val[1])
            cmds.append(tlv(T_MOVE, u32(0) + u32(20) + u32(len(src))
                            + u32(20 + len(src)) + u32(len(dst)) + src + dst))
        elif kind == "raw_command":
            try:
                cmds.append(tlv(int(val[0], 0), bytes.fromhex(val[1])))
            except ValueError:
                die(f"bad --raw-command {val!r}")
        else:
            raise AssertionError(kind)
    if a.reboot:
        cmds.append(tlv(T_REBOOT, b""))
    if a.end:
        cmds.append(tlv(T_END, b""))
    cl = b"".join(cmds)
    if len(cl) >= 65536:
        die(f"command list is {len(cl)} octets; the annex requires < 65536")
    return cl, files


# --- minimal DER, only to merge SignedData from several `openssl cms` runs ----------

def der_read(buf: bytes, pos: int) -> tuple[int, int, int, int]:
    """Return (tag, content start, content end, element end) of the TLV at pos."""
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-octet tags not expected")
    ln = buf[pos + 1]
    p = pos + 2
    if ln & 0x80:
        k = ln & 0x7F
        if k == 0 or k > 4:
            raise ValueError("indefinite or huge length")
        ln = int.from_bytes(buf[p:p + k], "big")
        p += k
    return tag, p, p + ln, p + ln


def der_children(buf: bytes, start: int, end: int) -> list[bytes]:
    out, pos = [], start
    while pos < end:
        _, _, _, e = der_read(buf, pos)
        out.append(buf[pos:e])
        pos = e
    return out


def der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_len(len(content)) + content


def split_signed_data(ci: bytes) -> dict:
    tag, s, e, end = der_read(ci, 0)
    if tag != 0x30 or end != len(ci):
        raise ValueError("not a single DER ContentInfo")
    oid, ctx = der_children(ci, s, e)
    _, s0, e0, _ = der_read(ctx, 0)           # [0] EXPLICIT
    _, s1, e1, _ = der_read(ctx, s0)          # SignedData SEQUENCE
    parts = der_children(ctx, s1, e1)
    sd = {"oid": oid, "version": parts[0], "encap": parts[2],
          "certs": [], "crls": [], "digest_algs": [], "signer_infos": []}
    _, a, b, _ = der_read(parts[1], 0)
    sd["digest_algs"] = der_children(parts[1], a, b)
    for part in parts[3:]:
        t, a, b, _ = der_read(part, 0)
        kids = der_children(part, a, b)
        if t == 0xA0:
            sd["certs"] = kids
        elif t == 0xA1:
            sd["crls"] = kids
        elif t == 0x31:
            sd["signer_infos"] = kids
        else:
            raise ValueError(f"unexpected SignedData field tag {t:#x}")
    return sd


def merge_signed_data(blobs: list[bytes]) -> bytes:
    sds = [split_signed_data(b) for b in blobs]

    def union(key):
        seen = []
        for sd in sds:
            for x in sd[key]:
                if x not in seen:
                    seen.append(x)
        return sorted(seen)   # DER: SET OF sorted by encoding

    version = max(sd["version"] for sd in sds)
    body = version + der(0x31, b"".join(union("digest_algs"))) + sds[0]["encap"]
    certs, crls = union("certs"), union("crls")
    if certs:
        body += der(0xA0, b"".join(certs))
    if crls:
        body += der(0xA1, b"".join(crls))
    body += der(0x31, b"".join(union("signer_infos")))
    return der(0x30, sds[0]["oid"] + der(0xA0, der(0x30, body)))


# --- signing -------------------------------------------------------------------------

def sign(a, signed_file: str, tmpdir: str) -> bytes:
    groups: dict[str, list[tuple[str, str]]] = {}
    for s in a.signer:
        md = s[2] if len(s) == 3 else a.md
        groups.setdefault(md, []).append((s[0], s[1]))
    blobs = []
    for i, (md, signers) in enumerate(groups.items()):
        out = os.path.join(tmpdir, f"sig{i}.der")
        cmd = [a.openssl, "cms", "-sign", "-binary", "-outform", "DER", "-md", md,
               "-in", signed_file, "-out", out]
        for cert, key in signers:
            cmd += ["-signer", cert, "-inkey", key]
        for cf in a.certfile:
            cmd += ["-certfile", cf]
        cmd += a.openssl_arg
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            die(f"openssl cms -sign (md {md}) failed:\n  {' '.join(cmd)}\n{r.stderr}")
        with open(out, "rb") as f:
            blobs.append(f.read())
    if len(blobs) == 1:
        return blobs[0]
    return merge_signed_data(blobs)


# --- main ----------------------------------------------------------------------------

def main(argv=None) -> int:
    a = parse_args(argv)
    cmdlist, files = build_commands(a)
    payload_len = sum(n for _, _, n in files)
    header = PREAMBLE + u32(MAJOR) + u32(MINOR) + u32(len(cmdlist)) + u32(payload_len)
    assert len(header) == 24

    out_dir = os.path.dirname(os.path.abspath(a.out))
    with tempfile.TemporaryDirectory(prefix="tr069_build.") as tmp:
        signed = os.path.join(tmp, "signed.bin")
        with open(signed, "wb") as f:
            f.write(header + cmdlist)
        sig = sign(a, signed, tmp)

        fd, part = tempfile.mkstemp(prefix=".tr069_build.", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(header + cmdlist + sig)
                algo = "sha1" if a.sha1 else "sha256"
                for fn, digest, length in files:
                    h, n = hashlib.new(algo), 0
                    with open(fn, "rb") as f:
                        while chunk := f.read(CHUNK):
                            h.update(chunk)
                            n += len(chunk)
                            out.write(chunk)
                    if n != length or h.digest() != digest:
                        die(f"{fn} changed while the package was being built")
            os.chmod(part, 0o644)
            os.replace(part, a.out)
        except BaseException:
            if os.path.exists(part):
                os.unlink(part)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
