#!/usr/bin/env python3
"""Offline checks that meta-henb-update names the layers, branches and bitbake version its
release series needs, and has what yocto-check-layer asks of a layer's documents:

1. LAYERSERIES_COMPAT_henb-update is one series this table knows, and the kas file pins
   that series' bitbake branch and the series' branch of every layer repository;
2. the kas file's layers close over LAYERDEPENDS_henb-update (with the dependencies of the
   other layers, from their layer.conf), and every DEPENDS of our recipes that another
   layer provides is covered by LAYERDEPENDS;
3. the add-layer lines of the integrator guide and of the layer's README add exactly the
   kas file's layers, each after the layers it depends on, and the guide's local.conf
   block sets what the kas file's local_conf_header sets;
4. the README passes yocto-check-layer's test_readme (not empty; "maintainer", "patch" and
   an email address; without the word that makes it skip these checks), and a non-empty
   SECURITY file is in the layer (test_security).

    scripts/check-layer-deps.py [ROOT]
"""
import glob
import os
import re
import sys

import yaml

# Release series -> the bitbake branch it requires. Source: openembedded-core wrynose
# (ef022bf) meta/conf/sanity.conf `BB_MIN_VERSION = "2.18.0"`; bitbake's
# default-registry/configurations/oe-nodistro-wrynose.conf.json pairs bitbake "2.18"
# with openembedded-core "wrynose".
BITBAKE_BRANCH = {"wrynose": "2.18"}
# (kas repository, layer path) -> collection, and each collection's LAYERDEPENDS in the
# series, from their conf/layer.conf on the wrynose branches: meta-oe 6bf0d8a l.47,
# meta-python l.15, meta-tpm (meta-security c0d1d62).
COLLECTION = {
    ("openembedded-core", "meta"): "core",
    ("meta-openembedded", "meta-oe"): "openembedded-layer",
    ("meta-openembedded", "meta-python"): "meta-python",
    ("meta-security", "meta-tpm"): "tpm-layer",
    ("henb-update", "meta-henb-update"): "henb-update",
}
LAYERDEPENDS = {
    "core": [],
    "openembedded-layer": ["core"],
    "meta-python": ["core", "openembedded-layer"],
    "tpm-layer": ["core", "openembedded-layer", "meta-python"],
}
# Recipes our recipes DEPEND on that no layer but this one provides (the rest are in core).
PROVIDER = {"tpm2-tss": "tpm-layer", "tpm2-tss-native": "tpm-layer"}

problems = []


def problem(msg):
    problems.append(msg)
    print(f"check-layer-deps: {msg}", file=sys.stderr)


def conf_var(text, name):
    m = re.search(rf'^{re.escape(name)}\s*\??=\s*"([^"]*)"', text, re.M)
    return m.group(1).split() if m else []


def closure(cols):
    out, stack = set(), list(cols)
    while stack:
        c = stack.pop()
        if c in out:
            continue
        out.add(c)
        stack += LAYERDEPENDS.get(c, [])
    return out


def add_layer_lines(text):
    """The layer directories of each `bitbake-layers add-layer` command, in order."""
    joined = re.sub(r"[ \t]*\\\n\s*", " ", text)
    return [[os.path.basename(p.rstrip("/")) for p in m.group(1).split()]
            for m in re.finditer(r"bitbake-layers add-layer ((?:[^\s`]+ ?)+)", joined)]


def main(root):
    layer = os.path.join(root, "meta-henb-update")
    conf = open(os.path.join(layer, "conf/layer.conf")).read()
    series = conf_var(conf, "LAYERSERIES_COMPAT_henb-update")
    # "core (>= 12) tpm-layer": collections, without their version constraints.
    m = re.search(r'^LAYERDEPENDS_henb-update\s*\??=\s*"([^"]*)"', conf, re.M)
    ours = re.sub(r"\([^)]*\)", " ", m.group(1)).split() if m else []

    # 1. Series and branches.
    kas_path = os.path.join(layer, "kas/henb-demo.yml")
    kas = yaml.safe_load(open(kas_path))
    if len(series) != 1 or series[0] not in BITBAKE_BRANCH:
        problem(f"LAYERSERIES_COMPAT_henb-update {series}: one series of {sorted(BITBAKE_BRANCH)} expected "
                "(add a new one to BITBAKE_BRANCH with its source)")
        return
    s = series[0]
    repos = kas.get("repos", {})
    bb = repos.get("bitbake", {}) or {}
    if str(bb.get("branch")) != BITBAKE_BRANCH[s]:
        problem(f"{kas_path}: bitbake branch {bb.get('branch')!r}, but {s} requires {BITBAKE_BRANCH[s]!r}")
    for name, r in repos.items():
        if name != "bitbake" and r and r.get("url") and str(r.get("branch")) != s:
            problem(f"{kas_path}: {name} is on branch {r.get('branch')!r}, not {s!r}")

    # 2. Layer dependencies.
    kas_layers = []
    for name, r in repos.items():
        for path, v in ((r or {}).get("layers") or {}).items():
            if v != "disabled" and (v is None or v):
                kas_layers.append((name, path))
    cols = set()
    for key in kas_layers:
        if key not in COLLECTION:
            problem(f"{kas_path}: layer {key[0]}/{key[1]} is not in the table of known collections")
        else:
            cols.add(COLLECTION[key])
    for c in sorted(closure(ours) - cols):
        problem(f"{kas_path}: collection {c!r} is needed (LAYERDEPENDS, transitively) but no kas layer provides it")
    recipes = "\n".join(open(f).read() for f in glob.glob(f"{layer}/recipes-*/*/*.bb*")
                        + glob.glob(f"{layer}/recipes-*/*/*.inc") + glob.glob(f"{layer}/classes-recipe/*.bbclass"))
    deps = set()
    for m in re.finditer(r'^DEPENDS(?::[\w-]+)?\s*(?:\+|\?\?|\?)?=\s*"([^"]*)"', recipes, re.M):
        deps.update(m.group(1).split())
    for d in sorted(deps):
        if d in PROVIDER and PROVIDER[d] not in closure(ours):
            problem(f"DEPENDS on {d}, which {PROVIDER[d]} provides, but LAYERDEPENDS_henb-update lacks it")

    # 3. The add-layer lines.
    want = [p for (_, p) in kas_layers if (_, p) != ("openembedded-core", "meta")]
    by_dir = {p: COLLECTION.get((n, p)) for (n, p) in kas_layers}
    for doc in [os.path.join(root, "docs/integrator-guide.md"), os.path.join(layer, "README.md")]:
        lines = add_layer_lines(open(doc).read())
        if not lines:
            problem(f"{doc}: no `bitbake-layers add-layer` line")
        for dirs in lines:
            if sorted(dirs) != sorted(want):
                problem(f"{doc}: add-layer adds {dirs}, the kas file has {want}")
                continue
            for i, d in enumerate(dirs):
                later = {by_dir[x] for x in dirs[i + 1:]}
                need = closure([by_dir[d]]) - {by_dir[d]}
                if d == "meta-henb-update":
                    need = closure(ours) - {"henb-update"}
                if need & later:
                    problem(f"{doc}: add-layer adds {d} before {sorted(need & later)}, which it depends on")

    # The guide's local.conf settings are the kas file's.
    guide = open(os.path.join(root, "docs/integrator-guide.md")).read()
    m = re.search(r"`local\.conf` \(or the distro\):\s*```\n(.*?)```", guide, re.S)
    kas_conf = "\n".join((kas.get("local_conf_header") or {}).values())
    settings = lambda t: sorted(l.strip() for l in t.splitlines() if l.strip() and not l.strip().startswith("#"))
    if not m:
        problem("docs/integrator-guide.md: no local.conf block")
    elif settings(m.group(1)) != settings(kas_conf):
        problem(f"docs/integrator-guide.md: the local.conf block {settings(m.group(1))} is not the kas file's "
                f"local_conf_header {settings(kas_conf)}")

    # 4. yocto-check-layer's document tests (oe-core wrynose scripts/lib/checklayer/cases/common.py).
    readmes = sorted(glob.glob(os.path.join(layer, "[Rr][Ee][Aa][Dd][Mm][Ee]*")))
    if not readmes:
        problem("the layer has no README")
    else:
        text = open(readmes[0]).read()
        if not text.strip():
            problem(f"{readmes[0]} is empty")
        if re.search("README", text, re.IGNORECASE):
            problem(f"{readmes[0]} contains the word README: yocto-check-layer would skip its checks")
        for word in ("maintainer", "patch"):
            if word not in text.lower():
                problem(f"{readmes[0]}: no '{word}' (yocto-check-layer test_readme)")
        if not re.search(r"[^\s@<>]+@[^\s@<>]+\.[a-z]+", text):
            problem(f"{readmes[0]}: no maintainer email address (yocto-check-layer test_readme)")
    security = [f for f in glob.glob(os.path.join(layer, "SECURITY*")) if os.path.getsize(f) > 0]
    if not security:
        problem("the layer has no non-empty SECURITY file (yocto-check-layer test_security)")


if __name__ == "__main__":
    main(os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")))
    if not problems:
        print("check-layer-deps: series, branches, layer dependencies and documents are consistent")
    sys.exit(1 if problems else 0)
