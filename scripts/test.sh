#!/usr/bin/env bash
# Install what is missing, then run every check CI runs: format, lints, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo fmt --all -- --check
cargo clippy --all-targets --locked --features failpoints -- -D warnings
cargo test --locked --features failpoints
