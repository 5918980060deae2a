#!/usr/bin/env bash
# Runs cargo-fuzz targets for SECONDS each (default 60) from their
# committed seeds; new inputs go to a scratch corpus so the seeds stay
# small. Needs a nightly toolchain and cargo-fuzz; without them it says so
# and exits 0 (scripts/test.sh calls it with a short time).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: skipped (needs a nightly toolchain and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz --locked)" >&2
  exit 0
fi
# Nightly builds with sanitizers: keep them apart from the stable cache.
export CARGO_TARGET_DIR="${SWITCHYARD_FUZZ_TARGET_DIR:-$HOME/.cache/switchyard-fuzz-target}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build
for target in "${targets[@]}"; do
  scratch="$(mktemp -d)"
  log="$scratch.log"
  set +e
  cargo +nightly fuzz run "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  runs=$(grep -oE "stat::number_of_executed_units: [0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
  echo "fuzz: $target ${seconds}s, $runs runs, exit $status" >&2
  rm -rf "$scratch"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target FAILED (the crashing input is under fuzz/artifacts/$target)" >&2
    exit 1
  fi
  rm -f "$log"
done
