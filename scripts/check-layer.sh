#!/usr/bin/env bash
# CI checks of the Yocto layer and the service files it installs:
#   1. henb-update-crates.inc and henb-update-licenses.inc follow from the pinned commit's
#      Cargo.lock (scripts/crates-inc.py --check);
#   2. oelint-adv (pinned, from PyPI, in a venv) finds nothing in meta-henb-update;
#   3. systemd-analyze verify accepts every unit (ExecStart stubbed: the binary is not here);
#   4. the D-Bus files: policy and interface XML well-formed, the activation file's Name=
#      is the unit's BusName=, its SystemdService= an alias of that unit;
#   5. the pinned commit (SRCREV) has the license, files, commands and options the layer
#      uses (scripts/check-srcrev.py);
#   6. the kas file's bitbake branch and layers, LAYERDEPENDS, the add-layer lines of the
#      docs, the README and SECURITY files (scripts/check-layer-deps.py).
# Usage: scripts/check-layer.sh [ROOT]   (ROOT: a checkout; tests run it on broken copies,
# with HENB_GIT_DIR naming the repository's .git and HENB_UPDATE_BIN the agent built from
# its working tree)
set -uo pipefail
root=$(realpath "${1:-$(dirname "$0")/..}")
here=$(cd "$(dirname "$0")" && pwd)
OELINT_VERSION=9.11.2
fail=0
report() { echo "check-layer: $*" >&2; fail=1; }

# 1. crates.inc
python3 "$here/crates-inc.py" --root "$root" --check || report "crates.inc or licenses.inc is stale"

# 2. oelint-adv
venv=${OELINT_VENV:-$here/../target/oelint-venv}
if [ ! -x "$venv/bin/oelint-adv" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "oelint-adv==$OELINT_VERSION" \
    || report "could not install oelint-adv $OELINT_VERSION"
fi
if [ -x "$venv/bin/oelint-adv" ]; then
  files=$(cd "$root/meta-henb-update" && find . -name '*.bb' -o -name '*.bbappend' -o -name '*.bbclass' -o -name '*.inc' | sort)
  # shellcheck disable=SC2086 # one argument per file
  if ! (cd "$root/meta-henb-update" && "$venv/bin/oelint-adv" --hide info $files); then
    report "oelint-adv found problems (above)"
  fi
fi

# 3. systemd units
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
units=("$root/dbus/henb-update.service" "$root"/meta-henb-update/recipes-core/henb-update/files/*.service)
for u in "${units[@]}"; do
  sed -e 's,^ExecStart=[^ ]*,ExecStart=/bin/true,' "$u" > "$tmp/$(basename "$u")"
done
if ! out=$(cd "$tmp" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no ./*.service 2>&1); then
  echo "$out" >&2
  report "systemd-analyze verify failed"
elif [ -n "$out" ]; then
  echo "$out" >&2
  report "systemd-analyze verify warned"
fi

# 4. D-Bus files
python3 - "$root" <<'PY' || report "D-Bus files inconsistent"
import configparser, sys, xml.etree.ElementTree as ET
root = sys.argv[1]
ok = True
for f in ["dbus/org.henb.Update1.conf", "dbus/org.henb.Update1.xml"]:
    try:
        ET.parse(f"{root}/{f}")
    except Exception as e:
        print(f"{f}: not well-formed XML: {e}", file=sys.stderr); ok = False
def ini(path, section):
    c = configparser.ConfigParser(strict=False, interpolation=None)
    c.optionxform = str
    c.read(path)
    return c[section] if section in c else {}
act = ini(f"{root}/dbus/org.henb.Update1.service", "D-BUS Service")
unit_svc = ini(f"{root}/dbus/henb-update.service", "Service")
unit_inst = ini(f"{root}/dbus/henb-update.service", "Install")
if unit_svc.get("Type") == "dbus" and not unit_svc.get("BusName"):
    print("henb-update.service: Type=dbus without BusName=", file=sys.stderr); ok = False
if act.get("Name") != unit_svc.get("BusName"):
    print(f"activation Name={act.get('Name')} is not the unit's BusName={unit_svc.get('BusName')}", file=sys.stderr); ok = False
aliases = (unit_inst.get("Alias") or "").split() + ["henb-update.service"]
if act.get("SystemdService") not in aliases:
    print(f"activation SystemdService={act.get('SystemdService')} is not the unit or one of its aliases", file=sys.stderr); ok = False
policy = ET.parse(f"{root}/dbus/org.henb.Update1.conf").getroot()
owners = [a.get("own") for p in policy.iter("policy") for a in p.iter("allow") if a.get("own")]
if act.get("Name") not in owners:
    print(f"the bus policy does not let anyone own {act.get('Name')}", file=sys.stderr); ok = False
sys.exit(0 if ok else 1)
PY

# 5. The pinned commit
python3 "$here/check-srcrev.py" --root "$root" || report "the pinned commit (SRCREV) does not have what the layer uses"

# 6. Series, layers, documents
python3 "$here/check-layer-deps.py" "$root" || report "layer dependencies or documents inconsistent"

if [ $fail = 0 ]; then echo "check-layer: all checks passed"; fi
exit $fail
