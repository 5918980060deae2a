#!/usr/bin/env bash
# Runs the cargo-fuzz targets (libFuzzer) for SECONDS each (default 60)
# from their committed seeds; new inputs go to a scratch corpus so the
# seeds stay small. Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its instrumentation flags, and no sanitizer is asked for
# (Rust code is memory-safe without one; the targets look for panics,
# hangs, aborts and broken invariants). Installs cargo-fuzz once per
# machine when missing. scripts/test.sh (so CI) runs it for 30 s a target.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# A crash leaves its input under fuzz/artifacts/TARGET/; keep it as a
# regression seed in fuzz/corpus/TARGET/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
tools="$HOME/.cache/switchyard-tools"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once per machine)" >&2
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools"
fi
export RUSTC_BOOTSTRAP=1
# Instrumented release builds: keep them apart from the test build cache.
export CARGO_TARGET_DIR="${SWITCHYARD_FUZZ_TARGET_DIR:-$HOME/.cache/switchyard-fuzz-target}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer none
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  scratch="$(mktemp -d)"
  log="$scratch.log"
  set +e
  cargo fuzz run --sanitizer none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1
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
