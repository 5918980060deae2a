#!/usr/bin/env bash
# Browser tests of the operator console (tests/console): a real headless
# Chromium (Debian's package) driven by Playwright (npm playwright-core,
# pinned in tests/console/package-lock.json) against a broker running the
# order saga. Installs chromium and the npm package when missing.
# Screenshots: tests/console/output/*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "installing Debian's chromium for the console's browser tests" >&2
  if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  "${apt_get[@]}" install -y -q chromium >/dev/null || {
    "${apt_get[@]}" update -q >/dev/null && "${apt_get[@]}" install -y -q chromium >/dev/null
  }
fi
if [ ! -d tests/console/node_modules/playwright-core ]; then
  (cd tests/console && npm ci --no-audit --no-fund --loglevel=error)
fi
cargo build -q -p switchyard-broker -p switchyard-examples --bins
cd tests/console
exec node --test --test-concurrency=1 console.test.mjs
