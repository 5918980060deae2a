#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + property + end-to-end
# tests (nextest), and doc tests. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build outside the clone so later runs on this machine reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --doc
cargo nextest run --workspace --no-fail-fast
# Fuzz every parser briefly when nightly + cargo-fuzz are there (skips
# with a notice otherwise); scripts/fuzz.sh 300 for a longer run.
scripts/fuzz.sh "${SWITCHYARD_FUZZ_SECONDS:-15}"
