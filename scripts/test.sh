#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + property + end-to-end
# tests (nextest), doc tests, the e2e suite again on Kafka, the console's
# browser tests, and a short fuzz run. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build outside the clone so later runs on this machine reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi
# The Kafka backend's tests need tansu (a Kafka-protocol broker in Rust)
# with its in-memory storage; installed once per machine.
export TANSU="${TANSU:-$HOME/.cache/switchyard-tools/bin/tansu}"
if [ ! -x "$TANSU" ]; then
  echo "installing tansu with in-memory storage (once per machine, ~15 min on 2 cores)" >&2
  cargo install tansu --version 0.6.0 --locked --features dynostore --root "$HOME/.cache/switchyard-tools"
fi
# promtool (from Debian's prometheus package) checks the /metrics
# exposition in tests/metrics.rs.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus)" >&2
  if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  "${apt_get[@]}" install -y -q --no-install-recommends prometheus >/dev/null || {
    "${apt_get[@]}" update -q >/dev/null && "${apt_get[@]}" install -y -q --no-install-recommends prometheus >/dev/null
  }
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --doc
cargo nextest run --workspace --no-fail-fast
# The end-to-end delivery suite again, with topics in Kafka: one shared
# tansu, a topic prefix per test (tests/support: SWITCHYARD_TEST_KAFKA).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >/dev/null 2>&1 &
tansu_pid=$!
trap 'kill "$tansu_pid" 2>/dev/null || true' EXIT
SWITCHYARD_TEST_KAFKA="127.0.0.1:$port" cargo nextest run -p switchyard-broker --no-fail-fast \
  --test publish_subscribe --test retries --test replay --test bad_input --test rules_routing \
  --test scheduled --test push --test limits --test acl --test auth --test tls --test cli --test metrics \
  --test flow --test console
kill "$tansu_pid" 2>/dev/null || true
# The console in a real browser (headless Chromium via Playwright).
scripts/console-test.sh
# Fuzz every parser for 30 s (stable toolchain; cargo-fuzz is installed
# once per machine); scripts/fuzz.sh 600 for a longer run.
scripts/fuzz.sh "${SWITCHYARD_FUZZ_SECONDS:-30}"
