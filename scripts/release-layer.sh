#!/usr/bin/env bash
# Release henb-update X.Y.Z and pin it in the Yocto layer, in two commits:
#   1. "Release henb-update X.Y.Z": Cargo.toml (and Cargo.lock) at version X.Y.Z (skipped
#      when it already is), tagged vX.Y.Z (annotated);
#   2. "Layer: build henb-update X.Y.Z": henb-update_git.bb gets SRCREV = the tagged commit
#      and PV = X.Y.Z; henb-update-crates.inc and henb-update-licenses.inc are regenerated
#      from that commit (scripts/crates-inc.py); scripts/check-srcrev.py must pass.
# The recipe cannot name the commit it is in, so it always pins the commit before it.
# Usage: scripts/release-layer.sh X.Y.Z      (a clean working tree; pushes nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/release-layer.sh X.Y.Z}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "release-layer: $version is not X.Y.Z" >&2; exit 2; }
tag=v$version
recipe=meta-henb-update/recipes-core/henb-update/henb-update_git.bb
if [ -n "$(git status --porcelain)" ]; then
  echo "release-layer: the working tree has changes: commit or stash them first" >&2
  exit 1
fi
if git rev-parse -q --verify "refs/tags/$tag" >/dev/null; then
  echo "release-layer: tag $tag exists" >&2
  exit 1
fi

current=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
if [ "$current" != "$version" ]; then
  sed -i "0,/^version = \".*\"$/s//version = \"$version\"/" Cargo.toml
  # Updates the workspace package's entry in Cargo.lock, nothing else.
  cargo update --workspace --offline >/dev/null
  git commit -q -m "Release henb-update $version" Cargo.toml Cargo.lock
fi
git tag -a "$tag" -m "henb-update $version"
rev=$(git rev-parse "$tag^{commit}")
# A failed check below leaves no tag and no half-made pin behind.
undo() {
  echo "release-layer: failed; removing tag $tag and the recipe changes" >&2
  git tag -d "$tag" >/dev/null
  git checkout -q -- meta-henb-update
}
trap undo ERR

sed -i -e "s/^SRCREV = \".*\"$/SRCREV = \"$rev\"/" -e "s/^PV = \".*\"$/PV = \"$version\"/" "$recipe"
python3 scripts/crates-inc.py
python3 scripts/check-srcrev.py
git commit -q -m "Layer: build henb-update $version ($tag, ${rev:0:12})" meta-henb-update
trap - ERR
echo "release-layer: tagged $tag at ${rev:0:12} and pinned it in $recipe"
echo "release-layer: push both: git push origin HEAD $tag"
