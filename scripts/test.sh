#!/usr/bin/env bash
# Install what is missing, then run every check CI runs: format, lints, the whole test suite
# (including the VM suite, tests/vm.rs: about 5 minutes under TCG on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo fmt --all -- --check
cargo clippy --all-targets --locked --features failpoints -- -D warnings
# The VM suite (tests/vm.rs) boots the release agent inside QEMU: build it first (without
# failpoints: the guest runs what a device runs).
cargo build --release --locked
cargo test --locked --features failpoints --no-fail-fast
