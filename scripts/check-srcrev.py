#!/usr/bin/env python3
"""Check that the commit henb-update_git.bb pins (SRCREV) builds what the layer asks of it:

1. SRCREV is a commit of this repository, reachable from HEAD (the branch the recipe names);
2. PV is that commit's Cargo.toml version (PV = "X.Y.Z" or "X.Y.Z+git...");
3. every LIC_FILES_CHKSUM file://PATH;md5=... exists at SRCREV with that md5;
4. every ${S}/PATH the recipe installs exists at SRCREV;
5. every henb-update command line the class, the recipe's scripts and units run
   (subcommands and --options, including those gathered in shell variables) is accepted
   by the agent built from SRCREV (`henb-update SUBCOMMAND... --help` succeeds and lists
   each option).

For 5 the agent binary must be SRCREV's. When the working tree's src/, Cargo.toml and
Cargo.lock are SRCREV's, that is $HENB_UPDATE_BIN (tests: the binary cargo built from this
working tree) or else the working tree's debug build; otherwise SRCREV is built into the
repository's target/srcrev/ (once per commit, several minutes: scripts/release-layer.sh
pins the current tree and so avoids it).

    scripts/check-srcrev.py [--root DIR] [--git-dir GIT_DIR]
"""
import argparse
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tomllib

LAYER = "meta-henb-update"
RECIPE_DIR = f"{LAYER}/recipes-core/henb-update"
RECIPE_FILES = [f"{RECIPE_DIR}/henb-update_git.bb", f"{RECIPE_DIR}/henb-update.inc"]
# Shell and unit files of the layer that run the agent.
COMMAND_FILES = [f"{LAYER}/classes-recipe/henb_bundle.bbclass",
                 f"{RECIPE_DIR}/files/henb-provision",
                 f"{RECIPE_DIR}/files/henb-update-boot-check.service",
                 f"{RECIPE_DIR}/files/henb-update-mark-good.service"]
SOURCES = ["src", "Cargo.toml", "Cargo.lock"]

problems = []


def problem(msg):
    problems.append(msg)
    print(f"check-srcrev: {msg}", file=sys.stderr)


def git(git_dir, *args, check=True):
    r = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {r.stderr.decode(errors='replace').strip()}")
    return r


def at(git_dir, rev, path):
    """Bytes of `path` at `rev`, or None if it is not there."""
    r = git(git_dir, "show", f"{rev}:{path}", check=False)
    return r.stdout if r.returncode == 0 else None


def recipe_text(root):
    return "\n".join(open(os.path.join(root, f)).read() for f in RECIPE_FILES)


def var(text, name):
    m = re.search(rf'^{name}\s*\??=\s*"([^"]*)"', text, re.M)
    return m.group(1) if m else None


def logical_lines(text):
    """Lines with backslash continuations joined."""
    return re.sub(r"\\\n", " ", text).splitlines()


def commands(text):
    """(subcommand words, options) of each henb-update command line in a shell or unit
    file; options held in shell variables (`slots="$slots --slot $s"`) are counted for
    every command that expands that variable."""
    lines = logical_lines(text)
    assigned = {}
    for line in lines:
        m = re.match(r'\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$', line)
        if m:
            assigned.setdefault(m.group(1), set()).update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(2)))
    found = []
    for line in lines:
        # At the start of a shell command or of ExecStart=, by name or by path.
        m = re.search(r'(?:^\s*|ExecStart=[-@:+!]*|[;&|(]\s*)(?:[^\s"\';]*/)?henb-update\s+(.*)$', line)
        unit_key = re.match(r"\s*[A-Z][A-Za-z]*=", line) and not re.match(r"\s*Exec", line)
        if not m or unit_key or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(m.group(1), comments=True)
        except ValueError:
            words = m.group(1).split()
        sub = []
        for w in words:
            if w.startswith("-") or "$" in w or w in ("<", ">", "|", "&&", ";"):
                break
            sub.append(w)
        opts = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(1)))
        for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", m.group(1)):
            opts |= assigned.get(v, set())
        if sub:
            found.append((sub, sorted(opts), line.strip()))
    return found


def worktree_is(git_dir, rev):
    """Whether the working tree of git_dir has SRCREV's src/, Cargo.toml and Cargo.lock."""
    if os.path.basename(os.path.normpath(git_dir)) != ".git":
        return False
    work = os.path.dirname(os.path.normpath(git_dir))
    base = ["git", f"--git-dir={git_dir}", f"--work-tree={work}"]
    same = subprocess.run(base + ["diff", "--quiet", rev, "--", *SOURCES], cwd=work).returncode == 0
    untracked = subprocess.run(base + ["ls-files", "--others", "--exclude-standard", "--", *SOURCES],
                               cwd=work, capture_output=True, text=True).stdout.strip()
    return same and not untracked


def build_worktree(git_dir):
    """The agent built from the working tree, which is SRCREV's (incremental)."""
    work = os.path.dirname(os.path.normpath(git_dir))
    if subprocess.run(["cargo", "build", "--locked", "--bin", "henb-update"], cwd=work).returncode != 0:
        problem("the working tree (SRCREV's sources) does not build")
        return None
    return os.path.join(work, "target", "debug", "henb-update")


def build(root, git_dir, rev):
    """The agent built from SRCREV, cached in the repository's target/srcrev/<rev>/ (not
    under --root: tests pass fresh copies), one build at a time (a lock file)."""
    import fcntl
    top = os.path.join(os.path.dirname(os.path.normpath(git_dir)), "target", "srcrev")
    os.makedirs(top, exist_ok=True)
    with open(os.path.join(top, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_locked(top, git_dir, rev)


def build_locked(top, git_dir, rev):
    out = os.path.join(top, rev, "henb-update")
    if os.path.exists(out):
        return out
    tree = os.path.join(top, rev, "tree")
    subprocess.run(["rm", "-rf", tree], check=True)
    os.makedirs(tree)
    data = git(git_dir, "archive", "--format=tar", rev).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=data, check=True)
    print(f"check-srcrev: building the pinned commit {rev[:12]} (its sources are not the working tree's)",
          file=sys.stderr)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(top, "target"))
    r = subprocess.run(["cargo", "build", "--locked", "--bin", "henb-update"], cwd=tree, env=env)
    if r.returncode != 0:
        problem(f"SRCREV {rev[:12]} does not build (cargo build --locked)")
        return None
    os.replace(os.path.join(top, "target", "debug", "henb-update"), out)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--git-dir")
    a = ap.parse_args()
    root = a.root
    git_dir = a.git_dir or os.environ.get("HENB_GIT_DIR") or os.path.join(root, ".git")
    text = recipe_text(root)

    # 1. The commit.
    rev = var(text, "SRCREV")
    if not rev or not re.fullmatch(r"[0-9a-f]{40}", rev):
        problem(f"SRCREV must be one commit (40 hex digits), found {rev!r}")
        return
    if git(git_dir, "cat-file", "-e", f"{rev}^{{commit}}", check=False).returncode != 0:
        problem(f"SRCREV {rev} is not a commit of {git_dir} (a shallow clone? fetch the history)")
        return
    if git(git_dir, "merge-base", "--is-ancestor", rev, "HEAD", check=False).returncode != 0:
        problem(f"SRCREV {rev[:12]} is not reachable from HEAD: the recipe's branch does not contain it")

    # 2. PV.
    pv = var(text, "PV")
    cargo = at(git_dir, rev, "Cargo.toml")
    version = tomllib.loads(cargo.decode())["package"]["version"] if cargo else None
    if not pv or re.split(r"\+", pv)[0] != version:
        problem(f"PV {pv!r} is not the version of SRCREV {rev[:12]} ({version})")

    # 3. License files.
    for entry in (var(text, "LIC_FILES_CHKSUM") or "").split():
        m = re.fullmatch(r"file://([^;]+);md5=([0-9a-f]{32})", entry)
        if not m:
            problem(f"LIC_FILES_CHKSUM entry {entry!r}: only file://PATH;md5=HEX is checked here")
            continue
        data = at(git_dir, rev, m.group(1))
        if data is None:
            problem(f"LIC_FILES_CHKSUM: {m.group(1)} is not in SRCREV {rev[:12]}")
        elif hashlib.md5(data).hexdigest() != m.group(2):
            problem(f"LIC_FILES_CHKSUM: {m.group(1)} at SRCREV {rev[:12]} has md5 "
                    f"{hashlib.md5(data).hexdigest()}, the recipe says {m.group(2)}")

    # 4. Files the recipe takes from the source tree.
    for path in sorted(set(re.findall(r"\$\{S\}/([A-Za-z0-9_./-]+)", text))):
        if at(git_dir, rev, path) is None:
            problem(f"the recipe installs ${{S}}/{path}, which SRCREV {rev[:12]} does not have")

    # 5. Commands.
    cmds = []
    for f in COMMAND_FILES:
        cmds += [(f, *c) for c in commands(open(os.path.join(root, f)).read())]
    if not cmds:
        problem("no henb-update command lines found in the layer: the parser is out of date")
        return
    if problems:
        print("check-srcrev: commands not checked: the pinned commit fails the checks above", file=sys.stderr)
        return
    if worktree_is(git_dir, rev):
        binary = os.environ.get("HENB_UPDATE_BIN") or build_worktree(git_dir)
    else:
        binary = build(root, git_dir, rev)
    if binary is None:
        return
    helps = {}
    for f, sub, opts, line in cmds:
        key = tuple(sub)
        if key not in helps:
            r = subprocess.run([binary, *sub, "--help"], capture_output=True, text=True)
            helps[key] = r.stdout if r.returncode == 0 else None
        if helps[key] is None:
            problem(f"{f}: `henb-update {' '.join(sub)}` is not a command of SRCREV {rev[:12]} ({line})")
            continue
        for o in opts:
            if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", helps[key]):
                problem(f"{f}: `henb-update {' '.join(sub)}` of SRCREV {rev[:12]} has no option {o} ({line})")
    if not problems:
        print(f"check-srcrev: SRCREV {rev[:12]} (version {version}) has the license, files and "
              f"{len(cmds)} command lines the layer uses")


if __name__ == "__main__":
    main()
    sys.exit(1 if problems else 0)
